-- Helpers the harness installs into every benchmark database.
CREATE SCHEMA bench;

-- The event every case writes: a payload of about 200 bytes of JSON, a key
-- and small headers, all varying with n.
CREATE FUNCTION bench.payload_text(n bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT '{"event":"order.created","order_id":' || n
		|| ',"customer":"customer-' || n % 100000
		|| '","currency":"EUR","total":129.95,"items":[{"sku":"SKU-1001","qty":2,"price":39.99},'
		|| '{"sku":"SKU-2002","qty":1,"price":49.97}],"ship_to":{"country":"DE","zip":"10115"}}'
$$;

CREATE FUNCTION bench.payload(n bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT bench.payload_text(n)::jsonb
$$;

CREATE FUNCTION bench.headers(n bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT ('{"source":"bench","trace_id":"' || n || '"}')::jsonb
$$;

-- Bytes (heap, TOAST and indexes) and dead tuples of every table of a
-- schema, partitions included.
CREATE FUNCTION bench.storage(nsp text, OUT bytes bigint, OUT dead bigint)
LANGUAGE sql AS $$
	SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint,
		   coalesce(sum(s.n_dead_tup), 0)::bigint
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
	WHERE n.nspname = nsp AND c.relkind IN ('r', 'm')
$$;

-- Backlogs, written through each system's own API in chunks of one
-- transaction each.
CREATE PROCEDURE bench.fill_outbox(p_topic text, n bigint, chunk integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
	done bigint := 0;
	k integer;
	base bigint;
BEGIN
	WHILE done < n LOOP
		k := least(chunk, n - done);
		base := (random() * 1e9)::bigint;
		PERFORM count(*)
		FROM (SELECT array_agg(bench.payload(base + g)) AS p,
					 array_agg((base + g)::text) AS k,
					 array_agg(bench.headers(base + g)) AS h
			  FROM generate_series(1, k) g) a,
			 outbox.offer_batch(p_topic, a.p, keys => a.k, headers => a.h);
		COMMIT;
		done := done + k;
	END LOOP;
END
$$;

CREATE PROCEDURE bench.fill_queue(p_topic text, n bigint, chunk integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
	done bigint := 0;
	k integer;
	base bigint;
BEGIN
	WHILE done < n LOOP
		k := least(chunk, n - done);
		base := (random() * 1e9)::bigint;
		INSERT INTO bench_queue.outbox (topic, key, payload, headers)
		SELECT p_topic, (base + g)::text, bench.payload(base + g), bench.headers(base + g)
		FROM generate_series(1, k) g;
		COMMIT;
		done := done + k;
	END LOOP;
END
$$;

-- PgQ: one transaction and one tick per 100 events, so that the consumer
-- finds batches of about 100 events.
CREATE PROCEDURE bench.fill_pgq(n bigint, chunk integer DEFAULT 100)
LANGUAGE plpgsql AS $$
DECLARE
	done bigint := 0;
	k integer;
	base bigint;
BEGIN
	WHILE done < n LOOP
		k := least(chunk, n - done);
		base := (random() * 1e9)::bigint;
		PERFORM pgq.insert_event('q', 'order.created', bench.payload_text(base + g),
								 (base + g)::text, bench.headers(base + g)::text, NULL, NULL)
		FROM generate_series(1, k) g;
		COMMIT;
		PERFORM pgq.ticker('q');
		COMMIT;
		done := done + k;
	END LOOP;
END
$$;

-- Deliver every event of a topic: claim and ack in batches, each in its
-- own transaction, as a relay would.
CREATE PROCEDURE bench.drain_outbox(p_topic text, chunk integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
	ids bigint[];
	tok text;
BEGIN
	LOOP
		SELECT array_agg(c.id), min(c.lease_token::text) INTO ids, tok
		FROM outbox.claim(p_topic, chunk) c;
		COMMIT;
		EXIT WHEN ids IS NULL;
		PERFORM outbox.ack(ids, tok::uuid);
		COMMIT;
	END LOOP;
END
$$;

-- Latency: when each event's COMMIT was issued, and when claim returned it.
CREATE UNLOGGED TABLE bench.lat_sent (id bigint PRIMARY KEY, at timestamptz NOT NULL);
CREATE UNLOGGED TABLE bench.lat_recv (id bigint PRIMARY KEY, at timestamptz NOT NULL);

-- n events, one per transaction, at rate per second.
CREATE PROCEDURE bench.lat_produce(p_topic text, n integer, rate integer)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	eid bigint;
BEGIN
	FOR i IN 1..n LOOP
		eid := outbox.offer(p_topic, bench.payload(i), key => i::text, headers => bench.headers(i));
		INSERT INTO bench.lat_sent VALUES (eid, clock_timestamp());
		COMMIT;
		PERFORM pg_sleep(greatest(0, extract(epoch FROM t0 + i * interval '1 second' / rate - clock_timestamp())));
	END LOOP;
END
$$;

-- A relay waiting in claim until n events arrived or the deadline passed.
CREATE PROCEDURE bench.lat_consume(p_topic text, n integer, p_wait interval, deadline interval)
LANGUAGE plpgsql AS $$
DECLARE
	stop timestamptz := clock_timestamp() + deadline;
	got integer := 0;
	ids bigint[];
	tok text;
	t timestamptz;
BEGIN
	WHILE got < n AND clock_timestamp() < stop LOOP
		SELECT array_agg(c.id), min(c.lease_token::text) INTO ids, tok
		FROM outbox.claim(p_topic, 100, wait => p_wait) c;
		t := clock_timestamp();
		COMMIT;
		IF ids IS NOT NULL THEN
			INSERT INTO bench.lat_recv SELECT u, t FROM unnest(ids) u;
			PERFORM outbox.ack(ids, tok::uuid);
			COMMIT;
			got := got + cardinality(ids);
		END IF;
	END LOOP;
END
$$;
