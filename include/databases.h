/*-------------------------------------------------------------------------
 *
 * databases.h
 *	  The launcher's table of databases (databases.c): which databases have
 *	  the extension, their workers, and the notifications that reach the
 *	  workers from the sessions of a database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_DATABASES_H
#define OUTBOX_DATABASES_H

#include "postgres.h"

#include "storage/latch.h"
#include "utils/timestamp.h"

/* How many databases the table holds; more are served in turn */
#define OUTBOX_MAX_DATABASES	256

/* A worker stopped this soon after its start is not restarted at once */
#define OUTBOX_RESTART_BACKOFF_USEC	(10 * USECS_PER_SEC)
/* How long the launcher keeps away from a database being dropped */
#define OUTBOX_DROPPING_USEC		(60 * USECS_PER_SEC)

extern void outbox_databases_install_hooks(void);

/* Notifications, from any session: none of them fails or waits */
extern void outbox_database_changed(Oid dbid, bool present);
extern void outbox_database_dropping(Oid dbid);
extern void outbox_wake_worker(Oid dbid);

/* A restore loads the database (restore.c): its worker keeps away */
extern void outbox_database_restoring(Oid dbid);

/* The launcher */
extern void outbox_databases_launcher_started(Latch *latch);
extern void outbox_databases_prune(const Oid *dbs, int ndbs,
								   bool (*running) (Oid dbid));
extern bool outbox_databases_due(Oid dbid, bool present, TimestampTz now,
								 TimestampTz *due);

/* A database's worker */
extern void outbox_databases_worker_started(Oid dbid, Latch *latch);
extern void outbox_databases_worker_leaving(Oid dbid);
extern bool outbox_databases_take_reap_request(Oid dbid);
extern void outbox_databases_set_present(Oid dbid, bool present);
extern bool outbox_databases_restore_running(Oid dbid);

#endif							/* OUTBOX_DATABASES_H */
