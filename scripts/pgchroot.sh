#!/usr/bin/env bash
# A Debian chroot with another major version of PostgreSQL, built once from
# Debian's archive and cached, for building and testing outbox against it.
#
#   scripts/pgchroot.sh VERSION              build the chroot if it is not
#                                            cached (or is incomplete) and
#                                            print its path
#   scripts/pgchroot.sh VERSION run CMD...   run CMD (as root) inside it, with
#                                            /proc and /dev mounted for the
#                                            time of the command only
#   scripts/pgchroot.sh VERSION rebuild      build it again from scratch
#   scripts/pgchroot.sh VERSION info         what is installed in it
#
# VERSION is 17 (Debian trixie) or 18 (Debian forky, the testing suite).
# The chroot holds postgresql-VERSION with its headers, pg_partman, pgTAP and
# what the test suites need (scripts/install-deps.sh, run inside it).
# Its cache is $OUTBOX_CHROOT_CACHE (default /var/cache/outbox)/chroot-VERSION;
# the stamp file .outbox-chroot, written last, marks it complete.  A suite
# that no longer carries the wanted PostgreSQL (forky moves on) is an error,
# never a skip.  OUTBOX_CHROOT_SUITE overrides the suite.
#
# The mounts are made in a mount namespace of the command's own (unshare),
# so they are invisible to the rest of the machine and go away with the
# command even if it is killed; they are also unmounted explicitly.
# Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "pgchroot: $*" >&2; exit 1; }

V=${1:-}
case "$V" in
	17) SUITE=${OUTBOX_CHROOT_SUITE:-trixie} ;;
	18) SUITE=${OUTBOX_CHROOT_SUITE:-forky} ;;
	'') die "usage: pgchroot.sh VERSION [run CMD... | rebuild | info]" ;;
	*) die "PostgreSQL $V is not supported here: 17 (trixie) or 18 (forky)" ;;
esac
shift
ACTION=${1:-path}
[ $# -gt 0 ] && shift

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts)"
CACHE=${OUTBOX_CHROOT_CACHE:-/var/cache/outbox}
DIR=$CACHE/chroot-$V
STAMP=$DIR/.outbox-chroot
LOCK=$CACHE/chroot-$V.lock
mkdir -p "$CACHE"

# The mirror the machine's own apt uses (deb822 or one-line sources).
mirror() {
	local m
	m=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -v -- '-security' | head -n 1 || true)
	if [ -z "$m" ]; then
		m=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v -- '-security' | head -n 1 || true)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# Runs a command inside DIR with /proc and /dev mounted, in a private mount
# namespace.
in_chroot() {
	local dir=$1; shift
	unshare --mount --propagation private -- /bin/bash -c '
		dir=$1; shift
		cleanup() { umount -R "$dir/dev" 2>/dev/null || true; umount "$dir/proc" 2>/dev/null || true; }
		trap cleanup EXIT
		mount -t proc proc "$dir/proc" || exit 1
		mount --rbind /dev "$dir/dev" || exit 1
		rc=0
		chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM="${TERM:-dumb}" \
			DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
		exit "$rc"
	' in_chroot "$dir" "$@"
}

# The certificates the machine itself trusts beyond Debian's list (a
# company's or a proxy's, in /usr/local/share/ca-certificates) are trusted
# inside too: npm fetches over HTTPS (t/019_wal_delivery).  Copied again
# whenever they differ.
sync_ca() {
	local dir=$1 src=/usr/local/share/ca-certificates
	local dst=$dir/usr/local/share/ca-certificates
	[ -d "$src" ] || return 0
	diff -r "$src" "$dst" >/dev/null 2>&1 && return 0
	rm -rf -- "$dst"
	mkdir -p "$dst"
	cp -R "$src/." "$dst/"
	in_chroot "$dir" update-ca-certificates --fresh >/dev/null 2>&1 ||
		die "update-ca-certificates failed in the chroot"
}

# Refuses to delete a directory that has anything mounted below it.
remove_tree() {
	local d=$1
	[ -e "$d" ] || return 0
	if awk -v d="$d/" 'index($2 "/", d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
		die "something is still mounted below $d: unmount it first"
	fi
	rm -rf --one-file-system -- "$d"
}

build() {
	local new=$DIR.new mirror script=() t0=$SECONDS
	mirror=$(mirror)
	command -v debootstrap >/dev/null || {
		echo "pgchroot: installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
			die "cannot install debootstrap"
	}
	if [ ! -e "/usr/share/debootstrap/scripts/$SUITE" ]; then
		# Debian 12's debootstrap predates forky: testing bootstraps as sid does.
		script=(/usr/share/debootstrap/scripts/sid)
	fi
	remove_tree "$new"
	remove_tree "$DIR"
	echo "pgchroot: building a $SUITE chroot for PostgreSQL $V in $DIR (from $mirror)"
	# debootstrap mounts /proc and /sys in the target while it works: in a
	# namespace of its own, they cannot outlive it.
	if ! unshare --mount --propagation private -- debootstrap --variant=minbase \
		--include=make,gcc,libc6-dev,perl,libipc-run-perl,ca-certificates \
		"$SUITE" "$new" "$mirror" "${script[@]}" >"$CACHE/debootstrap-$V.log" 2>&1; then
		tail -n 30 "$CACHE/debootstrap-$V.log" >&2
		die "debootstrap of $SUITE failed (log: $CACHE/debootstrap-$V.log)"
	fi
	# No service starts inside; apt tolerates the mirror's old Release dates.
	printf '#!/bin/sh\nexit 101\n' >"$new/usr/sbin/policy-rc.d"
	chmod 755 "$new/usr/sbin/policy-rc.d"
	printf 'Acquire::Check-Valid-Until "false";\nAcquire::Languages "none";\n' >"$new/etc/apt/apt.conf.d/99outbox"
	cp /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
	in_chroot "$new" apt-get update -qq || die "apt-get update failed in the $SUITE chroot"
	check_suite "$new"
	sync_ca "$new"
	mkdir -p "$new/opt/outbox"
	cp "$ROOT/scripts/install-deps.sh" "$new/opt/outbox/install-deps.sh"
	in_chroot "$new" env OUTBOX_PG_MAJOR="$V" bash /opt/outbox/install-deps.sh ||
		die "installing PostgreSQL $V and the test tools failed in the $SUITE chroot"
	[ -x "$new/usr/lib/postgresql/$V/bin/pg_config" ] || die "no pg_config for PostgreSQL $V in the chroot"
	in_chroot "$new" apt-get clean
	{
		echo "suite=$SUITE"
		echo "mirror=$mirror"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "seconds=$((SECONDS - t0))"
		in_chroot "$new" dpkg-query -W -f='${Package}=${Version}\n' \
			"postgresql-$V" "postgresql-$V-partman" "postgresql-$V-pgtap" 2>/dev/null || true
	} >"$new/.outbox-chroot.tmp"
	mv "$new/.outbox-chroot.tmp" "$new/.outbox-chroot"
	mv "$new" "$DIR"
	echo "pgchroot: chroot for PostgreSQL $V ready in $((SECONDS - t0)) s"
}

# The suite must still carry postgresql-V (forky is testing: it moves).
check_suite() {
	local dir=$1 cand
	cand=$(in_chroot "$dir" apt-cache policy "postgresql-$V" | sed -n 's/^ *Candidate: *//p')
	if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
		local have
		have=$(in_chroot "$dir" apt-cache pkgnames postgresql- | grep -E '^postgresql-[0-9]+$' | sort -V | paste -sd ' ' - || true)
		remove_tree "$dir"
		die "Debian $SUITE does not carry PostgreSQL $V (any more): it has ${have:-no postgresql-N}; set OUTBOX_CHROOT_SUITE to a suite that has postgresql-$V, or change the suite in scripts/pgchroot.sh"
	fi
	echo "pgchroot: $SUITE has postgresql-$V $cand"
}

complete() { [ -f "$STAMP" ] && [ -x "$DIR/usr/lib/postgresql/$V/bin/pg_config" ]; }

# Builds the chroot unless a complete one is cached; holds the lock while
# it does.
ensure() {
	exec 9>"$LOCK"
	if ! complete || [ "${1:-}" = force ]; then
		flock 9
		if ! complete || [ "${1:-}" = force ]; then build >&2; fi
	fi
	exec 9>&-
}

case "$ACTION" in
	path)
		ensure
		echo "$DIR"
		;;
	rebuild)
		ensure force
		echo "$DIR"
		;;
	info)
		complete || die "no complete chroot for PostgreSQL $V in $DIR"
		cat "$STAMP"
		;;
	run)
		[ $# -gt 0 ] || die "run: no command given"
		ensure
		# A shared lock: a rebuild waits until no command runs in the chroot.
		exec 9>"$LOCK"
		flock -s 9
		# Packages the scripts added since the chroot was built, and the
		# machine's certificates as they are now.
		sync_ca "$DIR"
		cp "$ROOT/scripts/install-deps.sh" "$DIR/opt/outbox/install-deps.sh"
		in_chroot "$DIR" env OUTBOX_PG_MAJOR="$V" bash /opt/outbox/install-deps.sh >&2 ||
			die "installing missing packages failed in the chroot"
		rc=0
		in_chroot "$DIR" "$@" 9>&- || rc=$?
		exit "$rc"
		;;
	*) die "unknown action '$ACTION'" ;;
esac
