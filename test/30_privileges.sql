-- Who may do what: the three roles, nothing for PUBLIC, pinned search_path
-- on every SECURITY DEFINER function, no hijacking through objects a user
-- creates, no caller text in dynamic SQL.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(57);

-- as_role(role, sql [, search_path]): run sql as role (with that
-- search_path); 'ok' or the SQLSTATE it raised.
CREATE FUNCTION pg_temp.as_role(r text, sql text, path text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text := 'ok';
	saved text := current_setting('search_path');
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	IF path IS NOT NULL THEN
		PERFORM set_config('search_path', path, true);
	END IF;
	BEGIN
		EXECUTE sql;
	EXCEPTION WHEN OTHERS THEN
		result := SQLSTATE;
	END;
	PERFORM set_config('search_path', saved, true);
	RESET ROLE;
	RETURN result;
END
$$;

-- ---- the roles and what PUBLIC has
SELECT has_role('outbox_producer');
SELECT has_role('outbox_consumer');
SELECT has_role('outbox_admin');
SELECT is((SELECT count(*)::int FROM pg_proc
		   WHERE pronamespace = 'outbox'::regnamespace
			 AND has_function_privilege('public', oid, 'EXECUTE')),
		  0, 'PUBLIC may execute no outbox function');
SELECT is((SELECT count(*)::int FROM pg_class
		   WHERE relnamespace = 'outbox'::regnamespace AND relkind IN ('r', 'p', 'v', 'S')
			 AND (has_table_privilege('public', oid, 'SELECT')
				  OR has_table_privilege('public', oid, 'INSERT')
				  OR has_table_privilege('public', oid, 'UPDATE')
				  OR has_table_privilege('public', oid, 'DELETE'))),
		  0, 'PUBLIC may touch no outbox table or view');
SELECT is((SELECT count(*)::int FROM pg_proc
		   WHERE pronamespace = 'outbox'::regnamespace AND prosecdef
			 AND NOT coalesce(proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)),
		  0, 'every SECURITY DEFINER function pins search_path');
SELECT ok((SELECT count(*) >= 14 FROM pg_proc
		   WHERE pronamespace = 'outbox'::regnamespace AND prosecdef),
		  'the API functions run as the extension owner');

-- ---- users that hold one role each, and one that holds none
CREATE ROLE tap_producer;
CREATE ROLE tap_consumer;
CREATE ROLE tap_admin;
CREATE ROLE tap_nobody;
GRANT outbox_producer TO tap_producer;
GRANT outbox_consumer TO tap_consumer;
GRANT outbox_admin TO tap_admin;
SELECT outbox.create_topic('priv', max_attempts => 1);

-- a producer
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.offer('priv', '{"p": 1}')$$), 'ok', 'a producer can offer');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.offer_batch('priv', ARRAY['{"p": 2}', '{"p": 3}']::jsonb[])$$), 'ok', 'a producer can offer a batch');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT * FROM outbox.claim('priv')$$), '42501', 'a producer cannot claim');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.ack(1, gen_random_uuid())$$), '42501', 'a producer cannot ack');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.create_topic('p2')$$), '42501', 'a producer cannot create topics');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT * FROM outbox.event$$), '42501', 'a producer cannot read the log');
SELECT is(pg_temp.as_role('tap_producer', $$INSERT INTO outbox.event (id, topic_id, payload) VALUES (-1, 1, '{}')$$), '42501', 'a producer cannot write the log directly');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT * FROM outbox.dead_letters$$), '42501', 'a producer cannot read dead letters');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT * FROM outbox.stats$$), 'ok', 'a producer can read stats');

-- a consumer
CREATE TEMP TABLE got (id bigint, lease_token uuid);
GRANT ALL ON got TO tap_consumer;
SELECT is(pg_temp.as_role('tap_consumer', $$INSERT INTO got SELECT id, lease_token FROM outbox.claim('priv', 2)$$), 'ok', 'a consumer can claim');
SELECT is((SELECT count(*)::int FROM got), 2, 'and gets the events');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.ack(id, lease_token) FROM got ORDER BY id LIMIT 1$$), 'ok', 'a consumer can ack');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.extend_lease(array_agg(id), min(lease_token::text)::uuid) FROM got$$), 'ok', 'a consumer can extend leases');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.nack(id, lease_token, 'e') FROM got ORDER BY id DESC LIMIT 1$$), 'ok', 'a consumer can nack');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.offer('priv', '{}')$$), '42501', 'a consumer cannot offer');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.create_topic('c2')$$), '42501', 'a consumer cannot create topics');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.redrive(ARRAY[1]::bigint[], 'x')$$), '42501', 'a consumer cannot redrive');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT * FROM outbox.dead_letters$$), '42501', 'a consumer cannot read dead letters');
SELECT is(pg_temp.as_role('tap_consumer', $$UPDATE outbox.retry SET attempts = 0$$), '42501', 'a consumer cannot touch the retry table');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT * FROM outbox.stats$$), 'ok', 'a consumer can read stats');

-- an admin
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.create_topic('a2')$$), 'ok', 'an admin can create topics');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.drop_topic('a2')$$), 'ok', 'an admin can drop topics');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT count(*) FROM outbox.dead_letters$$), 'ok', 'an admin can read dead letters');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.redrive(ARRAY(SELECT id FROM outbox.dead_letters), 'fixed')$$), 'ok', 'an admin can redrive');
SELECT is((SELECT redriven_by::text FROM outbox.redrive_log LIMIT 1), 'tap_admin', 'the redrive log names the caller, not the owner');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.replay('priv', now() - interval '1 hour')$$), 'ok', 'an admin can replay');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.reap()$$), 'ok', 'an admin can reap');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.maintain()$$), 'ok', 'an admin can maintain');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT * FROM outbox.claim('priv')$$), '42501', 'an admin cannot claim');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.offer('priv', '{}')$$), '42501', 'an admin cannot offer');

-- a user without a role
SELECT is(pg_temp.as_role('tap_nobody', $$SELECT outbox.offer('priv', '{}')$$), '42501', 'a user without a role cannot offer');
SELECT is(pg_temp.as_role('tap_nobody', $$SELECT * FROM outbox.stats$$), '42501', 'nor read stats');

-- ---- hijacking: objects a user creates in another schema are never used
CREATE SCHEMA evil;
CREATE TABLE evil.hits (what text);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT ALL ON evil.hits TO PUBLIC;
CREATE FUNCTION evil.eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
	$f$ BEGIN INSERT INTO evil.hits VALUES ('='); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq);
CREATE FUNCTION evil.eq(integer, integer) RETURNS boolean LANGUAGE plpgsql AS
	$f$ BEGIN INSERT INTO evil.hits VALUES ('int='); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.eq);
CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS
	$f$ BEGIN INSERT INTO evil.hits VALUES ('nextval'); RETURN 424242; END $f$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
	$f$ BEGIN INSERT INTO evil.hits VALUES ('now'); RETURN '2000-01-01'; END $f$;
CREATE FUNCTION evil.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS
	$f$ BEGIN INSERT INTO evil.hits VALUES ('unnest'); RETURN; END $f$;
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.offer('priv', '{"h": 1}', dedupe_key => 'h')$$,
	'evil, pg_catalog'), 'ok', 'offer under a hostile search_path');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.nack(id, lease_token, 'e', retry_after => '0') FROM outbox.claim('priv', 100)$$,
	'evil, pg_catalog'), 'ok', 'claim and nack under a hostile search_path');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.reap(), outbox.redrive(ARRAY(SELECT id FROM outbox.dead_letters), 'again')$$,
	'evil, pg_catalog'), 'ok', 'reap and redrive under a hostile search_path');
SELECT is((SELECT count(*)::int FROM evil.hits), 0, 'no object of the hostile schema was called');
SELECT ok(NOT EXISTS (SELECT 1 FROM outbox.event WHERE id = 424242), 'no id came from the hostile nextval');

-- ---- caller text never reaches dynamic SQL
CREATE TABLE victim (x int);
SELECT throws_ok($$SELECT outbox.offer('x"; DROP TABLE victim; --', '{}')$$, '42704', NULL, 'a hostile topic name is just an unknown topic');
SELECT throws_ok($$SELECT * FROM outbox.claim('x''; DROP TABLE victim; --')$$, '42704', NULL, 'for claim too');
SELECT has_table('public', 'victim', 'and the table is still there');

-- the shared-memory view behind stats shows every tenant's leased ids:
-- admins only; producers and consumers read stats, which goes through
-- _stats() as the extension's owner
SELECT ok(NOT has_function_privilege('outbox_producer', 'outbox._shmem_topics()', 'EXECUTE'),
	'producers cannot call _shmem_topics()');
SELECT ok(NOT has_function_privilege('outbox_consumer', 'outbox._shmem_topics()', 'EXECUTE'),
	'consumers cannot call _shmem_topics()');
SELECT ok(has_function_privilege('outbox_consumer', 'outbox._stats()', 'EXECUTE')
	  AND has_table_privilege('outbox_consumer', 'outbox.stats', 'SELECT'),
	'but they read stats');

-- ---- alter_topic and the metrics
SELECT outbox.create_topic('priv_alt');
SELECT is(pg_temp.as_role('tap_producer', $$SELECT outbox.alter_topic('priv_alt', max_attempts => 2)$$),
		  '42501', 'a producer may not alter a topic');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.alter_topic('priv_alt', max_attempts => 2)$$),
		  '42501', 'a consumer may not alter a topic');
SELECT is(pg_temp.as_role('tap_admin', $$SELECT outbox.alter_topic('priv_alt', max_attempts => 3)$$),
		  'ok', 'an admin may alter a topic');
SELECT is((SELECT max_attempts FROM outbox.topics WHERE topic = 'priv_alt'), 3,
		  'and the change is made');
SELECT is(pg_temp.as_role('tap_consumer', $$SELECT outbox.reset_metrics()$$),
		  '42501', 'a consumer may not reset the metrics');
SELECT is(pg_temp.as_role('tap_nobody', $$SELECT * FROM outbox.metrics$$),
		  '42501', 'a role without an outbox role may not read the metrics');
SELECT is(pg_temp.as_role('tap_producer',
		  $q$DO $d$ BEGIN IF (SELECT count(*) FROM outbox.metrics WHERE topic = 'priv_alt') <> 1 THEN
		  RAISE EXCEPTION USING ERRCODE = 'P0001'; END IF; END $d$$q$),
		  'ok', 'a producer reads a row of metrics for the topic');

SELECT * FROM finish();
ROLLBACK;
