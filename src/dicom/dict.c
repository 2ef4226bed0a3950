/* dict.c — placeholder until tools/gen_dict.py lands. */
#include "dicom.h"

const DicomDictEntry *dicom_dict_lookup(uint32_t tag) { (void)tag; return NULL; }
const DicomDictEntry *dicom_dict_find_keyword(const char *k) { (void)k; return NULL; }
const DicomDictEntry *dicom_dict_lookup_private(const char *c, uint32_t t) { (void)c; (void)t; return NULL; }
size_t dicom_dict_size(void) { return 0; }
DicomVR dicom_dict_vr(uint32_t tag)
{
    if (DICOM_TAG_ELEMENT(tag) == 0) { return DICOM_VR_UL; }
    if (DICOM_TAG_IS_PRIVATE_CREATOR(tag)) { return DICOM_VR_LO; }
    return DICOM_VR_UN;
}
