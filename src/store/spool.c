/*
 * spool.c — a Part 10 file made ready for ingest while it arrives (see
 * StoreSpool in store.h).
 *
 * A C-STORE's data set comes in PDVs of up to the negotiated PDU size, and
 * the sender waits for the response before its next instance.  Hashing and
 * writing each PDV as it arrives does that work while the peer is still
 * sending, rather than after the last byte, when it would sit between the
 * data set and the response; for an instance larger than memory's share it
 * also spares reading the file back to hash it.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Held in memory up to this size (store.c reads files up to the same size
 * whole, INLINE_FILE_MAX); larger ones live only in their file. */
#define SPOOL_MEM_MAX ((size_t)1 << 20)
/* A file is started past this size: smaller blobs are staged in the index
 * (STAGE_MAX in store.c) and need none. */
#define SPOOL_FILE_FROM ((uint64_t)64 << 10)
/* Write-back of the file is started every this many bytes, so that the
 * flush at the end waits only for the rest. */
#define SPOOL_KICK ((uint64_t)256 << 10)

int store_spool_open(Store *s, StoreSpool **out, AgError *err)
{
    StoreSpool *sp = ag_calloc(1, sizeof *sp);
    if (sp == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    ag_buf_init(&sp->mem, SPOOL_MEM_MAX);
    sp->in_mem = true;
    sp->fd = -1;
    sp->dir = store_tmp_dir(s);
    sp->limit = store__max_bytes(s);
    store__blob_hash_init(&sp->hash);
    ag_error_clear(&sp->err);
    *out = sp;
    return AG_OK;
}

/* Record the first failure (err already describes it in sp->err). */
static int spoil(StoreSpool *sp, int rc)
{
    sp->rc = rc;
    return rc;
}

static int file_write(StoreSpool *sp, const void *p, size_t n)
{
    if (ag_fault("spool.write")) {
        errno = ENOSPC;
        return spoil(sp, ag_error_errno(&sp->err, AG_ERR_IO, "write %s",
                                        sp->path));
    }
    int rc = ag_write_all(sp->fd, p, n, &sp->err);
    if (rc != AG_OK) {
        ag_error_prefix(&sp->err, "%s: ", sp->path);
        return spoil(sp, rc);
    }
    sp->filed += n;
    if (sp->filed - sp->kicked >= SPOOL_KICK) {
        /* Starts the write-back and does not wait; its errors surface at
         * the fdatasync that publishes the blob. */
        (void)sync_file_range(sp->fd, (off64_t)sp->kicked,
                              (off64_t)(sp->filed - sp->kicked),
                              SYNC_FILE_RANGE_WRITE);
        sp->kicked = sp->filed;
    }
    return AG_OK;
}

/* Bring the file level with mem, starting it if need be. */
static int catch_up(StoreSpool *sp)
{
    if (sp->fd < 0) {
        ag_fmt(sp->path, sizeof sp->path, "%s/spool-XXXXXX", sp->dir);
        sp->fd = mkostemp(sp->path, O_CLOEXEC);
        if (sp->fd < 0) {
            int rc = ag_error_errno(&sp->err, AG_ERR_IO, "spool %s",
                                    sp->path);
            sp->path[0] = '\0';
            return spoil(sp, rc);
        }
    }
    return file_write(sp, sp->mem.data + sp->filed,
                      sp->mem.len - (size_t)sp->filed);
}

static int append(StoreSpool *sp, const void *p, size_t n)
{
    if (sp->in_mem && sp->mem.len + n <= SPOOL_MEM_MAX) {
        int rc = ag_buf_append(&sp->mem, p, n);
        if (rc != AG_OK) {
            return spoil(sp, ag_error_set(&sp->err, rc, "spool: out of "
                                          "memory"));
        }
        /* Written in large pieces, each with its write-back started. */
        bool due = sp->hash.size > SPOOL_FILE_FROM &&
                   sp->mem.len - sp->filed >= SPOOL_KICK;
        return due ? catch_up(sp) : AG_OK;
    }
    if (sp->in_mem) {
        /* Outgrowing memory: from now on the file alone. */
        int rc = catch_up(sp);
        ag_buf_deinit(&sp->mem);
        sp->in_mem = false;
        if (rc != AG_OK) {
            return rc;
        }
    }
    return file_write(sp, p, n);
}

int store_spool_write(StoreSpool *sp, const void *p, size_t n, AgError *err)
{
    if (sp->rc == AG_OK && sp->hash.size + n > sp->limit) {
        spoil(sp, ag_error_set(&sp->err, AG_ERR_LIMIT, "instance is larger "
                               "than %llu bytes",
                               (unsigned long long)sp->limit));
    }
    if (sp->rc == AG_OK) {
        store__blob_hash_update(&sp->hash, p, n);
        append(sp, p, n);
    }
    if (sp->rc != AG_OK && err != NULL) {
        *err = sp->err;
    }
    return sp->rc;
}

uint64_t store_spool_size(const StoreSpool *sp)
{
    return sp->hash.size;
}

int store__spool_finish(StoreSpool *sp, StoreBlobInfo *sum, AgError *err)
{
    if (sp->rc == AG_OK && sp->in_mem && sp->hash.size > SPOOL_FILE_FROM) {
        catch_up(sp);   /* the rest; a file from the first byte */
    }
    if (sp->fd >= 0) {
        if (close(sp->fd) != 0 && sp->rc == AG_OK) {
            spoil(sp, ag_error_errno(&sp->err, AG_ERR_IO, "close %s",
                                     sp->path));
        }
        sp->fd = -1;
    }
    if (sp->rc != AG_OK) {
        if (err != NULL) {
            *err = sp->err;
        }
        return sp->rc;
    }
    store__blob_hash_final(&sp->hash, sum);
    return AG_OK;
}

void store_spool_discard(StoreSpool *sp)
{
    if (sp == NULL) {
        return;
    }
    if (sp->fd >= 0) {
        close(sp->fd);
    }
    if (sp->path[0] != '\0') {
        unlink(sp->path);
    }
    ag_buf_deinit(&sp->mem);
    ag_free(sp);
}
