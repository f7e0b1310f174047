-- The demo's schema: a business table, an orders topic, a producer that
-- writes an order and offers its event in the same transaction, and a
-- consumer that claims, "publishes" and acks.
CREATE EXTENSION IF NOT EXISTS outbox CASCADE;
SELECT outbox.create_topic('orders');

CREATE SCHEMA demo;

CREATE TABLE demo.orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer   text NOT NULL,
    amount     numeric(10,2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- What each side did, written when it finishes.
CREATE TABLE demo.run_log (
    role     text PRIMARY KEY,
    events   bigint NOT NULL,
    batches  bigint NOT NULL,
    started  timestamptz NOT NULL,
    finished timestamptz NOT NULL
);

-- Producer: for `seconds`, one order per transaction, its event offered in
-- the same transaction as the business row.
CREATE PROCEDURE demo.produce(seconds numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t0       timestamptz := clock_timestamp();
    deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
    n        bigint := 0;
    v_order  bigint;
    v_cust   text;
    v_amount numeric;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        v_cust := 'customer-' || (1 + floor(random() * 20))::int;
        v_amount := round((5 + random() * 495)::numeric, 2);
        INSERT INTO demo.orders (customer, amount) VALUES (v_cust, v_amount)
        RETURNING id INTO v_order;
        PERFORM outbox.offer('orders',
                             jsonb_build_object('order_id', v_order, 'customer', v_cust,
                                                'amount', v_amount),
                             key => v_cust,
                             type => 'order.created');
        COMMIT;
        n := n + 1;
    END LOOP;
    INSERT INTO demo.run_log VALUES ('producer', n, n, t0, clock_timestamp());
    COMMIT;
END
$$;

-- Consumer: claims up to 10 events at a time, waiting briefly when there are
-- none, and acks them.  Runs while the producer does, then drains what is
-- left.  Gives up after `seconds` + 60 s in any case.
CREATE PROCEDURE demo.consume(seconds numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t0       timestamptz := clock_timestamp();
    hard_end timestamptz := clock_timestamp() + make_interval(secs => seconds + 60);
    n        bigint := 0;
    batches  bigint := 0;
    v_ids    bigint[];
    v_token  uuid;
    v_done   boolean;
BEGIN
    LOOP
        -- Read before claiming: once the producer has finished, an empty
        -- claim means everything it offered was consumed.
        v_done := EXISTS (SELECT 1 FROM demo.run_log WHERE role = 'producer');
        SELECT array_agg(c.id), (array_agg(c.lease_token))[1]
          INTO v_ids, v_token
          FROM outbox.claim(topic => 'orders', batch_size => 10, wait => '200 milliseconds') AS c;
        IF v_ids IS NULL THEN
            COMMIT;
            EXIT WHEN v_done OR clock_timestamp() > hard_end;
            CONTINUE;
        END IF;
        -- Publishing to a broker would happen here.
        n := n + outbox.ack(v_ids, v_token);
        batches := batches + 1;
        COMMIT;
    END LOOP;
    INSERT INTO demo.run_log VALUES ('consumer', n, batches, t0, clock_timestamp());
    COMMIT;
END
$$;
