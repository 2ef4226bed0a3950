/* alloc.c — the one allocation seam, with a fault-injection hook for tests. */
#include "core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Countdown to the allocation that must fail; 0 means no fault armed. */
static atomic_long fail_countdown;

void ag_test_fail_nth_alloc(long n)
{
    atomic_store(&fail_countdown, n);
}

static bool should_fail(void)
{
    long cur = atomic_load(&fail_countdown);
    while (cur > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &cur, cur - 1)) {
            /* After the failing one, keep failing: like SQLite's
             * "persistent" faults, so every error path is reached. */
            if (cur == 1) {
                atomic_store(&fail_countdown, 1);
                return true;
            }
            return false;
        }
    }
    return false;
}

void *ag_malloc(size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(n == 0 ? 1 : n);
}

void *ag_calloc(size_t count, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
}

void *ag_realloc(void *p, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, n == 0 ? 1 : n);
}

void ag_free(void *p)
{
    free(p);
}

char *ag_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ag_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}
