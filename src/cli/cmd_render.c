/*
 * cmd_render.c — `agora render FILE -o OUT.png|OUT.jpg [--frame N]
 * [--window C,W[,FUNCTION]] [--size WxH] [--quality Q]`.
 *
 * Renders one frame the way WADO-RS `rendered` does (codec_render_frame):
 * the file is read with its large values left on disk and only the
 * frame's bytes are read back, so a long multi-frame costs one frame.
 */
#include "cli/cli.h"
#include "codec/codec.h"
#include "dicom/dicom.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Values above this stay in the file and are read when needed. */
#define BULK_THRESHOLD (64u << 10)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora render [OPTIONS] FILE -o OUT\n\n"
            "Render one frame of a DICOM image to an 8-bit PNG or JPEG: "
            "modality LUT,\nVOI LUT (window), presentation LUT, MONOCHROME1 "
            "inversion, colour models\nand palettes (PS3.4 Annex N), then "
            "scaling.  The format follows OUT's\nextension (.png, .jpg, "
            ".jpeg) unless --format says; OUT \"-\" writes to\nstandard "
            "output.\n\n"
            "options:\n"
            "  -o, --output OUT        the image to write (required)\n"
            "  --frame N               frame number, from 1 (default 1)\n"
            "  --window C,W[,F]        window centre and width, F linear "
            "(default),\n"
            "                          linear-exact or sigmoid (default: "
            "the file's\n"
            "                          window, VOI LUT, or the frame's "
            "range)\n"
            "  --size WxH              fit inside W x H keeping the aspect "
            "ratio\n"
            "                          (W or H may be 0: that side follows)"
            "\n"
            "  --quality Q             JPEG quality 1..100 (default 90)\n"
            "  --format png|jpeg       output format\n"
            "  -h, --help              show this help\n");
}

static int read_at(void *ctx, uint64_t offset, void *dst, size_t len,
                   AgError *err)
{
    int fd = *(int *)ctx;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)dst + done, len - done,
                          (off_t)(offset + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? ag_error_errno(err, AG_ERR_IO, "read")
                         : ag_error_set(err, AG_ERR_IO, "file ends at "
                                        "%llu", (unsigned long long)
                                        (offset + done));
        }
        done += (size_t)n;
    }
    return AG_OK;
}

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_size(const char *s, CodecRenderParams *p)
{
    const char *x = strchr(s, 'x');
    if (x == NULL) {
        x = strchr(s, 'X');
    }
    char w[16];
    unsigned long vw, vh;
    if (x == NULL || (size_t)(x - s) >= sizeof w) {
        return false;
    }
    memcpy(w, s, (size_t)(x - s));
    w[x - s] = '\0';
    if (!parse_uint(w, CODEC_RENDER_MAX_SIZE, &vw) ||
        !parse_uint(x + 1, CODEC_RENDER_MAX_SIZE, &vh) ||
        (vw == 0 && vh == 0)) {
        return false;
    }
    p->width = (uint32_t)vw;
    p->height = (uint32_t)vh;
    return true;
}

static bool format_of(const char *name, CodecRenderFormat *out)
{
    const char *dot = strrchr(name, '.');
    const char *ext = dot != NULL ? dot + 1 : name;
    if (strcasecmp(ext, "png") == 0) {
        *out = CODEC_RENDER_PNG;
        return true;
    }
    if (strcasecmp(ext, "jpg") == 0 || strcasecmp(ext, "jpeg") == 0) {
        *out = CODEC_RENDER_JPEG;
        return true;
    }
    return false;
}

/* Read path leaving values over BULK_THRESHOLD in the file (*fd stays
 * open for them).  Deflated files cannot be read at an offset: they are
 * read whole. */
static int open_image(const char *path, AgArena *a, int *fd, DicomFile **f,
                      AgError *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", path);
    }
    DicomReadOptions ro = {.bulk_threshold = BULK_THRESHOLD};
    int rc = dicom_read_fd(*fd, &ro, a, f, err);
    if (rc == AG_OK && (*f)->ts != NULL && (*f)->ts->deflated) {
        ro.bulk_threshold = 0;
        rc = lseek(*fd, 0, SEEK_SET) == 0
                 ? dicom_read_fd(*fd, &ro, a, f, err)
                 : ag_error_errno(err, AG_ERR_IO, "seek");
    }
    if (rc != AG_OK) {
        ag_error_prefix(err, "%s: ", path);
    }
    return rc;
}

static int write_out(const char *path, const AgBuf *b, AgError *err)
{
    if (strcmp(path, "-") == 0) {
        return ag_write_all(STDOUT_FILENO, b->data, b->len, err);
    }
    char tmp[AG_PATH_MAX];
    if (ag_fmt(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) !=
        AG_OK) {
        return ag_error_set(err, AG_ERR_INVALID, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "create %s", tmp);
    }
    int rc = ag_write_all(fd, b->data, b->len, err);
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

int cmd_render(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"frame", required_argument, NULL, 'f'},
        {"window", required_argument, NULL, 'w'},
        {"size", required_argument, NULL, 's'},
        {"quality", required_argument, NULL, 'q'},
        {"format", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    CodecRenderParams p;
    codec_render_params_init(&p);
    const char *out = NULL, *format = NULL;
    unsigned long frame = 1, v;
    AgError err;
    ag_error_clear(&err);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'f':
            if (!parse_uint(optarg, CODEC_MAX_FRAMES, &frame) || frame == 0) {
                fprintf(stderr, "agora render: --frame %s is not a frame "
                        "number (1..)\n", optarg);
                return 2;
            }
            break;
        case 'w':
            if (codec_render_parse_window(optarg, &p, &err) != AG_OK) {
                fprintf(stderr, "agora render: %s\n", err.msg);
                return 2;
            }
            break;
        case 's':
            if (!parse_size(optarg, &p)) {
                fprintf(stderr, "agora render: --size %s is not WxH (each "
                        "0..%u, not both 0)\n", optarg,
                        CODEC_RENDER_MAX_SIZE);
                return 2;
            }
            break;
        case 'q':
            if (!parse_uint(optarg, 100, &v) || v == 0) {
                fprintf(stderr, "agora render: --quality %s is not "
                        "1..100\n", optarg);
                return 2;
            }
            p.quality = (int)v;
            break;
        case 'F':
            format = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (out == NULL || argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    if (!format_of(format != NULL ? format : out, &p.format)) {
        fprintf(stderr, "agora render: %s: say --format png or jpeg\n",
                format != NULL ? format : out);
        return 2;
    }
    const char *in = argv[optind];
    AgArena *a = ag_arena_create((size_t)1 << 30);
    if (a == NULL) {
        fprintf(stderr, "agora render: out of memory\n");
        return 1;
    }
    int fd = -1;
    DicomFile *f = NULL;
    AgBuf b;
    ag_buf_init(&b, (size_t)1 << 30);
    int rc = open_image(in, a, &fd, &f, &err);
    if (rc == AG_OK) {
        DicomBulkSource bulk = {.read = read_at, .ctx = &fd,
                                .big_endian = f->ts != NULL &&
                                              f->ts->big_endian};
        rc = codec_render_frame(f, &bulk, (uint32_t)(frame - 1), &p, &b,
                                &err);
        if (rc != AG_OK) {
            ag_error_prefix(&err, "%s: ", in);
        }
    }
    if (rc == AG_OK) {
        rc = write_out(out, &b, &err);
    }
    if (fd >= 0) {
        close(fd);
    }
    ag_buf_deinit(&b);
    ag_arena_destroy(a);
    if (rc != AG_OK) {
        fprintf(stderr, "agora render: %s\n", err.msg);
        return 1;
    }
    return 0;
}
