/*
 * find.c — C-FIND SCP: Query/Retrieve in the Patient Root and Study Root
 * information models (PS3.4 C.4.1, C.6), matched by store_query(), the
 * same implementation QIDO-RS uses; and the Modality Worklist information
 * model (PS3.4 K.4.1, K.6), matched by store_worklist_find().
 */
#include "svc_int.h"

#include <string.h>

#define IDENTIFIER_MAX (1u << 20)

bool svc__is_find_class(const char *uid)
{
    return strcmp(uid, SVC_PATIENT_ROOT_FIND) == 0 ||
           strcmp(uid, SVC_STUDY_ROOT_FIND) == 0 ||
           strcmp(uid, SVC_WORKLIST_FIND) == 0;
}

static int collect(void *ctx, const uint8_t *data, size_t len, AgError *err)
{
    int rc = ag_buf_append(ctx, data, len);
    return rc == AG_OK ? rc : ag_error_set(err, rc, "identifier too large");
}

/* Receive and parse the identifier that follows a C-FIND/MOVE/GET-RQ. */
int svc__read_identifier(SvcAssoc *sa, const NetMessage *m, AgArena *a,
                         DicomDataset **out, uint16_t *status,
                         AgError *err)
{
    AgBuf buf;
    ag_buf_init(&buf, IDENTIFIER_MAX);
    *status = DIMSE_SUCCESS;
    int rc = net_recv_dataset(sa->assoc, m->context_id, collect, &buf, err);
    if (rc == AG_OK) {
        if (!m->has_dataset || buf.len == 0 || buf.len >= IDENTIFIER_MAX) {
            *status = DIMSE_ERROR_DATASET_MISMATCH;
            ag_error_set(err, AG_ERR_INVALID, "no usable identifier");
        } else {
            const char *ts = net_assoc_context_ts(sa->assoc, m->context_id);
            DicomReadOptions ro = {.max_depth = 8};
            if (dicom_read_dataset(buf.data, buf.len, ts, &ro, a, out, err) !=
                AG_OK) {
                *status = DIMSE_ERROR_CANNOT_UNDERSTAND;
            }
        }
    }
    ag_buf_deinit(&buf);
    return rc;
}

/* Query level and model from an identifier; false if not allowed. */
bool svc__query_level(const DicomDataset *id, bool patient_root,
                      StoreLevel *level, AgArena *a)
{
    const char *v = dicom_get_string(id, DICOM_TAG(0x0008, 0x0052), a);
    if (v == NULL) {
        return false;
    }
    if (strcmp(v, "PATIENT") == 0 && patient_root) {
        *level = STORE_LEVEL_PATIENT;
    } else if (strcmp(v, "STUDY") == 0) {
        *level = STORE_LEVEL_STUDY;
    } else if (strcmp(v, "SERIES") == 0) {
        *level = STORE_LEVEL_SERIES;
    } else if (strcmp(v, "IMAGE") == 0) {
        *level = STORE_LEVEL_INSTANCE;
    } else {
        return false;
    }
    return true;
}

typedef struct FindCtx {
    SvcAssoc *sa;
    const NetMessage *m;
    const char *ts;
    AgBuf out;
    int rc;
    AgError *err;
    bool cancelled;
    uint32_t sent;
} FindCtx;

static int send_match(void *ctx, const DicomDataset *match)
{
    FindCtx *f = ctx;
    if (net_cancel_requested(f->sa->assoc, f->m->cmd.message_id)) {
        f->cancelled = true;
        return 1;
    }
    ag_buf_reset(&f->out);
    f->rc = dicom_write_dataset(match, f->ts, NULL, dicom_sink_buf, &f->out,
                                f->err);
    if (f->rc != AG_OK) {
        return 1;
    }
    DimseCommand r = {0};
    r.command = DIMSE_C_FIND_RSP;
    r.responded_id = f->m->cmd.message_id;
    r.dataset_type = 0x0000;   /* a data set follows */
    r.status = DIMSE_PENDING;
    r.remaining = r.completed = r.failed = r.warning = -1;
    memcpy(r.affected_class, f->m->cmd.affected_class,
           sizeof r.affected_class);
    f->rc = net_send_command(f->sa->assoc, f->m->context_id, &r, f->err);
    if (f->rc == AG_OK) {
        f->rc = net_send_dataset_buf(f->sa->assoc, f->m->context_id,
                                     f->out.data, f->out.len, f->err);
    }
    f->sent++;
    return f->rc != AG_OK;
}

int svc__find(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    AgArena *a = ag_arena_create(8 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomDataset *id = NULL;
    uint16_t status;
    AgError qerr;
    ag_error_clear(&qerr);
    int rc = svc__read_identifier(sa, m, a, &id, &status, &qerr);
    if (rc != AG_OK) {
        *err = qerr;
        ag_arena_destroy(a);
        return rc;   /* the association failed */
    }
    bool patient_root = strcmp(m->cmd.affected_class,
                               SVC_PATIENT_ROOT_FIND) == 0;
    /* The worklist model has no Query/Retrieve Level (PS3.4 K.6.1.1). */
    bool worklist = strcmp(m->cmd.affected_class, SVC_WORKLIST_FIND) == 0;
    StoreLevel level = STORE_LEVEL_STUDY;
    if (status == DIMSE_SUCCESS && !(sa->who.verbs & ACCESS_VIEW)) {
        status = DIMSE_NOT_AUTHORIZED;   /* PS3.7 C.5: 0124H */
        ag_error_set(&qerr, AG_ERR_DENIED, "%s may not query",
                     sa->who.name);
    } else if (status == DIMSE_SUCCESS && !worklist &&
        !svc__query_level(id, patient_root, &level, a)) {
        status = DIMSE_ERROR_DATASET_MISMATCH;
        ag_error_set(&qerr, AG_ERR_INVALID, "Query/Retrieve Level (0008,0052) "
                     "missing or not valid for this model");
    }
    FindCtx f = {.sa = sa, .m = m, .err = &qerr,
                 .ts = net_assoc_context_ts(sa->assoc, m->context_id)};
    ag_buf_init(&f.out, 0);
    if (status == DIMSE_SUCCESS) {
        StoreQuery q = {.level = level, .keys = id,
                        .patient_root = patient_root, .hierarchical = true,
                        .fuzzy = svc__fuzzy_names(sa),
                        .scope = svc__scope(sa)};
        int qrc = worklist
                      ? store_worklist_find(svc__store_of(sa), id, q.scope,
                                            q.fuzzy, send_match, &f, &qerr)
                      : store_query(svc__store_of(sa), &q, send_match, &f,
                                    NULL, &qerr);
        AuditEvent aev = {.event = AUDIT_QUERY, .action = 'E',
                          .outcome = qrc == AG_OK ? AUDIT_SUCCESS
                                                  : AUDIT_MINOR_FAILURE,
                          .sop_class = m->cmd.affected_class,
                          .detail = svc__keys_text(id, a)};
        svc__audit(sa, &aev);
        if (f.rc != AG_OK) {
            *err = qerr;   /* sending failed: the association is gone */
            ag_buf_deinit(&f.out);
            ag_arena_destroy(a);
            return f.rc;
        }
        if (qrc == AG_ERR_INVALID) {
            status = DIMSE_ERROR_DATASET_MISMATCH;
        } else if (qrc != AG_OK) {
            status = DIMSE_UNABLE_TO_PROCESS;
        } else if (f.cancelled) {
            status = DIMSE_CANCEL;
        }
    }
    ag_buf_deinit(&f.out);
    ag_arena_destroy(a);
    if (status != DIMSE_SUCCESS && status != DIMSE_CANCEL) {
        ag_log(AG_LOG_WARN, "dimse", "C-FIND from %s failed (%04x): %s",
               sa->calling_ae, status, qerr.msg);
    }
    return svc__respond(sa, m, DIMSE_C_FIND_RSP, status,
                        status == DIMSE_SUCCESS || status == DIMSE_CANCEL
                            ? NULL : qerr.msg, err);
}
