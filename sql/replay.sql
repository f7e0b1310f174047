-- replay: delivered events that are still retained, offered again as new
-- events pointing back at the originals.
SELECT outbox.create_topic('rp');
SELECT count(*) FROM outbox.offer_batch('rp', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[],
	keys => ARRAY['a', 'b', 'a', 'a']);
-- deliver the first three; one of them fails for good
CREATE TEMP TABLE r1 AS SELECT * FROM outbox.claim('rp', 3);
SELECT outbox.ack(ARRAY(SELECT id FROM r1 ORDER BY id LIMIT 2), (SELECT lease_token FROM r1 LIMIT 1)) AS acked;
SELECT outbox.dead_letter(id, lease_token, 'bad') FROM r1 ORDER BY id DESC LIMIT 1;

-- only the acknowledged ones come back (not the dead one, not the pending one)
SELECT outbox.replay('rp', now() - interval '1 hour') AS replayed;
SELECT e.key, e.payload, e.origin_id IS NOT NULL AS has_origin,
	o.payload = e.payload AND o.key = e.key AS same_as_origin
FROM outbox.event e JOIN outbox.event o ON o.id = e.origin_id
WHERE e.topic_id = (SELECT topic_id FROM outbox.topic WHERE name = 'rp')
ORDER BY e.id;
-- they are new events, claimable with attempt 1, after the pending one
SELECT payload, attempt, key FROM outbox.claim('rp', 10) ORDER BY id;

-- filters
SELECT outbox.replay('rp', now() - interval '1 hour', key => 'b') AS by_key;
SELECT outbox.replay('rp', now() + interval '1 hour') AS from_the_future;
SELECT outbox.replay('rp', now() - interval '2 hours', until => now() - interval '1 hour') AS too_early;
BEGIN;
SELECT outbox.replay('rp', now() - interval '1 hour', tenant => 'nobody') AS other_tenant;
ROLLBACK;
-- part of the caller's transaction
SELECT count(*) AS replayed_before FROM outbox.event WHERE origin_id IS NOT NULL \gset
BEGIN;
SELECT outbox.replay('rp', now() - interval '1 hour', key => 'a') > 0 AS replayed;
ROLLBACK;
SELECT count(*) - :replayed_before AS left_by_rollback FROM outbox.event WHERE origin_id IS NOT NULL;

SELECT try($$SELECT outbox.replay('nope', now())$$);
SELECT try($$SELECT outbox.replay('rp', NULL)$$);
SELECT try($$SELECT outbox.replay('rp', now(), until => now() - interval '1 day')$$);
