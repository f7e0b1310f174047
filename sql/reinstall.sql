-- Dropping and creating the extension again starts clean: leases held in
-- shared memory by the old install do not touch the new one's events, and
-- the caller's search_path is left as it was.
SELECT outbox.create_topic('again');
SELECT count(*) FROM outbox.offer_batch('again', ARRAY['{"a": 1}', '{"a": 2}']::jsonb[]);
SELECT count(*) AS held, min(id) AS old_id FROM outbox.claim('again', 2) \gset
SELECT :held AS held;
DROP EXTENSION outbox;
SET search_path = app, public;
CREATE EXTENSION outbox;
SHOW search_path;
RESET search_path;
SELECT outbox.create_topic('again');
-- the new install draws the same ids as the held ones; they are claimable
SELECT setval('outbox.event_id_seq', :old_id - 1) >= 0;
SELECT count(*) FROM outbox.offer_batch('again', ARRAY['{"b": 1}', '{"b": 2}']::jsonb[]);
SELECT id - :old_id AS rel_id, payload, attempt FROM outbox.claim('again', 10) ORDER BY id;
SELECT topic, available, leased, offered FROM outbox.stats;
