/*
 * server.c — HTTP with libmicrohttpd: a pool of event-driven worker
 * threads, request size limits, JSON error bodies ({"error": ..., "detail":
 * ...}), an access log, /healthz and /metrics.  Paths are split into
 * segments and checked before any handler sees them: no "..", no NUL, no
 * backslash (SECURITY.md: path traversal in every encoding).
 */
#include "web_int.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* /dicom-web/studies/S/series/S/instances/I/bulkdata/ + a BulkDataURI's
 * tag path (TAG/ITEM/TAG..., items nested up to the reader's 32 levels). */
#define MAX_SEGMENTS 80

/* Upper bounds of the request latency histogram, in microseconds (the
 * Prometheus default buckets, seconds on /metrics). */
static const uint64_t LATENCY_US[] = {5000, 10000, 25000, 50000, 100000,
                                      250000, 500000, 1000000, 2500000,
                                      5000000, 10000000};
#define NLATENCY (sizeof LATENCY_US / sizeof LATENCY_US[0])

struct WebServer {
    WebConfig cfg;
    struct MHD_Daemon *d;
    uint16_t port;
    atomic_ullong requests, errors;
    char *cert, *key;             /* PEM for HTTPS, or NULL */
    WebJobs *jobs;                /* jobs.c */
    /* /metrics: completed requests by status class (0: none sent, 1..5:
     * 1xx..5xx), latency histogram (+Inf last) and sum */
    atomic_ullong by_class[6];
    atomic_ullong latency[NLATENCY + 1];
    atomic_ullong latency_sum_us;
};

WebJobs *web__jobs(WebRequest *r)
{
    return r->server->jobs;
}

Store *web__store(WebRequest *r)
{
    return r->server->cfg.store;
}

enum MHD_Result web__send_response(WebRequest *r, unsigned status,
                                   struct MHD_Response *resp)
{
    if (resp == NULL) {
        return MHD_NO;
    }
    r->status = (int)status;
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    web__cors_headers(r, resp);   /* /dicom-web, allowed origins only */
    if (status == 401) {
        /* A browser whose session ended goes back to the login page (the
         * viewer does that): no Basic challenge for it, or it would pop
         * its own password dialog over the viewer. */
        bool browser = MHD_lookup_connection_value(
                           r->conn, MHD_COOKIE_KIND, "agora_session") != NULL;
        MHD_add_response_header(resp, "WWW-Authenticate",
                                r->server->cfg.basic_auth && !browser
                                    ? "Basic realm=\"agora\", charset=\"UTF-8\""
                                    : "Bearer realm=\"agora\"");
    }
    if (status == 429 && r->retry_after > 0) {
        char ra[16];
        ag_fmt(ra, sizeof ra, "%u", r->retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result web__send(WebRequest *r, unsigned status,
                          const char *content_type, const void *body,
                          size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (resp != NULL && content_type != NULL) {
        MHD_add_response_header(resp, "Content-Type", content_type);
    }
    return web__send_response(r, status, resp);
}

/* JSON string escaping for error bodies (values may come from the URL). */
bool web__study_visible(WebRequest *r, const char *study_uid)
{
    return r->authed && (r->who.verbs & ACCESS_VIEW) &&
           store_study_visible(web__store(r), &r->who.scope, study_uid);
}

bool web__study_visible_beyond_view(WebRequest *r, const char *study_uid)
{
    StoreScope sc = r->who.scope;
    sc.no_glass = true;
    return r->authed &&
           store_study_visible(web__store(r), &sc, study_uid);
}

Access *web__access(WebRequest *r)
{
    return r->server->cfg.access;
}

const WebConfig *web__config(WebRequest *r)
{
    return &r->server->cfg;
}

static void json_str(AgBuf *b, const char *s)
{
    ag_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            ag_buf_printf(b, "\\%c", *p);
        } else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') {
            ag_buf_printf(b, "\\u%04x", *p);
        } else {
            ag_buf_append(b, p, 1);
        }
    }
    ag_buf_append(b, "\"", 1);
}

enum MHD_Result web__json_error(WebRequest *r, unsigned status,
                                const char *error, const char *detail)
{
    AgBuf b;
    ag_buf_init(&b, 8192);
    ag_buf_append_str(&b, "{\"error\": ");
    json_str(&b, error);
    ag_buf_append_str(&b, ", \"detail\": ");
    json_str(&b, detail ? detail : "");
    ag_buf_append_str(&b, "}");
    atomic_fetch_add(&r->server->errors, 1);
    enum MHD_Result ret = web__send(r, status, "application/json", b.data,
                                    b.len);
    ag_buf_deinit(&b);
    return ret;
}

/* Split "/a/b/c" into segments; refuse traversal and odd bytes. */
static int split(char *path, char **seg, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(path, "/", &save); t != NULL;
         t = strtok_r(NULL, "/", &save)) {
        if (n == max || strcmp(t, "..") == 0 || strcmp(t, ".") == 0 ||
            strchr(t, '\\') != NULL) {
            return -1;
        }
        seg[n++] = t;
    }
    return n;
}

/* ---- /metrics (Prometheus text exposition format 0.0.4) ------------------ */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Count a completed request: its status class and its latency, from the
 * first call of handle() to request_done(). */
static void observe(WebServer *s, const WebRequest *r)
{
    int cls = r->status >= 100 && r->status < 600 ? r->status / 100 : 0;
    atomic_fetch_add(&s->by_class[cls], 1);
    uint64_t us = now_us() - r->start_us;
    size_t b = 0;
    while (b < NLATENCY && us > LATENCY_US[b]) {
        b++;
    }
    atomic_fetch_add(&s->latency[b], 1);
    atomic_fetch_add(&s->latency_sum_us, us);
}

static void metric(AgBuf *b, const char *name, const char *type,
                   const char *help)
{
    ag_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void http_metrics(AgBuf *b, WebServer *s)
{
    metric(b, "agora_http_requests_total", "counter", "HTTP requests "
           "received.");
    ag_buf_printf(b, "agora_http_requests_total %llu\n",
                  (unsigned long long)atomic_load(&s->requests));
    metric(b, "agora_http_errors_total", "counter", "HTTP error answers "
           "with a JSON body.");
    ag_buf_printf(b, "agora_http_errors_total %llu\n",
                  (unsigned long long)atomic_load(&s->errors));
    metric(b, "agora_http_responses_total", "counter", "HTTP requests "
           "completed, by status class (none: closed without an answer).");
    static const char *const CLASS[] = {"none", "1xx", "2xx", "3xx", "4xx",
                                        "5xx"};
    for (int i = 0; i < 6; i++) {
        ag_buf_printf(b, "agora_http_responses_total{code=\"%s\"} %llu\n",
                      CLASS[i],
                      (unsigned long long)atomic_load(&s->by_class[i]));
    }
    metric(b, "agora_http_request_duration_seconds", "histogram", "Time "
           "from a request's arrival to its completion.");
    unsigned long long cum = 0;
    for (size_t i = 0; i <= NLATENCY; i++) {
        cum += atomic_load(&s->latency[i]);
        if (i < NLATENCY) {
            ag_buf_printf(b, "agora_http_request_duration_seconds_bucket"
                          "{le=\"%g\"} %llu\n", (double)LATENCY_US[i] / 1e6,
                          cum);
        }
    }
    ag_buf_printf(b, "agora_http_request_duration_seconds_bucket"
                  "{le=\"+Inf\"} %llu\n"
                  "agora_http_request_duration_seconds_sum %.6f\n"
                  "agora_http_request_duration_seconds_count %llu\n", cum,
                  (double)atomic_load(&s->latency_sum_us) / 1e6, cum);
}

static void store_metrics(AgBuf *b, Store *store)
{
    StoreStats st = {0};
    store_stats(store, &st, NULL);
    metric(b, "agora_patients", "gauge", "Patients in the index.");
    ag_buf_printf(b, "agora_patients %llu\n",
                  (unsigned long long)st.patients);
    metric(b, "agora_studies", "gauge", "Studies in the index.");
    ag_buf_printf(b, "agora_studies %llu\n", (unsigned long long)st.studies);
    metric(b, "agora_series", "gauge", "Series in the index.");
    ag_buf_printf(b, "agora_series %llu\n", (unsigned long long)st.series);
    metric(b, "agora_instances", "gauge", "Instances in the index.");
    ag_buf_printf(b, "agora_instances %llu\n",
                  (unsigned long long)st.instances);
    metric(b, "agora_stored_bytes", "gauge", "Bytes of the stored "
           "instances.");
    ag_buf_printf(b, "agora_stored_bytes %llu\n",
                  (unsigned long long)st.bytes);
    StoreCommitStats cs;
    store_commit_stats(store, &cs);
    metric(b, "agora_store_commit_queue_depth", "gauge", "Instances waiting "
           "for the group commit.");
    ag_buf_printf(b, "agora_store_commit_queue_depth %llu\n",
                  (unsigned long long)cs.queued);
    metric(b, "agora_store_commit_batches_total", "counter", "Index "
           "transactions of the group commit.");
    ag_buf_printf(b, "agora_store_commit_batches_total %llu\n",
                  (unsigned long long)cs.batches);
    metric(b, "agora_store_commit_batched_instances_total", "counter",
           "Instances committed in those transactions.");
    ag_buf_printf(b, "agora_store_commit_batched_instances_total %llu\n",
                  (unsigned long long)cs.batched);
    metric(b, "agora_store_commit_batch_size_max", "gauge", "The largest "
           "group-commit batch so far.");
    ag_buf_printf(b, "agora_store_commit_batch_size_max %llu\n",
                  (unsigned long long)cs.max_batch);
    StoreCompressStats zs;
    store_compress_stats(store, &zs);
    metric(b, "agora_compressed_instances_total", "counter", "Instances "
           "re-encoded by the compression policy.");
    ag_buf_printf(b, "agora_compressed_instances_total %llu\n",
                  (unsigned long long)zs.instances);
    metric(b, "agora_compressed_bytes_saved_total", "counter", "Bytes the "
           "compression policy saved (as received minus as stored).");
    ag_buf_printf(b, "agora_compressed_bytes_saved_total %llu\n",
                  (unsigned long long)(zs.bytes_in - zs.bytes_out));
}

static void dimse_metrics(AgBuf *b, const WebConfig *cfg)
{
    if (cfg->dimse_stats == NULL) {
        return;
    }
    WebDimseStats d = {0};
    cfg->dimse_stats(cfg->dimse_stats_ctx, &d);
    metric(b, "agora_dicom_associations_total", "counter", "DICOM "
           "associations requested of us, by outcome.");
    ag_buf_printf(b, "agora_dicom_associations_total{result=\"accepted\"} "
                  "%llu\nagora_dicom_associations_total{result=\"rejected\"}"
                  " %llu\n", (unsigned long long)d.accepted,
                  (unsigned long long)d.rejected);
    metric(b, "agora_dicom_associations_aborted_total", "counter", "DICOM "
           "associations that ended in an A-ABORT.");
    ag_buf_printf(b, "agora_dicom_associations_aborted_total %llu\n",
                  (unsigned long long)d.aborted);
    metric(b, "agora_dicom_associations_active", "gauge", "DICOM "
           "associations open now.");
    ag_buf_printf(b, "agora_dicom_associations_active %u\n", d.active);
    metric(b, "agora_dicom_echo_total", "counter", "C-ECHO requests "
           "answered.");
    ag_buf_printf(b, "agora_dicom_echo_total %llu\n",
                  (unsigned long long)d.echo);
    metric(b, "agora_dicom_instances_stored_total", "counter", "Instances "
           "stored by C-STORE.");
    ag_buf_printf(b, "agora_dicom_instances_stored_total %llu\n",
                  (unsigned long long)d.stored);
    metric(b, "agora_dicom_store_failures_total", "counter", "C-STORE "
           "requests that failed.");
    ag_buf_printf(b, "agora_dicom_store_failures_total %llu\n",
                  (unsigned long long)d.store_failed);
}

static enum MHD_Result metrics(WebRequest *r)
{
    AgBuf b;
    ag_buf_init(&b, 64 << 10);
    http_metrics(&b, r->server);
    store_metrics(&b, web__store(r));
    dimse_metrics(&b, &r->server->cfg);
    uint32_t queued = 0, running = 0;
    web__jobs_counts(r->server->jobs, &queued, &running);
    metric(&b, "agora_jobs", "gauge", "Jobs (sending studies to DICOM "
           "nodes) waiting and running.");
    ag_buf_printf(&b, "agora_jobs{state=\"queued\"} %u\n"
                  "agora_jobs{state=\"running\"} %u\n", queued, running);
    enum MHD_Result ret = web__send(r, 200, "text/plain; version=0.0.4",
                                    b.data, b.len);
    ag_buf_deinit(&b);
    return ret;
}

static void request_done(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    WebRequest *r = *con_cls;
    if (r == NULL) {
        return;
    }
    /* Access log: method, path (control characters escaped by ag_log),
     * status.  No query string: it may hold PHI. */
    ag_log(AG_LOG_INFO, "http", "%s %.200s -> %d", r->method, r->url,
           r->status);
    observe(r->server, r);   /* /metrics */
    web__audit_request(r);
    if (r->upload_free != NULL) {
        r->upload_free(r->upload);
    }
    ag_arena_destroy(r->arena);
    ag_free(r);
    *con_cls = NULL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls)
{
    (void)version;
    WebServer *s = cls;
    WebRequest *r = *con_cls;
    if (r == NULL) {
        r = ag_calloc(1, sizeof *r);
        if (r == NULL) {
            return MHD_NO;
        }
        r->server = s;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->arena = ag_arena_create(64 << 20);
        *con_cls = r;
        r->start_us = now_us();
        atomic_fetch_add(&s->requests, 1);
        if (r->arena == NULL) {
            return MHD_NO;
        }
        web__authenticate(r);
        if (strcmp(method, "POST") == 0) {
            return MHD_YES;   /* the body comes in the next calls */
        }
    }
    char *path = ag_arena_strdup(r->arena, url);
    char *seg[MAX_SEGMENTS];
    int nseg = path ? split(path, seg, MAX_SEGMENTS) : -1;
    if (nseg < 0) {
        if (*upload_size > 0) {
            *upload_size = 0;
            return MHD_YES;
        }
        return web__json_error(r, 400, "bad path", "the path is not "
                               "acceptable");
    }
    bool dicomweb = nseg >= 1 && strcmp(seg[0], "dicom-web") == 0;
    if (nseg >= 2 && strcmp(seg[0], "api") == 0 && strcmp(seg[1], "v1") == 0) {
        return web__api(r, seg + 2, nseg - 2, upload_data, upload_size);
    }
    /* PS3.18 §8.9 Retrieve Capabilities (capabilities.c): describes the
     * service, not its data, so it needs no credentials either. */
    if (dicomweb && web__capabilities_wanted(r, seg + 1, nseg - 1)) {
        return web__capabilities(r, seg + 1, nseg - 1);
    }
    /* A CORS preflight carries no credentials (Fetch standard): it is
     * answered before authentication. */
    if (dicomweb && strcmp(method, "OPTIONS") == 0) {
        return web__dicomweb_options(r);
    }
    if (dicomweb && !r->authed) {
        if (*upload_size > 0) {
            *upload_size = 0;   /* drain, then refuse */
            return MHD_YES;
        }
        return web__unauthorized(r);
    }
    if (strcmp(method, "POST") == 0) {
        if (dicomweb) {
            if (!web__can(r, ACCESS_UPLOAD)) {
                if (*upload_size > 0) {
                    *upload_size = 0;
                    return MHD_YES;
                }
                return web__forbidden(r, "storing needs the upload verb");
            }
            return web__stow(r, seg + 1, nseg - 1, upload_data, upload_size);
        }
        if (*upload_size > 0) {
            *upload_size = 0;   /* drain, then refuse */
            return MHD_YES;
        }
        return web__json_error(r, 404, "not found", "no such resource");
    }
    if (strcmp(method, "OPTIONS") == 0) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            0, NULL, MHD_RESPMEM_PERSISTENT);
        if (resp != NULL) {
            MHD_add_response_header(resp, "Allow", "GET, HEAD, POST, OPTIONS");
        }
        return web__send_response(r, 204, resp);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        return web__json_error(r, 405, "method not allowed", method);
    }
    if (nseg == 1 && strcmp(seg[0], "healthz") == 0) {
        return web__send(r, 200, "application/json", "{\"status\": \"ok\"}",
                         16);
    }
    if (nseg == 1 && strcmp(seg[0], "metrics") == 0) {
        return metrics(r);
    }
    if (nseg == 2 && strcmp(seg[0], "share") == 0) {
        return web__share_link(r, seg[1]);
    }
    if (dicomweb) {
        return web__dicomweb_get(r, seg + 1, nseg - 1);
    }
    if (nseg == 1 && strcmp(seg[0], "wado") == 0) {
        return web__wado_uri(r);   /* WADO-URI (rendered.c) */
    }
    if (nseg == 0 || strcmp(seg[0], "ui") == 0 ||
        strcmp(seg[0], "viewer") == 0) {
        return web__static_get(r, seg, nseg);   /* UI and viewer files */
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

/* The DICOM TLS policy (src/net/tls.c), for HTTPS. */
#define HTTPS_PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
                       "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-CIPHER-ALL:" \
                       "+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:" \
                       "-MAC-ALL:+AEAD:%SERVER_PRECEDENCE"

/* A PEM file into a NUL-terminated heap string (libmicrohttpd takes the
 * certificate and key from memory). */
static int load_pem(const char *path, char **out, AgError *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (ag_file_read_all(path, 1 << 20, &data, &len, err) != AG_OK) {
        return err->code;
    }
    char *s = ag_malloc(len + 1);
    if (s == NULL) {
        ag_free(data);
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    memcpy(s, data, len);
    s[len] = '\0';
    sodium_memzero(data, len);
    ag_free(data);
    *out = s;
    return AG_OK;
}

static void server_free(WebServer *s)
{
    web__jobs_destroy(s->jobs);   /* after the daemon: no request uses it */
    if (s->key != NULL) {
        sodium_memzero(s->key, strlen(s->key));
    }
    ag_free(s->key);
    ag_free(s->cert);
    ag_free(s);
}

int web_server_start(const WebConfig *cfg, WebServer **out, AgError *err)
{
    WebServer *s = ag_calloc(1, sizeof *s);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    s->cfg = *cfg;
    if (s->cfg.max_connections == 0) {
        s->cfg.max_connections = 256;
    }
    if (s->cfg.timeout_s == 0) {
        s->cfg.timeout_s = 60;
    }
    if (s->cfg.threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        s->cfg.threads = cpus > 2 ? (uint32_t)(4 * cpus) : 8;
    }
    if (s->cfg.max_upload_bytes == 0) {
        s->cfg.max_upload_bytes = (uint64_t)4 << 30;
    }
    const char *addr = cfg->bind_addr ? cfg->bind_addr : "127.0.0.1";
    struct sockaddr_in a4 = {.sin_family = AF_INET,
                             .sin_port = htons(cfg->port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons(cfg->port)};
    struct sockaddr *sa;
    /* A fixed pool of event-driven workers (epoll): idle keep-alive
     * connections (a viewer opens several) and slow clients cost no
     * thread.  Handlers may block briefly (a STOW-RS part waits for its
     * group commit, a frame for its decoder), hence several workers per
     * core. */
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD;
    if (inet_pton(AF_INET, addr, &a4.sin_addr) == 1) {
        sa = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, addr, &a6.sin6_addr) == 1) {
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        ag_free(s);
        return ag_error_set(err, AG_ERR_INVALID, "listen address \"%.64s\" "
                            "is not an IP address", addr);
    }
    struct MHD_OptionItem tls[4] = {{MHD_OPTION_END, 0, NULL}};
    if (cfg->tls_cert_file != NULL && cfg->tls_key_file != NULL) {
        if (load_pem(cfg->tls_cert_file, &s->cert, err) != AG_OK ||
            load_pem(cfg->tls_key_file, &s->key, err) != AG_OK) {
            server_free(s);
            return err->code;
        }
        flags |= MHD_USE_TLS;
        s->cfg.secure_cookies = true;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                         s->cert};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                         (void *)HTTPS_PRIORITY};
    }
    if (web__jobs_create(&s->cfg, &s->jobs, err) != AG_OK) {
        server_free(s);
        return err->code;
    }
    s->d = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, handle, s,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    if (s->d == NULL) {
        server_free(s);
        return ag_error_set(err, AG_ERR_IO, "cannot listen on %s:%u (HTTP%s)",
                            addr, cfg->port, flags & MHD_USE_TLS
                                                 ? "S: check the certificate "
                                                   "and key"
                                                 : "");
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : cfg->port;
    *out = s;
    return AG_OK;
}

uint16_t web_server_port(const WebServer *s)
{
    return s->port;
}

void web_server_stop(WebServer *s)
{
    if (s != NULL) {
        MHD_stop_daemon(s->d);
        server_free(s);
    }
}
