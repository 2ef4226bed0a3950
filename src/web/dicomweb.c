/*
 * dicomweb.c — DICOMweb (PS3.18): QIDO-RS (§10.6), WADO-RS (§10.4) and
 * STOW-RS (§10.5) over the archive core.
 *
 * QIDO-RS shares store_query() with C-FIND.  WADO-RS streams instances from
 * their blobs in a multipart/related body (bounded memory whatever the
 * study's size) and answers /metadata from the per-instance DICOM JSON
 * built at ingest.  STOW-RS streams each part to a spool file that the
 * ingest pipeline renames into the blob store.
 */
#include "web_int.h"
#include "web/multipart.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOUNDARY "agora-7c2f1e09b4d85a36"
#define MAX_WADO_INSTANCES 100000u
#define DICOM_JSON "application/dicom+json"

static bool is_uid(const char *s)
{
    return s != NULL && dicom_uid_valid(s, strlen(s));
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

static enum MHD_Result qido_arg(void *cls, enum MHD_ValueKind kind,
                                const char *key, const char *value)
{
    (void)kind;
    QidoArgs *a = cls;
    if (a->bad[0] != '\0') {
        return MHD_NO;
    }
    if (value == NULL) {
        value = "";
    }
    char *end;
    if (strcmp(key, "limit") == 0 || strcmp(key, "offset") == 0) {
        unsigned long v = strtoul(value, &end, 10);
        if (*end != '\0' || value[0] == '\0' || v > 1000000) {
            ag_fmt(a->bad, sizeof a->bad, "%s must be a number", key);
            return MHD_NO;
        }
        if (key[0] == 'l') {
            a->q.limit = (uint32_t)v;
        } else {
            a->q.offset = (uint32_t)v;
        }
        return MHD_YES;
    }
    if (strcmp(key, "fuzzymatching") == 0) {
        a->q.fuzzy = strcmp(value, "true") == 0;
        return MHD_YES;
    }
    if (strcmp(key, "includefield") == 0) {
        return MHD_YES;   /* every indexed attribute is returned anyway */
    }
    uint32_t tag = parse_tag(key);
    const DicomDictEntry *e = tag ? dicom_dict_lookup(tag) : NULL;
    if (tag == 0 || e == NULL || e->vr == DICOM_VR_SQ ||
        e->vr == DICOM_VR_NONE) {
        ag_fmt(a->bad, sizeof a->bad, "unknown or unsupported query key "
               "\"%.64s\"", key);
        return MHD_NO;
    }
    /* Repeated keys become alternatives ("\\"-joined, as QIDO allows). */
    const DicomElement *have = dicom_dataset_find(a->keys, tag);
    AgArena *ar = dicom_dataset_arena(a->keys);
    const char *v = value;
    if (have != NULL && have->length > 0) {
        char *old = NULL;
        dicom_element_text(have, ar, &old, NULL);
        v = ag_arena_printf(ar, "%s\\%s", old ? old : "", value);
    }
    DicomVR vr = e->vr == DICOM_VR_US || e->vr == DICOM_VR_UL
                     ? DICOM_VR_LO : e->vr;   /* matched as text */
    if (v == NULL ||
        dicom_set_string(a->keys, tag, vr, v, NULL) != AG_OK) {
        ag_fmt(a->bad, sizeof a->bad, "value of %.64s is too long", key);
        return MHD_NO;
    }
    return MHD_YES;
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
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            o.json.len, o.json.data, MHD_RESPMEM_MUST_COPY);
        if (resp != NULL) {
            MHD_add_response_header(resp, "Content-Type", DICOM_JSON);
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

/* ---- WADO-RS ----------------------------------------------------------------- */

typedef struct UidList {
    char (*uid)[65];
    size_t n, cap;
    bool oom;
} UidList;

static int add_uid(void *ctx, const DicomDataset *m)
{
    UidList *l = ctx;
    const char *v = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID,
                                     dicom_dataset_arena(m));
    if (v == NULL) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *p = ag_realloc(l->uid, cap * sizeof *l->uid);
        if (p == NULL) {
            l->oom = true;
            return 1;
        }
        l->uid = p;
        l->cap = cap;
    }
    ag_fmt(l->uid[l->n++], 65, "%s", v);
    return 0;
}

/* Instances of a study / series / one instance, in order. */
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
    StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = k,
                    .limit = MAX_WADO_INSTANCES};
    int rc = store_query(web__store(r), &q, add_uid, out, NULL, err);
    if (rc == AG_OK && out->oom) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    return rc;
}

/* Streaming state of a multipart application/dicom response. */
typedef struct Wado {
    Store *store;
    UidList list;
    size_t next;          /* next instance to open */
    StoreInstance cur;
    bool open;
    uint64_t pos;         /* in the current blob */
    char head[256];
    size_t head_len, head_pos;
    bool finished;
} Wado;

static void wado_free(void *cls)
{
    Wado *w = cls;
    if (w->open) {
        close(w->cur.fd);
    }
    ag_free(w->list.uid);
    ag_free(w);
}

/* libmicrohttpd pulls the body: part headers, blob bytes, trailer. */
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
        if (w->next == w->list.n) {
            w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                           "--" BOUNDARY "--\r\n");
            w->head_pos = 0;
            w->finished = true;
            continue;
        }
        AgError err;
        const char *uid = w->list.uid[w->next++];
        if (store_instance_open(w->store, uid, &w->cur, &err) != AG_OK) {
            ag_log(AG_LOG_WARN, "http", "WADO-RS skips %s: %s", uid, err.msg);
            continue;
        }
        w->open = true;
        w->pos = 0;
        w->head_len = (size_t)snprintf(w->head, sizeof w->head,
                                       "--" BOUNDARY "\r\nContent-Type: "
                                       "application/dicom; transfer-syntax="
                                       "%s\r\n\r\n", w->cur.transfer_syntax);
        w->head_pos = 0;
    }
    if (put == 0 && w->finished) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return (ssize_t)put;
}

static bool accepts(WebRequest *r, const char *type)
{
    const char *acc = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  "Accept");
    return acc == NULL || strstr(acc, type) != NULL ||
           strstr(acc, "*/*") != NULL;
}

static enum MHD_Result wado(WebRequest *r, const char *study,
                            const char *series, const char *instance)
{
    if (!accepts(r, "multipart/related") &&
        !accepts(r, "application/dicom")) {
        return web__json_error(r, 406, "not acceptable", "instances are "
                               "served as multipart/related; "
                               "type=\"application/dicom\"");
    }
    Wado *w = ag_calloc(1, sizeof *w);
    if (w == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    w->store = web__store(r);
    AgError err;
    if (list_instances(r, study, series, instance, &w->list, &err) !=
        AG_OK) {
        wado_free(w);
        return web__json_error(r, 500, "query failed", err.msg);
    }
    if (w->list.n == 0) {
        wado_free(w);
        return web__json_error(r, 404, "not found", "no such object");
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
        ret = web__send(r, 200, DICOM_JSON, m.b.data, m.b.len);
    }
    ag_buf_deinit(&m.b);
    return ret;
}

/* ---- frames (PS3.18 §10.4.1.1.6) -------------------------------------------- */

typedef struct FrameSpan {
    uint64_t off;
    uint64_t len;
} FrameSpan;

/* Media type of a frame in its stored syntax (PS3.18 Table 8.7.3-2). */
static const char *frame_media(const char *ts)
{
    static const struct { const char *ts, *type; } T[] = {
        {"1.2.840.10008.1.2.4.50", "image/jpeg"},
        {"1.2.840.10008.1.2.4.51", "image/jpeg"},
        {"1.2.840.10008.1.2.4.57", "image/jpeg"},
        {"1.2.840.10008.1.2.4.70", "image/jpeg"},
        {"1.2.840.10008.1.2.4.80", "image/jls"},
        {"1.2.840.10008.1.2.4.81", "image/jls"},
        {"1.2.840.10008.1.2.4.90", "image/jp2"},
        {"1.2.840.10008.1.2.4.91", "image/jp2"},
        {"1.2.840.10008.1.2.4.201", "image/jphc"},
        {"1.2.840.10008.1.2.4.202", "image/jphc"},
        {"1.2.840.10008.1.2.4.203", "image/jphc"},
        {"1.2.840.10008.1.2.5", "image/x-dicom-rle"},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        if (strcmp(ts, T[i].ts) == 0) {
            return T[i].type;
        }
    }
    return "application/octet-stream";
}

/*
 * Where frames want[] (1-based) lie in the blob: native little-endian frames by
 * arithmetic on the Pixel Data offset; encapsulated frames when each is one
 * fragment (or the image has one frame in one fragment).  Other layouts
 * (big endian, deflated, multi-fragment frames) answer 501 until the codec
 * layer serves them.
 */
static int locate_frames(const StoreInstance *in, const uint32_t *want,
                         int nwant, FrameSpan *spans, AgError *err)
{
    AgArena *a = ag_arena_create(256 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = 256};
    DicomFile *f = NULL;
    int rc = lseek(in->fd, 0, SEEK_SET) == 0
        ? dicom_read_fd(in->fd, &ro, a, &f, err)
        : ag_error_errno(err, AG_ERR_IO, "seek");
    const DicomElement *px = rc == AG_OK
        ? dicom_dataset_find(f->dataset, DICOM_TAG_PIXEL_DATA) : NULL;
    int64_t rows = 0, cols = 0, spp = 1, bits = 0, frames = 1;
    if (rc == AG_OK && px == NULL) {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no pixel data");
    }
    if (rc == AG_OK) {
        dicom_get_int(f->dataset, DICOM_TAG(0x0028, 0x0010), &rows);
        dicom_get_int(f->dataset, DICOM_TAG(0x0028, 0x0011), &cols);
        dicom_get_int(f->dataset, DICOM_TAG(0x0028, 0x0002), &spp);
        dicom_get_int(f->dataset, DICOM_TAG_BITS_ALLOCATED, &bits);
        dicom_get_int(f->dataset, DICOM_TAG(0x0028, 0x0008), &frames);
        for (int k = 0; k < nwant && rc == AG_OK; k++) {
            if (frames < 1 || frames > 100000 || want[k] < 1 ||
                want[k] > frames) {
                rc = ag_error_set(err, AG_ERR_NOTFOUND, "no frame %u",
                                  want[k]);
            }
        }
    }
    if (rc == AG_OK && !(px->flags & DICOM_EL_ENCAPSULATED)) {
        uint64_t fs;
        const DicomTransferSyntax *ts = f->ts;
        if (ts == NULL || ts->big_endian || ts->deflated) {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "frames of %s are not "
                              "served yet", in->transfer_syntax);
        } else if (rows <= 0 || cols <= 0 || spp <= 0 || bits <= 0 ||
                   ag_mul_overflow((uint64_t)rows * (uint64_t)cols,
                                   (uint64_t)spp * (uint64_t)bits, &fs)) {
            rc = ag_error_set(err, AG_ERR_INVALID, "image attributes do not "
                              "add up");
        } else {
            fs = (fs + 7) / 8;
            if ((uint64_t)frames * fs > px->length) {
                rc = ag_error_set(err, AG_ERR_INVALID, "pixel data shorter "
                                  "than its frames");
            } else {
                for (int k = 0; k < nwant; k++) {
                    spans[k].off = px->offset + (uint64_t)(want[k] - 1) * fs;
                    spans[k].len = fs;
                }
            }
        }
    } else if (rc == AG_OK) {
        uint32_t nf = px->nfrags > 0 ? px->nfrags - 1 : 0;
        if (nf == (uint32_t)frames) {
            for (int k = 0; k < nwant; k++) {
                spans[k].off = px->frags[want[k]].offset;
                spans[k].len = px->frags[want[k]].length;
            }
        } else {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "frames spread over "
                              "several fragments are not served yet");
        }
    }
    ag_arena_destroy(a);
    return rc;
}

typedef struct FramesOut {
    AgBuf b;
} FramesOut;

static enum MHD_Result frames(WebRequest *r, const char *study,
                              const char *series, const char *inst,
                              const char *list)
{
    /* The frame list: "1", "1,3,5" (PS3.18 §8.3.1.1.4). */
    uint32_t want[64];
    int nwant = 0;
    const char *p = list;
    while (*p != '\0') {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v == 0 || v > 100000 || nwant == 64 ||
            (*end != ',' && *end != '\0')) {
            return web__json_error(r, 400, "bad request", "frame list must "
                                   "be positive numbers separated by commas");
        }
        want[nwant++] = (uint32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (nwant == 0) {
        return web__json_error(r, 400, "bad request", "empty frame list");
    }
    /* The instance must be the one the path names (study and series too). */
    UidList l = {0};
    AgError err;
    if (list_instances(r, study, series, inst, &l, &err) != AG_OK ||
        l.n != 1) {
        ag_free(l.uid);
        return web__json_error(r, 404, "not found", "no such instance");
    }
    ag_free(l.uid);
    StoreInstance in;
    if (store_instance_open(web__store(r), inst, &in, &err) != AG_OK) {
        return web__json_error(r, 404, "not found", err.msg);
    }
    FramesOut o;
    ag_buf_init(&o.b, (size_t)2 << 30);
    const char *media = frame_media(in.transfer_syntax);
    enum MHD_Result ret = MHD_NO;
    int rc = AG_OK;
    /* One parse of the header locates every frame asked for. */
    FrameSpan spans[64] = {{0}};
    rc = locate_frames(&in, want, nwant, spans, &err);
    for (int i = 0; i < nwant && rc == AG_OK; i++) {
        FrameSpan sp = spans[i];
        if (sp.len > (uint64_t)1 << 30) {
            rc = ag_error_set(&err, AG_ERR_LIMIT, "frame too large");
        }
        if (rc == AG_OK) {
            rc = ag_buf_printf(&o.b, "--" BOUNDARY "\r\nContent-Type: %s; "
                               "transfer-syntax=%s\r\n\r\n", media,
                               strcmp(media, "application/octet-stream") == 0
                                   ? DICOM_TS_EXPLICIT_LE
                                   : in.transfer_syntax);
        }
        if (rc == AG_OK) {
            rc = ag_buf_reserve(&o.b, (size_t)sp.len + 2);
        }
        if (rc == AG_OK) {
            ssize_t got = pread(in.fd, o.b.data + o.b.len, (size_t)sp.len,
                                (off_t)sp.off);
            if (got != (ssize_t)sp.len) {
                rc = ag_error_set(&err, AG_ERR_IO, "short read of frame");
            } else {
                o.b.len += (size_t)sp.len;
                rc = ag_buf_append(&o.b, "\r\n", 2);
            }
        }
    }
    close(in.fd);
    if (rc == AG_OK) {
        ag_buf_append_str(&o.b, "--" BOUNDARY "--\r\n");
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            o.b.len, o.b.data, MHD_RESPMEM_MUST_COPY);
        if (resp != NULL) {
            char ct[160];
            ag_fmt(ct, sizeof ct, "multipart/related; type=\"%s\"; "
                   "boundary=" BOUNDARY, media);
            MHD_add_response_header(resp, "Content-Type", ct);
        }
        ret = web__send_response(r, 200, resp);
    } else if (rc == AG_ERR_NOTFOUND) {
        ret = web__json_error(r, 404, "not found", err.msg);
    } else if (rc == AG_ERR_UNSUPPORTED) {
        ret = web__json_error(r, 501, "not implemented", err.msg);
    } else {
        ret = web__json_error(r, 500, "frame retrieval failed", err.msg);
    }
    ag_buf_deinit(&o.b);
    return ret;
}

/* Route GET /dicom-web/... (PS3.18 Table 10.4.1-1, 10.6.1-1). */
enum MHD_Result web__dicomweb_get(WebRequest *r, char **seg, int n)
{
    if (n == 0) {
        return web__send(r, 200, "application/json",
                         "{\"service\": \"DICOMweb\", \"qido\": true, "
                         "\"wado\": true, \"stow\": true}", 61);
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
    return web__json_error(r, 404, "not found", "no such resource");
}

/* ---- STOW-RS ------------------------------------------------------------------ */

typedef struct StowResult {
    char cls[65], inst[65];
    uint16_t reason;       /* 0 = stored */
} StowResult;

typedef struct Stow {
    WebRequest *r;
    WebMultipart *mp;
    const char *study;     /* /studies/{uid} form, or NULL */
    int fd;
    char tmp[AG_PATH_MAX];
    bool dicom_part;
    uint64_t total, max;
    StowResult *res;
    size_t n, cap;
    int rc;                /* fatal: malformed body */
    AgError err;
    bool begun;
} Stow;

static void stow_free(void *p)
{
    Stow *s = p;
    if (s == NULL) {
        return;
    }
    if (s->fd >= 0) {
        close(s->fd);
        unlink(s->tmp);
    }
    web_multipart_free(s->mp);
    ag_free(s->res);
    ag_free(s);
}

static void add_result(Stow *s, const char *cls, const char *inst,
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

static int part_begin(void *ctx, const WebPartHeaders *h, AgError *err)
{
    (void)err;
    Stow *s = ctx;
    s->dicom_part = strncmp(h->content_type, "application/dicom", 17) == 0 &&
                    (h->content_type[17] == '\0' ||
                     h->content_type[17] == ';' ||
                     h->content_type[17] == ' ');
    if (!s->dicom_part) {
        add_result(s, NULL, NULL, 0xA900);   /* unsupported part type */
        return AG_OK;
    }
    ag_fmt(s->tmp, sizeof s->tmp, "%s/stow-XXXXXX",
           store_tmp_dir(web__store(s->r)));
    s->fd = mkstemp(s->tmp);
    if (s->fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "spool");
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
    if (!s->dicom_part || s->fd < 0) {
        return AG_OK;
    }
    return ag_write_all(s->fd, d, n, err);
}

/* PS3.18 Table 10.5.3-2 failure reasons. */
static uint16_t stow_reason(int code)
{
    switch (code) {
    case AG_ERR_PARSE: return 0xC000;
    case AG_ERR_INVALID: return 0xA900;
    case AG_ERR_EXISTS: return 0x0111;
    case AG_ERR_LIMIT:
    case AG_ERR_IO: return 0xA700;
    default: return 0x0110;
    }
}

static int part_end(void *ctx, AgError *err)
{
    (void)err;
    Stow *s = ctx;
    if (!s->dicom_part || s->fd < 0) {
        return AG_OK;
    }
    close(s->fd);
    s->fd = -1;
    StoreSource src = {.via = "stow", .expect_study = s->study};
    StoreResult res;
    AgError ierr;
    int rc = store_ingest_path(web__store(s->r), s->tmp, true, &src, &res,
                               &ierr);
    if (rc == AG_OK) {
        add_result(s, res.sop_class_uid, res.sop_instance_uid, 0);
    } else {
        ag_log(AG_LOG_WARN, "http", "STOW-RS part refused: %s", ierr.msg);
        add_result(s, NULL, NULL, stow_reason(rc));
    }
    return AG_OK;
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
        s->max = (uint64_t)4 << 30;
        s->study = nseg == 2 ? ag_arena_strdup(r->arena, seg[1]) : NULL;
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
        if (s->rc == AG_OK && type[0] != '\0' &&
            strcmp(type, "application/dicom") != 0) {
            s->rc = ag_error_set(&s->err, AG_ERR_UNSUPPORTED, "only "
                                 "type=\"application/dicom\" is accepted");
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
    if (s->rc == AG_ERR_UNSUPPORTED) {
        return web__json_error(r, 415, "unsupported media type", s->err.msg);
    }
    if (s->rc == AG_ERR_LIMIT) {
        return web__json_error(r, 413, "too large", s->err.msg);
    }
    if (s->rc != AG_OK && s->n == 0) {
        return web__json_error(r, 400, "bad request", s->err.msg);
    }
    return stow_response(r, s);
}
