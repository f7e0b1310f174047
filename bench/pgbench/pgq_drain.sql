-- A PgQ consumer: open the next batch, read its events, close it; each
-- step its own transaction.
SELECT coalesce(pgq.next_batch('q', 'c'), 0) AS b \gset
\if :b > 0
SELECT count(*) AS n FROM pgq.get_batch_events(:b) \gset
SELECT pgq.finish_batch(:b);
\endif
