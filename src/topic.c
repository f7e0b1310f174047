/*-------------------------------------------------------------------------
 *
 * topic.c
 *	  Topics: create_topic, alter_topic, drop_topic, name checks, and the
 *	  lookups and lock every other function starts with.  A per-tenant topic has a part
 *	  per tenant: a row of outbox.topic of its own (same name, parent_id
 *	  and tenant set) with its own log position, leases and watermark.
 *	  Parts are made by the first offer for their tenant and go with their
 *	  topic.
 *
 *	  Offers and claims hold a topic's lock in share mode until their
 *	  transaction ends; create_topic, alter_topic and drop_topic hold it
 *	  exclusively.  So an event can never be stored for a topic that a
 *	  concurrent drop_topic removed.
 *
 *	  Each backend caches topics by name.  Any change to outbox.topic
 *	  invalidates the table's relcache entry (a statement trigger), which
 *	  empties every backend's cache; the invalidation is taken in right
 *	  after the topic's lock.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "schema.h"
#include "shmem.h"
#include "spi_util.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"
#include "walmsg.h"
#include "xact.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lock.h"
#include "commands/trigger.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(outbox_create_topic);
PG_FUNCTION_INFO_V1(outbox_drop_topic);
PG_FUNCTION_INFO_V1(outbox_alter_topic);
PG_FUNCTION_INFO_V1(outbox_topic_fixed);
PG_FUNCTION_INFO_V1(outbox_topic_changed);

typedef struct TopicCacheEntry
{
	char		name[OUTBOX_TOPIC_NAME_MAX + 1];	/* hash key */
	OutboxTopicInfo info;
} TopicCacheEntry;

typedef struct PartCacheKey
{
	int32		parent_id;
	char		tenant[OUTBOX_TENANT_MAX + 1];
} PartCacheKey;

typedef struct PartCacheEntry
{
	PartCacheKey key;			/* hash key */
	OutboxTopicInfo info;
} PartCacheEntry;

static HTAB *topic_cache = NULL;
static HTAB *part_cache = NULL;

/* outbox.topic, as known when the caches were filled, or InvalidOid */
static Oid	topic_relid = InvalidOid;

/*
 * A change of outbox.topic (or an invalidation of every relation) empties
 * the caches; invalidations of other relations, which come all the time,
 * leave them be.
 */
static void
topic_cache_invalidate(Datum arg, Oid relid)
{
	if (OidIsValid(relid) && OidIsValid(topic_relid) && relid != topic_relid)
		return;
	topic_relid = InvalidOid;
	if (topic_cache != NULL)
	{
		hash_destroy(topic_cache);
		topic_cache = NULL;
	}
	if (part_cache != NULL)
	{
		hash_destroy(part_cache);
		part_cache = NULL;
	}
}

/*
 * Learn which relation outbox.topic is, before the first entry is cached:
 * until then every invalidation empties the caches.
 */
static void
remember_topic_relid(void)
{
	Oid			nsp = get_namespace_oid("outbox", true);

	if (OidIsValid(nsp))
		topic_relid = get_relname_relid("topic", nsp);
}

void
outbox_topic_cache_init(void)
{
	CacheRegisterRelcacheCallback(topic_cache_invalidate, (Datum) 0);
}

/*
 * _topic_changed(): statement trigger on outbox.topic; the change empties
 * the topic caches of every backend when it commits.
 */
Datum
outbox_topic_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox._topic_changed() may only be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

#define TOPIC_COLUMNS \
	"topic_id, incarnation, max_attempts, retention, backoff_base, backoff_max, ordered, name, xmin, " \
	"per_tenant, tenant, delivery = 'wal', slot"

void
outbox_check_topic_name(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > OUTBOX_TOPIC_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid topic name \"%s\"", name),
				 errdetail("A topic name has 1 to %d bytes.", OUTBOX_TOPIC_NAME_MAX)));
	for (const char *p = name; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid topic name \"%s\"", name),
					 errdetail("A topic name may hold letters, digits, \"_\", \"-\" and \".\" only.")));
	}
}

static int64
interval_datum_usec(Datum d)
{
	Interval   *iv = DatumGetIntervalP(d);

	return ((int64) iv->month * 30 + iv->day) * USECS_PER_DAY + iv->time;
}

static void
topic_from_tuple(HeapTuple tup, TupleDesc desc, OutboxTopicInfo *info)
{
	bool		isnull;
	char	   *name;
	TransactionId xmin;

	info->topic_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	info->incarnation = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	info->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	info->retention_usec = interval_datum_usec(SPI_getbinval(tup, desc, 4, &isnull));
	info->backoff_base_usec = interval_datum_usec(SPI_getbinval(tup, desc, 5, &isnull));
	info->backoff_max_usec = interval_datum_usec(SPI_getbinval(tup, desc, 6, &isnull));
	info->ordered = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	name = SPI_getvalue(tup, desc, 8);
	strlcpy(info->name, name, sizeof(info->name));
	xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 9, &isnull));
	info->cacheable = !TransactionIdIsCurrentTransactionId(xmin);
	info->per_tenant = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	name = SPI_getvalue(tup, desc, 11);
	info->is_part = (name != NULL);
	strlcpy(info->tenant, name ? name : "", sizeof(info->tenant));
	info->wal = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
	name = SPI_getvalue(tup, desc, 13);
	strlcpy(info->slot, name ? name : "", sizeof(info->slot));
}

/*
 * Look a topic up by name with the latest snapshot, so that a topic
 * dropped while we waited for its lock is not found, whatever the
 * isolation level.  Errors out when there is no such topic.
 */
void
outbox_lookup_topic(const char *name, OutboxTopicInfo *info)
{
	static const Oid argtypes[1] = {TEXTOID};
	TopicCacheEntry *entry;
	bool		found;
	char		key[OUTBOX_TOPIC_NAME_MAX + 1];
	SPIPlanPtr	plan = outbox_plan(PLAN_TOPIC_BY_NAME,
									   "SELECT " TOPIC_COLUMNS " FROM outbox.topic WHERE name = $1 AND parent_id IS NULL",
									   1, argtypes);
	Datum		values[1];
	int			rc;

	/* a name no topic can have is not looked up, nor cached */
	if (strlen(name) <= OUTBOX_TOPIC_NAME_MAX)
	{
		memset(key, 0, sizeof(key));
		strlcpy(key, name, sizeof(key));
		if (topic_cache != NULL)
		{
			entry = hash_search(topic_cache, key, HASH_FIND, NULL);
			if (entry != NULL)
			{
				*info = entry->info;
				return;
			}
		}
	}

	values[0] = CStringGetTextDatum(name);
	rc = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(),
							  InvalidSnapshot, true, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "topic lookup");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("topic \"%s\" does not exist", name),
				 errhint("Create it with outbox.create_topic('%s').", name)));
	topic_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, info);
	SPI_freetuptable(SPI_tuptable);

	/*
	 * Remember it, unless the row is not committed yet (the topic was
	 * created in this transaction, which may still roll back).
	 */
	if (info->cacheable)
	{
		if (topic_cache == NULL)
		{
			HASHCTL		ctl;

			remember_topic_relid();

			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = OUTBOX_TOPIC_NAME_MAX + 1;
			ctl.entrysize = sizeof(TopicCacheEntry);
			ctl.hcxt = TopMemoryContext;
			topic_cache = hash_create("outbox topics", 16, &ctl,
									  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		}
		entry = hash_search(topic_cache, key, HASH_ENTER, &found);
		entry->info = *info;
	}
}

bool
outbox_lookup_topic_by_id(int32 topic_id, OutboxTopicInfo *info)
{
	static const Oid argtypes[1] = {INT4OID};
	SPIPlanPtr	plan = outbox_plan(PLAN_TOPIC_BY_ID,
									   "SELECT " TOPIC_COLUMNS " FROM outbox.topic WHERE topic_id = $1",
									   1, argtypes);
	Datum		values[1];
	int			rc;

	values[0] = Int32GetDatum(topic_id);
	rc = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(),
							  InvalidSnapshot, true, false, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "topic lookup");
	if (SPI_processed == 0)
		return false;
	topic_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, info);
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/*
 * The part of a per-tenant topic for one tenant.  With create, a missing
 * part is made (in the caller's transaction: a concurrent first offer for
 * the same tenant waits for it); without, returns false if there is none.
 * The caller holds the topic's lock.
 */
bool
outbox_lookup_topic_part(const OutboxTopicInfo *topic, const char *tenant,
						 bool create, OutboxTopicInfo *part)
{
	static const Oid argtypes[2] = {INT4OID, TEXTOID};
	PartCacheKey key;
	PartCacheEntry *entry;
	Datum		values[2];
	bool		found;
	int			rc;

	Assert(topic->per_tenant);
	if (strlen(tenant) > OUTBOX_TENANT_MAX || tenant[0] == '\0')
	{
		if (create)
			outbox_check_tenant_name(tenant);
		return false;
	}
	memset(&key, 0, sizeof(key));
	key.parent_id = topic->topic_id;
	strlcpy(key.tenant, tenant, sizeof(key.tenant));
	if (part_cache != NULL)
	{
		entry = hash_search(part_cache, &key, HASH_FIND, NULL);
		if (entry != NULL)
		{
			*part = entry->info;
			return true;
		}
	}

	values[0] = Int32GetDatum(topic->topic_id);
	values[1] = CStringGetTextDatum(tenant);
	for (int pass = 0; pass < 2; pass++)
	{
		rc = SPI_execute_snapshot(outbox_plan(PLAN_TOPIC_PART,
											  "SELECT " TOPIC_COLUMNS " FROM outbox.topic "
											  "WHERE parent_id = $1 AND tenant = $2",
											  2, argtypes),
								  values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								  true, false, 1);
		outbox_spi_check(rc, SPI_OK_SELECT, "topic lookup");
		if (SPI_processed > 0 || !create || pass > 0)
			break;
		rc = outbox_exec(PLAN_TOPIC_PART_CREATE,
						 "WITH p AS (INSERT INTO outbox.topic (name, max_attempts, retention, "
						 "  backoff_base, backoff_max, ordered, parent_id, tenant, delivery, slot) "
						 "  SELECT t.name, t.max_attempts, t.retention, t.backoff_base, "
						 "    t.backoff_max, t.ordered, t.topic_id, $2, t.delivery, t.slot "
						 "  FROM outbox.topic t "
						 "  WHERE t.topic_id = $1 "
						 "  ON CONFLICT (parent_id, tenant) WHERE parent_id IS NOT NULL DO NOTHING "
						 "  RETURNING topic_id, delivery, slot), "
						 "w AS (INSERT INTO outbox.wal_progress (topic_id) "
						 "  SELECT p.topic_id FROM p WHERE p.delivery = 'wal') "
						 "INSERT INTO outbox.topic_state (topic_id) SELECT topic_id FROM p",
						 2, argtypes, values, NULL, false, 0);
		outbox_spi_check(rc, SPI_OK_INSERT, "topic part");
	}
	if (SPI_processed == 0)
		return false;
	topic_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, part);
	SPI_freetuptable(SPI_tuptable);

	if (part->cacheable)
	{
		if (part_cache == NULL)
		{
			HASHCTL		ctl;

			if (topic_cache == NULL)
				remember_topic_relid();

			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = sizeof(PartCacheKey);
			ctl.entrysize = sizeof(PartCacheEntry);
			ctl.hcxt = TopMemoryContext;
			part_cache = hash_create("outbox topic parts", 16, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		}
		entry = hash_search(part_cache, &key, HASH_ENTER, &found);
		entry->info = *part;
	}
	return true;
}

/*
 * A topic and its tenant parts: their ids and incarnations, allocated in
 * the context the caller had before SPI_connect.  Returns how many.
 */
int
outbox_topic_family(int32 topic_id, int32 **ids, int64 **incarnations)
{
	static const Oid argtypes[1] = {INT4OID};
	Datum		values[1];
	int			rc;
	int			n;

	values[0] = Int32GetDatum(topic_id);
	rc = SPI_execute_with_args("SELECT topic_id, incarnation FROM outbox.topic "
							   "WHERE topic_id = $1 OR parent_id = $1 ORDER BY topic_id",
							   1, (Oid *) argtypes, values, NULL, true, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "topic parts");
	n = (int) SPI_processed;
	/* in the caller's context: they outlive SPI_finish */
	*ids = SPI_palloc(sizeof(int32) * Max(1, n));
	*incarnations = SPI_palloc(sizeof(int64) * Max(1, n));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*ids)[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		(*incarnations)[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}
	return n;
}

/* Take the topic's lock, held until the end of the transaction. */
void
outbox_lock_topic(const char *name, LOCKMODE mode)
{
	LOCKTAG		tag;
	uint64		h = hash_bytes_extended((const unsigned char *) name,
										(int) strlen(name), 0);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 OUTBOX_LOCK_TOPIC);
	if (LockAcquire(&tag, mode, false, false) != LOCKACQUIRE_ALREADY_HELD)
	{
		/* a drop that committed while we waited empties the topic cache */
		AcceptInvalidationMessages();
	}
}

/*
 * The checks create_topic and alter_topic make of a topic's settings.  A
 * NULL argument (alter_topic: keep the setting) is not checked here.  For
 * the backoff pair, a NULL side is compared with the setting it keeps.
 */
static void
check_settings(FunctionCallInfo fcinfo, int first, int64 kept_base,
			   int64 kept_max)
{
	int64		base = kept_base;
	int64		max = kept_max;

	if (!PG_ARGISNULL(first))
	{
		int32		max_attempts = PG_GETARG_INT32(first);

		if (max_attempts < 1 || max_attempts > OUTBOX_MAX_ATTEMPTS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"max_attempts\" must be between 1 and %d", OUTBOX_MAX_ATTEMPTS),
					 errdetail("The value given was %d.", max_attempts)));
	}
	if (!PG_ARGISNULL(first + 1))
		(void) outbox_interval_usec(PG_GETARG_INTERVAL_P(first + 1), "retention",
									0, INT64CONST(100) * 366 * USECS_PER_DAY, false);
	if (!PG_ARGISNULL(first + 2))
		base = outbox_interval_usec(PG_GETARG_INTERVAL_P(first + 2), "backoff_base",
									0, OUTBOX_MAX_RETRY_USEC, false);
	if (!PG_ARGISNULL(first + 3))
		max = outbox_interval_usec(PG_GETARG_INTERVAL_P(first + 3), "backoff_max",
								   0, OUTBOX_MAX_RETRY_USEC, false);
	if (max < base)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"backoff_max\" must not be less than \"backoff_base\""),
				 errdetail("backoff_base would be " INT64_FORMAT " ms and backoff_max " INT64_FORMAT " ms.",
						   base / 1000, max / 1000)));
}

/*
 * create_topic(topic, max_attempts, retention, backoff_base, backoff_max,
 * ordered, delivery, slot): a new topic, refused if one of that name
 * exists.  delivery 'wal' needs a slot name and wal_level = logical.
 */
Datum
outbox_create_topic(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		ordered;
	char	   *delivery;
	bool		wal;
	Datum		values[8];
	char		nulls[8];
	int			rc;
	static const Oid argtypes[8] = {TEXTOID, INT4OID, INTERVALOID, INTERVALOID,
	INTERVALOID, BOOLOID, TEXTOID, NAMEOID};
	static const char *const argnames[7] = {"max_attempts", "retention",
		"backoff_base", "backoff_max", "ordered", "delivery"};
	bool		isnull;

	outbox_require_writable("outbox.create_topic()");
	outbox_require_schema();
	name = outbox_text_arg(fcinfo, 0, "topic", true);

	for (int i = 1; i < 7; i++)
		outbox_require_arg(fcinfo, i, argnames[i - 1]);
	outbox_check_topic_name(name);
	check_settings(fcinfo, 1, 0, 0);
	outbox_refuse_if_bound("outbox.create_topic()");
	ordered = PG_GETARG_BOOL(5);

	delivery = outbox_text_arg(fcinfo, 6, "delivery", true);
	if (strcmp(delivery, "claim") != 0 && strcmp(delivery, "wal") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for \"delivery\": \"%s\"", delivery),
				 errhint("Use 'claim' (relays claim and ack) or 'wal' (a logical replication slot reads the topic).")));
	wal = (strcmp(delivery, "wal") == 0);
	if (wal && ordered)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a topic delivered through the WAL cannot be ordered"),
				 errdetail("Its events reach the slot in commit order; ordered => true orders the events relays claim."),
				 errhint("Create the topic with ordered => false, or with delivery => 'claim'.")));
	if (wal)
	{
		if (PG_ARGISNULL(7))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("\"slot\" must not be null with delivery => 'wal'"),
					 errhint("Name the logical replication slot that delivers the topic, such as Debezium's slot.name.")));
		(void) ReplicationSlotValidateName(NameStr(*PG_GETARG_NAME(7)), ERROR);
		outbox_wal_require_logical("a topic delivered through the WAL");
	}
	else if (!PG_ARGISNULL(7))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"slot\" applies only with delivery => 'wal'"),
				 errhint("Leave slot NULL for a topic that relays claim.")));

	outbox_lock_topic(name, AccessExclusiveLock);

	SPI_connect();
	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(name);
	for (int i = 1; i < 8; i++)
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	nulls[7] = PG_ARGISNULL(7) ? 'n' : ' ';
	/* a WAL topic starts with its row of outbox.wal_progress (walsync.c) */
	rc = SPI_execute_with_args(
							   "WITH t AS (INSERT INTO outbox.topic (name, max_attempts, retention, backoff_base, backoff_max, ordered, delivery, slot) "
							   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING "
							   "  RETURNING topic_id, delivery, slot), "
							   "s AS (INSERT INTO outbox.topic_state (topic_id) SELECT topic_id FROM t), "
							   "w AS (INSERT INTO outbox.wal_progress (topic_id) "
							   "  SELECT t.topic_id FROM t WHERE t.delivery = 'wal') "
							   "SELECT count(*) FROM t",
							   8, (Oid *) argtypes, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "create_topic");
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("topic \"%s\" already exists", name)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * alter_topic(topic, max_attempts, retention, backoff_base, backoff_max):
 * change a topic's settings; a NULL argument keeps that setting.  The
 * topic's tenant parts carry the same settings and change with it.  The
 * change reaches other backends' topic caches when it commits (the
 * statement trigger on outbox.topic), so the next claim, nack, reap and
 * maintain use it.  ordered is fixed at creation.
 */
Datum
outbox_alter_topic(PG_FUNCTION_ARGS)
{
	char	   *name;
	OutboxTopicInfo info;
	Datum		values[5];
	char		nulls[5];
	int			rc;
	static const Oid argtypes[5] = {INT4OID, INT4OID, INTERVALOID, INTERVALOID,
	INTERVALOID};

	outbox_require_writable("outbox.alter_topic()");
	outbox_require_schema();
	name = outbox_text_arg(fcinfo, 0, "topic", true);
	outbox_check_topic_name(name);
	outbox_refuse_if_bound("outbox.alter_topic()");

	/* a drop or another alter of the topic waits for this one */
	outbox_lock_topic(name, AccessExclusiveLock);

	SPI_connect();
	outbox_lookup_topic(name, &info);
	check_settings(fcinfo, 1, info.backoff_base_usec, info.backoff_max_usec);

	values[0] = Int32GetDatum(info.topic_id);
	nulls[0] = ' ';
	for (int i = 1; i < 5; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	rc = SPI_execute_with_args("UPDATE outbox.topic SET "
							   "max_attempts = coalesce($2, max_attempts), "
							   "retention = coalesce($3, retention), "
							   "backoff_base = coalesce($4, backoff_base), "
							   "backoff_max = coalesce($5, backoff_max) "
							   "WHERE topic_id = $1 OR parent_id = $1",
							   5, (Oid *) argtypes, values, nulls, false, 0);
	outbox_spi_check(rc, SPI_OK_UPDATE, "alter_topic");
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * _topic_fixed(): row trigger on outbox.topic, refusing a change of what is
 * fixed when a topic is made (ordered, delivery and slot).
 */
Datum
outbox_topic_fixed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox._topic_fixed() may only be called as a row trigger on update")));
	{
		HeapTuple	oldtup = trigdata->tg_trigtuple;
		HeapTuple	newtup = trigdata->tg_newtuple;
		TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
		const char *setting = "ordered";
		int			attno = SPI_fnumber(desc, "ordered");
		bool		isnull1,
					isnull2;
		Datum		d1 = heap_getattr(oldtup, attno, desc, &isnull1);
		Datum		d2 = heap_getattr(newtup, attno, desc, &isnull2);

		if (isnull1 == isnull2 && (isnull1 || DatumGetBool(d1) == DatumGetBool(d2)))
		{
			attno = SPI_fnumber(desc, "delivery");
			d1 = heap_getattr(oldtup, attno, desc, &isnull1);
			d2 = heap_getattr(newtup, attno, desc, &isnull2);
			setting = (isnull1 != isnull2 ||
					   (!isnull1 && strcmp(TextDatumGetCString(d1),
										   TextDatumGetCString(d2)) != 0)) ?
				"delivery" : "slot";
		}
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the \"%s\" setting of a topic cannot be changed", setting),
				 strcmp(setting, "ordered") == 0 ?
				 errdetail("A topic is ordered or not from its creation on.") :
				 errdetail("How a topic is delivered, and through which slot, is fixed when it is created."),
				 errhint("Create a new topic with the setting wanted.")));
	}
	return PointerGetDatum(NULL);
}

/*
 * drop_topic(topic, force): remove a topic and all it holds.  Without
 * force, refused while the topic holds any event not yet acknowledged
 * (available, leased, delayed or dead).
 */
Datum
outbox_drop_topic(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		force;
	OutboxTopicInfo info;
	Datum		values[1];
	int			rc;
	int32	   *ids;
	int64	   *incarnations;
	int			n;
	static const Oid intarg[1] = {INT4OID};
	static const Oid textarg[1] = {TEXTOID};

	outbox_require_writable("outbox.drop_topic()");
	outbox_require_schema();
	name = outbox_text_arg(fcinfo, 0, "topic", true);

	outbox_require_arg(fcinfo, 1, "force");
	force = PG_GETARG_BOOL(1);
	outbox_refuse_if_bound("outbox.drop_topic()");

	outbox_lock_topic(name, AccessExclusiveLock);

	SPI_connect();
	outbox_lookup_topic(name, &info);

	/*
	 * The checks read with a snapshot taken now, after the topic's lock:
	 * a capture, an offer or a claim that committed while this call waited
	 * for it is seen.
	 */
	PushActiveSnapshot(GetLatestSnapshot());

	/* a capture trigger would make every write to its table fail */
	values[0] = CStringGetTextDatum(name);
	rc = SPI_execute_with_args("SELECT tg.tgrelid::pg_catalog.regclass::pg_catalog.text "
							   "FROM pg_catalog.pg_trigger tg "
							   "WHERE tg.tgfoid OPERATOR(pg_catalog.=) 'outbox._capture()'::pg_catalog.regprocedure "
							   "AND tg.tgparentid OPERATOR(pg_catalog.=) 0 "
							   "AND tg.tgnargs OPERATOR(pg_catalog.>=) 1 "
							   "AND pg_catalog.convert_from(pg_catalog.substring(tg.tgargs, 1, "
							   "    pg_catalog.position(tg.tgargs, '\\x00'::pg_catalog.bytea) OPERATOR(pg_catalog.-) 1), 'UTF8') "
							   "    OPERATOR(pg_catalog.=) $1 "
							   "LIMIT 1",
							   1, (Oid *) textarg, values, NULL, true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "drop_topic");
	if (SPI_processed > 0)
	{
		char	   *table = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("topic \"%s\" is captured from table %s", name, table),
				 errdetail("Every change of the table's rows is offered to the topic."),
				 errhint("Call outbox.uncapture('%s', '%s') first.", table, name)));
	}

	n = outbox_topic_family(info.topic_id, &ids, &incarnations);

	for (int i = 0; i < n && !force; i++)
	{
		bool		pending;
		bool		isnull;
		int			leased = 0;

		if (outbox_shmem_available())
		{
			leased = outbox_topic_lease_count(ids[i], incarnations[i]);
		}

		values[0] = Int32GetDatum(ids[i]);
		rc = SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM outbox.retry WHERE topic_id = $1) "
								   "OR EXISTS (SELECT 1 FROM outbox.dead_letter WHERE topic_id = $1) "
								   "OR EXISTS (SELECT 1 FROM outbox.event e "
								   "  JOIN outbox.topic_state s USING (topic_id) "
								   "  WHERE e.topic_id = $1 AND e.id > s.watermark "
								   "  AND e.id NOT IN (SELECT k.id FROM outbox._acked() k WHERE k.topic_id = $1))",
								   1, (Oid *) intarg, values, NULL, true, 1);
		outbox_spi_check(rc, SPI_OK_SELECT, "drop_topic");
		pending = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
		if (pending || leased > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("topic \"%s\" still holds undelivered events", name),
					 errdetail("Events of the topic are available, leased, delayed or dead."),
					 errhint("Drain the topic first, or call outbox.drop_topic('%s', force => true).",
							 name)));
	}

	PopActiveSnapshot();

	/* parts first: their rows reference the topic's */
	for (int i = n - 1; i >= 0; i--)
	{
		values[0] = Int32GetDatum(ids[i]);
		rc = SPI_execute_with_args(
								   "WITH e AS (DELETE FROM outbox.event WHERE topic_id = $1), "
								   "r AS (DELETE FROM outbox.retry WHERE topic_id = $1), "
								   "a AS (DELETE FROM outbox.acked WHERE topic_id = $1), "
								   "d AS (DELETE FROM outbox.dead_letter WHERE topic_id = $1), "
								   "k AS (DELETE FROM outbox.dedupe WHERE topic_id = $1), "
								   "l AS (DELETE FROM outbox.redrive_log WHERE topic_id = $1) "
								   "DELETE FROM outbox.topic WHERE topic_id = $1",
								   1, (Oid *) intarg, values, NULL, false, 0);
		outbox_spi_check(rc, SPI_OK_DELETE, "drop_topic");
	}
	SPI_finish();

	if (outbox_shmem_available())
	{
		for (int i = 0; i < n; i++)
			outbox_xact_forget_topic(ids[i], incarnations[i]);
	}
	PG_RETURN_VOID();
}
