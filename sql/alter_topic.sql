-- alter_topic(): NULL keeps a setting, the checks of create_topic, tenant
-- parts change with their topic, and the change is used at once by nack,
-- the dedupe window and the topics view; ordered cannot be changed.
SELECT outbox.create_topic('altr', max_attempts => 5, retention => '7 days',
	backoff_base => '1 second', backoff_max => '1 minute');

-- NULL everywhere changes nothing
SELECT outbox.alter_topic('altr');
SELECT topic, max_attempts, retention, backoff_base, backoff_max, ordered
FROM outbox.topics WHERE topic = 'altr';
-- one setting at a time, by name
SELECT outbox.alter_topic('altr', max_attempts => 7);
SELECT outbox.alter_topic('altr', backoff_max => '2 hours');
SELECT outbox.alter_topic(topic => 'altr', retention => '3 days', backoff_base => '1 hour');
SELECT topic, max_attempts, retention, backoff_base, backoff_max, ordered
FROM outbox.topics WHERE topic = 'altr';

-- the checks of create_topic, with their SQLSTATEs; nothing changes
SELECT try($$SELECT outbox.alter_topic('nope', max_attempts => 2)$$);
SELECT try($$SELECT outbox.alter_topic(NULL, max_attempts => 2)$$);
SELECT try($$SELECT outbox.alter_topic('has space')$$);
SELECT try($$SELECT outbox.alter_topic('altr', max_attempts => 0)$$);
SELECT try($$SELECT outbox.alter_topic('altr', max_attempts => 1000001)$$);
SELECT try($$SELECT outbox.alter_topic('altr', retention => '-1 day')$$);
SELECT try($$SELECT outbox.alter_topic('altr', backoff_base => '0')$$);
SELECT try($$SELECT outbox.alter_topic('altr', backoff_base => '400 days')$$);
-- against the kept side of the pair: base 1 hour is kept
SELECT try($$SELECT outbox.alter_topic('altr', backoff_max => '1 minute')$$);
-- both sides given
SELECT try($$SELECT outbox.alter_topic('altr', backoff_base => '2 minutes', backoff_max => '1 minute')$$);
SELECT topic, max_attempts, retention, backoff_base, backoff_max
FROM outbox.topics WHERE topic = 'altr';

-- ordered is fixed at creation, whoever updates the row
SELECT try($$UPDATE outbox.topic SET ordered = true WHERE name = 'altr'$$);
SELECT ordered FROM outbox.topics WHERE topic = 'altr';

-- the next nack uses the new backoff: base 1 hour, attempt 1
SELECT outbox.offer('altr', '{"n": 1}') > 0 AS offered;
CREATE TEMP TABLE c1 AS SELECT * FROM outbox.claim('altr');
SELECT outbox.nack(id, lease_token, 'boom') FROM c1;
SELECT r.available_at > now() + interval '30 minutes' AS backed_off_by_the_hour,
	r.available_at <= now() + interval '1 hour 1 minute' AS not_beyond_it
FROM outbox.retry r JOIN c1 ON c1.id = r.event_id;

-- ... and the new max_attempts: lowered to 1, the next nack is the last
SELECT outbox.alter_topic('altr', max_attempts => 1, backoff_base => '1 second', backoff_max => '1 second');
SELECT outbox.offer('altr', '{"n": 2}') > 0 AS offered;
CREATE TEMP TABLE c2 AS SELECT * FROM outbox.claim('altr');
SELECT payload, attempt FROM c2;
SELECT outbox.nack(id, lease_token, 'boom') FROM c2;
SELECT d.payload, d.attempts FROM outbox.dead_letters d JOIN c2 USING (id);

-- the dedupe window is the retention: at 1 microsecond a key is free again
-- at once
SELECT outbox.offer('altr', '{"n": 3}', dedupe_key => 'k') AS first \gset
SELECT outbox.offer('altr', '{"n": 3}', dedupe_key => 'k') = :first AS deduped;
SELECT outbox.alter_topic('altr', retention => '1 microsecond');
SELECT outbox.offer('altr', '{"n": 3}', dedupe_key => 'k') > :first AS offered_again;

-- tenant parts carry their topic's settings and change with it
SELECT outbox.create_topic('altr_t', max_attempts => 4);
SELECT outbox.isolate_tenants('altr_t');
SELECT outbox.offer('altr_t', '{"n": 1}', tenant => 'a') > 0 AS offered;
SELECT outbox.offer('altr_t', '{"n": 1}', tenant => 'b') > 0 AS offered;
SELECT outbox.alter_topic('altr_t', max_attempts => 9, backoff_max => '5 minutes');
SELECT coalesce(tenant, '(topic)') AS row, max_attempts, backoff_max
FROM outbox.topic WHERE name = 'altr_t' ORDER BY tenant NULLS FIRST;
SELECT outbox.drop_topic('altr', force => true);
SELECT outbox.drop_topic('altr_t', force => true);
