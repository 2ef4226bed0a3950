/*
 * net.h — the DICOM upper layer (PS3.8) and DIMSE messages (PS3.7).
 *
 * Three parts, each usable alone:
 *  1. PDU codec (pdu.c): parse and encode the seven PDUs of PS3.8 §9.3 with
 *     every sub-item.  Pure functions over byte buffers, fuzzed.
 *  2. Associations (assoc.c): a NetAssoc runs the PS3.8 §9.2 state machine
 *     over a connected socket (plain or TLS): negotiation as acceptor or
 *     requestor, P-DATA with PDV fragmentation both ways, release, abort,
 *     ARTIM and idle timers, maximum PDU length enforcement.
 *  3. DIMSE (dimse.c): command sets (group 0000, always Implicit VR Little
 *     Endian, PS3.7 §6.3) encoded and decoded, messages assembled from PDVs;
 *     data sets are streamed to a sink so that pixel data never sits whole
 *     in memory (DESIGN.md §4 "Streaming").
 *
 * net/ moves bytes and messages; it knows nothing of the index or of who
 * may do what: services/ decides (DESIGN.md §3).
 *
 * Thread-safety: a NetAssoc belongs to one thread at a time.
 */
#ifndef AG_NET_H
#define AG_NET_H

#include "dicom/dicom.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- PDUs (PS3.8 §9.3) --------------------------------------------------- */

enum {
    NET_PDU_ASSOCIATE_RQ = 0x01,
    NET_PDU_ASSOCIATE_AC = 0x02,
    NET_PDU_ASSOCIATE_RJ = 0x03,
    NET_PDU_P_DATA_TF = 0x04,
    NET_PDU_RELEASE_RQ = 0x05,
    NET_PDU_RELEASE_RP = 0x06,
    NET_PDU_ABORT = 0x07,
};

#define NET_APP_CONTEXT "1.2.840.10008.3.1.1.1"
#define NET_PDU_HEADER 6
/* Largest PDU Agora accepts by default; peers are told via Max Length. */
#define NET_DEFAULT_MAX_PDU (256 * 1024)
#define NET_MAX_CONTEXTS 128          /* presentation contexts per RQ */
#define NET_MAX_SYNTAXES 32           /* transfer syntaxes per context */

/* Presentation context result/reason (PS3.8 Table 9-18). */
enum {
    NET_PC_ACCEPTANCE = 0,
    NET_PC_USER_REJECTION = 1,
    NET_PC_NO_REASON = 2,
    NET_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3,
    NET_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4,
};

typedef struct NetPresContext {
    uint8_t id;                         /* odd, 1..255 */
    uint8_t result;                     /* AC only */
    char abstract_syntax[65];           /* RQ only */
    uint8_t nsyntaxes;
    char syntaxes[NET_MAX_SYNTAXES][65];/* RQ: proposed; AC: the one */
} NetPresContext;

typedef struct NetRoleSelection {
    char sop_class[65];
    bool scu;
    bool scp;
} NetRoleSelection;

typedef struct NetExtNeg {
    char sop_class[65];
    uint8_t info[64];
    uint8_t len;
} NetExtNeg;

/* User identity negotiation (PS3.7 D.3.3.7). */
enum {
    NET_UID_USERNAME = 1,
    NET_UID_USERNAME_PASSCODE = 2,
    NET_UID_KERBEROS = 3,
    NET_UID_SAML = 4,
    NET_UID_JWT = 5,
};

typedef struct NetUserIdentity {
    uint8_t type;                 /* 0 = none */
    bool response_requested;
    char primary[256];            /* username (NUL-terminated, bounded) */
    char secondary[256];          /* passcode */
    uint8_t server_response[256]; /* AC */
    uint16_t server_response_len;
} NetUserIdentity;

/* A-ASSOCIATE-RQ and -AC share one shape (PS3.8 §9.3.2, §9.3.3). */
typedef struct NetAssocParams {
    uint16_t protocol_version;    /* bit 0 set */
    char called_ae[17];           /* trimmed */
    char calling_ae[17];
    char app_context[65];
    uint8_t ncontexts;
    NetPresContext contexts[NET_MAX_CONTEXTS];
    uint32_t max_pdu;             /* 0 = unlimited */
    char impl_class_uid[65];
    char impl_version[17];
    uint16_t max_ops_invoked;     /* async window; 0 = absent */
    uint16_t max_ops_performed;
    uint8_t nroles;
    NetRoleSelection roles[NET_MAX_CONTEXTS];
    uint8_t nextneg;
    NetExtNeg extneg[16];
    NetUserIdentity identity;
} NetAssocParams;

/* A-ASSOCIATE-RJ (PS3.8 Table 9-21). */
enum {
    NET_RJ_PERMANENT = 1,
    NET_RJ_TRANSIENT = 2,
    NET_RJ_SOURCE_USER = 1,       /* reasons for source 1: */
    NET_RJ_NO_REASON = 1,
    NET_RJ_APP_CONTEXT = 2,
    NET_RJ_CALLING_AE = 3,
    NET_RJ_CALLED_AE = 7,
    NET_RJ_SOURCE_ACSE = 2,       /* source 2 reasons: 1 no reason, 2 version */
    NET_RJ_SOURCE_PRESENTATION = 3,/* source 3: 1 congestion, 2 local limit */
};

typedef struct NetReject {
    uint8_t result, source, reason;
} NetReject;

/* A-ABORT source and reason (PS3.8 Table 9-26). */
enum {
    NET_ABORT_SOURCE_USER = 0,
    NET_ABORT_SOURCE_PROVIDER = 2,
    NET_ABORT_NOT_SPECIFIED = 0,
    NET_ABORT_UNRECOGNIZED_PDU = 1,
    NET_ABORT_UNEXPECTED_PDU = 2,
    NET_ABORT_UNRECOGNIZED_PARAM = 4,
    NET_ABORT_UNEXPECTED_PARAM = 5,
    NET_ABORT_INVALID_PARAM = 6,
};

/* One PDV of a P-DATA-TF (PS3.8 §9.3.5.1). */
typedef struct NetPdv {
    uint8_t context_id;
    bool command;                 /* message control header bit 0 */
    bool last;                    /* bit 1 */
    const uint8_t *data;          /* borrowed from the PDU buffer */
    uint32_t len;
} NetPdv;

/**
 * Parse the body of an A-ASSOCIATE-RQ or -AC (type given; buf excludes the
 * 6-byte PDU header).  Every item length is checked against what remains;
 * unknown sub-items are skipped as PS3.8 §9.3.1 allows; counts are capped.
 * AG_ERR_PARSE with the offset and item on malformed input.
 */
int net_parse_assoc(uint8_t type, const uint8_t *buf, size_t len,
                    NetAssocParams *out, AgError *err);

/** Encode a whole A-ASSOCIATE-RQ/AC PDU (with header) into b. */
int net_encode_assoc(uint8_t type, const NetAssocParams *p, AgBuf *b,
                     AgError *err);

int net_parse_reject(const uint8_t *buf, size_t len, NetReject *out,
                     AgError *err);
int net_encode_reject(const NetReject *rj, AgBuf *b, AgError *err);
int net_parse_abort(const uint8_t *buf, size_t len, uint8_t *source,
                    uint8_t *reason, AgError *err);
int net_encode_abort(uint8_t source, uint8_t reason, AgBuf *b, AgError *err);
/** Release RQ/RP: 4 reserved bytes. */
int net_encode_release(uint8_t type, AgBuf *b, AgError *err);

/**
 * Iterate the PDVs of a P-DATA-TF body: *pos starts at 0; each call fills
 * out and advances.  AG_ERR_EOF after the last; AG_ERR_PARSE on a PDV whose
 * length is < 2 or runs past the PDU.
 */
int net_next_pdv(const uint8_t *buf, size_t len, size_t *pos, NetPdv *out,
                 AgError *err);

/* ---- DIMSE command sets (PS3.7 §9, §10) ---------------------------------- */

enum {
    DIMSE_C_STORE_RQ = 0x0001, DIMSE_C_STORE_RSP = 0x8001,
    DIMSE_C_GET_RQ = 0x0010, DIMSE_C_GET_RSP = 0x8010,
    DIMSE_C_FIND_RQ = 0x0020, DIMSE_C_FIND_RSP = 0x8020,
    DIMSE_C_MOVE_RQ = 0x0021, DIMSE_C_MOVE_RSP = 0x8021,
    DIMSE_C_ECHO_RQ = 0x0030, DIMSE_C_ECHO_RSP = 0x8030,
    DIMSE_N_EVENT_REPORT_RQ = 0x0100, DIMSE_N_EVENT_REPORT_RSP = 0x8100,
    DIMSE_N_ACTION_RQ = 0x0130, DIMSE_N_ACTION_RSP = 0x8130,
    DIMSE_N_SET_RQ = 0x0120, DIMSE_N_SET_RSP = 0x8120,
    DIMSE_N_CREATE_RQ = 0x0140, DIMSE_N_CREATE_RSP = 0x8140,
    DIMSE_C_CANCEL_RQ = 0x0FFF,
};
#define DIMSE_NO_DATASET 0x0101       /* Command Data Set Type (0000,0800) */

/* Statuses used across services (PS3.4 Annex B, C; PS3.7 Annex C). */
enum {
    DIMSE_SUCCESS = 0x0000,
    DIMSE_PENDING = 0xFF00,
    DIMSE_PENDING_WARNING = 0xFF01,
    DIMSE_CANCEL = 0xFE00,
    DIMSE_WARNING_COERCION = 0xB000,
    DIMSE_WARNING_SUBOPS = 0xB000,
    DIMSE_WARNING_ELEMENTS_DISCARDED = 0xB006,
    DIMSE_WARNING_DATASET_MISMATCH = 0xB007,
    DIMSE_REFUSED_OUT_OF_RESOURCES = 0xA700,
    DIMSE_REFUSED_MOVE_DESTINATION = 0xA801,
    DIMSE_ERROR_DATASET_MISMATCH = 0xA900,
    DIMSE_ERROR_CANNOT_UNDERSTAND = 0xC000,
    DIMSE_UNABLE_TO_PROCESS = 0xC001,
    DIMSE_SOP_CLASS_NOT_SUPPORTED = 0x0122,
    DIMSE_NOT_AUTHORIZED = 0x0124,
    DIMSE_DUPLICATE_INVOCATION = 0x0210,
    DIMSE_MISTYPED_ARGUMENT = 0x0212,
    DIMSE_UNRECOGNIZED_OPERATION = 0x0211,
    DIMSE_INVALID_ARGUMENT = 0x0115,
    DIMSE_INVALID_ATTRIBUTE_VALUE = 0x0106,
    DIMSE_NO_SUCH_INSTANCE = 0x0112,
    DIMSE_NO_SUCH_CLASS = 0x0118,
    DIMSE_MISSING_ATTRIBUTE = 0x0120,
    DIMSE_PROCESSING_FAILURE = 0x0110,
    DIMSE_DUPLICATE_SOP_INSTANCE = 0x0111,
};

/* The fields of a command set that Agora uses; others are ignored. */
typedef struct DimseCommand {
    uint16_t command;                 /* (0000,0100) */
    uint16_t message_id;              /* (0000,0110) */
    uint16_t responded_id;            /* (0000,0120) */
    uint16_t priority;                /* (0000,0700) */
    uint16_t dataset_type;            /* (0000,0800): 0x0101 = none */
    uint16_t status;                  /* (0000,0900) */
    char affected_class[65];          /* (0000,0002) */
    char requested_class[65];         /* (0000,0003) */
    char affected_instance[65];       /* (0000,1000) */
    char requested_instance[65];      /* (0000,1001) */
    char move_destination[17];        /* (0000,0600) */
    char move_originator_ae[17];      /* (0000,1030) */
    uint16_t move_originator_id;      /* (0000,1031) */
    uint16_t event_type;              /* (0000,1002) */
    uint16_t action_type;             /* (0000,1008) */
    /* sub-operation counts (0000,1020-1023); -1 = absent */
    int32_t remaining, completed, failed, warning;
    char error_comment[65];           /* (0000,0902) */
    uint32_t offending_element;       /* (0000,0901), 0 = absent */
} DimseCommand;

/** Decode a command set (Implicit VR LE bytes of group 0000). */
int dimse_command_parse(const uint8_t *buf, size_t len, DimseCommand *out,
                        AgError *err);
/** Encode a command set with its group length; fields that are zero/empty
 * are omitted except those the command type requires. */
int dimse_command_encode(const DimseCommand *c, AgBuf *b, AgError *err);

/* ---- associations (assoc.c, PS3.8 §9.2) ------------------------------------ */

typedef struct NetAssoc NetAssoc;

typedef struct NetLimits {
    uint32_t max_pdu;        /* largest P-DATA PDU we accept (announced as
                              * Maximum Length); 0 = NET_DEFAULT_MAX_PDU */
    uint32_t artim_ms;       /* waiting for A-ASSOCIATE-RQ/AC or RELEASE-RP;
                              * 0 = 30000 (PS3.8 §9.1.5 ARTIM) */
    uint32_t idle_ms;        /* silence allowed while associated; 0 =
                              * 300000 */
} NetLimits;

/*
 * Byte transport under an association: a socket, or TLS over it (the TLS
 * layer fills in read/write).  read returns bytes read, 0 at EOF, -1 on
 * error; write returns bytes written or -1.  fd is polled for timeouts.
 */
typedef struct NetTransport {
    int fd;
    long (*read)(void *ctx, void *buf, size_t n);
    long (*write)(void *ctx, const void *buf, size_t n);
    bool (*pending)(void *ctx);   /* bytes buffered inside (TLS); may be NULL */
    /* Optional, NULL when every byte must pass through write (TLS):
     * write_more is write that tells the kernel more follows at once (the
     * bytes may wait for it: MSG_MORE); send_file sends up to n bytes of
     * in_fd from *off, advancing it, without copying them through user
     * space (sendfile(2)); both return like write. */
    long (*write_more)(void *ctx, const void *buf, size_t n);
    long (*send_file)(void *ctx, int in_fd, uint64_t *off, size_t n);
    /* Optional: read that never blocks (-1 with EAGAIN when nothing has
     * arrived).  A reader tries it before waiting, so that bytes already
     * there cost one system call instead of a poll and a read. */
    long (*read_nowait)(void *ctx, void *buf, size_t n);
    void *ctx;
} NetTransport;

/**
 * Connect a TCP socket to host:port (names resolved, IPv4/IPv6), giving up
 * after timeout_ms.  Returns the fd (>= 0) or a negative AgErr.
 */
int net_connect(const char *host, uint16_t port, uint32_t timeout_ms,
                AgError *err);

/** A plain-socket transport for fd (sets TCP_NODELAY). */
void net_transport_plain(NetTransport *t, int fd);

/* ---- TLS (tls.c, GnuTLS; PS3.15 B.1 and the BCP 195 profiles) ------------- */

typedef struct NetTls NetTls;

typedef struct NetTlsConfig {
    const char *cert_file;       /* PEM certificate (chain) */
    const char *key_file;        /* PEM private key */
    const char *ca_file;         /* PEM CAs to verify the peer; NULL = none */
    bool verify_peer;            /* server: require and verify a client
                                  * certificate; client: verify the server */
} NetTlsConfig;

/**
 * Credentials and policy for one side: TLS 1.2 minimum, 1.3 preferred,
 * ECDHE key exchange with AEAD ciphers only (SECURITY.md rule 7).
 */
int net_tls_create(const NetTlsConfig *cfg, bool server, NetTls **out,
                   AgError *err);
void net_tls_free(NetTls *t);

/* A TLS session over a socket, usable as a NetTransport. */
typedef struct NetTlsSession NetTlsSession;

/**
 * Handshake on fd (as server or client per t) within timeout_ms, and fill
 * tr with the session's transport.  On a verified client certificate,
 * peer_cn receives its subject CN (may be NULL).
 */
int net_tls_start(NetTls *t, int fd, const char *server_name,
                  uint32_t timeout_ms, NetTransport *tr, NetTlsSession **out,
                  char *peer_cn, size_t cn_cap, AgError *err);
/** Send close_notify (best effort) and free the session. */
void net_tls_end(NetTlsSession *s);

/**
 * Acceptor, step 1: wait (ARTIM) for the peer's A-ASSOCIATE-RQ and parse
 * it.  Anything else aborts (non-DICOM bytes on the port, oversized PDU).
 * The transport is borrowed for the association's life.  AG_ERR_EOF with
 * net_assoc_silent() true: the peer closed without sending a byte (a port
 * check by a monitor or load balancer), not a refused association.
 */
int net_accept(const NetTransport *t, const NetLimits *lim, NetAssoc **out,
               NetAssocParams *rq, AgError *err);
/** Acceptor, step 2: accept with these contexts/parameters ... */
int net_send_accept(NetAssoc *a, const NetAssocParams *ac, AgError *err);
/** ... or reject; the association is then finished. */
int net_send_reject(NetAssoc *a, const NetReject *rj, AgError *err);

/**
 * Requestor: send rq and wait (ARTIM) for the answer.  AG_OK with *ac
 * filled when accepted; AG_ERR_INVALID with *rj filled when rejected.
 */
int net_request(const NetTransport *t, const NetLimits *lim,
                const NetAssocParams *rq, NetAssoc **out, NetAssocParams *ac,
                NetReject *rj, AgError *err);

/** True while the peer has sent us nothing at all on this connection. */
bool net_assoc_silent(const NetAssoc *a);
/** What was negotiated (valid after accept/request). */
const NetAssocParams *net_assoc_peer(const NetAssoc *a);
/** Transfer syntax of an accepted presentation context, or NULL. */
const char *net_assoc_context_ts(const NetAssoc *a, uint8_t id);
/** Abstract syntax of an accepted context, or NULL. */
const char *net_assoc_context_as(const NetAssoc *a, uint8_t id);
/** First accepted context for an abstract syntax (and transfer syntax,
 * NULL = any); 0 if none. */
uint8_t net_assoc_find_context(const NetAssoc *a, const char *as,
                               const char *ts);

typedef struct NetMessage {
    uint8_t context_id;
    DimseCommand cmd;
    bool has_dataset;
} NetMessage;

/* Receives a data set in order, chunk by chunk (bounded memory). */
typedef int (*NetDataSink)(void *ctx, const uint8_t *data, size_t len,
                           AgError *err);
/* Produces a data set: fill buf with up to cap bytes; *got 0 = end. */
typedef int (*NetDataSource)(void *ctx, uint8_t *buf, size_t cap,
                             size_t *got, AgError *err);

/**
 * Wait (idle timer) for the next DIMSE command.  AG_ERR_EOF when the peer
 * released the association (the RELEASE-RP has been sent); AG_ERR_IO when
 * it aborted or the connection dropped; protocol violations send A-ABORT
 * and return AG_ERR_PARSE.
 */
int net_recv_command(NetAssoc *a, NetMessage *msg, AgError *err);
/** Receive the data set that follows a command, streaming it to sink
 * (NULL = discard).  When the sink fails, the rest is read and discarded
 * so the association stays in step; the sink keeps its own error in its
 * context.  The return value reports only the association. */
int net_recv_dataset(NetAssoc *a, uint8_t context_id, NetDataSink sink,
                     void *ctx, AgError *err);
/** Non-blocking: true if a C-CANCEL-RQ for message_id has arrived. */
bool net_cancel_requested(NetAssoc *a, uint16_t message_id);

int net_send_command(NetAssoc *a, uint8_t context_id, const DimseCommand *c,
                     AgError *err);
/** Send a data set from a source, fragmented to the peer's Maximum Length. */
int net_send_dataset(NetAssoc *a, uint8_t context_id, NetDataSource src,
                     void *ctx, AgError *err);
/** Send len bytes of a file from offset off as a data set, e.g. a stored
 * instance's data set: straight from the page cache to the socket
 * (sendfile) where the transport allows, else through a buffer. */
int net_send_dataset_fd(NetAssoc *a, uint8_t context_id, int fd,
                        uint64_t off, uint64_t len, AgError *err);
/** Send a data set held in memory. */
int net_send_dataset_buf(NetAssoc *a, uint8_t context_id, const uint8_t *p,
                         size_t n, AgError *err);

/** Requestor: A-RELEASE-RQ, wait for RP. */
int net_release(NetAssoc *a, AgError *err);
/** Send A-ABORT (best effort). */
void net_abort(NetAssoc *a, uint8_t source, uint8_t reason);
/** Free the association (the transport's fd is the caller's). */
void net_assoc_free(NetAssoc *a);

#endif
