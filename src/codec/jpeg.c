/* jpeg.c — placeholder until the JPEG codec lands. */
#include "codec_int.h"

int codec__jpeg_decode(const CodecImage *im, const uint8_t *in, size_t n,
                       uint8_t *out, size_t out_len, AgError *err)
{
    (void)im; (void)in; (void)n; (void)out; (void)out_len;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: not built yet");
}

int codec__jpeg_encode(const CodecImage *im, const uint8_t *in, size_t n,
                       int quality, AgBuf *out, AgError *err)
{
    (void)im; (void)in; (void)n; (void)quality; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg: not built yet");
}
