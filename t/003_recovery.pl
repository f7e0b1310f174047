# After a restart the scan rebuilds a topic's position from its durable
# watermark.  A lease held across the restart keeps the watermark low, so
# the log above it holds thousands of settled events (acknowledged, waiting
# in outbox.retry, dead): the scan must step over every one of them and
# deliver exactly the events that were not settled, in id order, whatever
# the planner's statistics say (the tables are never analyzed here).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('recovery');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
autovacuum = off
outbox.reap_interval = '200ms'
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('r', max_attempts => 2);
	SELECT outbox.create_topic('other');
	SELECT count(*) FROM outbox.offer_batch('r',
		ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5000) g));
	SELECT count(*) FROM outbox.offer_batch('other',
		ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 3000) g));
});

# The first event stays leased across the restart: the watermark cannot
# pass it.
my $held = $node->safe_psql('postgres',
	"SELECT id FROM outbox.claim('r', 1, lease => '1 hour')");

# Settle the rest in batches of 100: ack most, nack every 7th into
# outbox.retry for an hour, dead-letter every 11th, and leave every 500th
# leased and unsettled.
my @skip;
for my $b (1 .. 50)
{
	my $out = $node->safe_psql('postgres', q{
		WITH c AS MATERIALIZED (SELECT id, lease_token FROM outbox.claim('r', 100, lease => '1 hour'))
		SELECT string_agg(
			CASE WHEN id % 500 = 0 THEN 'u' || id
			     WHEN id % 11 = 0 THEN 'd' || id || ':' || outbox.dead_letter(id, lease_token, 'test')::text
			     WHEN id % 7 = 0 THEN 'n' || id || ':' || outbox.nack(id, lease_token, 'later', retry_after => '1 hour')
			     ELSE 'a' || id || ':' || outbox.ack(id, lease_token)::text END, ',' ORDER BY id)
		FROM c});
	for my $item (split /,/, $out)
	{
		push @skip, substr($item, 1) if $item =~ /^u/;
	}
}
ok(@skip >= 9, 'some events were left leased and unsettled: ' . scalar(@skip));

my ($acked, $retry, $dead) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM outbox.acked a, unnest(coalesce(a.ids, ARRAY[a.max_id]))),
	       (SELECT count(*) FROM outbox.retry),
	       (SELECT count(*) FROM outbox.dead_letter)});
cmp_ok($acked, '>', 3000, "thousands of acks above the watermark ($acked)");
cmp_ok($retry, '>', 300, "hundreds of events waiting in outbox.retry ($retry)");
cmp_ok($dead, '>', 300, "hundreds of dead letters ($dead)");

$node->stop('immediate');
$node->start;

# Nothing was reaped into the watermark past the held event.
my $wm = $node->safe_psql('postgres',
	"SELECT watermark FROM outbox.topic_state s JOIN outbox.topic t USING (topic_id) WHERE t.name = 'r'");
cmp_ok($wm, '<', $held, "the watermark ($wm) is below the held event ($held)");

# After the restart the leases are gone: the held event and the unsettled
# ones come back, in id order, and nothing settled does.  Claim one at a
# time so that each claim resumes the scan where the last one stopped.
my @got;
for (1 .. 100)
{
	my $id = $node->safe_psql('postgres',
		"SELECT id FROM outbox.claim('r', 1, lease => '1 hour')");
	last if $id eq '';
	push @got, $id;
}
is_deeply(\@got, [ $held, @skip ],
	'after the restart exactly the unsettled events are delivered, oldest first');

# The other topic's events were untouched and come out in order: each row
# of the claim, in the order the claim returned them, has a higher id than
# the one before.
my $other = $node->safe_psql('postgres', q{
	SELECT count(*), bool_and(ok) FROM (
		SELECT c.id > lag(c.id, 1, 0::bigint) OVER (ORDER BY c.n) AS ok
		FROM outbox.claim('other', 5000) WITH ORDINALITY
			AS c(id, topic, key, type, payload, headers, tenant, attempt, lease_token,
				 lease_expires_at, created_at, n)) x});
is($other, '3000|t', 'the other topic delivers all 3000 of its events');

# Nothing settled is pending: stats agree.
is($node->safe_psql('postgres',
	"SELECT available, leased, delayed FROM outbox.stats WHERE topic = 'r'"),
	'0|' . (1 + scalar(@skip)) . '|' . $retry,
	'stats: nothing available, the redelivered events leased, the retries delayed');

$node->stop;
done_testing();
