/* test_arena.c — arenas: alignment, budgets, destructors, OOM. */
#include "../test_util.h"

static int cleanups;

static void count_cleanup(void *ctx)
{
    (void)ctx;
    cleanups++;
}

static void test_alloc_is_aligned_and_usable(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(0);
    assert_non_null(a);
    for (size_t n = 1; n < 5000; n += 37) {
        uint8_t *p = ag_arena_alloc(a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, n);
    }
    /* A large block gets a chunk of its own. */
    uint8_t *big = ag_arena_alloc(a, 1 << 20);
    assert_non_null(big);
    memset(big, 1, 1 << 20);
    ag_arena_destroy(a);
}

static void test_budget_is_enforced(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(1000);
    assert_non_null(ag_arena_alloc(a, 512));
    assert_null(ag_arena_alloc(a, 512));
    assert_true(ag_arena_over_budget(a));
    assert_int_equal(ag_arena_fail_code(a), AG_ERR_LIMIT);
    assert_non_null(ag_arena_alloc(a, 100));
    assert_false(ag_arena_over_budget(a));
    assert_true(ag_arena_used(a) <= 1000);
    /* A size that overflows when rounded is refused, not wrapped. */
    assert_null(ag_arena_alloc(a, SIZE_MAX - 3));
    ag_arena_destroy(a);
}

static void test_strings_and_grow(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(0);
    assert_string_equal(ag_arena_strdup(a, "abc"), "abc");
    assert_string_equal(ag_arena_strndup(a, "abcdef", 2), "ab");
    assert_string_equal(ag_arena_printf(a, "%d-%s", 7, "x"), "7-x");
    int *v = ag_arena_grow(a, NULL, 0, 4, sizeof *v);
    for (int i = 0; i < 4; i++) {
        v[i] = i;
    }
    int *w = ag_arena_grow(a, v, 4, 8, sizeof *w);
    assert_int_equal(w[3], 3);
    assert_null(ag_arena_grow(a, w, 8, SIZE_MAX / 2, 8));
    ag_arena_destroy(a);
}

static void test_destructors_run_once(void **state)
{
    (void)state;
    cleanups = 0;
    AgArena *a = ag_arena_create(64);
    assert_int_equal(ag_arena_on_destroy(a, count_cleanup, NULL), AG_OK);
    assert_int_equal(ag_arena_on_destroy(a, count_cleanup, NULL), AG_OK);
    ag_arena_destroy(a);
    assert_int_equal(cleanups, 2);
    ag_arena_destroy(NULL);
}

static void test_oom_is_reported(void **state)
{
    (void)state;
    ag_test_fail_nth_alloc(1);
    assert_null(ag_arena_create(0));
    ag_test_fail_nth_alloc(0);
    AgArena *a = ag_arena_create(0);
    ag_test_fail_nth_alloc(1);
    assert_null(ag_arena_alloc(a, 10));
    assert_int_equal(ag_arena_fail_code(a), AG_ERR_NOMEM);
    ag_test_fail_nth_alloc(0);
    assert_non_null(ag_arena_alloc(a, 10));
    ag_arena_destroy(a);
}

static void test_error_messages(void **state)
{
    (void)state;
    AgError err;
    assert_int_equal(ag_error_set(&err, AG_ERR_PARSE, "element %d", 5),
                     AG_ERR_PARSE);
    ag_error_prefix(&err, "file %s: ", "x.dcm");
    assert_string_equal(err.msg, "file x.dcm: element 5");
    char longp[400];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    ag_error_prefix(&err, "%s", longp);
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
    assert_int_equal(ag_error_set(NULL, AG_ERR_IO, "ignored"), AG_ERR_IO);
    assert_string_equal(ag_err_name(AG_ERR_LIMIT), "limit exceeded");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_is_aligned_and_usable),
        cmocka_unit_test(test_budget_is_enforced),
        cmocka_unit_test(test_strings_and_grow),
        cmocka_unit_test(test_destructors_run_once),
        cmocka_unit_test(test_oom_is_reported),
        cmocka_unit_test(test_error_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
