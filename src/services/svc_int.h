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
    char calling_ae[17];
    char remote[64];
} SvcAssoc;

/* Handlers: answer one message (its data set not yet read). */
int svc__echo(SvcAssoc *sa, const NetMessage *m, AgError *err);
int svc__store(SvcAssoc *sa, const NetMessage *m, AgError *err);

/* Is this a storage SOP class we accept (PS3.4 B.5)? */
bool svc__is_storage_class(const char *uid);

Store *svc__store_of(SvcAssoc *sa);
void svc__count(SvcAssoc *sa, int what);
enum { SVC_COUNT_ECHO, SVC_COUNT_STORED, SVC_COUNT_STORE_FAILED };

/* Send a response with just a status (and optional error comment). */
int svc__respond(SvcAssoc *sa, const NetMessage *m, uint16_t command,
                 uint16_t status, const char *comment, AgError *err);

#endif
