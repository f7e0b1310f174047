#!/usr/bin/env bash
# Concurrency check: offers EVENTS events to one topic, drains them with
# CONSUMERS concurrent consumers (claim / record / ack / commit), and checks
# that every event was delivered exactly once and the topic ends empty.
#
#   test/concurrency/drain.sh
#
# Needs the extension installed (make install).  Starts and removes its own
# server.  Environment: EVENTS (20000), CONSUMERS (8), BATCH (50),
# OUTBOX_TEST_WORK (directory to create the server in; default a temp dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

EVENTS=${EVENTS:-20000}
CONSUMERS=${CONSUMERS:-8}
BATCH=${BATCH:-50}
CHUNK=1000
TOPIC=drain
DB=outbox_drain
CONSUMER_TIMEOUT=${CONSUMER_TIMEOUT:-600}

parent=${OUTBOX_TEST_WORK:-}
[ -n "$parent" ] || pgc_scratch parent drain
C="$parent/drain-cluster"
[ -e "$C" ] && pgc_destroy "$C"
OUT="$parent/drain-consumers"
rm -rf -- "$OUT"
mkdir -p "$OUT"
pgc_on_exit "rm -rf -- '$OUT'"

fail() {
	echo "concurrency: FAIL: $*" >&2
	pgc_log_tail "$C" 30
	exit 1
}

now() { date +%s.%N; }

pgc_init "$C"
# The background worker runs, reaping and maintaining while the consumers
# drain: nothing it does may lose or repeat an event.
pgc_start "$C" --conf "$ROOT/test/outbox-test.conf" "max_connections=$((CONSUMERS + 20))" \
	"outbox.enabled=on" "outbox.reap_interval='100ms'" ||
	fail "could not start the server"
psql_db() { pgc_psql "$C" -d "$DB" "$@"; }

pgc_psql "$C" -d postgres -c "CREATE DATABASE $DB" || fail "CREATE DATABASE"

PGOPTIONS="-c client_min_messages=warning" psql_db -c "CREATE EXTENSION outbox CASCADE" || fail "CREATE EXTENSION"
psql_db -v topic="$TOPIC" <<'SQL' >/dev/null || fail "setup"
SELECT outbox.create_topic(:'topic');
CREATE TABLE drain_offered (id bigint PRIMARY KEY);
CREATE TABLE drain_seen (id bigint NOT NULL, consumer int NOT NULL, lease_token uuid NOT NULL,
                         attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE drain_acks (consumer int NOT NULL, claimed int NOT NULL, acked int NOT NULL,
                         tokens int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE drain_ready (consumer int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());

-- One consumer: wait until all consumers are connected, then claim a batch,
-- record it, ack it, commit; stop after two empty claims in a row.
CREATE PROCEDURE drain_consume(p_consumer int, p_topic text, p_batch int, p_consumers int)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids    bigint[];
    v_tokens uuid[];
    v_acked  int;
    v_empty  int := 0;
    v_give_up timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    INSERT INTO drain_ready (consumer) VALUES (p_consumer);
    COMMIT;
    WHILE (SELECT count(*) FROM drain_ready) < p_consumers LOOP
        IF clock_timestamp() > v_give_up THEN
            RAISE EXCEPTION 'consumer %: the other consumers did not connect within 60 s', p_consumer;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    LOOP
        WITH c AS (
            SELECT * FROM outbox.claim(topic => p_topic, batch_size => p_batch, lease => '5 minutes')
        ), rec AS (
            INSERT INTO drain_seen (id, consumer, lease_token, attempt)
            SELECT c.id, p_consumer, c.lease_token, c.attempt FROM c
            RETURNING id, lease_token
        )
        SELECT array_agg(rec.id ORDER BY rec.id), array_agg(DISTINCT rec.lease_token)
          INTO v_ids, v_tokens
          FROM rec;
        IF v_ids IS NULL THEN
            v_empty := v_empty + 1;
            EXIT WHEN v_empty >= 2;
            COMMIT;
            PERFORM pg_sleep(0.05);
            CONTINUE;
        END IF;
        v_empty := 0;
        v_acked := outbox.ack(v_ids, v_tokens[1]);
        INSERT INTO drain_acks VALUES (p_consumer, cardinality(v_ids), v_acked,
                                       cardinality(v_tokens));
        COMMIT;
    END LOOP;
    COMMIT;
END
$$;
SQL

# Offer the events in committed chunks, keeping their ids.
t0=$(now)
{
	for ((i = 0; i < EVENTS; i += CHUNK)); do
		n=$((EVENTS - i < CHUNK ? EVENTS - i : CHUNK))
		cat <<SQL
INSERT INTO drain_offered
SELECT * FROM outbox.offer_batch('$TOPIC',
    ARRAY(SELECT jsonb_build_object('n', $i + g, 'pad', repeat('x', 64))
            FROM generate_series(1, $n) g ORDER BY g),
    keys => ARRAY(SELECT 'k' || (($i + g) % 97) FROM generate_series(1, $n) g ORDER BY g));
SQL
	done
} | psql_db || fail "offering events"
t1=$(now)
offered=$(psql_db -Atc "SELECT count(*) FROM drain_offered")
[ "$offered" = "$EVENTS" ] || fail "offered $offered ids, expected $EVENTS"
awk -v n="$EVENTS" -v a="$t0" -v b="$t1" \
	'BEGIN { printf "concurrency: offered %d events in %.2f s (%.0f events/s)\n", n, b - a, n / (b - a) }'

# Drain with concurrent consumers.
pids=()
t0=$(now)
for ((k = 1; k <= CONSUMERS; k++)); do
	timeout "$CONSUMER_TIMEOUT" "$PGC_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
		-h "$(pgc_host "$C")" -p "$(pgc_port "$C")" -U postgres -d "$DB" \
		-c "CALL drain_consume($k, '$TOPIC', $BATCH, $CONSUMERS)" >"$OUT/$k.log" 2>&1 &
	pids+=($!)
done
bad=0
for ((k = 1; k <= CONSUMERS; k++)); do
	rc=0
	wait "${pids[$((k - 1))]}" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "concurrency: consumer $k exited with status $rc:" >&2
		cat "$OUT/$k.log" >&2
		bad=1
	fi
done
t1=$(now)
[ "$bad" = 0 ] || fail "a consumer failed"
drain_s=$(psql_db -Atc "SELECT round(extract(epoch FROM (SELECT max(at) FROM drain_acks) -
                                                       (SELECT max(at) FROM drain_ready))::numeric, 3)")
awk -v n="$EVENTS" -v c="$CONSUMERS" -v a="$t0" -v b="$t1" -v d="$drain_s" \
	'BEGIN { printf "concurrency: drained %d events with %d consumers in %.2f s wall time, %.2f s from the last consumer ready to the last ack (%.0f events/s)\n", n, c, b - a, d, (d > 0 ? n / d : 0) }'

# Assertions.  Each row is one check; any row with ok = false fails the run.
psql_db -v topic="$TOPIC" -v events="$EVENTS" -v batch="$BATCH" -P pager=off -P footer=off >"$OUT/checks.txt" <<'SQL' || fail "running the checks"
WITH s AS (SELECT * FROM outbox.stats WHERE topic = :'topic'),
checks(check_name, expected, got) AS (
    VALUES
    ('rows recorded by consumers', :'events', (SELECT count(*) FROM drain_seen)::text),
    ('distinct ids recorded', :'events', (SELECT count(DISTINCT id) FROM drain_seen)::text),
    ('offered ids never delivered', '0',
        (SELECT count(*) FROM drain_offered o WHERE NOT EXISTS (SELECT 1 FROM drain_seen d WHERE d.id = o.id))::text),
    ('delivered ids never offered', '0',
        (SELECT count(*) FROM drain_seen d WHERE NOT EXISTS (SELECT 1 FROM drain_offered o WHERE o.id = d.id))::text),
    ('deliveries with attempt <> 1', '0',
        (SELECT count(*) FROM drain_seen WHERE attempt <> 1)::text),
    ('claims with more than one lease_token', '0',
        (SELECT count(*) FROM drain_acks WHERE tokens <> 1)::text),
    ('claims larger than batch_size', '0',
        (SELECT count(*) FROM drain_acks WHERE claimed > :batch)::text),
    ('events acked by ack(ids, token)', :'events', (SELECT coalesce(sum(acked), 0) FROM drain_acks)::text),
    ('consumers that got events >= 2', 'true',
        ((SELECT count(DISTINCT consumer) FROM drain_seen) >= 2)::text),
    ('stats rows for the topic', '1', (SELECT count(*) FROM s)::text),
    ('stats.available', '0', (SELECT available::text FROM s)),
    ('stats.leased', '0', (SELECT leased::text FROM s)),
    ('stats.delayed', '0', (SELECT delayed::text FROM s)),
    ('stats.dead', '0', (SELECT dead::text FROM s)),
    ('stats.acked', :'events', (SELECT acked::text FROM s)),
    ('stats.offered', :'events', (SELECT offered::text FROM s)),
    ('claim after the drain', '0',
        (SELECT count(*) FROM outbox.claim(topic => :'topic', batch_size => 100))::text)
)
SELECT check_name, expected, coalesce(got, '<null>') AS got,
       CASE WHEN got IS NOT DISTINCT FROM expected THEN 'ok' ELSE 'MISMATCH' END AS result
  FROM checks;
SQL
cat "$OUT/checks.txt"
psql_db -Atc "SELECT 'concurrency: per consumer: ' || string_agg(consumer || '=' || n, ' ' ORDER BY consumer)
                FROM (SELECT consumer, count(*) AS n FROM drain_seen GROUP BY consumer) x"
if grep -q MISMATCH "$OUT/checks.txt"; then
	fail "some checks did not hold"
fi
pgc_stop "$C"
if pgc_crash_lines "$C" >"$OUT/crash.txt"; then
	head -n 60 "$OUT/crash.txt" >&2
	fail "the server crashed"
fi
pgc_destroy "$C"
echo "concurrency: ok"
