/*-------------------------------------------------------------------------
 *
 * schema.c
 *	  The installed schema against the library: the library is built for one
 *	  version of the extension's SQL objects (OUTBOX_SCHEMA_VERSION).  A
 *	  database whose extension was not yet updated after the library was
 *	  (ALTER EXTENSION outbox UPDATE) gets a clear error on first use, not a
 *	  parser error about a missing column deep in some statement.  Each
 *	  backend looks once, and again only until it has seen a match.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "schema.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

static bool schema_matches = false;

/*
 * The installed version of the extension in this database, palloc'd, or
 * NULL if it is not installed.
 */
char *
outbox_installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("outbox"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Is the extension in this database the version the library works with (or
 * not installed)?  If not, *installed is set to its version.
 */
bool
outbox_schema_current(char **installed)
{
	char	   *version = outbox_installed_version();

	*installed = version;
	return version == NULL || strcmp(version, OUTBOX_SCHEMA_VERSION) == 0;
}

/*
 * Refuse to work on a schema of another version than the library's.  The
 * install and update scripts themselves are let through.
 */
void
outbox_require_schema(void)
{
	char	   *version;

	if (schema_matches || creating_extension)
		return;
	if (!outbox_schema_current(&version))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the outbox extension in this database is version %s, but the library is version %s",
						version, OUTBOX_SCHEMA_VERSION),
				 errhint("ALTER EXTENSION outbox UPDATE")));
	schema_matches = (version != NULL);
}
