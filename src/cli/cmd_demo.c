/*
 * cmd_demo.c — `agora demo`: synthetic studies for a newcomer to look at.
 *
 *   agora demo [--data DIR] [N]    store N studies (default 3), each with a
 *                                  CT and an MR phantom series, through the
 *                                  normal ingest pipeline
 *   agora demo --file OUT          write one CT phantom instance to OUT
 *
 * Everything is made with Agora's own data layer; nothing is downloaded.
 */
#include "cli/cli.h"
#include "store/store.h"

#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIZE 128
#define SLICES 12
#define DEMO_ROOT "1.2.826.0.1.3680043.10.1447.2"

typedef struct Phantom {
    const char *modality;
    const char *sop_class;
    const char *series_desc;
    int series_number;
} Phantom;

static const Phantom CT = {"CT", "1.2.840.10008.5.1.4.1.1.2",
                           "Phantom CT (water, bone)", 1};
static const Phantom MR = {"MR", "1.2.840.10008.5.1.4.1.1.4",
                           "Phantom MR (T1-like)", 2};

static const char *const NAMES[] = {
    "Demo^Alice", "Demo^Bruno", "Demo^Chiara", "Demo^Dmitri", "Demo^Emeka",
    "Demo^Fatima", "Demo^Goran", "Demo^Hana",
};

static int set_str(DicomDataset *ds, uint32_t tag, const char *v, int rc,
                   AgError *err)
{
    return rc != AG_OK ? rc : dicom_set_string(ds, tag, 0, v, err);
}

static int set_int(DicomDataset *ds, uint32_t tag, int64_t v, int rc,
                   AgError *err)
{
    return rc != AG_OK ? rc : dicom_set_ints(ds, tag, 0, &v, 1, err);
}

/* A cylinder with an insert that moves along the slices: CT in HU + 1024,
 * MR as arbitrary intensities. */
static void pixels(const Phantom *p, int slice, uint16_t *px)
{
    double cx = SIZE / 2.0, cy = SIZE / 2.0;
    double ix = cx + 20 * cos(slice * 0.5), iy = cy + 20 * sin(slice * 0.5);
    for (int y = 0; y < SIZE; y++) {
        for (int x = 0; x < SIZE; x++) {
            double r2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            double i2 = (x - ix) * (x - ix) + (y - iy) * (y - iy);
            int v;
            if (p == &CT) {
                v = r2 < 55 * 55 ? 1024 : 24;          /* water / air */
                v = i2 < 100 ? 1024 + 700 : v;          /* bone */
            } else {
                v = r2 < 55 * 55 ? 400 + (x + y) % 17 : 0;
                v = i2 < 100 ? 1400 : v;
            }
            px[y * SIZE + x] = (uint16_t)v;
        }
    }
}

static int build(const Phantom *p, int study, int slice, long stamp,
                 DicomFile *f, AgArena *a, AgError *err)
{
    DicomDataset *ds = dicom_dataset_create(a);
    if (ds == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    char st[65], se[65], in[65], pid[16], date[9], acc[17], pos[64];
    ag_fmt(st, sizeof st, DEMO_ROOT ".%ld.%d", stamp, study);
    ag_fmt(se, sizeof se, "%s.%d", st, p->series_number);
    ag_fmt(in, sizeof in, "%s.%d", se, slice + 1);
    ag_fmt(pid, sizeof pid, "DEMO-%d", study);
    ag_fmt(date, sizeof date, "2026%02d%02d", 1 + study % 12,
           1 + study % 28);
    ag_fmt(acc, sizeof acc, "DEMO%06d", study);
    ag_fmt(pos, sizeof pos, "-64\\-64\\%d", slice * 5);
    int rc = AG_OK;
    rc = set_str(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET, "ISO_IR 192", rc, err);
    rc = set_str(ds, 0x00080008, "ORIGINAL\\PRIMARY\\AXIAL", rc, err);
    rc = set_str(ds, DICOM_TAG_SOP_CLASS_UID, p->sop_class, rc, err);
    rc = set_str(ds, DICOM_TAG_SOP_INSTANCE_UID, in, rc, err);
    rc = set_str(ds, 0x00080020, date, rc, err);
    rc = set_str(ds, 0x00080030, "101500", rc, err);
    rc = set_str(ds, 0x00080050, acc, rc, err);
    rc = set_str(ds, 0x00080060, p->modality, rc, err);
    rc = set_str(ds, 0x00080090, "Referring^Demo", rc, err);
    rc = set_str(ds, 0x00081030, "Demo study (synthetic phantoms)", rc, err);
    rc = set_str(ds, 0x0008103e, p->series_desc, rc, err);
    rc = set_str(ds, 0x00100010, NAMES[study % 8], rc, err);
    rc = set_str(ds, DICOM_TAG_PATIENT_ID, pid, rc, err);
    rc = set_str(ds, 0x00100030, "19700101", rc, err);
    rc = set_str(ds, 0x00100040, "O", rc, err);
    rc = set_str(ds, 0x00180050, "5", rc, err);
    rc = set_str(ds, DICOM_TAG_STUDY_INSTANCE_UID, st, rc, err);
    rc = set_str(ds, DICOM_TAG_SERIES_INSTANCE_UID, se, rc, err);
    rc = set_int(ds, 0x00200011, p->series_number, rc, err);
    rc = set_int(ds, 0x00200013, slice + 1, rc, err);
    rc = set_str(ds, 0x00200032, pos, rc, err);
    rc = set_str(ds, 0x00200037, "1\\0\\0\\0\\1\\0", rc, err);
    rc = set_int(ds, 0x00280002, 1, rc, err);
    rc = set_str(ds, 0x00280004, "MONOCHROME2", rc, err);
    rc = set_int(ds, 0x00280010, SIZE, rc, err);
    rc = set_int(ds, 0x00280011, SIZE, rc, err);
    rc = set_str(ds, 0x00280030, "2\\2", rc, err);
    rc = set_int(ds, 0x00280100, 16, rc, err);
    rc = set_int(ds, 0x00280101, 12, rc, err);
    rc = set_int(ds, 0x00280102, 11, rc, err);
    rc = set_int(ds, DICOM_TAG_PIXEL_REPRESENTATION, 0, rc, err);
    rc = set_str(ds, 0x00281050, p == &CT ? "40" : "700", rc, err);
    rc = set_str(ds, 0x00281051, p == &CT ? "400" : "1400", rc, err);
    if (p == &CT) {
        rc = set_str(ds, 0x00281052, "-1024", rc, err);
        rc = set_str(ds, 0x00281053, "1", rc, err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    static uint16_t px[SIZE * SIZE];
    pixels(p, slice, px);
    rc = dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA, DICOM_VR_OW, px, sizeof px,
                         err);
    if (rc != AG_OK) {
        return rc;
    }
    memset(f, 0, sizeof *f);
    f->dataset = ds;
    return dicom_file_build_meta(f, DICOM_TS_EXPLICIT_LE, err);
}

static int write_path(const DicomFile *f, const char *path, AgError *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "create %s", path);
    }
    int rc = dicom_write_file(f, NULL, NULL, dicom_sink_fd, &fd, err);
    close(fd);
    return rc;
}

/* One instance through the ingest pipeline, as any sender's would go. */
static int store_one(Store *s, const DicomFile *f, AgError *err)
{
    AgBuf b;
    ag_buf_init(&b, 0);
    int rc = dicom_write_file(f, NULL, NULL, dicom_sink_buf, &b, err);
    if (rc == AG_OK) {
        StoreSource src = {.via = "demo"};
        rc = store_ingest_buffer(s, b.data, b.len, &src, NULL, err);
    }
    ag_buf_deinit(&b);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora demo [--data DIR] [N]\n"
            "       agora demo --file OUT\n\n"
            "Store N synthetic studies (default 3; each a CT and an MR "
            "phantom series of\n%d slices) through the ingest pipeline, or "
            "write one CT phantom instance\nto OUT.  Patients are named "
            "Demo^...; nothing is downloaded.\n", SLICES);
}

int cmd_demo(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'},
        {"data", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    StoreConfig cfg = {.data_dir = "./agora-data"};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': path = optarg; break;
        case 'd': cfg.data_dir = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    long n = 3;
    if (optind < argc) {
        char *end;
        n = strtol(argv[optind++], &end, 10);
        if (*end != '\0' || n < 1 || n > 10000) {
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (path != NULL && n != 3)) {
        usage(stderr);
        return 2;
    }
    AgError err;
    ag_error_clear(&err);
    long stamp = (long)time(NULL);
    int rc = AG_OK;
    if (path != NULL) {
        AgArena *a = ag_arena_create(16 << 20);
        DicomFile f;
        rc = a == NULL ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
                       : build(&CT, 0, 0, stamp, &f, a, &err);
        if (rc == AG_OK) {
            rc = write_path(&f, path, &err);
        }
        ag_arena_destroy(a);
    } else {
        Store *s = NULL;
        rc = store_open(&cfg, &s, &err);
        for (long st = 0; rc == AG_OK && st < n; st++) {
            for (int k = 0; rc == AG_OK && k < 2 * SLICES; k++) {
                AgArena *a = ag_arena_create(16 << 20);
                DicomFile f;
                rc = a == NULL
                    ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
                    : build(k < SLICES ? &CT : &MR, (int)st, k % SLICES,
                            stamp, &f, a, &err);
                if (rc == AG_OK) {
                    rc = store_one(s, &f, &err);
                }
                ag_arena_destroy(a);
            }
        }
        store_close(s);
        if (rc == AG_OK) {
            printf("stored %ld demo studies (%ld instances) in %s\n", n,
                   n * 2 * SLICES, cfg.data_dir);
        }
    }
    if (rc != AG_OK) {
        fprintf(stderr, "agora demo: %s\n", err.msg);
        return 1;
    }
    return 0;
}
