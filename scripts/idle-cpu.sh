#!/usr/bin/env bash
# Measures what the outbox background workers cost an idle server: starts a
# throwaway cluster with the extension in one database, waits, then reads
# the CPU time (user + system) of the launcher and the worker from /proc
# over a window (default 60 s) and prints it as a share of one core.
#
#   scripts/idle-cpu.sh [SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
. "$ROOT/scripts/pgcluster.sh"
WINDOW=${1:-60}

bash "$ROOT/scripts/install-deps.sh"
make -s -C "$ROOT" PG_CONFIG="$PG_CONFIG" >/dev/null
${SUDO:-} make -s -C "$ROOT" PG_CONFIG="$PG_CONFIG" install >/dev/null

pgc_scratch dir idle
c="$dir/cluster"
pgc_init "$c"
pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" outbox.enabled=on
pgc_psql "$c" -d postgres -qc "SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE; SELECT outbox.create_topic('idle');" >/dev/null
sleep 5

ticks() {
	local total=0 pid
	for pid in $(pgc_psql "$c" -d postgres -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'outbox%'"); do
		# utime and stime: fields 14 and 15 of /proc/PID/stat
		total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$total"
}
procs=$(pgc_psql "$c" -d postgres -Atc "SELECT string_agg(backend_type, ', ') FROM pg_stat_activity WHERE backend_type LIKE 'outbox%'")
t0=$(ticks)
sleep "$WINDOW"
t1=$(ticks)
hz=$(getconf CLK_TCK)
awk -v d=$((t1 - t0)) -v hz="$hz" -v w="$WINDOW" -v p="$procs" 'BEGIN {
	printf "outbox workers (%s), idle for %d s: %.2f s of CPU = %.3f%% of one core\n", p, w, d / hz, 100 * d / hz / w }'
pgc_stop "$c"
