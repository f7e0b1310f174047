/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared delivery state (shmem.c): topic slots, the hash of leases and
 *	  ready events, offer slots, counters, and the functions over them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SHMEM_H
#define OUTBOX_SHMEM_H

#include "outbox.h"

/*
 * A topic's shared state, all of it protected by the shared state lock
 * (OutboxShared.lock).  Claims of a topic take turns by a heavyweight lock
 * (OUTBOX_LOCK_SCAN, claim.c), which they hold while they read the log
 * without any LWLock; "scanning" says one is between its snapshot and the
 * moment it sets the scan position, and offers that commit meanwhile leave
 * their ids in the handoff for it (xact.c).
 */
#define OUTBOX_HANDOFF			128

typedef struct OutboxHandoff
{
	TransactionId xid;			/* the offering transaction */
	int64		id;
} OutboxHandoff;

typedef struct OutboxTopic
{
	bool		in_use;
	Oid			dbid;
	int32		topic_id;
	int64		incarnation;

	bool		scanning;		/* a claim reads the log */
	pid_t		scanner;		/* its pid */
	int			nhandoff;
	bool		handoff_overflow;	/* some ids found no room: */
	int64		handoff_min;	/* the least of them */
	OutboxHandoff handoff[OUTBOX_HANDOFF];

	bool		initialized;	/* scan_pos loaded from the watermark */
	int64		scan_pos;		/* every committed event <= this was seen */
	int64		recovery_until; /* step over settled events up to here */
	uint64		scan_epoch;		/* new whenever scan_pos moves down or the
								 * slot changes hands; unique among slots */
	int64		watermark;		/* last durable watermark */
	TimestampTz next_retry_at;	/* outbox.retry has nothing due before */
	dlist_head	leases;			/* OutboxEntry, state LEASED */
	dlist_head	ready;			/* OutboxEntry, state READY, FIFO */
	dlist_head	settled;		/* OutboxEntry, state SETTLED (see shmem.c) */
	int			nleases;
	int			nready;
	int			nsettled;
	int			nretry_leases;	/* leases whose event sits in outbox.retry */
	int			ninflight;		/* offer slots that name this topic */
	ConditionVariable cv;		/* claims waiting for events */
	pg_atomic_uint64 wakes;		/* times cv was broadcast (outbox_topic_wake) */
} OutboxTopic;

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

/* A scan position left by a topic that gave its slot up (shmem.c) */
typedef struct OutboxParked
{
	Oid			dbid;			/* InvalidOid: free */
	int32		topic_id;
	int64		incarnation;
	int64		pos;			/* every event <= pos is settled */
} OutboxParked;

typedef enum OutboxEntryState
{
	ENTRY_READY,
	ENTRY_LEASED,
	ENTRY_SETTLED				/* settled where a rescan will pass again */
} OutboxEntryState;

typedef enum OutboxEntrySource
{
	SRC_MAIN,					/* found by the scan of the log */
	SRC_RETRY					/* has a row in outbox.retry */
} OutboxEntrySource;

typedef struct OutboxEntryKey
{
	Oid			dbid;
	uint32		pad;			/* always zero */
	int64		event_id;
} OutboxEntryKey;

typedef struct OutboxEntry
{
	OutboxEntryKey key;
	int			topic;			/* index in OutboxShared.topics */
	uint8		state;			/* OutboxEntryState */
	uint8		source;			/* OutboxEntrySource */
	bool		finishing;		/* an ack, nack or reap is in progress */
	bool		claim_open;		/* the claiming transaction has not ended:
								 * the lease is not reaped, whatever its
								 * expiry (its end may yet undo it) */
	int32		attempt;		/* leases of this event, this one included */
	pg_uuid_t	token;
	TimestampTz expires_at;
	TimestampTz claimed_at;
	TimestampTz created_at;		/* the event's, for the latency metrics */
	int			owner;			/* pgprocno of the claiming backend */
	bool		release_on_exit;	/* owner set outbox.release_on_disconnect */
	dlist_node	node;			/* in the topic's leases or ready list */
} OutboxEntry;

/*
 * What an offering transaction announces, per backend.  lo is a lower bound
 * on the ids it may hold in that topic; passed is the highest scan position
 * a claim set while the transaction was still in flight.
 */
#define OUTBOX_LO_PENDING	PG_INT64_MAX	/* lo_any: no id drawn yet */

typedef struct OutboxOfferSlot
{
	TransactionId xid;
	Oid			dbid;
	int			ntopics;
	int			topic[OUTBOX_SLOT_TOPICS];
	int64		lo[OUTBOX_SLOT_TOPICS];
	int64		passed[OUTBOX_SLOT_TOPICS];
	bool		any;			/* offers to topics not named above */
	pg_atomic_uint64 lo_any;	/* their lower bound, or OUTBOX_LO_PENDING */
} OutboxOfferSlot;

typedef struct OutboxShared
{
	LWLock	   *lock;			/* the shared state lock */
	int			max_topics;
	int			clock;			/* where the search for a slot to free goes on */
	int			nany;			/* offer slots with lo_any set */
	uint64		epochs;			/* the last scan_epoch given to any slot */
	int			parked_next;	/* the next entry of parked to overwrite */
	OutboxParked parked[OUTBOX_PARKED];
	int			nslots;
	OutboxTopic *topics;
	OutboxOfferSlot *slots;
	OutboxLatency *latencies;	/* outbox.metrics_topics of them */
	int			nlatencies;
	int32		latency_free;	/* first free one, or -1 */
} OutboxShared;

/* shmem.c */
extern OutboxShared *outbox_shared;
extern HTAB *outbox_entries;
extern void outbox_shmem_install_hooks(void);
extern bool outbox_shmem_available(void);
extern void outbox_require_shmem(const char *function);
extern int	outbox_topic_acquire(int32 topic_id, int64 incarnation);
extern int	outbox_topic_acquire_locked(int32 topic_id, int64 incarnation);
extern int	outbox_topic_find(int32 topic_id);
extern int	outbox_topic_find_locked(int32 topic_id);
extern void outbox_topic_release_locked(int topic);
extern OutboxCounters *outbox_counters(int32 topic_id, int64 incarnation);
extern void outbox_counters_forget(Oid dbid, int32 topic_id);
extern void outbox_counters_forget_database(Oid dbid);

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
									   const pg_uuid_t *token,
									   OutboxSettling *out);
extern int32 outbox_lease_topic_id(int64 id, const pg_uuid_t *token);
extern int	outbox_lease_extend(const int64 *ids, int n, const pg_uuid_t *token,
								TimestampTz expires_at);
extern int	outbox_leases_mark_expired(TimestampTz now, OutboxSettling *out,
									   int max);
extern void outbox_entry_topic_ids(const int64 *ids, int n, int32 *topic_ids);
extern int	outbox_topic_lease_count(int32 topic_id, int64 incarnation);
extern int	outbox_counters_count(void);
extern int	outbox_counters_copy(OutboxCounters *out, int max);
extern int	outbox_counters_copy_latency(OutboxCounters *out, int max,
										 OutboxLatency *lat, int maxlat);
extern OutboxLatency *outbox_counters_latency(OutboxCounters *c);
extern void outbox_counters_reset(void);
extern void outbox_parked_done(const OutboxParked *done, int n);
extern int	outbox_watermark_candidates(int32 **topic_ids, int64 **incarnations,
										int64 **marks, OutboxParked **parked,
										int *nparked);
extern int	outbox_leases_count_expired(TimestampTz now);
extern bool outbox_topic_matches(int topic, int32 topic_id, int64 incarnation);
extern OutboxEntry *outbox_entry_find(int64 event_id);
extern OutboxEntry *outbox_entry_enter(int64 event_id, bool *found);
extern void outbox_entry_remove(OutboxEntry *entry);
extern bool outbox_entry_ready(int topic, int64 event_id);
extern void outbox_topic_forget(int topic);
extern void outbox_topic_wake(OutboxTopic *t);
extern void outbox_topic_rescan(OutboxTopic *t);
extern void outbox_entry_settled(OutboxTopic *t, OutboxEntry *e);
extern void outbox_topic_passed(OutboxTopic *t, int64 scan_pos);
extern OutboxOfferSlot *outbox_my_slot(void);
extern int	outbox_offering_xids(TransactionId *xids, int max);
typedef bool (*OutboxLeaseFn) (OutboxEntry *entry, int topic, void *arg);
extern void outbox_foreach_lease(OutboxLeaseFn fn, void *arg);

#endif							/* OUTBOX_SHMEM_H */
