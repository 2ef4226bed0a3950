/*
 * audit.h — the tamper-evident audit trail (DESIGN.md §3, SECURITY.md
 * rule 6): one record per security-relevant action, with the fields of the
 * DICOM audit message (PS3.15 A.5.1, A.5.3): who, which patient and study,
 * when, from where, and with what outcome.
 *
 * Storage.  DIR/audit.db is an SQLite database (WAL) of its own, apart from
 * the index, so that audit writes never contend with ingest.  Records are
 * append-only and numbered 1, 2, 3, ... without gaps (seq).  DIR/audit.key
 * holds 32 random bytes (libsodium), made with mode 0600 on first open and
 * never logged or exported.
 *
 * Chain.  Each record stores
 *     hash_n = BLAKE2b-256 keyed with audit.key over
 *              ("agora.audit.v1", seq, every field of record n, hash_{n-1})
 * (hash_0 is 32 zero bytes; every field is length-prefixed so that no two
 * records encode alike).  A one-row table, the chain head, holds the last
 * (seq, time, hash) and a keyed MAC of them; it is written in the same
 * transaction as the records.  audit_verify() walks the records in seq
 * order and reports the first one that was changed, removed (a gap, or a
 * tail shorter than the head says) or moved (reordered).
 *
 * What this protects against.  Someone who can write audit.db but does not
 * have audit.key cannot change a field of any record, insert a record,
 * remove records (from the middle or the end), renumber or reorder them,
 * or rewrite the chain head, without audit_verify() naming the first
 * record concerned: every one of those needs a keyed hash or MAC.  Such a
 * person CAN read every record (the database is not encrypted: keep DIR
 * private), delete audit.db as a whole (verify then finds no log), or put
 * back an entire older copy of audit.db (a rollback: internally
 * consistent, so undetectable from the file alone).  Someone who also has
 * audit.key (root on the server) can rewrite the whole chain.  Against
 * both, export the trail as it is written to a syslog collector on
 * another machine (below): what reached it is out of the attacker's reach,
 * and its copy shows what a rollback removed.
 *
 * Writing.  audit_record() copies the event into a bounded queue and
 * returns; one writer thread assigns seq numbers and commits batches in
 * one transaction each (synchronous=FULL: a committed record survives a
 * power cut).  audit_flush() waits until everything recorded before it is
 * committed.  Several processes (the server and `agora` commands) may
 * write the same log: each transaction reads the head under SQLite's write
 * lock, so seq numbers stay gapless.  Times are UTC with microseconds and
 * never decrease along the chain (a clock stepping back records the
 * previous record's time).
 *
 * Export (PS3.15 A.6, IHE ATNA).  When configured, a sender thread
 * sends every record after a per-collector cursor, as an RFC 5424 syslog
 * message whose MSG is the DICOM audit message XML (PS3.15 A.5.1), over
 * TLS (RFC 5425 octet counting, the TLS policy of SECURITY.md rule 7,
 * collector verified against a CA).  The log is its own durable queue:
 * the cursor (in audit.db) advances only after a successful write, so a
 * collector outage only delays messages, and a restart resumes where the
 * last run stopped.  A collector seen for the first time starts after the
 * records that exist when the log is opened.  TCP gives no receipt: a
 * message written just before the connection dies may be lost or, after a
 * crash, sent twice.
 *
 * PHI.  Records hold patient IDs, names and query keys: they belong in
 * audit.db (and the collector), never in ag_log() lines.  This module logs
 * only counts, sequence numbers and error texts.
 *
 * Thread-safety: every function may be called from any thread, except
 * audit_close().  A NULL AuditLog makes audit_record() and audit_flush()
 * no-ops, so callers need no special case when auditing is not set up.
 */
#ifndef AG_AUDIT_H
#define AG_AUDIT_H

#include "core/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct AuditLog AuditLog;

/* ---- events (PS3.16 CID 400 "Audit Event ID", codes of scheme DCM) ---- */

typedef enum AuditEventId {
    AUDIT_APPLICATION_ACTIVITY = 110100,  /* A.5.3.1 */
    AUDIT_LOG_USED = 110101,              /* A.5.3.2 */
    AUDIT_BEGIN_TRANSFERRING = 110102,    /* A.5.3.3 */
    AUDIT_INSTANCES_ACCESSED = 110103,    /* A.5.3.4 */
    AUDIT_INSTANCES_TRANSFERRED = 110104, /* A.5.3.5 */
    AUDIT_STUDY_DELETED = 110105,         /* A.5.3.6 */
    AUDIT_EXPORT = 110106,                /* A.5.3.7 */
    AUDIT_IMPORT = 110107,                /* A.5.3.8 */
    AUDIT_NETWORK_ENTRY = 110108,         /* A.5.3.9 */
    AUDIT_ORDER_RECORD = 110109,          /* A.5.3.10 */
    AUDIT_PATIENT_RECORD = 110110,        /* A.5.3.11 */
    AUDIT_PROCEDURE_RECORD = 110111,      /* A.5.3.12 */
    AUDIT_QUERY = 110112,                 /* A.5.3.13 */
    AUDIT_SECURITY_ALERT = 110113,        /* A.5.3.14 */
    AUDIT_USER_AUTHENTICATION = 110114,   /* A.5.3.15 */
} AuditEventId;

/* Event type codes (EventTypeCode) where A.5.3 defines them: CID 401
 * Application Activity, CID 403 Security Alert, CID 404 User
 * Authentication, CID 405 Network Entry. */
typedef enum AuditEventType {
    AUDIT_TYPE_NONE = 0,
    AUDIT_TYPE_APPLICATION_START = 110120,
    AUDIT_TYPE_APPLICATION_STOP = 110121,
    AUDIT_TYPE_LOGIN = 110122,
    AUDIT_TYPE_LOGOUT = 110123,
    AUDIT_TYPE_ATTACH = 110124,
    AUDIT_TYPE_DETACH = 110125,
    AUDIT_TYPE_NODE_AUTHENTICATION = 110126,
    AUDIT_TYPE_EMERGENCY_OVERRIDE_STARTED = 110127,
    AUDIT_TYPE_NETWORK_CONFIGURATION = 110128,
    AUDIT_TYPE_SECURITY_CONFIGURATION = 110129,
    AUDIT_TYPE_HARDWARE_CONFIGURATION = 110130,
    AUDIT_TYPE_SOFTWARE_CONFIGURATION = 110131,
    AUDIT_TYPE_USE_OF_RESTRICTED_FUNCTION = 110132,
    AUDIT_TYPE_AUDIT_RECORDING_STOPPED = 110133,
    AUDIT_TYPE_AUDIT_RECORDING_STARTED = 110134,
    AUDIT_TYPE_OBJECT_SECURITY_ATTRIBUTES_CHANGED = 110135,
    AUDIT_TYPE_SECURITY_ROLES_CHANGED = 110136,
    AUDIT_TYPE_USER_SECURITY_ATTRIBUTES_CHANGED = 110137,
    AUDIT_TYPE_EMERGENCY_OVERRIDE_STOPPED = 110138,
} AuditEventType;

/* EventOutcomeIndicator (PS3.15 A.5.1). */
typedef enum AuditOutcome {
    AUDIT_SUCCESS = 0,
    AUDIT_MINOR_FAILURE = 4,    /* e.g. a refused login, an unknown AE */
    AUDIT_SERIOUS_FAILURE = 8,  /* the action failed */
    AUDIT_MAJOR_FAILURE = 12,   /* the action made the system unavailable */
} AuditOutcome;

/*
 * One event.  Every pointer is borrowed for the call (audit_record copies
 * it); NULL means absent.  Strings are UTF-8: invalid bytes are stored as
 * U+FFFD; control characters are kept and escaped on output.  Fields over
 * 1024 bytes (detail: 8192) are cut at a character boundary and end in
 * "...".
 *
 * How the actions of issue 7 map (PS3.15 A.5.3; action: EventActionCode):
 *
 *   action                      event / type                      action
 *   login ok / refused          USER_AUTHENTICATION / LOGIN       E  (0 / 4)
 *   logout                      USER_AUTHENTICATION / LOGOUT      E
 *   C-FIND, QIDO-RS             QUERY (detail: the keys;          E
 *                               sop_class: the FIND model, if any)
 *   C-MOVE, C-GET, WADO-RS      INSTANCES_TRANSFERRED (DIMSE,     R
 *                               WADO download) or
 *                               INSTANCES_ACCESSED (viewing)
 *   C-STORE, STOW-RS received   INSTANCES_TRANSFERRED             C
 *   agora import                IMPORT                            C
 *   delete                      STUDY_DELETED                     D
 *   share granted / revoked     SECURITY_ALERT /                  U
 *                               OBJECT_SECURITY_ATTRIBUTES_CHANGED
 *   break-the-glass             SECURITY_ALERT /                  E
 *                               EMERGENCY_OVERRIDE_STARTED (detail: the
 *                               reason); ..._STOPPED when it ends
 *   configuration change        SECURITY_ALERT / NETWORK_, SECURITY_ or
 *                               SOFTWARE_CONFIGURATION            U
 *   user, role changes          SECURITY_ALERT / USER_SECURITY_
 *                               ATTRIBUTES_CHANGED, SECURITY_ROLES_CHANGED
 *   association accepted /      SECURITY_ALERT / NODE_AUTHENTICATION
 *   refused                     (0 / 4; detail: why refused)      E
 *   other security alert        SECURITY_ALERT / the closest type E
 *   audit trail searched        LOG_USED                          R
 *   server start / stop         APPLICATION_ACTIVITY /            E
 *                               APPLICATION_START, _STOP
 */
typedef struct AuditEvent {
    AuditEventId event;         /* required */
    AuditEventType type;        /* AUDIT_TYPE_NONE if the event has none */
    char action;                /* 'C','R','U','D','E'; 0: the event's usual */
    AuditOutcome outcome;
    const char *user;           /* who: user name, or the calling AE title */
    const char *source;         /* from where: the peer's network address */
    const char *destination;    /* the other end: our AE title, a C-MOVE
                                   destination, a host */
    const char *patient_id;
    const char *patient_name;
    const char *study_uid;
    const char *sop_class;      /* SOP Class UID of a query or transfer */
    uint64_t count;             /* instances concerned; 0 = not given */
    const char *detail;         /* free text: query keys, the reason for a
                                   break-the-glass or a refusal, ... */
} AuditEvent;

/** "Query", "Login", ...; "" for an unknown code.  Never NULL. */
const char *audit_code_name(int code);

/* ---- opening ------------------------------------------------------------ */

typedef struct AuditConfig {
    const char *data_dir;       /* required: holds audit.db and audit.key */
    const char *source_id;      /* AuditSourceID of exported messages (our
                                   AE title); NULL = "AGORA" */
    const char *site_id;        /* AuditEnterpriseSiteID; optional */
    uint32_t queue_max;         /* records waiting for the writer; 0 = 8192 */
    /* Export (PS3.15 A.6): off while syslog_host is NULL. */
    const char *syslog_host;    /* collector host name or address */
    uint16_t syslog_port;       /* 0 = 6514 (RFC 5425) */
    const char *syslog_ca;      /* CAs (PEM) to verify the collector;
                                   required for export */
    const char *syslog_cert;    /* optional client certificate and key */
    const char *syslog_key;     /* (PEM), for collectors that ask */
} AuditConfig;

/**
 * Open (creating if needed) DIR/audit.db and DIR/audit.key, start the
 * writer thread and, when configured, the export thread.  Refuses to make
 * a new key for a log that already has records (that would break the
 * chain), and to append to a log whose chain head fails its MAC (new
 * records would hide the damage): AG_ERR_INVALID, run `agora audit
 * verify`.  Errors name the file.
 */
int audit_open(const AuditConfig *cfg, AuditLog **out, AgError *err);

/**
 * Commit every queued record (retrying for a few seconds if the disk
 * fails), give the exporter up to two seconds to send what is left, stop
 * the threads and close.  Unsent records stay in the log and are sent by
 * the next run.  NULL is fine.
 */
void audit_close(AuditLog *log);

/* ---- recording ---------------------------------------------------------- */

/**
 * Queue one event, stamped with the current UTC time; the writer thread
 * commits it.  Cheap: one copy and a mutex.  When the queue is full
 * (the disk is failing or very slow) it waits up to two seconds, then
 * gives up with AG_ERR_LIMIT; the loss is counted and recorded as a
 * Security Alert (Audit Recording Stopped) once the writer recovers.
 * log NULL: does nothing and returns AG_OK.
 * @return AG_OK, AG_ERR_INVALID (unknown event, type, action or outcome),
 *         AG_ERR_NOMEM, AG_ERR_LIMIT.  err may be NULL.
 */
int audit_record(AuditLog *log, const AuditEvent *ev, AgError *err);

/**
 * Wait until every record queued before this call is committed.
 * @return AG_OK, or AG_ERR_IO when the writer could not commit (the
 *         records stay queued and are retried).  log NULL: AG_OK.
 */
int audit_flush(AuditLog *log, AgError *err);

/* ---- searching (GET /api/v1/audit, `agora audit list`) ------------------ */

#define AUDIT_SEARCH_DEFAULT 100
#define AUDIT_SEARCH_MAX 10000

typedef struct AuditFilter {
    const char *user;           /* exact match; NULL = any */
    const char *patient_id;     /* exact match */
    const char *study_uid;      /* exact match */
    int event;                  /* an event ID or event type code; 0 = any */
    char action;                /* 'C','R','U','D','E'; 0 = any */
    bool failures;              /* only outcome != AUDIT_SUCCESS */
    const char *since;          /* ISO 8601 (see audit_time_parse), */
    const char *until;          /* both inclusive; NULL = open */
    uint64_t before;            /* key paging: only seq < before; 0 = none */
    uint32_t offset;
    uint32_t limit;             /* 0 = AUDIT_SEARCH_DEFAULT; capped at
                                   AUDIT_SEARCH_MAX */
} AuditFilter;

/**
 * Records matching every given filter, newest first, as a new JSON array
 * of objects (caller json_decref()s *out):
 *   {"seq": 12, "time": "2024-05-01T09:30:00.123456Z",
 *    "event": 110112, "event_name": "Query",
 *    "type": 110122, "type_name": "Login",          (when there is a type)
 *    "action": "E", "outcome": 0, "user": ..., "source": ...,
 *    "destination": ..., "patient_id": ..., "patient_name": ...,
 *    "study_uid": ..., "sop_class": ..., "count": 3, "detail": ...}
 * Absent fields are left out.  Flushes first, so a search sees every
 * record made before it.  The caller records AUDIT_LOG_USED itself
 * (it knows who asked).
 * @return AG_OK, AG_ERR_INVALID (a bad since/until: the message names
 *         it), AG_ERR_IO, AG_ERR_NOMEM.
 */
int audit_search(AuditLog *log, const AuditFilter *f, json_t **out,
                 AgError *err);

/* ---- times -------------------------------------------------------------- */

#define AUDIT_TIME_SIZE 28   /* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" + NUL */

/**
 * Parse an ISO 8601 time as the auditor writes it into the stored form
 * (UTC, microseconds): "2024-05-01", "20240501", "2024-05-01T09:30",
 * "2024-05-01 09:30:15", "...:15.25", each optionally ending in "Z" or an
 * offset "+02:00"/"-0500" (none means UTC).  With end set, the unwritten
 * parts are filled up to the end of the period ("2024-05-01" -> 23:59:
 * 59.999999), so that "until a day" includes the day.
 * @return AG_OK or AG_ERR_INVALID naming the text.
 */
int audit_time_parse(const char *text, bool end, char out[AUDIT_TIME_SIZE],
                     AgError *err);

/* ---- verifying (`agora audit verify`) ----------------------------------- */

typedef enum AuditProblem {
    AUDIT_INTACT = 0,
    AUDIT_CHANGED,      /* a record's content does not match its hash */
    AUDIT_MISSING,      /* records removed: a gap, or the tail */
    AUDIT_REORDERED,    /* a record is not where its hash puts it */
    AUDIT_FOREIGN,      /* a record outside the chain (not written by us) */
    AUDIT_HEAD,         /* the chain head is missing or was changed */
} AuditProblem;

typedef struct AuditVerifyResult {
    uint64_t records;   /* records in the log */
    AuditProblem problem;
    uint64_t seq;       /* the first bad record's sequence number */
    char what[256];     /* e.g. "record 7 changed: its content does not
                           match its hash" */
} AuditVerifyResult;

/**
 * Check the whole chain of DIR/audit.db with DIR/audit.key, read-only, in
 * one read transaction (a running server may keep writing).  The first
 * problem found is reported in *out.
 * @return AG_OK when the check ran (then see out->problem), AG_ERR_NOTFOUND
 *         when there is no log or no key, AG_ERR_IO.
 */
int audit_verify(const char *data_dir, AuditVerifyResult *out, AgError *err);

/* ---- state (tests, /metrics) -------------------------------------------- */

typedef struct AuditStats {
    uint64_t queued;        /* recorded, not yet committed */
    uint64_t last_seq;      /* last sequence number this process committed */
    uint64_t lost;          /* records refused because the queue was full */
    uint64_t exported_seq;  /* export cursor (0 without export) */
    bool export_connected;  /* a TLS connection to the collector is up */
} AuditStats;

void audit_stats(AuditLog *log, AuditStats *out);

#endif
