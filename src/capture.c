/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Capture triggers: capture(), uncapture() and the row trigger
 *	  _capture() they attach, which turns every row inserted, updated or
 *	  deleted in a table into one event, offered in the changing
 *	  transaction (outbox_offer_one(), offer.c).
 *
 *	  capture(source, topic) creates, on the table, the trigger
 *	  outbox_capture_<topic_id>: AFTER INSERT OR UPDATE OR DELETE, FOR EACH
 *	  ROW, EXECUTE FUNCTION outbox._capture('<topic>', '<table>').  The
 *	  first argument is the topic (the view outbox.captures reads it), the
 *	  second the table's unqualified name at capture time, which the events'
 *	  types carry.  A row trigger on a partitioned table is cloned to each
 *	  of its partitions, present and future, so capturing the partitioned
 *	  table captures them all, under its name; a partition itself is not
 *	  captured.  The trigger is an ordinary one of the table: pg_dump dumps
 *	  it with the table.
 *
 *	  Each event has
 *		key		the primary key's value as text; for a key of several
 *				columns, a JSON array of their values as text, in the key's
 *				column order: ["42","eu"]
 *		type	'<table>.insert', '<table>.update' or '<table>.delete'
 *		payload	{"op": "insert"|"update"|"delete", "before": row or null,
 *				 "after": row or null}, rows as row_to_json() gives them
 *	  The key is read from the relation the trigger fires on: on a
 *	  partition, from the partition's own primary key index.  An update
 *	  that moves a row to another partition is a delete and an insert (no
 *	  AFTER UPDATE trigger fires for it).  TRUNCATE is not captured.
 *
 *	  capture() and uncapture() run as the extension's owner; the trigger
 *	  runs as the writer of the table, and only its offer as the owner
 *	  (offer_as_owner).  Whoever calls capture()
 *	  or uncapture() must own the table, or hold both TRIGGER and SELECT on
 *	  it: the events carry whole rows, so capturing a table must not let
 *	  an outbox_admin read a table it could not read itself.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "offer.h"
#include "schema.h"
#include "storage.h"
#include "tenant.h"
#include "topic.h"
#include "util.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/rls.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(outbox_capture);
PG_FUNCTION_INFO_V1(outbox_uncapture);
PG_FUNCTION_INFO_V1(outbox_capture_trigger);

/*
 * The primary key of the relation a capture trigger fires on, kept in the
 * trigger's fn_extra for the rest of the statement (each partition has a
 * trigger function call of its own; relid guards the cache anyway).
 */
typedef struct CaptureKey
{
	Oid			relid;
	int			nkeys;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	FmgrInfo	output[INDEX_MAX_KEYS];	/* each column's output function */
} CaptureKey;

/*
 * The key columns of rel's primary key, in key order, into attnums
 * (INDEX_MAX_KEYS of them at most); returns their number, 0 for a
 * relation without a primary key.  Included (non-key) columns of the index
 * are not part of the key.
 */
static int
primary_key_columns(Relation rel, AttrNumber *attnums)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	int			n = 0;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", lfirst_oid(lc));
		index = (Form_pg_index) GETSTRUCT(tup);
		if (index->indisprimary)
		{
			n = index->indnkeyatts;
			for (int i = 0; i < n; i++)
				attnums[i] = index->indkey.values[i];
			ReleaseSysCache(tup);
			break;
		}
		ReleaseSysCache(tup);
	}
	list_free(indexes);
	return n;
}

/*
 * The checks capture() and uncapture() make of their source table, from
 * the catalog: a table or partitioned table, not one of the outbox's own,
 * not a partition, and owned by the caller or readable and triggerable by
 * it.  The caller is the role that called the function (its outer role),
 * not the extension's owner the function runs as.
 */
static void
check_source(Oid relid, const char *function, const char *verb)
{
	HeapTuple	tup;
	Form_pg_class cls;
	Oid			caller = GetOuterUserId();
	char	   *relname;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	cls = (Form_pg_class) GETSTRUCT(tup);
	relname = pstrdup(NameStr(cls->relname));

	if (cls->relkind != RELKIND_RELATION &&
		cls->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s cannot %s \"%s\"", function, verb, relname),
				 errdetail("\"%s\" is not a table: only the row changes of a table or partitioned table are captured.",
						   relname)));
	if (cls->relnamespace == get_namespace_oid("outbox", true))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s cannot %s \"outbox.%s\"", function, verb, relname),
				 errdetail("The tables of the outbox extension are not captured.")));

	if (!has_privs_of_role(caller, cls->relowner) &&
		(pg_class_aclcheck(relid, caller, ACL_TRIGGER) != ACLCHECK_OK ||
		 pg_class_aclcheck(relid, caller, ACL_SELECT) != ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s table \"%s\"", verb, relname),
				 errdetail("Role \"%s\" neither owns the table nor has both TRIGGER and SELECT on it; the events would carry its rows.",
						   GetUserNameFromId(caller, false)),
				 errhint("The table's owner can call %s, or grant TRIGGER and SELECT on the table.",
						 function)));

	/*
	 * Row-level security that applies to the caller would not apply to the
	 * events, which carry every row: refused.
	 */
	if (strcmp(verb, "capture") == 0 &&
		check_enable_rls(relid, caller, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot capture table \"%s\": row-level security applies to role \"%s\"",
						relname, GetUserNameFromId(caller, false)),
				 errdetail("The events would carry every row."),
				 errhint("The table's owner, or a role that bypasses its row-level security, can call %s.",
						 function)));

	if (cls->relispartition)
	{
		List	   *ancestors = get_partition_ancestors(relid);
		Oid			root = llast_oid(ancestors);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot %s \"%s\": it is a partition", function,
						verb, relname),
				 errdetail("A capture trigger on a partitioned table covers all its partitions."),
				 errhint("Name its partitioned table \"%s\" instead.",
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(root)),
													get_rel_name(root)))));
	}
	ReleaseSysCache(tup);
}

/*
 * Runs check_source(), then locks the table as CREATE TRIGGER and DROP
 * TRIGGER do (the checks ran first, so that a caller without rights does
 * not queue for the lock), and checks again under the lock.  Returns the
 * table, open.
 */
static Relation
open_source(FunctionCallInfo fcinfo, const char *function, const char *verb)
{
	Oid			relid;

	outbox_require_arg(fcinfo, 0, "source");
	relid = PG_GETARG_OID(0);
	check_source(relid, function, verb);
	LockRelationOid(relid, ShareRowExclusiveLock);
	check_source(relid, function, verb);
	return table_open(relid, NoLock);
}

/* The table's schema-qualified name, quoted for SQL */
static char *
source_sql_name(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/*
 * The name of the trigger that captures rel into topic, or NULL.  The
 * trigger is found by its function and first argument (as the view
 * outbox.captures does), not by its name.  Clones on partitions are not
 * returned (the table is never a partition here).  Inside SPI.
 */
static char *
find_capture(Relation rel, const char *topic)
{
	Datum		values[2];
	static const Oid argtypes[2] = {OIDOID, TEXTOID};
	int			rc;

	values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	values[1] = CStringGetTextDatum(topic);
	rc = SPI_execute_with_args("SELECT tg.tgname FROM pg_catalog.pg_trigger tg "
							   "WHERE tg.tgrelid = $1 "
							   "AND tg.tgfoid = 'outbox._capture()'::pg_catalog.regprocedure "
							   "AND tg.tgparentid = 0::pg_catalog.oid AND tg.tgnargs = 2 "
							   "AND pg_catalog.convert_from(pg_catalog.substring(tg.tgargs, 1, "
							   "  pg_catalog.position(tg.tgargs, '\\x00'::pg_catalog.bytea) - 1), 'UTF8') = $2",
							   2, (Oid *) argtypes, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "capture lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * capture(source, topic): offer one event to topic for every row inserted,
 * updated or deleted in source, from now on.
 */
Datum
outbox_capture(PG_FUNCTION_ARGS)
{
	const char *function = "outbox.capture()";
	char	   *topic;
	Relation	rel;
	OutboxTopicInfo info;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	char	   *sql;
	int			rc;

	outbox_require_writable(function);
	outbox_require_schema();
	topic = outbox_text_arg(fcinfo, 1, "topic", true);
	outbox_check_topic_name(topic);
	outbox_refuse_if_bound(function);
	rel = open_source(fcinfo, function, "capture");

	/* a drop_topic waits until this commits, and then sees the capture */
	outbox_lock_topic(topic, AccessShareLock);

	SPI_connect();
	outbox_lookup_topic(topic, &info);

	if (primary_key_columns(rel, attnums) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot capture \"%s\": it has no primary key", function,
						RelationGetRelationName(rel)),
				 errdetail("The key of each event is the primary key of its row."),
				 errhint("Add a primary key to the table, then capture it.")));

	if (find_capture(rel, topic) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already captured into topic \"%s\"",
						RelationGetRelationName(rel), topic)));

	sql = psprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s "
				   "FOR EACH ROW EXECUTE FUNCTION outbox._capture(%s, %s)",
				   quote_identifier(psprintf("outbox_capture_%d", info.topic_id)),
				   source_sql_name(rel),
				   quote_literal_cstr(topic),
				   quote_literal_cstr(RelationGetRelationName(rel)));
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "capture: CREATE TRIGGER failed: %s", SPI_result_code_string(rc));
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * uncapture(source, topic): stop capturing source into topic.  Returns
 * false if it was not captured into topic.
 */
Datum
outbox_uncapture(PG_FUNCTION_ARGS)
{
	const char *function = "outbox.uncapture()";
	char	   *topic;
	Relation	rel;
	OutboxTopicInfo info;
	char	   *tgname;
	int			rc;

	outbox_require_writable(function);
	outbox_require_schema();
	topic = outbox_text_arg(fcinfo, 1, "topic", true);
	outbox_check_topic_name(topic);
	outbox_refuse_if_bound(function);
	rel = open_source(fcinfo, function, "uncapture");

	SPI_connect();
	outbox_lookup_topic(topic, &info);
	tgname = find_capture(rel, topic);
	if (tgname != NULL)
	{
		rc = SPI_execute(psprintf("DROP TRIGGER %s ON %s", quote_identifier(tgname),
								  source_sql_name(rel)),
						 false, 0);
		if (rc != SPI_OK_UTILITY)
			elog(ERROR, "uncapture: DROP TRIGGER failed: %s", SPI_result_code_string(rc));
	}
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_BOOL(tgname != NULL);
}

/* The primary key of the relation the trigger fires on, cached */
static CaptureKey *
capture_key(FunctionCallInfo fcinfo, Relation rel, const char *table)
{
	CaptureKey *ck = (CaptureKey *) fcinfo->flinfo->fn_extra;
	TupleDesc	desc = RelationGetDescr(rel);

	if (ck != NULL && ck->relid == RelationGetRelid(rel))
		return ck;

	if (ck == NULL)
	{
		ck = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(CaptureKey));
		fcinfo->flinfo->fn_extra = ck;
	}
	ck->relid = InvalidOid;
	ck->nkeys = primary_key_columns(rel, ck->attnums);
	if (ck->nkeys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("captured table \"%s\" has no primary key",
						RelationGetRelationName(rel)),
				 errdetail("The key of each event of a capture of \"%s\" is the primary key of its row.",
						   table),
				 errhint("Add the primary key back, or stop the capture with outbox.uncapture().")));
	for (int i = 0; i < ck->nkeys; i++)
	{
		Oid			typoutput;
		bool		typisvarlena;

		getTypeOutputInfo(TupleDescAttr(desc, ck->attnums[i] - 1)->atttypid,
						  &typoutput, &typisvarlena);
		fmgr_info_cxt(typoutput, &ck->output[i], fcinfo->flinfo->fn_mcxt);
	}
	ck->relid = RelationGetRelid(rel);
	return ck;
}

/*
 * The event key of a row: its primary key's value as text, or for several
 * columns a JSON array of their values as text.
 */
static Datum
row_key(CaptureKey *ck, HeapTuple tuple, TupleDesc desc)
{
	StringInfoData buf;

	if (ck->nkeys > 1)
	{
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '[');
	}
	for (int i = 0; i < ck->nkeys; i++)
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, ck->attnums[i], desc, &isnull);
		char	   *text;

		if (isnull)				/* a primary key column is NOT NULL */
			elog(ERROR, "primary key column \"%s\" is null",
				 NameStr(TupleDescAttr(desc, ck->attnums[i] - 1)->attname));
		text = OutputFunctionCall(&ck->output[i], value);
		if (ck->nkeys == 1)
			return CStringGetTextDatum(text);
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, text);
	}
	appendStringInfoChar(&buf, ']');
	return CStringGetTextDatum(buf.data);
}

/* Appends a row as row_to_json() writes it, or null */
static void
append_row(StringInfo buf, HeapTuple tuple, TupleDesc desc)
{
	text	   *json;

	if (tuple == NULL)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	json = DatumGetTextPP(DirectFunctionCall1(row_to_json,
											  heap_copy_tuple_as_datum(tuple, desc)));
	appendBinaryStringInfo(buf, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
}

/*
 * The offer itself runs as the extension's owner (the owner of
 * outbox._capture()), with search_path pinned, as every function of the
 * API does: the writer of the table needs no outbox role.  Everything
 * before it (the rows as JSON, the key's output functions, which may be
 * the writer's own casts and types) runs as the writer, so that none of
 * the writer's code ever runs with the owner's rights.  An error ends the
 * (sub)transaction, which restores the user and the setting.
 */
static void
offer_as_owner(FunctionCallInfo fcinfo, OutboxOffer *o)
{
	static Oid	owner = InvalidOid;
	static Oid	owner_of = InvalidOid;
	Oid			save_userid;
	int			save_sec;
	int			nest;

	if (owner_of != fcinfo->flinfo->fn_oid)
	{
		HeapTuple	tup = SearchSysCache1(PROCOID,
										  ObjectIdGetDatum(fcinfo->flinfo->fn_oid));

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
		owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
		owner_of = fcinfo->flinfo->fn_oid;
		ReleaseSysCache(tup);
	}

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	(void) outbox_offer_one(o);
	AtEOXact_GUC(true, nest);
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * _capture(topic, table): the row trigger capture() attaches.  Offers one
 * event per row change, in the changing transaction; see the head of this
 * file for its key, type and payload.
 */
Datum
outbox_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	desc;
	const char *op;
	HeapTuple	before = NULL;
	HeapTuple	after = NULL;
	CaptureKey *ck;
	StringInfoData payload;
	OutboxOffer o;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox._capture() may only be called as a trigger"),
				 errhint("Use outbox.capture() to capture a table.")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox._capture() must be fired AFTER INSERT, UPDATE or DELETE, FOR EACH ROW"),
				 errhint("Use outbox.capture() to capture a table.")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox._capture() takes two trigger arguments, the topic and the table name"),
				 errhint("Use outbox.capture() to capture a table.")));

	outbox_require_schema();
	outbox_storage_ready();

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = "insert";
		after = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = "update";
		before = trigdata->tg_trigtuple;
		after = trigdata->tg_newtuple;
	}
	else
	{
		op = "delete";
		before = trigdata->tg_trigtuple;
	}

	ck = capture_key(fcinfo, rel, trigger->tgargs[1]);

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"op\": \"%s\", \"before\": ", op);
	append_row(&payload, before, desc);
	appendStringInfoString(&payload, ", \"after\": ");
	append_row(&payload, after, desc);
	appendStringInfoChar(&payload, '}');

	memset(&o, 0, sizeof(o));
	o.topic = trigger->tgargs[0];
	o.payload = DirectFunctionCall1(jsonb_in, CStringGetDatum(payload.data));
	o.key = row_key(ck, after != NULL ? after : before, desc);
	o.type = CStringGetTextDatum(psprintf("%s.%s", trigger->tgargs[1], op));
	offer_as_owner(fcinfo, &o);

	return PointerGetDatum(NULL);
}
