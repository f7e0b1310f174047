-- maintain(): partitions ahead, and retirement that never drops an
-- undelivered event.
SELECT outbox.create_topic('old');

-- two old partitions, named the way pg_partman names them
CREATE TABLE outbox.event_p2020_01_01 PARTITION OF outbox.event
	FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
CREATE INDEX ON outbox.event_p2020_01_01 (topic_id, id);
CREATE TABLE outbox.event_p2020_01_02 PARTITION OF outbox.event
	FOR VALUES FROM ('2020-01-02 00:00+00') TO ('2020-01-03 00:00+00');
CREATE INDEX ON outbox.event_p2020_01_02 (topic_id, id);
-- old events: one in each partition
INSERT INTO outbox.event (id, topic_id, created_at, payload)
SELECT nextval('outbox.event_id_seq'), topic_id, '2020-01-01 12:00+00', '{"old": 1}'
FROM outbox.topic WHERE name = 'old';
INSERT INTO outbox.event (id, topic_id, created_at, payload)
SELECT nextval('outbox.event_id_seq'), topic_id, '2020-01-02 12:00+00', '{"old": 2}'
FROM outbox.topic WHERE name = 'old';

-- deliver the first only; reap moves the watermark past it
CREATE TEMP TABLE m1 AS SELECT * FROM outbox.claim('old');
SELECT payload FROM m1;
SELECT outbox.ack(id, lease_token) FROM m1;
SELECT outbox.reap() >= 0;

SELECT outbox.maintain();
SELECT relname FROM pg_class WHERE relname LIKE 'event_p2020%' ORDER BY 1;
SELECT payload FROM outbox.event WHERE created_at < '2021-01-01' ORDER BY id;

-- once the second is delivered, it goes too
CREATE TEMP TABLE m2 AS SELECT * FROM outbox.claim('old');
SELECT payload FROM m2;
-- ... but not while it is leased
SELECT outbox.reap() >= 0;
SELECT outbox.maintain();
SELECT relname FROM pg_class WHERE relname LIKE 'event_p2020%' ORDER BY 1;
SELECT outbox.ack(id, lease_token) FROM m2;
SELECT outbox.reap() >= 0;
SELECT outbox.maintain();
SELECT relname FROM pg_class WHERE relname LIKE 'event_p2020%' ORDER BY 1;

-- partitions ahead: the next four days are covered whatever the time of
-- day and the caller's time zone (pg_partman counts the days ahead from
-- now, not from the start of today, so there may be a fifth); days are UTC
-- days.  One dropped is made again.  In one transaction, so that maintain()
-- and the checks see the same now().
BEGIN;
SET LOCAL timezone = 'Pacific/Kiritimati';
SELECT outbox.maintain();
SET LOCAL timezone = 'America/Los_Angeles';
SELECT outbox.maintain();
CREATE TEMP TABLE part_days AS
SELECT i.child_start_time AS lo, i.child_end_time AS hi
FROM show_partitions('outbox.event') p,
	LATERAL show_partition_info(p.partition_schemaname || '.' || p.partition_tablename,
		p_parent_table => 'outbox.event') i;
SELECT d AS days_ahead, EXISTS (SELECT 1 FROM part_days WHERE now() + d * interval '1 day' >= lo
								AND now() + d * interval '1 day' < hi) AS covered
FROM generate_series(0, 4) d ORDER BY d;
SELECT count(*) FILTER (WHERE lo > now()) BETWEEN 4 AND 5 AS four_or_five_ahead,
	bool_and(lo AT TIME ZONE 'UTC' = date_trunc('day', lo AT TIME ZONE 'UTC')) AS utc_days,
	bool_and(hi - lo = interval '1 day') AS one_day_each
FROM part_days;
COMMIT;
SELECT p.partition_tablename AS newest FROM show_partitions('outbox.event', 'DESC') p LIMIT 1 \gset
DROP TABLE outbox.:newest;
SELECT outbox.maintain();
SELECT to_regclass('outbox.' || :'newest') IS NOT NULL AS made_again;
-- acks at or below the watermark go with their generation of outbox.acked:
-- once the 10-second period that took them is over, reap() truncates it
-- (within two periods whatever the timing)
DO $$
BEGIN
	FOR i IN 1 .. 3 LOOP
		PERFORM pg_sleep(10.2 - (extract(epoch FROM clock_timestamp())::numeric % 10));
		PERFORM outbox.reap();
		EXIT WHEN NOT EXISTS (SELECT 1 FROM outbox.acked a JOIN outbox.topic_state s USING (topic_id)
							  WHERE a.max_id <= s.watermark);
	END LOOP;
END
$$;
SELECT count(*) AS acks_kept FROM outbox.acked a JOIN outbox.topic_state s USING (topic_id)
WHERE a.max_id <= s.watermark;
-- no partition is a member of the extension: all of them can be retired
SELECT count(*) AS member_partitions FROM pg_depend d JOIN pg_inherits i ON i.inhrelid = d.objid
WHERE i.inhparent = 'outbox.event'::regclass AND d.deptype = 'e';
-- the partitions made at install time are retired like any other once
-- past retention: pretend every topic keeps events for a minute only
BEGIN;
UPDATE outbox.topic SET retention = '1 minute';
SELECT count(*) AS past_retention FROM show_partitions('outbox.event') p,
	LATERAL show_partition_info(p.partition_schemaname || '.' || p.partition_tablename,
		p_parent_table => 'outbox.event') i
WHERE i.child_end_time < now() - interval '1 minute' \gset
SELECT :past_retention > 0 AS some_past_retention;
SELECT outbox.maintain();
SELECT count(*) AS left_past_retention FROM show_partitions('outbox.event') p,
	LATERAL show_partition_info(p.partition_schemaname || '.' || p.partition_tablename,
		p_parent_table => 'outbox.event') i
WHERE i.child_end_time < now() - interval '1 minute'
  AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = p.partition_tablename);
ROLLBACK;
-- a second run at the same time does nothing
BEGIN;
SELECT outbox.maintain();
SELECT outbox.maintain();
COMMIT;
