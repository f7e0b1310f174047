-- outbox.metrics: counters that move exactly with what commits, latency
-- percentiles of known latencies, reset_metrics(), and the histograms for
-- Prometheus.
SELECT outbox.create_topic('met', max_attempts => 2);
SELECT outbox.reset_metrics();
SELECT topic, offered, claimed, acked, nacked, expired, dead_lettered, redriven,
	delivery_p50, delivery_max, wait_p50
FROM outbox.metrics WHERE topic = 'met';

-- 6 offers, one rolled back
SELECT count(outbox.offer('met', jsonb_build_object('n', g))) FROM generate_series(1, 6) g;
BEGIN;
SELECT outbox.offer('met', '{"rolled": "back"}') > 0 AS offered;
ROLLBACK;
-- a claim that rolls back counts nothing
BEGIN;
SELECT count(*) FROM outbox.claim('met', 6);
ROLLBACK;
-- 3 claimed, 2 acked, 1 nacked
CREATE TEMP TABLE m1 AS SELECT * FROM outbox.claim('met', 3);
SELECT outbox.ack(ARRAY(SELECT id FROM m1 ORDER BY id LIMIT 2), (SELECT lease_token FROM m1 LIMIT 1));
SELECT outbox.nack(id, lease_token, 'boom', retry_after => '0') FROM m1 ORDER BY id DESC LIMIT 1;
-- an ack that rolls back counts nothing
BEGIN;
CREATE TEMP TABLE m2 AS SELECT * FROM outbox.claim('met', 1);
SELECT outbox.ack(id, lease_token) FROM m2;
ROLLBACK;
-- 1 dead-lettered by hand, 1 dead by its second nack, 1 expired
CREATE TEMP TABLE m3 AS SELECT * FROM outbox.claim('met', 4);
SELECT count(*) AS claimed FROM m3;
SELECT outbox.dead_letter(id, lease_token, 'poison') FROM m3 WHERE attempt = 1 ORDER BY id LIMIT 1;
SELECT outbox.nack(id, lease_token, 'boom again') FROM m3 WHERE attempt = 2;
SELECT outbox.extend_lease(ARRAY(SELECT id FROM m3 WHERE attempt = 1 ORDER BY id OFFSET 1 LIMIT 1),
	(SELECT lease_token FROM m3 LIMIT 1), lease => '1 millisecond');
SELECT pg_sleep(0.05);
SELECT outbox.reap();
-- both dead letters back
SELECT outbox.redrive(ARRAY(SELECT id FROM outbox.dead_letters WHERE topic = 'met'), 'fixed');
SELECT topic, offered, claimed, acked, nacked, expired, dead_lettered, redriven
FROM outbox.metrics WHERE topic = 'met';
-- stats counts the same offers and acks
SELECT offered, acked FROM outbox.stats WHERE topic = 'met';

-- reset: metrics start from zero, stats still counts from server start
SELECT outbox.reset_metrics();
SELECT topic, offered, claimed, acked, nacked, expired, dead_lettered, redriven,
	delivery_p50, wait_p99
FROM outbox.metrics WHERE topic = 'met';
SELECT offered, acked FROM outbox.stats WHERE topic = 'met';

-- known latencies: 90 events made 100 ms ago, 10 made 10 s ago, claimed
-- and acked at once
SELECT outbox.create_topic('lat');
INSERT INTO outbox.event (id, topic_id, created_at, payload)
SELECT nextval('outbox.event_id_seq'), t.topic_id,
	clock_timestamp() - CASE WHEN g <= 90 THEN interval '100 milliseconds' ELSE interval '10 seconds' END,
	jsonb_build_object('n', g)
FROM outbox.topic t, generate_series(1, 100) g WHERE t.name = 'lat' AND t.parent_id IS NULL;
CREATE TEMP TABLE l1 AS SELECT * FROM outbox.claim('lat', 100);
SELECT count(*) AS claimed FROM l1;
SELECT outbox.ack(ARRAY(SELECT id FROM l1), (SELECT lease_token FROM l1 LIMIT 1));
SELECT claimed, acked,
	wait_p50 BETWEEN interval '90 ms' AND interval '130 ms' AS wait_p50_near_100ms,
	wait_p99 BETWEEN interval '9 s' AND interval '11 s' AS wait_p99_near_10s,
	delivery_p50 BETWEEN interval '90 ms' AND interval '130 ms' AS p50_near_100ms,
	delivery_p90 BETWEEN interval '90 ms' AND interval '130 ms' AS p90_near_100ms,
	delivery_p99 BETWEEN interval '9 s' AND interval '11 s' AS p99_near_10s,
	delivery_max BETWEEN interval '10 s' AND interval '11 s' AS max_near_10s,
	delivery_p99 <= delivery_max AS p99_not_above_max
FROM outbox.metrics WHERE topic = 'lat';

-- the same histograms for Prometheus: cumulative, 27 bounds from 62.5 us
SELECT histogram, array_length(le, 1) AS bounds, le[1] AS first_le, le[27] AS last_le,
	bucket[5] AS at_1ms,
	bucket[12] AS at_128ms,		-- the 90 quick ones
	bucket[19] AS at_16s,		-- all
	count,
	sum BETWEEN 90 * 0.1 + 10 * 10 AND 90 * 0.2 + 10 * 11 AS sum_in_range,
	(SELECT bool_and(b1 <= b2) FROM unnest(bucket[1:26], bucket[2:27]) u(b1, b2)) AS cumulative
FROM outbox.metrics_histograms() WHERE topic = 'lat' ORDER BY histogram;

-- the quantile function refuses what is not a histogram
SELECT try($$SELECT outbox._latency(ARRAY[1, 2]::bigint[], 0, 0.5)$$);
SELECT try($$SELECT outbox._latency(array_fill(0::bigint, ARRAY[130]), 0, 1.5)$$);
SELECT outbox._latency(array_fill(0::bigint, ARRAY[130]), 0, 0.5) IS NULL AS empty_is_null;
SELECT outbox.drop_topic('met', force => true);
SELECT outbox.drop_topic('lat', force => true);
-- a dropped topic's metrics go with it
SELECT count(*) AS left_behind FROM outbox._metrics() m
WHERE NOT EXISTS (SELECT 1 FROM outbox.topic t WHERE t.topic_id = m.topic_id);
-- below a millisecond too: a histogram of 100 latencies of 50 us and one
-- of 2 ms.  50 us falls in k = floor(4 * log2(50 / (1000/1024))) = 22, the
-- bucket 1 + k, at 1-based index 24; 2 ms in k = 44, at index 46.
SELECT outbox._latency(h, 2000, 0.5) BETWEEN interval '45 microseconds' AND interval '55 microseconds' AS p50_near_50us,
	outbox._latency(h, 2000, 1) AS p100_is_the_max
FROM (SELECT array_fill(0::bigint, ARRAY[130]) AS z) z,
	LATERAL (SELECT z.z[1:23] || ARRAY[100::bigint] || z.z[25:45] || ARRAY[1::bigint] || z.z[47:130] AS h) h;
