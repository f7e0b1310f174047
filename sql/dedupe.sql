-- Dedupe keys: one event per (topic, tenant, dedupe_key) within retention.
SELECT outbox.create_topic('dd');
SELECT outbox.create_topic('dd2');
SELECT outbox.offer('dd', '{"v": 1}', dedupe_key => 'order-1') AS d1 \gset
SELECT outbox.offer('dd', '{"v": 2}', dedupe_key => 'order-1') = :d1 AS same_id;
SELECT outbox.offer('dd', '{"v": 3}', dedupe_key => 'order-1', tenant => 'b') <> :d1 AS other_tenant;
SELECT outbox.offer('dd2', '{"v": 4}', dedupe_key => 'order-1') <> :d1 AS other_topic;
SELECT count(*) AS stored, min(payload::text) FROM outbox.event
WHERE topic_id = (SELECT topic_id FROM outbox.topic WHERE name = 'dd') AND tenant IS NULL;

-- a rolled-back first offer leaves the key free
BEGIN;
SELECT outbox.offer('dd', '{"v": 5}', dedupe_key => 'order-2') AS d2 \gset
ROLLBACK;
SELECT outbox.offer('dd', '{"v": 6}', dedupe_key => 'order-2') <> :d2 AS new_id;
SELECT payload FROM outbox.event WHERE id = (SELECT event_id FROM outbox.dedupe WHERE dedupe_key = 'order-2');

-- past the topic's retention the key may be used again
SELECT outbox.create_topic('dd-short', retention => '200 ms');
SELECT outbox.offer('dd-short', '{"v": 7}', dedupe_key => 'k') AS d3 \gset
SELECT outbox.offer('dd-short', '{"v": 8}', dedupe_key => 'k') = :d3 AS within_retention;
SELECT pg_sleep(0.3);
SELECT outbox.offer('dd-short', '{"v": 9}', dedupe_key => 'k') <> :d3 AS after_retention;
SELECT count(*) AS claimable FROM outbox.claim('dd-short', 10);
