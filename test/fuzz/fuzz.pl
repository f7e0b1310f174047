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
use strict;
use warnings;

my ($seed, $calls) = @ARGV;
die "usage: fuzz.pl SEED CALLS\n" unless defined $calls;
srand($seed);

sub pick { return $_[ int(rand(@_)) ]; }

my @topics = ("'f1'", "'f2'", "'f3'", "'f4'");

my @text = (
	'NULL', "''", "'f1'", "'f2'", "'f3'", "'nope'", q{'x"; DROP TABLE victim; --'},
	q{'x''; DROP TABLE victim; --'}, q{'O''Brien'}, q{'a b'}, "repeat('a', 63)",
	"repeat('a', 64)", "repeat('z', 100000)", "repeat('h', 4000000)", q{'é'}, q{'日本語'}, q{E'\t\n'},
	q{'f1.x'}, q{'-'}, q{'.'}, q{'%s%n'}, q{'\\'}, q{'$$'}, q{'🙂'});
my @topic = (("'f1'", "'f2'", "'f3'", "'f4'") x 5, @text);
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
my @bigint = ('NULL', '-1', '0', '1', ':cid', ':cid', ':cid', '9223372036854775807',
	'-9223372036854775808', '424242');
my @interval = ('NULL', "'0'", "'-1 second'", "'1 microsecond'", "'10 milliseconds'",
	"'30 seconds'", "'1 day'", "'1 day 1 second'", "'-1 year'", "'100 years'",
	"'2147483647 days'", "'1 mon'", "'1 hour'", "'61 minutes'", "'infinity'");
my @ts = ('NULL', "'infinity'", "'-infinity'", 'now()', "now() + interval '50 milliseconds'",
	"now() - interval '1 day'", "'1970-01-01'", "'294276-12-31'", "now() + interval '1 day'",
	"'9999-12-31'", "now() + interval '8 days'");
my @uuid = ('NULL', 'gen_random_uuid()', ":'ctok'", ":'ctok'", ":'ctok'",
	"'00000000-0000-0000-0000-000000000000'", "'not-a-uuid'");
my @bool = ('NULL', 'true', 'false');
my @ids = ('NULL', "'{}'::bigint[]", 'ARRAY[:cid]::bigint[]', 'ARRAY[:cid]::bigint[]',
	'ARRAY[:cid, :cid]::bigint[]', 'ARRAY[1, NULL]::bigint[]', 'ARRAY[[1], [2]]::bigint[]',
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
	create_topic => [[topic => \@text], [max_attempts => \@int], [retention => \@interval],
		[backoff_base => \@interval], [backoff_max => \@interval], [ordered => \@bool]],
	drop_topic => [[topic => [@text, "'f9'"]], [force => \@bool]],
	offer => [[topic => \@topic], [payload => \@jsonb], [key => \@text], [type => \@text],
		[headers => \@jsonb], [tenant => \@text], [dedupe_key => \@text], [available_at => \@ts]],
	offer_batch => [[topic => \@topic], [payloads => 'jsonb_array'], [keys => 'text_array'],
		[types => 'text_array'], [headers => 'jsonb_array'], [tenant => \@text]],
	ack_one => [[id => \@bigint], [lease_token => \@uuid]],
	ack_many => [[ids => \@ids], [lease_token => \@uuid]],
	nack => [[id => \@bigint], [lease_token => \@uuid], [error => \@text], [retry_after => \@interval]],
	extend_lease => [[ids => \@ids], [lease_token => \@uuid], [lease => \@interval]],
	dead_letter => [[id => \@bigint], [lease_token => \@uuid], [reason => \@text]],
	redrive => [[ids => \@ids], [reason => \@text]],
	replay => [[topic => \@topic], [since => \@ts], [until => \@ts], [key => \@text], [tenant => \@text]],
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

sub call
{
	my ($name) = @_;
	my @args = @{ $fn{$name} };
	my $sqlname = $name =~ /^ack_/ ? 'ack' : $name;
	my @parts;
	my $named = rand() < 0.5;
	for my $i (0 .. $#args)
	{
		my ($argname, $gen) = @{ $args[$i] };
		# required arguments always; optional ones sometimes
		next if $i >= 2 && rand() < 0.4 && $named;
		my $v = value($gen);
		push @parts, $named ? "$argname => $v" : $v;
		last if !$named && $i >= 1 && rand() < 0.3;
	}
	return "SELECT outbox.$sqlname(" . join(', ', @parts) . ")";
}

print "\\set ON_ERROR_STOP off\n\\set ON_ERROR_ROLLBACK on\n\\set VERBOSITY verbose\n\\set SHOW_CONTEXT never\n";
print "SET client_min_messages = warning;\n";
print "\\set cid 1\n\\set ctok 00000000-0000-0000-0000-000000000000\n";
print "CREATE TABLE IF NOT EXISTS victim (x int);\n";
# the client's own record of the acks that returned true and committed
print "CREATE TABLE IF NOT EXISTS fuzz_acked (id bigint NOT NULL);\n";
# a role bound to tenant 'a' makes part of the calls
print "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_bound') THEN "
  . "CREATE ROLE fuzz_bound; END IF; END \$\$;\n";
print "GRANT outbox_producer, outbox_consumer TO fuzz_bound; GRANT INSERT ON fuzz_acked TO fuzz_bound;\n";
print "SELECT outbox.grant_tenant('fuzz_bound', 'a');\n";
print "SELECT outbox.create_topic('f1', max_attempts => 2, backoff_base => '1 millisecond', backoff_max => '10 milliseconds');\n";
print "SELECT outbox.create_topic('f2', max_attempts => 1, retention => '1 hour');\n";
print "SELECT outbox.create_topic('f3');\n";
print "SELECT outbox.create_topic('f4'); SELECT outbox.isolate_tenants('f4');\n";
print "SELECT count(*) FROM outbox.offer_batch('f1', ARRAY(SELECT jsonb_build_object('seed', g) FROM generate_series(1, 200) g));\n";
# one 100 MB payload, built on the server
print "SELECT outbox.offer('f3', jsonb_build_object('huge', repeat('x', 100 * 1024 * 1024))) > 0;\n";

my @names = sort keys %fn;
my $in_xact = 0;
my $made = 0;
while ($made < $calls)
{
	my $r = rand();
	if ($made % 500 == 0 && !$in_xact)
	{
		# topics the calls dropped come back, with some events
		print "SELECT outbox.create_topic('f1', max_attempts => 2, backoff_base => '1 millisecond', backoff_max => '10 milliseconds');\n";
		print "SELECT outbox.create_topic('f2', max_attempts => 1, retention => '1 hour');\n";
		print "SELECT outbox.create_topic('f3');\n";
		print "SELECT outbox.create_topic('f4'); SELECT outbox.isolate_tenants('f4');\n";
		print "SELECT count(*) FROM outbox.offer_batch('f1', ARRAY(SELECT jsonb_build_object('seed', g) FROM generate_series(1, 50) g));\n";
	}
	if ($r < 0.08)
	{
		# a real claim: remember one id and the token
		my $t = pick(@topics);
		my $lease = pick("'30 seconds'", "'10 milliseconds'", "'1 hour'");
		print "SELECT id AS cid, lease_token AS ctok FROM outbox.claim($t, "
		  . pick(1, 5, 50) . ", lease => $lease) LIMIT 1 \\gset\n";
		$made++;
	}
	elsif ($r < 0.10)
	{
		# a real ack of the last claimed event, recorded when it returns true
		print "INSERT INTO fuzz_acked SELECT :cid WHERE outbox.ack(:cid, :'ctok');\n";
		$made++;
	}
	elsif ($r < 0.12)
	{
		print "SELECT count(*) FROM outbox.claim(" . pick(@topic) . ", " . pick(@int) . ", "
		  . pick(@interval) . ", " . pick("'0'", "'0'", "'5 milliseconds'", "'-1 second'", "'2 hours'", 'NULL') . ");\n";
		$made++;
	}
	elsif ($r < 0.13)
	{
		# act for a tenant, or for none, from here on
		print "SELECT set_config('outbox.tenant', " . pick(@tenant) . ", false);\n";
		$made++;
	}
	elsif ($r < 0.135)
	{
		# from here on as the tenant-bound role, or as the superuser again
		print pick('SET ROLE fuzz_bound;', 'RESET ROLE;', 'RESET ROLE;') . "\n";
	}
	elsif ($r < 0.14)
	{
		print "SELECT outbox.reap();\n";
		$made++;
	}
	elsif ($r < 0.145)
	{
		print "SELECT outbox.maintain();\n";
		$made++;
	}
	elsif ($r < 0.16)
	{
		print "SELECT count(*) FROM outbox.stats;\n";
		$made++;
	}
	elsif ($r < 0.19)
	{
		if ($in_xact) { print pick('COMMIT;', 'ROLLBACK;', 'ROLLBACK;') . "\n"; $in_xact = 0; }
		else { print pick('BEGIN;', 'BEGIN;', 'BEGIN;', 'BEGIN READ ONLY;') . "\n"; $in_xact = 1; }
	}
	elsif ($r < 0.20 && $in_xact)
	{
		print pick('SAVEPOINT s;', 'ROLLBACK TO SAVEPOINT s;', 'RELEASE SAVEPOINT s;') . "\n";
	}
	else
	{
		print call(pick(@names)) . ";\n";
		$made++;
	}
}
print "COMMIT;\n" if $in_xact;
print "RESET ROLE;\n";
print "\\echo fuzz: $made calls\n";
