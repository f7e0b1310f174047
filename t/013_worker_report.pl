# A unit of the background worker that fails is logged with its whole
# report: SQLSTATE, message, detail and the context of the statement that
# failed; once it works again, that is logged too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('workerreport');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.reap_interval = 200
outbox.launcher_naptime = 1
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('r');
});

# An acked event: the worker's next reap moves the topic's watermark, which
# a constraint added for the test forbids.
$node->safe_psql('postgres', q{
	ALTER TABLE outbox.topic_state ADD CONSTRAINT no_move CHECK (watermark = 0) NOT VALID;
	SELECT outbox.offer('r', '{}');
	SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid) FROM outbox.claim('r', 10);
});

my $offset = 0;
ok($node->wait_for_log(qr/outbox worker: reap failed \(SQLSTATE 23514\): new row for relation "topic_state" violates check constraint "no_move"/, $offset),
	'the failure is logged with its SQLSTATE');
my $log = slurp_file($node->logfile);
like($log, qr/reap failed.*\n.*DETAIL:  Failing row contains .*\n.*It is tried again at the next interval/,
	'with the detail of the error, and what happens next');
like($log, qr/reap failed(?:.*\n){1,6}.*CONTEXT:  SQL statement "UPDATE outbox\.topic_state/,
	'and the context of the statement that failed');

$offset = length($log);
$node->safe_psql('postgres', q{ALTER TABLE outbox.topic_state DROP CONSTRAINT no_move});
ok($node->wait_for_log(qr/outbox worker: reap works again/, $offset),
	'once the cause is gone the worker says it works again');
is($node->safe_psql('postgres', q{SELECT watermark > 0 FROM outbox.topic_state}),
	't', 'and the watermark moved');

done_testing();
