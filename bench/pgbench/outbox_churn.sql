-- A relay (claim, then ack, each its own transaction) whose loop also
-- re-offers as many events as it acked (a third transaction): the number of
-- pending events stays constant.
SELECT array_agg(id) AS ids, min(lease_token::text) AS tok, count(*) AS n FROM outbox.claim('t', @BATCH@) \gset
\if :n > 0
SELECT outbox.ack(:ids::bigint[], :tok::uuid);
\set base random(1, 1000000000)
SELECT count(*) FROM (SELECT array_agg(bench.payload(:base::bigint + g)) AS p, array_agg((:base::bigint + g)::text) AS k, array_agg(bench.headers(:base::bigint + g)) AS h FROM generate_series(1, :n::integer) g) a, outbox.offer_batch('t', a.p, keys => a.k, headers => a.h);
\endif
