/* outbox--1.1--1.2.sql: everything that holds user state is dumped with its data */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.2'" to load this file. \quit

/*
 * pg_dump dumps the data of these tables and sequences although they belong
 * to the extension, so that a restore loses no event's state: delayed and
 * retrying events, dead letters with their history, acknowledgements above
 * the watermark, dedupe keys, the redrive log, and the positions of the id
 * sequences (a restored database must never hand out an id it already
 * holds).  The log's partitions are not members of the extension: pg_dump
 * dumps them, with their data, as it finds them.
 */
SELECT pg_catalog.pg_extension_config_dump('outbox.retry', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.redrive_log', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.dedupe', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.acked_0', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.acked_1', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.topic_topic_id_seq', '');

/*
 * The log's partitions each get their own (topic_id, id) index instead of
 * sharing a partitioned one on outbox.event.  A partitioned index of the
 * extension made every restore fail: pg_dump attaches each dumped partition
 * before it creates that partition's index, the attach makes the index
 * already, and the dumped CREATE INDEX then finds it there.  New partitions
 * get the index from maintenance (storage.c); partitions that exist now get
 * it here, before the partitioned index, with the copies it made, goes.
 */
DO $$
DECLARE
	p record;
BEGIN
	FOR p IN SELECT c.oid::pg_catalog.regclass AS part, c.relname
			 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
			 WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass
	LOOP
		EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (topic_id, id)',
								  p.relname OPERATOR(pg_catalog.||) '_scan_new', p.part);
	END LOOP;
	DROP INDEX outbox.event_topic_id_idx;
	-- the names a new partition's index gets
	FOR p IN SELECT c.relname FROM pg_catalog.pg_inherits i
			 JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
			 WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass
	LOOP
		EXECUTE pg_catalog.format('ALTER INDEX outbox.%I RENAME TO %I',
								  p.relname OPERATOR(pg_catalog.||) '_scan_new',
								  p.relname OPERATOR(pg_catalog.||) '_topic_id_id_idx');
	END LOOP;
END
$$;

/*
 * The shared-memory view behind stats names every topic's leased ids and
 * counts, whatever the tenant: only admins call it directly.  stats itself
 * reads it through _stats(), which runs as the extension's owner.
 */
REVOKE EXECUTE ON FUNCTION outbox._shmem_topics() FROM outbox_producer, outbox_consumer;
