# The turn of the calendar.  The server runs under libfaketime with its
# clock set a few seconds before midnight, before the end of a month and
# before the end of a year (the test is the same on any real date); while
# its clock crosses each, producers offer and consumers claim and ack.
# Every event is delivered exactly once, lands in the partition whose range
# holds its created_at (never in the default partition), and maintain()
# (the worker's and a manual one) keeps four days of partitions ahead of
# the new day.  Between the three the server is down for weeks: the events
# it takes before maintenance has run land in the default partition, and
# maintenance moves them into partitions of their days.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);

my ($faketime) = grep { -e $_ } ('/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
	glob('/usr/lib/*/faketime/libfaketime.so.1'));
ok(defined $faketime, 'libfaketime is installed') or BAIL_OUT('libfaketime is missing (Debian package faketime)');

my $node = PostgreSQL::Test::Cluster->new('calendar');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
max_worker_processes = 16
outbox.reap_interval = '100ms'
outbox.maintenance_interval = '2s'
timezone = 'UTC'
});

sub start_at
{
	my ($when) = @_;
	local $ENV{LD_PRELOAD} = $faketime;
	local $ENV{FAKETIME} = "\@$when";
	local $ENV{FAKETIME_DONT_RESET} = 1;
	$node->start;
}

my $first = 1;
for my $when ('2027-03-14 23:59:50', '2027-04-30 23:59:50', '2027-12-31 23:59:50')
{
	start_at($when);
	my $clock = $node->safe_psql('postgres', q{SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')});
	my $want = substr($when, 0, 16);
	is($clock, $want, "the server's clock reads $want");
	if ($first)
	{
		$node->safe_psql('postgres', q{
			SET client_min_messages = warning;
			CREATE EXTENSION outbox CASCADE;
			SELECT outbox.create_topic('cal');
			CREATE TABLE cal_offered (id bigint PRIMARY KEY, at timestamptz);
			CREATE TABLE cal_acked (id bigint NOT NULL);
			CREATE PROCEDURE cal_produce(p_seconds int) LANGUAGE plpgsql AS $$
			DECLARE
				v_end timestamptz := clock_timestamp() + p_seconds * interval '1 second';
			BEGIN
				WHILE clock_timestamp() < v_end LOOP
					INSERT INTO cal_offered SELECT outbox.offer('cal', jsonb_build_object('at', clock_timestamp())), now();
					COMMIT;
					PERFORM pg_sleep(0.005);
				END LOOP;
			END $$;
			CREATE PROCEDURE cal_consume(p_seconds int) LANGUAGE plpgsql AS $$
			DECLARE
				v_end timestamptz := clock_timestamp() + p_seconds * interval '1 second';
			BEGIN
				WHILE clock_timestamp() < v_end LOOP
					INSERT INTO cal_acked SELECT c.id FROM outbox.claim('cal', 20) c
					WHERE outbox.ack(c.id, c.lease_token);
					COMMIT;
					PERFORM pg_sleep(0.01);
				END LOOP;
			END $$;
		});
		$first = 0;
	}
	my @clients;
	push @clients, IPC::Run::start(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', 'CALL cal_produce(20)'], '>', \my $o1, '2>', \my $e1);
	push @clients, IPC::Run::start(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', 'CALL cal_consume(25)'], '>', \my $o2, '2>', \my $e2);
	my $failed = 0;
	for (@clients)
	{
		$_->finish;
		$failed++ if ($_->full_result // 0) != 0;
	}
	ok($failed == 0 && $e1 eq '' && $e2 eq '', "producer and consumer ran without error across $when")
	  or diag("producer: $e1\nconsumer: $e2");

	# The rest of the backlog, then the checks.
	$node->safe_psql('postgres', q{
		INSERT INTO cal_acked SELECT c.id FROM outbox.claim('cal', 10000) c WHERE outbox.ack(c.id, c.lease_token)});
	my $days = $node->safe_psql('postgres', q{
		SELECT count(DISTINCT (at AT TIME ZONE 'UTC')::date) FROM cal_offered
		WHERE at > now() - interval '1 minute'});
	is($days, '2', "events were offered on both sides of the midnight after ${when}");
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM cal_offered o WHERE NOT EXISTS (SELECT 1 FROM cal_acked a WHERE a.id = o.id)}),
		'0', 'every event offered is delivered');
	is($node->safe_psql('postgres', q{SELECT count(*) - count(DISTINCT id) FROM cal_acked}),
		'0', 'none twice');
	$node->safe_psql('postgres', 'SELECT outbox.maintain()');
	is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.event_default}),
		'0', 'after maintain(), no event in the default partition');
	# Partitions are named by the day, in pg_partman's format for it
	# (YYYY_MM_DD up to pg_partman 4, YYYYMMDD from 5 on).
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM outbox.event e, public.part_config p
		WHERE p.parent_table = 'outbox.event'
		  AND e.tableoid::regclass::text <> 'outbox.event_p' || to_char(e.created_at AT TIME ZONE 'UTC', p.datetime_string)}),
		'0', 'every event is in the partition of its day');
	is($node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, public.part_config p
		WHERE i.inhparent = 'outbox.event'::regclass AND p.parent_table = 'outbox.event'
		  AND c.relname > 'event_p' || to_char(now() AT TIME ZONE 'UTC', p.datetime_string)
		  AND c.relname <> 'event_default'}),
		'4', 'maintain() keeps four days of partitions ahead of the new day');
	is($node->safe_psql('postgres', q{SELECT available + leased + delayed FROM outbox.stats WHERE topic = 'cal'}),
		'0', 'nothing is stuck');
	$node->stop;
}

done_testing();
