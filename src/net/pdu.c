/*
 * pdu.c — the PDU codec of the DICOM upper layer (PS3.8 §9.3) with the user
 * information sub-items of PS3.7 Annex D.3.3.
 *
 * Parsing reads untrusted bytes: every item length is checked against what
 * remains of its container before it is used, counts are capped, and fixed
 * arrays are filled only after a length has been bounded by their size
 * (SECURITY.md rule 1).  Errors name the PDU, the byte offset from the start
 * of the PDU (header included, as in a capture) and the item.
 *
 * Encoding appends to an AgBuf and leaves it as it was on failure.
 *
 * Pure functions, no allocation except AgBuf growth; thread-safe.
 */
#include "net.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ASSOC_FIXED 68          /* version .. reserved, PS3.8 Table 9-11 */
#define MAX_EXTNEG (sizeof ((NetAssocParams *)0)->extneg / \
                    sizeof ((NetAssocParams *)0)->extneg[0])
#define MAX_ROLES (sizeof ((NetAssocParams *)0)->roles / \
                   sizeof ((NetAssocParams *)0)->roles[0])
#define ID_FIELD_MAX (sizeof ((NetUserIdentity *)0)->primary - 1)
#define ID_RESPONSE_MAX (sizeof ((NetUserIdentity *)0)->server_response)

/* Item types (PS3.8 §9.3.2, Annex D). */
enum {
    ITEM_APP_CONTEXT = 0x10,
    ITEM_PC_RQ = 0x20,
    ITEM_PC_AC = 0x21,
    ITEM_ABSTRACT_SYNTAX = 0x30,
    ITEM_TRANSFER_SYNTAX = 0x40,
    ITEM_USER_INFO = 0x50,
    SUB_MAX_LENGTH = 0x51,
    SUB_IMPL_CLASS = 0x52,
    SUB_ASYNC_OPS = 0x53,
    SUB_ROLE = 0x54,
    SUB_IMPL_VERSION = 0x55,
    SUB_EXT_NEG = 0x56,
    SUB_COMMON_EXT_NEG = 0x57,
    SUB_IDENTITY_RQ = 0x58,
    SUB_IDENTITY_AC = 0x59,
};

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

/* ---- parsing --------------------------------------------------------- */

typedef struct Parser {
    const uint8_t *buf;       /* the PDU body */
    const char *pdu;          /* "a-associate-rq", for messages */
    AgError *err;
} Parser;

/* An item (or sub-item) in buf: type, body at [off, off + len). */
typedef struct Item {
    uint8_t type;
    size_t at;                /* offset of the item header in the body */
    size_t off;
    size_t len;
} Item;

__attribute__((format(printf, 3, 4)))
static int fail(Parser *ps, size_t at, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ag_error_set(ps->err, AG_ERR_PARSE, "%s: offset %zu: %s", ps->pdu,
                 at + NET_PDU_HEADER, what);
    return AG_ERR_PARSE;   /* a constant, so the compiler sees it fail */
}

/*
 * Read the 4-byte header of the item at *pos within [*pos, end) and advance
 * *pos past the whole item (PS3.8 §9.3.2: type, reserved, 16-bit length).
 */
static int next_item(Parser *ps, size_t *pos, size_t end, const char *in,
                     Item *it)
{
    if (end - *pos < 4) {
        return fail(ps, *pos, "truncated item header in %s (%zu bytes left)",
                    in, end - *pos);
    }
    const uint8_t *p = ps->buf + *pos;
    it->type = p[0];
    it->at = *pos;
    it->off = *pos + 4;
    it->len = be16(p + 2);
    if (it->len > end - it->off) {
        return fail(ps, *pos, "item 0x%02x in %s: length %zu runs past its "
                    "end (%zu bytes left)", it->type, in, it->len,
                    end - it->off);
    }
    *pos = it->off + it->len;
    return AG_OK;
}

/*
 * A UID field: trailing NULs and spaces are padding (PS3.5 §6.2; PS3.8
 * wants none, but senders add them).  An invalid UID yields "" so that the
 * caller refuses whatever it names rather than the whole association.
 */
static void take_uid(const uint8_t *p, size_t n, char out[65])
{
    while (n > 0 && (p[n - 1] == '\0' || p[n - 1] == ' ')) {
        n--;
    }
    if (!dicom_uid_valid((const char *)p, n)) {
        out[0] = '\0';
        return;
    }
    memcpy(out, p, n);   /* dicom_uid_valid() bounds n by 64 */
    out[n] = '\0';
}

/* AE characters: the default repertoire without backslash and controls
 * (PS3.5 Table 6.2-1, AE). */
static bool ae_char(uint8_t c)
{
    return c >= 0x20 && c < 0x7f && c != '\\';
}

/* Trim a 16-byte AE title field (leading and trailing spaces are not
 * significant; some senders pad with NUL).  False if empty or not AE. */
static bool take_ae(const uint8_t *p, char out[17])
{
    size_t b = 0;
    size_t e = 16;
    while (e > 0 && (p[e - 1] == ' ' || p[e - 1] == '\0')) {
        e--;
    }
    while (b < e && p[b] == ' ') {
        b++;
    }
    out[0] = '\0';
    if (b == e) {
        return false;
    }
    for (size_t i = b; i < e; i++) {
        if (!ae_char(p[i])) {
            return false;
        }
    }
    memcpy(out, p + b, e - b);
    out[e - b] = '\0';
    return true;
}

/* A 16-bit length-prefixed field inside an item: [*pos, *pos+2+n) must lie
 * within [.., end). */
static int take_field(Parser *ps, const Item *it, size_t *pos,
                      const char *name, const uint8_t **val, size_t *n)
{
    size_t end = it->off + it->len;
    if (end - *pos < 2) {
        return fail(ps, *pos, "item 0x%02x: truncated %s length", it->type,
                    name);
    }
    *n = be16(ps->buf + *pos);
    *pos += 2;
    if (*n > end - *pos) {
        return fail(ps, *pos - 2, "item 0x%02x: %s length %zu runs past the "
                    "item (%zu bytes left)", it->type, name, *n, end - *pos);
    }
    *val = ps->buf + *pos;
    *pos += *n;
    return AG_OK;
}

static int parse_pc_rq(Parser *ps, const Item *it, NetPresContext *pc)
{
    /* PS3.8 Table 9-13: id, 3 reserved bytes, then sub-items. */
    if (it->len < 4) {
        return fail(ps, it->at, "presentation context item length %zu is "
                    "shorter than 4", it->len);
    }
    pc->id = ps->buf[it->off];
    bool have_abstract = false;
    size_t pos = it->off + 4;
    size_t end = it->off + it->len;
    while (pos < end) {
        Item sub = {0};
        int rc = next_item(ps, &pos, end, "presentation context", &sub);
        if (rc != AG_OK) {
            return rc;
        }
        if (sub.type == ITEM_ABSTRACT_SYNTAX) {
            if (have_abstract) {
                return fail(ps, sub.at, "presentation context %u: second "
                            "abstract syntax", pc->id);
            }
            have_abstract = true;
            take_uid(ps->buf + sub.off, sub.len, pc->abstract_syntax);
        } else if (sub.type == ITEM_TRANSFER_SYNTAX) {
            /* Past the cap the rest are dropped: the acceptor picks among
             * the ones kept, and a peer listing every syntax it knows is
             * not malformed. */
            if (pc->nsyntaxes < NET_MAX_SYNTAXES) {
                take_uid(ps->buf + sub.off, sub.len,
                         pc->syntaxes[pc->nsyntaxes]);
                pc->nsyntaxes++;
            }
        }
        /* other sub-items: ignored (PS3.8 §9.3.1) */
    }
    return AG_OK;
}

static int parse_pc_ac(Parser *ps, const Item *it, NetPresContext *pc)
{
    /* PS3.8 Table 9-18: id, reserved, result/reason, reserved, one
     * transfer syntax sub-item. */
    if (it->len < 4) {
        return fail(ps, it->at, "presentation context item length %zu is "
                    "shorter than 4", it->len);
    }
    pc->id = ps->buf[it->off];
    pc->result = ps->buf[it->off + 2];
    pc->nsyntaxes = 1;          /* always one, "" when absent or rejected */
    bool have_ts = false;
    size_t pos = it->off + 4;
    size_t end = it->off + it->len;
    while (pos < end) {
        Item sub = {0};
        int rc = next_item(ps, &pos, end, "presentation context", &sub);
        if (rc != AG_OK) {
            return rc;
        }
        if (sub.type == ITEM_TRANSFER_SYNTAX) {
            if (have_ts) {
                return fail(ps, sub.at, "presentation context %u: more than "
                            "one transfer syntax in an accept", pc->id);
            }
            have_ts = true;
            take_uid(ps->buf + sub.off, sub.len, pc->syntaxes[0]);
        }
    }
    return AG_OK;
}

static int add_context(Parser *ps, uint8_t type, const Item *it,
                       NetAssocParams *out)
{
    if (out->ncontexts >= NET_MAX_CONTEXTS) {
        ag_error_set(ps->err, AG_ERR_LIMIT, "%s: offset %zu: more than %d "
                     "presentation contexts", ps->pdu,
                     it->at + NET_PDU_HEADER, NET_MAX_CONTEXTS);
        return AG_ERR_LIMIT;
    }
    NetPresContext *pc = &out->contexts[out->ncontexts];
    int rc = type == NET_PDU_ASSOCIATE_RQ ? parse_pc_rq(ps, it, pc)
                                          : parse_pc_ac(ps, it, pc);
    if (rc != AG_OK) {
        return rc;
    }
    /* PS3.8 §9.3.2.2: odd integers 1-255, unique in the association. */
    if (pc->id % 2 == 0) {
        return fail(ps, it->at, "presentation context id %u is even",
                    pc->id);
    }
    for (uint8_t i = 0; i < out->ncontexts; i++) {
        if (out->contexts[i].id == pc->id) {
            return fail(ps, it->at, "duplicate presentation context id %u",
                        pc->id);
        }
    }
    out->ncontexts++;
    return AG_OK;
}

static int parse_role(Parser *ps, const Item *it, NetAssocParams *out)
{
    /* PS3.7 Table D.3-9: UID length, UID, SCU role, SCP role. */
    size_t pos = it->off;
    const uint8_t *uid = NULL;
    size_t n = 0;
    int rc = take_field(ps, it, &pos, "sop class uid", &uid, &n);
    if (rc != AG_OK) {
        return rc;
    }
    if (it->off + it->len - pos != 2) {
        return fail(ps, it->at, "role selection: %zu bytes after the sop "
                    "class uid, expected 2", it->off + it->len - pos);
    }
    if (out->nroles < MAX_ROLES) {   /* past the cap: default roles */
        NetRoleSelection *r = &out->roles[out->nroles++];
        take_uid(uid, n, r->sop_class);
        r->scu = ps->buf[pos] != 0;
        r->scp = ps->buf[pos + 1] != 0;
    }
    return AG_OK;
}

static int parse_ext_neg(Parser *ps, const Item *it, NetAssocParams *out)
{
    /* PS3.7 Table D.3-11: UID length, UID, service class application
     * information (the rest). */
    size_t pos = it->off;
    const uint8_t *uid = NULL;
    size_t n = 0;
    int rc = take_field(ps, it, &pos, "sop class uid", &uid, &n);
    if (rc != AG_OK) {
        return rc;
    }
    size_t info = it->off + it->len - pos;
    /* Past the cap, or too long to hold: not answered, which PS3.7 D.3.3.5
     * lets an acceptor do. */
    if (out->nextneg < MAX_EXTNEG && info <= sizeof out->extneg[0].info) {
        NetExtNeg *x = &out->extneg[out->nextneg];
        take_uid(uid, n, x->sop_class);
        memcpy(x->info, ps->buf + pos, info);
        x->len = (uint8_t)info;
        out->nextneg++;
    }
    return AG_OK;
}

static int parse_common_ext_neg(Parser *ps, const Item *it)
{
    /* PS3.7 Table D.3-12: checked for consistency, then ignored (an
     * acceptor need not support it, PS3.7 D.3.3.6). */
    size_t pos = it->off;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = take_field(ps, it, &pos, "sop class uid", &v, &n);
    if (rc == AG_OK) {
        rc = take_field(ps, it, &pos, "service class uid", &v, &n);
    }
    if (rc == AG_OK) {
        rc = take_field(ps, it, &pos, "related sop classes", &v, &n);
    }
    if (rc != AG_OK) {
        return rc;
    }
    if (pos != it->off + it->len) {
        return fail(ps, it->at, "common extended negotiation: %zu bytes "
                    "after the related sop classes", it->off + it->len - pos);
    }
    /* The related classes: each a 16-bit length and a UID. */
    Item rel = {.type = it->type, .at = it->at,
                .off = (size_t)(v - ps->buf), .len = n};
    pos = rel.off;
    while (pos < rel.off + rel.len) {
        const uint8_t *uid = NULL;
        size_t un = 0;
        rc = take_field(ps, &rel, &pos, "related sop class uid", &uid, &un);
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

/* Copy a user identity field into a NUL-terminated array; a NUL inside it
 * could not be told apart from its end, so it is refused. */
static int take_identity_field(Parser *ps, const Item *it, size_t *pos,
                               const char *name, char out[256])
{
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = take_field(ps, it, pos, name, &v, &n);
    if (rc != AG_OK) {
        return rc;
    }
    if (n > ID_FIELD_MAX) {
        return fail(ps, it->at, "user identity field too long: %s is %zu "
                    "bytes, at most %zu", name, n, ID_FIELD_MAX);
    }
    if (memchr(v, '\0', n) != NULL) {
        return fail(ps, it->at, "user identity %s contains a nul byte", name);
    }
    memcpy(out, v, n);
    out[n] = '\0';
    return AG_OK;
}

static int parse_identity_rq(Parser *ps, const Item *it, NetUserIdentity *id)
{
    /* PS3.7 Table D.3-14: type, positive response requested, primary
     * field (length, value), secondary field (length, value). */
    if (it->len < 2) {
        return fail(ps, it->at, "user identity item length %zu is shorter "
                    "than 2", it->len);
    }
    id->type = ps->buf[it->off];
    if (id->type == 0) {
        return fail(ps, it->at, "user identity type 0 is not defined");
    }
    id->response_requested = ps->buf[it->off + 1] != 0;
    size_t pos = it->off + 2;
    int rc = take_identity_field(ps, it, &pos, "primary field", id->primary);
    if (rc == AG_OK) {
        rc = take_identity_field(ps, it, &pos, "secondary field",
                                 id->secondary);
    }
    if (rc != AG_OK) {
        return rc;
    }
    if (pos != it->off + it->len) {
        return fail(ps, it->at, "user identity: %zu bytes after the "
                    "secondary field", it->off + it->len - pos);
    }
    return AG_OK;
}

static int parse_identity_ac(Parser *ps, const Item *it, NetUserIdentity *id)
{
    /* PS3.7 Table D.3-15: server response (length, value). */
    size_t pos = it->off;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = take_field(ps, it, &pos, "server response", &v, &n);
    if (rc != AG_OK) {
        return rc;
    }
    if (n > ID_RESPONSE_MAX) {
        return fail(ps, it->at, "user identity field too long: server "
                    "response is %zu bytes, at most %zu", n, ID_RESPONSE_MAX);
    }
    if (pos != it->off + it->len) {
        return fail(ps, it->at, "user identity: %zu bytes after the server "
                    "response", it->off + it->len - pos);
    }
    memcpy(id->server_response, v, n);
    id->server_response_len = (uint16_t)n;
    id->response_requested = true;
    return AG_OK;
}

static int parse_user_info(Parser *ps, uint8_t type, const Item *it,
                           NetAssocParams *out)
{
    unsigned seen = 0;   /* bit (sub-type - 0x50) for the singletons */
    size_t pos = it->off;
    size_t end = it->off + it->len;
    while (pos < end) {
        Item sub = {0};
        int rc = next_item(ps, &pos, end, "user information", &sub);
        if (rc != AG_OK) {
            return rc;
        }
        bool single = sub.type == SUB_MAX_LENGTH ||
                      sub.type == SUB_IMPL_CLASS ||
                      sub.type == SUB_ASYNC_OPS ||
                      sub.type == SUB_IMPL_VERSION ||
                      sub.type == SUB_IDENTITY_RQ ||
                      sub.type == SUB_IDENTITY_AC;
        if (single) {
            unsigned bit = 1u << (sub.type - 0x50);
            if (seen & bit) {
                return fail(ps, sub.at, "duplicate user information "
                            "sub-item 0x%02x", sub.type);
            }
            seen |= bit;
        }
        const uint8_t *v = ps->buf + sub.off;
        switch (sub.type) {
        case SUB_MAX_LENGTH:   /* PS3.8 Table D.1-1 */
            if (sub.len != 4) {
                return fail(ps, sub.at, "maximum length sub-item length "
                            "%zu, expected 4", sub.len);
            }
            out->max_pdu = be32(v);
            break;
        case SUB_IMPL_CLASS:   /* PS3.7 D.3.3.2.1 */
            take_uid(v, sub.len, out->impl_class_uid);
            break;
        case SUB_ASYNC_OPS:    /* PS3.7 D.3.3.3.1 */
            if (sub.len != 4) {
                return fail(ps, sub.at, "asynchronous operations window "
                            "length %zu, expected 4", sub.len);
            }
            out->max_ops_invoked = be16(v);
            out->max_ops_performed = be16(v + 2);
            break;
        case SUB_ROLE:
            rc = parse_role(ps, &sub, out);
            break;
        case SUB_IMPL_VERSION: {   /* PS3.7 D.3.3.2.3: 1-16 characters */
            size_t n = sub.len;
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\0')) {
                n--;
            }
            if (n > sizeof out->impl_version - 1) {
                return fail(ps, sub.at, "implementation version name is %zu "
                            "bytes, at most 16", n);
            }
            bool ok = true;
            for (size_t i = 0; i < n; i++) {
                ok = ok && v[i] >= 0x20 && v[i] < 0x7f;
            }
            if (ok) {    /* informational only: unprintable is dropped */
                memcpy(out->impl_version, v, n);
                out->impl_version[n] = '\0';
            }
            break;
        }
        case SUB_EXT_NEG:
            rc = parse_ext_neg(ps, &sub, out);
            break;
        case SUB_COMMON_EXT_NEG:
            rc = parse_common_ext_neg(ps, &sub);
            break;
        case SUB_IDENTITY_RQ:
            if (type == NET_PDU_ASSOCIATE_RQ) {
                rc = parse_identity_rq(ps, &sub, &out->identity);
            }
            break;
        case SUB_IDENTITY_AC:
            if (type == NET_PDU_ASSOCIATE_AC) {
                rc = parse_identity_ac(ps, &sub, &out->identity);
            }
            break;
        default:               /* unknown: ignored (PS3.8 §9.3.1) */
            break;
        }
        if (rc != AG_OK) {
            return rc;
        }
    }
    return AG_OK;
}

int net_parse_assoc(uint8_t type, const uint8_t *buf, size_t len,
                    NetAssocParams *out, AgError *err)
{
    if (type != NET_PDU_ASSOCIATE_RQ && type != NET_PDU_ASSOCIATE_AC) {
        return ag_error_set(err, AG_ERR_INVALID, "pdu type 0x%02x is not an "
                            "a-associate-rq or -ac", type);
    }
    Parser ps = {.buf = buf, .err = err,
                 .pdu = type == NET_PDU_ASSOCIATE_RQ ? "a-associate-rq"
                                                     : "a-associate-ac"};
    memset(out, 0, sizeof *out);
    if (len < ASSOC_FIXED) {
        return fail(&ps, 0, "pdu length %zu is shorter than the %d-byte "
                    "fixed part", len, ASSOC_FIXED);
    }
    /* PS3.8 Table 9-11: version, reserved, called AE, calling AE,
     * 32 reserved bytes. */
    out->protocol_version = be16(buf);
    if ((out->protocol_version & 1) == 0) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "%s: protocol version "
                            "0x%04x does not include version 1", ps.pdu,
                            out->protocol_version);
    }
    bool called_ok = take_ae(buf + 4, out->called_ae);
    bool calling_ok = take_ae(buf + 20, out->calling_ae);
    /* In an AC both are echoes that "shall not be tested" (Table 9-17). */
    if (type == NET_PDU_ASSOCIATE_RQ && !called_ok) {
        return fail(&ps, 4, "called ae title is empty or not printable");
    }
    if (type == NET_PDU_ASSOCIATE_RQ && !calling_ok) {
        return fail(&ps, 20, "calling ae title is empty or not printable");
    }

    bool have_app = false;
    bool have_user = false;
    size_t pos = ASSOC_FIXED;
    while (pos < len) {
        Item it = {0};
        int rc = next_item(&ps, &pos, len, "the pdu", &it);
        if (rc != AG_OK) {
            return rc;
        }
        switch (it.type) {
        case ITEM_APP_CONTEXT:
            if (have_app) {
                return fail(&ps, it.at, "second application context item");
            }
            have_app = true;
            /* Not ours: the caller rejects it with ACSE reason 2. */
            take_uid(buf + it.off, it.len, out->app_context);
            break;
        case ITEM_PC_RQ:
        case ITEM_PC_AC:
            if ((it.type == ITEM_PC_RQ) != (type == NET_PDU_ASSOCIATE_RQ)) {
                break;   /* the other direction's item: unrecognized here */
            }
            rc = add_context(&ps, type, &it, out);
            break;
        case ITEM_USER_INFO:
            if (have_user) {
                return fail(&ps, it.at, "second user information item");
            }
            have_user = true;
            rc = parse_user_info(&ps, type, &it, out);
            break;
        default:
            break;   /* PS3.8 §9.3.1: unrecognized items are skipped */
        }
        if (rc != AG_OK) {
            return rc;
        }
    }
    /* PS3.8 §9.3.2, §9.3.3: one application context item, one or more
     * presentation context items, one user information item. */
    if (!have_app) {
        return fail(&ps, len, "no application context item");
    }
    if (out->ncontexts == 0) {
        return fail(&ps, len, "no presentation context item");
    }
    if (!have_user) {
        return fail(&ps, len, "no user information item");
    }
    return AG_OK;
}

int net_parse_reject(const uint8_t *buf, size_t len, NetReject *out,
                     AgError *err)
{
    /* PS3.8 Table 9-21: reserved, result, source, reason/diag. */
    if (len != 4) {
        return ag_error_set(err, AG_ERR_PARSE, "a-associate-rj: pdu length "
                            "%zu, expected 4", len);
    }
    out->result = buf[1];
    out->source = buf[2];
    out->reason = buf[3];
    return AG_OK;
}

int net_parse_abort(const uint8_t *buf, size_t len, uint8_t *source,
                    uint8_t *reason, AgError *err)
{
    /* PS3.8 Table 9-26: 2 reserved, source, reason/diag. */
    if (len != 4) {
        return ag_error_set(err, AG_ERR_PARSE, "a-abort: pdu length %zu, "
                            "expected 4", len);
    }
    *source = buf[2];
    *reason = buf[3];
    return AG_OK;
}

int net_next_pdv(const uint8_t *buf, size_t len, size_t *pos, NetPdv *out,
                 AgError *err)
{
    /* PS3.8 §9.3.5.1: 32-bit item length, context id, message control
     * header, fragment; the length counts the last two. */
    if (*pos > len) {
        return ag_error_set(err, AG_ERR_INVALID, "p-data-tf: position %zu "
                            "past the pdu (%zu bytes)", *pos, len);
    }
    if (*pos == len) {
        return AG_ERR_EOF;
    }
    size_t at = *pos;
    if (len - at < 6) {
        return ag_error_set(err, AG_ERR_PARSE, "p-data-tf: offset %zu: "
                            "truncated pdv header (%zu bytes left)",
                            at + NET_PDU_HEADER, len - at);
    }
    uint32_t n = be32(buf + at);
    if (n < 2) {
        return ag_error_set(err, AG_ERR_PARSE, "p-data-tf: offset %zu: pdv "
                            "length %u is shorter than 2", at + NET_PDU_HEADER,
                            n);
    }
    if (n > len - at - 4) {
        return ag_error_set(err, AG_ERR_PARSE, "p-data-tf: offset %zu: pdv "
                            "length %u runs past the pdu (%zu bytes left)",
                            at + NET_PDU_HEADER, n, len - at - 4);
    }
    out->context_id = buf[at + 4];
    out->command = (buf[at + 5] & 1) != 0;
    out->last = (buf[at + 5] & 2) != 0;
    out->data = buf + at + 6;
    out->len = n - 2;
    *pos = at + 4 + n;
    return AG_OK;
}

/* ---- encoding -------------------------------------------------------- */

/* Appends with a sticky error, so that encoders read straight through and
 * check once; lengths are patched in place when an item closes. */
typedef struct Enc {
    AgBuf *b;
    int rc;
} Enc;

static void put(Enc *e, const void *p, size_t n)
{
    if (e->rc == AG_OK) {
        e->rc = ag_buf_append(e->b, p, n);
    }
}

static void put8(Enc *e, uint8_t v)
{
    put(e, &v, 1);
}

static void put16(Enc *e, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(e, p, 2);
}

static void put32(Enc *e, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    put(e, p, 4);
}

/* Open an item: type, reserved, length placeholder; returns where the
 * length goes. */
static size_t open_item(Enc *e, uint8_t type)
{
    put8(e, type);
    put8(e, 0);
    size_t at = e->b->len;
    put16(e, 0);
    return at;
}

static void close_item(Enc *e, size_t at)
{
    if (e->rc != AG_OK) {
        return;
    }
    size_t n = e->b->len - at - 2;
    if (n > 0xffff) {
        e->rc = AG_ERR_INVALID;
        return;
    }
    e->b->data[at] = (uint8_t)(n >> 8);
    e->b->data[at + 1] = (uint8_t)n;
}

/* strlen bounded by the field's array size; false if not terminated. */
static bool field_len(const char *s, size_t cap, size_t *n)
{
    *n = strnlen(s, cap);
    return *n < cap;
}

static void put_str_item(Enc *e, uint8_t type, const char *s, size_t cap)
{
    size_t n = 0;
    if (!field_len(s, cap, &n)) {
        e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
        return;
    }
    size_t at = open_item(e, type);
    put(e, s, n);
    close_item(e, at);
}

/* 16-bit length and value, as inside role, ext neg and identity items. */
static void put_field(Enc *e, const void *p, size_t n)
{
    if (n > 0xffff) {
        e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
        return;
    }
    put16(e, (uint16_t)n);
    put(e, p, n);
}

static void put_uid_field(Enc *e, const char *s, size_t cap)
{
    size_t n = 0;
    if (!field_len(s, cap, &n)) {
        e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
        return;
    }
    put_field(e, s, n);
}

/* AE title: 16 bytes, space padded (PS3.8 Table 9-11). */
static void put_ae(Enc *e, const char *ae)
{
    uint8_t f[16];
    memset(f, ' ', sizeof f);
    size_t n = 0;
    if (!field_len(ae, 17, &n)) {
        e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
        return;
    }
    memcpy(f, ae, n);
    put(e, f, sizeof f);
}

static void put_user_info(Enc *e, uint8_t type, const NetAssocParams *p)
{
    size_t ui = open_item(e, ITEM_USER_INFO);
    size_t at = open_item(e, SUB_MAX_LENGTH);
    put32(e, p->max_pdu);
    close_item(e, at);
    put_str_item(e, SUB_IMPL_CLASS, p->impl_class_uid,
                 sizeof p->impl_class_uid);
    /* The order DCMTK and most peers use: version name right after the
     * class UID; PS3.7 D.3.3 does not fix one. */
    if (p->impl_version[0] != '\0') {
        put_str_item(e, SUB_IMPL_VERSION, p->impl_version,
                     sizeof p->impl_version);
    }
    if (p->max_ops_invoked != 0 || p->max_ops_performed != 0) {
        at = open_item(e, SUB_ASYNC_OPS);
        put16(e, p->max_ops_invoked);
        put16(e, p->max_ops_performed);
        close_item(e, at);
    }
    for (uint8_t i = 0; i < p->nroles; i++) {
        const NetRoleSelection *r = &p->roles[i];
        at = open_item(e, SUB_ROLE);
        put_uid_field(e, r->sop_class, sizeof r->sop_class);
        put8(e, r->scu ? 1 : 0);
        put8(e, r->scp ? 1 : 0);
        close_item(e, at);
    }
    for (uint8_t i = 0; i < p->nextneg; i++) {
        const NetExtNeg *x = &p->extneg[i];
        at = open_item(e, SUB_EXT_NEG);
        put_uid_field(e, x->sop_class, sizeof x->sop_class);
        put(e, x->info, x->len <= sizeof x->info ? x->len : 0);
        if (x->len > sizeof x->info) {
            e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
        }
        close_item(e, at);
    }
    const NetUserIdentity *id = &p->identity;
    if (type == NET_PDU_ASSOCIATE_RQ && id->type != 0) {
        size_t n1;
        size_t n2;
        if (!field_len(id->primary, sizeof id->primary, &n1) ||
            !field_len(id->secondary, sizeof id->secondary, &n2)) {
            e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
            return;
        }
        at = open_item(e, SUB_IDENTITY_RQ);
        put8(e, id->type);
        put8(e, id->response_requested ? 1 : 0);
        put_field(e, id->primary, n1);
        put_field(e, id->secondary, n2);
        close_item(e, at);
    } else if (type == NET_PDU_ASSOCIATE_AC && id->response_requested) {
        if (id->server_response_len > sizeof id->server_response) {
            e->rc = e->rc == AG_OK ? AG_ERR_INVALID : e->rc;
            return;
        }
        at = open_item(e, SUB_IDENTITY_AC);
        put_field(e, id->server_response, id->server_response_len);
        close_item(e, at);
    }
    close_item(e, ui);
}

int net_encode_assoc(uint8_t type, const NetAssocParams *p, AgBuf *b,
                     AgError *err)
{
    if (type != NET_PDU_ASSOCIATE_RQ && type != NET_PDU_ASSOCIATE_AC) {
        return ag_error_set(err, AG_ERR_INVALID, "pdu type 0x%02x is not an "
                            "a-associate-rq or -ac", type);
    }
    const char *name = type == NET_PDU_ASSOCIATE_RQ ? "a-associate-rq"
                                                    : "a-associate-ac";
    if ((p->protocol_version & 1) == 0) {   /* a zeroed struct, likely */
        return ag_error_set(err, AG_ERR_INVALID, "%s: protocol version "
                            "0x%04x does not include version 1", name,
                            p->protocol_version);
    }
    if (p->ncontexts > NET_MAX_CONTEXTS || p->nroles > MAX_ROLES ||
        p->nextneg > MAX_EXTNEG) {
        return ag_error_set(err, AG_ERR_INVALID, "%s: %u contexts, %u roles, "
                            "%u extended negotiations exceed the caps", name,
                            p->ncontexts, p->nroles, p->nextneg);
    }
    size_t start = b->len;
    Enc e = {.b = b, .rc = AG_OK};
    put8(&e, type);
    put8(&e, 0);
    size_t pdu_len = b->len;
    put32(&e, 0);
    put16(&e, p->protocol_version);
    put16(&e, 0);
    put_ae(&e, p->called_ae);
    put_ae(&e, p->calling_ae);
    static const uint8_t zero[32];
    put(&e, zero, sizeof zero);
    put_str_item(&e, ITEM_APP_CONTEXT, p->app_context, sizeof p->app_context);
    for (uint8_t i = 0; i < p->ncontexts; i++) {
        const NetPresContext *pc = &p->contexts[i];
        if (pc->nsyntaxes > NET_MAX_SYNTAXES) {
            e.rc = e.rc == AG_OK ? AG_ERR_INVALID : e.rc;
            break;
        }
        if (type == NET_PDU_ASSOCIATE_RQ) {   /* PS3.8 Table 9-13 */
            size_t at = open_item(&e, ITEM_PC_RQ);
            put8(&e, pc->id);
            put8(&e, 0);
            put8(&e, 0);
            put8(&e, 0);
            put_str_item(&e, ITEM_ABSTRACT_SYNTAX, pc->abstract_syntax,
                         sizeof pc->abstract_syntax);
            for (uint8_t k = 0; k < pc->nsyntaxes; k++) {
                put_str_item(&e, ITEM_TRANSFER_SYNTAX, pc->syntaxes[k],
                             sizeof pc->syntaxes[k]);
            }
            close_item(&e, at);
        } else {                               /* PS3.8 Table 9-18 */
            size_t at = open_item(&e, ITEM_PC_AC);
            put8(&e, pc->id);
            put8(&e, 0);
            put8(&e, pc->result);
            put8(&e, 0);
            put_str_item(&e, ITEM_TRANSFER_SYNTAX,
                         pc->nsyntaxes > 0 ? pc->syntaxes[0] : "",
                         sizeof pc->syntaxes[0]);
            close_item(&e, at);
        }
    }
    put_user_info(&e, type, p);
    if (e.rc == AG_OK) {
        size_t n = b->len - pdu_len - 4;
        if (n > UINT32_MAX) {
            e.rc = AG_ERR_INVALID;
        } else {
            b->data[pdu_len] = (uint8_t)(n >> 24);
            b->data[pdu_len + 1] = (uint8_t)(n >> 16);
            b->data[pdu_len + 2] = (uint8_t)(n >> 8);
            b->data[pdu_len + 3] = (uint8_t)n;
        }
    }
    if (e.rc != AG_OK) {
        b->len = start;
        return ag_error_set(err, e.rc, "%s: cannot encode: %s", name,
                            e.rc == AG_ERR_INVALID
                                ? "a field is unterminated or too long"
                                : ag_err_name(e.rc));
    }
    return AG_OK;
}

/* The fixed-size PDUs: type, reserved, length 4, four bytes. */
static int encode_fixed(uint8_t type, const uint8_t body[4], AgBuf *b,
                        const char *name, AgError *err)
{
    uint8_t pdu[10] = {type, 0, 0, 0, 0, 4, body[0], body[1], body[2],
                       body[3]};
    int rc = ag_buf_append(b, pdu, sizeof pdu);
    if (rc != AG_OK) {
        return ag_error_set(err, rc, "%s: cannot encode: %s", name,
                            ag_err_name(rc));
    }
    return AG_OK;
}

int net_encode_reject(const NetReject *rj, AgBuf *b, AgError *err)
{
    uint8_t body[4] = {0, rj->result, rj->source, rj->reason};
    return encode_fixed(NET_PDU_ASSOCIATE_RJ, body, b, "a-associate-rj", err);
}

int net_encode_abort(uint8_t source, uint8_t reason, AgBuf *b, AgError *err)
{
    uint8_t body[4] = {0, 0, source, reason};
    return encode_fixed(NET_PDU_ABORT, body, b, "a-abort", err);
}

int net_encode_release(uint8_t type, AgBuf *b, AgError *err)
{
    if (type != NET_PDU_RELEASE_RQ && type != NET_PDU_RELEASE_RP) {
        return ag_error_set(err, AG_ERR_INVALID, "pdu type 0x%02x is not an "
                            "a-release-rq or -rp", type);
    }
    static const uint8_t body[4];
    return encode_fixed(type, body, b,
                        type == NET_PDU_RELEASE_RQ ? "a-release-rq"
                                                   : "a-release-rp", err);
}
