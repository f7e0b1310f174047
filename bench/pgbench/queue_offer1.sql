\set n random(1, 1000000000)
INSERT INTO bench_queue.outbox (topic, key, payload, headers) VALUES ('t', :n::text, bench.payload(:n), bench.headers(:n));
