#!/usr/bin/env bash
# A local outbox demo: builds and installs the extension, starts a server in
# /tmp/outbox-demo, creates the topic "orders", runs a producer and a consumer
# side by side for a few seconds, and prints what they did and outbox.stats.
#
#   scripts/demo.sh [--pg=VERSION] [--seconds N] [--keep]
#   scripts/demo.sh --stop
#
#   --pg=VERSION 17 or 18: the same against that PostgreSQL, in the Debian
#                chroot of scripts/pgchroot.sh (make demo PG=17); 15, the
#                machine's own, is the default
#   --seconds N  how long the producer runs (default 5)
#   --keep       leave the server running and print how to connect (15 only)
#   --stop       stop and remove a server left running by --keep
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pg_major=
case "${1:-}" in
	--pg=*) pg_major=${1#--pg=}; shift ;;
	--pg) pg_major=${2:-}; shift; [ $# -gt 0 ] && shift ;;
esac
if [ -n "$pg_major" ] && [ "$pg_major" != 15 ] && [ -z "${OUTBOX_IN_CHROOT:-}" ]; then
	for a in "$@"; do
		case "$a" in --keep|--stop)
			echo "demo: $a works with the machine's PostgreSQL 15 only: a server in the chroot ends with the demo" >&2
			exit 2 ;;
		esac
	done
	exec bash "$ROOT/scripts/in-chroot.sh" "$pg_major" scripts/demo.sh "$@"
fi
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

DIR=${OUTBOX_DEMO_DIR:-/tmp/outbox-demo}
DB=outbox_demo
SECONDS_TO_RUN=5
KEEP=0
STOP=0

usage() { sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
	case "$1" in
		--keep) KEEP=1; shift ;;
		--stop) STOP=1; shift ;;
		--seconds)
			if ! [[ "${2:-}" =~ ^[1-9][0-9]*$ ]]; then
				echo "demo: --seconds needs a positive number" >&2; exit 2
			fi
			SECONDS_TO_RUN=$2; shift 2 ;;
		-h|--help) usage; exit 0 ;;
		*) echo "demo: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done

# A demo server from an earlier run: stop it and start afresh.
had_server=0
if [ -e "$DIR/data/PG_VERSION" ]; then
	echo "demo: stopping the demo server left in $DIR"
	pgc_destroy "$DIR"
	had_server=1
elif [ -e "$DIR" ]; then
	rm -rf -- "$DIR"
fi
if [ "$STOP" = 1 ]; then
	[ "$had_server" = 1 ] || echo "demo: no demo server was left in $DIR"
	exit 0
fi

echo "==== dependencies"
bash "$ROOT/scripts/install-deps.sh"

# The extension is installed machine-wide: wait for a test run to finish.
# The lock is held only while building and installing.
echo "==== build and install"
BUILD=$(mktemp -d)
pgc_on_exit "rm -rf -- '$BUILD'"
rc=0
flock -n -E 75 -o /tmp/outbox-install.lock bash "$ROOT/scripts/build-install.sh" "$BUILD/tree" || rc=$?
if [ "$rc" = 75 ]; then
	echo "demo: waiting for a test run that holds /tmp/outbox-install.lock" >&2
	flock -o /tmp/outbox-install.lock bash "$ROOT/scripts/build-install.sh" "$BUILD/tree"
elif [ "$rc" != 0 ]; then
	exit "$rc"
fi

echo "==== demo server"
pgc_init "$DIR"
pgc_start "$DIR" --port 54399 "fsync=on" ||
	{ echo "demo: the server did not start" >&2; exit 1; }
PORT=$(pgc_port "$DIR")
HOST=$(pgc_host "$DIR")
echo "demo: server in $DIR, socket $HOST, port $PORT"

pgc_psql "$DIR" -d postgres -c "CREATE DATABASE $DB"
PGOPTIONS="-c client_min_messages=warning" pgc_psql "$DIR" -d "$DB" -f "$ROOT/scripts/demo.sql" >/dev/null
echo "demo: database $DB with topic 'orders'"

echo "==== producer and consumer, ${SECONDS_TO_RUN} s"
LOGS=$(mktemp -d)
pgc_on_exit "rm -rf -- '$LOGS'"
pgc_psql "$DIR" -d "$DB" -c "CALL demo.produce($SECONDS_TO_RUN)" >"$LOGS/producer.log" 2>&1 &
producer=$!
pgc_psql "$DIR" -d "$DB" -c "CALL demo.consume($SECONDS_TO_RUN)" >"$LOGS/consumer.log" 2>&1 &
consumer=$!
rc=0
wait "$producer" || { rc=1; echo "demo: the producer failed:" >&2; cat "$LOGS/producer.log" >&2; }
wait "$consumer" || { rc=1; echo "demo: the consumer failed:" >&2; cat "$LOGS/consumer.log" >&2; }
[ "$rc" = 0 ] || { pgc_log_tail "$DIR" 20; exit 1; }

echo "==== results"
pgc_psql "$DIR" -d "$DB" -P pager=off <<'SQL'
SELECT role,
       events,
       round(events / greatest(extract(epoch FROM finished - started), 0.001))::bigint AS events_per_s,
       round(extract(epoch FROM finished - started)::numeric, 2) AS seconds
  FROM demo.run_log ORDER BY role DESC;
SELECT (SELECT events FROM demo.run_log WHERE role = 'producer') AS produced,
       (SELECT events FROM demo.run_log WHERE role = 'consumer') AS consumed,
       (SELECT count(*) FROM demo.orders) AS orders_written;
SELECT * FROM outbox.stats;
-- latency from offer to first lease (wait) and to ack (delivery), and the
-- failures of the run
SELECT topic, claimed, acked, nacked, expired, dead_lettered,
       wait_p50, wait_p99, delivery_p50, delivery_p90, delivery_p99, delivery_max
  FROM outbox.metrics;
SQL

if [ "$KEEP" = 1 ]; then
	pgc_keep "$DIR"
	cat <<EOF
==== the demo server keeps running
  connect:  psql -h $HOST -p $PORT -U postgres $DB
  try:      SELECT outbox.offer('orders', '{"hello": "world"}');
            SELECT * FROM outbox.claim('orders', batch_size => 10);
  stop:     $ROOT/scripts/demo.sh --stop
EOF
else
	echo "demo: stopping the server (run with --keep to leave it running)"
fi
