/*
 * rle.c — RLE Lossless (PS3.5 Annex G), decode and encode of one frame.
 *
 * Hand-written: no library in Debian implements DICOM's RLE layout (a
 * 64-byte header of up to 15 segment offsets, then one PackBits-style
 * segment per byte plane).  The stream is untrusted (SECURITY.md rule 8):
 * every offset is checked against the data, every run against both the
 * segment's bytes and the plane's pixel count, and nothing is written
 * outside out[0..out_len).
 *
 * Layout (G.2, G.5): a frame of S samples of B bytes each has S * B
 * segments.  Segment k * B + j holds byte j of sample k of every pixel,
 * j = 0 being the MOST significant byte.  The native layout here is
 * little-endian, color-by-pixel, so byte j of sample k of pixel p lives at
 * out[(p * S + k) * B + (B - 1 - j)].
 */
#include "codec_int.h"

#include <string.h>

#define RLE_HEADER 64u
#define RLE_MAX_SEGMENTS 15u

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Segment geometry shared by decode and encode. */
static int rle_geometry(const CodecImage *im, size_t len, uint64_t *pixels,
                        unsigned *bytes, unsigned *nseg, const char *what,
                        AgError *err)
{
    if (im->samples_per_pixel != 1 && im->samples_per_pixel != 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "rle: %u samples per "
                            "pixel", (unsigned)im->samples_per_pixel);
    }
    if (im->bits_allocated != 8 && im->bits_allocated != 16 &&
        im->bits_allocated != 32) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "rle: %u bits "
                            "allocated", (unsigned)im->bits_allocated);
    }
    uint64_t px, total;
    unsigned b = im->bits_allocated / 8u;
    if (ag_mul_overflow(im->rows, im->columns, &px) ||
        ag_mul_overflow(px, (uint64_t)im->samples_per_pixel * b, &total) ||
        total != (uint64_t)len) {
        return ag_error_set(err, AG_ERR_INVALID, "rle: %s buffer holds %zu "
                            "bytes, the frame needs %ux%ux%ux%u", what, len,
                            (unsigned)im->rows, (unsigned)im->columns,
                            (unsigned)im->samples_per_pixel, b);
    }
    *pixels = px;
    *bytes = b;
    *nseg = im->samples_per_pixel * b;
    return AG_OK;
}

/*
 * Decode segment seg (in[beg..end)) into every stride-th byte of dst,
 * exactly `pixels` bytes (G.3.2: n >= 0 copies n+1 literal bytes, -127..-1
 * repeats the next byte 1-n times, -128 does nothing).
 */
static int decode_segment(unsigned seg, const uint8_t *in, size_t beg,
                          size_t end, uint8_t *dst, size_t stride,
                          uint64_t pixels, AgError *err)
{
    uint64_t done = 0;
    size_t p = beg;
    while (p < end && done < pixels) {
        int8_t h = (int8_t)in[p++];
        if (h == -128) {
            continue;
        }
        uint64_t count = h >= 0 ? (uint64_t)h + 1 : (uint64_t)(1 - h);
        size_t need = h >= 0 ? (size_t)count : 1;
        if (end - p < need) {
            return ag_error_set(err, AG_ERR_PARSE, "rle: segment %u is "
                                "truncated at byte %zu", seg, p - beg);
        }
        if (count > pixels - done) {
            return ag_error_set(err, AG_ERR_PARSE, "rle: segment %u decodes "
                                "to more than %llu bytes", seg,
                                (unsigned long long)pixels);
        }
        for (uint64_t i = 0; i < count; i++) {
            dst[(done + i) * stride] = h >= 0 ? in[p + i] : in[p];
        }
        done += count;
        p += need;
    }
    if (done < pixels) {
        return ag_error_set(err, AG_ERR_PARSE, "rle: segment %u decodes to "
                            "%llu of %llu bytes", seg,
                            (unsigned long long)done,
                            (unsigned long long)pixels);
    }
    /* Past the last pixel only padding may follow: one byte (encoders pad
     * segments to even length) or -128 no-ops.  Anything else is a run
     * that would decode long. */
    if (end - p > 1) {
        for (; p < end; p++) {
            if (in[p] != 0x80) {
                return ag_error_set(err, AG_ERR_PARSE, "rle: segment %u "
                                    "decodes to more than %llu bytes", seg,
                                    (unsigned long long)pixels);
            }
        }
    }
    return AG_OK;
}

int codec__rle_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err)
{
    uint64_t pixels;
    unsigned b, nseg;
    int rc = rle_geometry(im, out_len, &pixels, &b, &nseg, "output", err);
    if (rc != AG_OK) {
        return rc;
    }
    if (in == NULL || n < RLE_HEADER) {
        return ag_error_set(err, AG_ERR_PARSE, "rle: %zu bytes is shorter "
                            "than the 64-byte header", in ? n : 0);
    }
    uint32_t have = rd32(in);
    if (have != nseg) {
        return ag_error_set(err, AG_ERR_PARSE, "rle: header has %u segments, "
                            "the image needs %u", (unsigned)have, nseg);
    }
    size_t off[RLE_MAX_SEGMENTS + 1];
    for (unsigned s = 0; s < nseg; s++) {
        uint32_t o = rd32(in + 4 + 4 * s);
        if (o < RLE_HEADER || o > n || (s > 0 && o < off[s - 1])) {
            return ag_error_set(err, AG_ERR_PARSE, "rle: segment %u offset "
                                "%u is outside the data (64..%zu)", s,
                                (unsigned)o, n);
        }
        off[s] = o;
    }
    off[nseg] = n;
    for (unsigned s = 0; s < nseg; s++) {
        unsigned sample = s / b, j = s % b;
        size_t first = (size_t)sample * b + (b - 1 - j);
        rc = decode_segment(s, in, off[s], off[s + 1], out + first,
                            (size_t)im->samples_per_pixel * b, pixels, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

/* PackBits one byte plane (every stride-th byte of src, `count` bytes):
 * replicate runs of 2..128 identical bytes, literal runs of 1..128. */
static int encode_segment(const uint8_t *src, size_t stride, uint64_t count,
                          AgBuf *out)
{
    uint8_t lit[128];
    size_t nlit = 0;
    uint64_t i = 0;
    int rc = AG_OK;
    while (i < count && rc == AG_OK) {
        uint8_t v = src[i * stride];
        uint64_t run = 1;
        while (i + run < count && run < 128 && src[(i + run) * stride] == v) {
            run++;
        }
        if (run >= 2) {
            if (nlit > 0) {
                uint8_t h = (uint8_t)(nlit - 1);
                rc = ag_buf_append(out, &h, 1);
                if (rc == AG_OK) {
                    rc = ag_buf_append(out, lit, nlit);
                }
                nlit = 0;
            }
            uint8_t rep[2] = {(uint8_t)(int8_t)(1 - (int)run), v};
            if (rc == AG_OK) {
                rc = ag_buf_append(out, rep, 2);
            }
            i += run;
            continue;
        }
        lit[nlit++] = v;
        i++;
        if (nlit == sizeof lit) {
            uint8_t h = 127;
            rc = ag_buf_append(out, &h, 1);
            if (rc == AG_OK) {
                rc = ag_buf_append(out, lit, nlit);
            }
            nlit = 0;
        }
    }
    if (rc == AG_OK && nlit > 0) {
        uint8_t h = (uint8_t)(nlit - 1);
        rc = ag_buf_append(out, &h, 1);
        if (rc == AG_OK) {
            rc = ag_buf_append(out, lit, nlit);
        }
    }
    return rc;
}

int codec__rle_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      AgBuf *out, AgError *err)
{
    uint64_t pixels;
    unsigned b, nseg;
    int rc = rle_geometry(im, n, &pixels, &b, &nseg, "input", err);
    if (rc != AG_OK) {
        return rc;
    }
    size_t start = out->len;
    uint8_t header[RLE_HEADER] = {0};
    wr32(header, nseg);
    rc = ag_buf_append(out, header, sizeof header);
    for (unsigned s = 0; s < nseg && rc == AG_OK; s++) {
        size_t at = out->len - start;
        if (at > UINT32_MAX) {
            rc = AG_ERR_LIMIT;
            break;
        }
        wr32(out->data + start + 4 + 4 * s, (uint32_t)at);
        unsigned sample = s / b, j = s % b;
        size_t first = (size_t)sample * b + (b - 1 - j);
        rc = encode_segment(in + first, (size_t)im->samples_per_pixel * b,
                            pixels, out);
        if (rc == AG_OK && (out->len - start) % 2 != 0) {
            uint8_t pad = 0;   /* G.5: segments are even; ignored on decode */
            rc = ag_buf_append(out, &pad, 1);
        }
    }
    if (rc != AG_OK) {
        out->len = start;
        return ag_error_set(err, rc, "rle: encoded frame does not fit the "
                            "output buffer");
    }
    return AG_OK;
}
