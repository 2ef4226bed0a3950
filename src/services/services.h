/*
 * services.h — DIMSE service classes (PS3.4, PS3.7) over net/ and store/:
 * the DICOM listener of `agora serve`.
 *
 *  - Verification SCP (C-ECHO, PS3.4 Annex A)
 *  - Storage SCP for every storage SOP class in the dictionary (PS3.4
 *    Annex B): success only after the ingest pipeline made it durable
 *  - Query/Retrieve SCP, Patient Root and Study Root (PS3.4 C): C-FIND,
 *    C-MOVE to known nodes, C-GET on the same association
 *  - Storage Commitment Push Model SCP (PS3.4 J)
 *
 * Association policy (SECURITY.md rules 5, 7): the called AE title must be
 * ours; the calling AE title must be a known node (`agora node add`) unless
 * accept_unknown_ae is set; at most max_associations at once, each with
 * ARTIM and idle timeouts.
 */
#ifndef AG_SERVICES_H
#define AG_SERVICES_H

#include "net/net.h"
#include "store/store.h"

typedef struct SvcServer SvcServer;

typedef struct SvcConfig {
    const char *aet;               /* our AE title (default "AGORA") */
    const char *bind_addr;         /* default 127.0.0.1 */
    uint16_t port;                 /* 0 = pick a free port (tests) */
    uint32_t max_associations;     /* default 64 */
    NetLimits limits;
    bool accept_unknown_ae;        /* default false */
    bool fuzzy_names;              /* C-FIND PN matching ignores case */
    Store *store;                  /* borrowed */
    NetTls *tls;                   /* this listener speaks TLS (borrowed) */
    NetTls *tls_client;            /* for C-MOVE to nodes marked tls */
} SvcConfig;

/** Bind, listen and start accepting in a background thread. */
int svc_server_start(const SvcConfig *cfg, SvcServer **out, AgError *err);
/** The port actually bound. */
uint16_t svc_server_port(const SvcServer *s);
/** Stop accepting, end running associations, wait for them. NULL ok. */
void svc_server_stop(SvcServer *s);

/* Statistics for /metrics and logs. */
typedef struct SvcStats {
    uint64_t associations_accepted, associations_rejected, aborted;
    uint64_t echo, stored, store_failed;
    uint32_t active;
} SvcStats;
void svc_server_stats(SvcServer *s, SvcStats *out);

#endif
