#!/usr/bin/env bash
# A database moves from the machine's PostgreSQL 15 (pg_partman 4.7) to
# PostgreSQL 17 (or 18; pg_partman 5, in the Debian chroot of
# scripts/pgchroot.sh) by pg_dump and pg_restore, and loses nothing.
#
#   test/upgrade/run.sh [VERSION]     (default 17; run by scripts/test.sh,
#                                      which installed the build on 15)
#
# On 15: 1,000 events in every state (acked, available, leased, delayed,
# retrying with attempts, dead with its history), a dedupe key and a
# per-tenant topic; the ids still to deliver and the acked ids are written
# down, then pg_dump -Fc (15's) dumps the database and pg_dumpall -r the
# roles.  In the chroot: the same
# tree is built and installed for VERSION, a server of VERSION starts and
# the roles and that version's pg_restore the dump into a new database.  Checks:
# every error pg_restore reports is about pg_partman's own configuration
# (part_config changed its columns in pg_partman 5; outbox's log is adopted
# by pg_partman 5 on first use), every table of outbox compares equal row
# by row, the pending events and a new offer are each delivered once and
# nothing acked comes back, the delayed and the retrying event wait and keep
# their attempts, the dead letter keeps its history, dedupe still dedupes,
# and pg_partman makes partitions ahead for the log.  Needs root.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
V=${1:-17}
fail() { echo "upgrade: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (the target version runs in a chroot)"

# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

CHROOT=$(bash "$ROOT/scripts/pgchroot.sh" "$V") || fail "no chroot with PostgreSQL $V"
SHARED=$(mktemp -d "$CHROOT/tmp/outbox-upgrade.XXXXXX") || exit 1
pgc_on_exit "rm -rf --one-file-system -- '$SHARED'"
chmod 755 "$SHARED"
IN=/tmp/${SHARED##*/}            # the same directory, seen from the chroot

# What is compared, on both sides.
cat >"$SHARED/digest.sql" <<'EOF'
\pset format unaligned
\pset tuples_only on
SELECT 'topic ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM (SELECT topic_id, name, max_attempts, retention, backoff_base, backoff_max, ordered, incarnation, per_tenant, parent_id, tenant FROM outbox.topic) x;
SELECT 'topic_state ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM outbox.topic_state x;
SELECT 'event ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM (SELECT id, topic_id, created_at, available_at, key, type, tenant, payload, headers, origin_id FROM outbox.event) x;
SELECT 'retry ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM outbox.retry x;
SELECT 'acked ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM (SELECT topic_id, u FROM outbox.acked, unnest(coalesce(ids, ARRAY[max_id])) u) x;
SELECT 'dead_letter ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM outbox.dead_letter x;
SELECT 'redrive_log ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM outbox.redrive_log x;
SELECT 'dedupe ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM outbox.dedupe x;
SELECT 'tenant_access ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM (SELECT role::text, tenant, granted_at FROM outbox.tenant_access) x;
EOF

# ---------------------------------------------------------------- on 15
A="$SHARED/pg15"
pgc_init "$A" || fail "initdb on 15 failed"
pgc_start "$A" outbox.enabled=off || fail "the 15 server did not start"
q15() { pgc_psql "$A" -X -q -At -v ON_ERROR_STOP=1 -d src "$@"; }
pgc_psql "$A" -X -q -d postgres -c "CREATE DATABASE src" || exit 1
q15 <<'EOF' >/dev/null || fail "setting up the 15 database failed"
SET client_min_messages = warning;
CREATE EXTENSION outbox CASCADE;
CREATE ROLE tenant_a_app;
GRANT outbox_consumer TO tenant_a_app;
SELECT outbox.create_topic('d', max_attempts => 2);
SELECT outbox.create_topic('pt');
SELECT outbox.isolate_tenants('pt');
SELECT outbox.grant_tenant('tenant_a_app', 'a');
SELECT count(*) FROM outbox.offer_batch('d', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 996) g));
SELECT outbox.offer('d', '{"dedupe": 1}', dedupe_key => 'k1');
SELECT outbox.offer('d', '{"later": true}', available_at => now() + interval '1 hour');
SELECT outbox.offer('pt', '{"tenant": "a"}', tenant => 'a');
SELECT outbox.offer('pt', '{"tenant": "b"}', tenant => 'b');
SELECT sum(outbox.ack(ids, tok)) FROM (SELECT array_agg(id) AS ids, min(lease_token::text)::uuid AS tok FROM outbox.claim('d', 400)) c;
SELECT outbox.nack(id, lease_token, 'busy', retry_after => '1 hour') FROM outbox.claim('d');
SELECT outbox.nack(id, lease_token, 'bad input', retry_after => '0') FROM outbox.claim('d');
SELECT outbox.nack(id, lease_token, 'bad input again') FROM outbox.claim('d');
SELECT outbox.reap();
CREATE TABLE held AS SELECT id FROM outbox.claim('d', 50, lease => '1 hour');
EOF
# Still to deliver on topic d: not acked, not dead, not waiting.
q15 >"$SHARED/pending" <<'EOF' || exit 1
SELECT e.id FROM outbox.event e JOIN outbox.topic t USING (topic_id)
WHERE t.name = 'd' AND e.available_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM outbox.acked a WHERE e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])))
  AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)
  AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
ORDER BY e.id;
EOF
q15 -c "SELECT u FROM outbox.acked, unnest(coalesce(ids, ARRAY[max_id])) u ORDER BY 1" >"$SHARED/acked" || exit 1
q15 -c "SELECT max(id) FROM outbox.event" >"$SHARED/max_id" || exit 1
q15 -c "SELECT error_history::text FROM outbox.dead_letters" >"$SHARED/history" || exit 1
q15 -f "$SHARED/digest.sql" >"$SHARED/digest.before" || exit 1
[ "$(wc -l <"$SHARED/pending")" -ge 500 ] || fail "only $(wc -l <"$SHARED/pending") events to deliver on 15"
grep -qx "$(q15 -c 'SELECT min(id) FROM held')" "$SHARED/pending" || fail "the leased events are not among those to deliver"
echo "on 15: $(wc -l <"$SHARED/pending") events to deliver (50 of them leased), $(wc -l <"$SHARED/acked") acked," \
	"$(q15 -c "SELECT delayed || ' delayed, ' || dead || ' dead' FROM outbox.stats WHERE topic = 'd'")"
"$PGC_BINDIR/pg_dump" -Fc -f "$SHARED/src.dump" -h "$(pgc_host "$A")" -p "$(pgc_port "$A")" -U postgres src ||
	fail "pg_dump on 15 failed"
"$PGC_BINDIR/pg_dumpall" -r -f "$SHARED/roles.sql" -h "$(pgc_host "$A")" -p "$(pgc_port "$A")" -U postgres ||
	fail "pg_dumpall --roles-only on 15 failed"
pgc_destroy "$A"

# ---------------------------------------------------------------- on VERSION
mkdir "$SHARED/src"
tar -C "$ROOT" -cf - --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./results --exclude=./log . |
	tar -C "$SHARED/src" -xf - || exit 1
chmod -R a+rX "$SHARED"
cat >"$SHARED/restore.sh" <<'EOF'
set -uo pipefail
V=$1 IN=$2
export PG_CONFIG=/usr/lib/postgresql/$V/bin/pg_config PGC_PORT=$((54400 + (V - 15) * 100 + 50))
cd "$IN/src" || exit 1
make -s install >"$IN/build.log" 2>&1 || { cat "$IN/build.log"; exit 1; }
. scripts/pgcluster.sh
B=$IN/pg$V
pgc_init "$B" || exit 1
pgc_start "$B" outbox.enabled=off || exit 1
q() { pgc_psql "$B" -X -q -At -v ON_ERROR_STOP=1 -d dst "$@"; }
pgc_psql "$B" -X -q -d postgres -c "CREATE DATABASE dst" || exit 1
# the superuser exists already; every other role is made
grep -v -x 'CREATE ROLE postgres;' "$IN/roles.sql" >"$IN/roles-new.sql"
pgc_psql "$B" -X -q -v ON_ERROR_STOP=1 -d postgres -f "$IN/roles-new.sql" 2>"$IN/roles.err" >/dev/null ||
	{ cat "$IN/roles.err"; exit 1; }
rc=0
"$PGC_BINDIR/pg_restore" -d dst -h "$(pgc_host "$B")" -p "$(pgc_port "$B")" -U postgres "$IN/src.dump" \
	2>"$IN/restore.err" || rc=$?
echo "$rc" >"$IN/restore.rc"
q -f "$IN/digest.sql" >"$IN/digest.after" || exit 1
q -c "SELECT outbox.offer('d', '{\"after\": \"upgrade\"}')" >"$IN/new_id" || exit 1
: >"$IN/delivered"
for _ in $(seq 100); do
	ids=$(q -c "SELECT c.id FROM outbox.claim('d', 1000) c WHERE outbox.ack(c.id, c.lease_token)") || exit 1
	[ -z "$ids" ] && break
	echo "$ids" >>"$IN/delivered"
done
q -c "SELECT delayed || '/' || dead FROM outbox.stats WHERE topic = 'd'" >"$IN/waiting" || exit 1
q -c "SELECT error_history::text FROM outbox.dead_letters" >"$IN/history.after" || exit 1
q -c "SELECT attempts FROM outbox.retry r WHERE r.available_at > now() + interval '30 minutes' AND attempts > 0" >"$IN/attempts" || exit 1
q -c "SELECT outbox.offer('d', '{\"again\": 1}', dedupe_key => 'k1') = (SELECT event_id FROM outbox.dedupe WHERE dedupe_key = 'k1')" >"$IN/dedupe" || exit 1
q -c "SET ROLE tenant_a_app; SELECT string_agg(payload->>'tenant', ',') FROM outbox.claim('pt', 10)" >"$IN/tenant" || exit 1
q -c "SELECT outbox.maintain()" >/dev/null || exit 1
q -c "SELECT count(*) FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent = 'outbox.event'::regclass
	  AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
	      >= now() + interval '4 days'" >"$IN/ahead" || exit 1
q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'" >"$IN/partman" || exit 1
pgc_destroy "$B"
EOF
bash "$ROOT/scripts/pgchroot.sh" "$V" run bash "$IN/restore.sh" "$V" "$IN" ||
	fail "the restore on PostgreSQL $V did not run to its end"

# ---------------------------------------------------------------- checks
failures=0
check() {
	if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', expected '$3'"; failures=$((failures + 1)); fi
}
echo "on $V: pg_restore exit code $(cat "$SHARED/restore.rc"), pg_partman $(cat "$SHARED/partman")"
others=$(grep -E 'error:' "$SHARED/restore.err" | grep -v -E 'part_config|custom_time_partitions|errors ignored on restore' || true)
check "pg_restore reports no error but for pg_partman's configuration" "$others" ""
[ -s "$SHARED/restore.err" ] && sed 's/^/  pg_restore: /' "$SHARED/restore.err" | grep -E 'error|warning' | head -n 5
check "every outbox table restored row by row" "$(cat "$SHARED/digest.after")" "$(cat "$SHARED/digest.before")"
new_id=$(cat "$SHARED/new_id")
check "a new offer's id is above every restored id" "$([ "$new_id" -gt "$(cat "$SHARED/max_id")" ] && echo yes)" yes
check "every undelivered event and the new one are delivered, once" \
	"$(sort -n "$SHARED/delivered" | tr '\n' ',')" "$( (cat "$SHARED/pending"; echo "$new_id") | sort -n | tr '\n' ',')"
check "nothing acked on 15 comes back" "$(sort "$SHARED/delivered" "$SHARED/acked" | uniq -d | head -n 3)" ""
check "the delayed and the retrying event wait, the dead letter stays dead" "$(cat "$SHARED/waiting")" "2/1"
check "the retrying event keeps its attempt count" "$(cat "$SHARED/attempts")" "1"
check "the dead letter keeps its history" "$(cat "$SHARED/history.after")" "$(cat "$SHARED/history")"
check "dedupe keys still dedupe" "$(cat "$SHARED/dedupe")" "t"
check "the tenant binding and the per-tenant parts hold" "$(cat "$SHARED/tenant")" "a"
check "pg_partman keeps making the log's partitions ahead" "$([ "$(cat "$SHARED/ahead")" -ge 1 ] && echo yes)" yes
[ "$failures" = 0 ] || fail "$failures check(s) failed"
echo "upgrade: PostgreSQL 15 to $V by pg_dump and pg_restore: nothing lost"
