/* outbox--1.5--1.6.sql: ordered topics; wal_topics over tenant parts */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.6'" to load this file. \quit

UPDATE outbox._dump_origin SET version = '1.6';

/*
 * create_topic(ordered => true) is taken from this version on: the events
 * of each key (tenant, key) are delivered in id order.  The per-key state
 * lives in shared memory; nothing in the schema changes but the function's
 * description.
 */
COMMENT ON FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean, text, name) IS
	'Make a topic; ordered delivers the events of each key in id order; delivery ''wal'' delivers it through the logical replication slot named by slot';

/*
 * wal_topics.delivered_through covers a per-tenant topic's parts: each part
 * has a watermark of its own, and the parent, which holds no events once
 * its tenants are isolated, kept its first one.  Every event of the topic
 * up to that id is delivered: the lowest watermark of the parts (the
 * parent included) that still have events above it, or, when none has,
 * the highest.  For a topic without parts this is its watermark, as
 * before.
 */
CREATE OR REPLACE VIEW outbox.wal_topics AS
SELECT t.name AS topic, t.slot,
	   -- as walsync.c counts it: a logical slot of this database, done
	   -- being created, not invalidated
	   (r.confirmed_flush_lsn IS NOT NULL
		AND r.wal_status IS DISTINCT FROM 'lost') AS slot_exists,
	   r.confirmed_flush_lsn,
	   (SELECT coalesce(pg_catalog.min(ps.watermark)
							FILTER (WHERE EXISTS (SELECT 1 FROM outbox.event e
												  WHERE e.topic_id OPERATOR(pg_catalog.=) p.topic_id
													AND e.id OPERATOR(pg_catalog.>) ps.watermark)),
						pg_catalog.max(ps.watermark))
		FROM outbox.topic p
		JOIN outbox.topic_state ps ON ps.topic_id OPERATOR(pg_catalog.=) p.topic_id
		WHERE p.topic_id OPERATOR(pg_catalog.=) t.topic_id
		   OR p.parent_id OPERATOR(pg_catalog.=) t.topic_id) AS delivered_through
FROM outbox.topic t
JOIN outbox.topic_state ts USING (topic_id)
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON r.slot_name OPERATOR(pg_catalog.=) t.slot
	  AND r.database OPERATOR(pg_catalog.=) pg_catalog.current_database()
	  AND r.slot_type OPERATOR(pg_catalog.=) 'logical'
WHERE t.delivery OPERATOR(pg_catalog.=) 'wal' AND t.parent_id IS NULL;
