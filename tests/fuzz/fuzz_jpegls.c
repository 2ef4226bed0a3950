/*
 * fuzz_jpegls.c — libFuzzer target for the JPEG-LS frame decoder (CharLS
 * behind codec__jpegls_decode, PS3.5 §8.2.3).
 *
 * Input: 3 bytes choosing the image the data set would describe, then the
 * JPEG-LS stream.
 *   byte 0: rows - 1            (1..256)
 *   byte 1: columns - 1         (1..256)
 *   byte 2: bits 0-3: bits stored - 1 (1..16; allocated 8 or 16),
 *           bit 4: 3 samples per pixel, bit 5: signed
 * The stream is decoded into a buffer of exactly the frame size (ASan
 * catches any write past it).  What decodes must re-encode losslessly and
 * decode again to the same samples (bits_stored bits compared: the encoder
 * keeps only those); a violation is a __builtin_trap().
 */
#include "fuzz.h"
#include "codec/codec_int.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool same_samples(const CodecImage *im, const uint8_t *a,
                         const uint8_t *b, size_t n)
{
    uint32_t mask = (1u << im->bits_stored) - 1u;
    for (size_t i = 0; i < n; i += im->bits_allocated / 8u) {
        uint32_t x = a[i], y = b[i];
        if (im->bits_allocated == 16) {
            x |= (uint32_t)a[i + 1] << 8;
            y |= (uint32_t)b[i + 1] << 8;
        }
        if ((x & mask) != (y & mask)) {
            return false;
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 65536) {
        return 0;
    }
    CodecImage im = {0};
    im.rows = (uint32_t)data[0] + 1;
    im.columns = (uint32_t)data[1] + 1;
    im.frames = 1;
    im.bits_stored = (uint16_t)((data[2] & 0x0F) + 1);
    im.bits_allocated = im.bits_stored > 8 ? 16 : 8;
    im.high_bit = (uint16_t)(im.bits_stored - 1);
    im.samples_per_pixel = (data[2] & 0x10) ? 3 : 1;
    im.is_signed = (data[2] & 0x20) != 0;
    size_t n = (size_t)im.rows * im.columns * im.samples_per_pixel *
               (im.bits_allocated / 8u);
    uint8_t *out = malloc(n);
    CHECK(out != NULL);
    /* An exact-size copy of the stream, so over-reads are caught too. */
    size_t in_len = size - 3;
    uint8_t *in = malloc(in_len == 0 ? 1 : in_len);
    CHECK(in != NULL);
    memcpy(in, data + 3, in_len);

    AgError err;
    int rc = codec__jpegls_decode(&im, in, in_len, out, n, &err);
    if (rc == AG_OK) {
        AgBuf b;
        ag_buf_init(&b, 0);
        int erc = codec__jpegls_encode(&im, out, n, 0, &b, &err);
        /* 2 bits stored or a 16-bit container for <= 8 bits: refused. */
        CHECK(erc == AG_OK || erc == AG_ERR_UNSUPPORTED);
        if (erc == AG_OK) {
            CHECK(b.len % 2 == 0);
            uint8_t *again = malloc(n);
            CHECK(again != NULL);
            CHECK(codec__jpegls_decode(&im, b.data, b.len, again, n,
                                       &err) == AG_OK);
            CHECK(same_samples(&im, out, again, n));
            free(again);
        }
        ag_buf_deinit(&b);
    } else {
        CHECK(rc < 0 && err.msg[0] != '\0');
    }
    free(in);
    free(out);
    return 0;
}
