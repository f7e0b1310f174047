#!/usr/bin/env bash
# The fuzzer: runs fuzz.pl's calls (default: seed 1, 20000 calls) against a
# throwaway server with the worker running, then checks that
#   - the server never crashed (no 'terminated by signal', PANIC or TRAP),
#   - no error had an internal SQLSTATE (class XX),
#   - the books balance for every topic: events = acknowledged + available
#     + leased + delayed + dead, as outbox.stats and the tables say,
#   - the server agrees with the client's ledger of what the calls returned
#     (fuzz.pl, ledger.sql), during the run and at the end: every id an
#     offer returned exists, in the topic named, once and in exactly one
#     state (acked, dead or pending), unless its topic was dropped since,
#     and then it does not; every event was offered, or replayed (as many
#     as replay said); what an ack acked is acked, what the client saw die
#     and did not redrive is dead, nothing else is acked, and every dead
#     letter had been claimed; ack, nack and dead_letter settle only leases
#     the client held; no event is acked twice, or claimed after its ack,
#     or after it died and before a redrive (also in a transaction that
#     rolls back); an ack whose count left open which ids it acked counted
#     as many as the server then had acked,
#   - per-key order in the ordered topics (ledger.sql, fuzz_order_audit),
#     in the session's statement order, which is the commit order (one
#     session), then the drain's batches: no event is claimed while an
#     earlier event of its key (same topic part, tenant and key) is not
#     acked or dead, unless the same claim returns it too; an ack counts an
#     event only if every earlier event of its key in the same lease is
#     acked or dead, or acked by the same call; once a nack sends an event
#     to retry, the later events of its key in that lease are no longer
#     held: no ack, nack or dead_letter with that token settles them
#     (also in a transaction that rolls back),
#   - once the session's leases (released when it ends) and delays (a
#     second at most) have fallen due, a drain of every topic (claim and
#     ack until nothing is left, check.sql) hands out each event once, none
#     acked or dead before, and leaves nothing available, leased, delayed
#     or pending: every event is acked or dead.
#
#   test/fuzz/run.sh [SEED] [CALLS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
. "$ROOT/scripts/pgcluster.sh"
SEED=${1:-1}
CALLS=${2:-20000}

work=${OUTBOX_TEST_WORK:-/tmp}
dir=$(mktemp -d "$work/outbox-fuzz.XXXXXX")
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown "$PGC_OSUSER": "$dir"
c="$dir/cluster"
pgc_init "$c"
pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" outbox.enabled=on outbox.reap_interval=50ms
pgc_on_exit "pgc_destroy '$c'; rm -rf -- '$dir'"

perl "$ROOT/test/fuzz/fuzz.pl" "$SEED" "$CALLS" > "$dir/script.sql"
pgc_psql "$c" -d postgres -qc "CREATE EXTENSION outbox CASCADE" >/dev/null 2>&1
start=$(date +%s)
pgc_psql "$c" -d postgres -X -q -f "$dir/script.sql" > "$dir/out.txt" 2> "$dir/err.txt" || true
echo "fuzz: $(tail -n 1 "$dir/out.txt") in $(( $(date +%s) - start )) s"

fail=0
# The session must have reached its end and made every call.
if ! grep -q "^fuzz: $CALLS calls\$" "$dir/out.txt"; then
	echo "fuzz: the session did not reach its end (last line: $(tail -n 1 "$dir/out.txt"))"
	fail=1
fi
if grep -E -q 'FATAL|PANIC|server closed the connection' "$dir/err.txt"; then
	echo "fuzz: the session was cut off:"
	grep -E 'FATAL|PANIC|server closed the connection' "$dir/err.txt" | head -n 10
	fail=1
fi
if pgc_crash_lines "$c" >"$dir/crash.txt"; then
	echo "fuzz: the server crashed:"
	head -n 40 "$dir/crash.txt"
	fail=1
fi
# internal errors in the server log, the background worker's included.  A
# worker's unit chosen as a deadlock victim by a fuzz transaction is not a
# failure: it is rolled back whole and runs again at the next interval.
if grep -E 'ERROR:  XX|outbox worker: .* failed' "$c/server.log" |
	grep -v 'failed (SQLSTATE 40P01): deadlock detected$' >"$dir/worker-errors.txt"; then
	echo "fuzz: internal errors or worker failures in the server log:"
	head -n 20 "$dir/worker-errors.txt"
	fail=1
fi
if ! pgc_psql "$c" -d postgres -Atc "SELECT 1" >/dev/null; then
	echo "fuzz: the server does not answer"
	exit 1
fi

# SQLSTATEs seen: "ERROR:  22023: message"
grep -oE '^(psql:[^ ]* )?ERROR:  [0-9A-Z]{5}' "$dir/err.txt" | grep -oE '[0-9A-Z]{5}$' | sort | uniq -c | sort -rn > "$dir/states.txt" || true
echo "fuzz: errors by SQLSTATE:"
sed 's/^/  /' "$dir/states.txt"
if grep -q ' XX' "$dir/states.txt"; then
	echo "fuzz: internal errors (class XX):"
	grep -B1 -A2 'ERROR:  XX' "$dir/err.txt" | head -n 40
	fail=1
fi

# The books, per topic; then the drain; then the server against the ledger.
pgc_psql "$c" -d postgres -X -q -v ON_ERROR_STOP=1 -f "$ROOT/test/fuzz/check.sql" > "$dir/books.txt" || fail=1
# what fuzz.pl's session reported during the run: claims of acked or dead
# events (rolled back or not), and its audits of the server against the ledger
grep -c 'fuzz ledger:' "$dir/err.txt" | sed 's/^/check in-run /' >> "$dir/books.txt" || true
grep -v '^example ' "$dir/books.txt" | sed 's/^/  /' || true
# events = settled + available + leased + delayed + dead, for every topic
# (the worker reaps every 50 ms, so a lease may have moved between the
# columns: counted once either way)
if awk '$1 == "books" && $3 != $4 + $5 + $6 + $7 + $8 { bad = 1; print "fuzz: the books do not balance for topic " $2 ": " $0 } END { exit bad }' "$dir/books.txt"; then :; else fail=1; fi
# every check counts what it found wrong
if awk '$1 == "check" && $3 != 0 { bad = 1; print "fuzz: check " $2 " failed: " $3 } END { exit bad }' "$dir/books.txt"; then :; else
	grep '^example ' "$dir/books.txt" | head -n 60 | sed 's/^/  /' || true
	grep 'fuzz ledger:' "$dir/err.txt" | head -n 10 | sed 's/^/  /' || true
	fail=1
fi
# (check.sql's 25, and in-run)
if [ "$(grep -c '^check ' "$dir/books.txt")" -lt 26 ]; then
	echo "fuzz: the checks did not all run"
	fail=1
fi
# the checks must have had something to check
for what in offer claim ack nack drained ordered-claim ordered-ack ordered-batch; do
	if ! grep -E -q "^ledger $what [1-9]" "$dir/books.txt"; then
		echo "fuzz: the ledger holds no '$what': the checks of it checked nothing"
		fail=1
	fi
done
if ! grep -q ' 25006$' "$dir/states.txt"; then
	echo "fuzz: no call was refused in a read-only transaction"
	fail=1
fi
if [ "$fail" = 0 ]; then
	echo "fuzz: ok ($(awk '{n += $1} END {print n}' "$dir/states.txt") errors, $(wc -l < "$dir/states.txt") distinct SQLSTATEs, no XX, books balance, the server agrees with the ledger)"
fi
exit "$fail"
