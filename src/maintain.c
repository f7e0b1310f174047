/*-------------------------------------------------------------------------
 *
 * maintain.c
 *	  Storage upkeep: maintain() has pg_partman create the partitions
 *	  ahead, trims dedupe keys past retention, and retires partitions past
 *	  retention.  (Acknowledgements below the watermarks are trimmed by
 *	  reap, every tick.)  A partition
 *	  is dropped only if no event in it is above its topic's watermark or
 *	  waiting in outbox.retry: nothing undelivered is ever dropped.  Two
 *	  runs never overlap.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "maintain.h"
#include "schema.h"
#include "spi_util.h"
#include "storage.h"
#include "util.h"

#include "catalog/namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(outbox_maintain);

/* Does the partition hold an event that may still be delivered? */
static bool
partition_has_pending(const char *qualified)
{
	int			rc;
	bool		isnull;

	rc = SPI_execute(psprintf("SELECT EXISTS (SELECT 1 FROM outbox.topic_state s "
							  "  WHERE EXISTS (SELECT 1 FROM %s e WHERE e.topic_id = s.topic_id "
							  "                AND e.id > s.watermark)) "
							  "OR EXISTS (SELECT 1 FROM outbox.retry r JOIN %s e "
							  "  ON e.topic_id = r.topic_id AND e.id = r.event_id)",
							  qualified, qualified), true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "maintain");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * maintain() returns void: all of the upkeep, in the caller's transaction.
 */
Datum
outbox_maintain(PG_FUNCTION_ARGS)
{
	outbox_require_writable("outbox.maintain()");
	outbox_require_schema();
	(void) outbox_do_maintain(false);
	PG_RETURN_VOID();
}

/*
 * The work of maintain().  With one_partition, retire at most one
 * partition and return whether more may be due (the background worker
 * calls it again in a new transaction); otherwise retire all.  Returns
 * false at once if another session is maintaining.
 */
bool
outbox_do_maintain(bool one_partition)
{
	LOCKTAG		tag;
	char	   *partman;
	int			rc;
	SPITupleTable *parts;
	uint64		nparts;
	bool		parent_locked = false;
	bool		more = false;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, OUTBOX_LOCK_MAINTAIN);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		ereport(NOTICE,
				(errmsg("outbox maintenance is already running in another session")));
		return false;
	}

	/*
	 * Partitions ahead (and the hand-over to pg_partman on first use).  In
	 * the worker, a log not handed over yet waits for a session.
	 */
	if (!outbox_ensure_storage())
		return false;

	SPI_connect();
	partman = outbox_partman_schema();

	/* Dedupe keys past their topic's retention */
	rc = SPI_execute("DELETE FROM outbox.dedupe d USING outbox.topic t "
					 "WHERE d.topic_id = t.topic_id "
					 "AND d.created_at < pg_catalog.now() - t.retention",
					 false, 0);
	outbox_spi_check(rc, SPI_OK_DELETE, "maintain");

	/* Partitions past the longest retention, oldest first */
	rc = SPI_execute(psprintf("SELECT pg_catalog.quote_ident(p.partition_schemaname) || '.' || "
							  "       pg_catalog.quote_ident(p.partition_tablename) "
							  "FROM %s.show_partitions('outbox.event') p, "
							  "LATERAL %s.show_partition_info(p.partition_schemaname || '.' || "
							  "        p.partition_tablename, p_parent_table => 'outbox.event') i "
							  "WHERE i.child_end_time < pg_catalog.now() - "
							  "      (SELECT coalesce(max(t.retention), interval '7 days') FROM outbox.topic t) "
							  "ORDER BY i.child_end_time",
							  partman, partman), false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "maintain");
	parts = SPI_tuptable;
	nparts = SPI_processed;

	for (uint64 i = 0; i < nparts; i++)
	{
		char	   *qualified = SPI_getvalue(parts->vals[i], parts->tupdesc, 1);

		CHECK_FOR_INTERRUPTS();
		if (partition_has_pending(qualified))
			continue;
		if (one_partition && parent_locked)
		{
			more = true;		/* the next one in the next transaction */
			break;
		}

		/*
		 * Dropping a partition locks its parent exclusively.  Take that lock
		 * first, then look again: nothing can be added meanwhile.  Never
		 * wait for it: a queued exclusive lock would stop every offer and
		 * claim behind it for as long as some reader (a claim in an open
		 * transaction) holds the log, and waiting while holding locks on
		 * partitions could deadlock with DDL.  Retirement comes back at the
		 * next maintenance.
		 */
		if (!parent_locked)
		{
			if (!ConditionalLockRelationOid(RangeVarGetRelid(makeRangeVar("outbox", "event", -1),
															 NoLock, false),
											AccessExclusiveLock))
			{
				ereport(NOTICE,
						(errmsg("outbox maintenance retires no partition now: outbox.event is in use"),
						 errdetail("Retiring a partition needs an exclusive lock on the log for a moment; it is tried again at the next maintenance.")));
				more = false;
				break;
			}
			parent_locked = true;
		}
		if (partition_has_pending(qualified))
			continue;
		rc = SPI_execute(psprintf("DROP TABLE %s", qualified), false, 0);
		outbox_spi_check(rc, SPI_OK_UTILITY, "maintain");
		ereport(LOG,
				(errmsg("outbox retired partition %s", qualified)));
	}

	SPI_finish();
	return more;
}
