/* test_dataset.c — datasets, setters and typed getters (PS3.5 §6.2, §6.4). */
#include "../test_util.h"

#include "dicom/dicom.h"

static AgArena *arena;

static int setup(void **state)
{
    (void)state;
    arena = ag_arena_create(16 << 20);
    return arena == NULL;
}

static int teardown(void **state)
{
    (void)state;
    ag_arena_destroy(arena);
    return 0;
}

static void test_elements_stay_sorted(void **state)
{
    (void)state;
    DicomDataset *ds = dicom_dataset_create(arena);
    uint32_t tags[] = {0x00100020, 0x00080018, 0x7fe00010, 0x00100010,
                       0x00080005, 0x00200013};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(dicom_set_string(ds, tags[i], DICOM_VR_LO, "x",
                                          NULL), AG_OK);
    }
    assert_int_equal(dicom_dataset_count(ds), 6);
    for (size_t i = 1; i < 6; i++) {
        assert_true(dicom_dataset_at(ds, i - 1)->tag <
                    dicom_dataset_at(ds, i)->tag);
    }
    assert_int_equal(dicom_dataset_remove(ds, 0x00100010), AG_OK);
    assert_int_equal(dicom_dataset_remove(ds, 0x00100010), AG_ERR_NOTFOUND);
    assert_null(dicom_dataset_find(ds, 0x00100010));
    assert_non_null(dicom_dataset_find(ds, 0x7fe00010));
    /* Replacing keeps one element per tag. */
    assert_int_equal(dicom_set_string(ds, 0x00100020, 0, "ID2", NULL), AG_OK);
    assert_int_equal(dicom_dataset_count(ds), 5);
}

static void test_strings_pad_and_trim(void **state)
{
    (void)state;
    DicomDataset *ds = dicom_dataset_create(arena);
    /* dictionary VR (PN), odd length padded with a space */
    assert_int_equal(dicom_set_string(ds, 0x00100010, 0, "Doe^John", NULL),
                     AG_OK);
    assert_int_equal(dicom_set_string(ds, 0x00080018, 0, "1.2.3", NULL),
                     AG_OK);
    DicomElement *pn = dicom_dataset_find(ds, 0x00100010);
    assert_int_equal(pn->vr, DICOM_VR_PN);
    assert_int_equal(pn->length, 8);
    DicomElement *ui = dicom_dataset_find(ds, 0x00080018);
    assert_int_equal(ui->length, 6);
    assert_int_equal(ui->value[5], 0);   /* UI pads with NUL */
    assert_string_equal(dicom_get_string(ds, 0x00080018, arena), "1.2.3");
    assert_int_equal(dicom_set_string(ds, 0x00080008, 0,
                                      " ORIGINAL\\PRIMARY \\\\AXIAL", NULL),
                     AG_OK);
    DicomElement *it = dicom_dataset_find(ds, 0x00080008);
    assert_int_equal(dicom_element_vm(it), 4);
    char *s;
    assert_int_equal(dicom_element_string(it, 0, arena, &s, NULL), AG_OK);
    assert_string_equal(s, "ORIGINAL");
    assert_int_equal(dicom_element_string(it, 1, arena, &s, NULL), AG_OK);
    assert_string_equal(s, "PRIMARY");
    assert_int_equal(dicom_element_string(it, 2, arena, &s, NULL), AG_OK);
    assert_string_equal(s, "");
    assert_int_equal(dicom_element_string(it, 3, arena, &s, NULL), AG_OK);
    assert_string_equal(s, "AXIAL");
    assert_int_equal(dicom_element_string(it, 4, arena, &s, NULL),
                     AG_ERR_NOTFOUND);
    /* Text VRs keep backslashes and leading spaces. */
    assert_int_equal(dicom_set_string(ds, 0x00204000, DICOM_VR_LT,
                                      "  a\\b  ", NULL), AG_OK);
    DicomElement *lt = dicom_dataset_find(ds, 0x00204000);
    assert_int_equal(dicom_element_vm(lt), 1);
    assert_int_equal(dicom_element_string(lt, 0, arena, &s, NULL), AG_OK);
    assert_string_equal(s, "  a\\b");
}

static void test_integers(void **state)
{
    (void)state;
    DicomDataset *ds = dicom_dataset_create(arena);
    int64_t us[] = {512, 65535};
    int64_t ss[] = {-2, 300};
    int64_t is[] = {-12, 7};
    int64_t at[] = {0x00100010, 0x7fe00010};
    assert_int_equal(dicom_set_ints(ds, 0x00280010, 0, us, 2, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00280106, DICOM_VR_SS, ss, 2, NULL),
                     AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00200013, 0, is, 2, NULL), AG_OK);
    assert_int_equal(dicom_set_ints(ds, 0x00209165, 0, at, 2, NULL), AG_OK);
    int64_t v;
    DicomElement *el = dicom_dataset_find(ds, 0x00280010);
    assert_int_equal(dicom_element_vm(el), 2);
    assert_int_equal(dicom_element_int(el, 1, &v, NULL), AG_OK);
    assert_int_equal(v, 65535);
    assert_int_equal(dicom_element_int(el, 2, &v, NULL), AG_ERR_NOTFOUND);
    el = dicom_dataset_find(ds, 0x00280106);
    assert_int_equal(dicom_element_int(el, 0, &v, NULL), AG_OK);
    assert_int_equal(v, -2);
    el = dicom_dataset_find(ds, 0x00200013);
    assert_int_equal(el->vr, DICOM_VR_IS);
    assert_memory_equal(el->value, "-12\\7 ", 6);
    assert_int_equal(dicom_element_int(el, 0, &v, NULL), AG_OK);
    assert_int_equal(v, -12);
    el = dicom_dataset_find(ds, 0x00209165);
    assert_int_equal(el->vr, DICOM_VR_AT);
    assert_int_equal(dicom_element_vm(el), 2);
    assert_int_equal(dicom_element_int(el, 1, &v, NULL), AG_OK);
    assert_int_equal(v, 0x7fe00010);
    /* A binary value whose length is not a multiple of its size. */
    AgError err;
    assert_int_equal(dicom_set_bytes(ds, 0x00280011, DICOM_VR_US, "abc", 3,
                                     &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "(0028,0011)"));
    /* IS text that is not a number */
    assert_int_equal(dicom_set_string(ds, 0x00200012, DICOM_VR_IS, "12a",
                                      NULL), AG_OK);
    assert_int_equal(dicom_element_int(dicom_dataset_find(ds, 0x00200012), 0,
                                       &v, &err), AG_ERR_PARSE);
}

static void test_floats(void **state)
{
    (void)state;
    DicomDataset *ds = dicom_dataset_create(arena);
    double ds_v[] = {0.5, -1024.0, 1.0 / 3.0};
    assert_int_equal(dicom_set_floats(ds, 0x00281050, 0, ds_v, 3, NULL),
                     AG_OK);
    DicomElement *el = dicom_dataset_find(ds, 0x00281050);
    assert_int_equal(el->vr, DICOM_VR_DS);
    double d;
    assert_int_equal(dicom_element_float(el, 2, &d, NULL), AG_OK);
    assert_true(d > 0.3333 && d < 0.3334);
    char *s;
    assert_int_equal(dicom_element_string(el, 2, arena, &s, NULL), AG_OK);
    assert_true(strlen(s) <= 16);   /* PS3.5: DS is at most 16 bytes */
    double fd[] = {1.5, -2.25};
    assert_int_equal(dicom_set_floats(ds, 0x00189087, DICOM_VR_FD, fd, 2,
                                      NULL), AG_OK);
    assert_int_equal(dicom_element_float(dicom_dataset_find(ds, 0x00189087),
                                         1, &d, NULL), AG_OK);
    assert_true(d == -2.25);
    assert_int_equal(dicom_set_floats(ds, 0x00189088, DICOM_VR_FL, fd, 1,
                                      NULL), AG_OK);
    assert_int_equal(dicom_element_float(dicom_dataset_find(ds, 0x00189088),
                                         0, &d, NULL), AG_OK);
    assert_true(d == 1.5);
}

static void test_sequences_and_charset_inheritance(void **state)
{
    (void)state;
    DicomDataset *ds = dicom_dataset_create(arena);
    assert_int_equal(dicom_set_string(ds, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                      0, "ISO_IR 100", NULL), AG_OK);
    DicomElement *seq;
    assert_int_equal(dicom_set_sequence(ds, 0x00081115, &seq, NULL), AG_OK);
    DicomDataset *item;
    assert_int_equal(dicom_sequence_append(ds, seq, &item, NULL), AG_OK);
    assert_int_equal(dicom_sequence_append(ds, seq, &item, NULL), AG_OK);
    assert_int_equal(seq->nitems, 2);
    assert_int_equal(dicom_element_vm(seq), 2);
    assert_ptr_equal(dicom_dataset_parent(item), ds);
    assert_string_equal(dicom_dataset_charset(item, arena), "ISO_IR 100");
    /* An item's own (0008,0005) wins over its parent's. */
    assert_int_equal(dicom_set_string(item, DICOM_TAG_SPECIFIC_CHARACTER_SET,
                                      0, "ISO_IR 192", NULL), AG_OK);
    assert_string_equal(dicom_dataset_charset(item, arena), "ISO_IR 192");
    assert_null(dicom_dataset_charset(dicom_dataset_create(arena), arena));
}

static void test_person_names(void **state)
{
    (void)state;
    DicomPersonName pn;
    assert_int_equal(dicom_pn_parse("Yamada^Tarou=山田^太郎=やまだ^たろう",
                                    arena, &pn, NULL), AG_OK);
    assert_string_equal(pn.comp[DICOM_PN_ALPHABETIC][DICOM_PN_FAMILY],
                        "Yamada");
    assert_string_equal(pn.comp[DICOM_PN_ALPHABETIC][DICOM_PN_GIVEN],
                        "Tarou");
    assert_string_equal(pn.comp[DICOM_PN_IDEOGRAPHIC][DICOM_PN_FAMILY],
                        "山田");
    assert_string_equal(pn.group[DICOM_PN_PHONETIC], "やまだ^たろう");
    assert_string_equal(pn.comp[DICOM_PN_ALPHABETIC][DICOM_PN_SUFFIX], "");
    assert_int_equal(dicom_pn_parse("Doe^John^^Dr^III", arena, &pn, NULL),
                     AG_OK);
    assert_string_equal(pn.comp[0][DICOM_PN_PREFIX], "Dr");
    assert_string_equal(pn.comp[0][DICOM_PN_SUFFIX], "III");
    assert_null(pn.group[DICOM_PN_IDEOGRAPHIC]);
}

static void test_setters_survive_every_oom(void **state)
{
    (void)state;
    /* Values over a quarter chunk get their own allocation, so each set
     * is a separate failure point. */
    static char big[20001];
    memset(big, 'v', sizeof big - 1);
    for (long n = 1;; n++) {
        AgArena *a = ag_arena_create(0);
        if (a == NULL) {
            continue;   /* the arena itself was the failing allocation */
        }
        ag_test_fail_nth_alloc(n);
        DicomDataset *ds = dicom_dataset_create(a);
        int rc = ds == NULL ? AG_ERR_NOMEM : AG_OK;
        for (int i = 0; i < 40 && rc == AG_OK; i++) {
            rc = dicom_set_string(ds, DICOM_TAG(0x0011, 0x1000 + i),
                                  DICOM_VR_UT, big, NULL);
        }
        ag_test_fail_nth_alloc(0);
        ag_arena_destroy(a);
        if (rc == AG_OK) {
            assert_true(n > 40);
            break;
        }
        assert_int_equal(rc, AG_ERR_NOMEM);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elements_stay_sorted),
        cmocka_unit_test(test_strings_pad_and_trim),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_sequences_and_charset_inheritance),
        cmocka_unit_test(test_person_names),
        cmocka_unit_test(test_setters_survive_every_oom),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
