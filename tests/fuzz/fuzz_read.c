/*
 * fuzz_read.c — libFuzzer target for the Part 10 reader (dicom_read_buffer):
 * every input must be read or refused with an error, within the arena's
 * budget, without touching memory it does not own.  A data set that reads
 * is written back in each native syntax and dumped, so the writer and the
 * accessors see the same hostile structures.
 */
#include "fuzz.h"
#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const syntaxes[] = {
        DICOM_TS_IMPLICIT_LE, DICOM_TS_EXPLICIT_LE, DICOM_TS_EXPLICIT_BE,
        DICOM_TS_DEFLATED_LE,
    };
    AgArena *a = ag_arena_create(64 << 20);
    if (a == NULL) {
        return 0;
    }
    DicomReadOptions opt = {.bulk_threshold = (size & 1) ? 64 : 0,
                            .stop_before_pixels = (size & 2) != 0};
    DicomFile *f = NULL;
    AgError err;
    if (dicom_read_buffer(data, size, &opt, a, &f, &err) == AG_OK) {
        AgBuf out;
        ag_buf_init(&out, 256 << 20);
        const char *ts = syntaxes[size % 4];
        dicom_write_file(f, ts, NULL, dicom_sink_buf, &out, &err);
        ag_buf_reset(&out);
        dicom_dump(f->dataset, 64, dicom_sink_buf, &out, &err);
        ag_buf_deinit(&out);
    }
    ag_arena_destroy(a);
    return 0;
}
