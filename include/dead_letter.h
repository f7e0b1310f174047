/*-------------------------------------------------------------------------
 *
 * dead_letter.h
 *	  Retries and dead letters (dead_letter.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_DEAD_LETTER_H
#define OUTBOX_DEAD_LETTER_H

#include "outbox.h"

extern void outbox_send_to_dead_letter(int64 event_id, int32 topic_id,
									   int attempts, const char *reason,
									   const char *error);
extern void outbox_schedule_retry(int64 event_id, int32 topic_id,
								  int attempts, TimestampTz available_at,
								  const char *error);

#endif							/* OUTBOX_DEAD_LETTER_H */
