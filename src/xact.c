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
 *	  This file keeps the transaction's own record (which operations, which
 *	  topics, in which subtransaction); the shared state itself is shmem.c's,
 *	  which applies that record at commit or abort.
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

/* Per topic this transaction touched */
typedef struct XactTopic
{
	int32		topic_id;
	int64		incarnation;	/* 0: whatever the topic's is */
	bool		registered;		/* its offers are announced */
	bool		exact_lo;		/* tell the slot our first id (ordered) */
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

typedef struct XactState
{
	bool		active;
	OutboxOp   *ops;			/* what it did to leases (shmem.h) */
	int			nops;
	int			maxops;
	XactTopic  *topics;
	int			ntopics;
	int			maxtopics;
	HTAB	   *topic_hash;		/* topic_id -> index in topics, when many */
	int			scan_topic;		/* a claim of ours reads this topic's log, */
	SubTransactionId scan_subid;	/* in this subtransaction */
	bool		lo_pending;		/* our slot's lo_any waits for an id */
	bool		forget_database;	/* the extension is being dropped, */
	SubTransactionId forget_subid;	/* in this subtransaction */
	Oid			dropped_database;	/* another database is being dropped */
	bool		announce_database;	/* the extension is being created, */
	SubTransactionId announce_subid;	/* in this subtransaction, */
	bool		dropped_before;	/* after a drop in this transaction */
	OutboxCountOp *counts;		/* what it counts at commit (shmem.h) */
	int			ncounts;
	int			maxcounts;
} XactState;

static XactState xs;

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
								xs.maxops * sizeof(OutboxOp));
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
		xs.ops = repalloc(xs.ops, xs.maxops * sizeof(OutboxOp));
	}
}

/*
 * Record an operation on the lease of event_id, made or held under token.
 * Must not fail: room was reserved.
 */
void
outbox_xact_add_lease_op(OutboxOpKind kind, int64 event_id, int topic,
						 TimestampTz retry_at, const pg_uuid_t *token)
{
	OutboxOp   *op;

	Assert(xs.active && xs.nops < xs.maxops);
	op = &xs.ops[xs.nops++];
	op->event_id = event_id;
	op->topic = topic;
	op->kind = kind;
	op->done = false;
	op->subid = GetCurrentSubTransactionId();
	op->retry_at = retry_at;
	op->token = *token;
	op->keyhash = 0;
}

/*
 * An event of a key of an ordered topic made to wait in outbox.retry by
 * this transaction (a delayed offer, a redrive): at abort it stops holding
 * its key back.  topic_id's slot must be had, and room for the key:
 * else an error, before anything is written.
 */
void
outbox_xact_key_waiting(int32 topic_id, int64 incarnation, const char *name,
						int64 event_id, uint64 keyhash)
{
	int			topic;
	OutboxOp   *op;

	outbox_xact_reserve_ops(1);
	topic = outbox_key_waiting_add(topic_id, incarnation, event_id, keyhash);
	if (topic == -1)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no shared slot is free for ordered topic \"%s\"", name),
				 errdetail("An event that waits in an ordered topic holds its key back from shared memory; all %d topic slots are busy.",
						   outbox_max_topics),
				 errhint("Ack or nack leased events, or raise outbox.max_topics and restart the server.")));
	if (topic == -2)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many events of ordered topics are waiting or held back"),
				 errdetail("Shared memory follows at most %d such events (outbox.max_ordered_events) of at most %d keys (outbox.max_ordered_keys).",
						   outbox_max_ordered_events, outbox_max_ordered_keys),
				 errhint("Drain the ordered topics, or raise outbox.max_ordered_events or outbox.max_ordered_keys and restart the server.")));
	op = &xs.ops[xs.nops++];
	memset(op, 0, sizeof(*op));
	op->event_id = event_id;
	op->topic = topic;
	op->kind = OP_WAITING;
	op->subid = GetCurrentSubTransactionId();
	op->keyhash = keyhash;
}

/*
 * Announce, before drawing its first id, that this transaction offers to a
 * topic.  From here on a claim whose scan passes ids this transaction may
 * hold, while it is still in flight, marks the slot, or (for offers not
 * named in the slot one by one) holds its scan position below them
 * (outbox_offer_slot_register).
 */
void
outbox_xact_offer_register(int32 topic_id, int64 incarnation, bool ordered)
{
	XactTopic  *xt = xact_topic(topic_id, incarnation);
	TransactionId xid;
	bool		lo_pending;

	if (ordered)
		xt->exact_lo = true;

	if (xt->registered)
		return;

	/* Scans judge the slot by this xid, so it must exist first. */
	xid = GetTopTransactionId();

	xt->topic = outbox_offer_slot_register(topic_id, incarnation, xid,
										   &xt->slot_index, &lo_pending);
	if (lo_pending)
		xs.lo_pending = true;

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
		outbox_offer_slot_set_lo_any(event_id);
		xs.lo_pending = false;
	}

	/*
	 * An ordered topic's claims hand out nothing above the lowest id an
	 * offering transaction in flight may hold: from our first id on, that
	 * bound is exact, not the scan position when we registered.
	 */
	if (xt->exact_lo && xt->nids == 0 && xt->slot_index >= 0)
		outbox_offer_slot_set_lo(xt->slot_index, event_id);

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
 * The lease of event_id that this transaction ends (a nack or a reap) sends
 * the event to outbox.retry, due at retry_at: at commit its topic looks
 * there again by then, and in an ordered topic the later events of its key
 * in the same lease are handed back with it.
 */
void
outbox_xact_finish_retry(int64 event_id, TimestampTz retry_at)
{
	for (int i = xs.nops - 1; i >= 0; i--)
	{
		OutboxOp   *op = &xs.ops[i];

		if (op->event_id == event_id && op->kind == OP_FINISH && !op->done)
		{
			op->retry_at = retry_at;
			return;
		}
	}
}

/*
 * The reap of an expired lease failed: the lease stays as it was, whatever
 * this transaction does (reap.c).
 */
void
outbox_xact_keep_lease(int64 event_id)
{
	outbox_ops_keep_lease(xs.ops, xs.nops, event_id);
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

/* A claim of ours failed while it was scanning (outbox_scan_abandon). */
static void
scan_abandoned(void)
{
	outbox_scan_abandon(xs.scan_topic);
	xs.scan_topic = -1;
}

void
outbox_xact_forget_database(void)
{
	xact_activate();
	if (!xs.forget_database)
		xs.forget_subid = GetCurrentSubTransactionId();
	xs.forget_database = true;
}

/*
 * The extension created in this transaction is rolled back (with the whole
 * transaction, or to a savepoint): what its topics left in shared memory
 * goes, since its event ids come again when it is made anew.  Unless it was
 * dropped first in this transaction: that drop is undone too (or commits
 * and forgets everything then), and the old install's state stays.
 */
static void
install_rolled_back(void)
{
	if (!xs.dropped_before)
		outbox_forget_database_state(MyDatabaseId);
	xs.announce_database = false;
	xs.dropped_before = false;
}

/*
 * DROP DATABASE of dbid: what shared memory holds for its topics (leases,
 * keys, events held back, counters) goes when the drop commits.  Not
 * before: the drop can still fail (another session is connected), and the
 * database then lives on with its leases.
 */
void
outbox_xact_forget_dropped_database(Oid dbid)
{
	xact_activate();
	xs.dropped_database = dbid;
}

void
outbox_xact_announce_database(void)
{
	xact_activate();
	if (!xs.announce_database)
	{
		xs.announce_subid = GetCurrentSubTransactionId();
		xs.dropped_before = xs.forget_database;
	}
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

/*
 * Count, at commit, n of what for a topic (metrics): a nack, an expired
 * lease, a dead letter or a redrive.
 */
void
outbox_xact_count(int32 topic_id, int64 incarnation, OutboxCount what, int n)
{
	OutboxCountOp *xc;

#ifdef OUTBOX_NO_METRICS
	return;
#endif
	if (!outbox_shmem_available() || n <= 0)
		return;
	xact_activate();
	if (xs.ncounts >= xs.maxcounts)
	{
		int			newmax = Max(16, xs.maxcounts * 2);

		if (xs.counts == NULL)
			xs.counts = MemoryContextAlloc(TopTransactionContext,
										   newmax * sizeof(OutboxCountOp));
		else
			xs.counts = repalloc(xs.counts, newmax * sizeof(OutboxCountOp));
		xs.maxcounts = newmax;
	}
	xc = &xs.counts[xs.ncounts++];
	xc->topic_id = topic_id;
	xc->incarnation = incarnation;
	xc->what = (uint8) what;
	xc->n = n;
	xc->subid = GetCurrentSubTransactionId();
}

/*
 * What this transaction did to a topic, as shmem.c settles it at the end.
 */
static void
topic_change(const XactTopic *xt, OutboxTopicChange *c)
{
	c->topic_id = xt->topic_id;
	c->incarnation = xt->incarnation;
	c->topic = xt->topic;
	c->slot_index = xt->slot_index;
	c->ids = xt->ids;
	c->subids = xt->subids;
	c->delayed = xt->delayed;
	c->nids = xt->nids;
	c->forget = xt->forget;
	c->watermark = xt->watermark;
	c->retry_at = xt->retry_at;
}

/* The end of the transaction's offers, topic by topic (shmem.c) */
static void
xact_settle_offers(bool commit)
{
	for (int i = 0; i < xs.ntopics; i++)
	{
		XactTopic  *xt = &xs.topics[i];
		OutboxTopicChange c;

		if (xt->slot_index < 0 && xt->nids == 0)
			continue;
		topic_change(xt, &c);
		outbox_offers_settle(&c, commit);
	}
}

/* At commit: dropped topics, new watermarks and retry times (shmem.c) */
static void
xact_settle_topic_changes(void)
{
	for (int i = 0; i < xs.ntopics; i++)
	{
		XactTopic  *xt = &xs.topics[i];
		OutboxTopicChange c;

		if (!xt->forget && xt->watermark == 0 &&
			(xt->retry_at == 0 || xt->nids > 0))
			continue;
		topic_change(xt, &c);
		outbox_topic_settle(&c);
	}
}

static void
xact_finish(bool commit)
{
	if (outbox_shmem_available() && xs.scan_topic >= 0)
		scan_abandoned();
	if (outbox_shmem_available())
	{
		/* Offers first: a claim of the same transaction is settled after. */
		xact_settle_offers(commit);

		if (xs.nops > 0 || (commit && xs.ncounts > 0))
			outbox_ops_settle(xs.ops, xs.nops, commit, xs.counts, xs.ncounts);

		if (commit)
			xact_settle_topic_changes();

		if (commit && xs.forget_database)
			outbox_forget_database_state(MyDatabaseId);

		if (!commit && xs.announce_database)
			install_rolled_back();

		if (commit && OidIsValid(xs.dropped_database))
			outbox_forget_database_state(xs.dropped_database);

		/*
		 * Tell the launcher the database gained or lost the extension: it
		 * has it if it was created last.
		 */
		if (commit && xs.announce_database &&
			(xs.dropped_before || !xs.forget_database))
			outbox_database_changed(MyDatabaseId, true);
		else if (commit && xs.forget_database)
			outbox_database_changed(MyDatabaseId, false);

		/* The slot is empty again. */
		outbox_offer_slot_reset();
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

/* A subtransaction committed: what it did is its parent's now. */
static void
subxact_commit(SubTransactionId mySubid, SubTransactionId parentSubid)
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
	if (xs.forget_database && xs.forget_subid == mySubid)
		xs.forget_subid = parentSubid;
	if (xs.announce_database && xs.announce_subid == mySubid)
		xs.announce_subid = parentSubid;
}

/* A subtransaction rolled back: what it did is undone at once. */
static void
subxact_abort(SubTransactionId mySubid)
{
	if (outbox_shmem_available() && xs.scan_topic >= 0 &&
		xs.scan_subid == mySubid)
		scan_abandoned();

	/* in reverse, as at abort of the whole transaction */
	if (outbox_shmem_available())
		outbox_ops_undo(xs.ops, xs.nops, mySubid);
	else
	{
		for (int i = 0; i < xs.nops; i++)
			if (xs.ops[i].subid == mySubid)
				xs.ops[i].done = true;
	}

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

	/*
	 * A CREATE EXTENSION rolled back to a savepoint goes as at the abort of
	 * the whole transaction (a DROP after it in the same savepoint
	 * included).  A DROP EXTENSION rolled back to a savepoint forgets
	 * nothing and tells the launcher nothing: the install lives on.
	 */
	if (xs.announce_database && xs.announce_subid == mySubid &&
		outbox_shmem_available())
		install_rolled_back();
	if (xs.forget_database && xs.forget_subid == mySubid)
		xs.forget_database = false;
}

static void
outbox_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (!xs.active)
		return;

	if (event == SUBXACT_EVENT_COMMIT_SUB)
		subxact_commit(mySubid, parentSubid);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		subxact_abort(mySubid);
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
