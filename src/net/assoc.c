/*
 * assoc.c — an association over a transport: the PS3.8 §9.2 state machine
 * reduced to the transitions an application entity actually drives, PDU
 * framing with Maximum Length enforcement both ways, ARTIM and idle timers
 * as deadlines (so a peer that trickles one byte a minute cannot hold an
 * association open: SECURITY.md rule 10), and DIMSE message assembly.
 *
 * States (PS3.8 Table 9-10) are kept implicitly by which function runs:
 * Sta2/Sta3 in net_accept, Sta5 in net_request, Sta6 (data transfer) in
 * the recv/send calls, Sta7 in net_release, Sta13 after an abort.  A PDU
 * that is not valid in the current state is answered with A-ABORT
 * (provider, unexpected PDU) as the table's AA-1/AA-8 actions require.
 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ASSOC_PDU_MAX (1u << 20)   /* RQ/AC incl. user identity tokens */
#define COMMAND_MAX (64u << 10)    /* a command set is small */
#define SEND_CHUNK_MAX (1u << 20)  /* when the peer sets no Maximum Length */

struct NetAssoc {
    NetTransport t;
    NetLimits lim;
    bool acceptor;
    NetAssocParams rq;             /* the A-ASSOCIATE-RQ (either side) */
    NetAssocParams ac;             /* the A-ASSOCIATE-AC */
    uint32_t send_max;             /* peer's Maximum Length, or our cap */
    /* receive buffer holding the current PDU body */
    uint8_t *pdu;
    uint32_t pdu_cap;
    uint8_t pdu_type;
    uint32_t pdu_len;
    size_t pdv_pos;                /* next PDV in a P-DATA body */
    bool have_pdu;                 /* pdu holds an unconsumed P-DATA */
    bool done;                     /* released, rejected or aborted */
    bool heard;                    /* the peer has sent at least a byte */
    /* send buffer */
    uint8_t *out;
    uint32_t out_cap;
};

/* ---- transport ----------------------------------------------------------- */

static long plain_read(void *ctx, void *buf, size_t n)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0 || errno != EINTR) {
            return (long)r;
        }
    }
}

static long plain_read_nowait(void *ctx, void *buf, size_t n)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR) {
            return (long)r;
        }
    }
}

static long plain_write(void *ctx, const void *buf, size_t n)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = send(fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0 || errno != EINTR) {
            return (long)r;
        }
    }
}

static long plain_write_more(void *ctx, const void *buf, size_t n)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = send(fd, buf, n, MSG_NOSIGNAL | MSG_MORE);
        if (r >= 0 || errno != EINTR) {
            return (long)r;
        }
    }
}

static long plain_send_file(void *ctx, int in_fd, uint64_t *off, size_t n)
{
    int fd = *(int *)ctx;
    off_t o = (off_t)*off;
    for (;;) {
        ssize_t r = sendfile(fd, in_fd, &o, n);
        if (r >= 0 || errno != EINTR) {
            if (r > 0) {
                *off = (uint64_t)o;
            }
            return (long)r;
        }
    }
}

int net_connect(const char *host, uint16_t port, uint32_t timeout_ms,
                AgError *err)
{
    char ps[8];
    ag_fmt(ps, sizeof ps, "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0) {
        return ag_error_set(err, AG_ERR_IO, "%.64s: %s", host,
                            gai_strerror(g));
    }
    int fd = -1;
    for (struct addrinfo *r = res; r != NULL && fd < 0; r = r->ai_next) {
        fd = socket(r->ai_family, r->ai_socktype | SOCK_CLOEXEC |
                    SOCK_NONBLOCK, r->ai_protocol);
        if (fd < 0) {
            continue;
        }
        int c = connect(fd, r->ai_addr, r->ai_addrlen);
        if (c != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        if (c != 0) {   /* in progress: wait, bounded */
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (poll(&p, 1, (int)timeout_ms) != 1 ||
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 ||
                soerr != 0) {
                errno = soerr != 0 ? soerr : ETIMEDOUT;
                close(fd);
                fd = -1;
                continue;
            }
        }
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "connect %.64s:%u", host, port);
    }
    return fd;
}

void net_transport_plain(NetTransport *t, int fd)
{
    /* Without TCP_NODELAY each response waits ~40 ms for a delayed ACK. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    t->fd = fd;
    t->read = plain_read;
    t->write = plain_write;
    t->pending = NULL;
    t->write_more = plain_write_more;
    t->send_file = plain_send_file;
    t->read_nowait = plain_read_nowait;
    t->ctx = &t->fd;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready or the deadline passes. */
static int wait_fd(NetAssoc *a, short events, int64_t deadline, AgError *err)
{
    if (events == POLLIN && a->t.pending != NULL && a->t.pending(a->t.ctx)) {
        return AG_OK;
    }
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return ag_error_set(err, AG_ERR_LIMIT, "peer timed out");
        }
        struct pollfd p = {.fd = a->t.fd, .events = events};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0) {
            return AG_OK;
        }
        if (r < 0 && errno != EINTR) {
            return ag_error_errno(err, AG_ERR_IO, "poll");
        }
    }
}

static int read_full(NetAssoc *a, uint8_t *buf, size_t n, int64_t deadline,
                     AgError *err)
{
    size_t got = 0;
    /* With read_nowait, wait only when nothing has arrived yet: a peer
     * sending a data set keeps the socket full, and a poll before every
     * read would double the system calls (and take the socket's wait-queue
     * lock, contended with the sender's wake-ups). */
    bool wait = a->t.read_nowait == NULL;
    while (got < n) {
        if (wait) {
            int rc = wait_fd(a, POLLIN, deadline, err);
            if (rc != AG_OK) {
                return rc;
            }
        }
        long r = wait ? a->t.read(a->t.ctx, buf + got, n - got)
                      : a->t.read_nowait(a->t.ctx, buf + got, n - got);
        if (r == 0) {
            return ag_error_set(err, AG_ERR_EOF, "peer closed the connection");
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                wait = true;
                continue;
            }
            return ag_error_errno(err, AG_ERR_IO, "receive");
        }
        got += (size_t)r;
        a->heard = true;
        wait = a->t.read_nowait == NULL;
    }
    return AG_OK;
}

static int write_some(NetAssoc *a, const uint8_t *buf, size_t n, bool more,
                      AgError *err)
{
    int64_t deadline = now_ms() + a->lim.idle_ms;
    size_t put = 0;
    while (put < n) {
        long w = more && a->t.write_more != NULL
                     ? a->t.write_more(a->t.ctx, buf + put, n - put)
                     : a->t.write(a->t.ctx, buf + put, n - put);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(a, POLLOUT, deadline, err);
            if (rc != AG_OK) {
                return rc;
            }
            continue;
        }
        if (w <= 0) {
            return ag_error_errno(err, AG_ERR_IO, "send");
        }
        put += (size_t)w;
    }
    return AG_OK;
}

static int write_full(NetAssoc *a, const uint8_t *buf, size_t n,
                      AgError *err)
{
    return write_some(a, buf, n, false, err);
}

/* Send n bytes of in_fd from off through the transport's send_file. */
static int send_file_full(NetAssoc *a, int in_fd, uint64_t off, size_t n,
                          AgError *err)
{
    int64_t deadline = now_ms() + a->lim.idle_ms;
    while (n > 0) {
        long w = a->t.send_file(a->t.ctx, in_fd, &off, n);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(a, POLLOUT, deadline, err);
            if (rc != AG_OK) {
                return rc;
            }
            continue;
        }
        if (w < 0) {
            return ag_error_errno(err, AG_ERR_IO, "sendfile");
        }
        if (w == 0) {
            return ag_error_set(err, AG_ERR_IO, "sendfile: the file "
                                "ended early");
        }
        n -= (size_t)w;
    }
    return AG_OK;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t rd_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static int send_buf(NetAssoc *a, AgBuf *b, AgError *err)
{
    return write_full(a, b->data, b->len, err);
}

void net_abort(NetAssoc *a, uint8_t source, uint8_t reason)
{
    if (a == NULL || a->done) {
        return;
    }
    AgBuf b;
    ag_buf_init(&b, 64);
    if (net_encode_abort(source, reason, &b, NULL) == AG_OK) {
        write_full(a, b.data, b.len, NULL);
    }
    ag_buf_deinit(&b);
    a->done = true;
}

/* Abort for a protocol violation and report it. */
static int violation(NetAssoc *a, uint8_t reason, AgError *err,
                     const char *what)
{
    net_abort(a, NET_ABORT_SOURCE_PROVIDER, reason);
    return ag_error_set(err, AG_ERR_PARSE, "%s; association aborted", what);
}

/*
 * Read one PDU into a->pdu.  Lengths are checked against the limits before
 * anything is allocated or read (SECURITY.md rule 1).
 */
static int read_pdu(NetAssoc *a, int64_t deadline, AgError *err)
{
    uint8_t h[NET_PDU_HEADER];
    int rc = read_full(a, h, sizeof h, deadline, err);
    if (rc != AG_OK) {
        return rc;
    }
    uint8_t type = h[0];
    uint32_t len = rd_be32(h + 2);
    if (type < NET_PDU_ASSOCIATE_RQ || type > NET_PDU_ABORT) {
        return violation(a, NET_ABORT_UNRECOGNIZED_PDU, err,
                         "unrecognised PDU type");
    }
    uint32_t cap = type == NET_PDU_P_DATA_TF ? a->lim.max_pdu
                   : (type == NET_PDU_ASSOCIATE_RQ ||
                      type == NET_PDU_ASSOCIATE_AC) ? ASSOC_PDU_MAX
                                                    : 64;
    if (len > cap) {
        return violation(a, NET_ABORT_INVALID_PARAM, err,
                         "PDU longer than the maximum length");
    }
    if (len > a->pdu_cap) {
        uint8_t *p = ag_realloc(a->pdu, len);
        if (p == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
        }
        a->pdu = p;
        a->pdu_cap = len;
    }
    rc = read_full(a, a->pdu, len, deadline, err);
    if (rc != AG_OK) {
        return rc;
    }
    a->pdu_type = type;
    a->pdu_len = len;
    a->pdv_pos = 0;
    return AG_OK;
}

static NetAssoc *assoc_new(const NetTransport *t, const NetLimits *lim)
{
    NetAssoc *a = ag_calloc(1, sizeof *a);
    if (a == NULL) {
        return NULL;
    }
    a->t = *t;
    if (t->ctx == &t->fd) {
        a->t.ctx = &a->t.fd;   /* plain transport points at its own fd */
    }
    if (lim != NULL) {
        a->lim = *lim;
    }
    if (a->lim.max_pdu == 0) {
        a->lim.max_pdu = NET_DEFAULT_MAX_PDU;
    }
    if (a->lim.artim_ms == 0) {
        a->lim.artim_ms = 30000;
    }
    if (a->lim.idle_ms == 0) {
        a->lim.idle_ms = 300000;
    }
    return a;
}

void net_assoc_free(NetAssoc *a)
{
    if (a != NULL) {
        ag_free(a->pdu);
        ag_free(a->out);
        ag_free(a);
    }
}

static uint32_t peer_limit(uint32_t announced)
{
    /* 0 means "no limit" (PS3.8 D.1): choose a sane chunk ourselves. */
    if (announced == 0 || announced > SEND_CHUNK_MAX) {
        return SEND_CHUNK_MAX;
    }
    return announced < 64 ? 64 : announced;
}

/* ---- establishment ------------------------------------------------------ */

int net_accept(const NetTransport *t, const NetLimits *lim, NetAssoc **out,
               NetAssocParams *rq, AgError *err)
{
    NetAssoc *a = assoc_new(t, lim);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    a->acceptor = true;
    *out = a;
    int rc = read_pdu(a, now_ms() + a->lim.artim_ms, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (a->pdu_type != NET_PDU_ASSOCIATE_RQ) {
        return violation(a, NET_ABORT_UNEXPECTED_PDU, err,
                         "expected A-ASSOCIATE-RQ");
    }
    rc = net_parse_assoc(NET_PDU_ASSOCIATE_RQ, a->pdu, a->pdu_len, &a->rq,
                         err);
    if (rc == AG_ERR_UNSUPPORTED) {
        NetReject rj = {NET_RJ_PERMANENT, NET_RJ_SOURCE_ACSE, 2};
        net_send_reject(a, &rj, NULL);
        return rc;
    }
    if (rc != AG_OK) {
        net_abort(a, NET_ABORT_SOURCE_PROVIDER, NET_ABORT_INVALID_PARAM);
        return rc;
    }
    a->send_max = peer_limit(a->rq.max_pdu);
    memcpy(rq, &a->rq, sizeof *rq);
    return AG_OK;
}

int net_send_accept(NetAssoc *a, const NetAssocParams *ac, AgError *err)
{
    memcpy(&a->ac, ac, sizeof a->ac);
    a->ac.max_pdu = a->lim.max_pdu;
    AgBuf b;
    ag_buf_init(&b, ASSOC_PDU_MAX);
    int rc = net_encode_assoc(NET_PDU_ASSOCIATE_AC, &a->ac, &b, err);
    if (rc == AG_OK) {
        rc = send_buf(a, &b, err);
    }
    ag_buf_deinit(&b);
    return rc;
}

int net_send_reject(NetAssoc *a, const NetReject *rj, AgError *err)
{
    AgBuf b;
    ag_buf_init(&b, 64);
    int rc = net_encode_reject(rj, &b, err);
    if (rc == AG_OK) {
        rc = send_buf(a, &b, err);
    }
    ag_buf_deinit(&b);
    a->done = true;
    return rc;
}

int net_request(const NetTransport *t, const NetLimits *lim,
                const NetAssocParams *rq, NetAssoc **out, NetAssocParams *ac,
                NetReject *rj, AgError *err)
{
    NetAssoc *a = assoc_new(t, lim);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    *out = a;
    memcpy(&a->rq, rq, sizeof a->rq);
    a->rq.max_pdu = a->lim.max_pdu;
    AgBuf b;
    ag_buf_init(&b, ASSOC_PDU_MAX);
    int rc = net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &a->rq, &b, err);
    if (rc == AG_OK) {
        rc = send_buf(a, &b, err);
    }
    ag_buf_deinit(&b);
    if (rc == AG_OK) {
        rc = read_pdu(a, now_ms() + a->lim.artim_ms, err);
    }
    if (rc != AG_OK) {
        return rc;
    }
    switch (a->pdu_type) {
    case NET_PDU_ASSOCIATE_AC:
        rc = net_parse_assoc(NET_PDU_ASSOCIATE_AC, a->pdu, a->pdu_len, &a->ac,
                             err);
        if (rc != AG_OK) {
            net_abort(a, NET_ABORT_SOURCE_PROVIDER, NET_ABORT_INVALID_PARAM);
            return rc;
        }
        a->send_max = peer_limit(a->ac.max_pdu);
        if (ac != NULL) {
            memcpy(ac, &a->ac, sizeof *ac);
        }
        return AG_OK;
    case NET_PDU_ASSOCIATE_RJ:
        a->done = true;
        if (net_parse_reject(a->pdu, a->pdu_len, rj, err) == AG_OK) {
            return ag_error_set(err, AG_ERR_INVALID, "association rejected "
                                "(result %u, source %u, reason %u)",
                                rj->result, rj->source, rj->reason);
        }
        return AG_ERR_PARSE;
    case NET_PDU_ABORT:
        a->done = true;
        return ag_error_set(err, AG_ERR_IO, "peer aborted the association");
    default:
        return violation(a, NET_ABORT_UNEXPECTED_PDU, err,
                         "unexpected PDU during association request");
    }
}

bool net_assoc_silent(const NetAssoc *a)
{
    return !a->heard;
}

const NetAssocParams *net_assoc_peer(const NetAssoc *a)
{
    return a->acceptor ? &a->rq : &a->ac;
}

static const NetPresContext *accepted(const NetAssoc *a, uint8_t id)
{
    for (uint8_t i = 0; i < a->ac.ncontexts; i++) {
        const NetPresContext *c = &a->ac.contexts[i];
        if (c->id == id) {
            return c->result == NET_PC_ACCEPTANCE && c->nsyntaxes > 0 ? c
                                                                      : NULL;
        }
    }
    return NULL;
}

const char *net_assoc_context_ts(const NetAssoc *a, uint8_t id)
{
    const NetPresContext *c = accepted(a, id);
    return c != NULL ? c->syntaxes[0] : NULL;
}

const char *net_assoc_context_as(const NetAssoc *a, uint8_t id)
{
    if (accepted(a, id) == NULL) {
        return NULL;
    }
    for (uint8_t i = 0; i < a->rq.ncontexts; i++) {
        if (a->rq.contexts[i].id == id) {
            return a->rq.contexts[i].abstract_syntax;
        }
    }
    return NULL;
}

uint8_t net_assoc_find_context(const NetAssoc *a, const char *as,
                               const char *ts)
{
    for (uint8_t i = 0; i < a->rq.ncontexts; i++) {
        const NetPresContext *r = &a->rq.contexts[i];
        if (strcmp(r->abstract_syntax, as) != 0) {
            continue;
        }
        const char *got = net_assoc_context_ts(a, r->id);
        if (got != NULL && (ts == NULL || strcmp(got, ts) == 0)) {
            return r->id;
        }
    }
    return 0;
}

/* ---- data transfer ------------------------------------------------------ */

/*
 * Next PDV, reading PDUs as needed.  RELEASE-RQ is answered here (EOF),
 * ABORT reported (IO); anything else out of place aborts.
 */
static int next_pdv(NetAssoc *a, NetPdv *pdv, int64_t deadline, AgError *err)
{
    for (;;) {
        if (a->have_pdu) {
            int rc = net_next_pdv(a->pdu, a->pdu_len, &a->pdv_pos, pdv, err);
            if (rc == AG_OK) {
                if (net_assoc_context_ts(a, pdv->context_id) == NULL) {
                    return violation(a, NET_ABORT_INVALID_PARAM, err,
                                     "PDV on a context that was not "
                                     "accepted");
                }
                return AG_OK;
            }
            a->have_pdu = false;
            if (rc != AG_ERR_EOF) {
                return violation(a, NET_ABORT_INVALID_PARAM, err, err->msg);
            }
        }
        if (a->done) {
            return ag_error_set(err, AG_ERR_IO, "association is finished");
        }
        int rc = read_pdu(a, deadline, err);
        if (rc != AG_OK) {
            return rc;
        }
        switch (a->pdu_type) {
        case NET_PDU_P_DATA_TF:
            a->have_pdu = true;
            break;
        case NET_PDU_RELEASE_RQ: {
            AgBuf b;
            ag_buf_init(&b, 64);
            if (net_encode_release(NET_PDU_RELEASE_RP, &b, NULL) == AG_OK) {
                send_buf(a, &b, NULL);
            }
            ag_buf_deinit(&b);
            a->done = true;
            return ag_error_set(err, AG_ERR_EOF, "peer released the "
                                "association");
        }
        case NET_PDU_ABORT:
            a->done = true;
            return ag_error_set(err, AG_ERR_IO, "peer aborted the "
                                "association");
        default:
            return violation(a, NET_ABORT_UNEXPECTED_PDU, err,
                             "unexpected PDU during data transfer");
        }
    }
}

int net_recv_command(NetAssoc *a, NetMessage *msg, AgError *err)
{
    AgBuf cmd;
    ag_buf_init(&cmd, COMMAND_MAX);
    int64_t deadline = now_ms() + a->lim.idle_ms;
    uint8_t ctx = 0;
    int rc;
    for (;;) {
        NetPdv pdv;
        rc = next_pdv(a, &pdv, deadline, err);
        if (rc != AG_OK) {
            break;
        }
        if (!pdv.command) {
            rc = violation(a, NET_ABORT_UNEXPECTED_PARAM, err,
                           "data set fragment where a command was expected");
            break;
        }
        if (ctx != 0 && pdv.context_id != ctx) {
            rc = violation(a, NET_ABORT_INVALID_PARAM, err,
                           "command fragments on different contexts");
            break;
        }
        ctx = pdv.context_id;
        if (ag_buf_append(&cmd, pdv.data, pdv.len) != AG_OK) {
            rc = violation(a, NET_ABORT_INVALID_PARAM, err,
                           "command set too long");
            break;
        }
        if (pdv.last) {
            memset(msg, 0, sizeof *msg);
            msg->context_id = ctx;
            rc = dimse_command_parse(cmd.data, cmd.len, &msg->cmd, err);
            if (rc != AG_OK) {
                rc = violation(a, NET_ABORT_INVALID_PARAM, err, err->msg);
                break;
            }
            msg->has_dataset = msg->cmd.dataset_type != DIMSE_NO_DATASET;
            break;
        }
    }
    ag_buf_deinit(&cmd);
    return rc;
}

int net_recv_dataset(NetAssoc *a, uint8_t context_id, NetDataSink sink,
                     void *ctx, AgError *err)
{
    int64_t deadline = now_ms() + a->lim.idle_ms;
    bool sink_ok = sink != NULL;
    for (;;) {
        NetPdv pdv;
        int rc = next_pdv(a, &pdv, deadline, err);
        if (rc != AG_OK) {
            return rc;
        }
        if (pdv.command || pdv.context_id != context_id) {
            return violation(a, NET_ABORT_UNEXPECTED_PARAM, err,
                             "expected a data set fragment");
        }
        if (sink_ok && pdv.len > 0) {
            AgError sink_err;
            sink_ok = sink(ctx, pdv.data, pdv.len, &sink_err) == AG_OK;
        }
        /* Each fragment resets the idle timer: a large data set may take
         * long, a silent peer may not. */
        deadline = now_ms() + a->lim.idle_ms;
        if (pdv.last) {
            return AG_OK;
        }
    }
}

bool net_cancel_requested(NetAssoc *a, uint16_t message_id)
{
    if (a->done) {
        return false;
    }
    if (a->have_pdu && a->pdv_pos < a->pdu_len) {
        return false;   /* something is already waiting: let recv see it */
    }
    a->have_pdu = false;
    struct pollfd p = {.fd = a->t.fd, .events = POLLIN};
    bool ready = (a->t.pending != NULL && a->t.pending(a->t.ctx)) ||
                 poll(&p, 1, 0) > 0;
    if (!ready) {
        return false;
    }
    AgError err;
    if (read_pdu(a, now_ms() + a->lim.artim_ms, &err) != AG_OK) {
        return false;
    }
    if (a->pdu_type == NET_PDU_ABORT) {
        a->done = true;
        return true;   /* nobody left to answer: stop as for a cancel */
    }
    if (a->pdu_type != NET_PDU_P_DATA_TF) {
        /* RELEASE-RQ in the middle of an operation: keep it for recv. */
        if (a->pdu_type == NET_PDU_RELEASE_RQ) {
            return true;
        }
        return false;
    }
    a->have_pdu = true;
    size_t pos = 0;
    NetPdv pdv;
    if (net_next_pdv(a->pdu, a->pdu_len, &pos, &pdv, &err) == AG_OK &&
        pdv.command && pdv.last) {
        DimseCommand c;
        if (dimse_command_parse(pdv.data, pdv.len, &c, &err) == AG_OK &&
            c.command == DIMSE_C_CANCEL_RQ &&
            c.responded_id == message_id) {
            a->pdv_pos = pos;
            if (pos >= a->pdu_len) {
                a->have_pdu = false;
            }
            return true;
        }
    }
    return false;
}

/* Send bytes as PDVs of at most the peer's Maximum Length. */
/* The 12 bytes before a PDV's data: P-DATA-TF PDU header (PS3.8 9.3.5)
 * and the PDV item header with its message control header (E.2). */
static void pdv_header(uint8_t h[12], uint8_t context_id, bool command,
                       uint32_t chunk, bool final)
{
    h[0] = NET_PDU_P_DATA_TF;
    h[1] = 0;
    be32(h + 2, chunk + 6);
    be32(h + 6, chunk + 2);
    h[10] = context_id;
    h[11] = (uint8_t)((command ? 1 : 0) | (final ? 2 : 0));
}

/* Small PDVs go out in one write with their header: with TCP_NODELAY a
 * separate 12-byte write would be a packet of its own. */
#define PDV_COALESCE 4096

static int send_pdvs(NetAssoc *a, uint8_t context_id, bool command,
                     const uint8_t *p, size_t n, bool last, AgError *err)
{
    uint32_t max_data = a->send_max - 6;   /* PDV item header */
    do {
        uint32_t chunk = n > max_data ? max_data : (uint32_t)n;
        bool final = last && chunk == n;
        uint8_t h[12 + PDV_COALESCE];
        pdv_header(h, context_id, command, chunk, final);
        int rc;
        if (chunk <= PDV_COALESCE) {
            if (chunk > 0) {
                memcpy(h + 12, p, chunk);
            }
            rc = write_full(a, h, 12 + (size_t)chunk, err);
        } else {
            rc = write_some(a, h, 12, true, err);
            if (rc == AG_OK) {
                rc = write_full(a, p, chunk, err);
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        p += chunk;
        n -= chunk;
    } while (n > 0);
    return AG_OK;
}

int net_send_command(NetAssoc *a, uint8_t context_id, const DimseCommand *c,
                     AgError *err)
{
    AgBuf b;
    ag_buf_init(&b, COMMAND_MAX);
    int rc = dimse_command_encode(c, &b, err);
    if (rc == AG_OK) {
        rc = send_pdvs(a, context_id, true, b.data, b.len, true, err);
    }
    ag_buf_deinit(&b);
    return rc;
}

int net_send_dataset_buf(NetAssoc *a, uint8_t context_id, const uint8_t *p,
                         size_t n, AgError *err)
{
    return send_pdvs(a, context_id, false, p, n, true, err);
}

/* Fill buf from src until full or the end; *end when the source is done. */
static int fill(NetDataSource src, void *ctx, uint8_t *buf, size_t cap,
                size_t *got, bool *end, AgError *err)
{
    *got = 0;
    *end = false;
    while (*got < cap) {
        size_t n = 0;
        int rc = src(ctx, buf + *got, cap - *got, &n, err);
        if (rc != AG_OK) {
            return rc;
        }
        if (n == 0) {
            *end = true;
            break;
        }
        *got += n;
    }
    return AG_OK;
}

int net_send_dataset(NetAssoc *a, uint8_t context_id, NetDataSource src,
                     void *ctx, AgError *err)
{
    size_t cap = a->send_max - 6;   /* one PDV per PDU */
    size_t room = 12 + cap;         /* its header in front: one write */
    if (a->out_cap < 2 * room) {
        uint8_t *p = ag_realloc(a->out, 2 * room);
        if (p == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
        }
        a->out = p;
        a->out_cap = (uint32_t)(2 * room);
    }
    /* Two buffers: a chunk is sent only once we know whether another
     * follows, so that the last one carries the "last" bit. */
    uint8_t *cur = a->out, *next = a->out + room;
    size_t cur_n, next_n;
    bool end;
    int rc = fill(src, ctx, cur + 12, cap, &cur_n, &end, err);
    while (rc == AG_OK) {
        if (end) {
            pdv_header(cur, context_id, false, (uint32_t)cur_n, true);
            return write_full(a, cur, 12 + cur_n, err);
        }
        rc = fill(src, ctx, next + 12, cap, &next_n, &end, err);
        if (rc != AG_OK) {
            break;
        }
        bool last = end && next_n == 0;
        pdv_header(cur, context_id, false, (uint32_t)cur_n, last);
        rc = write_full(a, cur, 12 + cur_n, err);
        if (last || rc != AG_OK) {
            return rc;
        }
        uint8_t *t = cur;
        cur = next;
        next = t;
        cur_n = next_n;
    }
    return rc;
}

typedef struct FdSource {
    int fd;
    uint64_t pos, end;
} FdSource;

static int fd_read(void *ctx, uint8_t *buf, size_t cap, size_t *got,
                   AgError *err)
{
    FdSource *f = ctx;
    size_t want = f->end - f->pos < cap ? (size_t)(f->end - f->pos) : cap;
    *got = 0;
    while (want > 0) {
        ssize_t n = pread(f->fd, buf, want, (off_t)f->pos);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return ag_error_errno(err, AG_ERR_IO, "read");
        }
        if (n == 0) {
            return ag_error_set(err, AG_ERR_IO, "read: the file ended "
                                "early");
        }
        *got = (size_t)n;
        f->pos += (uint64_t)n;
        break;
    }
    return AG_OK;
}

int net_send_dataset_fd(NetAssoc *a, uint8_t context_id, int fd,
                        uint64_t off, uint64_t len, AgError *err)
{
    if (a->t.send_file == NULL || a->t.write_more == NULL || len == 0) {
        FdSource src = {.fd = fd, .pos = off, .end = off + len};
        return net_send_dataset(a, context_id, fd_read, &src, err);
    }
    /* Each PDU: its header (held back for the data, MSG_MORE), then the
     * data from the page cache (sendfile); the last PDV is flagged. */
    uint32_t max_data = a->send_max - 6;
    while (len > 0) {
        uint32_t chunk = len > max_data ? max_data : (uint32_t)len;
        uint8_t h[12];
        pdv_header(h, context_id, false, chunk, chunk == len);
        int rc = write_some(a, h, sizeof h, true, err);
        if (rc == AG_OK) {
            rc = send_file_full(a, fd, off, chunk, err);
        }
        if (rc != AG_OK) {
            return rc;
        }
        off += chunk;
        len -= chunk;
    }
    return AG_OK;
}

int net_release(NetAssoc *a, AgError *err)
{
    AgBuf b;
    ag_buf_init(&b, 64);
    int rc = net_encode_release(NET_PDU_RELEASE_RQ, &b, err);
    if (rc == AG_OK) {
        rc = send_buf(a, &b, err);
    }
    ag_buf_deinit(&b);
    int64_t deadline = now_ms() + a->lim.artim_ms;
    while (rc == AG_OK) {
        rc = read_pdu(a, deadline, err);
        if (rc != AG_OK) {
            break;
        }
        if (a->pdu_type == NET_PDU_RELEASE_RP) {
            a->done = true;
            return AG_OK;
        }
        if (a->pdu_type == NET_PDU_ABORT) {
            a->done = true;
            return ag_error_set(err, AG_ERR_IO, "peer aborted the release");
        }
        /* P-DATA still in flight from the peer: drop it (Sta7). */
    }
    return rc;
}
