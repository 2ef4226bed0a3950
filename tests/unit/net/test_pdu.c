/*
 * test_pdu.c — the PDU codec (PS3.8 §9.3) against bytes DCMTK's echoscu
 * really sends and against hand-made input, byte by byte: every field of a
 * real A-ASSOCIATE-RQ, round trips with every sub-item, truncation at every
 * offset, lying lengths, caps, bad context ids, PDVs, RJ, abort, release.
 */
#include "../test_util.h"

#include "net/net.h"

#include <stdio.h>

/*
 * The first PDU of `echoscu -aet TESTSCU -aec AGORA 127.0.0.1 PORT`
 * (DCMTK 3.6.7), captured with a socket listener.  Note byte 105: DCMTK
 * sends 0xff in the reserved result field of the presentation context.
 */
static const uint8_t ECHOSCU_RQ[] = {
    0x01, 0x00, 0x00, 0x00, 0x00, 0xcd, 0x00, 0x01, 0x00, 0x00, 0x41, 0x47,
    0x4f, 0x52, 0x41, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x54, 0x45, 0x53, 0x54, 0x53, 0x43, 0x55, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34,
    0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x20, 0x00, 0x00, 0x2e, 0x01, 0x00, 0xff, 0x00, 0x30,
    0x00, 0x00, 0x11, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31,
    0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x31, 0x40, 0x00, 0x00, 0x11,
    0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30,
    0x38, 0x2e, 0x31, 0x2e, 0x32, 0x50, 0x00, 0x00, 0x3a, 0x51, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b, 0x31, 0x2e, 0x32,
    0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30,
    0x31, 0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37,
    0x55, 0x00, 0x00, 0x0f, 0x4f, 0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43,
    0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37,
};
#define RQ_BODY (ECHOSCU_RQ + NET_PDU_HEADER)
#define RQ_BODY_LEN (sizeof ECHOSCU_RQ - NET_PDU_HEADER)
#define DCMTK_RESERVED_FF 105
#define ASSOC_FIXED_FOR_TEST 68   /* version .. reserved (Table 9-11) */

/* The P-DATA-TF echoscu sends next: one PDV, command, last fragment. */
static const uint8_t ECHOSCU_PDATA[] = {
    0x04, 0x00, 0x00, 0x00, 0x00, 0x4a, 0x00, 0x00, 0x00, 0x46, 0x01, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, 0x31, 0x2e, 0x32, 0x2e,
    0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e,
    0x31, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00,
    0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01,
};

static NetAssocParams p1;
static NetAssocParams p2;
static AgError err;
static AgBuf out;

static int setup_each(void **state)
{
    (void)state;
    memset(&p1, 0, sizeof p1);
    memset(&p2, 0, sizeof p2);
    ag_error_clear(&err);
    ag_buf_init(&out, 1 << 20);
    return 0;
}

static int teardown_each(void **state)
{
    (void)state;
    ag_buf_deinit(&out);
    return 0;
}

/* ---- a big-endian PDU builder (DCMTK tparser style) ---------------------- */

typedef struct B {
    uint8_t b[1 << 16];
    size_t n;
} B;

static B t;

static void b8(B *b, uint8_t v)
{
    b->b[b->n++] = v;
}

static void b16(B *b, uint16_t v)
{
    b8(b, (uint8_t)(v >> 8));
    b8(b, (uint8_t)v);
}

static void bmem(B *b, const void *p, size_t n)
{
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static size_t bopen(B *b, uint8_t type)
{
    b8(b, type);
    b8(b, 0);
    size_t at = b->n;
    b16(b, 0);
    return at;
}

static void bclose(B *b, size_t at)
{
    size_t n = b->n - at - 2;
    b->b[at] = (uint8_t)(n >> 8);
    b->b[at + 1] = (uint8_t)n;
}

static void bitemn(B *b, uint8_t type, const void *p, size_t n)
{
    size_t at = bopen(b, type);
    bmem(b, p, n);
    bclose(b, at);
}

static void bitem(B *b, uint8_t type, const char *s)
{
    bitemn(b, type, s, strlen(s));
}

/* Fixed part of an A-ASSOCIATE body (PS3.8 Table 9-11). */
static void bfixed(B *b, uint16_t version, const char called[16],
                   const char calling[16])
{
    b->n = 0;
    b16(b, version);
    b16(b, 0);
    bmem(b, called, 16);
    bmem(b, calling, 16);
    for (int i = 0; i < 32; i++) {
        b8(b, 0);
    }
}

static void bpc(B *b, uint8_t id, const char *as, const char *ts)
{
    size_t at = bopen(b, 0x20);
    b8(b, id);
    b8(b, 0);
    b8(b, 0);
    b8(b, 0);
    if (as != NULL) {
        bitem(b, 0x30, as);
    }
    if (ts != NULL) {
        bitem(b, 0x40, ts);
    }
    bclose(b, at);
}

static void buser(B *b)
{
    size_t at = bopen(b, 0x50);
    size_t ml = bopen(b, 0x51);
    b16(b, 0);
    b16(b, 0x4000);
    bclose(b, ml);
    bitem(b, 0x52, "1.2.3.4");
    bclose(b, at);
}

#define CALLED "AGORA           "
#define CALLING "MODALITY        "
#define VERIFICATION "1.2.840.10008.1.1"

/* A minimal valid RQ body; callers append or rebuild parts of it. */
static void brq(B *b)
{
    bfixed(b, 1, CALLED, CALLING);
    bitem(b, 0x10, NET_APP_CONTEXT);
    bpc(b, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    buser(b);
}

static int parse_rq(const B *b)
{
    return net_parse_assoc(NET_PDU_ASSOCIATE_RQ, b->b, b->n, &p1, &err);
}

/* ---- the echoscu capture ------------------------------------------------- */

static void test_echoscu_rq_every_field(void **state)
{
    (void)state;
    assert_int_equal(ECHOSCU_RQ[0], NET_PDU_ASSOCIATE_RQ);
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, RQ_BODY,
                                     RQ_BODY_LEN, &p1, &err), AG_OK);
    assert_int_equal(p1.protocol_version, 1);
    assert_string_equal(p1.called_ae, "AGORA");
    assert_string_equal(p1.calling_ae, "TESTSCU");
    assert_string_equal(p1.app_context, NET_APP_CONTEXT);
    assert_int_equal(p1.ncontexts, 1);
    assert_int_equal(p1.contexts[0].id, 1);
    assert_int_equal(p1.contexts[0].result, 0);
    assert_string_equal(p1.contexts[0].abstract_syntax, VERIFICATION);
    assert_int_equal(p1.contexts[0].nsyntaxes, 1);
    assert_string_equal(p1.contexts[0].syntaxes[0], DICOM_TS_IMPLICIT_LE);
    assert_int_equal(p1.max_pdu, 16384);
    assert_string_equal(p1.impl_class_uid, "1.2.276.0.7230010.3.0.3.6.7");
    assert_string_equal(p1.impl_version, "OFFIS_DCMTK_367");
    assert_int_equal(p1.max_ops_invoked, 0);
    assert_int_equal(p1.max_ops_performed, 0);
    assert_int_equal(p1.nroles, 0);
    assert_int_equal(p1.nextneg, 0);
    assert_int_equal(p1.identity.type, 0);
    assert_false(p1.identity.response_requested);
}

/* Our encoding of the same parameters is DCMTK's, byte for byte, except
 * for the reserved byte DCMTK fills with 0xff. */
static void test_echoscu_rq_reencoded(void **state)
{
    (void)state;
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, RQ_BODY,
                                     RQ_BODY_LEN, &p1, &err), AG_OK);
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_OK);
    assert_int_equal(out.len, sizeof ECHOSCU_RQ);
    assert_memory_equal(out.data, ECHOSCU_RQ, DCMTK_RESERVED_FF);
    assert_int_equal(out.data[DCMTK_RESERVED_FF], 0);
    assert_memory_equal(out.data + DCMTK_RESERVED_FF + 1,
                        ECHOSCU_RQ + DCMTK_RESERVED_FF + 1,
                        sizeof ECHOSCU_RQ - DCMTK_RESERVED_FF - 1);
}

static void test_echoscu_truncated_at_every_offset(void **state)
{
    (void)state;
    for (size_t k = 0; k < RQ_BODY_LEN; k++) {
        ag_error_clear(&err);
        int rc = net_parse_assoc(NET_PDU_ASSOCIATE_RQ, RQ_BODY, k, &p1, &err);
        assert_int_equal(rc, AG_ERR_PARSE);
        assert_int_equal(err.code, AG_ERR_PARSE);
        assert_true(strncmp(err.msg, "a-associate-rq: ", 16) == 0);
    }
}

/* Every single-byte change of the capture parses or fails cleanly. */
static void test_echoscu_every_byte_mutated(void **state)
{
    (void)state;
    uint8_t body[sizeof ECHOSCU_RQ];
    static const uint8_t values[] = {0x00, 0x01, 0x20, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < RQ_BODY_LEN; i++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(body, RQ_BODY, RQ_BODY_LEN);
            body[i] = values[v];
            int rc = net_parse_assoc(NET_PDU_ASSOCIATE_RQ, body, RQ_BODY_LEN,
                                     &p1, &err);
            assert_true(rc == AG_OK || rc == AG_ERR_PARSE ||
                        rc == AG_ERR_UNSUPPORTED);
        }
    }
}

/* Item lengths that lie: too long runs past the PDU or its container;
 * too short breaks the sub-item that follows. */
static void test_lying_item_lengths(void **state)
{
    (void)state;
    uint8_t body[sizeof ECHOSCU_RQ];
    /* offsets (in the body) of the 16-bit length of each item: app context,
     * presentation context, abstract syntax, transfer syntax, user info,
     * max length, implementation class, version name */
    static const size_t lens[] = {70, 95, 103, 124, 145, 149, 157, 188};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        memcpy(body, RQ_BODY, RQ_BODY_LEN);
        uint16_t n = (uint16_t)(body[lens[i]] << 8 | body[lens[i] + 1]);
        body[lens[i]] = 0xff;
        body[lens[i] + 1] = 0xff;
        assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, body,
                                         RQ_BODY_LEN, &p1, &err),
                         AG_ERR_PARSE);
        assert_non_null(strstr(err.msg, "runs past"));
        uint16_t more = (uint16_t)(n + 1);
        body[lens[i]] = (uint8_t)(more >> 8);
        body[lens[i] + 1] = (uint8_t)more;
        assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, body,
                                         RQ_BODY_LEN, &p1, &err),
                         AG_ERR_PARSE);
    }
    /* The presentation context one byte short: its transfer syntax
     * sub-item runs past the context. */
    memcpy(body, RQ_BODY, RQ_BODY_LEN);
    body[96] = 0x2d;
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, body, RQ_BODY_LEN,
                                     &p1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "item 0x40 in presentation context"));
    /* Max length sub-item with length 3 inside a consistent user item. */
    brq(&t);
    size_t ui = bopen(&t, 0x50);
    size_t ml = bopen(&t, 0x51);
    bmem(&t, "\0\0\1", 3);
    bclose(&t, ml);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
}

/* ---- round trips with every sub-item ------------------------------------- */

static void fill_all(NetAssocParams *p, uint8_t type)
{
    memset(p, 0, sizeof *p);
    p->protocol_version = 1;
    strcpy(p->called_ae, "AGORA ARCHIVE");
    strcpy(p->calling_ae, "CT-1");
    strcpy(p->app_context, NET_APP_CONTEXT);
    p->ncontexts = 3;
    for (uint8_t i = 0; i < p->ncontexts; i++) {
        NetPresContext *pc = &p->contexts[i];
        pc->id = (uint8_t)(2 * i + 1);
        if (type == NET_PDU_ASSOCIATE_RQ) {
            strcpy(pc->abstract_syntax, "1.2.840.10008.5.1.4.1.1.2");
            pc->nsyntaxes = (uint8_t)(i + 1);
            strcpy(pc->syntaxes[0], DICOM_TS_EXPLICIT_LE);
            if (i >= 1) {
                strcpy(pc->syntaxes[1], DICOM_TS_IMPLICIT_LE);
            }
            if (i >= 2) {
                strcpy(pc->syntaxes[2], "1.2.840.10008.1.2.4.70");
            }
        } else {
            pc->result = i == 1 ? NET_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED
                                : NET_PC_ACCEPTANCE;
            pc->nsyntaxes = 1;
            if (i != 1) {
                strcpy(pc->syntaxes[0], DICOM_TS_EXPLICIT_LE);
            }
        }
    }
    p->max_pdu = NET_DEFAULT_MAX_PDU;
    strcpy(p->impl_class_uid, "1.2.826.0.1.3680043.10.1");
    strcpy(p->impl_version, "AGORA_0.1.0");
    p->max_ops_invoked = 5;
    p->max_ops_performed = 1;
    p->nroles = 2;
    strcpy(p->roles[0].sop_class, "1.2.840.10008.5.1.4.1.1.2");
    p->roles[0].scp = true;
    strcpy(p->roles[1].sop_class, "1.2.840.10008.5.1.4.1.1.4");
    p->roles[1].scu = true;
    p->roles[1].scp = true;
    p->nextneg = 2;
    strcpy(p->extneg[0].sop_class, "1.2.840.10008.5.1.4.1.2.2.1");
    memcpy(p->extneg[0].info, "\1\1\0\1", 4);
    p->extneg[0].len = 4;
    strcpy(p->extneg[1].sop_class, "1.2.840.10008.5.1.4.1.1.2");
    memset(p->extneg[1].info, 0xab, 64);
    p->extneg[1].len = 64;
    if (type == NET_PDU_ASSOCIATE_RQ) {
        p->identity.type = NET_UID_USERNAME_PASSCODE;
        p->identity.response_requested = true;
        strcpy(p->identity.primary, "radiographer");
        strcpy(p->identity.secondary, "correct horse battery staple");
    } else {
        p->identity.response_requested = true;
        memcpy(p->identity.server_response, "\x00\xffok", 4);
        p->identity.server_response_len = 4;
    }
}

static void roundtrip(uint8_t type)
{
    fill_all(&p1, type);
    assert_int_equal(net_encode_assoc(type, &p1, &out, &err), AG_OK);
    assert_int_equal(out.data[0], type);
    assert_int_equal(out.data[1], 0);
    uint32_t n = (uint32_t)out.data[2] << 24 | (uint32_t)out.data[3] << 16 |
                 (uint32_t)out.data[4] << 8 | out.data[5];
    assert_int_equal(n, out.len - NET_PDU_HEADER);
    /* AE titles padded with spaces to 16 */
    assert_memory_equal(out.data + 10, "AGORA ARCHIVE   CT-1            ",
                        32);
    assert_int_equal(net_parse_assoc(type, out.data + NET_PDU_HEADER,
                                     out.len - NET_PDU_HEADER, &p2, &err),
                     AG_OK);
    assert_memory_equal(&p1, &p2, sizeof p1);
}

static void test_roundtrip_rq(void **state)
{
    (void)state;
    roundtrip(NET_PDU_ASSOCIATE_RQ);
    /* the user identity item as PS3.7 Table D.3-14 lays it out */
    static const uint8_t id[] = {0x58, 0, 0, 46, 2, 1, 0, 12};
    const uint8_t *at = memmem(out.data, out.len, id, sizeof id);
    assert_non_null(at);
    assert_memory_equal(at + 8, "radiographer\0\x1c" "correct horse", 27);
}

static void test_roundtrip_ac(void **state)
{
    (void)state;
    roundtrip(NET_PDU_ASSOCIATE_AC);
    /* a rejected context still carries one (empty) transfer syntax */
    static const uint8_t pc[] = {0x21, 0, 0, 8, 3, 0, 4, 0, 0x40, 0, 0, 0};
    assert_non_null(memmem(out.data, out.len, pc, sizeof pc));
    static const uint8_t resp[] = {0x59, 0, 0, 6, 0, 4, 0, 0xff, 'o', 'k'};
    assert_non_null(memmem(out.data, out.len, resp, sizeof resp));
}

static void test_encode_appends_and_keeps_buffer_on_error(void **state)
{
    (void)state;
    assert_int_equal(ag_buf_append(&out, "xy", 2), AG_OK);
    fill_all(&p1, NET_PDU_ASSOCIATE_RQ);
    memset(p1.calling_ae, 'A', sizeof p1.calling_ae);   /* unterminated */
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_ERR_INVALID);
    assert_int_equal(out.len, 2);
    fill_all(&p1, NET_PDU_ASSOCIATE_RQ);
    p1.ncontexts = NET_MAX_CONTEXTS + 1;
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_ERR_INVALID);
    fill_all(&p1, NET_PDU_ASSOCIATE_RQ);
    p1.contexts[0].nsyntaxes = NET_MAX_SYNTAXES + 1;
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_ERR_INVALID);
    assert_int_equal(out.len, 2);
    assert_int_equal(net_encode_assoc(0x03, &p1, &out, &err),
                     AG_ERR_INVALID);
    p1.contexts[0].nsyntaxes = 1;
    p1.protocol_version = 0;
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_ERR_INVALID);
    assert_int_equal(out.len, 2);
    fill_all(&p1, NET_PDU_ASSOCIATE_RQ);
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &out, &err),
                     AG_OK);
    assert_memory_equal(out.data, "xy\x01", 3);
    /* a buffer too small for the PDU: AG_ERR_LIMIT, nothing left behind */
    AgBuf small;
    ag_buf_init(&small, 100);
    assert_int_equal(net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &small,
                                      &err), AG_ERR_LIMIT);
    assert_int_equal(small.len, 0);
    ag_buf_deinit(&small);
}

static void test_encode_survives_every_oom(void **state)
{
    (void)state;
    fill_all(&p1, NET_PDU_ASSOCIATE_RQ);
    for (int n = 1;; n++) {
        AgBuf b;
        ag_buf_init(&b, 0);
        ag_test_fail_nth_alloc(n);
        int rc = net_encode_assoc(NET_PDU_ASSOCIATE_RQ, &p1, &b, &err);
        ag_test_fail_nth_alloc(0);
        if (rc == AG_OK) {
            ag_buf_deinit(&b);
            break;
        }
        assert_int_equal(rc, AG_ERR_NOMEM);
        assert_int_equal(b.len, 0);
        ag_buf_deinit(&b);
    }
}

/* ---- presentation contexts ----------------------------------------------- */

static void test_200_contexts_capped(void **state)
{
    (void)state;
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    for (int i = 0; i < 200; i++) {
        bpc(&t, (uint8_t)(2 * i + 1), VERIFICATION, DICOM_TS_IMPLICIT_LE);
    }
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "more than 128 presentation contexts"));
    /* exactly 128, every odd id: accepted */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    for (int i = 0; i < NET_MAX_CONTEXTS; i++) {
        bpc(&t, (uint8_t)(2 * i + 1), VERIFICATION, DICOM_TS_IMPLICIT_LE);
    }
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.ncontexts, NET_MAX_CONTEXTS);
    assert_int_equal(p1.contexts[127].id, 255);
}

static void test_even_and_duplicate_context_ids(void **state)
{
    (void)state;
    static const uint8_t bad_ids[] = {0, 2, 254};
    for (size_t i = 0; i < sizeof bad_ids; i++) {
        bfixed(&t, 1, CALLED, CALLING);
        bitem(&t, 0x10, NET_APP_CONTEXT);
        bpc(&t, bad_ids[i], VERIFICATION, DICOM_TS_IMPLICIT_LE);
        buser(&t);
        assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
        assert_non_null(strstr(err.msg, "is even"));
    }
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bpc(&t, 5, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    bpc(&t, 7, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    bpc(&t, 5, VERIFICATION, DICOM_TS_EXPLICIT_LE);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "duplicate presentation context id 5"));
}

static void test_context_contents(void **state)
{
    (void)state;
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bpc(&t, 1, NULL, DICOM_TS_IMPLICIT_LE);          /* no abstract syntax */
    bpc(&t, 3, "1.2.abc", DICOM_TS_IMPLICIT_LE);     /* invalid abstract */
    bpc(&t, 5, VERIFICATION, "1.02.3");              /* invalid transfer */
    bpc(&t, 7, VERIFICATION, NULL);                  /* no transfer */
    /* padded UIDs (NUL and space) and an unknown sub-item in between */
    size_t at = bopen(&t, 0x20);
    bmem(&t, "\x09\0\0\0", 4);
    size_t as = bopen(&t, 0x30);
    bmem(&t, VERIFICATION "\0", sizeof VERIFICATION);
    bclose(&t, as);
    bitem(&t, 0x99, "ignored");
    bitem(&t, 0x40, DICOM_TS_EXPLICIT_LE " ");
    bclose(&t, at);
    /* 40 transfer syntaxes: the first 32 are kept */
    at = bopen(&t, 0x20);
    bmem(&t, "\x0b\0\0\0", 4);
    bitem(&t, 0x30, VERIFICATION);
    for (int i = 0; i < 40; i++) {
        char ts[32];
        snprintf(ts, sizeof ts, "1.2.840.10008.1.2.4.%d", 50 + i);
        bitem(&t, 0x40, ts);
    }
    bclose(&t, at);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.ncontexts, 6);
    assert_string_equal(p1.contexts[0].abstract_syntax, "");
    assert_string_equal(p1.contexts[0].syntaxes[0], DICOM_TS_IMPLICIT_LE);
    assert_string_equal(p1.contexts[1].abstract_syntax, "");
    assert_int_equal(p1.contexts[2].nsyntaxes, 1);
    assert_string_equal(p1.contexts[2].syntaxes[0], "");
    assert_int_equal(p1.contexts[3].nsyntaxes, 0);
    assert_string_equal(p1.contexts[4].abstract_syntax, VERIFICATION);
    assert_string_equal(p1.contexts[4].syntaxes[0], DICOM_TS_EXPLICIT_LE);
    assert_int_equal(p1.contexts[5].nsyntaxes, NET_MAX_SYNTAXES);
    assert_string_equal(p1.contexts[5].syntaxes[31], "1.2.840.10008.1.2.4.81");
    /* two abstract syntaxes in one context */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    at = bopen(&t, 0x20);
    bmem(&t, "\x01\0\0\0", 4);
    bitem(&t, 0x30, VERIFICATION);
    bitem(&t, 0x30, VERIFICATION);
    bclose(&t, at);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    /* a context item shorter than its fixed 4 bytes */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bitem(&t, 0x20, "\x01");
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
}

static void test_ac_contexts(void **state)
{
    (void)state;
    bfixed(&t, 1, CALLED, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    bitem(&t, 0x10, NET_APP_CONTEXT);
    size_t at = bopen(&t, 0x21);
    bmem(&t, "\x01\0\0\0", 4);
    bitem(&t, 0x40, DICOM_TS_EXPLICIT_LE);
    bclose(&t, at);
    at = bopen(&t, 0x21);                 /* rejected, no transfer syntax */
    bmem(&t, "\x03\0\x03\0", 4);
    bclose(&t, at);
    bpc(&t, 5, VERIFICATION, NULL);       /* an RQ item in an AC: skipped */
    buser(&t);
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_AC, t.b, t.n, &p1,
                                     &err), AG_OK);
    assert_string_equal(p1.calling_ae, "");   /* not tested in an AC */
    assert_int_equal(p1.ncontexts, 2);
    assert_int_equal(p1.contexts[0].result, NET_PC_ACCEPTANCE);
    assert_string_equal(p1.contexts[0].syntaxes[0], DICOM_TS_EXPLICIT_LE);
    assert_int_equal(p1.contexts[1].id, 3);
    assert_int_equal(p1.contexts[1].result,
                     NET_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED);
    assert_int_equal(p1.contexts[1].nsyntaxes, 1);
    assert_string_equal(p1.contexts[1].syntaxes[0], "");
    /* two transfer syntaxes in an accepted context */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    at = bopen(&t, 0x21);
    bmem(&t, "\x01\0\0\0", 4);
    bitem(&t, 0x40, DICOM_TS_EXPLICIT_LE);
    bitem(&t, 0x40, DICOM_TS_IMPLICIT_LE);
    bclose(&t, at);
    buser(&t);
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_AC, t.b, t.n, &p1,
                                     &err), AG_ERR_PARSE);
}

/* ---- the fixed part, mandatory items ------------------------------------- */

static void test_protocol_version(void **state)
{
    (void)state;
    brq(&t);
    t.b[0] = 0;
    t.b[1] = 0;
    assert_int_equal(parse_rq(&t), AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "protocol version 0x0000"));
    t.b[1] = 2;
    assert_int_equal(parse_rq(&t), AG_ERR_UNSUPPORTED);
    t.b[1] = 3;   /* version 1 among others: fine */
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.protocol_version, 3);
}

static void test_ae_titles(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        const char *want;   /* NULL: refused */
    } cases[] = {
        {"   PACS  X      ", "PACS  X"},
        {"PACS\0\0\0\0\0\0\0\0\0\0\0\0", "PACS"},
        {"0123456789ABCDEF", "0123456789ABCDEF"},
        {"                ", NULL},
        {"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", NULL},
        {"PA\\CS           ", NULL},
        {"PA\nCS           ", NULL},
        {"PA\0CS           ", NULL},
        {"PA\xe9" "CS           ", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int which = 0; which < 2; which++) {
            bfixed(&t, 1, which == 0 ? cases[i].field : CALLED,
                   which == 1 ? cases[i].field : CALLING);
            bitem(&t, 0x10, NET_APP_CONTEXT);
            bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
            buser(&t);
            int rc = parse_rq(&t);
            if (cases[i].want == NULL) {
                assert_int_equal(rc, AG_ERR_PARSE);
                assert_non_null(strstr(err.msg, which == 0 ? "called ae"
                                                           : "calling ae"));
            } else {
                assert_int_equal(rc, AG_OK);
                assert_string_equal(which == 0 ? p1.called_ae : p1.calling_ae,
                                    cases[i].want);
            }
        }
    }
}

static void test_mandatory_items(void **state)
{
    (void)state;
    /* no application context */
    bfixed(&t, 1, CALLED, CALLING);
    bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "no application context item"));
    /* two */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    /* another application context: kept for the caller to reject (ACSE
     * reason 2); an invalid one kept as "" */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, "1.2.3.4.5");
    bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_string_equal(p1.app_context, "1.2.3.4.5");
    t.b[ASSOC_FIXED_FOR_TEST + 4] = 'x';
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_string_equal(p1.app_context, "");
    /* no presentation context */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    buser(&t);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "no presentation context item"));
    /* no user information */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "no user information item"));
    /* shorter than the fixed part */
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_RQ, t.b, 67, &p1,
                                     &err), AG_ERR_PARSE);
    assert_int_equal(net_parse_assoc(0x04, t.b, t.n, &p1, &err),
                     AG_ERR_INVALID);
}

static void test_unknown_items_skipped(void **state)
{
    (void)state;
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x77, "top-level");
    bitem(&t, 0x10, NET_APP_CONTEXT);
    bitem(&t, 0x21, "an ac item in an rq");
    bpc(&t, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    size_t at = bopen(&t, 0x50);
    bitem(&t, 0x5a, "future sub-item");
    bitem(&t, 0x59, "");            /* an AC sub-item in an RQ */
    size_t ml = bopen(&t, 0x51);
    bmem(&t, "\0\1\0\0", 4);
    bclose(&t, ml);
    bclose(&t, at);
    bitem(&t, 0xff, "");
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.ncontexts, 1);
    assert_int_equal(p1.max_pdu, 65536);
    assert_string_equal(p1.impl_class_uid, "");
    assert_false(p1.identity.response_requested);
}

/* ---- user information sub-items ------------------------------------------ */

/* RQ with a user information item whose sub-items the caller appends;
 * returns where the item's length goes. */
static size_t brq_user(B *b)
{
    bfixed(b, 1, CALLED, CALLING);
    bitem(b, 0x10, NET_APP_CONTEXT);
    bpc(b, 1, VERIFICATION, DICOM_TS_IMPLICIT_LE);
    return bopen(b, 0x50);
}

static void bidentity(B *b, uint8_t type, size_t n1, size_t n2)
{
    size_t at = bopen(b, 0x58);
    b8(b, type);
    b8(b, 1);
    b16(b, (uint16_t)n1);
    for (size_t i = 0; i < n1; i++) {
        b8(b, 'u');
    }
    b16(b, (uint16_t)n2);
    for (size_t i = 0; i < n2; i++) {
        b8(b, 'p');
    }
    bclose(b, at);
}

static void test_user_identity(void **state)
{
    (void)state;
    size_t ui = brq_user(&t);
    bidentity(&t, NET_UID_USERNAME_PASSCODE, 255, 255);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.identity.type, NET_UID_USERNAME_PASSCODE);
    assert_true(p1.identity.response_requested);
    assert_int_equal(strlen(p1.identity.primary), 255);
    assert_int_equal(strlen(p1.identity.secondary), 255);

    ui = brq_user(&t);
    bidentity(&t, NET_UID_JWT, 256, 0);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "user identity field too long"));

    ui = brq_user(&t);
    bidentity(&t, NET_UID_USERNAME_PASSCODE, 3, 4000);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "user identity field too long"));

    ui = brq_user(&t);
    bidentity(&t, 0, 3, 0);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);

    /* a primary field length that lies */
    ui = brq_user(&t);
    size_t at = bopen(&t, 0x58);
    bmem(&t, "\x01\x00\x00\x10" "abc\0\0", 9);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "primary field length 16 runs past"));

    /* no secondary length at all; then bytes after it */
    ui = brq_user(&t);
    at = bopen(&t, 0x58);
    bmem(&t, "\x01\x00\x00\x03" "abc", 7);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    ui = brq_user(&t);
    at = bopen(&t, 0x58);
    bmem(&t, "\x01\x00\x00\x03" "abc\0\0!", 10);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);

    /* a NUL inside a username could not be told from its end */
    ui = brq_user(&t);
    at = bopen(&t, 0x58);
    bmem(&t, "\x01\x00\x00\x03" "a\0c\0\0", 9);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);

    /* two identities */
    ui = brq_user(&t);
    bidentity(&t, 1, 3, 0);
    bidentity(&t, 1, 3, 0);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "duplicate user information sub-item"));

    /* an AC's server response, longer than the 256 bytes kept */
    bfixed(&t, 1, CALLED, CALLING);
    bitem(&t, 0x10, NET_APP_CONTEXT);
    at = bopen(&t, 0x21);
    bmem(&t, "\x01\0\0\0", 4);
    bclose(&t, at);
    ui = bopen(&t, 0x50);
    at = bopen(&t, 0x59);
    b16(&t, 257);
    for (int i = 0; i < 257; i++) {
        b8(&t, 'r');
    }
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(net_parse_assoc(NET_PDU_ASSOCIATE_AC, t.b, t.n, &p1,
                                     &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "user identity field too long"));
}

static void test_user_info_sub_items(void **state)
{
    (void)state;
    /* async window, roles, ext neg, common ext neg, padded version name */
    size_t ui = brq_user(&t);
    size_t at = bopen(&t, 0x53);
    bmem(&t, "\0\x10\0\x01", 4);
    bclose(&t, at);
    for (int i = 0; i < NET_MAX_CONTEXTS + 2; i++) {
        at = bopen(&t, 0x54);
        b16(&t, sizeof VERIFICATION - 1);
        bmem(&t, VERIFICATION, sizeof VERIFICATION - 1);
        b8(&t, 1);
        b8(&t, (uint8_t)(i % 2));
        bclose(&t, at);
    }
    for (int i = 0; i < 20; i++) {
        at = bopen(&t, 0x56);
        b16(&t, sizeof VERIFICATION - 1);
        bmem(&t, VERIFICATION, sizeof VERIFICATION - 1);
        bmem(&t, "\1\0\1", 3);
        bclose(&t, at);
    }
    at = bopen(&t, 0x57);
    b16(&t, 3);
    bmem(&t, "1.2", 3);
    b16(&t, 3);
    bmem(&t, "1.3", 3);
    b16(&t, 10);
    b16(&t, 3);
    bmem(&t, "1.4", 3);
    b16(&t, 3);
    bmem(&t, "1.5", 3);
    bclose(&t, at);
    bitem(&t, 0x55, "MY_IMPL  \0");
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.max_ops_invoked, 16);
    assert_int_equal(p1.max_ops_performed, 1);
    assert_int_equal(p1.nroles, NET_MAX_CONTEXTS);
    assert_string_equal(p1.roles[1].sop_class, VERIFICATION);
    assert_true(p1.roles[1].scu);
    assert_true(p1.roles[1].scp);
    assert_false(p1.roles[0].scp);
    assert_int_equal(p1.nextneg, 16);
    assert_int_equal(p1.extneg[15].len, 3);
    assert_memory_equal(p1.extneg[15].info, "\1\0\1", 3);
    assert_string_equal(p1.impl_version, "MY_IMPL");

    /* inconsistent common extended negotiation */
    ui = brq_user(&t);
    at = bopen(&t, 0x57);
    b16(&t, 3);
    bmem(&t, "1.2", 3);
    b16(&t, 3);
    bmem(&t, "1.3", 3);
    b16(&t, 5);
    b16(&t, 4);
    bmem(&t, "1.4", 3);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);

    /* role item with a lying uid length, and with a byte missing */
    ui = brq_user(&t);
    at = bopen(&t, 0x54);
    b16(&t, 40);
    bmem(&t, "1.2\1\0", 5);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    ui = brq_user(&t);
    at = bopen(&t, 0x54);
    b16(&t, 3);
    bmem(&t, "1.2\1", 4);
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);

    /* ext neg info longer than kept: the item is not answered */
    ui = brq_user(&t);
    at = bopen(&t, 0x56);
    b16(&t, 3);
    bmem(&t, "1.2", 3);
    for (int i = 0; i < 65; i++) {
        b8(&t, 1);
    }
    bclose(&t, at);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_OK);
    assert_int_equal(p1.nextneg, 0);

    /* version name over 16, async window of the wrong size, two max
     * lengths */
    ui = brq_user(&t);
    bitem(&t, 0x55, "ABCDEFGHIJKLMNOPQ");
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    ui = brq_user(&t);
    bitemn(&t, 0x53, "\0\1\0", 3);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    ui = brq_user(&t);
    bitemn(&t, 0x51, "\0\0\1\0", 4);
    bitemn(&t, 0x51, "\0\0\2\0", 4);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    /* a truncated sub-item header inside the user item */
    ui = brq_user(&t);
    bmem(&t, "\x51\0\0", 3);
    bclose(&t, ui);
    assert_int_equal(parse_rq(&t), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "truncated item header in user "
                                    "information"));
}

/* ---- PDVs ---------------------------------------------------------------- */

static void test_pdv_echoscu(void **state)
{
    (void)state;
    const uint8_t *body = ECHOSCU_PDATA + NET_PDU_HEADER;
    size_t len = sizeof ECHOSCU_PDATA - NET_PDU_HEADER;
    size_t pos = 0;
    NetPdv pdv;
    assert_int_equal(net_next_pdv(body, len, &pos, &pdv, &err), AG_OK);
    assert_int_equal(pdv.context_id, 1);
    assert_true(pdv.command);
    assert_true(pdv.last);
    assert_int_equal(pdv.len, 0x44);
    assert_ptr_equal(pdv.data, body + 6);
    assert_int_equal(pos, len);
    assert_int_equal(net_next_pdv(body, len, &pos, &pdv, &err), AG_ERR_EOF);
}

static void test_pdv_iteration(void **state)
{
    (void)state;
    static const uint8_t body[] = {
        0, 0, 0, 5, 3, 0x00, 'a', 'b', 'c',     /* data, not last */
        0, 0, 0, 2, 3, 0x02,                    /* zero-length, last */
        0, 0, 0, 3, 1, 0x03, 'x',               /* command, last */
    };
    size_t pos = 0;
    NetPdv pdv;
    assert_int_equal(net_next_pdv(body, sizeof body, &pos, &pdv, &err),
                     AG_OK);
    assert_int_equal(pdv.context_id, 3);
    assert_false(pdv.command);
    assert_false(pdv.last);
    assert_int_equal(pdv.len, 3);
    assert_memory_equal(pdv.data, "abc", 3);
    assert_int_equal(net_next_pdv(body, sizeof body, &pos, &pdv, &err),
                     AG_OK);
    assert_int_equal(pdv.len, 0);
    assert_true(pdv.last);
    assert_false(pdv.command);
    assert_int_equal(net_next_pdv(body, sizeof body, &pos, &pdv, &err),
                     AG_OK);
    assert_true(pdv.command);
    assert_int_equal(pdv.len, 1);
    assert_int_equal(net_next_pdv(body, sizeof body, &pos, &pdv, &err),
                     AG_ERR_EOF);
    /* an empty body has no PDV */
    pos = 0;
    assert_int_equal(net_next_pdv(body, 0, &pos, &pdv, &err), AG_ERR_EOF);
    /* every truncation of the body fails at the PDV it cuts */
    for (size_t k = 1; k < sizeof body; k++) {
        pos = 0;
        int rc;
        while ((rc = net_next_pdv(body, k, &pos, &pdv, &err)) == AG_OK) {
            assert_true(pos <= k);
        }
        if (k == 9 || k == 15) {
            assert_int_equal(rc, AG_ERR_EOF);   /* a PDV boundary */
        } else {
            assert_int_equal(rc, AG_ERR_PARSE);
        }
    }
    /* lying lengths */
    static const uint8_t too_long[] = {0, 0, 0, 9, 1, 0, 'a', 'b'};
    pos = 0;
    assert_int_equal(net_next_pdv(too_long, sizeof too_long, &pos, &pdv,
                                  &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "pdv length 9 runs past"));
    assert_int_equal(pos, 0);
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 0, 'a', 'b'};
    assert_int_equal(net_next_pdv(huge, sizeof huge, &pos, &pdv, &err),
                     AG_ERR_PARSE);
    static const uint8_t short1[] = {0, 0, 0, 1, 1, 0};
    assert_int_equal(net_next_pdv(short1, sizeof short1, &pos, &pdv, &err),
                     AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "shorter than 2"));
    static const uint8_t zero[] = {0, 0, 0, 0, 1, 0};
    assert_int_equal(net_next_pdv(zero, sizeof zero, &pos, &pdv, &err),
                     AG_ERR_PARSE);
    pos = 100;
    assert_int_equal(net_next_pdv(zero, sizeof zero, &pos, &pdv, &err),
                     AG_ERR_INVALID);
}

/* ---- RJ, abort, release -------------------------------------------------- */

static void test_reject(void **state)
{
    (void)state;
    NetReject rj = {NET_RJ_PERMANENT, NET_RJ_SOURCE_USER, NET_RJ_CALLED_AE};
    assert_int_equal(net_encode_reject(&rj, &out, &err), AG_OK);
    static const uint8_t want[] = {3, 0, 0, 0, 0, 4, 0, 1, 1, 7};
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    NetReject back;
    assert_int_equal(net_parse_reject(out.data + 6, 4, &back, &err), AG_OK);
    assert_int_equal(back.result, NET_RJ_PERMANENT);
    assert_int_equal(back.source, NET_RJ_SOURCE_USER);
    assert_int_equal(back.reason, NET_RJ_CALLED_AE);
    assert_int_equal(net_parse_reject(out.data + 6, 3, &back, &err),
                     AG_ERR_PARSE);
    assert_int_equal(net_parse_reject(out.data + 6, 0, &back, &err),
                     AG_ERR_PARSE);
    assert_int_equal(net_parse_reject(want, 5, &back, &err), AG_ERR_PARSE);
}

static void test_abort_and_release(void **state)
{
    (void)state;
    assert_int_equal(net_encode_abort(NET_ABORT_SOURCE_PROVIDER,
                                      NET_ABORT_INVALID_PARAM, &out, &err),
                     AG_OK);
    static const uint8_t want[] = {7, 0, 0, 0, 0, 4, 0, 0, 2, 6};
    assert_memory_equal(out.data, want, sizeof want);
    uint8_t source = 0xee;
    uint8_t reason = 0xee;
    assert_int_equal(net_parse_abort(out.data + 6, 4, &source, &reason,
                                     &err), AG_OK);
    assert_int_equal(source, NET_ABORT_SOURCE_PROVIDER);
    assert_int_equal(reason, NET_ABORT_INVALID_PARAM);
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(net_parse_abort(out.data + 6, k, &source, &reason,
                                         &err), AG_ERR_PARSE);
    }
    ag_buf_reset(&out);
    assert_int_equal(net_encode_release(NET_PDU_RELEASE_RQ, &out, &err),
                     AG_OK);
    assert_int_equal(net_encode_release(NET_PDU_RELEASE_RP, &out, &err),
                     AG_OK);
    static const uint8_t rel[] = {5, 0, 0, 0, 0, 4, 0, 0, 0, 0,
                                  6, 0, 0, 0, 0, 4, 0, 0, 0, 0};
    assert_int_equal(out.len, sizeof rel);
    assert_memory_equal(out.data, rel, sizeof rel);
    assert_int_equal(net_encode_release(NET_PDU_ABORT, &out, &err),
                     AG_ERR_INVALID);
    AgBuf tiny;
    ag_buf_init(&tiny, 9);
    assert_int_equal(net_encode_abort(0, 0, &tiny, &err), AG_ERR_LIMIT);
    assert_int_equal(tiny.len, 0);
    ag_buf_deinit(&tiny);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_each, teardown_each)
    const struct CMUnitTest tests[] = {
        T(test_echoscu_rq_every_field),
        T(test_echoscu_rq_reencoded),
        T(test_echoscu_truncated_at_every_offset),
        T(test_echoscu_every_byte_mutated),
        T(test_lying_item_lengths),
        T(test_roundtrip_rq),
        T(test_roundtrip_ac),
        T(test_encode_appends_and_keeps_buffer_on_error),
        T(test_encode_survives_every_oom),
        T(test_200_contexts_capped),
        T(test_even_and_duplicate_context_ids),
        T(test_context_contents),
        T(test_ac_contexts),
        T(test_protocol_version),
        T(test_ae_titles),
        T(test_mandatory_items),
        T(test_unknown_items_skipped),
        T(test_user_identity),
        T(test_user_info_sub_items),
        T(test_pdv_echoscu),
        T(test_pdv_iteration),
        T(test_reject),
        T(test_abort_and_release),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
