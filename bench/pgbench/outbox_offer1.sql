\set n random(1, 1000000000)
SELECT outbox.offer('t', bench.payload(:n), key => :n::text, headers => bench.headers(:n));
