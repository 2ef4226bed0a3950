/*
 * jpeg.c — JPEG Baseline (process 1, 1.2.840.10008.1.2.4.50) and Extended
 * (processes 2 & 4, .4.51) with 8-bit samples, through libjpeg-turbo's
 * TurboJPEG API (PS3.5 §8.2.1, ITU T.81).
 *
 * Debian 12's libjpeg-turbo (2.1.5) is built for 8-bit samples only:
 * 12-bit Extended streams are refused with AG_ERR_UNSUPPORTED (checked from
 * the SOF before the library sees the stream), as are lossless (SOF3:
 * jpeg_lossless.c) and hierarchical frames.
 *
 * Hostile input (SECURITY.md rule 8): the frame header's size, precision and
 * component count are checked against the CodecImage and the output size
 * before a single scanline is decoded; every libjpeg warning (corrupt data,
 * premature end of stream — which libjpeg would otherwise pad with gray) is
 * an error (TJFLAG_STOPONWARNING), and progressive streams are limited to
 * 500 scans (TJFLAG_LIMITSCANS).  Working memory is bounded by the image
 * size, which the caller has already accepted (progressive coefficient
 * buffers: about 2 bytes per sample).
 */
#include "codec_int.h"

#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include <turbojpeg.h>

/* ---- a bounded look at the headers -------------------------------------- */

typedef struct SofInfo {
    int sof;             /* n of SOFn */
    int precision;
    uint32_t rows, cols;
    int ncomp;
    size_t sof_at;       /* offset of the SOF marker */
    bool jfif;           /* APP0 "JFIF" seen */
    bool adobe;          /* APP14 "Adobe" seen */
} SofInfo;

/* Walk the segments up to the first SOS (T.81 B.2), without trusting any
 * length: note the SOFn and the JFIF / Adobe color signals. */
static int scan_headers(const uint8_t *in, size_t n, SofInfo *si,
                        AgError *err)
{
    if (n < 4 || in[0] != 0xFF || in[1] != 0xD8) {
        return ag_error_set(err, AG_ERR_PARSE,
                            "jpeg: no start-of-image marker at offset 0");
    }
    size_t pos = 2;
    for (;;) {
        size_t at = pos;
        if (pos >= n || in[pos] != 0xFF) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg: %s at offset %zu",
                                pos >= n ? "stream ends before the first "
                                "scan" : "marker expected", at);
        }
        while (pos < n && in[pos] == 0xFF) {
            pos++;
        }
        if (pos + 2 >= n) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg: stream ends in "
                                "the marker at offset %zu", at);
        }
        int m = in[pos++];
        if (m == 0xD8 || m == 0xD9 || m == 0x01 ||
            (m >= 0xD0 && m <= 0xD7) || m == 0x00) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg: marker 0xFF%02X "
                                "at offset %zu before the first scan",
                                (unsigned)m, at);
        }
        size_t len = (size_t)in[pos] << 8 | in[pos + 1];
        if (len < 2 || len > n - pos) {
            return ag_error_set(err, AG_ERR_PARSE, "jpeg: segment at offset "
                                "%zu longer than the stream", at);
        }
        const uint8_t *p = in + pos + 2;
        size_t plen = len - 2;
        if (m == 0xDA) {
            if (si->sof < 0) {
                return ag_error_set(err, AG_ERR_PARSE, "jpeg: scan at "
                                    "offset %zu before the frame header",
                                    at);
            }
            return AG_OK;
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 &&
            m != 0xCC) {
            if (si->sof >= 0) {
                return ag_error_set(err, AG_ERR_PARSE, "jpeg: second frame "
                                    "header at offset %zu", at);
            }
            if (plen < 6 || plen != 6 + 3 * (size_t)p[5]) {
                return ag_error_set(err, AG_ERR_PARSE, "jpeg: frame header "
                                    "at offset %zu has a bad length", at);
            }
            si->sof = m - 0xC0;
            si->sof_at = at;
            si->precision = p[0];
            si->rows = (uint32_t)p[1] << 8 | p[2];
            si->cols = (uint32_t)p[3] << 8 | p[4];
            si->ncomp = p[5];
        } else if (m == 0xE0 && plen >= 14 && memcmp(p, "JFIF", 5) == 0) {
            si->jfif = true;          /* as libjpeg's examine_app0 */
        } else if (m == 0xEE && plen >= 12 && memcmp(p, "Adobe", 5) == 0) {
            si->adobe = true;         /* as libjpeg's examine_app14 */
        }
        pos += len;
    }
}

/*
 * The color space of three components.  The JPEG's own signals win, as in
 * libjpeg (T.81 has none; JFIF and Adobe APP14 do): JFIF means YCbCr,
 * Adobe transform 0 RGB and 1 YCbCr, component ids 'R','G','B' RGB.
 * Without a signal libjpeg guesses YCbCr, but a DICOM header saying RGB
 * means the encoder applied no color transform (PS3.5 §8.2.1, PS3.3
 * C.7.6.3.1.2), and DCMTK (+cp, its default) and pydicom decode so.  Then
 * the library is told by renaming the components 'R','G','B' in a copy of
 * the stream: TurboJPEG has no way to override its guess.
 */
static bool needs_rgb_override(const SofInfo *si, int tj_colorspace,
                               const CodecImage *im)
{
    return si->ncomp == 3 && !si->jfif && !si->adobe &&
           tj_colorspace == TJCS_YCbCr &&
           strcmp(im->photometric, "RGB") == 0;
}

/* Rename the three frame components to 'R','G','B' in the SOF and every
 * SOS of copy (already validated up to the first SOS by scan_headers; the
 * rest is walked with the same bounds). */
static void rename_rgb(uint8_t *copy, size_t n, const SofInfo *si)
{
    static const uint8_t rgb[3] = {'R', 'G', 'B'};
    uint8_t old[3];
    uint8_t *sof = copy + si->sof_at + 2 + 2;       /* marker, length */
    for (int i = 0; i < 3; i++) {
        old[i] = sof[6 + 3 * i];
        sof[6 + 3 * i] = rgb[i];
    }
    /* Each SOS: find it by walking segments, skipping entropy-coded data
     * byte by byte (0xFF00 stuffing, RSTn) up to the next marker. */
    size_t pos = 2;
    while (pos + 3 < n) {
        if (copy[pos] != 0xFF) {
            pos++;                                  /* entropy-coded data */
            continue;
        }
        int m = copy[pos + 1];
        if (m == 0x00 || m == 0xFF || (m >= 0xD0 && m <= 0xD7)) {
            pos += m == 0xFF ? 1 : 2;
            continue;
        }
        if (m == 0xD9) {
            return;
        }
        size_t len = (size_t)copy[pos + 2] << 8 | copy[pos + 3];
        if (len < 2 || len > n - pos - 2) {
            return;                 /* the decoder reports it */
        }
        if (m == 0xDA && len >= 3) {
            uint8_t *p = copy + pos + 4;
            size_t ns = p[0];
            for (size_t i = 0; i < ns && 2 + 2 * i < len - 2; i++) {
                for (int k = 0; k < 3; k++) {
                    if (p[1 + 2 * i] == old[k]) {
                        p[1 + 2 * i] = rgb[k];
                        break;
                    }
                }
            }
        }
        pos += 2 + len;
    }
}

static int tj_fail(tjhandle h, const char *what, AgError *err)
{
    return ag_error_set(err, AG_ERR_PARSE, "jpeg: %s: %s", what,
                        tjGetErrorStr2(h));
}

/* Decode into out (exactly the frame): 8-bit rows are written in place;
 * with 16 bits allocated each row is decoded into the upper half of its
 * slot (pitch = the 16-bit row) and widened forward afterwards (each write
 * lands at or below the byte it reads). */
static int decode_tj(tjhandle h, const CodecImage *im, const SofInfo *si,
                     const uint8_t *in, size_t n, uint8_t *out, AgError *err)
{
    int w = 0;
    int ht = 0;
    int subsamp = 0;
    int cs = 0;
    if (tjDecompressHeader3(h, in, (unsigned long)n, &w, &ht, &subsamp,
                            &cs) != 0) {
        return tj_fail(h, "header", err);
    }
    int nc = cs == TJCS_GRAY ? 1 : (cs == TJCS_CMYK || cs == TJCS_YCCK)
                                       ? 4 : 3;
    if ((uint32_t)w != im->columns || (uint32_t)ht != im->rows ||
        nc != im->samples_per_pixel) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg: frame is %dx%d, %d "
                            "components; image says %" PRIu32 "x%" PRIu32
                            ", %u samples", w, ht, nc, im->columns,
                            im->rows, (unsigned)im->samples_per_pixel);
    }
    uint8_t *copy = NULL;
    if (needs_rgb_override(si, cs, im)) {
        copy = ag_malloc(n);
        if (copy == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "jpeg: no memory for a "
                                "%zu-byte copy", n);
        }
        memcpy(copy, in, n);
        rename_rgb(copy, n, si);
        in = copy;
    }
    size_t row8 = (size_t)im->columns * (size_t)nc;
    size_t bytes = im->bits_allocated / 8u;
    size_t row_out = row8 * bytes;
    int rc = AG_OK;
    if (tjDecompress2(h, in, (unsigned long)n, out + (row_out - row8), w,
                      (int)row_out, ht, nc == 1 ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING |
                      TJFLAG_LIMITSCANS) != 0) {
        rc = tj_fail(h, "decode", err);
    }
    ag_free(copy);
    if (rc == AG_OK && bytes == 2) {
        for (uint32_t y = 0; y < im->rows; y++) {
            uint8_t *dst = out + (size_t)y * row_out;
            const uint8_t *src = dst + row8;
            for (size_t i = 0; i < row8; i++) {
                uint8_t v = src[i];
                dst[2 * i] = v;
                dst[2 * i + 1] = 0;
            }
        }
    }
    return rc;
}

int codec__jpeg_decode(const CodecImage *im, const uint8_t *in, size_t n,
                       uint8_t *out, size_t out_len, AgError *err)
{
    if (im->bits_allocated != 8 && im->bits_allocated != 16) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: %u bits "
                            "allocated is not supported",
                            (unsigned)im->bits_allocated);
    }
    if (im->samples_per_pixel != 1 && im->samples_per_pixel != 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: %u samples per "
                            "pixel is not supported",
                            (unsigned)im->samples_per_pixel);
    }
    uint64_t want = (uint64_t)im->rows * im->columns *
                    im->samples_per_pixel * (im->bits_allocated / 8u);
    if (want != out_len || want == 0 || im->columns > INT32_MAX / 6 ||
        n > ULONG_MAX) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg: output buffer of "
                            "%zu bytes for a frame of %" PRIu64, out_len,
                            want);
    }
    SofInfo si = {.sof = -1};
    int rc = scan_headers(in, n, &si, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (si.sof == 3 || si.sof == 7 || si.sof == 11 || si.sof == 15) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: SOF%d is a "
                            "lossless frame, not baseline or extended",
                            si.sof);
    }
    if (si.sof >= 5 && si.sof != 9 && si.sof != 10) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: hierarchical "
                            "frame SOF%d is not supported", si.sof);
    }
    if (si.precision != 8) {
        /* libjpeg-turbo before 3.0 is built for one precision: 8. */
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: %d-bit samples "
                            "(SOF%d) are not supported by this build of "
                            "libjpeg-turbo (8-bit only)", si.precision,
                            si.sof);
    }
    if (si.rows != im->rows || si.cols != im->columns ||
        si.ncomp != im->samples_per_pixel) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg: frame is %" PRIu32
                            "x%" PRIu32 ", %d components; image says %"
                            PRIu32 "x%" PRIu32 ", %u samples", si.cols,
                            si.rows, si.ncomp, im->columns, im->rows,
                            (unsigned)im->samples_per_pixel);
    }
    tjhandle h = tjInitDecompress();
    if (h == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg: %s",
                            tjGetErrorStr2(NULL));
    }
    rc = decode_tj(h, im, &si, in, n, out, err);
    tjDestroy(h);
    return rc;
}

/* ---- encode ------------------------------------------------------------ */

int codec__jpeg_encode(const CodecImage *im, const uint8_t *in, size_t n,
                       int quality, AgBuf *out, AgError *err)
{
    if (im->bits_allocated != 8 || im->bits_stored > 8 || im->is_signed) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: only unsigned "
                            "8-bit samples are encoded (bits allocated %u, "
                            "stored %u, pixel representation %d)",
                            (unsigned)im->bits_allocated,
                            (unsigned)im->bits_stored, im->is_signed ? 1 : 0);
    }
    if (im->samples_per_pixel != 1 && im->samples_per_pixel != 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: %u samples per "
                            "pixel is not supported",
                            (unsigned)im->samples_per_pixel);
    }
    if (im->rows == 0 || im->columns == 0 || im->rows > 65500 ||
        im->columns > 65500) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: %" PRIu32 "x%"
                            PRIu32 " is outside JPEG's 1..65500",
                            im->columns, im->rows);
    }
    if (quality < 1 || quality > 100) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg: quality %d is not "
                            "1..100", quality);
    }
    uint64_t want = (uint64_t)im->rows * im->columns * im->samples_per_pixel;
    if (want != n) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg: %zu input bytes for "
                            "a frame of %" PRIu64, n, want);
    }
    tjhandle h = tjInitCompress();
    if (h == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg: %s",
                            tjGetErrorStr2(NULL));
    }
    bool gray = im->samples_per_pixel == 1;
    unsigned char *buf = NULL;        /* tjAlloc'd by the library */
    unsigned long len = 0;
    int rc = AG_OK;
    /* RGB goes out as YCbCr 4:4:4 with a JFIF marker: YBR_FULL. */
    if (tjCompress2(h, in, (int)im->columns, 0, (int)im->rows,
                    gray ? TJPF_GRAY : TJPF_RGB, &buf, &len,
                    gray ? TJSAMP_GRAY : TJSAMP_444, quality,
                    TJFLAG_ACCURATEDCT) != 0) {
        rc = ag_error_set(err, AG_ERR_INVALID, "jpeg: encode: %s",
                          tjGetErrorStr2(h));
    } else if ((rc = ag_buf_reserve(out, (size_t)len + 1)) != AG_OK) {
        rc = ag_error_set(err, rc, "jpeg: no room for %lu encoded bytes",
                          len);
    } else {
        /* PS3.5 A.4: fragments have even length; a 0x00 after EOI. */
        ag_buf_append(out, buf, len);
        if (len % 2 != 0) {
            ag_buf_append(out, "", 1);
        }
    }
    tjFree(buf);
    tjDestroy(h);
    return rc;
}
