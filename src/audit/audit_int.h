/*
 * audit_int.h — internal to src/audit: the stored record, the chain hash,
 * the schema, the writer/exporter state and the message formats.
 */
#ifndef AG_AUDIT_INT_H
#define AG_AUDIT_INT_H

#include "audit.h"

#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>

#define AUDIT_KEY_BYTES 32     /* crypto_generichash_KEYBYTES */
#define AUDIT_HASH_BYTES 32    /* crypto_generichash_BYTES */
#define AUDIT_HASH_HEX (2 * AUDIT_HASH_BYTES + 1)
#define AUDIT_FIELD_MAX 1024
#define AUDIT_DETAIL_MAX 8192

/* A record as stored: the event plus its place in the chain.  The string
 * pointers are borrowed from whoever filled it (a queue node, a row). */
typedef struct AuditRecord {
    uint64_t seq;
    char time[AUDIT_TIME_SIZE];
    AuditEvent ev;
    uint8_t hash[AUDIT_HASH_BYTES];
} AuditRecord;

/* ---- codes.c ------------------------------------------------------------ */

bool audit__event_known(int code);
bool audit__type_known(int code);
/* The EventActionCode an event has when the caller gives none. */
char audit__default_action(AuditEventId event);

/* ---- chain.c ------------------------------------------------------------ */

/* hash_n over (seq, the fields of r, prev); r->hash is not read. */
void audit__hash_record(const uint8_t key[AUDIT_KEY_BYTES],
                        const AuditRecord *r,
                        const uint8_t prev[AUDIT_HASH_BYTES],
                        uint8_t out[AUDIT_HASH_BYTES]);
/* MAC of the chain head (seq, time, hash). */
void audit__head_mac(const uint8_t key[AUDIT_KEY_BYTES], uint64_t seq,
                     const char *time, const uint8_t hash[AUDIT_HASH_BYTES],
                     uint8_t out[AUDIT_HASH_BYTES]);
void audit__hex(const uint8_t *p, size_t n, char *out);
/* Parse exactly 2n hex digits; false otherwise. */
bool audit__unhex(const char *s, uint8_t *out, size_t n);
/* The current UTC time in the stored form. */
void audit__now(char out[AUDIT_TIME_SIZE]);
/* Append s to b as valid UTF-8 of at most max bytes (invalid bytes become
 * U+FFFD; a longer text is cut at a character and ends in "..."). */
int audit__utf8_clean(AgBuf *b, const char *s, size_t max);
/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
size_t audit__utf8_len(const uint8_t *p, size_t n, uint32_t *cp);

/* ---- store.c: audit.db and audit.key ------------------------------------ */

int audit__key_load(const char *data_dir, bool create,
                    uint8_t key[AUDIT_KEY_BYTES], AgError *err);
int audit__db_open(const char *data_dir, bool read_only, sqlite3 **out,
                   AgError *err);
/* Read the columns of the SELECT of AUDIT_ROW_COLUMNS at stmt into r (the
 * strings point into stmt until the next step). */
#define AUDIT_ROW_COLUMNS                                               \
    "seq, time, event, type, action, outcome, user, source, destination," \
    " patient_id, patient_name, study_uid, sop_class, count, detail, hash"
bool audit__row_read(sqlite3_stmt *st, AuditRecord *r);

/* ---- log.c: the search connection (one at a time) ---------------------- */

sqlite3 *audit__search_db_lock(AuditLog *log);
void audit__search_db_unlock(AuditLog *log);

/* ---- xml.c: the DICOM audit message (PS3.15 A.5.1) ---------------------- */

typedef struct AuditSource {
    const char *source_id;   /* AuditSourceID */
    const char *site_id;     /* AuditEnterpriseSiteID or NULL */
    const char *host;        /* our host name (NetworkAccessPointID) */
} AuditSource;

/* Append the XML document of r to out. */
int audit__xml(const AuditRecord *r, const AuditSource *src, AgBuf *out);
/* Append s escaped for XML text (attr: for an attribute value). */
int audit__xml_escape(AgBuf *out, const char *s, bool attr);

/* ---- syslog.c: RFC 5424 over TLS (RFC 5425) ----------------------------- */

/* Append the RFC 5425 frame "LEN SP SYSLOG-MSG" of r to out. */
int audit__syslog_frame(const AuditRecord *r, const AuditSource *src,
                        const char *app_procid, AgBuf *out);

typedef struct AuditExporter AuditExporter;
int audit__exporter_start(const AuditConfig *cfg, const AuditSource *src,
                          AuditExporter **out, AgError *err);
/* Wake the exporter: new records were committed. */
void audit__exporter_kick(AuditExporter *x);
/* Stop, giving it up to drain_ms to send what is committed. */
void audit__exporter_stop(AuditExporter *x, uint32_t drain_ms);
void audit__exporter_stats(AuditExporter *x, AuditStats *st);

#endif
