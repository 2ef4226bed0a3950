/*
 * test_dimse.c — DIMSE command sets (PS3.7 §9.3, §10.3): the C-ECHO-RQ
 * DCMTK's echoscu really sends, encode→parse round trips for every command
 * Agora uses, the exact bytes of padding and group length, and bad input
 * built byte by byte.
 */
#include "../test_util.h"

#include "net/net.h"

#include <stdio.h>

/* The P-DATA-TF echoscu (DCMTK 3.6.7) sends after the association is
 * accepted: one command PDV holding its C-ECHO-RQ. */
static const uint8_t ECHOSCU_PDATA[] = {
    0x04, 0x00, 0x00, 0x00, 0x00, 0x4a, 0x00, 0x00, 0x00, 0x46, 0x01, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, 0x31, 0x2e, 0x32, 0x2e,
    0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e,
    0x31, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00,
    0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01,
};
#define ECHO_CMD (ECHOSCU_PDATA + 12)
#define ECHO_CMD_LEN (sizeof ECHOSCU_PDATA - 12)

#define VERIFICATION "1.2.840.10008.1.1"
#define CT_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"
#define COMMITMENT "1.2.840.10008.1.20.1"
#define COMMITMENT_INSTANCE "1.2.840.10008.1.20.1.1"

static AgError err;
static AgBuf out;
static DimseCommand c1;
static DimseCommand c2;
static TBuf t;

static int setup_each(void **state)
{
    (void)state;
    ag_error_clear(&err);
    ag_buf_init(&out, 1 << 16);
    t.n = 0;
    return 0;
}

static int teardown_each(void **state)
{
    (void)state;
    ag_buf_deinit(&out);
    return 0;
}

/* A command with nothing set: counts absent. */
static void blank(DimseCommand *c, uint16_t command)
{
    memset(c, 0, sizeof *c);
    c->command = command;
    c->dataset_type = DIMSE_NO_DATASET;
    c->remaining = c->completed = c->failed = c->warning = -1;
}

/* Implicit VR LE element of group 0000. */
static void el(TBuf *b, uint16_t e, const void *v, uint32_t n)
{
    tb_u16(b, 0x0000);
    tb_u16(b, e);
    tb_u32(b, n);
    tb_bytes(b, v, n);
}

static void el_us(TBuf *b, uint16_t e, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    el(b, e, p, 2);
}

/* Walk an encoded command set: group length first and right, tags strictly
 * ascending, every value even. */
static void check_layout(const uint8_t *p, size_t n)
{
    assert_true(n >= 12);
    assert_memory_equal(p, "\0\0\0\0\4\0\0\0", 8);
    uint32_t gl = (uint32_t)p[8] | (uint32_t)p[9] << 8 |
                  (uint32_t)p[10] << 16 | (uint32_t)p[11] << 24;
    assert_int_equal(gl, n - 12);
    uint32_t last = 0;
    for (size_t pos = 12; pos < n;) {
        assert_true(n - pos >= 8);
        assert_int_equal(p[pos] | p[pos + 1] << 8, 0);
        uint32_t e = (uint32_t)(p[pos + 2] | p[pos + 3] << 8);
        uint32_t len = (uint32_t)p[pos + 4] | (uint32_t)p[pos + 5] << 8 |
                       (uint32_t)p[pos + 6] << 16 | (uint32_t)p[pos + 7] << 24;
        assert_true(e > last);
        assert_int_equal(len % 2, 0);
        assert_true(len <= n - pos - 8);
        last = e;
        pos += 8 + len;
    }
}

static bool has_element(const uint8_t *p, size_t n, uint16_t element)
{
    for (size_t pos = 0; pos + 8 <= n;) {
        uint32_t e = (uint32_t)(p[pos + 2] | p[pos + 3] << 8);
        uint32_t len = (uint32_t)p[pos + 4] | (uint32_t)p[pos + 5] << 8 |
                       (uint32_t)p[pos + 6] << 16 | (uint32_t)p[pos + 7] << 24;
        if (e == element) {
            return true;
        }
        pos += 8 + len;
    }
    return false;
}

/* ---- echoscu ------------------------------------------------------------- */

static void test_echoscu_command(void **state)
{
    (void)state;
    /* reached the way the association code will: through the PDV */
    size_t pos = 0;
    NetPdv pdv;
    assert_int_equal(net_next_pdv(ECHOSCU_PDATA + NET_PDU_HEADER,
                                  sizeof ECHOSCU_PDATA - NET_PDU_HEADER, &pos,
                                  &pdv, &err), AG_OK);
    assert_true(pdv.command && pdv.last);
    assert_ptr_equal(pdv.data, ECHO_CMD);
    assert_int_equal(pdv.len, ECHO_CMD_LEN);
    assert_int_equal(dimse_command_parse(pdv.data, pdv.len, &c1, &err),
                     AG_OK);
    assert_int_equal(c1.command, DIMSE_C_ECHO_RQ);
    assert_int_equal(c1.message_id, 1);
    assert_int_equal(c1.dataset_type, DIMSE_NO_DATASET);
    assert_string_equal(c1.affected_class, VERIFICATION);
    assert_string_equal(c1.affected_instance, "");
    assert_int_equal(c1.priority, 0);
    assert_int_equal(c1.remaining, -1);
    assert_int_equal(c1.warning, -1);
    assert_int_equal(c1.offending_element, 0);
}

/* Our C-ECHO-RQ is DCMTK's, byte for byte. */
static void test_echo_rq_bytes_match_dcmtk(void **state)
{
    (void)state;
    blank(&c1, DIMSE_C_ECHO_RQ);
    c1.message_id = 1;
    strcpy(c1.affected_class, VERIFICATION);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    assert_int_equal(out.len, ECHO_CMD_LEN);
    assert_memory_equal(out.data, ECHO_CMD, ECHO_CMD_LEN);
}

static void test_echo_rsp_bytes(void **state)
{
    (void)state;
    blank(&c1, DIMSE_C_ECHO_RSP);
    c1.responded_id = 7;
    c1.status = DIMSE_SUCCESS;
    strcpy(c1.affected_class, VERIFICATION);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    TBuf w = {.n = 0};
    el(&w, 0x0000, "\x42\0\0\0", 4);
    el(&w, 0x0002, VERIFICATION "", 18);   /* NUL padded to 18 */
    el_us(&w, 0x0100, 0x8030);
    el_us(&w, 0x0120, 7);
    el_us(&w, 0x0800, 0x0101);
    el_us(&w, 0x0900, 0x0000);
    assert_int_equal(out.len, w.n);
    assert_memory_equal(out.data, w.b, w.n);
}

/* ---- round trips --------------------------------------------------------- */

static void roundtrip(const DimseCommand *c)
{
    ag_buf_reset(&out);
    assert_int_equal(dimse_command_encode(c, &out, &err), AG_OK);
    check_layout(out.data, out.len);
    assert_int_equal(dimse_command_parse(out.data, out.len, &c2, &err),
                     AG_OK);
    assert_memory_equal(c, &c2, sizeof *c);
}

static void test_roundtrip_every_command(void **state)
{
    (void)state;
    /* C-STORE-RQ, with and without the C-MOVE originator */
    blank(&c1, DIMSE_C_STORE_RQ);
    c1.message_id = 3;
    c1.priority = 2;
    c1.dataset_type = 0x0000;
    strcpy(c1.affected_class, CT_STORAGE);
    strcpy(c1.affected_instance, "1.2.826.0.1.3680043.2.1125.1.12345");
    roundtrip(&c1);
    assert_false(has_element(out.data, out.len, 0x1030));
    strcpy(c1.move_originator_ae, "WORKSTATION");
    c1.move_originator_id = 9;
    roundtrip(&c1);
    assert_true(has_element(out.data, out.len, 0x1031));

    blank(&c1, DIMSE_C_STORE_RSP);
    c1.responded_id = 3;
    c1.status = DIMSE_WARNING_COERCION;
    strcpy(c1.affected_class, CT_STORAGE);
    strcpy(c1.affected_instance, "1.2.3.4");
    strcpy(c1.error_comment, "patient id coerced");
    c1.offending_element = DICOM_TAG(0x0010, 0x0020);
    roundtrip(&c1);

    blank(&c1, DIMSE_C_FIND_RQ);
    c1.message_id = 11;
    c1.dataset_type = 0x0102;
    strcpy(c1.affected_class, STUDY_ROOT_FIND);
    roundtrip(&c1);
    blank(&c1, DIMSE_C_FIND_RSP);
    c1.responded_id = 11;
    c1.status = DIMSE_PENDING;
    c1.dataset_type = 0x0102;
    strcpy(c1.affected_class, STUDY_ROOT_FIND);
    roundtrip(&c1);

    blank(&c1, DIMSE_C_MOVE_RQ);
    c1.message_id = 12;
    c1.priority = 1;
    c1.dataset_type = 0x0102;
    strcpy(c1.affected_class, STUDY_ROOT_MOVE);
    strcpy(c1.move_destination, "DEST");
    roundtrip(&c1);
    blank(&c1, DIMSE_C_MOVE_RSP);
    c1.responded_id = 12;
    c1.status = DIMSE_WARNING_SUBOPS;
    strcpy(c1.affected_class, STUDY_ROOT_MOVE);
    c1.remaining = 0;
    c1.completed = 65535;
    c1.failed = 2;
    c1.warning = 1;
    roundtrip(&c1);

    blank(&c1, DIMSE_C_GET_RQ);
    c1.message_id = 13;
    c1.dataset_type = 0x0102;
    strcpy(c1.affected_class, STUDY_ROOT_GET);
    roundtrip(&c1);
    blank(&c1, DIMSE_C_GET_RSP);
    c1.responded_id = 13;
    c1.status = DIMSE_PENDING;
    c1.remaining = 5;
    c1.completed = 1;
    c1.failed = 0;
    c1.warning = 0;
    roundtrip(&c1);

    blank(&c1, DIMSE_C_CANCEL_RQ);
    c1.responded_id = 12;
    roundtrip(&c1);
    assert_false(has_element(out.data, out.len, 0x0110));

    blank(&c1, DIMSE_N_ACTION_RQ);
    c1.message_id = 20;
    c1.dataset_type = 0x0102;
    strcpy(c1.requested_class, COMMITMENT);
    strcpy(c1.requested_instance, COMMITMENT_INSTANCE);
    c1.action_type = 1;
    roundtrip(&c1);
    blank(&c1, DIMSE_N_ACTION_RSP);
    c1.responded_id = 20;
    strcpy(c1.affected_class, COMMITMENT);
    strcpy(c1.affected_instance, COMMITMENT_INSTANCE);
    c1.action_type = 1;
    roundtrip(&c1);

    blank(&c1, DIMSE_N_EVENT_REPORT_RQ);
    c1.message_id = 21;
    c1.dataset_type = 0x0102;
    strcpy(c1.affected_class, COMMITMENT);
    strcpy(c1.affected_instance, COMMITMENT_INSTANCE);
    c1.event_type = 2;
    roundtrip(&c1);
    blank(&c1, DIMSE_N_EVENT_REPORT_RSP);
    c1.responded_id = 21;
    c1.status = DIMSE_PROCESSING_FAILURE;
    strcpy(c1.affected_class, COMMITMENT);
    strcpy(c1.affected_instance, COMMITMENT_INSTANCE);
    c1.event_type = 2;
    strcpy(c1.error_comment, "x");
    roundtrip(&c1);

    blank(&c1, DIMSE_C_ECHO_RQ);
    c1.message_id = 0;   /* 0 is a message id like any other */
    strcpy(c1.affected_class, VERIFICATION);
    roundtrip(&c1);
    assert_true(has_element(out.data, out.len, 0x0110));
}

/* What each command leaves out even when the struct has it set. */
static void test_fields_per_command(void **state)
{
    (void)state;
    blank(&c1, DIMSE_C_ECHO_RSP);
    c1.message_id = 5;       /* a request's field */
    c1.priority = 2;
    c1.remaining = 4;        /* only for C-FIND/GET/MOVE responses */
    strcpy(c1.move_originator_ae, "X");
    c1.event_type = 1;
    c1.action_type = 1;
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    static const uint16_t absent[] = {0x0002, 0x0110, 0x0700, 0x1020,
                                      0x1030, 0x1031, 0x1002, 0x1008};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        assert_false(has_element(out.data, out.len, absent[i]));
    }
    static const uint16_t present[] = {0x0000, 0x0100, 0x0120, 0x0800,
                                       0x0900};
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
        assert_true(has_element(out.data, out.len, present[i]));
    }
    /* C-STORE-RQ: the status of a request is never sent */
    ag_buf_reset(&out);
    blank(&c1, DIMSE_C_STORE_RQ);
    strcpy(c1.affected_class, CT_STORAGE);
    strcpy(c1.affected_instance, "1.2.3");
    c1.status = 0xc000;
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    assert_false(has_element(out.data, out.len, 0x0900));
    assert_true(has_element(out.data, out.len, 0x0700));
}

static void test_padding(void **state)
{
    (void)state;
    blank(&c1, DIMSE_C_MOVE_RQ);
    c1.message_id = 1;
    strcpy(c1.affected_class, "1.2.3");        /* odd: NUL pad */
    strcpy(c1.move_destination, "ABC");        /* odd: space pad */
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    assert_non_null(memmem(out.data, out.len,
                           "\0\0\x02\0\x06\0\0\0" "1.2.3\0", 14));
    assert_non_null(memmem(out.data, out.len,
                           "\0\0\0\x06\x04\0\0\0" "ABC ", 12));
    ag_buf_reset(&out);
    blank(&c1, DIMSE_C_STORE_RSP);
    strcpy(c1.error_comment, "odd");
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_OK);
    assert_non_null(memmem(out.data, out.len,
                           "\0\0\x02\x09\x04\0\0\0" "odd ", 12));
}

static void test_encode_refuses(void **state)
{
    (void)state;
    assert_int_equal(ag_buf_append(&out, "k", 1), AG_OK);
    blank(&c1, DIMSE_C_STORE_RQ);
    strcpy(c1.affected_class, CT_STORAGE);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_ERR_INVALID);
    assert_string_equal(err.msg, "c-store-rq: (0000,1000) affected sop "
                                 "instance uid is required");
    assert_int_equal(out.len, 1);
    blank(&c1, DIMSE_C_MOVE_RQ);
    strcpy(c1.affected_class, STUDY_ROOT_MOVE);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "move destination is required"));
    blank(&c1, DIMSE_N_ACTION_RQ);
    strcpy(c1.requested_class, COMMITMENT);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_ERR_INVALID);
    blank(&c1, DIMSE_C_MOVE_RSP);
    c1.completed = 70000;
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_ERR_INVALID);
    blank(&c1, DIMSE_C_ECHO_RSP);
    memset(c1.affected_class, '1', sizeof c1.affected_class);
    assert_int_equal(dimse_command_encode(&c1, &out, &err), AG_ERR_INVALID);
    assert_int_equal(out.len, 1);
    AgBuf small;
    ag_buf_init(&small, 20);
    blank(&c1, DIMSE_C_ECHO_RSP);
    assert_int_equal(dimse_command_encode(&c1, &small, &err), AG_ERR_LIMIT);
    assert_int_equal(small.len, 0);
    ag_buf_deinit(&small);
}

static void test_encode_survives_every_oom(void **state)
{
    (void)state;
    blank(&c1, DIMSE_C_STORE_RQ);
    strcpy(c1.affected_class, CT_STORAGE);
    strcpy(c1.affected_instance, "1.2.3");
    for (int n = 1;; n++) {
        AgBuf b;
        ag_buf_init(&b, 0);
        ag_test_fail_nth_alloc(n);
        int rc = dimse_command_encode(&c1, &b, &err);
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

/* ---- bad input ----------------------------------------------------------- */

static void test_truncated_at_every_offset(void **state)
{
    (void)state;
    for (size_t k = 0; k < ECHO_CMD_LEN; k++) {
        int rc = dimse_command_parse(ECHO_CMD, k, &c1, &err);
        /* cut inside an element, or before the command field: refused */
        if (k == 48 || k == 58) {
            assert_int_equal(rc, AG_OK);   /* element boundaries after it */
        } else {
            assert_int_equal(rc, AG_ERR_PARSE);
        }
    }
}

static void test_outside_group(void **state)
{
    (void)state;
    el_us(&t, 0x0100, DIMSE_C_ECHO_RQ);
    tb_u16(&t, 0x0008);                       /* a data set element */
    tb_u16(&t, 0x0016);
    tb_u32(&t, 2);
    tb_bytes(&t, "1\0", 2);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "(0008,0016) at offset 10 is outside "
                                    "group 0000"));
    t.n = 0;
    tb_u16(&t, 0x0001);                       /* odd group */
    tb_u16(&t, 0x0100);
    tb_u32(&t, 2);
    tb_u16(&t, 0x30);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
}

static void test_length_past_end(void **state)
{
    (void)state;
    el_us(&t, 0x0100, DIMSE_C_ECHO_RQ);
    tb_u16(&t, 0);
    tb_u16(&t, 0x0002);
    tb_u32(&t, 18);
    tb_bytes(&t, "1.2.840", 7);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "length 18 runs past the command set "
                                    "(7 bytes left)"));
    t.n = 0;
    el_us(&t, 0x0100, DIMSE_C_ECHO_RQ);
    tb_u16(&t, 0);
    tb_u16(&t, 0x0002);
    tb_u32(&t, 0xffffffff);                   /* undefined length */
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    t.n = 0;
    el_us(&t, 0x0100, DIMSE_C_ECHO_RQ);
    tb_bytes(&t, "\0\0\x02\0\0\0", 6);       /* truncated header */
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "truncated element header"));
}

static void test_missing_command_field(void **state)
{
    (void)state;
    el(&t, 0x0000, "\x0a\0\0\0", 4);
    el_us(&t, 0x0110, 1);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "no command field (0000,0100)"));
    assert_int_equal(dimse_command_parse(t.b, 0, &c1, &err), AG_ERR_PARSE);
}

static void test_bad_values(void **state)
{
    (void)state;
    static const struct {
        uint16_t element;
        const char *value;
        uint32_t len;
        const char *msg;
    } cases[] = {
        {0x0110, "\1\0\0\0", 4, "US value is not 2 bytes"},
        {0x0100, "\1", 1, "US value is not 2 bytes"},
        {0x1020, "", 0, "US value is not 2 bytes"},
        {0x0901, "\x10\0", 2, "AT value is not a multiple of 4"},
        {0x1000, "1.2/../3", 8, "value is not a uid"},
        {0x1000, "1.2\0.3", 6, "value is not a uid"},
        {0x0002, "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23"
                 ".24.25.26", 66, "longer than 64"},
        {0x0600, "ABCDEFGHIJKLMNOPQ", 17, "longer than 16"},
        {0x0600, "A\\B", 3, "outside its repertoire"},
        {0x1030, "A\nB", 3, "outside its repertoire"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t.n = 0;
        if (cases[i].element != 0x0100) {
            el_us(&t, 0x0100, DIMSE_C_STORE_RQ);
        }
        el(&t, cases[i].element, cases[i].value, cases[i].len);
        assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err),
                         AG_ERR_PARSE);
        assert_non_null(strstr(err.msg, cases[i].msg));
    }
    /* the same field twice, even out of order */
    t.n = 0;
    el_us(&t, 0x0110, 1);
    el_us(&t, 0x0100, DIMSE_C_STORE_RQ);
    el_us(&t, 0x0110, 2);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "appears twice"));
}

static void test_lenient_values(void **state)
{
    (void)state;
    el(&t, 0x0000, "\xff\xff\0\0", 4);           /* wrong group length */
    el(&t, 0x0002, "1.2.3 ", 6);                 /* space padded UID */
    el(&t, 0x0003, "", 0);                       /* empty */
    el_us(&t, 0x0100, DIMSE_C_MOVE_RQ);
    el(&t, 0x0600, "  DEST  X   ", 12);          /* AE with spaces */
    el(&t, 0x0901, "\x10\0\x20\0\x08\0\x18\0", 8);
    char comment[100];
    memset(comment, 'c', sizeof comment);
    el(&t, 0x0902, comment, sizeof comment);     /* over 64: cut */
    el(&t, 0x0903, "\1\0", 2);                   /* unknown: ignored */
    el(&t, 0x5000, "xyz", 3);                    /* odd, unknown */
    el(&t, 0x1000, "", 0);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_OK);
    assert_string_equal(c1.affected_class, "1.2.3");
    assert_string_equal(c1.move_destination, "DEST  X");
    assert_int_equal(c1.offending_element, DICOM_TAG(0x0010, 0x0020));
    assert_int_equal(strlen(c1.error_comment), 64);
    assert_int_equal(c1.remaining, -1);
    /* elements out of order: accepted (DCMTK does), each read once */
    t.n = 0;
    el_us(&t, 0x0900, 0xc000);
    el_us(&t, 0x0100, DIMSE_C_STORE_RSP);
    el(&t, 0x0902, "bad  \0\0", 7);
    assert_int_equal(dimse_command_parse(t.b, t.n, &c1, &err), AG_OK);
    assert_int_equal(c1.status, 0xc000);
    assert_string_equal(c1.error_comment, "bad");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_each, teardown_each)
    const struct CMUnitTest tests[] = {
        T(test_echoscu_command),
        T(test_echo_rq_bytes_match_dcmtk),
        T(test_echo_rsp_bytes),
        T(test_roundtrip_every_command),
        T(test_fields_per_command),
        T(test_padding),
        T(test_encode_refuses),
        T(test_encode_survives_every_oom),
        T(test_truncated_at_every_offset),
        T(test_outside_group),
        T(test_length_past_end),
        T(test_missing_command_field),
        T(test_bad_values),
        T(test_lenient_values),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
