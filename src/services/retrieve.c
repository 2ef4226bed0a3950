/*
 * retrieve.c — Query/Retrieve C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3).
 * The C-STORE sub-operations go through the Storage SCU in send.c, on the
 * C-GET association or on one C-MOVE opens to the destination.
 */
#include "svc_int.h"

#include <stdio.h>
#include <string.h>

#define MAX_RETRIEVE 100000            /* instances per request */

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

typedef SvcTarget Target;

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
    if (!(sa->who.verbs & ACCESS_DOWNLOAD)) {
        *status = DIMSE_NOT_AUTHORIZED;   /* PS3.7 C.5: 0124H */
        return ag_error_set(err, AG_ERR_DENIED, "%s may not retrieve",
                            sa->who.name);
    }
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
    StoreScope sc = *svc__scope(sa);
    sc.no_glass = true;   /* break-the-glass grants view, not retrieval */
    StoreQuery q = {.level = STORE_LEVEL_INSTANCE, .keys = keys,
                    .limit = MAX_RETRIEVE, .scope = &sc};
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

/* Count one finished sub-operation (PS3.4 C.4.2.1.4: completed, warning,
 * failed; failures are listed in the final response). */
static void tally(Counts *c, Targets *failed, const Target *t, uint16_t st)
{
    c->remaining--;
    if (st == DIMSE_SUCCESS) {
        c->completed++;
    } else if (svc__store_ok(st)) {
        c->warning++;
    } else {
        c->failed++;
        push_target(failed, t);
    }
}

/* ---- C-GET ---------------------------------------------------------------------- */

/* One audit record per retrieve request (PS3.15 A.5.3.5: Instances
 * Transferred, action R). */
static void audit_retrieve(SvcAssoc *sa, const char *what,
                           const DicomDataset *id, const char *dest,
                           const Counts *c, uint16_t status, AgArena *a)
{
    const char *study = id != NULL
        ? dicom_get_string(id, DICOM_TAG_STUDY_INSTANCE_UID, a) : NULL;
    char detail[160];
    ag_fmt(detail, sizeof detail, "%s: status %04x, %d completed, %d failed",
           what, status, c->completed, c->failed);
    AuditEvent ev = {.event = AUDIT_INSTANCES_TRANSFERRED, .action = 'R',
                     .outcome = status == DIMSE_SUCCESS ? AUDIT_SUCCESS
                                : c->completed > 0 ? AUDIT_MINOR_FAILURE
                                                   : AUDIT_SERIOUS_FAILURE,
                     .study_uid = study && study[0] ? study : NULL,
                     .destination = dest,
                     .count = c->completed > 0 ? (uint64_t)c->completed : 0,
                     .detail = detail};
    svc__audit(sa, &ev);
}

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
    audit_retrieve(sa, "C-GET", id, sa->calling_ae, &c, status, a);
    ag_free(t.v);
    ag_free(failed.v);
    ag_arena_destroy(a);
    return rc;
}

/* ---- C-MOVE --------------------------------------------------------------------- */

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
    SvcScu sub = {.fd = -1};
    bool sub_ok = false;
    if (rc == AG_OK && status == DIMSE_SUCCESS && t.n > 0) {
        sub_ok = svc__scu_open(&sub, &node, svc__our_aet(sa),
                               svc__tls_client(sa), NULL, t.v, t.n, NULL,
                               &qerr) == AG_OK;
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
            if (svc__send_instance(sub.assoc, next_id++, t.v[i].sop,
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
    svc__scu_close(&sub, sub_ok);
    if (rc == AG_OK) {
        if (status == DIMSE_SUCCESS) {
            status = final_status(&c, cancelled);
        }
        rc = send_rsp(sa->assoc, m, DIMSE_C_MOVE_RSP, status, &c, &failed,
                      status == DIMSE_SUCCESS ? NULL : qerr.msg, err);
    }
    audit_retrieve(sa, "C-MOVE", id, m->cmd.move_destination, &c, status,
                   a);
    ag_free(t.v);
    ag_free(failed.v);
    ag_arena_destroy(a);
    return rc;
}
