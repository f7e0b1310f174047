# A dump of a database with a topic delivered through the WAL, restored
# into another cluster and into another database of the same cluster: the
# events its slot had not confirmed before the dump are not in the new
# server's WAL, so reap emits their messages again once the topic's slot
# exists there; those confirmed before the dump are not sent again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $conf = qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
wal_level = logical
max_replication_slots = 8
max_worker_processes = 16
};
my $na = PostgreSQL::Test::Cluster->new('walsrc');
$na->init;
$na->append_conf('postgresql.conf', $conf);
$na->start;
my $nb = PostgreSQL::Test::Cluster->new('waldst');
$nb->init;
$nb->append_conf('postgresql.conf', $conf);
$nb->start;

$na->safe_psql('postgres', 'CREATE DATABASE src');
$na->safe_psql('src', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('w', delivery => 'wal', slot => 'cdc');
	SELECT pg_create_logical_replication_slot('cdc', 'test_decoding');
	SELECT outbox.offer('w', jsonb_build_object('n', i), key => 'k' || i) FROM generate_series(1, 3) i;
});

# The ids in the outbox messages a database's slot has now, consumed.
sub read_slot
{
	my ($node, $db) = @_;
	my $rows = $node->safe_psql($db, q{
		SELECT string_agg((regexp_match(data, 'content:(.*)$'))[1]::jsonb->>'id', ',')
		FROM pg_logical_slot_get_changes('cdc', NULL, NULL)
		WHERE data LIKE 'message: transactional: 1 prefix: outbox,%'});
	return $rows;
}
# Reap and read until the topic has nothing pending, or 30 s.
sub settle
{
	my ($node, $db) = @_;
	my @ids;
	for (1 .. 60)
	{
		$node->safe_psql($db, 'SELECT outbox.reap()');
		my $got = read_slot($node, $db);
		push @ids, split /,/, $got if $got ne '';
		last if $node->safe_psql($db, q{SELECT available FROM outbox.stats WHERE topic = 'w'}) eq '0';
		sleep 0.5;
	}
	return @ids;
}

my @first = settle($na, 'src');
is(scalar(@first), 3, 'the first three events are read and confirmed on the source');
$na->safe_psql('src', q{SELECT outbox.offer('w', jsonb_build_object('n', i), key => 'k' || i) FROM generate_series(4, 7) i});
my $unconfirmed = $na->safe_psql('src', q{
	SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM outbox.event e
	JOIN outbox.topic_state s USING (topic_id) WHERE e.id > s.watermark});
is(scalar(split /,/, $unconfirmed), 4, 'four events not confirmed when the dump is taken');

my $file = PostgreSQL::Test::Utils::tempdir . '/src.dump';
my ($out, $err) = ('', '');
ok(IPC::Run::run(['pg_dump', '-Fc', '-f', $file, '-d', $na->connstr('src')], '>', \$out, '2>', \$err),
	'pg_dump exits 0') or diag($err);

# Into another cluster: another system identifier.
$nb->safe_psql('postgres', 'CREATE DATABASE dst');
($out, $err) = ('', '');
ok(IPC::Run::run(['pg_restore', '-d', $nb->connstr('dst'), $file], '>', \$out, '2>', \$err),
	'pg_restore into another cluster exits 0') or diag($err);
$nb->safe_psql('dst', q{SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')});
my @other = settle($nb, 'dst');
is(join(',', sort { $a <=> $b } @other), $unconfirmed,
	'another cluster: the unconfirmed events are sent again through its slot, and only they');
is($nb->safe_psql('dst', q{SELECT available FROM outbox.stats WHERE topic = 'w'}), '0',
	'and once its slot confirms them, nothing is pending');

# Into another database of the same cluster: the slot name is free again
# once the source's slot is dropped.
$na->safe_psql('src', q{SELECT pg_drop_replication_slot('cdc')});
$na->safe_psql('postgres', 'CREATE DATABASE dst2');
($out, $err) = ('', '');
ok(IPC::Run::run(['pg_restore', '-d', $na->connstr('dst2'), $file], '>', \$out, '2>', \$err),
	'pg_restore into another database exits 0') or diag($err);
$na->safe_psql('dst2', q{SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')});
my @same = settle($na, 'dst2');
is(join(',', sort { $a <=> $b } @same), $unconfirmed,
	'another database of the same cluster: the unconfirmed events are sent again, and only they');

# A new offer after the restore is delivered once, as usual.
my $new = $na->safe_psql('dst2', q{SELECT outbox.offer('w', '{"after": true}')});
my @after = settle($na, 'dst2');
is(join(',', @after), $new, 'a new offer after the restore is read once');

$na->stop;
$nb->stop;
done_testing();
