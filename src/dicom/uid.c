/*
 * uid.c — the UID registry of PS3.6 Annex A (generated into dict_data.c by
 * tools/gen_dict.py) and the UID syntax of PS3.5 §9.1.  Read-only and
 * thread-safe.
 */
#include "dict_int.h"

#include <string.h>

#define UID_MAX_LEN 64   /* PS3.5 §9.1 */

/* Compare the registry's uid with s[0..n) (not NUL-terminated). */
static int uid_cmp(const char *table, const char *s, size_t n)
{
    int c = strncmp(table, s, n);
    if (c != 0) {
        return c;
    }
    return table[n] == '\0' ? 0 : 1;   /* table is longer: it sorts after */
}

const DicomUidEntry *dicom_uid_lookup(const char *uid)
{
    if (uid == NULL) {
        return NULL;
    }
    size_t n = strlen(uid);
    while (n > 0 && uid[n - 1] == ' ') {
        n--;   /* UI pads with NUL (PS3.5 §6.2), but senders use spaces too */
    }
    size_t lo = 0;
    size_t hi = dicom__uids_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = uid_cmp(dicom__uids[mid].uid, uid, n);
        if (c == 0) {
            return &dicom__uids[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

size_t dicom_uid_registry_size(void)
{
    return dicom__uids_count;
}

const DicomUidEntry *dicom_uid_registry_at(size_t i)
{
    return i < dicom__uids_count ? &dicom__uids[i] : NULL;
}

/*
 * PS3.5 §9.1: components of digits separated by '.', none empty, none with
 * a leading zero unless it is the single digit "0"; at most 64 characters.
 */
bool dicom_uid_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > UID_MAX_LEN) {
        return false;
    }
    size_t start = 0;   /* first character of the current component */
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            size_t n = i - start;
            if (n == 0 || (n > 1 && s[start] == '0')) {
                return false;
            }
            start = i + 1;
        } else if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}
