-- Producing: offer and offer_batch write the log in the caller's transaction.
SELECT outbox.create_topic('offers');

SELECT outbox.offer('offers', '{"n": 1}') AS first_id \gset
SELECT outbox.offer(topic => 'offers', payload => '{"n": 2}', key => 'k2',
	type => 'thing.made', headers => '{"h": "v"}', tenant => 'acme') = :first_id + 1 AS next_id;
SELECT id - :first_id AS rel, key, type, tenant, payload, headers, available_at
FROM outbox.event WHERE topic_id = (SELECT topic_id FROM outbox.topic WHERE name = 'offers')
ORDER BY id;

-- a JSON null payload is a payload; SQL NULL is refused
SELECT outbox.offer('offers', 'null') > 0 AS json_null_ok;
SELECT try($$SELECT outbox.offer('offers', NULL)$$);
SELECT try($$SELECT outbox.offer('offers', '{}', headers => '[1, 2]')$$);
SELECT try($$SELECT outbox.offer('nope', '{}')$$);
SELECT try($$SELECT outbox.offer(NULL, '{}')$$);
SELECT try($$SELECT outbox.offer('offers', '{}', available_at => 'infinity')$$);

-- offer_batch: ids in input order, arrays matched by position
SELECT array_agg(id ORDER BY ord) = array_agg(id ORDER BY id) AS ids_in_order, count(*)
FROM outbox.offer_batch('offers', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
	keys => ARRAY['a', 'b', 'c'], types => ARRAY['t', NULL, 't'],
	headers => ARRAY['{"x": 1}', NULL, '{}']::jsonb[], tenant => 'acme')
	WITH ORDINALITY AS b(id, ord);
SELECT payload, key, type, headers, tenant FROM outbox.event
WHERE payload ? 'b' ORDER BY id;
SELECT count(*) AS empty_batch FROM outbox.offer_batch('offers', '{}'::jsonb[]);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a'])$$);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY['{}', '{}']::jsonb[], types => ARRAY['a', 'b', 'c'])$$);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY['{}']::jsonb[], headers => ARRAY['{}', '{}']::jsonb[])$$);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY['{}', NULL]::jsonb[])$$);
SELECT try($$SELECT outbox.offer_batch('offers', NULL)$$);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY[['{}'], ['{}']]::jsonb[])$$);
SELECT try($$SELECT outbox.offer_batch('offers', ARRAY['{}']::jsonb[], headers => ARRAY['"s"']::jsonb[])$$);

-- a rolled-back offer leaves nothing, and is not counted
SELECT offered AS offered_before FROM outbox.stats WHERE topic = 'offers' \gset
BEGIN;
SELECT outbox.offer('offers', '{"rolled": "back"}') > 0 AS offered;
SELECT count(*) AS visible_inside FROM outbox.event WHERE payload ? 'rolled';
ROLLBACK;
SELECT count(*) AS left_after_rollback FROM outbox.event WHERE payload ? 'rolled';
SELECT offered - :offered_before AS counted FROM outbox.stats WHERE topic = 'offers';

-- a failed statement in a savepoint loses only its own offers
BEGIN;
SELECT outbox.offer('offers', '{"sp": 1}') > 0;
SAVEPOINT s;
SELECT outbox.offer('offers', '{"sp": 2}') > 0;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT payload FROM outbox.event WHERE payload ? 'sp' ORDER BY id;
SELECT offered - :offered_before AS counted FROM outbox.stats WHERE topic = 'offers';

-- a delayed offer is delayed, not available
SELECT outbox.offer('offers', '{"later": 1}', available_at => now() + interval '1 hour') > 0;
SELECT outbox.offer('offers', '{"past": 1}', available_at => now() - interval '1 hour') > 0;
SELECT available, leased, delayed FROM outbox.stats WHERE topic = 'offers';

-- everything but the delayed one is claimable, oldest first
SELECT count(*) AS claimed, bool_and(attempt = 1) AS first_attempt,
	array_agg(id ORDER BY id) = array_agg(id) AS oldest_first,
	bool_or(payload ? 'later') AS got_delayed
FROM outbox.claim('offers', batch_size => 100);
