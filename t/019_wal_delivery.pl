# Delivery through the WAL (create_topic(..., delivery => 'wal', slot =>
# ...)), read by real decoders on a real server:
# - test_decoding and wal2json (format-version 2) through the SQL functions,
#   and pgoutput through a replication connection by a real client, the npm
#   package pg-logical-replication (test/wal/client.js, installed with npm
#   into the test's directory);
# - four producers offer with offer and offer_batch to two WAL topics (one
#   with a part per tenant) and to a claimed topic, with whole transactions
#   and savepoints rolled back (after an error too), savepoints released and
#   dedupe keys offered again; every transaction that commits takes a lock
#   for its commit and records its place, so the commit order is known;
# - every decoder sees every committed event of a WAL topic exactly once,
#   transaction by transaction in commit order, each transaction's events in
#   the order they were offered, nothing rolled back, nothing of the claimed
#   topic, no dedupe hit twice; the three decoders see the same bytes; every
#   field of every message equals the event's row;
# - delivery follows each topic's own slot: pending in outbox.stats until
#   that slot confirms (a peek, another slot, a client that does not confirm
#   change nothing), then delivered, by outbox.reap() and by the worker
#   alone; outbox.wal_topics shows it; maintain() keeps a partition past
#   retention while it holds an unconfirmed event and drops it afterwards; a
#   dropped slot holds everything; a restart and a crash keep what is
#   pending and delivery goes on after them;
# - claim on a WAL topic is refused with 55000; with wal_level below
#   logical, create_topic(delivery => 'wal') and offers to a WAL topic are
#   refused with 55000, and a slot that does not exist holds the events.
# wal2json, Node.js and npm are required (scripts/install-deps.sh): the test
# fails without them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Encode qw(encode_utf8);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);

my $root = abs_path(dirname(__FILE__) . '/..');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $json = JSON::PP->new->utf8;

# ---- the client: test/wal/client.js with its locked packages, by npm ci
my $client_dir = "$tmp/wal_client";
mkdir $client_dir or die "mkdir $client_dir: $!";
for my $f (qw(client.js package.json package-lock.json))
{
	copy("$root/test/wal/$f", "$client_dir/$f") or die "copy $f: $!";
}
my ($npm_out, $npm_err) = ('', '');
my $npm_ok = eval {
	local $ENV{npm_config_cache} = "$tmp/npm-cache";
	local $ENV{npm_config_update_notifier} = 'false';
	IPC::Run::run([ 'npm', 'ci', '--prefix', $client_dir, '--no-audit', '--no-fund', '--loglevel=error' ],
		'<', \undef, '>', \$npm_out, '2>', \$npm_err);
};
ok($npm_ok && -d "$client_dir/node_modules/pg-logical-replication",
	'npm installs pg-logical-replication for the client')
  or BAIL_OUT("npm ci failed (Node.js and npm: scripts/install-deps.sh): $@ $npm_out $npm_err");

# ---- the Debezium connector's configuration (contrib/debezium): the
# pgoutput client reads the slot and publication it names, and its
# heartbeat query moves that slot as it would Debezium's
my $connector = eval { $json->decode(slurp_file("$root/contrib/debezium/postgres-connector.json"))->{config} };
ok($connector, 'contrib/debezium/postgres-connector.json is JSON with a config') or BAIL_OUT("$@");
is(join('|', map { $connector->{$_} // '' } qw(plugin.name message.prefix.include.list transforms)),
	'pgoutput|outbox|decode,outbox', 'it reads pgoutput, takes the prefix outbox, decodes and then routes');
is(join('|', map { $connector->{$_} // '' } qw(transforms.decode.type transforms.outbox.type)),
	'io.debezium.connector.postgresql.transforms.DecodeLogicalDecodingMessageContent|io.debezium.transforms.outbox.EventRouter',
	'with DecodeLogicalDecodingMessageContent, then EventRouter');
is(join('|', map { $connector->{"transforms.outbox.$_"} // '' }
		qw(route.by.field table.field.event.id table.field.event.key table.field.event.payload)),
	'aggregatetype|id|aggregateid|payload', 'EventRouter routes by aggregatetype, keys by aggregateid, sends payload');
like($connector->{'transforms.outbox.table.fields.additional.placement'} // '', qr/(?:^|,)type:header:eventType(?:,|$)/,
	'and puts type into the header eventType');
my $dbz_slot = $connector->{'slot.name'} // 'debezium';
my $dbz_pub = $connector->{'publication.name'} // 'outbox_debezium';
my $heartbeat = $connector->{'heartbeat.action.query'} // '';
like($heartbeat, qr/pg_logical_emit_message\(false,/, 'its heartbeat query emits a message of its own');

# ---- the server: wal_level = logical, the library preloaded
my $node = PostgreSQL::Test::Cluster->new('wal');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.launcher_naptime = 1
outbox.reap_interval = 200
max_replication_slots = 10
max_wal_senders = 10
});
$node->start;

# Since 15.19 (and 17.x, 18.x alike) only the output plugins that
# output_plugin_libraries names may decode; older servers have no such
# setting and would refuse to start with it.
my $plugins = $node->safe_psql('postgres',
	q{SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'});
if ($plugins ne '' && $plugins !~ /\bwal2json\b/)
{
	$node->append_conf('postgresql.conf', "output_plugin_libraries = '$plugins, wal2json'\n");
	$node->restart;
}
note("output_plugin_libraries: " . ($plugins eq '' ? '(not a setting here)' : $plugins));

sub sql
{
	return $node->safe_psql('postgres', $_[0]);
}

# The SQLSTATE of the error that $sql raises on $n, or a description of
# what happened instead.
sub sqlstate
{
	my ($n, $sql) = @_;
	my ($rc, $out, $err) = $n->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $1 if $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return "no error (exit $rc): $out $err";
}

# The exit status of the one process of an IPC::Run harness that has
# finished, or how it ended otherwise.
sub exit_status
{
	my ($h) = @_;
	my $st = $h->full_result(0);
	return 'unknown' unless defined $st;
	return 'signal ' . ($st & 127) if $st & 127;
	return $st >> 8;
}

# Calls $check until it returns true, for $secs seconds at most.
sub poll
{
	my ($secs, $check) = @_;
	my $until = time + $secs;
	while (1)
	{
		return 1 if $check->();
		return 0 if time > $until;
		sleep 0.2;
	}
}

sql(qq{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('orders', delivery => 'wal', slot => '$dbz_slot');
	SELECT outbox.create_topic('billing', delivery => 'wal', slot => 'outbox_td');
	SELECT outbox.isolate_tenants('billing');
	SELECT outbox.create_topic('mail');
	-- what publication.autocreate.mode = no_tables makes
	CREATE PUBLICATION $dbz_pub;
});
is(sql(q{SELECT string_agg(topic || ':' || slot || ':' || slot_exists, ',' ORDER BY topic) FROM outbox.wal_topics}),
	"billing:outbox_td:false,orders:$dbz_slot:false",
	'wal_topics lists the two WAL topics with their slots, which do not exist yet');
is(sql(q{SELECT string_agg(topic || ':' || delivery || ':' || coalesce(slot::text, '-'), ',' ORDER BY topic) FROM outbox.topics}),
	"billing:wal:outbox_td,mail:claim:-,orders:wal:$dbz_slot", 'topics shows delivery and slot');
sql(qq{
	SELECT pg_create_logical_replication_slot('$dbz_slot', 'pgoutput');
	SELECT pg_create_logical_replication_slot('outbox_td', 'test_decoding');
	SELECT pg_create_logical_replication_slot('outbox_w2j', 'wal2json');
	CREATE TABLE prod_ids (seq bigserial PRIMARY KEY, xid bigint NOT NULL, id bigint NOT NULL);
	CREATE TABLE commit_seq (seq bigserial PRIMARY KEY, xid bigint NOT NULL UNIQUE);
});
is(sql(q{SELECT string_agg(topic || ':' || slot_exists, ',' ORDER BY topic) FROM outbox.wal_topics}),
	'billing:true,orders:true', 'once made, wal_topics sees the slots');

# ---- claim on a WAL topic is refused
is(sqlstate($node, q{SELECT * FROM outbox.claim('orders')}), '55000', 'claim on a WAL topic: 55000');
is(sqlstate($node, q{SELECT * FROM outbox.claim('billing')}), '55000',
	'claim on a WAL topic with tenant parts: 55000');
my (undef, undef, $claim_err) = $node->psql('postgres', q{SELECT * FROM outbox.claim('orders')});
like($claim_err, qr/HINT:.*slot/i, 'with a hint to read the slot');

# ---- four producers
my @texts = ("plain", "quote \" and backslash \\ and slash /", "line\nbreak\ttab\r",
	"caf\x{e9} \x{4e2d}\x{6587} \x{1F600}", "", "</script>", "\x{2028}\x{2029}", "ctl \x{1}\x{1f}\x{7f}",
	"\$j\$ not a quote");
my @raw_json = ('{"big": 123456789012345678901234567890, "small": 1.5e-7, "neg": -0.0, "e": 1E+3}',
	'null', '"just a string"', '42', 'true', '[]', '{}', '[1, [2, [3, [4, [5]]]]]',
	'{"a": {"b": {"c": {"d": {"e": {"f": "deep"}}}}}}');

sub rand_text { return $texts[ int(rand(@texts)) ] }

sub rand_value
{
	my ($depth) = @_;
	my $r = int(rand($depth >= 3 ? 4 : 6));
	return rand_text() if $r == 0;
	return int(rand(2_000_000)) - 1_000_000 if $r == 1;
	return $r == 2 ? JSON::PP::true : JSON::PP::null if $r <= 3;
	return [ map { rand_value($depth + 1) } 1 .. int(rand(4)) ] if $r == 4;
	return { map { rand_text() . $_ => rand_value($depth + 1) } 1 .. int(rand(4)) };
}

my $jenc = JSON::PP->new->canonical;    # characters, not bytes: the file is written as UTF-8

sub payload
{
	my ($p, $n) = @_;
	return $raw_json[ int(rand(@raw_json)) ] if rand() < 0.15;
	return $jenc->encode({ producer => $p, n => $n, body => rand_value(0) });
}

sub lit
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub jlit
{
	my ($j) = @_;
	return 'NULL' unless defined $j;
	my $q = 'q';
	$q .= 'q' while index($j, "\$$q\$") >= 0;
	return "\$$q\$$j\$$q\$::jsonb";
}

sub maybe { return rand() < $_[0] ? $_[1] : undef }

# One offer or batch, printing TAG and the id of each event.
sub op_sql
{
	my ($p, $tag, $n, $dedupe) = @_;
	my $r = rand();
	if ($r < 0.40 || $dedupe)
	{
		my $headers = maybe(0.5, $jenc->encode({ 'trace-id' => "p$p-$n", h => rand_text() }));
		return sprintf(q{INSERT INTO prod_ids (xid, id) SELECT txid_current(), outbox.offer('orders', %s, key => %s, type => %s, headers => %s, tenant => %s%s) RETURNING '%s', id;},
			jlit(payload($p, $n)), lit(maybe(0.8, rand_text() . " k$n")), lit(maybe(0.7, 'order.' . rand_text())),
			jlit($headers), lit($dedupe ? undef : maybe(0.3, "tenant $p")),
			($dedupe ? ', dedupe_key => ' . lit($dedupe) : ''), $tag);
	}
	elsif ($r < 0.70)
	{
		my $k = 1 + int(rand(4));
		my @p = map { jlit(payload($p, "$n.$_")) } 1 .. $k;
		my @keys = map { lit(maybe(0.7, "b$n.$_ " . rand_text())) } 1 .. $k;
		my @types = map { lit(maybe(0.7, rand_text())) } 1 .. $k;
		my @h = map { jlit(maybe(0.5, $jenc->encode({ n => "$n.$_" }))) } 1 .. $k;
		my $with = rand();
		return sprintf(q{INSERT INTO prod_ids (xid, id) SELECT txid_current(), b FROM outbox.offer_batch('orders', ARRAY[%s]::jsonb[]%s%s%s, tenant => %s) b RETURNING '%s', id;},
			join(', ', @p),
			($with < 0.8 ? ', keys => ARRAY[' . join(', ', @keys) . ']::text[]' : ''),
			($with < 0.6 ? ', types => ARRAY[' . join(', ', @types) . ']::text[]' : ''),
			($with < 0.5 ? ', headers => ARRAY[' . join(', ', @h) . ']::jsonb[]' : ''),
			lit(maybe(0.3, "tenant $p")), $tag);
	}
	elsif ($r < 0.90)
	{
		return sprintf(q{INSERT INTO prod_ids (xid, id) SELECT txid_current(), outbox.offer('billing', %s, key => %s, type => 'invoice', tenant => %s) RETURNING '%s', id;},
			jlit(payload($p, $n)), lit("inv $n"), lit(maybe(0.7, 't' . (1 + int(rand(3))))), $tag);
	}
	else
	{
		# the claimed topic: no message
		return sprintf(q{SELECT 'm', outbox.offer('mail', %s);}, jlit(payload($p, $n)));
	}
}

srand(19);
my @scripts;
for my $p (1 .. 4)
{
	my (@lines, @keys);
	my $n = 0;
	for my $t (1 .. 40)
	{
		my $commit = rand() < 0.8;
		my $tag = $commit ? 'c' : 'r';
		my @tx = ('BEGIN;');
		my @new_keys;
		for (1 .. 1 + int(rand(3)))
		{
			$n++;
			if ($commit && rand() < 0.1)
			{
				my $key = "p$p-key$n";
				push @new_keys, $key;
				push @tx, op_sql($p, $tag, $n, $key);
			}
			else
			{
				push @tx, op_sql($p, $tag, $n);
			}
		}
		if (@keys && rand() < 0.3)
		{
			push @tx, sprintf(q{SELECT 'd', outbox.offer('orders', '{"again": true}', dedupe_key => %s);},
				lit($keys[ int(rand(@keys)) ]));
		}
		if (rand() < 0.3)
		{
			push @tx, 'SAVEPOINT s1;';
			push @tx, op_sql($p, 'r', ++$n) for 1 .. 1 + int(rand(2));
			push @tx, 'SELECT 1/0;' if rand() < 0.5;
			push @tx, 'ROLLBACK TO SAVEPOINT s1;';
		}
		if (rand() < 0.25)
		{
			push @tx, 'SAVEPOINT s2;';
			push @tx, op_sql($p, $tag, ++$n) for 1 .. 1 + int(rand(2));
			push @tx, 'RELEASE SAVEPOINT s2;';
		}
		push @tx, op_sql($p, $tag, ++$n) if rand() < 0.5;
		if ($commit)
		{
			push @tx, 'SELECT pg_advisory_xact_lock(19019);',
				'INSERT INTO commit_seq (xid) VALUES (txid_current());', 'COMMIT;';
			push @keys, @new_keys;
		}
		else
		{
			push @tx, 'SELECT 1/0;' if rand() < 0.3;
			push @tx, 'ROLLBACK;';
		}
		push @lines, @tx;
	}
	# one large event: a message of 200 kB
	push @lines, 'BEGIN;',
		sprintf(q{INSERT INTO prod_ids (xid, id) SELECT txid_current(), outbox.offer('orders', jsonb_build_object('big', repeat('x%d', 50000)), key => 'big') RETURNING 'c', id;}, $p),
		'SELECT pg_advisory_xact_lock(19019);', 'INSERT INTO commit_seq (xid) VALUES (txid_current());', 'COMMIT;';
	my $file = "$tmp/producer$p.sql";
	open my $fh, '>:encoding(UTF-8)', $file or die "$file: $!";
	print $fh "$_\n" for @lines;
	close $fh;
	push @scripts, $file;
}

my (@out, @err, @h);
for my $p (0 .. 3)
{
	($out[$p], $err[$p]) = ('', '');
	push @h, IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', $scripts[$p] ],
		'<', \undef, '>', \$out[$p], '2>', \$err[$p]);
}
my $producers_ok = 1;
for my $p (0 .. 3)
{
	$h[$p]->finish;
	$producers_ok = 0 if exit_status($h[$p]) ne '0';
	my @bad = grep { /ERROR/ && !/division by zero/ } split /\n/, $err[$p];
	if (@bad)
	{
		$producers_ok = 0;
		diag("producer " . ($p + 1) . ": @bad[0 .. ($#bad < 4 ? $#bad : 4)]");
	}
}
ok($producers_ok, 'four producers ran their transactions; the only errors were the ones they made on purpose');

my (%tagged, @dups, @mail);
for my $p (0 .. 3)
{
	for (split /\n/, $out[$p])
	{
		my ($tag, $id) = split /\|/;
		next unless defined $id;
		if ($tag eq 'd') { push @dups, $id }
		elsif ($tag eq 'm') { push @mail, $id }
		else { push @{ $tagged{$tag} }, $id }
	}
}
my @committed = sort { $a <=> $b } @{ $tagged{c} // [] };
my @rolled = @{ $tagged{r} // [] };
cmp_ok(scalar @committed, '>', 300, scalar(@committed) . ' events offered in transactions that commit');
cmp_ok(scalar @rolled, '>', 20, scalar(@rolled) . ' in transactions or savepoints rolled back');
cmp_ok(scalar @dups, '>', 3, scalar(@dups) . ' dedupe keys offered again');

# What committed, from the log itself: the events of the two WAL topics.
my $wal_ids = sql(q{
	SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM outbox.event e
	JOIN outbox.topic t USING (topic_id) WHERE t.delivery = 'wal'});
is($wal_ids, join(',', @committed), 'the WAL topics hold exactly the events of the committed work');
is(sql('SELECT count(*) FROM outbox.event WHERE id IN (' . join(',', @rolled) . ')'), '0',
	'and none of the rolled-back work');
my %committed = map { $_ => 1 } @committed;
is(scalar(grep { !$committed{$_} } @dups), 0, 'an offer with a known dedupe key returned the committed event');

# The expected stream: the transactions in commit order, each with its
# events in the order offered.
my @expected = map { my ($xid, $ids) = split /\|/; [ $xid, [ split /,/, $ids ] ] } split /\n/, sql(q{
	SELECT c.xid, string_agg(p.id::text, ',' ORDER BY p.seq)
	FROM commit_seq c JOIN prod_ids p USING (xid)
	GROUP BY c.seq, c.xid ORDER BY c.seq});
is(scalar(map { @{ $_->[1] } } @expected), scalar @committed, scalar(@expected) . ' transactions to decode');
# Commit order is not id order: a stream in id order would fail.
my $overtaken = 0;
for my $i (1 .. $#expected)
{
	my ($prev_max) = sort { $b <=> $a } @{ $expected[ $i - 1 ][1] };
	my ($min) = sort { $a <=> $b } @{ $expected[$i][1] };
	$overtaken++ if $min < $prev_max;
}
cmp_ok($overtaken, '>', 0, "$overtaken transactions commit after one with larger ids");
my $max_orders = sql(q{SELECT max(id) FROM outbox.event e JOIN outbox.topic t USING (topic_id) WHERE t.name = 'orders'});
my $n_orders = sql(q{SELECT count(*) FROM outbox.event e JOIN outbox.topic t USING (topic_id) WHERE t.name = 'orders'});
my $n_billing = scalar(@committed) - $n_orders;
cmp_ok($n_billing, '>', 20, "$n_billing events for billing's tenant parts");
my $after_producers = sql('SELECT pg_current_wal_lsn()');

# ---- the decoders
# Each gives [[xid, [content bytes...]]...]: the transactions that hold
# outbox messages, in the order decoded.
sub from_test_decoding
{
	my ($fn) = @_;
	my (@txs, $cur, $bad);
	for my $line (split /\n/, sql(qq{
		SELECT data FROM $fn('outbox_td', NULL, NULL, 'include-xids', '1')
		WHERE data ~ '^(BEGIN|COMMIT) ' OR data LIKE 'message: %'}))
	{
		if ($line =~ /^BEGIN (\d+)$/) { $cur = [ $1, [] ] }
		elsif ($line =~ /^COMMIT (\d+)/)
		{
			push @txs, $cur if @{ $cur->[1] };
			$cur = undef;
		}
		elsif ($line =~ /^message: transactional: (\d) prefix: ([^,]*), sz: (\d+) content:(.*)$/s)
		{
			next unless $2 eq 'outbox';
			$bad .= "not transactional: $line\n" unless $1 eq '1';
			$bad .= "size $3 is not " . length($4) . "\n" unless $3 == length($4);
			$bad .= "outside a transaction\n" unless $cur;
			push @{ $cur->[1] }, $4 if $cur;
		}
	}
	return (\@txs, $bad);
}

sub from_wal2json
{
	my (@txs, $cur, $bad);
	for my $line (split /\n/, sql(q{
		SELECT data FROM pg_logical_slot_peek_changes('outbox_w2j', NULL, NULL, 'format-version', '2', 'include-xids', '1')
		WHERE data::jsonb->>'action' IN ('B', 'C', 'M')}))
	{
		my $r = $json->decode($line);
		if ($r->{action} eq 'B') { $cur = [ $r->{xid}, [] ] }
		elsif ($r->{action} eq 'C')
		{
			push @txs, $cur if @{ $cur->[1] };
			$cur = undef;
		}
		elsif ($r->{prefix} eq 'outbox')
		{
			$bad .= "not transactional\n" unless $r->{transactional};
			$bad .= "outside a transaction\n" unless $cur;
			push @{ $cur->[1] }, encode_utf8($r->{content}) if $cur;
		}
	}
	return (\@txs, $bad);
}

sub from_client_file
{
	my ($file) = @_;
	my (@txs, @msgs, $bad);
	open my $fh, '<:raw', $file or return ([], "no output: $!");
	while (my $line = <$fh>)
	{
		chomp $line;
		if ($line =~ /^\{"commit":/)
		{
			my $c = $json->decode($line);
			$bad .= "a commit of $c->{messages} messages after " . scalar(@msgs) . "\n" if $c->{messages} != @msgs;
			push @txs, [ $c->{xid}, [@msgs] ];
			@msgs = ();
		}
		else
		{
			push @msgs, $line;
		}
	}
	$bad .= scalar(@msgs) . " messages without a commit\n" if @msgs;
	return (\@txs, $bad);
}

# The ids of each transaction of a decoded stream: [[xid, [ids]]...].
sub ids_of
{
	my ($txs) = @_;
	return [ map { my $t = $_; [ "$t->[0]", [ map { $json->decode($_)->{id} } @{ $t->[1] } ] ] } @$txs ];
}

sub check_stream
{
	my ($name, $txs, $bad) = @_;
	is($bad // '', '', "$name: every outbox message transactional and inside its transaction");
	my $got = ids_of($txs);
	my @got_ids = map { @{ $_->[1] } } @$got;
	my %seen;
	my @twice = grep { $seen{$_}++ } @got_ids;
	is(scalar @twice, 0, "$name: no event twice") or diag("twice: @twice[0 .. ($#twice < 9 ? $#twice : 9)]");
	my @missing = grep { !$seen{$_} } @committed;
	is(scalar @missing, 0, "$name: no committed event missing")
	  or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");
	my @extra = grep { !$committed{$_} } keys %seen;
	is(scalar @extra, 0, "$name: nothing that did not commit, nothing of the claimed topic")
	  or diag("extra: @extra[0 .. ($#extra < 9 ? $#extra : 9)]");
	my $same = is_deeply($got, \@expected,
		"$name: the transactions in commit order, with their xids, each with its events in offer order");
	unless ($same)
	{
		for my $i (0 .. $#expected)
		{
			my ($g, $e) = ($got->[$i], $expected[$i]);
			next if $g && $g->[0] eq $e->[0] && "@{ $g->[1] }" eq "@{ $e->[1] }";
			diag("first difference at transaction $i: got " . ($g ? "$g->[0]: @{ $g->[1] }" : 'nothing') .
				", expected $e->[0]: @{ $e->[1] }");
			last;
		}
	}
	return $got;
}

my ($td, $td_bad) = from_test_decoding('pg_logical_slot_peek_changes');
check_stream('test_decoding', $td, $td_bad);
my ($w2j, $w2j_bad) = from_wal2json();
check_stream('wal2json', $w2j, $w2j_bad);
is_deeply([ map { $_->[1] } @$w2j ], [ map { $_->[1] } @$td ], 'wal2json and test_decoding decode the same bytes');

# Every field of every message, against the event's row (test_decoding's
# copy, read in SQL).
my %field_checks = split /[|\n]/, sql(<<'SQL');
	WITH m AS (
		SELECT r[1] AS content, r[1]::jsonb AS j
		FROM pg_logical_slot_peek_changes('outbox_td', NULL, NULL, 'include-xids', '1') c,
			 LATERAL regexp_match(c.data, '^message: transactional: 1 prefix: outbox, sz: \d+ content:(.*)$') r
		WHERE r IS NOT NULL
	), x AS (
		SELECT m.*, e.id AS event_id, e.key, e.type, e.payload, e.headers, e.tenant, e.created_at,
			   pt.name AS topic
		FROM m
		LEFT JOIN outbox.event e ON e.id = (m.j->>'id')::bigint
		LEFT JOIN outbox.topic t ON t.topic_id = e.topic_id
		LEFT JOIN outbox.topic pt ON pt.topic_id = coalesce(t.parent_id, t.topic_id)
	)
	SELECT * FROM (VALUES
		('messages', (SELECT count(*) FROM x)),
		('not starting {"id":', (SELECT count(*) FROM x WHERE content !~ '^\{"id":[0-9]+,')),
		('other keys', (SELECT count(*) FROM x WHERE (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(j) k)
			<> ARRAY['aggregateid', 'aggregatetype', 'created_at', 'headers', 'id', 'payload', 'tenant', 'type'])),
		('no such event', (SELECT count(*) FROM x WHERE event_id IS NULL)),
		('id not a number', (SELECT count(*) FROM x WHERE jsonb_typeof(j->'id') <> 'number')),
		('aggregatetype', (SELECT count(*) FROM x WHERE j->'aggregatetype' IS DISTINCT FROM to_jsonb(topic))),
		('aggregateid', (SELECT count(*) FROM x WHERE j->'aggregateid' IS DISTINCT FROM coalesce(to_jsonb(key), 'null'))),
		('type', (SELECT count(*) FROM x WHERE j->'type' IS DISTINCT FROM coalesce(to_jsonb(type), 'null'))),
		('payload', (SELECT count(*) FROM x WHERE j->'payload' IS DISTINCT FROM payload)),
		('headers', (SELECT count(*) FROM x WHERE j->'headers' IS DISTINCT FROM coalesce(headers, 'null'))),
		('tenant', (SELECT count(*) FROM x WHERE j->'tenant' IS DISTINCT FROM coalesce(to_jsonb(tenant), 'null'))),
		('created_at format', (SELECT count(*) FROM x
			WHERE j->>'created_at' !~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$')),
		('created_at', (SELECT count(*) FROM x WHERE (j->>'created_at')::timestamptz IS DISTINCT FROM created_at))
	) v(k, n)
SQL
my %want_fields = map { $_ => 0 } keys %field_checks;
$want_fields{messages} = scalar @committed;
is_deeply(\%field_checks, \%want_fields,
	'every message: {"id":... first, those eight fields, each equal to the row (payload and headers as JSON, created_at as a time)');
is(sql(q{SELECT count(*) || ':' || count(*) FILTER (WHERE (e.tenant IS NOT NULL) = (t.parent_id IS NOT NULL))
	   FROM outbox.event e JOIN outbox.topic t USING (topic_id) WHERE t.name = 'billing'}),
	"$n_billing:$n_billing", "billing's events with a tenant are in its tenant parts, and their messages name the topic");

# ---- pending until the topic's own slot confirms
sub stats
{
	my ($topic) = @_;
	return sql(qq{SELECT available || ':' || (oldest_available_age IS NOT NULL) FROM outbox.stats WHERE topic = '$topic'});
}

sub reap_cycles
{
	for (1 .. $_[0])
	{
		sql('SELECT outbox.reap()');
		sleep 0.3;
	}
}

reap_cycles(3);
is(stats('orders'), "$n_orders:true", "orders: $n_orders available while its slot has confirmed nothing");
is(stats('billing'), "$n_billing:true", "billing: $n_billing available");
is(sql(qq{SELECT delivered_through < $committed[0] FROM outbox.wal_topics WHERE topic = 'orders'}), 't',
	'wal_topics: nothing delivered');

from_test_decoding('pg_logical_slot_peek_changes');
reap_cycles(3);
is(stats('billing'), "$n_billing:true", 'a peek at the slot confirms nothing');

# Another slot confirming changes nothing for either topic.
sql(q{SELECT count(*) FROM pg_logical_slot_get_changes('outbox_w2j', NULL, NULL, 'format-version', '2')});
reap_cycles(3);
is(stats('orders') . ' ' . stats('billing'), "$n_orders:true $n_billing:true",
	'nor does another slot confirming (wal2json, read to the end)');

# billing's slot confirms: billing is delivered, orders not.
ok(poll(60, sub {
	sql(q{SELECT count(*) FROM pg_logical_slot_get_changes('outbox_td', NULL, NULL)});
	sql('SELECT outbox.reap()');
	return stats('billing') eq '0:false';
}), 'billing: delivered once its slot (test_decoding) has confirmed, reap after reap')
  or diag('billing: ' . stats('billing') . '; ' . sql(q{SELECT * FROM outbox.wal_topics}));
is(stats('orders'), "$n_orders:true", 'orders: still pending, its slot has not moved');
my $max_billing = sql(q{SELECT max(e.id) FROM outbox.event e JOIN outbox.topic t USING (topic_id)
	WHERE t.name = 'billing'});
# (the slot confirms what it has read up to the WAL flushed so far, and
# the watermark follows at the next reap: read and reap until both are
# past)
ok(poll(30, sub {
	sql(q{SELECT count(*) FROM pg_logical_slot_get_changes('outbox_td', NULL, NULL)});
	sql('SELECT outbox.reap()');
	return sql(qq{SELECT delivered_through >= $max_billing AND confirmed_flush_lsn >= '$after_producers'
		FROM outbox.wal_topics WHERE topic = 'billing'}) eq 't';
}), "wal_topics: billing delivered through its last event ($max_billing), its slot past the producers' work")
  or diag("after the producers: $after_producers; " . sql(q{SELECT * FROM outbox.wal_topics}));

# ---- the pgoutput client
my $total = scalar @committed;

sub client_cmd
{
	my (%o) = @_;
	return [ 'node', "$client_dir/client.js", '--host=' . $node->host, '--port=' . $node->port,
		'--dbname=postgres', "--slot=$dbz_slot", "--publication=$dbz_pub", "--out=$o{out}",
		'--count=' . ($o{count} // 0), ($o{ack} ? ($o{ack} eq 'commits' ? '--ack=commits' : '--ack') : ()), ($o{stay} ? '--stay' : ()),
		'--timeout=' . ($o{timeout} // 90), '--proto=' . ($o{proto} // 1) ];
}

# Runs the client to its end: its exit status and stderr.
sub run_client
{
	my (%o) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run(client_cmd(%o), '<', \undef, '>', \$o, '2>', \$e);
	return ($? >> 8, $e);
}

# Starts the client with --stay; returns once it streams.
sub start_client
{
	my (%o) = @_;
	my $c = { out => '', err => '' };
	$c->{h} = IPC::Run::start(client_cmd(%o, stay => 1), '<', \undef, '>', \$c->{out}, '2>', \$c->{err});
	poll(30, sub { $c->{h}->pump_nb; return $c->{err} =~ /streaming/ || !$c->{h}->pumpable; })
	  && $c->{err} =~ /streaming/
	  or diag("the client did not start streaming: $c->{err}");
	return $c;
}

sub stop_client
{
	my ($c) = @_;
	eval { $c->{h}->signal('TERM') };
	eval { $c->{h}->finish };
	return (exit_status($c->{h}), $c->{err});
}

my ($rc, $cerr) = run_client(out => "$tmp/pgoutput1.jsonl", count => $total, proto => 2);
is($rc, 0, "the client (proto_version 2, not confirming) got $total messages") or diag($cerr);
my ($pgo, $pgo_bad) = from_client_file("$tmp/pgoutput1.jsonl");
check_stream('pgoutput', $pgo, $pgo_bad);
is_deeply([ map { $_->[1] } @$pgo ], [ map { $_->[1] } @$td ], 'pgoutput and test_decoding decode the same bytes');
reap_cycles(3);
is(stats('orders'), "$n_orders:true", 'orders: still pending after a client that did not confirm');

# The same client, confirming: the same messages again, then delivered.
my $c = start_client(out => "$tmp/pgoutput2.jsonl", count => $total, ack => 1);
ok(poll(60, sub {
	sql('SELECT outbox.reap()');
	return stats('orders') eq '0:false';
}), 'orders: delivered once the client has confirmed') or diag('orders: ' . stats('orders') . "; client: $c->{err}");
($rc, $cerr) = stop_client($c);
is($rc, 0, 'the client stops at SIGTERM') or diag($cerr);
my ($pgo2, $pgo2_bad) = from_client_file("$tmp/pgoutput2.jsonl");
is($pgo2_bad // '', '', 'its output is whole');
is_deeply($pgo2, $pgo, 'what was not confirmed came again, the same (proto_version 1)');
is(sql(qq{SELECT delivered_through >= $max_orders AND confirmed_flush_lsn >= '$after_producers'
	   FROM outbox.wal_topics WHERE topic = 'orders'}), 't',
	"wal_topics: orders delivered through its last event ($max_orders)")
  or diag("after the producers: $after_producers; " . sql(q{SELECT * FROM outbox.wal_topics}));

# As Debezium confirms: only what it is sent (the end of each transaction,
# each message of its own), and the connector's heartbeat query sends
# something now and then.  The worker alone moves the watermark.
my $more = sql(q{SELECT string_agg(outbox.offer('orders', jsonb_build_object('more', g))::text, ',' ORDER BY g)
	FROM generate_series(1, 5) g});
is(stats('orders'), '5:true', 'five more offered');
$c = start_client(out => "$tmp/pgoutput3.jsonl", count => 5, ack => 'commits');
ok(poll(60, sub {
	sql($heartbeat);
	return stats('orders') eq '0:false';
}), 'confirming commits and heartbeat messages only, the client has them delivered by the worker, no reap by hand');
($rc, $cerr) = stop_client($c);
is($rc, 0, 'the client got five messages') or diag($cerr);
my ($pgo3) = from_client_file("$tmp/pgoutput3.jsonl");
is(join(',', map { @{ $_->[1] } } @{ ids_of($pgo3) }), $more, 'the five, in one transaction, in order');

# ---- retention: a partition past retention stays while it holds an
# unconfirmed event (made old the way sql/maintain.sql makes it)
sql(q{
	CREATE TABLE outbox.event_p2020_01_01 PARTITION OF outbox.event
		FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
	CREATE INDEX ON outbox.event_p2020_01_01 (topic_id, id);
	INSERT INTO outbox.event (id, topic_id, created_at, payload)
	SELECT nextval('outbox.event_id_seq'), topic_id, '2020-01-01 12:00+00', '{"old": true}'
	FROM outbox.topic WHERE name = 'orders';
});
reap_cycles(2);
sql('SELECT outbox.maintain()');
is(sql(q{SELECT to_regclass('outbox.event_p2020_01_01') IS NOT NULL}), 't',
	'maintain() keeps the old partition while its event is not confirmed');
is(stats('orders'), '1:true', 'the old event is pending');
$c = start_client(out => "$tmp/pgoutput4.jsonl", ack => 1);
ok(poll(60, sub {
	sql('SELECT outbox.reap()');
	return stats('orders') eq '0:false';
}), 'the slot confirms past it: delivered');
stop_client($c);
sql('SELECT outbox.maintain()');
is(sql(q{SELECT to_regclass('outbox.event_p2020_01_01') IS NOT NULL}), 'f', 'and maintain() drops the partition');

# ---- a restart and a crash keep what is pending
my $pending = sql(q{SELECT string_agg(outbox.offer('orders', jsonb_build_object('restart', g), key => 'r' || g)::text, ',' ORDER BY g)
	FROM generate_series(1, 7) g});
reap_cycles(2);
is(stats('orders'), '7:true', 'seven pending');
$node->restart;
reap_cycles(2);
is(stats('orders'), '7:true', 'seven pending after a restart');
$node->stop('immediate');
$node->start;
reap_cycles(2);
is(stats('orders'), '7:true', 'seven pending after a crash');
is(sql(q{SELECT slot_exists FROM outbox.wal_topics WHERE topic = 'orders'}), 't', 'the slot is still there');
$c = start_client(out => "$tmp/pgoutput5.jsonl", count => 7, ack => 1);
ok(poll(60, sub {
	sql('SELECT outbox.reap()');
	return stats('orders') eq '0:false';
}), 'delivery goes on: the client confirms them, they are delivered');
($rc, $cerr) = stop_client($c);
is($rc, 0, 'the client got seven messages') or diag($cerr);
# PostgreSQL before 17 writes a slot's confirmed_flush_lsn to disk only
# with other changes to the slot, not at a shutdown checkpoint: after a
# restart the slot may send again what was confirmed before (and the
# watermark does not move back).  What comes again is older than the seven.
my ($pgo5, $pgo5_bad) = from_client_file("$tmp/pgoutput5.jsonl");
is($pgo5_bad // '', '', 'its output is whole');
my @ids5 = map { @{ $_->[1] } } @{ ids_of($pgo5) };
my (%seen5, $first_new);
$first_new = (split /,/, $pending)[0];
is(join(',', grep { $_ >= $first_new } @ids5), $pending, 'those seven, in order, after what was confirmed before if anything');
is(scalar(grep { $seen5{$_}++ } @ids5), 0, 'each once');
note(scalar(grep { $_ < $first_new } @ids5) . ' confirmed before the restart came again');

# ---- a dropped slot holds everything
sql(q{SELECT pg_drop_replication_slot('outbox_td')});
is(sql(q{SELECT slot_exists || ':' || (confirmed_flush_lsn IS NULL) FROM outbox.wal_topics WHERE topic = 'billing'}),
	'false:true', 'wal_topics: billing\'s slot is gone');
my $held = sql(q{SELECT string_agg(outbox.offer('billing', jsonb_build_object('held', g), tenant => 't1')::text, ',' ORDER BY g)
	FROM generate_series(1, 3) g});
reap_cycles(5);
is(stats('billing'), '3:true', 'three offers to billing stay pending, reap after reap');
sleep 2;
is(stats('billing'), '3:true', 'and while the worker reaps');

# The slot made again never saw those messages: they are sent again, and
# delivered once it has confirmed them.
sql(q{SELECT pg_create_logical_replication_slot('outbox_td', 'test_decoding')});
my %resent;
ok(poll(60, sub {
	sql('SELECT outbox.reap()');
	for (split /\n/, sql(q{SELECT data FROM pg_logical_slot_get_changes('outbox_td', NULL, NULL) WHERE data LIKE 'message: %'}))
	{
		$resent{ $json->decode($1)->{id} }++ if /^message: transactional: 1 prefix: outbox, sz: \d+ content:(.*)$/;
	}
	return stats('billing') eq '0:false';
}), 'once the slot is back, the held events are delivered');
is(join(',', grep { $resent{$_} } split /,/, $held), $held, 'and the new slot carried all three');

# ---- a per-tenant topic with all its events in its tenant parts: the parent
# holds none, and its own watermark stays where it was made; how far the
# topic is delivered is its parts'.
sql(q{SELECT outbox.create_topic('ledger', delivery => 'wal', slot => 'outbox_td')});
sql(q{SELECT outbox.isolate_tenants('ledger')});
my $max_ledger = sql(q{SELECT max(outbox.offer('ledger', '{}', tenant => t)) FROM unnest(ARRAY['x', 'y', 'x']) t});
is(sql(qq{SELECT delivered_through < $max_ledger FROM outbox.wal_topics WHERE topic = 'ledger'}), 't',
	'wal_topics: ledger not delivered before its slot confirms');
ok(poll(30, sub {
	sql(q{SELECT count(*) FROM pg_logical_slot_get_changes('outbox_td', NULL, NULL)});
	sql('SELECT outbox.reap()');
	return stats('ledger') eq '0:false';
}), 'ledger: its tenants\' events are delivered once the slot confirms');
is(sql(qq{SELECT delivered_through >= $max_ledger FROM outbox.wal_topics WHERE topic = 'ledger'}), 't',
	"wal_topics: ledger delivered through its last event ($max_ledger), over its tenant parts")
  or diag(sql(q{SELECT * FROM outbox.wal_topics WHERE topic = 'ledger'}));

# The worker has logged no error.
unlike(slurp_file($node->logfile), qr/outbox worker: \w+ failed/, 'the worker logged no failure');
$node->stop;

# ---- wal_level below logical
my $low = PostgreSQL::Test::Cluster->new('replica_level');
$low->init(allows_streaming => 'logical');
$low->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.enabled = off
});
$low->start;
$low->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('w', delivery => 'wal', slot => 'nowhere');
	SELECT outbox.offer('w', '{"n": 1}');
	SELECT outbox.reap();
	SELECT outbox.reap();
});
is($low->safe_psql('postgres', q{SELECT available FROM outbox.stats WHERE topic = 'w'}), '1',
	'a slot that was never made holds the event');
# A slot made after an offer committed, before any reap: its stream starts
# after that commit, so the event must be sent again or stay pending; it
# must not count as delivered unseen.
$low->safe_psql('postgres', q{
	SELECT outbox.create_topic('late', delivery => 'wal', slot => 'late_slot');
	SELECT outbox.offer('late', '{"late": 1}');
	SELECT pg_create_logical_replication_slot('late_slot', 'test_decoding');
});
my $late_seen = 0;
for (1 .. 6)
{
	$low->safe_psql('postgres', 'SELECT outbox.reap()');
	$late_seen += $low->safe_psql('postgres',
		q{SELECT count(*) FROM pg_logical_slot_get_changes('late_slot', NULL, NULL) WHERE data LIKE 'message: %"late"%'});
	sleep 0.2;
}
my $late_available = $low->safe_psql('postgres', q{SELECT available FROM outbox.stats WHERE topic = 'late'});
ok($late_seen > 0 || $late_available eq '1',
	'an event offered before its slot was made reaches the slot or stays pending')
  or diag("the slot decoded $late_seen messages of it; available: $late_available; "
	. $low->safe_psql('postgres', q{SELECT * FROM outbox.wal_topics WHERE topic = 'late'}));
$low->safe_psql('postgres', q{SELECT pg_drop_replication_slot('late_slot')});

$low->append_conf('postgresql.conf', "wal_level = replica\n");
$low->restart;
is($low->safe_psql('postgres', 'SHOW wal_level'), 'replica', 'wal_level = replica now');
is(sqlstate($low, q{SELECT outbox.offer('w', '{"n": 2}')}), '55000', 'an offer to a WAL topic: 55000');
is(sqlstate($low, q{SELECT outbox.offer_batch('w', ARRAY['{"n": 3}']::jsonb[])}), '55000', 'offer_batch: 55000');
is(sqlstate($low, q{SELECT outbox.create_topic('w2', delivery => 'wal', slot => 's')}), '55000',
	'create_topic(delivery => \'wal\'): 55000');
$low->safe_psql('postgres', q{SELECT outbox.create_topic('c2')});
is($low->safe_psql('postgres', q{
	SELECT count(outbox.offer('c2', '{}'));
	SELECT count(*) FROM outbox.topics WHERE topic = 'w2'}), "1\n0", 'a claimed topic works as ever; w2 was not made');
$low->stop;

done_testing();
