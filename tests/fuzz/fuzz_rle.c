/*
 * fuzz_rle.c — libFuzzer target for the RLE Lossless decoder (PS3.5 Annex
 * G, src/codec/rle.c).  The first four bytes choose the image (rows and
 * columns 1..64, 8/16/32 bits, 1 or 3 samples); the rest is the RLE stream,
 * decoded into a heap buffer of exactly one frame so that ASan catches any
 * byte written or read outside it.  A frame that decodes is re-encoded and
 * must decode back to itself (the codec is lossless).
 */
#include "fuzz.h"
#include "codec/codec_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return 0;
    }
    static const uint16_t bits[] = {8, 16, 32, 8};
    CodecImage im = {
        .rows = 1u + data[0] % 64u,
        .columns = 1u + data[1] % 64u,
        .frames = 1,
        .bits_allocated = bits[data[2] & 3u],
        .samples_per_pixel = (data[3] & 1u) ? 3 : 1,
    };
    im.bits_stored = im.bits_allocated;
    im.high_bit = (uint16_t)(im.bits_allocated - 1);
    strcpy(im.photometric, im.samples_per_pixel == 3 ? "RGB"
                                                     : "MONOCHROME2");
    size_t fsz = (size_t)codec_frame_size(&im);
    /* The stream in its own exact-size allocation, too. */
    size_t n = size - 4;
    uint8_t *in = malloc(n ? n : 1);
    uint8_t *out = malloc(fsz);
    if (in == NULL || out == NULL) {
        free(in);
        free(out);
        return 0;
    }
    memcpy(in, data + 4, n);
    AgError err;
    if (codec__rle_decode(&im, in, n, out, fsz, &err) == AG_OK) {
        AgBuf b;
        ag_buf_init(&b, 0);
        uint8_t *again = malloc(fsz);
        if (again != NULL &&
            codec__rle_encode(&im, out, fsz, &b, &err) == AG_OK) {
            if (codec__rle_decode(&im, b.data, b.len, again, fsz, &err) !=
                    AG_OK ||
                memcmp(out, again, fsz) != 0) {
                abort();   /* the encoder and decoder disagree */
            }
        }
        free(again);
        ag_buf_deinit(&b);
    }
    free(in);
    free(out);
    return 0;
}
