/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Delivery counters and latency histograms per topic: their layout and
 *	  the arithmetic of their buckets (here), the SQL functions (metrics.c);
 *	  shmem.c keeps them in shared memory and counts at commit what xact.c
 *	  recorded.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_METRICS_H
#define OUTBOX_METRICS_H

#include "postgres.h"

#include <math.h>

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

/* The bucket of a latency: see above */
static inline int
outbox_latency_bucket(int64 usec)
{
	double		octaves;
	int			k;

	if ((double) usec < OUTBOX_LAT_UNIT_USEC)
		return 0;
	octaves = log2((double) usec / OUTBOX_LAT_UNIT_USEC);
	k = (int) floor(octaves * OUTBOX_LAT_PER_OCTAVE);
	if (k >= OUTBOX_LAT_PER_OCTAVE * OUTBOX_LAT_OCTAVES)
		return OUTBOX_LAT_BUCKETS - 1;
	return 1 + Max(k, 0);
}

/* The lower edge of bucket b (b >= 1), in microseconds */
static inline double
outbox_latency_bucket_low_usec(int b)
{
	return OUTBOX_LAT_UNIT_USEC * pow(2.0, (double) (b - 1) / OUTBOX_LAT_PER_OCTAVE);
}

/*
 * Count one latency (shmem.c, under the shared state lock held
 * exclusively).
 */
static inline void
outbox_histogram_add(OutboxHistogram *h, int64 usec)
{
	h->buckets[outbox_latency_bucket(usec)]++;
	h->sum_usec += usec;
	if (usec > h->max_usec)
		h->max_usec = usec;
}

#endif							/* OUTBOX_METRICS_H */
