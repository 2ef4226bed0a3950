/* test_buf.c — AgBuf: growth, hard cap, steal. */
#include "../test_util.h"

static void test_append_and_steal(void **state)
{
    (void)state;
    AgBuf b;
    ag_buf_init(&b, 0);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(ag_buf_printf(&b, "%d,", i), AG_OK);
    }
    assert_int_equal(memcmp(b.data, "0,1,2,", 6), 0);
    char *s = ag_buf_steal(&b);
    assert_non_null(s);
    assert_int_equal(strlen(s), 3890);
    assert_null(b.data);
    ag_free(s);
    ag_buf_deinit(&b);
}

static void test_cap_is_hard(void **state)
{
    (void)state;
    AgBuf b;
    ag_buf_init(&b, 10);
    assert_int_equal(ag_buf_append(&b, "0123456789", 10), AG_OK);
    assert_int_equal(ag_buf_append(&b, "x", 1), AG_ERR_LIMIT);
    assert_int_equal(b.len, 10);
    assert_int_equal(ag_buf_reserve(&b, SIZE_MAX), AG_ERR_LIMIT);
    ag_buf_deinit(&b);
}

static void test_oom_keeps_contents(void **state)
{
    (void)state;
    AgBuf b;
    ag_buf_init(&b, 0);
    assert_int_equal(ag_buf_append_str(&b, "keep"), AG_OK);
    ag_test_fail_nth_alloc(1);
    char big[4096] = {0};
    assert_int_equal(ag_buf_append(&b, big, sizeof big), AG_ERR_NOMEM);
    ag_test_fail_nth_alloc(0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "keep", 4);
    ag_buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_steal),
        cmocka_unit_test(test_cap_is_hard),
        cmocka_unit_test(test_oom_keeps_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
