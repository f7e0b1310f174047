-- Misuse of the public functions: each raises an ERROR with the SQLSTATE of
-- the contract and a message that names what is wrong.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(103);

-- 'SQLSTATE: message' of the error a statement raises, or 'no error'.
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- The hint of the error a statement raises.
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    h text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END
$$;

SELECT outbox.create_topic('err_t');
SELECT outbox.create_topic('err_empty');
SELECT outbox.offer('err_t', '{"n": 1}');
CREATE TEMP TABLE l AS SELECT * FROM outbox.claim('err_t');
SELECT is((SELECT count(*)::int FROM l), 1, 'setup: one event leased');

-- Unknown topic: 42704 with a hint to create_topic.
SELECT throws_ok($$SELECT outbox.offer('no_such_topic', '{}')$$, '42704', NULL,
                 'offer to an unknown topic: undefined_object');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('no_such_topic', ARRAY['{}'::jsonb])$$, '42704', NULL,
                 'offer_batch to an unknown topic: undefined_object');
SELECT throws_ok($$SELECT * FROM outbox.claim('no_such_topic')$$, '42704', NULL,
                 'claim from an unknown topic: undefined_object');
SELECT throws_ok($$SELECT outbox.drop_topic('no_such_topic')$$, '42704', NULL,
                 'drop_topic of an unknown topic: undefined_object');
SELECT throws_ok($$SELECT outbox.replay('no_such_topic', now())$$, '42704', NULL,
                 'replay of an unknown topic: undefined_object');
SELECT matches(pg_temp.error_of($$SELECT outbox.offer('no_such_topic', '{}')$$),
               '^42704: .*no_such_topic', 'the unknown-topic message names the topic');
SELECT matches(pg_temp.hint_of($$SELECT outbox.offer('no_such_topic', '{}')$$),
               'outbox\.create_topic', 'the unknown-topic hint points to outbox.create_topic');

-- Topics
SELECT throws_ok($$SELECT outbox.create_topic('err_t')$$, '42710', NULL,
                 'create_topic of an existing topic: duplicate_object');
SELECT throws_ok($$SELECT outbox.create_topic('')$$, '42602', NULL,
                 'empty topic name: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic(repeat('a', 64))$$, '42602', NULL,
                 'topic name of 64 bytes: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic(repeat('é', 32))$$, '42602', NULL,
                 'topic name of 32 characters but 64 bytes: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic('has space')$$, '42602', NULL,
                 'topic name with a space: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic('semi;colon')$$, '42602', NULL,
                 'topic name with a semicolon: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic('slash/name')$$, '42602', NULL,
                 'topic name with a slash: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic('quote''s')$$, '42602', NULL,
                 'topic name with a quote: invalid_name');
SELECT throws_ok($$SELECT outbox.create_topic(E'new\nline')$$, '42602', NULL,
                 'topic name with a newline: invalid_name');
SELECT lives_ok($$SELECT outbox.create_topic(repeat('a', 63))$$, 'topic name of 63 bytes is accepted');
SELECT lives_ok($$SELECT outbox.create_topic('Mixed.Case-name_09')$$,
                'letters, digits, _, - and . are accepted');
SELECT throws_ok($$SELECT outbox.create_topic('err_o', ordered => NULL)$$, '22004', NULL,
                 'ordered => NULL: null_value_not_allowed');
SELECT lives_ok($$SELECT outbox.create_topic('err_ord', ordered => true)$$,
                'ordered => true is accepted');
SELECT throws_ok($$SELECT outbox.create_topic('err_ord', ordered => true)$$, '42710', NULL,
                 'create_topic of an existing ordered topic: duplicate_object');
SELECT throws_ok($$UPDATE outbox.topic SET ordered = false WHERE name = 'err_ord'$$, '0A000', NULL,
                 'changing ordered of a topic: feature_not_supported');
SELECT throws_ok($$UPDATE outbox.topic SET delivery = 'wal', slot = 'err_slot' WHERE name = 'err_ord'$$, '0A000', NULL,
                 'changing delivery of a topic: feature_not_supported');
SELECT is((SELECT ordered FROM outbox.topics WHERE topic = 'err_ord'), true,
          'a refused change leaves the topic ordered');
SELECT throws_ok($$SELECT outbox.create_topic('err_x', max_attempts => 0)$$, '22023', NULL,
                 'max_attempts 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.create_topic('err_x', retention => '0')$$, '22023', NULL,
                 'retention 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.create_topic('err_x', retention => '-1 day')$$, '22023', NULL,
                 'negative retention: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.create_topic('err_x', backoff_base => '0')$$, '22023', NULL,
                 'backoff_base 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.create_topic('err_x', backoff_base => '10 seconds',
                                              backoff_max => '5 seconds')$$, '22023', NULL,
                 'backoff_max below backoff_base: invalid_parameter_value');
SELECT is((SELECT count(*)::int FROM outbox.topics WHERE topic IN ('err_o', 'err_x')), 0,
          'refused topics are not created');

-- alter_topic: the checks and SQLSTATEs of create_topic; a refused call
-- changes nothing.
SELECT outbox.create_topic('err_alt', max_attempts => 5, retention => '7 days',
                           backoff_base => '1 second', backoff_max => '60 seconds');
SELECT throws_ok($$SELECT outbox.alter_topic('no_such_topic', max_attempts => 2)$$, '42704', NULL,
                 'alter_topic of an unknown topic: undefined_object');
SELECT matches(pg_temp.error_of($$SELECT outbox.alter_topic('no_such_topic', max_attempts => 2)$$),
               '^42704: .*no_such_topic', 'the unknown-topic message of alter_topic names the topic');
SELECT matches(pg_temp.hint_of($$SELECT outbox.alter_topic('no_such_topic', max_attempts => 2)$$),
               'outbox\.create_topic', 'the unknown-topic hint of alter_topic points to outbox.create_topic');
SELECT throws_ok($$SELECT outbox.alter_topic(NULL, max_attempts => 2)$$, '22004', NULL,
                 'alter_topic(NULL): null_value_not_allowed');
SELECT throws_ok($$SELECT outbox.alter_topic('has space', max_attempts => 2)$$, '42602', NULL,
                 'alter_topic of an invalid topic name: invalid_name');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', max_attempts => 0)$$, '22023', NULL,
                 'alter_topic max_attempts 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', max_attempts => -1)$$, '22023', NULL,
                 'alter_topic negative max_attempts: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', max_attempts => 1000001)$$, '22023', NULL,
                 'alter_topic max_attempts above 1000000: invalid_parameter_value');
SELECT matches(pg_temp.error_of($$SELECT outbox.alter_topic('err_alt', max_attempts => 0)$$),
               '^22023: .*max_attempts', 'the max_attempts message of alter_topic names max_attempts');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', retention => '0')$$, '22023', NULL,
                 'alter_topic retention 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', retention => '-1 day')$$, '22023', NULL,
                 'alter_topic negative retention: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', retention => '36601 days')$$, '22023', NULL,
                 'alter_topic retention above 36600 days: invalid_parameter_value');
SELECT matches(pg_temp.error_of($$SELECT outbox.alter_topic('err_alt', retention => '-1 day')$$),
               '^22023: .*retention', 'the retention message of alter_topic names retention');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_base => '0')$$, '22023', NULL,
                 'alter_topic backoff_base 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_base => '-1 second')$$, '22023', NULL,
                 'alter_topic negative backoff_base: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_base => '367 days', backoff_max => '367 days')$$,
                 '22023', NULL, 'alter_topic backoff_base above 366 days: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_max => '0')$$, '22023', NULL,
                 'alter_topic backoff_max 0: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_max => '367 days')$$, '22023', NULL,
                 'alter_topic backoff_max above 366 days: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_base => '10 seconds', backoff_max => '5 seconds')$$,
                 '22023', NULL, 'alter_topic backoff_max below backoff_base: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_max => '500 milliseconds')$$, '22023', NULL,
                 'alter_topic backoff_max alone below the kept backoff_base: invalid_parameter_value');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', backoff_base => '2 minutes')$$, '22023', NULL,
                 'alter_topic backoff_base alone above the kept backoff_max: invalid_parameter_value');
SELECT matches(pg_temp.error_of($$SELECT outbox.alter_topic('err_alt', backoff_base => '2 minutes')$$),
               '^22023: .*backoff_max.*backoff_base', 'the message names backoff_max and backoff_base');
SELECT throws_ok($$SELECT outbox.alter_topic('err_alt', max_attempts => 3, retention => '1 day',
                                             backoff_base => '0')$$, '22023', NULL,
                 'alter_topic with one bad setting among good ones: invalid_parameter_value');
SELECT results_eq(
    $$SELECT max_attempts, retention, backoff_base, backoff_max FROM outbox.topics WHERE topic = 'err_alt'$$,
    $$VALUES (5, '7 days'::interval, '1 second'::interval, '60 seconds'::interval)$$,
    'refused alter_topic calls change nothing');

-- NULL arguments: 22004
SELECT throws_ok($$SELECT outbox.create_topic(NULL)$$, '22004', NULL, 'create_topic(NULL): null_value_not_allowed');
SELECT throws_ok($$SELECT outbox.drop_topic(NULL)$$, '22004', NULL, 'drop_topic(NULL): null_value_not_allowed');
SELECT throws_ok($$SELECT outbox.offer(NULL, '{}')$$, '22004', NULL, 'offer with NULL topic: null_value_not_allowed');
SELECT throws_ok($$SELECT outbox.offer('err_t', NULL)$$, '22004', NULL, 'offer with NULL payload: null_value_not_allowed');
SELECT matches(pg_temp.error_of($$SELECT outbox.offer('err_t', NULL)$$), '^22004: .*payload',
               'the NULL-payload message names payload');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch(NULL, ARRAY['{}'::jsonb])$$, '22004', NULL,
                 'offer_batch with NULL topic: null_value_not_allowed');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('err_t', NULL)$$, '22004', NULL,
                 'offer_batch with NULL payloads: null_value_not_allowed');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('err_t', ARRAY['{}'::jsonb, NULL])$$, '22004', NULL,
                 'offer_batch with a NULL payload: null_value_not_allowed');
SELECT throws_ok($$SELECT * FROM outbox.claim(NULL)$$, '22004', NULL, 'claim(NULL): null_value_not_allowed');
SELECT throws_ok(format('SELECT outbox.ack(NULL::bigint, %L::uuid)', lease_token), '22004', NULL,
                 'ack with NULL id: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.ack(%s, NULL::uuid)', id), '22004', NULL,
                 'ack with NULL lease_token: null_value_not_allowed') FROM l;
SELECT matches(pg_temp.error_of(format('SELECT outbox.ack(%s, NULL::uuid)', id)), '^22004: .*lease_token',
               'the NULL-lease_token message names lease_token') FROM l;
SELECT throws_ok(format('SELECT outbox.ack(NULL::bigint[], %L::uuid)', lease_token), '22004', NULL,
                 'ack with NULL ids: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.ack(ARRAY[%s]::bigint[], NULL::uuid)', id), '22004', NULL,
                 'ack(ids) with NULL lease_token: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.nack(NULL, %L, ''e'')', lease_token), '22004', NULL,
                 'nack with NULL id: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.nack(%s, NULL, ''e'')', id), '22004', NULL,
                 'nack with NULL lease_token: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.extend_lease(ARRAY[%s]::bigint[], NULL)', id), '22004', NULL,
                 'extend_lease with NULL lease_token: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.dead_letter(NULL, %L, ''r'')', lease_token), '22004', NULL,
                 'dead_letter with NULL id: null_value_not_allowed') FROM l;
SELECT throws_ok(format('SELECT outbox.dead_letter(%s, NULL, ''r'')', id), '22004', NULL,
                 'dead_letter with NULL lease_token: null_value_not_allowed') FROM l;

-- Out-of-range arguments: 22023
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', batch_size => 0)$$, '22023', NULL,
                 'batch_size 0: invalid_parameter_value');
SELECT matches(pg_temp.error_of($$SELECT * FROM outbox.claim('err_empty', batch_size => 0)$$),
               '^22023: .*batch_size', 'the batch_size message names batch_size');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', batch_size => -1)$$, '22023', NULL,
                 'batch_size -1: invalid_parameter_value');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', batch_size => 10001)$$, '22023', NULL,
                 'batch_size 10001: invalid_parameter_value');
SELECT lives_ok($$SELECT * FROM outbox.claim('err_empty', batch_size => 10000)$$,
                'batch_size 10000 is accepted');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', lease => '0')$$, '22023', NULL,
                 'lease 0: invalid_parameter_value');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', lease => '-1 second')$$, '22023', NULL,
                 'negative lease: invalid_parameter_value');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', lease => '1 day 1 second')$$, '22023', NULL,
                 'lease over 1 day: invalid_parameter_value');
SELECT lives_ok($$SELECT * FROM outbox.claim('err_empty', lease => '1 day')$$, 'lease of 1 day is accepted');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', wait => '-1 second')$$, '22023', NULL,
                 'negative wait: invalid_parameter_value');
SELECT throws_ok($$SELECT * FROM outbox.claim('err_empty', wait => '1 hour 1 second')$$, '22023', NULL,
                 'wait over 1 hour: invalid_parameter_value');
SELECT throws_ok(format('SELECT outbox.nack(%s, %L, ''e'', retry_after => ''-1 second'')', id, lease_token),
                 '22023', NULL, 'negative retry_after: invalid_parameter_value') FROM l;
SELECT throws_ok(format('SELECT outbox.extend_lease(ARRAY[%s]::bigint[], %L, lease => ''0'')', id, lease_token),
                 '22023', NULL, 'extend_lease with lease 0: invalid_parameter_value') FROM l;
SELECT throws_ok(format('SELECT outbox.extend_lease(ARRAY[%s]::bigint[], %L, lease => ''2 days'')', id, lease_token),
                 '22023', NULL, 'extend_lease with lease over 1 day: invalid_parameter_value') FROM l;
SELECT throws_ok(format('SELECT outbox.dead_letter(%s, %L, '''')', id, lease_token),
                 '22023', NULL, 'dead_letter with an empty reason: invalid_parameter_value') FROM l;
SELECT matches(pg_temp.error_of(format('SELECT outbox.dead_letter(%s, %L, NULL)', id, lease_token)),
               '^(22023|22004): ', 'dead_letter with a NULL reason is refused') FROM l;
SELECT throws_ok(format('SELECT outbox.redrive(ARRAY[%s]::bigint[], '''')', id),
                 '22023', NULL, 'redrive with an empty reason: invalid_parameter_value') FROM l;
SELECT matches(pg_temp.error_of(format('SELECT outbox.redrive(ARRAY[%s]::bigint[], NULL)', id)),
               '^(22023|22004): ', 'redrive with a NULL reason is refused') FROM l;
SELECT matches(pg_temp.error_of($$SELECT outbox.redrive(ARRAY[1]::bigint[], '')$$),
               '^22023: .*reason', 'the empty-reason message names reason');

-- Arrays of different lengths: 2202E
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('err_t', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a'])$$,
                 '2202E', NULL, 'offer_batch with fewer keys than payloads: array_subscript_error');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('err_t', ARRAY['{}', '{}']::jsonb[], types => ARRAY['a', 'b', 'c'])$$,
                 '2202E', NULL, 'offer_batch with more types than payloads: array_subscript_error');
SELECT throws_ok($$SELECT * FROM outbox.offer_batch('err_t', ARRAY['{}', '{}']::jsonb[], headers => ARRAY['{}']::jsonb[])$$,
                 '2202E', NULL, 'offer_batch with fewer headers than payloads: array_subscript_error');
SELECT lives_ok($$SELECT * FROM outbox.offer_batch('err_empty', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a', 'b'],
                                                 types => ARRAY['x', 'y'], headers => ARRAY['{}', '{}']::jsonb[])$$,
                'offer_batch with arrays of one length is accepted');

-- The lease survives all the refused calls above.
SELECT is(outbox.extend_lease(ARRAY[id], lease_token), 1, 'the lease is intact after the refused calls') FROM l;

-- Dropping a topic that holds undelivered events: 55006 unless force.
SELECT throws_ok($$SELECT outbox.drop_topic('err_t')$$, '55006', NULL,
                 'drop_topic with undelivered events: object_in_use');
SELECT is((SELECT count(*)::int FROM outbox.topics WHERE topic = 'err_t'), 1,
          'a refused drop_topic keeps the topic');
SELECT lives_ok($$SELECT outbox.drop_topic('err_t', force => true)$$, 'drop_topic with force');
SELECT is((SELECT count(*)::int FROM outbox.topics WHERE topic = 'err_t'), 0,
          'drop_topic with force removes the topic');
SELECT throws_ok($$SELECT outbox.offer('err_t', '{}')$$, '42704', NULL,
                 'a dropped topic is unknown to offer');

SELECT * FROM finish();
ROLLBACK;
