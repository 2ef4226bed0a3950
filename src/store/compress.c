/*
 * compress.c — the storage policy "compress uncompressed images on ingest"
 * (issue 5): a native image is re-encoded in a lossless syntax before it
 * becomes a blob.  Before the original is let go, every compressed frame
 * is decoded again and compared with the received bytes; an image the
 * codecs cannot encode, that would not shrink, or that does not come back
 * bit for bit is stored as received.  Only lossless targets are accepted
 * (PS3.5 §8.2: lossy compression is never applied by a storage policy).
 */
#include "store_int.h"

#include "codec/codec.h"

#include <string.h>

bool store__compress_syntax_ok(const char *ts_uid)
{
    static const char *const LOSSLESS[] = {
        "1.2.840.10008.1.2.4.80",   /* JPEG-LS lossless */
        "1.2.840.10008.1.2.5",      /* RLE lossless */
        "1.2.840.10008.1.2.4.90",   /* JPEG 2000 lossless only */
    };
    for (size_t i = 0; ts_uid != NULL && i < 3; i++) {
        if (strcmp(ts_uid, LOSSLESS[i]) == 0) {
            return codec_can_encode(ts_uid);
        }
    }
    return false;
}

/* Every frame of the transcoded pixel data decodes to the original. */
static bool round_trips(const DicomFile *f, const CodecImage *im,
                        const uint8_t *orig, size_t orig_len, AgArena *a)
{
    const DicomElement *px = dicom_dataset_find(f->dataset,
                                                DICOM_TAG_PIXEL_DATA);
    size_t fsz = (size_t)codec_frame_size(im);
    uint8_t *buf = fsz > 0 ? ag_arena_alloc(a, fsz) : NULL;
    if (px == NULL || buf == NULL || (uint64_t)fsz * im->frames > orig_len) {
        return false;
    }
    for (uint32_t i = 0; i < im->frames; i++) {
        const uint8_t *in = NULL;
        size_t in_len = 0;
        bool owned = false;
        AgError e;
        if (codec_frame_bytes(f->dataset, px, im->frames, i, &in, &in_len,
                              &owned, &e) != AG_OK) {
            return false;
        }
        /* Our own encoder's output: decoded in this process. */
        int rc = codec_decode_frame_local(f->ts_uid, im, in, in_len, buf, fsz,
                                          &e);
        if (owned) {
            ag_free((void *)(uintptr_t)in);
        }
        if (rc != AG_OK || memcmp(buf, orig + (size_t)i * fsz, fsz) != 0) {
            return false;
        }
    }
    return true;
}

int store__compress(const char *ts_uid, const uint8_t *data, size_t len,
                    AgBuf *out, bool *changed)
{
    *changed = false;
    AgArena *a = ag_arena_create(len * 4 + ((size_t)64 << 20));
    if (a == NULL) {
        return AG_OK;
    }
    DicomFile *f = NULL;
    AgError e;
    const DicomElement *px = NULL;
    CodecImage im;
    bool ok = dicom_read_buffer(data, len, NULL, a, &f, &e) == AG_OK &&
              f->ts != NULL && !f->ts->encapsulated &&
              (px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA)) !=
                  NULL &&
              px->value != NULL && px->length > 0 &&
              codec_image_from_dataset(f->dataset, &im, &e) == AG_OK &&
              im.bits_allocated >= 8;
    /* The received frames, kept (the arena owns them) for the check. */
    const uint8_t *orig = ok ? px->value : NULL;
    size_t orig_len = ok ? px->length : 0;
    char planar_before = ok ? (char)im.planar_configuration : 0;
    ok = ok && codec_transcode(f, ts_uid, &e) == AG_OK;
    /* A change of planar configuration would change the frame layout:
     * the comparison below would fail anyway; say why here. */
    ok = ok && (im.samples_per_pixel == 1 || planar_before == 0) &&
         round_trips(f, &im, orig, orig_len, a);
    if (ok) {
        size_t mark = out->len;
        ok = dicom_write_file(f, ts_uid, NULL, dicom_sink_buf, out, &e) ==
                 AG_OK &&
             out->len - mark < len;
        if (!ok) {
            out->len = mark;   /* not written, or no smaller */
        }
    }
    *changed = ok;
    ag_arena_destroy(a);
    return AG_OK;
}
