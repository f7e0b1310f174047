-- Failures: nack with retry and backoff, dead letters, expired leases.
SELECT outbox.create_topic('flaky', max_attempts => 3, backoff_base => '1 hour', backoff_max => '2 hours');
SELECT outbox.offer('flaky', '{"f": 1}', key => 'k', type => 'ty', headers => '{"h": 1}', tenant => 'acme') AS fid \gset

-- retry_after 0: available again at once, attempt 2 on the next claim
CREATE TEMP TABLE n1 AS SELECT * FROM outbox.claim('flaky');
SELECT id = :fid AS same, attempt FROM n1;
SELECT outbox.nack(id, lease_token, 'first failure', retry_after => '0') FROM n1;
SELECT outbox.nack(id, lease_token, 'stale') AS stale_token FROM n1;
SELECT available, leased, delayed FROM outbox.stats WHERE topic = 'flaky';
CREATE TEMP TABLE n2 AS SELECT * FROM outbox.claim('flaky');
SELECT id = :fid AS same, attempt FROM n2;

-- the third failure uses up max_attempts: dead, with its history
SELECT outbox.nack(id, lease_token, 'second failure', retry_after => '0') FROM n2;
CREATE TEMP TABLE n3 AS SELECT * FROM outbox.claim('flaky');
SELECT attempt FROM n3;
SELECT outbox.nack(id, lease_token, 'third failure', retry_after => '0') FROM n3;
SELECT available, leased, delayed, dead FROM outbox.stats WHERE topic = 'flaky';
SELECT id = :fid AS same, topic, key, type, payload, headers, tenant, attempts, reason,
	jsonb_path_query_array(error_history, '$[*].error') AS errors,
	jsonb_path_query_array(error_history, '$[*].attempt') AS attempts_seen
FROM outbox.dead_letters;
SELECT count(*) AS retry_rows FROM outbox.retry WHERE event_id = :fid;

-- without retry_after: exponential backoff from the topic's settings, with
-- jitter in the upper half: 1st failure 1 hour -> [30 min, 1 h],
-- 2nd 2 hours (the maximum) -> [1 h, 2 h]
SELECT outbox.create_topic('backoff', backoff_base => '1 hour', backoff_max => '2 hours');
SELECT outbox.offer('backoff', '{}') AS bid \gset
SELECT outbox.nack(id, lease_token, 'e1') FROM outbox.claim('backoff');
SELECT available, delayed FROM outbox.stats WHERE topic = 'backoff';
SELECT count(*) AS not_yet FROM outbox.claim('backoff');
SELECT available_at - now() BETWEEN interval '30 minutes' AND interval '1 hour 1 second' AS first_backoff
FROM outbox.retry WHERE event_id = :bid;
-- make it due, as time would
UPDATE outbox.retry SET available_at = now() WHERE event_id = :bid;
SELECT pg_sleep(1.1);
SELECT outbox.nack(id, lease_token, 'e2') FROM outbox.claim('backoff');
SELECT available_at - now() BETWEEN interval '1 hour' AND interval '2 hours 1 second' AS second_backoff,
	attempts, jsonb_path_query_array(errors, '$[*].error') AS errors
FROM outbox.retry WHERE event_id = :bid;

-- the jitter is real: 20 events failing together come back at 20 times
-- spread over the upper half of the backoff, not at one (a fixed backoff
-- would pass the checks above)
SELECT outbox.create_topic('jitter', backoff_base => '1 hour', backoff_max => '1 hour');
SELECT count(outbox.offer('jitter', jsonb_build_object('n', g))) FROM generate_series(1, 20) g;
SELECT count(outbox.nack(id, lease_token, 'together')) FROM outbox.claim('jitter', 20);
SELECT count(DISTINCT r.available_at) AS distinct_times,
	max(r.available_at) - min(r.available_at) > interval '5 minutes' AS spread_over_5_minutes,
	bool_and(r.available_at - now() BETWEEN interval '30 minutes' AND interval '1 hour 1 second') AS in_upper_half
FROM outbox.retry r JOIN outbox.topic t USING (topic_id) WHERE t.name = 'jitter';
SELECT outbox.drop_topic('jitter', force => true);

-- dead_letter(): give up at once, with a reason
SELECT outbox.offer('flaky', '{"f": 2}') AS f2 \gset
CREATE TEMP TABLE n4 AS SELECT * FROM outbox.claim('flaky');
SELECT outbox.dead_letter(id, gen_random_uuid(), 'wrong token') AS stale FROM n4;
SELECT outbox.dead_letter(id, lease_token, 'unparseable payload') AS given_up FROM n4;
SELECT outbox.dead_letter(id, lease_token, 'again') AS again FROM n4;
SELECT reason, attempts FROM outbox.dead_letters WHERE id = :f2;

-- an expired lease: reap hands it back as a failed attempt ('lease expired')
SELECT outbox.create_topic('slow', max_attempts => 2);
SELECT outbox.offer('slow', '{"s": 1}') AS sid \gset
SELECT attempt FROM outbox.claim('slow', lease => '10 ms');
SELECT pg_sleep(0.05);
SELECT outbox.reap() AS reaped;
SELECT available, leased FROM outbox.stats WHERE topic = 'slow';
SELECT errors->0->>'error' AS error, attempts FROM outbox.retry WHERE event_id = :sid;
SELECT attempt FROM outbox.claim('slow', lease => '10 ms');
SELECT pg_sleep(0.05);
SELECT outbox.reap() AS reaped;
SELECT reason, attempts, jsonb_path_query_array(error_history, '$[*].error') AS errors
FROM outbox.dead_letters WHERE id = :sid;
SELECT outbox.reap() AS nothing_left;

-- an ack after the lease was reaped is refused
SELECT outbox.offer('slow', '{"s": 2}') > 0;
CREATE TEMP TABLE n5 AS SELECT * FROM outbox.claim('slow', lease => '10 ms');
SELECT pg_sleep(0.05);
SELECT outbox.reap() AS reaped;
SELECT outbox.ack(id, lease_token) AS late_ack FROM n5;
SELECT outbox.extend_lease(ARRAY[id], lease_token) AS late_extend FROM n5;
SELECT attempt FROM outbox.claim('slow');

-- extend_lease keeps a lease from expiring
SELECT outbox.offer('slow', '{"s": 3}') > 0;
CREATE TEMP TABLE n6 AS SELECT * FROM outbox.claim('slow', lease => '50 ms');
SELECT outbox.extend_lease(ARRAY[id], lease_token, '1 hour') AS extended FROM n6;
SELECT outbox.extend_lease(ARRAY[id], gen_random_uuid(), '1 hour') AS wrong_token FROM n6;
SELECT pg_sleep(0.1);
SELECT outbox.reap() AS reaped;
SELECT outbox.ack(id, lease_token) AS acked FROM n6;
