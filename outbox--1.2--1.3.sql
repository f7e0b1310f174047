/* outbox--1.2--1.3.sql: topic settings that can change */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.3'" to load this file. \quit

/*
 * alter_topic: a NULL argument keeps that setting.  The topic's tenant
 * parts change with it.
 */
CREATE FUNCTION outbox.alter_topic(
	topic text,
	max_attempts integer DEFAULT NULL,
	retention interval DEFAULT NULL,
	backoff_base interval DEFAULT NULL,
	backoff_max interval DEFAULT NULL)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_alter_topic';
REVOKE ALL ON FUNCTION outbox.alter_topic(text, integer, interval, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.alter_topic(text, integer, interval, interval, interval) TO outbox_admin;
COMMENT ON FUNCTION outbox.alter_topic(text, integer, interval, interval, interval) IS
	'Change a topic''s max_attempts, retention or backoff; NULL keeps a setting';

/* ordered is fixed when a topic is made, whoever updates the row */
CREATE FUNCTION outbox._topic_fixed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'outbox_topic_fixed';
REVOKE ALL ON FUNCTION outbox._topic_fixed() FROM PUBLIC;
CREATE TRIGGER topic_fixed
	BEFORE UPDATE OF ordered ON outbox.topic
	FOR EACH ROW WHEN (OLD.ordered IS DISTINCT FROM NEW.ordered)
	EXECUTE FUNCTION outbox._topic_fixed();

/* ------------------------------------------------------------------------
 * Metrics: counters and latency histograms kept in shared memory
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox._metrics(
	OUT topic_id integer, OUT incarnation bigint,
	OUT offered bigint, OUT claimed bigint, OUT acked bigint, OUT nacked bigint,
	OUT expired bigint, OUT dead_lettered bigint, OUT redriven bigint,
	OUT wait bigint[], OUT wait_sum_usec bigint, OUT wait_max_usec bigint,
	OUT delivery bigint[], OUT delivery_sum_usec bigint, OUT delivery_max_usec bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'outbox_metrics_counters';
COMMENT ON FUNCTION outbox._metrics() IS
	'Internal: counters and latency histograms per topic part in shared memory (empty unless preloaded)';

CREATE FUNCTION outbox._metrics_kept()
RETURNS boolean
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'outbox_metrics_kept';
COMMENT ON FUNCTION outbox._metrics_kept() IS
	'Internal: whether this server keeps metrics (the library is preloaded)';

CREATE FUNCTION outbox._latency(buckets bigint[], max_usec bigint, q double precision)
RETURNS interval
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'outbox_latency_quantile';
COMMENT ON FUNCTION outbox._latency(bigint[], bigint, double precision) IS
	'Internal: a quantile of a latency histogram';

/*
 * Per topic: its parts' counters added up, and their histograms merged
 * bucket by bucket.  NULL counters when the server keeps none.
 */
CREATE FUNCTION outbox._metric_topics(
	OUT topic text, OUT offered bigint, OUT claimed bigint, OUT acked bigint,
	OUT nacked bigint, OUT expired bigint, OUT dead_lettered bigint,
	OUT redriven bigint, OUT wait bigint[], OUT wait_sum_usec bigint,
	OUT wait_max_usec bigint, OUT delivery bigint[], OUT delivery_sum_usec bigint,
	OUT delivery_max_usec bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
WITH m AS MATERIALIZED (
	SELECT t.name, m.*
	FROM outbox._metrics() m
	JOIN outbox.topic t ON t.topic_id = m.topic_id AND t.incarnation = m.incarnation
),
w AS (
	SELECT m.name, u.i, sum(u.n)::bigint AS n
	FROM m, unnest(m.wait) WITH ORDINALITY AS u(n, i)
	GROUP BY m.name, u.i
),
d AS (
	SELECT m.name, u.i, sum(u.n)::bigint AS n
	FROM m, unnest(m.delivery) WITH ORDINALITY AS u(n, i)
	GROUP BY m.name, u.i
),
per AS (
	SELECT m.name,
		   sum(m.offered)::bigint AS offered, sum(m.claimed)::bigint AS claimed,
		   sum(m.acked)::bigint AS acked, sum(m.nacked)::bigint AS nacked,
		   sum(m.expired)::bigint AS expired,
		   sum(m.dead_lettered)::bigint AS dead_lettered,
		   sum(m.redriven)::bigint AS redriven,
		   sum(m.wait_sum_usec)::bigint AS wait_sum_usec,
		   max(m.wait_max_usec) AS wait_max_usec,
		   sum(m.delivery_sum_usec)::bigint AS delivery_sum_usec,
		   max(m.delivery_max_usec) AS delivery_max_usec
	FROM m GROUP BY m.name
),
kept AS (SELECT outbox._metrics_kept() AS kept)
SELECT t.name,
	   CASE WHEN k.kept THEN coalesce(p.offered, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.claimed, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.acked, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.nacked, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.expired, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.dead_lettered, 0) END,
	   CASE WHEN k.kept THEN coalesce(p.redriven, 0) END,
	   (SELECT array_agg(w.n ORDER BY w.i) FROM w WHERE w.name = t.name),
	   p.wait_sum_usec, p.wait_max_usec,
	   (SELECT array_agg(d.n ORDER BY d.i) FROM d WHERE d.name = t.name),
	   p.delivery_sum_usec, p.delivery_max_usec
FROM outbox.topic t
CROSS JOIN kept k
LEFT JOIN per p ON p.name = t.name
WHERE t.parent_id IS NULL
$$;
COMMENT ON FUNCTION outbox._metric_topics() IS
	'Internal: the counters and merged latency histograms of each topic';

CREATE VIEW outbox.metrics AS
SELECT m.topic, m.offered, m.claimed, m.acked, m.nacked, m.expired,
	   m.dead_lettered, m.redriven,
	   outbox._latency(m.delivery, m.delivery_max_usec, 0.50) AS delivery_p50,
	   outbox._latency(m.delivery, m.delivery_max_usec, 0.90) AS delivery_p90,
	   outbox._latency(m.delivery, m.delivery_max_usec, 0.99) AS delivery_p99,
	   CASE WHEN outbox._latency(m.delivery, m.delivery_max_usec, 1) IS NOT NULL
			THEN m.delivery_max_usec * interval '1 microsecond' END AS delivery_max,
	   outbox._latency(m.wait, m.wait_max_usec, 0.50) AS wait_p50,
	   outbox._latency(m.wait, m.wait_max_usec, 0.99) AS wait_p99
FROM outbox._metric_topics() m;
COMMENT ON VIEW outbox.metrics IS
	'Per topic, since server start or reset_metrics(): events offered, claimed, acked, nacked, expired, dead-lettered and redriven; latency from creation to ack and to first claim';

/*
 * The latency histograms for Prometheus: cumulative counts at bounds of
 * 2^-4 ms, 2^-3 ms ... 1 ms, 2 ms ... 2^22 ms (every fourth bucket edge
 * from 62.5 microseconds on), in seconds.  Bucket b (1-based) ends at the
 * edge 4 * (j + 10) for the bound 2^j ms.
 */
CREATE FUNCTION outbox.metrics_histograms()
RETURNS TABLE(topic text, histogram text, le double precision[], bucket bigint[],
			  sum double precision, count bigint)
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
SELECT m.topic, h.name,
	   ARRAY(SELECT (2.0 ^ j) / 1000.0 FROM generate_series(-4, 22) j ORDER BY j),
	   ARRAY(SELECT coalesce((SELECT sum(u.n) FROM unnest(h.buckets) WITH ORDINALITY u(n, i)
							  WHERE u.i <= 4 * (j + 10) + 1), 0)::bigint
			 FROM generate_series(-4, 22) j ORDER BY j),
	   coalesce(h.sum_usec, 0) / 1e6,
	   coalesce((SELECT sum(u.n) FROM unnest(h.buckets) u(n)), 0)::bigint
FROM outbox._metric_topics() m,
	 LATERAL (VALUES ('wait', m.wait, m.wait_sum_usec),
					 ('delivery', m.delivery, m.delivery_sum_usec)) AS h(name, buckets, sum_usec)
WHERE m.offered IS NOT NULL
$$;

CREATE FUNCTION outbox.reset_metrics()
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'outbox_reset_metrics';

REVOKE ALL ON FUNCTION outbox._metrics(), outbox._metrics_kept(),
	outbox._latency(bigint[], bigint, double precision), outbox._metric_topics(),
	outbox.metrics_histograms(), outbox.reset_metrics() FROM PUBLIC;
GRANT SELECT ON outbox.metrics TO outbox_producer, outbox_consumer, outbox_admin;
GRANT EXECUTE ON FUNCTION outbox._metric_topics(), outbox._latency(bigint[], bigint, double precision),
	outbox.metrics_histograms() TO outbox_producer, outbox_consumer, outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.reset_metrics() TO outbox_admin;
