/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Module entry point: configuration parameters and start-up hooks.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"
#include "eventlog.h"
#include "shmem.h"
#include "storage.h"
#include "tenant.h"
#include "topic.h"
#include "worker.h"
#include "xact.h"

#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

int			outbox_max_leases = 65536;
int			outbox_max_leases_per_topic = 0;
int			outbox_max_topics = 256;
int			outbox_max_ordered_keys = 16384;
int			outbox_max_ordered_events = 65536;
bool		outbox_enabled = true;
int			outbox_reap_interval = 1000;
int			outbox_maintenance_interval = 600;
int			outbox_launcher_naptime = 60;
bool		outbox_release_on_disconnect = false;

void		_PG_init(void);

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * DROP EXTENSION outbox: what shared memory holds for this database goes
 * when the drop commits, so that a later CREATE EXTENSION starts clean.
 */
static void
outbox_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_DROP || !outbox_shmem_available())
		return;
	if (classId == ExtensionRelationId &&
		objectId == get_extension_oid("outbox", true))
		outbox_xact_forget_database();
	else if (classId == DatabaseRelationId)
	{
		outbox_database_dropping(objectId);
		/* its topics' shared state would only take room from others' */
		outbox_xact_forget_dropped_database(objectId);
	}
}

void
_PG_init(void)
{
	/*
	 * The sizes of shared structures can only be set at server start, and
	 * only mean something when the library is preloaded.  A library loaded
	 * later may not define such settings at all (PostgreSQL ends the
	 * session with FATAL): without preloading they are left out.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("outbox.max_leases",
								"Leased and ready-to-redeliver events the server can track at once.",
								"Each entry takes about 100 bytes of shared memory.",
								&outbox_max_leases,
								65536, 1024, 16 * 1024 * 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("outbox.metrics_topics",
								"Topics, over all databases, whose latency histograms are kept.",
								"Each takes about 2 kB of shared memory.  Topics beyond it have counters but no latencies in outbox.metrics.",
								&outbox_metrics_topics,
								1024, 0, 65536,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("outbox.max_topics",
								"Topics, over all databases, that can be consumed at once.",
								NULL,
								&outbox_max_topics,
								256, 1, 65536,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("outbox.max_ordered_keys",
								"Keys of ordered topics, over all databases, that can have events leased, waiting or held back at once.",
								"Each takes about 100 bytes of shared memory.",
								&outbox_max_ordered_keys,
								16384, 128, 16 * 1024 * 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("outbox.max_ordered_events",
								"Events of ordered topics, over all databases, that shared memory follows at once: leased, waiting for a retry, or held back behind an earlier event of their key.",
								"Each takes about 22 bytes of shared memory.",
								&outbox_max_ordered_events,
								65536, 1024, 64 * 1024 * 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	}

	DefineCustomIntVariable("outbox.max_leases_per_topic",
							"Leases one topic, or one tenant's part of a per-tenant topic, may hold at once.",
							"0: no share, only outbox.max_leases.  A claim beyond it leases what fits, or nothing.",
							&outbox_max_leases_per_topic,
							0, 0, 16 * 1024 * 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("outbox.release_on_disconnect",
							 "Hands this session's leases back as soon as it disconnects.",
							 "For consumers with a connection of their own; never for pooled connections.",
							 &outbox_release_on_disconnect,
							 false,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("outbox.tenant",
							   "The tenant this session acts for.",
							   "Empty: none, unless the role is bound to exactly one tenant.",
							   &outbox_tenant_setting,
							   "",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("outbox.enabled",
							 "Runs the outbox background workers.",
							 "When off, no worker reaps leases or maintains partitions.",
							 &outbox_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("outbox.reap_interval",
							"Time between two reaps of expired leases by the worker.",
							NULL,
							&outbox_reap_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("outbox.maintenance_interval",
							"Time between two runs of outbox.maintain() by the worker.",
							NULL,
							&outbox_maintenance_interval,
							600, 1, 7 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("outbox.launcher_naptime",
							"Time between two looks of the launcher for databases it was not told about.",
							NULL,
							&outbox_launcher_naptime,
							60, 1, 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("outbox");

	outbox_xact_init();
	outbox_topic_cache_init();
	outbox_tenant_init();
	outbox_eventlog_init();
	outbox_storage_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	outbox_shmem_install_hooks();
	outbox_databases_install_hooks();
	if (!IsBinaryUpgrade)
		outbox_register_launcher();
	prev_object_access_hook = object_access_hook;
	object_access_hook = outbox_object_access;
}
