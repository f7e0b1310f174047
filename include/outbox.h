/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What every source file of the extension shares: limits on arguments,
 *	  settings, the tags of its advisory locks.  Each concern declares the
 *	  rest in a header of its own (shmem.h, xact.h, topic.h, ...).
 *
 * How delivery state is kept:
 *
 *	- outbox.event is an immutable, time-partitioned log.
 *	- Each topic has, in shared memory, a scan position: every committed
 *	  event at or below it has been handed out at least once (or is owned
 *	  by outbox.retry).  A claim scans the log upward from it by
 *	  (topic_id, id) and never meets a delivered row.
 *	- Leases live in a shared hash keyed by event id; they need no WAL.
 *	  Events handed back before they were acked (a rolled-back claim, a
 *	  committed offer the scan went past while it was in flight) wait in
 *	  the topic's ready list, also in that hash.
 *	- Offering transactions announce themselves in a per-backend slot
 *	  before they draw an id, so that a scan that passes their ids while
 *	  they are in flight can say so; at commit they put those ids on the
 *	  ready list.
 *	- Durable state: outbox.acked (one row per ack call), outbox.retry,
 *	  outbox.dead_letter and the per-topic watermark in outbox.topic_state,
 *	  from which a topic's shared state is rebuilt after a restart.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "postgres.h"

#include "compat.h"
#include "metrics.h"

#include "access/transam.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* The version of the SQL objects this library works with (schema.c) */
#define OUTBOX_SCHEMA_VERSION	"1.6"

/* Limits on arguments */
#define OUTBOX_MAX_BATCH		10000
#define OUTBOX_MAX_LEASE_USEC	USECS_PER_DAY
#define OUTBOX_MAX_WAIT_USEC	USECS_PER_HOUR
#define OUTBOX_MAX_RETRY_USEC	(INT64CONST(366) * USECS_PER_DAY)
#define OUTBOX_MAX_ATTEMPTS		1000000
#define OUTBOX_TOPIC_NAME_MAX	63
#define OUTBOX_TENANT_MAX		63
#define OUTBOX_MAX_ERROR_BYTES	4096	/* of an error or reason kept */
#define OUTBOX_MAX_ERROR_HISTORY	20	/* entries kept per event */

/*
 * How many topics a transaction's offer slot names one by one; offers to
 * further topics, or to topics without a shared slot, are announced by the
 * slot's lower bound for any topic (OutboxOfferSlot.lo_any).
 */
#define OUTBOX_SLOT_TOPICS		16

/* Scan positions of topics that gave their shared slot up, kept for reap */
#define OUTBOX_PARKED			256

/* field4 of the advisory lock tags the extension takes */
#define OUTBOX_LOCK_TOPIC		0x6f62
#define OUTBOX_LOCK_MAINTAIN	0x6f63
#define OUTBOX_LOCK_STORAGE		0x6f64
#define OUTBOX_LOCK_SCAN		0x6f65
#define OUTBOX_LOCK_WALSYNC		0x6f66

/* GUCs (outbox.c) */
extern int	outbox_max_leases;
extern int	outbox_max_leases_per_topic;
extern int	outbox_max_topics;
extern int	outbox_max_ordered_keys;
extern int	outbox_max_ordered_events;
extern bool outbox_enabled;
extern int	outbox_reap_interval;
extern int	outbox_maintenance_interval;
extern int	outbox_launcher_naptime;
extern bool outbox_release_on_disconnect;

#endif							/* OUTBOX_H */
