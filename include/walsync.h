/*-------------------------------------------------------------------------
 *
 * walsync.h
 *	  Delivery of WAL topics follows their slots (walsync.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_WALSYNC_H
#define OUTBOX_WALSYNC_H

#include "outbox.h"

extern int	outbox_wal_progress(void);

#endif							/* OUTBOX_WALSYNC_H */
