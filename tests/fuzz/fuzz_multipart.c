/*
 * fuzz_multipart.c — libFuzzer target for the streaming multipart/related
 * parser (RFC 2046 §5.1) behind STOW-RS (PS3.18 §10.5).
 *
 * Input: one byte choosing where to split the body, then the body, parsed
 * with the fixed boundary "b0undary" and small limits (so that the part and
 * header caps are reached).  The body is parsed three times: split in two
 * at the chosen position, whole, and one byte at a time.  All three must
 * give the same result code and the same parts (count, headers, a hash of
 * the bytes); callbacks must come in order begin, data*, end; no part may
 * deliver more bytes than the input holds.  The body (up to its first NUL)
 * is also parsed as a Content-Type header: what is accepted must be a
 * boundary web_multipart_create() accepts.  A violation is a
 * __builtin_trap().
 */
#include "fuzz.h"
#include "web/multipart.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct Count {
    size_t limit;       /* input size */
    size_t parts;
    size_t ended;
    size_t bytes;       /* all part bytes */
    size_t part_bytes;  /* bytes of the current part */
    bool in_part;
    uint64_t hash;      /* FNV-1a over headers, data and part boundaries */
} Count;

static void mix(Count *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        c->hash = (c->hash ^ b[i]) * 1099511628211u;
    }
}

static int on_begin(void *ctx, const WebPartHeaders *h, AgError *err)
{
    (void)err;
    Count *c = ctx;
    CHECK(!c->in_part);
    CHECK(memchr(h->content_type, '\0', sizeof h->content_type) != NULL);
    CHECK(memchr(h->content_location, '\0',
                 sizeof h->content_location) != NULL);
    CHECK(memchr(h->content_id, '\0', sizeof h->content_id) != NULL);
    CHECK(memchr(h->transfer_encoding, '\0',
                 sizeof h->transfer_encoding) != NULL);
    mix(c, "B", 1);
    mix(c, h->content_type, strlen(h->content_type) + 1);
    mix(c, h->content_location, strlen(h->content_location) + 1);
    mix(c, h->content_id, strlen(h->content_id) + 1);
    mix(c, h->transfer_encoding, strlen(h->transfer_encoding) + 1);
    c->in_part = true;
    c->parts++;
    c->part_bytes = 0;
    return AG_OK;
}

static int on_data(void *ctx, const uint8_t *p, size_t len, AgError *err)
{
    (void)err;
    Count *c = ctx;
    CHECK(c->in_part);
    CHECK(len > 0);
    c->part_bytes += len;
    c->bytes += len;
    CHECK(c->part_bytes <= c->limit);
    CHECK(c->bytes <= c->limit);
    mix(c, p, len);
    return AG_OK;
}

static int on_end(void *ctx, AgError *err)
{
    (void)err;
    Count *c = ctx;
    CHECK(c->in_part);
    c->in_part = false;
    c->ended++;
    mix(c, "E", 1);
    return AG_OK;
}

static const WebMultipartCallbacks CB = {on_begin, on_data, on_end};

/* step 0: split at `split`; step 1: one byte at a time; else whole. */
static int parse(const uint8_t *body, size_t len, int mode, size_t split,
                 Count *c)
{
    static const WebMultipartLimits lim = {.max_parts = 64,
                                           .max_header_bytes = 512};
    memset(c, 0, sizeof *c);
    c->limit = len;
    c->hash = 1469598103934665603u;
    AgError err;
    WebMultipart *m = NULL;
    int rc = web_multipart_create("b0undary", &lim, &CB, c, &m, &err);
    CHECK(rc == AG_OK || rc == AG_ERR_NOMEM);
    if (rc != AG_OK) {
        return rc;
    }
    if (mode == 0) {
        rc = web_multipart_feed(m, body, split, &err);
        if (rc == AG_OK) {
            rc = web_multipart_feed(m, body + split, len - split, &err);
        }
    } else if (mode == 1) {
        for (size_t i = 0; i < len && rc == AG_OK; i++) {
            rc = web_multipart_feed(m, body + i, 1, &err);
        }
    } else {
        rc = web_multipart_feed(m, body, len, &err);
    }
    if (rc == AG_OK) {
        rc = web_multipart_finish(m, &err);
    }
    CHECK(rc == AG_OK || rc == AG_ERR_PARSE || rc == AG_ERR_LIMIT ||
          rc == AG_ERR_NOMEM);
    if (rc == AG_OK) {
        CHECK(!c->in_part && c->parts >= 1 && c->ended == c->parts);
    }
    /* After an error the parser stays failed. */
    if (rc != AG_OK) {
        CHECK(web_multipart_feed(m, (const uint8_t *)"x", 1, &err) == rc);
        CHECK(web_multipart_finish(m, &err) == rc);
    }
    CHECK(c->parts <= 64);
    web_multipart_free(m);
    return rc;
}

static void fuzz_content_type(const uint8_t *p, size_t len)
{
    char header[1024];
    size_t n = len < sizeof header - 1 ? len : sizeof header - 1;
    memcpy(header, p, n);
    header[n] = '\0';
    for (int any = 0; any <= 1; any++) {
        char boundary[71];
        char type[128];
        AgError err;
        int rc = web_multipart_parse_content_type(header, any != 0, boundary,
                                                  type, &err);
        CHECK(rc == AG_OK || rc == AG_ERR_INVALID);
        if (rc != AG_OK) {
            CHECK(boundary[0] == '\0' && type[0] == '\0');
            continue;
        }
        size_t blen = strnlen(boundary, sizeof boundary);
        CHECK(blen >= 1 && blen <= 70);
        CHECK(strnlen(type, sizeof type) < sizeof type);
        WebMultipart *m = NULL;
        CHECK(web_multipart_create(boundary, NULL, &CB, NULL, &m, &err) ==
              AG_OK);
        web_multipart_free(m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    fuzz_content_type(data + 1, size - 1);
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    size_t split = (size_t)data[0] * len / 255;
    Count a;
    Count b;
    int rc = parse(body, len, 0, split, &a);
    CHECK(parse(body, len, 2, 0, &b) == rc);
    CHECK(a.parts == b.parts && a.ended == b.ended && a.bytes == b.bytes &&
          a.hash == b.hash);
    if (len <= 4096) {   /* byte-wise feeding costs a call per byte */
        CHECK(parse(body, len, 1, 0, &b) == rc);
        CHECK(a.parts == b.parts && a.ended == b.ended &&
              a.bytes == b.bytes && a.hash == b.hash);
    }
    return 0;
}
