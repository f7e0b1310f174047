-- In a read-only transaction every function that changes delivery state
-- refuses with 25006 before it looks at its arguments, and changes nothing;
-- stats, topics and dead_letters still read.
SET client_min_messages = warning;
SELECT outbox.create_topic('ro');
SELECT outbox.offer('ro', '{"n": 1}') > 0 AS offered;
SELECT outbox.offer('ro', '{"n": 2}') > 0 AS offered;
CREATE TEMP TABLE ro_held AS SELECT id, lease_token FROM outbox.claim('ro');
SELECT id AS held_id, lease_token AS held_token FROM ro_held \gset

BEGIN READ ONLY;
-- try() (setup.sql) reports 'ok' or the SQLSTATE and message
SELECT n, try(s) AS result FROM unnest(ARRAY[
	$$SELECT outbox.offer('ro', '{"n": 3}')$$,
	$$SELECT outbox.offer_batch('ro', ARRAY['{}'::jsonb])$$,
	$$SELECT outbox.claim('ro')$$,
	format($$SELECT outbox.ack(%s, %L)$$, :held_id, :'held_token'),
	format($$SELECT outbox.ack(ARRAY[%s]::bigint[], %L)$$, :held_id, :'held_token'),
	format($$SELECT outbox.nack(%s, %L, 'e')$$, :held_id, :'held_token'),
	format($$SELECT outbox.extend_lease(ARRAY[%s]::bigint[], %L)$$, :held_id, :'held_token'),
	format($$SELECT outbox.dead_letter(%s, %L, 'r')$$, :held_id, :'held_token'),
	$$SELECT outbox.redrive(ARRAY[1]::bigint[], 'r')$$,
	$$SELECT outbox.replay('ro', now() - interval '1 day')$$,
	$$SELECT outbox.reap()$$,
	$$SELECT outbox.maintain()$$,
	$$SELECT outbox.create_topic('ro2')$$,
	$$SELECT outbox.drop_topic('ro', force => true)$$,
	$$SELECT outbox.isolate_tenants('ro')$$,
	$$SELECT outbox.grant_tenant('postgres', 'a')$$,
	$$SELECT outbox.revoke_tenant('postgres', 'a')$$,
	-- the check comes before the arguments'
	$$SELECT outbox.claim(NULL)$$,
	$$SELECT outbox.offer(NULL, NULL)$$,
	-- reading works
	$$SELECT * FROM outbox.stats$$,
	$$SELECT * FROM outbox.topics$$,
	$$SELECT * FROM outbox.dead_letters$$
]) WITH ORDINALITY AS u(s, n);
COMMIT;

-- nothing changed: one event leased under its token, one available
SELECT available, leased, delayed, dead FROM outbox.stats WHERE topic = 'ro';
SELECT outbox.ack(:held_id, :'held_token') AS acked_after;
SELECT outbox.drop_topic('ro', force => true);
