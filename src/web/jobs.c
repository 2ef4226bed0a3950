/*
 * jobs.c — work that outlives a request: sending a study to a DICOM node
 * (C-STORE, through WebConfig.send, which cli/ wires to the services'
 * Storage SCU).  Jobs live in memory, in a table of the last JOBS_KEPT,
 * and two worker threads run them in the order they came.
 *
 *   POST   /api/v1/studies/{uid}/send {"node": "AET"}   (download) → 202
 *   GET    /api/v1/jobs                  own jobs (admin: every job)
 *   GET    /api/v1/jobs/{id}
 *   DELETE /api/v1/jobs/{id}             cancel (a running send stops
 *                                         after the instance in flight)
 *
 * The instances are chosen when the job is created, by a query in the
 * requester's scope; the worker sends exactly those.  A job someone else
 * created answers 404 like one that does not exist (admins see all).
 *
 * Jobs are also kept in the index's jobs table (one row each: the job as
 * JSON, and its instance list while it is active), so that a restart
 * forgets none: at start the table is read back, and jobs that were
 * queued, or running when the server stopped, are queued again; a send
 * resumes after the instances it had already sent.
 */
#include "web_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOB_WORKERS 2
#define JOBS_KEPT 256          /* remembered; the oldest finished go first */
#define JOBS_ACTIVE_MAX 64     /* queued + running */
#define FAILED_LISTED 100      /* failed SOP Instance UIDs kept per job */
#define SEND_MAX 100000        /* instances per job */
#define QUERY_PAGE 10000       /* the index's hard cap per query */
#define SAVE_EVERY 1           /* seconds between saves of a send's counts */

typedef enum JobState {
    JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED,
} JobState;

static const char *const STATE_NAME[] = {"queued", "running", "done",
                                         "failed", "cancelled"};

typedef struct Job {
    int64_t id;
    char node[17];
    char study[65];
    JobState state;
    bool cancel;                  /* asked to stop */
    size_t total, sent, failed;
    char failed_uids[FAILED_LISTED][65];
    size_t nfailed_uids;
    char message[256];            /* why it failed, or "" */
    time_t created, started, finished;
    /* who created it */
    AccessKind kind;
    char user[65];
    int64_t user_id;
    char cancelled_by[65];
    /* the instances, while queued or running (heap; freed at the end) */
    char (*uids)[65];
    const char **sops;
    size_t base_sent, base_failed;   /* counted before this run */
    time_t saved;                    /* last save of the counts */
} Job;

struct WebJobs {
    const WebConfig *cfg;
    pthread_mutex_t lock;         /* everything below and every Job */
    pthread_cond_t cv;            /* a job queued, or stop */
    Job *v[JOBS_KEPT];            /* by id, oldest first */
    size_t n;
    int64_t next_id;
    bool stop;
    pthread_t workers[JOB_WORKERS];
    int nworkers;
};

static void job_free(Job *job)
{
    if (job != NULL) {
        ag_free(job->uids);
        ag_free(job->sops);
        ag_free(job);
    }
}

/* Drop the instance list once it is no longer needed (lock held). */
static void job_finish(Job *job, JobState state)
{
    job->state = state;
    job->finished = time(NULL);
    ag_free(job->uids);
    ag_free(job->sops);
    job->uids = NULL;
    job->sops = NULL;
}

static void job_save(WebJobs *j, Job *job);
static void job_forget(WebJobs *j, int64_t id);
static void load(WebJobs *j);
static bool make_room(WebJobs *j);

/* ---- workers ------------------------------------------------------------- */

typedef struct Progress {
    WebJobs *jobs;
    Job *job;
} Progress;

/* WebConfig.send's progress callback: counts, the first failed UIDs, and
 * whether to go on. */
static bool progress(void *ctx, size_t sent, size_t failed,
                     const char *failed_uid)
{
    Progress *p = ctx;
    pthread_mutex_lock(&p->jobs->lock);
    Job *job = p->job;
    job->sent = job->base_sent + sent;
    job->failed = job->base_failed + failed;
    if (failed_uid != NULL && job->nfailed_uids < FAILED_LISTED) {
        ag_fmt(job->failed_uids[job->nfailed_uids++], 65, "%s", failed_uid);
    }
    if (time(NULL) - job->saved >= SAVE_EVERY) {
        job_save(p->jobs, job);
    }
    bool go_on = !job->cancel && !p->jobs->stop;
    pthread_mutex_unlock(&p->jobs->lock);
    return go_on;
}

static Job *next_queued(WebJobs *j)
{
    for (size_t i = 0; i < j->n; i++) {
        if (j->v[i]->state == JOB_QUEUED) {
            return j->v[i];
        }
    }
    return NULL;
}

/* Run one job (lock not held; the job is RUNNING, so nobody frees it or
 * its instance list meanwhile).  A job resumed after a restart sends the
 * instances after those it had already sent or failed. */
static void run(WebJobs *j, Job *job)
{
    AgError err;
    ag_error_clear(&err);
    Progress p = {.jobs = j, .job = job};
    size_t from = job->base_sent + job->base_failed;
    int rc = j->cfg->send(j->cfg->send_ctx, job->node, job->sops + from,
                          job->total - from, progress, &p, &err);
    pthread_mutex_lock(&j->lock);
    JobState st = JOB_DONE;
    if (j->stop && !job->cancel) {
        /* Interrupted by a stop: queued again in the table, so that the
         * next start resumes it. */
        job->state = JOB_QUEUED;
        job_save(j, job);
        ag_log(AG_LOG_INFO, "jobs", "job %" PRId64 ": send to %s "
               "interrupted by the stop after %zu of %zu; it resumes at "
               "the next start", job->id, job->node,
               job->sent + job->failed, job->total);
        pthread_mutex_unlock(&j->lock);
        return;
    }
    if (job->cancel) {
        st = JOB_CANCELLED;
    } else if (rc != AG_OK) {
        st = JOB_FAILED;
        ag_fmt(job->message, sizeof job->message, "%s", err.msg);
    } else if (job->failed > 0 || job->sent < job->total) {
        st = JOB_FAILED;
        ag_fmt(job->message, sizeof job->message, "%zu of %zu instances "
               "were not stored by %s", job->total - job->sent, job->total,
               job->node);
    }
    job_finish(job, st);
    job_save(j, job);
    ag_log(AG_LOG_INFO, "jobs", "job %" PRId64 ": send to %s %s: %zu sent, "
           "%zu failed of %zu", job->id, job->node, STATE_NAME[st],
           job->sent, job->failed, job->total);
    pthread_mutex_unlock(&j->lock);
}

static void *worker_main(void *arg)
{
    WebJobs *j = arg;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        Job *job = NULL;
        while (!j->stop && (job = next_queued(j)) == NULL) {
            pthread_cond_wait(&j->cv, &j->lock);
        }
        if (j->stop) {
            break;
        }
        job->state = JOB_RUNNING;
        if (job->started == 0) {
            job->started = time(NULL);
        }
        job->base_sent = job->sent;
        job->base_failed = job->failed;
        job_save(j, job);
        pthread_mutex_unlock(&j->lock);
        run(j, job);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int web__jobs_create(const WebConfig *cfg, WebJobs **out, AgError *err)
{
    WebJobs *j = ag_calloc(1, sizeof *j);
    if (j == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    j->cfg = cfg;
    j->next_id = 1;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cv, NULL);
    load(j);
    for (int i = 0; cfg->send != NULL && i < JOB_WORKERS; i++) {
        if (pthread_create(&j->workers[i], NULL, worker_main, j) != 0) {
            web__jobs_destroy(j);
            return ag_error_set(err, AG_ERR_NOMEM, "cannot start the job "
                                "threads");
        }
        j->nworkers++;
    }
    *out = j;
    return AG_OK;
}

void web__jobs_destroy(WebJobs *j)
{
    if (j == NULL) {
        return;
    }
    pthread_mutex_lock(&j->lock);
    j->stop = true;   /* running sends stop at their next progress call */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->lock);
    for (int i = 0; i < j->nworkers; i++) {
        pthread_join(j->workers[i], NULL);
    }
    for (size_t i = 0; i < j->n; i++) {
        job_free(j->v[i]);
    }
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->lock);
    ag_free(j);
}

void web__jobs_counts(WebJobs *j, uint32_t *queued, uint32_t *running)
{
    *queued = *running = 0;
    if (j == NULL) {
        return;
    }
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->n; i++) {
        *queued += j->v[i]->state == JOB_QUEUED;
        *running += j->v[i]->state == JOB_RUNNING;
    }
    pthread_mutex_unlock(&j->lock);
}

/* ---- the table ----------------------------------------------------------- */

/* Make room for one more job (lock held): forget the oldest finished one
 * when the table is full.  False when too many are waiting or running. */
static bool make_room(WebJobs *j)
{
    size_t active = 0;
    for (size_t i = 0; i < j->n; i++) {
        active += j->v[i]->state <= JOB_RUNNING;
    }
    if (active >= JOBS_ACTIVE_MAX) {
        return false;
    }
    if (j->n < JOBS_KEPT) {
        return true;
    }
    for (size_t i = 0; i < j->n; i++) {
        if (j->v[i]->state > JOB_RUNNING) {
            job_forget(j, j->v[i]->id);
            job_free(j->v[i]);
            memmove(&j->v[i], &j->v[i + 1], (j->n - i - 1) * sizeof j->v[0]);
            j->n--;
            return true;
        }
    }
    return false;
}

static Job *find(WebJobs *j, int64_t id)
{
    for (size_t i = 0; i < j->n; i++) {
        if (j->v[i]->id == id) {
            return j->v[i];
        }
    }
    return NULL;
}

/* Jobs are their creator's; administrators see every job. */
static bool mine(WebRequest *r, const Job *job)
{
    if (web__can(r, ACCESS_ADMIN)) {
        return true;
    }
    if (job->user_id != 0 || r->who.user_id != 0) {
        return job->user_id == r->who.user_id;
    }
    return job->kind == r->who.kind && strcmp(job->user, r->who.name) == 0;
}

static json_t *iso_time(time_t t)
{
    if (t == 0) {
        return json_null();
    }
    struct tm tm;
    char s[32];
    gmtime_r(&t, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

/* The job as JSON (lock held). */
static json_t *job_json(const Job *job)
{
    json_t *failed = json_array();
    for (size_t i = 0; i < job->nfailed_uids; i++) {
        json_array_append_new(failed, json_string(job->failed_uids[i]));
    }
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, "
                          "s:o, s:o, s:o, s:s}",
                          "id", (json_int_t)job->id, "kind", "send",
                          "node", job->node, "study", job->study,
                          "state", STATE_NAME[job->state],
                          "total", (json_int_t)job->total,
                          "sent", (json_int_t)job->sent,
                          "failed", (json_int_t)job->failed,
                          "failed_instances", failed,
                          "created", iso_time(job->created),
                          "started", iso_time(job->started),
                          "finished", iso_time(job->finished),
                          "user", job->user);
    if (o != NULL && job->message[0] != '\0') {
        json_object_set_new(o, "message", json_string(job->message));
    }
    if (o != NULL && job->cancel) {
        json_object_set_new(o, "cancelled_by", json_string(
                                   job->cancelled_by));
    }
    return o;
}

static enum MHD_Result reply(WebRequest *r, unsigned status, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    enum MHD_Result ret = web__send(r, status, "application/json", s,
                                    strlen(s));
    free(s);
    return ret;
}

/* ---- the jobs table ------------------------------------------------------ */

/* Save the job's row (lock held): the job as JSON with what only the
 * server needs (who created it, the times as numbers) and, while it is
 * active, its instances.  A failed save is logged: the job goes on. */
static void job_save(WebJobs *j, Job *job)
{
    job->saved = time(NULL);
    json_t *o = job_json(job);
    json_t *in = json_pack("{s:i, s:I, s:b, s:[I, I, I]}",
                           "access_kind", (int)job->kind,
                           "user_id", (json_int_t)job->user_id,
                           "cancel", job->cancel, "times",
                           (json_int_t)job->created, (json_int_t)job->started,
                           (json_int_t)job->finished);
    char *doc = NULL;
    if (o != NULL && in != NULL &&
        json_object_set_new(o, "internal", json_incref(in)) == 0) {
        doc = json_dumps(o, JSON_COMPACT);
    }
    json_decref(in);
    json_decref(o);
    char *sops = NULL;
    if (job->state <= JOB_RUNNING && job->uids != NULL &&
        (sops = ag_malloc(job->total * 65 + 1)) != NULL) {
        size_t n = 0;
        for (size_t i = 0; i < job->total; i++) {
            n += (size_t)sprintf(sops + n, "%s%s", i ? "\n" : "",
                                 job->uids[i]);
        }
    }
    char id[24];
    ag_fmt(id, sizeof id, "%" PRId64, job->id);
    const char *p[3] = {id, doc, sops};
    AgError err;
    ag_error_clear(&err);
    if (doc == NULL) {
        ag_error_set(&err, AG_ERR_NOMEM, "out of memory");
    }
    if (doc == NULL ||
        store_sql_exec(j->cfg->store, "INSERT INTO jobs (id, doc, sops) "
                       "VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
                       "doc = excluded.doc, sops = excluded.sops", p, 3,
                       NULL, NULL, &err) != AG_OK) {
        ag_log(AG_LOG_WARN, "jobs", "job %" PRId64 " not saved: %s",
               job->id, err.msg);
    }
    free(doc);
    ag_free(sops);
}

static void job_forget(WebJobs *j, int64_t id)
{
    char s[24];
    ag_fmt(s, sizeof s, "%" PRId64, id);
    const char *p[1] = {s};
    AgError err;
    if (store_sql_exec(j->cfg->store, "DELETE FROM jobs WHERE id = ?1", p,
                       1, NULL, NULL, &err) != AG_OK) {
        ag_log(AG_LOG_WARN, "jobs", "job %" PRId64 " not forgotten: %s", id,
               err.msg);
    }
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL ? v : dflt;
}

static size_t count_of(json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v > 0 ? (size_t)v : 0;
}

/* The instance list of an active job: sops, one UID per line. */
static bool job_take_sops(Job *job, const char *sops)
{
    if (sops == NULL || job->total == 0) {
        return false;
    }
    job->uids = ag_calloc(job->total, sizeof *job->uids);
    job->sops = ag_calloc(job->total, sizeof *job->sops);
    if (job->uids == NULL || job->sops == NULL) {
        return false;
    }
    size_t n = 0;
    for (const char *p = sops; *p != '\0' && n < job->total; n++) {
        size_t len = strcspn(p, "\n");
        if (len == 0 || len > 64) {
            return false;
        }
        memcpy(job->uids[n], p, len);
        job->uids[n][len] = '\0';
        job->sops[n] = job->uids[n];
        p += len + (p[len] == '\n');
    }
    return n == job->total;
}

/* One row of the jobs table back into memory (lock held, at start). */
static int load_row(void *ctx, int ncol, const char *const *vals)
{
    WebJobs *j = ctx;
    json_t *o = ncol == 3 && vals[0] != NULL && vals[1] != NULL
                    ? json_loads(vals[1], 0, NULL) : NULL;
    json_t *in = json_object_get(o, "internal");
    json_t *times = json_object_get(in, "times");
    Job *job = o != NULL ? ag_calloc(1, sizeof *job) : NULL;
    if (job == NULL || !json_is_object(in) || json_array_size(times) != 3) {
        ag_log(AG_LOG_WARN, "jobs", "job %s: its row cannot be read; "
               "skipped", vals[0] != NULL ? vals[0] : "?");
        ag_free(job);
        json_decref(o);
        return 0;
    }
    job->id = strtoll(vals[0], NULL, 10);
    ag_fmt(job->node, sizeof job->node, "%s", str_or(o, "node", ""));
    ag_fmt(job->study, sizeof job->study, "%s", str_or(o, "study", ""));
    const char *state = str_or(o, "state", "failed");
    job->state = JOB_FAILED;
    for (int i = 0; i <= JOB_CANCELLED; i++) {
        if (strcmp(state, STATE_NAME[i]) == 0) {
            job->state = (JobState)i;
        }
    }
    job->total = count_of(o, "total");
    job->sent = count_of(o, "sent");
    job->failed = count_of(o, "failed");
    json_t *f = json_object_get(o, "failed_instances");
    for (size_t i = 0; i < json_array_size(f) && i < FAILED_LISTED; i++) {
        const char *u = json_string_value(json_array_get(f, i));
        ag_fmt(job->failed_uids[job->nfailed_uids++], 65, "%s",
               u != NULL ? u : "");
    }
    ag_fmt(job->message, sizeof job->message, "%s",
           str_or(o, "message", ""));
    ag_fmt(job->user, sizeof job->user, "%s", str_or(o, "user", ""));
    ag_fmt(job->cancelled_by, sizeof job->cancelled_by, "%s",
           str_or(o, "cancelled_by", ""));
    job->kind = (AccessKind)json_integer_value(json_object_get(
        in, "access_kind"));
    job->user_id = json_integer_value(json_object_get(in, "user_id"));
    job->cancel = json_is_true(json_object_get(in, "cancel"));
    job->created = (time_t)json_integer_value(json_array_get(times, 0));
    job->started = (time_t)json_integer_value(json_array_get(times, 1));
    job->finished = (time_t)json_integer_value(json_array_get(times, 2));
    json_decref(o);
    bool active = job->state <= JOB_RUNNING;
    if (active && (job->sent + job->failed > job->total ||
                   !job_take_sops(job, vals[2]))) {
        ag_fmt(job->message, sizeof job->message, "its instance list was "
               "lost");
        job_finish(job, JOB_FAILED);
        job_save(j, job);
        active = false;
    } else if (active) {
        job->state = JOB_QUEUED;   /* running when the server stopped */
    }
    if (job->id >= j->next_id) {
        j->next_id = job->id + 1;
    }
    if (!make_room(j)) {
        ag_log(AG_LOG_WARN, "jobs", "job %" PRId64 ": too many active jobs; "
               "left in the table", job->id);
        job_free(job);
        return 0;
    }
    j->v[j->n++] = job;
    if (active) {
        ag_log(AG_LOG_INFO, "jobs", "job %" PRId64 ": send to %s resumes "
               "after %zu of %zu", job->id, job->node,
               job->sent + job->failed, job->total);
    }
    return 0;
}

/* Read the jobs table back (at start, before the workers). */
static void load(WebJobs *j)
{
    AgError err;
    pthread_mutex_lock(&j->lock);
    if (store_sql_select(j->cfg->store, "SELECT id, doc, sops FROM jobs "
                         "ORDER BY id", NULL, 0, load_row, j, &err) != AG_OK) {
        ag_log(AG_LOG_WARN, "jobs", "the jobs table cannot be read: %s",
               err.msg);
    }
    pthread_mutex_unlock(&j->lock);
}

/* ---- POST /api/v1/studies/{uid}/send ------------------------------------ */

typedef struct UidList {
    char (*v)[65];
    size_t n, cap;
    int rc;
} UidList;

static int add_uid(void *ctx, const DicomDataset *m)
{
    UidList *l = ctx;
    const char *sop = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID,
                                       dicom_dataset_arena(m));
    if (sop == NULL || sop[0] == '\0') {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char (*v)[65] = ag_realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            l->rc = AG_ERR_NOMEM;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    ag_fmt(l->v[l->n++], 65, "%s", sop);
    return 0;
}

/* The study's instances in the requester's scope, less break-the-glass
 * (it grants view, not export), page by page. */
static int study_uids(WebRequest *r, const char *study, UidList *l,
                      AgError *err)
{
    StoreScope sc = r->who.scope;
    sc.no_glass = true;
    bool more = true;
    int rc = AG_OK;
    while (rc == AG_OK && more && l->n < SEND_MAX) {
        DicomDataset *keys = dicom_dataset_create(r->arena);
        rc = keys == NULL ? ag_error_set(err, AG_ERR_NOMEM, "out of memory")
                          : AG_OK;
        if (rc == AG_OK) {
            rc = dicom_set_string(keys, DICOM_TAG_STUDY_INSTANCE_UID,
                                  DICOM_VR_UI, study, err);
        }
        if (rc == AG_OK) {
            rc = dicom_set_string(keys, DICOM_TAG_SOP_INSTANCE_UID,
                                  DICOM_VR_UI, "", err);
        }
        StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = keys,
                        .limit = QUERY_PAGE, .offset = (uint32_t)l->n,
                        .scope = &sc};
        size_t before = l->n;
        if (rc == AG_OK) {
            rc = store_query(web__store(r), &q, add_uid, l, &more, err);
        }
        if (rc == AG_OK && l->rc != AG_OK) {
            rc = ag_error_set(err, l->rc, "out of memory");
        }
        more = more && l->n > before;
    }
    if (rc == AG_OK && more) {
        rc = ag_error_set(err, AG_ERR_LIMIT, "the study has more than %d "
                          "instances", SEND_MAX);
    }
    return rc;
}

static Job *job_new(WebRequest *r, const StoreNode *node, const char *study,
                    UidList *l)
{
    Job *job = ag_calloc(1, sizeof *job);
    const char **sops = ag_calloc(l->n, sizeof *sops);
    if (job == NULL || sops == NULL) {
        ag_free(job);
        ag_free(sops);
        return NULL;
    }
    for (size_t i = 0; i < l->n; i++) {
        sops[i] = l->v[i];
    }
    job->uids = l->v;   /* taken */
    l->v = NULL;
    job->sops = sops;
    job->total = l->n;
    ag_fmt(job->node, sizeof job->node, "%s", node->aet);
    ag_fmt(job->study, sizeof job->study, "%s", study);
    job->state = JOB_QUEUED;
    job->created = time(NULL);
    job->kind = r->who.kind;
    job->user_id = r->who.user_id;
    ag_fmt(job->user, sizeof job->user, "%s", r->who.name);
    return job;
}

enum MHD_Result web__jobs_send(WebRequest *r, const char *study,
                               json_t *body)
{
    if (!web__study_visible(r, study)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    if (!web__can(r, ACCESS_DOWNLOAD)) {
        return web__forbidden(r, "sending needs the download verb");
    }
    if (!web__study_visible_beyond_view(r, study)) {
        return web__forbidden(r, "break-the-glass grants view only");
    }
    const char *aet = json_string_value(json_object_get(body, "node"));
    if (aet == NULL) {
        return web__json_error(r, 400, "bad request", "send {\"node\": "
                               "\"AE title\"}");
    }
    WebJobs *j = web__jobs(r);
    if (j == NULL || j->cfg->send == NULL) {
        return web__json_error(r, 503, "unavailable", "sending to DICOM "
                               "nodes is not configured");
    }
    StoreNode node;
    AgError err;
    if (store_node_get(web__store(r), aet, &node, &err) != AG_OK) {
        return err.code == AG_ERR_NOTFOUND || err.code == AG_ERR_INVALID
                   ? web__json_error(r, 404, "not found", ag_arena_printf(
                         r->arena, "no DICOM node %.16s (see GET "
                         "/api/v1/nodes)", aet))
                   : web__json_error(r, 500, "internal error", err.msg);
    }
    UidList l = {0};
    int rc = study_uids(r, study, &l, &err);
    if (rc != AG_OK || l.n == 0) {
        ag_free(l.v);
        return rc == AG_OK ? web__json_error(r, 404, "not found",
                                             "no such study")
                           : web__json_error(r, rc == AG_ERR_LIMIT ? 413
                                                                   : 500,
                                             "cannot send", err.msg);
    }
    Job *job = job_new(r, &node, study, &l);
    ag_free(l.v);
    if (job == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    pthread_mutex_lock(&j->lock);
    if (!make_room(j)) {
        pthread_mutex_unlock(&j->lock);
        job_free(job);
        r->retry_after = 60;
        return web__json_error(r, 503, "busy", "too many jobs are waiting; "
                               "try again later");
    }
    job->id = j->next_id++;
    j->v[j->n++] = job;
    job_save(j, job);
    json_t *o = job_json(job);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->lock);
    /* DICOM Export (PS3.15 A.5.3.7), recorded as the request is granted. */
    web__audit_study(r, ag_arena_printf(r->arena, "send to %s", node.aet),
                     study, 0, NULL);
    return reply(r, 202, o);
}

/* ---- /api/v1/jobs -------------------------------------------------------- */

static enum MHD_Result list(WebRequest *r, WebJobs *j)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&j->lock);
    for (size_t i = j->n; i-- > 0;) {   /* newest first */
        if (mine(r, j->v[i])) {
            json_array_append_new(arr, job_json(j->v[i]));
        }
    }
    pthread_mutex_unlock(&j->lock);
    return reply(r, 200, json_pack("{s:o}", "jobs", arr));
}

/* Cancel (lock held): a queued job ends now, a running one after the
 * instance in flight. */
static int cancel(WebRequest *r, WebJobs *j, Job *job)
{
    if (job->state > JOB_RUNNING) {
        return AG_ERR_EXISTS;
    }
    job->cancel = true;
    ag_fmt(job->cancelled_by, sizeof job->cancelled_by, "%s", r->who.name);
    ag_fmt(job->message, sizeof job->message, "cancelled by %s",
           r->who.name);
    if (job->state == JOB_QUEUED) {
        job_finish(job, JOB_CANCELLED);
    }
    job_save(j, job);
    return AG_OK;
}

enum MHD_Result web__jobs_route(WebRequest *r, char **seg, int nseg)
{
    WebJobs *j = web__jobs(r);
    if (j == NULL) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    bool get = strcmp(r->method, "GET") == 0;
    if (nseg == 1 && get) {
        return list(r, j);
    }
    bool del = strcmp(r->method, "DELETE") == 0;
    char *end = NULL;
    long long id = nseg == 2 ? strtoll(seg[1], &end, 10) : 0;
    if (nseg != 2 || end == seg[1] || *end != '\0' || id <= 0 ||
        (!get && !del)) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    pthread_mutex_lock(&j->lock);
    Job *job = find(j, (int64_t)id);
    if (job == NULL || !mine(r, job)) {
        pthread_mutex_unlock(&j->lock);
        return web__json_error(r, 404, "not found", "no such job");
    }
    if (del && cancel(r, j, job) != AG_OK) {
        pthread_mutex_unlock(&j->lock);
        return web__json_error(r, 409, "conflict", "the job has finished");
    }
    json_t *o = job_json(job);
    pthread_mutex_unlock(&j->lock);
    return reply(r, 200, o);
}
