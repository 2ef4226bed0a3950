/*
 * test_codec.c — the codec core (image validation, frame location in
 * encapsulated pixel data, PS3.5 A.4) and the RLE codec (PS3.5 Annex G):
 * hand-built segments, bit-exact round trips, and corrupt streams cut at
 * every offset (run under ASan: nothing may be read or written outside the
 * buffers).
 */
#include "../test_util.h"

#include "codec/codec.h"
#include "codec/codec_int.h"
#include "dicom/dicom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RLE_TS "1.2.840.10008.1.2.5"

/* ---- helpers ----------------------------------------------------------- */

typedef struct Fixture {
    AgArena *a;
    DicomDataset *ds;
} Fixture;

static void set_us(DicomDataset *ds, uint16_t g, uint16_t e, int64_t v)
{
    AgError err;
    assert_int_equal(dicom_set_ints(ds, DICOM_TAG(g, e), DICOM_VR_US, &v, 1,
                                    &err), AG_OK);
}

static void set_str(DicomDataset *ds, uint16_t g, uint16_t e, DicomVR vr,
                    const char *v)
{
    AgError err;
    assert_int_equal(dicom_set_string(ds, DICOM_TAG(g, e), vr, v, &err),
                     AG_OK);
}

/* A valid 4x3 16-bit monochrome image description. */
static void image_attrs(DicomDataset *ds)
{
    set_us(ds, 0x0028, 0x0010, 4);
    set_us(ds, 0x0028, 0x0011, 3);
    set_us(ds, 0x0028, 0x0002, 1);
    set_us(ds, 0x0028, 0x0100, 16);
    set_us(ds, 0x0028, 0x0101, 12);
    set_us(ds, 0x0028, 0x0102, 11);
    set_us(ds, 0x0028, 0x0103, 0);
    set_str(ds, 0x0028, 0x0004, DICOM_VR_CS, "MONOCHROME2");
}

static int setup(void **state)
{
    Fixture *fx = calloc(1, sizeof *fx);
    fx->a = ag_arena_create(64 << 20);
    fx->ds = dicom_dataset_create(fx->a);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    Fixture *fx = *state;
    ag_arena_destroy(fx->a);
    free(fx);
    return 0;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* ---- image validation ---------------------------------------------------- */

static void test_image_valid(void **state)
{
    Fixture *fx = *state;
    image_attrs(fx->ds);
    CodecImage im;
    AgError err;
    assert_int_equal(codec_image_from_dataset(fx->ds, &im, &err), AG_OK);
    assert_int_equal(im.rows, 4);
    assert_int_equal(im.columns, 3);
    assert_int_equal(im.frames, 1);
    assert_int_equal(im.bits_stored, 12);
    assert_string_equal(im.photometric, "MONOCHROME2");
    assert_int_equal(codec_frame_size(&im), 24);

    set_str(fx->ds, 0x0028, 0x0008, DICOM_VR_IS, "7");
    assert_int_equal(codec_image_from_dataset(fx->ds, &im, &err), AG_OK);
    assert_int_equal(im.frames, 7);
}

typedef struct BadCase {
    uint16_t e;          /* (0028,eeee) */
    int64_t v;           /* value, or -1 to delete the element */
    const char *name;    /* expected in the message */
} BadCase;

static void test_image_bad_attributes(void **state)
{
    static const BadCase cases[] = {
        {0x0010, 0, "Rows"}, {0x0010, 65536, "Rows"}, {0x0010, -1, "Rows"},
        {0x0011, 0, "Columns"}, {0x0011, 70000, "Columns"},
        {0x0011, -1, "Columns"},
        {0x0002, 2, "Samples per Pixel"}, {0x0002, 4, "Samples per Pixel"},
        {0x0100, 12, "Bits Allocated"}, {0x0100, 0, "Bits Allocated"},
        {0x0100, 64, "Bits Allocated"}, {0x0100, -1, "Bits Allocated"},
        {0x0101, 17, "Bits Stored"}, {0x0101, 0, "Bits Stored"},
        {0x0102, 15, "High Bit"}, {0x0102, 12, "High Bit"},
        {0x0103, 2, "Pixel Representation"},
        {0x0006, 2, "Planar Configuration"},
        {0x0008, 0, "Number of Frames"},
        {0x0008, 100001, "Number of Frames"},
        {0x0004, -1, "Photometric"},
    };
    Fixture *fx = *state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        AgArena *a = ag_arena_create(1 << 20);
        DicomDataset *ds = dicom_dataset_create(a);
        image_attrs(ds);
        uint32_t tag = DICOM_TAG(0x0028, cases[i].e);
        if (cases[i].v < 0) {
            dicom_dataset_remove(ds, tag);
        } else if (cases[i].e == 0x0008) {
            char s[24];
            snprintf(s, sizeof s, "%lld", (long long)cases[i].v);
            set_str(ds, 0x0028, 0x0008, DICOM_VR_IS, s);
        } else if (cases[i].v > 65535) {
            /* US cannot hold it: an IS-valued element stands in for a
             * lying UN/IS value read from the wire. */
            char s[24];
            snprintf(s, sizeof s, "%lld", (long long)cases[i].v);
            set_str(ds, 0x0028, cases[i].e, DICOM_VR_IS, s);
        } else {
            set_us(ds, 0x0028, cases[i].e, cases[i].v);
        }
        CodecImage im;
        AgError err;
        ag_error_clear(&err);
        int rc = codec_image_from_dataset(ds, &im, &err);
        if (rc == AG_OK || strstr(err.msg, cases[i].name) == NULL) {
            fail_msg("case %zu (0028,%04x)=%lld: rc %d msg \"%s\"", i,
                     cases[i].e, (long long)cases[i].v, rc, err.msg);
        }
        ag_arena_destroy(a);
    }
    (void)fx;
}

static void test_image_frame_too_large(void **state)
{
    Fixture *fx = *state;
    image_attrs(fx->ds);
    set_us(fx->ds, 0x0028, 0x0010, 65535);
    set_us(fx->ds, 0x0028, 0x0011, 65535);
    set_us(fx->ds, 0x0028, 0x0002, 3);
    set_us(fx->ds, 0x0028, 0x0100, 32);
    set_us(fx->ds, 0x0028, 0x0101, 32);
    set_us(fx->ds, 0x0028, 0x0102, 31);
    CodecImage im;
    AgError err;
    assert_int_equal(codec_image_from_dataset(fx->ds, &im, &err),
                     AG_ERR_LIMIT);
}

static void test_frame_size(void **state)
{
    (void)state;
    CodecImage im = {.rows = 5, .columns = 3, .samples_per_pixel = 1,
                     .bits_allocated = 1};
    assert_int_equal(codec_frame_size(&im), 2);   /* 15 bits */
    im.bits_allocated = 8;
    assert_int_equal(codec_frame_size(&im), 15);
    im.samples_per_pixel = 3;
    im.bits_allocated = 16;
    assert_int_equal(codec_frame_size(&im), 90);
    im.rows = im.columns = 65535;
    im.bits_allocated = 32;
    assert_true(codec_frame_size(&im) == (uint64_t)65535 * 65535 * 12);
}

static void test_can_decode_encode(void **state)
{
    (void)state;
    assert_true(codec_can_decode(RLE_TS));
    assert_true(codec_can_encode(RLE_TS));
    assert_true(codec_can_decode("1.2.840.10008.1.2.4.70"));
    assert_false(codec_can_encode("1.2.840.10008.1.2.4.70"));
    assert_true(codec_can_decode("1.2.840.10008.1.2.4.201"));
    assert_false(codec_can_encode("1.2.840.10008.1.2.4.201"));
    assert_true(codec_can_encode("1.2.840.10008.1.2.4.90"));
    assert_true(codec_can_decode(DICOM_TS_EXPLICIT_LE));
    assert_false(codec_can_decode("1.2.840.10008.1.2.4.100"));   /* MPEG2 */
    assert_false(codec_can_decode(NULL));
}

/* ---- frames of encapsulated pixel data ---------------------------------- */

/* Encapsulated pixel data: fragment 0 is the BOT (bot_n offsets), then
 * fragments of the given lengths filled with their index (or FFD8 when
 * soi[i]). */
static DicomElement *put_frags(DicomDataset *ds, const uint32_t *bot,
                               uint32_t bot_n, const uint32_t *lens,
                               uint32_t n, const bool *soi)
{
    AgArena *a = dicom_dataset_arena(ds);
    DicomFragment *fr = ag_arena_zalloc(a, (n + 1) * sizeof *fr);
    fr[0].length = bot_n * 4;
    fr[0].data = bot_n ? ag_arena_alloc(a, bot_n * 4) : NULL;
    for (uint32_t i = 0; i < bot_n; i++) {
        memcpy(fr[0].data + 4 * i, &bot[i], 4);   /* host is LE */
    }
    for (uint32_t i = 0; i < n; i++) {
        fr[i + 1].length = lens[i];
        fr[i + 1].data = ag_arena_alloc(a, lens[i] ? lens[i] : 1);
        memset(fr[i + 1].data, (int)(i + 1), lens[i]);
        if (soi != NULL && soi[i]) {
            fr[i + 1].data[0] = 0xff;
            fr[i + 1].data[1] = 0xd8;
        }
    }
    DicomElement el = {.tag = DICOM_TAG_PIXEL_DATA, .vr = DICOM_VR_OB,
                       .flags = DICOM_EL_ENCAPSULATED |
                                DICOM_EL_UNDEFINED_LENGTH,
                       .length = DICOM_UNDEFINED_LENGTH, .nfrags = n + 1,
                       .frags = fr};
    DicomElement *out;
    assert_int_equal(dicom_dataset_put(ds, &el, &out), AG_OK);
    return out;
}

static void expect_frame(const DicomDataset *ds, const DicomElement *px,
                         uint32_t frames, uint32_t i, size_t len,
                         const uint8_t *first_bytes, size_t nfirst,
                         bool owned_expected)
{
    const uint8_t *p;
    size_t n;
    bool owned;
    AgError err;
    ag_error_clear(&err);
    int rc = codec_frame_bytes(ds, px, frames, i, &p, &n, &owned, &err);
    if (rc != AG_OK) {
        fail_msg("frame %u: %s", i, err.msg);
    }
    assert_int_equal(n, len);
    assert_int_equal(owned, owned_expected);
    assert_memory_equal(p, first_bytes, nfirst);
    if (owned) {
        ag_free((void *)p);
    }
}

static void expect_frame_error(const DicomDataset *ds,
                               const DicomElement *px, uint32_t frames,
                               uint32_t i)
{
    const uint8_t *p = (const uint8_t *)1;
    size_t n = 1;
    bool owned = true;
    AgError err;
    int rc = codec_frame_bytes(ds, px, frames, i, &p, &n, &owned, &err);
    assert_int_not_equal(rc, AG_OK);
    assert_null(p);
    assert_false(owned);
}

static void test_frames_bot(void **state)
{
    Fixture *fx = *state;
    /* Frame 0 = fragment 1 (6 bytes); frame 1 = fragments 2+3 (4+2);
     * frame 2 = fragment 4 (8).  Item positions: 0, 14, 26, 36. */
    static const uint32_t lens[] = {6, 4, 2, 8};
    static const uint32_t bot[] = {0, 14, 36};
    DicomElement *px = put_frags(fx->ds, bot, 3, lens, 4, NULL);
    static const uint8_t f0[] = {1, 1}, f1[] = {2, 2, 2, 2, 3, 3},
                         f2[] = {4};
    expect_frame(fx->ds, px, 3, 0, 6, f0, 2, false);
    expect_frame(fx->ds, px, 3, 1, 6, f1, 6, true);
    expect_frame(fx->ds, px, 3, 2, 8, f2, 1, false);
    expect_frame_error(fx->ds, px, 3, 3);          /* past the frames */
    expect_frame_error(fx->ds, px, 4, 0);          /* BOT count wrong */
}

static void test_frames_bot_outside(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {6, 4};
    static const uint32_t bad1[] = {0, 1000};      /* past the data */
    DicomElement *px = put_frags(fx->ds, bad1, 2, lens, 2, NULL);
    expect_frame_error(fx->ds, px, 2, 0);
    expect_frame_error(fx->ds, px, 2, 1);
    static const uint32_t bad2[] = {0, 13};        /* mid-fragment */
    px = put_frags(fx->ds, bad2, 2, lens, 2, NULL);
    expect_frame_error(fx->ds, px, 2, 1);
    static const uint32_t bad3[] = {14, 0};        /* decreasing */
    px = put_frags(fx->ds, bad3, 2, lens, 2, NULL);
    expect_frame_error(fx->ds, px, 2, 0);
    expect_frame_error(fx->ds, px, 2, 1);
    static const uint32_t bad4[] = {0xfffffff0u, 0xfffffff8u};
    px = put_frags(fx->ds, bad4, 2, lens, 2, NULL);
    expect_frame_error(fx->ds, px, 2, 0);
    expect_frame_error(fx->ds, px, 2, 1);
}

static void set_eot(DicomDataset *ds, const uint64_t *off,
                    const uint64_t *len, size_t n)
{
    /* Note: inserting elements moves them; callers find Pixel Data again. */
    AgError err;
    assert_int_equal(dicom_set_bytes(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE,
                                     DICOM_VR_OV, off, n * 8, &err), AG_OK);
    assert_int_equal(dicom_set_bytes(ds,
                                     DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS,
                                     DICOM_VR_OV, len, n * 8, &err), AG_OK);
}

static void test_frames_eot(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {6, 10};
    DicomElement *px = put_frags(fx->ds, NULL, 0, lens, 2, NULL);
    static const uint64_t off[] = {0, 14}, len[] = {5, 10};
    set_eot(fx->ds, off, len, 2);
    px = dicom_dataset_find(fx->ds, DICOM_TAG_PIXEL_DATA);
    static const uint8_t f0[] = {1}, f1[] = {2};
    expect_frame(fx->ds, px, 2, 0, 5, f0, 1, false);
    expect_frame(fx->ds, px, 2, 1, 10, f1, 1, false);
    expect_frame_error(fx->ds, px, 3, 0);          /* count mismatch */

    static const uint64_t off2[] = {0, 1u << 31}, len2[] = {6, 10};
    set_eot(fx->ds, off2, len2, 2);                /* offset outside */
    expect_frame_error(fx->ds, px, 2, 1);
    static const uint64_t off3[] = {0, 14}, len3[] = {6, 11};
    set_eot(fx->ds, off3, len3, 2);                /* length past it */
    expect_frame_error(fx->ds, px, 2, 1);
    static const uint64_t off4[] = {0, UINT64_MAX}, len4[] = {6, UINT64_MAX};
    set_eot(fx->ds, off4, len4, 2);
    expect_frame_error(fx->ds, px, 2, 1);
}

static void test_frames_one_per_fragment(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {2, 4, 6};
    DicomElement *px = put_frags(fx->ds, NULL, 0, lens, 3, NULL);
    static const uint8_t f[] = {1, 2, 3};
    for (uint32_t i = 0; i < 3; i++) {
        expect_frame(fx->ds, px, 3, i, lens[i], &f[i], 1, false);
    }
}

static void test_frames_single_frame_multi_fragment(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {2, 0, 4};
    DicomElement *px = put_frags(fx->ds, NULL, 0, lens, 3, NULL);
    static const uint8_t all[] = {1, 1, 3, 3, 3, 3};
    expect_frame(fx->ds, px, 1, 0, 6, all, 6, true);
}

static void test_frames_soi_split(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {4, 2, 4, 4, 2};
    static const bool soi[] = {true, false, true, true, false};
    DicomElement *px = put_frags(fx->ds, NULL, 0, lens, 5, soi);
    static const uint8_t f0[] = {0xff, 0xd8, 1, 1, 2, 2};
    static const uint8_t f1[] = {0xff, 0xd8, 3, 3};
    static const uint8_t f2[] = {0xff, 0xd8, 4, 4, 5, 5};
    expect_frame(fx->ds, px, 3, 0, 6, f0, 6, true);
    expect_frame(fx->ds, px, 3, 1, 4, f1, 4, false);
    expect_frame(fx->ds, px, 3, 2, 6, f2, 6, true);
    expect_frame_error(fx->ds, px, 2, 0);   /* 3 SOIs for 2 frames */
    expect_frame_error(fx->ds, px, 4, 0);   /* 3 SOIs for 4 frames */

    static const bool nosoi[] = {false, true, true, true, false};
    px = put_frags(fx->ds, NULL, 0, lens, 5, nosoi);
    expect_frame_error(fx->ds, px, 3, 0);   /* first is no frame start */
}

static void test_frames_refused(void **state)
{
    Fixture *fx = *state;
    static const uint32_t lens[] = {2};
    DicomElement *px = put_frags(fx->ds, NULL, 0, lens, 1, NULL);
    px->frags[1].data = NULL;               /* not loaded */
    expect_frame_error(fx->ds, px, 1, 0);
    DicomElement native = {.tag = DICOM_TAG_PIXEL_DATA, .vr = DICOM_VR_OW};
    expect_frame_error(fx->ds, &native, 1, 0);
    DicomElement empty = {.tag = DICOM_TAG_PIXEL_DATA, .vr = DICOM_VR_OB,
                          .flags = DICOM_EL_ENCAPSULATED, .nfrags = 1,
                          .frags = px->frags};
    expect_frame_error(fx->ds, &empty, 1, 0);
    expect_frame_error(fx->ds, px, 0, 0);
}

/* ---- RLE ----------------------------------------------------------------- */

static CodecImage mkimage(uint32_t rows, uint32_t cols, uint16_t spp,
                          uint16_t bits)
{
    CodecImage im = {.rows = rows, .columns = cols, .frames = 1,
                     .samples_per_pixel = spp, .bits_allocated = bits,
                     .bits_stored = bits, .high_bit = (uint16_t)(bits - 1)};
    strcpy(im.photometric, spp == 3 ? "RGB" : "MONOCHROME2");
    return im;
}

static void rle_header(uint8_t *h, uint32_t nseg, const uint32_t *offs)
{
    memset(h, 0, 64);
    memcpy(h, &nseg, 4);
    for (uint32_t i = 0; i < nseg; i++) {
        memcpy(h + 4 + 4 * i, &offs[i], 4);
    }
}

static void test_rle_hand_built(void **state)
{
    (void)state;
    /* 1 x 10 8-bit: literal "a b c", replicate x4, no-op, literal "d",
     * replicate y2 — then trailing no-ops. */
    static const uint8_t seg[] = {0x02, 'a', 'b', 'c', 0xfd, 'x', 0x80,
                                  0x00, 'd', 0xff, 'y', 0x80, 0x80};
    uint8_t in[64 + sizeof seg];
    static const uint32_t offs[] = {64};
    rle_header(in, 1, offs);
    memcpy(in + 64, seg, sizeof seg);
    CodecImage im = mkimage(1, 10, 1, 8);
    uint8_t out[10];
    AgError err;
    ag_error_clear(&err);
    assert_int_equal(codec__rle_decode(&im, in, sizeof in, out, sizeof out,
                                       &err), AG_OK);
    assert_memory_equal(out, "abcxxxxdyy", 10);

    /* 16-bit, 2 pixels: MSB segment then LSB segment. */
    uint8_t in16[64 + 6];
    static const uint32_t offs16[] = {64, 67};
    rle_header(in16, 2, offs16);
    static const uint8_t seg16[] = {0x01, 0x12, 0x56, 0xff, 0x34, 0x00};
    memcpy(in16 + 64, seg16, sizeof seg16);
    CodecImage im16 = mkimage(1, 2, 1, 16);
    uint8_t out16[4];
    assert_int_equal(codec__rle_decode(&im16, in16, sizeof in16, out16, 4,
                                       &err), AG_OK);
    static const uint8_t want16[] = {0x34, 0x12, 0x34, 0x56};
    assert_memory_equal(out16, want16, 4);

    /* RGB 8-bit, 2 pixels: R, G, B planes become by-pixel. */
    uint8_t inrgb[64 + 9];
    static const uint32_t offsrgb[] = {64, 67, 70};
    rle_header(inrgb, 3, offsrgb);
    static const uint8_t segrgb[] = {0xff, 0x10, 0x00, 0xff, 0x20, 0x00,
                                     0x01, 0x30, 0x31};
    memcpy(inrgb + 64, segrgb, sizeof segrgb);
    CodecImage imrgb = mkimage(1, 2, 3, 8);
    uint8_t outrgb[6];
    assert_int_equal(codec__rle_decode(&imrgb, inrgb, sizeof inrgb, outrgb,
                                       6, &err), AG_OK);
    static const uint8_t wantrgb[] = {0x10, 0x20, 0x30, 0x10, 0x20, 0x31};
    assert_memory_equal(outrgb, wantrgb, 6);
}

static void expect_rle_parse_error(const CodecImage *im, const uint8_t *in,
                                   size_t n, const char *needle)
{
    uint64_t fsz = codec_frame_size(im);
    uint8_t *out = malloc((size_t)fsz);
    AgError err;
    ag_error_clear(&err);
    int rc = codec__rle_decode(im, in, n, out, (size_t)fsz, &err);
    if (rc != AG_ERR_PARSE || strstr(err.msg, needle) == NULL) {
        fail_msg("rc %d msg \"%s\", wanted \"%s\"", rc, err.msg, needle);
    }
    free(out);
}

static void test_rle_corrupt_headers(void **state)
{
    (void)state;
    CodecImage im = mkimage(1, 4, 1, 8);
    uint8_t in[64 + 4];
    static const uint8_t seg[] = {0xfd, 7, 0x80, 0x80};
    memcpy(in + 64, seg, sizeof seg);
    uint32_t offs[2] = {64, 0};

    rle_header(in, 1, offs);
    uint8_t out[4];
    AgError err;
    assert_int_equal(codec__rle_decode(&im, in, sizeof in, out, 4, &err),
                     AG_OK);

    expect_rle_parse_error(&im, in, 63, "header");
    rle_header(in, 2, offs);
    expect_rle_parse_error(&im, in, sizeof in, "segments");
    uint32_t huge = 0xffffffffu;
    memcpy(in, &huge, 4);
    expect_rle_parse_error(&im, in, sizeof in, "segments");
    offs[0] = 63;
    rle_header(in, 1, offs);
    expect_rle_parse_error(&im, in, sizeof in, "segment 0 offset");
    offs[0] = 69;
    rle_header(in, 1, offs);
    expect_rle_parse_error(&im, in, sizeof in, "segment 0 offset");
    offs[0] = 0xffffffffu;
    rle_header(in, 1, offs);
    expect_rle_parse_error(&im, in, sizeof in, "segment 0 offset");

    /* Two segments with decreasing offsets. */
    CodecImage im16 = mkimage(1, 2, 1, 16);
    uint8_t in16[64 + 6] = {0};
    uint32_t o16[2] = {67, 64};
    rle_header(in16, 2, o16);
    expect_rle_parse_error(&im16, in16, sizeof in16, "segment 1 offset");

    /* Decodes short: replicate 4 of 4, then nothing for the next plane. */
    o16[0] = 64;
    o16[1] = 70;
    rle_header(in16, 2, o16);
    static const uint8_t s16[] = {0xff, 1, 0x80, 0x80, 0x80, 0x80};
    memcpy(in16 + 64, s16, sizeof s16);
    expect_rle_parse_error(&im16, in16, sizeof in16, "segment 1 decodes to 0");

    /* Decodes long: a replicate run of 3 into a plane of 2. */
    o16[1] = 66;
    rle_header(in16, 2, o16);
    static const uint8_t l16[] = {0xff, 1, 0xfe, 2, 0x01, 5};
    memcpy(in16 + 64, l16, sizeof l16);
    expect_rle_parse_error(&im16, in16, sizeof in16, "segment 1 decodes to "
                           "more");
    /* Decodes long: a literal run of 4 into a plane of 2. */
    static const uint8_t l16b[] = {0xff, 1, 0x03, 2, 3, 4};
    memcpy(in16 + 64, l16b, sizeof l16b);
    expect_rle_parse_error(&im16, in16, sizeof in16 - 1, "segment 1");
    /* Decodes long: extra runs after the plane is full. */
    static const uint8_t l16c[] = {0xff, 1, 0xff, 2, 0x00, 5};
    memcpy(in16 + 64, l16c, sizeof l16c);
    expect_rle_parse_error(&im16, in16, sizeof in16, "segment 1 decodes to "
                           "more");
    /* Truncated literal. */
    static const uint8_t t16[] = {0xff, 1, 0x01, 2, 0x00, 0x00};
    memcpy(in16 + 64, t16, sizeof t16);
    expect_rle_parse_error(&im16, in16, 67, "segment 1 is truncated");

    /* Unsupported geometry and wrong output sizes. */
    CodecImage im1 = mkimage(1, 4, 1, 1);
    assert_int_equal(codec__rle_decode(&im1, in, sizeof in, out, 1, &err),
                     AG_ERR_UNSUPPORTED);
    CodecImage im4 = mkimage(1, 4, 4, 8);
    assert_int_equal(codec__rle_decode(&im4, in, sizeof in, out, 4, &err),
                     AG_ERR_UNSUPPORTED);
    assert_int_equal(codec__rle_decode(&im, in, sizeof in, out, 3, &err),
                     AG_ERR_INVALID);
}

static void fill_random(uint8_t *p, size_t n, int mode)
{
    for (size_t i = 0; i < n;) {
        if (mode == 0) {                         /* noise */
            p[i++] = (uint8_t)rnd();
        } else {                                 /* runs of random length */
            size_t run = 1 + rnd() % (mode == 1 ? 5 : 300);
            uint8_t v = (uint8_t)(rnd() % 4);
            for (size_t k = 0; k < run && i < n; k++) {
                p[i++] = v;
            }
        }
    }
}

static void roundtrip(const CodecImage *im, int mode)
{
    size_t fsz = (size_t)codec_frame_size(im);
    uint8_t *src = malloc(fsz), *dst = malloc(fsz);
    fill_random(src, fsz, mode);
    AgBuf b;
    ag_buf_init(&b, 0);
    AgError err;
    ag_error_clear(&err);
    assert_int_equal(codec__rle_encode(im, src, fsz, &b, &err), AG_OK);
    assert_int_equal(b.len % 2, 0);
    memset(dst, 0xee, fsz);
    int rc = codec__rle_decode(im, b.data, b.len, dst, fsz, &err);
    if (rc != AG_OK) {
        fail_msg("%ux%u spp %u bits %u mode %d: %s", im->rows, im->columns,
                 im->samples_per_pixel, im->bits_allocated, mode, err.msg);
    }
    assert_memory_equal(src, dst, fsz);

    /* Through the public dispatch too. */
    ag_buf_reset(&b);
    assert_int_equal(codec_encode_frame(RLE_TS, im, src, fsz, &b, &err),
                     AG_OK);
    memset(dst, 0, fsz);
    assert_int_equal(codec_decode_frame(RLE_TS, im, b.data, b.len, dst, fsz,
                                        &err), AG_OK);
    assert_memory_equal(src, dst, fsz);
    ag_buf_deinit(&b);
    free(src);
    free(dst);
}

static void test_rle_roundtrip(void **state)
{
    (void)state;
    static const uint16_t bits[] = {8, 16, 32};
    static const uint16_t spp[] = {1, 3};
    static const uint32_t dims[][2] = {{1, 1}, {1, 2}, {3, 7}, {16, 16},
                                       {1, 129}, {2, 300}, {64, 61}};
    for (size_t b = 0; b < 3; b++) {
        for (size_t s = 0; s < 2; s++) {
            for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
                for (int mode = 0; mode < 3; mode++) {
                    CodecImage im = mkimage(dims[d][0], dims[d][1], spp[s],
                                            bits[b]);
                    roundtrip(&im, mode);
                }
            }
        }
    }
}

static void test_rle_runs_at_limits(void **state)
{
    (void)state;
    /* 128-byte replicate and literal runs, then one more byte. */
    CodecImage im = mkimage(1, 385, 1, 8);
    uint8_t src[385];
    memset(src, 9, 129);
    for (size_t i = 129; i < 385; i++) {
        src[i] = (uint8_t)(i * 7 + (i & 1));
    }
    AgBuf b;
    ag_buf_init(&b, 0);
    AgError err;
    assert_int_equal(codec__rle_encode(&im, src, sizeof src, &b, &err),
                     AG_OK);
    uint8_t dst[385];
    assert_int_equal(codec__rle_decode(&im, b.data, b.len, dst, sizeof dst,
                                       &err), AG_OK);
    assert_memory_equal(src, dst, sizeof src);
    /* A cap too small for the output is an error that leaves out as it
     * was. */
    AgBuf small;
    ag_buf_init(&small, 70);
    assert_int_not_equal(codec__rle_encode(&im, src, sizeof src, &small,
                                           &err), AG_OK);
    assert_int_equal(small.len, 0);
    ag_buf_deinit(&small);
    ag_buf_deinit(&b);
}

/* Cut a valid stream at every length and flip every byte: the decoder
 * answers AG_OK or AG_ERR_PARSE and (ASan) stays inside its buffers. */
static void test_rle_truncation_and_corruption(void **state)
{
    (void)state;
    static const CodecImage ims[] = {
        {.rows = 5, .columns = 7, .samples_per_pixel = 3,
         .bits_allocated = 16},
        {.rows = 9, .columns = 4, .samples_per_pixel = 1,
         .bits_allocated = 32},
        {.rows = 8, .columns = 8, .samples_per_pixel = 1,
         .bits_allocated = 8},
    };
    for (size_t k = 0; k < sizeof ims / sizeof ims[0]; k++) {
        const CodecImage *im = &ims[k];
        size_t fsz = (size_t)codec_frame_size(im);
        uint8_t *src = malloc(fsz);
        fill_random(src, fsz, 1);
        AgBuf b;
        ag_buf_init(&b, 0);
        AgError err;
        assert_int_equal(codec__rle_encode(im, src, fsz, &b, &err), AG_OK);
        for (size_t cut = 0; cut < b.len; cut++) {
            /* An exact-size heap copy so ASan sees reads past the cut. */
            uint8_t *in = malloc(cut ? cut : 1);
            memcpy(in, b.data, cut);
            uint8_t *out = malloc(fsz);
            int rc = codec__rle_decode(im, in, cut, out, fsz, &err);
            /* Only the trailing pad byte may go. */
            if (cut + 1 < b.len) {
                assert_int_equal(rc, AG_ERR_PARSE);
            } else {
                assert_true(rc == AG_OK || rc == AG_ERR_PARSE);
            }
            free(in);
            free(out);
        }
        for (size_t pos = 0; pos < b.len; pos++) {
            for (int bit = 0; bit < 8; bit++) {
                uint8_t *in = malloc(b.len);
                memcpy(in, b.data, b.len);
                in[pos] ^= (uint8_t)(1u << bit);
                uint8_t *out = malloc(fsz);
                int rc = codec__rle_decode(im, in, b.len, out, fsz, &err);
                assert_true(rc == AG_OK || rc == AG_ERR_PARSE);
                free(in);
                free(out);
            }
        }
        ag_buf_deinit(&b);
        free(src);
    }
}

static void test_rle_random_garbage(void **state)
{
    (void)state;
    CodecImage im = mkimage(6, 5, 3, 16);
    size_t fsz = (size_t)codec_frame_size(&im);
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 64 + rnd() % 200;
        uint8_t *in = malloc(n);
        for (size_t i = 0; i < n; i++) {
            in[i] = (uint8_t)rnd();
        }
        /* A plausible header so the segment decoder is reached. */
        uint32_t nseg = 6;
        memcpy(in, &nseg, 4);
        uint32_t o = 64;
        for (uint32_t s = 0; s < nseg; s++) {
            memcpy(in + 4 + 4 * s, &o, 4);
            o += rnd() % (uint32_t)((n - 64) / 3 + 1);
            if (o > n) {
                o = (uint32_t)n;
            }
        }
        uint8_t *out = malloc(fsz);
        AgError err;
        int rc = codec__rle_decode(&im, in, n, out, fsz, &err);
        assert_true(rc == AG_OK || rc == AG_ERR_PARSE);
        free(in);
        free(out);
    }
}

/* ---- whole-dataset transcode --------------------------------------------- */

static void test_transcode_native_rle_native(void **state)
{
    Fixture *fx = *state;
    image_attrs(fx->ds);
    set_str(fx->ds, 0x0028, 0x0008, DICOM_VR_IS, "3");
    uint8_t pix[3 * 24];
    fill_random(pix, sizeof pix, 1);
    AgError err;
    ag_error_clear(&err);
    assert_int_equal(dicom_set_bytes(fx->ds, DICOM_TAG_PIXEL_DATA,
                                     DICOM_VR_OW, pix, sizeof pix, &err),
                     AG_OK);
    DicomFile f = {.dataset = fx->ds};
    strcpy(f.ts_uid, DICOM_TS_EXPLICIT_LE);
    f.ts = dicom_ts_lookup(f.ts_uid);

    int rc = codec_transcode(&f, RLE_TS, &err);
    if (rc != AG_OK) {
        fail_msg("to rle: %s", err.msg);
    }
    assert_string_equal(f.ts_uid, RLE_TS);
    DicomElement *px = dicom_dataset_find(fx->ds, DICOM_TAG_PIXEL_DATA);
    assert_true(px->flags & DICOM_EL_ENCAPSULATED);
    assert_int_equal(px->nfrags, 4);
    assert_int_equal(px->frags[0].length, 0);

    rc = codec_transcode(&f, DICOM_TS_EXPLICIT_LE, &err);
    if (rc != AG_OK) {
        fail_msg("to native: %s", err.msg);
    }
    px = dicom_dataset_find(fx->ds, DICOM_TAG_PIXEL_DATA);
    assert_false(px->flags & DICOM_EL_ENCAPSULATED);
    assert_int_equal(px->vr, DICOM_VR_OW);
    assert_int_equal(px->length, sizeof pix);
    assert_memory_equal(px->value, pix, sizeof pix);

    /* No encoder: refused, dataset unchanged. */
    assert_int_equal(codec_transcode(&f, "1.2.840.10008.1.2.4.70", &err),
                     AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "no encoder"));
    assert_string_equal(f.ts_uid, DICOM_TS_EXPLICIT_LE);
}

static void test_transcode_planar_rgb(void **state)
{
    Fixture *fx = *state;
    image_attrs(fx->ds);
    set_us(fx->ds, 0x0028, 0x0002, 3);
    set_us(fx->ds, 0x0028, 0x0006, 1);
    set_us(fx->ds, 0x0028, 0x0100, 8);
    set_us(fx->ds, 0x0028, 0x0101, 8);
    set_us(fx->ds, 0x0028, 0x0102, 7);
    set_str(fx->ds, 0x0028, 0x0004, DICOM_VR_CS, "RGB");
    uint8_t planes[36];
    for (size_t i = 0; i < 36; i++) {
        planes[i] = (uint8_t)i;
    }
    AgError err;
    assert_int_equal(dicom_set_bytes(fx->ds, DICOM_TAG_PIXEL_DATA,
                                     DICOM_VR_OB, planes, 36, &err), AG_OK);
    DicomFile f = {.dataset = fx->ds};
    strcpy(f.ts_uid, DICOM_TS_EXPLICIT_LE);
    f.ts = dicom_ts_lookup(f.ts_uid);
    assert_int_equal(codec_transcode(&f, RLE_TS, &err), AG_OK);
    assert_int_equal(codec_transcode(&f, DICOM_TS_EXPLICIT_LE, &err), AG_OK);
    DicomElement *px = dicom_dataset_find(fx->ds, DICOM_TAG_PIXEL_DATA);
    int64_t pc = -1;
    assert_int_equal(dicom_get_int(fx->ds, DICOM_TAG(0x0028, 0x0006), &pc),
                     AG_OK);
    assert_int_equal(pc, 0);
    for (size_t p = 0; p < 12; p++) {
        for (size_t k = 0; k < 3; k++) {
            assert_int_equal(px->value[p * 3 + k], planes[k * 12 + p]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_image_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_bad_attributes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_frame_too_large, setup,
                                        teardown),
        cmocka_unit_test(test_frame_size),
        cmocka_unit_test(test_can_decode_encode),
        cmocka_unit_test_setup_teardown(test_frames_bot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frames_bot_outside, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_frames_eot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frames_one_per_fragment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_frames_single_frame_multi_fragment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frames_soi_split, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_frames_refused, setup,
                                        teardown),
        cmocka_unit_test(test_rle_hand_built),
        cmocka_unit_test(test_rle_corrupt_headers),
        cmocka_unit_test(test_rle_roundtrip),
        cmocka_unit_test(test_rle_runs_at_limits),
        cmocka_unit_test(test_rle_truncation_and_corruption),
        cmocka_unit_test(test_rle_random_garbage),
        cmocka_unit_test_setup_teardown(test_transcode_native_rle_native,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transcode_planar_rgb, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
