/*
 * jpeg_lossless.c — JPEG Lossless, Non-Hierarchical (ITU T.81 Annex H,
 * process 14, SOF3): DICOM transfer syntaxes 1.2.840.10008.1.2.4.57 (any
 * predictor) and .4.70 (selection value 1).  PS3.5 §8.2.1.
 *
 * Hand-written because Debian 12's libjpeg-turbo (2.1.5) has no lossless
 * mode (it arrived in 3.0) and the IJG-derived lossless codecs (DCMTK's
 * ijg16, GDCM's) are not packaged as libraries.
 *
 * Supported: precision 2..16 bits, 1..3 components each sampled 1x1 (the
 * only layout DICOM uses), interleaved and non-interleaved scans, all seven
 * predictors, point transform, restart intervals that are whole rows,
 * Huffman tables (redefinable between scans).  Not supported (refused with
 * AG_ERR_UNSUPPORTED): arithmetic coding (SOF11), hierarchical mode, DNL,
 * subsampled components, restart intervals splitting a row.
 *
 * The input is hostile (SECURITY.md rule 8): every marker length is checked
 * against what remains, Huffman tables are validated before use, the output
 * size is checked once against the frame header and CodecImage before any
 * sample is written, and every sample consumes at least one real entropy-
 * coded bit, so the work is bounded by the input size.
 */
#include "codec_int.h"
#include "jpeg_huff.h"

#include <inttypes.h>
#include <string.h>

#define MAX_COMPONENTS 3

typedef struct Component {
    uint8_t id;
    bool done;                    /* decoded by an earlier scan */
} Component;

typedef struct Ctx {
    const CodecImage *im;
    const uint8_t *in;
    size_t n;
    size_t pos;                   /* next unread byte of in */
    uint8_t *out;
    int bytes;                    /* bytes per output sample: 1 or 2 */
    int precision;                /* P */
    uint32_t rows, cols;
    int ncomp;
    Component comp[MAX_COMPONENTS];
    JpegHuff huff[4];
    uint32_t restart_interval;    /* in MCUs (pixels); 0: none */
    bool have_sof;
    AgError *err;
} Ctx;

/* Entropy-coded bits come through a JpegBits (jpeg_huff.h).  Every
 * sample consumes at least one real bit, so a stream that ends early is
 * caught at the sample that needs the bits. */

/* The next n (1..16) bits, zeros past the segment's end. */
static inline uint32_t bits_peek(JpegBits *b, int n)
{
    if (b->nbits < n) {
        jpeg_bits_fill(b);
    }
    return (uint32_t)(b->acc >> (64 - n));
}

/* Drop n bits; false if fewer real bits remain (stream ends early). */
static inline bool bits_skip(JpegBits *b, int n)
{
    if (b->nbits < n) {
        jpeg_bits_fill(b);
        if (b->nbits < n) {
            return false;
        }
    }
    b->acc <<= n;
    b->nbits -= n;
    return true;
}

static int fail(Ctx *c, size_t pos, const char *what)
{
    return ag_error_set(c->err, AG_ERR_PARSE,
                        "jpeg lossless: %s at offset %zu", what, pos);
}

/* Decode one Huffman symbol; -1 on a code not in the table or a stream
 * that ends early. */
static inline int huff_decode(const JpegHuff *t, JpegBits *b)
{
    uint32_t look = bits_peek(b, 16);
    uint16_t e = t->lut[look >> (16 - JPEG_LUT_BITS)];
    if (e != 0) {
        return bits_skip(b, e >> 8) ? (e & 0xFF) : -1;
    }
    for (int len = JPEG_LUT_BITS + 1; len <= 16; len++) {
        int32_t code = (int32_t)(look >> (16 - len));
        if (code <= t->maxcode[len]) {
            return bits_skip(b, len) ? t->vals[code + t->valoff[len]] : -1;
        }
    }
    return -1;
}

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
        /* AC tables are legal but unused here */
        if (tc == 0 && !jpeg_huff_load(&c->huff[th], p)) {
            return fail(c, at, "huffman code lengths overflow");
        }
        p += used;
        len -= used;
    }
    return AG_OK;
}

/* SOF3 (T.81 B.2.2), checked against the CodecImage. */
static int read_sof(Ctx *c, const uint8_t *p, size_t len, size_t at)
{
    const CodecImage *im = c->im;
    if (c->have_sof) {
        return fail(c, at, "second frame header");
    }
    if (len < 6) {
        return fail(c, at, "frame header too short");
    }
    int prec = p[0];
    uint32_t y = jpeg_rd16(p + 1);
    uint32_t x = jpeg_rd16(p + 3);
    int nf = p[5];
    if (len != 6 + 3 * (size_t)nf) {
        return fail(c, at, "frame header length does not match components");
    }
    if (prec < 2 || prec > 16) {
        return ag_error_set(c->err, AG_ERR_PARSE, "jpeg lossless: "
                            "precision %d at offset %zu is not 2..16",
                            prec, at);
    }
    if (y == 0) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg lossless: "
                            "number of lines 0 (DNL) is not supported");
    }
    if (y != im->rows || x != im->columns ||
        nf != im->samples_per_pixel || prec > im->bits_allocated) {
        return ag_error_set(c->err, AG_ERR_PARSE, "jpeg lossless: frame is "
                            "%" PRIu32 "x%" PRIu32 ", %d components, %d bits"
                            "; image says %" PRIu32 "x%" PRIu32 ", %u "
                            "samples, %u bits allocated", x, y, nf, prec,
                            im->columns, im->rows,
                            (unsigned)im->samples_per_pixel,
                            (unsigned)im->bits_allocated);
    }
    for (int i = 0; i < nf; i++) {
        const uint8_t *q = p + 6 + 3 * i;
        for (int j = 0; j < i; j++) {
            if (c->comp[j].id == q[0]) {
                return fail(c, at, "duplicate component id");
            }
        }
        if (q[1] != 0x11) {
            return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg lossless: "
                                "component %d sampling %dx%d is not 1x1",
                                i, q[1] >> 4, q[1] & 0x0F);
        }
        c->comp[i].id = q[0];
        c->comp[i].done = false;
    }
    c->precision = prec;
    c->rows = y;
    c->cols = x;
    c->ncomp = nf;
    c->have_sof = true;
    return AG_OK;
}

static inline int32_t predict(int sv, int32_t ra, int32_t rb, int32_t rc)
{
    /* T.81 Table H.1; >> on int is arithmetic with gcc and clang, as in
     * the IJG code every encoder in the field derives from. */
    switch (sv) {
    case 1: return ra;
    case 2: return rb;
    case 3: return rc;
    case 4: return ra + rb - rc;
    case 5: return ra + ((rb - rc) >> 1);
    case 6: return rb + ((ra - rc) >> 1);
    default: return (ra + rb) >> 1;
    }
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
    int ci[MAX_COMPONENTS];       /* scan component -> frame component */
    const JpegHuff *tab[MAX_COMPONENTS];
    for (int i = 0; i < ns; i++) {
        uint8_t id = p[1 + 2 * i];
        int td = p[2 + 2 * i] >> 4;
        int k = 0;
        while (k < c->ncomp && c->comp[k].id != id) {
            k++;
        }
        if (k == c->ncomp) {
            return fail(c, at, "scan names an unknown component");
        }
        if (c->comp[k].done) {
            return fail(c, at, "component coded twice");
        }
        for (int j = 0; j < i; j++) {
            if (ci[j] == k) {
                return fail(c, at, "component repeated in scan");
            }
        }
        if (td > 3 || !c->huff[td].defined) {
            return fail(c, at, "scan uses an undefined huffman table");
        }
        for (int v = 0; v < c->huff[td].nvals; v++) {
            if (c->huff[td].vals[v] > 16) {
                return fail(c, at, "huffman table has a difference "
                            "category above 16");
            }
        }
        ci[i] = k;
        tab[i] = &c->huff[td];
    }
    const uint8_t *q = p + 1 + 2 * ns;
    int sv = q[0];                /* Ss: predictor selection value */
    int pt = q[2] & 0x0F;         /* Al: point transform */
    if (sv < 1 || sv > 7 || q[1] != 0 || (q[2] >> 4) != 0) {
        return fail(c, at, "scan parameters are not lossless (Ss 1..7, "
                    "Se 0, Ah 0)");
    }
    if (pt >= c->precision) {
        return fail(c, at, "point transform not below precision");
    }
    uint32_t ri = c->restart_interval;
    if (ri != 0 && ri % c->cols != 0) {
        return ag_error_set(c->err, AG_ERR_UNSUPPORTED, "jpeg lossless: "
                            "restart interval %" PRIu32 " is not a multiple"
                            " of the %" PRIu32 " columns", ri, c->cols);
    }
    uint32_t ri_rows = ri / c->cols;   /* 0: no restarts */

    /* Two rows of reconstructed values (before the inverse point
     * transform, T.81 H.1.2.1) per scan component. */
    size_t row_len = (size_t)c->cols * (size_t)ns;
    uint16_t *rowbuf = ag_malloc(2 * row_len * sizeof *rowbuf);
    if (rowbuf == NULL) {
        return ag_error_set(c->err, AG_ERR_NOMEM, "jpeg lossless: "
                            "no memory for %zu row samples", 2 * row_len);
    }
    uint16_t *prev = rowbuf;
    uint16_t *cur = rowbuf + row_len;

    JpegBits b = {.in = c->in, .end = c->n, .pos = c->pos};
    const int32_t initial = (int32_t)1 << (c->precision - pt - 1);
    const size_t stride = (size_t)c->ncomp * (size_t)c->bytes;
    int rc = AG_OK;
    int next_rst = 0;
    uint32_t since_restart = 0;   /* rows since the interval began */

    for (uint32_t y = 0; y < c->rows && rc == AG_OK; y++) {
        if (ri_rows != 0 && since_restart == ri_rows) {
            /* T.81 F.2.1.3.1 (B.2.1): byte-align and expect RSTm. */
            jpeg_bits_to_marker(&b);
            size_t m = b.pos;
            while (m + 2 < c->n && c->in[m + 1] == 0xFF) {
                m++;              /* fill bytes before the marker */
            }
            if (m + 1 >= c->n ||
                c->in[m + 1] != (uint8_t)(JPEG_RST0 + next_rst)) {
                rc = fail(c, m, "restart marker expected");
                break;
            }
            b = (JpegBits){.in = c->in, .end = c->n, .pos = m + 2};
            next_rst = (next_rst + 1) & 7;
            since_restart = 0;
        }
        bool first_row = since_restart == 0;
        since_restart++;
        uint8_t *o = c->out + (size_t)y * c->cols * stride;
        for (uint32_t x = 0; x < c->cols; x++) {
            for (int s = 0; s < ns; s++) {
                size_t k = (size_t)x * (size_t)ns + (size_t)s;
                int32_t px;
                if (first_row) {
                    px = x == 0 ? initial : cur[k - (size_t)ns];
                } else if (x == 0) {
                    px = prev[k];
                } else {
                    px = predict(sv, cur[k - (size_t)ns], prev[k],
                                 prev[k - (size_t)ns]);
                }
                size_t sym_at = b.pos;
                int t = huff_decode(tab[s], &b);
                if (t < 0) {
                    rc = fail(c, sym_at, b.at_marker && b.nbits < 16
                                  ? "entropy-coded data ends early"
                                  : "invalid huffman code");
                    goto done;
                }
                int32_t diff;
                if (t == 0) {
                    diff = 0;
                } else if (t == 16) {
                    diff = 32768;       /* T.81 H.1.2.2: no extra bits */
                } else {
                    int32_t v = (int32_t)bits_peek(&b, t);
                    if (!bits_skip(&b, t)) {
                        rc = fail(c, sym_at, "entropy-coded data ends "
                                  "early");
                        goto done;
                    }
                    /* T.81 F.2.2.1 EXTEND */
                    diff = v < ((int32_t)1 << (t - 1))
                               ? v - ((int32_t)1 << t) + 1 : v;
                }
                uint16_t val = (uint16_t)((px + diff) & 0xFFFF);
                cur[k] = val;
                uint32_t sample = ((uint32_t)val << pt) & 0xFFFF;
                uint8_t *d = o + (size_t)x * stride +
                             (size_t)ci[s] * (size_t)c->bytes;
                d[0] = (uint8_t)sample;
                if (c->bytes == 2) {
                    d[1] = (uint8_t)(sample >> 8);
                }
            }
        }
        uint16_t *tmp = prev;
        prev = cur;
        cur = tmp;
    }
    if (rc == AG_OK) {
        jpeg_bits_to_marker(&b);
        c->pos = b.pos;
        for (int s = 0; s < ns; s++) {
            c->comp[ci[s]].done = true;
        }
    }
done:
    ag_free(rowbuf);
    return rc;
}

int codec__jpeg_lossless_decode(const CodecImage *im, const uint8_t *in,
                                size_t n, uint8_t *out, size_t out_len,
                                AgError *err)
{
    if (im->bits_allocated != 8 && im->bits_allocated != 16) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg lossless: %u "
                            "bits allocated is not supported",
                            (unsigned)im->bits_allocated);
    }
    if (im->samples_per_pixel < 1 || im->samples_per_pixel > 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg lossless: %u "
                            "samples per pixel is not supported",
                            (unsigned)im->samples_per_pixel);
    }
    int bytes = im->bits_allocated / 8;
    uint64_t want = (uint64_t)im->rows * im->columns *
                    im->samples_per_pixel * (uint64_t)bytes;
    if (want != out_len || want == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg lossless: output "
                            "buffer of %zu bytes for a frame of %" PRIu64,
                            out_len, want);
    }

    Ctx *c = ag_malloc(sizeof *c);     /* Huffman tables: ~6 KB */
    if (c == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg lossless: no memory");
    }
    memset(c, 0, sizeof *c);
    c->im = im;
    c->in = in;
    c->n = n;
    c->out = out;
    c->bytes = bytes;
    c->err = err;

    int rc = AG_OK;
    if (n < 2 || in[0] != 0xFF || in[1] != JPEG_SOI) {
        rc = fail(c, 0, "no start-of-image marker");
        goto out;
    }
    c->pos = 2;
    for (;;) {
        /* B.1.1.2: a marker, optionally preceded by 0xFF fill bytes. */
        size_t at = c->pos;
        if (c->pos >= c->n || c->in[c->pos] != 0xFF) {
            rc = fail(c, at, c->pos >= c->n ? "stream ends before "
                      "end-of-image" : "marker expected");
            break;
        }
        while (c->pos < c->n && c->in[c->pos] == 0xFF) {
            c->pos++;
        }
        if (c->pos >= c->n) {
            rc = fail(c, at, "stream ends inside a marker");
            break;
        }
        int m = c->in[c->pos++];
        if (m == JPEG_EOI) {
            for (int i = 0; i < c->ncomp; i++) {
                if (!c->comp[i].done) {
                    rc = fail(c, at, "end of image before every "
                              "component was decoded");
                    break;
                }
            }
            if (!c->have_sof) {
                rc = fail(c, at, "end of image without a frame");
            }
            break;
        }
        if (m == 0x00 || m == 0x01 || (m >= JPEG_RST0 && m <= JPEG_RST0 + 7) ||
            m == JPEG_SOI) {
            rc = fail(c, at, "unexpected marker");
            break;
        }
        if (c->n - c->pos < 2 || jpeg_rd16(c->in + c->pos) < 2 ||
            jpeg_rd16(c->in + c->pos) > c->n - c->pos) {
            rc = fail(c, at, "marker segment longer than the stream");
            break;
        }
        size_t len = jpeg_rd16(c->in + c->pos) - 2u;
        const uint8_t *p = c->in + c->pos + 2;
        c->pos += 2 + len;
        if (m == JPEG_SOF3) {
            rc = read_sof(c, p, len, at);
        } else if (m == JPEG_DHT) {
            rc = read_dht(c, p, len, at);
        } else if (m == JPEG_DRI) {
            if (len != 2) {
                rc = fail(c, at, "restart interval segment is not 4 bytes");
            } else {
                c->restart_interval = jpeg_rd16(p);
            }
        } else if (m == JPEG_SOS) {
            rc = read_scan(c, p, len, at);
        } else if ((m >= JPEG_APP0 && m <= JPEG_APP15) || m == JPEG_COM ||
                   m == JPEG_DQT) {
            /* application data, comments, unused tables: skipped */
        } else if (m >= JPEG_SOF0 && m <= JPEG_SOF15 && m != JPEG_DHT &&
                   m != JPEG_DAC) {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg lossless: "
                              "frame type SOF%d is not lossless Huffman "
                              "(SOF3)", m - JPEG_SOF0);
        } else if (m == JPEG_DAC || m == JPEG_DHP || m == JPEG_EXP || m == JPEG_DNL) {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg lossless: "
                              "marker 0xFF%02X at offset %zu is not "
                              "supported", (unsigned)m, at);
        } else {
            rc = ag_error_set(err, AG_ERR_PARSE, "jpeg lossless: unknown "
                              "marker 0xFF%02X at offset %zu",
                              (unsigned)m, at);
        }
        if (rc != AG_OK) {
            break;
        }
    }
out:
    ag_free(c);
    return rc;
}
