/*-------------------------------------------------------------------------
 *
 * offer.c
 *	  Producing: offer and offer_batch.  An offered event is one row in
 *	  outbox.event, written in the caller's transaction and visible when it
 *	  commits; a delayed event also gets its row in outbox.retry.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "eventlog.h"
#include "offer.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "storage.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"
#include "walmsg.h"
#include "xact.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(outbox_offer);
PG_FUNCTION_INFO_V1(outbox_offer_batch);

static const char *offer_insert_sql =
"INSERT INTO outbox.event (id, topic_id, available_at, key, type, tenant, payload, headers) "
"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/*
 * Look the topic up under its share lock.  Returns whether the offer is to
 * be announced in shared memory (it is there).
 *
 * *tenant is the tenant argument; it becomes the event's tenant: the
 * session's own when it acts for one (naming another is refused).  For a
 * per-tenant topic, info becomes the tenant's part.
 */
static bool
offer_prepare(const char *name, char **tenant, OutboxTopicInfo *info)
{
	char	   *mine = outbox_session_tenant();

	if (mine != NULL)
	{
		if (*tenant != NULL && strcmp(*tenant, mine) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("this session acts for tenant \"%s\" and cannot offer events of tenant \"%s\"",
							mine, *tenant)));
		*tenant = mine;
	}
	outbox_lock_topic(name, AccessShareLock);
	outbox_lookup_topic(name, info);
	if (info->per_tenant && *tenant != NULL)
	{
		OutboxTopicInfo part;

		(void) outbox_lookup_topic_part(info, *tenant, true, &part);
		*info = part;
	}
	return outbox_shmem_available();
}

static void
check_headers(Jsonb *headers, const char *argname)
{
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be a JSON object", argname)));
}

/*
 * The dedupe key of an offer: returns the id of the event already stored
 * under it within the topic's retention, or 0 after claiming the key for
 * new_id.  Two racing offers: the second waits on the first's row; if the
 * first commits it returns the first's id, if it aborts it stores its own.
 */
static int64
dedupe_claim(const OutboxTopicInfo *info, const char *tenant,
			 const char *dedupe_key, int64 new_id)
{
	static const Oid ins_types[4] = {INT4OID, TEXTOID, TEXTOID, INT8OID};
	static const Oid look_types[3] = {INT4OID, TEXTOID, TEXTOID};
	static const Oid repl_types[5] = {INT4OID, TEXTOID, TEXTOID, INT8OID, INTERVALOID};
	Datum		values[5];
	Interval	retention;
	bool		isnull;
	int			rc;

	values[0] = Int32GetDatum(info->topic_id);
	values[1] = CStringGetTextDatum(tenant ? tenant : "");
	values[2] = CStringGetTextDatum(dedupe_key);
	values[3] = Int64GetDatum(new_id);
	rc = outbox_exec(PLAN_DEDUPE_INSERT,
					 "INSERT INTO outbox.dedupe (topic_id, tenant, dedupe_key, event_id) "
					 "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING event_id",
					 4, ins_types, values, NULL, false, 1);
	outbox_spi_check(rc, SPI_OK_INSERT_RETURNING, "dedupe");
	if (SPI_processed == 1)
		return 0;

	/* The key is taken: by an event still within retention? */
	retention.month = 0;
	retention.day = 0;
	retention.time = info->retention_usec;
	values[3] = Int64GetDatum(new_id);
	values[4] = IntervalPGetDatum(&retention);
	rc = outbox_exec(PLAN_DEDUPE_REPLACE,
					 "UPDATE outbox.dedupe SET event_id = $4, created_at = pg_catalog.now() "
					 "WHERE topic_id = $1 AND tenant = $2 AND dedupe_key = $3 "
					 "AND created_at < pg_catalog.now() - $5 RETURNING event_id",
					 5, repl_types, values, NULL, false, 1);
	outbox_spi_check(rc, SPI_OK_UPDATE_RETURNING, "dedupe");
	if (SPI_processed == 1)
		return 0;

	rc = outbox_exec(PLAN_DEDUPE_LOOKUP,
					 "SELECT event_id FROM outbox.dedupe "
					 "WHERE topic_id = $1 AND tenant = $2 AND dedupe_key = $3",
					 3, look_types, values, NULL, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "dedupe");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not settle dedupe key \"%s\" of topic \"%s\"",
						dedupe_key, info->name),
				 errdetail("The event holding the key was removed concurrently."),
				 errhint("Retry the transaction.")));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A topic delivered through the WAL takes no delayed offers, and needs
 * wal_level = logical for every offer (the setting may have changed since
 * the topic was made).
 */
static void
check_wal_offer(const OutboxTopicInfo *info, bool delayed)
{
	if (!info->wal)
		return;
	if (delayed)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("topic \"%s\" is delivered through the WAL and takes no delayed offers",
						info->name),
				 errdetail("Its events are sent when the offering transaction commits."),
				 errhint("Offer without available_at, or use a topic with delivery => 'claim'.")));
	outbox_wal_require_logical("an offer to a topic delivered through the WAL");
}

int64
outbox_offer_one(OutboxOffer *o)
{
	bool		delayed = false;
	OutboxTopicInfo info;
	bool		shared;
	int64		id = 0;
	Datum		values[8];
	char		nulls[8];
	int			rc;
	static const Oid argtypes[8] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID, JSONBOID, JSONBOID};

	if (o->headers != (Datum) 0)
		check_headers(DatumGetJsonbP(o->headers), "headers");
	if (o->has_available_at)
	{
		if (TIMESTAMP_NOT_FINITE(o->available_at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"available_at\" must be a finite timestamp")));
		delayed = o->available_at > GetCurrentTimestamp();
	}

	SPI_connect();
	shared = offer_prepare(o->topic, &o->tenant, &info);
	check_wal_offer(&info, delayed);
	if (delayed)
		outbox_check_delay(&info, o->available_at - GetCurrentTimestamp(), "available_at");

	/*
	 * Announce the offer before drawing an id: see outbox.h.  A delayed
	 * offer to an ordered topic too: until it commits, its event may be
	 * the earliest of its key, and claims stop below it.
	 */
	if (shared && (!delayed || info.ordered))
		outbox_xact_offer_register(info.topic_id, info.incarnation, info.ordered);
	else if (info.wal)
		(void) GetTopTransactionId();	/* walsync.c: an xid before the id */

	id = outbox_next_event_id();
	if (o->dedupe_key != NULL)
	{
		int64		existing;

		existing = dedupe_claim(&info, o->tenant, o->dedupe_key, id);
		if (existing != 0)
		{
			SPI_finish();
			return existing;
		}
	}

	/* a delayed event of an ordered topic holds its key back at once */
	if (delayed && shared && info.ordered && o->key != (Datum) 0)
	{
		text	   *key = DatumGetTextPP(o->key);

		outbox_xact_key_waiting(info.topic_id, info.incarnation, info.name, id,
								outbox_key_hash(o->tenant,
												o->tenant ? (int) strlen(o->tenant) : 0,
												VARDATA_ANY(key),
												VARSIZE_ANY_EXHDR(key)));
	}

	{
		OutboxLogRow row;

		row.id = id;
		row.topic_id = info.topic_id;
		row.delayed = delayed;
		row.available_at = o->available_at;
		row.key = o->key;
		row.type = o->type;
		row.tenant = o->tenant ? CStringGetTextDatum(o->tenant) : (Datum) 0;
		row.payload = o->payload;
		row.headers = o->headers;

		/* straight into the partition; an INSERT where that does not apply */
		if (!outbox_log_insert(&row))
		{
			memset(nulls, ' ', sizeof(nulls));
			values[0] = Int64GetDatum(row.id);
			values[1] = Int32GetDatum(row.topic_id);
			values[2] = TimestampTzGetDatum(row.available_at);
			nulls[2] = row.delayed ? ' ' : 'n';
			values[3] = row.key;
			nulls[3] = row.key ? ' ' : 'n';
			values[4] = row.type;
			nulls[4] = row.type ? ' ' : 'n';
			values[5] = row.tenant;
			nulls[5] = row.tenant ? ' ' : 'n';
			values[6] = row.payload;
			values[7] = row.headers;
			nulls[7] = row.headers ? ' ' : 'n';
			rc = outbox_exec(PLAN_OFFER_INSERT, offer_insert_sql, 8, argtypes,
							 values, nulls, false, 0);
			outbox_spi_check(rc, SPI_OK_INSERT, "offer");
		}
	}

	if (delayed)
	{
		static const Oid rtypes[3] = {INT8OID, INT4OID, TIMESTAMPTZOID};
		Datum		rvalues[3];

		rvalues[0] = Int64GetDatum(id);
		rvalues[1] = Int32GetDatum(info.topic_id);
		rvalues[2] = TimestampTzGetDatum(o->available_at);
		rc = outbox_exec(PLAN_OFFER_RETRY,
						 "INSERT INTO outbox.retry (event_id, topic_id, available_at) "
						 "VALUES ($1, $2, $3)",
						 3, rtypes, rvalues, NULL, false, 0);
		outbox_spi_check(rc, SPI_OK_INSERT, "offer");
	}

	if (info.wal)
	{
		outbox_wal_check_slot(&info);
		outbox_wal_emit(&info, id, o->key, o->type, o->payload, o->headers,
						o->tenant, GetCurrentTransactionStartTimestamp());
	}

	if (shared)
		outbox_xact_offered(info.topic_id, info.incarnation, id, delayed,
							o->available_at);

	SPI_finish();
	return id;
}

/*
 * offer(topic, payload, key, type, headers, tenant, dedupe_key,
 * available_at) returns bigint: stores one event in the caller's
 * transaction and returns its id (or, for a dedupe key seen within the
 * topic's retention, the id of the event stored under it).
 */
Datum
outbox_offer(PG_FUNCTION_ARGS)
{
	OutboxOffer o;

	outbox_require_writable("outbox.offer()");
	outbox_require_schema();
	outbox_storage_ready();
	memset(&o, 0, sizeof(o));
	o.topic = outbox_text_arg(fcinfo, 0, "topic", true);
	o.tenant = outbox_text_arg(fcinfo, 5, "tenant", false);
	o.dedupe_key = outbox_text_arg(fcinfo, 6, "dedupe_key", false);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("\"payload\" must not be null"),
				 errhint("Pass 'null'::jsonb for an event without a payload.")));
	o.payload = PG_GETARG_DATUM(1);
	o.key = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	o.type = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	o.headers = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	if (!PG_ARGISNULL(7))
	{
		o.has_available_at = true;
		o.available_at = PG_GETARG_TIMESTAMPTZ(7);
	}
	PG_RETURN_INT64(outbox_offer_one(&o));
}

/* A one-dimensional array argument of the given length, or NULL. */
static ArrayType *
batch_array(FunctionCallInfo fcinfo, int argno, const char *argname,
			int expected)
{
	ArrayType  *arr;
	int			n;

	if (PG_ARGISNULL(argno))
		return NULL;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("\"%s\" must be a one-dimensional array", argname)));
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (expected >= 0 && n != expected)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("\"%s\" has %d elements but \"payloads\" has %d", argname,
						n, expected),
				 errhint("Pass arrays of the same length, or NULL.")));
	return arr;
}

/*
 * offer_batch(topic, payloads, keys, types, headers, tenant) returns setof
 * bigint: one event per payload, in one statement, ids in input order.
 */
Datum
outbox_offer_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	ArrayType  *payloads;
	ArrayType  *headers;
	char	   *tenant;
	int			n;
	OutboxTopicInfo info;
	bool		shared;
	Datum		values[6];
	char		nulls[6];
	int			rc;
	static const Oid argtypes[6] = {INT4OID, JSONBARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTOID, JSONBARRAYOID};

	outbox_require_writable("outbox.offer_batch()");
	outbox_require_schema();
	outbox_storage_ready();
	name = outbox_text_arg(fcinfo, 0, "topic", true);
	tenant = outbox_text_arg(fcinfo, 5, "tenant", false);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	outbox_require_arg(fcinfo, 1, "payloads");
	payloads = batch_array(fcinfo, 1, "payloads", -1);
	n = ArrayGetNItems(ARR_NDIM(payloads), ARR_DIMS(payloads));
	if (array_contains_nulls(payloads))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("\"payloads\" must not contain nulls"),
				 errhint("Pass 'null'::jsonb for an event without a payload.")));
	(void) batch_array(fcinfo, 2, "keys", n);
	(void) batch_array(fcinfo, 3, "types", n);
	headers = batch_array(fcinfo, 4, "headers", n);
	if (headers != NULL)
	{
		Datum	   *elems;
		bool	   *elnulls;
		int			nh;

		deconstruct_array(headers, JSONBOID, -1, false, TYPALIGN_INT,
						  &elems, &elnulls, &nh);
		for (int i = 0; i < nh; i++)
			if (!elnulls[i])
				check_headers(DatumGetJsonbP(elems[i]), "headers");
	}
	if (n == 0)
		return (Datum) 0;

	SPI_connect();
	shared = offer_prepare(name, &tenant, &info);
	check_wal_offer(&info, false);
	if (shared)
		outbox_xact_offer_register(info.topic_id, info.incarnation, info.ordered);
	else if (info.wal)
		(void) GetTopTransactionId();	/* walsync.c: an xid before the ids */

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(info.topic_id);
	values[1] = PointerGetDatum(payloads);
	for (int i = 2; i < 6; i++)
	{
		static const int argno[4] = {2, 3, 5, 4};	/* keys types tenant headers */

		if (PG_ARGISNULL(argno[i - 2]))
		{
			nulls[i] = 'n';
			values[i] = (Datum) 0;
		}
		else
			values[i] = PG_GETARG_DATUM(argno[i - 2]);
	}
	nulls[4] = tenant ? ' ' : 'n';
	values[4] = tenant ? CStringGetTextDatum(tenant) : (Datum) 0;
	if (info.wal)
		rc = outbox_exec(PLAN_OFFER_BATCH_WAL,
						 "INSERT INTO outbox.event (id, topic_id, key, type, tenant, payload, headers) "
						 "SELECT pg_catalog.nextval('outbox.event_id_seq'), $1, u.k, u.t, $5, u.p, u.h "
						 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($6)) AS u(p, k, t, h) "
						 "RETURNING " OUTBOX_WAL_ROW_COLUMNS,
						 6, argtypes, values, nulls, false, 0);
	else
		rc = outbox_exec(PLAN_OFFER_BATCH,
						 "INSERT INTO outbox.event (id, topic_id, key, type, tenant, payload, headers) "
						 "SELECT pg_catalog.nextval('outbox.event_id_seq'), $1, u.k, u.t, $5, u.p, u.h "
						 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($6)) AS u(p, k, t, h) "
						 "RETURNING id",
						 6, argtypes, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT_RETURNING, "offer_batch");
	{
		SPITupleTable *tt = SPI_tuptable;
		uint64		nrows = SPI_processed;

		/* after the ids are drawn: see outbox_wal_check_slot() */
		if (info.wal)
			outbox_wal_check_slot(&info);

		for (uint64 i = 0; i < nrows; i++)
		{
			bool		isnull;
			Datum		id = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);

			if (info.wal)
				outbox_wal_emit_tuple(&info, tt->vals[i], tt->tupdesc);
			if (shared)
				outbox_xact_offered(info.topic_id, info.incarnation,
									DatumGetInt64(id), false, 0);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		}
	}
	SPI_finish();
	return (Datum) 0;
}
