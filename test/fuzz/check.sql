-- run.sh's checks, after fuzz.pl's session has ended (and with it its
-- leases): the books per topic; the drain, once every lease and delay has
-- fallen due; then the server against the client's ledger (fuzz_audit(),
-- ledger.sql) and what the drain left.
-- Prints "books TOPIC ...", "ledger OP COUNT", "check NAME COUNT" (COUNT:
-- what the check found wrong) and, for each check that found something, a
-- few "example NAME ID DETAIL".
\pset format unaligned
\pset fieldsep ' '
\pset tuples_only on
SET client_min_messages = warning;
SET jit = off;

-- the books, as the server keeps them
CREATE TEMP TABLE settled AS
SELECT e.topic_id, e.id
FROM outbox.event e JOIN outbox.topic_state s USING (topic_id)
WHERE (e.id <= s.watermark
	   AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
	   AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id))
   OR EXISTS (SELECT 1 FROM outbox.acked a WHERE a.topic_id = e.topic_id AND e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])));
-- a per-tenant topic's parts share its name and its stats row
SELECT 'books', t.name,
	   (SELECT count(*) FROM outbox.event e JOIN outbox.topic p USING (topic_id) WHERE p.name = t.name) AS events,
	   (SELECT count(*) FROM settled x JOIN outbox.topic p USING (topic_id) WHERE p.name = t.name) AS settled,
	   s.available, s.leased, s.delayed, s.dead
FROM (SELECT DISTINCT name FROM outbox.topic) t JOIN outbox.stats s ON s.topic = t.name ORDER BY t.name;

-- The drain: claim and ack everything, each batch in a transaction of its
-- own (an ack's lease, and the topic's shared slot, end when it commits),
-- until nothing is available, leased or delayed; each part of a per-tenant
-- topic by a session acting for its tenant.  Leases the fuzz session held
-- expired when it ended, and its delays are a second at most: 20 seconds
-- is plenty.
CREATE TEMP TABLE drained (id bigint, topic text, token uuid, batch int);
CREATE TEMP TABLE drain_acks (token uuid, claimed int, acked int);
CREATE TEMP TABLE drain_took (rounds int, seconds numeric);
DO $$
DECLARE
	t text;
	tn text;
	ids bigint[];
	tok uuid;
	got bigint;
	rounds int := 0;
	batch int := 0;
	started timestamptz := clock_timestamp();
BEGIN
	LOOP
		rounds := rounds + 1;
		PERFORM outbox.reap();
		got := 0;
		FOR t, tn IN SELECT name, tenant FROM outbox.topic ORDER BY topic_id LOOP
			PERFORM set_config('outbox.tenant', coalesce(tn, ''), false);
			LOOP
				SELECT array_agg(c.id), (array_agg(c.lease_token))[1] INTO ids, tok
				FROM outbox.claim(t, 1000, lease => '1 hour') c;
				EXIT WHEN ids IS NULL;
				batch := batch + 1;
				INSERT INTO drained SELECT u, t, tok, batch FROM unnest(ids) u;
				INSERT INTO drain_acks VALUES (tok, cardinality(ids), outbox.ack(ids, tok));
				got := got + cardinality(ids);
				COMMIT;
			END LOOP;
		END LOOP;
		PERFORM set_config('outbox.tenant', '', false);
		COMMIT;
		EXIT WHEN got = 0 AND NOT EXISTS (SELECT 1 FROM outbox.stats s WHERE s.available + s.leased + s.delayed > 0);
		EXIT WHEN clock_timestamp() > started + interval '20 seconds';
		IF got = 0 THEN
			PERFORM pg_sleep(0.05);
		END IF;
	END LOOP;
	INSERT INTO drain_took VALUES (rounds, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1));
END
$$;
SELECT 'drain', (SELECT count(*) FROM drained) || ' events in ' || rounds || ' rounds, ' || seconds || ' s'
FROM drain_took;

-- The server and the ledger, in one snapshot, which reap() may not empty
-- outbox.acked under (TRUNCATE is not MVCC-safe).
BEGIN ISOLATION LEVEL REPEATABLE READ;
LOCK TABLE outbox.acked IN ACCESS SHARE MODE;

SELECT 'ledger', op, count(*) FROM fuzz_ledger GROUP BY op
UNION ALL SELECT 'ledger', 'drained', count(*) FROM drained
ORDER BY 2;
-- what the order checks had to check: claims and acks of events with a key
-- in ordered topics, claims that returned several events of one key, acks
-- that did not count an event the client held (ordering refuses some), and
-- events redriven
CREATE TEMP TABLE ordered_ev AS
SELECT e.id, e.topic_id, e.tenant, e.key
FROM outbox.event e JOIN outbox.topic t USING (topic_id) LEFT JOIN outbox.topic p ON p.topic_id = t.parent_id
WHERE e.key IS NOT NULL AND (t.ordered OR coalesce(p.ordered, false));
SELECT 'ledger', 'ordered-claim', count(*) FROM fuzz_ledger l JOIN ordered_ev USING (id) WHERE l.op = 'claim';
SELECT 'ledger', 'ordered-ack', count(*) FROM fuzz_ledger l JOIN ordered_ev USING (id) WHERE l.op = 'ack';
SELECT 'ledger', 'ordered-not-acked', count(*) FROM fuzz_ledger l JOIN ordered_ev USING (id) WHERE l.op = 'ack-';
SELECT 'ledger', 'ordered-batch', count(*) FROM (
	SELECT 1 FROM fuzz_ledger l JOIN ordered_ev o USING (id) WHERE l.op = 'claim'
	GROUP BY l.n, o.topic_id, o.tenant, o.key HAVING count(*) > 1) x;
SELECT 'ledger', 'ordered-redriven', count(DISTINCT g.event_id) FROM outbox.redrive_log g JOIN ordered_ev o ON o.id = g.event_id;
SELECT 'ledger', 'ordered-dead', count(*) FROM outbox.dead_letter d JOIN ordered_ev o USING (id);

CREATE TEMP TABLE bad AS SELECT * FROM fuzz_audit(ARRAY(SELECT id FROM drained));
-- per-key order in the ordered topics, the drain's batches after the session
INSERT INTO bad SELECT * FROM fuzz_order_audit(0, ARRAY(SELECT id FROM drained ORDER BY id),
											   ARRAY(SELECT batch FROM drained ORDER BY id));
-- the drain: each event once, none the server had settled, each ack whole
INSERT INTO bad SELECT 'drained-twice', id, count(*) || ' times' FROM drained GROUP BY id HAVING count(*) > 1;
INSERT INTO bad SELECT 'redelivered-settled', d.id, 'in ' || d.topic FROM drained d JOIN settled s USING (id);
INSERT INTO bad SELECT 'drain-ack-short', NULL, 'claimed ' || claimed || ', acked ' || acked
FROM drain_acks WHERE acked <> claimed;
-- after the drain nothing is pending: every event is acked or dead
INSERT INTO bad SELECT 'undelivered', e.id, 'in ' || coalesce(t.name, '(no topic)') ||
	   coalesce(', due at ' || r.available_at, '')
FROM outbox.event e LEFT JOIN outbox.topic t USING (topic_id) LEFT JOIN outbox.topic_state s USING (topic_id)
LEFT JOIN outbox.retry r ON r.event_id = e.id
WHERE NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)
  AND (r.event_id IS NOT NULL
	   OR (e.id > coalesce(s.watermark, 0)
		   AND NOT EXISTS (SELECT 1 FROM outbox.acked a
						   WHERE a.topic_id = e.topic_id AND e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])))));
INSERT INTO bad SELECT 'pending-after-drain', NULL,
	   topic || ': available ' || available || ', leased ' || leased || ', delayed ' || delayed
FROM outbox.stats WHERE available + leased + delayed > 0;
-- the checks of acks had acks to check
INSERT INTO bad SELECT 'acks-recorded', NULL, 'no ack returned true'
WHERE NOT EXISTS (SELECT 1 FROM fuzz_ledger WHERE op = 'ack');

SELECT 'check', c, (SELECT count(*) FROM bad b WHERE b.check_name = c)
FROM unnest(ARRAY['offered-missing', 'offered-wrong-topic', 'dropped-kept', 'event-states', 'unknown-event',
				  'replayed', 'acked-not-settled', 'settled-not-acked', 'dead-not-dead', 'dead-unclaimed',
				  'ack-beyond-lease', 'settle-unheld', 'acked-twice', 'acked-claimed', 'dead-claimed',
				  'drained-twice', 'redelivered-settled', 'drain-ack-short', 'undelivered',
				  'pending-after-drain', 'acks-recorded', 'ack-resolved', 'order-claim', 'order-ack',
				  'order-handed-back']) c;
SELECT 'example', check_name, coalesce(id::text, '-'), detail
FROM (SELECT b.*, row_number() OVER (PARTITION BY check_name ORDER BY id) AS k FROM bad b) x
WHERE k <= 5 ORDER BY check_name, k;
COMMIT;
