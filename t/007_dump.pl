# pg_dump and restore lose nothing, in the custom and the plain format.
# A database with 1,000 events in every state (acked, available, leased,
# delayed, retrying with attempts, dead with history, redriven), dedupe
# keys, a per-tenant topic with its parts and a tenant binding is dumped
# and restored into a new database: pg_restore and psql exit 0 with no
# error, every table that holds user state compares equal row by row, the
# restored database delivers exactly the events that were not yet
# delivered (leases do not survive, so leased events come back), nothing
# acked comes back, and a new offer gets an id above every restored one
# and is delivered too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	CREATE ROLE tenant_a_app;
	GRANT outbox_consumer TO tenant_a_app;
	SELECT outbox.create_topic('d', max_attempts => 2);
	SELECT outbox.create_topic('pt');
	SELECT outbox.isolate_tenants('pt');
	SELECT outbox.grant_tenant('tenant_a_app', 'a');
	SELECT count(*) FROM outbox.offer_batch('d',
		ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 995) g));
	SELECT outbox.offer('d', '{"dedupe": 1}', dedupe_key => 'k1');
	SELECT outbox.offer('d', '{"dedupe": 2}', dedupe_key => 'k2', tenant => 't9');
	SELECT outbox.offer('d', '{"later": true}', available_at => now() + interval '1 hour');
	SELECT outbox.offer('pt', '{"tenant": "a"}', tenant => 'a');
	SELECT outbox.offer('pt', '{"tenant": "b"}', tenant => 'b');
});
# 400 acked; one retrying for an hour; two dead (one of them redriven);
# 50 leased at dump time.
$node->safe_psql('src', q{
	SELECT sum(outbox.ack(ids, tok)) FROM (
		SELECT array_agg(id) AS ids, min(lease_token::text)::uuid AS tok
		FROM outbox.claim('d', 400)) c;
});
$node->safe_psql('src', q{SELECT outbox.nack(id, lease_token, 'busy', retry_after => '1 hour') FROM outbox.claim('d')});
$node->safe_psql('src', q{SELECT outbox.nack(id, lease_token, 'bad input', retry_after => '0') FROM outbox.claim('d')});
$node->safe_psql('src', q{SELECT outbox.nack(id, lease_token, 'bad input again') FROM outbox.claim('d')});
$node->safe_psql('src', q{SELECT outbox.dead_letter(id, lease_token, 'poison') FROM outbox.claim('d')});
$node->safe_psql('src', q{SELECT outbox.redrive(ARRAY(SELECT min(id) FROM outbox.dead_letters), 'fixed the parser')});
$node->safe_psql('src', q{SELECT outbox.reap()});
$node->safe_psql('src', q{CREATE TABLE held AS SELECT id FROM outbox.claim('d', 50, lease => '1 hour')});
# 20 acked above the held leases: only outbox.acked says they are settled,
# the watermark stays below the held ones.
$node->safe_psql('src', q{
	SELECT sum(outbox.ack(ids, tok)) FROM (
		SELECT array_agg(id) AS ids, min(lease_token::text)::uuid AS tok
		FROM outbox.claim('d', 20)) c;
});

my $counts = q{SELECT string_agg(topic || ': available ' || available || ', leased ' || leased
	|| ', delayed ' || delayed || ', dead ' || dead, '; ' ORDER BY topic) FROM outbox.stats};
note('before the dump: ' . $node->safe_psql('src', $counts));

# What must survive: every table that holds user state, row by row.
my %tables = (
	topic => 'SELECT topic_id, name, max_attempts, retention, backoff_base, backoff_max, ordered, incarnation, per_tenant, parent_id, tenant FROM outbox.topic',
	topic_state => 'SELECT * FROM outbox.topic_state',
	event => 'SELECT id, topic_id, created_at, available_at, key, type, tenant, payload, headers, origin_id FROM outbox.event',
	retry => 'SELECT * FROM outbox.retry',
	acked => 'SELECT topic_id, u FROM outbox.acked, unnest(coalesce(ids, ARRAY[max_id])) u',
	dead_letter => 'SELECT * FROM outbox.dead_letter',
	redrive_log => 'SELECT * FROM outbox.redrive_log',
	dedupe => 'SELECT * FROM outbox.dedupe',
	tenant_access => 'SELECT role::text, tenant, granted_at FROM outbox.tenant_access',
);
sub table_digest
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db,
		"SELECT count(*) || ' rows ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM ($sql) x");
}
my %before = map { $_ => table_digest('src', $tables{$_}) } keys %tables;
# The events still to be delivered: not acked (at or below the watermark
# is acked, dead or in retry), not dead, not waiting for later.
my $pending = q{
	SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM outbox.event e JOIN outbox.topic t USING (topic_id)
	WHERE t.name = 'd' AND e.available_at IS NULL
	  AND NOT EXISTS (SELECT 1 FROM outbox.acked a WHERE e.id = ANY (coalesce(a.ids, ARRAY[a.max_id])))
	  AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)
	  AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id AND r.available_at > now())
	  AND e.id > coalesce((SELECT min(watermark) FROM outbox.topic_state s WHERE s.topic_id = e.topic_id), 0)
	     OR EXISTS (SELECT 1 FROM outbox.retry r JOIN outbox.topic t2 USING (topic_id)
	                WHERE r.event_id = e.id AND t2.name = 'd' AND r.available_at <= now())};
my $expected = $node->safe_psql('src', $pending);
my $acked = $node->safe_psql('src',
	q{SELECT string_agg(u::text, ',') FROM outbox.acked, unnest(coalesce(ids, ARRAY[max_id])) u});
my $max_id = $node->safe_psql('src', 'SELECT max(id) FROM outbox.event');
my @exp = split /,/, $expected;
cmp_ok(scalar(@exp), '>=', 500, scalar(@exp) . ' events still to deliver, the 50 leased ones among them');

# Claims and acks topic d of a database until it is empty; the ids.
sub drain
{
	my ($db) = @_;
	my @got;
	for (1 .. 100)
	{
		my $ids = $node->safe_psql($db, q{
			SELECT string_agg(c.id::text, ',' ORDER BY c.id) FROM outbox.claim('d', 1000) c
			WHERE outbox.ack(c.id, c.lease_token)});
		last if $ids eq '';
		push @got, split(/,/, $ids);
	}
	return @got;
}

my $dir = PostgreSQL::Test::Utils::tempdir;
for my $format ('custom', 'plain')
{
	my $db = "dst_$format";
	my $file = "$dir/src.$format";
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(['pg_dump', '-F', substr($format, 0, 1), '-f', $file, '-d', $node->connstr('src')],
		'>', \$out, '2>', \$err);
	ok($ok, "pg_dump ($format) exits 0") or diag($err);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	($out, $err) = ('', '');
	if ($format eq 'custom')
	{
		$ok = IPC::Run::run(['pg_restore', '-d', $node->connstr($db), $file], '>', \$out, '2>', \$err);
	}
	else
	{
		$ok = IPC::Run::run(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-f', $file],
			'>', \$out, '2>', \$err);
	}
	ok($ok, "restore ($format) exits 0");
	is($err, '', "restore ($format) reports no error");

	for my $t (sort keys %tables)
	{
		is(table_digest($db, $tables{$t}), $before{$t}, "$format: outbox.$t restored row by row");
	}
	note("$format, after the restore: " . $node->safe_psql($db, $counts));

	# A new offer gets an id above every restored one.
	my $new_id = $node->safe_psql($db, q{SELECT outbox.offer('d', '{"after": "restore"}')});
	cmp_ok($new_id, '>', $max_id, "$format: a new offer's id is above every restored id");

	# Drain: exactly the undelivered events and the new one come out.
	my @got = drain($db);
	my %acked = map { $_ => 1 } split(/,/, $acked);
	is(scalar(grep { $acked{$_} } @got), 0, "$format: nothing acked before the dump comes back");
	is(join(',', sort { $a <=> $b } @got), join(',', sort { $a <=> $b } (@exp, $new_id)),
		"$format: every undelivered event and the new one are delivered, once");
	is($node->safe_psql($db, q{SELECT delayed || '/' || dead FROM outbox.stats WHERE topic = 'd'}),
		'2/1', "$format: the delayed and the retrying event wait, the dead letter stays dead");
	is($node->safe_psql($db, q{SELECT error_history::text FROM outbox.dead_letters}),
		$node->safe_psql('src', q{SELECT error_history::text FROM outbox.dead_letters}),
		"$format: the dead letter keeps its history");
	is($node->safe_psql($db, q{SELECT attempts FROM outbox.retry r WHERE r.available_at > now() + interval '30 minutes' AND attempts > 0}),
		'1', "$format: the retrying event keeps its attempt count");
	is($node->safe_psql($db, q{SELECT outbox.offer('d', '{"again": 1}', dedupe_key => 'k1') = (SELECT event_id FROM outbox.dedupe WHERE dedupe_key = 'k1')}),
		't', "$format: dedupe keys still dedupe");
	is($node->safe_psql($db, q{SET ROLE tenant_a_app; SELECT string_agg(payload->>'tenant', ',') FROM outbox.claim('pt', 10)}),
		'a', "$format: the tenant binding and the per-tenant parts hold");
}

# A restore into a database that already holds an outbox is refused before
# any of the dump's outbox data is loaded: the two outboxes are not mixed.
# The same for a dump of another version of the extension.
my @state_tables = qw(topic topic_state event retry acked dead_letter dedupe);
sub outbox_digest
{
	my ($db) = @_;
	return join("\n", map { "$_: " . table_digest($db, $tables{$_}) } @state_tables);
}
sub restore
{
	my ($format, $file, $db) = @_;
	my ($out, $err) = ('', '');
	my $ok = $format eq 'custom'
	  ? IPC::Run::run(['pg_restore', '-d', $node->connstr($db), $file], '>', \$out, '2>', \$err)
	  : IPC::Run::run(['psql', '-X', '-q', '-d', $node->connstr($db), '-f', $file], '>', \$out, '2>', \$err);
	return ($ok, $err);
}
for my $format ('custom', 'plain')
{
	my $db = "busy_$format";
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, q{
		SET client_min_messages = warning;
		CREATE EXTENSION outbox CASCADE;
		SELECT outbox.create_topic('d');
		SELECT outbox.offer('d', jsonb_build_object('mine', g)) FROM generate_series(1, 3) g;
	});
	$node->safe_psql($db, q{SELECT outbox.ack(id, lease_token) FROM outbox.claim('d', 1)});
	my $mine = outbox_digest($db);
	my ($ok, $err) = restore($format, "$dir/src.$format", $db);
	ok(!$ok, "$format: a restore into a database with its own outbox fails");
	like($err, qr/FATAL:.*this database already holds an outbox/,
		"$format: and says why") or diag($err);
	note("$format restore into a busy database, stderr:\n$err");
	is(outbox_digest($db), $mine, "$format: the database's own outbox is untouched");
	is($node->safe_psql($db, q{SELECT string_agg(c.payload->>'mine', ',' ORDER BY c.id) FROM outbox.claim('d', 10) c}),
		'2,3', "$format: and delivers its own events, and only those");
}

# A dump taken from another version of the extension.
$node->safe_psql('src', q{UPDATE outbox._dump_origin SET version = '99.0'});
for my $format ('custom', 'plain')
{
	my $file = "$dir/newer.$format";
	ok(IPC::Run::run(['pg_dump', '-F', substr($format, 0, 1), '-f', $file, '-d', $node->connstr('src')]),
		"pg_dump ($format) of the 'newer' database exits 0");
	my $db = "newer_$format";
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	my ($ok, $err) = restore($format, $file, $db);
	ok(!$ok, "$format: a dump of outbox 99.0 is not restored into outbox "
		. $node->safe_psql('src', q{SELECT default_version FROM pg_available_extensions WHERE name = 'outbox'}));
	like($err, qr/FATAL:.*dump was taken from outbox 99\.0/, "$format: and says why") or diag($err);
	is($node->safe_psql($db, q{SELECT (SELECT count(*) FROM outbox.topic) + (SELECT count(*) FROM outbox.event)
		+ (SELECT count(*) FROM outbox.acked) + (SELECT count(*) FROM outbox.retry)}),
		'0', "$format: none of its outbox data was loaded");
}

# The database's worker runs while a restore loads it: it must not touch
# what is half loaded.  The acknowledgements load before the watermarks
# (outbox.topic_state sorts after outbox.acked_*); a pause of longer than
# one period of the acknowledgement generations (10 s) between them, as a
# slow restore would have, gives the worker's reaps every chance to trim
# acknowledgements whose watermark is not loaded yet.
$node->append_conf('postgresql.conf', qq{
outbox.enabled = on
outbox.reap_interval = 100
outbox.maintenance_interval = 1
});
$node->reload;
{
	my $plain = slurp_file("$dir/src.plain");
	my $n = ($plain =~ s/^(COPY outbox\.acked_1 .*?^\\\.\n)/$1\nSELECT pg_catalog.pg_sleep(11);\n/ms);
	is($n, 1, 'a pause put into the plain dump after the acknowledgements');
	open(my $fh, '>', "$dir/slow.plain") or die;
	print $fh $plain;
	close($fh);
	$node->safe_psql('postgres', 'CREATE DATABASE slow');
	my ($ok, $err) = restore('plain', "$dir/slow.plain", 'slow');
	ok($ok, 'a slow restore with the worker running exits 0');
	is($err, '', 'and reports no error') or diag($err);
	# acknowledgements at or below the watermark may be trimmed by the
	# worker once the restore is done: they are checked by what is
	# delivered, the other tables row by row
	for my $t (grep { $_ ne 'acked' } sort keys %tables)
	{
		is(table_digest('slow', $tables{$t}), $before{$t}, "slow restore: outbox.$t restored row by row");
	}
	my @got = drain('slow');
	my %was_acked = map { $_ => 1 } split(/,/, $acked);
	is(scalar(grep { $was_acked{$_} } @got), 0, 'slow restore: nothing acked before the dump comes back');
	is(join(',', sort { $a <=> $b } @got), join(',', sort { $a <=> $b } @exp),
		'slow restore: every undelivered event is delivered, once');
	ok($node->poll_query_until('slow',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'slow'}),
		'the worker runs in the restored database')
	  or diag(join('', grep { /outbox|launcher/i } split(/^/m, slurp_file($node->logfile))));
}

$node->stop;
done_testing();
