/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  Settling leases: ack, nack, extend_lease and dead_letter.  Each
 *	  checks that the token presented is the event's current lease; a stale
 *	  token changes nothing and says so in the result.  A lease being
 *	  settled is marked, so that a concurrent ack or reap of it loses; it
 *	  ends when the settling transaction commits, and is intact again if it
 *	  rolls back (xact.c).  A session acting for a tenant settles leases on
 *	  that tenant's events only (tenant.c).
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "dead_letter.h"
#include "reap.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"
#include "xact.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(outbox_ack_one);
PG_FUNCTION_INFO_V1(outbox_ack_many);
PG_FUNCTION_INFO_V1(outbox_nack);
PG_FUNCTION_INFO_V1(outbox_extend_lease);
PG_FUNCTION_INFO_V1(outbox_dead_letter);

typedef OutboxSettling Settled;

/*
 * The ids of one lease: a lease holds at most OUTBOX_MAX_BATCH events, so a
 * longer array cannot name only its events.  Refused before anything looks
 * at shared memory: the caller's input never sizes work done under the
 * shared state lock beyond that bound.
 */
static int64 *
lease_ids(FunctionCallInfo fcinfo, int *n)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	int			count = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));

	if (count > OUTBOX_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"ids\" may hold at most %d elements", OUTBOX_MAX_BATCH),
				 errdetail("It holds %d; one lease holds at most %d events.", count, OUTBOX_MAX_BATCH)));
	return outbox_int8_array(arr, "ids", n);
}

/*
 * Mark the leases of ids held under token as being settled by this
 * transaction.  Returns how many; out[] describes them.
 */
static int
mark_settling(int64 *ids, int n, pg_uuid_t *token, OutboxOpKind kind,
			  Settled *out)
{
	int			nout;

	outbox_xact_reserve_ops(n);
	nout = outbox_lease_mark_settling(ids, n, token, kind == OP_ACK, out);
	for (int i = 0; i < nout; i++)
		outbox_xact_add_lease_op(kind, out[i].id, out[i].topic, 0, token);
	return nout;
}

/*
 * Make acks durable: one outbox.acked row per topic, and the retry rows of
 * events that had one removed.
 */
static void
record_acks(Settled *s, int n)
{
	static const Oid ack_types[3] = {INT4OID, INT8OID, INT8ARRAYOID};
	static const OutboxPlanId insert_plan[2] = {PLAN_ACK_INSERT_0, PLAN_ACK_INSERT_1};
	static const char *const insert_sql[2] = {
		"INSERT INTO outbox.acked_0 (topic_id, gen, max_id, ids) VALUES ($1, 0, $2, $3)",
		"INSERT INTO outbox.acked_1 (topic_id, gen, max_id, ids) VALUES ($1, 1, $2, $3)"
	};
	static const Oid del_types[1] = {INT8ARRAYOID};
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *retry_ids = palloc(sizeof(Datum) * n);
	bool	   *done = palloc0(sizeof(bool) * n);
	int			nretry = 0;
	int			rc;

	for (int i = 0; i < n; i++)
		if (s[i].source == SRC_RETRY)
			retry_ids[nretry++] = Int64GetDatum(s[i].id);

	for (int i = 0; i < n; i++)
	{
		int			nids = 0;
		int64		max_id = 0;
		Datum		values[3];
		char		nulls[3] = {' ', ' ', ' '};
		int			gen;

		if (done[i])
			continue;
		for (int j = i; j < n; j++)
		{
			if (done[j] || s[j].topic_id != s[i].topic_id)
				continue;
			done[j] = true;
			ids[nids++] = Int64GetDatum(s[j].id);
			max_id = Max(max_id, s[j].id);
		}
		values[0] = Int32GetDatum(s[i].topic_id);
		values[1] = Int64GetDatum(max_id);
		/* an ack of one event is said by max_id alone */
		nulls[2] = (nids == 1) ? 'n' : ' ';
		values[2] = (nids == 1) ? (Datum) 0 :
			PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
											FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		/* straight into the generation taking acknowledgements now */
		gen = outbox_ack_generation();
		rc = outbox_exec(insert_plan[gen], insert_sql[gen],
						 3, ack_types, values, nulls, false, 0);
		outbox_spi_check(rc, SPI_OK_INSERT, "ack");
	}

	if (nretry > 0)
	{
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(retry_ids, nretry, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		rc = outbox_exec(PLAN_RETRY_DELETE,
						 "DELETE FROM outbox.retry WHERE event_id = ANY ($1)",
						 1, del_types, values, NULL, false, 0);
		outbox_spi_check(rc, SPI_OK_DELETE, "ack");
	}
}

static int
ack_ids(int64 *ids, int n, pg_uuid_t *token)
{
	Settled    *s;
	int			nsettled;

	if (!outbox_shmem_available() || n == 0)
		return 0;
	n = outbox_tenant_filter_ids(ids, n);
	if (n == 0)
		return 0;
	s = palloc(sizeof(Settled) * n);
	nsettled = mark_settling(ids, n, token, OP_ACK, s);
	if (nsettled > 0)
	{
		SPI_connect();
		record_acks(s, nsettled);
		SPI_finish();
	}
	return nsettled;
}

/* ack(id, lease_token) returns boolean */
Datum
outbox_ack_one(PG_FUNCTION_ARGS)
{
	int64		id;

	outbox_require_writable("outbox.ack()");
	outbox_require_schema();

	outbox_require_arg(fcinfo, 0, "id");
	outbox_require_arg(fcinfo, 1, "lease_token");
	id = PG_GETARG_INT64(0);
	PG_RETURN_BOOL(ack_ids(&id, 1, PG_GETARG_UUID_P(1)) == 1);
}

/* ack(ids, lease_token) returns integer: how many were acked */
Datum
outbox_ack_many(PG_FUNCTION_ARGS)
{
	int64	   *ids;
	int			n;

	outbox_require_writable("outbox.ack()");
	outbox_require_schema();

	outbox_require_arg(fcinfo, 0, "ids");
	outbox_require_arg(fcinfo, 1, "lease_token");
	ids = lease_ids(fcinfo, &n);
	PG_RETURN_INT32(ack_ids(ids, n, PG_GETARG_UUID_P(1)));
}

/*
 * Settle one lease that failed: look its topic up, then mark it.  Returns
 * false if token is not the event's current lease.
 */
static bool
settle_failed(int64 id, pg_uuid_t *token, Settled *s, OutboxTopicInfo *info)
{
	int32		topic_id;

	if (!outbox_shmem_available() || outbox_tenant_filter_ids(&id, 1) == 0)
		return false;

	topic_id = outbox_lease_topic_id(id, token);
	if (topic_id == 0 || !outbox_lookup_topic_by_id(topic_id, info))
		return false;

	return mark_settling(&id, 1, token, OP_FINISH, s) == 1;
}

/*
 * nack(id, lease_token, error, retry_after) returns text: 'retry' (the
 * event is available again after retry_after, or after the topic's
 * backoff), 'dead' (attempts are used up), or NULL for a stale token.
 */
Datum
outbox_nack(PG_FUNCTION_ARGS)
{
	int64		id;
	char	   *error;
	int64		delay_usec = -1;
	Settled		s;
	OutboxTopicInfo info;
	const char *result;

	outbox_require_writable("outbox.nack()");
	outbox_require_schema();
	error = outbox_text_arg(fcinfo, 2, "error", false);

	outbox_require_arg(fcinfo, 0, "id");
	outbox_require_arg(fcinfo, 1, "lease_token");
	id = PG_GETARG_INT64(0);
	if (!PG_ARGISNULL(3))
		delay_usec = outbox_interval_usec(PG_GETARG_INTERVAL_P(3), "retry_after",
										  0, OUTBOX_MAX_RETRY_USEC, true);

	SPI_connect();
	if (!settle_failed(id, PG_GETARG_UUID_P(1), &s, &info))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}

	if (delay_usec > 0)
		outbox_check_delay(&info, delay_usec, "retry_after");
	if (s.attempt >= info.max_attempts)
	{
		outbox_send_to_dead_letter(id, info.topic_id, s.attempt,
								   "max attempts reached", error);
		outbox_xact_count(info.topic_id, info.incarnation, COUNT_DEAD_LETTERED, 1);
		result = "dead";
	}
	else
	{
		TimestampTz at;

		if (delay_usec < 0)
			delay_usec = outbox_backoff_usec(&info, s.attempt);
		at = GetCurrentTimestamp() + delay_usec;
		outbox_schedule_retry(id, info.topic_id, s.attempt, at, error);
		outbox_xact_finish_retry(id, at);
		outbox_xact_retry_changed(s.topic_id, at);
		result = "retry";
	}
	outbox_xact_count(info.topic_id, info.incarnation, COUNT_NACKED, 1);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * dead_letter(id, lease_token, reason) returns boolean: give the event up
 * now, whatever attempts are left.
 */
Datum
outbox_dead_letter(PG_FUNCTION_ARGS)
{
	int64		id;
	char	   *reason;
	Settled		s;
	OutboxTopicInfo info;

	outbox_require_writable("outbox.dead_letter()");
	outbox_require_schema();
	reason = outbox_text_arg(fcinfo, 2, "reason", true);

	outbox_require_arg(fcinfo, 0, "id");
	outbox_require_arg(fcinfo, 1, "lease_token");
	id = PG_GETARG_INT64(0);
	if (reason[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"reason\" must not be empty")));

	SPI_connect();
	if (!settle_failed(id, PG_GETARG_UUID_P(1), &s, &info))
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	outbox_send_to_dead_letter(id, info.topic_id, s.attempt, reason, NULL);
	outbox_xact_count(info.topic_id, info.incarnation, COUNT_DEAD_LETTERED, 1);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/*
 * extend_lease(ids, lease_token, lease) returns integer: push the expiry of
 * the leases still held under token to now + lease.  Takes effect at once.
 */
Datum
outbox_extend_lease(PG_FUNCTION_ARGS)
{
	int64	   *ids;
	int			n;
	pg_uuid_t  *token;
	int64		lease_usec;
	TimestampTz expires_at;
	int			count;

	outbox_require_writable("outbox.extend_lease()");
	outbox_require_schema();

	outbox_require_arg(fcinfo, 0, "ids");
	outbox_require_arg(fcinfo, 1, "lease_token");
	outbox_require_arg(fcinfo, 2, "lease");
	ids = lease_ids(fcinfo, &n);
	token = PG_GETARG_UUID_P(1);
	lease_usec = outbox_interval_usec(PG_GETARG_INTERVAL_P(2), "lease", 0,
									  OUTBOX_MAX_LEASE_USEC, false);
	if (!outbox_shmem_available())
		PG_RETURN_INT32(0);
	n = outbox_tenant_filter_ids(ids, n);

	expires_at = GetCurrentTimestamp() + lease_usec;
	count = outbox_lease_extend(ids, n, token, expires_at);
	PG_RETURN_INT32(count);
}
