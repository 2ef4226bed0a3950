/*
 * test_multipart.c — the streaming multipart/related parser (RFC 2046 §5.1,
 * RFC 2387) behind STOW-RS (PS3.18 §10.5): Content-Type parsing, parts and
 * headers, binary data that looks like a delimiter, every way of cutting
 * the body into feeds, truncation at every offset, limits, callback errors
 * and allocation failures.
 */
#include "../test_util.h"

#include "web/multipart.h"

#include <stdio.h>

#define BND "b0undary"

/* ---- a collector for the callbacks -------------------------------------- */

#define MAX_PARTS 16
#define PART_DATA (1 << 16)

typedef struct Part {
    WebPartHeaders h;
    uint8_t data[PART_DATA];
    size_t len;
    bool ended;
} Part;

typedef struct Coll {
    Part parts[MAX_PARTS];
    size_t n;
    bool in_part;
    size_t data_calls;
    /* Fault injection: fail the n-th call of that kind (1-based), 0 = no. */
    int fail_begin;
    int fail_data;
    int fail_end;
    int begins;
    int datas;
    int ends;
} Coll;

static Coll coll;
static AgError err;

static int on_begin(void *ctx, const WebPartHeaders *h, AgError *e)
{
    Coll *c = ctx;
    assert_false(c->in_part);
    if (c->fail_begin != 0 && ++c->begins == c->fail_begin) {
        return ag_error_set(e, AG_ERR_IO, "begin refused");
    }
    assert_true(c->n < MAX_PARTS);
    memset(&c->parts[c->n], 0, sizeof c->parts[c->n]);
    c->parts[c->n].h = *h;
    c->n++;
    c->in_part = true;
    return AG_OK;
}

static int on_data(void *ctx, const uint8_t *d, size_t len, AgError *e)
{
    Coll *c = ctx;
    assert_true(c->in_part);
    assert_true(len > 0);
    if (c->fail_data != 0 && ++c->datas == c->fail_data) {
        return ag_error_set(e, AG_ERR_EXISTS, "data refused");
    }
    Part *p = &c->parts[c->n - 1];
    assert_true(p->len + len <= PART_DATA);
    memcpy(p->data + p->len, d, len);
    p->len += len;
    c->data_calls++;
    return AG_OK;
}

static int on_end(void *ctx, AgError *e)
{
    Coll *c = ctx;
    assert_true(c->in_part);
    if (c->fail_end != 0 && ++c->ends == c->fail_end) {
        return ag_error_set(e, AG_ERR_UNSUPPORTED, "end refused");
    }
    c->parts[c->n - 1].ended = true;
    c->in_part = false;
    return AG_OK;
}

static const WebMultipartCallbacks CB = {on_begin, on_data, on_end};

static int setup_each(void **state)
{
    (void)state;
    memset(&coll, 0, sizeof coll);
    ag_error_clear(&err);
    return 0;
}

/* ---- drivers ------------------------------------------------------------ */

/*
 * Parse body with the given boundary and limits, feeding it in pieces of
 * `step` bytes (0 = all at once), or in two pieces split at `split` when
 * step is SIZE_MAX.  Returns the first error, or finish's result.
 */
static int run_lim(const char *boundary, const WebMultipartLimits *lim,
                   const void *body, size_t len, size_t step, size_t split)
{
    WebMultipart *m = NULL;
    int rc = web_multipart_create(boundary, lim, &CB, &coll, &m, &err);
    if (rc != AG_OK) {
        return rc;
    }
    const uint8_t *p = body;
    if (step == SIZE_MAX) {
        rc = web_multipart_feed(m, p, split, &err);
        if (rc == AG_OK) {
            rc = web_multipart_feed(m, p + split, len - split, &err);
        }
    } else if (step == 0) {
        rc = web_multipart_feed(m, p, len, &err);
    } else {
        for (size_t i = 0; i < len && rc == AG_OK; i += step) {
            size_t n = len - i < step ? len - i : step;
            rc = web_multipart_feed(m, p + i, n, &err);
        }
    }
    if (rc == AG_OK) {
        rc = web_multipart_finish(m, &err);
    }
    web_multipart_free(m);
    return rc;
}

static int run(const void *body, size_t len)
{
    return run_lim(BND, NULL, body, len, 0, 0);
}

static int run_str(const char *body)
{
    return run(body, strlen(body));
}

static void assert_part(size_t i, const char *data, bool ended)
{
    assert_true(i < coll.n);
    assert_int_equal(coll.parts[i].len, strlen(data));
    assert_memory_equal(coll.parts[i].data, data, strlen(data));
    assert_int_equal(coll.parts[i].ended, ended);
}

/* Everything the collector saw, as one comparable record. */
static void snapshot(Coll *out)
{
    memcpy(out, &coll, sizeof coll);
}

static void assert_same(const Coll *a, const Coll *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->parts[i].len, b->parts[i].len);
        assert_memory_equal(a->parts[i].data, b->parts[i].data,
                            a->parts[i].len);
        assert_int_equal(a->parts[i].ended, b->parts[i].ended);
        assert_memory_equal(&a->parts[i].h, &b->parts[i].h,
                            sizeof a->parts[i].h);
    }
}

/*
 * Parse body whole, then 1 byte at a time, then split in two at every
 * position: every way must give the same result and the same parts.
 */
static Coll whole;

static int run_every_split(const void *body, size_t len)
{
    memset(&coll, 0, sizeof coll);
    int expect = run_lim(BND, NULL, body, len, 0, 0);
    snapshot(&whole);
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_lim(BND, NULL, body, len, 1, 0), expect);
    assert_same(&whole, &coll);
    for (size_t s = 0; s <= len; s++) {
        memset(&coll, 0, sizeof coll);
        assert_int_equal(run_lim(BND, NULL, body, len, SIZE_MAX, s), expect);
        assert_same(&whole, &coll);
    }
    memcpy(&coll, &whole, sizeof coll);
    return expect;
}

/* ---- Content-Type ------------------------------------------------------- */

static char bnd[71];
static char typ[128];

static int ct(const char *h, bool any)
{
    return web_multipart_parse_content_type(h, any, bnd, typ, &err);
}

static void test_ct_quoted_and_unquoted(void **state)
{
    (void)state;
    assert_int_equal(ct("multipart/related; type=\"application/dicom\"; "
                        "boundary=\"a b'()+_,-./:=?Z\"", false), AG_OK);
    assert_string_equal(bnd, "a b'()+_,-./:=?Z");
    assert_string_equal(typ, "application/dicom");

    assert_int_equal(ct("Multipart/Related;BOUNDARY=xyz123;Type=Application/"
                        "DICOM", false), AG_OK);
    assert_string_equal(bnd, "xyz123");
    assert_string_equal(typ, "application/dicom");

    /* Whitespace around the separators, a trailing ';', unknown params. */
    assert_int_equal(ct("  multipart/related ; start=\"<x@y>\" ; boundary "
                        "= 1234 ;", false), AG_OK);
    assert_string_equal(bnd, "1234");
    assert_string_equal(typ, "");

    /* Quoted pair. */
    assert_int_equal(ct("multipart/related; boundary=\"a\\bc\"", false),
                     AG_OK);
    assert_string_equal(bnd, "abc");

    /* Unquoted bchars that are not token chars are tolerated. */
    assert_int_equal(ct("multipart/related; boundary=a/b=c?", false), AG_OK);
    assert_string_equal(bnd, "a/b=c?");
}

static void test_ct_boundary_length_and_chars(void **state)
{
    (void)state;
    char h[256];
    char b70[71];
    memset(b70, 'x', 70);
    b70[70] = '\0';
    snprintf(h, sizeof h, "multipart/related; boundary=%s", b70);
    assert_int_equal(ct(h, false), AG_OK);
    assert_string_equal(bnd, b70);
    snprintf(h, sizeof h, "multipart/related; boundary=\"%sx\"", b70);
    assert_int_equal(ct(h, false), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "71"));

    assert_int_equal(ct("multipart/related; boundary=\"\"", false),
                     AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related; boundary=", false),
                     AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related; boundary=\"ab@c\"", false),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "'@'"));
    assert_int_equal(ct("multipart/related; boundary=ab\x01" "c", false),
                     AG_ERR_INVALID);
    /* Space allowed inside, not last (RFC 2046 bcharsnospace). */
    assert_int_equal(ct("multipart/related; boundary=\"ab \"", false),
                     AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related; boundary=\"a\"b", false),
                     AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related; boundary=\"abc", false),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "unterminated"));
    assert_int_equal(ct("multipart/related; boundary=a b", false),
                     AG_ERR_INVALID);
}

static void test_ct_missing_or_duplicate(void **state)
{
    (void)state;
    assert_int_equal(ct("multipart/related", false), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "no boundary"));
    assert_int_equal(ct("multipart/related; type=application/dicom", false),
                     AG_ERR_INVALID);
    assert_string_equal(typ, "");
    assert_int_equal(ct("multipart/related; boundary=a; boundary=b", false),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "twice"));
    assert_int_equal(ct("multipart/related; type=a/b; type=c/d; boundary=x",
                        false), AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related; boundary", false),
                     AG_ERR_INVALID);
    assert_int_equal(ct("multipart/related boundary=x", false),
                     AG_ERR_INVALID);
    assert_int_equal(web_multipart_parse_content_type(NULL, false, bnd, typ,
                                                      &err), AG_ERR_INVALID);
}

static void test_ct_media_types(void **state)
{
    (void)state;
    assert_int_equal(ct("application/dicom; boundary=x", false),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "application/dicom"));
    assert_int_equal(ct("multipart/form-data; boundary=x", false),
                     AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "multipart/related"));
    assert_int_equal(ct("multipart/form-data; boundary=x", true), AG_OK);
    assert_string_equal(bnd, "x");
    assert_int_equal(ct("multipart/mixed; boundary=x", true), AG_OK);
    assert_int_equal(ct("multipart/; boundary=x", true), AG_ERR_INVALID);
    assert_int_equal(ct("multipart; boundary=x", true), AG_ERR_INVALID);
    assert_int_equal(ct("", true), AG_ERR_INVALID);
    assert_int_equal(ct("multipart/relatedx; boundary=x", false),
                     AG_ERR_INVALID);
    /* type too long for its buffer */
    char h[400];
    char t[200];
    memset(t, 'a', 199);
    t[199] = '\0';
    snprintf(h, sizeof h, "multipart/related; boundary=x; type=%s", t);
    assert_int_equal(ct(h, false), AG_ERR_INVALID);
}

/* ---- create ------------------------------------------------------------- */

static void test_create_refuses_bad_arguments(void **state)
{
    (void)state;
    WebMultipart *m = (WebMultipart *)&coll;   /* must be reset to NULL */
    assert_int_equal(web_multipart_create("", NULL, &CB, NULL, &m, &err),
                     AG_ERR_INVALID);
    assert_null(m);
    assert_int_equal(web_multipart_create("a\rb", NULL, &CB, NULL, &m, &err),
                     AG_ERR_INVALID);
    char b71[72];
    memset(b71, 'q', 71);
    b71[71] = '\0';
    assert_int_equal(web_multipart_create(b71, NULL, &CB, NULL, &m, &err),
                     AG_ERR_INVALID);
    assert_int_equal(web_multipart_create("x", NULL, NULL, NULL, &m, &err),
                     AG_ERR_INVALID);
    assert_int_equal(web_multipart_create(NULL, NULL, &CB, NULL, &m, &err),
                     AG_ERR_INVALID);
    web_multipart_free(NULL);
}

/* ---- parts -------------------------------------------------------------- */

static void test_one_part(void **state)
{
    (void)state;
    const char *body =
        "--" BND "\r\n"
        "Content-Type: Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1"
        "; X=AbC\r\n"
        "content-location:  http://host/Studies/1.2.3  \r\n"
        "CONTENT-ID: <Part1@Example>\r\n"
        "Content-Transfer-Encoding: BINARY\r\n"
        "X-Unknown: ignored\r\n"
        "\r\n"
        "hello\r\nworld\r\n"
        "\r\n--" BND "--\r\n";
    assert_int_equal(run_str(body), AG_OK);
    assert_int_equal(coll.n, 1);
    assert_part(0, "hello\r\nworld\r\n", true);
    const WebPartHeaders *h = &coll.parts[0].h;
    assert_string_equal(h->content_type, "application/dicom; "
                        "transfer-syntax=1.2.840.10008.1.2.1; X=AbC");
    assert_string_equal(h->content_location, "http://host/Studies/1.2.3");
    assert_string_equal(h->content_id, "<Part1@Example>");
    assert_string_equal(h->transfer_encoding, "binary");
}

static void test_several_parts_and_empty_parts(void **state)
{
    (void)state;
    const char *body =
        "--" BND "\r\n"
        "Content-Type: application/dicom\r\n\r\n"
        "AAAA"
        "\r\n--" BND "\r\n"
        "\r\n"                                  /* no headers */
        "B"
        "\r\n--" BND "\r\n"
        "Content-Type: text/plain\r\n\r\n"      /* empty body */
        "\r\n--" BND "\r\n"
        "\r\n"                                  /* no headers, empty body */
        "\r\n--" BND "--";
    assert_int_equal(run_every_split(body, strlen(body)), AG_OK);
    assert_int_equal(coll.n, 4);
    assert_part(0, "AAAA", true);
    assert_string_equal(coll.parts[0].h.content_type, "application/dicom");
    assert_part(1, "B", true);
    assert_string_equal(coll.parts[1].h.content_type, "");
    assert_part(2, "", true);
    assert_string_equal(coll.parts[2].h.content_type, "text/plain");
    assert_part(3, "", true);
}

static void test_data_that_looks_like_a_delimiter(void **state)
{
    (void)state;
    /* Not delimiters: no CRLF before "--", bare LF, CR alone, partial
     * boundary, CR CR LF, a NUL, the boundary with a CRLF but one dash. */
    static const char data[] =
        "-\r\n-" BND " inside\r\n"
        "x--" BND "\r\n"
        "\n--" BND "\r\n"
        "\r--" BND "\r\n"
        "\r\n--b0undar\r\n"
        "\r\n--b0undarY\r\n"
        "\r\r\n-\r\n--\r\n-" BND "\r\n"
        "\r\n\r\n\r\r\r"
        "\0\xff\r\n-";
    uint8_t body[512];
    size_t n = 0;
    const char *head = "--" BND "\r\n\r\n";
    memcpy(body, head, strlen(head));
    n += strlen(head);
    memcpy(body + n, data, sizeof data - 1);
    n += sizeof data - 1;
    const char *tail = "\r\n--" BND "--\r\n";
    memcpy(body + n, tail, strlen(tail));
    n += strlen(tail);

    assert_int_equal(run_every_split(body, n), AG_OK);
    assert_int_equal(coll.n, 1);
    assert_int_equal(coll.parts[0].len, sizeof data - 1);
    assert_memory_equal(coll.parts[0].data, data, sizeof data - 1);
    assert_true(coll.parts[0].ended);
}

static void test_data_ending_in_cr_and_crlf(void **state)
{
    (void)state;
    const char *body = "--" BND "\r\n\r\nab\r\r\n--" BND "\r\n\r\n\r\n\r\n"
                       "--" BND "--";
    assert_int_equal(run_every_split(body, strlen(body)), AG_OK);
    assert_int_equal(coll.n, 2);
    assert_part(0, "ab\r", true);
    assert_part(1, "\r\n", true);
}

static void test_every_split_binary(void **state)
{
    (void)state;
    /* Pseudo-random bytes salted with CR, LF and '-': every chunking must
     * give the same bytes back. */
    uint8_t data[700];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof data; i++) {
        x = x * 1103515245u + 12345u;
        uint8_t r = (uint8_t)(x >> 16);
        data[i] = r < 40 ? '\r' : r < 70 ? '\n' : r < 120 ? '-' : r;
    }
    uint8_t body[1024];
    size_t n = 0;
    memcpy(body, "--" BND "\r\n\r\n", 14);
    n = 14;
    memcpy(body + n, data, sizeof data);
    n += sizeof data;
    memcpy(body + n, "\r\n--" BND "--", 14);
    n += 14;
    assert_int_equal(run_every_split(body, n), AG_OK);
    assert_int_equal(coll.n, 1);
    assert_int_equal(coll.parts[0].len, sizeof data);
    assert_memory_equal(coll.parts[0].data, data, sizeof data);
}

static void test_preamble_padding_epilogue(void **state)
{
    (void)state;
    const char *body =
        "This is the preamble.  --" BND " here is not a delimiter.\r\n"
        "--" BND " \t \r\n"
        "\r\n"
        "one"
        "\r\n--" BND "\t\r\n"
        "\r\n"
        "two"
        "\r\n--" BND "--  \r\n"
        "This is the epilogue, ignored: --" BND "-- \r\n\n--" BND "\r\n";
    assert_int_equal(run_every_split(body, strlen(body)), AG_OK);
    assert_int_equal(coll.n, 2);
    assert_part(0, "one", true);
    assert_part(1, "two", true);

    /* Preamble that ends in CRLF right before the first delimiter. */
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_str("\r\n--" BND "\r\n\r\nx\r\n--" BND "--"), AG_OK);
    assert_part(0, "x", true);
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_str("junk\r\n\r\n--" BND "\r\n\r\nx\r\n--" BND "--"),
                     AG_OK);
    assert_part(0, "x", true);
}

static void test_headers_folding_lf_and_errors(void **state)
{
    (void)state;
    /* Folded value, bare-LF header lines, space before the colon. */
    const char *body =
        "--" BND "\r\n"
        "Content-Type: application/dicom;\r\n"
        "\ttransfer-syntax=1.2.3\n"
        "Content-ID : <a>\n"
        "\n"
        "x\r\n--" BND "--";
    assert_int_equal(run_every_split(body, strlen(body)), AG_OK);
    assert_string_equal(coll.parts[0].h.content_type,
                        "application/dicom;\ttransfer-syntax=1.2.3");
    assert_string_equal(coll.parts[0].h.content_id, "<a>");
    assert_part(0, "x", true);

    static const struct {
        const char *headers;
        int rc;
        const char *msg;
    } bad[] = {
        {"Content-Type: a\r\ncontent-type: b\r\n", AG_ERR_PARSE, "twice"},
        {"No colon here\r\n", AG_ERR_PARSE, "line 1"},
        {": empty name\r\n", AG_ERR_PARSE, "line 1"},
        {"X: a\r\n folded\r\nbad@name: x\r\n", AG_ERR_PARSE, "line 3"},
        {" starts folded\r\n", AG_ERR_PARSE, "continuation"},
        {"X: a\x01" "b\r\n", AG_ERR_PARSE, "control character 0x01"},
        {"X: a\rb\r\n", AG_ERR_PARSE, "control character 0x0d"},
        {"X: a\r\r\n", AG_ERR_PARSE, "control character 0x0d"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char b[512];
        snprintf(b, sizeof b, "--" BND "\r\n%s\r\nx\r\n--" BND "--",
                 bad[i].headers);
        memset(&coll, 0, sizeof coll);
        assert_int_equal(run_str(b), bad[i].rc);
        assert_non_null(strstr(err.msg, bad[i].msg));
        assert_non_null(strstr(err.msg, "part 1"));
        assert_int_equal(coll.n, 0);
    }

    /* A value longer than its field is refused, not truncated. */
    char b[2048];
    char loc[1100];
    memset(loc, 'l', sizeof loc - 1);
    loc[sizeof loc - 1] = '\0';
    snprintf(b, sizeof b, "--" BND "\r\nContent-Location: %s\r\n\r\n"
             "\r\n--" BND "--", loc);
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_str(b), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "content-location"));
    /* 1023 bytes fit. */
    loc[1023] = '\0';
    snprintf(b, sizeof b, "--" BND "\r\nContent-Location: %s\r\n\r\n"
             "\r\n--" BND "--", loc);
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_str(b), AG_OK);
    assert_string_equal(coll.parts[0].h.content_location, loc);
}

/* ---- malformed bodies --------------------------------------------------- */

static void test_malformed_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *msg;
    } bad[] = {
        {"", "no boundary delimiter \"--" BND "\""},
        {"no delimiter at all", "no boundary"},
        {"--" BND "--", "close delimiter before any part"},
        {"--" BND "--\r\n--" BND "--", "close delimiter before any part"},
        {"--" BND "X\r\n\r\nx\r\n--" BND "--",
         "first boundary: expected \"--\" or CRLF after \"--" BND "\", got "
         "'X' at body offset 10"},
        {"--" BND "\n\nx\n--" BND "--", "got 0x0a"},
        {"--" BND "\r\r\n", "expected LF after CR"},
        {"--" BND " x\r\n", "expected CRLF"},
        {"--" BND "\r\n\r\nx\r\n--" BND "-x", "boundary after part 1: "
         "expected \"--" BND "--\", got 'x'"},
        {"--" BND "\r\n\r\nx\r\n--" BND "zz\r\n", "boundary after part 1"},
        {"--" BND "\r\n\r\nx\r\n--" BND "--\r\n--" BND "--",
         "after the close delimiter"},
        {"--" BND "\r\n\r\nx\r\n--" BND "--epilogue\r\n--" BND "\r\n",
         "after the close delimiter"},
        {"--" BND "\r\n\r\nx\r\n--" BND "\r\n", "expected its headers or the "
         "close delimiter"},
        {"--" BND "\r\n\r\nx\n--" BND "--", "part 1: body ends without a "
         "delimiter"},
        {"--" BND "\r\nContent-Type: x\r\n", "part 1: body ends inside the "
         "header block"},
        {"--" BND "\r\n\r\nx\r\n--" BND "-", "inside the delimiter line"},
        {"--" BND "\r\n\r\nx\r\n--" BND "  ", "inside the delimiter line"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&coll, 0, sizeof coll);
        int rc = run_every_split(bad[i].body, strlen(bad[i].body));
        if (rc != AG_ERR_PARSE || strstr(err.msg, bad[i].msg) == NULL) {
            print_error("case %zu: rc %d msg \"%s\"\n", i, rc, err.msg);
        }
        assert_int_equal(rc, AG_ERR_PARSE);
        assert_non_null(strstr(err.msg, bad[i].msg));
    }
}

/* The blank line after the headers doubles as the delimiter's CRLF. */
static void test_delimiter_right_after_headers(void **state)
{
    (void)state;
    const char *body = "--" BND "\r\nContent-Type: a/b\r\n\r\n--" BND
                       "\r\n\r\n--" BND "\r\n\r\n\r\n--" BND "--";
    assert_int_equal(run_every_split(body, strlen(body)), AG_OK);
    assert_int_equal(coll.n, 3);
    assert_part(0, "", true);
    assert_string_equal(coll.parts[0].h.content_type, "a/b");
    assert_part(1, "", true);
    assert_part(2, "", true);
    /* So a body cannot start with the boundary followed by other text. */
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_str("--" BND "\r\n\r\n--" BND " inside\r\n--" BND
                             "--"), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "boundary after part 1"));
    /* Virtual bytes are never delivered: a body starting with CRLF. */
    memset(&coll, 0, sizeof coll);
    const char *b2 = "--" BND "\r\n\r\n\r\n-\r\n--" BND "--";
    assert_int_equal(run_every_split(b2, strlen(b2)), AG_OK);
    assert_part(0, "\r\n-", true);
}

/* Error messages name the part. */
static void test_error_names_the_part(void **state)
{
    (void)state;
    const char *body = "--" BND "\r\n\r\na\r\n--" BND "\r\n\r\nb\r\n--" BND
                       "\r\nX\r\n\r\nc";
    assert_int_equal(run_str(body), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "part 3: header line 1"));
    assert_int_equal(coll.n, 2);
    assert_true(coll.parts[1].ended);
}

/* Truncating a valid body anywhere fails, and never delivers extra data. */
static void test_truncation_at_every_offset(void **state)
{
    (void)state;
    const char *body =
        "pre\r\n--" BND " \r\n"
        "Content-Type: application/dicom\r\n\r\n"
        "DICM\r\n--b0und\r\r\n-"
        "\r\n--" BND "\r\n"
        "\r\n"
        "second"
        "\r\n--" BND "--\r\n";
    size_t len = strlen(body);
    const char *close = strstr(body, "--" BND "--");
    size_t need = (size_t)(close - body) + strlen("--" BND "--");
    for (size_t cut = 0; cut < len; cut++) {
        for (size_t step = 0; step <= 3; step++) {
            memset(&coll, 0, sizeof coll);
            int rc = run_lim(BND, NULL, body, cut, step, 0);
            if (cut >= need) {
                assert_int_equal(rc, AG_OK);        /* epilogue cut */
                continue;
            }
            assert_int_equal(rc, AG_ERR_PARSE);
            /* Whatever was delivered is a prefix of the real data. */
            if (coll.n >= 1) {
                const char *d0 = "DICM\r\n--b0und\r\r\n-";
                assert_true(coll.parts[0].len <= strlen(d0));
                assert_memory_equal(coll.parts[0].data, d0,
                                    coll.parts[0].len);
            }
            if (coll.n >= 2) {
                assert_true(coll.parts[0].ended);
                assert_true(coll.parts[1].len <= 6);
                assert_memory_equal(coll.parts[1].data, "second",
                                    coll.parts[1].len);
                assert_false(coll.parts[1].ended);
            }
        }
    }
}

/* Held-back bytes stay under the delimiter length, whatever the part. */
static void test_memory_independent_of_part_size(void **state)
{
    (void)state;
    WebMultipart *m = NULL;
    assert_int_equal(web_multipart_create(BND, NULL, &CB, &coll, &m, &err),
                     AG_OK);
    const char *head = "--" BND "\r\n\r\n";
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)head,
                                        strlen(head), &err), AG_OK);
    uint8_t chunk[777];
    size_t fed = 0;
    for (int round = 0; round < 60; round++) {
        /* Chunks end in a delimiter prefix of 0..11 bytes that the next
         * chunk (starting with 'A') breaks off. */
        static const char pre[] = "\r\n--" BND;
        size_t r = (size_t)round % 12;
        for (size_t i = 0; i < sizeof chunk; i++) {
            chunk[i] = i >= sizeof chunk - r
                           ? (uint8_t)pre[i - (sizeof chunk - r)]
                           : (uint8_t)('A' + i % 26);
        }
        assert_int_equal(web_multipart_feed(m, chunk, sizeof chunk, &err),
                         AG_OK);
        fed += sizeof chunk;
        size_t held = fed - coll.parts[0].len;
        assert_true(held <= strlen(BND) + 4);
        if (fed + sizeof chunk > PART_DATA) {
            /* keep the collector small: forget what was checked */
            fed -= coll.parts[0].len;
            coll.parts[0].len = 0;
        }
    }
    web_multipart_free(m);
}

/* ---- limits ------------------------------------------------------------- */

static void test_header_block_limit(void **state)
{
    (void)state;
    static char body[40000];
    char *p = body;
    p += sprintf(p, "--" BND "\r\n");
    while (p - body < 20000) {
        p += sprintf(p, "X-Filler: 0123456789012345678901234567890123\r\n");
    }
    p += sprintf(p, "\r\nx\r\n--" BND "--");
    size_t len = (size_t)(p - body);
    assert_int_equal(run_lim(BND, NULL, body, len, 0, 0), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "part 1: header block longer than 16384"));
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_lim(BND, NULL, body, len, 1, 0), AG_ERR_LIMIT);
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_lim(BND, NULL, body, len, 1000, 0), AG_ERR_LIMIT);
    assert_int_equal(coll.n, 0);

    /* Exactly at the limit passes; one byte more does not. */
    const char *ok = "--" BND "\r\nA: b\r\n\r\nx\r\n--" BND "--";
    WebMultipartLimits lim = {.max_header_bytes = 8};   /* "A: b\r\n\r\n" */
    for (size_t step = 0; step < 3; step++) {
        memset(&coll, 0, sizeof coll);
        assert_int_equal(run_lim(BND, &lim, ok, strlen(ok), step, 0), AG_OK);
        lim.max_header_bytes = 7;
        memset(&coll, 0, sizeof coll);
        assert_int_equal(run_lim(BND, &lim, ok, strlen(ok), step, 0),
                         AG_ERR_LIMIT);
        lim.max_header_bytes = 8;
    }
    /* A block that fills the limit exactly and is then cut: truncated. */
    memset(&coll, 0, sizeof coll);
    lim.max_header_bytes = 6;
    assert_int_equal(run_lim(BND, &lim, ok, strlen("--" BND "\r\nA: b\r\n"),
                             0, 0), AG_ERR_PARSE);
}

static void test_part_count_limit(void **state)
{
    (void)state;
    char body[1024];
    char *p = body;
    p += sprintf(p, "--" BND);
    for (int i = 0; i < 4; i++) {
        p += sprintf(p, "\r\n\r\n%d\r\n--" BND, i);
    }
    p += sprintf(p, "--");
    size_t len = (size_t)(p - body);
    WebMultipartLimits lim = {.max_parts = 4};
    assert_int_equal(run_lim(BND, &lim, body, len, 0, 0), AG_OK);
    assert_int_equal(coll.n, 4);
    lim.max_parts = 3;
    memset(&coll, 0, sizeof coll);
    assert_int_equal(run_lim(BND, &lim, body, len, 0, 0), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "more than 3 parts"));
    assert_int_equal(coll.n, 3);
    assert_true(coll.parts[2].ended);
}

static void test_default_part_limit(void **state)
{
    (void)state;
    WebMultipart *m = NULL;
    assert_int_equal(web_multipart_create(BND, NULL, &CB, &coll, &m, &err),
                     AG_OK);
    WebMultipartCallbacks none = {NULL, NULL, NULL};
    web_multipart_free(m);
    assert_int_equal(web_multipart_create(BND, NULL, &none, NULL, &m, &err),
                     AG_OK);
    const char *first = "--" BND;
    const char *each = "\r\n\r\n\r\n--" BND;
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)first,
                                        strlen(first), &err), AG_OK);
    int rc = AG_OK;
    int i;
    for (i = 0; i < 10001 && rc == AG_OK; i++) {
        rc = web_multipart_feed(m, (const uint8_t *)each, strlen(each), &err);
    }
    assert_int_equal(rc, AG_ERR_LIMIT);
    assert_int_equal(i, 10001);
    web_multipart_free(m);
}

/* ---- callbacks ---------------------------------------------------------- */

static void test_callback_errors_propagate(void **state)
{
    (void)state;
    const char *body = "--" BND "\r\n\r\naaa\r\n--" BND "\r\n\r\nbbb\r\n--"
                       BND "--";
    for (int nth = 1; nth <= 2; nth++) {
        memset(&coll, 0, sizeof coll);
        coll.fail_begin = nth;
        assert_int_equal(run_str(body), AG_ERR_IO);
        assert_string_equal(err.msg, "begin refused");
        assert_int_equal(coll.n, (size_t)nth - 1);

        memset(&coll, 0, sizeof coll);
        coll.fail_data = nth;
        assert_int_equal(run_str(body), AG_ERR_EXISTS);
        assert_string_equal(err.msg, "data refused");

        memset(&coll, 0, sizeof coll);
        coll.fail_end = nth;
        assert_int_equal(run_str(body), AG_ERR_UNSUPPORTED);
        assert_string_equal(err.msg, "end refused");
    }
    /* A data callback failing on a carried-over partial match. */
    memset(&coll, 0, sizeof coll);
    coll.fail_data = 1;
    const char *b2 = "--" BND "\r\n\r\n\r\n--b0unX\r\n--" BND "--";
    assert_int_equal(run_lim(BND, NULL, b2, strlen(b2), 1, 0), AG_ERR_EXISTS);

    /* After a failure the parser stays failed with the same code. */
    memset(&coll, 0, sizeof coll);
    coll.fail_begin = 1;
    WebMultipart *m = NULL;
    assert_int_equal(web_multipart_create(BND, NULL, &CB, &coll, &m, &err),
                     AG_OK);
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)body,
                                        strlen(body), &err), AG_ERR_IO);
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)"x", 1, &err),
                     AG_ERR_IO);
    assert_int_equal(web_multipart_finish(m, &err), AG_ERR_IO);
    web_multipart_free(m);
}

static void test_data_after_close_and_finish_twice(void **state)
{
    (void)state;
    WebMultipart *m = NULL;
    assert_int_equal(web_multipart_create(BND, NULL, &CB, &coll, &m, &err),
                     AG_OK);
    const char *body = "--" BND "\r\n\r\nz\r\n--" BND "--";
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)body,
                                        strlen(body), &err), AG_OK);
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)"\r\n\0junk", 7,
                                        &err), AG_OK);
    assert_int_equal(web_multipart_feed(m, NULL, 0, &err), AG_OK);
    assert_int_equal(web_multipart_finish(m, &err), AG_OK);
    assert_int_equal(web_multipart_finish(m, &err), AG_OK);
    assert_int_equal(web_multipart_feed(m, (const uint8_t *)"x", 1, &err),
                     AG_ERR_INVALID);
    web_multipart_free(m);
    assert_int_equal(coll.n, 1);
    assert_part(0, "z", true);
}

/* ---- allocation failures ------------------------------------------------ */

static void test_survives_every_oom(void **state)
{
    (void)state;
    const char *body = "--" BND "\r\nContent-Type: application/dicom\r\n\r\n"
                       "abc\r\n--" BND "\r\n\r\ndef\r\n--" BND "--";
    for (int n = 1;; n++) {
        memset(&coll, 0, sizeof coll);
        ag_test_fail_nth_alloc(n);
        int rc = run_lim(BND, NULL, body, strlen(body), 3, 0);
        ag_test_fail_nth_alloc(0);
        if (rc == AG_OK) {
            assert_int_equal(coll.n, 2);
            assert_part(0, "abc", true);
            assert_part(1, "def", true);
            break;
        }
        assert_int_equal(rc, AG_ERR_NOMEM);
        assert_true(n < 100);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, setup_each)
    const struct CMUnitTest tests[] = {
        T(test_ct_quoted_and_unquoted),
        T(test_ct_boundary_length_and_chars),
        T(test_ct_missing_or_duplicate),
        T(test_ct_media_types),
        T(test_create_refuses_bad_arguments),
        T(test_one_part),
        T(test_several_parts_and_empty_parts),
        T(test_data_that_looks_like_a_delimiter),
        T(test_data_ending_in_cr_and_crlf),
        T(test_every_split_binary),
        T(test_preamble_padding_epilogue),
        T(test_headers_folding_lf_and_errors),
        T(test_malformed_bodies),
        T(test_delimiter_right_after_headers),
        T(test_error_names_the_part),
        T(test_truncation_at_every_offset),
        T(test_memory_independent_of_part_size),
        T(test_header_block_limit),
        T(test_part_count_limit),
        T(test_default_part_limit),
        T(test_callback_errors_propagate),
        T(test_data_after_close_and_finish_twice),
        T(test_survives_every_oom),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
