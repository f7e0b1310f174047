-- The client's ledger of fuzz.pl's session (see fuzz.pl), read by the
-- session (psql \i) before its first call, as the superuser.
--
--   fuzz_ledger       (temporary) one row per entry; fuzz.pl's statements
--                     write it together with their call
--   fuzz_audit(ids)   the server against the ledger: a row (check, id,
--                     detail) for each thing that does not agree; ids: ids
--                     acked by someone else since (run.sh's drain).
--                     Kept (not temporary), for run.sh's checks: the
--                     session copies the ledger to a table fuzz_ledger at
--                     its end
--   fuzz_audit_now(n) fuzz_audit() in the middle of the session, before
--                     statement n: each row a warning "fuzz ledger: ..."
-- A claim that hands out an event the ledger has acked, or seen die and
-- not redriven since, warns at once, also in a transaction that then
-- rolls back.

CREATE TEMP TABLE fuzz_ledger (
	n		int NOT NULL,		-- the statement that wrote the entry
	op		text NOT NULL,
	topic	text,
	id		bigint,
	token	uuid,
	result	text,
	ids		bigint[]
);
CREATE INDEX ON pg_temp.fuzz_ledger (id);
CREATE INDEX ON pg_temp.fuzz_ledger (token);

CREATE FUNCTION pg_temp.fuzz_ledger_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	FOR r IN
		SELECT c.n, c.id, 'acked by statement ' || a.n AS why
		FROM new_rows c JOIN pg_temp.fuzz_ledger a ON a.id = c.id AND a.op = 'ack' AND a.n < c.n
		WHERE c.op = 'claim'
		UNION ALL
		SELECT c.n, c.id, 'dead since statement ' || d.n || ' and not redriven'
		FROM new_rows c JOIN pg_temp.fuzz_ledger d ON d.id = c.id AND d.n < c.n
			AND (d.op = 'dead_letter' OR (d.op = 'nack' AND d.result = 'dead'))
		WHERE c.op = 'claim'
		  AND NOT EXISTS (SELECT 1 FROM pg_temp.fuzz_ledger x
						  WHERE x.op = 'redrive' AND x.n > d.n AND c.id = ANY (x.ids))
	LOOP
		RAISE WARNING 'fuzz ledger: statement % claimed event %, %', r.n, r.id, r.why;
	END LOOP;
	RETURN NULL;
END
$$;
CREATE TRIGGER fuzz_ledger_claimed AFTER INSERT ON pg_temp.fuzz_ledger
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.fuzz_ledger_claimed();

-- Reads the server's tables in one snapshot; the caller keeps reap() from
-- emptying outbox.acked by TRUNCATE meanwhile (not MVCC-safe): LOCK TABLE
-- outbox.acked before the snapshot is taken.
CREATE FUNCTION public.fuzz_audit(drained bigint[] DEFAULT '{}')
RETURNS TABLE (check_name text, id bigint, detail text)
LANGUAGE sql SECURITY DEFINER SET jit = off AS $$
WITH acked_ids AS MATERIALIZED (
	SELECT DISTINCT a.topic_id, u.id
	FROM outbox.acked a, unnest(coalesce(a.ids, ARRAY[a.max_id])) u(id)),
-- each event of the log: its topic, and where the server keeps it
srv AS MATERIALIZED (
	SELECT e.id, t.name AS topic, e.origin_id, count(*) OVER (PARTITION BY e.id) AS copies,
		   a.id IS NOT NULL AS in_acked, d.id IS NOT NULL AS in_dead, r.event_id IS NOT NULL AS in_retry,
		   CASE WHEN d.id IS NOT NULL THEN 'dead' WHEN r.event_id IS NOT NULL THEN 'pending'
				WHEN a.id IS NOT NULL OR e.id <= coalesce(s.watermark, 0) THEN 'acked'
				ELSE 'pending' END AS state
	FROM outbox.event e
	LEFT JOIN outbox.topic t USING (topic_id)
	LEFT JOIN outbox.topic_state s USING (topic_id)
	LEFT JOIN acked_ids a ON a.topic_id = e.topic_id AND a.id = e.id
	LEFT JOIN outbox.dead_letter d ON d.id = e.id
	LEFT JOIN outbox.retry r ON r.event_id = e.id),
l AS MATERIALIZED (SELECT * FROM fuzz_ledger),
-- ids offered (the last offer that returned each); those whose topic was
-- not dropped since
l_offer AS MATERIALIZED (
	SELECT l.id, max(l.n) AS n, min(l.topic) AS topic, count(DISTINCT l.topic) AS topics
	FROM l WHERE l.op = 'offer' GROUP BY l.id),
l_drop AS (SELECT l.topic, max(l.n) AS n FROM l WHERE l.op = 'drop' GROUP BY l.topic),
l_live AS (SELECT o.* FROM l_offer o LEFT JOIN l_drop d USING (topic) WHERE d.n IS NULL OR d.n < o.n),
-- acked for sure (by the session, or by the drain after it); perhaps acked
l_acked AS MATERIALIZED (
	SELECT l.id, l.n FROM l WHERE l.op = 'ack'
	UNION ALL SELECT u, 2147483647 FROM unnest(drained) u),
l_maybe AS (SELECT DISTINCT l.id FROM l WHERE l.op = 'ack?' AND l.id IS NOT NULL),
-- claims: the session's, then the drain's
l_claim AS (SELECT l.n, l.id FROM l WHERE l.op = 'claim' UNION ALL SELECT 2147483647, u FROM unnest(drained) u),
-- deaths the client saw; redrives it made of them; dead by its last word
l_death AS (SELECT l.id, l.n FROM l WHERE l.op = 'dead_letter' OR (l.op = 'nack' AND l.result = 'dead')),
l_redriven AS (SELECT l.n, unnest(l.ids) AS id FROM l WHERE l.op = 'redrive'),
l_dead AS (
	SELECT d.id, d.n FROM l_death d
	WHERE NOT EXISTS (SELECT 1 FROM l_death x WHERE x.id = d.id AND x.n > d.n)
	  AND NOT EXISTS (SELECT 1 FROM l_redriven r WHERE r.id = d.id AND r.n > d.n))
-- every id an offer returned is in the log, in the topic named, unless that
-- topic was dropped since; then it is not
SELECT 'offered-missing', o.id, 'offered to ' || o.topic || ' by statement ' || o.n
FROM l_live o WHERE NOT EXISTS (SELECT 1 FROM srv s WHERE s.id = o.id)
UNION ALL
SELECT 'offered-wrong-topic', o.id,
	   'offered to ' || o.topic || ' by statement ' || o.n || ', kept in ' || coalesce(s.topic, '(no topic)')
FROM l_live o JOIN srv s USING (id) WHERE o.topics > 1 OR s.topic IS DISTINCT FROM o.topic
UNION ALL
SELECT 'dropped-kept', o.id, o.topic || ' dropped by statement ' || d.n
FROM l_offer o JOIN l_drop d USING (topic) WHERE d.n > o.n AND EXISTS (SELECT 1 FROM srv s WHERE s.id = o.id)
UNION ALL
-- every event is in the log once, and in one state: acked, dead or pending
SELECT DISTINCT 'event-states', s.id,
	   s.copies || ' rows, acked ' || s.in_acked || ', dead ' || s.in_dead || ', retry ' || s.in_retry
FROM srv s WHERE s.copies > 1 OR s.in_acked::int + s.in_dead::int + s.in_retry::int > 1
UNION ALL
-- every event was offered, or made by a replay (as many as replay said)
SELECT 'unknown-event', s.id, 'in ' || coalesce(s.topic, '(no topic)')
FROM srv s WHERE s.origin_id IS NULL AND NOT EXISTS (SELECT 1 FROM l_offer o WHERE o.id = s.id)
UNION ALL
SELECT 'replayed', NULL, topic || ': replay returned ' || coalesce(r.n, 0) || ', the log holds ' || coalesce(s.n, 0)
FROM (SELECT l.topic, sum(l.result::int) AS n FROM l LEFT JOIN l_drop d USING (topic)
	  WHERE l.op = 'replay' AND (d.n IS NULL OR l.n > d.n) GROUP BY l.topic) r
	 FULL JOIN (SELECT srv.topic, count(*) AS n FROM srv WHERE srv.origin_id IS NOT NULL GROUP BY srv.topic) s
	 USING (topic)
WHERE coalesce(r.n, 0) <> coalesce(s.n, 0)
UNION ALL
-- what the client acked is acked; nothing else is
SELECT 'acked-not-settled', a.id,
	   CASE WHEN a.n = 2147483647 THEN 'acked by the drain' ELSE 'acked by statement ' || a.n END || ', ' || s.state
FROM l_acked a JOIN srv s USING (id) WHERE s.state <> 'acked'
UNION ALL
SELECT 'settled-not-acked', s.id, 'in ' || s.topic
FROM srv s WHERE s.state = 'acked'
 AND NOT EXISTS (SELECT 1 FROM l_acked a WHERE a.id = s.id)
 AND NOT EXISTS (SELECT 1 FROM l_maybe m WHERE m.id = s.id)
UNION ALL
-- what the client saw die and did not redrive is dead; every dead letter
-- was claimed (it is a lease that failed)
SELECT 'dead-not-dead', d.id, 'dead since statement ' || d.n || ', ' || s.state
FROM l_dead d JOIN srv s USING (id) WHERE s.state <> 'dead'
UNION ALL
SELECT 'dead-unclaimed', s.id, 'in ' || s.topic
FROM srv s WHERE s.state = 'dead' AND NOT EXISTS (SELECT 1 FROM l c WHERE c.op = 'claim' AND c.id = s.id)
UNION ALL
-- ack, nack and dead_letter settle only leases the client held: claimed
-- under the token, and not settled under it before
SELECT 'ack-beyond-lease', NULL,
	   'statement ' || l.n || ' acked ' || max(l.result) || ', the client held ' || count(l.id) || ' of its ids'
FROM l WHERE l.op IN ('ack', 'ack?') GROUP BY l.n HAVING max(l.result::int) > count(l.id)
UNION ALL
SELECT 'settle-unheld', s.id, s.op || ' by statement ' || s.n
FROM l s
WHERE s.op IN ('nack', 'dead_letter')
  AND (NOT EXISTS (SELECT 1 FROM l c WHERE c.op = 'claim' AND c.id = s.id AND c.token = s.token AND c.n < s.n)
	   OR EXISTS (SELECT 1 FROM l x WHERE x.op IN ('ack', 'nack', 'dead_letter')
				  AND x.id = s.id AND x.token = s.token AND x.n < s.n))
UNION ALL
-- no event is acked twice, claimed after its ack, or claimed after it died
-- and before a redrive
SELECT 'acked-twice', a.id, count(*) || ' acks' FROM l_acked a GROUP BY a.id HAVING count(*) > 1
UNION ALL
SELECT 'acked-claimed', c.id, 'acked by statement ' || a.n || ', claimed by ' ||
	   CASE WHEN c.n = 2147483647 THEN 'the drain' ELSE 'statement ' || c.n END
FROM l_claim c JOIN l_acked a ON a.id = c.id AND a.n < c.n
UNION ALL
SELECT 'dead-claimed', c.id, 'dead since statement ' || d.n || ', claimed by ' ||
	   CASE WHEN c.n = 2147483647 THEN 'the drain' ELSE 'statement ' || c.n END
FROM l_claim c JOIN l_death d ON d.id = c.id AND d.n < c.n
WHERE NOT EXISTS (SELECT 1 FROM l_redriven r WHERE r.id = d.id AND r.n > d.n AND r.n < c.n)
$$;

CREATE FUNCTION pg_temp.fuzz_audit_now(at int) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
	r record;
BEGIN
	LOCK TABLE outbox.acked IN ACCESS SHARE MODE;
	FOR r IN SELECT * FROM public.fuzz_audit() LOOP
		RAISE WARNING 'fuzz ledger: before statement %: % %: %', at, r.check_name, r.id, r.detail;
	END LOOP;
END
$$;
