#!/usr/bin/env bash
# Concurrency check for a relay fleet that fails: PRODUCERS producers offer
# EVENTS events while CONSUMERS consumers drain them with random batch sizes
# (1-20); 10% of deliveries are nacked with a 20 ms retry_after, 2% of
# batches are left to expire (1 s leases, reaped by the background worker),
# and every other event is acked alone, in a transaction of its own that
# also logs the ack when ack() returned true.  Afterwards no event has two
# successful acks, every event is acked, no event was claimed after its ack
# was made, and the topic is empty.
#
#   test/concurrency/nack.sh
#
# Needs the extension installed (make install).  Starts and removes its own
# server.  Environment: EVENTS (12000), CONSUMERS (8), PRODUCERS (2),
# OUTBOX_TEST_WORK (directory to create the server in).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

EVENTS=${EVENTS:-12000}
CONSUMERS=${CONSUMERS:-8}
PRODUCERS=${PRODUCERS:-2}
TOPIC=nacky
DB=outbox_nack
TIMEOUT=${NACK_TIMEOUT:-300}

parent=${OUTBOX_TEST_WORK:-}
[ -n "$parent" ] || pgc_scratch parent nack
C="$parent/nack-cluster"
[ -e "$C" ] && pgc_destroy "$C"
OUT="$parent/nack-clients"
rm -rf -- "$OUT"
mkdir -p "$OUT"
pgc_on_exit "rm -rf -- '$OUT'"

fail() {
	echo "nack: FAIL: $*" >&2
	pgc_log_tail "$C" 30
	exit 1
}

pgc_init "$C"
pgc_start "$C" --conf "$ROOT/test/outbox-test.conf" "max_connections=$((CONSUMERS + PRODUCERS + 20))" \
	"outbox.enabled=on" "outbox.reap_interval='50ms'" ||
	fail "could not start the server"
psql_db() { pgc_psql "$C" -d "$DB" "$@"; }
pgc_psql "$C" -d postgres -c "CREATE DATABASE $DB" || fail "CREATE DATABASE"
PGOPTIONS="-c client_min_messages=warning" psql_db -c "CREATE EXTENSION outbox CASCADE" || fail "CREATE EXTENSION"

psql_db -v topic="$TOPIC" <<'SQL' >/dev/null || fail "setup"
SELECT outbox.create_topic(:'topic', max_attempts => 1000);
CREATE TABLE nk_offered (id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE nk_claims (id bigint NOT NULL, consumer int NOT NULL, attempt int NOT NULL,
                        at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE nk_acks (id bigint NOT NULL, consumer int NOT NULL,
                      at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE nk_nacks (id bigint NOT NULL, consumer int NOT NULL);
CREATE TABLE nk_done (producer int PRIMARY KEY);
CREATE INDEX ON nk_acks (id);

CREATE PROCEDURE nk_produce(p_producer int, p_topic text, p_events int, p_producers int)
LANGUAGE plpgsql AS $$
DECLARE
    v_n int := 0;
    v_chunk int;
BEGIN
    WHILE v_n < p_events / p_producers LOOP
        v_chunk := least(1 + (random() * 30)::int, p_events / p_producers - v_n);
        INSERT INTO nk_offered (id)
        SELECT outbox.offer(p_topic, jsonb_build_object('p', p_producer, 'n', v_n + g))
        FROM generate_series(1, v_chunk) g;
        v_n := v_n + v_chunk;
        COMMIT;
        PERFORM pg_sleep(random() * 0.01);
    END LOOP;
    INSERT INTO nk_done VALUES (p_producer);
    COMMIT;
END
$$;

CREATE PROCEDURE nk_consume(p_consumer int, p_topic text, p_events int, p_producers int)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_batch record;
    v_give_up timestamptz := clock_timestamp() + interval '240 seconds';
    v_ids bigint[];
    v_tokens uuid[];
    v_expire boolean;
BEGIN
    LOOP
        IF clock_timestamp() > v_give_up THEN
            RAISE EXCEPTION 'consumer %: not done after 240 s', p_consumer;
        END IF;
        EXIT WHEN (SELECT count(*) FROM nk_done) = p_producers
              AND (SELECT count(DISTINCT id) FROM nk_acks) >= p_events;
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.lease_token ORDER BY c.id)
          INTO v_ids, v_tokens
          FROM outbox.claim(p_topic, batch_size => 1 + (random() * 19)::int, lease => '1 second') c;
        IF v_ids IS NULL THEN
            COMMIT;
            PERFORM pg_sleep(0.005);
            CONTINUE;
        END IF;
        INSERT INTO nk_claims (id, consumer, attempt)
        SELECT u, p_consumer, 0 FROM unnest(v_ids) u;
        COMMIT;
        v_expire := random() < 0.02;
        CONTINUE WHEN v_expire;          -- left to expire
        FOR i IN 1 .. cardinality(v_ids) LOOP
            IF random() < 0.10 THEN
                IF outbox.nack(v_ids[i], v_tokens[i], 'failed on purpose', retry_after => '20 ms') IS NOT NULL THEN
                    INSERT INTO nk_nacks VALUES (v_ids[i], p_consumer);
                END IF;
            ELSE
                INSERT INTO nk_acks (id, consumer)
                SELECT v_ids[i], p_consumer WHERE outbox.ack(v_ids[i], v_tokens[i]);
            END IF;
            COMMIT;
        END LOOP;
    END LOOP;
END
$$;
SQL

# client NAME SQL: one client in the background, its output in $OUT/NAME.log
pids=()
logs=()
client() {
	timeout "$TIMEOUT" "$PGC_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
		-h "$(pgc_host "$C")" -p "$(pgc_port "$C")" -U postgres -d "$DB" \
		-c "$2" >"$OUT/$1.log" 2>&1 &
	pids+=($!)
	logs+=("$OUT/$1.log")
}
for ((k = 1; k <= CONSUMERS; k++)); do
	client "consumer-$k" "CALL nk_consume($k, '$TOPIC', $EVENTS, $PRODUCERS)"
done
for ((k = 1; k <= PRODUCERS; k++)); do
	client "producer-$k" "CALL nk_produce($k, '$TOPIC', $EVENTS, $PRODUCERS)"
done
SECONDS=0
bad=0
for i in "${!pids[@]}"; do
	rc=0
	wait "${pids[$i]}" || rc=$?
	# a client prints nothing unless something went wrong
	if [ "$rc" != 0 ] || [ -s "${logs[$i]}" ]; then
		echo "nack: $(basename "${logs[$i]}" .log) exited with status $rc:" >&2
		cat "${logs[$i]}" >&2
		bad=1
	fi
done
[ "$bad" = 0 ] || fail "a client failed"
echo "nack: $EVENTS events, $CONSUMERS consumers, $PRODUCERS producers: done in ${SECONDS} s"

psql_db -v topic="$TOPIC" -v events="$EVENTS" -P pager=off -P footer=off >"$OUT/checks.txt" <<'SQL' || fail "running the checks"
WITH s AS (SELECT * FROM outbox.stats WHERE topic = :'topic'),
checks(check_name, expected, got) AS (
    VALUES
    ('events offered', :'events', (SELECT count(*) FROM nk_offered)::text),
    ('successful acks', :'events', (SELECT count(*) FROM nk_acks)::text),
    ('events with two successful acks', '0',
        (SELECT count(*) FROM (SELECT id FROM nk_acks GROUP BY id HAVING count(*) > 1) x)::text),
    ('offered events never acked', '0',
        (SELECT count(*) FROM nk_offered o WHERE NOT EXISTS (SELECT 1 FROM nk_acks a WHERE a.id = o.id))::text),
    ('acked ids never offered', '0',
        (SELECT count(*) FROM nk_acks a WHERE NOT EXISTS (SELECT 1 FROM nk_offered o WHERE o.id = a.id))::text),
    ('claims after the event''s ack', '0',
        (SELECT count(*) FROM nk_claims c JOIN nk_acks a USING (id) WHERE c.at > a.at)::text),
    ('nacks made', 'true', ((SELECT count(*) FROM nk_nacks) > 0)::text),
    ('events delivered more than once', 'true',
        ((SELECT count(*) FROM (SELECT id FROM nk_claims GROUP BY id HAVING count(*) > 1) x) > 0)::text),
    ('stats.available', '0', (SELECT available::text FROM s)),
    ('stats.leased', '0', (SELECT leased::text FROM s)),
    ('stats.delayed', '0', (SELECT delayed::text FROM s)),
    ('stats.dead', '0', (SELECT dead::text FROM s)),
    ('stats.acked', :'events', (SELECT acked::text FROM s)),
    ('claim afterwards', '0', (SELECT count(*) FROM outbox.claim(:'topic', 100))::text)
)
SELECT check_name, expected, coalesce(got, '<null>') AS got,
       CASE WHEN got IS NOT DISTINCT FROM expected THEN 'ok' ELSE 'MISMATCH' END AS result
  FROM checks;
SQL
cat "$OUT/checks.txt"
psql_db -Atc "SELECT 'nack: claims ' || (SELECT count(*) FROM nk_claims) || ', nacks ' || (SELECT count(*) FROM nk_nacks)"
if grep -q MISMATCH "$OUT/checks.txt"; then
	fail "some checks did not hold"
fi
pgc_stop "$C"
if pgc_crash_lines "$C" >"$OUT/crash.txt"; then
	head -n 60 "$OUT/crash.txt" >&2
	fail "the server crashed"
fi
pgc_destroy "$C"
echo "nack: ok"
