/*-------------------------------------------------------------------------
 *
 * xact.h
 *	  What a transaction did to shared delivery state, applied at its end
 *	  (xact.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_XACT_H
#define OUTBOX_XACT_H

#include "outbox.h"
#include "shmem.h"

/*
 * xact.c: what this transaction did to shared state, applied at its end
 * (by shmem.c; the kinds of operation, OutboxOpKind, are in shmem.h)
 */
extern void outbox_xact_init(void);
extern void outbox_xact_reserve_ops(int n);
extern void outbox_xact_add_lease_op(OutboxOpKind kind, int64 event_id, int topic,
									 TimestampTz retry_at, const pg_uuid_t *token);
extern void outbox_xact_offer_register(int32 topic_id, int64 incarnation,
									   bool ordered);
extern void outbox_xact_offered(int32 topic_id, int64 incarnation,
								int64 event_id, bool delayed,
								TimestampTz available_at);
extern void outbox_xact_forget_topic(int32 topic_id, int64 incarnation);
extern void outbox_xact_forget_database(void);
extern void outbox_xact_forget_dropped_database(Oid dbid);
extern void outbox_xact_announce_database(void);
extern void outbox_xact_set_watermark(int32 topic_id, int64 incarnation,
									  int64 watermark);
extern void outbox_xact_retry_changed(int32 topic_id, TimestampTz when);
extern void outbox_xact_keep_lease(int64 event_id);
extern void outbox_xact_finish_retry(int64 event_id, TimestampTz retry_at);
extern void outbox_xact_key_waiting(int32 topic_id, int64 incarnation,
									const char *name, int64 event_id,
									uint64 keyhash);
extern void outbox_xact_scan_begin(int topic);
extern void outbox_xact_scan_end(void);
extern void outbox_xact_count(int32 topic_id, int64 incarnation,
							  OutboxCount what, int n);

#endif							/* OUTBOX_XACT_H */
