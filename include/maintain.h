/*-------------------------------------------------------------------------
 *
 * maintain.h
 *	  Retirement of old partitions and dedupe keys (maintain.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_MAINTAIN_H
#define OUTBOX_MAINTAIN_H

#include "outbox.h"

extern bool outbox_do_maintain(bool one_partition);

#endif							/* OUTBOX_MAINTAIN_H */
