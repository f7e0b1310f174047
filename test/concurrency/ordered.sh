#!/usr/bin/env bash
# Concurrency check for an ordered topic.  PRODUCERS producers offer EVENTS
# events over KEYS keys (in runs of 1-4 events of one key; 2% of the events
# have no key, 1% are delayed by 200 ms) while CONSUMERS consumers drain
# them: claims of random size (1-20) with 1 s leases, 10% of the deliveries
# nacked with a 20 ms retry_after, 2% of the batches left to expire (reaped
# by the background worker every 50 ms).  The rest is acked in id order
# within each key of a batch, one event per ack or a run of one key's events
# in one ack call (given in reverse order); after a nack the later events of
# its key in that batch are not acked.  Now and then a consumer probes the
# refusals: an ack of an event before the earlier event of its key in the
# same lease, and an ack of an event that a nack handed back; neither may
# count.
#
# Each consumer records every claim (id, key, lease token, attempt, and a
# clock_timestamp() taken after claim() returned) in the claim's
# transaction, and every ack that counted in the ack's transaction.  With
# track_commit_timestamp = on, pg_xact_commit_timestamp(xmin) of an ack's
# log row is the commit time of the ack.  Afterwards:
#
#  (a) for every key, the commit times of its acks rise with the event ids
#      (two events acked by one call share one commit);
#  (b) no event was claimed while an earlier event of its key was
#      unsettled: for an event b claimed at time tb under token T, every
#      earlier event a of b's key was acked with a commit time <= tb, or was
#      claimed under T too (in the same claim).  The topic's max_attempts is
#      1000, so no event dies: settled means acked;
#  (c) every event was acked exactly once, none was claimed after its ack,
#      the topic is empty (outbox.stats) and a claim gets nothing;
#  (d) attempt numbers: a delivery's attempt is 1 + the earlier leases of
#      the event that counted.  A lease counts for an event when it ended
#      without an ack of the event and the event was the first unacked
#      event of its key in that lease (nacked or expired); the later events
#      of its key in that lease were handed back uncounted.  Events without
#      a key count alone; on an unordered topic every unacked lease counts;
#  (e) the refusals: no probing ack counted, and no ack of a run of one
#      key's events counted only part of the run;
#  and the run did exercise it all: nacks, expired leases, claims of several
#  events of one key, handed-back events claimed again, delayed events,
#  events without a key, acks of several events in one call.
#
# Why (a) and (b) cannot accuse a correct server.  Commit timestamps and
# clock_timestamp() read the same clock.  A transaction's commit timestamp
# is taken in RecordTransactionCommit before its commit is written to the
# commit log and before it leaves the proc array, that is before any other
# session can see it committed, and before the commit callbacks with which
# the extension ends leases run.  So if an ack of a settled a before a claim
# handed out b, ack_commit(a) < the moment of that claim < tb, since tb is
# read after claim() returned; (b) holds.  For (a): if a and b of one key
# are acked by different transactions, either both were in one lease, and
# then the consumer acked a and saw that commit return before it began
# b's ack transaction (whose commit time is therefore later); or b was
# claimed after a was settled, and ack_commit(a) < tb < ack_commit(b).  So
# commit times of one key's acks rise strictly with id order.  The checks
# can only miss a violation, not invent one: an ack of a that committed
# between the moment the claim decided and tb hides a claim of b that came
# too early.  The claims of one key are only compared with events that
# existed when they were made: each key belongs to one producer, which
# offers it in id order, one committed transaction after another, so every
# earlier event of a key was committed no later than a later one, and so
# before the later one could be claimed.  (This assumes
# the system clock does not step back during the run.)
#
#   test/concurrency/ordered.sh
#   ORDERED=false test/concurrency/ordered.sh   # the same on an unordered
#                                                # topic: the checks must fail
#
# Needs the extension installed (make install).  Starts and removes its own
# server.  Environment: EVENTS (20000), KEYS (200), CONSUMERS (8),
# PRODUCERS (2), ORDERED (true), ORDERED_GIVE_UP (seconds after which a
# consumer gives up, 150), OUTBOX_TEST_WORK (directory to create the server
# in).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

EVENTS=${EVENTS:-20000}
KEYS=${KEYS:-200}
CONSUMERS=${CONSUMERS:-8}
PRODUCERS=${PRODUCERS:-2}
ORDERED=${ORDERED:-true}
TOPIC=ordered
DB=outbox_ordered
GIVE_UP=${ORDERED_GIVE_UP:-150}
TIMEOUT=$((GIVE_UP + 60))
case "$ORDERED" in
	true | false) ;;
	*) echo "ordered: ORDERED must be true or false, not '$ORDERED'" >&2; exit 2 ;;
esac
if [ "$KEYS" -lt "$PRODUCERS" ] || [ "$EVENTS" -lt 1 ]; then
	echo "ordered: need EVENTS >= 1 and KEYS >= PRODUCERS" >&2
	exit 2
fi

parent=${OUTBOX_TEST_WORK:-}
[ -n "$parent" ] || pgc_scratch parent ordered
C="$parent/ordered-cluster"
[ -e "$C" ] && pgc_destroy "$C"
OUT="$parent/ordered-clients"
rm -rf -- "$OUT"
mkdir -p "$OUT"
pgc_on_exit "rm -rf -- '$OUT'"

fail() {
	echo "ordered: FAIL: $*" >&2
	pgc_log_tail "$C" 30
	exit 1
}

pgc_init "$C"
pgc_start "$C" --conf "$ROOT/test/outbox-test.conf" "max_connections=$((CONSUMERS + PRODUCERS + 20))" \
	"track_commit_timestamp=on" "outbox.enabled=on" "outbox.reap_interval='50ms'" ||
	fail "could not start the server"
psql_db() { pgc_psql "$C" -d "$DB" "$@"; }
pgc_psql "$C" -d postgres -c "CREATE DATABASE $DB" || fail "CREATE DATABASE"
PGOPTIONS="-c client_min_messages=warning" psql_db -c "CREATE EXTENSION outbox CASCADE" || fail "CREATE EXTENSION"

psql_db -v topic="$TOPIC" -v ordered="$ORDERED" <<'SQL' >/dev/null || fail "setup"
SELECT outbox.create_topic(:'topic', max_attempts => 1000, ordered => :ordered);

CREATE TABLE od_offered (id bigint PRIMARY KEY, key text, delayed boolean NOT NULL);
CREATE INDEX ON od_offered (key, id);
-- at: clock_timestamp() read after claim() returned, in the claim's transaction
CREATE TABLE od_claims (id bigint NOT NULL, key text, lease_token uuid NOT NULL, attempt int NOT NULL,
                        consumer int NOT NULL, at timestamptz NOT NULL);
CREATE INDEX ON od_claims (id);
CREATE INDEX ON od_claims (lease_token);
-- one row per ack that counted, written by the ack's transaction; grouped:
-- acked by one call together with other events of its key
CREATE TABLE od_acks (id bigint NOT NULL, lease_token uuid NOT NULL, consumer int NOT NULL,
                      grouped boolean NOT NULL);
CREATE INDEX ON od_acks (id);
CREATE TABLE od_nacks (id bigint NOT NULL, lease_token uuid NOT NULL, consumer int NOT NULL, result text);
CREATE INDEX ON od_nacks (id);
-- acks that must not count: 'before earlier' (an earlier event of the key in
-- the same lease not acked yet), 'after nack' (handed back by a nack)
CREATE TABLE od_probes (id bigint NOT NULL, lease_token uuid NOT NULL, kind text NOT NULL, counted boolean NOT NULL);
-- an ack of a run of one key's events that counted some of them, not all
-- (rolled back, then acked one by one)
CREATE TABLE od_partial (ids bigint[] NOT NULL, lease_token uuid NOT NULL, counted int NOT NULL);
CREATE TABLE od_left (lease_token uuid PRIMARY KEY);
CREATE TABLE od_done (producer int PRIMARY KEY);

-- A producer offers its share of the events in committed chunks of 1-31.
-- Keys 'k000'.. are split among the producers (key number mod producers),
-- so each key is offered by one producer, in id order.
CREATE PROCEDURE od_produce(p_producer int, p_producers int, p_topic text, p_events int, p_keys int)
LANGUAGE plpgsql AS $$
DECLARE
    v_quota int := p_events / p_producers + CASE WHEN p_producer <= p_events % p_producers THEN 1 ELSE 0 END;
    v_mine int := (p_keys - p_producer + p_producers) / p_producers;   -- keys of this producer
    v_n int := 0;
    v_chunk int;
    v_key text;
    v_run int := 0;
    v_delayed boolean;
    v_id bigint;
BEGIN
    WHILE v_n < v_quota LOOP
        v_chunk := least(1 + floor(random() * 31)::int, v_quota - v_n);
        FOR i IN 1 .. v_chunk LOOP
            IF v_run = 0 THEN
                IF random() < 0.02 THEN
                    v_key := NULL;
                    v_run := 1;
                ELSE
                    v_key := 'k' || lpad((p_producer - 1 + p_producers * floor(random() * v_mine)::int)::text, 3, '0');
                    v_run := 1 + floor(random() * 4)::int;
                END IF;
            END IF;
            v_run := v_run - 1;
            v_delayed := random() < 0.01;
            v_id := outbox.offer(p_topic, jsonb_build_object('p', p_producer, 'n', v_n), key => v_key,
                                 available_at => CASE WHEN v_delayed THEN clock_timestamp() + interval '200 ms' END);
            INSERT INTO od_offered VALUES (v_id, v_key, v_delayed);
            v_n := v_n + 1;
        END LOOP;
        COMMIT;
        PERFORM pg_sleep(random() * 0.004);
    END LOOP;
    INSERT INTO od_done VALUES (p_producer);
    COMMIT;
END
$$;

-- A consumer: claim, record the claim, commit; then leave 2% of the batches
-- to expire, and work through the others in id order, each nack or ack in a
-- transaction of its own that also logs it.
CREATE PROCEDURE od_consume(p_consumer int, p_topic text, p_events int, p_producers int, p_give_up int)
LANGUAGE plpgsql AS $$
DECLARE
    v_give_up timestamptz := clock_timestamp() + make_interval(secs => p_give_up);
    v_ids bigint[];
    v_keys text[];
    v_attempts int[];
    v_tokens uuid[];
    v_tok uuid;
    v_at timestamptz;
    v_n int;
    v_stopped text[];   -- keys of this batch whose later events a nack handed back
    v_done bigint[];    -- events of this batch already acked or tried
    v_later int[];      -- positions of the later events of the current key in the batch
    v_run bigint[];
    v_ok boolean;
    v_result text;
BEGIN
    LOOP
        IF clock_timestamp() > v_give_up THEN
            RAISE EXCEPTION 'consumer %: not done after % s', p_consumer, p_give_up;
        END IF;
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.key ORDER BY c.id),
               array_agg(c.attempt ORDER BY c.id), array_agg(DISTINCT c.lease_token)
          INTO v_ids, v_keys, v_attempts, v_tokens
          FROM outbox.claim(p_topic, batch_size => 1 + floor(random() * 20)::int, lease => '1 second') c;
        IF v_ids IS NULL THEN
            COMMIT;
            EXIT WHEN (SELECT count(*) FROM od_done) = p_producers
                  AND (SELECT count(*) FROM od_acks) >= p_events;
            PERFORM pg_sleep(0.005);
            CONTINUE;
        END IF;
        v_at := clock_timestamp();
        IF cardinality(v_tokens) <> 1 THEN
            RAISE EXCEPTION 'consumer %: one claim returned % lease tokens', p_consumer, cardinality(v_tokens);
        END IF;
        v_tok := v_tokens[1];
        INSERT INTO od_claims (id, key, lease_token, attempt, consumer, at)
        SELECT u.id, u.key, v_tok, u.attempt, p_consumer, v_at
          FROM unnest(v_ids, v_keys, v_attempts) AS u(id, key, attempt);
        COMMIT;

        IF random() < 0.02 THEN          -- left to expire
            INSERT INTO od_left VALUES (v_tok);
            COMMIT;
            CONTINUE;
        END IF;

        v_stopped := '{}';
        v_done := '{}';
        FOR i IN 1 .. cardinality(v_ids) LOOP
            CONTINUE WHEN v_ids[i] = ANY (v_done);
            IF v_keys[i] = ANY (v_stopped) THEN
                -- handed back by the nack of an earlier event of its key
                IF random() < 0.25 THEN
                    v_ok := outbox.ack(v_ids[i], v_tok);
                    INSERT INTO od_probes VALUES (v_ids[i], v_tok, 'after nack', v_ok);
                    IF v_ok THEN
                        INSERT INTO od_acks VALUES (v_ids[i], v_tok, p_consumer, false);
                    END IF;
                    COMMIT;
                END IF;
                CONTINUE;
            END IF;
            IF random() < 0.10 THEN
                v_result := outbox.nack(v_ids[i], v_tok, 'failed on purpose', retry_after => '20 ms');
                INSERT INTO od_nacks VALUES (v_ids[i], v_tok, p_consumer, v_result);
                COMMIT;
                IF v_keys[i] IS NOT NULL THEN
                    v_stopped := v_stopped || v_keys[i];
                END IF;
                CONTINUE;
            END IF;

            v_later := '{}';
            IF v_keys[i] IS NOT NULL THEN
                SELECT coalesce(array_agg(j ORDER BY j), '{}') INTO v_later
                  FROM generate_series(i + 1, cardinality(v_ids)) j
                 WHERE v_keys[j] = v_keys[i] AND NOT v_ids[j] = ANY (v_done);
            END IF;

            -- probe: an ack of a later event of the key, before this one
            IF cardinality(v_later) > 0 AND random() < 0.05 THEN
                v_ok := outbox.ack(v_ids[v_later[1]], v_tok);
                INSERT INTO od_probes VALUES (v_ids[v_later[1]], v_tok, 'before earlier', v_ok);
                IF v_ok THEN
                    INSERT INTO od_acks VALUES (v_ids[v_later[1]], v_tok, p_consumer, false);
                    v_done := v_done || v_ids[v_later[1]];
                END IF;
                COMMIT;
            END IF;

            -- this event and the next 1-3 of its key in one call, latest first
            IF cardinality(v_later) > 0 AND random() < 0.4 THEN
                SELECT array_agg(v_ids[p] ORDER BY v_ids[p] DESC) INTO v_run
                  FROM unnest(i || v_later[1 : 1 + floor(random() * 3)::int]) AS p
                 WHERE NOT v_ids[p] = ANY (v_done);
                IF cardinality(v_run) > 1 THEN
                    v_n := outbox.ack(v_run, v_tok);
                    IF v_n = cardinality(v_run) THEN
                        INSERT INTO od_acks SELECT u, v_tok, p_consumer, true FROM unnest(v_run) u;
                        COMMIT;
                        v_done := v_done || v_run;
                        CONTINUE;
                    ELSIF v_n = 0 THEN
                        COMMIT;
                        v_done := v_done || v_run;
                        CONTINUE;
                    END IF;
                    -- some of the run counted: undo, note it, ack one by one
                    ROLLBACK;
                    INSERT INTO od_partial VALUES (v_run, v_tok, v_n);
                    COMMIT;
                END IF;
            END IF;

            v_ok := outbox.ack(v_ids[i], v_tok);
            IF v_ok THEN
                INSERT INTO od_acks VALUES (v_ids[i], v_tok, p_consumer, false);
            END IF;
            COMMIT;
            v_done := v_done || v_ids[i];
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
SECONDS=0
for ((k = 1; k <= CONSUMERS; k++)); do
	client "consumer-$k" "CALL od_consume($k, '$TOPIC', $EVENTS, $PRODUCERS, $GIVE_UP)"
done
for ((k = 1; k <= PRODUCERS; k++)); do
	client "producer-$k" "CALL od_produce($k, $PRODUCERS, '$TOPIC', $EVENTS, $KEYS)"
done
bad=0
for i in "${!pids[@]}"; do
	rc=0
	wait "${pids[$i]}" || rc=$?
	# a client prints nothing unless something went wrong
	if [ "$rc" != 0 ] || [ -s "${logs[$i]}" ]; then
		echo "ordered: $(basename "${logs[$i]}" .log) exited with status $rc:" >&2
		cat "${logs[$i]}" >&2
		bad=1
	fi
done
echo "ordered: $EVENTS events over $KEYS keys, ordered => $ORDERED, $CONSUMERS consumers, $PRODUCERS producers: done in ${SECONDS} s"

# The checks run also after a failed client, to tell what went wrong.
check_start=$SECONDS
psql_db -v topic="$TOPIC" -v events="$EVENTS" -v ordered="$ORDERED" -P pager=off -P footer=off \
	>"$OUT/checks.txt" <<'SQL' || fail "running the checks"
-- the commit time and transaction of each event's first counted ack
CREATE TEMP TABLE ack_at AS
SELECT id, (array_agg(pg_xact_commit_timestamp(xmin) ORDER BY pg_xact_commit_timestamp(xmin)))[1] AS at,
       (array_agg(xmin::text ORDER BY pg_xact_commit_timestamp(xmin)))[1] AS xid, count(*) AS n
  FROM od_acks GROUP BY id;
ALTER TABLE ack_at ADD PRIMARY KEY (id);
ANALYZE ack_at;

-- (a) pairs of consecutive acked events of one key whose acks committed out of order
CREATE TEMP TABLE bad_commit_order AS
SELECT * FROM (
    SELECT o.key, o.id, k.at, k.xid,
           lag(o.id) OVER w AS prev_id, lag(k.at) OVER w AS prev_at, lag(k.xid) OVER w AS prev_xid
      FROM od_offered o JOIN ack_at k USING (id)
     WHERE o.key IS NOT NULL
    WINDOW w AS (PARTITION BY o.key ORDER BY o.id)) x
 WHERE prev_at > at OR (prev_at = at AND prev_xid <> xid);

-- (b) deliveries made while an earlier event of the key was unsettled, with
-- the lowest such earlier event
CREATE TEMP TABLE early_claims AS
SELECT b.id, b.key, b.lease_token, b.at, b.consumer,
       (SELECT min(a.id) FROM od_offered a LEFT JOIN ack_at k ON k.id = a.id
         WHERE a.key = b.key AND a.id < b.id
           AND (k.at IS NULL OR k.at > b.at)
           AND NOT EXISTS (SELECT 1 FROM od_claims s WHERE s.id = a.id AND s.lease_token = b.lease_token)
       ) AS unsettled
  FROM od_claims b
 WHERE b.key IS NOT NULL;
DELETE FROM early_claims WHERE unsettled IS NULL;

-- (d) each delivery, whether its lease counted as an attempt, and the
-- attempt it should have had
CREATE TEMP TABLE deliveries AS
SELECT c.*,
       EXISTS (SELECT 1 FROM od_acks a WHERE a.id = c.id AND a.lease_token = c.lease_token) AS acked,
       EXISTS (SELECT 1 FROM od_nacks n WHERE n.id = c.id AND n.lease_token = c.lease_token
                                          AND n.result = 'retry') AS nacked
  FROM od_claims c;
CREATE INDEX ON deliveries (lease_token, key, id);
ANALYZE deliveries;
CREATE TEMP TABLE attempts AS
SELECT *, 1 + coalesce(sum(counted::int) OVER (PARTITION BY id ORDER BY at
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS expected
  FROM (SELECT d.*,
               CASE WHEN d.acked THEN false
                    WHEN d.nacked OR NOT :ordered OR d.key IS NULL THEN true
                    ELSE NOT EXISTS (SELECT 1 FROM deliveries e
                                      WHERE e.lease_token = d.lease_token AND e.key = d.key
                                        AND e.id < d.id AND NOT e.acked)
               END AS counted
          FROM deliveries d) x;

WITH s AS (SELECT * FROM outbox.stats WHERE topic = :'topic'),
checks(check_name, expected, got) AS (
    VALUES
    ('events offered', :'events', (SELECT count(*) FROM od_offered)::text),
    ('(a) keys whose acks committed out of id order', '0',
        (SELECT count(DISTINCT key) FROM bad_commit_order)::text),
    ('(a) ... pairs of events', '0', (SELECT count(*) FROM bad_commit_order)::text),
    ('(b) deliveries while an earlier event of the key was unsettled', '0',
        (SELECT count(*) FROM early_claims)::text),
    ('(b) ... keys', '0', (SELECT count(DISTINCT key) FROM early_claims)::text),
    ('(c) successful acks', :'events', (SELECT count(*) FROM od_acks)::text),
    ('(c) events with two successful acks', '0', (SELECT count(*) FROM ack_at WHERE n > 1)::text),
    ('(c) offered events never acked', '0',
        (SELECT count(*) FROM od_offered o WHERE NOT EXISTS (SELECT 1 FROM ack_at k WHERE k.id = o.id))::text),
    ('(c) acked ids never offered', '0',
        (SELECT count(*) FROM ack_at k WHERE NOT EXISTS (SELECT 1 FROM od_offered o WHERE o.id = k.id))::text),
    ('(c) claims after the event''s ack', '0',
        (SELECT count(*) FROM od_claims c JOIN ack_at k USING (id) WHERE c.at > k.at)::text),
    ('(c) stats.available', '0', (SELECT available::text FROM s)),
    ('(c) stats.leased', '0', (SELECT leased::text FROM s)),
    ('(c) stats.delayed', '0', (SELECT delayed::text FROM s)),
    ('(c) stats.dead', '0', (SELECT dead::text FROM s)),
    ('(c) stats.offered', :'events', (SELECT offered::text FROM s)),
    ('(c) stats.acked', :'events', (SELECT acked::text FROM s)),
    ('(c) claim afterwards', '0', (SELECT count(*) FROM outbox.claim(:'topic', 100))::text),
    ('(d) deliveries with another attempt than expected', '0',
        (SELECT count(*) FROM attempts WHERE attempt <> expected)::text),
    ('(e) acks counted before an earlier event of the key in the lease', '0',
        (SELECT count(*) FROM od_probes WHERE kind = 'before earlier' AND counted)::text),
    ('(e) acks counted of events a nack handed back', '0',
        (SELECT count(*) FROM od_probes WHERE kind = 'after nack' AND counted)::text),
    ('(e) acks of one key''s run that counted part of it', '0', (SELECT count(*) FROM od_partial)::text),
    ('exercised: nacks that sent an event to retry', 'true',
        ((SELECT count(*) FROM od_nacks WHERE result = 'retry') > 0)::text),
    ('exercised: leases left to expire', 'true', ((SELECT count(*) FROM od_left) > 0)::text),
    ('exercised: claims with several events of one key', 'true',
        (EXISTS (SELECT 1 FROM od_claims WHERE key IS NOT NULL
                  GROUP BY lease_token, key HAVING count(*) > 1))::text),
    ('exercised: acks of several events in one call', 'true',
        (EXISTS (SELECT 1 FROM od_acks WHERE grouped))::text),
    ('exercised: probes of both kinds', 'true',
        ((SELECT count(DISTINCT kind) FROM od_probes) = 2)::text),
    ('exercised: events claimed again', 'true',
        (EXISTS (SELECT 1 FROM od_claims GROUP BY id HAVING count(*) > 1))::text),
    ('exercised: delayed events, events without a key', 'true',
        (EXISTS (SELECT 1 FROM od_offered WHERE delayed) AND EXISTS (SELECT 1 FROM od_offered WHERE key IS NULL))::text)
)
SELECT check_name, expected, coalesce(got, '<null>') AS got,
       CASE WHEN got IS NOT DISTINCT FROM expected THEN 'ok' ELSE 'MISMATCH' END AS result
  FROM checks;

-- a few of the violations, if any
SELECT 'commit order' AS what, key, prev_id AS earlier, id AS later,
       prev_at AS earlier_ack_commit, at AS later_ack_commit
  FROM bad_commit_order ORDER BY key, id LIMIT 5;
SELECT 'early claim' AS what, e.key, e.id, e.unsettled AS earlier_unsettled, e.at AS claimed_at,
       k.at AS earlier_ack_commit
  FROM early_claims e LEFT JOIN ack_at k ON k.id = e.unsettled ORDER BY e.key, e.id, e.at LIMIT 5;
SELECT 'attempt' AS what, id, key, lease_token, at, attempt, expected
  FROM attempts WHERE attempt <> expected ORDER BY id, at LIMIT 5;
SQL
cat "$OUT/checks.txt"
psql_db -Atc "SELECT 'ordered: claims ' || (SELECT count(DISTINCT lease_token) FROM od_claims)
               || ', deliveries ' || (SELECT count(*) FROM od_claims)
               || ', nacks ' || (SELECT count(*) FROM od_nacks WHERE result = 'retry')
               || ', leases left to expire ' || (SELECT count(*) FROM od_left)
               || ', claims with several events of one key '
               || (SELECT count(DISTINCT lease_token) FROM (SELECT lease_token FROM od_claims WHERE key IS NOT NULL
                                                             GROUP BY lease_token, key HAVING count(*) > 1) x)
               || ', acks in runs ' || (SELECT count(*) FROM od_acks WHERE grouped)
               || ', probes ' || (SELECT count(*) FROM od_probes)"
echo "ordered: checks took $((SECONDS - check_start)) s"
[ "$bad" = 0 ] || fail "a client failed"
if grep -q MISMATCH "$OUT/checks.txt"; then
	fail "some checks did not hold"
fi
pgc_stop "$C"
if pgc_crash_lines "$C" >"$OUT/crash.txt"; then
	head -n 60 "$OUT/crash.txt" >&2
	fail "the server crashed"
fi
pgc_destroy "$C"
echo "ordered: ok"
