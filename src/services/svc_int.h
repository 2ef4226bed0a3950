/* svc_int.h — internal to src/services/. */
#ifndef AG_SVC_INT_H
#define AG_SVC_INT_H

#include "services.h"

#include "access/access.h"
#include "audit/audit.h"

#include <pthread.h>

/* One study's C-STOREs on an association. */
typedef struct SvcTally {
    uint32_t hash;              /* of study, to skip most comparisons */
    uint32_t stored, failed;
    char study[65];
} SvcTally;

/* One association being served. */
typedef struct SvcAssoc {
    struct SvcServer *server;
    NetAssoc *assoc;
    NetTransport transport;
    NetTlsSession *tls;
    char calling_ae[17];
    char remote[64];
    char cert_cn[128];   /* verified TLS client certificate's CN, or "" */
    /* Who the peer is: a node's department, a user from user identity
     * negotiation, or the whole archive (trusted node, unknown AEs when
     * accepted).  Queries and retrievals see only who.scope. */
    AccessPrincipal who;
    char called_ae[17];
    /* Instances stored on this association, per study: one audit record
     * each (Instances Transferred) when the association ends (or, past
     * SVC_TALLY_MAX studies, when the oldest makes room). */
    struct SvcTally *tally;     /* heap, ntally used of tally_cap */
    int ntally, tally_cap;
    int tally_last;             /* the entry hit last: the usual next hit */
} SvcAssoc;

/* Studies counted at once per association.  A modality sends one study at
 * a time; a migration may send hundreds interleaved, each of which should
 * still get one record rather than one per switch of study. */
#define SVC_TALLY_MAX 4096

/* Audit (PS3.15 A.5): fill who/where from the association and record. */
void svc__audit(SvcAssoc *sa, AuditEvent *ev);
/* Count one C-STORE for the association's per-study record. */
void svc__audit_store(SvcAssoc *sa, const char *study, bool ok);
/* Record every study counted so far and forget them. */
void svc__audit_store_flush(SvcAssoc *sa);
/* "PatientID=X StudyDate=Y ..." of the non-empty keys, for Query records. */
char *svc__keys_text(const DicomDataset *id, AgArena *a);

/* The server is shutting down: work that may wait should not. */
bool svc__stopping(SvcAssoc *sa);

/* The association's scope, for StoreQuery.scope. */
const StoreScope *svc__scope(SvcAssoc *sa);

/* Handlers: answer one message (its data set not yet read). */
int svc__echo(SvcAssoc *sa, const NetMessage *m, AgError *err);
int svc__store(SvcAssoc *sa, const NetMessage *m, AgError *err);

#define SVC_PATIENT_ROOT_FIND "1.2.840.10008.5.1.4.1.2.1.1"
#define SVC_PATIENT_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.1.2"
#define SVC_PATIENT_ROOT_GET "1.2.840.10008.5.1.4.1.2.1.3"
#define SVC_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define SVC_STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define SVC_STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"
/* Modality Worklist Information Model - FIND (PS3.4 K.6.1) */
#define SVC_WORKLIST_FIND "1.2.840.10008.5.1.4.31"

int svc__find(SvcAssoc *sa, const NetMessage *m, AgError *err);
/* Modality Performed Procedure Step SCP (mpps.c): N-CREATE and N-SET. */
int svc__mpps(SvcAssoc *sa, const NetMessage *m, AgError *err);
bool svc__is_mpps_class(const char *uid);
bool svc__is_find_class(const char *uid);
int svc__read_identifier(SvcAssoc *sa, const NetMessage *m, AgArena *a,
                         DicomDataset **out, uint16_t *status, AgError *err);
bool svc__query_level(const DicomDataset *id, bool patient_root,
                      StoreLevel *level, AgArena *a);
bool svc__fuzzy_names(SvcAssoc *sa);
const char *svc__our_aet(SvcAssoc *sa);
NetTls *svc__tls_client(SvcAssoc *sa);
int svc__get(SvcAssoc *sa, const NetMessage *m, AgError *err);
int svc__move(SvcAssoc *sa, const NetMessage *m, AgError *err);
bool svc__is_get_class(const char *uid);
bool svc__is_move_class(const char *uid);
bool svc__is_commit_class(const char *uid);
int svc__commit(SvcAssoc *sa, const NetMessage *m, AgError *err);
int svc__send_instance(NetAssoc *a, uint16_t msg_id, const char *sop_uid,
                       Store *store, const char *orig_ae, uint16_t orig_id,
                       uint16_t cancel_id, bool *cancel, uint16_t *status,
                       AgError *err);

/* Is this a storage SOP class we accept (PS3.4 B.5)? */
bool svc__is_storage_class(const char *uid);

Store *svc__store_of(SvcAssoc *sa);
void svc__count(SvcAssoc *sa, int what);
enum { SVC_COUNT_ECHO, SVC_COUNT_STORED, SVC_COUNT_STORE_FAILED };

/* Send a response with just a status (and optional error comment). */
int svc__respond(SvcAssoc *sa, const NetMessage *m, uint16_t command,
                 uint16_t status, const char *comment, AgError *err);

/* ---- Storage SCU (send.c): C-MOVE sub-operations and svc_send -------- */

/* PS3.4 B.2.3: a C-STORE status that means stored (success or warning). */
bool svc__store_ok(uint16_t status);

/* An instance to send: SOP Instance UID, SOP Class UID ("" when it is not
 * stored) and stored transfer syntax. */
typedef struct SvcTarget {
    char sop[65];
    char cls[65];
    char ts[65];
} SvcTarget;

/* An association we requested from a node, and what it runs on. */
typedef struct SvcScu {
    int fd;                  /* -1 when not connected */
    NetTransport tr;         /* the association points at it: do not move */
    NetTlsSession *tls;
    NetAssoc *assoc;         /* may be set even when the request failed */
} SvcScu;

/*
 * Connect to node (TLS when the node says so, with tls_client; NULL makes
 * such nodes fail) and request an association from our_aet, proposing one
 * presentation context per SOP class of t[0..n): the stored syntaxes
 * first, then Explicit and Implicit VR Little Endian.  lim may be NULL
 * (defaults); rj (may be NULL) receives an A-ASSOCIATE-RJ (result 0 when
 * there was none).  Whatever the result, call svc__scu_close.
 */
int svc__scu_open(SvcScu *u, const StoreNode *node, const char *our_aet,
                  NetTls *tls_client, const NetLimits *lim,
                  const SvcTarget *t, size_t n, NetReject *rj, AgError *err);
/* The same with the presentation contexts (and role selections, ...)
 * the caller put in rq; the rest of rq is filled in here. */
int svc__scu_request(SvcScu *u, const StoreNode *node, const char *our_aet,
                     NetTls *tls_client, const NetLimits *lim,
                     NetAssocParams *rq, NetReject *rj, AgError *err);
/* Release (release true) or abort the association, end TLS, close. */
void svc__scu_close(SvcScu *u, bool release);

#endif
