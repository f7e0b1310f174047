/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: per-topic state, the hash of leases and
 *	  ready events, and the per-backend offer slots.  Present only when the
 *	  library is in shared_preload_libraries.
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
 *	  Locking: one LWLock, the state lock (tranche "outbox_state"),
 *	  protects everything here, and is held only for short sections that
 *	  run no SQL and wait for nothing.  Claims of one topic take turns by a
 *	  heavyweight lock (claim.c); a topic whose claim is reading the log
 *	  ("scanning") keeps its slot.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "shmem.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

OutboxShared *outbox_shared = NULL;
HTAB	   *outbox_entries = NULL;
static HTAB *topic_index = NULL;	/* (dbid, topic_id) -> slot */
static HTAB *topic_counters = NULL; /* OutboxCounters */

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

static Size
outbox_fixed_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(OutboxShared));
	size = add_size(size, mul_size(outbox_max_topics, sizeof(OutboxTopic)));
	size = add_size(size, mul_size(MaxBackends, sizeof(OutboxOfferSlot)));
	size = add_size(size, mul_size(outbox_metrics_topics, sizeof(OutboxLatency)));
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

		for (int i = 0; i < outbox_max_topics; i++)
		{
			OutboxTopic *t = &outbox_shared->topics[i];

			dlist_init(&t->leases);
			dlist_init(&t->ready);
			dlist_init(&t->settled);
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
void
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
int
outbox_topic_find_locked(int32 topic_id)
{
	OutboxCountersKey key;
	TopicIndexEntry *ie;

	index_key(&key, MyDatabaseId, topic_id);
	ie = (TopicIndexEntry *) hash_search(topic_index, &key, HASH_FIND, NULL);
	return ie ? ie->topic : -1;
}

int
outbox_topic_find(int32 topic_id)
{
	int			idx;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	idx = outbox_topic_find_locked(topic_id);
	LWLockRelease(outbox_shared->lock);
	return idx;
}

bool
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
void
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
			(k < n && t->nready > 0))
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
int
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
static int	parked_collect(OutboxParked *out, int max);

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
OutboxCounters *
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
OutboxLatency *
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
void
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
int
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
 */
int
outbox_lease_mark_settling(const int64 *ids, int n, const pg_uuid_t *token,
						   OutboxSettling *out)
{
	int			nout = 0;

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		OutboxEntry *e = outbox_entry_find(ids[i]);

		if (!lease_is(e, token))
			continue;
		e->finishing = true;
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
							int64 **marks, OutboxParked **parked, int *nparked)
{
	int			n = 0;

	*incarnations = palloc(sizeof(int64) * outbox_shared->max_topics);
	*topic_ids = palloc(sizeof(int32) * outbox_shared->max_topics);
	*marks = palloc(sizeof(int64) * outbox_shared->max_topics);
	*parked = palloc(sizeof(OutboxParked) * OUTBOX_PARKED);

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

/* Forget the counters of every topic of a database being dropped */
void
outbox_counters_forget_database(Oid dbid)
{
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	outbox_counters_forget(dbid, 0);
	LWLockRelease(outbox_shared->lock);
}

/*
 * Forget the counters of a dropped topic, or with topic_id 0 of every topic
 * of a database.  Caller holds the shared state lock exclusively.
 */
void
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
int
outbox_counters_count(void)
{
	return (int) hash_get_num_entries(topic_counters);
}

/*
 * Copy up to max counters of the current database's topics.  Caller holds
 * the shared state lock.
 */
int
outbox_counters_copy(OutboxCounters *out, int max)
{
	return outbox_counters_copy_latency(out, max, NULL, 0);
}

/*
 * Copy up to max parked positions of the current database's topics.
 * Caller holds the shared state lock.
 */
static int
parked_collect(OutboxParked *out, int max)
{
	int			n = 0;

	for (int i = 0; i < OUTBOX_PARKED && n < max; i++)
	{
		OutboxParked *p = &outbox_shared->parked[i];

		if (p->dbid == MyDatabaseId)
			out[n++] = *p;
	}
	return n;
}

/*
 * Parked positions are durable now: their entries (those that still say
 * the same) can go.
 */
void
outbox_parked_done(const OutboxParked *done, int n)
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
void
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
void
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
void
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
void
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

OutboxEntry *
outbox_entry_find(int64 event_id)
{
	OutboxEntryKey key;

	key.dbid = MyDatabaseId;
	key.pad = 0;
	key.event_id = event_id;
	return (OutboxEntry *) hash_search(outbox_entries, &key, HASH_FIND, NULL);
}

/* Returns NULL when the hash is full. */
OutboxEntry *
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
bool
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
	dlist_push_tail(&t->ready, &e->node);
	t->nready++;
	return true;
}

/* Unlink an entry from its topic list and the hash; counts are the caller's. */
void
outbox_entry_remove(OutboxEntry *entry)
{
	OutboxEntryKey key = entry->key;

	dlist_delete(&entry->node);
	hash_search(outbox_entries, &key, HASH_REMOVE, NULL);
}

OutboxOfferSlot *
outbox_my_slot(void)
{
	Assert(OutboxMyBackendIndex() >= 0 && OutboxMyBackendIndex() < outbox_shared->nslots);
	return &outbox_shared->slots[OutboxMyBackendIndex()];
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
void
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
