-- outbox.stats: one row per topic, counts that match what happened.
SELECT outbox.create_topic('st', max_attempts => 1);
SELECT count(*) FROM outbox.offer_batch('st', ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 6)));
SELECT outbox.offer('st', '{}', available_at => now() + interval '1 day') > 0;
SELECT topic, available, leased, delayed, dead, oldest_available_age > '0' AS has_age, offered, acked
FROM outbox.stats WHERE topic = 'st';

CREATE TEMP TABLE s1 AS SELECT * FROM outbox.claim('st', 3);
SELECT outbox.ack(id, lease_token) FROM s1 ORDER BY id LIMIT 1;
SELECT outbox.nack(id, lease_token, 'no') FROM s1 ORDER BY id DESC LIMIT 1;
SELECT topic, available, leased, delayed, dead, offered, acked FROM outbox.stats WHERE topic = 'st';

SELECT outbox.ack(ARRAY(SELECT id FROM outbox.claim('st', 10)), gen_random_uuid()) AS wrong;
SELECT topic, available, leased, delayed, dead, offered, acked FROM outbox.stats WHERE topic = 'st';

-- the view has exactly the contract's columns
SELECT attname FROM pg_attribute WHERE attrelid = 'outbox.stats'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'outbox.dead_letters'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'outbox.topics'::regclass AND attnum > 0 ORDER BY attnum;
-- every topic has a row
SELECT count(*) = (SELECT count(*) FROM outbox.topics) AS one_row_per_topic FROM outbox.stats;
