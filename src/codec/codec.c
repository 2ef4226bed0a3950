/*
 * codec.c — the codec core: describing and validating images (PS3.3
 * C.7.6.3), locating frames in encapsulated pixel data (PS3.5 A.4),
 * dispatching one frame to the codec family of its transfer syntax, and
 * transcoding whole data sets.
 *
 * Everything taken from the data set — dimensions, offsets, lengths — is
 * checked with 64-bit arithmetic before it sizes a buffer or an index
 * (SECURITY.md rules 1 and 8).
 */
#include "codec_int.h"

#include <stdatomic.h>

#include <stdio.h>
#include <string.h>

/* ---- the dispatch table ------------------------------------------------ */

typedef enum CodecFamily {
    FAM_NATIVE,
    FAM_RLE,
    FAM_JPEG,           /* baseline and extended, libjpeg-turbo */
    FAM_JPEG_LOSSLESS,  /* process 14 / SV1, no encoder */
    FAM_JPEGLS,
    FAM_J2K,
} CodecFamily;

typedef struct CodecSyntax {
    const char *uid;
    CodecFamily family;
    bool encode;        /* an encoder exists for this syntax */
    bool lossy;         /* encoding loses information (0028,2110) */
    const char *method; /* Lossy Image Compression Method (0028,2114) */
} CodecSyntax;

static const CodecSyntax SYNTAXES[] = {
    {DICOM_TS_IMPLICIT_LE, FAM_NATIVE, true, false, NULL},
    {DICOM_TS_EXPLICIT_LE, FAM_NATIVE, true, false, NULL},
    {DICOM_TS_EXPLICIT_BE, FAM_NATIVE, true, false, NULL},
    {DICOM_TS_DEFLATED_LE, FAM_NATIVE, true, false, NULL},
    {"1.2.840.10008.1.2.5", FAM_RLE, true, false, NULL},
    {"1.2.840.10008.1.2.4.50", FAM_JPEG, true, true, "ISO_10918_1"},
    {"1.2.840.10008.1.2.4.51", FAM_JPEG, true, true, "ISO_10918_1"},
    {"1.2.840.10008.1.2.4.57", FAM_JPEG_LOSSLESS, false, false, NULL},
    {"1.2.840.10008.1.2.4.70", FAM_JPEG_LOSSLESS, false, false, NULL},
    {"1.2.840.10008.1.2.4.80", FAM_JPEGLS, true, false, NULL},
    {"1.2.840.10008.1.2.4.81", FAM_JPEGLS, true, true, "ISO_14495_1"},
    {"1.2.840.10008.1.2.4.90", FAM_J2K, true, false, NULL},
    {"1.2.840.10008.1.2.4.91", FAM_J2K, true, true, "ISO_15444_1"},
    {"1.2.840.10008.1.2.4.201", FAM_J2K, false, false, NULL},
    {"1.2.840.10008.1.2.4.202", FAM_J2K, false, false, NULL},
    {"1.2.840.10008.1.2.4.203", FAM_J2K, false, false, NULL},
};

/* JPEG quality for the lossy JPEG syntaxes; JPEG-LS NEAR for .4.81. */
#define JPEG_QUALITY 90
#define JPEGLS_NEAR 2

static const CodecSyntax *syntax_find(const char *uid)
{
    if (uid == NULL) {
        return NULL;
    }
    /* Compare as dicom_ts_lookup does: trailing NUL/space padding of a
     * UI value is not part of the UID. */
    size_t n = strlen(uid);
    while (n > 0 && (uid[n - 1] == ' ' || uid[n - 1] == '\0')) {
        n--;
    }
    for (size_t i = 0; i < sizeof SYNTAXES / sizeof SYNTAXES[0]; i++) {
        if (strlen(SYNTAXES[i].uid) == n &&
            memcmp(SYNTAXES[i].uid, uid, n) == 0) {
            return &SYNTAXES[i];
        }
    }
    return NULL;
}

bool codec_can_decode(const char *ts_uid)
{
    return syntax_find(ts_uid) != NULL;
}

bool codec_can_encode(const char *ts_uid)
{
    const CodecSyntax *s = syntax_find(ts_uid);
    return s != NULL && s->encode;
}

/* ---- images ------------------------------------------------------------ */

#define TAG_SAMPLES DICOM_TAG(0x0028, 0x0002)
#define TAG_PHOTOMETRIC DICOM_TAG(0x0028, 0x0004)
#define TAG_PLANAR DICOM_TAG(0x0028, 0x0006)
#define TAG_FRAMES DICOM_TAG(0x0028, 0x0008)
#define TAG_ROWS DICOM_TAG(0x0028, 0x0010)
#define TAG_COLUMNS DICOM_TAG(0x0028, 0x0011)
#define TAG_BITS_STORED DICOM_TAG(0x0028, 0x0101)
#define TAG_HIGH_BIT DICOM_TAG(0x0028, 0x0102)
#define TAG_LOSSY DICOM_TAG(0x0028, 0x2110)
#define TAG_LOSSY_RATIO DICOM_TAG(0x0028, 0x2112)
#define TAG_LOSSY_METHOD DICOM_TAG(0x0028, 0x2114)

/* Integer attribute: AG_OK, AG_ERR_NOTFOUND when absent (def is used when
 * def >= 0), AG_ERR_PARSE when present but not an integer. */
static int get_attr(const DicomDataset *ds, uint32_t tag, const char *name,
                    int64_t def, int64_t *out, AgError *err)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    if (el == NULL || el->length == 0) {
        if (def >= 0) {
            *out = def;
            return AG_OK;
        }
        return ag_error_set(err, AG_ERR_INVALID, "image: %s (%04x,%04x) is "
                            "missing", name, DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag));
    }
    if (el->flags & DICOM_EL_NOT_LOADED) {
        return ag_error_set(err, AG_ERR_INVALID, "image: %s (%04x,%04x) is "
                            "not loaded", name, DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag));
    }
    if (dicom_element_int(el, 0, out, NULL) != AG_OK) {
        return ag_error_set(err, AG_ERR_PARSE, "image: %s (%04x,%04x) is not "
                            "an integer", name, DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag));
    }
    return AG_OK;
}

static int bad_value(AgError *err, const char *name, uint32_t tag,
                     int64_t v, const char *why)
{
    return ag_error_set(err, AG_ERR_INVALID, "image: %s (%04x,%04x) %lld %s",
                        name, DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag),
                        (long long)v, why);
}

int codec_image_from_dataset(const DicomDataset *ds, CodecImage *out,
                             AgError *err)
{
    CodecImage im;
    memset(&im, 0, sizeof im);
    int64_t rows, cols, spp, ba, bs, hb, pr, pc, nf;
    int rc = get_attr(ds, TAG_ROWS, "Rows", -1, &rows, err);
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_COLUMNS, "Columns", -1, &cols, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_SAMPLES, "Samples per Pixel", 1, &spp, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, DICOM_TAG_BITS_ALLOCATED, "Bits Allocated", -1,
                      &ba, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_BITS_STORED, "Bits Stored", ba, &bs, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_HIGH_BIT, "High Bit", bs > 0 ? bs - 1 : 0, &hb,
                      err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, DICOM_TAG_PIXEL_REPRESENTATION,
                      "Pixel Representation", 0, &pr, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_PLANAR, "Planar Configuration", 0, &pc, err);
    }
    if (rc == AG_OK) {
        rc = get_attr(ds, TAG_FRAMES, "Number of Frames", 1, &nf, err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    if (rows < 1 || rows > 65535) {
        return bad_value(err, "Rows", TAG_ROWS, rows, "is not 1..65535");
    }
    if (cols < 1 || cols > 65535) {
        return bad_value(err, "Columns", TAG_COLUMNS, cols,
                         "is not 1..65535");
    }
    if (spp != 1 && spp != 3) {
        return bad_value(err, "Samples per Pixel", TAG_SAMPLES, spp,
                         "is not 1 or 3");
    }
    if (ba != 1 && ba != 8 && ba != 16 && ba != 32) {
        return bad_value(err, "Bits Allocated", DICOM_TAG_BITS_ALLOCATED, ba,
                         "is not 1, 8, 16 or 32");
    }
    if (bs < 1 || bs > ba) {
        return bad_value(err, "Bits Stored", TAG_BITS_STORED, bs,
                         "is not 1..Bits Allocated");
    }
    if (hb != bs - 1) {
        return bad_value(err, "High Bit", TAG_HIGH_BIT, hb,
                         "is not Bits Stored - 1");
    }
    if (pr != 0 && pr != 1) {
        return bad_value(err, "Pixel Representation",
                         DICOM_TAG_PIXEL_REPRESENTATION, pr, "is not 0 or 1");
    }
    if (pc != 0 && pc != 1) {
        return bad_value(err, "Planar Configuration", TAG_PLANAR, pc,
                         "is not 0 or 1");
    }
    if (nf < 1 || nf > (int64_t)CODEC_MAX_FRAMES) {
        return bad_value(err, "Number of Frames", TAG_FRAMES, nf,
                         "is not 1..100000");
    }
    im.rows = (uint32_t)rows;
    im.columns = (uint32_t)cols;
    im.samples_per_pixel = (uint16_t)spp;
    im.bits_allocated = (uint16_t)ba;
    im.bits_stored = (uint16_t)bs;
    im.high_bit = (uint16_t)hb;
    im.is_signed = pr == 1;
    im.planar_configuration = (uint16_t)pc;
    im.frames = (uint32_t)nf;

    const DicomElement *pe = dicom_dataset_find(ds, TAG_PHOTOMETRIC);
    if (pe == NULL || pe->length == 0 || pe->value == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "image: Photometric "
                            "Interpretation (0028,0004) is missing");
    }
    size_t s = 0, e = pe->length;
    while (s < e && pe->value[s] == ' ') {
        s++;
    }
    while (e > s && (pe->value[e - 1] == ' ' || pe->value[e - 1] == '\0')) {
        e--;
    }
    if (e - s == 0 || e - s >= sizeof im.photometric) {
        return ag_error_set(err, AG_ERR_INVALID, "image: Photometric "
                            "Interpretation (0028,0004) is empty or longer "
                            "than 16 characters");
    }
    for (size_t i = s; i < e; i++) {
        uint8_t c = pe->value[i];
        /* CS: upper case, digits, '_' and space ("PALETTE COLOR"). */
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ' ')) {
            return ag_error_set(err, AG_ERR_INVALID, "image: Photometric "
                                "Interpretation (0028,0004) is not a "
                                "defined term");
        }
    }
    memcpy(im.photometric, pe->value + s, e - s);
    im.photometric[e - s] = '\0';

    if (codec_frame_size(&im) > CODEC_MAX_FRAME_BYTES) {
        return ag_error_set(err, AG_ERR_LIMIT, "image: a frame of %ux%ux%u "
                            "samples of %u bits is larger than 2 GiB",
                            im.rows, im.columns,
                            (unsigned)im.samples_per_pixel,
                            (unsigned)im.bits_allocated);
    }
    *out = im;
    return AG_OK;
}

uint64_t codec_frame_size(const CodecImage *im)
{
    /* Dimensions are at most 65535 x 65535 x 3 x 32 bits: the product
     * fits 64 bits, but check anyway so a caller's unvalidated image
     * cannot wrap. */
    uint64_t n;
    if (ag_mul_overflow(im->rows, im->columns, &n) ||
        ag_mul_overflow(n, im->samples_per_pixel, &n) ||
        ag_mul_overflow(n, im->bits_allocated, &n)) {
        return UINT64_MAX;
    }
    return (n + 7) / 8;
}

/* ---- frames of encapsulated pixel data (PS3.5 A.4) --------------------- */

/* The offsets of the Basic and Extended Offset Tables count from the first
 * byte of the first fragment's Item tag; every item has an 8-byte header.
 * Data fragment index (1-based) starting at item-stream position pos. */
static int frag_at(const DicomElement *px, uint64_t pos, uint32_t *k)
{
    uint64_t at = 0;
    for (uint32_t j = 1; j < px->nfrags; j++) {
        if (at == pos) {
            *k = j;
            return AG_OK;
        }
        if (at > pos) {
            break;
        }
        at += 8 + (uint64_t)px->frags[j].length;
    }
    return AG_ERR_NOTFOUND;
}

/* Fragments first..last (inclusive, 1-based) as one buffer. */
static int gather(const DicomElement *px, uint32_t first, uint32_t last,
                  const uint8_t **out, size_t *len, bool *owned,
                  AgError *err)
{
    if (first == last) {
        *out = px->frags[first].data;
        *len = px->frags[first].length;
        *owned = false;
        return AG_OK;
    }
    uint64_t total = 0;
    for (uint32_t j = first; j <= last; j++) {
        total += px->frags[j].length;   /* < 2^32 * 2^32: no overflow */
    }
    if (total > CODEC_MAX_FRAME_BYTES) {
        return ag_error_set(err, AG_ERR_LIMIT, "pixel data: frame of %llu "
                            "compressed bytes is larger than 2 GiB",
                            (unsigned long long)total);
    }
    uint8_t *buf = ag_malloc(total > 0 ? (size_t)total : 1);
    if (buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "pixel data: out of memory "
                            "joining fragments");
    }
    size_t at = 0;
    for (uint32_t j = first; j <= last; j++) {
        if (px->frags[j].length > 0) {
            memcpy(buf + at, px->frags[j].data, px->frags[j].length);
            at += px->frags[j].length;
        }
    }
    *out = buf;
    *len = (size_t)total;
    *owned = true;
    return AG_OK;
}

static bool starts_frame(const DicomFragment *f)
{
    /* JPEG family SOI (FFD8), which PS3.5 A.4 notes marks each frame's
     * first fragment; also the JPEG 2000 codestream's SOC+SIZ (FF4F FF51). */
    return f->length >= 2 && f->data[0] == 0xff &&
           (f->data[1] == 0xd8 ||
            (f->length >= 4 && f->data[1] == 0x4f && f->data[2] == 0xff &&
             f->data[3] == 0x51));
}

static uint64_t rd_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i > 0; i--) {
        v = v << 8 | p[i - 1];
    }
    return v;
}

static int frame_from_eot(const DicomDataset *ds, const DicomElement *px,
                          const DicomElement *eot, uint32_t frames,
                          uint32_t i, const uint8_t **out, size_t *len,
                          bool *owned, AgError *err)
{
    const DicomElement *lens =
        dicom_dataset_find(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS);
    if (lens == NULL || eot->value == NULL || lens->value == NULL ||
        eot->length != (uint64_t)frames * 8 ||
        lens->length != (uint64_t)frames * 8) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: extended offset "
                            "table (7fe0,0001/0002) does not hold %u "
                            "offsets and lengths", frames);
    }
    uint64_t off = rd_le(eot->value + (size_t)i * 8, 8);
    uint64_t flen = rd_le(lens->value + (size_t)i * 8, 8);
    uint32_t k;
    if (frag_at(px, off, &k) != AG_OK) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: extended offset "
                            "%llu of frame %u is not the start of a "
                            "fragment", (unsigned long long)off, i);
    }
    /* C.7.6.3.1.8: with an Extended Offset Table each frame is one
     * fragment; its length may leave out the fragment's padding. */
    if (flen > px->frags[k].length) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: extended length "
                            "%llu of frame %u is past its fragment of %u "
                            "bytes", (unsigned long long)flen, i,
                            (unsigned)px->frags[k].length);
    }
    *out = px->frags[k].data;
    *len = (size_t)flen;
    *owned = false;
    return AG_OK;
}

static int frame_from_bot(const DicomElement *px, uint32_t frames,
                          uint32_t i, const uint8_t **out, size_t *len,
                          bool *owned, AgError *err)
{
    const DicomFragment *bot = &px->frags[0];
    if (bot->length % 4 != 0 || bot->length / 4 != frames) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: basic offset "
                            "table of %u bytes does not hold %u offsets",
                            (unsigned)bot->length, frames);
    }
    uint64_t off = rd_le(bot->data + (size_t)i * 4, 4);
    if (i > 0 && off <= rd_le(bot->data + (size_t)(i - 1) * 4, 4)) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: basic offset "
                            "%llu of frame %u does not increase",
                            (unsigned long long)off, i);
    }
    uint32_t first, last = px->nfrags - 1;
    if (frag_at(px, off, &first) != AG_OK) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: basic offset "
                            "%llu of frame %u is not the start of a "
                            "fragment", (unsigned long long)off, i);
    }
    if (i + 1 < frames) {
        uint64_t next = rd_le(bot->data + (size_t)(i + 1) * 4, 4);
        uint32_t k;
        if (next <= off || frag_at(px, next, &k) != AG_OK) {
            return ag_error_set(err, AG_ERR_PARSE, "pixel data: basic offset "
                                "%llu of frame %u is not the start of a "
                                "later fragment", (unsigned long long)next,
                                i + 1);
        }
        last = k - 1;
    }
    return gather(px, first, last, out, len, owned, err);
}

static int frame_from_soi(const DicomElement *px, uint32_t frames,
                          uint32_t i, const uint8_t **out, size_t *len,
                          bool *owned, AgError *err)
{
    uint32_t seen = 0, first = 0, last = px->nfrags - 1;
    if (!starts_frame(&px->frags[1])) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: %u fragments "
                            "for %u frames, no offset table, and the first "
                            "fragment does not start a frame",
                            px->nfrags - 1, frames);
    }
    for (uint32_t j = 1; j < px->nfrags; j++) {
        if (!starts_frame(&px->frags[j])) {
            continue;
        }
        if (seen == i) {
            first = j;
        } else if (seen == i + 1) {
            last = j - 1;
        }
        seen++;
    }
    if (seen != frames) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: %u fragments "
                            "start a frame, Number of Frames is %u", seen,
                            frames);
    }
    return gather(px, first, last, out, len, owned, err);
}

int codec_frame_bytes(const DicomDataset *ds, const DicomElement *pixel,
                      uint32_t frames, uint32_t i, const uint8_t **out,
                      size_t *len, bool *owned, AgError *err)
{
    *out = NULL;
    *len = 0;
    *owned = false;
    if (pixel == NULL || !(pixel->flags & DICOM_EL_ENCAPSULATED)) {
        return ag_error_set(err, AG_ERR_INVALID, "pixel data is not "
                            "encapsulated");
    }
    if (frames == 0 || i >= frames) {
        return ag_error_set(err, AG_ERR_INVALID, "pixel data: frame %u of "
                            "%u", i, frames);
    }
    if (pixel->nfrags < 2) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data: no fragments "
                            "after the basic offset table");
    }
    for (uint32_t j = 0; j < pixel->nfrags; j++) {
        if ((pixel->flags & DICOM_EL_NOT_LOADED) ||
            (pixel->frags[j].length > 0 && pixel->frags[j].data == NULL)) {
            return ag_error_set(err, AG_ERR_INVALID, "pixel data: fragment "
                                "%u is not loaded", j);
        }
    }
    uint32_t nf = pixel->nfrags - 1;
    const DicomElement *eot = ds != NULL
        ? dicom_dataset_find(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE) : NULL;
    if (eot != NULL && eot->length > 0) {
        return frame_from_eot(ds, pixel, eot, frames, i, out, len, owned,
                              err);
    }
    if (pixel->frags[0].length > 0) {
        return frame_from_bot(pixel, frames, i, out, len, owned, err);
    }
    if (nf == frames) {
        return gather(pixel, i + 1, i + 1, out, len, owned, err);
    }
    if (frames == 1) {
        return gather(pixel, 1, nf, out, len, owned, err);
    }
    return frame_from_soi(pixel, frames, i, out, len, owned, err);
}

/* ---- one frame --------------------------------------------------------- */

/* Set by the server: every compressed frame is decoded by the helper
 * processes of sandbox.c (issue 5, "decoding at arm's length"). */
static atomic_bool isolate_decoders;

void codec_isolate_decoders(bool on)
{
    atomic_store(&isolate_decoders, on);
}

int codec_decode_frame(const char *ts_uid, const CodecImage *im,
                       const uint8_t *in, size_t in_len, uint8_t *out,
                       size_t out_len, AgError *err)
{
    if (atomic_load(&isolate_decoders)) {
        return codec_decode_frame_isolated(ts_uid, im, in, in_len, out,
                                           out_len, err);
    }
    return codec_decode_frame_local(ts_uid, im, in, in_len, out, out_len,
                                    err);
}

int codec_decode_frame_local(const char *ts_uid, const CodecImage *im,
                             const uint8_t *in, size_t in_len, uint8_t *out,
                             size_t out_len, AgError *err)
{
    const CodecSyntax *s = syntax_find(ts_uid);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no decoder for "
                            "transfer syntax %s", ts_uid ? ts_uid : "(null)");
    }
    if (codec_frame_size(im) != (uint64_t)out_len) {
        return ag_error_set(err, AG_ERR_INVALID, "decode: output buffer of "
                            "%zu bytes is not one frame", out_len);
    }
    switch (s->family) {
    case FAM_NATIVE:
        /* Native frames are already in the common layout (the reader made
         * them little-endian): a copy, no swapping. */
        if (in_len != out_len) {
            return ag_error_set(err, AG_ERR_PARSE, "native frame of %zu "
                                "bytes, expected %zu", in_len, out_len);
        }
        memcpy(out, in, out_len);
        return AG_OK;
    case FAM_RLE:
        return codec__rle_decode(im, in, in_len, out, out_len, err);
    case FAM_JPEG:
        if (codec__jpeg12_applies(in, in_len)) {   /* process 4, 12-bit */
            return codec__jpeg12_decode(im, in, in_len, out, out_len, err);
        }
        return codec__jpeg_decode(im, in, in_len, out, out_len, err);
    case FAM_JPEG_LOSSLESS:
        return codec__jpeg_lossless_decode(im, in, in_len, out, out_len,
                                           err);
    case FAM_JPEGLS:
        return codec__jpegls_decode(im, in, in_len, out, out_len, err);
    case FAM_J2K:
        return codec__j2k_decode(im, in, in_len, out, out_len, err);
    }
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "no decoder for %s",
                        ts_uid);
}

const char *codec_decoded_photometric(const char *ts_uid,
                                      const CodecImage *im)
{
    const CodecSyntax *s = syntax_find(ts_uid);
    const char *pi = im->photometric;
    if (s == NULL || im->samples_per_pixel != 3) {
        return pi;
    }
    switch (s->family) {
    case FAM_JPEG:
        /* libjpeg converts YCbCr to RGB (and upsamples 4:2:2). */
        if (strcmp(pi, "YBR_FULL_422") == 0 || strcmp(pi, "YBR_FULL") == 0) {
            return "RGB";
        }
        return pi;
    case FAM_JPEGLS:
    case FAM_J2K:
        if (strcmp(pi, "YBR_RCT") == 0 || strcmp(pi, "YBR_ICT") == 0) {
            return "RGB";
        }
        return pi;
    default:
        return pi;
    }
}

int codec_encode_frame(const char *ts_uid, const CodecImage *im,
                       const uint8_t *in, size_t in_len, AgBuf *out,
                       AgError *err)
{
    const CodecSyntax *s = syntax_find(ts_uid);
    if (s == NULL || !s->encode || s->family == FAM_NATIVE) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no encoder for "
                            "transfer syntax %s", ts_uid ? ts_uid : "(null)");
    }
    if (codec_frame_size(im) != (uint64_t)in_len) {
        return ag_error_set(err, AG_ERR_INVALID, "encode: input of %zu bytes "
                            "is not one frame", in_len);
    }
    size_t start = out->len;
    int rc;
    switch (s->family) {
    case FAM_RLE:
        rc = codec__rle_encode(im, in, in_len, out, err);
        break;
    case FAM_JPEG:
        rc = codec__jpeg_encode(im, in, in_len, JPEG_QUALITY, out, err);
        break;
    case FAM_JPEGLS:
        rc = codec__jpegls_encode(im, in, in_len, s->lossy ? JPEGLS_NEAR : 0,
                                  out, err);
        break;
    case FAM_J2K:
        rc = codec__j2k_encode(im, in, in_len, !s->lossy, out, err);
        break;
    default:
        rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "no encoder for %s",
                          ts_uid);
        break;
    }
    if (rc == AG_OK && (out->len - start) % 2 != 0) {
        uint8_t pad = 0;   /* PS3.5 A.4: fragments have even length */
        rc = ag_buf_append(out, &pad, 1);
        if (rc != AG_OK) {
            ag_error_set(err, rc, "encode: output buffer full");
        }
    }
    if (rc != AG_OK) {
        out->len = start;
    }
    return rc;
}

/* ---- whole data sets --------------------------------------------------- */

static void set_ts(DicomFile *f, const char *ts_uid)
{
    size_t n = strlen(ts_uid);
    memcpy(f->ts_uid, ts_uid, n + 1);   /* caller checked n < 65 */
    f->ts = dicom_ts_lookup(ts_uid);
}

/* A 32-bit sample in an OW value of a big-endian file: the reader swapped
 * each 16-bit word, leaving the two words in big-endian order.  Swapping
 * the words gives (and, applied again, undoes) the little-endian layout. */
static void swap_words32(uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i += 4) {
        uint8_t t0 = p[i], t1 = p[i + 1];
        p[i] = p[i + 2];
        p[i + 1] = p[i + 3];
        p[i + 2] = t0;
        p[i + 3] = t1;
    }
}

/* Colour-by-plane (Planar Configuration 1) to colour-by-pixel. */
static void unplane(const CodecImage *im, const uint8_t *in, uint8_t *out)
{
    size_t px = (size_t)im->rows * im->columns;
    size_t b = im->bits_allocated / 8u;
    for (size_t p = 0; p < px; p++) {
        for (size_t k = 0; k < 3; k++) {
            memcpy(out + (p * 3 + k) * b, in + (k * px + p) * b, b);
        }
    }
}

static int arena_fail(AgArena *a, AgError *err, const char *what)
{
    return ag_error_set(err, ag_arena_fail_code(a), "transcode: no memory "
                        "for %s", what);
}

/* Native frames of the source, each in the common layout, back to back:
 * either the element's value itself or a converted copy in the arena. */
static int native_frames(DicomFile *f, const DicomElement *px,
                         const CodecImage *im, uint8_t **out, AgError *err)
{
    AgArena *a = dicom_dataset_arena(f->dataset);
    uint64_t fsz = codec_frame_size(im), total;
    if (ag_mul_overflow(fsz, im->frames, &total) ||
        total > (uint64_t)px->length) {
        return ag_error_set(err, AG_ERR_PARSE, "pixel data (7fe0,0010): %u "
                            "bytes, %u frames of %llu bytes need more",
                            (unsigned)px->length, im->frames,
                            (unsigned long long)fsz);
    }
    if (px->value == NULL || (px->flags & DICOM_EL_NOT_LOADED)) {
        return ag_error_set(err, AG_ERR_INVALID, "pixel data (7fe0,0010) "
                            "is not loaded");
    }
    bool words = f->ts != NULL && f->ts->big_endian &&
                 im->bits_allocated == 32 && px->vr == DICOM_VR_OW;
    bool planes = im->samples_per_pixel == 3 && im->planar_configuration;
    if (!words && !planes) {
        *out = px->value;
        return AG_OK;
    }
    uint8_t *buf = ag_arena_alloc(a, (size_t)total);
    if (buf == NULL) {
        return arena_fail(a, err, "native frames");
    }
    for (uint32_t i = 0; i < im->frames; i++) {
        const uint8_t *src = px->value + (size_t)i * fsz;
        uint8_t *dst = buf + (size_t)i * fsz;
        if (planes) {
            unplane(im, src, dst);
        } else {
            memcpy(dst, src, (size_t)fsz);
        }
    }
    if (words) {
        swap_words32(buf, (size_t)total);
    }
    *out = buf;
    return AG_OK;
}

/* Append text to a multi-valued string attribute (backslash-separated). */
static int append_value(DicomDataset *ds, uint32_t tag, const char *v,
                        AgError *err)
{
    AgArena *a = dicom_dataset_arena(ds);
    const DicomElement *el = dicom_dataset_find(ds, tag);
    char *old = NULL;
    if (el != NULL && el->length > 0 && el->value != NULL &&
        dicom_element_text(el, a, &old, NULL) == AG_OK && old[0] != '\0') {
        char *both = ag_arena_printf(a, "%s\\%s", old, v);
        if (both == NULL) {
            return arena_fail(a, err, "lossy compression attributes");
        }
        v = both;
    }
    return dicom_set_string(ds, tag, 0, v, err);
}

static int put_pixels(DicomDataset *ds, const DicomElement *px,
                      AgError *err)
{
    dicom_dataset_remove(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE);
    dicom_dataset_remove(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS);
    int rc = dicom_dataset_put(ds, px, NULL);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "transcode: storing pixel data");
    }
    return AG_OK;
}

/* Encode every frame (common layout, back to back) into a new encapsulated
 * Pixel Data element: an empty Basic Offset Table, one fragment per frame. */
static int encode_all(DicomFile *f, const CodecSyntax *to,
                      const CodecImage *im, const uint8_t *frames,
                      AgError *err)
{
    AgArena *a = dicom_dataset_arena(f->dataset);
    uint64_t fsz = codec_frame_size(im);
    DicomFragment *frags = ag_arena_zalloc(a, ((size_t)im->frames + 1) *
                                              sizeof *frags);
    if (frags == NULL) {
        return arena_fail(a, err, "fragments");
    }
    AgBuf buf;
    /* Worst cases: RLE 129/128 of the input; JPEG family headers on tiny
     * frames.  Twice the frame plus 1 MiB bounds them all. */
    ag_buf_init(&buf, (size_t)(fsz * 2 + ((size_t)1 << 20)));
    uint64_t compressed = 0;
    int rc = AG_OK;
    for (uint32_t i = 0; i < im->frames && rc == AG_OK; i++) {
        ag_buf_reset(&buf);
        rc = codec_encode_frame(to->uid, im, frames + (size_t)i * fsz,
                                (size_t)fsz, &buf, err);
        if (rc != AG_OK) {
            ag_error_prefix(err, "frame %u: ", i);
            break;
        }
        if (buf.len > UINT32_MAX - 8) {
            rc = ag_error_set(err, AG_ERR_LIMIT, "frame %u: compressed to "
                              "more than 4 GiB", i);
            break;
        }
        frags[i + 1].length = (uint32_t)buf.len;
        frags[i + 1].data = ag_arena_memdup(a, buf.data, buf.len);
        if (frags[i + 1].data == NULL) {
            rc = arena_fail(a, err, "a fragment");
        }
        compressed += buf.len;
    }
    ag_buf_deinit(&buf);
    if (rc != AG_OK) {
        return rc;
    }
    DicomElement px = {
        .tag = DICOM_TAG_PIXEL_DATA,
        .vr = DICOM_VR_OB,
        .flags = DICOM_EL_ENCAPSULATED | DICOM_EL_UNDEFINED_LENGTH,
        .length = DICOM_UNDEFINED_LENGTH,
        .nfrags = im->frames + 1,
        .frags = frags,
    };
    rc = put_pixels(f->dataset, &px, err);
    if (rc == AG_OK && im->samples_per_pixel == 3) {
        int64_t zero = 0;
        rc = dicom_set_ints(f->dataset, TAG_PLANAR, DICOM_VR_US, &zero, 1,
                            err);
    }
    if (rc == AG_OK) {
        /* JPEG (baseline/extended) stores RGB as YCbCr 4:4:4 with a JFIF
         * marker: PS3.5 8.2.1 wants the Photometric Interpretation of the
         * compressed data, YBR_FULL.  Other codecs keep the input's. */
        bool jpeg_color = im->samples_per_pixel == 3 &&
                          strcmp(im->photometric, "RGB") == 0 &&
                          (strcmp(to->uid, "1.2.840.10008.1.2.4.50") == 0 ||
                           strcmp(to->uid, "1.2.840.10008.1.2.4.51") == 0);
        /* JPEG 2000 colour goes through its component transform: YBR_RCT
         * (reversible) or YBR_ICT (irreversible), PS3.5 8.2.4. */
        bool rgb = im->samples_per_pixel == 3 &&
                   strcmp(im->photometric, "RGB") == 0;
        const char *pi = jpeg_color ? "YBR_FULL"
            : rgb && strcmp(to->uid, "1.2.840.10008.1.2.4.90") == 0
                ? "YBR_RCT"
            : rgb && strcmp(to->uid, "1.2.840.10008.1.2.4.91") == 0
                ? "YBR_ICT"
                : im->photometric;
        rc = dicom_set_string(f->dataset, TAG_PHOTOMETRIC, DICOM_VR_CS, pi,
                              err);
    }
    if (rc == AG_OK && to->lossy) {
        char ratio[32];
        double r = compressed > 0
            ? (double)(fsz * im->frames) / (double)compressed : 0.0;
        snprintf(ratio, sizeof ratio, "%.2f", r > 9999999.0 ? 9999999.0 : r);
        rc = dicom_set_string(f->dataset, TAG_LOSSY, DICOM_VR_CS, "01", err);
        if (rc == AG_OK) {
            rc = append_value(f->dataset, TAG_LOSSY_RATIO, ratio, err);
        }
        if (rc == AG_OK) {
            rc = append_value(f->dataset, TAG_LOSSY_METHOD, to->method, err);
        }
    }
    return rc;
}

/* Native frames into a new native Pixel Data value. */
static int store_native(DicomFile *f, const DicomTransferSyntax *to,
                        const CodecImage *im, uint8_t *frames, size_t total,
                        AgError *err)
{
    AgArena *a = dicom_dataset_arena(f->dataset);
    uint8_t *v = frames;
    if (total % 2 != 0) {   /* PS3.5 §8.1.1: pad to even with a zero */
        v = ag_arena_alloc(a, total + 1);
        if (v == NULL) {
            return arena_fail(a, err, "native pixel data");
        }
        memcpy(v, frames, total);
        v[total++] = 0;
    }
    if (total > UINT32_MAX - 1) {
        return ag_error_set(err, AG_ERR_LIMIT, "native pixel data of %zu "
                            "bytes does not fit one element", total);
    }
    DicomVR vr = im->bits_allocated > 8 ? DICOM_VR_OW : DICOM_VR_OB;
    if (to->big_endian && im->bits_allocated == 32) {
        swap_words32(v, total);   /* the writer swaps OW by 16-bit word */
    }
    DicomElement px = {
        .tag = DICOM_TAG_PIXEL_DATA,
        .vr = vr,
        .length = (uint32_t)total,
        .value = v,
    };
    int rc = put_pixels(f->dataset, &px, err);
    if (rc == AG_OK) {
        rc = dicom_set_string(f->dataset, TAG_PHOTOMETRIC, DICOM_VR_CS,
                              im->photometric, err);
    }
    if (rc == AG_OK && im->samples_per_pixel == 3) {
        int64_t zero = 0;
        rc = dicom_set_ints(f->dataset, TAG_PLANAR, DICOM_VR_US, &zero, 1,
                            err);
    }
    return rc;
}

int codec_transcode(DicomFile *f, const char *ts_uid, AgError *err)
{
    const DicomTransferSyntax *to = ts_uid ? dicom_ts_lookup(ts_uid) : NULL;
    if (to == NULL || strlen(ts_uid) >= sizeof f->ts_uid) {
        return ag_error_set(err, AG_ERR_INVALID, "unknown transfer syntax "
                            "%s", ts_uid ? ts_uid : "(null)");
    }
    const CodecSyntax *dst = syntax_find(to->uid);
    const CodecSyntax *src = syntax_find(f->ts_uid);
    DicomElement *px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA);
    bool src_native = px == NULL || !(px->flags & DICOM_EL_ENCAPSULATED);
    bool dst_native = !to->encapsulated;

    if (dst_native && src_native) {
        set_ts(f, to->uid);   /* the writer re-encodes native data */
        return AG_OK;
    }
    if (px == NULL || strcmp(f->ts_uid, to->uid) == 0) {
        set_ts(f, to->uid);   /* nothing to re-encode */
        return AG_OK;
    }
    if (!src_native && (src == NULL || src->family == FAM_NATIVE)) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no decoder for "
                            "transfer syntax %s", f->ts_uid);
    }
    if (!dst_native && (dst == NULL || !dst->encode)) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no encoder for "
                            "transfer syntax %s", to->uid);
    }
    CodecImage im;
    int rc = codec_image_from_dataset(f->dataset, &im, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (im.bits_allocated == 1) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "transcode: 1-bit "
                            "pixel data is not compressed here");
    }
    uint64_t fsz = codec_frame_size(&im), total;
    if (ag_mul_overflow(fsz, im.frames, &total) ||
        total > (uint64_t)SIZE_MAX / 2) {
        return ag_error_set(err, AG_ERR_LIMIT, "transcode: %u frames of "
                            "%llu bytes", im.frames,
                            (unsigned long long)fsz);
    }
    uint8_t *frames = NULL;
    if (src_native) {
        if (strstr(im.photometric, "_422") != NULL ||
            strstr(im.photometric, "_420") != NULL) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "transcode: native "
                                "%s (subsampled) pixel data",
                                im.photometric);
        }
        rc = native_frames(f, px, &im, &frames, err);
        if (rc != AG_OK) {
            return rc;
        }
    } else {
        AgArena *a = dicom_dataset_arena(f->dataset);
        frames = ag_arena_alloc(a, total > 0 ? (size_t)total : 1);
        if (frames == NULL) {
            return arena_fail(a, err, "decoded frames");
        }
        for (uint32_t i = 0; i < im.frames && rc == AG_OK; i++) {
            const uint8_t *in;
            size_t in_len;
            bool owned;
            rc = codec_frame_bytes(f->dataset, px, im.frames, i, &in,
                                   &in_len, &owned, err);
            if (rc == AG_OK) {
                rc = codec_decode_frame(src->uid, &im, in, in_len,
                                        frames + (size_t)i * fsz,
                                        (size_t)fsz, err);
            }
            if (owned) {
                ag_free((void *)in);
            }
            if (rc != AG_OK) {
                ag_error_prefix(err, "frame %u: ", i);
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        const char *pi = codec_decoded_photometric(src->uid, &im);
        if (pi != im.photometric) {
            snprintf(im.photometric, sizeof im.photometric, "%s", pi);
        }
    }
    im.planar_configuration = 0;
    rc = dst_native ? store_native(f, to, &im, frames, (size_t)total, err)
                    : encode_all(f, dst, &im, frames, err);
    if (rc == AG_OK) {
        set_ts(f, to->uid);
    }
    return rc;
}
