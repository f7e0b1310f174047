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
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "walmsg.h"

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
