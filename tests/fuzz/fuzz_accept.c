/*
 * fuzz_accept.c — libFuzzer target for the Accept / Accept-Encoding
 * parsers of DICOMweb content negotiation (accept.c; RFC 9110 §12.5,
 * PS3.18 §8.7.3.5).
 *
 * Input: the header value (up to its first NUL).  Checked invariants: the
 * result code is one the contract names; after an error no range is left;
 * every range is NUL-terminated, "type/subtype" lowercase with one '/',
 * q in 1..1000 and the list in non-increasing q; parsing is deterministic;
 * and writing the ranges back as a header (values quoted) parses to the
 * same list.  The Accept-Encoding parser and web_media_match run on the
 * same bytes.  A violation is a __builtin_trap().
 */
#include "fuzz.h"
#include "web/web_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void check_field(const char *s, size_t cap, bool lower)
{
    size_t n = strnlen(s, cap);
    CHECK(n < cap);
    for (size_t i = 0; lower && i < n; i++) {
        CHECK(!isupper((unsigned char)s[i]));
    }
}

static void put_quoted(char *out, size_t cap, size_t *at, const char *v)
{
    *at += (size_t)snprintf(out + *at, cap - *at, "\"");
    for (; *v != '\0' && *at + 3 < cap; v++) {
        if (*v == '"' || *v == '\\') {
            out[(*at)++] = '\\';
        }
        out[(*at)++] = *v;
    }
    out[*at] = '\0';
    *at += (size_t)snprintf(out + *at, cap - *at, "\"");
}

/* The ranges written back as an Accept value. */
static void unparse(const WebAccept *a, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < a->n && at + 600 < cap; i++) {
        const WebMediaRange *r = &a->range[i];
        at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? ", " : "",
                               r->type);
        if (r->part_type[0] != '\0') {
            at += (size_t)snprintf(out + at, cap - at, "; type=");
            put_quoted(out, cap, &at, r->part_type);
        }
        if (r->ts[0] != '\0') {
            at += (size_t)snprintf(out + at, cap - at, "; transfer-syntax=");
            put_quoted(out, cap, &at, r->ts);
        }
        at += (size_t)snprintf(out + at, cap - at, "; q=%u.%03u",
                               r->q / 1000u, r->q % 1000u);
    }
}

static bool same(const WebAccept *a, const WebAccept *b)
{
    if (a->n != b->n) {
        return false;
    }
    for (int i = 0; i < a->n; i++) {
        const WebMediaRange *x = &a->range[i], *y = &b->range[i];
        if (strcmp(x->type, y->type) != 0 ||
            strcmp(x->part_type, y->part_type) != 0 ||
            strcmp(x->ts, y->ts) != 0 || x->q != y->q) {
            return false;
        }
    }
    return true;
}

static WebAccept a, b;
static char header[8192];
static char again[WEB_ACCEPT_MAX * 700];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = size < sizeof header - 1 ? size : sizeof header - 1;
    memcpy(header, data, n);
    header[n] = '\0';
    AgError err;
    int rc = web_accept_parse(header, &a, &err);
    CHECK(rc == AG_OK || rc == AG_ERR_PARSE || rc == AG_ERR_LIMIT);
    CHECK(a.n >= 0 && a.n <= WEB_ACCEPT_MAX);
    if (rc != AG_OK) {
        CHECK(a.n == 0);
    }
    for (int i = 0; i < a.n; i++) {
        const WebMediaRange *r = &a.range[i];
        check_field(r->type, sizeof r->type, true);
        check_field(r->part_type, sizeof r->part_type, true);
        check_field(r->ts, sizeof r->ts, false);
        const char *slash = strchr(r->type, '/');
        CHECK(slash != NULL && slash != r->type && slash[1] != '\0' &&
              strchr(slash + 1, '/') == NULL);
        CHECK(r->q >= 1 && r->q <= 1000);
        CHECK(i == 0 || a.range[i - 1].q >= r->q);
        CHECK(web_media_match("*/*", r->type));
        CHECK(web_media_match(r->type, r->type));
    }
    CHECK(web_accept_parse(header, &b, &err) == rc && same(&a, &b));
    if (rc == AG_OK) {
        unparse(&a, again, sizeof again);
        CHECK(web_accept_parse(again, &b, &err) == AG_OK);
        CHECK(same(&a, &b));
    }
    bool g = web_accept_gzip(header);
    CHECK(web_accept_gzip(header) == g);
    return 0;
}
