/*
 * dicom_int.h — internal to src/dicom/: shared between its files, not part of
 * the public API.
 */
#ifndef AG_DICOM_INT_H
#define AG_DICOM_INT_H

#include "dicom.h"

#define DICOM_DEFAULT_MAX_DEPTH 32

/* Byte-swap n bytes in place in units of `unit` bytes (1 = no-op). */
void dicom__swap(uint8_t *p, size_t n, unsigned unit);

/* Load a little-endian integer from possibly unaligned bytes. */
static inline uint16_t dicom__le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t dicom__le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint16_t dicom__be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t dicom__be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Set the dataset's parent (items). */
void dicom__dataset_set_parent(DicomDataset *ds, DicomDataset *parent);

/*
 * Append an element known to sort after every existing one (the reader's
 * fast path); falls back to a sorted insert otherwise.  AG_ERR_EXISTS for a
 * duplicate tag.
 */
int dicom__dataset_append(DicomDataset *ds, const DicomElement *el,
                          DicomElement **out);

#endif
