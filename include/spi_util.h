/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  The backend's cache of SPI plans (spi_util.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SPI_UTIL_H
#define OUTBOX_SPI_UTIL_H

#include "outbox.h"

/* spi_util.c: SPI plans prepared once per backend and kept */
typedef enum OutboxPlanId
{
	PLAN_TOPIC_BY_NAME,
	PLAN_TOPIC_BY_ID,
	PLAN_TOPIC_PART,
	PLAN_TOPIC_PART_CREATE,
	PLAN_TENANT_BINDINGS,
	PLAN_OFFER_INSERT,
	PLAN_OFFER_RETRY,
	PLAN_DEDUPE_INSERT,
	PLAN_DEDUPE_LOOKUP,
	PLAN_DEDUPE_REPLACE,
	PLAN_OFFER_BATCH,
	PLAN_OFFER_BATCH_WAL,
	PLAN_WATERMARK,
	PLAN_MAX_ID,
	PLAN_SETTLED,
	PLAN_FETCH_READY,
	PLAN_WAITING_KEYS,
	PLAN_RETRY_DUE,
	PLAN_RETRY_NEXT,
	PLAN_RETRY_VERIFY,
	PLAN_ACK_INSERT_0,
	PLAN_ACK_INSERT_1,
	PLAN_RETRY_DELETE,
	PLAN_RETRY_UPSERT,
	PLAN_DEAD_INSERT,
	PLAN_WATERMARK_UPDATE,
	PLAN_WATERMARK_PARKED,
	PLAN_REDRIVE,
	PLAN_ACK_ANY,
	PLAN_ACK_ABOVE,
	PLAN_ACK_TRIM,
	PLAN_REPLAY,
	PLAN_WAL_TOPICS,
	PLAN_WAL_PROGRESS,
	PLAN_LAST_EVENT_ID,
	PLAN_WAL_PROGRESS_SAVE,
	PLAN_WAL_WATERMARK,
	PLAN_WAL_PENDING,
	PLAN_WAL_RESEND,
	PLAN_WAL_ORIGIN,
	PLAN_WAL_ORIGIN_SET,
	PLAN_WAL_SLOT_MISSING,
	PLAN_UNLOADED_TOPICS,
	PLAN_UNLOADED_MARK,
	NUM_OUTBOX_PLANS
} OutboxPlanId;

extern SPIPlanPtr outbox_plan(OutboxPlanId id, const char *sql, int nargs,
							  const Oid *argtypes);
extern int	outbox_exec(OutboxPlanId id, const char *sql, int nargs,
						const Oid *argtypes, Datum *values, const char *nulls,
						bool read_only, long tcount);
extern void outbox_spi_check(int rc, int expected, const char *what);

#endif							/* OUTBOX_SPI_UTIL_H */
