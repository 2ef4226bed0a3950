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
    /* Each also holds when the store's run-time setting of the same name
     * is true (store_setting_bool, read at each use; `agora serve` sets
     * them there, so that they can change while it runs). */
    bool accept_unknown_ae;        /* default false */
    bool fuzzy_names;              /* C-FIND PN matching ignores case */
    /* Transfer syntax UIDs, comma-separated, that Agora accepts before
     * any other a peer proposes in a presentation context, in this order
     * (e.g. JPEG-LS lossless first, to store compressed what modalities
     * can send so); NULL: uncompressed preferred (server.c, negotiate). */
    const char *prefer_ts;
    Store *store;                  /* borrowed */
    NetTls *tls;                   /* this listener speaks TLS (borrowed) */
    NetTls *tls_client;            /* for C-MOVE to nodes marked tls */
    /* Users and scopes (issue 7; borrowed, may be NULL: then every
     * admitted peer sees the whole archive). */
    struct Access *access;
    struct AuditLog *audit;        /* borrowed; NULL: nothing recorded */
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

/* ---- Storage SCU: sending stored instances to a node (send.c) ----------- */

typedef struct SvcSendConfig {
    const char *aet;               /* our calling AE title (default AGORA) */
    Store *store;                  /* borrowed */
    NetTls *tls_client;            /* for nodes marked tls (borrowed); NULL:
                                    * sending to them fails */
    NetLimits limits;              /* ARTIM and idle timers; 0 = defaults */
} SvcSendConfig;

/* Called once before the association is requested (0, 0, NULL) and after
 * each instance with the counts so far; failed_uid is that instance's SOP
 * Instance UID when it failed, else NULL.  Returning false cancels: the
 * association is released after the instance in flight. */
typedef bool (*SvcSendProgress)(void *ctx, size_t sent, size_t failed,
                                const char *failed_uid);

/**
 * C-STORE the stored instances sop_uids[0..n) to node on one association
 * (PS3.4 B): one presentation context per SOP class, the stored syntax
 * proposed first plus the uncompressed ones; an instance whose syntax the
 * node did not accept is re-encoded (decoded by the codecs when
 * compressed).  TLS when node->tls.  The caller decides what may be sent:
 * the UIDs are not scoped here.  At most 100000 instances.
 * @return AG_OK when the association ran to its end or progress cancelled
 *         (failed instances are counted through progress, not here); an
 *         error naming the node when it could not be reached (AG_ERR_IO),
 *         refused the association (AG_ERR_DENIED, with the reason) or the
 *         association broke on the way.  Blocking; thread-safe.
 */
int svc_send(const SvcSendConfig *cfg, const StoreNode *node,
             const char *const *sop_uids, size_t n, SvcSendProgress progress,
             void *ctx, AgError *err);

#endif
