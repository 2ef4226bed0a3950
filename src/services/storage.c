/*
 * storage.c — Verification SCP (PS3.4 Annex A) and Storage SCP (PS3.4
 * Annex B).
 *
 * A C-STORE data set is received behind a Part 10 header built from the
 * command (PS3.10 §7.1) into a StoreSpool, which hashes each PDV as it
 * arrives and keeps the bytes in memory while they are small (a CT slice
 * is) and in a file in the store's tmp directory once they outgrow what
 * the index stages (the file becomes the blob by a rename).  So the work
 * overlaps with the sender's, and ingest neither copies nor reads the
 * bytes again.  The response goes out only after ingest returns, i.e.
 * after the instance is durable (DESIGN.md §4).  Memory per association
 * stays bounded: at most the spool's 1 MB plus one PDU, whatever the
 * instance's size.
 */
#include "svc_int.h"

#include <string.h>

int svc__echo(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    if (m->has_dataset) {
        return ag_error_set(err, AG_ERR_PARSE, "C-ECHO-RQ with a data set");
    }
    svc__count(sa, SVC_COUNT_ECHO);
    return svc__respond(sa, m, DIMSE_C_ECHO_RSP, DIMSE_SUCCESS, NULL, err);
}

/* Where a data set is received: the store's spool (hashed and written as
 * it arrives), and the first failure, kept for the response. */
typedef struct Spool {
    StoreSpool *sp;
    int rc;
    AgError err;
} Spool;

static int spool_sink(void *ctx, const uint8_t *data, size_t len,
                      AgError *err)
{
    Spool *sp = ctx;
    (void)err;
    if (sp->rc == AG_OK) {
        sp->rc = store_spool_write(sp->sp, data, len, &sp->err);
    }
    return sp->rc;
}

static int buf_sink(void *ctx, const void *data, size_t len, AgError *err)
{
    (void)err;
    return spool_sink(ctx, data, len, NULL);
}

/* Preamble + meta group for a data set arriving in ts (PS3.10 §7.1). */
static int write_header(Spool *sp, const DimseCommand *c, const char *ts,
                        const char *calling_ae, AgError *err)
{
    AgArena *a = ag_arena_create(1 << 20);
    if (a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    DicomFile f = {0};
    f.dataset = dicom_dataset_create(a);
    int rc = f.dataset == NULL ? AG_ERR_NOMEM : AG_OK;
    if (rc == AG_OK) {
        rc = dicom_set_string(f.dataset, DICOM_TAG_SOP_CLASS_UID, 0,
                              c->affected_class, err);
    }
    if (rc == AG_OK) {
        rc = dicom_set_string(f.dataset, DICOM_TAG_SOP_INSTANCE_UID, 0,
                              c->affected_instance, err);
    }
    if (rc == AG_OK) {
        rc = dicom_file_build_meta(&f, ts, err);
    }
    if (rc == AG_OK && calling_ae[0] != '\0') {
        rc = dicom_set_string(f.meta, DICOM_TAG_SOURCE_AE_TITLE, DICOM_VR_AE,
                              calling_ae, err);
    }
    if (rc == AG_OK) {
        f.dataset = dicom_dataset_create(a);   /* the body is appended */
        rc = f.dataset == NULL
            ? ag_error_set(err, AG_ERR_NOMEM, "out of memory")
            : dicom_write_file(&f, NULL, NULL, buf_sink, sp, err);
    }
    ag_arena_destroy(a);
    return rc;
}

/* Map an ingest failure to the C-STORE status of PS3.4 B.2.3. */
static uint16_t store_status(int code)
{
    switch (code) {
    case AG_ERR_PARSE: return DIMSE_ERROR_CANNOT_UNDERSTAND;   /* C000 */
    case AG_ERR_INVALID: return DIMSE_ERROR_DATASET_MISMATCH;  /* A900 */
    case AG_ERR_EXISTS: return DIMSE_DUPLICATE_SOP_INSTANCE;   /* 0111 */
    case AG_ERR_LIMIT:
    case AG_ERR_IO:
    case AG_ERR_NOMEM: return DIMSE_REFUSED_OUT_OF_RESOURCES;   /* A700 */
    default: return DIMSE_PROCESSING_FAILURE;                   /* 0110 */
    }
}

int svc__store(SvcAssoc *sa, const NetMessage *m, AgError *err)
{
    Store *store = svc__store_of(sa);
    const char *ts = net_assoc_context_ts(sa->assoc, m->context_id);
    const char *as = net_assoc_context_as(sa->assoc, m->context_id);
    Spool sp = {0};
    AgError serr;
    ag_error_clear(&serr);
    ag_error_clear(&sp.err);
    uint16_t status = DIMSE_SUCCESS;
    if (!m->has_dataset) {
        return svc__respond(sa, m, DIMSE_C_STORE_RSP,
                            DIMSE_MISTYPED_ARGUMENT, "no data set", err);
    }
    if (!(sa->who.verbs & ACCESS_UPLOAD)) {
        /* PS3.7 C.5.x general status 0124H: Refused: Not Authorized. */
        status = DIMSE_NOT_AUTHORIZED;
        ag_error_set(&serr, AG_ERR_DENIED, "%s may not store", sa->who.name);
    } else if (as == NULL || strcmp(as, m->cmd.affected_class) != 0 ||
        !svc__is_storage_class(m->cmd.affected_class)) {
        status = DIMSE_SOP_CLASS_NOT_SUPPORTED;
        ag_error_set(&serr, AG_ERR_INVALID, "SOP class does not match the "
                     "presentation context");
    } else if (!dicom_uid_valid(m->cmd.affected_instance,
                                strlen(m->cmd.affected_instance))) {
        status = DIMSE_INVALID_ARGUMENT;
        ag_error_set(&serr, AG_ERR_INVALID, "invalid Affected SOP Instance "
                     "UID");
    } else if (store_spool_open(store, &sp.sp, &serr) != AG_OK ||
               write_header(&sp, &m->cmd, ts, sa->calling_ae, &serr) !=
                   AG_OK) {
        status = DIMSE_REFUSED_OUT_OF_RESOURCES;
    }
    /* Always read the data set to its end, so the association stays in
     * step whatever we decided. */
    int rc = net_recv_dataset(sa->assoc, m->context_id,
                              status == DIMSE_SUCCESS ? spool_sink : NULL,
                              &sp, err);
    if (rc == AG_OK && status == DIMSE_SUCCESS && sp.rc != AG_OK) {
        status = DIMSE_REFUSED_OUT_OF_RESOURCES;   /* disk full, too big */
        serr = sp.err;
    }
    if (rc != AG_OK || status != DIMSE_SUCCESS) {
        store_spool_discard(sp.sp);
        if (rc != AG_OK) {
            return rc;   /* the association itself failed */
        }
    } else {
        StoreSource src = {.calling_ae = sa->calling_ae,
                           .remote_addr = sa->remote, .via = "dimse",
                           .expect_sop_class = m->cmd.affected_class,
                           .expect_sop_instance = m->cmd.affected_instance,
                           .user = sa->who.user_id,
                           .dept = sa->who.kind == ACCESS_KIND_NODE &&
                                           sa->who.scope.ndepts == 1
                                       ? sa->who.scope.depts[0]
                                       : 0};
        StoreResult res;
        int irc = store_ingest_spool(store, sp.sp, &src, &res, &serr);
        if (irc != AG_OK) {
            status = store_status(irc);
        }
        svc__audit_store(sa, irc == AG_OK ? res.study_uid : "", irc == AG_OK);
    }
    if (status == DIMSE_SUCCESS) {
        svc__count(sa, SVC_COUNT_STORED);
    } else {
        svc__count(sa, SVC_COUNT_STORE_FAILED);
        ag_log(AG_LOG_WARN, "dimse", "C-STORE from %s failed (%04x): %s",
               sa->calling_ae, status, serr.msg);
    }
    return svc__respond(sa, m, DIMSE_C_STORE_RSP, status,
                        status == DIMSE_SUCCESS ? NULL : serr.msg, err);
}
