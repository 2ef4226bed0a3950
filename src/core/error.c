/* error.c — AgError: caller-owned error details that never allocate. */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *ag_err_name(int code)
{
    switch (code) {
    case AG_OK: return "ok";
    case AG_ERR_NOMEM: return "out of memory";
    case AG_ERR_LIMIT: return "limit exceeded";
    case AG_ERR_PARSE: return "parse error";
    case AG_ERR_IO: return "i/o error";
    case AG_ERR_AGAIN: return "need more input";
    case AG_ERR_NOTFOUND: return "not found";
    case AG_ERR_INVALID: return "invalid argument";
    case AG_ERR_UNSUPPORTED: return "unsupported";
    case AG_ERR_EXISTS: return "already exists";
    case AG_ERR_EOF: return "end of input";
    case AG_ERR_DENIED: return "not permitted";
    default: return "unknown error";
    }
}

__attribute__((format(printf, 5, 0)))
static void set_va(AgError *err, const char *file, int line, int code,
                   const char *fmt, va_list ap)
{
    err->code = code;
    err->file = file;
    err->line = line;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int ag_error_set_at(AgError *err, const char *file, int line, int code,
                    const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        set_va(err, file, line, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ag_error_errno_at(AgError *err, const char *file, int line, int code,
                      const char *fmt, ...)
{
    int saved = errno;
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        set_va(err, file, line, code, fmt, ap);
        va_end(ap);
        size_t used = strlen(err->msg);
        snprintf(err->msg + used, sizeof err->msg - used, ": %s",
                 strerror(saved));
    }
    errno = saved;
    return code;
}

void ag_error_prefix(AgError *err, const char *fmt, ...)
{
    if (err == NULL) {
        return;
    }
    char prefix[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t plen = strlen(prefix);
    size_t mlen = strlen(err->msg);
    if (plen >= sizeof err->msg) {
        plen = sizeof err->msg - 1;
    }
    if (plen + mlen >= sizeof err->msg) {
        mlen = sizeof err->msg - 1 - plen;
    }
    memmove(err->msg + plen, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + mlen] = '\0';
}

void ag_error_clear(AgError *err)
{
    if (err != NULL) {
        err->code = AG_OK;
        err->msg[0] = '\0';
        err->file = NULL;
        err->line = 0;
    }
}
