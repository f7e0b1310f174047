#!/usr/bin/env bash
# What the metrics cost: outbox built as usual (A) against the same commit
# built with -DOUTBOX_NO_METRICS (B), which keeps none of the new counters
# (claims, nacks, expired leases, dead letters, redrives) and no latency
# histograms.
#
#   bench/metrics.sh [--runs N] [--seconds S] [--backlog N]
#   bench/metrics.sh --instructions [--runs N]
#
#   --runs N      rounds (default 3); each round measures A and B, the
#                 order alternating (A B, B A, A B, ...)
#   --seconds S   seconds per pgbench point (default 15)
#   --backlog N   drain: pending events before each point, at least
#                 (default 300000; more when a point drains more)
#
# Both variants are built from `git archive` of HEAD.  One throwaway cluster
# (the settings of bench/run.sh, outbox.enabled = off) runs every point; before
# each variant's points the server stops, the variant is installed and the
# server starts again.  Points, 4 clients each:
#   offer  one outbox.offer per transaction (pgbench/outbox_offer1.sql)
#   drain  claim 100 + ack (pgbench/outbox_drain.sql) from a backlog topped
#          up before each point; outbox.reap() every second and
#          outbox.maintain() every 10 s meanwhile, as bench/run.sh does
# --instructions counts machine instructions instead of timing (Valgrind's
# callgrind, the same count for the same work whatever else the machine
# does): for each variant and round, a single-user backend (postgres
# --single, the library preloaded) on a fresh cluster runs three scripts:
#   w0  CREATE EXTENSION, a topic, one offer (the log gets its partitions)
#   w1  w0, then 5,000 offers, one per transaction
#   w2  w1, then 5,001 events drained by claim 100 + ack, one per transaction
# (w1 - w0) / 5,000 is an offer's count, (w2 - w1) / 5,001 an event's drain.
# The whole run holds /tmp/outbox-install.lock (it takes the lock itself;
# OUTBOX_INSTALL_LOCKED=1 tells it the caller holds it already), and the
# normal build (A) is installed again at the end.  Results:
# bench/out/metrics-<date>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8

usage() { sed -n '2,37s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

RUNS=3
SECS=15
BACKLOG=300000
INSTR=0
ARGV=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--instructions) INSTR=1; shift ;;
		--runs|--seconds|--backlog)
			[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "metrics: $1 needs a positive number" >&2; exit 2; }
			case "$1" in
				--runs) RUNS=$2 ;;
				--seconds) SECS=$2 ;;
				--backlog) BACKLOG=$2 ;;
			esac
			shift 2 ;;
		-h|--help) usage; exit 0 ;;
		*) echo "metrics: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done

# The library is installed machine-wide: hold the lock for the whole run
# (-o: the servers started meanwhile do not inherit it).
LOCK=/tmp/outbox-install.lock
if [ -z "${OUTBOX_INSTALL_LOCKED:-}" ]; then
	export OUTBOX_INSTALL_LOCKED=1
	rc=0
	flock -n -E 75 -o "$LOCK" bash "${BASH_SOURCE[0]}" "${ARGV[@]}" || rc=$?
	[ "$rc" = 75 ] || exit "$rc"
	echo "metrics: waiting for another run that holds $LOCK" >&2
	exec flock -o "$LOCK" bash "${BASH_SOURCE[0]}" "${ARGV[@]}"
fi

CLIENTS=4
JOBS=2
BATCH=100
ATTEMPTS=3          # drain: tries when a backlog runs out

# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"
BIN=$PGC_BINDIR

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$BENCH/out/metrics-$STAMP
mkdir -p "$OUT/logs"
RAW=$OUT/raw.tsv
: >"$RAW"
T0=$(date +%s)

log() { printf '[%s +%4ds] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - T0))" "$*" | tee -a "$OUT/metrics.log" >&2; }
die() { log "ERROR: $*"; exit 1; }

CMDLINE="bash bench/metrics.sh${ARGV[*]:+ ${ARGV[*]}}"
log "metrics: $CMDLINE (rounds=$RUNS seconds=$SECS backlog>=$BACKLOG)"

log "dependencies"
bash "$ROOT/scripts/install-deps.sh"

# ---------------------------------------------------------------- builds
REV=$(git -C "$ROOT" rev-parse HEAD)
COMMIT=$(git -C "$ROOT" rev-parse --short "$REV")
WORK=$(mktemp -d /tmp/outbox-metrics-build.XXXXXX)
SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
LIBDIR=$("$PG_CONFIG" --pkglibdir)

declare -A CFLAGS_OF=([a]="" [b]="-DOUTBOX_NO_METRICS")
declare -A NAME_OF=([a]="A (metrics)" [b]="B (OUTBOX_NO_METRICS)")
BUILT_A=0
INSTALLED=

install_variant() {
	local v=$1
	$SUDO make -C "$WORK/$v" --no-print-directory -s PG_CONFIG="$PG_CONFIG" \
		${CFLAGS_OF[$v]:+PG_CFLAGS="${CFLAGS_OF[$v]}"} install >>"$OUT/logs/install.log" 2>&1 ||
		die "make install of variant $v failed (log $OUT/logs/install.log)"
	cmp -s "$WORK/$v/outbox.so" "$LIBDIR/outbox.so" || die "$LIBDIR/outbox.so is not the library of variant $v"
	INSTALLED=$v
}

# At the end, also after a failure: the normal build goes back in place.
finish() {
	if [ "$BUILT_A" = 1 ] && [ "$INSTALLED" != a ]; then
		if $SUDO make -C "$WORK/a" --no-print-directory -s PG_CONFIG="$PG_CONFIG" install >>"$OUT/logs/install.log" 2>&1; then
			echo "metrics: installed the normal build (A) again" >&2
		else
			echo "metrics: could not install the normal build again (log $OUT/logs/install.log)" >&2
		fi
	fi
	rm -rf -- "$WORK"
}

log "build $COMMIT twice: A as usual, B with PG_CFLAGS=-DOUTBOX_NO_METRICS"
for v in a b; do
	mkdir -p "$WORK/$v"
	git -C "$ROOT" archive "$REV" | tar -x -C "$WORK/$v"
	make -C "$WORK/$v" --no-print-directory -s PG_CONFIG="$PG_CONFIG" \
		${CFLAGS_OF[$v]:+PG_CFLAGS="${CFLAGS_OF[$v]}"} >"$OUT/logs/build-$v.log" 2>&1 ||
		{ cat "$OUT/logs/build-$v.log" >&2; die "build of variant $v failed"; }
	[ "$v" = a ] && BUILT_A=1
done
cmp -s "$WORK/a/outbox.so" "$WORK/b/outbox.so" && die "A and B built into the same library"

# ---------------------------------------------------------------- instructions
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }
# callgrind's count of one script (w0, w1, w2 above) on a fresh cluster
count_script() {
	local w=$1 dir
	dir=$(mktemp -d /tmp/outbox-metrics-ir.XXXXXX)
	chown "$PGC_OSUSER": "$dir" 2>/dev/null || true
	pgc_as_server "$BIN/initdb" -D "$dir/data" -A trust --no-sync >"$OUT/logs/initdb.log" 2>&1 ||
		die "initdb failed (log $OUT/logs/initdb.log)"
	pgc_as_server valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$BIN/postgres" --single -D "$dir/data" -c shared_preload_libraries=outbox \
		-c outbox.enabled=off postgres <"$OUT/scripts/$w.sql" >"$OUT/logs/$w.out" 2>"$OUT/logs/$w.err" ||
		die "the single-user backend failed on $w (log $OUT/logs/$w.err)"
	grep -q 'ERROR' "$OUT/logs/$w.out" && die "$w: $(grep -m1 ERROR "$OUT/logs/$w.out")"
	rm -rf -- "$dir"
	sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$OUT/logs/$w.err"
}

instructions() {
	command -v valgrind >/dev/null || die "valgrind is not installed"
	mkdir -p "$OUT/scripts"
	{
		echo "SET client_min_messages = warning;"
		echo "CREATE EXTENSION outbox CASCADE;"
		echo "SELECT outbox.create_topic('t');"
		echo "SELECT outbox.offer('t', '{\"n\": 0}');"
	} >"$OUT/scripts/w0.sql"
	cp "$OUT/scripts/w0.sql" "$OUT/scripts/w1.sql"
	for ((i = 1; i <= 5000; i++)); do
		echo "SELECT outbox.offer('t', '{\"n\": $i}');"
	done >>"$OUT/scripts/w1.sql"
	cp "$OUT/scripts/w1.sql" "$OUT/scripts/w2.sql"
	for ((i = 1; i <= 51; i++)); do
		echo "SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid) FROM outbox.claim('t', 100);"
	done >>"$OUT/scripts/w2.sql"
	echo "SELECT available + leased AS left FROM outbox.stats;" >>"$OUT/scripts/w2.sql"
	chmod -R a+rX "$OUT"

	local run v order w0 w1 w2
	for ((run = 1; run <= RUNS; run++)); do
		order="a b"
		[ $((run % 2)) = 0 ] && order="b a"
		for v in $order; do
			install_variant "$v"
			w0=$(count_script w0)
			w1=$(count_script w1)
			w2=$(count_script w2)
			grep -q 'left = "0"' "$OUT/logs/w2.out" || die "w2 did not drain every event"
			rec instr offer "$v" "$run" "$(awk -v a="$w1" -v b="$w0" 'BEGIN { printf "%.0f", (a - b) / 5000 }')"
			rec instr drain "$v" "$run" "$(awk -v a="$w2" -v b="$w1" 'BEGIN { printf "%.0f", (a - b) / 5001 }')"
			log "  round $run ${NAME_OF[$v]}: offer $(awk -v a="$w1" -v b="$w0" 'BEGIN { printf "%.0f", (a - b) / 5000 }') instructions, drain $(awk -v a="$w2" -v b="$w1" 'BEGIN { printf "%.0f", (a - b) / 5001 }') instructions per event"
		done
	done

	log "report"
	{
		echo "# What the metrics cost, in instructions"
		echo
		echo "- command: \`$CMDLINE\`, commit $COMMIT, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "- Valgrind callgrind, single-user backend, $RUNS round(s) per variant"
		echo
		echo "| point | A: with metrics | B: OUTBOX_NO_METRICS | A ÷ B (median, min–max) |"
		echo "|---|--:|--:|--:|"
		for point in offer drain; do
			awk -F'\t' -v p="$point" '
				$1 == "instr" && $2 == p { v[$3 "," $4] = $5; if ($4 > n) n = $4 }
				function med(arr, k,   i, j, t) {
					for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
					return (k % 2) ? arr[(k + 1) / 2] : (arr[k / 2] + arr[k / 2 + 1]) / 2
				}
				END {
					for (i = 1; i <= n; i++) { a[i] = v["a," i]; b[i] = v["b," i]; r[i] = v["a," i] / v["b," i] }
					lo = r[1]; hi = r[1]
					for (i = 1; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
					name = (p == "offer") ? "offer, 1 event per transaction, per event" : "drain, claim 100 + ack, per event"
					printf "| %s | %d | %d | %.4f× (%.4f×–%.4f×) |\n", name, med(a, n), med(b, n), med(r, n), lo, hi
				}' "$RAW"
		done
	} >"$OUT/instructions.md"
	cat "$OUT/instructions.md"
	log "wrote $OUT/instructions.md"
}

if [ "$INSTR" = 1 ]; then
	pgc_on_exit 'finish'
	instructions
	exit 0
fi

# ---------------------------------------------------------------- cluster
DIR=$(mktemp -d /tmp/outbox-metrics.XXXXXX)
SETTINGS=(shared_buffers=1GB max_wal_size=4GB checkpoint_timeout=15min
	synchronous_commit=on fsync=on max_connections=60 max_worker_processes=24
	outbox.enabled=off)
log "cluster in $DIR: ${SETTINGS[*]} shared_preload_libraries='outbox'"
pgc_init "$DIR"

start_variant() {
	local v=$1
	pgc_stop "$DIR"
	install_variant "$v"
	pgc_start "$DIR" --port 55442 "${SETTINGS[@]}" || die "the server did not start"
	export PGHOST PGPORT
	PGHOST=$(pgc_host "$DIR")
	PGPORT=$(pgc_port "$DIR")
}
export PGUSER=postgres PGOPTIONS="-c client_min_messages=warning"

q() {
	local db=$1; shift
	"$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "$*"
}
checkpoint() { q postgres "CHECKPOINT" >/dev/null; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }

# pb DB SCRIPT SECONDS: pgbench with CLIENTS clients; sets PB_TPS, PB_LOG.
PBN=0
pb() {
	local db=$1 file=$2 secs=$3
	PBN=$((PBN + 1))
	PB_LOG=$OUT/logs/pgbench.$PBN.log
	echo "pgbench -c $CLIENTS -j $JOBS -T $secs -f $file $db" >"$PB_LOG"
	"$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$secs" -f "$file" "$db" >>"$PB_LOG" 2>&1 ||
		{ tail -20 "$PB_LOG" >&2; die "pgbench failed (log $PB_LOG)"; }
	cut -d' ' -f1 /proc/loadavg >>"$OUT/load.txt"
	PB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' "$PB_LOG")
	[ -n "$PB_TPS" ] || die "no result from pgbench (log $PB_LOG)"
}

# Housekeeping while the drain runs, as bench/run.sh does it.
BG_PID=
bg_start() {
	bg_stop
	(
		i=0
		while :; do
			"$BIN/psql" -X -q -At -d drain -c "SELECT outbox.reap()" >/dev/null 2>>"$OUT/logs/housekeeping.log" || true
			if [ $((i % 10)) = 0 ]; then
				"$BIN/psql" -X -q -At -d drain -c "SELECT outbox.maintain()" >/dev/null 2>>"$OUT/logs/housekeeping.log" || true
			fi
			i=$((i + 1))
			sleep 1
		done
	) &
	BG_PID=$!
}
bg_stop() {
	if [ -n "$BG_PID" ]; then
		kill "$BG_PID" 2>/dev/null || true
		wait "$BG_PID" 2>/dev/null || true
		BG_PID=
	fi
}
pgc_on_exit 'bg_stop'
pgc_on_exit 'finish'

# Events of topic t acked since the server started (bench/run.sh's count).
acked() {
	q drain "SELECT coalesce(sum(s.acked), 0) FROM outbox._shmem_topics() s
	         JOIN outbox.topic t ON t.topic_id = s.topic_id AND t.incarnation = s.incarnation
	         WHERE t.name = 't'"
}
# Events of topic t pending now.  Read from the tables: the shared-memory
# counters start again from zero with every restart.
pending() {
	q drain "SELECT available + leased FROM outbox.stats WHERE topic = 't'"
}
# fill N: N more pending events through offer_batch, two sessions.
fill() {
	local n=$1 half p1 p2
	[ "$n" -gt 0 ] || return 0
	half=$((n / 2))
	q drain "CALL bench.fill_outbox('t', $half)" >/dev/null & p1=$!
	q drain "CALL bench.fill_outbox('t', $((n - half)))" >/dev/null & p2=$!
	wait "$p1" || die "fill failed"
	wait "$p2" || die "fill failed"
}
claimed_counter() {
	q drain "SELECT coalesce(claimed, -1) FROM outbox.metrics WHERE topic = 't'"
}

OFFER_SQL=$BENCH/pgbench/outbox_offer1.sql
DRAIN_SQL=$OUT/outbox_drain_$BATCH.sql
sed "s/@BATCH@/$BATCH/g" "$BENCH/pgbench/outbox_drain.sql" >"$DRAIN_SQL"

start_variant a
for db in offer drain; do
	q postgres "CREATE DATABASE $db" >/dev/null
	q "$db" "CREATE EXTENSION outbox CASCADE" >/dev/null
	"$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$BENCH/helpers.sql" >/dev/null
	q "$db" "SELECT outbox.create_topic('t')" >/dev/null
done

# How much a drain point takes: a short drain on variant A (not counted),
# from a backlog that grows until it lasts.
DRAIN_MAX=0         # the most events a drain point took so far
calibrate() {
	local secs=$((SECS < 5 ? SECS : 5)) pend before n
	log "calibrate: ${secs}s drains until the backlog lasts"
	fill "$BACKLOG"
	q drain "VACUUM ANALYZE" >/dev/null
	pend=$(pending)
	[ "$pend" = "$BACKLOG" ] || die "calibrate: $pend events pending, not $BACKLOG"
	for _ in 1 2 3 4 5; do
		before=$(acked)
		bg_start
		pb drain "$DRAIN_SQL" "$secs"
		bg_stop
		n=$(($(acked) - before))
		if [ $((pend - n)) -ge $((CLIENTS * BATCH)) ]; then
			DRAIN_MAX=$((n * SECS / secs))
			log "  calibrate: $(rate "$n" "$secs") events/s; a point takes about $DRAIN_MAX events"
			return 0
		fi
		log "  calibrate: the backlog of $pend ran out, three times as much"
		fill $((pend * 3 - $(pending)))
		q drain "ANALYZE" >/dev/null
		pend=$(pending)
	done
	die "calibrate: the backlog still runs out"
}
calibrate

measure() {
	local v=$1 run=$2 pend target before n attempt dry claimed
	start_variant "$v"

	# offer: one event per transaction
	checkpoint
	pb offer "$OFFER_SQL" "$SECS"
	rec "$run" "$v" offer events_s "$PB_TPS"
	log "  round $run ${NAME_OF[$v]}: offer $(printf '%.0f' "$PB_TPS") events/s"

	# drain: claim 100 + ack
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		target=$((DRAIN_MAX * 3 / 2))
		[ "$target" -ge "$BACKLOG" ] || target=$BACKLOG
		pend=$(pending)
		if [ "$pend" -lt "$target" ]; then
			fill $((target - pend))
			q drain "ANALYZE" >/dev/null
			pend=$(pending)
		fi
		checkpoint
		before=$(acked)
		bg_start
		pb drain "$DRAIN_SQL" "$SECS"
		bg_stop
		n=$(($(acked) - before))
		[ "$n" -le "$DRAIN_MAX" ] || DRAIN_MAX=$n
		dry=0
		[ $((pend - n)) -ge $((CLIENTS * BATCH)) ] || dry=1
		[ "$dry" = 0 ] && break
		DRAIN_MAX=$((n * 2))
		log "  round $run ${NAME_OF[$v]}: the backlog of $pend ran out$([ "$attempt" -lt "$ATTEMPTS" ] && echo ', again with more')"
	done
	claimed=$(claimed_counter)
	if [ "$v" = a ]; then
		[ "$claimed" -ge "$n" ] || die "variant A counted $claimed claims for $n events drained"
	else
		[ "$claimed" = 0 ] || die "variant B counted $claimed claims: not the library without metrics"
	fi
	rec "$run" "$v" drain events_s "$(rate "$n" "$SECS")"
	rec "$run" "$v" drain dry "$dry"
	rec "$run" "$v" drain backlog "$pend"
	log "  round $run ${NAME_OF[$v]}: drain $(rate "$n" "$SECS" | cut -d. -f1) events/s (backlog $pend$([ "$dry" = 1 ] && echo ', RAN DRY'); claimed counter $claimed)"
}

for ((run = 1; run <= RUNS; run++)); do
	if [ $((run % 2)) = 1 ]; then order="a b"; else order="b a"; fi
	for v in $order; do
		measure "$v" "$run"
	done
done

# ---------------------------------------------------------------- report
log "report"
TABLE=$OUT/table.md
ROUNDS=$OUT/rounds.md
awk -F'\t' -v target=0.97 -v rounds_file="$ROUNDS" '
function med(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function num(x,   s, r) {
	s = sprintf("%.0f", x); r = ""
	while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
	return s r
}
$4 == "events_s" { v[$3, $1, $2] = $5; if ($1 > nr) nr = $1 }
$4 == "dry" && $5 == 1 { dry[$3] = 1 }
END {
	np = split("offer drain", pts, " ")
	label["offer"] = "offer, 1 event per transaction, 4 clients"
	label["drain"] = "drain, claim 100 + ack, 4 consumers"
	print "| point | A: with metrics | B: OUTBOX_NO_METRICS | A ÷ B (per round: median, min–max) | target | result |"
	print "|---|--:|--:|--:|---|---|"
	print "| round | point | A | B | A ÷ B |" >rounds_file
	print "|--:|---|--:|--:|--:|" >rounds_file
	for (p = 1; p <= np; p++) {
		pt = pts[p]; la = lb = lr = ""; lo = ""; hi = ""; below = 0
		for (r = 1; r <= nr; r++) {
			a = v[pt, r, "a"]; b = v[pt, r, "b"]
			la = la " " a; lb = lb " " b
			ratio = b > 0 ? a / b : 0
			lr = lr " " ratio
			if (lo == "" || ratio < lo) lo = ratio
			if (hi == "" || ratio > hi) hi = ratio
			if (ratio < target) below++
			printf "| %d | %s | %s | %s | %.3f× |\n", r, pt, num(a), num(b), ratio >rounds_file
		}
		res = below ? sprintf("**not met** (%d of %d rounds below)", below, nr) : "met"
		if (dry[pt]) res = res "; a backlog ran out"
		printf "| %s | %s | %s | %.3f× (%.3f×–%.3f×) | every round ≥ %.2f× | %s |\n",
			label[pt], num(med(la)), num(med(lb)), med(lr), lo, hi, target, res
	}
}' "$RAW" >"$TABLE"

LOAD=$(sort -n "$OUT/load.txt" | awk '{ v[NR] = $1 } END { printf "min %s, median %s, max %s", v[1], v[int((NR + 1) / 2)], v[NR] }')
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
PGVERSION=$(q postgres "SHOW server_version")
{
	echo "# What the metrics cost"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- commit: $COMMIT (A: as built by \`make\`; B: \`PG_CFLAGS=-DOUTBOX_NO_METRICS\`)"
	echo "- command: \`$CMDLINE\` ($RUNS rounds, order A B, B A, ...; $(( ($(date +%s) - T0) / 60 )) minutes)"
	echo "- machine: $(nproc) cores ($CPU); PostgreSQL $PGVERSION"
	echo "- server: ${SETTINGS[*]}, shared_preload_libraries = 'outbox'; restarted with the variant's library before each variant's points"
	echo "- pgbench: $CLIENTS clients, $JOBS threads, ${SECS} s per point, -M prepared; drain backlog at least $BACKLOG events, topped up to 1.5× the most a point drained; outbox.reap() every second and outbox.maintain() every 10 s during drains"
	echo "- machine load (1-minute load average after each pgbench run): $LOAD"
	echo
	echo "Events per second, median over the rounds; the ratio is taken per round, A and B measured one after the other."
	echo
	cat "$TABLE"
	echo
	echo "Per round:"
	echo
	cat "$ROUNDS"
} >"$OUT/metrics.md"
cat "$TABLE"
log "wrote $OUT/metrics.md"
