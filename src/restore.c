/*-------------------------------------------------------------------------
 *
 * restore.c
 *	  The restore guard.  Every dump of a database with the extension holds
 *	  one row of outbox._dump_origin naming the version of the extension it
 *	  was taken from; pg_dump lays out that table's data before every other
 *	  table of the outbox schema.  Loading the row checks that the database
 *	  it is restored into has the same version and holds no outbox of its
 *	  own, and otherwise ends the restoring session (FATAL), so that
 *	  pg_restore or psql load none of the dump's outbox data rather than
 *	  mixing two outboxes or loading rows into tables of another shape.
 *	  An accepted row is not stored: the table keeps the row of its own
 *	  install.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"
#include "schema.h"
#include "spi_util.h"

#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(outbox_restore_guard);

/* Compare two "major.minor" versions: <0, 0, >0; unparsable ones sort equal */
static int
version_cmp(const char *a, const char *b)
{
	int			amaj,
				amin,
				bmaj,
				bmin;

	if (sscanf(a, "%d.%d", &amaj, &amin) != 2 ||
		sscanf(b, "%d.%d", &bmaj, &bmin) != 2)
		return 0;
	if (amaj != bmaj)
		return amaj < bmaj ? -1 : 1;
	if (amin != bmin)
		return amin < bmin ? -1 : 1;
	return 0;
}

/* Does this database already hold outbox state of its own? */
static bool
holds_an_outbox(void)
{
	bool		holds;
	bool		isnull;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT EXISTS (SELECT FROM outbox.topic)"
					 " OR EXISTS (SELECT FROM outbox.event)"
					 " OR EXISTS (SELECT FROM outbox.retry)"
					 " OR EXISTS (SELECT FROM outbox.dead_letter)"
					 " OR EXISTS (SELECT FROM outbox.dedupe)"
					 " OR EXISTS (SELECT FROM outbox.tenant_access)",
					 true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "restore guard");
	holds = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return holds && !isnull;
}

/*
 * _restore_guard(): BEFORE INSERT row trigger on outbox._dump_origin.
 */
Datum
outbox_restore_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	char	   *dumped;
	char	   *installed;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "outbox_restore_guard: must be fired before INSERT for each row");

	dumped = SPI_getvalue(trigdata->tg_trigtuple,
						  trigdata->tg_relation->rd_att, 1);
	if (dumped == NULL)
		dumped = pstrdup("unknown");
	installed = outbox_installed_version();
	if (installed == NULL)
		installed = pstrdup("unknown");

	if (strcmp(dumped, installed) != 0)
	{
		bool		newer = version_cmp(dumped, installed) > 0;

		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this dump was taken from outbox %s, but this database has outbox %s",
						dumped, installed),
				 errdetail("The restoring session is ended so that none of the dump's outbox data is loaded into tables of another version."),
				 newer ?
				 errhint("Install outbox %s on this server, then restore into a new database.",
						 dumped) :
				 errhint("Restore into a new database in which CREATE EXTENSION outbox VERSION '%s' CASCADE was run, then ALTER EXTENSION outbox UPDATE.",
						 dumped)));
	}

	if (holds_an_outbox())
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database already holds an outbox; a dump of another one cannot be restored into it"),
				 errdetail("The restoring session is ended so that none of the dump's outbox data is mixed with the topics and events already here."),
				 errhint("Restore into a new, empty database.")));

	/*
	 * Accepted: the table keeps the row of this database's own install.
	 * The rest of the dump loads after this row; the database's worker
	 * keeps away until this session ends (a reap would trim
	 * acknowledgements whose watermarks are not loaded yet).
	 */
	outbox_database_restoring(MyDatabaseId);
	return PointerGetDatum(NULL);
}
