/*-------------------------------------------------------------------------
 *
 * walsync.c
 *	  Delivery of topics delivered through the WAL follows their logical
 *	  replication slots: an event is delivered once its slot's
 *	  confirmed_flush_lsn has passed the event's commit.  Commits are not
 *	  recorded per event; instead each WAL topic has at most one tick
 *	  (outbox.wal_tick), made and moved on by reap (the worker's, or a
 *	  call by hand):
 *
 *	  1. A tick is made when the topic has events above its watermark.  It
 *	     notes "below", the last id drawn from the event sequence so far,
 *	     and then the transactions that may hold such ids: those that
 *	     announced offers and have not ended (offers announce themselves,
 *	     with an xid, before they draw an id; see xact.c), or, without
 *	     shared memory, every transaction the latest snapshot sees running.
 *	  2. Once none of those is running any more, every event at or below
 *	     "below" has committed or rolled back, and its commit record lies
 *	     before the WAL insert position read then: that is the tick's lsn.
 *	  3. Once the slot has confirmed lsn, those events are delivered: the
 *	     watermark moves to "below" and the tick goes.  stats, maintain and
 *	     drop_topic read the watermark as for any topic, so unconfirmed
 *	     events count as available and keep their partition.
 *
 *	  A slot that does not exist (or is not a logical slot of this
 *	  database) confirms nothing, and the topic's events wait.  Ticks are
 *	  runtime state: a crash loses none of what matters, as the watermark
 *	  is durable and a new tick is made.
 *
 *	  Undelivered events are sent again (their messages emitted anew, in id
 *	  order, by reap's transaction) when the WAL that held their messages
 *	  is not the one a slot reads now: when the server is not the one
 *	  outbox.wal_origin names (a restore into another cluster or database,
 *	  pg_upgrade, a promoted standby: another system identifier, database
 *	  or timeline), and when
 *	  a topic's slot exists again after some of its events were offered
 *	  while it was missing: an offer that finds the slot missing notes it
 *	  (resend_through, walmsg.c), and so does a reap that finds it missing,
 *	  up to the last id drawn.  A consumer may then see an event twice.
 *	  The one case not covered: a slot dropped and made again between two
 *	  reaps, while events it had not confirmed were offered before the
 *	  drop.
 *
 *	  The tick is conservative: an event may be reported undelivered for a
 *	  reap interval or two after its slot confirmed it, never the reverse.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "shmem.h"
#include "eventlog.h"
#include "spi_util.h"
#include "walmsg.h"
#include "walsync.h"

#include "access/transam.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"

typedef struct WalTopic
{
	int32		topic_id;
	char	   *name;
	int64		watermark;
	bool		has_row;		/* in outbox.wal_progress */
	bool		has_tick;
	int64		below;
	ArrayType  *xids;			/* int8[] */
	bool		has_lsn;
	XLogRecPtr	lsn;
	bool		has_resend;		/* resend_through is set */
	int64		resend_through;
	int			resend_op;		/* what progress_save does to it */
	char	   *slot;
	bool		confirmed_known;	/* the slot exists */
	XLogRecPtr	confirmed;
} WalTopic;

/* progress_save's change of resend_through */
#define RESEND_KEEP		0
#define RESEND_RAISE	1		/* to at least resend_through */
#define RESEND_CLEAR	2		/* if it is still resend_through */

static const char *topics_sql =
"SELECT t.topic_id, t.name, t.slot FROM outbox.topic t "
"WHERE t.delivery OPERATOR(pg_catalog.=) 'wal' "
"ORDER BY t.topic_id";

static const char *progress_sql =
"SELECT s.watermark, k.topic_id IS NOT NULL, k.below, k.xids, k.lsn, k.resend_through "
"FROM outbox.topic_state s "
"LEFT JOIN outbox.wal_progress k ON k.topic_id OPERATOR(pg_catalog.=) s.topic_id "
"WHERE s.topic_id OPERATOR(pg_catalog.=) $1";

/* Is any of the tick's transactions still running? */
static bool
any_running(ArrayType *xids)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(xids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			continue;
		if (TransactionIdIsInProgress((TransactionId) DatumGetInt64(elems[i])))
			return true;
	}
	return false;
}

/*
 * The transactions that may hold ids drawn so far and have not ended yet,
 * as an int8[].
 */
static ArrayType *
running_offerers(void)
{
	TransactionId *xids;
	Datum	   *elems;
	int			n = 0;
	int			kept = 0;

	if (outbox_shmem_available())
	{
		xids = palloc(sizeof(TransactionId) * MaxBackends);
		n = outbox_offering_xids(xids, MaxBackends);
	}
	else
	{
		Snapshot	snap = GetLatestSnapshot();

		xids = palloc(sizeof(TransactionId) * Max(1, snap->xcnt));
		for (uint32 i = 0; i < snap->xcnt; i++)
			xids[n++] = snap->xip[i];
	}

	elems = palloc(sizeof(Datum) * Max(1, n));
	for (int i = 0; i < n; i++)
		if (TransactionIdIsInProgress(xids[i]))
			elems[kept++] = Int64GetDatum((int64) xids[i]);
	return construct_array(elems, kept, INT8OID, 8, FLOAT8PASSBYVAL,
						   TYPALIGN_DOUBLE);
}

/* Write the topic's row of outbox.wal_progress as w says. */
static void
progress_save(WalTopic *w)
{
	static const Oid types[6] = {INT4OID, INT8OID, INT8ARRAYOID, PG_LSNOID, INT8OID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int32GetDatum(w->topic_id);
	values[1] = Int64GetDatum(w->below);
	values[2] = PointerGetDatum(w->xids);
	values[3] = LSNGetDatum(w->lsn);
	values[4] = Int64GetDatum(w->resend_through);
	if (w->resend_op == RESEND_KEEP)
		nulls[4] = 'n';
	values[5] = Int32GetDatum(w->resend_op);
	if (!w->has_tick)
		nulls[1] = nulls[2] = nulls[3] = 'n';
	else if (!w->has_lsn)
		nulls[3] = 'n';
	rc = outbox_exec(PLAN_WAL_PROGRESS_SAVE,
					 "INSERT INTO outbox.wal_progress AS p "
					 "  (topic_id, below, xids, lsn, made_at, resend_through) "
					 "VALUES ($1, $2, $3, $4, CASE WHEN $2 IS NULL THEN NULL ELSE pg_catalog.now() END, "
					 "  CASE WHEN $6 OPERATOR(pg_catalog.=) 1 THEN $5 END) "
					 "ON CONFLICT (topic_id) DO UPDATE SET below = $2, xids = $3, lsn = $4, "
					 "  made_at = CASE WHEN $2 IS NULL THEN NULL "
					 "    WHEN p.below IS NOT DISTINCT FROM $2 THEN p.made_at ELSE pg_catalog.now() END, "
					 /* an offer may have raised it meanwhile: never lower it */
					 "  resend_through = CASE $6 "
					 "    WHEN 1 THEN GREATEST(p.resend_through, $5) "
					 "    WHEN 2 THEN CASE WHEN p.resend_through IS NOT DISTINCT FROM $5 "
					 "                THEN NULL ELSE p.resend_through END "
					 "    ELSE p.resend_through END",
					 6, types, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT, "WAL progress");
	w->has_row = true;
	w->resend_op = RESEND_KEEP;
}

/* The slot has confirmed the tick: its events are delivered. */
static void
tick_confirmed(WalTopic *w)
{
	static const Oid types[2] = {INT4OID, INT8OID};
	Datum		values[2];
	int			rc;

	values[0] = Int32GetDatum(w->topic_id);
	values[1] = Int64GetDatum(w->below);
	rc = outbox_exec(PLAN_WAL_WATERMARK,
					 "UPDATE outbox.topic_state SET watermark = $2 "
					 "WHERE topic_id = $1 AND watermark OPERATOR(pg_catalog.<) $2",
					 2, types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_UPDATE, "WAL watermark");
	w->watermark = Max(w->watermark, w->below);
	w->has_tick = false;
	w->has_lsn = false;
}

/*
 * A new tick, if the topic has events above its watermark.  last is the
 * last id drawn, read before the offering transactions are looked for.
 */
static void
tick_make(WalTopic *w, int64 last)
{
	static const Oid ptypes[2] = {INT4OID, INT8OID};
	Datum		values[2];
	int64		below;
	bool		isnull;
	int			rc;

	values[0] = Int32GetDatum(w->topic_id);
	values[1] = Int64GetDatum(w->watermark);
	rc = outbox_exec(PLAN_WAL_PENDING,
					 "SELECT EXISTS (SELECT 1 FROM outbox.event "
					 "  WHERE topic_id = $1 AND id OPERATOR(pg_catalog.>) $2)",
					 2, ptypes, values, NULL, true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "WAL tick");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull)))
		return;

	/* the last id drawn first (the caller's), then who may still hold one */
	below = last;
	if (below <= w->watermark)
		return;
	w->xids = running_offerers();
	w->below = below;
	w->has_tick = true;
	w->has_lsn = (ArrayGetNItems(ARR_NDIM(w->xids), ARR_DIMS(w->xids)) == 0);
	if (w->has_lsn)
		w->lsn = GetXLogInsertRecPtr();
}

/*
 * Emit the messages of the topic's undelivered events again, in id order.
 * Returns how many.
 */
static int64
resend(WalTopic *w, int64 through)
{
	static const Oid types[3] = {INT4OID, INT8OID, INT8OID};
	Datum		values[3];
	OutboxTopicInfo info;
	Portal		portal;
	int64		sent = 0;

	memset(&info, 0, sizeof(info));
	info.topic_id = w->topic_id;
	info.wal = true;
	strlcpy(info.name, w->name, sizeof(info.name));

	values[0] = Int32GetDatum(w->topic_id);
	values[1] = Int64GetDatum(w->watermark);
	values[2] = Int64GetDatum(through);
	portal = SPI_cursor_open(NULL,
							 outbox_plan(PLAN_WAL_RESEND,
										 "SELECT " OUTBOX_WAL_ROW_COLUMNS " "
										 "FROM outbox.event "
										 "WHERE topic_id = $1 AND id OPERATOR(pg_catalog.>) $2 "
										 "AND id OPERATOR(pg_catalog.<=) $3 "
										 "ORDER BY id",
										 3, types),
							 values, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			CHECK_FOR_INTERRUPTS();
			outbox_wal_emit_tuple(&info, SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
			sent++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	return sent;
}

/*
 * Is this server the one whose WAL carries the undelivered events'
 * messages?  If not, it becomes so (the caller sends them again).
 */
static bool
origin_changed(void)
{
	static const Oid types[3] = {INT8OID, INT8OID, OIDOID};
	Datum		values[3];
	int			rc;

	values[0] = Int64GetDatum((int64) GetSystemIdentifier());
	values[1] = Int64GetDatum((int64) GetWALInsertionTimeLine());
	values[2] = ObjectIdGetDatum(MyDatabaseId);
	rc = outbox_exec(PLAN_WAL_ORIGIN,
					 "SELECT 1 FROM outbox.wal_origin "
					 "WHERE system_identifier OPERATOR(pg_catalog.<>) $1 "
					 "   OR timeline OPERATOR(pg_catalog.<>) $2 "
					 "   OR database OPERATOR(pg_catalog.<>) $3 "
					 "UNION ALL SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM outbox.wal_origin)",
					 3, types, values, NULL, true, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "WAL origin");
	if (SPI_processed == 0)
		return false;
	rc = outbox_exec(PLAN_WAL_ORIGIN_SET,
					 "WITH d AS (DELETE FROM outbox.wal_origin) "
					 "INSERT INTO outbox.wal_origin (system_identifier, timeline, database) "
					 "VALUES ($1, $2, $3)",
					 3, types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT, "WAL origin");
	return true;
}

/*
 * Read the topic's row of outbox.wal_progress and its watermark, with the
 * active snapshot.  Returns false if the topic is gone.
 */
static bool
progress_load(WalTopic *w)
{
	static const Oid types[1] = {INT4OID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	int			rc;

	values[0] = Int32GetDatum(w->topic_id);
	rc = outbox_exec(PLAN_WAL_PROGRESS, progress_sql, 1, types, values, NULL,
					 true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "WAL progress");
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	w->watermark = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	w->has_row = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
	d = SPI_getbinval(tup, desc, 3, &isnull);
	w->has_tick = !isnull;
	if (w->has_tick)
	{
		w->below = DatumGetInt64(d);
		w->xids = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		w->has_lsn = !isnull;
		if (!isnull)
			w->lsn = DatumGetLSN(d);
	}
	d = SPI_getbinval(tup, desc, 6, &isnull);
	w->has_resend = !isnull;
	if (!isnull)
		w->resend_through = DatumGetInt64(d);
	w->resend_op = RESEND_KEEP;
	return true;
}

/* One WAL topic's step; returns whether its watermark moved. */
static bool
progress_topic(WalTopic *w, bool new_origin, int64 last)
{
	bool		changed = false;

	if (w->confirmed_known && (new_origin || w->has_resend))
	{
		int64		sent = resend(w, new_origin ? PG_INT64_MAX : w->resend_through);

		if (sent > 0)
			ereport(LOG,
					(errmsg("outbox: sent %lld undelivered events of topic \"%s\" through the WAL again",
							(long long) sent, w->name),
					 errdetail(new_origin ?
							   "This server's WAL does not hold the messages they were offered with (a restore, an upgrade or a promotion)." :
							   "Its slot was missing, or could not decode yet, when they were offered.")));
		/* a tick made before these messages would count them delivered */
		w->has_tick = false;
		w->has_lsn = false;
		w->resend_op = w->has_resend ? RESEND_CLEAR : RESEND_KEEP;
		progress_save(w);
		return false;
	}
	if (!w->confirmed_known)
	{
		/*
		 * Whatever was offered so far may never reach a slot: up to the
		 * last id drawn (offers from now on note themselves, walmsg.c).
		 */
		if (last > w->watermark &&
			(!w->has_resend || w->resend_through < last))
		{
			w->resend_through = last;
			w->resend_op = RESEND_RAISE;
			progress_save(w);
		}
		return false;
	}

	if (w->has_tick && !w->has_lsn && !any_running(w->xids))
	{
		/* read before this transaction writes anything more */
		w->lsn = GetXLogInsertRecPtr();
		w->has_lsn = true;
		changed = true;
	}
	if (w->has_tick && w->has_lsn && w->confirmed >= w->lsn)
	{
		tick_confirmed(w);
		if (!w->has_tick)
			tick_make(w, last);
		progress_save(w);
		return true;
	}
	if (!w->has_tick)
	{
		tick_make(w, last);
		changed |= w->has_tick;
	}
	if (changed)
		progress_save(w);
	return false;
}

/*
 * Move every WAL topic of this database on towards its slot.  Caller is
 * connected to SPI, in a transaction.  One reap at a time does it (a
 * manual reap() and the worker's would otherwise race on the ticks).
 * Each slot is read first, and everything else with a snapshot taken
 * after: an event that committed before the slot could decode it is then
 * seen, and sent again if it has to be.  Returns how many topics'
 * watermarks moved.
 */
int
outbox_wal_progress(void)
{
	WalTopic   *topics;
	uint64		n;
	int			moved = 0;
	int			rc;
	bool		new_origin;
	int64		last;
	LOCKTAG		tag;
	MemoryContext spicxt = CurrentMemoryContext;

	if (!XLogLogicalInfoActive())
		return 0;
	rc = outbox_exec(PLAN_WAL_TOPICS, topics_sql, 0, NULL, NULL, NULL, true, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "WAL topics");
	n = SPI_processed;
	if (n == 0)
		return 0;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, OUTBOX_LOCK_WALSYNC);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return 0;				/* another reap is at it */

	topics = palloc0(sizeof(WalTopic) * n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		topics[i].topic_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		topics[i].name = SPI_getvalue(tup, desc, 2);
		topics[i].slot = SPI_getvalue(tup, desc, 3);
	}
	SPI_freetuptable(SPI_tuptable);

	/* the slots first, live */
	for (uint64 i = 0; i < n; i++)
		topics[i].confirmed_known =
			outbox_wal_slot_ready(topics[i].slot, &topics[i].confirmed);

	/* then the rest, with a snapshot taken after */
	last = outbox_last_event_id();
	PushActiveSnapshot(GetLatestSnapshot());
	new_origin = origin_changed();
	for (uint64 i = 0; i < n; i++)
	{
		WalTopic   *w = &topics[i];

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(spicxt);
		if (!progress_load(w))
			continue;
		if (progress_topic(w, new_origin, last))
			moved++;
	}
	PopActiveSnapshot();
	return moved;
}
