-- offer writes an event straight into the partition that takes it when the
-- partition is plain, and through an INSERT statement when it is not (a
-- trigger, a check constraint): either way the row, its indexes and its
-- TOASTed payload are right.
SET client_min_messages = warning;
SELECT outbox.create_topic('li');
SELECT outbox.offer('li', '{"n": 1}', key => 'first') AS first_id \gset
SELECT tableoid::regclass AS part FROM outbox.event WHERE id = :first_id \gset

-- a payload that arrives TOASTed in another table, which then goes away
CREATE TABLE big (j jsonb);
INSERT INTO big SELECT jsonb_build_object('n', 2, 'blob', string_agg(md5(g::text), '')) FROM generate_series(1, 40000) g;
SELECT outbox.offer('li', j, key => 'big') > 0 AS offered FROM big;
DROP TABLE big;

-- a check constraint on the partition: offers go through INSERT, which
-- enforces it
ALTER TABLE :part ADD CONSTRAINT no_bad CHECK (key IS DISTINCT FROM 'bad');
\set VERBOSITY terse
SELECT outbox.offer('li', '{"n": 3}', key => 'bad');
\set VERBOSITY default
SELECT outbox.offer('li', '{"n": 3}', key => 'good') > 0 AS offered;
ALTER TABLE :part DROP CONSTRAINT no_bad;

-- a trigger on the partition: offers go through INSERT, which fires it
CREATE TABLE seen (id bigint);
CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO public.seen VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER note AFTER INSERT ON :part FOR EACH ROW EXECUTE FUNCTION note_insert();
SELECT outbox.offer('li', '{"n": 4}', key => 'watched') AS watched_id \gset
SELECT count(*) AS seen FROM seen WHERE id = :watched_id;
DROP TRIGGER note ON :part;
SELECT outbox.offer('li', '{"n": 5}', key => 'unwatched') > 0 AS offered;
SELECT count(*) AS seen_after_drop FROM seen;

-- every event is found by the claim's index scan, in order, intact
SELECT key, payload->>'n' AS n, length(payload->>'blob') AS blob_length, attempt
FROM outbox.claim('li', 10) ORDER BY id;

SELECT outbox.drop_topic('li', force => true);
DROP TABLE seen;
DROP FUNCTION note_insert();
