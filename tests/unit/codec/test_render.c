/*
 * test_render.c — rendering one frame to PNG/JPEG (codec_render_frame):
 * the LUT math of PS3.3 C.11 against values computed by hand at the
 * edges of each formula, colour models (C.7.6.3.1.2) and palettes,
 * scaling, streaming through a bulk source (only the frame's bytes are
 * read), errors, and every allocation failing in turn.  Output is decoded
 * with libspng / TurboJPEG, not compared byte by byte.
 */
#include "../test_util.h"

#include "codec/codec.h"
#include "dicom/dicom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spng.h>
#include <turbojpeg.h>

#define RLE_TS "1.2.840.10008.1.2.5"

typedef struct Fixture {
    AgArena *a;
    DicomFile f;
} Fixture;

static int setup(void **state)
{
    Fixture *fx = calloc(1, sizeof *fx);
    fx->a = ag_arena_create(256 << 20);
    fx->f.dataset = dicom_dataset_create(fx->a);
    snprintf(fx->f.ts_uid, sizeof fx->f.ts_uid, "%s", DICOM_TS_EXPLICIT_LE);
    fx->f.ts = dicom_ts_lookup(fx->f.ts_uid);
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

/* ---- building images ----------------------------------------------------- */

static void set_us(DicomDataset *ds, uint32_t tag, int64_t v)
{
    assert_int_equal(dicom_set_ints(ds, tag, DICOM_VR_US, &v, 1, NULL),
                     AG_OK);
}

static void set_str(DicomDataset *ds, uint32_t tag, DicomVR vr, const char *v)
{
    assert_int_equal(dicom_set_string(ds, tag, vr, v, NULL), AG_OK);
}

typedef struct Spec {
    uint32_t rows, cols, frames;
    uint16_t spp, bits, stored;
    bool is_signed;
    uint16_t planar;
    const char *pi;
} Spec;

static void image(DicomDataset *ds, const Spec *s, const void *px,
                  size_t len)
{
    set_str(ds, DICOM_TAG_SOP_CLASS_UID, DICOM_VR_UI,
            "1.2.840.10008.5.1.4.1.1.7");
    set_str(ds, DICOM_TAG_SOP_INSTANCE_UID, DICOM_VR_UI, "1.2.3.4.5");
    set_us(ds, DICOM_TAG(0x0028, 0x0010), s->rows);
    set_us(ds, DICOM_TAG(0x0028, 0x0011), s->cols);
    set_us(ds, DICOM_TAG(0x0028, 0x0002), s->spp ? s->spp : 1);
    set_us(ds, DICOM_TAG_BITS_ALLOCATED, s->bits);
    uint16_t bs = s->stored ? s->stored : s->bits;
    set_us(ds, DICOM_TAG(0x0028, 0x0101), bs);
    set_us(ds, DICOM_TAG(0x0028, 0x0102), bs - 1);
    set_us(ds, DICOM_TAG_PIXEL_REPRESENTATION, s->is_signed);
    if (s->spp == 3) {
        set_us(ds, DICOM_TAG(0x0028, 0x0006), s->planar);
    }
    if (s->frames > 1) {
        char n[16];
        snprintf(n, sizeof n, "%u", s->frames);
        set_str(ds, DICOM_TAG(0x0028, 0x0008), DICOM_VR_IS, n);
    }
    set_str(ds, DICOM_TAG(0x0028, 0x0004), DICOM_VR_CS, s->pi);
    if (px != NULL) {
        assert_int_equal(dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA,
                                         s->bits > 8 ? DICOM_VR_OW
                                                     : DICOM_VR_OB,
                                         px, len, NULL), AG_OK);
    }
}

static void set_ds(DicomDataset *ds, uint16_t g, uint16_t e, const char *v)
{
    set_str(ds, DICOM_TAG(g, e), DICOM_VR_DS, v);
}

/* A LUT item: descriptor (US) and 16-bit data. */
static void lut_item(DicomDataset *item, uint32_t desc_tag, uint32_t data_tag,
                     uint16_t n, uint16_t first, uint16_t bits,
                     const uint16_t *data, size_t ndata)
{
    int64_t d[3] = {n, first, bits};
    assert_int_equal(dicom_set_ints(item, desc_tag, DICOM_VR_US, d, 3, NULL),
                     AG_OK);
    assert_int_equal(dicom_set_bytes(item, data_tag, DICOM_VR_OW, data,
                                     ndata * 2, NULL), AG_OK);
}

static DicomDataset *seq_item(DicomDataset *ds, uint32_t tag)
{
    DicomElement *seq;
    DicomDataset *item;
    assert_int_equal(dicom_set_sequence(ds, tag, &seq, NULL), AG_OK);
    assert_int_equal(dicom_sequence_append(ds, seq, &item, NULL), AG_OK);
    return item;
}

/* ---- rendering and decoding ---------------------------------------------- */

typedef struct Out {
    uint32_t w, h;
    unsigned ch;
    uint8_t px[1 << 16];
} Out;

static int render(const DicomFile *f, const DicomBulkSource *bulk,
                  uint32_t frame, const CodecRenderParams *p, AgBuf *b,
                  AgError *err)
{
    ag_buf_init(b, 0);
    ag_error_clear(err);
    int rc = codec_render_frame(f, bulk, frame, p, b, err);
    if (rc != AG_OK) {
        ag_buf_deinit(b);
    }
    return rc;
}

static void decode_png(const AgBuf *b, Out *o)
{
    spng_ctx *ctx = spng_ctx_new(0);
    assert_non_null(ctx);
    assert_int_equal(spng_set_png_buffer(ctx, b->data, b->len), 0);
    struct spng_ihdr ih;
    assert_int_equal(spng_get_ihdr(ctx, &ih), 0);
    assert_int_equal(ih.bit_depth, 8);
    assert_true(ih.color_type == SPNG_COLOR_TYPE_GRAYSCALE ||
                ih.color_type == SPNG_COLOR_TYPE_TRUECOLOR);
    o->w = ih.width;
    o->h = ih.height;
    o->ch = ih.color_type == SPNG_COLOR_TYPE_GRAYSCALE ? 1 : 3;
    size_t n = (size_t)o->w * o->h * o->ch;
    assert_true(n <= sizeof o->px);
    /* SPNG_FMT_PNG: the PNG's own format, rows packed. */
    assert_int_equal(spng_decode_image(ctx, o->px, n, SPNG_FMT_PNG, 0), 0);
    spng_ctx_free(ctx);
}

/* Render f to PNG and decode it; fails the test with the error. */
static void png_of(const DicomFile *f, const DicomBulkSource *bulk,
                   uint32_t frame, const CodecRenderParams *p, Out *o)
{
    CodecRenderParams q = *p;
    q.format = CODEC_RENDER_PNG;
    AgBuf b;
    AgError err;
    if (render(f, bulk, frame, &q, &b, &err) != AG_OK) {
        fail_msg("render: %s", err.msg);
    }
    decode_png(&b, o);
    ag_buf_deinit(&b);
}

static void expect_gray(const Out *o, const uint8_t *want, size_t n)
{
    assert_int_equal(o->ch, 1);
    assert_int_equal((size_t)o->w * o->h, n);
    for (size_t i = 0; i < n; i++) {
        if (o->px[i] != want[i]) {
            fail_msg("pixel %zu: %u, expected %u", i, o->px[i], want[i]);
        }
    }
}

static CodecRenderParams defaults(void)
{
    CodecRenderParams p;
    codec_render_params_init(&p);
    return p;
}

/* ---- the VOI functions --------------------------------------------------- */

static void test_voi_linear_edges(void **state)
{
    (void)state;
    /* C.11.2.1.2.1, c = 40, w = 400, y in 0..255:
     * x <= c - 0.5 - (w-1)/2 = -160 -> 0; x > c - 0.5 + (w-1)/2 = 239
     * -> 255; between: ((x - 39.5) / 399 + 0.5) * 255. */
    const CodecVoiFunction L = CODEC_VOI_LINEAR;
    assert_true(codec_voi_apply(L, 40, 400, -160, 0, 255) == 0.0);
    assert_true(codec_voi_apply(L, 40, 400, -1000, 0, 255) == 0.0);
    assert_float_equal(codec_voi_apply(L, 40, 400, -159, 0, 255),
                       (-198.5 / 399 + 0.5) * 255, 1e-9);
    assert_float_equal(codec_voi_apply(L, 40, 400, 39.5, 0, 255), 127.5,
                       1e-9);
    assert_float_equal(codec_voi_apply(L, 40, 400, 239, 0, 255), 255.0,
                       1e-9);
    assert_true(codec_voi_apply(L, 40, 400, 239.001, 0, 255) == 255.0);
    /* ymin/ymax other than 0..255 */
    assert_float_equal(codec_voi_apply(L, 40, 400, 39.5, 10, 20), 15.0,
                       1e-9);
    /* Width 1: a threshold at c - 0.5 (no division by w - 1 = 0). */
    assert_true(codec_voi_apply(L, 100, 1, 99.5, 0, 1) == 0.0);
    assert_true(codec_voi_apply(L, 100, 1, 99.51, 0, 1) == 1.0);
    assert_true(codec_voi_apply(L, 100, 1, 100, 0, 1) == 1.0);
}

static void test_voi_linear_exact_and_sigmoid(void **state)
{
    (void)state;
    const CodecVoiFunction E = CODEC_VOI_LINEAR_EXACT;
    /* C.11.2.1.3.2, c = 0, w = 10: x <= -5 -> 0, x > 5 -> 1. */
    assert_true(codec_voi_apply(E, 0, 10, -5, 0, 1) == 0.0);
    assert_float_equal(codec_voi_apply(E, 0, 10, -4, 0, 1), 0.1, 1e-12);
    assert_float_equal(codec_voi_apply(E, 0, 10, 0, 0, 1), 0.5, 1e-12);
    assert_float_equal(codec_voi_apply(E, 0, 10, 5, 0, 1), 1.0, 1e-12);
    assert_true(codec_voi_apply(E, 0, 10, 5.01, 0, 1) == 1.0);
    /* A width below 1 is allowed here. */
    assert_float_equal(codec_voi_apply(E, 0, 0.5, 0.125, 0, 1), 0.75, 1e-12);
    /* C.11.2.1.3.1: y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin */
    const CodecVoiFunction S = CODEC_VOI_SIGMOID;
    assert_float_equal(codec_voi_apply(S, 100, 50, 100, 0, 255), 127.5,
                       1e-9);
    assert_float_equal(codec_voi_apply(S, 100, 50, 112.5, 0, 1),
                       1 / (1 + exp(-1.0)), 1e-12);
    assert_float_equal(codec_voi_apply(S, 100, 50, 125, 0, 255),
                       255 / (1 + exp(-2.0)), 1e-9);
    assert_float_equal(codec_voi_apply(S, 100, 50, 75, 10, 20),
                       10 / (1 + exp(2.0)) + 10, 1e-9);
}

static void test_parse_window(void **state)
{
    (void)state;
    CodecRenderParams p = defaults();
    AgError err;
    assert_int_equal(codec_render_parse_window("40,400", &p, &err), AG_OK);
    assert_true(p.window && p.window_center == 40 && p.window_width == 400);
    assert_int_equal(p.function, CODEC_VOI_LINEAR);
    assert_int_equal(codec_render_parse_window("-600.5,1500.25,SIGMOID", &p,
                                               &err), AG_OK);
    assert_true(p.window_center == -600.5 && p.window_width == 1500.25);
    assert_int_equal(p.function, CODEC_VOI_SIGMOID);
    assert_int_equal(codec_render_parse_window("0,0.5,linear-exact", &p,
                                               &err), AG_OK);
    assert_int_equal(p.function, CODEC_VOI_LINEAR_EXACT);
    assert_int_equal(codec_render_parse_window("0,0.5,LINEAR_EXACT", &p,
                                               &err), AG_OK);
    static const char *const bad[] = {
        "40", "40,", ",400", "a,b", "40,400,cubic", "40,400,", "40,0",
        "40,0.5", "40,-1,sigmoid", "nan,400", "40,inf", "1e400,10",
        "40,400,linear,x", "40 ,400", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CodecRenderParams q = defaults();
        if (codec_render_parse_window(bad[i], &q, &err) != AG_ERR_INVALID) {
            fail_msg("window \"%s\" accepted", bad[i]);
        }
        assert_false(q.window);
    }
}

/* ---- grayscale pipeline -------------------------------------------------- */

/* A signed 16-bit CT row, rescale -1024, window 40/400 in the file. */
static const int16_t CT_HU[] = {-3024, -1024, -160, -159, 39, 40, 238,
                                239, 240, 3071};
/* ((HU - 39.5) / 399 + 0.5) * 255 rounded, 0 at or below -160, 255 above
 * 239: computed by hand. */
static const uint8_t CT_WANT[] = {0, 0, 0, 1, 127, 128, 254, 255, 255, 255};

static void ct_row(Fixture *fx, const char *pi)
{
    int16_t px[10];
    for (int i = 0; i < 10; i++) {
        px[i] = (int16_t)(CT_HU[i] + 1024);
    }
    Spec s = {.rows = 1, .cols = 10, .bits = 16, .is_signed = true,
              .pi = pi};
    image(fx->f.dataset, &s, px, sizeof px);
    set_ds(fx->f.dataset, 0x0028, 0x1052, "-1024");
    set_ds(fx->f.dataset, 0x0028, 0x1053, "1");
    set_ds(fx->f.dataset, 0x0028, 0x1050, "40\\300");
    set_ds(fx->f.dataset, 0x0028, 0x1051, "400\\1500");
}

static void test_ct_window_from_file(void **state)
{
    Fixture *fx = *state;
    ct_row(fx, "MONOCHROME2");
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    assert_int_equal(o.w, 10);
    assert_int_equal(o.h, 1);
    expect_gray(&o, CT_WANT, 10);
}

static void test_monochrome1_inverts(void **state)
{
    Fixture *fx = *state;
    ct_row(fx, "MONOCHROME1");
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    uint8_t want[10];
    for (int i = 0; i < 10; i++) {
        want[i] = (uint8_t)(255 - CT_WANT[i]);
    }
    expect_gray(&o, want, 10);
    /* Presentation LUT Shape INVERSE on MONOCHROME1 is the same single
     * inversion; on MONOCHROME2 it inverts. */
    set_str(fx->f.dataset, DICOM_TAG(0x2050, 0x0020), DICOM_VR_CS,
            "INVERSE");
    png_of(&fx->f, NULL, 0, &p, &o);
    expect_gray(&o, want, 10);
    set_str(fx->f.dataset, DICOM_TAG(0x0028, 0x0004), DICOM_VR_CS,
            "MONOCHROME2");
    png_of(&fx->f, NULL, 0, &p, &o);
    expect_gray(&o, want, 10);
}

static void test_request_window_overrides(void **state)
{
    Fixture *fx = *state;
    ct_row(fx, "MONOCHROME2");
    CodecRenderParams p = defaults();
    /* LINEAR_EXACT c=0 w=100 on HU: <= -50 -> 0, > 50 -> 255. */
    AgError err;
    assert_int_equal(codec_render_parse_window("0,100,linear-exact", &p,
                                               &err), AG_OK);
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* HU 39: (39/100 + 0.5) * 255 = 226.95; HU 40: 229.5 -> 230. */
    static const uint8_t want[] = {0, 0, 0, 0, 227, 230, 255, 255, 255,
                                   255};
    expect_gray(&o, want, 10);
}

static void test_bits_stored_mask_and_sign(void **state)
{
    Fixture *fx = *state;
    /* 12 bits stored, signed, garbage in the 4 unused high bits. */
    uint16_t px[] = {0xf000 | 0x0fff,   /* -1 */
                     0xa000 | 0x0800,   /* -2048 */
                     0x5000 | 0x07ff,   /* 2047 */
                     0x0000};           /* 0 */
    Spec s = {.rows = 1, .cols = 4, .bits = 16, .stored = 12,
              .is_signed = true, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    CodecRenderParams p = defaults();
    AgError err;
    /* LINEAR_EXACT -2048..2048: ((x + 0) / 4096 + 0.5) * 255 */
    assert_int_equal(codec_render_parse_window("0,4096,linear-exact", &p,
                                               &err), AG_OK);
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* -1: 127.44 -> 127; -2048: 0; 2047: 254.94 -> 255; 0: 127.5 -> 128 */
    static const uint8_t want[] = {127, 0, 255, 128};
    expect_gray(&o, want, 4);
}

static void test_sigmoid_from_file(void **state)
{
    Fixture *fx = *state;
    uint8_t px[] = {75, 100, 125, 0, 255};
    Spec s = {.rows = 1, .cols = 5, .bits = 8, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    set_ds(fx->f.dataset, 0x0028, 0x1050, "100");
    set_ds(fx->f.dataset, 0x0028, 0x1051, "50");
    set_str(fx->f.dataset, DICOM_TAG(0x0028, 0x1056), DICOM_VR_CS,
            "SIGMOID");
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* 255 / (1 + e^2) = 30.40; 127.5 -> 128; 255 / (1 + e^-2) = 224.60;
     * 255 / (1 + e^8) = 0.09; 255 / (1 + e^-12.4) = 254.999 */
    static const uint8_t want[] = {30, 128, 225, 0, 255};
    expect_gray(&o, want, 5);
}

static void test_min_max_when_no_window(void **state)
{
    Fixture *fx = *state;
    uint16_t px[] = {1000, 1100, 1200, 1300, 2000};
    Spec s = {.rows = 1, .cols = 5, .bits = 16, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* (x - 1000) / 1000 * 255: 0, 25.5 -> 26, 51, 76.5 -> 77, 255 */
    static const uint8_t want[] = {0, 26, 51, 77, 255};
    expect_gray(&o, want, 5);
    /* A width the function does not allow in the file is skipped. */
    set_ds(fx->f.dataset, 0x0028, 0x1050, "1000");
    set_ds(fx->f.dataset, 0x0028, 0x1051, "0.5");
    png_of(&fx->f, NULL, 0, &p, &o);
    expect_gray(&o, want, 5);
}

static void test_modality_lut_sequence(void **state)
{
    Fixture *fx = *state;
    uint16_t px[] = {9, 10, 11, 12, 13, 99};
    Spec s = {.rows = 1, .cols = 6, .bits = 16, .stored = 8,
              .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    /* The Rescale values are ignored when a Modality LUT is present. */
    set_ds(fx->f.dataset, 0x0028, 0x1053, "7");
    DicomDataset *it = seq_item(fx->f.dataset, DICOM_TAG(0x0028, 0x3000));
    static const uint16_t lut[] = {100, 200, 300, 400};
    lut_item(it, DICOM_TAG(0x0028, 0x3002), DICOM_TAG(0x0028, 0x3006), 4, 10,
             16, lut, 4);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* Inputs below the first mapped value take the first entry, above
     * the last the last (C.11.1.1.1); then min..max 100..400. */
    static const uint8_t want[] = {0, 0, 85, 170, 255, 255};
    expect_gray(&o, want, 6);
    /* Data of the wrong length is refused, not read past. */
    static const uint16_t shortlut[] = {1, 2, 3};
    lut_item(it, DICOM_TAG(0x0028, 0x3002), DICOM_TAG(0x0028, 0x3006), 4, 10,
             16, shortlut, 3);
    AgBuf b;
    AgError err;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "modality LUT"));
}

static void test_modality_lut_65536_signed_first(void **state)
{
    Fixture *fx = *state;
    int16_t px[] = {-200, -100, -99, 0, 500};
    Spec s = {.rows = 1, .cols = 5, .bits = 16, .is_signed = true,
              .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    DicomDataset *it = seq_item(fx->f.dataset, DICOM_TAG(0x0028, 0x3000));
    /* Descriptor 0\-100\16: 0 entries means 65536 (C.11.1.1.1); the
     * first mapped value is SS for signed pixel data. */
    int64_t d[3] = {0, -100, 16};
    assert_int_equal(dicom_set_ints(it, DICOM_TAG(0x0028, 0x3002),
                                    DICOM_VR_SS, d, 3, NULL), AG_OK);
    static uint16_t lut[65536];
    for (uint32_t i = 0; i < 65536; i++) {
        lut[i] = (uint16_t)i;
    }
    assert_int_equal(dicom_set_bytes(it, DICOM_TAG(0x0028, 0x3006),
                                     DICOM_VR_OW, lut, sizeof lut, NULL),
                     AG_OK);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* outputs 0 (below the first), 0, 1, 100, 600; then 0..600 to 8 bits:
     * 1 -> 0.43 -> 0; 100 -> 42.5 -> 43 */
    static const uint8_t want[] = {0, 0, 0, 43, 255};
    expect_gray(&o, want, 5);
}

static void test_voi_lut_sequence(void **state)
{
    Fixture *fx = *state;
    uint8_t px[] = {0, 1, 128, 254, 255};
    Spec s = {.rows = 1, .cols = 5, .bits = 8, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    DicomDataset *it = seq_item(fx->f.dataset, DICOM_TAG(0x0028, 0x3010));
    uint16_t lut[256];
    for (int i = 0; i < 256; i++) {
        lut[i] = (uint16_t)((255 - i) * 16);   /* 12-bit entries */
    }
    lut_item(it, DICOM_TAG(0x0028, 0x3002), DICOM_TAG(0x0028, 0x3006), 256,
             0, 12, lut, 256);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* (255 - x) * 16 / 4095 * 255 */
    uint8_t want[5];
    for (int i = 0; i < 5; i++) {
        want[i] = (uint8_t)floor((255 - px[i]) * 16 / 4095.0 * 255 + 0.5);
    }
    expect_gray(&o, want, 5);
}

static void test_presentation_lut_sequence(void **state)
{
    Fixture *fx = *state;
    uint8_t px[] = {0, 85, 170, 255};
    Spec s = {.rows = 1, .cols = 4, .bits = 8, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    set_ds(fx->f.dataset, 0x0028, 0x1050, "128");   /* identity */
    set_ds(fx->f.dataset, 0x0028, 0x1051, "256");
    DicomDataset *it = seq_item(fx->f.dataset, DICOM_TAG(0x2050, 0x0010));
    /* 4 entries, 8 bits: a staircase */
    static const uint16_t lut[] = {10, 20, 30, 250};
    lut_item(it, DICOM_TAG(0x0028, 0x3002), DICOM_TAG(0x0028, 0x3006), 4, 0,
             8, lut, 4);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* VOI identity (c 128, w 256): 0, 1/3, 2/3, 1 -> entries 0..3 */
    static const uint8_t want[] = {10, 20, 30, 250};
    expect_gray(&o, want, 4);
}

static void test_enhanced_functional_groups(void **state)
{
    Fixture *fx = *state;
    uint16_t px[] = {0, 100, 200, 300};   /* two frames of 1x2 */
    Spec s = {.rows = 1, .cols = 2, .frames = 2, .bits = 16,
              .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    DicomDataset *shared = seq_item(fx->f.dataset,
                                    DICOM_TAG(0x5200, 0x9229));
    DicomDataset *pvt = seq_item(shared, DICOM_TAG(0x0028, 0x9145));
    set_ds(pvt, 0x0028, 0x1052, "-100");
    set_ds(pvt, 0x0028, 0x1053, "1");
    DicomElement *pf;
    assert_int_equal(dicom_set_sequence(fx->f.dataset,
                                        DICOM_TAG(0x5200, 0x9230), &pf, NULL),
                     AG_OK);
    for (int k = 0; k < 2; k++) {
        DicomDataset *item;
        assert_int_equal(dicom_sequence_append(fx->f.dataset, pf, &item,
                                               NULL), AG_OK);
        DicomDataset *voi = seq_item(item, DICOM_TAG(0x0028, 0x9132));
        /* frame 1: 0..100 after rescale; frame 2: 100..200 */
        set_ds(voi, 0x0028, 0x1050, k == 0 ? "50" : "150");
        set_ds(voi, 0x0028, 0x1051, "100");
        set_str(voi, DICOM_TAG(0x0028, 0x1056), DICOM_VR_CS,
                "LINEAR_EXACT");
    }
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    static const uint8_t want0[] = {0, 0};   /* -100, 0 <= 0 */
    expect_gray(&o, want0, 2);
    png_of(&fx->f, NULL, 1, &p, &o);
    /* 100 <= c - w/2 -> 0; 200 = c + w/2 -> 255.  Frame 1's window
     * would give 255, 255. */
    static const uint8_t want1[] = {0, 255};
    expect_gray(&o, want1, 2);
}

/* ---- colour -------------------------------------------------------------- */

static void expect_rgb(const Out *o, const uint8_t *want, size_t npx)
{
    assert_int_equal(o->ch, 3);
    assert_int_equal((size_t)o->w * o->h, npx);
    for (size_t i = 0; i < npx * 3; i++) {
        if (o->px[i] != want[i]) {
            fail_msg("pixel %zu sample %zu: %u, expected %u", i / 3, i % 3,
                     o->px[i], want[i]);
        }
    }
}

static void test_rgb_planar_and_16bit(void **state)
{
    Fixture *fx = *state;
    static const uint8_t by_plane[] = {10, 20, 30, 40, 50, 60};   /* 2 px */
    Spec s = {.rows = 1, .cols = 2, .spp = 3, .bits = 8, .planar = 1,
              .pi = "RGB"};
    image(fx->f.dataset, &s, by_plane, sizeof by_plane);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    static const uint8_t want[] = {10, 30, 50, 20, 40, 60};
    expect_rgb(&o, want, 2);

    uint16_t wide[] = {65535, 32768, 0, 257, 0, 65535};
    Spec s16 = {.rows = 1, .cols = 2, .spp = 3, .bits = 16, .pi = "RGB"};
    image(fx->f.dataset, &s16, wide, sizeof wide);
    png_of(&fx->f, NULL, 0, &p, &o);
    /* v * 255 / 65535 rounded */
    static const uint8_t want16[] = {255, 128, 0, 1, 0, 255};
    expect_rgb(&o, want16, 2);
}

static void test_ybr_full(void **state)
{
    Fixture *fx = *state;
    /* gray; pure red as YBR (Y 76, CB 85, CR 255); white */
    static const uint8_t ybr[] = {128, 128, 128, 76, 85, 255, 255, 128,
                                  128};
    Spec s = {.rows = 1, .cols = 3, .spp = 3, .bits = 8, .pi = "YBR_FULL"};
    image(fx->f.dataset, &s, ybr, sizeof ybr);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* R = 76 + 1.402 * 127 = 254.05; G = 76 + 0.344136 * 43 - 0.714136 *
     * 127 = 0.10; B = 76 - 1.772 * 43 = -0.20 -> 0 */
    static const uint8_t want[] = {128, 128, 128, 254, 0, 0, 255, 255, 255};
    expect_rgb(&o, want, 3);

    /* YBR_FULL_422 native: Y1 Y2 CB CR per pair of pixels. */
    static const uint8_t y422[] = {76, 100, 85, 255};
    Spec s2 = {.rows = 1, .cols = 2, .spp = 3, .bits = 8,
               .pi = "YBR_FULL_422"};
    image(fx->f.dataset, &s2, y422, sizeof y422);
    png_of(&fx->f, NULL, 0, &p, &o);
    /* second pixel: R = 100 + 178.05 -> 255; G = 100 + 14.80 - 90.70 =
     * 24.10; B = 100 - 76.20 = 23.80 */
    static const uint8_t want422[] = {254, 0, 0, 255, 24, 24};
    expect_rgb(&o, want422, 2);
}

static void test_palette_color(void **state)
{
    Fixture *fx = *state;
    uint8_t px[] = {0, 1, 128, 255};
    Spec s = {.rows = 1, .cols = 4, .bits = 8, .pi = "PALETTE COLOR"};
    image(fx->f.dataset, &s, px, sizeof px);
    uint16_t r[256], g[256], b[256];
    for (int i = 0; i < 256; i++) {
        r[i] = (uint16_t)(i * 257);
        g[i] = (uint16_t)((255 - i) * 257);
        b[i] = 0x8000;
    }
    DicomDataset *ds = fx->f.dataset;
    lut_item(ds, DICOM_TAG(0x0028, 0x1101), DICOM_TAG(0x0028, 0x1201), 256,
             0, 16, r, 256);
    lut_item(ds, DICOM_TAG(0x0028, 0x1102), DICOM_TAG(0x0028, 0x1202), 256,
             0, 16, g, 256);
    lut_item(ds, DICOM_TAG(0x0028, 0x1103), DICOM_TAG(0x0028, 0x1203), 256,
             0, 16, b, 256);
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    /* 16-bit entries: v * 255 / 65535; 0x8000 -> 127.5019 -> 128 */
    static const uint8_t want[] = {0, 255, 128, 1, 254, 128, 128, 127, 128,
                                   255, 0, 128};
    expect_rgb(&o, want, 4);

    /* 8-bit entries, packed one per byte, first mapped 1, 3 entries. */
    int64_t d[3] = {3, 1, 8};
    static const uint8_t r8[4] = {10, 20, 30, 0}, g8[4] = {1, 2, 3, 0},
                         b8[4] = {7, 8, 9, 0};
    const uint8_t *data8[3] = {r8, g8, b8};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(dicom_set_ints(ds, DICOM_TAG(0x0028, 0x1101 + k),
                                        DICOM_VR_US, d, 3, NULL), AG_OK);
        assert_int_equal(dicom_set_bytes(ds, DICOM_TAG(0x0028, 0x1201 + k),
                                         DICOM_VR_OW, data8[k], 4, NULL),
                         AG_OK);
    }
    png_of(&fx->f, NULL, 0, &p, &o);
    /* 0 -> below first: entry 0; 1 -> entry 0; 128, 255 -> entry 2 */
    static const uint8_t want8[] = {10, 1, 7, 10, 1, 7, 30, 3, 9, 30, 3, 9};
    expect_rgb(&o, want8, 4);

    /* Segmented palettes are refused with a clear error. */
    for (int k = 0; k < 3; k++) {
        dicom_dataset_remove(ds, DICOM_TAG(0x0028, 0x1201 + k));
        assert_int_equal(dicom_set_bytes(ds, DICOM_TAG(0x0028, 0x1221 + k),
                                         DICOM_VR_OW, data8[k], 4, NULL),
                         AG_OK);
    }
    AgBuf buf;
    AgError err;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &buf, &err),
                     AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "segmented"));
}

/* ---- scaling ------------------------------------------------------------- */

static void test_fit(void **state)
{
    (void)state;
    CodecRenderParams p = defaults();
    uint32_t w, h;
    codec_render_fit(512, 256, &p, &w, &h);
    assert_true(w == 512 && h == 256);
    p.width = p.height = 128;
    codec_render_fit(512, 256, &p, &w, &h);
    assert_true(w == 128 && h == 64);
    codec_render_fit(256, 512, &p, &w, &h);
    assert_true(w == 64 && h == 128);
    p.width = p.height = 1024;
    codec_render_fit(512, 256, &p, &w, &h);
    assert_true(w == 1024 && h == 512);
    p.upscale = false;   /* thumbnails */
    codec_render_fit(512, 256, &p, &w, &h);
    assert_true(w == 512 && h == 256);
    p.upscale = true;
    p.width = 100;
    p.height = 0;        /* WADO-URI columns alone */
    codec_render_fit(512, 256, &p, &w, &h);
    assert_true(w == 100 && h == 50);
    p.width = 0;
    p.height = 8192;
    codec_render_fit(10, 1, &p, &w, &h);   /* capped */
    assert_true(w == 8192 && h == 819);
    p.width = 3;
    p.height = 3;
    codec_render_fit(1000, 1, &p, &w, &h);   /* never 0 */
    assert_true(w == 3 && h == 1);
}

static void test_scale_area_region_flip(void **state)
{
    Fixture *fx = *state;
    uint8_t px[] = {0, 100, 200, 255};
    Spec s = {.rows = 1, .cols = 4, .bits = 8, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    set_ds(fx->f.dataset, 0x0028, 0x1050, "128");
    set_ds(fx->f.dataset, 0x0028, 0x1051, "256");   /* identity */
    CodecRenderParams p = defaults();
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    expect_gray(&o, px, 4);
    p.width = 2;
    png_of(&fx->f, NULL, 0, &p, &o);
    static const uint8_t half[] = {50, 228};    /* area averages */
    expect_gray(&o, half, 2);
    p.width = 0;
    p.region = true;
    p.sx = 1;
    p.sy = 0;
    p.sw = -2;   /* columns 1..2, mirrored */
    p.sh = 1;
    png_of(&fx->f, NULL, 0, &p, &o);
    static const uint8_t flipped[] = {200, 100};
    expect_gray(&o, flipped, 2);
    p.sw = 100;  /* clipped to the image */
    png_of(&fx->f, NULL, 0, &p, &o);
    static const uint8_t clipped[] = {100, 200, 255};
    expect_gray(&o, clipped, 3);
    p.sx = 4;    /* outside */
    AgBuf b;
    AgError err;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
}

static void test_scale_sizes_and_jpeg(void **state)
{
    Fixture *fx = *state;
    static uint8_t px[300 * 200];
    for (size_t i = 0; i < sizeof px; i++) {
        px[i] = (uint8_t)(i % 300 < 150 ? 40 : 200);
    }
    Spec s = {.rows = 200, .cols = 300, .bits = 8, .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    set_ds(fx->f.dataset, 0x0028, 0x1050, "128");   /* identity */
    set_ds(fx->f.dataset, 0x0028, 0x1051, "256");
    CodecRenderParams p = defaults();
    p.width = p.height = 128;
    p.upscale = false;
    Out o;
    png_of(&fx->f, NULL, 0, &p, &o);
    assert_int_equal(o.w, 128);
    assert_int_equal(o.h, 85);   /* 200 * 128 / 300 = 85.3 */
    assert_int_equal(o.px[0], 40);
    assert_int_equal(o.px[127], 200);
    p.width = p.height = 600;
    p.upscale = true;
    p.format = CODEC_RENDER_JPEG;
    AgBuf b;
    AgError err;
    if (render(&fx->f, NULL, 0, &p, &b, &err) != AG_OK) {
        fail_msg("%s", err.msg);
    }
    /* A JPEG of 600x400 gray that decodes close to the source. */
    tjhandle h = tjInitDecompress();
    int w = 0, ht = 0, sub = 0, cs = 0;
    assert_int_equal(tjDecompressHeader3(h, b.data, b.len, &w, &ht, &sub,
                                         &cs), 0);
    assert_int_equal(w, 600);
    assert_int_equal(ht, 400);
    assert_int_equal(cs, TJCS_GRAY);
    static uint8_t dec[600 * 400];
    assert_int_equal(tjDecompress2(h, b.data, b.len, dec, 600, 0, 400,
                                   TJPF_GRAY, 0), 0);
    tjDestroy(h);
    assert_true(abs(dec[10 * 600 + 10] - 40) <= 2);
    assert_true(abs(dec[10 * 600 + 590] - 200) <= 2);
    ag_buf_deinit(&b);
}

static void test_jpeg_rgb_quality(void **state)
{
    Fixture *fx = *state;
    /* Left half one colour, right half noise. */
    static uint8_t px[64 * 64 * 3];
    uint32_t seed = 1;
    for (size_t i = 0; i < sizeof px; i += 3) {
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            px[i + k] = (i / 3) % 64 < 32 ? (uint8_t)(k == 0 ? 200 : k == 1
                                                      ? 30 : 90)
                                          : (uint8_t)(seed >> 24);
        }
    }
    Spec s = {.rows = 64, .cols = 64, .spp = 3, .bits = 8, .pi = "RGB"};
    image(fx->f.dataset, &s, px, sizeof px);
    CodecRenderParams p = defaults();
    size_t len[2];
    for (int k = 0; k < 2; k++) {
        p.quality = k == 0 ? 95 : 10;
        AgBuf b;
        AgError err;
        assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_OK);
        assert_true(b.len > 2 && b.data[0] == 0xff && b.data[1] == 0xd8);
        tjhandle h = tjInitDecompress();
        int w = 0, ht = 0, sub = 0, cs = 0;
        assert_int_equal(tjDecompressHeader3(h, b.data, b.len, &w, &ht, &sub,
                                             &cs), 0);
        assert_true(w == 64 && ht == 64 && sub == TJSAMP_444);
        static uint8_t dec[64 * 64 * 3];
        assert_int_equal(tjDecompress2(h, b.data, b.len, dec, 64, 0, 64,
                                       TJPF_RGB, 0), 0);
        tjDestroy(h);
        if (k == 0) {
            const uint8_t *c = dec + (32 * 64 + 8) * 3;
            assert_true(abs(c[0] - 200) <= 3 && abs(c[1] - 30) <= 3 &&
                        abs(c[2] - 90) <= 3);
        }
        len[k] = b.len;
        ag_buf_deinit(&b);
    }
    assert_true(len[1] < len[0]);   /* the quality reached the encoder */
}

/* ---- streaming: one frame through a bulk source -------------------------- */

typedef struct MemSource {
    const uint8_t *data;
    size_t len;
    size_t bytes_read;
    int reads;
} MemSource;

static int mem_read(void *ctx, uint64_t off, void *dst, size_t len,
                    AgError *err)
{
    MemSource *m = ctx;
    if (off > m->len || len > m->len - off) {
        return ag_error_set(err, AG_ERR_IO, "read past the end");
    }
    memcpy(dst, m->data + off, len);
    m->bytes_read += len;
    m->reads++;
    return AG_OK;
}

/* Write fx->f in ts, read it back with values over 64 bytes left in the
 * source; *out is in arena a. */
static DicomFile *reread(Fixture *fx, const char *ts, AgBuf *file)
{
    AgError err;
    if (dicom_file_build_meta(&fx->f, ts, &err) != AG_OK) {
        fail_msg("meta: %s", err.msg);
    }
    ag_buf_init(file, 0);
    if (dicom_write_file(&fx->f, ts, NULL, dicom_sink_buf, file, &err) !=
        AG_OK) {
        fail_msg("write: %s", err.msg);
    }
    DicomReadOptions ro = {.bulk_threshold = 64};
    DicomFile *g = NULL;
    if (dicom_read_buffer(file->data, file->len, &ro, fx->a, &g, &err) !=
        AG_OK) {
        fail_msg("read: %s", err.msg);
    }
    return g;
}

static void multi_frame(Fixture *fx, uint16_t *px, uint32_t frames)
{
    for (uint32_t i = 0; i < frames * 16 * 16; i++) {
        px[i] = (uint16_t)((i / 256 + 1) * 100 + i % 256);
    }
    Spec s = {.rows = 16, .cols = 16, .frames = frames, .bits = 16,
              .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, (size_t)frames * 512);
    set_ds(fx->f.dataset, 0x0028, 0x1050, "400");
    set_ds(fx->f.dataset, 0x0028, 0x1051, "800");
}

static void test_native_frame_streamed(void **state)
{
    Fixture *fx = *state;
    static uint16_t px[5 * 256];
    multi_frame(fx, px, 5);
    const char *syntaxes[] = {DICOM_TS_EXPLICIT_LE, DICOM_TS_EXPLICIT_BE};
    for (int t = 0; t < 2; t++) {
        AgBuf file;
        DicomFile *g = reread(fx, syntaxes[t], &file);
        const DicomElement *pe = dicom_dataset_find(g->dataset,
                                                    DICOM_TAG_PIXEL_DATA);
        assert_true(pe->flags & DICOM_EL_NOT_LOADED);
        MemSource m = {.data = file.data, .len = file.len};
        DicomBulkSource bulk = {.read = mem_read, .ctx = &m,
                                .big_endian = g->ts->big_endian};
        CodecRenderParams p = defaults();
        for (uint32_t k = 0; k < 5; k++) {
            Out want, got;
            png_of(&fx->f, NULL, k, &p, &want);
            m.bytes_read = 0;
            png_of(g, &bulk, k, &p, &got);
            assert_int_equal(m.bytes_read, 512);   /* this frame only */
            assert_memory_equal(want.px, got.px, 256);
            /* frame k starts at (k + 1) * 100: window 0..800 */
            assert_int_equal(got.px[0],
                             (uint8_t)floor(((k + 1) * 100 - 399.5) / 799.0 *
                                            255 + 127.5 + 0.5));
        }
        /* Without a source, not-loaded pixel data is an error. */
        AgBuf b;
        AgError err;
        assert_int_equal(render(g, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
        ag_buf_deinit(&file);
    }
}

static void test_encapsulated_frame_streamed(void **state)
{
    Fixture *fx = *state;
    static uint16_t px[4 * 256];
    multi_frame(fx, px, 4);
    DicomFile native = fx->f;
    CodecRenderParams p = defaults();
    Out want[4];
    for (uint32_t k = 0; k < 4; k++) {
        png_of(&native, NULL, k, &p, &want[k]);
    }
    AgError err;
    if (codec_transcode(&fx->f, RLE_TS, &err) != AG_OK) {
        fail_msg("transcode: %s", err.msg);
    }
    /* Loaded: codec_frame_bytes locates the frame. */
    for (uint32_t k = 0; k < 4; k++) {
        Out got;
        png_of(&fx->f, NULL, k, &p, &got);
        assert_memory_equal(want[k].px, got.px, 256);
    }
    /* Then with a Basic Offset Table, read back with fragments left in
     * the source: only the frame's fragment is read. */
    DicomElement *pe = dicom_dataset_find(fx->f.dataset,
                                          DICOM_TAG_PIXEL_DATA);
    uint32_t *bot = ag_arena_alloc(fx->a, 16);
    uint32_t at = 0;
    for (uint32_t k = 0; k < 4; k++) {
        bot[k] = at;
        at += 8 + pe->frags[k + 1].length;
    }
    for (int with_bot = 0; with_bot < 2; with_bot++) {
        pe = dicom_dataset_find(fx->f.dataset, DICOM_TAG_PIXEL_DATA);
        pe->frags[0].length = with_bot ? 16 : 0;
        pe->frags[0].data = with_bot ? (uint8_t *)bot : NULL;
        AgBuf file;
        DicomFile *g = reread(fx, RLE_TS, &file);
        const DicomElement *ge = dicom_dataset_find(g->dataset,
                                                    DICOM_TAG_PIXEL_DATA);
        assert_true(ge->flags & DICOM_EL_NOT_LOADED);
        MemSource m = {.data = file.data, .len = file.len};
        DicomBulkSource bulk = {.read = mem_read, .ctx = &m};
        for (uint32_t k = 0; k < 4; k++) {
            Out got;
            m.bytes_read = 0;
            png_of(g, &bulk, k, &p, &got);
            assert_int_equal(m.bytes_read, ge->frags[k + 1].length);
            assert_memory_equal(want[k].px, got.px, 256);
        }
        AgBuf b;
        assert_int_equal(render(g, &bulk, 4, &p, &b, &err),
                         AG_ERR_NOTFOUND);
        ag_buf_deinit(&file);
    }
}

static void test_one_bit(void **state)
{
    Fixture *fx = *state;
    /* 2 frames of 3x3 = 9 bits each, packed LSB first across frames. */
    uint8_t px[4] = {0};
    static const int bits[18] = {1, 0, 1, 0, 1, 0, 1, 0, 1,
                                 0, 0, 0, 1, 1, 1, 0, 0, 1};
    for (int i = 0; i < 18; i++) {
        px[i / 8] |= (uint8_t)(bits[i] << (i % 8));
    }
    Spec s = {.rows = 3, .cols = 3, .frames = 2, .bits = 1,
              .pi = "MONOCHROME2"};
    image(fx->f.dataset, &s, px, sizeof px);
    CodecRenderParams p = defaults();
    for (uint32_t k = 0; k < 2; k++) {
        Out o;
        png_of(&fx->f, NULL, k, &p, &o);
        uint8_t want[9];
        for (int i = 0; i < 9; i++) {
            want[i] = bits[k * 9 + i] ? 255 : 0;
        }
        expect_gray(&o, want, 9);
    }
}

/* ---- errors and faults --------------------------------------------------- */

static void test_errors(void **state)
{
    Fixture *fx = *state;
    ct_row(fx, "MONOCHROME2");
    AgBuf b;
    AgError err;
    CodecRenderParams p = defaults();
    assert_int_equal(render(&fx->f, NULL, 1, &p, &b, &err), AG_ERR_NOTFOUND);
    p.quality = 101;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
    p = defaults();
    p.width = CODEC_RENDER_MAX_SIZE + 1;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
    p = defaults();
    p.window = true;
    p.window_center = 0;
    p.window_width = 0.5;   /* LINEAR needs >= 1 */
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
    p = defaults();
    p.format = (CodecRenderFormat)7;
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_INVALID);
    p = defaults();
    set_ds(fx->f.dataset, 0x0028, 0x1053, "0");
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_PARSE);
    set_ds(fx->f.dataset, 0x0028, 0x1053, "1");
    /* Pixel data shorter than the frame */
    uint8_t few[4] = {0};
    assert_int_equal(dicom_set_bytes(fx->f.dataset, DICOM_TAG_PIXEL_DATA,
                                     DICOM_VR_OW, few, 4, NULL), AG_OK);
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_PARSE);
    dicom_dataset_remove(fx->f.dataset, DICOM_TAG_PIXEL_DATA);
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err),
                     AG_ERR_UNSUPPORTED);
    uint8_t enough[20] = {0};
    assert_int_equal(dicom_set_bytes(fx->f.dataset, DICOM_TAG_PIXEL_DATA,
                                     DICOM_VR_OW, enough, 20, NULL), AG_OK);
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_OK);
    ag_buf_deinit(&b);
    set_str(fx->f.dataset, DICOM_TAG(0x0028, 0x0004), DICOM_VR_CS, "RGB");
    assert_int_equal(render(&fx->f, NULL, 0, &p, &b, &err), AG_ERR_PARSE);
}

static void test_every_allocation_fails(void **state)
{
    Fixture *fx = *state;
    static uint16_t px[3 * 256];
    multi_frame(fx, px, 3);
    CodecRenderParams p = defaults();
    p.format = CODEC_RENDER_PNG;
    p.width = p.height = 7;
    for (long n = 1;; n++) {
        AgBuf b;
        AgError err;
        ag_buf_init(&b, 0);
        ag_test_fail_nth_alloc(n);
        int rc = codec_render_frame(&fx->f, NULL, 2, &p, &b, &err);
        ag_test_fail_nth_alloc(0);
        if (rc == AG_OK) {
            assert_true(b.len > 8);
            ag_buf_deinit(&b);
            break;
        }
        if (rc != AG_ERR_NOMEM) {
            fail_msg("allocation %ld: %s (%d)", n, err.msg, rc);
        }
        assert_int_equal(b.len, 0);
        ag_buf_deinit(&b);
        assert_true(n < 10000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_voi_linear_edges),
        cmocka_unit_test(test_voi_linear_exact_and_sigmoid),
        cmocka_unit_test(test_parse_window),
        cmocka_unit_test(test_fit),
        cmocka_unit_test_setup_teardown(test_ct_window_from_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_monochrome1_inverts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_request_window_overrides, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bits_stored_mask_and_sign,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigmoid_from_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_min_max_when_no_window, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_modality_lut_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_modality_lut_65536_signed_first,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_voi_lut_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_presentation_lut_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_enhanced_functional_groups,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_rgb_planar_and_16bit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ybr_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_palette_color, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scale_area_region_flip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scale_sizes_and_jpeg, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_jpeg_rgb_quality, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_native_frame_streamed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_encapsulated_frame_streamed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_allocation_fails, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
