-- An offer to one of @TOPICS@ topics chosen at random.
\set n random(1, 1000000000)
\set k random(1, @TOPICS@)
SELECT outbox.offer('m' || :k, bench.payload(:n), key => :n::text, headers => bench.headers(:n));
