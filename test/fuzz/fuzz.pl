#!/usr/bin/perl
# Writes a deterministic stream of calls to every public outbox function,
# with random and hostile arguments, as a psql script on stdout.
#
#   fuzz.pl SEED CALLS > script.sql
#
# The script runs in one session with ON_ERROR_STOP off and VERBOSITY
# verbose, so that every error shows its SQLSTATE.  Valid calls are mixed in
# (real topics, lease tokens captured with \gset) so that the state the
# hostile calls meet is real: leased, retried, dead, delayed events.
# Topics f5 and f6 are ordered (f6 keeps tenants apart): the session offers
# them events of a few keys (k0, k1, k2, and no key) for several tenants,
# and besides the hostile calls claims, acks (the last event of a claim
# alone, or all of a lease in one call), nacks, dead-letters and extends
# leases of them for real; alter_topic may change their settings.
#
# The session keeps a ledger of what the calls returned (ledger.sql), in
# the temporary table fuzz_ledger, written by the statement that makes the
# call: a call that fails, or whose transaction or savepoint rolls back,
# leaves no entry, and a read-only transaction may write it.  Entries (n:
# the statement that wrote them):
#   offer        id returned by offer or offer_batch, and the topic named
#   claim        id, topic and lease_token returned by claim
#   ack          id of an ack that returned true, or of a count that names
#                every id the client held under the token; 'ack-' for the
#                ids it held that an ack did not count; 'ack?' when the
#                count leaves open which of them (and without id if it
#                counts more than the client held), which the statement
#                after an ack of several ids settles where it can
#                (fuzz_resolve: 'ack' or 'ack-')
#   nack         id, token and what nack returned ('retry' or 'dead')
#   dead_letter  id and token of a dead_letter that returned true
#   redrive      count of a redrive that sent any back, the ids it named
#                of those the client had seen die (ids), and of those dead
#                on the server as it began that it may redrive (dead_ids)
#   replay       topic and count of a replay that offered any
#   drop         topic of a drop_topic that succeeded
# Each entry also has the time it was written (at) and its transaction's
# start (xts).  Every 2000 calls, outside a transaction, the server is
# audited against the ledger, per-key order in the ordered topics included
# (fuzz_order_audit); a claim that hands out an event the ledger has acked,
# or seen die and not redriven, is reported at once, also in a transaction
# that then rolls back, and before a transaction (or savepoint) that
# claimed rolls back, the order of what it claimed is checked; all as
# warnings "fuzz ledger: ...".  At the end the
# ledger is copied to the table fuzz_ledger for run.sh's checks.  The
# session releases its leases when it ends (outbox.release_on_disconnect),
# and every delay it can make is a second at most, so that all falls due
# for run.sh's final drain.
use strict;
use warnings;
use FindBin qw($RealBin);

my ($seed, $calls) = @ARGV;
die "usage: fuzz.pl SEED CALLS\n" unless defined $calls;
srand($seed);

sub pick { return $_[ int(rand(@_)) ]; }

# f5 and f6 are ordered (f6 per tenant): real claims take them more often
my @topics = ("'f1'", "'f2'", "'f3'", "'f4'", "'f5'", "'f5'", "'f6'");

my @text = (
	'NULL', "''", "'f1'", "'f2'", "'f3'", "'nope'", q{'x"; DROP TABLE victim; --'},
	q{'x''; DROP TABLE victim; --'}, q{'O''Brien'}, q{'a b'}, "repeat('a', 63)",
	"repeat('a', 64)", "repeat('z', 100000)", "repeat('h', 4000000)", q{'é'}, q{'日本語'}, q{E'\t\n'},
	q{'f1.x'}, q{'-'}, q{'.'}, q{'%s%n'}, q{'\\'}, q{'$$'}, q{'🙂'});
my @topic = (("'f1'", "'f2'", "'f3'", "'f4'") x 5, ("'f5'", "'f6'") x 3, @text);
# keys: a few that many events share (the ordered topics order by them), and
# no key
my @key = (("'k0'", "'k1'", "'k2'", 'NULL') x 3, @text);
my @tenant = ("''", "''", "'a'", "'b'", "'c'", "repeat('t', 63)", "repeat('t', 64)",
	q{'x''; DROP TABLE victim; --'}, q{'日本語'});
my @role = ('NULL', "'outbox_consumer'", "'outbox_producer'", "'pg_monitor'", "'no_such_role'",
	q{'x"; DROP TABLE victim; --'});
my @jsonb = (
	"'{}'", "'null'", "'[]'", q{'"s"'}, "'1'", q{'{"a": [1, 2, {"b": null}]}'},
	q{'{"u": "\u00e9\u65e5\ud83d\ude42"}'}, q{'{"k": "x''; DROP TABLE victim; --"}'},
	"jsonb_build_object('big', repeat('x', 1024 * 1024))",
	"(repeat('[', 5000) || repeat(']', 5000))::jsonb",
	"(repeat('{\"a\":', 2000) || '1' || repeat('}', 2000))::jsonb",
	q{'{"nul": "\u0000"}'}, 'NULL', "'not json'");
my @int = ('NULL', '-2147483648', '-1', '0', '1', '2', '3', '50', '10000', '10001', '2147483647');
my @bigint = ('NULL', '-1', '0', '1', ':cid', ':cid', ':cid', ':clast', '9223372036854775807',
	'-9223372036854775808', '424242');
my @interval = ('NULL', "'0'", "'-1 second'", "'1 microsecond'", "'10 milliseconds'",
	"'30 seconds'", "'1 day'", "'1 day 1 second'", "'-1 year'", "'100 years'",
	"'2147483647 days'", "'1 mon'", "'1 hour'", "'61 minutes'", "'infinity'");
# Delays (available_at, retry_after, backoffs) and retentions: what is
# accepted delays an event by a second at most, so that all falls due for
# run.sh's drain; longer delays are refused (past a cap, or past every
# topic's retention).
my @ts = ('NULL', "'infinity'", "'-infinity'", 'now()', "now() + interval '50 milliseconds'",
	"now() - interval '1 day'", "'1970-01-01'", "'294276-12-31'", "now() + interval '1 second'",
	"'9999-12-31'", "now() + interval '8 days'");
my @delay = ('NULL', "'0'", "'-1 second'", "'1 microsecond'", "'10 milliseconds'",
	"'300 milliseconds'", "'1 second'", "'-1 year'", "'367 days'", "'100 years'",
	"'2147483647 days'", "'infinity'");
my @retention = ('NULL', "'0'", "'-1 second'", "'1 microsecond'", "'10 milliseconds'",
	"'1 second'", "'1 hour'", "'1 day'", "'7 days'", "'-1 year'", "'36601 days'",
	"'2147483647 days'", "'infinity'");
my @uuid = ('NULL', 'gen_random_uuid()', ":'ctok'", ":'ctok'", ":'ctok'",
	"'00000000-0000-0000-0000-000000000000'", "'not-a-uuid'");
my @bool = ('NULL', 'true', 'false');
my @ids = ('NULL', "'{}'::bigint[]", 'ARRAY[:cid]::bigint[]', 'ARRAY[:cid]::bigint[]',
	'ARRAY[:cid, :cid]::bigint[]', 'ARRAY[:clast, :cid]::bigint[]', 'ARRAY[1, NULL]::bigint[]', 'ARRAY[[1], [2]]::bigint[]',
	'ARRAY(SELECT generate_series(1, 10000))::bigint[]', 'ARRAY(SELECT generate_series(1, 10001))::bigint[]',
	'array_fill(:cid::bigint, ARRAY[2000000])', 'ARRAY(SELECT id FROM outbox.dead_letter)');

sub jsonb_array
{
	my $n = pick(0, 1, 2, 3, 5, 100, 1000);
	my $kind = pick('ok', 'ok', 'ok', 'null', 'nested', 'scalar', 'sqlnull');
	return 'NULL' if $kind eq 'sqlnull';
	return 'ARRAY[NULL]::jsonb[]' if $kind eq 'null';
	return "ARRAY[['{}'], ['{}']]::jsonb[]" if $kind eq 'nested';
	return "ARRAY[1, 2]::text[]::jsonb[]" if $kind eq 'scalar';
	return "ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, $n) g)";
}

sub text_array
{
	my $n = pick(0, 1, 2, 3, 5, 100, 1000);
	return pick('NULL', "ARRAY(SELECT 'k' || g FROM generate_series(1, $n) g)",
		"ARRAY[NULL, 'a']::text[]", "'{}'::text[]");
}

# name => [ [argname, generator], ... ]
my %fn = (
	create_topic => [[topic => \@text], [max_attempts => \@int], [retention => \@retention],
		[backoff_base => \@delay], [backoff_max => \@delay], [ordered => \@bool]],
	alter_topic => [[topic => \@topic], [max_attempts => \@int], [retention => \@retention],
		[backoff_base => \@delay], [backoff_max => \@delay]],
	drop_topic => [[topic => [@text, "'f9'"]], [force => \@bool]],
	offer => [[topic => \@topic], [payload => \@jsonb], [key => \@key], [type => \@text],
		[headers => \@jsonb], [tenant => \@text], [dedupe_key => \@text], [available_at => \@ts]],
	offer_batch => [[topic => \@topic], [payloads => 'jsonb_array'], [keys => 'text_array'],
		[types => 'text_array'], [headers => 'jsonb_array'], [tenant => \@text]],
	ack_one => [[id => \@bigint], [lease_token => \@uuid]],
	ack_many => [[ids => \@ids], [lease_token => \@uuid]],
	nack => [[id => \@bigint], [lease_token => \@uuid], [error => \@text], [retry_after => \@delay]],
	extend_lease => [[ids => \@ids], [lease_token => \@uuid], [lease => \@interval]],
	dead_letter => [[id => \@bigint], [lease_token => \@uuid], [reason => \@text]],
	redrive => [[ids => \@ids], [reason => \@text]],
	replay => [[topic => \@topic], [since => \@ts], [until => \@ts], [key => \@key], [tenant => \@text]],
	isolate_tenants => [[topic => \@topic]],
	grant_tenant => [[role => \@role], [tenant => [@tenant, @text]]],
	revoke_tenant => [[role => \@role], [tenant => [@tenant, @text]]],
);

sub value
{
	my ($gen) = @_;
	return jsonb_array() if $gen eq 'jsonb_array';
	return text_array() if $gen eq 'text_array';
	return pick(@$gen);
}

# Arguments a call always passes: create_topic's backoff_max, so that no
# topic waits the default minute between attempts.
my %always = (create_topic => 'backoff_max');

# The SQL of a call, and its arguments by name.
sub call
{
	my ($name) = @_;
	my @args = @{ $fn{$name} };
	my $sqlname = $name =~ /^ack_/ ? 'ack' : $name;
	my (@parts, %arg);
	my $named = rand() < 0.5;
	my $keep = $always{$name} // '';
	my ($upto) = grep { $args[$_][0] eq $keep } 0 .. $#args;
	$upto //= 0;
	for my $i (0 .. $#args)
	{
		my ($argname, $gen) = @{ $args[$i] };
		# required arguments always; optional ones sometimes
		next if $i >= 2 && $argname ne $keep && rand() < 0.4 && $named;
		my $v = value($gen);
		$arg{$argname} = $v;
		push @parts, $named ? "$argname => $v" : $v;
		last if !$named && $i >= 1 && $i >= $upto && rand() < 0.3;
	}
	return ("outbox.$sqlname(" . join(', ', @parts) . ")", %arg);
}

# Ledger entries are numbered by the statement that writes them.
my $n = 0;

# An ack (CALL returns a boolean or a count) of IDS under TOKEN, and its
# entries: the ids the client holds under the token (claimed under it,
# not settled under it since) among IDS.  If the count says all of them,
# they are acked; if none, 'ack-' names them (held, not acked); if fewer,
# 'ack?' names them all and which ones is open (fuzz_resolve, ledger.sql,
# settles that right after where the statement is followed by it); if
# more, an 'ack?' entry without id says so.  IDS and TOKEN are
# evaluated a second time only if the ack counted any, in the snapshot the
# call's arguments saw.
sub ledger_ack
{
	my ($ids, $token, $call) = @_;
	$n++;
	return "WITH r AS MATERIALIZED (SELECT ($call)::int AS k), "
	  . "c AS (SELECT DISTINCT l.id FROM pg_temp.fuzz_ledger l "
	  . "WHERE l.op = 'claim' AND l.token = (SELECT ($token)::uuid) AND l.id = ANY ((SELECT ($ids)::bigint[])::bigint[]) "
	  . "AND NOT EXISTS (SELECT 1 FROM pg_temp.fuzz_ledger s "
	  . "WHERE s.op IN ('ack', 'nack', 'dead_letter') AND s.id = l.id AND s.token = l.token)) "
	  . "INSERT INTO pg_temp.fuzz_ledger (n, op, id, token, result) "
	  . "SELECT $n, CASE WHEN r.k = 0 THEN 'ack-' WHEN r.k = (SELECT count(*) FROM c) THEN 'ack' ELSE 'ack?' END, "
	  . "c.id, ($token)::uuid, r.k::text FROM r LEFT JOIN c ON true WHERE r.k > 0 OR c.id IS NOT NULL";
}

# Arguments the ledger evaluates again, where a cheaper expression says the
# same: an array of one id 2,000,000 times; names no topic can have (longer
# than 63 bytes: the call fails).  Constant arguments are built when the
# statement is planned, for the ledger too.
my %again = ("array_fill(:cid::bigint, ARRAY[2000000])" => 'ARRAY[:cid]',
	"repeat('z', 100000)" => 'NULL', "repeat('h', 4000000)" => 'NULL');

# A call of NAME as a statement that also writes its ledger entries.
sub statement
{
	my ($name) = @_;
	my ($call, %a) = call($name);
	for my $v (values %a) { $v = $again{$v} if exists $again{$v}; }

	return ledger_ack("ARRAY[($a{id})::bigint]", $a{lease_token}, $call) if $name eq 'ack_one';
	return ledger_ack($a{ids}, $a{lease_token}, $call) if $name eq 'ack_many';
	$n++;
	my $w = "WITH r AS MATERIALIZED (SELECT $call AS k) INSERT INTO pg_temp.fuzz_ledger";
	return "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id) SELECT $n, 'offer', ($a{topic})::text, $call"
	  if $name eq 'offer';
	return "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id) SELECT $n, 'offer', ($a{topic})::text, b FROM $call b"
	  if $name eq 'offer_batch';
	return "$w (n, op, id, token, result) SELECT $n, 'nack', ($a{id})::bigint, ($a{lease_token})::uuid, r.k "
	  . "FROM r WHERE r.k IS NOT NULL"
	  if $name eq 'nack';
	return "$w (n, op, id, token, result) SELECT $n, 'dead_letter', ($a{id})::bigint, ($a{lease_token})::uuid, "
	  . "'true' FROM r WHERE r.k"
	  if $name eq 'dead_letter';
	# of the ids it names, those the client saw die (evaluated as for acks),
	# and those dead on the server when the statement began that it may
	# redrive (fuzz_dead_among)
	return "$w (n, op, ids, dead_ids, result) SELECT $n, 'redrive', ARRAY(SELECT d.id FROM (SELECT DISTINCT l.id "
	  . "FROM pg_temp.fuzz_ledger l WHERE l.op = 'dead_letter' OR (l.op = 'nack' AND l.result = 'dead') OFFSET 0) d "
	  . "WHERE d.id = ANY ((SELECT ($a{ids})::bigint[])::bigint[])), "
	  . "pg_temp.fuzz_dead_among(($a{ids})::bigint[], current_user), r.k::text FROM r WHERE r.k > 0"
	  if $name eq 'redrive';
	return "$w (n, op, topic, result) SELECT $n, 'replay', ($a{topic})::text, r.k::text FROM r WHERE r.k > 0"
	  if $name eq 'replay';
	return "$w (n, op, topic) SELECT $n, 'drop', ($a{topic})::text FROM r" if $name eq 'drop_topic';
	return "SELECT $call";
}

# offer_batch of COUNT events to f1, in the ledger
sub seed
{
	my ($count) = @_;
	$n++;
	return "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id) SELECT $n, 'offer', 'f1', b FROM "
	  . "outbox.offer_batch('f1', ARRAY(SELECT jsonb_build_object('seed', g) FROM generate_series(1, $count) g)) b;\n";
}

# offer_batch of COUNT events to the ordered topic TOPIC, for TENANT, in the
# ledger: keys k0, k1, k2 and no key, taking turns
sub seed_ordered
{
	my ($topic, $count, $tenant) = @_;
	$n++;
	return "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id) SELECT $n, 'offer', '$topic', b FROM "
	  . "outbox.offer_batch('$topic', ARRAY(SELECT jsonb_build_object('seed', g) FROM generate_series(1, $count) g), "
	  . "keys => ARRAY(SELECT CASE WHEN g % 4 = 3 THEN NULL ELSE 'k' || g % 4 END FROM generate_series(1, $count) g), "
	  . "tenant => $tenant) b;\n";
}

sub seeds
{
	return seed(50) . seed_ordered('f5', 40, pick('NULL', 'NULL', "'a'", "'b'"))
	  . seed_ordered('f6', 40, pick('NULL', "'a'", "'a'", "'b'", "'c'"));
}

my @fixed = (
	"SELECT outbox.create_topic('f1', max_attempts => 2, backoff_base => '1 millisecond', backoff_max => '10 milliseconds');\n",
	"SELECT outbox.create_topic('f2', max_attempts => 1, retention => '1 hour');\n",
	"SELECT outbox.create_topic('f3', backoff_max => '1 second');\n",
	"SELECT outbox.create_topic('f4', backoff_max => '1 second'); "
	  . "SELECT outbox.isolate_tenants('f4');\n",
	# ordered: f5 retries without end (every death is one the client sees,
	# unless alter_topic changes that), f6 gives up after 2 leases and has a
	# part per tenant
	"SELECT outbox.create_topic('f5', ordered => true, max_attempts => 1000, "
	  . "backoff_base => '1 millisecond', backoff_max => '10 milliseconds');\n",
	"SELECT outbox.create_topic('f6', ordered => true, max_attempts => 2, "
	  . "backoff_base => '1 millisecond', backoff_max => '10 milliseconds'); "
	  . "SELECT outbox.isolate_tenants('f6');\n");

print "\\set ON_ERROR_STOP off\n\\set ON_ERROR_ROLLBACK on\n\\set VERBOSITY verbose\n\\set SHOW_CONTEXT never\n";
print "SET client_min_messages = warning;\n";
# leases still held at the end fall due when the session ends
print "SET outbox.release_on_disconnect = on;\n";
print "\\set cid 1\n\\set clast 1\n\\set ctok 00000000-0000-0000-0000-000000000000\n";
print "CREATE TABLE IF NOT EXISTS victim (x int);\n";
# the ledger, and the audit of the server against it
print "\\i $RealBin/ledger.sql\n";
# a role bound to tenant 'a' makes part of the calls
print "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_bound') THEN "
  . "CREATE ROLE fuzz_bound; END IF; END \$\$;\n";
print "GRANT outbox_producer, outbox_consumer TO fuzz_bound; GRANT SELECT, INSERT ON pg_temp.fuzz_ledger TO fuzz_bound;\n";
print "SELECT outbox.grant_tenant('fuzz_bound', 'a');\n";
print @fixed;
print seed(200);
print seed_ordered('f5', 100, 'NULL'), seed_ordered('f5', 100, "'a'"), seed_ordered('f6', 100, "'b'");
# one 100 MB payload, built on the server
$n++;
print "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id) "
  . "SELECT $n, 'offer', 'f3', outbox.offer('f3', jsonb_build_object('huge', repeat('x', 100 * 1024 * 1024)));\n";

my @names = sort keys %fn;
my $in_xact = 0;
my $made = 0;
my $audited = 0;
# the statement before the open transaction, and whether it claimed since
my ($xact_n, $xact_claims) = (0, 0);
while ($made < $calls)
{
	my $r = rand();
	if ($made >= $audited + 2000 && !$in_xact)
	{
		$audited = $made;
		print "SELECT pg_temp.fuzz_audit_now(" . ($n + 1) . ");\n";
	}
	if ($made % 500 == 0 && !$in_xact)
	{
		# topics the calls dropped come back, with some events
		print @fixed;
		print seeds();
	}
	if ($r < 0.08)
	{
		# a real claim: remember the token, its first id, and its last id of
		# the first one's key (or its last id)
		my $t = pick(@topics);
		# (a lease of an ordered topic holds its key back: one that outlives
		# the session would hold it for the rest of the run)
		my $lease = $t =~ /f[56]/
		  ? pick("'10 milliseconds'", "'200 milliseconds'", "'2 seconds'", "'30 seconds'")
		  : pick("'30 seconds'", "'10 milliseconds'", "'1 hour'");
		$n++;
		print "WITH c AS MATERIALIZED (SELECT * FROM outbox.claim($t, " . pick(1, 5, 50) . ", lease => $lease)), "
		  . "l AS (INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id, token) "
		  . "SELECT $n, 'claim', c.topic, c.id, c.lease_token FROM c) "
		  . "SELECT c0.id AS cid, coalesce((SELECT max(c1.id) FROM c c1 WHERE c1.key = c0.key), "
		  . "(SELECT max(c1.id) FROM c c1)) AS clast, c0.lease_token AS ctok FROM c c0 ORDER BY c0.id LIMIT 1 \\gset\n";
		$xact_claims = 1;
		$made++;
	}
	elsif ($r < 0.10)
	{
		# a real ack of the last claim's first event
		print ledger_ack('ARRAY[:cid]', ":'ctok'", "outbox.ack(:cid, :'ctok')") . ";\n";
		$made++;
	}
	elsif ($r < 0.13)
	{
		# more real calls on the last claim's lease: ack its last event
		# alone (in an ordered topic not counted while an earlier one of its
		# key in the lease is unsettled); ack all the client holds under it
		# in one call, latest id first; nack its first event to a retry
		# (which hands the rest of its key in the lease back); dead-letter
		# its first, or redrive it (back to the head of its key, if it is
		# dead); extend the lease of its last event alone (the first may
		# expire without it)
		my $what = pick('last', 'all', 'nack', 'dead', 'redrive', 'extend');
		if ($what eq 'last')
		{
			print ledger_ack('ARRAY[:clast]', ":'ctok'", "outbox.ack(:clast, :'ctok')") . ";\n";
		}
		elsif ($what eq 'all')
		{
			my $ids = "ARRAY(SELECT h.id FROM pg_temp.fuzz_ledger h WHERE h.op = 'claim' AND h.token = :'ctok' "
			  . "ORDER BY h.id DESC)";
			print ledger_ack($ids, ":'ctok'", "outbox.ack($ids, :'ctok')") . ";\n";
			print "SELECT pg_temp.fuzz_resolve($n);\n";
		}
		elsif ($what eq 'nack')
		{
			$n++;
			print "WITH r AS MATERIALIZED (SELECT outbox.nack(:cid, :'ctok', 'fuzz: failed', "
			  . pick("'10 milliseconds'", 'NULL') . ") AS k) "
			  . "INSERT INTO pg_temp.fuzz_ledger (n, op, id, token, result) "
			  . "SELECT $n, 'nack', :cid, :'ctok', r.k FROM r WHERE r.k IS NOT NULL;\n";
		}
		elsif ($what eq 'dead')
		{
			$n++;
			print "WITH r AS MATERIALIZED (SELECT outbox.dead_letter(:cid, :'ctok', 'fuzz: gave up') AS k) "
			  . "INSERT INTO pg_temp.fuzz_ledger (n, op, id, token, result) "
			  . "SELECT $n, 'dead_letter', :cid, :'ctok', 'true' FROM r WHERE r.k;\n";
		}
		elsif ($what eq 'redrive')
		{
			$n++;
			print "WITH r AS MATERIALIZED (SELECT outbox.redrive(ARRAY[:cid]::bigint[], 'fuzz: back') AS k) "
			  . "INSERT INTO pg_temp.fuzz_ledger (n, op, ids, dead_ids, result) SELECT $n, 'redrive', "
			  . "ARRAY(SELECT DISTINCT l.id FROM pg_temp.fuzz_ledger l WHERE l.id = :cid "
			  . "AND (l.op = 'dead_letter' OR (l.op = 'nack' AND l.result = 'dead'))), "
			  . "pg_temp.fuzz_dead_among(ARRAY[:cid]::bigint[], current_user), r.k::text FROM r WHERE r.k > 0;\n";
		}
		else
		{
			print "SELECT outbox.extend_lease(ARRAY[:clast]::bigint[], :'ctok', "
			  . pick("'1 second'", "'1 hour'") . ");\n";
		}
		$made++;
	}
	elsif ($r < 0.15)
	{
		$xact_claims = 1;
		$n++;
		print "INSERT INTO pg_temp.fuzz_ledger (n, op, topic, id, token) "
		  . "SELECT $n, 'claim', c.topic, c.id, c.lease_token FROM outbox.claim(" . pick(@topic) . ", "
		  . pick(@int) . ", " . pick(@interval) . ", "
		  . pick("'0'", "'0'", "'5 milliseconds'", "'-1 second'", "'2 hours'", 'NULL') . ") c;\n";
		$made++;
	}
	elsif ($r < 0.16)
	{
		# act for a tenant, or for none, from here on
		print "SELECT set_config('outbox.tenant', " . pick(@tenant) . ", false);\n";
		$made++;
	}
	elsif ($r < 0.165)
	{
		# from here on as the tenant-bound role, or as the superuser again
		print pick('SET ROLE fuzz_bound;', 'RESET ROLE;', 'RESET ROLE;') . "\n";
	}
	elsif ($r < 0.175)
	{
		# the superuser acting for no tenant again: only such a session
		# claims from a topic that does not keep tenants apart (f5)
		print "RESET ROLE; SELECT set_config('outbox.tenant', '', false);\n";
		$made++;
	}
	elsif ($r < 0.18)
	{
		print "SELECT outbox.reap();\n";
		$made++;
	}
	elsif ($r < 0.185)
	{
		print "SELECT outbox.maintain();\n";
		$made++;
	}
	elsif ($r < 0.2)
	{
		print "SELECT count(*) FROM outbox.stats;\n";
		$made++;
	}
	elsif ($r < 0.23)
	{
		if ($in_xact)
		{
			my $end = pick('COMMIT;', 'ROLLBACK;', 'ROLLBACK;');
			# the order of what the transaction claimed, before it leaves
			# no trace in the ledger
			print "SELECT pg_temp.fuzz_order_now($xact_n);\n" if $end eq 'ROLLBACK;' && $xact_claims;
			print "$end\n";
			$in_xact = 0;
		}
		else
		{
			print pick('BEGIN;', 'BEGIN;', 'BEGIN;', 'BEGIN READ ONLY;') . "\n";
			$in_xact = 1;
			($xact_n, $xact_claims) = ($n, 0);
		}
	}
	elsif ($r < 0.24 && $in_xact)
	{
		my $sp = pick('SAVEPOINT s;', 'ROLLBACK TO SAVEPOINT s;', 'RELEASE SAVEPOINT s;');
		print "SELECT pg_temp.fuzz_order_now($xact_n);\n" if $sp =~ /^ROLLBACK/ && $xact_claims;
		print "$sp\n";
	}
	else
	{
		my $name = pick(@names);
		print statement($name) . ";\n";
		# which of the ids the client held an ack acked, when its count
		# leaves that open
		print "SELECT pg_temp.fuzz_resolve($n);\n" if $name eq 'ack_many';
		$made++;
	}
}
print "COMMIT;\n" if $in_xact;
print "RESET ROLE;\n";
# the ledger, for the checks in another session
print "CREATE TABLE public.fuzz_ledger AS TABLE pg_temp.fuzz_ledger;\n";
print "\\echo fuzz: $made calls\n";
