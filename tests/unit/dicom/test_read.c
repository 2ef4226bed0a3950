/*
 * test_read.c — the Part 10 reader against hand-made input, byte by byte:
 * every syntax, sequences, fragments, and every kind of bad input of
 * SECURITY.md ("parsers") with its precise error.
 */
#include "../test_util.h"

#include "dicom/dicom.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

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

/* Preamble, DICM and a meta group declaring ts (explicit VR LE). */
static void tb_meta(TBuf *t, const char *ts)
{
    memset(t->b, 0, 128);
    t->n = 128;
    tb_bytes(t, "DICM", 4);
    size_t tslen = strlen(ts) + (strlen(ts) & 1);
    char tsv[66] = {0};
    memcpy(tsv, ts, strlen(ts));
    tb_el16(t, 0x0002, 0x0000, "UL", "\0\0\0\0", 4);
    size_t gl_at = t->n - 4;
    size_t start = t->n;
    tb_el16(t, 0x0002, 0x0001, "OB", "\0\1", 2);   /* short form is wrong */
    t->n -= 10;                                     /* ... so redo as OB */
    tb_el32(t, 0x0002, 0x0001, "OB", 2);
    tb_bytes(t, "\0\1", 2);
    tb_el16(t, 0x0002, 0x0010, "UI", tsv, (uint16_t)tslen);
    uint32_t gl = (uint32_t)(t->n - start);
    memcpy(t->b + gl_at, &gl, 4);
}

/* A small explicit VR LE data set with a nested sequence. */
static void tb_sample_body(TBuf *t)
{
    tb_el16(t, 0x0008, 0x0005, "CS", "ISO_IR 100", 10);
    tb_el16(t, 0x0008, 0x0018, "UI", "1.2.3.4\0", 8);
    tb_el32(t, 0x0008, 0x1115, "SQ", DICOM_UNDEFINED_LENGTH);
    tb_item(t, 0xe000, DICOM_UNDEFINED_LENGTH);
    tb_el16(t, 0x0020, 0x000e, "UI", "1.2.5\0", 6);
    tb_el32(t, 0x0008, 0x114a, "SQ", 16);          /* defined length */
    tb_item(t, 0xe000, 8);
    tb_el16(t, 0x0008, 0x1150, "UI", "", 0);
    tb_item(t, 0xe00d, 0);
    tb_item(t, 0xe0dd, 0);
    tb_el16(t, 0x0010, 0x0010, "PN", "Doe^John", 8);
    tb_el16(t, 0x0028, 0x0010, "US", "\0\2", 2);   /* 512 */
    tb_el32(t, 0x7fe0, 0x0010, "OW", 8);
    tb_bytes(t, "\1\0\2\0\3\0\4\0", 8);
}

static int read_tb(const TBuf *t, const DicomReadOptions *opt, DicomFile **f)
{
    return dicom_read_buffer(t->b, t->n, opt, arena, f, &err);
}

static void test_explicit_le_file(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_sample_body(&t);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_true(f->has_preamble);
    assert_string_equal(f->ts_uid, DICOM_TS_EXPLICIT_LE);
    assert_true(f->ts->explicit_vr);
    assert_int_equal(dicom_dataset_count(f->meta), 3);
    assert_int_equal(dicom_dataset_count(f->dataset), 6);
    assert_string_equal(dicom_get_string(f->dataset, 0x00100010, arena),
                        "Doe^John");
    int64_t rows;
    assert_int_equal(dicom_get_int(f->dataset, 0x00280010, &rows), AG_OK);
    assert_int_equal(rows, 512);
    DicomElement *seq = dicom_dataset_find(f->dataset, 0x00081115);
    assert_int_equal(seq->vr, DICOM_VR_SQ);
    assert_int_equal(seq->nitems, 1);
    assert_true(seq->flags & DICOM_EL_UNDEFINED_LENGTH);
    DicomElement *inner = dicom_dataset_find(seq->items[0], 0x0008114a);
    assert_int_equal(inner->nitems, 1);
    assert_false(dicom_dataset_item_undefined_length(inner->items[0]));
    assert_int_equal(dicom_dataset_count(inner->items[0]), 1);
    DicomElement *px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA);
    assert_int_equal(px->length, 8);
    assert_int_equal(px->offset, t.n - 8);
    assert_memory_equal(px->value, "\1\0\2\0\3\0\4\0", 8);
}

static void test_stop_before_pixels_and_bulk(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_sample_body(&t);
    DicomFile *f;
    DicomReadOptions stop = {.stop_before_pixels = true};
    assert_int_equal(read_tb(&t, &stop, &f), AG_OK);
    assert_true(f->stopped_at_pixels);
    assert_int_equal(f->pixel_offset, t.n - 8 - 12);
    assert_null(dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA));
    DicomReadOptions bulk = {.bulk_threshold = 4};
    assert_int_equal(read_tb(&t, &bulk, &f), AG_OK);
    DicomElement *px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA);
    assert_true(px->flags & DICOM_EL_NOT_LOADED);
    assert_null(px->value);
    assert_int_equal(px->offset, t.n - 8);
    assert_int_equal(px->length, 8);
}

static void test_implicit_and_big_endian(void **state)
{
    (void)state;
    /* Implicit VR LE bare data set: VRs come from the dictionary. */
    static TBuf t;
    t.n = 0;
    tb_u16(&t, 0x0028); tb_u16(&t, 0x0010); tb_u32(&t, 2); tb_u16(&t, 256);
    tb_u16(&t, 0x0028); tb_u16(&t, 0x0103); tb_u32(&t, 2); tb_u16(&t, 1);
    /* Smallest Image Pixel Value is "US or SS": SS when signed. */
    tb_u16(&t, 0x0028); tb_u16(&t, 0x0106); tb_u32(&t, 2); tb_u16(&t, 0xfffe);
    DicomDataset *ds;
    assert_int_equal(dicom_read_dataset(t.b, t.n, DICOM_TS_IMPLICIT_LE, NULL,
                                        arena, &ds, &err), AG_OK);
    DicomElement *el = dicom_dataset_find(ds, 0x00280010);
    assert_int_equal(el->vr, DICOM_VR_US);
    el = dicom_dataset_find(ds, 0x00280106);
    assert_int_equal(el->vr, DICOM_VR_SS);
    int64_t v;
    assert_int_equal(dicom_element_int(el, 0, &v, NULL), AG_OK);
    assert_int_equal(v, -2);

    /* Explicit VR big endian: values are swapped to little endian. */
    static const uint8_t be[] = {
        0x00, 0x28, 0x00, 0x10, 'U', 'S', 0x00, 0x02, 0x01, 0x00,
        0x00, 0x28, 0x00, 0x30, 'D', 'S', 0x00, 0x04, '0', '.', '5', ' ',
        0x00, 0x28, 0x01, 0x01, 'U', 'L', 0x00, 0x04, 0x00, 0x00, 0x01, 0x02,
    };
    assert_int_equal(dicom_read_dataset(be, sizeof be, DICOM_TS_EXPLICIT_BE,
                                        NULL, arena, &ds, &err), AG_OK);
    assert_int_equal(dicom_get_int(ds, 0x00280010, &v), AG_OK);
    assert_int_equal(v, 256);
    assert_int_equal(dicom_get_int(ds, 0x00280101, &v), AG_OK);
    assert_int_equal(v, 258);
    assert_string_equal(dicom_get_string(ds, 0x00280030, arena), "0.5");
}

static void test_bare_dataset_detection(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_sample_body(&t);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_false(f->has_preamble);
    assert_string_equal(f->ts_uid, DICOM_TS_EXPLICIT_LE);
    assert_int_equal(dicom_dataset_count(f->dataset), 6);
    /* Random text is refused early, not read as a data set. */
    const char *junk = "Hello, this is not DICOM at all.";
    assert_int_equal(dicom_read_buffer((const uint8_t *)junk, strlen(junk),
                                       NULL, arena, &f, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "not a DICOM file"));
    assert_int_equal(dicom_read_buffer((const uint8_t *)"", 0, NULL, arena,
                                       &f, &err), AG_ERR_PARSE);
}

static void test_encapsulated_fragments(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, "1.2.840.10008.1.2.4.50");
    tb_el16(&t, 0x0028, 0x0010, "US", "\0\2", 2);
    tb_el32(&t, 0x7fe0, 0x0010, "OB", DICOM_UNDEFINED_LENGTH);
    tb_item(&t, 0xe000, 4);
    tb_u32(&t, 0);                 /* basic offset table: one frame at 0 */
    tb_item(&t, 0xe000, 6);
    tb_bytes(&t, "\xff\xd8\x01\x02\xff\xd9", 6);
    tb_item(&t, 0xe0dd, 0);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_true(f->ts->encapsulated);
    DicomElement *px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA);
    assert_true(px->flags & DICOM_EL_ENCAPSULATED);
    assert_int_equal(px->nfrags, 2);
    assert_int_equal(px->frags[0].length, 4);
    assert_int_equal(px->frags[1].length, 6);
    assert_memory_equal(px->frags[1].data, "\xff\xd8\x01\x02\xff\xd9", 6);
    assert_int_equal(px->frags[1].offset, t.n - 8 - 6);
    /* A fragment of undefined length is refused. */
    t.n -= 8 + 6 + 8;
    tb_item(&t, 0xe000, DICOM_UNDEFINED_LENGTH);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "undefined length"));
}

static void test_truncation_at_every_offset(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_sample_body(&t);
    size_t full = t.n;
    size_t ok = 0;
    for (size_t n = 0; n < full; n++) {
        AgArena *a = ag_arena_create(1 << 20);
        DicomFile *f = NULL;
        AgError e;
        int rc = dicom_read_buffer(t.b, n, NULL, a, &f, &e);
        if (rc == AG_OK) {
            /* Only a cut between top-level elements leaves a valid (and
             * shorter) file. */
            ok++;
            assert_true(dicom_dataset_count(f->dataset) < 6);
        } else {
            assert_int_equal(rc, AG_ERR_PARSE);
            assert_true(strstr(e.msg, "offset") != NULL ||
                        strstr(e.msg, "DICOM") != NULL ||
                        strstr(e.msg, "empty") != NULL);
        }
        ag_arena_destroy(a);
    }
    assert_true(ok < 20);
}

static void test_lying_lengths(void **state)
{
    (void)state;
    static TBuf t;
    DicomFile *f;
    /* A length past the end of the file. */
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el32(&t, 0x7fe0, 0x0010, "OW", 0xfffffff0);
    tb_bytes(&t, "\0\0\0\0", 4);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "(7fe0,0010)"));
    assert_non_null(strstr(err.msg, "exceeds"));
    /* An element that runs past its item's defined length. */
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el32(&t, 0x0008, 0x1115, "SQ", 20);
    tb_item(&t, 0xe000, 12);
    tb_el16(&t, 0x0008, 0x1150, "UI", "1.2.3.4.5.6\0", 12);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "past the end of its container"));
    /* Undefined length where the VR forbids it. */
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el32(&t, 0x0010, 0x4000, "UT", DICOM_UNDEFINED_LENGTH);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "undefined length is not allowed"));
    /* A binary value whose length is not a multiple of its size. */
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el16(&t, 0x0028, 0x0010, "US", "\1\0\2\0\3\0\4", 6);
    t.b[t.n - 8] = 5;   /* length 5 */
    t.n--;
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
}

static void test_odd_lengths_strict_and_lenient(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el16(&t, 0x0009, 0x0010, "LO", "ACME", 4);
    tb_el16(&t, 0x0009, 0x1001, "LO", "odd", 3);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    DicomReadOptions strict = {.strict = true};
    assert_int_equal(read_tb(&t, &strict, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "(0009,1001)"));
    assert_non_null(strstr(err.msg, "odd"));
}

static void test_nesting_is_capped(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    for (int i = 0; i < 100; i++) {
        tb_el32(&t, 0x0040, 0xa730, "SQ", DICOM_UNDEFINED_LENGTH);
        tb_item(&t, 0xe000, DICOM_UNDEFINED_LENGTH);
    }
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "nested deeper than 32"));
    DicomReadOptions deep = {.max_depth = 8};
    assert_int_equal(read_tb(&t, &deep, &f), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "deeper than 8"));
}

static void test_unknown_vr_duplicates_and_order(void **state)
{
    (void)state;
    static TBuf t;
    DicomFile *f;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el16(&t, 0x0010, 0x0010, "ZZ", "ab", 2);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "unknown VR ZZ"));
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el16(&t, 0x0010, 0x0010, "PN", "ab", 2);
    tb_el16(&t, 0x0010, 0x0010, "PN", "cd", 2);
    assert_int_equal(read_tb(&t, NULL, &f), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "duplicate element"));
    /* Out of order: accepted and sorted, as DCMTK does. */
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el16(&t, 0x0010, 0x0020, "LO", "ID", 2);
    tb_el16(&t, 0x0010, 0x0010, "PN", "ab", 2);
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_int_equal(dicom_dataset_at(f->dataset, 0)->tag, 0x00100010);
}

static void test_preamble_is_data(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    memcpy(t.b, "\x7f" "ELF\2\1\1", 7);                 /* an executable */
    memcpy(t.b + 64, "{\"cmd\": \"rm -rf /\"}", 19);   /* and JSON */
    tb_sample_body(&t);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_memory_equal(f->preamble, "\x7f" "ELF", 4);
    assert_int_equal(dicom_dataset_count(f->dataset), 6);
}

static void test_budget_limits_allocation(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_el32(&t, 0x7fe0, 0x0010, "OB", 40000);
    memset(t.b + t.n, 0x55, 40000);
    t.n += 40000;
    AgArena *small = ag_arena_create(16 << 10);
    DicomFile *f;
    assert_int_equal(dicom_read_buffer(t.b, t.n, NULL, small, &f, &err),
                     AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "budget"));
    ag_arena_destroy(small);
}

static void write_file(const char *path, const TBuf *t)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t->b, t->n), (ssize_t)t->n);
    close(fd);
}

static void test_fd_and_pipe_match_buffer(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_sample_body(&t);
    /* A value larger than the reader's window, to cross refills. */
    tb_el32(&t, 0x7fe1, 0x0010, "OB", 100000);
    for (int i = 0; i < 100000; i++) {
        t.b[t.n++] = (uint8_t)(i * 7);
    }
    char path[] = "/tmp/agora-test-read-XXXXXX";
    int tmpfd = mkstemp(path);
    assert_true(tmpfd >= 0);
    close(tmpfd);
    write_file(path, &t);
    DicomFile *f;
    assert_int_equal(dicom_read_path(path, NULL, arena, &f, &err), AG_OK);
    DicomElement *big = dicom_dataset_find(f->dataset, 0x7fe10010);
    assert_memory_equal(big->value, t.b + t.n - 100000, 100000);
    DicomReadOptions bulk = {.bulk_threshold = 1024};
    assert_int_equal(dicom_read_path(path, &bulk, arena, &f, &err), AG_OK);
    big = dicom_dataset_find(f->dataset, 0x7fe10010);
    assert_true(big->flags & DICOM_EL_NOT_LOADED);
    assert_int_equal(big->offset, t.n - 100000);
    /* Through a pipe: no size known, forward reads only. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        ssize_t w = write(p[1], t.b, t.n);
        _exit(w == (ssize_t)t.n ? 0 : 1);
    }
    close(p[1]);
    assert_int_equal(dicom_read_fd(p[0], NULL, arena, &f, &err), AG_OK);
    close(p[0]);
    big = dicom_dataset_find(f->dataset, 0x7fe10010);
    assert_memory_equal(big->value, t.b + t.n - 100000, 100000);
    assert_int_equal(dicom_dataset_count(f->dataset), 7);
    /* A missing file names its path. */
    assert_int_equal(dicom_read_path("/nonexistent/x.dcm", NULL, arena, &f,
                                     &err), AG_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.dcm"));
    unlink(path);
}

static size_t deflate_raw(const uint8_t *in, size_t n, uint8_t *out,
                          size_t cap)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8,
                                  Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    return got;
}

static void test_deflated(void **state)
{
    (void)state;
    static TBuf body, t;
    body.n = 0;
    tb_sample_body(&body);
    t.n = 0;
    tb_meta(&t, DICOM_TS_DEFLATED_LE);
    t.n += deflate_raw(body.b, body.n, t.b + t.n, sizeof t.b - t.n);
    DicomFile *f;
    assert_int_equal(read_tb(&t, NULL, &f), AG_OK);
    assert_true(f->ts->deflated);
    assert_int_equal(dicom_dataset_count(f->dataset), 6);
    assert_string_equal(dicom_get_string(f->dataset, 0x00100010, arena),
                        "Doe^John");
    /* A corrupt stream is an error naming the deflated data set. */
    t.b[t.n - 5] ^= 0xff;
    t.b[t.n - 20] ^= 0xff;
    int rc = read_tb(&t, NULL, &f);
    assert_true(rc == AG_ERR_PARSE);
}

/* Found by fuzz_read: one byte after "DICM" was read as a 2-byte group. */
static void test_fuzz_one_byte_after_dicm(void **state)
{
    (void)state;
    uint8_t b[133] = {0};
    memcpy(b + 128, "DICM\x02", 5);
    DicomFile *f;
    assert_int_equal(dicom_read_buffer(b, sizeof b, NULL, arena, &f, &err),
                     AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "truncated"));
}

static void test_read_survives_every_oom(void **state)
{
    (void)state;
    static TBuf t;
    t.n = 0;
    tb_meta(&t, DICOM_TS_EXPLICIT_LE);
    tb_sample_body(&t);
    for (long n = 1;; n++) {
        AgArena *a = ag_arena_create(0);
        assert_non_null(a);
        ag_test_fail_nth_alloc(n);
        DicomFile *f;
        AgError e;
        int rc = dicom_read_buffer(t.b, t.n, NULL, a, &f, &e);
        ag_test_fail_nth_alloc(0);
        ag_arena_destroy(a);
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
        T(test_explicit_le_file),
        T(test_stop_before_pixels_and_bulk),
        T(test_implicit_and_big_endian),
        T(test_bare_dataset_detection),
        T(test_encapsulated_fragments),
        T(test_truncation_at_every_offset),
        T(test_lying_lengths),
        T(test_odd_lengths_strict_and_lenient),
        T(test_nesting_is_capped),
        T(test_unknown_vr_duplicates_and_order),
        T(test_preamble_is_data),
        T(test_budget_limits_allocation),
        T(test_fd_and_pipe_match_buffer),
        T(test_deflated),
        T(test_fuzz_one_byte_after_dicm),
        T(test_read_survives_every_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
