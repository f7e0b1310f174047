\set n random(1, 1000000000)
INSERT INTO bench_plain.event (topic, key, payload, headers) SELECT 't', (:n::bigint + g)::text, bench.payload(:n::bigint + g), bench.headers(:n::bigint + g) FROM generate_series(1, 100) g;
