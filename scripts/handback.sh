#!/usr/bin/env bash
# Measures how long after its expiry the background worker hands an expired
# lease back, with the default outbox.reap_interval (1 s): N leases of
# 100 ms taken at random moments, each polled until its event is available
# again.  Prints the delays in milliseconds, sorted, and their median.
#
#   scripts/handback.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
. "$ROOT/scripts/pgcluster.sh"
N=${1:-20}

pgc_scratch dir handback
c="$dir/cluster"
pgc_init "$c"
pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" outbox.enabled=on
pgc_psql "$c" -d postgres -qc "SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE; SELECT outbox.create_topic('h');" >/dev/null
sleep 2
for _ in $(seq 1 "$N"); do
	pgc_psql "$c" -d postgres -XAtq <<'SQL'
SELECT pg_sleep(random());
SELECT outbox.offer('h', '{}') \gset
SELECT lease_expires_at AS exp FROM outbox.claim('h', lease => '100 ms') \gset
DO $$ BEGIN WHILE (SELECT available FROM outbox.stats WHERE topic = 'h') = 0 LOOP PERFORM pg_sleep(0.005); END LOOP; END $$;
SELECT 'ms ' || round(extract(epoch FROM clock_timestamp() - :'exp'::timestamptz) * 1000);
SELECT count(*) FROM (SELECT outbox.ack(id, lease_token) FROM outbox.claim('h', 10)) x \gset
SQL
done | sed -n 's/^ms //p' | sort -n > "$dir/ms"
echo "hand-back after expiry (ms): $(tr '\n' ' ' < "$dir/ms")"
awk '{ a[NR] = $1 } END { printf "median %d ms, max %d ms over %d leases\n", a[int((NR + 1) / 2)], a[NR], NR }' "$dir/ms"
pgc_stop "$c"
