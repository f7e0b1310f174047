#!/usr/bin/env bash
# Runs one of the project's scripts against another major version of
# PostgreSQL, in the Debian chroot of scripts/pgchroot.sh (built and cached
# on first use): `make test PG=17`, `make demo PG=18`.
#
#   scripts/in-chroot.sh VERSION SCRIPT [args...]    SCRIPT: scripts/test.sh
#                                                    or scripts/demo.sh
#
# A clean copy of the tree (no .git, no build outputs) goes into the
# chroot's /tmp, and SCRIPT runs there, as root of the chroot, with that
# version's pg_config; it builds, installs into the chroot's PostgreSQL and
# starts servers as the chroot's postgres user, exactly as on the machine's
# own PostgreSQL 15.  Nothing is installed on the machine itself.  OUTBOX_*
# settings of the environment are passed on.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
V=${1:?usage: in-chroot.sh VERSION SCRIPT [args...]}
SCRIPT=${2:?usage: in-chroot.sh VERSION SCRIPT [args...]}
shift 2

say() { printf '\n==== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
	echo "${SCRIPT##*/}: PG=$V runs in a Debian chroot, which needs root" >&2
	exit 1
fi

say "chroot: PostgreSQL $V"
start=$SECONDS
DIR=$(bash "$ROOT/scripts/pgchroot.sh" "$V") || {
	echo "${SCRIPT##*/}: no chroot with PostgreSQL $V" >&2
	exit 1
}
echo "chroot $DIR ready after $((SECONDS - start)) s:" \
	"$(grep -E '^(suite|postgresql-)' "$DIR/.outbox-chroot" | tr '\n' ' ')"

SRC=$(mktemp -d "$DIR/tmp/outbox-src.XXXXXX") || exit 1
trap 'rm -rf --one-file-system -- "$SRC"' EXIT
chmod 755 "$SRC"
tar -C "$ROOT" -cf - \
	--exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./output_iso \
	--exclude=./results --exclude=./log --exclude=./regression.diffs \
	--exclude=./regression.out . | tar -C "$SRC" -xf - || exit 1

envs=()
for n in $(compgen -e); do
	case "$n" in
		OUTBOX_INSTALL_LOCKED | OUTBOX_IN_CHROOT | OUTBOX_PG_MAJOR) ;;
		OUTBOX_* | PGC_KEEP_FILES) envs+=("$n=${!n}") ;;
	esac
done

# Servers of pgcluster.sh start from their own port range, away from the
# machine's runs.
rc=0
bash "$ROOT/scripts/pgchroot.sh" "$V" run env "${envs[@]}" \
	OUTBOX_IN_CHROOT="$V" OUTBOX_PG_MAJOR="$V" \
	PG_CONFIG="/usr/lib/postgresql/$V/bin/pg_config" \
	PGC_PORT=$((54400 + (V - 15) * 100)) \
	bash "/tmp/${SRC##*/}/$SCRIPT" "$@" || rc=$?
exit "$rc"
