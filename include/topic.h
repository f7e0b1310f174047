/*-------------------------------------------------------------------------
 *
 * topic.h
 *	  Topics as the catalog describes them (topic.c): lookups, locks, parts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_TOPIC_H
#define OUTBOX_TOPIC_H

#include "outbox.h"
#include "storage/lockdefs.h"

/* topic.c */
typedef struct OutboxTopicInfo
{
	int32		topic_id;
	int64		incarnation;
	int32		max_attempts;
	int64		retention_usec;
	int64		backoff_base_usec;
	int64		backoff_max_usec;
	bool		ordered;
	bool		per_tenant;		/* each tenant's events apart */
	bool		is_part;		/* one tenant's part of a per-tenant topic */
	bool		cacheable;		/* the topic row is committed */
	bool		wal;			/* delivered through the WAL, not claimed */
	char		slot[NAMEDATALEN];	/* its logical replication slot, or "" */
	char		name[OUTBOX_TOPIC_NAME_MAX + 1];
	char		tenant[OUTBOX_TENANT_MAX + 1];	/* of a part, else "" */
} OutboxTopicInfo;

extern void outbox_lookup_topic(const char *name, OutboxTopicInfo *info);
extern bool outbox_lookup_topic_by_id(int32 topic_id, OutboxTopicInfo *info);
extern void outbox_lock_topic(const char *name, LOCKMODE mode);
extern void outbox_check_topic_name(const char *name);
extern void outbox_topic_cache_init(void);
extern bool outbox_lookup_topic_part(const OutboxTopicInfo *topic,
									 const char *tenant, bool create,
									 OutboxTopicInfo *part);
extern int	outbox_topic_family(int32 topic_id, int32 **ids, int64 **incarnations);

#endif							/* OUTBOX_TOPIC_H */
