-- What one consumer can make the server keep: an error text or reason is
-- cut at 4096 bytes (on a character boundary, marked), and an event's error
-- history keeps its newest 20 entries, so that a huge error cannot slow or
-- fail the reaping of everyone else's leases.
SET client_min_messages = warning;
SELECT outbox.create_topic('lim', max_attempts => 1000, backoff_base => '1 millisecond', backoff_max => '1 millisecond');
SELECT outbox.offer('lim', '{"n": 1}') > 0 AS offered;

-- a 16 MB error, in a multibyte alphabet
SELECT outbox.nack(id, lease_token, repeat('é', 8 * 1024 * 1024), retry_after => '0') FROM outbox.claim('lim');
SELECT octet_length(errors->0->>'error') BETWEEN 4096 AND 4200 AS error_cut,
	   errors->0->>'error' LIKE '%... (16777216 bytes, cut)' AS marked,
	   left(errors->0->>'error', 3) = 'ééé' AS characters_whole
FROM outbox.retry r JOIN outbox.topic t USING (topic_id) WHERE t.name = 'lim';

-- 30 failed attempts: the newest 20 are kept
CREATE PROCEDURE lim_fail() LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 2 .. 30 LOOP
		PERFORM outbox.nack(id, lease_token, 'attempt ' || i, retry_after => '0') FROM outbox.claim('lim');
		COMMIT;
	END LOOP;
END
$$;
CALL lim_fail();
DROP PROCEDURE lim_fail();
SELECT jsonb_array_length(errors) AS kept,
	   errors->0->>'error' AS oldest_kept, errors->-1->>'error' AS newest,
	   attempts
FROM outbox.retry r JOIN outbox.topic t USING (topic_id) WHERE t.name = 'lim';

-- a dead letter keeps the same bounded history, and a cut reason
SELECT outbox.dead_letter(id, lease_token, repeat('r', 100000)) FROM outbox.claim('lim');
SELECT jsonb_array_length(error_history) AS kept, octet_length(reason) < 4200 AS reason_cut
FROM outbox.dead_letters WHERE topic = 'lim';
SELECT outbox.drop_topic('lim', force => true);

-- ack and extend_lease take at most 10000 ids (one lease's most): a longer
-- array is refused before anything looks at the shared lease table
SELECT try($$SELECT outbox.ack(ARRAY(SELECT 1::bigint FROM generate_series(1, 20000000)), gen_random_uuid())$$) AS ack_20m;
SELECT try($$SELECT outbox.extend_lease(ARRAY(SELECT g::bigint FROM generate_series(1, 10001) g), gen_random_uuid())$$) AS extend_10001;
SELECT try($$SELECT outbox.ack(ARRAY(SELECT g::bigint FROM generate_series(1, 10000) g), gen_random_uuid())$$) AS ack_10000;

-- a delay never reaches past the topic's retention: a delayed event keeps
-- its day's partition until it is delivered
SELECT outbox.create_topic('lim_delay', retention => '2 days', backoff_base => '3 days', backoff_max => '300 days');
SELECT try($$SELECT outbox.offer('lim_delay', '{}', available_at => '9999-12-31')$$) AS year_9999;
SELECT try($$SELECT outbox.offer('lim_delay', '{}', available_at => now() + interval '3 days')$$) AS three_days;
SELECT outbox.offer('lim_delay', '{}', available_at => now() + interval '47 hours') > 0 AS within_retention;
SELECT outbox.offer('lim_delay', '{"n": 1}') > 0 AS offered;
CREATE TEMP TABLE ld AS SELECT * FROM outbox.claim('lim_delay');
SELECT try(format($$SELECT outbox.nack(%s, %L, 'e', retry_after => '366 days')$$, id, lease_token)) AS nack_366_days FROM ld;
-- the lease is intact after the refused nack; the backoff (3 days
-- for attempt 1 here: base 3 days) is cut to the retention
SELECT outbox.nack(id, lease_token, 'e') FROM ld;
SELECT r.available_at <= now() + interval '2 days' AS backoff_within_retention
FROM outbox.retry r JOIN ld ON ld.id = r.event_id;
SELECT outbox.drop_topic('lim_delay', force => true);
