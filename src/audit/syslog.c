/*
 * syslog.c — export to an audit record repository (PS3.15 A.6 "Audit
 * Trail Message Transmission Profile - SYSLOG-TLS", IHE ATNA): each record
 * as an RFC 5424 message whose MSG is the DICOM audit message XML, framed
 * by octet counting (RFC 5425 §4.3) over TLS.
 *
 * The log is the queue: a cursor per collector, in audit.db, names the
 * last record written to it.  The thread reads the records after it in seq
 * order, writes them, and only then moves the cursor, so a collector that
 * is down (or a crash) delays messages but loses none.  The collector's
 * certificate is verified against the configured CA and its name; the TLS
 * policy is the one of net/tls.c (SECURITY.md rule 7).
 */
#include "audit_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* TLS 1.3 and 1.2 only; ECDHE with AEAD ciphers.  Keep in step with
 * net/tls.c: one TLS policy for DICOM, HTTPS, HL7 and syslog. */
#define PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
                 "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-CIPHER-ALL:" \
                 "+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:" \
                 "-MAC-ALL:+AEAD"

#define CONNECT_MS 3000
#define IO_TIMEOUT_S 10
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define IDLE_POLL_MS 1000     /* records of other processes appear too */
#define BATCH 64

/* RFC 5424 §6.2.1: facility 10 (security/authorization), severity 5
 * (notice) as PS3.15 A.6 asks; 4 (warning) for failed actions. */
#define FACILITY 10

/* ---- the message ------------------------------------------------------- */

/* HOSTNAME, APP-NAME, PROCID and MSGID are PRINTUSASCII (33..126). */
static int append_token(AgBuf *b, const char *s, size_t max)
{
    size_t n = 0;
    for (; s != NULL && s[n] != '\0' && n < max; n++) {
        char c = s[n] > 32 && s[n] < 127 ? s[n] : '_';
        int rc = ag_buf_append(b, &c, 1);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return n == 0 ? ag_buf_append(b, "-", 1) : AG_OK;
}

int audit__syslog_frame(const AuditRecord *r, const AuditSource *src,
                        const char *procid, AgBuf *out)
{
    AgBuf m;
    ag_buf_init(&m, 0);
    int sev = r->ev.outcome == AUDIT_SUCCESS ? 5 : 4;
    /* VERSION 1; TIMESTAMP is RFC 3339 in UTC with microseconds */
    int rc = ag_buf_printf(&m, "<%d>1 %s ", FACILITY * 8 + sev, r->time);
    if (rc == AG_OK) {
        rc = append_token(&m, src->host, 255);
    }
    if (rc == AG_OK) {
        rc = ag_buf_append_str(&m, " agora ");
    }
    if (rc == AG_OK) {
        rc = append_token(&m, procid, 128);
    }
    /* MSGID of IHE ITI TF-2 3.20.7.1 (PS3.15 A.6 also allows
     * "DICOM+RFC3881"); no STRUCTURED-DATA; MSG is UTF-8 with its BOM
     * (RFC 5424 §6.4). */
    if (rc == AG_OK) {
        rc = ag_buf_append_str(&m, " IHE+RFC-3881 - \xef\xbb\xbf");
    }
    if (rc == AG_OK) {
        rc = audit__xml(r, src, &m);
    }
    if (rc == AG_OK) {       /* RFC 5425 §4.3: MSG-LEN SP SYSLOG-MSG */
        rc = ag_buf_printf(out, "%zu ", m.len);
    }
    if (rc == AG_OK) {
        rc = ag_buf_append(out, m.data, m.len);
    }
    ag_buf_deinit(&m);
    return rc;
}

/* ---- the exporter ------------------------------------------------------ */

struct AuditExporter {
    char *host, *source_id, *site_id, *our_host;
    char target[300];           /* "host:port": the cursor's key */
    char port[8];
    char procid[16];
    AuditSource src;
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t prio;
    sqlite3 *db;                /* the thread's own connection */

    int fd;
    gnutls_session_t s;

    pthread_t thread;
    pthread_mutex_t lock;       /* below */
    pthread_cond_t cond;
    bool stop, kicked, connected, warned;
    int64_t stop_deadline_ms;
    uint64_t cursor;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void disconnect(AuditExporter *x, bool polite)
{
    if (x->s != NULL) {
        if (polite) {
            gnutls_bye(x->s, GNUTLS_SHUT_WR);
        }
        gnutls_deinit(x->s);
        x->s = NULL;
    }
    if (x->fd >= 0) {
        close(x->fd);
        x->fd = -1;
    }
    pthread_mutex_lock(&x->lock);
    x->connected = false;
    pthread_mutex_unlock(&x->lock);
}

/* A TCP connection within CONNECT_MS, then blocking with I/O timeouts. */
static int tcp_connect(AuditExporter *x, char *why, size_t cap)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai, *a;
    int g = getaddrinfo(x->host, x->port, &hints, &ai);
    if (g != 0) {
        snprintf(why, cap, "%s", gai_strerror(g));
        return -1;
    }
    int fd = -1;
    snprintf(why, cap, "no address");
    for (a = ai; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC |
                    SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int soerr = ETIMEDOUT;
            socklen_t len = sizeof soerr;
            if (poll(&p, 1, CONNECT_MS) == 1) {
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            }
            rc = soerr == 0 ? 0 : -1;
            errno = soerr;
        }
        if (rc != 0) {
            snprintf(why, cap, "%s", strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
}

static bool is_ip_literal(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static int tls_connect(AuditExporter *x, char *why, size_t cap)
{
    x->fd = tcp_connect(x, why, cap);
    if (x->fd < 0) {
        return -1;
    }
    int g = gnutls_init(&x->s, GNUTLS_CLIENT);
    if (g == 0) {
        g = gnutls_priority_set(x->s, x->prio);
    }
    if (g == 0) {
        g = gnutls_credentials_set(x->s, GNUTLS_CRD_CERTIFICATE, x->creds);
    }
    if (g == 0 && !is_ip_literal(x->host)) {   /* SNI takes names only */
        g = gnutls_server_name_set(x->s, GNUTLS_NAME_DNS, x->host,
                                   strlen(x->host));
    }
    if (g == 0) {
        /* chain to the configured CA, and the name (or IP) we dialled */
        gnutls_session_set_verify_cert(x->s, x->host, 0);
        gnutls_transport_set_int(x->s, x->fd);
        gnutls_handshake_set_timeout(x->s, IO_TIMEOUT_S * 1000);
        do {
            g = gnutls_handshake(x->s);
        } while (g < 0 && gnutls_error_is_fatal(g) == 0);
    }
    if (g < 0) {
        snprintf(why, cap, "tls: %s", gnutls_strerror(g));
        disconnect(x, false);
        return -1;
    }
    pthread_mutex_lock(&x->lock);
    x->connected = true;
    pthread_mutex_unlock(&x->lock);
    return 0;
}

/* A collector never speaks: a readable socket means it closed (or sent an
 * alert).  Checked before each batch so that writes do not vanish into a
 * connection the peer already dropped. */
static bool still_open(AuditExporter *x)
{
    struct pollfd p = {.fd = x->fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0) {
        return true;
    }
    /* Non-blocking for this one read: a TLS 1.3 session ticket also
     * makes the socket readable, and must not stall us until the read
     * timeout. */
    int fl = fcntl(x->fd, F_GETFL);
    fcntl(x->fd, F_SETFL, fl | O_NONBLOCK);
    char junk[256];
    ssize_t n = gnutls_record_recv(x->s, junk, sizeof junk);
    fcntl(x->fd, F_SETFL, fl);
    return n > 0 || n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED;
}

static int send_all(AuditExporter *x, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = gnutls_record_send(x->s, p, n);
        if (w == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (w <= 0) {
            return -1;  /* includes E_AGAIN: the send timeout expired */
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void cursor_save(AuditExporter *x, uint64_t seq)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(x->db, "UPDATE export_cursor SET seq = ?1 WHERE"
                           " target = ?2", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
        sqlite3_bind_text(st, 2, x->target, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            /* the next run resends from the stored cursor: duplicates,
             * not losses */
            ag_log(AG_LOG_WARN, "audit", "msg=\"export cursor not saved\" "
                   "error=\"%s\"", sqlite3_errmsg(x->db));
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_lock(&x->lock);
    x->cursor = seq;
    pthread_mutex_unlock(&x->lock);
}

/* Send up to BATCH records after the cursor.  Returns how many were sent,
 * or -1 when the connection failed (the cursor covers what was sent). */
static int send_pending(AuditExporter *x)
{
    if (!still_open(x)) {
        disconnect(x, false);
        return -1;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(x->db, "SELECT " AUDIT_ROW_COLUMNS " FROM events"
                           " WHERE seq > ?1 ORDER BY seq LIMIT ?2", -1, &st,
                           NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)x->cursor);
    sqlite3_bind_int(st, 2, BATCH);
    uint64_t sent_seq = x->cursor;
    int sent = 0, rc = 0;
    AgBuf b;
    ag_buf_init(&b, 0);
    while (sqlite3_step(st) == SQLITE_ROW) {
        AuditRecord r;
        audit__row_read(st, &r);
        ag_buf_reset(&b);
        if (audit__syslog_frame(&r, &x->src, x->procid, &b) != AG_OK) {
            rc = -1;
            break;
        }
        if (send_all(x, b.data, b.len) != 0) {
            disconnect(x, false);
            rc = -1;
            break;
        }
        sent_seq = r.seq;
        sent++;
    }
    ag_buf_deinit(&b);
    sqlite3_finalize(st);
    if (sent_seq != x->cursor) {
        cursor_save(x, sent_seq);
    }
    return rc < 0 ? -1 : sent;
}

/* Wait for a kick, stop, or ms (lock held). */
static void wait_locked(AuditExporter *x, uint32_t ms)
{
    if (x->kicked || x->stop) {
        x->kicked = false;
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&x->cond, &x->lock, &ts);
    x->kicked = false;
}

static bool should_stop(AuditExporter *x)
{
    pthread_mutex_lock(&x->lock);
    bool stop = x->stop && (mono_ms() >= x->stop_deadline_ms);
    pthread_mutex_unlock(&x->lock);
    return stop;
}

static void *exporter_main(void *arg)
{
    AuditExporter *x = arg;
    uint32_t backoff = 0;
    for (;;) {
        int n = 0;
        if (should_stop(x)) {
            break;
        }
        if (x->s == NULL) {
            pthread_mutex_lock(&x->lock);
            bool stopping = x->stop;
            pthread_mutex_unlock(&x->lock);
            char why[160];
            if (stopping) {
                break;          /* no new connections while closing */
            }
            if (tls_connect(x, why, sizeof why) != 0) {
                if (!x->warned) {   /* once per outage */
                    ag_log(AG_LOG_WARN, "audit", "msg=\"audit collector "
                           "unreachable, records wait in audit.db\" "
                           "collector=%s error=\"%s\"", x->target, why);
                    x->warned = true;
                }
                backoff = backoff == 0 ? BACKOFF_MIN_MS
                          : backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                         : backoff * 2;
                pthread_mutex_lock(&x->lock);
                wait_locked(x, backoff);
                pthread_mutex_unlock(&x->lock);
                continue;
            }
            ag_log(AG_LOG_INFO, "audit", "msg=\"audit collector connected\""
                   " collector=%s", x->target);
            x->warned = false;
            backoff = 0;
        }
        n = send_pending(x);
        if (n == 0) {
            pthread_mutex_lock(&x->lock);
            bool done = x->stop;
            if (!done) {
                wait_locked(x, IDLE_POLL_MS);
            }
            pthread_mutex_unlock(&x->lock);
            if (done) {
                break;      /* closing, and everything is sent */
            }
        }
    }
    disconnect(x, true);
    return NULL;
}

/* ---- start and stop ---------------------------------------------------- */

static void exporter_free(AuditExporter *x)
{
    if (x->prio != NULL) {
        gnutls_priority_deinit(x->prio);
    }
    if (x->creds != NULL) {
        gnutls_certificate_free_credentials(x->creds);
    }
    sqlite3_close(x->db);
    pthread_mutex_destroy(&x->lock);
    pthread_cond_destroy(&x->cond);
    ag_free(x->host);
    ag_free(x->source_id);
    ag_free(x->site_id);
    ag_free(x->our_host);
    ag_free(x);
}

static int tls_setup(AuditExporter *x, const AuditConfig *cfg, AgError *err)
{
    if (cfg->syslog_ca == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "audit export: a CA file "
                            "to verify the collector is required");
    }
    int g = gnutls_certificate_allocate_credentials(&x->creds);
    if (g == 0) {
        g = gnutls_certificate_set_x509_trust_file(x->creds, cfg->syslog_ca,
                                                   GNUTLS_X509_FMT_PEM);
        if (g == 0) {
            g = GNUTLS_E_FILE_ERROR;    /* no CA in the file */
        }
    }
    if (g >= 0 && cfg->syslog_cert != NULL) {
        g = gnutls_certificate_set_x509_key_file(
            x->creds, cfg->syslog_cert,
            cfg->syslog_key != NULL ? cfg->syslog_key : cfg->syslog_cert,
            GNUTLS_X509_FMT_PEM);
    }
    if (g >= 0) {
        g = gnutls_priority_init(&x->prio, PRIORITY, NULL);
    }
    if (g < 0) {
        return ag_error_set(err, AG_ERR_INVALID, "audit export: %s: %s",
                            cfg->syslog_ca, gnutls_strerror(g));
    }
    return AG_OK;
}

/* The cursor of this collector; a new one starts after what exists. */
static int cursor_load(AuditExporter *x, const char *data_dir, AgError *err)
{
    sqlite3_stmt *st;
    int rc = audit__db_open(data_dir, false, &x->db, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (sqlite3_prepare_v2(x->db, "INSERT OR IGNORE INTO export_cursor"
                           " (target, seq) SELECT ?1, coalesce((SELECT seq"
                           " FROM head WHERE id = 1), 0)", -1, &st,
                           NULL) != SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "audit.db: %s",
                            sqlite3_errmsg(x->db));
    }
    sqlite3_bind_text(st, 1, x->target, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE ||
        sqlite3_prepare_v2(x->db, "SELECT seq FROM export_cursor WHERE"
                           " target = ?1", -1, &st, NULL) != SQLITE_OK) {
        return ag_error_set(err, AG_ERR_IO, "audit.db: export cursor: %s",
                            sqlite3_errmsg(x->db));
    }
    sqlite3_bind_text(st, 1, x->target, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        x->cursor = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return AG_OK;
}

int audit__exporter_start(const AuditConfig *cfg, const AuditSource *src,
                          AuditExporter **out, AgError *err)
{
    AuditExporter *x = ag_calloc(1, sizeof *x);
    if (x == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
    }
    x->fd = -1;
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->cond, NULL);
    uint16_t port = cfg->syslog_port != 0 ? cfg->syslog_port : 6514;
    snprintf(x->port, sizeof x->port, "%u", port);
    snprintf(x->procid, sizeof x->procid, "%ld", (long)getpid());
    x->host = ag_strdup(cfg->syslog_host);
    x->source_id = ag_strdup(src->source_id);
    x->site_id = src->site_id != NULL ? ag_strdup(src->site_id) : NULL;
    x->our_host = ag_strdup(src->host);
    if (x->host == NULL || x->source_id == NULL || x->our_host == NULL ||
        (src->site_id != NULL && x->site_id == NULL)) {
        exporter_free(x);
        return ag_error_set(err, AG_ERR_NOMEM, "audit: out of memory");
    }
    x->src = (AuditSource){.source_id = x->source_id, .site_id = x->site_id,
                           .host = x->our_host};
    if (ag_fmt(x->target, sizeof x->target, "%s:%u", x->host, port) !=
        AG_OK) {
        exporter_free(x);
        return ag_error_set(err, AG_ERR_INVALID, "audit export: host name "
                            "too long");
    }
    int rc = tls_setup(x, cfg, err);
    if (rc == AG_OK) {
        rc = cursor_load(x, cfg->data_dir, err);
    }
    if (rc == AG_OK && pthread_create(&x->thread, NULL, exporter_main, x) !=
                           0) {
        rc = ag_error_set(err, AG_ERR_IO, "audit: cannot start the export "
                          "thread");
    }
    if (rc != AG_OK) {
        exporter_free(x);
        return rc;
    }
    *out = x;
    return AG_OK;
}

void audit__exporter_kick(AuditExporter *x)
{
    if (x == NULL) {
        return;
    }
    pthread_mutex_lock(&x->lock);
    x->kicked = true;
    pthread_cond_signal(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

void audit__exporter_stop(AuditExporter *x, uint32_t drain_ms)
{
    if (x == NULL) {
        return;
    }
    pthread_mutex_lock(&x->lock);
    x->stop = true;
    x->stop_deadline_ms = mono_ms() + drain_ms;
    pthread_cond_signal(&x->cond);
    pthread_mutex_unlock(&x->lock);
    pthread_join(x->thread, NULL);
    exporter_free(x);
}

void audit__exporter_stats(AuditExporter *x, AuditStats *st)
{
    if (x == NULL) {
        return;
    }
    pthread_mutex_lock(&x->lock);
    st->exported_seq = x->cursor;
    st->export_connected = x->connected;
    pthread_mutex_unlock(&x->lock);
}
