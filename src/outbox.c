/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Module entry point: configuration parameters and start-up hooks.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"

#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

int			outbox_max_leases = 65536;
int			outbox_max_topics = 256;

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

	if (access == OAT_DROP && classId == ExtensionRelationId &&
		outbox_shmem_available() &&
		objectId == get_extension_oid("outbox", true))
		outbox_xact_forget_database();
}

void
_PG_init(void)
{
	/*
	 * The sizes of shared structures can only be set at server start, and
	 * only mean something when the library is preloaded.
	 */
	DefineCustomIntVariable("outbox.max_leases",
							"Leased and ready-to-redeliver events the server can track at once.",
							"Each entry takes about 100 bytes of shared memory.",
							&outbox_max_leases,
							65536, 1024, 16 * 1024 * 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("outbox.max_topics",
							"Topics, over all databases, that can be consumed at once.",
							NULL,
							&outbox_max_topics,
							256, 1, 65536,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("outbox");

	outbox_xact_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	outbox_shmem_install_hooks();
	prev_object_access_hook = object_access_hook;
	object_access_hook = outbox_object_access;
}
