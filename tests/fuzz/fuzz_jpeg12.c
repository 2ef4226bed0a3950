/*
 * fuzz_jpeg12.c — libFuzzer target for the 12-bit JPEG Extended decoder
 * (jpeg12.c, ITU T.81 process 4) and its dispatch test.
 *
 * Input: 3 bytes choosing the image the data set would describe, then the
 * JPEG stream.
 *   byte 0: rows - 1 (1..64)        byte 1: columns - 1 (1..64)
 *   byte 2: bit 0: 3 samples per pixel; bits 1-2: photometric
 *           (MONOCHROME2 / RGB, YBR_FULL, YBR_FULL_422, RGB);
 *           bit 3: 8 bits allocated (refused) instead of 16
 * The stream is copied to its own allocation and decoded into a buffer of
 * exactly the frame size, so ASan sees any read or write past either.  Any
 * result code is fine; a crash, a leak, a positive code or an error whose
 * code was not recorded in the AgError is not.  Seeds: tests/fuzz/corpus/
 * jpeg12 (streams DCMTK's dcmcjpeg +ee +bt made from synthetic images).
 */
#include "fuzz.h"
#include "codec/codec_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const PI[4] = {"RGB", "YBR_FULL", "YBR_FULL_422",
                                      "RGB"};
    if (size < 3) {
        return 0;
    }
    CodecImage im;
    memset(&im, 0, sizeof im);
    im.rows = (uint32_t)(data[0] % 64) + 1;
    im.columns = (uint32_t)(data[1] % 64) + 1;
    im.frames = 1;
    im.samples_per_pixel = (data[2] & 1) ? 3 : 1;
    im.bits_allocated = (data[2] & 8) ? 8 : 16;
    im.bits_stored = im.bits_allocated == 16 ? 12 : 8;
    im.high_bit = (uint16_t)(im.bits_stored - 1);
    const char *pi = im.samples_per_pixel == 3 ? PI[(data[2] >> 1) & 3]
                                               : "MONOCHROME2";
    memcpy(im.photometric, pi, strlen(pi) + 1);
    size_t out_len = (size_t)codec_frame_size(&im);
    size_t n = size - 3;
    uint8_t *in = malloc(n ? n : 1);
    uint8_t *out = malloc(out_len);
    if (in == NULL || out == NULL) {
        free(in);
        free(out);
        return 0;
    }
    memcpy(in, data + 3, n);
    (void)codec__jpeg12_applies(in, n);
    AgError err;
    memset(&err, 0, sizeof err);
    int rc = codec__jpeg12_decode(&im, in, n, out, out_len, &err);
    if (rc > 0 || (rc != AG_OK && err.code != rc)) {
        __builtin_trap();
    }
    free(out);
    free(in);
    return 0;
}
