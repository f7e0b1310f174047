#!/usr/bin/env bash
# Installs what building, testing and demonstrating outbox needs on Debian 12:
# PostgreSQL 15 server and headers, pg_partman, pgTAP, pg_prove and the Perl
# modules the TAP tests use.  Safe to run again; it installs only what is
# missing.  Runs as root, or through sudo for a normal user.
set -euo pipefail

pkgs=(make gcc postgresql-15 postgresql-server-dev-15 postgresql-15-partman
      postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
      libipc-run-perl postgresql-contrib faketime)
if [ "${OUTBOX_BENCH_DEPS:-0}" = 1 ]; then
	pkgs+=(postgresql-15-pgq3)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
	SUDO=sudo
fi

# Keep Debian from creating and starting a 15/main cluster on port 5432: the
# demo and the tests start clusters of their own.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' | $SUDO tee /etc/postgresql-common/createcluster.d/outbox-no-main.conf >/dev/null

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
