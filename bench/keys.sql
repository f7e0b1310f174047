-- Helpers of the ordered and hotkey cases (bench/run.sh), installed into
-- their databases next to bench/helpers.sql.
CREATE SCHEMA bench_keys;

-- What the relays did, one row per batch: events claimed (n), acked (acked:
-- ack's count), claimed not of the hot key (m), when the ack was made, and
-- the WAL position then.  Unlogged: it writes no WAL of its own.
CREATE UNLOGGED TABLE bench_keys.done (
	n		integer NOT NULL,
	acked	integer NOT NULL,
	m		integer NOT NULL,
	at	timestamptz NOT NULL,
	lsn	pg_lsn NOT NULL
);

-- Events number first .. first + n - 1 of a backlog, offered to p_topic in
-- chunks of one transaction each.  Event number i has key 'k' || (i %
-- nkeys); with hot, every other event (the even numbers) has key 'hot'
-- instead, and the others take the keys in turn: event 2j + 1 has key
-- 'k' || (j % nkeys).  So a backlog with hot holds, besides its hot events,
-- the same keys in the same order as one of half its size without.
CREATE PROCEDURE bench_keys.fill(p_topic text, first bigint, n bigint, nkeys integer,
								 hot boolean DEFAULT false, chunk integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
	done bigint := 0;
	k integer;
	base bigint;
BEGIN
	WHILE done < n LOOP
		k := least(chunk, n - done);
		base := first + done;
		PERFORM count(*)
		FROM (SELECT array_agg(bench.payload(i) ORDER BY i) AS p,
					 array_agg(CASE WHEN NOT hot THEN 'k' || i % nkeys
									WHEN i % 2 = 0 THEN 'hot'
									ELSE 'k' || (i / 2) % nkeys END ORDER BY i) AS k,
					 array_agg(bench.headers(i) ORDER BY i) AS h
			  FROM generate_series(base, base + k - 1) i) a,
			 outbox.offer_batch(p_topic, a.p, keys => a.k, headers => a.h);
		COMMIT;
		done := done + k;
	END LOOP;
END
$$;
