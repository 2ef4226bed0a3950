/*
 * store.c — the files of the audit trail: DIR/audit.key (the chain key)
 * and DIR/audit.db (SQLite, WAL, its own file so that audit writes never
 * wait for ingest commits).
 */
#include "audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the key ----------------------------------------------------------- */

static int key_read(const char *path, uint8_t key[AUDIT_KEY_BYTES],
                    AgError *err)
{
    uint8_t *data;
    size_t len;
    int rc = ag_file_read_all(path, 4096, &data, &len, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (len != AUDIT_KEY_BYTES) {
        ag_free(data);
        return ag_error_set(err, AG_ERR_INVALID, "%s: %zu bytes, a key has "
                            "%d", path, len, AUDIT_KEY_BYTES);
    }
    memcpy(key, data, AUDIT_KEY_BYTES);
    sodium_memzero(data, len);
    ag_free(data);
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0) {
        ag_log(AG_LOG_WARN, "audit", "msg=\"audit key readable by others\" "
               "path=%s mode=%03o", path, (unsigned)(st.st_mode & 0777));
    }
    return AG_OK;
}

static int sync_dir(const char *dir, AgError *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", dir);
    }
    int rc = fsync(fd) == 0 ? AG_OK
                            : ag_error_errno(err, AG_ERR_IO, "fsync %s", dir);
    close(fd);
    return rc;
}

/* Write a new key under a temporary name, then link it into place: link()
 * never replaces, so two processes starting at once agree on one key. */
static int key_create(const char *dir, const char *path,
                      uint8_t key[AUDIT_KEY_BYTES], AgError *err)
{
    char tmp[AG_PATH_MAX];
    if (ag_fmt(tmp, sizeof tmp, "%s/audit.key.%ld", dir, (long)getpid()) !=
        AG_OK) {
        return ag_error_set(err, AG_ERR_LIMIT, "%s: path too long", dir);
    }
    randombytes_buf(key, AUDIT_KEY_BYTES);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "create %s", tmp);
    }
    int rc = ag_write_all(fd, key, AUDIT_KEY_BYTES, err);
    if (rc == AG_OK && fsync(fd) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "fsync %s", tmp);
    }
    close(fd);
    if (rc == AG_OK && link(tmp, path) != 0) {
        rc = errno == EEXIST ? AG_ERR_EXISTS
                             : ag_error_errno(err, AG_ERR_IO, "link %s", path);
    }
    unlink(tmp);
    if (rc == AG_ERR_EXISTS) {
        return key_read(path, key, err);    /* another process won */
    }
    return rc == AG_OK ? sync_dir(dir, err) : rc;
}

int audit__key_load(const char *data_dir, bool create,
                    uint8_t key[AUDIT_KEY_BYTES], AgError *err)
{
    char path[AG_PATH_MAX];
    if (ag_fmt(path, sizeof path, "%s/audit.key", data_dir) != AG_OK) {
        return ag_error_set(err, AG_ERR_LIMIT, "%s: path too long",
                            data_dir);
    }
    if (access(path, F_OK) == 0) {
        return key_read(path, key, err);
    }
    if (!create) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "%s: no audit key", path);
    }
    return key_create(data_dir, path, key, err);
}

/* ---- the database ------------------------------------------------------ */

/*
 * Schema 1.  events: the records, one row each, never updated (the hash
 * column is the chain).  head: one row, the last (seq, time, hash) with a
 * keyed MAC, written in the same transaction as the records it covers.
 * export_cursor: per collector, the last seq sent.
 */
static const char SCHEMA[] =
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY,"
    "  time TEXT NOT NULL,"
    "  event INTEGER NOT NULL, type INTEGER NOT NULL DEFAULT 0,"
    "  action TEXT NOT NULL, outcome INTEGER NOT NULL,"
    "  user TEXT, source TEXT, destination TEXT,"
    "  patient_id TEXT, patient_name TEXT, study_uid TEXT, sop_class TEXT,"
    "  count INTEGER NOT NULL DEFAULT 0, detail TEXT,"
    "  hash TEXT NOT NULL);"
    "CREATE INDEX events_user ON events(user);"
    "CREATE INDEX events_patient ON events(patient_id);"
    "CREATE INDEX events_study ON events(study_uid);"
    "CREATE INDEX events_time ON events(time);"
    "CREATE INDEX events_event ON events(event);"
    "CREATE TABLE head ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  seq INTEGER NOT NULL, time TEXT NOT NULL, hash TEXT NOT NULL,"
    "  mac TEXT NOT NULL);"
    "CREATE TABLE export_cursor ("
    "  target TEXT PRIMARY KEY, seq INTEGER NOT NULL);";

static int db_fail(sqlite3 *db, const char *what, const char *path,
                   AgError *err)
{
    return ag_error_set(err, AG_ERR_IO, "%s: %s: %s", path, what,
                        db != NULL ? sqlite3_errmsg(db) : "out of memory");
}

/* Create the schema once; the empty head is written by the first writer
 * (it needs the key, which read-only openers may not create). */
static int db_migrate(sqlite3 *db, const char *path, AgError *err)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        return db_fail(db, "begin", path, err);
    }
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            version = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
    }
    int rc = AG_OK;
    if (version == 0 &&
        (sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL) !=
             SQLITE_OK)) {
        rc = db_fail(db, "create schema", path, err);
    } else if (version > 1) {
        rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "%s: schema version %d is "
                          "newer than this agora knows", path, version);
    }
    if (rc != AG_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(db, "commit", path, err);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

int audit__db_open(const char *data_dir, bool read_only, sqlite3 **out,
                   AgError *err)
{
    char path[AG_PATH_MAX];
    if (ag_fmt(path, sizeof path, "%s/audit.db", data_dir) != AG_OK) {
        return ag_error_set(err, AG_ERR_LIMIT, "%s: path too long",
                            data_dir);
    }
    if (read_only && access(path, F_OK) != 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "%s: no audit log", path);
    }
    if (!read_only) {
        /* Made private before SQLite sees it (its -wal and -shm files
         * take the same mode): the records hold PHI. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            return ag_error_errno(err, AG_ERR_IO, "open %s", path);
        }
        close(fd);
    }
    sqlite3 *db = NULL;
    int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        int rc = db_fail(db, "open", path, err);
        sqlite3_close(db);
        return rc;
    }
    sqlite3_busy_timeout(db, 10000);
    int rc = AG_OK;
    if (!read_only &&
        (sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) !=
             SQLITE_OK ||
         sqlite3_exec(db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) !=
             SQLITE_OK)) {
        rc = db_fail(db, "set up", path, err);
    }
    if (rc == AG_OK && !read_only) {
        rc = db_migrate(db, path, err);
    }
    if (rc != AG_OK) {
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return AG_OK;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

bool audit__row_read(sqlite3_stmt *st, AuditRecord *r)
{
    memset(r, 0, sizeof *r);
    r->seq = (uint64_t)sqlite3_column_int64(st, 0);
    const char *time = col_text(st, 1);
    snprintf(r->time, sizeof r->time, "%s", time != NULL ? time : "");
    r->ev.event = (AuditEventId)sqlite3_column_int(st, 2);
    r->ev.type = (AuditEventType)sqlite3_column_int(st, 3);
    const char *action = col_text(st, 4);
    r->ev.action = action != NULL ? action[0] : 0;
    r->ev.outcome = (AuditOutcome)sqlite3_column_int(st, 5);
    r->ev.user = col_text(st, 6);
    r->ev.source = col_text(st, 7);
    r->ev.destination = col_text(st, 8);
    r->ev.patient_id = col_text(st, 9);
    r->ev.patient_name = col_text(st, 10);
    r->ev.study_uid = col_text(st, 11);
    r->ev.sop_class = col_text(st, 12);
    r->ev.count = (uint64_t)sqlite3_column_int64(st, 13);
    r->ev.detail = col_text(st, 14);
    /* A row whose time or action does not fit its column type, or whose
     * hash is not hex, is reported as changed by the caller. */
    return time != NULL && strlen(time) == AUDIT_TIME_SIZE - 1 &&
           action != NULL && strlen(action) == 1 &&
           audit__unhex(col_text(st, 15), r->hash, AUDIT_HASH_BYTES);
}
