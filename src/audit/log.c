/*
 * log.c — recording: the bounded queue, the writer thread that chains and
 * commits records in batches, flush, open and close.
 *
 * audit_record() runs on every query of every protocol, so it only copies
 * the event into one heap block and links it to the queue.  The writer
 * takes everything queued (up to BATCH_MAX), and in one transaction reads
 * the chain head, numbers and hashes each record, inserts it and writes the
 * new head.  Reading the head inside the write transaction (not trusting
 * memory) is what lets `agora` commands append to the log of a running
 * server without breaking the numbering.  A failed commit rolls back and
 * puts the batch back at the front of the queue, so nothing is lost and the
 * order is kept; the writer retries with a back-off.
 */
#include "audit_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAX_DEFAULT 8192
#define BATCH_MAX 1024
#define FULL_WAIT_MS 2000       /* audit_record on a full queue */
#define CLOSE_RETRY_MS 5000     /* audit_close on a failing disk */
#define FLUSH_WAIT_MS 30000

typedef struct QNode {
    struct QNode *next;
    uint64_t ticket;            /* 1, 2, 3, ... in queue order */
    AuditRecord rec;            /* strings point into data */
    char data[];
} QNode;

/* The writer's statements: one batch runs all of them, and a batch is
 * often one record (a store folded per study, an association), so they
 * are prepared once rather than parsed per batch. */
enum { W_BEGIN, W_COMMIT, W_ROLLBACK, W_HEAD_READ, W_HEAD_WRITE, W_INSERT,
       W_NSTMT };

static const char *const WSQL[W_NSTMT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_HEAD_READ] = "SELECT seq, time, hash, mac FROM head WHERE id = 1",
    [W_HEAD_WRITE] = "INSERT OR REPLACE INTO head (id, seq, time, hash, mac)"
                     " VALUES (1, ?1, ?2, ?3, ?4)",
    [W_INSERT] = "INSERT INTO events (" AUDIT_ROW_COLUMNS ") VALUES (?1, ?2,"
                 " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
                 " ?16)",
};

struct AuditLog {
    uint8_t key[AUDIT_KEY_BYTES];
    char *data_dir;
    sqlite3 *wdb;               /* writer thread only */
    sqlite3_stmt *wst[W_NSTMT]; /* wdb's statements, prepared at first use */
    sqlite3 *rdb;               /* searches, under rlock */
    pthread_mutex_t rlock;

    pthread_mutex_t lock;       /* everything below */
    pthread_cond_t work;        /* writer: records queued, or stopping */
    pthread_cond_t done;        /* flushers: committed moved, or failed */
    pthread_cond_t room;        /* recorders: the queue has room */
    QNode *head, *tail;         /* waiting for the writer */
    uint64_t queued, queue_max; /* recorded, not yet committed */
    uint64_t next_ticket;       /* last ticket handed out */
    uint64_t committed;         /* tickets up to this one are committed */
    uint64_t failures;          /* failed commits so far */
    uint64_t lost, lost_reported;
    uint64_t last_seq;
    char fail_msg[256];
    bool stopping;
    pthread_t writer;
    bool writer_started;

    AuditExporter *exporter;
};

/* ---- recording --------------------------------------------------------- */

static int check_event(const AuditEvent *ev, AgError *err)
{
    if (!audit__event_known((int)ev->event)) {
        return ag_error_set(err, AG_ERR_INVALID, "audit: unknown event id %d",
                            (int)ev->event);
    }
    if (!audit__type_known((int)ev->type)) {
        return ag_error_set(err, AG_ERR_INVALID, "audit: unknown event type "
                            "%d", (int)ev->type);
    }
    if (ev->action != 0 && strchr("CRUDE", ev->action) == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "audit: action code must be "
                            "C, R, U, D or E");
    }
    int o = (int)ev->outcome;
    if (o != 0 && o != 4 && o != 8 && o != 12) {   /* PS3.15 A.5.1 */
        return ag_error_set(err, AG_ERR_INVALID, "audit: outcome %d is not "
                            "0, 4, 8 or 12", o);
    }
    return AG_OK;
}

/* The event's strings, cleaned and bounded, packed NUL-separated into b;
 * offs[i] is where field i starts, or SIZE_MAX when absent. */
static int pack_fields(const AuditEvent *ev, AgBuf *b, size_t offs[8])
{
    const char *f[8] = {ev->user, ev->source, ev->destination,
                        ev->patient_id, ev->patient_name, ev->study_uid,
                        ev->sop_class, ev->detail};
    for (int i = 0; i < 8; i++) {
        offs[i] = SIZE_MAX;
        if (f[i] == NULL) {
            continue;
        }
        offs[i] = b->len;
        int rc = audit__utf8_clean(b, f[i], i == 7 ? AUDIT_DETAIL_MAX
                                                   : AUDIT_FIELD_MAX);
        if (rc == AG_OK) {
            rc = ag_buf_append(b, "", 1);
        }
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

static QNode *node_make(const AuditEvent *ev)
{
    AgBuf b;
    ag_buf_init(&b, 0);
    size_t offs[8];
    if (pack_fields(ev, &b, offs) != AG_OK) {
        ag_buf_deinit(&b);
        return NULL;
    }
    QNode *n = ag_malloc(sizeof *n + b.len);
    if (n == NULL) {
        ag_buf_deinit(&b);
        return NULL;
    }
    memset(n, 0, sizeof *n);
    if (b.len > 0) {
        memcpy(n->data, b.data, b.len);
    }
    ag_buf_deinit(&b);
    n->rec.ev = *ev;
    if (n->rec.ev.action == 0) {
        n->rec.ev.action = audit__default_action(ev->event);
    }
    const char **f[8] = {&n->rec.ev.user, &n->rec.ev.source,
                         &n->rec.ev.destination, &n->rec.ev.patient_id,
                         &n->rec.ev.patient_name, &n->rec.ev.study_uid,
                         &n->rec.ev.sop_class, &n->rec.ev.detail};
    for (int i = 0; i < 8; i++) {
        *f[i] = offs[i] == SIZE_MAX ? NULL : n->data + offs[i];
    }
    return n;
}

static void deadline_in(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Link n at the tail (lock held). */
static void enqueue_locked(AuditLog *log, QNode *n)
{
    audit__now(n->rec.time);
    n->ticket = ++log->next_ticket;
    if (log->tail != NULL) {
        log->tail->next = n;
    } else {
        log->head = n;
    }
    log->tail = n;
    log->queued++;
    pthread_cond_signal(&log->work);
}

int audit_record(AuditLog *log, const AuditEvent *ev, AgError *err)
{
    if (log == NULL) {
        return AG_OK;
    }
    int rc = check_event(ev, err);
    if (rc != AG_OK) {
        return rc;
    }
    QNode *n = node_make(ev);
    if (n == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
    }
    struct timespec until;
    deadline_in(&until, FULL_WAIT_MS);
    pthread_mutex_lock(&log->lock);
    while (log->queued >= log->queue_max && !log->stopping) {
        if (pthread_cond_timedwait(&log->room, &log->lock, &until) ==
            ETIMEDOUT) {
            break;
        }
    }
    if (log->queued >= log->queue_max || log->stopping) {
        log->lost++;
        pthread_mutex_unlock(&log->lock);
        ag_free(n);
        ag_log(AG_LOG_ERROR, "audit", "msg=\"audit record lost\" "
               "reason=%s", log->stopping ? "closing" : "queue full");
        return ag_error_set(err, AG_ERR_LIMIT, "audit: %s, record lost",
                            log->stopping ? "log is closing"
                                          : "queue full (writer stalled)");
    }
    enqueue_locked(log, n);
    pthread_mutex_unlock(&log->lock);
    return AG_OK;
}

int audit_flush(AuditLog *log, AgError *err)
{
    if (log == NULL) {
        return AG_OK;
    }
    struct timespec until;
    deadline_in(&until, FLUSH_WAIT_MS);
    pthread_mutex_lock(&log->lock);
    uint64_t target = log->next_ticket, failures = log->failures;
    int rc = AG_OK;
    while (log->committed < target) {
        if (log->failures != failures) {
            rc = ag_error_set(err, AG_ERR_IO, "audit: %s", log->fail_msg);
            break;
        }
        if (pthread_cond_timedwait(&log->done, &log->lock, &until) ==
            ETIMEDOUT) {
            rc = ag_error_set(err, AG_ERR_IO, "audit: records not committed "
                              "after %d s", FLUSH_WAIT_MS / 1000);
            break;
        }
    }
    pthread_mutex_unlock(&log->lock);
    return rc;
}

/* ---- the writer -------------------------------------------------------- */

typedef struct Head {
    uint64_t seq;
    char time[AUDIT_TIME_SIZE];
    uint8_t hash[AUDIT_HASH_BYTES];
} Head;

static int db_err(sqlite3 *db, const char *what, char *msg, size_t cap)
{
    snprintf(msg, cap, "audit.db: %s: %s", what, sqlite3_errmsg(db));
    return AG_ERR_IO;
}

/* Writer statement q, reset and unbound; NULL (message in msg) if it
 * cannot be prepared. */
static sqlite3_stmt *wstmt(AuditLog *log, int q, char *msg, size_t cap)
{
    sqlite3_stmt *st = log->wst[q];
    if (st == NULL) {
        if (sqlite3_prepare_v3(log->wdb, WSQL[q], -1,
                               SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            db_err(log->wdb, WSQL[q], msg, cap);
            return NULL;
        }
        log->wst[q] = st;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Run writer statement q (BEGIN, COMMIT, ROLLBACK). */
static int wexec(AuditLog *log, int q, char *msg, size_t cap)
{
    sqlite3_stmt *st = wstmt(log, q, msg, cap);
    if (st == NULL) {
        return AG_ERR_IO;
    }
    int rc = sqlite3_step(st) == SQLITE_DONE
                 ? AG_OK
                 : db_err(log->wdb, WSQL[q], msg, cap);
    sqlite3_reset(st);
    return rc;
}

/* The head as stored (MAC checked), or the empty chain. */
static int head_read(AuditLog *log, Head *h, char *msg, size_t cap)
{
    memset(h, 0, sizeof *h);
    sqlite3_stmt *st = wstmt(log, W_HEAD_READ, msg, cap);
    if (st == NULL) {
        return AG_ERR_IO;
    }
    int step = sqlite3_step(st), rc = AG_OK;
    if (step == SQLITE_ROW) {
        h->seq = (uint64_t)sqlite3_column_int64(st, 0);
        const char *t = (const char *)sqlite3_column_text(st, 1);
        snprintf(h->time, sizeof h->time, "%s", t != NULL ? t : "");
        uint8_t mac[AUDIT_HASH_BYTES], want[AUDIT_HASH_BYTES];
        bool ok = audit__unhex((const char *)sqlite3_column_text(st, 2),
                               h->hash, AUDIT_HASH_BYTES) &&
                  audit__unhex((const char *)sqlite3_column_text(st, 3), mac,
                               AUDIT_HASH_BYTES);
        audit__head_mac(log->key, h->seq, h->time, h->hash, want);
        if (!ok || sodium_memcmp(mac, want, AUDIT_HASH_BYTES) != 0) {
            /* Appending to a chain we cannot vouch for would hide the
             * damage behind fresh records: refuse, loudly. */
            snprintf(msg, cap, "audit.db: the chain head fails its check "
                     "(tampering, or a different audit.key)");
            rc = AG_ERR_INVALID;
        }
    } else if (step != SQLITE_DONE) {
        rc = db_err(log->wdb, "read head", msg, cap);
    }
    sqlite3_reset(st);
    return rc;
}

static int head_write(AuditLog *log, const Head *h, char *msg, size_t cap)
{
    uint8_t mac[AUDIT_HASH_BYTES];
    audit__head_mac(log->key, h->seq, h->time, h->hash, mac);
    char hash_hex[AUDIT_HASH_HEX], mac_hex[AUDIT_HASH_HEX];
    audit__hex(h->hash, AUDIT_HASH_BYTES, hash_hex);
    audit__hex(mac, AUDIT_HASH_BYTES, mac_hex);
    sqlite3_stmt *st = wstmt(log, W_HEAD_WRITE, msg, cap);
    if (st == NULL) {
        return AG_ERR_IO;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)h->seq);
    sqlite3_bind_text(st, 2, h->time, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hash_hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, mac_hex, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE
                 ? AG_OK
                 : db_err(log->wdb, "write head", msg, cap);
    sqlite3_reset(st);
    return rc;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
    if (s != NULL) {
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, i);
    }
}

static int insert_record(sqlite3_stmt *st, const AuditRecord *r)
{
    char hex[AUDIT_HASH_HEX], action[2] = {r->ev.action, 0};
    audit__hex(r->hash, AUDIT_HASH_BYTES, hex);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)r->seq);
    sqlite3_bind_text(st, 2, r->time, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, (int)r->ev.event);
    sqlite3_bind_int(st, 4, (int)r->ev.type);
    sqlite3_bind_text(st, 5, action, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 6, (int)r->ev.outcome);
    bind_opt(st, 7, r->ev.user);
    bind_opt(st, 8, r->ev.source);
    bind_opt(st, 9, r->ev.destination);
    bind_opt(st, 10, r->ev.patient_id);
    bind_opt(st, 11, r->ev.patient_name);
    bind_opt(st, 12, r->ev.study_uid);
    bind_opt(st, 13, r->ev.sop_class);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)r->ev.count);
    bind_opt(st, 15, r->ev.detail);
    sqlite3_bind_text(st, 16, hex, -1, SQLITE_TRANSIENT);
    return sqlite3_step(st) == SQLITE_DONE ? AG_OK : AG_ERR_IO;
}

/* Chain and insert the batch at first..(n nodes), then the head; one
 * transaction.  On failure nothing is changed (rolled back). */
static int commit_batch(AuditLog *log, QNode *first, size_t n, char *msg,
                        size_t cap, uint64_t *last_seq)
{
    if (ag_fault("audit.commit")) {
        snprintf(msg, cap, "audit.db: injected fault (audit.commit)");
        return AG_ERR_IO;
    }
    int rc = wexec(log, W_BEGIN, msg, cap);
    if (rc != AG_OK) {
        return rc;
    }
    Head h;
    rc = head_read(log, &h, msg, cap);
    sqlite3_stmt *st = NULL;
    if (rc == AG_OK && (st = wstmt(log, W_INSERT, msg, cap)) == NULL) {
        rc = AG_ERR_IO;
    }
    QNode *q = first;
    for (size_t i = 0; rc == AG_OK && i < n; i++, q = q->next) {
        AuditRecord r = q->rec;
        r.seq = h.seq + 1;
        if (strcmp(r.time, h.time) < 0) {
            memcpy(r.time, h.time, sizeof r.time);  /* never backwards */
        }
        audit__hash_record(log->key, &r, h.hash, r.hash);
        if (insert_record(st, &r) != AG_OK) {
            rc = db_err(log->wdb, "insert", msg, cap);
            break;
        }
        h.seq = r.seq;
        memcpy(h.time, r.time, sizeof h.time);
        memcpy(h.hash, r.hash, sizeof h.hash);
    }
    if (st != NULL) {
        sqlite3_reset(st);
    }
    if (rc == AG_OK) {
        rc = head_write(log, &h, msg, cap);
    }
    if (rc == AG_OK) {
        rc = wexec(log, W_COMMIT, msg, cap);
    }
    if (rc != AG_OK) {
        if (!sqlite3_get_autocommit(log->wdb)) {
            char ignored[64];
            wexec(log, W_ROLLBACK, ignored, sizeof ignored);
        }
        return rc;
    }
    *last_seq = h.seq;
    return AG_OK;
}

/* Take up to BATCH_MAX nodes off the queue (lock held). */
static QNode *take_batch(AuditLog *log, size_t *n)
{
    QNode *first = log->head, *last = first;
    *n = 1;
    while (*n < BATCH_MAX && last->next != NULL) {
        last = last->next;
        (*n)++;
    }
    log->head = last->next;
    if (log->head == NULL) {
        log->tail = NULL;
    }
    last->next = NULL;
    return first;       /* still counted in queued until committed */
}

/* Put a failed batch back in front (lock held), keeping the order. */
static void give_back(AuditLog *log, QNode *first)
{
    QNode *last = first;
    while (last->next != NULL) {
        last = last->next;
    }
    last->next = log->head;
    log->head = first;
    if (log->tail == NULL) {
        log->tail = last;
    }
}

static void free_batch(QNode *q)
{
    while (q != NULL) {
        QNode *next = q->next;
        ag_free(q);
        q = next;
    }
}

/* Records refused on a full queue are themselves evidence: once the
 * writer works again it records how many were lost (lock held). */
static void report_lost_locked(AuditLog *log)
{
    if (log->lost == log->lost_reported || log->stopping) {
        return;
    }
    char detail[96];
    snprintf(detail, sizeof detail, "%llu audit records lost: the queue was "
             "full", (unsigned long long)(log->lost - log->lost_reported));
    AuditEvent ev = {.event = AUDIT_SECURITY_ALERT,
                     .type = AUDIT_TYPE_AUDIT_RECORDING_STOPPED,
                     .outcome = AUDIT_SERIOUS_FAILURE, .detail = detail};
    QNode *n = node_make(&ev);
    if (n != NULL) {
        log->lost_reported = log->lost;
        enqueue_locked(log, n);
    }
}

static void *writer_main(void *arg)
{
    AuditLog *log = arg;
    uint32_t backoff_ms = 0, failing_ms = 0, streak = 0;
    pthread_mutex_lock(&log->lock);
    for (;;) {
        while (log->head == NULL && !log->stopping) {
            pthread_cond_wait(&log->work, &log->lock);
        }
        if (log->head == NULL) {
            break;      /* stopping and drained */
        }
        if (log->stopping && failing_ms >= CLOSE_RETRY_MS) {
            break;      /* the disk keeps failing: give up at close */
        }
        size_t n;
        QNode *batch = take_batch(log, &n);
        pthread_mutex_unlock(&log->lock);

        char msg[256] = "";
        uint64_t last_seq = 0;
        int rc = commit_batch(log, batch, n, msg, sizeof msg, &last_seq);

        pthread_mutex_lock(&log->lock);
        if (rc == AG_OK) {
            QNode *q = batch;
            while (q->next != NULL) {
                q = q->next;
            }
            log->committed = q->ticket;
            log->last_seq = last_seq;
            log->queued -= n;
            pthread_cond_broadcast(&log->room);
            backoff_ms = failing_ms = streak = 0;
            free_batch(batch);
            report_lost_locked(log);
            audit__exporter_kick(log->exporter);
        } else {
            give_back(log, batch);
            log->failures++;
            snprintf(log->fail_msg, sizeof log->fail_msg, "%s", msg);
            if (streak++ % 30 == 0) {   /* the first, then now and then */
                ag_log(AG_LOG_ERROR, "audit", "msg=\"audit commit failed, "
                       "retrying\" records=%zu failures=%u error=\"%s\"",
                       n, streak, msg);
            }
            backoff_ms = backoff_ms == 0 ? 50
                         : backoff_ms >= 2000 ? 2000 : backoff_ms * 2;
            failing_ms += backoff_ms;
            struct timespec until;
            deadline_in(&until, backoff_ms);
            pthread_cond_broadcast(&log->done);
            /* the whole back-off, whatever is recorded meanwhile */
            while (pthread_cond_timedwait(&log->work, &log->lock, &until) !=
                   ETIMEDOUT) {
            }
        }
        pthread_cond_broadcast(&log->done);
    }
    pthread_mutex_unlock(&log->lock);
    return NULL;
}

/* ---- open and close ---------------------------------------------------- */

/* A new key for a log that already has records would make the whole chain
 * fail verification: refuse instead. */
static int check_key_needed(const char *data_dir, AgError *err)
{
    char path[AG_PATH_MAX];
    if (ag_fmt(path, sizeof path, "%s/audit.key", data_dir) != AG_OK ||
        access(path, F_OK) == 0) {
        return AG_OK;
    }
    sqlite3 *db;
    if (audit__db_open(data_dir, true, &db, NULL) != AG_OK) {
        return AG_OK;       /* no log yet */
    }
    sqlite3_stmt *st;
    long long n = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events", -1, &st,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    if (n > 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "%s is missing but "
                            "%s/audit.db holds %lld records: restore the key "
                            "(a new one would break the chain)", path,
                            data_dir, n);
    }
    return AG_OK;
}

/* The empty chain's head, so that removing every record is detected too. */
static int head_init(AuditLog *log, AgError *err)
{
    char msg[256] = "";
    Head h;
    int rc = AG_OK;
    if (sqlite3_exec(log->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
        SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "%s/audit.db: begin: %s",
                            log->data_dir, sqlite3_errmsg(log->wdb));
    }
    sqlite3_stmt *st;
    bool have = false;
    if (sqlite3_prepare_v2(log->wdb, "SELECT 1 FROM head", -1, &st, NULL) ==
        SQLITE_OK) {
        have = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    if (!have) {
        memset(&h, 0, sizeof h);
        audit__now(h.time);
        rc = head_write(log, &h, msg, sizeof msg);
    } else {
        rc = head_read(log, &h, msg, sizeof msg);
    }
    if (rc == AG_OK &&
        sqlite3_exec(log->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_err(log->wdb, "commit", msg, sizeof msg);
    }
    if (rc != AG_OK) {
        sqlite3_exec(log->wdb, "ROLLBACK", NULL, NULL, NULL);
        return ag_error_set(err, rc, "%s (in %s)", msg, log->data_dir);
    }
    log->last_seq = h.seq;
    return AG_OK;
}

static int open_files(AuditLog *log, AgError *err)
{
    if (mkdir(log->data_dir, 0750) != 0 && errno != EEXIST) {
        return ag_error_errno(err, AG_ERR_IO, "mkdir %s", log->data_dir);
    }
    int rc = check_key_needed(log->data_dir, err);
    if (rc == AG_OK) {
        rc = audit__key_load(log->data_dir, true, log->key, err);
    }
    if (rc == AG_OK) {
        rc = audit__db_open(log->data_dir, false, &log->wdb, err);
    }
    if (rc == AG_OK) {
        rc = audit__db_open(log->data_dir, false, &log->rdb, err);
    }
    return rc == AG_OK ? head_init(log, err) : rc;
}

int audit_open(const AuditConfig *cfg, AuditLog **out, AgError *err)
{
    if (cfg == NULL || cfg->data_dir == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "audit: no data directory");
    }
    if (sodium_init() < 0) {
        return ag_error_set(err, AG_ERR_IO, "audit: libsodium failed to "
                            "start");
    }
    AuditLog *log = ag_calloc(1, sizeof *log);
    if (log == NULL || (log->data_dir = ag_strdup(cfg->data_dir)) == NULL) {
        ag_free(log);
        return ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
    }
    log->queue_max = cfg->queue_max != 0 ? cfg->queue_max
                                         : QUEUE_MAX_DEFAULT;
    pthread_mutex_init(&log->lock, NULL);
    pthread_mutex_init(&log->rlock, NULL);
    pthread_cond_init(&log->work, NULL);
    pthread_cond_init(&log->done, NULL);
    pthread_cond_init(&log->room, NULL);
    int rc = open_files(log, err);
    if (rc == AG_OK && cfg->syslog_host != NULL) {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        AuditSource src = {.source_id = cfg->source_id != NULL
                                            ? cfg->source_id
                                            : "AGORA",
                           .site_id = cfg->site_id, .host = host};
        rc = audit__exporter_start(cfg, &src, &log->exporter, err);
    }
    /* the writer last: it kicks the exporter */
    if (rc == AG_OK && pthread_create(&log->writer, NULL, writer_main,
                                      log) != 0) {
        rc = ag_error_set(err, AG_ERR_IO, "audit: cannot start the writer "
                          "thread");
    }
    log->writer_started = rc == AG_OK;
    if (rc != AG_OK) {
        audit_close(log);
        return rc;
    }
    *out = log;
    return AG_OK;
}

void audit_close(AuditLog *log)
{
    if (log == NULL) {
        return;
    }
    if (log->writer_started) {
        pthread_mutex_lock(&log->lock);
        log->stopping = true;
        pthread_cond_broadcast(&log->work);
        pthread_cond_broadcast(&log->room);
        pthread_mutex_unlock(&log->lock);
        pthread_join(log->writer, NULL);
    }
    if (log->head != NULL) {
        ag_log(AG_LOG_ERROR, "audit", "msg=\"audit records not committed at "
               "close\" records=%llu error=\"%s\"",
               (unsigned long long)log->queued, log->fail_msg);
        free_batch(log->head);
    }
    audit__exporter_stop(log->exporter, 2000);
    for (int i = 0; i < W_NSTMT; i++) {
        sqlite3_finalize(log->wst[i]);
    }
    sqlite3_close(log->wdb);
    sqlite3_close(log->rdb);
    pthread_mutex_destroy(&log->lock);
    pthread_mutex_destroy(&log->rlock);
    pthread_cond_destroy(&log->work);
    pthread_cond_destroy(&log->done);
    pthread_cond_destroy(&log->room);
    sodium_memzero(log->key, sizeof log->key);
    ag_free(log->data_dir);
    ag_free(log);
}

void audit_stats(AuditLog *log, AuditStats *out)
{
    memset(out, 0, sizeof *out);
    if (log == NULL) {
        return;
    }
    pthread_mutex_lock(&log->lock);
    out->queued = log->queued;
    out->last_seq = log->last_seq;
    out->lost = log->lost;
    pthread_mutex_unlock(&log->lock);
    audit__exporter_stats(log->exporter, out);
}

/* ---- for search.c ------------------------------------------------------ */

sqlite3 *audit__search_db_lock(AuditLog *log)
{
    pthread_mutex_lock(&log->rlock);
    return log->rdb;
}

void audit__search_db_unlock(AuditLog *log)
{
    pthread_mutex_unlock(&log->rlock);
}
