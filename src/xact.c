/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  What the current transaction did to the outbox's shared state, and the
 *	  transaction callbacks that make it take effect at commit or undo it at
 *	  abort:
 *
 *	  - a lease made by a claim stays at commit; at abort its event is
 *		available again at once;
 *	  - a lease ends when the ack, nack, dead letter or reap that ended it
 *		commits; at abort the lease is intact;
 *	  - an offer announced in the backend's offer slot is withdrawn at the
 *		end; at commit, ids a claim's scan went past while the transaction
 *		was in flight go on the topic's ready list, and waiting claims wake.
 *
 *	  Subtransactions are followed: what a rolled-back subtransaction did is
 *	  undone at once.  PREPARE TRANSACTION is refused: the shared state
 *	  cannot follow a transaction to another backend.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "databases.h"
#include "shmem.h"
#include "xact.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

typedef struct XactOp
{
	int64		event_id;
	int			topic;
	uint8		kind;			/* OutboxOpKind */
	bool		done;			/* undone by a subtransaction abort */
	SubTransactionId subid;
	pg_uuid_t	token;
	TimestampTz retry_at;		/* OP_FINISH: the event's retry row time */
} XactOp;

/* Per topic this transaction touched */
typedef struct XactTopic
{
	int32		topic_id;
	int64		incarnation;	/* 0: whatever the topic's is */
	bool		registered;		/* its offers are announced */
	int			topic;			/* the slot our offer slot names, or -1 */
	int			slot_index;		/* in our offer slot, or -1 */
	int64	   *ids;			/* offered ids */
	SubTransactionId *subids;	/* InvalidSubTransactionId: rolled back */
	bool	   *delayed;
	int			nids;
	int			maxids;
	bool		forget;
	SubTransactionId forget_subid;
	int64		watermark;
	TimestampTz retry_at;		/* earliest new outbox.retry time, or 0 */
} XactTopic;

/* A count this transaction makes at commit (metrics) */
typedef struct XactCount
{
	int32		topic_id;
	int64		incarnation;
	uint8		what;			/* OutboxCount */
	int32		n;
	SubTransactionId subid;		/* InvalidSubTransactionId: rolled back */
} XactCount;

typedef struct XactState
{
	bool		active;
	XactOp	   *ops;
	int			nops;
	int			maxops;
	XactTopic  *topics;
	int			ntopics;
	int			maxtopics;
	HTAB	   *topic_hash;		/* topic_id -> index in topics, when many */
	int			scan_topic;		/* a claim of ours reads this topic's log, */
	SubTransactionId scan_subid;	/* in this subtransaction */
	bool		lo_pending;		/* our slot's lo_any waits for an id */
	bool		forget_database;	/* the extension is being dropped */
	bool		announce_database;	/* the extension is being created */
	XactCount  *counts;
	int			ncounts;
	int			maxcounts;
	TimestampTz now;			/* when the commit settles (latencies) */
	OutboxTopic *counted_topic; /* whose counters counted_counters are, */
	OutboxCounters *counted_counters;	/* while the lock is held */
} XactState;

static XactState xs;

static void settle_op(XactOp *op, bool commit);
static void record_latency(OutboxCounters *c, bool delivery,
						   TimestampTz created_at) pg_attribute_unused();
static OutboxCounters *topic_counters(OutboxTopic *t);

typedef struct XactTopicHashEntry
{
	int32		topic_id;
	int			index;
} XactTopicHashEntry;

static void
xact_activate(void)
{
	if (xs.active)
		return;
	memset(&xs, 0, sizeof(xs));
	xs.maxops = 64;
	xs.ops = MemoryContextAlloc(TopTransactionContext,
								xs.maxops * sizeof(XactOp));
	xs.maxtopics = 8;
	xs.topics = MemoryContextAllocZero(TopTransactionContext,
									   xs.maxtopics * sizeof(XactTopic));
	xs.scan_topic = -1;
	xs.active = true;
}

static XactTopic *
xact_topic_known(XactTopic *xt, int64 incarnation)
{
	if (xt->incarnation == 0)
		xt->incarnation = incarnation;
	return xt;
}

/*
 * This transaction's record of a topic, made on first use.  A transaction
 * may touch any number of topics: past a few, a hash finds them.
 */
static XactTopic *
xact_topic(int32 topic_id, int64 incarnation)
{
	XactTopic  *xt;
	XactTopicHashEntry *he = NULL;
	bool		found;

	xact_activate();
	if (xs.topic_hash != NULL)
	{
		he = hash_search(xs.topic_hash, &topic_id, HASH_ENTER, &found);
		if (found)
			return xact_topic_known(&xs.topics[he->index], incarnation);
	}
	else
	{
		for (int i = 0; i < xs.ntopics; i++)
		{
			if (xs.topics[i].topic_id == topic_id)
				return xact_topic_known(&xs.topics[i], incarnation);
		}
	}
	if (xs.ntopics == xs.maxtopics)
	{
		xs.topics = repalloc(xs.topics, 2 * xs.maxtopics * sizeof(XactTopic));
		memset(&xs.topics[xs.maxtopics], 0, xs.maxtopics * sizeof(XactTopic));
		xs.maxtopics *= 2;
	}
	xt = &xs.topics[xs.ntopics];
	xt->topic_id = topic_id;
	xt->incarnation = incarnation;
	xt->topic = -1;
	xt->slot_index = -1;
	if (he != NULL)
		he->index = xs.ntopics;
	xs.ntopics++;

	if (xs.topic_hash == NULL && xs.ntopics > 16)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(XactTopicHashEntry);
		ctl.hcxt = TopTransactionContext;
		xs.topic_hash = hash_create("outbox transaction topics", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		for (int i = 0; i < xs.ntopics; i++)
		{
			he = hash_search(xs.topic_hash, &xs.topics[i].topic_id, HASH_ENTER,
							 &found);
			he->index = i;
		}
	}
	return xt;
}

/* Make room for n more operations, so recording them cannot fail later. */
void
outbox_xact_reserve_ops(int n)
{
	xact_activate();
	if (xs.nops + n > xs.maxops)
	{
		while (xs.nops + n > xs.maxops)
			xs.maxops *= 2;
		xs.ops = repalloc(xs.ops, xs.maxops * sizeof(XactOp));
	}
}

/*
 * Record an operation on an entry.  Room must have been reserved; the
 * entry's current token is taken, so the caller holds the state lock.
 */
void
outbox_xact_add_op(OutboxOpKind kind, int64 event_id, int topic,
				   TimestampTz retry_at)
{
	OutboxEntry *e = outbox_entry_find(event_id);
	pg_uuid_t	token;

	if (e)
		token = e->token;
	else
		memset(&token, 0, sizeof(token));
	outbox_xact_add_lease_op(kind, event_id, topic, retry_at, &token);
}

/*
 * The same for a lease whose token the caller knows; needs no lock.  Must
 * not fail: room was reserved.
 */
void
outbox_xact_add_lease_op(OutboxOpKind kind, int64 event_id, int topic,
						 TimestampTz retry_at, const pg_uuid_t *token)
{
	XactOp	   *op;

	Assert(xs.active && xs.nops < xs.maxops);
	op = &xs.ops[xs.nops++];
	op->event_id = event_id;
	op->topic = topic;
	op->kind = kind;
	op->done = false;
	op->subid = GetCurrentSubTransactionId();
	op->retry_at = retry_at;
	op->token = *token;
}

/*
 * Announce, before drawing its first id, that this transaction offers to a
 * topic.  From here on a claim whose scan passes ids this transaction may
 * hold, while it is still in flight, marks the slot, or (for offers not
 * named in the slot one by one) holds its scan position below them.
 *
 * The topic's shared slot is found or made and named in our offer slot in
 * one critical section, so that it cannot be given up in between.  When
 * no slot can be had, or our offer slot names as many topics as it can,
 * the offer goes on all the same: our slot's lo_any covers it.
 */
void
outbox_xact_offer_register(int32 topic_id, int64 incarnation)
{
	XactTopic  *xt = xact_topic(topic_id, incarnation);
	OutboxOfferSlot *slot;
	TransactionId xid;
	int			topic;

	if (xt->registered)
		return;

	/* Scans judge the slot by this xid, so it must exist first. */
	xid = GetTopTransactionId();
	slot = outbox_my_slot();

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	slot->xid = xid;
	slot->dbid = MyDatabaseId;
	topic = -1;
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
		xt->topic = topic;
		xt->slot_index = k;
	}
	else if (!slot->any)
	{
		slot->any = true;
		pg_atomic_write_u64(&slot->lo_any, (uint64) OUTBOX_LO_PENDING);
		outbox_shared->nany++;
		xs.lo_pending = true;
	}
	LWLockRelease(outbox_shared->lock);

	xt->registered = true;
}

void
outbox_xact_offered(int32 topic_id, int64 incarnation, int64 event_id,
					bool delayed, TimestampTz available_at)
{
	XactTopic  *xt = xact_topic(topic_id, incarnation);

	/*
	 * The first id drawn since lo_any was set is a lower bound on every id
	 * this transaction draws from now on: the sequence only goes up.
	 */
	if (xs.lo_pending)
	{
		OutboxOfferSlot *slot = outbox_my_slot();

		pg_write_barrier();
		pg_atomic_write_u64(&slot->lo_any, (uint64) event_id);
		xs.lo_pending = false;
	}

	if (xt->nids == xt->maxids)
	{
		int			newmax = xt->maxids ? 2 * xt->maxids : 16;

		if (xt->ids == NULL)
		{
			xt->ids = MemoryContextAlloc(TopTransactionContext, newmax * sizeof(int64));
			xt->subids = MemoryContextAlloc(TopTransactionContext, newmax * sizeof(SubTransactionId));
			xt->delayed = MemoryContextAlloc(TopTransactionContext, newmax * sizeof(bool));
		}
		else
		{
			xt->ids = repalloc(xt->ids, newmax * sizeof(int64));
			xt->subids = repalloc(xt->subids, newmax * sizeof(SubTransactionId));
			xt->delayed = repalloc(xt->delayed, newmax * sizeof(bool));
		}
		xt->maxids = newmax;
	}
	xt->ids[xt->nids] = event_id;
	xt->subids[xt->nids] = GetCurrentSubTransactionId();
	xt->delayed[xt->nids] = delayed;
	xt->nids++;
	if (delayed && (xt->retry_at == 0 || available_at < xt->retry_at))
		xt->retry_at = available_at;
}

void
outbox_xact_forget_topic(int32 topic_id, int64 incarnation)
{
	XactTopic  *xt = xact_topic(topic_id, incarnation);

	xt->forget = true;
	xt->forget_subid = GetCurrentSubTransactionId();
}

/*
 * The reap of an expired lease failed: the lease stays as it was, whatever
 * this transaction does (reap.c).
 */
void
outbox_xact_keep_lease(int64 event_id)
{
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < xs.nops; i++)
	{
		if (xs.ops[i].event_id == event_id && xs.ops[i].kind == OP_FINISH &&
			!xs.ops[i].done)
			settle_op(&xs.ops[i], false);
	}
	LWLockRelease(outbox_shared->lock);
}

/*
 * A claim of ours has set the topic's "scanning" (claim.c).  Should the
 * claim fail before it clears it, the abort of its (sub)transaction does.
 */
void
outbox_xact_scan_begin(int topic)
{
	xact_activate();
	xs.scan_topic = topic;
	xs.scan_subid = GetCurrentSubTransactionId();
}

void
outbox_xact_scan_end(void)
{
	xs.scan_topic = -1;
}

/* Clear a "scanning" of ours left by a claim that failed. */
static void
scan_abandoned(void)
{
	OutboxTopic *t = &outbox_shared->topics[xs.scan_topic];

	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
	if (t->scanning && t->scanner == MyProcPid)
	{
		t->scanning = false;
		t->nhandoff = 0;
		t->handoff_overflow = false;
	}
	LWLockRelease(outbox_shared->lock);
	xs.scan_topic = -1;
}

void
outbox_xact_forget_database(void)
{
	xact_activate();
	xs.forget_database = true;
}

void
outbox_xact_announce_database(void)
{
	xact_activate();
	xs.announce_database = true;
}

void
outbox_xact_set_watermark(int32 topic_id, int64 incarnation, int64 watermark)
{
	XactTopic  *xt = xact_topic(topic_id, incarnation);

	if (watermark > xt->watermark)
		xt->watermark = watermark;
}

void
outbox_xact_retry_changed(int32 topic_id, TimestampTz when)
{
	XactTopic  *xt = xact_topic(topic_id, 0);

	if (xt->retry_at == 0 || when < xt->retry_at)
		xt->retry_at = when;
}

static void
lower_next_retry(OutboxTopic *t, TimestampTz when)
{
	if (when < t->next_retry_at)
		t->next_retry_at = when;
}

/*
 * Settle one operation.  Caller holds the shared state lock exclusively.
 */
static void
settle_op(XactOp *op, bool commit)
{
	OutboxEntry *e;
	OutboxTopic *t;

	if (op->done || op->kind == OP_EXTENDED)
		return;
	op->done = true;

	e = outbox_entry_find(op->event_id);
	if (e == NULL || e->state != ENTRY_LEASED || e->topic != op->topic ||
		memcmp(&e->token, &op->token, sizeof(pg_uuid_t)) != 0)
		return;					/* the lease went another way meanwhile */
	t = &outbox_shared->topics[e->topic];

	switch ((OutboxOpKind) op->kind)
	{
		case OP_CLAIMED:
			if (commit)
			{
#ifndef OUTBOX_NO_METRICS
				OutboxCounters *c = topic_counters(t);

				if (c != NULL)
				{
					c->claimed++;
					if (e->attempt == 1 && e->created_at != 0)
						record_latency(c, false, e->created_at);
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
			if (e->source == SRC_RETRY)
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
			break;

		case OP_ACK:
		case OP_FINISH:
			if (!e->finishing)
				return;
			if (!commit)
			{
				e->finishing = false;
				return;
			}
			t->nleases--;
			if (e->source == SRC_RETRY)
				t->nretry_leases--;
			outbox_entry_settled(t, e);
			if (op->kind == OP_ACK)
			{
				OutboxCounters *c = topic_counters(t);

				if (c != NULL)
				{
					c->acked++;
#ifndef OUTBOX_NO_METRICS
					if (e->created_at != 0)
						record_latency(c, true, e->created_at);
#endif
				}
			}
			else if (op->retry_at != 0)
				lower_next_retry(t, op->retry_at);
			break;

		case OP_EXTENDED:
			break;
	}
}

/*
 * The counters of a topic, remembered from one op to the next: the ops of
 * one claim or ack are of one topic.  Valid while the state lock is held
 * (an entry of a topic that holds a slot is never removed meanwhile).
 */
static OutboxCounters *
topic_counters(OutboxTopic *t)
{
	if (xs.counted_topic != t)
	{
		xs.counted_counters = outbox_counters(t->topic_id, t->incarnation);
		xs.counted_topic = t;
	}
	return xs.counted_counters;
}

/*
 * Put the time from an event's creation to now in one of its topic's
 * latency histograms: delivery (to its ack) or wait (to its first lease).
 * Caller holds the shared state lock exclusively.
 */
static void
record_latency(OutboxCounters *c, bool delivery, TimestampTz created_at)
{
	OutboxLatency *l = outbox_counters_latency(c);

	if (l == NULL)
		return;
	if (xs.now == 0)
		xs.now = GetCurrentTimestamp();
	outbox_histogram_add(delivery ? &l->delivery : &l->wait,
						 Max(0, xs.now - created_at));
}

/*
 * Count, at commit, n of what for a topic (metrics): a nack, an expired
 * lease, a dead letter or a redrive.
 */
void
outbox_xact_count(int32 topic_id, int64 incarnation, OutboxCount what, int n)
{
	XactCount  *xc;

#ifdef OUTBOX_NO_METRICS
	return;
#endif
	if (outbox_shared == NULL || n <= 0)
		return;
	xact_activate();
	if (xs.ncounts >= xs.maxcounts)
	{
		int			newmax = Max(16, xs.maxcounts * 2);

		if (xs.counts == NULL)
			xs.counts = MemoryContextAlloc(TopTransactionContext,
										   newmax * sizeof(XactCount));
		else
			xs.counts = repalloc(xs.counts, newmax * sizeof(XactCount));
		xs.maxcounts = newmax;
	}
	xc = &xs.counts[xs.ncounts++];
	xc->topic_id = topic_id;
	xc->incarnation = incarnation;
	xc->what = (uint8) what;
	xc->n = n;
	xc->subid = GetCurrentSubTransactionId();
}

/* Add up the counts of a committing transaction.  Caller holds the lock. */
static void
settle_counts(void)
{
	for (int i = 0; i < xs.ncounts; i++)
	{
		XactCount  *xc = &xs.counts[i];
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
 * The offer side of commit: hand the ids a scan went past to the ready
 * list, count the offers, and wake waiting claims.  A claim that is
 * reading the log now, with a snapshot that may not see our commit, marks
 * nothing before it sets the scan position: the ids above what earlier
 * scans passed are left in the topic's handoff for it, and it puts those
 * it went past on the ready list itself.  Offers not named in our slot
 * were never passed by a scan (lo_any held the scans below them): they are
 * only counted.
 */
static void
settle_offers(XactTopic *xt, bool commit)
{
	OutboxOfferSlot *slot = outbox_my_slot();
	OutboxTopic *t;
	OutboxCounters *c;
	bool		live;
	uint64		count = 0;

	if (commit)
	{
		for (int i = 0; i < xt->nids; i++)
			if (xt->subids[i] != InvalidSubTransactionId)
				count++;
	}

	if (xt->slot_index < 0)
	{
		int			topic;

		if (count == 0)
			return;
		t = NULL;
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
			 * A claim reading the topic now checks lo_any only when it sets
			 * its position, and by then we are gone: our ids are left for
			 * it like those of an offer its slot names.
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
		return;
	}

	t = &outbox_shared->topics[xt->topic];
	LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);

	live = outbox_topic_matches(xt->topic, xt->topic_id, xt->incarnation);

	if (commit && live)
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
 * At commit: a dropped topic's shared state goes; a new watermark or retry
 * time reaches the topic's slot, if it has one.
 */
static void
settle_topic(XactTopic *xt)
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

static void
xact_finish(bool commit)
{
	if (outbox_shared != NULL && xs.scan_topic >= 0)
		scan_abandoned();
	if (outbox_shared != NULL)
	{
		/* Offers first: a claim of the same transaction is settled after. */
		for (int i = 0; i < xs.ntopics; i++)
		{
			XactTopic  *xt = &xs.topics[i];

			if (xt->slot_index >= 0 || xt->nids > 0)
				settle_offers(xt, commit);
		}

		if (xs.nops > 0 || (commit && xs.ncounts > 0))
		{
			LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
			xs.counted_topic = NULL;

			/*
			 * At commit in order; at abort in reverse, so that the undo of
			 * a settle (an ack of a lease this transaction made) comes
			 * before the undo of the claim that made the lease.
			 */
			for (int k = 0; k < xs.nops; k++)
				settle_op(&xs.ops[commit ? k : xs.nops - 1 - k], commit);
			xs.counted_topic = NULL;
			if (commit)
				settle_counts();
			LWLockRelease(outbox_shared->lock);
		}

		if (commit)
		{
			for (int i = 0; i < xs.ntopics; i++)
			{
				XactTopic  *xt = &xs.topics[i];

				if (!xt->forget && xt->watermark == 0 &&
					(xt->retry_at == 0 || xt->nids > 0))
					continue;
				settle_topic(xt);
			}
		}

		if (commit && xs.forget_database)
		{
			for (int i = 0; i < outbox_shared->max_topics; i++)
			{
				OutboxTopic *t = &outbox_shared->topics[i];

				LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
				if (t->in_use && t->dbid == MyDatabaseId)
					outbox_topic_forget(i);
				LWLockRelease(outbox_shared->lock);
			}
			LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
			outbox_counters_forget(MyDatabaseId, 0);
			LWLockRelease(outbox_shared->lock);
		}

		/* Tell the launcher the database gained or lost the extension. */
		if (commit && xs.forget_database)
			outbox_database_changed(MyDatabaseId, false);
		else if (commit && xs.announce_database)
			outbox_database_changed(MyDatabaseId, true);

		/* The slot is empty again. */
		{
			OutboxOfferSlot *slot = outbox_my_slot();

			if (slot->ntopics > 0 || slot->any)
			{
				LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
				slot->ntopics = 0;
				if (slot->any)
					outbox_shared->nany--;
				slot->any = false;
				pg_atomic_write_u64(&slot->lo_any, 0);
				slot->xid = InvalidTransactionId;
				LWLockRelease(outbox_shared->lock);
			}
		}
	}
	memset(&xs, 0, sizeof(xs));
}

static void
outbox_xact_callback(XactEvent event, void *arg)
{
	if (!xs.active)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that has offered, claimed or settled outbox events")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			xact_finish(true);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			xact_finish(false);
			break;
		default:
			break;
	}
}

static void
outbox_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (!xs.active)
		return;

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		if (xs.scan_topic >= 0 && xs.scan_subid == mySubid)
			xs.scan_subid = parentSubid;
		for (int i = 0; i < xs.nops; i++)
			if (xs.ops[i].subid == mySubid)
				xs.ops[i].subid = parentSubid;
		for (int i = 0; i < xs.ncounts; i++)
			if (xs.counts[i].subid == mySubid)
				xs.counts[i].subid = parentSubid;
		for (int i = 0; i < xs.ntopics; i++)
		{
			XactTopic  *xt = &xs.topics[i];

			for (int j = 0; j < xt->nids; j++)
				if (xt->subids[j] == mySubid)
					xt->subids[j] = parentSubid;
			if (xt->forget && xt->forget_subid == mySubid)
				xt->forget_subid = parentSubid;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		bool		locked = false;

		if (outbox_shared != NULL && xs.scan_topic >= 0 &&
			xs.scan_subid == mySubid)
			scan_abandoned();

		/* in reverse, as at abort of the whole transaction */
		for (int i = xs.nops - 1; i >= 0; i--)
		{
			if (xs.ops[i].subid != mySubid || xs.ops[i].done)
				continue;
			if (outbox_shared != NULL && !locked)
			{
				LWLockAcquire(outbox_shared->lock, LW_EXCLUSIVE);
				locked = true;
			}
			if (locked)
				settle_op(&xs.ops[i], false);
			xs.ops[i].done = true;
		}
		if (locked)
			LWLockRelease(outbox_shared->lock);

		for (int i = 0; i < xs.ncounts; i++)
			if (xs.counts[i].subid == mySubid)
				xs.counts[i].subid = InvalidSubTransactionId;

		for (int i = 0; i < xs.ntopics; i++)
		{
			XactTopic  *xt = &xs.topics[i];

			for (int j = 0; j < xt->nids; j++)
				if (xt->subids[j] == mySubid)
					xt->subids[j] = InvalidSubTransactionId;
			if (xt->forget && xt->forget_subid == mySubid)
				xt->forget = false;
		}
	}
}

void
outbox_xact_init(void)
{
	static bool registered = false;

	if (registered)
		return;
	RegisterXactCallback(outbox_xact_callback, NULL);
	RegisterSubXactCallback(outbox_subxact_callback, NULL);
	registered = true;
}
