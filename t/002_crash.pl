# An immediate stop under a running producer and consumer loses no
# committed event: after the restart every offer whose commit returned to
# the client exists, no acknowledged event is delivered again, and every
# event that was leased and not acked is delivered again, without manual
# calls.  The ids are recorded on the client side.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
max_worker_processes = 16
outbox.reap_interval = '200ms'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('c');
});

my $dir = PostgreSQL::Test::Utils::tempdir;

# A producer: each line one committed offer; psql prints its id after the
# commit returned.
open(my $pf, '>', "$dir/produce.sql") or die;
print $pf "SELECT outbox.offer('c', jsonb_build_object('n', $_));\n" for 1 .. 200000;
close $pf;
# A consumer: claim and ack in one transaction; prints the acked ids.
open(my $cf, '>', "$dir/consume.sql") or die;
print $cf "SELECT array_to_string(array_agg(id), ',') FROM "
  . "(SELECT id, outbox.ack(id, lease_token) AS ok FROM outbox.claim('c', 5, lease => '2 seconds')) x WHERE ok;\n"
  for 1 .. 200000;
close $cf;
# A consumer that claims and never acks: its leases must come back.
open(my $hf, '>', "$dir/hold.sql") or die;
print $hf "SELECT string_agg(id::text, ',') FROM outbox.claim('c', 3, lease => '1 hour');\n"
  . "SELECT pg_sleep(0.05);\n"
  for 1 .. 20000;
close $hf;

my @runs;
for my $cycle (1 .. 2)
{
	my %out;
	my @h;
	for my $who ('produce', 'produce2', 'consume', 'hold')
	{
		my $file = $who eq 'produce2' ? 'produce' : $who;
		$out{$who} = '';
		push @h, IPC::Run::start(
			[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', "$dir/$file.sql" ],
			'>', \$out{$who}, '2>', \my $err);
	}
	sleep 3;
	$node->stop('immediate');
	for my $h (@h)
	{
		eval { IPC::Run::finish($h) };
	}
	push @runs, \%out;
	$node->start;
}

my (%offered, %acked, %held);
for my $out (@runs)
{
	for my $who ('produce', 'produce2')
	{
		$offered{$_} = 1 for grep { /^\d+$/ } split /\n/, $out->{$who};
	}
	for my $line (split /\n/, $out->{consume})
	{
		$acked{$_} = 1 for grep { /^\d+$/ } split /,/, $line;
	}
	for my $line (split /\n/, $out->{hold})
	{
		$held{$_} = 1 for grep { /^\d+$/ } split /,/, $line;
	}
}
cmp_ok(scalar(keys %offered), '>', 100, 'offers were committed before the stops');
cmp_ok(scalar(keys %acked), '>', 10, 'acks were committed before the stops');
cmp_ok(scalar(keys %held), '>', 0, 'leases were held at the stops');

# Every committed offer exists.
my %stored = map { $_ => 1 } split /\n/,
  $node->safe_psql('postgres', 'SELECT id FROM outbox.event');
my @lost = grep { !$stored{$_} } keys %offered;
is(scalar(@lost), 0, 'no committed offer was lost') or diag("lost: @lost[0 .. 9]");

# Drain what is left: nothing acked comes back, everything else does.
my %drained;
for (1 .. 1000)
{
	my $ids = $node->safe_psql('postgres', q{
		SELECT string_agg(id::text, ',') FROM
		(SELECT id, outbox.ack(id, lease_token) AS ok FROM outbox.claim('c', 1000)) x
	});
	last if $ids eq '';
	$drained{$_}++ for split /,/, $ids;
}
my @again = grep { $acked{$_} } keys %drained;
is(scalar(@again), 0, 'no acknowledged event was delivered again') or diag("again: @again[0 .. 9]");
my @twice = grep { $drained{$_} > 1 } keys %drained;
is(scalar(@twice), 0, 'nothing drained twice');
my @missing = grep { !$acked{$_} && !$drained{$_} } keys %stored;
is(scalar(@missing), 0, 'every stored event is acked or delivered after the restart')
  or diag("missing: @missing[0 .. 9]");
note(sprintf('offered %d, acked %d, held at the stops %d, delivered after the restarts %d',
	scalar(keys %offered), scalar(keys %acked), scalar(keys %held), scalar(keys %drained)));
my @held_back = grep { $drained{$_} } keys %held;
is(scalar(@held_back), scalar(grep { !$acked{$_} } keys %held),
	'leases held at the stop were handed back without manual calls');
is($node->safe_psql('postgres', "SELECT available + leased FROM outbox.stats WHERE topic = 'c'"),
	'0', 'stats agree: nothing left');

$node->stop;
done_testing();
