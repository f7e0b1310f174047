-- One transaction offers to 100 topics (the suites run with
-- outbox.max_topics = 8): all commit, each once; rolled back, nothing stays.
SET client_min_messages = warning;
SELECT count(outbox.create_topic('mt' || i)) FROM generate_series(1, 100) i;

BEGIN;
SELECT count(outbox.offer('mt' || i, jsonb_build_object('i', i))) AS offered
FROM generate_series(1, 100) i;
ROLLBACK;
SELECT count(*) AS events_after_rollback FROM outbox.event e
JOIN outbox.topic t USING (topic_id) WHERE t.name LIKE 'mt%';
SELECT sum(available) AS available, sum(offered) AS offered
FROM outbox.stats WHERE topic LIKE 'mt%';

BEGIN;
SELECT count(outbox.offer('mt' || i, jsonb_build_object('i', i))) AS offered
FROM generate_series(1, 100) i;
-- a subtransaction that offers to 50 of them again and rolls back
SAVEPOINT s;
SELECT count(outbox.offer('mt' || i, jsonb_build_object('again', i)))
FROM generate_series(1, 50) i;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT sum(available) AS available, sum(offered) AS offered
FROM outbox.stats WHERE topic LIKE 'mt%';

-- each topic hands out its event once, claimed and acked one topic at a
-- time: each transaction needs one slot, which its commit frees
CREATE TABLE got (topic text, i int);
CREATE PROCEDURE drain_mt() LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	FOR k IN 1..100 LOOP
		FOR r IN SELECT * FROM outbox.claim('mt' || k, 10, '1 minute') LOOP
			INSERT INTO got VALUES (r.topic, (r.payload->>'i')::int);
			PERFORM outbox.ack(ARRAY[r.id], r.lease_token);
		END LOOP;
		COMMIT;
	END LOOP;
END $$;
CALL drain_mt();
SELECT count(*) AS claimed, count(DISTINCT topic) AS topics,
	   bool_and(topic = 'mt' || i) AS each_its_own
FROM got;
SELECT sum(available) AS available, sum(leased) AS leased, sum(acked) AS acked
FROM outbox.stats WHERE topic LIKE 'mt%';

SELECT count(outbox.drop_topic('mt' || i)) FROM generate_series(1, 100) i;
DROP PROCEDURE drain_mt();
DROP TABLE got;
