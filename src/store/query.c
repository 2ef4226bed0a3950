/*
 * query.c — matching per PS3.4 C.2.2.2, shared by C-FIND and QIDO-RS:
 * single value, universal, wildcard, range, list of UIDs; person names
 * optionally case-insensitive.  The identifier becomes ONE parameterised
 * SELECT over the index (DESIGN.md §6): never a query per row, never data
 * in the SQL text, always a hard cap.
 */
#include "store_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int found_row(void *ctx, int ncol, const char *const *vals)
{
    (void)ncol;
    (void)vals;
    *(bool *)ctx = true;
    return 1;
}

#define HARD_CAP 10000
#define FILTER_SCAN_MAX 200000   /* rows examined for non-indexed matching */
#define MAX_PARAMS 64

typedef enum Kind {
    K_TEXT,      /* LO SH CS ...: exact or wildcard */
    K_PN,        /* person name: wildcard, optional case folding */
    K_DATE,      /* DA: exact or range */
    K_TIME,      /* TM: exact or range */
    K_UID,       /* UI: exact or list */
    K_INT,       /* IS/US counts and numbers: exact */
    K_MODALITIES /* ModalitiesInStudy: any series has one of the values */
} Kind;

typedef struct Attr {
    uint32_t tag;
    StoreLevel level;        /* level the attribute belongs to */
    const char *expr;        /* SQL expression (whitelisted) */
    Kind kind;
    const char *fold_expr;   /* PN: the upper-cased column */
    bool count;              /* a derived count: only at its own level */
} Attr;

static const Attr ATTRS[] = {
    {0x00100010, STORE_LEVEL_PATIENT, "p.name", K_PN, "p.name_norm", false},
    {0x00100020, STORE_LEVEL_PATIENT, "p.patient_id", K_TEXT, NULL, false},
    {0x00100021, STORE_LEVEL_PATIENT, "p.issuer", K_TEXT, NULL, false},
    {0x00100030, STORE_LEVEL_PATIENT, "p.birth_date", K_DATE, NULL, false},
    {0x00100040, STORE_LEVEL_PATIENT, "p.sex", K_TEXT, NULL, false},
    {0x00201200, STORE_LEVEL_PATIENT,
     "(SELECT count(*) FROM studies x WHERE x.patient_pk = p.id)", K_INT,
     NULL, true},
    {0x0020000d, STORE_LEVEL_STUDY, "t.study_uid", K_UID, NULL, false},
    {0x00080020, STORE_LEVEL_STUDY, "t.study_date", K_DATE, NULL, false},
    {0x00080030, STORE_LEVEL_STUDY, "t.study_time", K_TIME, NULL, false},
    {0x00080050, STORE_LEVEL_STUDY, "t.accession", K_TEXT, NULL, false},
    {0x00200010, STORE_LEVEL_STUDY, "t.study_id", K_TEXT, NULL, false},
    {0x00081030, STORE_LEVEL_STUDY, "t.description", K_TEXT, NULL, false},
    {0x00080090, STORE_LEVEL_STUDY, "t.referring_name", K_PN,
     "t.referring_norm", false},
    {0x00080061, STORE_LEVEL_STUDY, "t.modalities", K_MODALITIES, NULL,
     false},
    {0x00201206, STORE_LEVEL_STUDY, "t.num_series", K_INT, NULL, true},
    {0x00201208, STORE_LEVEL_STUDY, "t.num_instances", K_INT, NULL, true},
    {0x0020000e, STORE_LEVEL_SERIES, "s.series_uid", K_UID, NULL, false},
    {0x00080060, STORE_LEVEL_SERIES, "s.modality", K_TEXT, NULL, false},
    {0x00200011, STORE_LEVEL_SERIES, "s.series_number", K_INT, NULL, false},
    {0x0008103e, STORE_LEVEL_SERIES, "s.description", K_TEXT, NULL, false},
    {0x00180015, STORE_LEVEL_SERIES, "s.body_part", K_TEXT, NULL, false},
    {0x00080021, STORE_LEVEL_SERIES, "s.series_date", K_DATE, NULL, false},
    {0x00080031, STORE_LEVEL_SERIES, "s.series_time", K_TIME, NULL, false},
    {0x00081010, STORE_LEVEL_SERIES, "s.station", K_TEXT, NULL, false},
    {0x00080080, STORE_LEVEL_SERIES, "s.institution", K_TEXT, NULL, false},
    {0x00081040, STORE_LEVEL_SERIES, "s.department", K_TEXT, NULL, false},
    {0x00080070, STORE_LEVEL_SERIES, "s.manufacturer", K_TEXT, NULL, false},
    {0x00201209, STORE_LEVEL_SERIES, "s.num_instances", K_INT, NULL, true},
    {0x00080018, STORE_LEVEL_INSTANCE, "i.sop_uid", K_UID, NULL, false},
    {0x00080016, STORE_LEVEL_INSTANCE, "i.sop_class_uid", K_UID, NULL, false},
    {0x00200013, STORE_LEVEL_INSTANCE, "i.instance_number", K_INT, NULL,
     false},
    {0x00280010, STORE_LEVEL_INSTANCE, "i.rows", K_INT, NULL, false},
    {0x00280011, STORE_LEVEL_INSTANCE, "i.columns", K_INT, NULL, false},
    {0x00280008, STORE_LEVEL_INSTANCE, "i.frames", K_INT, NULL, false},
    {0x00080023, STORE_LEVEL_INSTANCE, "i.content_date", K_DATE, NULL, false},
    {0x00080033, STORE_LEVEL_INSTANCE, "i.content_time", K_TIME, NULL, false},
    {0x00083002, STORE_LEVEL_INSTANCE, "i.transfer_syntax", K_UID, NULL,
     false},
};
#define NATTRS (sizeof ATTRS / sizeof ATTRS[0])

/* Unique key of each level (PS3.4 C.6.1.1, C.6.2.1). */
static const uint32_t UNIQUE[] = {
    [STORE_LEVEL_PATIENT] = 0x00100020, [STORE_LEVEL_STUDY] = 0x0020000d,
    [STORE_LEVEL_SERIES] = 0x0020000e, [STORE_LEVEL_INSTANCE] = 0x00080018,
};

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
    [STORE_LEVEL_SERIES] = " ORDER BY t.id, s.series_number, s.id",
    [STORE_LEVEL_INSTANCE] = " ORDER BY s.id, i.instance_number, i.id",
};

static const Attr *find_attr(uint32_t tag)
{
    for (size_t i = 0; i < NATTRS; i++) {
        if (ATTRS[i].tag == tag) {
            return &ATTRS[i];
        }
    }
    return NULL;
}

/* Available at a query level: its own attributes and those of the levels
 * above it; counts only at their own level.  For the patient root, the
 * study level sits under patient; for the study root, patient attributes
 * are part of the study level (PS3.4 C.6.2). */
static bool available(const Attr *a, StoreLevel level)
{
    return a->count ? a->level == level : a->level <= level;
}

typedef struct Builder {
    AgBuf sql;
    const char *params[MAX_PARAMS];
    int nparams;
    AgArena *a;
    AgError *err;
    int rc;
} Builder;

static void add(Builder *b, const char *s)
{
    if (b->rc == AG_OK) {
        b->rc = ag_buf_append_str(&b->sql, s);
    }
}

static void param(Builder *b, const char *v)
{
    if (b->rc != AG_OK) {
        return;
    }
    if (b->nparams == MAX_PARAMS) {
        b->rc = ag_error_set(b->err, AG_ERR_LIMIT, "query has too many "
                             "values");
        return;
    }
    b->params[b->nparams++] = v;
    char ph[16];
    ag_fmt(ph, sizeof ph, "?%d", b->nparams);
    add(b, ph);
}

/* A parameter referred to several times: added once, then ref() emits
 * its placeholder where needed. */
static int param_id(Builder *b, const char *v)
{
    if (b->rc != AG_OK) {
        return 0;
    }
    if (b->nparams == MAX_PARAMS) {
        b->rc = ag_error_set(b->err, AG_ERR_LIMIT, "query has too many "
                             "values");
        return 0;
    }
    b->params[b->nparams++] = v;
    return b->nparams;
}

static void ref(Builder *b, int id)
{
    char ph[16];
    ag_fmt(ph, sizeof ph, "?%d", id);
    add(b, ph);
}

/* ---- the access filter (DESIGN.md §5) ----------------------------------- */

const StoreScope STORE_SCOPE_ALL = {.all = true};

typedef struct ScopeRefs {
    int depts[STORE_SCOPE_MAX_DEPTS];
    int user, now, study;
} ScopeRefs;

static void scope_params(Builder *b, const StoreScope *sc, ScopeRefs *r)
{
    if (sc->only_study != NULL) {
        r->study = param_id(b, sc->only_study);
        return;
    }
    uint32_t n = sc->ndepts < STORE_SCOPE_MAX_DEPTS ? sc->ndepts
                                                     : STORE_SCOPE_MAX_DEPTS;
    for (uint32_t i = 0; i < n; i++) {
        r->depts[i] = param_id(b, ag_arena_printf(b->a, "%" PRId64,
                                                  sc->depts[i]));
    }
    if (sc->user != 0) {
        r->user = param_id(b, ag_arena_printf(b->a, "%" PRId64, sc->user));
    }
    r->now = param_id(b, ag_arena_printf(b->a, "%" PRId64,
                                         (int64_t)time(NULL)));
}

static void dept_list(Builder *b, const StoreScope *sc, const ScopeRefs *r)
{
    add(b, "(");
    for (uint32_t i = 0; i < sc->ndepts && i < STORE_SCOPE_MAX_DEPTS; i++) {
        if (i > 0) {
            add(b, ", ");
        }
        ref(b, r->depts[i]);
    }
    add(b, ")");
}

/* The ids of the studies in scope, as a SELECT (no only_study here). */
static void visible_studies(Builder *b, const StoreScope *sc,
                            const ScopeRefs *r)
{
    bool depts = sc->ndepts > 0, user = sc->user != 0;
    if (!depts && !user) {
        add(b, "SELECT NULL WHERE 0");
        return;
    }
    if (depts) {
        add(b, "SELECT study_pk FROM study_depts WHERE dept_pk IN ");
        dept_list(b, sc, r);
        add(b, " UNION ");
    }
    add(b, "SELECT study_pk FROM shares WHERE (expires_at IS NULL OR"
           " expires_at > ");
    ref(b, r->now);
    add(b, ") AND (0");
    if (depts) {
        add(b, " OR dept_pk IN ");
        dept_list(b, sc, r);
    }
    if (user) {
        add(b, " OR user_pk = ");
        ref(b, r->user);
        add(b, " OR list_pk IN (SELECT list_pk FROM list_members"
               " WHERE user_pk = ");
        ref(b, r->user);
        add(b, ")");
    }
    add(b, ")");
    if (user && !sc->no_glass) {
        add(b, " UNION SELECT study_pk FROM break_glass WHERE user_pk = ");
        ref(b, r->user);
        add(b, " AND expires_at > ");
        ref(b, r->now);
    }
}

/* " AND <study id column> IN (studies in scope)". */
static void scope_filter(Builder *b, const StoreScope *sc, const ScopeRefs *r,
                         StoreLevel level)
{
    if (sc == NULL || sc->all) {
        return;
    }
    if (sc->only_study != NULL) {
        add(b, level == STORE_LEVEL_PATIENT
                   ? " AND p.id IN (SELECT patient_pk FROM studies"
                     " WHERE study_uid = "
                   : " AND (t.study_uid = ");
        ref(b, r->study);
        add(b, ")");
        return;
    }
    add(b, level == STORE_LEVEL_PATIENT
               ? " AND p.id IN (SELECT patient_pk FROM studies WHERE id IN ("
               : " AND t.id IN (");
    visible_studies(b, sc, r);
    add(b, level == STORE_LEVEL_PATIENT ? "))" : ")");
}

/* Number of Patient Related Studies counts only the studies in scope. */
static void scoped_study_count(Builder *b, const StoreScope *sc,
                               const ScopeRefs *r)
{
    add(b, "(SELECT count(*) FROM studies x WHERE x.patient_pk = p.id AND ");
    if (sc->only_study != NULL) {
        add(b, "x.study_uid = ");
        ref(b, r->study);
    } else {
        add(b, "x.id IN (");
        visible_studies(b, sc, r);
        add(b, ")");
    }
    add(b, ")");
}

bool store_study_visible(Store *s, const StoreScope *scope,
                         const char *study_uid)
{
    if (study_uid == NULL) {
        return false;
    }
    AgArena *a = ag_arena_create(64 << 10);
    if (a == NULL) {
        return false;
    }
    AgError err;
    Builder b = {.a = a, .err = &err};
    ag_buf_init(&b.sql, 64 << 10);
    ScopeRefs r = {0};
    int uid = param_id(&b, study_uid);
    if (scope != NULL && !scope->all) {
        scope_params(&b, scope, &r);
    }
    add(&b, "SELECT 1 FROM studies t WHERE t.study_uid = ");
    ref(&b, uid);
    scope_filter(&b, scope, &r, STORE_LEVEL_STUDY);
    bool found = false;
    if (b.rc == AG_OK && ag_buf_append(&b.sql, "", 1) == AG_OK) {
        StoreIndex *ix = store__index(s);
        ix->ops->select(ix, (const char *)b.sql.data, b.params, b.nparams,
                        found_row, &found, &err);
    }
    ag_buf_deinit(&b.sql);
    ag_arena_destroy(a);
    return found;
}

static bool has_wildcard(const char *v)
{
    return strpbrk(v, "*?") != NULL;
}

/* A pattern that starts with a wildcard and has a character to match:
 * no index helps (a lone "*" matches everything). */
static bool leading_wildcard(const char *v)
{
    return (v[0] == '*' || v[0] == '?') && strspn(v, "*") < strlen(v);
}

/* DICOM wildcard to a LIKE pattern with '\' as the escape character. */
static char *like_pattern(const char *v, AgArena *a)
{
    size_t n = strlen(v);
    char *out = ag_arena_alloc(a, 2 * n + 1);
    if (out == NULL) {
        return NULL;
    }
    char *o = out;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '*') {
            *o++ = '%';
        } else if (*p == '?') {
            *o++ = '_';
        } else {
            if (*p == '%' || *p == '_' || *p == '\\') {
                *o++ = '\\';
            }
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static char *upper(const char *v, AgArena *a)
{
    char *u = ag_arena_strdup(a, v);
    for (char *p = u; p != NULL && *p != '\0'; p++) {
        *p = (char)toupper((unsigned char)*p);
    }
    return u;
}

/*
 * Case-sensitive person-name matching compares the PN column, which has
 * no index; its normalised form (store__pn_normalize, as at ingest: the
 * alphabetic group, ASCII upper case, trailing '^' and ' ' dropped) has
 * one.  A match on the PN implies one on the normalised column, so that
 * condition is added too and the index finds the candidates instead of a
 * scan of every row (a PatientName=FAMILY* query read all 10,000 studies):
 *   exact  V     ->  fold = normalize(V)
 *   prefix P*... ->  fold >= P' AND fold < P' with its last byte + 1,
 *                    P' = normalize(P)
 * No condition when the value has '=' (another group), nor a range when
 * nothing is left of P'.
 */
static void pn_fold_range(Builder *b, const Attr *at, const char *one)
{
    if (at->fold_expr == NULL || strchr(one, '=') != NULL) {
        return;
    }
    bool prefix = has_wildcard(one);
    char *v = ag_arena_strndup(b->a, one, strcspn(one, "*?"));
    char *lo = v != NULL ? store__pn_normalize(v, b->a) : NULL;
    if (lo == NULL) {
        return;
    }
    if (!prefix) {
        add(b, " AND ");
        add(b, at->fold_expr);
        add(b, " = ");
        param(b, lo);
        return;
    }
    size_t n = strlen(lo);
    char *hi = n > 0 && (unsigned char)lo[n - 1] != 0xff
        ? ag_arena_strdup(b->a, lo) : NULL;
    if (hi == NULL) {
        return;
    }
    hi[n - 1] = (char)((unsigned char)hi[n - 1] + 1);
    add(b, " AND ");
    add(b, at->fold_expr);
    add(b, " >= ");
    param(b, lo);
    add(b, " AND ");
    add(b, at->fold_expr);
    add(b, " < ");
    param(b, hi);
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* "A-B", "-B", "A-" or "A" (PS3.4 C.2.2.2.5). */
static void range(Builder *b, const char *expr, const char *v, Kind k,
                  uint32_t tag)
{
    const char *dash = strchr(v, '-');
    size_t lo_n = dash ? (size_t)(dash - v) : strlen(v);
    const char *hi = dash ? dash + 1 : NULL;
    size_t hi_n = hi ? strlen(hi) : 0;
    bool ok = k == K_DATE
        ? ((lo_n == 0 || (lo_n == 8 && all_digits(v, 8))) &&
           (hi == NULL || hi_n == 0 || (hi_n == 8 && all_digits(hi, 8))) &&
           (lo_n > 0 || hi_n > 0))
        : (lo_n + hi_n > 0 && lo_n <= 16 && hi_n <= 16);
    if (!ok) {
        b->rc = ag_error_set(b->err, AG_ERR_INVALID,
                             "(%04x,%04x): \"%.40s\" is not a %s or range",
                             tag >> 16, tag & 0xffff, v,
                             k == K_DATE ? "date" : "time");
        return;
    }
    char *lo = ag_arena_strndup(b->a, v, lo_n);
    if (dash == NULL) {
        add(b, expr);
        add(b, k == K_TIME ? " LIKE " : " = ");
        param(b, k == K_TIME ? ag_arena_printf(b->a, "%s%%", lo) : lo);
        return;
    }
    add(b, "(");
    if (lo_n > 0) {
        add(b, expr);
        add(b, " >= ");
        param(b, lo);
    }
    if (lo_n > 0 && hi_n > 0) {
        add(b, " AND ");
    }
    if (hi_n > 0) {
        /* Times compare as text; "~" sorts after digits and '.', so
         * "1200~" includes 120059.999 (C.2.2.2.5: inclusive). */
        add(b, expr);
        add(b, " <= ");
        param(b, k == K_TIME ? ag_arena_printf(b->a, "%s~", hi)
                             : ag_arena_strdup(b->a, hi));
    }
    add(b, ")");
}

/* Condition for one matching key; nothing for a universal (empty) key. */
static void condition(Builder *b, const Attr *at, const char *v,
                      bool fuzzy)
{
    const char *expr = at->expr;
    if (at->kind == K_PN && fuzzy) {
        expr = at->fold_expr;
        v = upper(v, b->a);
    }
    /* Values separated by '\' are alternatives: a list of UIDs
     * (C.2.2.2.2), and for the other kinds the QIDO-RS form of several
     * values of one key. */
    size_t n = 1;
    for (const char *p = v; *p != '\0'; p++) {
        n += *p == '\\';
    }
    if (at->kind == K_MODALITIES) {
        add(b, " AND EXISTS (SELECT 1 FROM series m WHERE m.study_pk = t.id"
               " AND (");
        expr = "m.modality";
    } else {
        add(b, " AND (");
    }
    const char *p = v;
    for (size_t i = 0; i < n && b->rc == AG_OK; i++) {
        const char *end = strchr(p, '\\');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *one = ag_arena_strndup(b->a, p, len);
        if (i > 0) {
            add(b, " OR ");
        }
        switch (at->kind) {
        case K_DATE:
        case K_TIME:
            range(b, expr, one, at->kind, at->tag);
            break;
        case K_UID:
            add(b, expr);
            add(b, " = ");
            param(b, one);
            break;
        case K_INT:
            add(b, "CAST(");
            add(b, expr);
            add(b, " AS TEXT) = ");
            param(b, one);
            break;
        default:
            add(b, "(");
            if (leading_wildcard(one)) {
                /* No index can serve it.  Knowing nothing of its
                 * selectivity, SQLite reads every row of the query's level
                 * in order and tests each, stopping at the limit; told
                 * that few match, it scans the attribute's own table,
                 * joins downwards and sorts.  QIDO-RS studies over 10,000
                 * (by hand, p50 of 9, quiet machine): PatientName=*oe*
                 * (none match) ~8 -> ~2.3 ms, *AR* (3,486 match, all
                 * sorted) ~3.3 -> ~6-8 ms: the worst case drops a little,
                 * and a name fragment worth typing matches few. */
                add(b, "likelihood(");
                add(b, expr);
                add(b, " LIKE ");
                param(b, like_pattern(one, b->a));
                add(b, " ESCAPE '\\', 0.05)");
            } else if (has_wildcard(one)) {
                add(b, expr);
                add(b, " LIKE ");
                param(b, like_pattern(one, b->a));
                add(b, " ESCAPE '\\'");
            } else {
                add(b, expr);
                add(b, " = ");
                param(b, one);
            }
            if (at->kind == K_PN && !fuzzy) {
                pn_fold_range(b, at, one);
            }
            add(b, ")");
            break;
        }
        p = end ? end + 1 : p + len;
    }
    add(b, at->kind == K_MODALITIES ? "))" : ")");
}

/* PS3.4 C.4.1.2.2.1: a hierarchical query names the unique keys of the
 * levels above with single values, and matches nothing else above. */
static int check_hierarchy(const StoreQuery *q, AgArena *a, AgError *err)
{
    StoreLevel top = q->patient_root ? STORE_LEVEL_PATIENT
                                     : STORE_LEVEL_STUDY;
    for (int lv = (int)top; lv < (int)q->level; lv++) {
        const DicomElement *el = dicom_dataset_find(q->keys, UNIQUE[lv]);
        char *v = NULL;
        if (el == NULL || dicom_element_text(el, a, &v, NULL) != AG_OK ||
            v[0] == '\0' || strchr(v, '\\') != NULL || has_wildcard(v)) {
            return ag_error_set(err, AG_ERR_INVALID, "(%04x,%04x) must hold "
                                "one value at this query level",
                                UNIQUE[lv] >> 16, UNIQUE[lv] & 0xffff);
        }
    }
    size_t n = dicom_dataset_count(q->keys);
    for (size_t i = 0; i < n; i++) {
        const DicomElement *el = dicom_dataset_at(q->keys, i);
        const Attr *at = find_attr(el->tag);
        if (at == NULL || at->level >= q->level ||
            UNIQUE[at->level] == el->tag || el->length == 0) {
            continue;
        }
        if (!q->patient_root && at->level == STORE_LEVEL_PATIENT &&
            q->level == STORE_LEVEL_STUDY) {
            continue;   /* study root: patient keys are study keys */
        }
        return ag_error_set(err, AG_ERR_INVALID, "(%04x,%04x): relational "
                            "queries are not supported", el->tag >> 16,
                            el->tag & 0xffff);
    }
    return AG_OK;
}

/* ---- keys the index does not hold (PS3.4 C.2.2.2, C.4.1.1.3.1) --------
 *
 * Return keys and matching keys that are not columns of the index are
 * answered from the DICOM JSON kept for each instance (of the matching
 * instance at IMAGE level, of the level's first instance above it):
 * return keys get their values instead of coming back empty, and
 * matching keys — including sequence matching (C.2.2.2.6) — filter the
 * rows after the SQL.  Such queries read one metadata document per row,
 * so they are slower than indexed ones; limit and offset are then applied
 * after the filter, so paging stays exact.
 */

/* Representative instance of a row, per level. */
static const char *const REP[] = {
    [STORE_LEVEL_PATIENT] =
        ("(SELECT m.json FROM instance_meta m WHERE m.instance_pk ="
         " (SELECT min(x.id) FROM instances x JOIN series y ON x.series_pk ="
         " y.id JOIN studies z ON y.study_pk = z.id WHERE z.patient_pk ="
         " p.id))"),
    [STORE_LEVEL_STUDY] =
        ("(SELECT m.json FROM instance_meta m WHERE m.instance_pk ="
         " (SELECT min(x.id) FROM instances x JOIN series y ON x.series_pk ="
         " y.id WHERE y.study_pk = t.id))"),
    [STORE_LEVEL_SERIES] =
        ("(SELECT m.json FROM instance_meta m WHERE m.instance_pk ="
         " (SELECT min(x.id) FROM instances x WHERE x.series_pk = s.id))"),
    [STORE_LEVEL_INSTANCE] =
        "(SELECT m.json FROM instance_meta m WHERE m.instance_pk = i.id)",
};

static bool skip_key(uint32_t tag)
{
    return DICOM_TAG_GROUP(tag) <= 0x0002 || tag == 0x00080005 ||
           tag == 0x00080052 || (DICOM_TAG_GROUP(tag) & 1) != 0;
}

/* Is the key (or, for a sequence, any key inside its item) non-empty? */
static bool key_has_value(const DicomElement *el)
{
    if (el->vr != DICOM_VR_SQ) {
        return el->length > 0;
    }
    for (uint32_t i = 0; i < el->nitems; i++) {
        size_t n = dicom_dataset_count(el->items[i]);
        for (size_t k = 0; k < n; k++) {
            if (key_has_value(dicom_dataset_at(el->items[i], k))) {
                return true;
            }
        }
    }
    return false;
}

/* Glob with '*' and '?' (C.2.2.2.4), optionally ignoring ASCII case. */
static bool glob(const char *p, const char *s, bool fold)
{
    const char *star = NULL, *back = NULL;
    while (*s != '\0') {
        char pc = fold ? (char)toupper((unsigned char)*p) : *p;
        char sc = fold ? (char)toupper((unsigned char)*s) : *s;
        if (*p == '?' || (*p != '*' && *p != '\0' && pc == sc)) {
            p++;
            s++;
        } else if (*p == '*') {
            star = p++;
            back = s;
        } else if (star != NULL) {
            p = star + 1;
            s = ++back;
        } else {
            return false;
        }
    }
    while (*p == '*') {
        p++;
    }
    return *p == '\0';
}

static char *trim(char *v)
{
    while (*v == ' ') {
        v++;
    }
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == ' ') {
        v[--n] = '\0';
    }
    return v;
}

/* One stored value against one key value of vr (C.2.2.2.1–5). */
static bool match_one(const char *key, const char *val, DicomVR vr,
                      bool fuzzy)
{
    bool fold = vr == DICOM_VR_PN && fuzzy;
    if (vr == DICOM_VR_DA || vr == DICOM_VR_TM || vr == DICOM_VR_DT) {
        const char *dash = strchr(key, '-');
        if (dash != NULL) {
            size_t lo = (size_t)(dash - key);
            bool ok = lo == 0 || strncmp(val, key, lo) >= 0;
            if (ok && dash[1] != '\0') {
                size_t hn = strlen(dash + 1);
                /* the upper bound is inclusive of everything it prefixes */
                ok = strncmp(val, dash + 1, hn) <= 0;
            }
            return ok;
        }
    }
    if (strpbrk(key, "*?") != NULL && vr != DICOM_VR_UI) {
        return glob(key, val, fold);
    }
    return fold ? strcasecmp(key, val) == 0 : strcmp(key, val) == 0;
}

static bool match_element(const DicomDataset *kds, const DicomElement *k,
                          const DicomDataset *sds, bool fuzzy, AgArena *a);

/* Every non-empty key of the key item matches in item s. */
static bool match_item(const DicomDataset *key, const DicomDataset *s,
                       bool fuzzy, AgArena *a)
{
    size_t n = dicom_dataset_count(key);
    for (size_t i = 0; i < n; i++) {
        const DicomElement *k = dicom_dataset_at(key, i);
        if (!skip_key(k->tag) && key_has_value(k) &&
            !match_element(key, k, s, fuzzy, a)) {
            return false;
        }
    }
    return true;
}

static bool match_element(const DicomDataset *kds, const DicomElement *k,
                          const DicomDataset *sds, bool fuzzy, AgArena *a)
{
    const DicomElement *s = dicom_dataset_find(sds, k->tag);
    if (s == NULL) {
        return false;
    }
    if (k->vr == DICOM_VR_SQ) {
        /* C.2.2.2.6: an item of the stored sequence matches the key's. */
        for (uint32_t i = 0; s->vr == DICOM_VR_SQ && i < s->nitems; i++) {
            if (match_item(k->items[0], s->items[i], fuzzy, a)) {
                return true;
            }
        }
        return false;
    }
    char *kv = NULL, *sv = NULL;
    if (dicom_element_utf8(kds, k, a, &kv, NULL) != AG_OK ||
        dicom_element_utf8(sds, s, a, &sv, NULL) != AG_OK || sv == NULL) {
        return false;
    }
    kv = trim(kv);
    if (kv[0] == '\0') {
        return true;
    }
    /* Several stored values: any may match; a UID key may list several. */
    for (char *save = NULL, *v = strtok_r(sv, "\\", &save); v != NULL;
         v = strtok_r(NULL, "\\", &save)) {
        v = trim(v);
        if (k->vr != DICOM_VR_UI) {
            if (match_one(kv, v, k->vr, fuzzy)) {
                return true;
            }
            continue;
        }
        char *list = ag_arena_strdup(a, kv);
        for (char *s2 = NULL, *u = list ? strtok_r(list, "\\", &s2) : NULL;
             u != NULL; u = strtok_r(NULL, "\\", &s2)) {
            if (strcmp(trim(u), v) == 0) {
                return true;
            }
        }
    }
    return false;
}

bool store__match_keys(const DicomDataset *keys, const DicomDataset *ds,
                       bool fuzzy, AgArena *a)
{
    return match_item(keys, ds, fuzzy, a);
}

/* The keys the index does not hold, against the metadata document. */
static bool match_extras(const DicomDataset *keys, const DicomDataset *meta,
                         bool fuzzy, AgArena *a)
{
    size_t n = dicom_dataset_count(keys);
    for (size_t i = 0; i < n; i++) {
        const DicomElement *k = dicom_dataset_at(keys, i);
        if (!skip_key(k->tag) && find_attr(k->tag) == NULL &&
            key_has_value(k) && !match_element(keys, k, meta, fuzzy, a)) {
            return false;
        }
    }
    return true;
}

/* Put the stored value of key k into the response out: the element for
 * plain keys; for a sequence, each stored item reduced to the keys of the
 * key's item (C.2.2.2.6). */
int store__copy_return(DicomDataset *out, const DicomElement *k,
                       const DicomDataset *sds, AgArena *a)
{
    const DicomElement *s = dicom_dataset_find(sds, k->tag);
    if (s == NULL) {
        return AG_OK;   /* stays empty */
    }
    if (k->vr != DICOM_VR_SQ || s->vr != DICOM_VR_SQ) {
        if (s->vr == DICOM_VR_SQ || k->vr == DICOM_VR_SQ) {
            return AG_OK;
        }
        const DicomVRInfo *vi = dicom_vr_info(s->vr);
        if (vi != NULL && (vi->kind == DICOM_VRK_STRING ||
                           vi->kind == DICOM_VRK_TEXT)) {
            char *v = NULL;
            if (dicom_element_utf8(sds, s, a, &v, NULL) != AG_OK) {
                return AG_OK;
            }
            return dicom_set_string(out, k->tag, s->vr, v, NULL);
        }
        return dicom_set_bytes(out, k->tag, s->vr, s->value, s->length,
                               NULL);
    }
    DicomElement *sq;
    int rc = dicom_set_sequence(out, k->tag, &sq, NULL);
    const DicomDataset *want = k->nitems > 0 ? k->items[0] : NULL;
    for (uint32_t i = 0; rc == AG_OK && i < s->nitems; i++) {
        DicomDataset *item;
        rc = dicom_sequence_append(out, sq, &item, NULL);
        size_t n = want ? dicom_dataset_count(want) : 0;
        for (size_t j = 0; rc == AG_OK && j < n; j++) {
            const DicomElement *kk = dicom_dataset_at(want, j);
            if (!skip_key(kk->tag)) {
                rc = store__copy_return(item, kk, s->items[i], a);
            }
        }
    }
    return rc;
}

typedef struct Run {
    const StoreQuery *q;
    const Attr *cols[NATTRS];
    int ncols;
    bool extra;              /* keys answered from metadata (last column) */
    bool filter;             /* ... some of them match */
    uint32_t skip;           /* offset applied after the filter */
    StoreMatchFn fn;
    void *ctx;
    uint32_t limit;
    uint32_t seen;
    bool more;
    int rc;
    AgError *err;
} Run;

/* The response identifier: the keys asked for, filled from the row. */
static int emit_row(void *ctx, int ncol, const char *const *vals)
{
    Run *r = ctx;
    AgArena *a = ag_arena_create(16 << 20);
    DicomDataset *ds = a ? dicom_dataset_create(a) : NULL;
    if (ds == NULL) {
        ag_arena_destroy(a);
        r->rc = ag_error_set(r->err, AG_ERR_NOMEM, "query: out of memory");
        return 1;
    }
    DicomDataset *meta = NULL;
    if (r->extra) {
        const char *json = vals[ncol - 1];
        if (json == NULL || dicom_json_read(json, strlen(json), a, &meta,
                                            NULL) != AG_OK) {
            meta = NULL;
        }
        if (r->filter && (meta == NULL ||
                          !match_extras(r->q->keys, meta, r->q->fuzzy, a))) {
            ag_arena_destroy(a);
            return 0;   /* filtered out: not counted */
        }
        if (r->skip > 0) {
            r->skip--;
            ag_arena_destroy(a);
            return 0;
        }
    }
    if (r->seen == r->limit) {
        r->more = true;
        ag_arena_destroy(a);
        return 1;
    }
    r->seen++;
    static const char *const LEVELS[] = {"PATIENT", "STUDY", "SERIES",
                                         "IMAGE"};
    int rc = dicom_set_string(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                              DICOM_VR_CS, "ISO_IR 192", NULL);
    if (rc == AG_OK) {
        rc = dicom_set_string(ds, DICOM_TAG(0x0008, 0x0052), DICOM_VR_CS,
                              LEVELS[r->q->level], NULL);
    }
    /* Every key of the identifier comes back (C.4.1.1.3.2): with its value
     * where Agora indexes it, empty otherwise. */
    size_t nk = dicom_dataset_count(r->q->keys);
    for (size_t k = 0; k < nk && rc == AG_OK; k++) {
        const DicomElement *key = dicom_dataset_at(r->q->keys, k);
        uint32_t tag = key->tag;
        if (DICOM_TAG_GROUP(tag) <= 0x0002 || tag == 0x00080005 ||
            tag == 0x00080052) {
            continue;
        }
        if (key->vr == DICOM_VR_SQ) {
            DicomElement *sq;
            rc = dicom_set_sequence(ds, tag, &sq, NULL);
            continue;
        }
        rc = dicom_set_bytes(ds, tag, key->vr, "", 0, NULL);
    }
    for (int c = 0; c < ncol && c < r->ncols && rc == AG_OK; c++) {
        const Attr *at = r->cols[c];
        bool asked = dicom_dataset_find(r->q->keys, at->tag) != NULL;
        if ((!asked && !r->q->all_fields) || vals[c] == NULL) {
            continue;
        }
        const DicomElement *key = dicom_dataset_find(r->q->keys, at->tag);
        DicomVR vr = key != NULL ? key->vr : dicom_dict_vr(at->tag);
        if (vr == DICOM_VR_US || vr == DICOM_VR_UL) {
            int64_t v = 0;
            sscanf(vals[c], "%" SCNd64, &v);
            rc = dicom_set_ints(ds, at->tag, vr, &v, 1, NULL);
        } else {
            rc = dicom_set_string(ds, at->tag, vr, vals[c], NULL);
        }
    }
    for (size_t k = 0; meta != NULL && k < nk && rc == AG_OK; k++) {
        const DicomElement *key = dicom_dataset_at(r->q->keys, k);
        if (!skip_key(key->tag) && find_attr(key->tag) == NULL) {
            rc = store__copy_return(ds, key, meta, a);
        }
    }
    if (rc != AG_OK) {
        r->rc = ag_error_set(r->err, rc, "query: cannot build a match");
    } else if (r->fn(r->ctx, ds) != 0) {
        r->rc = AG_OK;
        ag_arena_destroy(a);
        return 1;
    }
    ag_arena_destroy(a);
    return r->rc != AG_OK;
}

int store_query(Store *s, const StoreQuery *q, StoreMatchFn fn, void *ctx,
                bool *more, AgError *err)
{
    AgArena *a = ag_arena_create(16 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "query: out of memory");
    }
    Builder b = {.a = a, .err = err};
    ag_buf_init(&b.sql, 64 << 10);
    Run run = {.q = q, .fn = fn, .ctx = ctx, .err = err};
    run.limit = q->limit == 0 || q->limit > HARD_CAP ? HARD_CAP : q->limit;
    if (q->hierarchical) {
        b.rc = check_hierarchy(q, a, err);
    }
    const StoreScope *sc = q->scope != NULL && !q->scope->all ? q->scope
                                                               : NULL;
    ScopeRefs refs = {0};
    if (sc != NULL) {
        scope_params(&b, sc, &refs);
    }
    add(&b, "SELECT ");
    /* Only the columns a match returns: those asked for (all, with
     * all_fields).  A WADO-RS listing asks for two of an instance's 37. */
    for (size_t i = 0; i < NATTRS; i++) {
        if (available(&ATTRS[i], q->level) &&
            (q->all_fields ||
             dicom_dataset_find(q->keys, ATTRS[i].tag) != NULL)) {
            if (run.ncols > 0) {
                add(&b, ", ");
            }
            if (sc != NULL && ATTRS[i].tag == 0x00201200) {
                scoped_study_count(&b, sc, &refs);
            } else {
                add(&b, ATTRS[i].expr);
            }
            run.cols[run.ncols++] = &ATTRS[i];
        }
    }
    size_t nkeys = dicom_dataset_count(q->keys);
    for (size_t i = 0; i < nkeys; i++) {
        const DicomElement *el = dicom_dataset_at(q->keys, i);
        const Attr *at = find_attr(el->tag);
        if (skip_key(el->tag) || (at != NULL && available(at, q->level))) {
            continue;
        }
        if (at == NULL) {
            run.extra = true;
            run.filter |= key_has_value(el);
        }
    }
    if (run.extra) {
        add(&b, run.ncols > 0 ? ", " : "");
        add(&b, REP[q->level]);
        run.skip = q->offset;
    } else if (run.ncols == 0) {
        add(&b, "NULL");   /* nothing asked: a match is still a row */
    }
    add(&b, FROM[q->level]);
    add(&b, " WHERE 1 = 1");
    scope_filter(&b, sc, &refs, q->level);
    size_t n = dicom_dataset_count(q->keys);
    for (size_t i = 0; i < n && b.rc == AG_OK; i++) {
        const DicomElement *el = dicom_dataset_at(q->keys, i);
        const Attr *at = find_attr(el->tag);
        if (at == NULL || !available(at, q->level) || el->length == 0 ||
            el->vr == DICOM_VR_SQ) {
            continue;   /* universal, unknown (returned empty) or sequence */
        }
        char *v = NULL;
        if (dicom_element_utf8(q->keys, el, a, &v, NULL) != AG_OK ||
            v[0] == '\0') {
            continue;
        }
        condition(&b, at, v, q->fuzzy);
    }
    char lim[64];
    if (run.filter) {
        /* Matching after the SQL: scan a bounded number of rows. */
        ag_fmt(lim, sizeof lim, " LIMIT %u", FILTER_SCAN_MAX);
    } else {
        ag_fmt(lim, sizeof lim, " LIMIT %u OFFSET %u", run.limit + 1,
               q->offset);
        run.skip = 0;
    }
    add(&b, ORDER[q->level]);
    add(&b, lim);
    int rc = b.rc;
    if (rc == AG_OK) {
        rc = ag_buf_append(&b.sql, "", 1);
        if (rc != AG_OK) {
            rc = ag_error_set(err, rc, "query too long");
        }
    } else if (rc != AG_ERR_INVALID && rc != AG_ERR_LIMIT) {
        rc = ag_error_set(err, rc, "query: out of memory");
    }
    if (rc == AG_OK) {
        StoreIndex *ix = store__index(s);
        rc = ix->ops->select(ix, (const char *)b.sql.data, b.params,
                             b.nparams, emit_row, &run, err);
        if (rc == AG_OK) {
            rc = run.rc;
        }
    }
    if (more != NULL) {
        *more = run.more;
    }
    ag_buf_deinit(&b.sql);
    ag_arena_destroy(a);
    return rc;
}
