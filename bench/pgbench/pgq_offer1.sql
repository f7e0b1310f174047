\set n random(1, 1000000000)
SELECT pgq.insert_event('q', 'order.created', bench.payload_text(:n), :n::text, bench.headers(:n)::text, NULL, NULL);
