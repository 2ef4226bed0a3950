/*
 * web.h — the HTTP listener of `agora serve` (DESIGN.md §2): libmicrohttpd,
 * one thread per connection (handlers block on fsync and file reads),
 * JSON error bodies, and the routes:
 *
 *   /healthz, /metrics                       liveness, Prometheus counters
 *   /dicom-web/...                           DICOMweb (PS3.18):
 *     QIDO-RS  GET studies, series, instances (and nested forms)
 *     WADO-RS  GET studies/{s}[/series/{se}[/instances/{i}]] (multipart
 *              application/dicom, streamed from the blobs), .../metadata,
 *              .../frames/{list}, .../bulkdata, .../rendered, .../thumbnail
 *     STOW-RS  POST studies[/{s}] (multipart/related application/dicom,
 *              streamed into the ingest pipeline)
 *   /wado?requestType=WADO&...               WADO-URI (rendered.c)
 *   /api/v1/...                              REST API (api.c)
 *   /share/{secret}                          share links (api.c)
 *   /, /ui/..., /viewer/...                  login UI and OHIF (static.c)
 *
 * Matching is store_query(), the same implementation C-FIND uses.  Every
 * request is authenticated (auth.c: session cookie, bearer token, HTTP
 * Basic when enabled, or anonymous when configured) and every query runs
 * in the principal's scope (access.h); every DICOMweb request leaves an
 * audit record (audit.c).
 */
#ifndef AG_WEB_H
#define AG_WEB_H

#include "access/access.h"
#include "audit/audit.h"
#include "store/store.h"

typedef struct WebServer WebServer;

/* What /metrics reports of the DICOM listeners. */
typedef struct WebDimseStats {
    uint64_t accepted, rejected, aborted;   /* associations */
    uint64_t echo, stored, store_failed;    /* C-ECHO, C-STORE */
    uint32_t active;                        /* associations now */
} WebDimseStats;

typedef struct WebConfig {
    const char *bind_addr;        /* default 127.0.0.1 */
    uint16_t port;                /* 0 = pick a free one (tests) */
    Store *store;                 /* borrowed */
    uint32_t max_connections;     /* default 256 */
    uint32_t timeout_s;           /* idle connection timeout, default 60 */
    uint32_t threads;             /* worker pool, default 4 per CPU, >= 8 */
    uint64_t max_upload_bytes;    /* per STOW request, default 4 GiB */
    Access *access;               /* borrowed; users, sessions, scope */
    AuditLog *audit;              /* borrowed; NULL: nothing recorded */
    /* Anonymous requests get the whole archive and every verb: only for
     * closed networks and tests, and said loudly at start. */
    bool anonymous;
    bool basic_auth;              /* accept HTTP Basic (DICOMweb clients) */
    bool secure_cookies;          /* mark session cookies Secure (HTTPS) */
    /* HTTPS (GnuTLS through libmicrohttpd) when both are set: PEM files;
     * TLS 1.2/1.3, ECDHE + AEAD only, like DICOM TLS (SECURITY.md 7).
     * Session cookies are then marked Secure. */
    const char *tls_cert_file;
    const char *tls_key_file;
    /* Static files (static.c).  NULL: the installed defaults, found from
     * the executable (a build directory of the source tree:
     * third_party/ohif/current and web/ui; PREFIX/share/agora/viewer and
     * /ui; /usr/share/agora/...). */
    const char *viewer_dir;       /* the OHIF build served at /viewer/ */
    const char *ui_dir;           /* the login UI served at / and /ui/ */
    /* CORS for /dicom-web (a viewer served from another origin): the
     * origins allowed ("https://viewer.example.org"; "*" = any, without
     * credentials).  None: same origin only.  Borrowed; must outlive the
     * server. */
    const char *const *cors_origins;
    size_t ncors_origins;
    /* Sending studies to DICOM nodes (jobs.c, POST .../studies/{uid}/send).
     * web/ does not call services/ (DESIGN.md §3): cli/ sets send to the
     * Storage SCU.  It C-STOREs sops[0..n) to the node with that AE title
     * on one association, calls progress once before it starts (0, 0,
     * NULL) and after each instance (counts so far; failed_uid when that
     * instance failed), stops when progress returns false, and returns
     * AG_OK when the association ran to its end or was cancelled, or an
     * error whose message names the node.  Called from the job threads.
     * NULL: sending answers 503. */
    int (*send)(void *ctx, const char *node_aet, const char *const *sops,
                size_t n,
                bool (*progress)(void *pctx, size_t sent, size_t failed,
                                 const char *failed_uid),
                void *pctx, AgError *err);
    void *send_ctx;
    /* DIMSE counters for /metrics (cli/ sums the DICOM listeners'); NULL:
     * left out. */
    void (*dimse_stats)(void *ctx, WebDimseStats *out);
    void *dimse_stats_ctx;
    /* The effective configuration as a JSON object (GET /api/v1/settings,
     * admin), built by cli/; borrowed. */
    const char *settings_json;
} WebConfig;

int web_server_start(const WebConfig *cfg, WebServer **out, AgError *err);
uint16_t web_server_port(const WebServer *s);
void web_server_stop(WebServer *s);

#endif
