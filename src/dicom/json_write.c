/* json_write.c — placeholder. */
#include "dicom.h"
int dicom_json_write(const DicomDataset *ds, const DicomJsonOptions *opt,
                     DicomSink sink, void *ctx, AgError *err)
{
    (void)ds; (void)opt; (void)sink; (void)ctx;
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "json: not yet");
}
