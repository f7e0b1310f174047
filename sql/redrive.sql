-- Redrive: dead letters back to available, with a reason kept.
SELECT outbox.create_topic('rd', max_attempts => 1);
SELECT outbox.offer('rd', '{"r": 1}') AS rid \gset
SELECT outbox.nack(id, lease_token, 'broken') FROM outbox.claim('rd');
SELECT dead FROM outbox.stats WHERE topic = 'rd';

SELECT try(format('SELECT outbox.redrive(ARRAY[%s]::bigint[], %L)', :rid, ''));
SELECT try(format('SELECT outbox.redrive(ARRAY[%s]::bigint[], NULL)', :rid));
SELECT try($$SELECT outbox.redrive(ARRAY[NULL]::bigint[], 'x')$$);
SELECT outbox.redrive(ARRAY[:rid, 424242]::bigint[], 'consumer fixed in v2') AS redriven;
SELECT outbox.redrive(ARRAY[:rid]::bigint[], 'twice') AS redriven_again;
SELECT event_id = :rid AS same, reason, redriven_by = current_user AS by_me FROM outbox.redrive_log;
SELECT available, dead FROM outbox.stats WHERE topic = 'rd';
-- attempt count starts again
CREATE TEMP TABLE r1 AS SELECT * FROM outbox.claim('rd');
SELECT id = :rid AS same, attempt, payload FROM r1;
SELECT outbox.ack(id, lease_token) FROM r1;
SELECT available, leased, dead FROM outbox.stats WHERE topic = 'rd';
SELECT count(*) AS retry_rows FROM outbox.retry WHERE event_id = :rid;
