/*
 * mpps.c — Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE
 * when a modality starts a step, N-SET as it goes and when it ends.  The
 * steps are kept, and the worklist follows them, by store_mpps_create and
 * store_mpps_set (store/mpps.c); this file turns DIMSE into those calls
 * and their outcomes into the statuses of F.7.2.1.3 and F.7.2.2.3.
 */
#include "svc_int.h"

#include <string.h>

#define MPPS_CLASS "1.2.840.10008.3.1.2.3.3"
#define REQUEST_MAX (16u << 20)

bool svc__is_mpps_class(const char *uid)
{
    return strcmp(uid, MPPS_CLASS) == 0;
}

static int collect(void *ctx, const uint8_t *d, size_t n, AgError *err)
{
    int rc = ag_buf_append(ctx, d, n);
    return rc == AG_OK ? rc : ag_error_set(err, rc, "request too large");
}

/* The status for a refusal of the store (PS3.4 F.7.2.1.3, F.7.2.2.3;
 * PS3.7 C.4): an attribute absent is 0120, one present but wrong 0106. */
static uint16_t status_of(int rc, const DicomDataset *ds, uint32_t bad_tag)
{
    switch (rc) {
    case AG_OK:
        return DIMSE_SUCCESS;
    case AG_ERR_EXISTS:
        return DIMSE_DUPLICATE_SOP_INSTANCE;
    case AG_ERR_NOTFOUND:
        return DIMSE_NO_SUCH_INSTANCE;
    case AG_ERR_INVALID:
        return bad_tag != 0 && dicom_dataset_find(ds, bad_tag) == NULL
                   ? DIMSE_MISSING_ATTRIBUTE
                   : DIMSE_INVALID_ATTRIBUTE_VALUE;
    default:
        return DIMSE_PROCESSING_FAILURE;   /* final step, or the index */
    }
}

static void audit(SvcAssoc *sa, char action, const char *uid,
                  const DicomDataset *ds, uint16_t status, const char *why,
                  AgArena *a)
{
    const char *study = NULL, *pps = NULL;
    const DicomElement *sq = ds ? dicom_dataset_find(ds, 0x00400270) : NULL;
    if (sq != NULL && sq->vr == DICOM_VR_SQ && sq->nitems > 0) {
        study = dicom_get_string(sq->items[0], 0x0020000d, a);
    }
    if (ds != NULL) {
        pps = dicom_get_string(ds, 0x00400252, a);
    }
    AuditEvent ev = {
        .event = AUDIT_PROCEDURE_RECORD, .action = action,
        .outcome = status == DIMSE_SUCCESS ? AUDIT_SUCCESS
                                           : AUDIT_MINOR_FAILURE,
        .patient_id = ds ? dicom_get_string(ds, 0x00100020, a) : NULL,
        .patient_name = ds ? dicom_get_string(ds, 0x00100010, a) : NULL,
        .study_uid = study, .sop_class = MPPS_CLASS,
        .detail = status != DIMSE_SUCCESS
                      ? why
                      : ag_arena_printf(a, "performed procedure step %s %s",
                                        uid, pps ? pps : ""),
    };
    svc__audit(sa, &ev);
}

/* Read and parse the request's data set into *ds (NULL when it has none
 * or it does not parse: *status says which). */
static int read_request(SvcAssoc *sa, const NetMessage *m, AgArena *a,
                        DicomDataset **ds, uint16_t *status, AgError *derr,
                        AgError *err)
{
    *ds = NULL;
    *status = DIMSE_SUCCESS;
    if (!m->has_dataset) {
        *status = DIMSE_MISSING_ATTRIBUTE;
        ag_error_set(derr, AG_ERR_INVALID, "no data set");
        return AG_OK;
    }
    AgBuf in;
    ag_buf_init(&in, REQUEST_MAX);
    int rc = net_recv_dataset(sa->assoc, m->context_id, collect, &in, err);
    const char *ts = net_assoc_context_ts(sa->assoc, m->context_id);
    if (rc == AG_OK && dicom_read_dataset(in.data, in.len, ts, NULL, a, ds,
                                          derr) != AG_OK) {
        *ds = NULL;
        *status = DIMSE_PROCESSING_FAILURE;   /* PS3.7 C.4.2: 0110 */
    }
    ag_buf_deinit(&in);
    return rc;
}

static int respond(SvcAssoc *sa, const NetMessage *m, uint16_t command,
                   const char *uid, uint16_t status, uint32_t bad_tag,
                   const char *comment, AgError *err)
{
    DimseCommand r = {0};
    r.command = command;
    r.responded_id = m->cmd.message_id;
    r.dataset_type = DIMSE_NO_DATASET;
    r.status = status;
    r.remaining = r.completed = r.failed = r.warning = -1;
    ag_fmt(r.affected_class, sizeof r.affected_class, MPPS_CLASS);
    ag_fmt(r.affected_instance, sizeof r.affected_instance, "%s", uid);
    if (status == DIMSE_MISSING_ATTRIBUTE ||
        status == DIMSE_INVALID_ATTRIBUTE_VALUE) {
        r.offending_element = bad_tag;   /* PS3.7 C.4.2 */
    }
    if (status != DIMSE_SUCCESS && comment != NULL) {
        ag_fmt(r.error_comment, sizeof r.error_comment, "%s", comment);
    }
    return net_send_command(sa->assoc, m->context_id, &r, err);
}

int svc__mpps(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    bool create = m->cmd.command == DIMSE_N_CREATE_RQ;
    char uid[65];
    ag_fmt(uid, sizeof uid, "%s", create ? m->cmd.affected_instance
                                         : m->cmd.requested_instance);
    AgArena *a = ag_arena_create(64 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomDataset *ds = NULL;
    uint16_t status;
    uint32_t bad_tag = 0;
    AgError derr;
    ag_error_clear(&derr);
    int rc = read_request(sa, m, a, &ds, &status, &derr, err);
    if (rc != AG_OK) {
        ag_arena_destroy(a);
        return rc;   /* the association failed */
    }
    if (status == DIMSE_SUCCESS && !(sa->who.verbs & ACCESS_UPLOAD)) {
        status = DIMSE_NOT_AUTHORIZED;
        ag_error_set(&derr, AG_ERR_DENIED, "%s may not report procedure "
                     "steps", sa->who.name);
    } else if (status == DIMSE_SUCCESS) {
        int src = create
                      ? store_mpps_create(svc__store_of(sa), uid, ds,
                                          svc__scope(sa), sa->calling_ae,
                                          &bad_tag, &derr)
                      : store_mpps_set(svc__store_of(sa), uid, ds,
                                       svc__scope(sa), &bad_tag, &derr);
        status = status_of(src, ds, bad_tag);
    }
    audit(sa, create ? 'C' : 'U', uid, ds, status, derr.msg, a);
    if (status != DIMSE_SUCCESS) {
        ag_log(AG_LOG_WARN, "dimse", "%s of %s from %s refused (%04x): %s",
               create ? "N-CREATE" : "N-SET", uid, sa->calling_ae, status,
               derr.msg);
    }
    rc = respond(sa, m, create ? DIMSE_N_CREATE_RSP : DIMSE_N_SET_RSP, uid,
                 status, bad_tag, derr.msg, err);
    ag_arena_destroy(a);
    return rc;
}
