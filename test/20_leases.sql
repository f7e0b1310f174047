-- Lease rules: who may ack, what nack and dead_letter do, attempts, expiry,
-- redrive.  Leases made in this transaction are given back at ROLLBACK.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(52);

CREATE TEMP TABLE ev (label text PRIMARY KEY, id bigint NOT NULL);
CREATE TEMP TABLE leases (label text PRIMARY KEY, id bigint, lease_token uuid, attempt int,
                          lease_expires_at timestamptz);

-- Claims one event and remembers it under a label.
CREATE FUNCTION pg_temp.take(lbl text, t text, l interval DEFAULT '30 seconds') RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO leases
    SELECT lbl, c.id, c.lease_token, c.attempt, c.lease_expires_at
      FROM outbox.claim(t, batch_size => 1, lease => l) AS c
    RETURNING id
$$;
CREATE FUNCTION pg_temp.tok(lbl text) RETURNS uuid
LANGUAGE sql AS $$ SELECT lease_token FROM leases WHERE label = lbl $$;
CREATE FUNCTION pg_temp.ev(lbl text) RETURNS bigint
LANGUAGE sql AS $$ SELECT id FROM ev WHERE label = lbl $$;

SELECT lives_ok($$SELECT outbox.create_topic('lease_t', max_attempts => 2)$$, 'create_topic with max_attempts 2');
INSERT INTO ev SELECT 'e' || n, outbox.offer('lease_t', jsonb_build_object('n', n), key => 'k' || n)
  FROM generate_series(1, 3) n ORDER BY n;

-- First delivery
SELECT is(pg_temp.take('c1', 'lease_t'), pg_temp.ev('e1'), 'claim leases the oldest event first');
SELECT is((SELECT attempt FROM leases WHERE label = 'c1'), 1, 'the first lease has attempt = 1');
SELECT isnt(pg_temp.tok('c1'), NULL::uuid, 'the lease has a lease_token');
SELECT ok((SELECT lease_expires_at > clock_timestamp() FROM leases WHERE label = 'c1'),
          'the lease expires in the future');

-- ack: only the current token, only once
SELECT is(outbox.ack(pg_temp.ev('e1'), gen_random_uuid()), false, 'ack with a random token returns false');
SELECT is(outbox.ack(pg_temp.ev('e1'), pg_temp.tok('c1')), true, 'ack with the lease_token returns true');
SELECT is(outbox.ack(pg_temp.ev('e1'), pg_temp.tok('c1')), false, 'a second ack returns false');
SELECT is(outbox.ack(pg_temp.ev('e2'), pg_temp.tok('c1')), false,
          'a token does not ack an event it does not lease');

-- Two claims in a row hand out different events
SELECT is(pg_temp.take('c2', 'lease_t'), pg_temp.ev('e2'), 'the next claim leases the next event');
SELECT is(pg_temp.take('c3', 'lease_t'), pg_temp.ev('e3'), 'a claim skips events leased by another claim');
SELECT isnt(pg_temp.tok('c2'), pg_temp.tok('c3'), 'two claims have different lease_tokens');
SELECT is((SELECT count(*)::int FROM outbox.claim('lease_t', batch_size => 10)), 0,
          'nothing is left to claim while every event is leased or acked');
SELECT results_eq($$SELECT available, leased FROM outbox.stats WHERE topic = 'lease_t'$$,
                  $$VALUES (0::bigint, 2::bigint)$$, 'outbox.stats counts the two leased events');

-- extend_lease
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], pg_temp.tok('c2'), '1 minute'), 1,
          'extend_lease with the lease_token returns the count');
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], gen_random_uuid(), '1 minute'), 0,
          'extend_lease with a wrong token returns 0');
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2'), pg_temp.ev('e3')], pg_temp.tok('c2')), 1,
          'extend_lease counts only the events the token leases');

-- nack until dead (max_attempts = 2)
DO $$
BEGIN
    PERFORM outbox.nack(pg_temp.ev('e2'), gen_random_uuid(), 'wrong token', retry_after => '0 seconds');
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], pg_temp.tok('c2'), '1 minute'), 1,
          'nack with a wrong token leaves the lease alone');
SELECT is(outbox.nack(pg_temp.ev('e2'), pg_temp.tok('c2'), 'boom 1', retry_after => '0 seconds'), 'retry',
          'nack before max_attempts returns retry');
SELECT is(outbox.ack(pg_temp.ev('e2'), pg_temp.tok('c2')), false, 'a nacked lease can no longer ack');
SELECT is(pg_temp.take('c2b', 'lease_t'), pg_temp.ev('e2'), 'a nacked event with retry_after 0 is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'c2b'), 2, 'attempt increases on the next lease');
SELECT isnt(pg_temp.tok('c2b'), pg_temp.tok('c2'), 'the new lease has a new token');
SELECT is(outbox.nack(pg_temp.ev('e2'), pg_temp.tok('c2b'), 'boom 2', retry_after => '0 seconds'), 'dead',
          'nack at max_attempts returns dead');
SELECT results_eq(
    $$SELECT id, topic, key, payload, attempts FROM outbox.dead_letters WHERE topic = 'lease_t'$$,
    $$SELECT pg_temp.ev('e2'), 'lease_t'::text, 'k2'::text, '{"n": 2}'::jsonb, 2$$,
    'the dead event shows in outbox.dead_letters with its attempts');
SELECT is((SELECT jsonb_typeof(error_history) FROM outbox.dead_letters WHERE id = pg_temp.ev('e2')), 'array',
          'error_history is a jsonb array');
SELECT is((SELECT jsonb_array_length(error_history) FROM outbox.dead_letters WHERE id = pg_temp.ev('e2')), 2,
          'error_history has one entry per failed attempt');
SELECT results_eq(
    $$SELECT (h->>'attempt')::int, h->>'error', (h->>'at') IS NOT NULL
        FROM outbox.dead_letters d, jsonb_array_elements(d.error_history) WITH ORDINALITY AS x(h, n)
       WHERE d.id = pg_temp.ev('e2') ORDER BY n$$,
    $$VALUES (1, 'boom 1', true), (2, 'boom 2', true)$$,
    'error_history holds {attempt, error, at} for each nack, in order');
SELECT is((SELECT dead FROM outbox.stats WHERE topic = 'lease_t'), 1::bigint, 'outbox.stats counts the dead event');
SELECT is((SELECT count(*)::int FROM outbox.claim('lease_t', batch_size => 10)), 0, 'a dead event is not claimed');

-- dead_letter
SELECT is(outbox.dead_letter(pg_temp.ev('e3'), gen_random_uuid(), 'poison'), false,
          'dead_letter with a wrong token returns false');
SELECT is(outbox.dead_letter(pg_temp.ev('e3'), pg_temp.tok('c3'), 'poison'), true,
          'dead_letter with the lease_token returns true');
SELECT results_eq($$SELECT reason, attempts FROM outbox.dead_letters WHERE id = pg_temp.ev('e3')$$,
                  $$VALUES ('poison'::text, 1)$$, 'dead_letter keeps the reason');
SELECT is(outbox.ack(pg_temp.ev('e3'), pg_temp.tok('c3')), false, 'a dead-lettered lease can no longer ack');

-- redrive
SELECT is(outbox.redrive(ARRAY[pg_temp.ev('e2')], 'fixed the consumer'), 1, 'redrive returns the count');
SELECT is((SELECT count(*)::int FROM outbox.dead_letters WHERE id = pg_temp.ev('e2')), 0,
          'a redriven event leaves outbox.dead_letters');
SELECT is(pg_temp.take('c2c', 'lease_t'), pg_temp.ev('e2'), 'a redriven event is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'c2c'), 1, 'redrive resets the attempt count');
SELECT is(outbox.ack(pg_temp.ev('e2'), pg_temp.tok('c2c')), true, 'a redriven event is acked');
SELECT is(outbox.redrive(ARRAY[pg_temp.ev('e1')], 'not dead'), 0, 'redrive skips events that are not dead');

-- Batches: one token, ack(ids) counts only what the token leases
INSERT INTO ev SELECT 'b' || n, outbox.offer('lease_t', jsonb_build_object('b', n))
  FROM generate_series(1, 3) n ORDER BY n;
CREATE TEMP TABLE batch AS SELECT * FROM outbox.claim('lease_t', batch_size => 10);
SELECT is((SELECT count(*)::int FROM batch), 3, 'a claim returns at most what is available');
SELECT is((SELECT count(DISTINCT lease_token)::int FROM batch), 1, 'one token for the whole batch');
SELECT is((SELECT array_agg(id ORDER BY id) FROM batch),
          (SELECT array_agg(id ORDER BY id) FROM ev WHERE label LIKE 'b%'), 'the batch holds the new events');
SELECT is(outbox.ack((SELECT array_agg(id) FROM batch) || pg_temp.ev('e1'), (SELECT lease_token FROM batch LIMIT 1)),
          3, 'ack(ids) counts only the events its token leases');
SELECT is(outbox.ack((SELECT array_agg(id) FROM batch), (SELECT lease_token FROM batch LIMIT 1)),
          0, 'a second ack(ids) counts nothing');

-- Expiry: a lease that ran out and was reaped can no longer ack
SELECT lives_ok($$SELECT outbox.create_topic('lease_x')$$, 'create_topic lease_x');
INSERT INTO ev SELECT 'x1', outbox.offer('lease_x', '{"x": 1}');
SELECT is(pg_temp.take('x1', 'lease_x', '1 second'), pg_temp.ev('x1'), 'claim with a 1 second lease');
SELECT ok((SELECT lease_expires_at BETWEEN now() + interval '0.5 seconds'
                                       AND clock_timestamp() + interval '1 second'
             FROM leases WHERE label = 'x1'),
          'lease_expires_at follows the lease argument');
DO $$ BEGIN PERFORM pg_sleep(1.5); END $$;
SELECT ok(outbox.reap() >= 0, 'reap runs');
SELECT is(outbox.ack(pg_temp.ev('x1'), pg_temp.tok('x1')), false, 'an expired and reaped lease cannot ack');
SELECT is(pg_temp.take('x1b', 'lease_x'), pg_temp.ev('x1'), 'an expired event is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'x1b'), 2, 'an expired lease counts as an attempt');

SELECT * FROM finish();
ROLLBACK;
