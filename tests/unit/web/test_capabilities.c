/*
 * test_capabilities.c — the capabilities document (capabilities.c, PS3.18
 * §8.9 and Annex H): content negotiation, the JSON and WADL forms agreeing,
 * one resource and its children for a path below the base, XML escaping,
 * QIDO matching keys that the QIDO parser really takes, and allocation
 * failure at every step.  The served document, parsed as XML and checked
 * against the routes, is tested in tests/system/test_capabilities.py.
 */
#include "../test_util.h"

#include "web/web_int.h"

#include <jansson.h>
#include <stdio.h>

static AgError err;

static void test_negotiation(void **state)
{
    (void)state;
    WebCapsFormat f = WEB_CAPS_JSON;
    static const struct {
        const char *accept;
        WebCapsFormat want;
    } OK[] = {
        {NULL, WEB_CAPS_WADL},
        {"", WEB_CAPS_WADL},
        {"*/*", WEB_CAPS_WADL},
        {"application/*", WEB_CAPS_WADL},
        {"application/vnd.sun.wadl+xml", WEB_CAPS_WADL},
        {"Application/Vnd.Sun.Wadl+XML", WEB_CAPS_WADL},
        {"application/json", WEB_CAPS_JSON},
        {"image/png, application/json;q=0.9, */*;q=0.1", WEB_CAPS_JSON},
        {"application/vnd.sun.wadl+xml;q=0.2, application/json",
         WEB_CAPS_JSON},
        {"application/json;q=0.2, application/vnd.sun.wadl+xml",
         WEB_CAPS_WADL},
        {"text/html,application/xhtml+xml,*/*;q=0.8", WEB_CAPS_WADL},
    };
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        f = OK[i].want == WEB_CAPS_WADL ? WEB_CAPS_JSON : WEB_CAPS_WADL;
        assert_int_equal(web__caps_negotiate(OK[i].accept, &f, &err), AG_OK);
        assert_int_equal(f, OK[i].want);
    }
    assert_string_equal(web__caps_media(WEB_CAPS_WADL),
                        "application/vnd.sun.wadl+xml");
    assert_string_equal(web__caps_media(WEB_CAPS_JSON), "application/json");
    static const char *const NONE[] = {
        "image/png", "application/xml", "text/*", "application/dicom+json",
        "application/json;q=0", "application/vnd.sun.wadl+xml;q=0",
    };
    for (size_t i = 0; i < sizeof NONE / sizeof NONE[0]; i++) {
        assert_int_equal(web__caps_negotiate(NONE[i], &f, &err),
                         AG_ERR_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "application/json"));
    }
    assert_int_equal(web__caps_negotiate("application/json;q=2", &f, &err),
                     AG_ERR_PARSE);
    assert_int_equal(web__caps_negotiate("a b/c", &f, &err), AG_ERR_PARSE);
}

static int build(WebCapsFormat f, const char *origin, char **seg, int nseg,
                 AgBuf *out)
{
    ag_buf_init(out, (size_t)1 << 20);
    return web__caps_build(f, origin, seg, nseg, out, &err);
}

static json_t *build_json(const char *origin, char **seg, int nseg)
{
    AgBuf b;
    assert_int_equal(build(WEB_CAPS_JSON, origin, seg, nseg, &b), AG_OK);
    json_error_t je;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &je);
    ag_buf_deinit(&b);
    assert_non_null(j);
    return j;
}

static size_t count(const AgBuf *b, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (size_t i = 0; i + k <= b->len; i++) {
        n += memcmp(b->data + i, needle, k) == 0;
    }
    return n;
}

/* Elements named `name` anywhere below o (arrays of objects included). */
static size_t count_json(json_t *o, const char *name)
{
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (json_is_array(v)) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item) {
                n += strcmp(k, name) == 0;
                n += json_is_object(item) ? count_json(item, name) : 0;
            }
        } else if (json_is_object(v)) {
            n += strcmp(k, name) == 0;
            n += count_json(v, name);
        }
    }
    return n;
}

static void test_json_and_wadl_agree(void **state)
{
    (void)state;
    json_t *j = build_json("http://pacs.example:8080", NULL, 0);
    AgBuf w;
    assert_int_equal(build(WEB_CAPS_WADL, "http://pacs.example:8080", NULL,
                           0, &w), AG_OK);
    assert_true(w.len > 1000);
    static const char HEAD[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                               "<application xmlns=\"http://wadl.dev.java.net"
                               "/2009/02\"";
    assert_int_equal(memcmp(w.data, HEAD, sizeof HEAD - 1), 0);
    static const char *const ELEMENTS[] = {"resources", "resource", "method",
                                           "request", "response", "param",
                                           "option", "representation"};
    for (size_t i = 0; i < sizeof ELEMENTS / sizeof ELEMENTS[0]; i++) {
        char open[32];
        snprintf(open, sizeof open, "<%s ", ELEMENTS[i]);
        size_t n = count(&w, open);
        snprintf(open, sizeof open, "<%s>", ELEMENTS[i]);
        n += count(&w, open);
        assert_true(n > 0);
        assert_int_equal(n, count_json(j, ELEMENTS[i]));
    }
    /* Two services: DICOMweb at /dicom-web/, WADO-URI at the root. */
    json_t *rs = json_object_get(j, "resources");
    assert_int_equal(json_array_size(rs), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(rs, 0), "base")),
                        "http://pacs.example:8080/dicom-web/");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(rs, 1), "base")),
                        "http://pacs.example:8080/");
    assert_non_null(strstr((const char *)w.data, "<resources base=\"http://"
                           "pacs.example:8080/dicom-web/\">"));
    assert_non_null(strstr((const char *)w.data, "id=\"URIRetrieveInstance\""));
    /* Relative bases without an origin. */
    json_t *rel = build_json("", NULL, 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(rel, "resources"), 0), "base")),
                        "/dicom-web/");
    json_decref(rel);
    ag_buf_deinit(&w);
    json_decref(j);
}

static void test_escaping(void **state)
{
    (void)state;
    AgBuf w;
    assert_int_equal(build(WEB_CAPS_WADL, "http://a\"<b>&c\x01", NULL, 0, &w),
                     AG_OK);
    const char *s = (const char *)w.data;
    assert_non_null(strstr(s, "base=\"http://a&quot;&lt;b&gt;&amp;c"
                              "&#xFFFD;/dicom-web/\""));
    assert_null(memchr(w.data, '\x01', w.len));
    /* Media types with quotes are attribute values too. */
    assert_non_null(strstr(s, "mediaType=\"multipart/related; "
                              "type=&quot;application/dicom&quot;\""));
    /* Nothing unescaped: every '&' starts an entity. */
    for (size_t i = 0; i < w.len; i++) {
        if (w.data[i] == '&') {
            assert_true(memcmp(w.data + i, "&amp;", 5) == 0 ||
                        memcmp(w.data + i, "&lt;", 4) == 0 ||
                        memcmp(w.data + i, "&gt;", 4) == 0 ||
                        memcmp(w.data + i, "&quot;", 6) == 0 ||
                        memcmp(w.data + i, "&#xFFFD;", 8) == 0);
        }
    }
    ag_buf_deinit(&w);
}

/* The full template paths of every resource under o, prefix + path. */
static void paths(json_t *o, const char *prefix, char out[][200], int *n)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(o, "resource"), i, r) {
        char full[200];
        snprintf(full, sizeof full, "%s%s%s", prefix, prefix[0] ? "/" : "",
                 json_string_value(json_object_get(r, "path")));
        snprintf(out[(*n)++], 200, "%s", full);
        paths(r, full, out, n);
    }
}

/* A request path of that shape: templates filled in. */
static int instantiate(const char *tmpl, char *buf, size_t cap, char **seg)
{
    size_t len = strlen(tmpl) < cap ? strlen(tmpl) : cap - 1;
    memcpy(buf, tmpl, len);
    buf[len] = '\0';
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, "/", &save); t != NULL;
         t = strtok_r(NULL, "/", &save)) {
        seg[n++] = strcmp(t, "{attributePath}") == 0 ? "7fe00010"
                   : t[0] == '{' ? "1.2.3" : t;
    }
    return n;
}

static void test_every_resource_alone(void **state)
{
    (void)state;
    json_t *j = build_json("", NULL, 0);
    static char all[64][200];
    int n = 0;
    paths(json_array_get(json_object_get(j, "resources"), 0), "", all, &n);
    assert_true(n >= 20);
    for (int i = 0; i < n; i++) {
        char buf[200];
        char *seg[16];
        int nseg = instantiate(all[i], buf, sizeof buf, seg);
        json_t *one = build_json("", seg, nseg);
        json_t *rs = json_object_get(one, "resources");
        assert_int_equal(json_array_size(rs), 1);   /* no WADO-URI */
        json_t *top = json_object_get(json_array_get(rs, 0), "resource");
        assert_int_equal(json_array_size(top), 1);
        /* the resource asked for, its path relative to the base */
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(top, 0), "path")), all[i]);
        /* with its children: every later path under it */
        char sub[64][200];
        int nsub = 0;
        paths(json_array_get(rs, 0), "", sub, &nsub);
        int want = 0;
        for (int k = 0; k < n; k++) {
            size_t len = strlen(all[i]);
            want += k == i || (strncmp(all[k], all[i], len) == 0 &&
                               all[k][len] == '/');
        }
        assert_int_equal(nsub, want);
        json_decref(one);
    }
    /* The nesting: series search under a study, its {series} under it. */
    char *seg[] = {"studies", "1.2.3", "series"};
    json_t *one = build_json("", seg, 3);
    json_t *r = json_array_get(json_object_get(json_array_get(
        json_object_get(one, "resources"), 0), "resource"), 0);
    json_t *child = json_array_get(json_object_get(r, "resource"), 0);
    assert_string_equal(json_string_value(json_object_get(child, "path")),
                        "{series}");
    json_t *tp = json_array_get(json_object_get(child, "param"), 0);
    assert_string_equal(json_string_value(json_object_get(tp, "style")),
                        "template");
    assert_true(json_is_true(json_object_get(tp, "required")));
    json_decref(one);
    json_decref(j);
}

static void test_unknown_paths(void **state)
{
    (void)state;
    static const char *const BAD[][8] = {
        {"nope"}, {"studies", "1.2", "nope"}, {"studies", "1.2", "frames"},
        {"studies", "1.2", "series", "1.3", "instances", "1.4", "frames"},
        {"studies", "1.2", "series", "1.3", "instances", "1.4", "bulkdata"},
        {"studies", "1.2", "bulkdata", "7fe00010"},
        {"capabilities"},   /* the server maps this one to the base */
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char *seg[8];
        int n = 0;
        while (n < 8 && BAD[i][n] != NULL) {
            seg[n] = (char *)BAD[i][n];
            n++;
        }
        AgBuf b;
        ag_buf_init(&b, 0);
        ag_buf_append_str(&b, "kept");
        assert_int_equal(web__caps_build(WEB_CAPS_WADL, "", seg, n, &b,
                                         &err), AG_ERR_NOTFOUND);
        assert_int_equal(b.len, 4);
        ag_buf_deinit(&b);
    }
    /* Bulk data takes the rest of the path. */
    char *deep[] = {"studies", "1", "series", "2", "instances", "3",
                    "bulkdata", "00540016", "0", "00181072"};
    json_t *j = build_json("", deep, 10);
    json_decref(j);
}

/* Every QIDO-RS query parameter the document lists is one the QIDO
 * parser takes, and every matching key is a dictionary keyword. */
static void check_search_params(json_t *m, int *checked)
{
    const char *id = json_string_value(json_object_get(m, "id"));
    if (id == NULL || strncmp(id, "SearchFor", 9) != 0) {
        return;
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(m, "request"),
                                       "param"), i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        if (strcmp(json_string_value(json_object_get(p, "style")),
                   "query") != 0) {
            continue;
        }
        AgArena *a = ag_arena_create(1 << 20);
        DicomDataset *keys = dicom_dataset_create(a);
        StoreQuery q = {0};
        char bad[160] = "";
        const char *value = strcmp(name, "includefield") == 0 ? "all"
                            : strcmp(name, "fuzzymatching") == 0 ? "true"
                            : strcmp(name, "limit") == 0 ||
                              strcmp(name, "offset") == 0 ? "5" : "X*";
        if (name[0] >= 'A' && name[0] <= 'Z') {
            assert_non_null(dicom_dict_find_keyword(name));
        }
        assert_int_equal(web__qido_param(keys, &q, name, value, bad,
                                         sizeof bad), AG_OK);
        ag_arena_destroy(a);
        (*checked)++;
    }
}

static void walk_methods(json_t *o, int *checked)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "method"), i, v) {
        check_search_params(v, checked);
    }
    json_array_foreach(json_object_get(o, "resource"), i, v) {
        walk_methods(v, checked);
    }
}

static void test_search_params_are_real(void **state)
{
    (void)state;
    json_t *j = build_json("", NULL, 0);
    int checked = 0;
    walk_methods(json_array_get(json_object_get(j, "resources"), 0),
                 &checked);
    assert_true(checked > 100);
    json_decref(j);
}

/* Fail allocation N (jansson's too) for N = 1, 2, ... until the document
 * is built: each failure is AG_ERR_NOMEM and leaves the buffer as it was. */
static void test_every_allocation_failure(void **state)
{
    (void)state;
    json_malloc_t old_m;
    json_free_t old_f;
    json_get_alloc_funcs(&old_m, &old_f);
    json_set_alloc_funcs(ag_malloc, ag_free);
    char *seg[] = {"studies", "1", "series", "2", "instances", "3"};
    for (int f = 0; f < 2; f++) {
        WebCapsFormat fmt = f == 0 ? WEB_CAPS_WADL : WEB_CAPS_JSON;
        for (long n = 1;; n++) {
            AgBuf b;
            ag_buf_init(&b, 0);
            ag_test_fail_nth_alloc(n);
            int rc = web__caps_build(fmt, "http://h", seg, 6, &b, &err);
            ag_test_fail_nth_alloc(0);
            if (rc == AG_OK) {
                assert_true(b.len > 1000);
                ag_buf_deinit(&b);
                assert_true(n > 50);
                break;
            }
            assert_int_equal(rc, AG_ERR_NOMEM);
            assert_int_equal(b.len, 0);
            ag_buf_deinit(&b);
        }
    }
    json_set_alloc_funcs(old_m, old_f);
}

static void test_document_cap(void **state)
{
    (void)state;
    AgBuf b;
    ag_buf_init(&b, 4096);   /* far too small */
    assert_int_equal(web__caps_build(WEB_CAPS_WADL, "", NULL, 0, &b, &err),
                     AG_ERR_LIMIT);
    assert_int_equal(b.len, 0);
    ag_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiation),
        cmocka_unit_test(test_json_and_wadl_agree),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_every_resource_alone),
        cmocka_unit_test(test_unknown_paths),
        cmocka_unit_test(test_search_params_are_real),
        cmocka_unit_test(test_every_allocation_failure),
        cmocka_unit_test(test_document_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
