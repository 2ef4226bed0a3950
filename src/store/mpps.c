/*
 * mpps.c — Modality Performed Procedure Step (store.h; PS3.4 F.7): the
 * steps modalities report with N-CREATE and N-SET, kept as DICOM JSON in
 * the index's mpps table, and the worklist items they name following them
 * (worklist.c, store__worklist_follow).
 *
 * A step is created IN PROGRESS and may change until it is COMPLETED or
 * DISCONTINUED; after that it is final and an N-SET is refused (F.7.2.2.2:
 * "Performed Procedure Step Object may no longer be updated").  Failing to
 * update the worklist never fails the step itself: the modality's report
 * is kept, and the failure logged.
 */
#include "store_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MPPS_JSON_MAX ((size_t)16 << 20)   /* a long Performed Series Seq */

#define TAG_STUDY_UID 0x0020000du
#define TAG_SPS_ID 0x00400009u
#define TAG_PPS_START_DATE 0x00400244u
#define TAG_PPS_START_TIME 0x00400245u
#define TAG_PPS_END_DATE 0x00400250u
#define TAG_PPS_END_TIME 0x00400251u
#define TAG_PPS_STATUS 0x00400252u
#define TAG_SSA_SEQ 0x00400270u     /* Scheduled Step Attributes Sequence */

static const char *text(const DicomDataset *ds, uint32_t tag, AgArena *a)
{
    const char *v = dicom_get_string(ds, tag, a);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static bool final_status(const char *st)
{
    return strcmp(st, "COMPLETED") == 0 || strcmp(st, "DISCONTINUED") == 0;
}

static int invalid(uint32_t *bad_tag, uint32_t tag, AgError *err,
                   const char *what)
{
    if (bad_tag != NULL) {
        *bad_tag = tag;
    }
    return ag_error_set(err, AG_ERR_INVALID, "%s", what);
}

/* Dates and times the step carries must be DA and TM (PS3.5 §6.2). */
static int check_times(const DicomDataset *ds, uint32_t *bad_tag,
                       AgArena *a, AgError *err)
{
    static const uint32_t DA[] = {TAG_PPS_START_DATE, TAG_PPS_END_DATE};
    static const uint32_t TM[] = {TAG_PPS_START_TIME, TAG_PPS_END_TIME};
    for (int i = 0; i < 2; i++) {
        const char *d = text(ds, DA[i], a), *t = text(ds, TM[i], a);
        if (d != NULL && !store__valid_da(d)) {
            return invalid(bad_tag, DA[i], err, "a performed procedure step "
                           "date is not YYYYMMDD");
        }
        if (t != NULL && !store__valid_tm(t)) {
            return invalid(bad_tag, TM[i], err, "a performed procedure step "
                           "time is not HHMM[SS[.FFFFFF]]");
        }
    }
    return AG_OK;
}

/* F.7.2.1: a new step is IN PROGRESS and names the scheduled steps (or,
 * unscheduled, at least the study) it performs. */
static int check_new(const char *uid, const DicomDataset *ds,
                     uint32_t *bad_tag, AgArena *a, AgError *err)
{
    if (uid == NULL || !dicom_uid_valid(uid, strlen(uid))) {
        return invalid(bad_tag, 0, err, "the Affected SOP Instance UID is "
                       "not a valid UID");
    }
    const char *st = text(ds, TAG_PPS_STATUS, a);
    if (st == NULL || strcmp(st, "IN PROGRESS") != 0) {
        return invalid(bad_tag, TAG_PPS_STATUS, err, "Performed Procedure "
                       "Step Status (0040,0252) must be IN PROGRESS");
    }
    const DicomElement *sq = dicom_dataset_find(ds, TAG_SSA_SEQ);
    if (sq == NULL || sq->vr != DICOM_VR_SQ || sq->nitems == 0) {
        return invalid(bad_tag, TAG_SSA_SEQ, err, "Scheduled Step Attributes "
                       "Sequence (0040,0270) is required");
    }
    for (uint32_t i = 0; i < sq->nitems; i++) {
        const char *study = text(sq->items[i], TAG_STUDY_UID, a);
        if (study == NULL || !dicom_uid_valid(study, strlen(study))) {
            return invalid(bad_tag, TAG_SSA_SEQ, err, "an item of (0040,0270) "
                           "lacks a valid Study Instance UID");
        }
    }
    return check_times(ds, bad_tag, a, err);
}

/* ds as DICOM JSON text, NUL-terminated, in out. */
static int to_json(const DicomDataset *ds, AgBuf *out, AgError *err)
{
    DicomJsonOptions jo = {0};
    int rc = dicom_json_write(ds, &jo, dicom_sink_buf, out, err);
    if (rc == AG_OK) {
        rc = ag_buf_append(out, "", 1);
    }
    return rc == AG_ERR_LIMIT ? ag_error_set(err, rc, "performed procedure "
                                             "step larger than %zu bytes",
                                             MPPS_JSON_MAX)
                              : rc;
}

/* The worklist items of the step's scheduled steps take status.  A
 * failure is logged: the step is kept whatever the worklist does. */
static void follow(Store *s, const DicomDataset *ds, const StoreScope *scope,
                   const char *status, AgArena *a)
{
    const DicomElement *sq = dicom_dataset_find(ds, TAG_SSA_SEQ);
    for (uint32_t i = 0; sq != NULL && sq->vr == DICOM_VR_SQ &&
                         i < sq->nitems; i++) {
        const char *study = text(sq->items[i], TAG_STUDY_UID, a);
        const char *sps = text(sq->items[i], TAG_SPS_ID, a);
        AgError e;
        if (study != NULL && sps != NULL &&
            store__worklist_follow(s, scope, study, sps, status, NULL, &e) !=
                AG_OK) {
            ag_log(AG_LOG_WARN, "store", "worklist step %s of %s not set to "
                   "%s: %s", sps, study, status, e.msg);
        }
    }
}

static const char *first_study(const DicomDataset *ds, AgArena *a)
{
    const DicomElement *sq = dicom_dataset_find(ds, TAG_SSA_SEQ);
    const char *v = sq != NULL && sq->vr == DICOM_VR_SQ && sq->nitems > 0
                        ? text(sq->items[0], TAG_STUDY_UID, a) : NULL;
    return v != NULL ? v : "";
}

int store_mpps_create(Store *s, char uid[65], const DicomDataset *ds,
                      const StoreScope *scope, const char *calling_ae,
                      uint32_t *bad_tag, AgError *err)
{
    if (uid[0] == '\0') {
        store__new_uid(uid);
    }
    AgArena *a = ag_arena_create(64 << 10);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    AgBuf json;
    ag_buf_init(&json, MPPS_JSON_MAX);
    int rc = check_new(uid, ds, bad_tag, a, err);
    if (rc == AG_OK) {
        rc = to_json(ds, &json, err);
    }
    if (rc == AG_OK) {
        char now[24];
        ag_fmt(now, sizeof now, "%" PRId64, (int64_t)time(NULL));
        const char *p[] = {uid, first_study(ds, a), calling_ae,
                           (const char *)json.data, now};
        rc = store_sql_exec(s, "INSERT INTO mpps (uid, status, study_uid,"
                            " calling_ae, json, created_at, updated_at)"
                            " VALUES (?1, 'IN PROGRESS', ?2, ?3, ?4, ?5, ?5)",
                            p, 5, NULL, NULL, err);
        if (rc == AG_ERR_EXISTS) {
            ag_error_set(err, rc, "performed procedure step %s exists", uid);
        }
    }
    if (rc == AG_OK) {
        follow(s, ds, scope, "STARTED", a);
    }
    ag_buf_deinit(&json);
    ag_arena_destroy(a);
    return rc;
}

/* ---- N-SET ---------------------------------------------------------------- */

typedef struct Row {
    char status[32];
    char *json;       /* heap */
} Row;

static int row_fn(void *ctx, int ncol, const char *const *vals)
{
    Row *r = ctx;
    if (ncol >= 2 && vals[0] != NULL && vals[1] != NULL) {
        ag_fmt(r->status, sizeof r->status, "%s", vals[0]);
        r->json = ag_strdup(vals[1]);
    }
    return 1;
}

/* The stored step with mods applied (their elements replace the step's,
 * F.7.2.2), in a. */
static int merge(const char *stored, const DicomDataset *mods, AgArena *a,
                 DicomDataset **out, AgError *err)
{
    AgBuf mj;
    ag_buf_init(&mj, MPPS_JSON_MAX);
    DicomDataset *ds = NULL, *m = NULL;
    int rc = dicom_json_read(stored, strlen(stored), a, &ds, err);
    if (rc == AG_OK) {
        rc = to_json(mods, &mj, err);
    }
    if (rc == AG_OK) {
        /* Read back into a: the elements then belong to ds's arena. */
        rc = dicom_json_read((const char *)mj.data, mj.len - 1, a, &m, err);
    }
    size_t n = rc == AG_OK ? dicom_dataset_count(m) : 0;
    for (size_t i = 0; i < n && rc == AG_OK; i++) {
        const DicomElement *el = dicom_dataset_at(m, i);
        if (DICOM_TAG_GROUP(el->tag) > 0x0002) {
            rc = dicom_dataset_put(ds, el, NULL);
        }
    }
    ag_buf_deinit(&mj);
    *out = ds;
    return rc;
}

int store_mpps_set(Store *s, const char *uid, const DicomDataset *mods,
                   const StoreScope *scope, uint32_t *bad_tag,
                   AgError *err)
{
    Row row = {{0}, NULL};
    const char *p1[] = {uid};
    int rc = store_sql_select(s, "SELECT status, json FROM mpps WHERE uid ="
                              " ?1", p1, 1, row_fn, &row, err);
    if (rc == AG_OK && row.json == NULL) {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no performed procedure step "
                          "%s", uid);
    }
    if (rc == AG_OK && final_status(row.status)) {
        rc = ag_error_set(err, AG_ERR_DENIED, "performed procedure step %s is "
                          "%s and may no longer be updated", uid, row.status);
    }
    AgArena *a = rc == AG_OK ? ag_arena_create(4 * MPPS_JSON_MAX) : NULL;
    if (rc == AG_OK && a == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    const char *st = rc == AG_OK ? text(mods, TAG_PPS_STATUS, a) : NULL;
    if (st != NULL && strcmp(st, "IN PROGRESS") != 0 && !final_status(st)) {
        rc = invalid(bad_tag, TAG_PPS_STATUS, err, "Performed Procedure Step "
                     "Status (0040,0252) must be IN PROGRESS, COMPLETED or "
                     "DISCONTINUED");
    }
    DicomDataset *ds = NULL;
    AgBuf json;
    ag_buf_init(&json, MPPS_JSON_MAX);
    if (rc == AG_OK) {
        rc = check_times(mods, bad_tag, a, err);
    }
    if (rc == AG_OK) {
        rc = merge(row.json, mods, a, &ds, err);
    }
    if (rc == AG_OK) {
        rc = to_json(ds, &json, err);
    }
    if (rc == AG_OK) {
        char now[24];
        ag_fmt(now, sizeof now, "%" PRId64, (int64_t)time(NULL));
        const char *p[] = {st ? st : row.status, (const char *)json.data, now,
                           uid, row.status};
        int64_t n = 0;
        /* Only from the status read: two N-SETs at once do not both win. */
        rc = store_sql_exec(s, "UPDATE mpps SET status = ?1, json = ?2,"
                            " updated_at = ?3 WHERE uid = ?4 AND status = ?5",
                            p, 5, &n, NULL, err);
        if (rc == AG_OK && n == 0) {
            rc = ag_error_set(err, AG_ERR_DENIED, "performed procedure step "
                              "%s changed meanwhile", uid);
        }
    }
    if (rc == AG_OK && st != NULL && final_status(st)) {
        follow(s, ds, scope, st, a);
    }
    ag_buf_deinit(&json);
    ag_arena_destroy(a);
    ag_free(row.json);
    return rc;
}

/* ---- listing ---------------------------------------------------------------- */

typedef struct ListRun {
    int (*fn)(void *ctx, const StoreMpps *m);
    void *ctx;
} ListRun;

static int list_row(void *ctx, int ncol, const char *const *v)
{
    ListRun *r = ctx;
    if (ncol < 7 || v[0] == NULL || v[1] == NULL || v[4] == NULL) {
        return 0;
    }
    StoreMpps m = {.uid = v[0], .status = v[1],
                   .study_uid = v[2] ? v[2] : "",
                   .calling_ae = v[3] ? v[3] : "", .json = v[4],
                   .created_at = v[5] ? strtoll(v[5], NULL, 10) : 0,
                   .updated_at = v[6] ? strtoll(v[6], NULL, 10) : 0};
    return r->fn(r->ctx, &m);
}

int store_mpps_list(Store *s, const StoreScope *scope,
                    int (*fn)(void *ctx, const StoreMpps *m), void *ctx,
                    AgError *err)
{
    if (!scope->all || scope->only_study != NULL) {
        return AG_OK;   /* steps belong to no department: the whole team's */
    }
    ListRun r = {.fn = fn, .ctx = ctx};
    return store_sql_select(s, "SELECT uid, status, study_uid, calling_ae,"
                            " json, created_at, updated_at FROM mpps"
                            " ORDER BY created_at DESC, uid", NULL, 0,
                            list_row, &r, err);
}
