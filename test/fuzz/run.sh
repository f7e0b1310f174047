#!/usr/bin/env bash
# The fuzzer: runs fuzz.pl's calls (default: seed 1, 20000 calls) against a
# throwaway server with the worker running, then checks that
#   - the server never crashed (no 'terminated by signal', PANIC or TRAP),
#   - no error had an internal SQLSTATE (class XX),
#   - the books balance for every topic: events = acknowledged + available
#     + leased + delayed + dead, as outbox.stats and the tables say,
#   - draining every topic hands out no acknowledged event, and each once.
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

# The books, per topic.
pgc_psql "$c" -d postgres -X -q -v ON_ERROR_STOP=1 > "$dir/books.txt" <<'SQL' || { cat "$dir/books.txt"; fail=1; }
\pset format unaligned
\pset fieldsep ' '
\pset tuples_only on
CREATE TEMP TABLE settled AS
SELECT e.topic_id, e.id
FROM outbox.event e JOIN outbox.topic_state s USING (topic_id)
WHERE (e.id <= s.watermark
	   AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
	   AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id))
   OR EXISTS (SELECT 1 FROM outbox.acked a WHERE a.topic_id = e.topic_id AND e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])));
-- a per-tenant topic's parts share its name and its stats row
SELECT 'books', t.name,
	   (SELECT count(*) FROM outbox.event e JOIN outbox.topic p USING (topic_id) WHERE p.name = t.name) AS events,
	   (SELECT count(*) FROM settled x JOIN outbox.topic p USING (topic_id) WHERE p.name = t.name) AS settled,
	   s.available, s.leased, s.delayed, s.dead
FROM (SELECT DISTINCT name FROM outbox.topic) t JOIN outbox.stats s ON s.topic = t.name ORDER BY t.name;
-- drain: every lease expires, everything due becomes claimable
SELECT outbox.reap();
CREATE TEMP TABLE drained (topic text, id bigint);
DO $$
DECLARE
	t text;
	tn text;
	n int;
BEGIN
	-- each part of a per-tenant topic is drained by a session acting for its tenant
	FOR t, tn IN SELECT name, tenant FROM outbox.topic LOOP
		PERFORM set_config('outbox.tenant', coalesce(tn, ''), false);
		LOOP
			WITH c AS (SELECT * FROM outbox.claim(t, 1000, lease => '1 hour'))
			INSERT INTO drained SELECT t, id FROM c;
			GET DIAGNOSTICS n = ROW_COUNT;
			EXIT WHEN n = 0;
		END LOOP;
	END LOOP;
END
$$;
SELECT 'redelivered-settled', count(*) FROM drained d JOIN settled s USING (id);
SELECT 'drained-twice', count(*) FROM (SELECT id FROM drained GROUP BY id HAVING count(*) > 1) x;
-- the client's record: no event has two acks that returned true
SELECT 'acked-twice', count(*) FROM (SELECT id FROM fuzz_acked GROUP BY id HAVING count(*) > 1) x;
SELECT 'acked-redelivered', count(*) FROM drained d JOIN fuzz_acked a USING (id);
SELECT 'acks-recorded', count(*) FROM fuzz_acked;
SQL
cat "$dir/books.txt" | sed 's/^/  /'
# events = settled + available + leased + delayed + dead, for every topic
# (the worker reaps every 50 ms, so a lease may have moved between the
# columns: counted once either way)
if awk '$1 == "books" && $3 != $4 + $5 + $6 + $7 + $8 { bad = 1; print "fuzz: the books do not balance for topic " $2 ": " $0 } END { exit bad }' "$dir/books.txt"; then :; else fail=1; fi
if grep -E -q '^(redelivered-settled|drained-twice|acked-twice|acked-redelivered) [1-9]' "$dir/books.txt"; then
	echo "fuzz: an acknowledged event was handed out again or acked twice, or one was handed out twice"
	fail=1
fi
if ! grep -E -q '^acks-recorded [1-9]' "$dir/books.txt"; then
	echo "fuzz: no real ack succeeded: the ack checks checked nothing"
	fail=1
fi
if ! grep -q ' 25006$' "$dir/states.txt"; then
	echo "fuzz: no call was refused in a read-only transaction"
	fail=1
fi
if [ "$fail" = 0 ]; then
	echo "fuzz: ok ($(awk '{n += $1} END {print n}' "$dir/states.txt") errors, $(wc -l < "$dir/states.txt") distinct SQLSTATEs, no XX, books balance)"
fi
exit "$fail"
