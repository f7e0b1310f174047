#!/usr/bin/env bash
# Runs every outbox test suite: installs what is missing, builds and installs
# the extension, then runs each suite on throwaway servers and prints one
# PASS/FAIL line per suite.  Exits non-zero if any suite failed.
#
#   scripts/test.sh              all suites
#   scripts/test.sh pgtap ...    only the named suites
#   scripts/test.sh --pg=17 ...  the same against PostgreSQL 17 (or 18), in a
#                                Debian chroot (scripts/in-chroot.sh);
#                                --pg=15 is the machine's own, as without it
#
# Suites:
#   regress      pg_regress (sql/, expected/) through `make installcheck`
#   isolation    isolation specs (specs/) through `make installcheck`, once
#                the Makefile declares ISOLATION
#   tap          Perl TAP tests (t/) through `make installcheck`, once the
#                Makefile declares TAP_TESTS
#   pgtap        pgTAP files test/*.sql under pg_prove
#   concurrency  test/concurrency/drain.sh, then nack.sh, then ordered.sh
#   fuzz         test/fuzz/run.sh: 20,000 hostile calls, fixed seed
#   examples     examples/test.sh: the Node.js and Python example relays
#   dist         scripts/dist-check.sh: make dist, then the tarball builds,
#                installs and passes the regress and isolation suites
#   upgrade      test/upgrade/run.sh: a database moves from PostgreSQL 15 to
#                17 and to 18 (OUTBOX_UPGRADE_TO) by pg_dump and pg_restore
#   sanitize     scripts/sanitize.sh: regress and isolation under ASan and
#                UBSan (last: it installs an instrumented build for a while)
# A suite that finds no tests fails.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

pg_major=
case "${1:-}" in
	--pg=*) pg_major=${1#--pg=}; shift ;;
	--pg) pg_major=${2:-}; shift; [ $# -gt 0 ] && shift ;;
esac
if [ -n "$pg_major" ] && [ "$pg_major" != 15 ] && [ -z "${OUTBOX_IN_CHROOT:-}" ]; then
	exec bash "$ROOT/scripts/in-chroot.sh" "$pg_major" scripts/test.sh "$@"
fi

# The extension is installed machine-wide: two runs at once would test each
# other's build, so runs take turns.  flock -o keeps the lock out of the
# servers the run starts.
LOCK=/tmp/outbox-install.lock
if [ -z "${OUTBOX_INSTALL_LOCKED:-}" ]; then
	export OUTBOX_INSTALL_LOCKED=1
	rc=0
	flock -n -E 75 -o "$LOCK" bash "$ROOT/scripts/test.sh" "$@" || rc=$?
	[ "$rc" = 75 ] || exit "$rc"
	echo "test: waiting for another run that holds $LOCK" >&2
	exec flock -o "$LOCK" bash "$ROOT/scripts/test.sh" "$@"
fi
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

say() { printf '\n==== %s\n' "$*"; }

# Runs a command as the OS user the servers run as (postgres when root).
as_server() { pgc_as_server "$@"; }

# Prints the value of a variable of the project's Makefile.
make_var() {
	make -s --no-print-directory -C "$TREE" -f Makefile -f "$WORK/print.mk" \
		PG_CONFIG="$PG_CONFIG" "print-$1" 2>/dev/null
}

# ---------------------------------------------------------------- suites

# `make installcheck` in the postgres-owned copy of the tree, restricted to
# one kind of test by emptying the variables of the others.
installcheck() {
	local what=$1; shift
	local rc=0 out="$WORK/installcheck-$what.out"
	rm -rf -- "$TREE/regression.diffs" "$TREE/regression.out" "$TREE/results" "$TREE/output_iso" \
		"$TREE/tmp_check" "$TREE/tmp_check_iso" "$TREE/log"
	as_server make -C "$TREE" --no-print-directory PG_CONFIG="$PG_CONFIG" "$@" installcheck 2>&1 |
		tee "$out" || rc=$?
	if [ "$rc" != 0 ]; then
		local f t
		for f in "$TREE/regression.diffs" "$TREE/output_iso/regression.diffs"; do
			if [ -s "$f" ]; then
				echo "---- $what: ${f#"$TREE"/} ----"
				cat "$f"
			fi
		done
		# The log of each failed TAP script.
		sed -n 's|^t/\([^ ]*\)\.pl *(Wstat.*|\1|p' "$out" | while read -r t; do
			f="$TREE/tmp_check/log/regress_log_$t"
			[ -f "$f" ] || continue
			echo "---- $what: ${f#"$TREE"/} (last 80 lines) ----"
			tail -n 80 "$f"
		done
	fi
	return "$rc"
}

suite_regress() {
	local tests t missing=0
	tests=$(make_var REGRESS)
	if [ -z "${tests// /}" ]; then
		echo "regress: the Makefile lists no REGRESS tests"
		return 1
	fi
	for t in $tests; do
		[ -f "$TREE/sql/$t.sql" ] || { echo "regress: sql/$t.sql is missing"; missing=1; }
		[ -f "$TREE/expected/$t.out" ] || { echo "regress: expected/$t.out is missing"; missing=1; }
	done
	[ "$missing" = 0 ] || return 1
	installcheck regress ISOLATION= TAP_TESTS=
}

suite_isolation() {
	local tests t missing=0
	tests=$(make_var ISOLATION)
	if [ -z "${tests// /}" ]; then
		echo "isolation: specs/ holds specs but the Makefile declares no ISOLATION tests"
		return 1
	fi
	for t in $tests; do
		[ -f "$TREE/specs/$t.spec" ] || { echo "isolation: specs/$t.spec is missing"; missing=1; }
		[ -f "$TREE/expected/$t.out" ] || { echo "isolation: expected/$t.out is missing"; missing=1; }
	done
	[ "$missing" = 0 ] || return 1
	installcheck isolation REGRESS= TAP_TESTS=
}

suite_tap() {
	if [ -z "$(make_var TAP_TESTS)" ]; then
		echo "tap: t/ holds tests but the Makefile does not set TAP_TESTS = 1"
		return 1
	fi
	if ! compgen -G "$TREE/t/*.pl" >/dev/null; then
		echo "tap: no tests in t/*.pl"
		return 1
	fi
	# OUTBOX_TAP_TESTS="t/001_worker.pl ..." runs only those scripts;
	# OUTBOX_PROVE_FLAGS=--verbose shows every line they print.
	installcheck tap REGRESS= ISOLATION= ${OUTBOX_TAP_TESTS:+PROVE_TESTS="$OUTBOX_TAP_TESTS"} \
		${OUTBOX_PROVE_FLAGS:+PROVE_FLAGS="$OUTBOX_PROVE_FLAGS"} || return 1
	# PGXS turns the TAP run into an echo on a PostgreSQL built without TAP
	# support: a run that executed no test is a failure.
	local files tests
	files=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1/p' "$WORK/installcheck-tap.out" | tail -n 1)
	tests=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\2/p' "$WORK/installcheck-tap.out" | tail -n 1)
	if [ -z "$files" ] || [ "$files" = 0 ] || [ "$tests" = 0 ]; then
		echo "tap: prove ran no test (is PostgreSQL built with TAP support?)"
		return 1
	fi
	echo "tap: $files scripts, $tests tests"
}

suite_pgtap() {
	local files=() f
	for f in test/*.sql; do [ -f "$f" ] && files+=("$f"); done
	if [ ${#files[@]} -eq 0 ]; then
		echo "pgtap: no tests in test/*.sql"
		return 1
	fi
	command -v pg_prove >/dev/null || { echo "pgtap: pg_prove is not installed"; return 1; }

	local c="$WORK/pgtap" rc=0
	pgc_init "$c" || return 1
	pgc_start "$c" --conf "$ROOT/test/outbox-test.conf" || return 1
	# outbox is installed once in the database "postgres" so that the
	# cluster-wide roles its install script creates exist, committed, before
	# the tests begin: a test that installs outbox in a second database
	# while its own transaction holds uncommitted roles would wait on itself.
	if ! pgc_psql "$c" -d postgres -c "CREATE DATABASE outbox_test" ||
		! PGOPTIONS="-c client_min_messages=warning" pgc_psql "$c" -d postgres -c "CREATE EXTENSION outbox CASCADE" ||
		! pgc_psql "$c" -d outbox_test -c "CREATE EXTENSION pgtap"; then
		pgc_destroy "$c"
		return 1
	fi
	PGOPTIONS="-c client_min_messages=warning" pg_prove --nocolor --failures --comments -h "$(pgc_host "$c")" -p "$(pgc_port "$c")" \
		-U postgres -d outbox_test "${files[@]}" || rc=$?
	pgc_stop "$c" || rc=1
	if grep -E -q 'terminated by signal|PANIC|TRAP:' "$c/server.log"; then
		echo "pgtap: the server crashed during the tests:"
		grep -E -B2 -A5 'terminated by signal|PANIC|TRAP:' "$c/server.log" | head -n 60
		rc=1
	elif [ "$rc" != 0 ]; then
		pgc_log_tail "$c" 30 2>&1
	fi
	pgc_destroy "$c"
	return "$rc"
}

suite_concurrency() {
	[ -f "$ROOT/test/concurrency/drain.sh" ] || { echo "concurrency: test/concurrency/drain.sh is missing"; return 1; }
	[ -f "$ROOT/test/concurrency/nack.sh" ] || { echo "concurrency: test/concurrency/nack.sh is missing"; return 1; }
	[ -f "$ROOT/test/concurrency/ordered.sh" ] || { echo "concurrency: test/concurrency/ordered.sh is missing"; return 1; }
	OUTBOX_TEST_WORK="$WORK" bash "$ROOT/test/concurrency/drain.sh" || return 1
	OUTBOX_TEST_WORK="$WORK" bash "$ROOT/test/concurrency/nack.sh" || return 1
	OUTBOX_TEST_WORK="$WORK" bash "$ROOT/test/concurrency/ordered.sh"
}

suite_fuzz() {
	[ -f "$ROOT/test/fuzz/run.sh" ] || { echo "fuzz: test/fuzz/run.sh is missing"; return 1; }
	OUTBOX_TEST_WORK="$WORK" bash "$ROOT/test/fuzz/run.sh" "${OUTBOX_FUZZ_SEED:-1}" "${OUTBOX_FUZZ_CALLS:-20000}"
}

suite_examples() {
	[ -f "$ROOT/examples/test.sh" ] || { echo "examples: examples/test.sh is missing"; return 1; }
	OUTBOX_TEST_WORK="$WORK" bash "$ROOT/examples/test.sh"
}

suite_dist() {
	[ -f "$ROOT/scripts/dist-check.sh" ] || { echo "dist: scripts/dist-check.sh is missing"; return 1; }
	bash "$ROOT/scripts/dist-check.sh"
}

suite_upgrade() {
	[ -f "$ROOT/test/upgrade/run.sh" ] || { echo "upgrade: test/upgrade/run.sh is missing"; return 1; }
	local v rc=0
	for v in ${OUTBOX_UPGRADE_TO:-17 18}; do
		bash "$ROOT/test/upgrade/run.sh" "$v" || rc=1
	done
	return "$rc"
}

suite_sanitize() {
	bash "$ROOT/scripts/sanitize.sh"
}

# ---------------------------------------------------------------- driver

# Suites that are part of the project: regress, pgtap, concurrency and fuzz always;
# isolation and tap once the Makefile or the tree has any of them.
all_suites() {
	echo regress
	if [ -n "$(make_var ISOLATION)" ] || compgen -G "$ROOT/specs/*.spec" >/dev/null; then
		echo isolation
	fi
	if [ -n "$(make_var TAP_TESTS)" ] || compgen -G "$ROOT/t/*.pl" >/dev/null; then
		echo tap
	fi
	echo pgtap
	echo concurrency
	echo fuzz
	# the chroots carry no psycopg; the upgrade goes from
	# the machine's 15 to the chroots' 17 and 18, not from inside one
	[ -n "${OUTBOX_IN_CHROOT:-}" ] || echo examples
	# make dist archives the git checkout, which the chroots' copies are not
	[ -n "${OUTBOX_IN_CHROOT:-}" ] || echo dist
	[ -n "${OUTBOX_IN_CHROOT:-}" ] || echo upgrade
	echo sanitize
}

# Stops servers left running under $WORK by a suite that was killed (a TAP
# script killed mid-run leaves its nodes up): each is identified by its
# postmaster.pid and must have its data directory as working directory.
stop_strays() {
	local pidfile pid i
	while IFS= read -r pidfile; do
		pid=$(head -n 1 "$pidfile" 2>/dev/null)
		[[ "$pid" =~ ^[0-9]+$ ]] || continue
		[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(dirname "$pidfile")" ] || continue
		echo "test: stopping a server left running in $(dirname "$pidfile")" >&2
		kill -INT "$pid" 2>/dev/null || continue
		for ((i = 0; i < 60; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
	done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
}

RESULTS=()
record() { RESULTS+=("$(printf '%-12s %s  (%ss)' "$1" "$2" "$3")"); }

summary() {
	local passed=0 failed=0 r
	say "summary"
	for r in "${RESULTS[@]}"; do
		echo "$r"
		case "$r" in *" PASS "*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
	done
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}

WORK=$(mktemp -d /tmp/outbox-test.XXXXXX) || exit 1
chmod 755 "$WORK"
if [ "$(id -u)" = 0 ]; then chown "$PGC_OSUSER": "$WORK"; fi
pgc_on_exit stop_strays
pgc_on_exit "rm -rf -- '$WORK'"
# shellcheck disable=SC2016
printf 'print-%%:\n\t@echo $($*)\n' >"$WORK/print.mk"
TREE="$WORK/tree"

say "dependencies"
if ! bash "$ROOT/scripts/install-deps.sh"; then
	echo "test: installing dependencies failed" >&2
	exit 1
fi

say "build and install"
# From a fresh copy the server user can write: pg_regress, isolation and TAP
# write their results next to the sources.
build_ok=1
bash "$ROOT/scripts/build-install.sh" "$TREE" || build_ok=0
if [ "$(id -u)" = 0 ]; then chown -R "$PGC_OSUSER": "$TREE"; fi
[ "$build_ok" = 1 ] && echo "built and installed from $TREE"

if [ $# -gt 0 ]; then
	suites=("$@")
else
	mapfile -t suites < <(all_suites)
fi

# Suites after a failed build or an interrupt do not run and count as failed.
not_run=
[ "$build_ok" = 1 ] || not_run="the build or install failed"
for s in "${suites[@]}"; do
	if ! declare -F "suite_$s" >/dev/null; then
		echo "test: unknown suite '$s'" >&2
		record "$s" FAIL 0
		continue
	fi
	if [ -n "$not_run" ]; then
		echo "test: $s not run: $not_run" >&2
		record "$s" FAIL 0
		continue
	fi
	say "suite: $s"
	start=$SECONDS
	rc=0
	"suite_$s" || rc=$?
	if [ "$rc" = 0 ]; then
		record "$s" PASS $((SECONDS - start))
	else
		record "$s" FAIL $((SECONDS - start))
	fi
	[ "$rc" != 130 ] || not_run="interrupted"
done

summary
