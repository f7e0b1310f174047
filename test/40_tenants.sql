-- Tenants: per-tenant topics, roles bound to tenants, and the setting
-- outbox.tenant.  Tenant A can neither claim, ack, nack, extend,
-- dead-letter, redrive, replay nor read tenant B's events.
BEGIN;
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT plan(75);

-- as_login(login, role, sql [, tenant]): the first column of sql's first
-- row (text), run with login as the session user (none: this session's),
-- SET ROLE role (none: no change) and outbox.tenant set to tenant; or 'ERR '
-- and the SQLSTATE it raised.
CREATE FUNCTION pg_temp.as_login(l text, r text, sql text, tn text DEFAULT '') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	IF l IS NOT NULL THEN
		EXECUTE format('SET LOCAL SESSION AUTHORIZATION %I', l);
	END IF;
	IF r IS NOT NULL THEN
		EXECUTE format('SET LOCAL ROLE %I', r);
	END IF;
	PERFORM set_config('outbox.tenant', tn, true);
	BEGIN
		EXECUTE sql INTO result;
	EXCEPTION WHEN OTHERS THEN
		result := 'ERR ' || SQLSTATE;
	END;
	PERFORM set_config('outbox.tenant', '', true);
	RESET ROLE;
	IF l IS NOT NULL THEN
		RESET SESSION AUTHORIZATION;
	END IF;
	RETURN result;
END
$$;
-- val_as(role, sql [, tenant]): as_login in this session, as role
CREATE FUNCTION pg_temp.val_as(r text, sql text, tn text DEFAULT '') RETURNS text
LANGUAGE sql AS $$ SELECT pg_temp.as_login(NULL, r, sql, tn) $$;

-- what the tests remember: leases taken, by label
CREATE TEMP TABLE got (label text, id bigint, lease_token uuid, tenant text);
GRANT ALL ON got TO PUBLIC;
CREATE FUNCTION pg_temp.tok(lbl text) RETURNS uuid
LANGUAGE sql AS $$ SELECT min(lease_token::text)::uuid FROM got WHERE label = lbl $$;
CREATE FUNCTION pg_temp.ids(lbl text) RETURNS bigint[]
LANGUAGE sql AS $$ SELECT array_agg(id ORDER BY id) FROM got WHERE label = lbl $$;

-- ---- roles: a producer-consumer for tenant a, one for b, one for both,
-- an admin bound to a, and an admin bound to nothing
CREATE ROLE tap_ta;
CREATE ROLE tap_tb;
CREATE ROLE tap_tab;
CREATE ROLE tap_adm_a;
CREATE ROLE tap_adm;
GRANT outbox_producer, outbox_consumer TO tap_ta, tap_tb, tap_tab;
GRANT outbox_admin TO tap_adm_a, tap_adm;

SELECT lives_ok($$SELECT outbox.create_topic('tn', max_attempts => 3)$$, 'create a topic');
SELECT lives_ok($$SELECT outbox.isolate_tenants('tn')$$, 'make it per-tenant');
SELECT lives_ok($$SELECT outbox.isolate_tenants('tn')$$, 'again: nothing to do');
SELECT is((SELECT per_tenant FROM outbox.topics WHERE topic = 'tn'), true, 'outbox.topics says so');
SELECT outbox.create_topic('plain');
SELECT ok(outbox.offer('plain', '{}') > 0, 'an event in a plain topic');
SELECT throws_ok($$SELECT outbox.isolate_tenants('plain')$$, '55006', NULL,
	'a topic that holds events cannot be made per-tenant');
SELECT throws_ok($$SELECT outbox.isolate_tenants('nope')$$, '42704', NULL, 'unknown topic');

SELECT lives_ok($$SELECT outbox.grant_tenant('tap_ta', 'a')$$, 'bind tap_ta to a');
SELECT outbox.grant_tenant('tap_tb', 'b');
SELECT outbox.grant_tenant('tap_tab', 'a');
SELECT outbox.grant_tenant('tap_tab', 'b');
SELECT outbox.grant_tenant('tap_adm_a', 'a');
SELECT lives_ok($$SELECT outbox.grant_tenant('tap_ta', 'a')$$, 'granting twice is harmless');
SELECT is((SELECT count(*)::int FROM outbox.tenant_roles WHERE role::text LIKE 'tap_%'), 5,
	'outbox.tenant_roles lists the bindings');
SELECT throws_ok($$SELECT outbox.grant_tenant('tap_ta', '')$$, '22023', NULL, 'an empty tenant is refused');
SELECT throws_ok($$SELECT outbox.grant_tenant('tap_ta', repeat('x', 64))$$, '22023', NULL,
	'a tenant of 64 bytes is refused');
SELECT throws_ok($$SELECT outbox.grant_tenant(NULL, 'a')$$, '22004', NULL, 'a NULL role is refused');
SELECT throws_ok($$SELECT outbox.grant_tenant('no_such_role', 'a')$$, '42704', NULL, 'an unknown role is refused');

-- ---- offers: a bound role offers for its tenant only
SELECT ok(pg_temp.val_as('tap_ta', $$SELECT outbox.offer('tn', '{"who": "a1"}')$$)::bigint > 0,
	'tap_ta offers without naming a tenant');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT outbox.offer('tn', '{"who": "a2"}', tenant => 'a')$$) LIKE 'ERR%', false,
	'tap_ta offers naming its own tenant');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT outbox.offer('tn', '{"who": "x"}', tenant => 'b')$$), 'ERR 42501',
	'tap_ta cannot offer an event of tenant b');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT count(*) FROM outbox.offer_batch('tn', ARRAY['{"x":1}'::jsonb], tenant => 'b')$$),
	'ERR 42501', 'nor a batch of them');
SELECT is(pg_temp.val_as('tap_tb', $$SELECT count(*) FROM outbox.offer_batch('tn', ARRAY['{"who":"b1"}'::jsonb, '{"who":"b2"}'])$$),
	'2', 'tap_tb offers two events');
SELECT is(pg_temp.val_as('tap_tab', $$SELECT outbox.offer('tn', '{}')$$), 'ERR 42501',
	'a role bound to two tenants must name one');
SELECT is((SELECT array_agg(DISTINCT e.tenant ORDER BY e.tenant) FROM outbox.event e
		   JOIN outbox.topic t USING (topic_id) WHERE t.name = 'tn'),
	ARRAY['a', 'b'], 'the events carry their tenants');
SELECT is((SELECT count(*)::int FROM outbox.topic WHERE name = 'tn' AND parent_id IS NOT NULL), 2,
	'one part per tenant was made');
SELECT ok(outbox.offer('tn', '{"who": "none"}') > 0, 'an unbound session offers an event without tenant');
SELECT ok(outbox.offer('tn', '{"who": "c1"}', tenant => 'c') > 0, 'and one of tenant c');

-- ---- claims: each tenant gets its own events, nobody else's
SELECT is(pg_temp.val_as('tap_ta', $$WITH c AS (INSERT INTO got SELECT 'a', id, lease_token, tenant FROM outbox.claim('tn', 10) RETURNING *) SELECT count(*) FROM c$$),
	'2', 'tap_ta claims two events');
SELECT is((SELECT array_agg(DISTINCT tenant) FROM got WHERE label = 'a'), ARRAY['a'], 'both of tenant a');
SELECT is(pg_temp.val_as('tap_tb', $$WITH c AS (INSERT INTO got SELECT 'b', id, lease_token, tenant FROM outbox.claim('tn', 10) RETURNING *) SELECT count(*) FROM c$$),
	'2', 'tap_tb claims two events');
SELECT is((SELECT array_agg(DISTINCT tenant) FROM got WHERE label = 'b'), ARRAY['b'], 'both of tenant b');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT count(*) FROM outbox.claim('tn', 10)$$), '0',
	'nothing more for tap_ta: b and c are out of its reach');
SELECT is(pg_temp.val_as('tap_tab', $$SELECT count(*) FROM outbox.claim('tn', 10)$$), 'ERR 42501',
	'a role bound to two tenants must name one to claim');
SELECT is(pg_temp.val_as('tap_tab', $$SELECT count(*) FROM outbox.claim('tn', 10)$$, 'c'), 'ERR 42501',
	'and cannot name a tenant it is not bound to');
SELECT is(pg_temp.val_as('tap_tab', $$SELECT count(*) FROM outbox.claim('tn', 10)$$, 'b'), '0',
	'but can name one it is bound to');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT count(*) FROM outbox.claim('plain', 10)$$), 'ERR 42501',
	'a tenant-bound role cannot claim from a topic that mixes tenants');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT count(*) FROM outbox.claim('tn', 10, wait => '50 ms')$$), '0',
	'a waiting claim with nothing to take returns empty');
SELECT is((SELECT string_agg(payload->>'who', ',') FROM outbox.claim('tn', 10)), 'none',
	'an unbound session without outbox.tenant claims the events without tenant');
SET LOCAL outbox.tenant = 'c';
SELECT is((SELECT string_agg(payload->>'who', ',') FROM outbox.claim('tn', 10)), 'c1',
	'an unbound session with outbox.tenant = c claims c''s events');
SELECT is((SELECT count(*)::int FROM outbox.claim('tn', 10, wait => '10 ms')), 0, 'c has no more');
SET LOCAL outbox.tenant = 'nobody-offered';
SELECT is((SELECT count(*)::int FROM outbox.claim('tn', 10)), 0, 'a tenant without a part gets nothing');
RESET outbox.tenant;

-- ---- settling: a cannot touch b's leases, b's leases stay intact
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.ack(%s, %L)', (pg_temp.ids('b'))[1], pg_temp.tok('b'))), 'false',
	'tap_ta cannot ack b''s event with b''s token');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.ack(%L::bigint[], %L)', pg_temp.ids('b'), pg_temp.tok('b'))), '0',
	'nor the batch');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.extend_lease(%L::bigint[], %L)', pg_temp.ids('b'), pg_temp.tok('b'))), '0',
	'nor extend its lease');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.nack(%s, %L, %L)', (pg_temp.ids('b'))[1], pg_temp.tok('b'), 'boom')), NULL,
	'nor nack it');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.dead_letter(%s, %L, %L)', (pg_temp.ids('b'))[1], pg_temp.tok('b'), 'boom')), 'false',
	'nor dead-letter it');
SELECT is(pg_temp.val_as('tap_tb', format('SELECT outbox.extend_lease(%L::bigint[], %L)', pg_temp.ids('b'), pg_temp.tok('b'))), '2',
	'b''s leases are intact: b extends both');
SELECT is(pg_temp.val_as('tap_tb', format('SELECT outbox.dead_letter(%s, %L, %L)', (pg_temp.ids('b'))[1], pg_temp.tok('b'), 'poison')), 'true',
	'b dead-letters one of its events');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.dead_letter(%s, %L, %L)', (pg_temp.ids('a'))[1], pg_temp.tok('a'), 'poison')), 'true',
	'a dead-letters one of its events');
SELECT is(pg_temp.val_as('tap_ta', format('SELECT outbox.ack(%s, %L)', (pg_temp.ids('a'))[2], pg_temp.tok('a'))), 'true',
	'a acks its other event');

-- ---- dead letters, redrive, replay: an admin bound to a sees a only
SELECT is(pg_temp.val_as('tap_adm_a', $$SELECT string_agg(tenant, ',') FROM outbox.dead_letters WHERE topic = 'tn'$$), 'a',
	'the admin bound to a reads a''s dead letters only');
SELECT is(pg_temp.val_as('tap_adm', $$SELECT string_agg(tenant, ',' ORDER BY tenant) FROM outbox.dead_letters WHERE topic = 'tn'$$), 'a,b',
	'an unbound admin reads both');
SELECT is(pg_temp.val_as('tap_adm_a', format('SELECT outbox.redrive(%L::bigint[], %L)', pg_temp.ids('b'), 'retry it')), '0',
	'the admin bound to a cannot redrive b''s dead letter');
SELECT is((SELECT count(*)::int FROM outbox.dead_letter WHERE tenant = 'b'), 1, 'b''s dead letter is still there');
SELECT is(pg_temp.val_as('tap_adm_a', format('SELECT outbox.redrive(%L::bigint[], %L)', pg_temp.ids('a') || pg_temp.ids('b'), 'retry it')), '1',
	'given both, it redrives a''s only');
SELECT is(pg_temp.val_as('tap_adm_a', $$SELECT outbox.replay('tn', '-infinity', tenant => 'b')$$), 'ERR 42501',
	'the admin bound to a cannot replay b''s events');
SELECT is(pg_temp.val_as('tap_adm_a', $$SELECT outbox.create_topic('t2')$$), 'ERR 42501',
	'a tenant-bound admin cannot create topics');
SELECT is(pg_temp.val_as('tap_adm_a', $$SELECT outbox.grant_tenant('tap_adm_a', 'b')$$), 'ERR 42501',
	'nor bind itself to another tenant');
SELECT is(pg_temp.val_as('tap_adm', $$SELECT outbox.revoke_tenant('tap_ta', 'a')::text$$), 'true',
	'an unbound admin revokes a binding');
SELECT is(pg_temp.val_as('tap_adm', $$SELECT outbox.revoke_tenant('tap_ta', 'a')::text$$), 'false',
	'revoking it again finds nothing');
SELECT is(pg_temp.val_as('tap_ta', $$SELECT count(*) FROM outbox.claim('plain', 10)$$), '1',
	'tap_ta, unbound now, claims from the plain topic');

-- ---- no way around a binding: SET ROLE, group roles, leaky functions
SELECT outbox.grant_tenant('tap_tb', 'b');
SELECT is(pg_temp.as_login('tap_tb', 'outbox_consumer', $$SELECT count(*) FROM outbox.claim('tn', 10)$$, 'a'),
	'ERR 42501', 'a bound login cannot shed its binding with SET ROLE outbox_consumer');
SELECT is(pg_temp.as_login('tap_tb', 'outbox_consumer', $$SELECT count(*) FROM outbox.claim('plain', 10)$$),
	'ERR 42501', 'nor claim from a mixed topic that way');
CREATE ROLE tap_grp;
CREATE ROLE tap_member;
GRANT tap_grp TO tap_member;
GRANT outbox_producer TO tap_member;
SELECT outbox.grant_tenant('tap_grp', 'g');
SELECT is(pg_temp.val_as('tap_member', $$SELECT outbox.offer('tn', '{}', tenant => 'a')$$), 'ERR 42501',
	'a member of a bound group role is bound too');
SELECT ok(pg_temp.val_as('tap_member', $$SELECT outbox.offer('tn', '{"who": "g1"}')$$)::bigint > 0,
	'and offers for the group''s tenant');
CREATE TEMP TABLE leaked (tenant text);
GRANT ALL ON leaked TO PUBLIC;
CREATE FUNCTION pg_temp.leak(t text) RETURNS boolean
LANGUAGE plpgsql COST 0.0001 AS $$ BEGIN INSERT INTO leaked VALUES (t); RETURN true; END $$;
SELECT is(pg_temp.val_as('tap_adm_a', $$SELECT count(*) FROM outbox.dead_letters WHERE pg_temp.leak(tenant)$$), '0',
	'a cheap function in the caller''s WHERE clause ...');
SELECT is((SELECT count(*)::int FROM leaked WHERE tenant = 'b'), 0,
	'... never sees another tenant''s dead letters');

-- ---- who may be bound
SELECT throws_ok($$SELECT outbox.grant_tenant('postgres', 'x')$$, '22023', NULL,
	'a superuser cannot be bound (no one could manage topics or revoke bindings afterwards)');
SELECT throws_ok($$SELECT outbox.grant_tenant('outbox_admin', 'x')$$, '22023', NULL,
	'the extension''s own roles cannot be bound');
SELECT throws_ok($$SELECT outbox.grant_tenant('-', 'x')$$, '42704', NULL,
	'a role that does not exist (OID 0) is refused');
SELECT is((SELECT count(*)::int FROM outbox.tenant_access WHERE tenant = 'x'), 0, 'nothing was bound');

-- ---- a membership granted later binds at once
CREATE ROLE tap_late;
GRANT outbox_producer TO tap_late;
SELECT is(pg_temp.val_as('tap_late', $$SELECT outbox.offer('tn', '{"who": "late"}', tenant => 'b') > 0$$), 'true',
	'an unbound role offers for any tenant (and the session remembers it is unbound)');
GRANT tap_grp TO tap_late;
SELECT is(pg_temp.val_as('tap_late', $$SELECT outbox.offer('tn', '{"who": "late"}', tenant => 'b') > 0$$), 'ERR 42501',
	'once made a member of a role bound to g, the same session may not offer for b');
REVOKE tap_grp FROM tap_late;
SELECT is(pg_temp.val_as('tap_late', $$SELECT outbox.offer('tn', '{"who": "late"}', tenant => 'b') > 0$$), 'true',
	'and when the membership is revoked, it is unbound again');

-- ---- stats and drop: the parts are one topic
SELECT is((SELECT count(*)::int FROM outbox.stats WHERE topic = 'tn'), 1, 'one stats row for the per-tenant topic');
SELECT is((SELECT dead::int FROM outbox.stats WHERE topic = 'tn'), 1, 'its dead count adds up its parts');
SELECT lives_ok($$SELECT outbox.drop_topic('tn', force => true)$$, 'drop the per-tenant topic');
SELECT is((SELECT count(*)::int FROM outbox.topic WHERE name = 'tn'), 0, 'its parts went with it');

SELECT * FROM finish();
ROLLBACK;
