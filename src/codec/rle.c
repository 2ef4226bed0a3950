/* rle.c — placeholder until the RLE codec lands. */
#include "codec_int.h"

int codec__rle_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err)
{
    (void)im; (void)in; (void)n; (void)out; (void)out_len;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "rle: not built yet");
}

int codec__rle_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      AgBuf *out, AgError *err)
{
    (void)im; (void)in; (void)n; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "rle: not built yet");
}
