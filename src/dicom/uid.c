/* uid.c — placeholder until the UID registry lands. */
#include "dicom.h"

const DicomUidEntry *dicom_uid_lookup(const char *uid) { (void)uid; return NULL; }
size_t dicom_uid_registry_size(void) { return 0; }
const DicomUidEntry *dicom_uid_registry_at(size_t i) { (void)i; return NULL; }
bool dicom_uid_valid(const char *s, size_t len) { (void)s; return len > 0 && len <= 64; }
