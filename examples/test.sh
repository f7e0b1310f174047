#!/usr/bin/env bash
# Tests the example relays (examples/node/relay.js, examples/python/relay.py)
# against a throwaway server, one after the other, each on a topic of its own:
#
#   1. EVENTS events, every 10th marked to fail once; the relay publishes to
#      a file until the topic is drained, then gets SIGINT while it waits in
#      claim.  Every event is published exactly once, the marked ones on
#      their second attempt after one nack each, nothing is left available,
#      leased, delayed or dead, and the relay exits 0 within 5 s.
#   2. MORE events, published slowly to stdout; SIGTERM in the middle of a
#      batch.  The relay exits 0 within 5 s, holding no lease: what it
#      published is acked, the rest handed back with a nack.  A second run
#      (connecting with DATABASE_URL) publishes what is left, the handed-back
#      events included, and every event is published exactly once.
#
#   examples/test.sh
#
# Run alone, it takes /tmp/outbox-install.lock (the extension is installed
# machine-wide), installs what is missing and builds and installs the
# extension first.  As the suite "examples" of scripts/test.sh, which holds
# the lock and has installed the build, it uses the installed extension.
# Needs node and npm (it runs `npm ci` in a scratch copy of examples/node) and
# python3-psycopg.  Environment: EVENTS (200), MORE (400), OUTBOX_TEST_WORK
# (directory to work in).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK=/tmp/outbox-install.lock
if [ -z "${OUTBOX_INSTALL_LOCKED:-}" ]; then
	export OUTBOX_INSTALL_LOCKED=1
	rc=0
	flock -n -E 75 -o "$LOCK" bash "${BASH_SOURCE[0]}" --build || rc=$?
	[ "$rc" = 75 ] || exit "$rc"
	echo "examples: waiting for another run that holds $LOCK" >&2
	exec flock -o "$LOCK" bash "${BASH_SOURCE[0]}" --build
fi

export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

EVENTS=${EVENTS:-200}
MORE=${MORE:-400}
DB=outbox_examples
PYTHON=/usr/bin/python3
C=

fail() {
	echo "examples: FAIL: $*" >&2
	[ -z "$C" ] || pgc_log_tail "$C" 20
	exit 1
}
say() { echo "examples: $*"; }

{ command -v node && command -v npm; } >/dev/null ||
	fail "node and npm are needed for examples/node"
"$PYTHON" -c 'import psycopg' 2>/dev/null ||
	fail "psycopg 3 is needed for examples/python: apt-get install -y python3-psycopg"

parent=${OUTBOX_TEST_WORK:-}
[ -n "$parent" ] || pgc_scratch parent examples

if [ "${1:-}" = --build ]; then
	bash "$ROOT/scripts/install-deps.sh" || fail "installing dependencies failed"
	mkdir -p "$parent/examples-build"
	bash "$ROOT/scripts/build-install.sh" "$parent/examples-build/tree" ||
		fail "building or installing the extension failed"
	rm -rf -- "$parent/examples-build"
	say "built and installed the extension"
fi

OUT="$parent/examples-out"
rm -rf -- "$OUT"
mkdir -p "$OUT/node"
chmod 755 "$OUT"
pgc_on_exit "rm -rf -- '$OUT'"
cp "$ROOT/examples/node/relay.js" "$ROOT/examples/node/package.json" \
	"$ROOT/examples/node/package-lock.json" "$OUT/node/"
(cd "$OUT/node" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >"$OUT/npm.log" 2>&1 ||
	{ cat "$OUT/npm.log" >&2; fail "npm ci in examples/node failed"; }

C="$parent/examples-cluster"
[ -e "$C" ] && pgc_destroy "$C"
pgc_init "$C"
pgc_start "$C" --conf "$ROOT/test/outbox-test.conf" || fail "could not start the server"
psql_db() { pgc_psql "$C" -d "$DB" -At "$@"; }
pgc_psql "$C" -d postgres -c "CREATE DATABASE $DB" || fail "CREATE DATABASE"
PGOPTIONS="-c client_min_messages=warning" psql_db -c "CREATE EXTENSION outbox CASCADE" ||
	fail "CREATE EXTENSION"
psql_db <<'SQL' >/dev/null || fail "setup"
CREATE TABLE offered (topic text NOT NULL, id bigint PRIMARY KEY, fail boolean NOT NULL);
CREATE TABLE published (topic text NOT NULL, phase int NOT NULL, event jsonb NOT NULL);
SQL

HOST=$(pgc_host "$C")
PORT=$(pgc_port "$C")
PG_ENV=(PGHOST="$HOST" PGPORT="$PORT" PGUSER=postgres PGDATABASE="$DB")
URL_ENV=(DATABASE_URL="postgresql://postgres@/$DB?host=$HOST&port=$PORT")
# The background worker is off (test/outbox-test.conf): no lease expires
# behind the relays' backs, so every lease must end by their ack or nack.
TEST_ENV=(RELAY_RETRY_AFTER='200 milliseconds' RELAY_TEST_FAIL_FIELD=fail)

# offer TOPIC COUNT EVERY: offers COUNT events, marking every EVERY-th (0:
# none) to fail once.
offer() {
	psql_db -v topic="$1" -v n="$2" -v every="$3" <<'SQL' >/dev/null || fail "offering to $1"
INSERT INTO offered (topic, id, fail)
SELECT :'topic', outbox.offer(:'topic', jsonb_build_object('n', g, 'fail', f), key => g::text), f
  FROM generate_series(1, :n) g, LATERAL (SELECT :every > 0 AND g % greatest(:every, 1) = 0) AS m(f);
SQL
}

# start_relay LANG TOPIC FILE file|stdout LOG [VAR=VALUE...]: starts a relay
# in the background (RELAY_PID) that publishes to FILE, given as its
# argument or by redirecting its stdout.
start_relay() {
	local lang=$1 topic=$2 file=$3 mode=$4 log=$5 cmd
	shift 5
	case "$lang" in
		node) cmd=(node "$OUT/node/relay.js" "$topic") ;;
		python) cmd=("$PYTHON" "$ROOT/examples/python/relay.py" "$topic") ;;
	esac
	if [ "$mode" = file ]; then
		env "$@" "${cmd[@]}" "$file" </dev/null 2>>"$log" &
	else
		env "$@" "${cmd[@]}" </dev/null >>"$file" 2>>"$log" &
	fi
	RELAY_PID=$!
}

# stop_relay SIGNAL LOG: the relay must exit 0 within 5 s of SIGNAL.
stop_relay() {
	local sig=$1 log=$2 i rc=0 t0 ms
	t0=$(date +%s%N)
	kill -s "$sig" "$RELAY_PID"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$RELAY_PID" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$RELAY_PID" 2>/dev/null; then
		kill -KILL "$RELAY_PID"
		wait "$RELAY_PID" || true
		cat "$log" >&2
		fail "the relay did not exit within 5 s of $sig"
	fi
	wait "$RELAY_PID" || rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	if [ "$rc" != 0 ]; then
		cat "$log" >&2
		fail "the relay exited with status $rc after $sig"
	fi
	say "  $sig: exited 0 after $ms ms"
}

# stat TOPIC COLUMN: a column of outbox.stats or outbox.metrics.
stat() {
	psql_db -v topic="$1" <<<"SELECT $2 FROM outbox.stats s JOIN outbox.metrics m USING (topic)
	                          WHERE topic = :'topic'"
}

# wait_drained TOPIC LOG: waits (30 s at most) until every event offered to
# TOPIC is acked.
wait_drained() {
	local topic=$1 log=$2 i
	for ((i = 0; i < 300; i++)); do
		kill -0 "$RELAY_PID" 2>/dev/null || { cat "$log" >&2; fail "the relay exited while it had work"; }
		[ "$(psql_db -v topic="$topic" <<<"
			SELECT s.available = 0 AND s.leased = 0 AND s.delayed = 0
			       AND m.acked = (SELECT count(*) FROM offered WHERE topic = :'topic')
			  FROM outbox.stats s JOIN outbox.metrics m USING (topic) WHERE topic = :'topic'")" = t ] && return 0
		sleep 0.1
	done
	cat "$log" >&2
	fail "$topic was not drained within 30 s: $(stat "$topic" "available, leased, delayed, dead, m.acked")"
}

# load TOPIC PHASE FILE: reads the JSON lines a relay published.
load() {
	psql_db -v topic="$1" -v phase="$2" -v file="$3" <<'SQL' >/dev/null || fail "$3 holds a line that is not JSON"
INSERT INTO published (topic, phase, event)
SELECT :'topic', :phase, line::jsonb
  FROM regexp_split_to_table(pg_read_file(:'file'), E'\n') AS line
 WHERE line <> '';
SQL
}

# check TOPIC NACKS: every event offered to TOPIC was published exactly once,
# nothing else was published, the topic is empty, and NACKS nacks were made.
check() {
	PGOPTIONS="-c examples.topic=$1 -c examples.nacks=$2" psql_db <<'SQL' || fail "$1: see above"
DO $$
DECLARE
    r record;
BEGIN
    SELECT count(*) FILTER (WHERE p.n IS NULL) AS missing,
           count(*) FILTER (WHERE p.n > 1) AS twice,
           (SELECT count(*) FROM published q
             WHERE q.topic = current_setting('examples.topic')
               AND (q.event->>'id')::bigint NOT IN (SELECT id FROM offered)) AS unknown
      INTO r
      FROM offered o
      LEFT JOIN (SELECT (event->>'id')::bigint AS id, count(*) AS n FROM published
                  WHERE topic = current_setting('examples.topic') GROUP BY 1) p USING (id)
     WHERE o.topic = current_setting('examples.topic');
    IF r.missing > 0 OR r.twice > 0 OR r.unknown > 0 THEN
        RAISE EXCEPTION '% events never published, % published more than once, % published that were not offered',
            r.missing, r.twice, r.unknown;
    END IF;

    SELECT s.available, s.leased, s.delayed, s.dead, m.nacked INTO r
      FROM outbox.stats s JOIN outbox.metrics m USING (topic)
     WHERE topic = current_setting('examples.topic');
    IF r.available + r.leased + r.delayed + r.dead > 0 THEN
        RAISE EXCEPTION 'not empty: % available, % leased, % delayed, % dead',
            r.available, r.leased, r.delayed, r.dead;
    END IF;
    IF r.nacked <> current_setting('examples.nacks')::bigint THEN
        RAISE EXCEPTION '% nacks, expected %', r.nacked, current_setting('examples.nacks');
    END IF;
END
$$;
SQL
}

test_relay() {
	local lang=$1 topic=ex_$1 log="$OUT/$1.log" out1="$OUT/$1-1.jsonl" out2="$OUT/$1-2.jsonl"
	local marked handed_back published before tries
	psql_db -c "SELECT outbox.create_topic('$topic')" >/dev/null || fail "create_topic"

	say "$lang: $EVENTS events, every 10th failing once, published to a file"
	offer "$topic" "$EVENTS" 10
	marked=$(psql_db -c "SELECT count(*) FROM offered WHERE topic = '$topic' AND fail")
	start_relay "$lang" "$topic" "$out1" file "$log" "${PG_ENV[@]}" "${TEST_ENV[@]}"
	wait_drained "$topic" "$log"
	stop_relay INT "$log"
	load "$topic" 1 "$out1"
	check "$topic" "$marked"
	[ "$(psql_db -c "SELECT count(*) FROM published p JOIN offered o ON o.id = (p.event->>'id')::bigint
	                 WHERE p.topic = '$topic' AND (p.event->>'attempt')::int <> CASE WHEN o.fail THEN 2 ELSE 1 END")" = 0 ] ||
		fail "$lang: an event was published on an unexpected attempt"
	[ "$(grep -c 'simulated failure' "$log")" = "$marked" ] ||
		fail "$lang: the log does not name $marked failures"
	say "  $EVENTS published once each, $marked nacked once and published on attempt 2"

	say "$lang: $MORE events published slowly to stdout, SIGTERM mid-batch"
	offer "$topic" "$MORE" 0
	: >>"$out2"
	# A stop that falls between two batches hands nothing back: try again.
	for ((tries = 1; tries <= 3; tries++)); do
		before=$(wc -l <"$out2")
		start_relay "$lang" "$topic" "$out2" stdout "$log" "${PG_ENV[@]}" "${TEST_ENV[@]}" \
			RELAY_BATCH_SIZE=20 RELAY_TEST_PUBLISH_DELAY_MS=10
		while [ "$(wc -l <"$out2")" -lt $((before + 30)) ]; do
			kill -0 "$RELAY_PID" 2>/dev/null || { cat "$log" >&2; fail "$lang: the relay exited while it had work"; }
			sleep 0.05
		done
		stop_relay TERM "$log"
		[ "$(stat "$topic" leased)" = 0 ] || fail "$lang: the stopped relay left events leased"
		[ "$(stat "$topic" available)" -gt 0 ] || fail "$lang: the relay drained the topic before the stop; raise MORE"
		handed_back=$(($(stat "$topic" m.nacked) - marked))
		[ "$handed_back" -gt 0 ] && break
		say "  the stop fell between two batches; again"
	done
	[ "$handed_back" -gt 0 ] || fail "$lang: no stop handed anything back in 3 tries"
	published=$(wc -l <"$out2")
	grep -q "handed back $handed_back unpublished events" "$log" ||
		fail "$lang: the log does not tell of the $handed_back events handed back"
	say "  published $published, handed back $handed_back, left $(stat "$topic" available) available"

	say "$lang: the next run (DATABASE_URL) publishes the rest"
	start_relay "$lang" "$topic" "$out2" stdout "$log" "${URL_ENV[@]}" "${TEST_ENV[@]}"
	wait_drained "$topic" "$log"
	stop_relay TERM "$log"
	load "$topic" 2 "$out2"
	check "$topic" "$((marked + handed_back))"
	[ "$(psql_db -c "SELECT count(*) FROM published WHERE topic = '$topic' AND phase = 2
	                 AND (event->>'attempt')::int = 2")" = "$handed_back" ] ||
		fail "$lang: the events handed back were not published on their second attempt"
	say "  $((EVENTS + MORE)) published once each; the $handed_back handed back came again on attempt 2"
}

start=$SECONDS
test_relay node
test_relay python
say "PASS: both relays ($((SECONDS - start)) s)"
