/* outbox--1.3--1.4.sql: a dump says which version of the extension it holds */

\echo Use "ALTER EXTENSION outbox UPDATE TO '1.4'" to load this file. \quit

/*
 * One row: the version of the extension's objects.  Dumped with the data of
 * the other tables and, by its name, laid out before them; the restore
 * guard checks it when a dump is loaded (restore.c).  Update scripts keep
 * the row current.
 */
CREATE TABLE outbox._dump_origin (
	version text NOT NULL
);
COMMENT ON TABLE outbox._dump_origin IS
	'The version of the extension a dump of this database holds; checked when a dump is restored';
INSERT INTO outbox._dump_origin (version) VALUES ('1.4');
SELECT pg_catalog.pg_extension_config_dump('outbox._dump_origin', '');

CREATE FUNCTION outbox._restore_guard()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'outbox_restore_guard';
REVOKE ALL ON FUNCTION outbox._restore_guard() FROM PUBLIC;
COMMENT ON FUNCTION outbox._restore_guard() IS
	'Internal: refuses a restore into a database with an outbox of its own, or of another version';
CREATE TRIGGER restore_guard
	BEFORE INSERT ON outbox._dump_origin
	FOR EACH ROW EXECUTE FUNCTION outbox._restore_guard();
