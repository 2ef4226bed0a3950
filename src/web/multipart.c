/*
 * multipart.c — streaming multipart/related parser (RFC 2046 §5.1,
 * RFC 2387) for STOW-RS request bodies (PS3.18 §10.5).
 *
 * Written by hand: no maintained C library in Debian 12 parses multipart
 * bodies as a stream with bounded memory (GMime and libsoup want the whole
 * message, libmicrohttpd's post processor handles form-data only), and the
 * grammar is small.
 *
 * The delimiter "\r\n--" boundary is matched byte by byte with a counter k
 * of how many of its bytes have been seen.  The held-back bytes are always
 * delim[0..k), so they are never copied: on a mismatch they are delivered
 * from the delimiter itself.  Because '\r' occurs in the delimiter only at
 * position 0 (bchars exclude CR and LF), a mismatch can only restart the
 * match at the mismatching byte, so no KMP table is needed.
 *
 * The very first delimiter may open the body without its CRLF, and a part
 * body may end at once with "--boundary" right after the blank line that
 * closes its headers (that CRLF doubles as the delimiter's, as in RFC 2046's
 * grammar `body-part := MIME-part-headers [CRLF *OCTET]` and as Go's
 * mime/multipart reads it).  Both start the match at k = 2 with two
 * "virtual" bytes that were never received and are never delivered.
 *
 * Memory: the struct (delimiter, header fields) plus one AgBuf for the
 * current part's header block, capped at max_header_bytes.
 */
#include "multipart.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_MAX_PARTS 10000u
#define DEFAULT_MAX_HEADER_BYTES (16u * 1024u)
#define DELIM_MAX (4 + WEB_MULTIPART_BOUNDARY_MAX)

typedef enum State {
    ST_PREAMBLE,        /* before the first delimiter, ignored */
    ST_AFTER_BOUNDARY,  /* "--boundary" seen: "--", padding or CR next */
    ST_PADDING,         /* transport padding after the boundary */
    ST_BOUNDARY_CR,     /* CR after the boundary: LF next */
    ST_CLOSE_DASH,      /* one '-' after the boundary: '-' next */
    ST_HEADERS,         /* inside a part's header block */
    ST_BODY,            /* inside a part's body */
    ST_EPILOGUE,        /* after the close delimiter, ignored */
} State;

struct WebMultipart {
    WebMultipartCallbacks cb;
    void *ctx;
    uint32_t max_parts;
    uint32_t max_header_bytes;
    char boundary[WEB_MULTIPART_BOUNDARY_MAX + 1];
    uint8_t delim[DELIM_MAX];   /* "\r\n--" boundary */
    size_t dlen;
    size_t k;                   /* delimiter bytes matched and held back */
    size_t virt;                /* of those, leading ones never received */
    State state;
    uint32_t nparts;            /* parts begun */
    bool part_open;             /* part_begin called, part_end not yet */
    bool finished;              /* finish succeeded */
    int failed;                 /* sticky error code, AG_OK if none */
    uint64_t offset;            /* body bytes consumed before this feed */
    AgBuf hdr;                  /* current header block */
    uint32_t line_bytes;        /* bytes in the current header line */
    bool line_cr;               /* the current header line began with CR */
    WebPartHeaders h;
};

/* ---- character classes -------------------------------------------------- */

/* RFC 2046 §5.1.1 bcharsnospace. */
static bool is_bchar_nospace(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("'()+_,-./:=?", c) != NULL);
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_wsp(int c)
{
    return c == ' ' || c == '\t';
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen) {
        return false;
    }
    for (size_t i = 0; i < alen; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return false;
        }
    }
    return true;
}

/* A byte for an error message: 'x' if printable, else 0xNN. */
static const char *show_byte(uint8_t c, char out[8])
{
    if (c >= 0x21 && c < 0x7f && c != '\'') {
        snprintf(out, 8, "'%c'", c);
    } else {
        snprintf(out, 8, "0x%02x", c);
    }
    return out;
}

static int check_boundary(const char *b, size_t n, AgError *err)
{
    if (n == 0 || n > WEB_MULTIPART_BOUNDARY_MAX) {
        return ag_error_set(err, AG_ERR_INVALID, "multipart boundary: "
                            "length %zu is not 1..70 (RFC 2046 §5.1.1)", n);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!is_bchar_nospace(c) && !(c == ' ' && i + 1 < n)) {
            char s[8];
            return ag_error_set(err, AG_ERR_INVALID, "multipart boundary: "
                                "character %s at %zu is not allowed "
                                "(RFC 2046 §5.1.1 bchars)", show_byte(c, s),
                                i);
        }
    }
    return AG_OK;
}

/* ---- Content-Type ------------------------------------------------------- */

static const char *skip_ows(const char *p)
{
    while (is_wsp((unsigned char)*p)) {
        p++;
    }
    return p;
}

/*
 * Read a parameter value (token or quoted-string) at *pp into out[cap],
 * unescaping quoted pairs.  The value must be followed by OWS and ';' or
 * the end.
 */
static int read_param_value(const char **pp, const char *name, size_t nlen,
                            char *out, size_t cap, AgError *err)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '"') {
        p++;
        for (;;) {
            unsigned char c = (unsigned char)*p;
            if (c == '\0') {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "parameter %.*s: unterminated quoted "
                                    "string", (int)nlen, name);
            }
            if (c == '"') {
                p++;
                break;
            }
            if (c == '\\' && p[1] != '\0') {
                p++;
                c = (unsigned char)*p;
            }
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "parameter %.*s: control character 0x%02x",
                                    (int)nlen, name, c);
            }
            if (n + 1 >= cap) {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "parameter %.*s: value longer than %zu",
                                    (int)nlen, name, cap - 1);
            }
            out[n++] = (char)c;
            p++;
        }
    } else {
        /* Tolerant token: anything up to ';' or whitespace, so that a
         * boundary with bchars like '/' or '=' sent unquoted still works;
         * the boundary is checked against bchars afterwards. */
        while (*p != '\0' && *p != ';' && !is_wsp((unsigned char)*p)) {
            unsigned char c = (unsigned char)*p;
            if (c < 0x20 || c == 0x7f || c == '"') {
                char s[8];
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "parameter %.*s: character %s not "
                                    "allowed in an unquoted value", (int)nlen,
                                    name, show_byte(c, s));
            }
            if (n + 1 >= cap) {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "parameter %.*s: value longer than %zu",
                                    (int)nlen, name, cap - 1);
            }
            out[n++] = (char)c;
            p++;
        }
    }
    out[n] = '\0';
    p = skip_ows(p);
    if (*p != '\0' && *p != ';') {
        char s[8];
        return ag_error_set(err, AG_ERR_INVALID, "content-type: parameter "
                            "%.*s: unexpected %s after the value", (int)nlen,
                            name, show_byte((uint8_t)*p, s));
    }
    *pp = p;
    return AG_OK;
}

static int parse_content_type(const char *header, bool allow_any_multipart,
                              char boundary[71], char type_param[128],
                              AgError *err)
{
    const char *p = skip_ows(header);
    const char *type = p;
    while (is_tchar((unsigned char)*p)) {
        p++;
    }
    size_t tlen = (size_t)(p - type);
    if (*p != '/') {
        return ag_error_set(err, AG_ERR_INVALID, "content-type: \"%.*s\" is "
                            "not a media type (type/subtype)",
                            (int)(tlen > 64 ? 64 : tlen), type);
    }
    p++;
    const char *sub = p;
    while (is_tchar((unsigned char)*p)) {
        p++;
    }
    size_t slen = (size_t)(p - sub);
    if (slen == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "content-type: media type "
                            "has no subtype");
    }
    if (!ieq(type, tlen, "multipart") ||
        (!allow_any_multipart && !ieq(sub, slen, "related"))) {
        return ag_error_set(err, AG_ERR_INVALID, "content-type: %.*s/%.*s is "
                            "not %s", (int)(tlen > 64 ? 64 : tlen), type,
                            (int)(slen > 64 ? 64 : slen), sub,
                            allow_any_multipart ? "multipart/*"
                                                : "multipart/related");
    }
    p = skip_ows(p);
    bool have_boundary = false;
    bool have_type = false;
    while (*p != '\0') {
        if (*p != ';') {
            char s[8];
            return ag_error_set(err, AG_ERR_INVALID, "content-type: expected "
                                "';' before parameters, got %s",
                                show_byte((uint8_t)*p, s));
        }
        p = skip_ows(p + 1);
        if (*p == '\0') {
            break;              /* a trailing ';' is harmless */
        }
        if (*p == ';') {
            continue;
        }
        const char *name = p;
        while (is_tchar((unsigned char)*p)) {
            p++;
        }
        size_t nlen = (size_t)(p - name);
        p = skip_ows(p);
        if (nlen == 0 || *p != '=') {
            return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                "expected name=value at offset %zu",
                                (size_t)(name - header));
        }
        p = skip_ows(p + 1);
        char scratch[1024];
        int rc;
        if (ieq(name, nlen, "boundary")) {
            if (have_boundary) {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: "
                                    "boundary parameter given twice");
            }
            rc = read_param_value(&p, name, nlen, scratch, sizeof scratch,
                                  err);
            if (rc != AG_OK) {
                return rc;
            }
            size_t blen = strlen(scratch);
            rc = check_boundary(scratch, blen, err);
            if (rc != AG_OK) {
                return rc;
            }
            memcpy(boundary, scratch, blen + 1);
            have_boundary = true;
        } else if (ieq(name, nlen, "type")) {
            if (have_type) {
                return ag_error_set(err, AG_ERR_INVALID, "content-type: type "
                                    "parameter given twice");
            }
            rc = read_param_value(&p, name, nlen, type_param, 128, err);
            if (rc != AG_OK) {
                return rc;
            }
            for (char *q = type_param; *q != '\0'; q++) {
                *q = (char)lower((unsigned char)*q);
            }
            have_type = true;
        } else {
            rc = read_param_value(&p, name, nlen, scratch, sizeof scratch,
                                  err);
            if (rc != AG_OK) {
                return rc;
            }
        }
    }
    if (!have_boundary) {
        return ag_error_set(err, AG_ERR_INVALID, "content-type: no boundary "
                            "parameter (RFC 2046 §5.1.1)");
    }
    return AG_OK;
}

int web_multipart_parse_content_type(const char *header, bool allow_any_multipart,
                                     char boundary[71], char type_param[128],
                                     AgError *err)
{
    if (header == NULL || boundary == NULL || type_param == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "content-type: missing");
    }
    boundary[0] = '\0';
    type_param[0] = '\0';
    int rc = parse_content_type(header, allow_any_multipart, boundary,
                                type_param, err);
    if (rc != AG_OK) {      /* no half-filled outputs */
        boundary[0] = '\0';
        type_param[0] = '\0';
    }
    return rc;
}

/* ---- parser ------------------------------------------------------------- */

int web_multipart_create(const char *boundary, const WebMultipartLimits *lim,
                         const WebMultipartCallbacks *cb, void *ctx,
                         WebMultipart **out, AgError *err)
{
    if (out == NULL || cb == NULL || boundary == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "multipart: boundary, "
                            "callbacks and out are required");
    }
    *out = NULL;
    size_t blen = strnlen(boundary, WEB_MULTIPART_BOUNDARY_MAX + 1);
    int rc = check_boundary(boundary, blen, err);
    if (rc != AG_OK) {
        return rc;
    }
    WebMultipart *m = ag_calloc(1, sizeof *m);
    if (m == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "multipart: out of memory");
    }
    m->cb = *cb;
    m->ctx = ctx;
    m->max_parts = lim != NULL && lim->max_parts != 0 ? lim->max_parts
                                                      : DEFAULT_MAX_PARTS;
    m->max_header_bytes = lim != NULL && lim->max_header_bytes != 0
                              ? lim->max_header_bytes
                              : DEFAULT_MAX_HEADER_BYTES;
    memcpy(m->boundary, boundary, blen + 1);
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, blen);
    m->dlen = 4 + blen;
    m->k = 2;   /* the first delimiter may open the body without its CRLF */
    m->virt = 2;
    m->state = ST_PREAMBLE;
    ag_buf_init(&m->hdr, m->max_header_bytes);
    *out = m;
    return AG_OK;
}

void web_multipart_free(WebMultipart *m)
{
    if (m == NULL) {
        return;
    }
    ag_buf_deinit(&m->hdr);
    ag_free(m);
}

static int fail(WebMultipart *m, int rc)
{
    m->failed = rc;
    return rc;
}

static int emit(WebMultipart *m, const uint8_t *p, size_t n, AgError *err)
{
    if (n == 0 || m->cb.part_data == NULL) {
        return AG_OK;
    }
    return m->cb.part_data(m->ctx, p, n, err);
}

/*
 * Scan p[0..n) for the delimiter, with m->k of its bytes already matched in
 * earlier feeds.  With deliver, bytes that turn out not to be delimiter go
 * to part_data (one call per feed, plus one for a failed match carried over
 * from the previous feed).  *used: bytes consumed; *found: the delimiter
 * completed at p[*used - 1].
 */
static int scan(WebMultipart *m, const uint8_t *p, size_t n, bool deliver,
                size_t *used, bool *found, AgError *err)
{
    size_t carry = m->k;    /* matched bytes from earlier feeds, before p */
    size_t virt = m->virt;  /* leading carry bytes never received */
    size_t k = m->k;
    size_t mstart = 0;      /* where this chunk's part of the match begins */
    size_t i = 0;
    *found = false;
    while (i < n) {
        if (k == 0) {
            const uint8_t *cr = memchr(p + i, '\r', n - i);
            if (cr == NULL) {
                i = n;
                break;
            }
            i = (size_t)(cr - p);
            mstart = i++;
            k = 1;
            continue;
        }
        if (p[i] == m->delim[k]) {
            i++;
            if (++k == m->dlen) {
                *found = true;
                break;
            }
            continue;
        }
        /* Mismatch: the held bytes were data.  Those from earlier feeds
         * come first; those in p stay in the run delivered below.  p[i] is
         * looked at again: it may be a CR that starts a new match. */
        if (carry > 0) {
            if (deliver) {
                int rc = emit(m, m->delim + virt, carry - virt, err);
                if (rc != AG_OK) {
                    return rc;
                }
            }
            carry = 0;
            virt = 0;
        }
        k = 0;
    }
    size_t data_end = *found || k > 0 ? mstart : i;
    if (deliver) {
        int rc = emit(m, p, data_end, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    m->k = *found ? 0 : k;
    m->virt = *found ? 0 : virt;
    *used = i;
    return AG_OK;
}

/* "part 3" or "the first boundary", for messages about a delimiter line. */
static const char *where(const WebMultipart *m, char out[48])
{
    if (m->nparts == 0) {
        snprintf(out, 48, "first boundary");
    } else {
        snprintf(out, 48, "boundary after part %" PRIu32, m->nparts);
    }
    return out;
}

/* How a header value is case-folded when stored. */
typedef enum Fold {
    FOLD_NONE,          /* as sent */
    FOLD_TYPE,          /* media type lowercased, parameters as sent */
    FOLD_ALL,           /* lowercased */
} Fold;

/* Copy a header value span, unfolding (dropping CR and LF) and trimming. */
static int copy_value(const WebMultipart *m, const char *name, const char *v,
                      size_t n, char *dst, size_t cap, Fold fold,
                      AgError *err)
{
    while (n > 0 && (is_wsp(v[0]) || v[0] == '\r' || v[0] == '\n')) {
        v++;
        n--;
    }
    while (n > 0 && (is_wsp(v[n - 1]) || v[n - 1] == '\r' ||
                     v[n - 1] == '\n')) {
        n--;
    }
    size_t o = 0;
    bool in_type = fold == FOLD_TYPE;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\r' || c == '\n') {
            continue;
        }
        if (c == ';') {
            in_type = false;
        }
        if (o + 1 >= cap) {
            return ag_error_set(err, AG_ERR_LIMIT, "part %" PRIu32 ": %s "
                                "value longer than %zu bytes", m->nparts,
                                name, cap - 1);
        }
        dst[o++] = fold == FOLD_ALL || in_type
                       ? (char)lower((unsigned char)c) : c;
    }
    dst[o] = '\0';
    return AG_OK;
}

/* One logical header: name and the raw value span (folds included). */
static int store_header(WebMultipart *m, const char *name, size_t nlen,
                        const char *v, size_t vlen, uint32_t seen[4],
                        AgError *err)
{
    WebPartHeaders *h = &m->h;
    /* Content-Transfer-Encoding is case-insensitive (RFC 2045 §6.1), so
     * it is lowercased; Content-Location and Content-ID are kept as sent. */
    const struct {
        const char *name;
        char *dst;
        size_t cap;
        Fold fold;
    } fields[4] = {
        {"content-type", h->content_type, sizeof h->content_type, FOLD_TYPE},
        {"content-location", h->content_location,
         sizeof h->content_location, FOLD_NONE},
        {"content-id", h->content_id, sizeof h->content_id, FOLD_NONE},
        {"content-transfer-encoding", h->transfer_encoding,
         sizeof h->transfer_encoding, FOLD_ALL},
    };
    for (int f = 0; f < 4; f++) {
        if (!ieq(name, nlen, fields[f].name)) {
            continue;
        }
        if (seen[f]++ > 0) {
            return ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                "%s header given twice", m->nparts,
                                fields[f].name);
        }
        return copy_value(m, fields[f].name, v, vlen, fields[f].dst,
                          fields[f].cap, fields[f].fold, err);
    }
    return AG_OK;           /* unknown headers are ignored */
}

/*
 * Parse the complete header block in m->hdr (it ends with an empty line).
 * Lines end in LF with an optional CR before it; a line starting with a
 * space or tab continues the previous header (RFC 5322 §2.2.3).
 */
static int parse_headers(WebMultipart *m, AgError *err)
{
    memset(&m->h, 0, sizeof m->h);
    const char *b = (const char *)m->hdr.data;
    size_t len = m->hdr.len;
    size_t pos = 0;
    uint32_t line = 0;
    uint32_t seen[4] = {0, 0, 0, 0};
    const char *name = NULL;
    size_t nlen = 0;
    const char *val = NULL;
    size_t vlen = 0;
    for (;;) {
        const char *nl = memchr(b + pos, '\n', len - pos);
        if (nl == NULL) {   /* cannot happen: the block ends in LF */
            return ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": header "
                                "block not terminated", m->nparts);
        }
        size_t eol = (size_t)(nl - b);
        size_t end = eol > pos && b[eol - 1] == '\r' ? eol - 1 : eol;
        line++;
        for (size_t i = pos; i < end; i++) {
            unsigned char c = (unsigned char)b[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                return ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                    "header line %" PRIu32 ": control "
                                    "character 0x%02x", m->nparts, line, c);
            }
        }
        bool blank = end == pos;
        bool cont = !blank && is_wsp(b[pos]);
        if (cont) {
            if (name == NULL) {
                return ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                    "header line %" PRIu32 " is a "
                                    "continuation without a header",
                                    m->nparts, line);
            }
            vlen = (size_t)(b + end - val);
        } else {
            if (name != NULL) {
                int rc = store_header(m, name, nlen, val, vlen, seen, err);
                if (rc != AG_OK) {
                    return rc;
                }
                name = NULL;
            }
            if (blank) {
                return AG_OK;
            }
            size_t i = pos;
            while (i < end && is_tchar((unsigned char)b[i])) {
                i++;
            }
            size_t name_end = i;
            while (i < end && is_wsp(b[i])) {
                i++;
            }
            if (name_end == pos || i == end || b[i] != ':') {
                return ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                    "header line %" PRIu32 " is not "
                                    "\"Name: value\"", m->nparts, line);
            }
            name = b + pos;
            nlen = name_end - pos;
            val = b + i + 1;
            vlen = end - (i + 1);
        }
        pos = eol + 1;
    }
}

/* Header bytes: collect up to the empty line, then begin the part. */
static int feed_headers(WebMultipart *m, const uint8_t *p, size_t n,
                        size_t *used, AgError *err)
{
    size_t room = m->max_header_bytes - m->hdr.len;
    size_t lim = n < room ? n : room;
    size_t i = 0;
    bool done = false;
    while (i < lim && !done) {
        uint8_t c = p[i++];
        if (c == '\n') {
            done = m->line_bytes == 0 || (m->line_bytes == 1 && m->line_cr);
            m->line_bytes = 0;
            m->line_cr = false;
        } else {
            if (m->line_bytes == 0) {
                m->line_cr = c == '\r';
            }
            m->line_bytes++;
        }
    }
    if (!done && i < n) {
        return ag_error_set(err, AG_ERR_LIMIT, "part %" PRIu32 ": header "
                            "block longer than %" PRIu32 " bytes", m->nparts,
                            m->max_header_bytes);
    }
    int rc = ag_buf_append(&m->hdr, p, i);
    if (rc == AG_ERR_NOMEM) {
        return ag_error_set(err, rc, "part %" PRIu32 ": out of memory for "
                            "the header block", m->nparts);
    }
    if (rc != AG_OK) {      /* cannot happen: room was checked */
        return ag_error_set(err, rc, "part %" PRIu32 ": header block longer "
                            "than %" PRIu32 " bytes", m->nparts,
                            m->max_header_bytes);
    }
    *used = i;
    if (!done) {
        return AG_OK;
    }
    rc = parse_headers(m, err);
    if (rc != AG_OK) {
        return rc;
    }
    ag_buf_reset(&m->hdr);
    m->part_open = true;
    if (m->cb.part_begin != NULL) {
        rc = m->cb.part_begin(m->ctx, &m->h, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    m->state = ST_BODY;
    m->k = 2;       /* "--boundary" at once ends an empty body */
    m->virt = 2;
    return AG_OK;
}

static int end_part(WebMultipart *m, AgError *err)
{
    if (!m->part_open) {
        return AG_OK;
    }
    m->part_open = false;
    return m->cb.part_end != NULL ? m->cb.part_end(m->ctx, err) : AG_OK;
}

/* One byte of the delimiter line after the boundary. */
static int feed_delim_line(WebMultipart *m, uint8_t c, uint64_t at,
                           AgError *err)
{
    char w[48];
    char s[8];
    if (m->state == ST_AFTER_BOUNDARY && c == '-') {
        m->state = ST_CLOSE_DASH;
        return AG_OK;
    }
    switch (m->state) {
    case ST_AFTER_BOUNDARY:
    case ST_PADDING:
        if (is_wsp(c)) {
            m->state = ST_PADDING;
            return AG_OK;
        }
        if (c == '\r') {
            m->state = ST_BOUNDARY_CR;
            return AG_OK;
        }
        return ag_error_set(err, AG_ERR_PARSE, "%s: expected %sCRLF after "
                            "\"--%s\", got %s at body offset %" PRIu64,
                            where(m, w),
                            m->state == ST_AFTER_BOUNDARY ? "\"--\" or " : "",
                            m->boundary, show_byte(c, s), at);
    case ST_BOUNDARY_CR:
        if (c != '\n') {
            return ag_error_set(err, AG_ERR_PARSE, "%s: expected LF after CR, "
                                "got %s at body offset %" PRIu64, where(m, w),
                                show_byte(c, s), at);
        }
        {
            int rc = end_part(m, err);
            if (rc != AG_OK) {
                return rc;
            }
        }
        if (m->nparts >= m->max_parts) {
            return ag_error_set(err, AG_ERR_LIMIT, "multipart: more than %"
                                PRIu32 " parts", m->max_parts);
        }
        m->nparts++;
        m->state = ST_HEADERS;
        m->line_bytes = 0;
        m->line_cr = false;
        ag_buf_reset(&m->hdr);
        return AG_OK;
    case ST_CLOSE_DASH:
        if (c != '-') {
            return ag_error_set(err, AG_ERR_PARSE, "%s: expected \"--%s--\", "
                                "got %s at body offset %" PRIu64, where(m, w),
                                m->boundary, show_byte(c, s), at);
        }
        if (m->nparts == 0) {
            return ag_error_set(err, AG_ERR_PARSE, "multipart: close "
                                "delimiter before any part at body offset %"
                                PRIu64, at);
        }
        m->state = ST_EPILOGUE;
        m->k = 0;
        m->virt = 0;
        return end_part(m, err);
    default:
        return ag_error_set(err, AG_ERR_INVALID, "multipart: bad state %d",
                            (int)m->state);
    }
}

int web_multipart_feed(WebMultipart *m, const uint8_t *data, size_t len,
                       AgError *err)
{
    if (m == NULL || (data == NULL && len > 0)) {
        return ag_error_set(err, AG_ERR_INVALID, "multipart: no parser or "
                            "no data");
    }
    if (m->failed != AG_OK) {
        return ag_error_set(err, m->failed, "multipart: parser already "
                            "failed (%s)", ag_err_name(m->failed));
    }
    if (m->finished) {
        return fail(m, ag_error_set(err, AG_ERR_INVALID, "multipart: feed "
                                    "after finish"));
    }
    size_t i = 0;
    while (i < len) {
        size_t used = 0;
        bool found = false;
        int rc;
        switch (m->state) {
        case ST_PREAMBLE:
        case ST_BODY:
        case ST_EPILOGUE:
            rc = scan(m, data + i, len - i, m->state == ST_BODY, &used,
                      &found, err);
            if (rc != AG_OK) {
                return fail(m, rc);
            }
            i += used;
            if (found && m->state == ST_EPILOGUE) {
                return fail(m, ag_error_set(err, AG_ERR_PARSE, "multipart: "
                                            "boundary delimiter after the "
                                            "close delimiter (part %" PRIu32
                                            " was the last) at body offset %"
                                            PRIu64, m->nparts,
                                            m->offset + i - m->dlen));
            }
            if (found) {
                m->state = ST_AFTER_BOUNDARY;
            }
            break;
        case ST_HEADERS:
            rc = feed_headers(m, data + i, len - i, &used, err);
            if (rc != AG_OK) {
                return fail(m, rc);
            }
            i += used;
            break;
        default:
            rc = feed_delim_line(m, data[i], m->offset + i, err);
            if (rc != AG_OK) {
                return fail(m, rc);
            }
            i++;
            break;
        }
    }
    m->offset += len;
    return AG_OK;
}

int web_multipart_finish(WebMultipart *m, AgError *err)
{
    if (m == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "multipart: no parser");
    }
    if (m->failed != AG_OK) {
        return ag_error_set(err, m->failed, "multipart: parser already "
                            "failed (%s)", ag_err_name(m->failed));
    }
    char w[48];
    switch (m->state) {
    case ST_EPILOGUE:
        m->finished = true;
        return AG_OK;
    case ST_PREAMBLE:
        return fail(m, ag_error_set(err, AG_ERR_PARSE, "multipart: no "
                                    "boundary delimiter \"--%s\" in %" PRIu64
                                    " bytes of body", m->boundary,
                                    m->offset));
    case ST_HEADERS:
        if (m->hdr.len == 0) {
            return fail(m, ag_error_set(err, AG_ERR_PARSE, "multipart: body "
                                        "ends after the boundary before part %"
                                        PRIu32 "; expected its headers or "
                                        "the close delimiter \"--%s--\"",
                                        m->nparts, m->boundary));
        }
        return fail(m, ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                    "body ends inside the header block "
                                    "(truncated)", m->nparts));
    case ST_BODY:
        return fail(m, ag_error_set(err, AG_ERR_PARSE, "part %" PRIu32 ": "
                                    "body ends without a delimiter; expected "
                                    "\"--%s\" or \"--%s--\" (truncated)",
                                    m->nparts, m->boundary, m->boundary));
    default:
        return fail(m, ag_error_set(err, AG_ERR_PARSE, "%s: body ends inside "
                                    "the delimiter line (truncated)",
                                    where(m, w)));
    }
}
