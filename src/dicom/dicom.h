/*
 * dicom.h — the DICOM data layer (DESIGN.md §3): tags, VRs, the PS3.6
 * dictionary and UID registry, datasets, Part 10 reading and writing in
 * every uncompressed transfer syntax, character sets, DICOM JSON.
 *
 * Specs: PS3.5 (encoding), PS3.6 (dictionary), PS3.10 (media file format),
 * PS3.18 Annex F (DICOM JSON).
 *
 * Model.  A DicomDataset is an ordered (by tag) set of DicomElements, owned by
 * an AgArena: everything a dataset points to lives in that arena and dies with
 * it.  Values are held in LITTLE-ENDIAN byte order whatever the transfer
 * syntax they came from (the reader swaps big-endian input, the writer swaps
 * back), so accessors never care about byte order.  A sequence element holds
 * item datasets; encapsulated pixel data holds fragments (PS3.5 §A.4).
 *
 * Values may be "not loaded": the reader can stop before the pixel data or
 * skip values above a size threshold, recording where they are in the source
 * (element->offset, element->length) so they can be served zero-copy later.
 *
 * Thread-safety: a dataset belongs to one thread at a time.  The dictionary,
 * UID and transfer syntax tables are immutable and may be read from any
 * thread.
 */
#ifndef AG_DICOM_H
#define AG_DICOM_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- tags ------------------------------------------------------------- */

#define DICOM_TAG(g, e) ((uint32_t)(((uint32_t)(g) << 16) | (uint32_t)(e)))
#define DICOM_TAG_GROUP(t) ((uint16_t)((t) >> 16))
#define DICOM_TAG_ELEMENT(t) ((uint16_t)((t) & 0xffff))
#define DICOM_TAG_IS_PRIVATE(t) ((DICOM_TAG_GROUP(t) & 1) != 0)
/* Private creator (gggg,0010-00FF) reserving block xx of (gggg,xxyy). */
#define DICOM_TAG_IS_PRIVATE_CREATOR(t) \
    (DICOM_TAG_IS_PRIVATE(t) && DICOM_TAG_ELEMENT(t) >= 0x10 && \
     DICOM_TAG_ELEMENT(t) <= 0xff)

/* Delimiters (PS3.5 §7.5) — never stored in a dataset. */
#define DICOM_TAG_ITEM DICOM_TAG(0xfffe, 0xe000)
#define DICOM_TAG_ITEM_END DICOM_TAG(0xfffe, 0xe00d)
#define DICOM_TAG_SEQ_END DICOM_TAG(0xfffe, 0xe0dd)
#define DICOM_UNDEFINED_LENGTH 0xffffffffu

/* Tags the data layer itself relies on. */
#define DICOM_TAG_FILE_META_GROUP_LENGTH DICOM_TAG(0x0002, 0x0000)
#define DICOM_TAG_FILE_META_VERSION DICOM_TAG(0x0002, 0x0001)
#define DICOM_TAG_MEDIA_SOP_CLASS_UID DICOM_TAG(0x0002, 0x0002)
#define DICOM_TAG_MEDIA_SOP_INSTANCE_UID DICOM_TAG(0x0002, 0x0003)
#define DICOM_TAG_TRANSFER_SYNTAX_UID DICOM_TAG(0x0002, 0x0010)
#define DICOM_TAG_IMPLEMENTATION_CLASS_UID DICOM_TAG(0x0002, 0x0012)
#define DICOM_TAG_IMPLEMENTATION_VERSION_NAME DICOM_TAG(0x0002, 0x0013)
#define DICOM_TAG_SOURCE_AE_TITLE DICOM_TAG(0x0002, 0x0016)
#define DICOM_TAG_SPECIFIC_CHARACTER_SET DICOM_TAG(0x0008, 0x0005)
#define DICOM_TAG_SOP_CLASS_UID DICOM_TAG(0x0008, 0x0016)
#define DICOM_TAG_SOP_INSTANCE_UID DICOM_TAG(0x0008, 0x0018)
#define DICOM_TAG_STUDY_INSTANCE_UID DICOM_TAG(0x0020, 0x000d)
#define DICOM_TAG_SERIES_INSTANCE_UID DICOM_TAG(0x0020, 0x000e)
#define DICOM_TAG_PATIENT_ID DICOM_TAG(0x0010, 0x0020)
#define DICOM_TAG_PIXEL_REPRESENTATION DICOM_TAG(0x0028, 0x0103)
#define DICOM_TAG_BITS_ALLOCATED DICOM_TAG(0x0028, 0x0100)
#define DICOM_TAG_EXTENDED_OFFSET_TABLE DICOM_TAG(0x7fe0, 0x0001)
#define DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS DICOM_TAG(0x7fe0, 0x0002)
#define DICOM_TAG_FLOAT_PIXEL_DATA DICOM_TAG(0x7fe0, 0x0008)
#define DICOM_TAG_DOUBLE_PIXEL_DATA DICOM_TAG(0x7fe0, 0x0009)
#define DICOM_TAG_PIXEL_DATA DICOM_TAG(0x7fe0, 0x0010)

/* Agora's implementation identity in the file meta group (PS3.7 D.3.3.2). */
#define DICOM_IMPLEMENTATION_CLASS_UID "1.2.826.0.1.3680043.10.1447.1.0"
#define DICOM_IMPLEMENTATION_VERSION "AGORA_010"

/* ---- value representations (PS3.5 §6.2) ------------------------------ */

typedef uint16_t DicomVR;   /* two ASCII letters, first in the high byte */
#define DICOM_VR(a, b) ((DicomVR)(((unsigned)(a) << 8) | (unsigned)(b)))
enum {
    DICOM_VR_NONE = 0,
    DICOM_VR_AE = DICOM_VR('A', 'E'), DICOM_VR_AS = DICOM_VR('A', 'S'),
    DICOM_VR_AT = DICOM_VR('A', 'T'), DICOM_VR_CS = DICOM_VR('C', 'S'),
    DICOM_VR_DA = DICOM_VR('D', 'A'), DICOM_VR_DS = DICOM_VR('D', 'S'),
    DICOM_VR_DT = DICOM_VR('D', 'T'), DICOM_VR_FD = DICOM_VR('F', 'D'),
    DICOM_VR_FL = DICOM_VR('F', 'L'), DICOM_VR_IS = DICOM_VR('I', 'S'),
    DICOM_VR_LO = DICOM_VR('L', 'O'), DICOM_VR_LT = DICOM_VR('L', 'T'),
    DICOM_VR_OB = DICOM_VR('O', 'B'), DICOM_VR_OD = DICOM_VR('O', 'D'),
    DICOM_VR_OF = DICOM_VR('O', 'F'), DICOM_VR_OL = DICOM_VR('O', 'L'),
    DICOM_VR_OV = DICOM_VR('O', 'V'), DICOM_VR_OW = DICOM_VR('O', 'W'),
    DICOM_VR_PN = DICOM_VR('P', 'N'), DICOM_VR_SH = DICOM_VR('S', 'H'),
    DICOM_VR_SL = DICOM_VR('S', 'L'), DICOM_VR_SQ = DICOM_VR('S', 'Q'),
    DICOM_VR_SS = DICOM_VR('S', 'S'), DICOM_VR_ST = DICOM_VR('S', 'T'),
    DICOM_VR_SV = DICOM_VR('S', 'V'), DICOM_VR_TM = DICOM_VR('T', 'M'),
    DICOM_VR_UC = DICOM_VR('U', 'C'), DICOM_VR_UI = DICOM_VR('U', 'I'),
    DICOM_VR_UL = DICOM_VR('U', 'L'), DICOM_VR_UN = DICOM_VR('U', 'N'),
    DICOM_VR_UR = DICOM_VR('U', 'R'), DICOM_VR_US = DICOM_VR('U', 'S'),
    DICOM_VR_UT = DICOM_VR('U', 'T'), DICOM_VR_UV = DICOM_VR('U', 'V'),
};

typedef enum DicomVRKind {
    DICOM_VRK_STRING,   /* text, backslash-separated values */
    DICOM_VRK_TEXT,     /* LT ST UT UR: one value, backslash is a character */
    DICOM_VRK_BINARY,   /* fixed-size numbers (US SS UL SL FL FD AT SV UV) */
    DICOM_VRK_BULK,     /* OB OD OF OL OV OW UN */
    DICOM_VRK_SEQUENCE, /* SQ */
} DicomVRKind;

typedef struct DicomVRInfo {
    DicomVR vr;
    char name[3];
    DicomVRKind kind;
    bool long_header;   /* explicit VR: 2 reserved bytes + 32-bit length */
    uint8_t unit;       /* byte-swap unit: 1, 2, 4 or 8 */
    char pad;           /* padding byte for odd lengths: ' ' or '\0' */
    uint32_t max_len;   /* max bytes per value (0 = no fixed limit) */
} DicomVRInfo;

/** Info for a VR, or NULL if vr is not one of the 34 VRs of PS3.5. */
const DicomVRInfo *dicom_vr_info(DicomVR vr);
/** Parse two characters ("US") to a VR; DICOM_VR_NONE if unknown. */
DicomVR dicom_vr_from_str(const char *s);
/** Two-letter name into out[3]; "??" for unknown codes.  Returns out. */
const char *dicom_vr_str(DicomVR vr, char out[3]);

/* ---- dictionary (PS3.6, generated by tools/gen_dict.py) -------------- */

typedef struct DicomDictEntry {
    uint32_t tag;       /* with the repeating digits zero, e.g. 0x60000010 */
    uint32_t mask;      /* bits of a tag that must equal `tag` */
    DicomVR vr;         /* first VR; DICOM_VR_NONE for delimiters */
    DicomVR vr2;        /* second VR of "US or SS", "OB or OW"; else NONE */
    DicomVR vr3;        /* third VR ("US or SS or OW"); else NONE */
    const char *vm;     /* "1", "1-n", "2-2n", ... */
    const char *keyword;
    const char *name;
    bool retired;
} DicomDictEntry;

/** Entry for a standard tag (repeating groups 50xx/60xx/7Fxx included). */
const DicomDictEntry *dicom_dict_lookup(uint32_t tag);
/** Entry by keyword ("PatientName"); NULL if none. */
const DicomDictEntry *dicom_dict_find_keyword(const char *keyword);
/**
 * Entry for a private element, given the value of its private creator
 * ((gggg,00xx) of (gggg,xxyy)), from the private dictionary; NULL if none.
 */
const DicomDictEntry *dicom_dict_lookup_private(const char *creator,
                                                uint32_t tag);
/** Number of standard entries (for tests). */
size_t dicom_dict_size(void);

/**
 * VR to use for a tag when the transfer syntax is implicit: group lengths are
 * UL, private creators LO, unknown tags UN; ambiguous entries return their
 * first VR (the reader resolves US/SS and OB/OW from context).
 */
DicomVR dicom_dict_vr(uint32_t tag);

/* ---- UIDs ------------------------------------------------------------- */

typedef struct DicomUidEntry {
    const char *uid;
    const char *name;      /* "CT Image Storage" */
    const char *keyword;   /* "CTImageStorage" */
    const char *type;      /* "SOP Class", "Transfer Syntax", ... */
    bool retired;
} DicomUidEntry;

/** Registry entry for a UID (PS3.6 Annex A); NULL if not registered. */
const DicomUidEntry *dicom_uid_lookup(const char *uid);
size_t dicom_uid_registry_size(void);
/** Registry entry i (0 <= i < size), for enumerating SOP classes. */
const DicomUidEntry *dicom_uid_registry_at(size_t i);

/**
 * True if s[0..len) is a valid UID (PS3.5 §9.1): 1..64 chars of digits and
 * dots, no empty component, no leading zero in a multi-digit component.
 */
bool dicom_uid_valid(const char *s, size_t len);

/* ---- transfer syntaxes (PS3.5 §10, Annex A) -------------------------- */

#define DICOM_TS_IMPLICIT_LE "1.2.840.10008.1.2"
#define DICOM_TS_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define DICOM_TS_DEFLATED_LE "1.2.840.10008.1.2.1.99"
#define DICOM_TS_EXPLICIT_BE "1.2.840.10008.1.2.2"

typedef struct DicomTransferSyntax {
    const char *uid;
    const char *name;
    bool explicit_vr;
    bool big_endian;
    bool deflated;
    bool encapsulated;  /* pixel data in fragments (PS3.5 §A.4) */
    bool lossy;
    bool retired;
} DicomTransferSyntax;

/**
 * Transfer syntax for a UID (trailing NUL/space padding ignored).  Unknown
 * UIDs return NULL; callers may treat them as explicit VR little endian with
 * encapsulated pixel data (PS3.5 §A.4: every later syntax is).
 */
const DicomTransferSyntax *dicom_ts_lookup(const char *uid);
size_t dicom_ts_count(void);
const DicomTransferSyntax *dicom_ts_at(size_t i);

/* ---- datasets and elements ------------------------------------------- */

typedef struct DicomDataset DicomDataset;

/* DicomElement.flags */
#define DICOM_EL_UNDEFINED_LENGTH 0x01 /* SQ or encapsulated, as read */
#define DICOM_EL_NOT_LOADED 0x02       /* value left in the source */
#define DICOM_EL_ENCAPSULATED 0x04     /* pixel data as fragments */
#define DICOM_EL_BULK_URI 0x08         /* from JSON: value holds the
                                        * BulkDataURI text, not the bytes */

typedef struct DicomFragment {
    uint64_t offset;        /* of the fragment's bytes in the source */
    uint32_t length;
    uint8_t *data;          /* arena-owned; NULL if not loaded */
} DicomFragment;

typedef struct DicomElement {
    uint32_t tag;
    DicomVR vr;
    uint16_t flags;
    /* Value length in bytes.  For SQ and encapsulated pixel data the
     * length as read (DICOM_UNDEFINED_LENGTH if undefined); the writer
     * recomputes defined lengths. */
    uint32_t length;
    uint8_t *value;         /* little-endian value bytes (arena); NULL if
                             * length is 0, for SQ/encapsulated, or when
                             * DICOM_EL_NOT_LOADED */
    uint64_t offset;        /* of the value in the source stream */
    DicomDataset **items;   /* SQ items */
    uint32_t nitems;
    uint32_t items_cap;     /* allocated slots in items */
    uint32_t nfrags;        /* encapsulated: frags[0] is the basic offset */
    DicomFragment *frags;   /* table (PS3.5 §A.4), possibly empty */
} DicomElement;

/** New empty dataset in arena a.  NULL when the arena refuses. */
DicomDataset *dicom_dataset_create(AgArena *a);
AgArena *dicom_dataset_arena(const DicomDataset *ds);
/** The dataset an item belongs to; NULL at the top level. */
DicomDataset *dicom_dataset_parent(const DicomDataset *ds);
size_t dicom_dataset_count(const DicomDataset *ds);
/** Element i in tag order (0 <= i < count); borrowed. */
DicomElement *dicom_dataset_at(const DicomDataset *ds, size_t i);
/** Element with this tag, or NULL.  Binary search. */
DicomElement *dicom_dataset_find(const DicomDataset *ds, uint32_t tag);
/** Remove the element; AG_ERR_NOTFOUND if absent. */
int dicom_dataset_remove(DicomDataset *ds, uint32_t tag);
/** Items: whether an item was encoded with undefined length (as read). */
bool dicom_dataset_item_undefined_length(const DicomDataset *ds);
void dicom_dataset_set_item_undefined_length(DicomDataset *ds, bool on);

/**
 * Insert or replace the element with el->tag (copied; its pointers must be
 * arena-owned by ds's arena).  Returns the stored element via *out (may be
 * NULL).  AG_ERR_NOMEM/AG_ERR_LIMIT from the arena.
 */
int dicom_dataset_put(DicomDataset *ds, const DicomElement *el,
                      DicomElement **out);

/**
 * Set a value from bytes (copied into the arena), in little-endian order for
 * binary VRs.  vr 0 means the dictionary's VR.  Strings of odd length are
 * padded per the VR (space, or NUL for UI).  Replaces an existing element.
 */
int dicom_set_bytes(DicomDataset *ds, uint32_t tag, DicomVR vr,
                    const void *data, size_t len, AgError *err);
/** Set a string value (values separated by '\\'); vr 0 = dictionary. */
int dicom_set_string(DicomDataset *ds, uint32_t tag, DicomVR vr,
                     const char *value, AgError *err);
/** Set n integer values (US SS UL SL SV UV, or IS as text). */
int dicom_set_ints(DicomDataset *ds, uint32_t tag, DicomVR vr,
                   const int64_t *values, size_t n, AgError *err);
/** Set n float values (FL FD OF OD, or DS as text). */
int dicom_set_floats(DicomDataset *ds, uint32_t tag, DicomVR vr,
                     const double *values, size_t n, AgError *err);
/** Add an empty SQ (or return the existing one) via *out. */
int dicom_set_sequence(DicomDataset *ds, uint32_t tag, DicomElement **out,
                       AgError *err);
/** Append a new empty item to a sequence; the item is returned in *out. */
int dicom_sequence_append(DicomDataset *ds, DicomElement *seq,
                          DicomDataset **out, AgError *err);

/**
 * Number of values (VM) of an element: backslash count + 1 for string VRs,
 * length / size for binary VRs, 1 for bulk/text, items for SQ, 0 if empty.
 */
size_t dicom_element_vm(const DicomElement *el);

/**
 * String value i of an element (a string VR), raw bytes in the dataset's
 * character set, with leading/trailing padding trimmed per PS3.5 §6.2
 * (trailing spaces and NULs; leading spaces except for LT/ST/UT/UR which
 * keep them).  Allocated in a.  AG_ERR_NOTFOUND if i >= VM.
 */
int dicom_element_string(const DicomElement *el, size_t i, AgArena *a,
                         char **out, AgError *err);
/** The whole value as text (all values, backslashes kept), trimmed. */
int dicom_element_text(const DicomElement *el, AgArena *a, char **out,
                       AgError *err);
/** Integer value i (US SS UL SL SV UV AT, IS text). */
int dicom_element_int(const DicomElement *el, size_t i, int64_t *out,
                      AgError *err);
/** Float value i (FL FD OF OD, DS text, and the integer VRs). */
int dicom_element_float(const DicomElement *el, size_t i, double *out,
                        AgError *err);

/** Convenience: find + dicom_element_string(el, 0) or NULL if absent. */
const char *dicom_get_string(const DicomDataset *ds, uint32_t tag,
                             AgArena *a);
/** Convenience: find + dicom_element_int(el, 0); AG_ERR_NOTFOUND if absent. */
int dicom_get_int(const DicomDataset *ds, uint32_t tag, int64_t *out);

/**
 * The Specific Character Set in force for ds: its own (0008,0005) or the
 * nearest parent's (PS3.5 §6.1.2.5.3 — items inherit); NULL means the
 * default repertoire.  Raw value, backslashes kept; allocated in a.
 */
const char *dicom_dataset_charset(const DicomDataset *ds, AgArena *a);

/**
 * The element's whole value decoded to UTF-8 (string and text VRs only),
 * using the character set in force for ds.  Allocated in a.
 */
int dicom_element_utf8(const DicomDataset *ds, const DicomElement *el,
                       AgArena *a, char **out, AgError *err);

/* ---- person names (PS3.5 §6.2.1) ------------------------------------- */

enum { DICOM_PN_ALPHABETIC, DICOM_PN_IDEOGRAPHIC, DICOM_PN_PHONETIC };
enum { DICOM_PN_FAMILY, DICOM_PN_GIVEN, DICOM_PN_MIDDLE, DICOM_PN_PREFIX,
       DICOM_PN_SUFFIX };

typedef struct DicomPersonName {
    /* group[g] is the whole component group ("Doe^John") or NULL when the
     * group is absent; comp[g][c] its components ("" when empty). */
    const char *group[3];
    const char *comp[3][5];
} DicomPersonName;

/** Split one PN value (already UTF-8 or raw) into groups and components. */
int dicom_pn_parse(const char *value, AgArena *a, DicomPersonName *out,
                   AgError *err);

/* ---- character sets (PS3.5 §6.1, PS3.3 C.12.1.1.2) ------------------ */

/**
 * Decode a value in the given Specific Character Set (the raw (0008,0005)
 * value, backslash-separated; NULL or "" = default repertoire) to UTF-8.
 * Handles single-byte sets (ISO_IR 100..., ISO_IR 13/166...), ISO_IR 192,
 * GB18030, GBK, and ISO 2022 code extensions with escape sequences (Japanese
 * ISO 2022 IR 87/159, Korean IR 149, Chinese IR 58), resetting to the
 * initial set at value delimiters as PS3.5 §6.1.2.5.3 requires (for PN also
 * at '^' and '='); vr tells which delimiters apply.  Bytes that cannot be
 * decoded become U+FFFD.  *out is NUL-terminated, allocated in a.
 * Errors: AG_ERR_UNSUPPORTED for an unknown defined term.
 * Thread-safe: converters are cached per thread (closed at thread exit).
 */
int dicom_charset_to_utf8(const char *charset, DicomVR vr,
                          const uint8_t *in, size_t len, AgArena *a,
                          char **out, size_t *out_len, AgError *err);

/** True if every value of the (0008,0005) value names a supported term. */
bool dicom_charset_supported(const char *charset);

/* ---- reading (PS3.10 §7, PS3.5 §7) ----------------------------------- */

typedef struct DicomReadOptions {
    bool stop_before_pixels;  /* stop at (7FE0,0008/0009/0010) */
    uint32_t bulk_threshold;  /* don't load values longer than this (and
                               * fragments); 0 = load everything */
    uint32_t max_depth;       /* sequence nesting; 0 = default (32) */
    const char *ts_uid;       /* for a bare dataset (no preamble/meta):
                               * its transfer syntax; NULL = detect */
    bool strict;              /* refuse what PS3.5 forbids but readers
                               * tolerate (odd value lengths) */
    bool meta_only;           /* stop after the file meta group: ts_uid
                               * and dataset_offset are set, dataset empty */
} DicomReadOptions;

typedef struct DicomFile {
    DicomDataset *meta;        /* file meta group 0002 (may be empty) */
    DicomDataset *dataset;     /* the data set */
    const DicomTransferSyntax *ts;
    char ts_uid[65];           /* as declared (or detected) */
    bool has_preamble;         /* 128-byte preamble + "DICM" present */
    uint8_t preamble[128];     /* kept as data; never interpreted */
    uint64_t dataset_offset;   /* where the data set starts in the source */
    bool stopped_at_pixels;    /* read stopped before pixel data */
    uint64_t pixel_offset;     /* offset of the pixel data element header
                                * when stopped there (else 0) */
} DicomFile;

/**
 * Read a Part 10 file (or a bare dataset) from memory.  Everything is
 * allocated in a; the buffer is borrowed only for the call.  Errors
 * (AG_ERR_PARSE, AG_ERR_LIMIT when a's budget or max_depth is exceeded,
 * AG_ERR_UNSUPPORTED) name the offset and the element.
 */
int dicom_read_buffer(const uint8_t *data, size_t len,
                      const DicomReadOptions *opt, AgArena *a,
                      DicomFile **out, AgError *err);

/** Same from a file descriptor, reading forward only (pipes allowed). */
int dicom_read_fd(int fd, const DicomReadOptions *opt, AgArena *a,
                  DicomFile **out, AgError *err);

/** Open, dicom_read_fd, close.  Errors are prefixed with the path. */
int dicom_read_path(const char *path, const DicomReadOptions *opt,
                    AgArena *a, DicomFile **out, AgError *err);

/**
 * Read a bare data set in a known transfer syntax (DIMSE data sets, PS3.7):
 * no preamble, no meta group.
 */
int dicom_read_dataset(const uint8_t *data, size_t len, const char *ts_uid,
                       const DicomReadOptions *opt, AgArena *a,
                       DicomDataset **out, AgError *err);

/* ---- writing (PS3.10 §7, PS3.5 §7) ----------------------------------- */

/** Output callback: write all len bytes or return an error. */
typedef int (*DicomSink)(void *ctx, const void *data, size_t len,
                         AgError *err);
/** Sinks for an fd (ctx = int *) and an AgBuf (ctx = AgBuf *). */
int dicom_sink_fd(void *ctx, const void *data, size_t len, AgError *err);
int dicom_sink_buf(void *ctx, const void *data, size_t len, AgError *err);

/**
 * Source of values that were not loaded (DICOM_EL_NOT_LOADED): read len
 * bytes at offset of the original stream.  Values come back in the byte
 * order of the original transfer syntax.
 */
typedef struct DicomBulkSource {
    int (*read)(void *ctx, uint64_t offset, void *dst, size_t len,
                AgError *err);
    void *ctx;
    bool big_endian;            /* the source's byte order */
} DicomBulkSource;

typedef struct DicomWriteOptions {
    bool zero_preamble;         /* write 128 zero bytes, not f->preamble */
    const DicomBulkSource *bulk;/* for not-loaded values; NULL = refuse */
} DicomWriteOptions;

/**
 * Write a Part 10 file: preamble, "DICM", the meta group (group length
 * recomputed; Transfer Syntax UID set to ts_uid, NULL = f->ts_uid) and the
 * data set encoded in that transfer syntax.  Only the four uncompressed
 * syntaxes and those with encapsulated pixel data the dataset already has
 * are accepted here; transcoding pixel data is codec/'s job.
 */
int dicom_write_file(const DicomFile *f, const char *ts_uid,
                     const DicomWriteOptions *opt, DicomSink sink, void *ctx,
                     AgError *err);

/** Write a bare data set (no meta) in a transfer syntax. */
int dicom_write_dataset(const DicomDataset *ds, const char *ts_uid,
                        const DicomWriteOptions *opt, DicomSink sink,
                        void *ctx, AgError *err);

/**
 * Fill f->meta from f->dataset for writing: version 00\01, media SOP
 * class/instance from (0008,0016)/(0008,0018), transfer syntax, Agora's
 * implementation class UID and version name.  Keeps an existing Source AE.
 */
int dicom_file_build_meta(DicomFile *f, const char *ts_uid, AgError *err);

/* ---- DICOM JSON (PS3.18 Annex F) ------------------------------------- */

typedef struct DicomJsonOptions {
    /* Values of bulk VRs longer than this become BulkDataURI when
     * bulk_uri_prefix is set, InlineBinary otherwise.  0 = always inline. */
    uint32_t bulk_threshold;
    /* BulkDataURI = prefix + "/" + tag path, e.g. ".../bulkdata/7FE00010"
     * or ".../bulkdata/00540016/0/00181072" for nested elements. */
    const char *bulk_uri_prefix;
    bool pretty;            /* indent (for `agora dump --json`) */
    /* Keep group 0002 and group lengths (default: omit them). */
    bool include_meta;
} DicomJsonOptions;

/**
 * Stream ds as one DICOM JSON object ({"00080005": {...}, ...}) to sink.
 * Strings are converted to UTF-8 per the dataset's character set; PN values
 * become {"Alphabetic":..,"Ideographic":..,"Phonetic":..}; IS/DS become JSON
 * numbers; AT becomes hex strings.  No tree is built: output is produced
 * element by element.
 */
int dicom_json_write(const DicomDataset *ds, const DicomJsonOptions *opt,
                     DicomSink sink, void *ctx, AgError *err);

/**
 * Parse one DICOM JSON object into a dataset in a (strings stored as UTF-8
 * with (0008,0005) set to ISO_IR 192 when non-ASCII text is present).
 * BulkDataURI values become elements flagged DICOM_EL_BULK_URI whose value
 * is the URI text.  InlineBinary is decoded (base64).  Depth and size are
 * capped; errors name the JSON path (e.g. "00081115/0/0020000E").
 */
int dicom_json_read(const char *json, size_t len, AgArena *a,
                    DicomDataset **out, AgError *err);

/* ---- text dump --------------------------------------------------------- */

/**
 * Print a dataset like dcmdump: one line per element,
 * `(gggg,eeee) VR [value]   # length, VM Keyword`, items and sequences
 * indented.  Strings are shown as UTF-8; long values truncated to max_value
 * characters (0 = 64).
 */
int dicom_dump(const DicomDataset *ds, size_t max_value, DicomSink sink,
               void *ctx, AgError *err);

#endif
