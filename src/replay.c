/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  replay: offer again, as new events, events of a topic that were
 *	  already delivered and are still retained.  Each new event carries the
 *	  original's key, type, payload, headers and tenant, and points back at
 *	  it through outbox.event.origin_id.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "storage.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"
#include "walmsg.h"
#include "xact.h"
#include "access/xact.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(outbox_replay);

/*
 * An event was delivered if it was acknowledged: at or below the topic's
 * watermark without a retry or dead letter row, or named by an ack above
 * the watermark.
 */
static const char *replay_sql =
"WITH s AS (SELECT watermark FROM outbox.topic_state WHERE topic_id = $1), "
"a AS MATERIALIZED (SELECT k.id FROM outbox._acked() k WHERE k.topic_id = $1), "
"src AS (SELECT e.* FROM outbox.event e, s "
"        WHERE e.topic_id = $1 AND e.created_at >= $2 "
"        AND ($3::timestamptz IS NULL OR e.created_at < $3) "
"        AND ($4::text IS NULL OR e.key = $4) "
"        AND ($5::text IS NULL OR e.tenant = $5) "
"        AND ((e.id <= s.watermark "
"              AND NOT EXISTS (SELECT 1 FROM outbox.retry r WHERE r.event_id = e.id) "
"              AND NOT EXISTS (SELECT 1 FROM outbox.dead_letter d WHERE d.id = e.id)) "
"             OR EXISTS (SELECT 1 FROM a WHERE a.id = e.id)) "
"        ORDER BY e.id) "
"INSERT INTO outbox.event (id, topic_id, key, type, tenant, payload, headers, origin_id) "
"SELECT pg_catalog.nextval('outbox.event_id_seq'), $1, src.key, src.type, src.tenant, "
"       src.payload, src.headers, src.id FROM src "
"RETURNING " OUTBOX_WAL_ROW_COLUMNS;

/*
 * replay(topic, since, until, key, tenant) returns integer: how many events
 * were offered again.  Part of the caller's transaction, like offer.
 */
Datum
outbox_replay(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *tenant;
	char	   *mine;
	OutboxTopicInfo info;
	int32	   *ids;
	int64	   *incarnations;
	int			nids;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;
	int64		total = 0;
	static const Oid types[5] = {INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TEXTOID, TEXTOID};

	outbox_require_writable("outbox.replay()");
	outbox_require_schema();
	outbox_storage_ready();
	name = outbox_text_arg(fcinfo, 0, "topic", true);
	tenant = outbox_text_arg(fcinfo, 4, "tenant", false);

	outbox_require_arg(fcinfo, 1, "since");
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(1)) &&
		PG_GETARG_TIMESTAMPTZ(1) != DT_NOBEGIN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"since\" must not be infinity")));
	if (!PG_ARGISNULL(2) && PG_GETARG_TIMESTAMPTZ(2) < PG_GETARG_TIMESTAMPTZ(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"until\" must not be earlier than \"since\"")));

	/* a session acting for a tenant replays that tenant's events only */
	mine = outbox_session_tenant();
	if (mine != NULL)
	{
		if (tenant != NULL && strcmp(tenant, mine) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("this session acts for tenant \"%s\" and cannot replay events of tenant \"%s\"",
							mine, tenant)));
		tenant = mine;
	}

	SPI_connect();
	outbox_lock_topic(name, AccessShareLock);
	outbox_lookup_topic(name, &info);
	if (info.wal)
	{
		outbox_wal_require_logical("a replay of a topic delivered through the WAL");
		(void) GetTopTransactionId();	/* walsync.c: an xid before the ids */
	}

	/* which logs: the topic's, or its tenant parts' too */
	if (!info.per_tenant)
	{
		nids = 1;
		ids = &info.topic_id;
		incarnations = &info.incarnation;
	}
	else if (tenant != NULL)
	{
		OutboxTopicInfo part;

		nids = 0;
		if (outbox_lookup_topic_part(&info, tenant, false, &part))
		{
			nids = 1;
			ids = palloc(sizeof(int32));
			incarnations = palloc(sizeof(int64));
			ids[0] = part.topic_id;
			incarnations[0] = part.incarnation;
		}
	}
	else
		nids = outbox_topic_family(info.topic_id, &ids, &incarnations);

	for (int i = 1; i < 5; i++)
	{
		if (PG_ARGISNULL(i))
		{
			nulls[i] = 'n';
			values[i] = (Datum) 0;
		}
		else
			values[i] = PG_GETARG_DATUM(i);
	}
	nulls[4] = tenant ? ' ' : 'n';
	values[4] = tenant ? CStringGetTextDatum(tenant) : (Datum) 0;

	for (int k = 0; k < nids; k++)
	{
		bool		shared = outbox_shmem_available();
		uint64		n;
		SPITupleTable *tt;

		if (shared)
			outbox_xact_offer_register(ids[k], incarnations[k], true);
		values[0] = Int32GetDatum(ids[k]);
		rc = outbox_exec(PLAN_REPLAY, replay_sql, 5, types, values, nulls, false, 0);
		outbox_spi_check(rc, SPI_OK_INSERT_RETURNING, "replay");
		n = SPI_processed;
		tt = SPI_tuptable;
		if (info.wal && n > 0)
		{
			/* after the ids are drawn: see outbox_wal_check_slot() */
			OutboxTopicInfo part = info;

			part.topic_id = ids[k];
			outbox_wal_check_slot(&part);
		}
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = tt->vals[i];
			TupleDesc	desc = tt->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));

			if (info.wal)
				outbox_wal_emit_tuple(&info, tup, desc);
			if (shared)
				outbox_xact_offered(ids[k], incarnations[k], id, false, 0);
		}
		total += n;
	}
	SPI_finish();
	PG_RETURN_INT32((int32) Min(total, PG_INT32_MAX));
}
