/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Argument checks and small helpers (util.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_UTIL_H
#define OUTBOX_UTIL_H

#include "outbox.h"
#include "topic.h"
#include "utils/array.h"

/* util.c */
extern void outbox_check_delay(const OutboxTopicInfo *info, int64 delay_usec,
							   const char *argname);
extern int64 outbox_interval_usec(Interval *iv, const char *argname,
								  int64 min_usec, int64 max_usec,
								  bool min_inclusive);
extern char *outbox_text_arg(FunctionCallInfo fcinfo, int argno,
							 const char *argname, bool required);
extern void outbox_require_arg(FunctionCallInfo fcinfo, int argno,
							   const char *argname);
extern void outbox_require_writable(const char *function);
extern void outbox_random_uuid(pg_uuid_t *uuid);
extern int64 *outbox_int8_array(ArrayType *arr, const char *argname, int *n);
extern int64 outbox_backoff_usec(const OutboxTopicInfo *info, int attempt);
extern uint64 outbox_key_hash(const char *tenant, int tenant_len,
							  const char *key, int key_len);
extern bool outbox_column_attnums(TupleDesc desc, const char *const *names,
								  int n, AttrNumber *attnums);

#endif							/* OUTBOX_UTIL_H */
