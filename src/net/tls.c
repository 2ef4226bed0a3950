/*
 * tls.c — TLS for DICOM (PS3.15 B.1, BCP 195 profile) with GnuTLS, the one
 * TLS stack of DESIGN.md §7.  Sessions plug into associations as a
 * NetTransport, so the upper layer neither knows nor cares.
 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <string.h>
#include <time.h>

/* TLS 1.3 and 1.2 only; ECDHE with AEAD ciphers (SECURITY.md rule 7). */
#define PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
                 "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-CIPHER-ALL:" \
                 "+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:" \
                 "-MAC-ALL:+AEAD:%SERVER_PRECEDENCE"

struct NetTls {
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t prio;
    bool server;
    bool verify_peer;
};

struct NetTlsSession {
    gnutls_session_t s;
    int fd;
};

int net_tls_create(const NetTlsConfig *cfg, bool server, NetTls **out,
                   AgError *err)
{
    NetTls *t = ag_calloc(1, sizeof *t);
    if (t == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "tls: out of memory");
    }
    t->server = server;
    t->verify_peer = cfg->verify_peer;
    int g = gnutls_certificate_allocate_credentials(&t->creds);
    if (g == 0 && cfg->cert_file != NULL) {
        g = gnutls_certificate_set_x509_key_file(t->creds, cfg->cert_file,
                                                 cfg->key_file,
                                                 GNUTLS_X509_FMT_PEM);
    }
    if (g >= 0 && cfg->ca_file != NULL) {
        g = gnutls_certificate_set_x509_trust_file(t->creds, cfg->ca_file,
                                                   GNUTLS_X509_FMT_PEM);
        if (g == 0) {
            g = GNUTLS_E_FILE_ERROR;   /* no CA in the file */
        }
    }
    if (g >= 0) {
        g = gnutls_priority_init(&t->prio, PRIORITY, NULL);
    }
    if (g < 0) {
        int rc = ag_error_set(err, AG_ERR_INVALID, "tls: %s",
                              gnutls_strerror(g));
        net_tls_free(t);
        return rc;
    }
    if (server && cfg->cert_file == NULL) {
        net_tls_free(t);
        return ag_error_set(err, AG_ERR_INVALID, "tls: a server needs a "
                            "certificate and key");
    }
    *out = t;
    return AG_OK;
}

void net_tls_free(NetTls *t)
{
    if (t == NULL) {
        return;
    }
    if (t->prio != NULL) {
        gnutls_priority_deinit(t->prio);
    }
    if (t->creds != NULL) {
        gnutls_certificate_free_credentials(t->creds);
    }
    ag_free(t);
}

static long tls_read(void *ctx, void *buf, size_t n)
{
    NetTlsSession *s = ctx;
    for (;;) {
        ssize_t r = gnutls_record_recv(s->s, buf, n);
        if (r >= 0) {
            return (long)r;
        }
        if (r == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (r == GNUTLS_E_AGAIN) {
            errno = EAGAIN;
            return -1;
        }
        if (r == GNUTLS_E_PREMATURE_TERMINATION) {
            return 0;
        }
        errno = EIO;
        return -1;
    }
}

static long tls_write(void *ctx, const void *buf, size_t n)
{
    NetTlsSession *s = ctx;
    for (;;) {
        ssize_t r = gnutls_record_send(s->s, buf, n);
        if (r >= 0) {
            return (long)r;
        }
        if (r == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (r == GNUTLS_E_AGAIN) {
            errno = EAGAIN;
            return -1;
        }
        errno = EIO;
        return -1;
    }
}

static bool tls_pending(void *ctx)
{
    NetTlsSession *s = ctx;
    return gnutls_record_check_pending(s->s) > 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Subject CN of the verified peer certificate. */
static void peer_name(gnutls_session_t s, char *cn, size_t cap)
{
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    if (chain == NULL || n == 0 || gnutls_x509_crt_init(&crt) < 0) {
        return;
    }
    size_t len = cap;
    if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) >= 0) {
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0,
                                      cn, &len);
    }
    gnutls_x509_crt_deinit(crt);
}

int net_tls_start(NetTls *t, int fd, const char *server_name,
                  uint32_t timeout_ms, NetTransport *tr, NetTlsSession **out,
                  char *peer_cn, size_t cn_cap, AgError *err)
{
    NetTlsSession *s = ag_calloc(1, sizeof *s);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "tls: out of memory");
    }
    s->fd = fd;
    int g = gnutls_init(&s->s, (t->server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                                   GNUTLS_NONBLOCK);
    if (g == 0) {
        g = gnutls_priority_set(s->s, t->prio);
    }
    if (g == 0) {
        g = gnutls_credentials_set(s->s, GNUTLS_CRD_CERTIFICATE, t->creds);
    }
    if (g == 0 && t->server && t->verify_peer) {
        gnutls_certificate_server_set_request(s->s, GNUTLS_CERT_REQUIRE);
    }
    if (g == 0 && !t->server && t->verify_peer && server_name != NULL) {
        gnutls_session_set_verify_cert(s->s, server_name, 0);
        gnutls_server_name_set(s->s, GNUTLS_NAME_DNS, server_name,
                               strlen(server_name));
    }
    if (g != 0) {
        int rc = ag_error_set(err, AG_ERR_INVALID, "tls: %s",
                              gnutls_strerror(g));
        gnutls_deinit(s->s);
        ag_free(s);
        return rc;
    }
    gnutls_transport_set_int(s->s, fd);
    /* Non-blocking while shaking hands, so the deadline holds against a
     * peer that connects and says nothing (SECURITY.md rule 10). */
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int64_t deadline = now_ms() + timeout_ms;
    do {
        g = gnutls_handshake(s->s);
        if (g == GNUTLS_E_AGAIN || g == GNUTLS_E_INTERRUPTED) {
            int64_t left = deadline - now_ms();
            struct pollfd p = {.fd = fd,
                               .events = gnutls_record_get_direction(s->s)
                                             ? POLLOUT : POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
                g = GNUTLS_E_TIMEDOUT;
                break;
            }
        }
    } while (g < 0 && gnutls_error_is_fatal(g) == 0);
    fcntl(fd, F_SETFL, fl);
    if (g == 0 && t->server && t->verify_peer) {
        unsigned status = 0;
        if (gnutls_certificate_verify_peers2(s->s, &status) < 0 ||
            status != 0) {
            g = GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
        }
    }
    if (g < 0) {
        int rc = ag_error_set(err, AG_ERR_IO, "tls handshake: %s",
                              gnutls_strerror(g));
        gnutls_deinit(s->s);
        ag_free(s);
        return rc;
    }
    if (peer_cn != NULL && cn_cap > 0) {
        peer_cn[0] = '\0';
        if (t->verify_peer) {
            peer_name(s->s, peer_cn, cn_cap);
        }
    }
    tr->fd = fd;
    tr->read = tls_read;
    tr->write = tls_write;
    tr->pending = tls_pending;
    tr->write_more = NULL;     /* every byte is encrypted: no sendfile */
    tr->send_file = NULL;
    tr->read_nowait = NULL;   /* records: tls_read and pending know */
    tr->ctx = s;
    *out = s;
    return AG_OK;
}

void net_tls_end(NetTlsSession *s)
{
    if (s == NULL) {
        return;
    }
    gnutls_bye(s->s, GNUTLS_SHUT_WR);
    gnutls_deinit(s->s);
    ag_free(s);
}
