-- A lease whose hand-back fails (here a constraint added for the test
-- refuses its retry row) stays leased and is tried again by the next reap;
-- the other expired leases are handed back all the same.
SET client_min_messages = warning;
SELECT outbox.create_topic('rb');
SELECT count(outbox.offer('rb', jsonb_build_object('n', i))) FROM generate_series(1, 3) i;
CREATE TEMP TABLE held AS
SELECT id, payload->>'n' AS n FROM outbox.claim('rb', 10, lease => '10 milliseconds');
DO $$ BEGIN
	EXECUTE format('ALTER TABLE outbox.retry ADD CONSTRAINT rb_refuse CHECK (event_id <> %s) NOT VALID',
				   (SELECT id FROM held WHERE n = '2'));
END $$;
SELECT pg_sleep(0.05);
SET client_min_messages = error;
SELECT outbox.reap() AS reaped;
RESET client_min_messages;
SELECT h.n, r.event_id IS NOT NULL AS handed_back
FROM held h LEFT JOIN outbox.retry r ON r.event_id = h.id ORDER BY h.n;
SELECT leased FROM outbox.stats WHERE topic = 'rb';

ALTER TABLE outbox.retry DROP CONSTRAINT rb_refuse;
SELECT outbox.reap() AS reaped;
SELECT count(*) AS handed_back FROM held h JOIN outbox.retry r ON r.event_id = h.id;
SELECT leased FROM outbox.stats WHERE topic = 'rb';
SELECT outbox.drop_topic('rb', force => true);
