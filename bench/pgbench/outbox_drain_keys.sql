-- A relay of the ordered and hotkey cases: claim a batch (one transaction),
-- then ack all of it with one call (so a key's events are acked in id
-- order) and note in the same transaction how many it claimed and acked,
-- how many of them were not of the hot key, when, and the WAL position
-- then (another transaction).
SELECT array_agg(id) AS ids, min(lease_token::text) AS tok, count(*) AS n,
	   count(*) FILTER (WHERE key IS DISTINCT FROM 'hot') AS m
FROM outbox.claim('t', @BATCH@) \gset
\if :n > 0
WITH a AS (SELECT outbox.ack(:ids::bigint[], :tok::uuid) AS k)
INSERT INTO bench_keys.done SELECT :n, a.k, :m, clock_timestamp(), pg_current_wal_insert_lsn() FROM a;
\endif
