/* file.c — small file helpers. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int ag_file_read_all(const char *path, size_t max, uint8_t **out,
                     size_t *len, AgError *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ag_error_errno(err, AG_ERR_IO, "stat %s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ag_error_set(err, AG_ERR_INVALID, "%s: not a regular file",
                            path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return ag_error_set(err, AG_ERR_LIMIT,
                            "%s: %lld bytes is over the %zu byte limit", path,
                            (long long)st.st_size, max);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *p = ag_malloc(size + 1);
    if (p == NULL) {
        close(fd);
        return ag_error_set(err, AG_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, p + got, size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int rc = n < 0 ? ag_error_errno(err, AG_ERR_IO, "read %s", path)
                           : ag_error_set(err, AG_ERR_IO,
                                          "read %s: file shrank", path);
            ag_free(p);
            close(fd);
            return rc;
        }
        got += (size_t)n;
    }
    close(fd);
    p[size] = 0;
    *out = p;
    *len = size;
    return AG_OK;
}

int ag_write_all(int fd, const void *p, size_t n, AgError *err)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return ag_error_errno(err, AG_ERR_IO, "write");
        }
        b += w;
        n -= (size_t)w;
    }
    return AG_OK;
}

int ag_fmt(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? AG_ERR_LIMIT : AG_OK;
}
