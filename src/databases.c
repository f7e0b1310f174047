/*-------------------------------------------------------------------------
 *
 * databases.c
 *	  The launcher's table of databases, in shared memory: for each database
 *	  whether it has the extension, when a worker was last started for it,
 *	  its worker's pid and latch, and whether a session asked that worker to
 *	  reap now.  This file alone reads and changes the table.
 *
 *	  Locking: one LWLock of its own (tranche "outbox_databases") guards the
 *	  whole table.  It is held only to read or change entries: no SQL, no
 *	  heavyweight lock, no allocation and no signal is sent while it is held
 *	  (latches are set and SIGTERM sent after it is released, from values
 *	  read under it).  It is never held together with another outbox lock.
 *
 *	  Sessions reach the workers only through the notifications below
 *	  (outbox_database_changed, outbox_database_dropping,
 *	  outbox_wake_worker, outbox_database_restoring), so that nothing below
 *	  the worker calls into it.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"

#include <signal.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/procarray.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#define DATABASES_TRANCHE "outbox_databases"

typedef enum DbState
{
	DB_UNKNOWN = 0,				/* not looked at yet */
	DB_PRESENT,					/* has the extension */
	DB_ABSENT					/* had not, when last looked at */
} DbState;

typedef struct DbEntry
{
	Oid			dbid;			/* InvalidOid: free */
	uint8		state;			/* DbState */
	pid_t		worker_pid;
	Latch	   *worker_latch;
	bool		reap_requested; /* a consumer left with leases to hand back */
	TimestampTz checked_at;		/* last start of a worker for it */
	TimestampTz dropping_since; /* DROP DATABASE seen, or 0 */
	pid_t		restoring_pid;	/* a session restoring a dump into it, or 0 */
} DbEntry;

typedef struct DbTable
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	DbEntry		dbs[OUTBOX_MAX_DATABASES];
} DbTable;

static DbTable *table = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
databases_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(DbTable)));
	RequestNamedLWLockTranche(DATABASES_TRANCHE, 1);
}

static void
databases_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	table = ShmemInitStruct("outbox databases", MAXALIGN(sizeof(DbTable)), &found);
	if (!found)
	{
		memset(table, 0, sizeof(DbTable));
		table->lock = &(GetNamedLWLockTranche(DATABASES_TRANCHE))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
outbox_databases_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = databases_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = databases_shmem_startup;
}

/*
 * The entry of a database; made if missing and make is set.  When every
 * entry is taken, the entry of a database found without the extension
 * before absent_before, checked longest ago and with no worker, gives way:
 * databases without the extension (any role with CREATEDB can make many)
 * never keep a database that has it from its entry, and so from its
 * worker.  Caller holds the table's lock exclusively.
 */
static DbEntry *
entry_evicting(Oid dbid, bool make, TimestampTz absent_before)
{
	DbEntry    *free_entry = NULL;
	DbEntry    *absent = NULL;

	for (int i = 0; i < OUTBOX_MAX_DATABASES; i++)
	{
		DbEntry    *d = &table->dbs[i];

		if (d->dbid == dbid)
			return d;
		if (d->dbid == InvalidOid && free_entry == NULL)
			free_entry = d;
		if (d->dbid != InvalidOid && d->state == DB_ABSENT && d->worker_pid == 0 &&
			d->dropping_since == 0 && d->checked_at < absent_before &&
			(absent == NULL || d->checked_at < absent->checked_at))
			absent = d;
	}
	if (free_entry == NULL)
		free_entry = absent;
	if (!make || free_entry == NULL)
		return NULL;
	memset(free_entry, 0, sizeof(DbEntry));
	free_entry->dbid = dbid;
	return free_entry;
}

/* The same, any database without the extension giving way */
static DbEntry *
entry(Oid dbid, bool make)
{
	return entry_evicting(dbid, make, PG_INT64_MAX);
}

static void
wake_launcher(void)
{
	Latch	   *latch;

	LWLockAcquire(table->lock, LW_SHARED);
	latch = table->launcher_latch;
	LWLockRelease(table->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* ----------------------------------------------------------------------
 * Notifications
 * ---------------------------------------------------------------------- */

/*
 * The extension was created (present) or dropped in a database: called at
 * commit.  Must not fail.
 */
void
outbox_database_changed(Oid dbid, bool present)
{
	DbEntry    *d;

	if (table == NULL)
		return;					/* not preloaded */

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, true);
	if (d != NULL)
	{
		d->state = present ? DB_PRESENT : DB_ABSENT;
		d->checked_at = 0;
	}
	LWLockRelease(table->lock);
	if (present)
		wake_launcher();
}

/*
 * DROP DATABASE is about to wait for the database's other connections to
 * go: ask its worker to leave, and keep the launcher away for a while.
 */
void
outbox_database_dropping(Oid dbid)
{
	DbEntry    *d;
	pid_t		pid = 0;

	if (table == NULL)
		return;					/* not preloaded */

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, true);
	if (d != NULL)
	{
		d->dropping_since = GetCurrentTimestamp();
		pid = d->worker_pid;
	}
	LWLockRelease(table->lock);
	if (pid != 0)
		(void) kill(pid, SIGTERM);
}

/* Ask the worker of a database to reap now. */
void
outbox_wake_worker(Oid dbid)
{
	DbEntry    *d;
	Latch	   *latch = NULL;

	if (table == NULL)
		return;					/* not preloaded */

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, false);
	if (d != NULL && d->worker_pid != 0)
	{
		d->reap_requested = true;
		latch = d->worker_latch;
	}
	LWLockRelease(table->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * This session restores a dump into its database (the restore guard
 * accepted it): until the session ends, the database's worker leaves the
 * half-loaded tables alone.  Must not fail.
 */
void
outbox_database_restoring(Oid dbid)
{
	DbEntry    *d;

	if (table == NULL)
		return;					/* not preloaded */
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, true);
	if (d != NULL)
		d->restoring_pid = MyProcPid;
	LWLockRelease(table->lock);
}

/* ----------------------------------------------------------------------
 * The launcher
 * ---------------------------------------------------------------------- */

void
outbox_databases_launcher_started(Latch *latch)
{
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	table->launcher_latch = latch;
	LWLockRelease(table->lock);
}

/*
 * Forget the entries of databases that are gone: not among dbs, and with no
 * worker the launcher knows to be running (running() must not wait).
 */
void
outbox_databases_prune(const Oid *dbs, int ndbs, bool (*running) (Oid dbid))
{
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	for (int i = 0; i < OUTBOX_MAX_DATABASES; i++)
	{
		DbEntry    *d = &table->dbs[i];
		bool		exists = false;

		if (d->dbid == InvalidOid)
			continue;
		for (int j = 0; j < ndbs && !exists; j++)
			exists = (dbs[j] == d->dbid);
		if (!exists && !running(d->dbid))
			d->dbid = InvalidOid;
	}
	LWLockRelease(table->lock);
}

/*
 * Is a worker to be started for a database now?  present: the launcher's
 * round over databases known to have the extension, which makes no entry;
 * otherwise its round over the others, in which a database without an
 * entry takes that of one found without the extension more than a naptime
 * ago.  True marks the entry started now.  False with *due set says when
 * one will be due; *due = 0: not in this round.
 */
bool
outbox_databases_due(Oid dbid, bool present, TimestampTz now, TimestampTz *due)
{
	int64		naptime = (int64) outbox_launcher_naptime * USECS_PER_SEC;
	DbEntry    *d;
	TimestampTz when;
	bool		start;

	*due = 0;
	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry_evicting(dbid, !present, now - naptime);
	if (d == NULL || present != (d->state == DB_PRESENT) || d->worker_pid != 0)
	{
		/* not this round's, or its worker (of an earlier launcher) runs */
		LWLockRelease(table->lock);
		return false;
	}
	if (d->dropping_since != 0 && now - d->dropping_since < OUTBOX_DROPPING_USEC)
		when = d->dropping_since + OUTBOX_DROPPING_USEC;
	else if (d->state == DB_ABSENT)
		when = d->checked_at + naptime;
	else
		when = d->checked_at + OUTBOX_RESTART_BACKOFF_USEC;
	if (d->state == DB_UNKNOWN)
		when = 0;
	start = (when <= now);
	if (start)
		d->checked_at = now;
	LWLockRelease(table->lock);
	if (!start)
		*due = when;
	return start;
}

/* ----------------------------------------------------------------------
 * A database's worker
 * ---------------------------------------------------------------------- */

void
outbox_databases_worker_started(Oid dbid, Latch *latch)
{
	DbEntry    *d;

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, true);
	if (d != NULL)
	{
		d->worker_pid = MyProcPid;
		d->worker_latch = latch;
		d->reap_requested = false;
	}
	LWLockRelease(table->lock);
}

/* The worker leaves (at exit): the launcher may start another */
void
outbox_databases_worker_leaving(Oid dbid)
{
	DbEntry    *d;

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, false);
	if (d != NULL && d->worker_pid == MyProcPid)
	{
		d->worker_pid = 0;
		d->worker_latch = NULL;
	}
	LWLockRelease(table->lock);
	wake_launcher();
}

/* Did a session ask for a reap since the last call?  Clears the request. */
bool
outbox_databases_take_reap_request(Oid dbid)
{
	DbEntry    *d;
	bool		requested = false;

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, false);
	if (d != NULL && d->reap_requested)
	{
		d->reap_requested = false;
		requested = true;
	}
	LWLockRelease(table->lock);
	return requested;
}

/* What the worker found: the extension is there, or is not */
void
outbox_databases_set_present(Oid dbid, bool present)
{
	DbEntry    *d;

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, false);
	if (d != NULL)
		d->state = present ? DB_PRESENT : DB_ABSENT;
	LWLockRelease(table->lock);
}

/*
 * Is a session restoring a dump into the database still there?  The
 * process is looked up after the table's lock is released.
 */
bool
outbox_databases_restore_running(Oid dbid)
{
	DbEntry    *d;
	pid_t		pid = 0;

	LWLockAcquire(table->lock, LW_SHARED);
	d = entry(dbid, false);
	if (d != NULL)
		pid = d->restoring_pid;
	LWLockRelease(table->lock);
	if (pid == 0)
		return false;
	if (BackendPidGetProc(pid) != NULL)
		return true;

	LWLockAcquire(table->lock, LW_EXCLUSIVE);
	d = entry(dbid, false);
	if (d != NULL && d->restoring_pid == pid)
		d->restoring_pid = 0;
	LWLockRelease(table->lock);
	return false;
}
