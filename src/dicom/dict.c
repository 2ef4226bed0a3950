/*
 * dict.c — lookups in the PS3.6 data dictionary and in the private
 * dictionary.  The tables are generated (dict_data.c, tools/gen_dict.py);
 * this file only searches them.  Everything here is read-only and
 * thread-safe.
 */
#include "dict_int.h"

#include <string.h>

#define FULL_MASK 0xffffffffu
#define BLOCK_MASK 0xffff00ffu   /* private (gggg,xxee): block byte free */

/*
 * Generic entries for tags PS3.6 does not list one by one.  Their tag and
 * mask describe the family: every (gggg,0000) is a group length (PS3.5
 * §7.2); private creators are (gggg,0010-00FF) of an odd group (PS3.5
 * §7.8.1), which the mask only approximates — the lookup checks the range.
 */
static const DicomDictEntry GROUP_LENGTH = {
    0x00000000, 0x0000ffff, DICOM_VR_UL, DICOM_VR_NONE, DICOM_VR_NONE,
    "1", "GenericGroupLength", "Group Length", false,
};
static const DicomDictEntry PRIVATE_CREATOR = {
    0x00010000, 0x0001ff00, DICOM_VR_LO, DICOM_VR_NONE, DICOM_VR_NONE,
    "1", "PrivateCreator", "Private Creator", false,
};

/* Index of the first entry in tab[lo, hi) whose tag is >= tag. */
static size_t lower_bound(const DicomDictEntry *tab, size_t lo, size_t hi,
                          uint32_t tag)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tab[mid].tag < tag) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/*
 * First entry in tab[lo, hi) whose stored tag is key and whose mask accepts
 * tag.  Entries with equal stored tags sort by mask descending, so the most
 * specific one wins (an exact (0028,0400) before the '002804x0' repeater).
 */
static const DicomDictEntry *find_key(const DicomDictEntry *tab, size_t lo,
                                      size_t hi, uint32_t key, uint32_t tag)
{
    for (size_t i = lower_bound(tab, lo, hi, key);
         i < hi && tab[i].tag == key; i++) {
        if ((tag & tab[i].mask) == key) {
            return &tab[i];
        }
    }
    return NULL;
}

const DicomDictEntry *dicom_dict_lookup(uint32_t tag)
{
    const DicomDictEntry *e = find_key(dicom__dict, 0, dicom__dict_count,
                                       tag, tag);
    if (e != NULL && e->mask == FULL_MASK) {
        return e;
    }
    /* (gggg,0000) is a group length in every group (PS3.5 §7.2), even where
     * a repeater's pattern covers it ('1010xxxx' Zonal Map, '1000xxx0'). */
    if (DICOM_TAG_ELEMENT(tag) == 0x0000) {
        return &GROUP_LENGTH;
    }
    if (e != NULL) {
        return e;   /* a repeater at its zeroed tag: (6000,0010) */
    }
    /* Repeating groups (PS3.5 §7.6) live in even groups only: an odd
     * (6001,0010) is a private creator, not Overlay Rows. */
    if (!DICOM_TAG_IS_PRIVATE(tag)) {
        for (size_t i = 0; i < dicom__dict_masked_count; i++) {
            e = &dicom__dict[dicom__dict_masked[i]];
            if ((tag & e->mask) == e->tag) {
                return e;
            }
        }
    }
    if (DICOM_TAG_IS_PRIVATE_CREATOR(tag)) {
        return &PRIVATE_CREATOR;
    }
    return NULL;
}

const DicomDictEntry *dicom_dict_find_keyword(const char *keyword)
{
    if (keyword == NULL) {
        return NULL;
    }
    size_t lo = 0;
    size_t hi = dicom__dict_by_keyword_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const DicomDictEntry *e = &dicom__dict[dicom__dict_by_keyword[mid]];
        int c = strcmp(e->keyword, keyword);
        if (c == 0) {
            return e;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* Compare the table's creator with s[0..n) (not NUL-terminated). */
static int creator_cmp(const char *table, const char *s, size_t n)
{
    int c = strncmp(table, s, n);
    if (c != 0) {
        return c;
    }
    return table[n] == '\0' ? 0 : 1;   /* table is longer: it sorts after */
}

static const DicomPrivateCreator *find_creator(const char *s, size_t n)
{
    size_t lo = 0;
    size_t hi = dicom__private_creators_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const DicomPrivateCreator *pc = &dicom__private_creators[mid];
        int c = creator_cmp(pc->creator, s, n);
        if (c == 0) {
            return pc;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/*
 * Candidates in the order pydicom's get_private_entry() tries them: the
 * literal tag, (gggg,xxee), then (ggxx,xxee).
 */
const DicomDictEntry *dicom_dict_lookup_private(const char *creator,
                                                uint32_t tag)
{
    if (creator == NULL || !DICOM_TAG_IS_PRIVATE(tag)) {
        return NULL;
    }
    size_t n = strlen(creator);
    while (n > 0 && creator[n - 1] == ' ') {
        n--;   /* LO values are space-padded to even length (PS3.5 §6.2) */
    }
    const DicomPrivateCreator *pc = find_creator(creator, n);
    if (pc == NULL) {
        return NULL;
    }
    size_t lo = pc->first;
    size_t hi = (size_t)pc->first + pc->count;
    const DicomDictEntry *e = find_key(dicom__private, lo, hi, tag, tag);
    if (e == NULL && (tag & BLOCK_MASK) != tag) {
        e = find_key(dicom__private, lo, hi, tag & BLOCK_MASK, tag);
    }
    for (size_t i = 0; e == NULL && i < dicom__private_masked_count; i++) {
        size_t k = dicom__private_masked[i];
        if (k >= lo && k < hi &&
            (tag & dicom__private[k].mask) == dicom__private[k].tag) {
            e = &dicom__private[k];
        }
    }
    return e;
}

size_t dicom_dict_size(void)
{
    return dicom__dict_count;
}

DicomVR dicom_dict_vr(uint32_t tag)
{
    const DicomDictEntry *e = dicom_dict_lookup(tag);
    /* Delimiters have no VR; UN keeps an implicit reader that meets one as
     * an element from inventing a type. */
    if (e == NULL || e->vr == DICOM_VR_NONE) {
        return DICOM_VR_UN;
    }
    return e->vr;
}
