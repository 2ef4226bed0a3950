/*
 * jpeg12.c — JPEG Extended with 12-bit samples: ITU T.81 process 4,
 * sequential DCT with Huffman coding (SOF1, and SOF0 with P = 12, which
 * the IJG library accepts too), DICOM 1.2.840.10008.1.2.4.51 (PS3.5
 * §8.2.1).  8-bit streams stay with libjpeg-turbo (jpeg.c); codec.c sends a
 * stream here when its frame header says P = 12.
 *
 * Hand-written because Debian 12's libjpeg-turbo (2.1.5) is built for 8-bit
 * samples only (12 bits arrived in 3.0), and the 12-bit IJG builds that
 * DICOM toolkits carry (DCMTK's libijg12, GDCM's) are not packaged as
 * libraries.
 *
 * The output is bit-exact with the IJG library in its 12-bit build as
 * DCMTK's dcmdjpeg runs it (default "islow" DCT, "fancy" upsampling), so it
 * repeats that library's arithmetic, not only the standard's:
 *   - dequantization and the accurate integer IDCT (the Loeffler-
 *     Ligtenberg-Moschytz factorisation, 13-bit fixed-point constants, one
 *     extra bit of precision kept between the column and the row pass for
 *     12-bit data), each output rounded, level-shifted by 2048 (T.81 A.3.1)
 *     and range-limited through the IJG wrap-around table;
 *   - chroma upsampling by a triangle filter for 2:1 horizontal (4:2:2) and
 *     2:1 both ways (4:2:0), sample replication for other integral ratios;
 *   - YCbCr -> RGB with the JFIF equations in 16-bit fixed point.
 *
 * Supported: 1 or 3 components, sampling factors 1..4 with integral ratios,
 * interleaved and non-interleaved scans, restart intervals, 8- and 16-bit
 * quantization tables (redefinable between scans), Huffman tables
 * (idem).  Refused with AG_ERR_UNSUPPORTED: progressive, arithmetic,
 * lossless and hierarchical frames, DNL.
 *
 * The input is hostile (SECURITY.md rule 8): every marker length is checked
 * against what remains, Huffman tables are validated before use, the frame
 * header is checked against the CodecImage (dimensions, components, bit
 * depth) before anything is allocated, and every block consumes at least
 * two real entropy-coded bits, so the work is bounded by the input size.
 * Entropy-coded data that ends early or holds a code not in its table is an
 * error (where libjpeg would warn and pad), as in jpeg.c.
 */
#include "codec_int.h"
#include "jpeg_huff.h"

#include <inttypes.h>
#include <string.h>

#define MAX_COMP 3
#define MAX_BLOCKS_IN_MCU 10      /* T.81 B.2.3 */

/* Zig-zag sequence index -> natural (row-major) index (T.81 Figure A.6).
 * Sixteen extra entries map a run that overshoots position 63 onto 63, as
 * the IJG decoder does, so such a stream decodes as it does there. */
static const uint8_t NATURAL[64 + 16] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
};

typedef struct Comp {
    uint8_t id;
    int h, v;                     /* sampling factors */
    int tq;                       /* quantization table selector */
    uint32_t w, ht;               /* samples: ceil(X * h / Hmax), ... */
    size_t stride;                /* plane row length (whole MCUs) */
    uint16_t *plane;              /* decoded samples, 0..4095 */
    int32_t q[64];                /* table latched at the scan, natural */
    const JpegHuff *dc, *ac;
    int32_t pred;                 /* DC prediction (T.81 F.2.1.3.1) */
    bool done;                    /* decoded by an earlier scan */
} Comp;

typedef struct Ctx {
    const CodecImage *im;
    const uint8_t *in;
    size_t n;
    size_t pos;                   /* next unread byte of in */
    uint32_t rows, cols;
    int ncomp;
    int hmax, vmax;
    uint32_t mcux, mcuy;          /* MCUs of an interleaved scan */
    Comp comp[MAX_COMP];
    JpegHuff dc[4], ac[4];
    uint16_t qt[4][64];           /* natural order */
    bool qt_defined[4];
    uint32_t restart_interval;    /* MCUs; 0: none */
    bool have_sof;
    bool jfif, adobe;
    int adobe_transform;
    AgError *err;
} Ctx;

/* ---- entropy-coded bits (T.81 F.2.2.5, B.1.1.5) ------------------------ */

/* A JpegBits (jpeg_huff.h).  Every block consumes at least two real
 * bits, so a stream that ends early is caught at the block that needs
 * them. */

/* ---- errors and small readers ------------------------------------------- */

static int fail(Ctx *c, size_t pos, const char *what)
{
    return ag_error_set(c->err, AG_ERR_PARSE,
                        "jpeg 12-bit: %s at offset %zu", what, pos);
}

/* ---- Huffman tables ----------------------------------------------------- */

/* T.81 F.2.2.1 EXTEND: v is an s-bit (s >= 1) magnitude category value. */
static inline int32_t extend(int32_t v, int s)
{
    return v < ((int32_t)1 << (s - 1)) ? v - ((int32_t)1 << s) + 1 : v;
}

enum { SYM_OK = 0, SYM_BAD_CODE, SYM_SHORT };

/*
 * One Huffman symbol and the (symbol & 15) bits of value that follow it
 * (T.81 F.2.2.1 for DC, whose symbols are checked to be <= 15, and F.2.2.2
 * for AC), extended to a signed value.  One refill covers both: a code is
 * at most 16 bits and a value 15.  SYM_BAD_CODE for a code not in the
 * table, SYM_SHORT when fewer real bits remain than the two need.
 */
static inline int sym_value(JpegBits *b, const JpegHuff *t, int *sym, int32_t *val)
{
    if (b->nbits < 32) {
        jpeg_bits_fill(b);
    }
    int len;
    uint16_t e = t->lut[b->acc >> (64 - JPEG_LUT_BITS)];
    if (e != 0) {
        len = e >> 8;
        *sym = e & 0xFF;
    } else {
        for (len = JPEG_LUT_BITS + 1; len <= 16; len++) {
            int32_t code = (int32_t)(b->acc >> (64 - len));
            if (code <= t->maxcode[len]) {
                *sym = t->vals[code + t->valoff[len]];
                break;
            }
        }
        if (len > 16) {
            return b->nbits < 16 ? SYM_SHORT : SYM_BAD_CODE;
        }
    }
    int s = *sym & 0x0F;
    if (len + s > b->nbits) {
        return SYM_SHORT;
    }
    *val = s == 0 ? 0
                  : extend((int32_t)((b->acc << len) >> (64 - s)), s);
    b->acc <<= len + s;
    b->nbits -= len + s;
    return SYM_OK;
}

/* ---- marker segments ---------------------------------------------------- */

/* DHT (T.81 B.2.4.2); p/len: the segment body after the length field. */
static int read_dht(Ctx *c, const uint8_t *p, size_t len, size_t at)
{
    while (len > 0) {
        int tc, th;
        size_t used;
        const char *why = jpeg_dht_next(p, len, &tc, &th, &used);
        if (why != NULL) {
            return fail(c, at, why);
        }
        if (!jpeg_huff_load(tc == 0 ? &c->dc[th] : &c->ac[th], p)) {
            return fail(c, at, "huffman code lengths overflow");
        }
        p += used;
        len -= used;
    }
    return AG_OK;
}

/* DQT (T.81 B.2.4.1): 8-bit (Pq 0) or 16-bit (Pq 1) elements, zig-zag. */
static int read_dqt(Ctx *c, const uint8_t *p, size_t len, size_t at)
{
    while (len > 0) {
        int pq = p[0] >> 4;
        int tq = p[0] & 0x0F;
        size_t need = 1 + 64 * (size_t)(pq + 1);
        if (pq > 1 || tq > 3) {
            return fail(c, at, "bad quantization table precision or id");
        }
        if (len < need) {
            return fail(c, at, "quantization table longer than its segment");
        }
        for (int k = 0; k < 64; k++) {
            c->qt[tq][NATURAL[k]] = pq == 0 ? p[1 + k] : jpeg_rd16(p + 1 + 2 * k);
        }
        c->qt_defined[tq] = true;
        p += need;
        len -= need;
    }
    return AG_OK;
}

static uint32_t ceil_div(uint32_t a, uint32_t b)
{
    return (uint32_t)(((uint64_t)a + b - 1) / b);
}

/* Component geometry and sample planes, once the frame header is read. */
static int frame_setup(Ctx *c)
{
    c->mcux = ceil_div(c->cols, 8u * (uint32_t)c->hmax);
    c->mcuy = ceil_div(c->rows, 8u * (uint32_t)c->vmax);
    for (int i = 0; i < c->ncomp; i++) {
        Comp *k = &c->comp[i];
        if (c->hmax % k->h != 0 || c->vmax % k->v != 0) {
            return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: "
                                "component %d sampling %dx%d is not an "
                                "integral fraction of %dx%d", i, k->h, k->v,
                                c->hmax, c->vmax);
        }
        /* T.81 A.1.1: x_i = ceil(X * H_i / Hmax). */
        k->w = ceil_div(c->cols * (uint32_t)k->h, (uint32_t)c->hmax);
        k->ht = ceil_div(c->rows * (uint32_t)k->v, (uint32_t)c->vmax);
        k->stride = (size_t)c->mcux * (size_t)k->h * 8u;
        size_t prow = (size_t)c->mcuy * (size_t)k->v * 8u;
        /* Rows and columns <= 65535 and factors <= 4: no overflow, and
         * the planes together are at most a few times the frame the
         * caller accepted. */
        k->plane = ag_calloc(k->stride * prow, sizeof *k->plane);
        if (k->plane == NULL) {
            return ag_error_set(c->err, AG_ERR_NOMEM, "jpeg 12-bit: no "
                                "memory for a %zux%zu component plane",
                                k->stride, prow);
        }
    }
    return AG_OK;
}

/* SOF0 / SOF1 (T.81 B.2.2), checked against the CodecImage. */
static int read_sof(Ctx *c, const uint8_t *p, size_t len, size_t at)
{
    const CodecImage *im = c->im;
    if (c->have_sof) {
        return fail(c, at, "second frame header");
    }
    if (len < 6 || len != 6 + 3 * (size_t)p[5]) {
        return fail(c, at, "frame header length does not match components");
    }
    int prec = p[0];
    uint32_t y = jpeg_rd16(p + 1);
    uint32_t x = jpeg_rd16(p + 3);
    int nf = p[5];
    if (prec != 12) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: "
                            "precision %d is not 12", prec);
    }
    if (y == 0) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: "
                            "number of lines 0 (DNL) is not supported");
    }
    if (y != im->rows || x != im->columns || x == 0 ||
        nf != im->samples_per_pixel || im->bits_allocated != 16) {
        return ag_error_set(c->err, AG_ERR_PARSE, "jpeg 12-bit: frame is %"
                            PRIu32 "x%" PRIu32 ", %d components, 12 bits; "
                            "image says %" PRIu32 "x%" PRIu32 ", %u samples,"
                            " %u bits allocated", x, y, nf, im->columns,
                            im->rows, (unsigned)im->samples_per_pixel,
                            (unsigned)im->bits_allocated);
    }
    c->hmax = 1;
    c->vmax = 1;
    for (int i = 0; i < nf; i++) {
        const uint8_t *q = p + 6 + 3 * i;
        for (int j = 0; j < i; j++) {
            if (c->comp[j].id == q[0]) {
                return fail(c, at, "duplicate component id");
            }
        }
        int h = q[1] >> 4;
        int v = q[1] & 0x0F;
        if (h < 1 || h > 4 || v < 1 || v > 4 || q[2] > 3) {
            return fail(c, at, "bad sampling factor or table selector");
        }
        c->comp[i] = (Comp){.id = q[0], .h = h, .v = v, .tq = q[2]};
        c->hmax = h > c->hmax ? h : c->hmax;
        c->vmax = v > c->vmax ? v : c->vmax;
    }
    if (nf == 1) {
        /* One component: its factors do not matter (T.81 A.2.2). */
        c->comp[0].h = c->comp[0].v = 1;
        c->hmax = c->vmax = 1;
    }
    c->rows = y;
    c->cols = x;
    c->ncomp = nf;
    c->have_sof = true;
    return frame_setup(c);
}

/* ---- the inverse DCT ---------------------------------------------------- */

/*
 * Dequantize and inverse-transform one block (T.81 A.3.3), writing 8x8
 * level-shifted, range-limited samples to out.  The arithmetic is that of
 * IJG's accurate integer IDCT, which dcmdjpeg's output is compared with:
 * constants scaled by 2^13, a column pass kept at 2^1 (PASS1) above the
 * final scale, a row pass that also removes the 2^3 of the 8-point
 * transform.  Wider-than-32-bit intermediates (the IJG code's INT32 is a
 * long on LP64) are int64_t here; the column results are stored in 32 bits
 * as there.
 */
#define CONST_BITS 13
#define PASS1_BITS 1
#define C_0_298631336 2446        /* round(x * 2^13) */
#define C_0_390180644 3196
#define C_0_541196100 4433
#define C_0_765366865 6270
#define C_0_899976223 7373
#define C_1_175875602 9633
#define C_1_501321110 12299
#define C_1_847759065 15137
#define C_1_961570560 16069
#define C_2_053119869 16819
#define C_2_562915447 20995
#define C_3_072711026 25172

/* Round x / 2^n (n >= 1) to nearest, halves up; >> on negative int64_t is
 * arithmetic with gcc and clang. */
static inline int64_t descale(int64_t x, int n)
{
    return (x + ((int64_t)1 << (n - 1))) >> n;
}

static inline int32_t wrap32(int64_t x)
{
    return (int32_t)(uint32_t)(uint64_t)x;
}

/*
 * The range limit after the row pass: x is the transform output before the
 * level shift; IJG indexes a table by x & (4 * 4096 - 1), giving x + 2048
 * for -2048 <= x < 2048, 4095 above, 0 below, wrapping around beyond
 * +-8192 (only corrupt streams get there; repeated for bit-exactness).
 */
static inline uint16_t range_limit(int64_t x)
{
    if ((uint64_t)(x + 2048) < 4096) {
        return (uint16_t)(x + 2048);        /* the usual case */
    }
    uint32_t t = (uint32_t)((uint64_t)x & 16383u);
    if (t < 2048) {
        return (uint16_t)(t + 2048);
    }
    if (t < 8192) {
        return 4095;
    }
    if (t < 14336) {
        return 0;
    }
    return (uint16_t)(t - 14336);
}

/* The even and odd halves of the 8-point IDCT on s[0..7] (each an int64_t
 * already scaled as its pass needs), giving o[0..7] before descaling. */
static inline void idct_1d(const int64_t s[8], int64_t o[8])
{
    /* Even part: rotation of inputs 2 and 6 by sqrt(2)*c(6). */
    int64_t z1 = (s[2] + s[6]) * C_0_541196100;
    int64_t t2 = z1 - s[6] * C_1_847759065;
    int64_t t3 = z1 + s[2] * C_0_765366865;
    int64_t t0 = (s[0] + s[4]) * ((int64_t)1 << CONST_BITS);
    int64_t t1 = (s[0] - s[4]) * ((int64_t)1 << CONST_BITS);
    int64_t e10 = t0 + t3, e13 = t0 - t3, e11 = t1 + t2, e12 = t1 - t2;

    /* Odd part: inputs 7, 5, 3, 1 (Figure 8 of Loeffler et al.). */
    int64_t a0 = s[7], a1 = s[5], a2 = s[3], a3 = s[1];
    int64_t y1 = a0 + a3, y2 = a1 + a2, y3 = a0 + a2, y4 = a1 + a3;
    int64_t z5 = (y3 + y4) * C_1_175875602;
    a0 *= C_0_298631336;
    a1 *= C_2_053119869;
    a2 *= C_3_072711026;
    a3 *= C_1_501321110;
    y1 *= -C_0_899976223;
    y2 *= -C_2_562915447;
    y3 = y3 * -C_1_961570560 + z5;
    y4 = y4 * -C_0_390180644 + z5;
    a0 += y1 + y3;
    a1 += y2 + y4;
    a2 += y2 + y3;
    a3 += y1 + y4;

    o[0] = e10 + a3;
    o[7] = e10 - a3;
    o[1] = e11 + a2;
    o[6] = e11 - a2;
    o[2] = e12 + a1;
    o[5] = e12 - a1;
    o[3] = e13 + a0;
    o[4] = e13 - a0;
}

static void idct_islow(const int16_t coef[64], const int32_t q[64],
                       uint16_t *out, size_t stride)
{
    int32_t ws[64];
    int64_t s[8], o[8];
    for (int x = 0; x < 8; x++) {        /* pass 1: columns */
        bool ac_zero = true;
        for (int y = 1; y < 8; y++) {
            ac_zero = ac_zero && coef[8 * y + x] == 0;
        }
        if (ac_zero) {
            /* Only the DC term: every output is DC * 2^PASS1 (the full
             * computation gives the same). */
            int32_t dc = wrap32((int64_t)coef[x] * q[x] * (1 << PASS1_BITS));
            for (int y = 0; y < 8; y++) {
                ws[8 * y + x] = dc;
            }
            continue;
        }
        for (int y = 0; y < 8; y++) {
            s[y] = (int64_t)coef[8 * y + x] * q[8 * y + x];
        }
        idct_1d(s, o);
        for (int y = 0; y < 8; y++) {
            ws[8 * y + x] = wrap32(descale(o[y], CONST_BITS - PASS1_BITS));
        }
    }
    for (int y = 0; y < 8; y++) {        /* pass 2: rows */
        const int32_t *r = ws + 8 * y;
        uint16_t *d = out + (size_t)y * stride;
        if ((r[1] | r[2] | r[3] | r[4] | r[5] | r[6] | r[7]) == 0) {
            uint16_t v = range_limit(descale(r[0], PASS1_BITS + 3));
            for (int x = 0; x < 8; x++) {
                d[x] = v;
            }
            continue;
        }
        for (int x = 0; x < 8; x++) {
            s[x] = r[x];
        }
        idct_1d(s, o);
        for (int x = 0; x < 8; x++) {
            d[x] = range_limit(descale(o[x], CONST_BITS + PASS1_BITS + 3));
        }
    }
}

/* ---- scans -------------------------------------------------------------- */

/* One block's Huffman-coded coefficients (T.81 F.2.2.1, F.2.2.2). */
static int decode_block(Ctx *c, JpegBits *b, Comp *k, int16_t coef[64])
{
    size_t at = b->pos;
    memset(coef, 0, 64 * sizeof *coef);
    int sym;
    int32_t v;
    int rc = sym_value(b, k->dc, &sym, &v);
    if (rc != SYM_OK) {
        goto bad;
    }
    /* The prediction may drift on a hostile stream: wrap, as a C int on
     * the machines the IJG library runs on; the coefficient keeps the low
     * 16 bits as its JCOEF does. */
    k->pred = (int32_t)((uint32_t)k->pred + (uint32_t)v);
    coef[0] = (int16_t)(uint16_t)(uint32_t)k->pred;
    for (int i = 1; i < 64; i++) {
        rc = sym_value(b, k->ac, &sym, &v);
        if (rc != SYM_OK) {
            goto bad;
        }
        int r = sym >> 4;
        if ((sym & 0x0F) == 0) {
            if (r != 15) {
                break;            /* EOB */
            }
            i += 15;              /* ZRL: sixteen zeros */
            continue;
        }
        i += r;
        coef[NATURAL[i]] = (int16_t)v;
    }
    return AG_OK;
bad:
    return fail(c, at, rc == SYM_SHORT ? "entropy-coded data ends early"
                                       : "invalid huffman code");
}

static int block_at(Ctx *c, JpegBits *b, Comp *k, uint32_t bx, uint32_t by)
{
    int16_t coef[64];
    int rc = decode_block(c, b, k, coef);
    if (rc == AG_OK) {
        idct_islow(coef, k->q, k->plane + (size_t)by * 8 * k->stride +
                                   (size_t)bx * 8, k->stride);
    }
    return rc;
}

/* Expect RSTm at the byte-aligned position after b (T.81 F.2.1.3.1). */
static int restart(Ctx *c, JpegBits *b, int *next_rst)
{
    jpeg_bits_to_marker(b);
    size_t m = b->pos;
    while (m + 2 < c->n && c->in[m + 1] == 0xFF) {
        m++;                      /* fill bytes before the marker */
    }
    if (m + 1 >= c->n || c->in[m + 1] != (uint8_t)(JPEG_RST0 + *next_rst)) {
        return fail(c, m, "restart marker expected");
    }
    *b = (JpegBits){.in = c->in, .end = c->n, .pos = m + 2};
    *next_rst = (*next_rst + 1) & 7;
    return AG_OK;
}

/* SOS (T.81 B.2.3) and its entropy-coded data; c->pos is just past the
 * SOS segment on entry and at the marker that ends the scan on return. */
static int read_scan(Ctx *c, const uint8_t *p, size_t len, size_t at)
{
    if (!c->have_sof) {
        return fail(c, at, "scan before frame header");
    }
    if (len < 1 || len != 4 + 2 * (size_t)p[0]) {
        return fail(c, at, "scan header length does not match components");
    }
    int ns = p[0];
    if (ns < 1 || ns > c->ncomp) {
        return fail(c, at, "bad number of scan components");
    }
    Comp *sc[MAX_COMP];
    int blocks = 0;
    for (int i = 0; i < ns; i++) {
        uint8_t id = p[1 + 2 * i];
        int td = p[2 + 2 * i] >> 4;
        int ta = p[2 + 2 * i] & 0x0F;
        int k = 0;
        while (k < c->ncomp && c->comp[k].id != id) {
            k++;
        }
        if (k == c->ncomp) {
            return fail(c, at, "scan names an unknown component");
        }
        Comp *cp = &c->comp[k];
        if (cp->done) {
            return fail(c, at, "component coded twice");
        }
        for (int j = 0; j < i; j++) {
            if (sc[j] == cp) {
                return fail(c, at, "component repeated in scan");
            }
        }
        if (td > 3 || ta > 3 || !c->dc[td].defined || !c->ac[ta].defined) {
            return fail(c, at, "scan uses an undefined huffman table");
        }
        for (int v = 0; v < c->dc[td].nvals; v++) {
            if (c->dc[td].vals[v] > 15) {  /* T.81 F.1.2.1.1: SSSS <= 15 */
                return fail(c, at, "dc huffman table has a category above "
                            "15");
            }
        }
        if (!c->qt_defined[cp->tq]) {
            return fail(c, at, "component uses an undefined quantization "
                        "table");
        }
        for (int j = 0; j < 64; j++) {
            cp->q[j] = c->qt[cp->tq][j];
        }
        cp->dc = &c->dc[td];
        cp->ac = &c->ac[ta];
        cp->pred = 0;
        sc[i] = cp;
        blocks += cp->h * cp->v;
    }
    /* Ss, Se, Ah/Al (p[1 + 2 * ns ...]) should be 0, 63, 0 in a
     * sequential frame; some encoders write zeros (pydicom's JPEG-lossy
     * sample).  The IJG library only warns and decodes the scan as
     * sequential: so do we. */
    if (ns > 1 && blocks > MAX_BLOCKS_IN_MCU) {
        return fail(c, at, "more than 10 blocks in an mcu");
    }

    /* T.81 A.2: one component alone is coded block by block over its own
     * extent; several are interleaved in MCUs of h x v blocks each. */
    uint32_t mw = ns == 1 ? ceil_div(sc[0]->w, 8) : c->mcux;
    uint32_t mh = ns == 1 ? ceil_div(sc[0]->ht, 8) : c->mcuy;
    uint64_t total = (uint64_t)mw * mh;
    JpegBits b = {.in = c->in, .end = c->n, .pos = c->pos};
    uint32_t ri = c->restart_interval;
    int next_rst = 0;
    int rc = AG_OK;
    for (uint64_t m = 0; m < total && rc == AG_OK; m++) {
        if (ri != 0 && m != 0 && m % ri == 0) {
            rc = restart(c, &b, &next_rst);
            for (int i = 0; i < ns; i++) {
                sc[i]->pred = 0;
            }
            if (rc != AG_OK) {
                break;
            }
        }
        uint32_t mx = (uint32_t)(m % mw);
        uint32_t my = (uint32_t)(m / mw);
        if (ns == 1) {
            rc = block_at(c, &b, sc[0], mx, my);
            continue;
        }
        for (int i = 0; i < ns && rc == AG_OK; i++) {
            Comp *k = sc[i];
            for (int by = 0; by < k->v && rc == AG_OK; by++) {
                for (int bx = 0; bx < k->h && rc == AG_OK; bx++) {
                    rc = block_at(c, &b, k, mx * (uint32_t)k->h + (uint32_t)bx,
                                  my * (uint32_t)k->v + (uint32_t)by);
                }
            }
        }
    }
    if (rc != AG_OK) {
        return rc;
    }
    jpeg_bits_to_marker(&b);           /* padding bits (F.1.2.3) */
    c->pos = b.pos;
    for (int i = 0; i < ns; i++) {
        sc[i]->done = true;
    }
    return AG_OK;
}

/* ---- output: upsampling and colour -------------------------------------- */

/* Row y (0..ht-1 clamped) of a component, full width w. */
static inline const uint16_t *crow(const Comp *k, int64_t y)
{
    if (y < 0) {
        y = 0;
    }
    if (y >= (int64_t)k->ht) {
        y = (int64_t)k->ht - 1;
    }
    return k->plane + (size_t)y * k->stride;
}

/* Output row y of component k at full resolution into dst[0..cols), with
 * the IJG upsamplers: triangle filters for 2:1 (h2v1) and 2:1 x 2:1
 * (h2v2) when the component is wider than 2 samples, else replication. */
static void upsample_row(const Ctx *c, const Comp *k, uint32_t y,
                         uint16_t *dst, uint16_t *tmp)
{
    int hx = c->hmax / k->h;
    int vx = c->vmax / k->v;
    uint32_t w = k->w;
    const uint16_t *in = crow(k, y / (uint32_t)vx);
    if (hx == 1 && vx == 1) {
        memcpy(dst, in, c->cols * sizeof *dst);
        return;
    }
    bool fancy = hx == 2 && (vx == 1 || vx == 2) && w > 2;
    if (!fancy) {
        for (uint32_t x = 0; x < c->cols; x++) {
            dst[x] = in[x / (uint32_t)hx];
        }
        return;
    }
    uint16_t *o = tmp;            /* 2 * w samples, then cropped */
    if (vx == 1) {
        /* Each output pair weighs its sample 3/4 and the nearer neighbour
         * 1/4, rounding biases alternating 1 and 2. */
        o[0] = in[0];
        o[1] = (uint16_t)((in[0] * 3 + in[1] + 2) >> 2);
        for (uint32_t i = 1; i + 1 < w; i++) {
            int32_t v = in[i] * 3;
            o[2 * i] = (uint16_t)((v + in[i - 1] + 1) >> 2);
            o[2 * i + 1] = (uint16_t)((v + in[i + 1] + 2) >> 2);
        }
        o[2 * w - 2] = (uint16_t)((in[w - 1] * 3 + in[w - 2] + 1) >> 2);
        o[2 * w - 1] = in[w - 1];
    } else {
        /* Vertical 3/4 - 1/4 with the nearer input row (the edge rows
         * repeat), then horizontal as above on the column sums; biases 8
         * and 7 alternate. */
        uint32_t iy = y / 2;
        const uint16_t *nb = crow(k, (y & 1) ? (int64_t)iy + 1
                                             : (int64_t)iy - 1);
        int32_t this_s = in[0] * 3 + nb[0];
        int32_t next_s = in[1] * 3 + nb[1];
        o[0] = (uint16_t)((this_s * 4 + 8) >> 4);
        o[1] = (uint16_t)((this_s * 3 + next_s + 7) >> 4);
        int32_t last_s = this_s;
        this_s = next_s;
        for (uint32_t i = 1; i + 1 < w; i++) {
            next_s = in[i + 1] * 3 + nb[i + 1];
            o[2 * i] = (uint16_t)((this_s * 3 + last_s + 8) >> 4);
            o[2 * i + 1] = (uint16_t)((this_s * 3 + next_s + 7) >> 4);
            last_s = this_s;
            this_s = next_s;
        }
        o[2 * w - 2] = (uint16_t)((this_s * 3 + last_s + 8) >> 4);
        o[2 * w - 1] = (uint16_t)((this_s * 4 + 7) >> 4);
    }
    memcpy(dst, o, c->cols * sizeof *dst);
}

static inline uint16_t clamp12(int32_t v)
{
    return (uint16_t)(v < 0 ? 0 : v > 4095 ? 4095 : v);
}

static inline void put16(uint8_t *d, uint16_t v)
{
    d[0] = (uint8_t)v;
    d[1] = (uint8_t)(v >> 8);
}

/*
 * Three components: YCbCr unless the stream says RGB — as libjpeg reads
 * it: JFIF means YCbCr, Adobe APP14 transform 0 RGB (1 or other YCbCr),
 * component ids 'R','G','B' RGB; without a signal a DICOM header saying RGB
 * means no colour transform (PS3.5 §8.2.1, as jpeg.c decides).
 */
static bool is_ycc(const Ctx *c)
{
    if (c->jfif) {
        return true;
    }
    if (c->adobe) {
        return c->adobe_transform != 0;
    }
    if (c->comp[0].id == 'R' && c->comp[1].id == 'G' &&
        c->comp[2].id == 'B') {
        return false;
    }
    return strcmp(c->im->photometric, "RGB") != 0;
}

/* YCbCr -> RGB (JFIF; T.871 §7) in 16-bit fixed point with rounding, the
 * fixed-point form IJG tabulates. */
#define YCC_R_CR 91881            /* round(1.402 * 2^16) */
#define YCC_B_CB 116130           /* round(1.772 * 2^16) */
#define YCC_G_CR 46802            /* round(0.71414 * 2^16) */
#define YCC_G_CB 22554            /* round(0.34414 * 2^16) */

static void ycc_to_rgb(const uint16_t *yy, const uint16_t *cb,
                       const uint16_t *cr, uint32_t n, uint8_t *out)
{
    for (uint32_t x = 0; x < n; x++) {
        int32_t y = yy[x];
        int32_t b = (int32_t)cb[x] - 2048;
        int32_t r = (int32_t)cr[x] - 2048;
        int32_t rr = (int32_t)(((int64_t)YCC_R_CR * r + 32768) >> 16);
        int32_t bb = (int32_t)(((int64_t)YCC_B_CB * b + 32768) >> 16);
        int32_t gg = (int32_t)((-(int64_t)YCC_G_CB * b + 32768 -
                                (int64_t)YCC_G_CR * r) >> 16);
        put16(out + 6 * (size_t)x, clamp12(y + rr));
        put16(out + 6 * (size_t)x + 2, clamp12(y + gg));
        put16(out + 6 * (size_t)x + 4, clamp12(y + bb));
    }
}

static int write_output(Ctx *c, uint8_t *out)
{
    size_t cols = c->cols;
    if (c->ncomp == 1) {
        const Comp *k = &c->comp[0];
        for (uint32_t y = 0; y < c->rows; y++) {
            const uint16_t *s = k->plane + (size_t)y * k->stride;
            uint8_t *d = out + (size_t)y * cols * 2;
            for (size_t x = 0; x < cols; x++) {
                put16(d + 2 * x, s[x]);
            }
        }
        return AG_OK;
    }
    /* Three rows at full resolution plus one upsampling scratch row. */
    size_t wmax = cols + 16;
    uint16_t *rows = ag_malloc(4 * wmax * sizeof *rows);
    if (rows == NULL) {
        return ag_error_set(c->err, AG_ERR_NOMEM, "jpeg 12-bit: no memory "
                            "for colour rows");
    }
    uint16_t *tmp = rows + 3 * wmax;
    bool ycc = is_ycc(c);
    for (uint32_t y = 0; y < c->rows; y++) {
        for (int i = 0; i < 3; i++) {
            upsample_row(c, &c->comp[i], y, rows + (size_t)i * wmax, tmp);
        }
        uint8_t *d = out + (size_t)y * cols * 6;
        if (ycc) {
            ycc_to_rgb(rows, rows + wmax, rows + 2 * wmax, c->cols, d);
            continue;
        }
        for (size_t x = 0; x < cols; x++) {
            for (int i = 0; i < 3; i++) {
                put16(d + 6 * x + 2 * (size_t)i, rows[(size_t)i * wmax + x]);
            }
        }
    }
    ag_free(rows);
    return AG_OK;
}

/* ---- the marker loop ---------------------------------------------------- */

static int segment(Ctx *c, int m, const uint8_t *p, size_t len, size_t at)
{
    switch (m) {
    case JPEG_SOF0:
    case JPEG_SOF1:
        return read_sof(c, p, len, at);
    case JPEG_DHT:
        return read_dht(c, p, len, at);
    case JPEG_DQT:
        return read_dqt(c, p, len, at);
    case JPEG_SOS:
        return read_scan(c, p, len, at);
    case JPEG_DRI:
        if (len != 2) {
            return fail(c, at, "restart interval segment is not 4 bytes");
        }
        c->restart_interval = jpeg_rd16(p);
        return AG_OK;
    case JPEG_APP0:
        if (len >= 5 && memcmp(p, "JFIF", 5) == 0) {
            c->jfif = true;
        }
        return AG_OK;
    case JPEG_APP14:
        if (len >= 12 && memcmp(p, "Adobe", 5) == 0) {
            c->adobe = true;
            c->adobe_transform = p[11];
        }
        return AG_OK;
    default:
        break;
    }
    if ((m > JPEG_APP0 && m <= JPEG_APP15) || m == JPEG_COM) {
        return AG_OK;             /* application data, comments */
    }
    if (m == JPEG_SOF2 || (m >= JPEG_SOF3 && m <= JPEG_SOF15 && m != JPEG_DHT &&
                        m != JPEG_JPG && m != JPEG_DAC)) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: frame "
                            "type SOF%d is not sequential Huffman (SOF0/1)",
                            m - JPEG_SOF0);
    }
    if (m == JPEG_DAC || m == JPEG_DHP || m == JPEG_EXP || m == JPEG_DNL ||
        m == JPEG_JPG) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: marker "
                            "0xFF%02X at offset %zu is not supported",
                            (unsigned)m, at);
    }
    return ag_error_set(c->err, AG_ERR_PARSE, "jpeg 12-bit: unknown marker "
                        "0xFF%02X at offset %zu", (unsigned)m, at);
}

static int decode_stream(Ctx *c)
{
    if (c->n < 2 || c->in[0] != 0xFF || c->in[1] != JPEG_SOI) {
        return fail(c, 0, "no start-of-image marker");
    }
    c->pos = 2;
    for (;;) {
        /* B.1.1.2: a marker, optionally preceded by 0xFF fill bytes. */
        size_t at = c->pos;
        if (c->pos >= c->n || c->in[c->pos] != 0xFF) {
            return fail(c, at, c->pos >= c->n ? "stream ends before "
                        "end-of-image" : "marker expected");
        }
        while (c->pos < c->n && c->in[c->pos] == 0xFF) {
            c->pos++;
        }
        if (c->pos >= c->n) {
            return fail(c, at, "stream ends inside a marker");
        }
        int m = c->in[c->pos++];
        if (m == JPEG_EOI) {
            if (!c->have_sof) {
                return fail(c, at, "end of image without a frame");
            }
            for (int i = 0; i < c->ncomp; i++) {
                if (!c->comp[i].done) {
                    return fail(c, at, "end of image before every "
                                "component was decoded");
                }
            }
            return AG_OK;
        }
        if (m == 0x00 || m == 0x01 || (m >= JPEG_RST0 && m <= JPEG_RST0 + 7) ||
            m == JPEG_SOI) {
            return fail(c, at, "unexpected marker");
        }
        if (c->n - c->pos < 2 || jpeg_rd16(c->in + c->pos) < 2 ||
            jpeg_rd16(c->in + c->pos) > c->n - c->pos) {
            return fail(c, at, "marker segment longer than the stream");
        }
        size_t len = jpeg_rd16(c->in + c->pos) - 2u;
        const uint8_t *p = c->in + c->pos + 2;
        c->pos += 2 + len;
        int rc = segment(c, m, p, len, at);
        if (rc != AG_OK) {
            return rc;
        }
    }
}

bool codec__jpeg12_applies(const uint8_t *in, size_t n)
{
    if (n < 4 || in[0] != 0xFF || in[1] != JPEG_SOI) {
        return false;
    }
    size_t pos = 2;
    while (pos + 4 < n && in[pos] == 0xFF) {
        while (pos + 4 < n && in[pos + 1] == 0xFF) {
            pos++;                /* fill bytes */
        }
        int m = in[pos + 1];
        size_t len = jpeg_rd16(in + pos + 2);
        if (m >= JPEG_SOF0 && m <= JPEG_SOF15 && m != JPEG_DHT && m != JPEG_JPG &&
            m != JPEG_DAC) {
            bool dct = m != JPEG_SOF3 && m != 0xC7 && m != 0xCB && m != JPEG_SOF15;
            return dct && len >= 3 && pos + 4 < n && in[pos + 4] == 12;
        }
        if (m == JPEG_SOS || len < 2) {
            return false;
        }
        pos += 2 + len;
    }
    return false;
}

int codec__jpeg12_decode(const CodecImage *im, const uint8_t *in, size_t n,
                         uint8_t *out, size_t out_len, AgError *err)
{
    if (im->bits_allocated != 16 ||
        (im->samples_per_pixel != 1 && im->samples_per_pixel != 3)) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 12-bit: %u "
                            "samples of %u bits allocated are not "
                            "supported (1 or 3 samples, 16 bits)",
                            (unsigned)im->samples_per_pixel,
                            (unsigned)im->bits_allocated);
    }
    uint64_t want = (uint64_t)im->rows * im->columns *
                    im->samples_per_pixel * 2u;
    if (want != out_len || want == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg 12-bit: output "
                            "buffer of %zu bytes for a frame of %" PRIu64,
                            out_len, want);
    }
    Ctx *c = ag_calloc(1, sizeof *c);    /* Huffman tables: ~10 KB */
    if (c == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg 12-bit: no memory");
    }
    c->im = im;
    c->in = in;
    c->n = n;
    c->err = err;
    int rc = decode_stream(c);
    if (rc == AG_OK) {
        rc = write_output(c, out);
    }
    for (int i = 0; i < MAX_COMP; i++) {
        ag_free(c->comp[i].plane);
    }
    ag_free(c);
    return rc;
}
