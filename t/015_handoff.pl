# Offers that commit while a claim reads the log, with a snapshot that does
# not see them, are not stepped over: the claim hands them to the ready
# list.  Here the claim is held after its snapshot by a lock on
# outbox.dead_letter, which a recovering scan reads (settled ids above the
# watermark, after a restart).  The offer that commits meanwhile is one its
# offer slot does not name (its transaction offered to 16 other topics
# first), and one it does.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('handoff');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('h');
	SELECT outbox.create_topic('other' || i) FROM generate_series(1, 16) i;
	CREATE TABLE got (n text);
	-- claim up to b events of h, note them, ack them
	CREATE FUNCTION take(b int) RETURNS void LANGUAGE sql AS $$
		WITH c AS (SELECT * FROM outbox.claim('h', b, '1 hour')),
			 i AS (INSERT INTO got SELECT payload->>'n' FROM c)
		SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid)
		FROM c HAVING count(*) > 0
	$$;
});

for my $named (0, 1)
{
	my $label = $named ? 'named in its offer slot' : 'not named in its offer slot';

	# x acked, y leased; after a restart y is pending below the settled x...
	$node->safe_psql('postgres', qq{
		SELECT outbox.offer('h', '{"n": "y$named"}');
		SELECT outbox.offer('h', '{"n": "x$named"}');
		CREATE TEMP TABLE two AS SELECT id, lease_token, payload->>'n' AS n FROM outbox.claim('h', 2);
		INSERT INTO got SELECT n FROM two WHERE n = 'x$named';
		SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid) FROM two WHERE n = 'x$named';
	});
	$node->restart;
	# ... and the claim of y leaves the topic recovering
	$node->safe_psql('postgres', q{SELECT take(1)});

	my $a = $node->background_psql('postgres');
	$a->query_safe('BEGIN');
	$a->query_safe(q{SELECT count(outbox.offer('other' || i, '{}')) FROM generate_series(1, 16) i})
	  if !$named;
	$a->query_safe(qq{SELECT outbox.offer('h', '{"n": "a$named"}')});

	# a later event of the topic, committed
	$node->safe_psql('postgres', qq{SELECT outbox.offer('h', '{"n": "p$named"}')});

	my $l = $node->background_psql('postgres');
	$l->query_safe('BEGIN');
	$l->query_safe('LOCK outbox.dead_letter IN ACCESS EXCLUSIVE MODE');

	my $c = $node->background_psql('postgres');
	$c->query_safe(q{SET application_name = 'the_claim'});
	$c->{stdin} .= "SELECT take(10);\n";
	$c->{run}->pump_nb;
	ok($node->poll_query_until('postgres', q{
		SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE application_name = 'the_claim'
	}), "$label: the claim waits after its snapshot");

	$a->query_safe('COMMIT');
	$l->query_safe('COMMIT');
	$node->poll_query_until('postgres', q{
		SELECT state = 'idle' FROM pg_stat_activity WHERE application_name = 'the_claim'
	}) or die 'the claim does not end';
	$c->quit;
	$a->quit;
	$l->quit;

	$node->safe_psql('postgres', q{SELECT take(10)});
	is($node->safe_psql('postgres', qq{
		SELECT string_agg(n, ',' ORDER BY n) FROM got WHERE n LIKE '%$named'
	}), "a$named,p$named,x$named,y$named",
		"$label: an offer that committed during the claim's read is delivered");
}

is($node->safe_psql('postgres', q{SELECT count(*) - count(DISTINCT n) FROM got}),
	'0', 'no event was handed out twice');
is($node->safe_psql('postgres', q{SELECT available + leased FROM outbox.stats WHERE topic = 'h'}),
	'0', 'nothing is left');

done_testing();
