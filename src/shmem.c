/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: per-topic state, the hash of leases and
 *	  ready events, and the per-backend offer slots.  Present only when the
 *	  library is in shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

OutboxShared *outbox_shared = NULL;
HTAB	   *outbox_entries = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#define OUTBOX_TRANCHE "outbox"

static Size
outbox_fixed_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(OutboxShared));
	size = add_size(size, mul_size(outbox_max_topics, sizeof(OutboxTopic)));
	size = add_size(size, mul_size(MaxBackends, sizeof(OutboxOfferSlot)));
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
	/* one lock for the shared state, one per topic for its scan */
	RequestNamedLWLockTranche(OUTBOX_TRANCHE, outbox_max_topics + 1);
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
		LWLockPadded *locks = GetNamedLWLockTranche(OUTBOX_TRANCHE);
		char	   *p = (char *) outbox_shared;

		memset(outbox_shared, 0, outbox_fixed_size());
		outbox_shared->lock = &locks[0].lock;
		outbox_shared->max_topics = outbox_max_topics;
		outbox_shared->nslots = MaxBackends;
		p += MAXALIGN(sizeof(OutboxShared));
		outbox_shared->topics = (OutboxTopic *) p;
		p += outbox_max_topics * sizeof(OutboxTopic);
		outbox_shared->slots = (OutboxOfferSlot *) p;

		for (int i = 0; i < outbox_max_topics; i++)
		{
			OutboxTopic *t = &outbox_shared->topics[i];

			t->scan_lock = &locks[i + 1].lock;
			dlist_init(&t->leases);
			dlist_init(&t->ready);
			dlist_init(&t->settled);
			ConditionVariableInit(&t->cv);
		}
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(OutboxEntryKey);
	info.entrysize = sizeof(OutboxEntry);
	outbox_entries = ShmemInitHash("outbox leases",
								   outbox_max_leases, outbox_max_leases,
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

/*
 * Find the shared slot of a topic of the current database.  Caller holds the
 * shared state lock.
 */
static int
topic_find_locked(int32 topic_id)
{
	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		OutboxTopic *t = &outbox_shared->topics[i];

		if (t->in_use && t->dbid == MyDatabaseId && t->topic_id == topic_id)
			return i;
	}
	return -1;
}

int
outbox_topic_find(int32 topic_id)
{
	int			idx;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	idx = topic_find_locked(topic_id);
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
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &t->leases)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		dlist_delete(&e->node);
		hash_search(outbox_entries, &e->key, HASH_REMOVE, NULL);
	}
	dlist_foreach_modify(it, &t->ready)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		dlist_delete(&e->node);
		hash_search(outbox_entries, &e->key, HASH_REMOVE, NULL);
	}
	dlist_foreach_modify(it, &t->settled)
	{
		OutboxEntry *e = dlist_container(OutboxEntry, node, it.cur);

		dlist_delete(&e->node);
		hash_search(outbox_entries, &e->key, HASH_REMOVE, NULL);
	}
	dlist_init(&t->leases);
	dlist_init(&t->ready);
	dlist_init(&t->settled);
	t->nleases = 0;
	t->nready = 0;
	t->nsettled = 0;
	t->nretry_leases = 0;
	t->initialized = false;
	t->scan_pos = 0;
	t->recovery_until = 0;
	t->scan_epoch++;
	t->watermark = 0;
	t->next_retry_at = 0;
	t->offered = 0;
	t->acked = 0;
}

/*
 * Find or make the shared slot of a topic of the current database.  A slot
 * left by an earlier topic with the same id (the extension was dropped and
 * created again) is reset.
 */
int
outbox_topic_acquire(int32 topic_id, int64 incarnation)
{
	int			idx;
	int			free_idx = -1;

	LWLockAcquire(outbox_shared->lock, LW_SHARED);
	idx = topic_find_locked(topic_id);
	if (idx >= 0 && outbox_shared->topics[idx].incarnation == incarnation)
	{
		LWLockRelease(outbox_shared->lock);
		return idx;
	}
	LWLockRelease(outbox_shared->lock);

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	idx = topic_find_locked(topic_id);
	if (idx >= 0)
	{
		OutboxTopic *t = &outbox_shared->topics[idx];

		if (t->incarnation != incarnation)
		{
			topic_clear_locked(t);
			t->incarnation = incarnation;
		}
		LWLockRelease(outbox_shared->lock);
		return idx;
	}

	for (int i = 0; i < outbox_shared->max_topics; i++)
	{
		if (!outbox_shared->topics[i].in_use)
		{
			free_idx = i;
			break;
		}
	}
	if (free_idx < 0)
	{
		LWLockRelease(outbox_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many outbox topics in use"),
				 errdetail("All %d shared topic slots are taken.", outbox_max_topics),
				 errhint("Raise outbox.max_topics and restart the server.")));
	}
	else
	{
		OutboxTopic *t = &outbox_shared->topics[free_idx];

		topic_clear_locked(t);
		t->dbid = MyDatabaseId;
		t->topic_id = topic_id;
		t->incarnation = incarnation;
		t->ninflight = 0;
		t->in_use = true;
	}
	LWLockRelease(outbox_shared->lock);
	return free_idx;
}

/*
 * Release a dropped topic's slot.  Caller holds the topic's scan lock and
 * the shared state lock exclusively.
 */
void
outbox_topic_forget(int topic)
{
	OutboxTopic *t = &outbox_shared->topics[topic];

	topic_clear_locked(t);
	if (t->ninflight == 0)
		t->in_use = false;
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
	if (!t->initialized)
		return;
	if (t->scan_pos > t->recovery_until)
		t->recovery_until = t->scan_pos;
	t->scan_pos = t->watermark;
	t->scan_epoch++;
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
	Assert(MyBackendId >= 1 && MyBackendId <= outbox_shared->nslots);
	return &outbox_shared->slots[MyBackendId - 1];
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
