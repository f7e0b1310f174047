/*-------------------------------------------------------------------------
 *
 * offer.h
 *	  One offer made from C (offer.c): what offer() does for SQL callers,
 *	  for other parts of the extension (capture triggers).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_OFFER_H
#define OUTBOX_OFFER_H

#include "outbox.h"

typedef struct OutboxOffer
{
	const char *topic;			/* never NULL */
	Datum		payload;		/* jsonb, never NULL */
	Datum		key;			/* text, or 0 for NULL */
	Datum		type;			/* text, or 0 for NULL */
	Datum		headers;		/* jsonb object, or 0 for NULL */
	char	   *tenant;			/* or NULL */
	char	   *dedupe_key;		/* or NULL */
	bool		has_available_at;
	TimestampTz available_at;
} OutboxOffer;

/*
 * Store one event in the current transaction; returns its id (or that of
 * the event already stored under the dedupe key).  Opens and closes its
 * own SPI connection.
 */
extern int64 outbox_offer_one(OutboxOffer *offer);

#endif							/* OUTBOX_OFFER_H */
