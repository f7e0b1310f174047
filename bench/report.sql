-- The results table of bench/run.sh, in markdown, from the raw figures on
-- standard input (case, point, system, run, metric, value; tab-separated).
\pset format unaligned
\pset tuples_only on
SET client_min_messages = warning;

CREATE TEMP TABLE raw (kase text, point text, sys text, run integer, metric text, value float8);
\copy raw FROM pstdin

CREATE FUNCTION pg_temp.fmt(v float8, kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN v IS NULL THEN '—'
		WHEN kind = 'int' THEN to_char(round(v), 'FM999G999G999G990')
		WHEN kind = 'x' THEN to_char(v, 'FM999990.00') || '×'
		WHEN kind = 'ms' THEN to_char(v, 'FM999990.00') || ' ms'
		WHEN kind = 'B' THEN to_char(round(v), 'FM999G999G990') || ' B'
		WHEN kind = 'MB' THEN to_char(v / 1048576.0, 'FM999G999G990') || ' MB'
		WHEN kind = 'size' THEN pg_size_pretty(round(v)::bigint)
		WHEN kind = 's' THEN to_char(v, 'FM999990.0') || ' s'
		WHEN kind = 'pct' THEN to_char(v * 100, 'FM999990.0') || ' %'
		ELSE to_char(v, 'FM999990.00')
	END
$$;

-- median (min–max), or the one value
CREATE FUNCTION pg_temp.cell(med float8, lo float8, hi float8, kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN med IS NULL THEN '—'
		WHEN pg_temp.fmt(lo, kind) = pg_temp.fmt(hi, kind) THEN pg_temp.fmt(med, kind)
		ELSE pg_temp.fmt(med, kind) || ' (' || pg_temp.fmt(lo, kind) || '–' || pg_temp.fmt(hi, kind) || ')'
	END
$$;

-- One row of the table: figure of num_sys, of the baseline den_sys, their
-- ratio run by run, a reference figure, and a target on the ratio or on the
-- figure itself.
CREATE TEMP TABLE spec (
	ord			float8,
	label		text,
	point		text,
	kase		text,
	kpoint		text,
	metric		text,
	num_sys		text,
	den_sys		text,
	ref_sys		text,
	kind		text,
	target		text,
	check_on	text,	-- 'ratio', 'num' or NULL
	op			text,
	threshold	float8
);

CREATE TEMP VIEW points AS
SELECT DISTINCT kase, point, nullif(regexp_replace(point, '\D', '', 'g'), '')::integer AS n
FROM raw WHERE run > 0;

INSERT INTO spec
SELECT 10 + n / 1000.0, 'offer, 1 event per transaction (vs plain INSERT)', CASE WHEN n = 1 THEN '1 client' ELSE n || ' clients' END,
	   kase, point, 'events_s', 'outbox', 'plain', 'pgq', 'int', '≥ 0.9×', 'ratio', '>=', 0.9
FROM points WHERE kase = 'offer1'
UNION ALL
SELECT 20 + n / 1000.0, 'offer, 100 events per transaction (vs plain INSERT)', CASE WHEN n = 1 THEN '1 client' ELSE n || ' clients' END,
	   kase, point, 'events_s', 'outbox', 'plain', 'pgq', 'int', '≥ 0.8×', 'ratio', '>=', 0.8
FROM points WHERE kase = 'offer100'
UNION ALL
SELECT 30 + n / 1000.0, 'drain, batch 1 (vs hand-written queue)', CASE WHEN n = 1 THEN '1 consumer' ELSE n || ' consumers' END,
	   kase, point, 'events_s', 'outbox', 'queue', NULL, 'int', '≥ 1.2×', 'ratio', '>=', 1.2
FROM points WHERE kase = 'drain1'
UNION ALL
SELECT 40 + n / 1000.0, 'drain, batch 100 (vs hand-written queue)', CASE WHEN n = 1 THEN '1 consumer' ELSE n || ' consumers' END,
	   kase, point, 'events_s', 'outbox', 'queue', 'pgq', 'int',
	   CASE WHEN n = 4 THEN '≥ 2×' ELSE '—' END,
	   CASE WHEN n = 4 THEN 'ratio' END, '>=', 2
FROM points WHERE kase = 'drain100';

INSERT INTO spec VALUES
	(50.1, 'churn (vs hand-written queue)', 'last window ÷ first', 'churn', '-', 'last_over_first', 'outbox', NULL, 'queue', 'x', '≥ 0.95×', 'num', '>=', 0.95),
	(50.2, 'churn (vs hand-written queue)', 'events/s over the run', 'churn', '-', 'events_s', 'outbox', 'queue', NULL, 'int', '—', NULL, NULL, NULL),
	(50.3, 'churn (vs hand-written queue)', 'storage at end ÷ start', 'churn', '-', 'bytes_ratio', 'outbox', NULL, 'queue', 'x', '≤ 1.2×', 'num', '<=', 1.2),
	(50.4, 'churn (vs hand-written queue)', 'dead tuples at end', 'churn', '-', 'dead_end', 'outbox', NULL, 'queue', 'int', '—', NULL, NULL, NULL),
	(60.1, 'held horizon (vs hand-written queue)', 'last window ÷ first', 'held', '-', 'last_over_first', 'outbox', NULL, 'queue', 'x', '≥ 0.8×', 'num', '>=', 0.8),
	(60.2, 'held horizon (vs hand-written queue)', 'events/s over the run', 'held', '-', 'events_s', 'outbox', 'queue', NULL, 'int', '—', NULL, NULL, NULL),
	(60.3, 'held horizon (vs hand-written queue)', 'storage at end ÷ start', 'held', '-', 'bytes_ratio', 'outbox', NULL, 'queue', 'x', '—', NULL, NULL, NULL),
	(60.4, 'held horizon (vs hand-written queue)', 'dead tuples at end', 'held', '-', 'dead_end', 'outbox', NULL, 'queue', 'int', '—', NULL, NULL, NULL),
	(80.1, 'latency, offer commit → claim return', 'p50', 'latency', '-', 'p50_ms', 'outbox', NULL, NULL, 'ms', '≤ 2 ms', 'num', '<=', 2),
	(80.2, 'latency, offer commit → claim return', 'p99', 'latency', '-', 'p99_ms', 'outbox', NULL, NULL, 'ms', '≤ 10 ms', 'num', '<=', 10),
	(90.1, 'WAL per event, offer + claim + ack (vs plain INSERT)', 'claim batch 1', 'wal', '-', 'bytes_per_event', 'outbox_b1', 'plain', NULL, 'B', '≤ 1.3×', 'ratio', '<=', 1.3),
	(90.2, 'WAL per event, offer + claim + ack (vs plain INSERT)', 'claim batch 100', 'wal', '-', 'bytes_per_event', 'outbox_b100', 'plain', NULL, 'B', '≤ 1.3×', 'ratio', '<=', 1.3),
	(90.3, 'WAL per event, hand-written queue insert + claim + ack (vs plain INSERT)', 'claim batch 1', 'wal', '-', 'bytes_per_event', 'queue_b1', 'plain', NULL, 'B', '—', NULL, NULL, NULL),
	(90.4, 'WAL per event, hand-written queue insert + claim + ack (vs plain INSERT)', 'claim batch 100', 'wal', '-', 'bytes_per_event', 'queue_b100', 'plain', NULL, 'B', '—', NULL, NULL, NULL);

INSERT INTO spec
SELECT 70, format('history: %s delivered behind, %s pending in another topic (vs empty database)',
				  (SELECT to_char(max(value), 'FM999G999G999G990') FROM raw WHERE kase = 'history' AND metric = 'delivered_behind'),
				  (SELECT to_char(max(value), 'FM999G999G999G990') FROM raw WHERE kase = 'history' AND metric = 'pending_other')),
	   point,
	   kase, point, 'events_s', 'history', 'empty', NULL, 'int', '≥ 0.9×', 'ratio', '>=', 0.9
FROM points WHERE kase = 'history';

INSERT INTO spec
SELECT 100, format('offer to %s topics at random (vs one topic), outbox.max_topics = 256',
				   (SELECT to_char(max(value), 'FM999G999G990') FROM raw WHERE kase = 'topics_offer' AND metric = 'topics')),
	   '4 clients', 'topics_offer', 'c=4', 'events_s', 'many', 'one', NULL, 'int', '≥ 0.9×', 'ratio', '>=', 0.9
UNION ALL
SELECT 101, format('claim 10 + ack across %s topics with a backlog each (vs one topic)',
				   (SELECT to_char(max(value), 'FM999G999G990') FROM raw WHERE kase = 'topics_drain' AND metric = 'topics')),
	   '4 consumers', 'topics_drain', 'c=4', 'events_s', 'many', 'one', NULL, 'int', '—', NULL, NULL, NULL;

-- Delivery through the WAL and capture triggers (wal_level = logical)
INSERT INTO spec
SELECT 110, 'offer to a topic delivered through the WAL, 1 event per transaction (vs plain INSERT; wal_level = logical)',
	   n || ' clients', kase, point, 'events_s', 'wal', 'plain', NULL, 'int', '—', NULL::text, NULL::text, NULL::float8
FROM points WHERE kase = 'cdc_offer1'
UNION ALL
SELECT 111, 'offer to a topic delivered through the WAL, 100 events per transaction (vs plain INSERT; wal_level = logical)',
	   n || ' clients', kase, point, 'events_s', 'wal', 'plain', NULL, 'int', '—', NULL, NULL, NULL
FROM points WHERE kase = 'cdc_offer100'
UNION ALL
SELECT 114, 'captured INSERT, 1 row per statement (vs the INSERT and offer() in one statement)',
	   n || ' clients', kase, point, 'events_s', 'capture', 'explicit', NULL, 'int', '≥ 1.0×', 'ratio', '>=', 1.0
FROM points WHERE kase = 'cdc_capture1'
UNION ALL
SELECT 115, 'captured INSERT, 100 rows per statement (vs the INSERT and offer_batch() in one statement)',
	   n || ' clients', kase, point, 'events_s', 'capture', 'explicit', NULL, 'int', '≥ 1.0×', 'ratio', '>=', 1.0
FROM points WHERE kase = 'cdc_capture100'
UNION ALL
SELECT 118 + n / 1000.0, 'decoding: events/s a pgoutput client reads while producers offer to a WAL topic (vs events/s offered)',
	   CASE WHEN n = 1 THEN '1 event per transaction' ELSE n || ' events per transaction' END,
	   kase, point, 'events_s', 'client', 'producers', NULL, 'int', '—', NULL, NULL, NULL
FROM points WHERE kase = 'cdc_decode';

INSERT INTO spec VALUES
	(112, 'WAL per event, offer to a topic delivered through the WAL (vs plain INSERT; wal_level = logical)', '1 event per transaction', 'cdc_wal', 'm=1', 'bytes_per_event', 'wal', 'plain', NULL, 'B', '—', NULL, NULL, NULL),
	(113, 'WAL per event, offer to a topic delivered through the WAL (vs plain INSERT; wal_level = logical)', '100 events per transaction', 'cdc_wal', 'm=100', 'bytes_per_event', 'wal', 'plain', NULL, 'B', '—', NULL, NULL, NULL),
	(116, 'WAL per event, captured INSERT (vs the INSERT and an offer in one statement)', '1 row per statement', 'cdc_wal', 'm=1', 'bytes_per_event', 'capture', 'explicit', NULL, 'B', '—', NULL, NULL, NULL),
	(117, 'WAL per event, captured INSERT (vs the INSERT and an offer in one statement)', '100 rows per statement', 'cdc_wal', 'm=100', 'bytes_per_event', 'capture', 'explicit', NULL, 'B', '—', NULL, NULL, NULL);

-- Only rows with figures
DELETE FROM spec s WHERE NOT EXISTS (
	SELECT 1 FROM raw r WHERE r.kase = s.kase AND r.point = s.kpoint AND r.sys = s.num_sys AND r.metric = s.metric);

CREATE TEMP VIEW stat AS
SELECT kase, point, sys, metric,
	   percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS med,
	   min(value) AS lo, max(value) AS hi
FROM raw WHERE run > 0
GROUP BY kase, point, sys, metric;

CREATE TEMP VIEW ratio AS
SELECT s.ord,
	   percentile_cont(0.5) WITHIN GROUP (ORDER BY n.value / nullif(d.value, 0)) AS med,
	   min(n.value / nullif(d.value, 0)) AS lo, max(n.value / nullif(d.value, 0)) AS hi
FROM spec s
JOIN raw n ON n.kase = s.kase AND n.point = s.kpoint AND n.sys = s.num_sys AND n.metric = s.metric AND n.run > 0
JOIN raw d ON d.kase = s.kase AND d.point = s.kpoint AND d.sys = s.den_sys AND d.metric = s.metric AND d.run = n.run
GROUP BY s.ord;

-- points where a backlog ran out before the end
CREATE TEMP VIEW dry AS
SELECT kase, point, sys FROM raw WHERE metric = 'dry' AND value > 0 GROUP BY 1, 2, 3;

CREATE TEMP VIEW rows AS
SELECT s.*,
	   pg_temp.cell(num.med, num.lo, num.hi, s.kind)
		   || CASE WHEN EXISTS (SELECT 1 FROM dry WHERE (dry.kase, dry.point, dry.sys) = (s.kase, s.kpoint, s.num_sys)) THEN ' †' ELSE '' END AS num_cell,
	   pg_temp.cell(den.med, den.lo, den.hi, s.kind)
		   || CASE WHEN EXISTS (SELECT 1 FROM dry WHERE (dry.kase, dry.point, dry.sys) = (s.kase, s.kpoint, s.den_sys)) THEN ' †' ELSE '' END AS den_cell,
	   pg_temp.cell(rat.med, rat.lo, rat.hi, 'x') AS ratio_cell,
	   pg_temp.cell(ref.med, ref.lo, ref.hi, s.kind)
		   || CASE WHEN EXISTS (SELECT 1 FROM dry WHERE (dry.kase, dry.point, dry.sys) = (s.kase, s.kpoint, s.ref_sys)) THEN ' †' ELSE '' END AS ref_cell,
	   CASE s.check_on WHEN 'ratio' THEN rat.med WHEN 'num' THEN num.med END AS checked
FROM spec s
LEFT JOIN stat num ON (num.kase, num.point, num.sys, num.metric) = (s.kase, s.kpoint, s.num_sys, s.metric)
LEFT JOIN stat den ON (den.kase, den.point, den.sys, den.metric) = (s.kase, s.kpoint, s.den_sys, s.metric)
LEFT JOIN stat ref ON (ref.kase, ref.point, ref.sys, ref.metric) = (s.kase, s.kpoint, s.ref_sys, s.metric)
LEFT JOIN ratio rat ON rat.ord = s.ord;

SELECT '| case | point | outbox | baseline | outbox ÷ baseline | PgQ / other | target | result |';
SELECT '|---|---|--:|--:|--:|--:|---|---|';
SELECT format('| %s | %s | %s | %s | %s | %s | %s | %s |',
			  label, point, num_cell,
			  CASE WHEN den_sys IS NULL AND ref_sys IS NOT NULL THEN ref_cell ELSE den_cell END,
			  CASE WHEN den_sys IS NULL THEN '—' ELSE ratio_cell END,
			  CASE WHEN den_sys IS NULL THEN '—' ELSE ref_cell END,
			  target,
			  CASE
				  WHEN check_on IS NULL THEN '—'
				  WHEN checked IS NULL THEN 'no figure'
				  WHEN (op = '>=' AND checked >= threshold) OR (op = '<=' AND checked <= threshold) THEN 'met'
				  ELSE '**not met**'
			  END)
FROM rows ORDER BY ord;

SELECT '';
SELECT 'Targets are judged on the median. In the churn and held-horizon rows the "baseline" column is the hand-written queue''s own figure; in the history row it is outbox on a database holding nothing but the drained topic. PgQ: one consumer (PgQ has no competing consumers), batches cut by ticks of about 100 events.'
WHERE EXISTS (SELECT 1 FROM rows);
SELECT '† a backlog ran out before the end of at least one run of this point: the figure is a lower bound.'
WHERE EXISTS (SELECT 1 FROM dry);

-- Throughput per window, churn and held horizon
SELECT E'\n### Churn and held horizon: events/s per window (median over runs)\n'
WHERE EXISTS (SELECT 1 FROM raw WHERE kase IN ('churn', 'held') AND metric ~ '^w\d+$');
WITH w AS (
	SELECT kase, sys, metric, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS v
	FROM raw WHERE kase IN ('churn', 'held') AND metric ~ '^w\d+$'
	GROUP BY 1, 2, 3
), cols AS (
	SELECT * FROM (VALUES (1, 'churn', 'outbox', 'churn: outbox'), (2, 'churn', 'queue', 'churn: hand-written queue'),
						  (3, 'held', 'outbox', 'held horizon: outbox'), (4, 'held', 'queue', 'held horizon: hand-written queue')) c(o, kase, sys, title)
	WHERE EXISTS (SELECT 1 FROM w WHERE w.kase = c.kase AND w.sys = c.sys)
)
SELECT line FROM (
	SELECT 0 AS o, '| window | ' || string_agg(title, ' | ' ORDER BY o) || ' |' AS line FROM cols
	UNION ALL
	SELECT 1, '|---|' || string_agg('--:', '|' ORDER BY o) || '|' FROM cols
	UNION ALL
	SELECT 2 + substr(m.metric, 2)::integer,
		   '| ' || substr(m.metric, 2)::integer || ' | '
		   || string_agg(coalesce(pg_temp.fmt(w.v, 'int'), '—'), ' | ' ORDER BY c.o) || ' |'
	FROM (SELECT DISTINCT metric FROM w) m CROSS JOIN cols c
	LEFT JOIN w ON w.kase = c.kase AND w.sys = c.sys AND w.metric = m.metric
	GROUP BY m.metric
) x
WHERE EXISTS (SELECT 1 FROM cols)
ORDER BY o;

-- Storage and dead tuples, churn and held horizon
SELECT E'\n### Churn and held horizon: storage and dead tuples (median over runs)\n'
WHERE EXISTS (SELECT 1 FROM raw WHERE kase IN ('churn', 'held') AND metric = 'bytes_start');
WITH m AS (
	SELECT kase, sys, metric, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS v
	FROM raw WHERE kase IN ('churn', 'held') GROUP BY 1, 2, 3
), k AS (
	SELECT DISTINCT kase, sys FROM m WHERE metric = 'bytes_start'
)
SELECT line FROM (
	SELECT 0 AS o, '| case | system | heap+index at start | at end | of which the event log at end | dead tuples at start | at end | events/s |' AS line
	UNION ALL
	SELECT 1, '|---|---|--:|--:|--:|--:|--:|--:|'
	UNION ALL
	SELECT 2 + row_number() OVER (ORDER BY k.kase, k.sys),
		   format('| %s | %s | %s | %s | %s | %s | %s | %s |',
				  CASE k.kase WHEN 'held' THEN 'held horizon' ELSE k.kase END,
				  CASE k.sys WHEN 'queue' THEN 'hand-written queue' ELSE k.sys END,
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'bytes_start')), 'MB'),
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'bytes_end')), 'MB'),
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'log_bytes_end')), 'MB'),
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'dead_start')), 'int'),
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'dead_end')), 'int'),
				  pg_temp.fmt((SELECT v FROM m WHERE (m.kase, m.sys, m.metric) = (k.kase, k.sys, 'events_s')), 'int')
					|| '/s')
	FROM k
) x
WHERE EXISTS (SELECT 1 FROM k)
ORDER BY o;

-- Decoding by a pgoutput client: its rate and the slot's backlog
SELECT E'\n### Delivery through the WAL: decoding by a pgoutput client (median over runs)\n'
WHERE EXISTS (SELECT 1 FROM raw WHERE kase = 'cdc_decode');
CREATE TEMP VIEW dec AS
SELECT point, sys, metric,
	   percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS med,
	   min(value) AS lo, max(value) AS hi
FROM raw WHERE kase = 'cdc_decode' AND run > 0 GROUP BY 1, 2, 3;
CREATE FUNCTION pg_temp.dec(p text, s text, m text, kind text) RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT coalesce((SELECT pg_temp.cell(med, lo, hi, kind) FROM dec WHERE (point, sys, metric) = (p, s, m)), '—')
$$;
WITH p AS (
	SELECT DISTINCT point, nullif(regexp_replace(point, '\D', '', 'g'), '')::integer AS n FROM dec
), r AS (
	-- run by run: read ÷ offered; flat when the backlog grew by less than
	-- 2 % of the WAL written meanwhile
	SELECT point, run,
		   max(value) FILTER (WHERE sys = 'client' AND metric = 'events_s')
			   / nullif(max(value) FILTER (WHERE sys = 'producers' AND metric = 'events_s'), 0) AS ratio,
		   max(value) FILTER (WHERE sys = 'slot' AND metric = 'slope_over_wal') AS frac,
		   max(value) FILTER (WHERE sys = 'client' AND metric = 'behind') AS behind
	FROM raw WHERE kase = 'cdc_decode' AND run > 0 GROUP BY 1, 2
), rr AS (
	SELECT point,
		   pg_temp.cell(percentile_cont(0.5) WITHIN GROUP (ORDER BY ratio), min(ratio), max(ratio), 'x') AS ratio,
		   count(*) FILTER (WHERE frac < 0.02) AS flat, count(*) AS runs,
		   count(*) FILTER (WHERE behind > 0) AS unfinished
	FROM r GROUP BY 1
)
SELECT line FROM (
	SELECT 0 AS o, '| producers | offered (events/s) | read while offering (events/s) | read ÷ offered | caught up after the producers stopped | slot backlog, median of the first half | of the second half | max | growth of the backlog (B/s) | growth ÷ WAL written | flat (grew < 2 % of the WAL written) |' AS line
	UNION ALL
	SELECT 1, '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|'
	UNION ALL
	SELECT 2 + p.n,
		   format('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s of %s runs%s |',
				  CASE WHEN p.n = 1 THEN '1 event per transaction' ELSE p.n || ' events per transaction' END,
				  pg_temp.dec(p.point, 'producers', 'events_s', 'int'),
				  pg_temp.dec(p.point, 'client', 'events_s', 'int'),
				  rr.ratio,
				  pg_temp.dec(p.point, 'client', 'catchup_s', 's'),
				  pg_temp.dec(p.point, 'slot', 'backlog_first_half', 'size'),
				  pg_temp.dec(p.point, 'slot', 'backlog_second_half', 'size'),
				  pg_temp.dec(p.point, 'slot', 'backlog_max', 'size'),
				  pg_temp.dec(p.point, 'slot', 'backlog_slope_Bps', 'int'),
				  pg_temp.dec(p.point, 'slot', 'slope_over_wal', 'pct'),
				  rr.flat, rr.runs,
				  CASE WHEN rr.unfinished > 0 THEN format('; in %s the client had not read every event 10× the run''s length after', rr.unfinished) ELSE '' END)
	FROM p JOIN rr USING (point)
) x
WHERE EXISTS (SELECT 1 FROM dec)
ORDER BY o;
