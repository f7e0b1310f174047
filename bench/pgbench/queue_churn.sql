-- A relay of the hand-written outbox (claim, then mark done, each its own
-- transaction) whose loop also inserts as many new rows as it acked (a
-- third transaction): the number of pending rows stays constant.
WITH c AS (UPDATE bench_queue.outbox o SET status = 'processing', locked_until = now() + interval '30 seconds', lock_token = (SELECT gen_random_uuid()), retry_count = o.retry_count + 1 WHERE o.id IN (SELECT p.id FROM bench_queue.outbox p WHERE p.topic = 't' AND p.status = 'pending' ORDER BY p.id LIMIT @BATCH@ FOR UPDATE SKIP LOCKED) RETURNING o.id, o.key, o.payload, o.headers, o.lock_token) SELECT array_agg(id) AS ids, min(lock_token::text) AS tok, count(*) AS n FROM c \gset
\if :n > 0
UPDATE bench_queue.outbox SET status = 'done', locked_until = NULL WHERE id = ANY (:ids::bigint[]) AND lock_token = :tok::uuid AND status = 'processing';
\set base random(1, 1000000000)
INSERT INTO bench_queue.outbox (topic, key, payload, headers) SELECT 't', (:base::bigint + g)::text, bench.payload(:base::bigint + g), bench.headers(:base::bigint + g) FROM generate_series(1, :n::integer) g;
\endif
