/* jpeg_lossless.c — placeholder until the JPEG lossless decoder lands. */
#include "codec_int.h"

int codec__jpeg_lossless_decode(const CodecImage *im, const uint8_t *in,
                                size_t n, uint8_t *out, size_t out_len,
                                AgError *err)
{
    (void)im; (void)in; (void)n; (void)out; (void)out_len;
    return ag_error_set(err, AG_ERR_UNSUPPORTED,
                        "jpeg lossless: not built yet");
}
