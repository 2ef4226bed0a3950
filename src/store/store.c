/*
 * store.c — the archive core: open/close, the ingest pipeline with group
 * commit, delete, listing and the integrity check.
 *
 * Ingest in the caller's thread: parse the header (pixels left in the
 * file), validate, build the instance's DICOM JSON, write and fsync the
 * blob and its directory — in parallel across callers.  Then the job goes
 * to the commit thread, which takes every job waiting, applies the
 * duplicate policy and inserts the rows in ONE transaction, commits (one
 * WAL fsync), and wakes the callers.  The index therefore costs one fsync
 * per batch, not one per instance.
 */
#include "store_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LISTENERS 16
#define HEADER_BUDGET ((size_t)256 << 20)
#define BULK_INLINE_MAX 1024     /* larger values: BulkDataURI in metadata */

typedef struct Job {
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
    bool done;
    struct Job *next;
} Job;

struct Store {
    StoreConfig cfg;
    char data_dir[AG_PATH_MAX];
    StoreBlobs *blobs;
    StoreIndex *index;
    /* commit thread */
    pthread_t committer;
    bool started;
    pthread_mutex_t lock;         /* queue, done flags, stop */
    pthread_cond_t queue_cv;
    pthread_cond_t done_cv;
    Job *head, *tail;
    bool stop;
    pthread_mutex_t write_lock;   /* the index writer connection */
    Job **batch;                  /* the commit thread's current batch */
    uint32_t batch_max;
    struct {
        StoreListener fn;
        void *ctx;
    } listeners[MAX_LISTENERS];
    int nlisteners;
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

static void enqueue(Store *s, Job *j);
static void wait_done(Store *s, Job *j);

/* Queue a job and wait until the commit thread has decided it. */
static void submit(Store *s, Job *j)
{
    enqueue(s, j);
    wait_done(s, j);
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

static void apply_one(Store *s, Job *j)
{
    StoreIndex *ix = s->index;
    char old[STORE_BLOB_NAME_MAX];
    AgError e;
    int rc = ix->ops->find_instance(ix, j->attrs.sop_uid, old, &e);
    if (rc == AG_OK) {
        switch (s->cfg.dup_policy) {
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
        .source = j->src,
    };
    if (ix->ops->put_instance(ix, &in, j->outcome == STORE_REPLACED,
                              &j->conflict, &e) != AG_OK) {
        fail_job(j, &e);
    }
}

static void process_batch(Store *s, Job **jobs, int n)
{
    pthread_mutex_lock(&s->write_lock);
    AgError e;
    int rc = s->index->ops->begin(s->index, &e);
    for (int i = 0; i < n && rc == AG_OK; i++) {
        if (jobs[i]->rc == AG_OK) {
            apply_one(s, jobs[i]);
        }
    }
    if (rc == AG_OK) {
        rc = s->index->ops->commit(s->index, &e);
    }
    if (rc != AG_OK) {
        /* Nothing of the batch is indexed: every job fails, and the blobs
         * it wrote go (SECURITY.md rule 4: no partial state). */
        for (int i = 0; i < n; i++) {
            if (jobs[i]->rc == AG_OK) {
                fail_job(jobs[i], &e);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (jobs[i]->drop_new_blob) {
            store__blob_remove(s->blobs, jobs[i]->blob_name, NULL);
        }
    }
    if (rc == AG_OK) {
        empty_trash(s);   /* blobs replaced in this batch */
    }
    pthread_mutex_unlock(&s->write_lock);
    for (int i = 0; i < n; i++) {
        if (jobs[i]->rc == AG_OK && jobs[i]->outcome != STORE_DUPLICATE) {
            StoreResult r;
            fill_result(jobs[i], &r);
            publish(s, jobs[i], &r);
        }
    }
}

static void *commit_main(void *arg)
{
    Store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->head == NULL && !s->stop) {
            pthread_cond_wait(&s->queue_cv, &s->lock);
        }
        if (s->head == NULL) {
            break;   /* stopping, and nothing left to commit */
        }
        /* Everything waiting now becomes one transaction. */
        int n = 0;
        while (s->head != NULL && (uint32_t)n < s->batch_max) {
            s->batch[n++] = s->head;
            s->head = s->head->next;
        }
        if (s->head == NULL) {
            s->tail = NULL;
        }
        pthread_mutex_unlock(&s->lock);
        process_batch(s, s->batch, n);
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < n; i++) {
            s->batch[i]->done = true;
        }
        pthread_cond_broadcast(&s->done_cv);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- open / close --------------------------------------------------------- */

int store_open(const StoreConfig *cfg, Store **out, AgError *err)
{
    if (cfg->data_dir == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "no data directory");
    }
    Store *s = ag_calloc(1, sizeof *s);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "store: out of memory");
    }
    s->cfg = *cfg;
    ag_fmt(s->data_dir, sizeof s->data_dir, "%s", cfg->data_dir);
    s->cfg.data_dir = s->data_dir;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_cond_init(&s->queue_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
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
        empty_trash(s);   /* finish deletions a crash interrupted */
        if (pthread_create(&s->committer, NULL, commit_main, s) != 0) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "cannot start commit "
                              "thread");
        } else {
            s->started = true;
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
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->queue_cv);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->committer, NULL);
    }
    if (s->index != NULL) {
        s->index->ops->close(s->index);
    }
    store__blobs_close(s->blobs);
    ag_free(s->batch);
    pthread_cond_destroy(&s->queue_cv);
    pthread_cond_destroy(&s->done_cv);
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
    j->next = NULL;
    if (s->tail != NULL) {
        s->tail->next = j;
    } else {
        s->head = j;
    }
    s->tail = j;
    pthread_cond_signal(&s->queue_cv);
    pthread_mutex_unlock(&s->lock);
}

static void wait_done(Store *s, Job *j)
{
    pthread_mutex_lock(&s->lock);
    while (!j->done) {
        pthread_cond_wait(&s->done_cv, &s->lock);
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
    if (s->cfg.dup_policy == STORE_DUP_REPLACE ||
        !indexed(s, j->attrs.sop_uid)) {
        return AG_OK;
    }
    *done = true;
    if (s->cfg.dup_policy == STORE_DUP_REJECT) {
        return ag_error_set(err, AG_ERR_EXISTS, "SOP Instance UID %s is "
                            "already stored", j->attrs.sop_uid);
    }
    j->outcome = STORE_DUPLICATE;
    if (res != NULL) {
        fill_result(j, res);
    }
    return AG_OK;
}

static int finish(Store *s, Job *j, const StoreSource *src, StoreResult *res,
                  AgError *err)
{
    j->src = src;
    AgError derr;
    int drc;
    if (s->cfg.dup_policy == STORE_DUP_REPLACE &&
        indexed(s, j->attrs.sop_uid)) {
        /* A replacement unlinks the old blob once committed: the new one
         * must be durable first. */
        drc = store__blob_sync_dir(s->blobs, j->blob_name, &derr);
        if (drc != AG_OK) {
            store__blob_remove(s->blobs, j->blob_name, NULL);
            if (err != NULL) {
                *err = derr;
            }
            return drc;
        }
        submit(s, j);
    } else {
        /* A new instance: its directory fsync runs while the commit thread
         * commits the index; success waits for both. */
        enqueue(s, j);
        drc = store__blob_sync_dir(s->blobs, j->blob_name, &derr);
        wait_done(s, j);
        if (drc != AG_OK && j->rc == AG_OK &&
            j->outcome != STORE_DUPLICATE) {
            /* Committed, but the name may not survive a crash: take the
             * instance back out so nothing half-durable is acknowledged. */
            uint64_t n;
            store_delete(s, STORE_LEVEL_INSTANCE, j->attrs.sop_uid, &n, NULL);
            ag_log(AG_LOG_ERROR, "store", "directory fsync failed for %s: "
                   "%s; instance withdrawn", j->attrs.sop_uid, derr.msg);
            j->rc = drc;
            j->err = derr;
        }
    }
    if (j->rc != AG_OK) {
        if (err != NULL) {
            *err = j->err;
        }
        return j->rc;
    }
    if (res != NULL) {
        fill_result(j, res);
    }
    return AG_OK;
}

static uint64_t max_bytes(const Store *s)
{
    uint64_t mb = s->cfg.max_instance_bytes_mb ? s->cfg.max_instance_bytes_mb
                                               : 4096;
    return mb << 20;
}

int store_ingest_path(Store *s, const char *path, bool take,
                      const StoreSource *src, StoreResult *res, AgError *err)
{
    AgArena *a = ag_arena_create(HEADER_BUDGET);
    if (a == NULL) {
        if (take) {
            unlink(path);
        }
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    Job j = {0};
    DicomReadOptions ro = {.bulk_threshold = BULK_INLINE_MAX};
    DicomFile *f = NULL;
    int rc = dicom_read_path(path, &ro, a, &f, err);
    if (rc == AG_OK) {
        rc = prepare(s, f, a, &j, src, err);
    }
    bool done = false;
    if (rc == AG_OK) {
        rc = early_duplicate(s, &j, res, &done, err);
    }
    if (done) {
        if (take) {
            unlink(path);
        }
        ag_arena_destroy(a);
        return rc;
    }
    if (rc == AG_OK && take) {
        rc = store__blob_put_rename(s->blobs, j.blob_name, path, &j.blob,
                                    err);
        take = false;   /* consumed either way */
    } else if (rc == AG_OK) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "open %s", path);
        } else {
            rc = store__blob_put_fd(s->blobs, j.blob_name, fd, max_bytes(s),
                                    &j.blob, err);
            close(fd);
        }
    }
    if (take) {
        unlink(path);
    }
    if (rc == AG_OK) {
        rc = finish(s, &j, src, res, err);
    }
    ag_arena_destroy(a);
    return rc;
}

int store_ingest_buffer(Store *s, const uint8_t *data, size_t len,
                        const StoreSource *src, StoreResult *res,
                        AgError *err)
{
    if (len > max_bytes(s)) {
        return ag_error_set(err, AG_ERR_LIMIT, "instance is larger than %llu "
                            "bytes", (unsigned long long)max_bytes(s));
    }
    AgArena *a = ag_arena_create(HEADER_BUDGET);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    Job j = {0};
    DicomReadOptions ro = {.bulk_threshold = BULK_INLINE_MAX};
    DicomFile *f = NULL;
    int rc = dicom_read_buffer(data, len, &ro, a, &f, err);
    if (rc == AG_OK) {
        rc = prepare(s, f, a, &j, src, err);
    }
    bool done = false;
    if (rc == AG_OK) {
        rc = early_duplicate(s, &j, res, &done, err);
    }
    if (done) {
        ag_arena_destroy(a);
        return rc;
    }
    if (rc == AG_OK) {
        rc = store__blob_put_buffer(s->blobs, j.blob_name, data, len, &j.blob,
                                    err);
    }
    if (rc == AG_OK) {
        rc = finish(s, &j, src, res, err);
    }
    ag_arena_destroy(a);
    return rc;
}

/* ---- delete, list, stats ------------------------------------------------------ */

int store_delete(Store *s, StoreLevel level, const char *key,
                 uint64_t *count, AgError *err)
{
    uint64_t n = 0;
    pthread_mutex_lock(&s->write_lock);
    StoreIndex *ix = s->index;
    int rc = ix->ops->begin(ix, err);
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
    char path[AG_PATH_MAX];
    rc = store__blob_path(s->blobs, row[0], path, sizeof path, err);
    if (rc != AG_OK) {
        return rc;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open blob of %.64s", sop_uid);
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
    rc = store__blob_hash(s->blobs, row[0], &info, err);
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
static bool valid_aet(const char *s)
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
    pthread_mutex_lock(&s->write_lock);
    int rc = s->index->ops->exec(s->index, sql, params, nparams, changes,
                                 last_id, err);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int store_node_put(Store *s, const StoreNode *n, AgError *err)
{
    if (!valid_aet(n->aet)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid AE title");
    }
    if (!valid_host(n->host)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid host name");
    }
    if (n->port == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid port");
    }
    pthread_mutex_lock(&s->write_lock);
    int rc = s->index->ops->node_put(s->index, n, err);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

int store_node_remove(Store *s, const char *aet, AgError *err)
{
    pthread_mutex_lock(&s->write_lock);
    int rc = s->index->ops->node_remove(s->index, aet, err);
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
        static const StoreSource repair = {.via = "repair"};
        pthread_mutex_lock(&s->write_lock);
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
