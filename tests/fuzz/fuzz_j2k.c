/*
 * fuzz_j2k.c — libFuzzer target for the JPEG 2000 frame decoder (SIZ
 * checks, then OpenJPEG, behind codec__j2k_decode, PS3.5 §8.2.4).
 *
 * Input: 3 bytes choosing the image the data set would describe, then the
 * J2K codestream (or JP2 file).
 *   byte 0: rows - 1            (1..64)
 *   byte 1: columns - 1         (1..64)
 *   byte 2: bits 0-3: bits stored - 1 (1..16; allocated 8 or 16),
 *           bit 4: 3 samples per pixel, bit 5: signed
 * Caps are smaller than JPEG-LS's: OpenJPEG under ASan is slow.  The
 * stream is decoded into a buffer of exactly the frame size.  What decodes
 * (samples clamped into bits_stored) must re-encode losslessly and decode
 * again to the same bytes; a violation is a __builtin_trap().
 */
#include "fuzz.h"
#include "codec/codec_int.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 16384) {
        return 0;
    }
    CodecImage im = {0};
    im.rows = (uint32_t)(data[0] & 0x3F) + 1;
    im.columns = (uint32_t)(data[1] & 0x3F) + 1;
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
    size_t in_len = size - 3;
    uint8_t *in = malloc(in_len == 0 ? 1 : in_len);
    CHECK(in != NULL);
    memcpy(in, data + 3, in_len);

    AgError err;
    int rc = codec__j2k_decode(&im, in, in_len, out, n, &err);
    if (rc == AG_OK) {
        AgBuf b;
        ag_buf_init(&b, 0);
        CHECK(codec__j2k_encode(&im, out, n, true, &b, &err) == AG_OK);
        CHECK(b.len % 2 == 0);
        uint8_t *again = malloc(n);
        CHECK(again != NULL);
        CHECK(codec__j2k_decode(&im, b.data, b.len, again, n, &err) ==
              AG_OK);
        CHECK(memcmp(out, again, n) == 0);
        free(again);
        ag_buf_deinit(&b);
    } else {
        CHECK(rc < 0 && err.msg[0] != '\0');
    }
    free(in);
    free(out);
    return 0;
}
