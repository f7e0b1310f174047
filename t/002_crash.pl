# Crashes under load (4 producers offering in committed transactions, 4
# consumers claiming and acking, one consumer holding leases): immediate
# stops, and a backend killed with SIGKILL so that the postmaster
# reinitialises.  After each, every offer whose commit returned to the
# client exists, no acknowledged event is delivered again, every event that
# was leased and not acked is delivered again without manual calls, and the
# dead letters are intact.  The ids are recorded on the client side.
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
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('c');
	SELECT outbox.create_topic('d', max_attempts => 1);
	SELECT count(*) FROM outbox.offer_batch('d', ARRAY(SELECT jsonb_build_object('d', g) FROM generate_series(1, 20) g));
	SELECT count(*) FROM (SELECT outbox.nack(id, lease_token, 'poison') FROM outbox.claim('d', 20)) x;
});
my $dead_before = $node->safe_psql('postgres',
	"SELECT string_agg(id || ':' || attempts || ':' || reason || ':' || payload::text, ',' ORDER BY id) FROM outbox.dead_letters");

my $dir = PostgreSQL::Test::Utils::tempdir;

# A producer: each line one committed offer; psql prints its id after the
# commit returned.
open(my $pf, '>', "$dir/produce.sql") or die;
print $pf "SELECT outbox.offer('c', jsonb_build_object('n', $_));\n" for 1 .. 200000;
close $pf;
# A consumer: claims (printing the ids it got), then acks them in a
# transaction of its own (printing how many).  An ack whose reply never
# came (the server stopped between its commit and the reply) leaves its ids
# uncertain: acked or delivered again, but not lost.
open(my $cf, '>', "$dir/consume.sql") or die;
print $cf "SELECT coalesce(string_agg(id::text, ','), '') AS ids, "
  . "coalesce(min(lease_token::text), '00000000-0000-0000-0000-000000000000') AS tok "
  . "FROM outbox.claim('c', 5, lease => '2 seconds') \\gset\n"
  . "\\echo claimed :ids\n"
  . "SELECT 'acked ' || outbox.ack(string_to_array(:'ids', ',')::bigint[], :'tok'::uuid);\n"
  for 1 .. 100000;
close $cf;
# A consumer that claims and never acks: its leases must come back.
open(my $hf, '>', "$dir/hold.sql") or die;
print $hf "SELECT string_agg(id::text, ',') FROM outbox.claim('c', 3, lease => '1 hour');\n"
  . "SELECT pg_sleep(0.05);\n"
  for 1 .. 20000;
close $hf;

my @runs;
for my $how ('immediate', 'sigkill', 'immediate')
{
	my %out;
	my @h;
	my @who = ('produce1', 'produce2', 'produce3', 'produce4',
		'consume1', 'consume2', 'consume3', 'consume4', 'hold');
	for my $who (@who)
	{
		(my $file = $who) =~ s/\d$//;
		$out{$who} = '';
		push @h, IPC::Run::start(
			[ 'psql', '-XAtq', '-d', $node->connstr('postgres') . " application_name=$who",
			  '-f', "$dir/$file.sql" ],
			'>', \$out{$who}, '2>', \my $err);
	}
	sleep 3;
	if ($how eq 'immediate')
	{
		$node->stop('immediate');
		$node->start;
	}
	else
	{
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE application_name = 'consume1'");
		kill 'KILL', $pid;
		# the postmaster reinitialises; wait until it accepts connections
		sleep 1;
		$node->poll_query_until('postgres', 'SELECT true') or die 'no restart';
	}
	for my $h (@h)
	{
		eval { IPC::Run::finish($h) };
	}
	push @runs, \%out;
}
like(slurp_file($node->logfile), qr/was terminated by signal 9/,
	'a backend was killed and the server reinitialised');

my (%offered, %acked, %uncertain, %held);
for my $out (@runs)
{
	for my $who (grep { /^produce/ } keys %$out)
	{
		$offered{$_} = 1 for grep { /^\d+$/ } split /\n/, $out->{$who};
	}
	for my $who (grep { /^consume/ } keys %$out)
	{
		my @claimed;
		for my $line (split /\n/, $out->{$who})
		{
			if ($line =~ /^claimed (.*)$/)
			{
				$uncertain{$_} = 1 for @claimed;
				@claimed = grep { /^\d+$/ } split /,/, $1;
			}
			elsif ($line =~ /^acked (\d+)$/)
			{
				die "ack of $1, claimed " . scalar(@claimed) if $1 != @claimed;
				$acked{$_} = 1 for @claimed;
				@claimed = ();
			}
		}
		$uncertain{$_} = 1 for @claimed;
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
  $node->safe_psql('postgres', "SELECT id FROM outbox.event WHERE topic_id = (SELECT topic_id FROM outbox.topic WHERE name = 'c')");
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
my @missing = grep { !$acked{$_} && !$drained{$_} && !$uncertain{$_} } keys %stored;
is(scalar(@missing), 0, 'every stored event is acked or delivered after the restart')
  or diag("missing: @missing[0 .. 9]\n" . $node->safe_psql('postgres', qq{
	SELECT 'event ' || e.id || ' created ' || e.created_at || ' avail ' || coalesce(e.available_at::text, '-')
		|| ' | watermark ' || (SELECT watermark FROM outbox.topic_state WHERE topic_id = e.topic_id)
		|| ' | retry ' || coalesce((SELECT r.available_at || ' a=' || r.attempts FROM outbox.retry r WHERE r.event_id = e.id), '-')
		|| ' | acked rows ' || (SELECT count(*) FROM outbox.acked a WHERE e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])))
		|| ' | dead ' || (SELECT count(*) FROM outbox.dead_letter d WHERE d.id = e.id)
		|| ' | stats ' || (SELECT row(s.*)::text FROM outbox.stats s WHERE s.topic = 'c')
		|| ' | shmem ' || (SELECT row(m.*)::text FROM outbox._shmem_topics() m WHERE m.topic_id = e.topic_id)
	FROM outbox.event e WHERE e.id IN (@{[ join(',', @missing) ]})}));
note(sprintf('offered %d, acked %d, held at the stops %d, delivered after the restarts %d, '
	  . 'ack replies lost %d (of which delivered again %d)',
	scalar(keys %offered), scalar(keys %acked), scalar(keys %held), scalar(keys %drained),
	scalar(keys %uncertain), scalar(grep { $drained{$_} } keys %uncertain)));
my @held_back = grep { $drained{$_} } keys %held;
is(scalar(@held_back), scalar(grep { !$acked{$_} } keys %held),
	'leases held at the stop were handed back without manual calls');
is($node->safe_psql('postgres', "SELECT available + leased FROM outbox.stats WHERE topic = 'c'"),
	'0', 'stats agree: nothing left');
is($node->safe_psql('postgres',
	"SELECT string_agg(id || ':' || attempts || ':' || reason || ':' || payload::text, ',' ORDER BY id) FROM outbox.dead_letters"),
	$dead_before, 'the dead letters are intact');

$node->stop;
done_testing();
