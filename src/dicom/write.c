/*
 * write.c — Part 10 files and bare data sets in the uncompressed transfer
 * syntaxes, plus data sets whose pixel data is already encapsulated
 * (PS3.10 §7, PS3.5 §7).
 *
 * Values are held little-endian; big endian output swaps them per VR unit.
 * Sequences and items keep the defined/undefined length encoding they were
 * read with, so reading then writing a well-formed file in its own transfer
 * syntax gives identical bytes; defined lengths and group lengths are
 * recomputed, so an edited data set is still written correctly.
 */
#include "dicom_int.h"

#include <stddef.h>
#include <string.h>

#define STAGE_SIZE (64 * 1024)

typedef struct Writer {
    bool explicit_vr;
    bool big_endian;
    const DicomWriteOptions *opt;
    DicomSink sink;           /* final sink */
    void *ctx;
    AgError *err;
    uint8_t stage[STAGE_SIZE];/* small writes are gathered here */
    size_t staged;
    /* deflate (PS3.5 §A.5) */
    bool deflating;
    z_stream zs;
    uint8_t zout[STAGE_SIZE];
} Writer;

/* ---- output plumbing ---------------------------------------------------- */

static int sink_raw(Writer *w, const void *p, size_t n)
{
    if (!w->deflating) {
        return w->sink(w->ctx, p, n, w->err);
    }
    w->zs.next_in = (Bytef *)(uintptr_t)p;
    w->zs.avail_in = (uInt)n;
    while (w->zs.avail_in > 0) {
        w->zs.next_out = w->zout;
        w->zs.avail_out = sizeof w->zout;
        if (deflate(&w->zs, Z_NO_FLUSH) == Z_STREAM_ERROR) {
            return ag_error_set(w->err, AG_ERR_IO, "deflate failed");
        }
        size_t got = sizeof w->zout - w->zs.avail_out;
        if (got > 0) {
            int rc = w->sink(w->ctx, w->zout, got, w->err);
            if (rc != AG_OK) {
                return rc;
            }
        }
    }
    return AG_OK;
}

static int flush(Writer *w)
{
    int rc = AG_OK;
    if (w->staged > 0) {
        rc = sink_raw(w, w->stage, w->staged);
        w->staged = 0;
    }
    return rc;
}

static int put(Writer *w, const void *p, size_t n)
{
    if (n > STAGE_SIZE - w->staged) {
        int rc = flush(w);
        if (rc != AG_OK) {
            return rc;
        }
        if (n >= STAGE_SIZE) {
            return sink_raw(w, p, n);
        }
    }
    memcpy(w->stage + w->staged, p, n);
    w->staged += n;
    return AG_OK;
}

static int finish_deflate(Writer *w)
{
    int z;
    do {
        w->zs.next_out = w->zout;
        w->zs.avail_out = sizeof w->zout;
        z = deflate(&w->zs, Z_FINISH);
        if (z == Z_STREAM_ERROR) {
            return ag_error_set(w->err, AG_ERR_IO, "deflate failed");
        }
        size_t got = sizeof w->zout - w->zs.avail_out;
        if (got > 0) {
            int rc = w->sink(w->ctx, w->zout, got, w->err);
            if (rc != AG_OK) {
                return rc;
            }
        }
    } while (z != Z_STREAM_END);
    return AG_OK;
}

static void put16(Writer *w, uint8_t *p, uint16_t v)
{
    if (w->big_endian) {
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
    } else {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
    }
}

static void put32(Writer *w, uint8_t *p, uint32_t v)
{
    if (w->big_endian) {
        put16(w, p, (uint16_t)(v >> 16));
        put16(w, p + 2, (uint16_t)v);
    } else {
        put16(w, p, (uint16_t)v);
        put16(w, p + 2, (uint16_t)(v >> 16));
    }
}

/* ---- sizes --------------------------------------------------------------- */

static uint64_t dataset_size(const Writer *w, const DicomDataset *ds);

static size_t header_size(const Writer *w, DicomVR vr)
{
    if (!w->explicit_vr) {
        return 8;
    }
    const DicomVRInfo *info = dicom_vr_info(vr);
    return info != NULL && info->long_header ? 12 : 8;
}

static uint64_t item_size(const Writer *w, const DicomDataset *item)
{
    bool undefined = dicom_dataset_item_undefined_length(item);
    return 8 + dataset_size(w, item) + (undefined ? 8 : 0);
}

/* Encoded length of an element's value (not its header). */
static uint64_t value_size(const Writer *w, const DicomElement *el)
{
    if (el->vr == DICOM_VR_SQ) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < el->nitems; i++) {
            n += item_size(w, el->items[i]);
        }
        return n + ((el->flags & DICOM_EL_UNDEFINED_LENGTH) ? 8 : 0);
    }
    if (el->flags & DICOM_EL_ENCAPSULATED) {
        uint64_t n = 8;   /* sequence delimiter */
        for (uint32_t i = 0; i < el->nfrags; i++) {
            n += 8 + el->frags[i].length;
        }
        return n;
    }
    return el->length;
}

static uint64_t element_size(const Writer *w, const DicomElement *el)
{
    return header_size(w, el->vr) + value_size(w, el);
}

static uint64_t dataset_size(const Writer *w, const DicomDataset *ds)
{
    uint64_t n = 0;
    size_t count = dicom_dataset_count(ds);
    for (size_t i = 0; i < count; i++) {
        n += element_size(w, dicom_dataset_at(ds, i));
    }
    return n;
}

/* Group length (gggg,0000): bytes of the group's elements after it. */
static uint32_t group_length(const Writer *w, const DicomDataset *ds,
                             size_t at)
{
    uint16_t group = DICOM_TAG_GROUP(dicom_dataset_at(ds, at)->tag);
    uint64_t n = 0;
    size_t count = dicom_dataset_count(ds);
    for (size_t i = at + 1; i < count; i++) {
        const DicomElement *el = dicom_dataset_at(ds, i);
        if (DICOM_TAG_GROUP(el->tag) != group) {
            break;
        }
        n += element_size(w, el);
    }
    return (uint32_t)n;
}

/* ---- elements ------------------------------------------------------------ */

static int write_header(Writer *w, uint32_t tag, DicomVR vr, uint32_t len)
{
    uint8_t h[12];
    put16(w, h, DICOM_TAG_GROUP(tag));
    put16(w, h + 2, DICOM_TAG_ELEMENT(tag));
    if (vr == DICOM_VR_NONE || !w->explicit_vr) {
        put32(w, h + 4, len);
        return put(w, h, 8);
    }
    h[4] = (uint8_t)(vr >> 8);
    h[5] = (uint8_t)vr;
    if (dicom_vr_info(vr)->long_header) {
        h[6] = h[7] = 0;
        put32(w, h + 8, len);
        return put(w, h, 12);
    }
    if (len > 0xffff) {
        return ag_error_set(w->err, AG_ERR_INVALID,
                            "element (%04x,%04x): length %u does not fit "
                            "VR %c%c", DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag), len, h[4], h[5]);
    }
    put16(w, h + 6, (uint16_t)len);
    return put(w, h, 8);
}

/* Write value bytes held little-endian, swapping for big endian output. */
static int write_swapped(Writer *w, const uint8_t *p, size_t n, unsigned unit)
{
    if (!w->big_endian || unit <= 1) {
        return put(w, p, n);
    }
    uint8_t tmp[4096];
    while (n > 0) {
        size_t chunk = n < sizeof tmp ? n : sizeof tmp;
        chunk -= chunk % unit;
        if (chunk == 0) {
            return put(w, p, n);   /* trailing odd bytes: write as they are */
        }
        memcpy(tmp, p, chunk);
        dicom__swap(tmp, chunk, unit);
        int rc = put(w, tmp, chunk);
        if (rc != AG_OK) {
            return rc;
        }
        p += chunk;
        n -= chunk;
    }
    return AG_OK;
}

/* Copy a value that was left in the source (DICOM_EL_NOT_LOADED). */
static int write_from_source(Writer *w, uint64_t offset, uint32_t len,
                             unsigned unit, uint32_t tag)
{
    const DicomBulkSource *src = w->opt->bulk;
    if (src == NULL) {
        return ag_error_set(w->err, AG_ERR_INVALID,
                            "element (%04x,%04x): value not loaded and no "
                            "source to copy it from", DICOM_TAG_GROUP(tag),
                            DICOM_TAG_ELEMENT(tag));
    }
    uint8_t tmp[16384];
    bool swap = unit > 1 && src->big_endian != w->big_endian;
    while (len > 0) {
        size_t chunk = len < sizeof tmp ? len : sizeof tmp;
        int rc = src->read(src->ctx, offset, tmp, chunk, w->err);
        if (rc != AG_OK) {
            return rc;
        }
        if (swap) {
            dicom__swap(tmp, chunk - chunk % unit, unit);
        }
        rc = put(w, tmp, chunk);
        if (rc != AG_OK) {
            return rc;
        }
        offset += chunk;
        len -= (uint32_t)chunk;
    }
    return AG_OK;
}

static int write_dataset(Writer *w, const DicomDataset *ds);

static int write_sequence(Writer *w, const DicomElement *el)
{
    bool undefined = el->flags & DICOM_EL_UNDEFINED_LENGTH;
    uint64_t len = undefined ? DICOM_UNDEFINED_LENGTH : value_size(w, el);
    if (len > 0xfffffffeu && !undefined) {
        return ag_error_set(w->err, AG_ERR_LIMIT, "sequence too long");
    }
    int rc = write_header(w, el->tag, DICOM_VR_SQ, (uint32_t)len);
    for (uint32_t i = 0; i < el->nitems && rc == AG_OK; i++) {
        const DicomDataset *item = el->items[i];
        bool iu = dicom_dataset_item_undefined_length(item);
        uint64_t ilen = iu ? DICOM_UNDEFINED_LENGTH : dataset_size(w, item);
        rc = write_header(w, DICOM_TAG_ITEM, DICOM_VR_NONE, (uint32_t)ilen);
        if (rc == AG_OK) {
            rc = write_dataset(w, item);
        }
        if (rc == AG_OK && iu) {
            rc = write_header(w, DICOM_TAG_ITEM_END, DICOM_VR_NONE, 0);
        }
    }
    if (rc == AG_OK && undefined) {
        rc = write_header(w, DICOM_TAG_SEQ_END, DICOM_VR_NONE, 0);
    }
    return rc;
}

static int write_fragments(Writer *w, const DicomElement *el)
{
    if (!w->explicit_vr || w->big_endian) {
        return ag_error_set(w->err, AG_ERR_UNSUPPORTED,
                            "encapsulated pixel data needs its compressed "
                            "transfer syntax; transcode it first");
    }
    int rc = write_header(w, el->tag, el->vr, DICOM_UNDEFINED_LENGTH);
    for (uint32_t i = 0; i < el->nfrags && rc == AG_OK; i++) {
        const DicomFragment *f = &el->frags[i];
        rc = write_header(w, DICOM_TAG_ITEM, DICOM_VR_NONE, f->length);
        if (rc == AG_OK && f->length > 0) {
            rc = f->data != NULL
                ? put(w, f->data, f->length)
                : write_from_source(w, f->offset, f->length, 1, el->tag);
        }
    }
    if (rc == AG_OK) {
        rc = write_header(w, DICOM_TAG_SEQ_END, DICOM_VR_NONE, 0);
    }
    return rc;
}

static int write_element(Writer *w, const DicomDataset *ds, size_t i)
{
    const DicomElement *el = dicom_dataset_at(ds, i);
    if (el->vr == DICOM_VR_SQ) {
        return write_sequence(w, el);
    }
    if (el->flags & DICOM_EL_ENCAPSULATED) {
        return write_fragments(w, el);
    }
    if (el->flags & DICOM_EL_BULK_URI) {
        return ag_error_set(w->err, AG_ERR_INVALID,
                            "element (%04x,%04x): value is only a "
                            "BulkDataURI", DICOM_TAG_GROUP(el->tag),
                            DICOM_TAG_ELEMENT(el->tag));
    }
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    unsigned unit = el->vr == DICOM_VR_AT ? 2 : (info ? info->unit : 1);
    if (DICOM_TAG_ELEMENT(el->tag) == 0 && el->vr == DICOM_VR_UL &&
        el->length == 4) {
        uint8_t v[4];
        put32(w, v, group_length(w, ds, i));
        int rc = write_header(w, el->tag, el->vr, 4);
        return rc == AG_OK ? put(w, v, 4) : rc;
    }
    int rc = write_header(w, el->tag, el->vr, el->length);
    if (rc != AG_OK || el->length == 0) {
        return rc;
    }
    if (el->flags & DICOM_EL_NOT_LOADED) {
        return write_from_source(w, el->offset, el->length, unit, el->tag);
    }
    return write_swapped(w, el->value, el->length, unit);
}

static int write_dataset(Writer *w, const DicomDataset *ds)
{
    size_t n = dicom_dataset_count(ds);
    for (size_t i = 0; i < n; i++) {
        int rc = write_element(w, ds, i);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

/* ---- entry points ---------------------------------------------------------- */

static int writer_create(Writer **out, const char *ts_uid,
                         const DicomWriteOptions *opt, DicomSink sink,
                         void *ctx, AgError *err)
{
    static const DicomWriteOptions defaults = {0};
    const DicomTransferSyntax *ts = dicom_ts_lookup(ts_uid);
    if (ts == NULL && (ts_uid == NULL ||
                       !dicom_uid_valid(ts_uid, strlen(ts_uid)))) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "transfer syntax \"%s\" is not a valid UID",
                            ts_uid ? ts_uid : "(null)");
    }
    /* Not calloc: the two 64 KB buffers need no zeroes, and zeroing them
     * was ~2% of the CPU of a small C-STORE (its Part 10 header). */
    Writer *w = ag_malloc(sizeof *w);
    if (w == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "writer: out of memory");
    }
    memset(w, 0, offsetof(Writer, stage));
    w->staged = 0;
    w->deflating = false;
    memset(&w->zs, 0, sizeof w->zs);
    w->explicit_vr = ts == NULL || ts->explicit_vr;
    w->big_endian = ts != NULL && ts->big_endian;
    w->opt = opt != NULL ? opt : &defaults;
    w->sink = sink;
    w->ctx = ctx;
    w->err = err;
    *out = w;
    return AG_OK;
}

static void writer_destroy(Writer *w)
{
    if (w != NULL && w->deflating) {
        deflateEnd(&w->zs);
    }
    ag_free(w);
}

static int start_deflate(Writer *w)
{
    if (deflateInit2(&w->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS,
                     8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return ag_error_set(w->err, AG_ERR_NOMEM, "deflate: out of memory");
    }
    w->deflating = true;
    return AG_OK;
}

static int write_body(Writer *w, const DicomDataset *ds, bool deflated)
{
    int rc = deflated ? start_deflate(w) : AG_OK;
    if (rc == AG_OK) {
        rc = write_dataset(w, ds);
    }
    if (rc == AG_OK) {
        rc = flush(w);
    }
    if (rc == AG_OK && deflated) {
        rc = finish_deflate(w);
    }
    return rc;
}

int dicom_write_dataset(const DicomDataset *ds, const char *ts_uid,
                        const DicomWriteOptions *opt, DicomSink sink,
                        void *ctx, AgError *err)
{
    Writer *w;
    int rc = writer_create(&w, ts_uid, opt, sink, ctx, err);
    if (rc != AG_OK) {
        return rc;
    }
    const DicomTransferSyntax *ts = dicom_ts_lookup(ts_uid);
    rc = write_body(w, ds, ts != NULL && ts->deflated);
    writer_destroy(w);
    return rc;
}

/* The meta group with its Transfer Syntax UID set to ts_uid. */
static int meta_for(const DicomFile *f, const char *ts_uid, AgArena *a,
                    DicomDataset **out, AgError *err)
{
    DicomDataset *m = dicom_dataset_create(a);
    if (m == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "meta: out of memory");
    }
    size_t n = dicom_dataset_count(f->meta);
    for (size_t i = 0; i < n; i++) {
        int rc = dicom_dataset_put(m, dicom_dataset_at(f->meta, i), NULL);
        if (rc != AG_OK) {
            return ag_error_set(err, rc, "meta: out of memory");
        }
    }
    if (dicom_dataset_find(m, DICOM_TAG_FILE_META_GROUP_LENGTH) == NULL) {
        uint8_t zero[4] = {0};
        int rc = dicom_set_bytes(m, DICOM_TAG_FILE_META_GROUP_LENGTH,
                                 DICOM_VR_UL, zero, 4, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    const DicomElement *cur = dicom_dataset_find(m,
                                                 DICOM_TAG_TRANSFER_SYNTAX_UID);
    char *have = NULL;
    if (cur == NULL || dicom_element_text(cur, a, &have, NULL) != AG_OK ||
        strcmp(have, ts_uid) != 0) {
        int rc = dicom_set_string(m, DICOM_TAG_TRANSFER_SYNTAX_UID,
                                  DICOM_VR_UI, ts_uid, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    *out = m;
    return AG_OK;
}

int dicom_write_file(const DicomFile *f, const char *ts_uid,
                     const DicomWriteOptions *opt, DicomSink sink, void *ctx,
                     AgError *err)
{
    if (ts_uid == NULL) {
        ts_uid = f->ts_uid;
    }
    AgArena *a = ag_arena_create(0);
    Writer *w = NULL;
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "writer: out of memory");
    }
    DicomDataset *meta = NULL;
    int rc = meta_for(f, ts_uid, a, &meta, err);
    if (rc == AG_OK) {
        rc = writer_create(&w, ts_uid, opt, sink, ctx, err);
    }
    if (rc == AG_OK) {
        /* Preamble: kept as data or zeroed (SECURITY.md rule 9). */
        uint8_t pre[132] = {0};
        if (f->has_preamble && !w->opt->zero_preamble) {
            memcpy(pre, f->preamble, 128);
        }
        memcpy(pre + 128, "DICM", 4);
        rc = put(w, pre, sizeof pre);
    }
    if (rc == AG_OK) {
        /* PS3.10 §7.1: the meta group is explicit VR little endian. */
        bool ex = w->explicit_vr, be = w->big_endian;
        w->explicit_vr = true;
        w->big_endian = false;
        rc = write_dataset(w, meta);
        w->explicit_vr = ex;
        w->big_endian = be;
    }
    if (rc == AG_OK) {
        rc = flush(w);
    }
    if (rc == AG_OK) {
        const DicomTransferSyntax *ts = dicom_ts_lookup(ts_uid);
        rc = write_body(w, f->dataset, ts != NULL && ts->deflated);
    }
    writer_destroy(w);
    ag_arena_destroy(a);
    return rc;
}

int dicom_file_build_meta(DicomFile *f, const char *ts_uid, AgError *err)
{
    AgArena *a = dicom_dataset_arena(f->dataset);
    const char *cls = dicom_get_string(f->dataset, DICOM_TAG_SOP_CLASS_UID, a);
    const char *inst = dicom_get_string(f->dataset, DICOM_TAG_SOP_INSTANCE_UID,
                                        a);
    if (cls == NULL || inst == NULL) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "data set has no SOP Class UID or SOP Instance "
                            "UID");
    }
    size_t tslen = strlen(ts_uid);
    if (tslen >= sizeof f->ts_uid) {
        return ag_error_set(err, AG_ERR_INVALID, "transfer syntax too long");
    }
    if (f->meta == NULL) {
        f->meta = dicom_dataset_create(a);
        if (f->meta == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "meta: out of memory");
        }
    }
    static const uint8_t version[2] = {0x00, 0x01};
    uint8_t zero[4] = {0};
    int rc = dicom_set_bytes(f->meta, DICOM_TAG_FILE_META_GROUP_LENGTH,
                             DICOM_VR_UL, zero, 4, err);
    if (rc == AG_OK) {
        rc = dicom_set_bytes(f->meta, DICOM_TAG_FILE_META_VERSION,
                             DICOM_VR_OB, version, 2, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f->meta, DICOM_TAG_MEDIA_SOP_CLASS_UID,
                              DICOM_VR_UI, cls, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f->meta, DICOM_TAG_MEDIA_SOP_INSTANCE_UID,
                              DICOM_VR_UI, inst, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f->meta, DICOM_TAG_TRANSFER_SYNTAX_UID,
                              DICOM_VR_UI, ts_uid, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f->meta, DICOM_TAG_IMPLEMENTATION_CLASS_UID,
                              DICOM_VR_UI, DICOM_IMPLEMENTATION_CLASS_UID,
                              err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f->meta, DICOM_TAG_IMPLEMENTATION_VERSION_NAME,
                              DICOM_VR_SH, DICOM_IMPLEMENTATION_VERSION, err);
    }
    if (rc == AG_OK) {
        memcpy(f->ts_uid, ts_uid, tslen + 1);
        f->ts = dicom_ts_lookup(ts_uid);
    }
    return rc;
}

int dicom_sink_fd(void *ctx, const void *data, size_t len, AgError *err)
{
    return ag_write_all(*(int *)ctx, data, len, err);
}

int dicom_sink_buf(void *ctx, const void *data, size_t len, AgError *err)
{
    int rc = ag_buf_append(ctx, data, len);
    return rc == AG_OK ? rc : ag_error_set(err, rc, "output buffer: %s",
                                           ag_err_name(rc));
}
