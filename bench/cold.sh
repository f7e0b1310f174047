#!/usr/bin/env bash
# Claim cost on a log the planner knows nothing about: autovacuum off, no
# ANALYZE ever.  Fills one topic with N events (default 300000) in a single
# partition, then times claim(batch 1) + ack, one pair per transaction, from
# one client:
#   fresh     the backlog as offered
#   recovery  after an immediate restart with a lease held on the first
#             event and every third event acked beyond it, so the scan
#             must step over settled events above the watermark
# Prints milliseconds per claim+ack pair (median of 5 rounds of 200 pairs)
# for each phase.  Uses the installed extension.
#
#   bench/cold.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
. "$ROOT/scripts/pgcluster.sh"
N=${1:-300000}

pgc_scratch dir cold
c="$dir/cluster"
pgc_init "$c"
pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" autovacuum=off shared_buffers=512MB
psqlc() { pgc_psql "$c" -d postgres -XAtq "$@"; }
psqlc -c "SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE; SELECT outbox.create_topic('cold');" >/dev/null
psqlc -c "SELECT count(*) FROM outbox.offer_batch('cold', ARRAY(SELECT jsonb_build_object('n', g, 'pad', repeat('x', 150)) FROM generate_series(1, $N) g))" >/dev/null
echo "cold: $N events offered; pg_class.reltuples of the partitions: $(psqlc -c "SELECT string_agg(reltuples::bigint::text, ',') FROM pg_class WHERE relname LIKE 'event_p%' AND relkind = 'r' AND reltuples <> 0")"

# One round: 200 claim+ack pairs; prints ms per pair.
round() {
	psqlc <<'SQL'
\timing off
SELECT clock_timestamp() AS t0 \gset
DO $$
DECLARE r record;
BEGIN
	FOR i IN 1 .. 200 LOOP
		SELECT id, lease_token INTO r FROM outbox.claim('cold', 1);
		IF r.id IS NULL THEN RAISE EXCEPTION 'backlog ran dry'; END IF;
		PERFORM outbox.ack(r.id, r.lease_token);
		COMMIT;
	END LOOP;
END $$;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 / 200, 3);
SQL
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

fresh=$(for _ in 1 2 3 4 5; do round; done | tee "$dir/fresh" | median)
echo "cold: fresh     ms per claim+ack: $fresh  (rounds: $(tr '\n' ' ' < "$dir/fresh"))"

# Hold the next event, ack every third event of the next 30,000 by id, and
# crash: the watermark stays below the held event.
psqlc -c "SELECT id FROM outbox.claim('cold', 1, lease => '1 hour')" >/dev/null
psqlc <<'SQL' >/dev/null
DO $$
DECLARE r record;
BEGIN
	FOR i IN 1 .. 300 LOOP
		FOR r IN SELECT id, lease_token FROM outbox.claim('cold', 100, lease => '1 hour') LOOP
			IF r.id % 3 = 0 THEN PERFORM outbox.ack(r.id, r.lease_token); END IF;
		END LOOP;
		COMMIT;
	END LOOP;
END $$;
SQL
pgc_stop "$c"
pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" autovacuum=off shared_buffers=512MB
recovery=$(for _ in 1 2 3 4 5; do round; done | tee "$dir/recovery" | median)
echo "cold: recovery  ms per claim+ack: $recovery  (rounds: $(tr '\n' ' ' < "$dir/recovery"))"
pgc_stop "$c"
