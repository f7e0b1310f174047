-- The table of the ordered and hotkey cases of bench/run.sh, in markdown,
-- from the raw figures on standard input (case, point, system, run,
-- metric, value; tab-separated).  Prints nothing if neither case ran.
\pset format unaligned
\pset tuples_only on
SET client_min_messages = warning;

CREATE TEMP TABLE raw (kase text, point text, sys text, run integer, metric text, value float8);
\copy raw FROM pstdin
DELETE FROM raw WHERE kase NOT IN ('ordered', 'hotkey');

CREATE FUNCTION pg_temp.fmt(v float8, kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE
		WHEN v IS NULL THEN '—'
		WHEN kind = 'int' THEN to_char(round(v), 'FM999G999G999G990')
		WHEN kind = 'x' THEN to_char(v, 'FM999990.00') || '×'
		WHEN kind = 'B' THEN to_char(v, 'FM999G990.0') || ' B'
		WHEN kind = 's' THEN to_char(v, 'FM999990.00') || ' s'
		WHEN kind = 'pct' THEN to_char(v * 100, 'FM990.0') || ' %'
		WHEN kind = 'dec' THEN to_char(v, 'FM999990.0')
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

CREATE FUNCTION pg_temp.meta(k text, m text) RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT to_char(max(value), 'FM999G999G999G990') FROM raw WHERE kase = k AND run = 0 AND metric = m
$$;

-- one row: num_sys against den_sys, ratio run by run
CREATE TEMP TABLE spec (ord numeric, label text, point text, kase text, metric text, num_sys text, den_sys text,
						kind text, target text, threshold float8);
INSERT INTO spec VALUES
	(1, format('ordered topic, %s keys, drain of %s events (vs an unordered topic, the same events)',
			   pg_temp.meta('ordered', 'keys'), pg_temp.meta('ordered', 'backlog')),
	 'events/s', 'ordered', 'events_s', 'ordered', 'unordered', 'int', '≥ 0.8×', 0.8),
	(1.5, format('ordered topic, %s keys, drain of %s events (vs an unordered topic, the same events)',
			   pg_temp.meta('ordered', 'keys'), pg_temp.meta('ordered', 'backlog')),
	 'events per claim', 'ordered', 'per_claim', 'ordered', 'unordered', 'dec', '—', NULL),
	(2, format('ordered topic, %s keys, drain of %s events (vs an unordered topic, the same events)',
			   pg_temp.meta('ordered', 'keys'), pg_temp.meta('ordered', 'backlog')),
	 'WAL per event', 'ordered', 'wal_per_event', 'ordered', 'unordered', 'B', '≈ 1×', NULL),
	(3, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'events/s of the other keys', 'hotkey', 'events_s', 'hot', 'cold', 'int', '≥ 0.8×', 0.8),
	(4, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'seconds until the other keys'' events are acked', 'hotkey', 'seconds', 'hot', 'cold', 's', '—', NULL),
	(3.1, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'events/s of all keys meanwhile (hot key included)', 'hotkey', 'all_events_s', 'hot', 'cold', 'int', '—', NULL),
	(3.2, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'events per claim', 'hotkey', 'per_claim', 'hot', 'cold', 'dec', '—', NULL),
	(3.3, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'hot-key events among those acked by then', 'hotkey', 'hot_share', 'hot', NULL, 'pct', '—', NULL),
	(5, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'WAL per event acked', 'hotkey', 'wal_per_event', 'hot', 'cold', 'B', '—', NULL),
	(6, format('ordered topic, %s events, every other one of one hot key, the rest over %s keys (vs the rest alone)',
			   pg_temp.meta('hotkey', 'backlog'), pg_temp.meta('hotkey', 'keys')),
	 'hot-key events acked by then', 'hotkey', 'hot_acked', 'hot', NULL, 'int', '—', NULL);
DELETE FROM spec s WHERE NOT EXISTS (SELECT 1 FROM raw r WHERE r.kase = s.kase AND r.sys = s.num_sys AND r.metric = s.metric);

CREATE TEMP VIEW stat AS
SELECT kase, sys, metric, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS med, min(value) AS lo, max(value) AS hi
FROM raw WHERE run > 0 GROUP BY 1, 2, 3;

CREATE TEMP VIEW ratio AS
SELECT s.ord, percentile_cont(0.5) WITHIN GROUP (ORDER BY n.value / nullif(d.value, 0)) AS med,
	   min(n.value / nullif(d.value, 0)) AS lo, max(n.value / nullif(d.value, 0)) AS hi
FROM spec s
JOIN raw n ON n.kase = s.kase AND n.sys = s.num_sys AND n.metric = s.metric AND n.run > 0
JOIN raw d ON d.kase = s.kase AND d.sys = s.den_sys AND d.metric = s.metric AND d.run = n.run
GROUP BY s.ord;

SELECT E'\n### Ordered topics\n' WHERE EXISTS (SELECT 1 FROM spec);
SELECT '| case | point | outbox | baseline | outbox ÷ baseline | target | result |' WHERE EXISTS (SELECT 1 FROM spec);
SELECT '|---|---|--:|--:|--:|---|---|' WHERE EXISTS (SELECT 1 FROM spec);
SELECT format('| %s | %s | %s | %s | %s | %s | %s |', s.label, s.point,
			  pg_temp.cell(n.med, n.lo, n.hi, s.kind), pg_temp.cell(d.med, d.lo, d.hi, s.kind),
			  CASE WHEN s.den_sys IS NULL THEN '—' ELSE pg_temp.cell(r.med, r.lo, r.hi, 'x') END,
			  s.target,
			  CASE WHEN s.threshold IS NULL THEN '—'
				   WHEN r.med IS NULL THEN 'no figure'
				   WHEN r.med >= s.threshold THEN 'met'
				   ELSE '**not met**' END)
FROM spec s
LEFT JOIN stat n ON (n.kase, n.sys, n.metric) = (s.kase, s.num_sys, s.metric)
LEFT JOIN stat d ON (d.kase, d.sys, d.metric) = (s.kase, s.den_sys, s.metric)
LEFT JOIN ratio r ON r.ord = s.ord
ORDER BY s.ord;
SELECT E'\nOrdered: the time from the start of the relays until the last event is acked, and the WAL written meanwhile (pg_current_wal_insert_lsn() at the start and in the transaction of that last ack; the harness''s reap and maintain included). Hotkey: the time until every event not of the hot key is acked; "baseline" is an ordered topic holding only those events.'
WHERE EXISTS (SELECT 1 FROM spec);
SELECT format('In %s point(s) an ack call counted fewer events than its batch: the figures of those points count only the batches acked whole.',
			  count(*))
FROM raw WHERE metric = 'short_acks' AND value > 0 HAVING count(*) > 0;
