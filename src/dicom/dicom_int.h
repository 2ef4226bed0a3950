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

/* An item's defined length as read (for listings); 0 if unknown. */
void dicom__dataset_set_item_length(DicomDataset *ds, uint32_t len);
uint32_t dicom__dataset_item_length(const DicomDataset *ds);

/* Set the dataset's parent (items). */
void dicom__dataset_set_parent(DicomDataset *ds, DicomDataset *parent);

/*
 * Append an element known to sort after every existing one (the reader's
 * fast path); falls back to a sorted insert otherwise.  AG_ERR_EXISTS for a
 * duplicate tag.
 */
int dicom__dataset_append(DicomDataset *ds, const DicomElement *el,
                          DicomElement **out);

/* ---- input: a forward-only byte stream over memory or an fd ---------- */

#include <string.h>
#include <zlib.h>

/*
 * DicomInput gives the reader a window of contiguous bytes over a memory
 * buffer (zero-copy), a file descriptor (buffered), or either of those seen
 * through raw inflate (Deflated Explicit VR Little Endian, PS3.5 §A.5).
 * Offsets are logical: for deflated data they count inflated bytes.
 */
typedef struct DicomInput {
    /* raw source: memory (fd < 0) or file descriptor */
    const uint8_t *mem;
    size_t mem_len;
    size_t mem_pos;       /* raw bytes consumed from mem */
    int fd;
    bool fd_seekable;
    uint64_t known_end;   /* logical size if known, else UINT64_MAX */
    /* window of unread logical bytes: win[lo..hi) is at offset pos */
    uint8_t *buf;         /* heap window (NULL when win == mem) */
    size_t buf_cap;
    const uint8_t *win;
    size_t lo, hi;
    uint64_t pos;
    bool raw_eof;
    /* inflate */
    bool inflating;
    bool z_done;
    z_stream zs;
    uint8_t *zbuf;        /* raw compressed bytes read from fd */
    size_t zcap;
    uint64_t max_inflated;
} DicomInput;

void dicom__input_init_mem(DicomInput *in, const uint8_t *p, size_t n);
int dicom__input_init_fd(DicomInput *in, int fd, AgError *err);
void dicom__input_deinit(DicomInput *in);
/* Everything after the current position is raw-deflated (PS3.5 §A.5). */
int dicom__input_start_inflate(DicomInput *in, AgError *err);
/* Make n bytes available at *p.  AG_ERR_EOF if the stream ends first
 * (*avail then says how many there are), AG_ERR_IO/NOMEM/PARSE. */
int dicom__input_peek_slow(DicomInput *in, size_t n, const uint8_t **p,
                           size_t *avail, AgError *err);
static inline int dicom__input_peek(DicomInput *in, size_t n,
                                    const uint8_t **p, size_t *avail,
                                    AgError *err)
{
    if (in->hi - in->lo >= n) {   /* hot path: one element header */
        *p = in->win + in->lo;
        if (avail != NULL) {
            *avail = in->hi - in->lo;
        }
        return AG_OK;
    }
    return dicom__input_peek_slow(in, n, p, avail, err);
}
static inline void dicom__input_advance(DicomInput *in, size_t n)
{
    in->lo += n;
    in->pos += n;
}
/* Copy n bytes out; AG_ERR_EOF if truncated. */
int dicom__input_read_slow(DicomInput *in, void *dst, size_t n, AgError *err);
static inline int dicom__input_read(DicomInput *in, void *dst, size_t n,
                                    AgError *err)
{
    if (n <= in->hi - in->lo) {
        memcpy(dst, in->win + in->lo, n);
        dicom__input_advance(in, n);
        return AG_OK;
    }
    return dicom__input_read_slow(in, dst, n, err);
}
int dicom__input_skip(DicomInput *in, uint64_t n, AgError *err);
static inline uint64_t dicom__input_pos(const DicomInput *in)
{
    return in->pos;
}
/* Bytes left if known, else UINT64_MAX. */
static inline uint64_t dicom__input_remaining(const DicomInput *in)
{
    return in->known_end == UINT64_MAX ? UINT64_MAX
                                       : in->known_end - in->pos;
}

#endif
