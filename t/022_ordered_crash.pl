# An ordered topic across crashes.  Before the first crash (an immediate
# stop) each key of topic 'o' is left in another state:
#   a  three consecutive events claimed under one lease; the first acked,
#      the other two still leased (an ack of the third alone is refused);
#   b  two events claimed; the first nacked with a 6 s retry_after, the
#      second handed back with it (its ack is refused);
#   c  three events acked by one call naming them latest first; the fourth
#      claimed and still leased;
#   d  the first event delayed by 8 s;
#   e  two events claimed together, then acked one call each;
#   f  as b, with a retry due at once;
#   g  the first dead-lettered while the others waited behind it;
#   h  the first claimed, its ack made in a transaction still open at the
#      crash;
#   i  the first nacked with a 10 s retry_after; the second delayed by 4 s,
#      so that it falls due while the first still waits;
#   and events without a key, one of them leased.  On a second ordered
# topic, o2, a delayed event falls due while the earlier event of its key
# is available: a claim of one event takes the earlier one; the later
# waits while it is leased, also across the crash.
# While every key's first event is leased or delayed, a claim gets nothing.
# Before the crash, after the restart, and after a second crash in the
# middle of the drain (leases held, one event nacked with a 4 s retry), a
# claim of everything (in a transaction that rolls back) returns, for each
# key, nothing while its first unsettled event is leased, waiting for its
# retry or delayed, and otherwise a run of its unsettled events from the
# first one on; every key whose first unsettled event is neither leased
# nor waiting gives something, also right after a restart.  The drain
# claims twice before each round of acks and checks every claim against
# the same rule, with the events the first claim holds counted as leased,
# and a claim that gets nothing while such a key exists is an error; it
# acks one event per call, each ack must count.  At the end: each key's events were acked in id order, the events
# in retry at the crash before the later ones of their key, the ack left
# open at the crash did not count, nothing acked or dead before the crash
# came again, every other event was acked exactly once, and the topic is
# empty.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

srand(22);
my $node = PostgreSQL::Test::Cluster->new('ordered_crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.reap_interval = '200ms'
});
$node->start;
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	CREATE EXTENSION outbox CASCADE;
	SELECT outbox.create_topic('o', max_attempts => 10, ordered => true);
});

# Events are named after their key and place: 'a1' is the first event of
# key 'a'; names starting with 'n' have no key.
my (%name, %id);
sub key_of { return $_[0] =~ /^n/ ? 'n' : substr($_[0], 0, 1); }

# The model: per key, the names of its unsettled events in id order; per
# key, the time before which its first event is not due (a retry or a
# delay); the names leased now.
my (%unsettled, %due, %leased);

# Offers events in one transaction, in the order given; $extra adds
# arguments to the offer of one event.
sub offer
{
	my ($names, $extra) = @_;
	$extra //= {};
	my $sql = join(",\n", map {
		my $k = key_of($_) eq 'n' ? 'NULL' : "'" . key_of($_) . "'";
		my $x = $extra->{$_} ? ", $extra->{$_}" : '';
		"outbox.offer('o', jsonb_build_object('name', '$_'), key => $k$x)"
	} @$names);
	my @ids = split /\n/, $node->safe_psql('postgres', "SELECT unnest(ARRAY[$sql])");
	die 'offer: wrong number of ids' unless @ids == @$names;
	for my $i (0 .. $#ids)
	{
		$name{ $ids[$i] } = $names->[$i];
		$id{ $names->[$i] } = $ids[$i];
		push @{ $unsettled{ key_of($names->[$i]) } }, $names->[$i];
	}
}

# A committed claim of up to $n events: (token, names in id order).
sub claim
{
	my ($n) = @_;
	my $out = $node->safe_psql('postgres', qq{
		SELECT coalesce(min(lease_token::text), '') || ' ' || coalesce(string_agg(id::text, ',' ORDER BY id), '')
		FROM outbox.claim('o', $n, lease => '1 hour')});
	my ($tok, $ids) = split / /, $out, -1;
	my @names = map { $name{$_} // "?$_" } split /,/, $ids;
	$leased{$_} = 1 for @names;
	return ($tok, @names);
}

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# What is wrong with the events a claim returned, given the model: for each
# key, a run of its unsettled events from the first, and only if that one
# is neither leased nor before its due time; events without a key
# unsettled and not leased.  $leased: the events leased before the claim;
# $returned_at: a time after the claim returned.
sub judge
{
	my ($got, $leased, $returned_at, $must_all) = @_;
	my (%got, @bad);
	push @{ $got{ key_of($_) } }, $_ for @$got;
	for my $k (sort keys %got)
	{
		my @g = @{ $got{$k} };
		my @u = @{ $unsettled{$k} // [] };
		if ($k eq 'n')
		{
			my %u = map { $_ => 1 } @u;
			my @wrong = grep { !$u{$_} || $leased->{$_} } @g;
			push @bad, "no key: got @wrong, not unsettled or leased" if @wrong;
		}
		elsif (!@u || "@g" ne "@u[0 .. ($#g < $#u ? $#g : $#u)]" || @g > @u)
		{
			push @bad, "$k: got @g, want a run from the first of (@u)";
		}
		elsif ($leased->{ $u[0] })
		{
			push @bad, "$k: got @g while $u[0] is leased";
		}
		elsif ($due{$k} && $returned_at < $due{$k})
		{
			push @bad, "$k: got @g before $u[0] was due";
		}
	}
	if ($must_all)
	{
		# every key free for certain gave something; every event without a
		# key not leased came
		for my $k (sort keys %unsettled)
		{
			my @u = @{ $unsettled{$k} };
			next unless @u;
			if ($k eq 'n')
			{
				my @want = grep { !$leased->{$_} } @u;
				push @bad, "no key: got @{ $got{n} // [] }, want @want"
				  if "@{[ sort @{ $got{n} // [] } ]}" ne "@{[ sort @want ]}";
			}
			elsif (!$got{$k} && !$leased->{ $u[0] } && (!$due{$k} || $returned_at > $due{$k} + 2))
			{
				push @bad, "$k: nothing, want a run from $u[0]";
			}
		}
	}
	return @bad;
}

# Every event a claim can get now, by claims in a transaction that rolls
# back (which leases nothing), judged by the model.
sub check_available
{
	my ($label) = @_;
	my $ids = $node->safe_psql('postgres', q{
		BEGIN;
		CREATE TEMP TABLE peek (id bigint) ON COMMIT DROP;
		DO $$BEGIN
			LOOP
				INSERT INTO peek SELECT id FROM outbox.claim('o', 1000, lease => '1 hour');
				EXIT WHEN NOT FOUND;
			END LOOP;
		END$$;
		SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM peek;
		ROLLBACK;
	});
	my @got = map { $name{$_} // "?$_" } split /,/, $ids;
	is(join('; ', judge(\@got, \%leased, time, 1)), '', "$label: what a claim can get, key by key")
	  or diag("got: @got");
}

# Marks an event settled (acked or dead) in the model.
my %acked_order;
sub settle
{
	my ($n, $acked) = @_;
	my $k = key_of($n);
	@{ $unsettled{$k} } = grep { $_ ne $n } @{ $unsettled{$k} };
	delete $leased{$n};
	delete $due{$k};
	push @{ $acked_order{$k} }, $n if $acked;
}

sub crash
{
	my ($label) = @_;
	$node->stop('immediate');
	$node->start;
	%leased = ();
	note("$label: restarted");
}

# --- the states before the first crash

offer([qw(a1 a2 a3 a4)]);
my ($ta, @got) = claim(3);
is("@got", 'a1 a2 a3', 'a: one claim takes three consecutive events of one key');

offer([qw(c1 c2 c3 c4 c5)]);
my $tc;
($tc, @got) = claim(3);
is("@got", 'c1 c2 c3', 'c: c1 to c3 in one claim');

offer([qw(e1 e2 e3 e4 e5)]);
my $te;
($te, @got) = claim(2);
is("@got", 'e1 e2', 'e: e1 and e2 in one claim');

offer([qw(f1 f2 f3)]);
my $tf;
($tf, @got) = claim(2);
is("@got", 'f1 f2', 'f: f1 and f2 in one claim');

offer([qw(g1 g2 g3)]);
my $tg;
($tg, @got) = claim(1);
is("@got", 'g1', 'g: g1 claimed');

offer([qw(h1 h2 h3)]);
my $th;
($th, @got) = claim(1);
is("@got", 'h1', 'h: h1 claimed');

offer([qw(b1 b2 b3 b4)]);
my $tb;
($tb, @got) = claim(2);
is("@got", 'b1 b2', 'b: b1 and b2 in one claim');

offer([qw(i1)]);
my $ti;
($ti, @got) = claim(1);
is("@got", 'i1', 'i: i1 claimed');
offer([qw(i2 i3)], { i2 => "available_at => now() + interval '4 seconds'" });

offer([qw(n1)]);
my $tn;
($tn, @got) = claim(1);
is("@got", 'n1', 'n1 (no key) claimed');

$due{d} = time + 8;
offer([qw(d1 d2 d3)], { d1 => "available_at => now() + interval '8 seconds'" });
is(q1(q{SELECT count(*) FROM outbox.claim('o', 100)}), '0',
	'every key waits behind a leased or delayed event: a claim gets nothing');

is(q1("SELECT outbox.ack($id{a3}, '$ta')"), 'f', 'a: a3 cannot be acked before a2 of the same lease');
is(q1("SELECT outbox.ack($id{a1}, '$ta')"), 't', 'a: a1 acked');
settle('a1', 1);

is(q1("SELECT outbox.ack(ARRAY[$id{c3}, $id{c2}, $id{c1}]::bigint[], '$tc')"), '3',
	'c: one ack call naming c3, c2, c1 settles all three');
settle($_, 1) for qw(c1 c2 c3);
($tc, @got) = claim(1);
is("@got", 'c4', 'c: then c4 comes');

$due{b} = time + 6;
is(q1("SELECT outbox.nack($id{b1}, '$tb', 'failed', retry_after => '6 seconds')"), 'retry', 'b: b1 nacked');
delete $leased{$_} for qw(b1 b2);
is(q1("SELECT outbox.ack($id{b2}, '$tb')"), 'f', 'b: b2 was handed back with b1, its ack is refused');

$due{i} = time + 10;
is(q1("SELECT outbox.nack($id{i1}, '$ti', 'failed', retry_after => '10 seconds')"), 'retry',
	'i: i1 nacked, due after i2');
delete $leased{i1};

# h1's ack, in a transaction that is still open at the crash
my $open = $node->background_psql('postgres');
$open->query_safe('BEGIN');
is($open->query_safe("SELECT outbox.ack($id{h1}, '$th')"), 't', 'h: h1 acked in a transaction left open');

is(q1("SELECT outbox.ack($id{e1}, '$te')"), 't', 'e: e1 acked');
is(q1("SELECT outbox.ack($id{e2}, '$te')"), 't', 'e: e2 acked by another call');
settle($_, 1) for qw(e1 e2);

is(q1("SELECT outbox.nack($id{f1}, '$tf', 'failed', retry_after => '0')"), 'retry', 'f: f1 nacked, due at once');
delete $leased{$_} for qw(f1 f2);
is(q1("SELECT outbox.ack($id{f2}, '$tf')"), 'f', 'f: f2 was handed back with f1, its ack is refused');

is(q1("SELECT outbox.dead_letter($id{g1}, '$tg', 'poison')"), 't', 'g: g1 dead-lettered');
settle('g1', 0);

offer([qw(n2 n3)]);

# o2: j2 falls due after j1 was offered, while j1 is available
$node->safe_psql('postgres', q{SELECT outbox.create_topic('o2', ordered => true)});
q1(q{SELECT outbox.offer('o2', '{"name": "j1"}', key => 'j')});
q1(q{SELECT outbox.offer('o2', '{"name": "j2"}', key => 'j', available_at => now() + interval '1 second')});
sleep 1.5;
my $o2_claim = q{SELECT coalesce(string_agg(payload->>'name', ','), '') FROM outbox.claim('o2', 1, lease => '1 hour')};
my $o2_first = '';
for (1 .. 100)
{
	$o2_first = q1($o2_claim);
	last if $o2_first ne '';
	sleep 0.1;
}
is($o2_first, 'j1', 'o2: the first event a claim of one takes is j1, not j2 that fell due since');
is(q1($o2_claim), '', 'o2: j2 waits while j1 is leased');

my %settled_before = map { $_ => 1 } qw(a1 c1 c2 c3 e1 e2 g1);
check_available('before the crash');

# --- the first crash

crash('crash 1');
eval { $open->quit };
check_available('after the first crash');

# o2: j1 lost its lease at the crash; it comes first, then j2 (claims of
# one, each acked at once)
my $o2_take = q{WITH c AS (SELECT * FROM outbox.claim('o2', 1, lease => '1 hour'))
	SELECT coalesce(string_agg(payload->>'name', ','), '') || ' ' || count(*) FILTER (WHERE outbox.ack(id, lease_token)) FROM c};
my @o2;
for (1 .. 100)
{
	my $got = q1($o2_take);
	push @o2, $got if $got ne ' 0';
	last if @o2 >= 2;
	sleep 0.1;
}
push @o2, q1($o2_take);
is(join(', ', @o2), 'j1 1, j2 1,  0', 'o2 after the crash: j1, then j2, each acked, then nothing');

# --- the drain, with a crash in the middle

my (@problems, %delivered);
my $rounds = 0;
my $acks_counted = 0;
my $acks_made = 0;

# One round: two claims, the second while the first is held, then every
# event acked, one call each, in id order.  False if both claims were empty.
sub round
{
	$rounds++;
	my @claims;
	for my $which (1, 2)
	{
		my %before = %leased;
		my $started = time;
		my ($tok, @names) = claim(1 + int(rand(4)));
		my $returned = time;
		push @problems, map { "round $rounds, claim $which: $_" } judge(\@names, \%before, $returned, 0);
		# a key free for certain while the claim ran: it must get something
		my @free = grep {
			my @u = $_ eq 'n' ? (grep { !$before{$_} } @{ $unsettled{n} }) : @{ $unsettled{$_} };
			@u && !$before{ $u[0] } && (!$due{$_} || $started > $due{$_} + 2)
		} sort keys %unsettled;
		push @problems, "round $rounds: a claim got nothing while these keys were free: @free"
		  if !@names && @free;
		note(sprintf('round %d at %.1f s: claim %d: %s', $rounds, $returned - $^T, $which, "@names"));
		push @{ $delivered{ key_of($_) } }, $_ for @names;
		push @claims, [ $tok, @names ];
	}
	my $any = 0;
	for my $c (@claims)
	{
		my ($tok, @names) = @$c;
		for my $n (@names)
		{
			$any = 1;
			$acks_made++;
			if (q1("SELECT outbox.ack($id{$n}, '$tok')") eq 't')
			{
				$acks_counted++;
				settle($n, 1);
			}
			else
			{
				push @problems, "round $rounds: the ack of $n did not count";
				delete $leased{$n};
			}
		}
	}
	return $any;
}

round() for 1 .. 2;

# leases held at the second crash, and a retry not yet due
my %before2 = %leased;
my ($tok2, @held) = claim(5);
push @problems, map { "the claim before the second crash: $_" } judge(\@held, \%before2, time, 0);
my ($nacked) = grep { key_of($_) ne 'n' } @held;
my $nacked_key = defined $nacked ? key_of($nacked) : '';
push @{ $delivered{ key_of($_) } }, $_ for @held;
if (defined $nacked)
{
	$due{$nacked_key} = time + 4;
	note(sprintf('due: %s', join(', ', map { sprintf('%s at %.1f s', $_, $due{$_} - $^T) } sort keys %due)));
	is(q1("SELECT outbox.nack($id{$nacked}, '$tok2', 'failed', retry_after => '4 seconds')"), 'retry',
		"$nacked nacked before the second crash, with the leases of @held held");
}
else
{
	fail("a claim before the second crash found an event with a key (got @held)");
}

crash('crash 2');
check_available('after the second crash');

my $deadline = time + 60;
while (grep { @{ $unsettled{$_} } } keys %unsettled)
{
	last if time > $deadline;
	sleep 0.2 unless round();
}
is(join("\n", @problems), '', 'the drain: every claim got runs from the first unsettled event of keys not held, '
	  . 'each ack counted');
my @left = map { @{ $unsettled{$_} } } sort keys %unsettled;
is("@left", '', 'the drain acked every event that was not settled before the crash');
note("rounds $rounds, acks $acks_made, of which counted $acks_counted");

# each key's events acked in id order, and each once
my @bad_order = grep {
	my @a = @{ $acked_order{$_} };
	join(' ', @a) ne join(' ', sort { $id{$a} <=> $id{$b} } @a)
} sort keys %acked_order;
is("@bad_order", '', 'every key\'s events were acked in id order');
my %times;
$times{$_}++ for map { @{ $acked_order{$_} } } keys %acked_order;
is(join(' ', grep { $times{$_} > 1 } sort keys %times), '', 'no event was acked twice');
is(join(' ', map { $_ eq 'n' ? () : @{ $acked_order{$_} } } sort keys %acked_order),
	'a1 a2 a3 a4 b1 b2 b3 b4 c1 c2 c3 c4 c5 d1 d2 d3 e1 e2 e3 e4 e5 f1 f2 f3 g2 g3 h1 h2 h3 i1 i2 i3',
	'the acks per key, in order: the events in retry at the crash (b1, f1, i1) before the later ones of their key');
is(join(' ', sort @{ $acked_order{n} }), 'n1 n2 n3', 'the events without a key acked');
is(join(' ', grep { $settled_before{$_} } map { @$_ } values %delivered), '',
	'nothing acked or dead before the crash was delivered after it');
is($delivered{h}[0], 'h1', 'h1, whose ack was open at the crash, came again, first of its key');
is($delivered{b}[0], 'b1', 'b1, in retry at the crash, came first of its key');
is($delivered{i}[0], 'i1', 'i1, in retry at the crash, came before i2, which fell due first');
is(q1(q{SELECT count(*) FROM outbox.claim('o', 100)}), '0', 'a claim afterwards gets nothing');
is(q1(q{SELECT available || ' ' || leased || ' ' || delayed || ' ' || dead FROM outbox.stats WHERE topic = 'o'}),
	'0 0 0 1', 'stats: nothing available, leased or delayed; g1 dead');
is(q1(q{SELECT string_agg(payload->>'name', ',') FROM outbox.dead_letters}), 'g1', 'the dead letter is g1');

$node->stop;
done_testing();
