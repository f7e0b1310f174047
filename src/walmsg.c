/*-------------------------------------------------------------------------
 *
 * walmsg.c
 *	  The message an offer to a topic delivered through the WAL emits: one
 *	  transactional logical decoding message with prefix "outbox" per
 *	  event, decoded when (and only if) the offering transaction commits.
 *	  Its content is one JSON object, with no leading whitespace, holding
 *	  the fields Debezium's outbox event router reads (id, aggregatetype,
 *	  aggregateid, type, payload as JSON) and headers, tenant and
 *	  created_at.
 *
 *	  An offer made while the topic's slot is missing (or not yet able to
 *	  decode) notes in outbox.wal_progress that its topic's events are to
 *	  be emitted again once the slot exists (walsync.c).
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "spi_util.h"
#include "walmsg.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/spin.h"

#include "access/xlog.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"

/* Refuse what needs logical decoding when wal_level is below logical. */
void
outbox_wal_require_logical(const char *what)
{
	if (!XLogLogicalInfoActive())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs wal_level = logical", what),
				 errdetail("wal_level is \"%s\".",
						   GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical and restart the server.")));
}

static void
append_text_or_null(StringInfo buf, Datum value)
{
	if (value == (Datum) 0)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, TextDatumGetCString(value));
}

static void
append_jsonb(StringInfo buf, Datum jsonb)
{
	Jsonb	   *jb = DatumGetJsonbP(jsonb);

	(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
}

/*
 * Can the slot decode a transaction that commits from now on?  A logical
 * slot of this database, done being created (it has a confirmed
 * position), not invalidated.  *confirmed (if not NULL) gets that
 * position.
 */
bool
outbox_wal_slot_ready(const char *name, XLogRecPtr *confirmed)
{
	ReplicationSlot *slot;
	bool		ready = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		ready = slot->data.database == MyDatabaseId &&
			!XLogRecPtrIsInvalid(slot->data.confirmed_flush) &&
			!OutboxSlotInvalidated(slot);
		if (ready && confirmed != NULL)
			*confirmed = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return ready;
}

/*
 * Before emitting messages of a WAL topic, and after drawing their ids: if
 * its slot cannot carry them, have them emitted again once it can.  (After
 * the ids: a slot dropped later is seen missing by a reap, which then
 * covers every id drawn so far.)  Caller is connected to SPI.
 */
void
outbox_wal_check_slot(const OutboxTopicInfo *topic)
{
	static const Oid types[1] = {INT4OID};
	Datum		values[1];
	int			rc;

	if (outbox_wal_slot_ready(topic->slot, NULL))
		return;
	values[0] = Int32GetDatum(topic->topic_id);
	rc = outbox_exec(PLAN_WAL_SLOT_MISSING,
					 "UPDATE outbox.wal_progress SET resend_through = 9223372036854775807 "
					 "WHERE topic_id = $1 "
					 "AND resend_through IS DISTINCT FROM 9223372036854775807",
					 1, types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_UPDATE, "offer");
}

/* created_at in UTC, as ISO 8601 with microseconds: 2026-11-30T01:02:03.000004Z */
static void
append_timestamp(StringInfo buf, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

/*
 * Emit the message of one event, in the current transaction.  The topic of
 * a tenant part is named by its topic's name, like every part.
 */
void
outbox_wal_emit(const OutboxTopicInfo *topic, int64 id, Datum key,
				Datum type, Datum payload, Datum headers, const char *tenant,
				TimestampTz created_at)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\":" INT64_FORMAT ",\"aggregatetype\":", id);
	escape_json(&buf, topic->name);
	appendStringInfoString(&buf, ",\"aggregateid\":");
	append_text_or_null(&buf, key);
	appendStringInfoString(&buf, ",\"type\":");
	append_text_or_null(&buf, type);
	appendStringInfoString(&buf, ",\"payload\":");
	append_jsonb(&buf, payload);
	appendStringInfoString(&buf, ",\"headers\":");
	if (headers == (Datum) 0)
		appendStringInfoString(&buf, "null");
	else
		append_jsonb(&buf, headers);
	appendStringInfoString(&buf, ",\"tenant\":");
	if (tenant == NULL)
		appendStringInfoString(&buf, "null");
	else
		escape_json(&buf, tenant);
	appendStringInfoString(&buf, ",\"created_at\":");
	append_timestamp(&buf, created_at);
	appendStringInfoChar(&buf, '}');

	(void) outbox_log_logical_message(OUTBOX_WAL_PREFIX, buf.data, buf.len);
	pfree(buf.data);
}

/*
 * Emit the message of the event in a row whose first seven columns are
 * id, key, type, payload, headers, tenant, created_at (an INSERT's
 * RETURNING, or a read of the log).
 */
void
outbox_wal_emit_tuple(const OutboxTopicInfo *topic, HeapTuple tup,
					  TupleDesc desc)
{
	Datum		d[OUTBOX_WAL_ROW_NCOLS];
	bool		n[OUTBOX_WAL_ROW_NCOLS];

	for (int c = 0; c < OUTBOX_WAL_ROW_NCOLS; c++)
		d[c] = SPI_getbinval(tup, desc, c + 1, &n[c]);
	outbox_wal_emit(topic, DatumGetInt64(d[0]),
					n[1] ? (Datum) 0 : d[1], n[2] ? (Datum) 0 : d[2], d[3],
					n[4] ? (Datum) 0 : d[4],
					n[5] ? NULL : TextDatumGetCString(d[5]),
					DatumGetTimestampTz(d[6]));
}
