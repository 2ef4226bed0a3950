/*
 * fuzz_pdu.c — libFuzzer target for the PDU codec (PS3.8 §9.3) and DIMSE
 * command sets (PS3.7 §9.3, §10.3).
 *
 * Input: one byte choosing the PDU type (1-7 as in PS3.8 §9.3; others are
 * folded onto 1-7), then the PDU body.  Every input must parse or be
 * refused without touching memory it does not own.  What parses must
 * survive a round trip: an A-ASSOCIATE re-encodes, parses again to equal
 * parameters (field by field) and re-encodes to the same bytes; RJ and
 * abort likewise; a command set re-encodes to bytes that parse and encode
 * again identically.  A violation is a __builtin_trap().
 */
#include "fuzz.h"
#include "net/net.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static NetAssocParams first;
static NetAssocParams second;
static DimseCommand cmd1;
static DimseCommand cmd2;

static bool pc_equal(const NetPresContext *a, const NetPresContext *b)
{
    if (a->id != b->id || a->result != b->result ||
        a->nsyntaxes != b->nsyntaxes ||
        strcmp(a->abstract_syntax, b->abstract_syntax) != 0) {
        return false;
    }
    for (uint8_t i = 0; i < a->nsyntaxes; i++) {
        if (strcmp(a->syntaxes[i], b->syntaxes[i]) != 0) {
            return false;
        }
    }
    return true;
}

static bool assoc_equal(const NetAssocParams *a, const NetAssocParams *b)
{
    if (a->protocol_version != b->protocol_version ||
        strcmp(a->called_ae, b->called_ae) != 0 ||
        strcmp(a->calling_ae, b->calling_ae) != 0 ||
        strcmp(a->app_context, b->app_context) != 0 ||
        a->ncontexts != b->ncontexts || a->max_pdu != b->max_pdu ||
        strcmp(a->impl_class_uid, b->impl_class_uid) != 0 ||
        strcmp(a->impl_version, b->impl_version) != 0 ||
        a->max_ops_invoked != b->max_ops_invoked ||
        a->max_ops_performed != b->max_ops_performed ||
        a->nroles != b->nroles || a->nextneg != b->nextneg) {
        return false;
    }
    for (uint8_t i = 0; i < a->ncontexts; i++) {
        if (!pc_equal(&a->contexts[i], &b->contexts[i])) {
            return false;
        }
    }
    for (uint8_t i = 0; i < a->nroles; i++) {
        if (strcmp(a->roles[i].sop_class, b->roles[i].sop_class) != 0 ||
            a->roles[i].scu != b->roles[i].scu ||
            a->roles[i].scp != b->roles[i].scp) {
            return false;
        }
    }
    for (uint8_t i = 0; i < a->nextneg; i++) {
        if (strcmp(a->extneg[i].sop_class, b->extneg[i].sop_class) != 0 ||
            a->extneg[i].len != b->extneg[i].len ||
            memcmp(a->extneg[i].info, b->extneg[i].info,
                   a->extneg[i].len) != 0) {
            return false;
        }
    }
    const NetUserIdentity *x = &a->identity;
    const NetUserIdentity *y = &b->identity;
    return x->type == y->type &&
           x->response_requested == y->response_requested &&
           strcmp(x->primary, y->primary) == 0 &&
           strcmp(x->secondary, y->secondary) == 0 &&
           x->server_response_len == y->server_response_len &&
           memcmp(x->server_response, y->server_response,
                  x->server_response_len) == 0;
}

static void fuzz_assoc(uint8_t type, const uint8_t *body, size_t len)
{
    AgError err;
    if (net_parse_assoc(type, body, len, &first, &err) != AG_OK) {
        return;
    }
    AgBuf b1;
    AgBuf b2;
    ag_buf_init(&b1, 4 << 20);
    ag_buf_init(&b2, 4 << 20);
    CHECK(net_encode_assoc(type, &first, &b1, &err) == AG_OK);
    CHECK(b1.len >= NET_PDU_HEADER && b1.data[0] == type);
    CHECK(net_parse_assoc(type, b1.data + NET_PDU_HEADER,
                          b1.len - NET_PDU_HEADER, &second, &err) == AG_OK);
    CHECK(assoc_equal(&first, &second));
    CHECK(net_encode_assoc(type, &second, &b2, &err) == AG_OK);
    CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    ag_buf_deinit(&b1);
    ag_buf_deinit(&b2);
}

static void fuzz_command(const uint8_t *p, size_t len)
{
    AgError err;
    if (dimse_command_parse(p, len, &cmd1, &err) != AG_OK) {
        return;
    }
    AgBuf b1;
    AgBuf b2;
    ag_buf_init(&b1, 1 << 16);
    ag_buf_init(&b2, 1 << 16);
    /* A command may lack what its type requires: encode refuses it. */
    if (dimse_command_encode(&cmd1, &b1, &err) == AG_OK) {
        CHECK(dimse_command_parse(b1.data, b1.len, &cmd2, &err) == AG_OK);
        CHECK(cmd2.command == cmd1.command);
        CHECK(dimse_command_encode(&cmd2, &b2, &err) == AG_OK);
        CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    }
    ag_buf_deinit(&b1);
    ag_buf_deinit(&b2);
}

static void fuzz_pdata(const uint8_t *body, size_t len)
{
    AgError err;
    size_t pos = 0;
    NetPdv pdv;
    int rc;
    while ((rc = net_next_pdv(body, len, &pos, &pdv, &err)) == AG_OK) {
        CHECK(pos <= len);
        CHECK(pdv.data >= body && pdv.data + pdv.len <= body + len);
        if (pdv.command) {
            fuzz_command(pdv.data, pdv.len);
        }
    }
    CHECK(rc == AG_ERR_EOF || rc == AG_ERR_PARSE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t type = data[0] >= 1 && data[0] <= 7 ? data[0]
                                                : (uint8_t)(data[0] % 7 + 1);
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    AgError err;
    AgBuf b;
    ag_buf_init(&b, 1 << 10);
    switch (type) {
    case NET_PDU_ASSOCIATE_RQ:
    case NET_PDU_ASSOCIATE_AC:
        fuzz_assoc(type, body, len);
        break;
    case NET_PDU_ASSOCIATE_RJ: {
        NetReject rj;
        NetReject back;
        if (net_parse_reject(body, len, &rj, &err) == AG_OK) {
            CHECK(net_encode_reject(&rj, &b, &err) == AG_OK);
            CHECK(b.len == 10 && memcmp(b.data + 7, body + 1, 3) == 0);
            CHECK(net_parse_reject(b.data + 6, 4, &back, &err) == AG_OK);
            CHECK(memcmp(&rj, &back, sizeof rj) == 0);
        }
        break;
    }
    case NET_PDU_P_DATA_TF:
        fuzz_pdata(body, len);
        break;
    case NET_PDU_RELEASE_RQ:
    case NET_PDU_RELEASE_RP:
        CHECK(net_encode_release(type, &b, &err) == AG_OK);
        CHECK(b.len == 10);
        break;
    case NET_PDU_ABORT: {
        uint8_t source;
        uint8_t reason;
        if (net_parse_abort(body, len, &source, &reason, &err) == AG_OK) {
            CHECK(net_encode_abort(source, reason, &b, &err) == AG_OK);
            uint8_t s2;
            uint8_t r2;
            CHECK(net_parse_abort(b.data + 6, b.len - 6, &s2, &r2, &err) ==
                  AG_OK);
            CHECK(s2 == source && r2 == reason);
        }
        break;
    }
    default:
        break;
    }
    ag_buf_deinit(&b);
    fuzz_command(body, len);
    return 0;
}
