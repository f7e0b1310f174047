/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background workers (worker.c): the launcher, registered at load.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_WORKER_H
#define OUTBOX_WORKER_H

#include "outbox.h"

/* worker.c */
extern void outbox_register_launcher(void);

#endif							/* OUTBOX_WORKER_H */
