#!/usr/bin/env bash
# Checks the release tarball: `make dist`, then, from the tarball unpacked
# into a fresh directory, build, install, and run the suites with
# `make installcheck` as the server's OS user.  Exits non-zero on any
# failure.
#
#   scripts/dist-check.sh          pg_regress and isolation suites
#   scripts/dist-check.sh --tap    the TAP tests (t/) as well
#
# `make dist` archives the committed tree (HEAD), so this checks what was
# committed, not uncommitted changes.  installcheck runs each suite on a
# throwaway server that pg_regress starts from the installed PostgreSQL
# (REGRESS_OPTS and ISOLATION_OPTS: --temp-instance with
# test/outbox-test.conf, which preloads outbox), as the postgres OS user
# when run as root; pg_partman must be installed (scripts/install-deps.sh).
# The tarball's build stays installed afterwards.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

tap=0
case "${1:-}" in
	--tap) tap=1 ;;
	"") ;;
	*) echo "usage: scripts/dist-check.sh [--tap]" >&2; exit 2 ;;
esac

# The extension is installed machine-wide: take turns with scripts/test.sh
# and scripts/sanitize.sh.  flock -o keeps the lock out of the servers.
LOCK=/tmp/outbox-install.lock
if [ -z "${OUTBOX_INSTALL_LOCKED:-}" ]; then
	export OUTBOX_INSTALL_LOCKED=1
	rc=0
	flock -n -E 75 -o "$LOCK" bash "$ROOT/scripts/dist-check.sh" "$@" || rc=$?
	[ "$rc" = 75 ] || exit "$rc"
	echo "dist-check: waiting for another run that holds $LOCK" >&2
	exec flock -o "$LOCK" bash "$ROOT/scripts/dist-check.sh" "$@"
fi

export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
# shellcheck source=scripts/pgcluster.sh
. "$ROOT/scripts/pgcluster.sh"

start=$SECONDS
fail() { echo "dist-check: FAIL: $*" >&2; exit 1; }
step() { printf '\n==== %s\n' "$*"; }

SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || fail "make install needs root or sudo"
	SUDO=sudo
fi
git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null ||
	fail "$ROOT is not a git checkout with a commit: make dist archives HEAD"

WORK=
pgc_scratch WORK dist || fail "cannot make a work directory"

# ---------------------------------------------------------------- tarball
step "make dist"
tarball=$(make -s --no-print-directory -C "$ROOT" dist DIST_DIR="$WORK") || fail "make dist failed"
tarball=$(printf '%s\n' "$tarball" | tail -n 1)
[ -f "$tarball" ] || fail "make dist did not make a tarball ($tarball)"
name=$(basename "$tarball" .tar.gz)
echo "$name.tar.gz: $(du -k "$tarball" | cut -f1) kB, $(tar -tzf "$tarball" | grep -c -v '/$') files"

# One top directory, named like the tarball, holding what a release needs.
tops=$(tar -tzf "$tarball" | cut -d/ -f1 | sort -u)
[ "$tops" = "$name" ] || fail "the tarball's top directory is '$tops', not '$name'"
for f in META.json LICENSE CHANGELOG.md README.md Makefile outbox.control; do
	tar -tzf "$tarball" "$name/$f" >/dev/null 2>&1 || fail "the tarball lacks $f"
done

# META.json: the keys PGXN requires (meta-spec 1.0), and the files it names.
tar -xzf "$tarball" -O "$name/META.json" | perl -MJSON::PP -e '
	my $m = eval { decode_json(join "", <STDIN>) } or die "META.json is not valid JSON: $@";
	my @err;
	for my $k (qw(name version abstract maintainer license provides meta-spec)) {
		push @err, "no \"$k\"" unless defined $m->{$k};
	}
	my $semver = qr/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;
	push @err, "version is not major.minor.patch" unless ($m->{version} // "") =~ $semver;
	push @err, "meta-spec version is not 1.0.x" unless (($m->{"meta-spec"} // {})->{version} // "") =~ /^1\.0\.\d+$/;
	for my $e (sort keys %{ $m->{provides} // {} }) {
		my $p = $m->{provides}{$e};
		push @err, "provides.$e has no file" unless $p->{file};
		push @err, "provides.$e.version is not major.minor.patch" unless ($p->{version} // "") =~ $semver;
		print "$p->{file}\n" if $p->{file};
		print "$p->{docfile}\n" if $p->{docfile};
	}
	die join("\n", map { "META.json: $_" } @err) . "\n" if @err;
' >"$WORK/meta-files" || fail "META.json does not meet the PGXN meta spec"
while read -r f; do
	tar -tzf "$tarball" "$name/$f" >/dev/null 2>&1 || fail "META.json names $f, which the tarball lacks"
done <"$WORK/meta-files"
echo "META.json: the keys PGXN requires are there; $(paste -sd' ' "$WORK/meta-files") are in the tarball"

# ---------------------------------------------------------------- build
step "build $name from the tarball"
pgc_as_server tar -xzf "$tarball" -C "$WORK" || fail "cannot unpack $tarball"
TREE="$WORK/$name"
[ ! -e "$TREE/.git" ] || fail "the tarball holds .git"
pgc_as_server make -s --no-print-directory -C "$TREE" PG_CONFIG="$PG_CONFIG" ||
	fail "the build from the tarball failed"
echo "built in $TREE"

# ---------------------------------------------------------------- install
step "install"
$SUDO make -s --no-print-directory -C "$TREE" PG_CONFIG="$PG_CONFIG" install >/dev/null ||
	fail "make install from the tarball failed"
# Install scripts the tarball does not ship, left by older installs, would
# be picked by CREATE EXTENSION when they give a shorter path to the
# default version: the suites would not test the tarball's install.
extdir="$("$PG_CONFIG" --sharedir)/extension"
for f in "$extdir"/outbox--*.sql; do
	[ -e "$f" ] || continue
	if [ ! -e "$TREE/$(basename "$f")" ]; then
		echo "dist-check: removing $f: the tarball does not ship it"
		$SUDO rm -f -- "$f" || fail "cannot remove $f"
	fi
done
echo "installed into $("$PG_CONFIG" --pkglibdir) and $extdir"

# ---------------------------------------------------------------- test
what="pg_regress and isolation suites"
args=(TAP_TESTS=)
if [ "$tap" = 1 ]; then
	what="pg_regress, isolation and TAP suites"
	args=()
fi
step "make installcheck: $what"
rc=0
pgc_as_server make -C "$TREE" --no-print-directory PG_CONFIG="$PG_CONFIG" "${args[@]}" installcheck 2>&1 |
	tee "$WORK/installcheck.out" || rc=$?
if [ "$rc" != 0 ]; then
	for f in "$TREE/regression.diffs" "$TREE/output_iso/regression.diffs"; do
		if [ -s "$f" ]; then
			echo "---- ${f#"$TREE"/} (first 200 lines) ----"
			head -n 200 "$f"
		fi
	done
	sed -n 's|^t/\([^ ]*\)\.pl *(Wstat.*|\1|p' "$WORK/installcheck.out" | while read -r t; do
		f="$TREE/tmp_check/log/regress_log_$t"
		[ -f "$f" ] || continue
		echo "---- tmp_check/log/regress_log_$t (last 80 lines) ----"
		tail -n 80 "$f"
	done
	fail "make installcheck from the tarball failed"
fi
# Both suites must have run: pg_regress and pg_isolation_regress each end
# with "All N tests passed."
summary='^(# )?[[:space:]]*All [0-9]+ tests passed'
passed=$(grep -c -E "$summary" "$WORK/installcheck.out")
[ "$passed" -ge 2 ] || fail "expected the regression and the isolation suite to pass, saw $passed summaries"
if [ "$tap" = 1 ]; then
	files=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1/p' "$WORK/installcheck.out" | tail -n 1)
	if [ -z "$files" ] || [ "$files" = 0 ]; then
		fail "prove ran no test (is PostgreSQL built with TAP support?)"
	fi
fi

step "result"
grep -h -E "$summary|^Files=" "$WORK/installcheck.out" | sed 's/^[#[:space:]]*//'
echo "dist-check: PASS: $name.tar.gz builds, installs and passes the $what ($((SECONDS - start)) s)"
