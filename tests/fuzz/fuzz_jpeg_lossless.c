/*
 * fuzz_jpeg_lossless.c — libFuzzer target for the JPEG Lossless decoder
 * (jpeg_lossless.c, ITU T.81 process 14).
 *
 * Input: 4 bytes choosing the image — rows (1..64), columns (1..64),
 * bits allocated (8 or 16) with samples per pixel (1 or 3) — then the JPEG
 * stream.  The output buffer is exactly one frame, heap-allocated so that
 * ASan sees any write past it; the stream is copied to its own allocation
 * for the same reason on reads.  Any result code is fine; a crash, a leak
 * or a success with an error code set is not.
 */
#include "fuzz.h"
#include "codec/codec_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return 0;
    }
    CodecImage im;
    memset(&im, 0, sizeof im);
    im.rows = (uint32_t)(data[0] % 64) + 1;
    im.columns = (uint32_t)(data[1] % 64) + 1;
    im.frames = 1;
    im.bits_allocated = (data[2] & 1) ? 16 : 8;
    im.bits_stored = (uint16_t)(data[2] >> 4) + 1;
    if (im.bits_stored > im.bits_allocated) {
        im.bits_stored = im.bits_allocated;
    }
    im.high_bit = (uint16_t)(im.bits_stored - 1);
    im.samples_per_pixel = (data[3] & 1) ? 3 : 1;
    memcpy(im.photometric, im.samples_per_pixel == 3 ? "RGB" : "MONOCHROME2",
           im.samples_per_pixel == 3 ? 4 : 12);
    size_t out_len = (size_t)im.rows * im.columns * im.samples_per_pixel *
                     (im.bits_allocated / 8u);
    size_t n = size - 4;
    uint8_t *in = malloc(n ? n : 1);
    uint8_t *out = malloc(out_len);
    if (in == NULL || out == NULL) {
        free(in);
        free(out);
        return 0;
    }
    memcpy(in, data + 4, n);
    AgError err;
    memset(&err, 0, sizeof err);
    int rc = codec__jpeg_lossless_decode(&im, in, n, out, out_len, &err);
    if (rc > 0 || (rc != AG_OK && err.code != rc)) {
        __builtin_trap();
    }
    free(out);
    free(in);
    return 0;
}
