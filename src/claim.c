/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Consuming: claim.  A claim leases up to batch_size events of a topic,
 *	  taking them in this order: events handed back and waiting on the
 *	  topic's ready list, events due in outbox.retry, then the log itself,
 *	  scanned upward from the topic's scan position by (topic_id, id).  The
 *	  leases are made in shared memory and write nothing durable; if the
 *	  claiming transaction rolls back they are undone at once (xact.c).
 *
 *	  Only one claim of a topic scans at a time (a heavyweight lock, taken
 *	  and released by each attempt).  The scan reads holding no LWLock, so
 *	  that it can be cancelled and its lock waits are seen by the deadlock
 *	  detector, and offers that commit meanwhile do not wait for it.  When
 *	  it sets the scan position it marks the offer slots of transactions in
 *	  flight in its snapshot (their events it could not see go on the ready
 *	  list when they commit), and puts on the ready list those that
 *	  committed while it read (the topic's handoff, shmem.c).
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"
#include "logscan.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"
#include "xact.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(outbox_claim);

/* Columns every fetch returns, in OutboxEventCol order */
#define EVENT_COLUMNS "e.id, e.key, e.type, e.payload, e.headers, e.tenant, e.created_at"
#define COL_ATTEMPTS	(OUTBOX_EVENT_NCOLS + 1)

/*
 * The settled ids of a topic in (pos, recovery_until]: acknowledged, waiting
 * in outbox.retry, or dead.  After a restart the scan steps over them.
 */
static const char *settled_sql =
"SELECT k.id FROM outbox._settled() k "
"WHERE k.topic_id = $1 AND k.id > $2 AND k.id <= $3 "
"ORDER BY 1";

/*
 * The backend's copy of a recovering topic's settled ids, loaded by its
 * first claim of the topic since the restart.  Nothing above the scan
 * position can become settled later without the scan passing it first (a
 * lease comes before any ack, nack or dead letter), so the copy stays
 * right for every later claim while the topic recovers, as long as the
 * scan position only moves up: when it is moved down (the topic's
 * scan_epoch changes), the copy is loaded again.
 */
typedef struct SettledCache
{
	int32		topic_id;
	int64		incarnation;
	int64		recovery_until;
	uint64		scan_epoch;		/* the topic's, when loaded */
	int64		loaded_from;	/* the scan position it was loaded at */
	int64	   *ids;			/* sorted */
	int			nids;
} SettledCache;

static List *settled_caches = NIL;

static const char *fetch_ready_sql =
"SELECT " EVENT_COLUMNS " FROM outbox.event e "
"WHERE e.topic_id = $1 AND e.id = ANY ($2) ORDER BY e.id";

static const char *retry_due_sql =
"SELECT " EVENT_COLUMNS ", r.attempts FROM outbox.retry r "
"JOIN outbox.event e ON e.topic_id = r.topic_id AND e.id = r.event_id "
"WHERE r.topic_id = $1 AND r.available_at <= $2 "
"ORDER BY r.available_at, r.event_id LIMIT $3";

/*
 * How many events of keys held back by an earlier event one claim of an
 * ordered topic reads past, at most, to fill its batch from other keys.
 */
#define OUTBOX_HOLD_PER_CLAIM	1024

/*
 * How many held events of one key a claim of an ordered topic takes before
 * it reads the log: a key with a long run waiting (a hot key) gets a tenth
 * of a batch while other keys have events to go, and the rest of the batch
 * only when the log has too few of them.
 */
#define OUTBOX_RUN_FIRST(batch)	Max(1, (batch) / 10)

typedef struct ClaimState
{
	OutboxTopicInfo *info;
	int			topic;			/* the topic's shared slot, or -1 */
	OutboxCandidate *cand;		/* what may be leased (shmem.h), */
	OutboxEventRow *rows;		/* and its rows */
	int			ncand;
	int			nfree;			/* of them, not held back behind a key */
	int			maxcand;		/* room in cand and rows */
	int			batch;
	OutboxLogScan *ls;			/* the log's partitions, opened and locked */
} ClaimState;

/*
 * In an ordered topic, a row with a key: its hash (tenant and key).  Returns
 * false for other rows.
 */
static bool
row_key(ClaimState *cs, const OutboxEventRow *row, uint64 *hash)
{
	text	   *key;
	text	   *tenant;

	*hash = 0;
	if (!cs->info->ordered || row->nulls[EV_KEY])
		return false;
	key = DatumGetTextPP(row->values[EV_KEY]);
	tenant = row->nulls[EV_TENANT] ? NULL : DatumGetTextPP(row->values[EV_TENANT]);
	*hash = outbox_key_hash(tenant ? VARDATA_ANY(tenant) : NULL,
							tenant ? VARSIZE_ANY_EXHDR(tenant) : 0,
							VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	return true;
}

static void
add_candidate(ClaimState *cs, const OutboxEventRow *row, uint8 source,
			  bool from_ready, bool held, int32 attempts)
{
	OutboxCandidate *c = &cs->cand[cs->ncand];

	Assert(cs->ncand < cs->maxcand);
	cs->rows[cs->ncand++] = *row;
	c->id = row->id;
	c->source = source;
	c->from_ready = from_ready;
	c->held = held;
	c->keyed = row_key(cs, row, &c->keyhash);
	c->member_new = false;
	c->attempts = attempts;
	c->created_at = row->nulls[EV_CREATED_AT] ? 0 :
		DatumGetTimestampTz(row->values[EV_CREATED_AT]);
	c->leased = false;
	c->attempt = 0;
}

/* A row fetched through SPI; its values live until SPI_finish. */
static void
spi_row(HeapTuple tup, TupleDesc desc, OutboxEventRow *row)
{
	for (int c = 0; c < OUTBOX_EVENT_NCOLS; c++)
		row->values[c] = SPI_getbinval(tup, desc, c + 1, &row->nulls[c]);
	row->id = DatumGetInt64(row->values[EV_ID]);
}

/* The topic's durable watermark, as snap sees it. */
static int64
durable_watermark(ClaimState *cs, Snapshot snap)
{
	static const Oid wtypes[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;
	int			rc;

	values[0] = Int32GetDatum(cs->info->topic_id);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_WATERMARK,
										  "SELECT watermark FROM outbox.topic_state WHERE topic_id = $1",
										  1, wtypes),
							  values, NULL, snap, InvalidSnapshot, true, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	if (SPI_processed != 1)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/* Shared memory has no room to follow more events of ordered topics. */
static void
keys_full_error(ClaimState *cs)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("too many events of ordered topics are leased, waiting or held back"),
			 errdetail("Shared memory follows at most %d such events (outbox.max_ordered_events) of at most %d keys (outbox.max_ordered_keys); topic \"%s\" needs more.",
					   outbox_max_ordered_events, outbox_max_ordered_keys,
					   cs->info->name),
			 errhint("Ack the leased events of ordered topics, or raise outbox.max_ordered_events or outbox.max_ordered_keys and restart the server.")));
}

/*
 * An ordered topic's events waiting in outbox.retry (retries, delayed
 * offers, redrives) hold their keys back: before its first claim since
 * the server started, they become members of their keys in shared memory.
 * Events of its keys made to wait later do so themselves (a lease's end,
 * outbox_xact_key_waiting).
 */
static void
load_waiting_keys(ClaimState *cs, Snapshot snap)
{
	static const Oid types[1] = {INT4OID};
	Datum		values[1];
	int			rc;
	int64	   *ids;
	uint64	   *hashes;
	int			n;

	values[0] = Int32GetDatum(cs->info->topic_id);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_WAITING_KEYS,
										  "SELECT r.event_id, e.tenant, e.key FROM outbox.retry r "
										  "JOIN outbox.event e ON e.topic_id OPERATOR(pg_catalog.=) r.topic_id "
										  " AND e.id OPERATOR(pg_catalog.=) r.event_id "
										  "WHERE r.topic_id OPERATOR(pg_catalog.=) $1 AND e.key IS NOT NULL "
										  "ORDER BY r.event_id",
										  1, types),
							  values, NULL, snap, InvalidSnapshot, true, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	if (SPI_processed > (uint64) outbox_max_ordered_events)
		keys_full_error(cs);
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(1, n));
	hashes = palloc(sizeof(uint64) * Max(1, n));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		tnull;
		Datum		tenant = SPI_getbinval(tup, desc, 2, &tnull);
		text	   *key = DatumGetTextPP(SPI_getbinval(tup, desc, 3, &isnull));
		text	   *tt = tnull ? NULL : DatumGetTextPP(tenant);

		ids[i] = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		hashes[i] = outbox_key_hash(tt ? VARDATA_ANY(tt) : NULL,
									tt ? VARSIZE_ANY_EXHDR(tt) : 0,
									VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	}
	if (!outbox_keys_load(cs->topic, ids, hashes, n))
		keys_full_error(cs);
}

/*
 * Load the topic's scan position from its durable watermark, the first
 * time the topic is claimed since the server started.  Above the watermark
 * the log may hold events already settled (acknowledged, waiting in
 * outbox.retry, or dead): the scan skips them with the recovery plan, up to
 * the highest id any of those rows names.  Above that nothing is settled,
 * and the plain scan is right.  Caller holds the topic's scan lock (the
 * heavyweight one) and has marked the topic scanning, so the slot stays.
 */
static void
topic_init(ClaimState *cs)
{
	static const Oid btypes[2] = {INT4OID, INT8OID};
	Datum		values[2];
	int64		watermark = 0;
	int64		bound = 0;
	bool		isnull;
	int			rc;
	Snapshot	snap = GetLatestSnapshot();
	int64		parked;

	/*
	 * Start from the durable watermark or the position parked when the
	 * topic last gave its slot up, whichever is higher: everything at or
	 * below either is settled.  Only settled ids above it call for the
	 * recovering scan.
	 */
	parked = outbox_topic_watermark(cs->topic);
	watermark = Max(durable_watermark(cs, snap), parked);
	values[0] = Int32GetDatum(cs->info->topic_id);
	values[1] = Int64GetDatum(watermark);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_MAX_ID,
										  "SELECT max(k.id) FROM outbox._settled() k "
										  "WHERE k.topic_id = $1 AND k.id > $2",
										  2, btypes),
							  values, NULL, snap, InvalidSnapshot, true, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		if (!isnull)
			bound = DatumGetInt64(d);
	}

	if (cs->info->ordered)
		load_waiting_keys(cs, snap);
	outbox_topic_init_scan(cs->topic, watermark, bound);
}

/* An event to hand out again, as the topic's shared state names it */
typedef struct ReadyId
{
	int64		id;
	bool		held;			/* held back behind its key */
	uint64		hash;			/* then: the key */
} ReadyId;

static int
ready_id_cmp(const void *a, const void *b)
{
	int64		x = ((const ReadyId *) a)->id;
	int64		y = ((const ReadyId *) b)->id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * Events to hand out again (handed back, or held back behind a key that
 * may move now): fetch up to max of them, oldest first, into cs's
 * candidates.  Of each runnable key's held run, the first run_from are left
 * out and at most run_max taken (outbox_topic_ready_ids).  Returns how many
 * held events were named.  Ids whose event is gone join s's junk.
 */
static int
take_ready(ClaimState *cs, OutboxScanEnd *s, int max, int run_from,
		   int run_max)
{
	static const Oid types[2] = {INT4OID, INT8ARRAYOID};
	int64	   *ready = palloc(sizeof(int64) * max);
	bool	   *held = palloc(sizeof(bool) * max);
	uint64	   *hashes = palloc(sizeof(uint64) * max);
	ReadyId    *r;
	int64	   *junk;
	bool	   *junk_held;
	uint64	   *junk_hashes;
	Datum	   *ids;
	int			nids;
	int			nheld = 0;
	int			njunk = s->njunk;
	Datum		values[2];
	int			rc;
	int			i;

	nids = outbox_topic_ready_ids(cs->topic, ready, held, hashes, max,
								  run_from, run_max);
	if (nids == 0)
		return 0;
	r = palloc(sizeof(ReadyId) * nids);
	ids = palloc(sizeof(Datum) * nids);
	for (i = 0; i < nids; i++)
	{
		r[i].id = ready[i];
		r[i].held = held[i];
		r[i].hash = hashes[i];
		if (held[i])
			nheld++;
	}
	qsort(r, nids, sizeof(ReadyId), ready_id_cmp);
	for (i = 0; i < nids; i++)
		ids[i] = Int64GetDatum(r[i].id);

	values[0] = Int32GetDatum(cs->info->topic_id);
	values[1] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = SPI_execute_snapshot(outbox_plan(PLAN_FETCH_READY, fetch_ready_sql, 2, types),
							  values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");

	/*
	 * Both in id order: the ids without a row are junk (an event offered in
	 * a rolled-back subtransaction).  The junk of an earlier call stays.
	 */
	junk = palloc(sizeof(int64) * (njunk + nids));
	junk_held = palloc(sizeof(bool) * (njunk + nids));
	junk_hashes = palloc(sizeof(uint64) * (njunk + nids));
	if (njunk > 0)
	{
		memcpy(junk, s->junk, sizeof(int64) * njunk);
		memcpy(junk_held, s->junk_held, sizeof(bool) * njunk);
		memcpy(junk_hashes, s->junk_hashes, sizeof(uint64) * njunk);
	}
	i = 0;
	for (uint64 j = 0; j < SPI_processed; j++)
	{
		OutboxEventRow row;

		spi_row(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, &row);
		for (; i < nids && r[i].id < row.id; i++)
		{
			junk_held[njunk] = r[i].held;
			junk_hashes[njunk] = r[i].hash;
			junk[njunk++] = r[i].id;
		}
		if (i < nids && r[i].id == row.id)
		{
			add_candidate(cs, &row, SRC_MAIN, true, r[i].held,
						  r[i].held ? 0 : -1);
			i++;
		}
	}
	for (; i < nids; i++)
	{
		junk_held[njunk] = r[i].held;
		junk_hashes[njunk] = r[i].hash;
		junk[njunk++] = r[i].id;
	}
	s->junk = junk;
	s->junk_held = junk_held;
	s->junk_hashes = junk_hashes;
	s->njunk = njunk;
	return nheld;
}

/*
 * Of an ordered topic's due rows in outbox.retry, those that cannot go out
 * now count as held: an earlier event of their key is out, waiting or held
 * back, or the scan has not read up to them yet (earlier events of their
 * key may be in the log).  They stay in outbox.retry, and do not take the
 * claim's batch from other keys.  Returns the lowest id due but above the
 * scan, or 0: once the scan has passed it, the next claim looks again (a
 * key's blocking event, when it ends, makes claims look again itself).
 */
static int64
retry_keys_held(ClaimState *cs, SPITupleTable *tt, uint64 n, const int64 *ids,
				bool *held, int64 scan_pos)
{
	int64		above = 0;

	uint64	   *hashes = palloc(sizeof(uint64) * Max(1, n));
	int64	   *kids = palloc(sizeof(int64) * Max(1, n));
	int		   *at = palloc(sizeof(int) * Max(1, n));
	bool	   *blocked = palloc(sizeof(bool) * Max(1, n));
	int			nkeyed = 0;

	for (uint64 i = 0; i < n; i++)
	{
		OutboxEventRow row;

		if (held[i])
			continue;
		spi_row(tt->vals[i], tt->tupdesc, &row);
		if (!row_key(cs, &row, &hashes[nkeyed]))
			continue;
		if (ids[i] > scan_pos)
		{
			held[i] = true;
			if (above == 0 || ids[i] < above)
				above = ids[i];
			continue;
		}
		kids[nkeyed] = ids[i];
		at[nkeyed++] = (int) i;
	}
	outbox_keys_blocked(cs->topic, hashes, kids, nkeyed, blocked);
	for (int j = 0; j < nkeyed; j++)
		if (blocked[j])
			held[at[j]] = true;
	pfree(hashes);
	pfree(kids);
	pfree(at);
	pfree(blocked);
	return above;
}

/* Events due in outbox.retry that nobody holds.  Returns true if exhausted. */
static bool
take_retry(ClaimState *cs, TimestampTz now, const OutboxScanView *seen,
		   int64 *above)
{
	static const Oid types[3] = {INT4OID, TIMESTAMPTZOID, INT4OID};
	Datum		values[3];
	int			want = cs->batch - cs->ncand;

	/*
	 * Rows of leased events are stepped over, and so, in an ordered topic,
	 * may be those of keys held back by an earlier event.
	 */
	int			limit = want + seen->nretry_leases + seen->nwaiting;
	int			rc;
	SPITupleTable *tt;
	uint64		n;
	int64	   *ids;
	bool	   *held;

	*above = 0;
	values[0] = Int32GetDatum(cs->info->topic_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = Int32GetDatum(limit);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_RETRY_DUE, retry_due_sql, 3, types),
							  values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	tt = SPI_tuptable;
	n = SPI_processed;

	/* those that have no entry: nobody holds them */
	ids = palloc(sizeof(int64) * Max(1, n));
	held = palloc(sizeof(bool) * Max(1, n));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc,
											 EV_ID + 1, &isnull));
	}
	outbox_entries_held(ids, (int) n, held);
	if (cs->info->ordered)
		*above = retry_keys_held(cs, tt, n, ids, held, seen->scan_pos);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		OutboxEventRow row;

		if (held[i])
			continue;
		if (cs->ncand >= cs->batch)
			return false;		/* due rows are left for the next claim */
		spi_row(tt->vals[i], tt->tupdesc, &row);
		add_candidate(cs, &row, SRC_RETRY, false, false,
					  DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc,
												  COL_ATTEMPTS, &isnull)));
	}

	return n < (uint64) limit;
}

/* When the next retry row falls due, or DT_NOEND. */
static TimestampTz
next_retry_time(ClaimState *cs, TimestampTz now)
{
	static const Oid types[2] = {INT4OID, TIMESTAMPTZOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;
	int			rc;

	values[0] = Int32GetDatum(cs->info->topic_id);
	values[1] = TimestampTzGetDatum(now);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_RETRY_NEXT,
										  "SELECT min(available_at) FROM outbox.retry "
										  "WHERE topic_id = $1 AND available_at > $2",
										  2, types),
							  values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * The settled ids above pos for a topic in recovery, as a skip list for the
 * scan.  Loads them when this backend has no copy that covers pos.
 */
static void
settled_ids(ClaimState *cs, Snapshot snap, int64 pos, int64 recovery_until,
			uint64 epoch, OutboxSkipList *skip)
{
	static const Oid types[3] = {INT4OID, INT8OID, INT8OID};
	SettledCache *sc = NULL;
	ListCell   *lc;
	int			lo,
				hi;

	foreach(lc, settled_caches)
	{
		SettledCache *c = lfirst(lc);

		if (c->topic_id == cs->info->topic_id)
		{
			sc = c;
			break;
		}
	}
	if (sc != NULL && (sc->incarnation != cs->info->incarnation ||
					   sc->recovery_until != recovery_until ||
					   sc->scan_epoch != epoch ||
					   sc->loaded_from > pos))
	{
		settled_caches = list_delete_ptr(settled_caches, sc);
		if (sc->ids)
			pfree(sc->ids);
		pfree(sc);
		sc = NULL;
	}
	if (sc == NULL)
	{
		Datum		values[3];
		int			rc;
		MemoryContext old;

		values[0] = Int32GetDatum(cs->info->topic_id);
		values[1] = Int64GetDatum(pos);
		values[2] = Int64GetDatum(recovery_until);
		rc = SPI_execute_snapshot(outbox_plan(PLAN_SETTLED, settled_sql, 3, types),
								  values, NULL, snap, InvalidSnapshot, true, false, 0);
		outbox_spi_check(rc, SPI_OK_SELECT, "claim");

		old = MemoryContextSwitchTo(TopMemoryContext);
		sc = palloc0(sizeof(SettledCache));
		sc->topic_id = cs->info->topic_id;
		sc->incarnation = cs->info->incarnation;
		sc->recovery_until = recovery_until;
		sc->scan_epoch = epoch;
		sc->loaded_from = pos;
		if (SPI_processed > (uint64) INT_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many settled events above the watermark of topic \"%s\"",
							cs->info->name)));
		sc->nids = (int) SPI_processed;
		sc->ids = MemoryContextAllocHuge(TopMemoryContext,
										 sizeof(int64) * Max(1, sc->nids));
		for (int i = 0; i < sc->nids; i++)
		{
			bool		isnull;

			sc->ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1,
													 &isnull));
		}
		settled_caches = lappend(settled_caches, sc);
		MemoryContextSwitchTo(old);
	}

	/* the first settled id above pos */
	lo = 0;
	hi = sc->nids;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (sc->ids[mid] <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	skip->ids = sc->ids;
	skip->n = sc->nids;
	skip->next = lo;
}

/* A topic has left recovery: this backend's settled copy can go. */
static void
settled_forget(int32 topic_id)
{
	ListCell   *lc;

	foreach(lc, settled_caches)
	{
		SettledCache *c = lfirst(lc);

		if (c->topic_id == topic_id)
		{
			settled_caches = list_delete_ptr(settled_caches, c);
			pfree(c->ids);
			pfree(c);
			return;
		}
	}
}

/*
 * Of the keyed candidates cand[from..from+n) just read from an ordered
 * topic's log, how many have nothing earlier of their key out, waiting or
 * held back: those the claim may lease.  The others are held back when the
 * claim ends; the scan reads on past them to fill its batch.
 */
static int
keys_free(ClaimState *cs, int from, int n)
{
	uint64	   *hashes = palloc(sizeof(uint64) * n);
	int64	   *ids = palloc(sizeof(int64) * n);
	bool	   *blocked = palloc(sizeof(bool) * n);
	int			nfree = 0;

	for (int i = 0; i < n; i++)
	{
		hashes[i] = cs->cand[from + i].keyhash;
		ids[i] = cs->cand[from + i].id;
	}
	outbox_keys_blocked(cs->topic, hashes, ids, n, blocked);
	for (int i = 0; i < n; i++)
		if (!blocked[i])
			nfree++;
	pfree(hashes);
	pfree(ids);
	pfree(blocked);
	return nfree;
}

/*
 * Scan the log upward from pos with the given snapshot, through the
 * partitions' indexes (logscan.c).  Returns the new scan position: the
 * highest id examined.  Below recovery_until (after a restart) the scan
 * steps over settled events.
 */
static int64
scan_log(ClaimState *cs, Snapshot snap, int64 pos, int64 recovery_until,
		 uint64 epoch)
{
	OutboxLogScan *ls = cs->ls;
	OutboxSkipList skip;
	bool		recovering = pos < recovery_until;
	OutboxEventRow row;
	int			nfree = cs->ncand;	/* candidates not held back */
	int			npending = 0;	/* keyed ones not looked at yet */
	int			maxread = cs->batch + (cs->info->ordered ? OUTBOX_HOLD_PER_CLAIM : 0);

	if (recovering)
	{
		/*
		 * Everything at or below the durable watermark is settled, and the
		 * acknowledgements there may be gone already (reap trims them in
		 * the transaction that moves the watermark): never scan below it.
		 * A topic that took a slot again may have read an older one.
		 */
		pos = Max(pos, durable_watermark(cs, snap));
		recovering = pos < recovery_until;
	}
	if (recovering)
		settled_ids(cs, snap, pos, recovery_until, epoch, &skip);
	else if (settled_caches != NIL)
		settled_forget(cs->info->topic_id);

	outbox_logscan_begin(ls, snap, cs->info->topic_id, pos);
	while (nfree < cs->batch && cs->ncand < maxread)
	{
		CHECK_FOR_INTERRUPTS();
		if (!outbox_logscan_next(ls, &row, recovering ? &skip : NULL))
		{
			/* everything visible is examined, settled rows included */
			pos = Max(pos, outbox_logscan_examined(ls));
			if (recovering)
				pos = Max(pos, recovery_until);
			break;
		}
		add_candidate(cs, &row, SRC_MAIN, false, false, 0);
		pos = row.id;
		if (!cs->cand[cs->ncand - 1].keyed)
			nfree++;
		else if (++npending >= cs->batch - nfree)
		{
			nfree += keys_free(cs, cs->ncand - npending, npending);
			npending = 0;
		}
	}
	if (npending > 0)
		nfree += keys_free(cs, cs->ncand - npending, npending);
	outbox_logscan_end(ls);
	cs->nfree = nfree;
	return pos;
}

/*
 * Leases made from outbox.retry rest on rows read with a snapshot taken
 * before the shared state lock was: a nack, ack, dead letter or reap of the
 * event's previous lease may have committed in between, after the snapshot
 * but before the lease was made, and its end in shared memory then looked
 * like a free event.  A commit is visible to every snapshot taken after its
 * transaction callback ended the lease in shared memory, so a snapshot taken
 * now, after the new leases exist, sees every such commit: the rows it
 * still finds due are the leases that stand (with their attempt count as
 * of now); the others are undone.  Returns how many of cs's leases remain.
 */
static int
verify_retry_leases(ClaimState *cs, const pg_uuid_t *token, TimestampTz now,
					int nleased)
{
	static const Oid types[3] = {INT4OID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum	   *ids;
	int			nids = 0;
	Datum		values[3];
	int			rc;
	int64	   *found_ids;
	int32	   *found_attempts;
	uint64		nfound;

	ids = palloc(sizeof(Datum) * cs->ncand);
	for (int i = 0; i < cs->ncand; i++)
		if (cs->cand[i].leased && cs->cand[i].source == SRC_RETRY)
			ids[nids++] = Int64GetDatum(cs->cand[i].id);
	if (nids == 0)
		return nleased;

	values[0] = Int32GetDatum(cs->info->topic_id);
	values[1] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = TimestampTzGetDatum(now);
	rc = SPI_execute_snapshot(outbox_plan(PLAN_RETRY_VERIFY,
										  "SELECT r.event_id, r.attempts FROM outbox.retry r "
										  "WHERE r.topic_id OPERATOR(pg_catalog.=) $1 "
										  "AND r.event_id OPERATOR(pg_catalog.=) ANY ($2) "
										  "AND r.available_at OPERATOR(pg_catalog.<=) $3",
										  3, types),
							  values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "claim");
	nfound = SPI_processed;
	found_ids = palloc(sizeof(int64) * Max(1, nfound));
	found_attempts = palloc(sizeof(int32) * Max(1, nfound));
	for (uint64 j = 0; j < nfound; j++)
	{
		bool		isnull;

		found_ids[j] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j],
												   SPI_tuptable->tupdesc, 1, &isnull));
		found_attempts[j] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[j],
														SPI_tuptable->tupdesc, 2, &isnull));
	}

	return nleased - outbox_retry_leases_verify(cs->topic, token, cs->cand,
												cs->ncand, found_ids,
												found_attempts, (int) nfound);
}

/*
 * The heavyweight lock by which claims of a topic take turns: held while a
 * claim reads the log, it can be waited for interruptibly, is seen by the
 * deadlock detector and shows in pg_locks (advisory, objsubid 0x6f65).
 */
static void
scan_lock_tag(ClaimState *cs, LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) cs->info->topic_id,
						 (uint32) cs->info->incarnation, OUTBOX_LOCK_SCAN);
}

/*
 * The reading step of an attempt, holding no LWLock: the ready list's
 * events, the due retries and the log, into cs's candidates.  s gets what
 * the last step needs: the topic's scan as it was found, the snapshot of
 * the log's scan and how far it went, and what was learnt of retries.
 */
static void
claim_read(ClaimState *cs, bool initialized, OutboxScanEnd *s)
{
	int			nheld;

	if (!initialized)
		topic_init(cs);

	nheld = take_ready(cs, s, cs->batch, 0,
					   cs->info->ordered ? OUTBOX_RUN_FIRST(cs->batch) : 0);
	outbox_scan_view(cs->topic, &s->seen);

	if (cs->ncand < cs->batch && s->seen.next_retry_at <= s->now)
	{
		s->retry_exhausted = take_retry(cs, s->now, &s->seen, &s->retry_above);
		/*
		 * Remember when the next retry falls due, but look again within a
		 * second whatever it says, so that no change to outbox.retry can
		 * leave an event unseen for long.
		 */
		if (s->retry_exhausted)
			s->next_retry = Min(next_retry_time(cs, s->now),
								s->now + USECS_PER_SEC);
	}

	s->scanned = s->seen.scan_pos;
	if (cs->ncand < cs->batch)
	{
		s->snap = RegisterSnapshot(GetLatestSnapshot());
		s->scanned = scan_log(cs, s->snap, s->seen.scan_pos,
							  s->seen.recovery_until, s->seen.scan_epoch);

		/*
		 * The log had too few events of other keys to fill the batch: the
		 * runs of held events take the rest.
		 */
		if (cs->info->ordered && nheld > 0 && cs->nfree < cs->batch)
			(void) take_ready(cs, s, cs->batch - cs->nfree,
							  OUTBOX_RUN_FIRST(cs->batch), 0);
	}
}

static int
candidate_cmp(const void *a, const void *b, void *arg)
{
	const OutboxCandidate *cand = (const OutboxCandidate *) arg;
	int64		x = cand[*(const int *) a].id;
	int64		y = cand[*(const int *) b].id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * An ordered topic's candidates go to the lease in id order, wherever they
 * come from, so that each key's events are decided, and returned, in its
 * order.  The log's stay in order among themselves.
 */
static void
sort_candidates(ClaimState *cs)
{
	int		   *order;
	OutboxCandidate *cand;
	OutboxEventRow *rows;

	if (cs->ncand < 2)
		return;
	order = palloc(sizeof(int) * cs->ncand);
	for (int i = 0; i < cs->ncand; i++)
		order[i] = i;
	qsort_arg(order, cs->ncand, sizeof(int), candidate_cmp, cs->cand);
	cand = palloc(sizeof(OutboxCandidate) * cs->maxcand);
	rows = palloc(sizeof(OutboxEventRow) * cs->maxcand);
	for (int i = 0; i < cs->ncand; i++)
	{
		cand[i] = cs->cand[order[i]];
		rows[i] = cs->rows[order[i]];
	}
	memcpy(cs->cand, cand, sizeof(OutboxCandidate) * cs->ncand);
	memcpy(cs->rows, rows, sizeof(OutboxEventRow) * cs->ncand);
	pfree(cand);
	pfree(rows);
	pfree(order);
}

/*
 * One attempt to lease up to cs->batch events.  Returns how many were
 * leased (their candidates are marked), or -1 if the topic's slot was given
 * up before the attempt began.
 *
 * It goes in three steps.  Under the shared state lock it says that it is
 * scanning.  Without any LWLock, so that it can be cancelled and waits
 * for locks like any statement, it reads the ready list's events, the due
 * retries and the log (with a snapshot taken after it said so).  Under the
 * shared state lock again it makes the leases and sets the scan position:
 * offers in flight in its snapshot are marked as passed, and those that
 * committed meanwhile have left their ids in the topic's handoff.
 */
static pg_noinline int
claim_once(ClaimState *cs, pg_uuid_t *token, TimestampTz expires_at)
{
	OutboxScanEnd s;
	bool		initialized;
	int			nleased;
	LOCKTAG		tag;

	cs->ncand = 0;
	memset(&s, 0, sizeof(s));
	s.topic = cs->topic;
	s.token = token;
	s.now = GetCurrentTimestamp();
	s.expires_at = expires_at;
	s.batch = cs->batch;

	scan_lock_tag(cs, &tag);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	/* 1. the slot is still the topic's, and it is being scanned */
	outbox_xact_scan_begin(cs->topic);
	if (!outbox_scan_begin(cs->topic, cs->info->topic_id, cs->info->incarnation,
						   cs->info->ordered, &initialized))
	{
		/* the slot was given to another topic meanwhile */
		outbox_xact_scan_end();
		LockRelease(&tag, ExclusiveLock, false);
		return -1;
	}

	/* 2. read, holding no LWLock */
	claim_read(cs, initialized, &s);

	outbox_xact_reserve_ops(cs->ncand);
	if (cs->info->ordered)
		sort_candidates(cs);

	/* 3. lease, and set the scan position */
	s.cand = cs->cand;
	s.ncand = cs->ncand;
	outbox_scan_end(&s);
	outbox_xact_scan_end();
	for (int i = 0; i < cs->ncand; i++)
	{
		if (cs->cand[i].leased)
			outbox_xact_add_lease_op(OP_CLAIMED, cs->cand[i].id, cs->topic,
									 0, token);
	}

	if (s.snap != NULL)
		UnregisterSnapshot(s.snap);
	LockRelease(&tag, ExclusiveLock, false);

	nleased = verify_retry_leases(cs, token, s.now, s.nleased);

	if (s.keys_full && nleased == 0)
		keys_full_error(cs);

	if (s.full && nleased == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many outbox events are leased"),
				 errdetail("All %d lease entries of the server are in use.", outbox_max_leases),
				 errhint("Ack or nack leased events, or raise outbox.max_leases and restart the server.")));
	return nleased;
}

static void
emit_rows(ClaimState *cs, ReturnSetInfo *rsinfo, pg_uuid_t *token,
		  TimestampTz expires_at)
{
	Datum		topic_name = CStringGetTextDatum(cs->info->name);
	pg_uuid_t  *tok = palloc(sizeof(pg_uuid_t));

	*tok = *token;
	for (int i = 0; i < cs->ncand; i++)
	{
		OutboxCandidate *c = &cs->cand[i];
		OutboxEventRow *row = &cs->rows[i];
		Datum		values[11];
		bool		nulls[11];
		static const int cols[] = {EV_ID, -1, EV_KEY, EV_TYPE, EV_PAYLOAD,
		EV_HEADERS, EV_TENANT};

		if (!c->leased)
			continue;
		memset(nulls, 0, sizeof(nulls));
		for (int k = 0; k < 7; k++)
		{
			if (cols[k] < 0)
				continue;
			values[k] = row->values[cols[k]];
			nulls[k] = row->nulls[cols[k]];
		}
		values[1] = topic_name;
		values[7] = Int32GetDatum(c->attempt);
		values[8] = UUIDPGetDatum(tok);
		values[9] = TimestampTzGetDatum(expires_at);
		values[10] = row->values[EV_CREATED_AT];
		nulls[10] = row->nulls[EV_CREATED_AT];
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/*
 * At the exit of a session that set outbox.release_on_disconnect, its
 * leases expire at once and its database's worker is asked to reap them.
 */
static void
release_on_exit(int code, Datum arg)
{
	if (!outbox_shmem_available())
		return;
	if (outbox_leases_expire_own())
		outbox_wake_worker(MyDatabaseId);
}

/*
 * A session that acts for a tenant claims from that tenant's part of a
 * per-tenant topic; info becomes the part.  A part appears with the
 * tenant's first offer: until deadline, look again every 100 ms.  Returns
 * false if there is no part by then.
 */
static bool
claim_tenant_part(OutboxTopicInfo *info, const char *tenant,
				  TimestampTz deadline)
{
	OutboxTopicInfo part;

	if (!info->per_tenant)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("topic \"%s\" does not keep tenants apart", info->name),
				 errdetail("This session acts for tenant \"%s\"; it can claim from per-tenant topics only.",
						   tenant),
				 errhint("Reset outbox.tenant, or make a new topic per-tenant with outbox.isolate_tenants().")));
	while (!outbox_lookup_topic_part(info, tenant, false, &part))
	{
		TimestampTz now = GetCurrentTimestamp();
		long		ms;

		if (now >= deadline)
			return false;
		ms = Min(100, (long) ((deadline - now + 999) / 1000));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	*info = part;
	return true;
}

/*
 * The shared slot of the topic being claimed.  When every slot is busy
 * (each holds leases, ready events or offers in flight), look again every
 * 100 ms until deadline.  Returns -1 if none could be had by then.
 */
static int
claim_slot(ClaimState *cs, TimestampTz deadline)
{
	for (;;)
	{
		int			topic = outbox_topic_acquire(cs->info->topic_id,
												 cs->info->incarnation);
		TimestampTz now;
		long		ms;

		if (topic >= 0)
		{
			cs->topic = topic;
			return topic;
		}
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		ms = Min(100, (long) ((deadline - now + 999) / 1000));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(NOTICE,
			(errmsg("no shared slot is free for topic \"%s\": nothing claimed",
					cs->info->name),
			 errdetail("All %d topic slots hold leased or ready events or offers in flight.",
					   outbox_max_topics),
			 errhint("Ack or nack leased events, or raise outbox.max_topics and restart the server.")));
	return -1;
}

/* claim()'s batch_size, lease and wait, checked */
static void
claim_args(FunctionCallInfo fcinfo, int32 *batch, int64 *lease_usec,
		   int64 *wait_usec)
{
	outbox_require_arg(fcinfo, 1, "batch_size");
	outbox_require_arg(fcinfo, 2, "lease");
	outbox_require_arg(fcinfo, 3, "wait");
	*batch = PG_GETARG_INT32(1);
	if (*batch < 1 || *batch > OUTBOX_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"batch_size\" must be between 1 and %d", OUTBOX_MAX_BATCH),
				 errdetail("The value given was %d.", *batch)));
	*lease_usec = outbox_interval_usec(PG_GETARG_INTERVAL_P(2), "lease", 0,
									   OUTBOX_MAX_LEASE_USEC, false);
	*wait_usec = outbox_interval_usec(PG_GETARG_INTERVAL_P(3), "wait", 0,
									  OUTBOX_MAX_WAIT_USEC, true);
}

/*
 * Sleep, unless the topic was woken since before the attempt (the
 * subtransaction's end cancels any earlier preparation to sleep, so
 * the count stands in for it): until an offer to the topic commits, a
 * retry falls due, or deadline, and a second at most.
 */
static void
claim_sleep(ClaimState *cs, uint64 wakes, TimestampTz now,
			TimestampTz deadline)
{
	TimestampTz next_retry;
	long		sleep_ms;

	if (!outbox_topic_prepare_to_sleep(cs->topic, wakes))
		return;
	next_retry = outbox_topic_next_retry(cs->topic);
	sleep_ms = (long) ((Min(deadline, Max(next_retry, now)) - now + 999) / 1000);
	sleep_ms = Max(1, Min(sleep_ms, 1000));
	outbox_topic_sleep(cs->topic, sleep_ms);
}

/*
 * claim(topic, batch_size, lease, wait): lease up to batch_size available
 * events, oldest first, under one fresh token.  With wait > 0 and nothing
 * available, sleep until an offer to the topic commits, a retry falls due,
 * or wait runs out.
 */
Datum
outbox_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	int32		batch;
	int64		lease_usec;
	int64		wait_usec;
	OutboxTopicInfo info;
	ClaimState	cs;
	pg_uuid_t	token;
	TimestampTz deadline;
	TimestampTz expires_at = 0;
	char	   *tenant;
	MemoryContext callcxt;
	MemoryContext spicxt;
	volatile int attempt_got = 0;
	bool		sub;

	outbox_require_writable("outbox.claim()");
	outbox_require_schema();
	name = outbox_text_arg(fcinfo, 0, "topic", true);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	claim_args(fcinfo, &batch, &lease_usec, &wait_usec);
	outbox_require_shmem("outbox.claim()");
	if (outbox_release_on_disconnect)
	{
		static bool registered = false;

		if (!registered)
			before_shmem_exit(release_on_exit, (Datum) 0);
		registered = true;
	}

	memset(&cs, 0, sizeof(cs));
	cs.info = &info;
	cs.topic = -1;
	cs.batch = batch;

	deadline = GetCurrentTimestamp() + wait_usec;
	sub = (wait_usec > 0);
	tenant = outbox_session_tenant();

	callcxt = CurrentMemoryContext;
	SPI_connect();
	outbox_lock_topic(name, AccessShareLock);
	outbox_lookup_topic(name, &info);
	/* in the call's context: SPI's is let go of between attempts */
	cs.maxcand = batch + (info.ordered ? OUTBOX_HOLD_PER_CLAIM + batch : 0);
	cs.cand = MemoryContextAlloc(callcxt, sizeof(OutboxCandidate) * cs.maxcand);
	cs.rows = MemoryContextAlloc(callcxt, sizeof(OutboxEventRow) * cs.maxcand);
	if (info.wal)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("topic \"%s\" is delivered through the WAL and cannot be claimed", name),
				 errdetail("Its events are sent as logical decoding messages with prefix \"outbox\"."),
				 errhint("Read them from the logical replication slot \"%s\".", info.slot)));
	if (tenant != NULL && !claim_tenant_part(&info, tenant, deadline))
	{
		/* the tenant has offered nothing to the topic yet */
		SPI_finish();
		return (Datum) 0;
	}

	outbox_random_uuid(&token);
	spicxt = CurrentMemoryContext;

	for (;;)
	{
		TimestampTz now;
		int			got;
		uint64		wakes;
		ResourceOwner owner = CurrentResourceOwner;

		if (cs.topic < 0 && claim_slot(&cs, deadline) < 0)
			break;
		wakes = outbox_topic_wakes(cs.topic);

		/*
		 * With a wait, each attempt runs in a subtransaction of its own, so
		 * that one that finds nothing lets go of the locks it took on the
		 * log before the claim sleeps: a claim waiting for events must not
		 * keep the log's partitions from being retired.  An attempt that
		 * leases keeps its subtransaction, and its locks, to the end of the
		 * transaction.  Without a wait there is no sleep, and no
		 * subtransaction.
		 */
		if (sub)
		{
			BeginInternalSubTransaction(NULL);
			MemoryContextSwitchTo(spicxt);
		}

		PG_TRY();
		{
			/*
			 * The log's partitions, and the two generations of
			 * acknowledgements: reap empties one with TRUNCATE, which a
			 * snapshot taken before it commits would see as empty, so no
			 * snapshot of ours may be taken before the lock that keeps it
			 * away.
			 */
			MemoryContext old = MemoryContextSwitchTo(callcxt);

			cs.ls = outbox_logscan_open();
			MemoryContextSwitchTo(old);
			(void) RangeVarGetRelid(makeRangeVar("outbox", "acked_0", -1), AccessShareLock, false);
			(void) RangeVarGetRelid(makeRangeVar("outbox", "acked_1", -1), AccessShareLock, false);

			expires_at = GetCurrentTimestamp() + lease_usec;
			attempt_got = claim_once(&cs, &token, expires_at);
			outbox_logscan_close(cs.ls);
			cs.ls = NULL;
		}
		PG_CATCH();
		{
			/*
			 * End the subtransaction before the error goes on: one left open
			 * would leave the caller's transaction as an aborted block.
			 */
			ErrorData  *edata;

			if (!sub)
				PG_RE_THROW();
			MemoryContextSwitchTo(callcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(callcxt);
			CurrentResourceOwner = owner;
			ReThrowError(edata);
		}
		PG_END_TRY();
		got = attempt_got;
		if (got > 0)
		{
			if (sub)
			{
				ReleaseCurrentSubTransaction();
				MemoryContextSwitchTo(spicxt);
				CurrentResourceOwner = owner;
			}
			break;
		}
		if (sub)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spicxt);
			CurrentResourceOwner = owner;
		}

		if (got < 0)
		{
			/* the slot went to another topic: find one again */
			cs.topic = -1;
			continue;
		}

		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;

		/* Let go of what the empty attempt read. */
		SPI_finish();
		SPI_connect();
		spicxt = CurrentMemoryContext;

		claim_sleep(&cs, wakes, now, deadline);
	}

	emit_rows(&cs, rsinfo, &token, expires_at);
	SPI_finish();
	return (Datum) 0;
}
