/*
 * dimse.c — DIMSE command sets (PS3.7 §6.3, §9.3, §10.3, Annex E).
 *
 * A command set is group 0000 encoded in Implicit VR Little Endian whatever
 * the negotiated transfer syntax: (tag, 32-bit length, value), the group
 * length (0000,0000) first, elements in ascending tag order.  One table
 * below names the elements Agora uses, with their VR from the PS3.6
 * dictionary; it drives both the parser and the encoder.
 *
 * The parser reads untrusted bytes: each length is checked against what is
 * left before it is used, and values are bounded by the fixed fields of
 * DimseCommand.  Pure functions; thread-safe.
 */
#include "net.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef enum Kind {
    K_US,        /* uint16_t field */
    K_COUNT,     /* US into an int32_t field, -1 when absent */
    K_UI,        /* char[65] */
    K_AE,        /* char[17] */
    K_LO,        /* char[65] */
    K_AT,        /* uint32_t, (group << 16) | element */
} Kind;

typedef struct Field {
    uint16_t element;
    Kind kind;
    size_t off;              /* in DimseCommand */
    size_t cap;              /* array size for strings */
    const char *name;
} Field;

#define F(el, kind, member, name)                                        \
    {el, kind, offsetof(DimseCommand, member),                           \
     sizeof ((DimseCommand *)0)->member, name}

/* Ascending tag order, as the encoder must write them (PS3.7 §6.3.1). */
static const Field FIELDS[] = {
    F(0x0002, K_UI, affected_class, "affected sop class uid"),
    F(0x0003, K_UI, requested_class, "requested sop class uid"),
    F(0x0100, K_US, command, "command field"),
    F(0x0110, K_US, message_id, "message id"),
    F(0x0120, K_US, responded_id, "message id being responded to"),
    F(0x0600, K_AE, move_destination, "move destination"),
    F(0x0700, K_US, priority, "priority"),
    F(0x0800, K_US, dataset_type, "command data set type"),
    F(0x0900, K_US, status, "status"),
    F(0x0901, K_AT, offending_element, "offending element"),
    F(0x0902, K_LO, error_comment, "error comment"),
    F(0x1000, K_UI, affected_instance, "affected sop instance uid"),
    F(0x1001, K_UI, requested_instance, "requested sop instance uid"),
    F(0x1002, K_US, event_type, "event type id"),
    F(0x1008, K_US, action_type, "action type id"),
    F(0x1020, K_COUNT, remaining, "number of remaining sub-operations"),
    F(0x1021, K_COUNT, completed, "number of completed sub-operations"),
    F(0x1022, K_COUNT, failed, "number of failed sub-operations"),
    F(0x1023, K_COUNT, warning, "number of warning sub-operations"),
    F(0x1030, K_AE, move_originator_ae,
      "move originator application entity title"),
    F(0x1031, K_US, move_originator_id, "move originator message id"),
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

#define ERROR_COMMENT_MAX 64   /* LO, PS3.5 Table 6.2-1 */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static const Field *find_field(uint16_t element)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (FIELDS[i].element == element) {
            return &FIELDS[i];
        }
    }
    return NULL;
}

static const char *command_name(uint16_t cmd)
{
    switch (cmd) {
    case DIMSE_C_STORE_RQ: return "c-store-rq";
    case DIMSE_C_STORE_RSP: return "c-store-rsp";
    case DIMSE_C_GET_RQ: return "c-get-rq";
    case DIMSE_C_GET_RSP: return "c-get-rsp";
    case DIMSE_C_FIND_RQ: return "c-find-rq";
    case DIMSE_C_FIND_RSP: return "c-find-rsp";
    case DIMSE_C_MOVE_RQ: return "c-move-rq";
    case DIMSE_C_MOVE_RSP: return "c-move-rsp";
    case DIMSE_C_ECHO_RQ: return "c-echo-rq";
    case DIMSE_C_ECHO_RSP: return "c-echo-rsp";
    case DIMSE_N_EVENT_REPORT_RQ: return "n-event-report-rq";
    case DIMSE_N_EVENT_REPORT_RSP: return "n-event-report-rsp";
    case DIMSE_N_ACTION_RQ: return "n-action-rq";
    case DIMSE_N_ACTION_RSP: return "n-action-rsp";
    case DIMSE_N_SET_RQ: return "n-set-rq";
    case DIMSE_N_SET_RSP: return "n-set-rsp";
    case DIMSE_N_CREATE_RQ: return "n-create-rq";
    case DIMSE_N_CREATE_RSP: return "n-create-rsp";
    case DIMSE_C_CANCEL_RQ: return "c-cancel-rq";
    default: return "command";
    }
}

/* ---- parsing --------------------------------------------------------- */

static int bad(AgError *err, const Field *f, size_t at, const char *what,
               uint32_t n)
{
    ag_error_set(err, AG_ERR_PARSE, "command set: element (0000,%04x) %s "
                 "at offset %zu: %s (length %u)", f->element, f->name, at,
                 what, n);
    return AG_ERR_PARSE;
}

/*
 * UI: trailing NUL/space padding removed.  Only digits and dots pass, so no
 * path, shell or control character gets past the door (SECURITY.md rule
 * 3); the finer PS3.5 §9.1 grammar is left to the service, which can then
 * answer with a status instead of an abort.
 */
static int take_uid(const Field *f, size_t at, const uint8_t *v, uint32_t n,
                    char *out, AgError *err)
{
    uint32_t len = n;
    while (len > 0 && (v[len - 1] == '\0' || v[len - 1] == ' ')) {
        len--;
    }
    if (len > f->cap - 1) {
        return bad(err, f, at, "uid is longer than 64 characters", n);
    }
    for (uint32_t i = 0; i < len; i++) {
        if (v[i] != '.' && (v[i] < '0' || v[i] > '9')) {
            return bad(err, f, at, "value is not a uid", n);
        }
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return AG_OK;
}

/* AE: leading and trailing spaces are not significant (PS3.5 Table 6.2-1);
 * the default repertoire without backslash and control characters. */
static int take_ae(const Field *f, size_t at, const uint8_t *v, uint32_t n,
                   char *out, AgError *err)
{
    uint32_t b = 0;
    uint32_t e = n;
    while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\0')) {
        e--;
    }
    while (b < e && v[b] == ' ') {
        b++;
    }
    if (e - b > f->cap - 1) {
        return bad(err, f, at, "ae title is longer than 16 characters", n);
    }
    for (uint32_t i = b; i < e; i++) {
        if (v[i] < 0x20 || v[i] >= 0x7f || v[i] == '\\') {
            return bad(err, f, at, "ae title has a character outside its "
                       "repertoire", n);
        }
    }
    memcpy(out, v + b, e - b);
    out[e - b] = '\0';
    return AG_OK;
}

/* LO error comment: informational, so cut at 64 characters or a NUL rather
 * than refused. */
static void take_lo(const uint8_t *v, uint32_t n, char *out)
{
    uint32_t len = 0;
    while (len < n && len < ERROR_COMMENT_MAX && v[len] != '\0') {
        len++;
    }
    while (len > 0 && v[len - 1] == ' ') {
        len--;
    }
    memcpy(out, v, len);
    out[len] = '\0';
}

static int take_value(const Field *f, size_t at, const uint8_t *v,
                      uint32_t n, DimseCommand *out, AgError *err)
{
    uint8_t *dst = (uint8_t *)out + f->off;
    switch (f->kind) {
    case K_US:
    case K_COUNT: {
        if (n != 2) {
            return bad(err, f, at, "US value is not 2 bytes", n);
        }
        uint16_t x = le16(v);
        if (f->kind == K_US) {
            memcpy(dst, &x, sizeof x);
        } else {
            int32_t c = x;
            memcpy(dst, &c, sizeof c);
        }
        return AG_OK;
    }
    case K_AT: {   /* VM 1-n: the first one is kept */
        if (n == 0 || n % 4 != 0) {
            return bad(err, f, at, "AT value is not a multiple of 4 bytes",
                       n);
        }
        uint32_t t = (uint32_t)le16(v) << 16 | le16(v + 2);
        memcpy(dst, &t, sizeof t);
        return AG_OK;
    }
    case K_UI:
        return take_uid(f, at, v, n, (char *)dst, err);
    case K_AE:
        return take_ae(f, at, v, n, (char *)dst, err);
    case K_LO:
        take_lo(v, n, (char *)dst);
        return AG_OK;
    }
    return AG_OK;
}

int dimse_command_parse(const uint8_t *buf, size_t len, DimseCommand *out,
                        AgError *err)
{
    memset(out, 0, sizeof *out);
    out->remaining = out->completed = out->failed = out->warning = -1;
    uint32_t seen = 0;   /* bit i: FIELDS[i] was read */
    size_t pos = 0;
    while (pos < len) {
        if (len - pos < 8) {
            return ag_error_set(err, AG_ERR_PARSE, "command set: offset %zu: "
                                "truncated element header (%zu bytes left)",
                                pos, len - pos);
        }
        uint16_t group = le16(buf + pos);
        uint16_t element = le16(buf + pos + 2);
        uint32_t n = le32(buf + pos + 4);
        if (group != 0x0000) {   /* PS3.7 §6.3: group 0000 only */
            return ag_error_set(err, AG_ERR_PARSE, "command set: element "
                                "(%04x,%04x) at offset %zu is outside group "
                                "0000", group, element, pos);
        }
        if (n > len - pos - 8) {   /* also catches undefined length */
            return ag_error_set(err, AG_ERR_PARSE, "command set: element "
                                "(0000,%04x) at offset %zu: length %u runs "
                                "past the command set (%zu bytes left)",
                                element, pos, n, len - pos - 8);
        }
        const Field *f = find_field(element);
        if (f != NULL) {         /* others, the group length included, are
                                  * not needed */
            uint32_t bit = 1u << (f - FIELDS);
            if (seen & bit) {   /* two values for one field: ambiguous */
                return bad(err, f, pos, "element appears twice", n);
            }
            seen |= bit;
            int rc = take_value(f, pos, buf + pos + 8, n, out, err);
            if (rc != AG_OK) {
                return rc;
            }
        }
        pos += 8 + (size_t)n;
    }
    if ((seen & (1u << (find_field(0x0100) - FIELDS))) == 0) {
        return ag_error_set(err, AG_ERR_PARSE, "command set: no command "
                            "field (0000,0100)");
    }
    return AG_OK;
}

/* ---- encoding -------------------------------------------------------- */

static bool is_request(uint16_t cmd)
{
    return (cmd & 0x8000) == 0 && cmd != DIMSE_C_CANCEL_RQ;
}

static bool is_response(uint16_t cmd)
{
    return (cmd & 0x8000) != 0;
}

static bool is_composite_rq(uint16_t cmd)
{
    return cmd == DIMSE_C_STORE_RQ || cmd == DIMSE_C_FIND_RQ ||
           cmd == DIMSE_C_GET_RQ || cmd == DIMSE_C_MOVE_RQ;
}

enum { OMIT, EMIT, MISSING };

/*
 * Which elements a command carries (PS3.7 Tables 9.3-1 to 9.3-12, 10.3-1 to
 * 10.3-6): mandatory ones always (MISSING when a required string is
 * empty), the others when set.
 */
static int want(const DimseCommand *c, const Field *f)
{
    const uint8_t *p = (const uint8_t *)c + f->off;
    uint16_t cmd = c->command;
    bool set;
    switch (f->kind) {
    case K_UI:
    case K_AE:
    case K_LO:
        set = p[0] != '\0';
        break;
    case K_COUNT: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        set = v >= 0;
        break;
    }
    case K_AT: {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        set = v != 0;
        break;
    }
    default: {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        set = v != 0;
        break;
    }
    }
    bool required = false;
    switch (f->element) {
    case 0x0002:
        required = is_composite_rq(cmd) || cmd == DIMSE_C_ECHO_RQ ||
                   cmd == DIMSE_N_EVENT_REPORT_RQ || cmd == DIMSE_N_CREATE_RQ;
        break;
    case 0x0003:
    case 0x1001:
        required = cmd == DIMSE_N_ACTION_RQ || cmd == DIMSE_N_SET_RQ;
        break;
    case 0x0100:
    case 0x0800:
        return EMIT;
    case 0x0110:
        return is_request(cmd) ? EMIT : OMIT;
    case 0x0120:
        return is_request(cmd) ? OMIT : EMIT;
    case 0x0600:
        required = cmd == DIMSE_C_MOVE_RQ;
        break;
    case 0x0700:
        return is_composite_rq(cmd) ? EMIT : OMIT;
    case 0x0900:
        return is_response(cmd) ? EMIT : OMIT;
    case 0x1000:
        required = cmd == DIMSE_C_STORE_RQ || cmd == DIMSE_N_EVENT_REPORT_RQ;
        break;
    case 0x1002:
        if (cmd == DIMSE_N_EVENT_REPORT_RQ) {
            return EMIT;
        }
        return cmd == DIMSE_N_EVENT_REPORT_RSP && set ? EMIT : OMIT;
    case 0x1008:
        if (cmd == DIMSE_N_ACTION_RQ) {
            return EMIT;
        }
        return cmd == DIMSE_N_ACTION_RSP && set ? EMIT : OMIT;
    case 0x1020:
    case 0x1021:
    case 0x1022:
    case 0x1023:
        return (cmd == DIMSE_C_FIND_RSP || cmd == DIMSE_C_GET_RSP ||
                cmd == DIMSE_C_MOVE_RSP) && set ? EMIT : OMIT;
    case 0x1030:
    case 0x1031:   /* the pair goes together, keyed on the AE title */
        return cmd == DIMSE_C_STORE_RQ && c->move_originator_ae[0] != '\0'
                   ? EMIT : OMIT;
    default:
        break;
    }
    if (set) {
        return EMIT;
    }
    return required ? MISSING : OMIT;
}

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

static void put_header(Enc *e, uint16_t element, uint32_t n)
{
    uint8_t h[8] = {0, 0, (uint8_t)element, (uint8_t)(element >> 8),
                    (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16),
                    (uint8_t)(n >> 24)};
    put(e, h, sizeof h);
}

static void put_us(Enc *e, uint16_t element, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_header(e, element, 2);
    put(e, p, 2);
}

/* A string padded to even length: UI with NUL, AE and LO with a space
 * (PS3.5 §6.2). */
static void put_str(Enc *e, uint16_t element, const char *s, size_t n,
                    char pad)
{
    put_header(e, element, (uint32_t)(n + n % 2));
    put(e, s, n);
    if (n % 2 != 0) {
        put(e, &pad, 1);
    }
}

static int put_field(Enc *e, const DimseCommand *c, const Field *f,
                     AgError *err)
{
    const uint8_t *p = (const uint8_t *)c + f->off;
    switch (f->kind) {
    case K_US: {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        put_us(e, f->element, v);
        return AG_OK;
    }
    case K_COUNT: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        if (v > 0xffff) {
            return ag_error_set(err, AG_ERR_INVALID, "%s: (0000,%04x) %s: "
                                "%d does not fit in US",
                                command_name(c->command), f->element, f->name,
                                (int)v);
        }
        put_us(e, f->element, (uint16_t)v);
        return AG_OK;
    }
    case K_AT: {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        uint8_t at[4] = {(uint8_t)(v >> 16), (uint8_t)(v >> 24), (uint8_t)v,
                         (uint8_t)(v >> 8)};
        put_header(e, f->element, 4);
        put(e, at, 4);
        return AG_OK;
    }
    case K_UI:
    case K_AE:
    case K_LO: {
        size_t cap = f->kind == K_LO ? ERROR_COMMENT_MAX + 1 : f->cap;
        size_t n = strnlen((const char *)p, cap);
        if (n == cap) {
            return ag_error_set(err, AG_ERR_INVALID, "%s: (0000,%04x) %s is "
                                "longer than %zu characters",
                                command_name(c->command), f->element, f->name,
                                cap - 1);
        }
        put_str(e, f->element, (const char *)p, n, f->kind == K_UI ? '\0'
                                                                   : ' ');
        return AG_OK;
    }
    }
    return AG_OK;
}

int dimse_command_encode(const DimseCommand *c, AgBuf *b, AgError *err)
{
    size_t start = b->len;
    Enc e = {.b = b, .rc = AG_OK};
    put_header(&e, 0x0000, 4);          /* group length, patched below */
    size_t value_at = b->len;
    put(&e, "\0\0\0\0", 4);
    for (size_t i = 0; i < NFIELDS && e.rc == AG_OK; i++) {
        int w = want(c, &FIELDS[i]);
        if (w == OMIT) {
            continue;
        }
        if (w == MISSING) {
            b->len = start;
            return ag_error_set(err, AG_ERR_INVALID, "%s: (0000,%04x) %s is "
                                "required", command_name(c->command),
                                FIELDS[i].element, FIELDS[i].name);
        }
        int rc = put_field(&e, c, &FIELDS[i], err);
        if (rc != AG_OK) {
            b->len = start;
            return rc;
        }
    }
    if (e.rc != AG_OK) {
        b->len = start;
        return ag_error_set(err, e.rc, "%s: cannot encode the command set: "
                            "%s", command_name(c->command),
                            ag_err_name(e.rc));
    }
    size_t n = b->len - value_at - 4;
    b->data[value_at] = (uint8_t)n;
    b->data[value_at + 1] = (uint8_t)(n >> 8);
    b->data[value_at + 2] = (uint8_t)(n >> 16);
    b->data[value_at + 3] = (uint8_t)(n >> 24);
    return AG_OK;
}
