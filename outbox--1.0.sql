/* outbox--1.0.sql: tables, views and functions of the outbox extension */

\echo Use "CREATE EXTENSION outbox CASCADE" to load this file. \quit

/*
 * The schema outbox must be the one CREATE EXTENSION has just made: owned
 * by the installing role, writable by no other role but superusers, and
 * empty.  A schema made beforehand by another role could hold functions
 * that capture calls meant for the extension's (offer, ack), so it is
 * never adopted.
 */
DO $$
DECLARE
	s pg_catalog.oid;
	owner pg_catalog.oid;
BEGIN
	SELECT n.oid, n.nspowner INTO s, owner
	FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'outbox';
	IF owner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r
									  WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
	   OR EXISTS (SELECT FROM pg_catalog.pg_roles r
				  WHERE NOT r.rolsuper
					AND r.rolname OPERATOR(pg_catalog.<>) 'pg_database_owner'
					AND pg_catalog.has_schema_privilege(r.oid, s, 'CREATE'))
	   OR EXISTS (SELECT FROM pg_catalog.pg_depend d
				  WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
					AND d.refobjid OPERATOR(pg_catalog.=) s
					AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_extension'::pg_catalog.regclass)
	   OR EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) s)
	   OR EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) s)
	THEN
		RAISE EXCEPTION USING
			ERRCODE = 'duplicate_schema',
			MESSAGE = 'schema "outbox" already exists',
			DETAIL = pg_catalog.format('It is owned by role %s and was not made by CREATE EXTENSION outbox; the extension only installs into a schema of its own.',
									   pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(owner))),
			HINT = 'Drop or rename that schema, then run CREATE EXTENSION outbox again.';
	END IF;
END
$$;

/*
 * Storage.
 *
 * outbox.event is the immutable log: a row is written once by offer and
 * never updated.  Delivery state lives elsewhere:
 *   - leases are kept in shared memory (they need not survive a crash);
 *   - outbox.acked records acknowledgements, one row per ack call;
 *   - outbox.retry holds the small set of events waiting for a time
 *     (delayed offers, nacked events, expired leases, redriven dead letters);
 *   - outbox.dead_letter holds events that gave up, with a copy of the event;
 *   - outbox.topic_state holds each topic's watermark: every event at or
 *     below it is acknowledged, dead, or waiting in outbox.retry.
 */

CREATE TABLE outbox.topic (
	topic_id	integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	max_attempts integer NOT NULL,
	retention	interval NOT NULL,
	backoff_base interval NOT NULL,
	backoff_max	interval NOT NULL,
	ordered		boolean NOT NULL DEFAULT false,
	incarnation bigint NOT NULL DEFAULT (floor(random() * 9.0e18))::bigint,
	created_at	timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox.topic IS 'Topics and their delivery settings';

/* Backends cache topics; any change to the table empties their caches. */
CREATE FUNCTION outbox._topic_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'outbox_topic_changed';
CREATE TRIGGER topic_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON outbox.topic
	FOR EACH STATEMENT EXECUTE FUNCTION outbox._topic_changed();

CREATE TABLE outbox.topic_state (
	topic_id	integer PRIMARY KEY REFERENCES outbox.topic ON DELETE CASCADE,
	watermark	bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
COMMENT ON TABLE outbox.topic_state IS 'Per-topic watermark: events at or below it need no scan of the log';

CREATE SEQUENCE outbox.event_id_seq AS bigint CACHE 1;

CREATE TABLE outbox.event (
	id			bigint NOT NULL,
	topic_id	integer NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	available_at timestamptz,
	key			text,
	type		text,
	tenant		text,
	payload		jsonb NOT NULL,
	headers		jsonb,
	origin_id	bigint
) PARTITION BY RANGE (created_at);
CREATE INDEX event_topic_id_idx ON outbox.event (topic_id, id);
COMMENT ON TABLE outbox.event IS 'Immutable event log, partitioned by created_at';

CREATE TABLE outbox.retry (
	event_id	bigint PRIMARY KEY,
	topic_id	integer NOT NULL,
	available_at timestamptz NOT NULL,
	attempts	integer NOT NULL DEFAULT 0,
	errors		jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor = 70);
CREATE INDEX retry_due_idx ON outbox.retry (topic_id, available_at, event_id);
COMMENT ON TABLE outbox.retry IS 'Events waiting for a time: delayed offers, retries, redrives';

CREATE TABLE outbox.acked (
	topic_id	integer NOT NULL,
	max_id		bigint NOT NULL,
	ids			bigint[] NOT NULL,
	acked_at	timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
COMMENT ON TABLE outbox.acked IS 'Acknowledgements above the watermark, one row per ack call';

CREATE TABLE outbox.dead_letter (
	id			bigint PRIMARY KEY,
	topic_id	integer NOT NULL,
	key			text,
	type		text,
	tenant		text,
	payload		jsonb NOT NULL,
	headers		jsonb,
	created_at	timestamptz NOT NULL,
	attempts	integer NOT NULL,
	reason		text NOT NULL,
	error_history jsonb NOT NULL DEFAULT '[]',
	dead_at		timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_topic_idx ON outbox.dead_letter (topic_id, dead_at);
COMMENT ON TABLE outbox.dead_letter IS 'Events that exhausted their attempts or were given up';

CREATE TABLE outbox.redrive_log (
	event_id	bigint NOT NULL,
	topic_id	integer NOT NULL,
	reason		text NOT NULL,
	redriven_at timestamptz NOT NULL DEFAULT now(),
	redriven_by name NOT NULL
);
CREATE INDEX redrive_log_event_idx ON outbox.redrive_log (event_id);
COMMENT ON TABLE outbox.redrive_log IS 'Why and by whom dead letters were sent back';

CREATE TABLE outbox.dedupe (
	topic_id	integer NOT NULL,
	tenant		text NOT NULL,
	dedupe_key	text NOT NULL,
	event_id	bigint NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic_id, tenant, dedupe_key)
);
CREATE INDEX dedupe_created_idx ON outbox.dedupe (created_at);
COMMENT ON TABLE outbox.dedupe IS 'Dedupe keys seen within the topic retention';

/* Topics are configuration: pg_dump carries them. */
SELECT pg_catalog.pg_extension_config_dump('outbox.topic', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.topic_state', '');

/* Partitions: one a day, created ahead by pg_partman (see maintain.c). */
CREATE FUNCTION outbox._setup_storage()
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'outbox_setup_storage';
COMMENT ON FUNCTION outbox._setup_storage() IS
	'Internal: hands outbox.event to pg_partman; run once by the install script';
SELECT outbox._setup_storage();

/* ------------------------------------------------------------------------
 * Topics
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox.create_topic(
	topic text,
	max_attempts integer DEFAULT 5,
	retention interval DEFAULT '7 days',
	backoff_base interval DEFAULT '1 second',
	backoff_max interval DEFAULT '60 seconds',
	ordered boolean DEFAULT false)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_create_topic';

CREATE FUNCTION outbox.drop_topic(topic text, force boolean DEFAULT false)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_drop_topic';

CREATE VIEW outbox.topics AS
SELECT t.name AS topic, t.max_attempts, t.retention, t.backoff_base,
	   t.backoff_max, t.ordered, t.created_at
FROM outbox.topic t;

/* ------------------------------------------------------------------------
 * Producing
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox.offer(
	topic text,
	payload jsonb,
	key text DEFAULT NULL,
	type text DEFAULT NULL,
	headers jsonb DEFAULT NULL,
	tenant text DEFAULT NULL,
	dedupe_key text DEFAULT NULL,
	available_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_offer';

CREATE FUNCTION outbox.offer_batch(
	topic text,
	payloads jsonb[],
	keys text[] DEFAULT NULL,
	types text[] DEFAULT NULL,
	headers jsonb[] DEFAULT NULL,
	tenant text DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_offer_batch';

/* ------------------------------------------------------------------------
 * Consuming
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox.claim(
	topic text,
	batch_size integer DEFAULT 1,
	lease interval DEFAULT '30 seconds',
	wait interval DEFAULT '0')
RETURNS TABLE (id bigint, topic text, key text, type text, payload jsonb,
			   headers jsonb, tenant text, attempt integer, lease_token uuid,
			   lease_expires_at timestamptz, created_at timestamptz)
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
ROWS 10
AS 'MODULE_PATHNAME', 'outbox_claim';

CREATE FUNCTION outbox.ack(id bigint, lease_token uuid)
RETURNS boolean
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_ack_one';

CREATE FUNCTION outbox.ack(ids bigint[], lease_token uuid)
RETURNS integer
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_ack_many';

CREATE FUNCTION outbox.nack(id bigint, lease_token uuid, error text,
							retry_after interval DEFAULT NULL)
RETURNS text
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_nack';

CREATE FUNCTION outbox.extend_lease(ids bigint[], lease_token uuid,
									lease interval DEFAULT '30 seconds')
RETURNS integer
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_extend_lease';

CREATE FUNCTION outbox.dead_letter(id bigint, lease_token uuid, reason text)
RETURNS boolean
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_dead_letter';

/* ------------------------------------------------------------------------
 * Dead letters and recovery
 * ------------------------------------------------------------------------ */

CREATE VIEW outbox.dead_letters AS
SELECT d.id, t.name AS topic, d.key, d.type, d.payload, d.headers, d.tenant,
	   d.attempts, d.reason, d.error_history, d.dead_at
FROM outbox.dead_letter d
JOIN outbox.topic t USING (topic_id);

CREATE FUNCTION outbox.redrive(ids bigint[], reason text)
RETURNS integer
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_redrive';

CREATE FUNCTION outbox.replay(
	topic text,
	since timestamptz,
	until timestamptz DEFAULT NULL,
	key text DEFAULT NULL,
	tenant text DEFAULT NULL)
RETURNS integer
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_replay';

/* ------------------------------------------------------------------------
 * Housekeeping
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox.reap()
RETURNS integer
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_reap';

CREATE FUNCTION outbox._shmem_topics(
	OUT topic_id integer, OUT incarnation bigint, OUT leased bigint, OUT leased_ids bigint[],
	OUT offered bigint, OUT acked bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'outbox_shmem_topics';
COMMENT ON FUNCTION outbox._shmem_topics() IS
	'Internal: leases and counters each topic has in shared memory (empty unless preloaded)';

/*
 * The counts behind outbox.stats.  Its anti-joins are hashed NOT IN
 * subplans, given the memory to stay hashed: a nested loop against the
 * acknowledgements above the watermark would be quadratic.
 */
CREATE FUNCTION outbox._stats(
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
	SELECT a.topic_id, u.id
	FROM outbox.acked a
	JOIN s ON s.topic_id = a.topic_id AND a.max_id > s.watermark,
	unnest(a.ids) AS u(id)
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
SELECT s.topic,
	   coalesce(p.n, 0) + coalesce(w.due, 0) AS available,
	   s.leased,
	   coalesce(w.delayed, 0) AS delayed,
	   coalesce(d.n, 0) AS dead,
	   clock_timestamp() - least(p.oldest, w.oldest) AS oldest_available_age,
	   s.offered,
	   s.acked
FROM s
LEFT JOIN pending p USING (topic_id)
LEFT JOIN waiting w USING (topic_id)
LEFT JOIN dead d USING (topic_id)
$$;

CREATE VIEW outbox.stats AS SELECT * FROM outbox._stats();
COMMENT ON VIEW outbox.stats IS
	'Per topic: events available, leased, delayed and dead now; age of the oldest available; offered and acked since server start';

CREATE FUNCTION outbox.maintain()
RETURNS void
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_maintain';

/* ------------------------------------------------------------------------
 * Who may do what
 *
 * Nothing is granted to PUBLIC.  The functions of the API run as the
 * extension's owner with a pinned search_path; the tables stay private, so
 * that every event goes through offer() and every lease through claim().
 * Three roles carry the rights; granting one of them is all a user needs.
 * ------------------------------------------------------------------------ */
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;

DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['outbox_producer', 'outbox_consumer', 'outbox_admin']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$$;

GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_consumer, outbox_admin;

GRANT EXECUTE ON FUNCTION outbox.offer(text, jsonb, text, text, jsonb, text, text, timestamptz),
	outbox.offer_batch(text, jsonb[], text[], text[], jsonb[], text)
	TO outbox_producer;

GRANT EXECUTE ON FUNCTION outbox.claim(text, integer, interval, interval),
	outbox.ack(bigint, uuid), outbox.ack(bigint[], uuid),
	outbox.nack(bigint, uuid, text, interval),
	outbox.extend_lease(bigint[], uuid, interval),
	outbox.dead_letter(bigint, uuid, text)
	TO outbox_consumer;

GRANT EXECUTE ON FUNCTION outbox.create_topic(text, integer, interval, interval, interval, boolean),
	outbox.drop_topic(text, boolean),
	outbox.redrive(bigint[], text),
	outbox.replay(text, timestamptz, timestamptz, text, text),
	outbox.maintain(), outbox.reap()
	TO outbox_admin;
GRANT SELECT ON outbox.dead_letters, outbox.redrive_log TO outbox_admin;

GRANT SELECT ON outbox.stats, outbox.topics TO outbox_producer, outbox_consumer, outbox_admin;
GRANT EXECUTE ON FUNCTION outbox._shmem_topics(), outbox._stats() TO outbox_producer, outbox_consumer, outbox_admin;
