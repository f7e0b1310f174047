# shellcheck shell=bash
# Throwaway PostgreSQL clusters for tests and demos.  Source this file; it
# defines functions and installs an EXIT/INT/TERM trap that stops every cluster
# started through it and removes its directory.
#
#   pgc_init DIR                      initdb into DIR (created, owned by the
#                                     server user)
#   pgc_start DIR [--port N] [--conf FILE]... [name=value]...
#                                     start on the first free port from N
#                                     ($PGC_PORT, default 54400) with a unix socket in
#                                     DIR/sock, shared_preload_libraries =
#                                     'outbox', plus FILEs and settings; waits
#                                     until it accepts connections
#   pgc_port DIR / pgc_host DIR       port and socket directory of a cluster
#   pgc_psql DIR [psql args...]       psql as the superuser "postgres"
#   pgc_stop DIR                      stop the cluster (it stays on disk)
#   pgc_destroy DIR                   stop it and remove DIR
#   pgc_keep DIR                      leave DIR running when the script exits
#   pgc_on_exit 'command'             run a command at exit, after clusters stop
#   pgc_scratch VAR NAME              a new directory /tmp/outbox-NAME.XXXXXX
#                                     the server user may use, removed at
#                                     exit; its path goes into VAR
#   pgc_log_tail DIR [lines]          print the end of the server log
#   pgc_crash_lines DIR               print the log lines that tell of a
#                                     crash; true if there are any
#
# As root, initdb and postgres run as the OS user "postgres" (they refuse
# root); as any other user they run as that user.

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGC_BINDIR=${PGC_BINDIR:-$("$PG_CONFIG" --bindir)}
PGC_OSUSER=${PGC_OSUSER:-postgres}
export LANG=${LANG:-C.UTF-8} LC_ALL=${LC_ALL:-C.UTF-8}

PGC_CLUSTERS=()   # directories this shell created or started
PGC_KEPT=()       # directories to leave running at exit
PGC_EXIT_HOOKS=()

pgc_die() { echo "pgcluster: $*" >&2; return 1; }

# Runs a command as the server's OS user.
pgc_as_server() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$PGC_OSUSER" -- env LANG="$LANG" LC_ALL="$LC_ALL" "$@"
	else
		"$@"
	fi
}

pgc_port() { cat "$1/port" 2>/dev/null; }
pgc_host() { printf '%s/sock\n' "$1"; }

_pgc_known() {
	local d
	for d in "${PGC_CLUSTERS[@]}"; do [ "$d" = "$1" ] && return 0; done
	return 1
}

pgc_init() {
	local dir=$1
	[ -n "$dir" ] || { pgc_die "pgc_init: no directory given"; return 1; }
	case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
	if [ -e "$dir/data/PG_VERSION" ]; then
		pgc_die "pgc_init: $dir already holds a cluster"; return 1
	fi
	mkdir -p "$dir" || return 1
	if [ "$(id -u)" = 0 ]; then chown "$PGC_OSUSER": "$dir" || return 1; fi
	chmod 700 "$dir" || return 1
	if ! pgc_as_server test -w "$dir"; then
		pgc_die "pgc_init: $PGC_OSUSER cannot write $dir (is every parent directory traversable by $PGC_OSUSER?)"
		return 1
	fi
	_pgc_known "$dir" || PGC_CLUSTERS+=("$dir")
	pgc_as_server mkdir -p "$dir/sock" || return 1
	if ! pgc_as_server "$PGC_BINDIR/initdb" -D "$dir/data" -A trust -U postgres \
		-E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
		cat "$dir/initdb.log" >&2
		pgc_die "pgc_init: initdb failed in $dir"; return 1
	fi
}

# True when PORT is taken: by a cluster of this shell, by a server with a
# socket in /tmp, or by anything listening on it on localhost.
_pgc_port_busy() {
	local port=$1 rc=0 d
	for d in "${PGC_CLUSTERS[@]}"; do
		[ "$(pgc_port "$d")" = "$port" ] && pgc_running "$d" && return 0
	done
	[ -e "/tmp/.s.PGSQL.$port" ] && return 0
	"$PGC_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 >/dev/null 2>&1 || rc=$?
	[ "$rc" = 0 ] || [ "$rc" = 1 ] && return 0
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
	return 1
}

pgc_start() {
	local dir=$1; shift
	[ -n "$dir" ] || { pgc_die "pgc_start: no directory given"; return 1; }
	case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
	[ -e "$dir/data/PG_VERSION" ] || { pgc_die "pgc_start: no cluster in $dir (pgc_init first)"; return 1; }
	_pgc_known "$dir" || PGC_CLUSTERS+=("$dir")
	local port=${PGC_PORT:-54400} settings=() confs=()
	while [ $# -gt 0 ]; do
		case "$1" in
			--port) port=$2; shift 2 ;;
			--conf)
				[ -r "$2" ] || { pgc_die "pgc_start: cannot read $2"; return 1; }
				confs+=("$2"); shift 2 ;;
			*=*) settings+=("$1"); shift ;;
			*) pgc_die "pgc_start: unexpected argument '$1'"; return 1 ;;
		esac
	done

	# Settings go into a file of their own that postgresql.conf includes, so a
	# restart with other settings replaces them.
	local extra="$dir/data/pgcluster.conf" tmp
	tmp=$(mktemp) || return 1
	{
		echo "shared_preload_libraries = 'outbox'"
		echo "unix_socket_directories = '$dir/sock'"
		echo "listen_addresses = ''"
		echo "fsync = off"
		echo "logging_collector = off"
		local f s
		for f in "${confs[@]}"; do
			cat "$f"; echo
		done
		for s in "${settings[@]}"; do
			echo "${s%%=*} = ${s#*=}"
		done
	} >"$tmp"
	install -m 600 "$tmp" "$extra" && rm -f "$tmp" || return 1
	if [ "$(id -u)" = 0 ]; then chown "$PGC_OSUSER": "$extra" || return 1; fi
	grep -q "^include_if_exists = 'pgcluster.conf'" "$dir/data/postgresql.conf" ||
		echo "include_if_exists = 'pgcluster.conf'" | pgc_as_server tee -a "$dir/data/postgresql.conf" >/dev/null

	local tries=0
	while [ "$tries" -lt 100 ]; do
		if _pgc_port_busy "$port"; then
			port=$((port + 1)); tries=$((tries + 1)); continue
		fi
		if pgc_as_server "$PGC_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
			-o "-p $port" -w -t 120 start >/dev/null 2>&1; then
			echo "$port" >"$dir/port"
			local i=0
			until "$PGC_BINDIR/pg_isready" -q -h "$dir/sock" -p "$port" -U postgres -d postgres -t 1; do
				i=$((i + 1))
				[ "$i" -lt 60 ] || { pgc_log_tail "$dir"; pgc_die "pgc_start: server in $dir not ready"; return 1; }
				sleep 0.5
			done
			return 0
		fi
		if grep -q "Address already in use\|could not create lock file" "$dir/server.log" 2>/dev/null; then
			port=$((port + 1)); tries=$((tries + 1)); continue
		fi
		pgc_log_tail "$dir" 40
		pgc_die "pgc_start: server in $dir failed to start"; return 1
	done
	pgc_die "pgc_start: no free port found"; return 1
}

pgc_psql() {
	local dir=$1; shift
	"$PGC_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pgc_host "$dir")" -p "$(pgc_port "$dir")" \
		-U postgres "$@"
}

pgc_running() {
	[ -e "$1/data/postmaster.pid" ] &&
		pgc_as_server "$PGC_BINDIR/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

pgc_stop() {
	local dir=$1
	[ -e "$dir/data/PG_VERSION" ] || return 0
	pgc_running "$dir" || return 0
	pgc_as_server "$PGC_BINDIR/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		pgc_as_server "$PGC_BINDIR/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
		pgc_die "pgc_stop: could not stop the server in $dir"
}

pgc_destroy() {
	local dir=$1
	pgc_stop "$dir" || return 1
	rm -rf -- "$dir"
}

pgc_keep() {
	case "$1" in /*) PGC_KEPT+=("$1") ;; *) PGC_KEPT+=("$(pwd)/$1") ;; esac
}

pgc_on_exit() { PGC_EXIT_HOOKS+=("$1"); }

pgc_scratch() {
	local d
	d=$(mktemp -d "/tmp/outbox-$2.XXXXXX") || return 1
	chmod 755 "$d" || return 1
	if [ "$(id -u)" = 0 ]; then chown "$PGC_OSUSER": "$d" || return 1; fi
	pgc_on_exit "rm -rf -- '$d'"
	printf -v "$1" '%s' "$d"
}

pgc_log_tail() {
	local dir=$1 n=${2:-20}
	[ -r "$dir/server.log" ] || return 0
	echo "---- last $n lines of $dir/server.log ----" >&2
	tail -n "$n" "$dir/server.log" >&2
}

_pgc_cleanup() {
	local rc=$? h d k keep
	trap - EXIT INT TERM
	for d in "${PGC_CLUSTERS[@]}"; do
		keep=0
		for k in "${PGC_KEPT[@]}"; do [ "$k" = "$d" ] && keep=1; done
		[ "$keep" = 1 ] && continue
		if [ "${PGC_KEEP_FILES:-0}" = 1 ]; then
			pgc_stop "$d" || true
		else
			pgc_destroy "$d" || true
		fi
	done
	for h in "${PGC_EXIT_HOOKS[@]}"; do eval "$h" || true; done
	return "$rc"
}

_pgc_signal() {
	echo "pgcluster: interrupted, stopping clusters" >&2
	exit 130
}

trap _pgc_cleanup EXIT
trap _pgc_signal INT TERM

# Prints the lines of a cluster's server log that tell of a crash: a
# backend or worker killed by a signal or exiting with an error code
# (which makes the postmaster reinitialize), a PANIC, a failed assertion.
# Exit codes of background workers stopped by a shutdown request are not
# crashes and are left out.  Returns 0 if there are any.
pgc_crash_lines() {
	awk '/received (fast|smart|immediate) shutdown request/ { down = 1 }
	     /terminated by signal|PANIC|TRAP:|server process .* was terminated|all server processes terminated; reinitializing/ { print; found = 1; next }
	     /exited with exit code/ && !down { print; found = 1 }
	     END { exit !found }' "$1/server.log"
}
