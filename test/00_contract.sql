-- The public SQL contract: every function with its exact argument names,
-- types, defaults and result type; the views and their columns; and the
-- basic behaviour those signatures promise.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(145);

-- Input-argument defaults of a function, evaluated: '-' for an argument
-- without a default, 'NULL' for DEFAULT NULL.
CREATE FUNCTION pg_temp.arg_defaults(p regprocedure) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n   int;
    d   text;
    v   text;
    out text[] := '{}';
BEGIN
    IF p IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT pronargs INTO n FROM pg_proc WHERE oid = p;
    FOR i IN 1 .. n LOOP
        d := pg_get_function_arg_default(p, i);
        IF d IS NULL THEN
            out := out || '-'::text;
        ELSE
            EXECUTE format('SELECT (%s)::text', d) INTO v;
            out := out || coalesce(v, 'NULL');
        END IF;
    END LOOP;
    RETURN array_to_string(out, ', ');
END
$$;

CREATE TEMP TABLE expect_fn (
    ord       int,
    name      name,
    args      name[],
    returns   text,
    identity  text,
    defaults  text
);
INSERT INTO expect_fn VALUES
 (1, 'create_topic', '{text,integer,interval,interval,interval,boolean,text,name}', 'void',
  'topic text, max_attempts integer, retention interval, backoff_base interval, backoff_max interval, ordered boolean, delivery text, slot name',
  '-, 5, 7 days, 00:00:01, 00:01:00, false, claim, NULL'),
 (2, 'drop_topic', '{text,boolean}', 'void',
  'topic text, force boolean',
  '-, false'),
 (3, 'offer', '{text,jsonb,text,text,jsonb,text,text,"timestamp with time zone"}', 'bigint',
  'topic text, payload jsonb, key text, type text, headers jsonb, tenant text, dedupe_key text, available_at timestamp with time zone',
  '-, -, NULL, NULL, NULL, NULL, NULL, NULL'),
 (4, 'offer_batch', '{text,jsonb[],text[],text[],jsonb[],text}', 'setof bigint',
  'topic text, payloads jsonb[], keys text[], types text[], headers jsonb[], tenant text',
  '-, -, NULL, NULL, NULL, NULL'),
 (5, 'claim', '{text,integer,interval,interval}', 'setof record',
  'topic text, batch_size integer, lease interval, wait interval',
  '-, 1, 00:00:30, 00:00:00'),
 (6, 'ack', '{bigint,uuid}', 'boolean',
  'id bigint, lease_token uuid',
  '-, -'),
 (7, 'ack', '{bigint[],uuid}', 'integer',
  'ids bigint[], lease_token uuid',
  '-, -'),
 (8, 'nack', '{bigint,uuid,text,interval}', 'text',
  'id bigint, lease_token uuid, error text, retry_after interval',
  '-, -, -, NULL'),
 (9, 'extend_lease', '{bigint[],uuid,interval}', 'integer',
  'ids bigint[], lease_token uuid, lease interval',
  '-, -, 00:00:30'),
 (10, 'dead_letter', '{bigint,uuid,text}', 'boolean',
  'id bigint, lease_token uuid, reason text',
  '-, -, -'),
 (11, 'redrive', '{bigint[],text}', 'integer',
  'ids bigint[], reason text',
  '-, -'),
 (12, 'replay', '{text,"timestamp with time zone","timestamp with time zone",text,text}', 'integer',
  'topic text, since timestamp with time zone, until timestamp with time zone, key text, tenant text',
  '-, -, NULL, NULL, NULL'),
 (13, 'reap', '{}', 'integer', '', ''),
 (14, 'maintain', '{}', 'void', '', ''),
 (15, 'alter_topic', '{text,integer,interval,interval,interval}', 'void',
  'topic text, max_attempts integer, retention interval, backoff_base interval, backoff_max interval',
  '-, NULL, NULL, NULL, NULL'),
 (16, 'reset_metrics', '{}', 'void', '', ''),
 (17, 'metrics_histograms', '{}', 'setof record', '', ''),
 (18, 'capture', '{regclass,text}', 'void', 'source regclass, topic text', '-, -'),
 (19, 'uncapture', '{regclass,text}', 'boolean', 'source regclass, topic text', '-, -');

CREATE FUNCTION pg_temp.fn(n name, a name[]) RETURNS regprocedure
LANGUAGE sql AS $$
    SELECT to_regprocedure(format('outbox.%I(%s)', n, array_to_string(a, ',')))
$$;

SELECT has_schema('outbox', 'schema outbox exists');
SELECT is(current_setting('search_path'), (SELECT reset_val FROM pg_settings WHERE name = 'search_path'),
          'CREATE EXTENSION outbox leaves the session search_path alone');

-- 19 x has_function
SELECT has_function('outbox', name, args,
                    format('function outbox.%s(%s) exists', name, array_to_string(args, ', ')))
  FROM expect_fn ORDER BY ord;

-- 19 x function_returns
SELECT function_returns('outbox', name, args, returns,
                        format('outbox.%s(%s) returns %s', name, array_to_string(args, ', '), returns))
  FROM expect_fn ORDER BY ord;

-- 19 x argument names
SELECT is(pg_get_function_identity_arguments(pg_temp.fn(name, args)), identity,
          format('outbox.%s(%s) has the argument names of the contract', name, array_to_string(args, ', ')))
  FROM expect_fn ORDER BY ord;

-- 19 x defaults
SELECT is(pg_temp.arg_defaults(pg_temp.fn(name, args)), defaults,
          format('outbox.%s(%s) has the defaults of the contract', name, array_to_string(args, ', ')))
  FROM expect_fn ORDER BY ord;

SELECT is(pg_get_function_result(pg_temp.fn('claim', '{text,integer,interval,interval}')),
          'TABLE(id bigint, topic text, key text, type text, payload jsonb, headers jsonb, tenant text, '
          'attempt integer, lease_token uuid, lease_expires_at timestamp with time zone, '
          'created_at timestamp with time zone)',
          'outbox.claim returns the columns of the contract');

-- Exactly the overloads of the contract (ack has two, the others one), so
-- calls with named arguments are never ambiguous.
SELECT is((SELECT string_agg(format('%s/%s', e.name, coalesce(p.n, 0)), ' ' ORDER BY e.name)
             FROM (SELECT DISTINCT name FROM expect_fn) e
             LEFT JOIN (SELECT proname, count(*) AS n FROM pg_proc
                         WHERE pronamespace = 'outbox'::regnamespace GROUP BY proname) p
                    ON p.proname = e.name),
          'ack/2 alter_topic/1 capture/1 claim/1 create_topic/1 dead_letter/1 drop_topic/1 extend_lease/1 '
          'maintain/1 metrics_histograms/1 nack/1 offer/1 offer_batch/1 reap/1 redrive/1 replay/1 '
          'reset_metrics/1 uncapture/1',
          'each contract function has exactly its contract overloads');

-- Views
SELECT has_view('outbox', 'topics', 'view outbox.topics exists');
SELECT has_view('outbox', 'dead_letters', 'view outbox.dead_letters exists');
SELECT has_view('outbox', 'stats', 'view outbox.stats exists');
SELECT has_column('outbox', 'topics', 'topic', 'outbox.topics has column topic');
SELECT columns_are('outbox', 'dead_letters',
    ARRAY['id', 'topic', 'key', 'type', 'payload', 'headers', 'tenant', 'attempts', 'reason',
          'error_history', 'dead_at'],
    'outbox.dead_letters has exactly the columns of the contract');
SELECT columns_are('outbox', 'stats',
    ARRAY['topic', 'available', 'leased', 'delayed', 'dead', 'oldest_available_age', 'offered',
          'acked'],
    'outbox.stats has exactly the columns of the contract');
SELECT col_type_is('outbox', 'dead_letters', 'id', 'bigint', 'dead_letters.id is bigint');
SELECT col_type_is('outbox', 'dead_letters', 'payload', 'jsonb', 'dead_letters.payload is jsonb');
SELECT col_type_is('outbox', 'dead_letters', 'error_history', 'jsonb', 'dead_letters.error_history is jsonb');
SELECT col_type_is('outbox', 'dead_letters', 'dead_at', 'timestamp with time zone',
                   'dead_letters.dead_at is timestamptz');
SELECT col_type_is('outbox', 'stats', 'oldest_available_age', 'interval',
                   'stats.oldest_available_age is an interval');
SELECT columns_are('outbox', 'metrics',
    ARRAY['topic', 'offered', 'claimed', 'acked', 'nacked', 'expired', 'dead_lettered', 'redriven',
          'delivery_p50', 'delivery_p90', 'delivery_p99', 'delivery_max', 'wait_p50', 'wait_p99'],
    'outbox.metrics has exactly the columns of the contract');
SELECT col_type_is('outbox', 'metrics', 'delivery_p99', 'interval', 'metrics.delivery_p99 is an interval');
SELECT is(pg_get_function_result(pg_temp.fn('metrics_histograms', '{}')),
          'TABLE(topic text, histogram text, le double precision[], bucket bigint[], sum double precision, count bigint)',
          'outbox.metrics_histograms returns the columns Prometheus needs');
SELECT has_column('outbox', 'topics', 'ordered', 'outbox.topics has column ordered');
SELECT col_type_is('outbox', 'topics', 'ordered', 'boolean', 'outbox.topics has column ordered (boolean)');
SELECT is((SELECT proisstrict FROM pg_proc WHERE oid = pg_temp.fn('alter_topic', '{text,integer,interval,interval,interval}')),
          false, 'outbox.alter_topic is not STRICT: a NULL argument keeps a setting, the others still apply');
SELECT col_type_is('outbox', 'topics', 'delivery', 'text', 'outbox.topics has column delivery (text)');
SELECT col_type_is('outbox', 'topics', 'slot', 'name', 'outbox.topics has column slot (name)');
SELECT throws_ok($$SELECT outbox.create_topic('contract_w', delivery => 'wal', slot => 'contract_slot')$$,
                 '55000', NULL, 'delivery => ''wal'' needs wal_level = logical');
SELECT throws_ok($$SELECT outbox.create_topic('contract_w', delivery => 'kafka')$$,
                 '22023', NULL, 'an unknown delivery is refused');
SELECT throws_ok($$SELECT outbox.create_topic('contract_w', slot => 'contract_slot')$$,
                 '22023', NULL, 'a slot without delivery => ''wal'' is refused');

-- Topics: settings given and defaults, one row per topic.
SELECT lives_ok($$SELECT outbox.create_topic('contract_t')$$, 'create_topic with defaults');
SELECT lives_ok($$SELECT outbox.create_topic(topic => 'contract_s', max_attempts => 3,
                   retention => '2 days', backoff_base => '2 seconds', backoff_max => '5 minutes')$$,
                'create_topic with every setting named');
SELECT results_eq(
    $$SELECT topic, max_attempts, retention, backoff_base, backoff_max, ordered
        FROM outbox.topics WHERE topic IN ('contract_t', 'contract_s') ORDER BY topic$$,
    $$VALUES ('contract_s'::text, 3, '2 days'::interval, '2 seconds'::interval, '5 minutes'::interval, false),
             ('contract_t'::text, 5, '7 days'::interval, '1 second'::interval, '60 seconds'::interval, false)$$,
    'outbox.topics shows each topic with its settings');
SELECT lives_ok($$SELECT outbox.drop_topic('contract_s')$$, 'drop_topic of an empty topic');
SELECT is((SELECT count(*)::int FROM outbox.topics WHERE topic = 'contract_s'), 0,
          'a dropped topic leaves outbox.topics');

-- Ordered topics: created with ordered => true, shown as such, fixed for good.
SELECT lives_ok($$SELECT outbox.create_topic('contract_o', ordered => true)$$,
                'create_topic with ordered => true');
SELECT results_eq(
    $$SELECT topic, max_attempts, retention, backoff_base, backoff_max, ordered
        FROM outbox.topics WHERE topic = 'contract_o'$$,
    $$VALUES ('contract_o'::text, 5, '7 days'::interval, '1 second'::interval, '60 seconds'::interval, true)$$,
    'outbox.topics shows an ordered topic with ordered = true and the default settings');
SELECT throws_ok($$UPDATE outbox.topic SET ordered = false WHERE name = 'contract_o'$$, '0A000', NULL,
                 'ordered cannot be turned off after creation');
SELECT throws_ok($$UPDATE outbox.topic SET ordered = true WHERE name = 'contract_t'$$, '0A000', NULL,
                 'ordered cannot be turned on after creation');
SELECT lives_ok($$SELECT outbox.alter_topic('contract_o', max_attempts => 2)$$,
                'alter_topic on an ordered topic');
SELECT results_eq($$SELECT max_attempts, ordered FROM outbox.topics WHERE topic = 'contract_o'$$,
                  $$VALUES (2, true)$$, 'alter_topic leaves an ordered topic ordered');

-- alter_topic: a NULL argument keeps its setting, the others change.
SELECT lives_ok($$SELECT outbox.create_topic('contract_a', max_attempts => 4, retention => '3 days',
                   backoff_base => '2 seconds', backoff_max => '2 minutes')$$,
                'create_topic contract_a');
SELECT lives_ok($$SELECT outbox.alter_topic('contract_a')$$, 'alter_topic with only the topic');
SELECT results_eq(
    $$SELECT max_attempts, retention, backoff_base, backoff_max, ordered FROM outbox.topics WHERE topic = 'contract_a'$$,
    $$VALUES (4, '3 days'::interval, '2 seconds'::interval, '2 minutes'::interval, false)$$,
    'alter_topic with every setting NULL changes nothing');
SELECT lives_ok($$SELECT outbox.alter_topic('contract_a', max_attempts => 6, backoff_max => '5 minutes')$$,
                'alter_topic of two settings by name');
SELECT results_eq(
    $$SELECT max_attempts, retention, backoff_base, backoff_max FROM outbox.topics WHERE topic = 'contract_a'$$,
    $$VALUES (6, '3 days'::interval, '2 seconds'::interval, '5 minutes'::interval)$$,
    'alter_topic changes the settings given and keeps those passed as NULL');
SELECT lives_ok($$SELECT outbox.alter_topic(topic => 'contract_a', max_attempts => NULL, retention => '1 day',
                   backoff_base => '1 second', backoff_max => NULL)$$,
                'alter_topic with explicit NULLs');
SELECT results_eq(
    $$SELECT max_attempts, retention, backoff_base, backoff_max FROM outbox.topics WHERE topic = 'contract_a'$$,
    $$VALUES (6, '1 day'::interval, '1 second'::interval, '5 minutes'::interval)$$,
    'explicit NULLs keep max_attempts and backoff_max');
-- Producing
CREATE TEMP TABLE ids (label text PRIMARY KEY, id bigint);
INSERT INTO ids
SELECT 'single', outbox.offer(topic => 'contract_t', payload => '{"n": 0}', key => 'k0',
                              type => 'order.created', headers => '{"h": "v"}', tenant => 'acme');
INSERT INTO ids
SELECT 'batch' || ord, id
  FROM outbox.offer_batch(topic => 'contract_t',
                          payloads => ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
                          keys => ARRAY['k1', 'k2', 'k3'],
                          types => ARRAY['t1', 't2', 't3'],
                          headers => ARRAY['{"h": 1}', '{"h": 2}', '{"h": 3}']::jsonb[],
                          tenant => 'acme') WITH ORDINALITY AS b(id, ord);
SELECT is((SELECT count(DISTINCT id)::int FROM ids WHERE id IS NOT NULL), 4,
          'offer and offer_batch return one distinct id per event');

-- Consuming with the defaults: one event, a 30 second lease.
CREATE TEMP TABLE c1 AS SELECT * FROM outbox.claim('contract_t');
SELECT is((SELECT count(*)::int FROM c1), 1, 'claim without batch_size leases one event');
SELECT results_eq(
    $$SELECT id, topic, key, type, payload, headers, tenant, attempt FROM c1$$,
    $$SELECT id, 'contract_t'::text, 'k0'::text, 'order.created'::text, '{"n": 0}'::jsonb,
             '{"h": "v"}'::jsonb, 'acme'::text, 1 FROM ids WHERE label = 'single'$$,
    'claim returns the oldest event with everything offer stored');
SELECT ok((SELECT lease_token IS NOT NULL FROM c1), 'claim returns a lease_token');
SELECT ok((SELECT lease_expires_at BETWEEN now() + interval '29 seconds'
                                       AND clock_timestamp() + interval '31 seconds' FROM c1),
          'the default lease is 30 seconds');
SELECT ok((SELECT created_at BETWEEN now() - interval '1 second' AND clock_timestamp() FROM c1),
          'created_at is when the event was offered');

CREATE TEMP TABLE c2 AS SELECT * FROM outbox.claim('contract_t', batch_size => 10);
SELECT results_eq(
    $$SELECT c2.id, c2.payload, c2.key, c2.type, c2.headers FROM c2 ORDER BY c2.id$$,
    $$SELECT ids.id, jsonb_build_object('n', n), 'k' || n, 't' || n, jsonb_build_object('h', n)
        FROM ids, LATERAL (SELECT substr(label, 6)::int AS n) x
       WHERE label LIKE 'batch%' ORDER BY ids.id$$,
    'offer_batch returns the ids in input order, each with its own payload, key, type, headers');
SELECT is((SELECT count(DISTINCT lease_token)::int FROM c2), 1,
          'all rows of one claim share one lease_token');
SELECT isnt((SELECT lease_token FROM c2 LIMIT 1), (SELECT lease_token FROM c1),
            'each claim makes a fresh lease_token');
SELECT is((SELECT count(*)::int FROM outbox.claim('contract_t', batch_size => 10)), 0,
          'leased events are not claimed again');

SELECT is(outbox.ack(id, lease_token), true, 'ack(id, lease_token) acks a leased event') FROM c1;
SELECT is(outbox.ack((SELECT array_agg(id) FROM c2), (SELECT lease_token FROM c2 LIMIT 1)), 3,
          'ack(ids, lease_token) returns how many it acked');

-- Delayed offers and dedupe.
SELECT lives_ok($$SELECT outbox.create_topic('contract_d')$$, 'create_topic contract_d');
SELECT isnt(outbox.offer('contract_d', '{"later": true}', available_at => now() + interval '1 hour'),
            NULL::bigint, 'offer with available_at returns an id');
SELECT is((SELECT count(*)::int FROM outbox.claim('contract_d', batch_size => 10)), 0,
          'an event with available_at in the future is not claimed');
SELECT results_eq(
    $$SELECT available, leased, delayed, dead FROM outbox.stats WHERE topic = 'contract_d'$$,
    $$VALUES (0::bigint, 0::bigint, 1::bigint, 0::bigint)$$,
    'outbox.stats counts the delayed event');
SELECT is(outbox.offer('contract_d', '{"a": 1}', tenant => 't1', dedupe_key => 'once'),
          outbox.offer('contract_d', '{"a": 2}', tenant => 't1', dedupe_key => 'once'),
          'a second offer with the same dedupe_key returns the first id');
SELECT is((SELECT available FROM outbox.stats WHERE topic = 'contract_d'), 1::bigint,
          'a deduplicated offer stores nothing');

-- Housekeeping.
SELECT lives_ok($$SELECT outbox.maintain()$$, 'maintain runs');
SELECT ok((SELECT count(*) FROM pg_catalog.pg_inherits i
           JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'outbox.event'::regclass
             AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
                 >= now() + interval '4 days') >= 1,
          'after maintain a partition covers four days from now');
SELECT is(outbox.reap(), 0, 'reap hands back nothing while no lease has expired');

-- alter_topic takes effect for the next nack: lowered to 1 while an event
-- of contract_a is leased, max_attempts makes its first nack the last.
SELECT isnt(outbox.offer('contract_a', '{"a": 1}'), NULL::bigint, 'offer to contract_a');
CREATE TEMP TABLE ac1 AS SELECT * FROM outbox.claim('contract_a');
SELECT lives_ok($$SELECT outbox.alter_topic('contract_a', max_attempts => 1)$$,
                'alter_topic lowers max_attempts to 1 while the event is leased');
SELECT is(outbox.nack(id, lease_token, 'boom', retry_after => '0'), 'dead',
          'a nack after alter_topic uses the new max_attempts') FROM ac1;
SELECT is((SELECT attempts FROM outbox.dead_letters WHERE id = (SELECT id FROM ac1)), 1,
          'the event went dead after its first attempt');

SELECT * FROM finish();
ROLLBACK;
