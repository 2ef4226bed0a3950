/*
 * cmd_demo.c — `agora demo`: synthetic images for a newcomer to look at.
 *
 * `agora demo --file OUT` writes one synthetic CT phantom instance (a
 * Part 10 file made with Agora's own data layer).  Storing N synthetic
 * studies through the ingest path arrives with the archive core.
 */
#include "cli/cli.h"
#include "dicom/dicom.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PHANTOM_SIZE 64
#define DEMO_ROOT "1.2.826.0.1.3680043.10.1447.2"

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

/* A water cylinder (0 HU) in air (-1000 HU) with a bone insert. */
static void phantom_pixels(uint16_t *px)
{
    for (int y = 0; y < PHANTOM_SIZE; y++) {
        for (int x = 0; x < PHANTOM_SIZE; x++) {
            int dx = x - PHANTOM_SIZE / 2, dy = y - PHANTOM_SIZE / 2;
            int r2 = dx * dx + dy * dy;
            int hu = -1000;
            if (r2 < 28 * 28) {
                hu = 0;
            }
            if ((dx - 8) * (dx - 8) + dy * dy < 36) {
                hu = 700;
            }
            px[y * PHANTOM_SIZE + x] = (uint16_t)(hu + 1024);
        }
    }
}

static int build_phantom(DicomFile *f, AgArena *a, AgError *err)
{
    DicomDataset *ds = dicom_dataset_create(a);
    if (ds == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    long stamp = (long)time(NULL);
    /* UIDs stay well under 64 characters: root (29) + two numbers. */
    char study[65], series[65], inst[65];
    long pid = (long)getpid();
    snprintf(study, sizeof study, DEMO_ROOT ".%ld.%ld.1", stamp, pid);
    snprintf(series, sizeof series, DEMO_ROOT ".%ld.%ld.1.1", stamp, pid);
    snprintf(inst, sizeof inst, DEMO_ROOT ".%ld.%ld.1.1.1", stamp, pid);
    int rc = AG_OK;
    rc = set_str(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET, "ISO_IR 192", rc, err);
    rc = set_str(ds, 0x00080008, "ORIGINAL\\PRIMARY\\AXIAL", rc, err);
    rc = set_str(ds, DICOM_TAG_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2", rc,
                 err);
    rc = set_str(ds, DICOM_TAG_SOP_INSTANCE_UID, inst, rc, err);
    rc = set_str(ds, 0x00080020, "20260101", rc, err);
    rc = set_str(ds, 0x00080030, "120000", rc, err);
    rc = set_str(ds, 0x00080050, "DEMO0001", rc, err);
    rc = set_str(ds, 0x00080060, "CT", rc, err);
    rc = set_str(ds, 0x00081030, "Demo phantom study", rc, err);
    rc = set_str(ds, 0x0008103e, "Water cylinder with bone insert", rc, err);
    rc = set_str(ds, 0x00100010, "Demo^Phantom", rc, err);
    rc = set_str(ds, DICOM_TAG_PATIENT_ID, "DEMO-1", rc, err);
    rc = set_str(ds, 0x00100030, "19700101", rc, err);
    rc = set_str(ds, 0x00100040, "O", rc, err);
    rc = set_str(ds, DICOM_TAG_STUDY_INSTANCE_UID, study, rc, err);
    rc = set_str(ds, DICOM_TAG_SERIES_INSTANCE_UID, series, rc, err);
    rc = set_int(ds, 0x00200011, 1, rc, err);
    rc = set_int(ds, 0x00200013, 1, rc, err);
    rc = set_int(ds, 0x00280002, 1, rc, err);
    rc = set_str(ds, 0x00280004, "MONOCHROME2", rc, err);
    rc = set_int(ds, 0x00280010, PHANTOM_SIZE, rc, err);
    rc = set_int(ds, 0x00280011, PHANTOM_SIZE, rc, err);
    rc = set_int(ds, 0x00280100, 16, rc, err);
    rc = set_int(ds, 0x00280101, 12, rc, err);
    rc = set_int(ds, 0x00280102, 11, rc, err);
    rc = set_int(ds, DICOM_TAG_PIXEL_REPRESENTATION, 0, rc, err);
    rc = set_str(ds, 0x00281050, "40", rc, err);
    rc = set_str(ds, 0x00281051, "400", rc, err);
    rc = set_str(ds, 0x00281052, "-1024", rc, err);
    rc = set_str(ds, 0x00281053, "1", rc, err);
    if (rc != AG_OK) {
        return rc;
    }
    static uint16_t px[PHANTOM_SIZE * PHANTOM_SIZE];
    phantom_pixels(px);
    rc = dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA, DICOM_VR_OW, px,
                         sizeof px, err);
    if (rc != AG_OK) {
        return rc;
    }
    f->dataset = ds;
    return dicom_file_build_meta(f, DICOM_TS_EXPLICIT_LE, err);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: agora demo --file OUT\n\n"
                 "Write a synthetic CT phantom instance to OUT.\n");
}

int cmd_demo(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    AgArena *a = ag_arena_create(16 << 20);
    DicomFile f = {0};
    AgError err;
    ag_error_clear(&err);
    int rc = a == NULL ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
                       : build_phantom(&f, a, &err);
    if (rc == AG_OK) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = ag_error_errno(&err, AG_ERR_IO, "create %s", path);
        } else {
            rc = dicom_write_file(&f, NULL, NULL, dicom_sink_fd, &fd, &err);
            close(fd);
        }
    }
    ag_arena_destroy(a);
    if (rc != AG_OK) {
        fprintf(stderr, "agora demo: %s\n", err.msg);
        return 1;
    }
    return 0;
}
