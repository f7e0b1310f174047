# Promises of the README that no other test checked (issue 17):
# - claim order: events handed back (rolled-back claim, expired lease) and
#   retries that are due come before new events, also after a restart;
# - a lease cut short by a crash (immediate stop, a backend killed) does
#   not count as an attempt;
# - a NULL and an empty tenant are one for dedupe;
# - replay of a whole per-tenant topic reaches every tenant part, more
#   parts than topic slots;
# - maintain() never retires a partition past retention that holds an event
#   waiting in outbox.retry (a delayed offer, a backed-off retry) even when
#   the watermark has passed it, and trims dedupe keys past their topic's
#   retention (the server's clock moved by libfaketime, the same on any
#   real date);
# - the worker logs a failing unit, its recovery and running out of worker
#   slots once, not at every interval.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('promises');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
outbox.max_topics = 8
restart_after_crash = on
});
$node->start;

sub sql
{
	return $node->safe_psql('postgres', $_[0]);
}

sql(q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
});

# ---- claim order: handed back and due retries before new events
sql(q{
	SELECT outbox.create_topic('ord');
	SELECT count(outbox.offer('ord', jsonb_build_object('n', g))) FROM generate_series(1, 8) g;
});

sub claim_one
{
	my ($topic, $lease) = @_;
	$lease //= '30 seconds';
	return sql(qq{
		SELECT payload->>'n', attempt FROM outbox.claim('$topic', 1, lease => '$lease')});
}

# n1: a nack with retry_after 0 makes it due at once
is(sql(q{SELECT outbox.nack(id, lease_token, 'try again', retry_after => '0') FROM outbox.claim('ord', 1)}),
	'retry', 'n1 leased and nacked');
is(claim_one('ord'), '1|2', 'a retry that is due comes before the new events');

# n2: a lease that expires and is reaped
is(sql(q{SELECT string_agg(payload->>'n', ',') FROM outbox.claim('ord', 1, lease => '100 ms')}),
	'2', 'n2 leased for 100 ms');
sleep 0.3;
is(sql('SELECT outbox.reap()'), '1', 'reap hands the expired lease back');
is(claim_one('ord'), '2|2', 'an expired lease handed back comes before the new events');

# n3, n4: a claim rolled back
is(sql(q{
	BEGIN;
	SELECT count(*) FROM outbox.claim('ord', 2);
	ROLLBACK;}), '2', 'a claim of n3 and n4, rolled back');
is(sql(q{SELECT string_agg(payload->>'n' || ':' || attempt, ',' ORDER BY id) FROM outbox.claim('ord', 2)}),
	'3:1,4:1', 'the events of a rolled-back claim come before the new events');

# a retry not yet due lets newer events pass; once due it goes first
is(sql(q{
	SELECT payload->>'n' || ':' || outbox.nack(id, lease_token, 'later', retry_after => '2 seconds')
	FROM outbox.claim('ord', 1)}), '5:retry', 'n5 nacked with a retry in 2 seconds');
is(claim_one('ord'), '6|1', 'while its retry is not due, the next new event is claimed');
sleep 2.2;
is(claim_one('ord'), '5|2', 'once due, the retry comes before the remaining new events');

# a batch: the due retry and the oldest new event
sql(q{SELECT outbox.nack(id, lease_token, 'again', retry_after => '0') FROM outbox.claim('ord', 1)});
is(sql(q{SELECT string_agg(payload->>'n' || ':' || attempt, ',' ORDER BY attempt DESC, id) FROM outbox.claim('ord', 2)}),
	'7:2,8:1', 'a batch takes the due retry first and fills up with the oldest new event');

# ---- crashes: a lease cut short does not count as an attempt
sql(q{
	SELECT outbox.create_topic('crash', max_attempts => 2);
	SELECT outbox.offer('crash', '{"c": 1}');
	SELECT outbox.create_topic('ordr');
	SELECT count(outbox.offer('ordr', jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
	SELECT outbox.nack(id, lease_token, 'try again', retry_after => '0') FROM outbox.claim('ordr', 1);
});
is(sql(q{SELECT attempt FROM outbox.claim('crash', lease => '1 hour')}), '1', 'the event is leased');

$node->stop('immediate');
$node->start;
is(claim_one('ordr'), '1|2', 'after a restart a due retry still comes before the new events');
is(sql(q{SELECT attempt FROM outbox.claim('crash', lease => '1 hour')}), '1',
	'after an immediate stop the event comes back with attempt 1: the lost lease did not count');

# The consumer's backend is killed while it holds the event: the server
# reinitialises.
$node->stop('immediate');
$node->start;
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres') . ' application_name=victim',
	  '-c', q{SELECT attempt FROM outbox.claim('crash', lease => '1 second')},
	  '-c', 'SELECT pg_sleep(600)' ],
	'>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'victim' AND query LIKE '%pg_sleep%'}),
	'a consumer holds the event and sleeps');
my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'victim'});
kill 'KILL', $pid;
eval { IPC::Run::finish($h) };
is($out, "1\n", 'its lease was attempt 1');
sleep 1;
ok($node->poll_query_until('postgres', 'SELECT true'), 'the server reinitialised after the kill');
like(slurp_file($node->logfile), qr/was terminated by signal 9/, 'the backend was killed');
sleep 1;
is(sql('SELECT outbox.reap()'), '0', 'its lease, past its expiry now, is not handed back as a failure');
is(sql(q{SELECT count(*) FROM outbox.retry r JOIN outbox.topic t USING (topic_id) WHERE t.name = 'crash'}),
	'0', 'no failed attempt is recorded');
is(sql(q{SELECT attempt || ':' || outbox.nack(id, lease_token, 'first failure', retry_after => '0')
	   FROM outbox.claim('crash')}),
	'1:retry', 'the next lease is attempt 1 again, and a nack leaves one of the two attempts');
is(sql(q{SELECT attempt || ':' || outbox.nack(id, lease_token, 'second failure', retry_after => '0')
	   FROM outbox.claim('crash')}),
	'2:dead', 'the second failure uses the attempts up');
is(sql(q{SELECT attempts || ' ' || jsonb_path_query_array(error_history, '$[*].error')::text
	   FROM outbox.dead_letters WHERE topic = 'crash'}),
	'2 ["first failure", "second failure"]', 'the dead letter counts the two failures only');

# ---- dedupe: a NULL and an empty tenant are one
sql(q{SELECT outbox.create_topic('dn')});
my $first = sql(q{SELECT outbox.offer('dn', '{"v": 1}', dedupe_key => 'k1')});
is(sql(q{SELECT outbox.offer('dn', '{"v": 2}', dedupe_key => 'k1', tenant => '')}), $first,
	'an offer with an empty tenant finds the key of an offer without tenant');
$first = sql(q{SELECT outbox.offer('dn', '{"v": 3}', dedupe_key => 'k2', tenant => '')});
is(sql(q{SELECT outbox.offer('dn', '{"v": 4}', dedupe_key => 'k2')}), $first,
	'and one without tenant the key of an offer with an empty tenant');
isnt(sql(q{SELECT outbox.offer('dn', '{"v": 6}', dedupe_key => 'k2', tenant => 'x')}), $first,
	'a named tenant has keys of its own');
is(sql(q{SELECT string_agg(payload->>'v', ',' ORDER BY id) FROM outbox.event e
	   JOIN outbox.topic t USING (topic_id) WHERE t.name = 'dn'}),
	'1,3,6', 'only the first offer of each key and tenant was stored');

# ---- replay of a whole per-tenant topic: 20 tenants and the events
# without tenant, more parts than the 8 topic slots
sql(q{
	SELECT outbox.create_topic('pt');
	SELECT outbox.isolate_tenants('pt');
	SELECT count(outbox.offer('pt', jsonb_build_object('t', t, 'n', n), tenant => nullif('t' || t, 't0')))
	FROM generate_series(0, 20) t, generate_series(1, 3) n;
	CREATE TABLE delivered (id bigint PRIMARY KEY);
	CREATE TABLE got (part text, id bigint, tenant text, origin_id bigint);
	-- each part in a transaction of its own: two of its three events
	-- acknowledged, the watermarks of half of the parts moved past them
	CREATE PROCEDURE deliver_two() LANGUAGE plpgsql AS $$
	BEGIN
		FOR t IN 0 .. 20 LOOP
			PERFORM set_config('outbox.tenant', CASE WHEN t = 0 THEN '' ELSE 't' || t END, false);
			INSERT INTO delivered SELECT c.id FROM outbox.claim('pt', 2) c WHERE outbox.ack(c.id, c.lease_token);
			COMMIT;
			IF t = 10 THEN
				PERFORM outbox.reap();
				COMMIT;
			END IF;
		END LOOP;
		PERFORM set_config('outbox.tenant', '', false);
	END $$;
	CREATE PROCEDURE claim_all() LANGUAGE plpgsql AS $$
	BEGIN
		FOR t IN 0 .. 20 LOOP
			PERFORM set_config('outbox.tenant', CASE WHEN t = 0 THEN '' ELSE 't' || t END, false);
			INSERT INTO got SELECT 'p' || t, c.id, c.tenant, e.origin_id
			FROM outbox.claim('pt', 100) c JOIN outbox.event e USING (id)
			WHERE outbox.ack(c.id, c.lease_token);
			COMMIT;
		END LOOP;
		PERFORM set_config('outbox.tenant', '', false);
	END $$;
	CALL deliver_two();
});
is(sql('SELECT count(*) FROM delivered'), '42', 'two events of each of the 21 parts delivered');
is(sql(q{SELECT count(*) FILTER (WHERE s.watermark > 0) BETWEEN 1 AND 20
	   FROM outbox.topic_state s JOIN outbox.topic t USING (topic_id) WHERE t.name = 'pt'}),
	't', 'some parts have their watermark past their delivered events, some their acks only');
is(sql(q{
	BEGIN;
	SELECT outbox.replay('pt', '-infinity');
	ROLLBACK;}), '42', 'a replay rolled back');
is(sql('SELECT count(*) FROM outbox.event WHERE origin_id IS NOT NULL'), '0', 'leaves nothing');
is(sql(q{SELECT outbox.replay('pt', '-infinity')}), '42',
	'replay of the whole topic offers every delivered event of every part again');
is(sql(q{
	SELECT count(*) FILTER (WHERE d.id IS NULL OR e.origin_id IS NULL),
		   count(*) FILTER (WHERE e.topic_id <> o.topic_id OR e.tenant IS DISTINCT FROM o.tenant
							OR e.payload <> o.payload)
	FROM delivered d FULL JOIN (SELECT * FROM outbox.event WHERE origin_id IS NOT NULL) e
		ON e.origin_id = d.id
	LEFT JOIN outbox.event o ON o.id = e.origin_id}),
	'0|0', 'one new event per delivered one, each in the part and with the tenant of its original');
sql(q{CALL claim_all()});
is(sql(q{
	SELECT count(*), count(DISTINCT id), count(origin_id),
		   count(*) FILTER (WHERE tenant IS DISTINCT FROM nullif('t' || substr(part, 2), 't0')),
		   count(DISTINCT part)
	FROM got}),
	'63|63|42|0|21', 'each part delivers its pending event and its two replayed ones, once, to its own tenant');
is(sql(q{SELECT count(*) FROM outbox.event e WHERE e.origin_id IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM got g WHERE g.id = e.id)}),
	'0', 'every replayed event was claimed');

$node->stop;

# ---- retention under a moved clock: what waits in outbox.retry stays,
# dedupe keys past their topic's retention go
my ($faketime) = grep { -e $_ } ('/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
	glob('/usr/lib/*/faketime/libfaketime.so.1'));
ok(defined $faketime, 'libfaketime is installed') or BAIL_OUT('libfaketime is missing (Debian package faketime)');

my $cal = PostgreSQL::Test::Cluster->new('retention');
$cal->init;
$cal->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
timezone = 'UTC'
});
my $cal_up = 0;

sub at
{
	my ($when) = @_;
	$cal->stop if $cal_up;
	local $ENV{LD_PRELOAD} = $faketime;
	local $ENV{FAKETIME} = "\@$when";
	local $ENV{FAKETIME_DONT_RESET} = 1;
	$cal->start;
	$cal_up = 1;
	is($cal->safe_psql('postgres', q{SELECT to_char(now(), 'YYYY-MM-DD HH24:MI')}),
		substr($when, 0, 16), "the server's clock reads " . substr($when, 0, 16));
}

sub cq
{
	return $cal->safe_psql('postgres', $_[0]);
}

sub part_of
{
	return cq("SELECT tableoid::regclass FROM outbox.event WHERE id = $_[0]");
}

sub exists_rel
{
	return cq("SELECT to_regclass('$_[0]') IS NOT NULL");
}

sub dedupe_keys
{
	return cq(q{SELECT coalesce(string_agg(dedupe_key, ',' ORDER BY dedupe_key), '') FROM outbox.dedupe});
}

# Day a: delivered events only; dedupe keys in a topic kept for a day and
# in one kept for three.  Each day ends with a reap, as the worker's would,
# before the server stops.
at('2031-03-03 12:00:00');
cq(q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('keep', retention => '1 day', backoff_base => '12 hours', backoff_max => '1 day');
	SELECT outbox.create_topic('long', retention => '3 days');
});
my $a_id = cq(q{SELECT outbox.offer('keep', '{"day": "a"}', dedupe_key => 'ka')});
cq(q{
	SELECT outbox.offer('long', '{"day": "a"}', dedupe_key => 'kl');
	SELECT count(outbox.ack(id, lease_token)) FROM outbox.claim('keep', 10);
	SELECT count(outbox.ack(id, lease_token)) FROM outbox.claim('long', 10);
	SELECT outbox.reap();
});
my $part_a = part_of($a_id);

# Day b: a delayed offer (for a day, the most the retention allows), and
# a delivered event.
at('2031-03-04 12:00:00');
my $d_id = cq(q{SELECT outbox.offer('keep', '{"delayed": "b"}', available_at => now() + interval '1 day')});
cq(q{SELECT outbox.offer('keep', '{"day": "b"}')});
is(cq(q{SELECT string_agg(payload->>'day', ',') || ':' || outbox.ack(array_agg(id), min(lease_token::text)::uuid)
	   FROM outbox.claim('keep', 10)}), 'b:1', 'day b: only the event not delayed is claimed');
cq('SELECT outbox.reap()');
my $part_b = part_of($d_id);

# Day c, early: a failure backed off by the topic's settings (half a day),
# a delivered event; the watermark moves past both waiting events.
at('2031-03-05 06:00:00');
my $r_id = cq(q{SELECT outbox.offer('keep', '{"retried": "c"}')});
is(cq(q{SELECT payload->>'retried' || ':' || outbox.nack(id, lease_token, 'broker down') FROM outbox.claim('keep', 1)}),
	'c:retry', 'day c: an event fails and is backed off');
cq(q{
	SELECT outbox.offer('keep', '{"day": "c"}', dedupe_key => 'kc');
	SELECT count(outbox.ack(id, lease_token)) FROM outbox.claim('keep', 10);
	SELECT outbox.reap();
});
my $part_c = part_of($r_id);
isnt($part_b, $part_a, 'the delayed offer is in a partition of its own');
isnt($part_c, $part_b, 'and so is the backed-off event');
is(cq(qq{SELECT count(*) FROM outbox.retry WHERE event_id IN ($d_id, $r_id) AND available_at > now()}),
	'2', 'both wait in outbox.retry');
my $wm = cq(q{SELECT s.watermark FROM outbox.topic_state s JOIN outbox.topic t USING (topic_id) WHERE t.name = 'keep'});
cmp_ok($wm, '>=', $r_id, "the watermark ($wm) has passed both: nothing but outbox.retry holds them back");
cq('SELECT outbox.maintain()');
is(dedupe_keys(), 'kc,kl', 'day c: maintain() trims the key past its topic\'s day, keeps the one of the 3-day topic');

# Day e: the partitions of days a, b and c are past the longest retention.
at('2031-03-09 12:00:00');
cq('SELECT outbox.maintain()');
is(exists_rel($part_a), 'f', "day e: the partition of delivered events ($part_a) is retired");
is(exists_rel($part_b), 't', "the partition of the delayed offer ($part_b) stays");
is(exists_rel($part_c), 't', "the partition of the backed-off event ($part_c) stays");
is(dedupe_keys(), '', 'and every dedupe key past its topic\'s retention is gone');
is(cq(q{
	SELECT string_agg(coalesce(payload->>'delayed', payload->>'retried') || ':' || attempt || ':' ||
		CASE WHEN payload ? 'delayed' THEN outbox.ack(id, lease_token)::text
			 ELSE outbox.nack(id, lease_token, 'broker still down', retry_after => '1 day') END,
		',' ORDER BY id)
	FROM outbox.claim('keep', 10)}),
	'b:1:true,c:2:retry', 'both are delivered; the retried one fails again, for another day');
cq(q{SELECT outbox.reap(); SELECT outbox.maintain()});
is(exists_rel($part_b), 'f', 'once the delayed event is acknowledged its partition is retired');
is(exists_rel($part_c), 't', 'the partition of the event waiting for its retry stays');

# Day f: the retry is due.
at('2031-03-10 18:00:00');
cq('SELECT outbox.maintain()');
is(exists_rel($part_c), 't', 'day f: still there while its due retry is not claimed');
is(cq(q{SELECT payload->>'retried' || ':' || attempt || ':' || outbox.ack(id, lease_token) FROM outbox.claim('keep', 10)}),
	'c:3:true', 'the retried event is delivered');
cq(q{SELECT outbox.reap(); SELECT outbox.maintain()});
is(exists_rel($part_c), 'f', 'and its partition is retired');
is(cq(q{SELECT available + leased + delayed + dead FROM outbox.stats WHERE topic = 'keep'}), '0',
	'nothing is left in the topic');
$cal->stop;
$cal_up = 0;

# ---- the worker's reports: each logged once
my $w = PostgreSQL::Test::Cluster->new('reports');
$w->init;
$w->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.reap_interval = 200
outbox.maintenance_interval = 1
outbox.launcher_naptime = 1
max_worker_processes = 2
max_logical_replication_workers = 0
max_parallel_workers_per_gather = 0
});
$w->start;
$w->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('r');
});
ok($w->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'postgres'"),
	'the worker runs in the only free worker slot');

sub count_in_log
{
	my ($re, $offset) = @_;
	my $log = slurp_file($w->logfile, $offset);
	my $n = () = $log =~ /$re/g;
	return $n;
}

# A failing reap (as in 013_worker_report): a constraint forbids the
# watermark to move.
my $offset = -s $w->logfile;
$w->safe_psql('postgres', q{
	ALTER TABLE outbox.topic_state ADD CONSTRAINT no_move CHECK (watermark = 0) NOT VALID;
	SELECT outbox.offer('r', '{}');
	SELECT outbox.ack(array_agg(id), min(lease_token::text)::uuid) FROM outbox.claim('r', 10);
});
ok($w->wait_for_log(qr/outbox worker: reap failed/, $offset), 'the reap fails');
sleep 2.5;
is(count_in_log(qr/outbox worker: reap failed/, $offset), 1,
	'failing at every reap for 2.5 s (200 ms interval), it is logged once');
$w->safe_psql('postgres', q{ALTER TABLE outbox.topic_state DROP CONSTRAINT no_move});
ok($w->wait_for_log(qr/outbox worker: reap works again/, $offset), 'it works again');
sleep 1.5;
is(count_in_log(qr/outbox worker: reap works again/, $offset), 1, 'which is logged once');

# A failing maintenance: a trigger refuses to trim a dedupe key.
$offset = -s $w->logfile;
$w->safe_psql('postgres', q{
	SELECT outbox.create_topic('m', retention => '1 second');
	CREATE FUNCTION public.keep_keys() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'dedupe keys are kept'; END $$;
	CREATE TRIGGER keep_keys BEFORE DELETE ON outbox.dedupe FOR EACH ROW EXECUTE FUNCTION public.keep_keys();
	SELECT outbox.offer('m', '{}', dedupe_key => 'k');
});
ok($w->wait_for_log(qr/outbox worker: maintenance failed \(SQLSTATE P0001\): dedupe keys are kept/, $offset),
	'maintenance fails');
sleep 3.5;
is(count_in_log(qr/outbox worker: maintenance failed/, $offset), 1,
	'failing at every maintenance for 3.5 s (1 s interval), it is logged once');
$w->safe_psql('postgres', q{DROP TRIGGER keep_keys ON outbox.dedupe});
ok($w->wait_for_log(qr/outbox worker: maintenance works again/, $offset), 'it works again');
sleep 2.5;
is(count_in_log(qr/outbox worker: maintenance works again/, $offset), 1, 'which is logged once');
is($w->safe_psql('postgres', 'SELECT count(*) FROM outbox.dedupe'), '0', 'and the key is trimmed');

# Out of worker slots: the only slot serves the first database, and the
# launcher cannot start the worker that looks at a new one (a database
# without the extension is looked at every naptime).
$offset = -s $w->logfile;
$w->safe_psql('postgres', 'CREATE DATABASE second');
ok($w->wait_for_log(qr/out of background worker slots/, $offset), 'the launcher runs out of worker slots');
sleep 3.5;
is(count_in_log(qr/out of background worker slots/, $offset), 1,
	'trying again at every pass for 3.5 s (1 s naptime), it is logged once');
like(slurp_file($w->logfile, $offset), qr/out of background worker slots\n.*HINT:  Raise max_worker_processes/,
	'with a hint');
$w->safe_psql('second', q{SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE});
sleep 1;
is($w->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox worker'"),
	'1', 'the second database, given the extension, has no worker meanwhile');
$w->safe_psql('postgres', 'DROP EXTENSION outbox');
ok($w->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'second'"),
	'once the first database frees the slot, the second gets its worker');
$w->stop;

done_testing();
