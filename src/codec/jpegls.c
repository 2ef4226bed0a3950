/* jpegls.c — placeholder until the JPEG-LS codec lands. */
#include "codec_int.h"

int codec__jpegls_decode(const CodecImage *im, const uint8_t *in, size_t n,
                         uint8_t *out, size_t out_len, AgError *err)
{
    (void)im; (void)in; (void)n; (void)out; (void)out_len;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: not built yet");
}

int codec__jpegls_encode(const CodecImage *im, const uint8_t *in, size_t n,
                         int near, AgBuf *out, AgError *err)
{
    (void)im; (void)in; (void)n; (void)near; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "jpeg-ls: not built yet");
}
