-- Every misuse: a clear error, the right SQLSTATE, nothing half-done.
SELECT outbox.create_topic('err');
SELECT outbox.offer('err', '{"e": 1}') > 0;
CREATE TEMP TABLE e1 AS SELECT * FROM outbox.claim('err');

-- claim
SELECT try($$SELECT * FROM outbox.claim('missing')$$);
SELECT try($$SELECT * FROM outbox.claim(NULL)$$);
SELECT try($$SELECT * FROM outbox.claim('err', batch_size => 0)$$);
SELECT try($$SELECT * FROM outbox.claim('err', batch_size => -5)$$);
SELECT try($$SELECT * FROM outbox.claim('err', batch_size => 10001)$$);
SELECT try($$SELECT * FROM outbox.claim('err', batch_size => NULL)$$);
SELECT try($$SELECT * FROM outbox.claim('err', lease => '0')$$);
SELECT try($$SELECT * FROM outbox.claim('err', lease => '-1 second')$$);
SELECT try($$SELECT * FROM outbox.claim('err', lease => '2 days')$$);
SELECT try($$SELECT * FROM outbox.claim('err', lease => '1000000 years')$$);
SELECT try($$SELECT * FROM outbox.claim('err', wait => '-1 second')$$);
SELECT try($$SELECT * FROM outbox.claim('err', wait => '2 hours')$$);

-- ack, nack, extend_lease, dead_letter
SELECT try($$SELECT outbox.ack(NULL::bigint, gen_random_uuid())$$);
SELECT try($$SELECT outbox.ack(1, NULL)$$);
SELECT try($$SELECT outbox.ack(NULL::bigint[], gen_random_uuid())$$);
SELECT try($$SELECT outbox.ack(ARRAY[1, NULL]::bigint[], gen_random_uuid())$$);
SELECT try($$SELECT outbox.ack(ARRAY[[1], [2]]::bigint[], gen_random_uuid())$$);
SELECT try(format('SELECT outbox.nack(%s, %L, %L, retry_after => %L)', id, lease_token, 'x', '-1 second')) FROM e1;
SELECT try(format('SELECT outbox.nack(%s, %L, %L, retry_after => %L)', id, lease_token, 'x', '400 days')) FROM e1;
SELECT try($$SELECT outbox.nack(NULL, gen_random_uuid(), 'x')$$);
SELECT try(format('SELECT outbox.extend_lease(ARRAY[%s]::bigint[], %L, %L)', id, lease_token, '0')) FROM e1;
SELECT try(format('SELECT outbox.extend_lease(ARRAY[%s]::bigint[], %L, NULL)', id, lease_token)) FROM e1;
SELECT try(format('SELECT outbox.dead_letter(%s, %L, %L)', id, lease_token, '')) FROM e1;
SELECT try(format('SELECT outbox.dead_letter(%s, %L, NULL)', id, lease_token)) FROM e1;

-- after all of that the lease is intact and nothing moved
SELECT available, leased, delayed, dead FROM outbox.stats WHERE topic = 'err';
SELECT outbox.ack(id, lease_token) AS still_ackable FROM e1;

-- an error inside a transaction undoes its offers and claims
SELECT outbox.offer('err', '{"e": 2}') > 0;
BEGIN;
SELECT outbox.offer('err', '{"e": 3}') > 0;
SELECT count(*) FROM outbox.claim('err', 10);
SELECT outbox.offer('err', NULL);
COMMIT;
SELECT available, leased FROM outbox.stats WHERE topic = 'err';
SELECT count(*) AS e3 FROM outbox.event WHERE payload @> '{"e": 3}';

-- PREPARE TRANSACTION cannot carry outbox state
BEGIN;
SELECT outbox.offer('err', '{"e": 4}') > 0;
PREPARE TRANSACTION 'p1';
SELECT count(*) AS e4 FROM outbox.event WHERE payload @> '{"e": 4}';

-- the error messages name the argument and hint at the fix
\set SHOW_CONTEXT never
SELECT * FROM outbox.claim('missing');
SELECT * FROM outbox.claim('err', batch_size => 0);
SELECT outbox.offer('err', NULL);
