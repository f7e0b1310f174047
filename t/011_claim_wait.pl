# claim(wait => ...) wakes when a delayed event or a retry falls due, not
# only when an offer commits; and a waiting claim is cancelled at once by
# statement_timeout and by pg_cancel_backend; while it sleeps it holds no
# lock on the log, so partitions can be retired meanwhile.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('claimwait');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('w');
	SELECT outbox.create_topic('empty');
});

# A delayed event falls due while the claim waits.
$node->safe_psql('postgres', q{SELECT outbox.offer('w', '{"delayed": true}', available_at => clock_timestamp() + interval '1 second')});
my $t0 = time;
my $got = $node->safe_psql('postgres', q{SELECT payload->>'delayed' FROM outbox.claim('w', wait => '10 seconds')});
my $took = time - $t0;
is($got, 'true', 'a waiting claim gets the delayed event when it falls due');
cmp_ok($took, '>', 0.5, sprintf('not before (%.2f s)', $took));
cmp_ok($took, '<', 5, 'and well before the wait runs out');

# A retry falls due while the claim waits.
$node->safe_psql('postgres', q{
	SELECT outbox.offer('w', '{"retried": true}');
	SELECT outbox.nack(id, lease_token, 'later', retry_after => '1 second') FROM outbox.claim('w');
});
$t0 = time;
$got = $node->safe_psql('postgres', q{SELECT attempt FROM outbox.claim('w', wait => '10 seconds')});
$took = time - $t0;
is($got, '2', 'a waiting claim gets the retried event when its retry falls due');
cmp_ok($took, '<', 5, sprintf('within %.2f s', $took));

# statement_timeout ends a waiting claim.
$t0 = time;
my ($rc, $out, $err) = $node->psql('postgres',
	q{SET statement_timeout = '300ms'; SELECT * FROM outbox.claim('empty', wait => '30 seconds')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
$took = time - $t0;
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/, 'statement_timeout cancels a waiting claim');
cmp_ok($took, '<', 2, sprintf('at once (%.2f s)', $took));

# pg_cancel_backend ends a waiting claim.
my ($o, $e) = ('', '');
my $h = IPC::Run::start(['psql', '-X', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'),
	'-c', q{SET application_name = 'waiter'; SELECT * FROM outbox.claim('empty', wait => '30 seconds')}],
	'>', \$o, '2>', \$e);
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'waiter' AND query LIKE '%claim%' AND state = 'active'}),
	'the claim is waiting');
sleep 0.3;
$t0 = time;
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'waiter'});
$h->finish;
$took = time - $t0;
like($e, qr/ERROR:  57014: canceling statement due to user request/, 'pg_cancel_backend cancels a waiting claim');
cmp_ok($took, '<', 2, sprintf('at once (%.2f s)', $took));

# A waiting claim holds no lock on the log while it sleeps: maintenance
# retires a partition past retention meanwhile, and an offer still wakes it.
$node->safe_psql('postgres', q{
	SELECT outbox.maintain();
	CREATE TABLE outbox.event_p2020_01_01 PARTITION OF outbox.event
		FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
	CREATE INDEX ON outbox.event_p2020_01_01 (topic_id, id);
});
($o, $e) = ('', '');
$h = IPC::Run::start(['psql', '-X', '-Atq', '-d', $node->connstr('postgres'),
	'-c', q{SET application_name = 'sleeper'},
	'-c', q{BEGIN},
	'-c', q{SELECT count(*) FROM outbox.claim('empty', wait => '20 seconds')},
	'-c', q{COMMIT}],
	'>', \$o, '2>', \$e);
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'sleeper' AND query LIKE '%claim%' AND state = 'active'}),
	'a claim waits in an open transaction');
sleep 0.5;
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
	WHERE l.pid = (SELECT pid FROM pg_stat_activity WHERE application_name = 'sleeper')
	  AND c.relnamespace = 'outbox'::regnamespace
	  AND (c.relname LIKE 'event%' OR c.relname LIKE 'acked%')}),
	'0', 'while it sleeps it holds no lock on the log, its partitions or the acknowledgements');
$node->safe_psql('postgres', q{SELECT outbox.maintain()});
is($node->safe_psql('postgres', q{SELECT to_regclass('outbox.event_p2020_01_01') IS NULL}), 't',
	'maintenance retires a partition meanwhile');
$node->safe_psql('postgres', q{SELECT outbox.offer('empty', '{"late": true}')});
$h->finish;
$o =~ s/\s+$//;
is($o, '1', 'and an offer still wakes the claim') or diag($e);

$node->stop;
done_testing();
