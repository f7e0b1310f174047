-- Installing the extension brings pg_partman along; the log is handed to
-- pg_partman on its first use (here maintain(); an offer does the same),
-- so that a restore from a dump gets its partitions from the dump alone.
CREATE EXTENSION outbox CASCADE;
SELECT extname FROM pg_extension WHERE extname IN ('outbox', 'pg_partman') ORDER BY 1;
SELECT count(*) AS partitions_at_install
FROM pg_inherits WHERE inhparent = 'outbox.event'::regclass;
SELECT outbox.maintain();
SELECT count(*) >= 9 AS partitions_from_day_0
FROM pg_inherits WHERE inhparent = 'outbox.event'::regclass;
SELECT parent_table, partition_interval, retention IS NULL AS no_partman_retention
FROM part_config WHERE parent_table = 'outbox.event';

-- try(sql): runs a statement and reports its SQLSTATE and message, so that
-- the tests below check error codes, not only messages.
CREATE FUNCTION public.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- claim_ids(topic, n): ids and attempts of a claim, for compact output.
CREATE FUNCTION public.claim_ids(t text, n int DEFAULT 10, l interval DEFAULT '30 seconds')
RETURNS TABLE (id bigint, attempt int) LANGUAGE sql AS $$
	SELECT c.id, c.attempt FROM outbox.claim(t, batch_size => n, lease => l) c
$$;
