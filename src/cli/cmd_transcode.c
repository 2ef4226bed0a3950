/*
 * cmd_transcode.c — `agora transcode --ts UID IN OUT`.
 *
 * Re-encodes a file in another transfer syntax.  Between the native
 * syntaxes (implicit/explicit little endian, explicit big endian, deflated)
 * the writer re-encodes; when the source or the target has encapsulated
 * pixel data, codec/ decodes and encodes the frames (codec_transcode).
 */
#include "cli/cli.h"
#include "codec/codec.h"
#include "dicom/dicom.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora transcode --ts UID [--zero-preamble] IN OUT\n\n"
            "Write IN to OUT in the transfer syntax UID (e.g. 1.2.840.10008."
            "1.2.1 for\nExplicit VR Little Endian).  OUT is written to a "
            "temporary name and\nrenamed when complete.\n\n"
            "options:\n"
            "  --ts UID          target transfer syntax (required)\n"
            "  --zero-preamble   write a zeroed preamble instead of IN's\n"
            "  -h, --help        show this help\n");
}

static int write_out(const DicomFile *f, const char *ts, bool zero,
                     const char *path, AgError *err)
{
    char tmp[AG_PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path,
                         (long)getpid()) >= sizeof tmp) {
        return ag_error_set(err, AG_ERR_INVALID, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "create %s", tmp);
    }
    DicomWriteOptions wo = {.zero_preamble = zero};
    int rc = dicom_write_file(f, ts, &wo, dicom_sink_fd, &fd, err);
    if (rc == AG_OK && fsync(fd) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "fsync %s", tmp);
    }
    if (close(fd) != 0 && rc == AG_OK) {
        rc = ag_error_errno(err, AG_ERR_IO, "close %s", tmp);
    }
    if (rc == AG_OK && rename(tmp, path) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "rename %s", tmp);
    }
    if (rc != AG_OK) {
        unlink(tmp);
    }
    return rc;
}

int cmd_transcode(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ts", required_argument, NULL, 't'},
        {"zero-preamble", no_argument, NULL, 'z'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *ts = NULL;
    bool zero = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 't': ts = optarg; break;
        case 'z': zero = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (ts == NULL || argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    const char *in = argv[optind], *out = argv[optind + 1];
    AgArena *a = ag_arena_create((size_t)4 << 30);
    if (a == NULL) {
        fprintf(stderr, "agora transcode: out of memory\n");
        return 1;
    }
    AgError err;
    ag_error_clear(&err);
    DicomFile *f = NULL;
    int rc = dicom_read_path(in, NULL, a, &f, &err);
    if (rc == AG_OK) {
        const DicomTransferSyntax *to = dicom_ts_lookup(ts);
        bool same = strcmp(ts, f->ts_uid) == 0;
        const DicomElement *px = dicom_dataset_find(f->dataset,
                                                    DICOM_TAG_PIXEL_DATA);
        bool encaps = px != NULL && (px->flags & DICOM_EL_ENCAPSULATED);
        if (to == NULL) {
            rc = ag_error_set(&err, AG_ERR_INVALID,
                              "unknown transfer syntax %s", ts);
        } else if (!same && (encaps || to->encapsulated)) {
            if (encaps && !codec_can_decode(f->ts_uid)) {
                rc = ag_error_set(&err, AG_ERR_UNSUPPORTED,
                                  "no decoder for %s", f->ts_uid);
            } else if (to->encapsulated && !codec_can_encode(ts)) {
                rc = ag_error_set(&err, AG_ERR_UNSUPPORTED,
                                  "no encoder for %s (%s)", ts, to->name);
            } else {
                rc = codec_transcode(f, ts, &err);
                if (rc != AG_OK) {
                    ag_error_prefix(&err, "%s: ", in);
                }
            }
        }
    }
    if (rc == AG_OK) {
        rc = write_out(f, ts, zero, out, &err);
    }
    ag_arena_destroy(a);
    if (rc != AG_OK) {
        fprintf(stderr, "agora transcode: %s\n", err.msg);
        return 1;
    }
    return 0;
}
