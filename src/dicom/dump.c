/*
 * dump.c — a dcmdump-like text listing of a data set.  The line format is
 * dcmdump's, so that people (and tests) can compare the two:
 *   (gggg,eeee) VR value  # length, VM Keyword
 */
#include "dicom_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct Dump {
    AgBuf line;
    AgArena *scratch;
    size_t max_value;
    DicomSink sink;
    void *ctx;
    AgError *err;
} Dump;

static int emit(Dump *d, int depth, uint32_t tag, const char *vr,
                const char *value, uint32_t length, size_t vm,
                const char *keyword)
{
    ag_buf_reset(&d->line);
    int rc = ag_buf_printf(&d->line, "%*s(%04x,%04x) %s ", depth * 2, "",
                           DICOM_TAG_GROUP(tag), DICOM_TAG_ELEMENT(tag), vr);
    size_t start = d->line.len;
    if (rc == AG_OK) {
        rc = ag_buf_append_str(&d->line, value);
    }
    while (rc == AG_OK && d->line.len - start < 40) {
        rc = ag_buf_append(&d->line, " ", 1);
    }
    if (rc == AG_OK) {
        char len[16];
        if (length == DICOM_UNDEFINED_LENGTH) {
            snprintf(len, sizeof len, "u/l");
        } else {
            snprintf(len, sizeof len, "%3" PRIu32, length);
        }
        rc = ag_buf_printf(&d->line, " # %s, %zu %s\n", len, vm, keyword);
    }
    if (rc != AG_OK) {
        return ag_error_set(d->err, rc, "dump: out of memory");
    }
    return d->sink(d->ctx, d->line.data, d->line.len, d->err);
}

static const char *keyword_of(const DicomDataset *ds, uint32_t tag)
{
    if (DICOM_TAG_IS_PRIVATE(tag)) {
        if (DICOM_TAG_IS_PRIVATE_CREATOR(tag)) {
            return "PrivateCreator";
        }
        uint32_t ctag = DICOM_TAG(DICOM_TAG_GROUP(tag),
                                  DICOM_TAG_ELEMENT(tag) >> 8);
        const DicomElement *c = dicom_dataset_find(ds, ctag);
        char *creator = NULL;
        if (c != NULL && c->value != NULL &&
            dicom_element_text(c, dicom_dataset_arena(ds), &creator,
                               NULL) == AG_OK) {
            const DicomDictEntry *e = dicom_dict_lookup_private(creator, tag);
            if (e != NULL && e->keyword != NULL && e->keyword[0] != '\0') {
                return e->keyword;
            }
        }
        return "Unknown Tag & Data";
    }
    const DicomDictEntry *e = dicom_dict_lookup(tag);
    return e != NULL ? e->keyword : "Unknown Tag & Data";
}

/* Append the value's text form to b, stopping after max characters. */
static int format_value(Dump *d, const DicomDataset *ds,
                        const DicomElement *el, AgBuf *b)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    if (el->length == 0) {
        return ag_buf_append_str(b, "(no value available)");
    }
    if (el->flags & DICOM_EL_NOT_LOADED) {
        return ag_buf_append_str(b, "(not loaded)");
    }
    if (info->kind == DICOM_VRK_STRING || info->kind == DICOM_VRK_TEXT) {
        char *s = NULL;
        if (dicom_element_utf8(ds, el, d->scratch, &s, NULL) != AG_OK) {
            return ag_buf_append_str(b, "(undecodable)");
        }
        size_t n = strlen(s);
        int rc = ag_buf_append(b, "[", 1);
        if (rc == AG_OK) {
            rc = ag_buf_append(b, s, n > d->max_value ? d->max_value : n);
        }
        if (rc == AG_OK) {
            rc = ag_buf_append_str(b, n > d->max_value ? "...]" : "]");
        }
        return rc;
    }
    size_t vm = dicom_element_vm(el);
    size_t unit = info->unit;
    if (info->kind == DICOM_VRK_BULK) {
        vm = el->length / unit;
    }
    int rc = AG_OK;
    for (size_t i = 0; i < vm && rc == AG_OK; i++) {
        if (b->len > d->max_value) {
            return ag_buf_append_str(b, "...");
        }
        if (i > 0) {
            rc = ag_buf_append(b, "\\", 1);
        }
        const uint8_t *p = el->value + i * unit;
        int64_t iv;
        double fv;
        switch (el->vr) {
        case DICOM_VR_AT:
            rc = ag_buf_printf(b, "(%04x,%04x)", dicom__le16(el->value + 4 * i),
                               dicom__le16(el->value + 4 * i + 2));
            break;
        case DICOM_VR_FL: case DICOM_VR_FD:
        case DICOM_VR_OF: case DICOM_VR_OD:
            if (info->kind == DICOM_VRK_BULK) {
                float f32;
                if (unit == 4) {
                    memcpy(&f32, p, 4);
                    fv = f32;
                } else {
                    memcpy(&fv, p, 8);
                }
            } else {
                dicom_element_float(el, i, &fv, NULL);
            }
            rc = ag_buf_printf(b, "%.17g", fv);
            break;
        case DICOM_VR_OB: case DICOM_VR_UN:
            rc = ag_buf_printf(b, "%02x", p[0]);
            break;
        case DICOM_VR_OW:
            rc = ag_buf_printf(b, "%04x", dicom__le16(p));
            break;
        case DICOM_VR_OL:
            rc = ag_buf_printf(b, "%08" PRIx32, dicom__le32(p));
            break;
        case DICOM_VR_OV:
            rc = ag_buf_printf(b, "%016" PRIx64,
                               (uint64_t)dicom__le32(p) |
                               ((uint64_t)dicom__le32(p + 4) << 32));
            break;
        case DICOM_VR_UV:
            dicom_element_int(el, i, &iv, NULL);
            rc = ag_buf_printf(b, "%" PRIu64, (uint64_t)iv);
            break;
        default:
            dicom_element_int(el, i, &iv, NULL);
            rc = ag_buf_printf(b, "%" PRId64, iv);
            break;
        }
    }
    return rc;
}

static int dump_dataset(Dump *d, const DicomDataset *ds, int depth);

static int dump_element(Dump *d, const DicomDataset *ds,
                        const DicomElement *el, int depth)
{
    char vr[3];
    dicom_vr_str(el->vr, vr);
    const char *kw = keyword_of(ds, el->tag);
    char what[96];
    int rc;
    if (el->vr == DICOM_VR_SQ) {
        bool undef = el->flags & DICOM_EL_UNDEFINED_LENGTH;
        snprintf(what, sizeof what, "(Sequence with %s length #=%u)",
                 undef ? "undefined" : "explicit", el->nitems);
        rc = emit(d, depth, el->tag, vr, what, el->length, 1, kw);
        for (uint32_t i = 0; i < el->nitems && rc == AG_OK; i++) {
            DicomDataset *item = el->items[i];
            bool iu = dicom_dataset_item_undefined_length(item);
            snprintf(what, sizeof what, "(Item with %s length #=%zu)",
                     iu ? "undefined" : "explicit",
                     dicom_dataset_count(item));
            rc = emit(d, depth + 1, DICOM_TAG_ITEM, "na", what,
                      iu ? DICOM_UNDEFINED_LENGTH
                         : dicom__dataset_item_length(item), 1, "Item");
            if (rc == AG_OK) {
                rc = dump_dataset(d, item, depth + 2);
            }
            if (rc == AG_OK) {
                rc = emit(d, depth + 1, DICOM_TAG_ITEM_END, "na",
                          "(ItemDelimitationItem)", 0, 0,
                          "ItemDelimitationItem");
            }
        }
        if (rc == AG_OK) {
            rc = emit(d, depth, DICOM_TAG_SEQ_END, "na",
                      "(SequenceDelimitationItem)", 0, 0,
                      "SequenceDelimitationItem");
        }
        return rc;
    }
    if (el->flags & DICOM_EL_ENCAPSULATED) {
        snprintf(what, sizeof what, "(PixelSequence #=%u)", el->nfrags);
        rc = emit(d, depth, el->tag, vr, what, el->length, 1, kw);
        for (uint32_t i = 0; i < el->nfrags && rc == AG_OK; i++) {
            const DicomFragment *f = &el->frags[i];
            snprintf(what, sizeof what, "(fragment of %u bytes)", f->length);
            rc = emit(d, depth + 1, DICOM_TAG_ITEM, "pi", what, f->length, 1,
                      "Item");
        }
        if (rc == AG_OK) {
            rc = emit(d, depth, DICOM_TAG_SEQ_END, "na",
                      "(SequenceDelimitationItem)", 0, 0,
                      "SequenceDelimitationItem");
        }
        return rc;
    }
    AgBuf value;
    ag_buf_init(&value, 0);
    rc = format_value(d, ds, el, &value);
    if (rc == AG_OK) {
        rc = ag_buf_append(&value, "", 1);   /* NUL */
    }
    if (rc != AG_OK) {
        ag_buf_deinit(&value);
        return ag_error_set(d->err, rc, "dump: out of memory");
    }
    rc = emit(d, depth, el->tag, vr, (const char *)value.data, el->length,
              dicom_element_vm(el), kw);
    ag_buf_deinit(&value);
    return rc;
}

static int dump_dataset(Dump *d, const DicomDataset *ds, int depth)
{
    size_t n = dicom_dataset_count(ds);
    for (size_t i = 0; i < n; i++) {
        int rc = dump_element(d, ds, dicom_dataset_at(ds, i), depth);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

int dicom_dump(const DicomDataset *ds, size_t max_value, DicomSink sink,
               void *ctx, AgError *err)
{
    Dump d = {.max_value = max_value ? max_value : 64, .sink = sink,
              .ctx = ctx, .err = err};
    ag_buf_init(&d.line, 0);
    d.scratch = ag_arena_create(0);
    if (d.scratch == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "dump: out of memory");
    }
    int rc = dump_dataset(&d, ds, 0);
    ag_arena_destroy(d.scratch);
    ag_buf_deinit(&d.line);
    return rc;
}
