# More databases than the launcher keeps entries for (256): databases
# without the extension, which any role with CREATEDB can make, never keep
# a database that has it from its worker; after a restart too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('manydbs');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.launcher_naptime = 1
max_worker_processes = 16
});
$node->start;

# 270 empty databases, made by a role that is not a superuser
$node->safe_psql('postgres', q{CREATE ROLE maker LOGIN CREATEDB});
$node->safe_psql('postgres',
	join('', map { "CREATE DATABASE filler_$_ STRATEGY = FILE_COPY;\n" } 1 .. 270),
	extra_params => ['-U', 'maker']);
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname LIKE 'filler\_%'}),
	'270', '270 databases without the extension');

# the launcher looks at them (each gets a worker that finds no extension)
sleep 3;

$node->safe_psql('postgres', q{CREATE DATABASE target STRATEGY = FILE_COPY});
$node->safe_psql('target', q{SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'target'}),
	'the database with the extension gets its worker');

$node->restart;
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'target'}),
	'and gets it again after a restart, among 272 databases to look at');

# its worker works: an expired lease is handed back
$node->safe_psql('target', q{
	SELECT outbox.create_topic('t');
	SELECT outbox.offer('t', '{}');
	SELECT count(*) FROM outbox.claim('t', lease => '10 milliseconds');
});
ok($node->poll_query_until('target', q{SELECT available = 1 FROM outbox.stats WHERE topic = 't'}),
	'and reaps there');

$node->stop;
done_testing();
