/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  What differs between the PostgreSQL major versions outbox builds
 *	  against (15 to 18), in one place.  Every other file uses the names
 *	  defined here instead of testing PG_VERSION_NUM itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_COMPAT_H
#define OUTBOX_COMPAT_H

#include "postgres.h"

#include "access/genam.h"
#include "storage/proc.h"
#if PG_VERSION_NUM >= 170000
#include "storage/procnumber.h"
#else
#include "storage/backendid.h"
#endif

/*
 * Headers that PostgreSQL 15's headers included on the way and later ones
 * no longer do.
 */
#include "utils/array.h"

/*
 * The number of a backend's PGPROC, its index in ProcGlobal->allProcs.
 * PostgreSQL 17 removed PGPROC.pgprocno; GetNumberFromPGProc() computes it.
 */
#if PG_VERSION_NUM >= 170000
#define OutboxProcNumber(proc)	((int) GetNumberFromPGProc(proc))
#else
#define OutboxProcNumber(proc)	((proc)->pgprocno)
#endif

/*
 * This backend's index among the MaxBackends regular backends, background
 * workers and WAL senders, from 0: MyBackendId - 1 up to 16; PostgreSQL 17
 * replaced backend ids by 0-based proc numbers (MyProcNumber), which are
 * below MaxBackends for those processes.
 */
#if PG_VERSION_NUM >= 170000
#define OutboxMyBackendIndex()	((int) MyProcNumber)
#else
#define OutboxMyBackendIndex()	((int) MyBackendId - 1)
#endif

/*
 * index_beginscan() without instrumentation: PostgreSQL 18 added an
 * IndexScanInstrumentation argument.
 */
#if PG_VERSION_NUM >= 180000
#define outbox_index_beginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), NULL, (nkeys), (norderbys))
#else
#define outbox_index_beginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), (nkeys), (norderbys))
#endif

/* Is this process a background worker? */
#if PG_VERSION_NUM >= 170000
#define OutboxAmBackgroundWorker()	AmBackgroundWorkerProcess()
#else
#define OutboxAmBackgroundWorker()	IsBackgroundWorker
#endif

/*
 * A transactional logical decoding message.  PostgreSQL 17 added a flush
 * argument (for non-transactional messages; not wanted here).
 */
#if PG_VERSION_NUM >= 170000
#define outbox_log_logical_message(prefix, data, size) \
	LogLogicalMessage((prefix), (data), (size), true, false)
#else
#define outbox_log_logical_message(prefix, data, size) \
	LogLogicalMessage((prefix), (data), (size), true)
#endif

/*
 * Has a replication slot been invalidated (its WAL removed)?  PostgreSQL 16
 * replaced invalidated_at by a cause.  Caller holds the slot's mutex.
 */
#if PG_VERSION_NUM >= 160000
#define OutboxSlotInvalidated(slot)	((slot)->data.invalidated != RS_INVAL_NONE)
#else
#define OutboxSlotInvalidated(slot)	(!XLogRecPtrIsInvalid((slot)->data.invalidated_at))
#endif

#endif							/* OUTBOX_COMPAT_H */
