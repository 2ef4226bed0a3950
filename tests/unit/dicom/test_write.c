/*
 * test_write.c — the writer: byte-identical round trips in every native
 * syntax, recomputed lengths after edits, meta group, preamble, values left
 * in the source.
 */
#include "../test_util.h"

#include "dicom/dicom.h"

static AgArena *arena;
static AgError err;

static int setup_each(void **state)
{
    (void)state;
    arena = ag_arena_create(64 << 20);
    ag_error_clear(&err);
    return arena == NULL;
}

static int teardown_each(void **state)
{
    (void)state;
    ag_arena_destroy(arena);
    return 0;
}

/* A data set built through the editing API. */
static DicomDataset *sample(void)
{
    DicomDataset *ds = dicom_dataset_create(arena);
    int64_t rows = 2, cols = 2, bits = 16;
    assert_int_equal(dicom_set_string(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET, 0,
                                      "ISO_IR 192", NULL), AG_OK);
    assert_int_equal(dicom_set_string(ds, DICOM_TAG_SOP_CLASS_UID, 0,
                                      "1.2.840.10008.5.1.4.1.1.2", NULL),
                     AG_OK);
    assert_int_equal(dicom_set_string(ds, DICOM_TAG_SOP_INSTANCE_UID, 0,
                                      "1.2.3.4.5", NULL), AG_OK);
    assert_int_equal(dicom_set_string(ds, 0x00100010, 0, "Müller^Jürgen",
                                      NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00280010, 0, &rows, 1, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00280011, 0, &cols, 1, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00280100, 0, &bits, 1, NULL), AG_OK);
    double slope = 1.5;
    assert_int_equal(dicom_set_floats(ds, 0x00189087, DICOM_VR_FD, &slope, 1,
                                      NULL), AG_OK);
    DicomElement *seq;
    DicomDataset *item;
    assert_int_equal(dicom_set_sequence(ds, 0x00081115, &seq, NULL), AG_OK);
    assert_int_equal(dicom_sequence_append(ds, seq, &item, NULL), AG_OK);
    assert_int_equal(dicom_set_string(item, 0x0020000e, 0, "1.2.3.9", NULL),
                     AG_OK);
    static const uint8_t px[8] = {1, 0, 2, 0, 3, 1, 4, 1};
    assert_int_equal(dicom_set_bytes(ds, DICOM_TAG_PIXEL_DATA, DICOM_VR_OW,
                                     px, 8, NULL), AG_OK);
    return ds;
}

static DicomFile *sample_file(const char *ts)
{
    DicomFile *f = ag_arena_zalloc(arena, sizeof *f);
    f->dataset = sample();
    assert_int_equal(dicom_file_build_meta(f, ts, &err), AG_OK);
    return f;
}

static void write_to(const DicomFile *f, const char *ts,
                     const DicomWriteOptions *opt, AgBuf *out)
{
    ag_buf_init(out, 0);
    assert_int_equal(dicom_write_file(f, ts, opt, dicom_sink_buf, out, &err),
                     AG_OK);
}

static void assert_same_values(const DicomDataset *a, const DicomDataset *b)
{
    assert_int_equal(dicom_dataset_count(a), dicom_dataset_count(b));
    for (size_t i = 0; i < dicom_dataset_count(a); i++) {
        const DicomElement *x = dicom_dataset_at(a, i);
        const DicomElement *y = dicom_dataset_at(b, i);
        assert_int_equal(x->tag, y->tag);
        assert_int_equal(x->vr, y->vr);
        if (x->vr == DICOM_VR_SQ) {
            assert_int_equal(x->nitems, y->nitems);
            for (uint32_t k = 0; k < x->nitems; k++) {
                assert_same_values(x->items[k], y->items[k]);
            }
            continue;
        }
        assert_int_equal(x->length, y->length);
        if (x->length > 0) {
            assert_memory_equal(x->value, y->value, x->length);
        }
    }
}

static void test_every_native_syntax_round_trips(void **state)
{
    (void)state;
    static const char *const syntaxes[] = {
        DICOM_TS_IMPLICIT_LE, DICOM_TS_EXPLICIT_LE, DICOM_TS_EXPLICIT_BE,
        DICOM_TS_DEFLATED_LE,
    };
    for (size_t i = 0; i < 4; i++) {
        DicomFile *f = sample_file(syntaxes[i]);
        AgBuf out;
        write_to(f, NULL, NULL, &out);
        DicomFile *g;
        assert_int_equal(dicom_read_buffer(out.data, out.len, NULL, arena, &g,
                                           &err), AG_OK);
        assert_string_equal(g->ts_uid, syntaxes[i]);
        assert_same_values(f->dataset, g->dataset);
        /* Reading then writing in its own syntax gives identical bytes. */
        AgBuf again;
        write_to(g, NULL, NULL, &again);
        assert_int_equal(again.len, out.len);
        assert_memory_equal(again.data, out.data, out.len);
        ag_buf_deinit(&again);
        ag_buf_deinit(&out);
    }
}

static void test_big_endian_bytes_on_the_wire(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_BE);
    AgBuf out;
    write_to(f, NULL, NULL, &out);
    /* Rows (0028,0010) US 2 in big endian: 00 28 00 10 'U' 'S' 00 02 00 02 */
    static const uint8_t rows[] = {0x00, 0x28, 0x00, 0x10, 'U', 'S',
                                   0x00, 0x02, 0x00, 0x02};
    bool found = false;
    for (size_t i = 0; i + sizeof rows <= out.len && !found; i++) {
        found = memcmp(out.data + i, rows, sizeof rows) == 0;
    }
    assert_true(found);
    /* OW pixel words are swapped: 0x0001 -> 00 01 */
    assert_memory_equal(out.data + out.len - 8, "\0\1\0\2\1\3\1\4", 8);
    ag_buf_deinit(&out);
}

static void test_meta_group(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_LE);
    AgBuf out;
    write_to(f, DICOM_TS_IMPLICIT_LE, NULL, &out);
    assert_memory_equal(out.data + 128, "DICM", 4);
    DicomFile *g;
    assert_int_equal(dicom_read_buffer(out.data, out.len, NULL, arena, &g,
                                       &err), AG_OK);
    assert_string_equal(g->ts_uid, DICOM_TS_IMPLICIT_LE);
    assert_string_equal(dicom_get_string(g->meta,
                                         DICOM_TAG_IMPLEMENTATION_CLASS_UID,
                                         arena),
                        DICOM_IMPLEMENTATION_CLASS_UID);
    assert_string_equal(dicom_get_string(g->meta,
                                         DICOM_TAG_MEDIA_SOP_INSTANCE_UID,
                                         arena), "1.2.3.4.5");
    /* The group length counts the bytes after it (PS3.10 §7.1). */
    int64_t gl;
    assert_int_equal(dicom_get_int(g->meta, DICOM_TAG_FILE_META_GROUP_LENGTH,
                                   &gl), AG_OK);
    assert_int_equal((uint64_t)gl, g->dataset_offset - 132 - 12);
    ag_buf_deinit(&out);
    /* No SOP Instance UID: no meta. */
    DicomFile bare = {.dataset = dicom_dataset_create(arena)};
    assert_int_equal(dicom_file_build_meta(&bare, DICOM_TS_EXPLICIT_LE, &err),
                     AG_ERR_INVALID);
}

static void test_preamble_kept_or_zeroed(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_LE);
    f->has_preamble = true;
    memcpy(f->preamble, "MZ\x90", 3);
    AgBuf out;
    write_to(f, NULL, NULL, &out);
    assert_memory_equal(out.data, "MZ\x90", 3);
    ag_buf_deinit(&out);
    DicomWriteOptions zero = {.zero_preamble = true};
    write_to(f, NULL, &zero, &out);
    static const uint8_t zeros[128] = {0};
    assert_memory_equal(out.data, zeros, 128);
    ag_buf_deinit(&out);
}

static void test_edited_defined_lengths_are_recomputed(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_LE);
    DicomElement *seq = dicom_dataset_find(f->dataset, 0x00081115);
    seq->flags &= (uint16_t)~DICOM_EL_UNDEFINED_LENGTH;
    dicom_dataset_set_item_undefined_length(seq->items[0], false);
    AgBuf out;
    write_to(f, NULL, NULL, &out);
    DicomFile *g;
    assert_int_equal(dicom_read_buffer(out.data, out.len, NULL, arena, &g,
                                       &err), AG_OK);
    /* Grow the item, write again: lengths follow. */
    DicomElement *gs = dicom_dataset_find(g->dataset, 0x00081115);
    assert_false(gs->flags & DICOM_EL_UNDEFINED_LENGTH);
    assert_int_equal(dicom_set_string(gs->items[0], 0x00081150, 0,
                                      "1.2.840.10008.5.1.4.1.1.4", NULL),
                     AG_OK);
    AgBuf out2;
    write_to(g, NULL, NULL, &out2);
    DicomFile *h;
    assert_int_equal(dicom_read_buffer(out2.data, out2.len, NULL, arena, &h,
                                       &err), AG_OK);
    DicomElement *hs = dicom_dataset_find(h->dataset, 0x00081115);
    assert_int_equal(dicom_dataset_count(hs->items[0]), 2);
    assert_same_values(g->dataset, h->dataset);
    ag_buf_deinit(&out);
    ag_buf_deinit(&out2);
}

typedef struct Src {
    const uint8_t *data;
    size_t len;
} Src;

static int src_read(void *ctx, uint64_t off, void *dst, size_t len,
                    AgError *e)
{
    Src *s = ctx;
    if (off + len > s->len) {
        return ag_error_set(e, AG_ERR_IO, "short source");
    }
    memcpy(dst, s->data + off, len);
    return AG_OK;
}

static void test_values_left_in_the_source(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_LE);
    AgBuf out;
    write_to(f, NULL, NULL, &out);
    DicomReadOptions bulk = {.bulk_threshold = 4};
    DicomFile *g;
    assert_int_equal(dicom_read_buffer(out.data, out.len, &bulk, arena, &g,
                                       &err), AG_OK);
    assert_true(dicom_dataset_find(g->dataset, DICOM_TAG_PIXEL_DATA)->flags &
                DICOM_EL_NOT_LOADED);
    /* Without a source the writer refuses... */
    AgBuf none;
    ag_buf_init(&none, 0);
    assert_int_equal(dicom_write_file(g, NULL, NULL, dicom_sink_buf, &none,
                                      &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not loaded"));
    ag_buf_deinit(&none);
    /* ...with one it copies the bytes, swapping for big endian. */
    Src src = {out.data, out.len};
    DicomBulkSource bs = {.read = src_read, .ctx = &src};
    DicomWriteOptions wo = {.bulk = &bs};
    AgBuf copy;
    write_to(g, NULL, &wo, &copy);
    assert_int_equal(copy.len, out.len);
    assert_memory_equal(copy.data, out.data, out.len);
    ag_buf_deinit(&copy);
    write_to(g, DICOM_TS_EXPLICIT_BE, &wo, &copy);
    assert_memory_equal(copy.data + copy.len - 8, "\0\1\0\2\1\3\1\4", 8);
    ag_buf_deinit(&copy);
    ag_buf_deinit(&out);
}

static void test_refusals(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_EXPLICIT_LE);
    AgBuf out;
    ag_buf_init(&out, 0);
    assert_int_equal(dicom_write_file(f, "1.2.x", NULL, dicom_sink_buf, &out,
                                      &err), AG_ERR_INVALID);
    /* Encapsulated pixel data cannot go into a native syntax. */
    DicomElement px = {.tag = DICOM_TAG_PIXEL_DATA, .vr = DICOM_VR_OB,
                       .flags = DICOM_EL_ENCAPSULATED |
                                DICOM_EL_UNDEFINED_LENGTH,
                       .length = DICOM_UNDEFINED_LENGTH};
    assert_int_equal(dicom_dataset_put(f->dataset, &px, NULL), AG_OK);
    assert_int_equal(dicom_write_file(f, DICOM_TS_IMPLICIT_LE, NULL,
                                      dicom_sink_buf, &out, &err),
                     AG_ERR_UNSUPPORTED);
    /* A sink that fails stops the writer with its error. */
    AgBuf tiny;
    ag_buf_init(&tiny, 100);
    f = sample_file(DICOM_TS_EXPLICIT_LE);
    assert_int_equal(dicom_write_file(f, NULL, NULL, dicom_sink_buf, &tiny,
                                      &err), AG_ERR_LIMIT);
    ag_buf_deinit(&tiny);
    ag_buf_deinit(&out);
}

static void test_write_survives_every_oom(void **state)
{
    (void)state;
    DicomFile *f = sample_file(DICOM_TS_DEFLATED_LE);
    for (long n = 1;; n++) {
        AgBuf out;
        ag_buf_init(&out, 0);
        ag_test_fail_nth_alloc(n);
        AgError e;
        int rc = dicom_write_file(f, NULL, NULL, dicom_sink_buf, &out, &e);
        ag_test_fail_nth_alloc(0);
        ag_buf_deinit(&out);
        if (rc == AG_OK) {
            break;
        }
        assert_int_equal(rc, AG_ERR_NOMEM);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_each, teardown_each)
    const struct CMUnitTest tests[] = {
        T(test_every_native_syntax_round_trips),
        T(test_big_endian_bytes_on_the_wire),
        T(test_meta_group),
        T(test_preamble_kept_or_zeroed),
        T(test_edited_defined_lengths_are_recomputed),
        T(test_values_left_in_the_source),
        T(test_refusals),
        T(test_write_survives_every_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
