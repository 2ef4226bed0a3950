/* j2k.c — placeholder until the JPEG 2000 codec lands. */
#include "codec_int.h"

int codec__j2k_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err)
{
    (void)im; (void)in; (void)n; (void)out; (void)out_len;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: not built yet");
}

int codec__j2k_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      bool lossless, AgBuf *out, AgError *err)
{
    (void)im; (void)in; (void)n; (void)lossless; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg 2000: not built yet");
}
