/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Checking the arguments of the SQL functions, lease tokens, and the
 *	  retry backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "topic.h"
#include "util.h"

#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "common/pg_prng.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

/* A limit in words, whatever the session's IntervalStyle. */
static char *
usec_text(int64 usec)
{
	static const struct
	{
		int64		unit;
		const char *name;
	}			units[] = {
		{USECS_PER_DAY, "day"},
		{USECS_PER_HOUR, "hour"},
		{USECS_PER_MINUTE, "minute"},
		{USECS_PER_SEC, "second"},
		{1000, "millisecond"},
		{1, "microsecond"}
	};

	if (usec == 0)
		return "0";
	for (int i = 0; i < lengthof(units); i++)
	{
		if (usec % units[i].unit == 0)
		{
			int64		n = usec / units[i].unit;

			return psprintf(INT64_FORMAT " %s%s", n, units[i].name, n == 1 ? "" : "s");
		}
	}
	return psprintf(INT64_FORMAT " microseconds", usec);
}

/*
 * An interval argument in microseconds, months counted as 30 days, checked
 * against [min, max] (or (min, max] when !min_inclusive).
 */
int64
outbox_interval_usec(Interval *iv, const char *argname, int64 min_usec,
					 int64 max_usec, bool min_inclusive)
{
	int64		result;
	int64		days;
	bool		overflow;

	overflow = pg_mul_s64_overflow((int64) iv->month, 30, &days) ||
		pg_add_s64_overflow(days, (int64) iv->day, &days) ||
		pg_mul_s64_overflow(days, USECS_PER_DAY, &result) ||
		pg_add_s64_overflow(result, iv->time, &result);

	if (!overflow && (result < min_usec || (!min_inclusive && result == min_usec)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be %s %s", argname,
						min_inclusive ? "at least" : "greater than",
						usec_text(min_usec)),
				 errdetail("The value given was %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(iv))))));
	if (overflow || result > max_usec)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be at most %s", argname, usec_text(max_usec)),
				 errdetail("The value given was %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(iv))))));
	return result;
}

void
outbox_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("\"%s\" must not be null", argname)));
}

char *
outbox_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
				bool required)
{
	if (PG_ARGISNULL(argno))
	{
		if (required)
			outbox_require_arg(fcinfo, argno, argname);
		return NULL;
	}
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* A version 4 (random) UUID. */
void
outbox_random_uuid(pg_uuid_t *uuid)
{
	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random lease token")));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
}

/* The elements of a one-dimensional bigint[] argument, which holds no NULL. */
int64 *
outbox_int8_array(ArrayType *arr, const char *argname, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	int64	   *result;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("\"%s\" must be a one-dimensional array", argname)));
	deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, n);
	result = palloc(sizeof(int64) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("\"%s\" must not contain nulls", argname)));
		result[i] = DatumGetInt64(elems[i]);
	}
	return result;
}

/*
 * The wait before the next attempt after a failed attempt number
 * `attempt`: base * 2^(attempt - 1), at most the topic's maximum, of which
 * the upper half is random ("equal jitter"), so that consumers failing
 * together do not retry together.
 */
int64
outbox_backoff_usec(const OutboxTopicInfo *info, int attempt)
{
	int64		delay = info->backoff_base_usec;
	int64		half;

	for (int i = 1; i < attempt && delay < info->backoff_max_usec; i++)
		delay *= 2;
	if (delay > info->backoff_max_usec)
		delay = info->backoff_max_usec;
	/* never past retention: see outbox_check_delay */
	if (delay > info->retention_usec)
		delay = info->retention_usec;
	half = delay / 2;
	return (delay - half) + (int64) (pg_prng_double(&pg_global_prng_state) * (double) half);
}

/*
 * Refuse a delay longer than the topic's retention.  A delayed event keeps
 * the partition of the day it was offered until it is delivered, so a
 * delay of years would keep every partition of that day, whatever the
 * retention of the other events in it.
 */
void
outbox_check_delay(const OutboxTopicInfo *info, int64 delay_usec,
				   const char *argname)
{
	Interval	retention;

	if (delay_usec <= info->retention_usec)
		return;
	memset(&retention, 0, sizeof(retention));
	retention.time = info->retention_usec;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("\"%s\" is further ahead than the retention of topic \"%s\"",
					argname, info->name),
			 errdetail("The topic keeps events for %s; an event delayed longer would keep its day's partition past that.",
					   DatumGetCString(DirectFunctionCall1(interval_out,
														   IntervalPGetDatum(&retention)))),
			 errhint("Use a shorter delay, or a longer retention (outbox.alter_topic).")));
}

/*
 * The attribute numbers of the named columns in desc, in the order of
 * names.  Returns false if one is missing.
 */
bool
outbox_column_attnums(TupleDesc desc, const char *const *names, int n,
					  AttrNumber *attnums)
{
	for (int c = 0; c < n; c++)
	{
		attnums[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), names[c]) == 0)
			{
				attnums[c] = att->attnum;
				break;
			}
		}
		if (attnums[c] == InvalidAttrNumber)
			return false;
	}
	return true;
}

/*
 * Functions that change delivery state refuse on a standby and in a
 * read-only transaction, before they look at their arguments: a lease made
 * in a standby's memory could never be acked, and nothing they write can
 * be written there.
 */
void
outbox_require_writable(const char *function)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run on a standby", function),
				 errdetail("The server is in recovery: leases and events are handed out and written on the primary only."),
				 errhint("Connect to the primary.")));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot execute %s in a read-only transaction", function)));
}

/*
 * The key of an event of an ordered topic, as one 64-bit value: its tenant
 * (or none) and its key.  Two keys that hash alike are ordered as one,
 * which holds more back than needed and never breaks an order.
 */
uint64
outbox_key_hash(const char *tenant, int tenant_len, const char *key,
				int key_len)
{
	uint64		seed = 0;

	if (tenant != NULL)
		seed = hash_bytes_extended((const unsigned char *) tenant, tenant_len, 1) | 1;
	return hash_bytes_extended((const unsigned char *) key, key_len, seed);
}
