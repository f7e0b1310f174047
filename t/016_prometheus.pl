# Monitoring with Prometheus: the real prometheus-postgres-exporter, given
# contrib/prometheus/queries.yaml, exports every figure of outbox.stats and
# outbox.metrics per topic and the two latency histograms of
# outbox.metrics_histograms(), with the values the server shows; it tells
# whether the extension is installed and whether an outbox worker serves the
# database.  The alerting rules of contrib/prometheus/alerts.yaml pass
# promtool and fire when they should; the Grafana dashboard asks only for
# metrics the exporter emits.  The exporter and promtool are required: the
# test fails without them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);

my $root = abs_path(dirname(__FILE__) . '/..');
my $queries = "$root/contrib/prometheus/queries.yaml";
my $alerts = "$root/contrib/prometheus/alerts.yaml";
my $dashboard = "$root/contrib/grafana/outbox.json";

my $exporter_bin = '/usr/bin/prometheus-postgres-exporter';
my ($promtool) = grep { -x $_ } (map { "$_/promtool" } split /:/, ($ENV{PATH} // '')), '/usr/bin/promtool';

# ---- what the test needs: missing tools are failures, not skips
my $have = 1;
ok(-x $exporter_bin, "the exporter is installed ($exporter_bin)") or $have = 0;
ok(defined $promtool, 'promtool is installed') or $have = 0;
for my $f ($queries, $alerts, $dashboard)
{
	ok(-r $f, "$f exists") or $have = 0;
}
unless ($have)
{
	diag('install them with scripts/install-deps.sh (prometheus-postgres-exporter, prometheus)');
	done_testing();
	exit 1;
}

# Every outbox metric the exporter is expected to emit, with its type.
my %expected_types = (
	outbox_extension_installed => 'gauge',
	outbox_worker_processes => 'gauge',
	(map { ("outbox_stats_$_" => 'gauge') } qw(available leased delayed dead oldest_available_age_seconds)),
	outbox_stats_offered_total => 'counter',
	outbox_stats_acked_total => 'counter',
	(map { ("outbox_${_}_total" => 'counter') }
		qw(offered claimed acked nacked expired dead_lettered redriven)),
	(map { ("outbox_${_}_seconds" => 'gauge') }
		qw(delivery_p50 delivery_p90 delivery_p99 delivery_max wait_p50 wait_p99)),
	outbox_wait_seconds => 'histogram',
	outbox_delivery_seconds => 'histogram',
);

# ---- a node with the extension, three topics and a known history
my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.launcher_naptime = 1
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE SCHEMA partman;
	CREATE EXTENSION pg_partman SCHEMA partman;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('orders');
	SELECT outbox.create_topic('mail');
	SELECT outbox.create_topic('idle');
	CREATE DATABASE plain;
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'postgres'"),
	'an outbox worker serves the database');

# Claims $n events of $topic with a lease of 10 minutes: [id, lease_token]...
sub claim
{
	my ($topic, $n) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT id, lease_token FROM outbox.claim('$topic', $n, '10 minutes') ORDER BY id");
	return map { [ split /\|/ ] } grep { length } split /\n/, $out;
}

# orders: 6 offered, 5 claimed: 2 acked, 1 nacked (retry in an hour), 1 dead
# lettered, 1 still leased; 1 never claimed.
$node->safe_psql('postgres', q{
	SELECT outbox.offer('orders', jsonb_build_object('n', i)) FROM generate_series(1, 6) i;
});
my @o = claim('orders', 5);
is(scalar @o, 5, 'five orders claimed');
is($node->safe_psql('postgres', "SELECT outbox.ack($o[0][0], '$o[0][1]')"), 't', 'first ack');
is($node->safe_psql('postgres', "SELECT outbox.ack($o[1][0], '$o[1][1]')"), 't', 'second ack');
$node->safe_psql('postgres', "SELECT outbox.nack($o[2][0], '$o[2][1]', 'broken', '1 hour')");
is($node->safe_psql('postgres', "SELECT outbox.dead_letter($o[3][0], '$o[3][1]', 'poison')"),
	't', 'one order dead lettered');

# mail: 3 offered, 1 claimed, dead lettered and redriven; nothing acked.
$node->safe_psql('postgres', q{
	SELECT outbox.offer('mail', jsonb_build_object('n', i)) FROM generate_series(1, 3) i;
});
my @m = claim('mail', 1);
is(scalar @m, 1, 'one mail claimed');
is($node->safe_psql('postgres', "SELECT outbox.dead_letter($m[0][0], '$m[0][1]', 'bounced')"),
	't', 'and dead lettered');
is($node->safe_psql('postgres', "SELECT outbox.redrive(ARRAY[$m[0][0]]::bigint[], 'fixed')"),
	'1', 'and redriven');

# ---- the exporter, on a free loopback port, for the database with the
# extension and one without it.  Only flags that every exporter version
# since 0.11 knows: its built-in metrics stay on, as they do by default.
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my $dsn = sprintf('host=%s port=%d user=%s dbname=postgres sslmode=disable', $node->host, $node->port, $user);
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $exporter_log = "$PostgreSQL::Test::Utils::tmp_check/exporter.log";
my @exporter_cmd = ($exporter_bin, "--web.listen-address=127.0.0.1:$http_port",
	"--extend.query-path=$queries", '--auto-discover-databases', '--include-databases=postgres,plain');
note("starting @exporter_cmd");
my $parent = $$;
my $exporter_pid = fork() // die "fork: $!";
if ($exporter_pid == 0)
{
	$ENV{DATA_SOURCE_NAME} = $dsn;
	delete @ENV{ grep { /^PG_EXPORTER_/ } keys %ENV };
	open STDIN, '<', '/dev/null';
	open STDOUT, '>', $exporter_log or POSIX::_exit(126);
	open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
	exec @exporter_cmd or POSIX::_exit(127);
}

sub exporter_running
{
	return $exporter_pid && waitpid($exporter_pid, WNOHANG) == 0;
}

# Stops the exporter: SIGTERM, then SIGKILL after 10 s.
sub stop_exporter
{
	return unless exporter_running();
	kill 'TERM', $exporter_pid;
	my $until = time + 10;
	while (time < $until)
	{
		return unless exporter_running();
		sleep 0.1;
	}
	kill 'KILL', $exporter_pid;
	waitpid($exporter_pid, 0);
}
END
{
	local $?;
	stop_exporter() if $$ == $parent;
}

my $http = HTTP::Tiny->new(timeout => 30, proxy => undef, http_proxy => undef, no_proxy => ['127.0.0.1']);
my $url = "http://127.0.0.1:$http_port/metrics";

# Scrapes the exporter: {name => [{labels => {...}, value => '...'}...]} and
# {name => type}; also the text.
sub scrape
{
	my $res = $http->get($url);
	return unless $res->{success};
	my (%samples, %types);
	for my $line (split /\n/, $res->{content})
	{
		if ($line =~ /^# TYPE (\S+) (\S+)/)
		{
			$types{$1} = $2;
			next;
		}
		next if $line =~ /^#/ || $line !~ /\S/;
		$line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/ or next;
		my ($name, $labels, $value) = ($1, $2 // '', $3);
		my %l;
		while ($labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)
		{
			my ($k, $v) = ($1, $2);
			$v =~ s/\\n/\n/g;
			$v =~ s/\\(.)/$1/g;
			$l{$k} = $v;
		}
		push @{ $samples{$name} }, { labels => \%l, value => $value };
	}
	return { samples => \%samples, types => \%types, text => $res->{content} };
}

my $s;
my $deadline = time + 60;
while (time < $deadline)
{
	$s = scrape();
	last if $s && $s->{samples}{outbox_stats_available};
	last unless exporter_running();
	sleep 0.5;
}
ok($s && $s->{samples}{outbox_stats_available}, 'the exporter serves the outbox metrics')
  or diag("exporter log:\n" . (-e $exporter_log ? slurp_file($exporter_log) : '(none)'));
unless ($s && $s->{samples}{outbox_stats_available})
{
	done_testing();
	exit 1;
}

# The samples of $name whose labels include %want.
sub find_samples
{
	my ($snap, $name, %want) = @_;
	return grep {
		my $l = $_->{labels};
		!grep { !defined $l->{$_} || $l->{$_} ne $want{$_} } keys %want
	} @{ $snap->{samples}{$name} // [] };
}

# The value of the one sample of $name with labels %want (undef if not one).
sub value_of
{
	my ($snap, $name, %want) = @_;
	my @f = find_samples($snap, $name, %want);
	return @f == 1 ? $f[0]{value} : undef;
}

# Compares an exported value with what psql printed: NULL is NaN; numbers
# within $tol (relative).
sub same_value
{
	my ($got, $db, $tol) = @_;
	return 0 unless defined $got;
	return $got eq 'NaN' if $db eq '';
	return 0 if $got !~ /^[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)$/;
	$tol //= 1e-9;
	return abs($got - $db) <= $tol * (abs($db) > 1 ? abs($db) : 1);
}

my $stats_sql = q{
	SELECT topic, available, leased, delayed, dead,
		   extract(epoch FROM oldest_available_age)::float8, offered, acked
	FROM outbox.stats ORDER BY topic};
my $metrics_sql = q{
	SELECT topic, offered, claimed, acked, nacked, expired, dead_lettered, redriven,
		   extract(epoch FROM delivery_p50)::float8, extract(epoch FROM delivery_p90)::float8,
		   extract(epoch FROM delivery_p99)::float8, extract(epoch FROM delivery_max)::float8,
		   extract(epoch FROM wait_p50)::float8, extract(epoch FROM wait_p99)::float8
	FROM outbox.metrics ORDER BY topic};
my $hist_sql = q{
	SELECT topic, histogram, array_to_string(le, ','), array_to_string(bucket, ','), sum, count
	FROM outbox.metrics_histograms() ORDER BY topic, histogram};

sub rows
{
	my ($sql) = @_;
	return map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, $node->safe_psql('postgres', $sql);
}

# The server's figures just before and just after one scrape: nothing moves
# in between but the ages.
my @stats_before = rows($stats_sql);
my @metrics_before = rows($metrics_sql);
my @hist_before = rows($hist_sql);
$s = scrape();
ok($s, 'a second scrape answers');
# Kept for whoever reads the test's output.
open my $sf, '>', "$PostgreSQL::Test::Utils::tmp_check/metrics.txt" or die "metrics.txt: $!";
print $sf $s->{text};
close $sf;
my @stats_after = rows($stats_sql);
my @metrics_after = rows($metrics_sql);
my @hist_after = rows($hist_sql);

# ---- names, types and labels
for my $name (sort keys %expected_types)
{
	is($s->{types}{$name}, $expected_types{$name}, "$name is exported as a $expected_types{$name}");
}
is_deeply([ sort grep { /^outbox_/ } keys %{ $s->{types} } ], [ sort keys %expected_types ],
	'and no other outbox metric');
for my $name (sort grep { /^outbox_/ } keys %{ $s->{samples} })
{
	my @no_db = grep { !length($_->{labels}{datname} // '') } @{ $s->{samples}{$name} };
	is(scalar @no_db, 0, "every $name sample has a datname label");
	next if $name =~ /^outbox_(?:extension|worker)_/;
	my @no_topic = grep { !length($_->{labels}{topic} // '') } @{ $s->{samples}{$name} };
	is(scalar @no_topic, 0, "every $name sample has a topic label");
}
is(value_of($s, 'pg_exporter_user_queries_load_error', filename => $queries), '0',
	'the exporter loaded queries.yaml');

# ---- the extension and the worker, in each database
my $extversion = $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'outbox'");
is(value_of($s, 'outbox_extension_installed', datname => 'postgres'), '1',
	'the extension is installed in postgres');
is(value_of($s, 'outbox_extension_installed', datname => 'postgres', version => $extversion), '1',
	"with its version ($extversion) as a label");
is(value_of($s, 'outbox_extension_installed', datname => 'plain'), '0', 'but not in plain');
is(value_of($s, 'outbox_worker_processes', datname => 'postgres'),
	$node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox worker' AND datname = 'postgres'"),
	'the worker count of postgres is that of pg_stat_activity');
is(value_of($s, 'outbox_worker_processes', datname => 'postgres'), '1', 'one worker serves postgres');
is(value_of($s, 'outbox_worker_processes', datname => 'plain'), '0', 'none serves plain');
is(scalar(find_samples($s, 'outbox_stats_available', datname => 'plain')), 0,
	'plain has no topic figures');

# ---- outbox.stats
my @stat_cols = qw(available leased delayed dead oldest_available_age_seconds offered_total acked_total);
is(scalar @stats_before, 3, 'stats has the three topics');
is_deeply([ map { $_->[0] } @stats_before ], [qw(idle mail orders)], 'by name');
for my $i (0 .. $#stats_before)
{
	my ($b, $a) = ($stats_before[$i], $stats_after[$i]);
	my $topic = $b->[0];
	for my $c (0 .. $#stat_cols)
	{
		my $name = "outbox_stats_$stat_cols[$c]";
		my $got = value_of($s, $name, datname => 'postgres', topic => $topic);
		if ($stat_cols[$c] eq 'oldest_available_age_seconds' && $b->[$c + 1] ne '')
		{
			ok(defined $got && $a->[$c + 1] ne '' && $got >= $b->[$c + 1] - 1e-6 && $got <= $a->[$c + 1] + 1e-6,
				"$name\{topic=\"$topic\"\} is the age the server shows")
			  or diag("exported " . ($got // 'nothing') . ", server $b->[$c + 1] .. $a->[$c + 1]");
			next;
		}
		is($a->[$c + 1], $b->[$c + 1], "stats.$stat_cols[$c] of $topic holds still");
		ok(same_value($got, $b->[$c + 1]), "$name\{topic=\"$topic\"\} is what outbox.stats shows")
		  or diag("exported " . ($got // 'nothing') . ", server '$b->[$c + 1]'");
	}
}
my %st = map { $_->[0] => $_ } @stats_before;
is(join('|', @{ $st{orders} }[1 .. 4, 6, 7]), '1|1|1|1|6|2',
	'orders: 1 available, 1 leased, 1 delayed, 1 dead; 6 offered, 2 acked');
isnt($st{orders}[5], '', 'orders has an oldest available age');
is(join('|', @{ $st{idle} }[1 .. 5]), '0|0|0|0|', 'idle holds nothing');
is(value_of($s, 'outbox_stats_oldest_available_age_seconds', datname => 'postgres', topic => 'idle'),
	'NaN', 'and its oldest available age is NaN');

# ---- outbox.metrics
my @metric_cols = ((map { "${_}_total" } qw(offered claimed acked nacked expired dead_lettered redriven)),
	(map { "${_}_seconds" } qw(delivery_p50 delivery_p90 delivery_p99 delivery_max wait_p50 wait_p99)));
is_deeply([ map { $_->[0] } @metrics_before ], [qw(idle mail orders)], 'metrics has the three topics');
is_deeply(\@metrics_after, \@metrics_before, 'metrics holds still around the scrape');
for my $r (@metrics_before)
{
	my $topic = $r->[0];
	for my $c (0 .. $#metric_cols)
	{
		my $name = "outbox_$metric_cols[$c]";
		my $got = value_of($s, $name, datname => 'postgres', topic => $topic);
		ok(same_value($got, $r->[$c + 1]), "$name\{topic=\"$topic\"\} is what outbox.metrics shows")
		  or diag("exported " . ($got // 'nothing') . ", server '$r->[$c + 1]'");
	}
}
my %me = map { $_->[0] => $_ } @metrics_before;
is(join('|', @{ $me{orders} }[1 .. 7]), '6|5|2|1|0|1|0',
	'orders: 6 offered, 5 claimed, 2 acked, 1 nacked, none expired, 1 dead lettered, none redriven');
ok(!grep({ $_ eq '' } @{ $me{orders} }[8 .. 13]), 'orders has every latency');
ok(!grep({ $_ eq '' || $_ < 0 } @{ $me{orders} }[8 .. 11]) &&
	$me{orders}[8] <= $me{orders}[9] && $me{orders}[9] <= $me{orders}[10] && $me{orders}[10] <= $me{orders}[11],
	'its delivery percentiles are ordered: p50 <= p90 <= p99 <= max');
is(join('|', @{ $me{mail} }[2, 3, 6, 7]), '1|0|1|1', 'mail: 1 claimed, none acked, 1 dead lettered, 1 redriven');
is(join('|', @{ $me{mail} }[8 .. 11]), '|||', 'mail has no delivery latency');
is(value_of($s, 'outbox_delivery_p50_seconds', datname => 'postgres', topic => 'mail'), 'NaN',
	'which is exported as NaN');
is(join('|', @{ $me{idle} }[1 .. 13]), '0|0|0|0|0|0|0||||||', 'idle: zero counters, no latencies');

# ---- the histograms
my @expected_le = map { 0.001 * 2**$_ } -4 .. 22;
is_deeply(\@hist_after, \@hist_before, 'the histograms hold still around the scrape');
is_deeply([ map { "$_->[0]/$_->[1]" } @hist_before ],
	[qw(idle/delivery idle/wait mail/delivery mail/wait orders/delivery orders/wait)],
	'metrics_histograms has a delivery and a wait row per topic');
my %hist;
for my $r (@hist_before)
{
	my ($topic, $h, $le, $bucket, $sum, $count) = @$r;
	$hist{"$topic/$h"} = { count => $count, sum => $sum };
	my @le = split /,/, $le;
	my @bucket = split /,/, $bucket;
	my $metric = "outbox_${h}_seconds";
	my %sel = (datname => 'postgres', topic => $topic);

	is(scalar @le, 27, "$topic/$h: 27 bounds");
	ok(!grep({ abs($le[$_] - $expected_le[$_]) > 1e-9 * $expected_le[$_] } 0 .. $#le),
		"$topic/$h: bounds 62.5 us to 4194.304 s, doubling");
	is(scalar @bucket, scalar @le, "$topic/$h: one count per bound");
	ok(!grep({ $bucket[$_] < $bucket[ $_ - 1 ] } 1 .. $#bucket) && $bucket[-1] <= $count,
		"$topic/$h: the counts are cumulative, at most the count");

	my @series = find_samples($s, "${metric}_bucket", %sel);
	is(scalar @series, 28, "${metric}_bucket\{topic=\"$topic\"\}: one series per bound and +Inf");
	my %by_le = map { $_->{labels}{le} => $_->{value} } @series;
	for my $i (0 .. $#le)
	{
		my ($k) = grep { $_ ne '+Inf' && abs($_ - $le[$i]) <= 1e-9 * $le[$i] } keys %by_le;
		ok(defined $k && $by_le{$k} eq $bucket[$i], "${metric}_bucket\{topic=\"$topic\",le=\"$le[$i]\"\} = $bucket[$i]")
		  or diag('exported ' . (defined $k ? $by_le{$k} : 'nothing'));
	}
	is($by_le{'+Inf'}, $count, "${metric}_bucket\{topic=\"$topic\",le=\"+Inf\"\} is the count");
	is(value_of($s, "${metric}_count", %sel), $count, "${metric}_count\{topic=\"$topic\"\} = $count");
	ok(same_value(value_of($s, "${metric}_sum", %sel), $sum), "${metric}_sum\{topic=\"$topic\"\} = $sum");
}
is($hist{'orders/delivery'}{count}, '2', 'orders: two deliveries measured (the acks)');
is($hist{'orders/wait'}{count}, '5', 'orders: five waits measured (the first claims)');
cmp_ok($hist{'orders/delivery'}{sum}, '>', 0, 'which took some time');
is($hist{'mail/delivery'}{count}, '0', 'mail: no delivery');
is($hist{'mail/wait'}{count}, '1', 'mail: one wait');
is($hist{'idle/wait'}{count} . '|' . $hist{'idle/delivery'}{count}, '0|0', 'idle: nothing measured');

# ---- reset_metrics zeroes what the exporter shows
$node->safe_psql('postgres', 'SELECT outbox.reset_metrics()');
my $r = scrape();
is(value_of($r, 'outbox_offered_total', datname => 'postgres', topic => 'orders'), '0',
	'after reset_metrics the counters are 0');
is(value_of($r, 'outbox_delivery_seconds_count', datname => 'postgres', topic => 'orders'), '0',
	'and the histograms are empty');
is(value_of($r, 'outbox_delivery_p50_seconds', datname => 'postgres', topic => 'orders'), 'NaN',
	'and the percentiles NaN');

# ---- the alerting rules
my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ $promtool, 'check', 'rules', $alerts ], '<', \undef, '>', \$out, '2>', \$err);
ok($ok, 'promtool check rules accepts alerts.yaml') or diag("$out\n$err");
like($out, qr/SUCCESS: 5 rules found/, 'five rules');

# What fires when, on made-up series: a topic whose oldest event ages by a
# minute a minute, whose dead letters grow at 21m and whose leases expire
# for 10% of the claims; a quiet topic; a database whose worker goes at 11m;
# a database without the extension.
my $rules_test = "$PostgreSQL::Test::Utils::tmp_check/alerts_test.yaml";
open my $fh, '>', $rules_test or die "$rules_test: $!";
print $fh <<"EOT";
rule_files:
  - '$alerts'
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'outbox_stats_oldest_available_age_seconds{server="s",datname="d",topic="late"}'
        values: '0+60x60'
      - series: 'outbox_stats_oldest_available_age_seconds{server="s",datname="d",topic="quiet"}'
        values: '1x60'
      - series: 'outbox_dead_lettered_total{server="s",datname="d",topic="late"}'
        values: '0x20 1x40'
      - series: 'outbox_dead_lettered_total{server="s",datname="d",topic="quiet"}'
        values: '3x60'
      - series: 'outbox_expired_total{server="s",datname="d",topic="late"}'
        values: '0+10x60'
      - series: 'outbox_claimed_total{server="s",datname="d",topic="late"}'
        values: '0+100x60'
      - series: 'outbox_expired_total{server="s",datname="d",topic="quiet"}'
        values: '0+1x60'
      - series: 'outbox_claimed_total{server="s",datname="d",topic="quiet"}'
        values: '0+100x60'
      - series: 'outbox_extension_installed{server="s",datname="d",version="1.0"}'
        values: '1x60'
      - series: 'outbox_worker_processes{server="s",datname="d"}'
        values: '1x10 0x50'
      - series: 'outbox_extension_installed{server="s",datname="plain",version=""}'
        values: '0x60'
      - series: 'outbox_worker_processes{server="s",datname="plain"}'
        values: '0x60'
    promql_expr_test:
      - expr: count by (alertname, datname, topic) (ALERTS{alertstate="firing"})
        eval_time: 4m
        exp_samples: []
      - expr: count by (alertname, datname, topic) (ALERTS{alertstate="firing"})
        eval_time: 25m
        exp_samples:
          - labels: '{alertname="OutboxBacklogOld", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxDeadLettersGrowing", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxLeaseExpiriesRising", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxWorkerMissing", datname="d"}'
            value: 1
      - expr: count by (alertname, datname, topic) (ALERTS{alertstate="firing"})
        eval_time: 45m
        exp_samples:
          - labels: '{alertname="OutboxBacklogOld", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxBacklogVeryOld", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxLeaseExpiriesRising", datname="d", topic="late"}'
            value: 1
          - labels: '{alertname="OutboxWorkerMissing", datname="d"}'
            value: 1
EOT
close $fh;
($out, $err) = ('', '');
$ok = IPC::Run::run([ $promtool, 'test', 'rules', $rules_test ], '<', \undef, '>', \$out, '2>', \$err);
ok($ok, 'the alerts fire when they should (promtool test rules)') or diag("$out\n$err");

# Metric names a PromQL expression reads: what is left once strings, label
# matchers, ranges, grouping clauses, function calls and keywords are gone.
sub promql_metrics
{
	my ($e) = @_;
	$e =~ s/"(?:[^"\\]|\\.)*"//g;
	$e =~ s/'(?:[^'\\]|\\.)*'//g;
	$e =~ s/\{[^}]*\}//g;
	$e =~ s/\[[^\]]*\]//g;
	$e =~ s/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)//g;
	my @names;
	while ($e =~ /(?<![\w.:\$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)
	{
		next if defined $2;
		next if $1 =~ /^(?:and|or|unless|bool|offset|by|without|on|ignoring|group_left|group_right|inf|nan)$/i;
		push @names, $1;
	}
	return @names;
}

my %emitted = map { $_ => 1 } keys %{ $s->{samples} };

# Every metric an alert reads is emitted.
my $alerts_text = slurp_file($alerts);
my @alert_metrics;
while ($alerts_text =~ /^\s+expr:\s*(\|\s*\n((?:\s{10,}.*\n)+)|(.*))/mg)
{
	push @alert_metrics, promql_metrics(defined $2 ? $2 : $3);
}
cmp_ok(scalar(grep { /^outbox_/ } @alert_metrics), '>', 5, 'the alerts read outbox metrics');
for my $m (sort { $a cmp $b } keys %{ { map { $_ => 1 } @alert_metrics } })
{
	ok($emitted{$m}, "alerts.yaml reads $m, which the exporter emits");
}

# ---- the Grafana dashboard
my $dash = eval { decode_json(slurp_file($dashboard)) };
ok($dash, 'outbox.json is JSON') or diag($@);
my @exprs;
my $walk;
$walk = sub {
	my ($o) = @_;
	if (ref $o eq 'HASH')
	{
		push @exprs, $o->{expr} if defined $o->{expr} && !ref $o->{expr};
		$walk->($_) for values %$o;
	}
	elsif (ref $o eq 'ARRAY')
	{
		$walk->($_) for @$o;
	}
};
$walk->($dash->{panels});
cmp_ok(scalar @exprs, '>=', 10, 'the dashboard has its queries');
ok(grep({ /histogram_quantile\(.*outbox_delivery_seconds_bucket/ } @exprs), 'it plots delivery percentiles from the histogram');
ok(grep({ /histogram_quantile\(.*outbox_wait_seconds_bucket/ } @exprs), 'and wait percentiles');
my @vars = grep { ($_->{type} // '') eq 'query' } @{ $dash->{templating}{list} // [] };
for my $v (@vars)
{
	my $q = ref $v->{query} ? $v->{query}{query} : $v->{query};
	$q =~ s/^\s*label_values\((.*),\s*\w+\s*\)\s*$/$1/s;
	push @exprs, $q;
}
my %dash_metrics;
$dash_metrics{$_}++ for map { promql_metrics($_) } @exprs;
for my $m (sort keys %dash_metrics)
{
	ok($emitted{$m}, "the dashboard reads $m, which the exporter emits");
}
for my $m (qw(outbox_offered_total outbox_acked_total outbox_stats_available outbox_stats_leased
	outbox_stats_delayed outbox_nacked_total outbox_expired_total outbox_dead_lettered_total outbox_stats_dead))
{
	ok($dash_metrics{$m}, "the dashboard shows $m");
}

# ---- done: the exporter goes
ok(exporter_running(), 'the exporter ran to the end');
stop_exporter();
ok(!exporter_running() && !kill(0, $exporter_pid), 'the exporter is stopped');
$node->stop;
done_testing();
