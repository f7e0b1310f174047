\set n random(1, 1000000000)
INSERT INTO bench_cap.orders (customer, currency, total, items, ship_to) VALUES ('customer-' || (:n::bigint % 100000), 'EUR', 129.95, '[{"sku":"SKU-1001","qty":2,"price":39.99},{"sku":"SKU-2002","qty":1,"price":49.97}]', '{"country":"DE","zip":"10115"}');
