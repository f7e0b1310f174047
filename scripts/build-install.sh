#!/usr/bin/env bash
# Builds and installs outbox from a fresh copy of the source tree, so that no
# object file left from older sources or headers gets linked in.
#
#   scripts/build-install.sh DEST
#
# DEST (created if missing, must be empty) receives the copy and keeps the
# build; the tests run from it.  Needs root, or sudo, for `make install`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
DEST=${1:?usage: build-install.sh DEST}

mkdir -p "$DEST"
if [ -n "$(ls -A "$DEST")" ]; then
	echo "build-install: $DEST is not empty" >&2
	exit 1
fi
tar -C "$ROOT" -cf - \
	--exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./output_iso \
	--exclude=./results --exclude=./log --exclude=./regression.diffs \
	--exclude=./regression.out . | tar -C "$DEST" -xf -

SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
make -C "$DEST" --no-print-directory -s PG_CONFIG="$PG_CONFIG"
$SUDO make -C "$DEST" --no-print-directory -s PG_CONFIG="$PG_CONFIG" install >/dev/null
