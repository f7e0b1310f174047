-- Lease rules: who may ack, what nack and dead_letter do, attempts, expiry,
-- redrive.
--
-- Part 1 runs in this transaction; its leases are given back at ROLLBACK.
-- Part 2 needs committed transactions (a nack, an expiry or a redrive takes
-- effect when its transaction commits), so it drives a second session
-- through dblink in a scratch database, which it drops at the end.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(63);

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
-- The token of a remembered lease; a token no lease has if that claim got
-- nothing, so that later calls report false instead of failing.
CREATE FUNCTION pg_temp.tok(lbl text) RETURNS uuid
LANGUAGE sql AS $$
    SELECT coalesce((SELECT lease_token FROM leases WHERE label = lbl),
                    '00000000-0000-0000-0000-000000000000'::uuid)
$$;
CREATE FUNCTION pg_temp.ev(lbl text) RETURNS bigint
LANGUAGE sql AS $$ SELECT id FROM ev WHERE label = lbl $$;

------------------------------------------------------------------------
-- Part 1: in this transaction
------------------------------------------------------------------------
SELECT lives_ok($$SELECT outbox.create_topic('lease_t', max_attempts => 2)$$, 'create_topic with max_attempts 2');
INSERT INTO ev SELECT 'e' || n, outbox.offer('lease_t', jsonb_build_object('n', n), key => 'k' || n)
  FROM generate_series(1, 4) n ORDER BY n;

-- First delivery
SELECT is(pg_temp.take('c1', 'lease_t'), pg_temp.ev('e1'), 'claim leases the oldest event first');
SELECT is((SELECT attempt FROM leases WHERE label = 'c1'), 1, 'the first lease has attempt = 1');
SELECT isnt((SELECT lease_token FROM leases WHERE label = 'c1'), NULL::uuid, 'the lease has a lease_token');
SELECT ok((SELECT lease_expires_at > clock_timestamp() FROM leases WHERE label = 'c1'),
          'the lease expires in the future');
SELECT results_eq($$SELECT available, leased FROM outbox.stats WHERE topic = 'lease_t'$$,
                  $$VALUES (3::bigint, 1::bigint)$$, 'outbox.stats counts the leased event apart');

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
SELECT is(pg_temp.take('c4', 'lease_t'), pg_temp.ev('e4'), 'a third claim leases the last event');
SELECT is((SELECT count(*)::int FROM outbox.claim('lease_t', batch_size => 10)), 0,
          'nothing is left to claim while every event is leased or acked');

-- extend_lease
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], pg_temp.tok('c2'), '1 minute'), 1,
          'extend_lease with the lease_token returns the count');
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], gen_random_uuid(), '1 minute'), 0,
          'extend_lease with a wrong token returns 0');
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2'), pg_temp.ev('e3')], pg_temp.tok('c2')), 1,
          'extend_lease counts only the events the token leases');

-- nack
DO $$
BEGIN
    PERFORM outbox.nack(pg_temp.ev('e2'), gen_random_uuid(), 'wrong token', retry_after => '0 seconds');
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], pg_temp.tok('c2'), '1 minute'), 1,
          'nack with a wrong token leaves the lease alone');
SELECT is(outbox.nack(pg_temp.ev('e2'), pg_temp.tok('c2'), 'boom', retry_after => '0 seconds'), 'retry',
          'nack before max_attempts returns retry');
SELECT is(outbox.ack(pg_temp.ev('e2'), pg_temp.tok('c2')), false, 'a nacked lease can no longer ack');
SELECT is(outbox.extend_lease(ARRAY[pg_temp.ev('e2')], pg_temp.tok('c2')), 0, 'a nacked lease can no longer be extended');

-- dead_letter
SELECT is(outbox.dead_letter(pg_temp.ev('e3'), gen_random_uuid(), 'poison'), false,
          'dead_letter with a wrong token returns false');
SELECT is(outbox.dead_letter(pg_temp.ev('e3'), pg_temp.tok('c3'), 'poison'), true,
          'dead_letter with the lease_token returns true');
SELECT results_eq($$SELECT id, topic, key, payload, attempts, reason FROM outbox.dead_letters WHERE topic = 'lease_t'$$,
                  $$SELECT pg_temp.ev('e3'), 'lease_t'::text, 'k3'::text, '{"n": 3}'::jsonb, 1, 'poison'::text$$,
                  'the dead-lettered event shows in outbox.dead_letters with its attempts and reason');
SELECT is(outbox.ack(pg_temp.ev('e3'), pg_temp.tok('c3')), false, 'a dead-lettered lease can no longer ack');
SELECT is(outbox.dead_letter(pg_temp.ev('e3'), pg_temp.tok('c3'), 'again'), false, 'a second dead_letter returns false');

-- Batches: one token, ack(ids) counts only what the token leases
INSERT INTO ev SELECT 'b' || n, outbox.offer('lease_t', jsonb_build_object('b', n))
  FROM generate_series(1, 3) n ORDER BY n;
CREATE TEMP TABLE batch AS SELECT * FROM outbox.claim('lease_t', batch_size => 10);
SELECT is((SELECT count(*)::int FROM batch), 3, 'a claim returns at most what is available');
SELECT is((SELECT count(DISTINCT lease_token)::int FROM batch), 1, 'one token for the whole batch');
SELECT is((SELECT array_agg(id ORDER BY id) FROM batch),
          (SELECT array_agg(id ORDER BY id) FROM ev WHERE label LIKE 'b%'), 'the batch holds the new events');
SELECT is(outbox.ack((SELECT array_agg(id) FROM batch) || pg_temp.ev('e4'), (SELECT lease_token FROM batch LIMIT 1)),
          3, 'ack(ids) counts only the events its token leases');
SELECT is(outbox.ack((SELECT array_agg(id) FROM batch), (SELECT lease_token FROM batch LIMIT 1)),
          0, 'a second ack(ids) counts nothing');

------------------------------------------------------------------------
-- Part 2: committed transactions in a second session
------------------------------------------------------------------------
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE FUNCTION pg_temp.scratch() RETURNS text
LANGUAGE sql AS $$ SELECT 'outbox_tap_leases_' || pg_backend_pid() $$;
CREATE FUNCTION pg_temp.conn(db text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('host=%s port=%s dbname=%s user=%s '
                  'options=''-c client_min_messages=warning -c lock_timeout=10s''',
                  split_part(current_setting('unix_socket_directories'), ',', 1),
                  current_setting('port'), db, current_user)
$$;
-- Runs a statement in the second session (its own transaction) and returns
-- the first column of the first row as text, or the error it raised.
CREATE FUNCTION pg_temp.r(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    SELECT t.v INTO v FROM dblink('leases', q) AS t(v text) LIMIT 1;
    RETURN v;
EXCEPTION WHEN OTHERS THEN
    RETURN 'error: ' || SQLERRM;
END
$$;
-- Claims one event in the second session and remembers it.
CREATE FUNCTION pg_temp.rtake(lbl text, t text, l interval DEFAULT '30 seconds') RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO leases
    SELECT lbl, c.id, c.lease_token, c.attempt, c.lease_expires_at
      FROM dblink('leases', format('SELECT id, lease_token, attempt, lease_expires_at '
                                   'FROM outbox.claim(%L, batch_size => 1, lease => %L)', t, l))
           AS c(id bigint, lease_token uuid, attempt int, lease_expires_at timestamptz)
    RETURNING id
$$;

-- Installing outbox in the scratch database creates its roles unless they
-- exist; if this transaction created them, that install waits for this
-- transaction (the lock_timeout above ends the wait).  The pgTAP harness
-- installs outbox once in another database first.
SELECT is((SELECT count(*)::int FROM pg_authid
            WHERE rolname IN ('outbox_producer', 'outbox_consumer', 'outbox_admin')
              AND xmin = pg_current_xact_id()::xid), 0,
          'the outbox roles were not created by this transaction');
DO $$
BEGIN
    PERFORM dblink_exec(pg_temp.conn(current_database()), format('DROP DATABASE IF EXISTS %I', pg_temp.scratch()));
    PERFORM dblink_exec(pg_temp.conn(current_database()), format('CREATE DATABASE %I', pg_temp.scratch()));
    PERFORM dblink_connect('leases', pg_temp.conn(pg_temp.scratch()));
    PERFORM dblink_exec('leases', 'CREATE EXTENSION outbox CASCADE');
END
$$;
SELECT is(pg_temp.r($$SELECT outbox.create_topic('lease_r', max_attempts => 2)::text$$), '',
          'committed: create_topic with max_attempts 2');
INSERT INTO ev SELECT 'r', pg_temp.r($$SELECT outbox.offer('lease_r', '{"r": 1}', key => 'kr')$$)::bigint;

-- nack, claim again, nack until dead
SELECT is(pg_temp.rtake('r1', 'lease_r'), pg_temp.ev('r'), 'committed: claim');
SELECT is(pg_temp.r(format($$SELECT outbox.nack(%s, %L, 'boom 1', retry_after => '0 seconds')$$,
                           pg_temp.ev('r'), pg_temp.tok('r1'))),
          'retry', 'committed: nack before max_attempts returns retry');
SELECT is(pg_temp.r(format('SELECT outbox.ack(%s, %L)::text', pg_temp.ev('r'), pg_temp.tok('r1'))), 'false',
          'committed: the nacked lease can no longer ack');
SELECT is(pg_temp.rtake('r2', 'lease_r'), pg_temp.ev('r'), 'committed: a nacked event with retry_after 0 is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'r2'), 2, 'committed: attempt increases on the next lease');
SELECT isnt(pg_temp.tok('r2'), pg_temp.tok('r1'), 'committed: the new lease has a new token');
SELECT is(pg_temp.r(format($$SELECT outbox.nack(%s, %L, 'boom 2', retry_after => '0 seconds')$$,
                           pg_temp.ev('r'), pg_temp.tok('r2'))),
          'dead', 'committed: nack at max_attempts returns dead');
SELECT is(pg_temp.r($$SELECT format('%s|%s|%s|%s|%s', id, topic, key, payload, attempts)
                        FROM outbox.dead_letters$$),
          format('%s|lease_r|kr|{"r": 1}|2', pg_temp.ev('r')),
          'committed: the dead event shows in outbox.dead_letters with its attempts');
SELECT is(pg_temp.r($$SELECT jsonb_typeof(error_history) FROM outbox.dead_letters$$), 'array',
          'committed: error_history is a jsonb array');
SELECT is(pg_temp.r($$SELECT string_agg(format('%s:%s:%s', h->>'attempt', h->>'error', (h->>'at') IS NOT NULL),
                                        ', ' ORDER BY n)
                        FROM outbox.dead_letters d, jsonb_array_elements(d.error_history) WITH ORDINALITY AS x(h, n)$$),
          '1:boom 1:t, 2:boom 2:t',
          'committed: error_history holds {attempt, error, at} for each nack, in order');
SELECT is(pg_temp.r($$SELECT format('%s/%s/%s', available, leased, dead) FROM outbox.stats WHERE topic = 'lease_r'$$),
          '0/0/1', 'committed: outbox.stats counts the dead event');
SELECT is(pg_temp.r($$SELECT count(*) FROM outbox.claim('lease_r', batch_size => 10)$$), '0',
          'committed: a dead event is not claimed');

-- redrive
SELECT is(pg_temp.r(format($$SELECT outbox.redrive(ARRAY[%s], 'fixed the consumer')$$, pg_temp.ev('r'))), '1',
          'committed: redrive returns the count');
SELECT is(pg_temp.r($$SELECT count(*) FROM outbox.dead_letters$$), '0',
          'committed: a redriven event leaves outbox.dead_letters');
SELECT is(pg_temp.rtake('r3', 'lease_r'), pg_temp.ev('r'), 'committed: a redriven event is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'r3'), 1, 'committed: redrive resets the attempt count');
SELECT is(pg_temp.r(format('SELECT outbox.ack(%s, %L)::text', pg_temp.ev('r'), pg_temp.tok('r3'))), 'true',
          'committed: a redriven event is acked');
SELECT is(pg_temp.r(format($$SELECT outbox.redrive(ARRAY[%s], 'not dead')$$, pg_temp.ev('r'))), '0',
          'committed: redrive skips events that are not dead');

-- expiry: a lease that ran out and was reaped can no longer ack
INSERT INTO ev SELECT 'x', pg_temp.r($$SELECT outbox.offer('lease_r', '{"x": 1}')$$)::bigint;
SELECT is(pg_temp.rtake('x1', 'lease_r', '1 second'), pg_temp.ev('x'), 'committed: claim with a 1 second lease');
SELECT ok((SELECT lease_expires_at > now() AND lease_expires_at <= clock_timestamp() + interval '1 second'
             FROM leases WHERE label = 'x1'),
          'committed: lease_expires_at follows the lease argument');
DO $$ BEGIN PERFORM pg_sleep(1.5); END $$;
SELECT matches(pg_temp.r('SELECT outbox.reap()'), '^[0-9]+$', 'committed: reap returns a count');
SELECT is(pg_temp.r(format('SELECT outbox.ack(%s, %L)::text', pg_temp.ev('x'), pg_temp.tok('x1'))), 'false',
          'committed: an expired and reaped lease cannot ack');
SELECT is(pg_temp.rtake('x2', 'lease_r'), pg_temp.ev('x'), 'committed: an expired event is claimed again');
SELECT is((SELECT attempt FROM leases WHERE label = 'x2'), 2, 'committed: an expired lease counts as an attempt');
SELECT is(pg_temp.r(format('SELECT outbox.ack(%s, %L)::text', pg_temp.ev('x'), pg_temp.tok('x2'))), 'true',
          'committed: the new lease acks');

SELECT is(pg_temp.r($$SELECT format('%s/%s/%s/%s', available, leased, delayed, dead)
                        FROM outbox.stats WHERE topic = 'lease_r'$$),
          '0/0/0/0', 'committed: the topic ends with nothing pending');

-- replay: delivered events come back as new events
SELECT is(pg_temp.r($$SELECT outbox.replay('lease_r', now() - interval '1 hour', key => 'kr')$$), '1',
          'committed: replay re-offers the delivered events of one key');
SELECT is(pg_temp.r(format($$WITH c AS (SELECT * FROM outbox.claim('lease_r', batch_size => 10))
                            SELECT format('%%s|%%s|%%s|%%s', count(*), string_agg(key || '=' || payload::text, ','),
                                          bool_and(id NOT IN (%s, %s)),
                                          outbox.ack(array_agg(id), min(lease_token::text)::uuid))
                              FROM c$$, pg_temp.ev('r'), pg_temp.ev('x'))),
          '1|kr={"r": 1}|t|1', 'committed: the replayed event is a new event with the original key and payload');
SELECT is(pg_temp.r($$SELECT outbox.replay('lease_r', now() + interval '1 hour')$$), '0',
          'committed: replay since a later time re-offers nothing');

DO $$
BEGIN
    PERFORM dblink_disconnect('leases');
    PERFORM dblink_exec(pg_temp.conn(current_database()), format('DROP DATABASE %I WITH (FORCE)', pg_temp.scratch()));
END
$$;

SELECT * FROM finish();
ROLLBACK;
