# Many more topics and tenants than shared slots: with outbox.max_topics = 8,
# 100 topics and a per-tenant topic with 100 tenants are offered to and
# drained in random order by 4 producers and 4 consumers, across a crash in
# the middle.  No offer fails, every event is acked exactly once, and stats
# agrees.  A claim that finds every slot busy returns nothing with a notice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('manytopics');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.max_topics = 8
outbox.reap_interval = 200
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('t' || i) FROM generate_series(1, 100) i;
	SELECT outbox.create_topic('pt');
	SELECT outbox.isolate_tenants('pt');
	-- what the clients saw: ids offer returned, ids whose ack counted
	CREATE TABLE phase (n int);
	INSERT INTO phase VALUES (1);
	CREATE TABLE offered (id bigint PRIMARY KEY, topic text, tenant text,
						  phase int DEFAULT 0);
	CREATE TABLE acklog (id bigint, phase int, attempt int,
						 at timestamptz DEFAULT clock_timestamp());
	CREATE FUNCTION produce(p int, k int) RETURNS void LANGUAGE sql AS $$
		INSERT INTO offered
		SELECT outbox.offer(topic => tp, payload => '{}', tenant => tn), tp, tn,
			   (SELECT n FROM phase)
		FROM (SELECT CASE WHEN p = 101 THEN 'pt' ELSE 't' || p END AS tp,
					 CASE WHEN p = 101 THEN 'ten' || k END AS tn) x
	$$;
	CREATE FUNCTION consume(p_topic text, p_tenant text) RETURNS int
	LANGUAGE plpgsql AS $$
	DECLARE
		ids bigint[];
		atts int[];
		tok uuid;
		got int;
	BEGIN
		PERFORM set_config('outbox.tenant', coalesce(p_tenant, ''), true);
		SELECT array_agg(id ORDER BY id), array_agg(attempt ORDER BY id),
			   min(lease_token::text)::uuid INTO ids, atts, tok
		FROM outbox.claim(p_topic, 10, '1 minute', '0');
		IF ids IS NULL THEN
			RETURN 0;
		END IF;
		got := outbox.ack(ids, tok);
		IF got <> cardinality(ids) THEN
			RAISE EXCEPTION 'ack counted % of % ids', got, cardinality(ids);
		END IF;
		INSERT INTO acklog (id, phase, attempt)
		SELECT u.id, (SELECT p.n FROM phase p), u.a FROM unnest(ids, atts) AS u(id, a);
		RETURN got;
	END $$;
	CREATE FUNCTION consume_random(p int, k int) RETURNS int LANGUAGE sql AS $$
		SELECT consume(CASE WHEN p = 101 THEN 'pt' ELSE 't' || p END,
					   CASE WHEN p = 101 THEN 'ten' || k END)
	$$;
});

# One transaction offers to 100 topics: all commit.
is($node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(*) FROM (SELECT produce(i, 0) FROM generate_series(1, 100) i) x;
	COMMIT;
	SELECT count(DISTINCT topic) FROM offered;
}), "100\n100", 'one transaction offers to 100 topics with 8 slots');

my $pgbench = $node->installed_command('pgbench') // 'pgbench';
my $dir = PostgreSQL::Test::Utils::tempdir;
open(my $fh, '>', "$dir/produce.sql") or die;
print $fh "\\set p random(1, 101)\n\\set k random(1, 100)\nSELECT produce(:p, :k);\n";
close $fh;
open($fh, '>', "$dir/consume.sql") or die;
print $fh "\\set p random(1, 101)\n\\set k random(1, 100)\nSELECT consume_random(:p, :k);\n";
close $fh;

# 4 producers and 4 consumers for a few seconds; each pgbench must end with
# no failed transaction.
sub run_fleet
{
	my ($label) = @_;
	my @h;
	for my $script ('produce', 'consume')
	{
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(
			[ $pgbench, '-n', '-c', '4', '-j', '2', '-T', '6',
			  '-f', "$dir/$script.sql",
			  '-h', $node->host, '-p', $node->port, 'postgres' ],
			'>', \$out, '2>', \$err);
		push @h, [ $script, $h, \$out, \$err ];
	}
	for my $x (@h)
	{
		my ($script, $h, $out, $err) = @$x;
		$h->finish;
		is($h->result(0), 0, "$label: ${script}rs finish") or diag($$err);
		unlike($$err, qr/ERROR|FATAL/, "$label: no error for the ${script}rs")
		  or diag($$err);
		my ($xacts) = $$out =~ /number of transactions actually processed: (\d+)/;
		cmp_ok($xacts // 0, '>', 50, "$label: the ${script}rs got through");
	}
}

# every tenant has a part from the start, whatever the producers pick
$node->safe_psql('postgres', q{SELECT count(*) FROM (SELECT produce(101, k) FROM generate_series(1, 100) k) x});

run_fleet('before the crash');
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', 'UPDATE phase SET n = 2');
run_fleet('after the crash');

# Drain every topic and tenant part; leases of the clients are all acked.
# A round's statement claims from at most 8 topics (each keeps its slot
# until the statement commits), so the backlog the fleet left decides how
# many rounds it takes: go on while rounds make progress.
for my $round (1 .. 2000)
{
	my $left = $node->safe_psql('postgres', q{
		SELECT sum(consume('t' || i, NULL)) FROM generate_series(1, 100) i;
		SELECT sum(consume('pt', 'ten' || k)) FROM generate_series(1, 100) k;
		SELECT sum(available + leased + delayed + dead) FROM outbox.stats;
	});
	my @l = split /\n/, $left;
	last if $l[-1] eq '0';
	last if $l[0] + $l[1] == 0;
}

is($node->safe_psql('postgres', q{
	SELECT sum(available + leased + delayed + dead) FROM outbox.stats
}), '0', 'stats: nothing left in any topic');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM offered o WHERE NOT EXISTS (SELECT 1 FROM acklog a WHERE a.id = o.id)
}), '0', 'every offered event was acked');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT id FROM acklog GROUP BY id HAVING count(*) > 1) d
}), '0', 'no event was acked twice') or diag($node->safe_psql('postgres', q{
	SELECT o.id, o.topic, o.tenant, o.phase, array_agg(a.phase ORDER BY a.at),
		   array_agg(a.attempt ORDER BY a.at), array_agg(a.at ORDER BY a.at)
	FROM acklog a JOIN offered o USING (id)
	GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 ORDER BY 1
}));
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM acklog a WHERE NOT EXISTS (SELECT 1 FROM offered o WHERE o.id = a.id)
}), '0', 'nothing acked that an offer did not return');
is($node->safe_psql('postgres', q{
	SELECT count(DISTINCT tenant) FROM offered WHERE topic = 'pt'
}), '100', 'all 100 tenants have events');

# Since the crash, stats counts what the clients did, topic by topic.
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM outbox.stats s
	WHERE s.offered IS DISTINCT FROM
		  (SELECT count(*) FROM offered o WHERE o.topic = s.topic AND o.phase = 2)
	   OR s.acked IS DISTINCT FROM
		  (SELECT count(*) FROM acklog a JOIN offered o USING (id)
		   WHERE o.topic = s.topic AND a.phase = 2)
}), '0', 'stats: offered and acked since the restart, for every topic');

# Every event is settled: the worker moves the watermarks of topics that
# gave their slot up too.
$node->poll_query_until('postgres', q{
	SELECT count(*) >= 90 FROM outbox.topic_state WHERE watermark > 0
}) or diag('watermarks: ' . $node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.topic_state WHERE watermark > 0}));
cmp_ok($node->safe_psql('postgres', q{
	SELECT count(*) FROM outbox.topic_state WHERE watermark > 0
}), '>=', 90, 'watermarks of topics without a slot move on');

# Eight sessions hold a lease each on eight topics: every slot is busy.  A
# claim of a ninth topic returns nothing with a notice, and gets a slot as
# soon as one lease is acked.
$node->safe_psql('postgres', q{
	SELECT produce(i, 0) FROM generate_series(1, 9) i;
	CREATE TABLE held (topic text, id bigint, lease_token uuid);
	INSERT INTO held SELECT 't' || i, c.id, c.lease_token
	FROM generate_series(1, 8) i, LATERAL outbox.claim('t' || i, 1, '1 hour') c;
});
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT count(*) FROM outbox.claim('t9', 1, '1 hour', '0.3 seconds')});
is($out, '0', 'a claim with every slot busy returns nothing');
like($err, qr/NOTICE:  no shared slot is free for topic "t9"/, 'and says why');
is($node->safe_psql('postgres', q{
	SELECT outbox.ack(ARRAY[id], lease_token) FROM held WHERE topic = 't1';
	SELECT count(*) FROM outbox.claim('t9', 1, '1 hour', '0');
}), "1\n1", 'a slot freed by an ack serves the next claim');

done_testing();
