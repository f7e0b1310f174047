-- Consuming: claim leases, acks fence on the lease token.
SELECT outbox.create_topic('jobs');
SELECT outbox.create_topic('other');
SELECT count(*) FROM outbox.offer_batch('jobs',
	ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g));
SELECT outbox.offer('other', '{"o": 1}') > 0;

-- a claim: oldest first, one token for the batch, attempt 1, its own topic
CREATE TEMP TABLE c1 AS SELECT * FROM outbox.claim('jobs', batch_size => 3);
SELECT payload, topic, attempt FROM c1 ORDER BY id;
SELECT count(DISTINCT lease_token) AS tokens,
	bool_and(lease_expires_at BETWEEN now() + interval '29 seconds' AND now() + interval '31 seconds') AS lease_30s
FROM c1;

-- a second claim never returns what the first holds
CREATE TEMP TABLE c2 AS SELECT * FROM outbox.claim('jobs', batch_size => 3, lease => '1 minute');
SELECT payload FROM c2 ORDER BY id;
SELECT count(*) AS overlap FROM c1 JOIN c2 USING (id);
SELECT (SELECT lease_token FROM c1 LIMIT 1) <> (SELECT lease_token FROM c2 LIMIT 1) AS fresh_token;

-- ack: true once with the right token; false with another or twice
SELECT outbox.ack(c.id, gen_random_uuid()) AS wrong_token FROM c1 c ORDER BY id LIMIT 1;
SELECT outbox.ack(c.id, (SELECT lease_token FROM c2 LIMIT 1)) AS other_claims_token FROM c1 c ORDER BY id LIMIT 1;
SELECT outbox.ack(c.id, c.lease_token) AS acked FROM c1 c ORDER BY id LIMIT 1;
SELECT outbox.ack(c.id, c.lease_token) AS acked_again FROM c1 c ORDER BY id LIMIT 1;
SELECT outbox.ack(ARRAY(SELECT id FROM c1), (SELECT lease_token FROM c1 LIMIT 1)) AS acked_rest;
SELECT outbox.ack(ARRAY(SELECT id FROM c2) || ARRAY[-1, 999999]::bigint[], (SELECT lease_token FROM c2 LIMIT 1)) AS acked_known;
SELECT outbox.ack('{}'::bigint[], gen_random_uuid()) AS acked_none;
SELECT available, leased, acked FROM outbox.stats WHERE topic = 'jobs';

-- a claim rolled back leases nothing: its events are available at once
BEGIN;
SELECT payload FROM outbox.claim('jobs', batch_size => 2) ORDER BY id;
ROLLBACK;
SELECT available, leased FROM outbox.stats WHERE topic = 'jobs';
SELECT payload, attempt FROM outbox.claim('jobs', batch_size => 2) ORDER BY id;

-- ... also in a rolled-back savepoint
BEGIN;
SAVEPOINT s;
SELECT payload FROM outbox.claim('jobs', batch_size => 1);
ROLLBACK TO SAVEPOINT s;
SELECT payload FROM outbox.claim('jobs', batch_size => 1);
COMMIT;

-- an ack rolled back leaves the lease held: the same token acks it later
CREATE TEMP TABLE c3 AS SELECT * FROM outbox.claim('jobs', batch_size => 1);
BEGIN;
SELECT outbox.ack(id, lease_token) FROM c3;
ROLLBACK;
SELECT leased > 0 AS still_leased FROM outbox.stats WHERE topic = 'jobs';
SELECT outbox.ack(id, lease_token) AS acked_after_rollback FROM c3;

-- claim, ack and offer in one transaction
BEGIN;
SELECT outbox.offer('jobs', '{"same": "xact"}') AS same_id \gset
CREATE TEMP TABLE c4 AS SELECT * FROM outbox.claim('jobs', batch_size => 100);
SELECT count(*) AS claimed, bool_or(id = :same_id) AS got_own FROM c4;
SELECT outbox.ack(ARRAY(SELECT id FROM c4), (SELECT lease_token FROM c4 LIMIT 1)) AS acked;
COMMIT;
SELECT available, leased FROM outbox.stats WHERE topic = 'jobs';

-- an empty topic: empty at once; with wait, empty after the wait
SELECT count(*) FROM outbox.claim('other', batch_size => 10);
SELECT count(*) AS nothing FROM outbox.claim('other');
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS nothing_after_wait FROM outbox.claim('other', wait => '300 ms');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '290 ms' AS waited;
SELECT clock_timestamp() AS t0 \gset
SELECT outbox.offer('other', '{"o": 2}') > 0;
SELECT count(*) AS at_once FROM outbox.claim('other', wait => '10 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz < interval '5 seconds' AS did_not_wait;

-- a claim and the ack, nack or dead letter of its lease in one transaction
-- that rolls back (or in a savepoint rolled back): nothing stays leased
SELECT outbox.offer('other', '{"rb": 1}') AS rb_id \gset
BEGIN;
CREATE TEMP TABLE c5 AS SELECT id, lease_token FROM outbox.claim('other', lease => '1 hour');
SELECT outbox.ack(id, lease_token) AS acked_in_xact FROM c5;
ROLLBACK;
SELECT available, leased FROM outbox.stats WHERE topic = 'other';
BEGIN;
CREATE TEMP TABLE c6 AS SELECT id, lease_token FROM outbox.claim('other', lease => '1 hour');
SAVEPOINT s;
SELECT outbox.nack(id, lease_token, 'no') AS nacked FROM c6;
ROLLBACK TO SAVEPOINT s;
SELECT outbox.dead_letter(id, lease_token, 'no') AS dead FROM c6;
ROLLBACK;
SELECT available, leased, dead FROM outbox.stats WHERE topic = 'other';
SELECT id = :rb_id AS same_event, attempt FROM outbox.claim('other');
