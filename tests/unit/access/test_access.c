/*
 * test_access.c — users, credentials, rate limits and the access filter
 * against a real store (SQLite index and blobs in a temporary folder):
 * what each scope sees through store_query, including patient-level
 * counts, shares, lists, break-the-glass and share links.
 */
#include "../test_util.h"

#include "access/access.h"
#include "dicom/dicom.h"
#include "store/store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define ROOT "1.2.826.0.1.3680043.10.543.77"

static char tmp_root[64];
static Store *store;
static Access *acc;
static AgError err;

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

/* Store one instance of study n (patient pid) with tag set to value
 * (unless NULL), sent by calling AE title ae (or none). */
static void ingest_with(int n, const char *pid, uint32_t tag,
                        const char *value, const char *ae)
{
    AgArena *a = ag_arena_create(8 << 20);
    DicomFile *f = ag_arena_zalloc(a, sizeof *f);
    DicomDataset *ds = dicom_dataset_create(a);
    f->dataset = ds;
    char study[64], series[64], sop[64];
    ag_fmt(study, sizeof study, "%s.1.%d", ROOT, n);
    ag_fmt(series, sizeof series, "%s.2.%d", ROOT, n);
    ag_fmt(sop, sizeof sop, "%s.3.%d", ROOT, n);
    dicom_set_string(ds, DICOM_TAG_SOP_CLASS_UID, 0,
                     "1.2.840.10008.5.1.4.1.1.7", NULL);
    dicom_set_string(ds, DICOM_TAG_SOP_INSTANCE_UID, 0, sop, NULL);
    dicom_set_string(ds, DICOM_TAG_PATIENT_ID, 0, pid, NULL);
    dicom_set_string(ds, DICOM_TAG_STUDY_INSTANCE_UID, 0, study, NULL);
    dicom_set_string(ds, DICOM_TAG_SERIES_INSTANCE_UID, 0, series, NULL);
    if (tag != DICOM_TAG(0x0008, 0x0060)) {
        dicom_set_string(ds, DICOM_TAG(0x0008, 0x0060), 0, "OT", NULL);
    }
    if (value != NULL) {
        dicom_set_string(ds, tag, 0, value, NULL);
    }
    AgBuf b;
    ag_buf_init(&b, 0);
    AgError e;
    assert_int_equal(dicom_file_build_meta(f, DICOM_TS_EXPLICIT_LE, &e),
                     AG_OK);
    assert_int_equal(dicom_write_file(f, NULL, NULL, dicom_sink_buf, &b, &e),
                     AG_OK);
    StoreResult r;
    StoreSource src = {.calling_ae = ae, .via = "dimse"};
    assert_int_equal(store_ingest_buffer(store, b.data, b.len,
                                         ae != NULL ? &src : NULL, &r, &e),
                     AG_OK);
    ag_buf_deinit(&b);
    ag_arena_destroy(a);
}

/* Store one instance of study n (patient pid) from department dept. */
static void ingest(int n, const char *pid, const char *dept)
{
    ingest_with(n, pid, DICOM_TAG(0x0008, 0x1040), dept, NULL);
}

static const char *study_uid(int n)
{
    static char u[4][64];
    static int k;
    char *s = u[k++ % 4];
    ag_fmt(s, 64, "%s.1.%d", ROOT, n);
    return s;
}

static int setup(void **state)
{
    (void)state;
    ag_fmt(tmp_root, sizeof tmp_root, "/tmp/agora-access-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    StoreConfig cfg = {.data_dir = tmp_root};
    AccessConfig acfg = {0};
    if (store_open(&cfg, &store, &err) != AG_OK) {
        return -1;
    }
    acfg.store = store;
    if (access_open(&acfg, &acc, &err) != AG_OK) {
        return -1;
    }
    /* radiology: studies 1 and 2 (patient A); cardiology: 3 (patient A);
     * none: 4 (patient B). */
    if (access_dept_add(acc, "radiology", NULL, &err) != AG_OK ||
        access_dept_add(acc, "cardiology", NULL, &err) != AG_OK ||
        access_dept_rule(acc, "radiology", "department", "rad", true,
                         &err) != AG_OK ||
        access_dept_rule(acc, "cardiology", "department", "CARD", true,
                         &err) != AG_OK) {
        return -1;
    }
    ingest(1, "A", "RAD");
    ingest(2, "A", "Rad");
    ingest(3, "A", "CARD");
    ingest(4, "B", NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    access_close(acc);
    store_close(store);
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- what a scope sees ------------------------------------------------------ */

typedef struct Seen {
    int n;
    int64_t related;     /* NumberOfPatientRelatedStudies of the last row */
} Seen;

static int count_row(void *ctx, const DicomDataset *m)
{
    Seen *s = ctx;
    s->n++;
    dicom_get_int(m, 0x00201200, &s->related);
    return 0;
}

static Seen query(const StoreScope *sc, StoreLevel level, const char *pid)
{
    AgArena *a = ag_arena_create(1 << 20);
    DicomDataset *k = dicom_dataset_create(a);
    dicom_set_string(k, DICOM_TAG_PATIENT_ID, 0, pid ? pid : "", NULL);
    dicom_set_string(k, 0x00201200, 0, "", NULL);
    StoreQuery q = {.level = level, .keys = k, .patient_root = true,
                    .scope = sc};
    Seen s = {0};
    assert_int_equal(store_query(store, &q, count_row, &s, NULL, &err),
                     AG_OK);
    ag_arena_destroy(a);
    return s;
}

static void user(const char *name, const char *role, const char *dept,
                 AccessPrincipal *p)
{
    assert_int_equal(access_user_add(acc, name, "password-123", role, &err),
                     AG_OK);
    if (dept != NULL) {
        assert_int_equal(access_user_join(acc, name, dept, true, &err),
                         AG_OK);
    }
    assert_int_equal(access_user_principal(acc, name, p, &err), AG_OK);
}

static void test_roles_and_verbs(void **state)
{
    (void)state;
    assert_true(access_role_verbs("admin") & ACCESS_ADMIN);
    assert_int_equal(access_role_verbs("viewer"), ACCESS_VIEW);
    assert_false(access_role_verbs("clinician") & ACCESS_UPLOAD);
    assert_true(access_role_verbs("technologist") & ACCESS_UPLOAD);
    assert_int_equal(access_role_verbs("auditor"), ACCESS_AUDIT_READ);
    assert_int_equal(access_role_verbs("emperor"), 0);
    assert_int_equal(access_verb_from_name("audit-read"), ACCESS_AUDIT_READ);
    assert_int_equal(access_verb_from_name("fly"), 0);
}

static void test_department_scope(void **state)
{
    (void)state;
    AccessPrincipal rad, card, none;
    user("r1", "radiologist", "radiology", &rad);
    user("c1", "clinician", "cardiology", &card);
    user("n1", "viewer", NULL, &none);
    assert_int_equal(query(&rad.scope, STORE_LEVEL_STUDY, NULL).n, 2);
    assert_int_equal(query(&card.scope, STORE_LEVEL_STUDY, NULL).n, 1);
    assert_int_equal(query(&none.scope, STORE_LEVEL_STUDY, NULL).n, 0);
    assert_int_equal(query(&STORE_SCOPE_ALL, STORE_LEVEL_STUDY, NULL).n, 4);
    assert_int_equal(query(NULL, STORE_LEVEL_STUDY, NULL).n, 4);
    /* patient level: A only, with the studies in scope counted */
    Seen p = query(&card.scope, STORE_LEVEL_PATIENT, NULL);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.related, 1);
    p = query(&rad.scope, STORE_LEVEL_PATIENT, "A");
    assert_int_equal(p.related, 2);
    assert_int_equal(query(&STORE_SCOPE_ALL, STORE_LEVEL_PATIENT, "A").related,
                     3);
    assert_true(store_study_visible(store, &card.scope, study_uid(3)));
    assert_false(store_study_visible(store, &card.scope, study_uid(1)));
    assert_false(store_study_visible(store, &STORE_SCOPE_ALL, ROOT ".9.9"));
    /* manual assignment */
    assert_int_equal(access_study_assign(acc, study_uid(4), "cardiology",
                                         true, &err), AG_OK);
    assert_true(store_study_visible(store, &card.scope, study_uid(4)));
    assert_int_equal(access_study_assign(acc, study_uid(4), "cardiology",
                                         false, &err), AG_OK);
    assert_false(store_study_visible(store, &card.scope, study_uid(4)));
    assert_int_equal(access_study_assign(acc, ROOT ".9.9", "cardiology",
                                         true, &err), AG_ERR_NOTFOUND);
}

static void test_shares_lists_and_glass(void **state)
{
    (void)state;
    AccessPrincipal rad, card;
    user("r2", "radiologist", "radiology", &rad);
    user("c2", "clinician", "cardiology", &card);
    char link[64];
    int64_t id = 0;
    /* cannot share what one cannot see */
    AccessShare sh = {.study_uid = study_uid(1), .department = "radiology"};
    assert_int_equal(access_share(acc, &card, &sh, link, &id, &err),
                     AG_ERR_NOTFOUND);
    sh = (AccessShare){.study_uid = study_uid(3), .user = "r2"};
    assert_int_equal(access_share(acc, &card, &sh, link, &id, &err), AG_OK);
    assert_true(store_study_visible(store, &rad.scope, study_uid(3)));
    assert_int_equal(query(&rad.scope, STORE_LEVEL_STUDY, NULL).n, 3);
    json_t *j = access_shares_json(acc, &card, study_uid(3), &err);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);
    assert_int_equal(access_unshare(acc, &card, id, &err), AG_OK);
    assert_false(store_study_visible(store, &rad.scope, study_uid(3)));
    /* exactly one target */
    sh = (AccessShare){.study_uid = study_uid(3), .user = "r2",
                       .department = "radiology"};
    assert_int_equal(access_share(acc, &card, &sh, link, &id, &err),
                     AG_ERR_INVALID);
    /* a list */
    assert_int_equal(access_list_add(acc, "board", "c2", &err), AG_OK);
    assert_int_equal(access_list_member(acc, "board", "r2", true, &err),
                     AG_OK);
    sh = (AccessShare){.study_uid = study_uid(3), .list = "board"};
    assert_int_equal(access_share(acc, &card, &sh, link, &id, &err), AG_OK);
    assert_true(store_study_visible(store, &rad.scope, study_uid(3)));
    assert_int_equal(access_list_member(acc, "board", "r2", false, &err),
                     AG_OK);
    assert_false(store_study_visible(store, &rad.scope, study_uid(3)));
    /* a link: one study, view only */
    sh = (AccessShare){.study_uid = study_uid(3), .link = true};
    assert_int_equal(access_share(acc, &card, &sh, link, &id, &err), AG_OK);
    AccessPrincipal lp, copy;
    assert_int_equal(access_authenticate(acc, link, &lp, &err), AG_OK);
    access_copy(&copy, &lp);
    assert_int_equal(copy.kind, ACCESS_KIND_LINK);
    assert_int_equal(copy.verbs, ACCESS_VIEW);
    assert_ptr_equal(copy.scope.only_study, copy.study_uid);
    assert_int_equal(query(&copy.scope, STORE_LEVEL_STUDY, NULL).n, 1);
    assert_int_equal(query(&copy.scope, STORE_LEVEL_PATIENT, NULL).related,
                     1);
    assert_int_equal(access_unshare(acc, &card, id, &err), AG_OK);
    assert_int_equal(access_authenticate(acc, link, &lp, &err),
                     AG_ERR_NOTFOUND);
    /* break the glass */
    assert_int_equal(access_break_glass(acc, &rad, study_uid(4), "short",
                                        0, &err), AG_ERR_INVALID);
    assert_int_equal(access_break_glass(acc, &rad, ROOT ".9.9",
                                        "a long enough reason", 0, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_break_glass(acc, &rad, study_uid(4),
                                        "a long enough reason", 60, &err),
                     AG_OK);
    assert_true(store_study_visible(store, &rad.scope, study_uid(4)));
    j = access_break_glass_json(acc, &err);
    assert_true(json_array_size(j) >= 1);
    json_decref(j);
    /* expired: gone */
    assert_int_equal(store_sql_exec(store, "UPDATE break_glass SET"
                                    " expires_at = 1", NULL, 0, NULL, NULL,
                                    &err), AG_OK);
    assert_false(store_study_visible(store, &rad.scope, study_uid(4)));
}

static void test_login_tokens_and_limits(void **state)
{
    (void)state;
    AccessPrincipal p;
    user("u3", "viewer", "radiology", &p);
    uint32_t wait = 0;
    assert_int_equal(access_login(acc, "u3", "password-123", "10.0.0.1", &p,
                                  &wait), ACCESS_LOGIN_OK);
    assert_int_equal(access_login(acc, "nobody", "password-123", "10.0.0.1",
                                  &p, &wait), ACCESS_LOGIN_BAD);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(access_login(acc, "u3", "wrong", "10.0.0.2", &p,
                                      &wait), ACCESS_LOGIN_BAD);
    }
    assert_int_equal(access_login(acc, "u3", "password-123", "10.0.0.3", &p,
                                  &wait), ACCESS_LOGIN_LIMITED);
    assert_true(wait > 0 && wait <= 301);
    /* tokens: made, resolved, revoked, expired; disabled users lose them */
    assert_int_equal(access_user_principal(acc, "u3", &p, &err), AG_OK);
    char tok[64];
    int64_t id = 0;
    assert_int_equal(access_credential_create(acc, &p, "token", "t", 3600,
                                              tok, &id, &err), AG_OK);
    assert_true(strncmp(tok, "agt_", 4) == 0);
    AccessPrincipal q;
    assert_int_equal(access_authenticate(acc, tok, &q, &err), AG_OK);
    assert_string_equal(q.name, "u3");
    assert_int_equal(q.credential_id, id);
    json_t *j = access_tokens_json(acc, &p, &err);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);
    assert_int_equal(access_revoke(acc, &p, id, &err), AG_OK);
    assert_int_equal(access_authenticate(acc, tok, &q, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_credential_create(acc, &p, "session", NULL, 0,
                                              tok, &id, &err), AG_OK);
    assert_int_equal(access_authenticate(acc, tok, &q, &err), AG_OK);
    assert_int_equal(access_user_disable(acc, "u3", true, &err), AG_OK);
    assert_int_equal(access_authenticate(acc, tok, &q, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_authenticate(acc, "short", &q, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_credential_create(acc, &p, "token", NULL,
                                              400u * 86400u, tok, &id, &err),
                     AG_ERR_INVALID);
}

static void test_bad_input(void **state)
{
    (void)state;
    assert_int_equal(access_user_add(acc, "a b", "password-123", "viewer",
                                     &err), AG_ERR_INVALID);
    assert_int_equal(access_user_add(acc, "", "password-123", "viewer",
                                     &err), AG_ERR_INVALID);
    assert_int_equal(access_user_add(acc, "ok", "short", "viewer", &err),
                     AG_ERR_INVALID);
    assert_int_equal(access_user_add(acc, "ok", "password-123", "god", &err),
                     AG_ERR_INVALID);
    assert_int_equal(access_user_add(acc, "ok", "password-123", "viewer",
                                     &err), AG_OK);
    assert_int_equal(access_user_add(acc, "ok", "password-123", "viewer",
                                     &err), AG_ERR_EXISTS);
    assert_int_equal(access_dept_rule(acc, "radiology", "colour", "x", true,
                                      &err), AG_ERR_INVALID);
    assert_int_equal(access_dept_rule(acc, "nowhere", "ae", "x", true, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_user_join(acc, "ok", "nowhere", true, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(access_user_role(acc, "ghost", "viewer", &err),
                     AG_ERR_NOTFOUND);
    json_t *u = access_users_json(acc, &err);
    assert_true(json_array_size(u) >= 1);
    json_decref(u);
    json_t *d = access_depts_json(acc, &err);
    assert_int_equal(json_array_size(d), 2);
    json_decref(d);
    char pw[33];
    bool created = true;
    assert_int_equal(access_bootstrap(acc, NULL, pw, &created, &err), AG_OK);
    assert_false(created);   /* users exist */
}

/* Each field a rule can name routes a new study to its department, and
 * only that one; values match whatever their case. */
static void test_every_rule_field_routes(void **state)
{
    (void)state;
    static const struct {
        const char *dept, *field, *rule;
        uint32_t tag;
        const char *value, *ae;
    } cases[] = {
        {"er", "ae", "ER_CT1", 0, NULL, "er_ct1"},
        {"onco", "institution", "ST ELSEWHERE", DICOM_TAG(0x0008, 0x0080),
         "St Elsewhere", NULL},
        {"surgery", "service", "SURG", DICOM_TAG(0x0032, 0x1033), "surg",
         NULL},
        {"vascular", "modality", "XA", DICOM_TAG(0x0008, 0x0060), "XA",
         NULL},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    AccessPrincipal p[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(access_dept_add(acc, cases[i].dept, NULL, &err),
                         AG_OK);
        assert_int_equal(access_dept_rule(acc, cases[i].dept, cases[i].field,
                                          cases[i].rule, true, &err),
                         AG_OK);
        char name[32];
        ag_fmt(name, sizeof name, "u-%s", cases[i].dept);
        user(name, "viewer", cases[i].dept, &p[i]);
    }
    for (int i = 0; i < N; i++) {
        ingest_with(10 + i, "C", cases[i].tag, cases[i].value, cases[i].ae);
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < N; k++) {
            if (store_study_visible(store, &p[i].scope, study_uid(10 + k)) !=
                (i == k)) {
                fail_msg("rule %s=%s: study %d %s to %s", cases[i].field,
                         cases[i].rule, 10 + k, i == k ? "not routed"
                                                       : "routed wrongly",
                         cases[i].dept);
            }
        }
        assert_int_equal(query(&p[i].scope, STORE_LEVEL_STUDY, NULL).n, 1);
    }
}

/* A scope holds STORE_SCOPE_MAX_DEPTS departments: joining one more is
 * refused with a reason, never kept and then left out of the scope. */
static void test_department_cap(void **state)
{
    (void)state;
    assert_int_equal(access_user_add(acc, "many", "password-123", "viewer",
                                     &err), AG_OK);
    char name[32];
    for (int i = 0; i <= STORE_SCOPE_MAX_DEPTS; i++) {
        ag_fmt(name, sizeof name, "ward%d", i);
        assert_int_equal(access_dept_add(acc, name, NULL, &err), AG_OK);
    }
    for (int i = 0; i < STORE_SCOPE_MAX_DEPTS; i++) {
        ag_fmt(name, sizeof name, "ward%d", i);
        assert_int_equal(access_user_join(acc, "many", name, true, &err),
                         AG_OK);
    }
    ag_fmt(name, sizeof name, "ward%d", STORE_SCOPE_MAX_DEPTS);
    assert_int_equal(access_user_join(acc, "many", name, true, &err),
                     AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "departments"));
    /* Joining one it is in again changes nothing and is no error. */
    assert_int_equal(access_user_join(acc, "many", "ward3", true, &err),
                     AG_OK);
    AccessPrincipal p;
    assert_int_equal(access_user_principal(acc, "many", &p, &err), AG_OK);
    assert_int_equal(p.scope.ndepts, STORE_SCOPE_MAX_DEPTS);
    /* Leaving one makes room. */
    assert_int_equal(access_user_join(acc, "many", "ward3", false, &err),
                     AG_OK);
    assert_int_equal(access_user_join(acc, "many", name, true, &err), AG_OK);
    assert_int_equal(access_user_principal(acc, "many", &p, &err), AG_OK);
    assert_int_equal(p.scope.ndepts, STORE_SCOPE_MAX_DEPTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles_and_verbs),
        cmocka_unit_test_setup_teardown(test_department_scope, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shares_lists_and_glass, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_login_tokens_and_limits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_rule_field_routes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_department_cap, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
