/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  The latency histograms' arithmetic (what percentile a histogram
 *	  gives; which bucket a latency goes in is metrics.h's, with the
 *	  buckets' layout) and the SQL functions behind outbox.metrics,
 *	  outbox.metrics_histograms() and outbox.reset_metrics().
 *	  The counters and histograms themselves are kept in shared memory by
 *	  shmem.c and written by it, under the shared state lock, when xact.c
 *	  has it settle a committing transaction; nothing here writes to a table.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "schema.h"
#include "shmem.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(outbox_metrics_counters);
PG_FUNCTION_INFO_V1(outbox_latency_quantile);
PG_FUNCTION_INFO_V1(outbox_metrics_kept);
PG_FUNCTION_INFO_V1(outbox_reset_metrics);

int			outbox_metrics_topics = 1024;

/*
 * _metrics(): per topic (and tenant part) of the current database, the
 * counters and both histograms (bucket counts, sum and max in
 * microseconds).  Empty without preloading.
 */
Datum
outbox_metrics_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OutboxCounters *counters;
	OutboxLatency *lat;
	int			n;

	outbox_require_schema();

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!outbox_shmem_available())
		return (Datum) 0;

	n = outbox_snapshot_metrics(&counters, &lat);

	for (int i = 0; i < n; i++)
	{
		OutboxCounters *c = &counters[i];
		Datum		values[15];
		bool		nulls[15];
		uint64		counts[7];

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(c->key.topic_id);
		values[1] = Int64GetDatum(c->incarnation);
		counts[0] = c->offered;
		counts[1] = c->claimed;
		counts[2] = c->acked;
		counts[3] = c->nacked;
		counts[4] = c->expired;
		counts[5] = c->dead_lettered;
		counts[6] = c->redriven;
		for (int k = 0; k < 7; k++)
			values[2 + k] = Int64GetDatum((int64) counts[k]);

		for (int h = 0; h < 2; h++)
		{
			int			col = 9 + 3 * h;
			OutboxHistogram *hist;
			Datum		elems[OUTBOX_LAT_BUCKETS];

			if (c->latency < 0)
			{
				nulls[col] = nulls[col + 1] = nulls[col + 2] = true;
				continue;
			}
			hist = h == 0 ? &lat[c->latency].wait : &lat[c->latency].delivery;
			for (int b = 0; b < OUTBOX_LAT_BUCKETS; b++)
				elems[b] = Int64GetDatum((int64) hist->buckets[b]);
			values[col] = PointerGetDatum(construct_array(elems, OUTBOX_LAT_BUCKETS,
														  INT8OID, 8, FLOAT8PASSBYVAL,
														  TYPALIGN_DOUBLE));
			values[col + 1] = Int64GetDatum(hist->sum_usec);
			values[col + 2] = Int64GetDatum(hist->max_usec);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * _latency(buckets bigint[], max_usec bigint, q float8) returns interval:
 * the q-quantile of a histogram, as the geometric middle of the bucket it
 * falls in, never above the largest latency seen; NULL for an empty one.
 */
Datum
outbox_latency_quantile(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	int64		max_usec = PG_GETARG_INT64(1);
	float8		q = PG_GETARG_FLOAT8(2);
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	uint64		total = 0;
	uint64		rank;
	uint64		seen = 0;
	double		usec = 0;
	Interval   *result;

	if (q < 0 || q > 1 || isnan(q))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the quantile must be between 0 and 1")));
	if (ARR_ELEMTYPE(arr) != INT8OID || ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("a latency histogram is a one-dimensional bigint array")));
	deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &enulls, &n);
	if (n != OUTBOX_LAT_BUCKETS)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("a latency histogram must have %d buckets", OUTBOX_LAT_BUCKETS),
				 errdetail("The array given has %d.", n)));
	for (int b = 0; b < n; b++)
		if (!enulls[b] && DatumGetInt64(elems[b]) > 0)
			total += (uint64) DatumGetInt64(elems[b]);
	if (total == 0)
		PG_RETURN_NULL();

	rank = (uint64) ceil(q * (double) total);
	if (rank < 1)
		rank = 1;
	for (int b = 0; b < n; b++)
	{
		if (!enulls[b] && DatumGetInt64(elems[b]) > 0)
			seen += (uint64) DatumGetInt64(elems[b]);
		if (seen < rank)
			continue;
		if (b == 0)
			usec = 0;
		else if (b == n - 1)
			usec = (double) max_usec;
		else
			usec = outbox_latency_bucket_low_usec(b) * pow(2.0, 0.5 / OUTBOX_LAT_PER_OCTAVE);
		break;
	}
	if (usec > (double) max_usec)
		usec = (double) max_usec;

	result = palloc0(sizeof(Interval));
	result->time = (int64) rint(usec);
	PG_RETURN_INTERVAL_P(result);
}

/* _metrics_kept(): does this server keep counters (is the library preloaded)? */
Datum
outbox_metrics_kept(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(outbox_shmem_available());
}

/*
 * reset_metrics(): the counters and latencies of outbox.metrics start again
 * from zero for every topic of the current database.  outbox.stats keeps
 * counting offered and acked events from server start.
 */
Datum
outbox_reset_metrics(PG_FUNCTION_ARGS)
{
	outbox_require_schema();
	if (!outbox_shmem_available())
		PG_RETURN_VOID();
	outbox_metrics_reset();
	PG_RETURN_VOID();
}
