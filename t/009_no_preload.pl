# Without shared_preload_libraries: the library loads on first use, and
# offer, offer_batch, ack, stats, reap and maintain work; claim refuses
# with 55000 and a hint to preload; the counters of stats and every
# figure of metrics are NULL; no outbox worker runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
	CREATE EXTENSION outbox;
	SELECT outbox.create_topic('np');
});
cmp_ok($node->safe_psql('postgres', q{SELECT outbox.offer('np', '{"n": 1}')}), '>', 0, 'offer works');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.offer_batch('np', ARRAY['{}', '{}']::jsonb[])}),
	'2', 'offer_batch works');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT * FROM outbox.claim('np')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  55000: /, 'claim refuses with 55000');
like($err, qr/HINT:  .*shared_preload_libraries/, 'with a hint to preload');
is($node->safe_psql('postgres', q{SELECT outbox.ack(1, gen_random_uuid())}), 'f',
	'ack works (and refuses a token that holds nothing)');
is($node->safe_psql('postgres',
	q{SELECT available || '|' || leased || '|' || (offered IS NULL) || '|' || (acked IS NULL) FROM outbox.stats WHERE topic = 'np'}),
	'3|0|true|true', 'stats counts the events; its counters are NULL');
is($node->safe_psql('postgres',
	q{SELECT count(*) || '|' || bool_and(num_nulls(offered, claimed, acked, nacked, expired, dead_lettered,
		redriven, delivery_p50, delivery_p90, delivery_p99, delivery_max, wait_p50, wait_p99) = 13)
	  FROM outbox.metrics WHERE topic = 'np'}),
	'1|true', 'metrics has the topic, with every figure NULL');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.metrics_histograms()}), '0',
	'metrics_histograms has nothing to export');
is($node->safe_psql('postgres', q{SELECT outbox.reset_metrics()}), '', 'reset_metrics does nothing, and says nothing');
is($node->safe_psql('postgres', q{SELECT outbox.reap()}), '0', 'reap works');
($rc, $out, $err) = $node->psql('postgres', q{SELECT outbox.maintain()});
is($rc, 0, 'maintain works') or diag($err);
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('outbox worker', 'outbox launcher')}),
	'0', 'no outbox worker runs');
$node->stop;
done_testing();
