/*-------------------------------------------------------------------------
 *
 * storage.h
 *	  The log's partitions through pg_partman (storage.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_STORAGE_H
#define OUTBOX_STORAGE_H

#include "outbox.h"

/* storage.c */
extern char *outbox_partman_schema(void);
extern void outbox_partman_call(const char *sql, int expected);
extern bool outbox_ensure_storage(void);
extern void outbox_storage_ready(void);
extern void outbox_storage_init(void);

#endif							/* OUTBOX_STORAGE_H */
