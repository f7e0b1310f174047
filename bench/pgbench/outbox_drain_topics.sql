-- A relay of one of @TOPICS@ topics chosen at random: claim 10 (one
-- transaction), then ack them (another).
\set k random(1, @TOPICS@)
SELECT array_agg(id) AS ids, min(lease_token::text) AS tok, count(*) AS n FROM outbox.claim('m' || :k, 10) \gset
\if :n > 0
SELECT outbox.ack(:ids::bigint[], :tok::uuid);
\endif
