/*-------------------------------------------------------------------------
 *
 * reap.c
 *	  Housekeeping of leases: reap hands expired leases back (each counts
 *	  as a failed attempt, 'lease expired') or dead-letters them once their
 *	  attempts are used up, and moves each topic's durable watermark up to
 *	  the lowest event still pending in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "dead_letter.h"
#include "eventlog.h"
#include "reap.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "topic.h"
#include "util.h"
#include "walsync.h"
#include "xact.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(outbox_reap);

typedef OutboxSettling Expired;

/* Move a topic's durable watermark up to mark (never down). */
static void
raise_watermark(int32 topic_id, int64 mark)
{
	static const Oid types[2] = {INT4OID, INT8OID};
	Datum		values[2];
	int			rc;

	values[0] = Int32GetDatum(topic_id);
	values[1] = Int64GetDatum(mark);
	rc = outbox_exec(PLAN_WATERMARK_UPDATE,
					 "UPDATE outbox.topic_state SET watermark = $2 "
					 "WHERE topic_id = $1 AND watermark < $2",
					 2, types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_UPDATE, "reap");
}

static void
advance_watermarks(void)
{
	int32	   *topic_ids;
	int64	   *incarnations;
	int64	   *marks;
	OutboxParkedPosition *parked;
	int			nparked;
	int			n;

	n = outbox_watermark_candidates(&topic_ids, &incarnations, &marks,
									&parked, &nparked);

	for (int i = 0; i < n; i++)
	{
		raise_watermark(topic_ids[i], marks[i]);
		outbox_xact_set_watermark(topic_ids[i], incarnations[i], marks[i]);
	}

	/*
	 * Positions of topics that gave their slot up: everything at or below
	 * one was settled when it was parked, and stays so.
	 */
	for (int i = 0; i < nparked; i++)
	{
		static const Oid ptypes[3] = {INT4OID, INT8OID, INT8OID};
		Datum		values[3];
		int			rc;

		values[0] = Int32GetDatum(parked[i].topic_id);
		values[1] = Int64GetDatum(parked[i].pos);
		values[2] = Int64GetDatum(parked[i].incarnation);
		rc = outbox_exec(PLAN_WATERMARK_PARKED,
						 "UPDATE outbox.topic_state s SET watermark = $2 "
						 "FROM outbox.topic t "
						 "WHERE s.topic_id OPERATOR(pg_catalog.=) $1 "
						 "AND t.topic_id OPERATOR(pg_catalog.=) s.topic_id "
						 "AND t.incarnation OPERATOR(pg_catalog.=) $3 "
						 "AND s.watermark OPERATOR(pg_catalog.<) $2",
						 3, ptypes, values, NULL, false, 0);
		outbox_spi_check(rc, SPI_OK_UPDATE, "reap");
	}
	if (nparked > 0)
	{
		/*
		 * Should this transaction roll back, a position is lost: the topic
		 * then starts again from a lower watermark, which is slower, not
		 * wrong.
		 */
		outbox_parked_done(parked, nparked);
	}
}

/*
 * Topics with acknowledgements above their watermark and no shared slot: a
 * topic nobody has claimed since the server started (its leases, ready
 * list and scan position went with the restart).  Their watermark moves up
 * to below the first event of the topic that is not settled; otherwise a
 * quiet topic would keep the partitions of its last acknowledged events
 * past retention until its next claim.
 *
 * An event the snapshot does not see must stay above the new watermark.
 * So, in this order: the last id drawn (every id at or below it belongs to
 * a transaction that announced its offer before drawing it); the offers in
 * flight (the topic has no slot, and none of them holds only an unknown
 * first id); a snapshot; and the same check again.  An offer in flight at
 * the first check caps the watermark below its ids; one that began later
 * drew ids above the last id read; one that ended in between is in the
 * snapshot.  A delayed offer announces nothing, but its retry row commits
 * with its event, and an event waiting in outbox.retry may lie below the
 * watermark.
 */
static void
advance_unloaded_watermarks(void)
{
	static const Oid types[2] = {INT4OID, INT8OID};
	int32	   *topic_ids;
	int64	   *marks;
	int64		last;
	int			n;
	int			rc;

	rc = outbox_exec(PLAN_UNLOADED_TOPICS,
					 "SELECT DISTINCT a.topic_id, s.watermark "
					 "FROM outbox.acked a "
					 "JOIN outbox.topic_state s ON s.topic_id OPERATOR(pg_catalog.=) a.topic_id "
					 "  AND a.max_id OPERATOR(pg_catalog.>) s.watermark "
					 "JOIN outbox.topic t ON t.topic_id OPERATOR(pg_catalog.=) a.topic_id "
					 "WHERE t.delivery OPERATOR(pg_catalog.=) 'claim'",
					 0, NULL, NULL, NULL, true, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "reap");
	n = (int) SPI_processed;
	topic_ids = palloc(sizeof(int32) * Max(1, n));
	marks = palloc(sizeof(int64) * Max(1, n));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		topic_ids[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull));
		marks[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	if (n == 0)
		return;
	/* read before every topic's checks and snapshot: see above */
	last = outbox_last_event_id();

	for (int i = 0; i < n; i++)
	{
		Datum		values[2];
		Datum		d;
		bool		isnull;
		int64		floor;
		int64		floor2;
		int64		mark;
		Snapshot	snap;

		CHECK_FOR_INTERRUPTS();
		if (!outbox_unloaded_topic_floor(topic_ids[i], &floor))
			continue;
		snap = RegisterSnapshot(GetLatestSnapshot());
		if (!outbox_unloaded_topic_floor(topic_ids[i], &floor2))
		{
			UnregisterSnapshot(snap);
			continue;
		}
		values[0] = Int32GetDatum(topic_ids[i]);
		values[1] = Int64GetDatum(marks[i]);
		rc = SPI_execute_snapshot(outbox_plan(PLAN_UNLOADED_MARK,
											  "SELECT min(e.id) FILTER (WHERE k.id IS NULL), max(e.id) "
											  "FROM outbox.event e "
											  "LEFT JOIN outbox._settled() k "
											  "  ON k.topic_id OPERATOR(pg_catalog.=) e.topic_id "
											  " AND k.id OPERATOR(pg_catalog.=) e.id "
											  "WHERE e.topic_id OPERATOR(pg_catalog.=) $1 "
											  "AND e.id OPERATOR(pg_catalog.>) $2",
											  2, types),
								  values, NULL, snap, InvalidSnapshot, true, false, 1);
		UnregisterSnapshot(snap);
		outbox_spi_check(rc, SPI_OK_SELECT, "reap");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			mark = DatumGetInt64(d) - 1;	/* below the first not settled */
		else
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			if (isnull)
				continue;
			mark = DatumGetInt64(d);	/* everything seen is settled */
		}
		mark = Min(mark, last);
		mark = Min(mark, Min(floor, floor2) - 1);
		if (mark <= marks[i])
			continue;
		raise_watermark(topic_ids[i], mark);
	}
}

/*
 * Which generation of outbox.acked takes acknowledgements now: the two
 * take turns by the clock, in periods of OUTBOX_ACK_PERIOD_USEC.
 */
int
outbox_ack_generation(void)
{
	return (int) ((GetCurrentTimestamp() / OUTBOX_ACK_PERIOD_USEC) & 1);
}

/*
 * Acknowledgements at or below their topic's watermark say nothing the
 * watermark does not.  The generation not taking acknowledgements now is
 * emptied with TRUNCATE once all of it is at or below the watermarks (and
 * acknowledgements of dropped topics); a TRUNCATE writes next to no WAL,
 * where a DELETE writes a record per row.  If that cannot be done yet (a
 * session is reading the table, or a lease held for long keeps a topic's
 * watermark low), its redundant rows are deleted instead.  The current
 * generation is left alone: its turn comes.
 */
static void
trim_acks(void)
{
	static const char *const relnames[2] = {"acked_0", "acked_1"};
	static const Oid types[1] = {INT2OID};
	int			old = 1 - outbox_ack_generation();
	Oid			relid = RangeVarGetRelid(makeRangeVar("outbox", (char *) relnames[old], -1),
										 NoLock, false);
	Datum		values[1];
	bool		isnull;
	int			rc;

	values[0] = Int16GetDatum(old);
	rc = outbox_exec(PLAN_ACK_ANY,
					 "SELECT EXISTS (SELECT 1 FROM outbox.acked WHERE gen = $1)",
					 1, types, values, NULL, true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "reap");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull)))
		return;

	if (ConditionalLockRelationOid(relid, AccessExclusiveLock))
	{
		rc = outbox_exec(PLAN_ACK_ABOVE,
						 "SELECT NOT EXISTS (SELECT 1 FROM outbox.acked a "
						 "  JOIN outbox.topic_state s USING (topic_id) "
						 "  WHERE a.gen = $1 AND a.max_id > s.watermark)",
						 1, types, values, NULL, false, 1);
		outbox_spi_check(rc, SPI_OK_SELECT, "reap");
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull)))
		{
			rc = SPI_execute(psprintf("TRUNCATE outbox.%s", relnames[old]), false, 0);
			outbox_spi_check(rc, SPI_OK_UTILITY, "reap");
			return;
		}
	}

	rc = outbox_exec(PLAN_ACK_TRIM,
					 "DELETE FROM outbox.acked a WHERE a.gen = $1 AND NOT EXISTS ("
					 "SELECT 1 FROM outbox.topic_state s "
					 "WHERE s.topic_id = a.topic_id AND a.max_id > s.watermark)",
					 1, types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_DELETE, "reap");
}

/*
 * Hand back (or dead-letter) the expired leases expired[from..to) in a
 * subtransaction.  If it fails, it is rolled back and false returned; with
 * alone, the lease stays as it is (the next reap tries it again) and the
 * failure is reported if report says so, so that one bad row cannot stop
 * the reap of all others.  A cancellation is not caught.
 */
static bool
hand_back(Expired *expired, int from, int to, TimestampTz now, bool alone,
		  bool report)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		OutboxTopicInfo info;
		int32		info_topic_id = 0;
		bool		info_valid = false;

		for (int i = from; i < to; i++)
		{
			Expired    *x = &expired[i];

			CHECK_FOR_INTERRUPTS();
			if (!info_valid || info_topic_id != x->topic_id)
			{
				info_valid = outbox_lookup_topic_by_id(x->topic_id, &info);
				info_topic_id = x->topic_id;
			}
			if (!info_valid)
				continue;		/* the topic is being dropped */
			if (x->attempt >= info.max_attempts)
			{
				outbox_send_to_dead_letter(x->id, x->topic_id, x->attempt,
										   "max attempts reached", "lease expired");
				outbox_xact_count(x->topic_id, info.incarnation, COUNT_DEAD_LETTERED, 1);
			}
			else
			{
				outbox_schedule_retry(x->id, x->topic_id, x->attempt, now,
									  "lease expired");
				outbox_xact_finish_retry(x->id, now);
			}
			outbox_xact_count(x->topic_id, info.incarnation, COUNT_EXPIRED, 1);
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = false;
		if (alone && report)
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("outbox: the expired lease of event " INT64_FORMAT " could not be handed back: %s",
							expired[from].id, edata->message),
					 errdetail("The lease stays; the next reap tries it again.")));
		if (alone)
			outbox_xact_keep_lease(expired[from].id);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok;
}

/*
 * reap() returns integer: how many expired leases were handed back or
 * dead-lettered.  A lease whose ack (or nack) is in progress is left to it.
 */
Datum
outbox_reap(PG_FUNCTION_ARGS)
{
	outbox_require_writable("outbox.reap()");
	outbox_require_schema();
	PG_RETURN_INT32(outbox_do_reap());
}

/*
 * The work of reap(), also called by the background worker: expired
 * leases, then the watermarks and the acknowledgements below them.
 */
int
outbox_do_reap(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Expired    *expired;
	int			nexpired;
	int			max;

	if (!outbox_shmem_available())
	{
		SPI_connect();
		trim_acks();
		(void) outbox_wal_progress();
		SPI_finish();
		return 0;
	}

	/* Count first, so that marking cannot fail half-way. */
	max = outbox_leases_count_expired(now);
	expired = palloc(sizeof(Expired) * Max(1, max));
	outbox_xact_reserve_ops(max);
	nexpired = outbox_leases_mark_expired(now, expired, max);
	for (int i = 0; i < nexpired; i++)
		outbox_xact_add_lease_op(OP_FINISH, expired[i].id, expired[i].topic, 0,
								 &expired[i].token);

	SPI_connect();
	if (nexpired > 0 && !hand_back(expired, 0, nexpired, now, false, false))
	{
		/* one of them fails: each on its own, so that it fails alone */
		int			done = 0;

		for (int i = 0; i < nexpired; i++)
			done += hand_back(expired, i, i + 1, now, true, i - done < 5) ? 1 : 0;
		if (nexpired - done > 5)
			ereport(WARNING,
					(errmsg("outbox: %d expired leases could not be handed back",
							nexpired - done),
					 errdetail("The first five failures are reported above; the leases stay and the next reap tries them again.")));
		nexpired = done;
	}
	advance_watermarks();
	advance_unloaded_watermarks();
	trim_acks();
	(void) outbox_wal_progress();
	SPI_finish();

	return nexpired;
}
