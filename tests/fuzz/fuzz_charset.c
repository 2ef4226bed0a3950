/*
 * fuzz_charset.c — libFuzzer target for dicom_charset_to_utf8(): the first
 * byte picks a Specific Character Set and a VR, the rest is the value.  The
 * output must stay within its bound and be NUL-terminated.
 */
#include "fuzz.h"
#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const sets[] = {
        NULL, "ISO_IR 100", "ISO_IR 192", "GB18030", "GBK", "ISO_IR 13",
        "ISO_IR 166", "ISO_IR 144", "\\ISO 2022 IR 87",
        "ISO 2022 IR 13\\ISO 2022 IR 87", "\\ISO 2022 IR 149",
        "\\ISO 2022 IR 58", "ISO 2022 IR 6\\ISO 2022 IR 100\\ISO 2022 IR 87",
        "ISO 2022 IR 100\\ISO 2022 IR 159",
    };
    static const DicomVR vrs[] = {DICOM_VR_PN, DICOM_VR_LO, DICOM_VR_LT,
                                  DICOM_VR_NONE};
    if (size < 1) {
        return 0;
    }
    const char *cs = sets[data[0] % (sizeof sets / sizeof sets[0])];
    DicomVR vr = vrs[(data[0] >> 4) % 4];
    AgArena *a = ag_arena_create(16 << 20);
    if (a == NULL) {
        return 0;
    }
    char *out = NULL;
    size_t n = 0;
    if (dicom_charset_to_utf8(cs, vr, data + 1, size - 1, a, &out, &n,
                              NULL) == AG_OK) {
        if (strlen(out) > n || n > 3 * (size - 1) + 1) {
            __builtin_trap();
        }
    }
    ag_arena_destroy(a);
    return 0;
}
