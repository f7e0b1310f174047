/*-------------------------------------------------------------------------
 *
 * reap.h
 *	  Expired leases and old acknowledgements (reap.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_REAP_H
#define OUTBOX_REAP_H

#include "outbox.h"

#define OUTBOX_ACK_PERIOD_USEC	(10 * USECS_PER_SEC)
extern int	outbox_ack_generation(void);
extern int	outbox_do_reap(void);

#endif							/* OUTBOX_REAP_H */
