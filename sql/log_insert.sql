-- offer writes an event straight into the partition that takes it when the
-- partition is plain, and through an INSERT statement when it is not (a
-- trigger, a check constraint): either way the row, its indexes and its
-- TOASTed payload are right.  Constraints and triggers go on every
-- partition, so that the test holds whatever the date and even when the
-- run crosses midnight; no output names a partition.
SET client_min_messages = warning;
SELECT outbox.create_topic('li');
SELECT outbox.offer('li', '{"n": 1}', key => 'first') AS first_id \gset

-- runs a statement, with %s standing for each partition of outbox.event
CREATE FUNCTION on_each_partition(stmt text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	p regclass;
	n int := 0;
BEGIN
	FOR p IN SELECT inhrelid::regclass FROM pg_inherits
			 WHERE inhparent = 'outbox.event'::regclass LOOP
		EXECUTE format(stmt, p);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

-- a payload that arrives TOASTed in another table, which then goes away
CREATE TABLE big (j jsonb);
INSERT INTO big SELECT jsonb_build_object('n', 2, 'blob', string_agg(md5(g::text), '')) FROM generate_series(1, 40000) g;
SELECT md5(j::text) AS big_md5 FROM big \gset
SELECT outbox.offer('li', j, key => 'big') > 0 AS offered FROM big;
DROP TABLE big;

-- a check constraint on the partitions: offers go through INSERT, which
-- enforces it
SELECT on_each_partition('ALTER TABLE %s ADD CONSTRAINT no_bad CHECK (key IS DISTINCT FROM ''bad'')') > 0 AS constrained;
DO $$
DECLARE
	c text;
BEGIN
	PERFORM outbox.offer('li', '{"n": 3}', key => 'bad');
	RAISE WARNING 'the check constraint was not enforced';
EXCEPTION WHEN check_violation THEN
	GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME;
	RAISE WARNING 'refused by constraint %', c;
END
$$;
SELECT outbox.offer('li', '{"n": 3}', key => 'good') > 0 AS offered;
SELECT on_each_partition('ALTER TABLE %s DROP CONSTRAINT no_bad') > 0 AS unconstrained;

-- a trigger on the partitions: offers go through INSERT, which fires it
CREATE TABLE seen (id bigint);
CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO public.seen VALUES (NEW.id); RETURN NEW; END $$;
SELECT on_each_partition('CREATE TRIGGER note AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION note_insert()') > 0 AS watched;
SELECT outbox.offer('li', '{"n": 4}', key => 'watched') AS watched_id \gset
SELECT count(*) AS seen FROM seen WHERE id = :watched_id;
SELECT on_each_partition('DROP TRIGGER note ON %s') > 0 AS unwatched;
SELECT outbox.offer('li', '{"n": 5}', key => 'unwatched') > 0 AS offered;
SELECT count(*) AS seen_after_drop FROM seen;

-- every event is found by the claim's index scan, in order, intact
SELECT key, payload->>'n' AS n, length(payload->>'blob') AS blob_length,
	md5(payload::text) = :'big_md5' AS big_intact, attempt
FROM outbox.claim('li', 10) ORDER BY id;

SELECT outbox.drop_topic('li', force => true);
DROP TABLE seen;
DROP FUNCTION note_insert();
DROP FUNCTION on_each_partition(text);
