# ALTER EXTENSION outbox UPDATE from 1.0: the updated schema is the one a
# fresh install makes (columns, constraints, indexes, functions, views,
# triggers, privileges, comments, extension membership), the
# acknowledgements and topics kept by 1.0 carry over, and the updated
# database works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('fresh', 'SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE');
$node->safe_psql('old', q{SET client_min_messages = warning; CREATE EXTENSION outbox VERSION '1.0' CASCADE});
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'outbox'"), '1.0',
	'the old database has 1.0');

# What 1.0 kept: a topic, two events, an ack of one and an ack of two.
# 1.0 partitioned the log at install time, as this does (pg_partman 5
# calls 4's 'native' partitioning 'range').
$node->safe_psql('old', q{
	SELECT public.create_parent(p_parent_table => 'outbox.event', p_control => 'created_at',
		p_type => CASE WHEN split_part(e.extversion, '.', 1)::int >= 5 THEN 'range' ELSE 'native' END,
		p_interval => '1 day', p_premake => 4)
	FROM pg_extension e WHERE e.extname = 'pg_partman';
	UPDATE public.part_config SET retention = NULL, infinite_time_partitions = true
	WHERE parent_table = 'outbox.event';
});
# The library refuses to work on the old schema, with a hint.
my ($rc, $out, $err) = $node->psql('old', q{SELECT outbox.create_topic('early')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  55000: the outbox extension in this database is version 1\.0, but the library is version 1\.6/,
	'a schema older than the library: 55000');
like($err, qr/HINT:  ALTER EXTENSION outbox UPDATE/, 'with the hint to update');
$node->safe_psql('old', q{
	INSERT INTO outbox.topic (name, max_attempts, retention, backoff_base, backoff_max)
	VALUES ('kept', 5, '7 days', '1 second', '60 seconds');
	INSERT INTO outbox.topic_state (topic_id) SELECT topic_id FROM outbox.topic WHERE name = 'kept';
	INSERT INTO outbox.event (id, topic_id, payload)
	SELECT nextval('outbox.event_id_seq'), topic_id, jsonb_build_object('n', g)
	FROM outbox.topic, generate_series(1, 4) g WHERE name = 'kept';
	INSERT INTO outbox.acked (topic_id, max_id, ids)
	SELECT topic_id, 1, ARRAY[1]::bigint[] FROM outbox.topic WHERE name = 'kept';
	INSERT INTO outbox.acked (topic_id, max_id, ids)
	SELECT topic_id, 3, ARRAY[2, 3]::bigint[] FROM outbox.topic WHERE name = 'kept';
});

$node->safe_psql('old', q{ALTER EXTENSION outbox UPDATE});
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'outbox'"), '1.6',
	'updated to 1.6');

# The schema, as the catalogs describe it (the log's daily partitions left
# out: they are the same on both sides and made by pg_partman).
my $describe = q{
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
	   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
	   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') AS x
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = 'outbox'::regnamespace AND c.relname NOT LIKE 'event\_p%'
  AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.reloptions::text, '')
	   || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '')
FROM pg_class c
WHERE c.relnamespace = 'outbox'::regnamespace AND c.relname NOT LIKE 'event\_p%'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'outbox'::regnamespace
  AND conrelid::regclass::text NOT LIKE 'outbox.event\_p%'
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes
WHERE schemaname = 'outbox' AND tablename NOT LIKE 'event\_p%'
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || ' ' || coalesce(p.proacl::text, '')
FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace
UNION ALL
SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'outbox'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'outbox')
  AND pg_describe_object(d.classid, d.objid, d.objsubid) NOT LIKE '%event\_p%'
ORDER BY 1;
};
# both logs handed to pg_partman (which happens on first use)
$node->safe_psql('fresh', 'SELECT outbox.maintain()');
my $fresh = $node->safe_psql('fresh', $describe);
my $old = $node->safe_psql('old', $describe);
cmp_ok(length($fresh), '>', 10000, 'the description of the schema is substantial');
if ($fresh eq $old)
{
	pass('the updated schema is the one a fresh install makes');
}
else
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %o = map { $_ => 1 } split /\n/, $old;
	diag("only in the fresh install: $_") for grep { !$o{$_} } sort keys %f;
	diag("only in the updated one: $_") for grep { !$f{$_} } sort keys %o;
	fail('the updated schema is the one a fresh install makes');
}

# What 1.0 kept carried over.
is($node->safe_psql('old', q{
	SELECT string_agg(max_id || ':' || coalesce(ids::text, '-'), ' ' ORDER BY max_id) FROM outbox.acked}),
	'1:- 3:{2,3}', 'the acknowledgements carried over (one event: by max_id alone)');
is($node->safe_psql('old', q{SELECT topic, per_tenant FROM outbox.topics}), 'kept|f',
	'the topic carried over');

# And the updated database works: the unacknowledged event is delivered,
# and new topics, per-tenant ones included, work.
is($node->safe_psql('old', q{
	SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM outbox.claim('kept', 10)}), '4',
	'a claim after the update gets the one event not acknowledged');
$node->safe_psql('old', q{
	SELECT outbox.create_topic('new');
	SELECT outbox.isolate_tenants('new');
	SELECT outbox.offer('new', '{}', tenant => 'a');});
is($node->safe_psql('old', q{SET outbox.tenant = 'a'; SELECT count(*) FROM outbox.claim('new', 10)}), '1',
	'a per-tenant topic made after the update delivers its tenant\'s event');

$node->stop;
done_testing();
