/*
 * test_settings.c — the run-time settings (store.h, settings.c) against a
 * real SQLite index in a temporary folder: defaults and the StoreConfig's
 * values, checking, a change stored and applied (or, when any part is
 * bad or storing fails, nothing at all), precedence at start (command
 * line over stored over default), stored rows that are no longer valid,
 * and the duplicate policy changed while many threads ingest.
 */
#include "../test_util.h"

#include "dicom/dicom.h"
#include "store/store.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define ROOT "1.2.826.0.1.3680043.10.543.77"
#define JPEG_LS "1.2.840.10008.1.2.4.80"

static char tmp_root[64];
static char data_dir[128];
static Store *store;
static AgError err;

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static void open_with(const StoreConfig *cfg)
{
    ag_error_clear(&err);
    if (store_open(cfg, &store, &err) != AG_OK) {
        fail_msg("store_open %s: %s", data_dir, err.msg);
    }
}

static void open_default(void)
{
    StoreConfig cfg = {.data_dir = data_dir};
    open_with(&cfg);
}

static void close_store(void)
{
    store_close(store);
    store = NULL;
}

static int setup(void **state)
{
    (void)state;
    ag_fmt(tmp_root, sizeof tmp_root, "/tmp/agora-settings-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    ag_fmt(data_dir, sizeof data_dir, "%s/data", tmp_root);
    open_default();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close_store();
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* The current value and source of key. */
static const char *value_of(const char *key, StoreSettingSource *source)
{
    StoreSetting s;
    assert_int_equal(store_setting_get(store, key, &s, &err), AG_OK);
    assert_string_equal(s.key, key);
    if (source != NULL) {
        *source = s.source;
    }
    return s.value;
}

static void assert_setting(const char *key, const char *value,
                           StoreSettingSource source)
{
    StoreSettingSource got;
    assert_string_equal(value_of(key, &got), value);
    assert_int_equal(got, source);
}

/* The row of key in the settings table: value and changed_by. */
typedef struct Row {
    int n;
    char value[64], by[64];
    long long at;
} Row;

static int row_fn(void *ctx, int ncol, const char *const *v)
{
    Row *r = ctx;
    assert_int_equal(ncol, 3);
    ag_fmt(r->value, sizeof r->value, "%s", v[0] ? v[0] : "(null)");
    ag_fmt(r->by, sizeof r->by, "%s", v[1] ? v[1] : "(null)");
    r->at = v[2] ? atoll(v[2]) : 0;
    r->n++;
    return 0;
}

static Row stored_row(const char *key)
{
    Row r = {0};
    const char *p[] = {key};
    assert_int_equal(store_sql_select(store, "SELECT value, changed_by, "
                                      "changed_at FROM settings WHERE "
                                      "key = ?1", p, 1, row_fn, &r, &err),
                     AG_OK);
    return r;
}

/* ---- instances built in memory ------------------------------------------- */

static void set_str(DicomDataset *ds, uint32_t tag, const char *v)
{
    AgError e;
    if (dicom_set_string(ds, tag, 0, v, &e) != AG_OK) {
        fail_msg("set (%04x,%04x): %s", tag >> 16, tag & 0xffff, e.msg);
    }
}

/* Part 10 bytes of a small CT instance whose pixels are all fill. */
static void build(const char *sop_uid, uint8_t fill, AgBuf *out)
{
    AgArena *a = ag_arena_create(16 << 20);
    assert_non_null(a);
    DicomFile *f = ag_arena_zalloc(a, sizeof *f);
    DicomDataset *ds = dicom_dataset_create(a);
    assert_non_null(ds);
    f->dataset = ds;
    set_str(ds, DICOM_TAG_SOP_CLASS_UID, CT_CLASS);
    set_str(ds, DICOM_TAG_SOP_INSTANCE_UID, sop_uid);
    set_str(ds, DICOM_TAG(0x0008, 0x0060), "CT");
    set_str(ds, DICOM_TAG(0x0010, 0x0010), "Settings^Test");
    set_str(ds, DICOM_TAG_PATIENT_ID, "SETTINGS1");
    set_str(ds, DICOM_TAG_STUDY_INSTANCE_UID, ROOT ".1");
    set_str(ds, DICOM_TAG_SERIES_INSTANCE_UID, ROOT ".1.1");
    int64_t rows = 4, cols = 4, bits = 16;
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0028, 0x0010), 0, &rows,
                                    1, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0028, 0x0011), 0, &cols,
                                    1, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG_BITS_ALLOCATED, 0, &bits, 1,
                                    NULL), AG_OK);
    uint8_t px[32];
    memset(px, fill, sizeof px);
    assert_int_equal(dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA, DICOM_VR_OW,
                                     px, sizeof px, NULL), AG_OK);
    AgError e;
    if (dicom_file_build_meta(f, DICOM_TS_EXPLICIT_LE, &e) != AG_OK) {
        fail_msg("build meta: %s", e.msg);
    }
    ag_buf_init(out, 0);
    if (dicom_write_file(f, NULL, NULL, dicom_sink_buf, out, &e) != AG_OK) {
        fail_msg("write: %s", e.msg);
    }
    ag_arena_destroy(a);
}

static int ingest(const char *sop_uid, uint8_t fill, StoreResult *res,
                  AgError *e)
{
    AgBuf b;
    build(sop_uid, fill, &b);
    StoreSource src = {.calling_ae = "TESTSCU", .via = "test"};
    int rc = store_ingest_buffer(store, b.data, b.len, &src, res, e);
    ag_buf_deinit(&b);
    return rc;
}

/* The first pixel byte of the stored copy of sop_uid. */
static uint8_t stored_fill(const char *sop_uid)
{
    StoreInstance in;
    assert_int_equal(store_instance_open(store, sop_uid, &in, &err), AG_OK);
    uint8_t last = 0;
    assert_true(pread(in.fd, &last, 1, (off_t)in.size - 1) == 1);
    close(in.fd);
    return last;
}

/* ---- the cases ----------------------------------------------------------- */

static void test_defaults_and_config(void **state)
{
    (void)state;
    assert_setting("duplicates", "keep", STORE_SETTING_DEFAULT);
    assert_setting("accept_unknown_ae", "false", STORE_SETTING_DEFAULT);
    assert_setting("fuzzy_names", "false", STORE_SETTING_DEFAULT);
    assert_setting("compress", "", STORE_SETTING_DEFAULT);
    assert_false(store_setting_bool(store, "accept_unknown_ae"));
    assert_false(store_setting_bool(store, "duplicates"));   /* not bool */
    assert_false(store_setting_bool(store, "nonsense"));
    StoreSetting list[8];
    assert_int_equal(store_settings_list(store, list, 8), 4);
    assert_string_equal(list[0].key, "duplicates");
    assert_false(list[0].boolean);
    assert_true(list[1].boolean);
    StoreSetting none;
    assert_int_equal(store_setting_get(store, "aet", &none, &err),
                     AG_ERR_NOTFOUND);
    /* The StoreConfig's policies are the defaults of a store opened so. */
    close_store();
    StoreConfig cfg = {.data_dir = data_dir, .dup_policy = STORE_DUP_REJECT,
                       .compress_ts = JPEG_LS};
    open_with(&cfg);
    assert_setting("duplicates", "reject", STORE_SETTING_DEFAULT);
    assert_setting("compress", "jpeg-ls", STORE_SETTING_DEFAULT);
    assert_string_equal(store_setting_source_name(STORE_SETTING_DEFAULT),
                        "default");
    assert_string_equal(store_setting_source_name(
                            STORE_SETTING_COMMAND_LINE), "command line");
    assert_string_equal(store_setting_source_name(STORE_SETTING_STORED),
                        "stored");
}

static void test_check_and_known(void **state)
{
    (void)state;
    bool boolean = false;
    assert_true(store_setting_known("fuzzy_names", &boolean));
    assert_true(boolean);
    assert_true(store_setting_known("compress", &boolean));
    assert_false(boolean);
    assert_false(store_setting_known("aet", NULL));
    assert_false(store_setting_known(NULL, NULL));
    assert_int_equal(store_setting_check("duplicates", "replace", &err),
                     AG_OK);
    assert_int_equal(store_setting_check("compress", "none", &err), AG_OK);
    assert_int_equal(store_setting_check("compress", "", &err), AG_OK);
    assert_int_equal(store_setting_check("duplicates", "Keep", &err),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "duplicates"));
    assert_int_equal(store_setting_check("fuzzy_names", "yes", &err),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "fuzzy_names"));
    assert_int_equal(store_setting_check("compress", "jpeg", &err),
                     AG_ERR_INVALID);
    assert_int_equal(store_setting_check("aet", "X", &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "aet"));
    assert_int_equal(store_setting_check("fuzzy_names", NULL, &err),
                     AG_ERR_INVALID);
}

static void test_set_applies_and_is_stored(void **state)
{
    (void)state;
    long long before = (long long)time(NULL);
    assert_int_equal(store_setting_set(store, "duplicates", "reject", "carol",
                                       &err), AG_OK);
    assert_setting("duplicates", "reject", STORE_SETTING_STORED);
    Row r = stored_row("duplicates");
    assert_int_equal(r.n, 1);
    assert_string_equal(r.value, "reject");
    assert_string_equal(r.by, "carol");
    assert_true(r.at >= before && r.at <= (long long)time(NULL));
    /* again: one row, updated */
    assert_int_equal(store_setting_set(store, "duplicates", "replace", NULL,
                                       &err), AG_OK);
    r = stored_row("duplicates");
    assert_int_equal(r.n, 1);
    assert_string_equal(r.value, "replace");
    assert_string_equal(r.by, "(null)");
    /* booleans, and "none" stored as "" */
    StoreSettingChange ch[] = {{.key = "accept_unknown_ae", .value = "true"},
                               {.key = "compress", .value = "jpeg-ls"}};
    assert_int_equal(store_settings_update(store, ch, 2, "admin", &err),
                     AG_OK);
    assert_string_equal(ch[0].old, "false");
    assert_string_equal(ch[1].old, "");
    assert_true(store_setting_bool(store, "accept_unknown_ae"));
    assert_setting("compress", "jpeg-ls", STORE_SETTING_STORED);
    assert_int_equal(store_setting_set(store, "compress", "none", "admin",
                                       &err), AG_OK);
    assert_setting("compress", "", STORE_SETTING_STORED);
    assert_string_equal(stored_row("compress").value, "");
}

static void test_bad_update_changes_nothing(void **state)
{
    (void)state;
    assert_int_equal(store_setting_set(store, "fuzzy_names", "true", "a",
                                       &err), AG_OK);
    /* a good change with a bad one: neither happens */
    StoreSettingChange bad_value[] = {
        {.key = "duplicates", .value = "reject"},
        {.key = "fuzzy_names", .value = "maybe"}};
    assert_int_equal(store_settings_update(store, bad_value, 2, "a", &err),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "fuzzy_names"));
    StoreSettingChange unknown[] = {
        {.key = "duplicates", .value = "reject"},
        {.key = "aet", .value = "X"}};
    assert_int_equal(store_settings_update(store, unknown, 2, "a", &err),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "aet"));
    StoreSettingChange twice[] = {
        {.key = "duplicates", .value = "reject"},
        {.key = "duplicates", .value = "replace"}};
    assert_int_equal(store_settings_update(store, twice, 2, "a", &err),
                     AG_ERR_INVALID);
    assert_int_equal(store_settings_update(store, twice, 0, "a", &err),
                     AG_ERR_INVALID);
    assert_setting("duplicates", "keep", STORE_SETTING_DEFAULT);
    assert_setting("fuzzy_names", "true", STORE_SETTING_STORED);
    assert_int_equal(stored_row("duplicates").n, 0);
    assert_string_equal(stored_row("fuzzy_names").value, "true");
}

/* Storing fails (a read-only index): nothing is applied either. */
static void test_failed_store_applies_nothing(void **state)
{
    (void)state;
    close_store();
    StoreConfig cfg = {.data_dir = data_dir, .read_only = true};
    open_with(&cfg);
    assert_int_not_equal(store_setting_set(store, "duplicates", "reject",
                                           "a", &err), AG_OK);
    assert_non_null(strstr(err.msg, "settings"));
    assert_setting("duplicates", "keep", STORE_SETTING_DEFAULT);
}

static void test_precedence_at_start(void **state)
{
    (void)state;
    StoreSettingChange ch[] = {{.key = "duplicates", .value = "reject"},
                               {.key = "fuzzy_names", .value = "true"}};
    assert_int_equal(store_settings_update(store, ch, 2, "a", &err), AG_OK);
    /* A store opened without loading runs with its StoreConfig. */
    close_store();
    open_default();
    assert_setting("duplicates", "keep", STORE_SETTING_DEFAULT);
    /* Loading: stored values apply... */
    assert_int_equal(store_settings_load(store, NULL, NULL, 0, &err), AG_OK);
    assert_setting("duplicates", "reject", STORE_SETTING_STORED);
    assert_setting("fuzzy_names", "true", STORE_SETTING_STORED);
    assert_setting("accept_unknown_ae", "false", STORE_SETTING_DEFAULT);
    assert_true(store_setting_bool(store, "fuzzy_names"));
    /* ...except those given on the command line, for this run only. */
    close_store();
    open_default();
    const char *keys[] = {"duplicates", "accept_unknown_ae"};
    const char *values[] = {"keep", "true"};
    assert_int_equal(store_settings_load(store, keys, values, 2, &err),
                     AG_OK);
    assert_setting("duplicates", "keep", STORE_SETTING_COMMAND_LINE);
    assert_setting("accept_unknown_ae", "true", STORE_SETTING_COMMAND_LINE);
    assert_setting("fuzzy_names", "true", STORE_SETTING_STORED);
    assert_string_equal(stored_row("duplicates").value, "reject");
    assert_int_equal(stored_row("accept_unknown_ae").n, 0);
    /* A change at run time applies at once and is stored. */
    assert_int_equal(store_setting_set(store, "duplicates", "replace", "a",
                                       &err), AG_OK);
    assert_setting("duplicates", "replace", STORE_SETTING_STORED);
    /* A bad value given at start: refused, nothing applied. */
    close_store();
    open_default();
    const char *bad_keys[] = {"fuzzy_names", "duplicates"};
    const char *bad_values[] = {"false", "sometimes"};
    assert_int_equal(store_settings_load(store, bad_keys, bad_values, 2,
                                         &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "duplicates"));
    assert_setting("fuzzy_names", "false", STORE_SETTING_DEFAULT);
}

/* Rows a later or earlier version left, or hand edits: ignored. */
static void test_invalid_stored_rows_ignored(void **state)
{
    (void)state;
    assert_int_equal(store_sql_exec(store, "INSERT INTO settings (key, value,"
                                    " changed_at) VALUES ('duplicates', "
                                    "'sometimes', 0), ('retention', '5y', 0),"
                                    " ('accept_unknown_ae', 'true', 0)",
                                    NULL, 0, NULL, NULL, &err), AG_OK);
    assert_int_equal(store_settings_load(store, NULL, NULL, 0, &err), AG_OK);
    assert_setting("duplicates", "keep", STORE_SETTING_DEFAULT);
    assert_setting("accept_unknown_ae", "true", STORE_SETTING_STORED);
}

static void test_schema_migration(void **state)
{
    (void)state;
    Row r = {0};
    assert_int_equal(store_sql_select(store, "SELECT max(version), 'x', 0 "
                                      "FROM schema_version", NULL, 0, row_fn,
                                      &r, &err), AG_OK);
    assert_true(atoi(r.value) >= 4);
}

/* The duplicate policy the ingest pipeline applies follows the setting. */
static void test_duplicate_policy_follows_setting(void **state)
{
    (void)state;
    const char *uid = ROOT ".1.1.1";
    StoreResult res;
    assert_int_equal(ingest(uid, 1, &res, &err), AG_OK);
    assert_int_equal(res.outcome, STORE_STORED);
    assert_int_equal(ingest(uid, 2, &res, &err), AG_OK);
    assert_int_equal(res.outcome, STORE_DUPLICATE);
    assert_int_equal(stored_fill(uid), 1);
    assert_int_equal(store_setting_set(store, "duplicates", "reject", "a",
                                       &err), AG_OK);
    assert_int_equal(ingest(uid, 3, &res, &err), AG_ERR_EXISTS);
    assert_int_equal(stored_fill(uid), 1);
    assert_int_equal(store_setting_set(store, "duplicates", "replace", "a",
                                       &err), AG_OK);
    assert_int_equal(ingest(uid, 4, &res, &err), AG_OK);
    assert_int_equal(res.outcome, STORE_REPLACED);
    assert_int_equal(stored_fill(uid), 4);
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_int_equal(st.instances, 1);
}

/* ---- the policy flipping while many threads store the same UIDs --------- */

#define NTHREADS 12
#define ROUNDS 12
#define NUIDS 3

typedef struct Racer {
    int id;
    int bad;                   /* results that no policy gives */
} Racer;

static void *race(void *arg)
{
    Racer *rc = arg;
    for (int i = 0; i < ROUNDS; i++) {
        char uid[64];
        ag_fmt(uid, sizeof uid, ROOT ".2.1.%d", (rc->id + i) % NUIDS);
        StoreResult res;
        AgError e;
        int r = ingest(uid, (uint8_t)(rc->id * ROUNDS + i), &res, &e);
        if (r != AG_OK && r != AG_ERR_EXISTS) {
            rc->bad++;
        }
    }
    return NULL;
}

static void test_policy_flips_during_ingest(void **state)
{
    (void)state;
    static const char *const POLICY[] = {"keep", "replace", "reject"};
    pthread_t th[NTHREADS];
    Racer rs[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        rs[t] = (Racer){.id = t};
        assert_int_equal(pthread_create(&th[t], NULL, race, &rs[t]), 0);
    }
    for (int i = 0; i < 60; i++) {
        assert_int_equal(store_setting_set(store, "duplicates",
                                           POLICY[i % 3], "a", &err), AG_OK);
        usleep(2000);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(rs[t].bad, 0);
    }
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_int_equal(st.instances, NUIDS);
    StoreCheckReport rep;
    assert_int_equal(store_check(store, false, NULL, NULL, &rep, &err),
                     AG_OK);
    assert_int_equal(rep.instances_checked, NUIDS);
    assert_int_equal(rep.missing_blobs, 0);
    assert_int_equal(rep.bad_checksums, 0);
    assert_int_equal(rep.orphan_blobs, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults_and_config),
        T(test_check_and_known),
        T(test_set_applies_and_is_stored),
        T(test_bad_update_changes_nothing),
        T(test_failed_store_applies_nothing),
        T(test_precedence_at_start),
        T(test_invalid_stored_rows_ignored),
        T(test_schema_migration),
        T(test_duplicate_policy_follows_setting),
        T(test_policy_flips_during_ingest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
