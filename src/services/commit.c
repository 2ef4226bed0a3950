/*
 * commit.c — Storage Commitment Push Model SCP (PS3.4 Annex J).
 *
 * N-ACTION-RQ (Request Storage Commitment) names instances by SOP Class and
 * Instance UID under a Transaction UID.  Agora commits an instance only if
 * it is stored and its blob still matches its checksum (each is re-read
 * and re-hashed), answers the N-ACTION, then reports the outcome with an
 * N-EVENT-REPORT on the same association (J.3.3.1), waiting for its
 * response.
 */
#include "svc_int.h"

#include <string.h>

#define COMMIT_CLASS "1.2.840.10008.1.20.1"
#define COMMIT_INSTANCE "1.2.840.10008.1.20.1.1"
#define MAX_REFS 65536

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
    AgBuf out;
    ag_buf_init(&out, 0);
    rc = dicom_write_dataset(ev, ts, NULL, dicom_sink_buf, &out, err);
    DimseCommand e = {0};
    e.command = DIMSE_N_EVENT_REPORT_RQ;
    e.message_id = (uint16_t)(m->cmd.message_id + 1);
    e.dataset_type = 0x0000;
    e.event_type = all_ok ? 1 : 2;
    e.remaining = e.completed = e.failed = e.warning = -1;
    ag_fmt(e.affected_class, sizeof e.affected_class, COMMIT_CLASS);
    ag_fmt(e.affected_instance, sizeof e.affected_instance, COMMIT_INSTANCE);
    if (rc == AG_OK) {
        rc = net_send_command(sa->assoc, m->context_id, &e, err);
    }
    if (rc == AG_OK) {
        rc = net_send_dataset_buf(sa->assoc, m->context_id, out.data, out.len,
                                  err);
    }
    ag_buf_deinit(&out);
    ag_arena_destroy(a);
    while (rc == AG_OK) {
        NetMessage resp;
        rc = net_recv_command(sa->assoc, &resp, err);
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
