/* outbox--1.4--1.5.sql: delivery through the WAL, and capture triggers */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.5'" to load this file. \quit

UPDATE outbox._dump_origin SET version = '1.5';

/* ------------------------------------------------------------------------
 * Delivery through the WAL
 *
 * A topic with delivery 'wal' is read from a logical replication slot, not
 * claimed: every offer to it also emits a transactional logical decoding
 * message (prefix 'outbox', see walmsg.c), and its watermark follows the
 * slot's confirmed_flush_lsn (walsync.c).  Both settings are fixed when the
 * topic is made; a tenant part carries its topic's.
 * ------------------------------------------------------------------------ */

ALTER TABLE outbox.topic
	ADD COLUMN delivery text NOT NULL DEFAULT 'claim'
		CONSTRAINT topic_delivery_check CHECK (delivery IN ('claim', 'wal')),
	ADD COLUMN slot name,
	ADD CONSTRAINT topic_slot_check CHECK ((delivery = 'wal') = (slot IS NOT NULL));

/*
 * The progress of a WAL topic towards its slot (walsync.c).  Its tick:
 * every event with an id at or below "below" ended (committed or rolled
 * back) before "lsn"; once the slot has confirmed "lsn" they are delivered
 * and the watermark moves to "below".  Until the transactions in "xids"
 * end, "lsn" is not known yet.  resend_through: events up to this id may
 * have been offered while the slot was missing, so that no slot carries
 * their messages; they are emitted again once it exists.  Runtime state,
 * not dumped.
 */
CREATE TABLE outbox.wal_progress (
	topic_id	integer PRIMARY KEY REFERENCES outbox.topic ON DELETE CASCADE,
	below		bigint,
	xids		bigint[],
	lsn			pg_lsn,
	made_at		timestamptz,
	resend_through bigint
);
COMMENT ON TABLE outbox.wal_progress IS
	'Per WAL topic: how far its watermark moves once its slot confirms an LSN';

/*
 * The server (system identifier and timeline) and database whose WAL holds the messages
 * of the WAL topics' undelivered events.  A dump carries its row: restored
 * next to the new server's own, or carried by pg_upgrade, or left from
 * before a promotion, a row that is not this server's makes reap send
 * those events again (walsync.c).
 */
CREATE TABLE outbox.wal_origin (
	system_identifier bigint NOT NULL,
	timeline	bigint NOT NULL,
	database	oid NOT NULL
);
COMMENT ON TABLE outbox.wal_origin IS
	'The server whose WAL carries the messages of undelivered WAL-topic events';
INSERT INTO outbox.wal_origin (system_identifier, timeline, database)
SELECT s.system_identifier, c.timeline_id, d.oid
FROM pg_catalog.pg_control_system() s, pg_catalog.pg_control_checkpoint() c,
	 pg_catalog.pg_database d
WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
SELECT pg_catalog.pg_extension_config_dump('outbox.wal_origin', '');

DROP FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean);
CREATE FUNCTION outbox.create_topic(
	topic text,
	max_attempts integer DEFAULT 5,
	retention interval DEFAULT '7 days',
	backoff_base interval DEFAULT '1 second',
	backoff_max interval DEFAULT '60 seconds',
	ordered boolean DEFAULT false,
	delivery text DEFAULT 'claim',
	slot name DEFAULT NULL)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_create_topic';
REVOKE ALL ON FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean, text, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean, text, name)
	TO outbox_admin;
COMMENT ON FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean, text, name) IS
	'Make a topic; delivery ''wal'' delivers it through the logical replication slot named by slot';

CREATE OR REPLACE VIEW outbox.topics AS
SELECT t.name AS topic, t.max_attempts, t.retention, t.backoff_base,
	   t.backoff_max, t.ordered, t.created_at, t.per_tenant, t.delivery,
	   t.slot
FROM outbox.topic t
WHERE t.parent_id IS NULL;

/* ordered, delivery and slot are fixed when a topic is made */
DROP TRIGGER topic_fixed ON outbox.topic;
CREATE TRIGGER topic_fixed
	BEFORE UPDATE OF ordered, delivery, slot ON outbox.topic
	FOR EACH ROW WHEN (OLD.ordered IS DISTINCT FROM NEW.ordered
					   OR OLD.delivery IS DISTINCT FROM NEW.delivery
					   OR OLD.slot IS DISTINCT FROM NEW.slot)
	EXECUTE FUNCTION outbox._topic_fixed();

/* Where each WAL topic stands with its slot. */
CREATE VIEW outbox.wal_topics AS
SELECT t.name AS topic, t.slot,
	   -- as walsync.c counts it: a logical slot of this database, done
	   -- being created, not invalidated
	   (r.confirmed_flush_lsn IS NOT NULL
		AND r.wal_status IS DISTINCT FROM 'lost') AS slot_exists,
	   r.confirmed_flush_lsn,
	   ts.watermark AS delivered_through
FROM outbox.topic t
JOIN outbox.topic_state ts USING (topic_id)
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON r.slot_name OPERATOR(pg_catalog.=) t.slot
	  AND r.database OPERATOR(pg_catalog.=) pg_catalog.current_database()
	  AND r.slot_type OPERATOR(pg_catalog.=) 'logical'
WHERE t.delivery OPERATOR(pg_catalog.=) 'wal' AND t.parent_id IS NULL;
COMMENT ON VIEW outbox.wal_topics IS
	'Topics delivered through the WAL: their slot, whether it exists, and how far delivery has come';

/* ------------------------------------------------------------------------
 * "Settled", defined once
 *
 * Above its topic's watermark an event is settled when it is acknowledged,
 * waiting in outbox.retry, or dead.  _acked() is the one reader of the
 * layout of outbox.acked; _settled() adds the other two.  claim (after a
 * restart), drop_topic, replay and stats all read these, so that a change
 * of how acknowledgements are kept touches them here only.  Both are
 * plain SQL, so the planner inlines them into the queries that use them.
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox._acked(OUT topic_id integer, OUT id bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
AS $$
SELECT a.topic_id, u.id
FROM outbox.acked a
JOIN outbox.topic_state s
  ON s.topic_id OPERATOR(pg_catalog.=) a.topic_id
 AND a.max_id OPERATOR(pg_catalog.>) s.watermark,
	 pg_catalog.unnest(coalesce(a.ids, ARRAY[a.max_id])) AS u(id)
WHERE u.id OPERATOR(pg_catalog.>) s.watermark
$$;
COMMENT ON FUNCTION outbox._acked() IS
	'Internal: the acknowledged events above their topic''s watermark';

CREATE FUNCTION outbox._settled(OUT topic_id integer, OUT id bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
AS $$
SELECT k.topic_id, k.id FROM outbox._acked() k
UNION
SELECT r.topic_id, r.event_id FROM outbox.retry r
JOIN outbox.topic_state s ON s.topic_id OPERATOR(pg_catalog.=) r.topic_id
WHERE r.event_id OPERATOR(pg_catalog.>) s.watermark
UNION
SELECT d.topic_id, d.id FROM outbox.dead_letter d
JOIN outbox.topic_state s ON s.topic_id OPERATOR(pg_catalog.=) d.topic_id
WHERE d.id OPERATOR(pg_catalog.>) s.watermark
$$;
COMMENT ON FUNCTION outbox._settled() IS
	'Internal: the settled events (acknowledged, waiting for a retry, dead) above their topic''s watermark';

REVOKE ALL ON FUNCTION outbox._acked(), outbox._settled() FROM PUBLIC;

CREATE OR REPLACE FUNCTION outbox._stats(
	OUT topic text, OUT available bigint, OUT leased bigint, OUT delayed bigint,
	OUT dead bigint, OUT oldest_available_age interval, OUT offered bigint,
	OUT acked bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET work_mem = '256MB'
AS $$
WITH m AS MATERIALIZED (SELECT * FROM outbox._shmem_topics()),
s AS MATERIALIZED (
	SELECT t.name AS topic, t.topic_id, ts.watermark,
		   coalesce(m.leased, 0) AS leased,
		   coalesce(m.leased_ids, '{}') AS leased_ids,
		   m.offered, m.acked
	FROM outbox.topic t
	JOIN outbox.topic_state ts USING (topic_id)
	LEFT JOIN m ON m.topic_id = t.topic_id AND m.incarnation = t.incarnation
),
held AS MATERIALIZED (
	SELECT s.topic_id, l.id FROM s, unnest(s.leased_ids) AS l(id)
),
done AS MATERIALIZED (
	SELECT k.topic_id, k.id FROM outbox._acked() k
),
pending AS (
	SELECT e.topic_id, count(*) AS n, min(e.created_at) AS oldest
	FROM outbox.event e
	JOIN s ON e.topic_id = s.topic_id AND e.id > s.watermark
	WHERE e.available_at IS NULL
	  -- ids are never NULL: NOT IN is a hashed anti-join whatever the estimates
	  AND (e.topic_id, e.id) NOT IN (SELECT d.topic_id, d.id FROM done d)
	  AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id)
	  AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter x WHERE x.id = e.id)
	  AND (e.topic_id, e.id) NOT IN (SELECT h.topic_id, h.id FROM held h)
	GROUP BY e.topic_id
),
waiting AS (
	SELECT r.topic_id,
		   count(*) FILTER (WHERE r.available_at <= clock_timestamp() AND h.id IS NULL) AS due,
		   count(*) FILTER (WHERE r.available_at > clock_timestamp()) AS delayed,
		   min(e.created_at) FILTER (WHERE r.available_at <= clock_timestamp() AND h.id IS NULL) AS oldest
	FROM outbox.retry r
	JOIN outbox.event e ON e.topic_id = r.topic_id AND e.id = r.event_id
	LEFT JOIN held h ON h.topic_id = r.topic_id AND h.id = r.event_id
	GROUP BY r.topic_id
),
dead AS (
	SELECT d.topic_id, count(*) AS n FROM outbox.dead_letter d GROUP BY d.topic_id
)
-- the tenant parts of a per-tenant topic share its name: one row per name
SELECT s.topic,
	   sum(coalesce(p.n, 0) + coalesce(w.due, 0))::bigint AS available,
	   sum(s.leased)::bigint AS leased,
	   sum(coalesce(w.delayed, 0))::bigint AS delayed,
	   sum(coalesce(d.n, 0))::bigint AS dead,
	   clock_timestamp() - min(least(p.oldest, w.oldest)) AS oldest_available_age,
	   sum(s.offered)::bigint AS offered,
	   sum(s.acked)::bigint AS acked
FROM s
LEFT JOIN pending p USING (topic_id)
LEFT JOIN waiting w USING (topic_id)
LEFT JOIN dead d USING (topic_id)
GROUP BY s.topic
$$;

/* ------------------------------------------------------------------------
 * Capture triggers: row changes become events (capture.c)
 * ------------------------------------------------------------------------ */

/*
 * Not SECURITY DEFINER: the rows become JSON with the writer's rights (a
 * type's cast or output function is the writer's code); the trigger
 * switches to the owner for the offer alone (capture.c).
 */
CREATE FUNCTION outbox._capture()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'outbox_capture_trigger';
COMMENT ON FUNCTION outbox._capture() IS
	'Internal: the row trigger that capture() attaches; offers one event per row change';

CREATE FUNCTION outbox.capture(source regclass, topic text)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_capture';
COMMENT ON FUNCTION outbox.capture(regclass, text) IS
	'Offer one event to topic for every row inserted, updated or deleted in source';

CREATE FUNCTION outbox.uncapture(source regclass, topic text)
RETURNS boolean
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_uncapture';
COMMENT ON FUNCTION outbox.uncapture(regclass, text) IS
	'Stop capturing source into topic; false if it was not captured';

CREATE VIEW outbox.captures AS
SELECT tg.tgrelid::pg_catalog.regclass AS source,
	   pg_catalog.convert_from(pg_catalog.substring(tg.tgargs, 1,
			pg_catalog.position(tg.tgargs, '\x00'::bytea) OPERATOR(pg_catalog.-) 1), 'UTF8') AS topic
FROM pg_catalog.pg_trigger tg
WHERE tg.tgfoid OPERATOR(pg_catalog.=) 'outbox._capture()'::pg_catalog.regprocedure
  AND tg.tgparentid OPERATOR(pg_catalog.=) 0;	/* not the partitions' copies */
COMMENT ON VIEW outbox.captures IS 'Tables whose row changes are offered, and to which topic';

REVOKE ALL ON outbox.wal_progress, outbox.wal_origin, outbox.wal_topics, outbox.captures FROM PUBLIC;
REVOKE ALL ON FUNCTION outbox._capture(), outbox.capture(regclass, text),
	outbox.uncapture(regclass, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.capture(regclass, text),
	outbox.uncapture(regclass, text) TO outbox_admin;
GRANT SELECT ON outbox.wal_topics, outbox.captures TO outbox_admin;
