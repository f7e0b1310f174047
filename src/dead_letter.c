/*-------------------------------------------------------------------------
 *
 * dead_letter.c
 *	  Failed events: scheduling a retry, giving an event up into
 *	  outbox.dead_letter (with a copy of the event, so that retiring its
 *	  partition loses nothing), and redrive, which sends dead letters back.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "dead_letter.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "tenant.h"
#include "util.h"
#include "xact.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(outbox_redrive);

/*
 * Error texts and reasons are kept to OUTBOX_MAX_ERROR_BYTES (cut at a
 * character boundary, marked), and an event's error history to its newest
 * OUTBOX_MAX_ERROR_HISTORY entries: a consumer's 256 MB error message must
 * not make every later reap of the event drag the value around, nor grow
 * the history until jsonb's size limit fails the reap of everything else.
 */
static Datum
error_text(const char *text)
{
	size_t		len = strlen(text);
	int			keep;

	if (len <= OUTBOX_MAX_ERROR_BYTES)
		return CStringGetTextDatum(text);
	keep = pg_mbcliplen(text, (int) Min(len, (size_t) OUTBOX_MAX_ERROR_BYTES * 2),
						OUTBOX_MAX_ERROR_BYTES);
	return CStringGetTextDatum(psprintf("%.*s... (%zu bytes, cut)", keep, text, len));
}

/* The newest entries of a history, in SQL (%s: the history expression) */
#define NEWEST_ERRORS(h) \
	"(SELECT pg_catalog.jsonb_agg(k.x ORDER BY k.n) FROM " \
	" (SELECT t.x, t.n FROM pg_catalog.jsonb_array_elements(" h ") WITH ORDINALITY AS t(x, n) " \
	"  ORDER BY t.n DESC LIMIT " CppAsString2(OUTBOX_MAX_ERROR_HISTORY) ") k)"

/*
 * Move an event to outbox.dead_letter, with its error history (and one
 * more error, if given).  Caller is connected to SPI.
 */
void
outbox_send_to_dead_letter(int64 event_id, int32 topic_id, int attempts,
						   const char *reason, const char *error)
{
	static const Oid types[5] = {INT8OID, INT4OID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(event_id);
	values[1] = Int32GetDatum(topic_id);
	values[2] = Int32GetDatum(attempts);
	values[3] = error_text(reason);
	if (error)
		values[4] = error_text(error);
	else
		nulls[4] = 'n';
	rc = outbox_exec(PLAN_DEAD_INSERT,
					 "WITH r AS (DELETE FROM outbox.retry WHERE event_id = $1 RETURNING errors) "
					 "INSERT INTO outbox.dead_letter (id, topic_id, key, type, tenant, payload, headers, "
					 "  created_at, attempts, reason, error_history) "
					 "SELECT e.id, e.topic_id, e.key, e.type, e.tenant, e.payload, e.headers, "
					 "  e.created_at, $3, $4, "
					 "  coalesce(" NEWEST_ERRORS("coalesce((SELECT r.errors FROM r), '[]'::jsonb) OPERATOR(pg_catalog.||) "
					 "  CASE WHEN $5::text IS NULL THEN '[]'::jsonb ELSE "
					 "  pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object("
					 "    'attempt', $3, 'error', $5::text, 'at', pg_catalog.clock_timestamp())) END") ", '[]'::jsonb) "
					 "FROM outbox.event e WHERE e.topic_id = $2 AND e.id = $1 "
					 "ON CONFLICT (id) DO NOTHING",
					 5, types, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT, "dead letter");
}

/*
 * Make an event available again at available_at, recording the error of
 * the attempt that failed.  Caller is connected to SPI.
 */
void
outbox_schedule_retry(int64 event_id, int32 topic_id, int attempts,
					  TimestampTz available_at, const char *error)
{
	static const Oid types[5] = {INT8OID, INT4OID, TIMESTAMPTZOID, INT4OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(event_id);
	values[1] = Int32GetDatum(topic_id);
	values[2] = TimestampTzGetDatum(available_at);
	values[3] = Int32GetDatum(attempts);
	if (error)
		values[4] = error_text(error);
	else
		nulls[4] = 'n';
	rc = outbox_exec(PLAN_RETRY_UPSERT,
					 "INSERT INTO outbox.retry AS r (event_id, topic_id, available_at, attempts, errors) "
					 "VALUES ($1, $2, $3, $4, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object("
					 "  'attempt', $4, 'error', $5::text, 'at', pg_catalog.clock_timestamp()))) "
					 "ON CONFLICT (event_id) DO UPDATE SET available_at = EXCLUDED.available_at, "
					 "  attempts = EXCLUDED.attempts, "
					 "  errors = " NEWEST_ERRORS("r.errors OPERATOR(pg_catalog.||) EXCLUDED.errors"),
					 5, types, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT, "retry");
}

/*
 * redrive(ids, reason) returns integer: dead letters among ids become
 * available again at once with their attempt count reset.  The reason is
 * kept in outbox.redrive_log; the error history stays with the event.
 */
Datum
outbox_redrive(PG_FUNCTION_ARGS)
{
	char	   *reason;
	int			n;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	char	   *tenant;
	int			rc;
	int			count = 0;
	static const Oid types[4] = {INT8ARRAYOID, TEXTOID, TEXTOID, TEXTOID};

	outbox_require_writable("outbox.redrive()");
	outbox_require_schema();

	outbox_require_arg(fcinfo, 0, "ids");
	reason = outbox_text_arg(fcinfo, 1, "reason", true);
	if (reason[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"reason\" must not be empty"),
				 errhint("Say why the events are sent back; the reason is kept in outbox.redrive_log.")));
	(void) outbox_int8_array(PG_GETARG_ARRAYTYPE_P(0), "ids", &n);
	if (n == 0)
		PG_RETURN_INT32(0);

	/* a session acting for a tenant redrives that tenant's dead letters only */
	tenant = outbox_session_tenant();

	SPI_connect();
	values[0] = PG_GETARG_DATUM(0);
	values[1] = CStringGetTextDatum(reason);
	values[3] = tenant ? CStringGetTextDatum(tenant) : (Datum) 0;
	nulls[3] = tenant ? ' ' : 'n';
	/* who asked: the caller, not the owner this function runs as */
	values[2] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	rc = outbox_exec(PLAN_REDRIVE,
					 "WITH d AS (DELETE FROM outbox.dead_letter WHERE id = ANY ($1) "
					 "  AND ($4::text IS NULL OR tenant = $4) RETURNING *), "
					 "ev AS (INSERT INTO outbox.event (id, topic_id, created_at, key, type, tenant, payload, headers) "
					 "  SELECT d.id, d.topic_id, pg_catalog.now(), d.key, d.type, d.tenant, d.payload, d.headers "
					 "  FROM d WHERE NOT EXISTS (SELECT 1 FROM outbox.event e "
					 "                           WHERE e.topic_id = d.topic_id AND e.id = d.id)), "
					 "r AS (INSERT INTO outbox.retry (event_id, topic_id, available_at, attempts, errors) "
					 "  SELECT d.id, d.topic_id, pg_catalog.clock_timestamp(), 0, d.error_history FROM d "
					 "  ON CONFLICT (event_id) DO NOTHING), "
					 "l AS (INSERT INTO outbox.redrive_log (event_id, topic_id, reason, redriven_by) "
					 "  SELECT d.id, d.topic_id, $2, $3 FROM d) "
					 "SELECT d.topic_id, d.id, d.tenant, d.key, t.incarnation, t.ordered, t.name "
					 "FROM d LEFT JOIN outbox.topic t ON t.topic_id OPERATOR(pg_catalog.=) d.topic_id "
					 "ORDER BY d.topic_id, d.id",
					 4, types, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "redrive");

	count = (int) SPI_processed;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		no_topic;
		int32		topic_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		int64		incarnation = DatumGetInt64(SPI_getbinval(tup, desc, 5, &no_topic));
		bool		last_of_topic;

		if (!outbox_shmem_available() || no_topic)
			continue;

		/* a redriven event of an ordered topic goes first among its key's */
		if (DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)))
		{
			bool		tnull;
			bool		knull;
			Datum		tenant = SPI_getbinval(tup, desc, 3, &tnull);
			Datum		key = SPI_getbinval(tup, desc, 4, &knull);

			if (!knull)
			{
				text	   *k = DatumGetTextPP(key);
				text	   *t = tnull ? NULL : DatumGetTextPP(tenant);

				outbox_xact_key_waiting(topic_id, incarnation,
										TextDatumGetCString(SPI_getbinval(tup, desc, 7, &isnull)),
										id,
										outbox_key_hash(t ? VARDATA_ANY(t) : NULL,
														t ? VARSIZE_ANY_EXHDR(t) : 0,
														VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k)));
			}
		}

		/* the counts, once per topic */
		last_of_topic = (i + 1 == SPI_processed ||
						 DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i + 1], desc, 1,
													 &isnull)) != topic_id);
		if (last_of_topic)
		{
			int			nback = 1;

			for (uint64 j = i; j > 0 &&
				 DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[j - 1], desc, 1,
											 &isnull)) == topic_id; j--)
				nback++;
			outbox_xact_retry_changed(topic_id, GetCurrentTimestamp());
			outbox_xact_count(topic_id, incarnation, COUNT_REDRIVEN, nback);
		}
	}
	SPI_finish();
	PG_RETURN_INT32(count);
}
