/*
 * input.c — forward-only byte stream for the reader: zero-copy over memory,
 * buffered over a file descriptor, optionally through raw inflate.
 */
#include "dicom_int.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WINDOW_SIZE (8 * 1024)
#define ZBUF_SIZE (64 * 1024)
/* A deflated data set may not inflate past this (deflate bombs,
 * SECURITY.md rule 10). */
#define MAX_INFLATED ((uint64_t)4 << 30)
#define MAX_RATIO 100u
#define RATIO_FLOOR ((uint64_t)64 << 20)

void dicom__input_init_mem(DicomInput *in, const uint8_t *p, size_t n)
{
    memset(in, 0, sizeof *in);
    in->fd = -1;
    in->mem = p;
    in->mem_len = n;
    in->win = p;
    in->hi = n;
    in->known_end = n;
    in->raw_eof = true;
    in->mem_pos = n;
}

int dicom__input_init_fd(DicomInput *in, int fd, AgError *err)
{
    memset(in, 0, sizeof *in);
    in->fd = fd;
    in->known_end = UINT64_MAX;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        if (cur >= 0 && cur <= st.st_size) {
            in->known_end = (uint64_t)(st.st_size - cur);
            in->fd_seekable = true;
        }
    }
    in->buf = ag_malloc(WINDOW_SIZE);
    if (in->buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "input: out of memory");
    }
    in->buf_cap = WINDOW_SIZE;
    in->win = in->buf;
    return AG_OK;
}

void dicom__input_deinit(DicomInput *in)
{
    if (in->inflating) {
        inflateEnd(&in->zs);
    }
    ag_free(in->buf);
    ag_free(in->zbuf);
    in->buf = NULL;
    in->zbuf = NULL;
}

/* Read raw bytes from the fd into dst; returns bytes read, 0 at EOF. */
static int fd_read(DicomInput *in, uint8_t *dst, size_t n, size_t *got,
                   AgError *err)
{
    for (;;) {
        ssize_t r = read(in->fd, dst, n);
        if (r >= 0) {
            *got = (size_t)r;
            return AG_OK;
        }
        if (errno != EINTR) {
            return ag_error_errno(err, AG_ERR_IO, "read");
        }
    }
}

/* Inflate into dst; *got = 0 only at the end of the deflate stream. */
static int inflate_some(DicomInput *in, uint8_t *dst, size_t n, size_t *got,
                        AgError *err)
{
    *got = 0;
    while (*got == 0 && !in->z_done) {
        if (in->zs.avail_in == 0 && in->fd >= 0 && !in->raw_eof) {
            size_t r = 0;
            int rc = fd_read(in, in->zbuf, in->zcap, &r, err);
            if (rc != AG_OK) {
                return rc;
            }
            if (r == 0) {
                in->raw_eof = true;
            }
            in->zs.next_in = in->zbuf;
            in->zs.avail_in = (uInt)r;
        }
        in->zs.next_out = dst;
        in->zs.avail_out = (uInt)(n > UINT32_MAX ? UINT32_MAX : n);
        int z = inflate(&in->zs, Z_NO_FLUSH);
        *got = (size_t)(in->zs.next_out - dst);
        if (z == Z_STREAM_END) {
            in->z_done = true;
        } else if (z == Z_BUF_ERROR && in->zs.avail_in == 0 &&
                   (in->fd < 0 || in->raw_eof)) {
            /* Input ended before the deflate stream did: the file was cut
             * short.  Never pass that off as a shorter data set. */
            in->z_done = true;
            return ag_error_set(err, AG_ERR_PARSE,
                                "deflated data set is truncated (ends at "
                                "inflated offset %llu)",
                                (unsigned long long)in->zs.total_out);
        } else if (z != Z_OK && z != Z_BUF_ERROR) {
            return ag_error_set(err, AG_ERR_PARSE,
                                "deflated data set at offset %llu: %s",
                                (unsigned long long)in->pos,
                                in->zs.msg ? in->zs.msg : "inflate failed");
        }
    }
    /* Deflate bombs (SECURITY.md rule 10): a hard cap, and a ratio cap
     * past a floor — real DICOM deflates far less than 100:1. */
    uint64_t ratio_cap = (uint64_t)in->zs.total_in * MAX_RATIO;
    if (in->zs.total_out > in->max_inflated ||
        (in->zs.total_out > RATIO_FLOOR && in->zs.total_out > ratio_cap)) {
        return ag_error_set(err, AG_ERR_LIMIT,
                            "deflated data set inflates more than %u:1 "
                            "(%llu bytes from %llu); refusing it",
                            MAX_RATIO, (unsigned long long)in->zs.total_out,
                            (unsigned long long)in->zs.total_in);
    }
    return AG_OK;
}

int dicom__input_start_inflate(DicomInput *in, AgError *err)
{
    memset(&in->zs, 0, sizeof in->zs);
    if (inflateInit2(&in->zs, -MAX_WBITS) != Z_OK) {
        return ag_error_set(err, AG_ERR_NOMEM, "inflate: out of memory");
    }
    in->inflating = true;
    in->max_inflated = MAX_INFLATED;
    in->known_end = UINT64_MAX;
    if (in->fd < 0) {
        /* The rest of the memory window is the compressed stream; logical
         * bytes now come from a heap window. */
        in->zs.next_in = (Bytef *)(uintptr_t)(in->win + in->lo);
        in->zs.avail_in = (uInt)(in->hi - in->lo);
        in->buf = ag_malloc(WINDOW_SIZE);
        if (in->buf == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "inflate: out of memory");
        }
        in->buf_cap = WINDOW_SIZE;
    } else {
        /* Unread bytes in the fd window are compressed input. */
        in->zcap = ZBUF_SIZE;
        size_t pending = in->hi - in->lo;
        if (pending > in->zcap) {
            in->zcap = pending;
        }
        in->zbuf = ag_malloc(in->zcap);
        if (in->zbuf == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "inflate: out of memory");
        }
        memcpy(in->zbuf, in->win + in->lo, pending);
        in->zs.next_in = in->zbuf;
        in->zs.avail_in = (uInt)pending;
    }
    in->win = in->buf;
    in->lo = in->hi = 0;
    return AG_OK;
}

/* Move unread bytes to the front and fill the window with at least n. */
static int refill(DicomInput *in, size_t n, AgError *err)
{
    if (in->buf == NULL) {
        return AG_OK;   /* memory source: everything is already there */
    }
    size_t have = in->hi - in->lo;
    if (in->lo > 0) {
        memmove(in->buf, in->buf + in->lo, have);
        in->lo = 0;
        in->hi = have;
    }
    if (n > in->buf_cap) {
        uint8_t *b = ag_realloc(in->buf, n);
        if (b == NULL) {
            return ag_error_set(err, AG_ERR_NOMEM, "input: out of memory");
        }
        in->buf = b;
        in->buf_cap = n;
    }
    in->win = in->buf;
    while (in->hi < n) {
        size_t got;
        int rc = in->inflating
            ? inflate_some(in, in->buf + in->hi, in->buf_cap - in->hi, &got,
                           err)
            : fd_read(in, in->buf + in->hi, in->buf_cap - in->hi, &got, err);
        if (rc != AG_OK) {
            return rc;
        }
        if (got == 0) {
            break;
        }
        in->hi += got;
    }
    return AG_OK;
}

int dicom__input_peek_slow(DicomInput *in, size_t n, const uint8_t **p,
                           size_t *avail, AgError *err)
{
    if (in->hi - in->lo < n) {
        int rc = refill(in, n, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    size_t have = in->hi - in->lo;
    if (avail != NULL) {
        *avail = have;
    }
    *p = in->win + in->lo;
    return have >= n ? AG_OK : AG_ERR_EOF;
}

int dicom__input_read_slow(DicomInput *in, void *dst, size_t n,
                           AgError *err)
{
    uint8_t *d = dst;
    size_t have = in->hi - in->lo;
    size_t take = have < n ? have : n;
    memcpy(d, in->win + in->lo, take);
    dicom__input_advance(in, take);
    d += take;
    n -= take;
    while (n > 0) {
        size_t got = 0;
        int rc;
        if (in->buf == NULL) {
            return AG_ERR_EOF;
        }
        if (n >= in->buf_cap && !in->inflating) {
            rc = fd_read(in, d, n, &got, err);   /* large: bypass window */
        } else if (n >= in->buf_cap) {
            rc = inflate_some(in, d, n, &got, err);
        } else {
            rc = refill(in, n, err);
            got = in->hi - in->lo < n ? in->hi - in->lo : n;
            if (rc == AG_OK) {
                memcpy(d, in->win + in->lo, got);
                in->lo += got;
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        if (got == 0) {
            return AG_ERR_EOF;
        }
        in->pos += got;
        d += got;
        n -= got;
    }
    return AG_OK;
}

int dicom__input_skip(DicomInput *in, uint64_t n, AgError *err)
{
    size_t have = in->hi - in->lo;
    if (n <= have) {
        dicom__input_advance(in, (size_t)n);
        return AG_OK;
    }
    if (in->buf == NULL) {
        return AG_ERR_EOF;
    }
    dicom__input_advance(in, have);
    n -= have;
    if (in->fd_seekable && !in->inflating) {
        if (n > dicom__input_remaining(in)) {
            return AG_ERR_EOF;
        }
        if (lseek(in->fd, (off_t)n, SEEK_CUR) < 0) {
            return ag_error_errno(err, AG_ERR_IO, "seek");
        }
        in->pos += n;
        return AG_OK;
    }
    while (n > 0) {
        in->lo = in->hi = 0;
        int rc = refill(in, n < in->buf_cap ? (size_t)n : in->buf_cap, err);
        if (rc != AG_OK) {
            return rc;
        }
        size_t got = in->hi < n ? in->hi : (size_t)n;
        if (got == 0) {
            return AG_ERR_EOF;
        }
        dicom__input_advance(in, got);
        n -= got;
    }
    return AG_OK;
}
