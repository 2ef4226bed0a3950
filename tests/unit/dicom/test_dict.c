/*
 * test_dict.c — the PS3.6 dictionary, the private dictionary and the UID
 * registry (src/dicom/dict.c, uid.c, generated dict_data.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "dicom/dict_int.h"

#define FULL 0xffffffffu

/* ---- standard dictionary --------------------------------------------- */

static void test_known_tags(void **state)
{
    (void)state;
    const DicomDictEntry *e = dicom_dict_lookup(DICOM_TAG(0x0010, 0x0010));
    assert_non_null(e);
    assert_int_equal(e->tag, DICOM_TAG(0x0010, 0x0010));
    assert_int_equal(e->mask, FULL);
    assert_int_equal(e->vr, DICOM_VR_PN);
    assert_int_equal(e->vr2, DICOM_VR_NONE);
    assert_string_equal(e->vm, "1");
    assert_string_equal(e->keyword, "PatientName");
    assert_string_equal(e->name, "Patient's Name");
    assert_false(e->retired);

    e = dicom_dict_lookup(DICOM_TAG_PIXEL_DATA);
    assert_non_null(e);
    assert_string_equal(e->keyword, "PixelData");
    assert_int_equal(e->vr, DICOM_VR_OB);
    assert_int_equal(e->vr2, DICOM_VR_OW);
    assert_int_equal(e->vr3, DICOM_VR_NONE);

    e = dicom_dict_lookup(DICOM_TAG(0x0028, 0x0106));
    assert_non_null(e);
    assert_string_equal(e->keyword, "SmallestImagePixelValue");
    assert_int_equal(e->vr, DICOM_VR_US);
    assert_int_equal(e->vr2, DICOM_VR_SS);
    assert_int_equal(dicom_dict_vr(e->tag), DICOM_VR_US);   /* first VR */

    e = dicom_dict_lookup(DICOM_TAG(0x0028, 0x1200));
    assert_non_null(e);
    assert_string_equal(e->keyword, "GrayLookupTableData");
    assert_int_equal(e->vr, DICOM_VR_US);
    assert_int_equal(e->vr2, DICOM_VR_SS);
    assert_int_equal(e->vr3, DICOM_VR_OW);

    e = dicom_dict_lookup(DICOM_TAG_SOP_CLASS_UID);
    assert_non_null(e);
    assert_int_equal(e->vr, DICOM_VR_UI);
    e = dicom_dict_lookup(DICOM_TAG(0x0008, 0x1115));
    assert_non_null(e);
    assert_int_equal(e->vr, DICOM_VR_SQ);
    assert_int_equal(dicom_dict_vr(DICOM_TAG(0x0008, 0x0020)), DICOM_VR_DA);

    /* Delimiters are listed, without a VR. */
    e = dicom_dict_lookup(DICOM_TAG_ITEM);
    assert_non_null(e);
    assert_string_equal(e->keyword, "Item");
    assert_int_equal(e->vr, DICOM_VR_NONE);
    e = dicom_dict_lookup(DICOM_TAG_SEQ_END);
    assert_non_null(e);
    assert_string_equal(e->keyword, "SequenceDelimitationItem");
    assert_int_equal(dicom_dict_vr(DICOM_TAG_ITEM_END), DICOM_VR_UN);

    /* Not in PS3.6. */
    assert_null(dicom_dict_lookup(DICOM_TAG(0x0008, 0x0003)));
    assert_null(dicom_dict_lookup(DICOM_TAG(0x0010, 0xffff)));
    assert_int_equal(dicom_dict_vr(DICOM_TAG(0x0010, 0xffff)), DICOM_VR_UN);
}

static void test_repeating_groups(void **state)
{
    (void)state;
    const DicomDictEntry *e = dicom_dict_lookup(DICOM_TAG(0x6002, 0x3000));
    assert_non_null(e);
    assert_string_equal(e->keyword, "OverlayData");
    assert_int_equal(e->tag, 0x60003000u);
    assert_int_equal(e->mask, 0xff00ffffu);
    assert_int_equal(e->vr, DICOM_VR_OB);
    assert_int_equal(e->vr2, DICOM_VR_OW);

    e = dicom_dict_lookup(DICOM_TAG(0x6000, 0x0010));  /* the zeroed tag */
    assert_non_null(e);
    assert_string_equal(e->keyword, "OverlayRows");
    e = dicom_dict_lookup(DICOM_TAG(0x601e, 0x0011));
    assert_non_null(e);
    assert_string_equal(e->keyword, "OverlayColumns");
    assert_int_equal(dicom_dict_vr(DICOM_TAG(0x6010, 0x0050)),
                     DICOM_VR_SS);

    e = dicom_dict_lookup(DICOM_TAG(0x5004, 0x0010));
    assert_non_null(e);
    assert_string_equal(e->keyword, "NumberOfPoints");
    assert_true(e->retired);
    e = dicom_dict_lookup(DICOM_TAG(0x5004, 0x3000));
    assert_non_null(e);
    assert_string_equal(e->keyword, "CurveData");

    /* Element-digit patterns: '002031xx', '002804x0', '1000xxx2'. */
    e = dicom_dict_lookup(DICOM_TAG(0x0020, 0x3142));
    assert_non_null(e);
    assert_string_equal(e->keyword, "SourceImageIDs");
    assert_int_equal(e->mask, 0xffffff00u);
    e = dicom_dict_lookup(DICOM_TAG(0x0028, 0x0410));
    assert_non_null(e);
    assert_string_equal(e->keyword, "RowsForNthOrderCoefficients");
    e = dicom_dict_lookup(DICOM_TAG(0x1000, 0x0122));
    assert_non_null(e);
    assert_string_equal(e->keyword, "HuffmanTableSize");
    e = dicom_dict_lookup(DICOM_TAG(0x1010, 0x1234));
    assert_non_null(e);
    assert_string_equal(e->keyword, "ZonalMap");

    /* An exact entry beats a repeater with the same zeroed tag. */
    e = dicom_dict_lookup(DICOM_TAG(0x0028, 0x0400));
    assert_non_null(e);
    assert_string_equal(e->keyword, "TransformLabel");
    e = dicom_dict_lookup(DICOM_TAG_PIXEL_DATA);
    assert_string_equal(e->keyword, "PixelData");
    e = dicom_dict_lookup(DICOM_TAG(0x7f02, 0x0010));
    assert_non_null(e);
    assert_string_equal(e->keyword, "VariablePixelData");

    /* Odd groups are private, never repeaters. */
    e = dicom_dict_lookup(DICOM_TAG(0x6001, 0x0010));
    assert_non_null(e);
    assert_string_equal(e->keyword, "PrivateCreator");
    assert_null(dicom_dict_lookup(DICOM_TAG(0x6001, 0x3000)));
    assert_null(dicom_dict_lookup(DICOM_TAG(0x5003, 0x3000)));
}

static void test_group_length(void **state)
{
    (void)state;
    const DicomDictEntry *e =
        dicom_dict_lookup(DICOM_TAG_FILE_META_GROUP_LENGTH);
    assert_non_null(e);
    assert_string_equal(e->keyword, "FileMetaInformationGroupLength");
    e = dicom_dict_lookup(DICOM_TAG(0x0000, 0x0000));
    assert_string_equal(e->keyword, "CommandGroupLength");

    const uint32_t generic[] = {
        DICOM_TAG(0x0008, 0x0000), DICOM_TAG(0x0010, 0x0000),
        DICOM_TAG(0x0009, 0x0000), DICOM_TAG(0x6002, 0x0000),
        DICOM_TAG(0x1000, 0x0000), DICOM_TAG(0x1010, 0x0000),
        DICOM_TAG(0xfffe, 0x0000),
    };
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++) {
        e = dicom_dict_lookup(generic[i]);
        assert_non_null(e);
        assert_string_equal(e->name, "Group Length");
        assert_int_equal(e->vr, DICOM_VR_UL);
        assert_int_equal(dicom_dict_vr(generic[i]), DICOM_VR_UL);
    }
}

static void test_private_creator(void **state)
{
    (void)state;
    const uint32_t creators[] = {
        DICOM_TAG(0x0009, 0x0010), DICOM_TAG(0x0029, 0x0011),
        DICOM_TAG(0x7fe1, 0x0010), DICOM_TAG(0x0019, 0x00ff),
    };
    for (size_t i = 0; i < sizeof creators / sizeof creators[0]; i++) {
        const DicomDictEntry *e = dicom_dict_lookup(creators[i]);
        assert_non_null(e);
        assert_string_equal(e->name, "Private Creator");
        assert_int_equal(e->vr, DICOM_VR_LO);
        assert_int_equal(dicom_dict_vr(creators[i]), DICOM_VR_LO);
    }
    /* Private data elements are unknown without their creator. */
    assert_null(dicom_dict_lookup(DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup(DICOM_TAG(0x0029, 0x0100)));
    assert_null(dicom_dict_lookup(DICOM_TAG(0x0029, 0x0005)));
    assert_int_equal(dicom_dict_vr(DICOM_TAG(0x0029, 0x1010)), DICOM_VR_UN);
}

static void test_private_dictionary(void **state)
{
    (void)state;
    const DicomDictEntry *e =
        dicom_dict_lookup_private("SIEMENS CSA HEADER",
                                  DICOM_TAG(0x0029, 0x1010));
    assert_non_null(e);
    assert_string_equal(e->name, "CSA Image Header Info");
    assert_int_equal(e->vr, DICOM_VR_OB);
    assert_string_equal(e->keyword, "");
    assert_int_equal(e->tag, 0x00290010u);
    assert_int_equal(e->mask, 0xffff00ffu);

    /* Any block, padded creator. */
    e = dicom_dict_lookup_private("SIEMENS CSA HEADER  ",
                                  DICOM_TAG(0x0029, 0x1120));
    assert_non_null(e);
    assert_string_equal(e->name, "CSA Series Header Info");
    e = dicom_dict_lookup_private("SIEMENS CSA HEADER",
                                  DICOM_TAG(0x0029, 0x1008));
    assert_non_null(e);
    assert_int_equal(e->vr, DICOM_VR_CS);
    e = dicom_dict_lookup_private("SIEMENS CSA NON-IMAGE",
                                  DICOM_TAG(0x7fe1, 0x1010));
    assert_non_null(e);
    assert_string_equal(e->name, "CSA Data");

    /* Creator must match exactly (after trailing spaces). */
    assert_null(dicom_dict_lookup_private("SIEMENS CSA HEADE",
                                          DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup_private("SIEMENS CSA HEADERS",
                                          DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup_private(" SIEMENS CSA HEADER",
                                          DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup_private("siemens csa header",
                                          DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup_private("", DICOM_TAG(0x0029, 0x1010)));
    assert_null(dicom_dict_lookup_private(NULL, DICOM_TAG(0x0029, 0x1010)));
    /* Wrong element, wrong group, even group. */
    assert_null(dicom_dict_lookup_private("SIEMENS CSA HEADER",
                                          DICOM_TAG(0x0029, 0x1011)));
    assert_null(dicom_dict_lookup_private("SIEMENS CSA HEADER",
                                          DICOM_TAG(0x0019, 0x1010)));
    assert_null(dicom_dict_lookup_private("SIEMENS CSA HEADER",
                                          DICOM_TAG(0x0028, 0x1010)));

    /* (ggxx,xxee) rows: the group's low byte is free too. */
    e = dicom_dict_lookup_private("DLX_LKUP_01", DICOM_TAG(0x6003, 0x1101));
    assert_non_null(e);
    assert_string_equal(e->name, "Gray Palette color lookup table descriptor");
    assert_int_equal(e->mask, 0xff0000ffu);

    /* A literal tag and a block pattern with the same key: the literal wins
     * only for itself. */
    e = dicom_dict_lookup_private("PMTF INFORMATION DATA",
                                  DICOM_TAG(0x0029, 0x0089));
    assert_non_null(e);
    assert_int_equal(e->mask, FULL);
    e = dicom_dict_lookup_private("PMTF INFORMATION DATA",
                                  DICOM_TAG(0x0029, 0x1089));
    assert_non_null(e);
    assert_int_equal(e->mask, 0xffff00ffu);
}

static void test_keywords(void **state)
{
    (void)state;
    const DicomDictEntry *e = dicom_dict_find_keyword("PatientName");
    assert_non_null(e);
    assert_int_equal(e->tag, DICOM_TAG(0x0010, 0x0010));
    assert_ptr_equal(dicom_dict_lookup(e->tag), e);

    e = dicom_dict_find_keyword("PixelData");
    assert_non_null(e);
    assert_int_equal(e->tag, DICOM_TAG_PIXEL_DATA);
    e = dicom_dict_find_keyword("StudyInstanceUID");
    assert_non_null(e);
    assert_int_equal(e->tag, DICOM_TAG_STUDY_INSTANCE_UID);
    e = dicom_dict_find_keyword("OverlayData");
    assert_non_null(e);
    assert_int_equal(e->tag, 0x60003000u);
    assert_ptr_equal(dicom_dict_lookup(DICOM_TAG(0x6004, 0x3000)), e);

    e = dicom_dict_lookup(DICOM_TAG_TRANSFER_SYNTAX_UID);
    assert_non_null(e);
    assert_string_equal(e->keyword, "TransferSyntaxUID");
    assert_ptr_equal(dicom_dict_find_keyword(e->keyword), e);

    assert_null(dicom_dict_find_keyword("patientname"));
    assert_null(dicom_dict_find_keyword("PatientNam"));
    assert_null(dicom_dict_find_keyword("PatientNameX"));
    assert_null(dicom_dict_find_keyword(""));
    assert_null(dicom_dict_find_keyword(NULL));
}

static void test_retired(void **state)
{
    (void)state;
    const DicomDictEntry *e = dicom_dict_find_keyword("CommandLengthToEnd");
    assert_non_null(e);
    assert_int_equal(e->tag, DICOM_TAG(0x0000, 0x0001));
    assert_true(e->retired);
    e = dicom_dict_lookup(DICOM_TAG(0x0008, 0x0010));  /* Recognition Code */
    assert_non_null(e);
    assert_true(e->retired);
    e = dicom_dict_find_keyword("PatientID");
    assert_non_null(e);
    assert_false(e->retired);
}

/* Every entry: sorted, findable by tag and by keyword. */
static void test_table_consistent(void **state)
{
    (void)state;
    size_t n = dicom_dict_size();
    assert_int_equal(n, dicom__dict_count);
    assert_true(n > 4000 && n < 65536);

    size_t keywords = 0;
    size_t masked = 0;
    for (size_t i = 0; i < n; i++) {
        const DicomDictEntry *e = &dicom__dict[i];
        assert_int_equal(e->tag & e->mask, e->tag);
        if (i > 0) {
            const DicomDictEntry *p = &dicom__dict[i - 1];
            assert_true(p->tag < e->tag ||
                        (p->tag == e->tag && p->mask > e->mask));
        }
        assert_non_null(e->vm);
        assert_non_null(e->name);
        if (e->mask == FULL) {
            assert_ptr_equal(dicom_dict_lookup(e->tag), e);
        } else {
            /* Free an x digit in the group (60xx) or element (31xx). */
            uint32_t probe = e->tag | (~e->mask & 0x00020020u);
            assert_ptr_equal(dicom_dict_lookup(probe), e);
            masked++;
        }
        if (e->keyword[0] != '\0') {
            assert_ptr_equal(dicom_dict_find_keyword(e->keyword), e);
            keywords++;
        }
    }
    assert_int_equal(masked, dicom__dict_masked_count);
    assert_true(masked > 80);
    assert_int_equal(keywords, dicom__dict_by_keyword_count);
    for (size_t i = 1; i < dicom__dict_by_keyword_count; i++) {
        assert_true(strcmp(dicom__dict[dicom__dict_by_keyword[i - 1]].keyword,
                           dicom__dict[dicom__dict_by_keyword[i]].keyword) <
                    0);
    }
}

/* Every private entry: in its creator's sorted run, findable. */
static void test_private_consistent(void **state)
{
    (void)state;
    assert_true(dicom__private_count > 5000);
    assert_true(dicom__private_creators_count > 100);
    size_t next = 0;
    for (size_t c = 0; c < dicom__private_creators_count; c++) {
        const DicomPrivateCreator *pc = &dicom__private_creators[c];
        if (c > 0) {
            assert_true(strcmp(dicom__private_creators[c - 1].creator,
                               pc->creator) < 0);
        }
        assert_int_equal(pc->first, next);
        assert_true(pc->count > 0);
        next = (size_t)pc->first + pc->count;
        for (size_t i = pc->first; i < next; i++) {
            const DicomDictEntry *e = &dicom__private[i];
            assert_true(DICOM_TAG_IS_PRIVATE(e->tag) ||
                        (e->mask & 0x00ff0000u) != 0x00ff0000u);
            if (i > pc->first) {
                const DicomDictEntry *p = &dicom__private[i - 1];
                assert_true(p->tag < e->tag ||
                            (p->tag == e->tag && p->mask > e->mask));
            }
            uint32_t probe = e->tag;
            if (e->mask != FULL) {
                probe |= ~e->mask & 0x00011000u;   /* (gg01,10ee) */
            }
            const DicomDictEntry *got =
                dicom_dict_lookup_private(pc->creator, probe);
            assert_ptr_equal(got, e);
        }
    }
    assert_int_equal(next, dicom__private_count);
}

/* ---- UIDs -------------------------------------------------------------- */

static void test_uid_lookup(void **state)
{
    (void)state;
    const DicomUidEntry *u = dicom_uid_lookup("1.2.840.10008.5.1.4.1.1.2");
    assert_non_null(u);
    assert_string_equal(u->name, "CT Image Storage");
    assert_string_equal(u->keyword, "CTImageStorage");
    assert_string_equal(u->type, "SOP Class");
    assert_false(u->retired);

    u = dicom_uid_lookup(DICOM_TS_EXPLICIT_LE);
    assert_non_null(u);
    assert_string_equal(u->name, "Explicit VR Little Endian");
    assert_string_equal(u->type, "Transfer Syntax");
    u = dicom_uid_lookup(DICOM_TS_EXPLICIT_BE);
    assert_non_null(u);
    assert_true(u->retired);
    u = dicom_uid_lookup("1.2.840.10008.1.1");
    assert_non_null(u);
    assert_string_equal(u->keyword, "Verification");

    /* Padding is tolerated; prefixes and extensions are not matches. */
    u = dicom_uid_lookup("1.2.840.10008.1.2 ");
    assert_non_null(u);
    assert_string_equal(u->keyword, "ImplicitVRLittleEndian");
    assert_null(dicom_uid_lookup("1.2.840.10008.1"));
    assert_null(dicom_uid_lookup("1.2.840.10008.1.2.9"));
    assert_null(dicom_uid_lookup("1.2.3"));
    assert_null(dicom_uid_lookup(""));
    assert_null(dicom_uid_lookup(NULL));
}

static void test_uid_registry(void **state)
{
    (void)state;
    size_t n = dicom_uid_registry_size();
    assert_true(n > 400);
    for (size_t i = 0; i < n; i++) {
        const DicomUidEntry *u = dicom_uid_registry_at(i);
        assert_non_null(u);
        if (i > 0) {
            assert_true(strcmp(dicom_uid_registry_at(i - 1)->uid, u->uid) <
                        0);
        }
        assert_ptr_equal(dicom_uid_lookup(u->uid), u);
        assert_true(dicom_uid_valid(u->uid, strlen(u->uid)));
    }
    assert_null(dicom_uid_registry_at(n));

    /* Every transfer syntax ts.c knows is registered as one. */
    for (size_t i = 0; i < dicom_ts_count(); i++) {
        const DicomUidEntry *u = dicom_uid_lookup(dicom_ts_at(i)->uid);
        assert_non_null(u);
        assert_string_equal(u->type, "Transfer Syntax");
    }
}

static void test_uid_valid(void **state)
{
    (void)state;
    static const char *good[] = {
        "1.2.840.10008.5.1.4.1.1.2",
        "0",
        "1",
        "1.0.2",
        "2.25.329800735698586629295641978511506172918",
        DICOM_IMPLEMENTATION_CLASS_UID,
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_true(dicom_uid_valid(good[i], strlen(good[i])));
    }
    static const char *bad[] = {
        "", "1..2", "1.02", ".1", "1.", "1.2a", ".", "00", "1.2.", "1 .2",
        "1.2 ", "-1.2", "1,2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(dicom_uid_valid(bad[i], strlen(bad[i])));
    }

    char s[80];
    memset(s, '1', sizeof s);
    assert_true(dicom_uid_valid(s, 64));
    assert_false(dicom_uid_valid(s, 65));
    for (size_t i = 1; i < 64; i += 2) {
        s[i] = '.';
    }
    assert_true(dicom_uid_valid(s, 63));    /* "1.1.1...1" */
    assert_false(dicom_uid_valid(s, 64));   /* ends with '.' */

    /* Only s[0..len) counts: a NUL pad byte inside len is invalid. */
    assert_true(dicom_uid_valid("1.2\0", 3));
    assert_false(dicom_uid_valid("1.2\0", 4));
    assert_false(dicom_uid_valid(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_tags),
        cmocka_unit_test(test_repeating_groups),
        cmocka_unit_test(test_group_length),
        cmocka_unit_test(test_private_creator),
        cmocka_unit_test(test_private_dictionary),
        cmocka_unit_test(test_keywords),
        cmocka_unit_test(test_retired),
        cmocka_unit_test(test_table_consistent),
        cmocka_unit_test(test_private_consistent),
        cmocka_unit_test(test_uid_lookup),
        cmocka_unit_test(test_uid_registry),
        cmocka_unit_test(test_uid_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
