/*
 * expiry.h — agora serve's worklist expiry.
 *
 * Scheduled procedure steps that were never performed (no-shows, orders
 * cancelled outside the archive) would stay on the modality worklist for
 * ever, and a modality that queries without a date would list them all.
 * While `agora serve` runs, a thread removes every step scheduled more
 * than keep_days days before today (local date), at start and then every
 * hour, and audits each removal as an Order Record deletion (PS3.15
 * A.5.3.17: DCM 110109, action D).
 */
#ifndef AG_CLI_EXPIRY_H
#define AG_CLI_EXPIRY_H

#include "audit/audit.h"
#include "store/store.h"

typedef struct WorklistExpiry WorklistExpiry;

/** Start expiring; keep_days 0 keeps every step (*out NULL, nothing
 *  started).  audit may be NULL.  s and audit outlive the expiry. */
int worklist_expiry_start(Store *s, AuditLog *audit, unsigned keep_days,
                          WorklistExpiry **out, AgError *err);

/** Stop and free (NULL is fine).  Returns once the thread is gone. */
void worklist_expiry_stop(WorklistExpiry *e);

#endif
