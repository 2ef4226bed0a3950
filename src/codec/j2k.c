/*
 * j2k.c — JPEG 2000 (PS3.5 §8.2.4, ISO/IEC 15444-1) and, for decoding,
 * HTJ2K (ISO/IEC 15444-15, which OpenJPEG >= 2.5.0 reads through the same
 * codestream path), through OpenJPEG from memory.
 *
 * Arm's length (SECURITY.md rule 8): OpenJPEG allocates per tile and per
 * component as soon as it reads the SIZ marker, so this file parses SIZ
 * itself first and refuses a codestream whose size, components, precision,
 * subsampling or tile count do not match the data set's image — before
 * OpenJPEG sees a byte.  The image OpenJPEG returns is checked again before
 * it is packed into exactly the caller's buffer.  OpenJPEG's messages go to
 * the AgError, never to stderr; strict mode makes a truncated codestream an
 * error instead of a partially decoded image.
 *
 * Signedness: PS3.5 §8.2.4 (note) — when the codestream's Ssiz sign bit
 * disagrees with Pixel Representation (seen in the wild, e.g. pydicom's
 * J2K_pixelrep_mismatch.dcm: signed 13-bit data coded as unsigned), the
 * data set wins: the decoded samples are taken as bits_stored-bit patterns
 * and reinterpreted with the data set's signedness.  Otherwise samples are
 * clamped to the range of bits_stored (lossy overshoot, precision above
 * Bits Stored).  Signed samples are written as two's complement in the
 * whole container (sign-extended above bits_stored); unsigned ones have
 * zero padding bits.
 */
#include "codec_int.h"

#include <inttypes.h>
#include <openjpeg.h>
#include <stdio.h>
#include <string.h>

/* Caps on what a codestream may ask OpenJPEG to allocate up front. */
#define J2K_MAX_TILES 4096u          /* per-tile coding state, ~10 KiB each */
#define J2K_LOSSY_RATIO 10.0f        /* 4.91: 10:1 of the raw sample bits */
#define J2K_MAX_RESOLUTIONS 6        /* 5 decomposition levels */

static const uint8_t JP2_SIGNATURE[12] = {
    0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A,
};

/* ---- OpenJPEG messages ------------------------------------------------ */

typedef struct J2kMsg {
    char first[200];   /* first error: usually the cause, not the fallout */
    bool have;
} J2kMsg;

static void on_error(const char *msg, void *ud)
{
    J2kMsg *m = ud;
    if (m->have || msg == NULL) {
        return;
    }
    snprintf(m->first, sizeof m->first, "%s", msg);
    size_t len = strlen(m->first);
    while (len > 0 && (m->first[len - 1] == '\n' || m->first[len - 1] == ' ')) {
        m->first[--len] = '\0';
    }
    m->have = true;
}

static void on_quiet(const char *msg, void *ud)
{
    (void)msg;
    (void)ud;
}

static void set_handlers(opj_codec_t *codec, J2kMsg *m)
{
    opj_set_error_handler(codec, on_error, m);
    opj_set_warning_handler(codec, on_quiet, m);
    opj_set_info_handler(codec, on_quiet, m);
}

static int opj_fail(AgError *err, int code, const J2kMsg *m,
                    const char *what)
{
    return ag_error_set(err, code, "jpeg 2000: %s%s%s", what,
                        m->have ? ": " : "", m->have ? m->first : "");
}

/* ---- memory streams --------------------------------------------------- */

typedef struct MemReader {
    const uint8_t *p;
    size_t n;
    size_t pos;
} MemReader;

static OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T want, void *ud)
{
    MemReader *r = ud;
    if (r->pos >= r->n) {
        return (OPJ_SIZE_T)-1;
    }
    size_t k = r->n - r->pos < want ? r->n - r->pos : want;
    memcpy(buf, r->p + r->pos, k);
    r->pos += k;
    return k;
}

static OPJ_OFF_T mem_read_skip(OPJ_OFF_T off, void *ud)
{
    MemReader *r = ud;
    if (off < 0) {
        if ((uint64_t)-off > r->pos) {
            return -1;
        }
        r->pos -= (size_t)-off;
        return off;
    }
    size_t left = r->n - r->pos;
    if (off == 0 || left == 0) {
        return off == 0 ? 0 : -1;   /* -1: end, OpenJPEG stops looping */
    }
    size_t k = (uint64_t)off < left ? (size_t)off : left;
    r->pos += k;
    return (OPJ_OFF_T)k;
}

static OPJ_BOOL mem_read_seek(OPJ_OFF_T off, void *ud)
{
    MemReader *r = ud;
    if (off < 0 || (uint64_t)off > r->n) {
        return OPJ_FALSE;
    }
    r->pos = (size_t)off;
    return OPJ_TRUE;
}

/* The encoder writes forward but may seek back to patch a marker. */
typedef struct MemWriter {
    AgBuf *b;
    size_t base;     /* b->len when encoding began */
    size_t pos;      /* relative to base */
    int rc;
} MemWriter;

static OPJ_SIZE_T mem_write(void *buf, OPJ_SIZE_T n, void *ud)
{
    MemWriter *w = ud;
    uint64_t end;
    if (ag_add_overflow(w->base, w->pos, &end) ||
        ag_add_overflow(end, n, &end) || end > SIZE_MAX) {
        w->rc = AG_ERR_LIMIT;
        return (OPJ_SIZE_T)-1;
    }
    if (end > w->b->len) {
        size_t old = w->b->len;
        int rc = ag_buf_reserve(w->b, (size_t)end - old);
        if (rc != AG_OK) {
            w->rc = rc;
            return (OPJ_SIZE_T)-1;
        }
        memset(w->b->data + old, 0, (size_t)end - old);   /* skipped gap */
        w->b->len = (size_t)end;
    }
    memcpy(w->b->data + w->base + w->pos, buf, n);
    w->pos += n;
    return n;
}

static OPJ_OFF_T mem_write_skip(OPJ_OFF_T off, void *ud)
{
    MemWriter *w = ud;
    if (off < 0 && (uint64_t)-off > w->pos) {
        return -1;
    }
    w->pos = (size_t)((OPJ_OFF_T)w->pos + off);
    return off;
}

static OPJ_BOOL mem_write_seek(OPJ_OFF_T off, void *ud)
{
    MemWriter *w = ud;
    if (off < 0) {
        return OPJ_FALSE;
    }
    w->pos = (size_t)off;
    return OPJ_TRUE;
}

/* ---- image checks ----------------------------------------------------- */

static int check_image(const CodecImage *im, size_t n_native, AgError *err)
{
    if (im->samples_per_pixel != 1 && im->samples_per_pixel != 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: %u samples "
                            "per pixel", (unsigned)im->samples_per_pixel);
    }
    if (im->bits_allocated != 8 && im->bits_allocated != 16) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: bits "
                            "allocated %u", (unsigned)im->bits_allocated);
    }
    if (im->bits_stored < 1 || im->bits_stored > im->bits_allocated) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: bits stored"
                            " %u with bits allocated %u",
                            (unsigned)im->bits_stored,
                            (unsigned)im->bits_allocated);
    }
    if (im->rows == 0 || im->columns == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg 2000: empty image");
    }
    /* OpenJPEG holds every sample as an int32: cap that working set. */
    uint64_t samples, work, size;
    if (ag_mul_overflow(im->rows, im->columns, &samples) ||
        ag_mul_overflow(samples, im->samples_per_pixel, &samples) ||
        ag_mul_overflow(samples, sizeof(OPJ_INT32), &work) ||
        work > CODEC_MAX_FRAME_BYTES) {
        return ag_error_set(err, AG_ERR_LIMIT, "jpeg 2000: %" PRIu32 "x%"
                            PRIu32 " image is too large", im->columns,
                            im->rows);
    }
    size = samples * (im->bits_allocated / 8u);
    if (size != n_native) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg 2000: native frame "
                            "is %zu bytes, image needs %" PRIu64, n_native,
                            size);
    }
    return AG_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * Find the contiguous codestream box ('jp2c', ISO/IEC 15444-1 I.5.4) among
 * the top-level boxes of a JP2 file.
 */
static int jp2_codestream(const uint8_t *in, size_t n, const uint8_t **cs,
                          size_t *cs_len, AgError *err)
{
    size_t pos = 0;
    while (n - pos >= 8) {
        uint64_t len = be32(in + pos);
        uint32_t type = be32(in + pos + 4);
        size_t hdr = 8;
        if (len == 1) {             /* XLBox: 64-bit length follows */
            if (n - pos < 16) {
                break;
            }
            len = (uint64_t)be32(in + pos + 8) << 32 | be32(in + pos + 12);
            hdr = 16;
        } else if (len == 0) {      /* box runs to the end of the file */
            len = n - pos;
        }
        if (len < hdr || len > n - pos) {
            break;
        }
        if (type == 0x6A703263u) {  /* 'jp2c' */
            *cs = in + pos + hdr;
            *cs_len = (size_t)len - hdr;
            return AG_OK;
        }
        pos += (size_t)len;
    }
    return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: jp2 file without a "
                        "codestream box");
}

/*
 * Check the SOC and SIZ markers (ISO/IEC 15444-1 A.4.1, A.5.1) against the
 * image before OpenJPEG allocates anything from them.
 */
static int check_siz(const CodecImage *im, const uint8_t *cs, size_t n,
                     AgError *err)
{
    if (n < 4 || be16(cs) != 0xFF4F || be16(cs + 2) != 0xFF51) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: codestream does "
                            "not start with SOC, SIZ");
    }
    if (n < 4 + 38) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: truncated SIZ");
    }
    const uint8_t *s = cs + 4;
    uint16_t lsiz = be16(s);
    uint32_t xsiz = be32(s + 4), ysiz = be32(s + 8);
    uint32_t xo = be32(s + 12), yo = be32(s + 16);
    uint32_t xt = be32(s + 20), yt = be32(s + 24);
    uint32_t xto = be32(s + 28), yto = be32(s + 32);
    uint16_t csiz = be16(s + 36);
    if (csiz == 0 || lsiz != 38u + 3u * csiz || n - 4 < lsiz) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: SIZ length %u "
                            "for %u components", (unsigned)lsiz,
                            (unsigned)csiz);
    }
    if (xsiz <= xo || ysiz <= yo || xt == 0 || yt == 0 || xto > xo ||
        yto > yo || (uint64_t)xto + xt <= xo || (uint64_t)yto + yt <= yo) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: inconsistent SIZ "
                            "geometry");
    }
    if (xsiz - xo != im->columns || ysiz - yo != im->rows ||
        csiz != im->samples_per_pixel) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: codestream is %"
                            PRIu32 "x%" PRIu32 " with %u components; image "
                            "is %" PRIu32 "x%" PRIu32 " with %u",
                            xsiz - xo, ysiz - yo, (unsigned)csiz,
                            im->columns, im->rows,
                            (unsigned)im->samples_per_pixel);
    }
    uint64_t tiles_x = ((uint64_t)xsiz - xto + xt - 1) / xt;
    uint64_t tiles_y = ((uint64_t)ysiz - yto + yt - 1) / yt;
    if (tiles_x * tiles_y > J2K_MAX_TILES) {
        return ag_error_set(err, AG_ERR_LIMIT, "jpeg 2000: %" PRIu64 " tiles"
                            " (cap %u)", tiles_x * tiles_y, J2K_MAX_TILES);
    }
    for (unsigned c = 0; c < csiz; c++) {
        const uint8_t *p = s + 38 + 3 * c;
        unsigned prec = (p[0] & 0x7Fu) + 1u;
        if (p[1] != 1 || p[2] != 1) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: "
                                "component %u is subsampled %ux%u", c,
                                (unsigned)p[1], (unsigned)p[2]);
        }
        if (prec > im->bits_allocated) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: component %u "
                                "has %u bits; image allocates %u", c, prec,
                                (unsigned)im->bits_allocated);
        }
    }
    return AG_OK;
}

/* Check the image OpenJPEG built (after read_header and after decode). */
static int check_opj_image(const CodecImage *im, const opj_image_t *img,
                           bool decoded, AgError *err)
{
    if (img == NULL || img->numcomps != im->samples_per_pixel ||
        img->x1 <= img->x0 || img->y1 <= img->y0 ||
        img->x1 - img->x0 != im->columns || img->y1 - img->y0 != im->rows) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: decoded image "
                            "does not match %" PRIu32 "x%" PRIu32 "x%u",
                            im->columns, im->rows,
                            (unsigned)im->samples_per_pixel);
    }
    for (unsigned c = 0; c < img->numcomps; c++) {
        const opj_image_comp_t *k = &img->comps[c];
        if (k->dx != 1 || k->dy != 1) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: "
                                "component %u is subsampled", c);
        }
        if (k->prec < 1 || k->prec > im->bits_allocated) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: component %u"
                                " has %u bits", c, (unsigned)k->prec);
        }
        if (decoded && (k->w != im->columns || k->h != im->rows ||
                        k->data == NULL || k->factor != 0)) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg 2000: component %u"
                                " decoded to %ux%u", c, (unsigned)k->w,
                                (unsigned)k->h);
        }
    }
    return AG_OK;
}

/* ---- decode ----------------------------------------------------------- */

static void pack(const CodecImage *im, const opj_image_t *img, uint8_t *out)
{
    unsigned bits = im->bits_stored;
    int64_t lo = im->is_signed ? -((int64_t)1 << (bits - 1)) : 0;
    int64_t hi = im->is_signed ? ((int64_t)1 << (bits - 1)) - 1
                               : ((int64_t)1 << bits) - 1;
    uint32_t mask = (uint32_t)(((uint64_t)1 << bits) - 1);
    size_t npix = (size_t)im->rows * im->columns;
    unsigned spp = im->samples_per_pixel;
    for (unsigned c = 0; c < spp; c++) {
        const OPJ_INT32 *d = img->comps[c].data;
        bool reinterpret = (img->comps[c].sgnd != 0) != im->is_signed;
        for (size_t i = 0; i < npix; i++) {
            int64_t v = d[i];
            if (reinterpret) {
                /* PS3.5 §8.2.4 note: the data set's signedness wins. */
                v = (uint32_t)v & mask;
                if (im->is_signed && v > hi) {
                    v -= (int64_t)1 << bits;
                }
            } else if (v < lo) {
                v = lo;
            } else if (v > hi) {
                v = hi;
            }
            uint16_t u = (uint16_t)(uint32_t)v;   /* two's complement */
            size_t at = i * spp + c;
            if (im->bits_allocated == 8) {
                out[at] = (uint8_t)u;
            } else {
                out[2 * at] = (uint8_t)u;
                out[2 * at + 1] = (uint8_t)(u >> 8);
            }
        }
    }
}

int codec__j2k_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err)
{
    int rc = check_image(im, out_len, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (in == NULL) {
        n = 0;
    }
    const uint8_t *cs = in;
    size_t cs_len = n;
    OPJ_CODEC_FORMAT fmt = OPJ_CODEC_J2K;
    if (n >= sizeof JP2_SIGNATURE &&
        memcmp(in, JP2_SIGNATURE, sizeof JP2_SIGNATURE) == 0) {
        /* Not DICOM (PS3.5 §8.2.4 wants a bare codestream), but written
         * by older GDCM: decode the JP2 file as such. */
        fmt = OPJ_CODEC_JP2;
        rc = jp2_codestream(in, n, &cs, &cs_len, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    rc = check_siz(im, cs, cs_len, err);
    if (rc != AG_OK) {
        return rc;
    }

    J2kMsg msg = {.have = false};
    MemReader r = {.p = in, .n = n, .pos = 0};
    opj_image_t *img = NULL;
    opj_stream_t *st = NULL;
    opj_codec_t *codec = opj_create_decompress(fmt);
    if (codec == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg 2000: decoder");
    }
    set_handlers(codec, &msg);
    opj_dparameters_t par;
    opj_set_default_decoder_parameters(&par);
    if (!opj_setup_decoder(codec, &par) ||
        !opj_decoder_set_strict_mode(codec, OPJ_TRUE)) {
        rc = opj_fail(err, AG_ERR_NOMEM, &msg, "decoder setup");
        goto done;
    }
    st = opj_stream_create(n < OPJ_J2K_STREAM_CHUNK_SIZE
                               ? (n < 4096 ? 4096 : n)
                               : OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    if (st == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "jpeg 2000: stream");
        goto done;
    }
    opj_stream_set_read_function(st, mem_read);
    opj_stream_set_skip_function(st, mem_read_skip);
    opj_stream_set_seek_function(st, mem_read_seek);
    opj_stream_set_user_data(st, &r, NULL);
    opj_stream_set_user_data_length(st, n);

    if (!opj_read_header(st, codec, &img)) {
        rc = opj_fail(err, AG_ERR_PARSE, &msg, "header");
        goto done;
    }
    rc = check_opj_image(im, img, false, err);
    if (rc != AG_OK) {
        goto done;
    }
    if (!opj_decode(codec, st, img) || !opj_end_decompress(codec, st)) {
        rc = opj_fail(err, AG_ERR_PARSE, &msg, "decode");
        goto done;
    }
    rc = check_opj_image(im, img, true, err);
    if (rc != AG_OK) {
        goto done;
    }
    pack(im, img, out);
    rc = AG_OK;
done:
    opj_image_destroy(img);
    opj_stream_destroy(st);
    opj_destroy_codec(codec);
    if (rc != AG_OK && out != NULL) {
        memset(out, 0, out_len);    /* never a partial frame */
    }
    return rc;
}

/* ---- encode ----------------------------------------------------------- */

/* Native samples as integers: masked to bits_stored, sign-extended when
 * signed (the low bits_stored bits are the value, PS3.5 §8.1.1). */
static void unpack(const CodecImage *im, const uint8_t *in, opj_image_t *img)
{
    unsigned bits = im->bits_stored;
    uint32_t mask = (uint32_t)(((uint64_t)1 << bits) - 1);
    uint32_t sign = (uint32_t)1 << (bits - 1);
    size_t npix = (size_t)im->rows * im->columns;
    unsigned spp = im->samples_per_pixel;
    for (unsigned c = 0; c < spp; c++) {
        OPJ_INT32 *d = img->comps[c].data;
        for (size_t i = 0; i < npix; i++) {
            size_t at = i * spp + c;
            uint32_t u = im->bits_allocated == 8
                             ? in[at]
                             : (uint32_t)(in[2 * at] | in[2 * at + 1] << 8);
            u &= mask;
            int32_t v = (int32_t)u;
            if (im->is_signed && (u & sign) != 0) {
                v = (int32_t)u - (int32_t)(mask + 1);
            }
            d[i] = v;
        }
    }
}

/* Resolutions such that the smallest level is at least one sample. */
static int resolutions(uint32_t w, uint32_t h)
{
    uint32_t m = w < h ? w : h;
    int r = 1;
    while (r < J2K_MAX_RESOLUTIONS && (m >> r) > 0) {
        r++;
    }
    return r;
}

int codec__j2k_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      bool lossless, AgBuf *out, AgError *err)
{
    int rc = check_image(im, n, err);
    if (rc != AG_OK) {
        return rc;
    }
    unsigned spp = im->samples_per_pixel;
    opj_image_cmptparm_t cp[3];
    memset(cp, 0, sizeof cp);
    for (unsigned c = 0; c < spp; c++) {
        cp[c].dx = 1;
        cp[c].dy = 1;
        cp[c].w = im->columns;
        cp[c].h = im->rows;
        cp[c].prec = im->bits_stored;
        cp[c].sgnd = im->is_signed ? 1 : 0;
    }
    opj_image_t *img = opj_image_create(spp, cp, spp == 3 ? OPJ_CLRSPC_SRGB
                                                          : OPJ_CLRSPC_GRAY);
    if (img == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg 2000: %" PRIu32 "x%"
                            PRIu32 " image", im->columns, im->rows);
    }
    img->x0 = 0;
    img->y0 = 0;
    img->x1 = im->columns;
    img->y1 = im->rows;
    unpack(im, in, img);

    J2kMsg msg = {.have = false};
    MemWriter w = {.b = out, .base = out->len, .pos = 0, .rc = AG_OK};
    opj_stream_t *st = NULL;
    opj_codec_t *codec = opj_create_compress(OPJ_CODEC_J2K);
    if (codec == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "jpeg 2000: encoder");
        goto done;
    }
    set_handlers(codec, &msg);
    opj_cparameters_t par;
    opj_set_default_encoder_parameters(&par);
    par.tcp_numlayers = 1;
    par.cp_disto_alloc = 1;
    /* .90: reversible 5/3, every bit (rate 0); .91: irreversible 9/7. */
    par.irreversible = lossless ? 0 : 1;
    par.tcp_rates[0] = lossless ? 0.0f : J2K_LOSSY_RATIO;
    par.numresolution = resolutions(im->columns, im->rows);
    par.tcp_mct = spp == 3 ? 1 : 0;   /* RCT (.90) or ICT (.91) */
    if (!opj_setup_encoder(codec, &par, img)) {
        rc = opj_fail(err, AG_ERR_INVALID, &msg, "encoder setup");
        goto done;
    }
    st = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_FALSE);
    if (st == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "jpeg 2000: stream");
        goto done;
    }
    opj_stream_set_write_function(st, mem_write);
    opj_stream_set_skip_function(st, mem_write_skip);
    opj_stream_set_seek_function(st, mem_write_seek);
    opj_stream_set_user_data(st, &w, NULL);
    if (!opj_start_compress(codec, img, st) || !opj_encode(codec, st) ||
        !opj_end_compress(codec, st)) {
        rc = w.rc != AG_OK ? ag_error_set(err, w.rc, "jpeg 2000: output "
                                          "buffer")
                           : opj_fail(err, AG_ERR_INVALID, &msg, "encode");
        goto done;
    }
    if ((out->len - w.base) % 2 != 0) {
        uint8_t zero = 0x00;   /* PS3.5 A.4: pad after EOC */
        rc = ag_buf_append(out, &zero, 1);
        if (rc != AG_OK) {
            rc = ag_error_set(err, rc, "jpeg 2000: output buffer");
            goto done;
        }
    }
    rc = AG_OK;
done:
    if (rc != AG_OK) {
        out->len = w.base;     /* no partial fragment */
    }
    opj_stream_destroy(st);
    opj_destroy_codec(codec);
    opj_image_destroy(img);
    return rc;
}
