/*
 * render.c — one frame of an image to an 8-bit PNG (libspng) or JPEG
 * (TurboJPEG), for WADO-RS `rendered`, thumbnails and WADO-URI.
 *
 * The pipeline is the Pixel Transformation Sequence of PS3.4 Annex N.2:
 * grayscale stored values go through the Modality LUT (PS3.3 C.11.1), the
 * VOI LUT (C.11.2) and the Presentation LUT (C.11.6) to P-values, written
 * as 8 bits; colour goes from its Photometric Interpretation (C.7.6.3.1.2)
 * or palette (C.7.6.3.1.5/6) to 8-bit RGB.  Then the source region is cut
 * out and scaled to the viewport (PS3.18 §8.3.5.1.3), and the picture is
 * encoded.
 *
 * One frame at a time: for pixel data the reader left in the source
 * (DICOM_EL_NOT_LOADED) only the bytes of that frame are read — for
 * encapsulated data only its fragments — through the caller's
 * DicomBulkSource.
 *
 * Untrusted input (SECURITY.md rule 8): dimensions come from
 * codec_image_from_dataset (validated, frame at most 2 GiB); LUT
 * descriptors are checked against the length of their data before a table
 * is built; every LUT index is clamped to its table; fragment offsets are
 * checked against the fragments actually present.  Every allocation comes
 * from one arena per call whose budget is derived from the frame size.
 */
#include "codec_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <spng.h>
#include <turbojpeg.h>

#define TAG_PHOTOMETRIC DICOM_TAG(0x0028, 0x0004)
#define TAG_WINDOW_CENTER DICOM_TAG(0x0028, 0x1050)
#define TAG_WINDOW_WIDTH DICOM_TAG(0x0028, 0x1051)
#define TAG_RESCALE_INTERCEPT DICOM_TAG(0x0028, 0x1052)
#define TAG_RESCALE_SLOPE DICOM_TAG(0x0028, 0x1053)
#define TAG_VOI_LUT_FUNCTION DICOM_TAG(0x0028, 0x1056)
#define TAG_PALETTE_DESCRIPTOR(k) DICOM_TAG(0x0028, 0x1101 + (k))
#define TAG_PALETTE_DATA(k) DICOM_TAG(0x0028, 0x1201 + (k))
#define TAG_SEGMENTED_PALETTE(k) DICOM_TAG(0x0028, 0x1221 + (k))
#define TAG_MODALITY_LUT_SEQ DICOM_TAG(0x0028, 0x3000)
#define TAG_LUT_DESCRIPTOR DICOM_TAG(0x0028, 0x3002)
#define TAG_LUT_DATA DICOM_TAG(0x0028, 0x3006)
#define TAG_VOI_LUT_SEQ DICOM_TAG(0x0028, 0x3010)
#define TAG_FRAME_VOI_LUT_SEQ DICOM_TAG(0x0028, 0x9132)
#define TAG_PIXEL_VALUE_TRANSFORMATION_SEQ DICOM_TAG(0x0028, 0x9145)
#define TAG_PRESENTATION_LUT_SEQ DICOM_TAG(0x2050, 0x0010)
#define TAG_PRESENTATION_LUT_SHAPE DICOM_TAG(0x2050, 0x0020)
#define TAG_SHARED_FG DICOM_TAG(0x5200, 0x9229)
#define TAG_PER_FRAME_FG DICOM_TAG(0x5200, 0x9230)

/* LUT Data and palettes hold at most 65536 16-bit entries. */
#define MAX_LUT_BYTES ((size_t)65536 * 2 + 2)

/* ---- parameters ---------------------------------------------------------- */

void codec_render_params_init(CodecRenderParams *p)
{
    memset(p, 0, sizeof *p);
    p->format = CODEC_RENDER_JPEG;
    p->quality = CODEC_RENDER_DEFAULT_QUALITY;
    p->upscale = true;
    p->function = CODEC_VOI_LINEAR;
}

int codec_voi_function_parse(const char *s, CodecVoiFunction *out)
{
    /* PS3.3 C.11.2.1.3 defined terms, and PS3.18 §8.3.5.1.4's
     * lowercase, hyphenated spelling of them. */
    static const struct {
        const char *name;
        CodecVoiFunction fn;
    } T[] = {
        {"LINEAR", CODEC_VOI_LINEAR},
        {"LINEAR_EXACT", CODEC_VOI_LINEAR_EXACT},
        {"LINEAR-EXACT", CODEC_VOI_LINEAR_EXACT},
        {"SIGMOID", CODEC_VOI_SIGMOID},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        if (strcasecmp(s, T[i].name) == 0) {
            *out = T[i].fn;
            return AG_OK;
        }
    }
    return AG_ERR_INVALID;
}

/* A finite decimal number filling s exactly. */
static bool parse_number(const char *s, size_t n, double *out)
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) {
        return false;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    double v = strtod(tmp, &end);
    if (*end != '\0' || !isfinite(v) || fabs(v) > 1e15) {
        return false;
    }
    *out = v;
    return true;
}

bool codec_voi_width_valid(CodecVoiFunction fn, double width)
{
    /* C.11.2.1.2: LINEAR needs a width of at least 1; C.11.2.1.3: the
     * other functions a width above 0. */
    if (!isfinite(width)) {
        return false;
    }
    return fn == CODEC_VOI_LINEAR ? width >= 1.0 : width > 0.0;
}

int codec_render_parse_window(const char *text, CodecRenderParams *p,
                              AgError *err)
{
    const char *c1 = strchr(text, ',');
    const char *c2 = c1 != NULL ? strchr(c1 + 1, ',') : NULL;
    double c, w;
    CodecVoiFunction fn = CODEC_VOI_LINEAR;
    size_t wlen = c2 != NULL ? (size_t)(c2 - c1 - 1)
                             : c1 != NULL ? strlen(c1 + 1) : 0;
    if (c1 == NULL || !parse_number(text, (size_t)(c1 - text), &c) ||
        !parse_number(c1 + 1, wlen, &w)) {
        return ag_error_set(err, AG_ERR_INVALID, "window \"%.40s\" is not "
                            "center,width[,function]", text);
    }
    if (c2 != NULL && codec_voi_function_parse(c2 + 1, &fn) != AG_OK) {
        return ag_error_set(err, AG_ERR_INVALID, "window function \"%.40s\" "
                            "is not linear, linear-exact or sigmoid",
                            c2 + 1);
    }
    if (!codec_voi_width_valid(fn, w)) {
        return ag_error_set(err, AG_ERR_INVALID, "window width %g is out of "
                            "range (PS3.3 C.11.2.1.2: at least 1 for "
                            "LINEAR, above 0 otherwise)", w);
    }
    p->window = true;
    p->window_center = c;
    p->window_width = w;
    p->function = fn;
    return AG_OK;
}

static int check_params(const CodecRenderParams *p, AgError *err)
{
    if (p->format != CODEC_RENDER_JPEG && p->format != CODEC_RENDER_PNG) {
        return ag_error_set(err, AG_ERR_INVALID, "render: unknown output "
                            "format %d", (int)p->format);
    }
    if (p->quality < 0 || p->quality > 100) {
        return ag_error_set(err, AG_ERR_INVALID, "render: quality %d is not "
                            "1..100", p->quality);
    }
    if (p->width > CODEC_RENDER_MAX_SIZE ||
        p->height > CODEC_RENDER_MAX_SIZE) {
        return ag_error_set(err, AG_ERR_INVALID, "render: viewport %ux%u is "
                            "larger than %ux%u", p->width, p->height,
                            CODEC_RENDER_MAX_SIZE, CODEC_RENDER_MAX_SIZE);
    }
    if (p->window && (!isfinite(p->window_center) ||
                      !codec_voi_width_valid(p->function,
                                             p->window_width))) {
        return ag_error_set(err, AG_ERR_INVALID, "render: window %g,%g is "
                            "out of range", p->window_center,
                            p->window_width);
    }
    if (p->region && (p->sx < 0 || p->sy < 0 || p->sw == 0 || p->sh == 0 ||
                      p->sx > 65535 || p->sy > 65535 ||
                      p->sw < -65536 || p->sw > 65536 ||
                      p->sh < -65536 || p->sh > 65536)) {
        return ag_error_set(err, AG_ERR_INVALID, "render: source region "
                            "%lld,%lld,%lld,%lld is not an offset and a "
                            "non-zero size", (long long)p->sx,
                            (long long)p->sy, (long long)p->sw,
                            (long long)p->sh);
    }
    return AG_OK;
}

/* ---- the VOI LUT functions (PS3.3 C.11.2.1.2, C.11.2.1.3) ---------------- */

double codec_voi_apply(CodecVoiFunction fn, double c, double w, double x,
                       double ymin, double ymax)
{
    switch (fn) {
    case CODEC_VOI_LINEAR_EXACT:
        /* C.11.2.1.3.2 */
        if (x <= c - w / 2) {
            return ymin;
        }
        if (x > c + w / 2) {
            return ymax;
        }
        return ((x - c) / w + 0.5) * (ymax - ymin) + ymin;
    case CODEC_VOI_SIGMOID:
        /* C.11.2.1.3.1 */
        return (ymax - ymin) / (1.0 + exp(-4.0 * (x - c) / w)) + ymin;
    case CODEC_VOI_LINEAR:
    default:
        /* C.11.2.1.2.1, with its -0.5 and -1 terms: a width of 1 is a
         * threshold at c - 0.5 (the middle branch is then never taken). */
        if (x <= c - 0.5 - (w - 1) / 2) {
            return ymin;
        }
        if (x > c - 0.5 + (w - 1) / 2) {
            return ymax;
        }
        return ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin;
    }
}

/* ---- output size --------------------------------------------------------- */

void codec_render_fit(uint32_t sw, uint32_t sh, const CodecRenderParams *p,
                      uint32_t *ow, uint32_t *oh)
{
    /* PS3.18 §8.3.5.1.3: fit inside the viewport keeping the aspect
     * ratio; one dimension alone scales the other (WADO-URI rows /
     * columns, §8.2.2 of older editions). */
    double s = 1.0;
    if (p->width > 0 && p->height > 0) {
        s = fmin((double)p->width / sw, (double)p->height / sh);
    } else if (p->width > 0) {
        s = (double)p->width / sw;
    } else if (p->height > 0) {
        s = (double)p->height / sh;
    }
    if (!p->upscale && s > 1.0) {
        s = 1.0;
    }
    /* Without a bound in one direction, the other's scale could still
     * ask for more than the cap: shrink to fit it, keeping the ratio. */
    s = fmin(s, fmin((double)CODEC_RENDER_MAX_SIZE / sw,
                     (double)CODEC_RENDER_MAX_SIZE / sh));
    double w = floor(sw * s + 0.5), h = floor(sh * s + 0.5);
    if (p->width > 0 && w > p->width) {
        w = p->width;
    }
    if (p->height > 0 && h > p->height) {
        h = p->height;
    }
    w = fmin(fmax(w, 1.0), CODEC_RENDER_MAX_SIZE);
    h = fmin(fmax(h, 1.0), CODEC_RENDER_MAX_SIZE);
    *ow = (uint32_t)w;
    *oh = (uint32_t)h;
}

/* ---- one call's state ---------------------------------------------------- */

typedef struct Render {
    const DicomFile *f;
    const DicomDataset *ds;
    const DicomBulkSource *bulk;
    const CodecRenderParams *p;
    uint32_t frame;
    AgArena *a;
    AgError *err;
} Render;

/* A decoded frame: samples in the native layout of codec.h, except that
 * native colour-by-plane data stays by plane (planar). */
typedef struct Frame {
    CodecImage im;        /* 1-bit data arrives unpacked as 8 bits */
    const uint8_t *px;
    bool planar;
    char pi[17];          /* Photometric Interpretation of px */
} Frame;

/* An 8-bit picture, 1 (gray) or 3 (RGB) channels, rows packed. */
typedef struct Picture {
    uint32_t w, h;
    unsigned ch;
    uint8_t *px;
} Picture;

static int no_memory(Render *r, const char *what)
{
    return ag_error_set(r->err, ag_arena_fail_code(r->a), "render: no "
                        "memory for %s", what);
}

static void *ralloc(Render *r, uint64_t n, const char *what)
{
    if (n > SIZE_MAX / 2) {
        ag_error_set(r->err, AG_ERR_LIMIT, "render: %s of %llu bytes",
                     what, (unsigned long long)n);
        return NULL;
    }
    void *p = ag_arena_alloc(r->a, n > 0 ? (size_t)n : 1);
    if (p == NULL) {
        no_memory(r, what);
    }
    return p;
}

static void swap_bytes(uint8_t *p, size_t n, unsigned unit)
{
    for (size_t i = 0; i + unit <= n; i += unit) {
        for (unsigned k = 0; k < unit / 2; k++) {
            uint8_t t = p[i + k];
            p[i + k] = p[i + unit - 1 - k];
            p[i + unit - 1 - k] = t;
        }
    }
}

/* len bytes at offset of the original stream, through the bulk source;
 * little-endian units of `unit` bytes whatever the source's order. */
static int read_source(Render *r, uint64_t offset, size_t len, unsigned unit,
                       uint8_t **out)
{
    if (r->bulk == NULL || r->bulk->read == NULL) {
        return ag_error_set(r->err, AG_ERR_INVALID, "render: pixel data is "
                            "not loaded and there is no source to read it "
                            "from");
    }
    uint8_t *buf = ralloc(r, len, "source bytes");
    if (buf == NULL) {
        return ag_arena_fail_code(r->a);
    }
    int rc = r->bulk->read(r->bulk->ctx, offset, buf, len, r->err);
    if (rc != AG_OK) {
        return rc;
    }
    if (r->bulk->big_endian && unit > 1) {
        swap_bytes(buf, len, unit);
    }
    *out = buf;
    return AG_OK;
}

/* The whole value of a (LUT) element, at most max bytes: loaded, or read
 * through the bulk source (16-bit words made little-endian). */
static int value_bytes(Render *r, const DicomElement *el, size_t max,
                       const char *what, const uint8_t **out, size_t *len)
{
    if (el->length > max) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: %s of %u bytes "
                            "is longer than %zu", what, (unsigned)el->length,
                            max);
    }
    *len = el->length;
    if (!(el->flags & DICOM_EL_NOT_LOADED)) {
        *out = el->value;
        return el->value != NULL || el->length == 0
                   ? AG_OK
                   : ag_error_set(r->err, AG_ERR_PARSE, "render: %s has no "
                                  "value", what);
    }
    uint8_t *buf;
    int rc = read_source(r, el->offset, el->length, 2, &buf);
    *out = buf;
    return rc;
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Does a string element hold exactly v (padding trimmed, any case)? */
static bool has_value(const DicomDataset *ds, uint32_t tag, const char *v)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    if (el == NULL || el->value == NULL ||
        (el->flags & DICOM_EL_NOT_LOADED)) {
        return false;
    }
    size_t n = strlen(v), s = 0, e = el->length;
    while (s < e && el->value[s] == ' ') {
        s++;
    }
    while (e > s && (el->value[e - 1] == ' ' || el->value[e - 1] == '\0')) {
        e--;
    }
    return e - s == n && strncasecmp((const char *)el->value + s, v, n) == 0;
}

/* ---- frames of native pixel data (PS3.5 §8.1) ---------------------------- */

/* Native frame bytes: a slice of the loaded value, or a read of just this
 * frame from the source. */
static int native_slice(Render *r, const DicomElement *px, uint64_t off,
                        uint64_t len, unsigned unit, const uint8_t **out)
{
    uint64_t end;
    if (ag_add_overflow(off, len, &end) || end > px->length ||
        px->length == DICOM_UNDEFINED_LENGTH) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: pixel data "
                            "(7fe0,0010) of %u bytes ends before frame %u "
                            "(bytes %llu..%llu)", (unsigned)px->length,
                            r->frame + 1, (unsigned long long)off,
                            (unsigned long long)end);
    }
    if (!(px->flags & DICOM_EL_NOT_LOADED)) {
        if (px->value == NULL) {
            return ag_error_set(r->err, AG_ERR_PARSE, "render: pixel data "
                                "(7fe0,0010) has no value");
        }
        *out = px->value + off;
        return AG_OK;
    }
    uint8_t *buf;
    int rc = read_source(r, px->offset + off, (size_t)len, unit, &buf);
    *out = buf;
    return rc;
}

/* Bits Allocated 1: pixels packed eight to a byte, the first in the least
 * significant bit (PS3.5 §8.1.1, D.2); unpacked to one byte each. */
static int native_1bit(Render *r, const DicomElement *px, Frame *fr)
{
    uint64_t n = (uint64_t)fr->im.rows * fr->im.columns;
    uint64_t bit0 = n * r->frame;
    uint64_t first = bit0 / 8, last = (bit0 + n + 7) / 8;
    const uint8_t *src;
    int rc = native_slice(r, px, first, last - first, 1, &src);
    if (rc != AG_OK) {
        return rc;
    }
    uint8_t *out = ralloc(r, n, "unpacked bits");
    if (out == NULL) {
        return ag_arena_fail_code(r->a);
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = bit0 - first * 8 + i;
        out[i] = (uint8_t)(src[b / 8] >> (b % 8) & 1);
    }
    fr->im.bits_allocated = 8;
    fr->im.bits_stored = 1;
    fr->im.high_bit = 0;
    fr->px = out;
    return AG_OK;
}

/* YBR_FULL_422 native data (PS3.3 C.7.6.3.1.2): per pair of pixels
 * Y1 Y2 CB CR; widened to YBR_FULL, each chroma pair shared by both. */
static int native_422(Render *r, const DicomElement *px, Frame *fr)
{
    const CodecImage *im = &fr->im;
    if (im->columns % 2 != 0 || im->bits_allocated != 8 ||
        im->planar_configuration != 0) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: native "
                            "YBR_FULL_422 needs an even number of columns, "
                            "8 bits and planar configuration 0");
    }
    uint64_t n = (uint64_t)im->rows * im->columns;
    const uint8_t *src;
    int rc = native_slice(r, px, n * 2 * r->frame, n * 2, 1, &src);
    if (rc != AG_OK) {
        return rc;
    }
    uint8_t *out = ralloc(r, n * 3, "YBR_FULL_422 frame");
    if (out == NULL) {
        return ag_arena_fail_code(r->a);
    }
    for (uint64_t p = 0; p < n; p += 2) {
        const uint8_t *q = src + p * 2;
        uint8_t *o = out + p * 3;
        o[0] = q[0];
        o[1] = q[2];
        o[2] = q[3];
        o[3] = q[1];
        o[4] = q[2];
        o[5] = q[3];
    }
    snprintf(fr->pi, sizeof fr->pi, "YBR_FULL");
    fr->px = out;
    return AG_OK;
}

static int native_frame(Render *r, const DicomElement *px, Frame *fr)
{
    if (fr->im.bits_allocated == 1) {
        return native_1bit(r, px, fr);
    }
    if (strcmp(fr->im.photometric, "YBR_FULL_422") == 0) {
        return native_422(r, px, fr);
    }
    uint64_t fsz = codec_frame_size(&fr->im);
    unsigned unit = fr->im.bits_allocated / 8u;
    const uint8_t *src;
    int rc = native_slice(r, px, fsz * r->frame, fsz, unit, &src);
    if (rc != AG_OK) {
        return rc;
    }
    /* A loaded 32-bit OW value of a big-endian file has had each 16-bit
     * word swapped by the reader: swap the words back into order. */
    bool words = !(px->flags & DICOM_EL_NOT_LOADED) && r->f->ts != NULL &&
                 r->f->ts->big_endian && unit == 4 && px->vr == DICOM_VR_OW;
    if (words) {
        uint8_t *copy = ralloc(r, fsz, "frame");
        if (copy == NULL) {
            return ag_arena_fail_code(r->a);
        }
        for (uint64_t i = 0; i + 4 <= fsz; i += 4) {
            copy[i] = src[i + 2];
            copy[i + 1] = src[i + 3];
            copy[i + 2] = src[i];
            copy[i + 3] = src[i + 1];
        }
        src = copy;
    }
    fr->px = src;
    fr->planar = fr->im.samples_per_pixel == 3 &&
                 fr->im.planar_configuration == 1;
    return AG_OK;
}

/* ---- frames of encapsulated pixel data (PS3.5 A.4) ----------------------- */

/*
 * With every fragment loaded, codec_frame_bytes locates the frame.  When
 * the reader left fragments in the source, the same rules are applied
 * here to fragment offsets and lengths alone, so that only the frame's
 * own fragments are read: the Extended Offset Table, else the Basic
 * Offset Table, else one fragment per frame, else (one frame) all
 * fragments, else the fragments that start with a JPEG SOI or a JPEG 2000
 * SOC+SIZ mark frame starts.
 */

/* Fragment index (1-based) whose item starts at item-stream position pos
 * (offsets count from the first fragment's Item tag, 8-byte headers). */
static bool frag_at(const DicomElement *px, uint64_t pos, uint32_t *k)
{
    uint64_t at = 0;
    for (uint32_t j = 1; j < px->nfrags; j++) {
        if (at == pos) {
            *k = j;
            return true;
        }
        if (at > pos) {
            break;
        }
        at += 8 + (uint64_t)px->frags[j].length;
    }
    return false;
}

static int frag_bytes(Render *r, const DicomElement *px, uint32_t j,
                      uint64_t len, uint8_t *dst)
{
    const DicomFragment *fg = &px->frags[j];
    if (len == 0) {
        return AG_OK;
    }
    if (fg->data != NULL) {
        memcpy(dst, fg->data, (size_t)len);
        return AG_OK;
    }
    if (r->bulk == NULL || r->bulk->read == NULL) {
        return ag_error_set(r->err, AG_ERR_INVALID, "render: fragment %u is "
                            "not loaded and there is no source to read it "
                            "from", j);
    }
    return r->bulk->read(r->bulk->ctx, fg->offset, dst, (size_t)len, r->err);
}

static bool frag_starts_frame(Render *r, const DicomElement *px, uint32_t j)
{
    uint8_t h[4] = {0};
    uint32_t n = px->frags[j].length < 4 ? px->frags[j].length : 4;
    if (n < 2 || frag_bytes(r, px, j, n, h) != AG_OK) {
        return false;
    }
    return h[0] == 0xff &&
           (h[1] == 0xd8 ||
            (n == 4 && h[1] == 0x4f && h[2] == 0xff && h[3] == 0x51));
}

/* 64-bit little-endian entry i of an Extended Offset Table element. */
static int eot_entry(Render *r, const DicomElement *el, uint32_t frames,
                     uint32_t i, uint64_t *out)
{
    if (el->length != (uint64_t)frames * 8) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: extended offset "
                            "table (7fe0,%04x) does not hold %u entries",
                            DICOM_TAG_ELEMENT(el->tag), frames);
    }
    uint8_t b[8];
    if (!(el->flags & DICOM_EL_NOT_LOADED)) {
        if (el->value == NULL) {
            return ag_error_set(r->err, AG_ERR_PARSE, "render: extended "
                                "offset table has no value");
        }
        memcpy(b, el->value + (size_t)i * 8, 8);
    } else {
        if (r->bulk == NULL || r->bulk->read == NULL) {
            return ag_error_set(r->err, AG_ERR_INVALID, "render: extended "
                                "offset table is not loaded");
        }
        int rc = r->bulk->read(r->bulk->ctx, el->offset + (uint64_t)i * 8,
                               b, 8, r->err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) {
        v = v << 8 | b[k];
    }
    *out = v;
    return AG_OK;
}

static int bad_offsets(Render *r, const char *what)
{
    return ag_error_set(r->err, AG_ERR_PARSE, "render: frame %u: %s",
                        r->frame + 1, what);
}

/* Fragments first..last (1-based, inclusive) of frame i; *eot_len is the
 * frame's length from the Extended Offset Table (UINT64_MAX if none). */
static int locate_fragments(Render *r, const DicomElement *px,
                            uint32_t frames, uint32_t *first, uint32_t *last,
                            uint64_t *eot_len)
{
    uint32_t i = r->frame, nf = px->nfrags - 1;
    *eot_len = UINT64_MAX;
    const DicomElement *eot =
        dicom_dataset_find(r->ds, DICOM_TAG_EXTENDED_OFFSET_TABLE);
    if (eot != NULL && eot->length > 0) {
        const DicomElement *lens = dicom_dataset_find(
            r->ds, DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS);
        uint64_t off, len;
        int rc = lens != NULL ? eot_entry(r, eot, frames, i, &off)
                              : bad_offsets(r, "extended offset table "
                                               "without lengths");
        if (rc == AG_OK) {
            rc = eot_entry(r, lens, frames, i, &len);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (!frag_at(px, off, first) || len > px->frags[*first].length) {
            return bad_offsets(r, "extended offset table entry is not a "
                                  "fragment");
        }
        *last = *first;
        *eot_len = len;
        return AG_OK;
    }
    const DicomFragment *bot = &px->frags[0];
    if (bot->length > 0) {
        if (bot->data == NULL || bot->length % 4 != 0 ||
            bot->length / 4 != frames) {
            return bad_offsets(r, "basic offset table does not hold one "
                                  "offset per frame");
        }
        uint64_t off = rd32(bot->data + (size_t)i * 4);
        if (!frag_at(px, off, first)) {
            return bad_offsets(r, "basic offset is not a fragment");
        }
        *last = nf;
        if (i + 1 < frames) {
            uint64_t next = rd32(bot->data + (size_t)(i + 1) * 4);
            uint32_t k;
            if (next <= off || !frag_at(px, next, &k)) {
                return bad_offsets(r, "next basic offset is not a later "
                                      "fragment");
            }
            *last = k - 1;
        }
        return AG_OK;
    }
    if (nf == frames) {
        *first = *last = i + 1;
        return AG_OK;
    }
    if (frames == 1) {
        *first = 1;
        *last = nf;
        return AG_OK;
    }
    uint32_t seen = 0;
    *first = 0;
    *last = nf;
    for (uint32_t j = 1; j <= nf; j++) {
        if (!frag_starts_frame(r, px, j)) {
            if (j == 1) {
                return bad_offsets(r, "no offset table and the first "
                                      "fragment does not start a frame");
            }
            continue;
        }
        if (seen == i) {
            *first = j;
        } else if (seen == i + 1) {
            *last = j - 1;
        }
        seen++;
    }
    if (seen != frames) {
        return bad_offsets(r, "the fragments that start a frame do not "
                              "match Number of Frames");
    }
    return AG_OK;
}

/* The compressed bytes of frame i, read fragment by fragment. */
static int stream_frame_bytes(Render *r, const DicomElement *px,
                              uint32_t frames, const uint8_t **out,
                              size_t *len)
{
    uint32_t first = 0, last = 0;
    uint64_t eot_len;
    int rc = locate_fragments(r, px, frames, &first, &last, &eot_len);
    if (rc != AG_OK) {
        return rc;
    }
    uint64_t total = 0;
    for (uint32_t j = first; j <= last; j++) {
        total += px->frags[j].length;
    }
    if (eot_len != UINT64_MAX) {
        total = eot_len;
    }
    if (total > CODEC_MAX_FRAME_BYTES) {
        return ag_error_set(r->err, AG_ERR_LIMIT, "render: frame %u has "
                            "%llu compressed bytes", r->frame + 1,
                            (unsigned long long)total);
    }
    uint8_t *buf = ralloc(r, total, "compressed frame");
    if (buf == NULL) {
        return ag_arena_fail_code(r->a);
    }
    uint64_t at = 0;
    for (uint32_t j = first; j <= last && rc == AG_OK; j++) {
        uint64_t n = px->frags[j].length;
        if (n > total - at) {
            n = total - at;
        }
        rc = frag_bytes(r, px, j, n, buf + at);
        at += n;
    }
    *out = buf;
    *len = (size_t)total;
    return rc;
}

static int encapsulated_frame(Render *r, const DicomElement *px, Frame *fr)
{
    const char *ts = r->f->ts_uid;
    if (!codec_can_decode(ts)) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: no decoder "
                            "for transfer syntax %s", ts);
    }
    if (fr->im.bits_allocated == 1) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: 1-bit "
                            "compressed pixel data");
    }
    if (px->nfrags < 2) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: pixel data has "
                            "no fragments");
    }
    const uint8_t *in = NULL;
    size_t in_len = 0;
    bool owned = false;
    int rc;
    if (!(px->flags & DICOM_EL_NOT_LOADED)) {
        rc = codec_frame_bytes(r->ds, px, fr->im.frames, r->frame, &in,
                               &in_len, &owned, r->err);
    } else {
        rc = stream_frame_bytes(r, px, fr->im.frames, &in, &in_len);
    }
    uint64_t fsz = codec_frame_size(&fr->im);
    uint8_t *out = rc == AG_OK ? ralloc(r, fsz, "decoded frame") : NULL;
    if (rc == AG_OK && out == NULL) {
        rc = ag_arena_fail_code(r->a);
    }
    if (rc == AG_OK) {
        rc = codec_decode_frame(ts, &fr->im, in, in_len, out, (size_t)fsz,
                                r->err);
    }
    if (owned) {
        ag_free((void *)in);
    }
    if (rc != AG_OK) {
        /* codec_frame_bytes / codec_decode_frame say AG_ERR_INVALID for
         * offsets and sizes that do not add up: the data's fault. */
        return rc == AG_ERR_INVALID ? AG_ERR_PARSE : rc;
    }
    snprintf(fr->pi, sizeof fr->pi, "%s",
             codec_decoded_photometric(ts, &fr->im));
    fr->px = out;
    fr->planar = false;   /* decoders write colour-by-pixel */
    return AG_OK;
}

/*
 * codec_image_from_dataset refuses a Photometric Interpretation with a
 * space, and PALETTE COLOR is the defined term (PS3.3 C.7.6.3.1.2): such an
 * image is described from a copy of its Image Pixel attributes with the
 * term spelled PALETTE_COLOR, and the term is restored in the result.
 */
int codec_render_image(const DicomDataset *ds, CodecImage *out, AgError *err)
{
    static const uint32_t TAGS[] = {
        DICOM_TAG(0x0028, 0x0002), DICOM_TAG(0x0028, 0x0006),
        DICOM_TAG(0x0028, 0x0008), DICOM_TAG(0x0028, 0x0010),
        DICOM_TAG(0x0028, 0x0011), DICOM_TAG_BITS_ALLOCATED,
        DICOM_TAG(0x0028, 0x0101), DICOM_TAG(0x0028, 0x0102),
        DICOM_TAG_PIXEL_REPRESENTATION,
    };
    int rc = codec_image_from_dataset(ds, out, err);
    if (rc != AG_ERR_INVALID ||
        !has_value(ds, TAG_PHOTOMETRIC, "PALETTE COLOR")) {
        /* Attributes that do not add up are the data's fault, not the
         * request's. */
        return rc == AG_ERR_INVALID ? AG_ERR_PARSE : rc;
    }
    AgArena *a = ag_arena_create(64 << 10);
    DicomDataset *copy = a != NULL ? dicom_dataset_create(a) : NULL;
    rc = copy != NULL ? AG_OK : AG_ERR_NOMEM;
    for (size_t i = 0; i < sizeof TAGS / sizeof TAGS[0] && rc == AG_OK;
         i++) {
        const DicomElement *el = dicom_dataset_find(ds, TAGS[i]);
        if (el == NULL || el->length > 64) {
            continue;
        }
        DicomElement e = *el;
        e.value = el->value != NULL
            ? ag_arena_memdup(a, el->value, el->length) : NULL;
        rc = el->value != NULL && e.value == NULL
            ? AG_ERR_NOMEM : dicom_dataset_put(copy, &e, NULL);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(copy, TAG_PHOTOMETRIC, DICOM_VR_CS,
                              "PALETTE_COLOR", err);
    }
    if (rc == AG_OK) {
        rc = codec_image_from_dataset(copy, out, err);
        rc = rc == AG_ERR_INVALID ? AG_ERR_PARSE : rc;
    } else {
        rc = ag_error_set(err, rc, "image: no memory to describe it");
    }
    if (rc == AG_OK) {
        snprintf(out->photometric, sizeof out->photometric,
                 "PALETTE COLOR");
    }
    ag_arena_destroy(a);
    return rc;
}

static int load_frame(Render *r, Frame *fr)
{
    int rc = codec_render_image(r->ds, &fr->im, r->err);
    if (rc != AG_OK) {
        return rc;
    }
    if (r->frame >= fr->im.frames) {
        return ag_error_set(r->err, AG_ERR_NOTFOUND, "render: frame %u of "
                            "an image of %u frames", r->frame + 1,
                            fr->im.frames);
    }
    snprintf(fr->pi, sizeof fr->pi, "%s", fr->im.photometric);
    const DicomElement *px = dicom_dataset_find(r->ds, DICOM_TAG_PIXEL_DATA);
    if (px == NULL) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: no pixel "
                            "data (7fe0,0010)");
    }
    return (px->flags & DICOM_EL_ENCAPSULATED) ? encapsulated_frame(r, px, fr)
                                               : native_frame(r, px, fr);
}

/* ---- samples ------------------------------------------------------------- */

/* Stored value i of the frame's first plane: masked to Bits Stored and
 * sign-extended when Pixel Representation is 1 (PS3.5 §8.1.1; High Bit
 * is Bits Stored - 1, checked by codec_image_from_dataset). */
static int64_t stored_value(const Frame *fr, uint64_t i)
{
    const uint8_t *p;
    uint32_t raw;
    switch (fr->im.bits_allocated) {
    case 8:
        raw = fr->px[i];
        break;
    case 16:
        p = fr->px + i * 2;
        raw = (uint32_t)p[0] | (uint32_t)p[1] << 8;
        break;
    default:
        p = fr->px + i * 4;
        raw = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
              (uint32_t)p[3] << 24;
        break;
    }
    unsigned bs = fr->im.bits_stored;
    uint32_t mask = bs >= 32 ? UINT32_MAX : ((uint32_t)1 << bs) - 1;
    raw &= mask;
    if (fr->im.is_signed && (raw >> (bs - 1) & 1)) {
        return (int64_t)raw - ((int64_t)1 << bs);
    }
    return raw;
}

/* Sign-extend a Bits Stored wide code (for tables indexed by code). */
static int64_t code_value(const CodecImage *im, uint32_t code)
{
    unsigned bs = im->bits_stored;
    if (im->is_signed && (code >> (bs - 1) & 1)) {
        return (int64_t)code - ((int64_t)1 << bs);
    }
    return code;
}

/* ---- LUTs (PS3.3 C.11.1.1, C.11.2.1.1, C.7.6.3.1.5) ---------------------- */

typedef struct Lut {
    uint32_t n;          /* entries, 1..65536 */
    int64_t first;       /* first input value mapped */
    double max;          /* 2^bits - 1, the output range */
    uint16_t *v;
} Lut;

/* Entry for input x: values below the first input map to the first entry,
 * above the last to the last (C.11.1.1.1, C.11.2.1.1). */
static uint16_t lut_at(const Lut *l, double x)
{
    double i = floor(x) - (double)l->first;
    if (!(i > 0)) {
        return l->v[0];
    }
    if (i >= l->n - 1) {
        return l->v[l->n - 1];
    }
    return l->v[(uint32_t)i];
}

/*
 * A LUT from its descriptor (three US/SS: entries, 0 meaning 65536; first
 * input value mapped, signed when signed_first; bits per entry) and data
 * (16-bit words; 8-bit entries also accepted packed one per byte).
 */
static int lut_load(Render *r, const DicomDataset *ds, uint32_t desc_tag,
                    uint32_t data_tag, bool signed_first, unsigned min_bits,
                    const char *what, Lut *out)
{
    const DicomElement *d = dicom_dataset_find(ds, desc_tag);
    const DicomElement *v = dicom_dataset_find(ds, data_tag);
    if (d == NULL || v == NULL) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: %s without %s",
                            what, d == NULL ? "a descriptor" : "data");
    }
    const uint8_t *db, *vb;
    size_t dlen, vlen;
    int rc = value_bytes(r, d, 6, what, &db, &dlen);
    if (rc == AG_OK && dlen != 6) {
        rc = ag_error_set(r->err, AG_ERR_PARSE, "render: %s descriptor "
                          "(%04x,%04x) is not three values", what,
                          DICOM_TAG_GROUP(desc_tag),
                          DICOM_TAG_ELEMENT(desc_tag));
    }
    if (rc == AG_OK) {
        rc = value_bytes(r, v, MAX_LUT_BYTES, what, &vb, &vlen);
    }
    if (rc != AG_OK) {
        return rc;
    }
    uint32_t n = rd16(db) == 0 ? 65536u : rd16(db);
    uint16_t first = rd16(db + 2), bits = rd16(db + 4);
    if (bits < min_bits || bits > 16) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: %s entries of "
                            "%u bits (%u..16 allowed)", what, (unsigned)bits,
                            min_bits);
    }
    out->n = n;
    out->first = signed_first ? (int64_t)(int16_t)first : (int64_t)first;
    out->max = (double)(((uint32_t)1 << bits) - 1);
    out->v = ralloc(r, (uint64_t)n * 2, what);
    if (out->v == NULL) {
        return ag_arena_fail_code(r->a);
    }
    if (vlen == (size_t)n * 2) {
        bool high = bits <= 8;   /* 8-bit entries in the high bytes? */
        for (uint32_t i = 0; i < n && high; i++) {
            high = (vb[i * 2] == 0);
        }
        for (uint32_t i = 0; i < n; i++) {
            uint16_t e = rd16(vb + (size_t)i * 2);
            out->v[i] = high ? (uint16_t)(e >> 8) : e;
        }
    } else if (bits <= 8 && (vlen == n || vlen == (size_t)n + 1)) {
        for (uint32_t i = 0; i < n; i++) {
            out->v[i] = vb[i];
        }
    } else {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: %s data of %zu "
                            "bytes for %u entries", what, vlen, n);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (out->v[i] > out->max) {
            out->v[i] = (uint16_t)out->max;   /* stray high bits */
        }
    }
    return AG_OK;
}

/* First item of a sequence, or NULL. */
static const DicomDataset *first_item(const DicomDataset *ds, uint32_t tag)
{
    const DicomElement *el = ds != NULL ? dicom_dataset_find(ds, tag) : NULL;
    return el != NULL && el->nitems > 0 ? el->items[0] : NULL;
}

/* The frame's functional group macro `seq` (PS3.3 C.7.6.16): the
 * Per-frame item wins over the Shared one; NULL when neither has it. */
static const DicomDataset *frame_group(Render *r, uint32_t seq)
{
    const DicomElement *pf = dicom_dataset_find(r->ds, TAG_PER_FRAME_FG);
    if (pf != NULL && r->frame < pf->nitems) {
        const DicomDataset *m = first_item(pf->items[r->frame], seq);
        if (m != NULL) {
            return m;
        }
    }
    return first_item(first_item(r->ds, TAG_SHARED_FG), seq);
}

static bool get_float(const DicomDataset *ds, uint32_t tag, double *out)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    return el != NULL && el->length > 0 &&
           !(el->flags & DICOM_EL_NOT_LOADED) &&
           dicom_element_float(el, 0, out, NULL) == AG_OK && isfinite(*out);
}

/* ---- grayscale: Modality, VOI, Presentation (PS3.4 N.2.1) ---------------- */

enum { VOI_WINDOW, VOI_TABLE, VOI_RANGE };

typedef struct Gray {
    bool mlut_on;
    Lut mlut;
    double slope, intercept;
    int voi;
    CodecVoiFunction fn;
    double c, w;
    Lut vlut;
    double lo, hi;          /* VOI_RANGE */
    bool plut_on;
    Lut plut;
    bool invert;
} Gray;

static double modality(const Gray *g, int64_t s)
{
    if (g->mlut_on) {
        return lut_at(&g->mlut, (double)s);
    }
    return (double)s * g->slope + g->intercept;
}

/* The VOI output scaled to 0..1. */
static double voi(const Gray *g, double m)
{
    switch (g->voi) {
    case VOI_WINDOW:
        return codec_voi_apply(g->fn, g->c, g->w, m, 0.0, 1.0);
    case VOI_TABLE:
        return lut_at(&g->vlut, m) / g->vlut.max;
    default:
        return g->hi > g->lo ? (m - g->lo) / (g->hi - g->lo) : 0.0;
    }
}

static uint8_t present(const Gray *g, double m)
{
    double v = voi(g, m);
    if (g->plut_on) {
        /* C.11.6: the VOI output range indexes the Presentation LUT. */
        double i = floor(v * (g->plut.n - 1) + 0.5) + (double)g->plut.first;
        v = lut_at(&g->plut, i) / g->plut.max;
    }
    double o = floor(v * 255.0 + 0.5);
    int out = o < 0 ? 0 : o > 255 ? 255 : (int)o;
    return (uint8_t)(g->invert ? 255 - out : out);
}

static int gray_modality(Render *r, const Frame *fr, Gray *g)
{
    g->slope = 1.0;
    g->intercept = 0.0;
    const DicomDataset *mlut = first_item(r->ds, TAG_MODALITY_LUT_SEQ);
    if (mlut != NULL) {
        /* C.11.1: a Modality LUT Sequence or Rescale Slope/Intercept;
         * the LUT when a file has both.  Its first mapped value is SS
         * for signed pixel data (C.11.1.1.1). */
        g->mlut_on = true;
        return lut_load(r, mlut, TAG_LUT_DESCRIPTOR, TAG_LUT_DATA,
                        fr->im.is_signed, 1, "modality LUT", &g->mlut);
    }
    const DicomDataset *src = frame_group(r,
                                          TAG_PIXEL_VALUE_TRANSFORMATION_SEQ);
    if (src == NULL) {
        src = r->ds;
    }
    double v;
    if (get_float(src, TAG_RESCALE_SLOPE, &v)) {
        if (v == 0.0) {
            return ag_error_set(r->err, AG_ERR_PARSE, "render: Rescale "
                                "Slope (0028,1053) is 0");
        }
        g->slope = v;
    }
    if (get_float(src, TAG_RESCALE_INTERCEPT, &v)) {
        g->intercept = v;
    }
    return AG_OK;
}

static int gray_voi(Render *r, const Frame *fr, Gray *g)
{
    const CodecRenderParams *p = r->p;
    if (p->window) {
        g->voi = VOI_WINDOW;
        g->fn = p->function;
        g->c = p->window_center;
        g->w = p->window_width;
        return AG_OK;
    }
    const DicomDataset *src = frame_group(r, TAG_FRAME_VOI_LUT_SEQ);
    if (src == NULL) {
        src = r->ds;
    }
    double c, w;
    if (get_float(src, TAG_WINDOW_CENTER, &c) &&
        get_float(src, TAG_WINDOW_WIDTH, &w)) {
        CodecVoiFunction fn = CODEC_VOI_LINEAR;
        const DicomElement *fe = dicom_dataset_find(src,
                                                    TAG_VOI_LUT_FUNCTION);
        if (fe != NULL && has_value(src, TAG_VOI_LUT_FUNCTION, "SIGMOID")) {
            fn = CODEC_VOI_SIGMOID;
        } else if (fe != NULL &&
                   has_value(src, TAG_VOI_LUT_FUNCTION, "LINEAR_EXACT")) {
            fn = CODEC_VOI_LINEAR_EXACT;
        }
        if (codec_voi_width_valid(fn, w)) {
            g->voi = VOI_WINDOW;
            g->fn = fn;
            g->c = c;
            g->w = w;
            return AG_OK;
        }
    }
    const DicomDataset *vlut = first_item(r->ds, TAG_VOI_LUT_SEQ);
    if (vlut != NULL) {
        /* Its first mapped value is SS when the modality output can be
         * negative (C.11.2.1.1). */
        const DicomElement *d = dicom_dataset_find(vlut, TAG_LUT_DESCRIPTOR);
        bool sgn = fr->im.is_signed || g->intercept < 0 ||
                   (d != NULL && d->vr == DICOM_VR_SS);
        g->voi = VOI_TABLE;
        return lut_load(r, vlut, TAG_LUT_DESCRIPTOR, TAG_LUT_DATA, sgn, 1,
                        "VOI LUT", &g->vlut);
    }
    g->voi = VOI_RANGE;
    return AG_OK;
}

static int gray_presentation(Render *r, const Frame *fr, Gray *g)
{
    const DicomDataset *plut = first_item(r->ds, TAG_PRESENTATION_LUT_SEQ);
    if (plut != NULL) {
        g->plut_on = true;
        int rc = lut_load(r, plut, TAG_LUT_DESCRIPTOR, TAG_LUT_DATA, false,
                          1, "presentation LUT", &g->plut);
        if (rc != AG_OK) {
            return rc;
        }
    }
    /* C.7.6.3.1.2: MONOCHROME1 shows its minimum as white; C.11.6.1: a
     * Presentation LUT Shape of INVERSE inverts too (on MONOCHROME1 it
     * states the same inversion, so it is applied once). */
    g->invert = strcmp(fr->pi, "MONOCHROME1") == 0 ||
                (plut == NULL &&
                 has_value(r->ds, TAG_PRESENTATION_LUT_SHAPE, "INVERSE"));
    return AG_OK;
}

static int render_gray(Render *r, const Frame *fr, Picture *pic)
{
    Gray g;
    memset(&g, 0, sizeof g);
    int rc = gray_modality(r, fr, &g);
    if (rc == AG_OK) {
        rc = gray_voi(r, fr, &g);
    }
    if (rc == AG_OK) {
        rc = gray_presentation(r, fr, &g);
    }
    if (rc != AG_OK) {
        return rc;
    }
    uint64_t n = (uint64_t)fr->im.rows * fr->im.columns;
    unsigned bs = fr->im.bits_stored;
    if (bs <= 16) {
        /* Every code of Bits Stored bits through the pipeline once: a
         * table of at most 65536 modality values and output bytes. */
        uint32_t ncodes = (uint32_t)1 << bs, mask = ncodes - 1;
        double *mod = ralloc(r, (uint64_t)ncodes * sizeof *mod, "modality "
                             "table");
        uint8_t *out = ralloc(r, ncodes, "output table");
        if (mod == NULL || out == NULL) {
            return ag_arena_fail_code(r->a);
        }
        for (uint32_t code = 0; code < ncodes; code++) {
            mod[code] = modality(&g, code_value(&fr->im, code));
        }
        if (g.voi == VOI_RANGE) {
            g.lo = INFINITY;
            g.hi = -INFINITY;
            for (uint64_t i = 0; i < n; i++) {
                double m = mod[(uint64_t)stored_value(fr, i) & mask];
                g.lo = fmin(g.lo, m);
                g.hi = fmax(g.hi, m);
            }
        }
        for (uint32_t code = 0; code < ncodes; code++) {
            out[code] = present(&g, mod[code]);
        }
        for (uint64_t i = 0; i < n; i++) {
            pic->px[i] = out[(uint64_t)stored_value(fr, i) & mask];
        }
        return AG_OK;
    }
    if (g.voi == VOI_RANGE) {
        g.lo = INFINITY;
        g.hi = -INFINITY;
        for (uint64_t i = 0; i < n; i++) {
            double m = modality(&g, stored_value(fr, i));
            g.lo = fmin(g.lo, m);
            g.hi = fmax(g.hi, m);
        }
    }
    for (uint64_t i = 0; i < n; i++) {
        pic->px[i] = present(&g, modality(&g, stored_value(fr, i)));
    }
    return AG_OK;
}

/* ---- colour (PS3.3 C.7.6.3.1.2, C.7.6.3.1.5) ----------------------------- */

/* Sample k (0..2) of pixel i, masked to Bits Stored. */
static uint32_t color_sample(const Frame *fr, uint64_t n, uint64_t i,
                             unsigned k)
{
    uint64_t at = fr->planar ? (uint64_t)k * n + i : i * 3 + k;
    uint32_t v;
    if (fr->im.bits_allocated == 8) {
        v = fr->px[at];
    } else if (fr->im.bits_allocated == 16) {
        v = rd16(fr->px + at * 2);
    } else {
        const uint8_t *p = fr->px + at * 4;
        v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
            (uint32_t)p[3] << 24;
    }
    unsigned bs = fr->im.bits_stored;
    return bs >= 32 ? v : v & (((uint32_t)1 << bs) - 1);
}

static uint8_t to8(double v, double max)
{
    double o = floor(v * 255.0 / max + 0.5);
    return (uint8_t)(o < 0 ? 0 : o > 255 ? 255 : o);
}

static int render_color(Render *r, const Frame *fr, Picture *pic)
{
    bool ybr = strcmp(fr->pi, "YBR_FULL") == 0 ||
               strcmp(fr->pi, "YBR_FULL_422") == 0;
    if (!ybr && strcmp(fr->pi, "RGB") != 0) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: colour "
                            "pixel data in %s is not rendered (RGB, "
                            "YBR_FULL, YBR_FULL_422 are)", fr->pi);
    }
    uint64_t n = (uint64_t)fr->im.rows * fr->im.columns;
    unsigned bs = fr->im.bits_stored;
    double max = bs >= 32 ? 4294967295.0 : (double)(((uint64_t)1 << bs) - 1);
    double half = (max + 1) / 2;
    for (uint64_t i = 0; i < n; i++) {
        double a = color_sample(fr, n, i, 0);
        double b = color_sample(fr, n, i, 1);
        double c = color_sample(fr, n, i, 2);
        uint8_t *o = pic->px + i * 3;
        if (ybr) {
            /* The inverse of C.7.6.3.1.2's YBR_FULL equations (Y = .299R
             * + .587G + .114B, CB = -.1687R - .3313G + .5B + 128, CR =
             * .5R - .4187G - .0813B + 128), with 128 the half range. */
            double y = a, cb = b - half, cr = c - half;
            double rr = y + 1.402 * cr;
            double gg = y - 0.344136 * cb - 0.714136 * cr;
            double bb = y + 1.772 * cb;
            o[0] = to8(fmin(fmax(rr, 0), max), max);
            o[1] = to8(fmin(fmax(gg, 0), max), max);
            o[2] = to8(fmin(fmax(bb, 0), max), max);
        } else if (bs == 8) {
            o[0] = (uint8_t)a;
            o[1] = (uint8_t)b;
            o[2] = (uint8_t)c;
        } else {
            o[0] = to8(a, max);
            o[1] = to8(b, max);
            o[2] = to8(c, max);
        }
    }
    return AG_OK;
}

static int render_palette(Render *r, const Frame *fr, Picture *pic)
{
    Lut lut[3];
    static const char *const NAME[3] = {"red palette", "green palette",
                                        "blue palette"};
    for (unsigned k = 0; k < 3; k++) {
        if (dicom_dataset_find(r->ds, TAG_SEGMENTED_PALETTE(k)) != NULL &&
            dicom_dataset_find(r->ds, TAG_PALETTE_DATA(k)) == NULL) {
            return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: "
                                "segmented palette colour LUTs "
                                "(0028,122%u) are not supported", k + 1);
        }
        /* C.7.6.3.1.5: the first mapped value is US or SS as the pixel
         * data; entries are 8 or 16 bits. */
        int rc = lut_load(r, r->ds, TAG_PALETTE_DESCRIPTOR(k),
                          TAG_PALETTE_DATA(k), fr->im.is_signed, 8, NAME[k],
                          &lut[k]);
        if (rc != AG_OK) {
            return rc;
        }
    }
    uint64_t n = (uint64_t)fr->im.rows * fr->im.columns;
    for (uint64_t i = 0; i < n; i++) {
        double s = (double)stored_value(fr, i);
        for (unsigned k = 0; k < 3; k++) {
            pic->px[i * 3 + k] = to8(lut_at(&lut[k], s), lut[k].max);
        }
    }
    return AG_OK;
}

static int render_picture(Render *r, const Frame *fr, Picture *pic)
{
    bool mono = strcmp(fr->pi, "MONOCHROME1") == 0 ||
                strcmp(fr->pi, "MONOCHROME2") == 0;
    bool palette = strcmp(fr->pi, "PALETTE COLOR") == 0 ||
                   strcmp(fr->pi, "PALETTE_COLOR") == 0;
    unsigned spp = fr->im.samples_per_pixel;
    if ((mono || palette) != (spp == 1)) {
        return ag_error_set(r->err, AG_ERR_PARSE, "render: %s with %u "
                            "samples per pixel", fr->pi, spp);
    }
    if (spp == 1 && !mono && !palette) {
        return ag_error_set(r->err, AG_ERR_UNSUPPORTED, "render: "
                            "Photometric Interpretation %s", fr->pi);
    }
    pic->w = fr->im.columns;
    pic->h = fr->im.rows;
    pic->ch = mono ? 1 : 3;
    pic->px = ralloc(r, (uint64_t)pic->w * pic->h * pic->ch, "picture");
    if (pic->px == NULL) {
        return ag_arena_fail_code(r->a);
    }
    if (mono) {
        return render_gray(r, fr, pic);
    }
    return palette ? render_palette(r, fr, pic) : render_color(r, fr, pic);
}

/* ---- region and scaling (PS3.18 §8.3.5.1.3) ------------------------------ */

typedef struct Region {
    uint32_t x, y, w, h;
    bool flip_x, flip_y;
} Region;

/* The source region: the whole picture, or (sx, sy, |sw|, |sh|) clipped to
 * it; a negative sw or sh mirrors the region. */
static int region_of(Render *r, const Picture *pic, Region *g)
{
    const CodecRenderParams *p = r->p;
    memset(g, 0, sizeof *g);
    g->w = pic->w;
    g->h = pic->h;
    if (!p->region) {
        return AG_OK;
    }
    if (p->sx >= pic->w || p->sy >= pic->h) {
        return ag_error_set(r->err, AG_ERR_INVALID, "render: source region "
                            "starts at %lld,%lld, outside the %ux%u image",
                            (long long)p->sx, (long long)p->sy, pic->w,
                            pic->h);
    }
    int64_t w = p->sw < 0 ? -p->sw : p->sw;
    int64_t h = p->sh < 0 ? -p->sh : p->sh;
    g->x = (uint32_t)p->sx;
    g->y = (uint32_t)p->sy;
    g->w = (uint32_t)(w < pic->w - p->sx ? w : pic->w - p->sx);
    g->h = (uint32_t)(h < pic->h - p->sy ? h : pic->h - p->sy);
    g->flip_x = p->sw < 0;
    g->flip_y = p->sh < 0;
    return AG_OK;
}

/* Filter taps of one axis: output i takes taps[i * max .. + count[i]]
 * source indices (already mapped into the picture) with their weights. */
typedef struct Taps {
    uint32_t max;
    uint32_t *count;
    uint32_t *src;
    float *w;
} Taps;

static uint32_t map_index(uint32_t off, uint32_t len, bool flip, uint32_t j)
{
    return flip ? off + len - 1 - j : off + j;
}

/* Area averaging when shrinking (each output pixel averages the source
 * area it covers, partial pixels weighted by coverage); bilinear
 * interpolation between pixel centres when enlarging. */
static int make_taps(Render *r, uint32_t off, uint32_t len, bool flip,
                     uint32_t out, Taps *t)
{
    double scale = (double)len / out;
    t->max = scale > 1.0 ? (uint32_t)ceil(scale) + 1 : 2;
    t->count = ralloc(r, (uint64_t)out * sizeof *t->count, "filter");
    t->src = ralloc(r, (uint64_t)out * t->max * sizeof *t->src, "filter");
    t->w = ralloc(r, (uint64_t)out * t->max * sizeof *t->w, "filter");
    if (t->count == NULL || t->src == NULL || t->w == NULL) {
        return ag_arena_fail_code(r->a);
    }
    for (uint32_t i = 0; i < out; i++) {
        uint32_t *s = t->src + (size_t)i * t->max;
        float *w = t->w + (size_t)i * t->max;
        uint32_t k = 0;
        if (scale > 1.0) {
            double x0 = i * scale, x1 = (i + 1) * scale;
            uint32_t j = (uint32_t)x0;
            for (; j < len && j < x1 && k < t->max; j++) {
                double cover = fmin(x1, j + 1.0) - fmax(x0, (double)j);
                if (cover > 0) {
                    s[k] = map_index(off, len, flip, j);
                    w[k++] = (float)(cover / scale);
                }
            }
        } else {
            double c = (i + 0.5) * scale - 0.5;
            double fl = floor(c);
            double f = c - fl;
            int64_t j0 = (int64_t)fl, j1 = j0 + 1;
            j0 = j0 < 0 ? 0 : j0 >= len ? len - 1 : j0;
            j1 = j1 < 0 ? 0 : j1 >= len ? len - 1 : j1;
            s[k] = map_index(off, len, flip, (uint32_t)j0);
            w[k++] = (float)(1.0 - f);
            s[k] = map_index(off, len, flip, (uint32_t)j1);
            w[k++] = (float)f;
        }
        t->count[i] = k;
    }
    return AG_OK;
}

/* One picture row resampled horizontally into out (ow * ch floats). */
static void scale_row(const Picture *pic, uint32_t y, const Taps *tx,
                      uint32_t ow, float *out)
{
    const uint8_t *row = pic->px + (size_t)y * pic->w * pic->ch;
    for (uint32_t i = 0; i < ow; i++) {
        const uint32_t *s = tx->src + (size_t)i * tx->max;
        const float *w = tx->w + (size_t)i * tx->max;
        for (unsigned c = 0; c < pic->ch; c++) {
            float acc = 0;
            for (uint32_t k = 0; k < tx->count[i]; k++) {
                acc += w[k] * row[(size_t)s[k] * pic->ch + c];
            }
            out[(size_t)i * pic->ch + c] = acc;
        }
    }
}

/*
 * Cut out and scale: separable, one output row at a time.  Rows resampled
 * horizontally are kept in a ring as long as a later output row may use
 * them (the source rows an output row uses only move forward).
 */
static int scale_picture(Render *r, const Picture *in, const Region *g,
                         uint32_t ow, uint32_t oh, Picture *out)
{
    Taps tx, ty;
    int rc = make_taps(r, g->x, g->w, g->flip_x, ow, &tx);
    if (rc == AG_OK) {
        rc = make_taps(r, g->y, g->h, g->flip_y, oh, &ty);
    }
    if (rc != AG_OK) {
        return rc;
    }
    unsigned ch = in->ch;
    uint32_t ring = ty.max;
    size_t row_floats = (size_t)ow * ch;
    float *rows = ralloc(r, (uint64_t)ring * row_floats * sizeof *rows,
                         "scaled rows");
    uint32_t *held = ralloc(r, (uint64_t)ring * sizeof *held, "scaled rows");
    out->w = ow;
    out->h = oh;
    out->ch = ch;
    out->px = ralloc(r, (uint64_t)ow * oh * ch, "scaled picture");
    if (rows == NULL || held == NULL || out->px == NULL) {
        return ag_arena_fail_code(r->a);
    }
    for (uint32_t k = 0; k < ring; k++) {
        held[k] = UINT32_MAX;
    }
    for (uint32_t oy = 0; oy < oh; oy++) {
        const uint32_t *s = ty.src + (size_t)oy * ty.max;
        const float *w = ty.w + (size_t)oy * ty.max;
        uint8_t *dst = out->px + (size_t)oy * row_floats;
        for (size_t x = 0; x < row_floats; x++) {
            float acc = 0;
            for (uint32_t k = 0; k < ty.count[oy]; k++) {
                uint32_t slot = s[k] % ring;
                float *row = rows + (size_t)slot * row_floats;
                if (held[slot] != s[k]) {
                    scale_row(in, s[k], &tx, ow, row);
                    held[slot] = s[k];
                }
                acc += w[k] * row[x];
            }
            float v = floorf(acc + 0.5f);
            dst[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    return AG_OK;
}

/* ---- encoders ------------------------------------------------------------ */

static int encode_jpeg(Render *r, const Picture *pic, AgBuf *out)
{
    tjhandle h = tjInitCompress();
    if (h == NULL) {
        return ag_error_set(r->err, AG_ERR_NOMEM, "render: jpeg: %s",
                            tjGetErrorStr2(NULL));
    }
    int q = r->p->quality > 0 ? r->p->quality : CODEC_RENDER_DEFAULT_QUALITY;
    unsigned char *buf = NULL;      /* tjAlloc'd by the library */
    unsigned long len = 0;
    bool gray = pic->ch == 1;
    int rc = AG_OK;
    if (tjCompress2(h, pic->px, (int)pic->w, 0, (int)pic->h,
                    gray ? TJPF_GRAY : TJPF_RGB, &buf, &len,
                    gray ? TJSAMP_GRAY : TJSAMP_444, q,
                    TJFLAG_ACCURATEDCT) != 0) {
        rc = ag_error_set(r->err, AG_ERR_INVALID, "render: jpeg: %s",
                          tjGetErrorStr2(h));
    } else if ((rc = ag_buf_append(out, buf, len)) != AG_OK) {
        ag_error_set(r->err, rc, "render: no room for %lu bytes of jpeg",
                     len);
    }
    tjFree(buf);
    tjDestroy(h);
    return rc;
}

static int encode_png(Render *r, const Picture *pic, AgBuf *out)
{
    /* libspng allocates through Agora's allocator (fault injection). */
    struct spng_alloc al = {ag_malloc, ag_realloc, ag_calloc, ag_free};
    spng_ctx *ctx = spng_ctx_new2(&al, SPNG_CTX_ENCODER);
    if (ctx == NULL) {
        return ag_error_set(r->err, AG_ERR_NOMEM, "render: png: no memory "
                            "for an encoder");
    }
    struct spng_ihdr ih = {
        .width = pic->w,
        .height = pic->h,
        .bit_depth = 8,
        .color_type = pic->ch == 1 ? SPNG_COLOR_TYPE_GRAYSCALE
                                   : SPNG_COLOR_TYPE_TRUECOLOR,
    };
    size_t len = (size_t)pic->w * pic->h * pic->ch;
    int e = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (e == 0) {
        e = spng_set_ihdr(ctx, &ih);
    }
    if (e == 0) {
        e = spng_encode_image(ctx, pic->px, len, SPNG_FMT_PNG,
                              SPNG_ENCODE_FINALIZE);
    }
    size_t n = 0;
    void *png = e == 0 ? spng_get_png_buffer(ctx, &n, &e) : NULL;
    int rc = AG_OK;
    if (png == NULL) {
        /* zlib's init fails only for memory here: the parameters are
         * spng's defaults. */
        bool oom = e == SPNG_EMEM || e == SPNG_EZLIB_INIT;
        rc = ag_error_set(r->err, oom ? AG_ERR_NOMEM : AG_ERR_INVALID,
                          "render: png: %s", spng_strerror(e));
    } else if ((rc = ag_buf_append(out, png, n)) != AG_OK) {
        ag_error_set(r->err, rc, "render: no room for %zu bytes of png", n);
    }
    ag_free(png);
    spng_ctx_free(ctx);
    return rc;
}

/* ---- the entry point ----------------------------------------------------- */

int codec_render_frame(const DicomFile *f, const DicomBulkSource *bulk,
                       uint32_t frame, const CodecRenderParams *p,
                       AgBuf *out, AgError *err)
{
    int rc = check_params(p, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA) == NULL) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "render: no pixel data "
                            "(7fe0,0010)");
    }
    CodecImage im;
    rc = codec_render_image(f->dataset, &im, err);
    if (rc != AG_OK) {
        return rc;
    }
    /* Budget: the frame, its 8-bit picture, the scaled picture and the
     * filter rows, with room for LUTs (at most 64K entries each). */
    uint64_t fsz = codec_frame_size(&im);
    uint64_t pic = (uint64_t)im.rows * im.columns * 3;
    uint64_t view = (uint64_t)CODEC_RENDER_MAX_SIZE * CODEC_RENDER_MAX_SIZE;
    uint64_t budget = 2 * fsz + 2 * pic + 3 * view + ((uint64_t)64 << 20);
    AgArena *a = ag_arena_create(budget < SIZE_MAX / 2 ? (size_t)budget
                                                       : SIZE_MAX / 2);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "render: no memory");
    }
    Render r = {.f = f, .ds = f->dataset, .bulk = bulk, .p = p,
                .frame = frame, .a = a, .err = err};
    Frame fr;
    memset(&fr, 0, sizeof fr);
    Picture full = {0}, scaled = {0};
    Region g;
    rc = load_frame(&r, &fr);
    if (rc == AG_OK) {
        rc = render_picture(&r, &fr, &full);
    }
    if (rc == AG_OK) {
        rc = region_of(&r, &full, &g);
    }
    if (rc == AG_OK) {
        uint32_t ow, oh;
        codec_render_fit(g.w, g.h, p, &ow, &oh);
        bool same = !p->region && ow == full.w && oh == full.h;
        if (same) {
            scaled = full;
        } else {
            rc = scale_picture(&r, &full, &g, ow, oh, &scaled);
        }
    }
    if (rc == AG_OK) {
        size_t start = out->len;
        rc = p->format == CODEC_RENDER_PNG ? encode_png(&r, &scaled, out)
                                           : encode_jpeg(&r, &scaled, out);
        if (rc != AG_OK) {
            out->len = start;
        }
    }
    ag_arena_destroy(a);
    return rc;
}
