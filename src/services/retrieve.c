/*
 * retrieve.c — Query/Retrieve C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3)
 * and the Storage SCU they drive (PS3.4 B).
 *
 * Instances are streamed from their blobs: the data set bytes go from the
 * file to the socket in PDU-sized chunks, never whole in memory.  When the
 * peer accepted none of the stored syntax, a native instance is re-encoded
 * in a native syntax the peer took; a compressed one fails its sub-
 * operation until the codecs land.
 */
#include "svc_int.h"
#include "codec/codec.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_RETRIEVE 100000            /* instances per request */
#define CONVERT_MAX ((size_t)1 << 30)  /* re-encoding happens in memory */

bool svc__is_get_class(const char *uid)
{
    return strcmp(uid, SVC_PATIENT_ROOT_GET) == 0 ||
           strcmp(uid, SVC_STUDY_ROOT_GET) == 0;
}

bool svc__is_move_class(const char *uid)
{
    return strcmp(uid, SVC_PATIENT_ROOT_MOVE) == 0 ||
           strcmp(uid, SVC_STUDY_ROOT_MOVE) == 0;
}

/* ---- which instances ------------------------------------------------------- */

typedef struct Target {
    char sop[65];
    char cls[65];
    char ts[65];
} Target;

typedef struct Targets {
    Target *v;
    size_t n, cap;
    int rc;
} Targets;

static int push_target(Targets *t, const Target *x)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        Target *v = ag_realloc(t->v, cap * sizeof *v);
        if (v == NULL) {
            t->rc = AG_ERR_NOMEM;
            return AG_ERR_NOMEM;
        }
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = *x;
    return AG_OK;
}

static int add_target(void *ctx, const DicomDataset *m)
{
    AgArena *a = dicom_dataset_arena(m);
    const char *sop = dicom_get_string(m, DICOM_TAG_SOP_INSTANCE_UID, a);
    const char *cls = dicom_get_string(m, DICOM_TAG_SOP_CLASS_UID, a);
    const char *ts = dicom_get_string(m, DICOM_TAG(0x0008, 0x3002), a);
    Target x;
    ag_fmt(x.sop, sizeof x.sop, "%s", sop ? sop : "");
    ag_fmt(x.cls, sizeof x.cls, "%s", cls ? cls : "");
    ag_fmt(x.ts, sizeof x.ts, "%s", ts ? ts : "");
    return push_target(ctx, &x) != AG_OK;
}

/* The instances a retrieve identifier names (PS3.4 C.4.2.2.1: unique
 * keys of the level and above). */
static int list_targets(SvcAssoc *sa, const DicomDataset *id, bool proot,
                        Targets *t, uint16_t *status, AgError *err)
{
    AgArena *a = dicom_dataset_arena(id);
    StoreLevel level;
    if (!svc__query_level(id, proot, &level, a)) {
        *status = DIMSE_ERROR_DATASET_MISMATCH;
        return ag_error_set(err, AG_ERR_INVALID, "Query/Retrieve Level "
                            "(0008,0052) missing or not valid");
    }
    static const uint32_t UNIQUE[] = {0x00100020, 0x0020000d, 0x0020000e,
                                      0x00080018};
    DicomDataset *keys = dicom_dataset_create(a);
    int rc = keys == NULL ? AG_ERR_NOMEM : AG_OK;
    for (int lv = proot ? 0 : 1; rc == AG_OK && lv <= (int)level; lv++) {
        const char *v = NULL;
        const DicomElement *el = dicom_dataset_find(id, UNIQUE[lv]);
        char *text = NULL;
        if (el != NULL && dicom_element_text(el, a, &text, NULL) == AG_OK) {
            v = text;
        }
        if (lv == (int)level && (v == NULL || v[0] == '\0')) {
            *status = DIMSE_ERROR_DATASET_MISMATCH;
            return ag_error_set(err, AG_ERR_INVALID, "unique key "
                                "(%04x,%04x) of the retrieve level is "
                                "missing", UNIQUE[lv] >> 16,
                                UNIQUE[lv] & 0xffff);
        }
        if (v != NULL && v[0] != '\0') {
            rc = dicom_set_string(keys, UNIQUE[lv], 0, v, NULL);
        }
    }
    if (rc == AG_OK && dicom_dataset_find(keys, 0x00080018) == NULL) {
        rc = dicom_set_string(keys, 0x00080018, DICOM_VR_UI, "", NULL);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(keys, 0x00080016, DICOM_VR_UI, "", NULL);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(keys, 0x00083002, DICOM_VR_UI, "", NULL);
    }
    if (rc != AG_OK) {
        *status = DIMSE_UNABLE_TO_PROCESS;
        return ag_error_set(err, rc, "out of memory");
    }
    StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = keys,
                    .limit = MAX_RETRIEVE};
    rc = store_query(svc__store_of(sa), &q, add_target, t, NULL, err);
    if (rc == AG_OK && t->rc != AG_OK) {
        rc = ag_error_set(err, t->rc, "out of memory");
    }
    if (rc != AG_OK) {
        *status = rc == AG_ERR_INVALID ? DIMSE_ERROR_DATASET_MISMATCH
                                       : DIMSE_UNABLE_TO_PROCESS;
    }
    return rc;
}

/* ---- storage SCU: one instance over an association --------------------- */

typedef struct FileSource {
    int fd;
    uint64_t pos, end;
} FileSource;

static int file_read(void *ctx, uint8_t *buf, size_t cap, size_t *got,
                     AgError *err)
{
    FileSource *f = ctx;
    size_t want = f->end - f->pos < cap ? (size_t)(f->end - f->pos) : cap;
    *got = 0;
    while (want > 0) {
        ssize_t n = pread(f->fd, buf, want, (off_t)f->pos);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return ag_error_errno(err, AG_ERR_IO, "read blob");
        }
        *got = (size_t)n;
        f->pos += (uint64_t)n;
        break;
    }
    return AG_OK;
}

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
        FileSource fs = {.fd = in.fd, .pos = in.dataset_offset,
                         .end = in.size};
        if (rc == AG_OK) {
            rc = net_send_dataset(a, ctx, file_read, &fs, err);
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

/* ---- responses ------------------------------------------------------------- */

typedef struct Counts {
    int32_t remaining, completed, failed, warning;
} Counts;

static int send_rsp(NetAssoc *a, const NetMessage *m, uint16_t command,
                    uint16_t status, const Counts *c, const Targets *failed,
                    const char *comment, AgError *err)
{
    DimseCommand r = {0};
    r.command = command;
    r.responded_id = m->cmd.message_id;
    r.status = status;
    memcpy(r.affected_class, m->cmd.affected_class, sizeof r.affected_class);
    r.remaining = status == DIMSE_PENDING ? c->remaining : -1;
    r.completed = c->completed;
    r.failed = c->failed;
    r.warning = c->warning;
    if (comment != NULL) {
        ag_fmt(r.error_comment, sizeof r.error_comment, "%s", comment);
    }
    bool list = failed != NULL && failed->n > 0 && status != DIMSE_PENDING;
    r.dataset_type = list ? 0x0000 : DIMSE_NO_DATASET;
    int rc = net_send_command(a, m->context_id, &r, err);
    if (rc == AG_OK && list) {
        /* Failed SOP Instance UID List (0008,0058), PS3.4 C.4.2.1.4. */
        AgArena *ar = ag_arena_create(64 << 20);
        DicomDataset *ds = ar ? dicom_dataset_create(ar) : NULL;
        AgBuf uids, out;
        ag_buf_init(&uids, 0);
        ag_buf_init(&out, 0);
        for (size_t i = 0; i < failed->n && rc == AG_OK; i++) {
            rc = ag_buf_printf(&uids, "%s%s", i ? "\\" : "", failed->v[i].sop);
        }
        if (rc == AG_OK && ds != NULL) {
            rc = dicom_set_bytes(ds, DICOM_TAG(0x0008, 0x0058), DICOM_VR_UI,
                                 uids.data, uids.len, err);
        }
        if (rc == AG_OK && ds != NULL) {
            rc = dicom_write_dataset(ds, net_assoc_context_ts(a,
                                         m->context_id), NULL,
                                     dicom_sink_buf, &out, err);
        }
        if (rc == AG_OK) {
            rc = net_send_dataset_buf(a, m->context_id, out.data, out.len,
                                      err);
        }
        ag_buf_deinit(&uids);
        ag_buf_deinit(&out);
        ag_arena_destroy(ar);
    }
    return rc;
}

static uint16_t final_status(const Counts *c, bool cancelled)
{
    if (cancelled) {
        return DIMSE_CANCEL;
    }
    if (c->failed == 0 && c->warning == 0) {
        return DIMSE_SUCCESS;
    }
    if (c->completed == 0 && c->warning == 0) {
        return 0xA702;   /* unable to perform sub-operations */
    }
    return DIMSE_WARNING_SUBOPS;   /* B000: one or more failures */
}

static bool store_ok(uint16_t st)
{
    return st == DIMSE_SUCCESS || (st & 0xF000) == 0xB000;
}

/* Count one finished sub-operation (PS3.4 C.4.2.1.4: completed, warning,
 * failed; failures are listed in the final response). */
static void tally(Counts *c, Targets *failed, const Target *t, uint16_t st)
{
    c->remaining--;
    if (st == DIMSE_SUCCESS) {
        c->completed++;
    } else if (store_ok(st)) {
        c->warning++;
    } else {
        c->failed++;
        push_target(failed, t);
    }
}

/* ---- C-GET ---------------------------------------------------------------------- */

int svc__get(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    AgArena *a = ag_arena_create(8 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomDataset *id = NULL;
    uint16_t status = DIMSE_SUCCESS;
    AgError qerr;
    ag_error_clear(&qerr);
    int rc = svc__read_identifier(sa, m, a, &id, &status, &qerr);
    Targets t = {0}, failed = {0};
    if (rc == AG_OK && status == DIMSE_SUCCESS) {
        bool proot = strcmp(m->cmd.affected_class, SVC_PATIENT_ROOT_GET) == 0;
        list_targets(sa, id, proot, &t, &status, &qerr);
    }
    Counts c = {.remaining = (int32_t)t.n};
    bool cancelled = false;
    uint16_t next_id = 1;
    for (size_t i = 0; rc == AG_OK && status == DIMSE_SUCCESS && i < t.n &&
                       !cancelled; i++) {
        uint16_t st = 0;
        rc = svc__send_instance(sa->assoc, next_id++, t.v[i].sop,
                                svc__store_of(sa), NULL, 0,
                                m->cmd.message_id, &cancelled, &st, err);
        if (rc != AG_OK) {
            break;
        }
        tally(&c, &failed, &t.v[i], st);
        if (c.remaining > 0 && !cancelled) {
            rc = send_rsp(sa->assoc, m, DIMSE_C_GET_RSP, DIMSE_PENDING, &c,
                          NULL, NULL, err);
        }
    }
    if (rc == AG_OK) {
        if (status == DIMSE_SUCCESS) {
            status = final_status(&c, cancelled);
        }
        c.remaining = cancelled ? c.remaining : 0;
        rc = send_rsp(sa->assoc, m, DIMSE_C_GET_RSP, status, &c, &failed,
                      status == DIMSE_SUCCESS ? NULL : qerr.msg, err);
    }
    ag_free(t.v);
    ag_free(failed.v);
    ag_arena_destroy(a);
    return rc;
}

/* ---- C-MOVE --------------------------------------------------------------------- */

/* One presentation context per SOP class: its stored syntaxes, then the
 * uncompressed ones (so native instances can be re-encoded). */
static void propose(NetAssocParams *rq, const Targets *t)
{
    for (size_t i = 0; i < t->n && rq->ncontexts < NET_MAX_CONTEXTS; i++) {
        NetPresContext *c = NULL;
        for (uint8_t k = 0; k < rq->ncontexts && c == NULL; k++) {
            if (strcmp(rq->contexts[k].abstract_syntax, t->v[i].cls) == 0) {
                c = &rq->contexts[k];
            }
        }
        if (c == NULL) {
            c = &rq->contexts[rq->ncontexts];
            c->id = (uint8_t)(2 * rq->ncontexts + 1);
            rq->ncontexts++;
            memcpy(c->abstract_syntax, t->v[i].cls, sizeof c->abstract_syntax);
            memcpy(c->syntaxes[0], DICOM_TS_EXPLICIT_LE,
                   sizeof DICOM_TS_EXPLICIT_LE);
            memcpy(c->syntaxes[1], DICOM_TS_IMPLICIT_LE,
                   sizeof DICOM_TS_IMPLICIT_LE);
            c->nsyntaxes = 2;
        }
        bool have = false;
        for (uint8_t k = 0; k < c->nsyntaxes; k++) {
            have = have || strcmp(c->syntaxes[k], t->v[i].ts) == 0;
        }
        if (!have && c->nsyntaxes < NET_MAX_SYNTAXES) {
            /* the stored syntax first: no conversion needed */
            memmove(c->syntaxes[1], c->syntaxes[0],
                    (size_t)c->nsyntaxes * sizeof c->syntaxes[0]);
            memcpy(c->syntaxes[0], t->v[i].ts, sizeof c->syntaxes[0]);
            c->nsyntaxes++;
        }
    }
}

static int open_sub(SvcAssoc *sa, const StoreNode *node, const Targets *t,
                    int *fd, NetTransport *tr, NetTlsSession **tls,
                    NetAssoc **sub, AgError *err)
{
    *fd = net_connect(node->host, node->port, 10000, err);
    if (*fd < 0) {
        return *fd;
    }
    net_transport_plain(tr, *fd);
    if (node->tls) {
        if (svc__tls_client(sa) == NULL) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "node %s wants TLS "
                                "and no TLS is configured", node->aet);
        }
        int trc = net_tls_start(svc__tls_client(sa), *fd, node->host, 10000,
                                tr, tls, NULL, 0, err);
        if (trc != AG_OK) {
            return trc;
        }
    }
    NetAssocParams *rq = ag_calloc(1, sizeof *rq);
    if (rq == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    rq->protocol_version = 1;
    ag_fmt(rq->called_ae, sizeof rq->called_ae, "%s", node->aet);
    ag_fmt(rq->calling_ae, sizeof rq->calling_ae, "%s", svc__our_aet(sa));
    ag_fmt(rq->app_context, sizeof rq->app_context, "%s", NET_APP_CONTEXT);
    ag_fmt(rq->impl_class_uid, sizeof rq->impl_class_uid, "%s",
           DICOM_IMPLEMENTATION_CLASS_UID);
    ag_fmt(rq->impl_version, sizeof rq->impl_version, "%s",
           DICOM_IMPLEMENTATION_VERSION);
    propose(rq, t);
    NetReject rj;
    int rc = net_request(tr, NULL, rq, sub, NULL, &rj, err);
    ag_free(rq);
    return rc;
}

int svc__move(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    AgArena *a = ag_arena_create(8 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomDataset *id = NULL;
    uint16_t status = DIMSE_SUCCESS;
    AgError qerr;
    ag_error_clear(&qerr);
    int rc = svc__read_identifier(sa, m, a, &id, &status, &qerr);
    Targets t = {0}, failed = {0};
    StoreNode node;
    if (rc == AG_OK && status == DIMSE_SUCCESS &&
        store_node_get(svc__store_of(sa), m->cmd.move_destination, &node,
                       &qerr) != AG_OK) {
        /* PS3.4 C.4.2.1.4.1: Move Destination unknown. */
        status = DIMSE_REFUSED_MOVE_DESTINATION;
        ag_error_set(&qerr, AG_ERR_NOTFOUND, "unknown move destination");
    }
    if (rc == AG_OK && status == DIMSE_SUCCESS) {
        bool proot = strcmp(m->cmd.affected_class,
                            SVC_PATIENT_ROOT_MOVE) == 0;
        list_targets(sa, id, proot, &t, &status, &qerr);
    }
    Counts c = {.remaining = (int32_t)t.n};
    bool cancelled = false;
    int fd = -1;
    NetTransport tr;
    NetTlsSession *tls = NULL;
    NetAssoc *sub = NULL;
    bool sub_ok = false;
    if (rc == AG_OK && status == DIMSE_SUCCESS && t.n > 0) {
        sub_ok = open_sub(sa, &node, &t, &fd, &tr, &tls, &sub, &qerr) == AG_OK;
        if (!sub_ok) {
            ag_log(AG_LOG_WARN, "dimse", "C-MOVE to %s failed: %s", node.aet,
                   qerr.msg);
        }
    }
    uint16_t next_id = 1;
    for (size_t i = 0; rc == AG_OK && status == DIMSE_SUCCESS && i < t.n &&
                       !cancelled; i++) {
        uint16_t st = DIMSE_PROCESSING_FAILURE;
        if (sub_ok) {
            bool unused = false;
            AgError serr;
            if (svc__send_instance(sub, next_id++, t.v[i].sop,
                                   svc__store_of(sa), sa->calling_ae,
                                   m->cmd.message_id, 0, &unused, &st,
                                   &serr) != AG_OK) {
                sub_ok = false;   /* the destination went away */
                st = DIMSE_PROCESSING_FAILURE;
                qerr = serr;
            }
        }
        tally(&c, &failed, &t.v[i], st);
        cancelled = net_cancel_requested(sa->assoc, m->cmd.message_id);
        if (c.remaining > 0 && !cancelled) {
            rc = send_rsp(sa->assoc, m, DIMSE_C_MOVE_RSP, DIMSE_PENDING, &c,
                          NULL, NULL, err);
        }
    }
    if (sub != NULL) {
        if (sub_ok) {
            net_release(sub, NULL);
        } else {
            net_abort(sub, NET_ABORT_SOURCE_USER, 0);
        }
        net_assoc_free(sub);
    }
    net_tls_end(tls);
    if (fd >= 0) {
        close(fd);
    }
    if (rc == AG_OK) {
        if (status == DIMSE_SUCCESS) {
            status = final_status(&c, cancelled);
        }
        rc = send_rsp(sa->assoc, m, DIMSE_C_MOVE_RSP, status, &c, &failed,
                      status == DIMSE_SUCCESS ? NULL : qerr.msg, err);
    }
    ag_free(t.v);
    ag_free(failed.v);
    ag_arena_destroy(a);
    return rc;
}
