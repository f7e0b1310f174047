\set n random(1, 1000000000)
SELECT count(pgq.insert_event('q', 'order.created', bench.payload_text(:n::bigint + g), (:n::bigint + g)::text, bench.headers(:n::bigint + g)::text, NULL, NULL)) FROM generate_series(1, 100) g;
