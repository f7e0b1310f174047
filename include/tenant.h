/*-------------------------------------------------------------------------
 *
 * tenant.h
 *	  Tenants: which tenant a session acts for (binding.c) and what it may
 *	  settle (tenant.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_TENANT_H
#define OUTBOX_TENANT_H

#include "outbox.h"

/* binding.c */
extern char *outbox_tenant_setting;
extern void outbox_tenant_init(void);
extern bool outbox_session_bound(void);
extern char *outbox_session_tenant(void);
extern void outbox_refuse_if_bound(const char *function);
extern void outbox_check_tenant_name(const char *tenant);

/* tenant.c */
extern int	outbox_tenant_filter_ids(int64 *ids, int n);

#endif							/* OUTBOX_TENANT_H */
