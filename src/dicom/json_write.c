/*
 * json_write.c — DICOM JSON (PS3.18 Annex F) writer.
 *
 * Output is streamed: bytes go through a 16 KiB staging buffer straight to
 * the sink, element by element, recursing into sequences; no JSON tree is
 * built, so memory does not grow with the size of the data set (decoded
 * strings live in a scratch arena that is recycled between elements).
 *
 * Errors are latched: the first failure (sink, scratch arena, nesting) is
 * kept in w->rc and every later write is a no-op, so the emitters below do
 * not check after each byte; element boundaries do.
 *
 * Value encoding choices (PS3.18 §F.2.3, §F.2.5):
 *  - Strings are decoded to UTF-8 per the Specific Character Set in force
 *    (items inherit it); an unsupported character set falls back to the raw
 *    bytes, with bytes that are not UTF-8 replaced by U+FFFD.
 *  - IS/DS are JSON numbers written as they appear, normalised to JSON
 *    syntax ("+5" -> 5, ".5" -> 0.5, "5." -> 5, "007" -> 7).  A value that
 *    is no number ("1A", or "1.5" for IS), or one that a JSON parser would
 *    overflow (an integer beyond 64 bits, 1e999), becomes null.  CP 1861
 *    would allow a string, but readers convert IS/DS strings to numbers
 *    and fail on garbage (pydicom's Dataset.from_json rejects the whole data
 *    set), so the one bad value is dropped instead.
 *  - FL/FD -0 is written -0.0: "-0" reads back as the integer 0.
 *  - SV/UV beyond +-2^53 are strings (JavaScript numbers lose them).
 *  - FL/FD NaN and infinities are null (JSON has no such numbers); finite
 *    values use the shortest form that reads back to the same bits.
 *  - Bulk VRs are InlineBinary (base64 of the little-endian bytes) or, with
 *    a prefix, BulkDataURI.  Encapsulated pixel data without a prefix is the
 *    concatenated fragments (basic offset table excluded).
 */
#include "dicom_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STAGE_SIZE (16 * 1024)
/* Sequence nesting the writer follows; the reader stops at 32 by default,
 * so this only refuses data sets built deeper in code. */
#define WRITE_MAX_DEPTH 128
/* Recycle the scratch arena once decoded strings take this much. */
#define SCRATCH_RECYCLE (1024 * 1024)
/* IS/DS values longer than this are not considered numbers. */
#define NUMBER_MAX 64

typedef struct PathStep {
    uint32_t tag;       /* element at this level */
    uint32_t item;      /* item index when descending into it */
} PathStep;

typedef struct Writer {
    DicomJsonOptions opt;
    DicomSink sink;
    void *ctx;
    AgError *err;
    int rc;             /* first error; latched */
    AgArena *scratch;
    int level;          /* indentation level (pretty) */
    int depth;          /* sequence depth: path[0..depth] in use */
    PathStep path[WRITE_MAX_DEPTH + 1];
    size_t len;
    uint8_t stage[STAGE_SIZE];
} Writer;

/* ---- output ------------------------------------------------------------- */

static void flush(Writer *w)
{
    if (w->rc == AG_OK && w->len > 0) {
        w->rc = w->sink(w->ctx, w->stage, w->len, w->err);
    }
    w->len = 0;
}

static void put(Writer *w, const void *p, size_t n)
{
    const uint8_t *s = p;
    while (n > 0 && w->rc == AG_OK) {
        if (w->len == STAGE_SIZE) {
            flush(w);
            continue;
        }
        size_t k = STAGE_SIZE - w->len;
        if (k > n) {
            k = n;
        }
        memcpy(w->stage + w->len, s, k);
        w->len += k;
        s += k;
        n -= k;
    }
}

static void put_str(Writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static void put_ch(Writer *w, char c)
{
    if (w->len == STAGE_SIZE) {
        flush(w);
    }
    if (w->rc == AG_OK) {
        w->stage[w->len++] = (uint8_t)c;
    }
}

/* Pretty output: a line break and two spaces per level. */
static void newline(Writer *w)
{
    static const char spaces[] = "                                ";
    if (!w->opt.pretty) {
        return;
    }
    put_ch(w, '\n');
    size_t n = (size_t)w->level * 2;
    while (n > 0) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        put(w, spaces, k);
        n -= k;
    }
}

/* Bytes of a valid UTF-8 sequence at s[0..n), or 0 (RFC 3629 §4). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        lo = c == 0xe0 ? 0xa0 : 0x80;   /* no overlong forms */
        hi = c == 0xed ? 0x9f : 0xbf;   /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;   /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (need >= n) {
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        if (s[k] < lo || s[k] > hi) {
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need + 1;
}

/*
 * A JSON string (RFC 8259 §7).  Besides '"', '\\' and control characters,
 * "</" becomes "<\/" and "<!--" "\u003c!--" so that the text can sit inside
 * an HTML <script>, and U+2028/U+2029 are escaped for JavaScript.  Bytes
 * that are not UTF-8 become U+FFFD: the output is always valid JSON.
 */
static void put_json_chars(Writer *w, const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t run = 0;     /* start of bytes that need no escaping */
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        const char *esc = NULL;
        char ubuf[8];
        size_t adv = 1;
        if (c < 0x20) {
            switch (c) {
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            default:
                snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
                esc = ubuf;
                break;
            }
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '<' && i + 1 < n && s[i + 1] == '/') {
            esc = "<\\/";
            adv = 2;
        } else if (c == '<' && i + 3 < n && memcmp(s + i + 1, "!--", 3) == 0) {
            esc = "\\u003c";
        } else if (c >= 0x80) {
            size_t k = utf8_seq(s + i, n - i);
            if (k == 0) {
                esc = "\xef\xbf\xbd";   /* U+FFFD */
            } else if (k == 3 && c == 0xe2 && s[i + 1] == 0x80 &&
                       (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
                esc = s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029";
                adv = 3;
            } else {
                i += k;
                continue;
            }
        } else {
            i++;
            continue;
        }
        put(w, s + run, i - run);
        put_str(w, esc);
        i += adv;
        run = i;
    }
    put(w, s + run, n - run);
}

static void put_json_string(Writer *w, const char *s, size_t n)
{
    put_ch(w, '"');
    put_json_chars(w, s, n);
    put_ch(w, '"');
}

/* ,"name": — every member after "vr". */
static void member(Writer *w, const char *name)
{
    put_ch(w, ',');
    newline(w);
    put_ch(w, '"');
    put_str(w, name);
    put_str(w, w->opt.pretty ? "\": " : "\":");
}

static void array_begin(Writer *w)
{
    put_ch(w, '[');
    w->level++;
}

static void array_next(Writer *w, size_t i)
{
    if (i > 0) {
        put_ch(w, ',');
    }
    newline(w);
}

static void array_end(Writer *w)
{
    w->level--;
    newline(w);
    put_ch(w, ']');
}

/* ---- base64 (RFC 4648 §4), streamed ------------------------------------ */

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

typedef struct B64State {
    uint8_t carry[3];
    size_t n;
} B64State;

static void b64_quad(const uint8_t *in, char *out)
{
    uint32_t v = ((uint32_t)in[0] << 16) | ((uint32_t)in[1] << 8) | in[2];
    out[0] = B64[(v >> 18) & 63];
    out[1] = B64[(v >> 12) & 63];
    out[2] = B64[(v >> 6) & 63];
    out[3] = B64[v & 63];
}

static void b64_put(Writer *w, B64State *b, const uint8_t *p, size_t n)
{
    char out[1024];
    while (n > 0 && b->n > 0 && b->n < 3) {
        b->carry[b->n++] = *p++;
        n--;
    }
    if (b->n == 3) {
        b64_quad(b->carry, out);
        put(w, out, 4);
        b->n = 0;
    }
    while (n >= 3 && w->rc == AG_OK) {
        size_t k = 0;
        while (n >= 3 && k + 4 <= sizeof out) {
            b64_quad(p, out + k);
            k += 4;
            p += 3;
            n -= 3;
        }
        put(w, out, k);
    }
    if (w->rc != AG_OK) {
        return;
    }
    while (n > 0) {     /* fewer than 3 left: keep them for the next call */
        b->carry[b->n++] = *p++;
        n--;
    }
}

static void b64_end(Writer *w, B64State *b)
{
    if (b->n == 0) {
        return;
    }
    uint8_t last[3] = {b->carry[0], b->n > 1 ? b->carry[1] : 0, 0};
    char out[4];
    b64_quad(last, out);
    if (b->n == 1) {
        out[2] = '=';
    }
    out[3] = '=';
    put(w, out, 4);
    b->n = 0;
}

/* ---- numbers ------------------------------------------------------------ */

/*
 * An IS/DS value as a JSON number (RFC 8259 §6), or false when it is none.
 * The digits are kept as written; only the syntax JSON lacks is fixed:
 * a leading '+', leading zeros, a missing integer part or an empty fraction.
 * Values a JSON parser cannot hold (integers past 64 bits, overflowing
 * reals) are refused so that the output reads back everywhere.
 */
static bool json_number(const char *s, size_t n, bool integer,
                        char out[NUMBER_MAX + 4])
{
    if (n == 0 || n > NUMBER_MAX) {
        return false;
    }
    size_t i = 0, o = 0;
    if (s[i] == '+' || s[i] == '-') {
        if (s[i] == '-') {
            out[o++] = '-';
        }
        i++;
    }
    size_t int_start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    size_t int_end = i, frac_start = i, frac_end = i;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        frac_end = i;
    }
    if (int_end == int_start && frac_end == frac_start) {
        return false;   /* no digits at all */
    }
    size_t exp_start = i;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == d) {
            return false;
        }
    }
    if (i != n || (integer && (frac_start != int_end || exp_start != n))) {
        return false;   /* IS is [+-]digits only (PS3.5 Table 6.2-1) */
    }
    while (int_start + 1 < int_end && s[int_start] == '0') {
        int_start++;
    }
    if (int_start == int_end) {
        out[o++] = '0';
    } else {
        memcpy(out + o, s + int_start, int_end - int_start);
        o += int_end - int_start;
    }
    if (frac_end > frac_start) {
        out[o++] = '.';
        memcpy(out + o, s + frac_start, frac_end - frac_start);
        o += frac_end - frac_start;
    }
    if (exp_start < n) {    /* "e+05", "E-3": JSON has them all */
        memcpy(out + o, s + exp_start, n - exp_start);
        o += n - exp_start;
    }
    out[o] = '\0';
    errno = 0;
    char *end;
    if (frac_end == frac_start && exp_start == n) {
        (void)strtoll(out, &end, 10);
        return errno == 0;
    }
    double d = strtod(out, &end);
    return isfinite(d);
}

/* Shortest %g form of a double that reads back to the same value. */
static void format_double(double v, char out[32])
{
    if (v == 0 && signbit(v)) {
        snprintf(out, 32, "-0.0");  /* "-0" parses as the integer 0 */
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) {
            return;
        }
    }
}

static void format_float(float v, char out[32])
{
    if (v == 0 && signbit(v)) {
        snprintf(out, 32, "-0.0");
        return;
    }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(out, 32, "%.*g", prec, (double)v);
        if ((float)strtod(out, NULL) == v) {
            return;
        }
    }
}

/* ---- values ------------------------------------------------------------- */

static void put_tag_hex(Writer *w, uint32_t tag)
{
    char buf[12];
    snprintf(buf, sizeof buf, "%08" PRIX32, tag);
    put(w, buf, 8);
}

/* "BulkDataURI": prefix/TAG[/ITEM/TAG...] (PS3.18 §F.2.6). */
static void put_bulk_uri(Writer *w)
{
    member(w, "BulkDataURI");
    put_ch(w, '"');
    put_json_chars(w, w->opt.bulk_uri_prefix,
                   strlen(w->opt.bulk_uri_prefix));
    for (int d = 0; d <= w->depth; d++) {
        put_ch(w, '/');
        put_tag_hex(w, w->path[d].tag);
        if (d < w->depth) {
            char buf[16];
            snprintf(buf, sizeof buf, "/%" PRIu32, w->path[d].item);
            put_str(w, buf);
        }
    }
    put_ch(w, '"');
}

static void put_inline(Writer *w, const uint8_t *p, size_t n)
{
    B64State b = {.n = 0};
    member(w, "InlineBinary");
    put_ch(w, '"');
    b64_put(w, &b, p, n);
    b64_end(w, &b);
    put_ch(w, '"');
}

static int scratch_fail(Writer *w)
{
    w->rc = ag_error_set(w->err, ag_arena_fail_code(w->scratch),
                         "json: out of memory decoding a value");
    return w->rc;
}

/* The element's text as UTF-8 (trailing padding trimmed); NULL on error. */
static char *element_text(Writer *w, const DicomDataset *ds,
                          const DicomElement *el)
{
    char *s = NULL;
    AgError lerr;
    int rc = dicom_element_utf8(ds, el, w->scratch, &s, &lerr);
    if (rc == AG_ERR_NOMEM || rc == AG_ERR_LIMIT) {
        scratch_fail(w);
        return NULL;
    }
    if (rc != AG_OK) {
        /* An unsupported character set: the raw bytes; put_json_chars()
         * replaces whatever is not UTF-8. */
        rc = dicom_element_text(el, w->scratch, &s, NULL);
        if (rc != AG_OK) {
            scratch_fail(w);
            return NULL;
        }
    }
    return s;
}

static void put_pn(Writer *w, const char *v)
{
    DicomPersonName pn;
    if (dicom_pn_parse(v, w->scratch, &pn, NULL) != AG_OK) {
        scratch_fail(w);
        return;
    }
    static const char *const names[3] = {"Alphabetic", "Ideographic",
                                         "Phonetic"};
    bool any = false;
    for (int g = 0; g < 3; g++) {
        if (pn.group[g] == NULL || pn.group[g][0] == '\0') {
            continue;
        }
        if (!any) {
            put_ch(w, '{');
            w->level++;
            newline(w);
        } else {
            put_ch(w, ',');
            newline(w);
        }
        any = true;
        put_ch(w, '"');
        put_str(w, names[g]);
        put_str(w, w->opt.pretty ? "\": " : "\":");
        put_json_string(w, pn.group[g], strlen(pn.group[g]));
    }
    if (any) {
        w->level--;
        newline(w);
        put_ch(w, '}');
    } else {
        put_str(w, "null");   /* "==": no group has a name */
    }
}

/* One value of a string VR (already trimmed); empty means null. */
static void put_string_value(Writer *w, DicomVR vr, const char *v, size_t n)
{
    if (n == 0) {
        put_str(w, "null");
    } else if (vr == DICOM_VR_PN) {
        char *z = ag_arena_strndup(w->scratch, v, n);
        if (z == NULL) {
            scratch_fail(w);
            return;
        }
        put_pn(w, z);
    } else if (vr == DICOM_VR_IS || vr == DICOM_VR_DS) {
        char num[NUMBER_MAX + 4];
        put_str(w, json_number(v, n, vr == DICOM_VR_IS, num) ? num : "null");
    } else {
        put_json_string(w, v, n);
    }
}

static void put_strings(Writer *w, const DicomDataset *ds,
                        const DicomElement *el, const DicomVRInfo *info)
{
    char *s = element_text(w, ds, el);
    if (s == NULL || s[0] == '\0') {
        return;     /* error, or no value: "Value" is absent (§F.2.5) */
    }
    member(w, "Value");
    array_begin(w);
    if (info->kind == DICOM_VRK_TEXT) {    /* one value, '\\' is text */
        array_next(w, 0);
        put_json_string(w, s, strlen(s));
        array_end(w);
        return;
    }
    const char *p = s;
    for (size_t i = 0; w->rc == AG_OK; i++) {
        const char *end = strchr(p, '\\');
        const char *e = end != NULL ? end : p + strlen(p);
        const char *b = p;
        while (b < e && *b == ' ') {    /* PS3.5 §6.2: padding */
            b++;
        }
        while (e > b && (e[-1] == ' ' || e[-1] == '\0')) {
            e--;
        }
        array_next(w, i);
        put_string_value(w, el->vr, b, (size_t)(e - b));
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    array_end(w);
}

static void put_binary(Writer *w, const DicomElement *el)
{
    size_t vm = dicom_element_vm(el);
    if (vm == 0) {
        return;
    }
    member(w, "Value");
    array_begin(w);
    for (size_t i = 0; i < vm && w->rc == AG_OK; i++) {
        char buf[40];
        int64_t iv = 0;
        double dv = 0;
        array_next(w, i);
        switch (el->vr) {
        case DICOM_VR_FL: {
            float f;
            memcpy(&f, el->value + 4 * i, 4);
            if (!isfinite(f)) {
                put_str(w, "null");
                continue;
            }
            format_float(f, buf);
            break;
        }
        case DICOM_VR_FD:
            dicom_element_float(el, i, &dv, NULL);
            if (!isfinite(dv)) {
                put_str(w, "null");
                continue;
            }
            format_double(dv, buf);
            break;
        case DICOM_VR_AT:
            dicom_element_int(el, i, &iv, NULL);
            snprintf(buf, sizeof buf, "\"%08" PRIX32 "\"", (uint32_t)iv);
            break;
        case DICOM_VR_UV: {
            dicom_element_int(el, i, &iv, NULL);
            uint64_t u = (uint64_t)iv;
            /* §F.2.3.1: past 2^53 a JSON number is not exact everywhere */
            snprintf(buf, sizeof buf, u > (UINT64_C(1) << 53)
                     ? "\"%" PRIu64 "\"" : "%" PRIu64, u);
            break;
        }
        case DICOM_VR_SV: {
            dicom_element_int(el, i, &iv, NULL);
            bool big = iv > (INT64_C(1) << 53) || iv < -(INT64_C(1) << 53);
            snprintf(buf, sizeof buf, big ? "\"%" PRId64 "\"" : "%" PRId64,
                     iv);
            break;
        }
        default:    /* US SS UL SL */
            dicom_element_int(el, i, &iv, NULL);
            snprintf(buf, sizeof buf, "%" PRId64, iv);
            break;
        }
        put_str(w, buf);
    }
    array_end(w);
}

/* Encapsulated pixel data (PS3.5 §A.4). */
static void put_encapsulated(Writer *w, const DicomElement *el)
{
    if (w->opt.bulk_uri_prefix != NULL) {
        put_bulk_uri(w);
        return;
    }
    uint64_t total = 0;
    for (uint32_t i = 1; i < el->nfrags; i++) {
        if (el->frags[i].data == NULL && el->frags[i].length > 0) {
            return;     /* not loaded and nowhere to point: no value */
        }
        total += el->frags[i].length;
    }
    if (total == 0) {
        return;
    }
    B64State b = {.n = 0};
    member(w, "InlineBinary");
    put_ch(w, '"');
    for (uint32_t i = 1; i < el->nfrags && w->rc == AG_OK; i++) {
        if (el->frags[i].length > 0) {
            b64_put(w, &b, el->frags[i].data, el->frags[i].length);
        }
    }
    b64_end(w, &b);
    put_ch(w, '"');
}

static bool skipped(const Writer *w, uint32_t tag)
{
    if (w->opt.include_meta) {
        return false;
    }
    /* group 0002 is the file's, not the data set's (PS3.10 §7.1);
     * group lengths (gggg,0000) are retired (PS3.5 §7.2) */
    return DICOM_TAG_GROUP(tag) == 0x0002 || DICOM_TAG_ELEMENT(tag) == 0;
}

static void write_dataset(Writer *w, const DicomDataset *ds);

static void write_items(Writer *w, const DicomElement *el)
{
    if (el->nitems == 0) {
        return;
    }
    if (w->depth >= WRITE_MAX_DEPTH) {
        w->rc = ag_error_set(w->err, AG_ERR_LIMIT, "json: sequences nested "
                             "deeper than %d", WRITE_MAX_DEPTH);
        return;
    }
    member(w, "Value");
    array_begin(w);
    for (uint32_t i = 0; i < el->nitems && w->rc == AG_OK; i++) {
        array_next(w, i);
        w->path[w->depth].item = i;
        w->depth++;
        write_dataset(w, el->items[i]);
        w->depth--;
    }
    array_end(w);
}

static void write_element(Writer *w, const DicomDataset *ds,
                          const DicomElement *el)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    w->path[w->depth].tag = el->tag;
    put_ch(w, '{');
    w->level++;
    newline(w);
    put_str(w, w->opt.pretty ? "\"vr\": \"" : "\"vr\":\"");
    put_str(w, info != NULL ? info->name : "UN");
    put_ch(w, '"');
    bool loaded = !(el->flags & DICOM_EL_NOT_LOADED) &&
                  (el->length == 0 || el->value != NULL);
    if (el->flags & DICOM_EL_BULK_URI) {
        member(w, "BulkDataURI");
        put_json_string(w, el->value != NULL ? (const char *)el->value : "",
                        el->value != NULL ? el->length : 0);
    } else if (el->vr == DICOM_VR_SQ) {
        write_items(w, el);
    } else if (el->flags & DICOM_EL_ENCAPSULATED) {
        put_encapsulated(w, el);
    } else if (!loaded) {
        if (w->opt.bulk_uri_prefix != NULL) {
            put_bulk_uri(w);
        }   /* else: nothing to say but the VR */
    } else if (el->length == 0) {
        /* §F.2.5: no "Value" */
    } else if (info == NULL || info->kind == DICOM_VRK_BULK) {
        if (w->opt.bulk_uri_prefix != NULL && w->opt.bulk_threshold > 0 &&
            el->length > w->opt.bulk_threshold) {
            put_bulk_uri(w);
        } else {
            put_inline(w, el->value, el->length);
        }
    } else if (info->kind == DICOM_VRK_BINARY) {
        put_binary(w, el);
    } else {
        put_strings(w, ds, el, info);
    }
    w->level--;
    newline(w);
    put_ch(w, '}');
}

static void write_dataset(Writer *w, const DicomDataset *ds)
{
    size_t n = dicom_dataset_count(ds);
    bool first = true;
    put_ch(w, '{');
    w->level++;
    for (size_t i = 0; i < n && w->rc == AG_OK; i++) {
        const DicomElement *el = dicom_dataset_at(ds, i);
        if (skipped(w, el->tag)) {
            continue;
        }
        if (!first) {
            put_ch(w, ',');
        }
        first = false;
        newline(w);
        put_ch(w, '"');
        put_tag_hex(w, el->tag);
        put_str(w, w->opt.pretty ? "\": " : "\":");
        write_element(w, ds, el);
        /* Between elements nothing points into the scratch arena. */
        if (w->rc == AG_OK && ag_arena_used(w->scratch) > SCRATCH_RECYCLE) {
            ag_arena_destroy(w->scratch);
            w->scratch = ag_arena_create(0);
            if (w->scratch == NULL) {
                w->rc = ag_error_set(w->err, AG_ERR_NOMEM,
                                     "json: out of memory");
            }
        }
    }
    w->level--;
    if (!first) {
        newline(w);
    }
    put_ch(w, '}');
}

int dicom_json_write(const DicomDataset *ds, const DicomJsonOptions *opt,
                     DicomSink sink, void *ctx, AgError *err)
{
    Writer *w = ag_malloc(sizeof *w);
    if (w == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "json: out of memory");
    }
    memset(w, 0, offsetof(Writer, stage));
    if (opt != NULL) {
        w->opt = *opt;
    }
    w->sink = sink;
    w->ctx = ctx;
    w->err = err;
    w->scratch = ag_arena_create(0);
    if (w->scratch == NULL) {
        ag_free(w);
        return ag_error_set(err, AG_ERR_NOMEM, "json: out of memory");
    }
    write_dataset(w, ds);
    flush(w);
    int rc = w->rc;
    ag_arena_destroy(w->scratch);
    ag_free(w);
    return rc;
}
