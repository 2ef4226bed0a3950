/*
 * dict_int.h — the generated dictionary tables (dict_data.c, written by
 * tools/gen_dict.py from pydicom's copy of PS3.6) as seen by dict.c and
 * uid.c.  Internal to src/dicom/.
 *
 * All tables are immutable and sorted so lookups can binary-search them;
 * tools/gen_dict.py documents the exact order.  Indexes are uint16_t: the
 * generator refuses tables of more than 65535 entries.
 */
#ifndef AG_DICOM_DICT_INT_H
#define AG_DICOM_DICT_INT_H

#include "dicom.h"

/*
 * Standard entries sorted by (tag, mask descending).  Repeating-group
 * entries (PS3.5 §7.6; '60xx0010', '1000xxx0', ...) have their x digits
 * zeroed in tag and clear in mask; exact entries have mask 0xffffffff.
 */
extern const DicomDictEntry dicom__dict[];
extern const size_t dicom__dict_count;
/* Indexes into dicom__dict of the repeating-group entries (a few dozen). */
extern const uint16_t dicom__dict_masked[];
extern const size_t dicom__dict_masked_count;
/* Indexes into dicom__dict of entries with a keyword, sorted by keyword
 * (strcmp order).  Entries without a keyword are not listed. */
extern const uint16_t dicom__dict_by_keyword[];
extern const size_t dicom__dict_by_keyword_count;

/* One private creator's run of entries in dicom__private. */
typedef struct DicomPrivateCreator {
    const char *creator;    /* as in the private creator element, unpadded */
    uint32_t first;         /* index of its first entry in dicom__private */
    uint32_t count;
} DicomPrivateCreator;

/* Creators sorted by name (strcmp order). */
extern const DicomPrivateCreator dicom__private_creators[];
extern const size_t dicom__private_creators_count;
/*
 * Private entries, each creator's run sorted by (tag, mask descending).
 * (gggg,xxee) is stored as tag 0xgggg00ee, mask 0xffff00ff; the few
 * (ggxx,xxee) rows as 0xgg0000ee / 0xff0000ff; literal tags with ~0.
 * keyword is always "".
 */
extern const DicomDictEntry dicom__private[];
extern const size_t dicom__private_count;
/* Indexes into dicom__private of the (ggxx,xxee) rows. */
extern const uint16_t dicom__private_masked[];
extern const size_t dicom__private_masked_count;

/* UID registry (PS3.6 Annex A) sorted by UID (strcmp order). */
extern const DicomUidEntry dicom__uids[];
extern const size_t dicom__uids_count;

#endif
