/*
 * commit.c — Storage Commitment Push Model SCP (PS3.4 Annex J).
 *
 * N-ACTION-RQ (Request Storage Commitment) names instances by SOP Class and
 * Instance UID under a Transaction UID.  Agora commits an instance only if
 * it is stored and its blob still matches its checksum (each is re-read
 * and re-hashed), answers the N-ACTION, then reports the outcome with an
 * N-EVENT-REPORT on the same association (J.3.3.1), waiting for its
 * response.  The SCU may release the association any time after the
 * N-ACTION-RSP (J.3.2.1.2); when the report did not get its response
 * there, Agora opens an association to the SCU (a known node) and reports
 * on that one instead (J.3.3.1.2: an SCP shall be capable of it),
 * proposing the SCP role for the commitment class (J.3.3.1.3), a few times
 * before it gives up.
 */
#include "svc_int.h"

#include <string.h>
#include <unistd.h>

#define COMMIT_CLASS "1.2.840.10008.1.20.1"
#define COMMIT_INSTANCE "1.2.840.10008.1.20.1.1"
#define MAX_REFS 65536
/* Waits before each attempt to report on a new association (ms). */
static const unsigned NEW_ASSOC_WAIT_MS[] = {0, 1000, 4000};

bool svc__is_commit_class(const char *uid)
{
    return strcmp(uid, COMMIT_CLASS) == 0;
}

/* Copy one referenced-SOP item into the success or failure sequence. */
static int add_ref(DicomDataset *ev, uint32_t seq_tag, const char *cls,
                   const char *inst, uint16_t reason, AgError *err)
{
    DicomElement *seq;
    DicomDataset *item;
    int rc = dicom_set_sequence(ev, seq_tag, &seq, err);
    if (rc == AG_OK) {
        rc = dicom_sequence_append(ev, seq, &item, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(item, 0x00081150, DICOM_VR_UI, cls, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(item, 0x00081155, DICOM_VR_UI, inst, err);
    }
    if (rc == AG_OK && reason != 0) {
        int64_t r = reason;   /* Failure Reason (0008,1197), PS3.4 J.3.3.1.1 */
        rc = dicom_set_ints(item, 0x00081197, DICOM_VR_US, &r, 1, err);
    }
    return rc;
}

/* Decide each reference; fill the event report data set. */
static int decide(SvcAssoc *sa, const DicomDataset *rq, DicomDataset *ev,
                  bool *all_ok, AgError *err)
{
    AgArena *a = dicom_dataset_arena(rq);
    const char *tx = dicom_get_string(rq, 0x00081195, a);
    const DicomElement *refs = dicom_dataset_find(rq, 0x00081199);
    if (tx == NULL || !dicom_uid_valid(tx, strlen(tx)) || refs == NULL ||
        refs->vr != DICOM_VR_SQ || refs->nitems == 0 ||
        refs->nitems > MAX_REFS) {
        return ag_error_set(err, AG_ERR_INVALID, "Transaction UID or "
                            "Referenced SOP Sequence missing or invalid");
    }
    int rc = dicom_set_string(ev, 0x00081195, DICOM_VR_UI, tx, err);
    *all_ok = true;
    for (uint32_t i = 0; i < refs->nitems && rc == AG_OK; i++) {
        const char *cls = dicom_get_string(refs->items[i], 0x00081150, a);
        const char *inst = dicom_get_string(refs->items[i], 0x00081155, a);
        uint16_t reason = 0;
        if (cls == NULL || inst == NULL) {
            reason = 0x0120;   /* missing attribute */
            cls = cls ? cls : "";
            inst = inst ? inst : "";
        } else {
            AgError verr;
            int v = store_instance_verify(svc__store_of(sa), inst, cls, &verr);
            reason = v == AG_OK ? 0
                     : v == AG_ERR_NOTFOUND ? 0x0112     /* no such object */
                     : v == AG_ERR_INVALID ? 0x0122      /* class mismatch */
                                           : 0x0110;     /* processing */
        }
        *all_ok = *all_ok && reason == 0;
        rc = add_ref(ev, reason == 0 ? 0x00081199 : 0x00081198, cls, inst,
                     reason, err);
    }
    return rc;
}

static int collect(void *ctx, const uint8_t *d, size_t n, AgError *err)
{
    int rc = ag_buf_append(ctx, d, n);
    return rc == AG_OK ? rc : ag_error_set(err, rc, "request too large");
}

/* Send the N-EVENT-REPORT-RQ of ev on context cid of assoc and wait for
 * its response. */
static int report(NetAssoc *assoc, uint8_t cid, uint16_t msg_id,
                  uint16_t event, const DicomDataset *ev, AgError *err)
{
    AgBuf out;
    ag_buf_init(&out, 0);
    int rc = dicom_write_dataset(ev, net_assoc_context_ts(assoc, cid), NULL,
                                 dicom_sink_buf, &out, err);
    DimseCommand e = {0};
    e.command = DIMSE_N_EVENT_REPORT_RQ;
    e.message_id = msg_id;
    e.dataset_type = 0x0000;
    e.event_type = event;
    e.remaining = e.completed = e.failed = e.warning = -1;
    ag_fmt(e.affected_class, sizeof e.affected_class, COMMIT_CLASS);
    ag_fmt(e.affected_instance, sizeof e.affected_instance, COMMIT_INSTANCE);
    if (rc == AG_OK) {
        rc = net_send_command(assoc, cid, &e, err);
    }
    if (rc == AG_OK) {
        rc = net_send_dataset_buf(assoc, cid, out.data, out.len, err);
    }
    ag_buf_deinit(&out);
    while (rc == AG_OK) {
        NetMessage resp;
        rc = net_recv_command(assoc, &resp, err);
        if (rc == AG_OK && resp.cmd.command == DIMSE_N_EVENT_REPORT_RSP &&
            resp.cmd.responded_id == e.message_id) {
            break;
        }
        if (rc == AG_OK) {
            rc = ag_error_set(err, AG_ERR_PARSE, "expected "
                              "N-EVENT-REPORT-RSP");
        }
    }
    return rc;
}

/* Request an association to node for the report: the commitment class
 * with Agora in the SCP role (J.3.3.1.3), both little endian syntaxes. */
static int open_for_report(SvcAssoc *sa, const StoreNode *node, SvcScu *u,
                           AgError *err)
{
    NetAssocParams *rq = ag_calloc(1, sizeof *rq);
    if (rq == NULL) {
        memset(u, 0, sizeof *u);
        u->fd = -1;
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    NetPresContext *c = &rq->contexts[0];
    rq->ncontexts = 1;
    c->id = 1;
    ag_fmt(c->abstract_syntax, sizeof c->abstract_syntax, COMMIT_CLASS);
    ag_fmt(c->syntaxes[0], sizeof c->syntaxes[0], DICOM_TS_EXPLICIT_LE);
    ag_fmt(c->syntaxes[1], sizeof c->syntaxes[1], DICOM_TS_IMPLICIT_LE);
    c->nsyntaxes = 2;
    rq->nroles = 1;
    ag_fmt(rq->roles[0].sop_class, sizeof rq->roles[0].sop_class,
           COMMIT_CLASS);
    rq->roles[0].scu = false;
    rq->roles[0].scp = true;
    int rc = svc__scu_request(u, node, svc__our_aet(sa),
                              svc__tls_client(sa), NULL, rq, NULL, err);
    ag_free(rq);
    if (rc == AG_OK &&
        net_assoc_find_context(u->assoc, COMMIT_CLASS, NULL) == 0) {
        rc = ag_error_set(err, AG_ERR_UNSUPPORTED, "%s accepted no storage "
                          "commitment context", node->aet);
    }
    return rc;
}

/* J.3.3.1.2: report on an association Agora opens to the SCU, which must
 * be a known node (its host and port come from there). */
static int report_on_new_association(SvcAssoc *sa, uint16_t event,
                                     const DicomDataset *ev, AgError *err)
{
    StoreNode node;
    if (store_node_get(svc__store_of(sa), sa->calling_ae, &node, err) !=
        AG_OK) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "%s is not a known node: "
                            "no address to report to", sa->calling_ae);
    }
    int rc = AG_ERR_IO;
    size_t n = sizeof NEW_ASSOC_WAIT_MS / sizeof NEW_ASSOC_WAIT_MS[0];
    for (size_t i = 0; i < n && rc != AG_OK && !svc__stopping(sa); i++) {
        usleep(NEW_ASSOC_WAIT_MS[i] * 1000u);
        SvcScu u;
        rc = open_for_report(sa, &node, &u, err);
        if (rc == AG_OK) {
            uint8_t cid = net_assoc_find_context(u.assoc, COMMIT_CLASS, NULL);
            rc = report(u.assoc, cid, 1, event, ev, err);
        }
        svc__scu_close(&u, rc == AG_OK);
        if (rc == AG_OK) {
            ag_log(AG_LOG_INFO, "dimse", "storage commitment result "
                   "reported to %s on a new association", node.aet);
        }
    }
    return rc;
}

int svc__commit(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    AgBuf in;
    ag_buf_init(&in, 16 << 20);
    int rc = net_recv_dataset(sa->assoc, m->context_id, collect, &in, err);
    if (rc != AG_OK) {
        ag_buf_deinit(&in);
        return rc;
    }
    AgArena *a = ag_arena_create(64 << 20);
    DicomDataset *rq = NULL, *ev = a ? dicom_dataset_create(a) : NULL;
    const char *ts = net_assoc_context_ts(sa->assoc, m->context_id);
    AgError derr;
    ag_error_clear(&derr);
    uint16_t status = DIMSE_SUCCESS;
    bool all_ok = false;
    if (ev == NULL) {
        status = DIMSE_PROCESSING_FAILURE;
    } else if (m->cmd.action_type != 1 ||
               strcmp(m->cmd.requested_instance, COMMIT_INSTANCE) != 0) {
        status = m->cmd.action_type != 1 ? 0x0123   /* no such action */
                                         : 0x0117;  /* invalid instance */
    } else if (!m->has_dataset ||
               dicom_read_dataset(in.data, in.len, ts, NULL, a, &rq, &derr) !=
                   AG_OK ||
               decide(sa, rq, ev, &all_ok, &derr) != AG_OK) {
        status = DIMSE_INVALID_ARGUMENT;
    }
    ag_buf_deinit(&in);
    /* N-ACTION-RSP (PS3.7 10.1.4.1.2) */
    DimseCommand r = {0};
    r.command = DIMSE_N_ACTION_RSP;
    r.responded_id = m->cmd.message_id;
    r.dataset_type = DIMSE_NO_DATASET;
    r.status = status;
    r.action_type = status == DIMSE_SUCCESS ? 1 : 0;
    r.remaining = r.completed = r.failed = r.warning = -1;
    ag_fmt(r.affected_class, sizeof r.affected_class, COMMIT_CLASS);
    ag_fmt(r.affected_instance, sizeof r.affected_instance, COMMIT_INSTANCE);
    rc = net_send_command(sa->assoc, m->context_id, &r, err);
    if (rc != AG_OK || status != DIMSE_SUCCESS) {
        if (status != DIMSE_SUCCESS) {
            ag_log(AG_LOG_WARN, "dimse", "storage commitment from %s refused "
                   "(%04x): %s", sa->calling_ae, status, derr.msg);
        }
        ag_arena_destroy(a);
        return rc;
    }
    /* N-EVENT-REPORT-RQ: event 1 = all committed, 2 = some failed. */
    uint16_t event = all_ok ? 1 : 2;
    rc = report(sa->assoc, m->context_id, (uint16_t)(m->cmd.message_id + 1),
                event, ev, err);
    if (rc != AG_OK) {
        AgError nerr;
        if (report_on_new_association(sa, event, ev, &nerr) != AG_OK) {
            ag_log(AG_LOG_ERROR, "dimse", "storage commitment result for %s "
                   "not delivered: %s (same association: %s)", sa->calling_ae,
                   nerr.msg, err->msg);
        }
    }
    ag_arena_destroy(a);
    return rc;
}
