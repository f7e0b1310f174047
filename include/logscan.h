/*-------------------------------------------------------------------------
 *
 * logscan.h
 *	  A topic's log in id order, read through its indexes (logscan.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_LOGSCAN_H
#define OUTBOX_LOGSCAN_H

#include "outbox.h"

/* logscan.c: a topic's log in id order, read through its indexes */
typedef enum OutboxEventCol
{
	EV_ID,
	EV_KEY,
	EV_TYPE,
	EV_PAYLOAD,
	EV_HEADERS,
	EV_TENANT,
	EV_CREATED_AT,
	OUTBOX_EVENT_NCOLS
} OutboxEventCol;

typedef struct OutboxEventRow
{
	int64		id;
	Datum		values[OUTBOX_EVENT_NCOLS];
	bool		nulls[OUTBOX_EVENT_NCOLS];
} OutboxEventRow;

/* Sorted ids a scan steps over; next is a cursor that only moves up */
typedef struct OutboxSkipList
{
	const int64 *ids;
	int			n;
	int			next;
} OutboxSkipList;

typedef struct OutboxLogScan OutboxLogScan;
extern OutboxLogScan *outbox_logscan_open(void);
extern void outbox_logscan_begin(OutboxLogScan *ls, Snapshot snap,
								 int32 topic_id, int64 after);
extern bool outbox_logscan_next(OutboxLogScan *ls, OutboxEventRow *row,
								OutboxSkipList *skip);
extern int64 outbox_logscan_examined(OutboxLogScan *ls);
extern void outbox_logscan_end(OutboxLogScan *ls);
extern void outbox_logscan_close(OutboxLogScan *ls);

#endif							/* OUTBOX_LOGSCAN_H */
