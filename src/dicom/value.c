/*
 * value.c — typed access to element values: setters that encode, getters
 * that decode (PS3.5 §6.2 value representations, §6.4 value multiplicity).
 */
#include "dicom_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static DicomVR resolve_vr(uint32_t tag, DicomVR vr)
{
    return vr != DICOM_VR_NONE ? vr : dicom_dict_vr(tag);
}

int dicom_set_bytes(DicomDataset *ds, uint32_t tag, DicomVR vr,
                    const void *data, size_t len, AgError *err)
{
    vr = resolve_vr(tag, vr);
    const DicomVRInfo *info = dicom_vr_info(vr);
    if (info == NULL || info->kind == DICOM_VRK_SEQUENCE) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): cannot set bytes for VR",
                            DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag));
    }
    if (info->kind == DICOM_VRK_BINARY || info->unit > 1) {
        if (len % info->unit != 0) {
            return ag_error_set(err, AG_ERR_INVALID,
                                "element (%04x,%04x): length %zu is not a "
                                "multiple of %u", DICOM_TAG_GROUP(tag),
                                DICOM_TAG_ELEMENT(tag), len, info->unit);
        }
    }
    size_t padded = len + (len & 1);   /* PS3.5 §7.1.1: even lengths */
    uint32_t limit = info->long_header ? 0xfffffffeu : 0xfffeu;
    if (padded > limit) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): %zu bytes is too long for "
                            "VR %s", DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag), len, info->name);
    }
    AgArena *a = dicom_dataset_arena(ds);
    uint8_t *v = NULL;
    if (padded > 0) {
        v = ag_arena_alloc(a, padded);
        if (v == NULL) {
            return ag_error_set(err, ag_arena_fail_code(a),
                                "element (%04x,%04x): out of memory",
                                DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag));
        }
        memcpy(v, data, len);
        if (padded != len) {
            v[len] = (uint8_t)info->pad;
        }
    }
    DicomElement el = {.tag = tag, .vr = vr, .length = (uint32_t)padded,
                       .value = v};
    int rc = dicom_dataset_put(ds, &el, NULL);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "element (%04x,%04x): out of memory",
                            DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag));
    }
    return AG_OK;
}

int dicom_set_string(DicomDataset *ds, uint32_t tag, DicomVR vr,
                     const char *value, AgError *err)
{
    return dicom_set_bytes(ds, tag, vr, value, strlen(value), err);
}

int dicom_set_ints(DicomDataset *ds, uint32_t tag, DicomVR vr,
                   const int64_t *values, size_t n, AgError *err)
{
    vr = resolve_vr(tag, vr);
    const DicomVRInfo *info = dicom_vr_info(vr);
    if (info == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "unknown VR");
    }
    if (vr == DICOM_VR_IS) {
        AgBuf b;
        ag_buf_init(&b, 0);
        int rc = AG_OK;
        for (size_t i = 0; i < n && rc == AG_OK; i++) {
            rc = ag_buf_printf(&b, "%s%" PRId64, i ? "\\" : "", values[i]);
        }
        if (rc == AG_OK) {
            rc = dicom_set_bytes(ds, tag, vr, b.data, b.len, err);
        } else {
            ag_error_set(err, rc, "out of memory");
        }
        ag_buf_deinit(&b);
        return rc;
    }
    if (info->kind != DICOM_VRK_BINARY && vr != DICOM_VR_OL &&
        vr != DICOM_VR_OV && vr != DICOM_VR_OW) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): VR %s holds no integers",
                            DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag),
                            info->name);
    }
    size_t unit = vr == DICOM_VR_AT ? 4 : info->unit;
    uint8_t tmp[512];
    uint8_t *buf = n * unit <= sizeof tmp ? tmp : ag_malloc(n * unit);
    if (buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t v = (uint64_t)values[i];
        uint8_t *p = buf + i * unit;
        if (vr == DICOM_VR_AT) {   /* group then element, each 16-bit */
            p[0] = (uint8_t)(v >> 16);
            p[1] = (uint8_t)(v >> 24);
            p[2] = (uint8_t)v;
            p[3] = (uint8_t)(v >> 8);
            continue;
        }
        for (size_t b = 0; b < unit; b++) {
            p[b] = (uint8_t)(v >> (8 * b));
        }
    }
    int rc = dicom_set_bytes(ds, tag, vr, buf, n * unit, err);
    if (buf != tmp) {
        ag_free(buf);
    }
    return rc;
}

/* Format a DS value in at most 16 characters (PS3.5 Table 6.2-1). */
static void format_ds(double v, char out[32])
{
    for (int prec = 12; prec > 0; prec--) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strlen(out) <= 16) {
            return;
        }
    }
}

int dicom_set_floats(DicomDataset *ds, uint32_t tag, DicomVR vr,
                     const double *values, size_t n, AgError *err)
{
    vr = resolve_vr(tag, vr);
    if (vr == DICOM_VR_DS) {
        AgBuf b;
        ag_buf_init(&b, 0);
        int rc = AG_OK;
        for (size_t i = 0; i < n && rc == AG_OK; i++) {
            char num[32];
            format_ds(values[i], num);
            rc = ag_buf_printf(&b, "%s%s", i ? "\\" : "", num);
        }
        if (rc == AG_OK) {
            rc = dicom_set_bytes(ds, tag, vr, b.data, b.len, err);
        } else {
            ag_error_set(err, rc, "out of memory");
        }
        ag_buf_deinit(&b);
        return rc;
    }
    bool f32 = vr == DICOM_VR_FL || vr == DICOM_VR_OF;
    bool f64 = vr == DICOM_VR_FD || vr == DICOM_VR_OD;
    if (!f32 && !f64) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): VR holds no floats",
                            DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag));
    }
    size_t unit = f32 ? 4 : 8;
    uint8_t *buf = ag_malloc(n * unit);
    if (buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (f32) {
            float f = (float)values[i];
            memcpy(buf + i * 4, &f, 4);   /* host is little-endian */
        } else {
            memcpy(buf + i * 8, &values[i], 8);
        }
    }
    int rc = dicom_set_bytes(ds, tag, vr, buf, n * unit, err);
    ag_free(buf);
    return rc;
}

int dicom_set_sequence(DicomDataset *ds, uint32_t tag, DicomElement **out,
                       AgError *err)
{
    DicomElement *el = dicom_dataset_find(ds, tag);
    if (el != NULL && el->vr == DICOM_VR_SQ) {
        *out = el;
        return AG_OK;
    }
    DicomElement sq = {.tag = tag, .vr = DICOM_VR_SQ,
                       .flags = DICOM_EL_UNDEFINED_LENGTH,
                       .length = DICOM_UNDEFINED_LENGTH};
    int rc = dicom_dataset_put(ds, &sq, out);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "sequence (%04x,%04x): out of memory",
                            DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag));
    }
    return AG_OK;
}

int dicom_sequence_append(DicomDataset *ds, DicomElement *seq,
                          DicomDataset **out, AgError *err)
{
    AgArena *a = dicom_dataset_arena(ds);
    if (seq->vr != DICOM_VR_SQ) {
        return ag_error_set(err, AG_ERR_INVALID, "not a sequence");
    }
    DicomDataset *item = dicom_dataset_create(a);
    /* Double the slots when full, so appending n items costs O(n). */
    uint32_t n = seq->nitems;
    DicomDataset **items = seq->items;
    if (item != NULL && n >= seq->items_cap) {
        if (n >= UINT32_MAX / 2) {
            return ag_error_set(err, AG_ERR_LIMIT, "too many items");
        }
        uint32_t cap = n == 0 ? 4 : n * 2;
        items = ag_arena_grow(a, seq->items, n, cap, sizeof *items);
        if (items != NULL) {
            seq->items_cap = cap;
        }
    }
    if (item == NULL) {
        items = NULL;
    }
    if (items == NULL) {
        return ag_error_set(err, ag_arena_fail_code(a),
                            "sequence (%04x,%04x): out of memory",
                            DICOM_TAG_GROUP(seq->tag),
                            DICOM_TAG_ELEMENT(seq->tag));
    }
    dicom__dataset_set_parent(item, ds);
    dicom_dataset_set_item_undefined_length(item, true);
    items[seq->nitems] = item;
    seq->items = items;
    seq->nitems++;
    *out = item;
    return AG_OK;
}

/* ---- getters ----------------------------------------------------------- */

size_t dicom_element_vm(const DicomElement *el)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    if (el->vr == DICOM_VR_SQ) {
        return el->nitems;
    }
    if (el->flags & DICOM_EL_ENCAPSULATED) {
        return 1;
    }
    if (info != NULL && info->kind == DICOM_VRK_BULK) {
        return 1;   /* PS3.5 §6.4: OB OD OF OL OV OW UN have VM 1 */
    }
    if (el->length == 0 || info == NULL) {
        return 0;
    }
    switch (info->kind) {
    case DICOM_VRK_STRING: {
        if (el->value == NULL) {
            return 1;
        }
        size_t n = 1;
        for (uint32_t i = 0; i < el->length; i++) {
            n += el->value[i] == '\\';
        }
        return n;
    }
    case DICOM_VRK_BINARY:
        return el->length / (el->vr == DICOM_VR_AT ? 4u : info->unit);
    default:
        return 1;
    }
}

static bool is_pad(uint8_t c)
{
    return c == ' ' || c == '\0';
}

/* Bounds of string value i within el->value, trimmed per PS3.5 §6.2. */
static int string_bounds(const DicomElement *el, size_t i, size_t *start,
                         size_t *end, AgError *err)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    if (info == NULL || (info->kind != DICOM_VRK_STRING &&
                         info->kind != DICOM_VRK_TEXT)) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): not a string VR",
                            DICOM_TAG_GROUP(el->tag),
                            DICOM_TAG_ELEMENT(el->tag));
    }
    if (el->length > 0 && el->value == NULL) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): value not loaded",
                            DICOM_TAG_GROUP(el->tag),
                            DICOM_TAG_ELEMENT(el->tag));
    }
    size_t s = 0, e = el->length;
    if (info->kind == DICOM_VRK_STRING) {
        size_t k = 0;
        for (size_t p = 0; p < el->length && k < i; p++) {
            if (el->value[p] == '\\') {
                k++;
                s = p + 1;
            }
        }
        if (k < i || (el->length == 0 && i > 0)) {
            return ag_error_set(err, AG_ERR_NOTFOUND,
                                "element (%04x,%04x): no value %zu",
                                DICOM_TAG_GROUP(el->tag),
                                DICOM_TAG_ELEMENT(el->tag), i);
        }
        e = s;
        while (e < el->length && el->value[e] != '\\') {
            e++;
        }
        while (s < e && el->value[s] == ' ') {
            s++;
        }
    } else if (i > 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "text has one value");
    }
    while (e > s && is_pad(el->value[e - 1])) {
        e--;
    }
    *start = s;
    *end = e;
    return AG_OK;
}

int dicom_element_string(const DicomElement *el, size_t i, AgArena *a,
                         char **out, AgError *err)
{
    size_t s, e;
    int rc = string_bounds(el, i, &s, &e, err);
    if (rc != AG_OK) {
        return rc;
    }
    *out = ag_arena_strndup(a, e > s ? (const char *)el->value + s : "",
                            e - s);
    if (*out == NULL) {
        return ag_error_set(err, ag_arena_fail_code(a), "out of memory");
    }
    return AG_OK;
}

int dicom_element_text(const DicomElement *el, AgArena *a, char **out,
                       AgError *err)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    if (info == NULL || (info->kind != DICOM_VRK_STRING &&
                         info->kind != DICOM_VRK_TEXT)) {
        return ag_error_set(err, AG_ERR_INVALID, "not a string VR");
    }
    if (el->length > 0 && el->value == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "value not loaded");
    }
    size_t s = 0, e = el->length;
    if (info->kind == DICOM_VRK_STRING) {
        while (s < e && el->value[s] == ' ') {
            s++;
        }
    }
    while (e > s && is_pad(el->value[e - 1])) {
        e--;
    }
    *out = ag_arena_strndup(a, e > s ? (const char *)el->value + s : "",
                            e - s);
    return *out != NULL ? AG_OK
                        : ag_error_set(err, ag_arena_fail_code(a),
                                       "out of memory");
}

int dicom_element_int(const DicomElement *el, size_t i, int64_t *out,
                      AgError *err)
{
    const uint8_t *v = el->value;
    size_t vm = dicom_element_vm(el);
    if (el->vr == DICOM_VR_IS) {
        char buf[40];
        size_t s, e;
        int rc = string_bounds(el, i, &s, &e, err);
        if (rc != AG_OK) {
            return rc;
        }
        if (e - s == 0 || e - s >= sizeof buf) {
            return ag_error_set(err, AG_ERR_PARSE, "IS value %zu is empty "
                                "or too long", i);
        }
        memcpy(buf, v + s, e - s);
        buf[e - s] = '\0';
        char *end;
        errno = 0;
        long long n = strtoll(buf, &end, 10);
        if (errno != 0 || *end != '\0') {
            return ag_error_set(err, AG_ERR_PARSE, "IS value \"%s\" is not "
                                "an integer", buf);
        }
        *out = n;
        return AG_OK;
    }
    if (i >= vm || v == NULL) {
        return ag_error_set(err, AG_ERR_NOTFOUND,
                            "element (%04x,%04x): no integer value %zu",
                            DICOM_TAG_GROUP(el->tag),
                            DICOM_TAG_ELEMENT(el->tag), i);
    }
    switch (el->vr) {
    case DICOM_VR_US:
        *out = dicom__le16(v + 2 * i);
        return AG_OK;
    case DICOM_VR_SS:
        *out = (int16_t)dicom__le16(v + 2 * i);
        return AG_OK;
    case DICOM_VR_UL:
        *out = dicom__le32(v + 4 * i);
        return AG_OK;
    case DICOM_VR_SL:
        *out = (int32_t)dicom__le32(v + 4 * i);
        return AG_OK;
    case DICOM_VR_AT:
        *out = ((int64_t)dicom__le16(v + 4 * i) << 16) |
               dicom__le16(v + 4 * i + 2);
        return AG_OK;
    case DICOM_VR_SV:
    case DICOM_VR_UV: {
        uint64_t u = (uint64_t)dicom__le32(v + 8 * i) |
                     ((uint64_t)dicom__le32(v + 8 * i + 4) << 32);
        *out = (int64_t)u;
        return AG_OK;
    }
    default:
        return ag_error_set(err, AG_ERR_INVALID,
                            "element (%04x,%04x): not an integer VR",
                            DICOM_TAG_GROUP(el->tag),
                            DICOM_TAG_ELEMENT(el->tag));
    }
}

int dicom_element_float(const DicomElement *el, size_t i, double *out,
                        AgError *err)
{
    const uint8_t *v = el->value;
    if (el->vr == DICOM_VR_DS) {
        char buf[40];
        size_t s, e;
        int rc = string_bounds(el, i, &s, &e, err);
        if (rc != AG_OK) {
            return rc;
        }
        if (e - s == 0 || e - s >= sizeof buf) {
            return ag_error_set(err, AG_ERR_PARSE,
                                "DS value %zu is empty or too long", i);
        }
        memcpy(buf, v + s, e - s);
        buf[e - s] = '\0';
        char *end;
        double d = strtod(buf, &end);
        if (*end != '\0' || !isfinite(d)) {
            return ag_error_set(err, AG_ERR_PARSE,
                                "DS value \"%s\" is not a number", buf);
        }
        *out = d;
        return AG_OK;
    }
    if (el->vr == DICOM_VR_FL || el->vr == DICOM_VR_OF ||
        el->vr == DICOM_VR_FD || el->vr == DICOM_VR_OD) {
        size_t unit = (el->vr == DICOM_VR_FL || el->vr == DICOM_VR_OF) ? 4 : 8;
        if (v == NULL || (i + 1) * unit > el->length) {
            return ag_error_set(err, AG_ERR_NOTFOUND, "no float value %zu", i);
        }
        if (unit == 4) {
            float f;
            memcpy(&f, v + 4 * i, 4);
            *out = f;
        } else {
            memcpy(out, v + 8 * i, 8);
        }
        return AG_OK;
    }
    int64_t n;
    int rc = dicom_element_int(el, i, &n, err);
    if (rc == AG_OK) {
        *out = (double)n;
    }
    return rc;
}

const char *dicom_get_string(const DicomDataset *ds, uint32_t tag,
                             AgArena *a)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    char *s = NULL;
    if (el == NULL || dicom_element_string(el, 0, a, &s, NULL) != AG_OK) {
        return NULL;
    }
    return s;
}

int dicom_get_int(const DicomDataset *ds, uint32_t tag, int64_t *out)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    if (el == NULL) {
        return AG_ERR_NOTFOUND;
    }
    return dicom_element_int(el, 0, out, NULL);
}

int dicom_element_utf8(const DicomDataset *ds, const DicomElement *el,
                       AgArena *a, char **out, AgError *err)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    if (info == NULL || (info->kind != DICOM_VRK_STRING &&
                         info->kind != DICOM_VRK_TEXT)) {
        return ag_error_set(err, AG_ERR_INVALID, "not a string VR");
    }
    if (el->length > 0 && el->value == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "value not loaded");
    }
    size_t e = el->length;
    while (e > 0 && is_pad(el->value[e - 1])) {
        e--;
    }
    /* Only the default repertoire can be copied without asking charset.c:
     * the common case, so it is the fast path. */
    bool ascii = true;
    for (size_t i = 0; i < e && ascii; i++) {
        ascii = el->value[i] < 0x80 && el->value[i] != 0x1b;
    }
    if (ascii) {
        *out = ag_arena_strndup(a, e ? (const char *)el->value : "", e);
        return *out != NULL ? AG_OK
                            : ag_error_set(err, ag_arena_fail_code(a),
                                           "out of memory");
    }
    const char *cs = dicom_dataset_charset(ds, a);
    return dicom_charset_to_utf8(cs, el->vr, el->value, e, a, out, NULL, err);
}

/* ---- person names ------------------------------------------------------ */

int dicom_pn_parse(const char *value, AgArena *a, DicomPersonName *out,
                   AgError *err)
{
    memset(out, 0, sizeof *out);
    const char *p = value;
    for (int g = 0; g < 3; g++) {
        const char *end = strchr(p, '=');
        size_t glen = end != NULL ? (size_t)(end - p) : strlen(p);
        char *group = ag_arena_strndup(a, p, glen);
        if (group == NULL) {
            return ag_error_set(err, ag_arena_fail_code(a), "out of memory");
        }
        out->group[g] = group;
        const char *c = group;
        for (int k = 0; k < 5; k++) {
            const char *cend = strchr(c, '^');
            size_t clen = cend != NULL ? (size_t)(cend - c) : strlen(c);
            char *comp = ag_arena_strndup(a, c, clen);
            if (comp == NULL) {
                return ag_error_set(err, ag_arena_fail_code(a),
                                    "out of memory");
            }
            out->comp[g][k] = comp;
            c = cend != NULL ? cend + 1 : c + clen;
        }
        if (end == NULL) {
            for (int r = g + 1; r < 3; r++) {
                for (int k = 0; k < 5; k++) {
                    out->comp[r][k] = "";
                }
            }
            break;
        }
        p = end + 1;
    }
    return AG_OK;
}
