/*
 * fuzz_json_read.c — libFuzzer target for the DICOM JSON reader
 * (dicom_json_read): every input must be read or refused with an error,
 * within the arena's budget, without touching memory it does not own.  A
 * data set that reads is written back (compact, or pretty with bulk data
 * URIs), and that output must read again and be a fixed point: writing what
 * was read from it gives the same text.
 */
#include "fuzz.h"
#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Read text into a fresh arena and write it back into out. */
static int cycle(const char *text, size_t len, const DicomJsonOptions *opt,
                 AgBuf *out)
{
    AgArena *a = ag_arena_create(64 << 20);
    if (a == NULL) {
        return AG_ERR_NOMEM;
    }
    DicomDataset *ds = NULL;
    AgError err;
    int rc = dicom_json_read(text, len, a, &ds, &err);
    if (rc == AG_OK) {
        rc = dicom_json_write(ds, opt, dicom_sink_buf, out, &err);
    }
    ag_arena_destroy(a);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    DicomJsonOptions opt = {.pretty = (size & 1) != 0};
    if (size & 2) {
        opt.bulk_uri_prefix = "https://h/bulkdata";
        opt.bulk_threshold = 16;
    }
    AgBuf first, second, third;
    ag_buf_init(&first, 256 << 20);
    ag_buf_init(&second, 256 << 20);
    ag_buf_init(&third, 256 << 20);
    if (cycle((const char *)data, size, &opt, &first) == AG_OK) {
        /* Our own output reads back (a budget may still run out) ... */
        int rc = cycle((const char *)first.data, first.len, &opt, &second);
        if (rc != AG_OK && rc != AG_ERR_LIMIT && rc != AG_ERR_NOMEM) {
            __builtin_trap();
        }
        /* ... and from then on reading and writing change nothing. */
        if (rc == AG_OK &&
            cycle((const char *)second.data, second.len, &opt, &third) ==
                AG_OK &&
            (second.len != third.len ||
             memcmp(second.data, third.data, second.len) != 0)) {
            __builtin_trap();
        }
    }
    ag_buf_deinit(&first);
    ag_buf_deinit(&second);
    ag_buf_deinit(&third);
    return 0;
}
