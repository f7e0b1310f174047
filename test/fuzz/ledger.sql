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
	ids		bigint[],
	dead_ids bigint[],
	at		timestamptz DEFAULT clock_timestamp(),	-- when the call returned
	xts		timestamptz DEFAULT now()				-- its transaction's start
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
FROM l WHERE l.op IN ('ack', 'ack?', 'ack-') GROUP BY l.n HAVING max(l.result::int) > count(l.id)
UNION ALL
-- an ack whose count left open which ids, resolved right after it
-- (fuzz_resolve): as many acked as it counted
SELECT 'ack-resolved', NULL,
	   'statement ' || l.n || ' counted ' || max(l.result) || ', acked ' || count(*) FILTER (WHERE l.op = 'ack')
FROM l WHERE l.op IN ('ack', 'ack?', 'ack-') GROUP BY l.n
HAVING count(*) FILTER (WHERE l.op = 'ack-') > 0 AND count(*) FILTER (WHERE l.op = 'ack?') = 0
   AND max(l.result::int) <> count(*) FILTER (WHERE l.op = 'ack')
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
	FOR r IN SELECT * FROM public.fuzz_audit() UNION ALL SELECT * FROM public.fuzz_order_audit() LOOP
		RAISE WARNING 'fuzz ledger: before statement %: % %: %', at, r.check_name, r.id, r.detail;
	END LOOP;
END
$$;
CREATE INDEX ON pg_temp.fuzz_ledger (n);

-- The ids among ids that are dead letters in the snapshot of the calling
-- statement (STABLE: taken before a redrive in that statement runs) and
-- that a session of role who, acting for the tenant it acts for, may
-- redrive: of that tenant, or any if it acts for none.
CREATE FUNCTION pg_temp.fuzz_dead_among(ids bigint[], who name) RETURNS bigint[]
LANGUAGE sql STABLE SECURITY DEFINER AS $$
	WITH b AS (SELECT a.tenant FROM outbox.tenant_access a JOIN pg_roles r ON r.oid = a.role WHERE r.rolname = who),
	t AS (SELECT coalesce(nullif(current_setting('outbox.tenant', true), ''),
						  CASE WHEN (SELECT count(*) FROM b) = 1 THEN (SELECT b.tenant FROM b) END) AS tenant)
	SELECT ARRAY(SELECT d.id FROM outbox.dead_letter d, t
				 WHERE d.id = ANY (ids) AND (t.tenant IS NULL OR d.tenant = t.tenant) ORDER BY d.id)
$$;

-- An ack whose count leaves open which of the ids the client held it acked
-- ('ack?' entries of statement stmt) is resolved right after it, in its
-- transaction: each entry becomes 'ack' if the server has its event acked
-- now and the ledger holds no earlier ack of it, and 'ack-' (held, not
-- acked by it) otherwise.  An entry whose id has an earlier open 'ack?'
-- stays open.  (The ids the client held are its own: nothing else acks
-- them meanwhile; the drain runs after the session.)
CREATE FUNCTION pg_temp.fuzz_resolve(stmt int) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET jit = off AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_temp.fuzz_ledger l WHERE l.n = stmt AND l.op = 'ack?' AND l.id IS NOT NULL) THEN
		RETURN;
	END IF;
	-- reap() must not empty outbox.acked under the snapshot (see fuzz_audit)
	LOCK TABLE outbox.acked IN ACCESS SHARE MODE;
	UPDATE pg_temp.fuzz_ledger l
	SET op = CASE WHEN s.acked AND NOT EXISTS (SELECT 1 FROM pg_temp.fuzz_ledger x
											   WHERE x.id = l.id AND x.n < stmt AND x.op = 'ack')
			 THEN 'ack' ELSE 'ack-' END
	FROM (SELECT e.id,
				 NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)
				 AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
				 AND (e.id <= coalesce(ts.watermark, 0)
					  OR EXISTS (SELECT 1 FROM outbox.acked a WHERE a.topic_id = e.topic_id AND a.max_id >= e.id
								 AND e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])))) AS acked
		  FROM outbox.event e LEFT JOIN outbox.topic_state ts USING (topic_id)
		  WHERE e.topic_id = ANY (ARRAY(SELECT t.topic_id FROM outbox.topic t))
			AND e.id = ANY (ARRAY(SELECT x.id FROM pg_temp.fuzz_ledger x WHERE x.n = stmt AND x.op = 'ack?'))) s
	WHERE l.n = stmt AND l.op = 'ack?' AND l.id = s.id
	  AND NOT EXISTS (SELECT 1 FROM pg_temp.fuzz_ledger x WHERE x.id = l.id AND x.n < stmt AND x.op = 'ack?');
END
$$;

-- How the server keeps an event now, and what the ledger says of it last,
-- for the details of the order checks.
CREATE FUNCTION public.fuzz_event_state(eid bigint, upto int) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
SELECT coalesce((SELECT 'dead since ' || d.dead_at || ' (' || left(d.reason, 40) || ')' FROM outbox.dead_letter d WHERE d.id = eid),
				(SELECT 'in retry, due ' || r.available_at || ', attempts ' || r.attempts FROM outbox.retry r WHERE r.event_id = eid),
				'neither dead nor in retry')
	   || coalesce('; redriven at ' || (SELECT string_agg(g.redriven_at::text, ', ' ORDER BY g.redriven_at)
										FROM outbox.redrive_log g WHERE g.event_id = eid), '')
	   || '; ledger: ' || coalesce((SELECT string_agg(x.op || coalesce('=' || x.result, '') || ' ' || x.n || coalesce(' ' || left(x.token::text, 8), '')
														|| ' at ' || to_char(x.at, 'HH24:MI:SS.US'), ', ' ORDER BY x.n)
									FROM (SELECT * FROM fuzz_ledger l WHERE l.id = eid AND l.n <= upto ORDER BY l.n DESC LIMIT 6) x), '-')
$$;

-- Per-key order in ordered topics, from the ledger and the server's log.
-- An event's key is (its topic or tenant part, its tenant, its key), for
-- events with a key in topics made with ordered => true.  Positions: the
-- session's statements (n), then the drain's batches (drained, drained_batch:
-- its ids and the batch of each, claimed and acked in one transaction).
-- An event is settled at a position once an ack of it came before (an
-- 'ack?' that may have acked it counts: the lenient side), or while it is
-- dead: from a death the client saw (dead_letter, a nack that returned
-- 'dead') to the next redrive, or, for a death the client did not see (a
-- lease that expired once too often: reap), from the claim before it (for
-- an event dead now: from its dead_at on, if later) to the redrive that
-- brought it back (a redrive statement that named it while it was dead,
-- in the transaction outbox.redrive_log gives).  A lease that expired and
-- was reaped to a retry leaves the event unsettled.  Checks, of entries
-- after statement since:
--   order-claim   no event is claimed while an earlier event of its key
--                 is not settled, unless the same claim returns that one too
--   order-ack     an ack counts an event only if every earlier event of its
--                 key in the same lease is settled, or acked by the same call
--   order-handed-back  once a nack sends an event to retry, the later events
--                 of its key in that lease are handed back: no ack, nack or
--                 dead_letter with that token settles them
CREATE FUNCTION public.fuzz_order_audit(since int DEFAULT 0, drained bigint[] DEFAULT '{}',
										drained_batch int[] DEFAULT '{}')
RETURNS TABLE (check_name text, id bigint, detail text)
LANGUAGE sql SECURITY DEFINER SET jit = off AS $$
WITH ev AS MATERIALIZED (
	SELECT e.id, dense_rank() OVER (ORDER BY e.topic_id, e.tenant, e.key) AS grp,
		   t.name || coalesce('/' || e.tenant, '') || ':' || e.key AS k
	FROM outbox.event e JOIN outbox.topic t USING (topic_id)
	LEFT JOIN outbox.topic p ON p.topic_id = t.parent_id
	WHERE e.key IS NOT NULL AND (t.ordered OR coalesce(p.ordered, false))),
l AS MATERIALIZED (SELECT x.* FROM fuzz_ledger x WHERE x.id IN (SELECT ev.id FROM ev) OR x.op = 'redrive'),
drain AS MATERIALIZED (SELECT d.id, 1000000000 + d.b AS n FROM unnest(drained, drained_batch) d(id, b)
					   JOIN ev USING (id)),
claims AS MATERIALIZED (
	SELECT l.n, l.token, l.id, l.at FROM l WHERE l.op = 'claim'
	UNION ALL SELECT d.n, NULL, d.id, NULL FROM drain d),
first_ack AS MATERIALIZED (
	SELECT x.id, min(x.n) AS n
	FROM (SELECT l.id, l.n FROM l WHERE l.op IN ('ack', 'ack?') UNION ALL SELECT d.id, d.n FROM drain d) x
	GROUP BY x.id),
-- redrives that took place: a redrive statement of the session's that named
-- the event while it was dead, in the transaction outbox.redrive_log has
-- for it
redrive AS MATERIALIZED (
	SELECT u.id, l.n
	FROM l, unnest(l.dead_ids) u(id)
	WHERE l.op = 'redrive' AND u.id IN (SELECT ev.id FROM ev)
	  AND EXISTS (SELECT 1 FROM outbox.redrive_log g WHERE g.event_id = u.id AND g.redriven_at = l.xts)),
cdeath AS MATERIALIZED (
	SELECT l.id, l.n FROM l WHERE l.op = 'dead_letter' OR (l.op = 'nack' AND l.result = 'dead')),
-- dead from s to t (exclusive)
dint AS MATERIALIZED (
	SELECT d.id, d.n AS s, coalesce((SELECT min(r.n) FROM redrive r WHERE r.id = d.id AND r.n > d.n), 2147483647) AS t
	FROM cdeath d
	UNION ALL
	-- deaths the client did not see, undone by a redrive
	SELECT r.id, coalesce((SELECT max(c.n) FROM claims c WHERE c.id = r.id AND c.n < r.n), 0), r.n
	FROM redrive r
	WHERE NOT EXISTS (SELECT 1 FROM cdeath d WHERE d.id = r.id AND d.n < r.n
					  AND d.n > coalesce((SELECT max(c.n) FROM claims c WHERE c.id = r.id AND c.n < r.n), 0))
	UNION ALL
	-- dead now, by a death the client did not see
	-- (a call whose entry was written before dead_at, the start of the
	-- transaction that dead-lettered it, came before the death)
	SELECT x.id, greatest(x.m, coalesce((SELECT max(l.n) FROM l WHERE l.at < x.dead_at), 0)), 2147483647
	FROM (SELECT d.id, d.dead_at, coalesce((SELECT max(c.n) FROM claims c WHERE c.id = d.id), 0) AS m
		  FROM outbox.dead_letter d JOIN ev USING (id)) x
	WHERE NOT EXISTS (SELECT 1 FROM cdeath d WHERE d.id = x.id AND d.n > x.m))
SELECT 'order-claim', c.id,
	   format('%s claimed event %s of key %s at %s while event %s of the key was not settled%s: %s',
			  CASE WHEN c.n >= 1000000000 THEN 'the drain' ELSE 'statement ' || c.n END,
			  c.id, min(ej.k), to_char(min(c.at), 'HH24:MI:SS.US'), min(ei.id),
			  CASE WHEN count(*) > 1 THEN ' (and ' || count(*) - 1 || ' more)' ELSE '' END,
			  public.fuzz_event_state(min(ei.id), c.n)
				|| coalesce('; dead ' || (SELECT string_agg(d.s || '..' || d.t, ', ') FROM dint d WHERE d.id = min(ei.id)), ''))
FROM claims c
JOIN ev ej ON ej.id = c.id
JOIN ev ei ON ei.grp = ej.grp AND ei.id < ej.id
LEFT JOIN first_ack fa ON fa.id = ei.id
WHERE c.n > since
  AND (fa.n IS NULL OR fa.n > c.n)
  AND NOT EXISTS (SELECT 1 FROM dint d WHERE d.id = ei.id AND d.s < c.n AND c.n < d.t)
  AND NOT EXISTS (SELECT 1 FROM claims o WHERE o.n = c.n AND o.id = ei.id AND o.token IS NOT DISTINCT FROM c.token)
GROUP BY c.n, c.id
UNION ALL
SELECT 'order-ack', a.id,
	   format('statement %s acked event %s of key %s while event %s, earlier in its lease, was not settled: %s',
			  a.n, a.id, min(ej.k), min(ei.id), public.fuzz_event_state(min(ei.id), a.n))
FROM l a
JOIN ev ej ON ej.id = a.id
JOIN l c ON c.op = 'claim' AND c.token = a.token AND c.n < a.n
JOIN ev ei ON ei.id = c.id AND ei.grp = ej.grp AND ei.id < ej.id
LEFT JOIN first_ack fa ON fa.id = ei.id
WHERE a.op = 'ack' AND a.n > since
  AND (fa.n IS NULL OR fa.n > a.n)
  AND NOT EXISTS (SELECT 1 FROM dint d WHERE d.id = ei.id AND d.s < a.n AND a.n < d.t)
  -- dead after that claim, the event left the lease: redriven, it waits
  -- apart from the lease's later events, which may still be acked
  AND NOT EXISTS (SELECT 1 FROM dint d WHERE d.id = ei.id AND c.n < d.s AND d.s < a.n)
GROUP BY a.n, a.id
UNION ALL
SELECT 'order-handed-back', s.id,
	   format('statement %s: %s of event %s of key %s under the lease that statement %s nacked earlier event %s of to retry',
			  s.n, s.op, s.id, min(ej.k), min(k.n), min(k.id))
FROM l k
JOIN ev ei ON ei.id = k.id
JOIN l c ON c.op = 'claim' AND c.token = k.token
JOIN ev ej ON ej.id = c.id AND ej.grp = ei.grp AND ej.id > ei.id
JOIN l s ON s.id = ej.id AND s.token = k.token AND s.n > k.n AND s.op IN ('ack', 'nack', 'dead_letter')
WHERE k.op = 'nack' AND k.result = 'retry' AND s.n > since
GROUP BY s.n, s.id, s.op
$$;

-- fuzz_order_audit() of the entries after statement since, in the middle
-- of the session (before a ROLLBACK: the claims of the transaction that
-- rolls back, which leave no entry): each row a warning "fuzz ledger: ..."
CREATE FUNCTION pg_temp.fuzz_order_now(since int) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT * FROM public.fuzz_order_audit(since) LOOP
		RAISE WARNING 'fuzz ledger: after statement %: % %: %', since, r.check_name, r.id, r.detail;
	END LOOP;
END
$$;
