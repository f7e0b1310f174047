/*-------------------------------------------------------------------------
 *
 * walmsg.h
 *	  The logical decoding message an offer to a WAL topic emits (walmsg.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_WALMSG_H
#define OUTBOX_WALMSG_H

#include "outbox.h"
#include "topic.h"
#include "access/xlogdefs.h"

/* The prefix of every message outbox emits. */
#define OUTBOX_WAL_PREFIX	"outbox"

extern void outbox_wal_require_logical(const char *what);
extern bool outbox_wal_slot_ready(const char *name, XLogRecPtr *confirmed);
extern void outbox_wal_check_slot(const OutboxTopicInfo *topic);
/* The columns outbox_wal_emit_tuple() reads, in its order */
#define OUTBOX_WAL_ROW_COLUMNS	"id, key, type, payload, headers, tenant, created_at"
#define OUTBOX_WAL_ROW_NCOLS	7

extern void outbox_wal_emit_tuple(const OutboxTopicInfo *topic, HeapTuple tup,
								  TupleDesc desc);
extern void outbox_wal_emit(const OutboxTopicInfo *topic, int64 id,
							Datum key, Datum type, Datum payload,
							Datum headers, const char *tenant,
							TimestampTz created_at);

#endif							/* OUTBOX_WALMSG_H */
