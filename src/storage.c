/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  The log's storage: pg_partman and the partitions of outbox.event.
 *	  outbox.event is handed to pg_partman (one partition a day, four made
 *	  ahead, pg_partman's own retention off) on its first use, not at
 *	  install time: a database restored from a dump then gets its
 *	  partitions, and pg_partman's configuration, from the dump alone.
 *	  Also the checks and the GUC hygiene of every call into pg_partman.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "shmem.h"
#include "spi_util.h"
#include "storage.h"
#include "xact.h"

#include "catalog/namespace.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"

PG_FUNCTION_INFO_V1(outbox_setup_storage);

/*
 * This backend has seen the log handed to pg_partman, with a partition for
 * now.  It looks again after an invalidation of outbox.event (a partition
 * attached or detached, the extension dropped) or of every relation.
 */
static bool storage_known_ready = false;
static Oid	storage_event_relid = InvalidOid;

static void
storage_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == storage_event_relid)
		storage_known_ready = false;
}

void
outbox_storage_init(void)
{
	CacheRegisterRelcacheCallback(storage_invalidate, (Datum) 0);
}

/*
 * pg_partman's schema, quoted.  pg_partman runs its SQL with its own schema
 * on the search_path, and outbox calls it as a superuser (the install
 * script, the background worker, the SECURITY DEFINER maintain()): a role
 * that may create objects in that schema could plant operators or
 * functions there that would run with those rights.  Before a call
 * (check_writers), refuse, naming the role, rather than call it; merely
 * reading pg_partman's configuration needs no such check.
 */
static char *
partman_schema(bool check_writers)
{
	int			rc;
	bool		isnull;
	char	   *nspname;

	rc = SPI_execute(psprintf("SELECT n.nspname, %s "
							  "FROM pg_catalog.pg_extension e "
							  "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
							  "WHERE e.extname OPERATOR(pg_catalog.=) 'pg_partman'",
							  check_writers ?
							  "(SELECT r.rolname FROM pg_catalog.pg_roles r "
							  " WHERE NOT r.rolsuper "
							  "   AND r.rolname OPERATOR(pg_catalog.<>) 'pg_database_owner' "
							  "   AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE') "
							  " ORDER BY r.rolname LIMIT 1)" :
							  "NULL::pg_catalog.name"),
					 true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pg_partman\" is not installed"),
				 errhint("outbox needs pg_partman: CREATE EXTENSION pg_partman.")));
	nspname = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("pg_partman is installed in schema \"%s\", where role \"%s\" may create objects",
						nspname, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
				 errdetail("outbox calls pg_partman with superuser rights, and pg_partman resolves names in its own schema: objects other roles create there would run with those rights."),
				 errhint("Install pg_partman in a schema of its own before outbox (CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman), or leave CREATE on schema \"%s\" to superusers only.",
						 nspname)));
	return pstrdup(quote_identifier(nspname));
}

/* pg_partman's schema, quoted, checked fit to be called (see above) */
char *
outbox_partman_schema(void)
{
	return partman_schema(true);
}

/* Has pg_partman a configuration for the log?  Caller is connected to SPI. */
static bool
log_configured(const char *partman)
{
	int			rc;

	rc = SPI_execute(psprintf("SELECT 1 FROM %s.part_config "
							  "WHERE parent_table OPERATOR(pg_catalog.=) 'outbox.event'",
							  partman), false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	return SPI_processed > 0;
}

/*
 * Has the log a default partition already (holding rows, if with_rows)?
 * Caller is connected to SPI.
 */
static bool
has_default_partition(bool with_rows)
{
	int			rc;

	rc = SPI_execute(psprintf("SELECT 1 FROM pg_catalog.pg_inherits i "
							  "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid "
							  "WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass "
							  "AND c.relname OPERATOR(pg_catalog.=) 'event_default'%s",
							  with_rows ? " AND EXISTS (SELECT 1 FROM outbox.event_default)" : ""),
					 false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	return SPI_processed > 0;
}

/*
 * pg_partman 4 names a day's partition event_pYYYY_MM_DD, pg_partman 5
 * event_pYYYYMMDD, and 5 knows a partition it has made by its name only: a
 * log restored from 4 would get partitions overlapping the ones it has.
 * Give them 5's names before 5 takes the log over.  Caller is connected to
 * SPI.
 */
static void
rename_day_partitions(void)
{
	int			rc;
	uint64		i;
	uint64		n;
	char	  **from;
	char	  **to;

	rc = SPI_execute("SELECT c.relname, x.to_name "
					 "FROM pg_catalog.pg_inherits i "
					 "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid, "
					 "LATERAL (SELECT pg_catalog.regexp_replace(c.relname::pg_catalog.text, "
					 "  '^event_p([0-9]{4})_([0-9]{2})_([0-9]{2})$', 'event_p\\1\\2\\3') AS to_name) x "
					 "WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass "
					 "AND c.relnamespace OPERATOR(pg_catalog.=) 'outbox'::pg_catalog.regnamespace "
					 "AND c.relname::pg_catalog.text OPERATOR(pg_catalog.~) "
					 "'^event_p[0-9]{4}_[0-9]{2}_[0-9]{2}$' "
					 "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class t "
					 "  WHERE t.relnamespace OPERATOR(pg_catalog.=) c.relnamespace "
					 "  AND t.relname OPERATOR(pg_catalog.=) x.to_name::pg_catalog.name)",
					 false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	n = SPI_processed;
	from = palloc(sizeof(char *) * (n + 1));
	to = palloc(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
	{
		from[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		to[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		rc = SPI_execute(psprintf("ALTER TABLE outbox.%s RENAME TO %s",
								  quote_identifier(from[i]), quote_identifier(to[i])),
						 false, 0);
		outbox_spi_check(rc, SPI_OK_UTILITY, "storage");
	}
}

/*
 * The partitioning type create_parent() takes for PostgreSQL's own range
 * partitioning: 'native' up to pg_partman 4, 'range' from 5 on (which
 * refuses 'native'), read from the installed version.  Caller is connected
 * to SPI.
 */
static const char *
partman_range_type(void)
{
	int			rc;
	char	   *major = NULL;

	rc = SPI_execute("SELECT pg_catalog.split_part(e.extversion, '.', 1) "
					 "FROM pg_catalog.pg_extension e "
					 "WHERE e.extname OPERATOR(pg_catalog.=) 'pg_partman'",
					 true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	if (SPI_processed == 1)
		major = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return (major != NULL && atoi(major) >= 5) ? "range" : "native";
}

/*
 * Run a pg_partman call.  pg_partman sets search_path for the session while
 * it works and sets back what it found; inside CREATE EXTENSION that would
 * leave the script's search_path behind in the caller's session.  Every
 * setting changed during the call is rolled back afterwards.
 */
void
outbox_partman_call(const char *sql, int expected)
{
	int			save_nestlevel = NewGUCNestLevel();
	int			rc;

	/* its notices (a template table kept from an earlier install) are noise */
	(void) set_config_option("client_min_messages", "warning", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	/*
	 * pg_partman cuts days in the caller's time zone, and counts the days
	 * made ahead in another: days are UTC days whoever calls.
	 */
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute(sql, false, 0);
	outbox_spi_check(rc, expected, "pg_partman");
	AtEOXact_GUC(false, save_nestlevel);
}

/*
 * Every partition of the log gets its own btree index on (topic_id, id),
 * the one the claim's scan reads (logscan.c).  There is no partitioned
 * index on outbox.event: a restore from a dump could not create one's
 * partition indexes (see outbox--1.1--1.2.sql).  Caller is connected to
 * SPI.
 */
static void
index_partitions(void)
{
	int			rc;
	SPITupleTable *tt;
	uint64		n;

	rc = SPI_execute("SELECT i.inhrelid::pg_catalog.regclass::pg_catalog.text "
					 "FROM pg_catalog.pg_inherits i "
					 "WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass "
					 "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x "
					 "  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) x.indexrelid "
					 "  JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam "
					 "  WHERE x.indrelid OPERATOR(pg_catalog.=) i.inhrelid AND a.amname OPERATOR(pg_catalog.=) 'btree' "
					 "  AND x.indexprs IS NULL AND x.indpred IS NULL AND x.indisvalid "
					 "  AND x.indnkeyatts OPERATOR(pg_catalog.>=) 2 "
					 "  AND pg_catalog.pg_get_indexdef(x.indexrelid, 1, false) OPERATOR(pg_catalog.=) 'topic_id' "
					 "  AND pg_catalog.pg_get_indexdef(x.indexrelid, 2, false) OPERATOR(pg_catalog.=) 'id')",
					 false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "storage");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		rc = SPI_execute(psprintf("CREATE INDEX ON %s (topic_id, id)",
								  SPI_getvalue(tt->vals[i], tt->tupdesc, 1)),
						 false, 0);
		outbox_spi_check(rc, SPI_OK_UTILITY, "storage");
	}
}

/*
 * Make sure outbox.event is handed to pg_partman, and has a partition for
 * now.  The first use in a database hands it over; later calls have
 * pg_partman make what is missing.  Two sessions never do it at once.
 * Returns false, having done nothing, in the worker when the log was not
 * handed over yet.
 */
bool
outbox_ensure_storage(void)
{
	LOCKTAG		tag;
	char	   *partman;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, OUTBOX_LOCK_STORAGE);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	/*
	 * The log before any of its partitions (the default one is read below,
	 * and by pg_partman): DDL on the log locks the parent first, so taking
	 * a partition first could deadlock with it.
	 */
	LockRelationOid(RangeVarGetRelid(makeRangeVar("outbox", "event", -1), NoLock, false),
					AccessShareLock);

	SPI_connect();
	partman = outbox_partman_schema();
	if (!log_configured(partman) && OutboxAmBackgroundWorker())
	{
		/*
		 * The hand-over is a session's (the first offer or maintain()), not
		 * the worker's: the worker starts when CREATE EXTENSION commits,
		 * and in a restore the log gets the dump's partitions and indexes
		 * well before pg_partman's configuration, whose schema sorts after
		 * outbox, is loaded.
		 */
		SPI_finish();
		return false;
	}
	if (!log_configured(partman))
	{
		const char *type = partman_range_type();

		/*
		 * A log that has partitions but no configuration was restored from a
		 * dump whose pg_partman configuration did not load (a dump of
		 * pg_partman 4 restored under 5: its part_config has other
		 * columns).  pg_partman 5 adopts it, keeping the partitions there
		 * are; the default partition is made only if it is missing.
		 */
		const char *default_table =
			(strcmp(type, "range") == 0 && has_default_partition(false)) ?
			", p_default_table => false" : "";

		if (strcmp(type, "range") == 0)
			rename_day_partitions();

		outbox_partman_call(psprintf("SELECT %s.create_parent(p_parent_table => 'outbox.event', "
									 "p_control => 'created_at', p_type => '%s', "
									 "p_interval => '1 day', p_premake => 4%s)",
									 partman, type, default_table),
							SPI_OK_SELECT);
		/* ignore_default_data: 4.x's default, which 5.x changed */
		outbox_partman_call(psprintf("UPDATE %s.part_config SET retention = NULL, "
									 "infinite_time_partitions = true, "
									 "ignore_default_data = false "
									 "WHERE parent_table OPERATOR(pg_catalog.=) 'outbox.event'",
									 partman),
							SPI_OK_UPDATE);
	}
	else
	{
		/*
		 * Events written while no partition covered their day (the server
		 * or its maintenance was down for longer than the partitions made
		 * ahead) wait in the default partition, and pg_partman cannot make
		 * a partition for a day the default partition holds rows of: have
		 * it move them into partitions of their days first.
		 */
		if (has_default_partition(true))
			outbox_partman_call(psprintf("SELECT %s.partition_data_time(p_parent_table => 'outbox.event', "
										 "p_batch_count => 1000000, p_analyze => false)", partman),
								SPI_OK_SELECT);
		outbox_partman_call(psprintf("SELECT %s.run_maintenance(p_parent_table => 'outbox.event', "
									 "p_analyze => false)", partman), SPI_OK_SELECT);
	}
	index_partitions();
	SPI_finish();
	return true;
}

/*
 * _setup_storage(), called by the install script: forgets the pg_partman
 * configuration a previous install in this database may have left, and
 * has the background worker start here at commit.  The partitions come
 * with the first use (outbox_ensure_storage).
 */
Datum
outbox_setup_storage(PG_FUNCTION_ARGS)
{
	char	   *partman;

	SPI_connect();
	partman = outbox_partman_schema();
	outbox_partman_call(psprintf("DELETE FROM %s.part_config "
								 "WHERE parent_table OPERATOR(pg_catalog.=) 'outbox.event'",
								 partman), SPI_OK_DELETE);
	SPI_finish();

	/*
	 * The background worker starts for this database at commit.  Only when
	 * called by CREATE EXTENSION outbox (from the install script): a call
	 * by hand announces nothing.
	 */
	if (outbox_shmem_available() && creating_extension &&
		CurrentExtensionObject == get_extension_oid("outbox", true))
		outbox_xact_announce_database();
	PG_RETURN_VOID();
}

/*
 * Called by everything that writes into the log (offer, offer_batch,
 * replay) before it takes any lock on outbox.event: hands the log to
 * pg_partman on its first use.  Doing it first keeps the lock order of
 * maintenance (the storage lock, then outbox.event), so that a first offer
 * and the worker's first maintenance wait for each other instead of
 * deadlocking.  Costs two catalog looks per backend, and again after each
 * invalidation of outbox.event.
 */
void
outbox_storage_ready(void)
{
	int			rc;
	bool		ready;

	if (storage_known_ready)
		return;
	SPI_connect();
	ready = log_configured(partman_schema(false));

	/*
	 * A partition (not the default one) must cover now: after a long
	 * downtime the partitions made ahead may all lie in the past, and
	 * events written to the default partition meanwhile would race the
	 * maintenance that attaches their day's partition.  Read from the
	 * catalog, without a lock on outbox.event.
	 */
	if (ready)
	{
		rc = SPI_execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i "
						 "  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid, "
						 "  LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b) x "
						 "  WHERE i.inhparent OPERATOR(pg_catalog.=) 'outbox.event'::pg_catalog.regclass "
						 "  AND x.b OPERATOR(pg_catalog.~) '^FOR VALUES FROM \\(''[^'']+''\\) TO \\(''[^'']+''\\)$' "
						 "  AND pg_catalog.substring(x.b, 'FROM \\(''([^'']+)''\\)')::pg_catalog.timestamptz "
						 "      OPERATOR(pg_catalog.<=) pg_catalog.now() "
						 "  AND pg_catalog.substring(x.b, 'TO \\(''([^'']+)''\\)')::pg_catalog.timestamptz "
						 "      OPERATOR(pg_catalog.>) pg_catalog.now())",
						 false, 1);
		outbox_spi_check(rc, SPI_OK_SELECT, "storage");
		if (SPI_processed == 1)
		{
			bool		isnull;

			ready = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	SPI_finish();
	if (!ready)
		outbox_ensure_storage();
	storage_event_relid = RangeVarGetRelid(makeRangeVar("outbox", "event", -1),
										   NoLock, false);
	storage_known_ready = true;
}
