/*
 * rendered.c — images for people, not for workstations: the DICOMweb
 * Retrieve Rendered transaction (PS3.18 §10.4.1.1.3; query parameters
 * §8.3.5), thumbnails (§10.4.1.1.4) and the URI service, WADO-URI (PS3.18
 * §9, "WADO-URI" of older editions: §8.1-8.2 parameters).
 *
 *   GET /dicom-web/studies/{s}[/series/{se}[/instances/{i}[/frames/{l}]]]
 *       /rendered     JPEG (default) or PNG; one image for a single-frame
 *                     instance or a single frame, else multipart/related
 *                     of every frame asked for, streamed one frame at a
 *                     time (a 5,000-image study never sits in memory)
 *       /thumbnail    one small image (128 px, never enlarged unless a
 *                     viewport asks) of a representative frame: the middle
 *                     instance of the study's first series, the first
 *                     frame of an instance
 *   GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=...
 *
 * Rendering is codec_render_frame (PS3.4 Annex N); this file maps the
 * request parameters onto it and its errors onto HTTP: bad parameters
 * 400, a frame or object that does not exist 404, a media type that
 * cannot be produced 406, pixel data the renderer refuses 501, anything
 * else 500 — all with JSON bodies.
 *
 * Access: the /dicom-web router has checked the study's visibility before
 * it calls web__rendered; web__wado_uri sits outside that router and
 * checks it itself before anything else.  Every index query carries the
 * requester's scope.
 */
#include "web_int.h"
#include "codec/codec.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define BOUNDARY "agora-rendered-3f9c51d07e2b8a64"
#define THUMBNAIL_SIZE 128u
#define MAX_INSTANCES 100000u
#define MAX_PARTS 100000u            /* frames in one multipart response */
#define MAX_THUMBNAIL_TRIES 32u      /* non-image instances skipped */
#define MAX_FRAME_LIST 256
#define BULK_THRESHOLD (64u << 10)   /* larger values stay in the blob */
#define HEADER_BUDGET ((size_t)256 << 20)
#define IMAGE_MAX ((size_t)1 << 30)  /* one encoded image */

/* ---- instances of a study, series or one instance ------------------------ */

typedef struct Uid2 {
    char uid[65];
    char series[65];
} Uid2;

typedef struct List {
    Uid2 *v;
    size_t n, cap;
    bool oom;
} List;

static int add_match(void *ctx, const DicomDataset *m)
{
    List *l = ctx;
    AgArena *a = dicom_dataset_arena(m);
    const char *uid = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID, a);
    const char *se = dicom_get_string(m, DICOM_TAG_SERIES_INSTANCE_UID, a);
    if (uid == NULL) {
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
    ag_fmt(l->v[l->n].uid, sizeof l->v[l->n].uid, "%s", uid);
    ag_fmt(l->v[l->n].series, sizeof l->v[l->n].series, "%s",
           se != NULL ? se : "");
    l->n++;
    return 0;
}

/* In series, then instance-number order; within the requester's scope. */
static int list_instances(WebRequest *r, const char *study,
                          const char *series, const char *instance,
                          List *out, AgError *err)
{
    DicomDataset *k = dicom_dataset_create(r->arena);
    if (k == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    dicom_set_string(k, DICOM_TAG_STUDY_INSTANCE_UID, 0, study, NULL);
    dicom_set_string(k, DICOM_TAG_SERIES_INSTANCE_UID, 0,
                     series != NULL ? series : "", NULL);
    dicom_set_string(k, DICOM_TAG_SOP_INSTANCE_UID, 0,
                     instance != NULL ? instance : "", NULL);
    StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = k,
                    .limit = MAX_INSTANCES, .scope = &r->who.scope};
    int rc = store_query(web__store(r), &q, add_match, out, NULL, err);
    if (rc == AG_OK && out->oom) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    return rc;
}

/* ---- one stored instance, opened for rendering --------------------------- */

typedef struct Inst {
    StoreInstance si;
    bool open;
    AgArena *a;
    DicomFile *f;
    DicomBulkSource bulk;
    CodecImage im;
} Inst;

static int read_at(void *ctx, uint64_t offset, void *dst, size_t len,
                   AgError *err)
{
    int fd = *(const int *)ctx;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)dst + done, len - done,
                          (off_t)(offset + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? ag_error_errno(err, AG_ERR_IO, "blob read")
                         : ag_error_set(err, AG_ERR_IO, "blob ends early");
        }
        done += (size_t)n;
    }
    return AG_OK;
}

static void inst_close(Inst *in)
{
    if (in->open) {
        close(in->si.fd);
        in->open = false;
    }
    ag_arena_destroy(in->a);
    in->a = NULL;
}

/*
 * Open a blob and parse its header, leaving pixel data (and any value
 * over 64 KiB) in the blob: frames are read one at a time when rendered.
 * Deflated data sets cannot be read at an offset and are parsed whole.
 * AG_ERR_UNSUPPORTED when the instance is not an image.
 */
static int inst_open(Store *s, const char *uid, Inst *in, AgError *err)
{
    memset(in, 0, sizeof *in);
    int rc = store_instance_open(s, uid, &in->si, err);
    if (rc != AG_OK) {
        return rc;
    }
    in->open = true;
    in->a = ag_arena_create(HEADER_BUDGET);
    if (in->a == NULL) {
        inst_close(in);
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomReadOptions ro = {.bulk_threshold = BULK_THRESHOLD};
    rc = lseek(in->si.fd, 0, SEEK_SET) == 0
             ? dicom_read_fd(in->si.fd, &ro, in->a, &in->f, err)
             : ag_error_errno(err, AG_ERR_IO, "seek");
    if (rc == AG_OK && in->f->ts != NULL && in->f->ts->deflated) {
        ro.bulk_threshold = 0;
        rc = lseek(in->si.fd, 0, SEEK_SET) == 0
                 ? dicom_read_fd(in->si.fd, &ro, in->a, &in->f, err)
                 : ag_error_errno(err, AG_ERR_IO, "seek");
    }
    if (rc == AG_OK &&
        dicom_dataset_find(in->f->dataset, DICOM_TAG_PIXEL_DATA) == NULL) {
        rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "instance %s has no "
                          "pixel data to render", uid);
    }
    if (rc == AG_OK) {
        rc = codec_render_image(in->f->dataset, &in->im, err);
    }
    if (rc != AG_OK) {
        inst_close(in);
        return rc;
    }
    in->bulk.read = read_at;
    in->bulk.ctx = &in->si.fd;
    in->bulk.big_endian = in->f->ts != NULL && in->f->ts->big_endian;
    return AG_OK;
}

/* ---- errors -------------------------------------------------------------- */

static enum MHD_Result render_error(WebRequest *r, int rc, const AgError *e)
{
    switch (rc) {
    case AG_ERR_INVALID:
        return web__json_error(r, 400, "bad request", e->msg);
    case AG_ERR_NOTFOUND:
        return web__json_error(r, 404, "not found", e->msg);
    case AG_ERR_UNSUPPORTED:
        return web__json_error(r, 501, "not implemented", e->msg);
    default:
        return web__json_error(r, 500, "rendering failed", e->msg);
    }
}

/* ---- request parameters (PS3.18 §8.3.3.1, §8.3.5) ------------------------ */

static const char *arg(WebRequest *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* An integer filling s exactly, min..max; empty s gives def. */
static bool parse_int(const char *s, size_t n, int64_t min, int64_t max,
                      int64_t def, int64_t *out)
{
    char tmp[24];
    if (n == 0) {
        *out = def;
        return true;
    }
    if (n >= sizeof tmp) {
        return false;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (*end != '\0' || errno != 0 || v < min || v > max ||
        !(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'))) {
        return false;
    }
    *out = v;
    return true;
}

/* viewport=vw,vh[,sx,sy,sw,sh] (PS3.18 §8.3.5.1.3): the image scaled to
 * fit vw x vh (either may be empty: that side follows the other); the
 * source region sx,sy,sw,sh, each may be empty (0, 0, to the edge), a
 * negative sw or sh mirrors it. */
int web__rendered_parse_viewport(const char *v, CodecRenderParams *p,
                                 AgError *err)
{
    const char *f[6];
    size_t len[6];
    int n = 0;
    const char *s = v;
    for (;;) {
        const char *c = strchr(s, ',');
        if (n == 6) {
            n = 7;
            break;
        }
        f[n] = s;
        len[n++] = c != NULL ? (size_t)(c - s) : strlen(s);
        if (c == NULL) {
            break;
        }
        s = c + 1;
    }
    int64_t vw = 0, vh = 0, sx = 0, sy = 0, sw = 0, sh = 0;
    bool ok = (n == 2 || n == 6) &&
              parse_int(f[0], len[0], 1, CODEC_RENDER_MAX_SIZE, 0, &vw) &&
              parse_int(f[1], len[1], 1, CODEC_RENDER_MAX_SIZE, 0, &vh) &&
              (vw > 0 || vh > 0);
    if (ok && n == 6) {
        ok = parse_int(f[2], len[2], 0, 65535, 0, &sx) &&
             parse_int(f[3], len[3], 0, 65535, 0, &sy) &&
             parse_int(f[4], len[4], -65536, 65536, 65536, &sw) &&
             parse_int(f[5], len[5], -65536, 65536, 65536, &sh) &&
             sw != 0 && sh != 0;
        p->region = ok;
        p->sx = sx;
        p->sy = sy;
        p->sw = sw;
        p->sh = sh;
    }
    if (!ok) {
        return ag_error_set(err, AG_ERR_INVALID, "viewport \"%.60s\" is not "
                            "vw,vh[,sx,sy,sw,sh] with vw, vh 1..%u",
                            v, CODEC_RENDER_MAX_SIZE);
    }
    p->width = (uint32_t)vw;
    p->height = (uint32_t)vh;
    return AG_OK;
}

/* The rendered media type: the accept query parameter, else the Accept
 * header; JPEG when neither says (PS3.18 §8.7.4: image/jpeg is the
 * default rendered type).  multipart/related ranges count by their type=.
 * AG_ERR_PARSE (400) for a malformed header, AG_ERR_UNSUPPORTED (406)
 * when nothing acceptable can be produced. */
static int choose_format(WebRequest *r, CodecRenderFormat *out, AgError *err)
{
    const char *q = arg(r, "accept");
    const char *h = q != NULL ? q
        : MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    WebAccept acc;
    int rc = web_accept_parse(h, &acc, err);
    if (rc != AG_OK) {
        return AG_ERR_PARSE;
    }
    if (acc.n == 0) {
        *out = CODEC_RENDER_JPEG;
        return AG_OK;
    }
    for (int i = 0; i < acc.n; i++) {
        const WebMediaRange *m = &acc.range[i];
        const char *t = m->type;
        if (strcmp(t, "multipart/related") == 0) {
            t = m->part_type[0] != '\0' ? m->part_type : "image/jpeg";
        }
        if (web_media_match(t, "image/jpeg")) {
            *out = CODEC_RENDER_JPEG;
            return AG_OK;
        }
        if (web_media_match(t, "image/png")) {
            *out = CODEC_RENDER_PNG;
            return AG_OK;
        }
    }
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "rendered images are "
                        "image/jpeg or image/png");
}

static const char *media_of(CodecRenderFormat f)
{
    return f == CODEC_RENDER_PNG ? "image/png" : "image/jpeg";
}

/* Rendering parameters of a /rendered or /thumbnail request. */
static int rs_params(WebRequest *r, bool thumbnail, CodecRenderParams *p,
                     AgError *err)
{
    codec_render_params_init(p);
    int rc = choose_format(r, &p->format, err);
    if (rc != AG_OK) {
        return rc;
    }
    const char *v = arg(r, "quality");
    int64_t q;
    if (v != NULL && !parse_int(v, strlen(v), 1, 100, 0, &q)) {
        return ag_error_set(err, AG_ERR_INVALID, "quality \"%.40s\" is not "
                            "1..100", v);
    }
    if (v != NULL) {
        p->quality = (int)q;
    }
    v = arg(r, "window");
    if (v != NULL && codec_render_parse_window(v, p, err) != AG_OK) {
        return AG_ERR_INVALID;
    }
    v = arg(r, "viewport");
    if (v != NULL && web__rendered_parse_viewport(v, p, err) != AG_OK) {
        return AG_ERR_INVALID;
    }
    if (thumbnail && v == NULL) {
        /* A thumbnail is small and never larger than its source. */
        p->width = p->height = THUMBNAIL_SIZE;
        p->upscale = false;
    }
    /* annotation, charset and iccprofile are accepted and not applied
     * (PS3.18 §8.3.5.1: not every parameter must be supported). */
    return AG_OK;
}

/* "1", "1,3,5" (PS3.18 §8.3.1.1.4): numbers from 1, in the order given. */
int web__rendered_parse_frames(const char *list, uint32_t *want, int *n,
                               AgError *err)
{
    *n = 0;
    const char *p = list;
    while (*p != '\0') {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || *p < '0' || *p > '9' || v == 0 || errno != 0 ||
            v > CODEC_MAX_FRAMES || *n == MAX_FRAME_LIST ||
            (*end != ',' && *end != '\0') ||
            (*end == ',' && end[1] == '\0')) {
            return ag_error_set(err, AG_ERR_INVALID, "frame list must be at "
                                "most %d numbers from 1, separated by "
                                "commas", MAX_FRAME_LIST);
        }
        want[(*n)++] = (uint32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (*n == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "empty frame list");
    }
    return AG_OK;
}

/* ---- multipart/related of rendered frames, streamed ---------------------- */

typedef struct Stream {
    Store *store;
    CodecRenderParams p;
    List list;
    const uint32_t *frames;   /* explicit frame list (one instance) */
    int nframes;
    size_t next;              /* next instance of list */
    Inst cur;
    uint32_t frame;           /* next frame of cur (index into frames
                               * when given) */
    AgBuf part;               /* the part being sent */
    size_t pos;
    size_t parts;
    bool finished;
} Stream;

static void stream_free(void *cls)
{
    Stream *s = cls;
    inst_close(&s->cur);
    ag_buf_deinit(&s->part);
    ag_free(s->list.v);
    ag_free(s);
}

/*
 * Render the next frame into s->part (headers, image, CRLF), or the
 * closing delimiter when everything is sent.  Instances that are not
 * images are skipped (a study holds reports too); errors after the first
 * part are logged and the part skipped (the status line has gone).
 * Returns AG_OK, or the first part's error in err.
 */
static int stream_next(Stream *s, AgError *err)
{
    ag_buf_reset(&s->part);
    s->pos = 0;
    for (;;) {
        if (s->cur.a != NULL) {
            uint32_t limit = s->frames != NULL ? (uint32_t)s->nframes
                                               : s->cur.im.frames;
            if (s->frame < limit && s->parts < MAX_PARTS) {
                uint32_t f = s->frames != NULL ? s->frames[s->frame] - 1
                                               : s->frame;
                s->frame++;
                ag_buf_printf(&s->part, "--" BOUNDARY "\r\nContent-Type: "
                              "%s\r\n\r\n", media_of(s->p.format));
                int rc = codec_render_frame(s->cur.f, &s->cur.bulk, f, &s->p,
                                            &s->part, err);
                if (rc == AG_OK) {
                    rc = ag_buf_append(&s->part, "\r\n", 2);
                }
                if (rc == AG_OK) {
                    s->parts++;
                    return AG_OK;
                }
                if (s->parts == 0) {
                    return rc;
                }
                ag_log(AG_LOG_WARN, "http", "rendered: frame %u of %s "
                       "skipped: %s", f + 1, s->cur.si.sop_instance_uid,
                       err->msg);
                ag_buf_reset(&s->part);
                continue;
            }
            inst_close(&s->cur);
        }
        if (s->next == s->list.n || s->parts >= MAX_PARTS) {
            if (s->parts == 0) {
                return ag_error_set(err, AG_ERR_NOTFOUND, "no image to "
                                    "render");
            }
            s->finished = true;
            return ag_buf_append_str(&s->part, "--" BOUNDARY "--\r\n");
        }
        const char *uid = s->list.v[s->next++].uid;
        int rc = inst_open(s->store, uid, &s->cur, err);
        s->frame = 0;
        if (rc == AG_ERR_UNSUPPORTED) {
            continue;                     /* not an image */
        }
        if (rc != AG_OK) {
            if (s->parts == 0 && s->list.n == 1) {
                return rc;
            }
            ag_log(AG_LOG_WARN, "http", "rendered: %s skipped: %s", uid,
                   err->msg);
        }
    }
}

static ssize_t stream_read(void *cls, uint64_t off, char *buf, size_t max)
{
    (void)off;
    Stream *s = cls;
    size_t put = 0;
    while (put < max) {
        if (s->pos < s->part.len) {
            size_t n = s->part.len - s->pos;
            n = n < max - put ? n : max - put;
            memcpy(buf + put, s->part.data + s->pos, n);
            s->pos += n;
            put += n;
            continue;
        }
        if (s->finished) {
            break;
        }
        AgError err;
        if (stream_next(s, &err) != AG_OK) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    if (put == 0 && s->finished) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return (ssize_t)put;
}

/* Start a streamed multipart response; the first part is rendered before
 * the status is chosen, so its errors get their own status.  Takes s. */
static enum MHD_Result stream_start(WebRequest *r, Stream *s)
{
    AgError err;
    ag_error_clear(&err);
    int rc = stream_next(s, &err);
    if (rc != AG_OK) {
        stream_free(s);
        return render_error(r, rc, &err);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 256 * 1024, stream_read, s, stream_free);
    if (resp == NULL) {
        stream_free(s);
        return MHD_NO;
    }
    char ct[160];
    ag_fmt(ct, sizeof ct, "multipart/related; type=\"%s\"; boundary=" BOUNDARY,
           media_of(s->p.format));
    MHD_add_response_header(resp, "Content-Type", ct);
    return web__send_response(r, 200, resp);
}

static Stream *stream_new(WebRequest *r, const CodecRenderParams *p)
{
    Stream *s = ag_calloc(1, sizeof *s);
    if (s != NULL) {
        s->store = web__store(r);
        s->p = *p;
        ag_buf_init(&s->part, IMAGE_MAX);
    }
    return s;
}

/* ---- one image ----------------------------------------------------------- */

static enum MHD_Result send_frame(WebRequest *r, Inst *in, uint32_t frame,
                                  const CodecRenderParams *p)
{
    AgBuf b;
    ag_buf_init(&b, IMAGE_MAX);
    AgError err;
    ag_error_clear(&err);
    int rc = codec_render_frame(in->f, &in->bulk, frame, p, &b, &err);
    enum MHD_Result ret = rc == AG_OK
        ? web__send(r, 200, media_of(p->format), b.data, b.len)
        : render_error(r, rc, &err);
    ag_buf_deinit(&b);
    return ret;
}

/* The instance the path names, opened; answers the request itself (404,
 * 406, 500) when it returns false. */
static bool open_named(WebRequest *r, const char *study, const char *series,
                       const char *uid, Inst *in, enum MHD_Result *ret)
{
    List l = {0};
    AgError err;
    ag_error_clear(&err);
    int rc = list_instances(r, study, series, uid, &l, &err);
    size_t n = l.n;
    ag_free(l.v);
    if (rc != AG_OK) {
        *ret = web__json_error(r, 500, "query failed", err.msg);
        return false;
    }
    if (n != 1) {
        *ret = web__json_error(r, 404, "not found", "no such instance");
        return false;
    }
    rc = inst_open(web__store(r), uid, in, &err);
    if (rc == AG_ERR_UNSUPPORTED) {
        *ret = web__json_error(r, 406, "not acceptable", err.msg);
        return false;
    }
    if (rc != AG_OK) {
        *ret = rc == AG_ERR_NOTFOUND
                   ? web__json_error(r, 404, "not found", err.msg)
                   : render_error(r, rc == AG_ERR_NOMEM ? rc : AG_ERR_IO,
                                  &err);
        return false;
    }
    return true;
}

/* ---- the RS resources ---------------------------------------------------- */

/* A study or series: every frame of every image instance. */
static enum MHD_Result rendered_many(WebRequest *r, const char *study,
                                     const char *series,
                                     const CodecRenderParams *p)
{
    Stream *s = stream_new(r, p);
    if (s == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    AgError err;
    if (list_instances(r, study, series, NULL, &s->list, &err) != AG_OK) {
        stream_free(s);
        return web__json_error(r, 500, "query failed", err.msg);
    }
    if (s->list.n == 0) {
        stream_free(s);
        return web__json_error(r, 404, "not found", series != NULL
                               ? "no such series" : "no such study");
    }
    return stream_start(r, s);
}

/* An instance (every frame) or a list of its frames. */
static enum MHD_Result rendered_instance(WebRequest *r, const char *study,
                                         const char *series, const char *uid,
                                         const char *frame_list,
                                         const CodecRenderParams *p)
{
    uint32_t want[MAX_FRAME_LIST];
    int nwant = 0;
    AgError err;
    if (frame_list != NULL &&
        web__rendered_parse_frames(frame_list, want, &nwant, &err) != AG_OK) {
        return web__json_error(r, 400, "bad request", err.msg);
    }
    Stream *s = stream_new(r, p);
    if (s == NULL) {
        return web__json_error(r, 500, "out of memory", NULL);
    }
    enum MHD_Result ret;
    if (!open_named(r, study, series, uid, &s->cur, &ret)) {
        stream_free(s);
        return ret;
    }
    for (int i = 0; i < nwant; i++) {
        if (want[i] > s->cur.im.frames) {
            char msg[96];
            ag_fmt(msg, sizeof msg, "frame %u of an instance of %u frames",
                   want[i], s->cur.im.frames);
            stream_free(s);
            return web__json_error(r, 404, "not found", msg);
        }
    }
    uint32_t count = frame_list != NULL ? (uint32_t)nwant : s->cur.im.frames;
    if (count == 1) {
        ret = send_frame(r, &s->cur, frame_list != NULL ? want[0] - 1 : 0, p);
        stream_free(s);
        return ret;
    }
    if (frame_list != NULL) {
        uint32_t *copy = ag_arena_memdup(r->arena, want,
                                         (size_t)nwant * sizeof *want);
        if (copy == NULL) {
            stream_free(s);
            return web__json_error(r, 500, "out of memory", NULL);
        }
        s->frames = copy;
        s->nframes = nwant;
    }
    return stream_start(r, s);
}

/* The representative image: the middle instance of the first series (in
 * series and instance-number order), else the next that is an image. */
static enum MHD_Result thumbnail(WebRequest *r, const char *study,
                                 const char *series, const char *uid,
                                 const char *frame_list,
                                 const CodecRenderParams *p)
{
    AgError err;
    ag_error_clear(&err);
    uint32_t want[MAX_FRAME_LIST];
    int nwant = 0;
    if (frame_list != NULL &&
        web__rendered_parse_frames(frame_list, want, &nwant, &err) != AG_OK) {
        return web__json_error(r, 400, "bad request", err.msg);
    }
    enum MHD_Result ret;
    Inst in;
    if (uid != NULL) {
        if (!open_named(r, study, series, uid, &in, &ret)) {
            return ret;
        }
        uint32_t f = nwant > 0 ? want[0] : 1;
        if (f > in.im.frames) {
            inst_close(&in);
            return web__json_error(r, 404, "not found", "no such frame");
        }
        ret = send_frame(r, &in, f - 1, p);
        inst_close(&in);
        return ret;
    }
    List l = {0};
    if (list_instances(r, study, series, NULL, &l, &err) != AG_OK) {
        ag_free(l.v);
        return web__json_error(r, 500, "query failed", err.msg);
    }
    size_t first_end = 0;
    while (first_end < l.n &&
           strcmp(l.v[first_end].series, l.v[0].series) == 0) {
        first_end++;
    }
    size_t mid = first_end / 2;
    for (size_t k = 0; k < l.n && k < MAX_THUMBNAIL_TRIES; k++) {
        const char *u = l.v[(mid + k) % l.n].uid;
        int rc = inst_open(web__store(r), u, &in, &err);
        if (rc == AG_OK) {
            ag_free(l.v);
            ret = send_frame(r, &in, 0, p);
            inst_close(&in);
            return ret;
        }
        if (rc != AG_ERR_UNSUPPORTED) {
            ag_log(AG_LOG_WARN, "http", "thumbnail: %s skipped: %s", u,
                   err.msg);
        }
    }
    bool empty = l.n == 0;
    ag_free(l.v);
    return web__json_error(r, 404, "not found", empty
                           ? (series != NULL ? "no such series"
                                             : "no such study")
                           : "no image to show");
}

bool web__rendered_route(char **seg, int n)
{
    const char *last = n >= 3 ? seg[n - 1] : "";
    bool kind = strcmp(last, "rendered") == 0 ||
                strcmp(last, "thumbnail") == 0;
    return kind && (n == 3 ||
                    (n == 5 && strcmp(seg[2], "series") == 0) ||
                    (n == 7 && strcmp(seg[2], "series") == 0 &&
                     strcmp(seg[4], "instances") == 0) ||
                    (n == 9 && strcmp(seg[2], "series") == 0 &&
                     strcmp(seg[4], "instances") == 0 &&
                     strcmp(seg[6], "frames") == 0));
}

enum MHD_Result web__rendered(WebRequest *r, char **seg, int n)
{
    const char *study = seg[1];
    const char *series = n >= 5 ? seg[3] : NULL;
    const char *uid = n >= 7 ? seg[5] : NULL;
    const char *frame_list = n == 9 ? seg[7] : NULL;
    if ((series != NULL && !dicom_uid_valid(series, strlen(series))) ||
        (uid != NULL && !dicom_uid_valid(uid, strlen(uid))) ||
        !dicom_uid_valid(study, strlen(study))) {
        return web__json_error(r, 400, "bad request", "a UID in the path is "
                               "not a valid UID");
    }
    /* The router checked this; checked again because this handler serves
     * pixels and must never depend on its caller for access. */
    if (!web__study_visible(r, study)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    bool thumb = strcmp(seg[n - 1], "thumbnail") == 0;
    CodecRenderParams p;
    AgError err;
    ag_error_clear(&err);
    int rc = rs_params(r, thumb, &p, &err);
    if (rc == AG_ERR_UNSUPPORTED) {
        return web__json_error(r, 406, "not acceptable", err.msg);
    }
    if (rc != AG_OK) {
        return web__json_error(r, 400, "bad request", err.msg);
    }
    enum MHD_Result ret =
        thumb ? thumbnail(r, study, series, uid, frame_list, &p)
        : uid == NULL ? rendered_many(r, study, series, &p)
                      : rendered_instance(r, study, series, uid, frame_list,
                                          &p);
    /* audited as the request completes (web__audit_request) */
    return ret;
}

/* ---- WADO-URI (PS3.18 §9; §8.1-8.2 of the 2019 edition) ------------------ */

typedef enum UriType { URI_JPEG, URI_PNG, URI_DICOM } UriType;

/* contentType: a comma-separated list in order of preference; absent
 * means image/jpeg.  False when nothing listed can be produced. */
static bool uri_content_type(const char *v, UriType *out)
{
    if (v == NULL) {
        *out = URI_JPEG;
        return true;
    }
    const char *s = v;
    while (*s != '\0') {
        const char *c = strchr(s, ',');
        size_t n = c != NULL ? (size_t)(c - s) : strlen(s);
        while (n > 0 && *s == ' ') {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ')) {
            n--;
        }
        const char *semi = memchr(s, ';', n);
        if (semi != NULL) {
            n = (size_t)(semi - s);   /* parameters are not used */
        }
#define IS(t) (n == strlen(t) && strncasecmp(s, t, n) == 0)
        if (IS("image/jpeg") || IS("image/*") || IS("*/*")) {
            *out = URI_JPEG;
            return true;
        }
        if (IS("image/png")) {
            *out = URI_PNG;
            return true;
        }
        if (IS("application/dicom")) {
            *out = URI_DICOM;
            return true;
        }
#undef IS
        if (c == NULL) {
            break;
        }
        s = c + 1;
    }
    return false;
}

static bool uid_arg(WebRequest *r, const char *key, const char **out)
{
    *out = arg(r, key);
    return *out != NULL && dicom_uid_valid(*out, strlen(*out));
}

/* rows, columns, windowCenter/windowWidth, imageQuality, region,
 * frameNumber (1-based, into *frame) of an image request. */
static int uri_image_params(WebRequest *r, const Inst *in,
                            CodecRenderParams *p, uint32_t *frame,
                            AgError *err)
{
    int64_t v;
    const char *s;
    if ((s = arg(r, "rows")) != NULL) {
        if (!parse_int(s, strlen(s), 1, CODEC_RENDER_MAX_SIZE, 0, &v)) {
            return ag_error_set(err, AG_ERR_INVALID, "rows must be 1..%u",
                                CODEC_RENDER_MAX_SIZE);
        }
        p->height = (uint32_t)v;
    }
    if ((s = arg(r, "columns")) != NULL) {
        if (!parse_int(s, strlen(s), 1, CODEC_RENDER_MAX_SIZE, 0, &v)) {
            return ag_error_set(err, AG_ERR_INVALID, "columns must be "
                                "1..%u", CODEC_RENDER_MAX_SIZE);
        }
        p->width = (uint32_t)v;
    }
    if ((s = arg(r, "imageQuality")) != NULL) {
        if (!parse_int(s, strlen(s), 1, 100, 0, &v)) {
            return ag_error_set(err, AG_ERR_INVALID, "imageQuality must be "
                                "1..100");
        }
        p->quality = (int)v;
    }
    const char *wc = arg(r, "windowCenter"), *ww = arg(r, "windowWidth");
    if ((wc == NULL) != (ww == NULL)) {
        return ag_error_set(err, AG_ERR_INVALID, "windowCenter and "
                            "windowWidth go together");
    }
    if (wc != NULL) {
        /* Two decimal strings (PS3.18 §9): a comma in either would
         * pass a third field, the window function, which WADO-URI does
         * not have. */
        char w[160];
        if (strchr(wc, ',') != NULL || strchr(ww, ',') != NULL ||
            ag_fmt(w, sizeof w, "%s,%s", wc, ww) != AG_OK ||
            codec_render_parse_window(w, p, err) != AG_OK) {
            return ag_error_set(err, AG_ERR_INVALID, "windowCenter / "
                                "windowWidth must be numbers, the width at "
                                "least 1");
        }
    }
    *frame = 1;
    if ((s = arg(r, "frameNumber")) != NULL) {
        if (!parse_int(s, strlen(s), 1, CODEC_MAX_FRAMES, 0, &v)) {
            return ag_error_set(err, AG_ERR_INVALID, "frameNumber must be a "
                                "number from 1");
        }
        if ((uint64_t)v > in->im.frames) {
            return ag_error_set(err, AG_ERR_NOTFOUND, "frame %lld of an "
                                "instance of %u frames", (long long)v,
                                in->im.frames);
        }
        *frame = (uint32_t)v;
    }
    if ((s = arg(r, "region")) != NULL) {
        /* x1,y1,x2,y2 as fractions of the image, top left 0,0. */
        double x1, y1, x2, y2;
        char tail;
        if (sscanf(s, "%lf,%lf,%lf,%lf%c", &x1, &y1, &x2, &y2, &tail) != 4 ||
            !(x1 >= 0 && y1 >= 0 && x2 <= 1 && y2 <= 1 && x1 < x2 &&
              y1 < y2)) {
            return ag_error_set(err, AG_ERR_INVALID, "region must be "
                                "x1,y1,x2,y2 with 0 <= x1 < x2 <= 1 and "
                                "0 <= y1 < y2 <= 1");
        }
        p->region = true;
        p->sx = (int64_t)floor(x1 * in->im.columns);
        p->sy = (int64_t)floor(y1 * in->im.rows);
        p->sw = (int64_t)ceil(x2 * in->im.columns) - p->sx;
        p->sh = (int64_t)ceil(y2 * in->im.rows) - p->sy;
        if (p->sx >= in->im.columns || p->sy >= in->im.rows) {
            return ag_error_set(err, AG_ERR_INVALID, "region is outside the "
                                "image");
        }
        if (p->sw < 1) {
            p->sw = 1;
        }
        if (p->sh < 1) {
            p->sh = 1;
        }
    }
    return AG_OK;
}

/* application/dicom: the stored file, or re-encoded in transferSyntax. */
static enum MHD_Result uri_dicom(WebRequest *r, const char *uid)
{
    if (!web__can(r, ACCESS_DOWNLOAD)) {
        return web__forbidden(r, "retrieving instances needs the download "
                              "verb");
    }
    static const char *const IMAGE_ONLY[] = {
        "rows", "columns", "region", "windowCenter", "windowWidth",
        "frameNumber", "imageQuality", "presentationUID",
    };
    for (size_t i = 0; i < sizeof IMAGE_ONLY / sizeof IMAGE_ONLY[0]; i++) {
        if (arg(r, IMAGE_ONLY[i]) != NULL) {
            char msg[96];
            ag_fmt(msg, sizeof msg, "%s does not apply to "
                   "contentType=application/dicom", IMAGE_ONLY[i]);
            return web__json_error(r, 400, "bad request", msg);
        }
    }
    const char *ts = arg(r, "transferSyntax");
    if (ts != NULL && !dicom_uid_valid(ts, strlen(ts))) {
        return web__json_error(r, 400, "bad request", "transferSyntax is not "
                               "a UID");
    }
    StoreInstance si;
    AgError err;
    ag_error_clear(&err);
    if (store_instance_open(web__store(r), uid, &si, &err) != AG_OK) {
        return web__json_error(r, 404, "not found", err.msg);
    }
    if (ts == NULL || strcmp(ts, si.transfer_syntax) == 0) {
        /* The blob as stored; libmicrohttpd closes the descriptor. */
        struct MHD_Response *resp = MHD_create_response_from_fd64(si.size,
                                                                  si.fd);
        if (resp == NULL) {
            close(si.fd);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "application/dicom");
        return web__send_response(r, 200, resp);
    }
    /* Another syntax: read whole (bounded), transcode, write. */
    const DicomTransferSyntax *to = dicom_ts_lookup(ts);
    AgArena *a = ag_arena_create(HEADER_BUDGET * 2);
    DicomFile *f = NULL;
    AgBuf b;
    ag_buf_init(&b, IMAGE_MAX);
    int rc = to == NULL ? ag_error_set(&err, AG_ERR_UNSUPPORTED, "unknown "
                                       "transfer syntax %s", ts)
             : a == NULL ? ag_error_set(&err, AG_ERR_NOMEM, "out of memory")
             : lseek(si.fd, 0, SEEK_SET) != 0
                 ? ag_error_errno(&err, AG_ERR_IO, "seek")
                 : dicom_read_fd(si.fd, NULL, a, &f, &err);
    close(si.fd);
    if (rc == AG_OK) {
        rc = codec_transcode(f, ts, &err);
    }
    if (rc == AG_OK) {
        DicomWriteOptions wo = {0};
        rc = dicom_write_file(f, ts, &wo, dicom_sink_buf, &b, &err);
    }
    enum MHD_Result ret;
    if (rc == AG_OK) {
        ret = web__send(r, 200, "application/dicom", b.data, b.len);
    } else if (rc == AG_ERR_UNSUPPORTED || rc == AG_ERR_LIMIT) {
        ret = web__json_error(r, 406, "not acceptable", err.msg);
    } else {
        ret = web__json_error(r, 500, "transcoding failed", err.msg);
    }
    ag_buf_deinit(&b);
    ag_arena_destroy(a);
    return ret;
}

static enum MHD_Result wado_uri(WebRequest *r);

enum MHD_Result web__wado_uri(WebRequest *r)
{
    /* audited as the request completes (web__audit_request) */
    return wado_uri(r);
}

static enum MHD_Result wado_uri(WebRequest *r)
{
    if (!r->authed) {
        return web__unauthorized(r);
    }
    /* Access first (issue 7): a study out of scope answers exactly as one
     * that does not exist, whatever else the request says. */
    const char *study, *series, *object;
    bool study_ok = uid_arg(r, "studyUID", &study);
    if (study_ok && !web__study_visible(r, study)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    if (!web__can(r, ACCESS_VIEW)) {
        return web__forbidden(r, "needs the view verb");
    }
    const char *rt = arg(r, "requestType");
    if (rt == NULL || strcmp(rt, "WADO") != 0) {
        return web__json_error(r, 400, "bad request", "requestType must be "
                               "WADO");
    }
    if (!study_ok || !uid_arg(r, "seriesUID", &series) ||
        !uid_arg(r, "objectUID", &object)) {
        return web__json_error(r, 400, "bad request", "studyUID, seriesUID "
                               "and objectUID must be valid UIDs");
    }
    UriType type;
    if (!uri_content_type(arg(r, "contentType"), &type)) {
        return web__json_error(r, 406, "not acceptable", "contentType must "
                               "be image/jpeg, image/png or "
                               "application/dicom");
    }
    const char *anon = arg(r, "anonymize");
    if (anon != NULL && strcmp(anon, "yes") == 0) {
        /* Sending identified data to a client that asked for none would
         * be worse than refusing. */
        return web__json_error(r, 400, "bad request", "anonymize=yes is not "
                               "supported");
    }
    if (arg(r, "presentationUID") != NULL && type != URI_DICOM) {
        return web__json_error(r, 400, "bad request", "presentation states "
                               "are not applied");
    }
    List l = {0};
    AgError err;
    ag_error_clear(&err);
    int rc = list_instances(r, study, series, object, &l, &err);
    size_t n = l.n;
    ag_free(l.v);
    if (rc != AG_OK) {
        return web__json_error(r, 500, "query failed", err.msg);
    }
    if (n != 1) {
        return web__json_error(r, 404, "not found", "no such object");
    }
    if (type == URI_DICOM) {
        return uri_dicom(r, object);
    }
    if (arg(r, "transferSyntax") != NULL) {
        return web__json_error(r, 400, "bad request", "transferSyntax "
                               "applies to contentType=application/dicom");
    }
    Inst in;
    rc = inst_open(web__store(r), object, &in, &err);
    if (rc == AG_ERR_UNSUPPORTED) {
        return web__json_error(r, 406, "not acceptable", err.msg);
    }
    if (rc != AG_OK) {
        return rc == AG_ERR_NOTFOUND
                   ? web__json_error(r, 404, "not found", err.msg)
                   : web__json_error(r, 500, "rendering failed", err.msg);
    }
    CodecRenderParams p;
    codec_render_params_init(&p);
    p.format = type == URI_PNG ? CODEC_RENDER_PNG : CODEC_RENDER_JPEG;
    uint32_t frame = 1;
    rc = uri_image_params(r, &in, &p, &frame, &err);
    enum MHD_Result ret = rc == AG_OK ? send_frame(r, &in, frame - 1, &p)
                                      : render_error(r, rc, &err);
    inst_close(&in);
    return ret;
}
