/*
 * read.c — Part 10 files and bare data sets (PS3.10 §7, PS3.5 §7).
 *
 * Every length comes from the wire, so each is checked against the bytes
 * that remain (when the size is known) and the arena's budget before any
 * allocation (SECURITY.md rule 1).  Errors name the offset and the element.
 */
#include "dicom_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct Reader {
    DicomInput *in;
    const DicomReadOptions *opt;
    AgArena *arena;
    AgError *err;
    bool explicit_vr;
    bool big_endian;
    uint32_t max_depth;
    DicomDataset *root;       /* for context (Pixel Representation) */
    bool stopped;             /* reached pixel data with stop_before_pixels */
    uint64_t stop_offset;
} Reader;

typedef struct Header {
    uint32_t tag;
    DicomVR vr;
    uint32_t length;
    uint64_t offset;          /* of the header */
    size_t size;              /* header bytes */
} Header;

#define TAGF(t) DICOM_TAG_GROUP(t), DICOM_TAG_ELEMENT(t)

static int parse_error(Reader *r, uint64_t off, uint32_t tag,
                       const char *what)
{
    return ag_error_set(r->err, AG_ERR_PARSE,
                        "element (%04x,%04x) at offset %llu: %s", TAGF(tag),
                        (unsigned long long)off, what);
}

static int arena_fail(Reader *r, uint64_t off, uint32_t tag)
{
    int code = ag_arena_fail_code(r->arena);
    return ag_error_set(r->err, code, "element (%04x,%04x) at offset %llu: %s",
                        TAGF(tag), (unsigned long long)off,
                        code == AG_ERR_LIMIT ? "memory budget exceeded"
                                             : "out of memory");
}

static int truncated(Reader *r, uint64_t off, uint32_t tag)
{
    return parse_error(r, off, tag, "file is truncated");
}

static uint16_t rd16(const Reader *r, const uint8_t *p)
{
    return r->big_endian ? dicom__be16(p) : dicom__le16(p);
}

static uint32_t rd32(const Reader *r, const uint8_t *p)
{
    return r->big_endian ? dicom__be32(p) : dicom__le32(p);
}

static bool is_upper(uint8_t c)
{
    return c >= 'A' && c <= 'Z';
}

/* VR for an implicit-VR element (PS3.5 §7.1.3), resolving the dictionary's
 * ambiguous entries from context the way PS3.5 Annex A notes describe. */
static DicomVR implicit_vr(Reader *r, const DicomDataset *ds, uint32_t tag)
{
    if (DICOM_TAG_IS_PRIVATE(tag) && !DICOM_TAG_IS_PRIVATE_CREATOR(tag) &&
        DICOM_TAG_ELEMENT(tag) != 0) {
        uint32_t ctag = DICOM_TAG(DICOM_TAG_GROUP(tag),
                                  DICOM_TAG_ELEMENT(tag) >> 8);
        const DicomElement *c = dicom_dataset_find(ds, ctag);
        char *creator = NULL;
        if (c != NULL &&
            dicom_element_text(c, r->arena, &creator, NULL) == AG_OK) {
            const DicomDictEntry *e = dicom_dict_lookup_private(creator, tag);
            if (e != NULL && e->vr != DICOM_VR_NONE) {
                return e->vr;
            }
        }
        return DICOM_VR_UN;
    }
    const DicomDictEntry *e = dicom_dict_lookup(tag);
    if (e == NULL) {
        return dicom_dict_vr(tag);
    }
    if (e->vr2 == DICOM_VR_NONE) {
        return e->vr == DICOM_VR_NONE ? DICOM_VR_UN : e->vr;
    }
    if (e->vr == DICOM_VR_US && e->vr2 == DICOM_VR_SS) {
        int64_t rep = 0;
        dicom_get_int(r->root, DICOM_TAG_PIXEL_REPRESENTATION, &rep);
        return rep == 1 ? DICOM_VR_SS : DICOM_VR_US;
    }
    if (e->vr == DICOM_VR_OB && e->vr2 == DICOM_VR_OW) {
        return DICOM_VR_OW;   /* implicit VR pixel data is OW (PS3.5 §A.1) */
    }
    return e->vr;
}

/* Read one element header at the current position.  AG_ERR_EOF when the
 * stream ends cleanly before it. */
static int read_header(Reader *r, const DicomDataset *ds, Header *h)
{
    const uint8_t *p;
    size_t avail;
    h->offset = dicom__input_pos(r->in);
    int rc = dicom__input_peek(r->in, 8, &p, &avail, r->err);
    if (rc == AG_ERR_EOF) {
        if (avail == 0) {
            return AG_ERR_EOF;
        }
        return ag_error_set(r->err, AG_ERR_PARSE,
                            "offset %llu: truncated element header "
                            "(%zu bytes)", (unsigned long long)h->offset,
                            avail);
    }
    if (rc != AG_OK) {
        return rc;
    }
    h->tag = DICOM_TAG(rd16(r, p), rd16(r, p + 2));
    /* Item and delimitation tags never carry a VR (PS3.5 §7.5). */
    if (DICOM_TAG_GROUP(h->tag) == 0xfffe) {
        h->vr = DICOM_VR_NONE;
        h->length = rd32(r, p + 4);
        h->size = 8;
        dicom__input_advance(r->in, 8);
        return AG_OK;
    }
    if (!r->explicit_vr) {
        h->vr = implicit_vr(r, ds, h->tag);
        h->length = rd32(r, p + 4);
        h->size = 8;
        dicom__input_advance(r->in, 8);
        return AG_OK;
    }
    const DicomVRInfo *info = dicom_vr_info(DICOM_VR(p[4], p[5]));
    if (info == NULL) {
        char vr[12];
        if (is_upper(p[4]) && is_upper(p[5])) {
            snprintf(vr, sizeof vr, "%c%c", p[4], p[5]);
        } else {
            snprintf(vr, sizeof vr, "0x%02x%02x", p[4], p[5]);
        }
        return ag_error_set(r->err, AG_ERR_PARSE,
                            "element (%04x,%04x) at offset %llu: unknown "
                            "VR %s", TAGF(h->tag),
                            (unsigned long long)h->offset, vr);
    }
    h->vr = info->vr;
    if (!info->long_header) {
        h->length = rd16(r, p + 6);
        h->size = 8;
        dicom__input_advance(r->in, 8);
        return AG_OK;
    }
    rc = dicom__input_peek(r->in, 12, &p, &avail, r->err);
    if (rc == AG_ERR_EOF) {
        return truncated(r, h->offset, h->tag);
    }
    if (rc != AG_OK) {
        return rc;
    }
    h->length = rd32(r, p + 8);
    h->size = 12;
    dicom__input_advance(r->in, 12);
    return AG_OK;
}

/* Check a defined length against what is left and the arena budget. */
static int check_length(Reader *r, const Header *h, uint64_t limit_end)
{
    uint64_t here = dicom__input_pos(r->in);
    uint64_t end;
    if (ag_add_overflow(here, h->length, &end) || end > limit_end) {
        char what[96];
        snprintf(what, sizeof what, "length %u runs past the end of its "
                 "container (%llu bytes left)", h->length,
                 (unsigned long long)(limit_end > here ? limit_end - here
                                                       : 0));
        return parse_error(r, h->offset, h->tag, what);
    }
    uint64_t left = dicom__input_remaining(r->in);
    if (h->length > left) {
        char what[96];
        snprintf(what, sizeof what, "length %u exceeds the %llu bytes left",
                 h->length, (unsigned long long)left);
        return parse_error(r, h->offset, h->tag, what);
    }
    return AG_OK;
}

static int read_items(Reader *r, DicomDataset *ds, DicomElement *el,
                      const Header *h, uint32_t depth, uint64_t limit_end);
static int read_fragments(Reader *r, DicomElement *el, const Header *h);

#define GROW_READ_CHUNK (1u << 20)

/* Read a long value of an unsized stream chunk by chunk into a growing
 * heap buffer, then move it into the arena. */
static int read_growing(Reader *r, const Header *h, uint8_t **out)
{
    AgBuf b;
    size_t left_budget = ag_arena_budget(r->arena)
        ? ag_arena_budget(r->arena) - ag_arena_used(r->arena) : 0;
    ag_buf_init(&b, left_budget);
    uint32_t left = h->length;
    int rc = AG_OK;
    while (left > 0 && rc == AG_OK) {
        uint32_t n = left < GROW_READ_CHUNK ? left : GROW_READ_CHUNK;
        rc = ag_buf_reserve(&b, n);
        if (rc != AG_OK) {
            rc = rc == AG_ERR_LIMIT
                ? ag_error_set(r->err, AG_ERR_LIMIT, "element (%04x,%04x) at "
                               "offset %llu: memory budget exceeded",
                               TAGF(h->tag), (unsigned long long)h->offset)
                : arena_fail(r, h->offset, h->tag);
            break;
        }
        rc = dicom__input_read(r->in, b.data + b.len, n, r->err);
        if (rc == AG_OK) {
            b.len += n;
            left -= n;
        }
    }
    if (rc == AG_OK) {
        *out = ag_arena_memdup(r->arena, b.data, b.len);
        if (*out == NULL) {
            rc = arena_fail(r, h->offset, h->tag);
        }
    }
    ag_buf_deinit(&b);
    return rc;
}

/* Read (or skip) a plain value into el. */
static int read_value(Reader *r, DicomElement *el, const Header *h)
{
    const DicomVRInfo *info = dicom_vr_info(el->vr);
    el->offset = dicom__input_pos(r->in);
    unsigned size = el->vr == DICOM_VR_AT ? 4 : info->unit;
    if (info->kind == DICOM_VRK_BINARY && h->length % size != 0) {
        char what[64];
        snprintf(what, sizeof what, "length %u is not a multiple of %u for "
                 "VR %s", h->length, size, info->name);
        return parse_error(r, h->offset, h->tag, what);
    }
    if (h->length % 2 != 0 && r->opt->strict) {
        /* PS3.5 §7.1.1: every defined value length is even.  Lenient by
         * default: old modalities write odd private values, and DCMTK and
         * pydicom read them; an archive should not lose such a study. */
        char what[48];
        snprintf(what, sizeof what, "length %u is odd", h->length);
        return parse_error(r, h->offset, h->tag, what);
    }
    if (h->length == 0) {
        return AG_OK;
    }
    bool bulk = info->kind == DICOM_VRK_BULK || info->kind == DICOM_VRK_TEXT;
    if (r->opt->bulk_threshold != 0 && bulk &&
        h->length > r->opt->bulk_threshold) {
        el->flags |= DICOM_EL_NOT_LOADED;
        int rc = dicom__input_skip(r->in, h->length, r->err);
        return rc == AG_ERR_EOF ? truncated(r, h->offset, h->tag) : rc;
    }
    int rc;
    if (dicom__input_remaining(r->in) == UINT64_MAX &&
        h->length > GROW_READ_CHUNK) {
        /* The size of the stream is unknown (a pipe, an inflating
         * stream): bytes are read as they come, so a lying length costs
         * what was actually sent, not what was claimed (SECURITY.md
         * rule 1). */
        rc = read_growing(r, h, &el->value);
    } else {
        el->value = ag_arena_alloc(r->arena, h->length);
        if (el->value == NULL) {
            return arena_fail(r, h->offset, h->tag);
        }
        rc = dicom__input_read(r->in, el->value, h->length, r->err);
    }
    if (rc == AG_ERR_EOF) {
        return truncated(r, h->offset, h->tag);
    }
    if (rc != AG_OK) {
        return rc;
    }
    if (r->big_endian) {
        unsigned unit = el->vr == DICOM_VR_AT ? 2 : info->unit;
        dicom__swap(el->value, h->length, unit);
    }
    return AG_OK;
}

static bool is_pixel_tag(uint32_t tag)
{
    return tag == DICOM_TAG_PIXEL_DATA || tag == DICOM_TAG_FLOAT_PIXEL_DATA ||
           tag == DICOM_TAG_DOUBLE_PIXEL_DATA;
}

/*
 * Read elements into ds until: the stream ends (top level), an item
 * delimiter (undefined-length item), or limit_end (defined length).
 */
static int read_elements(Reader *r, DicomDataset *ds, uint32_t depth,
                         uint64_t limit_end, bool in_undefined_item)
{
    for (;;) {
        if (dicom__input_pos(r->in) >= limit_end) {
            return AG_OK;
        }
        Header h;
        int rc = read_header(r, ds, &h);
        if (rc == AG_ERR_EOF) {
            if (depth == 0 && limit_end == UINT64_MAX) {
                return AG_OK;
            }
            return ag_error_set(r->err, AG_ERR_PARSE,
                                "offset %llu: file ends inside a sequence "
                                "item", (unsigned long long)h.offset);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (h.tag == DICOM_TAG_ITEM_END && in_undefined_item) {
            return AG_OK;
        }
        if (DICOM_TAG_GROUP(h.tag) == 0xfffe) {
            return parse_error(r, h.offset, h.tag,
                               "item or delimiter where an element belongs");
        }
        if (depth == 0 && r->opt->stop_before_pixels && is_pixel_tag(h.tag)) {
            r->stopped = true;
            r->stop_offset = h.offset;
            return AG_OK;
        }
        DicomElement el = {.tag = h.tag, .vr = h.vr, .length = h.length};
        bool undefined = h.length == DICOM_UNDEFINED_LENGTH;
        if (undefined) {
            el.flags |= DICOM_EL_UNDEFINED_LENGTH;
        }
        if (h.vr == DICOM_VR_SQ ||
            (undefined && h.vr == DICOM_VR_UN && !is_pixel_tag(h.tag))) {
            /* UN with undefined length is a sequence in implicit VR
             * little endian (PS3.5 §6.2.2). */
            el.vr = DICOM_VR_SQ;
            if (!undefined) {
                rc = check_length(r, &h, limit_end);
                if (rc != AG_OK) {
                    return rc;
                }
            }
            bool saved_explicit = r->explicit_vr, saved_be = r->big_endian;
            if (h.vr == DICOM_VR_UN) {
                r->explicit_vr = false;
                r->big_endian = false;
            }
            rc = read_items(r, ds, &el, &h, depth + 1, limit_end);
            r->explicit_vr = saved_explicit;
            r->big_endian = saved_be;
        } else if (undefined) {
            if (!is_pixel_tag(h.tag) ||
                (h.vr != DICOM_VR_OB && h.vr != DICOM_VR_OW &&
                 h.vr != DICOM_VR_UN)) {
                return parse_error(r, h.offset, h.tag,
                                   "undefined length is not allowed here");
            }
            el.flags |= DICOM_EL_ENCAPSULATED;
            el.vr = DICOM_VR_OB;   /* PS3.5 §A.4: always OB, whatever the
                                    * writer put (as DCMTK normalises) */
            rc = read_fragments(r, &el, &h);
        } else {
            rc = check_length(r, &h, limit_end);
            if (rc == AG_OK) {
                rc = read_value(r, &el, &h);
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        rc = dicom__dataset_append(ds, &el, NULL);
        if (rc == AG_ERR_EXISTS) {
            return parse_error(r, h.offset, h.tag, "duplicate element");
        }
        if (rc != AG_OK) {
            return arena_fail(r, h.offset, h.tag);
        }
    }
}

static int read_items(Reader *r, DicomDataset *ds, DicomElement *el,
                      const Header *h, uint32_t depth, uint64_t limit_end)
{
    if (depth > r->max_depth) {
        return ag_error_set(r->err, AG_ERR_LIMIT,
                            "element (%04x,%04x) at offset %llu: sequences "
                            "nested deeper than %u", TAGF(h->tag),
                            (unsigned long long)h->offset, r->max_depth);
    }
    uint64_t seq_end = limit_end;
    bool undefined = h->length == DICOM_UNDEFINED_LENGTH;
    if (!undefined) {
        seq_end = dicom__input_pos(r->in) + h->length;
    }
    uint32_t cap = 0;
    for (;;) {
        if (!undefined && dicom__input_pos(r->in) >= seq_end) {
            break;
        }
        Header ih;
        int rc = read_header(r, ds, &ih);
        if (rc == AG_ERR_EOF) {
            return truncated(r, h->offset, h->tag);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (ih.tag == DICOM_TAG_SEQ_END && undefined) {
            break;
        }
        if (ih.tag != DICOM_TAG_ITEM) {
            return parse_error(r, ih.offset, ih.tag,
                               "expected an item in the sequence");
        }
        DicomDataset *item = dicom_dataset_create(r->arena);
        if (item == NULL) {
            return arena_fail(r, ih.offset, ih.tag);
        }
        dicom__dataset_set_parent(item, ds);
        uint64_t item_end = seq_end;
        bool item_undefined = ih.length == DICOM_UNDEFINED_LENGTH;
        dicom_dataset_set_item_undefined_length(item, item_undefined);
        dicom__dataset_set_item_length(item, ih.length);
        if (!item_undefined) {
            ih.vr = DICOM_VR_NONE;
            /* Some writers (DICOMDIR media among them) give a sequence a
             * defined length shorter than its last item; DCMTK and pydicom
             * read such files, so only strict mode holds items to it.  The
             * enclosing container's limit always applies. */
            rc = check_length(r, &ih, r->opt->strict ? seq_end : limit_end);
            if (rc != AG_OK) {
                return rc;
            }
            item_end = dicom__input_pos(r->in) + ih.length;
        }
        rc = read_elements(r, item, depth, item_end, item_undefined);
        if (rc != AG_OK) {
            return rc;
        }
        if (!item_undefined && dicom__input_pos(r->in) != item_end) {
            return parse_error(r, ih.offset, ih.tag,
                               "item contents overrun its length");
        }
        if (el->nitems == cap) {
            if (cap >= UINT32_MAX / 2) {
                return parse_error(r, ih.offset, ih.tag, "too many items");
            }
            cap = cap == 0 ? 4 : cap * 2;
            DicomDataset **items = ag_arena_grow(r->arena, el->items,
                                                 el->nitems, cap,
                                                 sizeof *items);
            if (items == NULL) {
                return arena_fail(r, ih.offset, ih.tag);
            }
            el->items = items;
            el->items_cap = cap;
        }
        el->items[el->nitems++] = item;
    }
    if (!undefined && dicom__input_pos(r->in) != seq_end &&
        (r->opt->strict || dicom__input_pos(r->in) < seq_end)) {
        return parse_error(r, h->offset, h->tag,
                           "sequence contents overrun its length");
    }
    return AG_OK;
}

/* Encapsulated pixel data: items of defined length ending with a sequence
 * delimiter; the first item is the Basic Offset Table (PS3.5 §A.4). */
static int read_fragments(Reader *r, DicomElement *el, const Header *h)
{
    uint32_t cap = 0;
    for (;;) {
        Header fh;
        int rc = read_header(r, NULL, &fh);
        if (rc == AG_ERR_EOF) {
            return truncated(r, h->offset, h->tag);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (fh.tag == DICOM_TAG_SEQ_END) {
            break;
        }
        if (fh.tag != DICOM_TAG_ITEM) {
            return parse_error(r, fh.offset, fh.tag,
                               "expected a pixel data fragment item");
        }
        if (fh.length == DICOM_UNDEFINED_LENGTH) {
            return parse_error(r, fh.offset, fh.tag,
                               "fragment with undefined length");
        }
        fh.vr = DICOM_VR_NONE;
        rc = check_length(r, &fh, UINT64_MAX);
        if (rc != AG_OK) {
            return rc;
        }
        if (el->nfrags == cap) {
            if (cap >= (1u << 24)) {
                return parse_error(r, fh.offset, h->tag,
                                   "more than 16777216 fragments");
            }
            cap = cap == 0 ? 8 : cap * 2;
            DicomFragment *f = ag_arena_grow(r->arena, el->frags, el->nfrags,
                                             cap, sizeof *f);
            if (f == NULL) {
                return arena_fail(r, fh.offset, h->tag);
            }
            el->frags = f;
        }
        DicomFragment *f = &el->frags[el->nfrags++];
        f->offset = dicom__input_pos(r->in);
        f->length = fh.length;
        f->data = NULL;
        if (r->opt->bulk_threshold != 0 && el->nfrags > 1 &&
            fh.length > r->opt->bulk_threshold) {
            el->flags |= DICOM_EL_NOT_LOADED;
            rc = dicom__input_skip(r->in, fh.length, r->err);
        } else if (fh.length > 0) {
            f->data = ag_arena_alloc(r->arena, fh.length);
            if (f->data == NULL) {
                return arena_fail(r, fh.offset, h->tag);
            }
            rc = dicom__input_read(r->in, f->data, fh.length, r->err);
        }
        if (rc == AG_ERR_EOF) {
            return truncated(r, fh.offset, h->tag);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (r->big_endian && el->nfrags == 1 && f->data != NULL) {
            dicom__swap(f->data, f->length, 4);   /* offsets are UL */
        }
    }
    return AG_OK;
}

/* ---- file structure ------------------------------------------------------ */

/* Guess the encoding of a bare data set from its first element header. */
static void detect_syntax(const uint8_t *p, size_t n, bool *explicit_vr,
                          bool *big_endian)
{
    *explicit_vr = false;
    *big_endian = false;
    if (n < 8) {
        return;
    }
    if (is_upper(p[4]) && is_upper(p[5]) &&
        dicom_vr_info(DICOM_VR(p[4], p[5])) != NULL) {
        *explicit_vr = true;
    }
    /* Groups are small numbers: whichever byte order makes the first group
     * smaller is the likely one ("08 00" vs "00 08"). */
    *big_endian = dicom__be16(p) < dicom__le16(p);
}

static int read_meta(Reader *r, DicomFile *f)
{
    r->explicit_vr = true;     /* PS3.10 §7.1: always explicit VR LE */
    r->big_endian = false;
    for (;;) {
        const uint8_t *p;
        size_t avail;
        int rc = dicom__input_peek(r->in, 4, &p, &avail, r->err);
        if (rc == AG_ERR_EOF) {
            /* 1-3 bytes cannot start an element of any group: a file cut
             * inside a header, not the end of the meta group. */
            if (avail > 0) {
                return truncated(r, dicom__input_pos(r->in), 0x00020000);
            }
            return AG_OK;
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (dicom__le16(p) != 0x0002) {
            return AG_OK;
        }
        /* Some writers put the meta group in implicit VR: detect it
         * per element rather than failing the file. */
        rc = dicom__input_peek(r->in, 8, &p, &avail, r->err);
        if (rc == AG_OK) {
            r->explicit_vr = is_upper(p[4]) && is_upper(p[5]);
        }
        Header h;
        rc = read_header(r, f->meta, &h);
        if (rc == AG_ERR_EOF) {
            return truncated(r, dicom__input_pos(r->in), 0x00020000);
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (h.length == DICOM_UNDEFINED_LENGTH) {
            return parse_error(r, h.offset, h.tag,
                               "undefined length in the file meta group");
        }
        DicomElement el = {.tag = h.tag, .vr = h.vr, .length = h.length};
        if (h.vr == DICOM_VR_SQ) {
            return parse_error(r, h.offset, h.tag,
                               "sequence in the file meta group");
        }
        rc = check_length(r, &h, UINT64_MAX);
        if (rc == AG_OK) {
            rc = read_value(r, &el, &h);
        }
        if (rc != AG_OK) {
            return rc;
        }
        rc = dicom__dataset_append(f->meta, &el, NULL);
        if (rc == AG_ERR_EXISTS) {
            return parse_error(r, h.offset, h.tag, "duplicate element");
        }
        if (rc != AG_OK) {
            return arena_fail(r, h.offset, h.tag);
        }
    }
}

static int set_syntax(Reader *r, DicomFile *f, const char *uid)
{
    size_t n = strlen(uid);
    if (n >= sizeof f->ts_uid) {
        return ag_error_set(r->err, AG_ERR_PARSE,
                            "transfer syntax UID is longer than 64 bytes");
    }
    memcpy(f->ts_uid, uid, n + 1);
    f->ts = dicom_ts_lookup(uid);
    if (f->ts == NULL) {
        if (!dicom_uid_valid(uid, n)) {
            return ag_error_set(r->err, AG_ERR_PARSE,
                                "transfer syntax UID \"%s\" is not a valid "
                                "UID", uid);
        }
        /* PS3.5 §A.4: syntaxes defined after the first four are explicit
         * VR little endian with encapsulated pixel data. */
        r->explicit_vr = true;
        r->big_endian = false;
        return AG_OK;
    }
    r->explicit_vr = f->ts->explicit_vr;
    r->big_endian = f->ts->big_endian;
    return AG_OK;
}

static int read_file(Reader *r, DicomFile **out)
{
    DicomFile *f = ag_arena_zalloc(r->arena, sizeof *f);
    if (f == NULL || (f->meta = dicom_dataset_create(r->arena)) == NULL ||
        (f->dataset = dicom_dataset_create(r->arena)) == NULL) {
        return arena_fail(r, 0, 0);
    }
    r->root = f->dataset;
    const uint8_t *p;
    size_t avail;
    int rc = dicom__input_peek(r->in, 132, &p, &avail, r->err);
    if (rc != AG_OK && rc != AG_ERR_EOF) {
        return rc;
    }
    if (avail >= 132 && memcmp(p + 128, "DICM", 4) == 0) {
        f->has_preamble = true;
        memcpy(f->preamble, p, 128);   /* data only: never interpreted */
        dicom__input_advance(r->in, 132);
    } else if (avail >= 4 && memcmp(p, "DICM", 4) == 0) {
        dicom__input_advance(r->in, 4);   /* "DICM" without a preamble */
    }
    rc = read_meta(r, f);
    if (rc != AG_OK) {
        return rc;
    }
    const char *ts = dicom_get_string(f->meta, DICOM_TAG_TRANSFER_SYNTAX_UID,
                                      r->arena);
    if (ts == NULL && r->opt->ts_uid != NULL) {
        ts = r->opt->ts_uid;
    }
    if (ts != NULL && ts[0] != '\0') {
        rc = set_syntax(r, f, ts);
        if (rc != AG_OK) {
            return rc;
        }
    } else {
        rc = dicom__input_peek(r->in, 8, &p, &avail, r->err);
        if (rc != AG_OK && rc != AG_ERR_EOF) {
            return rc;
        }
        if (avail == 0 && !f->has_preamble &&
            dicom_dataset_count(f->meta) == 0) {
            return ag_error_set(r->err, AG_ERR_PARSE, "empty file");
        }
        detect_syntax(p, avail, &r->explicit_vr, &r->big_endian);
        const char *uid = !r->explicit_vr ? DICOM_TS_IMPLICIT_LE
                          : r->big_endian ? DICOM_TS_EXPLICIT_BE
                                          : DICOM_TS_EXPLICIT_LE;
        set_syntax(r, f, uid);
        if (!f->has_preamble && dicom_dataset_count(f->meta) == 0 &&
            avail >= 8) {
            /* Without a preamble or meta group, insist that the start looks
             * like a data set, so that random files are refused early. */
            uint16_t g = r->big_endian ? dicom__be16(p) : dicom__le16(p);
            if (g == 0 || g > 0x0100 || (g & 1) != 0) {
                return ag_error_set(r->err, AG_ERR_PARSE,
                                    "not a DICOM file (no preamble, no meta "
                                    "group, first group 0x%04x)", g);
            }
        }
    }
    if (f->ts != NULL && f->ts->deflated) {
        rc = dicom__input_start_inflate(r->in, r->err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    f->dataset_offset = dicom__input_pos(r->in);
    if (r->opt->meta_only) {
        *out = f;
        return AG_OK;
    }
    rc = read_elements(r, f->dataset, 0, UINT64_MAX, false);
    if (rc != AG_OK) {
        return rc;
    }
    f->stopped_at_pixels = r->stopped;
    f->pixel_offset = r->stopped ? r->stop_offset : 0;
    *out = f;
    return AG_OK;
}

static void reader_init(Reader *r, DicomInput *in, const DicomReadOptions *opt,
                        AgArena *a, AgError *err)
{
    static const DicomReadOptions defaults = {0};
    memset(r, 0, sizeof *r);
    r->in = in;
    r->opt = opt != NULL ? opt : &defaults;
    r->arena = a;
    r->err = err;
    r->max_depth = r->opt->max_depth != 0 ? r->opt->max_depth
                                          : DICOM_DEFAULT_MAX_DEPTH;
}

int dicom_read_buffer(const uint8_t *data, size_t len,
                      const DicomReadOptions *opt, AgArena *a,
                      DicomFile **out, AgError *err)
{
    DicomInput in;
    dicom__input_init_mem(&in, data, len);
    Reader r;
    reader_init(&r, &in, opt, a, err);
    int rc = read_file(&r, out);
    dicom__input_deinit(&in);
    return rc;
}

int dicom_read_fd(int fd, const DicomReadOptions *opt, AgArena *a,
                  DicomFile **out, AgError *err)
{
    DicomInput in;
    int rc = dicom__input_init_fd(&in, fd, err);
    if (rc == AG_OK) {
        Reader r;
        reader_init(&r, &in, opt, a, err);
        rc = read_file(&r, out);
    }
    dicom__input_deinit(&in);
    return rc;
}

int dicom_read_path(const char *path, const DicomReadOptions *opt,
                    AgArena *a, DicomFile **out, AgError *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "%s: open", path);
    }
    int rc = dicom_read_fd(fd, opt, a, out, err);
    close(fd);
    if (rc != AG_OK) {
        ag_error_prefix(err, "%s: ", path);
    }
    return rc;
}

int dicom_read_dataset(const uint8_t *data, size_t len, const char *ts_uid,
                       const DicomReadOptions *opt, AgArena *a,
                       DicomDataset **out, AgError *err)
{
    DicomInput in;
    dicom__input_init_mem(&in, data, len);
    Reader r;
    reader_init(&r, &in, opt, a, err);
    DicomDataset *ds = dicom_dataset_create(a);
    int rc = ds == NULL ? arena_fail(&r, 0, 0) : AG_OK;
    const DicomTransferSyntax *ts = dicom_ts_lookup(ts_uid);
    r.explicit_vr = ts == NULL || ts->explicit_vr;
    r.big_endian = ts != NULL && ts->big_endian;
    r.root = ds;
    if (rc == AG_OK && ts != NULL && ts->deflated) {
        rc = dicom__input_start_inflate(&in, err);
    }
    if (rc == AG_OK) {
        rc = read_elements(&r, ds, 0, UINT64_MAX, false);
    }
    dicom__input_deinit(&in);
    if (rc == AG_OK) {
        *out = ds;
    }
    return rc;
}
