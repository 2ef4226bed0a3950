/*
 * server.c — HTTP with libmicrohttpd: one thread per connection, request
 * size limits, JSON error bodies ({"error": ..., "detail": ...}), an
 * access log, /healthz and /metrics.  Paths are split into segments and
 * checked before any handler sees them: no "..", no NUL, no backslash
 * (SECURITY.md: path traversal in every encoding).
 */
#include "web_int.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MAX_SEGMENTS 16

struct WebServer {
    WebConfig cfg;
    struct MHD_Daemon *d;
    uint16_t port;
    atomic_ullong requests, errors;
};

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
    (void)r;
    (void)study_uid;
    return true;   /* filled in by the access layer (issue 7) */
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

static enum MHD_Result metrics(WebRequest *r)
{
    StoreStats st = {0};
    store_stats(web__store(r), &st, NULL);
    char body[1024];
    int n = snprintf(body, sizeof body,
        "# TYPE agora_http_requests_total counter\n"
        "agora_http_requests_total %llu\n"
        "# TYPE agora_http_errors_total counter\n"
        "agora_http_errors_total %llu\n"
        "# TYPE agora_instances gauge\nagora_instances %llu\n"
        "# TYPE agora_studies gauge\nagora_studies %llu\n"
        "# TYPE agora_stored_bytes gauge\nagora_stored_bytes %llu\n",
        (unsigned long long)atomic_load(&r->server->requests),
        (unsigned long long)atomic_load(&r->server->errors),
        (unsigned long long)st.instances, (unsigned long long)st.studies,
        (unsigned long long)st.bytes);
    return web__send(r, 200, "text/plain; version=0.0.4", body, (size_t)n);
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
        atomic_fetch_add(&s->requests, 1);
        if (r->arena == NULL) {
            return MHD_NO;
        }
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
    if (strcmp(method, "POST") == 0) {
        if (dicomweb) {
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
    if (dicomweb) {
        return web__dicomweb_get(r, seg + 1, nseg - 1);
    }
    return web__json_error(r, 404, "not found", "no such resource");
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
    if (s->cfg.max_upload_bytes == 0) {
        s->cfg.max_upload_bytes = (uint64_t)4 << 30;
    }
    const char *addr = cfg->bind_addr ? cfg->bind_addr : "127.0.0.1";
    struct sockaddr_in a4 = {.sin_family = AF_INET,
                             .sin_port = htons(cfg->port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons(cfg->port)};
    struct sockaddr *sa;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD;
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
    s->d = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, handle, s,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_END);
    if (s->d == NULL) {
        ag_free(s);
        return ag_error_set(err, AG_ERR_IO, "cannot listen on %s:%u (HTTP)",
                            addr, cfg->port);
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
        ag_free(s);
    }
}
