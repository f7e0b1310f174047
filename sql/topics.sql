-- Topics: creation with defaults, the name rules, settings checks, drop.
SELECT outbox.create_topic('orders');
SELECT outbox.create_topic(topic => 'billing.v2', max_attempts => 3,
	retention => '2 days', backoff_base => '2 seconds', backoff_max => '1 minute');
SELECT topic, max_attempts, retention, backoff_base, backoff_max, ordered,
	created_at <= now() AS created
FROM outbox.topics ORDER BY topic;

-- a topic that exists is refused
SELECT try($$SELECT outbox.create_topic('orders')$$);

-- names: letters, digits, _ - . and at most 63 bytes
SELECT try($$SELECT outbox.create_topic('Aa_0-9.z')$$);
SELECT try($$SELECT outbox.create_topic('')$$);
SELECT try($$SELECT outbox.create_topic('has space')$$);
SELECT try($$SELECT outbox.create_topic('x"; DROP TABLE outbox.event; --')$$);
SELECT try($$SELECT outbox.create_topic('é')$$);
SELECT try(format('SELECT outbox.create_topic(%L)', repeat('a', 63)));
SELECT try(format('SELECT outbox.create_topic(%L)', repeat('a', 64)));
SELECT try($$SELECT outbox.create_topic(NULL)$$);

-- settings
SELECT try($$SELECT outbox.create_topic('t1', max_attempts => 0)$$);
SELECT try($$SELECT outbox.create_topic('t1', retention => '0')$$);
SELECT try($$SELECT outbox.create_topic('t1', retention => '-1 day')$$);
SELECT try($$SELECT outbox.create_topic('t1', backoff_base => '0')$$);
SELECT try($$SELECT outbox.create_topic('t1', backoff_base => '1 minute', backoff_max => '1 second')$$);
SELECT try($$SELECT outbox.create_topic('t1', ordered => true, delivery => 'wal', slot => 's1')$$);
SELECT try($$SELECT outbox.create_topic('t1', max_attempts => NULL)$$);
SELECT count(*) AS t1_not_created FROM outbox.topics WHERE topic = 't1';

-- drop: an empty topic goes; one with events only with force
SELECT outbox.drop_topic('Aa_0-9.z');
SELECT try($$SELECT outbox.drop_topic('Aa_0-9.z')$$);
SELECT outbox.create_topic('doomed');
SELECT outbox.offer('doomed', '{"n": 1}') > 0 AS offered;
SELECT try($$SELECT outbox.drop_topic('doomed')$$);
SELECT outbox.drop_topic('doomed', force => true);
SELECT count(*) AS events_left FROM outbox.event e
WHERE NOT EXISTS (SELECT 1 FROM outbox.topic t WHERE t.topic_id = e.topic_id);
-- the name can be used again, for a new topic that starts empty
SELECT outbox.create_topic('doomed');
SELECT available, leased, delayed, dead FROM outbox.stats WHERE topic = 'doomed';
SELECT claim_ids('doomed');
SELECT outbox.drop_topic('doomed');
