/*
 * jpegls.c — JPEG-LS lossless and near-lossless (PS3.5 §8.2.3, ISO/IEC
 * 14495-1) through CharLS's C API.
 *
 * Decoding trusts nothing in the stream: the frame header (SOF55) must
 * describe the image the data set describes before CharLS decodes a byte,
 * and CharLS writes into exactly the caller's buffer, never more.
 *
 * Signed data: JPEG-LS codes unsigned P-bit samples; PS3.5 §8.2.3 codes
 * signed pixels as their two's complement bit pattern.  Both directions keep
 * the low bits_stored bits and do not sign-extend: the encoder masks each
 * sample to bits_stored bits, the decoder returns what the stream holds.
 * Bits above bits_stored (padding, PS3.5 §8.1.1) are therefore not kept.
 *
 * CharLS 2.4.1 (Debian 12) spins for billions of iterations when the
 * buffer ends inside a unary code with its bit count negative (its
 * fill_read_cache() tests valid_bits == 0 at the end of the buffer, but
 * <= 0 at a marker; upstream team-charls/charls#434).  A truncated frame
 * does exactly that.  So CharLS never sees the end of our buffer: it gets
 * a copy followed by a guard of EOI markers long enough that every scan,
 * wherever its header puts it, reaches a marker first.
 */
#include "codec_int.h"

#include <charls/charls.h>
#include <inttypes.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "jpegls.c: CharLS uses host-order 16-bit samples; native is LE"
#endif

/* Bytes per sample CharLS reads and writes for a precision of p bits. */
static unsigned charls_sample_bytes(int p)
{
    return p > 8 ? 2u : 1u;
}

/*
 * Check the image and out_len against each other: JPEG-LS carries 2-16 bit
 * samples, 1 or 3 components, in 8- or 16-bit containers.
 */
static int check_image(const CodecImage *im, size_t n_native, AgError *err)
{
    if (im->samples_per_pixel != 1 && im->samples_per_pixel != 3) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: %u samples "
                            "per pixel", (unsigned)im->samples_per_pixel);
    }
    if (im->bits_allocated != 8 && im->bits_allocated != 16) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: bits "
                            "allocated %u", (unsigned)im->bits_allocated);
    }
    if (im->bits_stored < 2 || im->bits_stored > im->bits_allocated) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: bits stored "
                            "%u with bits allocated %u",
                            (unsigned)im->bits_stored,
                            (unsigned)im->bits_allocated);
    }
    if (im->rows == 0 || im->columns == 0 || im->rows > 65535 ||
        im->columns > 65535) {
        /* ISO/IEC 14495-1 C.2.2: X and Y are 16-bit in SOF55. */
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: %" PRIu32
                            "x%" PRIu32 " image", im->columns, im->rows);
    }
    uint64_t size;
    if (ag_mul_overflow(im->rows, im->columns, &size) ||
        ag_mul_overflow(size, im->samples_per_pixel, &size) ||
        ag_mul_overflow(size, im->bits_allocated / 8u, &size) ||
        size > CODEC_MAX_FRAME_BYTES) {
        return ag_error_set(err, AG_ERR_LIMIT, "jpeg-ls: frame of %" PRIu32
                            "x%" PRIu32 " is too large", im->columns,
                            im->rows);
    }
    if (size != n_native) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg-ls: native frame is "
                            "%zu bytes, image needs %" PRIu64, n_native,
                            size);
    }
    return AG_OK;
}

static int charls_fail(AgError *err, int code, const char *what,
                       charls_jpegls_errc ec)
{
    return ag_error_set(err, code, "jpeg-ls: %s: %s", what,
                        charls_get_error_message(ec));
}

/* By-plane (ILV none) to by-pixel, 3 components of bps bytes each. */
static void planes_to_pixels(const uint8_t *src, uint8_t *dst, size_t npix,
                             unsigned bps)
{
    for (size_t c = 0; c < 3; c++) {
        const uint8_t *plane = src + c * npix * bps;
        for (size_t i = 0; i < npix; i++) {
            memcpy(dst + (i * 3 + c) * bps, plane + i * bps, bps);
        }
    }
}

/*
 * Guard length: a scan starts at most 2 + 65535 bytes (SOS marker and the
 * largest Ls) past the last byte of the stream; an even count of FF D9
 * pairs beyond that leaves a marker ahead of any scan start.
 */
#define GUARD (2u + 65535u + 3u)

static uint8_t *guarded_copy(const uint8_t *in, size_t n)
{
    if (n > SIZE_MAX - GUARD) {
        return NULL;
    }
    uint8_t *p = ag_malloc(n + GUARD);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, in, n);
    for (size_t i = 0; i < GUARD; i += 2) {
        p[n + i] = 0xFF;
        p[n + i + 1] = 0xD9;   /* EOI */
    }
    return p;
}

int codec__jpegls_decode(const CodecImage *im, const uint8_t *in, size_t n,
                         uint8_t *out, size_t out_len, AgError *err)
{
    int rc = check_image(im, out_len, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (in == NULL || n == 0) {
        return ag_error_set(err, AG_ERR_PARSE, "jpeg-ls: empty stream");
    }
    uint8_t *src = guarded_copy(in, n);
    if (src == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg-ls: %zu-byte stream "
                            "copy", n);
    }
    charls_jpegls_decoder *dec = charls_jpegls_decoder_create();
    if (dec == NULL) {
        ag_free(src);
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg-ls: decoder");
    }
    uint8_t *tmp = NULL;
    charls_jpegls_errc ec = charls_jpegls_decoder_set_source_buffer(dec, src,
                                                                     n +
                                                                     GUARD);
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_decoder_read_header(dec);
    }
    charls_frame_info fi = {0};
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_decoder_get_frame_info(dec, &fi);
    }
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = charls_fail(err, AG_ERR_PARSE, "header", ec);
        goto done;
    }

    /*
     * The frame header must describe the data set's image.  P normally
     * equals Bits Stored (PS3.5 §8.2.3); a P between Bits Stored and Bits
     * Allocated still fits the container (some encoders write the container
     * depth), anything else does not describe this image.
     */
    if (fi.width != im->columns || fi.height != im->rows ||
        fi.component_count != (int32_t)im->samples_per_pixel ||
        fi.bits_per_sample < (int32_t)im->bits_stored ||
        fi.bits_per_sample > (int32_t)im->bits_allocated) {
        rc = ag_error_set(err, AG_ERR_PARSE, "jpeg-ls: stream is %" PRIu32
                          "x%" PRIu32 ", %" PRId32 " components of %" PRId32
                          " bits; image is %" PRIu32 "x%" PRIu32 ", %u of "
                          "%u bits", fi.width, fi.height, fi.component_count,
                          fi.bits_per_sample, im->columns, im->rows,
                          (unsigned)im->samples_per_pixel,
                          (unsigned)im->bits_stored);
        goto done;
    }
    charls_interleave_mode ilv = CHARLS_INTERLEAVE_MODE_NONE;
    ec = charls_jpegls_decoder_get_interleave_mode(dec, &ilv);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = charls_fail(err, AG_ERR_PARSE, "header", ec);
        goto done;
    }

    /* CharLS writes P > 8 as 16-bit and the rest as 8-bit samples; the
     * check above makes that the container size. */
    unsigned bps = charls_sample_bytes(fi.bits_per_sample);
    size_t npix = (size_t)im->rows * im->columns;   /* checked above */
    size_t need = npix * im->samples_per_pixel * bps;
    if (need != out_len) {
        rc = ag_error_set(err, AG_ERR_PARSE, "jpeg-ls: %" PRId32 "-bit "
                          "samples do not fill %u-bit containers",
                          fi.bits_per_sample, (unsigned)im->bits_allocated);
        goto done;
    }
    size_t dsize = 0;
    ec = charls_jpegls_decoder_get_destination_size(dec, 0, &dsize);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS || dsize != need) {
        rc = ag_error_set(err, AG_ERR_PARSE, "jpeg-ls: decoder wants %zu "
                          "bytes for a %zu-byte frame", dsize, need);
        goto done;
    }

    /* ILV none (one scan per component) decodes by plane; line and sample
     * interleaving decode by pixel, which is the native layout. */
    bool by_plane = im->samples_per_pixel == 3 &&
                    ilv == CHARLS_INTERLEAVE_MODE_NONE;
    uint8_t *dst = out;
    if (by_plane) {
        tmp = ag_malloc(need);
        if (tmp == NULL) {
            rc = ag_error_set(err, AG_ERR_NOMEM, "jpeg-ls: %zu-byte plane "
                              "buffer", need);
            goto done;
        }
        dst = tmp;
    }
    ec = charls_jpegls_decoder_decode_to_buffer(dec, dst, need, 0);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = charls_fail(err, AG_ERR_PARSE, "decode", ec);
        goto done;
    }
    if (by_plane) {
        planes_to_pixels(tmp, out, npix, bps);
    }
    rc = AG_OK;
done:
    ag_free(tmp);
    charls_jpegls_decoder_destroy(dec);
    ag_free(src);
    if (rc != AG_OK && out != NULL) {
        memset(out, 0, out_len);    /* never a partial frame */
    }
    return rc;
}

/*
 * Copy the native frame with every sample masked to bits_stored bits:
 * CharLS refuses or miscodes samples above MAXVAL, and signed samples are
 * coded as their low bits_stored bits (PS3.5 §8.2.3).
 */
static uint8_t *masked_copy(const CodecImage *im, const uint8_t *in,
                            size_t n)
{
    uint8_t *p = ag_malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        return NULL;
    }
    if (im->bits_allocated == 8) {
        uint8_t m = (uint8_t)((1u << im->bits_stored) - 1u);
        for (size_t i = 0; i < n; i++) {
            p[i] = in[i] & m;
        }
    } else {
        uint16_t m = (uint16_t)((1u << im->bits_stored) - 1u);
        for (size_t i = 0; i + 1 < n; i += 2) {
            uint16_t v = (uint16_t)(in[i] | (in[i + 1] << 8)) & m;
            p[i] = (uint8_t)v;
            p[i + 1] = (uint8_t)(v >> 8);
        }
    }
    return p;
}

int codec__jpegls_encode(const CodecImage *im, const uint8_t *in, size_t n,
                         int near, AgBuf *out, AgError *err)
{
    int rc = check_image(im, n, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (charls_sample_bytes(im->bits_stored) * 8u != im->bits_allocated) {
        /* e.g. 6 stored in 16 allocated: CharLS would read 8-bit samples. */
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: %u bits "
                            "stored in %u allocated",
                            (unsigned)im->bits_stored,
                            (unsigned)im->bits_allocated);
    }
    /* ISO/IEC 14495-1 C.2.4.1.1: NEAR <= min(255, MAXVAL / 2). */
    int maxval = (1 << im->bits_stored) - 1;
    if (near < 0 || near > 255 || near > maxval / 2) {
        return ag_error_set(err, AG_ERR_INVALID, "jpeg-ls: near %d for %u-"
                            "bit samples", near, (unsigned)im->bits_stored);
    }
    if (near > 0 && im->is_signed) {
        /* NEAR bounds the error of the coded bit pattern: -1 and 0, or the
         * most positive and most negative values, are MAXVAL apart, so an
         * error of NEAR there flips the sign (DCMTK refuses this too). */
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: near-"
                            "lossless coding of signed pixels");
    }
    uint8_t *src = masked_copy(im, in, n);
    if (src == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg-ls: %zu-byte frame "
                            "copy", n);
    }
    charls_jpegls_encoder *enc = charls_jpegls_encoder_create();
    if (enc == NULL) {
        ag_free(src);
        return ag_error_set(err, AG_ERR_NOMEM, "jpeg-ls: encoder");
    }
    size_t start = out->len;
    charls_frame_info fi = {
        .width = im->columns,
        .height = im->rows,
        .bits_per_sample = im->bits_stored,   /* P = Bits Stored, §8.2.3 */
        .component_count = im->samples_per_pixel,
    };
    charls_jpegls_errc ec = charls_jpegls_encoder_set_frame_info(enc, &fi);
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_encoder_set_near_lossless(enc, near);
    }
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        /* Sample interleaving keeps by-pixel input as it is; no HP color
         * transform (not part of DICOM's JPEG-LS). */
        ec = charls_jpegls_encoder_set_interleave_mode(enc,
                 im->samples_per_pixel == 3 ? CHARLS_INTERLEAVE_MODE_SAMPLE
                                            : CHARLS_INTERLEAVE_MODE_NONE);
    }
    size_t est = 0;
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_encoder_get_estimated_destination_size(enc, &est);
    }
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = charls_fail(err, AG_ERR_INVALID, "encoder setup", ec);
        goto done;
    }
    rc = ag_buf_reserve(out, est + 1);   /* + 1: even-length pad */
    if (rc != AG_OK) {
        rc = ag_error_set(err, rc, "jpeg-ls: %zu bytes of output buffer",
                          est);
        goto done;
    }
    ec = charls_jpegls_encoder_set_destination_buffer(enc,
                                                      out->data + start, est);
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_encoder_encode_from_buffer(enc, src, n, 0);
    }
    size_t written = 0;
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS) {
        ec = charls_jpegls_encoder_get_bytes_written(enc, &written);
    }
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS || written > est) {
        rc = charls_fail(err, AG_ERR_INVALID, "encode", ec);
        goto done;
    }
    out->len = start + written;
    if (written % 2 != 0) {
        out->data[out->len++] = 0x00;   /* PS3.5 A.4: pad after EOI */
    }
    rc = AG_OK;
done:
    if (rc != AG_OK) {
        out->len = start;               /* no partial fragment */
    }
    charls_jpegls_encoder_destroy(enc);
    ag_free(src);
    return rc;
}
