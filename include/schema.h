/*-------------------------------------------------------------------------
 *
 * schema.h
 *	  The installed schema against the library (schema.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SCHEMA_H
#define OUTBOX_SCHEMA_H

#include "outbox.h"

/* schema.c */
extern char *outbox_installed_version(void);
extern bool outbox_schema_current(char **installed);
extern void outbox_require_schema(void);

#endif							/* OUTBOX_SCHEMA_H */
