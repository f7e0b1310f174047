/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  What a session bound to a tenant may see and settle, and the admin
 *	  functions isolate_tenants, grant_tenant and revoke_tenant.  Which
 *	  tenant a session acts for is binding.c's.
 *
 *	  A session that acts for a tenant offers events of its tenant only,
 *	  claims from its tenant's part of per-tenant topics only, settles only
 *	  leases on its tenant's events, and sees and redrives only its tenant's
 *	  dead letters.
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

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(outbox_tenant_visible);
PG_FUNCTION_INFO_V1(outbox_isolate_tenants);
PG_FUNCTION_INFO_V1(outbox_grant_tenant);
PG_FUNCTION_INFO_V1(outbox_revoke_tenant);

/*
 * Keep, of the event ids a settling call names, those of the session's
 * tenant; all of them when it acts for none.  Returns how many are kept
 * (at the front of ids).  An event belongs to one topic for good, so what
 * is checked here cannot change before the leases are marked.
 */
int
outbox_tenant_filter_ids(int64 *ids, int n)
{
	char	   *tenant = outbox_session_tenant();
	int32	   *topic_ids;
	int			kept = 0;
	int32		last_topic = 0;
	bool		last_ok = false;

	if (tenant == NULL || n == 0 || !outbox_shmem_available())
		return n;

	topic_ids = palloc0(sizeof(int32) * n);
	outbox_entry_topic_ids(ids, n, topic_ids);

	SPI_connect();
	for (int i = 0; i < n; i++)
	{
		if (topic_ids[i] == 0)
			continue;
		if (topic_ids[i] != last_topic)
		{
			OutboxTopicInfo info;

			last_topic = topic_ids[i];
			last_ok = outbox_lookup_topic_by_id(last_topic, &info) &&
				info.is_part && strcmp(info.tenant, tenant) == 0;
		}
		if (last_ok)
			ids[kept++] = ids[i];
	}
	SPI_finish();
	pfree(topic_ids);
	return kept;
}

/*
 * _tenant_visible(tenant) returns boolean: may this session see an event
 * of that tenant?  Used by the dead_letters view.
 */
Datum
outbox_tenant_visible(PG_FUNCTION_ARGS)
{
	char	   *mine = outbox_session_tenant();
	char	   *tenant;
	bool		result;

	if (mine == NULL)
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	result = strcmp(tenant, mine) == 0;
	pfree(tenant);
	PG_RETURN_BOOL(result);
}

/*
 * isolate_tenants(topic): make a topic per-tenant.  Only before the topic's
 * first event: the events it holds would stay where no tenant's claim
 * looks.
 */
Datum
outbox_isolate_tenants(PG_FUNCTION_ARGS)
{
	char	   *name;
	OutboxTopicInfo info;
	static const Oid types[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;
	int			rc;

	outbox_require_writable("outbox.isolate_tenants()");
	outbox_require_schema();
	name = outbox_text_arg(fcinfo, 0, "topic", true);

	outbox_refuse_if_bound("outbox.isolate_tenants()");
	outbox_lock_topic(name, AccessExclusiveLock);
	SPI_connect();
	outbox_lookup_topic(name, &info);
	if (info.per_tenant)
	{
		SPI_finish();
		PG_RETURN_VOID();
	}

	values[0] = Int32GetDatum(info.topic_id);
	rc = SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM outbox.event WHERE topic_id = $1) "
							   "OR EXISTS (SELECT 1 FROM outbox.dead_letter WHERE topic_id = $1)",
							   1, (Oid *) types, values, NULL, true, 1);
	outbox_spi_check(rc, SPI_OK_SELECT, "isolate_tenants");
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								   1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("topic \"%s\" already holds events", name),
				 errdetail("A topic can be made per-tenant only before its first offer."),
				 errhint("Create a new topic and call outbox.isolate_tenants() on it first.")));

	rc = SPI_execute_with_args("UPDATE outbox.topic SET per_tenant = true WHERE topic_id = $1",
							   1, (Oid *) types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_UPDATE, "isolate_tenants");
	SPI_finish();
	PG_RETURN_VOID();
}

/* The role and tenant arguments of grant_tenant and revoke_tenant. */
static void
tenant_access_args(FunctionCallInfo fcinfo, Datum *values, const char *function)
{
	char	   *tenant;

	outbox_require_arg(fcinfo, 0, "role");
	tenant = outbox_text_arg(fcinfo, 1, "tenant", true);
	outbox_check_tenant_name(tenant);
	outbox_refuse_if_bound(function);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = CStringGetTextDatum(tenant);
}

/*
 * A role that may be bound: one that exists, is not a superuser (a bound
 * superuser could manage no topic and revoke no binding any more, and
 * bindings do not restrain superusers anyway), and is not one of the
 * extension's own roles (binding outbox_admin would bind every admin).
 */
static void
check_bindable(Oid role)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	NameData	name;
	bool		super;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
	name = ((Form_pg_authid) GETSTRUCT(tup))->rolname;
	super = ((Form_pg_authid) GETSTRUCT(tup))->rolsuper;
	ReleaseSysCache(tup);

	if (super)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a superuser cannot be bound to a tenant"),
				 errdetail("Role \"%s\" is a superuser.", NameStr(name))));
	if (strcmp(NameStr(name), "outbox_producer") == 0 ||
		strcmp(NameStr(name), "outbox_consumer") == 0 ||
		strcmp(NameStr(name), "outbox_admin") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role \"%s\" belongs to the extension and cannot be bound to a tenant",
						NameStr(name)),
				 errhint("Bind the application's own roles, or a group role made for the tenant.")));
}

/*
 * grant_tenant(role, tenant): bind role to tenant.  A role bound to any
 * tenant acts for its tenants only, from its next transaction on.
 */
Datum
outbox_grant_tenant(PG_FUNCTION_ARGS)
{
	static const Oid types[2] = {REGROLEOID, TEXTOID};
	Datum		values[2];
	int			rc;

	outbox_require_writable("outbox.grant_tenant()");
	outbox_require_schema();

	tenant_access_args(fcinfo, values, "outbox.grant_tenant()");
	check_bindable(DatumGetObjectId(values[0]));
	SPI_connect();
	rc = SPI_execute_with_args("INSERT INTO outbox.tenant_access (role, tenant) VALUES ($1, $2) "
							   "ON CONFLICT DO NOTHING",
							   2, (Oid *) types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_INSERT, "grant_tenant");
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * revoke_tenant(role, tenant) returns boolean: whether the binding existed.
 * A role whose last binding goes is no longer tenant-bound.
 */
Datum
outbox_revoke_tenant(PG_FUNCTION_ARGS)
{
	static const Oid types[2] = {REGROLEOID, TEXTOID};
	Datum		values[2];
	int			rc;
	bool		found;

	outbox_require_writable("outbox.revoke_tenant()");
	outbox_require_schema();

	tenant_access_args(fcinfo, values, "outbox.revoke_tenant()");
	SPI_connect();
	rc = SPI_execute_with_args("DELETE FROM outbox.tenant_access WHERE role = $1 AND tenant = $2",
							   2, (Oid *) types, values, NULL, false, 0);
	outbox_spi_check(rc, SPI_OK_DELETE, "revoke_tenant");
	found = SPI_processed > 0;
	SPI_finish();
	PG_RETURN_BOOL(found);
}
