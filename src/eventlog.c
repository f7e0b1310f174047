/*-------------------------------------------------------------------------
 *
 * eventlog.c
 *	  Writing one event into the log without the executor: the row goes
 *	  straight into the partition of outbox.event whose range holds its
 *	  created_at, and into that partition's indexes.  This is what offer()
 *	  does for each event; it saves the planner's revalidation, the
 *	  executor's start-up and the partition routing of an INSERT
 *	  statement.
 *
 *	  The fast path is taken only when the partition is plain: a leaf
 *	  table without triggers, check constraints, row security, and with
 *	  indexes on columns only.  Anything else (a default partition, a
 *	  partition someone changed) makes the caller use its INSERT
 *	  statement, which handles every case.
 *
 *	  It also draws event ids.  The backend remembers the sequence, the log,
 *	  and the partition that took the last event with its range; any
 *	  relcache invalidation makes it look them up again.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "eventlog.h"
#include "spi_util.h"
#include "util.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/makefuncs.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/partcache.h"
#include "utils/rel.h"

/* Columns the fast path writes, by name; order of OutboxLogRow's fields */
static const char *const log_columns[] = {
	"id", "topic_id", "created_at", "available_at", "key", "type",
	"tenant", "payload", "headers", "origin_id"
};
#define NLOG_COLUMNS	lengthof(log_columns)

typedef struct TargetPartition
{
	bool		valid;
	bool		usable;			/* the fast path may write into it */
	Oid			parent;
	Oid			relid;
	TimestampTz lo;				/* its range: [lo, hi) */
	TimestampTz hi;
	AttrNumber	attnum[NLOG_COLUMNS];
} TargetPartition;

static TargetPartition target;
static Oid	event_relid = InvalidOid;	/* outbox.event */
static Oid	event_id_seq = InvalidOid;	/* outbox.event_id_seq */

static void
eventlog_invalidate(Datum arg, Oid relid)
{
	target.valid = false;
	event_relid = InvalidOid;
	event_id_seq = InvalidOid;
}

void
outbox_eventlog_init(void)
{
	CacheRegisterRelcacheCallback(eventlog_invalidate, (Datum) 0);
}

/* The next event id, drawn from outbox.event_id_seq. */
int64
outbox_next_event_id(void)
{
	if (!OidIsValid(event_id_seq))
		event_id_seq = RangeVarGetRelid(makeRangeVar("outbox", "event_id_seq", -1),
										NoLock, false);
	return nextval_internal(event_id_seq, false);
}

/*
 * The last id drawn from the sequence so far, by any session (not MVCC: a
 * sequence is read as it is).  Caller is connected to SPI.
 */
int64
outbox_last_event_id(void)
{
	bool		isnull;
	int			rc;

	rc = outbox_exec(PLAN_LAST_EVENT_ID,
					 "SELECT last_value FROM outbox.event_id_seq",
					 0, NULL, NULL, NULL, true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "event ids");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/* Is this partition one the fast path can write into? */
static bool
partition_is_plain(Relation rel, AttrNumber *attnum)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;
	ListCell   *lc;
	bool		plain = true;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->trigdesc != NULL ||
		rel->rd_rel->relrowsecurity ||
		(desc->constr != NULL && desc->constr->num_check > 0))
		return false;

	if (!outbox_column_attnums(desc, log_columns, NLOG_COLUMNS, attnum))
		return false;
	/* only id, topic_id, created_at and payload are never NULL here */
	for (int c = 3; c < (int) NLOG_COLUMNS; c++)
	{
		if (c != 7 && TupleDescAttr(desc, attnum[c] - 1)->attnotnull)
			return false;
	}
	/* every other column must be one we may leave NULL */
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		bool		ours = false;

		for (int c = 0; c < (int) NLOG_COLUMNS; c++)
			ours |= (attnum[c] == att->attnum);
		if (!ours && !att->attisdropped && (att->attnotnull || att->atthasdef))
			return false;
	}

	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		if (RelationGetIndexExpressions(index) != NIL ||
			RelationGetIndexPredicate(index) != NIL ||
			!index->rd_index->indisready || index->rd_index->indisexclusion ||
			!index->rd_index->indimmediate)
			plain = false;
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return plain;
}

/*
 * Find the partition whose range holds ts, and whether it is plain.
 * Returns false when ts falls in no finite range of a leaf partition.
 */
static bool
find_target(Oid parent_relid, TimestampTz ts)
{
	Relation	parent;
	PartitionKey key;
	PartitionDesc pd;
	PartitionBoundInfo bi;
	Datum		value = TimestampTzGetDatum(ts);
	bool		equal;
	int			offset;
	int			partidx;
	bool		found = false;

	if (target.valid && target.parent == parent_relid &&
		ts >= target.lo && ts < target.hi)
		return target.usable;

	target.valid = false;

	parent = table_open(parent_relid, NoLock);	/* caller holds a lock */
	key = RelationGetPartitionKey(parent);
	pd = RelationGetPartitionDesc(parent, true);
	bi = pd->boundinfo;
	if (key == NULL || key->strategy != PARTITION_STRATEGY_RANGE ||
		key->partnatts != 1 || bi == NULL || bi->ndatums == 0 ||
		parent->trigdesc != NULL)
	{
		table_close(parent, NoLock);
		return false;
	}

	offset = partition_range_datum_bsearch(key->partsupfunc, key->partcollation,
										   bi, 1, &value, &equal);
	partidx = bi->indexes[offset + 1];
	if (partidx >= 0 && offset >= 0 && offset + 1 < bi->ndatums &&
		bi->kind[offset][0] == PARTITION_RANGE_DATUM_VALUE &&
		bi->kind[offset + 1][0] == PARTITION_RANGE_DATUM_VALUE &&
		pd->is_leaf[partidx])
	{
		Relation	rel = table_open(pd->oids[partidx], RowExclusiveLock);

		target.parent = parent_relid;
		target.relid = pd->oids[partidx];
		target.lo = DatumGetTimestampTz(bi->datums[offset][0]);
		target.hi = DatumGetTimestampTz(bi->datums[offset + 1][0]);
		target.usable = partition_is_plain(rel, target.attnum);
		target.valid = (ts >= target.lo && ts < target.hi);
		found = target.valid && target.usable;
		table_close(rel, NoLock);
	}
	table_close(parent, NoLock);
	return found;
}

/*
 * Write one event into the log.  Returns false, having written nothing,
 * when the fast path does not apply; the caller then uses its INSERT.
 */
bool
outbox_log_insert(const OutboxLogRow *row)
{
	Oid			parent_relid;
	TimestampTz created_at = GetCurrentTransactionStartTimestamp();
	Relation	rel;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	tup;
	TupleTableSlot *slot;
	CatalogIndexState indstate;

	if (!OidIsValid(event_relid))
		event_relid = RangeVarGetRelid(makeRangeVar("outbox", "event", -1),
									   NoLock, false);
	parent_relid = event_relid;
	LockRelationOid(parent_relid, RowExclusiveLock);

	if (!find_target(parent_relid, created_at))
		return false;
	rel = table_open(target.relid, RowExclusiveLock);
	if (!target.valid)
	{
		/* the lock took in an invalidation: look again */
		table_close(rel, NoLock);
		if (!find_target(parent_relid, created_at))
			return false;
		rel = table_open(target.relid, RowExclusiveLock);
		if (!target.valid)
		{
			table_close(rel, NoLock);
			return false;
		}
	}
	desc = RelationGetDescr(rel);
	values = palloc0(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	memset(nulls, true, sizeof(bool) * desc->natts);

#define SET_COL(c, isnull, datum) \
	do { \
		nulls[target.attnum[c] - 1] = (isnull); \
		values[target.attnum[c] - 1] = (datum); \
	} while (0)
	SET_COL(0, false, Int64GetDatum(row->id));
	SET_COL(1, false, Int32GetDatum(row->topic_id));
	SET_COL(2, false, TimestampTzGetDatum(created_at));
	SET_COL(3, !row->delayed, TimestampTzGetDatum(row->available_at));
	SET_COL(4, row->key == (Datum) 0, row->key);
	SET_COL(5, row->type == (Datum) 0, row->type);
	SET_COL(6, row->tenant == (Datum) 0, row->tenant);
	SET_COL(7, false, row->payload);
	SET_COL(8, row->headers == (Datum) 0, row->headers);
	SET_COL(9, true, (Datum) 0);
#undef SET_COL

	tup = heap_form_tuple(desc, values, nulls);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	ExecStoreHeapTuple(tup, slot, false);
	table_tuple_insert(rel, slot, GetCurrentCommandId(true), 0, NULL);

	/* the indexes: plain columns only, checked above */
	indstate = CatalogOpenIndexes(rel);
	for (int i = 0; i < indstate->ri_NumIndices; i++)
	{
		IndexInfo  *ii = indstate->ri_IndexRelationInfo[i];
		Datum		ivalues[INDEX_MAX_KEYS];
		bool		inulls[INDEX_MAX_KEYS];

		if (!ii->ii_ReadyForInserts)
			continue;
		FormIndexDatum(ii, slot, NULL, ivalues, inulls);
		(void) index_insert(indstate->ri_IndexRelationDescs[i], ivalues, inulls,
							&slot->tts_tid, rel,
							indstate->ri_IndexRelationDescs[i]->rd_index->indisunique ?
							UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
							false, ii);
	}
	CatalogCloseIndexes(indstate);

	ExecDropSingleTupleTableSlot(slot);
	heap_freetuple(tup);
	table_close(rel, NoLock);

	/* later statements of this transaction see the event */
	CommandCounterIncrement();
	return true;
}
