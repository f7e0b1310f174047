-- Baseline 3: PgQ (Debian's postgresql-15-pgq3).  Events go in with
-- pgq.insert_event; a consumer takes batches with pgq.next_batch,
-- pgq.get_batch_events and pgq.finish_batch.  Batches are cut by ticks: the
-- harness calls pgq.ticker() itself (what pgqd does), and a tick is due
-- after 100 events so that a batch holds about 100 of them.
CREATE EXTENSION IF NOT EXISTS pgq;
SELECT pgq.create_queue('q');
SELECT pgq.set_queue_config('q', 'ticker_max_count', '100');
SELECT pgq.register_consumer('q', 'c');
