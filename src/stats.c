/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  What shared memory knows of each topic, for the outbox.stats view:
 *	  leases held and the offered/acked counters since the server started.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(outbox_shmem_topics);

typedef struct TopicCopy
{
	int32		topic_id;
	int64		incarnation;
	int			nleases;
	int64	   *lease_ids;
	uint64		offered;
	uint64		acked;
	bool		counted;		/* has a row of counters */
} TopicCopy;

Datum
outbox_shmem_topics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TopicCopy  *copies;
	OutboxCounters *counters;
	int			ncounters;
	int			maxcounters;
	int			ncopies = 0;
	int			nleases = 0;
	int64	   *ids;
	int			next = 0;

	outbox_require_schema();

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!outbox_shmem_available())
		return (Datum) 0;

	/* Allocate outside the lock, then copy under it. */
	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->max_topics; i++)
		nleases += outbox_shared->topics[i].nleases;
	maxcounters = outbox_counters_count();
	LWLockRelease(outbox_shared->lock);
	nleases += 1024;			/* slack for leases made meanwhile */
	maxcounters += 1024;
	ids = palloc(sizeof(int64) * nleases);
	copies = palloc(sizeof(TopicCopy) * outbox_shared->max_topics);
	counters = palloc(sizeof(OutboxCounters) * maxcounters);

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];
		TopicCopy  *c;
		dlist_iter	it;

		if (!t->in_use || t->dbid != MyDatabaseId || t->incarnation == 0)
			continue;
		c = &copies[ncopies++];
		c->topic_id = t->topic_id;
		c->incarnation = t->incarnation;
		c->lease_ids = &ids[next];
		c->nleases = 0;
		c->counted = false;
		dlist_foreach(it, &t->leases)
		{
			OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

			if (next >= nleases)
				break;
			ids[next++] = e->key.event_id;
			c->nleases++;
		}
	}
	ncounters = outbox_counters_copy(counters, maxcounters);
	LWLockRelease(outbox_shared->lock);

	/* a row per topic with counters; its leases if it has a slot */
	for (int i = 0; i < ncounters; i++)
	{
		OutboxCounters *oc = &counters[i];
		TopicCopy  *c = NULL;
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
				break;
			}
		}
		if (c != NULL)
		{
			nl = c->nleases;
			c->counted = true;
		}
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
		TopicCopy  *c = &copies[j];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, true, true};
		Datum	   *elems;

		if (c->counted)
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
