# A topic nobody claims after a restart still has its watermark moved up
# over the events acknowledged before the restart: reap does it without the
# topic's shared slot, so a quiet topic does not keep the partitions of its
# last events past retention until its next claim.  The watermark stops
# below the first event that is not settled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('quiet');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('all_acked');
	SELECT outbox.create_topic('one_left');
	SELECT outbox.create_topic('nacked');
	SELECT outbox.offer('all_acked', jsonb_build_object('n', i)) FROM generate_series(1, 5) i;
	SELECT outbox.offer('one_left', jsonb_build_object('n', i)) FROM generate_series(1, 3) i;
	SELECT outbox.offer('nacked', jsonb_build_object('n', i)) FROM generate_series(1, 2) i;
});

sub ids_of
{
	my ($topic) = @_;
	return split /\n/, $node->safe_psql('postgres',
		"SELECT e.id FROM outbox.event e JOIN outbox.topic t USING (topic_id) WHERE t.name = '$topic' ORDER BY e.id");
}
sub watermark
{
	my ($topic) = @_;
	return $node->safe_psql('postgres',
		"SELECT s.watermark FROM outbox.topic_state s JOIN outbox.topic t USING (topic_id) WHERE t.name = '$topic'");
}

my @all = ids_of('all_acked');
my @one = ids_of('one_left');
my @nack = ids_of('nacked');

# all five acked; of three, the first and the last; of two, the first
# nacked (waiting for its retry) and the second acked
$node->safe_psql('postgres', q{
	WITH c AS (SELECT array_agg(id) AS ids, min(lease_token::text)::uuid AS tok
			   FROM outbox.claim('all_acked', 10))
	SELECT outbox.ack(ids, tok) FROM c;
	WITH c AS (SELECT array_agg(id ORDER BY id) AS ids, min(lease_token::text)::uuid AS tok
			   FROM outbox.claim('one_left', 10))
	SELECT outbox.ack(ARRAY[ids[1], ids[3]], tok) FROM c;
	WITH c AS (SELECT array_agg(id ORDER BY id) AS ids, min(lease_token::text)::uuid AS tok
			   FROM outbox.claim('nacked', 10))
	SELECT outbox.nack(ids[1], tok, 'later', '1 hour'), outbox.ack(ids[2], tok) FROM c;
});
is(watermark('all_acked'), 0, 'before the restart nothing moved the watermark (no reap yet)');

# the restart: shared memory forgets every topic
$node->restart;
$node->safe_psql('postgres', 'SELECT outbox.reap()');

is(watermark('all_acked'), $all[-1], 'all acknowledged: the watermark passes them all');
is(watermark('one_left'), $one[0], 'one left: the watermark stops below it');
is(watermark('nacked'), $nack[-1],
	'a nacked event waiting in outbox.retry is settled: the watermark passes it');

# nothing is lost: the event left and the nacked one (made due) come again
$node->safe_psql('postgres', q{UPDATE outbox.retry SET available_at = now()});
my $got = $node->safe_psql('postgres', q{
	SELECT string_agg(id::text, ',' ORDER BY id) FROM (
		SELECT id FROM outbox.claim('one_left', 10)
		UNION ALL SELECT id FROM outbox.claim('nacked', 10)
		UNION ALL SELECT id FROM outbox.claim('all_acked', 10)) c});
is($got, join(',', sort { $a <=> $b } ($one[1], $nack[0])),
	'after the move: the unsettled event and the retry are claimed, nothing acknowledged comes back');

$node->stop;
done_testing();
