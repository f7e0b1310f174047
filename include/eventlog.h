/*-------------------------------------------------------------------------
 *
 * eventlog.h
 *	  Writing events into the log (eventlog.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_EVENTLOG_H
#define OUTBOX_EVENTLOG_H

#include "outbox.h"

/* eventlog.c: one event written into the log without the executor */
typedef struct OutboxLogRow
{
	int64		id;
	int32		topic_id;
	bool		delayed;
	TimestampTz available_at;	/* if delayed */
	Datum		key;			/* text, or 0 for NULL */
	Datum		type;
	Datum		tenant;
	Datum		payload;		/* jsonb, never NULL */
	Datum		headers;		/* jsonb, or 0 for NULL */
} OutboxLogRow;

extern void outbox_eventlog_init(void);
extern int64 outbox_next_event_id(void);
extern int64 outbox_last_event_id(void);
extern bool outbox_log_insert(const OutboxLogRow *row);

#endif							/* OUTBOX_EVENTLOG_H */
