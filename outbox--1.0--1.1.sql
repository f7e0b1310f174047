/* outbox--1.0--1.1.sql: per-tenant topics and tenant bindings; acknowledgements in two generations */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.1'" to load this file. \quit

/* Topics: a per-tenant topic has a part (a row of its own) per tenant. */
ALTER TABLE outbox.topic
	ADD COLUMN per_tenant boolean NOT NULL DEFAULT false,
	ADD COLUMN parent_id integer REFERENCES outbox.topic ON DELETE CASCADE,
	ADD COLUMN tenant text,
	ADD CHECK ((parent_id IS NULL) = (tenant IS NULL)),
	ADD CHECK (parent_id IS NULL OR NOT per_tenant);
ALTER TABLE outbox.topic DROP CONSTRAINT topic_name_key;
CREATE UNIQUE INDEX topic_name_idx ON outbox.topic (name) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX topic_tenant_idx ON outbox.topic (parent_id, tenant) WHERE parent_id IS NOT NULL;
COMMENT ON TABLE outbox.topic IS
	'Topics and their delivery settings; a per-tenant topic has one row more per tenant (parent_id, tenant), with its own log position';

CREATE TABLE outbox.tenant_access (
	role		regrole NOT NULL,
	tenant		text NOT NULL,
	granted_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (role, tenant)
);
COMMENT ON TABLE outbox.tenant_access IS 'Roles bound to tenants, and the tenants each may act for';
CREATE TRIGGER tenant_access_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON outbox.tenant_access
	FOR EACH STATEMENT EXECUTE FUNCTION outbox._topic_changed();
SELECT pg_catalog.pg_extension_config_dump('outbox.tenant_access', '');

/*
 * Acknowledgements: two generations that take turns; the acknowledgements
 * kept so far go into generation 0.  An ack of one event keeps its id in
 * max_id alone.
 */
ALTER TABLE outbox.acked RENAME TO acked_until_1_1;
CREATE TABLE outbox.acked (
	topic_id	integer NOT NULL,
	gen			smallint NOT NULL,
	max_id		bigint NOT NULL,
	ids			bigint[]		/* NULL: the ack named max_id alone */
) PARTITION BY LIST (gen);
CREATE TABLE outbox.acked_0 PARTITION OF outbox.acked FOR VALUES IN (0)
	WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
CREATE TABLE outbox.acked_1 PARTITION OF outbox.acked FOR VALUES IN (1)
	WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
COMMENT ON TABLE outbox.acked IS 'Acknowledgements above the watermark, one row per ack call';
INSERT INTO outbox.acked (topic_id, gen, max_id, ids)
SELECT topic_id, 0, max_id,
	   CASE WHEN pg_catalog.cardinality(ids) = 1 AND ids[1] = max_id THEN NULL ELSE ids END
FROM outbox.acked_until_1_1;
DROP TABLE outbox.acked_until_1_1;

/* Tenants */
CREATE FUNCTION outbox.isolate_tenants(topic text)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_isolate_tenants';

CREATE FUNCTION outbox.grant_tenant(role regrole, tenant text)
RETURNS void
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_grant_tenant';

CREATE FUNCTION outbox.revoke_tenant(role regrole, tenant text)
RETURNS boolean
LANGUAGE C
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_revoke_tenant';

CREATE VIEW outbox.tenant_roles AS
SELECT a.role, a.tenant, a.granted_at FROM outbox.tenant_access a;

CREATE OR REPLACE VIEW outbox.topics AS
SELECT t.name AS topic, t.max_attempts, t.retention, t.backoff_base,
	   t.backoff_max, t.ordered, t.created_at, t.per_tenant
FROM outbox.topic t
WHERE t.parent_id IS NULL;

CREATE FUNCTION outbox._tenant_visible(tenant text)
RETURNS boolean
LANGUAGE C STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_tenant_visible';

CREATE OR REPLACE VIEW outbox.dead_letters WITH (security_barrier) AS
SELECT d.id, t.name AS topic, d.key, d.type, d.payload, d.headers, d.tenant,
	   d.attempts, d.reason, d.error_history, d.dead_at
FROM outbox.dead_letter d
JOIN outbox.topic t USING (topic_id)
WHERE outbox._tenant_visible(d.tenant);

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
	SELECT a.topic_id, u.id
	FROM outbox.acked a
	JOIN s ON s.topic_id = a.topic_id AND a.max_id > s.watermark,
	unnest(coalesce(a.ids, ARRAY[a.max_id])) AS u(id)
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

/* Who may do what: nothing new for PUBLIC; the tenant functions to admins */
REVOKE ALL ON outbox.tenant_access, outbox.tenant_roles, outbox.acked,
	outbox.acked_0, outbox.acked_1 FROM PUBLIC;
REVOKE ALL ON FUNCTION outbox.isolate_tenants(text), outbox.grant_tenant(regrole, text),
	outbox.revoke_tenant(regrole, text), outbox._tenant_visible(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.isolate_tenants(text),
	outbox.grant_tenant(regrole, text), outbox.revoke_tenant(regrole, text)
	TO outbox_admin;
GRANT SELECT ON outbox.tenant_roles TO outbox_admin;
GRANT EXECUTE ON FUNCTION outbox._tenant_visible(text) TO outbox_admin;
