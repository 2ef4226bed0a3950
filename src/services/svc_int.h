/* svc_int.h — internal to src/services/. */
#ifndef AG_SVC_INT_H
#define AG_SVC_INT_H

#include "services.h"

#include <pthread.h>

/* One association being served. */
typedef struct SvcAssoc {
    struct SvcServer *server;
    NetAssoc *assoc;
    NetTransport transport;
    NetTlsSession *tls;
    char calling_ae[17];
    char remote[64];
} SvcAssoc;

/* Handlers: answer one message (its data set not yet read). */
int svc__echo(SvcAssoc *sa, const NetMessage *m, AgError *err);
int svc__store(SvcAssoc *sa, const NetMessage *m, AgError *err);

#define SVC_PATIENT_ROOT_FIND "1.2.840.10008.5.1.4.1.2.1.1"
#define SVC_PATIENT_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.1.2"
#define SVC_PATIENT_ROOT_GET "1.2.840.10008.5.1.4.1.2.1.3"
#define SVC_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define SVC_STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define SVC_STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"

int svc__find(SvcAssoc *sa, const NetMessage *m, AgError *err);
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

#endif
