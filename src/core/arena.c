/*
 * arena.c — region allocator with a byte budget (nginx pools, PostgreSQL
 * memory contexts).  Memory comes in chunks; large requests get a chunk of
 * their own so that a 100 MB value does not waste a 100 MB tail.
 */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CHUNK_SIZE (64 * 1024)
#define ALIGN 16

typedef struct Chunk {
    struct Chunk *next;
    size_t size;    /* usable bytes after the header */
    size_t used;
    _Alignas(ALIGN) unsigned char data[];
} Chunk;

typedef struct Cleanup {
    struct Cleanup *next;
    void (*fn)(void *);
    void *ctx;
} Cleanup;

struct AgArena {
    Chunk *head;        /* current chunk for small allocations */
    Chunk *big;         /* dedicated chunks for large allocations */
    Cleanup *cleanups;
    size_t budget;      /* 0 = unlimited */
    size_t handed;      /* bytes handed out */
    bool over_budget;   /* last failure was the budget */
};

AgArena *ag_arena_create(size_t budget)
{
    AgArena *a = ag_calloc(1, sizeof *a);
    if (a != NULL) {
        a->budget = budget;
    }
    return a;
}

static void free_chunks(Chunk *c)
{
    while (c != NULL) {
        Chunk *next = c->next;
        ag_free(c);
        c = next;
    }
}

void ag_arena_destroy(AgArena *a)
{
    if (a == NULL) {
        return;
    }
    Cleanup *c = a->cleanups;
    while (c != NULL) {
        Cleanup *next = c->next;
        c->fn(c->ctx);
        ag_free(c);
        c = next;
    }
    free_chunks(a->head);
    free_chunks(a->big);
    ag_free(a);
}

static Chunk *chunk_new(size_t size)
{
    Chunk *c = ag_malloc(sizeof(Chunk) + size);
    if (c != NULL) {
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

void *ag_arena_alloc(AgArena *a, size_t n)
{
    size_t rounded = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (rounded < n) {
        a->over_budget = true;
        return NULL;
    }
    uint64_t total;
    if (ag_add_overflow(a->handed, rounded, &total) ||
        (a->budget != 0 && total > a->budget)) {
        a->over_budget = true;
        return NULL;
    }
    a->over_budget = false;
    if (rounded > CHUNK_SIZE / 4) {
        Chunk *c = chunk_new(rounded);
        if (c == NULL) {
            return NULL;
        }
        c->next = a->big;
        a->big = c;
        c->used = rounded;
        a->handed += rounded;
        return c->data;
    }
    if (a->head == NULL || a->head->size - a->head->used < rounded) {
        Chunk *c = chunk_new(CHUNK_SIZE);
        if (c == NULL) {
            return NULL;
        }
        c->next = a->head;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += rounded;
    a->handed += rounded;
    return p;
}

void *ag_arena_zalloc(AgArena *a, size_t n)
{
    void *p = ag_arena_alloc(a, n);
    if (p != NULL) {
        memset(p, 0, n);
    }
    return p;
}

void *ag_arena_memdup(AgArena *a, const void *p, size_t n)
{
    void *d = ag_arena_alloc(a, n);
    if (d != NULL && n > 0) {
        memcpy(d, p, n);
    }
    return d;
}

char *ag_arena_strndup(AgArena *a, const char *s, size_t n)
{
    char *d = ag_arena_alloc(a, n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *ag_arena_strdup(AgArena *a, const char *s)
{
    return ag_arena_strndup(a, s, strlen(s));
}

char *ag_arena_printf(AgArena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return NULL;
    }
    char *d = ag_arena_alloc(a, (size_t)n + 1);
    if (d != NULL) {
        va_start(ap, fmt);
        vsnprintf(d, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return d;
}

void *ag_arena_grow(AgArena *a, void *old, size_t old_n, size_t new_n,
                    size_t elem_size)
{
    uint64_t bytes;
    if (ag_mul_overflow(new_n, elem_size, &bytes) || bytes > SIZE_MAX) {
        a->over_budget = true;
        return NULL;
    }
    void *p = ag_arena_alloc(a, (size_t)bytes);
    if (p != NULL && old != NULL && old_n > 0) {
        memcpy(p, old, old_n * elem_size);
    }
    return p;
}

bool ag_arena_over_budget(const AgArena *a)
{
    return a->over_budget;
}

int ag_arena_fail_code(const AgArena *a)
{
    return a->over_budget ? AG_ERR_LIMIT : AG_ERR_NOMEM;
}

size_t ag_arena_used(const AgArena *a)
{
    return a->handed;
}

size_t ag_arena_budget(const AgArena *a)
{
    return a->budget;
}

int ag_arena_on_destroy(AgArena *a, void (*fn)(void *), void *ctx)
{
    /* Cleanup records are heap-allocated, not arena-allocated, so that a
     * spent budget cannot prevent a file descriptor from being closed. */
    Cleanup *c = ag_malloc(sizeof *c);
    if (c == NULL) {
        return AG_ERR_NOMEM;
    }
    c->fn = fn;
    c->ctx = ctx;
    c->next = a->cleanups;
    a->cleanups = c;
    return AG_OK;
}
