# The lease pool is capped exactly at outbox.max_leases: claims beyond it
# fail with 53400 and a hint, never by taking the server's spare shared
# memory (which other databases need for their locks), and the pool is
# whole again once leases are acked.  outbox.max_leases_per_topic gives
# each topic, and each tenant's part of a per-tenant topic, a share of it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('leasecap');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.max_leases = 1024
outbox.enabled = off
max_locks_per_transaction = 64
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('cap');
	SELECT count(*) FROM outbox.offer_batch('cap', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 3000) g));
	CREATE TABLE held (id bigint, lease_token uuid);
});

# Claim in batches of 100 until the pool refuses.
my ($refused, $err) = (0, '');
for (1 .. 40)
{
	my ($rc, $out);
	($rc, $out, $err) = $node->psql('postgres',
		q{INSERT INTO held SELECT id, lease_token FROM outbox.claim('cap', 100, lease => '1 hour')},
		extra_params => ['-v', 'VERBOSITY=verbose']);
	if ($rc != 0)
	{
		$refused = 1;
		last;
	}
}
ok($refused, 'a claim beyond the pool is refused');
like($err, qr/ERROR:  53400: too many outbox events are leased/, 'with 53400');
like($err, qr/HINT:  .*outbox\.max_leases/, 'and a hint to raise outbox.max_leases');
is($node->safe_psql('postgres', q{SELECT leased FROM outbox.stats WHERE topic = 'cap'}),
	'1024', 'exactly outbox.max_leases events are leased, not one more');

# Other databases still have the server's lock space.
$node->safe_psql('postgres', 'CREATE DATABASE other');
my ($rc, $out);
($rc, $out, $err) = $node->psql('other', q{
	BEGIN;
	SELECT count(pg_advisory_xact_lock(g)) FROM generate_series(1, 6000) g;
	COMMIT;});
is($rc, 0, 'another database takes 6000 advisory locks in one transaction') or diag($err);

# Acked, the leases free their entries.
$node->safe_psql('postgres', q{SELECT sum(outbox.ack(id, lease_token)::int) FROM held});
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.claim('cap', 1000)}),
	'1000', 'after the acks the pool serves a full batch again');

# A share per topic, and per tenant part of a per-tenant topic: a tenant
# that takes its share leaves the rest of the pool to the others.
$node->safe_psql('postgres', q{
	SELECT outbox.create_topic('shared');
	SELECT outbox.isolate_tenants('shared');
	SELECT count(*) FROM outbox.offer_batch('shared', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 500) g), tenant => 'greedy');
	SELECT count(*) FROM outbox.offer_batch('shared', ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g), tenant => 'modest');
	CREATE ROLE greedy_consumer LOGIN;
	GRANT outbox_consumer TO greedy_consumer;
	SELECT outbox.grant_tenant('greedy_consumer', 'greedy');
});
# (a restart gives the 1000 leases of 'cap' up; the setting itself needs
# only a reload)
$node->append_conf('postgresql.conf', 'outbox.max_leases_per_topic = 120');
$node->restart;
my @got;
for (1 .. 3)
{
	push @got, $node->safe_psql('postgres',
		q{SELECT count(*) FROM outbox.claim('shared', 100, lease => '1 hour')},
		extra_params => ['-U', 'greedy_consumer']);
}
is(join(',', @got), '100,20,0', 'a tenant leases up to its share (120), then nothing');
is($node->safe_psql('postgres', q{
	SET outbox.tenant = 'modest';
	SELECT count(*) FROM outbox.claim('shared', 100, lease => '1 hour')}),
	'50', 'another tenant of the same topic still gets all of its events');
is($node->safe_psql('postgres', q{SELECT leased FROM outbox.stats WHERE topic = 'shared'}), '170',
	'170 leased in all');
$node->stop;
done_testing();
