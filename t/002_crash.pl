# Crashes under load, three times: immediate stops, and a backend killed
# with SIGKILL so that the postmaster reinitialises.  4 producers offer in
# committed transactions; 3 consumers claim, hold their lease a moment and
# ack; one consumer claims and never acks; and at each crash one ack has
# committed but its answer is held back, and another is made but its
# commit is held back (both wait for a lock the test holds).  Leases are
# far longer than the test, so only a crash ends them, however slow the
# machine.
#
# Every psql client must end by losing its connection at the crash, with
# nothing else on its stderr.  psql -f names the statement that failed, so
# what a client printed before it says which offers and acks committed,
# which leases it held at the crash (claimed, the ack not sent) and which
# ack it sent without getting an answer.  After each restart, with the
# clients gone:
#   - every committed offer is stored;
#   - no event whose ack committed is claimed again, and none is claimed
#     twice between two crashes;
#   - every committed ack is in the acknowledgements (watermark and
#     outbox.acked), and its events are not available;
#   - every lease held at the crash is available again, without manual calls;
#   - of an ack that got no answer, either every event is acknowledged or
#     available again, never both nor neither: acknowledged if it had
#     committed, available if it had not;
#   - every stored event is either acknowledged or available, and stats
#     counts the same;
#   - the server log tells of no crash but the one the test made;
#   - the dead letters are intact.
# The events available are found by claiming all of them in a transaction
# that rolls back, which leases nothing.  At the end a drain delivers
# exactly those events, each once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep time);

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
my $dead_letters = q{SELECT string_agg(id || ':' || attempts || ':' || reason || ':' || payload::text, ',' ORDER BY id)
	FROM outbox.dead_letters};
my $dead_before = $node->safe_psql('postgres', $dead_letters);

# An ack whose commit or whose answer waits for the gate, an advisory lock
# the test holds through each crash.
$node->safe_psql('postgres', q{
	CREATE PROCEDURE ack_at_gate(ids bigint[], tok uuid, commit_first boolean, INOUT result text)
	LANGUAGE plpgsql AS $$
	BEGIN
		result := 'acked ' || outbox.ack(ids, tok);
		IF commit_first THEN
			COMMIT;
		END IF;
		PERFORM pg_advisory_xact_lock_shared(1);
	END $$;
});

my $dir = PostgreSQL::Test::Utils::tempdir;

# A producer: one committed offer a line; psql prints its id once the
# commit returned.  The sleep keeps the backlog small.
open(my $fh, '>', "$dir/produce.sql") or die;
print $fh "SELECT outbox.offer('c', jsonb_build_object('n', $_)) FROM pg_sleep(0.001);\n"
  for 1 .. 100000;
close $fh;
# A consumer, a block of 4 lines: claims (printing the ids), holds the lease a
# moment, then acks in a statement of its own (printing the count).  The
# slow ones have their ack's answer or commit held at the gate.
my %ack = (
	consume => "SELECT 'acked ' || outbox.ack(string_to_array(:'ids', ',')::bigint[], :'tok'::uuid);",
	slowanswer => "CALL ack_at_gate(string_to_array(:'ids', ',')::bigint[], :'tok'::uuid, true, NULL);",
	slowcommit => "CALL ack_at_gate(string_to_array(:'ids', ',')::bigint[], :'tok'::uuid, false, NULL);");
for my $kind (keys %ack)
{
	my $wait = $kind eq 'consume' ? '' : ", wait => '1 minute'";
	open($fh, '>', "$dir/$kind.sql") or die;
	print $fh "SELECT coalesce(string_agg(id::text, ','), '') AS ids, "
	  . "coalesce(min(lease_token::text), '00000000-0000-0000-0000-000000000000') AS tok "
	  . "FROM outbox.claim('c', 20, lease => '10 minutes'$wait) \\gset\n"
	  . "\\echo claimed :ids\n"
	  . "SELECT pg_sleep(0.05) \\gset\n"
	  . "$ack{$kind}\n"
	  for 1 .. 30000;
	close $fh;
}
# A consumer that claims and never acks, a block of 2 lines.
open($fh, '>', "$dir/hold.sql") or die;
print $fh "SELECT 'held ' || coalesce(string_agg(id::text, ','), '') FROM outbox.claim('c', 3, lease => '1 hour');\n"
  . "SELECT pg_sleep(0.05) \\gset\n"
  for 1 .. 20000;
close $fh;
# The gate: holds advisory lock 1 until the crash.
open($fh, '>', "$dir/gate.sql") or die;
print $fh "SELECT pg_advisory_lock(1) \\gset\nSELECT pg_sleep(3600) \\gset\n";
close $fh;
my %lines_per_block = (produce => 1, consume => 4, slowanswer => 4, slowcommit => 4, hold => 2, gate => 2);
my @who = ((map { "produce$_" } 1 .. 4), (map { "consume$_" } 1 .. 3),
	'slowanswer', 'slowcommit', 'hold');

# What psql prints when the server goes away under it: the first line of
# each message names the script and line, the others do not.
my @lost_first = (
	'WARNING:  terminating connection because of crash of another server process',
	'WARNING:  terminating connection due to immediate shutdown command',
	'server closed the connection unexpectedly',
	'no connection to the server',
	'error: connection to server was lost');
my @lost_more = (
	'DETAIL:  The postmaster has commanded this server process to roll back the current transaction and exit, because another server process exited abnormally and possibly corrupted shared memory.',
	'HINT:  In a moment you should be able to reconnect to the database and repeat your command.',
	"\tThis probably means the server terminated abnormally",
	"\tbefore or while processing the request.");
my $lost_first = '^(?:' . join('|', map { quotemeta } @lost_first) . ')$';
my $lost_more = '^(?:' . join('|', map { quotemeta } @lost_more) . ')$';

# Starts psql -f on the script of each client; application_name is its name.
sub start_client
{
	my ($who) = @_;
	(my $kind = $who) =~ s/\d+$//;
	my $c = { kind => $kind, out => '', err => '' };
	$c->{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
		  '-d', $node->connstr('postgres') . " application_name=$who",
		  '-f', "$dir/$kind.sql" ],
		'>', \$c->{out}, '2>', \$c->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return $c;
}

# Waits until every client has done some work, the slow consumers wait at
# the gate and 2 seconds have passed; or until a client has ended, or the
# timeout.
sub wait_for_load
{
	my ($clients) = @_;
	my $start = time;
	while (time - $start < $PostgreSQL::Test::Utils::timeout_default)
	{
		eval { $_->{h}->pump_nb } for values %$clients;
		last if grep { !$_->{h}->pumpable } values %$clients;
		my $idle = grep {
			$_->{kind} eq 'produce' ? ($_->{out} =~ tr/\n//) < 20
			  : $_->{kind} eq 'consume' ? $_->{out} !~ /^acked [1-9]/m
			  : $_->{kind} eq 'hold' ? $_->{out} !~ /^held \d/m
			  : 0
		} values %$clients;
		$idle ||= $node->safe_psql('postgres', q{
			SELECT count(*) < 2 FROM pg_stat_activity
			WHERE application_name IN ('slowanswer', 'slowcommit')
			  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}) eq 't';
		last if !$idle && time - $start >= 2;
		sleep 0.1;
	}
}

# What one client did.  Its stderr must hold the messages of one lost
# connection and nothing else.  The last statement they name is the one
# that failed at the crash; the warning the server sends as it goes may
# come in with the answer to the statement before.  Before the failed
# statement, every statement printed its line.
sub read_client
{
	my ($who, $c) = @_;
	my %r = (problems => [], offered => [], claims => [], acked => [], held => [], unanswered => []);
	my $problem = sub { push @{ $r{problems} }, "$who: $_[0]" };

	my $exit = eval { $c->{h}->result(0) } // 'none';
	$problem->("psql exited with $exit, not 2 or 3 (connection lost)") if $exit ne '2' && $exit ne '3';
	my %at;
	for my $line (split /\n/, $c->{err})
	{
		if ($line =~ /^psql:\Q$dir\E\/$c->{kind}\.sql:(\d+): (.*)$/)
		{
			push @{ $at{$1} }, $2;
			$problem->("stderr: $line") unless $2 =~ $lost_first;
		}
		elsif ($line !~ $lost_more)
		{
			$problem->("stderr: $line");
		}
	}
	my ($failed, @before) = sort { $b <=> $a } keys %at;
	if (!defined $failed)
	{
		$problem->('no statement failed');
		return \%r;
	}
	for my $line (@before)
	{
		$problem->("line $line: $_") for grep { !/^WARNING:/ } @{ $at{$line} };
	}
	my $per = $lines_per_block{ $c->{kind} };
	my $done = int(($failed - 1) / $per);    # blocks of the script done
	my $step = ($failed - 1) % $per;         # the statement of the next that failed
	my @out = split /\n/, $c->{out};

	if ($c->{kind} eq 'gate')
	{
		$problem->("failed at line $failed, not while it held the gate") if $failed != 2;
		$problem->("stdout: $_") for @out;
	}
	elsif ($c->{kind} eq 'produce')
	{
		$problem->("stdout: $_") for grep { !/^\d+$/ } @out;
		$problem->(scalar(@out) . " ids printed, $done offers committed") if @out != $done;
		$r{offered} = [ grep { /^\d+$/ } @out ];
	}
	elsif ($c->{kind} eq 'hold')
	{
		my $n = 0;
		for (@out)
		{
			if (/^held ([\d,]*)$/)
			{
				$n++;
				my @ids = split /,/, $1;
				push @{ $r{claims} }, \@ids;
				push @{ $r{held} }, @ids;
			}
			else
			{
				$problem->("stdout: $_");
			}
		}
		my $want = $done + ($step == 1 ? 1 : 0);
		$problem->("$n claims printed, $want claims answered") if $n != $want;
	}
	else
	{
		my ($claimed, $acks, @pending) = (0, 0);
		for (@out)
		{
			if (/^claimed ([\d,]*)$/)
			{
				$problem->('claimed twice without an ack') if $claimed != $acks;
				$claimed++;
				@pending = split /,/, $1;
				push @{ $r{claims} }, [@pending];
			}
			elsif (/^acked (\d+)$/ && $claimed == $acks + 1)
			{
				$acks++;
				if ($1 == @pending)
				{
					push @{ $r{acked} }, @pending;
				}
				else
				{
					$problem->("ack counted $1 of " . scalar(@pending) . " events leased for 10 minutes");
					push @{ $r{unanswered} }, @pending;
				}
				@pending = ();
			}
			else
			{
				$problem->("stdout: $_");
			}
		}
		# failed at the claim: every ack before it was answered; at the
		# sleep: the lease was held and its ack never sent; at the ack: the
		# ack got no answer
		if ($step == 1 || $acks != $done || $claimed != $done + ($step == 0 ? 0 : 1))
		{
			$problem->("failed at line $failed after $claimed claims and $acks acks");
		}
		elsif ($step == 2)
		{
			push @{ $r{held} }, @pending;
		}
		elsif ($step == 3)
		{
			push @{ $r{unanswered} }, @pending;
		}
	}
	push @{ $r{problems} }, "$who: its stderr:\n$c->{err}" if @{ $r{problems} };
	return \%r;
}

# The events of topic c a claim can get now, each with how many times one
# claim returned it.
sub available_now
{
	my %n;
	$n{$_}++ for split /\n/, $node->safe_psql('postgres', q{
		BEGIN;
		CREATE TEMP TABLE peek (id bigint) ON COMMIT DROP;
		DO $$BEGIN
			LOOP
				INSERT INTO peek SELECT id FROM outbox.claim('c', 10000, lease => '1 hour');
				EXIT WHEN NOT FOUND;
			END LOOP;
		END$$;
		SELECT id FROM peek;
		ROLLBACK;
	});
	return \%n;
}

# Every stored event of topic c: 1 if the acknowledgements say it is acked
# (named by a row of outbox.acked, or at or below the watermark and neither
# waiting for a retry nor dead), else 0.
sub stored_now
{
	my %s;
	for (split /\n/, $node->safe_psql('postgres', q{
		WITH t AS (SELECT topic_id FROM outbox.topic WHERE name = 'c'),
		a AS (SELECT DISTINCT u.id FROM outbox.acked a JOIN t USING (topic_id),
			  unnest(coalesce(a.ids, ARRAY[a.max_id])) AS u(id))
		SELECT e.id, (a.id IS NOT NULL
					  OR (e.id <= s.watermark
						  AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
						  AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)))::int
		FROM outbox.event e JOIN t USING (topic_id)
		JOIN outbox.topic_state s USING (topic_id)
		LEFT JOIN a ON a.id = e.id}))
	{
		my ($id, $acked) = split /\|/;
		$s{$id} = $acked;
	}
	return \%s;
}

# The server log's lines since $offset that tell of a crash, as
# pgc_crash_lines in scripts/pgcluster.sh reads them, less those of the
# backend the test killed.
sub crash_lines
{
	my ($offset, $killed) = @_;
	my ($down, @lines) = (0);
	for (split /\n/, slurp_file($node->logfile, $offset))
	{
		$down = 1 if /received (?:fast|smart|immediate) shutdown request/;
		next if defined $killed
		  && (/(?:server process|client backend) \(PID $killed\) was terminated by signal 9: Killed/
			|| /all server processes terminated; reinitializing/);
		push @lines, $_
		  if /terminated by signal|PANIC|TRAP:|server process .* was terminated|all server processes terminated; reinitializing/
		  || (/exited with exit code/ && !$down);
	}
	return @lines;
}

# The $n lowest of a list of ids, for a diagnostic.
sub some_ids
{
	my ($n, @ids) = @_;
	my @s = sort { $a <=> $b } @ids;
	splice(@s, $n) if @s > $n;
	return "@s";
}

my (%offered, %acked, $available);
my %count = map { $_ => 0 } qw(offered acked held_hold held_consumer unanswered unanswered_acked reclaimed);
my %held_before;
my $round = 0;
for my $how ('immediate', 'sigkill', 'immediate')
{
	$round++;
	my $label = "crash $round ($how)";
	my %clients = (gate => start_client('gate'));
	$node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 AND granted
	}) or die 'the gate is not closed';
	$clients{$_} = start_client($_) for @who;
	wait_for_load(\%clients);

	my $offset = -s $node->logfile;
	my $killed;
	if ($how eq 'immediate')
	{
		$node->stop('immediate');
		$node->start;
	}
	else
	{
		# consume1's backend, or another client's if it is gone
		$killed = $node->safe_psql('postgres', qq{
			SELECT pid FROM pg_stat_activity
			WHERE application_name IN (@{[ join(', ', map { "'$_'" } @who) ]})
			ORDER BY application_name <> 'consume1', application_name LIMIT 1});
		$killed =~ /^\d+$/ or die 'no client backend to kill';
		kill 'KILL', $killed;
		$node->wait_for_log(
			qr/all server processes terminated; reinitializing.*database system is ready to accept connections/s,
			$offset);
	}
	for my $c (values %clients)
	{
		$c->{h}->kill_kill unless eval { $c->{h}->finish; 1 };
	}

	# --- the clients' ledgers
	my (@problems, @claims, %r_offered, %r_acked, %r_held, %r_unanswered, %r);
	my $held_by_hold = 0;
	for my $who ('gate', @who)
	{
		my $r = $r{$who} = read_client($who, $clients{$who});
		push @problems, @{ $r->{problems} };
		push @claims, @{ $r->{claims} };
		$r_offered{$_} = 1 for @{ $r->{offered} };
		$r_acked{$_} = 1 for @{ $r->{acked} };
		$r_held{$_} = 1 for @{ $r->{held} };
		$r_unanswered{$_} = 1 for @{ $r->{unanswered} };
		$held_by_hold += @{ $r->{held} } if $who eq 'hold';
		$count{held_consumer} += @{ $r->{held} } if $who =~ /^consume/;
	}
	is(join("\n", @problems), '',
		"$label: every client lost its connection at the crash and nothing else went wrong");
	cmp_ok(scalar(keys %r_offered), '>', 0, "$label: offers committed before it");
	cmp_ok(scalar(keys %r_acked), '>', 0, "$label: acks committed before it");
	cmp_ok($held_by_hold, '>', 0, "$label: leases held at it");
	ok(@{ $r{slowanswer}{unanswered} } && @{ $r{slowcommit}{unanswered} },
		"$label: an ack had committed and another was open, both unanswered");

	my %times;
	$times{$_}++ for map { @$_ } @claims;
	my @again = grep { $acked{$_} } keys %times;
	is(scalar(@again), 0, "$label: no event acked before was claimed again")
	  or diag('again: ' . some_ids(10, @again));
	my @twice = grep { $times{$_} > 1 } keys %times;
	is(scalar(@twice), 0, "$label: no event was claimed twice since the last crash")
	  or diag('twice: ' . some_ids(10, @twice));
	$count{reclaimed} += grep { $held_before{$_} } keys %times;

	$offered{$_} = 1 for keys %r_offered;
	$acked{$_} = 1 for keys %r_acked;
	$count{offered} += keys %r_offered;
	$count{acked} += keys %r_acked;
	$count{held_hold} += $held_by_hold;

	# --- the server's state, with no client connected
	$available = available_now();
	my $stored = stored_now();

	my @lost = grep { !exists $stored->{$_} } keys %offered;
	is(scalar(@lost), 0, "$label: no committed offer was lost") or diag('lost: ' . some_ids(10, @lost));
	my @not_acked = grep { !$stored->{$_} } keys %acked;
	is(scalar(@not_acked), 0, "$label: every committed ack is in the acknowledgements")
	  or diag('not acked: ' . some_ids(10, @not_acked));
	my @redelivered = grep { $available->{$_} } keys %acked;
	is(scalar(@redelivered), 0, "$label: no acked event is available again")
	  or diag('available again: ' . some_ids(10, @redelivered));
	my @not_back = grep { !$available->{$_} } keys %r_held;
	is(scalar(@not_back), 0, "$label: every lease held at the crash is available again")
	  or diag('not back: ' . some_ids(10, @not_back));
	my @unsettled = grep { !($stored->{$_} xor $available->{$_}) } keys %r_unanswered;
	is(scalar(@unsettled), 0, "$label: every unanswered ack either committed or its events are available again")
	  or diag('neither or both: ' . some_ids(10, @unsettled));
	my @answer_lost = grep { !$stored->{$_} || $available->{$_} } @{ $r{slowanswer}{unanswered} };
	is(scalar(@answer_lost), 0, "$label: an ack that committed without an answer is kept")
	  or diag('not acked: ' . some_ids(10, @answer_lost));
	my @commit_lost = grep { $stored->{$_} || !$available->{$_} } @{ $r{slowcommit}{unanswered} };
	is(scalar(@commit_lost), 0, "$label: an ack that did not commit hands its events back")
	  or diag('not available: ' . some_ids(10, @commit_lost));
	my @neither = grep { !($stored->{$_} xor $available->{$_}) } keys %$stored;
	my @unknown = grep { !exists $stored->{$_} } keys %$available;
	my @dup = grep { $available->{$_} > 1 } keys %$available;
	is(scalar(@neither) + scalar(@unknown) + scalar(@dup), 0,
		"$label: every stored event is either acknowledged or available, once")
	  or diag('neither or both: ' . some_ids(10, @neither) . '; not stored: ' . some_ids(10, @unknown)
		  . '; claimed twice: ' . some_ids(10, @dup));
	is($node->safe_psql('postgres',
		"SELECT available || ' ' || leased || ' ' || delayed || ' ' || dead FROM outbox.stats WHERE topic = 'c'"),
		scalar(keys %$available) . ' 0 0 0', "$label: stats agree");
	my @crash = crash_lines($offset, $killed);
	is(join("\n", @crash), '', "$label: the server log tells of no other crash");
	like(slurp_file($node->logfile, $offset), qr/(?:server process|client backend) \(PID $killed\) was terminated by signal 9/,
		"$label: the backend was killed and the server reinitialised")
	  if defined $killed;
	is($node->safe_psql('postgres', $dead_letters), $dead_before, "$label: the dead letters are intact");

	my @unanswered_acked = grep { $stored->{$_} } keys %r_unanswered;
	$acked{$_} = 1 for @unanswered_acked;
	$count{unanswered} += keys %r_unanswered;
	$count{unanswered_acked} += @unanswered_acked;
	%held_before = %r_held;
}
note(sprintf('offered %d, acked %d; leases held at the crashes: %d by the holder, %d by consumers, '
	  . 'of which %d were claimed again after the next restart; events of unanswered acks %d, of which acked %d',
	@count{qw(offered acked held_hold held_consumer reclaimed unanswered unanswered_acked)}));
cmp_ok($count{held_consumer}, '>', 0, 'consumers held leases at the crashes');

# Drain what is left: exactly the events available after the last restart,
# each once, every ack counting.
my (%drained, $failed_acks);
for (1 .. 1000)
{
	my ($ids, $failed) = split / /, $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(id::text, ','), '') || ' ' || count(*) FILTER (WHERE NOT ok)
		FROM (SELECT id, outbox.ack(id, lease_token) AS ok FROM outbox.claim('c', 1000)) x
	}), -1;
	$failed_acks += $failed;
	last if $ids eq '';
	$drained{$_}++ for split /,/, $ids;
}
is($failed_acks, 0, 'every ack of the drain counted');
my @again = grep { $acked{$_} } keys %drained;
is(scalar(@again), 0, 'the drain delivers no acked event') or diag('again: ' . some_ids(10, @again));
my @twice = grep { $drained{$_} > 1 } keys %drained;
is(scalar(@twice), 0, 'the drain delivers no event twice') or diag('twice: ' . some_ids(10, @twice));
my @missing = grep { !$drained{$_} } keys %$available;
my @extra = grep { !$available->{$_} } keys %drained;
is(scalar(@missing) + scalar(@extra), 0, 'the drain delivers exactly the events that were available')
  or diag('not delivered: ' . some_ids(10, @missing) . '; not available before: ' . some_ids(10, @extra));
is($node->safe_psql('postgres', "SELECT available + leased FROM outbox.stats WHERE topic = 'c'"),
	'0', 'stats agree: nothing left');
is($node->safe_psql('postgres', $dead_letters), $dead_before, 'the dead letters are intact');

$node->stop;
done_testing();
