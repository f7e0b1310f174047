-- A relay of the hand-written outbox: claim a batch (one transaction), then
-- mark it done (another).
WITH c AS (UPDATE bench_queue.outbox o SET status = 'processing', locked_until = now() + interval '30 seconds', lock_token = (SELECT gen_random_uuid()), retry_count = o.retry_count + 1 WHERE o.id IN (SELECT p.id FROM bench_queue.outbox p WHERE p.topic = 't' AND p.status = 'pending' ORDER BY p.id LIMIT @BATCH@ FOR UPDATE SKIP LOCKED) RETURNING o.id, o.key, o.payload, o.headers, o.lock_token) SELECT array_agg(id) AS ids, min(lock_token::text) AS tok, count(*) AS n FROM c \gset
\if :n > 0
UPDATE bench_queue.outbox SET status = 'done', locked_until = NULL WHERE id = ANY (:ids::bigint[]) AND lock_token = :tok::uuid AND status = 'processing';
\endif
