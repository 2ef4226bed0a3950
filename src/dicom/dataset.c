/*
 * dataset.c — DicomDataset: elements kept sorted by tag in an arena array.
 *
 * The reader appends in file order, which is ascending for well-formed data
 * (PS3.5 §7.1), so the common path is an O(1) append; anything else is a
 * binary-search insert.
 */
#include "dicom_int.h"

#include <string.h>

struct DicomDataset {
    AgArena *arena;
    DicomDataset *parent;
    DicomElement *elems;
    uint32_t count;
    uint32_t cap;
    bool item_undefined_length;
    uint32_t item_length;
};

DicomDataset *dicom_dataset_create(AgArena *a)
{
    DicomDataset *ds = ag_arena_zalloc(a, sizeof *ds);
    if (ds != NULL) {
        ds->arena = a;
    }
    return ds;
}

AgArena *dicom_dataset_arena(const DicomDataset *ds)
{
    return ds->arena;
}

DicomDataset *dicom_dataset_parent(const DicomDataset *ds)
{
    return ds->parent;
}

void dicom__dataset_set_parent(DicomDataset *ds, DicomDataset *parent)
{
    ds->parent = parent;
}

size_t dicom_dataset_count(const DicomDataset *ds)
{
    return ds->count;
}

DicomElement *dicom_dataset_at(const DicomDataset *ds, size_t i)
{
    return i < ds->count ? &ds->elems[i] : NULL;
}

bool dicom_dataset_item_undefined_length(const DicomDataset *ds)
{
    return ds->item_undefined_length;
}

void dicom_dataset_set_item_undefined_length(DicomDataset *ds, bool on)
{
    ds->item_undefined_length = on;
}

/* Index of the first element with tag >= tag. */
static uint32_t lower_bound(const DicomDataset *ds, uint32_t tag)
{
    uint32_t lo = 0, hi = ds->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ds->elems[mid].tag < tag) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

DicomElement *dicom_dataset_find(const DicomDataset *ds, uint32_t tag)
{
    if (ds == NULL) {
        return NULL;
    }
    uint32_t i = lower_bound(ds, tag);
    return i < ds->count && ds->elems[i].tag == tag ? &ds->elems[i] : NULL;
}

static int ensure_room(DicomDataset *ds)
{
    if (ds->count < ds->cap) {
        return AG_OK;
    }
    if (ds->cap >= UINT32_MAX / 2) {
        return AG_ERR_LIMIT;
    }
    /* Items are usually small; top-level data sets hold ~100 elements. */
    uint32_t cap = ds->cap != 0 ? ds->cap * 2 : ds->parent != NULL ? 8 : 64;
    DicomElement *e = ag_arena_grow(ds->arena, ds->elems, ds->count, cap,
                                    sizeof *e);
    if (e == NULL) {
        return ag_arena_fail_code(ds->arena);
    }
    ds->elems = e;
    ds->cap = cap;
    return AG_OK;
}

static int insert_at(DicomDataset *ds, uint32_t i, const DicomElement *el,
                     DicomElement **out)
{
    int rc = ensure_room(ds);
    if (rc != AG_OK) {
        return rc;
    }
    memmove(&ds->elems[i + 1], &ds->elems[i],
            (ds->count - i) * sizeof ds->elems[0]);
    ds->elems[i] = *el;
    ds->count++;
    if (out != NULL) {
        *out = &ds->elems[i];
    }
    return AG_OK;
}

int dicom__dataset_append(DicomDataset *ds, const DicomElement *el,
                          DicomElement **out)
{
    if (ds->count == 0 || ds->elems[ds->count - 1].tag < el->tag) {
        int rc = ensure_room(ds);
        if (rc != AG_OK) {
            return rc;
        }
        DicomElement *dst = &ds->elems[ds->count++];
        *dst = *el;
        if (out != NULL) {
            *out = dst;
        }
        return AG_OK;
    }
    uint32_t i = lower_bound(ds, el->tag);
    if (i < ds->count && ds->elems[i].tag == el->tag) {
        return AG_ERR_EXISTS;
    }
    return insert_at(ds, i, el, out);
}

int dicom_dataset_put(DicomDataset *ds, const DicomElement *el,
                      DicomElement **out)
{
    uint32_t i = lower_bound(ds, el->tag);
    if (i < ds->count && ds->elems[i].tag == el->tag) {
        ds->elems[i] = *el;
        if (out != NULL) {
            *out = &ds->elems[i];
        }
        return AG_OK;
    }
    return insert_at(ds, i, el, out);
}

int dicom_dataset_remove(DicomDataset *ds, uint32_t tag)
{
    uint32_t i = lower_bound(ds, tag);
    if (i >= ds->count || ds->elems[i].tag != tag) {
        return AG_ERR_NOTFOUND;
    }
    memmove(&ds->elems[i], &ds->elems[i + 1],
            (ds->count - i - 1) * sizeof ds->elems[0]);
    ds->count--;
    return AG_OK;
}

const char *dicom_dataset_charset(const DicomDataset *ds, AgArena *a)
{
    for (const DicomDataset *d = ds; d != NULL; d = d->parent) {
        const DicomElement *el =
            dicom_dataset_find(d, DICOM_TAG_SPECIFIC_CHARACTER_SET);
        if (el != NULL) {
            char *s = NULL;
            if (dicom_element_text(el, a, &s, NULL) != AG_OK) {
                return NULL;
            }
            return s;
        }
    }
    return NULL;
}

void dicom__dataset_set_item_length(DicomDataset *ds, uint32_t len)
{
    ds->item_length = len;
}

uint32_t dicom__dataset_item_length(const DicomDataset *ds)
{
    return ds->item_length;
}
