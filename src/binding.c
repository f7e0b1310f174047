/*-------------------------------------------------------------------------
 *
 * binding.c
 *	  Which tenant a session acts for.  A session acts for a tenant when the
 *	  setting outbox.tenant names one, or when its role is bound to tenants
 *	  in outbox.tenant_access.  A bound role acts for one of its tenants
 *	  always: outbox.tenant picks which (it may be left empty when the role
 *	  has exactly one), and naming any other tenant is refused.
 *
 *	  A binding of a role binds its members.  The session is bound when its
 *	  session user or its current role is such a member (so SET ROLE cannot
 *	  shed a binding); the owner the API functions run as does not count.
 *	  What a bound session may then do is checked where it acts (tenant.c,
 *	  and the verbs that call outbox_refuse_if_bound).
 *
 *-------------------------------------------------------------------------
 */
#include "outbox.h"
#include "spi_util.h"
#include "tenant.h"

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

char	   *outbox_tenant_setting = NULL;

/*
 * The tenants the session is bound to, for the session user and current
 * role last looked up.  Emptied by any relcache invalidation
 * (outbox.tenant_access has a trigger that sends one) and by any change of
 * role memberships: a GRANT of a bound role binds its new member at once.
 */
static bool bindings_valid = false;
static Oid	bindings_session = InvalidOid;
static Oid	bindings_role = InvalidOid;
static List *bindings = NIL;	/* of char *, in TopMemoryContext */

static void
bindings_invalidate(Datum arg, Oid relid)
{
	bindings_valid = false;
}

/* Role memberships changed (GRANT or REVOKE of a role, a role dropped). */
static void
memberships_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	bindings_valid = false;
}

void
outbox_tenant_init(void)
{
	CacheRegisterRelcacheCallback(bindings_invalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, memberships_invalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, memberships_invalidate, (Datum) 0);
}

/*
 * The tenants this session is bound to (NIL: none).  A binding of a role
 * binds every member of it, and it binds the session when either its
 * session user (which SET ROLE does not change) or its current role is
 * such a member: a bound login cannot shed its binding by SET ROLE to
 * one of the outbox roles it holds.
 */
static List *
role_bindings(void)
{
	Oid			session = GetSessionUserId();
	Oid			role = GetOuterUserId();
	int			rc;
	MemoryContext old;

	if (bindings_valid && bindings_session == session && bindings_role == role)
		return bindings;

	bindings_valid = false;
	list_free_deep(bindings);
	bindings = NIL;

	SPI_connect();
	rc = SPI_execute_snapshot(outbox_plan(PLAN_TENANT_BINDINGS,
										  "SELECT role, tenant FROM outbox.tenant_access "
										  "ORDER BY tenant",
										  0, NULL),
							  NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	outbox_spi_check(rc, SPI_OK_SELECT, "tenant lookup");

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			bound = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1,
														   &isnull));
		char	   *t;

		if (!is_member_of_role_nosuper(session, bound) &&
			!is_member_of_role_nosuper(role, bound))
			continue;
		t = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		if (bindings != NIL && strcmp(llast(bindings), t) == 0)
			continue;			/* bound to it through two roles */
		old = MemoryContextSwitchTo(TopMemoryContext);
		bindings = lappend(bindings, pstrdup(t));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();

	bindings_session = session;
	bindings_role = role;
	bindings_valid = true;
	return bindings;
}

/* Is the session's current role bound to tenants? */
bool
outbox_session_bound(void)
{
	return role_bindings() != NIL;
}

/*
 * The tenant this session acts for (palloc'd), or NULL when it acts for
 * none.  Errors out when a bound role names a tenant it is not bound to,
 * or names none while bound to several.
 */
char *
outbox_session_tenant(void)
{
	const char *setting = outbox_tenant_setting;
	List	   *bound = role_bindings();
	ListCell   *lc;

	if (setting != NULL && setting[0] == '\0')
		setting = NULL;
	if (bound == NIL)
		return setting ? pstrdup(setting) : NULL;

	if (setting == NULL)
	{
		if (list_length(bound) == 1)
			return pstrdup(linitial(bound));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is bound to several tenants and must name one",
						GetUserNameFromId(GetOuterUserId(), false)),
				 errhint("SET outbox.tenant to one of the tenants granted to the role.")));
	}
	foreach(lc, bound)
	{
		if (strcmp(lfirst(lc), setting) == 0)
			return pstrdup(setting);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not act for tenant \"%s\"",
					GetUserNameFromId(GetOuterUserId(), false), setting),
			 errhint("An admin can allow it with outbox.grant_tenant().")));
	return NULL;				/* keep compiler quiet */
}

/* Refuse what tenant-bound roles may not do: manage topics and tenants. */
void
outbox_refuse_if_bound(const char *function)
{
	if (outbox_session_bound())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s is not allowed for a tenant-bound role", function),
				 errdetail("Role \"%s\" is bound to tenants in outbox.tenant_access.",
						   GetUserNameFromId(GetOuterUserId(), false))));
}

/* A tenant name: 1 to OUTBOX_TENANT_MAX bytes */
void
outbox_check_tenant_name(const char *tenant)
{
	size_t		len = strlen(tenant);

	if (len == 0 || len > OUTBOX_TENANT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant \"%s\"", tenant),
				 errdetail("A tenant of a per-tenant topic, or one granted to a role, has 1 to %d bytes.",
						   OUTBOX_TENANT_MAX)));
}

