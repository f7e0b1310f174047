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
 * Latency buckets, four to an octave: [0, u), then [u * 2^(k/4),
 * u * 2^((k+1)/4)) for k = 0 .. 127, then everything from u * 2^32 on,
 * where u = 1000/1024 microseconds, so that 1 ms is an edge (k = 40) and
 * the last edge is 2^22 ms, about 70 minutes.  A percentile is reported as
 * the geometric middle of its bucket: within 2^(1/8) - 1 (9.1%) of the
 * true value from about 1 microsecond to 70 minutes.
 */
#define OUTBOX_LAT_PER_OCTAVE	4
#define OUTBOX_LAT_OCTAVES		32
#define OUTBOX_LAT_BUCKETS		(OUTBOX_LAT_PER_OCTAVE * OUTBOX_LAT_OCTAVES + 2)
#define OUTBOX_LAT_UNIT_USEC	(1000.0 / 1024.0)

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
