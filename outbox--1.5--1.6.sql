/* outbox--1.5--1.6.sql: ordered topics */

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
