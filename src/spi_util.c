/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  The backend's cache of SPI plans: each statement the hot paths run is
 *	  prepared once per backend, kept, and executed by its id.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "spi_util.h"

static SPIPlanPtr plans[NUM_OUTBOX_PLANS];

SPIPlanPtr
outbox_plan(OutboxPlanId id, const char *sql, int nargs, const Oid *argtypes)
{
	if (plans[id] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, (Oid *) argtypes);

		if (plan == NULL)
			elog(ERROR, "could not prepare outbox statement %d: %s",
				 (int) id, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep outbox statement %d", (int) id);
		plans[id] = plan;
	}
	return plans[id];
}

int
outbox_exec(OutboxPlanId id, const char *sql, int nargs, const Oid *argtypes,
			Datum *values, const char *nulls, bool read_only, long tcount)
{
	SPIPlanPtr	plan = outbox_plan(id, sql, nargs, argtypes);
	int			rc;

	rc = SPI_execute_plan(plan, values, nulls, read_only, tcount);
	if (rc < 0)
		elog(ERROR, "outbox statement %d failed: %s", (int) id,
			 SPI_result_code_string(rc));
	return rc;
}

void
outbox_spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s: unexpected SPI result %s", what,
			 SPI_result_code_string(rc));
}
