/*
 * verify.c — audit_verify(): walk the chain in seq order, recompute every
 * keyed hash, and name the first record that was changed, removed or
 * moved; then check the chain head, which catches a shortened tail.
 *
 * Everything runs in one read transaction, so a server that keeps
 * appending while we walk cannot make a consistent log look broken.
 */
#include "audit_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct Walk {
    sqlite3 *db;
    const uint8_t *key;
    uint64_t expected;                  /* the next seq the chain needs */
    uint8_t prev[AUDIT_HASH_BYTES];     /* hash of expected - 1 */
    char prev_time[AUDIT_TIME_SIZE];
    AuditVerifyResult *out;
} Walk;

static void problem(Walk *w, AuditProblem p, uint64_t seq, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void problem(Walk *w, AuditProblem p, uint64_t seq, const char *fmt,
                    ...)
{
    w->out->problem = p;
    w->out->seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->out->what, sizeof w->out->what, fmt, ap);
    va_end(ap);
}

static bool hash_ok(const Walk *w, AuditRecord *r, bool valid)
{
    uint8_t h[AUDIT_HASH_BYTES];
    audit__hash_record(w->key, r, w->prev, h);
    return valid && sodium_memcmp(h, r->hash, AUDIT_HASH_BYTES) == 0;
}

/* Record k failed its hash.  If some row's content belongs at k (it
 * hashes correctly with seq k after record k-1), rows were moved:
 * reordered.  Otherwise its content was changed. */
static int diagnose(Walk *w, uint64_t k, const AuditRecord *bad,
                    AgError *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(w->db, "SELECT " AUDIT_ROW_COLUMNS " FROM events",
                           -1, &st, NULL) != SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "audit.db: %s",
                            sqlite3_errmsg(w->db));
    }
    int64_t found = 0;
    while (found == 0 && sqlite3_step(st) == SQLITE_ROW) {
        AuditRecord r;
        bool valid = audit__row_read(st, &r);
        uint64_t stored = r.seq;
        r.seq = k;
        if (stored != k && hash_ok(w, &r, valid)) {
            found = (int64_t)stored;
        }
    }
    sqlite3_finalize(st);
    if (found != 0) {
        problem(w, AUDIT_REORDERED, k, "record %llu out of order: its "
                "content is stored as record %lld", (unsigned long long)k,
                (long long)found);
    } else if (k > 1 && strcmp(bad->time, w->prev_time) < 0) {
        problem(w, AUDIT_REORDERED, k, "record %llu out of order: its time "
                "is before record %llu's", (unsigned long long)k,
                (unsigned long long)(k - 1));
    } else {
        problem(w, AUDIT_CHANGED, k, "record %llu changed: its content does "
                "not match its hash%s", (unsigned long long)k,
                k == 1 ? " (or audit.key is not the key this log was "
                         "written with)" : "");
    }
    return AG_OK;
}

/* One row in seq order; false once a problem is found. */
static bool step_row(Walk *w, sqlite3_stmt *st, int *rc, AgError *err)
{
    int64_t raw = sqlite3_column_int64(st, 0);
    if (raw < 1) {
        problem(w, AUDIT_FOREIGN, 0, "record %lld is not part of the chain "
                "(numbers start at 1)", (long long)raw);
        return false;
    }
    AuditRecord r;
    bool valid = audit__row_read(st, &r);
    if (r.seq > w->expected) {
        if (r.seq == w->expected + 1) {
            problem(w, AUDIT_MISSING, w->expected, "record %llu missing "
                    "(removed)", (unsigned long long)w->expected);
        } else {
            problem(w, AUDIT_MISSING, w->expected, "records %llu to %llu "
                    "missing (removed)", (unsigned long long)w->expected,
                    (unsigned long long)(r.seq - 1));
        }
        return false;
    }
    if (!hash_ok(w, &r, valid)) {
        *rc = diagnose(w, w->expected, &r, err);
        return false;
    }
    if (strcmp(r.time, w->prev_time) < 0) {
        problem(w, AUDIT_REORDERED, r.seq, "record %llu out of order: its "
                "time is before record %llu's", (unsigned long long)r.seq,
                (unsigned long long)(r.seq - 1));
        return false;
    }
    memcpy(w->prev, r.hash, AUDIT_HASH_BYTES);
    memcpy(w->prev_time, r.time, AUDIT_TIME_SIZE);
    w->expected++;
    return true;
}

static int walk(Walk *w, AgError *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(w->db, "SELECT " AUDIT_ROW_COLUMNS " FROM events"
                           " ORDER BY seq", -1, &st, NULL) != SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "audit.db: %s",
                            sqlite3_errmsg(w->db));
    }
    int step, rc = AG_OK;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (!step_row(w, st, &rc, err)) {
            break;
        }
    }
    if (rc == AG_OK && step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = ag_error_set(err, AG_ERR_IO, "audit.db: %s",
                          sqlite3_errmsg(w->db));
    }
    sqlite3_finalize(st);
    return rc;
}

/* After an intact walk: the head must name the last record we saw. */
static void check_head(Walk *w)
{
    uint64_t last = w->expected - 1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(w->db, "SELECT seq, time, hash, mac FROM head "
                           "WHERE id = 1", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        problem(w, AUDIT_HEAD, last + 1, "the chain head is missing (records "
                "after %llu may have been removed)",
                (unsigned long long)last);
        return;
    }
    int64_t seq = sqlite3_column_int64(st, 0);
    const char *time = (const char *)sqlite3_column_text(st, 1);
    uint8_t hash[AUDIT_HASH_BYTES], mac[AUDIT_HASH_BYTES],
        want[AUDIT_HASH_BYTES];
    bool ok = time != NULL && seq >= 0 &&
              audit__unhex((const char *)sqlite3_column_text(st, 2), hash,
                           AUDIT_HASH_BYTES) &&
              audit__unhex((const char *)sqlite3_column_text(st, 3), mac,
                           AUDIT_HASH_BYTES);
    if (ok) {
        audit__head_mac(w->key, (uint64_t)seq, time, hash, want);
        ok = sodium_memcmp(mac, want, AUDIT_HASH_BYTES) == 0;
    }
    if (!ok) {
        problem(w, AUDIT_HEAD, last + 1, "the chain head was changed");
    } else if ((uint64_t)seq > last) {
        problem(w, AUDIT_MISSING, last + 1, "record %llu missing: removed "
                "from the end (the chain head says %lld records)",
                (unsigned long long)(last + 1), (long long)seq);
    } else if ((uint64_t)seq < last) {
        problem(w, AUDIT_FOREIGN, (uint64_t)seq + 1, "record %lld is after "
                "the chain head (not written by agora)", (long long)seq + 1);
    } else if (last > 0 && (sodium_memcmp(hash, w->prev,
                                          AUDIT_HASH_BYTES) != 0 ||
                            strcmp(time, w->prev_time) != 0)) {
        problem(w, AUDIT_CHANGED, last, "record %llu changed: it differs "
                "from the chain head", (unsigned long long)last);
    }
    sqlite3_finalize(st);
}

static int64_t count_rows(sqlite3 *db)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    return n;
}

int audit_verify(const char *data_dir, AuditVerifyResult *out, AgError *err)
{
    memset(out, 0, sizeof *out);
    if (sodium_init() < 0) {
        return ag_error_set(err, AG_ERR_IO, "audit: libsodium failed to "
                            "start");
    }
    uint8_t key[AUDIT_KEY_BYTES];
    sqlite3 *db;
    int rc = audit__db_open(data_dir, true, &db, err);
    if (rc != AG_OK) {
        return rc;
    }
    rc = audit__key_load(data_dir, false, key, err);
    if (rc != AG_OK) {
        sqlite3_close(db);
        return rc;
    }
    Walk w = {.db = db, .key = key, .expected = 1, .out = out};
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    int64_t n = count_rows(db);
    if (n < 0) {
        rc = ag_error_set(err, AG_ERR_IO, "%s/audit.db: %s", data_dir,
                          sqlite3_errmsg(db));
    } else {
        out->records = (uint64_t)n;
        rc = walk(&w, err);
    }
    if (rc == AG_OK && out->problem == AUDIT_INTACT) {
        check_head(&w);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    sodium_memzero(key, sizeof key);
    return rc;
}
