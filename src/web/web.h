/*
 * web.h — the HTTP listener of `agora serve` (DESIGN.md §2): libmicrohttpd,
 * one thread per connection (handlers block on fsync and file reads),
 * JSON error bodies, and the routes:
 *
 *   /healthz, /metrics                       liveness, Prometheus counters
 *   /dicom-web/...                           DICOMweb (PS3.18):
 *     QIDO-RS  GET studies, series, instances (and nested forms)
 *     WADO-RS  GET studies/{s}[/series/{se}[/instances/{i}]] (multipart
 *              application/dicom, streamed from the blobs) and .../metadata
 *     STOW-RS  POST studies[/{s}] (multipart/related application/dicom,
 *              streamed into the ingest pipeline)
 *
 * Matching is store_query(), the same implementation C-FIND uses.
 * Until access control lands (issue 7), the listener binds to loopback by
 * default and serves whoever can reach it.
 */
#ifndef AG_WEB_H
#define AG_WEB_H

#include "store/store.h"

typedef struct WebServer WebServer;

typedef struct WebConfig {
    const char *bind_addr;        /* default 127.0.0.1 */
    uint16_t port;                /* 0 = pick a free one (tests) */
    Store *store;                 /* borrowed */
    uint32_t max_connections;     /* default 256 */
    uint32_t timeout_s;           /* idle connection timeout, default 60 */
    uint64_t max_upload_bytes;    /* per STOW request, default 4 GiB */
} WebConfig;

int web_server_start(const WebConfig *cfg, WebServer **out, AgError *err);
uint16_t web_server_port(const WebServer *s);
void web_server_stop(WebServer *s);

#endif
