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
-- An install rolled back takes what its topics left in shared memory with
-- it: the lease of a claim it made stays behind no more, and the next
-- install, drawing the same id for a topic of another id, finds it
-- claimable.
DROP EXTENSION outbox;
BEGIN;
CREATE EXTENSION outbox;
SELECT count(*) FROM (SELECT outbox.create_topic('pad' || g) FROM generate_series(1, 3) g) p;
SELECT outbox.create_topic('gone');
SELECT outbox.offer('gone', '{"c": 1}') AS gone_id \gset
SELECT outbox.nack(id, lease_token, 'x', retry_after => '0') FROM outbox.claim('gone');
ROLLBACK;
CREATE EXTENSION outbox;
SELECT outbox.create_topic('back');
SELECT outbox.offer('back', '{"c": 2}') = :gone_id AS same_id;
SELECT payload FROM outbox.claim('back');
-- ... and so does an install rolled back to a savepoint
DROP EXTENSION outbox;
BEGIN;
SAVEPOINT before_install;
CREATE EXTENSION outbox;
SELECT count(*) FROM (SELECT outbox.create_topic('pad' || g) FROM generate_series(1, 3) g) p;
SELECT outbox.create_topic('gone');
SELECT outbox.offer('gone', '{"d": 1}') AS gone_id \gset
SELECT outbox.nack(id, lease_token, 'x', retry_after => '0') FROM outbox.claim('gone');
ROLLBACK TO SAVEPOINT before_install;
COMMIT;
CREATE EXTENSION outbox;
SELECT outbox.create_topic('back');
SELECT outbox.offer('back', '{"d": 2}') = :gone_id AS same_id;
SELECT payload FROM outbox.claim('back');
-- A DROP EXTENSION rolled back to a savepoint leaves the install as it was:
-- a lease made before it still holds its event
SELECT outbox.create_topic('kept');
SELECT outbox.offer('kept', '{"e": 1}') > 0 AS offered;
SELECT count(*) AS leased FROM outbox.claim('kept', 1, lease => '1 hour');
BEGIN;
SAVEPOINT before_drop;
DROP EXTENSION outbox;
ROLLBACK TO SAVEPOINT before_drop;
COMMIT;
SELECT count(*) AS claimed_again FROM outbox.claim('kept', 1);
SELECT topic, available, leased FROM outbox.stats WHERE topic = 'kept';
-- ... and an install dropped again in the savepoint that is rolled back
DROP EXTENSION outbox;
BEGIN;
SAVEPOINT before_install;
CREATE EXTENSION outbox;
SELECT count(*) FROM (SELECT outbox.create_topic('pad' || g) FROM generate_series(1, 3) g) p;
SELECT outbox.create_topic('gone');
SELECT outbox.offer('gone', '{"f": 1}') AS gone_id \gset
SELECT outbox.nack(id, lease_token, 'x', retry_after => '0') FROM outbox.claim('gone');
DROP EXTENSION outbox;
ROLLBACK TO SAVEPOINT before_install;
COMMIT;
CREATE EXTENSION outbox;
SELECT outbox.create_topic('back');
SELECT outbox.offer('back', '{"f": 2}') = :gone_id AS same_id;
SELECT payload FROM outbox.claim('back');
