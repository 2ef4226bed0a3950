/*
 * accept.c — content negotiation for DICOMweb: the Accept and
 * Accept-Encoding request headers (RFC 9110 §12.5.1, §12.5.3) and the
 * PS3.18 §8.7.3 tables that tie media types to transfer syntaxes.
 *
 * Grammar (RFC 9110 §12.5.1, §5.6.6):
 *   Accept      = #( media-range *( OWS ";" OWS [ parameter ] ) )
 *   media-range = "*" "/" "*" / type "/" "*" / type "/" subtype
 *   parameter   = token "=" ( token / quoted-string )
 * Choices made here:
 *  - Parameter values may also be unquoted media types with a '/'
 *    (`type=application/dicom`): many DICOMweb clients send that, and
 *    PS3.18 §8.7.3.5 examples show both forms.
 *  - Names are case-insensitive; the type/subtype and the type= value are
 *    lowercased; the transfer-syntax= value is kept as sent.  A repeated
 *    type=, transfer-syntax= or q= in one range is refused (which one
 *    would the client mean?).  Other parameters (boundary, charset, start,
 *    accept-ext) are ignored.
 *  - q is a qvalue (RFC 9110 §12.4.2): 0..1 with at most three decimals.
 *    Ranges with q=0 are dropped: they only say what is not wanted.
 *  - Empty list elements (", ,") are allowed, as the #rule says.
 * Everything is checked against fixed-size fields; nothing is allocated.
 */
#include "web_int.h"

#include <ctype.h>
#include <string.h>

/* ---- the scanner -------------------------------------------------------- */

typedef struct Scan {
    const char *p;
    AgError *err;
} Scan;

static bool is_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~",
                                                           c) != NULL);
}

static void skip_ows(Scan *s)
{
    while (*s->p == ' ' || *s->p == '\t') {
        s->p++;
    }
}

/* A token (or, with slash, a token that may hold '/') into out. */
static int scan_token(Scan *s, bool slash, char *out, size_t cap,
                      const char *what)
{
    size_t n = 0;
    while (is_tchar((unsigned char)*s->p) || (slash && *s->p == '/')) {
        if (n + 1 >= cap) {
            return ag_error_set(s->err, AG_ERR_LIMIT, "accept: %s is longer "
                                "than %zu characters", what, cap - 1);
        }
        out[n++] = (char)tolower((unsigned char)*s->p++);
    }
    out[n] = '\0';
    if (n == 0) {
        return ag_error_set(s->err, AG_ERR_PARSE, "accept: %s expected",
                            what);
    }
    return AG_OK;
}

/* token / quoted-string (RFC 9110 §5.6.4), case kept. */
static int scan_value(Scan *s, char *out, size_t cap, const char *what)
{
    size_t n = 0;
    if (*s->p != '"') {
        const char *start = s->p;
        while (is_tchar((unsigned char)*s->p) || *s->p == '/') {
            if (n + 1 >= cap) {
                return ag_error_set(s->err, AG_ERR_LIMIT, "accept: value of "
                                    "%s is too long", what);
            }
            out[n++] = *s->p++;
        }
        out[n] = '\0';
        return s->p == start
            ? ag_error_set(s->err, AG_ERR_PARSE, "accept: value of %s "
                           "expected", what)
            : AG_OK;
    }
    s->p++;
    for (;;) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            break;
        }
        if (c == '\\') {
            c = (unsigned char)s->p[1];
            if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f) {
                return ag_error_set(s->err, AG_ERR_PARSE, "accept: bad "
                                    "escape in the value of %s", what);
            }
            s->p++;
        } else if (c == '\0') {
            return ag_error_set(s->err, AG_ERR_PARSE, "accept: unterminated "
                                "quoted value of %s", what);
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return ag_error_set(s->err, AG_ERR_PARSE, "accept: control "
                                "character in the value of %s", what);
        }
        if (n + 1 >= cap) {
            return ag_error_set(s->err, AG_ERR_LIMIT, "accept: value of %s "
                                "is too long", what);
        }
        out[n++] = (char)c;
        s->p++;
    }
    out[n] = '\0';
    return AG_OK;
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) */
static int parse_q(const char *v, uint16_t *out, AgError *err)
{
    if ((v[0] != '0' && v[0] != '1') || (v[1] != '\0' && v[1] != '.')) {
        return ag_error_set(err, AG_ERR_PARSE, "accept: q=%.16s is not a "
                            "qvalue", v);
    }
    unsigned q = v[0] == '1' ? 1000 : 0;
    const char *d = v[1] == '.' ? v + 2 : v + 1;
    unsigned scale = 100;
    int digits = 0;
    for (; *d != '\0'; d++, digits++) {
        if (!isdigit((unsigned char)*d) || digits == 3 ||
            (v[0] == '1' && *d != '0')) {
            return ag_error_set(err, AG_ERR_PARSE, "accept: q=%.16s is not "
                                "a qvalue", v);
        }
        q += (unsigned)(*d - '0') * scale;
        scale /= 10;
    }
    *out = (uint16_t)q;
    return AG_OK;
}

/* One media range with its parameters, up to the ',' or the end. */
static int scan_range(Scan *s, WebMediaRange *r)
{
    memset(r, 0, sizeof *r);
    r->q = 1000;
    int rc = scan_token(s, true, r->type, sizeof r->type, "media type");
    if (rc != AG_OK) {
        return rc;
    }
    const char *slash = strchr(r->type, '/');
    if (slash == NULL || slash == r->type || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL ||
        (r->type[0] == '*' && strcmp(r->type, "*/*") != 0)) {
        return ag_error_set(s->err, AG_ERR_PARSE, "accept: \"%.64s\" is not "
                            "a media range", r->type);
    }
    bool have_type = false, have_ts = false, have_q = false;
    for (;;) {
        skip_ows(s);
        if (*s->p != ';') {
            break;
        }
        s->p++;
        skip_ows(s);
        if (*s->p == ';' || *s->p == ',' || *s->p == '\0') {
            continue;   /* empty parameter */
        }
        char name[32];
        char value[WEB_ACCEPT_VALUE_MAX];
        rc = scan_token(s, false, name, sizeof name, "parameter name");
        if (rc == AG_OK) {
            skip_ows(s);
            if (*s->p != '=') {
                rc = ag_error_set(s->err, AG_ERR_PARSE, "accept: '=' "
                                  "expected after \"%s\"", name);
            } else {
                s->p++;
                skip_ows(s);
                rc = scan_value(s, value, sizeof value, name);
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        bool *seen = strcmp(name, "type") == 0 ? &have_type
            : strcmp(name, "transfer-syntax") == 0 ? &have_ts
            : strcmp(name, "q") == 0 ? &have_q : NULL;
        if (seen == NULL) {
            continue;
        }
        if (*seen) {
            return ag_error_set(s->err, AG_ERR_PARSE, "accept: parameter "
                                "%s given twice", name);
        }
        *seen = true;
        if (seen == &have_q) {
            rc = parse_q(value, &r->q, s->err);
        } else if (seen == &have_type) {
            for (char *c = value; *c != '\0'; c++) {
                *c = (char)tolower((unsigned char)*c);
            }
            rc = ag_fmt(r->part_type, sizeof r->part_type, "%s", value);
        } else {
            rc = ag_fmt(r->ts, sizeof r->ts, "%s", value);
        }
        if (rc == AG_ERR_LIMIT) {
            return ag_error_set(s->err, AG_ERR_LIMIT, "accept: value of %s "
                                "is too long", name);
        }
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

static int specificity(const WebMediaRange *r)
{
    int n = strcmp(r->type, "*/*") == 0 ? 0
        : strstr(r->type, "/*") != NULL ? 2 : 4;
    return n + (r->part_type[0] != '\0' || r->ts[0] != '\0');
}

int web_accept_parse(const char *header, WebAccept *out, AgError *err)
{
    memset(out, 0, sizeof *out);
    if (header == NULL) {
        return AG_OK;
    }
    Scan s = {.p = header, .err = err};
    WebMediaRange r;
    for (;;) {
        skip_ows(&s);
        if (*s.p == ',') {
            s.p++;
            continue;   /* empty list element */
        }
        if (*s.p == '\0') {
            break;
        }
        int rc = scan_range(&s, &r);
        if (rc == AG_OK && *s.p != ',' && *s.p != '\0') {
            rc = ag_error_set(err, AG_ERR_PARSE, "accept: unexpected "
                              "character '%c' after a media range",
                              isprint((unsigned char)*s.p) ? *s.p : '?');
        }
        if (rc != AG_OK) {
            memset(out, 0, sizeof *out);
            return rc;
        }
        if (r.q == 0) {
            out->excluded++;
            continue;
        }
        if (out->n == WEB_ACCEPT_MAX) {
            memset(out, 0, sizeof *out);
            return ag_error_set(err, AG_ERR_LIMIT, "accept: more than %d "
                                "media ranges", WEB_ACCEPT_MAX);
        }
        /* Insertion keeps the order stable: q first, then the more
         * specific range, then the order the client wrote. */
        int i = out->n++;
        while (i > 0 &&
               (out->range[i - 1].q < r.q ||
                (out->range[i - 1].q == r.q &&
                 specificity(&out->range[i - 1]) < specificity(&r)))) {
            out->range[i] = out->range[i - 1];
            i--;
        }
        out->range[i] = r;
    }
    return AG_OK;
}

bool web_media_match(const char *range, const char *type)
{
    if (strcmp(range, "*/*") == 0 || strcmp(range, "*") == 0 ||
        strcmp(range, type) == 0) {
        return true;
    }
    size_t n = strlen(range);
    return n >= 2 && strcmp(range + n - 2, "/*") == 0 &&
           strncmp(range, type, n - 1) == 0;
}

/* ---- Accept-Encoding (RFC 9110 §12.5.3) --------------------------------- */

bool web_accept_gzip(const char *header)
{
    if (header == NULL) {
        return false;
    }
    Scan s = {.p = header, .err = NULL};
    uint16_t gzip = 0, star = 0;
    bool have_gzip = false, have_star = false;
    for (;;) {
        skip_ows(&s);
        if (*s.p == ',') {
            s.p++;
            continue;
        }
        if (*s.p == '\0') {
            break;
        }
        char coding[32];
        if (scan_token(&s, false, coding, sizeof coding, "coding") != AG_OK) {
            return false;   /* malformed: identity is always safe */
        }
        uint16_t q = 1000;
        for (;;) {
            skip_ows(&s);
            if (*s.p != ';') {
                break;
            }
            s.p++;
            skip_ows(&s);
            char name[16], value[16];
            if (scan_token(&s, false, name, sizeof name, "name") != AG_OK ||
                *s.p++ != '=' ||
                scan_value(&s, value, sizeof value, "q") != AG_OK) {
                return false;
            }
            if (strcmp(name, "q") == 0 && parse_q(value, &q, NULL) != AG_OK) {
                return false;
            }
        }
        if (*s.p != ',' && *s.p != '\0') {
            return false;
        }
        if (strcmp(coding, "gzip") == 0 || strcmp(coding, "x-gzip") == 0) {
            gzip = q;
            have_gzip = true;
        } else if (strcmp(coding, "*") == 0) {
            star = q;
            have_star = true;
        }
    }
    return have_gzip ? gzip > 0 : have_star && star > 0;
}

/* ---- PS3.18 §8.7.3 tables ----------------------------------------------- */

/* Media type of each compressed syntax, and whether it is that media type's
 * default (Table 8.7.3-5; "D" rows of the Single Frame and Multi-frame
 * Image categories). */
static const struct {
    const char *ts, *media;
    bool dflt;
} MEDIA[] = {
    {"1.2.840.10008.1.2.4.70", "image/jpeg", true},
    {"1.2.840.10008.1.2.4.50", "image/jpeg", false},
    {"1.2.840.10008.1.2.4.51", "image/jpeg", false},
    {"1.2.840.10008.1.2.4.57", "image/jpeg", false},
    {"1.2.840.10008.1.2.5", "image/dicom-rle", true},
    {"1.2.840.10008.1.2.4.80", "image/jls", true},
    {"1.2.840.10008.1.2.4.81", "image/jls", false},
    {"1.2.840.10008.1.2.4.90", "image/jp2", true},
    {"1.2.840.10008.1.2.4.91", "image/jp2", false},
    {"1.2.840.10008.1.2.4.92", "image/jpx", true},
    {"1.2.840.10008.1.2.4.93", "image/jpx", false},
    {"1.2.840.10008.1.2.4.201", "image/jphc", true},
    {"1.2.840.10008.1.2.4.202", "image/jphc", false},
    {"1.2.840.10008.1.2.4.203", "image/jphc", false},
};

#define NMEDIA (sizeof MEDIA / sizeof MEDIA[0])

const char *web_ts_media(const char *ts)
{
    for (size_t i = 0; ts != NULL && i < NMEDIA; i++) {
        if (strcmp(ts, MEDIA[i].ts) == 0) {
            return MEDIA[i].media;
        }
    }
    return "application/octet-stream";
}

/* "image/x-dicom-rle" is the name PS3.18 used before 2019. */
static const char *canonical(const char *media)
{
    return strcmp(media, "image/x-dicom-rle") == 0 ? "image/dicom-rle"
                                                   : media;
}

const char *web_media_default_ts(const char *media)
{
    media = canonical(media);
    if (strcmp(media, "application/octet-stream") == 0) {
        return DICOM_TS_EXPLICIT_LE;   /* Table 8.7.3-4 */
    }
    for (size_t i = 0; i < NMEDIA; i++) {
        if (MEDIA[i].dflt && strcmp(media, MEDIA[i].media) == 0) {
            return MEDIA[i].ts;
        }
    }
    return NULL;
}

bool web_media_has_ts(const char *media, const char *ts)
{
    media = canonical(media);
    if (strcmp(media, "application/octet-stream") == 0) {
        return strcmp(ts, DICOM_TS_EXPLICIT_LE) == 0;
    }
    return strcmp(web_ts_media(ts), media) == 0;
}
