#!/usr/bin/env bash
# Benchmarks of outbox side by side with the alternatives (issue 3).
#
#   bench/run.sh [--quick] [--runs N] [--cases LIST] [--output FILE] [--keep]
#
#   --quick        smoke run: tiny durations and sizes, one run per case; it
#                  checks that every case works and asserts nothing about
#                  speed (writes bench/out/RESULTS-quick.md)
#   --runs N       runs per case (default 3; 1 with --quick)
#   --cases LIST   comma-separated subset of: wal,offer,drain,churn,held,
#                  history,latency,topics,ordered,hotkey,cdc (default: all)
#   --output FILE  where the results go (default bench/RESULTS.md; with
#                  --cases naming fewer than all cases,
#                  bench/out/<date>/RESULTS.md, so that a partial run does
#                  not replace the full results and their charts)
#   --keep         leave the benchmark server running at the end
#
# Installs what is missing (scripts/install-deps.sh with OUTBOX_BENCH_DEPS=1),
# builds and installs the extension, starts a throwaway cluster as the
# `postgres` OS user, runs every case and prints one markdown table.  Raw
# figures and logs go to bench/out/<date>/.  bench/charts.sh then draws the
# table (PNG, gnuplot) into bench/charts/ (--quick: bench/out/; another
# --output: bench/out/<date>/charts/) and links the charts at its end.
# Every install (and the server start or CREATE EXTENSION right after it)
# holds /tmp/outbox-install.lock, which test runs hold while they run: the
# bench waits for them, and they never find its build installed in their
# midst (OUTBOX_INSTALL_LOCKED=1: the caller holds the lock already).  The
# cdc case restarts the server with wal_level = logical for its duration
# and needs Node.js and npm (it installs the npm package
# pg-logical-replication into a scratch directory).  The hotkey case
# restarts the server with a larger outbox.max_ordered_events for its
# duration (HOT_ORDERED_EVENTS below).
#
# Environment:
#   OUTBOX_BENCH_HOUSEKEEPING  loop (default): while outbox is drained the
#                  harness calls outbox.reap() every second and
#                  outbox.maintain() every 10 s, and the extension's own
#                  worker is off (outbox.enabled = off);
#                  worker: the extension's worker does it (reap every 1 s,
#                  maintenance every 10 s), no harness loop;
#                  off: neither.
#   OUTBOX_BENCH_DIR  where the cluster lives (default: a new dir in /tmp)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8

if [ -n "${MAKELEVEL:-}" ]; then
	case " $* " in
		*" --quick "*) CMDLINE="make bench-quick" ;;
		*) CMDLINE="make bench" ;;
	esac
	rest=$(printf ' %s' "$@" | sed 's/ --quick//')
	[ -n "${rest# }" ] && CMDLINE="$CMDLINE ARGS='${rest# }'"
else
	CMDLINE="bash bench/run.sh${*:+ $*}"
fi

usage() { sed -n '2,40s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

QUICK=0
RUNS=
ALL_CASES=wal,offer,drain,churn,held,history,latency,topics,ordered,hotkey,cdc
CASES=$ALL_CASES
OUTPUT=
KEEP=0
while [ $# -gt 0 ]; do
	case "$1" in
		--quick) QUICK=1; shift ;;
		--runs)
			[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --runs needs a positive number" >&2; exit 2; }
			RUNS=$2; shift 2 ;;
		--cases) CASES=${2:?}; shift 2 ;;
		--output) OUTPUT=${2:?}; shift 2 ;;
		--keep) KEEP=1; shift ;;
		-h|--help) usage; exit 0 ;;
		*) echo "bench: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done
for c in ${CASES//,/ }; do
	case "$c" in wal|offer|drain|churn|held|history|latency|topics|ordered|hotkey|cdc) ;;
		*) echo "bench: unknown case '$c'" >&2; exit 2 ;;
	esac
done
want() { [[ ",$CASES," == *",$1,"* ]]; }

HOUSEKEEPING=${OUTBOX_BENCH_HOUSEKEEPING:-loop}
case "$HOUSEKEEPING" in loop|worker|off) ;;
	*) echo "bench: OUTBOX_BENCH_HOUSEKEEPING must be loop, worker or off" >&2; exit 2 ;;
esac

# Sizes.  The full run follows issue 3; --quick only checks that it works.
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1}
	DUR=2                 # seconds per point
	CLIENTS="1 4 16"
	BACKLOG=50000         # drain: events pending before each point (at least)
	ATTEMPTS=1            # drain: no second try when a backlog runs out
	CHURN_SECS=10         # churn / held horizon: length of a run
	WINDOW=5              # churn / held horizon: throughput window
	CHURN_LIVE=20000      # churn / held horizon: events pending throughout
	HIST_DELIVERED=50000  # history: delivered events behind the topic
	HIST_OTHER=10000      # history: pending events in another topic
	LAT_EVENTS=100        # latency: events per run
	WAL_EVENTS=1000       # WAL: events per lifecycle
	TOPICS_OFFER=1000     # topics: topics offered to at random
	TOPICS_DRAIN=500      # topics: topics drained at random
	TOPICS_BACKLOG=20     # topics: pending events per topic
	TOPICS_DRAIN_SECS=2   # topics: seconds per drain point
	CDC_SECS=5            # cdc: seconds the producers offer while decoded
	KEYS_BACKLOG=50000    # ordered / hotkey: events drained per point
	KEYS_TIMEOUT=120      # ordered / hotkey: seconds a point may take at most
	HOT_ORDERED_EVENTS=131072   # hotkey: outbox.max_ordered_events
	OUTPUT=${OUTPUT:-$BENCH/out/RESULTS-quick.md}
else
	RUNS=${RUNS:-3}
	DUR=15
	CLIENTS="1 4 16"
	BACKLOG=1000000
	ATTEMPTS=3
	CHURN_SECS=180
	WINDOW=15
	CHURN_LIVE=1000000
	HIST_DELIVERED=5000000
	HIST_OTHER=1000000
	LAT_EVENTS=1000
	WAL_EVENTS=5000
	TOPICS_OFFER=10000
	TOPICS_DRAIN=5000
	TOPICS_BACKLOG=200
	TOPICS_DRAIN_SECS=5   # one topic drains 1,000,000 events in about 15 s
	CDC_SECS=30
	KEYS_BACKLOG=1000000
	KEYS_TIMEOUT=600
	# the hot key's 500,000 events are all held back behind its lease, in
	# shared memory, once the claims have read past them
	HOT_ORDERED_EVENTS=1048576
	# a run of fewer than all cases goes to bench/out/<date>/ (below)
	if [ -z "$OUTPUT" ] && [ "$(tr , '\n' <<<"$CASES" | sort -u | paste -sd,)" = "$(tr , '\n' <<<"$ALL_CASES" | sort -u | paste -sd,)" ]; then
		OUTPUT=$BENCH/RESULTS.md
	fi
fi
CHURN_CLIENTS=4
CHURN_BATCH=100
HIST_CLIENTS=4
HIST_BATCH=100
LAT_RATE=100
CDC_CLIENTS=4
KEYS_CLIENTS=4
KEYS_BATCH=100
KEYS_NKEYS=10000

# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"
BIN=$PGC_BINDIR

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$BENCH/out/$STAMP
mkdir -p "$OUT/logs" "$OUT/scripts"
OUTPUT=${OUTPUT:-$OUT/RESULTS.md}
RAW=$OUT/raw.tsv
: >"$RAW"
T0=$(date +%s)

log() { printf '[%s +%4ds] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - T0))" "$*" | tee -a "$OUT/bench.log" >&2; }
die() { log "ERROR: $*"; exit 1; }

log "bench: $CMDLINE (quick=$QUICK runs=$RUNS cases=$CASES housekeeping=$HOUSEKEEPING)"

# ---------------------------------------------------------------- setup
log "dependencies"
OUTBOX_BENCH_DEPS=1 bash "$ROOT/scripts/install-deps.sh"

# The extension is installed machine-wide, and test runs hold
# /tmp/outbox-install.lock while they run: every install, with the server
# start or CREATE EXTENSION that must see it, holds the lock (fd 9, closed
# in the server it starts).
LOCK=/tmp/outbox-install.lock
LOCKED=0
lock_install() {
	[ -z "${OUTBOX_INSTALL_LOCKED:-}" ] || return 0
	exec 9>>"$LOCK"
	if ! flock -n 9; then
		log "waiting for another run that holds $LOCK"
		flock 9
	fi
	LOCKED=1
}
unlock_install() {
	[ "$LOCKED" = 1 ] || return 0
	flock -u 9
	exec 9>&-
	LOCKED=0
}

log "build and install (make && make install in a fresh copy of the tree)"
BUILD=$(mktemp -d /tmp/outbox-bench-build.XXXXXX)
pgc_on_exit "rm -rf -- '$BUILD'"
lock_install
# what is built: HEAD, and whether the tree differs from it (others may
# commit while this runs)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain -- src include 'outbox--*.sql' outbox.control Makefile 2>/dev/null)" ] ||
	COMMIT="$COMMIT with uncommitted changes"
bash "$ROOT/scripts/build-install.sh" "$BUILD/tree" >"$OUT/logs/build.log" 2>&1 ||
	{ cat "$OUT/logs/build.log" >&2; die "build failed"; }
unlock_install

DIR=${OUTBOX_BENCH_DIR:-$(mktemp -d /tmp/outbox-bench.XXXXXX)}
[ -e "$DIR/data" ] && die "$DIR already holds a cluster"
chmod 755 "$DIR"
[ "$KEEP" = 1 ] && pgc_keep "$DIR"

# The extension is installed system-wide, where other builds may replace it
# while this runs: install this build again right before the server starts
# (it maps the library then) and right before the one CREATE EXTENSION
# (the databases are then copied from a template), holding the lock.
SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
LIBDIR=$("$PG_CONFIG" --pkglibdir)
reinstall() {
	$SUDO make -C "$BUILD/tree" --no-print-directory -s PG_CONFIG="$PG_CONFIG" install >/dev/null 2>&1 ||
		die "make install failed"
}
same_library() { cmp -s "$BUILD/tree/outbox.so" "$LIBDIR/outbox.so"; }

worker_conf=("outbox.enabled=off")
if [ "$HOUSEKEEPING" = worker ]; then
	worker_conf=("outbox.enabled=on" "outbox.reap_interval=1000" "outbox.maintenance_interval=10")
fi
SETTINGS=(shared_buffers=1GB max_wal_size=4GB checkpoint_timeout=15min
	synchronous_commit=on fsync=on max_connections=60 max_worker_processes=24
	"${worker_conf[@]}")
# server_start [name=value]...: (re)starts the server with SETTINGS and
# these, this build installed.
server_start() {
	local attempt
	pgc_stop "$DIR"
	lock_install
	for attempt in 1 2 3 4 5; do
		reinstall
		pgc_start "$DIR" --port 55432 "${SETTINGS[@]}" "$@" 9>&- || die "the server did not start"
		same_library && break
		[ "$attempt" -lt 5 ] || die "another build keeps replacing $LIBDIR/outbox.so"
		log "another build replaced outbox.so while the server started: again"
		pgc_stop "$DIR"
	done
	unlock_install
	HOST=$(pgc_host "$DIR")
	PORT=$(pgc_port "$DIR")
	export PGHOST=$HOST PGPORT=$PORT
}
log "cluster in $DIR: ${SETTINGS[*]} shared_preload_libraries='outbox'"
pgc_init "$DIR"
server_start
export PGUSER=postgres PGOPTIONS="-c client_min_messages=warning"

# psql: q DB SQL prints the unaligned result
q() {
	local db=$1; shift
	"$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "$*"
}
qf() {
	local db=$1; shift
	PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" "$@" >/dev/null
}

rec() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

# The template every benchmark database is copied from: the helpers and
# the extension, created right after installing this build.
make_template() {
	local attempt
	lock_install
	for attempt in 1 2 3 4 5; do
		q postgres "DROP DATABASE IF EXISTS bench_template" >/dev/null
		q postgres "CREATE DATABASE bench_template" >/dev/null
		reinstall
		if qf bench_template -c "CREATE EXTENSION outbox CASCADE" 2>>"$OUT/logs/template.log" &&
			same_library; then
			unlock_install
			qf bench_template -f "$BENCH/helpers.sql"
			return 0
		fi
		log "another build replaced the extension while it was created: again"
		sleep 2
	done
	die "could not create the extension from this build"
}

# mkdb DB [outbox] [plain] [queue] [pgq]: a fresh database with the
# helpers, the extension, and the systems asked for (outbox: topic 't').
mkdb() {
	local db=$1; shift
	q postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)"
	q postgres "CREATE DATABASE $db TEMPLATE bench_template"
	local s
	for s in "$@"; do
		case "$s" in
			outbox) qf "$db" -c "SELECT outbox.create_topic('t')" ;;
			plain) qf "$db" -f "$BENCH/baselines/plain.sql" ;;
			queue) qf "$db" -f "$BENCH/baselines/queue.sql" ;;
			pgq) qf "$db" -f "$BENCH/baselines/pgq.sql" ;;
		esac
	done
}
dropdb() { q postgres "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }

# script NAME [BATCH]: a pgbench script with the batch size written in, so
# that every system's statements are planned for the real LIMIT.
script() {
	local name=$1 batch=${2:-}
	local out=$OUT/scripts/$name${batch:+_$batch}.sql
	sed "s/@BATCH@/${batch:-1}/g" "$BENCH/pgbench/$name.sql" >"$out"
	echo "$out"
}

# pb DB SCRIPT CLIENTS pgbench-args...: runs pgbench; sets PB_TPS, PB_XACTS
# and PB_LOG.
PBN=0
pb() {
	local db=$1 file=$2 c=$3; shift 3
	local j=$((c < 2 ? 1 : 2))
	PBN=$((PBN + 1))
	PB_LOG=$OUT/logs/pgbench.$PBN.log
	echo "pgbench -c $c -j $j $* -f $file $db" >"$PB_LOG"
	if ! "$BIN/pgbench" -n -M prepared -c "$c" -j "$j" "$@" -f "$file" "$db" >>"$PB_LOG" 2>&1; then
		tail -20 "$PB_LOG" >&2
		die "pgbench failed (log $PB_LOG)"
	fi
	# the machine may be shared: keep its load next to the figures
	cut -d' ' -f1 /proc/loadavg >>"$OUT/load.txt"
	PB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' "$PB_LOG")
	PB_XACTS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$PB_LOG")
	[ -n "$PB_TPS" ] && [ -n "$PB_XACTS" ] || die "no result from pgbench (log $PB_LOG)"
}

checkpoint() { q postgres "CHECKPOINT"; }

# Background loops: housekeeping of outbox, or PgQ's ticker.
BG_PID=
bg_start() {
	local db=$1 kind=$2
	bg_stop
	case "$kind" in
		outbox)
			[ "$HOUSEKEEPING" = loop ] || return 0
			(
				i=0
				while :; do
					"$BIN/psql" -X -q -At -d "$db" -c "SELECT outbox.reap()" >/dev/null 2>>"$OUT/logs/housekeeping.log" || true
					if [ $((i % 10)) = 0 ]; then
						"$BIN/psql" -X -q -At -d "$db" -c "SELECT outbox.maintain()" >/dev/null 2>>"$OUT/logs/housekeeping.log" || true
					fi
					i=$((i + 1))
					sleep 1
				done
			) &
			BG_PID=$! ;;
		pgq)
			(
				while :; do
					"$BIN/psql" -X -q -At -d "$db" -c "SELECT pgq.ticker()" >/dev/null 2>>"$OUT/logs/ticker.log" || true
					sleep 1
				done
			) &
			BG_PID=$! ;;
	esac
}
bg_stop() {
	if [ -n "$BG_PID" ]; then
		kill "$BG_PID" 2>/dev/null || true
		wait "$BG_PID" 2>/dev/null || true
		BG_PID=
	fi
}
pgc_on_exit 'bg_stop'

# fill SYSTEM DB N [TOPIC]: N more pending events, through the system's API.
fill() {
	local sys=$1 db=$2 n=$3 topic=${4:-t}
	[ "$n" -gt 0 ] || return 0
	case "$sys" in
		outbox|queue)
			# two sessions, one per core
			local half=$((n / 2)) p1 p2
			q "$db" "CALL bench.fill_$sys('$topic', $half)" >/dev/null & p1=$!
			q "$db" "CALL bench.fill_$sys('$topic', $((n - half)))" >/dev/null & p2=$!
			wait "$p1" || die "fill $sys failed"
			wait "$p2" || die "fill $sys failed" ;;
		pgq)
			# one session: PgQ's ticker must not run concurrently
			q "$db" "CALL bench.fill_pgq($n)" >/dev/null ;;
	esac
}

# Progress counters: events consumed so far, events pending now.
outbox_acked() {
	q "$1" "SELECT coalesce(sum(s.acked), 0) FROM outbox._shmem_topics() s
	        JOIN outbox.topic t ON t.topic_id = s.topic_id AND t.incarnation = s.incarnation
	        WHERE t.name = '${2:-t}'"
}
outbox_pending() {
	q "$1" "SELECT coalesce(sum(s.offered - s.acked), 0) FROM outbox._shmem_topics() s
	        JOIN outbox.topic t ON t.topic_id = s.topic_id AND t.incarnation = s.incarnation
	        WHERE t.name = '${2:-t}'"
}
queue_pending() {
	q "$1" "SELECT count(*) FROM bench_queue.outbox WHERE topic = 't' AND status = 'pending'"
}
pgq_consumed() {
	q "$1" "SELECT t.tick_event_seq FROM pgq.subscription s
	        JOIN pgq.consumer c ON c.co_id = s.sub_consumer
	        JOIN pgq.tick t ON t.tick_queue = s.sub_queue AND t.tick_id = s.sub_last_tick
	        WHERE c.co_name = 'c'"
}
pgq_pending() {
	local seq
	seq=$(q "$1" "SELECT pgq.seq_getval(queue_event_seq) FROM pgq.queue WHERE queue_name = 'q'")
	echo $((seq - $(pgq_consumed "$1")))
}
pending() { "${1}_pending" "$2"; }

# rate N SECONDS
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }
# rotate LIST RUN: the list turned by RUN places, so that no system always
# goes first.
rotate() {
	local -a a=($1)
	local n=${#a[@]} r=$(($2 % ${#a[@]})) i out=()
	for ((i = 0; i < n; i++)); do out+=("${a[$(((i + r) % n))]}"); done
	echo "${out[*]}"
}

# ---------------------------------------------------------------- WAL
# Bytes of WAL per event, measured with pg_current_wal_insert_lsn() around
# a whole lifecycle, after a checkpoint, autovacuum off, nothing else
# running: (a) a plain INSERT, (b) outbox offer + claim + ack (+ the reaps
# that clear the acknowledgements away, and one maintain), (c) the
# hand-written queue insert + claim + ack.  Offers are one
# per transaction; claims in batches of 1 and of 100.
wal_now() { q wal "SELECT pg_current_wal_insert_lsn()"; }
wal_since() { q wal "SELECT pg_current_wal_insert_lsn() - '$1'::pg_lsn"; }

# wal_lifecycle SYSTEM BATCH RUN
wal_lifecycle() {
	local sys=$1 batch=$2 run=$3 n=$WAL_EVENTS lsn0 a0 skip total left
	checkpoint
	lsn0=$(wal_now)
	pb wal "$(script "${sys}_offer1")" 1 -t "$n"
	# statistics for the claim queries, as after loading; its WAL is not counted
	a0=$(wal_now)
	q wal "ANALYZE" >/dev/null
	skip=$(wal_since "$a0")
	pb wal "$(script "${sys}_drain" "$batch")" 1 -t $(((n + batch - 1) / batch))
	if [ "$sys" = outbox ]; then
		# acknowledgements go when their generation's 10 s period is over:
		# reap until they are gone, so that what that costs is counted
		q wal "DO \$\$ BEGIN FOR i IN 1 .. 3 LOOP PERFORM outbox.reap(); EXIT WHEN NOT EXISTS (SELECT 1 FROM outbox.acked); PERFORM pg_sleep(10.2 - (extract(epoch FROM clock_timestamp())::numeric % 10)); END LOOP; END \$\$" >/dev/null
		q wal "SELECT outbox.maintain()" >/dev/null
	fi
	total=$(wal_since "$lsn0")
	left=$(pending "$sys" wal)
	[ "$left" = 0 ] || die "wal: $left $sys events left undelivered"
	rec wal - "${sys}_b$batch" "$run" bytes_per_event "$(awk -v t="$total" -v s="$skip" -v n="$n" 'BEGIN { printf "%.1f", (t - s) / n }')"
}

case_wal() {
	log "case wal: $WAL_EVENTS events per lifecycle"
	q postgres "ALTER SYSTEM SET autovacuum = off" >/dev/null
	q postgres "SELECT pg_reload_conf()" >/dev/null
	local run batch lsn0
	for ((run = 1; run <= RUNS; run++)); do
		mkdb wal outbox plain queue
		checkpoint
		lsn0=$(wal_now)
		pb wal "$(script plain_offer1)" 1 -t "$WAL_EVENTS"
		rec wal - plain "$run" bytes_per_event "$(rate "$(wal_since "$lsn0")" "$WAL_EVENTS")"
		for batch in 1 100; do
			wal_lifecycle outbox "$batch" "$run"
			wal_lifecycle queue "$batch" "$run"
		done
		dropdb wal
	done
	q postgres "ALTER SYSTEM RESET autovacuum" >/dev/null
	q postgres "SELECT pg_reload_conf()" >/dev/null
	log "  wal (B/event, run by run): $(awk -F'\t' '$1 == "wal" { printf "%s %s; ", $3, $6 }' "$RAW")"
}

# ---------------------------------------------------------------- offer
# Events per second written by CLIENTS sessions, 1 per transaction (offer,
# INSERT, pgq.insert_event) and 100 per transaction (offer_batch, INSERT ...
# SELECT, 100 pgq.insert_event in one statement).
case_offer() {
	log "case offer: ${DUR}s per point, clients $CLIENTS"
	mkdb offer outbox plain pgq
	local run m c sys
	for ((run = 1; run <= RUNS; run++)); do
		for m in 1 100; do
			for c in $CLIENTS; do
				for sys in $(rotate "outbox plain pgq" "$run"); do
					checkpoint
					[ "$sys" = pgq ] && bg_start offer pgq
					pb offer "$(script "${sys}_offer$m")" "$c" -T "$DUR"
					bg_stop
					rec "offer$m" "c=$c" "$sys" "$run" events_s "$(awk -v t="$PB_TPS" -v m="$m" 'BEGIN { printf "%.1f", t * m }')"
					log "  offer $m/xact c=$c $sys run $run: $(awk -v t="$PB_TPS" -v m="$m" 'BEGIN { printf "%.0f", t * m }') events/s"
				done
			done
		done
	done
	dropdb offer
}

# ---------------------------------------------------------------- drain
# Claim + ack in separate transactions from a backlog of at least BACKLOG
# events (topped up before each point, through each system's API, to more
# than a point can consume).  Events counted in the database.
declare -A DRAINED
drain_point() {
	local db=$1 sys=$2 batch=$3 c=$4 run=$5 kase=${6:-drain$3} point=${7:-c=$4} sysname=${8:-$2}
	local key="$db:$sys:$batch" est target pend before after n file attempt left dry
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		# enough for this point: 1.5x what the same point drained before, or
		# 3x what fewer clients drained
		est=${DRAINED[$key:$c]:-}
		if [ -n "$est" ]; then
			est=$((est * 3 / 2))
		else
			est=0
			local k
			for k in "${!DRAINED[@]}"; do
				[[ "$k" == "$key:"* ]] && [ "${DRAINED[$k]}" -gt "$est" ] && est=${DRAINED[$k]}
			done
			est=$((est * 3))
		fi
		target=$((est > BACKLOG ? est : BACKLOG))
		pend=$(pending "$sys" "$db")
		if [ "$pend" -lt "$target" ]; then
			fill "$sys" "$db" $((target - pend))
			# a freshly loaded backlog: statistics as after loading
			q "$db" "ANALYZE" >/dev/null
			pend=$(pending "$sys" "$db")
		fi
		checkpoint
		case "$sys" in
			outbox) before=$(outbox_acked "$db"); file=$(script outbox_drain "$batch") ;;
			queue) before=$pend; file=$(script queue_drain "$batch") ;;
			pgq) before=$(pgq_consumed "$db"); file=$(script pgq_drain) ;;
		esac
		bg_start "$db" "$sys"
		pb "$db" "$file" "$c" -T "$DUR"
		bg_stop
		case "$sys" in
			outbox) after=$(outbox_acked "$db"); n=$((after - before)) ;;
			queue) after=$(queue_pending "$db"); n=$((before - after)) ;;
			pgq) after=$(pgq_consumed "$db"); n=$((after - before)) ;;
		esac
		left=$((pend - n))
		dry=0
		[ "$left" -ge $((c * batch)) ] || dry=1
		if [ "$dry" = 1 ]; then
			# the backlog ran out: again, with three times as much
			DRAINED[$key:$c]=$((n * 2))
			log "  $kase $point $sysname run $run: the backlog of $pend ran out$([ "$attempt" -lt "$ATTEMPTS" ] && echo ', again with more')"
			[ "$attempt" -lt "$ATTEMPTS" ] && continue
		fi
		[ "${DRAINED[$key:$c]:-0}" -ge "$n" ] || DRAINED[$key:$c]=$n
		break
	done
	rec "$kase" "$point" "$sysname" "$run" events_s "$(rate "$n" "$DUR")"
	rec "$kase" "$point" "$sysname" "$run" dry "$dry"
	log "  $kase $point $sysname run $run: $(rate "$n" "$DUR") events/s (backlog $pend at start$([ "$dry" = 1 ] && echo ', RAN DRY'))"
}

case_drain() {
	log "case drain: ${DUR}s per point, backlog >= $BACKLOG, batch 1 and 100, consumers $CLIENTS"
	mkdb drain outbox queue pgq
	fill outbox drain "$BACKLOG"
	fill queue drain "$BACKLOG"
	fill pgq drain "$BACKLOG"
	q drain "VACUUM ANALYZE" >/dev/null
	local run batch c sys
	for ((run = 1; run <= RUNS; run++)); do
		for batch in 1 100; do
			for c in $CLIENTS; do
				for sys in $(rotate "outbox queue" "$run"); do
					drain_point drain "$sys" "$batch" "$c" "$run"
				done
			done
			# PgQ: one consumer; batches are cut by ticks of about 100 events
			[ "$batch" = 100 ] && drain_point drain pgq 100 1 "$run"
		done
	done
	dropdb drain
}

# ---------------------------------------------------------------- churn
# CHURN_CLIENTS relays drain for CHURN_SECS with autovacuum at its defaults;
# each loop re-offers as many events as it acked (a third transaction), so
# the live set stays at CHURN_LIVE.  Throughput per WINDOW seconds; bytes
# and dead tuples of the system's tables at start and end.  With held=1 a
# session holds a REPEATABLE READ snapshot open for the whole run.
HOLDER_FD=
HOLDER_PID=
holder_start() {
	local db=$1 fifo=$OUT/holder.fifo
	rm -f "$fifo"; mkfifo "$fifo"
	PGAPPNAME=bench_horizon "$BIN/psql" -X -q -d "$db" <"$fifo" >"$OUT/logs/holder.log" 2>&1 &
	HOLDER_PID=$!
	exec {HOLDER_FD}>"$fifo"
	echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;" >&"$HOLDER_FD"
	local i=0
	until [ -n "$(q postgres "SELECT backend_xmin FROM pg_stat_activity WHERE application_name = 'bench_horizon' AND backend_xmin IS NOT NULL")" ]; do
		i=$((i + 1)); [ "$i" -lt 100 ] || die "the snapshot holder did not start"
		sleep 0.1
	done
}
holder_stop() {
	[ -n "$HOLDER_FD" ] || return 0
	echo "ROLLBACK;" >&"$HOLDER_FD" || true
	exec {HOLDER_FD}>&-
	wait "$HOLDER_PID" 2>/dev/null || true
	HOLDER_FD= HOLDER_PID=
	rm -f "$OUT/holder.fifo"
}
pgc_on_exit 'holder_stop'

churn_run() {
	local kase=$1 sys=$2 run=$3 db=churn_$2
	local nsp=outbox stor0 stor1 acked0 acked1 xmin_age
	[ "$sys" = queue ] && nsp=bench_queue
	mkdb "$db" "$sys"
	fill "$sys" "$db" "$CHURN_LIVE"
	q "$db" "ANALYZE" >/dev/null
	checkpoint
	[ "$kase" = held ] && holder_start "$db"
	stor0=$(q "$db" "SELECT bytes || ' ' || dead FROM bench.storage('$nsp')")
	[ "$sys" = outbox ] && acked0=$(outbox_acked "$db")
	bg_start "$db" "$sys"
	pb "$db" "$(script "${sys}_churn" "$CHURN_BATCH")" "$CHURN_CLIENTS" -T "$CHURN_SECS" --progress="$WINDOW"
	bg_stop
	sleep 1   # let the last statistics reach the collector
	stor1=$(q "$db" "SELECT bytes || ' ' || dead FROM bench.storage('$nsp')")
	if [ "$kase" = held ]; then
		xmin_age=$(q postgres "SELECT age(backend_xmin) FROM pg_stat_activity WHERE application_name = 'bench_horizon'")
		[ -n "$xmin_age" ] || die "the snapshot holder went away during the run"
		rec "$kase" - "$sys" "$run" horizon_age_xids "$xmin_age"
		holder_stop
	fi
	# windows: events/s = transactions/s x batch (the live set never runs out)
	local w=0 first= last= sum=0 v
	while read -r v; do
		w=$((w + 1))
		v=$(awk -v t="$v" -v b="$CHURN_BATCH" 'BEGIN { printf "%.1f", t * b }')
		rec "$kase" - "$sys" "$run" "w$(printf '%02d' "$w")" "$v"
		[ -n "$first" ] || first=$v
		last=$v
	done < <(sed -n 's/^progress: [0-9.]* s, \([0-9.]*\) tps.*/\1/p' "$PB_LOG" | head -n $((CHURN_SECS / WINDOW)))
	[ "$w" -ge 2 ] || die "$kase: no throughput windows in $PB_LOG"
	rec "$kase" - "$sys" "$run" first_events_s "$first"
	rec "$kase" - "$sys" "$run" last_events_s "$last"
	rec "$kase" - "$sys" "$run" last_over_first "$(awk -v a="$last" -v b="$first" 'BEGIN { printf "%.4f", a / b }')"
	rec "$kase" - "$sys" "$run" events_s "$(awk -v t="$PB_TPS" -v b="$CHURN_BATCH" 'BEGIN { printf "%.1f", t * b }')"
	rec "$kase" - "$sys" "$run" bytes_start "${stor0% *}"
	rec "$kase" - "$sys" "$run" bytes_end "${stor1% *}"
	rec "$kase" - "$sys" "$run" bytes_ratio "$(awk -v a="${stor1% *}" -v b="${stor0% *}" 'BEGIN { printf "%.4f", a / b }')"
	rec "$kase" - "$sys" "$run" dead_start "${stor0#* }"
	rec "$kase" - "$sys" "$run" dead_end "${stor1#* }"
	if [ "$sys" = outbox ]; then
		acked1=$(outbox_acked "$db")
		rec "$kase" - "$sys" "$run" acked_events_s "$(rate $((acked1 - acked0)) "$CHURN_SECS")"
		rec "$kase" - "$sys" "$run" log_bytes_end "$(q "$db" "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'outbox.event'::regclass")"
	fi
	log "  $kase $sys run $run: first $first, last $last events/s; bytes ${stor0% *} -> ${stor1% *}; dead ${stor0#* } -> ${stor1#* }"
	dropdb "$db"
}

case_churn() {
	local kase=$1 run sys
	log "case $kase: ${CHURN_SECS}s, $CHURN_CLIENTS relays, batch $CHURN_BATCH, live set $CHURN_LIVE$([ "$kase" = held ] && echo ', an old snapshot held open')"
	for ((run = 1; run <= RUNS; run++)); do
		for sys in $(rotate "outbox queue" "$run"); do
			churn_run "$kase" "$sys" "$run"
		done
	done
}

# ---------------------------------------------------------------- history
# Claim + ack rate (HIST_CLIENTS relays, batch HIST_BATCH) on a topic with
# HIST_DELIVERED delivered events behind it and HIST_OTHER pending in
# another topic, against the same on a database holding nothing else.
case_history() {
	log "case history: $HIST_DELIVERED delivered + $HIST_OTHER pending elsewhere vs an empty database"
	mkdb hist outbox
	mkdb hist_empty outbox
	q hist "SELECT outbox.create_topic('other')" >/dev/null
	fill outbox hist "$HIST_DELIVERED"
	q hist "VACUUM ANALYZE" >/dev/null
	log "  history: delivering $HIST_DELIVERED events"
	local p1 p2
	q hist "CALL bench.drain_outbox('t')" >/dev/null & p1=$!
	q hist "CALL bench.drain_outbox('t')" >/dev/null & p2=$!
	wait "$p1" || die "history: drain failed"
	wait "$p2" || die "history: drain failed"
	[ "$(outbox_pending hist)" = 0 ] || die "history: events left undelivered"
	q hist "SELECT outbox.reap()" >/dev/null
	q hist "SELECT outbox.maintain()" >/dev/null
	fill outbox hist "$HIST_OTHER" other
	q hist "VACUUM ANALYZE" >/dev/null
	rec history - history 0 delivered_behind "$(outbox_acked hist)"
	rec history - history 0 pending_other "$(outbox_pending hist other)"
	local run which
	for ((run = 1; run <= RUNS; run++)); do
		for which in $(rotate "history empty" "$run"); do
			if [ "$which" = history ]; then
				drain_point hist outbox "$HIST_BATCH" "$HIST_CLIENTS" "$run" history "batch $HIST_BATCH, $HIST_CLIENTS relays" history
			else
				drain_point hist_empty outbox "$HIST_BATCH" "$HIST_CLIENTS" "$run" history "batch $HIST_BATCH, $HIST_CLIENTS relays" empty
			fi
		done
	done
	dropdb hist
	dropdb hist_empty
}

# ---------------------------------------------------------------- latency
# One producer offers LAT_EVENTS events at LAT_RATE/s, one per transaction;
# one relay waits in claim(wait => '1 second').  Latency: from the producer
# issuing COMMIT to claim returning the event (both clocks are the server's).
case_latency() {
	log "case latency: $LAT_EVENTS events at $LAT_RATE/s, claim(wait => '1 second')"
	mkdb lat outbox
	local run cons secs
	secs=$((LAT_EVENTS / LAT_RATE + 60))
	for ((run = 1; run <= RUNS; run++)); do
		q lat "TRUNCATE bench.lat_sent, bench.lat_recv" >/dev/null
		q lat "CALL bench.lat_consume('t', $LAT_EVENTS, '1 second', '$secs seconds')" >/dev/null & cons=$!
		sleep 1
		q lat "CALL bench.lat_produce('t', $LAT_EVENTS, $LAT_RATE)" >/dev/null
		wait "$cons" || die "latency: the consumer failed"
		local res
		res=$(q lat "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		             FROM (SELECT extract(epoch FROM r.at - s.at) * 1000 AS ms
		                   FROM bench.lat_sent s JOIN bench.lat_recv r USING (id)) x")
		IFS='|' read -r cnt p50 p99 pmax <<<"$res"
		[ "$cnt" = "$LAT_EVENTS" ] || die "latency: $cnt of $LAT_EVENTS events received"
		rec latency - outbox "$run" p50_ms "$p50"
		rec latency - outbox "$run" p99_ms "$p99"
		rec latency - outbox "$run" max_ms "$pmax"
		log "  latency run $run: p50 $p50 ms, p99 $p99 ms, max $pmax ms"
	done
	dropdb lat
}

# ---------------------------------------------------------------- topics
# Many more topics than shared slots (outbox.max_topics at its default of
# 256).  Offer: 4 clients, one event per transaction, to TOPICS_OFFER topics
# chosen at random vs to one topic.  Drain: 4 relays claim 10 and ack, from
# TOPICS_DRAIN topics chosen at random that each hold TOPICS_BACKLOG events
# vs from one topic holding them all.
topics_acked() {
	q "$1" "SELECT coalesce(sum(s.acked), 0) FROM outbox._shmem_topics() s
	        JOIN outbox.topic t ON t.topic_id = s.topic_id AND t.incarnation = s.incarnation
	        WHERE t.name $2"
}
case_topics() {
	log "case topics: offer to $TOPICS_OFFER topics, drain $TOPICS_DRAIN topics of $TOPICS_BACKLOG events, ${DUR}s per point, 4 clients"
	mkdb topics outbox
	q topics "SELECT count(outbox.create_topic('m' || i)) FROM generate_series(1, $TOPICS_OFFER) i" >/dev/null
	q topics "ANALYZE" >/dev/null
	local run sys many one before after per=$TOPICS_BACKLOG total=$((TOPICS_DRAIN * TOPICS_BACKLOG))
	many=$OUT/scripts/outbox_offer_topics.sql
	sed "s/@TOPICS@/$TOPICS_OFFER/g" "$BENCH/pgbench/outbox_offer_topics.sql" >"$many"
	for ((run = 1; run <= RUNS; run++)); do
		for sys in $(rotate "one many" "$run"); do
			checkpoint
			if [ "$sys" = one ]; then
				pb topics "$(script outbox_offer1)" 4 -T "$DUR"
			else
				pb topics "$many" 4 -T "$DUR"
			fi
			rec topics_offer c=4 "$sys" "$run" events_s "$PB_TPS"
			log "  topics offer c=4 $sys run $run: $PB_TPS events/s"
		done
	done
	rec topics_offer c=4 many 0 topics "$TOPICS_OFFER"
	dropdb topics

	many=$OUT/scripts/outbox_drain_topics.sql
	sed "s/@TOPICS@/$TOPICS_DRAIN/g" "$BENCH/pgbench/outbox_drain_topics.sql" >"$many"
	for ((run = 1; run <= RUNS; run++)); do
		mkdb topics outbox
		q topics "SELECT count(outbox.create_topic('m' || i)) FROM generate_series(1, $TOPICS_DRAIN) i" >/dev/null
		q topics "SELECT count(*) FROM generate_series(1, $TOPICS_DRAIN) i,
		          LATERAL outbox.offer_batch('m' || i, array_fill('{}'::jsonb, ARRAY[$per]))" >/dev/null
		q topics "SELECT count(*) FROM generate_series(1, $TOPICS_DRAIN) i,
		          LATERAL outbox.offer_batch('t', array_fill(jsonb_build_object('i', i), ARRAY[$per]))" >/dev/null
		[ "$(pending outbox topics)" = "$total" ] || die "topics: the backlog of t is not $total events"
		q topics "VACUUM ANALYZE" >/dev/null
		for sys in $(rotate "one many" "$run"); do
			checkpoint
			if [ "$sys" = one ]; then
				before=$(topics_acked topics "= 't'")
				bg_start topics outbox
				pb topics "$(script outbox_drain 10)" 4 -T "$TOPICS_DRAIN_SECS"
				bg_stop
				after=$(topics_acked topics "= 't'")
			else
				before=$(topics_acked topics "LIKE 'm%'")
				bg_start topics outbox
				pb topics "$many" 4 -T "$TOPICS_DRAIN_SECS"
				bg_stop
				after=$(topics_acked topics "LIKE 'm%'")
			fi
			if [ $((after - before)) -ge "$total" ]; then
				log "  topics drain $sys run $run: RAN DRY"
				rec topics_drain c=4 "$sys" "$run" dry 1
			fi
			rec topics_drain c=4 "$sys" "$run" events_s "$(rate $((after - before)) "$TOPICS_DRAIN_SECS")"
			log "  topics drain c=4 $sys run $run: $(rate $((after - before)) "$TOPICS_DRAIN_SECS") events/s"
		done
		dropdb topics
	done
	rec topics_drain c=4 many 0 topics "$TOPICS_DRAIN"
}

# ---------------------------------------------------------------- ordered, hotkey
# Ordered topics.  Each point: KEYS_CLIENTS relays (claim KEYS_BATCH, then
# ack the batch with one ack(ids[]) call, pgbench/outbox_drain_keys.sql)
# drain a backlog loaded before it, until a given number of events not of
# the hot key are acked; the relays note each batch with the time and the
# WAL position (bench_keys.done, unlogged), so that the moment that number
# was reached, and the WAL written until then, are exact.  Housekeeping as
# in drain.
#   ordered: KEYS_BACKLOG events over KEYS_NKEYS keys (event i has key
#            i % KEYS_NKEYS) in an ordered topic, against the same events
#            in an unordered topic: events/s and WAL per event.
#   hotkey:  an ordered topic whose backlog of KEYS_BACKLOG events has
#            every other event of key 'hot' and the others over KEYS_NKEYS
#            keys, against an ordered topic holding only those other
#            events (KEYS_BACKLOG / 2): the time until all events not of
#            the hot key are acked.  The server runs with
#            outbox.max_ordered_events = HOT_ORDERED_EVENTS for it.

# keys_db DB ORDERED: a fresh database with topic 't' and the helpers
keys_db() {
	mkdb "$1"
	qf "$1" -f "$BENCH/keys.sql" -c "SELECT outbox.create_topic('t', ordered => $2)"
}

# keys_fill DB N HOT: events 0 .. N-1 of bench_keys.fill, two sessions
keys_fill() {
	local db=$1 n=$2 hot=$3 half=$(($2 / 2)) p1 p2
	q "$db" "CALL bench_keys.fill('t', 0, $half, $KEYS_NKEYS, $hot)" >/dev/null & p1=$!
	q "$db" "CALL bench_keys.fill('t', $half, $((n - half)), $KEYS_NKEYS, $hot)" >/dev/null & p2=$!
	wait "$p1" || die "keys: fill of $db failed"
	wait "$p2" || die "keys: fill of $db failed"
	[ "$(outbox_pending "$db")" = "$n" ] || die "keys: $db holds $(outbox_pending "$db") pending events, not $n"
	q "$db" "VACUUM ANALYZE" >/dev/null
}

# keys_point DB KASE POINT SYS RUN TARGET: drain DB until TARGET events not
# of the hot key are acked; records events_s (TARGET per second),
# all_events_s (events acked per second, hot ones included), wal_per_event
# (WAL per event acked meanwhile, hot ones included), hot_acked and
# hot_share (hot events acked meanwhile, and their share of all acked),
# and per_claim (events per claim that returned any, until then).
keys_point() {
	local db=$1 kase=$2 point=$3 sys=$4 run=$5 target=$6
	local file start log pid i got res secs wal acked hot short per
	file=$(script outbox_drain_keys "$KEYS_BATCH")
	q "$db" "TRUNCATE bench_keys.done" >/dev/null
	checkpoint
	bg_start "$db" outbox
	start=$(q "$db" "SELECT clock_timestamp() || '|' || pg_current_wal_insert_lsn()")
	PBN=$((PBN + 1))
	log=$OUT/logs/pgbench.$PBN.log
	echo "pgbench -c $KEYS_CLIENTS -j 2 -T $KEYS_TIMEOUT -f $file $db (stopped once $target events not of the hot key are acked)" >"$log"
	"$BIN/pgbench" -n -M prepared -c "$KEYS_CLIENTS" -j 2 -T "$KEYS_TIMEOUT" -f "$file" "$db" >>"$log" 2>&1 &
	pid=$!
	i=0
	while :; do
		sleep 0.2
		got=$(q "$db" "SELECT coalesce(sum(m), 0) FROM bench_keys.done")
		[ "$got" -ge "$target" ] && break
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -20 "$log" >&2
			die "$kase: the relays stopped with $got of $target events acked (log $log)"
		fi
	done
	# (SIGTERM: a background job of a script ignores SIGINT)
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	bg_stop
	cut -d' ' -f1 /proc/loadavg >>"$OUT/load.txt"
	# the batch whose ack made TARGET, and what was acked until then
	res=$(q "$db" "WITH s AS (SELECT split_part('$start', '|', 1)::timestamptz AS t0, split_part('$start', '|', 2)::pg_lsn AS l0),
	               d AS (SELECT d.*, sum(d.m) OVER w AS cm, sum(d.acked) OVER w AS ca
	                     FROM bench_keys.done d WINDOW w AS (ORDER BY d.at, d.lsn ROWS UNBOUNDED PRECEDING))
	               SELECT extract(epoch FROM d.at - s.t0), d.lsn - s.l0, d.ca, d.ca - d.cm,
	                      (SELECT count(*) FROM bench_keys.done x WHERE x.acked <> x.n),
	                      (SELECT round(avg(x.n), 1) FROM bench_keys.done x WHERE (x.at, x.lsn) <= (d.at, d.lsn))
	               FROM d, s WHERE d.cm >= $target ORDER BY d.at, d.lsn LIMIT 1")
	IFS='|' read -r secs wal acked hot short per <<<"$res"
	[ "$short" = 0 ] || log "  $kase $point $sys run $run: $short ack calls acked fewer events than their batch"
	rec "$kase" "$point" "$sys" "$run" events_s "$(rate "$target" "$secs")"
	rec "$kase" "$point" "$sys" "$run" seconds "$secs"
	rec "$kase" "$point" "$sys" "$run" all_events_s "$(rate "$acked" "$secs")"
	rec "$kase" "$point" "$sys" "$run" per_claim "$per"
	rec "$kase" "$point" "$sys" "$run" hot_share "$(awk -v h="$hot" -v n="$acked" 'BEGIN { printf "%.4f", h / n }')"
	rec "$kase" "$point" "$sys" "$run" wal_per_event "$(awk -v w="$wal" -v n="$acked" 'BEGIN { printf "%.1f", w / n }')"
	rec "$kase" "$point" "$sys" "$run" hot_acked "$hot"
	rec "$kase" "$point" "$sys" "$run" short_acks "$short"
	log "  $kase $point $sys run $run: $target events in $secs s, $(rate "$target" "$secs") events/s; WAL $(awk -v w="$wal" -v n="$acked" 'BEGIN { printf "%.1f", w / n }') B per event acked; $hot hot events acked meanwhile; $per events per claim"
}

case_ordered() {
	log "case ordered: $KEYS_BACKLOG events over $KEYS_NKEYS keys, ordered topic vs unordered; $KEYS_CLIENTS relays, claim $KEYS_BATCH + ack"
	local run sys point="batch $KEYS_BATCH, $KEYS_CLIENTS relays"
	for ((run = 1; run <= RUNS; run++)); do
		keys_db ord true
		keys_db unord false
		keys_fill ord "$KEYS_BACKLOG" false
		keys_fill unord "$KEYS_BACKLOG" false
		for sys in $(rotate "ordered unordered" "$run"); do
			if [ "$sys" = ordered ]; then
				keys_point ord ordered "$point" ordered "$run" "$KEYS_BACKLOG"
			else
				keys_point unord ordered "$point" unordered "$run" "$KEYS_BACKLOG"
			fi
		done
		dropdb ord
		dropdb unord
	done
	rec ordered - keys 0 keys "$KEYS_NKEYS"
	rec ordered - keys 0 backlog "$KEYS_BACKLOG"
}

case_hotkey() {
	log "case hotkey: $KEYS_BACKLOG events, half of key 'hot', the rest over $KEYS_NKEYS keys, vs that rest alone; outbox.max_ordered_events = $HOT_ORDERED_EVENTS"
	server_start "outbox.max_ordered_events=$HOT_ORDERED_EVENTS"
	[ "$(q postgres "SHOW outbox.max_ordered_events")" = "$HOT_ORDERED_EVENTS" ] ||
		die "hotkey: outbox.max_ordered_events is not $HOT_ORDERED_EVENTS"
	local run sys point="batch $KEYS_BATCH, $KEYS_CLIENTS relays" other=$((KEYS_BACKLOG / 2))
	for ((run = 1; run <= RUNS; run++)); do
		keys_db hot true
		keys_db cold true
		keys_fill hot "$KEYS_BACKLOG" true
		keys_fill cold "$other" false
		for sys in $(rotate "hot cold" "$run"); do
			if [ "$sys" = hot ]; then
				keys_point hot hotkey "$point" hot "$run" "$other"
			else
				keys_point cold hotkey "$point" cold "$run" "$other"
			fi
		done
		dropdb hot
		dropdb cold
	done
	rec hotkey - keys 0 keys "$KEYS_NKEYS"
	rec hotkey - keys 0 backlog "$KEYS_BACKLOG"
	rec hotkey - keys 0 max_ordered_events "$HOT_ORDERED_EVENTS"
	# the next cases run on the server as it was
	server_start
}

# ---------------------------------------------------------------- cdc
# Delivery through the WAL and capture triggers, on the server restarted
# with wal_level = logical (every point of the case, baselines included):
#  1. offer to topic 't' with delivery 'wal' (a pgoutput slot exists and is
#     advanced to the end of the WAL between points) vs the plain INSERT of
#     baseline 1, 1 and 100 events per transaction, CDC_CLIENTS clients;
#  2. an INSERT into a table captured into topic 'cap' (outbox.capture) vs
#     the same INSERT with an offer to topic 'exp' in the same statement
#     (WITH ... INSERT ... RETURNING, then offer or offer_batch of
#     {"op","before","after"}), 1 and 100 rows per statement;
#  3. bytes of WAL per event of each, in one client over WAL_EVENTS events;
#  4. decoding: CDC_CLIENTS producers offer to 't' for CDC_SECS while a
#     pgoutput client (bench/cdc_client.js, npm pg-logical-replication)
#     streams the slot, with messages on, and confirms what it has read;
#     events it reads per second, and the slot's backlog
#     (pg_current_wal_lsn() - confirmed_flush_lsn) every second.
CDC_SLOT=bench_cdc
CDC_PUB=bench_cdc
CDC_NPM=
CDC_CLIENT_VERSION=
CDC_PID=
CDC_SAMPLER=

cdc_client_stop() {
	if [ -n "$CDC_SAMPLER" ]; then
		kill "$CDC_SAMPLER" 2>/dev/null || true
		wait "$CDC_SAMPLER" 2>/dev/null || true
		CDC_SAMPLER=
	fi
	if [ -n "$CDC_PID" ]; then
		kill -TERM "$CDC_PID" 2>/dev/null || true
		wait "$CDC_PID" 2>/dev/null || true
		CDC_PID=
	fi
}
pgc_on_exit 'cdc_client_stop'

cdc_node_setup() {
	{ command -v node && command -v npm; } >/dev/null || die "cdc: needs Node.js and npm (scripts/install-deps.sh)"
	CDC_NPM=$(mktemp -d /tmp/outbox-bench-npm.XXXXXX)
	pgc_on_exit "rm -rf -- '$CDC_NPM'"
	log "  cdc: npm install --prefix $CDC_NPM pg-logical-replication@2.5"
	npm install --prefix "$CDC_NPM" --no-audit --no-fund --loglevel=error pg-logical-replication@2.5 \
		>"$OUT/logs/npm.log" 2>&1 || { cat "$OUT/logs/npm.log" >&2; die "cdc: npm install failed"; }
	cp "$BENCH/cdc_client.js" "$CDC_NPM/"
	CDC_CLIENT_VERSION=$(cd "$CDC_NPM" && node -p "require('pg-logical-replication/package.json').version")
}

# The slot's reader is gone between points: move the slot to the end of the
# WAL, so that the checkpoint before the next point can recycle what was
# written (that decodes it; it is not timed).
# (A client confirms the end of the last commit it read, plus one: the slot
# may be ahead of the WAL's end by a byte.)
cdc_advance() {
	q cdc "SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots
	       WHERE slot_name = '$CDC_SLOT' AND confirmed_flush_lsn < pg_current_wal_lsn()" >/dev/null
}

topic_offered() {
	q "$1" "SELECT coalesce(sum(s.offered), 0) FROM outbox._shmem_topics() s
	        JOIN outbox.topic t ON t.topic_id = s.topic_id AND t.incarnation = s.incarnation
	        WHERE t.name = '$2'"
}

# cdc_point KASE SYS SCRIPT M RUN: CDC_CLIENTS clients for DUR seconds
cdc_point() {
	local kase=$1 sys=$2 file=$3 m=$4 run=$5 v
	cdc_advance
	checkpoint
	pb cdc "$(script "$file")" "$CDC_CLIENTS" -T "$DUR"
	v=$(awk -v t="$PB_TPS" -v m="$m" 'BEGIN { printf "%.1f", t * m }')
	rec "$kase$m" "c=$CDC_CLIENTS" "$sys" "$run" events_s "$v"
	log "  $kase $m/xact c=$CDC_CLIENTS $sys run $run: ${v%.*} events/s"
}

# cdc_wal_point SYS SCRIPT M RUN: bytes of WAL per event, one client
cdc_wal_point() {
	local sys=$1 file=$2 m=$3 run=$4 lsn0 v
	cdc_advance
	checkpoint
	lsn0=$(q cdc "SELECT pg_current_wal_insert_lsn()")
	pb cdc "$(script "$file")" 1 -t $((WAL_EVENTS / m))
	v=$(rate "$(q cdc "SELECT pg_current_wal_insert_lsn() - '$lsn0'::pg_lsn")" $((WAL_EVENTS / m * m)))
	rec cdc_wal "m=$m" "$sys" "$run" bytes_per_event "$v"
	log "  cdc WAL $m/xact $sys run $run: $v B/event"
}

# cdc_decode_point M RUN
cdc_decode_point() {
	local m=$1 run=$2 i t0 t1 t2 o0 offered got behind
	local clog=$OUT/logs/cdc_client.$run.$m.log samples=$OUT/logs/cdc_backlog.$run.$m.tsv first=$OUT/logs/cdc_first.$run.$m.json
	cdc_advance
	checkpoint
	: >"$clog"
	(cd "$CDC_NPM" && PGDATABASE=cdc exec node cdc_client.js "$CDC_SLOT" "$CDC_PUB" "$first") >"$clog" 2>&1 &
	CDC_PID=$!
	i=0
	until grep -q '^start$' "$clog"; do
		kill -0 "$CDC_PID" 2>/dev/null || { cat "$clog" >&2; die "cdc: the pgoutput client failed"; }
		i=$((i + 1)); [ "$i" -lt 300 ] || die "cdc: the pgoutput client did not start"
		sleep 0.1
	done
	# the backlog every second, while the producers run
	: >"$samples"
	(
		while :; do
			"$BIN/psql" -X -q -At -F ' ' -d cdc -c "SELECT extract(epoch FROM clock_timestamp()), greatest(pg_current_wal_lsn() - confirmed_flush_lsn, 0), pg_current_wal_lsn() - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$CDC_SLOT'" >>"$samples" 2>>"$OUT/logs/cdc_sampler.log" || true
			sleep 1
		done
	) &
	CDC_SAMPLER=$!
	o0=$(topic_offered cdc t)
	t0=$(date +%s.%N)
	pb cdc "$(script "outbox_offer$m")" "$CDC_CLIENTS" -T "$CDC_SECS"
	t1=$(date +%s.%N)
	kill "$CDC_SAMPLER" 2>/dev/null || true
	wait "$CDC_SAMPLER" 2>/dev/null || true
	CDC_SAMPLER=
	offered=$(($(topic_offered cdc t) - o0))
	# until the client has read every event, for at most 10 times as long
	i=0
	while :; do
		got=$(awk 'NF == 4 { n = $2 } END { print n + 0 }' "$clog")
		[ "$got" -ge "$offered" ] && break
		kill -0 "$CDC_PID" 2>/dev/null || { cat "$clog" >&2; die "cdc: the pgoutput client failed"; }
		i=$((i + 1)); [ "$i" -lt $((CDC_SECS * 100 + 3000)) ] || break
		sleep 0.1
	done
	t2=$(awk -v o="$offered" 'NF == 4 && $2 >= o { print $1; exit }' "$clog")
	cdc_client_stop
	behind=$((offered - got))
	node -e "const j = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
	         if (j.aggregatetype !== 't' || typeof j.id !== 'number' || typeof j.payload !== 'object') process.exit(1)" "$first" ||
		die "cdc: the first message read is not an event of topic t: $(head -c 300 "$first")"
	[ "$got" -le "$offered" ] || log "  cdc decode: the client read $got messages of $offered events offered"
	local res
	res=$(awk -v t0="$t0" -v t1="$t1" -v t2="${t2:-}" -v offered="$offered" -v clog="$clog" '
		function median(a, k,   i, j, v) {   # of a[1..k], sorted in place
			for (i = 2; i <= k; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
			return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
		}
		# the client: events read by t0 and by t1
		FILENAME == clog { if (NF == 4) { if ($1 <= t0) a = $2; if ($1 <= t1) b = $2 } next }
		# samples: time, backlog, WAL position
		NF == 3 && $1 >= t0 && $1 <= t1 { n++; x[n] = $1 - t0; y[n] = $2; w[n] = $3 }
		END {
			secs = t1 - t0
			if (n < 2) { print "ERROR"; exit }
			sx = sy = sxx = sxy = 0; max = 0
			for (i = 1; i <= n; i++) { sx += x[i]; sy += y[i]; sxx += x[i] * x[i]; sxy += x[i] * y[i]; if (y[i] > max) max = y[i] }
			slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
			walrate = (w[n] - w[1]) / (x[n] - x[1])
			# medians of the first and the second half of the samples
			h = int(n / 2)
			for (i = 1; i <= h; i++) f[i] = y[i]
			for (i = h + 1; i <= n; i++) s[i - h] = y[i]
			printf "%.1f %.1f %s %.0f %.0f %.0f %.1f %.1f %.5f\n",
				offered / secs, (b - a) / secs, (t2 == "" ? "-1" : sprintf("%.2f", (t2 > t1 ? t2 - t1 : 0))),
				median(f, h), median(s, n - h), max, slope, walrate, (walrate > 0 ? slope / walrate : 0)
		}' "$clog" "$samples")
	[ "$res" != ERROR ] || die "cdc: fewer than 2 backlog samples ($samples)"
	local produced read catchup b1 b2 bmax slope walrate frac
	read -r produced read catchup b1 b2 bmax slope walrate frac <<<"$res"
	rec cdc_decode "m=$m" producers "$run" events_s "$produced"
	rec cdc_decode "m=$m" client "$run" events_s "$read"
	[ "$catchup" = -1 ] || rec cdc_decode "m=$m" client "$run" catchup_s "$catchup"
	rec cdc_decode "m=$m" client "$run" behind "$behind"
	rec cdc_decode "m=$m" slot "$run" backlog_first_half "$b1"
	rec cdc_decode "m=$m" slot "$run" backlog_second_half "$b2"
	rec cdc_decode "m=$m" slot "$run" backlog_max "$bmax"
	rec cdc_decode "m=$m" slot "$run" backlog_slope_Bps "$slope"
	rec cdc_decode "m=$m" slot "$run" wal_Bps "$walrate"
	rec cdc_decode "m=$m" slot "$run" slope_over_wal "$frac"
	log "  cdc decode $m/xact run $run: offered $produced/s, read $read/s while offering; caught up $catchup s after; backlog median ${b1} -> ${b2} B, max $bmax B, slope $slope B/s ($frac of the WAL rate $walrate B/s)$([ "$behind" -gt 0 ] && echo "; $behind EVENTS NOT READ")"
}

case_cdc() {
	log "case cdc: wal_level = logical, ${DUR}s per point, $CDC_CLIENTS clients; decoding ${CDC_SECS}s"
	cdc_node_setup
	log "  cdc: restarting the server with wal_level = logical"
	server_start wal_level=logical
	[ "$(q postgres "SHOW wal_level")" = logical ] || die "cdc: wal_level is not logical"
	local run m sys capture
	for ((run = 1; run <= RUNS; run++)); do
		mkdb cdc plain
		qf cdc -f "$BENCH/baselines/cdc.sql"
		q cdc "SELECT pg_create_logical_replication_slot('$CDC_SLOT', 'pgoutput')" >/dev/null
		q cdc "CREATE PUBLICATION $CDC_PUB" >/dev/null
		qf cdc -c "SELECT outbox.create_topic('t', delivery => 'wal', slot => '$CDC_SLOT')" \
			-c "SELECT outbox.create_topic('cap')" -c "SELECT outbox.create_topic('exp')"
		capture=1
		if ! qf cdc -c "SELECT outbox.capture('bench_cap.orders', 'cap')" 2>>"$OUT/logs/cdc_capture.log"; then
			capture=0
			log "  cdc: outbox.capture() failed ($(tail -1 "$OUT/logs/cdc_capture.log")): the capture points are left out"
		fi
		q cdc "ANALYZE" >/dev/null
		for m in 1 100; do
			for sys in $(rotate "wal plain" "$run"); do
				if [ "$sys" = wal ]; then cdc_point cdc_offer wal "outbox_offer$m" "$m" "$run"
				else cdc_point cdc_offer plain "plain_offer$m" "$m" "$run"; fi
			done
		done
		if [ "$capture" = 1 ]; then
			for m in 1 100; do
				for sys in $(rotate "capture explicit" "$run"); do
					cdc_point cdc_capture "$sys" "cdc_$sys$m" "$m" "$run"
				done
			done
		fi
		for m in 1 100; do
			for sys in $(rotate "wal plain" "$run"); do
				if [ "$sys" = wal ]; then cdc_wal_point wal "outbox_offer$m" "$m" "$run"
				else cdc_wal_point plain "plain_offer$m" "$m" "$run"; fi
			done
			if [ "$capture" = 1 ]; then
				for sys in $(rotate "capture explicit" "$run"); do
					cdc_wal_point "$sys" "cdc_$sys$m" "$m" "$run"
				done
			fi
		done
		if [ "$capture" = 1 ]; then
			# one event per row, and the same type and payload shape a side
			local c e
			c=$(q cdc "SELECT (SELECT available FROM outbox.stats WHERE topic = 'cap') || ' events of ' || (SELECT count(*) FROM bench_cap.orders) || ' rows'")
			[ "${c% events*}" = "$(q cdc "SELECT count(*) FROM bench_cap.orders")" ] || die "cdc: captured $c"
			c=$(q cdc "SELECT type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(payload) k) || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(payload -> 'after') k) FROM outbox.claim('cap')")
			e=$(q cdc "SELECT type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(payload) k) || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(payload -> 'after') k) FROM outbox.claim('exp')")
			[ -n "$c" ] && [ "$c" = "$e" ] || die "cdc: a captured event ($c) is not like an explicit one ($e)"
		fi
		for m in 1 100; do
			cdc_decode_point "$m" "$run"
		done
		q cdc "SELECT pg_drop_replication_slot('$CDC_SLOT')" >/dev/null
		dropdb cdc
	done
	# the cases run in a fixed order and cdc is the last: the server stays
	# at wal_level = logical
}

# ---------------------------------------------------------------- run
make_template
want wal && case_wal
want offer && case_offer
want drain && case_drain
want churn && case_churn churn
want held && case_churn held
want history && case_history
want latency && case_latency
want topics && case_topics
want ordered && case_ordered
want hotkey && case_hotkey
want cdc && case_cdc

# ---------------------------------------------------------------- report
log "report"
PGVERSION=$(q postgres "SHOW server_version")
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
TABLE=$OUT/table.md
if awk -F'\t' '$1 != "ordered" && $1 != "hotkey" { found = 1 } END { exit !found }' "$RAW"; then
	"$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d postgres -f "$BENCH/report.sql" \
		<"$RAW" >"$TABLE" || die "report failed"
else
	: >"$TABLE"
fi
# the ordered and hotkey cases: a table of their own after the first
"$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d postgres -f "$BENCH/report-keys.sql" \
	<"$RAW" >>"$TABLE" || die "report of the ordered cases failed"
cat "$TABLE"

{
	echo "# outbox benchmark results"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- machine: $(nproc) cores ($CPU), $MEM memory; PostgreSQL $PGVERSION"
	echo "- command: \`$CMDLINE\` ($RUNS run(s) per case, $(( ($(date +%s) - T0) / 60 )) minutes)"
	echo "- commit: $COMMIT"
	echo "- server: ${SETTINGS[*]}, shared_preload_libraries = 'outbox', autovacuum at its defaults"
	want hotkey && echo "- hotkey: the server restarted with \`outbox.max_ordered_events = $HOT_ORDERED_EVENTS\` for the case (default 65536): the hot key's events, held back behind its lease, are followed in shared memory"
	want cdc && echo "- cdc: the server restarted with \`wal_level = logical\` for the case (baselines included); decoding read by a pgoutput client, Node.js $(node --version 2>/dev/null) with pg-logical-replication $CDC_CLIENT_VERSION (bench/cdc_client.js)"
	[ -s "$OUT/load.txt" ] && echo "- machine load (1-minute load average at the end of each pgbench run): $(sort -n "$OUT/load.txt" | awk '{ v[NR] = $1 } END { printf "min %s, median %s, max %s", v[1], v[int((NR + 1) / 2)], v[NR] }')"
	case "$HOUSEKEEPING" in
		loop) echo "- housekeeping: while outbox was drained (drain, churn, held horizon, history, ordered, hotkey) the harness called \`outbox.reap()\` every second and \`outbox.maintain()\` every 10 s; the extension's worker was off (\`outbox.enabled = off\`)" ;;
		worker) echo "- housekeeping: the extension's background worker (reap every 1 s, maintenance every 10 s)" ;;
		off) echo "- housekeeping: none (no reap, no maintain)" ;;
	esac
	echo
	echo "Each cell: median (min–max) over the runs; ratios are computed per run against the baseline measured in the same run. Events per second unless noted."
	echo
	cat "$TABLE"
	echo
	sed -n '/^<!-- about -->$/,$p' "$BENCH/README.md" | sed 1d
} >"$OUTPUT"

# Charts of the table, linked at its end; a run does not fail for want of them.
case "$(realpath -m "$OUTPUT")" in
	"$BENCH/RESULTS.md") CHARTS=$BENCH/charts ;;
	"$BENCH/out/RESULTS-quick.md") CHARTS=$BENCH/out ;;
	*) CHARTS=$OUT/charts ;;
esac
if bash "$BENCH/charts.sh" "$OUTPUT" "$CHARTS" >"$OUT/charts.md" 2>"$OUT/logs/charts.log"; then
	{ echo; cat "$OUT/charts.md"; } >>"$OUTPUT"
	log "charts in $CHARTS"
else
	log "no charts (log $OUT/logs/charts.log)"
fi
[ "$(realpath -m "$OUTPUT")" = "$(realpath -m "$OUT/$(basename "$OUTPUT")")" ] || cp "$OUTPUT" "$OUT/"
log "wrote $OUTPUT (raw figures in $OUT)"
