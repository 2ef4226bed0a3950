/*
 * search.c — audit_search(): the auditor's view (GET /api/v1/audit,
 * `agora audit list`).  One parameterised statement (SECURITY.md rule 2),
 * newest first, with a hard cap on the rows returned.
 */
#include "audit_int.h"

#include <stdio.h>
#include <string.h>

/* jansson refuses invalid UTF-8; stored text is clean, but a tampered row
 * need not be, and a search must still answer. */
static int set_text(json_t *o, const char *key, const char *s)
{
    if (s == NULL) {
        return 0;
    }
    json_t *v = json_string(s);
    if (v == NULL) {
        AgBuf b;
        ag_buf_init(&b, 0);
        if (audit__utf8_clean(&b, s, AUDIT_DETAIL_MAX) == AG_OK &&
            ag_buf_append(&b, "", 1) == AG_OK) {
            v = json_string((const char *)b.data);
        }
        ag_buf_deinit(&b);
    }
    return v != NULL ? json_object_set_new(o, key, v) : -1;
}

static json_t *record_json(const AuditRecord *r)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    char action[2] = {r->ev.action, 0};
    int bad = json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
    bad |= set_text(o, "time", r->time);
    bad |= json_object_set_new(o, "event", json_integer(r->ev.event));
    bad |= set_text(o, "event_name", audit_code_name((int)r->ev.event));
    if (r->ev.type != AUDIT_TYPE_NONE) {
        bad |= json_object_set_new(o, "type", json_integer(r->ev.type));
        bad |= set_text(o, "type_name", audit_code_name((int)r->ev.type));
    }
    bad |= set_text(o, "action", action);
    bad |= json_object_set_new(o, "outcome", json_integer(r->ev.outcome));
    bad |= set_text(o, "user", r->ev.user);
    bad |= set_text(o, "source", r->ev.source);
    bad |= set_text(o, "destination", r->ev.destination);
    bad |= set_text(o, "patient_id", r->ev.patient_id);
    bad |= set_text(o, "patient_name", r->ev.patient_name);
    bad |= set_text(o, "study_uid", r->ev.study_uid);
    bad |= set_text(o, "sop_class", r->ev.sop_class);
    if (r->ev.count != 0) {
        bad |= json_object_set_new(o, "count",
                                   json_integer((json_int_t)r->ev.count));
    }
    bad |= set_text(o, "detail", r->ev.detail);
    if (bad != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

typedef struct Query {
    char sql[1024];     /* fits every clause below at once */
    size_t len;
} Query;

static void add(Query *q, const char *clause)
{
    int n = snprintf(q->sql + q->len, sizeof q->sql - q->len, "%s", clause);
    q->len += (size_t)n;
}

/* The statement for f; parameters are numbered in the order bind_filter()
 * binds them.  Only fixed text goes into the SQL. */
static void build(const AuditFilter *f, Query *q)
{
    add(q, "SELECT " AUDIT_ROW_COLUMNS " FROM events WHERE 1");
    if (f->user != NULL) {
        add(q, " AND user = ?");
    }
    if (f->patient_id != NULL) {
        add(q, " AND patient_id = ?");
    }
    if (f->study_uid != NULL) {
        add(q, " AND study_uid = ?");
    }
    if (f->event != 0) {
        add(q, " AND (event = ? OR type = ?)");
    }
    if (f->action != 0) {
        add(q, " AND action = ?");
    }
    if (f->failures) {
        add(q, " AND outcome != 0");
    }
    if (f->since != NULL) {
        add(q, " AND time >= ?");
    }
    if (f->until != NULL) {
        add(q, " AND time <= ?");
    }
    if (f->before != 0) {
        add(q, " AND seq < ?");
    }
    add(q, " ORDER BY seq DESC LIMIT ? OFFSET ?");
}

static void bind_filter(sqlite3_stmt *st, const AuditFilter *f,
                        const char *since, const char *until)
{
    int i = 1;
    if (f->user != NULL) {
        sqlite3_bind_text(st, i++, f->user, -1, SQLITE_STATIC);
    }
    if (f->patient_id != NULL) {
        sqlite3_bind_text(st, i++, f->patient_id, -1, SQLITE_STATIC);
    }
    if (f->study_uid != NULL) {
        sqlite3_bind_text(st, i++, f->study_uid, -1, SQLITE_STATIC);
    }
    if (f->event != 0) {
        sqlite3_bind_int(st, i++, f->event);
        sqlite3_bind_int(st, i++, f->event);
    }
    if (f->action != 0) {
        char a[2] = {f->action, 0};
        sqlite3_bind_text(st, i++, a, -1, SQLITE_TRANSIENT);
    }
    if (f->since != NULL) {
        sqlite3_bind_text(st, i++, since, -1, SQLITE_STATIC);
    }
    if (f->until != NULL) {
        sqlite3_bind_text(st, i++, until, -1, SQLITE_STATIC);
    }
    if (f->before != 0) {
        sqlite3_bind_int64(st, i++, (sqlite3_int64)f->before);
    }
    uint32_t limit = f->limit == 0 ? AUDIT_SEARCH_DEFAULT
                     : f->limit > AUDIT_SEARCH_MAX ? AUDIT_SEARCH_MAX
                                                   : f->limit;
    sqlite3_bind_int64(st, i++, limit);
    sqlite3_bind_int64(st, i++, f->offset);
}

static int run(sqlite3 *db, const AuditFilter *f, const char *since,
               const char *until, json_t *arr, AgError *err)
{
    Query q = {.len = 0};
    build(f, &q);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, q.sql, -1, &st, NULL) != SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "audit.db: search: %s",
                            sqlite3_errmsg(db));
    }
    bind_filter(st, f, since, until);
    int step, rc = AG_OK;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        AuditRecord r;
        audit__row_read(st, &r);
        json_t *o = record_json(&r);
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
            break;
        }
    }
    if (rc == AG_OK && step != SQLITE_DONE) {
        rc = ag_error_set(err, AG_ERR_IO, "audit.db: search: %s",
                          sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc;
}

int audit_search(AuditLog *log, const AuditFilter *f, json_t **out,
                 AgError *err)
{
    if (log == NULL || f == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "audit: no log to search");
    }
    char since[AUDIT_TIME_SIZE] = "", until[AUDIT_TIME_SIZE] = "";
    if (f->since != NULL && audit_time_parse(f->since, false, since, err) !=
                                AG_OK) {
        return AG_ERR_INVALID;
    }
    if (f->until != NULL && audit_time_parse(f->until, true, until, err) !=
                                AG_OK) {
        return AG_ERR_INVALID;
    }
    if (f->action != 0 && strchr("CRUDE", f->action) == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "action '%c' is not C, R, "
                            "U, D or E", f->action);
    }
    AgError ferr;
    if (audit_flush(log, &ferr) != AG_OK) {
        /* Show what is committed; the failure is the writer's to report. */
        ag_log(AG_LOG_WARN, "audit", "msg=\"search before flush\" "
               "error=\"%s\"", ferr.msg);
    }
    json_t *arr = json_array();
    if (arr == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
    }
    sqlite3 *db = audit__search_db_lock(log);
    int rc = run(db, f, since, until, arr, err);
    audit__search_db_unlock(log);
    if (rc != AG_OK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return AG_OK;
}
