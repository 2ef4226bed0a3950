/*
 * audit.c — the web layer's audit records (issue 7, PS3.15 A.5): who did
 * what to which study, from which address, with what outcome.  The REST
 * handlers call the web__audit_* functions; every DICOMweb and WADO-URI
 * request is recorded when it completes (web__audit_request), from its
 * method, path and status:
 *
 *   QIDO-RS (GET .../studies|series|instances)   Query, with the query
 *   WADO-RS of instances (GET studies/{s}[...])   Instances Transferred (R)
 *   metadata, frames, rendered, bulk data         Instances Accessed (R)
 *   STOW-RS                                        Instances Transferred (C)
 *
 * A viewer fetches a study's frames one request at a time: repeated
 * Instances Accessed records of one principal for one study within a
 * minute are folded into the first (a small in-memory table), so the
 * trail says "alice viewed study X at 10:02" rather than 500 times.
 * Refusals (403) and unknown or out-of-scope studies (404) are recorded
 * with a failure outcome, never folded.
 */
#include "web_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FOLD_SLOTS 256
#define FOLD_SECONDS 60

typedef struct Fold {
    char key[160];
    int64_t until;
} Fold;

static pthread_mutex_t fold_lock = PTHREAD_MUTEX_INITIALIZER;
static Fold folds[FOLD_SLOTS];

/* True when (who, study) was recorded within the last minute. */
static bool folded(const char *who, const char *study)
{
    char key[160];
    ag_fmt(key, sizeof key, "%.64s|%.64s", who, study);
    uint64_t h = 1469598103934665603ull;
    for (const char *c = key; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    }
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&fold_lock);
    Fold *f = &folds[h % FOLD_SLOTS];
    bool hit = f->until > now && strcmp(f->key, key) == 0;
    if (!hit) {
        ag_fmt(f->key, sizeof f->key, "%s", key);
        f->until = now + FOLD_SECONDS;
    }
    pthread_mutex_unlock(&fold_lock);
    return hit;
}

typedef struct PatientRow {
    char id[65];
    char name[129];
} PatientRow;

static int patient_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    PatientRow *p = ctx;
    ag_fmt(p->id, sizeof p->id, "%s", v[0] ? v[0] : "");
    ag_fmt(p->name, sizeof p->name, "%s", v[1] ? v[1] : "");
    return 1;
}

static void record(WebRequest *r, AuditEvent *ev, const char *study)
{
    AuditLog *log = web__config(r)->audit;
    if (log == NULL) {
        return;
    }
    PatientRow p = {"", ""};
    if (study != NULL && study[0] != '\0') {
        const char *q[] = {study};
        AgError err;
        store_sql_select(web__store(r), "SELECT p.patient_id, p.name FROM"
                         " studies t JOIN patients p ON t.patient_pk = p.id"
                         " WHERE t.study_uid = ?1", q, 1, patient_row, &p,
                         &err);
        ev->study_uid = study;
        ev->patient_id = p.id[0] ? p.id : NULL;
        ev->patient_name = p.name[0] ? p.name : NULL;
    }
    if (ev->user == NULL) {
        ev->user = r->authed ? r->who.name : NULL;
    }
    ev->source = r->addr[0] ? r->addr : NULL;
    audit_record(log, ev, NULL);
}

void web__audit_auth(WebRequest *r, const char *user, const char *what,
                     int outcome, const char *detail)
{
    AuditEvent ev = {.event = AUDIT_USER_AUTHENTICATION,
                     .type = strcmp(what, "logout") == 0 ? AUDIT_TYPE_LOGOUT
                                                         : AUDIT_TYPE_LOGIN,
                     .action = 'E', .outcome = (AuditOutcome)outcome,
                     .user = user, .detail = detail};
    record(r, &ev, NULL);
}

static enum MHD_Result append_arg(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value)
{
    (void)kind;
    AgBuf *b = cls;
    if (b->len > 0) {
        ag_buf_append_str(b, "&");
    }
    ag_buf_append_str(b, key);
    if (value != NULL) {
        ag_buf_append_str(b, "=");
        ag_buf_append_str(b, value);
    }
    return MHD_YES;
}

/* The query string as sent (decoded), for Query records. */
static char *query_text(WebRequest *r)
{
    AgBuf b;
    ag_buf_init(&b, 8192);
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, append_arg, &b);
    ag_buf_append(&b, "", 1);
    char *s = ag_arena_strdup(r->arena, b.data ? (const char *)b.data : "");
    ag_buf_deinit(&b);
    return s;
}

void web__audit_query(WebRequest *r, const char *what, const char *keys)
{
    AuditEvent ev = {.event = AUDIT_QUERY, .action = 'E',
                     .detail = ag_arena_printf(r->arena, "%s %s?%s",
                                               r->method, what,
                                               keys ? keys : query_text(r))};
    record(r, &ev, NULL);
}

void web__audit_study(WebRequest *r, const char *what, const char *study,
                      int outcome, const char *detail)
{
    AuditEvent ev = {.outcome = (AuditOutcome)outcome,
                     .detail = ag_arena_printf(r->arena, "%s%s%s", what,
                                               detail ? ": " : "",
                                               detail ? detail : "")};
    if (strcmp(what, "delete") == 0) {
        ev.event = AUDIT_STUDY_DELETED;
        ev.action = 'D';
    } else if (strncmp(what, "send", 4) == 0) {
        ev.event = AUDIT_EXPORT;   /* to another node (A.5.3.7) */
        ev.action = 'R';
    } else if (strcmp(what, "break-glass") == 0) {
        ev.event = AUDIT_SECURITY_ALERT;
        ev.type = AUDIT_TYPE_EMERGENCY_OVERRIDE_STARTED;
        ev.action = 'E';
    } else if (strcmp(what, "detail") == 0 ||
               strcmp(what, "share link opened") == 0) {
        ev.event = AUDIT_INSTANCES_ACCESSED;
        ev.action = 'R';
    } else {
        /* share, assign, unassign */
        ev.event = AUDIT_SECURITY_ALERT;
        ev.type = AUDIT_TYPE_OBJECT_SECURITY_ATTRIBUTES_CHANGED;
        ev.action = 'U';
    }
    record(r, &ev, study);
}

void web__audit_config(WebRequest *r, const char *what, const char *detail)
{
    AuditEvent ev = {.event = AUDIT_SECURITY_ALERT, .action = 'U',
                     .detail = ag_arena_printf(r->arena, "%s%s%s", what,
                                               detail ? ": " : "",
                                               detail ? detail : "")};
    if (strncmp(what, "user", 4) == 0 || strncmp(what, "token", 5) == 0) {
        ev.type = AUDIT_TYPE_USER_SECURITY_ATTRIBUTES_CHANGED;
    } else if (strncmp(what, "node", 4) == 0) {
        ev.type = AUDIT_TYPE_NETWORK_CONFIGURATION;
    } else {
        ev.type = AUDIT_TYPE_SECURITY_CONFIGURATION;
    }
    record(r, &ev, NULL);
}

void web__audit_order(WebRequest *r, char action, const char *patient_id,
                      const char *patient_name, int outcome,
                      const char *detail)
{
    /* A worklist item has a patient but no study in the archive yet, so
     * the patient goes in directly rather than through record()'s
     * study look-up. */
    AuditEvent ev = {.event = AUDIT_ORDER_RECORD, .action = action,
                     .outcome = (AuditOutcome)outcome,
                     .patient_id = patient_id, .patient_name = patient_name,
                     .detail = detail};
    record(r, &ev, NULL);
}

static const char *arg(WebRequest *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn,
                                                MHD_GET_ARGUMENT_KIND, name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

enum MHD_Result web__audit_search(WebRequest *r)
{
    AuditLog *log = web__config(r)->audit;
    if (log == NULL) {
        return web__json_error(r, 404, "not found", "no audit trail");
    }
    AuditFilter f = {.user = arg(r, "user"), .patient_id = arg(r, "patient"),
                     .study_uid = arg(r, "study"), .since = arg(r, "since"),
                     .until = arg(r, "until")};
    const char *v;
    if ((v = arg(r, "event")) != NULL) {
        f.event = atoi(v);
    }
    if ((v = arg(r, "action")) != NULL) {
        f.action = v[0];
    }
    if ((v = arg(r, "limit")) != NULL) {
        f.limit = (uint32_t)strtoul(v, NULL, 10);
    }
    if ((v = arg(r, "offset")) != NULL) {
        f.offset = (uint32_t)strtoul(v, NULL, 10);
    }
    f.failures = arg(r, "failures") != NULL;
    json_t *out = NULL;
    AgError err;
    if (audit_search(log, &f, &out, &err) != AG_OK) {
        return web__json_error(r, err.code == AG_ERR_INVALID ? 400 : 500,
                               err.code == AG_ERR_INVALID ? "bad request"
                                                          : "internal error",
                               err.msg);
    }
    AuditEvent ev = {.event = AUDIT_LOG_USED, .action = 'R',
                     .detail = query_text(r)};
    record(r, &ev, f.study_uid);
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (s == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    enum MHD_Result ret = web__send(r, 200, "application/json", s, strlen(s));
    free(s);
    return ret;
}

/* ---- DICOMweb and WADO-URI requests, recorded as they complete -------- */

static bool is_level(const char *s)
{
    return strcmp(s, "studies") == 0 || strcmp(s, "series") == 0 ||
           strcmp(s, "instances") == 0;
}

void web__audit_request(WebRequest *r)
{
    if (web__config(r)->audit == NULL || r->url == NULL ||
        (!r->authed && r->status == 401)) {
        return;
    }
    bool dw = strncmp(r->url, "/dicom-web/", 11) == 0;
    bool uri = strcmp(r->url, "/wado") == 0;
    if (strcmp(r->method, "OPTIONS") == 0 ||
        strcmp(r->url, "/dicom-web/capabilities") == 0) {
        return;   /* capabilities and CORS preflights touch no data */
    }
    if (!dw && !uri) {
        return;
    }
    char *path = ag_arena_strdup(r->arena, r->url + (dw ? 11 : 1));
    char *seg[16];
    int n = 0;
    for (char *save = NULL, *t = path ? strtok_r(path, "/", &save) : NULL;
         t != NULL && n < 16; t = strtok_r(NULL, "/", &save)) {
        seg[n++] = t;
    }
    const char *study = uri ? arg(r, "studyUID")
                            : n >= 2 && strcmp(seg[0], "studies") == 0
                                  ? seg[1] : NULL;
    AuditOutcome outcome = r->status < 400 ? AUDIT_SUCCESS
                           : r->status < 500 ? AUDIT_MINOR_FAILURE
                                             : AUDIT_SERIOUS_FAILURE;
    AuditEvent ev = {.outcome = outcome};
    if (strcmp(r->method, "POST") == 0) {
        ev.event = AUDIT_INSTANCES_TRANSFERRED;
        ev.action = 'C';
        ev.detail = "STOW-RS";
    } else if (n >= 1 && is_level(seg[n - 1]) && !uri) {
        ev.event = AUDIT_QUERY;
        ev.action = 'E';
        ev.detail = ag_arena_printf(r->arena, "QIDO-RS %s?%s", r->url,
                                    query_text(r));
    } else if (!uri && (n == 2 || (n == 4 && strcmp(seg[2], "series") == 0) ||
                        (n == 6 && strcmp(seg[4], "instances") == 0))) {
        ev.event = AUDIT_INSTANCES_TRANSFERRED;
        ev.action = 'R';
        ev.detail = ag_arena_printf(r->arena, "WADO-RS %s", r->url);
    } else {
        ev.event = AUDIT_INSTANCES_ACCESSED;
        ev.action = 'R';
        ev.detail = ag_arena_printf(r->arena, "%s %s", uri ? "WADO-URI"
                                                           : "WADO-RS",
                                    r->url);
        if (outcome == AUDIT_SUCCESS && study != NULL &&
            folded(r->authed ? r->who.name : "", study)) {
            return;
        }
    }
    record(r, &ev, study);
}
