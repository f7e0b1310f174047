# A claim that waits while it reads the log (here for a lock on
# outbox.retry, held by another session) is cancelled at once by
# statement_timeout and by pg_cancel_backend, and leaves the topic as it
# was: the next claim takes its events.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('claimcancel');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('cc');
	SELECT outbox.offer('cc', jsonb_build_object('n', i)) FROM generate_series(1, 3) i;
});

my $locker = $node->background_psql('postgres');
$locker->query_safe(q{BEGIN});
$locker->query_safe(q{LOCK outbox.retry IN ACCESS EXCLUSIVE MODE});

# statement_timeout: the claim ends 300 ms after it starts, not when the
# lock goes.
my $t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', q{
	SET statement_timeout = '300ms';
	SELECT count(*) FROM outbox.claim('cc', 10, '1 minute');
});
my $took = time - $t0;
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout cancels the claim');
cmp_ok($took, '<', 0.3 + 0.1 + 0.5, "within 100 ms of the timeout (took ${took}s, with 0.5 s for psql)");

# pg_cancel_backend: from another session, while the claim waits.
my $claimer = $node->background_psql('postgres', on_error_stop => 0);
$claimer->query_safe(q{SET application_name = 'the_claim'});
$claimer->{stdin} .= "SELECT count(*) FROM outbox.claim('cc', 10, '1 minute');\n";
$claimer->{run}->pump_nb;
$node->poll_query_until('postgres', q{
	SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE application_name = 'the_claim'
}) or die 'the claim does not wait';
$t0 = time;
$node->safe_psql('postgres', q{
	SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'the_claim'
});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' FROM pg_stat_activity WHERE application_name = 'the_claim'
}), 'pg_cancel_backend ends the waiting claim');
$took = time - $t0;
cmp_ok($took, '<', 0.1 + 0.5, "at once (took ${took}s, with 0.5 s for polling)");
$claimer->quit;

# While the claim waited, an offer to the topic committed without waiting.
$t0 = time;
$node->safe_psql('postgres', q{SET statement_timeout = '5s'; SELECT outbox.offer('cc', '{"n": 4}')});
cmp_ok(time - $t0, '<', 2, 'an offer to the topic does not wait for a claim that waits');

$locker->query_safe(q{COMMIT});
$locker->quit;

is($node->safe_psql('postgres', q{
	SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM outbox.claim('cc', 10, '1 minute')
}), '1,2,3,4', 'the cancelled claims left the topic as it was');

done_testing();
