/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Delivery counters and latency histograms per topic (metrics.c for the
 *	  arithmetic and the SQL functions; shmem.c keeps them in shared
 *	  memory; xact.c counts at commit).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_METRICS_H
#define OUTBOX_METRICS_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * Latency buckets: [0, 1 ms), then four to an octave from 1 ms
 * ([2^(k/4), 2^((k+1)/4)) ms for k = 0 .. 87, up to 2^22 ms, about 70
 * minutes), then everything longer.  A percentile is reported as the
 * geometric middle of its bucket, within 2^(1/8) - 1 (9.1%) of the true
 * value from 1 ms to 70 minutes.
 */
#define OUTBOX_LAT_PER_OCTAVE	4
#define OUTBOX_LAT_OCTAVES		22
#define OUTBOX_LAT_BUCKETS		(OUTBOX_LAT_PER_OCTAVE * OUTBOX_LAT_OCTAVES + 2)

typedef struct OutboxHistogram
{
	uint64		buckets[OUTBOX_LAT_BUCKETS];
	int64		sum_usec;
	int64		max_usec;
} OutboxHistogram;

/* Offer to first claim (wait) and offer to ack (delivery) of one topic */
typedef struct OutboxLatency
{
	OutboxHistogram wait;
	OutboxHistogram delivery;
	int32		next_free;		/* shmem.c's free list */
} OutboxLatency;

/* What a committing transaction counts for a topic (xact.c) */
typedef enum OutboxCount
{
	COUNT_NACKED,
	COUNT_EXPIRED,
	COUNT_DEAD_LETTERED,
	COUNT_REDRIVEN
} OutboxCount;

extern int	outbox_metrics_topics;

extern void outbox_histogram_add(OutboxHistogram *h, int64 usec);

#endif							/* OUTBOX_METRICS_H */
