/*
 * server.c — the DICOM listener: accept, negotiate, dispatch.
 *
 * One thread per association (bounded), because each association is a
 * sequence of blocking exchanges and ingest blocks on fsync anyway; the
 * store's group commit turns many such threads into few transactions.
 */
#include "svc_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VERIFICATION_CLASS "1.2.840.10008.1.1"

#define PREFER_MAX 16

struct SvcServer {
    SvcConfig cfg;
    char prefer[PREFER_MAX][65];  /* --prefer-ts, in order */
    int nprefer;
    char aet[17];
    char bind_addr[64];
    int listen_fd;
    uint16_t port;
    pthread_t acceptor;
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t idle;          /* signalled when active drops */
    uint32_t active;
    int fds[1024];                /* sockets of running associations */
    SvcStats stats;
};

Store *svc__store_of(SvcAssoc *sa)
{
    return sa->server->cfg.store;
}

void svc__count(SvcAssoc *sa, int what)
{
    SvcServer *s = sa->server;
    pthread_mutex_lock(&s->lock);
    switch (what) {
    case SVC_COUNT_ECHO: s->stats.echo++; break;
    case SVC_COUNT_STORED: s->stats.stored++; break;
    default: s->stats.store_failed++; break;
    }
    pthread_mutex_unlock(&s->lock);
}

void svc_server_stats(SvcServer *s, SvcStats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    out->active = s->active;
    pthread_mutex_unlock(&s->lock);
}

uint16_t svc_server_port(const SvcServer *s)
{
    return s->port;
}

NetTls *svc__tls_client(SvcAssoc *sa)
{
    return sa->server->cfg.tls_client;
}

const char *svc__our_aet(SvcAssoc *sa)
{
    return sa->server->aet;
}

bool svc__stopping(SvcAssoc *sa)
{
    return atomic_load(&sa->server->stop);
}

bool svc__fuzzy_names(SvcAssoc *sa)
{
    /* The store's run-time setting is read at each query: an
     * administrator may change it while we run (store.h). */
    return sa->server->cfg.fuzzy_names ||
           store_setting_bool(sa->server->cfg.store, "fuzzy_names");
}

bool svc__is_storage_class(const char *uid)
{
    const DicomUidEntry *e = dicom_uid_lookup(uid);
    if (e == NULL || e->type == NULL || strcmp(e->type, "SOP Class") != 0) {
        return false;
    }
    /* PS3.4 B.5: the storage SOP classes are those named "... Storage"
     * (not Storage Commitment, not the Storage Service Class itself). */
    return strstr(e->name, "Storage") != NULL &&
           strstr(e->name, "Commitment") == NULL &&
           strstr(e->name, "Storage SOP Class") == NULL;
}

/* Transfer syntaxes in order of preference (issue: uncompressed first). */
static int ts_rank(const char *ts, bool storage)
{
    static const char *const native[] = {
        DICOM_TS_EXPLICIT_LE, DICOM_TS_IMPLICIT_LE, DICOM_TS_DEFLATED_LE,
        DICOM_TS_EXPLICIT_BE,
    };
    for (int i = 0; i < 4; i++) {
        if (strcmp(ts, native[i]) == 0) {
            return i;
        }
    }
    /* A storage SCP keeps what it receives: any syntax Agora can read
     * (encapsulated ones are stored as they come). */
    const DicomTransferSyntax *t = dicom_ts_lookup(ts);
    if (storage && t != NULL && !t->retired) {
        return 10;
    }
    return -1;
}

/* Position of ts in the configured preferences, or -1. */
static int preferred(const SvcServer *s, const char *ts)
{
    for (int i = 0; i < s->nprefer; i++) {
        if (strcmp(s->prefer[i], ts) == 0) {
            return i;
        }
    }
    return -1;
}

/* The proposed syntax of r to accept: the first of the configured
 * preferences the peer offers and Agora can take, else Agora's own
 * order; -1 if none will do. */
static int choose_ts(const SvcServer *s, const NetPresContext *r,
                     bool storage)
{
    int best = -1, best_pref = PREFER_MAX;
    for (uint8_t k = 0; k < r->nsyntaxes; k++) {
        int p = preferred(s, r->syntaxes[k]);
        if (p >= 0 && p < best_pref && ts_rank(r->syntaxes[k], storage) >= 0) {
            best = k;
            best_pref = p;
        }
    }
    if (best >= 0) {
        return best;
    }
    int best_rank = 1000;
    for (uint8_t k = 0; k < r->nsyntaxes; k++) {
        int rank = ts_rank(r->syntaxes[k], storage);
        /* A sender whose first choice is compressed usually holds the
         * instance compressed and may be unable to decompress it
         * (DCMTK's storescu and JPEG 2000): the archive keeps what it
         * receives, so honour that choice; otherwise uncompressed in
         * our order of preference. */
        if (k == 0 && rank == 10) {
            return 0;
        }
        if (rank >= 0 && rank < best_rank) {
            best = k;
            best_rank = rank;
        }
    }
    return best;
}

static void negotiate(SvcServer *s, const NetAssocParams *rq,
                      NetAssocParams *ac)
{
    memset(ac, 0, sizeof *ac);
    ac->protocol_version = 1;
    memcpy(ac->called_ae, rq->called_ae, sizeof ac->called_ae);
    memcpy(ac->calling_ae, rq->calling_ae, sizeof ac->calling_ae);
    ag_fmt(ac->app_context, sizeof ac->app_context, "%s", NET_APP_CONTEXT);
    ag_fmt(ac->impl_class_uid, sizeof ac->impl_class_uid, "%s",
           DICOM_IMPLEMENTATION_CLASS_UID);
    ag_fmt(ac->impl_version, sizeof ac->impl_version, "%s",
           DICOM_IMPLEMENTATION_VERSION);
    ac->ncontexts = rq->ncontexts;
    for (uint8_t i = 0; i < rq->ncontexts; i++) {
        const NetPresContext *r = &rq->contexts[i];
        NetPresContext *c = &ac->contexts[i];
        c->id = r->id;
        bool storage = svc__is_storage_class(r->abstract_syntax);
        bool known = storage ||
                     strcmp(r->abstract_syntax, VERIFICATION_CLASS) == 0 ||
                     svc__is_find_class(r->abstract_syntax) ||
                     svc__is_get_class(r->abstract_syntax) ||
                     svc__is_move_class(r->abstract_syntax) ||
                     svc__is_commit_class(r->abstract_syntax) ||
                     svc__is_mpps_class(r->abstract_syntax);
        if (!known) {
            c->result = NET_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
            continue;
        }
        int best = choose_ts(s, r, storage);
        if (best < 0) {
            c->result = NET_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
            continue;
        }
        c->result = NET_PC_ACCEPTANCE;
        c->nsyntaxes = 1;
        memcpy(c->syntaxes[0], r->syntaxes[best], sizeof c->syntaxes[0]);
    }
    /* Roles: accept what the requestor proposes for classes we serve
     * (PS3.7 D.3.3.4); needed for C-GET later. */
    for (uint8_t i = 0; i < rq->nroles && i < NET_MAX_CONTEXTS; i++) {
        ac->roles[ac->nroles++] = rq->roles[i];
    }
}

/* Decide whether to talk to this peer at all (PS3.8 Table 9-21 reasons). */
static bool admit(SvcServer *s, SvcAssoc *sa, const NetAssocParams *rq,
                  NetReject *rj)
{
    if (strcmp(rq->app_context, NET_APP_CONTEXT) != 0) {
        *rj = (NetReject){NET_RJ_PERMANENT, NET_RJ_SOURCE_USER,
                          NET_RJ_APP_CONTEXT};
        return false;
    }
    if (strcmp(rq->called_ae, s->aet) != 0) {
        *rj = (NetReject){NET_RJ_PERMANENT, NET_RJ_SOURCE_USER,
                          NET_RJ_CALLED_AE};
        return false;
    }
    StoreNode node;
    bool known = store_node_get(s->cfg.store, rq->calling_ae, &node, NULL) ==
                 AG_OK;
    /* A verified client certificate names a node (its CN is the node's AE
     * title) or a user (its CN is the user name): that identity wins over
     * the calling AE title, which the peer merely asserts. */
    bool by_cert = false;
    if (sa->cert_cn[0] != '\0' && s->cfg.access != NULL) {
        StoreNode cnode;
        if (store_node_get(s->cfg.store, sa->cert_cn, &cnode, NULL) ==
            AG_OK) {
            access_node_principal(s->cfg.access, &cnode, &sa->who);
            by_cert = true;
        } else if (access_user_principal(s->cfg.access, sa->cert_cn,
                                         &sa->who, NULL) == AG_OK) {
            by_cert = true;
        }
    }
    /* The run-time setting (store.h) is read at each association. */
    bool accept_unknown = s->cfg.accept_unknown_ae ||
                          store_setting_bool(s->cfg.store,
                                             "accept_unknown_ae");
    if (!known && !by_cert && !accept_unknown) {
        *rj = (NetReject){NET_RJ_PERMANENT, NET_RJ_SOURCE_USER,
                          NET_RJ_CALLING_AE};
        return false;
    }
    if (by_cert) {
        /* sa->who is set */
    } else if (known && s->cfg.access != NULL) {
        access_node_principal(s->cfg.access, &node, &sa->who);
    } else {
        access_principal_all(&sa->who, ACCESS_KIND_NODE, rq->calling_ae);
        ag_fmt(sa->who.role, sizeof sa->who.role, "node");
    }
    /* User Identity Negotiation (PS3.7 D.3.3.7): a username and passcode
     * authenticate a user, whose scope and verbs then apply; a wrong one
     * is refused.  A username alone identifies without proof: it is
     * logged but grants nothing. */
    const NetUserIdentity *id = &rq->identity;
    if (id->type == NET_UID_USERNAME_PASSCODE && s->cfg.access != NULL) {
        uint32_t wait = 0;
        AccessPrincipal u;
        if (access_login(s->cfg.access, id->primary, id->secondary,
                         sa->remote, &u, &wait) != ACCESS_LOGIN_OK) {
            ag_log(AG_LOG_WARN, "dimse", "user identity \"%.64s\" from %s "
                   "refused", id->primary, sa->remote);
            *rj = (NetReject){NET_RJ_PERMANENT, NET_RJ_SOURCE_USER,
                              NET_RJ_NO_REASON};
            return false;
        }
        sa->who = u;
    } else if (id->type == NET_UID_USERNAME) {
        ag_log(AG_LOG_INFO, "dimse", "user name \"%.64s\" (unverified) from "
               "%s", id->primary, sa->remote);
    }
    return true;
}

const StoreScope *svc__scope(SvcAssoc *sa)
{
    return &sa->who.scope;
}

typedef struct PatientRow {
    char id[65];
} PatientRow;

static int patient_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    ag_fmt(((PatientRow *)ctx)->id, 65, "%s", v[0] ? v[0] : "");
    return 1;
}

void svc__audit(SvcAssoc *sa, AuditEvent *ev)
{
    SvcServer *s = sa->server;
    if (s->cfg.audit == NULL) {
        return;
    }
    PatientRow p = {""};
    if (ev->study_uid != NULL && ev->patient_id == NULL) {
        const char *q[] = {ev->study_uid};
        store_sql_select(s->cfg.store, "SELECT p.patient_id FROM studies t"
                         " JOIN patients p ON t.patient_pk = p.id WHERE"
                         " t.study_uid = ?1", q, 1, patient_row, &p, NULL);
        ev->patient_id = p.id[0] ? p.id : NULL;
    }
    if (ev->user == NULL) {
        ev->user = sa->who.name[0] ? sa->who.name : sa->calling_ae;
    }
    ev->source = sa->remote;
    if (ev->destination == NULL) {
        ev->destination = s->aet;
    }
    audit_record(s->cfg.audit, ev, NULL);
}

static void flush_tally(SvcAssoc *sa, const SvcTally *t)
{
    char detail[96];
    ag_fmt(detail, sizeof detail, "C-STORE: %u stored, %u failed",
           t->stored, t->failed);
    AuditEvent ev = {.event = AUDIT_INSTANCES_TRANSFERRED, .action = 'C',
                     .outcome = t->stored == 0 ? AUDIT_SERIOUS_FAILURE
                                : t->failed > 0 ? AUDIT_MINOR_FAILURE
                                                : AUDIT_SUCCESS,
                     .study_uid = t->study[0] ? t->study : NULL,
                     .count = t->stored, .detail = detail};
    svc__audit(sa, &ev);
}

/* FNV-1a: cheap, and enough to tell study UIDs apart before strcmp. */
static uint32_t study_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static int tally_find(const SvcAssoc *sa, const char *study, uint32_t h)
{
    int last = sa->tally_last;
    if (last < sa->ntally && sa->tally[last].hash == h &&
        strcmp(sa->tally[last].study, study) == 0) {
        return last;
    }
    for (int i = 0; i < sa->ntally; i++) {
        if (sa->tally[i].hash == h && strcmp(sa->tally[i].study, study) == 0) {
            return i;
        }
    }
    return -1;
}

/* A new entry for study: at the end, growing the table, or (full) after
 * recording and dropping the oldest.  -1 if out of memory. */
static int tally_add(SvcAssoc *sa, const char *study, uint32_t h)
{
    if (sa->ntally == SVC_TALLY_MAX) {
        flush_tally(sa, &sa->tally[0]);
        memmove(&sa->tally[0], &sa->tally[1],
                (size_t)(sa->ntally - 1) * sizeof sa->tally[0]);
        sa->ntally--;
    }
    if (sa->ntally == sa->tally_cap) {
        int cap = sa->tally_cap ? sa->tally_cap * 2 : 16;
        SvcTally *t = ag_realloc(sa->tally, (size_t)cap * sizeof *t);
        if (t == NULL) {
            return -1;
        }
        sa->tally = t;
        sa->tally_cap = cap;
    }
    SvcTally *t = &sa->tally[sa->ntally];
    memset(t, 0, sizeof *t);
    t->hash = h;
    ag_fmt(t->study, sizeof t->study, "%s", study);
    return sa->ntally++;
}

void svc__audit_store(SvcAssoc *sa, const char *study, bool ok)
{
    uint32_t h = study_hash(study);
    int i = tally_find(sa, study, h);
    if (i < 0 && (i = tally_add(sa, study, h)) < 0) {
        /* No memory for the tally: record this one on its own. */
        SvcTally one = {.hash = h, .stored = ok, .failed = !ok};
        ag_fmt(one.study, sizeof one.study, "%s", study);
        flush_tally(sa, &one);
        return;
    }
    sa->tally_last = i;
    if (ok) {
        sa->tally[i].stored++;
    } else {
        sa->tally[i].failed++;
    }
}

void svc__audit_store_flush(SvcAssoc *sa)
{
    for (int i = 0; i < sa->ntally; i++) {
        flush_tally(sa, &sa->tally[i]);
    }
    sa->ntally = 0;
    sa->tally_last = 0;
    ag_free(sa->tally);
    sa->tally = NULL;
    sa->tally_cap = 0;
}

char *svc__keys_text(const DicomDataset *id, AgArena *a)
{
    AgBuf b;
    ag_buf_init(&b, 4096);
    size_t n = dicom_dataset_count(id);
    for (size_t i = 0; i < n; i++) {
        const DicomElement *el = dicom_dataset_at(id, i);
        const DicomDictEntry *d = dicom_dict_lookup(el->tag);
        char *v = NULL;
        if (el->vr == DICOM_VR_SQ || el->length == 0 ||
            dicom_element_utf8(id, el, a, &v, NULL) != AG_OK || v == NULL) {
            continue;
        }
        ag_buf_printf(&b, "%s%s=%s", b.len ? " " : "",
                      d && d->keyword ? d->keyword : "?", v);
    }
    ag_buf_append(&b, "", 1);
    char *s = ag_arena_strdup(a, b.data ? (const char *)b.data : "");
    ag_buf_deinit(&b);
    return s;
}

int svc__respond(SvcAssoc *sa, const NetMessage *m, uint16_t command,
                 uint16_t status, const char *comment, AgError *err)
{
    DimseCommand r = {0};
    r.command = command;
    r.responded_id = m->cmd.message_id;
    r.dataset_type = DIMSE_NO_DATASET;
    r.status = status;
    r.remaining = r.completed = r.failed = r.warning = -1;
    memcpy(r.affected_class, m->cmd.affected_class, sizeof r.affected_class);
    memcpy(r.affected_instance, m->cmd.affected_instance,
           sizeof r.affected_instance);
    if (comment != NULL) {
        ag_fmt(r.error_comment, sizeof r.error_comment, "%s", comment);
    }
    return net_send_command(sa->assoc, m->context_id, &r, err);
}

/* Discard a data set nobody will use, keeping the association in step. */
static int drop(void *ctx, const uint8_t *d, size_t n, AgError *err)
{
    (void)ctx; (void)d; (void)n; (void)err;
    return AG_OK;
}

static int dispatch(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    switch (m->cmd.command) {
    case DIMSE_C_ECHO_RQ:
        return svc__echo(sa, m, err);
    case DIMSE_C_STORE_RQ:
        return svc__store(sa, m, err);
    case DIMSE_C_FIND_RQ:
        if (svc__is_find_class(m->cmd.affected_class)) {
            return svc__find(sa, m, err);
        }
        break;
    case DIMSE_C_GET_RQ:
        if (svc__is_get_class(m->cmd.affected_class)) {
            return svc__get(sa, m, err);
        }
        break;
    case DIMSE_C_MOVE_RQ:
        if (svc__is_move_class(m->cmd.affected_class)) {
            return svc__move(sa, m, err);
        }
        break;
    case DIMSE_N_ACTION_RQ:
        if (svc__is_commit_class(m->cmd.requested_class)) {
            return svc__commit(sa, m, err);
        }
        break;
    case DIMSE_N_CREATE_RQ:
        if (svc__is_mpps_class(m->cmd.affected_class)) {
            return svc__mpps(sa, m, err);
        }
        break;
    case DIMSE_N_SET_RQ:
        if (svc__is_mpps_class(m->cmd.requested_class)) {
            return svc__mpps(sa, m, err);
        }
        break;
    case DIMSE_C_CANCEL_RQ:
        return AG_OK;   /* nothing in progress to cancel */
    default:
        break;
    }
    {
        if (m->has_dataset) {
            int rc = net_recv_dataset(sa->assoc, m->context_id, drop, NULL,
                                      err);
            if (rc != AG_OK) {
                return rc;
            }
        }
        /* PS3.7 C.5.3: unrecognised operation. */
        return svc__respond(sa, m, (uint16_t)(m->cmd.command | 0x8000),
                            DIMSE_UNRECOGNIZED_OPERATION,
                            "operation not supported", err);
    }
}

static void serve_assoc(SvcAssoc *sa)
{
    SvcServer *s = sa->server;
    NetAssocParams *rq = ag_malloc(sizeof *rq);
    NetAssocParams *ac = ag_malloc(sizeof *ac);
    AgError err;
    ag_error_clear(&err);
    if (rq == NULL || ac == NULL) {
        ag_free(rq);
        ag_free(ac);
        return;
    }
    int rc = AG_OK;
    if (s->cfg.tls != NULL) {
        char cn[128];
        uint32_t artim = s->cfg.limits.artim_ms ? s->cfg.limits.artim_ms
                                                : 30000;
        rc = net_tls_start(s->cfg.tls, sa->transport.fd, NULL, artim,
                           &sa->transport, &sa->tls, cn, sizeof cn, &err);
        if (rc != AG_OK) {
            ag_log(AG_LOG_WARN, "dimse", "TLS from %s refused: %s",
                   sa->remote, err.msg);
            pthread_mutex_lock(&s->lock);
            s->stats.associations_rejected++;
            pthread_mutex_unlock(&s->lock);
            goto done;
        }
        if (cn[0] != '\0') {
            ag_log(AG_LOG_INFO, "dimse", "TLS client certificate CN=%s from "
                   "%s", cn, sa->remote);
            ag_fmt(sa->cert_cn, sizeof sa->cert_cn, "%s", cn);
        }
    }
    rc = net_accept(&sa->transport, &s->cfg.limits, &sa->assoc, rq, &err);
    if (rc == AG_ERR_EOF && net_assoc_silent(sa->assoc)) {
        /* A port check (monitoring, a load balancer): it asked nothing, so
         * it is neither an association nor a refusal. */
        ag_log(AG_LOG_DEBUG, "dimse", "connection from %s closed before "
               "any PDU", sa->remote);
        goto done;
    }
    if (rc != AG_OK) {
        ag_log(AG_LOG_WARN, "dimse", "association from %s refused: %s",
               sa->remote, err.msg);
        pthread_mutex_lock(&s->lock);
        s->stats.associations_rejected++;
        pthread_mutex_unlock(&s->lock);
        goto done;
    }
    ag_fmt(sa->calling_ae, sizeof sa->calling_ae, "%s", rq->calling_ae);
    NetReject rj;
    ag_fmt(sa->called_ae, sizeof sa->called_ae, "%s", rq->called_ae);
    if (!admit(s, sa, rq, &rj)) {
        char why[64];
        ag_fmt(why, sizeof why, "association refused (reason %u)",
               rj.reason);
        AuditEvent aev = {.event = AUDIT_SECURITY_ALERT,
                          .type = AUDIT_TYPE_NODE_AUTHENTICATION,
                          .action = 'E', .outcome = AUDIT_MINOR_FAILURE,
                          .user = rq->calling_ae, .detail = why};
        if (rq->identity.type == NET_UID_USERNAME_PASSCODE &&
            rj.reason == NET_RJ_NO_REASON) {
            aev.event = AUDIT_USER_AUTHENTICATION;
            aev.type = AUDIT_TYPE_LOGIN;
            aev.user = rq->identity.primary;
            aev.detail = "DICOM user identity refused";
        }
        svc__audit(sa, &aev);
        ag_log(AG_LOG_WARN, "dimse", "association %s -> %s from %s "
               "rejected (reason %u)", rq->calling_ae, rq->called_ae,
               sa->remote, rj.reason);
        net_send_reject(sa->assoc, &rj, NULL);
        pthread_mutex_lock(&s->lock);
        s->stats.associations_rejected++;
        pthread_mutex_unlock(&s->lock);
        goto done;
    }
    negotiate(s, rq, ac);
    if (rq->identity.type == NET_UID_USERNAME_PASSCODE &&
        rq->identity.response_requested && s->cfg.access != NULL) {
        /* PS3.7 D.3.3.7.2: a positive response, empty for this type. */
        ac->identity.response_requested = true;
        ac->identity.server_response_len = 0;
    }
    if (net_send_accept(sa->assoc, ac, &err) != AG_OK) {
        goto done;
    }
    pthread_mutex_lock(&s->lock);
    s->stats.associations_accepted++;
    pthread_mutex_unlock(&s->lock);
    ag_log(AG_LOG_INFO, "dimse", "association %s -> %s from %s accepted",
           rq->calling_ae, rq->called_ae, sa->remote);
    {
        char what[96];
        ag_fmt(what, sizeof what, "association accepted from %s as %s",
               rq->calling_ae, sa->who.name);
        AuditEvent aev = {.event = rq->identity.type ==
                                           NET_UID_USERNAME_PASSCODE
                                       ? AUDIT_USER_AUTHENTICATION
                                       : AUDIT_SECURITY_ALERT,
                          .type = rq->identity.type ==
                                          NET_UID_USERNAME_PASSCODE
                                      ? AUDIT_TYPE_LOGIN
                                      : AUDIT_TYPE_NODE_AUTHENTICATION,
                          .action = 'E', .detail = what};
        svc__audit(sa, &aev);
    }
    for (;;) {
        NetMessage m;
        rc = net_recv_command(sa->assoc, &m, &err);
        if (rc == AG_ERR_EOF) {
            break;   /* released */
        }
        if (rc == AG_OK) {
            rc = dispatch(sa, &m, &err);
        }
        if (rc != AG_OK) {
            ag_log(AG_LOG_WARN, "dimse", "association with %s ended: %s",
                   sa->calling_ae, err.msg);
            net_abort(sa->assoc, NET_ABORT_SOURCE_PROVIDER,
                      NET_ABORT_NOT_SPECIFIED);
            pthread_mutex_lock(&s->lock);
            s->stats.aborted++;
            pthread_mutex_unlock(&s->lock);
            break;
        }
    }
done:
    svc__audit_store_flush(sa);
    net_assoc_free(sa->assoc);
    net_tls_end(sa->tls);
    ag_free(rq);
    ag_free(ac);
}

static void *assoc_main(void *arg)
{
    SvcAssoc *sa = arg;
    SvcServer *s = sa->server;
    serve_assoc(sa);
    close(sa->transport.fd);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < sizeof s->fds / sizeof s->fds[0]; i++) {
        if (s->fds[i] == sa->transport.fd) {
            s->fds[i] = -1;
            break;
        }
    }
    s->active--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    ag_free(sa);
    return NULL;
}

/* Over the limit: answer the request with a transient rejection (PS3.8
 * Table 9-21, source 3 reason 2: local limit exceeded), briefly. */
static void refuse_busy(int fd)
{
    NetTransport t;
    net_transport_plain(&t, fd);
    NetLimits lim = {.artim_ms = 2000};
    NetAssoc *a = NULL;
    NetAssocParams *rq = ag_malloc(sizeof *rq);
    if (rq != NULL && net_accept(&t, &lim, &a, rq, NULL) == AG_OK) {
        NetReject rj = {NET_RJ_TRANSIENT, NET_RJ_SOURCE_PRESENTATION, 2};
        net_send_reject(a, &rj, NULL);
    }
    net_assoc_free(a);
    ag_free(rq);
    close(fd);
}

static void *accept_main(void *arg)
{
    SvcServer *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&peer, &plen,
                         SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        char remote[64] = "?";
        if (peer.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr,
                      remote, sizeof remote);
        } else if (peer.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr,
                      remote, sizeof remote);
        }
        pthread_mutex_lock(&s->lock);
        bool full = s->active >= s->cfg.max_associations;
        size_t slot = 0;
        while (!full && slot < sizeof s->fds / sizeof s->fds[0] &&
               s->fds[slot] != -1) {
            slot++;
        }
        full = full || slot == sizeof s->fds / sizeof s->fds[0];
        SvcAssoc *sa = full ? NULL : ag_calloc(1, sizeof *sa);
        if (sa != NULL) {
            s->active++;
            s->fds[slot] = fd;
        }
        pthread_mutex_unlock(&s->lock);
        if (sa == NULL) {
            ag_log(AG_LOG_WARN, "dimse", "refusing %s: %u associations "
                   "running", remote, s->cfg.max_associations);
            refuse_busy(fd);
            continue;
        }
        sa->server = s;
        ag_fmt(sa->remote, sizeof sa->remote, "%s", remote);
        net_transport_plain(&sa->transport, fd);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, assoc_main, sa) != 0) {
            pthread_mutex_lock(&s->lock);
            s->active--;
            s->fds[slot] = -1;
            pthread_mutex_unlock(&s->lock);
            close(fd);
            ag_free(sa);
        }
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

/* --prefer-ts: known, current transfer syntax UIDs, at most PREFER_MAX. */
static int parse_prefer(SvcServer *s, const char *list, AgError *err)
{
    s->nprefer = 0;
    s->cfg.prefer_ts = NULL;   /* borrowed text: s keeps its own copy */
    for (const char *p = list; p != NULL && *p != '\0';) {
        size_t n = strcspn(p, ",");
        char uid[65];
        if (n == 0 || n >= sizeof uid) {
            return ag_error_set(err, AG_ERR_INVALID, "--prefer-ts: an empty "
                                "or overlong entry");
        }
        memcpy(uid, p, n);
        uid[n] = '\0';
        const DicomTransferSyntax *t = dicom_ts_lookup(uid);
        if (t == NULL || t->retired) {
            return ag_error_set(err, AG_ERR_INVALID, "--prefer-ts: %s is not "
                                "a transfer syntax Agora accepts", uid);
        }
        if (s->nprefer == PREFER_MAX) {
            return ag_error_set(err, AG_ERR_INVALID, "--prefer-ts: more than "
                                "%d syntaxes", PREFER_MAX);
        }
        memcpy(s->prefer[s->nprefer++], uid, n + 1);
        p += n + (p[n] == ',');
    }
    return AG_OK;
}

int svc_server_start(const SvcConfig *cfg, SvcServer **out, AgError *err)
{
    SvcServer *s = ag_calloc(1, sizeof *s);
    if (s == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    s->cfg = *cfg;
    ag_fmt(s->aet, sizeof s->aet, "%s", cfg->aet ? cfg->aet : "AGORA");
    ag_fmt(s->bind_addr, sizeof s->bind_addr, "%s",
           cfg->bind_addr ? cfg->bind_addr : "127.0.0.1");
    if (s->cfg.max_associations == 0) {
        s->cfg.max_associations = 64;
    }
    if (s->cfg.max_associations > 1024) {
        s->cfg.max_associations = 1024;
    }
    if (parse_prefer(s, cfg->prefer_ts, err) != AG_OK) {
        ag_free(s);
        return err->code;
    }
    for (size_t i = 0; i < sizeof s->fds / sizeof s->fds[0]; i++) {
        s->fds[i] = -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    struct sockaddr_storage addr = {0};
    socklen_t alen;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, s->bind_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(cfg->port);
        alen = sizeof *a4;
    } else if (inet_pton(AF_INET6, s->bind_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(cfg->port);
        alen = sizeof *a6;
    } else {
        ag_free(s);
        return ag_error_set(err, AG_ERR_INVALID, "listen address \"%.64s\" "
                            "is not an IP address", cfg->bind_addr);
    }
    s->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s->listen_fd < 0 ||
        bind(s->listen_fd, (struct sockaddr *)&addr, alen) != 0 ||
        listen(s->listen_fd, 128) != 0) {
        int rc = ag_error_errno(err, AG_ERR_IO, "listen on %s:%u",
                                s->bind_addr, cfg->port);
        if (s->listen_fd >= 0) {
            close(s->listen_fd);
        }
        ag_free(s);
        return rc;
    }
    getsockname(s->listen_fd, (struct sockaddr *)&addr, &alen);
    s->port = ntohs(addr.ss_family == AF_INET ? a4->sin_port
                                              : a6->sin6_port);
    if (pthread_create(&s->acceptor, NULL, accept_main, s) != 0) {
        close(s->listen_fd);
        ag_free(s);
        return ag_error_set(err, AG_ERR_NOMEM, "cannot start listener");
    }
    *out = s;
    return AG_OK;
}

void svc_server_stop(SvcServer *s)
{
    if (s == NULL) {
        return;
    }
    atomic_store(&s->stop, true);
    pthread_join(s->acceptor, NULL);
    close(s->listen_fd);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < sizeof s->fds / sizeof s->fds[0]; i++) {
        if (s->fds[i] >= 0) {
            shutdown(s->fds[i], SHUT_RDWR);   /* wakes its thread */
        }
    }
    while (s->active > 0) {
        pthread_cond_wait(&s->idle, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    ag_free(s);
}
