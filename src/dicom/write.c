#include "dicom_int.h"

#include <errno.h>
#include <unistd.h>

int dicom_sink_fd(void *ctx, const void *data, size_t len, AgError *err)
{
    return ag_write_all(*(int *)ctx, data, len, err);
}

int dicom_sink_buf(void *ctx, const void *data, size_t len, AgError *err)
{
    int rc = ag_buf_append(ctx, data, len);
    return rc == AG_OK ? rc : ag_error_set(err, rc, "output buffer: %s",
                                           ag_err_name(rc));
}
