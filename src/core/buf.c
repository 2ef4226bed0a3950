/* buf.c — growable byte buffer with a hard cap (curl's dynbuf). */
#include "core.h"

#include <stdio.h>
#include <string.h>

void ag_buf_init(AgBuf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max == 0 ? SIZE_MAX - 1 : max;
}

void ag_buf_deinit(AgBuf *b)
{
    ag_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void ag_buf_reset(AgBuf *b)
{
    b->len = 0;
}

int ag_buf_reserve(AgBuf *b, size_t n)
{
    uint64_t need;
    /* +1 keeps room for the NUL that ag_buf_steal() adds. */
    if (ag_add_overflow(b->len, n, &need) || need > b->max) {
        return AG_ERR_LIMIT;
    }
    if (need + 1 <= b->cap) {
        return AG_OK;
    }
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need + 1) {
        cap = cap > SIZE_MAX / 2 ? (size_t)need + 1 : cap * 2;
    }
    uint8_t *p = ag_realloc(b->data, cap);
    if (p == NULL) {
        return AG_ERR_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return AG_OK;
}

int ag_buf_append(AgBuf *b, const void *p, size_t n)
{
    int rc = ag_buf_reserve(b, n);
    if (rc != AG_OK) {
        return rc;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return AG_OK;
}

int ag_buf_append_str(AgBuf *b, const char *s)
{
    return ag_buf_append(b, s, strlen(s));
}

int ag_buf_printf(AgBuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return AG_ERR_INVALID;
    }
    int rc = ag_buf_reserve(b, (size_t)n);
    if (rc != AG_OK) {
        return rc;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return AG_OK;
}

char *ag_buf_steal(AgBuf *b)
{
    if (ag_buf_reserve(b, 0) != AG_OK) {
        return NULL;
    }
    b->data[b->len] = '\0';
    char *p = (char *)b->data;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
