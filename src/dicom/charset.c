/* charset.c — placeholder: copies bytes (default repertoire only). */
#include "dicom.h"
#include <string.h>

int dicom_charset_to_utf8(const char *charset, DicomVR vr, const uint8_t *in,
                          size_t len, AgArena *a, char **out, size_t *out_len,
                          AgError *err)
{
    (void)charset; (void)vr;
    char *s = ag_arena_strndup(a, (const char *)in, len);
    if (s == NULL) { return ag_error_set(err, ag_arena_fail_code(a), "charset: out of memory"); }
    *out = s;
    if (out_len != NULL) { *out_len = len; }
    return AG_OK;
}
bool dicom_charset_supported(const char *charset) { return charset == NULL || *charset == 0; }
