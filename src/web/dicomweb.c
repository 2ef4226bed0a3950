/*
 * dicomweb.c — DICOMweb (PS3.18): QIDO-RS (§10.6), WADO-RS (§10.4) and
 * STOW-RS (§10.5) over the archive core.
 *
 * QIDO-RS shares store_query() with C-FIND.  WADO-RS streams instances from
 * their blobs in a multipart/related body (bounded memory whatever the
 * study's size) and answers /metadata from the per-instance DICOM JSON
 * built at ingest.  STOW-RS streams each application/dicom part into a
 * StoreSpool (hashed as it arrives; small parts stay in memory, larger
 * ones go to a file the ingest pipeline renames into the blob store) and
 * bulk data parts to spool files until their metadata is read.
 */
#include "web_int.h"
#include "codec/codec.h"
#include "web/multipart.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BOUNDARY "agora-7c2f1e09b4d85a36"
#define MAX_WADO_INSTANCES 100000u
#define DICOM_JSON "application/dicom+json"

static bool is_uid(const char *s)
{
    return s != NULL && dicom_uid_valid(s, strlen(s));
}

/* ---- JSON responses: gzip when the client takes it ---------------------- */

/* JSON this small is not worth compressing. */
#define GZIP_MIN 1024

static int gzip_buf(const uint8_t *in, size_t len, AgBuf *out, AgError *err)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 15 + 16: a gzip wrapper (RFC 1952), as Content-Encoding:
     * gzip means (RFC 9110 §8.4.1.3).  Level 1: DICOM JSON is so
     * repetitive that it still shrinks ~50x; the 900 KB metadata of a
     * 300-instance series took 10.5 ms at the default level 6 (11 KB) and
     * 4.9 ms at level 1 (17 KB), and a browser always asks for gzip. */
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return ag_error_set(err, AG_ERR_NOMEM, "gzip: out of memory");
    }
    int rc = ag_buf_reserve(out, deflateBound(&z, (uLong)len));
    if (rc != AG_OK) {
        deflateEnd(&z);
        return ag_error_set(err, rc, "gzip: no room for %zu bytes", len);
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = out->data + out->len;
    z.avail_out = (uInt)(out->cap - out->len);
    int zr = deflate(&z, Z_FINISH);
    if (zr == Z_STREAM_END) {
        out->len += (size_t)z.total_out;
    }
    deflateEnd(&z);
    return zr == Z_STREAM_END ? AG_OK
        : ag_error_set(err, AG_ERR_IO, "gzip: deflate failed (%d)", zr);
}

/*
 * A DICOM JSON response, gzip-encoded when the client's Accept-Encoding
 * takes gzip (large metadata shrinks about tenfold).  The caller adds any
 * other header and sends it.  NULL when out of memory.
 */
static struct MHD_Response *json_response(WebRequest *r, const void *body,
                                          size_t len)
{
    const char *ae = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 "Accept-Encoding");
    struct MHD_Response *resp = NULL;
    bool gz = false;
    /* deflate's stream counters are 32-bit: larger bodies go plain. */
    if (len >= GZIP_MIN && len < UINT32_MAX / 2 && web_accept_gzip(ae)) {
        AgBuf z;
        ag_buf_init(&z, 0);
        AgError err;
        if (gzip_buf(body, len, &z, &err) == AG_OK) {
            resp = MHD_create_response_from_buffer(z.len, z.data,
                                                   MHD_RESPMEM_MUST_COPY);
            gz = resp != NULL;
        } else {
            ag_log(AG_LOG_WARN, "http", "sending JSON uncompressed: %s",
                   err.msg);
        }
        ag_buf_deinit(&z);
    }
    if (resp == NULL) {
        resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body,
                                               MHD_RESPMEM_MUST_COPY);
    }
    if (resp != NULL) {
        MHD_add_response_header(resp, "Content-Type", DICOM_JSON);
        MHD_add_response_header(resp, "Vary", "Accept-Encoding");
        if (gz) {
            MHD_add_response_header(resp, "Content-Encoding", "gzip");
        }
    }
    return resp;
}

/* ---- QIDO-RS --------------------------------------------------------------- */

typedef struct QidoArgs {
    WebRequest *r;
    DicomDataset *keys;
    StoreQuery q;
    char bad[160];
} QidoArgs;

static uint32_t parse_tag(const char *key)
{
    if (strlen(key) == 8 && strspn(key, "0123456789abcdefABCDEF") == 8) {
        return (uint32_t)strtoul(key, NULL, 16);
    }
    const DicomDictEntry *e = dicom_dict_find_keyword(key);
    return e != NULL ? e->tag : 0;
}

/* includefield: a comma list of tags or keywords, or "all" (PS3.18
 * §8.3.4.3).  Indexed attributes are always returned; the others become
 * empty return keys, answered from the instances' metadata. */
static int include_fields(DicomDataset *keys, const char *value, char *bad,
                          size_t badcap)
{
    AgArena *ar = dicom_dataset_arena(keys);
    char *list = ag_arena_strdup(ar, value);
    for (char *save = NULL, *t = list ? strtok_r(list, ",", &save) : NULL;
         t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "all") == 0) {
            continue;
        }
        uint32_t tag = parse_tag(t);
        const DicomDictEntry *e = tag ? dicom_dict_lookup(tag) : NULL;
        if (tag == 0 || e == NULL || e->vr == DICOM_VR_NONE) {
            ag_fmt(bad, badcap, "unknown includefield \"%.64s\"", t);
            return AG_ERR_INVALID;
        }
        if (dicom_dataset_find(keys, tag) != NULL) {
            continue;
        }
        DicomElement *sq;
        int rc = e->vr == DICOM_VR_SQ
                     ? dicom_set_sequence(keys, tag, &sq, NULL)
                     : dicom_set_bytes(keys, tag, e->vr, "", 0, NULL);
        if (rc != AG_OK) {
            ag_fmt(bad, badcap, "too many includefield values");
            return rc;
        }
    }
    return AG_OK;
}

int web__qido_param(DicomDataset *keys, StoreQuery *q, const char *key,
                    const char *value, char *bad, size_t badcap)
{
    if (value == NULL) {
        value = "";
    }
    char *end;
    if (strcmp(key, "limit") == 0 || strcmp(key, "offset") == 0) {
        unsigned long v = strtoul(value, &end, 10);
        if (*end != '\0' || value[0] == '\0' || v > 1000000) {
            ag_fmt(bad, badcap, "%s must be a number", key);
            return AG_ERR_INVALID;
        }
        if (key[0] == 'l') {
            q->limit = (uint32_t)v;
        } else {
            q->offset = (uint32_t)v;
        }
        return AG_OK;
    }
    if (strcmp(key, "fuzzymatching") == 0) {
        q->fuzzy = strcmp(value, "true") == 0;
        return AG_OK;
    }
    if (strcmp(key, "includefield") == 0) {
        return include_fields(keys, value, bad, badcap);
    }
    uint32_t tag = parse_tag(key);
    const DicomDictEntry *e = tag ? dicom_dict_lookup(tag) : NULL;
    if (tag == 0 || e == NULL || e->vr == DICOM_VR_SQ ||
        e->vr == DICOM_VR_NONE) {
        ag_fmt(bad, badcap, "unknown or unsupported query key \"%.64s\"",
               key);
        return AG_ERR_INVALID;
    }
    /* Repeated keys become alternatives ("\\"-joined, as QIDO allows). */
    const DicomElement *have = dicom_dataset_find(keys, tag);
    AgArena *ar = dicom_dataset_arena(keys);
    const char *v = value;
    if (have != NULL && have->length > 0) {
        char *old = NULL;
        dicom_element_text(have, ar, &old, NULL);
        v = ag_arena_printf(ar, "%s\\%s", old ? old : "", value);
    }
    DicomVR vr = e->vr == DICOM_VR_US || e->vr == DICOM_VR_UL
                     ? DICOM_VR_LO : e->vr;   /* matched as text */
    if (v == NULL || dicom_set_string(keys, tag, vr, v, NULL) != AG_OK) {
        ag_fmt(bad, badcap, "value of %.64s is too long", key);
        return AG_ERR_LIMIT;
    }
    return AG_OK;
}

static enum MHD_Result qido_arg(void *cls, enum MHD_ValueKind kind,
                                const char *key, const char *value)
{
    (void)kind;
    QidoArgs *a = cls;
    if (a->bad[0] != '\0') {
        return MHD_NO;
    }
    return web__qido_param(a->keys, &a->q, key, value, a->bad,
                           sizeof a->bad) == AG_OK ? MHD_YES : MHD_NO;
}

typedef struct QidoOut {
    AgBuf json;
    size_t n;
    int rc;
    AgError err;
} QidoOut;

static int qido_match(void *ctx, const DicomDataset *m)
{
    QidoOut *o = ctx;
    if (o->n++ > 0) {
        ag_buf_append(&o->json, ",", 1);
    }
    DicomJsonOptions jo = {0};
    o->rc = dicom_json_write(m, &jo, dicom_sink_buf, &o->json, &o->err);
    return o->rc != AG_OK;
}

static enum MHD_Result qido(WebRequest *r, StoreLevel level,
                            const char *study, const char *series)
{
    QidoArgs a = {.r = r};
    /* Without fuzzymatching, the archive's setting (PS3.18 §8.3.4.1: the
     * origin server's default), changeable at run time (store.h). */
    a.q.fuzzy = store_setting_bool(web__store(r), "fuzzy_names");
    a.keys = dicom_dataset_create(r->arena);
    if (a.keys == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    /* Query values arrive as UTF-8 (RFC 3986 percent-encoding). */
    dicom_set_string(a.keys, DICOM_TAG_SPECIFIC_CHARACTER_SET, DICOM_VR_CS,
                     "ISO_IR 192", NULL);
    if (study != NULL) {
        dicom_set_string(a.keys, DICOM_TAG_STUDY_INSTANCE_UID, 0, study,
                         NULL);
    }
    if (series != NULL) {
        dicom_set_string(a.keys, DICOM_TAG_SERIES_INSTANCE_UID, 0, series,
                         NULL);
    }
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, qido_arg, &a);
    if (a.bad[0] != '\0') {
        return web__json_error(r, 400, "bad query", a.bad);
    }
    a.q.level = level;
    a.q.keys = a.keys;
    a.q.all_fields = true;
    a.q.scope = &r->who.scope;   /* the access filter (DESIGN.md §5) */
    QidoOut o = {0};
    ag_buf_init(&o.json, 256u << 20);
    ag_buf_append(&o.json, "[", 1);
    bool more = false;
    AgError err;
    int rc = store_query(web__store(r), &a.q, qido_match, &o, &more, &err);
    enum MHD_Result ret;
    if (rc == AG_ERR_INVALID || rc == AG_ERR_UNSUPPORTED) {
        ret = web__json_error(r, 400, "bad query", err.msg);
    } else if (rc != AG_OK || o.rc != AG_OK) {
        ret = web__json_error(r, 500, "query failed",
                              rc != AG_OK ? err.msg : o.err.msg);
    } else {
        ag_buf_append(&o.json, "]", 1);
        struct MHD_Response *resp = json_response(r, o.json.data,
                                                  o.json.len);
        if (resp != NULL) {
            if (more) {
                /* PS3.18 §8.3.4.3: results were cut by the limit. */
                MHD_add_response_header(resp, "Warning",
                    "299 agora: \"The number of results exceeded the "
                    "maximum supported by the server. Additional results "
                    "can be requested.\"");
            }
        }
        ret = web__send_response(r, 200, resp);
    }
    ag_buf_deinit(&o.json);
    return ret;
}

/* ---- WADO-RS: which instances, in which transfer syntax ----------------- */

#define TAG_AVAILABLE_TS DICOM_TAG(0x0008, 0x3002)
#define TAG_NUMBER_OF_FRAMES DICOM_TAG(0x0028, 0x0008)
/* Transcoding reads one instance into memory; larger instances are sent
 * as stored when the syntax was a default, refused when it was named. */
#define TRANSCODE_MAX_BYTES ((uint64_t)512 << 20)

typedef struct InstRef {
    char uid[65];
    char ts[65];          /* as stored (the index's Available Transfer
                           * Syntax UID) */
} InstRef;

typedef struct UidList {
    InstRef *v;
    size_t n, cap;
    bool oom;
} UidList;

static int add_uid(void *ctx, const DicomDataset *m)
{
    UidList *l = ctx;
    AgArena *a = dicom_dataset_arena(m);
    const char *v = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID, a);
    const char *ts = dicom_get_string(m, TAG_AVAILABLE_TS, a);
    if (v == NULL) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *p = ag_realloc(l->v, cap * sizeof *l->v);
        if (p == NULL) {
            l->oom = true;
            return 1;
        }
        l->v = p;
        l->cap = cap;
    }
    ag_fmt(l->v[l->n].uid, sizeof l->v[l->n].uid, "%s", v);
    ag_fmt(l->v[l->n].ts, sizeof l->v[l->n].ts, "%s", ts ? ts : "");
    l->n++;
    return 0;
}

/* Instances of a study / series / one instance, in order, with their
 * stored transfer syntax: one query, inside the caller's access scope. */
static int list_instances(WebRequest *r, const char *study,
                          const char *series, const char *instance,
                          UidList *out, AgError *err)
{
    DicomDataset *k = dicom_dataset_create(r->arena);
    if (k == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    dicom_set_string(k, DICOM_TAG_STUDY_INSTANCE_UID, 0, study, NULL);
    if (series != NULL) {
        dicom_set_string(k, DICOM_TAG_SERIES_INSTANCE_UID, 0, series, NULL);
    }
    dicom_set_string(k, DICOM_TAG_SOP_INSTANCE_UID, 0,
                     instance != NULL ? instance : "", NULL);
    dicom_set_string(k, TAG_AVAILABLE_TS, DICOM_VR_UI, "", NULL);
    StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = k,
                    .limit = MAX_WADO_INSTANCES, .scope = &r->who.scope};
    int rc = store_query(web__store(r), &q, add_uid, out, NULL, err);
    if (rc == AG_OK && out->oom) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    return rc;
}

/* The Accept header, or 400 for one that is not the grammar. */
static bool parse_accept(WebRequest *r, WebAccept *acc, AgError *err)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                "Accept");
    return web_accept_parse(h, acc, err) == AG_OK;
}

/* No Accept header accepts anything (RFC 9110 §12.5.1); one whose every
 * range has q=0 accepts nothing. */
static const WebMediaRange *range_at(const WebAccept *acc, int i)
{
    static const WebMediaRange any = {.type = "*/*", .q = 1000};
    return acc->n == 0 ? &any : &acc->range[i];
}

static int range_count(const WebAccept *acc)
{
    return acc->n == 0 && acc->excluded == 0 ? 1 : acc->n;
}

/* The media type of the parts a range asks for: type= of
 * multipart/related ("*" "/" "*" when absent), else the range itself. */
static const char *part_media(const WebMediaRange *m)
{
    if (strcmp(m->type, "multipart/related") == 0) {
        return m->part_type[0] != '\0' ? m->part_type : "*/*";
    }
    if (strcmp(m->type, "multipart/*") == 0) {
        return "*/*";
    }
    if (strcmp(m->type, "image/x-dicom-rle") == 0) {
        return "image/dicom-rle";
    }
    return m->type;
}

/* PS3.18 §8.7.3: Implicit VR Little Endian and Explicit VR Big Endian
 * "shall not be used with Web Services"; they are only ever sent as
 * stored, when the client names them or asks for the stored syntax. */
static bool never_produced(const char *ts)
{
    return strcmp(ts, DICOM_TS_IMPLICIT_LE) == 0 ||
           strcmp(ts, DICOM_TS_EXPLICIT_BE) == 0;
}

static bool can_transcode(const char *from, const char *to)
{
    const DicomTransferSyntax *f = dicom_ts_lookup(from);
    const DicomTransferSyntax *t = dicom_ts_lookup(to);
    if (f == NULL || t == NULL || never_produced(to)) {
        return false;
    }
    if (f->encapsulated && !codec_can_decode(from)) {
        return false;
    }
    return !t->encapsulated || codec_can_encode(to);
}

typedef struct InstChoice {
    char ts[65];          /* "" = as stored: the blob's bytes, no parse */
    bool dflt;            /* the default syntax, not one the client named */
    bool single;          /* bare application/dicom: one part, no multipart */
} InstChoice;

/*
 * The transfer syntax an instance is sent in (PS3.18 §8.7.8.2, Selected
 * Transfer Syntax): the first acceptable range, in the client's order of
 * preference, that can be served.  transfer-syntax=* is the stored
 * syntax; no parameter is the default of Table 8.7.3-2 for
 * application/dicom, Explicit VR Little Endian (§8.7.3: "If a Transfer
 * Syntax parameter ... is not specified ..., the Transfer Syntax in the
 * response shall be the ... default ..., unless the origin server has only
 * access to the pixel data in lossy compressed form"); a UID is that
 * syntax, transcoded when the stored one differs.  A lossy syntax is only
 * produced when the client names it.
 */
static bool choose_instance_ts(const WebAccept *acc, const char *stored,
                               InstChoice *out)
{
    for (int i = 0; i < range_count(acc); i++) {
        const WebMediaRange *m = range_at(acc, i);
        const char *media = part_media(m);
        if (!web_media_match(media, "application/dicom")) {
            continue;
        }
        memset(out, 0, sizeof *out);
        out->single = strcmp(m->type, "application/dicom") == 0;
        if (strcmp(m->ts, "*") == 0) {
            return true;
        }
        const char *want = m->ts;
        if (want[0] == '\0') {
            const DicomTransferSyntax *st = dicom_ts_lookup(stored);
            out->dflt = true;
            if (st != NULL && st->lossy) {
                return true;
            }
            want = DICOM_TS_EXPLICIT_LE;
        }
        if (strcmp(want, stored) == 0) {
            return true;
        }
        if (can_transcode(stored, want)) {
            ag_fmt(out->ts, sizeof out->ts, "%s", want);
            return true;
        }
    }
    return false;
}

/* Swap the two 16-bit words of each 32-bit sample. */
static void swap_words32(uint8_t *p, size_t n)
{
    for (size_t k = 0; k + 4 <= n; k += 4) {
        uint8_t t0 = p[k], t1 = p[k + 1];
        p[k] = p[k + 2];
        p[k + 1] = p[k + 3];
        p[k + 2] = t0;
        p[k + 3] = t1;
    }
}

/*
 * 32-bit samples of a big-endian OW Pixel Data: the reader swaps each
 * 16-bit word, leaving the two words of a sample high word first (the
 * layout codec.c corrects with its swap_words32 before encoding).
 * codec_transcode() hands native-to-native conversions to the writer
 * untouched, so for a little-endian target the words are put in order
 * here, as codec.c and pydicom read such samples.
 */
static void fix_word_order(DicomFile *f, const char *ts)
{
    const DicomTransferSyntax *to = dicom_ts_lookup(ts);
    DicomElement *px = dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA);
    int64_t bits = 0;
    if (f->ts == NULL || !f->ts->big_endian || to == NULL ||
        to->big_endian || to->encapsulated || px == NULL ||
        px->vr != DICOM_VR_OW || px->value == NULL ||
        (px->flags & (DICOM_EL_ENCAPSULATED | DICOM_EL_NOT_LOADED)) ||
        dicom_get_int(f->dataset, DICOM_TAG_BITS_ALLOCATED, &bits) !=
            AG_OK || bits != 32) {
        return;
    }
    swap_words32(px->value, px->length);
}

/*
 * Re-encode a whole instance in ts, one instance in memory: pixel data
 * through codec_transcode() (decode, encode, Photometric Interpretation,
 * Lossy Image Compression), the file meta group rebuilt (these are
 * Agora's bytes now), the preamble zeroed (SECURITY.md rule 9).
 */
static int transcode_instance(const StoreInstance *in, const char *ts,
                              AgBuf *out, AgError *err)
{
    if (in->size > TRANSCODE_MAX_BYTES) {
        return ag_error_set(err, AG_ERR_LIMIT, "instance of %llu bytes is "
                            "larger than the %llu bytes transcoding holds "
                            "in memory", (unsigned long long)in->size,
                            (unsigned long long)TRANSCODE_MAX_BYTES);
    }
    size_t budget = (size_t)in->size * 4 + ((size_t)64 << 20);
    AgArena *a = ag_arena_create(budget);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = 0};
    DicomFile *f = NULL;
    int rc = lseek(in->fd, 0, SEEK_SET) == 0
        ? dicom_read_fd(in->fd, &ro, a, &f, err)
        : ag_error_errno(err, AG_ERR_IO, "seek");
    if (rc == AG_OK) {
        fix_word_order(f, ts);
        rc = codec_transcode(f, ts, err);
    }
    if (rc == AG_OK) {
        rc = dicom_file_build_meta(f, ts, err);
    }
    if (rc == AG_OK) {
        ag_buf_deinit(out);
        ag_buf_init(out, budget);
        DicomWriteOptions wo = {.zero_preamble = true};
        rc = dicom_write_file(f, ts, &wo, dicom_sink_buf, out, err);
    }
    ag_arena_destroy(a);
    return rc;
}

typedef struct WadoPart {
    InstRef ref;
    InstChoice c;
} WadoPart;

/* Streaming state of a multipart application/dicom response. */
typedef struct Wado {
    Store *store;
    WadoPart *parts;
    size_t n, next;       /* next part to open */
    StoreInstance cur;    /* as stored: the blob, open */
    bool open;
    uint64_t pos;         /* in the current blob */
    AgBuf mem;            /* transcoded: the whole instance */
    bool in_mem;
    size_t mem_pos;
    char head[256];
    size_t head_len, head_pos;
    bool finished;
    char sent[65];        /* the current part's transfer syntax */
} Wado;

static void wado_free(void *cls)
{
    Wado *w = cls;
    if (w->open) {
        close(w->cur.fd);
    }
    ag_buf_deinit(&w->mem);
    ag_free(w->parts);
    ag_free(w);
}

/*
 * Open part w->next: the blob as stored (streamed, never parsed: the fast
 * path), or the instance transcoded into w->mem.  When the default syntax
 * cannot be produced (too large, pixels that do not decode), the stored
 * syntax is sent (PS3.18 §8.7.3); a syntax the client named is an error.
 * The part's Content-Type names the syntax actually sent.
 */
static int wado_open_part(Wado *w, AgError *err)
{
    const WadoPart *p = &w->parts[w->next++];
    int rc = store_instance_open(w->store, p->ref.uid, &w->cur, err);
    if (rc != AG_OK) {
        /* deleted since the listing (or its blob is gone): not there to
         * send; `agora check` reports lost blobs */
        ag_log(AG_LOG_WARN, "http", "WADO-RS skips %s: %s", p->ref.uid,
               err->msg);
        return AG_ERR_NOTFOUND;
    }
    const char *sent = w->cur.transfer_syntax;
    w->in_mem = false;
    if (p->c.ts[0] != '\0' && strcmp(p->c.ts, sent) != 0) {
        rc = transcode_instance(&w->cur, p->c.ts, &w->mem, err);
        if (rc == AG_OK) {
            close(w->cur.fd);
            w->in_mem = true;
            w->mem_pos = 0;
            sent = p->c.ts;
        } else if (p->c.dflt) {
            ag_log(AG_LOG_WARN, "http", "WADO-RS sends %s as stored (%s): "
                   "%s", p->ref.uid, sent, err->msg);
            rc = AG_OK;
        } else {
            close(w->cur.fd);
            return rc;
        }
    }
    if (!w->in_mem) {
        w->open = true;
        w->pos = 0;
    }
    ag_fmt(w->sent, sizeof w->sent, "%s", sent);
    w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                   "--" BOUNDARY "\r\nContent-Type: "
                                   "application/dicom; transfer-syntax="
                                   "%s\r\n\r\n", sent);
    w->head_pos = 0;
    return AG_OK;
}

/* libmicrohttpd pulls the body: part headers, instance bytes, trailer. */
static ssize_t wado_read(void *cls, uint64_t off, char *buf, size_t max)
{
    (void)off;
    Wado *w = cls;
    size_t put = 0;
    while (put < max) {
        if (w->head_pos < w->head_len) {
            size_t n = w->head_len - w->head_pos;
            n = n < max - put ? n : max - put;
            memcpy(buf + put, w->head + w->head_pos, n);
            w->head_pos += n;
            put += n;
            continue;
        }
        if (w->in_mem) {
            size_t n = w->mem.len - w->mem_pos;
            n = n < max - put ? n : max - put;
            if (n == 0) {
                w->in_mem = false;
                ag_buf_deinit(&w->mem);
                w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                               "\r\n");
                w->head_pos = 0;
                continue;
            }
            memcpy(buf + put, w->mem.data + w->mem_pos, n);
            w->mem_pos += n;
            put += n;
            continue;
        }
        if (w->open) {
            size_t want = w->cur.size - w->pos < max - put
                              ? (size_t)(w->cur.size - w->pos) : max - put;
            if (want == 0) {
                close(w->cur.fd);
                w->open = false;
                w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                               "\r\n");
                w->head_pos = 0;
                continue;
            }
            ssize_t n = pread(w->cur.fd, buf + put, want, (off_t)w->pos);
            if (n <= 0) {
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            w->pos += (uint64_t)n;
            put += (size_t)n;
            continue;
        }
        if (w->finished) {
            break;
        }
        if (w->next == w->n) {
            w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                           "--" BOUNDARY "--\r\n");
            w->head_pos = 0;
            w->finished = true;
            continue;
        }
        AgError err;
        const char *uid = w->parts[w->next].ref.uid;
        int rc = wado_open_part(w, &err);
        if (rc != AG_OK && rc != AG_ERR_NOTFOUND) {
            /* The status line is gone: cutting the body short is the
             * only way left to say the response is incomplete. */
            ag_log(AG_LOG_WARN, "http", "WADO-RS stops at %s: %s", uid,
                   err.msg);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    if (put == 0 && w->finished) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return (ssize_t)put;
}

/*
 * One instance asked for as bare application/dicom: a single-part body
 * (PS3.18 §8.7, single-part payloads, from Supplement 183; dicomweb-client
 * and cloud archives ask for it).  As stored, the blob's descriptor goes to libmicrohttpd, which sends
 * it with sendfile(2) when no TLS is in the way; transcoded, the instance
 * is in memory already.  Takes w.
 */
static enum MHD_Result wado_single(WebRequest *r, Wado *w)
{
    struct MHD_Response *resp;
    if (w->in_mem) {
        resp = MHD_create_response_from_buffer(w->mem.len, w->mem.data,
                                               MHD_RESPMEM_MUST_COPY);
    } else {
        resp = MHD_create_response_from_fd64(w->cur.size, w->cur.fd);
        if (resp != NULL) {
            w->open = false;   /* the response closes the descriptor */
        }
    }
    char ct[128];
    ag_fmt(ct, sizeof ct, "application/dicom; transfer-syntax=%s", w->sent);
    wado_free(w);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ct);
    return web__send_response(r, 200, resp);
}

static enum MHD_Result wado(WebRequest *r, const char *study,
                            const char *series, const char *instance)
{
    if (!web__can(r, ACCESS_DOWNLOAD)) {   /* whole instances (issue 7) */
        return web__forbidden(r, "retrieving instances needs the download "
                              "verb");
    }
    if (!web__study_visible_beyond_view(r, study)) {
        return web__forbidden(r, "break-the-glass grants view only");
    }
    WebAccept acc;
    AgError err;
    if (!parse_accept(r, &acc, &err)) {
        return web__json_error(r, 400, "bad Accept header", err.msg);
    }
    Wado *w = ag_calloc(1, sizeof *w);
    if (w == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    w->store = web__store(r);
    ag_buf_init(&w->mem, 0);
    UidList l = {0};
    if (list_instances(r, study, series, instance, &l, &err) != AG_OK) {
        ag_free(l.v);
        wado_free(w);
        return web__json_error(r, 500, "query failed", err.msg);
    }
    if (l.n == 0) {
        ag_free(l.v);
        wado_free(w);
        return web__json_error(r, 404, "not found", "no such object");
    }
    w->parts = ag_calloc(l.n, sizeof *w->parts);
    if (w->parts == NULL) {
        ag_free(l.v);
        wado_free(w);
        return web__json_error(r, 500, "out of memory", NULL);
    }
    /* Every instance must be servable in an acceptable syntax before the
     * first byte goes out (PS3.18 §8.7.5: else 406). */
    for (size_t i = 0; i < l.n; i++) {
        w->parts[i].ref = l.v[i];
        if (!choose_instance_ts(&acc, l.v[i].ts, &w->parts[i].c)) {
            char why[200];
            ag_fmt(why, sizeof why, "instance %.64s is stored as %.64s and "
                   "cannot be sent in any of the accepted media types and "
                   "transfer syntaxes", l.v[i].uid, l.v[i].ts);
            ag_free(l.v);
            wado_free(w);
            return web__json_error(r, 406, "not acceptable", why);
        }
    }
    w->n = l.n;
    ag_free(l.v);
    /* The first part is opened now so that its failure still gets a
     * status code: 406 when the named syntax cannot be produced. */
    int rc = AG_ERR_NOTFOUND;
    while (rc == AG_ERR_NOTFOUND && w->next < w->n) {
        rc = wado_open_part(w, &err);
    }
    if (rc != AG_OK) {
        wado_free(w);
        if (rc == AG_ERR_NOTFOUND) {
            return web__json_error(r, 404, "not found", "no such object");
        }
        return rc == AG_ERR_IO || rc == AG_ERR_NOMEM
            ? web__json_error(r, 500, "retrieval failed", err.msg)
            : web__json_error(r, 406, "not acceptable", err.msg);
    }
    if (instance != NULL && w->n == 1 && w->parts[0].c.single) {
        return wado_single(r, w);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 256 * 1024, wado_read, w, wado_free);
    if (resp == NULL) {
        wado_free(w);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type",
                            "multipart/related; type=\"application/dicom\"; "
                            "boundary=" BOUNDARY);
    return web__send_response(r, 200, resp);
}

typedef struct MetaOut {
    AgBuf b;
    size_t n;
} MetaOut;

static int meta_doc(void *ctx, const char *json, size_t len)
{
    MetaOut *m = ctx;
    if (m->n++ > 0) {
        ag_buf_append(&m->b, ",", 1);
    }
    return ag_buf_append(&m->b, json, len) != AG_OK;
}

static enum MHD_Result metadata(WebRequest *r, const char *study,
                                const char *series, const char *instance)
{
    MetaOut m = {0};
    ag_buf_init(&m.b, (size_t)2 << 30);
    ag_buf_append(&m.b, "[", 1);
    AgError err;
    int rc = store_metadata(web__store(r), study, series, instance, meta_doc,
                            &m, &err);
    enum MHD_Result ret;
    if (rc == AG_ERR_NOTFOUND) {
        ret = web__json_error(r, 404, "not found", "no such object");
    } else if (rc != AG_OK) {
        ret = web__json_error(r, 500, "metadata failed", err.msg);
    } else {
        ag_buf_append(&m.b, "]", 1);
        ret = web__send_response(r, 200, json_response(r, m.b.data,
                                                       m.b.len));
    }
    ag_buf_deinit(&m.b);
    return ret;
}

/* ---- frames and pixel data (PS3.18 §10.4.1.1.6, §8.7.3.3) --------------- */

/* Instances read whole to reach their frames (big endian, deflated): the
 * arena's budget. */
#define FRAME_LOAD_BUDGET ((size_t)2 << 30)
#define FRAME_HEADER_BUDGET ((size_t)256 << 20)

/*
 * Where the frames of one instance come from.  Native little-endian
 * frames and compressed frames held one per fragment are read from the
 * blob, one frame at a time (memory does not grow with the instance);
 * frames spread over several fragments have the pixel data's fragments
 * loaded (PS3.5 A.4; codec_frame_bytes follows the Basic or Extended
 * Offset Table); big-endian and deflated native data are read whole, the
 * reader leaving every value little endian.
 */
typedef struct FrameSrc {
    StoreInstance in;      /* the blob, open while the source lives */
    bool open;
    AgArena *a;            /* the data set */
    DicomFile *f;
    DicomElement *px;
    CodecImage im;         /* when im_ok */
    bool im_ok;
    AgError im_err;        /* why not */
    uint32_t frames;
    bool encapsulated;
    bool one_per_fragment; /* frame i is fragment i + 1 */
    bool swap_words;       /* 32-bit OW of a big-endian file: see
                            * fix_word_order() */
    uint64_t frame_bits;   /* native: bits of one frame */
} FrameSrc;

static void frame_src_close(FrameSrc *s)
{
    if (s->open) {
        close(s->in.fd);
        s->open = false;
    }
    ag_arena_destroy(s->a);
    s->a = NULL;
}

static int pread_all(int fd, uint8_t *dst, size_t len, uint64_t off,
                     uint64_t size, AgError *err)
{
    if (off > size || len > size - off) {
        return ag_error_set(err, AG_ERR_PARSE, "value at offset %llu of %zu "
                            "bytes is past the end of the blob",
                            (unsigned long long)off, len);
    }
    while (len > 0) {
        ssize_t n = pread(fd, dst, len, (off_t)off);
        if (n <= 0) {
            return ag_error_errno(err, AG_ERR_IO, "read of the blob");
        }
        dst += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return AG_OK;
}

/* Load every fragment of encapsulated pixel data that the reader left in
 * the blob (frames spanning several fragments). */
static int load_fragments(FrameSrc *s, AgError *err)
{
    for (uint32_t j = 0; j < s->px->nfrags; j++) {
        DicomFragment *fr = &s->px->frags[j];
        if (fr->data != NULL || fr->length == 0) {
            continue;
        }
        fr->data = ag_arena_alloc(s->a, fr->length);
        if (fr->data == NULL) {
            return ag_error_set(err, ag_arena_fail_code(s->a), "pixel data: "
                                "no memory for fragment %u", j);
        }
        int rc = pread_all(s->in.fd, fr->data, fr->length, fr->offset,
                           s->in.size, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    s->px->flags &= (uint16_t)~DICOM_EL_NOT_LOADED;
    return AG_OK;
}

static int frame_src_open(Store *store, const char *uid, FrameSrc *s,
                          AgError *err)
{
    memset(s, 0, sizeof *s);
    int rc = store_instance_open(store, uid, &s->in, err);
    if (rc != AG_OK) {
        return rc;
    }
    s->open = true;
    const DicomTransferSyntax *ts = dicom_ts_lookup(s->in.transfer_syntax);
    bool whole = ts != NULL && (ts->big_endian || ts->deflated);
    s->a = ag_arena_create(whole ? FRAME_LOAD_BUDGET : FRAME_HEADER_BUDGET);
    if (s->a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = whole ? 0 : 256};
    rc = lseek(s->in.fd, 0, SEEK_SET) == 0
        ? dicom_read_fd(s->in.fd, &ro, s->a, &s->f, err)
        : ag_error_errno(err, AG_ERR_IO, "seek");
    if (rc != AG_OK) {
        return rc;
    }
    s->px = dicom_dataset_find(s->f->dataset, DICOM_TAG_PIXEL_DATA);
    if (s->px == NULL) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no pixel data");
    }
    int64_t nf = 1;
    if (dicom_dataset_find(s->f->dataset, TAG_NUMBER_OF_FRAMES) != NULL &&
        dicom_get_int(s->f->dataset, TAG_NUMBER_OF_FRAMES, &nf) != AG_OK) {
        nf = 0;
    }
    if (nf < 1 || nf > (int64_t)CODEC_MAX_FRAMES) {
        return ag_error_set(err, AG_ERR_INVALID, "Number of Frames is not "
                            "1..%u", CODEC_MAX_FRAMES);
    }
    s->frames = (uint32_t)nf;
    s->im_ok = codec_image_from_dataset(s->f->dataset, &s->im,
                                        &s->im_err) == AG_OK;
    s->encapsulated = (s->px->flags & DICOM_EL_ENCAPSULATED) != 0;
    if (s->encapsulated) {
        if (s->px->nfrags < 2) {
            return ag_error_set(err, AG_ERR_PARSE, "pixel data has no "
                                "fragments");
        }
        s->one_per_fragment = s->px->nfrags - 1 == s->frames;
        return s->one_per_fragment ? AG_OK : load_fragments(s, err);
    }
    if (!s->im_ok) {
        *err = s->im_err;
        return err->code;
    }
    uint64_t total;
    s->frame_bits = (uint64_t)s->im.rows * s->im.columns *
                    s->im.samples_per_pixel * s->im.bits_allocated;
    if (ag_mul_overflow(s->frame_bits, s->frames, &total) ||
        (total + 7) / 8 > s->px->length) {
        return ag_error_set(err, AG_ERR_INVALID, "pixel data (7fe0,0010) of "
                            "%u bytes is shorter than its %u frames",
                            (unsigned)s->px->length, s->frames);
    }
    s->swap_words = ts != NULL && ts->big_endian &&
                    s->im.bits_allocated == 32 && s->px->vr == DICOM_VR_OW;
    return AG_OK;
}

/* Append native frame i (little endian, planar configuration as stored)
 * to out.  1-bit frames need not start on a byte (PS3.5 §8.1.1: the bits
 * of all frames are packed back to back, the first pixel in the least
 * significant bit); they are shifted to start at bit 0, and bits past the
 * frame in its last byte are zero. */
static int frame_native(FrameSrc *s, uint32_t i, AgBuf *out, AgError *err)
{
    uint64_t first = (uint64_t)i * s->frame_bits;
    size_t bytes = (size_t)((s->frame_bits + 7) / 8);
    unsigned shift = (unsigned)(first % 8);
    size_t span = (size_t)((shift + s->frame_bits + 7) / 8);
    uint64_t at = first / 8;
    int rc = ag_buf_reserve(out, span + 1);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "frame of %zu bytes: no room", span);
    }
    uint8_t *dst = out->data + out->len;
    bool loaded = s->px->value != NULL &&
                  !(s->px->flags & DICOM_EL_NOT_LOADED);
    if (loaded) {
        memcpy(dst, s->px->value + at, span);
    } else {
        rc = pread_all(s->in.fd, dst, span, s->px->offset + at, s->in.size,
                       err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    if (shift != 0) {
        for (size_t k = 0; k < bytes; k++) {
            unsigned next = k + 1 < span ? dst[k + 1] : 0;
            dst[k] = (uint8_t)((dst[k] >> shift) | (next << (8 - shift)));
        }
    }
    if (s->frame_bits % 8 != 0) {
        dst[bytes - 1] &= (uint8_t)((1u << (s->frame_bits % 8)) - 1);
    }
    if (s->swap_words) {
        swap_words32(dst, bytes);
    }
    out->len += bytes;
    return AG_OK;
}

/* Append the compressed bytes of frame i to out. */
static int frame_compressed(FrameSrc *s, uint32_t i, AgBuf *out,
                            AgError *err)
{
    if (s->one_per_fragment) {
        const DicomFragment *fr = &s->px->frags[i + 1];
        int rc = ag_buf_reserve(out, fr->length);
        if (rc != AG_OK) {
            return ag_error_set(err, rc, "frame of %u bytes: no room",
                                (unsigned)fr->length);
        }
        if (fr->data != NULL) {
            memcpy(out->data + out->len, fr->data, fr->length);
        } else {
            rc = pread_all(s->in.fd, out->data + out->len, fr->length,
                           fr->offset, s->in.size, err);
            if (rc != AG_OK) {
                return rc;
            }
        }
        out->len += fr->length;
        return AG_OK;
    }
    const uint8_t *p;
    size_t len;
    bool owned;
    int rc = codec_frame_bytes(s->f->dataset, s->px, s->frames, i, &p, &len,
                               &owned, err);
    if (rc == AG_OK) {
        rc = ag_buf_append(out, p, len);
        if (rc != AG_OK) {
            ag_error_set(err, rc, "frame of %zu bytes: no room", len);
        }
    }
    if (owned) {
        ag_free((void *)p);
    }
    return rc;
}

/* Append frame i decoded to the native layout of codec.h (colour by
 * pixel) to out; *im gets the Photometric Interpretation it now has. */
static int frame_decoded(FrameSrc *s, uint32_t i, CodecImage *im,
                         AgBuf *out, AgError *err)
{
    if (!s->im_ok) {
        *err = s->im_err;
        return err->code;
    }
    *im = s->im;
    size_t fsz = (size_t)codec_frame_size(im);
    AgBuf tmp;
    ag_buf_init(&tmp, CODEC_MAX_FRAME_BYTES);
    int rc = s->encapsulated ? frame_compressed(s, i, &tmp, err)
                             : frame_native(s, i, &tmp, err);
    if (rc == AG_OK) {
        rc = ag_buf_reserve(out, fsz);
        if (rc != AG_OK) {
            ag_error_set(err, rc, "frame of %zu bytes: no room", fsz);
        }
    }
    uint8_t *dst = rc == AG_OK ? out->data + out->len : NULL;
    if (rc == AG_OK && s->encapsulated) {
        rc = codec_decode_frame(s->in.transfer_syntax, im, tmp.data, tmp.len,
                                dst, fsz, err);
        const char *pi = codec_decoded_photometric(s->in.transfer_syntax,
                                                   &s->im);
        ag_fmt(im->photometric, sizeof im->photometric, "%s", pi);
    } else if (rc == AG_OK && im->samples_per_pixel == 3 &&
               im->planar_configuration == 1) {
        size_t px = (size_t)im->rows * im->columns;
        size_t b = im->bits_allocated / 8u;
        for (size_t p = 0; p < px; p++) {   /* by plane to by pixel */
            for (size_t k = 0; k < 3; k++) {
                memcpy(dst + (p * 3 + k) * b, tmp.data + (k * px + p) * b, b);
            }
        }
    } else if (rc == AG_OK) {
        memcpy(dst, tmp.data, fsz);
    }
    im->planar_configuration = 0;
    if (rc == AG_OK) {
        out->len += fsz;
    }
    ag_buf_deinit(&tmp);
    return rc;
}

/* Colour by pixel to colour by plane (Planar Configuration 1), in place. */
static int to_planes(const CodecImage *im, uint8_t *p, AgError *err)
{
    size_t px = (size_t)im->rows * im->columns;
    size_t b = im->bits_allocated / 8u;
    uint8_t *tmp = ag_malloc(px * 3 * b);
    if (tmp == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < px; i++) {
        for (size_t k = 0; k < 3; k++) {
            memcpy(tmp + (k * px + i) * b, p + (i * 3 + k) * b, b);
        }
    }
    memcpy(p, tmp, px * 3 * b);
    ag_free(tmp);
    return AG_OK;
}

typedef enum FrameMode {
    FRAME_STORED,    /* compressed as stored, or native frame bytes */
    FRAME_NATIVE,    /* uncompressed little endian, decoded if need be */
    FRAME_ENCODE,    /* re-encoded in choice.ts */
} FrameMode;

typedef struct FrameChoice {
    FrameMode mode;
    char ts[65];     /* FRAME_ENCODE: the target syntax */
} FrameChoice;

static bool frame_can_decode(const FrameSrc *s)
{
    return !s->encapsulated || codec_can_decode(s->in.transfer_syntax);
}

static bool frame_can_encode(const FrameSrc *s, const char *ts)
{
    const DicomTransferSyntax *t = dicom_ts_lookup(ts);
    return t != NULL && t->encapsulated && codec_can_encode(ts) &&
           frame_can_decode(s) && s->im_ok && s->im.bits_allocated != 1;
}

static bool pick(FrameChoice *out, FrameMode mode, const char *ts)
{
    out->mode = mode;
    ag_fmt(out->ts, sizeof out->ts, "%s", ts ? ts : "");
    return true;
}

/*
 * How frames are sent (PS3.18 §8.7.8, Tables 8.7.3-4 and 8.7.3-5): the
 * first range, in preference order, that can be served.
 *  - application/octet-stream: uncompressed little endian (compressed
 *    frames decoded); with transfer-syntax=* the frames as stored.
 *  - image/jpeg, image/jls, image/jp2, image/dicom-rle, ...: without a
 *    transfer-syntax, the media type's default syntax; with one, that
 *    syntax (it must be one of the media type); re-encoded when the stored
 *    syntax differs and a codec can; * means as stored, if stored in
 *    that media type.
 *  - type=* (or transfer-syntax=*): as stored.
 *  - any type, any image type: as stored when stored compressed; with
 *    no parameter, the default octet-stream, except that lossy stored frames
 *    stay as they are (§8.7.3.3: "unless the origin server has only
 *    access to the pixel data in lossy compressed form").
 * Lossy syntaxes are produced only when named.
 */
static bool choose_frames(const WebAccept *acc, const FrameSrc *s,
                          FrameChoice *out)
{
    const char *stored = s->in.transfer_syntax;
    const DicomTransferSyntax *st = dicom_ts_lookup(stored);
    const char *stored_media = s->encapsulated ? web_ts_media(stored)
                                               : "application/octet-stream";
    bool lossy = st != NULL && st->lossy;
    for (int i = 0; i < range_count(acc); i++) {
        const WebMediaRange *m = range_at(acc, i);
        const char *media = part_media(m);
        const char *ts = m->ts;
        bool star = strcmp(ts, "*") == 0;
        if (strcmp(media, "*/*") == 0 || strcmp(media, "*") == 0) {
            /* type=* with no syntax: whatever is stored */
            bool as_is = strcmp(media, "*") == 0 && ts[0] == '\0';
            if (star || as_is || (ts[0] != '\0' && strcmp(ts, stored) == 0 &&
                                  s->encapsulated)) {
                return pick(out, FRAME_STORED, NULL);
            }
            if (ts[0] == '\0' && s->encapsulated &&
                (lossy || !frame_can_decode(s))) {
                return pick(out, FRAME_STORED, NULL);
            }
            if ((ts[0] == '\0' || strcmp(ts, DICOM_TS_EXPLICIT_LE) == 0) &&
                frame_can_decode(s)) {
                return pick(out, FRAME_NATIVE, NULL);
            }
            if (ts[0] != '\0' && frame_can_encode(s, ts)) {
                return pick(out, FRAME_ENCODE, ts);
            }
            continue;
        }
        if (strcmp(media, "application/octet-stream") == 0) {
            if (star) {
                return pick(out, FRAME_STORED, NULL);
            }
            if ((ts[0] == '\0' || strcmp(ts, DICOM_TS_EXPLICIT_LE) == 0) &&
                frame_can_decode(s)) {
                return pick(out, FRAME_NATIVE, NULL);
            }
            continue;
        }
        if (strcmp(media, "image/*") == 0) {
            if (s->encapsulated &&
                (star || ts[0] == '\0' || strcmp(ts, stored) == 0)) {
                return pick(out, FRAME_STORED, NULL);
            }
            if (!star && ts[0] != '\0' &&
                strncmp(web_ts_media(ts), "image/", 6) == 0 &&
                frame_can_encode(s, ts)) {
                return pick(out, FRAME_ENCODE, ts);
            }
            continue;
        }
        const char *dflt = web_media_default_ts(media);
        if (dflt == NULL) {
            continue;   /* not a bulk data media type */
        }
        bool same_media = s->encapsulated &&
                          strcmp(stored_media, media) == 0;
        if (star) {
            if (same_media) {
                return pick(out, FRAME_STORED, NULL);
            }
            continue;
        }
        const char *want = ts[0] != '\0' ? ts : dflt;
        if (!web_media_has_ts(media, want)) {
            continue;
        }
        if (s->encapsulated && strcmp(want, stored) == 0) {
            return pick(out, FRAME_STORED, NULL);
        }
        if (frame_can_encode(s, want)) {
            return pick(out, FRAME_ENCODE, want);
        }
        if (ts[0] == '\0' && same_media) {
            /* The default syntax cannot be made here, the stored one is
             * of the media type asked for. */
            return pick(out, FRAME_STORED, NULL);
        }
    }
    return false;
}

/* Streaming state of a multipart response of frames: one frame in memory
 * at a time. */
typedef struct FramesOut {
    FrameSrc src;
    FrameChoice c;
    char media[40];          /* of every part */
    char ts[65];
    uint32_t *want;          /* 0-based frame numbers */
    uint32_t nwant, next;
    AgBuf part;              /* the current part: head, frame, CRLF */
    size_t part_pos;
    bool finished;
} FramesOut;

static void frames_out_free(void *cls)
{
    FramesOut *o = cls;
    frame_src_close(&o->src);
    ag_buf_deinit(&o->part);
    ag_free(o->want);
    ag_free(o);
}

/* The next part (or the close delimiter) into o->part. */
static int frames_fill(FramesOut *o, AgError *err)
{
    ag_buf_reset(&o->part);
    o->part_pos = 0;
    if (o->next == o->nwant) {
        o->finished = true;
        return ag_buf_append_str(&o->part, "--" BOUNDARY "--\r\n");
    }
    uint32_t i = o->want[o->next++];
    int rc = ag_buf_printf(&o->part, "--" BOUNDARY "\r\nContent-Type: %s; "
                           "transfer-syntax=%s\r\n\r\n", o->media, o->ts);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "out of memory");
    }
    CodecImage im;
    switch (o->c.mode) {
    case FRAME_STORED:
        rc = o->src.encapsulated ? frame_compressed(&o->src, i, &o->part, err)
                                 : frame_native(&o->src, i, &o->part, err);
        break;
    case FRAME_NATIVE:
        if (!o->src.encapsulated) {
            rc = frame_native(&o->src, i, &o->part, err);
            break;
        }
        size_t at = o->part.len;
        rc = frame_decoded(&o->src, i, &im, &o->part, err);
        if (rc == AG_OK && o->src.im.samples_per_pixel == 3 &&
            o->src.im.planar_configuration == 1) {
            /* laid out as the instance's Planar Configuration says, the
             * one its metadata gives (the decoders give colour by pixel) */
            rc = to_planes(&im, o->part.data + at, err);
        }
        break;
    case FRAME_ENCODE: {
        AgBuf raw;
        ag_buf_init(&raw, CODEC_MAX_FRAME_BYTES);
        rc = frame_decoded(&o->src, i, &im, &raw, err);
        if (rc == AG_OK && (strstr(im.photometric, "_422") != NULL ||
                            strstr(im.photometric, "_420") != NULL)) {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "frames of %s "
                              "(subsampled) are not re-encoded",
                              im.photometric);
        }
        if (rc == AG_OK) {
            rc = codec_encode_frame(o->c.ts, &im, raw.data, raw.len,
                                    &o->part, err);
        }
        ag_buf_deinit(&raw);
        break;
    }
    }
    if (rc != AG_OK) {
        ag_error_prefix(err, "frame %u: ", i + 1);
        return rc;
    }
    rc = ag_buf_append(&o->part, "\r\n", 2);
    return rc == AG_OK ? AG_OK : ag_error_set(err, rc, "out of memory");
}

static ssize_t frames_read(void *cls, uint64_t off, char *buf, size_t max)
{
    (void)off;
    FramesOut *o = cls;
    size_t put = 0;
    while (put < max) {
        if (o->part_pos < o->part.len) {
            size_t n = o->part.len - o->part_pos;
            n = n < max - put ? n : max - put;
            memcpy(buf + put, o->part.data + o->part_pos, n);
            o->part_pos += n;
            put += n;
            continue;
        }
        if (o->finished) {
            break;
        }
        AgError err;
        if (frames_fill(o, &err) != AG_OK) {
            ag_log(AG_LOG_WARN, "http", "WADO-RS frames of %s stop: %s",
                   o->src.in.sop_instance_uid, err.msg);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    if (put == 0 && o->finished) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return (ssize_t)put;
}

/*
 * Serve frames of one instance (want: 1-based numbers; NULL = every frame,
 * as for the pixel data's BulkDataURI) as multipart/related, the
 * representation negotiated from the Accept header.  The first frame is
 * made before the status line goes out, so that a frame that cannot be
 * produced is a 406 (or 500), not a cut body.
 */
static enum MHD_Result serve_frames(WebRequest *r, const char *uid,
                                    const uint32_t *want, uint32_t nwant)
{
    WebAccept acc;
    AgError err;
    if (!parse_accept(r, &acc, &err)) {
        return web__json_error(r, 400, "bad Accept header", err.msg);
    }
    FramesOut *o = ag_calloc(1, sizeof *o);
    if (o == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    ag_buf_init(&o->part, (size_t)3 << 30);
    int rc = frame_src_open(web__store(r), uid, &o->src, &err);
    if (rc == AG_ERR_NOTFOUND) {
        frames_out_free(o);
        return web__json_error(r, 404, "not found", err.msg);
    }
    if (rc != AG_OK) {
        frames_out_free(o);
        return web__json_error(r, 500, "frame retrieval failed", err.msg);
    }
    o->nwant = want != NULL ? nwant : o->src.frames;
    o->want = ag_calloc(o->nwant, sizeof *o->want);
    if (o->want == NULL) {
        frames_out_free(o);
        return web__json_error(r, 500, "out of memory", NULL);
    }
    for (uint32_t k = 0; k < o->nwant; k++) {
        uint32_t n = want != NULL ? want[k] : k + 1;
        if (n < 1 || n > o->src.frames) {
            frames_out_free(o);
            char why[64];
            ag_fmt(why, sizeof why, "no frame %u", n);
            return web__json_error(r, 404, "not found", why);
        }
        o->want[k] = n - 1;
    }
    if (!choose_frames(&acc, &o->src, &o->c)) {
        char why[200];
        ag_fmt(why, sizeof why, "frames stored as %.64s cannot be sent in "
               "any of the accepted media types and transfer syntaxes",
               o->src.in.transfer_syntax);
        frames_out_free(o);
        return web__json_error(r, 406, "not acceptable", why);
    }
    const char *ts = o->c.mode == FRAME_ENCODE ? o->c.ts
        : o->c.mode == FRAME_STORED && o->src.encapsulated
            ? o->src.in.transfer_syntax : DICOM_TS_EXPLICIT_LE;
    ag_fmt(o->ts, sizeof o->ts, "%s", ts);
    ag_fmt(o->media, sizeof o->media, "%s", web_ts_media(ts));
    rc = frames_fill(o, &err);
    if (rc != AG_OK) {
        /* pixels no codec here can turn into what was asked for: the
         * client may still take them as stored */
        frames_out_free(o);
        return rc == AG_ERR_IO || rc == AG_ERR_NOMEM || rc == AG_ERR_LIMIT
            ? web__json_error(r, 500, "frame retrieval failed", err.msg)
            : web__json_error(r, 406, "not acceptable", err.msg);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 256 * 1024, frames_read, o, frames_out_free);
    if (resp == NULL) {
        frames_out_free(o);
        return MHD_NO;
    }
    char ct[160];
    ag_fmt(ct, sizeof ct, "multipart/related; type=\"%s\"; "
           "boundary=" BOUNDARY, o->media);
    MHD_add_response_header(resp, "Content-Type", ct);
    return web__send_response(r, 200, resp);
}

/* The instance must be the one the path names (study and series too),
 * inside the caller's scope. */
static bool instance_in_path(WebRequest *r, const char *study,
                             const char *series, const char *inst)
{
    UidList l = {0};
    AgError err;
    bool ok = list_instances(r, study, series, inst, &l, &err) == AG_OK &&
              l.n == 1;
    ag_free(l.v);
    return ok;
}

static enum MHD_Result frames(WebRequest *r, const char *study,
                              const char *series, const char *inst,
                              const char *list)
{
    /* The frame list: "1", "1,3,5" (PS3.18 §8.3.1.1.4). */
    size_t n = 1;
    for (const char *c = list; *c != '\0'; c++) {
        n += *c == ',';
    }
    if (n > CODEC_MAX_FRAMES) {
        return web__json_error(r, 400, "bad request", "too many frames");
    }
    uint32_t *want = ag_calloc(n, sizeof *want);
    if (want == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    uint32_t nwant = 0;
    const char *p = list;
    while (*p != '\0') {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || !isdigit((unsigned char)*p) || v == 0 ||
            v > CODEC_MAX_FRAMES || (*end != ',' && *end != '\0') ||
            (*end == ',' && end[1] == '\0')) {
            ag_free(want);
            return web__json_error(r, 400, "bad request", "frame list must "
                                   "be positive numbers separated by commas");
        }
        want[nwant++] = (uint32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    enum MHD_Result ret;
    if (nwant == 0) {
        ret = web__json_error(r, 400, "bad request", "empty frame list");
    } else if (!instance_in_path(r, study, series, inst)) {
        ret = web__json_error(r, 404, "not found", "no such instance");
    } else {
        ret = serve_frames(r, inst, want, nwant);
    }
    ag_free(want);
    return ret;
}

/* ---- bulk data (PS3.18 §10.4.1.1.5, §8.6; Annex F.2.6 BulkDataURI) ------ */

/* Streaming state of one bulk data value read from the blob. */
typedef struct BulkOut {
    int fd;
    uint64_t off, len, pos;
    unsigned swap;          /* byte-swap unit of a big-endian value, or 1 */
    char head[160];
    size_t head_len, head_pos;
    bool body_done;
} BulkOut;

static const char BULK_TAIL[] = "\r\n--" BOUNDARY "--\r\n";

static void bulk_out_free(void *cls)
{
    BulkOut *b = cls;
    close(b->fd);
    ag_free(b);
}

static void swap_units(uint8_t *p, size_t n, unsigned unit)
{
    for (size_t i = 0; unit > 1 && i + unit <= n; i += unit) {
        for (unsigned k = 0; k < unit / 2; k++) {
            uint8_t t = p[i + k];
            p[i + k] = p[i + unit - 1 - k];
            p[i + unit - 1 - k] = t;
        }
    }
}

static ssize_t bulk_read(void *cls, uint64_t off, char *buf, size_t max)
{
    (void)off;
    BulkOut *b = cls;
    if (b->head_pos < b->head_len) {
        size_t n = b->head_len - b->head_pos;
        n = n < max ? n : max;
        memcpy(buf, b->head + b->head_pos, n);
        b->head_pos += n;
        return (ssize_t)n;
    }
    if (b->pos < b->len) {
        uint64_t left = b->len - b->pos;
        /* whole swap units only, unless this is the value's end */
        size_t want = left <= max ? (size_t)left : max - max % b->swap;
        AgError err;
        if (want == 0 || pread_all(b->fd, (uint8_t *)buf, want,
                                   b->off + b->pos, UINT64_MAX,
                                   &err) != AG_OK) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        swap_units((uint8_t *)buf, want, b->swap);
        b->pos += want;
        return (ssize_t)want;
    }
    size_t tail = sizeof BULK_TAIL - 1;
    if (b->body_done) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (max < tail) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    memcpy(buf, BULK_TAIL, tail);
    b->body_done = true;
    return (ssize_t)tail;
}

/* Does the client take application/octet-stream (uncompressed bulk data
 * is little endian, PS3.18 §8.7.3.3.1)? */
static bool accepts_octets(const WebAccept *acc)
{
    for (int i = 0; i < range_count(acc); i++) {
        const WebMediaRange *m = range_at(acc, i);
        if (web_media_match(part_media(m), "application/octet-stream") &&
            (m->ts[0] == '\0' || strcmp(m->ts, "*") == 0 ||
             strcmp(m->ts, DICOM_TS_EXPLICIT_LE) == 0)) {
            return true;
        }
    }
    return false;
}

/* Byte-swap unit of a value of this VR read from a big-endian file. */
static unsigned swap_unit(DicomVR vr)
{
    switch (vr) {
    case DICOM_VR_OW: return 2;
    case DICOM_VR_OL:
    case DICOM_VR_OF: return 4;
    case DICOM_VR_OD:
    case DICOM_VR_OV: return 8;
    default: return 1;
    }
}

/* The element a bulk data path names: TAG[/ITEM/TAG...] as
 * put_bulk_uri() writes it (items counted from 0). */
static DicomElement *bulk_element(DicomDataset *ds, char **path, int n)
{
    for (int k = 0; k < n; k += 2) {
        const char *t = path[k];
        if (strlen(t) != 8 || strspn(t, "0123456789abcdefABCDEF") != 8) {
            return NULL;
        }
        DicomElement *el = dicom_dataset_find(ds, (uint32_t)strtoul(t, NULL,
                                                                     16));
        if (el == NULL || k + 1 == n) {
            return el;
        }
        const char *item = path[k + 1];
        char *end;
        unsigned long i = strtoul(item, &end, 10);
        if (el->vr != DICOM_VR_SQ || !isdigit((unsigned char)item[0]) ||
            *end != '\0' || i >= el->nitems) {
            return NULL;
        }
        ds = el->items[i];
    }
    return NULL;
}

static enum MHD_Result bulk_value(WebRequest *r, const char *uid,
                                  char **path, int npath)
{
    WebAccept acc;
    AgError err;
    if (!parse_accept(r, &acc, &err)) {
        return web__json_error(r, 400, "bad Accept header", err.msg);
    }
    if (!accepts_octets(&acc)) {
        return web__json_error(r, 406, "not acceptable", "bulk data is "
                               "served as multipart/related; "
                               "type=\"application/octet-stream\"");
    }
    /* Offsets of values in a deflated file are in the inflated stream:
     * such an instance is read whole. */
    FrameSrc s;
    memset(&s, 0, sizeof s);
    int rc = store_instance_open(web__store(r), uid, &s.in, &err);
    if (rc != AG_OK) {
        return web__json_error(r, 404, "not found", err.msg);
    }
    s.open = true;
    const DicomTransferSyntax *ts = dicom_ts_lookup(s.in.transfer_syntax);
    bool whole = ts != NULL && ts->deflated;
    s.a = ag_arena_create(whole ? FRAME_LOAD_BUDGET : FRAME_HEADER_BUDGET);
    DicomReadOptions ro = {.bulk_threshold = whole ? 0 : 256};
    rc = s.a == NULL ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
        : lseek(s.in.fd, 0, SEEK_SET) != 0
            ? ag_error_errno(&err, AG_ERR_IO, "seek")
            : dicom_read_fd(s.in.fd, &ro, s.a, &s.f, &err);
    DicomElement *el = rc == AG_OK ? bulk_element(s.f->dataset, path, npath)
                                   : NULL;
    enum MHD_Result ret;
    if (rc != AG_OK) {
        ret = web__json_error(r, 500, "bulk data retrieval failed", err.msg);
    } else if (el == NULL || el->vr == DICOM_VR_SQ) {
        ret = web__json_error(r, 404, "not found", "no such bulk data");
    } else if (el->flags & DICOM_EL_ENCAPSULATED) {
        /* Encapsulated pixel data inside an item (an icon): its fragments
         * as one compressed frame. */
        s.px = el;
        s.frames = 1;
        AgBuf b;
        ag_buf_init(&b, (size_t)1 << 30);
        rc = load_fragments(&s, &err);
        const char *media = web_ts_media(s.in.transfer_syntax);
        if (rc == AG_OK) {
            rc = ag_buf_printf(&b, "--" BOUNDARY "\r\nContent-Type: %s; "
                               "transfer-syntax=%s\r\n\r\n", media,
                               s.in.transfer_syntax);
        }
        for (uint32_t j = 1; rc == AG_OK && j < el->nfrags; j++) {
            rc = ag_buf_append(&b, el->frags[j].data, el->frags[j].length);
        }
        if (rc == AG_OK) {
            rc = ag_buf_append_str(&b, BULK_TAIL);
        }
        if (rc != AG_OK) {
            ret = web__json_error(r, 500, "bulk data retrieval failed",
                                  rc == AG_ERR_IO || rc == AG_ERR_PARSE
                                      ? err.msg : "out of memory");
        } else {
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                b.len, b.data, MHD_RESPMEM_MUST_COPY);
            char ct[160];
            ag_fmt(ct, sizeof ct, "multipart/related; type=\"%s\"; "
                   "boundary=" BOUNDARY, media);
            if (resp != NULL) {
                MHD_add_response_header(resp, "Content-Type", ct);
            }
            ret = web__send_response(r, 200, resp);
        }
        ag_buf_deinit(&b);
    } else {
        /* One part: the value's bytes, little endian.  A value the reader
         * loaded is already little endian; one left in the blob is read
         * as it comes, swapped when the file is big endian. */
        BulkOut *b = ag_calloc(1, sizeof *b);
        bool loaded = !(el->flags & DICOM_EL_NOT_LOADED);
        AgBuf mem;
        ag_buf_init(&mem, 0);
        if (b != NULL) {
            b->fd = -1;
            b->head_len = (size_t)snprintf(
                b->head, sizeof b->head, "--" BOUNDARY "\r\nContent-Type: "
                "application/octet-stream\r\n\r\n");
        }
        struct MHD_Response *resp = NULL;
        if (b != NULL && loaded) {
            if (ag_buf_append(&mem, b->head, b->head_len) == AG_OK &&
                ag_buf_append(&mem, el->value, el->length) == AG_OK &&
                ag_buf_append_str(&mem, BULK_TAIL) == AG_OK) {
                resp = MHD_create_response_from_buffer(
                    mem.len, mem.data, MHD_RESPMEM_MUST_COPY);
            }
            ag_free(b);
        } else if (b != NULL) {
            b->fd = dup(s.in.fd);
            b->off = el->offset;
            b->len = el->length;
            b->swap = ts != NULL && ts->big_endian ? swap_unit(el->vr) : 1;
            if (b->fd < 0 || el->offset > s.in.size ||
                el->length > s.in.size - el->offset) {
                bulk_out_free(b);
            } else {
                resp = MHD_create_response_from_callback(
                    MHD_SIZE_UNKNOWN, 256 * 1024, bulk_read, b,
                    bulk_out_free);
                if (resp == NULL) {
                    bulk_out_free(b);
                }
            }
        }
        if (resp != NULL) {
            MHD_add_response_header(resp, "Content-Type",
                                    "multipart/related; type=\"application/"
                                    "octet-stream\"; boundary=" BOUNDARY);
        }
        ret = resp != NULL ? web__send_response(r, 200, resp)
                           : web__json_error(r, 500, "bulk data retrieval "
                                             "failed", "out of memory");
        ag_buf_deinit(&mem);
    }
    frame_src_close(&s);
    return ret;
}

/*
 * GET .../instances/{uid}/bulkdata/TAG[/ITEM/TAG...]: the BulkDataURIs of
 * the metadata documents (store.c builds them as
 * /dicom-web/studies/S/series/SE/instances/I/bulkdata + the tag path).
 * The top-level Pixel Data answers with its frames, as /frames does
 * (every frame, negotiated the same way); any other value is one
 * application/octet-stream part.
 */
static enum MHD_Result bulkdata(WebRequest *r, const char *study,
                                const char *series, const char *inst,
                                char **path, int npath)
{
    if (npath < 1 || npath % 2 == 0) {
        return web__json_error(r, 404, "not found", "no such bulk data");
    }
    if (!instance_in_path(r, study, series, inst)) {
        return web__json_error(r, 404, "not found", "no such instance");
    }
    if (npath == 1 && strcasecmp(path[0], "7fe00010") == 0) {
        return serve_frames(r, inst, NULL, 0);
    }
    return bulk_value(r, inst, path, npath);
}

/* Route GET /dicom-web/... (PS3.18 Table 10.4.1-1, 10.6.1-1). */
enum MHD_Result web__dicomweb_get(WebRequest *r, char **seg, int n)
{
    if (!web__can(r, ACCESS_VIEW)) {   /* issue 7 */
        return web__forbidden(r, "needs the view verb");
    }
    if (n == 0) {
        /* What this origin serves (a summary; PS3.18 §8.9's full
         * capabilities document is OPTIONS /dicom-web and GET
         * /dicom-web/capabilities, capabilities.c). */
        static const char CAPS[] =
            "{\"service\": \"DICOMweb\", \"standard\": \"PS3.18\", "
            "\"qido\": true, \"wado\": true, \"stow\": true, "
            "\"rendered\": true, \"thumbnail\": true, \"bulkdata\": true, "
            "\"wado_uri\": \"/wado\", \"stow_media\": [\"application/dicom\", "
            "\"application/dicom+json\"]}";
        return web__send(r, 200, "application/json", CAPS,
                         sizeof CAPS - 1);
    }
    if (n == 1 && strcmp(seg[0], "series") == 0) {
        return qido(r, STORE_LEVEL_SERIES, NULL, NULL);
    }
    if (n == 1 && strcmp(seg[0], "instances") == 0) {
        return qido(r, STORE_LEVEL_INSTANCE, NULL, NULL);
    }
    if (strcmp(seg[0], "studies") != 0) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    if (n == 1) {
        return qido(r, STORE_LEVEL_STUDY, NULL, NULL);
    }
    const char *study = seg[1];
    if (!is_uid(study)) {
        return web__json_error(r, 400, "bad request", "study UID is not a "
                               "valid UID");
    }
    /* Access control (issue 7): a study out of scope is answered exactly
     * as one that does not exist, before any handler runs. */
    if (!web__study_visible(r, study)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    if (web__rendered_route(seg, n)) {   /* rendered.c */
        return web__rendered(r, seg, n);
    }
    if (n == 2) {
        return wado(r, study, NULL, NULL);
    }
    if (n == 3 && strcmp(seg[2], "metadata") == 0) {
        return metadata(r, study, NULL, NULL);
    }
    if (n == 3 && strcmp(seg[2], "series") == 0) {
        return qido(r, STORE_LEVEL_SERIES, study, NULL);
    }
    if (n == 3 && strcmp(seg[2], "instances") == 0) {
        return qido(r, STORE_LEVEL_INSTANCE, study, NULL);
    }
    if (n < 4 || strcmp(seg[2], "series") != 0) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    const char *series = seg[3];
    if (!is_uid(series)) {
        return web__json_error(r, 400, "bad request", "series UID is not a "
                               "valid UID");
    }
    if (n == 4) {
        return wado(r, study, series, NULL);
    }
    if (n == 5 && strcmp(seg[4], "metadata") == 0) {
        return metadata(r, study, series, NULL);
    }
    if (n == 5 && strcmp(seg[4], "instances") == 0) {
        return qido(r, STORE_LEVEL_INSTANCE, study, series);
    }
    if (n < 6 || strcmp(seg[4], "instances") != 0) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    const char *inst = seg[5];
    if (!is_uid(inst)) {
        return web__json_error(r, 400, "bad request", "instance UID is not "
                               "a valid UID");
    }
    if (n == 6) {
        return wado(r, study, series, inst);
    }
    if (n == 7 && strcmp(seg[6], "metadata") == 0) {
        return metadata(r, study, series, inst);
    }
    if (n == 8 && strcmp(seg[6], "frames") == 0) {
        return frames(r, study, series, inst, seg[7]);
    }
    if (n >= 8 && strcmp(seg[6], "bulkdata") == 0) {
        return bulkdata(r, study, series, inst, seg + 7, n - 7);
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

/* ---- STOW-RS (PS3.18 §10.5) --------------------------------------------- */

/* Metadata parts of one request (application/dicom+json), in memory. */
#define STOW_JSON_MAX ((size_t)64 << 20)
/* One instance built from metadata and bulk data is held in memory. */
#define STOW_INSTANCE_BUDGET ((size_t)2 << 30)

/* PS3.18 Table I.2-2 (Store Instances Response Failure Reason). */
#define REASON_OUT_OF_RESOURCES 0xA700
#define REASON_DOES_NOT_MATCH 0xA900
#define REASON_CANNOT_UNDERSTAND 0xC000
#define REASON_TS_NOT_SUPPORTED 0xC122

typedef struct StowResult {
    char cls[65], inst[65];
    uint16_t reason;       /* 0 = stored */
} StowResult;

typedef enum PartKind {
    PART_SKIP,             /* refused, reported as a failure */
    PART_DICOM,            /* application/dicom: ingested as it ends */
    PART_JSON,             /* application/dicom+json metadata */
    PART_BULK,             /* bulk data a BulkDataURI points to */
} PartKind;

/* A bulk data part, spooled to a file until the metadata is read. */
typedef struct StowBulk {
    char *location;        /* Content-Location (request arena) */
    char *cid;             /* Content-ID without <> */
    char *media;           /* lowercased media type, "" if none */
    char *ts;              /* its transfer-syntax parameter, "" if none */
    char *path;            /* the spool file */
    uint64_t size;
} StowBulk;

typedef struct StowDoc {
    char *json;            /* heap */
    size_t len;
} StowDoc;

typedef struct Stow {
    WebRequest *r;
    WebMultipart *mp;
    const char *study;     /* /studies/{uid} form, or NULL */
    bool json;             /* type=application/dicom+json */
    PartKind kind;         /* of the current part */
    StoreSpool *spool;     /* the current application/dicom part */
    int fd;                /* the current bulk data part's file */
    char tmp[AG_PATH_MAX];
    AgBuf meta;            /* the current metadata part */
    StowDoc *docs;
    size_t ndocs, docs_cap, json_bytes;
    StowBulk *bulk;
    size_t nbulk, bulk_cap;
    uint64_t total, max;
    StowResult *res;
    size_t n, cap;
    int rc;                /* fatal: malformed body */
    AgError err;
    /* Parts up to STOW_ASYNC_MAX are ingested without waiting for their
     * group commit, so that one request's parts share commits; their
     * verdicts come back on a store thread.  lock guards res, n, cap and
     * pending; idle: pending dropped. */
    StoreSource src;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    size_t pending;
} Stow;

/* A part this small is ingested asynchronously; larger ones are moved
 * into place (no copy) and waited for. */
#define STOW_ASYNC_MAX ((uint64_t)1 << 20)
/* Parts of one request in flight at once: bounds the memory they hold. */
#define STOW_IN_FLIGHT 32

/* Wait until at most max asynchronous parts are in flight. */
static void stow_wait(Stow *s, size_t max)
{
    pthread_mutex_lock(&s->lock);
    while (s->pending > max) {
        pthread_cond_wait(&s->idle, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static void stow_free(void *p)
{
    Stow *s = p;
    if (s == NULL) {
        return;
    }
    stow_wait(s, 0);   /* an aborted request: its parts still report */
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    store_spool_discard(s->spool);
    if (s->fd >= 0) {
        close(s->fd);
        unlink(s->tmp);
    }
    for (size_t i = 0; i < s->nbulk; i++) {
        unlink(s->bulk[i].path);
    }
    for (size_t i = 0; i < s->ndocs; i++) {
        ag_free(s->docs[i].json);
    }
    ag_buf_deinit(&s->meta);
    web_multipart_free(s->mp);
    ag_free(s->docs);
    ag_free(s->bulk);
    ag_free(s->res);
    ag_free(s);
}

static void add_result_locked(Stow *s, const char *cls, const char *inst,
                              uint16_t reason)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        StowResult *v = ag_realloc(s->res, cap * sizeof *v);
        if (v == NULL) {
            return;
        }
        s->res = v;
        s->cap = cap;
    }
    StowResult *x = &s->res[s->n++];
    ag_fmt(x->cls, sizeof x->cls, "%s", cls ? cls : "");
    ag_fmt(x->inst, sizeof x->inst, "%s", inst ? inst : "");
    x->reason = reason;
}

static void add_result(Stow *s, const char *cls, const char *inst,
                       uint16_t reason)
{
    pthread_mutex_lock(&s->lock);
    add_result_locked(s, cls, inst, reason);
    pthread_mutex_unlock(&s->lock);
}

/* What a part is, from its Content-Type (PS3.18 §10.5.1: application/dicom
 * parts, or, for type=application/dicom+json, metadata and bulk data). */
static PartKind part_kind(const Stow *s, const char *ct, WebMediaRange *mt)
{
    memset(mt, 0, sizeof *mt);
    if (ct[0] == '\0') {
        return s->json ? PART_BULK : PART_SKIP;
    }
    WebAccept a;
    AgError err;
    if (web_accept_parse(ct, &a, &err) != AG_OK || a.n != 1) {
        return PART_SKIP;
    }
    *mt = a.range[0];
    if (strcmp(mt->type, "application/dicom") == 0) {
        return PART_DICOM;
    }
    if (!s->json) {
        return PART_SKIP;
    }
    if (strcmp(mt->type, "application/dicom+json") == 0 ||
        strcmp(mt->type, "application/json") == 0) {
        return PART_JSON;
    }
    return PART_BULK;
}

static int spool_open(Stow *s, AgError *err)
{
    ag_fmt(s->tmp, sizeof s->tmp, "%s/stow-XXXXXX",
           store_tmp_dir(web__store(s->r)));
    s->fd = mkstemp(s->tmp);
    if (s->fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "spool");
    }
    return AG_OK;
}

static int add_bulk(Stow *s, const WebPartHeaders *h, const WebMediaRange *mt,
                    AgError *err)
{
    if (s->nbulk == s->bulk_cap) {
        size_t cap = s->bulk_cap ? s->bulk_cap * 2 : 16;
        StowBulk *v = ag_realloc(s->bulk, cap * sizeof *v);
        if (v == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
        }
        s->bulk = v;
        s->bulk_cap = cap;
    }
    AgArena *a = s->r->arena;
    const char *cid = h->content_id;
    size_t cn = strlen(cid);
    if (cn >= 2 && cid[0] == '<' && cid[cn - 1] == '>') {
        cid++;
        cn -= 2;
    }
    StowBulk b = {
        .location = ag_arena_strdup(a, h->content_location),
        .cid = ag_arena_strndup(a, cid, cn),
        .media = ag_arena_strdup(a, mt->type),
        .ts = ag_arena_strdup(a, mt->ts),
        .path = ag_arena_strdup(a, s->tmp),
    };
    if (b.location == NULL || b.cid == NULL || b.media == NULL ||
        b.ts == NULL || b.path == NULL) {
        return ag_error_set(err, AG_ERR_LIMIT, "too many bulk data parts");
    }
    s->bulk[s->nbulk++] = b;
    return AG_OK;
}

static int part_begin(void *ctx, const WebPartHeaders *h, AgError *err)
{
    Stow *s = ctx;
    WebMediaRange mt;
    s->kind = part_kind(s, h->content_type, &mt);
    switch (s->kind) {
    case PART_SKIP:
        add_result(s, NULL, NULL, REASON_DOES_NOT_MATCH);   /* part type */
        return AG_OK;
    case PART_JSON:
        ag_buf_reset(&s->meta);
        return AG_OK;
    case PART_DICOM:
        /* Hashed, and kept in memory or written out, as it arrives. */
        return store_spool_open(web__store(s->r), &s->spool, err);
    case PART_BULK: {
        int rc = spool_open(s, err);
        if (rc == AG_OK) {
            rc = add_bulk(s, h, &mt, err);
        }
        if (rc != AG_OK && s->fd >= 0) {
            close(s->fd);
            unlink(s->tmp);
            s->fd = -1;
        }
        return rc;
    }
    }
    return AG_OK;
}

static int part_data(void *ctx, const uint8_t *d, size_t n, AgError *err)
{
    Stow *s = ctx;
    s->total += n;
    if (s->total > s->max) {
        return ag_error_set(err, AG_ERR_LIMIT, "request body larger than "
                            "%llu bytes", (unsigned long long)s->max);
    }
    if (s->kind == PART_JSON) {
        if (s->json_bytes + s->meta.len + n > STOW_JSON_MAX) {
            return ag_error_set(err, AG_ERR_LIMIT, "metadata larger than "
                                "%zu bytes", STOW_JSON_MAX);
        }
        int rc = ag_buf_append(&s->meta, d, n);
        return rc == AG_OK ? AG_OK
                           : ag_error_set(err, rc, "metadata: out of memory");
    }
    if (s->kind == PART_DICOM) {
        /* A failure (disk full, too large) spoils the spool, which keeps
         * it: this part is then refused at its end, the others go on. */
        if (s->spool != NULL) {
            (void)store_spool_write(s->spool, d, n, NULL);
        }
        return AG_OK;
    }
    if (s->fd < 0 || s->kind == PART_SKIP) {
        return AG_OK;
    }
    return ag_write_all(s->fd, d, n, err);
}

/* PS3.18 Table I.2-2 failure reasons for ingest errors. */
static uint16_t stow_reason(int code)
{
    switch (code) {
    case AG_ERR_PARSE: return REASON_CANNOT_UNDERSTAND;
    case AG_ERR_INVALID: return REASON_DOES_NOT_MATCH;
    case AG_ERR_EXISTS: return 0x0111;
    case AG_ERR_LIMIT:
    case AG_ERR_NOMEM:
    case AG_ERR_IO: return REASON_OUT_OF_RESOURCES;
    default: return 0x0110;
    }
}

static void stow_verdict(Stow *s, int rc, const StoreResult *res,
                         const AgError *err)
{
    if (rc == AG_OK) {
        add_result(s, res->sop_class_uid, res->sop_instance_uid, 0);
    } else {
        ag_log(AG_LOG_WARN, "http", "STOW-RS part refused: %s", err->msg);
        add_result(s, NULL, NULL, stow_reason(rc));
    }
}

/* StoreIngestDone of an asynchronous part (store thread, or ours). */
static void stow_done(void *ctx, int rc, const StoreResult *res,
                      const AgError *err)
{
    Stow *s = ctx;
    stow_verdict(s, rc, res, err);
    pthread_mutex_lock(&s->lock);
    s->pending--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static int part_end(void *ctx, AgError *err)
{
    Stow *s = ctx;
    if (s->kind == PART_JSON) {
        if (s->ndocs == s->docs_cap) {
            size_t cap = s->docs_cap ? s->docs_cap * 2 : 4;
            StowDoc *v = ag_realloc(s->docs, cap * sizeof *v);
            if (v == NULL) {
                return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
            }
            s->docs = v;
            s->docs_cap = cap;
        }
        size_t len = s->meta.len;
        char *json = ag_buf_steal(&s->meta);
        if (json == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
        }
        s->docs[s->ndocs++] = (StowDoc){json, len};
        s->json_bytes += len;
        return AG_OK;
    }
    if (s->kind == PART_DICOM && s->spool != NULL) {
        StoreSpool *sp = s->spool;
        s->spool = NULL;   /* consumed below, whatever the verdict */
        if (store_spool_size(sp) <= STOW_ASYNC_MAX) {
            stow_wait(s, STOW_IN_FLIGHT - 1);
            pthread_mutex_lock(&s->lock);
            s->pending++;
            pthread_mutex_unlock(&s->lock);
            store_ingest_spool_async(web__store(s->r), sp, &s->src,
                                     stow_done, s);
            return AG_OK;
        }
        StoreResult res;
        AgError ierr;
        int rc = store_ingest_spool(web__store(s->r), sp, &s->src, &res,
                                    &ierr);
        stow_verdict(s, rc, &res, &ierr);
        return AG_OK;
    }
    if (s->fd < 0 || s->kind == PART_SKIP) {
        return AG_OK;
    }
    close(s->fd);
    s->fd = -1;
    struct stat st;
    StowBulk *b = &s->bulk[s->nbulk - 1];
    b->size = stat(b->path, &st) == 0 ? (uint64_t)st.st_size : 0;
    return AG_OK;
}

/* ---- STOW-RS: instances from DICOM JSON and bulk data (PS3.18 §10.5.1) -- */

/* "scheme://authority/path" -> "/path": a BulkDataURI and a
 * Content-Location may differ in being absolute or not. */
static const char *uri_path(const char *u)
{
    const char *p = strstr(u, "://");
    if (p == NULL) {
        return u;
    }
    const char *slash = strchr(p + 3, '/');
    return slash != NULL ? slash : "";
}

static bool bulk_matches(const StowBulk *b, const char *uri)
{
    if (strncmp(uri, "cid:", 4) == 0) {
        return b->cid[0] != '\0' && strcmp(b->cid, uri + 4) == 0;
    }
    return b->location[0] != '\0' &&
           strcmp(uri_path(b->location), uri_path(uri)) == 0;
}

/* A part's bytes, in a, with one spare byte for padding. */
static int read_bulk(const StowBulk *b, AgArena *a, uint8_t **out,
                     AgError *err)
{
    if (b->size > UINT32_MAX - 2) {
        return ag_error_set(err, AG_ERR_LIMIT, "bulk data part of %llu "
                            "bytes does not fit one element",
                            (unsigned long long)b->size);
    }
    *out = ag_arena_alloc(a, (size_t)b->size + 1);
    if (*out == NULL) {
        return ag_error_set(err, ag_arena_fail_code(a), "bulk data: out of "
                            "memory");
    }
    int fd = open(b->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "bulk data spool");
    }
    int rc = pread_all(fd, *out, (size_t)b->size, 0, b->size, err);
    close(fd);
    return rc;
}

typedef struct Build {
    Stow *s;
    AgArena *a;
    char ts[65];           /* of the instance: Explicit VR Little Endian
                            * unless the pixel data comes compressed */
    uint16_t reason;       /* PS3.18 Table I.2-2, when refused */
    AgError *err;
} Build;

static int refuse(Build *b, uint16_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Refuse the instance with a failure reason and a message. */
static int refuse(Build *b, uint16_t reason, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    b->reason = reason;
    return ag_error_set(b->err, AG_ERR_INVALID, "%s", msg);
}

/* The parts a BulkDataURI names, in the order they came. */
static size_t find_bulk(Stow *s, const char *uri, const StowBulk **out,
                        size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nbulk; i++) {
        if (bulk_matches(&s->bulk[i], uri)) {
            if (n < max) {
                out[n] = &s->bulk[i];
            }
            n++;
        }
    }
    return n;
}

static int put_bulk_value(Build *b, DicomElement *el)
{
    const char *uri = (const char *)el->value;
    const StowBulk *part;
    size_t n = find_bulk(b->s, uri, &part, 1);
    if (n != 1) {
        return refuse(b, REASON_CANNOT_UNDERSTAND, "BulkDataURI %.120s: "
                      "%s part has that Content-Location", uri,
                      n == 0 ? "no" : "more than one");
    }
    uint8_t *v;
    int rc = read_bulk(part, b->a, &v, b->err);
    if (rc != AG_OK) {
        b->reason = stow_reason(rc);
        return rc;
    }
    size_t len = (size_t)part->size;
    if (len % 2 != 0) {   /* PS3.5 §7.1.1: even lengths, VR's padding */
        const DicomVRInfo *info = dicom_vr_info(el->vr);
        v[len++] = (uint8_t)(info != NULL ? info->pad : 0);
    }
    el->value = len > 0 ? v : NULL;
    el->length = (uint32_t)len;
    el->flags &= (uint16_t)~DICOM_EL_BULK_URI;
    return AG_OK;
}

/* Does a compressed frame begin as its media type says (PS3.5 A.4)? */
static bool looks_like(const char *media, const uint8_t *p, size_t n)
{
    if (strcmp(media, "image/jpeg") == 0 || strcmp(media, "image/jls") == 0) {
        return n >= 2 && p[0] == 0xff && p[1] == 0xd8;   /* SOI */
    }
    if (strcmp(media, "image/jp2") == 0 || strcmp(media, "image/jpx") == 0 ||
        strcmp(media, "image/jphc") == 0) {
        /* a JPEG 2000 codestream (SOC, SIZ), not a JP2 file */
        return n >= 4 && p[0] == 0xff && p[1] == 0x4f && p[2] == 0xff &&
               p[3] == 0x51;
    }
    if (strcmp(media, "image/dicom-rle") == 0) {
        /* PS3.5 G.5: a 64-byte header starting with 1..15 segments */
        uint32_t segs = n >= 4 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                 (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
                               : 0;
        return n >= 64 && segs >= 1 && segs <= 15;
    }
    return true;
}

/* Uncompressed pixel data: the parts' bytes back to back, which must be
 * exactly the frames the image attributes describe. */
static int put_native_pixels(Build *b, DicomDataset *ds, DicomElement *el,
                             const StowBulk **parts, size_t n)
{
    CodecImage im;
    if (codec_image_from_dataset(ds, &im, b->err) != AG_OK) {
        char why[sizeof b->err->msg];
        ag_fmt(why, sizeof why, "%s", b->err->msg);
        return refuse(b, REASON_DOES_NOT_MATCH, "%s", why);
    }
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += parts[i]->size;
    }
    /* at most 65535 x 65535 x 3 x 32 bits x 100000 frames: no overflow */
    uint64_t frame_bits = (uint64_t)im.rows * im.columns *
                          im.samples_per_pixel * im.bits_allocated;
    uint64_t want = (frame_bits * im.frames + 7) / 8;
    if (total != want && !(total == want + 1 && want % 2 != 0)) {
        return refuse(b, REASON_DOES_NOT_MATCH, "pixel data of %llu bytes: "
                      "the image attributes need %llu",
                      (unsigned long long)total, (unsigned long long)want);
    }
    if (want > UINT32_MAX - 2) {
        return refuse(b, REASON_OUT_OF_RESOURCES, "pixel data too large "
                      "for one element");
    }
    uint8_t *v = ag_arena_alloc(b->a, (size_t)want + 1);
    if (v == NULL) {
        return refuse(b, REASON_OUT_OF_RESOURCES, "pixel data: out of "
                      "memory");
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p;
        int rc = read_bulk(parts[i], b->a, &p, b->err);
        if (rc != AG_OK) {
            b->reason = stow_reason(rc);
            return rc;
        }
        size_t take = at + parts[i]->size > want ? (size_t)(want - at)
                                                  : (size_t)parts[i]->size;
        memcpy(v + at, p, take);
        at += take;
    }
    if (want % 2 != 0) {
        v[want++] = 0;   /* PS3.5 §8.1.1 */
    }
    el->value = v;
    el->length = (uint32_t)want;
    el->flags &= (uint16_t)~DICOM_EL_BULK_URI;
    ag_fmt(b->ts, sizeof b->ts, "%s", DICOM_TS_EXPLICIT_LE);
    return AG_OK;
}

/* Compressed pixel data: one part per frame (PS3.18 §8.7.3.3.2: "each
 * frame ... encoded separately"), each becoming one fragment after an
 * empty Basic Offset Table (PS3.5 A.4); the syntax is the parts'
 * transfer-syntax parameter or their media type's default. */
static int put_compressed_pixels(Build *b, DicomDataset *ds, DicomElement *el,
                                 const StowBulk **parts, size_t n)
{
    const char *media = strcmp(parts[0]->media, "image/x-dicom-rle") == 0
                            ? "image/dicom-rle" : parts[0]->media;
    const char *ts = parts[0]->ts[0] != '\0' ? parts[0]->ts
                                             : web_media_default_ts(media);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(parts[i]->media, parts[0]->media) != 0 ||
            strcmp(parts[i]->ts, parts[0]->ts) != 0) {
            return refuse(b, REASON_CANNOT_UNDERSTAND, "the pixel data "
                          "parts differ in media type or transfer "
                          "syntax");
        }
    }
    const DicomTransferSyntax *t = ts != NULL ? dicom_ts_lookup(ts) : NULL;
    if (t == NULL || !t->encapsulated || !web_media_has_ts(media, ts)) {
        return refuse(b, REASON_TS_NOT_SUPPORTED, "pixel data as %.64s with "
                      "transfer syntax %.64s is not supported", media,
                      ts != NULL ? ts : "(none)");
    }
    int64_t frames = 1;
    if (dicom_dataset_find(ds, TAG_NUMBER_OF_FRAMES) != NULL &&
        dicom_get_int(ds, TAG_NUMBER_OF_FRAMES, &frames) != AG_OK) {
        frames = 0;
    }
    if (frames < 1 || (uint64_t)frames != n) {
        return refuse(b, REASON_DOES_NOT_MATCH, "%zu compressed pixel data "
                      "parts for Number of Frames %lld", n,
                      (long long)frames);
    }
    DicomFragment *frags = ag_arena_zalloc(b->a, (n + 1) * sizeof *frags);
    if (frags == NULL) {
        return refuse(b, REASON_OUT_OF_RESOURCES, "pixel data: out of "
                      "memory");
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *p;
        int rc = read_bulk(parts[i], b->a, &p, b->err);
        if (rc != AG_OK) {
            b->reason = stow_reason(rc);
            return rc;
        }
        size_t len = (size_t)parts[i]->size;
        if (!looks_like(media, p, len)) {
            return refuse(b, REASON_DOES_NOT_MATCH, "pixel data part %zu is "
                          "not %.64s data", i + 1, media);
        }
        if (len % 2 != 0) {
            p[len++] = 0;   /* PS3.5 A.4: fragments have even length */
        }
        frags[i + 1].data = p;
        frags[i + 1].length = (uint32_t)len;
    }
    el->vr = DICOM_VR_OB;
    el->flags = DICOM_EL_ENCAPSULATED | DICOM_EL_UNDEFINED_LENGTH;
    el->length = DICOM_UNDEFINED_LENGTH;
    el->value = NULL;
    el->frags = frags;
    el->nfrags = (uint32_t)n + 1;
    ag_fmt(b->ts, sizeof b->ts, "%s", ts);
    return AG_OK;
}

static int put_pixels(Build *b, DicomDataset *ds, DicomElement *el)
{
    const char *uri = (const char *)el->value;
    size_t n = find_bulk(b->s, uri, NULL, 0);
    if (n == 0) {
        return refuse(b, REASON_CANNOT_UNDERSTAND, "BulkDataURI %.120s: no "
                      "part has that Content-Location", uri);
    }
    if (n > CODEC_MAX_FRAMES) {
        return refuse(b, REASON_DOES_NOT_MATCH, "more pixel data parts than "
                      "frames");
    }
    const StowBulk **parts = ag_arena_alloc(b->a, n * sizeof *parts);
    if (parts == NULL) {
        return refuse(b, REASON_OUT_OF_RESOURCES, "out of memory");
    }
    find_bulk(b->s, uri, parts, n);
    bool native = parts[0]->media[0] == '\0' ||
                  strcmp(parts[0]->media, "application/octet-stream") == 0;
    return native ? put_native_pixels(b, ds, el, parts, n)
                  : put_compressed_pixels(b, ds, el, parts, n);
}

/* Replace every BulkDataURI of ds (and its items) by the bytes of the part
 * it names.  The top-level Pixel Data may be compressed. */
static int resolve_bulk(Build *b, DicomDataset *ds, bool top)
{
    size_t n = dicom_dataset_count(ds);
    for (size_t i = 0; i < n; i++) {
        DicomElement *el = dicom_dataset_at(ds, i);
        int rc = AG_OK;
        if (el->vr == DICOM_VR_SQ) {
            for (uint32_t k = 0; k < el->nitems && rc == AG_OK; k++) {
                rc = resolve_bulk(b, el->items[k], false);
            }
        } else if (el->flags & DICOM_EL_BULK_URI) {
            rc = top && el->tag == DICOM_TAG_PIXEL_DATA
                ? put_pixels(b, ds, el) : put_bulk_value(b, el);
        }
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

/* Write the instance as Part 10 to a spool file and ingest it: the same
 * pipeline as application/dicom parts. */
static int ingest_built(Stow *s, DicomDataset *ds, const char *ts,
                        StoreResult *res, AgError *err)
{
    char tmp[AG_PATH_MAX];
    ag_fmt(tmp, sizeof tmp, "%s/stow-XXXXXX",
           store_tmp_dir(web__store(s->r)));
    int fd = mkstemp(tmp);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "spool");
    }
    DicomFile f;
    memset(&f, 0, sizeof f);
    f.dataset = ds;
    int rc = dicom_file_build_meta(&f, ts, err);
    if (rc == AG_OK) {
        DicomWriteOptions wo = {.zero_preamble = true};
        rc = dicom_write_file(&f, ts, &wo, dicom_sink_fd, &fd, err);
    }
    close(fd);
    if (rc != AG_OK) {
        unlink(tmp);
        return rc;
    }
    StoreSource src = {.via = "stow", .expect_study = s->study,
                       .user = s->r->who.user_id};
    return store_ingest_path(web__store(s->r), tmp, true, &src, res, err);
}

/* One data set of the metadata: read, completed from the bulk data
 * parts, checked, ingested; its outcome is one entry of the response. */
static void stow_json_instance(Stow *s, json_t *obj)
{
    AgError err;
    ag_error_clear(&err);
    AgArena *a = ag_arena_create(STOW_INSTANCE_BUDGET);
    char *txt = a != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    DicomDataset *ds = NULL;
    int rc = txt == NULL ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
                         : dicom_json_read(txt, strlen(txt), a, &ds, &err);
    free(txt);
    Build b = {.s = s, .a = a, .err = &err};
    ag_fmt(b.ts, sizeof b.ts, "%s", DICOM_TS_EXPLICIT_LE);
    const char *cls = NULL, *inst = NULL;
    StoreResult res;
    if (rc != AG_OK) {
        b.reason = rc == AG_ERR_NOMEM || rc == AG_ERR_LIMIT
                       ? REASON_OUT_OF_RESOURCES : REASON_CANNOT_UNDERSTAND;
    } else {
        cls = dicom_get_string(ds, DICOM_TAG_SOP_CLASS_UID, a);
        inst = dicom_get_string(ds, DICOM_TAG_SOP_INSTANCE_UID, a);
        /* Group 0002 is the file's, made here (PS3.10 §7.1). */
        while (dicom_dataset_count(ds) > 0 &&
               DICOM_TAG_GROUP(dicom_dataset_at(ds, 0)->tag) == 0x0002) {
            dicom_dataset_remove(ds, dicom_dataset_at(ds, 0)->tag);
        }
        rc = resolve_bulk(&b, ds, true);
        const DicomTransferSyntax *t = dicom_ts_lookup(b.ts);
        if (rc == AG_OK && t != NULL && t->encapsulated) {
            /* the fragments are ours: one per frame, no offset tables */
            dicom_dataset_remove(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE);
            dicom_dataset_remove(ds, DICOM_TAG_EXTENDED_OFFSET_TABLE_LENGTHS);
        }
        if (rc == AG_OK) {
            rc = ingest_built(s, ds, b.ts, &res, &err);
            if (rc != AG_OK) {
                b.reason = stow_reason(rc);
            }
        }
    }
    if (rc == AG_OK) {
        add_result(s, res.sop_class_uid, res.sop_instance_uid, 0);
    } else {
        ag_log(AG_LOG_WARN, "http", "STOW-RS instance refused (%04X): %s",
               b.reason, err.msg);
        add_result(s, cls, inst, b.reason ? b.reason : 0x0110);
    }
    ag_arena_destroy(a);
}

/* The metadata parts: each a DICOM JSON array of data sets (PS3.18
 * §F.2: an array; a single object is taken too). */
static void stow_json(Stow *s)
{
    for (size_t i = 0; i < s->ndocs; i++) {
        json_error_t je;
        json_t *root = json_loadb(s->docs[i].json, s->docs[i].len,
                                  JSON_REJECT_DUPLICATES, &je);
        if (root == NULL) {
            ag_log(AG_LOG_WARN, "http", "STOW-RS metadata part %zu: line %d "
                   "column %d: %s", i + 1, je.line, je.column, je.text);
            add_result(s, NULL, NULL, REASON_CANNOT_UNDERSTAND);
            continue;
        }
        if (json_is_array(root)) {
            size_t k;
            json_t *v;
            json_array_foreach(root, k, v) {
                stow_json_instance(s, v);
            }
        } else if (json_is_object(root)) {
            stow_json_instance(s, root);
        } else {
            add_result(s, NULL, NULL, REASON_CANNOT_UNDERSTAND);
        }
        json_decref(root);
    }
}

static enum MHD_Result stow_response(WebRequest *r, Stow *s)
{
    AgArena *a = r->arena;
    DicomDataset *ds = dicom_dataset_create(a);
    size_t ok = 0, failed = 0;
    for (size_t i = 0; ds != NULL && i < s->n; i++) {
        StowResult *x = &s->res[i];
        DicomElement *seq;
        DicomDataset *item;
        uint32_t tag = x->reason == 0 ? 0x00081199 : 0x00081198;
        if (dicom_set_sequence(ds, tag, &seq, NULL) != AG_OK ||
            dicom_sequence_append(ds, seq, &item, NULL) != AG_OK) {
            break;
        }
        if (x->cls[0]) {
            dicom_set_string(item, 0x00081150, DICOM_VR_UI, x->cls, NULL);
        }
        if (x->inst[0]) {
            dicom_set_string(item, 0x00081155, DICOM_VR_UI, x->inst, NULL);
        }
        if (x->reason != 0) {
            int64_t v = x->reason;
            dicom_set_ints(item, 0x00081197, DICOM_VR_US, &v, 1, NULL);
            failed++;
        } else {
            ok++;
        }
    }
    if (ds != NULL && s->study != NULL) {
        char *url = ag_arena_printf(a, "/dicom-web/studies/%s", s->study);
        dicom_set_string(ds, 0x00081190, DICOM_VR_UR, url, NULL);
    }
    AgBuf b;
    ag_buf_init(&b, 64 << 20);
    DicomJsonOptions jo = {0};
    if (ds != NULL) {
        dicom_json_write(ds, &jo, dicom_sink_buf, &b, NULL);
    }
    /* PS3.18 §10.5.3: 200 all stored, 202 some failed, 409 none stored. */
    unsigned status = failed == 0 ? 200 : ok > 0 ? 202 : 409;
    enum MHD_Result ret = web__send(r, status, DICOM_JSON, b.data, b.len);
    ag_buf_deinit(&b);
    return ret;
}

enum MHD_Result web__stow(WebRequest *r, char **seg, int nseg,
                          const char *data, size_t *size)
{
    Stow *s = r->upload;
    if (s == NULL) {
        if (nseg < 1 || nseg > 2 || strcmp(seg[0], "studies") != 0 ||
            (nseg == 2 && !is_uid(seg[1]))) {
            if (*size > 0) {
                *size = 0;
                return MHD_YES;
            }
            return web__json_error(r, 404, "not found", "STOW-RS takes "
                                   "POST /dicom-web/studies[/{uid}]");
        }
        s = ag_calloc(1, sizeof *s);
        if (s == NULL) {
            return MHD_NO;
        }
        s->r = r;
        s->fd = -1;
        s->max = web__config(r)->max_upload_bytes;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->idle, NULL);
        ag_buf_init(&s->meta, STOW_JSON_MAX);
        s->study = nseg == 2 ? ag_arena_strdup(r->arena, seg[1]) : NULL;
        s->src = (StoreSource){.via = "stow", .expect_study = s->study,
                               .user = r->who.user_id};
        r->upload = s;
        r->upload_free = stow_free;
        const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     "Content-Type");
        char boundary[71], type[128];
        static const WebMultipartCallbacks cb = {part_begin, part_data,
                                                 part_end};
        s->rc = ct == NULL ? ag_error_set(&s->err, AG_ERR_INVALID,
                                          "no Content-Type")
                : web_multipart_parse_content_type(ct, false, boundary, type,
                                                   &s->err);
        s->json = s->rc == AG_OK &&
                  strcmp(type, "application/dicom+json") == 0;
        if (s->rc == AG_OK && type[0] != '\0' && !s->json &&
            strcmp(type, "application/dicom") != 0) {
            s->rc = ag_error_set(&s->err, AG_ERR_UNSUPPORTED, "only "
                                 "type=\"application/dicom\" and "
                                 "type=\"application/dicom+json\" are "
                                 "accepted");
        }
        if (s->rc == AG_OK) {
            s->rc = web_multipart_create(boundary, NULL, &cb, s, &s->mp,
                                         &s->err);
        }
    }
    if (*size > 0) {
        if (s->rc == AG_OK) {
            s->rc = web_multipart_feed(s->mp, (const uint8_t *)data, *size,
                                       &s->err);
        }
        *size = 0;   /* consumed (or drained after an error) */
        return MHD_YES;
    }
    if (s->rc == AG_OK) {
        s->rc = web_multipart_finish(s->mp, &s->err);
    }
    stow_wait(s, 0);   /* every part's verdict is in */
    if (s->rc == AG_ERR_UNSUPPORTED) {
        return web__json_error(r, 415, "unsupported media type", s->err.msg);
    }
    if (s->rc == AG_ERR_LIMIT) {
        return web__json_error(r, 413, "too large", s->err.msg);
    }
    if (s->rc != AG_OK && s->n == 0) {
        return web__json_error(r, 400, "bad request", s->err.msg);
    }
    if (s->rc == AG_OK && s->json) {
        if (s->ndocs == 0 && s->n == 0) {
            return web__json_error(r, 400, "bad request", "no "
                                   "application/dicom+json metadata part");
        }
        stow_json(s);
    }
    return stow_response(r, s);
}

/* ---- CORS (Fetch standard, "CORS protocol") ----------------------------- */

/* The Origin to allow, or NULL: only under /dicom-web, only for an origin
 * configured with --cors-origin ("*" allows any, without credentials). */
static const char *cors_origin(WebRequest *r)
{
    const WebConfig *c = web__config(r);
    if (c->ncors_origins == 0 || strncmp(r->url, "/dicom-web", 10) != 0 ||
        (r->url[10] != '\0' && r->url[10] != '/')) {
        return NULL;
    }
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     "Origin");
    if (origin == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < c->ncors_origins; i++) {
        if (strcmp(c->cors_origins[i], "*") == 0) {
            return "*";
        }
        /* scheme and host are case-insensitive (RFC 6454 §4) */
        if (strcasecmp(c->cors_origins[i], origin) == 0) {
            return c->cors_origins[i];
        }
    }
    return NULL;
}

void web__cors_headers(WebRequest *r, struct MHD_Response *resp)
{
    const char *origin = cors_origin(r);
    if (origin == NULL) {
        return;
    }
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    if (strcmp(origin, "*") != 0) {
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                            "GET, HEAD, POST, OPTIONS");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            "Accept, Accept-Encoding, Authorization, "
                            "Content-Type");
    MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                            "Content-Type, Content-Encoding, Content-Length, "
                            "Content-Location, Warning");
    if (strcmp(r->method, "OPTIONS") == 0) {
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
}

enum MHD_Result web__dicomweb_options(WebRequest *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        MHD_add_response_header(resp, "Allow", "GET, HEAD, POST, OPTIONS");
    }
    return web__send_response(r, 204, resp);
}
