-- Ordered topics: events with the same non-NULL key (and tenant) are
-- delivered in id order.  No event is handed out while an earlier event of
-- its key is leased, waiting for a retry or delayed; a claim skips such keys
-- and fills its batch from the others.  Acks of a key count in id order; a
-- failed event takes the later events of its key in its lease back with
-- it; dead-lettering lets a key move on, redrive puts the event back first.

-- Leases taken here, by the label in each event's payload.
CREATE TEMP TABLE held (seq serial, e text, id bigint, lease_token uuid, attempt int);
-- offers(topic, labels, keys): one event per label, payload {"e": label}
CREATE FUNCTION pg_temp.offers(t text, labels text[], ks text[]) RETURNS bigint
LANGUAGE sql AS $$
	SELECT count(*) FROM outbox.offer_batch(t,
		ARRAY(SELECT jsonb_build_object('e', x) FROM unnest(labels) WITH ORDINALITY AS u(x, n) ORDER BY n),
		keys => ks)
$$;
-- take(topic, n, lease): claims up to n events, keeps their leases, and
-- shows them in id order by label, with #attempt from the second attempt
-- on; '-' when the claim got nothing
CREATE FUNCTION pg_temp.take(t text, n int, l interval DEFAULT '30 seconds') RETURNS text
LANGUAGE sql AS $$
	WITH c AS (SELECT * FROM outbox.claim(t, n, l)),
	h AS (INSERT INTO held (e, id, lease_token, attempt)
		  SELECT c.payload->>'e', c.id, c.lease_token, c.attempt FROM c)
	SELECT coalesce(string_agg(c.payload->>'e' || CASE WHEN c.attempt > 1 THEN '#' || c.attempt ELSE '' END,
							   ' ' ORDER BY c.id), '-') FROM c
$$;
-- ack, nack and dead_letter of one event under its newest lease
CREATE FUNCTION pg_temp.ack1(ev text) RETURNS boolean
LANGUAGE sql AS $$
	SELECT outbox.ack(h.id, h.lease_token) FROM held h WHERE h.e = ev ORDER BY h.seq DESC LIMIT 1
$$;
CREATE FUNCTION pg_temp.nack1(ev text, ra interval) RETURNS text
LANGUAGE sql AS $$
	SELECT outbox.nack(h.id, h.lease_token, 'failed', ra) FROM held h WHERE h.e = ev ORDER BY h.seq DESC LIMIT 1
$$;
CREATE FUNCTION pg_temp.dead1(ev text) RETURNS boolean
LANGUAGE sql AS $$
	SELECT outbox.dead_letter(h.id, h.lease_token, 'poison') FROM held h WHERE h.e = ev ORDER BY h.seq DESC LIMIT 1
$$;
-- acks(labels): one ack(ids) call, ids in the order given, under the
-- newest lease of the first label
CREATE FUNCTION pg_temp.acks(evs text[]) RETURNS int
LANGUAGE sql AS $$
	SELECT outbox.ack(
		ARRAY(SELECT (SELECT h.id FROM held h WHERE h.e = x ORDER BY h.seq DESC LIMIT 1)
			  FROM unnest(evs) WITH ORDINALITY AS u(x, n) ORDER BY n),
		(SELECT h.lease_token FROM held h WHERE h.e = evs[1] ORDER BY h.seq DESC LIMIT 1))
$$;

-- create_topic(ordered => true), shown by the topics view; fixed for good
SELECT outbox.create_topic('ord', ordered => true);
SELECT topic, max_attempts, ordered, per_tenant, delivery FROM outbox.topics WHERE topic = 'ord';
SELECT try($$SELECT outbox.create_topic('ord', ordered => true)$$);
SELECT try($$SELECT outbox.create_topic('ord_null', ordered => NULL)$$);
SELECT count(*) AS ord_null_not_created FROM outbox.topics WHERE topic = 'ord_null';
SELECT try($$UPDATE outbox.topic SET ordered = false WHERE name = 'ord'$$);
-- alter_topic changes the settings of an ordered topic, and leaves it ordered
SELECT outbox.alter_topic('ord', max_attempts => 3);
SELECT topic, max_attempts, ordered FROM outbox.topics WHERE topic = 'ord';
-- the bounds of ordering state in shared memory are set at server start
SELECT name, context, vartype FROM pg_settings
WHERE name IN ('outbox.max_ordered_keys', 'outbox.max_ordered_events') ORDER BY name;

-- a claim skips key a while a1 is leased, and takes key b
SELECT pg_temp.offers('ord', '{a1,a2,b1,a3,b2}', '{a,a,b,a,b}');
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('a1');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.acks('{a3,a2}') AS acked_a;
SELECT pg_temp.acks('{b1,b2}') AS acked_b;

-- one claim takes consecutive events of a key under one lease; their acks
-- count in id order
SELECT pg_temp.offers('ord', '{a4,a5,a6}', '{a,a,a}');
SELECT pg_temp.take('ord', 2);
SELECT count(DISTINCT lease_token) AS leases FROM held WHERE e IN ('a4', 'a5');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('a5') AS a5_before_a4;
SELECT pg_temp.acks('{a5}') AS a5_alone;
SELECT pg_temp.ack1('a4') AS a4;
SELECT pg_temp.ack1('a5') AS a5_after_a4;
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('a6');

-- a nack of a8 takes a9 back with it, not a7 nor b3; a8 comes first again,
-- a9 after it, still on its first attempt
SELECT pg_temp.offers('ord', '{a7,a8,a9,b3}', '{a,a,a,b}');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.nack1('a8', '0');
SELECT pg_temp.ack1('a9') AS a9_handed_back;
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.acks('{a7,b3}') AS acked;
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('a8');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('a9');

-- NULL keys are not ordered: n2 and n3 go while n1 is leased or waits for
-- its retry, and acks of n5 and n4 count in any order
SELECT pg_temp.offers('ord', '{n1,n2,n3}', '{NULL,NULL,NULL}');
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.nack1('n1', '1 hour');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.acks('{n2}') + pg_temp.acks('{n3}') AS acked;
SELECT pg_temp.offers('ord', '{n4,n5}', '{NULL,NULL}');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('n5') AS n5_before_n4, pg_temp.ack1('n4') AS n4;

-- a key waits while its first event waits for a retry ...
SELECT pg_temp.offers('ord', '{c1,c2,b4}', '{c,c,b}');
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.nack1('c1', '1 hour');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('b4');
-- ... or is delayed
SELECT outbox.offer('ord', '{"e": "d1"}', key => 'd', available_at => now() + interval '1 hour') > 0 AS offered;
SELECT pg_temp.offers('ord', '{d2,b5}', '{d,b}');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('b5');

-- dead_letter lets the key move on; a later event of the key in the same
-- lease stays leased
SELECT pg_temp.offers('ord', '{e1,e2,e3,e4}', '{e,e,e,e}');
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.dead1('e1');
SELECT pg_temp.take('ord', 2);
SELECT pg_temp.dead1('e2');
SELECT pg_temp.ack1('e3') AS e3_still_leased;
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('e4');
-- so does a nack with no attempt left
SELECT outbox.alter_topic('ord', max_attempts => 1);
SELECT pg_temp.offers('ord', '{f1,f2}', '{f,f}');
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.nack1('f1', '0');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('f2');
SELECT payload->>'e' AS e, attempts, reason FROM outbox.dead_letters WHERE topic = 'ord' ORDER BY id;

-- redrive puts e1 back at the head of key e: before e5, which was not
-- handed out yet, with its attempts reset
SELECT pg_temp.offers('ord', '{e5}', '{e}');
SELECT outbox.redrive(ARRAY(SELECT id FROM held WHERE e = 'e1' LIMIT 1), 'consumer fixed') AS redriven;
SELECT pg_temp.take('ord', 1);
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('e1');
SELECT pg_temp.take('ord', 10);
SELECT pg_temp.ack1('e5');
SELECT outbox.drop_topic('ord', force => true);

-- lease expiry: reap counts an attempt for g1 and h1, the first events of
-- their keys in the lease, and hands g2 back with g1, uncounted; g1 comes
-- first again, h1 does not wait for it, g2 does
SELECT outbox.create_topic('ord_exp', ordered => true,
	backoff_base => '1 microsecond', backoff_max => '1 microsecond');
SELECT pg_temp.offers('ord_exp', '{g1,g2,h1}', '{g,g,h}');
SELECT pg_temp.take('ord_exp', 10, '1 ms');
SELECT pg_sleep(0.02);
SELECT outbox.reap() > 0 AS reaped;
SELECT pg_temp.ack1('g1') AS g1_after_reap;
SELECT pg_temp.take('ord_exp', 1);
SELECT pg_temp.take('ord_exp', 10);
SELECT pg_temp.ack1('g1');
SELECT pg_temp.take('ord_exp', 10);
SELECT pg_temp.acks('{g2}') + pg_temp.acks('{h1}') AS acked;
SELECT outbox.drop_topic('ord_exp', force => true);

-- a key with a long run held back (a hot key) gets a tenth of a claim while
-- the log has events of other keys to fill it, and the rest of the claim
-- when it has not
SELECT outbox.create_topic('ord_share', ordered => true);
SELECT pg_temp.offers('ord_share', '{h1}', '{h}');
SELECT pg_temp.take('ord_share', 1);
SELECT pg_temp.offers('ord_share', '{h2,h3,h4,h5,h6,h7,h8,h9,h10,h11,h12,h13}', '{h,h,h,h,h,h,h,h,h,h,h,h}');
SELECT pg_temp.offers('ord_share', '{c1,c2,c3,c4,c5,c6,c7,c8,c9,c10,c11,c12}', '{c1,c2,c3,c4,c5,c6,c7,c8,c9,c10,c11,c12}');
SELECT pg_temp.take('ord_share', 1);
SELECT pg_temp.ack1('h1');
SELECT pg_temp.take('ord_share', 10);
SELECT pg_temp.acks('{h2}') + pg_temp.acks('{c1}') + pg_temp.acks('{c2}') AS acked;
SELECT pg_temp.take('ord_share', 20);
SELECT count(DISTINCT lease_token) AS leases FROM held WHERE e IN ('h3', 'h4', 'h5', 'h13');
SELECT pg_temp.take('ord_share', 20);
SELECT outbox.drop_topic('ord_share', force => true);

-- the tenant is part of the key: key k of tenant x and of tenant y are two
-- keys, in a topic that mixes tenants ...
SELECT outbox.create_topic('ord_mix', ordered => true);
SELECT outbox.offer('ord_mix', '{"e": "x1"}', key => 'k', tenant => 'x') > 0 AS offered;
SELECT outbox.offer('ord_mix', '{"e": "y1"}', key => 'k', tenant => 'y') > 0 AS offered;
SELECT outbox.offer('ord_mix', '{"e": "x2"}', key => 'k', tenant => 'x') > 0 AS offered;
SELECT outbox.offer('ord_mix', '{"e": "y2"}', key => 'k', tenant => 'y') > 0 AS offered;
SELECT pg_temp.take('ord_mix', 1);
SELECT pg_temp.take('ord_mix', 10);
SELECT pg_temp.ack1('x1');
SELECT pg_temp.take('ord_mix', 10);
SELECT pg_temp.acks('{x2}') + pg_temp.acks('{y1,y2}') AS acked;
SELECT outbox.drop_topic('ord_mix');

-- ... and in a per-tenant topic
SELECT outbox.create_topic('ord_pt', ordered => true);
SELECT outbox.isolate_tenants('ord_pt');
SELECT topic, ordered, per_tenant FROM outbox.topics WHERE topic = 'ord_pt';
SELECT outbox.offer('ord_pt', '{"e": "x1"}', key => 'k', tenant => 'x') > 0 AS offered;
SELECT outbox.offer('ord_pt', '{"e": "x2"}', key => 'k', tenant => 'x') > 0 AS offered;
SELECT outbox.offer('ord_pt', '{"e": "y1"}', key => 'k', tenant => 'y') > 0 AS offered;
SET outbox.tenant = 'x';
SELECT pg_temp.take('ord_pt', 1);
SELECT pg_temp.take('ord_pt', 10);
SET outbox.tenant = 'y';
SELECT pg_temp.take('ord_pt', 10);
SELECT pg_temp.ack1('y1');
SET outbox.tenant = 'x';
SELECT pg_temp.ack1('x1');
SELECT pg_temp.take('ord_pt', 10);
SELECT pg_temp.ack1('x2');
RESET outbox.tenant;
SELECT outbox.drop_topic('ord_pt');
