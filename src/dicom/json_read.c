/* json_read.c — placeholder. */
#include "dicom.h"
int dicom_json_read(const char *json, size_t len, AgArena *a,
                    DicomDataset **out, AgError *err)
{
    (void)json; (void)len; (void)a; (void)out;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "json: not yet");
}
