#!/usr/bin/env bash
# Installs what building, testing and demonstrating outbox needs on Debian 12:
# PostgreSQL 15 server and headers, pg_partman, pgTAP, pg_prove and the Perl
# modules the TAP tests use, wal2json, and Node.js with npm (t/019_wal_delivery
# reads the WAL with wal2json and with a Node.js client).  Safe to run again;
# it installs only what is missing.  Runs as root, or through sudo for a
# normal user.
#
# OUTBOX_PG_MAJOR=N installs PostgreSQL N's packages instead (what
# scripts/pgchroot.sh does inside a chroot of a newer Debian suite); there,
# a pgTAP package the suite does not carry is left out.
set -euo pipefail

PGV=${OUTBOX_PG_MAJOR:-15}
pkgs=(make gcc "postgresql-$PGV" "postgresql-server-dev-$PGV" "postgresql-$PGV-partman"
      "postgresql-$PGV-pgtap" libtap-parser-sourcehandler-pgtap-perl
      libipc-run-perl faketime prometheus-postgres-exporter prometheus
      "postgresql-$PGV-wal2json")
# Node.js and npm: the examples (on 15) and the WAL client of
# t/019_wal_delivery (everywhere).  A Node.js installed otherwise (with its
# own npm) is used as it is.
command -v npm >/dev/null || pkgs+=(nodejs npm)
# contrib is part of postgresql-N; the metapackage follows the suite's default
if [ "$PGV" = 15 ]; then
	pkgs+=(postgresql-contrib)
	pkgs+=(python3-psycopg) # examples/python
fi
# benchmarks only: PgQ (a baseline) and gnuplot (bench/charts.sh)
if [ "${OUTBOX_BENCH_DEPS:-0}" = 1 ]; then
	pkgs+=("postgresql-$PGV-pgq3" gnuplot-nox)
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

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ "$PGV" != 15 ] && [[ " ${missing[*]} " == *" postgresql-$PGV-pgtap "* ]] &&
	! [[ "$(apt-cache policy "postgresql-$PGV-pgtap")" == *"Candidate: "[0-9]* ]]; then
	echo "install-deps: this suite has no postgresql-$PGV-pgtap: pgTAP left out"
	m=()
	for p in "${missing[@]}"; do [ "$p" = "postgresql-$PGV-pgtap" ] || m+=("$p"); done
	missing=("${m[@]}")
	[ ${#missing[@]} -eq 0 ] && exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
