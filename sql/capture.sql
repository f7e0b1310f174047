-- Capture triggers: every row inserted, updated or deleted in a captured
-- table becomes one event of the topic, offered in the changing transaction.
\set SHOW_CONTEXT never
SELECT outbox.create_topic('cap');
SELECT topic_id AS cap_id FROM outbox.topic WHERE name = 'cap' AND parent_id IS NULL \gset

CREATE TABLE cap_orders (id int PRIMARY KEY, item text, qty int, note jsonb);
SELECT outbox.capture('cap_orders', 'cap');
SELECT * FROM outbox.captures;
SELECT tgname = 'outbox_capture_' || :cap_id AS trigger_named_by_topic_id,
	   pg_get_triggerdef(oid) LIKE '%AFTER INSERT OR DELETE OR UPDATE ON public.cap_orders FOR EACH ROW EXECUTE FUNCTION outbox._capture(''cap'', ''cap_orders'')' AS definition
FROM pg_trigger WHERE tgrelid = 'cap_orders'::regclass;

-- insert, update, delete: key, type and payload of each event, in order
INSERT INTO cap_orders VALUES (1, 'apple', 2, '{"gift": true}'), (2, 'pear "green"', 1, NULL);
UPDATE cap_orders SET qty = 5 WHERE id = 1;
DELETE FROM cap_orders WHERE id = 2;
SELECT key, type, payload FROM outbox.claim('cap', 10) ORDER BY id;
-- nothing else in the topic
SELECT count(*) AS events FROM outbox.event WHERE topic_id = :cap_id;

-- a rolled-back change leaves no event; a savepoint rolled back neither
BEGIN;
INSERT INTO cap_orders VALUES (3, 'plum', 1, NULL);
ROLLBACK;
BEGIN;
INSERT INTO cap_orders VALUES (4, 'fig', 1, NULL);
SAVEPOINT s;
UPDATE cap_orders SET qty = 9 WHERE id = 4;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT key, type, payload->'after'->'qty' AS qty FROM outbox.event
WHERE topic_id = :cap_id ORDER BY id OFFSET 4;

-- a primary key of several columns: a JSON array of the values as text, in
-- the key's column order (region, then sku)
CREATE TABLE cap_stock (sku int, region text, n int, PRIMARY KEY (region, sku));
SELECT outbox.capture('cap_stock', 'cap');
INSERT INTO cap_stock VALUES (42, 'eu', 7), (7, 'north "x"', 1);
UPDATE cap_stock SET n = 8 WHERE sku = 42;
DELETE FROM cap_stock WHERE sku = 7;
SELECT key, key::jsonb->>0 AS first, type, payload FROM outbox.event
WHERE topic_id = :cap_id AND type LIKE 'cap_stock.%' ORDER BY id;

-- a partitioned table, captured at its root: its partitions (one with its
-- columns in another order, one made after the capture) report the root's
-- name; a row moved to another partition is a delete and an insert
CREATE TABLE cap_measures (id bigint, region text, v numeric, PRIMARY KEY (id, region))
	PARTITION BY LIST (region);
CREATE TABLE cap_measures_eu PARTITION OF cap_measures FOR VALUES IN ('eu');
CREATE TABLE cap_measures_us (v numeric, region text NOT NULL, id bigint NOT NULL);
ALTER TABLE cap_measures ATTACH PARTITION cap_measures_us FOR VALUES IN ('us');
SELECT outbox.capture('cap_measures', 'cap');
CREATE TABLE cap_measures_ap PARTITION OF cap_measures FOR VALUES IN ('ap');
INSERT INTO cap_measures VALUES (1, 'eu', 1.5), (2, 'us', 2.5), (3, 'ap', 3.5);
UPDATE cap_measures SET v = 4.5 WHERE id = 2;
UPDATE cap_measures SET region = 'us' WHERE id = 1;
DELETE FROM cap_measures WHERE id = 3;
SELECT key, type, payload FROM outbox.event
WHERE topic_id = :cap_id AND type LIKE 'cap_measures.%' ORDER BY id;
-- the captured tables; the partitions carry clones of the root's trigger
SELECT c.* FROM outbox.captures c JOIN pg_class r ON r.oid = c.source
WHERE NOT r.relispartition ORDER BY c.source::text;
SELECT tgrelid::regclass AS partition FROM pg_trigger
WHERE tgname = 'outbox_capture_' || :cap_id AND tgparentid <> 0 ORDER BY tgrelid::regclass::text;

-- names are quoted wherever capture() writes them
CREATE SCHEMA "cap schema";
CREATE TABLE "cap schema"."it's ""odd""" (id int PRIMARY KEY);
SELECT outbox.capture('"cap schema"."it''s ""odd"""', 'cap');
INSERT INTO "cap schema"."it's ""odd""" VALUES (1);
SELECT key, type FROM outbox.event WHERE topic_id = :cap_id AND type LIKE 'it%';
SELECT * FROM outbox.captures WHERE topic = 'cap' AND source::text LIKE '%odd%';
SELECT outbox.uncapture('"cap schema"."it''s ""odd"""', 'cap');
DROP SCHEMA "cap schema" CASCADE;

-- refusals (try() reports the SQLSTATE)
CREATE TABLE cap_nopk (a int);
CREATE VIEW cap_view AS SELECT * FROM cap_orders;
CREATE SEQUENCE cap_seq;
SELECT n, try(s) AS result FROM unnest(ARRAY[
	$$SELECT outbox.capture('cap_orders', 'nope')$$,
	$$SELECT outbox.capture('cap_orders', 'bad name!')$$,
	$$SELECT outbox.capture('cap_nopk', 'cap')$$,
	$$SELECT outbox.capture('cap_measures_eu', 'cap')$$,
	$$SELECT outbox.capture('cap_view', 'cap')$$,
	$$SELECT outbox.capture('cap_seq', 'cap')$$,
	$$SELECT outbox.capture('outbox.topic', 'cap')$$,
	$$SELECT outbox.capture('cap_orders', 'cap')$$,
	$$SELECT outbox.capture(NULL, 'cap')$$,
	$$SELECT outbox.capture('cap_orders', NULL)$$,
	$$SELECT outbox.uncapture('cap_orders', 'nope')$$,
	$$SELECT outbox.uncapture('cap_measures_eu', 'cap')$$,
	$$SELECT outbox.uncapture('cap_view', 'cap')$$
]) WITH ORDINALITY AS t(s, n);
-- their hints
SELECT outbox.capture('cap_nopk', 'cap');
SELECT outbox.capture('cap_measures_eu', 'cap');
SELECT outbox.capture('cap_orders', 'nope');

-- the trigger refuses to fire any other way than capture() attaches it
CREATE TABLE cap_misuse (id int PRIMARY KEY);
CREATE TRIGGER misuse_stmt AFTER INSERT ON cap_misuse
	FOR EACH STATEMENT EXECUTE FUNCTION outbox._capture('cap', 'cap_misuse');
SELECT try($$INSERT INTO cap_misuse VALUES (1)$$);
DROP TRIGGER misuse_stmt ON cap_misuse;
CREATE TRIGGER misuse_before BEFORE INSERT ON cap_misuse
	FOR EACH ROW EXECUTE FUNCTION outbox._capture('cap', 'cap_misuse');
SELECT try($$INSERT INTO cap_misuse VALUES (1)$$);
DROP TRIGGER misuse_before ON cap_misuse;
CREATE TRIGGER misuse_args AFTER INSERT ON cap_misuse
	FOR EACH ROW EXECUTE FUNCTION outbox._capture('cap');
SELECT try($$INSERT INTO cap_misuse VALUES (1)$$);
DROP TRIGGER misuse_args ON cap_misuse;
-- TRUNCATE is not captured
SELECT count(*) AS before_truncate FROM outbox.event WHERE topic_id = :cap_id \gset
TRUNCATE cap_orders;
SELECT count(*) - :before_truncate AS truncate_events FROM outbox.event WHERE topic_id = :cap_id;
-- a captured table that lost its primary key refuses row changes
ALTER TABLE cap_stock DROP CONSTRAINT cap_stock_pkey;
SELECT try($$INSERT INTO cap_stock VALUES (1, 'eu', 1)$$) AS without_key;
ALTER TABLE cap_stock ADD PRIMARY KEY (region, sku);

-- who may capture: the owner of the table, or a role with both TRIGGER and
-- SELECT on it, checked as the calling role (not the extension's owner
-- the function runs as)
CREATE ROLE regress_cap_admin;
GRANT outbox_admin TO regress_cap_admin;
CREATE TABLE cap_secret (id int PRIMARY KEY, pin text);
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS no_rights;
SELECT try($$SELECT outbox.uncapture('cap_orders', 'cap')$$) AS no_rights_to_uncapture;
RESET ROLE;
GRANT TRIGGER ON cap_secret TO regress_cap_admin;
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS trigger_only;
RESET ROLE;
REVOKE TRIGGER ON cap_secret FROM regress_cap_admin;
GRANT SELECT ON cap_secret TO regress_cap_admin;
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS select_only;
RESET ROLE;
GRANT TRIGGER ON cap_secret TO regress_cap_admin;
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS trigger_and_select;
SELECT outbox.uncapture('cap_secret', 'cap') AS uncaptured;
RESET ROLE;
REVOKE ALL ON cap_secret FROM regress_cap_admin;
ALTER TABLE cap_secret OWNER TO regress_cap_admin;
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS owner;
SELECT outbox.uncapture('cap_secret', 'cap') AS uncaptured;
RESET ROLE;
-- a role bound to a tenant manages no captures
SELECT outbox.grant_tenant('regress_cap_admin', 'acme');
SET ROLE regress_cap_admin;
SELECT try($$SELECT outbox.capture('cap_secret', 'cap')$$) AS bound;
RESET ROLE;
SELECT outbox.revoke_tenant('regress_cap_admin', 'acme');
DROP TABLE cap_secret;
DROP ROLE regress_cap_admin;

-- uncapture: true, then false; no events afterwards
SELECT outbox.uncapture('cap_orders', 'cap') AS uncaptured;
SELECT outbox.uncapture('cap_orders', 'cap') AS uncaptured_again;
SELECT count(*) AS before_uncaptured FROM outbox.event WHERE topic_id = :cap_id \gset
INSERT INTO cap_orders VALUES (10, 'kiwi', 1, NULL);
SELECT count(*) - :before_uncaptured AS events_after_uncapture
FROM outbox.event WHERE topic_id = :cap_id;
SELECT c.* FROM outbox.captures c JOIN pg_class r ON r.oid = c.source
WHERE NOT r.relispartition ORDER BY c.source::text;

-- a bulk insert: one event per row, every key once
SELECT outbox.create_topic('cap_bulk');
SELECT topic_id AS bulk_id FROM outbox.topic WHERE name = 'cap_bulk' AND parent_id IS NULL \gset
CREATE TABLE cap_bulk (id int PRIMARY KEY, v text);
SELECT outbox.capture('cap_bulk', 'cap_bulk');
INSERT INTO cap_bulk SELECT g, 'v' || g FROM generate_series(1, 100000) g;
SELECT count(*) AS events, count(DISTINCT key) AS keys,
	   bool_and(type = 'cap_bulk.insert') AS all_inserts,
	   bool_and(payload->'after'->>'id' = key AND payload->'after'->>'v' = 'v' || key) AS payloads_match
FROM outbox.event WHERE topic_id = :bulk_id;
SELECT count(*) AS missing_keys FROM generate_series(1, 100000) g
WHERE NOT EXISTS (SELECT 1 FROM outbox.event e WHERE e.topic_id = :bulk_id AND e.key = g::text);

-- the rows become JSON with the writer's rights: a cast of a column's type
-- to json, written by the table's owner, runs as that owner, never as the
-- extension's owner
CREATE ROLE cap_caster;
CREATE TABLE cap_seen (who text);
GRANT INSERT ON cap_seen TO cap_caster;
CREATE TYPE cap_mood AS ENUM ('calm');
ALTER TYPE cap_mood OWNER TO cap_caster;
CREATE FUNCTION cap_mood_json(m cap_mood) RETURNS json LANGUAGE sql
	AS $$ INSERT INTO cap_seen VALUES (current_user::text) RETURNING to_json(m::text) $$;
ALTER FUNCTION cap_mood_json(cap_mood) OWNER TO cap_caster;
CREATE CAST (cap_mood AS json) WITH FUNCTION cap_mood_json(cap_mood);
CREATE TABLE cap_moods (id int PRIMARY KEY, mood cap_mood);
ALTER TABLE cap_moods OWNER TO cap_caster;
SELECT outbox.capture('cap_moods', 'cap_bulk');
GRANT USAGE ON SCHEMA public TO cap_caster;
SET ROLE cap_caster;
INSERT INTO cap_moods VALUES (1, 'calm');
RESET ROLE;
SELECT who FROM cap_seen;
SELECT payload->'after' AS after FROM outbox.event
WHERE topic_id = :bulk_id AND type = 'cap_moods.insert';
SELECT outbox.uncapture('cap_moods', 'cap_bulk');
DROP TABLE cap_moods, cap_seen;
DROP CAST (cap_mood AS json);
DROP FUNCTION cap_mood_json(cap_mood);
DROP TYPE cap_mood;
REVOKE USAGE ON SCHEMA public FROM cap_caster;
DROP ROLE cap_caster;

-- row-level security that applies to the caller: refused
CREATE ROLE cap_rls_admin;
GRANT outbox_admin TO cap_rls_admin;
CREATE TABLE cap_rls (id int PRIMARY KEY, owner text);
ALTER TABLE cap_rls ENABLE ROW LEVEL SECURITY;
GRANT SELECT, TRIGGER ON cap_rls TO cap_rls_admin;
GRANT USAGE ON SCHEMA public TO cap_rls_admin;
SET ROLE cap_rls_admin;
SELECT try($$SELECT outbox.capture('cap_rls', 'cap_bulk')$$) AS rls_refused;
RESET ROLE;
DROP TABLE cap_rls;
REVOKE USAGE ON SCHEMA public FROM cap_rls_admin;
DROP ROLE cap_rls_admin;

-- a captured topic cannot be dropped, not even by force
SELECT try($$SELECT outbox.drop_topic('cap_bulk', force => true)$$) AS drop_captured;

-- clean up: uncapture, then the topics can go
SELECT c.source, outbox.uncapture(c.source, c.topic) FROM outbox.captures c
JOIN pg_class r ON r.oid = c.source WHERE NOT r.relispartition ORDER BY c.source::text;
SELECT count(*) AS captures_left FROM outbox.captures;
DROP TABLE cap_orders, cap_stock, cap_measures, cap_nopk, cap_misuse, cap_bulk CASCADE;
DROP SEQUENCE cap_seq;
SELECT outbox.drop_topic('cap', force => true);
SELECT outbox.drop_topic('cap_bulk', force => true);
