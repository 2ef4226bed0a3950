/*
 * test_accept.c — content negotiation (accept.c): the Accept header
 * grammar of RFC 9110 §12.5.1 with the PS3.18 §8.7.3.5 parameters,
 * preference order, refusals and limits; Accept-Encoding; the PS3.18
 * §8.7.3.3 media type / transfer syntax tables.
 */
#include "../test_util.h"

#include "web/web_int.h"

#include <stdio.h>

static WebAccept acc;
static AgError err;

static void test_absent_and_empty(void **state)
{
    (void)state;
    assert_int_equal(web_accept_parse(NULL, &acc, &err), AG_OK);
    assert_int_equal(acc.n, 0);
    assert_int_equal(web_accept_parse("", &acc, &err), AG_OK);
    assert_int_equal(acc.n, 0);
    assert_int_equal(web_accept_parse(" , ,\t", &acc, &err), AG_OK);
    assert_int_equal(acc.n, 0);
}

static void test_dicom_parameters_quoted_or_not(void **state)
{
    (void)state;
    const char *forms[] = {
        "multipart/related; type=\"application/dicom\"; "
        "transfer-syntax=1.2.840.10008.1.2.4.90",
        "multipart/related;type=application/dicom;"
        "transfer-syntax=\"1.2.840.10008.1.2.4.90\"",
        "Multipart/Related ;\tTYPE = \"Application/DICOM\" ; "
        "Transfer-Syntax=1.2.840.10008.1.2.4.90",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        assert_int_equal(web_accept_parse(forms[i], &acc, &err), AG_OK);
        assert_int_equal(acc.n, 1);
        assert_string_equal(acc.range[0].type, "multipart/related");
        assert_string_equal(acc.range[0].part_type, "application/dicom");
        assert_string_equal(acc.range[0].ts, "1.2.840.10008.1.2.4.90");
        assert_int_equal(acc.range[0].q, 1000);
    }
    assert_int_equal(web_accept_parse("multipart/related; type=\"image/jls\";"
                                      " transfer-syntax=*", &acc, &err),
                     AG_OK);
    assert_string_equal(acc.range[0].part_type, "image/jls");
    assert_string_equal(acc.range[0].ts, "*");
    /* unknown parameters are ignored, boundary too */
    assert_int_equal(web_accept_parse("multipart/related; boundary=**; "
                                      "charset=utf-8; type=image/jp2",
                                      &acc, &err), AG_OK);
    assert_string_equal(acc.range[0].part_type, "image/jp2");
    assert_string_equal(acc.range[0].ts, "");
}

static void test_order_by_q_then_specificity_then_position(void **state)
{
    (void)state;
    const char *h = "*/*;q=0.1, application/dicom;q=0.5, "
                    "multipart/related; type=\"image/jls\"; q=0.9, "
                    "image/*;q=0.9, multipart/related;q=0.9, "
                    "application/octet-stream";
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_OK);
    assert_int_equal(acc.n, 6);
    assert_string_equal(acc.range[0].type, "application/octet-stream");
    /* three at 0.9: the one with a type= first, then the exact type, then
     * the wildcard */
    assert_string_equal(acc.range[1].type, "multipart/related");
    assert_string_equal(acc.range[1].part_type, "image/jls");
    assert_string_equal(acc.range[2].type, "multipart/related");
    assert_string_equal(acc.range[2].part_type, "");
    assert_string_equal(acc.range[3].type, "image/*");
    assert_string_equal(acc.range[4].type, "application/dicom");
    assert_int_equal(acc.range[4].q, 500);
    assert_string_equal(acc.range[5].type, "*/*");
    assert_int_equal(acc.range[5].q, 100);
    /* equal preference keeps the client's order */
    assert_int_equal(web_accept_parse("image/jp2, image/jls, image/jpeg",
                                      &acc, &err), AG_OK);
    assert_string_equal(acc.range[0].type, "image/jp2");
    assert_string_equal(acc.range[1].type, "image/jls");
    assert_string_equal(acc.range[2].type, "image/jpeg");
}

static void test_qvalues(void **state)
{
    (void)state;
    static const struct {
        const char *q;
        int want;   /* -1: refused */
    } T[] = {
        {"1", 1000}, {"1.", 1000}, {"1.0", 1000}, {"1.000", 1000},
        {"0.5", 500}, {"0.25", 250}, {"0.001", 1}, {"0.999", 999},
        {"\"0.5\"", 500}, {"1.001", -1}, {"2", -1}, {"0.1234", -1},
        {"-1", -1}, {".5", -1}, {"0,5", -1}, {"abc", -1}, {"1e0", -1},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        char h[64];
        snprintf(h, sizeof h, "image/jpeg;q=%s", T[i].q);
        int rc = web_accept_parse(h, &acc, &err);
        if (T[i].want < 0) {
            assert_int_equal(rc, AG_ERR_PARSE);
            assert_int_equal(acc.n, 0);
        } else {
            assert_int_equal(rc, AG_OK);
            assert_int_equal(acc.n, 1);
            assert_int_equal(acc.range[0].q, T[i].want);
        }
    }
    /* q=0 says "not this": dropped */
    assert_int_equal(web_accept_parse("image/jpeg;q=0, image/jls;q=0.000",
                                      &acc, &err), AG_OK);
    assert_int_equal(acc.n, 0);
    assert_int_equal(acc.excluded, 2);
    assert_int_equal(web_accept_parse("image/jpeg", &acc, &err), AG_OK);
    assert_int_equal(acc.excluded, 0);
}

static void test_quoted_strings(void **state)
{
    (void)state;
    /* a comma inside quotes does not end the range */
    assert_int_equal(web_accept_parse("a/b; x=\"1,2\", c/d", &acc, &err),
                     AG_OK);
    assert_int_equal(acc.n, 2);
    assert_string_equal(acc.range[1].type, "c/d");
    /* quoted-pair */
    assert_int_equal(web_accept_parse("multipart/related; type=\"image\\/jls"
                                      "\"", &acc, &err), AG_OK);
    assert_string_equal(acc.range[0].part_type, "image/jls");
    assert_int_equal(web_accept_parse("a/b; x=\"abc", &acc, &err),
                     AG_ERR_PARSE);
    assert_int_equal(web_accept_parse("a/b; x=\"a\\", &acc, &err),
                     AG_ERR_PARSE);
    assert_int_equal(web_accept_parse("a/b; x=\"a\x01\"", &acc, &err),
                     AG_ERR_PARSE);
}

static void test_malformed_is_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "text", "/json", "image/", "*/jpeg", "a/b/c", "a//b", "a/b; =x",
        "a/b; x", "a/b; x=", "a/b x", "a/b;type=a/b;type=c/d",
        "a/b;transfer-syntax=1;transfer-syntax=2", "a/b;q=1;q=0.5",
        "a/b;\x7f=1", "a b/c", "a/b\"", "a/b; x=y z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        acc.n = 7;
        assert_int_equal(web_accept_parse(bad[i], &acc, &err), AG_ERR_PARSE);
        assert_int_equal(acc.n, 0);
        assert_true(strncmp(err.msg, "accept: ", 8) == 0);
    }
}

static void test_limits(void **state)
{
    (void)state;
    char h[4096] = "";
    for (int i = 0; i < WEB_ACCEPT_MAX; i++) {
        strcat(h, i ? ", a/b" : "a/b");
    }
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_OK);
    assert_int_equal(acc.n, WEB_ACCEPT_MAX);
    strcat(h, ", a/b");
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_ERR_LIMIT);
    assert_int_equal(acc.n, 0);
    /* q=0 ranges do not count */
    strcpy(h, "a/b;q=0");
    for (int i = 0; i < 100; i++) {
        strcat(h, ", a/b;q=0");
    }
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_OK);
    /* a type/subtype or value that does not fit is refused, not cut */
    char longt[300];
    memset(longt, 'x', sizeof longt);
    longt[0] = 'a';
    longt[1] = '/';
    longt[sizeof longt - 1] = '\0';
    assert_int_equal(web_accept_parse(longt, &acc, &err), AG_ERR_LIMIT);
    snprintf(h, sizeof h, "a/b; transfer-syntax=1.%070d", 1);
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_ERR_LIMIT);
    snprintf(h, sizeof h, "a/b; type=\"%.200s\"", longt);
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_ERR_LIMIT);
}

/* Every prefix of a valid header parses or is refused, never more. */
static void test_truncation_at_every_offset(void **state)
{
    (void)state;
    const char *h = "multipart/related; type=\"application/octet-stream\"; "
                    "transfer-syntax=*;q=0.9, image/*;q=0.5, */*";
    char buf[256];
    for (size_t n = 0; n <= strlen(h); n++) {
        memcpy(buf, h, n);
        buf[n] = '\0';
        int rc = web_accept_parse(buf, &acc, &err);
        assert_true(rc == AG_OK || rc == AG_ERR_PARSE);
        assert_true(acc.n <= 3);
        if (rc != AG_OK) {
            assert_int_equal(acc.n, 0);
        }
    }
    assert_int_equal(web_accept_parse(h, &acc, &err), AG_OK);
    assert_int_equal(acc.n, 3);
}

static void test_media_match(void **state)
{
    (void)state;
    assert_true(web_media_match("*/*", "image/jls"));
    assert_true(web_media_match("*", "image/jls"));
    assert_true(web_media_match("image/*", "image/jls"));
    assert_true(web_media_match("image/jls", "image/jls"));
    assert_false(web_media_match("image/jp2", "image/jls"));
    assert_false(web_media_match("application/*", "image/jls"));
    assert_false(web_media_match("imag/*", "image/jls"));
}

static void test_accept_encoding(void **state)
{
    (void)state;
    assert_false(web_accept_gzip(NULL));
    assert_false(web_accept_gzip(""));
    assert_true(web_accept_gzip("gzip"));
    assert_true(web_accept_gzip("deflate, gzip;q=1.0, br"));
    assert_true(web_accept_gzip("GZIP"));
    assert_true(web_accept_gzip("x-gzip"));
    assert_true(web_accept_gzip("*"));
    assert_true(web_accept_gzip("br, *;q=0.1"));
    assert_false(web_accept_gzip("gzip;q=0"));
    assert_false(web_accept_gzip("*;q=0.5, gzip;q=0"));
    assert_false(web_accept_gzip("identity"));
    assert_false(web_accept_gzip("deflate, br"));
    assert_false(web_accept_gzip("gzip;q=2"));
    assert_false(web_accept_gzip("gzip junk"));
}

static void test_media_tables(void **state)
{
    (void)state;
    /* PS3.18 Table 8.7.3-5: the defaults */
    assert_string_equal(web_media_default_ts("image/jpeg"),
                        "1.2.840.10008.1.2.4.70");
    assert_string_equal(web_media_default_ts("image/jls"),
                        "1.2.840.10008.1.2.4.80");
    assert_string_equal(web_media_default_ts("image/jp2"),
                        "1.2.840.10008.1.2.4.90");
    assert_string_equal(web_media_default_ts("image/dicom-rle"),
                        "1.2.840.10008.1.2.5");
    assert_string_equal(web_media_default_ts("image/x-dicom-rle"),
                        "1.2.840.10008.1.2.5");
    assert_string_equal(web_media_default_ts("application/octet-stream"),
                        DICOM_TS_EXPLICIT_LE);
    assert_null(web_media_default_ts("image/png"));
    assert_string_equal(web_ts_media("1.2.840.10008.1.2.4.50"),
                        "image/jpeg");
    assert_string_equal(web_ts_media("1.2.840.10008.1.2.4.81"), "image/jls");
    assert_string_equal(web_ts_media(DICOM_TS_EXPLICIT_LE),
                        "application/octet-stream");
    assert_true(web_media_has_ts("image/jpeg", "1.2.840.10008.1.2.4.57"));
    assert_false(web_media_has_ts("image/jpeg", "1.2.840.10008.1.2.4.80"));
    assert_true(web_media_has_ts("application/octet-stream",
                                 DICOM_TS_EXPLICIT_LE));
    assert_false(web_media_has_ts("application/octet-stream",
                                  "1.2.840.10008.1.2.5"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_and_empty),
        cmocka_unit_test(test_dicom_parameters_quoted_or_not),
        cmocka_unit_test(test_order_by_q_then_specificity_then_position),
        cmocka_unit_test(test_qvalues),
        cmocka_unit_test(test_quoted_strings),
        cmocka_unit_test(test_malformed_is_refused),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_truncation_at_every_offset),
        cmocka_unit_test(test_media_match),
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_media_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
