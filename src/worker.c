/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Background workers: a launcher, connected to no database, that keeps
 *	  one worker running in each database where the extension is installed;
 *	  and that per-database worker, which reaps expired leases every
 *	  outbox.reap_interval and runs maintenance every
 *	  outbox.maintenance_interval, sleeping on its latch in between.
 *
 *	  The launcher learns of a database that gets the extension when
 *	  CREATE EXTENSION commits (xact.c); a database it was not told about is
 *	  looked at, by starting a worker that leaves at once if the extension
 *	  is absent, at most once per outbox.launcher_naptime.  A worker leaves
 *	  when the extension is dropped, and when DROP DATABASE is about to wait
 *	  for its connection to go.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"
#include "maintain.h"
#include "reap.h"
#include "schema.h"
#include "worker.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void outbox_launcher_main(Datum main_arg);
PGDLLEXPORT void outbox_worker_main(Datum main_arg);

/*
 * Sessions the extension runs on its own behalf trust no user object: the
 * database's (or role's) search_path could put anyone's operators and
 * functions ahead of the system's, and these sessions run as a superuser.
 * Pinned at session level, over whatever ALTER DATABASE or ALTER ROLE set.
 */
static void
pin_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
}

void
outbox_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "outbox");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "outbox_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "outbox launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "outbox launcher");
	RegisterBackgroundWorker(&worker);
}

/* ----------------------------------------------------------------------
 * The launcher
 * ---------------------------------------------------------------------- */

typedef struct LaunchedWorker
{
	Oid			dbid;
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
} LaunchedWorker;

static LaunchedWorker *launched;
static int	nlaunched;
static bool slots_warned = false;
static int	resume_at = 0;		/* where launcher_pass goes on looking */

/* The databases one can connect to, templates left out: all of them. */
static Oid *
database_list(int *n)
{
	int			max = OUTBOX_MAX_DATABASES;
	Oid		   *result = palloc(sizeof(Oid) * max);
	MemoryContext cxt = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	*n = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (*n >= max)
		{
			max *= 2;
			result = repalloc(result, sizeof(Oid) * max);
		}
		result[(*n)++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return result;
}

static LaunchedWorker *
launched_for(Oid dbid)
{
	for (int i = 0; i < nlaunched; i++)
		if (launched[i].dbid == dbid)
			return &launched[i];
	return NULL;
}

/* Has the launcher a worker running for the database? */
static bool
launcher_running(Oid dbid)
{
	return launched_for(dbid) != NULL;
}

static bool
start_worker(Oid dbid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	bool		registered;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "outbox");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "outbox_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "outbox worker for database %u", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "outbox worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dbid);
	worker.bgw_notify_pid = MyProcPid;

	/* the handle outlives this pass of the launcher */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(oldcxt);
	if (!registered)
	{
		if (!slots_warned)
			ereport(LOG,
					(errmsg("outbox launcher could not start a worker for database %u: out of background worker slots",
							dbid),
					 errhint("Raise max_worker_processes: outbox needs one worker per database that has the extension, plus its launcher.")));
		slots_warned = true;
		return false;
	}
	slots_warned = false;
	launched[nlaunched].dbid = dbid;
	launched[nlaunched].handle = handle;
	launched[nlaunched].started_at = GetCurrentTimestamp();
	nlaunched++;
	return true;
}

/*
 * One pass of the launcher: forget workers that stopped, start the ones
 * that are due.  Returns when it wants to look again.
 */
static TimestampTz
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = now + (int64) outbox_launcher_naptime * USECS_PER_SEC;
	Oid		   *dbs;
	int			ndbs;

	/* Workers that stopped */
	for (int i = 0; i < nlaunched;)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(launched[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(launched[i].handle);
			launched[i] = launched[--nlaunched];
		}
		else
			i++;
	}

	if (!outbox_enabled)
	{
		for (int i = 0; i < nlaunched; i++)
			TerminateBackgroundWorker(launched[i].handle);
		return next;
	}

	dbs = database_list(&ndbs);
	outbox_databases_prune(dbs, ndbs, launcher_running);

	/*
	 * Databases known to have the extension first, then the others: a
	 * database with the extension never waits for worker slots behind the
	 * look at databases without it.  A database the launcher has no entry
	 * for takes the entry of one found without the extension more than a
	 * naptime ago, so that with more databases than entries each is looked
	 * at in turn; the second round starts where the last one stopped for
	 * want of worker slots.
	 */
	for (int k = 0; k < 2 * ndbs; k++)
	{
		bool		first = (k < ndbs);
		int			j = first ? k : (k - ndbs + resume_at) % ndbs;
		TimestampTz due;

		if (launched_for(dbs[j]) != NULL)
			continue;
		if (!outbox_databases_due(dbs[j], first, now, &due))
		{
			if (due != 0)
				next = Min(next, due);
			continue;
		}
		if (!start_worker(dbs[j]))
		{
			if (!first)
				resume_at = j;
			break;
		}
	}
	pfree(dbs);
	return next;
}

void
outbox_launcher_main(Datum main_arg)
{
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pin_search_path();

	launched = MemoryContextAlloc(TopMemoryContext,
								  sizeof(LaunchedWorker) * OUTBOX_MAX_DATABASES);
	nlaunched = 0;
	cxt = AllocSetContextCreate(TopMemoryContext, "outbox launcher",
								ALLOCSET_DEFAULT_SIZES);

	outbox_databases_launcher_started(MyLatch);

	for (;;)
	{
		TimestampTz next;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextSwitchTo(cxt);
		pgstat_report_activity(STATE_RUNNING, "looking for databases");
		next = launcher_pass();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextReset(cxt);

		timeout = (long) ((next - GetCurrentTimestamp() + 999) / 1000);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------------
 * The per-database worker
 * ---------------------------------------------------------------------- */

typedef enum WorkUnit
{
	UNIT_REAP,
	UNIT_MAINTAIN
} WorkUnit;

static const char *const unit_names[] = {"reap", "maintenance"};

/* The last failure logged, per unit, so that a repeated one is not */
static char *last_error[2];

/*
 * Is the extension there, ready to use?  Locks outbox.topic first, so that
 * a DROP EXTENSION in progress is waited for rather than run into.
 */
static bool
extension_ready(void)
{
	Oid			rel = RangeVarGetRelid(makeRangeVar("outbox", "topic", -1),
									   AccessShareLock, true);

	return OidIsValid(rel) && OidIsValid(get_extension_oid("outbox", true));
}

/*
 * Is the extension's schema the version this library works with?  If not,
 * say so once (until it is), with the hint: the worker has nothing to do
 * in that database until ALTER EXTENSION outbox UPDATE.
 */
static bool
schema_current(void)
{
	static bool warned = false;
	char	   *version;

	if (outbox_schema_current(&version))
	{
		warned = false;
		return true;
	}
	if (!warned)
		ereport(LOG,
				(errmsg("outbox worker: the extension in database \"%s\" is version %s, but the library is version %s; the worker waits for the update",
						get_database_name(MyDatabaseId), version, OUTBOX_SCHEMA_VERSION),
				 errhint("ALTER EXTENSION outbox UPDATE")));
	warned = true;
	return false;
}

/*
 * Run one unit of work in transactions of its own.  Errors are logged (a
 * repeat of the last one is not) and the work is tried again next time.
 * Returns false if the extension is not installed.
 */
static bool
run_unit(WorkUnit unit, MemoryContext cxt)
{
	volatile bool present = true;
	volatile bool more = true;

	while (more && present)
	{
		more = false;
		pin_search_path();
		PG_TRY();
		{
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, unit == UNIT_REAP ?
								   "outbox: reaping expired leases" :
								   "outbox: maintaining partitions");
			present = extension_ready();
			/* an old schema: logged, and nothing to do until it is updated */
			if (present && schema_current())
			{
				if (unit == UNIT_REAP)
					(void) outbox_do_reap();
				else
					more = outbox_do_maintain(true);
			}
			PopActiveSnapshot();
			CommitTransactionCommand();
			pgstat_report_activity(STATE_IDLE, NULL);
			pgstat_report_stat(false);

			if (last_error[unit] != NULL)
			{
				ereport(LOG,
						(errmsg("outbox worker: %s works again", unit_names[unit])));
				pfree(last_error[unit]);
				last_error[unit] = NULL;
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);

			if (last_error[unit] == NULL || strcmp(last_error[unit], edata->message) != 0)
			{
				/* the whole report, with a note of what happens next */
				ereport(LOG,
						(errcode(edata->sqlerrcode),
						 errmsg("outbox worker: %s failed (SQLSTATE %s): %s",
								unit_names[unit], unpack_sql_state(edata->sqlerrcode),
								edata->message),
						 errdetail_internal("%s%sIt is tried again at the next interval; the same failure is not logged again.",
											edata->detail ? edata->detail : "",
											edata->detail ? "\n" : ""),
						 edata->hint ? errhint("%s", edata->hint) : 0,
						 edata->context ? errcontext("%s", edata->context) : 0));
				if (last_error[unit])
					pfree(last_error[unit]);
				last_error[unit] = MemoryContextStrdup(TopMemoryContext, edata->message);
			}
			FreeErrorData(edata);
			more = false;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}
	return present;
}

static void
worker_leaving(int code, Datum arg)
{
	outbox_databases_worker_leaving(MyDatabaseId);
}

void
outbox_worker_main(Datum main_arg)
{
	Oid			dbid = DatumGetObjectId(main_arg);
	MemoryContext cxt;
	TimestampTz next_reap;
	TimestampTz next_maintain;
	bool		seen_present = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	pin_search_path();

	outbox_databases_worker_started(dbid, MyLatch);
	before_shmem_exit(worker_leaving, (Datum) 0);

	cxt = AllocSetContextCreate(TopMemoryContext, "outbox worker",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);

	next_reap = next_maintain = GetCurrentTimestamp();
	for (;;)
	{
		TimestampTz now;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a shorter interval takes effect now, not after the old one */
			next_reap = Min(next_reap, GetCurrentTimestamp() +
							(int64) outbox_reap_interval * 1000);
			next_maintain = Min(next_maintain, GetCurrentTimestamp() +
								(int64) outbox_maintenance_interval * USECS_PER_SEC);
		}
		if (!outbox_enabled)
			break;

		now = GetCurrentTimestamp();
		if (outbox_databases_take_reap_request(dbid))
			next_reap = now;
		if (outbox_databases_restore_running(dbid))
		{
			/* a restore is loading the database: leave its tables alone */
			int64		later = now + (int64) outbox_reap_interval * 1000;

			next_reap = Max(next_reap, later);
			next_maintain = Max(next_maintain, later);
		}
		if (now >= next_reap)
		{
			if (!run_unit(UNIT_REAP, cxt))
				break;
			next_reap = now + (int64) outbox_reap_interval * 1000;
			if (!seen_present)
			{
				outbox_databases_set_present(dbid, true);
				seen_present = true;
			}
		}
		if (now >= next_maintain)
		{
			if (!run_unit(UNIT_MAINTAIN, cxt))
				break;
			next_maintain = now + (int64) outbox_maintenance_interval * USECS_PER_SEC;
		}
		MemoryContextReset(cxt);

		timeout = (long) ((Min(next_reap, next_maintain) - GetCurrentTimestamp() + 999) / 1000);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* The extension is not here (or we are disabled): leave for good. */
	if (outbox_enabled)
		outbox_databases_set_present(dbid, false);
	proc_exit(0);
}
