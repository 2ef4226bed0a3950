/* web_int.h — internal to src/web/. */
#ifndef AG_WEB_INT_H
#define AG_WEB_INT_H

#include "web.h"

#include <microhttpd.h>

/* One request: its connection, method, path and (for uploads) state. */
typedef struct WebRequest {
    struct WebServer *server;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    AgArena *arena;              /* request lifetime */
    void *upload;                /* handler state across body chunks */
    void (*upload_free)(void *);
    int status;                  /* for the access log */
    AccessPrincipal who;         /* valid when authed */
    bool authed;
    char addr[64];               /* client address */
    uint32_t retry_after;        /* 429: seconds, sent as Retry-After */
    uint64_t start_us;           /* monotonic, for /metrics latencies */
} WebRequest;

Store *web__store(WebRequest *r);

/* Access control (issue 7): whether the request's user may see the study.
 * A handler that serves anything of a study it did not reach through
 * store_query() calls this first and answers exactly as for a study that
 * does not exist (404) when it returns false, so UIDs cannot be probed. */
bool web__study_visible(WebRequest *r, const char *study_uid);
/* Visible other than through break-the-glass (which grants view only):
 * for download, share and delete. */
bool web__study_visible_beyond_view(WebRequest *r, const char *study_uid);

/* ---- authentication (auth.c) ---------------------------------------------- */

/* Resolve the request's principal from its session cookie, bearer token,
 * HTTP Basic credentials (when enabled) or anonymous access (when
 * configured); sets r->authed. */
void web__authenticate(WebRequest *r);
/* 401 with WWW-Authenticate. */
enum MHD_Result web__unauthorized(WebRequest *r);
/* Whether r may use verb; when not, the caller answers web__forbidden. */
bool web__can(WebRequest *r, uint32_t verb);
enum MHD_Result web__forbidden(WebRequest *r, const char *what);
Access *web__access(WebRequest *r);
const WebConfig *web__config(WebRequest *r);

/* ---- REST API (api.c): /api/v1/... and /share/{secret} ------------------- */

/* Every method; body chunks like web__stow (data, *size; then *size 0). */
enum MHD_Result web__api(WebRequest *r, char **seg, int nseg,
                         const char *data, size_t *size);
enum MHD_Result web__share_link(WebRequest *r, const char *secret);

/* ---- audit (audit.c in this folder): one record per operation ---------- */

/* outcome: 0 success, 4 minor failure, 8 serious, 12 major (PS3.15 A.5). */
void web__audit_auth(WebRequest *r, const char *user, const char *what,
                     int outcome, const char *detail);
void web__audit_query(WebRequest *r, const char *what, const char *keys);
void web__audit_study(WebRequest *r, const char *what, const char *study,
                      int outcome, const char *detail);
void web__audit_config(WebRequest *r, const char *what, const char *detail);
/* A Modality Worklist item added ('C'), read ('R') or removed ('D'):
 * Order Record (PS3.15 A.5.3.10).  patient_id and patient_name (may be
 * NULL) name the item's patient; detail says which item. */
void web__audit_order(WebRequest *r, char action, const char *patient_id,
                      const char *patient_name, int outcome,
                      const char *detail);
/* One QIDO-RS query parameter (dicomweb.c): a matching key (keyword or
 * tag; repeated keys are alternatives), limit, offset, fuzzymatching or
 * includefield, into keys and q.  AG_ERR_INVALID / AG_ERR_LIMIT with the
 * reason in bad.  Separate from libmicrohttpd so that it can be fuzzed. */
int web__qido_param(DicomDataset *keys, StoreQuery *q, const char *key,
                    const char *value, char *bad, size_t badcap);

/* Called as each request completes: records DICOMweb and WADO-URI
 * requests (query, retrieval, store) from method, path and status. */
void web__audit_request(WebRequest *r);
/* GET /api/v1/audit */
enum MHD_Result web__audit_search(WebRequest *r);

/* Responses (each queues and returns the MHD result). */
enum MHD_Result web__json_error(WebRequest *r, unsigned status,
                                const char *error, const char *detail);
enum MHD_Result web__send(WebRequest *r, unsigned status,
                          const char *content_type, const void *body,
                          size_t len);
enum MHD_Result web__send_response(WebRequest *r, unsigned status,
                                   struct MHD_Response *resp);

/* DICOMweb (dicomweb.c): GET/HEAD of QIDO and WADO routes, with path
 * segments after /dicom-web split. */
enum MHD_Result web__dicomweb_get(WebRequest *r, char **seg, int nseg);
/* STOW-RS: called for each body chunk (data, *size), then with *size 0. */
enum MHD_Result web__stow(WebRequest *r, char **seg, int nseg,
                          const char *data, size_t *size);

/* CORS for /dicom-web (dicomweb.c; WebConfig.cors_origins): add the
 * Access-Control-* headers to a response when the request is under
 * /dicom-web and its Origin is allowed (called by web__send_response for
 * every response); answer OPTIONS under /dicom-web (the preflight, which
 * needs no credentials). */
void web__cors_headers(WebRequest *r, struct MHD_Response *resp);
enum MHD_Result web__dicomweb_options(WebRequest *r);

/* ---- capabilities (capabilities.c): PS3.18 §8.9 Retrieve Capabilities --
 * OPTIONS under /dicom-web that is not a CORS preflight, and GET/HEAD
 * /dicom-web/capabilities: WADL (the default) or JSON, without credentials
 * (it describes the service, not its data).  seg: the path after
 * /dicom-web. */
bool web__capabilities_wanted(WebRequest *r, char **seg, int nseg);
enum MHD_Result web__capabilities(WebRequest *r, char **seg, int nseg);
typedef enum WebCapsFormat { WEB_CAPS_WADL, WEB_CAPS_JSON } WebCapsFormat;
/* The form an Accept value (NULL: absent) asks for: AG_OK, AG_ERR_PARSE
 * (400), AG_ERR_UNSUPPORTED (406).  Pure, thread-safe. */
int web__caps_negotiate(const char *accept, WebCapsFormat *out,
                        AgError *err);
const char *web__caps_media(WebCapsFormat f);
/* Append the document for seg[0..nseg) (nseg 0: every resource) to out;
 * origin "http://host:port" or "" (bases relative to the origin).
 * AG_ERR_NOTFOUND for a path that is no resource; AG_ERR_NOMEM,
 * AG_ERR_LIMIT (out's cap) leave out as it was. */
int web__caps_build(WebCapsFormat f, const char *origin, char **seg,
                    int nseg, AgBuf *out, AgError *err);

/* ---- content negotiation (accept.c) -------------------------------------
 * The Accept header (RFC 9110 §12.5.1) with the parameters PS3.18 §8.7.3.5
 * adds: type= of multipart/related and transfer-syntax=.  Pure functions,
 * no allocation; thread-safe. */

#define WEB_ACCEPT_MAX 32          /* media ranges per header */
#define WEB_ACCEPT_VALUE_MAX 128   /* type/subtype and parameter values */

typedef struct WebMediaRange {
    char type[WEB_ACCEPT_VALUE_MAX];       /* "type/subtype", lowercased;
                                            * "*" + "/" + "*", "image/" + "*" */
    char part_type[WEB_ACCEPT_VALUE_MAX];  /* type= (multipart/related),
                                            * lowercased; "" if absent */
    char ts[65];                           /* transfer-syntax= as sent
                                            * ("*" or a UID); "" if absent */
    uint16_t q;                            /* qvalue x 1000, 1..1000 */
} WebMediaRange;

typedef struct WebAccept {
    /* In order of preference: q descending, then the more specific range,
     * then the client's order.  Ranges with q=0 are left out and counted
     * in excluded (n == 0 with excluded > 0: nothing is acceptable). */
    WebMediaRange range[WEB_ACCEPT_MAX];
    int n;
    int excluded;
} WebAccept;

/**
 * Parse an Accept field value.  NULL or "" gives n == 0 (the caller treats
 * that as "anything", RFC 9110 §12.5.1).  Errors: AG_ERR_PARSE (not the
 * grammar, a bad qvalue, a repeated type/transfer-syntax/q), AG_ERR_LIMIT
 * (more than WEB_ACCEPT_MAX ranges, a value too long); *out is then empty.
 */
int web_accept_parse(const char *header, WebAccept *out, AgError *err);
/** Does a media range ("*" "/" "*", "image/" "*", "image/jpeg") match a
 * media type?  Both lowercase. */
bool web_media_match(const char *range, const char *type);
/** Does an Accept-Encoding value (NULL = absent) accept gzip with q > 0
 * (RFC 9110 §12.5.3, "*" included)?  Malformed values answer false. */
bool web_accept_gzip(const char *header);

/* PS3.18 §8.7.3.3 Tables 8.7.3-4 and 8.7.3-5. */
/** Bulk data media type of a transfer syntax: "image/jpeg", "image/jls",
 * "image/jp2", ... for compressed ones, "application/octet-stream" else. */
const char *web_ts_media(const char *ts);
/** Default transfer syntax of a bulk data media type (octet-stream: Explicit
 * VR Little Endian); NULL for a media type that is not in the tables. */
const char *web_media_default_ts(const char *media);
/** Is ts one of the syntaxes of that media type? */
bool web_media_has_ts(const char *media, const char *ts);

/* ---- static files (static.c): the login UI at / and /ui/, the OHIF viewer
 * at /viewer/ with its generated app-config.js (DESIGN.md §2). */

/* GET/HEAD of "/" (nseg 0), "/ui/..." and "/viewer/..." (seg[0] "ui" or
 * "viewer"): files beneath WebConfig.ui_dir / viewer_dir (or the installed
 * defaults) with ETag/304, gzip siblings, caching and security headers;
 * extensionless misses under /viewer/ get index.html (client routes). */
enum MHD_Result web__static_get(WebRequest *r, char **seg, int nseg);
/* Pure helpers of static.c, thread-safe (exposed for the unit tests). */
/* Content-Type of a file name by extension ("application/octet-stream"
 * when unknown); *compressible (may be NULL): worth a gzip sibling. */
const char *web__static_type(const char *name, bool *compressible);
/* Does a file name carry a content hash ("app.bundle.0f6159c501addfe9.js",
 * "0ddf166f7a343eda.wasm"), so it may be cached as immutable? */
bool web__static_hashed(const char *name);
/* Is a path segment a plain file name: 1..NAME_MAX of [A-Za-z0-9._~@+-],
 * not starting with '.'? */
bool web__static_segment_ok(const char *seg);
/* Does an If-None-Match value (NULL = absent) match etag, compared weakly
 * (RFC 9110 §13.1.2; "*" matches)? */
bool web__etag_matches(const char *if_none_match, const char *etag);

/* ---- rendered images (rendered.c) ---------------------------------------
 * WADO-RS Retrieve Rendered and thumbnails (PS3.18 §10.4.1.1.3-4) and
 * WADO-URI (PS3.18 §9), rendered by codec_render_frame. */

/* Is seg (after /dicom-web, seg[0] "studies") a rendered or thumbnail
 * resource: studies/{s}[/series/{se}[/instances/{i}[/frames/{l}]]]
 * /rendered|thumbnail? */
bool web__rendered_route(char **seg, int nseg);
/* GET such a resource (the caller has checked the study's visibility). */
enum MHD_Result web__rendered(WebRequest *r, char **seg, int nseg);
/* GET /wado?requestType=WADO&...: checks authentication and the study's
 * visibility itself, before anything else. */
enum MHD_Result web__wado_uri(WebRequest *r);
/* Parameter parsers of rendered.c, exposed for fuzz_params. */
struct CodecRenderParams;
/* viewport=vw,vh[,sx,sy,sw,sh] (PS3.18 §8.3.5.1.3) into p; AG_ERR_INVALID. */
int web__rendered_parse_viewport(const char *v, struct CodecRenderParams *p,
                                 AgError *err);
/* A frame list "1,3,5" into want (room for 256) and *n; AG_ERR_INVALID. */
int web__rendered_parse_frames(const char *list, uint32_t *want, int *n,
                               AgError *err);

/* ---- jobs (jobs.c): studies sent to DICOM nodes in the background -------
 * An in-memory table of jobs run by two worker threads through
 * WebConfig.send; it lives as long as the server. */

typedef struct WebJobs WebJobs;

/* Create the table and start the workers (none when cfg->send is NULL).
 * cfg is borrowed and must outlive the table. */
int web__jobs_create(const WebConfig *cfg, WebJobs **out, AgError *err);
/* Cancel what runs, wait for the workers, free.  NULL is fine. */
void web__jobs_destroy(WebJobs *j);
/* Jobs waiting and running now (for /metrics). */
void web__jobs_counts(WebJobs *j, uint32_t *queued, uint32_t *running);
/* The server's table (server.c). */
WebJobs *web__jobs(WebRequest *r);
/* POST /api/v1/studies/{uid}/send {"node": AET}: 202 with the job. */
enum MHD_Result web__jobs_send(WebRequest *r, const char *study,
                               json_t *body);
/* GET /api/v1/jobs, GET and DELETE /api/v1/jobs/{id} (seg[0] "jobs"). */
enum MHD_Result web__jobs_route(WebRequest *r, char **seg, int nseg);

#endif
