/*
 * expiry.c — agora serve's worklist expiry (expiry.h).
 */
#include "cli/expiry.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define EXPIRY_PERIOD_S 3600

struct WorklistExpiry {
    Store *store;
    AuditLog *audit;
    unsigned keep_days;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;        /* stop became true */
    bool stop;
};

/* The local date keep_days days before today, as YYYYMMDD (DA). */
static void cutoff_date(unsigned keep_days, char out[9])
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    tm.tm_mday -= (int)keep_days;   /* mktime normalises */
    tm.tm_hour = 12;                /* clear of daylight-saving edges */
    tm.tm_isdst = -1;
    mktime(&tm);
    strftime(out, 9, "%Y%m%d", &tm);
}

static void expire_once(WorklistExpiry *e)
{
    char before[9];
    cutoff_date(e->keep_days, before);
    uint64_t n = 0;
    AgError err;
    int rc = store_worklist_purge(e->store, before, &n, &err);
    if (rc != AG_OK) {
        ag_log(AG_LOG_ERROR, "worklist", "expiry: %s", err.msg);
    }
    if (rc == AG_OK && n == 0) {
        return;
    }
    char detail[256];
    if (rc == AG_OK) {
        snprintf(detail, sizeof detail, "worklist expiry: %llu item(s) "
                 "scheduled before %s removed (kept %u days)",
                 (unsigned long long)n, before, e->keep_days);
        ag_log(AG_LOG_INFO, "worklist", "%s", detail);
    } else {
        ag_fmt(detail, sizeof detail, "worklist expiry of the items "
               "scheduled before %s failed: %.160s", before, err.msg);
    }
    AuditEvent ev = {.event = AUDIT_ORDER_RECORD, .action = 'D',
                     .outcome = rc == AG_OK ? AUDIT_SUCCESS
                                            : AUDIT_SERIOUS_FAILURE,
                     .user = "agora", .detail = detail};
    if (e->audit != NULL && audit_record(e->audit, &ev, &err) != AG_OK) {
        ag_log(AG_LOG_ERROR, "worklist", "expiry: audit: %s", err.msg);
    }
}

static void *expiry_main(void *arg)
{
    WorklistExpiry *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stop) {
        pthread_mutex_unlock(&e->lock);
        expire_once(e);
        pthread_mutex_lock(&e->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += EXPIRY_PERIOD_S;
        while (!e->stop &&
               pthread_cond_timedwait(&e->cv, &e->lock, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int worklist_expiry_start(Store *s, AuditLog *audit, unsigned keep_days,
                          WorklistExpiry **out, AgError *err)
{
    *out = NULL;
    if (keep_days == 0) {
        return AG_OK;
    }
    WorklistExpiry *e = ag_calloc(1, sizeof *e);
    if (e == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    e->store = s;
    e->audit = audit;
    e->keep_days = keep_days;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->thread, NULL, expiry_main, e) != 0) {
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cv);
        ag_free(e);
        return ag_error_set(err, AG_ERR_IO, "cannot start the worklist "
                            "expiry");
    }
    *out = e;
    return AG_OK;
}

void worklist_expiry_stop(WorklistExpiry *e)
{
    if (e == NULL) {
        return;
    }
    pthread_mutex_lock(&e->lock);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cv);
    ag_free(e);
}
