\set n random(1, 1000000000)
SELECT count(*) FROM (SELECT array_agg(bench.payload(:n::bigint + g)) AS p, array_agg((:n::bigint + g)::text) AS k, array_agg(bench.headers(:n::bigint + g)) AS h FROM generate_series(1, 100) g) a, outbox.offer_batch('t', a.p, keys => a.k, headers => a.h);
