/*
 * fuzz_render.c — libFuzzer target for rendering (src/codec/render.c):
 * the input is a DICOM file, read whole, and its first frame is rendered
 * to a small PNG.  That drives the image description checks, the Modality
 * and VOI LUT sequences, palette descriptors, the window values and every
 * decoder the transfer syntax names with data an attacker controls.
 * The first byte chooses the parameters (format, window function,
 * viewport, region).
 */
#include "fuzz.h"
#include "codec/codec.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    uint8_t sel = data[0];
    AgArena *a = ag_arena_create(64 << 20);
    if (a == NULL) {
        return 0;
    }
    DicomReadOptions opt = {0};
    DicomFile *f = NULL;
    AgError err;
    if (dicom_read_buffer(data + 1, size - 1, &opt, a, &f, &err) == AG_OK) {
        CodecRenderParams p;
        codec_render_params_init(&p);
        p.format = (sel & 1) ? CODEC_RENDER_PNG : CODEC_RENDER_JPEG;
        p.width = 1u + (sel >> 1 & 7u) * 9u;
        p.height = 1u + (sel >> 4 & 3u) * 13u;
        if (sel & 0x40) {
            codec_render_parse_window("40,400,sigmoid", &p, &err);
        }
        if (sel & 0x80) {
            p.region = true;
            p.sx = 1;
            p.sy = 2;
            p.sw = -7;
            p.sh = 5;
        }
        AgBuf out;
        ag_buf_init(&out, 16 << 20);
        codec_render_frame(f, NULL, 0, &p, &out, &err);
        ag_buf_deinit(&out);
    }
    ag_arena_destroy(a);
    return 0;
}
