# Standbys and failover.  A streaming standby runs no outbox worker and
# refuses every function that changes delivery state with 25006, while
# stats reads.  Then producers and consumers run on the primary, which is
# stopped immediately; the standby (synchronous, so that every commit the
# clients saw is on it) is promoted.  On the new primary the worker starts
# without a restart, every committed event that was not acked is
# delivered, nothing acked before the failover comes back, and the dead
# letter and the delayed event are intact.  Offers and acks are logged in
# the transactions that make them, so the log and the events always agree.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
max_worker_processes = 16
outbox.reap_interval = '100ms'
outbox.launcher_naptime = '1s'
});
$primary->start;
$primary->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('f', max_attempts => 100);
	SELECT outbox.create_topic('p', max_attempts => 1);
	CREATE TABLE fo_offered (id bigint PRIMARY KEY);
	CREATE TABLE fo_acked (id bigint NOT NULL, phase text NOT NULL);
	-- a dead letter with its history, and an event delayed for an hour
	SELECT outbox.offer('p', '{"poison": true}');
	SELECT outbox.nack(id, lease_token, 'cannot parse') FROM outbox.claim('p');
	INSERT INTO fo_offered SELECT outbox.offer('f', '{"later": true}', available_at => now() + interval '1 hour');
	INSERT INTO fo_offered SELECT outbox.offer('f', jsonb_build_object('n', g)) FROM generate_series(1, 1000) g;

	CREATE PROCEDURE fo_produce(p int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1 .. 100000 LOOP
			INSERT INTO fo_offered SELECT outbox.offer('f', jsonb_build_object('p', p, 'i', i));
			COMMIT;
		END LOOP;
	END $$;
	CREATE PROCEDURE fo_consume() LANGUAGE plpgsql AS $$
	DECLARE
		r record;
	BEGIN
		FOR i IN 1 .. 100000 LOOP
			FOR r IN SELECT * FROM outbox.claim('f', 1 + (random() * 9)::int, lease => '30 seconds') LOOP
				IF random() < 0.1 THEN
					PERFORM outbox.nack(r.id, r.lease_token, 'try again', retry_after => '10 ms');
				ELSE
					INSERT INTO fo_acked SELECT r.id, 'before' WHERE outbox.ack(r.id, r.lease_token);
				END IF;
				COMMIT;
			END LOOP;
		END LOOP;
	END $$;
});
my $dead_before = $primary->safe_psql('postgres',
	q{SELECT id || ':' || attempts || ':' || reason || ':' || error_history::text FROM outbox.dead_letters});
isnt($dead_before, '', 'a dead letter to keep');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
# From now on a commit returns once the standby has it.
$primary->safe_psql('postgres', q{
	ALTER SYSTEM SET synchronous_standby_names = 'standby';
	SELECT pg_reload_conf();
});
ok($primary->poll_query_until('postgres',
	"SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'"),
	'the standby is synchronous');

# ---- the standby
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
sleep 2;
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('outbox worker', 'outbox launcher')"),
	'0', 'no outbox worker or launcher on the standby');
my @writers = (
	q{SELECT outbox.claim('f')},
	q{SELECT outbox.offer('f', '{}')},
	q{SELECT outbox.offer_batch('f', ARRAY['{}'::jsonb])},
	q{SELECT outbox.ack(1, gen_random_uuid())},
	q{SELECT outbox.ack(ARRAY[1]::bigint[], gen_random_uuid())},
	q{SELECT outbox.nack(1, gen_random_uuid(), 'e')},
	q{SELECT outbox.extend_lease(ARRAY[1]::bigint[], gen_random_uuid())},
	q{SELECT outbox.dead_letter(1, gen_random_uuid(), 'r')},
	q{SELECT outbox.redrive(ARRAY[1]::bigint[], 'r')},
	q{SELECT outbox.replay('f', now() - interval '1 day')},
	q{SELECT outbox.reap()},
	q{SELECT outbox.maintain()},
	q{SELECT outbox.create_topic('g')},
	q{SELECT outbox.drop_topic('f')});
for my $sql (@writers)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $sql, extra_params => ['-v', 'VERBOSITY=verbose']);
	like($err, qr/ERROR:  25006: outbox\.\w+\(\) cannot run on a standby/, "standby refuses: $sql");
}
my ($rc, $out, $err) = $standby->psql('postgres',
	q{SELECT available, delayed, dead FROM outbox.stats WHERE topic = 'f'});
is($rc, 0, 'stats reads on the standby') or diag($err);
is($out, '1000|1|0', 'and counts what the primary has');

# ---- failover under load
my @clients;
for my $p (1 .. 2)
{
	push @clients, IPC::Run::start(['psql', '-X', '-q', '-d', $primary->connstr('postgres'),
		'-c', "CALL fo_produce($p)"], '>', '/dev/null', '2>', '/dev/null');
}
for (1 .. 3)
{
	push @clients, IPC::Run::start(['psql', '-X', '-q', '-d', $primary->connstr('postgres'),
		'-c', 'CALL fo_consume()'], '>', '/dev/null', '2>', '/dev/null');
}
sleep 4;
$primary->stop('immediate');
$_->finish for @clients;

$standby->promote;
ok($standby->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'postgres'"),
	'the worker runs on the promoted standby');

my $before = $standby->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM fo_offered) || ' offered, ' ||
		   (SELECT count(*) FROM fo_acked) || ' acked before'});
note("at the failover: $before");
my ($offered, $acked) = $before =~ /^(\d+) offered, (\d+) acked/;
cmp_ok($acked, '>', 0, 'consumers acked events before the failover');
cmp_ok($offered, '>', 1001, 'producers offered events before the failover');

# Drain on the new primary.
my $drained = 0;
for my $round (1 .. 600)
{
	my $n = $standby->safe_psql('postgres', q{
		WITH c AS (SELECT * FROM outbox.claim('f', 500))
		INSERT INTO fo_acked SELECT c.id, 'after' FROM c WHERE outbox.ack(c.id, c.lease_token)
		RETURNING 1}, on_error_die => 1);
	my $left = $standby->safe_psql('postgres',
		q{SELECT available + leased FROM outbox.stats WHERE topic = 'f'});
	if ($left eq '0' && $n eq '')
	{
		$drained = 1;
		last;
	}
	sleep 0.05 if $n eq '';
}
ok($drained, 'the new primary delivers the backlog');

is($standby->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT id FROM fo_acked GROUP BY id HAVING count(*) > 1) x}),
	'0', 'nothing acked before the failover is delivered again');
is($standby->safe_psql('postgres', q{
	SELECT count(*) FROM fo_offered o
	WHERE NOT EXISTS (SELECT 1 FROM fo_acked a WHERE a.id = o.id)}),
	'1', 'every committed event is delivered, but for the delayed one');
is($standby->safe_psql('postgres', q{SELECT delayed FROM outbox.stats WHERE topic = 'f'}),
	'1', 'the delayed event still waits');
is($standby->safe_psql('postgres',
	q{SELECT id || ':' || attempts || ':' || reason || ':' || error_history::text FROM outbox.dead_letters}),
	$dead_before, 'the dead letter and its history are intact');
my $after = $standby->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM fo_offered) || ' offered, ' ||
		   (SELECT count(*) FROM fo_acked WHERE phase = 'before') || ' acked before, ' ||
		   (SELECT count(*) FROM fo_acked WHERE phase = 'after') || ' acked after, ' ||
		   (SELECT delayed FROM outbox.stats WHERE topic = 'f') || ' delayed, ' ||
		   (SELECT count(*) FROM outbox.dead_letters) || ' dead'});
note("after the drain: $after");

$standby->stop;
done_testing();
