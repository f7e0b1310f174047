-- A relay: claim a batch (one transaction), then ack it (another).
SELECT array_agg(id) AS ids, min(lease_token::text) AS tok, count(*) AS n FROM outbox.claim('t', @BATCH@) \gset
\if :n > 0
SELECT outbox.ack(:ids::bigint[], :tok::uuid);
\endif
