/*-------------------------------------------------------------------------
 *
 * logscan.c
 *	  The ordered scan of one topic's log: every partition of outbox.event
 *	  is read through its (topic_id, id) btree index from a given id
 *	  upward, and the partitions' streams are merged by id.  The scan reads
 *	  the indexes directly, so its cost never depends on the planner's
 *	  estimates: a freshly filled partition without statistics is scanned
 *	  the same way as an analyzed one, and a claim reads only the index
 *	  entries above the scan position plus the rows it returns.
 *
 *	  Ids are not ordered by created_at across partition boundaries (an id
 *	  drawn just before midnight may commit after one drawn just after),
 *	  hence the merge rather than a walk over partitions in order.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "logscan.h"
#include "util.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/detoast.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "executor/tuptable.h"
#include "nodes/makefuncs.h"
#include "partitioning/partdesc.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

/* Columns the scan reads, by name; their order is OutboxEventCol's */
static const char *const column_names[] = {
	"id", "key", "type", "payload", "headers", "tenant", "created_at",
	"topic_id", "available_at"
};
#define SCAN_COLUMNS	lengthof(column_names)
#define ATT_TOPIC_ID	7
#define ATT_AVAILABLE	8

typedef struct LogScanPart
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	attnum[SCAN_COLUMNS];
	bool		valid;			/* slot holds the next row of this part */
	int64		id;				/* its id */
} LogScanPart;

struct OutboxLogScan
{
	int			nparts;
	int			maxparts;
	LogScanPart *parts;
	int64		examined;		/* highest id returned or stepped over */
};

/*
 * Advance one partition's stream to its next undelayed row.  Delayed rows
 * (outbox.retry owns them) are stepped over but count as examined.
 */
static void
part_advance(OutboxLogScan *ls, LogScanPart *p)
{
	for (;;)
	{
		bool		isnull;

		if (!index_getnext_slot(p->scan, ForwardScanDirection, p->slot))
		{
			p->valid = false;
			return;
		}
		p->id = DatumGetInt64(slot_getattr(p->slot, p->attnum[0], &isnull));
		(void) slot_getattr(p->slot, p->attnum[ATT_AVAILABLE], &isnull);
		p->valid = true;
		if (isnull)
			return;
		ls->examined = Max(ls->examined, p->id);
	}
}

/* The (topic_id, id) btree index of a leaf partition, opened. */
static Relation
part_index(Relation heap, const AttrNumber *attnum)
{
	List	   *indexes = RelationGetIndexList(heap);
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ind = index->rd_index;

		if (index->rd_rel->relam == BTREE_AM_OID &&
			ind->indisvalid && ind->indnkeyatts >= 2 &&
			ind->indkey.values[0] == attnum[ATT_TOPIC_ID] &&
			ind->indkey.values[1] == attnum[0] &&
			index->rd_indoption[0] == 0 && index->rd_indoption[1] == 0 &&
			RelationGetIndexExpressions(index) == NIL &&
			RelationGetIndexPredicate(index) == NIL)
		{
			list_free(indexes);
			return index;
		}
		index_close(index, AccessShareLock);
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("partition \"%s\" of outbox.event has no index on (topic_id, id)",
					RelationGetRelationName(heap)),
			 errhint("outbox.maintain() gives every partition that index; or run CREATE INDEX ON %s (topic_id, id).",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(heap)),
												RelationGetRelationName(heap)))));
	return NULL;				/* keep compiler quiet */
}

static void
add_partition(OutboxLogScan *ls, Oid relid)
{
	Relation	heap = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(heap);
	LogScanPart *p;

	if (heap->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		PartitionDesc pd = RelationGetPartitionDesc(heap, true);

		for (int i = 0; i < pd->nparts; i++)
			add_partition(ls, pd->oids[i]);
		table_close(heap, NoLock);
		return;
	}

	if (ls->nparts == ls->maxparts)
	{
		ls->maxparts *= 2;
		ls->parts = repalloc(ls->parts, sizeof(LogScanPart) * ls->maxparts);
	}
	p = &ls->parts[ls->nparts++];
	memset(p, 0, sizeof(*p));
	p->heap = heap;
	if (!outbox_column_attnums(desc, column_names, SCAN_COLUMNS, p->attnum))
		elog(ERROR, "partition \"%s\" of outbox.event lacks a column of the log",
			 RelationGetRelationName(heap));
	p->index = part_index(heap, p->attnum);
	p->slot = table_slot_create(heap, NULL);
}

/*
 * Open every partition of the log and its index, taking their locks.
 * Done before the caller takes the topic's scan lock (an LWLock), so that
 * no wait for a heavyweight lock happens while it is held.
 */
OutboxLogScan *
outbox_logscan_open(void)
{
	OutboxLogScan *ls = palloc0(sizeof(OutboxLogScan));
	Oid			relid = RangeVarGetRelid(makeRangeVar("outbox", "event", -1),
										 AccessShareLock, false);

	ls->maxparts = 16;
	ls->parts = palloc(sizeof(LogScanPart) * ls->maxparts);
	add_partition(ls, relid);
	return ls;
}

/*
 * Begin the scan of the topic's undelayed events with ids above after, as
 * snap sees them.  Takes no lock.
 */
void
outbox_logscan_begin(OutboxLogScan *ls, Snapshot snap, int32 topic_id,
					 int64 after)
{
	ScanKeyData keys[2];

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(topic_id));
	ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(after));
	ls->examined = after;
	for (int i = 0; i < ls->nparts; i++)
	{
		LogScanPart *p = &ls->parts[i];

		p->scan = outbox_index_beginscan(p->heap, p->index, snap, 2, 0);
		index_rescan(p->scan, keys, 2, NULL, 0);
		part_advance(ls, p);
	}
}

/* A datum of the current row, copied out of the slot and detoasted. */
static Datum
copy_value(LogScanPart *p, int col, bool *isnull)
{
	Datum		d = slot_getattr(p->slot, p->attnum[col], isnull);
	Form_pg_attribute att = TupleDescAttr(p->slot->tts_tupleDescriptor,
										  p->attnum[col] - 1);

	if (*isnull)
		return (Datum) 0;
	if (att->attlen == -1 && VARATT_IS_EXTERNAL(DatumGetPointer(d)))
		return PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(d)));
	return datumCopy(d, att->attbyval, att->attlen);
}

/*
 * The next event by id, stepping over the ids in skip (if given): fills row
 * (values in OutboxEventCol order, copied into the current memory context)
 * and returns true, or returns false when the scan is done.
 */
bool
outbox_logscan_next(OutboxLogScan *ls, OutboxEventRow *row,
					OutboxSkipList *skip)
{
	for (;;)
	{
		LogScanPart *best = NULL;

		for (int i = 0; i < ls->nparts; i++)
		{
			LogScanPart *p = &ls->parts[i];

			if (p->valid && (best == NULL || p->id < best->id))
				best = p;
		}
		if (best == NULL)
			return false;
		ls->examined = Max(ls->examined, best->id);

		if (skip != NULL)
		{
			while (skip->next < skip->n && skip->ids[skip->next] < best->id)
				skip->next++;
			if (skip->next < skip->n && skip->ids[skip->next] == best->id)
			{
				part_advance(ls, best);
				continue;
			}
		}

		row->id = best->id;
		for (int c = 0; c < OUTBOX_EVENT_NCOLS; c++)
			row->values[c] = copy_value(best, c, &row->nulls[c]);
		part_advance(ls, best);
		return true;
	}
}

/* The highest id the scan returned or stepped over so far. */
int64
outbox_logscan_examined(OutboxLogScan *ls)
{
	return ls->examined;
}

/* End the index scans; the relations stay open for another begin. */
void
outbox_logscan_end(OutboxLogScan *ls)
{
	for (int i = 0; i < ls->nparts; i++)
	{
		LogScanPart *p = &ls->parts[i];

		if (p->scan)
			index_endscan(p->scan);
		p->scan = NULL;
		p->valid = false;
		ExecClearTuple(p->slot);
	}
}

/* Close what outbox_logscan_open opened; the locks stay. */
void
outbox_logscan_close(OutboxLogScan *ls)
{
	outbox_logscan_end(ls);
	for (int i = 0; i < ls->nparts; i++)
	{
		LogScanPart *p = &ls->parts[i];

		ExecDropSingleTupleTableSlot(p->slot);
		index_close(p->index, NoLock);
		table_close(p->heap, NoLock);
	}
	pfree(ls->parts);
	pfree(ls);
}
