#!/usr/bin/env bash
# Builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs the regression and isolation suites against it: the sanitizer
# runtimes load with the instrumented library, in the server processes
# only.  Fails on any sanitizer report.  The normal build
# is installed again afterwards.
#
#   scripts/sanitize.sh        (what `make sanitize` runs; the tree is the
#                              committed files; OUTBOX_SANITIZE_KEEP=1 keeps
#                              the work directory and its logs)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The extension is installed machine-wide: take turns with scripts/test.sh.
LOCK=/tmp/outbox-install.lock
if [ -z "${OUTBOX_INSTALL_LOCKED:-}" ]; then
	export OUTBOX_INSTALL_LOCKED=1
	exec flock -o "$LOCK" bash "$ROOT/scripts/sanitize.sh" "$@"
fi
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
. "$ROOT/scripts/pgcluster.sh"
SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

bash "$ROOT/scripts/install-deps.sh" || exit 1

WORK=$(mktemp -d /tmp/outbox-sanitize.XXXXXX)
chmod 755 "$WORK"
TREE="$WORK/tree"
mkdir "$TREE"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$ROOT" && git ls-files -z | xargs -0 cp --parents -t "$TREE")
else
	# A copy without git (make test PG=17 runs one in a chroot): all but
	# build outputs.
	tar -C "$ROOT" -cf - --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./output_iso \
		--exclude=./results --exclude=./log --exclude=./regression.diffs \
		--exclude=./regression.out . | tar -C "$TREE" -xf -
fi
[ "$(id -u)" = 0 ] && chown -R "$PGC_OSUSER": "$WORK"
restore() {
	echo "sanitize: installing the normal build again"
	make -s -C "$ROOT" PG_CONFIG="$PG_CONFIG" >/dev/null &&
		$SUDO make -s -C "$ROOT" PG_CONFIG="$PG_CONFIG" install >/dev/null
	[ -n "${OUTBOX_SANITIZE_KEEP:-}" ] || rm -rf -- "$WORK"
}
trap restore EXIT

# The runtime is loaded with the library, after the server started, so it
# does not intercept siglongjmp: an ERROR thrown past an instrumented frame
# would leave that frame's stack redzones poisoned, and a later frame on the
# same stack would be reported falsely.  So stack variables are not
# instrumented (asan-stack=0); heap, globals and shared memory accesses
# through pointers are, and UBSan checks everything.
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g --param asan-stack=0"
make -s -C "$TREE" PG_CONFIG="$PG_CONFIG" with_llvm=no PG_CFLAGS="$FLAGS" \
	SHLIB_LINK="-fsanitize=address,undefined" || exit 1
libs=$(ldd "$TREE/outbox.so")
for rt in libasan libubsan; do
	if [[ "$libs" != *"$rt"* ]]; then
		echo "sanitize: the build is not instrumented ($rt missing)"
		exit 1
	fi
done
$SUDO make -s -C "$TREE" PG_CONFIG="$PG_CONFIG" with_llvm=no install >/dev/null || exit 1
[ "$(id -u)" = 0 ] && chown -R "$PGC_OSUSER": "$TREE"

mkdir -p "$WORK/reports" && chmod 777 "$WORK/reports"
rc=0
pgc_as_server env \
	ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:log_path=$WORK/reports/asan" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$WORK/reports/ubsan" \
	make -C "$TREE" --no-print-directory PG_CONFIG="$PG_CONFIG" TAP_TESTS= installcheck || rc=1
if [ "$rc" != 0 ]; then
	cat "$TREE"/regression.diffs "$TREE"/output_iso/regression.diffs 2>/dev/null | head -n 80
fi
if compgen -G "$WORK/reports/*" >/dev/null; then
	echo "sanitize: sanitizer reports:"
	head -n 60 "$WORK"/reports/*
	rc=1
fi
if grep -h -E 'runtime error:|AddressSanitizer|terminated by signal' \
	"$TREE"/tmp_check/log/*.log "$TREE"/output_iso/log/*.log 2>/dev/null | head -n 20 | grep .; then
	rc=1
fi
[ "$rc" = 0 ] && echo "sanitize: regression and isolation suites pass under ASan and UBSan, no reports"
exit "$rc"
