/* codec.c — placeholder until the codec core lands. */
#include "codec_int.h"

int codec_image_from_dataset(const DicomDataset *ds, CodecImage *out,
                             AgError *err)
{
    (void)ds; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "codec: not built yet");
}
uint64_t codec_frame_size(const CodecImage *im) { (void)im; return 0; }
bool codec_can_decode(const char *ts_uid) { (void)ts_uid; return false; }
bool codec_can_encode(const char *ts_uid) { (void)ts_uid; return false; }
