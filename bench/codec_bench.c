/*
 * codec_bench.c — times Agora's pixel codecs frame by frame, without
 * process start or file I/O (bench/codecs_bench.py drives it; see there).
 *
 *   codec_bench decode [--isolated] [--helpers N] [--reps N] FILE
 *   codec_bench encode --ts UID [--reps N] FILE
 *
 * decode: every frame of FILE (an encapsulated multi-frame file) through
 * codec_decode_frame(), or with --isolated through
 * codec_decode_frame_isolated() (the helper pool, started and warmed up by
 * one untimed decode first).  encode: every frame of FILE (native) through
 * codec_encode_frame() into the transfer syntax UID.  The file is read once
 * (all values loaded); each repetition then loops over the frames and
 * prints one JSON line:
 *   {"mode":"decode","frames":64,"bytes":33554432,"seconds":0.42,
 *    "best":0.40,"compressed":9000000}
 * "bytes" is the native (uncompressed) size handled, "compressed" the
 * encoded size read or written, "best" the sum over frames of each frame's
 * fastest time in the repetitions so far (robust to a busy machine).  Exit status: 0, 1 on a codec error (the
 * error is printed), 2 on bad usage.
 *
 * Its main() also answers `codec_bench codec-helper ...`: the pool starts
 * helpers by running its own executable again (codec.h).
 *
 * Build (bench/codecs_bench.py does this): cc -O2 -I src bench/codec_bench.c
 *   build/libagora_codec.a build/libagora_dicom.a build/libagora_core.a
 *   $(pkg-config --libs libturbojpeg charls libopenjp2 spng libseccomp
 *   zlib jansson) -lm -lpthread
 */
#include "codec/codec.h"
#include "core/core.h"
#include "dicom/dicom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: codec_bench decode [--isolated] [--helpers N] "
                    "[--reps N] FILE\n"
                    "       codec_bench encode --ts UID [--reps N] FILE\n");
    return 2;
}

typedef struct Bench {
    DicomFile *f;
    CodecImage im;
    const DicomElement *px;
    size_t fsz;
    uint8_t *out;
    double *best;       /* per frame: the fastest decode or encode so far */
} Bench;

static int bench_open(Bench *b, const char *path, AgArena *a, AgError *err)
{
    DicomReadOptions opt;
    memset(&opt, 0, sizeof opt);
    int rc = dicom_read_path(path, &opt, a, &b->f, err);
    if (rc == AG_OK) {
        rc = codec_image_from_dataset(b->f->dataset, &b->im, err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    b->px = dicom_dataset_find(b->f->dataset, DICOM_TAG_PIXEL_DATA);
    if (b->px == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "%s: no pixel data", path);
    }
    b->fsz = (size_t)codec_frame_size(&b->im);
    b->out = malloc(b->fsz);
    b->best = malloc(b->im.frames * sizeof *b->best);
    if (b->out == NULL || b->best == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "no memory");
    }
    for (uint32_t i = 0; i < b->im.frames; i++) {
        b->best[i] = 1e30;
    }
    return AG_OK;
}

static int decode_all(Bench *b, bool isolated, uint64_t *compressed,
                      AgError *err)
{
    *compressed = 0;
    for (uint32_t i = 0; i < b->im.frames; i++) {
        const uint8_t *in;
        size_t len;
        bool owned;
        int rc = codec_frame_bytes(b->f->dataset, b->px, b->im.frames, i,
                                   &in, &len, &owned, err);
        double t0 = now();
        if (rc == AG_OK) {
            rc = isolated
                ? codec_decode_frame_isolated(b->f->ts_uid, &b->im, in, len,
                                              b->out, b->fsz, err)
                : codec_decode_frame(b->f->ts_uid, &b->im, in, len, b->out,
                                     b->fsz, err);
        }
        double t = now() - t0;
        b->best[i] = t < b->best[i] ? t : b->best[i];
        if (owned) {
            ag_free((void *)in);
        }
        if (rc != AG_OK) {
            ag_error_prefix(err, "frame %u: ", i);
            return rc;
        }
        *compressed += len;
    }
    return AG_OK;
}

static int encode_all(Bench *b, const char *ts, AgBuf *buf,
                      uint64_t *compressed, AgError *err)
{
    *compressed = 0;
    if (b->px->value == NULL || (b->px->flags & DICOM_EL_ENCAPSULATED) ||
        (uint64_t)b->px->length < (uint64_t)b->fsz * b->im.frames) {
        return ag_error_set(err, AG_ERR_INVALID, "encode wants native "
                            "pixel data of %u frames", b->im.frames);
    }
    for (uint32_t i = 0; i < b->im.frames; i++) {
        ag_buf_reset(buf);
        double t0 = now();
        int rc = codec_encode_frame(ts, &b->im, b->px->value +
                                                    (size_t)i * b->fsz,
                                    b->fsz, buf, err);
        double t = now() - t0;
        b->best[i] = t < b->best[i] ? t : b->best[i];
        if (rc != AG_OK) {
            ag_error_prefix(err, "frame %u: ", i);
            return rc;
        }
        *compressed += buf->len;
    }
    return AG_OK;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "codec-helper") == 0) {
        return codec_sandbox_helper_main(argc - 1, argv + 1);
    }
    if (argc < 3) {
        return usage();
    }
    bool encode = strcmp(argv[1], "encode") == 0;
    if (!encode && strcmp(argv[1], "decode") != 0) {
        return usage();
    }
    bool isolated = false;
    int reps = 1;
    unsigned helpers = 1;
    const char *ts = NULL, *path = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--isolated") == 0) {
            isolated = true;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--helpers") == 0 && i + 1 < argc) {
            helpers = (unsigned)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--ts") == 0 && i + 1 < argc) {
            ts = argv[++i];
        } else if (argv[i][0] == '-' || path != NULL) {
            return usage();
        } else {
            path = argv[i];
        }
    }
    if (path == NULL || reps < 1 || reps > 1000 || (encode && ts == NULL)) {
        return usage();
    }
    ag_log_set_level(AG_LOG_WARN);
    AgArena *a = ag_arena_create(0);
    AgError err;
    memset(&err, 0, sizeof err);
    Bench b;
    memset(&b, 0, sizeof b);
    AgBuf buf;
    ag_buf_init(&buf, 0);
    int rc = bench_open(&b, path, a, &err);
    if (rc == AG_OK && isolated) {
        CodecSandboxConfig c;
        codec_sandbox_config_init(&c);
        c.helpers = helpers;
        rc = codec_sandbox_configure(&c, &err);
        uint64_t ignored;
        if (rc == AG_OK) {        /* start the helper(s), untimed */
            rc = decode_all(&b, true, &ignored, &err);
            for (uint32_t i = 0; i < b.im.frames; i++) {
                b.best[i] = 1e30;
            }
        }
    }
    for (int rep = 0; rep < reps && rc == AG_OK; rep++) {
        uint64_t compressed = 0;
        double t0 = now();
        rc = encode ? encode_all(&b, ts, &buf, &compressed, &err)
                    : decode_all(&b, isolated, &compressed, &err);
        double t = now() - t0;
        if (rc == AG_OK) {
            double best = 0;
            for (uint32_t i = 0; i < b.im.frames; i++) {
                best += b.best[i];
            }
            printf("{\"mode\":\"%s\",\"frames\":%u,\"bytes\":%llu,"
                   "\"seconds\":%.6f,\"best\":%.6f,\"compressed\":%llu}"
                   "\n", encode ? "encode" : "decode", b.im.frames,
                   (unsigned long long)b.fsz * b.im.frames, t, best,
                   (unsigned long long)compressed);
            fflush(stdout);
        }
    }
    if (rc != AG_OK) {
        fprintf(stderr, "codec_bench: %s: %s\n", path, err.msg);
    }
    if (isolated) {
        codec_sandbox_shutdown();
    }
    ag_buf_deinit(&buf);
    free(b.out);
    free(b.best);
    ag_arena_destroy(a);
    return rc == AG_OK ? 0 : 1;
}
