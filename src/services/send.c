/*
 * send.c — the Storage SCU (PS3.4 B): C-STORE of stored instances over an
 * association Agora opens to a node.  C-MOVE's sub-operations
 * (retrieve.c) and svc_send (the REST API's "send a study to a node"
 * jobs) share it.
 *
 * Instances are streamed from their blobs: the data set bytes go from the
 * file to the socket in PDU-sized chunks, never whole in memory.  When the
 * peer accepted none of the stored syntax, the instance is re-encoded in
 * a native syntax the peer took (compressed ones decoded by the codecs).
 */
#include "svc_int.h"
#include "codec/codec.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONVERT_MAX ((size_t)1 << 30)  /* re-encoding happens in memory */
#define SEND_MAX 100000                /* instances per svc_send */
#define LOOKUP_BATCH 64                /* UIDs per index query */

/* PS3.4 B.2.3: success, or a warning (B000, B006, B007): stored. */
bool svc__store_ok(uint16_t st)
{
    return st == DIMSE_SUCCESS || (st & 0xF000) == 0xB000;
}

/* ---- one instance over an association ---------------------------------- */

static bool is_native(const char *ts)
{
    const DicomTransferSyntax *t = dicom_ts_lookup(ts);
    return t != NULL && !t->encapsulated;
}

/* Re-encode an instance's data set in a native syntax the peer took:
 * native to native through the writer, compressed through the codecs
 * (PS3.4 B.4.1: a storage SCU may change the transfer syntax). */
static int convert(const StoreInstance *in, const char *ts, AgBuf *out,
                   AgError *err)
{
    if (in->size > CONVERT_MAX) {
        return ag_error_set(err, AG_ERR_LIMIT, "instance too large to "
                            "re-encode");
    }
    AgArena *a = ag_arena_create(CONVERT_MAX * 2);
    DicomFile *f = NULL;
    int rc = a == NULL ? AG_ERR_NOMEM : AG_OK;
    if (rc == AG_OK && lseek(in->fd, 0, SEEK_SET) == 0) {
        rc = dicom_read_fd(in->fd, NULL, a, &f, err);
    }
    if (rc == AG_OK && f != NULL && !is_native(f->ts_uid)) {
        rc = codec_transcode(f, ts, err);
    }
    if (rc == AG_OK && f != NULL) {
        rc = dicom_write_dataset(f->dataset, ts, NULL, dicom_sink_buf, out,
                                 err);
    }
    ag_arena_destroy(a);
    return rc;
}

/*
 * Send one C-STORE sub-operation and wait for its response.  *status is the
 * peer's status (or a local failure status); the return value reports the
 * association only.  *cancel is set if the C-GET peer cancelled meanwhile.
 */
int svc__send_instance(NetAssoc *a, uint16_t msg_id, const char *sop_uid,
                       Store *store, const char *orig_ae, uint16_t orig_id,
                       uint16_t cancel_id, bool *cancel, uint16_t *status,
                       AgError *err)
{
    StoreInstance in;
    AgError lerr;
    if (store_instance_open(store, sop_uid, &in, &lerr) != AG_OK) {
        *status = DIMSE_PROCESSING_FAILURE;
        ag_log(AG_LOG_WARN, "dimse", "cannot read instance for retrieve: "
               "%s", lerr.msg);
        return AG_OK;
    }
    uint8_t ctx = net_assoc_find_context(a, in.sop_class_uid,
                                         in.transfer_syntax);
    const char *send_ts = in.transfer_syntax;
    bool decodable = is_native(in.transfer_syntax) ||
                     codec_can_decode(in.transfer_syntax);
    if (ctx == 0 && decodable) {
        static const char *const natives[] = {DICOM_TS_EXPLICIT_LE,
                                              DICOM_TS_IMPLICIT_LE,
                                              DICOM_TS_EXPLICIT_BE,
                                              DICOM_TS_DEFLATED_LE};
        for (int i = 0; i < 4 && ctx == 0; i++) {
            ctx = net_assoc_find_context(a, in.sop_class_uid, natives[i]);
            send_ts = natives[i];
        }
    }
    if (ctx == 0) {
        close(in.fd);
        *status = DIMSE_SOP_CLASS_NOT_SUPPORTED;   /* no usable context */
        return AG_OK;
    }
    DimseCommand c = {0};
    c.command = DIMSE_C_STORE_RQ;
    c.message_id = msg_id;
    c.dataset_type = 0x0000;
    c.remaining = c.completed = c.failed = c.warning = -1;
    memcpy(c.affected_class, in.sop_class_uid, sizeof c.affected_class);
    memcpy(c.affected_instance, in.sop_instance_uid,
           sizeof c.affected_instance);
    if (orig_ae != NULL) {
        ag_fmt(c.move_originator_ae, sizeof c.move_originator_ae, "%s",
               orig_ae);
        c.move_originator_id = orig_id;
    }
    int rc;
    if (strcmp(send_ts, in.transfer_syntax) == 0) {
        rc = net_send_command(a, ctx, &c, err);
        if (rc == AG_OK) {
            rc = net_send_dataset_fd(a, ctx, in.fd, in.dataset_offset,
                                     in.size - in.dataset_offset, err);
        }
    } else {
        AgBuf buf;
        ag_buf_init(&buf, CONVERT_MAX);
        if (convert(&in, send_ts, &buf, &lerr) != AG_OK) {
            ag_buf_deinit(&buf);
            close(in.fd);
            *status = DIMSE_PROCESSING_FAILURE;
            return AG_OK;
        }
        rc = net_send_command(a, ctx, &c, err);
        if (rc == AG_OK) {
            rc = net_send_dataset_buf(a, ctx, buf.data, buf.len, err);
        }
        ag_buf_deinit(&buf);
    }
    close(in.fd);
    /* Wait for the C-STORE-RSP; a C-CANCEL for the retrieve may come
     * first (C-GET on the same association). */
    while (rc == AG_OK) {
        NetMessage m;
        rc = net_recv_command(a, &m, err);
        if (rc != AG_OK) {
            break;
        }
        if (m.cmd.command == DIMSE_C_CANCEL_RQ &&
            m.cmd.responded_id == cancel_id) {
            *cancel = true;
            continue;
        }
        if (m.cmd.command == DIMSE_C_STORE_RSP &&
            m.cmd.responded_id == msg_id) {
            *status = m.cmd.status;
            break;
        }
        rc = ag_error_set(err, AG_ERR_PARSE, "unexpected message %04x while "
                          "waiting for C-STORE-RSP", m.cmd.command);
    }
    return rc;
}

/* ---- the association to a node ------------------------------------------- */

/* One presentation context per SOP class: its stored syntaxes, then the
 * uncompressed ones (so native instances can be re-encoded). */
static void propose(NetAssocParams *rq, const SvcTarget *t, size_t n)
{
    for (size_t i = 0; i < n && rq->ncontexts < NET_MAX_CONTEXTS; i++) {
        if (t[i].cls[0] == '\0') {
            continue;   /* not stored: fails without a context */
        }
        NetPresContext *c = NULL;
        for (uint8_t k = 0; k < rq->ncontexts && c == NULL; k++) {
            if (strcmp(rq->contexts[k].abstract_syntax, t[i].cls) == 0) {
                c = &rq->contexts[k];
            }
        }
        if (c == NULL) {
            c = &rq->contexts[rq->ncontexts];
            c->id = (uint8_t)(2 * rq->ncontexts + 1);
            rq->ncontexts++;
            memcpy(c->abstract_syntax, t[i].cls, sizeof c->abstract_syntax);
            memcpy(c->syntaxes[0], DICOM_TS_EXPLICIT_LE,
                   sizeof DICOM_TS_EXPLICIT_LE);
            memcpy(c->syntaxes[1], DICOM_TS_IMPLICIT_LE,
                   sizeof DICOM_TS_IMPLICIT_LE);
            c->nsyntaxes = 2;
        }
        bool have = false;
        for (uint8_t k = 0; k < c->nsyntaxes; k++) {
            have = have || strcmp(c->syntaxes[k], t[i].ts) == 0;
        }
        if (!have && c->nsyntaxes < NET_MAX_SYNTAXES) {
            /* the stored syntax first: no conversion needed */
            memmove(c->syntaxes[1], c->syntaxes[0],
                    (size_t)c->nsyntaxes * sizeof c->syntaxes[0]);
            memcpy(c->syntaxes[0], t[i].ts, sizeof c->syntaxes[0]);
            c->nsyntaxes++;
        }
    }
}

int svc__scu_request(SvcScu *u, const StoreNode *node, const char *our_aet,
                     NetTls *tls_client, const NetLimits *lim,
                     NetAssocParams *rq, NetReject *rj, AgError *err)
{
    memset(u, 0, sizeof *u);
    NetReject unused;
    rj = rj != NULL ? rj : &unused;
    memset(rj, 0, sizeof *rj);
    u->fd = net_connect(node->host, node->port, 10000, err);
    if (u->fd < 0) {
        int rc = u->fd;
        u->fd = -1;
        return rc;
    }
    net_transport_plain(&u->tr, u->fd);
    if (node->tls) {
        if (tls_client == NULL) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "node %s wants TLS "
                                "and no TLS is configured", node->aet);
        }
        int trc = net_tls_start(tls_client, u->fd, node->host, 10000,
                                &u->tr, &u->tls, NULL, 0, err);
        if (trc != AG_OK) {
            return trc;
        }
    }
    rq->protocol_version = 1;
    ag_fmt(rq->called_ae, sizeof rq->called_ae, "%s", node->aet);
    ag_fmt(rq->calling_ae, sizeof rq->calling_ae, "%s", our_aet);
    ag_fmt(rq->app_context, sizeof rq->app_context, "%s", NET_APP_CONTEXT);
    ag_fmt(rq->impl_class_uid, sizeof rq->impl_class_uid, "%s",
           DICOM_IMPLEMENTATION_CLASS_UID);
    ag_fmt(rq->impl_version, sizeof rq->impl_version, "%s",
           DICOM_IMPLEMENTATION_VERSION);
    return net_request(&u->tr, lim, rq, &u->assoc, NULL, rj, err);
}

int svc__scu_open(SvcScu *u, const StoreNode *node, const char *our_aet,
                  NetTls *tls_client, const NetLimits *lim,
                  const SvcTarget *t, size_t n, NetReject *rj, AgError *err)
{
    NetAssocParams *rq = ag_calloc(1, sizeof *rq);
    if (rq == NULL) {
        memset(u, 0, sizeof *u);
        u->fd = -1;
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    propose(rq, t, n);
    int rc = svc__scu_request(u, node, our_aet, tls_client, lim, rq, rj,
                              err);
    ag_free(rq);
    return rc;
}

void svc__scu_close(SvcScu *u, bool release)
{
    if (u->assoc != NULL) {
        if (release) {
            net_release(u->assoc, NULL);
        } else {
            net_abort(u->assoc, NET_ABORT_SOURCE_USER, 0);
        }
        net_assoc_free(u->assoc);
        u->assoc = NULL;
    }
    net_tls_end(u->tls);
    u->tls = NULL;
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
    }
}

/* ---- svc_send ------------------------------------------------------------ */

typedef struct Lookup {
    SvcTarget *t;
    size_t from, n;
} Lookup;

static int found(void *ctx, const DicomDataset *m)
{
    Lookup *l = ctx;
    AgArena *a = dicom_dataset_arena(m);
    const char *sop = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID, a);
    const char *cls = dicom_get_string(m, DICOM_TAG_SOP_CLASS_UID, a);
    const char *ts = dicom_get_string(m, DICOM_TAG(0x0008, 0x3002), a);
    for (size_t i = l->from; sop && cls && ts && i < l->from + l->n; i++) {
        SvcTarget *x = &l->t[i];
        if (strcmp(x->sop, sop) == 0) {
            ag_fmt(x->cls, sizeof x->cls, "%s", cls);
            ag_fmt(x->ts, sizeof x->ts, "%s", ts);
        }
    }
    return 0;
}

/* Class and stored syntax of each instance from the index, LOOKUP_BATCH
 * UIDs per query (list of UID matching, PS3.4 C.2.2.2.2).  Instances not
 * stored keep an empty class. */
static int lookup(Store *store, SvcTarget *t, size_t n, AgError *err)
{
    int rc = AG_OK;
    for (size_t from = 0; rc == AG_OK && from < n; from += LOOKUP_BATCH) {
        Lookup l = {.t = t, .from = from,
                    .n = n - from < LOOKUP_BATCH ? n - from : LOOKUP_BATCH};
        AgArena *a = ag_arena_create(1 << 20);
        DicomDataset *keys = a != NULL ? dicom_dataset_create(a) : NULL;
        AgBuf list;
        ag_buf_init(&list, LOOKUP_BATCH * 65);
        rc = keys == NULL ? ag_error_set(err, AG_ERR_NOMEM, "out of memory")
                          : AG_OK;
        for (size_t i = from; rc == AG_OK && i < from + l.n; i++) {
            rc = ag_buf_printf(&list, "%s%s", i > from ? "\\" : "",
                               t[i].sop);
        }
        if (rc == AG_OK) {
            rc = dicom_set_string(keys, DICOM_TAG_SOP_INSTANCE_UID,
                                  DICOM_VR_UI, (const char *)list.data, err);
        }
        if (rc == AG_OK) {
            rc = dicom_set_string(keys, DICOM_TAG_SOP_CLASS_UID, DICOM_VR_UI,
                                  "", err);
        }
        if (rc == AG_OK) {
            rc = dicom_set_string(keys, DICOM_TAG(0x0008, 0x3002),
                                  DICOM_VR_UI, "", err);
        }
        if (rc == AG_OK) {
            StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = keys,
                            .limit = LOOKUP_BATCH};
            rc = store_query(store, &q, found, &l, NULL, err);
        }
        ag_buf_deinit(&list);
        ag_arena_destroy(a);
    }
    return rc;
}

/* Say why a node refused the association (PS3.8 Table 9-21). */
static void explain_reject(const NetReject *rj, const StoreNode *node,
                           AgError *err)
{
    const char *why = "no reason given";
    if (rj->source == NET_RJ_SOURCE_USER && rj->reason == NET_RJ_CALLED_AE) {
        why = "called AE title not recognized";
    } else if (rj->source == NET_RJ_SOURCE_USER &&
               rj->reason == NET_RJ_CALLING_AE) {
        why = "calling AE title not recognized";
    } else if (rj->source == NET_RJ_SOURCE_USER &&
               rj->reason == NET_RJ_APP_CONTEXT) {
        why = "application context name not supported";
    } else if (rj->source == NET_RJ_SOURCE_PRESENTATION) {
        why = rj->reason == 1 ? "temporary congestion"
                              : "local limit exceeded";
    }
    ag_error_set(err, AG_ERR_DENIED, "%s at %s:%u refused the association: "
                 "%s (A-ASSOCIATE-RJ %s, source %u, reason %u)", node->aet,
                 node->host, node->port, why,
                 rj->result == NET_RJ_PERMANENT ? "permanent" : "transient",
                 rj->source, rj->reason);
}

static bool report(SvcSendProgress progress, void *ctx, size_t sent,
                   size_t failed, const char *failed_uid)
{
    return progress == NULL || progress(ctx, sent, failed, failed_uid);
}

/* The C-STORE loop over an open association; AG_OK unless the association
 * broke.  Stops early (AG_OK) when progress says so. */
static int send_all(const SvcSendConfig *cfg, SvcScu *u, const SvcTarget *t,
                    size_t n, SvcSendProgress progress, void *ctx,
                    AgError *err)
{
    size_t sent = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t st = DIMSE_PROCESSING_FAILURE;
        bool unused = false;
        int rc = AG_OK;
        if (t[i].cls[0] != '\0') {
            rc = svc__send_instance(u->assoc, (uint16_t)(i % 65535 + 1),
                                    t[i].sop, cfg->store, NULL, 0, 0,
                                    &unused, &st, err);
        } else {
            ag_log(AG_LOG_WARN, "dimse", "send: instance %.64s is not "
                   "stored", t[i].sop);
        }
        bool ok = rc == AG_OK && svc__store_ok(st);
        sent += ok;
        failed += !ok;
        if (!report(progress, ctx, sent, failed, ok ? NULL : t[i].sop) ||
            rc != AG_OK) {
            return rc;
        }
        if (st != DIMSE_SUCCESS) {
            ag_log(AG_LOG_INFO, "dimse", "send: C-STORE of %.64s: status "
                   "%04x", t[i].sop, st);
        }
    }
    return AG_OK;
}

int svc_send(const SvcSendConfig *cfg, const StoreNode *node,
             const char *const *sop_uids, size_t n, SvcSendProgress progress,
             void *ctx, AgError *err)
{
    if (n > SEND_MAX) {
        return ag_error_set(err, AG_ERR_LIMIT, "%zu instances: at most %d "
                            "per send", n, SEND_MAX);
    }
    SvcTarget *t = ag_calloc(n > 0 ? n : 1, sizeof *t);
    if (t == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (ag_fmt(t[i].sop, sizeof t[i].sop, "%s", sop_uids[i]) != AG_OK) {
            t[i].sop[0] = '\0';   /* not a UID: never stored */
        }
    }
    int rc = lookup(cfg->store, t, n, err);
    if (rc != AG_OK || n == 0 || !report(progress, ctx, 0, 0, NULL)) {
        ag_free(t);
        return rc;
    }
    SvcScu u;
    NetReject rj;
    rc = svc__scu_open(&u, node, cfg->aet != NULL ? cfg->aet : "AGORA",
                       cfg->tls_client, &cfg->limits, t, n, &rj, err);
    if (rc != AG_OK && rj.result != 0) {
        explain_reject(&rj, node, err);
    } else if (rc != AG_OK) {
        ag_error_prefix(err, "%s at %s:%u: ", node->aet, node->host,
                        node->port);
    }
    if (rc == AG_OK) {
        rc = send_all(cfg, &u, t, n, progress, ctx, err);
        if (rc != AG_OK) {
            ag_error_prefix(err, "%s: the association broke: ", node->aet);
        }
    }
    svc__scu_close(&u, rc == AG_OK);
    ag_free(t);
    if (rc == AG_OK) {
        ag_log(AG_LOG_INFO, "dimse", "send: %zu instances offered to %s",
               n, node->aet);
    }
    return rc;
}
