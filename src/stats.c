/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  What shared memory knows of each topic, for the outbox.stats view:
 *	  leases held and the offered/acked counters since the server started.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "schema.h"
#include "shmem.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(outbox_shmem_topics);

Datum
outbox_shmem_topics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OutboxTopicLeases *copies;
	bool	   *counted;
	OutboxCounters *counters;
	int			ncounters;
	int			ncopies;

	outbox_require_schema();

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!outbox_shmem_available())
		return (Datum) 0;

	ncopies = outbox_snapshot_leases(&copies, &counters, &ncounters);
	counted = palloc0(sizeof(bool) * Max(1, ncopies));

	/* a row per topic with counters; its leases if it has a slot */
	for (int i = 0; i < ncounters; i++)
	{
		OutboxCounters *oc = &counters[i];
		OutboxTopicLeases *c = NULL;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		Datum	   *elems;
		int			nl = 0;

		for (int j = 0; j < ncopies; j++)
		{
			if (copies[j].topic_id == oc->key.topic_id &&
				copies[j].incarnation == oc->incarnation)
			{
				c = &copies[j];
				counted[j] = true;
				break;
			}
		}
		if (c != NULL)
			nl = c->nleases;
		elems = palloc(sizeof(Datum) * Max(1, nl));
		for (int j = 0; j < nl; j++)
			elems[j] = Int64GetDatum(c->lease_ids[j]);
		values[0] = Int32GetDatum(oc->key.topic_id);
		values[1] = Int64GetDatum(oc->incarnation);
		values[2] = Int64GetDatum(nl);
		values[3] = PointerGetDatum(construct_array(elems, nl, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[4] = Int64GetDatum((int64) (oc->offered + oc->offered_before));
		values[5] = Int64GetDatum((int64) (oc->acked + oc->acked_before));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	/* topics whose counters found no room: their leases all the same */
	for (int j = 0; j < ncopies; j++)
	{
		OutboxTopicLeases *c = &copies[j];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, true, true};
		Datum	   *elems;

		if (counted[j])
			continue;
		elems = palloc(sizeof(Datum) * Max(1, c->nleases));
		for (int k = 0; k < c->nleases; k++)
			elems[k] = Int64GetDatum(c->lease_ids[k]);
		values[0] = Int32GetDatum(c->topic_id);
		values[1] = Int64GetDatum(c->incarnation);
		values[2] = Int64GetDatum(c->nleases);
		values[3] = PointerGetDatum(construct_array(elems, c->nleases, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[4] = values[5] = (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
