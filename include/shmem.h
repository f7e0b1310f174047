/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared delivery state (shmem.c): topic slots, the hash of leases and
 *	  ready events, offer slots, counters, and the functions over them.
 *
 *	  The structs of the shared state, and the lock that protects them, are
 *	  private to shmem.c; its top comment says how they are locked.  What
 *	  is declared here are the functions other files call, and the values
 *	  they pass in or get copied out.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SHMEM_H
#define OUTBOX_SHMEM_H

#include "outbox.h"

/*
 * A topic's counters since server start, kept apart from its slot so that
 * they outlive the slot (shmem.c).
 */
typedef struct OutboxCountersKey
{
	Oid			dbid;
	int32		topic_id;
} OutboxCountersKey;

typedef struct OutboxCounters
{
	OutboxCountersKey key;
	int64		incarnation;
	/* since start or the last reset_metrics(): */
	uint64		offered;		/* committed offers */
	uint64		claimed;		/* committed leases */
	uint64		acked;			/* committed acks */
	uint64		nacked;
	uint64		expired;		/* leases reaped after they expired */
	uint64		dead_lettered;
	uint64		redriven;
	/* offered and acked before the last reset: stats counts from start */
	uint64		offered_before;
	uint64		acked_before;
	int32		latency;		/* its OutboxLatency, or -1 */
} OutboxCounters;

/* A scan position left by a topic that gave its slot up, as copied for reap */
typedef struct OutboxParkedPosition
{
	Oid			dbid;
	int32		topic_id;
	int64		incarnation;
	int64		pos;			/* every event <= pos is settled */
} OutboxParkedPosition;

typedef enum OutboxEntrySource
{
	SRC_MAIN,					/* found by the scan of the log */
	SRC_RETRY					/* has a row in outbox.retry */
} OutboxEntrySource;

/* shmem.c */
extern void outbox_shmem_install_hooks(void);
extern bool outbox_shmem_available(void);
extern void outbox_require_shmem(const char *function);

/* The leases of a topic, as copied for outbox.stats */
typedef struct OutboxTopicLeases
{
	int32		topic_id;
	int64		incarnation;
	int			nleases;
	int64	   *lease_ids;
} OutboxTopicLeases;
extern int	outbox_snapshot_leases(OutboxTopicLeases **topics,
								   OutboxCounters **counters, int *ncounters);
extern int	outbox_snapshot_metrics(OutboxCounters **counters, OutboxLatency **lat);
extern void outbox_metrics_reset(void);

/* A lease being settled by this transaction (an ack, nack or dead letter) */
typedef struct OutboxSettling
{
	int64		id;
	int			topic;			/* its topic's slot */
	int32		topic_id;
	uint8		source;			/* OutboxEntrySource */
	int32		attempt;
	pg_uuid_t	token;
} OutboxSettling;
extern int	outbox_lease_mark_settling(const int64 *ids, int n,
									   const pg_uuid_t *token, bool acks,
									   OutboxSettling *out);
extern int32 outbox_lease_topic_id(int64 id, const pg_uuid_t *token);
extern int	outbox_lease_extend(const int64 *ids, int n, const pg_uuid_t *token,
								TimestampTz expires_at);
extern int	outbox_leases_mark_expired(TimestampTz now, OutboxSettling *out,
									   int max);
extern bool outbox_leases_expire_own(void);
extern void outbox_entry_topic_ids(const int64 *ids, int n, int32 *topic_ids);
extern int	outbox_topic_lease_count(int32 topic_id, int64 incarnation);
extern void outbox_parked_done(const OutboxParkedPosition *done, int n);
extern int	outbox_watermark_candidates(int32 **topic_ids, int64 **incarnations,
										int64 **marks,
										OutboxParkedPosition **parked,
										int *nparked);
extern int	outbox_leases_count_expired(TimestampTz now);
extern int	outbox_offering_xids(TransactionId *xids, int max);
extern bool outbox_unloaded_topic_floor(int32 topic_id, int64 *floor);

/*
 * Claims (claim.c).  A claim finds or makes its topic's slot, says it is
 * scanning, reads holding no LWLock, and ends its scan by making its leases
 * and setting the scan position in one critical section.
 */

/* The topic's scan as a claim finds it before it reads the log */
typedef struct OutboxScanView
{
	int64		scan_pos;
	int64		recovery_until;
	uint64		scan_epoch;
	TimestampTz next_retry_at;
	int			nretry_leases;
	int			nwaiting;		/* ordered: key members in outbox.retry */
} OutboxScanView;

/* An event a claim may lease */
typedef struct OutboxCandidate
{
	int64		id;
	uint8		source;			/* OutboxEntrySource */
	bool		from_ready;		/* taken from the topic's ready list, */
	bool		held;			/* or held back behind its key (then too) */
	bool		keyed;			/* of a key of an ordered topic */
	uint64		keyhash;		/* then: outbox_key_hash(tenant, key) */
	int32		attempts;		/* attempts made before this lease */
	TimestampTz created_at;		/* the event's, or 0 (latency metrics) */
	bool		leased;			/* out: a lease was made */
	bool		member_new;		/* out: keyed, and not its key's member before */
	int32		attempt;		/* out: of the lease made */
} OutboxCandidate;

/* What a claim brings to the end of its scan, and what it takes back */
typedef struct OutboxScanEnd
{
	int			topic;			/* the topic's slot */
	const pg_uuid_t *token;
	TimestampTz now;
	TimestampTz expires_at;
	OutboxCandidate *cand;		/* ready events, retries, then the log's */
	int			ncand;
	int			batch;			/* lease at most this many */
	const int64 *junk;			/* ready ids whose event is gone, */
	const bool *junk_held;		/* held back behind their key, */
	const uint64 *junk_hashes;	/* which */
	int			njunk;
	Snapshot	snap;			/* the log scan's, or NULL if it did not run */
	OutboxScanView seen;		/* the topic as the scan found it */
	int64		scanned;		/* the highest id the scan examined */
	bool		retry_exhausted;	/* every due retry was read */
	int64		retry_above;	/* ordered: the lowest due retry above the
								 * scan position, or 0 */
	TimestampTz next_retry;		/* then: when to look in outbox.retry again */
	/* out: */
	int			nleased;
	bool		full;			/* the lease hash is full */
	bool		capped;			/* the topic holds its share of leases */
	bool		keys_full;		/* no room to hold an event behind its key */
} OutboxScanEnd;

extern int	outbox_topic_acquire(int32 topic_id, int64 incarnation);
extern bool outbox_scan_begin(int topic, int32 topic_id, int64 incarnation,
							  bool ordered, bool *initialized);
extern void outbox_scan_view(int topic, OutboxScanView *view);
extern int64 outbox_topic_watermark(int topic);
extern void outbox_topic_init_scan(int topic, int64 watermark, int64 bound);
extern int	outbox_topic_ready_ids(int topic, int64 *ids, bool *held,
								   uint64 *hashes, int max, int run_from,
								   int run_max);
extern void outbox_entries_held(const int64 *ids, int n, bool *held);
extern void outbox_keys_blocked(int topic, const uint64 *hashes,
								const int64 *ids, int n, bool *blocked);
extern bool outbox_keys_load(int topic, const int64 *ids,
							 const uint64 *hashes, int n);
extern int	outbox_key_waiting_add(int32 topic_id, int64 incarnation,
								   int64 id, uint64 hash);
extern void outbox_scan_end(OutboxScanEnd *s);
extern void outbox_scan_abandon(int topic);
extern int	outbox_retry_leases_verify(int topic, const pg_uuid_t *token,
									   OutboxCandidate *cand, int ncand,
									   const int64 *found_ids,
									   const int32 *found_attempts,
									   int nfound);
extern uint64 outbox_topic_wakes(int topic);
extern bool outbox_topic_prepare_to_sleep(int topic, uint64 wakes);
extern void outbox_topic_sleep(int topic, long ms);
extern TimestampTz outbox_topic_next_retry(int topic);

/*
 * Transactions (xact.c).  xact.c records what the transaction did; these
 * apply it to the shared state at the transaction's end.
 */

/* xact.c: what this transaction did to shared state, applied at its end */
typedef enum OutboxOpKind
{
	OP_CLAIMED,					/* a lease made by this transaction */
	OP_ACK,						/* an ack: the lease ends at commit */
	OP_FINISH,					/* a nack, dead letter or reap: ends at commit */
	OP_EXTENDED,				/* nothing to undo */
	OP_WAITING					/* a keyed event made to wait: gone at abort */
} OutboxOpKind;

/* An operation of the transaction on a lease */
typedef struct OutboxOp
{
	int64		event_id;
	int			topic;
	uint8		kind;			/* OutboxOpKind */
	bool		done;			/* undone by a subtransaction abort */
	SubTransactionId subid;
	pg_uuid_t	token;
	TimestampTz retry_at;		/* OP_FINISH: the event's retry row time */
	uint64		keyhash;		/* OP_WAITING: the event's key */
} OutboxOp;

/* A count this transaction makes at commit (metrics) */
typedef struct OutboxCountOp
{
	int32		topic_id;
	int64		incarnation;
	uint8		what;			/* OutboxCount */
	int32		n;
	SubTransactionId subid;		/* InvalidSubTransactionId: rolled back */
} OutboxCountOp;

/* What the transaction did to one topic: offers, a drop, a new watermark */
typedef struct OutboxTopicChange
{
	int32		topic_id;
	int64		incarnation;	/* 0: whatever the topic's is */
	int			topic;			/* the slot our offer slot names, or -1 */
	int			slot_index;		/* in our offer slot, or -1 */
	const int64 *ids;			/* offered ids */
	const SubTransactionId *subids; /* InvalidSubTransactionId: rolled back */
	const bool *delayed;
	int			nids;
	bool		forget;			/* the topic was dropped */
	int64		watermark;
	TimestampTz retry_at;		/* earliest new outbox.retry time, or 0 */
} OutboxTopicChange;

extern int	outbox_offer_slot_register(int32 topic_id, int64 incarnation,
									   TransactionId xid, int *slot_index,
									   bool *lo_pending);
extern void outbox_offer_slot_set_lo_any(int64 event_id);
extern void outbox_offer_slot_set_lo(int slot_index, int64 event_id);
extern void outbox_offer_slot_reset(void);
extern void outbox_offers_settle(const OutboxTopicChange *c, bool commit);
extern void outbox_topic_settle(const OutboxTopicChange *c);
extern void outbox_ops_settle(OutboxOp *ops, int nops, bool commit,
							  const OutboxCountOp *counts, int ncounts);
extern void outbox_ops_undo(OutboxOp *ops, int nops, SubTransactionId subid);
extern void outbox_ops_keep_lease(OutboxOp *ops, int nops, int64 event_id);
extern void outbox_forget_database_state(Oid dbid);

#endif							/* OUTBOX_SHMEM_H */
