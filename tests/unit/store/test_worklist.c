/*
 * test_worklist.c — the modality worklist (store.h, worklist.c) against a
 * real SQLite index in a temporary folder: items checked before they are
 * kept (and nothing kept when one is refused), identifiers made up when
 * absent, C-FIND matching (PS3.4 K.2.2.1: single value, wildcard, range,
 * sequence matching, fuzzy names) and the response identifier, department
 * scope, remove and purge; performed procedure steps (mpps.c, PS3.4
 * F.7) checked, made final, and followed by the worklist.
 */
#include "../test_util.h"

#include "dicom/dicom.h"
#include "store/store.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[64];
static char data_dir[128];
static Store *store;
static AgError err;
static AgArena *arena;

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    ag_fmt(tmp_root, sizeof tmp_root, "/tmp/agora-worklist-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    ag_fmt(data_dir, sizeof data_dir, "%s/data", tmp_root);
    StoreConfig cfg = {.data_dir = data_dir};
    ag_error_clear(&err);
    if (store_open(&cfg, &store, &err) != AG_OK) {
        return -1;
    }
    arena = ag_arena_create(16 << 20);
    return arena != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(store);
    ag_arena_destroy(arena);
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* An item as DICOM JSON; NULL leaves an attribute out; extra is more
 * top-level members (",\"...\": {...}") or "". */
static const char *item(const char *pid, const char *name,
                        const char *modality, const char *aet,
                        const char *date, const char *time,
                        const char *extra)
{
    char sps[1024] = "";
    size_t n = 0;
    const char *tags[] = {"00080060", "00400001", "00400002", "00400003"};
    const char *vrs[] = {"CS", "AE", "DA", "TM"};
    const char *vals[] = {modality, aet, date, time};
    for (int i = 0; i < 4; i++) {
        if (vals[i] != NULL) {
            n += (size_t)snprintf(sps + n, sizeof sps - n,
                                  "%s\"%s\": {\"vr\": \"%s\", "
                                  "\"Value\": [\"%s\"]}", n ? ", " : "",
                                  tags[i], vrs[i], vals[i]);
        }
    }
    char *out = ag_arena_printf(arena, "{\"00400100\": {\"vr\": \"SQ\", "
                                "\"Value\": [{%s}]}", sps);
    if (pid != NULL) {
        out = ag_arena_printf(arena, "%s, \"00100020\": {\"vr\": \"LO\", "
                              "\"Value\": [\"%s\"]}", out, pid);
    }
    if (name != NULL) {
        out = ag_arena_printf(arena, "%s, \"00100010\": {\"vr\": \"PN\", "
                              "\"Value\": [{\"Alphabetic\": \"%s\"}]}", out,
                              name);
    }
    return ag_arena_printf(arena, "%s%s}", out, extra);
}

static int64_t add(const char *json, const char *dept)
{
    int64_t id = 0;
    ag_error_clear(&err);
    int rc = store_worklist_add(store, json, strlen(json), dept, &id, &err);
    if (rc != AG_OK) {
        fail_msg("store_worklist_add: %s", err.msg);
    }
    return id;
}

static int count_fn(void *ctx, const StoreWorklistItem *it)
{
    (void)it;
    (*(int *)ctx)++;
    return 0;
}

static int listed(const StoreScope *scope)
{
    int n = 0;
    assert_int_equal(store_worklist_list(store, scope, count_fn, &n, &err),
                     AG_OK);
    return n;
}

/* Adding json fails with rc and a message containing what. */
static void refused(const char *json, const char *dept, int rc,
                    const char *what)
{
    ag_error_clear(&err);
    assert_int_equal(store_worklist_add(store, json, strlen(json), dept, NULL,
                                        &err), rc);
    if (strstr(err.msg, what) == NULL) {
        fail_msg("message \"%s\" does not name %s", err.msg, what);
    }
}

static void test_add_checks_every_required_attribute(void **state)
{
    (void)state;
    const char *T = "20261130", *H = "0930";
    refused("{not json", NULL, AG_ERR_INVALID, "DICOM JSON");
    refused(item("P1", NULL, "CT", "CT01", T, H, ""), NULL, AG_ERR_INVALID,
            "(0010,0010)");
    refused(item(NULL, "DOE^JANE", "CT", "CT01", T, H, ""), NULL,
            AG_ERR_INVALID, "(0010,0020)");
    refused(item("P1", "DOE^JANE", NULL, "CT01", T, H, ""), NULL,
            AG_ERR_INVALID, "(0008,0060)");
    refused(item("P1", "DOE^JANE", "CT", NULL, T, H, ""), NULL,
            AG_ERR_INVALID, "(0040,0001)");
    refused(item("P1", "DOE^JANE", "CT", "AN_AE_TITLE_TOO_LONG", T, H, ""),
            NULL, AG_ERR_INVALID, "(0040,0001)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", NULL, H, ""), NULL,
            AG_ERR_INVALID, "(0040,0002)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", "20261330", H, ""), NULL,
            AG_ERR_INVALID, "(0040,0002)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", T, NULL, ""), NULL,
            AG_ERR_INVALID, "(0040,0003)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", T, "2561", ""), NULL,
            AG_ERR_INVALID, "(0040,0003)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", T, H,
                 ", \"0020000D\": {\"vr\": \"UI\", \"Value\": [\"1..2\"]}"),
            NULL, AG_ERR_INVALID, "(0020,000D)");
    refused("{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"P1\"]}, "
            "\"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
            "\"A^B\"}]}}", NULL, AG_ERR_INVALID, "(0040,0100)");
    /* Two steps in one item: a response carries exactly one (K.6.1.2.2). */
    refused("{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"P1\"]}, "
            "\"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
            "\"A^B\"}]}, \"00400100\": {\"vr\": \"SQ\", \"Value\": [{}, {}]}}",
            NULL, AG_ERR_INVALID, "(0040,0100)");
    refused(item("P1", "DOE^JANE", "CT", "CT01", T, H, ""), "NO SUCH DEPT",
            AG_ERR_NOTFOUND, "NO SUCH DEPT");
    assert_int_equal(listed(&STORE_SCOPE_ALL), 0);
    add(item("P1", "DOE^JANE", "CT", "CT01", T, "093000.25", ""), NULL);
    assert_int_equal(listed(&STORE_SCOPE_ALL), 1);
}

typedef struct Got {
    DicomDataset *ds;
    char dept[64];
    int64_t id;
} Got;

static int got_fn(void *ctx, const StoreWorklistItem *it)
{
    Got *g = ctx;
    assert_int_equal(dicom_json_read(it->json, strlen(it->json), arena,
                                     &g->ds, &err), AG_OK);
    ag_fmt(g->dept, sizeof g->dept, "%s", it->department);
    g->id = it->id;
    return 0;
}

static const char *step_value(const DicomDataset *ds, uint32_t tag)
{
    const DicomElement *sq = dicom_dataset_find(ds, 0x00400100);
    assert_non_null(sq);
    assert_int_equal(sq->nitems, 1);
    return dicom_get_string(sq->items[0], tag, arena);
}

static void test_add_makes_up_missing_identifiers(void **state)
{
    (void)state;
    int64_t id = add(item("P7", "ROE^RICHARD", "MR", "MR01", "20261201",
                          "1400", ", \"00080050\": {\"vr\": \"SH\", "
                          "\"Value\": [\"ACC7\"]}"), NULL);
    Got g = {0};
    assert_int_equal(store_worklist_get(store, &STORE_SCOPE_ALL, id, got_fn,
                                        &g, &err), AG_OK);
    assert_int_equal(g.id, id);
    const char *uid = dicom_get_string(g.ds, 0x0020000d, arena);
    assert_non_null(uid);
    assert_true(strncmp(uid, "2.25.", 5) == 0);
    assert_true(dicom_uid_valid(uid, strlen(uid)));
    const char *rp = dicom_get_string(g.ds, 0x00401001, arena);
    const char *sps = step_value(g.ds, 0x00400009);
    assert_non_null(rp);
    assert_non_null(sps);
    assert_int_equal(strlen(rp), 14);
    assert_int_equal(strlen(sps), 14);
    assert_string_equal(dicom_get_string(g.ds, 0x00080050, arena), "ACC7");
    assert_string_equal(step_value(g.ds, 0x00080060), "MR");
    /* Given identifiers are kept as they are. */
    int64_t id2 = add(item("P8", "X^Y", "CT", "CT01", "20261201", "1500",
                           ", \"0020000D\": {\"vr\": \"UI\", \"Value\": "
                           "[\"1.2.3.4\"]}, \"00401001\": {\"vr\": \"SH\", "
                           "\"Value\": [\"RP9\"]}"), NULL);
    assert_int_equal(store_worklist_get(store, &STORE_SCOPE_ALL, id2, got_fn,
                                        &g, &err), AG_OK);
    assert_string_equal(dicom_get_string(g.ds, 0x0020000d, arena), "1.2.3.4");
    assert_string_equal(dicom_get_string(g.ds, 0x00401001, arena), "RP9");
    assert_int_equal(store_worklist_get(store, &STORE_SCOPE_ALL, id2 + 10,
                                        got_fn, &g, &err), AG_ERR_NOTFOUND);
}

/* ---- C-FIND ------------------------------------------------------------- */

typedef struct Matches {
    int n;
    char pids[512];
} Matches;

static int match_fn(void *ctx, const DicomDataset *m)
{
    Matches *ms = ctx;
    ms->n++;
    const char *pid = dicom_get_string(m, 0x00100020, arena);
    size_t n = strlen(ms->pids);
    ag_fmt(ms->pids + n, sizeof ms->pids - n, "%s%s", n ? "," : "",
           pid ? pid : "-");
    /* The response lives in the worklist's arena: check it here. */
    assert_string_equal(dicom_get_string(m, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                         arena), "ISO_IR 192");
    return 0;
}

/* Keys: PatientID, PatientName at the top, and a step item with Modality,
 * Station AE, date and time ("" = universal, NULL = absent). */
static DicomDataset *keys(const char *pid, const char *name,
                          const char *modality, const char *aet,
                          const char *date)
{
    DicomDataset *k = dicom_dataset_create(arena);
    DicomElement *sq;
    DicomDataset *it;
    assert_int_equal(dicom_set_string(k, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                      DICOM_VR_CS, "ISO_IR 192", NULL),
                     AG_OK);
    assert_int_equal(dicom_set_string(k, 0x00100020, DICOM_VR_LO,
                                      pid ? pid : "", NULL), AG_OK);
    assert_int_equal(dicom_set_string(k, 0x00100010, DICOM_VR_PN,
                                      name ? name : "", NULL), AG_OK);
    assert_int_equal(dicom_set_sequence(k, 0x00400100, &sq, NULL), AG_OK);
    assert_int_equal(dicom_sequence_append(k, sq, &it, NULL), AG_OK);
    assert_int_equal(dicom_set_string(it, 0x00080060, DICOM_VR_CS,
                                      modality ? modality : "", NULL), AG_OK);
    assert_int_equal(dicom_set_string(it, 0x00400001, DICOM_VR_AE,
                                      aet ? aet : "", NULL), AG_OK);
    assert_int_equal(dicom_set_string(it, 0x00400002, DICOM_VR_DA,
                                      date ? date : "", NULL), AG_OK);
    assert_int_equal(dicom_set_string(it, 0x00400003, DICOM_VR_TM, "",
                                      NULL), AG_OK);
    return k;
}

static const char *find(const DicomDataset *k, bool fuzzy,
                        const StoreScope *scope)
{
    static Matches ms;
    memset(&ms, 0, sizeof ms);
    ag_error_clear(&err);
    assert_int_equal(store_worklist_find(store, k, scope, fuzzy, match_fn,
                                         &ms, &err), AG_OK);
    return ms.pids;
}

static void four_items(void)
{
    add(item("P1", "DOE^JANE", "CT", "CT01", "20261130", "0900", ""), NULL);
    add(item("P2", "M\u00dcLLER^HANS", "MR", "MR01", "20261130", "1000", ""),
        NULL);
    add(item("P3", "DOE^JOHN", "CT", "CT01", "20261201", "0800", ""), NULL);
    add(item("P4", "SMITH^ANNA", "CT", "CT02", "20261130", "0700",
             ", \"00080050\": {\"vr\": \"SH\", \"Value\": [\"ACC4\"]}"),
        NULL);
}

static void test_find_matches_like_c_find(void **state)
{
    (void)state;
    four_items();
    const StoreScope *all = &STORE_SCOPE_ALL;
    /* Universal keys: every item, by scheduled date and time. */
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false, all),
                        "P4,P1,P2,P3");
    assert_string_equal(find(keys(NULL, NULL, "CT", NULL, NULL), false, all),
                        "P4,P1,P3");
    assert_string_equal(find(keys(NULL, NULL, "CT", NULL, "20261130"), false,
                             all), "P4,P1");
    assert_string_equal(find(keys(NULL, NULL, NULL, "CT01", NULL), false,
                             all), "P1,P3");
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, "20261201-"),
                             false, all), "P3");
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, "-20261130"),
                             false, all), "P4,P1,P2");
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL,
                                  "20261129-20261130"), false, all),
                        "P4,P1,P2");
    assert_string_equal(find(keys("P2", NULL, NULL, NULL, NULL), false, all),
                        "P2");
    assert_string_equal(find(keys("P?", NULL, "MR", NULL, NULL), false, all),
                        "P2");
    assert_string_equal(find(keys(NULL, "DOE^*", NULL, NULL, NULL), false,
                             all), "P1,P3");
    assert_string_equal(find(keys(NULL, "doe^*", NULL, NULL, NULL), false,
                             all), "");
    assert_string_equal(find(keys(NULL, "doe^*", NULL, NULL, NULL), true,
                             all), "P1,P3");
    assert_string_equal(find(keys(NULL, "M\u00dcLLER*", NULL, NULL, NULL),
                             false, all), "P2");
    assert_string_equal(find(keys(NULL, NULL, "US", NULL, NULL), false, all),
                        "");
    assert_string_equal(find(keys("P1", NULL, "MR", NULL, NULL), false, all),
                        "");
}

static int check_answer(void *ctx, const DicomDataset *m)
{
    (void)ctx;
    const DicomElement *ref = dicom_dataset_find(m, 0x00080090);
    assert_non_null(ref);
    assert_int_equal(ref->length, 0);
    assert_string_equal(dicom_get_string(m, 0x00080050, arena), "ACC4");
    assert_string_equal(dicom_get_string(m, 0x00100010, arena),
                        "SMITH^ANNA");
    /* Not asked: not answered, even though the item holds it. */
    assert_null(dicom_dataset_find(m, 0x0020000d));
    const DicomElement *sq = dicom_dataset_find(m, 0x00400100);
    assert_non_null(sq);
    assert_int_equal(sq->nitems, 1);
    const DicomDataset *it = sq->items[0];
    assert_string_equal(dicom_get_string(it, 0x00080060, arena), "CT");
    assert_string_equal(dicom_get_string(it, 0x00400001, arena), "CT02");
    assert_string_equal(dicom_get_string(it, 0x00400003, arena), "0700");
    assert_null(dicom_dataset_find(it, 0x00400009));   /* not asked */
    return 0;
}

static int check_whole_step(void *ctx, const DicomDataset *m)
{
    (void)ctx;
    const DicomElement *sq = dicom_dataset_find(m, 0x00400100);
    assert_non_null(sq);
    assert_int_equal(sq->nitems, 1);
    /* An empty sequence key: the whole step, made-up SPS ID too. */
    assert_non_null(dicom_dataset_find(sq->items[0], 0x00400009));
    assert_string_equal(dicom_get_string(sq->items[0], 0x00400002, arena),
                        "20261130");
    return 0;
}

static void test_find_response_identifier(void **state)
{
    (void)state;
    four_items();
    DicomDataset *k = keys("P4", "", NULL, NULL, NULL);
    dicom_set_string(k, 0x00080090, DICOM_VR_PN, "", NULL);
    dicom_set_string(k, 0x00080050, DICOM_VR_SH, "", NULL);
    assert_int_equal(store_worklist_find(store, k, &STORE_SCOPE_ALL, false,
                                         check_answer, NULL, &err), AG_OK);
    DicomDataset *k2 = dicom_dataset_create(arena);
    DicomElement *sq;
    dicom_set_string(k2, 0x00100020, DICOM_VR_LO, "P1", NULL);
    assert_int_equal(dicom_set_sequence(k2, 0x00400100, &sq, NULL), AG_OK);
    assert_int_equal(store_worklist_find(store, k2, &STORE_SCOPE_ALL, false,
                                         check_whole_step, NULL, &err),
                     AG_OK);
}

static void test_find_key_in_another_character_set(void **state)
{
    (void)state;
    add(item("P\u00c41", "X^Y", "CT", "CT01", "20261130", "0900", ""), NULL);
    add(item("P2", "X^Z", "CT", "CT01", "20261130", "0900", ""), NULL);
    /* A Latin-1 query for the same ID: matched by its meaning, not its
     * bytes (the stored item is UTF-8). */
    DicomDataset *k = dicom_dataset_create(arena);
    assert_int_equal(dicom_set_string(k, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                      DICOM_VR_CS, "ISO_IR 100", NULL),
                     AG_OK);
    assert_int_equal(dicom_set_bytes(k, 0x00100020, DICOM_VR_LO, "P\xc4" "1",
                                     3, NULL), AG_OK);
    static Matches ms;
    memset(&ms, 0, sizeof ms);
    assert_int_equal(store_worklist_find(store, k, &STORE_SCOPE_ALL, false,
                                         match_fn, &ms, &err), AG_OK);
    assert_int_equal(ms.n, 1);
}

/* ---- scope, remove, purge ------------------------------------------------- */

static int64_t new_dept(const char *name)
{
    const char *p[] = {name};
    int64_t id = 0;
    assert_int_equal(store_sql_exec(store, "INSERT INTO departments (name, "
                                    "created_at) VALUES (?1, 0)", p, 1, NULL,
                                    &id, &err), AG_OK);
    return id;
}

static void test_scope_and_remove(void **state)
{
    (void)state;
    int64_t card = new_dept("CARDIOLOGY");
    new_dept("ONCOLOGY");
    int64_t a = add(item("C1", "HEART^A", "US", "ECHO1", "20261130", "0800",
                         ""), "CARDIOLOGY");
    int64_t b = add(item("O1", "ONCO^B", "CT", "CT01", "20261130", "0900",
                         ""), "ONCOLOGY");
    int64_t c = add(item("N1", "NONE^C", "CT", "CT01", "20261130", "1000",
                         ""), NULL);
    StoreScope cardio = {.depts = {card}, .ndepts = 1};
    StoreScope nobody = {0};
    StoreScope link = {.all = true, .only_study = "1.2.3"};
    assert_int_equal(listed(&STORE_SCOPE_ALL), 3);
    assert_int_equal(listed(&cardio), 1);
    assert_int_equal(listed(&nobody), 0);
    assert_int_equal(listed(&link), 0);
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false,
                             &cardio), "C1");
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false,
                             &nobody), "");
    Got g = {0};
    assert_int_equal(store_worklist_get(store, &cardio, a, got_fn, &g, &err),
                     AG_OK);
    assert_string_equal(g.dept, "CARDIOLOGY");
    /* Out of scope answers like absent, for reading and for removing. */
    assert_int_equal(store_worklist_get(store, &cardio, b, got_fn, &g, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(store_worklist_remove(store, &cardio, c, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(listed(&STORE_SCOPE_ALL), 3);
    assert_int_equal(store_worklist_remove(store, &cardio, a, &err), AG_OK);
    assert_int_equal(store_worklist_remove(store, &cardio, a, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(listed(&STORE_SCOPE_ALL), 2);
}

static void test_purge_before_a_date(void **state)
{
    (void)state;
    four_items();
    uint64_t n = 99;
    assert_int_equal(store_worklist_purge(store, "2026113", &n, &err),
                     AG_ERR_INVALID);
    assert_int_equal(store_worklist_purge(store, "20261130", &n, &err),
                     AG_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_worklist_purge(store, "20261201", &n, &err),
                     AG_OK);
    assert_int_equal(n, 3);
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false,
                             &STORE_SCOPE_ALL), "P3");
}


/* ---- performed procedure steps (mpps.c) ----------------------------------- */

/* An MPPS data set performing step sps_id of study (NULL: no sequence). */
static DicomDataset *pps(const char *status, const char *study,
                         const char *sps_id)
{
    DicomDataset *ds = dicom_dataset_create(arena);
    assert_int_equal(dicom_set_string(ds, 0x00400252, DICOM_VR_CS, status,
                                      NULL), AG_OK);
    assert_int_equal(dicom_set_string(ds, 0x00100020, DICOM_VR_LO, "P1",
                                      NULL), AG_OK);
    if (study != NULL) {
        DicomElement *sq;
        DicomDataset *it;
        assert_int_equal(dicom_set_sequence(ds, 0x00400270, &sq, NULL),
                         AG_OK);
        assert_int_equal(dicom_sequence_append(ds, sq, &it, NULL), AG_OK);
        assert_int_equal(dicom_set_string(it, 0x0020000d, DICOM_VR_UI, study,
                                          NULL), AG_OK);
        assert_int_equal(dicom_set_string(it, 0x00400009, DICOM_VR_SH,
                                          sps_id, NULL), AG_OK);
    }
    return ds;
}

/* A worklist item of study whose step has id sps_id. */
static int64_t scheduled(const char *pid, const char *study,
                         const char *sps_id, const char *dept)
{
    const char *json = ag_arena_printf(arena,
        "{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"%s\"]}, "
        "\"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
        "\"A^B\"}]}, \"0020000D\": {\"vr\": \"UI\", \"Value\": "
        "[\"%s\"]}, \"00400100\": {\"vr\": \"SQ\", \"Value\": [{"
        "\"00080060\": {\"vr\": \"CS\", \"Value\": [\"CT\"]}, "
        "\"00400001\": {\"vr\": \"AE\", \"Value\": [\"CT01\"]}, "
        "\"00400002\": {\"vr\": \"DA\", \"Value\": [\"20261130\"]}, "
        "\"00400003\": {\"vr\": \"TM\", \"Value\": [\"0900\"]}, "
        "\"00400009\": {\"vr\": \"SH\", \"Value\": [\"%s\"]}}]}}",
        pid, study, sps_id);
    return add(json, dept);
}

/* The step status of worklist item id, as stored. */
static const char *step_status(int64_t id)
{
    Got g = {0};
    assert_int_equal(store_worklist_get(store, &STORE_SCOPE_ALL, id, got_fn,
                                        &g, &err), AG_OK);
    return step_value(g.ds, 0x00400020);
}

static int create_pps(const char *uid, DicomDataset *ds,
                      const StoreScope *scope, uint32_t *bad)
{
    char u[65];
    ag_fmt(u, sizeof u, "%s", uid);
    *bad = 0;
    ag_error_clear(&err);
    return store_mpps_create(store, u, ds, scope, "CT01", bad, &err);
}

static void test_mpps_moves_the_worklist_along(void **state)
{
    (void)state;
    int64_t w = scheduled("P1", "1.2.3.1", "SPS1", NULL);
    int64_t other = scheduled("P2", "1.2.3.1", "SPS2", NULL);
    assert_string_equal(step_status(w), "SCHEDULED");
    uint32_t bad;
    assert_int_equal(create_pps("1.2.9.1", pps("IN PROGRESS", "1.2.3.1",
                                               "SPS1"), &STORE_SCOPE_ALL,
                                &bad), AG_OK);
    assert_string_equal(step_status(w), "STARTED");
    assert_string_equal(step_status(other), "SCHEDULED");   /* not its step */
    /* Started steps stay on the list; done ones leave it. */
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false,
                             &STORE_SCOPE_ALL), "P1,P2");
    DicomDataset *done = dicom_dataset_create(arena);
    dicom_set_string(done, 0x00400252, DICOM_VR_CS, "COMPLETED", NULL);
    dicom_set_string(done, 0x00400250, DICOM_VR_DA, "20261130", NULL);
    assert_int_equal(store_mpps_set(store, "1.2.9.1", done, &STORE_SCOPE_ALL,
                                    &bad, &err), AG_OK);
    assert_string_equal(step_status(w), "COMPLETED");
    assert_string_equal(find(keys(NULL, NULL, NULL, NULL, NULL), false,
                             &STORE_SCOPE_ALL), "P2");
    /* ... unless the status is asked for. */
    DicomDataset *k = keys(NULL, NULL, NULL, NULL, NULL);
    DicomElement *sq = dicom_dataset_find(k, 0x00400100);
    dicom_set_string(sq->items[0], 0x00400020, DICOM_VR_CS, "COMPLETED",
                     NULL);
    assert_string_equal(find(k, false, &STORE_SCOPE_ALL), "P1");
    /* Final: no more changes (F.7.2.2.2). */
    assert_int_equal(store_mpps_set(store, "1.2.9.1", done, &STORE_SCOPE_ALL,
                                    &bad, &err), AG_ERR_DENIED);
    assert_non_null(strstr(err.msg, "no longer be updated"));
}

typedef struct Steps {
    int n;
    bool merged;   /* the discontinued step kept N-CREATE's and N-SET's */
} Steps;

static int step_fn(void *ctx, const StoreMpps *m)
{
    Steps *st = ctx;
    st->n++;
    if (strcmp(m->status, "DISCONTINUED") == 0) {
        st->merged = strstr(m->json, "00400250") != NULL &&
                     strstr(m->json, "00400270") != NULL &&
                     strcmp(m->study_uid, "1.2.3") == 0;
    }
    return 0;
}

static void test_mpps_refusals(void **state)
{
    (void)state;
    uint32_t bad;
    const StoreScope *all = &STORE_SCOPE_ALL;
    assert_int_equal(create_pps("1.2.9.2", pps("COMPLETED", "1.2.3", "S"),
                                all, &bad), AG_ERR_INVALID);
    assert_int_equal(bad, 0x00400252);
    assert_int_equal(create_pps("1.2.9.2", pps("IN PROGRESS", NULL, NULL),
                                all, &bad), AG_ERR_INVALID);
    assert_int_equal(bad, 0x00400270);
    assert_int_equal(create_pps("1.2.9.2", pps("IN PROGRESS", "1..3", "S"),
                                all, &bad), AG_ERR_INVALID);
    assert_int_equal(create_pps("1.2.x", pps("IN PROGRESS", "1.2.3", "S"),
                                all, &bad), AG_ERR_INVALID);
    DicomDataset *ds = pps("IN PROGRESS", "1.2.3", "S");
    dicom_set_string(ds, 0x00400244, DICOM_VR_DA, "2026-11-30", NULL);
    assert_int_equal(create_pps("1.2.9.2", ds, all, &bad), AG_ERR_INVALID);
    assert_int_equal(bad, 0x00400244);
    assert_int_equal(create_pps("1.2.9.2", pps("IN PROGRESS", "1.2.3", "S"),
                                all, &bad), AG_OK);
    assert_int_equal(create_pps("1.2.9.2", pps("IN PROGRESS", "1.2.3", "S"),
                                all, &bad), AG_ERR_EXISTS);
    /* An SCU that gives no UID gets one made up. */
    char u[65] = "";
    assert_int_equal(store_mpps_create(store, u, pps("IN PROGRESS", "1.2.3",
                                                     "S"), all, "X", &bad,
                                       &err), AG_OK);
    assert_true(strncmp(u, "2.25.", 5) == 0);
    DicomDataset *odd = dicom_dataset_create(arena);
    dicom_set_string(odd, 0x00400252, DICOM_VR_CS, "PAUSED", NULL);
    assert_int_equal(store_mpps_set(store, "1.2.9.2", odd, all, &bad, &err),
                     AG_ERR_INVALID);
    assert_int_equal(store_mpps_set(store, "1.2.9.404", odd, all, &bad,
                                    &err), AG_ERR_NOTFOUND);
    DicomDataset *end = dicom_dataset_create(arena);
    dicom_set_string(end, 0x00400250, DICOM_VR_DA, "20261130", NULL);
    dicom_set_string(end, 0x00400252, DICOM_VR_CS, "DISCONTINUED", NULL);
    assert_int_equal(store_mpps_set(store, "1.2.9.2", end, all, &bad, &err),
                     AG_OK);
    Steps st = {0};
    StoreScope nobody = {0};
    assert_int_equal(store_mpps_list(store, &nobody, step_fn, &st, &err),
                     AG_OK);
    assert_int_equal(st.n, 0);
    assert_int_equal(store_mpps_list(store, all, step_fn, &st, &err), AG_OK);
    assert_int_equal(st.n, 2);
    assert_true(st.merged);
}

static void test_mpps_follows_only_in_scope(void **state)
{
    (void)state;
    int64_t card = new_dept("CARDIOLOGY");
    new_dept("RADIOLOGY");
    int64_t r = scheduled("R1", "1.2.4.1", "SR", "RADIOLOGY");
    int64_t c = scheduled("C1", "1.2.4.2", "SC", "CARDIOLOGY");
    StoreScope cardio = {.depts = {card}, .ndepts = 1};
    uint32_t bad;
    assert_int_equal(create_pps("1.2.9.3", pps("IN PROGRESS", "1.2.4.1",
                                               "SR"), &cardio, &bad), AG_OK);
    assert_int_equal(create_pps("1.2.9.4", pps("IN PROGRESS", "1.2.4.2",
                                               "SC"), &cardio, &bad), AG_OK);
    assert_string_equal(step_status(r), "SCHEDULED");
    assert_string_equal(step_status(c), "STARTED");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_add_checks_every_required_attribute),
        T(test_add_makes_up_missing_identifiers),
        T(test_find_matches_like_c_find),
        T(test_find_response_identifier),
        T(test_find_key_in_another_character_set),
        T(test_scope_and_remove),
        T(test_purge_before_a_date),
        T(test_mpps_moves_the_worklist_along),
        T(test_mpps_refusals),
        T(test_mpps_follows_only_in_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
