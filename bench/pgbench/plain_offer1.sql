\set n random(1, 1000000000)
INSERT INTO bench_plain.event (topic, key, payload, headers) VALUES ('t', :n::text, bench.payload(:n), bench.headers(:n));
