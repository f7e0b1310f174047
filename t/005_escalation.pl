# Nobody becomes superuser through the extension.
#
# 1. A database owner (not a superuser) plants operators and functions in
#    the database's public schema and puts that schema first in the
#    database's search_path.  The background worker, which runs as the
#    bootstrap superuser, must never call them: every session the extension
#    runs on its own behalf pins search_path to pg_catalog, pg_temp, and its
#    SQL names every object with its schema.
# 2. A schema "outbox" made beforehand by someone other than the installing
#    role is refused by CREATE EXTENSION, instead of being adopted with the
#    owner's objects in it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('escalation');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
max_worker_processes = 16
outbox.reap_interval = '100ms'
outbox.maintenance_interval = '1s'
outbox.launcher_naptime = '1s'
});
$node->start;

# The test's own sessions must not walk into the trap they set: they pin
# their search_path; the database's setting is for the worker to meet.
$ENV{PGOPTIONS} = '-c search_path=pg_catalog';

# ---- 1. hostile operators and functions under the database's search_path
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	CREATE DATABASE victim OWNER mallory;
});
# pg_partman in a schema of its own, as the README says: the extension
# refuses one where other roles may create objects (see the end).
$node->safe_psql('victim', q{
	SET client_min_messages = warning;
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
	CREATE EXTENSION outbox;
});

# Every comparison and arithmetic operator on the types the extension's SQL
# uses, and the functions it might call unqualified, each shadowed by one
# that tries to make mallory superuser and writes down who called it.
$node->safe_psql('victim', q{
SET ROLE mallory;
CREATE TABLE public.trap (who name, what text, at timestamptz DEFAULT pg_catalog.clock_timestamp());
GRANT ALL ON public.trap TO PUBLIC;
CREATE FUNCTION public.spring(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
	INSERT INTO public.trap (who, what) VALUES (CURRENT_USER, what);
	BEGIN
		EXECUTE 'ALTER ROLE mallory SUPERUSER';
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
END
$f$;
DO $d$
DECLARE
	t text;
	op text;
	fn text;
	n int := 0;
BEGIN
	FOREACH t IN ARRAY ARRAY['name', 'text', 'integer', 'bigint', 'smallint', 'oid',
							 'timestamptz', 'interval', 'jsonb', 'boolean', 'regclass', 'uuid']
	LOOP
		FOREACH op IN ARRAY ARRAY['=', '<>', '<', '>', '<=', '>=']
		LOOP
			n := n + 1;
			fn := 'public.cmp_' || n;
			EXECUTE pg_catalog.format(
				'CREATE FUNCTION %s(a %s, b %s) RETURNS boolean LANGUAGE plpgsql AS '
				'$b$ BEGIN PERFORM public.spring(%L); RETURN false; END $b$',
				fn, t, t, op || ' ' || t);
			EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)',
				op, t, t, fn);
		END LOOP;
	END LOOP;
	FOREACH t IN ARRAY ARRAY['bigint', 'integer', 'timestamptz']
	LOOP
		FOREACH op IN ARRAY ARRAY['+', '-']
		LOOP
			n := n + 1;
			fn := 'public.arith_' || n;
			EXECUTE pg_catalog.format(
				'CREATE FUNCTION %s(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS '
				'$b$ BEGIN PERFORM public.spring(%L); RETURN a; END $b$',
				fn, t, CASE WHEN t = 'timestamptz' THEN 'interval' ELSE t END,
				t, op || ' ' || t);
			EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)',
				op, t, CASE WHEN t = 'timestamptz' THEN 'interval' ELSE t END, fn);
		END LOOP;
	END LOOP;
END
$d$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
	$f$ BEGIN PERFORM public.spring('now()'); RETURN pg_catalog.now(); END $f$;
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
	$f$ BEGIN PERFORM public.spring('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END $f$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS
	$f$ BEGIN PERFORM public.spring('format()'); RETURN ''; END $f$;
CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE plpgsql AS
	$f$ BEGIN PERFORM public.spring('format()'); RETURN ''; END $f$;
CREATE FUNCTION public.quote_ident(text) RETURNS text LANGUAGE plpgsql AS
	$f$ BEGIN PERFORM public.spring('quote_ident()'); RETURN $1; END $f$;
ALTER DATABASE victim SET search_path = public, pg_catalog;
});
is($node->safe_psql('victim', 'SELECT count(*) FROM public.trap'), '0', 'the trap is set and untouched');

# Work for the worker: expired leases to hand back and to dead-letter, a
# partition past retention to retire, dedupe keys to trim.
$node->safe_psql('victim', q{
	SET search_path = pg_catalog;
	SELECT outbox.create_topic('t', max_attempts => 2, retention => '1 day');
	SELECT outbox.offer('t', pg_catalog.jsonb_build_object('n', g), key => 'k' || g,
						dedupe_key => 'd' || g) FROM pg_catalog.generate_series(1, 20) g;
	SELECT count(*) FROM outbox.claim('t', 10, lease => '10 ms');
});
$node->safe_psql('victim', q{
	SET search_path = pg_catalog;
	CREATE TABLE outbox.event_p2020_01_01 PARTITION OF outbox.event
		FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
	CREATE INDEX ON outbox.event_p2020_01_01 (topic_id, id);
});
# The database's search_path is read when a session starts: restart, so
# that the worker connects under it.
$node->restart;
ok($node->poll_query_until('victim',
	"SELECT count(*) = 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'victim'"),
	'the worker runs in the database');
$node->safe_psql('victim', q{SET search_path = pg_catalog; SELECT count(*) FROM outbox.claim('t', 10, lease => '10 ms')});
ok($node->poll_query_until('victim',
	"SELECT pg_catalog.to_regclass('outbox.event_p2020_01_01') IS NULL", 't'),
	'the worker ran maintenance (it retired the old partition)');
ok($node->poll_query_until('victim',
	"SELECT (SELECT pg_catalog.count(*) FROM outbox.retry) OPERATOR(pg_catalog.+) "
	. "(SELECT pg_catalog.count(*) FROM outbox.dead_letter) OPERATOR(pg_catalog.>) 0", 't'),
	'the worker reaped expired leases (handed back or dead-lettered)');
sleep 2;
is($node->safe_psql('victim', q{SELECT pg_catalog.string_agg(DISTINCT who || ': ' || what, ', ') FROM public.trap}),
	'', 'the worker called none of the planted operators and functions');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'the database owner is not superuser');

# The same SQL called by hand, under the hostile search_path, as a superuser
# (SECURITY DEFINER functions pin their own search_path).
$node->safe_psql('victim', q{
	SET search_path = public, pg_catalog;
	SELECT outbox.reap();
	SELECT outbox.maintain();
	SELECT * FROM outbox.stats;
});
is($node->safe_psql('victim', q{SELECT pg_catalog.count(*) FROM public.trap}),
	'0', 'reap(), maintain() and stats call none of them either');

# ---- 2. a schema "outbox" made beforehand by another role
$node->safe_psql('postgres', q{
	CREATE ROLE eve LOGIN;
	CREATE DATABASE adopt OWNER eve;
});
$node->safe_psql('adopt', q{
	SET ROLE eve;
	CREATE SCHEMA outbox;
	CREATE FUNCTION outbox.offer(text, text) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
});
my ($rc, $out, $err) = $node->psql('adopt', 'SET search_path = public; CREATE EXTENSION outbox CASCADE');
isnt($rc, 0, 'CREATE EXTENSION refuses a schema outbox owned by another role');
like($err, qr/schema "outbox" already exists/, 'with a clear message');
is($node->safe_psql('adopt', q{SELECT count(*) FROM pg_extension WHERE extname = 'outbox'}),
	'0', 'nothing is installed');

# A schema the installing role made itself, but not empty, is refused too.
$node->safe_psql('postgres', 'CREATE DATABASE adopt2');
$node->safe_psql('adopt2', q{
	CREATE SCHEMA outbox;
	CREATE TABLE outbox.stray (x int);
});
($rc, $out, $err) = $node->psql('adopt2', 'SET search_path = public; CREATE EXTENSION outbox CASCADE');
isnt($rc, 0, 'CREATE EXTENSION refuses a schema outbox that already holds objects');
like($err, qr/schema "outbox" already exists/, 'with the same message');
# ... and an empty one of its own is used.
$node->safe_psql('adopt2', 'DROP TABLE outbox.stray');
($rc, $out, $err) = $node->psql('adopt2', 'SET client_min_messages = warning; SET search_path = public; CREATE EXTENSION outbox CASCADE');
is($rc, 0, "an empty schema outbox of the installing role is used") or diag($err);

# ---- pg_partman where the database owner may create objects
$node->safe_psql('postgres', 'CREATE DATABASE careless OWNER mallory');
($rc, $out, $err) = $node->psql('careless', 'SET search_path = public; CREATE EXTENSION outbox CASCADE');
isnt($rc, 0, 'CREATE EXTENSION refuses a pg_partman in a schema the database owner may write');
like($err, qr/pg_partman is installed in schema "public", where role "mallory" may create objects/,
	'naming the schema and the role');
$node->safe_psql('careless', 'SET search_path = public; CREATE EXTENSION pg_partman');
# A superuser made the extension when the schema was safe; later its owner
# changes.  maintain() then refuses before calling pg_partman.
$node->safe_psql('careless', q{
	SET client_min_messages = warning;
	SET search_path = public;
	ALTER DATABASE careless OWNER TO postgres;
	CREATE EXTENSION outbox;
	ALTER DATABASE careless OWNER TO mallory;
});
# (the database's worker may be maintaining at the same moment: try again)
for (1 .. 50)
{
	($rc, $out, $err) = $node->psql('careless', 'SELECT outbox.maintain()');
	last if $err =~ /pg_partman/;
	select(undef, undef, undef, 0.2);
}
like($err, qr/pg_partman is installed in schema "public", where role "mallory" may create objects/,
	'maintain() refuses to call a pg_partman others may tamper with');

$node->stop;
done_testing();
