# The background workers: they start with the server, serve every database
# that has the extension (also one that gets it later), reap expired leases
# and retire partitions without manual calls, follow SIGHUP, come back after
# pg_terminate_backend, and leave quietly when the extension or the
# database is dropped.  Also: claim(wait => ...) is woken by a commit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
max_worker_processes = 16
outbox.reap_interval = '200ms'
outbox.launcher_naptime = '2s'
log_min_messages = log
});
$node->start;

sub workers
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = '$db'");
}

sub worker_pid
{
	my ($type, $db) = @_;
	my $cond = defined $db ? "AND datname = '$db'" : '';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = '$type' $cond");
}

# ---- the launcher runs; nothing runs where the extension is not
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox launcher'"),
	'the launcher runs');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
sleep 3;
is(workers('plain'), '0', 'no worker in a database without the extension');

# ---- a worker starts when the extension is created, and reaps by itself
$node->safe_psql('postgres', 'CREATE EXTENSION outbox CASCADE');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'postgres'"),
	'a worker starts when the extension is created');
my $activity = $node->safe_psql('postgres',
	"SELECT backend_type || ': ' || coalesce(query, '') FROM pg_stat_activity WHERE backend_type = 'outbox worker'");
like($activity, qr/^outbox worker: outbox: /, 'the worker reports what it does');

$node->safe_psql('postgres', q{
	SELECT outbox.create_topic('w');
	SELECT outbox.offer('w', '{"n": 1}');
	SELECT count(*) FROM outbox.claim('w', lease => '300 ms');
});
my $t0 = time;
ok($node->poll_query_until('postgres',
	"SELECT leased = 0 AND available = 1 FROM outbox.stats WHERE topic = 'w'"),
	'an expired lease is handed back with no manual call');
my $handback = time - $t0;
note(sprintf('lease of 300 ms handed back %.2f s after the claim', $handback));
cmp_ok($handback, '<', 3, 'within a few reap intervals');
is($node->safe_psql('postgres', "SELECT errors->0->>'error' FROM outbox.retry"),
	'lease expired', 'the worker recorded the failed attempt');

# ---- a database created and given the extension after start is served
$node->safe_psql('postgres', 'CREATE DATABASE later');
$node->safe_psql('later', q{
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('l');
	SELECT outbox.offer('l', '{}');
	SELECT count(*) FROM outbox.claim('l', lease => '100 ms');
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'later'"),
	'a database that gets the extension later gets a worker');
ok($node->poll_query_until('later',
	"SELECT leased = 0 AND available = 1 FROM outbox.stats WHERE topic = 'l'"),
	'and its expired leases are reaped');

# ---- SIGHUP changes the interval
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.reap_interval = '1h';
	SELECT pg_reload_conf();
});
sleep 1;
$node->safe_psql('postgres', q{
	SELECT count(*) FROM outbox.claim('w', lease => '100 ms');
});
sleep 1.5;
is($node->safe_psql('postgres', "SELECT leased FROM outbox.stats WHERE topic = 'w'"),
	'1', 'with reap_interval = 1h the expired lease stays');
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.reap_interval = '100ms';
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres',
	"SELECT leased = 0 FROM outbox.stats WHERE topic = 'w'"),
	'after a reload with 100ms it is reaped');

# ---- pg_terminate_backend: the worker and the launcher come back
my $old_worker = worker_pid('outbox worker', 'postgres');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_worker)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' "
	  . "AND datname = 'postgres' AND pid <> $old_worker"),
	'a terminated worker comes back');
my $old_launcher = worker_pid('outbox launcher');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_launcher)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox launcher' AND pid <> $old_launcher"),
	'a terminated launcher comes back');
sleep 3;
is(workers('postgres'), '1', 'and does not start a second worker for a database');

# ---- claim(wait): woken by a commit, not by a rollback
sub timed_claim
{
	my ($wait, $between) = @_;
	my ($out, $err) = ('', '');
	my $start = time;
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		  "SELECT count(*) FROM outbox.claim('wake', wait => '$wait')" ],
		'>', \$out, '2>', \$err);
	sleep 0.5;
	$node->safe_psql('postgres', $between);
	IPC::Run::finish($h);
	chomp $out;
	return ($out, time - $start);
}
$node->safe_psql('postgres', "SELECT outbox.create_topic('wake')");
my ($n, $took) = timed_claim('20 seconds', "SELECT outbox.offer('wake', '{}')");
is($n, '1', 'a waiting claim gets the event offered meanwhile');
cmp_ok($took, '<', 5, 'woken by the commit, not by the end of the wait');
($n, $took) = timed_claim('2 seconds',
	"BEGIN; SELECT outbox.offer('wake', '{}'); ROLLBACK;");
is($n, '0', 'a rolled-back offer gives nothing');
cmp_ok($took, '>=', 1.9, 'and the claim waited its whole wait');

# ---- retention: an old partition of delivered events goes, one with an
# undelivered event stays; the worker does it
$node->safe_psql('postgres', q{
	SELECT outbox.create_topic('old');
	CREATE TABLE outbox.event_p2020_01_01 PARTITION OF outbox.event
		FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
	CREATE INDEX ON outbox.event_p2020_01_01 (topic_id, id);
	CREATE TABLE outbox.event_p2020_01_02 PARTITION OF outbox.event
		FOR VALUES FROM ('2020-01-02 00:00+00') TO ('2020-01-03 00:00+00');
	CREATE INDEX ON outbox.event_p2020_01_02 (topic_id, id);
	INSERT INTO outbox.event (id, topic_id, created_at, payload)
	SELECT nextval('outbox.event_id_seq'), topic_id, '2020-01-01 12:00+00', '{"old": 1}'
	FROM outbox.topic WHERE name = 'old';
	INSERT INTO outbox.event (id, topic_id, created_at, payload)
	SELECT nextval('outbox.event_id_seq'), topic_id, '2020-01-02 12:00+00', '{"old": 2}'
	FROM outbox.topic WHERE name = 'old';
	SELECT outbox.ack(id, lease_token) FROM outbox.claim('old');
	ALTER SYSTEM SET outbox.maintenance_interval = '1s';
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres',
	"SELECT to_regclass('outbox.event_p2020_01_01') IS NULL"),
	'the worker retires a partition of delivered events');
sleep 2;
is($node->safe_psql('postgres', "SELECT to_regclass('outbox.event_p2020_01_02') IS NOT NULL"),
	't', 'and keeps the partition that holds an undelivered event');
is($node->safe_psql('postgres', "SELECT payload->>'old' FROM outbox.claim('old')"),
	'2', 'which is still delivered');

# ---- DROP EXTENSION with a worker running: it leaves, nothing in the log
my $log_offset = -s $node->logfile;
$node->safe_psql('later', 'DROP EXTENSION outbox');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'later'"),
	'the worker leaves a database whose extension was dropped');
sleep 1;
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/ERROR|FATAL|PANIC/, 'and nothing went wrong on the way');

# ---- DROP DATABASE does not wait for the worker
$node->safe_psql('postgres', 'CREATE DATABASE doomed');
$node->safe_psql('doomed', 'CREATE EXTENSION outbox CASCADE');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'doomed'"),
	'a worker serves the database about to be dropped');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE doomed');
is($ret, 0, 'DROP DATABASE succeeds while its worker ran') or diag($stderr);

# ---- leases of a consumer that disconnects: handed back at once only if
# the session opted in (reap_interval is 1 hour here: only the wake-up at
# disconnect can explain a prompt hand-back)
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.reap_interval = '1h';
	SELECT pg_reload_conf();
	SELECT outbox.create_topic('gone');
	SELECT count(*) FROM outbox.offer_batch('gone', ARRAY['{}', '{}']::jsonb[]);
});
sleep 1;
is($node->safe_psql('postgres', q{
	SET outbox.release_on_disconnect = on;
	SELECT count(*) FROM outbox.claim('gone', 1, lease => '1 hour');
}), '1', 'a session that opted in leases one event, then disconnects');
ok($node->poll_query_until('postgres',
	"SELECT available = 2 AND leased = 0 FROM outbox.stats WHERE topic = 'gone'"),
	'a session that opted in: its leases come back when it disconnects');
is($node->safe_psql('postgres', "SELECT count(*) FROM outbox.claim('gone', 2, lease => '1 hour')"),
	'2', 'a session that did not opt in leases both');
sleep 2;
is($node->safe_psql('postgres', "SELECT leased FROM outbox.stats WHERE topic = 'gone'"),
	'2', 'a session that did not opt in keeps its leases until they expire');

# ---- CREATE EXTENSION starts the worker at once, not at the launcher's
# next look: with a naptime of an hour
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.launcher_naptime = '1h';
	SELECT pg_reload_conf();
});
sleep 3;
$node->safe_psql('postgres', 'CREATE DATABASE prompt');
$t0 = time;
$node->safe_psql('prompt', 'SET client_min_messages = warning; CREATE EXTENSION outbox CASCADE');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'prompt'"),
	'a worker starts in a new database with the extension');
my $prompt = time - $t0;
cmp_ok($prompt, '<', 5, sprintf('at once (%.2f s), the launcher sleeping for an hour', $prompt));

# ---- the launcher still knows that a database has the extension after a
# DROP EXTENSION rolled back to a savepoint, and after a DROP and a CREATE
# EXTENSION committed together: a worker that stops is started again (after
# the restart back-off, not the launcher's hour of naptime)
sub worker_comes_back
{
	my ($db) = @_;
	my $old = worker_pid('outbox worker', $db);
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($old)") if $old ne '';
	my $until = time + 30;
	while (time < $until)
	{
		my $pid = worker_pid('outbox worker', $db);
		return 1 if $pid ne '' && $pid ne $old;
		sleep 0.5;
	}
	return 0;
}
$node->safe_psql('prompt', q{
	BEGIN;
	SAVEPOINT before_drop;
	DROP EXTENSION outbox;
	ROLLBACK TO SAVEPOINT before_drop;
	COMMIT;
});
ok(worker_comes_back('prompt'), 'a DROP EXTENSION rolled back to a savepoint: the worker comes back');
$node->safe_psql('prompt', q{
	SET client_min_messages = warning;
	BEGIN;
	DROP EXTENSION outbox;
	CREATE EXTENSION outbox;
	COMMIT;
});
ok(worker_comes_back('prompt'), 'a DROP and a CREATE EXTENSION in one transaction: the worker comes back');

# ---- outbox.enabled = off stops the workers
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.enabled = off;
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'outbox worker'"),
	'outbox.enabled = off stops the workers');

$node->stop;
my $full = slurp_file($node->logfile);
unlike($full, qr/terminated by signal|PANIC|TRAP:/, 'no crash in the whole run');
done_testing();
