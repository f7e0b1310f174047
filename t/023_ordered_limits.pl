# The shared memory of ordered topics is bounded by outbox.max_ordered_events
# and outbox.max_ordered_keys.  A claim that finds no room to hold an event
# back behind its key leases what it can, and fails with 53400 and a hint
# only when it can lease nothing; a delayed offer that finds no room fails
# with 53400 before anything is stored.  Once the blocking key moves on,
# the room comes back and every event is delivered, once, in key order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('orderedcap');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.max_ordered_events = 1024
outbox.max_ordered_keys = 128
outbox.enabled = off
});
$node->start;

is($node->safe_psql('postgres', 'SHOW outbox.max_ordered_events'), '1024', 'max_ordered_events set');
is($node->safe_psql('postgres', 'SHOW outbox.max_ordered_keys'), '128', 'max_ordered_keys set');

# 3,000 events: every other one of key 'hot', the others over 20 keys.
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('cap', ordered => true);
	SELECT count(*) FROM outbox.offer_batch('cap',
		ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 3000) g),
		keys => ARRAY(SELECT CASE WHEN g % 2 = 0 THEN 'hot' ELSE 'k' || (g % 20) END
					  FROM generate_series(1, 3000) g));
	CREATE TABLE held (id bigint, key text, lease_token uuid);
	CREATE TABLE acked (id bigint, key text, seq bigserial);
});

# One relay holds the hot key's first event; the others claim and ack until
# the room for held-back hot events runs out.
$node->safe_psql('postgres',
	q{INSERT INTO held SELECT id, key, lease_token FROM outbox.claim('cap', 1, lease => '1 hour')});
is($node->safe_psql('postgres', q{SELECT key FROM held}), 'k1', 'the first event is of key k1');
$node->safe_psql('postgres', q{
	SELECT outbox.ack(id, lease_token) FROM held;
	INSERT INTO acked (id, key) SELECT id, key FROM held;
	DELETE FROM held;
	INSERT INTO held SELECT id, key, lease_token FROM outbox.claim('cap', 1, lease => '1 hour');
});
is($node->safe_psql('postgres', q{SELECT key FROM held}), 'hot', 'a relay holds the hot key');

# claim n, ack them in one call, log them in id order, in one transaction
my $take = sub {
	my ($n) = @_;
	return qq{
		BEGIN;
		CREATE TEMP TABLE c ON COMMIT DROP AS
			SELECT id, key, lease_token FROM outbox.claim('cap', $n);
		SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid) FROM c HAVING count(*) > 0;
		INSERT INTO acked (id, key) SELECT id, key FROM c ORDER BY id;
		SELECT count(*) FROM c;
		COMMIT;};
};

my ($refused, $err, $claims) = (0, '', 0);
for (1 .. 400)
{
	my ($rc, $out);
	($rc, $out, $err) = $node->psql('postgres', $take->(10),
		extra_params => ['-v', 'VERBOSITY=verbose']);
	if ($rc != 0)
	{
		$refused = 1;
		last;
	}
	$claims++;
}
ok($refused, 'a claim that can lease nothing for want of room is refused');
like($err, qr/ERROR:  53400: too many events of ordered topics are leased, waiting or held back/,
	'with 53400');
like($err, qr/HINT:  .*outbox\.max_ordered_events/, 'and a hint naming the setting');
ok($node->safe_psql('postgres', q{SELECT count(*) FROM acked}) > 0,
	"claims leased what fit before that ($claims claims)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM acked WHERE key = 'hot'}), '0',
	'nothing of the hot key went out while its first event was leased');

# A delayed offer to a new key finds no room either.
my ($rc, $out);
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT outbox.offer('cap', '{}', key => 'late', available_at => now() + interval '1 hour')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
isnt($rc, 0, 'a delayed offer that finds no room fails');
like($err, qr/ERROR:  53400: too many events of ordered topics are waiting or held back/,
	'with 53400');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.event WHERE key = 'late'}), '0',
	'and stores nothing');

# The hot key's lease is acked: its held events go out in runs, room comes
# back, and everything drains in key order.
$node->safe_psql('postgres', q{SELECT outbox.ack(id, lease_token) FROM held});
$node->safe_psql('postgres', q{INSERT INTO acked (id, key) SELECT id, key FROM held});
for (1 .. 2000)
{
	$node->safe_psql('postgres', $take->(50));
	last if $node->safe_psql('postgres',
		q{SELECT available + leased FROM outbox.stats WHERE topic = 'cap'}) == 0;
}
is($node->safe_psql('postgres', q{SELECT count(*), count(DISTINCT id) FROM acked}), '3000|3000',
	'every event delivered once');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT id, lag(id) OVER (PARTITION BY key ORDER BY seq) AS prev FROM acked) x
	WHERE prev > id}), '0', 'each key in id order');
is($node->safe_psql('postgres',
	q{SELECT available, leased FROM outbox.stats WHERE topic = 'cap'}), '0|0', 'the topic is empty');

# A dead letter of an ordered topic, for a redrive below.
$node->safe_psql('postgres', q{
	SELECT outbox.offer('cap', '{"n": "dead"}', key => 'dl');
	SELECT outbox.dead_letter(id, lease_token, 'poison') FROM outbox.claim('cap', 1);});
my $dead = $node->safe_psql('postgres', q{SELECT id FROM outbox.dead_letters WHERE topic = 'cap'});
like($dead, qr/^\d+$/, 'one event is dead');

# A database dropped with its ordered topic's room used up gives the room
# back when the drop commits: the same delayed offer that was refused in
# it is taken in another database afterwards.
$node->safe_psql('postgres', 'CREATE DATABASE doomed');
$node->safe_psql('doomed', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('full', ordered => true);
	SELECT count(*) FROM outbox.offer_batch('full',
		ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 1500) g),
		keys => ARRAY(SELECT 'one' FROM generate_series(1, 1500) g));
	SELECT count(*) FROM outbox.claim('full', 1, lease => '1 hour');
});
($rc, $out, $err) = $node->psql('doomed', q{SELECT count(*) FROM outbox.claim('full', 10)},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  53400/, 'a claim behind a leased key fills the room in another database');
my $late = q{SELECT outbox.offer('cap', '{}', key => 'late', available_at => now() + interval '1 hour') > 0};
($rc, $out, $err) = $node->psql('postgres', $late, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  53400/, 'so a delayed offer here finds no room');
my $redrive = qq{SELECT outbox.redrive(ARRAY[$dead]::bigint[], 'fixed')};
($rc, $out, $err) = $node->psql('postgres', $redrive, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  53400: too many events of ordered topics/, 'nor does a redrive');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.dead_letters WHERE topic = 'cap'}), '1',
	'which leaves the event dead');
$node->safe_psql('postgres', 'DROP DATABASE doomed');
is($node->safe_psql('postgres', $late), 't', 'the room comes back when that database is dropped');
is($node->safe_psql('postgres', $redrive), '1', 'the redrive goes through');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM outbox.claim('cap', 10) WHERE key = 'dl' AND payload->>'n' = 'dead'}), '1',
	'and the redriven event is claimed');

done_testing();
