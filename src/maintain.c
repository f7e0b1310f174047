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

#include "catalog/namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(outbox_maintain);
PG_FUNCTION_INFO_V1(outbox_setup_storage);

/*
 * pg_partman's schema, quoted.  pg_partman runs its SQL with its own schema
 * on the search_path, and outbox calls it as a superuser (the install
 * script, the background worker, the SECURITY DEFINER maintain()): a role
 * that may create objects in that schema could plant operators or
 * functions there that would run with those rights.  Refuse, naming the
 * role, rather than call it.
 */
static char *
partman_schema(void)
{
	int			rc;
	bool		isnull;
	char	   *nspname;
	char	   *writer;

	rc = SPI_execute("SELECT n.nspname, "
					 "  (SELECT r.rolname FROM pg_catalog.pg_roles r "
					 "   WHERE NOT r.rolsuper "
					 "     AND r.rolname OPERATOR(pg_catalog.<>) 'pg_database_owner' "
					 "     AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE') "
					 "   ORDER BY r.rolname LIMIT 1) "
					 "FROM pg_catalog.pg_extension e "
					 "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
					 "WHERE e.extname OPERATOR(pg_catalog.=) 'pg_partman'", true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "maintain");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pg_partman\" is not installed"),
				 errhint("outbox needs pg_partman: CREATE EXTENSION pg_partman.")));
	nspname = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		writer = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("pg_partman is installed in schema \"%s\", where role \"%s\" may create objects",
						nspname, writer),
				 errdetail("outbox calls pg_partman with superuser rights, and pg_partman resolves names in its own schema: objects other roles create there would run with those rights."),
				 errhint("Install pg_partman in a schema of its own before outbox (CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman), or leave CREATE on schema \"%s\" to superusers only.",
						 nspname)));
	}
	return pstrdup(quote_identifier(nspname));
}

/*
 * Run a pg_partman call.  pg_partman sets search_path for the session while
 * it works and sets back what it found; inside CREATE EXTENSION that would
 * leave the script's search_path behind in the caller's session.  Every
 * setting changed during the call is rolled back afterwards.
 */
static void
partman_call(const char *sql, int expected)
{
	int			save_nestlevel = NewGUCNestLevel();
	int			rc;

	rc = SPI_execute(sql, false, 0);
	outbox_spi_check(rc, expected, "pg_partman");
	AtEOXact_GUC(false, save_nestlevel);
}

/*
 * _setup_storage(): hand outbox.event to pg_partman, one partition a day,
 * four made ahead.  pg_partman's own retention stays off: it would drop
 * partitions whatever they hold.  Called by the install script.
 */
Datum
outbox_setup_storage(PG_FUNCTION_ARGS)
{
	char	   *partman;
	int			rc;
	SPITupleTable *parts;
	uint64		nparts;

	SPI_connect();
	partman = partman_schema();
	/* A previous install may have left its configuration behind. */
	partman_call(psprintf("DELETE FROM %s.part_config WHERE parent_table = 'outbox.event'",
						  partman), SPI_OK_DELETE);
	partman_call(psprintf("SELECT %s.create_parent(p_parent_table => 'outbox.event', "
						  "p_control => 'created_at', p_type => 'native', "
						  "p_interval => '1 day', p_premake => 4)", partman),
				 SPI_OK_SELECT);
	partman_call(psprintf("UPDATE %s.part_config SET retention = NULL, "
						  "infinite_time_partitions = true "
						  "WHERE parent_table = 'outbox.event'", partman),
				 SPI_OK_UPDATE);

	/*
	 * Partitions made during CREATE EXTENSION would be members of the
	 * extension, which maintenance could then never drop.  They go with
	 * the extension anyway, through their parent.
	 */
	rc = SPI_execute("SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_inherits i "
					 "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
					 "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
					 "  AND d.objid = c.oid AND d.deptype = 'e' "
					 "WHERE i.inhparent = 'outbox.event'::pg_catalog.regclass",
					 false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "_setup_storage");
	parts = SPI_tuptable;
	nparts = SPI_processed;
	for (uint64 i = 0; i < nparts; i++)
	{
		rc = SPI_execute(psprintf("ALTER EXTENSION outbox DROP TABLE %s",
								  SPI_getvalue(parts->vals[i], parts->tupdesc, 1)),
						 false, 0);
		outbox_spi_check(rc, SPI_OK_UTILITY, "_setup_storage");
	}
	SPI_finish();

	/* The background worker starts for this database at commit. */
	if (outbox_shmem_available())
		outbox_xact_announce_database();
	PG_RETURN_VOID();
}

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

	SPI_connect();
	partman = partman_schema();

	/* Partitions ahead */
	partman_call(psprintf("SELECT %s.run_maintenance(p_parent_table => 'outbox.event', "
						  "p_analyze => false)", partman), SPI_OK_SELECT);

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
							  partman, partman), true, 0);
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
		 * first, then look again: nothing can be added meanwhile.
		 */
		if (!parent_locked)
		{
			LockRelationOid(RangeVarGetRelid(makeRangeVar("outbox", "event", -1),
											 NoLock, false),
							AccessExclusiveLock);
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
