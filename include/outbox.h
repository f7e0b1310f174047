/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Declarations shared by the outbox extension's source files: the
 *	  shared-memory layout, per-transaction bookkeeping, SPI plan cache and
 *	  argument helpers.
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
#define OUTBOX_SCHEMA_VERSION	"1.4"

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

/* GUCs (outbox.c) */
extern int	outbox_max_leases;
extern int	outbox_max_leases_per_topic;
extern int	outbox_max_topics;
extern bool outbox_enabled;
extern int	outbox_reap_interval;
extern int	outbox_maintenance_interval;
extern int	outbox_launcher_naptime;
extern bool outbox_release_on_disconnect;

/* worker.c */
extern void outbox_register_launcher(void);
extern void outbox_database_changed(Oid dbid, bool present);
extern void outbox_database_dropping(Oid dbid);
extern void outbox_wake_worker(Oid dbid);

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

/* What the launcher knows of a database (worker.c) */
#define OUTBOX_MAX_DATABASES	256

typedef enum OutboxDbState
{
	DB_UNKNOWN = 0,				/* not looked at yet */
	DB_PRESENT,					/* has the extension */
	DB_ABSENT					/* had not, when last looked at */
} OutboxDbState;

typedef struct OutboxDb
{
	Oid			dbid;			/* InvalidOid: free */
	uint8		state;			/* OutboxDbState */
	pid_t		worker_pid;
	struct Latch *worker_latch;
	bool		reap_requested; /* a consumer left with leases to hand back */
	TimestampTz checked_at;		/* last start of a worker for it */
	TimestampTz dropping_since; /* DROP DATABASE seen, or 0 */
} OutboxDb;

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
	pid_t		launcher_pid;
	struct Latch *launcher_latch;
	OutboxDb	dbs[OUTBOX_MAX_DATABASES];
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
extern int	outbox_counters_count(void);
extern int	outbox_counters_copy(OutboxCounters *out, int max);
extern int	outbox_counters_copy_latency(OutboxCounters *out, int max,
										 OutboxLatency *lat, int maxlat);
extern OutboxLatency *outbox_counters_latency(OutboxCounters *c);
extern void outbox_counters_reset(void);
extern int	outbox_parked_collect(OutboxParked *out, int max);
extern void outbox_parked_done(const OutboxParked *p);
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
typedef bool (*OutboxLeaseFn) (OutboxEntry *entry, int topic, void *arg);
extern void outbox_foreach_lease(OutboxLeaseFn fn, void *arg);

/* xact.c: what this transaction did to shared state, applied at its end */
typedef enum OutboxOpKind
{
	OP_CLAIMED,					/* a lease made by this transaction */
	OP_ACK,						/* an ack: the lease ends at commit */
	OP_FINISH,					/* a nack, dead letter or reap: ends at commit */
	OP_EXTENDED					/* nothing to undo */
} OutboxOpKind;

extern void outbox_xact_init(void);
extern void outbox_xact_reserve_ops(int n);
extern void outbox_xact_add_op(OutboxOpKind kind, int64 event_id, int topic,
							   TimestampTz retry_at);
extern void outbox_xact_offer_register(int32 topic_id, int64 incarnation);
extern void outbox_xact_offered(int32 topic_id, int64 incarnation,
								int64 event_id, bool delayed,
								TimestampTz available_at);
extern void outbox_xact_forget_topic(int32 topic_id, int64 incarnation);
extern void outbox_xact_forget_database(void);
extern void outbox_xact_announce_database(void);
extern void outbox_xact_set_watermark(int32 topic_id, int64 incarnation,
									  int64 watermark);
extern void outbox_xact_retry_changed(int32 topic_id, TimestampTz when);
extern void outbox_xact_keep_lease(int64 event_id);
extern void outbox_xact_scan_begin(int topic);
extern void outbox_xact_scan_end(void);
extern void outbox_xact_count(int32 topic_id, int64 incarnation,
							  OutboxCount what, int n);

/* topic.c */
typedef struct OutboxTopicInfo
{
	int32		topic_id;
	int64		incarnation;
	int32		max_attempts;
	int64		retention_usec;
	int64		backoff_base_usec;
	int64		backoff_max_usec;
	bool		ordered;
	bool		per_tenant;		/* each tenant's events apart */
	bool		is_part;		/* one tenant's part of a per-tenant topic */
	bool		cacheable;		/* the topic row is committed */
	char		name[OUTBOX_TOPIC_NAME_MAX + 1];
	char		tenant[OUTBOX_TENANT_MAX + 1];	/* of a part, else "" */
} OutboxTopicInfo;

extern void outbox_lookup_topic(const char *name, OutboxTopicInfo *info);
extern bool outbox_lookup_topic_by_id(int32 topic_id, OutboxTopicInfo *info);
extern void outbox_lock_topic(const char *name, LOCKMODE mode);
extern void outbox_check_topic_name(const char *name);
extern void outbox_topic_cache_init(void);
extern bool outbox_lookup_topic_part(const OutboxTopicInfo *topic,
									 const char *tenant, bool create,
									 OutboxTopicInfo *part);
extern int	outbox_topic_family(int32 topic_id, int32 **ids, int64 **incarnations);

/* tenant.c */
extern char *outbox_tenant_setting;
extern void outbox_tenant_init(void);
extern bool outbox_session_bound(void);
extern char *outbox_session_tenant(void);
extern void outbox_refuse_if_bound(const char *function);
extern int	outbox_tenant_filter_ids(int64 *ids, int n);
extern void outbox_check_tenant_name(const char *tenant);

/* logscan.c: a topic's log in id order, read through its indexes */
typedef enum OutboxEventCol
{
	EV_ID,
	EV_KEY,
	EV_TYPE,
	EV_PAYLOAD,
	EV_HEADERS,
	EV_TENANT,
	EV_CREATED_AT,
	OUTBOX_EVENT_NCOLS
} OutboxEventCol;

typedef struct OutboxEventRow
{
	int64		id;
	Datum		values[OUTBOX_EVENT_NCOLS];
	bool		nulls[OUTBOX_EVENT_NCOLS];
} OutboxEventRow;

/* Sorted ids a scan steps over; next is a cursor that only moves up */
typedef struct OutboxSkipList
{
	const int64 *ids;
	int			n;
	int			next;
} OutboxSkipList;

typedef struct OutboxLogScan OutboxLogScan;
extern OutboxLogScan *outbox_logscan_open(void);
extern void outbox_logscan_begin(OutboxLogScan *ls, Snapshot snap,
								 int32 topic_id, int64 after);
extern bool outbox_logscan_next(OutboxLogScan *ls, OutboxEventRow *row,
								OutboxSkipList *skip);
extern int64 outbox_logscan_examined(OutboxLogScan *ls);
extern void outbox_logscan_end(OutboxLogScan *ls);
extern void outbox_logscan_close(OutboxLogScan *ls);

/* eventlog.c: one event written into the log without the executor */
typedef struct OutboxLogRow
{
	int64		id;
	int32		topic_id;
	bool		delayed;
	TimestampTz available_at;	/* if delayed */
	Datum		key;			/* text, or 0 for NULL */
	Datum		type;
	Datum		tenant;
	Datum		payload;		/* jsonb, never NULL */
	Datum		headers;		/* jsonb, or 0 for NULL */
} OutboxLogRow;

extern void outbox_eventlog_init(void);
extern int64 outbox_next_event_id(void);
extern bool outbox_log_insert(const OutboxLogRow *row);

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
	PLAN_WATERMARK,
	PLAN_MAX_ID,
	PLAN_SETTLED,
	PLAN_FETCH_READY,
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
	NUM_OUTBOX_PLANS
} OutboxPlanId;

extern SPIPlanPtr outbox_plan(OutboxPlanId id, const char *sql, int nargs,
							  const Oid *argtypes);
extern int	outbox_exec(OutboxPlanId id, const char *sql, int nargs,
						const Oid *argtypes, Datum *values, const char *nulls,
						bool read_only, long tcount);
extern void outbox_spi_check(int rc, int expected, const char *what);

/* util.c */
extern void outbox_check_delay(const OutboxTopicInfo *info, int64 delay_usec,
							   const char *argname);
extern int64 outbox_interval_usec(Interval *iv, const char *argname,
								  int64 min_usec, int64 max_usec,
								  bool min_inclusive);
extern char *outbox_text_arg(FunctionCallInfo fcinfo, int argno,
							 const char *argname, bool required);
extern void outbox_require_arg(FunctionCallInfo fcinfo, int argno,
							   const char *argname);
extern void outbox_require_writable(const char *function);
extern void outbox_random_uuid(pg_uuid_t *uuid);
extern int64 *outbox_int8_array(ArrayType *arr, const char *argname, int *n);
extern int64 outbox_backoff_usec(const OutboxTopicInfo *info, int attempt);
extern bool outbox_column_attnums(TupleDesc desc, const char *const *names,
								  int n, AttrNumber *attnums);

/* schema.c */
extern char *outbox_installed_version(void);
extern bool outbox_schema_current(char **installed);
extern void outbox_require_schema(void);

/* storage.c */
extern char *outbox_partman_schema(void);
extern void outbox_partman_call(const char *sql, int expected);
extern void outbox_ensure_storage(void);
extern void outbox_storage_ready(void);
extern void outbox_storage_init(void);

/* reap.c, maintain.c */
#define OUTBOX_ACK_PERIOD_USEC	(10 * USECS_PER_SEC)
extern int	outbox_ack_generation(void);
extern int	outbox_do_reap(void);
extern bool outbox_do_maintain(bool one_partition);

/* dead letters (dead_letter.c) */
extern void outbox_send_to_dead_letter(int64 event_id, int32 topic_id,
									   int attempts, const char *reason,
									   const char *error);
extern void outbox_schedule_retry(int64 event_id, int32 topic_id,
								  int attempts, TimestampTz available_at,
								  const char *error);

#endif							/* OUTBOX_H */
