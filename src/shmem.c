/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: per-topic state, the hash of leases and
 *	  ready events, and the per-backend offer slots.  Present only when the
 *	  library is in shared_preload_libraries.
 *
 *	  This file is the one owner of shared delivery state: the structs below
 *	  are private to it, and every change of a lease, a ready event, a scan
 *	  position, an offer slot or a counter is a function of it.  claim.c
 *	  (the reading of the log) and xact.c (what a transaction did) call it;
 *	  it calls neither.
 *
 *	  A topic's shared slot is a cache, not a reservation.  The slot of a
 *	  topic with nothing leased, nothing on its ready list and no offer
 *	  naming it can be given to another topic when none is free; the topic
 *	  gets one again on next use and rebuilds its scan position from the
 *	  durable watermark, as after a restart.  The position it had is parked
 *	  (OutboxShared.parked) for the worker to make durable, and used at once
 *	  if the topic comes back first.  Slots are found through a hash keyed by
 *	  (database, topic id).  A topic's counters since start live in a hash
 *	  of their own, so that they outlive its slot; the latency histograms
 *	  of up to outbox.metrics_topics topics (metrics.h) in a pool that
 *	  counters take from on first use and give back when they go.
 *
 *	  An ordered topic keeps, per key with an event leased, waiting in
 *	  outbox.retry or held back behind an earlier one, the ids of those
 *	  events in id order (OutboxKey, a hash keyed by (slot, key hash), with
 *	  the ids in chunks of a fixed pool).  A claim leases an event of a key
 *	  only if every event of the key below it is leased by the same claim;
 *	  one it may not lease is held back as a member of its key, and handed
 *	  out from there when the key becomes "runnable" (nothing leased, a held
 *	  event first).  The ends of leases move the keys: an ack or a dead
 *	  letter removes its event, a failure into outbox.retry leaves it
 *	  waiting and hands the later events of its key in the same lease back.
 *	  Events waiting in outbox.retry are loaded before a topic's first claim
 *	  after a restart (claim.c); a delayed offer or a redrive adds its event
 *	  when it is made, and its abort removes it.  A topic with keys keeps its
 *	  slot.  The state lock protects all of it, as it does the rest.
 *
 * LOCKING
 *
 *	  Locking: one LWLock, the state lock (tranche "outbox_state"),
 *	  protects everything here, and is held only for short sections that
 *	  run no SQL and wait for nothing.  Claims of one topic take turns by a
 *	  heavyweight lock (claim.c); a topic whose claim is reading the log
 *	  ("scanning") keeps its slot.
 *
 *	  In detail, as pg_stat_statements documents its own:
 *
 *	  - The state lock (OutboxShared.lock) protects the topic slots and
 *		their index (topic_index), the hash of entries (outbox_entries:
 *		leases, ready events and SETTLED markers, with each topic's lists
 *		and counts of them), the handoff, the offer slots, the parked
 *		positions, the counters (topic_counters) and the pool of latency
 *		histograms.  Reading any of it needs the lock in shared mode;
 *		changing it, or finding or entering a hash entry that may be
 *		added, needs it in exclusive mode.
 *	  - Not protected by it: what is set once at startup (the lock, the
 *		array pointers and sizes in OutboxShared); a topic's condition
 *		variable and its count of wakes, an atomic that goes up before
 *		every broadcast (outbox_topic_wake); and an offer slot's lo_any,
 *		an atomic its backend sets, without the lock, to its first id
 *		(outbox_offer_slot_set_lo_any) after announcing it under the lock
 *		in exclusive mode, and that scans read under the lock after a read
 *		barrier (scan_cap).
 *	  - The lock is taken and released inside the public functions of this
 *		file, never across a return to the caller, so no code of another
 *		file runs while it is held, and no public function of this file may
 *		be called with it held (each takes it).  The static functions named
 *		*_locked, and those whose comment says "Caller holds the shared
 *		state lock", run with it held.
 *	  - While it is held nothing runs that can wait for long or for another
 *		backend: no SQL, no heavyweight lock, no I/O of its own, no sleep on
 *		a latch or a condition variable, no palloc (the memory a copy needs
 *		is allocated before the lock is taken).  Interrupts are held off
 *		meanwhile, so each such section must stay short.  Waking a
 *		topic's waiters (a condition variable broadcast: a spinlock and
 *		latches, no wait) is allowed.  Checking an xid against a snapshot
 *		(XidInMVCCSnapshot) is too, as the heap's visibility checks do under
 *		buffer locks: it may read pg_subtrans when the snapshot overflowed.
 *		Claims read the log, outbox.retry and the settled ids with no
 *		LWLock held: the heavyweight scan lock orders them.
 *	  - Order: a claim takes its topic's heavyweight scan lock (advisory,
 *		OUTBOX_LOCK_SCAN) first and the state lock only inside it, in short
 *		sections (outbox_scan_begin, outbox_scan_view, outbox_scan_end);
 *		nobody takes a heavyweight lock while holding the state lock.  The
 *		launcher's table of databases has an LWLock of its own
 *		("outbox_databases", databases.c): the two are never held together.
 *	  - An error while it is held (none is expected) releases it at abort,
 *		like every LWLock.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "shmem.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/snapmgr.h"

/*
 * A topic's shared state, all of it protected by the shared state lock
 * (OutboxShared.lock).  Claims of a topic take turns by a heavyweight lock
 * (OUTBOX_LOCK_SCAN, claim.c), which they hold while they read the log
 * without any LWLock; "scanning" says one is between its snapshot and the
 * moment it sets the scan position, and offers that commit meanwhile leave
 * their ids in the handoff for it (outbox_offers_settle).
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
	dlist_head	settled;		/* OutboxEntry, state SETTLED (see
								 * outbox_entry_settled) */
	int			nleases;
	int			nready;
	int			nsettled;
	int			nretry_leases;	/* leases whose event sits in outbox.retry */
	int			ninflight;		/* offer slots that name this topic */
	bool		ordered;		/* an ordered topic (its keys below) */
	dlist_head	keys;			/* OutboxKey of this topic */
	dlist_head	runnable;		/* OutboxKey whose next event may go out */
	int			nkeys;
	int			nwaiting;		/* key members waiting in outbox.retry */
	ConditionVariable cv;		/* claims waiting for events */
	pg_atomic_uint64 wakes;		/* times cv was broadcast (outbox_topic_wake) */
} OutboxTopic;

/* A scan position left by a topic that gave its slot up */
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
	bool		keyed;			/* an event of a key of an ordered topic */
	bool		member_new;		/* keyed: its lease made it its key's member */
	bool		waits_after;	/* keyed: redriven while leased: it waits in
								 * outbox.retry once the lease ends */
	uint64		keyhash;		/* then: its key (outbox_key_hash) */
	dlist_node	node;			/* in the topic's leases or ready list */
} OutboxEntry;

/*
 * The keys of ordered topics.  A key that has an event leased, waiting in
 * outbox.retry, or held back behind an earlier one, has an OutboxKey, with
 * those events ("members") in id order in a list of small chunks.  An
 * event of the key may go out only when every member below it is leased
 * under the same claim (key_may_lease).  A key is "runnable" when none of
 * its members is leased and the first is held back: claims take the held
 * events from the head of runnable keys, a run of them at a time.
 */
typedef enum OutboxMemberState
{
	MEMBER_LEASED = 1,
	MEMBER_WAITING,				/* in outbox.retry: a retry, delay or redrive */
	MEMBER_HELD					/* in the log, passed by the scan, held back */
} OutboxMemberState;

#define KEY_CHUNK_IDS	6

typedef struct OutboxKeyChunk
{
	int32		next;			/* the key's next chunk, or the next free one */
	int32		prev;			/* the key's previous chunk, or -1 */
	int16		n;				/* ids[0..n) are in use, ascending */
	uint8		state[KEY_CHUNK_IDS];	/* OutboxMemberState */
	int64		ids[KEY_CHUNK_IDS];
} OutboxKeyChunk;

typedef struct OutboxKeyTag
{
	int32		topic;			/* the topic's slot */
	uint32		pad;			/* always zero */
	uint64		hash;			/* outbox_key_hash(tenant, key) */
} OutboxKeyTag;

typedef struct OutboxKey
{
	OutboxKeyTag tag;
	int32		first;			/* chunks, or -1 */
	int32		last;
	int32		nmembers;
	int32		nleased;		/* members in state MEMBER_LEASED */
	bool		runnable;		/* in its topic's runnable list */
	bool		run_valid;		/* every member up to the one at run_chunk, */
	int16		run_at;			/* run_at is leased under run_token, and no */
	int32		run_chunk;		/* member has moved since */
	pg_uuid_t	run_token;
	int32		find_chunk;		/* the chunk of the member last found, or */
								/* -1: where key_member_find starts */
	dlist_node	topic_node;		/* in its topic's keys */
	dlist_node	run_node;		/* in its topic's runnable list */
} OutboxKey;

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
	OutboxKeyChunk *chunks;		/* the key members' chunks */
	int32		nchunks;
	int32		chunk_free;		/* first free chunk, or -1 */
	int64		nmembers;		/* members of all keys */
} OutboxShared;

static OutboxShared *outbox_shared = NULL;
static HTAB *outbox_entries = NULL;
static HTAB *topic_index = NULL;	/* (dbid, topic_id) -> slot */
static HTAB *topic_counters = NULL; /* OutboxCounters */
static HTAB *outbox_keys = NULL;	/* OutboxKey */

/*
 * Functions that run with the shared state lock held, used before their
 * definition
 */
static int	outbox_topic_find_locked(int32 topic_id);
static OutboxCounters *outbox_counters(int32 topic_id, int64 incarnation);
static void outbox_counters_forget(Oid dbid, int32 topic_id);
static OutboxEntry *outbox_entry_find(int64 event_id);
static void outbox_entry_remove(OutboxEntry *entry);
typedef bool (*OutboxLeaseFn) (OutboxEntry *entry, int topic, void *arg);
static void outbox_foreach_lease(OutboxLeaseFn fn, void *arg);
static int	outbox_counters_count(void);
static int	outbox_counters_copy(OutboxCounters *out, int max);
static int	outbox_counters_copy_latency(OutboxCounters *out, int max,
										 OutboxLatency *lat, int maxlat);
static void outbox_counters_reset(void);
static OutboxKey *key_find(int topic, uint64 hash);
static void keys_clear_locked(OutboxTopic *t);
static bool key_leased_below(OutboxKey *k, int64 id, const pg_uuid_t *token);
static int64 key_first_held(OutboxKey *k);
typedef struct KeyCursor
{
	OutboxKey  *k;
	int32		chunk;			/* -1: from the key's first member */
	int			at;
} KeyCursor;
static bool key_below_marked(OutboxKey *k, int64 id, const pg_uuid_t *token,
							 const int64 *marked, int n, KeyCursor *cur);

typedef struct TopicIndexEntry
{
	OutboxCountersKey key;
	int			topic;
} TopicIndexEntry;

/* How many topics' counters are kept */
#define COUNTERS_SIZE	Max(16384, 4 * outbox_max_topics)

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#define STATE_TRANCHE "outbox_state"

/*
 * Chunks enough for every member, with chunks half full, and for every key
 * to have one of its own.
 */
static int32
key_chunk_count(void)
{
	return outbox_max_ordered_keys +
		outbox_max_ordered_events / (KEY_CHUNK_IDS / 2) + 1;
}

static Size
outbox_fixed_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(OutboxShared));
	size = add_size(size, mul_size(outbox_max_topics, sizeof(OutboxTopic)));
	size = add_size(size, mul_size(MaxBackends, sizeof(OutboxOfferSlot)));
	size = add_size(size, mul_size(outbox_metrics_topics, sizeof(OutboxLatency)));
	size = add_size(size, mul_size(key_chunk_count(), sizeof(OutboxKeyChunk)));
	return size;
}

static void
outbox_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(outbox_fixed_size());
	RequestAddinShmemSpace(hash_estimate_size(outbox_max_leases,
											  sizeof(OutboxEntry)));
	RequestAddinShmemSpace(hash_estimate_size(outbox_max_topics,
											  sizeof(TopicIndexEntry)));
	RequestAddinShmemSpace(hash_estimate_size(COUNTERS_SIZE,
											  sizeof(OutboxCounters)));
	RequestAddinShmemSpace(hash_estimate_size(outbox_max_ordered_keys,
											  sizeof(OutboxKey)));
	RequestNamedLWLockTranche(STATE_TRANCHE, 1);
}

static void
outbox_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	outbox_shared = ShmemInitStruct("outbox", outbox_fixed_size(), &found);
	if (!found)
	{
		char	   *p = (char *) outbox_shared;

		memset(outbox_shared, 0, outbox_fixed_size());
		outbox_shared->lock = &(GetNamedLWLockTranche(STATE_TRANCHE))->lock;
		outbox_shared->max_topics = outbox_max_topics;
		outbox_shared->nslots = MaxBackends;
		p += MAXALIGN(sizeof(OutboxShared));
		outbox_shared->topics = (OutboxTopic *) p;
		p += outbox_max_topics * sizeof(OutboxTopic);
		outbox_shared->slots = (OutboxOfferSlot *) p;
		for (int i = 0; i < outbox_shared->nslots; i++)
			pg_atomic_init_u64(&outbox_shared->slots[i].lo_any, 0);
		p += MaxBackends * sizeof(OutboxOfferSlot);
		outbox_shared->latencies = (OutboxLatency *) p;
		outbox_shared->nlatencies = outbox_metrics_topics;
		for (int i = 0; i < outbox_metrics_topics; i++)
			outbox_shared->latencies[i].next_free = i + 1 < outbox_metrics_topics ? i + 1 : -1;
		outbox_shared->latency_free = outbox_metrics_topics > 0 ? 0 : -1;
		p += outbox_metrics_topics * sizeof(OutboxLatency);
		outbox_shared->chunks = (OutboxKeyChunk *) p;
		outbox_shared->nchunks = key_chunk_count();
		for (int i = 0; i < outbox_shared->nchunks; i++)
			outbox_shared->chunks[i].next = i + 1 < outbox_shared->nchunks ? i + 1 : -1;
		outbox_shared->chunk_free = 0;
		outbox_shared->nmembers = 0;

		for (int i = 0; i < outbox_max_topics; i++)
		{
			OutboxTopic *t = &outbox_shared->topics[i];

			dlist_init(&t->leases);
			dlist_init(&t->ready);
			dlist_init(&t->settled);
			dlist_init(&t->keys);
			dlist_init(&t->runnable);
			ConditionVariableInit(&t->cv);
			pg_atomic_init_u64(&t->wakes, 0);
		}
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(OutboxEntryKey);
	info.entrysize = sizeof(OutboxEntry);
	outbox_entries = ShmemInitHash("outbox leases",
								   outbox_max_leases, outbox_max_leases,
								   &info, HASH_ELEM | HASH_BLOBS);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(OutboxCountersKey);
	info.entrysize = sizeof(TopicIndexEntry);
	topic_index = ShmemInitHash("outbox topic slots",
								outbox_max_topics, outbox_max_topics,
								&info, HASH_ELEM | HASH_BLOBS);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(OutboxCountersKey);
	info.entrysize = sizeof(OutboxCounters);
	topic_counters = ShmemInitHash("outbox topic counters",
								   COUNTERS_SIZE, COUNTERS_SIZE,
								   &info, HASH_ELEM | HASH_BLOBS);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(OutboxKeyTag);
	info.entrysize = sizeof(OutboxKey);
	outbox_keys = ShmemInitHash("outbox ordered keys",
								outbox_max_ordered_keys, outbox_max_ordered_keys,
								&info, HASH_ELEM | HASH_BLOBS);

	LWLockRelease(AddinShmemInitLock);
}

void
outbox_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = outbox_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = outbox_shmem_startup;
}

/*
 * Wake the claims waiting for events of a topic.  The count goes up first:
 * a claim that read it before its attempt and finds it changed after
 * preparing to sleep does not sleep (claim.c).
 */
static void
outbox_topic_wake(OutboxTopic *t)
{
	pg_atomic_fetch_add_u64(&t->wakes, 1);
	ConditionVariableBroadcast(&t->cv);
}

bool
outbox_shmem_available(void)
{
	return outbox_shared != NULL;
}

void
outbox_require_shmem(const char *function)
{
	if (outbox_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires outbox to be loaded through shared_preload_libraries",
						function),
				 errdetail("Leases are kept in shared memory, which the library can only set up at server start."),
				 errhint("Add outbox to shared_preload_libraries in postgresql.conf and restart the server.")));
}

static void
index_key(OutboxCountersKey *key, Oid dbid, int32 topic_id)
{
	memset(key, 0, sizeof(*key));
	key->dbid = dbid;
	key->topic_id = topic_id;
}

/*
 * Find the shared slot of a topic of the current database, or -1.  Caller
 * holds the shared state lock.
 */
static int
outbox_topic_find_locked(int32 topic_id)
{
	OutboxCountersKey key;
	TopicIndexEntry *ie;

	index_key(&key, MyDatabaseId, topic_id);
	ie = (TopicIndexEntry *) hash_search(topic_index, &key, HASH_FIND, NULL);
	return ie ? ie->topic : -1;
}

static int
outbox_topic_find(int32 topic_id)
{
	int			idx;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	idx = outbox_topic_find_locked(topic_id);
	LWLockRelease(outbox_shared->lock);
	return idx;
}

static bool
outbox_topic_matches(int topic, int32 topic_id, int64 incarnation)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	return t->in_use && t->dbid == MyDatabaseId && t->topic_id == topic_id &&
		t->incarnation == incarnation;
}

/*
 * Drop everything shared memory holds for a topic.  Caller holds the shared
 * state lock exclusively.
 */
static void
topic_clear_locked(OutboxTopic *t)
{
	dlist_head *lists[3] = {&t->leases, &t->ready, &t->settled};

	for (int l = 0; l < 3; l++)
	{
		dlist_mutable_iter it;

		dlist_foreach_modify(it, lists[l])
		{
			OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

			dlist_delete(&e->node);
			hash_search(outbox_entries, &e->key, HASH_REMOVE, NULL);
		}
		dlist_init(lists[l]);
	}
	keys_clear_locked(t);
	t->ordered = false;
	t->scanning = false;
	t->nhandoff = 0;
	t->handoff_overflow = false;
	t->nleases = 0;
	t->nready = 0;
	t->nsettled = 0;
	t->nretry_leases = 0;
	t->initialized = false;
	t->scan_pos = 0;
	t->recovery_until = 0;
	t->scan_epoch = ++outbox_shared->epochs;
	t->watermark = 0;
	t->next_retry_at = 0;
}

/*
 * The slot is free again.  Caller holds the shared state lock exclusively.
 */
static void
outbox_topic_release_locked(int topic)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	OutboxCountersKey key;

	if (!t->in_use)
		return;
	index_key(&key, t->dbid, t->topic_id);
	hash_search(topic_index, &key, HASH_REMOVE, NULL);
	t->in_use = false;
}

/*
 * Remember the scan position of a topic that gives its slot up: below its
 * events on the ready list, which the scan then finds again.
 */
static void
park_locked(OutboxTopic *t)
{
	OutboxParked *p;
	int64		pos = t->scan_pos;
	dlist_iter	it;

	dlist_foreach(it, &t->ready)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		pos = Min(pos, e->key.event_id - 1);
	}
	if (!t->initialized || pos <= t->watermark || t->incarnation == 0)
		return;
	p = &outbox_shared->parked[outbox_shared->parked_next];
	outbox_shared->parked_next = (outbox_shared->parked_next + 1) % OUTBOX_PARKED;
	p->dbid = t->dbid;
	p->topic_id = t->topic_id;
	p->incarnation = t->incarnation;
	p->pos = pos;
}

/* The highest parked position of a topic, or 0. */
static int64
parked_pos_locked(Oid dbid, int32 topic_id, int64 incarnation)
{
	int64		pos = 0;

	for (int i = 0; i < OUTBOX_PARKED; i++)
	{
		OutboxParked *p = &outbox_shared->parked[i];

		if (p->dbid == dbid && p->topic_id == topic_id &&
			p->incarnation == incarnation && p->pos > pos)
			pos = p->pos;
	}
	return pos;
}

/*
 * A slot that can be had now: a free one, or the slot of a topic with no
 * leases and no offer naming it, which gives it up.  Topics with nothing on
 * their ready list go first; one with events there is taken only if none
 * is idle (its scan finds them again).  -1 if every slot is busy.  Caller
 * holds the shared state lock exclusively.  The search goes round the
 * slots like a clock hand, so that no one topic is always the first to
 * lose its slot.
 */
static int
take_slot_locked(void)
{
	int			n = outbox_shared->max_topics;

	for (int k = 0; k < 2 * n; k++)
	{
		int			i = (outbox_shared->clock + k) % n;
		OutboxTopic *t = &outbox_shared->topics[i];

		if (!t->in_use)
		{
			outbox_shared->clock = (i + 1) % n;
			return i;
		}
		if (t->ninflight > 0 || t->nleases > 0 || t->scanning ||
			t->nkeys > 0 || (k < n && t->nready > 0))
			continue;
		park_locked(t);
		topic_clear_locked(t);
		outbox_topic_release_locked(i);
		outbox_topic_wake(t);
		outbox_shared->clock = (i + 1) % n;
		return i;
	}
	return -1;
}

/*
 * Find or make the shared slot of a topic of the current database; -1 when
 * every slot is busy.  A slot left by an earlier topic with the same id
 * (the extension was dropped and created again) is reset.  Caller holds
 * the shared state lock exclusively.
 */
static int
outbox_topic_acquire_locked(int32 topic_id, int64 incarnation)
{
	int			idx = outbox_topic_find_locked(topic_id);
	OutboxTopic *t;
	OutboxCountersKey key;
	TopicIndexEntry *ie;
	bool		found;

	if (idx >= 0)
	{
		t = &outbox_shared->topics[idx];
		if (t->incarnation != incarnation)
		{
			topic_clear_locked(t);
			t->incarnation = incarnation;
			t->watermark = parked_pos_locked(MyDatabaseId, topic_id, incarnation);
		}
		return idx;
	}

	idx = take_slot_locked();
	if (idx < 0)
		return -1;
	t = &outbox_shared->topics[idx];
	topic_clear_locked(t);
	t->dbid = MyDatabaseId;
	t->topic_id = topic_id;
	t->incarnation = incarnation;
	t->ninflight = 0;
	t->in_use = true;
	t->watermark = parked_pos_locked(MyDatabaseId, topic_id, incarnation);
	index_key(&key, MyDatabaseId, topic_id);
	ie = (TopicIndexEntry *) hash_search(topic_index, &key, HASH_ENTER, &found);
	ie->topic = idx;
	(void) outbox_counters(topic_id, incarnation);
	return idx;
}

int
outbox_topic_acquire(int32 topic_id, int64 incarnation)
{
	int			idx;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	idx = outbox_topic_find_locked(topic_id);
	if (idx >= 0 && outbox_shared->topics[idx].incarnation == incarnation)
	{
		LWLockRelease(outbox_shared->lock);
		return idx;
	}
	LWLockRelease(outbox_shared->lock);

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	idx = outbox_topic_acquire_locked(topic_id, incarnation);
	LWLockRelease(outbox_shared->lock);
	return idx;
}

/*
 * The counters hash is full: give up an entry that counts nothing (a topic
 * named once by a transaction that rolled back, say) and whose topic holds
 * no slot.  Returns whether there is room now.
 */
static void counters_drop(OutboxCounters *c);
static int	parked_collect(OutboxParkedPosition *out, int max);

static bool
counters_make_room(void)
{
	HASH_SEQ_STATUS seq;
	OutboxCounters *c;

	hash_seq_init(&seq, topic_counters);
	while ((c = (OutboxCounters *) hash_seq_search(&seq)) != NULL)
	{
		TopicIndexEntry *ie;

		if (c->offered != 0 || c->acked != 0 || c->claimed != 0 ||
			c->offered_before != 0 || c->acked_before != 0)
			continue;
		ie = (TopicIndexEntry *) hash_search(topic_index, &c->key, HASH_FIND, NULL);
		if (ie != NULL)
			continue;
		hash_seq_term(&seq);
		counters_drop(c);
		return true;
	}
	return false;
}

/* Zero a topic's counters and give its latency histograms back */
static void
counters_clear(OutboxCounters *c)
{
	c->offered = 0;
	c->claimed = 0;
	c->acked = 0;
	c->nacked = 0;
	c->expired = 0;
	c->dead_lettered = 0;
	c->redriven = 0;
	c->offered_before = 0;
	c->acked_before = 0;
	if (c->latency >= 0)
	{
		outbox_shared->latencies[c->latency].next_free = outbox_shared->latency_free;
		outbox_shared->latency_free = c->latency;
		c->latency = -1;
	}
}

static void
counters_drop(OutboxCounters *c)
{
	counters_clear(c);
	hash_search(topic_counters, &c->key, HASH_REMOVE, NULL);
}

/*
 * The counters of a topic of the current database, made if need be; NULL
 * when there is no room for them.  Caller holds the shared state lock
 * exclusively.
 */
static OutboxCounters *
outbox_counters(int32 topic_id, int64 incarnation)
{
	OutboxCountersKey key;
	OutboxCounters *c;
	bool		found;

	index_key(&key, MyDatabaseId, topic_id);
	c = (OutboxCounters *) hash_search(topic_counters, &key, HASH_FIND, NULL);
	if (c == NULL)
	{
		/* an exact cap, as for the leases (outbox_entry_enter) */
		if (hash_get_num_entries(topic_counters) >= COUNTERS_SIZE &&
			!counters_make_room())
			return NULL;
		c = (OutboxCounters *) hash_search(topic_counters, &key,
										   HASH_ENTER_NULL, &found);
		if (c == NULL)
			return NULL;
		c->incarnation = incarnation;
		c->latency = -1;
		counters_clear(c);
	}
	if (c->incarnation != incarnation)
	{
		c->incarnation = incarnation;
		counters_clear(c);
	}
	return c;
}

/*
 * The latency histograms of a topic's counters, taken from the pool on
 * first use; NULL when all outbox.metrics_topics are in use.  Caller holds
 * the shared state lock exclusively.
 */
static OutboxLatency *
outbox_counters_latency(OutboxCounters *c)
{
	OutboxLatency *l;

	if (c->latency >= 0)
		return &outbox_shared->latencies[c->latency];
	if (outbox_shared->latency_free < 0)
		return NULL;
	c->latency = outbox_shared->latency_free;
	l = &outbox_shared->latencies[c->latency];
	outbox_shared->latency_free = l->next_free;
	memset(l, 0, sizeof(OutboxLatency));
	l->next_free = -1;
	return l;
}

/*
 * reset_metrics(): the current database's counters start again from zero,
 * but for the offered and acked counts of outbox.stats, which count from
 * server start.  Caller holds the shared state lock exclusively.
 */
static void
outbox_counters_reset(void)
{
	HASH_SEQ_STATUS seq;
	OutboxCounters *c;

	hash_seq_init(&seq, topic_counters);
	while ((c = (OutboxCounters *) hash_seq_search(&seq)) != NULL)
	{
		uint64		offered;
		uint64		acked;

		if (c->key.dbid != MyDatabaseId)
			continue;
		offered = c->offered + c->offered_before;
		acked = c->acked + c->acked_before;
		counters_clear(c);
		c->offered_before = offered;
		c->acked_before = acked;
	}
}

/*
 * Copy up to max counters of the current database's topics.  With lat,
 * their latency histograms too, up to maxlat of them: a copy's latency
 * field then indexes lat (or is -1).  Caller holds the shared state lock.
 */
static int
outbox_counters_copy_latency(OutboxCounters *out, int max,
							 OutboxLatency *lat, int maxlat)
{
	HASH_SEQ_STATUS seq;
	OutboxCounters *c;
	int			n = 0;
	int			nlat = 0;

	hash_seq_init(&seq, topic_counters);
	while ((c = (OutboxCounters *) hash_seq_search(&seq)) != NULL)
	{
		if (c->key.dbid != MyDatabaseId)
			continue;
		if (n >= max)
		{
			hash_seq_term(&seq);
			break;
		}
		out[n] = *c;
		out[n].latency = -1;
		if (lat != NULL && c->latency >= 0 && nlat < maxlat)
		{
			lat[nlat] = outbox_shared->latencies[c->latency];
			out[n].latency = nlat++;
		}
		n++;
	}
	return n;
}

/*
 * The topic of each event id that has an entry (a lease or a ready event)
 * in this database; 0 for the others.
 */
void
outbox_entry_topic_ids(const int64 *ids, int n, int32 *topic_ids)
{
	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		OutboxEntry *e = outbox_entry_find(ids[i]);

		topic_ids[i] = (e != NULL) ? outbox_shared->topics[e->topic].topic_id : 0;
	}
	LWLockRelease(outbox_shared->lock);
}

/* How many leases a topic (of this database) holds now */
int
outbox_topic_lease_count(int32 topic_id, int64 incarnation)
{
	int			topic = outbox_topic_find(topic_id);
	int			leased = 0;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	if (topic >= 0 && outbox_topic_matches(topic, topic_id, incarnation))
		leased = outbox_shared->topics[topic].nleases;
	LWLockRelease(outbox_shared->lock);
	return leased;
}

/*
 * A copy of the leases of every topic of this database that holds a slot,
 * and of the counters of every topic: what outbox.stats shows.  Memory is
 * allocated before the lock is taken, in the caller's context.  Returns
 * how many topics were copied.
 */
int
outbox_snapshot_leases(OutboxTopicLeases **topics, OutboxCounters **counters,
					   int *ncounters)
{
	OutboxTopicLeases *copies;
	OutboxCounters *cs;
	int64	   *ids;
	int			nleases = 0;
	int			maxcounters;
	int			ncopies = 0;
	int			next = 0;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->max_topics; i++)
		nleases += outbox_shared->topics[i].nleases;
	maxcounters = outbox_counters_count();
	LWLockRelease(outbox_shared->lock);
	nleases += 1024;			/* slack for leases made meanwhile */
	maxcounters += 1024;
	ids = palloc(sizeof(int64) * nleases);
	copies = palloc(sizeof(OutboxTopicLeases) * outbox_shared->max_topics);
	cs = palloc(sizeof(OutboxCounters) * maxcounters);

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];
		OutboxTopicLeases *c;
		dlist_iter	it;

		if (!t->in_use || t->dbid != MyDatabaseId || t->incarnation == 0)
			continue;
		c = &copies[ncopies++];
		c->topic_id = t->topic_id;
		c->incarnation = t->incarnation;
		c->lease_ids = &ids[next];
		c->nleases = 0;
		dlist_foreach(it, &t->leases)
		{
			OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

			if (next >= nleases)
				break;
			ids[next++] = e->key.event_id;
			c->nleases++;
		}
	}
	*ncounters = outbox_counters_copy(cs, maxcounters);
	LWLockRelease(outbox_shared->lock);

	*topics = copies;
	*counters = cs;
	return ncopies;
}

/*
 * A copy of every topic's counters with its latency histograms: what
 * outbox.metrics shows.  lat[c->latency] is counters[i]'s, when
 * c->latency >= 0.  Returns how many topics were copied.
 */
int
outbox_snapshot_metrics(OutboxCounters **counters, OutboxLatency **lat)
{
	int			maxcounters;
	int			maxlat = outbox_shared->nlatencies;
	int			n;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	maxcounters = outbox_counters_count() + 1024;
	LWLockRelease(outbox_shared->lock);
	*counters = palloc(sizeof(OutboxCounters) * maxcounters);
	*lat = palloc(sizeof(OutboxLatency) * Max(1, maxlat));

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	n = outbox_counters_copy_latency(*counters, maxcounters, *lat, maxlat);
	LWLockRelease(outbox_shared->lock);
	return n;
}

/* reset_metrics(): counters and histograms start again from zero */
void
outbox_metrics_reset(void)
{
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	outbox_counters_reset();
	LWLockRelease(outbox_shared->lock);
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * May an ack settle e, an event of a key of an ordered topic?  Only if no
 * event of its key below it in the same lease is unsettled, or each such
 * is one this call has marked (marked[0..n), ascending).  Caller holds the
 * shared state lock.
 */
#define KEY_CURSORS 8

static bool
key_acked_in_order(OutboxEntry *e, const int64 *marked, int n,
				   KeyCursor *cursors, int *ncursors)
{
	OutboxKey  *k = key_find(e->topic, e->keyhash);
	KeyCursor  *cur = NULL;

	if (k == NULL)
		return true;
	for (int i = 0; i < *ncursors; i++)
		if (cursors[i].k == k)
			cur = &cursors[i];
	if (cur == NULL)
	{
		/* a new key: take a free cursor, or the oldest */
		int			slot = *ncursors < KEY_CURSORS ? (*ncursors)++ :
			(int) (k->tag.hash % KEY_CURSORS);

		cur = &cursors[slot];
		cur->k = k;
		cur->chunk = -1;
		cur->at = 0;
	}
	return key_below_marked(k, e->key.event_id, &e->token, marked, n, cur);
}

/* The entry of event id if it is leased under token, else NULL */
static inline OutboxEntry *
leased_under(int64 id, const pg_uuid_t *token)
{
	OutboxEntry *e = outbox_entry_find(id);

	if (e == NULL || e->state != ENTRY_LEASED ||
		memcmp(&e->token, token, sizeof(pg_uuid_t)) != 0)
		return NULL;
	return e;
}

/* Is e the current lease of token, and free to settle? */
static inline bool
lease_is(OutboxEntry *e, const pg_uuid_t *token)
{
	return e != NULL && e->state == ENTRY_LEASED && !e->finishing &&
		memcmp(&e->token, token, sizeof(pg_uuid_t)) == 0;
}

/*
 * Mark the leases of ids held under token as being settled (an ack, nack
 * or dead letter in progress): no other transaction may settle them until
 * the caller's ends, when xact.c finishes or undoes the mark.  Returns how
 * many; out[] describes them.  n is bounded by the caller
 * (OUTBOX_MAX_BATCH).
 *
 * With acks, an event of a key of an ordered topic is marked only if every
 * event of its key below it is settled, or acked by this same call: acks
 * of a key commit in id order.  The ids are then taken in ascending order.
 */
int
outbox_lease_mark_settling(const int64 *ids, int n, const pg_uuid_t *token,
						   bool acks, OutboxSettling *out)
{
	int			nout = 0;
	int64	   *sorted = NULL;
	int64	   *marked = NULL;
	int			nmarked = 0;
	KeyCursor	cursors[KEY_CURSORS];
	int			ncursors = 0;

	if (acks && n > 1)
	{
		sorted = palloc(sizeof(int64) * n);
		memcpy(sorted, ids, sizeof(int64) * n);
		qsort(sorted, n, sizeof(int64), int64_cmp);
		ids = sorted;
	}
	if (acks)
		marked = palloc(sizeof(int64) * Max(1, n));

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		OutboxEntry *e = outbox_entry_find(ids[i]);

		if (i > 0 && sorted != NULL && ids[i] == ids[i - 1])
			continue;
		if (!lease_is(e, token))
			continue;
		if (acks && e->keyed &&
			!key_acked_in_order(e, marked, nmarked, cursors, &ncursors))
			continue;
		e->finishing = true;
		if (acks)
			marked[nmarked++] = ids[i];
		out[nout].id = ids[i];
		out[nout].topic = e->topic;
		out[nout].topic_id = outbox_shared->topics[e->topic].topic_id;
		out[nout].source = e->source;
		out[nout].attempt = e->attempt;
		out[nout].token = e->token;
		nout++;
	}
	LWLockRelease(outbox_shared->lock);
	return nout;
}

/* The topic of the event whose current lease is token's, or 0 */
int32
outbox_lease_topic_id(int64 id, const pg_uuid_t *token)
{
	OutboxEntry *e;
	int32		topic_id = 0;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	e = outbox_entry_find(id);
	if (lease_is(e, token))
		topic_id = outbox_shared->topics[e->topic].topic_id;
	LWLockRelease(outbox_shared->lock);
	return topic_id;
}

/*
 * Move the expiry of the leases of ids held under token to expires_at.
 * Returns how many were extended.
 */
int
outbox_lease_extend(const int64 *ids, int n, const pg_uuid_t *token,
					TimestampTz expires_at)
{
	int			count = 0;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		OutboxEntry *e = outbox_entry_find(ids[i]);

		if (!lease_is(e, token))
			continue;
		e->expires_at = expires_at;
		count++;
	}
	LWLockRelease(outbox_shared->lock);
	return count;
}

/*
 * The highest watermark a topic may have now: below the lowest event that
 * is leased from the log, waiting on the ready list, or possibly held by an
 * offering transaction.  Caller holds the shared state lock.
 */
static int64
watermark_candidate(int topic)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	int64		cand = t->scan_pos;
	dlist_iter	it;

	dlist_foreach(it, &t->ready)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		cand = Min(cand, e->key.event_id - 1);
	}
	dlist_foreach(it, &t->leases)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		if (e->source == SRC_MAIN)
			cand = Min(cand, e->key.event_id - 1);
	}
	/* events held back behind their key are in the log only */
	dlist_foreach(it, &t->keys)
	{
		OutboxKey  *k = dlist_container(OutboxKey, topic_node, it.cur);
		int64		held = key_first_held(k);

		if (held != PG_INT64_MAX)
			cand = Min(cand, held - 1);
	}
	for (int i = 0; i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];

		for (int k = 0; k < slot->ntopics; k++)
			if (slot->topic[k] == topic)
				cand = Min(cand, slot->lo[k] - 1);
	}
	return cand;
}

/*
 * The topics of this database whose watermark can move up, and how far
 * (marks), and the positions parked by topics that gave their slot up, for
 * reap to make durable.  Returns how many topics.
 */
int
outbox_watermark_candidates(int32 **topic_ids, int64 **incarnations,
							int64 **marks, OutboxParkedPosition **parked,
							int *nparked)
{
	int			n = 0;

	*incarnations = palloc(sizeof(int64) * outbox_shared->max_topics);
	*topic_ids = palloc(sizeof(int32) * outbox_shared->max_topics);
	*marks = palloc(sizeof(int64) * outbox_shared->max_topics);
	*parked = palloc(sizeof(OutboxParkedPosition) * OUTBOX_PARKED);

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];
		int64		cand;

		if (!t->in_use || t->dbid != MyDatabaseId || !t->initialized ||
			t->incarnation == 0)
			continue;
		cand = watermark_candidate(i);
		if (cand <= t->watermark)
			continue;
		(*incarnations)[n] = t->incarnation;
		(*topic_ids)[n] = t->topic_id;
		(*marks)[n] = cand;
		n++;
	}
	*nparked = parked_collect(*parked, OUTBOX_PARKED);
	LWLockRelease(outbox_shared->lock);
	return n;
}

/*
 * A lease another transaction made and has not ended yet: not reaped, for
 * that transaction may roll back (its own transaction reaps it freely:
 * the reap would roll back with it).
 */
static inline bool
claim_in_flight(OutboxEntry *e)
{
	return e->claim_open && e->owner != OutboxProcNumber(MyProc);
}

typedef struct ExpiryScan
{
	TimestampTz now;
	OutboxSettling *out;
	int			n;
	int			max;
} ExpiryScan;

/*
 * Is e, an event of a key of an ordered topic, preceded in its lease by an
 * event of its key?  Its failure hands e back (key_hand_back_later).
 */
static bool
later_in_lease(OutboxEntry *e, int topic)
{
	OutboxKey  *k = key_find(topic, e->keyhash);

	return k != NULL && key_leased_below(k, e->key.event_id, &e->token);
}

static bool
count_expired(OutboxEntry *e, int topic, void *arg)
{
	ExpiryScan *st = (ExpiryScan *) arg;

	if (!e->finishing && !claim_in_flight(e) && e->expires_at <= st->now)
		st->n++;
	return true;
}

static bool
mark_expired(OutboxEntry *e, int topic, void *arg)
{
	ExpiryScan *st = (ExpiryScan *) arg;

	if (st->n >= st->max)
		return false;
	if (e->finishing || claim_in_flight(e) || e->expires_at > st->now)
		return true;
	if (e->keyed && later_in_lease(e, topic))
		return true;			/* handed back with the first of its key */
	e->finishing = true;
	st->out[st->n].id = e->key.event_id;
	st->out[st->n].topic = topic;
	st->out[st->n].topic_id = outbox_shared->topics[topic].topic_id;
	st->out[st->n].source = e->source;
	st->out[st->n].attempt = e->attempt;
	st->out[st->n].token = e->token;
	st->n++;
	return true;
}

/* How many leases of this database have expired by now and are not settling */
int
outbox_leases_count_expired(TimestampTz now)
{
	ExpiryScan	st = {now, NULL, 0, 0};

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	outbox_foreach_lease(count_expired, &st);
	LWLockRelease(outbox_shared->lock);
	return st.n;
}

/*
 * Mark up to max expired leases of this database as being reaped by the
 * caller's transaction (as outbox_lease_mark_settling does).  Returns how
 * many; out[] describes them.
 */
int
outbox_leases_mark_expired(TimestampTz now, OutboxSettling *out, int max)
{
	ExpiryScan	st = {now, out, 0, max};

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	outbox_foreach_lease(mark_expired, &st);
	LWLockRelease(outbox_shared->lock);
	return st.n;
}

/*
 * Forget the counters of a dropped topic, or with topic_id 0 of every topic
 * of a database.  Caller holds the shared state lock exclusively.
 */
static void
outbox_counters_forget(Oid dbid, int32 topic_id)
{
	HASH_SEQ_STATUS seq;
	OutboxCounters *c;

	hash_seq_init(&seq, topic_counters);
	while ((c = (OutboxCounters *) hash_seq_search(&seq)) != NULL)
	{
		if (c->key.dbid == dbid && (topic_id == 0 || c->key.topic_id == topic_id))
			counters_drop(c);
	}
	for (int i = 0; i < OUTBOX_PARKED; i++)
	{
		OutboxParked *p = &outbox_shared->parked[i];

		if (p->dbid == dbid && (topic_id == 0 || p->topic_id == topic_id))
			p->dbid = InvalidOid;
	}
}

/* How many topics have counters, in all databases.  Caller holds the lock. */
static int
outbox_counters_count(void)
{
	return (int) hash_get_num_entries(topic_counters);
}

/*
 * Copy up to max counters of the current database's topics.  Caller holds
 * the shared state lock.
 */
static int
outbox_counters_copy(OutboxCounters *out, int max)
{
	return outbox_counters_copy_latency(out, max, NULL, 0);
}

/*
 * Copy up to max parked positions of the current database's topics.
 * Caller holds the shared state lock.
 */
static int
parked_collect(OutboxParkedPosition *out, int max)
{
	int			n = 0;

	for (int i = 0; i < OUTBOX_PARKED && n < max; i++)
	{
		OutboxParked *p = &outbox_shared->parked[i];

		if (p->dbid != MyDatabaseId)
			continue;
		out[n].dbid = p->dbid;
		out[n].topic_id = p->topic_id;
		out[n].incarnation = p->incarnation;
		out[n].pos = p->pos;
		n++;
	}
	return n;
}

/*
 * Parked positions are durable now: their entries (those that still say
 * the same) can go.
 */
void
outbox_parked_done(const OutboxParkedPosition *done, int n)
{
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int k = 0; k < n; k++)
	{
		for (int i = 0; i < OUTBOX_PARKED; i++)
		{
			OutboxParked *p = &outbox_shared->parked[i];

			if (p->dbid == done[k].dbid && p->topic_id == done[k].topic_id &&
				p->incarnation == done[k].incarnation && p->pos <= done[k].pos)
				p->dbid = InvalidOid;
		}
	}
	LWLockRelease(outbox_shared->lock);
}
/*
 * Release a dropped topic's slot.  No claim of it is running (they hold the
 * topic's lock, which the drop holds exclusively).  Caller holds the shared
 * state lock exclusively.
 */
static void
outbox_topic_forget(int topic)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	topic_clear_locked(t);
	if (t->ninflight == 0)
		outbox_topic_release_locked(topic);
	else
		t->incarnation = 0;		/* nothing will match it again */
}

/*
 * Forget where the scan of a topic stands and scan again from the durable
 * watermark, skipping what is acknowledged, retried, dead or in shared
 * memory.  Used when the ready list cannot take an event.  Caller holds the
 * shared state lock exclusively.
 */
static void
outbox_topic_rescan(OutboxTopic *t)
{
	int			topic = (int) (t - outbox_shared->topics);

	if (!t->initialized)
		return;
	if (t->scan_pos > t->recovery_until)
		t->recovery_until = t->scan_pos;
	t->scan_pos = t->watermark;
	t->scan_epoch = ++outbox_shared->epochs;

	/*
	 * Offers in flight must not put on the ready list, at commit, ids the
	 * scan passed before: it passes them again, and may hand them out
	 * before their commit callback runs.
	 */
	for (int i = 0; i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];

		for (int k = 0; k < slot->ntopics; k++)
			if (slot->topic[k] == topic && slot->passed[k] > t->scan_pos)
				slot->passed[k] = t->scan_pos;
	}
}

/*
 * An event's lease has ended for good (acked, nacked, dead, reaped), and its
 * entry is to go.  Normally it simply goes.  But after a rescan the scan passes again over events handed out
 * before it, stepping over the settled ones it loaded with an earlier
 * snapshot: one settled after that load would look free.  So an event in
 * that stretch (above the scan position, at or below recovery_until)
 * stays, as a SETTLED marker the scan steps over like a lease, until the
 * scan position passes it (outbox_topic_passed).  The entry is still in its
 * list (leases or ready).  Caller holds the shared state lock exclusively.
 */
static void
outbox_entry_settled(OutboxTopic *t, OutboxEntry *e)
{
	if (t->initialized && e->key.event_id > t->scan_pos &&
		e->key.event_id <= t->recovery_until)
	{
		dlist_delete(&e->node);
		e->state = ENTRY_SETTLED;
		e->finishing = false;
		memset(&e->token, 0, sizeof(e->token));
		dlist_push_tail(&t->settled, &e->node);
		t->nsettled++;
		return;
	}
	outbox_entry_remove(e);
}

/*
 * The topic's scan position has moved up to scan_pos: SETTLED markers at or
 * below it have done their work.  Caller holds the shared state lock
 * exclusively.
 */
static void
outbox_topic_passed(OutboxTopic *t, int64 scan_pos)
{
	dlist_mutable_iter it;

	if (t->nsettled == 0)
		return;
	dlist_foreach_modify(it, &t->settled)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		if (e->key.event_id > scan_pos)
			continue;
		t->nsettled--;
		outbox_entry_remove(e);
	}
}

static OutboxEntry *
outbox_entry_find(int64 event_id)
{
	OutboxEntryKey key;

	key.dbid = MyDatabaseId;
	key.pad = 0;
	key.event_id = event_id;
	return (OutboxEntry *) hash_search(outbox_entries, &key, HASH_FIND, NULL);
}

/* Returns NULL when the hash is full. */
static OutboxEntry *
outbox_entry_enter(int64 event_id, bool *found)
{
	OutboxEntryKey key;
	OutboxEntry *e;

	key.dbid = MyDatabaseId;
	key.pad = 0;
	key.event_id = event_id;
	e = (OutboxEntry *) hash_search(outbox_entries, &key, HASH_FIND, found);
	if (e != NULL)
		return e;

	/*
	 * The cap is exact: a shared hash made with HASH_ENTER_NULL grows into
	 * the server's spare shared memory once its own is used, and that
	 * memory is what every database's lock table falls back on.
	 */
	*found = false;
	if (hash_get_num_entries(outbox_entries) >= outbox_max_leases)
		return NULL;
	return (OutboxEntry *) hash_search(outbox_entries, &key, HASH_ENTER_NULL,
									   found);
}

/*
 * Put an event the topic's scan went past on its ready list, unless it has
 * an entry already.  Returns false when the hash is full.  Caller holds the
 * shared state lock exclusively.
 */
static bool
outbox_entry_ready(int topic, int64 event_id)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	OutboxEntry *e;
	bool		found;

	e = outbox_entry_enter(event_id, &found);
	if (e == NULL)
		return false;
	if (found)
		return true;
	e->topic = topic;
	e->state = ENTRY_READY;
	e->source = SRC_MAIN;
	e->finishing = false;
	e->claim_open = false;
	e->attempt = 0;
	memset(&e->token, 0, sizeof(e->token));
	e->expires_at = 0;
	e->claimed_at = 0;
	e->created_at = 0;
	e->keyed = false;
	e->keyhash = 0;
	dlist_push_tail(&t->ready, &e->node);
	t->nready++;
	return true;
}

/* Unlink an entry from its topic list and the hash; counts are the caller's. */
static void
outbox_entry_remove(OutboxEntry *entry)
{
	OutboxEntryKey key = entry->key;

	dlist_delete(&entry->node);
	hash_search(outbox_entries, &key, HASH_REMOVE, NULL);
}

/* ----------------------------------------------------------------
 * Keys of ordered topics (OutboxKey): their members, in id order, in
 * chunks of a shared pool.  Every function here runs with the shared state
 * lock held exclusively, unless its comment says shared is enough.
 * ----------------------------------------------------------------
 */

static int32
chunk_alloc(void)
{
	int32		c = outbox_shared->chunk_free;

	if (c < 0)
		return -1;
	outbox_shared->chunk_free = outbox_shared->chunks[c].next;
	outbox_shared->chunks[c].next = -1;
	outbox_shared->chunks[c].prev = -1;
	outbox_shared->chunks[c].n = 0;
	return c;
}

static void
chunk_release(int32 c)
{
	outbox_shared->chunks[c].next = outbox_shared->chunk_free;
	outbox_shared->chunk_free = c;
}

static inline OutboxKeyChunk *
chunk_at(int32 c)
{
	return &outbox_shared->chunks[c];
}

static void
key_tag(OutboxKeyTag *tag, int topic, uint64 hash)
{
	memset(tag, 0, sizeof(*tag));
	tag->topic = topic;
	tag->hash = hash;
}

/* A key's entry, or NULL.  The shared lock is enough. */
static OutboxKey *
key_find(int topic, uint64 hash)
{
	OutboxKeyTag tag;

	key_tag(&tag, topic, hash);
	return (OutboxKey *) hash_search(outbox_keys, &tag, HASH_FIND, NULL);
}

/* A key's entry, made if need be; NULL when the hash is full. */
static OutboxKey *
key_enter(OutboxTopic *t, int topic, uint64 hash)
{
	OutboxKeyTag tag;
	OutboxKey  *k;
	bool		found;

	k = key_find(topic, hash);
	if (k != NULL)
		return k;
	/* exact, as for the entries: no growing into spare shared memory */
	if (hash_get_num_entries(outbox_keys) >= outbox_max_ordered_keys)
		return NULL;
	key_tag(&tag, topic, hash);
	k = (OutboxKey *) hash_search(outbox_keys, &tag, HASH_ENTER_NULL, &found);
	if (k == NULL)
		return NULL;
	k->first = -1;
	k->last = -1;
	k->nmembers = 0;
	k->nleased = 0;
	k->runnable = false;
	k->run_valid = false;
	k->find_chunk = -1;
	dlist_push_tail(&t->keys, &k->topic_node);
	t->nkeys++;
	return k;
}

/* A key with no members goes. */
static void
key_drop_if_empty(OutboxTopic *t, OutboxKey *k)
{
	OutboxKeyTag tag;

	if (k->nmembers > 0)
		return;
	if (k->runnable)
		dlist_delete(&k->run_node);
	dlist_delete(&k->topic_node);
	t->nkeys--;
	tag = k->tag;
	hash_search(outbox_keys, &tag, HASH_REMOVE, NULL);
}

/*
 * Find member id of k: its chunk and place.  Returns false if id is not a
 * member.  The walk starts at the chunk of the member found last, going
 * back first if that lies above id, so that finding the members of a long
 * run one after the other, upward or downward (a claim rolled back undoes
 * its leases in reverse), costs no walk from the first chunk each time.
 * Caller holds the shared state lock exclusively (the starting point
 * moves).
 */
static bool
key_member_find(OutboxKey *k, int64 id, int32 *chunk, int *at)
{
	int32		c = k->first;

	/* an event the scan meets for the first time is above them all */
	if (k->last < 0 || chunk_at(k->last)->ids[chunk_at(k->last)->n - 1] < id ||
		chunk_at(k->first)->ids[0] > id)
		return false;
	if (k->find_chunk >= 0)
	{
		/* the first chunk starts at or below id: this stops there at most */
		c = k->find_chunk;
		while (chunk_at(c)->prev >= 0 &&
			   (chunk_at(c)->n == 0 || chunk_at(c)->ids[0] > id))
			c = chunk_at(c)->prev;
	}
	for (; c >= 0; c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		if (ch->n == 0 || ch->ids[ch->n - 1] < id)
			continue;
		for (int i = 0; i < ch->n; i++)
		{
			if (ch->ids[i] == id)
			{
				*chunk = c;
				*at = i;
				k->find_chunk = c;
				return true;
			}
			if (ch->ids[i] > id)
				return false;
		}
		return false;
	}
	return false;
}

/*
 * The state of member id of k, or 0 if it is none.  Caller holds the shared
 * state lock exclusively (key_member_find).
 */
static int
key_member_state(OutboxKey *k, int64 id)
{
	int32		c;
	int			at;

	if (k == NULL || !key_member_find(k, id, &c, &at))
		return 0;
	return chunk_at(c)->state[at];
}

/* Count a member's change of state in its key and topic. */
static void
member_counts(OutboxTopic *t, OutboxKey *k, int old_state, int new_state)
{
	if (old_state == MEMBER_LEASED)
		k->nleased--;
	if (old_state == MEMBER_WAITING)
		t->nwaiting--;
	if (new_state == MEMBER_LEASED)
		k->nleased++;
	if (new_state == MEMBER_WAITING)
		t->nwaiting++;
}

/*
 * Add id, not a member yet, to k in the given state.  Returns false when
 * the pool has no room for it (outbox.max_ordered_events).
 */
static bool
key_member_add(OutboxTopic *t, OutboxKey *k, int64 id, int state)
{
	int32		c;
	OutboxKeyChunk *ch;
	int			at;

	if (outbox_shared->nmembers >= outbox_max_ordered_events)
		return false;

	/* the usual case: above every member, at the end */
	if (k->last < 0 || chunk_at(k->last)->ids[chunk_at(k->last)->n - 1] < id)
	{
		if (k->last >= 0 && chunk_at(k->last)->n < KEY_CHUNK_IDS)
			c = k->last;
		else
		{
			c = chunk_alloc();
			if (c < 0)
				return false;
			if (k->last >= 0)
				chunk_at(k->last)->next = c;
			else
				k->first = c;
			chunk_at(c)->prev = k->last;
			k->last = c;
		}
		ch = chunk_at(c);
		at = ch->n;
	}
	else
	{
		k->run_valid = false;	/* members move */
		/* the first chunk whose last id is above id */
		for (c = k->first;; c = chunk_at(c)->next)
		{
			ch = chunk_at(c);
			if (ch->ids[ch->n - 1] > id)
				break;
		}
		if (ch->n == KEY_CHUNK_IDS)
		{
			/* split: the upper half goes to a new chunk after it */
			int32		d = chunk_alloc();
			OutboxKeyChunk *dh;
			int			half = KEY_CHUNK_IDS / 2;

			if (d < 0)
				return false;
			dh = chunk_at(d);
			memcpy(dh->ids, ch->ids + half, sizeof(int64) * (KEY_CHUNK_IDS - half));
			memcpy(dh->state, ch->state + half, KEY_CHUNK_IDS - half);
			dh->n = KEY_CHUNK_IDS - half;
			ch->n = half;
			dh->next = ch->next;
			dh->prev = c;
			if (dh->next >= 0)
				chunk_at(dh->next)->prev = d;
			ch->next = d;
			if (k->last == c)
				k->last = d;
			if (ch->ids[ch->n - 1] < id)
			{
				c = d;
				ch = dh;
			}
		}
		for (at = 0; at < ch->n && ch->ids[at] < id; at++)
			;
		memmove(ch->ids + at + 1, ch->ids + at, sizeof(int64) * (ch->n - at));
		memmove(ch->state + at + 1, ch->state + at, ch->n - at);
	}
	ch->ids[at] = id;
	ch->state[at] = (uint8) state;
	ch->n++;
	k->nmembers++;
	outbox_shared->nmembers++;
	member_counts(t, k, 0, state);
	return true;
}

/* Change the state of member id of k; false if it is no member. */
static bool
key_member_set(OutboxTopic *t, OutboxKey *k, int64 id, int state)
{
	int32		c;
	int			at;

	if (!key_member_find(k, id, &c, &at))
		return false;
	member_counts(t, k, chunk_at(c)->state[at], state);
	chunk_at(c)->state[at] = (uint8) state;
	if (state != MEMBER_LEASED)
		k->run_valid = false;
	return true;
}

/* Remove member id from k (the key stays, even if empty). */
static void
key_member_remove(OutboxTopic *t, OutboxKey *k, int64 id)
{
	int32		prev = -1;

	for (int32 c = k->first; c >= 0; prev = c, c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);
		int			at;

		if (ch->ids[ch->n - 1] < id)
			continue;
		for (at = 0; at < ch->n && ch->ids[at] != id; at++)
			;
		if (at == ch->n)
			return;
		k->run_valid = false;
		member_counts(t, k, ch->state[at], 0);
		memmove(ch->ids + at, ch->ids + at + 1, sizeof(int64) * (ch->n - at - 1));
		memmove(ch->state + at, ch->state + at + 1, ch->n - at - 1);
		ch->n--;
		k->nmembers--;
		outbox_shared->nmembers--;
		if (ch->n == 0)
		{
			if (prev >= 0)
				chunk_at(prev)->next = ch->next;
			else
				k->first = ch->next;
			if (ch->next >= 0)
				chunk_at(ch->next)->prev = prev;
			if (k->last == c)
				k->last = prev;
			if (k->find_chunk == c)
				k->find_chunk = -1;
			chunk_release(c);
		}
		return;
	}
}

/*
 * The key's head has changed: it is runnable when none of its members is
 * leased and the first is held back; a first member waiting in
 * outbox.retry is for the claims' look at due retries.  Wakes the topic's
 * waiting claims when the key can move.
 */
static void
key_refresh(OutboxTopic *t, OutboxKey *k)
{
	bool		runnable = false;
	bool		wake = false;

	if (k->nmembers == 0)
	{
		key_drop_if_empty(t, k);
		return;
	}
	if (k->nleased == 0)
	{
		OutboxKeyChunk *ch = chunk_at(k->first);

		if (ch->state[0] == MEMBER_HELD)
			runnable = true;
		else if (ch->state[0] == MEMBER_WAITING)
		{
			t->next_retry_at = 0;
			wake = true;
		}
	}
	if (runnable && !k->runnable)
	{
		dlist_push_tail(&t->runnable, &k->run_node);
		wake = true;
	}
	else if (!runnable && k->runnable)
		dlist_delete(&k->run_node);
	k->runnable = runnable;
	if (wake)
		outbox_topic_wake(t);
}

/*
 * May the event id of key k go out under token now?  Only if every member
 * below it is leased under the same token.  The shared lock is enough.
 */
static bool
key_may_lease(OutboxKey *k, int64 id, const pg_uuid_t *token)
{
	for (int32 c = k->first; c >= 0; c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		for (int i = 0; i < ch->n; i++)
		{
			if (ch->ids[i] >= id)
				return true;
			if (ch->state[i] != MEMBER_LEASED || token == NULL ||
				leased_under(ch->ids[i], token) == NULL)
				return false;
		}
	}
	return true;
}

/*
 * The fast way to key_may_lease for the next event of a run a claim is
 * leasing: if k's run (its leading members, all leased under token) is
 * known, id may go out when no other member lies between the run and it.
 * Returns 1 (it may; *chunk and *at: its place if it is a member, else
 * *chunk is -1),
 * 0 (it may not), or -1 (unknown: walk the members).
 */
static int
key_run_allows(OutboxKey *k, int64 id, const pg_uuid_t *token, int32 *chunk,
			   int *at)
{
	int32		c;
	int			a;

	*chunk = -1;
	if (!k->run_valid || token == NULL ||
		memcmp(&k->run_token, token, sizeof(pg_uuid_t)) != 0)
		return -1;
	c = k->run_chunk;
	a = k->run_at + 1;
	if (a >= chunk_at(c)->n)
	{
		c = chunk_at(c)->next;
		a = 0;
	}
	if (c < 0 || chunk_at(c)->ids[a] > id)
		return chunk_at(k->run_chunk)->ids[k->run_at] < id ? 1 : -1;
	if (chunk_at(c)->ids[a] == id)
	{
		*chunk = c;
		*at = a;
		return 1;
	}
	return 0;
}

/* Is a member below id leased under token (the same lease)?  Shared is enough. */
static bool
key_leased_below(OutboxKey *k, int64 id, const pg_uuid_t *token)
{
	for (int32 c = k->first; c >= 0; c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		for (int i = 0; i < ch->n; i++)
		{
			if (ch->ids[i] >= id)
				return false;
			if (ch->state[i] == MEMBER_LEASED &&
				leased_under(ch->ids[i], token) != NULL)
				return true;
		}
	}
	return false;
}

/*
 * Is every member of k below id that is leased under token (the same lease)
 * among marked[0..n) (ascending)?  The walk starts where cur says the last
 * one of the same key ended: ids are asked in ascending order, members do
 * not move meanwhile, and marked only grows.
 */
static bool
key_below_marked(OutboxKey *k, int64 id, const pg_uuid_t *token,
				 const int64 *marked, int n, KeyCursor *cur)
{
	int32		c = cur->chunk >= 0 ? cur->chunk : k->first;
	int			i = cur->chunk >= 0 ? cur->at : 0;

	for (; c >= 0; c = chunk_at(c)->next, i = 0)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		for (; i < ch->n; i++)
		{
			cur->chunk = c;
			cur->at = i;
			if (ch->ids[i] >= id)
				return true;
			if (ch->state[i] != MEMBER_LEASED ||
				leased_under(ch->ids[i], token) == NULL)
				continue;
			if (bsearch(&ch->ids[i], marked, n, sizeof(int64), int64_cmp) == NULL)
				return false;
		}
		cur->at = ch->n;
	}
	return true;
}

/* The lowest held member of k, or PG_INT64_MAX.  Shared is enough. */
static int64
key_first_held(OutboxKey *k)
{
	for (int32 c = k->first; c >= 0; c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		for (int i = 0; i < ch->n; i++)
			if (ch->state[i] == MEMBER_HELD)
				return ch->ids[i];
	}
	return PG_INT64_MAX;
}

/* Every key of a topic goes. */
static void
keys_clear_locked(OutboxTopic *t)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &t->keys)
	{
		OutboxKey  *k = dlist_container(OutboxKey, topic_node, it.cur);
		OutboxKeyTag tag = k->tag;
		int32		c = k->first;

		while (c >= 0)
		{
			int32		next = chunk_at(c)->next;

			outbox_shared->nmembers -= chunk_at(c)->n;
			chunk_release(c);
			c = next;
		}
		hash_search(outbox_keys, &tag, HASH_REMOVE, NULL);
	}
	dlist_init(&t->keys);
	dlist_init(&t->runnable);
	t->nkeys = 0;
	t->nwaiting = 0;
}

/*
 * A lease of a keyed event ends without the event being settled (the claim
 * rolled back, or a failure before it hands it back): the member is held
 * back again, or waits in outbox.retry if that is where it came from.
 * The entry is the caller's.
 */
static void
key_lease_undone(OutboxTopic *t, OutboxEntry *e)
{
	OutboxKey  *k = key_find((int) (t - outbox_shared->topics), e->keyhash);

	if (k == NULL)
		return;
	if (e->source == SRC_RETRY && e->member_new)
	{
		/* its earlier lease ended for good meanwhile: it waits nowhere */
		key_member_remove(t, k, e->key.event_id);
	}
	else
	{
		key_member_set(t, k, e->key.event_id,
					   e->source == SRC_RETRY ? MEMBER_WAITING : MEMBER_HELD);
		if (e->source == SRC_RETRY)
			t->next_retry_at = 0;
	}
	key_refresh(t, k);
}

/*
 * A lease of a keyed event stands again after the end of another of its
 * key (a nack or dead letter rolled back) but an earlier event of its key
 * is not leased under the same lease any more: it was handed back when
 * that one failed, and goes back too.  Returns whether it did; the entry
 * is then gone.
 */
static bool
key_lease_recheck(OutboxTopic *t, OutboxEntry *e)
{
	OutboxKey  *k = key_find((int) (t - outbox_shared->topics), e->keyhash);

	if (k == NULL || key_may_lease(k, e->key.event_id, &e->token))
		return false;
	t->nleases--;
	if (e->source == SRC_RETRY)
		t->nretry_leases--;
	key_lease_undone(t, e);
	outbox_entry_remove(e);
	return true;
}

static void key_hand_back_later(OutboxTopic *t, OutboxKey *k, OutboxEntry *e);
static void key_waiting_undo_locked(int topic, int64 id, uint64 hash);

/*
 * The lease of e, a keyed event, ends for good (its ack, nack, dead letter
 * or reap commits).  Into outbox.retry (retry): it waits there as its key's
 * member, and the later events of its key in the same lease are handed
 * back with it.  Acked or dead: it leaves its key, which moves on.  The
 * entry is the caller's.
 */
static void
key_lease_ended(OutboxTopic *t, OutboxEntry *e, bool retry)
{
	OutboxKey  *k = key_find((int) (t - outbox_shared->topics), e->keyhash);

	if (k == NULL)
		return;
	if (retry)
	{
		key_member_set(t, k, e->key.event_id, MEMBER_WAITING);
		key_hand_back_later(t, k, e);
	}
	else if (e->waits_after)
	{
		/* dead, and redriven before this end was seen: it waits again */
		key_member_set(t, k, e->key.event_id, MEMBER_WAITING);
		t->next_retry_at = 0;
	}
	else
		key_member_remove(t, k, e->key.event_id);
	key_refresh(t, k);
}

/*
 * The later members of e's key leased under e's lease, not being settled:
 * handed back with it, uncounted, after e failed into outbox.retry.
 */
static void
key_hand_back_later(OutboxTopic *t, OutboxKey *k, OutboxEntry *e)
{
	/* states change in place: no member moves */
	for (int32 c = k->first; c >= 0; c = chunk_at(c)->next)
	{
		OutboxKeyChunk *ch = chunk_at(c);

		for (int i = 0; i < ch->n; i++)
		{
			OutboxEntry *l;
			int			state;

			if (ch->ids[i] <= e->key.event_id)
				continue;

			/*
			 * A lease's events of a key come before every event held back
			 * behind it: the lease ends before the first such.
			 */
			if (ch->state[i] == MEMBER_HELD)
				return;
			if (ch->state[i] != MEMBER_LEASED)
				continue;
			l = leased_under(ch->ids[i], &e->token);
			if (l == NULL || l->finishing)
				continue;
			t->nleases--;
			if (l->source == SRC_RETRY)
				t->nretry_leases--;
			state = l->source == SRC_RETRY ? MEMBER_WAITING : MEMBER_HELD;
			member_counts(t, k, MEMBER_LEASED, state);
			ch->state[i] = (uint8) state;
			k->run_valid = false;
			outbox_entry_remove(l);
		}
	}
}

/* Remove an entry just entered, in no list yet. */
static void
outbox_entry_remove_unlinked(OutboxEntry *entry)
{
	OutboxEntryKey key = entry->key;

	hash_search(outbox_entries, &key, HASH_REMOVE, NULL);
}

static OutboxOfferSlot *
outbox_my_slot(void)
{
	Assert(OutboxMyBackendIndex() >= 0 && OutboxMyBackendIndex() < outbox_shared->nslots);
	return &outbox_shared->slots[OutboxMyBackendIndex()];
}

/*
 * For a topic without a shared slot: the lowest id an offering transaction
 * of this database may still hold that no slot names one by one (their
 * lo_any), or PG_INT64_MAX.  Returns false if the topic has a slot (its
 * watermark moves through outbox_watermark_candidates) or if such a
 * transaction has not drawn its first id yet.  Offers to the topic that
 * begin later draw ids above every id drawn so far.
 */
bool
outbox_unloaded_topic_floor(int32 topic_id, int64 *floor)
{
	bool		ok = true;

	*floor = PG_INT64_MAX;
	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	if (outbox_topic_find_locked(topic_id) >= 0)
		ok = false;
	for (int i = 0; ok && i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];
		int64		lo;

		if (!slot->any || slot->dbid != MyDatabaseId)
			continue;
		pg_read_barrier();
		lo = (int64) pg_atomic_read_u64(&slot->lo_any);
		if (lo == OUTBOX_LO_PENDING)
			ok = false;
		else if (lo != 0)
			*floor = Min(*floor, lo);
	}
	LWLockRelease(outbox_shared->lock);
	return ok;
}

/*
 * The transactions of this database that announced offers and have not
 * ended (walsync.c waits for them).  Returns how many, at most max (the
 * number of offer slots is enough).
 */
int
outbox_offering_xids(TransactionId *xids, int max)
{
	int			n = 0;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < outbox_shared->nslots && n < max; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];

		if (slot->dbid == MyDatabaseId && TransactionIdIsValid(slot->xid) &&
			(slot->ntopics > 0 || slot->any))
			xids[n++] = slot->xid;
	}
	LWLockRelease(outbox_shared->lock);
	return n;
}

/*
 * Call fn for every lease of the current database's topics, until it
 * returns false.  Caller holds the shared state lock.
 */
static void
outbox_foreach_lease(OutboxLeaseFn fn, void *arg)
{
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];
		dlist_iter	it;

		if (!t->in_use || t->dbid != MyDatabaseId)
			continue;
		dlist_foreach(it, &t->leases)
		{
			if (!fn(dlist_container(OutboxEntry, node, it.cur), i, arg))
				return;
		}
	}
}

/* ----------------------------------------------------------------
 * Claims (claim.c): a topic's scan, its ready list and the leases made
 * from them.  A claim says it is scanning (outbox_scan_begin), reads the
 * topic's state (outbox_scan_view, outbox_topic_ready_ids, ...), reads the
 * log holding no LWLock, and makes its leases and sets the scan position
 * in one critical section (outbox_scan_end).
 * ----------------------------------------------------------------
 */

/* The topic's count of wakes, read before a claim's attempt */
uint64
outbox_topic_wakes(int topic)
{
	return pg_atomic_read_u64(&outbox_shared->topics[topic].wakes);
}

/*
 * Prepare to sleep on the topic's condition variable, unless the topic was
 * woken since its count of wakes was wakes: then the preparation is
 * cancelled, and the result is false.
 */
bool
outbox_topic_prepare_to_sleep(int topic, uint64 wakes)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	ConditionVariablePrepareToSleep(&t->cv);
	if (pg_atomic_read_u64(&t->wakes) != wakes)
	{
		ConditionVariableCancelSleep();
		return false;
	}
	return true;
}

/* Sleep until the topic is woken or ms pass (no lock is held). */
void
outbox_topic_sleep(int topic, long ms)
{
	(void) ConditionVariableTimedSleep(&outbox_shared->topics[topic].cv, ms,
									   PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
}

/* When outbox.retry may next have an event of the topic due: none before */
TimestampTz
outbox_topic_next_retry(int topic)
{
	TimestampTz next_retry;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	next_retry = outbox_shared->topics[topic].next_retry_at;
	LWLockRelease(outbox_shared->lock);
	return next_retry;
}

/*
 * The first step of a claim, taken under the topic's scan lock: the slot is
 * still the topic's, and it is being scanned.  Returns false if the slot
 * was given to another topic meanwhile.  *initialized says whether the
 * topic's scan position is loaded (outbox_topic_init_scan).
 */
bool
outbox_scan_begin(int topic, int32 topic_id, int64 incarnation,
				  bool ordered, bool *initialized)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (!outbox_topic_matches(topic, topic_id, incarnation))
	{
		LWLockRelease(outbox_shared->lock);
		return false;
	}
	t->ordered = ordered;
	t->scanning = true;
	t->scanner = MyProcPid;
	t->nhandoff = 0;
	t->handoff_overflow = false;
	*initialized = t->initialized;
	LWLockRelease(outbox_shared->lock);
	return true;
}

/* The topic's scan as it stands, for a claim about to read the log */
void
outbox_scan_view(int topic, OutboxScanView *view)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	view->next_retry_at = t->next_retry_at;
	view->nretry_leases = t->nretry_leases;
	view->nwaiting = t->nwaiting;
	view->scan_pos = t->scan_pos;
	view->recovery_until = t->recovery_until;
	view->scan_epoch = t->scan_epoch;
	LWLockRelease(outbox_shared->lock);
}

/*
 * The topic is no longer scanned.  Caller holds the shared state lock
 * exclusively.
 */
static void
scan_stop_locked(OutboxTopic *t)
{
	t->scanning = false;
	t->nhandoff = 0;
	t->handoff_overflow = false;
}

/* Clear a "scanning" of ours left by a claim that failed. */
void
outbox_scan_abandon(int topic)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (t->scanning && t->scanner == MyProcPid)
		scan_stop_locked(t);
	LWLockRelease(outbox_shared->lock);
}

/*
 * The watermark the topic's slot knows: the last durable one it was told
 * of, or the position parked when the topic last gave its slot up.
 */
int64
outbox_topic_watermark(int topic)
{
	int64		watermark;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	watermark = outbox_shared->topics[topic].watermark;
	LWLockRelease(outbox_shared->lock);
	return watermark;
}

/*
 * Load the topic's scan position, if it is not loaded yet, from watermark
 * (or the slot's own, if higher): the scan steps over settled events up to
 * bound (claim.c's topic_init).
 */
void
outbox_topic_init_scan(int topic, int64 watermark, int64 bound)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (!t->initialized)
	{
		watermark = Max(watermark, t->watermark);
		t->watermark = watermark;
		t->scan_pos = watermark;
		t->recovery_until = Max(bound, watermark);
		t->next_retry_at = 0;
		t->initialized = true;
	}
	LWLockRelease(outbox_shared->lock);
}

/*
 * Up to max ids of events to hand out again, oldest first: the topic's
 * ready list, then, for an ordered topic, the held events at the head of
 * runnable keys, a run of each key in id order (held[i], with the key's
 * hash).  Of each key's run, the first run_from events are left out (and
 * with run_from > 0 the ready list too: a claim asking for more of the
 * runs it took part of), and at most run_max are taken (0: no limit).
 * Returns how many.
 */
int
outbox_topic_ready_ids(int topic, int64 *ids, bool *held, uint64 *hashes,
					   int max, int run_from, int run_max)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	int			n = 0;
	dlist_iter	it;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	if (run_from == 0)
	{
		dlist_foreach(it, &t->ready)
		{
			OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

			if (n >= max)
				break;
			held[n] = false;
			hashes[n] = 0;
			ids[n++] = e->key.event_id;
		}
	}
	dlist_foreach(it, &t->runnable)
	{
		OutboxKey  *k = dlist_container(OutboxKey, run_node, it.cur);
		bool		run_ends = false;
		int			run = 0;

		for (int32 c = k->first; c >= 0 && n < max && !run_ends;
			 c = chunk_at(c)->next)
		{
			OutboxKeyChunk *ch = chunk_at(c);

			for (int i = 0; i < ch->n && n < max; i++)
			{
				if (ch->state[i] != MEMBER_HELD ||
					(run_max > 0 && run >= run_from + run_max))
				{
					run_ends = true;
					break;
				}
				if (run++ < run_from)
					continue;
				held[n] = true;
				hashes[n] = k->tag.hash;
				ids[n++] = ch->ids[i];
			}
		}
		if (n >= max)
			break;
	}
	LWLockRelease(outbox_shared->lock);
	return n;
}

/*
 * Whether each of ids has an entry in this database: a lease, an event on a
 * ready list, or a SETTLED marker.
 */
void
outbox_entries_held(const int64 *ids, int n, bool *held)
{
	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
		held[i] = (outbox_entry_find(ids[i]) != NULL);
	LWLockRelease(outbox_shared->lock);
}

/*
 * For events of a claim's scan of an ordered topic's log: whether each one's
 * key has an event below it that is out, waiting or held back, so that the
 * claim reads on to fill its batch.  A hint: the lease is decided in
 * outbox_scan_end.
 */
void
outbox_keys_blocked(int topic, const uint64 *hashes, const int64 *ids, int n,
					bool *blocked)
{
	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		OutboxKey  *k = key_find(topic, hashes[i]);

		blocked[i] = (k != NULL && k->first >= 0 &&
					  chunk_at(k->first)->ids[0] < ids[i]);
	}
	LWLockRelease(outbox_shared->lock);
}

/*
 * The events of an ordered topic waiting in outbox.retry, as read before
 * its first claim since the server started (claim.c): members of their
 * keys, unless they are already.  Returns false when shared memory has no
 * room for them all.
 */
bool
outbox_keys_load(int topic, const int64 *ids, const uint64 *hashes, int n)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	bool		ok = true;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	t->ordered = true;
	for (int i = 0; i < n && ok; i++)
	{
		OutboxKey  *k = key_enter(t, topic, hashes[i]);

		if (k == NULL)
			ok = false;
		else if (key_member_state(k, ids[i]) == 0)
		{
			ok = key_member_add(t, k, ids[i], MEMBER_WAITING);
			key_refresh(t, k);
		}
	}
	LWLockRelease(outbox_shared->lock);
	return ok;
}

/*
 * An event of a key of an ordered topic is going to outbox.retry outside
 * any lease (a delayed offer, a redrive): from now on it holds the later
 * events of its key back, until the caller's transaction rolls back
 * (outbox_key_waiting_undo).  Returns the topic's slot, -1 when no slot
 * can be had, -2 when there is no room for the key or the event.
 */
int
outbox_key_waiting_add(int32 topic_id, int64 incarnation, int64 id,
					   uint64 hash)
{
	int			topic;
	OutboxTopic *t;
	OutboxKey  *k;
	int			result;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	topic = outbox_topic_acquire_locked(topic_id, incarnation);
	if (topic < 0)
	{
		LWLockRelease(outbox_shared->lock);
		return -1;
	}
	t = &outbox_shared->topics[topic];
	t->ordered = true;
	k = key_enter(t, topic, hash);
	result = topic;
	if (k == NULL)
		result = -2;
	else
	{
		int			state = key_member_state(k, id);

		if (state == 0)
		{
			if (!key_member_add(t, k, id, MEMBER_WAITING))
				result = -2;
			key_refresh(t, k);
		}
		else if (state == MEMBER_LEASED)
		{
			/*
			 * Its lease's end (a dead letter) committed but was not applied
			 * yet: the event is to wait again when it is.
			 */
			OutboxEntry *e = outbox_entry_find(id);

			if (e != NULL && e->keyed)
				e->waits_after = true;
		}
	}
	LWLockRelease(outbox_shared->lock);
	return result;
}

/*
 * The transaction that made id wait (outbox_key_waiting_add) rolled back.
 * Caller holds the shared state lock exclusively.
 */
static void
key_waiting_undo_locked(int topic, int64 id, uint64 hash)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	OutboxKey  *k = key_find(topic, hash);
	int			state = key_member_state(k, id);

	if (state == MEMBER_WAITING)
	{
		key_member_remove(t, k, id);
		key_refresh(t, k);
	}
	else if (state == MEMBER_LEASED)
	{
		OutboxEntry *e = outbox_entry_find(id);

		if (e != NULL && e->keyed)
			e->waits_after = false;
	}
}

/*
 * Mark the offer slots of transactions in flight in snap: the scan went
 * past ids they may hold.  Caller holds the shared state lock exclusively.
 */
static void
mark_passed(int topic, Snapshot snap, int64 pos)
{
	for (int i = 0; i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];

		for (int k = 0; k < slot->ntopics; k++)
		{
			if (slot->topic[k] != topic || slot->passed[k] >= pos)
				continue;
			if (XidInMVCCSnapshot(slot->xid, snap))
				slot->passed[k] = pos;
		}
	}
}

/*
 * The highest scan position a scan with snap may take: below the ids of
 * every offering transaction in flight in snap whose offers its slot covers
 * by lo_any only (topics without a shared slot, or more than the slot
 * names).  Such a transaction's first id may still be unknown: then the
 * position stays where it was.  Caller holds the shared state lock.
 */
static int64
scan_cap(Snapshot snap, int64 old_pos)
{
	int64		cap = PG_INT64_MAX;

	for (int i = 0; i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];
		int64		lo;

		if (!slot->any || slot->dbid != MyDatabaseId ||
			!XidInMVCCSnapshot(slot->xid, snap))
			continue;
		pg_read_barrier();
		lo = (int64) pg_atomic_read_u64(&slot->lo_any);
		cap = Min(cap, lo == OUTBOX_LO_PENDING ? old_pos : lo - 1);
	}
	return cap;
}

/*
 * Offers that committed while the scan read the log, with a snapshot that
 * does not see them, and whose ids the scan went past: on the ready list.
 * Caller holds the shared state lock exclusively.
 */
static void
take_handoff(OutboxTopic *t, int topic, Snapshot snap, int64 pos,
			 int64 scanned)
{
	for (int i = 0; i < t->nhandoff; i++)
	{
		OutboxHandoff *h = &t->handoff[i];

		if (h->id > pos || !XidInMVCCSnapshot(h->xid, snap))
			continue;
		if (!outbox_entry_ready(topic, h->id))
		{
			/* scan again; what this claim leased up to scanned stays covered */
			outbox_topic_rescan(t);
			if (scanned > t->recovery_until)
				t->recovery_until = scanned;
			return;
		}
	}
}

/*
 * A claim that stops leasing at candidate i (out of lease entries, or the
 * topic's share used up): the scan position goes below the first event it
 * found in the log that it did not lease (candidates from the log come
 * last, in id order), so the next scan finds it again.
 */
static int64
resume_before(const OutboxScanEnd *s, int i, int64 pos)
{
	for (int j = i; j < s->ncand; j++)
	{
		if (s->cand[j].source == SRC_MAIN && !s->cand[j].from_ready)
			return Min(pos, s->cand[j].id - 1);
	}
	return pos;
}

/*
 * The entry to lease a candidate in: the ready one it was taken from, or a
 * new one.  NULL when there is none: the event is held or waiting already,
 * it left the ready list meanwhile, or (*full) the hash has no room.
 * Caller holds the shared state lock exclusively.
 */
static OutboxEntry *
candidate_entry_locked(OutboxTopic *t, int topic, const OutboxCandidate *c,
					   bool *full)
{
	OutboxEntry *e;
	bool		found;

	if (c->from_ready)
	{
		e = outbox_entry_find(c->id);
		if (e == NULL || e->state != ENTRY_READY || e->topic != topic)
			return NULL;
		dlist_delete(&e->node);
		t->nready--;
		return e;
	}
	e = outbox_entry_enter(c->id, &found);
	if (e == NULL)
	{
		/* out of room */
		*full = true;
		return NULL;
	}
	if (found)
		return NULL;			/* held or waiting already */
	e->attempt = c->attempts;
	e->source = c->source;
	e->topic = topic;
	e->keyed = false;
	e->keyhash = 0;
	if (c->source == SRC_RETRY)
		t->nretry_leases++;
	return e;
}

/*
 * Make e a lease of the claim's, under its token, and mark its candidate
 * leased.  Caller holds the shared state lock exclusively.
 */
static void
lease_entry_locked(OutboxTopic *t, OutboxEntry *e, OutboxCandidate *c,
				   const OutboxScanEnd *s)
{
	e->state = ENTRY_LEASED;
	e->finishing = false;
	e->claim_open = true;
	e->attempt++;
	e->token = *s->token;
	e->expires_at = s->expires_at;
	e->claimed_at = s->now;
	e->created_at = c->created_at;
	e->owner = OutboxProcNumber(MyProc);
	e->release_on_exit = outbox_release_on_disconnect;
	dlist_push_tail(&t->leases, &e->node);
	t->nleases++;
	c->leased = true;
	c->attempt = e->attempt;
}

/*
 * How far an ordered topic's scan may go: below every id an offering
 * transaction in flight in snap may hold, named in an offer slot, left in
 * the handoff, or covered by an offer slot's lo_any.  Events above it
 * might come after an earlier event of their key that is not committed
 * yet.  Caller holds the shared state lock.
 */
static int64
ordered_cap_locked(OutboxTopic *t, int topic, Snapshot snap, int64 old_pos)
{
	int64		cap = PG_INT64_MAX;

	for (int i = 0; i < outbox_shared->nslots; i++)
	{
		OutboxOfferSlot *slot = &outbox_shared->slots[i];

		for (int k = 0; k < slot->ntopics; k++)
			if (slot->topic[k] == topic && XidInMVCCSnapshot(slot->xid, snap))
				cap = Min(cap, slot->lo[k] - 1);
	}
	if (outbox_shared->nany > 0)
		cap = Min(cap, Max(old_pos, scan_cap(snap, old_pos)));
	for (int i = 0; i < t->nhandoff; i++)
		if (XidInMVCCSnapshot(t->handoff[i].xid, snap))
			cap = Min(cap, t->handoff[i].id - 1);
	if (t->handoff_overflow)
		cap = Min(cap, t->handoff_min - 1);
	return Max(cap, old_pos);
}

typedef enum KeyedLease
{
	KEYED_LEASED,
	KEYED_HELD,					/* held back behind its key */
	KEYED_SKIPPED,				/* not now: it stays as it is */
	KEYED_FULL					/* no room for its lease or its place */
} KeyedLease;

/*
 * Lease candidate c, an event of a key of an ordered topic, if every
 * member of its key below it is leased by this claim; else hold it back
 * behind its key, if it comes from the log.  Caller holds the shared state
 * lock exclusively.
 */
static KeyedLease
lease_keyed_locked(OutboxTopic *t, OutboxCandidate *c, OutboxScanEnd *s,
				   int64 seen_upto)
{
	bool		from_log = (c->source == SRC_MAIN && !c->from_ready);
	OutboxKey  *k = key_find(s->topic, c->keyhash);
	int			state = 0;
	OutboxEntry *e;
	bool		found;
	int32		chunk = -1;
	int			at = 0;
	int			run = -1;

	/*
	 * An event from outbox.retry above what the scan has read may have
	 * earlier events of its key in the log that are no members yet.
	 */
	if (!from_log && c->id > seen_upto)
		return KEYED_SKIPPED;

	if (k != NULL)
	{
		/* where it stands among its key's members, and whether it may go */
		run = key_run_allows(k, c->id, s->token, &chunk, &at);
		if (chunk < 0 && key_member_find(k, c->id, &chunk, &at))
			run = -1;
		if (chunk >= 0)
			state = chunk_at(chunk)->state[at];
	}

	if (from_log && (state != 0 || outbox_entry_find(c->id) != NULL))
		return KEYED_SKIPPED;	/* met again after a rescan */
	if (c->held && state != MEMBER_HELD)
		return KEYED_SKIPPED;
	if (c->source == SRC_RETRY && state != 0 && state != MEMBER_WAITING)
		return KEYED_SKIPPED;

	if (k != NULL)
	{
		if (run == 0 || (run < 0 && !key_may_lease(k, c->id, s->token)))
		{
			/* an earlier event of its key is out or waiting */
			if (!from_log)
				return KEYED_SKIPPED;
			if (!key_member_add(t, k, c->id, MEMBER_HELD))
				return KEYED_FULL;
			key_refresh(t, k);
			return KEYED_HELD;
		}
	}
	else if ((k = key_enter(t, s->topic, c->keyhash)) == NULL)
		return KEYED_FULL;

	e = outbox_entry_enter(c->id, &found);
	if (e == NULL)
	{
		s->full = true;
		key_drop_if_empty(t, k);
		return KEYED_FULL;
	}
	if (found)
	{
		key_drop_if_empty(t, k);
		return KEYED_SKIPPED;
	}
	if (state == 0)
	{
		if (!key_member_add(t, k, c->id, MEMBER_LEASED))
		{
			outbox_entry_remove_unlinked(e);
			key_drop_if_empty(t, k);
			return KEYED_FULL;
		}
		c->member_new = true;
		/* found again: a member added in the middle moves the others */
		if (chunk_at(k->last)->ids[chunk_at(k->last)->n - 1] == c->id)
		{
			chunk = k->last;
			at = chunk_at(k->last)->n - 1;
		}
		else
			(void) key_member_find(k, c->id, &chunk, &at);
	}
	else
	{
		/* in place: nothing moves */
		member_counts(t, k, state, MEMBER_LEASED);
		chunk_at(chunk)->state[at] = MEMBER_LEASED;
	}

	/* every member up to this one is leased by this claim */
	k->run_valid = true;
	k->run_token = *s->token;
	k->run_chunk = chunk;
	k->run_at = (int16) at;
	key_refresh(t, k);

	e->attempt = c->held ? 0 : c->attempts;
	e->source = c->source;
	e->topic = s->topic;
	e->keyed = true;
	e->member_new = c->member_new;
	e->waits_after = false;
	e->keyhash = c->keyhash;
	if (c->source == SRC_RETRY)
		t->nretry_leases++;
	lease_entry_locked(t, e, c, s);
	return KEYED_LEASED;
}

/*
 * Lease the claim's candidates in order, as far as the batch, the topic's
 * share of the lease pool and the room in the hash go; in an ordered topic
 * an event of a key with an earlier event out or waiting is held back
 * behind it instead.  Returns the scan position the claim may take: the
 * highest id it examined, or just below the first event from the log that
 * it could neither lease nor hold back.  Caller holds the shared state lock
 * exclusively.
 */
static int64
lease_candidates_locked(OutboxTopic *t, OutboxScanEnd *s)
{
	int64		pos = s->scanned;
	int			room = outbox_max_leases_per_topic > 0 ?
		outbox_max_leases_per_topic - t->nleases : INT_MAX;
	int64		ocap = PG_INT64_MAX;
	bool		log_stopped = false;	/* the log's candidates stop here */

	if (t->ordered && s->snap != NULL)
	{
		ocap = ordered_cap_locked(t, s->topic, s->snap, s->seen.scan_pos);
		pos = Min(pos, ocap);
	}

	for (int i = 0; i < s->ncand; i++)
	{
		OutboxCandidate *c = &s->cand[i];
		bool		from_log = (c->source == SRC_MAIN && !c->from_ready);
		OutboxEntry *e;

		if (from_log && log_stopped)
			continue;
		if (s->nleased >= s->batch || (from_log && c->id > ocap))
		{
			/* what lies beyond is for a later claim */
			if (from_log)
			{
				pos = Min(pos, c->id - 1);
				s->scanned = Min(s->scanned, pos);
				log_stopped = true;
			}
			else if (c->source == SRC_RETRY)
				s->retry_exhausted = false;
			continue;
		}
		if (room <= 0)
		{
			/*
			 * The topic (or tenant part) holds its share of the lease pool:
			 * the rest waits for its leases to end.
			 */
			s->capped = true;
			return resume_before(s, i, pos);
		}
		if (t->ordered && c->keyed)
		{
			switch (lease_keyed_locked(t, c, s, Min(s->scanned, ocap)))
			{
				case KEYED_LEASED:
					s->nleased++;
					room--;
					break;
				case KEYED_FULL:
					if (!s->full)
						s->keys_full = true;
					if (from_log)
					{
						pos = Min(pos, c->id - 1);
						s->scanned = Min(s->scanned, pos);
						log_stopped = true;
					}
					break;
				case KEYED_HELD:
				case KEYED_SKIPPED:
					break;
			}
			continue;
		}
		e = candidate_entry_locked(t, s->topic, c, &s->full);
		if (s->full)
			return resume_before(s, i, pos);
		if (e == NULL)
			continue;
		lease_entry_locked(t, e, c, s);
		s->nleased++;
		room--;
	}
	return pos;
}

/*
 * Ready entries whose event no longer exists.  Caller holds the shared state
 * lock exclusively.
 */
static void
drop_junk_locked(OutboxTopic *t, const OutboxScanEnd *s)
{
	for (int i = 0; i < s->njunk; i++)
	{
		OutboxEntry *e;

		if (s->junk_held != NULL && s->junk_held[i])
		{
			OutboxKey  *k = key_find(s->topic, s->junk_hashes[i]);

			if (key_member_state(k, s->junk[i]) == MEMBER_HELD)
			{
				key_member_remove(t, k, s->junk[i]);
				key_refresh(t, k);
			}
			continue;
		}
		e = outbox_entry_find(s->junk[i]);
		if (e && e->state == ENTRY_READY && e->topic == s->topic)
		{
			outbox_entry_remove(e);
			t->nready--;
		}
	}
}

/*
 * Move the topic's scan position up to new_pos, where the claim's scan of
 * the log stopped, as far as offers in flight let it; put on the ready list
 * what offers left in the handoff and the scan went past, and mark the
 * offer slots of those in flight in its snapshot.  Caller holds the shared
 * state lock exclusively.
 */
static void
set_scan_pos_locked(OutboxTopic *t, const OutboxScanEnd *s, int64 new_pos)
{
	int64		old_pos = s->seen.scan_pos;
	uint64		epoch = s->seen.scan_epoch;
	int64		scanned = new_pos;

	if (s->snap == NULL || new_pos <= old_pos)
		return;

	/*
	 * The position stays below ids of offers in flight that no slot names
	 * one by one, below ids the handoff had no room for, and where it is if
	 * the topic was told to scan again meanwhile; what this scan handed out
	 * above it is stepped over as in recovery until the position passes it.
	 */
	if (outbox_shared->nany > 0)
		new_pos = Min(new_pos, Max(old_pos, scan_cap(s->snap, old_pos)));
	if (t->handoff_overflow)
		new_pos = Min(new_pos, Max(old_pos, t->handoff_min - 1));
	if (t->scan_epoch != epoch)
		new_pos = old_pos;
	if (scanned > new_pos && scanned > t->recovery_until)
		t->recovery_until = scanned;
	if (new_pos <= old_pos)
		return;

	take_handoff(t, s->topic, s->snap, new_pos, scanned);
	if (t->scan_epoch == epoch)
	{
		t->scan_pos = new_pos;
		outbox_topic_passed(t, new_pos);
		if (t->ninflight > 0)
			mark_passed(s->topic, s->snap, new_pos);
	}
}

/*
 * The last step of a claim, under its topic's scan lock: in one critical
 * section, make the leases (s->cand[i].leased, s->nleased; s->full or
 * s->capped when it stopped short), drop ready entries whose event is gone,
 * set the scan position, remember when the next retry is due, and end the
 * scan.  Offers in flight in the claim's snapshot are marked as passed, and
 * those that committed meanwhile have left their ids in the topic's
 * handoff.
 */
void
outbox_scan_end(OutboxScanEnd *s)
{
	OutboxTopic *t = &outbox_shared->topics[s->topic];
	int64		new_pos;

	s->nleased = 0;
	s->full = false;
	s->capped = false;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	new_pos = lease_candidates_locked(t, s);
	drop_junk_locked(t, s);
	set_scan_pos_locked(t, s, new_pos);
	if (s->retry_exhausted && !s->full && !s->capped &&
		t->next_retry_at == s->seen.next_retry_at)
		t->next_retry_at = s->next_retry;

	/*
	 * Due retries of an ordered topic the scan had not reached: once it
	 * has, the next claim looks at them at once.
	 */
	if (s->retry_above > 0 && t->scan_pos >= s->retry_above)
		t->next_retry_at = 0;
	scan_stop_locked(t);
	LWLockRelease(outbox_shared->lock);
}

/*
 * The claim's leases from outbox.retry (cand[i].leased, source SRC_RETRY),
 * checked against the rows a snapshot taken after they were made finds due
 * (found_ids, with their attempts; claim.c's verify_retry_leases): those
 * found stand, with their attempt count as of now; the others are undone.
 * Returns how many were undone.
 */
int
outbox_retry_leases_verify(int topic, const pg_uuid_t *token,
						   OutboxCandidate *cand, int ncand,
						   const int64 *found_ids, const int32 *found_attempts,
						   int nfound)
{
	OutboxTopic *t = &outbox_shared->topics[topic];
	int			undone = 0;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ncand; i++)
	{
		OutboxCandidate *c = &cand[i];
		OutboxEntry *e;
		int			j;

		if (!c->leased || c->source != SRC_RETRY)
			continue;
		for (j = 0; j < nfound; j++)
			if (found_ids[j] == c->id)
				break;
		e = outbox_entry_find(c->id);
		if (e == NULL || e->state != ENTRY_LEASED || e->topic != topic ||
			memcmp(&e->token, token, sizeof(pg_uuid_t)) != 0)
			continue;			/* cannot happen: the lease is ours */
		if (j < nfound)
		{
			/* it stands; a reap may have counted an attempt meanwhile */
			e->attempt = found_attempts[j] + 1;
			c->attempt = e->attempt;
			continue;
		}
		/* settled or moved to later meanwhile: undo the lease */
		t->nleases--;
		t->nretry_leases--;
		if (e->keyed)
		{
			OutboxKey  *k = key_find(topic, e->keyhash);

			if (k != NULL)
			{
				/*
				 * The later events of its key this claim leased with it go
				 * back too; its member is as the earlier lease's end left
				 * it.
				 */
				key_hand_back_later(t, k, e);
				if (c->member_new)
					key_member_remove(t, k, c->id);
				else
					key_member_set(t, k, c->id, MEMBER_WAITING);
				key_refresh(t, k);
			}
		}
		outbox_entry_settled(t, e);
		c->leased = false;
		undone++;
	}

	/* those handed back with an undone one */
	for (int i = 0; i < ncand; i++)
	{
		OutboxCandidate *c = &cand[i];

		if (!c->leased || !c->keyed)
			continue;
		if (leased_under(c->id, token) == NULL)
		{
			c->leased = false;
			undone++;
		}
	}
	LWLockRelease(outbox_shared->lock);
	return undone;
}

static bool
expire_own_lease(OutboxEntry *e, int topic, void *arg)
{
	if (e->owner == OutboxProcNumber(MyProc) && e->release_on_exit)
	{
		e->expires_at = 0;
		*(bool *) arg = true;
	}
	return true;
}

/*
 * This backend's leases made under outbox.release_on_disconnect expire at
 * once (at the session's exit, claim.c).  Returns whether there were any.
 */
bool
outbox_leases_expire_own(void)
{
	bool		any = false;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	outbox_foreach_lease(expire_own_lease, &any);
	LWLockRelease(outbox_shared->lock);
	return any;
}

/* ----------------------------------------------------------------
 * Transactions (xact.c): offer slots, and what a transaction did, settled
 * at its end.  xact.c records the operations; these apply them.
 * ----------------------------------------------------------------
 */

/*
 * Name a topic in this backend's offer slot, for a transaction (xid) about
 * to draw its first id for it.
 *
 * The topic's shared slot is found or made and named in our offer slot in
 * one critical section, so that it cannot be given up in between.  When
 * no slot can be had, or our offer slot names as many topics as it can,
 * the offer goes on all the same: our slot's lo_any covers it.
 *
 * Returns the topic's shared slot, named at *slot_index of our offer slot,
 * or -1; then *lo_pending says lo_any was set now and waits for the
 * transaction's first id (outbox_offer_slot_set_lo_any).
 */
int
outbox_offer_slot_register(int32 topic_id, int64 incarnation,
						   TransactionId xid, int *slot_index,
						   bool *lo_pending)
{
	OutboxOfferSlot *slot = outbox_my_slot();
	int			topic = -1;

	*slot_index = -1;
	*lo_pending = false;
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	slot->xid = xid;
	slot->dbid = MyDatabaseId;
	if (slot->ntopics < OUTBOX_SLOT_TOPICS)
		topic = outbox_topic_acquire_locked(topic_id, incarnation);
	if (topic >= 0)
	{
		OutboxTopic *t = &outbox_shared->topics[topic];
		int			k = slot->ntopics++;

		slot->topic[k] = topic;
		slot->lo[k] = t->scan_pos + 1;
		slot->passed[k] = 0;
		t->ninflight++;
		*slot_index = k;
	}
	else if (!slot->any)
	{
		slot->any = true;
		pg_atomic_write_u64(&slot->lo_any, (uint64) OUTBOX_LO_PENDING);
		outbox_shared->nany++;
		*lo_pending = true;
	}
	LWLockRelease(outbox_shared->lock);
	return topic;
}

/*
 * The first id this transaction drew since its slot's lo_any was set: a
 * lower bound on every id it draws from now on.  Written without the lock
 * (scan_cap reads it after a barrier).
 */
void
outbox_offer_slot_set_lo_any(int64 event_id)
{
	OutboxOfferSlot *slot = outbox_my_slot();

	pg_write_barrier();
	pg_atomic_write_u64(&slot->lo_any, (uint64) event_id);
}

/*
 * The first id this transaction drew for the topic named at slot_index of
 * its offer slot: a lower bound on its ids there closer than the one set
 * at registration (ordered topics' claims stop below it).
 */
void
outbox_offer_slot_set_lo(int slot_index, int64 event_id)
{
	OutboxOfferSlot *slot = outbox_my_slot();

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (slot_index < slot->ntopics && slot->lo[slot_index] < event_id)
		slot->lo[slot_index] = event_id;
	LWLockRelease(outbox_shared->lock);
}

/* The transaction has ended: our offer slot is empty again. */
void
outbox_offer_slot_reset(void)
{
	OutboxOfferSlot *slot = outbox_my_slot();

	if (slot->ntopics == 0 && !slot->any)
		return;
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	slot->ntopics = 0;
	if (slot->any)
		outbox_shared->nany--;
	slot->any = false;
	pg_atomic_write_u64(&slot->lo_any, 0);
	slot->xid = InvalidTransactionId;
	LWLockRelease(outbox_shared->lock);
}

/* What one settling of a transaction's operations carries from op to op */
typedef struct SettleContext
{
	OutboxTopic *counted_topic; /* whose counters counted_counters are, */
	OutboxCounters *counted_counters;	/* while the lock is held */
	TimestampTz now;			/* when the commit settles (latencies) */
} SettleContext;

static void record_latency(SettleContext *sc, OutboxCounters *c, bool delivery,
						   TimestampTz created_at) pg_attribute_unused();

static void
lower_next_retry(OutboxTopic *t, TimestampTz when)
{
	if (when < t->next_retry_at)
		t->next_retry_at = when;
}

/*
 * The counters of a topic, remembered from one op to the next: the ops of
 * one claim or ack are of one topic.  Valid while the state lock is held
 * (an entry of a topic that holds a slot is never removed meanwhile).
 */
static OutboxCounters *
settle_counters(SettleContext *sc, OutboxTopic *t)
{
	if (sc->counted_topic != t)
	{
		sc->counted_counters = outbox_counters(t->topic_id, t->incarnation);
		sc->counted_topic = t;
	}
	return sc->counted_counters;
}

/*
 * Put the time from an event's creation to now in one of its topic's
 * latency histograms: delivery (to its ack) or wait (to its first lease).
 * Caller holds the shared state lock exclusively.
 */
static void
record_latency(SettleContext *sc, OutboxCounters *c, bool delivery,
			   TimestampTz created_at)
{
	OutboxLatency *l = outbox_counters_latency(c);

	if (l == NULL)
		return;
	if (sc->now == 0)
		sc->now = GetCurrentTimestamp();
	outbox_histogram_add(delivery ? &l->delivery : &l->wait,
						 Max(0, sc->now - created_at));
}

/*
 * A lease this transaction made: it stays at commit; at abort its event is
 * available again at once.  Caller holds the shared state lock exclusively.
 */
static void
settle_claimed(SettleContext *sc, OutboxTopic *t, OutboxEntry *e, bool commit)
{
	if (commit)
	{
#ifndef OUTBOX_NO_METRICS
		OutboxCounters *c = settle_counters(sc, t);

		if (c != NULL)
		{
			c->claimed++;
			if (e->attempt == 1 && e->created_at != 0)
				record_latency(sc, c, false, e->created_at);
		}
#endif
		/* from now on an expiry reaps it */
		e->claim_open = false;
		return;
	}
	if (e->finishing)
		return;
	/* the claim rolled back: the event is available at once */
	t->nleases--;
	if (e->keyed)
	{
		/* first again among its key's events */
		if (e->source == SRC_RETRY)
			t->nretry_leases--;
		key_lease_undone(t, e);
		outbox_entry_remove(e);
	}
	else if (e->source == SRC_RETRY)
	{
		t->nretry_leases--;
		outbox_entry_remove(e);
		t->next_retry_at = 0;
	}
	else
	{
		dlist_delete(&e->node);
		e->state = ENTRY_READY;
		e->attempt--;
		memset(&e->token, 0, sizeof(e->token));
		dlist_push_head(&t->ready, &e->node);
		t->nready++;
	}
	outbox_topic_wake(t);
}

/*
 * A lease this transaction ends (an ack, nack, dead letter or reap): it
 * ends at commit; at abort it is intact.  Caller holds the shared state
 * lock exclusively.
 */
static void
settle_finish(SettleContext *sc, OutboxTopic *t, OutboxEntry *e,
			  const OutboxOp *op, bool commit)
{
	if (!e->finishing)
		return;
	if (!commit)
	{
		e->finishing = false;
		if (e->keyed)
			(void) key_lease_recheck(t, e);
		return;
	}
	t->nleases--;
	if (e->source == SRC_RETRY)
		t->nretry_leases--;
	if (e->keyed)
		key_lease_ended(t, e, op->retry_at != 0);
	outbox_entry_settled(t, e);
	if (op->kind == OP_ACK)
	{
		OutboxCounters *c = settle_counters(sc, t);

		if (c != NULL)
		{
			c->acked++;
#ifndef OUTBOX_NO_METRICS
			if (e->created_at != 0)
				record_latency(sc, c, true, e->created_at);
#endif
		}
	}
	else if (op->retry_at != 0)
		lower_next_retry(t, op->retry_at);
}

/*
 * Settle one operation.  Caller holds the shared state lock exclusively.
 */
static void
settle_op(SettleContext *sc, OutboxOp *op, bool commit)
{
	OutboxEntry *e;
	OutboxTopic *t;

	if (op->done || op->kind == OP_EXTENDED)
		return;
	op->done = true;
	if (op->kind == OP_WAITING)
	{
		if (!commit)
			key_waiting_undo_locked(op->topic, op->event_id, op->keyhash);
		return;
	}

	e = outbox_entry_find(op->event_id);
	if (e == NULL || e->state != ENTRY_LEASED || e->topic != op->topic ||
		memcmp(&e->token, &op->token, sizeof(pg_uuid_t)) != 0)
		return;					/* the lease went another way meanwhile */
	t = &outbox_shared->topics[e->topic];

	switch ((OutboxOpKind) op->kind)
	{
		case OP_CLAIMED:
			settle_claimed(sc, t, e, commit);
			break;

		case OP_ACK:
		case OP_FINISH:
			settle_finish(sc, t, e, op, commit);
			break;

		case OP_EXTENDED:
		case OP_WAITING:
			break;
	}
}

/* Add up the counts of a committing transaction.  Caller holds the lock. */
static void
settle_counts(const OutboxCountOp *counts, int ncounts)
{
	for (int i = 0; i < ncounts; i++)
	{
		const OutboxCountOp *xc = &counts[i];
		OutboxCounters *c;

		if (xc->subid == InvalidSubTransactionId)
			continue;
		c = outbox_counters(xc->topic_id, xc->incarnation);
		if (c == NULL)
			continue;
		switch ((OutboxCount) xc->what)
		{
			case COUNT_NACKED:
				c->nacked += xc->n;
				break;
			case COUNT_EXPIRED:
				c->expired += xc->n;
				break;
			case COUNT_DEAD_LETTERED:
				c->dead_lettered += xc->n;
				break;
			case COUNT_REDRIVEN:
				c->redriven += xc->n;
				break;
		}
	}
}

/*
 * Settle a transaction's operations at its end (xact.c), and at commit add
 * up its counts.
 */
void
outbox_ops_settle(OutboxOp *ops, int nops, bool commit,
				  const OutboxCountOp *counts, int ncounts)
{
	SettleContext sc;

	memset(&sc, 0, sizeof(sc));
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);

	/*
	 * At commit in order; at abort in reverse, so that the undo of a settle
	 * (an ack of a lease this transaction made) comes before the undo of the
	 * claim that made the lease.
	 */
	for (int k = 0; k < nops; k++)
		settle_op(&sc, &ops[commit ? k : nops - 1 - k], commit);
	if (commit)
		settle_counts(counts, ncounts);
	LWLockRelease(outbox_shared->lock);
}

/*
 * A subtransaction rolled back: undo, in reverse as at abort of the whole
 * transaction, those of its operations not undone yet.  The lock is taken
 * only if there is one.
 */
void
outbox_ops_undo(OutboxOp *ops, int nops, SubTransactionId subid)
{
	SettleContext sc;
	bool		locked = false;

	memset(&sc, 0, sizeof(sc));
	for (int i = nops - 1; i >= 0; i--)
	{
		if (ops[i].subid != subid || ops[i].done)
			continue;
		if (!locked)
		{
			LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
			locked = true;
		}
		settle_op(&sc, &ops[i], false);
		ops[i].done = true;
	}
	if (locked)
		LWLockRelease(outbox_shared->lock);
}

/*
 * Undo the operations that end the lease of event_id (OP_FINISH): the lease
 * stays as it was, whatever the transaction does.
 */
void
outbox_ops_keep_lease(OutboxOp *ops, int nops, int64 event_id)
{
	SettleContext sc;

	memset(&sc, 0, sizeof(sc));
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nops; i++)
	{
		if (ops[i].event_id == event_id && ops[i].kind == OP_FINISH &&
			!ops[i].done)
			settle_op(&sc, &ops[i], false);
	}
	LWLockRelease(outbox_shared->lock);
}

/*
 * Leave a committed id for the claim that is reading the topic's log; when
 * the handoff is full, only the least such id is kept, and the claim stops
 * its scan position below it.  Caller holds the shared state lock
 * exclusively.
 */
static void
handoff(OutboxTopic *t, TransactionId xid, int64 id)
{
	if (t->nhandoff < OUTBOX_HANDOFF)
	{
		t->handoff[t->nhandoff].xid = xid;
		t->handoff[t->nhandoff].id = id;
		t->nhandoff++;
		return;
	}
	if (!t->handoff_overflow || id < t->handoff_min)
		t->handoff_min = id;
	t->handoff_overflow = true;
}

/*
 * Offers not named in our slot: counted, and left in the handoff of a claim
 * reading the topic now.
 */
static void
offers_settle_unnamed(const OutboxTopicChange *xt, uint64 count)
{
	OutboxOfferSlot *slot = outbox_my_slot();
	OutboxTopic *t = NULL;
	OutboxCounters *c;
	int			topic;

	if (count == 0)
		return;
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	c = outbox_counters(xt->topic_id, xt->incarnation);
	if (c != NULL)
		c->offered += count;
	topic = outbox_topic_find_locked(xt->topic_id);
	if (topic >= 0 && outbox_topic_matches(topic, xt->topic_id, xt->incarnation))
	{
		t = &outbox_shared->topics[topic];
		if (xt->retry_at != 0)
			lower_next_retry(t, xt->retry_at);

		/*
		 * A claim reading the topic now checks lo_any only when it sets its
		 * position, and by then we are gone: our ids are left for it like
		 * those of an offer its slot names.
		 */
		if (t->scanning)
		{
			for (int i = 0; i < xt->nids; i++)
				if (xt->subids[i] != InvalidSubTransactionId && !xt->delayed[i])
					handoff(t, slot->xid, xt->ids[i]);
		}
	}
	LWLockRelease(outbox_shared->lock);
	if (t != NULL)
		outbox_topic_wake(t);
}

/*
 * The committed offers of a topic our slot names: those a scan went past go
 * on the ready list; those above, while a claim reads the log, in its
 * handoff.  Caller holds the shared state lock exclusively.
 */
static void
offers_ready_locked(OutboxTopic *t, const OutboxTopicChange *xt,
					const OutboxOfferSlot *slot)
{
	int64		passed = slot->passed[xt->slot_index];

	for (int i = 0; i < xt->nids; i++)
	{
		if (xt->subids[i] == InvalidSubTransactionId)
			continue;
		if (xt->delayed[i])
			continue;
		if (!t->initialized || xt->ids[i] > passed)
		{
			if (t->scanning)
				handoff(t, slot->xid, xt->ids[i]);
			continue;
		}
		if (!outbox_entry_ready(xt->topic, xt->ids[i]))
		{
			/* no room: scan again from the watermark instead */
			outbox_topic_rescan(t);
		}
	}
}

/* Offers to a topic our slot names; it no longer names it. */
static void
offers_settle_named(const OutboxTopicChange *xt, bool commit, uint64 count)
{
	OutboxOfferSlot *slot = outbox_my_slot();
	OutboxTopic *t = &outbox_shared->topics[xt->topic];
	OutboxCounters *c;
	bool		live;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);

	live = outbox_topic_matches(xt->topic, xt->topic_id, xt->incarnation);

	if (commit && live)
	{
		offers_ready_locked(t, xt, slot);
		c = outbox_counters(xt->topic_id, xt->incarnation);
		if (c != NULL)
			c->offered += count;
		if (xt->retry_at != 0)
			lower_next_retry(t, xt->retry_at);
	}

	slot->topic[xt->slot_index] = -1;
	t->ninflight--;
	if (t->ninflight == 0 && t->in_use && t->incarnation == 0)
		outbox_topic_release_locked(xt->topic);	/* dropped while we offered */

	LWLockRelease(outbox_shared->lock);
	if (commit && live && count > 0)
		outbox_topic_wake(t);
}

/*
 * The offer side of commit: hand the ids a scan went past to the ready
 * list, count the offers, and wake waiting claims.  A claim that is
 * reading the log now, with a snapshot that may not see our commit, marks
 * nothing before it sets the scan position: the ids above what earlier
 * scans passed are left in the topic's handoff for it, and it puts those
 * it went past on the ready list itself.  Offers not named in our slot
 * were never passed by a scan (lo_any held the scans below them): they are
 * only counted.
 */
void
outbox_offers_settle(const OutboxTopicChange *xt, bool commit)
{
	uint64		count = 0;

	if (commit)
	{
		for (int i = 0; i < xt->nids; i++)
			if (xt->subids[i] != InvalidSubTransactionId)
				count++;
	}

	if (xt->slot_index < 0)
		offers_settle_unnamed(xt, count);
	else
		offers_settle_named(xt, commit, count);
}

/*
 * At commit: a dropped topic's shared state goes; a new watermark or retry
 * time reaches the topic's slot, if it has one.
 */
void
outbox_topic_settle(const OutboxTopicChange *xt)
{
	OutboxTopic *t;
	int			topic;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	topic = outbox_topic_find_locked(xt->topic_id);
	LWLockRelease(outbox_shared->lock);

	if (topic < 0)
	{
		if (xt->forget)
		{
			LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
			outbox_counters_forget(MyDatabaseId, xt->topic_id);
			LWLockRelease(outbox_shared->lock);
		}
		return;
	}

	t = &outbox_shared->topics[topic];
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (t->in_use && t->topic_id == xt->topic_id && t->dbid == MyDatabaseId &&
		(xt->incarnation == 0 || t->incarnation == xt->incarnation))
	{
		if (xt->forget)
			outbox_topic_forget(topic);
		else
		{
			if (xt->watermark > t->watermark)
				t->watermark = xt->watermark;
			if (xt->retry_at != 0 && xt->nids == 0)
				lower_next_retry(t, xt->retry_at);
		}
	}
	if (xt->forget)
		outbox_counters_forget(MyDatabaseId, xt->topic_id);
	LWLockRelease(outbox_shared->lock);
	outbox_topic_wake(t);
}

/*
 * The extension was dropped from database dbid, or the database itself, and
 * the drop commits: the shared state of every topic of it goes (leases,
 * events on ready lists, keys and their held-back events), and their
 * counters.
 */
void
outbox_forget_database_state(Oid dbid)
{
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];

		LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
		if (t->in_use && t->dbid == dbid)
			outbox_topic_forget(i);
		LWLockRelease(outbox_shared->lock);
	}
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	outbox_counters_forget(dbid, 0);
	LWLockRelease(outbox_shared->lock);
}
