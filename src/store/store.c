/*
 * store.c — the archive core: open/close, the ingest pipeline with group
 * commit, delete, listing and the integrity check.
 *
 * Ingest in the caller's thread: read the file (small ones whole, into
 * memory: one read, parsed, hashed and written from the same bytes; large
 * ones streamed, pixels left in the file), parse the header, validate,
 * build the instance's DICOM JSON and write the blob — in parallel across
 * callers.  Then the job goes through the commit pipeline (two threads,
 * below), which makes durable, in this order (SECURITY.md rule 4): the
 * blob's bytes, its name, the index rows (one transaction per batch, the
 * duplicate policy applied there); only then is the caller told.  A crash
 * at any point leaves no index row pointing to a blob that is not durable,
 * and nothing acknowledged that is not durable.
 */
#include "store_int.h"

#include <ctype.h>
#include <sodium.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTENERS 16
#define HEADER_BUDGET ((size_t)256 << 20)
#define BULK_INLINE_MAX 1024     /* larger values: BulkDataURI in metadata */
/* Files up to this size are read whole and written from memory (a single
 * CT slice fits); larger ones are streamed so that memory per ingest stays
 * bounded whatever the instance's size (DESIGN.md §4). */
#define INLINE_FILE_MAX ((size_t)1 << 20)
/* Larger instances are stored as received even under a compression
 * policy (re-encoding needs them in memory, several times over). */
#define COMPRESS_FILE_MAX ((size_t)512 << 20)
/*
 * STORE_SYNC_FILESYSTEM adapts to the load.  With fewer than FEW_IN_FLIGHT
 * instances in the pipeline (a few DIMSE associations), each writer
 * fdatasyncs and renames its own blob — in parallel, and cheaper than a
 * syncfs for one file — and up to CHEAP_SYNC_MAX renamed blobs get their
 * directories fsynced.  With more (many associations), and always for
 * asynchronous callers (STOW-RS, agora import: streams that do not wait
 * for each instance), blobs wait unsynced and one syncfs per cycle serves
 * them all.
 */
#define FEW_IN_FLIGHT 8
#define CHEAP_SYNC_MAX 4
/* Without a flush of the index's log alone (StoreIndexOps.sync_log), a
 * batch under DEFER_MIN commits durably itself: a syncfs would cost it
 * more than its own commit's fsync. */
#define DEFER_MIN 8
/*
 * Staging.  With few instances in flight each store waits for its own
 * flushes, one after the other: the blob's bytes, its name, the index
 * commit.  A blob of up to STAGE_MAX bytes skips the first two: its bytes
 * go into the index with its rows (one transaction, one fsync of the WAL,
 * no new file), and the spiller thread writes staged blobs out to their
 * files later — many per syncfs, when the store has been idle for
 * SPILL_IDLE_MS or more than SPILL_MAX_N / SPILL_MAX_BYTES are staged —
 * then drops the staged copies.  Until then readers find the bytes in the
 * index (store__blob_fd).  A crash loses nothing: staged bytes are as
 * durable as the rows; whatever is staged at open is spilled when idle.
 */
#define STAGE_MAX ((size_t)64 << 10)
#define SPILL_IDLE_MS 50
#define SPILL_MAX_N 4096
#define SPILL_MAX_BYTES ((uint64_t)64 << 20)
#define SPILL_BATCH 256

/* A FIFO of jobs, linked through Job.next. */
typedef struct Job Job;
typedef struct JobQueue {
    Job *head, *tail;
} JobQueue;

struct Job {
    /* in */
    StoreAttrs attrs;
    const StoreSource *src;
    char blob_name[STORE_BLOB_NAME_MAX];
    StoreBlobInfo blob;
    const char *json;
    size_t json_len;
    /* out */
    int rc;
    AgError err;
    StoreOutcome outcome;
    bool conflict;
    bool drop_new_blob;   /* duplicate or failure: remove what we wrote */
    bool published;       /* the writer synced and renamed the blob */
    const uint8_t *staged;   /* staged in the index: the blob's bytes */
    size_t staged_len;
    bool done;
    pthread_cond_t done_cv;   /* done became true (its caller waits) */
    /* Asynchronous ingest: the job lives in its arena, and done_fn is
     * told the verdict instead of a caller being woken. */
    StoreIngestDone done_fn;
    void *done_ctx;
    AgArena *arena;
    Job *next;
};

/*
 * Two threads make batches durable, so that the flushes of one batch
 * overlap the index work of the next; jobs keep their order through both.
 *   settler    makes written blobs durable under their final names and
 *              hands them to the committer (and, when the index commit is
 *              deferred, makes committed rows durable);
 *   committer  indexes settled jobs in one transaction and commits.
 * With STORE_SYNC_FILESYSTEM each settler cycle is ONE syncfs(2) that
 * serves three batches at once: the bytes of the blobs just written, the
 * names of those renamed after the previous cycle, and the index rows
 * committed since (SQLite's WAL lives on the same file system; the commit
 * itself does not fsync, and no caller hears of its rows before this
 * syncfs).  A cycle costs one flush whatever the batch sizes.  A cycle
 * with rows and no bytes to flush (staged instances, or blobs their
 * writers flushed) flushes the WAL alone instead: one fdatasync, while
 * the committer indexes the next batch.
 */
struct Store {
    StoreConfig cfg;
    char data_dir[AG_PATH_MAX];
    StoreBlobs *blobs;
    StoreIndex *index;
    pthread_t settler, committer, spiller;
    bool settler_started, started, spiller_started;
    /* The index commit leaves its fsync to the settler's syncfs. */
    bool defer_index_sync;
    pthread_mutex_t lock;         /* queues, counters, done flags, stop */
    pthread_cond_t written_cv;    /* work for the settler, or stop */
    pthread_cond_t queue_cv;      /* settled has jobs, or stop */
    pthread_cond_t durable_cv;    /* durable_seq moved */
    pthread_cond_t spill_cv;      /* staged blobs to spill, or stop */
    uint64_t staged_n, staged_bytes;   /* staged blobs, by this process */
    int64_t last_ingest_ms;       /* monotonic: the last job queued */
    int spill_idle_ms;            /* AGORA_SPILL_IDLE_MS, or the default */
    JobQueue written;             /* blobs written as name.tmp */
    JobQueue renamed;             /* blobs under their names, not synced */
    JobQueue settled;             /* blobs durable: for the committer */
    JobQueue committed;           /* rows committed, awaiting the syncfs */
    uint64_t in_flight;           /* jobs submitted, not done */
    /* Deferred index commits: started, finished, and made durable. */
    uint64_t begun_seq, done_seq, durable_seq;
    bool stop;
    pthread_mutex_t write_lock;   /* the index writer connection */
    /* Under write_lock: the writer's commits do not wait for stable
     * storage (left so by the last ingest batch; see lock_writer). */
    bool writer_unsynced;
    Job **batch;                  /* the committer's current batch */
    uint32_t batch_max;
    struct {
        StoreListener fn;
        void *ctx;
    } listeners[MAX_LISTENERS];
    int nlisteners;
    StoreCommitStats cstats;      /* under lock; for /metrics */
    StoreCompressStats zstats;    /* under lock */
    /* Run-time settings (settings.c): the duplicate and compression
     * policies are read from here, lock-free, at each use. */
    StoreSettings settings;
};

/* ---- trash: blobs whose rows are gone ---------------------------------- */

typedef struct TrashCtx {
    Store *s;
    char names[64][STORE_BLOB_NAME_MAX];
    int n;
} TrashCtx;

static int collect_trash(void *ctx, const char *name)
{
    TrashCtx *t = ctx;
    ag_fmt(t->names[t->n++], STORE_BLOB_NAME_MAX, "%s", name);
    return t->n == 64;
}

/* Unlink trashed blobs, then forget them.  Caller holds write_lock. */
static void empty_trash(Store *s)
{
    for (;;) {
        TrashCtx t = {.s = s};
        s->index->ops->trash_list(s->index, collect_trash, &t, NULL);
        if (t.n == 0) {
            return;
        }
        for (int i = 0; i < t.n; i++) {
            if (store__blob_remove(s->blobs, t.names[i], NULL) == AG_OK) {
                s->index->ops->trash_clear(s->index, t.names[i], NULL);
            } else {
                return;   /* try again at the next open */
            }
        }
    }
}

/* ---- commit thread ------------------------------------------------------ */

/*
 * Take the index writer for anything but an ingest batch: its commits must
 * wait for stable storage.  A deferred batch leaves the connection with
 * commits that do not (the settler flushes them), and the first other
 * writer after it switches the connection back — rather than every batch
 * switching there and back, which cost ~2.5% of a one-association
 * ingest's CPU (perf: each switch prepares a PRAGMA).
 */
static int lock_writer(Store *s, AgError *err)
{
    pthread_mutex_lock(&s->write_lock);
    if (s->writer_unsynced) {
        int rc = s->index->ops->set_commit_sync(s->index, true, err);
        if (rc != AG_OK) {
            pthread_mutex_unlock(&s->write_lock);
            return rc;
        }
        s->writer_unsynced = false;
    }
    return AG_OK;
}

/* Under write_lock: the writer's commits wait for stable storage (on) or
 * leave it to the settler (off), switching only when they do not yet. */
static int writer_sync(Store *s, bool on, AgError *err)
{
    if (s->writer_unsynced == !on) {
        return AG_OK;
    }
    int rc = s->index->ops->set_commit_sync(s->index, on, err);
    if (rc == AG_OK) {
        s->writer_unsynced = !on;
    }
    return rc;
}

static void enqueue(Store *s, Job *j);
static void wait_done(Store *s, Job *j);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Queue a job and wait until the commit thread has decided it. */
static void submit(Store *s, Job *j)
{
    pthread_cond_init(&j->done_cv, NULL);
    enqueue(s, j);
    wait_done(s, j);
    pthread_cond_destroy(&j->done_cv);
}

static void publish(Store *s, const Job *j, const StoreResult *res)
{
    StoreEvent ev = {.type = STORE_EVENT_INSTANCE_STORED, .result = res,
                     .source = j->src};
    for (int i = 0; i < s->nlisteners; i++) {
        s->listeners[i].fn(s->listeners[i].ctx, &ev);
    }
}

static void fill_result(const Job *j, StoreResult *r)
{
    memset(r, 0, sizeof *r);
    r->outcome = j->outcome;
    ag_fmt(r->sop_instance_uid, sizeof r->sop_instance_uid, "%s",
             j->attrs.sop_uid);
    ag_fmt(r->sop_class_uid, sizeof r->sop_class_uid, "%s",
             j->attrs.sop_class_uid);
    ag_fmt(r->study_uid, sizeof r->study_uid, "%s", j->attrs.study_uid);
    ag_fmt(r->series_uid, sizeof r->series_uid, "%s", j->attrs.series_uid);
    ag_fmt(r->transfer_syntax, sizeof r->transfer_syntax, "%s",
             j->attrs.transfer_syntax);
    r->patient_conflict = j->conflict;
    r->size = j->blob.size;
}

static void fail_job(Job *j, const AgError *e)
{
    j->rc = e->code;
    j->err = *e;
    j->drop_new_blob = true;
}

static void apply_one(Store *s, Job *j, StoreDupPolicy policy)
{
    StoreIndex *ix = s->index;
    char old[STORE_BLOB_NAME_MAX];
    AgError e;
    int rc = ix->ops->find_instance(ix, j->attrs.sop_uid, old, &e);
    if (rc == AG_OK) {
        switch (policy) {
        case STORE_DUP_KEEP_FIRST:
            j->outcome = STORE_DUPLICATE;
            j->drop_new_blob = true;
            return;
        case STORE_DUP_REJECT:
            ag_error_set(&e, AG_ERR_EXISTS, "SOP Instance UID %s is already "
                         "stored", j->attrs.sop_uid);
            fail_job(j, &e);
            return;
        case STORE_DUP_REPLACE:
            j->outcome = STORE_REPLACED;
            break;
        }
    } else if (rc != AG_ERR_NOTFOUND) {
        fail_job(j, &e);
        return;
    } else {
        j->outcome = STORE_STORED;
    }
    StoreIndexInsert in = {
        .attrs = &j->attrs, .blob_name = j->blob_name, .blob = &j->blob,
        .metadata_json = j->json, .metadata_len = j->json_len,
        .source = j->src, .staged = j->staged, .staged_len = j->staged_len,
    };
    if (ix->ops->put_instance(ix, &in, j->outcome == STORE_REPLACED,
                              &j->conflict, &e) != AG_OK) {
        fail_job(j, &e);
    }
}

/* ---- the commit pipeline -------------------------------------------------- */

static void put_job(JobQueue *q, Job *j)
{
    j->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = j;
    } else {
        q->head = j;
    }
    q->tail = j;
}

/* The whole queue as a list (linked through next); q is emptied. */
static Job *take_all(JobQueue *q)
{
    Job *list = q->head;
    q->head = q->tail = NULL;
    return list;
}

static void fail_list(Job *list, const AgError *e)
{
    for (Job *j = list; j != NULL; j = j->next) {
        if (j->rc == AG_OK) {
            fail_job(j, e);
        }
    }
}

/*
 * The verdict on these jobs is final and durable: remove what failed or
 * duplicate stores wrote, tell the listeners (in order), wake the callers.
 * A job belongs to its caller's stack: it is not touched once done.
 */
static void finish_jobs(Store *s, Job *list)
{
    for (Job *j = list; j != NULL; j = j->next) {
        if (j->drop_new_blob) {
            store__blob_discard(s->blobs, j->blob_name);
        }
    }
    for (Job *j = list; j != NULL; j = j->next) {
        if (j->rc == AG_OK && j->outcome != STORE_DUPLICATE) {
            StoreResult r;
            fill_result(j, &r);
            publish(s, j, &r);
        }
    }
    /* Asynchronous callers are told outside the lock; their jobs die with
     * their arenas. */
    Job *waiting = NULL, **wt = &waiting;
    uint64_t told = 0;
    for (Job *j = list, *next; j != NULL; j = next) {
        next = j->next;
        if (j->done_fn == NULL) {
            j->next = NULL;
            *wt = j;
            wt = &j->next;
            continue;
        }
        StoreResult r;
        fill_result(j, &r);
        AgArena *a = j->arena;
        j->done_fn(j->done_ctx, j->rc, j->rc == AG_OK ? &r : NULL,
                   j->rc == AG_OK ? NULL : &j->err);
        ag_arena_destroy(a);
        told++;
    }
    pthread_mutex_lock(&s->lock);
    for (Job *j = waiting, *next; j != NULL; j = next) {
        next = j->next;
        j->done = true;
        pthread_cond_signal(&j->done_cv);
        told++;
    }
    s->in_flight -= told;
    if (s->in_flight == 0 && s->stop) {
        pthread_cond_broadcast(&s->written_cv);
        pthread_cond_broadcast(&s->queue_cv);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Split off the failed jobs of a list and finish them now; the rest goes
 * on, in order. */
static Job *keep_live(Store *s, Job *list)
{
    Job *live = NULL, **lt = &live, *dead = NULL, **dt = &dead;
    for (Job *j = list, *next; j != NULL; j = next) {
        next = j->next;
        j->next = NULL;
        if (j->rc == AG_OK) {
            *lt = j;
            lt = &j->next;
        } else {
            *dt = j;
            dt = &j->next;
        }
    }
    if (dead != NULL) {
        finish_jobs(s, dead);
    }
    return live;
}

static int dir_of(const char *blob_name)
{
    int v = 0;
    for (int i = 0; i < 2; i++) {
        char c = blob_name[i];
        v = v * 16 + (c >= 'a' ? c - 'a' + 10 : c - '0');
    }
    return v & 0xff;
}

/* STORE_SYNC_FILES: each blob was fdatasynced and renamed by its caller;
 * one fsync per touched directory makes the names durable. */
static void settle_dirs(Store *s, Job *list)
{
    bool synced[256] = {false};
    for (Job *j = list; j != NULL; j = j->next) {
        int d = dir_of(j->blob_name);
        if (j->rc != AG_OK || synced[d]) {
            continue;
        }
        synced[d] = true;
        AgError e;
        if (store__blob_sync_dir(s->blobs, j->blob_name, &e) == AG_OK) {
            continue;
        }
        for (Job *k = j; k != NULL; k = k->next) {
            if (k->rc == AG_OK && dir_of(k->blob_name) == d) {
                fail_job(k, &e);
            }
        }
    }
}

/*
 * Rows committed without their fsync whose syncfs failed: nobody has been
 * told they are stored, and nobody will be.  Take them back out of the
 * index (best effort: the file system just failed a flush).
 */
static void withdraw(Store *s, Job *list, const AgError *e)
{
    for (Job *j = list; j != NULL; j = j->next) {
        if (j->rc == AG_OK && j->outcome != STORE_DUPLICATE) {
            uint64_t n;
            store_delete(s, STORE_LEVEL_INSTANCE, j->attrs.sop_uid, &n, NULL);
            ag_log(AG_LOG_ERROR, "store", "file system flush failed for %s: "
                   "%s; instance withdrawn", j->attrs.sop_uid, e->msg);
        }
    }
    fail_list(list, e);
}

/* Move the live jobs of list to the committer, in order. */
static void to_committer(Store *s, Job *list)
{
    list = keep_live(s, list);
    if (list == NULL) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    for (Job *j = list, *next; j != NULL; j = next) {
        next = j->next;
        put_job(&s->settled, j);
    }
    pthread_cond_signal(&s->queue_cv);
    pthread_mutex_unlock(&s->lock);
}

/* No bytes to flush, few renamed blobs, and rows committed only if the
 * index can flush its log alone: their directories' fsyncs and the log's
 * fdatasync cost less than a syncfs (which walks every dirty inode). */
static bool syncfs_is_dearer(const Store *s, const Job *w, const Job *r,
                             const Job *c)
{
    if (w != NULL || (c != NULL && s->index->ops->sync_log == NULL)) {
        return false;
    }
    int n = 0;
    for (const Job *j = r; j != NULL; j = j->next) {
        if (++n > CHEAP_SYNC_MAX) {
            return false;
        }
    }
    return true;
}

/*
 * One settler cycle.  w: blobs written as name.tmp, bytes not durable;
 * r: blobs under their final names, names not durable; c: rows committed
 * without fsync.  ONE syncfs makes all of it durable (or, with no bytes
 * and few names, their directories' fsyncs and the index log's flush);
 * then c is done, r goes to the committer, and w is renamed, to be r of
 * the next cycle.
 */
static void settle_cycle(Store *s, Job *w, Job *r, Job *c, uint64_t seq)
{
    AgError e;
    if (s->cfg.sync == STORE_SYNC_FILES || syncfs_is_dearer(s, w, r, c)) {
        settle_dirs(s, r);
        if (c != NULL && s->index->ops->sync_log(s->index, &e) != AG_OK) {
            withdraw(s, c, &e);
        }
    } else if (store__blob_sync_fs(s->blobs, &e) != AG_OK ||
               store__blob_fault(s->blobs, "blob.syncfs", &e)) {
        fail_list(w, &e);
        fail_list(r, &e);
        withdraw(s, c, &e);
    } else {
        /* Fault points: the flush of the bytes, of the names, as the
         * writers' own fsyncs have them. */
        if (w != NULL && store__blob_fault(s->blobs, "blob.fsync", &e)) {
            fail_list(w, &e);
        }
        if (r != NULL && store__blob_fault(s->blobs, "blob.dirsync", &e)) {
            fail_list(r, &e);
        }
    }
    finish_jobs(s, c);   /* their rows are durable now */
    pthread_mutex_lock(&s->lock);
    s->durable_seq = seq;
    pthread_cond_broadcast(&s->durable_cv);
    pthread_mutex_unlock(&s->lock);
    to_committer(s, r);
    for (Job *j = w; j != NULL; j = j->next) {
        AgError pe;
        if (j->rc == AG_OK &&
            store__blob_publish(s->blobs, j->blob_name, &pe) != AG_OK) {
            fail_job(j, &pe);
        }
    }
    w = keep_live(s, w);
    pthread_mutex_lock(&s->lock);
    for (Job *j = w, *next; j != NULL; j = next) {
        next = j->next;
        put_job(&s->renamed, j);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Caller holds s->lock. */
static bool settler_idle(const Store *s)
{
    return s->written.head == NULL && s->renamed.head == NULL &&
           s->committed.head == NULL && s->durable_seq == s->done_seq;
}

/* The blobs first: the index must never point to a blob that a crash
 * could take away (SECURITY.md rule 4). */
static void *settle_main(void *arg)
{
    Store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (settler_idle(s) && !(s->stop && s->in_flight == 0)) {
            pthread_cond_wait(&s->written_cv, &s->lock);
        }
        if (settler_idle(s)) {
            break;   /* stopping, and nothing in flight */
        }
        /* Everything waiting now shares this cycle. */
        Job *w = take_all(&s->written);
        Job *r = take_all(&s->renamed);
        Job *c = take_all(&s->committed);
        uint64_t seq = s->done_seq;
        pthread_mutex_unlock(&s->lock);
        settle_cycle(s, w, r, c, seq);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Move up to max jobs from q into out, in order, linked as a list. */
static int take_jobs(JobQueue *q, Job **out, uint32_t max)
{
    int n = 0;
    while (q->head != NULL && (uint32_t)n < max) {
        out[n++] = q->head;
        q->head = q->head->next;
    }
    if (q->head == NULL) {
        q->tail = NULL;
    }
    for (int i = 0; i < n; i++) {
        out[i]->next = i + 1 < n ? out[i + 1] : NULL;
    }
    return n;
}

/* The blobs a committed batch staged in the index: the spiller's work. */
static void count_staged(Store *s, Job **jobs, int n)
{
    uint64_t k = 0, bytes = 0;
    for (int i = 0; i < n; i++) {
        if (jobs[i]->rc == AG_OK && jobs[i]->staged != NULL &&
            jobs[i]->outcome != STORE_DUPLICATE) {
            k++;
            bytes += jobs[i]->staged_len;
        }
    }
    if (k == 0) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->staged_n += k;
    s->staged_bytes += bytes;
    if (s->staged_n >= SPILL_MAX_N || s->staged_bytes >= SPILL_MAX_BYTES ||
        s->staged_n == k) {
        /* Full, or the first: otherwise the spiller's timer serves. */
        pthread_cond_signal(&s->spill_cv);
    }
    pthread_mutex_unlock(&s->lock);
}

/*
 * Index a settled batch in one transaction: its blobs are durable under
 * their final names, so the rows may point to them (SECURITY.md rule 4).
 * deferred: the commit does not wait for stable storage; the settler's
 * next syncfs does, before anyone is told.
 */
static int process_batch(Store *s, Job **jobs, int n, bool deferred,
                         StoreDupPolicy policy)
{
    StoreIndex *ix = s->index;
    pthread_mutex_lock(&s->write_lock);
    AgError e;
    int rc = writer_sync(s, !deferred, &e);
    if (rc == AG_OK) {
        rc = ix->ops->begin(ix, &e);
    }
    for (int i = 0; i < n && rc == AG_OK; i++) {
        if (jobs[i]->rc == AG_OK) {
            apply_one(s, jobs[i], policy);
        }
    }
    if (rc == AG_OK) {
        rc = ix->ops->commit(ix, &e);
    }
    if (rc != AG_OK) {
        /* Nothing of the batch is indexed: every job fails, and the blobs
         * it wrote go (SECURITY.md rule 4: no partial state). */
        for (int i = 0; i < n; i++) {
            if (jobs[i]->rc == AG_OK) {
                fail_job(jobs[i], &e);
            }
        }
    } else if (!deferred) {
        empty_trash(s);   /* blobs replaced in this batch */
    }
    if (rc == AG_OK) {
        count_staged(s, jobs, n);
    }
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

static void *commit_main(void *arg)
{
    Store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->settled.head == NULL && !(s->stop && s->in_flight == 0)) {
            pthread_cond_wait(&s->queue_cv, &s->lock);
        }
        if (s->settled.head == NULL) {
            break;   /* stopping, and nothing in flight */
        }
        /* Everything settled by now becomes one transaction. */
        int n = take_jobs(&s->settled, s->batch, s->batch_max);
        s->cstats.queued -= (uint64_t)n;
        s->cstats.batches++;
        s->cstats.batched += (uint64_t)n;
        if ((uint64_t)n > s->cstats.max_batch) {
            s->cstats.max_batch = (uint64_t)n;
        }
        /* A batch leaves its fsync to the settler, and the committer goes
         * on to the next batch while it runs: the settler flushes the
         * index's log alone (sync_log), or one syncfs serves it with the
         * blobs when it runs anyway.  With four associations sending small
         * instances this overlap was worth ~10% (3,200 against 2,900
         * instances/s, 6 alternated runs each); with one, no change.
         * Without sync_log only a large batch defers — unless an earlier
         * one still waits for its flush: verdicts and events keep commit
         * order. */
        /* One duplicate policy per batch (it may change at run time).
         * Never deferred under replace: a replacement's commit drops the
         * old row, and a syncfs failing after it could not give it back;
         * so a replace batch first waits for any deferred one before it,
         * to keep commit order. */
        StoreDupPolicy policy = store__dup_policy(s);
        while (policy == STORE_DUP_REPLACE && s->durable_seq != s->done_seq) {
            pthread_cond_wait(&s->durable_cv, &s->lock);
        }
        bool deferred = s->defer_index_sync && policy != STORE_DUP_REPLACE &&
                        (s->index->ops->sync_log != NULL || n >= DEFER_MIN ||
                         s->durable_seq != s->done_seq);
        if (deferred) {
            s->begun_seq++;   /* rows may be visible from now on */
        }
        pthread_mutex_unlock(&s->lock);
        int rc = process_batch(s, s->batch, n, deferred, policy);
        pthread_mutex_lock(&s->lock);
        if (deferred) {
            s->done_seq++;
        }
        if (deferred && rc == AG_OK) {
            /* Done once the settler's next syncfs covers the WAL. */
            for (int i = 0; i < n; i++) {
                put_job(&s->committed, s->batch[i]);
            }
            pthread_cond_signal(&s->written_cv);
            continue;
        }
        if (deferred) {
            pthread_cond_signal(&s->written_cv);   /* durable_seq moves */
        }
        pthread_mutex_unlock(&s->lock);
        finish_jobs(s, s->batch[0]);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the spiller: staged blobs out to their files ------------------------ */

typedef struct Spill {
    Store *s;
    bool sync_each;               /* STORE_SYNC_FILES: fsync per file */
    char names[SPILL_BATCH][STORE_BLOB_NAME_MAX];
    uint64_t sizes[SPILL_BATCH];
    int n;
    int rc;
    AgError err;
} Spill;

static int spill_row(void *ctx, const char *name, const uint8_t *data,
                     size_t len)
{
    Spill *sp = ctx;
    StoreBlobInfo info;
    sp->rc = store__blob_put_buffer(sp->s->blobs, name, data, len,
                                    sp->sync_each, &info, &sp->err);
    if (sp->rc != AG_OK) {
        return 1;
    }
    ag_fmt(sp->names[sp->n], STORE_BLOB_NAME_MAX, "%s", name);
    sp->sizes[sp->n++] = len;
    return 0;
}

/* Make the files of sp durable under their names. */
static int spill_settle(Spill *sp)
{
    StoreBlobs *b = sp->s->blobs;
    if (sp->sync_each) {
        bool synced[256] = {false};
        for (int i = 0; i < sp->n; i++) {
            int d = dir_of(sp->names[i]);
            if (!synced[d] &&
                store__blob_sync_dir(b, sp->names[i], &sp->err) != AG_OK) {
                return sp->err.code;
            }
            synced[d] = true;
        }
        return AG_OK;
    }
    for (int i = 0; i < sp->n; i++) {
        if (store__blob_publish(b, sp->names[i], &sp->err) != AG_OK) {
            return sp->err.code;
        }
    }
    if (store__blob_fault(b, "blob.spill", &sp->err)) {
        return sp->err.code;
    }
    return store__blob_sync_fs(b, &sp->err);
}

/* Forget the staged copies of durable files; a file whose instance went
 * meanwhile (deleted, replaced) is removed. */
static int spill_drop(Spill *sp)
{
    Store *s = sp->s;
    StoreIndex *ix = s->index;
    bool gone[SPILL_BATCH] = {false};
    int rc = lock_writer(s, &sp->err);
    if (rc != AG_OK) {
        return rc;
    }
    rc = ix->ops->begin(ix, &sp->err);
    for (int i = 0; i < sp->n && rc == AG_OK; i++) {
        bool indexed = true;
        rc = ix->ops->staged_drop(ix, sp->names[i], &indexed, &sp->err);
        gone[i] = !indexed;
    }
    if (rc == AG_OK) {
        rc = ix->ops->commit(ix, &sp->err);
    } else {
        ix->ops->rollback(ix);
    }
    pthread_mutex_unlock(&s->write_lock);
    for (int i = 0; i < sp->n && rc == AG_OK; i++) {
        if (gone[i]) {
            store__blob_remove(s->blobs, sp->names[i], NULL);
        }
    }
    return rc;
}

/*
 * Write up to SPILL_BATCH staged blobs to their files, make them durable,
 * then drop the staged copies.  Returns how many were spilled, or a
 * negative error (the staged copies stay: they are still the blobs).
 */
static int spill_some(Store *s)
{
    Spill *sp = ag_calloc(1, sizeof *sp);
    if (sp == NULL) {
        return AG_ERR_NOMEM;
    }
    sp->s = s;
    sp->sync_each = s->cfg.sync == STORE_SYNC_FILES;
    int rc = s->index->ops->staged_list(s->index, SPILL_BATCH, spill_row, sp,
                                        &sp->err);
    if (rc == AG_OK) {
        rc = sp->rc;
    }
    if (rc == AG_OK) {
        rc = spill_settle(sp);
    }
    if (rc == AG_OK) {
        rc = spill_drop(sp);
    }
    int n = sp->n;
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
        bytes += sp->sizes[i];
        if (rc != AG_OK) {
            store__blob_discard(s->blobs, sp->names[i]);
        }
    }
    if (rc != AG_OK) {
        ag_log(AG_LOG_ERROR, "store", "writing staged blobs out: %s "
               "(they stay in the index; retried)", sp->err.msg);
    }
    ag_free(sp);
    pthread_mutex_lock(&s->lock);
    if (rc == AG_OK && n == 0) {
        s->staged_n = s->staged_bytes = 0;   /* another process took them */
    } else if (rc == AG_OK) {
        s->staged_n -= s->staged_n < (uint64_t)n ? s->staged_n : (uint64_t)n;
        s->staged_bytes -= s->staged_bytes < bytes ? s->staged_bytes : bytes;
    }
    pthread_mutex_unlock(&s->lock);
    return rc == AG_OK ? n : rc;
}

static void wait_ms(Store *s, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&s->spill_cv, &s->lock, &ts);
}

/* Caller holds s->lock.  0: spill now; else how long to wait first. */
static int64_t spill_delay(const Store *s)
{
    if (s->staged_n == 0) {
        return s->stop && s->in_flight == 0 ? 0 : 1000;
    }
    if (s->stop && s->in_flight == 0) {
        return 0;   /* closing: everything goes out */
    }
    if (s->staged_n >= SPILL_MAX_N || s->staged_bytes >= SPILL_MAX_BYTES) {
        return 0;
    }
    int64_t idle = now_ms() - s->last_ingest_ms;
    if (s->in_flight == 0 && idle >= s->spill_idle_ms) {
        return 0;
    }
    int64_t left = s->spill_idle_ms - idle;
    return left < 5 ? 5 : left;
}

static void *spill_main(void *arg)
{
    Store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int64_t delay = spill_delay(s);
        if (delay > 0) {
            wait_ms(s, delay);
            continue;
        }
        if (s->staged_n == 0) {
            break;   /* stopping, nothing staged */
        }
        bool closing = s->stop && s->in_flight == 0;
        pthread_mutex_unlock(&s->lock);
        int n = spill_some(s);
        pthread_mutex_lock(&s->lock);
        if (n < 0 && closing) {
            break;   /* they stay staged; the next open spills them */
        }
        if (n < 0) {
            wait_ms(s, 1000);   /* back off, then retry */
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int remove_file(void *ctx, const char *name, const uint8_t *data,
                       size_t len)
{
    (void)data;
    (void)len;
    store__blob_discard(ctx, name);
    return 0;
}

/* At open: no file of an interrupted spill shadows a staged blob. */
static void unstage_files(Store *s)
{
    AgError e;
    if (s->index->ops->staged_list(s->index, UINT32_MAX, remove_file,
                                   s->blobs, &e) != AG_OK) {
        ag_log(AG_LOG_WARN, "store", "staged blobs: %s", e.msg);
    }
}

/* ---- reading blobs, wherever they are ------------------------------------ */

/* Staged bytes of name in a memfd, at offset 0. */
static int staged_fd(Store *s, const char *name, int *fd, AgError *err)
{
    AgBuf b;
    ag_buf_init(&b, STAGE_MAX * 2);
    int rc = s->index->ops->staged_get(s->index, name, &b, err);
    if (rc == AG_OK) {
        int m = memfd_create("agora-staged", MFD_CLOEXEC);
        if (m < 0 || write(m, b.data, b.len) != (ssize_t)b.len ||
            lseek(m, 0, SEEK_SET) != 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "memfd for %s", name);
            if (m >= 0) {
                close(m);
            }
        } else {
            *fd = m;
        }
    }
    ag_buf_deinit(&b);
    return rc;
}

int store__blob_fd(Store *s, const char *name, int *fd, AgError *err)
{
    char path[AG_PATH_MAX];
    int rc = store__blob_path(s->blobs, name, path, sizeof path, err);
    /* The file; else the staged copy; else the file once more (the
     * spiller may have written it out between the two). */
    for (int attempt = 0; rc == AG_OK && attempt < 2; attempt++) {
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        if (*fd >= 0) {
            return AG_OK;
        }
        if (errno != ENOENT) {
            return ag_error_errno(err, AG_ERR_IO, "open %s", path);
        }
        if (attempt == 0) {
            rc = staged_fd(s, name, fd, err);
            if (rc != AG_ERR_NOTFOUND) {
                return rc;
            }
            rc = AG_OK;
        }
    }
    return rc == AG_OK ? ag_error_set(err, AG_ERR_NOTFOUND, "%s: missing",
                                      path)
                       : rc;
}

int store__blob_hash_any(Store *s, const char *name, StoreBlobInfo *info,
                         AgError *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = store__blob_hash(s->blobs, name, info, err);
        if (rc != AG_ERR_NOTFOUND || attempt == 1) {
            return rc;
        }
        AgBuf b;
        ag_buf_init(&b, STAGE_MAX * 2);
        rc = s->index->ops->staged_get(s->index, name, &b, err);
        if (rc == AG_OK) {
            store__blob_hash_buffer(b.data, b.len, info);
        }
        ag_buf_deinit(&b);
        if (rc != AG_ERR_NOTFOUND) {
            return rc;
        }
    }
    return AG_ERR_NOTFOUND;
}

/* ---- open / close --------------------------------------------------------- */

/* Is the index (and its WAL beside it) on the blobs' file system, so that
 * the settler's syncfs covers it? */
static bool same_file_system(const char *index_path, const char *data_dir)
{
    char blobs[AG_PATH_MAX];
    ag_fmt(blobs, sizeof blobs, "%s/blobs", data_dir);
    struct stat a, b;
    return stat(index_path, &a) == 0 && stat(blobs, &b) == 0 &&
           a.st_dev == b.st_dev;
}

int store_open(const StoreConfig *cfg, Store **out, AgError *err)
{
    if (cfg->data_dir == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "no data directory");
    }
    /* libsodium picks its fastest BLAKE2b (AVX2 where the CPU has it) in
     * sodium_init(); without it every blob checksum runs the portable
     * code at about half the speed.  Idempotent and thread-safe. */
    if (sodium_init() < 0) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "libsodium did not start");
    }
    Store *s = ag_calloc(1, sizeof *s);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "store: out of memory");
    }
    s->cfg = *cfg;
    ag_fmt(s->data_dir, sizeof s->data_dir, "%s", cfg->data_dir);
    s->cfg.data_dir = s->data_dir;
    if (cfg->compress_ts != NULL && !store__compress_syntax_ok(cfg->compress_ts)) {
        ag_free(s);
        return ag_error_set(err, AG_ERR_INVALID, "compression policy: %.64s "
                            "is not a lossless syntax Agora encodes",
                            cfg->compress_ts);
    }
    store__settings_init(&s->settings, cfg);
    s->cfg.compress_ts = NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_cond_init(&s->written_cv, NULL);
    pthread_cond_init(&s->queue_cv, NULL);
    pthread_cond_init(&s->durable_cv, NULL);
    pthread_cond_init(&s->spill_cv, NULL);
    const char *idle = getenv("AGORA_SPILL_IDLE_MS");   /* tests */
    s->spill_idle_ms = idle != NULL ? atoi(idle) : SPILL_IDLE_MS;
    int rc = AG_OK;
    struct stat st;
    if (cfg->read_only) {
        if (stat(s->data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc = ag_error_set(err, AG_ERR_NOTFOUND, "no data directory %s",
                              s->data_dir);
        }
    } else if (mkdir(s->data_dir, 0750) != 0 && errno != EEXIST) {
        rc = ag_error_errno(err, AG_ERR_IO, "mkdir %s", s->data_dir);
    }
    if (rc == AG_OK && !cfg->read_only) {
        rc = store__blobs_open(s->data_dir, &s->blobs, err);
    }
    char path[AG_PATH_MAX];
    ag_fmt(path, sizeof path, "%s/index.sqlite", s->data_dir);
    if (rc == AG_OK) {
        rc = store__index_sqlite_open(path, cfg->read_only, &s->index, err);
    }
    s->batch_max = cfg->commit_batch_max ? cfg->commit_batch_max : 512;
    s->batch = ag_calloc(s->batch_max, sizeof *s->batch);
    if (rc == AG_OK && s->batch == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "store: out of memory");
    }
    if (rc == AG_OK && !cfg->read_only) {
        /* Whether commits may be deferred at all; commit_main decides
         * per batch, never under the replace policy. */
        s->defer_index_sync = cfg->sync == STORE_SYNC_FILESYSTEM &&
                              s->index->ops->set_commit_sync != NULL &&
                              same_file_system(path, s->data_dir);
        empty_trash(s);   /* finish deletions a crash interrupted */
        if (pthread_create(&s->committer, NULL, commit_main, s) != 0) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "cannot start commit "
                              "thread");
        } else {
            s->started = true;
        }
    }
    if (rc == AG_OK && !cfg->read_only) {
        if (pthread_create(&s->settler, NULL, settle_main, s) != 0) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "cannot start commit "
                              "thread");
        } else {
            s->settler_started = true;
        }
    }
    if (rc == AG_OK && !cfg->read_only && cfg->stage_small) {
        /* The one process that stages (agora serve) is the one that
         * spills: two spillers could each take the other's files for
         * their own.  Blobs left staged by an earlier run go out when
         * idle; a file an interrupted spill left under a staged name may
         * be torn, and the staged copy is the blob until it is dropped. */
        AgError ce;
        if (s->index->ops->staged_count(s->index, &s->staged_n,
                                        &s->staged_bytes, &ce) != AG_OK) {
            ag_log(AG_LOG_WARN, "store", "staged blobs: %s", ce.msg);
        }
        if (s->staged_n > 0) {
            unstage_files(s);
        }
        s->last_ingest_ms = now_ms();   /* idle from now on */
        if (pthread_create(&s->spiller, NULL, spill_main, s) != 0) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "cannot start spill "
                              "thread");
        } else {
            s->spiller_started = true;
        }
    }
    if (rc != AG_OK) {
        store_close(s);
        return rc;
    }
    *out = s;
    return AG_OK;
}

void store_close(Store *s)
{
    if (s == NULL) {
        return;
    }
    /* Both threads drain what is in flight, then stop. */
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->written_cv);
    pthread_cond_broadcast(&s->queue_cv);
    pthread_cond_broadcast(&s->spill_cv);
    pthread_mutex_unlock(&s->lock);
    if (s->settler_started) {
        pthread_join(s->settler, NULL);
    }
    if (s->started) {
        pthread_join(s->committer, NULL);
    }
    if (s->spiller_started) {
        /* It writes out what is staged once nothing is in flight. */
        pthread_mutex_lock(&s->lock);
        pthread_cond_broadcast(&s->spill_cv);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->spiller, NULL);
    }
    if (s->index != NULL) {
        s->index->ops->close(s->index);
    }
    store__blobs_close(s->blobs);
    store__settings_deinit(&s->settings);
    ag_free(s->batch);
    pthread_cond_destroy(&s->written_cv);
    pthread_cond_destroy(&s->queue_cv);
    pthread_cond_destroy(&s->durable_cv);
    pthread_cond_destroy(&s->spill_cv);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->write_lock);
    ag_free(s);
}

const char *store_tmp_dir(const Store *s)
{
    return store__blobs_tmp_dir(s->blobs);
}

int store_subscribe(Store *s, StoreListener fn, void *ctx, AgError *err)
{
    if (s->nlisteners == MAX_LISTENERS) {
        return ag_error_set(err, AG_ERR_LIMIT, "too many listeners");
    }
    s->listeners[s->nlisteners].fn = fn;
    s->listeners[s->nlisteners].ctx = ctx;
    s->nlisteners++;
    return AG_OK;
}

/* ---- ingest ------------------------------------------------------------------ */

/* Parse, validate and describe an instance; everything lives in a. */
static int prepare(Store *s, const DicomFile *f, AgArena *a, Job *j,
                   const StoreSource *src, AgError *err)
{
    (void)s;
    int rc = store__attrs_extract(f, a, &j->attrs, err);
    if (rc != AG_OK) {
        return rc;
    }
    /* PS3.4 B.2.3: the data set must be the one the command announced. */
    if (src != NULL && src->expect_sop_instance != NULL &&
        strcmp(src->expect_sop_instance, j->attrs.sop_uid) != 0) {
        return ag_error_set(err, AG_ERR_INVALID, "SOP Instance UID of the "
                            "data set differs from the command's");
    }
    if (src != NULL && src->expect_study != NULL &&
        strcmp(src->expect_study, j->attrs.study_uid) != 0) {
        return ag_error_set(err, AG_ERR_INVALID, "Study Instance UID differs "
                            "from the one in the request");
    }
    if (src != NULL && src->expect_sop_class != NULL &&
        strcmp(src->expect_sop_class, j->attrs.sop_class_uid) != 0) {
        return ag_error_set(err, AG_ERR_INVALID, "SOP Class UID of the data "
                            "set differs from the command's");
    }
    /* The instance's DICOM JSON, built once here so that WADO-RS metadata
     * is a read, not a parse of every file (DESIGN.md §6). */
    char *prefix = ag_arena_printf(a, "/dicom-web/studies/%s/series/%s/"
                                   "instances/%s/bulkdata", j->attrs.study_uid,
                                   j->attrs.series_uid, j->attrs.sop_uid);
    if (prefix == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomJsonOptions jo = {.bulk_threshold = BULK_INLINE_MAX,
                           .bulk_uri_prefix = prefix};
    AgBuf json;
    ag_buf_init(&json, 64 << 20);
    AgError jerr;
    rc = dicom_json_write(f->dataset, &jo, dicom_sink_buf, &json, &jerr);
    if (rc == AG_OK) {
        j->json = ag_arena_memdup(a, json.data, json.len);
        j->json_len = json.len;
        if (j->json == NULL) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "metadata: out of memory");
        }
    } else if (rc == AG_ERR_NOMEM) {
        /* Not enough memory now: fail, the sender retries.  A store
         * without its metadata document would be a silent gap. */
        ag_error_set(err, rc, "metadata: out of memory");
    } else {
        /* A value the JSON writer refuses must not cost the instance;
         * WADO-RS builds its metadata from the blob instead. */
        ag_log(AG_LOG_WARN, "store", "no metadata for %s: %s",
               j->attrs.sop_uid, jerr.msg);
        rc = AG_OK;
    }
    ag_buf_deinit(&json);
    if (rc != AG_OK) {
        return rc;
    }
    store__blob_name(j->attrs.sop_uid, j->blob_name);
    return AG_OK;
}

/* Queue a job for the commit thread without waiting. */
static void enqueue(Store *s, Job *j)
{
    pthread_mutex_lock(&s->lock);
    s->in_flight++;
    s->cstats.queued++;
    s->last_ingest_ms = now_ms();
    if (j->staged != NULL) {
        /* Nothing to make durable before the commit: its bytes go with
         * the rows. */
        put_job(&s->settled, j);
        pthread_cond_signal(&s->queue_cv);
    } else {
        put_job(j->published ? &s->renamed : &s->written, j);
        pthread_cond_signal(&s->written_cv);
    }
    pthread_mutex_unlock(&s->lock);
}

static void wait_done(Store *s, Job *j)
{
    pthread_mutex_lock(&s->lock);
    while (!j->done) {
        pthread_cond_wait(&j->done_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

/*
 * A row read from the index may come from a commit whose syncfs has not
 * run yet (deferred index sync): wait for it before answering from it, so
 * that "already stored" is never said of an instance a crash could lose.
 */
static void wait_durable(Store *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t seen = s->begun_seq;
    while (s->durable_seq < seen) {
        pthread_cond_wait(&s->durable_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static int select_exists(void *ctx, int ncol, const char *const *vals)
{
    (void)ncol;
    (void)vals;
    *(bool *)ctx = true;
    return 1;
}

/* Is this SOP Instance UID indexed already?  (A hint: the commit thread
 * decides, this only picks the fast path.) */
static bool indexed(Store *s, const char *sop_uid)
{
    bool yes = false;
    const char *params[1] = {sop_uid};
    s->index->ops->select(s->index, "SELECT 1 FROM instances WHERE"
                          " sop_uid = ?1", params, 1, select_exists, &yes,
                          NULL);
    return yes;
}

/*
 * What a second copy of a stored instance gets under the keep-first and
 * reject policies, decided before any byte is written: a duplicate costs
 * a lookup, not a store.  *done is false when the store must go ahead.
 */
static int early_duplicate(Store *s, Job *j, StoreResult *res, bool *done,
                           AgError *err)
{
    *done = false;
    StoreDupPolicy policy = store__dup_policy(s);
    if (policy == STORE_DUP_REPLACE ||
        !indexed(s, j->attrs.sop_uid)) {
        return AG_OK;
    }
    *done = true;
    wait_durable(s);
    if (policy == STORE_DUP_REJECT) {
        return ag_error_set(err, AG_ERR_EXISTS, "SOP Instance UID %s is "
                            "already stored", j->attrs.sop_uid);
    }
    j->outcome = STORE_DUPLICATE;
    if (res != NULL) {
        fill_result(j, res);
    }
    return AG_OK;
}

uint64_t store__max_bytes(const Store *s)
{
    uint64_t mb = s->cfg.max_instance_bytes_mb ? s->cfg.max_instance_bytes_mb
                                               : 4096;
    return mb << 20;
}

/* One ingest request: who sent it and how the verdict goes back. */
typedef struct Req {
    const StoreSource *src;
    StoreResult *res;          /* may be NULL */
    AgError *err;              /* may be NULL */
    StoreIngestDone done;      /* asynchronous: told the verdict */
    void *ctx;
    bool queued;               /* asynchronous: done will come later */
    /* The bytes' size and checksum when the caller has them (a spool
     * hashed them as they arrived), else NULL. */
    const StoreBlobInfo *known;
} Req;

/* Few instances in flight (or STORE_SYNC_FILES): flushing one's own blob
 * costs less than waiting for the settler's syncfs. */
static bool few_in_flight(Store *s)
{
    pthread_mutex_lock(&s->lock);
    bool few = s->cfg.sync == STORE_SYNC_FILES ||
               s->in_flight < FEW_IN_FLIGHT;
    pthread_mutex_unlock(&s->lock);
    return few;
}

/*
 * Is the writer to fdatasync and rename its blob itself, or to leave it
 * pending for the settler's syncfs?  Recorded in the job.  An asynchronous
 * caller (STOW-RS, agora import) is streaming: it goes on to its next
 * instance without waiting, so its blobs are left to the settler even
 * while few are in flight — flushing each in the caller's thread would
 * keep the stream at one flush per instance, and few in flight for ever.
 */
static bool publish_now(Store *s, Job *j, const Req *q)
{
    j->published = s->cfg.sync == STORE_SYNC_FILES ||
                   (q->done == NULL && few_in_flight(s));
    return j->published;
}

/* Is the blob to be staged in the index (see STAGE_MAX)?  Small, and few
 * in flight: with many, the settler's syncfs serves them all anyway.  A
 * staged blob counts as published (its bytes are flushed with the rows). */
static bool stage_now(Store *s, Job *j, size_t len)
{
    j->published = s->cfg.stage_small && len <= STAGE_MAX &&
                   s->spiller_started && few_in_flight(s);
    return j->published;
}

/* A new job in a: on the caller's stack (local) or, asynchronous, in the
 * arena it will live and die with. */
static Job *new_job(AgArena *a, Job *local, const Req *q)
{
    if (q->done == NULL) {
        memset(local, 0, sizeof *local);
        return local;
    }
    return ag_arena_zalloc(a, sizeof(Job));
}

/* The blob is written: hand the job to the commit pipeline.  a is
 * consumed (destroyed, or owned by the queued asynchronous job). */
static int submit_job(Store *s, AgArena *a, Job *j, Req *q)
{
    j->src = q->src;
    if (q->done != NULL) {
        j->arena = a;
        j->done_fn = q->done;
        j->done_ctx = q->ctx;
        q->queued = true;
        enqueue(s, j);
        return AG_OK;
    }
    submit(s, j);
    int rc = j->rc;
    if (rc != AG_OK && q->err != NULL) {
        *q->err = j->err;
    }
    if (rc == AG_OK && q->res != NULL) {
        fill_result(j, q->res);
    }
    ag_arena_destroy(a);
    return rc;
}

/*
 * Ingest bytes held in memory.  spool: when not NULL, the file in
 * store_tmp_dir() that holds the same bytes; it becomes the blob (no copy)
 * and is consumed whatever the result.  what: prefix for parse errors
 * (NULL for none).
 */
static int ingest_mem_as_is(Store *s, const uint8_t *data, size_t len,
                            const char *spool, const char *what, Req *q);

/* Stage the blob: its checksum now, its bytes with the job (borrowed from
 * a synchronous caller, who waits; copied into an asynchronous job's
 * arena). */
static int stage(Job *j, AgArena *a, const uint8_t *data, size_t len,
                 const Req *q)
{
    if (q->known != NULL) {
        j->blob = *q->known;
    } else {
        store__blob_hash_buffer(data, len, &j->blob);
    }
    j->staged = q->done == NULL ? data : ag_arena_memdup(a, data, len);
    j->staged_len = len;
    if (j->staged == NULL) {
        return ag_error_set(q->err, AG_ERR_NOMEM, "out of memory");
    }
    return AG_OK;
}

/* The compression policy: data replaced by its re-encoded form in *buf
 * when that applies (the spool, which holds the original, is dropped). */
static void compress_policy(Store *s, const char *ts, const uint8_t **data,
                            size_t *len, const char **spool, AgBuf *buf)
{
    bool changed = false;
    store__compress(ts, *data, *len, buf, &changed);
    if (!changed) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->zstats.instances++;
    s->zstats.bytes_in += *len;
    s->zstats.bytes_out += buf->len;
    pthread_mutex_unlock(&s->lock);
    if (*spool != NULL) {
        unlink(*spool);
        *spool = NULL;
    }
    *data = buf->data;
    *len = buf->len;
}

void store_compress_stats(Store *s, StoreCompressStats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->zstats;
    pthread_mutex_unlock(&s->lock);
}

static int ingest_mem(Store *s, const uint8_t *data, size_t len,
                      const char *spool, const char *what, Req *q)
{
    AgBuf zbuf;
    ag_buf_init(&zbuf, (size_t)4 << 30);
    const char *ts = store__compress_ts(s);   /* read once: may change */
    if (ts != NULL && len <= store__max_bytes(s)) {
        compress_policy(s, ts, &data, &len, &spool, &zbuf);
        if (data == zbuf.data) {
            q->known = NULL;   /* re-encoded: not the bytes hashed */
        }
    }
    int rc = ingest_mem_as_is(s, data, len, spool, what, q);
    ag_buf_deinit(&zbuf);
    return rc;
}

static int ingest_mem_as_is(Store *s, const uint8_t *data, size_t len,
                            const char *spool, const char *what, Req *q)
{
    AgError *err = q->err;
    AgArena *a = NULL;
    Job local, *j = NULL;
    int rc = AG_OK;
    if (len > store__max_bytes(s)) {
        rc = ag_error_set(err, AG_ERR_LIMIT, "instance is larger than %llu "
                          "bytes", (unsigned long long)store__max_bytes(s));
    } else if ((a = ag_arena_create(HEADER_BUDGET)) == NULL ||
               (j = new_job(a, &local, q)) == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = BULK_INLINE_MAX};
    DicomFile *f = NULL;
    if (rc == AG_OK) {
        rc = dicom_read_buffer(data, len, &ro, a, &f, err);
        if (rc != AG_OK && what != NULL) {
            ag_error_prefix(err, "%s: ", what);
        }
    }
    if (rc == AG_OK) {
        rc = prepare(s, f, a, j, q->src, err);
    }
    bool done = false;
    if (rc == AG_OK) {
        rc = early_duplicate(s, j, q->res, &done, err);
    }
    if (rc == AG_OK && !done && spool != NULL) {
        StoreBlobInfo sum;
        if (q->known == NULL) {
            /* The caller read the whole file to parse it: hash those
             * bytes instead of reading them again. */
            store__blob_hash_buffer(data, len, &sum);
        }
        rc = store__blob_put_rename(s->blobs, j->blob_name, spool,
                                    q->known != NULL ? q->known : &sum,
                                    publish_now(s, j, q), &j->blob, err);
        spool = NULL;   /* consumed either way */
    } else if (rc == AG_OK && !done && stage_now(s, j, len)) {
        rc = stage(j, a, data, len, q);
    } else if (rc == AG_OK && !done) {
        rc = store__blob_put_buffer(s->blobs, j->blob_name, data, len,
                                    publish_now(s, j, q), &j->blob, err);
    }
    if (spool != NULL) {
        unlink(spool);
    }
    if (rc == AG_OK && !done) {
        return submit_job(s, a, j, q);
    }
    ag_arena_destroy(a);
    return rc;
}

/* Ingest a large file from fd (at offset 0): the header is parsed with the
 * bulk data left in the file, then the file is copied (or, take, renamed)
 * into the blob store, hashed on the way. */
static int ingest_stream(Store *s, int fd, const char *path, bool take,
                         Req *q)
{
    AgError *err = q->err;
    Job local, *j = NULL;
    int rc = AG_OK;
    AgArena *a = ag_arena_create(HEADER_BUDGET);
    if (a == NULL || (j = new_job(a, &local, q)) == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = BULK_INLINE_MAX};
    DicomFile *f = NULL;
    if (rc == AG_OK) {
        rc = dicom_read_fd(fd, &ro, a, &f, err);
        if (rc != AG_OK) {
            ag_error_prefix(err, "%s: ", path);
        }
    }
    if (rc == AG_OK) {
        rc = prepare(s, f, a, j, q->src, err);
    }
    bool done = false;
    if (rc == AG_OK) {
        rc = early_duplicate(s, j, q->res, &done, err);
    }
    if (rc == AG_OK && !done && take) {
        rc = store__blob_put_rename(s->blobs, j->blob_name, path, q->known,
                                    publish_now(s, j, q), &j->blob, err);
        take = false;   /* consumed either way */
    } else if (rc == AG_OK && !done) {
        if (lseek(fd, 0, SEEK_SET) != 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "seek %s", path);
        } else {
            rc = store__blob_put_fd(s->blobs, j->blob_name, fd,
                                    store__max_bytes(s), publish_now(s, j, q),
                                    &j->blob, err);
        }
    }
    if (take) {
        unlink(path);
    }
    if (rc == AG_OK && !done) {
        return submit_job(s, a, j, q);
    }
    ag_arena_destroy(a);
    return rc;
}

/* Read all of a small file; *grew when it holds more than st_size said
 * (then it is streamed instead). */
static int read_small(int fd, const char *path, size_t size, uint8_t **out,
                      size_t *len, bool *grew, AgError *err)
{
    /* One byte more than expected tells a file that is still growing. */
    uint8_t *p = ag_malloc(size + 1);
    if (p == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < size + 1) {
        ssize_t n = read(fd, p + got, size + 1 - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            ag_free(p);
            return ag_error_errno(err, AG_ERR_IO, "read %s", path);
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    *grew = got > size;
    *out = p;
    *len = got;
    return AG_OK;
}

/* Ingest from fd at offset 0; path names the file in errors and is the
 * spool consumed when take. */
static int ingest_file(Store *s, int fd, const char *path, bool take, Req *q)
{
    struct stat st;
    int rc = AG_OK;
    if (fstat(fd, &st) != 0) {
        rc = ag_error_errno(q->err, AG_ERR_IO, "stat %s", path);
    } else if (S_ISREG(st.st_mode) &&
               ((uint64_t)st.st_size <= INLINE_FILE_MAX ||
                (store__compress_ts(s) != NULL &&
                 (uint64_t)st.st_size <= COMPRESS_FILE_MAX))) {
        uint8_t *data = NULL;
        size_t len = 0;
        bool grew = false;
        rc = read_small(fd, path, (size_t)st.st_size, &data, &len, &grew,
                        q->err);
        if (rc == AG_OK && !grew) {
            rc = ingest_mem(s, data, len, take ? path : NULL,
                            take ? NULL : path, q);
            ag_free(data);
            return rc;
        }
        ag_free(data);
        if (rc == AG_OK && lseek(fd, 0, SEEK_SET) != 0) {
            rc = ag_error_errno(q->err, AG_ERR_IO, "seek %s", path);
        }
    }
    if (rc == AG_OK) {
        return ingest_stream(s, fd, path, take, q);
    }
    if (take) {
        unlink(path);
    }
    return rc;
}

int store_ingest_path(Store *s, const char *path, bool take,
                      const StoreSource *src, StoreResult *res, AgError *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = ag_error_errno(err, AG_ERR_IO, "%s: open", path);
        if (take) {
            unlink(path);
        }
        return rc;
    }
    Req q = {.src = src, .res = res, .err = err};
    int rc = ingest_file(s, fd, path, take, &q);
    close(fd);
    return rc;
}

int store_ingest_fd(Store *s, int fd, const char *name,
                    const StoreSource *src, StoreResult *res, AgError *err)
{
    name = name != NULL ? name : "file";
    if (lseek(fd, 0, SEEK_SET) != 0) {
        return ag_error_errno(err, AG_ERR_IO, "seek %s", name);
    }
    Req q = {.src = src, .res = res, .err = err};
    return ingest_file(s, fd, name, false, &q);
}

int store_ingest_buffer(Store *s, const uint8_t *data, size_t len,
                        const StoreSource *src, StoreResult *res,
                        AgError *err)
{
    Req q = {.src = src, .res = res, .err = err};
    return ingest_mem(s, data, len, NULL, NULL, &q);
}

/* Ingest a spool's bytes (from memory, or from its file once they
 * outgrew it) and free it. */
static int ingest_spool(Store *s, StoreSpool *sp, Req *q)
{
    StoreBlobInfo sum;
    int rc = store__spool_finish(sp, &sum, q->err);
    q->known = &sum;
    const char *file = sp->path[0] != '\0' ? sp->path : NULL;
    if (rc == AG_OK && sp->in_mem) {
        /* The file, if any, holds the same bytes: it becomes the blob. */
        rc = ingest_mem(s, sp->mem.data, sp->mem.len, file, NULL, q);
        sp->path[0] = '\0';   /* consumed */
    } else if (rc == AG_OK) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = ag_error_errno(q->err, AG_ERR_IO, "%s: open", file);
        } else {
            rc = ingest_file(s, fd, file, true, q);
            sp->path[0] = '\0';   /* consumed */
            close(fd);
        }
    }
    q->known = NULL;
    store_spool_discard(sp);
    return rc;
}

int store_ingest_spool(Store *s, StoreSpool *sp, const StoreSource *src,
                       StoreResult *res, AgError *err)
{
    Req q = {.src = src, .res = res, .err = err};
    return ingest_spool(s, sp, &q);
}

int store_ingest_spool_async(Store *s, StoreSpool *sp, const StoreSource *src,
                             StoreIngestDone done, void *ctx)
{
    StoreResult res;
    AgError err;
    ag_error_clear(&err);
    Req q = {.src = src, .res = &res, .err = &err, .done = done, .ctx = ctx};
    int rc = ingest_spool(s, sp, &q);
    if (!q.queued) {
        /* Decided before anything was queued: a failure or a duplicate. */
        done(ctx, rc, rc == AG_OK ? &res : NULL, rc == AG_OK ? NULL : &err);
    }
    return rc;
}

static int ingest_fd_async(Store *s, int fd, const char *name, bool take,
                           const StoreSource *src, StoreIngestDone done,
                           void *ctx)
{
    StoreResult res;
    AgError err;
    ag_error_clear(&err);
    Req q = {.src = src, .res = &res, .err = &err, .done = done, .ctx = ctx};
    name = name != NULL ? name : "file";
    int rc;
    if (lseek(fd, 0, SEEK_SET) == 0) {
        rc = ingest_file(s, fd, name, take, &q);   /* consumes when take */
    } else {
        rc = ag_error_errno(&err, AG_ERR_IO, "seek %s", name);
        if (take) {
            unlink(name);
        }
    }
    if (!q.queued) {
        /* Decided before anything was queued: a failure or a duplicate. */
        done(ctx, rc, rc == AG_OK ? &res : NULL, rc == AG_OK ? NULL : &err);
    }
    return rc;
}

int store_ingest_fd_async(Store *s, int fd, const char *name,
                          const StoreSource *src, StoreIngestDone done,
                          void *ctx)
{
    return ingest_fd_async(s, fd, name, false, src, done, ctx);
}

int store_ingest_path_async(Store *s, const char *path, bool take,
                            const StoreSource *src, StoreIngestDone done,
                            void *ctx)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        AgError err;
        int rc = ag_error_errno(&err, AG_ERR_IO, "%s: open", path);
        if (take) {
            unlink(path);
        }
        done(ctx, rc, NULL, &err);
        return rc;
    }
    int rc = ingest_fd_async(s, fd, path, take, src, done, ctx);
    close(fd);
    return rc;
}

/* ---- delete, list, stats ------------------------------------------------------ */

int store_delete(Store *s, StoreLevel level, const char *key,
                 uint64_t *count, AgError *err)
{
    uint64_t n = 0;
    int rc = lock_writer(s, err);
    if (rc != AG_OK) {
        return rc;
    }
    StoreIndex *ix = s->index;
    rc = ix->ops->begin(ix, err);
    if (rc == AG_OK) {
        rc = ix->ops->delete_level(ix, level, key, &n, err);
        if (rc == AG_OK) {
            rc = ix->ops->commit(ix, err);
        } else {
            ix->ops->rollback(ix);
        }
    }
    if (rc == AG_OK) {
        empty_trash(s);
    }
    pthread_mutex_unlock(&s->write_lock);
    if (rc == AG_OK) {
        static const char *const names[] = {"patient", "study", "series",
                                            "instance"};
        StoreEvent ev = {.type = STORE_EVENT_DELETED, .level = names[level],
                         .uid = key};
        for (int i = 0; i < s->nlisteners; i++) {
            s->listeners[i].fn(s->listeners[i].ctx, &ev);
        }
    }
    if (count != NULL) {
        *count = n;
    }
    return rc;
}

int store_list(Store *s, StoreLevel level, const char *const *filters,
               uint32_t limit, StoreRowFn fn, void *ctx, AgError *err)
{
    return s->index->ops->list(s->index, level, filters, limit, fn, ctx, err);
}

int store_stats(Store *s, StoreStats *out, AgError *err)
{
    return s->index->ops->stats(s->index, out, err);
}

void store_commit_stats(Store *s, StoreCommitStats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->cstats;
    pthread_mutex_unlock(&s->lock);
}

/* ---- reading ---------------------------------------------------------------- */

static int first_row(void *ctx, int ncol, const char *const *vals)
{
    char (*out)[65] = ctx;
    for (int i = 0; i < ncol && i < 4; i++) {
        ag_fmt(out[i], 65, "%s", vals[i] ? vals[i] : "");
    }
    return 1;
}

int store_instance_open(Store *s, const char *sop_uid, StoreInstance *out,
                        AgError *err)
{
    char row[4][65] = {{0}};
    const char *params[1] = {sop_uid};
    int rc = s->index->ops->select(s->index, "SELECT blob, sop_class_uid,"
                                   " transfer_syntax, sop_uid FROM instances"
                                   " WHERE sop_uid = ?1", params, 1,
                                   first_row, row, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (row[0][0] == '\0') {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no instance %.64s",
                            sop_uid);
    }
    int fd = -1;
    AgError be;
    if (store__blob_fd(s, row[0], &fd, &be) != AG_OK) {
        return ag_error_set(err, AG_ERR_IO, "open blob of %.64s: %s",
                            sop_uid, be.msg);
    }
    AgArena *a = ag_arena_create(1 << 20);
    DicomReadOptions ro = {.meta_only = true};
    DicomFile *f = NULL;
    rc = a == NULL ? ag_error_set(err, AG_ERR_NOMEM, "out of memory")
                   : dicom_read_fd(fd, &ro, a, &f, err);
    struct stat st;
    if (rc == AG_OK && fstat(fd, &st) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "stat blob");
    }
    if (rc == AG_OK) {
        memset(out, 0, sizeof *out);
        out->fd = fd;
        out->size = (uint64_t)st.st_size;
        out->dataset_offset = f->dataset_offset;
        memcpy(out->sop_class_uid, row[1], 65);
        memcpy(out->transfer_syntax, row[2], 65);
        memcpy(out->sop_instance_uid, row[3], 65);
    } else {
        close(fd);
    }
    ag_arena_destroy(a);
    return rc;
}

int store_instance_verify(Store *s, const char *sop_uid, const char *sop_class,
                          AgError *err)
{
    /* A row is visible once committed, durable only after the settler's
     * flush: vouch only for what a crash cannot take back. */
    wait_durable(s);
    char row[4][65] = {{0}};
    const char *params[1] = {sop_uid};
    int rc = s->index->ops->select(s->index, "SELECT blob, sop_class_uid,"
                                   " checksum, size FROM instances"
                                   " WHERE sop_uid = ?1", params, 1,
                                   first_row, row, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (row[0][0] == '\0') {
        return ag_error_set(err, AG_ERR_NOTFOUND, "not stored");
    }
    if (sop_class != NULL && strcmp(sop_class, row[1]) != 0) {
        return ag_error_set(err, AG_ERR_INVALID, "stored with another SOP "
                            "class");
    }
    StoreBlobInfo info;
    rc = store__blob_hash_any(s, row[0], &info, err);
    if (rc != AG_OK) {
        return ag_error_set(err, AG_ERR_IO, "blob unreadable");
    }
    if (strcmp(info.checksum, row[2]) != 0) {
        return ag_error_set(err, AG_ERR_IO, "checksum mismatch");
    }
    return AG_OK;
}

typedef struct MetaCtx {
    int (*fn)(void *ctx, const char *json, size_t len);
    void *ctx;
    size_t n;
} MetaCtx;

static int meta_row(void *ctx, int ncol, const char *const *vals)
{
    MetaCtx *m = ctx;
    if (ncol < 1 || vals[0] == NULL) {
        return 0;
    }
    m->n++;
    return m->fn(m->ctx, vals[0], strlen(vals[0]));
}

int store_metadata(Store *s, const char *study, const char *series,
                   const char *instance,
                   int (*fn)(void *ctx, const char *json, size_t len),
                   void *ctx, AgError *err)
{
    const char *params[3] = {study, series, instance};
    int np = instance != NULL ? 3 : series != NULL ? 2 : 1;
    const char *sql =
        instance != NULL
            ? "SELECT m.json FROM instance_meta m JOIN instances i"
              " ON m.instance_pk = i.id JOIN series se ON i.series_pk = se.id"
              " JOIN studies t ON se.study_pk = t.id WHERE t.study_uid = ?1"
              " AND se.series_uid = ?2 AND i.sop_uid = ?3"
        : series != NULL
            ? "SELECT m.json FROM instance_meta m JOIN instances i"
              " ON m.instance_pk = i.id JOIN series se ON i.series_pk = se.id"
              " JOIN studies t ON se.study_pk = t.id WHERE t.study_uid = ?1"
              " AND se.series_uid = ?2 ORDER BY i.instance_number, i.id"
            : "SELECT m.json FROM instance_meta m JOIN instances i"
              " ON m.instance_pk = i.id JOIN series se ON i.series_pk = se.id"
              " JOIN studies t ON se.study_pk = t.id WHERE t.study_uid = ?1"
              " ORDER BY se.series_number, se.id, i.instance_number, i.id";
    MetaCtx m = {.fn = fn, .ctx = ctx};
    int rc = s->index->ops->select(s->index, sql, params, np, meta_row, &m,
                                   err);
    if (rc == AG_OK && m.n == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such object");
    }
    return rc;
}

/* ---- nodes ---------------------------------------------------------------- */

/* AE titles (PS3.5 §6.2 AE): 1-16 characters, no backslash or control
 * characters, not all spaces. */
bool store__valid_aet(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 16 || s[0] == ' ') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '\\') {
            return false;
        }
    }
    return true;
}

static bool valid_host(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_')) {
            return false;
        }
    }
    return true;
}

int store_sql_select(Store *s, const char *sql, const char *const *params,
                     int nparams,
                     int (*fn)(void *ctx, int ncol, const char *const *vals),
                     void *ctx, AgError *err)
{
    return s->index->ops->select(s->index, sql, params, nparams, fn, ctx,
                                 err);
}

int store_sql_exec(Store *s, const char *sql, const char *const *params,
                   int nparams, int64_t *changes, int64_t *last_id,
                   AgError *err)
{
    int rc = lock_writer(s, err);
    if (rc != AG_OK) {
        return rc;
    }
    rc = s->index->ops->exec(s->index, sql, params, nparams, changes,
                             last_id, err);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int store_node_put(Store *s, const StoreNode *n, AgError *err)
{
    if (!store__valid_aet(n->aet)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid AE title");
    }
    if (!valid_host(n->host)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid host name");
    }
    if (n->port == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid port");
    }
    int rc = lock_writer(s, err);
    if (rc != AG_OK) {
        return rc;
    }
    rc = s->index->ops->node_put(s->index, n, err);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int store_node_remove(Store *s, const char *aet, AgError *err)
{
    int rc = lock_writer(s, err);
    if (rc != AG_OK) {
        return rc;
    }
    rc = s->index->ops->node_remove(s->index, aet, err);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int store_node_get(Store *s, const char *aet, StoreNode *out, AgError *err)
{
    return s->index->ops->node_get(s->index, aet, out, err);
}

int store_node_list(Store *s, int (*fn)(void *ctx, const StoreNode *n),
                    void *ctx, AgError *err)
{
    return s->index->ops->node_list(s->index, fn, ctx, err);
}

/* ---- internals for check.c ------------------------------------------------- */

StoreBlobs *store__blobs(Store *s)
{
    return s->blobs;
}

StoreSettings *store__settings(Store *s)
{
    return &s->settings;
}

StoreIndex *store__index(Store *s)
{
    return s->index;
}

int store__reindex_blob(Store *s, const char *name, AgError *err)
{
    char path[AG_PATH_MAX];
    int rc = store__blob_path(s->blobs, name, path, sizeof path, err);
    if (rc != AG_OK) {
        return rc;
    }
    AgArena *a = ag_arena_create(HEADER_BUDGET);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    Job j = {0};
    DicomReadOptions ro = {.bulk_threshold = BULK_INLINE_MAX};
    DicomFile *f = NULL;
    rc = dicom_read_path(path, &ro, a, &f, err);
    if (rc == AG_OK) {
        rc = prepare(s, f, a, &j, NULL, err);
    }
    if (rc == AG_OK) {
        ag_fmt(j.blob_name, sizeof j.blob_name, "%s", name);
        rc = store__blob_hash(s->blobs, name, &j.blob, err);
    }
    if (rc == AG_OK) {
        rc = lock_writer(s, err);   /* held until the end of the next block */
    }
    if (rc == AG_OK) {
        static const StoreSource repair = {.via = "repair"};
        char old[STORE_BLOB_NAME_MAX];
        StoreIndex *ix = s->index;
        rc = ix->ops->begin(ix, err);
        if (rc == AG_OK) {
            rc = ix->ops->find_instance(ix, j.attrs.sop_uid, old, err);
            if (rc == AG_OK) {
                rc = ag_error_set(err, AG_ERR_EXISTS, "already indexed");
            } else if (rc == AG_ERR_NOTFOUND) {
                StoreIndexInsert in = {
                    .attrs = &j.attrs, .blob_name = name, .blob = &j.blob,
                    .metadata_json = j.json, .metadata_len = j.json_len,
                    .source = &repair,
                };
                rc = ix->ops->put_instance(ix, &in, false, &j.conflict, err);
            }
            if (rc == AG_OK) {
                rc = ix->ops->commit(ix, err);
            } else {
                ix->ops->rollback(ix);
            }
        }
        pthread_mutex_unlock(&s->write_lock);
    }
    ag_arena_destroy(a);
    return rc;
}
