/*
 * test_store.c — the archive core against a real SQLite index and real
 * blob files in a temporary folder: store and list at every level,
 * duplicate policies, the same SOP Instance UID stored from many threads,
 * identifiers refused at the door, patient conflicts, delete, check and
 * repair (corruption, lost blobs, a lost index), events, size limits,
 * every allocation failing, and injected I/O faults (SECURITY.md
 * "Storage").
 *
 * ag_fault() reads AGORA_FAULT once per process, so fault cases run in a
 * fresh copy of this program (re-executed with --fault-child); the parent
 * then inspects what the child left on disk.
 */
#include "../test_util.h"

#include "dicom/dicom.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define MR_CLASS "1.2.840.10008.5.1.4.1.1.4"
#define ROOT "1.2.826.0.1.3680043.10.543"

/* ---- fixture: a temporary folder and an open store -------------------- */

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

static void rm_tree(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void open_store(StoreDupPolicy policy)
{
    StoreConfig cfg = {.data_dir = data_dir, .dup_policy = policy};
    ag_error_clear(&err);
    int rc = store_open(&cfg, &store, &err);
    if (rc != AG_OK) {
        fail_msg("store_open %s: %s", data_dir, err.msg);
    }
}

static void reopen_store(StoreDupPolicy policy)
{
    store_close(store);
    store = NULL;
    open_store(policy);
}

static int make_tmp(void)
{
    ag_fmt(tmp_root, sizeof tmp_root, "/tmp/agora-store-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    ag_fmt(data_dir, sizeof data_dir, "%s/data", tmp_root);
    ag_error_clear(&err);
    return 0;
}

static int setup_keep(void **state)
{
    (void)state;
    if (make_tmp() != 0) {
        return -1;
    }
    StoreConfig cfg = {.data_dir = data_dir};
    return store_open(&cfg, &store, &err) == AG_OK ? 0 : -1;
}

static int setup_replace(void **state)
{
    (void)state;
    if (make_tmp() != 0) {
        return -1;
    }
    StoreConfig cfg = {.data_dir = data_dir,
                       .dup_policy = STORE_DUP_REPLACE};
    return store_open(&cfg, &store, &err) == AG_OK ? 0 : -1;
}

static int setup_reject(void **state)
{
    (void)state;
    if (make_tmp() != 0) {
        return -1;
    }
    StoreConfig cfg = {.data_dir = data_dir, .dup_policy = STORE_DUP_REJECT};
    return store_open(&cfg, &store, &err) == AG_OK ? 0 : -1;
}

/* A temporary folder only: the test opens what it needs. */
static int setup_dir(void **state)
{
    (void)state;
    store = NULL;
    return make_tmp();
}

static int teardown(void **state)
{
    (void)state;
    ag_test_fail_nth_alloc(0);
    store_close(store);
    store = NULL;
    rm_tree(tmp_root);
    return 0;
}

/* ---- instances built in memory ------------------------------------------- */

typedef struct Spec {
    const char *patient_id, *issuer, *patient_name;
    const char *study_uid, *series_uid, *sop_uid, *sop_class, *modality;
    int64_t number;
    uint8_t fill;              /* pixel bytes: makes copies differ */
    size_t pixel_bytes;        /* 0 = 32 */
    uint32_t omit_tag;         /* removed from the data set (not the meta) */
    uint32_t bad_tag;          /* set to bad_value after the meta is built */
    const char *bad_value;
} Spec;

static char uidbuf[64][65];
static int uidnext;

/* A UID under our test root; kept in a ring of static buffers. */
static const char *uid(const char *kind, int a, int b)
{
    char *u = uidbuf[uidnext++ % 64];
    ag_fmt(u, 65, "%s.%s.%d.%d", ROOT, kind, a, b);
    return u;
}

/* Patient p, study s, series r, instance i: every UID distinct. */
static Spec spec(int p, int s, int r, int i)
{
    static char pid[16][32];
    static int pn;
    char *id = pid[pn++ % 16];
    ag_fmt(id, 32, "PAT%d", p);
    Spec sp = {
        .patient_id = id, .issuer = NULL, .patient_name = "Doe^John",
        .study_uid = uid("1", p, s), .series_uid = uid("2", s, r),
        .sop_uid = uid("3", r, i), .sop_class = CT_CLASS,
        .modality = "CT", .number = i + 1,
    };
    return sp;
}

static void set_str(DicomDataset *ds, uint32_t tag, const char *v)
{
    if (v != NULL) {
        AgError e;
        if (dicom_set_string(ds, tag, 0, v, &e) != AG_OK) {
            fail_msg("set (%04x,%04x): %s", tag >> 16, tag & 0xffff, e.msg);
        }
    }
}

/* Part 10 bytes (explicit VR little endian) of an instance; heap, owned. */
static void build(const Spec *sp, AgBuf *out)
{
    AgArena *a = ag_arena_create(64 << 20);
    assert_non_null(a);
    DicomFile *f = ag_arena_zalloc(a, sizeof *f);
    DicomDataset *ds = dicom_dataset_create(a);
    assert_non_null(ds);
    f->dataset = ds;
    set_str(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET, "ISO_IR 192");
    set_str(ds, DICOM_TAG_SOP_CLASS_UID, sp->sop_class);
    set_str(ds, DICOM_TAG_SOP_INSTANCE_UID, sp->sop_uid);
    set_str(ds, DICOM_TAG(0x0008, 0x0020), "20240102");
    set_str(ds, DICOM_TAG(0x0008, 0x0060), sp->modality);
    set_str(ds, DICOM_TAG(0x0010, 0x0010), sp->patient_name);
    set_str(ds, DICOM_TAG_PATIENT_ID, sp->patient_id);
    set_str(ds, DICOM_TAG(0x0010, 0x0021), sp->issuer);
    set_str(ds, DICOM_TAG_STUDY_INSTANCE_UID, sp->study_uid);
    set_str(ds, DICOM_TAG_SERIES_INSTANCE_UID, sp->series_uid);
    int64_t one = 1, num = sp->number, rows = 4, bits = 16;
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0020, 0x0011), 0, &one, 1,
                                    NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0020, 0x0013), 0, &num, 1,
                                    NULL), AG_OK);
    size_t npx = sp->pixel_bytes ? sp->pixel_bytes : 32;
    int64_t cols = (int64_t)(npx / 8);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0028, 0x0010), 0, &rows, 1,
                                    NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0028, 0x0011), 0, &cols, 1,
                                    NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG_BITS_ALLOCATED, 0, &bits, 1,
                                    NULL), AG_OK);
    uint8_t *px = ag_arena_alloc(a, npx);
    assert_non_null(px);
    memset(px, sp->fill, npx);
    assert_int_equal(dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA, DICOM_VR_OW,
                                     px, npx, NULL), AG_OK);
    AgError e;
    if (dicom_file_build_meta(f, DICOM_TS_EXPLICIT_LE, &e) != AG_OK) {
        fail_msg("build meta: %s", e.msg);
    }
    if (sp->omit_tag != 0) {
        assert_int_equal(dicom_dataset_remove(ds, sp->omit_tag), AG_OK);
    }
    if (sp->bad_tag != 0) {
        set_str(ds, sp->bad_tag, sp->bad_value);
    }
    ag_buf_init(out, 0);
    if (dicom_write_file(f, NULL, NULL, dicom_sink_buf, out, &e) != AG_OK) {
        fail_msg("write: %s", e.msg);
    }
    ag_arena_destroy(a);
}

static int ingest(const Spec *sp, StoreResult *res)
{
    AgBuf b;
    build(sp, &b);
    StoreSource src = {.calling_ae = "TESTSCU", .via = "test"};
    ag_error_clear(&err);
    int rc = store_ingest_buffer(store, b.data, b.len, &src, res, &err);
    ag_buf_deinit(&b);
    return rc;
}

static void ingest_ok(const Spec *sp, StoreOutcome want)
{
    StoreResult r;
    int rc = ingest(sp, &r);
    if (rc != AG_OK) {
        fail_msg("ingest %s: %s", sp->sop_uid, err.msg);
    }
    assert_int_equal(r.outcome, want);
    assert_string_equal(r.sop_instance_uid, sp->sop_uid);
}

/* ---- what is on disk ---------------------------------------------------- */

typedef struct DiskCount {
    int blobs;      /* regular files under blobs/, not *.tmp */
    int tmps;       /* *.tmp under blobs/ */
    int spool;      /* entries of tmp/ */
} DiskCount;

static DiskCount disk_counts;

static int count_entry(const char *p, const struct stat *st, int flag,
                       struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_F) {
        size_t n = strlen(p);
        if (n > 4 && strcmp(p + n - 4, ".tmp") == 0) {
            disk_counts.tmps++;
        } else {
            disk_counts.blobs++;
        }
    }
    return 0;
}

static DiskCount disk(void)
{
    memset(&disk_counts, 0, sizeof disk_counts);
    char p[256];
    ag_fmt(p, sizeof p, "%s/blobs", data_dir);
    nftw(p, count_entry, 16, FTW_PHYS);
    ag_fmt(p, sizeof p, "%s/tmp", data_dir);
    DIR *d = opendir(p);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                disk_counts.spool++;
            }
        }
        closedir(d);
    }
    return disk_counts;
}

static void assert_disk(int blobs)
{
    DiskCount d = disk();
    if (d.blobs != blobs || d.tmps != 0 || d.spool != 0) {
        fail_msg("on disk: %d blobs (want %d), %d *.tmp, %d in tmp/",
                 d.blobs, blobs, d.tmps, d.spool);
    }
}

/* Path of the (first) blob of a SOP Instance UID: its file name starts
 * with a BLAKE2b-128 of the UID (blob.c); found by looking through the
 * blob folder, whatever its fan-out. */
static char find_prefix[33];
static char *find_out;
static size_t find_cap;
static bool find_found;

static int find_entry(const char *p, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st;
    if (flag == FTW_F && strncmp(p + ftw->base, find_prefix, 32) == 0 &&
        strstr(p + ftw->base, ".tmp") == NULL) {
        ag_fmt(find_out, find_cap, "%s", p);
        find_found = true;
        return 1;
    }
    return 0;
}

static bool blob_of(const char *sop_uid, char *out, size_t cap)
{
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)sop_uid,
                       strlen(sop_uid), NULL, 0);
    sodium_bin2hex(find_prefix, sizeof find_prefix, h, sizeof h);
    find_out = out;
    find_cap = cap;
    find_found = false;
    char root[256];
    ag_fmt(root, sizeof root, "%s/blobs", data_dir);
    nftw(root, find_entry, 16, FTW_PHYS);
    return find_found;
}

/* ---- listing ------------------------------------------------------------ */

#define MAXROWS 2048

/* Static room for kept columns: no heap, so a failing assertion (which
 * jumps out) leaks nothing. */
static char pool[8][MAXROWS][96];

typedef struct Collect {
    const char *want;          /* column kept in vals (NULL: none) */
    size_t n;
    size_t stop_after;         /* 0 = never stop */
    bool names_ok;             /* names/values arrays had equal length */
    char (*vals)[96];
} Collect;

static int collect_row(void *ctx, const StoreRow *row)
{
    Collect *c = ctx;
    size_t k = 0;
    for (; row->names[k] != NULL; k++) {
        if (c->want != NULL && strcmp(row->names[k], c->want) == 0 &&
            c->n < MAXROWS) {
            ag_fmt(c->vals[c->n], 96, "%s",
                   row->values[k] ? row->values[k] : "");
        }
    }
    c->names_ok = c->names_ok && row->values[k] == NULL;
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

/* Rows at a level; filters NULL-terminated.  Column want kept in *c. */
static int list(StoreLevel lv, const char *const *filters, Collect *c)
{
    assert_true(c->want == NULL || c->vals != NULL);
    c->n = 0;
    c->names_ok = true;
    ag_error_clear(&err);
    return store_list(store, lv, filters, 100000, collect_row, c, &err);
}

static size_t count(StoreLevel lv, const char *f1, const char *f2)
{
    const char *f[3] = {f1, f1 ? f2 : NULL, NULL};
    Collect c = {0};
    int rc = list(lv, f, &c);
    if (rc != AG_OK) {
        fail_msg("list: %s", err.msg);
    }
    return c.n;
}

/* The first value of column col at a level under one filter. */
static void value(StoreLevel lv, const char *filter, const char *col,
                  char out[96])
{
    const char *f[2] = {filter, NULL};
    Collect c = {.want = col, .vals = pool[7]};
    assert_int_equal(list(lv, f, &c), AG_OK);
    if (c.n == 0) {
        fail_msg("no row for %s", filter);
    }
    memcpy(out, c.vals[0], 96);
}

static char fbuf[8][200];
static int fnext;

static const char *kv(const char *k, const char *v)
{
    char *p = fbuf[fnext++ % 8];
    ag_fmt(p, 200, "%s=%s", k, v);
    return p;
}

static int count_cb(void *ctx, int ncol, const char *const *vals)
{
    (void)ncol;
    *(long *)ctx = vals[0] != NULL ? atol(vals[0]) : 0;
    return 0;
}

/* The one number a query returns. */
static long sql_long(const char *sql)
{
    long n = -1;
    ag_error_clear(&err);
    if (store_sql_select(store, sql, NULL, 0, count_cb, &n, &err) != AG_OK) {
        fail_msg("%s: %s", sql, err.msg);
    }
    return n;
}

/*
 * The index agrees with itself: every counter equals what the rows say,
 * no series, study or patient is left without children, and the stats
 * (kept by triggers) match the listings and the stored sizes.
 */
static void assert_consistent(void)
{
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_int_equal(sql_long("SELECT coalesce(sum(size), 0) FROM instances"),
                     st.bytes);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), st.instances);
    assert_int_equal(count(STORE_LEVEL_SERIES, NULL, NULL), st.series);
    assert_int_equal(count(STORE_LEVEL_STUDY, NULL, NULL), st.studies);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), st.patients);

    Collect series = {.want = "SeriesInstanceUID", .vals = pool[0]};
    Collect nser = {.want = "NumberOfSeriesRelatedInstances",
                    .vals = pool[1]};
    assert_int_equal(list(STORE_LEVEL_SERIES, NULL, &series), AG_OK);
    assert_int_equal(list(STORE_LEVEL_SERIES, NULL, &nser), AG_OK);
    for (size_t i = 0; i < series.n; i++) {
        size_t n = count(STORE_LEVEL_INSTANCE,
                         kv("SeriesInstanceUID", series.vals[i]), NULL);
        if (n == 0 || (size_t)atol(nser.vals[i]) != n) {
            fail_msg("series %s: NumberOfSeriesRelatedInstances %s, %zu "
                     "instance rows", series.vals[i], nser.vals[i], n);
        }
    }

    Collect st_uid = {.want = "StudyInstanceUID", .vals = pool[0]};
    Collect st_ns = {.want = "NumberOfStudyRelatedSeries",
                     .vals = pool[1]};
    Collect st_ni = {.want = "NumberOfStudyRelatedInstances",
                     .vals = pool[2]};
    assert_int_equal(list(STORE_LEVEL_STUDY, NULL, &st_uid), AG_OK);
    assert_int_equal(list(STORE_LEVEL_STUDY, NULL, &st_ns), AG_OK);
    assert_int_equal(list(STORE_LEVEL_STUDY, NULL, &st_ni), AG_OK);
    for (size_t i = 0; i < st_uid.n; i++) {
        const char *f = kv("StudyInstanceUID", st_uid.vals[i]);
        size_t ns = count(STORE_LEVEL_SERIES, f, NULL);
        size_t ni = count(STORE_LEVEL_INSTANCE, f, NULL);
        if (ns == 0 || ni == 0 || (size_t)atol(st_ns.vals[i]) != ns ||
            (size_t)atol(st_ni.vals[i]) != ni) {
            fail_msg("study %s: %s series / %s instances counted, %zu / %zu "
                     "rows", st_uid.vals[i], st_ns.vals[i], st_ni.vals[i],
                     ns, ni);
        }
    }

    Collect pid = {.want = "PatientID", .vals = pool[0]};
    Collect iss = {.want = "IssuerOfPatientID", .vals = pool[1]};
    assert_int_equal(list(STORE_LEVEL_PATIENT, NULL, &pid), AG_OK);
    assert_int_equal(list(STORE_LEVEL_PATIENT, NULL, &iss), AG_OK);
    for (size_t i = 0; i < pid.n; i++) {
        size_t n = count(STORE_LEVEL_STUDY, kv("PatientID", pid.vals[i]),
                         kv("IssuerOfPatientID", iss.vals[i]));
        if (n == 0) {
            fail_msg("patient \"%s\" (issuer \"%s\") has no study",
                     pid.vals[i], iss.vals[i]);
        }
    }
}

static void check(bool repair, StoreCheckReport *r)
{
    ag_error_clear(&err);
    int rc = store_check(store, repair, NULL, NULL, r, &err);
    if (rc != AG_OK) {
        fail_msg("store_check: %s", err.msg);
    }
}

static void assert_check_clean(uint64_t instances)
{
    StoreCheckReport r;
    check(false, &r);
    if (r.instances_checked != instances || r.blobs_seen != instances ||
        r.missing_blobs || r.bad_checksums || r.orphan_blobs) {
        fail_msg("check: %llu instances, %llu blobs (want %llu), %llu "
                 "missing, %llu bad, %llu orphans",
                 (unsigned long long)r.instances_checked,
                 (unsigned long long)r.blobs_seen,
                 (unsigned long long)instances,
                 (unsigned long long)r.missing_blobs,
                 (unsigned long long)r.bad_checksums,
                 (unsigned long long)r.orphan_blobs);
    }
}

/* ---- store and list ------------------------------------------------------ */

/* 2 patients, 3 studies, 4 series, 9 instances: PAT1 has study 10 (a CT
 * and an MR series of 3) and study 11 (1 instance); PAT2 has study 20 (2). */
static void populate(void)
{
    for (int i = 0; i < 3; i++) {
        Spec a = spec(1, 10, 100, i);            /* PAT1 study 10 CT */
        ingest_ok(&a, STORE_STORED);
        Spec b = spec(1, 10, 101, i);            /* PAT1 study 10 MR */
        b.modality = "MR";
        b.sop_class = MR_CLASS;
        ingest_ok(&b, STORE_STORED);
    }
    Spec c = spec(1, 11, 110, 0);                /* PAT1 study 11 */
    ingest_ok(&c, STORE_STORED);
    Spec d = spec(2, 20, 200, 0);                /* PAT2 study 20 */
    d.patient_name = "Roe^Jane";
    ingest_ok(&d, STORE_STORED);
    Spec e = spec(2, 20, 200, 1);
    e.patient_name = "Roe^Jane";
    ingest_ok(&e, STORE_STORED);
}

static void test_store_then_list_every_level(void **state)
{
    (void)state;
    populate();
    assert_disk(9);
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_int_equal(st.patients, 2);
    assert_int_equal(st.studies, 3);
    assert_int_equal(st.series, 4);
    assert_int_equal(st.instances, 9);
    assert_true(st.bytes > 9 * 32);

    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 2);
    assert_int_equal(count(STORE_LEVEL_STUDY, NULL, NULL), 3);
    assert_int_equal(count(STORE_LEVEL_SERIES, NULL, NULL), 4);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 9);

    /* Filters at each level, alone and combined (AND). */
    assert_int_equal(count(STORE_LEVEL_PATIENT, "PatientID=PAT1", NULL), 1);
    assert_int_equal(count(STORE_LEVEL_PATIENT, "PatientName=Roe^Jane",
                           NULL), 1);
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=PAT1", NULL), 2);
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=PAT2", NULL), 1);
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=PAT3", NULL), 0);
    assert_int_equal(count(STORE_LEVEL_STUDY,
                           kv("StudyInstanceUID", uid("1", 1, 10)), NULL), 1);
    assert_int_equal(count(STORE_LEVEL_SERIES, "Modality=MR", NULL), 1);
    assert_int_equal(count(STORE_LEVEL_SERIES, "Modality=CT", NULL), 3);
    assert_int_equal(count(STORE_LEVEL_SERIES, "Modality=CT",
                           "PatientID=PAT2"), 1);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, "PatientID=PAT1", NULL), 7);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SeriesInstanceUID", uid("2", 10, 101)),
                           NULL), 3);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SOPInstanceUID", uid("3", 200, 1)), NULL), 1);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SOPInstanceUID", uid("3", 200, 1)),
                           "PatientID=PAT1"), 0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, "SOPClassUID=" MR_CLASS,
                           NULL), 3);

    /* Study attributes kept and counted. */
    char v[96];
    const char *s10 = kv("StudyInstanceUID", uid("1", 1, 10));
    value(STORE_LEVEL_STUDY, s10, "ModalitiesInStudy", v);
    assert_string_equal(v, "CT\\MR");
    value(STORE_LEVEL_STUDY, s10, "NumberOfStudyRelatedSeries", v);
    assert_string_equal(v, "2");
    value(STORE_LEVEL_STUDY, s10, "NumberOfStudyRelatedInstances", v);
    assert_string_equal(v, "6");
    value(STORE_LEVEL_STUDY, s10, "StudyDate", v);
    assert_string_equal(v, "20240102");
    value(STORE_LEVEL_STUDY, s10, "PatientConflict", v);
    assert_string_equal(v, "0");
    value(STORE_LEVEL_INSTANCE, kv("SOPInstanceUID", uid("3", 101, 2)),
          "InstanceNumber", v);
    assert_string_equal(v, "3");
    value(STORE_LEVEL_INSTANCE, kv("SOPInstanceUID", uid("3", 101, 2)),
          "TransferSyntaxUID", v);
    assert_string_equal(v, DICOM_TS_EXPLICIT_LE);
    assert_consistent();
    assert_check_clean(9);
}

static void test_list_filters_refused_and_bound(void **state)
{
    (void)state;
    populate();
    /* Unknown keys, and keys of another level, are refused by name. */
    const char *bad[] = {"NoSuchKey=1", NULL};
    Collect c = {0};
    assert_int_equal(list(STORE_LEVEL_STUDY, bad, &c), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "NoSuchKey"));
    const char *lower[] = {kv("SOPInstanceUID", uid("3", 100, 0)), NULL};
    assert_int_equal(list(STORE_LEVEL_STUDY, lower, &c), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "SOPInstanceUID"));
    const char *noeq[] = {"PatientID", NULL};
    assert_int_equal(list(STORE_LEVEL_STUDY, noeq, &c), AG_ERR_INVALID);
    /* A key that only names a prefix of a column is not that column. */
    const char *prefix[] = {"Patient=PAT1", NULL};
    assert_int_equal(list(STORE_LEVEL_STUDY, prefix, &c), AG_ERR_INVALID);
    /* Column expressions cannot be reached through the key. */
    const char *expr[] = {"p.patient_id=PAT1", NULL};
    assert_int_equal(list(STORE_LEVEL_STUDY, expr, &c), AG_ERR_INVALID);

    /* SQL in a value is a value. */
    static const char *const evil[] = {
        "' OR 1=1 --", "PAT1' OR '1'='1", "PAT1; DROP TABLE instances; --",
        "%", "_AT1", "PAT1\" OR \"\"=\"", "PAT*",
    };
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        assert_int_equal(count(STORE_LEVEL_STUDY, kv("PatientID", evil[i]),
                               NULL), 0);
        assert_int_equal(count(STORE_LEVEL_INSTANCE, kv("PatientID", evil[i]),
                               NULL), 0);
    }
    /* Exact match: no case folding, no wildcard, no prefix. */
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=pat1", NULL), 0);
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=PAT", NULL), 0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 9);

    /* Limit and early stop. */
    Collect lim = {.names_ok = true};
    assert_int_equal(store_list(store, STORE_LEVEL_INSTANCE, NULL, 4,
                                collect_row, &lim, &err), AG_OK);
    assert_int_equal(lim.n, 4);
    assert_true(lim.names_ok);
    lim.n = 0;
    lim.stop_after = 2;
    assert_int_equal(store_list(store, STORE_LEVEL_INSTANCE, NULL, 0,
                                collect_row, &lim, &err), AG_OK);
    assert_int_equal(lim.n, 2);
}

/* ---- duplicates -------------------------------------------------------- */

static void test_duplicate_keep_first(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    ingest_ok(&a, STORE_STORED);
    char first[256];
    assert_true(blob_of(a.sop_uid, first, sizeof first));
    a.fill = 7;   /* different bytes, same SOP Instance UID */
    ingest_ok(&a, STORE_DUPLICATE);
    ingest_ok(&a, STORE_DUPLICATE);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 1);
    assert_disk(1);
    char now[256];
    assert_true(blob_of(a.sop_uid, now, sizeof now));
    assert_string_equal(first, now);   /* the first copy is the one kept */
    assert_consistent();
    assert_check_clean(1);
}

static void test_duplicate_replace(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    Spec b = spec(1, 1, 1, 1);
    ingest_ok(&a, STORE_STORED);
    ingest_ok(&b, STORE_STORED);
    char first[256];
    assert_true(blob_of(a.sop_uid, first, sizeof first));
    a.fill = 7;
    a.pixel_bytes = 64;
    StoreResult r;
    assert_int_equal(ingest(&a, &r), AG_OK);
    assert_int_equal(r.outcome, STORE_REPLACED);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 2);
    assert_disk(2);   /* exactly one blob per instance: the old one went */
    char now[256];
    assert_true(blob_of(a.sop_uid, now, sizeof now));
    assert_string_not_equal(first, now);
    struct stat st;
    assert_int_equal(stat(now, &st), 0);
    assert_int_equal((uint64_t)st.st_size, r.size);
    char v[96];
    value(STORE_LEVEL_INSTANCE, kv("SOPInstanceUID", a.sop_uid), "Size", v);
    assert_int_equal((uint64_t)atoll(v), r.size);
    /* Again and again: still one row, one blob. */
    for (int i = 0; i < 3; i++) {
        a.fill = (uint8_t)(10 + i);
        ingest_ok(&a, STORE_REPLACED);
    }
    assert_disk(2);
    assert_consistent();
    assert_check_clean(2);
}

/* A replacement that moves the instance to another series (a corrected
 * copy) must leave the counters and the emptied series right. */
static void test_replace_into_other_series_keeps_counts(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    Spec b = spec(1, 1, 1, 1);
    ingest_ok(&a, STORE_STORED);
    ingest_ok(&b, STORE_STORED);
    Spec moved = a;
    moved.series_uid = uid("2", 1, 2);
    moved.fill = 3;
    ingest_ok(&moved, STORE_REPLACED);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 2);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SeriesInstanceUID", moved.series_uid), NULL),
                     1);
    assert_disk(2);
    assert_consistent();
    /* b moves too: its old series is now empty and must not linger. */
    Spec b2 = b;
    b2.series_uid = moved.series_uid;
    b2.fill = 4;
    ingest_ok(&b2, STORE_REPLACED);
    assert_int_equal(count(STORE_LEVEL_SERIES, NULL, NULL), 1);
    assert_consistent();
    assert_check_clean(2);
}

static void test_duplicate_reject(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    ingest_ok(&a, STORE_STORED);
    char first[256];
    assert_true(blob_of(a.sop_uid, first, sizeof first));
    a.fill = 9;
    StoreResult r;
    assert_int_equal(ingest(&a, &r), AG_ERR_EXISTS);
    assert_int_equal(err.code, AG_ERR_EXISTS);
    assert_non_null(strstr(err.msg, a.sop_uid));
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 1);
    assert_disk(1);
    char now[256];
    assert_true(blob_of(a.sop_uid, now, sizeof now));
    assert_string_equal(first, now);
    assert_check_clean(1);
}

/* ---- the same SOP Instance UID from many threads ------------------------ */

#define NTHREADS 8
#define PER_THREAD 50
#define SHARED 20

typedef struct Racer {
    int t;
    AgBuf *bufs;
    int stored, dup, replaced, exists, other;
    char other_msg[256];
} Racer;

static void *race(void *arg)
{
    Racer *r = arg;
    StoreSource src = {.via = "race"};
    for (int i = 0; i < PER_THREAD; i++) {
        int k = (i * 7 + r->t * 3) % SHARED;
        StoreResult res;
        AgError e;
        int rc = store_ingest_buffer(store, r->bufs[k].data, r->bufs[k].len,
                                     &src, &res, &e);
        if (rc == AG_OK && res.outcome == STORE_STORED) {
            r->stored++;
        } else if (rc == AG_OK && res.outcome == STORE_DUPLICATE) {
            r->dup++;
        } else if (rc == AG_OK && res.outcome == STORE_REPLACED) {
            r->replaced++;
        } else if (rc == AG_ERR_EXISTS) {
            r->exists++;
        } else {
            r->other++;
            ag_fmt(r->other_msg, sizeof r->other_msg, "%s", e.msg);
        }
    }
    return NULL;
}

static void run_race(StoreDupPolicy policy)
{
    reopen_store(policy);
    AgBuf bufs[SHARED];
    for (int k = 0; k < SHARED; k++) {
        Spec s = spec(1, 1, k % 3, k);
        build(&s, &bufs[k]);
    }
    pthread_t th[NTHREADS];
    Racer rs[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        rs[t] = (Racer){.t = t, .bufs = bufs};
        assert_int_equal(pthread_create(&th[t], NULL, race, &rs[t]), 0);
    }
    int stored = 0, dup = 0, replaced = 0, exists = 0;
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        if (rs[t].other != 0) {
            fail_msg("thread %d: %d unexpected errors: %s", t, rs[t].other,
                     rs[t].other_msg);
        }
        stored += rs[t].stored;
        dup += rs[t].dup;
        replaced += rs[t].replaced;
        exists += rs[t].exists;
    }
    for (int k = 0; k < SHARED; k++) {
        ag_buf_deinit(&bufs[k]);
    }
    int total = NTHREADS * PER_THREAD;
    assert_int_equal(stored, SHARED);   /* each UID stored exactly once */
    switch (policy) {
    case STORE_DUP_KEEP_FIRST:
        assert_int_equal(dup, total - SHARED);
        break;
    case STORE_DUP_REPLACE:
        assert_int_equal(replaced, total - SHARED);
        break;
    case STORE_DUP_REJECT:
        assert_int_equal(exists, total - SHARED);
        break;
    }
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), SHARED);
    assert_disk(SHARED);
    assert_consistent();
    assert_check_clean(SHARED);
}

static void test_same_uid_from_many_threads_keep(void **state)
{
    (void)state;
    run_race(STORE_DUP_KEEP_FIRST);
}

static void test_same_uid_from_many_threads_replace(void **state)
{
    (void)state;
    run_race(STORE_DUP_REPLACE);
}

static void test_same_uid_from_many_threads_reject(void **state)
{
    (void)state;
    run_race(STORE_DUP_REJECT);
}

/* ---- identifiers at the door --------------------------------------------- */

static void refused(Spec *s, const char *names)
{
    StoreResult r;
    int rc = ingest(s, &r);
    if (rc != AG_ERR_INVALID) {
        fail_msg("want AG_ERR_INVALID naming %s, got %d: %s", names, rc,
                 err.msg);
    }
    if (strstr(err.msg, names) == NULL) {
        fail_msg("message \"%s\" does not name %s", err.msg, names);
    }
    AgError said = err;
    assert_disk(0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 0);
    err = said;   /* for the caller to look at */
}

static void test_missing_and_invalid_uids_refused(void **state)
{
    (void)state;
    static const struct {
        uint32_t tag;
        const char *name;
    } uids[] = {
        {DICOM_TAG_SOP_INSTANCE_UID, "(0008,0018)"},
        {DICOM_TAG_SOP_CLASS_UID, "(0008,0016)"},
        {DICOM_TAG_STUDY_INSTANCE_UID, "(0020,000D)"},
        {DICOM_TAG_SERIES_INSTANCE_UID, "(0020,000E)"},
    };
    static const char *const bad[] = {
        "1.2.abc",                  /* letters */
        "1.02.3",                   /* leading zero in a component */
        "1..2",                     /* empty component */
        ".1.2",
        "1.2.",
        "../../etc/passwd",         /* a path, SECURITY.md rule 2 */
        "1.2.3/4",
        "1.2.3 4",
        "1.2.840.10008.5.1.4.1.1.2.1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.161",
    };
    for (size_t u = 0; u < 4; u++) {
        Spec s = spec(1, 1, 1, 0);
        s.omit_tag = uids[u].tag;
        refused(&s, uids[u].name);
        if (strstr(err.msg, "missing") == NULL) {
            fail_msg("absent %s: \"%s\" does not say missing",
                     uids[u].name, err.msg);
        }
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            Spec t = spec(1, 1, 1, 0);
            t.bad_tag = uids[u].tag;
            t.bad_value = bad[b];
            refused(&t, uids[u].name);
        }
    }
    /* An empty value is as missing as an absent one. */
    Spec e = spec(1, 1, 1, 0);
    e.bad_tag = DICOM_TAG_STUDY_INSTANCE_UID;
    e.bad_value = "";
    refused(&e, "(0020,000D)");
    /* Control characters in the refused value never reach the message. */
    Spec c = spec(1, 1, 1, 0);
    c.bad_tag = DICOM_TAG_SERIES_INSTANCE_UID;
    c.bad_value = "1.2\n3\x1b[31m";
    refused(&c, "(0020,000E)");
    for (const char *p = err.msg; *p != '\0'; p++) {
        assert_true((unsigned char)*p >= 0x20);
    }
    /* A well-formed instance still goes in afterwards. */
    Spec ok = spec(1, 1, 1, 0);
    ingest_ok(&ok, STORE_STORED);
    assert_disk(1);
}

static void test_not_dicom_refused_without_trace(void **state)
{
    (void)state;
    static const uint8_t text[] = "hello, this is not a DICOM file\n";
    StoreResult r;
    assert_int_equal(store_ingest_buffer(store, text, sizeof text, NULL, &r,
                                         &err), AG_ERR_PARSE);
    /* Truncated at every 97th byte: refused, nothing left behind. */
    Spec s = spec(1, 1, 1, 0);
    AgBuf b;
    build(&s, &b);
    for (size_t n = 0; n < b.len - 40; n += 97) {
        ag_error_clear(&err);
        int rc = store_ingest_buffer(store, b.data, n, NULL, &r, &err);
        if (rc == AG_OK) {
            fail_msg("truncated at %zu of %zu: stored", n, b.len);
        }
    }
    ag_buf_deinit(&b);
    assert_disk(0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
}

/* ---- patients ------------------------------------------------------------ */

static void test_patient_conflict_flagged(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    ingest_ok(&a, STORE_STORED);
    Spec b = spec(1, 1, 1, 1);
    b.patient_id = "OTHER";     /* same study UID, another patient */
    b.patient_name = "Other^Person";
    StoreResult r;
    assert_int_equal(ingest(&b, &r), AG_OK);
    assert_int_equal(r.outcome, STORE_STORED);
    assert_true(r.patient_conflict);
    assert_int_equal(count(STORE_LEVEL_STUDY, NULL, NULL), 1);
    char v[96];
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", a.study_uid),
          "PatientConflict", v);
    assert_string_equal(v, "1");
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", a.study_uid),
          "PatientID", v);
    assert_string_equal(v, "PAT1");   /* stays with its first patient */
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", a.study_uid),
          "NumberOfStudyRelatedInstances", v);
    assert_string_equal(v, "2");
    /* The instance is filed under the study's patient. */
    assert_int_equal(count(STORE_LEVEL_INSTANCE, "PatientID=PAT1", NULL), 2);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, "PatientID=OTHER", NULL), 0);
    /* A later instance of the right patient is not a conflict. */
    Spec c = spec(1, 1, 1, 2);
    assert_int_equal(ingest(&c, &r), AG_OK);
    assert_false(r.patient_conflict);
    /* No patient row without a study is left behind by the conflict. */
    size_t np = count(STORE_LEVEL_PATIENT, NULL, NULL);
    if (np != 1) {
        fail_msg("%zu patient rows after a conflict (want 1: the conflicting "
                 "instance is filed under the study's patient); \"OTHER\" "
                 "has %zu studies", np,
                 count(STORE_LEVEL_STUDY, "PatientID=OTHER", NULL));
    }
    assert_consistent();
}

static void test_patients_keyed_by_id_and_issuer(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    a.patient_id = "12345";
    a.issuer = "HOSP_A";
    Spec b = spec(2, 2, 2, 0);
    b.patient_id = "12345";
    b.issuer = "HOSP_B";
    ingest_ok(&a, STORE_STORED);
    ingest_ok(&b, STORE_STORED);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 2);
    assert_int_equal(count(STORE_LEVEL_STUDY, "PatientID=12345",
                           "IssuerOfPatientID=HOSP_B"), 1);
    /* Delete by "ID<TAB>ISSUER" takes only that patient. */
    uint64_t n = 0;
    assert_int_equal(store_delete(store, STORE_LEVEL_PATIENT, "12345",
                                  &n, &err), AG_ERR_NOTFOUND);
    assert_int_equal(store_delete(store, STORE_LEVEL_PATIENT,
                                  "12345\tHOSP_A", &n, &err), AG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 1);
    assert_int_equal(count(STORE_LEVEL_STUDY, "IssuerOfPatientID=HOSP_B",
                           NULL), 1);
    assert_disk(1);
    assert_consistent();
}

/* ---- delete -------------------------------------------------------------- */

static void test_delete_each_level(void **state)
{
    (void)state;
    populate();   /* 9 instances */
    uint64_t n = 99;

    /* Unknown keys at every level: NOTFOUND, nothing changes. */
    static const StoreLevel levels[] = {STORE_LEVEL_PATIENT, STORE_LEVEL_STUDY,
                                        STORE_LEVEL_SERIES,
                                        STORE_LEVEL_INSTANCE};
    for (int l = 0; l < 4; l++) {
        assert_int_equal(store_delete(store, levels[l], "1.2.3.999", &n,
                                      &err), AG_ERR_NOTFOUND);
        assert_int_equal(n, 0);
    }
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 9);
    assert_disk(9);

    /* Instance: one row, one blob; the series stays. */
    const char *i0 = uid("3", 100, 0);
    char path[256];
    assert_true(blob_of(i0, path, sizeof path));
    assert_int_equal(store_delete(store, STORE_LEVEL_INSTANCE, i0, &n, &err),
                     AG_OK);
    assert_int_equal(n, 1);
    assert_false(blob_of(i0, path, sizeof path));
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 8);
    assert_int_equal(count(STORE_LEVEL_SERIES, NULL, NULL), 4);
    assert_disk(8);
    assert_consistent();
    assert_int_equal(store_delete(store, STORE_LEVEL_INSTANCE, i0, &n, &err),
                     AG_ERR_NOTFOUND);

    /* Series: its 3 instances. */
    assert_int_equal(store_delete(store, STORE_LEVEL_SERIES,
                                  uid("2", 10, 101), &n, &err), AG_OK);
    assert_int_equal(n, 3);
    assert_int_equal(count(STORE_LEVEL_SERIES, NULL, NULL), 3);
    assert_disk(5);
    char v[96];
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", uid("1", 1, 10)),
          "ModalitiesInStudy", v);
    assert_string_equal(v, "CT");
    assert_consistent();

    /* Study: the rest of study 10 (2 instances); the patient stays. */
    assert_int_equal(store_delete(store, STORE_LEVEL_STUDY, uid("1", 1, 10),
                                  &n, &err), AG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(count(STORE_LEVEL_STUDY, NULL, NULL), 2);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 2);
    assert_disk(3);
    assert_consistent();

    /* Patient: everything of PAT2. */
    assert_int_equal(store_delete(store, STORE_LEVEL_PATIENT, "PAT2", &n,
                                  &err), AG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 1);
    assert_disk(1);
    assert_consistent();

    /* The last instance of a patient takes the patient with it. */
    assert_int_equal(store_delete(store, STORE_LEVEL_INSTANCE,
                                  uid("3", 110, 0), &n, &err), AG_OK);
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_int_equal(st.patients + st.studies + st.series + st.instances, 0);
    assert_disk(0);
    assert_check_clean(0);

    /* What was deleted can be stored again. */
    Spec again = spec(1, 10, 100, 0);
    ingest_ok(&again, STORE_STORED);
    assert_disk(1);
}

/* Ingest from several threads while another deletes the study again and
 * again: the index and the disk agree at the end. */
typedef struct Churn {
    int t;
    int errors;
    char msg[256];
} Churn;

/* The UIDs of spec(1, 1, t, i) in the thread's own buffers: spec() and
 * uid() hand out slots of shared static rings, which other threads
 * overwrite while this one builds its instance. */
static Spec churn_spec(int t, int i, char (*u)[65])
{
    ag_fmt(u[0], 65, "%s.1.1.1", ROOT);
    ag_fmt(u[1], 65, "%s.2.1.%d", ROOT, t);
    ag_fmt(u[2], 65, "%s.3.%d.%d", ROOT, t, i);
    Spec sp = {
        .patient_id = "PAT1", .patient_name = "Doe^John",
        .study_uid = u[0], .series_uid = u[1], .sop_uid = u[2],
        .sop_class = CT_CLASS, .modality = "CT", .number = i + 1,
    };
    return sp;
}

static void *churn_ingest(void *arg)
{
    Churn *c = arg;
    for (int i = 0; i < 40; i++) {
        char u[3][65];
        Spec s = churn_spec(c->t, i, u);
        AgBuf b;
        build(&s, &b);
        AgError e;
        StoreResult r;
        if (store_ingest_buffer(store, b.data, b.len, NULL, &r, &e) !=
            AG_OK) {
            c->errors++;
            ag_fmt(c->msg, sizeof c->msg, "%s", e.msg);
        }
        ag_buf_deinit(&b);
    }
    return NULL;
}

static void *churn_delete(void *arg)
{
    Churn *c = arg;
    const char *study = ROOT ".1.1.1";
    for (int i = 0; i < 30; i++) {
        uint64_t n;
        AgError e;
        int rc = store_delete(store, STORE_LEVEL_STUDY, study, &n, &e);
        if (rc != AG_OK && rc != AG_ERR_NOTFOUND) {
            c->errors++;
            ag_fmt(c->msg, sizeof c->msg, "%s", e.msg);
        }
        usleep(1000);
    }
    return NULL;
}

static void test_ingest_racing_delete(void **state)
{
    (void)state;
    pthread_t th[5];
    Churn cs[5];
    for (int t = 0; t < 5; t++) {
        cs[t] = (Churn){.t = t};
        assert_int_equal(pthread_create(&th[t], NULL,
                                        t < 4 ? churn_ingest : churn_delete,
                                        &cs[t]), 0);
    }
    for (int t = 0; t < 5; t++) {
        pthread_join(th[t], NULL);
        if (cs[t].errors != 0) {
            fail_msg("thread %d: %d errors: %s", t, cs[t].errors, cs[t].msg);
        }
    }
    StoreStats st;
    assert_int_equal(store_stats(store, &st, &err), AG_OK);
    assert_disk((int)st.instances);
    assert_consistent();
    assert_check_clean(st.instances);
}

/* ---- check and repair ---------------------------------------------------- */

static void test_check_clean_store(void **state)
{
    (void)state;
    StoreCheckReport r;
    check(false, &r);
    assert_int_equal(r.instances_checked + r.blobs_seen, 0);
    populate();
    assert_check_clean(9);
    check(true, &r);
    assert_int_equal(r.reindexed + r.removed_rows + r.unreadable, 0);
    assert_check_clean(9);
}

static void test_check_finds_corrupt_blob(void **state)
{
    (void)state;
    populate();
    char path[256];
    const char *victim = uid("3", 101, 1);
    assert_true(blob_of(victim, path, sizeof path));
    chmod(path, 0640);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    off_t at = 200;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x01;   /* one bit, size unchanged */
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    StoreCheckReport r;
    check(false, &r);
    assert_int_equal(r.bad_checksums, 1);
    assert_int_equal(r.missing_blobs + r.orphan_blobs, 0);
    assert_int_equal(r.instances_checked, 9);
    /* Repair cannot invent the right bytes: the problem stays reported. */
    check(true, &r);
    assert_int_equal(r.bad_checksums, 1);

    /* A shortened blob is caught too. */
    const char *other = uid("3", 200, 0);
    assert_true(blob_of(other, path, sizeof path));
    chmod(path, 0640);
    assert_int_equal(truncate(path, 100), 0);
    check(false, &r);
    assert_int_equal(r.bad_checksums, 2);
}

typedef struct Said {
    int n;
    char what[16][32];
    char detail[16][128];
} Said;

static void check_log(void *ctx, const char *what, const char *path,
                      const char *detail)
{
    Said *s = ctx;
    (void)path;
    if (s->n < 16) {
        ag_fmt(s->what[s->n], 32, "%s", what);
        ag_fmt(s->detail[s->n], 128, "%s", detail ? detail : "");
    }
    s->n++;
}

static void test_check_missing_blob_and_repair(void **state)
{
    (void)state;
    populate();
    char path[256];
    const char *victim = uid("3", 110, 0);   /* alone in its study */
    assert_true(blob_of(victim, path, sizeof path));
    assert_int_equal(unlink(path), 0);
    StoreCheckReport r;
    Said said = {0};
    assert_int_equal(store_check(store, false, check_log, &said, &r, &err),
                     AG_OK);
    assert_int_equal(r.missing_blobs, 1);
    assert_int_equal(r.bad_checksums + r.orphan_blobs, 0);
    assert_int_equal(said.n, 1);
    assert_string_equal(said.what[0], "missing");
    assert_string_equal(said.detail[0], victim);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 9);

    check(true, &r);
    assert_int_equal(r.missing_blobs, 1);
    assert_int_equal(r.removed_rows, 1);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 8);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SOPInstanceUID", victim), NULL), 0);
    assert_int_equal(count(STORE_LEVEL_STUDY, NULL, NULL), 2);
    assert_consistent();
    assert_check_clean(8);
}

static void test_check_orphans(void **state)
{
    (void)state;
    populate();
    char path[256], copy[300];
    /* A second copy of an indexed instance under another name (what an
     * interrupted replacement leaves): repair removes it. */
    const char *a = uid("3", 100, 1);
    assert_true(blob_of(a, path, sizeof path));
    ag_fmt(copy, sizeof copy, "%.*s-00000000000000ff", (int)(strlen(path) - 17),
           path);
    uint8_t *bytes;
    size_t len;
    assert_int_equal(ag_file_read_all(path, 1 << 20, &bytes, &len, &err),
                     AG_OK);
    int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL, 0440);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    ag_free(bytes);

    StoreCheckReport r;
    check(false, &r);
    assert_int_equal(r.orphan_blobs, 1);
    assert_int_equal(r.blobs_seen, 10);
    check(true, &r);
    assert_int_equal(r.orphan_blobs, 1);
    assert_int_equal(r.reindexed, 0);
    assert_int_equal(access(copy, F_OK), -1);
    assert_true(access(path, F_OK) == 0);
    assert_check_clean(9);

    /* An orphan that is not DICOM: repair moves it to lost+found (store.h)
     * so that it is no longer in the blob store. */
    char junk[300];
    ag_fmt(junk, sizeof junk, "%.*s-00000000000000fe", (int)(strlen(path) - 17),
           path);
    fd = open(junk, O_WRONLY | O_CREAT | O_EXCL, 0440);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "junk", 4), 4);
    close(fd);
    check(true, &r);
    assert_int_equal(r.orphan_blobs, 1);
    assert_int_equal(r.unreadable, 1);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 9);
    if (access(junk, F_OK) == 0) {
        fail_msg("unreadable orphan still in the blob store after repair "
                 "(store.h: repair moves it to DIR/lost+found): %s", junk);
    }
    char lf[256];
    ag_fmt(lf, sizeof lf, "%s/lost+found", data_dir);
    struct stat st;
    assert_int_equal(stat(lf, &st), 0);
    assert_check_clean(9);
}

/* The store's stats now are those of before. */
static void assert_stats_equal(const StoreStats *before)
{
    StoreStats now;
    assert_int_equal(store_stats(store, &now, &err), AG_OK);
    assert_int_equal(now.patients, before->patients);
    assert_int_equal(now.studies, before->studies);
    assert_int_equal(now.series, before->series);
    assert_int_equal(now.instances, before->instances);
    assert_int_equal(now.bytes, before->bytes);
}

static void test_lost_index_rebuilt_from_blobs(void **state)
{
    (void)state;
    populate();
    Spec c = spec(1, 10, 100, 0);   /* a conflict on the way in */
    c.sop_uid = uid("3", 100, 50);
    c.patient_id = "OTHER";
    StoreResult res;
    assert_int_equal(ingest(&c, &res), AG_OK);
    assert_true(res.patient_conflict);
    StoreStats before;
    assert_int_equal(store_stats(store, &before, &err), AG_OK);
    assert_int_equal(before.instances, 10);
    store_close(store);
    store = NULL;
    static const char *const files[] = {"index.sqlite", "index.sqlite-wal",
                                        "index.sqlite-shm"};
    for (int i = 0; i < 3; i++) {
        char p[256];
        ag_fmt(p, sizeof p, "%s/%s", data_dir, files[i]);
        unlink(p);
    }
    open_store(STORE_DUP_KEEP_FIRST);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
    StoreCheckReport r;
    check(false, &r);
    assert_int_equal(r.orphan_blobs, 10);
    assert_int_equal(r.instances_checked, 0);
    check(true, &r);
    assert_int_equal(r.orphan_blobs, 10);
    assert_int_equal(r.reindexed, 10);
    assert_int_equal(r.unreadable, 0);
    assert_stats_equal(&before);
    assert_int_equal(count(STORE_LEVEL_INSTANCE,
                           kv("SOPInstanceUID", uid("3", 101, 2)), NULL), 1);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, "PatientID=PAT2", NULL), 2);
    char v[96];
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", uid("1", 1, 10)),
          "NumberOfStudyRelatedInstances", v);
    assert_string_equal(v, "7");
    value(STORE_LEVEL_STUDY, kv("StudyInstanceUID", uid("1", 1, 10)),
          "PatientConflict", v);
    assert_string_equal(v, "1");
    assert_check_clean(10);
    /* The rebuilt index works as before: a duplicate is a duplicate. */
    Spec d = spec(2, 20, 200, 1);
    d.patient_name = "Roe^Jane";
    ingest_ok(&d, STORE_DUPLICATE);
    assert_disk(10);
    assert_consistent();
}

/* An archive made before the totals table (schema 8) counts what it holds
 * once when it is opened, and the triggers keep the count from then on. */
static void test_totals_counted_on_upgrade(void **state)
{
    (void)state;
    populate();
    StoreStats before;
    assert_int_equal(store_stats(store, &before, &err), AG_OK);
    assert_int_equal(before.instances, 9);
    static const char *const undo[] = {
        "DROP TRIGGER totals_patient_add", "DROP TRIGGER totals_patient_drop",
        "DROP TRIGGER totals_study_add", "DROP TRIGGER totals_study_drop",
        "DROP TRIGGER totals_series_add", "DROP TRIGGER totals_series_drop",
        "DROP TRIGGER totals_instance_add",
        "DROP TRIGGER totals_instance_drop",
        "DROP TRIGGER totals_instance_size", "DROP TABLE totals",
        "DELETE FROM schema_version WHERE version >= 9"};
    for (size_t i = 0; i < sizeof undo / sizeof undo[0]; i++) {
        assert_int_equal(store_sql_exec(store, undo[i], NULL, 0, NULL, NULL,
                                        &err), AG_OK);
    }
    reopen_store(STORE_DUP_KEEP_FIRST);
    assert_stats_equal(&before);
    Spec more = spec(3, 30, 300, 0);
    ingest_ok(&more, STORE_STORED);
    uint64_t n = 0;
    assert_int_equal(store_delete(store, STORE_LEVEL_STUDY, uid("1", 1, 10),
                                  &n, &err), AG_OK);
    assert_consistent();
}

/* ---- events -------------------------------------------------------------- */

typedef struct Events {
    pthread_mutex_t lock;
    int stored, replaced, deleted, other;
    char last_deleted[96];
    char level[16];
} Events;

static void on_event(void *ctx, const StoreEvent *ev)
{
    Events *e = ctx;
    pthread_mutex_lock(&e->lock);
    if (ev->type == STORE_EVENT_INSTANCE_STORED && ev->result != NULL &&
        ev->result->outcome == STORE_STORED) {
        e->stored++;
    } else if (ev->type == STORE_EVENT_INSTANCE_STORED &&
               ev->result != NULL &&
               ev->result->outcome == STORE_REPLACED) {
        e->replaced++;
    } else if (ev->type == STORE_EVENT_DELETED) {
        e->deleted++;
        ag_fmt(e->last_deleted, sizeof e->last_deleted, "%s", ev->uid);
        ag_fmt(e->level, sizeof e->level, "%s", ev->level);
    } else {
        e->other++;
    }
    pthread_mutex_unlock(&e->lock);
}

static void test_events(void **state)
{
    (void)state;
    Events ev = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(store_subscribe(store, on_event, &ev, &err), AG_OK);
    populate();
    assert_int_equal(ev.stored, 9);
    /* Duplicates (keep-first) publish nothing. */
    Spec a = spec(1, 10, 100, 0);
    ingest_ok(&a, STORE_DUPLICATE);
    ingest_ok(&a, STORE_DUPLICATE);
    assert_int_equal(ev.stored, 9);
    /* Refused instances publish nothing. */
    Spec bad = spec(3, 3, 3, 3);
    bad.omit_tag = DICOM_TAG_SOP_CLASS_UID;
    StoreResult r;
    assert_int_equal(ingest(&bad, &r), AG_ERR_INVALID);
    assert_int_equal(ev.stored + ev.replaced + ev.other, 9);
    /* A delete publishes one event naming what went. */
    uint64_t n;
    assert_int_equal(store_delete(store, STORE_LEVEL_SERIES,
                                  uid("2", 10, 101), &n, &err), AG_OK);
    assert_int_equal(ev.deleted, 1);
    assert_string_equal(ev.level, "series");
    assert_string_equal(ev.last_deleted, uid("2", 10, 101));
    assert_int_equal(store_delete(store, STORE_LEVEL_SERIES,
                                  uid("2", 10, 101), &n, &err),
                     AG_ERR_NOTFOUND);
    assert_int_equal(ev.deleted, 1);
    assert_int_equal(ev.other, 0);

    /* Under the replace policy a replacement is one event. */
    reopen_store(STORE_DUP_REPLACE);
    Events ev2 = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(store_subscribe(store, on_event, &ev2, &err), AG_OK);
    a.fill = 5;
    ingest_ok(&a, STORE_REPLACED);
    assert_int_equal(ev2.replaced, 1);
    assert_int_equal(ev2.stored, 0);

    /* The listener table is bounded. */
    int rc = AG_OK;
    for (int i = 0; i < 64 && rc == AG_OK; i++) {
        rc = store_subscribe(store, on_event, &ev2, &err);
    }
    assert_int_equal(rc, AG_ERR_LIMIT);
}

/* ---- ingest from a path, limits ----------------------------------------- */

static void write_file(const char *path, const AgBuf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ag_write_all(fd, b->data, b->len, &err), AG_OK);
    close(fd);
}

static void test_ingest_path_copy_and_take(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    AgBuf b;
    build(&a, &b);
    char src[256];
    ag_fmt(src, sizeof src, "%s/a.dcm", tmp_root);
    write_file(src, &b);
    StoreResult r;
    assert_int_equal(store_ingest_path(store, src, false, NULL, &r, &err),
                     AG_OK);
    assert_int_equal(r.outcome, STORE_STORED);
    assert_int_equal(r.size, b.len);
    assert_int_equal(access(src, F_OK), 0);   /* copied, left alone */
    char blob[256];
    assert_true(blob_of(a.sop_uid, blob, sizeof blob));
    struct stat st;
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal((uint64_t)st.st_size, b.len);
    assert_int_equal(st.st_mode & 0111, 0);   /* never executable */
    assert_int_equal(st.st_mode & 0222, 0);

    /* take: a spooled file is moved in, and gone whatever the result. */
    Spec c = spec(1, 1, 1, 1);
    AgBuf cb;
    build(&c, &cb);
    char spool[512];
    ag_fmt(spool, sizeof spool, "%s/in1", store_tmp_dir(store));
    write_file(spool, &cb);
    assert_int_equal(store_ingest_path(store, spool, true, NULL, &r, &err),
                     AG_OK);
    assert_int_equal(access(spool, F_OK), -1);
    assert_true(blob_of(c.sop_uid, blob, sizeof blob));
    ag_buf_deinit(&cb);

    Spec d = spec(1, 1, 1, 2);
    d.omit_tag = DICOM_TAG_SERIES_INSTANCE_UID;
    build(&d, &cb);
    write_file(spool, &cb);
    assert_int_equal(store_ingest_path(store, spool, true, NULL, &r, &err),
                     AG_ERR_INVALID);
    assert_int_equal(access(spool, F_OK), -1);
    ag_buf_deinit(&cb);

    /* take of a duplicate: consumed, and no second blob. */
    write_file(spool, &b);
    assert_int_equal(store_ingest_path(store, spool, true, NULL, &r, &err),
                     AG_OK);
    assert_int_equal(r.outcome, STORE_DUPLICATE);
    assert_int_equal(access(spool, F_OK), -1);
    assert_int_equal(store_ingest_path(store, "/nonexistent/x.dcm", false,
                                       NULL, &r, &err) == AG_OK, false);
    ag_buf_deinit(&b);
    assert_disk(2);
    assert_consistent();
    assert_check_clean(2);
}

/* The store opened again with instances limited to 1 MB. */
static void reopen_limited_to_1mb(void)
{
    store_close(store);
    StoreConfig cfg = {.data_dir = data_dir, .max_instance_bytes_mb = 1};
    assert_int_equal(store_open(&cfg, &store, &err), AG_OK);
}

static void test_size_limit(void **state)
{
    (void)state;
    reopen_limited_to_1mb();
    Spec big = spec(1, 1, 1, 0);
    big.pixel_bytes = (1 << 20) + 4096;
    AgBuf b;
    build(&big, &b);
    StoreResult r;
    assert_int_equal(store_ingest_buffer(store, b.data, b.len, NULL, &r,
                                         &err), AG_ERR_LIMIT);
    assert_disk(0);
    char src[256];
    ag_fmt(src, sizeof src, "%s/big.dcm", tmp_root);
    write_file(src, &b);
    ag_buf_deinit(&b);
    assert_int_equal(store_ingest_path(store, src, false, NULL, &r, &err),
                     AG_ERR_LIMIT);
    assert_disk(0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
    Spec small = spec(1, 1, 1, 1);
    ingest_ok(&small, STORE_STORED);
    assert_disk(1);
}

/* ---- spools: a file arriving in pieces ----------------------------------- */

/* Feed b into a new spool in pieces of `piece` bytes (a PDV's worth); the
 * rc of the last write. */
static int spool_in(const AgBuf *b, size_t piece, StoreSpool **out)
{
    assert_int_equal(store_spool_open(store, out, &err), AG_OK);
    int rc = AG_OK;
    for (size_t off = 0; off < b->len && rc == AG_OK; off += piece) {
        size_t n = b->len - off < piece ? b->len - off : piece;
        rc = store_spool_write(*out, b->data + off, n, &err);
    }
    return rc;
}

/* The sizes the spool treats differently: staged in the index, a file
 * beside memory, the file alone. */
static const size_t spool_sizes[] = {4096, (size_t)600 << 10,
                                     (size_t)3 << 20};

/* Instance i of spool_sizes built into *b and fed to a new spool in
 * PDV-sized pieces. */
static StoreSpool *spooled(int i, AgBuf *b, Spec *sp)
{
    *sp = spec(1, 1, 1, i);
    sp->pixel_bytes = spool_sizes[i];
    build(sp, b);
    StoreSpool *spool;
    assert_int_equal(spool_in(b, 16384, &spool), AG_OK);
    return spool;
}

/* The stored blob is byte for byte what went in. */
static void assert_blob_is(const char *sop_uid, const AgBuf *b)
{
    StoreInstance in;
    assert_int_equal(store_instance_open(store, sop_uid, &in, &err), AG_OK);
    assert_int_equal(in.size, b->len);
    uint8_t *got = malloc(b->len);
    assert_non_null(got);
    assert_int_equal(pread(in.fd, got, b->len, 0), (ssize_t)b->len);
    assert_memory_equal(got, b->data, b->len);
    free(got);
    close(in.fd);
}

/* Small (staged in the index), past the staging size (a file beside the
 * memory copy) and past memory's share (the file alone): each is stored
 * as sent, with the checksum hashed on the way in (agora check agrees),
 * and nothing is left in tmp/. */
static void test_spool_every_size(void **state)
{
    (void)state;
    const int files_while_writing[] = {0, 1, 1};
    for (int i = 0; i < 3; i++) {
        Spec sp;
        AgBuf b;
        StoreSpool *spool = spooled(i, &b, &sp);
        assert_int_equal(disk().spool, files_while_writing[i]);
        StoreResult r;
        StoreSource src = {.via = "test"};
        assert_int_equal(store_ingest_spool(store, spool, &src, &r, &err),
                         AG_OK);
        assert_int_equal(r.outcome, STORE_STORED);
        assert_int_equal(disk().spool, 0);
        assert_blob_is(sp.sop_uid, &b);
        ag_buf_deinit(&b);
    }
    assert_check_clean(3);
    assert_consistent();
}

/* Verdicts of asynchronous ingests, as they come (any thread). */
typedef struct Verdicts {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int n, ok, stored, duplicates;
} Verdicts;

static void verdict(void *ctx, int rc, const StoreResult *res,
                    const AgError *e)
{
    Verdicts *v = ctx;
    (void)e;
    pthread_mutex_lock(&v->lock);
    v->n++;
    if (rc == AG_OK) {
        v->ok++;
        v->stored += res->outcome == STORE_STORED;
        v->duplicates += res->outcome == STORE_DUPLICATE;
    }
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->lock);
}

/* Entries of tmp/ named spool-* (a blob waiting for the settler is there
 * too, as name.tmp). */
static int spool_files(void)
{
    char p[256];
    ag_fmt(p, sizeof p, "%s/tmp", data_dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strncmp(e->d_name, "spool-", 6) == 0;
    }
    closedir(d);
    return n;
}

/* The asynchronous form: the spool is consumed when the call returns (its
 * file renamed, to wait as the blob's name.tmp), and each verdict comes
 * exactly once — a duplicate's in the calling thread, before the call
 * returns. */
static void test_spool_async(void **state)
{
    (void)state;
    Verdicts v = {.lock = PTHREAD_MUTEX_INITIALIZER,
                  .cv = PTHREAD_COND_INITIALIZER};
    AgBuf first;
    for (int i = 0; i < 3; i++) {
        Spec sp;
        AgBuf b;
        StoreSpool *spool = spooled(i, &b, &sp);
        assert_int_equal(spool_files(), i > 0);
        store_ingest_spool_async(store, spool, NULL, verdict, &v);
        assert_int_equal(spool_files(), 0);
        if (i == 0) {
            first = b;
        } else {
            ag_buf_deinit(&b);
        }
    }
    pthread_mutex_lock(&v.lock);
    while (v.n < 3) {
        pthread_cond_wait(&v.cv, &v.lock);
    }
    pthread_mutex_unlock(&v.lock);
    assert_int_equal(v.stored, 3);

    StoreSpool *again;                 /* the first one again */
    assert_int_equal(spool_in(&first, 16384, &again), AG_OK);
    store_ingest_spool_async(store, again, NULL, verdict, &v);
    pthread_mutex_lock(&v.lock);
    assert_int_equal(v.n, 4);          /* told before the call returned */
    assert_int_equal(v.duplicates, 1);
    pthread_mutex_unlock(&v.lock);
    ag_buf_deinit(&first);
    assert_disk(3);
    assert_check_clean(3);
}

/* A spool past the size limit is spoiled: every later write and the
 * ingest return the first failure; a discarded spool leaves no file; bytes
 * that are no DICOM are refused with nothing stored. */
static void test_spool_limit_discard_and_garbage(void **state)
{
    (void)state;
    reopen_limited_to_1mb();
    Spec big = spec(1, 1, 1, 0);
    big.pixel_bytes = (size_t)2 << 20;
    AgBuf b;
    build(&big, &b);
    StoreSpool *spool;
    assert_int_equal(spool_in(&b, 65536, &spool), AG_ERR_LIMIT);
    assert_int_equal(store_spool_write(spool, "x", 1, &err), AG_ERR_LIMIT);
    StoreResult r;
    assert_int_equal(store_ingest_spool(store, spool, NULL, &r, &err),
                     AG_ERR_LIMIT);
    assert_disk(0);

    b.len = (size_t)700 << 10;        /* a file was started: discarded */
    assert_int_equal(spool_in(&b, 65536, &spool), AG_OK);
    assert_int_equal(disk().spool, 1);
    store_spool_discard(spool);
    store_spool_discard(NULL);
    assert_disk(0);

    memset(b.data, 'x', b.len);       /* no preamble, no DICM */
    assert_int_equal(spool_in(&b, 65536, &spool), AG_OK);
    assert_int_equal(store_ingest_spool(store, spool, NULL, &r, &err),
                     AG_ERR_PARSE);
    assert_disk(0);
    assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
    ag_buf_deinit(&b);
}

/* Every allocation failing in turn: each failure is a clean error, leaves
 * nothing behind, and the store keeps working. */
static void test_ingest_survives_every_oom(void **state)
{
    (void)state;
    Spec a = spec(1, 1, 1, 0);
    AgBuf b;
    build(&a, &b);
    int n = 1;
    for (;; n++) {
        StoreResult r;
        AgError e;
        ag_error_clear(&e);
        ag_test_fail_nth_alloc(n);
        int rc = store_ingest_buffer(store, b.data, b.len, NULL, &r, &e);
        ag_test_fail_nth_alloc(0);
        if (rc == AG_OK) {
            break;
        }
        if (rc != AG_ERR_NOMEM && rc != AG_ERR_LIMIT) {
            fail_msg("allocation %d failing: %d %s", n, rc, e.msg);
        }
        assert_disk(0);
        assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
        assert_true(n < 100000);
    }
    ag_buf_deinit(&b);
    assert_true(n > 1);
    assert_disk(1);
    assert_check_clean(1);
    assert_consistent();
}

/* ---- injected faults (in a fresh process) -------------------------------- */

#define FAULT_N 5

/* The child: ingest FAULT_N instances one at a time; one line each. */
static int fault_child(const char *dir, const char *mode)
{
    ag_log_set_level(AG_LOG_OFF);
    ag_fmt(data_dir, sizeof data_dir, "%s", dir);
    StoreConfig cfg = {.data_dir = data_dir,
                       .dup_policy = strcmp(mode, "replace") == 0
                                         ? STORE_DUP_REPLACE
                                         : STORE_DUP_KEEP_FIRST};
    AgError e;
    if (store_open(&cfg, &store, &e) != AG_OK) {
        printf("open %s\n", e.msg);
        return 3;
    }
    for (int i = 0; i < FAULT_N; i++) {
        Spec s = spec(1, 1, 1, i);
        if (strcmp(mode, "replace") == 0) {
            s.fill = 0x55;
            s.pixel_bytes = 64;
        }
        AgBuf b;
        build(&s, &b);
        StoreResult r;
        ag_error_clear(&e);
        int rc = store_ingest_buffer(store, b.data, b.len, NULL, &r, &e);
        printf("%d %d %d %s\n", i, rc, rc == AG_OK ? (int)r.outcome : -1,
               rc == AG_OK ? r.sop_instance_uid : e.msg);
        ag_buf_deinit(&b);
    }
    store_close(store);
    return 0;
}

/* A fresh data folder, laid out by an open in this (fault-free) process so
 * that the child's fault counts start at its first ingest. */
static void fresh_data_dir(void)
{
    rm_tree(data_dir);
    open_store(STORE_DUP_KEEP_FIRST);
    store_close(store);
    store = NULL;
}

typedef struct ChildOut {
    int rc[FAULT_N];
    int outcome[FAULT_N];
    char msg[FAULT_N][256];
} ChildOut;

/* Run the child; its exit status is returned when it is not 0 (then out
 * holds its first line in msg[0]). */
static int run_child_status(const char *fault, const char *mode,
                            ChildOut *out)
{
    char outpath[256];
    ag_fmt(outpath, sizeof outpath, "%s/child.out", tmp_root);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        setenv("AGORA_FAULT", fault, 1);
        execl("/proc/self/exe", "test_store", "--fault-child", data_dir, mode,
              (char *)NULL);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) {
        fail_msg("fault child (%s) died: status %d", fault, status);
    }
    FILE *f = fopen(outpath, "r");
    assert_non_null(f);
    char line[512];
    if (WEXITSTATUS(status) != 0) {
        if (fgets(line, sizeof line, f) == NULL) {
            line[0] = '\0';
        }
        line[strcspn(line, "\n")] = '\0';
        ag_fmt(out->msg[0], 256, "%s", line);
        fclose(f);
        return WEXITSTATUS(status);
    }
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL && n < FAULT_N) {
        int i, rc, oc, off = 0;
        if (sscanf(line, "%d %d %d %n", &i, &rc, &oc, &off) != 3) {
            fail_msg("child said: %s", line);
        }
        out->rc[i] = rc;
        out->outcome[i] = oc;
        line[strcspn(line, "\n")] = '\0';
        ag_fmt(out->msg[i], 256, "%s", line + off);
        n++;
    }
    fclose(f);
    assert_int_equal(n, FAULT_N);
    return 0;
}

static void run_child(const char *fault, const char *mode, ChildOut *out)
{
    int st = run_child_status(fault, mode, out);
    if (st != 0) {
        fail_msg("fault child (%s) exited %d: %s", fault, st, out->msg[0]);
    }
}

static void test_fault_each_point_fails_one_store(void **state)
{
    (void)state;
    static const struct {
        const char *point;
        const char *says;
    } points[] = {
        {"blob.write", "write"},   {"blob.fsync", "fsync"},
        {"blob.rename", "rename"}, {"blob.dirsync", "fsync"},
        {"index.commit", "commit"}, {"index.sync", "fsync"},
    };
    for (size_t p = 0; p < sizeof points / sizeof points[0]; p++) {
        fresh_data_dir();
        char fault[64];
        ag_fmt(fault, sizeof fault, "%s:3", points[p].point);
        ChildOut out;
        run_child(fault, "fresh", &out);
        for (int i = 0; i < FAULT_N; i++) {
            if (i == 2) {
                if (out.rc[i] != AG_ERR_IO ||
                    strstr(out.msg[i], points[p].says) == NULL) {
                    fail_msg("%s: instance 3: rc %d \"%s\" (want I/O error "
                             "saying %s)", fault, out.rc[i], out.msg[i],
                             points[p].says);
                }
            } else if (out.rc[i] != AG_OK || out.outcome[i] != STORE_STORED) {
                fail_msg("%s: instance %d: rc %d %s", fault, i + 1,
                         out.rc[i], out.msg[i]);
            }
        }
        open_store(STORE_DUP_KEEP_FIRST);
        assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), FAULT_N - 1);
        assert_int_equal(count(STORE_LEVEL_INSTANCE,
                               kv("SOPInstanceUID", uid("3", 1, 2)), NULL),
                         0);
        assert_disk(FAULT_N - 1);
        assert_check_clean(FAULT_N - 1);
        assert_consistent();
        /* Without the fault the one that failed goes in. */
        Spec s = spec(1, 1, 1, 2);
        ingest_ok(&s, STORE_STORED);
        assert_check_clean(FAULT_N);
        store_close(store);
        store = NULL;
    }
}

static void test_fault_every_time(void **state)
{
    (void)state;
    static const char *const faults[] = {"blob.write:*", "blob.fsync:*",
                                         "blob.rename:*", "blob.dirsync:*",
                                         "index.commit:*", "index.sync:*"};
    for (size_t p = 0; p < sizeof faults / sizeof faults[0]; p++) {
        fresh_data_dir();
        ChildOut out;
        run_child(faults[p], "fresh", &out);
        for (int i = 0; i < FAULT_N; i++) {
            if (out.rc[i] != AG_ERR_IO) {
                fail_msg("%s: instance %d: rc %d %s", faults[p], i + 1,
                         out.rc[i], out.msg[i]);
            }
        }
        open_store(STORE_DUP_KEEP_FIRST);
        assert_int_equal(count(STORE_LEVEL_INSTANCE, NULL, NULL), 0);
        assert_int_equal(count(STORE_LEVEL_PATIENT, NULL, NULL), 0);
        assert_disk(0);
        assert_check_clean(0);
        store_close(store);
        store = NULL;
    }
}

/* Laying out a new data folder fsyncs it: a failure there fails the open
 * with the path named, leaves nothing that a later open trips on. */
static void test_fault_while_creating_data_dir(void **state)
{
    (void)state;
    rm_tree(data_dir);
    ChildOut out;
    int st = run_child_status("blob.dirsync:1", "fresh", &out);
    assert_int_equal(st, 3);   /* fault_child: store_open failed */
    if (strstr(out.msg[0], "fsync") == NULL ||
        strstr(out.msg[0], "blobs") == NULL) {
        fail_msg("open failure says \"%s\" (want fsync of the blob folder)",
                 out.msg[0]);
    }
    open_store(STORE_DUP_KEEP_FIRST);
    Spec s = spec(1, 1, 1, 0);
    ingest_ok(&s, STORE_STORED);
    assert_disk(1);
    assert_check_clean(1);
}

/* A replacement that fails keeps the original, byte for byte. */
static void test_fault_during_replace_keeps_original(void **state)
{
    (void)state;
    static const char *const faults[] = {"blob.write:1", "blob.fsync:1",
                                         "blob.rename:1", "blob.dirsync:1",
                                         "index.commit:1"};
    for (size_t p = 0; p < 5; p++) {
        rm_tree(data_dir);
        open_store(STORE_DUP_KEEP_FIRST);
        for (int i = 0; i < FAULT_N; i++) {
            Spec s = spec(1, 1, 1, i);
            ingest_ok(&s, STORE_STORED);
        }
        char before[256];
        assert_true(blob_of(uid("3", 1, 0), before, sizeof before));
        store_close(store);
        store = NULL;
        ChildOut out;
        run_child(faults[p], "replace", &out);
        if (out.rc[0] != AG_ERR_IO) {
            fail_msg("%s: replacing instance 1: rc %d %s", faults[p],
                     out.rc[0], out.msg[0]);
        }
        for (int i = 1; i < FAULT_N; i++) {
            if (out.rc[i] != AG_OK || out.outcome[i] != STORE_REPLACED) {
                fail_msg("%s: replacing instance %d: rc %d %s", faults[p],
                         i + 1, out.rc[i], out.msg[i]);
            }
        }
        open_store(STORE_DUP_KEEP_FIRST);
        char after[256];
        assert_true(blob_of(uid("3", 1, 0), after, sizeof after));
        assert_string_equal(before, after);
        char v[96];
        value(STORE_LEVEL_INSTANCE, kv("SOPInstanceUID", uid("3", 1, 0)),
              "Size", v);
        struct stat st;
        assert_int_equal(stat(after, &st), 0);
        assert_int_equal(atoll(v), st.st_size);
        assert_disk(FAULT_N);
        assert_check_clean(FAULT_N);
        assert_consistent();
        store_close(store);
        store = NULL;
    }
}


/* ---- staging: small blobs committed inside the index ------------------ */

static void open_staging(StoreDupPolicy policy, const char *idle_ms)
{
    setenv("AGORA_SPILL_IDLE_MS", idle_ms, 1);   /* read by store_open */
    StoreConfig cfg = {.data_dir = data_dir, .dup_policy = policy,
                       .stage_small = true};
    ag_error_clear(&err);
    int rc = store_open(&cfg, &store, &err);
    unsetenv("AGORA_SPILL_IDLE_MS");
    if (rc != AG_OK) {
        fail_msg("store_open %s: %s", data_dir, err.msg);
    }
}

static long staged_rows(void)
{
    return sql_long("SELECT count(*) FROM staged_blobs");
}

/* What store_instance_open serves of sop_uid equals the bytes of sp. */
static void assert_serves(const Spec *sp)
{
    StoreInstance in;
    ag_error_clear(&err);
    if (store_instance_open(store, sp->sop_uid, &in, &err) != AG_OK) {
        fail_msg("open %s: %s", sp->sop_uid, err.msg);
    }
    AgBuf want;
    build(sp, &want);
    assert_int_equal(in.size, want.len);
    uint8_t *got = malloc(want.len);
    assert_int_equal(pread(in.fd, got, want.len, 0), (ssize_t)want.len);
    assert_memory_equal(got, want.data, want.len);
    free(got);
    close(in.fd);
    ag_buf_deinit(&want);
    assert_int_equal(store_instance_verify(store, sp->sop_uid, NULL, &err),
                     AG_OK);
}

static void test_staged_blobs_until_spilled(void **state)
{
    (void)state;
    open_staging(STORE_DUP_KEEP_FIRST, "600000");   /* never idle enough */
    populate();
    /* One at a time, so every blob was staged: no file yet, and every
     * instance served, verified and checked from the index. */
    assert_disk(0);
    assert_int_equal(staged_rows(), 9);
    Spec a = spec(1, 10, 100, 1);
    assert_serves(&a);
    StoreCheckReport r;
    check(false, &r);
    assert_int_equal(r.instances_checked, 9);
    assert_int_equal(r.missing_blobs + r.bad_checksums + r.orphan_blobs, 0);
    /* A duplicate stages nothing; a delete takes the staged copy along. */
    ingest_ok(&a, STORE_DUPLICATE);
    uint64_t n = 0;
    assert_int_equal(store_delete(store, STORE_LEVEL_INSTANCE, a.sop_uid, &n,
                                  &err), AG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(staged_rows(), 8);
    /* Closing writes everything out: plain files, nothing staged. */
    reopen_store(STORE_DUP_KEEP_FIRST);
    assert_disk(8);
    assert_int_equal(staged_rows(), 0);
    assert_check_clean(8);
    Spec b = spec(2, 20, 200, 1);
    b.patient_name = "Roe^Jane";
    assert_serves(&b);
    assert_consistent();
}

static void test_staged_blobs_spilled_when_idle(void **state)
{
    (void)state;
    open_staging(STORE_DUP_KEEP_FIRST, "20");
    Spec sp[3];
    for (int i = 0; i < 3; i++) {
        sp[i] = spec(3, 30, 300, i);
        ingest_ok(&sp[i], STORE_STORED);
    }
    for (int t = 0; t < 500 && staged_rows() != 0; t++) {
        usleep(10000);
    }
    assert_int_equal(staged_rows(), 0);
    assert_disk(3);
    for (int i = 0; i < 3; i++) {
        assert_serves(&sp[i]);
    }
    assert_check_clean(3);
}

static void test_staged_blob_replaced(void **state)
{
    (void)state;
    open_staging(STORE_DUP_REPLACE, "600000");
    Spec a = spec(4, 40, 400, 0);
    ingest_ok(&a, STORE_STORED);
    a.fill = 0x5a;   /* same UIDs, other bytes */
    ingest_ok(&a, STORE_REPLACED);
    assert_int_equal(staged_rows(), 1);
    assert_serves(&a);
    reopen_store(STORE_DUP_REPLACE);
    assert_disk(1);
    assert_serves(&a);
    assert_check_clean(1);
}

static void test_large_blobs_never_staged(void **state)
{
    (void)state;
    open_staging(STORE_DUP_KEEP_FIRST, "600000");
    Spec a = spec(5, 50, 500, 0);
    a.pixel_bytes = 100 << 10;   /* over the staging limit (64 KiB) */
    ingest_ok(&a, STORE_STORED);
    assert_int_equal(staged_rows(), 0);
    assert_disk(1);
    assert_serves(&a);
}

/* Readers keep prepared statements (index_sqlite.c): more distinct
 * queries than the cache holds, each asked twice, all answer right. */
static void test_many_distinct_queries(void **state)
{
    (void)state;
    populate();
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100; i++) {
            char sql[96];
            ag_fmt(sql, sizeof sql, "SELECT %d + count(*) FROM instances"
                   " WHERE sop_class_uid = ?1", i);
            const char *params[1] = {CT_CLASS};
            long n = -1;
            ag_error_clear(&err);
            assert_int_equal(store_sql_select(store, sql, params, 1,
                                              count_cb, &n, &err), AG_OK);
            assert_int_equal(n, i + 6);   /* populate: 6 CT instances */
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--fault-child") == 0) {
        return fault_child(argv[2], argv[3]);
    }
    if (getenv("AGORA_FAULT") != NULL) {
        fprintf(stderr, "test_store: unset AGORA_FAULT first\n");
        return 1;
    }
    ag_log_set_level(AG_LOG_ERROR);
#define K(fn) cmocka_unit_test_setup_teardown(fn, setup_keep, teardown)
#define R(fn) cmocka_unit_test_setup_teardown(fn, setup_replace, teardown)
#define J(fn) cmocka_unit_test_setup_teardown(fn, setup_reject, teardown)
#define D(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown)
    const struct CMUnitTest tests[] = {
        K(test_store_then_list_every_level),
        D(test_staged_blobs_until_spilled),
        D(test_staged_blobs_spilled_when_idle),
        D(test_staged_blob_replaced),
        D(test_large_blobs_never_staged),
        K(test_many_distinct_queries),
        K(test_list_filters_refused_and_bound),
        K(test_duplicate_keep_first),
        R(test_duplicate_replace),
        R(test_replace_into_other_series_keeps_counts),
        J(test_duplicate_reject),
        K(test_same_uid_from_many_threads_keep),
        K(test_same_uid_from_many_threads_replace),
        K(test_same_uid_from_many_threads_reject),
        K(test_missing_and_invalid_uids_refused),
        K(test_not_dicom_refused_without_trace),
        K(test_patient_conflict_flagged),
        K(test_patients_keyed_by_id_and_issuer),
        K(test_delete_each_level),
        K(test_ingest_racing_delete),
        K(test_check_clean_store),
        K(test_check_finds_corrupt_blob),
        K(test_check_missing_blob_and_repair),
        K(test_check_orphans),
        K(test_lost_index_rebuilt_from_blobs),
        K(test_totals_counted_on_upgrade),
        K(test_events),
        K(test_ingest_path_copy_and_take),
        K(test_size_limit),
        K(test_spool_every_size),
        K(test_spool_async),
        K(test_spool_limit_discard_and_garbage),
        K(test_ingest_survives_every_oom),
        D(test_fault_each_point_fails_one_store),
        D(test_fault_every_time),
        D(test_fault_while_creating_data_dir),
        D(test_fault_during_replace_keeps_original),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
