/*
 * worklist.c — the modality worklist (store.h): scheduled procedure steps
 * that modalities fetch with C-FIND on the Modality Worklist Information
 * Model (PS3.4 K.6).
 *
 * An item is kept whole as DICOM JSON in the index's worklist table, with
 * copies of the keys modalities filter on in their own columns (scheduled
 * date and time, modality, station AE title, patient ID, accession).  A
 * C-FIND narrows the rows with those columns where a key is a plain value
 * or a date range, then matches every key against each candidate with the
 * same code as C-FIND and QIDO-RS on stored instances (query.c), so the
 * two never disagree on what matches.  Worklists are small (a department's
 * day is a few hundred steps): parsing each candidate is cheap.
 */
#include "store_int.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define WL_JSON_MAX ((size_t)1 << 20)   /* one item: text, no bulk data */
#define WL_MATCH_MAX 1000
#define WL_SCAN_MAX 20000               /* candidate rows per C-FIND */
#define WL_PARAMS_MAX (8 + STORE_SCOPE_MAX_DEPTS)

#define TAG_PATIENT_NAME 0x00100010u
#define TAG_PATIENT_ID 0x00100020u
#define TAG_ACCESSION 0x00080050u
#define TAG_STUDY_UID 0x0020000du
#define TAG_MODALITY 0x00080060u
#define TAG_SPS_SEQ 0x00400100u
#define TAG_STATION_AET 0x00400001u
#define TAG_SPS_DATE 0x00400002u
#define TAG_SPS_TIME 0x00400003u
#define TAG_SPS_ID 0x00400009u
#define TAG_REQ_PROC_ID 0x00401001u
#define TAG_SPS_STATUS 0x00400020u

/* ---- checking an item ----------------------------------------------------- */

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

static int two(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* DA: YYYYMMDD (PS3.5 §6.2). */
bool store__valid_da(const char *s)
{
    if (s == NULL || strlen(s) != 8 || !digits(s, 8)) {
        return false;
    }
    int m = two(s + 4), d = two(s + 6);
    return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

/* TM: HH[MM[SS[.F{1,6}]]] (PS3.5 §6.2). */
bool store__valid_tm(const char *s)
{
    if (s == NULL) {
        return false;
    }
    const char *dot = strchr(s, '.');
    size_t n = dot ? (size_t)(dot - s) : strlen(s);
    if ((n != 2 && n != 4 && n != 6) || !digits(s, n) || two(s) > 23 ||
        (n >= 4 && two(s + 2) > 59) || (n == 6 && two(s + 4) > 60)) {
        return false;
    }
    if (dot == NULL) {
        return true;
    }
    size_t f = strlen(dot + 1);
    return n == 6 && f >= 1 && f <= 6 && digits(dot + 1, f);
}

static const char *text(const DicomDataset *ds, uint32_t tag, AgArena *a)
{
    const char *v = dicom_get_string(ds, tag, a);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Scheduled Procedure Step Status (0040,0020), PS3.3 C.4.10: defined
 * terms.  A step that is done no longer belongs on a modality's list. */
static const char *const STATUSES[] = {
    "SCHEDULED", "ARRIVED", "READY", "STARTED", "DEPARTED",
    "COMPLETED", "DISCONTINUED", "CANCELED", NULL,
};
#define DONE_SQL "('COMPLETED', 'DISCONTINUED', 'CANCELED')"

static bool valid_status(const char *v)
{
    for (int i = 0; v != NULL && STATUSES[i] != NULL; i++) {
        if (strcmp(v, STATUSES[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* The one Scheduled Procedure Step item (K.6.1.2.2), or NULL. */
static DicomDataset *step_of(const DicomDataset *ds)
{
    const DicomElement *sq = dicom_dataset_find(ds, TAG_SPS_SEQ);
    if (sq == NULL || sq->vr != DICOM_VR_SQ || sq->nitems != 1) {
        return NULL;
    }
    return sq->items[0];
}

/* The Type 1 attributes a modality relies on (PS3.4 Table K.6-1). */
static int check_item(const DicomDataset *ds, AgArena *a, AgError *err)
{
    DicomDataset *sps = step_of(ds);
    const char *uid = text(ds, TAG_STUDY_UID, a);
    if (text(ds, TAG_PATIENT_NAME, a) == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "Patient's Name (0010,0010) "
                            "is required");
    }
    if (text(ds, TAG_PATIENT_ID, a) == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "Patient ID (0010,0020) is "
                            "required");
    }
    if (uid != NULL && !dicom_uid_valid(uid, strlen(uid))) {
        return ag_error_set(err, AG_ERR_INVALID, "Study Instance UID "
                            "(0020,000D) is not a valid UID");
    }
    if (sps == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "Scheduled Procedure Step "
                            "Sequence (0040,0100) with exactly one item is "
                            "required");
    }
    if (text(sps, TAG_MODALITY, a) == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "Modality (0008,0060) is "
                            "required in the scheduled step");
    }
    const char *aet = text(sps, TAG_STATION_AET, a);
    if (aet == NULL || !store__valid_aet(aet)) {
        return ag_error_set(err, AG_ERR_INVALID, "Scheduled Station AE Title "
                            "(0040,0001) is required (1-16 characters)");
    }
    if (!store__valid_da(text(sps, TAG_SPS_DATE, a))) {
        return ag_error_set(err, AG_ERR_INVALID, "Scheduled Procedure Step "
                            "Start Date (0040,0002) is required (YYYYMMDD)");
    }
    if (!store__valid_tm(text(sps, TAG_SPS_TIME, a))) {
        return ag_error_set(err, AG_ERR_INVALID, "Scheduled Procedure Step "
                            "Start Time (0040,0003) is required "
                            "(HHMM[SS[.FFFFFF]])");
    }
    const char *st = text(sps, TAG_SPS_STATUS, a);
    if (st != NULL && !valid_status(st)) {
        return ag_error_set(err, AG_ERR_INVALID, "Scheduled Procedure Step "
                            "Status (0040,0020) is not a defined term "
                            "(SCHEDULED, STARTED, COMPLETED, ...)");
    }
    return AG_OK;
}

/* A UID under 2.25 from 128 random bits (PS3.5 §B.2). */
void store__new_uid(char out[64])
{
    unsigned __int128 v = 0;
    randombytes_buf(&v, sizeof v);
    char d[40];
    int n = 0;
    do {
        d[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0);
    int k = snprintf(out, 64, "2.25.");
    while (n > 0) {
        out[k++] = d[--n];
    }
    out[k] = '\0';
}

/* An SH identifier: "WL" and 12 hex digits. */
static void new_id(char out[15])
{
    uint8_t r[6];
    randombytes_buf(r, sizeof r);
    snprintf(out, 15, "WL%02X%02X%02X%02X%02X%02X", r[0], r[1], r[2], r[3],
             r[4], r[5]);
}

/* Make up the identifiers the order did not carry (all Type 1 in K.6-1:
 * the modality puts the Study Instance UID into every image it makes). */
static int fill_ids(DicomDataset *ds, AgArena *a, AgError *err)
{
    DicomDataset *sps = step_of(ds);
    char uid[64], id[15];
    int rc = AG_OK;
    if (text(ds, TAG_STUDY_UID, a) == NULL) {
        store__new_uid(uid);
        rc = dicom_set_string(ds, TAG_STUDY_UID, DICOM_VR_UI, uid, err);
    }
    if (rc == AG_OK && text(ds, TAG_REQ_PROC_ID, a) == NULL) {
        new_id(id);
        rc = dicom_set_string(ds, TAG_REQ_PROC_ID, DICOM_VR_SH, id, err);
    }
    if (rc == AG_OK && text(sps, TAG_SPS_ID, a) == NULL) {
        new_id(id);
        rc = dicom_set_string(sps, TAG_SPS_ID, DICOM_VR_SH, id, err);
    }
    if (rc == AG_OK && text(sps, TAG_SPS_STATUS, a) == NULL) {
        rc = dicom_set_string(sps, TAG_SPS_STATUS, DICOM_VR_CS, "SCHEDULED",
                              err);
    }
    return rc;
}

/* ---- add, get, list, remove ------------------------------------------------ */

static int first_value(void *ctx, int ncol, const char *const *vals)
{
    if (ncol > 0 && vals[0] != NULL) {
        ag_fmt(ctx, 32, "%s", vals[0]);
    }
    return 1;
}

/* The department's id as text into id[32]; "" for none. */
static int dept_id(Store *s, const char *name, char id[32], AgError *err)
{
    id[0] = '\0';
    if (name == NULL || name[0] == '\0') {
        return AG_OK;
    }
    const char *p[] = {name};
    int rc = store_sql_select(s, "SELECT id FROM departments WHERE name = ?1",
                              p, 1, first_value, id, err);
    if (rc == AG_OK && id[0] == '\0') {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no department %s", name);
    }
    return rc;
}

static int insert(Store *s, const DicomDataset *ds, const char *dept,
                  const char *json, AgArena *a, int64_t *id, AgError *err)
{
    const DicomDataset *sps = step_of(ds);
    char now[24];
    ag_fmt(now, sizeof now, "%" PRId64, (int64_t)time(NULL));
    const char *p[] = {
        text(sps, TAG_SPS_DATE, a), text(sps, TAG_SPS_TIME, a),
        text(sps, TAG_MODALITY, a), text(sps, TAG_STATION_AET, a),
        text(ds, TAG_PATIENT_ID, a), text(ds, TAG_ACCESSION, a),
        text(ds, TAG_STUDY_UID, a), dept[0] != '\0' ? dept : NULL,
        json, now, text(sps, TAG_SPS_STATUS, a),
    };
    return store_sql_exec(s, "INSERT INTO worklist (start_date, start_time,"
                          " modality, station_aet, patient_id, accession,"
                          " study_uid, dept_pk, json, created_at, status)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
                          " ?11)", p, 11, NULL, id, err);
}

int store_worklist_add(Store *s, const char *json, size_t len,
                       const char *department, int64_t *id, AgError *err)
{
    if (len > WL_JSON_MAX) {
        return ag_error_set(err, AG_ERR_INVALID, "worklist item larger than "
                            "%zu bytes", WL_JSON_MAX);
    }
    char dept[32];
    int rc = dept_id(s, department, dept, err);
    if (rc != AG_OK) {
        return rc;
    }
    AgArena *a = ag_arena_create(4 * WL_JSON_MAX + (64 << 10));
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomDataset *ds = NULL;
    AgBuf out;
    ag_buf_init(&out, 2 * WL_JSON_MAX);
    rc = dicom_json_read(json, len, a, &ds, err);
    if (rc != AG_OK) {
        char why[sizeof err->msg];
        ag_fmt(why, sizeof why, "%s", err->msg);
        rc = ag_error_set(err, AG_ERR_INVALID, "not DICOM JSON (PS3.18 F): %s",
                          why);
    }
    if (rc == AG_OK) {
        rc = check_item(ds, a, err);
    }
    if (rc == AG_OK) {
        rc = fill_ids(ds, a, err);
    }
    if (rc == AG_OK) {
        DicomJsonOptions jo = {0};
        rc = dicom_json_write(ds, &jo, dicom_sink_buf, &out, err);
    }
    if (rc == AG_OK) {
        rc = ag_buf_append(&out, "", 1);   /* NUL: the row's text */
    }
    int64_t got = 0;
    if (rc == AG_OK) {
        rc = insert(s, ds, dept, (const char *)out.data, a, &got, err);
    }
    if (rc == AG_OK && id != NULL) {
        *id = got;
    }
    ag_buf_deinit(&out);
    ag_arena_destroy(a);
    return rc;
}

/*
 * The rows a scope sees, as a condition on w (PS3.4 has no departments;
 * this is DESIGN.md §5): archive-wide callers all; callers limited to
 * departments their departments' items; a share link none.
 */
static void scope_sql(AgBuf *sql, const StoreScope *sc, const char **p,
                      int *np, AgArena *a)
{
    if (sc->all && sc->only_study == NULL) {
        ag_buf_printf(sql, " AND 1");
        return;
    }
    if (sc->only_study != NULL || sc->ndepts == 0) {
        ag_buf_printf(sql, " AND 0");
        return;
    }
    ag_buf_printf(sql, " AND w.dept_pk IN (");
    for (uint32_t i = 0; i < sc->ndepts && i < STORE_SCOPE_MAX_DEPTS; i++) {
        p[(*np)++] = ag_arena_printf(a, "%" PRId64, sc->depts[i]);
        ag_buf_printf(sql, "%s?%d", i ? ", " : "", *np);
    }
    ag_buf_printf(sql, ")");
}

#define ITEM_COLS "SELECT w.id, w.json, coalesce(d.name, ''), w.created_at" \
                  " FROM worklist w LEFT JOIN departments d"                \
                  " ON d.id = w.dept_pk WHERE 1"
#define ITEM_ORDER " ORDER BY w.start_date, w.start_time, w.id"

typedef struct ItemRun {
    int (*fn)(void *ctx, const StoreWorklistItem *it);
    void *ctx;
    bool found;
} ItemRun;

static int item_row(void *ctx, int ncol, const char *const *vals)
{
    ItemRun *r = ctx;
    if (ncol < 4 || vals[0] == NULL || vals[1] == NULL) {
        return 0;
    }
    StoreWorklistItem it = {
        .id = strtoll(vals[0], NULL, 10), .json = vals[1],
        .department = vals[2] ? vals[2] : "",
        .created_at = vals[3] ? strtoll(vals[3], NULL, 10) : 0,
    };
    r->found = true;
    return r->fn(r->ctx, &it);
}

/* Run ITEM_COLS + where (with its params) + the scope + ITEM_ORDER. */
static int select_items(Store *s, const StoreScope *scope, const char *where,
                        const char **p, int np, ItemRun *r, AgError *err)
{
    AgArena *a = ag_arena_create(64 << 10);
    AgBuf sql;
    ag_buf_init(&sql, 0);
    int rc = a ? ag_buf_printf(&sql, ITEM_COLS "%s", where) : AG_ERR_NOMEM;
    if (rc == AG_OK) {
        scope_sql(&sql, scope, p, &np, a);
        rc = ag_buf_printf(&sql, ITEM_ORDER);
    }
    if (rc == AG_OK) {
        rc = store_sql_select(s, (const char *)sql.data, p, np, item_row, r,
                              err);
    } else {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    ag_buf_deinit(&sql);
    ag_arena_destroy(a);
    return rc;
}

int store_worklist_get(Store *s, const StoreScope *scope, int64_t id,
                       int (*fn)(void *ctx, const StoreWorklistItem *it),
                       void *ctx, AgError *err)
{
    char idt[24];
    ag_fmt(idt, sizeof idt, "%" PRId64, id);
    const char *p[WL_PARAMS_MAX] = {idt};
    ItemRun r = {.fn = fn, .ctx = ctx};
    int rc = select_items(s, scope, " AND w.id = ?1", p, 1, &r, err);
    if (rc == AG_OK && !r.found) {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no worklist item %" PRId64,
                          id);
    }
    return rc;
}

int store_worklist_list(Store *s, const StoreScope *scope,
                        int (*fn)(void *ctx, const StoreWorklistItem *it),
                        void *ctx, AgError *err)
{
    const char *p[WL_PARAMS_MAX];
    ItemRun r = {.fn = fn, .ctx = ctx};
    return select_items(s, scope, "", p, 0, &r, err);
}

static int found(void *ctx, const StoreWorklistItem *it)
{
    (void)it;
    *(bool *)ctx = true;
    return 1;
}

int store_worklist_remove(Store *s, const StoreScope *scope, int64_t id,
                          AgError *err)
{
    bool there = false;
    int rc = store_worklist_get(s, scope, id, found, &there, err);
    if (rc != AG_OK) {
        return rc;
    }
    char idt[24];
    ag_fmt(idt, sizeof idt, "%" PRId64, id);
    const char *p[] = {idt};
    int64_t n = 0;
    rc = store_sql_exec(s, "DELETE FROM worklist WHERE id = ?1", p, 1, &n,
                        NULL, err);
    if (rc == AG_OK && n == 0) {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no worklist item %" PRId64,
                          id);   /* removed meanwhile */
    }
    return rc;
}

int store_worklist_purge(Store *s, const char *date, uint64_t *n,
                         AgError *err)
{
    if (!store__valid_da(date)) {
        return ag_error_set(err, AG_ERR_INVALID, "a date is YYYYMMDD");
    }
    const char *p[] = {date};
    int64_t k = 0;
    int rc = store_sql_exec(s, "DELETE FROM worklist WHERE start_date < ?1",
                            p, 1, &k, NULL, err);
    if (rc == AG_OK && n != NULL) {
        *n = (uint64_t)k;
    }
    return rc;
}

/* ---- C-FIND ----------------------------------------------------------------- */

/* A key value the SQL may compare as is: non-empty, no wildcard, one
 * value (C.2.2.2.1 single value matching), ASCII (the columns are UTF-8,
 * the key is in the query's character set). */
static const char *plain(const DicomDataset *keys, uint32_t tag, AgArena *a)
{
    const DicomElement *k = dicom_dataset_find(keys, tag);
    char *v = NULL;
    if (k == NULL || k->vr == DICOM_VR_SQ ||
        dicom_element_text(k, a, &v, NULL) != AG_OK || v == NULL ||
        v[0] == '\0' || strpbrk(v, "*?\\") != NULL) {
        return NULL;
    }
    for (const char *c = v; *c != '\0'; c++) {
        if ((unsigned char)*c >= 0x80) {
            return NULL;
        }
    }
    while (*v == ' ') {
        v++;
    }
    return v[0] != '\0' ? v : NULL;
}

static void narrow(AgBuf *sql, const char *col, const char *v,
                   const char **p, int *np)
{
    if (v != NULL) {
        p[(*np)++] = v;
        ag_buf_printf(sql, " AND %s = ?%d", col, *np);
    }
}

/* The scheduled date key: one date, or a range with either end open
 * (C.2.2.2.5); anything else is left to the full match. */
static void narrow_date(AgBuf *sql, const DicomDataset *sps, const char **p,
                        int *np, AgArena *a)
{
    const DicomElement *k = sps ? dicom_dataset_find(sps, TAG_SPS_DATE)
                                : NULL;
    char *v = NULL;
    if (k == NULL || dicom_element_text(k, a, &v, NULL) != AG_OK ||
        v == NULL || v[0] == '\0') {
        return;
    }
    char *dash = strchr(v, '-');
    if (dash == NULL) {
        narrow(sql, "w.start_date", store__valid_da(v) ? v : NULL, p, np);
        return;
    }
    *dash = '\0';
    const char *lo = v, *hi = dash + 1;
    if (lo[0] != '\0' && store__valid_da(lo)) {
        p[(*np)++] = lo;
        ag_buf_printf(sql, " AND w.start_date >= ?%d", *np);
    }
    if (hi[0] != '\0' && store__valid_da(hi)) {
        p[(*np)++] = hi;
        ag_buf_printf(sql, " AND w.start_date <= ?%d", *np);
    }
}

typedef struct FindRun {
    const DicomDataset *keys;
    bool fuzzy;
    StoreMatchFn fn;
    void *ctx;
    uint32_t matched;
    int rc;
    AgError *err;
} FindRun;

/* Put key k into out: the item's value, or empty (C.4.1.1.3.2: every key
 * comes back).  A sequence key without keys of its own is universal
 * matching of the whole sequence: it comes back whole. */
static int answer_key(DicomDataset *out, const DicomElement *k,
                      const DicomDataset *item, AgArena *a)
{
    const DicomElement *got = dicom_dataset_find(item, k->tag);
    bool whole = k->vr == DICOM_VR_SQ &&
                 (k->nitems == 0 || dicom_dataset_count(k->items[0]) == 0);
    if (whole && got != NULL && got->vr == DICOM_VR_SQ) {
        return dicom_dataset_put(out, got, NULL);   /* same arena */
    }
    int rc;
    if (k->vr == DICOM_VR_SQ) {
        DicomElement *sq;
        rc = dicom_set_sequence(out, k->tag, &sq, NULL);
    } else {
        rc = dicom_set_bytes(out, k->tag, k->vr, "", 0, NULL);
    }
    return rc == AG_OK ? store__copy_return(out, k, item, a) : rc;
}

static int answer(const FindRun *r, const DicomDataset *item, AgArena *a,
                  DicomDataset **out)
{
    DicomDataset *ds = dicom_dataset_create(a);
    if (ds == NULL) {
        return AG_ERR_NOMEM;
    }
    int rc = dicom_set_string(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                              DICOM_VR_CS, "ISO_IR 192", NULL);
    size_t n = dicom_dataset_count(r->keys);
    for (size_t i = 0; i < n && rc == AG_OK; i++) {
        const DicomElement *k = dicom_dataset_at(r->keys, i);
        if (DICOM_TAG_GROUP(k->tag) > 0x0002 &&
            k->tag != DICOM_TAG_SPECIFIC_CHARACTER_SET) {
            rc = answer_key(ds, k, item, a);
        }
    }
    *out = ds;
    return rc;
}

static int find_row(void *ctx, int ncol, const char *const *vals)
{
    FindRun *r = ctx;
    if (ncol < 2 || vals[1] == NULL) {
        return 0;
    }
    AgArena *a = ag_arena_create(4 * WL_JSON_MAX);
    DicomDataset *item = NULL, *out = NULL;
    if (a == NULL) {
        r->rc = ag_error_set(r->err, AG_ERR_NOMEM, "out of memory");
        return 1;
    }
    int stop = 0;
    if (dicom_json_read(vals[1], strlen(vals[1]), a, &item, NULL) == AG_OK &&
        store__match_keys(r->keys, item, r->fuzzy, a)) {
        int rc = answer(r, item, a, &out);
        if (rc != AG_OK) {
            r->rc = ag_error_set(r->err, rc, "worklist: cannot build a "
                                 "match");
            stop = 1;
        } else if (r->fn(r->ctx, out) != 0) {
            stop = 1;
        } else {
            stop = ++r->matched >= WL_MATCH_MAX;
        }
    }
    ag_arena_destroy(a);
    return stop;
}

int store_worklist_find(Store *s, const DicomDataset *keys,
                        const StoreScope *scope, bool fuzzy,
                        StoreMatchFn fn, void *ctx, AgError *err)
{
    AgArena *a = ag_arena_create(64 << 10);
    AgBuf sql;
    ag_buf_init(&sql, 0);
    const char *p[WL_PARAMS_MAX];
    int np = 0;
    int rc = a ? ag_buf_printf(&sql, "SELECT w.id, w.json FROM worklist w"
                               " WHERE 1") : AG_ERR_NOMEM;
    if (rc == AG_OK) {
        const DicomElement *sq = dicom_dataset_find(keys, TAG_SPS_SEQ);
        const DicomDataset *sps = sq != NULL && sq->vr == DICOM_VR_SQ &&
                                  sq->nitems > 0 ? sq->items[0] : NULL;
        if (sps != NULL) {
            narrow(&sql, "w.modality", plain(sps, TAG_MODALITY, a), p, &np);
            narrow(&sql, "w.station_aet", plain(sps, TAG_STATION_AET, a), p,
                   &np);
            narrow_date(&sql, sps, p, &np, a);
        }
        /* Done steps leave the list unless the status is asked for. */
        if (sps == NULL || plain(sps, TAG_SPS_STATUS, a) == NULL) {
            ag_buf_printf(&sql, " AND w.status NOT IN " DONE_SQL);
        }
        narrow(&sql, "w.patient_id", plain(keys, TAG_PATIENT_ID, a), p, &np);
        narrow(&sql, "w.accession", plain(keys, TAG_ACCESSION, a), p, &np);
        scope_sql(&sql, scope, p, &np, a);
        rc = ag_buf_printf(&sql, " ORDER BY w.start_date, w.start_time, w.id"
                           " LIMIT %d", WL_SCAN_MAX);
    }
    if (rc != AG_OK) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    } else {
        FindRun r = {.keys = keys, .fuzzy = fuzzy, .fn = fn, .ctx = ctx,
                     .err = err};
        rc = store_sql_select(s, (const char *)sql.data, p, np, find_row, &r,
                              err);
        if (rc == AG_OK) {
            rc = r.rc;
        }
    }
    ag_buf_deinit(&sql);
    ag_arena_destroy(a);
    return rc;
}

/* ---- following performed steps (mpps.c) ----------------------------------- */

typedef struct Follow {
    const char *sps_id, *status;
    AgBuf updates;     /* id NUL json NUL, for each item that changes */
    int rc;
} Follow;

/* The item's JSON with its step's status set, appended to f->updates,
 * when its step is f->sps_id. */
static int follow_row(void *ctx, int ncol, const char *const *vals)
{
    Follow *f = ctx;
    if (ncol < 2 || vals[0] == NULL || vals[1] == NULL) {
        return 0;
    }
    AgArena *a = ag_arena_create(4 * WL_JSON_MAX);
    DicomDataset *ds = NULL;
    int rc = a ? dicom_json_read(vals[1], strlen(vals[1]), a, &ds, NULL)
               : AG_ERR_NOMEM;
    DicomDataset *sps = rc == AG_OK ? step_of(ds) : NULL;
    const char *id = sps ? text(sps, TAG_SPS_ID, a) : NULL;
    if (id != NULL && strcmp(id, f->sps_id) == 0) {
        rc = dicom_set_string(sps, TAG_SPS_STATUS, DICOM_VR_CS, f->status,
                              NULL);
        if (rc == AG_OK) {
            rc = ag_buf_append(&f->updates, vals[0], strlen(vals[0]) + 1);
        }
        DicomJsonOptions jo = {0};
        if (rc == AG_OK) {
            rc = dicom_json_write(ds, &jo, dicom_sink_buf, &f->updates,
                                  NULL);
        }
        if (rc == AG_OK) {
            rc = ag_buf_append(&f->updates, "", 1);
        }
        f->rc = rc;
    }
    ag_arena_destroy(a);
    return f->rc != AG_OK;
}

int store__worklist_follow(Store *s, const StoreScope *scope,
                           const char *study_uid, const char *sps_id,
                           const char *status, uint64_t *n, AgError *err)
{
    Follow f = {.sps_id = sps_id, .status = status};
    ag_buf_init(&f.updates, 64 * WL_JSON_MAX);
    AgArena *a = ag_arena_create(64 << 10);
    AgBuf sql;
    ag_buf_init(&sql, 0);
    const char *p[WL_PARAMS_MAX] = {study_uid};
    int np = 1;
    int rc = a ? ag_buf_printf(&sql, "SELECT w.id, w.json FROM worklist w"
                               " WHERE w.study_uid = ?1") : AG_ERR_NOMEM;
    if (rc == AG_OK) {
        scope_sql(&sql, scope, p, &np, a);
        rc = store_sql_select(s, (const char *)sql.data, p, np, follow_row,
                              &f, err);
        if (rc == AG_OK && f.rc != AG_OK) {
            rc = ag_error_set(err, f.rc, "worklist: cannot update item");
        }
    } else {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    uint64_t k = 0;
    for (size_t at = 0; rc == AG_OK && at < f.updates.len; k++) {
        const char *id = (const char *)f.updates.data + at;
        const char *json = id + strlen(id) + 1;
        at = (size_t)(json + strlen(json) + 1 -
                      (const char *)f.updates.data);
        const char *q[] = {json, status, id};
        rc = store_sql_exec(s, "UPDATE worklist SET json = ?1, status = ?2"
                            " WHERE id = ?3", q, 3, NULL, NULL, err);
    }
    if (n != NULL) {
        *n = k;
    }
    ag_buf_deinit(&sql);
    ag_buf_deinit(&f.updates);
    ag_arena_destroy(a);
    return rc;
}
