/*
 * test_static.c — the pure helpers of the static file server (static.c):
 * media types by extension, content-hashed names (immutable caching), the
 * file-name alphabet that keeps traversal out, and If-None-Match matching
 * (RFC 9110 §13.1.2).  Serving itself is tested against the running
 * binary in tests/system/test_viewer.py.
 */
#include "../test_util.h"

#include "web/web_int.h"

#include <limits.h>

static void test_types(void **state)
{
    (void)state;
    bool z = false;
    assert_string_equal(web__static_type("app.bundle.1234.js", &z),
                        "text/javascript; charset=utf-8");
    assert_true(z);
    assert_string_equal(web__static_type("m.MJS", &z),
                        "text/javascript; charset=utf-8");
    assert_string_equal(web__static_type("a.css", NULL),
                        "text/css; charset=utf-8");
    assert_string_equal(web__static_type("index.html", NULL),
                        "text/html; charset=utf-8");
    assert_string_equal(web__static_type("manifest.json", NULL),
                        "application/json");
    assert_string_equal(web__static_type("x.js.map", NULL),
                        "application/json");
    assert_string_equal(web__static_type("c.wasm", &z), "application/wasm");
    assert_true(z);
    assert_string_equal(web__static_type("logo.svg", NULL), "image/svg+xml");
    assert_string_equal(web__static_type("i.png", &z), "image/png");
    assert_false(z);
    assert_string_equal(web__static_type("favicon.ico", NULL),
                        "image/vnd.microsoft.icon");
    assert_string_equal(web__static_type("f.woff2", &z), "font/woff2");
    assert_false(z);
    assert_string_equal(web__static_type("robots.txt", NULL),
                        "text/plain; charset=utf-8");
    /* Unknown or no extension: never sniffed into something runnable. */
    z = true;
    assert_string_equal(web__static_type("data.bin", &z),
                        "application/octet-stream");
    assert_false(z);
    assert_string_equal(web__static_type("README", NULL),
                        "application/octet-stream");
    assert_string_equal(web__static_type("x.js.", NULL),
                        "application/octet-stream");
    assert_string_equal(web__static_type(".", NULL),
                        "application/octet-stream");
}

static void test_hashed_names(void **state)
{
    (void)state;
    assert_true(web__static_hashed("app.bundle.0f6159c501addfe9.js"));
    assert_true(web__static_hashed("0ddf166f7a343eda.wasm"));
    assert_true(web__static_hashed("a34f9d1faa5f3315.woff2"));
    assert_true(web__static_hashed("1180.bundle.762993518ea30ae3.js"));
    assert_false(web__static_hashed("app.bundle.css"));
    assert_false(web__static_hashed("1602.css"));
    assert_false(web__static_hashed("index.html"));
    assert_false(web__static_hashed("app-config.js"));
    assert_false(web__static_hashed("dicomMicroscopyViewer.min.js"));
    /* The hash is a part before the extension, lowercase hex, >= 12. */
    assert_false(web__static_hashed("0f6159c501addfe9"));
    assert_false(web__static_hashed("x.0f6159c501a.js"));
    assert_false(web__static_hashed("x.0F6159C501ADDFE9.js"));
    assert_false(web__static_hashed("x.0f6159c501addfeg.js"));
    assert_false(web__static_hashed(""));
    assert_false(web__static_hashed("."));
    assert_false(web__static_hashed(".."));
}

static void test_segments(void **state)
{
    (void)state;
    assert_true(web__static_segment_ok("index.html"));
    assert_true(web__static_segment_ok("app.bundle.0f6159c501addfe9.js"));
    assert_true(web__static_segment_ok("ort-wasm_simd~1@2+3"));
    assert_false(web__static_segment_ok(""));
    assert_false(web__static_segment_ok("."));
    assert_false(web__static_segment_ok(".."));
    assert_false(web__static_segment_ok(".htaccess"));
    assert_false(web__static_segment_ok(".agora-install"));
    assert_false(web__static_segment_ok("a/b"));
    assert_false(web__static_segment_ok("a\\b"));
    assert_false(web__static_segment_ok("a b"));
    assert_false(web__static_segment_ok("a%2e"));
    assert_false(web__static_segment_ok("..;"));
    assert_false(web__static_segment_ok("a:b"));
    assert_false(web__static_segment_ok("caf\xc3\xa9.js"));
    assert_false(web__static_segment_ok("a\nb"));
    char name[NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    name[NAME_MAX] = '\0';
    assert_true(web__static_segment_ok(name));
    name[NAME_MAX] = 'a';
    name[NAME_MAX + 1] = '\0';
    assert_false(web__static_segment_ok(name));
}

static void test_etag_matching(void **state)
{
    (void)state;
    const char *tag = "\"1a-2b-3c\"";
    assert_false(web__etag_matches(NULL, tag));
    assert_false(web__etag_matches("", tag));
    assert_true(web__etag_matches("\"1a-2b-3c\"", tag));
    assert_true(web__etag_matches("*", tag));
    assert_true(web__etag_matches("  * ", tag));
    /* Weak comparison: W/ on either side is ignored. */
    assert_true(web__etag_matches("W/\"1a-2b-3c\"", tag));
    assert_true(web__etag_matches("\"1a-2b-3c\"", "W/\"1a-2b-3c\""));
    /* Lists, with optional whitespace. */
    assert_true(web__etag_matches("\"x\", \"1a-2b-3c\"", tag));
    assert_true(web__etag_matches("\"x\",W/\"1a-2b-3c\" ,\"y\"", tag));
    assert_true(web__etag_matches(" \"1a-2b-3c\"\t", tag));
    assert_false(web__etag_matches("\"x\", \"y\"", tag));
    /* Near misses. */
    assert_false(web__etag_matches("\"1a-2b-3c", tag));
    assert_false(web__etag_matches("1a-2b-3c", tag));
    assert_false(web__etag_matches("\"1a-2b-3c\"x", tag));
    assert_false(web__etag_matches("\"1a-2b-3c-gz\"", tag));
    assert_false(web__etag_matches("w/\"1a-2b-3c\"", tag));
    assert_false(web__etag_matches("**", tag));
    assert_false(web__etag_matches(",,,", tag));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_hashed_names),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_etag_matching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
