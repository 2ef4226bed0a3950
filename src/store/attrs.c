/*
 * attrs.c — the attributes the index holds of an instance (PS3.4 C.6 keys
 * and QIDO-RS PS3.18 Table 10.6.1-5), extracted as UTF-8, and identifier
 * validation at the door (SECURITY.md rule 3).
 */
#include "store_int.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

/* A string attribute as UTF-8, or NULL when absent/empty. */
static const char *text(const DicomDataset *ds, uint32_t tag, AgArena *a)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    char *s = NULL;
    if (el == NULL || el->length == 0 ||
        dicom_element_utf8(ds, el, a, &s, NULL) != AG_OK || s[0] == '\0') {
        return NULL;
    }
    return s;
}

/* First value of a (possibly multi-valued) string attribute. */
static const char *first(const DicomDataset *ds, uint32_t tag, AgArena *a)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    char *s = NULL;
    if (el == NULL || el->length == 0 ||
        dicom_element_string(el, 0, a, &s, NULL) != AG_OK || s[0] == '\0') {
        return NULL;
    }
    return s;
}

static int64_t integer(const DicomDataset *ds, uint32_t tag, int64_t dflt)
{
    const DicomElement *el = dicom_dataset_find(ds, tag);
    int64_t v;
    if (el == NULL || dicom_element_int(el, 0, &v, NULL) != AG_OK) {
        return dflt;
    }
    return v;
}

char *store__pn_normalize(const char *pn, AgArena *a)
{
    if (pn == NULL) {
        return NULL;
    }
    size_t n = strcspn(pn, "=");   /* the alphabetic group */
    char *out = ag_arena_strndup(a, pn, n);
    if (out == NULL) {
        return NULL;
    }
    for (char *p = out; *p != '\0'; p++) {
        *p = (char)toupper((unsigned char)*p);
    }
    while (n > 0 && (out[n - 1] == '^' || out[n - 1] == ' ')) {
        out[--n] = '\0';
    }
    return out;
}

static int need_uid(const char *uid, const char *what, AgError *err)
{
    if (uid == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "%s is missing", what);
    }
    if (!dicom_uid_valid(uid, strlen(uid))) {
        /* Quote a bounded, printable copy: the value came from outside. */
        char shown[72];
        size_t i = 0;
        for (; uid[i] != '\0' && i < 64; i++) {
            unsigned char c = (unsigned char)uid[i];
            shown[i] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
        }
        shown[i] = '\0';
        return ag_error_set(err, AG_ERR_INVALID,
                            "%s \"%s\" is not a valid UID", what, shown);
    }
    return AG_OK;
}

int store__attrs_extract(const DicomFile *f, AgArena *a, StoreAttrs *o,
                         AgError *err)
{
    const DicomDataset *ds = f->dataset;
    memset(o, 0, sizeof *o);
    o->sop_uid = first(ds, DICOM_TAG_SOP_INSTANCE_UID, a);
    o->sop_class_uid = first(ds, DICOM_TAG_SOP_CLASS_UID, a);
    o->study_uid = first(ds, DICOM_TAG_STUDY_INSTANCE_UID, a);
    o->series_uid = first(ds, DICOM_TAG_SERIES_INSTANCE_UID, a);
    int rc = need_uid(o->sop_uid, "SOP Instance UID (0008,0018)", err);
    if (rc == AG_OK) {
        rc = need_uid(o->sop_class_uid, "SOP Class UID (0008,0016)", err);
    }
    if (rc == AG_OK) {
        rc = need_uid(o->study_uid, "Study Instance UID (0020,000D)", err);
    }
    if (rc == AG_OK) {
        rc = need_uid(o->series_uid, "Series Instance UID (0020,000E)", err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    /* PS3.10 §7.1 wants the meta group to agree with the data set; some
     * writers get it wrong.  The data set is authoritative: keep the
     * instance (refusing it would lose a study) and say so. */
    const char *media = first(f->meta, DICOM_TAG_MEDIA_SOP_INSTANCE_UID, a);
    if (media != NULL && strcmp(media, o->sop_uid) != 0) {
        ag_log(AG_LOG_WARN, "store", "instance %s: Media Storage SOP "
               "Instance UID (0002,0003) differs; using (0008,0018)",
               o->sop_uid);
    }
    o->transfer_syntax = f->ts_uid[0] ? f->ts_uid : DICOM_TS_IMPLICIT_LE;

    o->patient_id = text(ds, DICOM_TAG_PATIENT_ID, a);
    if (o->patient_id == NULL) {
        o->patient_id = "";   /* Type 2: may be empty */
    }
    o->issuer = text(ds, DICOM_TAG(0x0010, 0x0021), a);
    if (o->issuer == NULL) {
        o->issuer = "";
    }
    o->patient_name = text(ds, DICOM_TAG(0x0010, 0x0010), a);
    o->patient_name_norm = store__pn_normalize(o->patient_name, a);
    o->birth_date = first(ds, DICOM_TAG(0x0010, 0x0030), a);
    o->sex = first(ds, DICOM_TAG(0x0010, 0x0040), a);

    o->study_date = first(ds, DICOM_TAG(0x0008, 0x0020), a);
    o->study_time = first(ds, DICOM_TAG(0x0008, 0x0030), a);
    o->accession = text(ds, DICOM_TAG(0x0008, 0x0050), a);
    o->study_id = text(ds, DICOM_TAG(0x0020, 0x0010), a);
    o->study_description = text(ds, DICOM_TAG(0x0008, 0x1030), a);
    o->referring_name = text(ds, DICOM_TAG(0x0008, 0x0090), a);
    o->referring_name_norm = store__pn_normalize(o->referring_name, a);

    o->modality = first(ds, DICOM_TAG(0x0008, 0x0060), a);
    o->series_number = integer(ds, DICOM_TAG(0x0020, 0x0011), INT64_MIN);
    o->series_description = text(ds, DICOM_TAG(0x0008, 0x103e), a);
    o->body_part = first(ds, DICOM_TAG(0x0018, 0x0015), a);
    o->series_date = first(ds, DICOM_TAG(0x0008, 0x0021), a);
    o->series_time = first(ds, DICOM_TAG(0x0008, 0x0031), a);
    o->station = text(ds, DICOM_TAG(0x0008, 0x1010), a);
    o->institution = text(ds, DICOM_TAG(0x0008, 0x0080), a);
    o->department = text(ds, DICOM_TAG(0x0008, 0x1040), a);
    o->requesting_service = text(ds, DICOM_TAG(0x0032, 0x1033), a);
    o->manufacturer = text(ds, DICOM_TAG(0x0008, 0x0070), a);

    o->content_date = first(ds, DICOM_TAG(0x0008, 0x0023), a);
    o->content_time = first(ds, DICOM_TAG(0x0008, 0x0033), a);
    o->instance_number = integer(ds, DICOM_TAG(0x0020, 0x0013), INT64_MIN);
    o->rows = integer(ds, DICOM_TAG(0x0028, 0x0010), INT64_MIN);
    o->columns = integer(ds, DICOM_TAG(0x0028, 0x0011), INT64_MIN);
    o->frames = integer(ds, DICOM_TAG(0x0028, 0x0008), INT64_MIN);
    return AG_OK;
}
