/*
 * index_sqlite.c — the index on SQLite (WAL, prepared statements, numbered
 * migrations), behind StoreIndexOps so that a PostgreSQL backend can follow
 * without touching callers (DESIGN.md §6).
 *
 * Writes go through one connection (the commit thread, or a delete holding
 * the store's write lock); reads through a second connection so that
 * listings never see a transaction in progress.  Every statement is
 * parameterised (SECURITY.md rule 2).
 */
#include "store_int.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- schema ---------------------------------------------------------------- */

/*
 * Migrations are applied in order, each in its own transaction, and never
 * edited once released: a change is a new entry.  Patients are keyed by
 * Patient ID *and* Issuer (DESIGN.md §6).  Names are also kept upper-cased
 * (name_norm) for case-insensitive matching.  Dates are DICOM DA text
 * (YYYYMMDD), which sorts and range-matches as text.
 */
static const char *const MIGRATIONS[] = {
    /* 1: the four levels, trash, metadata documents */
    "CREATE TABLE patients ("
    "  id INTEGER PRIMARY KEY,"
    "  patient_id TEXT NOT NULL, issuer TEXT NOT NULL DEFAULT '',"
    "  name TEXT, name_norm TEXT, birth_date TEXT, sex TEXT,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  UNIQUE (patient_id, issuer));"
    "CREATE INDEX patients_name ON patients(name_norm);"
    "CREATE TABLE studies ("
    "  id INTEGER PRIMARY KEY,"
    "  patient_pk INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,"
    "  study_uid TEXT NOT NULL UNIQUE, study_date TEXT, study_time TEXT,"
    "  accession TEXT, study_id TEXT, description TEXT,"
    "  referring_name TEXT, referring_norm TEXT, modalities TEXT,"
    "  num_series INTEGER NOT NULL DEFAULT 0,"
    "  num_instances INTEGER NOT NULL DEFAULT 0,"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  patient_conflict INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX studies_patient ON studies(patient_pk);"
    "CREATE INDEX studies_date ON studies(study_date, study_time);"
    "CREATE INDEX studies_accession ON studies(accession);"
    "CREATE INDEX studies_created ON studies(created_at);"
    "CREATE TABLE series ("
    "  id INTEGER PRIMARY KEY,"
    "  study_pk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,"
    "  series_uid TEXT NOT NULL UNIQUE, modality TEXT, series_number INTEGER,"
    "  description TEXT, body_part TEXT, series_date TEXT, series_time TEXT,"
    "  station TEXT, institution TEXT, department TEXT, manufacturer TEXT,"
    "  num_instances INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX series_study ON series(study_pk);"
    "CREATE INDEX series_modality ON series(modality);"
    "CREATE TABLE instances ("
    "  id INTEGER PRIMARY KEY,"
    "  series_pk INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,"
    "  sop_uid TEXT NOT NULL UNIQUE, sop_class_uid TEXT NOT NULL,"
    "  instance_number INTEGER, transfer_syntax TEXT NOT NULL,"
    "  rows INTEGER, columns INTEGER, frames INTEGER,"
    "  content_date TEXT, content_time TEXT,"
    "  blob TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,"
    "  checksum TEXT NOT NULL,"
    "  source_ae TEXT, source_addr TEXT, received_via TEXT,"
    "  received_at INTEGER NOT NULL);"
    "CREATE INDEX instances_series ON instances(series_pk, instance_number);"
    "CREATE TABLE instance_meta ("
    "  instance_pk INTEGER PRIMARY KEY"
    "    REFERENCES instances(id) ON DELETE CASCADE,"
    "  json BLOB NOT NULL);"
    "CREATE TABLE trash (blob TEXT PRIMARY KEY);",
    /* 2: remote DICOM nodes */
    "CREATE TABLE nodes ("
    "  aet TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,"
    "  tls INTEGER NOT NULL DEFAULT 0, description TEXT,"
    "  created_at INTEGER NOT NULL);",
    /* 3: departments, users, credentials, shares, break-the-glass and the
     * study-to-department assignment the access filter joins on
     * (DESIGN.md §5).  Rule and AE values are kept upper-cased. */
    "CREATE TABLE departments ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  description TEXT, created_at INTEGER NOT NULL);"
    "CREATE TABLE dept_rules ("
    "  id INTEGER PRIMARY KEY,"
    "  dept_pk INTEGER NOT NULL REFERENCES departments(id) ON DELETE CASCADE,"
    "  field TEXT NOT NULL, value TEXT NOT NULL,"
    "  UNIQUE (dept_pk, field, value));"
    "CREATE INDEX dept_rules_match ON dept_rules(field, value);"
    "CREATE TABLE study_depts ("
    "  dept_pk INTEGER NOT NULL REFERENCES departments(id) ON DELETE CASCADE,"
    "  study_pk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,"
    "  how TEXT NOT NULL, PRIMARY KEY (dept_pk, study_pk)) WITHOUT ROWID;"
    "CREATE INDEX study_depts_study ON study_depts(study_pk);"
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pwhash TEXT,"
    "  role TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE user_depts ("
    "  user_pk INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  dept_pk INTEGER NOT NULL REFERENCES departments(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (user_pk, dept_pk)) WITHOUT ROWID;"
    "CREATE TABLE credentials ("
    "  id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
    "  user_pk INTEGER REFERENCES users(id) ON DELETE CASCADE,"
    "  study_pk INTEGER REFERENCES studies(id) ON DELETE CASCADE,"
    "  name TEXT, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX credentials_user ON credentials(user_pk, kind);"
    "CREATE TABLE shares ("
    "  id INTEGER PRIMARY KEY,"
    "  study_pk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,"
    "  dept_pk INTEGER REFERENCES departments(id) ON DELETE CASCADE,"
    "  user_pk INTEGER REFERENCES users(id) ON DELETE CASCADE,"
    "  list_pk INTEGER REFERENCES lists(id) ON DELETE CASCADE,"
    "  link_pk INTEGER REFERENCES credentials(id) ON DELETE CASCADE,"
    "  created_by TEXT, created_at INTEGER NOT NULL, expires_at INTEGER);"
    "CREATE INDEX shares_dept ON shares(dept_pk);"
    "CREATE INDEX shares_user ON shares(user_pk);"
    "CREATE INDEX shares_list ON shares(list_pk);"
    "CREATE INDEX shares_study ON shares(study_pk);"
    "CREATE TABLE lists ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_by TEXT,"
    "  created_at INTEGER NOT NULL);"
    "CREATE TABLE list_members ("
    "  list_pk INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,"
    "  user_pk INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (user_pk, list_pk)) WITHOUT ROWID;"
    "CREATE TABLE break_glass ("
    "  id INTEGER PRIMARY KEY,"
    "  user_pk INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  study_pk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,"
    "  reason TEXT NOT NULL, created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL, reviewed_by TEXT);"
    "CREATE INDEX break_glass_user ON break_glass(user_pk, expires_at);"
    "ALTER TABLE nodes ADD COLUMN dept_pk INTEGER"
    "  REFERENCES departments(id) ON DELETE SET NULL;",
    /* 4: run-time settings changed through the REST API (settings.c);
     * values are text, changed_at in seconds since the epoch */
    "CREATE TABLE settings ("
    "  key TEXT PRIMARY KEY, value TEXT NOT NULL,"
    "  changed_at INTEGER NOT NULL, changed_by TEXT);",
    /* 5: small blobs staged in the index (store.c, "staging"): committed
     * with their rows in one transaction, written out to files later.  A
     * blob name going to the trash (its row deleted or replaced) takes its
     * staged bytes with it, in the same transaction. */
    "CREATE TABLE staged_blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL);"
    "CREATE TRIGGER trash_drops_staged AFTER INSERT ON trash BEGIN"
    "  DELETE FROM staged_blobs WHERE name = NEW.blob; END;",
    /* 6: jobs of the REST API (web/jobs.c), so that a restart neither
     * forgets them nor drops a send half done: doc is the job as JSON;
     * sops its SOP Instance UIDs, one per line, while it is active. */
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, doc TEXT NOT NULL, sops TEXT);",
    /* 7: the modality worklist (worklist.c): one scheduled procedure step
     * per row, json its DICOM JSON; the other columns are copies of the
     * keys modalities filter on, so a C-FIND reads only candidates; ids
     * are never reused (AUTOINCREMENT): an audit record names one. */
    "CREATE TABLE worklist ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  start_date TEXT NOT NULL, start_time TEXT,"
    "  modality TEXT, station_aet TEXT, patient_id TEXT, accession TEXT,"
    "  study_uid TEXT NOT NULL,"
    "  dept_pk INTEGER REFERENCES departments(id) ON DELETE SET NULL,"
    "  status TEXT NOT NULL DEFAULT 'SCHEDULED',"
    "  json TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE INDEX worklist_date ON worklist(start_date, start_time);"
    "CREATE INDEX worklist_study ON worklist(study_uid);",
    /* 8: performed procedure steps (mpps.c, PS3.4 F.7): json is the step
     * as DICOM JSON, kept whole; status is a copy of (0040,0252). */
    "CREATE TABLE mpps ("
    "  uid TEXT PRIMARY KEY, status TEXT NOT NULL, study_uid TEXT,"
    "  calling_ae TEXT, json TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);",
    /* 9: the archive's totals, kept by triggers in the transactions that
     * change them (cascades fire them too), so that the stats (the serve
     * banner, /metrics, /api/v1/stats) are one row, not a scan of every
     * instance: at startup that scan competed with the first clients, and
     * on a large archive every /metrics scrape read the whole table.
     * Counted once here from what an older archive holds. */
    "CREATE TABLE totals ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  patients INTEGER NOT NULL, studies INTEGER NOT NULL,"
    "  series INTEGER NOT NULL, instances INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL);"
    "INSERT INTO totals SELECT 1, (SELECT count(*) FROM patients),"
    "  (SELECT count(*) FROM studies), (SELECT count(*) FROM series),"
    "  (SELECT count(*) FROM instances),"
    "  (SELECT coalesce(sum(size), 0) FROM instances);"
    "CREATE TRIGGER totals_patient_add AFTER INSERT ON patients BEGIN"
    "  UPDATE totals SET patients = patients + 1; END;"
    "CREATE TRIGGER totals_patient_drop AFTER DELETE ON patients BEGIN"
    "  UPDATE totals SET patients = patients - 1; END;"
    "CREATE TRIGGER totals_study_add AFTER INSERT ON studies BEGIN"
    "  UPDATE totals SET studies = studies + 1; END;"
    "CREATE TRIGGER totals_study_drop AFTER DELETE ON studies BEGIN"
    "  UPDATE totals SET studies = studies - 1; END;"
    "CREATE TRIGGER totals_series_add AFTER INSERT ON series BEGIN"
    "  UPDATE totals SET series = series + 1; END;"
    "CREATE TRIGGER totals_series_drop AFTER DELETE ON series BEGIN"
    "  UPDATE totals SET series = series - 1; END;"
    "CREATE TRIGGER totals_instance_add AFTER INSERT ON instances BEGIN"
    "  UPDATE totals SET instances = instances + 1,"
    "    bytes = bytes + NEW.size; END;"
    "CREATE TRIGGER totals_instance_drop AFTER DELETE ON instances BEGIN"
    "  UPDATE totals SET instances = instances - 1,"
    "    bytes = bytes - OLD.size; END;"
    "CREATE TRIGGER totals_instance_size AFTER UPDATE OF size ON instances"
    "  BEGIN UPDATE totals SET bytes = bytes - OLD.size + NEW.size; END;",
};

#define NMIGRATIONS (sizeof MIGRATIONS / sizeof MIGRATIONS[0])

/* ---- statements -------------------------------------------------------------- */

enum {
    Q_FIND_INSTANCE,
    Q_UPSERT_PATIENT,
    Q_FIND_STUDY,
    Q_INSERT_STUDY,
    Q_FLAG_CONFLICT,
    Q_FIND_SERIES,
    Q_INSERT_SERIES,
    Q_STUDY_MODALITIES,
    Q_OLD_INSTANCE,
    Q_TRASH_ADD,
    Q_DELETE_INSTANCE_ROW,
    Q_INSERT_INSTANCE,
    Q_INSERT_META,
    Q_COUNT_SERIES,
    Q_COUNT_STUDY,
    Q_INC_SERIES,
    Q_INC_STUDY,
    Q_ASSIGN_DEPTS,
    Q_SAVEPOINT,
    Q_RELEASE,
    Q_ROLLBACK_TO,
    Q_INSERT_STAGED,
    Q_DROP_STAGED,
    Q_BLOB_INDEXED,
    Q_TRASH_LIST,
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_NSTMT
};

static const char *const SQL[Q_NSTMT] = {
    [Q_FIND_INSTANCE] = "SELECT blob FROM instances WHERE sop_uid = ?1",
    [Q_UPSERT_PATIENT] =
        "INSERT INTO patients (patient_id, issuer, name, name_norm,"
        " birth_date, sex, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)"
        " ON CONFLICT (patient_id, issuer) DO UPDATE SET"
        "  name = coalesce(patients.name, excluded.name),"
        "  name_norm = coalesce(patients.name_norm, excluded.name_norm),"
        "  birth_date = coalesce(patients.birth_date, excluded.birth_date),"
        "  sex = coalesce(patients.sex, excluded.sex)"
        " RETURNING id",
    [Q_FIND_STUDY] =
        "SELECT t.id, t.patient_pk, p.patient_id, p.issuer FROM studies t"
        " JOIN patients p ON t.patient_pk = p.id WHERE t.study_uid = ?1",
    [Q_INSERT_STUDY] =
        "INSERT INTO studies (patient_pk, study_uid, study_date, study_time,"
        " accession, study_id, description, referring_name, referring_norm,"
        " created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    [Q_FLAG_CONFLICT] =
        "UPDATE studies SET patient_conflict = 1 WHERE id = ?1",
    [Q_FIND_SERIES] = "SELECT id FROM series WHERE series_uid = ?1",
    [Q_INSERT_SERIES] =
        "INSERT INTO series (study_pk, series_uid, modality, series_number,"
        " description, body_part, series_date, series_time, station,"
        " institution, department, manufacturer, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [Q_STUDY_MODALITIES] =
        "UPDATE studies SET modalities = (SELECT group_concat(m, '\\')"
        "  FROM (SELECT DISTINCT modality AS m FROM series"
        "        WHERE study_pk = ?1 AND modality IS NOT NULL ORDER BY m))"
        " WHERE id = ?1",
    [Q_OLD_INSTANCE] =
        "SELECT i.id, i.blob, i.series_pk, s.study_pk, t.patient_pk"
        " FROM instances i JOIN series s ON i.series_pk = s.id"
        " JOIN studies t ON s.study_pk = t.id WHERE i.sop_uid = ?1",
    [Q_TRASH_ADD] = "INSERT OR IGNORE INTO trash (blob) VALUES (?1)",
    [Q_DELETE_INSTANCE_ROW] = "DELETE FROM instances WHERE id = ?1",
    [Q_INSERT_INSTANCE] =
        "INSERT INTO instances (series_pk, sop_uid, sop_class_uid,"
        " instance_number, transfer_syntax, rows, columns, frames,"
        " content_date, content_time, blob, size, checksum, source_ae,"
        " source_addr, received_via, received_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
        "  ?14, ?15, ?16, ?17)",
    [Q_INSERT_META] =
        "INSERT OR REPLACE INTO instance_meta (instance_pk, json)"
        " VALUES (?1, ?2)",
    [Q_COUNT_SERIES] =
        "UPDATE series SET num_instances ="
        " (SELECT count(*) FROM instances WHERE series_pk = ?1) WHERE id = ?1",
    [Q_COUNT_STUDY] =
        "UPDATE studies SET"
        " num_series = (SELECT count(*) FROM series WHERE study_pk = ?1),"
        " num_instances = (SELECT count(*) FROM instances i JOIN series s"
        "   ON i.series_pk = s.id WHERE s.study_pk = ?1),"
        " size_bytes = (SELECT coalesce(sum(i.size), 0) FROM instances i"
        "   JOIN series s ON i.series_pk = s.id WHERE s.study_pk = ?1),"
        " updated_at = ?2"
        " WHERE id = ?1",
    /* The common path keeps counters incrementally: recounting a 5,000
     * instance study on every insert would be quadratic. */
    [Q_INC_SERIES] =
        "UPDATE series SET num_instances = num_instances + 1 WHERE id = ?1",
    [Q_INC_STUDY] =
        "UPDATE studies SET num_instances = num_instances + 1,"
        " size_bytes = size_bytes + ?2, num_series = num_series + ?3,"
        " updated_at = ?4 WHERE id = ?1",
    /* Department assignment at ingest (DESIGN.md §5): by rule on the
     * calling AE, Institution Department Name, Institution Name,
     * Requesting Service or modality; by the sending node's department;
     * by the uploading user's departments. */
    /* Per instance.  UNION ALL: the arms run in order and the first row
     * for a department is the one kept (INSERT OR IGNORE), so 'node' wins
     * over 'rule' over 'upload' — as before, when UNION's sort gave that
     * order — without UNION's temporary table for every instance (~4% of
     * a one-association ingest's CPU, perf). */
    [Q_ASSIGN_DEPTS] =
        "INSERT OR IGNORE INTO study_depts (dept_pk, study_pk, how)"
        " SELECT dept_pk, ?1, 'node' FROM nodes"
        "  WHERE aet = ?2 AND dept_pk IS NOT NULL"
        " UNION ALL SELECT id, ?1, 'node' FROM departments WHERE id = ?8"
        " UNION ALL SELECT dept_pk, ?1, 'rule' FROM dept_rules"
        "  WHERE (field = 'ae' AND value = upper(?2))"
        "     OR (field = 'department' AND value = upper(?3))"
        "     OR (field = 'institution' AND value = upper(?4))"
        "     OR (field = 'service' AND value = upper(?5))"
        "     OR (field = 'modality' AND value = upper(?6))"
        " UNION ALL SELECT dept_pk, ?1, 'upload' FROM user_depts"
        "  WHERE user_pk = ?7",
    /* Per instance of a batch: prepared once, not parsed per instance. */
    [Q_SAVEPOINT] = "SAVEPOINT put",
    [Q_RELEASE] = "RELEASE put",
    [Q_ROLLBACK_TO] = "ROLLBACK TO put",
    [Q_INSERT_STAGED] =
        "INSERT INTO staged_blobs (name, data) VALUES (?1, ?2)",
    [Q_DROP_STAGED] = "DELETE FROM staged_blobs WHERE name = ?1",
    [Q_BLOB_INDEXED] = "SELECT 1 FROM instances WHERE blob = ?1",
    /* Per batch: with one instance in flight, a batch is one instance, and
     * parsing these every time showed in profiles. */
    [Q_TRASH_LIST] = "SELECT blob FROM trash",
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
};

#define READERS 8
/* Prepared statements kept per reader connection: parsing and planning
 * are most of the cost of a small query (an instance looked up at every
 * store, a C-FIND or QIDO-RS asked again). */
#define STMT_CACHE 32

typedef struct CachedStmt {
    char *sql;                  /* owned copy of the text: the key */
    sqlite3_stmt *st;
} CachedStmt;

/*
 * Readers: a small pool of connections, so that a query whose caller is
 * slow (a C-FIND answering a slow peer row by row) never blocks another.
 * WAL lets them all read while the writer commits.
 */
typedef struct SqliteIndex {
    StoreIndex base;
    sqlite3 *w;                 /* writer */
    char path[AG_PATH_MAX];
    bool read_only;
    pthread_mutex_t rlock;      /* guards the pool */
    pthread_cond_t rfree;
    sqlite3 *readers[READERS];
    bool busy[READERS];
    CachedStmt cache[READERS][STMT_CACHE];   /* per reader; its user's */
    unsigned cache_next[READERS];            /* round-robin eviction */
    sqlite3_stmt *stmt[Q_NSTMT];
} SqliteIndex;

static int db_error(sqlite3 *db, AgError *err, const char *what)
{
    int code = sqlite3_errcode(db);
    int ag = (code == SQLITE_FULL || code == SQLITE_IOERR ||
              code == SQLITE_CANTOPEN || code == SQLITE_READONLY ||
              code == SQLITE_BUSY || code == SQLITE_LOCKED)
                 ? AG_ERR_IO
                 : code == SQLITE_NOMEM ? AG_ERR_NOMEM
                 : code == SQLITE_CONSTRAINT ? AG_ERR_EXISTS
                                            : AG_ERR_IO;
    return ag_error_set(err, ag, "index: %s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql, AgError *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = ag_error_set(err, AG_ERR_IO, "index: %s",
                              msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return rc;
    }
    return AG_OK;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* Bind helpers: NULL strings bind as SQL NULL. */
static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s == NULL) {
        sqlite3_bind_null(st, i);
    } else {
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    }
}

static void bind_int(sqlite3_stmt *st, int i, int64_t v)
{
    if (v == INT64_MIN) {
        sqlite3_bind_null(st, i);
    } else {
        sqlite3_bind_int64(st, i, v);
    }
}

static sqlite3_stmt *stmt(SqliteIndex *x, int q)
{
    sqlite3_stmt *st = x->stmt[q];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Run a statement that returns no rows (or ignore them). */
static int step_done(SqliteIndex *x, sqlite3_stmt *st, AgError *err,
                     const char *what)
{
    int rc = sqlite3_step(st);
    while (rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        int e = db_error(x->w, err, what);
        sqlite3_reset(st);
        return e;
    }
    sqlite3_reset(st);
    return AG_OK;
}

/* ---- reader pool --------------------------------------------------------- */

static sqlite3 *reader_get(SqliteIndex *x)
{
    pthread_mutex_lock(&x->rlock);
    for (;;) {
        for (int i = 0; i < READERS; i++) {
            if (!x->busy[i]) {
                x->busy[i] = true;
                pthread_mutex_unlock(&x->rlock);
                return x->readers[i];
            }
        }
        pthread_cond_wait(&x->rfree, &x->rlock);
    }
}

static void reader_put(SqliteIndex *x, sqlite3 *db)
{
    pthread_mutex_lock(&x->rlock);
    for (int i = 0; i < READERS; i++) {
        if (x->readers[i] == db) {
            x->busy[i] = false;
        }
    }
    pthread_cond_signal(&x->rfree);
    pthread_mutex_unlock(&x->rlock);
}

/*
 * sql prepared on reader rd, from rd's cache (prepared and kept when
 * missing).  Release with cached_done, never finalize.  NULL on a
 * preparation error (rd's error message says why).
 */
static sqlite3_stmt *cached_prepare(SqliteIndex *x, sqlite3 *rd,
                                    const char *sql)
{
    int r = 0;
    while (r < READERS && x->readers[r] != rd) {
        r++;
    }
    if (r == READERS) {
        return NULL;
    }
    CachedStmt *c = x->cache[r];
    for (int i = 0; i < STMT_CACHE; i++) {
        if (c[i].sql != NULL && strcmp(c[i].sql, sql) == 0) {
            return c[i].st;
        }
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3(rd, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                           NULL) != SQLITE_OK) {
        return NULL;
    }
    char *copy = ag_malloc(strlen(sql) + 1);
    if (copy == NULL) {
        sqlite3_finalize(st);
        return NULL;
    }
    strcpy(copy, sql);
    CachedStmt *e = &c[x->cache_next[r]++ % STMT_CACHE];
    sqlite3_finalize(e->st);
    ag_free(e->sql);
    e->sql = copy;
    e->st = st;
    return st;
}

static void cached_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---- open / migrate ------------------------------------------------------ */

static int open_conn(const char *path, bool read_only, sqlite3 **out,
                     AgError *err)
{
    int flags = (read_only ? SQLITE_OPEN_READONLY
                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        int rc = ag_error_set(err, AG_ERR_IO, "index %s: %s", path,
                              db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return rc;
    }
    sqlite3_busy_timeout(db, 10000);
    /* WAL + synchronous=FULL: a commit is durable when it returns (the WAL
     * is fsynced), and readers never block the writer. */
    int rc = exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
                      "PRAGMA cache_size=-32000;"
                      "PRAGMA case_sensitive_like=ON;", err);
    if (rc != AG_OK) {
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return AG_OK;
}

static int migrate(sqlite3 *db, AgError *err)
{
    int rc = exec(db, "CREATE TABLE IF NOT EXISTS schema_version"
                      " (version INTEGER NOT NULL)", err);
    if (rc != AG_OK) {
        return rc;
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM "
                           "schema_version", -1, &st, NULL);
    int version = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        version = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    if (version > (int)NMIGRATIONS) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED,
                            "index schema version %d is newer than this "
                            "agora (%zu)", version, NMIGRATIONS);
    }
    for (size_t v = (size_t)version; v < NMIGRATIONS; v++) {
        char bump[96];
        ag_fmt(bump, sizeof bump,
                 "INSERT INTO schema_version (version) VALUES (%zu)", v + 1);
        rc = exec(db, "BEGIN IMMEDIATE", err);
        if (rc == AG_OK) {
            rc = exec(db, MIGRATIONS[v], err);
        }
        if (rc == AG_OK) {
            rc = exec(db, bump, err);
        }
        if (rc == AG_OK) {
            rc = exec(db, "COMMIT", err);
        }
        if (rc != AG_OK) {
            exec(db, "ROLLBACK", NULL);
            ag_error_prefix(err, "migration %zu: ", v + 1);
            return rc;
        }
    }
    return AG_OK;
}

static const StoreIndexOps SQLITE_OPS;

static void sq_close(StoreIndex *ix)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    if (x == NULL) {
        return;
    }
    for (int i = 0; i < Q_NSTMT; i++) {
        sqlite3_finalize(x->stmt[i]);
    }
    for (int i = 0; i < READERS; i++) {
        for (int k = 0; k < STMT_CACHE; k++) {
            sqlite3_finalize(x->cache[i][k].st);
            ag_free(x->cache[i][k].sql);
        }
        sqlite3_close(x->readers[i]);
    }
    sqlite3_close(x->w);
    pthread_mutex_destroy(&x->rlock);
    pthread_cond_destroy(&x->rfree);
    ag_free(x);
}

int store__index_sqlite_open(const char *path, bool read_only,
                             StoreIndex **out, AgError *err)
{
    SqliteIndex *x = ag_calloc(1, sizeof *x);
    if (x == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "index: out of memory");
    }
    x->base.ops = &SQLITE_OPS;
    ag_fmt(x->path, sizeof x->path, "%s", path);
    x->read_only = read_only;
    pthread_mutex_init(&x->rlock, NULL);
    pthread_cond_init(&x->rfree, NULL);
    int rc = open_conn(path, read_only, &x->w, err);
    if (rc == AG_OK && !read_only) {
        rc = migrate(x->w, err);
    }
    /* The writer's page cache is kept to about its working set (the right
     * edges and upper levels of the B-trees it appends to).  When a B-tree
     * page splits, SQLite renumbers a page to a temporary number past the
     * end of the file, and the next commit then walks its whole cache to
     * drop pages past the end: with 32 MB cached that walk was ~5% of the
     * CPU of a one-instance commit (measured with a uprobe on pcache1's
     * truncate, ~70 walks/s at 800 commits/s).  Readers keep the large
     * cache: they answer the big queries. */
    if (rc == AG_OK && !read_only) {
        rc = exec(x->w, "PRAGMA cache_size=-8000", err);
    }
    for (int i = 0; rc == AG_OK && i < READERS; i++) {
        rc = open_conn(path, read_only, &x->readers[i], err);
    }
    for (int i = 0; rc == AG_OK && i < Q_NSTMT && !read_only; i++) {
        if (sqlite3_prepare_v3(x->w, SQL[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &x->stmt[i], NULL) != SQLITE_OK) {
            rc = db_error(x->w, err, "prepare");
        }
    }
    if (rc != AG_OK) {
        sq_close(&x->base);
        return rc;
    }
    *out = &x->base;
    return AG_OK;
}

/* ---- transactions ---------------------------------------------------------- */

/* Run one of the writer's transaction statements. */
static int tx(SqliteIndex *x, int q, AgError *err)
{
    return step_done(x, stmt(x, q), err, SQL[q]);
}

static int sq_begin(StoreIndex *ix, AgError *err)
{
    return tx((SqliteIndex *)ix, Q_BEGIN, err);
}

static int sq_commit(StoreIndex *ix, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    if (ag_fault("index.commit")) {
        tx(x, Q_ROLLBACK, NULL);
        return ag_error_set(err, AG_ERR_IO, "index: commit: injected fault");
    }
    int rc = tx(x, Q_COMMIT, err);
    if (rc != AG_OK && !sqlite3_get_autocommit(x->w)) {
        tx(x, Q_ROLLBACK, NULL);
    }
    return rc;
}

/* synchronous=NORMAL in WAL mode: a commit writes its frames without
 * fsync (a torn tail fails its checksums and is dropped at recovery, so
 * the commit is lost whole or kept whole) and checkpoints still sync; the
 * store makes the WAL durable with its syncfs before acknowledging. */
static int sq_set_commit_sync(StoreIndex *ix, bool on, AgError *err)
{
    /* Never a kept statement: SQLite applies this pragma when it is
     * prepared, not when it is stepped again. */
    return exec(((SqliteIndex *)ix)->w, on ? "PRAGMA synchronous=FULL"
                                           : "PRAGMA synchronous=NORMAL",
                err);
}

/*
 * The write-ahead log's frames so far, durable: the fdatasync that a
 * synchronous=FULL commit makes, made by whoever calls, while the writer
 * may be committing the next batch (frames it appends meanwhile are
 * flushed or not; either way each commit is lost whole or kept whole).
 * Frames a checkpoint has already moved to the database file were synced
 * there by the checkpoint (synchronous=NORMAL still syncs checkpoints, and
 * syncs the WAL header when the log is restarted).  A descriptor of our
 * own: fdatasync flushes the file whichever descriptor names it, and
 * closing it releases no lock of SQLite's (in WAL mode its POSIX locks are
 * on the database and -shm files, never on the -wal file).  Opened each
 * time, so that it always names the log SQLite writes now.
 */
static int sq_sync_log(StoreIndex *ix, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    if (ag_fault("index.sync")) {
        return ag_error_set(err, AG_ERR_IO, "index: fsync of the "
                            "write-ahead log: injected fault");
    }
    char wal[AG_PATH_MAX + 8];
    ag_fmt(wal, sizeof wal, "%s-wal", x->path);
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "index: open %s", wal);
    }
    int rc = AG_OK;
    if (fdatasync(fd) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "index: fsync of the "
                            "write-ahead log %s", wal);
    }
    close(fd);
    return rc;
}

static void sq_rollback(StoreIndex *ix)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    if (!sqlite3_get_autocommit(x->w)) {
        tx(x, Q_ROLLBACK, NULL);
    }
}

/* ---- writes ---------------------------------------------------------------- */

static int sq_find_instance(StoreIndex *ix, const char *sop_uid,
                            char blob[STORE_BLOB_NAME_MAX], AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3_stmt *st = stmt(x, Q_FIND_INSTANCE);
    bind_text(st, 1, sop_uid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ag_fmt(blob, STORE_BLOB_NAME_MAX, "%s",
                 (const char *)sqlite3_column_text(st, 0));
        sqlite3_reset(st);
        return AG_OK;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return AG_ERR_NOTFOUND;
    }
    return db_error(x->w, err, "find instance");
}

/* Select one integer column, or insert; returns the row id. */
static int find_id(SqliteIndex *x, int q, const char *key, int64_t *id,
                   int64_t *second, AgError *err)
{
    sqlite3_stmt *st = stmt(x, q);
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        if (second != NULL) {
            *second = sqlite3_column_int64(st, 1);
        }
        sqlite3_reset(st);
        return AG_OK;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? AG_ERR_NOTFOUND
                             : db_error(x->w, err, "lookup");
}

static int put_patient(SqliteIndex *x, const StoreAttrs *a, int64_t *id,
                       AgError *err)
{
    sqlite3_stmt *st = stmt(x, Q_UPSERT_PATIENT);
    bind_text(st, 1, a->patient_id);
    bind_text(st, 2, a->issuer);
    bind_text(st, 3, a->patient_name);
    bind_text(st, 4, a->patient_name_norm);
    bind_text(st, 5, a->birth_date);
    bind_text(st, 6, a->sex);
    sqlite3_bind_int64(st, 7, now_s());
    if (sqlite3_step(st) != SQLITE_ROW) {
        int rc = db_error(x->w, err, "patient");
        sqlite3_reset(st);
        return rc;
    }
    *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return AG_OK;
}

/* The study's row, creating it (and its patient) if new.  A study already
 * indexed under another patient keeps that patient and is flagged: never
 * merged silently, and no patient row is made for the newcomer. */
static int put_study(SqliteIndex *x, const StoreAttrs *a, int64_t *id,
                     bool *conflict, AgError *err)
{
    sqlite3_stmt *st = stmt(x, Q_FIND_STUDY);
    bind_text(st, 1, a->study_uid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        const char *pid = (const char *)sqlite3_column_text(st, 2);
        const char *iss = (const char *)sqlite3_column_text(st, 3);
        bool same = pid != NULL && iss != NULL &&
                    strcmp(pid, a->patient_id) == 0 &&
                    strcmp(iss, a->issuer) == 0;
        sqlite3_reset(st);
        if (same) {
            return AG_OK;
        }
        *conflict = true;
        st = stmt(x, Q_FLAG_CONFLICT);
        sqlite3_bind_int64(st, 1, *id);
        return step_done(x, st, err, "flag conflict");
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return db_error(x->w, err, "study");
    }
    int64_t patient = 0;
    rc = put_patient(x, a, &patient, err);
    if (rc != AG_OK) {
        return rc;
    }
    st = stmt(x, Q_INSERT_STUDY);
    sqlite3_bind_int64(st, 1, patient);
    bind_text(st, 2, a->study_uid);
    bind_text(st, 3, a->study_date);
    bind_text(st, 4, a->study_time);
    bind_text(st, 5, a->accession);
    bind_text(st, 6, a->study_id);
    bind_text(st, 7, a->study_description);
    bind_text(st, 8, a->referring_name);
    bind_text(st, 9, a->referring_name_norm);
    sqlite3_bind_int64(st, 10, now_s());
    rc = step_done(x, st, err, "study");
    *id = sqlite3_last_insert_rowid(x->w);
    return rc;
}

static int put_series(SqliteIndex *x, const StoreAttrs *a, int64_t study,
                      int64_t *id, bool *created, AgError *err)
{
    *created = false;
    int rc = find_id(x, Q_FIND_SERIES, a->series_uid, id, NULL, err);
    if (rc != AG_ERR_NOTFOUND) {
        return rc;
    }
    *created = true;
    sqlite3_stmt *st = stmt(x, Q_INSERT_SERIES);
    sqlite3_bind_int64(st, 1, study);
    bind_text(st, 2, a->series_uid);
    bind_text(st, 3, a->modality);
    bind_int(st, 4, a->series_number);
    bind_text(st, 5, a->series_description);
    bind_text(st, 6, a->body_part);
    bind_text(st, 7, a->series_date);
    bind_text(st, 8, a->series_time);
    bind_text(st, 9, a->station);
    bind_text(st, 10, a->institution);
    bind_text(st, 11, a->department);
    bind_text(st, 12, a->manufacturer);
    sqlite3_bind_int64(st, 13, now_s());
    rc = step_done(x, st, err, "series");
    *id = sqlite3_last_insert_rowid(x->w);
    if (rc == AG_OK) {
        st = stmt(x, Q_STUDY_MODALITIES);
        sqlite3_bind_int64(st, 1, study);
        rc = step_done(x, st, err, "modalities");
    }
    return rc;
}

/* Prune the parents of a removed instance if they are left empty, and
 * recount them (a replacement may move an instance to another series). */
static int prune_parents(SqliteIndex *x, int64_t series, int64_t study,
                         int64_t patient, AgError *err)
{
    char sql[640];
    ag_fmt(sql, sizeof sql,
           "DELETE FROM series WHERE id = %lld AND NOT EXISTS (SELECT 1 FROM"
           " instances WHERE series_pk = %lld);"
           "UPDATE series SET num_instances = (SELECT count(*) FROM instances"
           " WHERE series_pk = %lld) WHERE id = %lld;"
           "DELETE FROM studies WHERE id = %lld AND NOT EXISTS (SELECT 1 FROM"
           " series WHERE study_pk = %lld);"
           "DELETE FROM patients WHERE id = %lld AND NOT EXISTS (SELECT 1"
           " FROM studies WHERE patient_pk = %lld);",
           (long long)series, (long long)series, (long long)series,
           (long long)series, (long long)study, (long long)study,
           (long long)patient, (long long)patient);
    int rc = exec(x->w, sql, err);   /* numbers only: no data in the SQL */
    if (rc == AG_OK) {
        sqlite3_stmt *st = stmt(x, Q_COUNT_STUDY);
        sqlite3_bind_int64(st, 1, study);
        sqlite3_bind_int64(st, 2, now_s());
        rc = step_done(x, st, err, "study counts");
    }
    if (rc == AG_OK) {
        sqlite3_stmt *st = stmt(x, Q_STUDY_MODALITIES);
        sqlite3_bind_int64(st, 1, study);
        rc = step_done(x, st, err, "modalities");
    }
    return rc;
}

/* Move an existing instance's blob to the trash and drop its row. */
static int drop_old(SqliteIndex *x, const char *sop_uid, AgError *err)
{
    sqlite3_stmt *st = stmt(x, Q_OLD_INSTANCE);
    bind_text(st, 1, sop_uid);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? AG_OK : db_error(x->w, err, "old");
    }
    int64_t id = sqlite3_column_int64(st, 0);
    char blob[STORE_BLOB_NAME_MAX];
    ag_fmt(blob, sizeof blob, "%s", (const char *)sqlite3_column_text(st, 1));
    int64_t series = sqlite3_column_int64(st, 2);
    int64_t study = sqlite3_column_int64(st, 3);
    int64_t patient = sqlite3_column_int64(st, 4);
    sqlite3_reset(st);
    st = stmt(x, Q_TRASH_ADD);
    bind_text(st, 1, blob);
    int e = step_done(x, st, err, "trash");
    if (e == AG_OK) {
        st = stmt(x, Q_DELETE_INSTANCE_ROW);
        sqlite3_bind_int64(st, 1, id);
        e = step_done(x, st, err, "replace");
    }
    if (e == AG_OK) {
        e = prune_parents(x, series, study, patient, err);
    }
    return e;
}

static int put_rows(SqliteIndex *x, const StoreIndexInsert *in, bool replace,
                    bool *conflict, AgError *err);

static int sq_put_instance(StoreIndex *ix, const StoreIndexInsert *in,
                           bool replace, bool *conflict, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    /* One instance's rows are all or nothing within the batch's
     * transaction: a failure rolls back to here and the rest commit. */
    int rc = step_done(x, stmt(x, Q_SAVEPOINT), err, "savepoint");
    if (rc == AG_OK) {
        rc = put_rows(x, in, replace, conflict, err);
        if (rc != AG_OK) {
            step_done(x, stmt(x, Q_ROLLBACK_TO), NULL, "rollback");
        }
        step_done(x, stmt(x, Q_RELEASE), NULL, "release");
    }
    return rc;
}

static int assign_depts(SqliteIndex *x, const StoreIndexInsert *in,
                        int64_t study, AgError *err)
{
    const StoreAttrs *a = in->attrs;
    const StoreSource *src = in->source;
    sqlite3_stmt *st = stmt(x, Q_ASSIGN_DEPTS);
    sqlite3_bind_int64(st, 1, study);
    bind_text(st, 2, src ? src->calling_ae : NULL);
    bind_text(st, 3, a->department);
    bind_text(st, 4, a->institution);
    bind_text(st, 5, a->requesting_service);
    bind_text(st, 6, a->modality);
    sqlite3_bind_int64(st, 7, src ? src->user : 0);
    sqlite3_bind_int64(st, 8, src ? src->dept : 0);
    return step_done(x, st, err, "department assignment");
}

static int put_rows(SqliteIndex *x, const StoreIndexInsert *in, bool replace,
                    bool *conflict, AgError *err)
{
    const StoreAttrs *a = in->attrs;
    int64_t study = 0, series = 0;
    bool new_series = false;
    *conflict = false;
    int rc = AG_OK;
    if (replace) {
        rc = drop_old(x, a->sop_uid, err);
    }
    if (rc == AG_OK) {
        rc = put_study(x, a, &study, conflict, err);
    }
    if (rc == AG_OK) {
        rc = put_series(x, a, study, &series, &new_series, err);
    }
    if (rc == AG_OK) {
        rc = assign_depts(x, in, study, err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    sqlite3_stmt *st = stmt(x, Q_INSERT_INSTANCE);
    sqlite3_bind_int64(st, 1, series);
    bind_text(st, 2, a->sop_uid);
    bind_text(st, 3, a->sop_class_uid);
    bind_int(st, 4, a->instance_number);
    bind_text(st, 5, a->transfer_syntax);
    bind_int(st, 6, a->rows);
    bind_int(st, 7, a->columns);
    bind_int(st, 8, a->frames);
    bind_text(st, 9, a->content_date);
    bind_text(st, 10, a->content_time);
    bind_text(st, 11, in->blob_name);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)in->blob->size);
    bind_text(st, 13, in->blob->checksum);
    bind_text(st, 14, in->source ? in->source->calling_ae : NULL);
    bind_text(st, 15, in->source ? in->source->remote_addr : NULL);
    bind_text(st, 16, in->source ? in->source->via : NULL);
    sqlite3_bind_int64(st, 17, now_s());
    rc = step_done(x, st, err, "instance");
    int64_t inst = sqlite3_last_insert_rowid(x->w);
    if (rc == AG_OK && in->staged != NULL) {
        st = stmt(x, Q_INSERT_STAGED);
        bind_text(st, 1, in->blob_name);
        sqlite3_bind_blob64(st, 2, in->staged, in->staged_len,
                            SQLITE_STATIC);
        rc = step_done(x, st, err, "staged blob");
    }
    if (rc == AG_OK && in->metadata_json != NULL) {
        st = stmt(x, Q_INSERT_META);
        sqlite3_bind_int64(st, 1, inst);
        sqlite3_bind_blob(st, 2, in->metadata_json, (int)in->metadata_len,
                          SQLITE_STATIC);
        rc = step_done(x, st, err, "metadata");
    }
    if (rc == AG_OK && !replace) {
        st = stmt(x, Q_INC_SERIES);
        sqlite3_bind_int64(st, 1, series);
        rc = step_done(x, st, err, "series counts");
        if (rc == AG_OK) {
            st = stmt(x, Q_INC_STUDY);
            sqlite3_bind_int64(st, 1, study);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)in->blob->size);
            sqlite3_bind_int(st, 3, new_series ? 1 : 0);
            sqlite3_bind_int64(st, 4, now_s());
            rc = step_done(x, st, err, "study counts");
        }
    } else if (rc == AG_OK) {
        /* A replacement may move the instance: recount (rare path). */
        st = stmt(x, Q_COUNT_SERIES);
        sqlite3_bind_int64(st, 1, series);
        rc = step_done(x, st, err, "series counts");
        if (rc == AG_OK) {
            st = stmt(x, Q_COUNT_STUDY);
            sqlite3_bind_int64(st, 1, study);
            sqlite3_bind_int64(st, 2, now_s());
            rc = step_done(x, st, err, "study counts");
        }
    }
    return rc;
}

/* ---- delete ------------------------------------------------------------------ */

/* Rows of instances under a level, as a WHERE clause on instances i. */
static const char *level_filter(StoreLevel level)
{
    switch (level) {
    case STORE_LEVEL_INSTANCE:
        return "i.sop_uid = ?1";
    case STORE_LEVEL_SERIES:
        return "i.series_pk = (SELECT id FROM series WHERE series_uid = ?1)";
    case STORE_LEVEL_STUDY:
        return "i.series_pk IN (SELECT s.id FROM series s JOIN studies t"
               " ON s.study_pk = t.id WHERE t.study_uid = ?1)";
    default:
        return "i.series_pk IN (SELECT s.id FROM series s JOIN studies t"
               " ON s.study_pk = t.id JOIN patients p ON t.patient_pk = p.id"
               " WHERE p.patient_id = ?1 AND p.issuer = ?2)";
    }
}

static int run_sql(SqliteIndex *x, const char *sql, const char *k1,
                   const char *k2, AgError *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(x->w, sql, -1, &st, NULL) != SQLITE_OK) {
        return db_error(x->w, err, "prepare");
    }
    bind_text(st, 1, k1);
    if (sqlite3_bind_parameter_count(st) >= 2) {
        bind_text(st, 2, k2);
    }
    int rc = sqlite3_step(st);
    while (rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
    }
    int out = rc == SQLITE_DONE ? AG_OK : db_error(x->w, err, "delete");
    sqlite3_finalize(st);
    return out;
}

static int sq_delete_level(StoreIndex *ix, StoreLevel level, const char *key,
                           uint64_t *count, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    /* Patient keys are "ID" or "ID<TAB>ISSUER". */
    char id[256], issuer[256] = "";
    ag_fmt(id, sizeof id, "%s", key);
    char *tab = strchr(id, '\t');
    if (tab != NULL) {
        *tab = '\0';
        ag_fmt(issuer, sizeof issuer, "%s", tab + 1);
    }
    char sql[1024];
    ag_fmt(sql, sizeof sql, "INSERT OR IGNORE INTO trash (blob)"
             " SELECT i.blob FROM instances i WHERE %s", level_filter(level));
    int rc = run_sql(x, sql, id, issuer, err);
    if (rc != AG_OK) {
        return rc;
    }
    *count = (uint64_t)sqlite3_changes(x->w);
    /* Delete from the top of the level; ON DELETE CASCADE takes the rest.
     * Then parents left empty go too, and counters are recomputed. */
    static const char *const DEL[] = {
        [STORE_LEVEL_PATIENT] =
            "DELETE FROM patients WHERE patient_id = ?1 AND issuer = ?2",
        [STORE_LEVEL_STUDY] = "DELETE FROM studies WHERE study_uid = ?1",
        [STORE_LEVEL_SERIES] = "DELETE FROM series WHERE series_uid = ?1",
        [STORE_LEVEL_INSTANCE] = "DELETE FROM instances WHERE sop_uid = ?1",
    };
    rc = run_sql(x, DEL[level], id, issuer, err);
    if (rc == AG_OK && sqlite3_changes(x->w) == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "nothing to delete");
    }
    if (rc == AG_OK) {
        rc = exec(x->w,
                  "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM"
                  " instances WHERE series_pk = series.id);"
                  "DELETE FROM studies WHERE NOT EXISTS (SELECT 1 FROM"
                  " series WHERE study_pk = studies.id);"
                  "DELETE FROM patients WHERE NOT EXISTS (SELECT 1 FROM"
                  " studies WHERE patient_pk = patients.id);"
                  "UPDATE series SET num_instances = (SELECT count(*) FROM"
                  " instances WHERE series_pk = series.id);"
                  "UPDATE studies SET num_series = (SELECT count(*) FROM"
                  " series WHERE study_pk = studies.id),"
                  " num_instances = (SELECT count(*) FROM instances i JOIN"
                  " series s ON i.series_pk = s.id"
                  " WHERE s.study_pk = studies.id),"
                  " size_bytes = (SELECT coalesce(sum(i.size), 0) FROM"
                  " instances i JOIN series s ON i.series_pk = s.id"
                  " WHERE s.study_pk = studies.id),"
                  " modalities = (SELECT group_concat(m, '\\') FROM"
                  " (SELECT DISTINCT modality AS m FROM series"
                  "  WHERE study_pk = studies.id AND modality IS NOT NULL"
                  "  ORDER BY m))", err);
    }
    return rc;
}

static int sq_trash_list(StoreIndex *ix, int (*fn)(void *, const char *),
                         void *ctx, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3_stmt *st = stmt(x, Q_TRASH_LIST);   /* after every batch */
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (fn(ctx, (const char *)sqlite3_column_text(st, 0)) != 0) {
            break;
        }
    }
    sqlite3_reset(st);
    (void)err;
    return AG_OK;
}

static int sq_trash_clear(StoreIndex *ix, const char *name, AgError *err)
{
    return run_sql((SqliteIndex *)ix, "DELETE FROM trash WHERE blob = ?1",
                   name, NULL, err);
}

/* ---- reads (reader connection) ---------------------------------------------- */

typedef struct Column {
    const char *keyword;        /* DICOM keyword or Agora name */
    const char *expr;           /* SQL expression */
    int levels;                 /* bit per StoreLevel where it applies */
} Column;

#define LV(l) (1 << (l))
#define ALL (LV(STORE_LEVEL_PATIENT) | LV(STORE_LEVEL_STUDY) | \
             LV(STORE_LEVEL_SERIES) | LV(STORE_LEVEL_INSTANCE))
#define STUDY_DOWN (LV(STORE_LEVEL_STUDY) | LV(STORE_LEVEL_SERIES) | \
                    LV(STORE_LEVEL_INSTANCE))
#define SERIES_DOWN (LV(STORE_LEVEL_SERIES) | LV(STORE_LEVEL_INSTANCE))

/* Whitelist: only these names reach SQL, and only as these expressions. */
static const Column COLUMNS[] = {
    {"PatientID", "p.patient_id", ALL},
    {"IssuerOfPatientID", "p.issuer", ALL},
    {"PatientName", "p.name", ALL},
    {"PatientBirthDate", "p.birth_date", ALL},
    {"PatientSex", "p.sex", ALL},
    {"StudyInstanceUID", "t.study_uid", STUDY_DOWN},
    {"StudyDate", "t.study_date", STUDY_DOWN},
    {"StudyTime", "t.study_time", LV(STORE_LEVEL_STUDY)},
    {"AccessionNumber", "t.accession", STUDY_DOWN},
    {"StudyDescription", "t.description", LV(STORE_LEVEL_STUDY)},
    {"ModalitiesInStudy", "t.modalities", LV(STORE_LEVEL_STUDY)},
    {"NumberOfStudyRelatedSeries", "t.num_series", LV(STORE_LEVEL_STUDY)},
    {"NumberOfStudyRelatedInstances", "t.num_instances",
     LV(STORE_LEVEL_STUDY)},
    {"PatientConflict", "t.patient_conflict", LV(STORE_LEVEL_STUDY)},
    {"SeriesInstanceUID", "s.series_uid", SERIES_DOWN},
    {"Modality", "s.modality", SERIES_DOWN},
    {"SeriesNumber", "s.series_number", LV(STORE_LEVEL_SERIES)},
    {"SeriesDescription", "s.description", LV(STORE_LEVEL_SERIES)},
    {"NumberOfSeriesRelatedInstances", "s.num_instances",
     LV(STORE_LEVEL_SERIES)},
    {"SOPInstanceUID", "i.sop_uid", LV(STORE_LEVEL_INSTANCE)},
    {"SOPClassUID", "i.sop_class_uid", LV(STORE_LEVEL_INSTANCE)},
    {"InstanceNumber", "i.instance_number", LV(STORE_LEVEL_INSTANCE)},
    {"TransferSyntaxUID", "i.transfer_syntax", LV(STORE_LEVEL_INSTANCE)},
    {"Size", "i.size", LV(STORE_LEVEL_INSTANCE)},
};
#define NCOLUMNS (sizeof COLUMNS / sizeof COLUMNS[0])

static const char *const FROM[] = {
    [STORE_LEVEL_PATIENT] = " FROM patients p",
    [STORE_LEVEL_STUDY] = " FROM studies t JOIN patients p"
                          " ON t.patient_pk = p.id",
    [STORE_LEVEL_SERIES] = " FROM series s JOIN studies t ON s.study_pk = t.id"
                           " JOIN patients p ON t.patient_pk = p.id",
    [STORE_LEVEL_INSTANCE] = " FROM instances i JOIN series s"
                             " ON i.series_pk = s.id JOIN studies t"
                             " ON s.study_pk = t.id JOIN patients p"
                             " ON t.patient_pk = p.id",
};

static const char *const ORDER[] = {
    [STORE_LEVEL_PATIENT] = " ORDER BY p.id",
    [STORE_LEVEL_STUDY] = " ORDER BY t.id",
    [STORE_LEVEL_SERIES] = " ORDER BY s.id",
    [STORE_LEVEL_INSTANCE] = " ORDER BY i.id",
};

static int sq_list(StoreIndex *ix, StoreLevel level, const char *const *flt,
                   uint32_t limit, StoreRowFn fn, void *ctx, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    AgBuf sql;
    ag_buf_init(&sql, 16384);
    const char *names[NCOLUMNS + 1];
    size_t ncol = 0;
    int rc = ag_buf_append_str(&sql, "SELECT ");
    for (size_t i = 0; i < NCOLUMNS && rc == AG_OK; i++) {
        if (COLUMNS[i].levels & LV(level)) {
            rc = ag_buf_printf(&sql, "%s%s", ncol ? ", " : "",
                               COLUMNS[i].expr);
            names[ncol++] = COLUMNS[i].keyword;
        }
    }
    names[ncol] = NULL;
    if (rc == AG_OK) {
        rc = ag_buf_append_str(&sql, FROM[level]);
    }
    /* Filters: "Keyword=value", whitelisted keyword, bound value. */
    const char *values[16];
    size_t nval = 0;
    for (size_t f = 0; flt != NULL && flt[f] != NULL && rc == AG_OK; f++) {
        const char *eq = strchr(flt[f], '=');
        const Column *col = NULL;
        for (size_t i = 0; eq != NULL && i < NCOLUMNS; i++) {
            if (strlen(COLUMNS[i].keyword) == (size_t)(eq - flt[f]) &&
                strncmp(COLUMNS[i].keyword, flt[f], (size_t)(eq - flt[f])) ==
                    0 && (COLUMNS[i].levels & LV(level))) {
                col = &COLUMNS[i];
            }
        }
        if (col == NULL || nval == 16) {
            ag_buf_deinit(&sql);
            return ag_error_set(err, AG_ERR_INVALID,
                                "unknown filter \"%.64s\" at this level",
                                flt[f]);
        }
        rc = ag_buf_printf(&sql, "%s %s = ?%zu", nval ? " AND" : " WHERE",
                           col->expr, nval + 1);
        values[nval++] = eq + 1;
    }
    if (rc == AG_OK) {
        rc = ag_buf_printf(&sql, "%s LIMIT %u", ORDER[level],
                           limit ? limit : 1000);
    }
    if (rc == AG_OK) {
        rc = ag_buf_append(&sql, "", 1);
    }
    if (rc != AG_OK) {
        ag_buf_deinit(&sql);
        return ag_error_set(err, rc, "list: query too long");
    }
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(rd, (const char *)sql.data, -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_error(rd, err, "list");
        reader_put(x, rd);
        ag_buf_deinit(&sql);
        return rc;
    }
    for (size_t v = 0; v < nval; v++) {
        bind_text(st, (int)v + 1, values[v]);
    }
    const char *vals[NCOLUMNS + 1];
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        for (size_t c = 0; c < ncol; c++) {
            vals[c] = (const char *)sqlite3_column_text(st, (int)c);
        }
        vals[ncol] = NULL;
        StoreRow row = {names, vals};
        if (fn(ctx, &row) != 0) {
            break;
        }
    }
    if (s != SQLITE_ROW && s != SQLITE_DONE) {
        rc = db_error(rd, err, "list");
    }
    sqlite3_finalize(st);
    reader_put(x, rd);
    ag_buf_deinit(&sql);
    return rc;
}

static int sq_stats(StoreIndex *ix, StoreStats *out, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    if (sqlite3_prepare_v2(rd,
                           "SELECT patients, studies, series, instances,"
                           " bytes FROM totals",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(rd, err, "stats");
    } else {
        if (sqlite3_step(st) == SQLITE_ROW) {
            out->patients = (uint64_t)sqlite3_column_int64(st, 0);
            out->studies = (uint64_t)sqlite3_column_int64(st, 1);
            out->series = (uint64_t)sqlite3_column_int64(st, 2);
            out->instances = (uint64_t)sqlite3_column_int64(st, 3);
            out->bytes = (uint64_t)sqlite3_column_int64(st, 4);
        } else {
            rc = db_error(rd, err, "stats");
        }
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

static int sq_walk_instances(StoreIndex *ix,
                             int (*fn)(void *, const char *, const char *,
                                       const char *, uint64_t),
                             void *ctx, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    if (sqlite3_prepare_v2(rd, "SELECT sop_uid, blob, checksum, size FROM"
                           " instances ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_error(rd, err, "walk");
    } else {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (fn(ctx, (const char *)sqlite3_column_text(st, 0),
                   (const char *)sqlite3_column_text(st, 1),
                   (const char *)sqlite3_column_text(st, 2),
                   (uint64_t)sqlite3_column_int64(st, 3)) != 0) {
                break;
            }
        }
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

static int sq_has_blob(StoreIndex *ix, const char *blob, bool *out,
                       AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    if (sqlite3_prepare_v2(rd, "SELECT 1 FROM instances WHERE blob = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(rd, err, "has blob");
    } else {
        bind_text(st, 1, blob);
        *out = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

/* ---- staged blobs ---------------------------------------------------------- */

static int sq_staged_get(StoreIndex *ix, const char *name, AgBuf *out,
                         AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(rd, "SELECT data FROM staged_blobs WHERE name"
                           " = ?1", -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(rd, err, "staged blob");
    } else {
        bind_text(st, 1, name);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            const void *p = sqlite3_column_blob(st, 0);
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            rc = ag_buf_append(out, p, n) == AG_OK
                ? AG_OK
                : ag_error_set(err, AG_ERR_NOMEM, "out of memory");
        } else if (s == SQLITE_DONE) {
            rc = ag_error_set(err, AG_ERR_NOTFOUND, "no staged blob %s",
                              name);
        } else {
            rc = db_error(rd, err, "staged blob");
        }
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

static int sq_staged_list(StoreIndex *ix, uint32_t max,
                          int (*fn)(void *, const char *, const uint8_t *,
                                    size_t),
                          void *ctx, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    if (sqlite3_prepare_v2(rd, "SELECT name, data FROM staged_blobs"
                           " ORDER BY rowid LIMIT ?1", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_error(rd, err, "staged blobs");
    } else {
        sqlite3_bind_int64(st, 1, max);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (fn(ctx, (const char *)sqlite3_column_text(st, 0),
                   sqlite3_column_blob(st, 1),
                   (size_t)sqlite3_column_bytes(st, 1)) != 0) {
                break;
            }
        }
        if (s != SQLITE_ROW && s != SQLITE_DONE) {
            rc = db_error(rd, err, "staged blobs");
        }
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

static int sq_staged_count(StoreIndex *ix, uint64_t *n, uint64_t *bytes,
                           AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    *n = *bytes = 0;
    if (sqlite3_prepare_v2(rd, "SELECT count(*), coalesce(sum(length(data)),"
                           " 0) FROM staged_blobs", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_error(rd, err, "staged blobs");
    } else {
        if (sqlite3_step(st) == SQLITE_ROW) {
            *n = (uint64_t)sqlite3_column_int64(st, 0);
            *bytes = (uint64_t)sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
    }
    reader_put(x, rd);
    return rc;
}

/* In the writer's transaction: the staged copy of name goes (its file is
 * durable now).  *indexed: whether an instance row still names the blob
 * (false: deleted or replaced since, so the file just written is not
 * wanted either). */
static int sq_staged_drop(StoreIndex *ix, const char *name, bool *indexed,
                          AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3_stmt *st = stmt(x, Q_DROP_STAGED);
    bind_text(st, 1, name);
    int rc = step_done(x, st, err, "staged blob");
    if (rc != AG_OK) {
        return rc;
    }
    st = stmt(x, Q_BLOB_INDEXED);
    bind_text(st, 1, name);
    int s = sqlite3_step(st);
    *indexed = s == SQLITE_ROW;
    sqlite3_reset(st);
    return s == SQLITE_ROW || s == SQLITE_DONE
        ? AG_OK : db_error(x->w, err, "staged blob");
}

/* ---- nodes ---------------------------------------------------------------- */

static int node_exec(SqliteIndex *x, const char *sql, const StoreNode *n,
                     const char *aet, AgError *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(x->w, sql, -1, &st, NULL) != SQLITE_OK) {
        return db_error(x->w, err, "nodes");
    }
    if (n != NULL) {
        bind_text(st, 1, n->aet);
        bind_text(st, 2, n->host);
        sqlite3_bind_int(st, 3, n->port);
        sqlite3_bind_int(st, 4, n->tls);
        bind_text(st, 5, n->description);
        sqlite3_bind_int64(st, 6, now_s());
        bind_text(st, 7, n->department);
    } else {
        bind_text(st, 1, aet);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? AG_OK
                                             : db_error(x->w, err, "nodes");
    sqlite3_finalize(st);
    return rc;
}

static int sq_node_put(StoreIndex *ix, const StoreNode *n, AgError *err)
{
    return node_exec((SqliteIndex *)ix,
                     "INSERT INTO nodes (aet, host, port, tls, description,"
                     " created_at, dept_pk) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
                     " (SELECT id FROM departments WHERE name = ?7))"
                     " ON CONFLICT (aet) DO UPDATE SET host = excluded.host,"
                     " port = excluded.port, tls = excluded.tls,"
                     " description = excluded.description,"
                     " dept_pk = excluded.dept_pk", n, NULL, err);
}

static int sq_node_remove(StoreIndex *ix, const char *aet, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    int rc = node_exec(x, "DELETE FROM nodes WHERE aet = ?1", NULL, aet, err);
    if (rc == AG_OK && sqlite3_changes(x->w) == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no node %s", aet);
    }
    return rc;
}

static void row_node(sqlite3_stmt *st, StoreNode *n)
{
    memset(n, 0, sizeof *n);
    ag_fmt(n->aet, sizeof n->aet, "%s", sqlite3_column_text(st, 0));
    ag_fmt(n->host, sizeof n->host, "%s", sqlite3_column_text(st, 1));
    n->port = (uint16_t)sqlite3_column_int(st, 2);
    n->tls = sqlite3_column_int(st, 3) != 0;
    const unsigned char *d = sqlite3_column_text(st, 4);
    ag_fmt(n->description, sizeof n->description, "%s", d ? (const char *)d
                                                           : "");
    const unsigned char *dn = sqlite3_column_text(st, 5);
    ag_fmt(n->department, sizeof n->department, "%s",
           dn ? (const char *)dn : "");
    n->department_id = sqlite3_column_int64(st, 6);
}

static int node_query(SqliteIndex *x, const char *aet,
                      int (*fn)(void *, const StoreNode *), void *ctx,
                      StoreNode *one, AgError *err)
{
    sqlite3 *rd = reader_get(x);
    sqlite3_stmt *st;
    int rc = AG_OK;
    const char *sql = aet != NULL
        ? "SELECT n.aet, n.host, n.port, n.tls, n.description, d.name, d.id"
          " FROM nodes n LEFT JOIN departments d ON n.dept_pk = d.id"
          " WHERE n.aet = ?1"
        : "SELECT n.aet, n.host, n.port, n.tls, n.description, d.name, d.id"
          " FROM nodes n LEFT JOIN departments d ON n.dept_pk = d.id"
          " ORDER BY n.aet";
    if (sqlite3_prepare_v2(rd, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(rd, err, "nodes");
    } else {
        bind_text(st, 1, aet);
        bool found = false;
        while (sqlite3_step(st) == SQLITE_ROW) {
            StoreNode n;
            row_node(st, &n);
            found = true;
            if (one != NULL) {
                *one = n;
                break;
            }
            if (fn(ctx, &n) != 0) {
                break;
            }
        }
        sqlite3_finalize(st);
        if (one != NULL && !found) {
            rc = ag_error_set(err, AG_ERR_NOTFOUND, "no node %s", aet);
        }
    }
    reader_put(x, rd);
    return rc;
}

static int sq_node_get(StoreIndex *ix, const char *aet, StoreNode *out,
                       AgError *err)
{
    return node_query((SqliteIndex *)ix, aet, NULL, NULL, out, err);
}

static int sq_node_list(StoreIndex *ix, int (*fn)(void *, const StoreNode *),
                        void *ctx, AgError *err)
{
    return node_query((SqliteIndex *)ix, NULL, fn, ctx, NULL, err);
}

static int sq_select(StoreIndex *ix, const char *sql,
                     const char *const *params, int nparams,
                     int (*fn)(void *, int, const char *const *), void *ctx,
                     AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3 *rd = reader_get(x);
    int rc = AG_OK;
    sqlite3_stmt *st = cached_prepare(x, rd, sql);
    if (st == NULL) {
        rc = db_error(rd, err, "query");
        reader_put(x, rd);
        return rc;
    }
    for (int i = 0; i < nparams; i++) {
        bind_text(st, i + 1, params[i]);
    }
    int ncol = sqlite3_column_count(st);
    const char *vals[64];
    if (ncol > 64) {
        ncol = 64;
    }
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < ncol; c++) {
            vals[c] = (const char *)sqlite3_column_text(st, c);
        }
        if (fn(ctx, ncol, vals) != 0) {
            break;
        }
    }
    if (s != SQLITE_ROW && s != SQLITE_DONE) {
        rc = db_error(rd, err, "query");
    }
    cached_done(st);
    reader_put(x, rd);
    return rc;
}

static int sq_exec(StoreIndex *ix, const char *sql,
                   const char *const *params, int nparams, int64_t *changes,
                   int64_t *last_id, AgError *err)
{
    SqliteIndex *x = (SqliteIndex *)ix;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(x->w, sql, -1, &st, NULL) != SQLITE_OK) {
        return db_error(x->w, err, "statement");
    }
    for (int i = 0; i < nparams; i++) {
        bind_text(st, i + 1, params[i]);
    }
    int s = sqlite3_step(st);
    while (s == SQLITE_ROW) {
        s = sqlite3_step(st);   /* RETURNING rows are not wanted here */
    }
    int rc = AG_OK;
    if (s != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(x->w) == SQLITE_CONSTRAINT_UNIQUE ||
                     sqlite3_extended_errcode(x->w) ==
                         SQLITE_CONSTRAINT_PRIMARYKEY
                 ? ag_error_set(err, AG_ERR_EXISTS, "already exists")
                 : db_error(x->w, err, "statement");
    }
    if (changes != NULL) {
        *changes = sqlite3_changes(x->w);
    }
    if (last_id != NULL) {
        *last_id = sqlite3_last_insert_rowid(x->w);
    }
    sqlite3_finalize(st);
    return rc;
}

static const StoreIndexOps SQLITE_OPS = {
    .select = sq_select,
    .exec = sq_exec,
    .node_put = sq_node_put,
    .node_remove = sq_node_remove,
    .node_get = sq_node_get,
    .node_list = sq_node_list,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .set_commit_sync = sq_set_commit_sync,
    .sync_log = sq_sync_log,
    .rollback = sq_rollback,
    .find_instance = sq_find_instance,
    .put_instance = sq_put_instance,
    .delete_level = sq_delete_level,
    .trash_list = sq_trash_list,
    .trash_clear = sq_trash_clear,
    .list = sq_list,
    .stats = sq_stats,
    .walk_instances = sq_walk_instances,
    .has_blob = sq_has_blob,
    .staged_get = sq_staged_get,
    .staged_list = sq_staged_list,
    .staged_count = sq_staged_count,
    .staged_drop = sq_staged_drop,
};
