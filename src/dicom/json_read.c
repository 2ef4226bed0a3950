/*
 * json_read.c — DICOM JSON (PS3.18 Annex F) reader.
 *
 * jansson parses the text (duplicate keys rejected); this file walks the
 * tree and builds the data set through the dataset/value API, checking every
 * member against its VR (PS3.18 Table F.2.3-1).  The input is untrusted
 * (STOW-RS metadata, uploads): keys, VRs, value types and base64 are
 * validated, sequence nesting and elements per data set are capped, and
 * every error names the JSON path of the element ("00081115/0/0020000E").
 *
 * Leniencies, on purpose (they are what other implementations write):
 * lowercase hex in keys; IS/DS given as strings (CP 1861) are stored as
 * written; SV/UV given as decimal strings (§F.2.3.1); integral reals for the
 * integer VRs; null for FL/FD reads as NaN (our writer's form of NaN);
 * members other than vr/Value/InlineBinary/BulkDataURI are ignored.
 *
 * Text is stored as UTF-8.  If any string value is not ASCII, every
 * (0008,0005) becomes "ISO_IR 192" (and the top level gets one), since the
 * bytes stored are UTF-8 whatever character set the JSON declared.
 */
#include "dicom_int.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>   /* NAN */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH DICOM_DEFAULT_MAX_DEPTH   /* sequence nesting */
#define JSON_MAX_ELEMENTS 1000000                /* per data set / SQ */

typedef struct Reader {
    AgArena *a;
    AgError *err;
    bool non_ascii;         /* some string value is not ASCII */
    int depth;              /* sequence depth of the data set being read */
    size_t plen;
    char path[JSON_MAX_DEPTH * 24 + 32];   /* "TAG/ITEM/TAG..." */
} Reader;

typedef struct Entry {
    uint32_t tag;
    json_t *value;
} Entry;

/* ---- errors and the path ------------------------------------------------ */

static int fail(Reader *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(Reader *r, int code, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->plen == 0) {
        return ag_error_set(r->err, code, "json: %s", msg);
    }
    /* Deep paths keep their tail, where the element is. */
    const char *p = r->path;
    const char *dots = "";
    if (r->plen > 120) {
        p += r->plen - 120;
        dots = "...";
    }
    return ag_error_set(r->err, code, "json: %s%s: %s", dots, p, msg);
}

/* Add "/TAG" or "/ITEM" to the path; returns the length to restore. */
static size_t path_push(Reader *r, bool tag, uint32_t v)
{
    size_t old = r->plen;
    int n = snprintf(r->path + r->plen, sizeof r->path - r->plen,
                     tag ? "%s%08" PRIX32 : "%s%" PRIu32,
                     r->plen > 0 ? "/" : "", v);
    if (n > 0 && (size_t)n < sizeof r->path - r->plen) {
        r->plen += (size_t)n;
    } else {
        r->path[old] = '\0';   /* no room (cannot happen within the caps) */
    }
    return old;
}

static void path_pop(Reader *r, size_t old)
{
    r->plen = old;
    r->path[old] = '\0';
}

/* A key or VR from the input, safe to quote in a message. */
static void printable(const char *s, size_t n, char out[24])
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < 16; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\'
                       ? (char)c : '?';
    }
    if (n > 16) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Map an error from the value API: bad values are the input's fault. */
static int api_fail(Reader *r, int rc, const AgError *lerr)
{
    return fail(r, rc == AG_ERR_INVALID ? AG_ERR_PARSE : rc, "%s",
                lerr->msg);
}

static const char *vr_name(DicomVR vr)
{
    const DicomVRInfo *info = dicom_vr_info(vr);
    return info != NULL ? info->name : "??";
}

/* ---- base64 (RFC 4648 §4), strict -------------------------------------- */

/* 1 + the value of each base64 digit; 0 for anything else ('=' too). */
static const uint8_t B64_DIGIT[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6,
    ['G'] = 7, ['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12,
    ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
    ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
    ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
    ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
    ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/*
 * Decode s[0..n) into out (room for n / 4 * 3 bytes).  Strict: no
 * whitespace, padding to a multiple of 4, '=' only at the end, unused bits
 * zero (§3.5), so that each byte string has exactly one encoding.  Returns
 * the decoded length, or -1 with *bad the offset of the first bad char.
 */
static int64_t b64_decode(const char *str, size_t n, uint8_t *out,
                          size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    if (n % 4 != 0) {
        *bad = n;
        return -1;
    }
    size_t pad = 0;
    if (n > 0 && s[n - 1] == '=') {
        pad = s[n - 2] == '=' ? 2 : 1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t d[4];
        size_t digits = i + 4 == n ? 4 - pad : 4;
        for (size_t k = 0; k < 4; k++) {
            d[k] = k < digits ? B64_DIGIT[s[i + k]] : 1;
            if (d[k] == 0) {
                *bad = i + k;
                return -1;
            }
        }
        uint32_t q = ((d[0] - 1) << 18) | ((d[1] - 1) << 12) |
                     ((d[2] - 1) << 6) | (d[3] - 1);
        if (digits < 4) {
            /* bits below the last byte must be zero (RFC 4648 §3.5) */
            uint32_t unused = digits == 3 ? q & 0xff : q & 0xffff;
            if (unused != 0) {
                *bad = i + digits - 1;
                return -1;
            }
        }
        out[o++] = (uint8_t)(q >> 16);
        if (digits > 2) {
            out[o++] = (uint8_t)(q >> 8);
        }
        if (digits > 3) {
            out[o++] = (uint8_t)q;
        }
    }
    return (int64_t)o;
}

/* ---- elements ----------------------------------------------------------- */

static int read_dataset(Reader *r, json_t *obj, DicomDataset *ds);

static bool has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) {
            return true;
        }
    }
    return false;
}

static int put_element(Reader *r, DicomDataset *ds, const DicomElement *el)
{
    int rc = dicom_dataset_put(ds, el, NULL);
    return rc == AG_OK ? AG_OK : fail(r, rc, "out of memory");
}

static int read_bulk_uri(Reader *r, DicomDataset *ds, uint32_t tag,
                         DicomVR vr, json_t *uri)
{
    if (vr == DICOM_VR_SQ) {
        return fail(r, AG_ERR_PARSE, "\"BulkDataURI\" is not allowed for "
                    "VR SQ");
    }
    if (!json_is_string(uri)) {
        return fail(r, AG_ERR_PARSE, "\"BulkDataURI\" must be a string");
    }
    size_t n = json_string_length(uri);
    if (n == 0) {   /* points nowhere: an element without a value */
        AgError lerr;
        int rc = dicom_set_bytes(ds, tag, vr, NULL, 0, &lerr);
        return rc == AG_OK ? AG_OK : api_fail(r, rc, &lerr);
    }
    if (n > UINT32_MAX - 1) {
        return fail(r, AG_ERR_PARSE, "\"BulkDataURI\" is too long");
    }
    /* NUL-terminated for callers that treat it as a C string. */
    char *v = ag_arena_strndup(r->a, json_string_value(uri), n);
    if (v == NULL) {
        return fail(r, ag_arena_fail_code(r->a), "out of memory");
    }
    DicomElement el = {.tag = tag, .vr = vr, .flags = DICOM_EL_BULK_URI,
                       .length = (uint32_t)n, .value = (uint8_t *)v};
    return put_element(r, ds, &el);
}

static int read_inline(Reader *r, DicomDataset *ds, uint32_t tag,
                       const DicomVRInfo *info, json_t *b64)
{
    if (info->kind != DICOM_VRK_BULK) {
        return fail(r, AG_ERR_PARSE, "\"InlineBinary\" is not allowed for "
                    "VR %s", info->name);
    }
    if (!json_is_string(b64)) {
        return fail(r, AG_ERR_PARSE, "\"InlineBinary\" must be a string");
    }
    size_t n = json_string_length(b64);
    uint64_t max = (uint64_t)n / 4 * 3;
    if (max > 0xfffffffeu) {
        return fail(r, AG_ERR_LIMIT, "\"InlineBinary\" is longer than a "
                    "DICOM value can be");
    }
    /* Decoded straight into the arena (+1 for an even-length pad). */
    uint8_t *v = max > 0 ? ag_arena_alloc(r->a, (size_t)max + 1) : NULL;
    if (max > 0 && v == NULL) {
        return fail(r, ag_arena_fail_code(r->a), "out of memory for %"
                    PRIu64 " bytes of \"InlineBinary\"", max);
    }
    size_t bad = 0;
    int64_t len = b64_decode(json_string_value(b64), n, v, &bad);
    if (len < 0) {
        return fail(r, AG_ERR_PARSE, "\"InlineBinary\" is not valid base64 "
                    "(at offset %zu)", bad);
    }
    if (len % info->unit != 0) {
        return fail(r, AG_ERR_PARSE, "\"InlineBinary\" of %" PRId64 " bytes "
                    "is not a multiple of %u for VR %s", len, info->unit,
                    info->name);
    }
    if (len & 1) {
        v[len++] = 0;   /* PS3.5 §7.1.1: even length, OB/UN pad with NUL */
    }
    DicomElement el = {.tag = tag, .vr = info->vr, .length = (uint32_t)len,
                       .value = len > 0 ? v : NULL};
    return put_element(r, ds, &el);
}

static int read_items(Reader *r, DicomDataset *ds, uint32_t tag,
                      json_t *value)
{
    AgError lerr;
    DicomElement *seq = NULL;
    int rc = dicom_set_sequence(ds, tag, &seq, &lerr);
    if (rc != AG_OK) {
        return api_fail(r, rc, &lerr);
    }
    size_t n = value != NULL ? json_array_size(value) : 0;
    if (n == 0) {
        return AG_OK;
    }
    if (r->depth + 1 > JSON_MAX_DEPTH) {
        return fail(r, AG_ERR_LIMIT, "sequences nested deeper than %d",
                    JSON_MAX_DEPTH);
    }
    if (n > JSON_MAX_ELEMENTS) {
        return fail(r, AG_ERR_LIMIT, "%zu items, more than %d", n,
                    JSON_MAX_ELEMENTS);
    }
    /* All item pointers at once: dicom_sequence_append() copies the array
     * on each call, which is quadratic in the number of items. */
    DicomDataset **items = ag_arena_alloc(r->a, n * sizeof *items);
    if (items == NULL) {
        return fail(r, ag_arena_fail_code(r->a), "out of memory");
    }
    seq->items = items;
    seq->items_cap = (uint32_t)n;
    seq->nitems = 0;
    for (size_t i = 0; i < n; i++) {
        size_t old = path_push(r, false, (uint32_t)i);
        json_t *obj = json_array_get(value, i);
        if (!json_is_object(obj)) {
            rc = fail(r, AG_ERR_PARSE, "item must be an object");
        } else {
            DicomDataset *item = dicom_dataset_create(r->a);
            if (item == NULL) {
                rc = fail(r, ag_arena_fail_code(r->a), "out of memory");
            } else {
                dicom__dataset_set_parent(item, ds);
                dicom_dataset_set_item_undefined_length(item, true);
                items[i] = item;
                seq->nitems = (uint32_t)i + 1;
                r->depth++;
                rc = read_dataset(r, obj, item);
                r->depth--;
            }
        }
        path_pop(r, old);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

/* Append one PN value ({"Alphabetic": .., ...} or null) to b. */
static int pn_value(Reader *r, json_t *v, size_t i, AgBuf *b)
{
    if (json_is_null(v)) {
        return AG_OK;
    }
    if (!json_is_object(v)) {
        return fail(r, AG_ERR_PARSE, "PN value %zu must be an object", i);
    }
    static const char *const names[3] = {"Alphabetic", "Ideographic",
                                         "Phonetic"};
    json_t *groups[3] = {NULL, NULL, NULL};
    const char *key;
    json_t *g;
    json_object_foreach(v, key, g) {
        int k = 0;
        while (k < 3 && strcmp(key, names[k]) != 0) {
            k++;
        }
        if (k == 3) {
            char shown[24];
            printable(key, strlen(key), shown);
            return fail(r, AG_ERR_PARSE, "PN value %zu has an unknown "
                        "member \"%s\"", i, shown);
        }
        if (!json_is_string(g)) {
            return fail(r, AG_ERR_PARSE, "PN value %zu: \"%s\" must be a "
                        "string", i, names[k]);
        }
        const char *s = json_string_value(g);
        size_t n = json_string_length(g);
        if (memchr(s, '=', n) != NULL || memchr(s, '\\', n) != NULL) {
            return fail(r, AG_ERR_PARSE, "PN value %zu: \"%s\" contains an "
                        "equals sign or a backslash", i, names[k]);
        }
        r->non_ascii |= has_non_ascii(s, n);
        groups[k] = g;
    }
    int last = -1;
    for (int k = 0; k < 3; k++) {
        if (groups[k] != NULL && json_string_length(groups[k]) > 0) {
            last = k;
        }
    }
    int rc = AG_OK;
    for (int k = 0; k <= last && rc == AG_OK; k++) {
        if (k > 0) {
            rc = ag_buf_append(b, "=", 1);
        }
        if (rc == AG_OK && groups[k] != NULL) {
            rc = ag_buf_append(b, json_string_value(groups[k]),
                               json_string_length(groups[k]));
        }
    }
    return rc == AG_OK ? AG_OK : fail(r, rc, "value too long");
}

/* A real that is an integer within int64 (no libm: the layer links none). */
static bool integral(double d, int64_t *out)
{
    if (!(d > -9.2e18 && d < 9.2e18)) {     /* also refuses NaN */
        return false;
    }
    int64_t i = (int64_t)d;
    if ((double)i != d) {
        return false;
    }
    *out = i;
    return true;
}

/* Shortest text for a DS (PS3.5 Table 6.2-1: at most 16 characters). */
static void format_ds(double v, char out[32])
{
    if (v == 0) {
        v = 0;      /* "-0" would come back from JSON as the integer 0 */
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) {
            break;
        }
    }
    for (int prec = 16; strlen(out) > 16 && prec > 0; prec--) {
        snprintf(out, 32, "%.*g", prec, v);
    }
}

/* Append one IS/DS value (number, string or null) to b. */
static int number_text(Reader *r, DicomVR vr, json_t *v, size_t i, AgBuf *b)
{
    char num[32];
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, n);
        if (vr == DICOM_VR_DS && strlen(num) > 16) {
            format_ds((double)n, num);
        }
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (vr == DICOM_VR_IS) {
            int64_t n;
            if (!integral(d, &n)) {
                return fail(r, AG_ERR_PARSE, "IS value %zu is not an "
                            "integer", i);
            }
            snprintf(num, sizeof num, "%" PRId64, n);
        } else {
            format_ds(d, num);
        }
    } else {
        return fail(r, AG_ERR_PARSE, "%s value %zu must be a number, a "
                    "string or null", vr_name(vr), i);
    }
    int rc = ag_buf_append_str(b, num);
    return rc == AG_OK ? AG_OK : fail(r, rc, "value too long");
}

/* String and text VRs: values joined with '\\' (PS3.5 §6.4). */
static int read_strings(Reader *r, DicomDataset *ds, uint32_t tag,
                        const DicomVRInfo *info, json_t *value)
{
    size_t n = json_array_size(value);
    if (info->kind == DICOM_VRK_TEXT && n > 1) {
        return fail(r, AG_ERR_PARSE, "VR %s holds one value, not %zu",
                    info->name, n);
    }
    AgBuf b;
    ag_buf_init(&b, 0xfffffffe);
    int rc = AG_OK;
    for (size_t i = 0; i < n && rc == AG_OK; i++) {
        json_t *v = json_array_get(value, i);
        if (i > 0) {
            rc = ag_buf_append(&b, "\\", 1);
            if (rc != AG_OK) {
                rc = fail(r, rc, "value too long");
                break;
            }
        }
        if (json_is_null(v)) {
            continue;
        }
        if (info->vr == DICOM_VR_PN) {
            rc = pn_value(r, v, i, &b);
            continue;
        }
        if (!json_is_string(v)) {
            if (info->vr == DICOM_VR_IS || info->vr == DICOM_VR_DS) {
                rc = number_text(r, info->vr, v, i, &b);
            } else {
                rc = fail(r, AG_ERR_PARSE, "%s value %zu must be a string "
                          "or null", info->name, i);
            }
            continue;
        }
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (info->kind == DICOM_VRK_STRING && memchr(s, '\\', len) != NULL) {
            rc = fail(r, AG_ERR_PARSE, "%s value %zu contains a backslash",
                      info->name, i);
            continue;
        }
        r->non_ascii |= has_non_ascii(s, len);
        rc = ag_buf_append(&b, s, len);
        if (rc != AG_OK) {
            rc = fail(r, rc, "value too long");
        }
    }
    if (rc == AG_OK) {
        AgError lerr;
        rc = dicom_set_bytes(ds, tag, info->vr, b.data, b.len, &lerr);
        if (rc != AG_OK) {
            rc = api_fail(r, rc, &lerr);
        }
    }
    ag_buf_deinit(&b);
    return rc;
}

/* An integer from a JSON number, or a decimal string for SV/UV. */
static bool json_to_int(json_t *v, DicomVR vr, int64_t *out, bool *neg_ok)
{
    *neg_ok = true;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        return integral(json_real_value(v), out);
    }
    if (json_is_string(v) && (vr == DICOM_VR_SV || vr == DICOM_VR_UV)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        size_t i = s[0] == '-' && vr == DICOM_VR_SV ? 1 : 0;
        if (n == i || n - i > 20) {
            return false;
        }
        for (size_t k = i; k < n; k++) {
            if (s[k] < '0' || s[k] > '9') {
                return false;
            }
        }
        errno = 0;
        if (vr == DICOM_VR_UV) {
            unsigned long long u = strtoull(s, NULL, 10);
            *out = (int64_t)u;
            *neg_ok = false;    /* the bits are a uint64 */
        } else {
            *out = strtoll(s, NULL, 10);
        }
        return errno == 0;
    }
    return false;
}

static int read_ints(Reader *r, DicomDataset *ds, uint32_t tag,
                     const DicomVRInfo *info, json_t *value)
{
    size_t n = json_array_size(value);
    int64_t *vals = ag_malloc(n * sizeof *vals);
    if (vals == NULL) {
        return fail(r, AG_ERR_NOMEM, "out of memory");
    }
    int rc = AG_OK;
    for (size_t i = 0; i < n && rc == AG_OK; i++) {
        json_t *v = json_array_get(value, i);
        if (info->vr == DICOM_VR_AT) {
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            bool ok = json_is_string(v) && json_string_length(v) == 8;
            uint32_t t = 0;
            for (size_t k = 0; ok && k < 8; k++) {
                int d = s[k] >= '0' && s[k] <= '9' ? s[k] - '0'
                      : s[k] >= 'A' && s[k] <= 'F' ? s[k] - 'A' + 10
                      : s[k] >= 'a' && s[k] <= 'f' ? s[k] - 'a' + 10 : -1;
                ok = d >= 0;
                t = (t << 4) | (uint32_t)(d & 15);
            }
            if (!ok) {
                rc = fail(r, AG_ERR_PARSE, "AT value %zu must be a string of "
                          "8 hex digits", i);
            }
            vals[i] = t;
            continue;
        }
        bool neg_ok;
        int64_t x;
        if (!json_to_int(v, info->vr, &x, &neg_ok)) {
            rc = fail(r, AG_ERR_PARSE, "%s value %zu must be an integer",
                      info->name, i);
            continue;
        }
        int64_t lo, hi;
        switch (info->vr) {
        case DICOM_VR_US: lo = 0; hi = UINT16_MAX; break;
        case DICOM_VR_SS: lo = INT16_MIN; hi = INT16_MAX; break;
        case DICOM_VR_UL: lo = 0; hi = UINT32_MAX; break;
        case DICOM_VR_SL: lo = INT32_MIN; hi = INT32_MAX; break;
        case DICOM_VR_UV: lo = neg_ok ? 0 : INT64_MIN; hi = INT64_MAX; break;
        default: lo = INT64_MIN; hi = INT64_MAX; break;
        }
        if (x < lo || x > hi) {
            rc = fail(r, AG_ERR_PARSE, "%s value %zu is out of range",
                      info->name, i);
        }
        vals[i] = x;
    }
    if (rc == AG_OK) {
        AgError lerr;
        rc = dicom_set_ints(ds, tag, info->vr, vals, n, &lerr);
        if (rc != AG_OK) {
            rc = api_fail(r, rc, &lerr);
        }
    }
    ag_free(vals);
    return rc;
}

static int read_floats(Reader *r, DicomDataset *ds, uint32_t tag,
                       const DicomVRInfo *info, json_t *value)
{
    size_t n = json_array_size(value);
    double *vals = ag_malloc(n * sizeof *vals);
    if (vals == NULL) {
        return fail(r, AG_ERR_NOMEM, "out of memory");
    }
    int rc = AG_OK;
    for (size_t i = 0; i < n && rc == AG_OK; i++) {
        json_t *v = json_array_get(value, i);
        if (json_is_null(v)) {
            vals[i] = NAN;      /* how the writer says NaN and infinity */
        } else if (json_is_number(v)) {
            vals[i] = json_number_value(v);
            /* converting an out-of-range double to float is undefined */
            if (info->vr == DICOM_VR_FL &&
                (vals[i] > FLT_MAX || vals[i] < -FLT_MAX)) {
                rc = fail(r, AG_ERR_PARSE, "FL value %zu is out of range",
                          i);
            }
        } else {
            rc = fail(r, AG_ERR_PARSE, "%s value %zu must be a number or "
                      "null", info->name, i);
        }
    }
    if (rc == AG_OK) {
        AgError lerr;
        rc = dicom_set_floats(ds, tag, info->vr, vals, n, &lerr);
        if (rc != AG_OK) {
            rc = api_fail(r, rc, &lerr);
        }
    }
    ag_free(vals);
    return rc;
}

static int read_element(Reader *r, DicomDataset *ds, uint32_t tag, json_t *obj)
{
    if (!json_is_object(obj)) {
        return fail(r, AG_ERR_PARSE, "element must be an object");
    }
    json_t *jvr = json_object_get(obj, "vr");
    if (jvr == NULL) {
        return fail(r, AG_ERR_PARSE, "\"vr\" is missing");
    }
    if (!json_is_string(jvr)) {
        return fail(r, AG_ERR_PARSE, "\"vr\" must be a string");
    }
    const char *vs = json_string_value(jvr);
    DicomVR vr = json_string_length(jvr) == 2 ? dicom_vr_from_str(vs)
                                              : DICOM_VR_NONE;
    if (vr == DICOM_VR_NONE) {
        char shown[24];
        printable(vs, json_string_length(jvr), shown);
        return fail(r, AG_ERR_PARSE, "unknown VR \"%s\"", shown);
    }
    const DicomVRInfo *info = dicom_vr_info(vr);
    json_t *value = json_object_get(obj, "Value");
    json_t *inl = json_object_get(obj, "InlineBinary");
    json_t *uri = json_object_get(obj, "BulkDataURI");
    if ((value != NULL) + (inl != NULL) + (uri != NULL) > 1) {
        return fail(r, AG_ERR_PARSE, "more than one of \"Value\", "
                    "\"InlineBinary\" and \"BulkDataURI\"");
    }
    if (uri != NULL) {
        return read_bulk_uri(r, ds, tag, vr, uri);
    }
    if (inl != NULL) {
        return read_inline(r, ds, tag, info, inl);
    }
    if (value != NULL && !json_is_array(value)) {
        return fail(r, AG_ERR_PARSE, "\"Value\" must be an array");
    }
    if (value != NULL && info->kind == DICOM_VRK_BULK) {
        return fail(r, AG_ERR_PARSE, "VR %s takes \"InlineBinary\" or "
                    "\"BulkDataURI\", not \"Value\"", info->name);
    }
    if (info->kind == DICOM_VRK_SEQUENCE) {
        return read_items(r, ds, tag, value);
    }
    if (value == NULL || json_array_size(value) == 0) {
        AgError lerr;
        int rc = dicom_set_bytes(ds, tag, vr, NULL, 0, &lerr);
        return rc == AG_OK ? AG_OK : api_fail(r, rc, &lerr);
    }
    if (info->kind != DICOM_VRK_BINARY) {
        return read_strings(r, ds, tag, info, value);
    }
    if (vr == DICOM_VR_FL || vr == DICOM_VR_FD) {
        return read_floats(r, ds, tag, info, value);
    }
    return read_ints(r, ds, tag, info, value);
}

static int cmp_entry(const void *x, const void *y)
{
    uint32_t a = ((const Entry *)x)->tag, b = ((const Entry *)y)->tag;
    return a < b ? -1 : a > b;
}

/* A key: 8 hex digits (PS3.18 §F.2.1.1 says uppercase; lowercase is read). */
static bool parse_key(const char *k, size_t n, uint32_t *tag)
{
    if (n != 8) {
        return false;
    }
    uint32_t t = 0;
    for (size_t i = 0; i < 8; i++) {
        char c = k[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) {
            return false;
        }
        t = (t << 4) | (uint32_t)d;
    }
    *tag = t;
    return true;
}

static int read_dataset(Reader *r, json_t *obj, DicomDataset *ds)
{
    size_t n = json_object_size(obj);
    if (n == 0) {
        return AG_OK;
    }
    if (n > JSON_MAX_ELEMENTS) {
        return fail(r, AG_ERR_LIMIT, "%zu elements in a data set, more than "
                    "%d", n, JSON_MAX_ELEMENTS);
    }
    /* Sorted first, so that each insert is an append: inserting in the
     * input's order could be quadratic. */
    Entry *ents = ag_malloc(n * sizeof *ents);
    if (ents == NULL) {
        return fail(r, AG_ERR_NOMEM, "out of memory");
    }
    size_t m = 0;
    const char *key;
    size_t klen;
    json_t *val;
    int rc = AG_OK;
    json_object_keylen_foreach(obj, key, klen, val) {
        if (!parse_key(key, klen, &ents[m].tag)) {
            char shown[24];
            printable(key, klen, shown);
            rc = fail(r, AG_ERR_PARSE, "key \"%s\" is not a tag (8 hex "
                      "digits)", shown);
            break;
        }
        if (DICOM_TAG_GROUP(ents[m].tag) == 0xfffe) {
            rc = fail(r, AG_ERR_PARSE, "key \"%08" PRIX32 "\" is a "
                      "delimiter, not an element", ents[m].tag);
            break;
        }
        ents[m++].value = val;
    }
    if (rc == AG_OK) {
        qsort(ents, m, sizeof *ents, cmp_entry);
    }
    for (size_t i = 1; i < m && rc == AG_OK; i++) {
        if (ents[i].tag == ents[i - 1].tag) {   /* "0008000a", "0008000A" */
            rc = fail(r, AG_ERR_PARSE, "tag %08" PRIX32 " appears twice",
                      ents[i].tag);
        }
    }
    for (size_t i = 0; i < m && rc == AG_OK; i++) {
        size_t old = path_push(r, true, ents[i].tag);
        rc = read_element(r, ds, ents[i].tag, ents[i].value);
        path_pop(r, old);
    }
    ag_free(ents);
    return rc;
}

/* Every (0008,0005) becomes ISO_IR 192: the text stored is UTF-8. */
static int mark_utf8(Reader *r, DicomDataset *ds, bool top)
{
    AgError lerr;
    if (top || dicom_dataset_find(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET)) {
        int rc = dicom_set_string(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                  DICOM_VR_CS, "ISO_IR 192", &lerr);
        if (rc != AG_OK) {
            return api_fail(r, rc, &lerr);
        }
    }
    size_t n = dicom_dataset_count(ds);
    for (size_t i = 0; i < n; i++) {
        const DicomElement *el = dicom_dataset_at(ds, i);
        for (uint32_t k = 0; el->vr == DICOM_VR_SQ && k < el->nitems; k++) {
            int rc = mark_utf8(r, el->items[k], false);
            if (rc != AG_OK) {
                return rc;
            }
        }
    }
    return AG_OK;
}

int dicom_json_read(const char *json, size_t len, AgArena *a,
                    DicomDataset **out, AgError *err)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        /* jansson leaves the message empty when an allocation fails before
         * or outside the lexer (lex_init, json_object()). */
        if (json_error_code(&je) == json_error_out_of_memory ||
            je.text[0] == '\0') {
            return ag_error_set(err, AG_ERR_NOMEM, "json: out of memory");
        }
        return ag_error_set(err, AG_ERR_PARSE, "json: line %d column %d: %s",
                            je.line, je.column, je.text);
    }
    Reader *r = ag_malloc(sizeof *r);
    int rc = AG_OK;
    if (r == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "json: out of memory");
    } else {
        memset(r, 0, sizeof *r);
        r->a = a;
        r->err = err;
        DicomDataset *ds = NULL;
        if (!json_is_object(root)) {
            rc = fail(r, AG_ERR_PARSE, "the top level must be an object");
        } else if ((ds = dicom_dataset_create(a)) == NULL) {
            rc = fail(r, ag_arena_fail_code(a), "out of memory");
        } else {
            rc = read_dataset(r, root, ds);
        }
        if (rc == AG_OK && r->non_ascii) {
            rc = mark_utf8(r, ds, true);
        }
        if (rc == AG_OK) {
            *out = ds;
        }
        ag_free(r);
    }
    json_decref(root);
    return rc;
}
