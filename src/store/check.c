/*
 * check.c — `agora check`: every index row has its blob with the right
 * checksum, every blob is indexed.  With repair, orphan blobs are
 * re-indexed (so a lost index is rebuilt from the blobs), and rows whose
 * blob is gone are removed and reported.
 */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct Missing {
    char (*uids)[65];
    size_t n, cap;
} Missing;

typedef struct CheckCtx {
    Store *s;
    StoreBlobs *blobs;
    StoreIndex *ix;
    bool repair;
    StoreCheckLog log;
    void *log_ctx;
    StoreCheckReport *rep;
    Missing missing;
    int rc;
    AgError *err;
} CheckCtx;

static void say(CheckCtx *c, const char *what, const char *path,
                const char *detail)
{
    if (c->log != NULL) {
        c->log(c->log_ctx, what, path, detail);
    }
}

static int check_row(void *ctx, const char *sop_uid, const char *blob,
                     const char *checksum, uint64_t size)
{
    CheckCtx *c = ctx;
    c->rep->instances_checked++;
    StoreBlobInfo info;
    AgError e;
    int rc = store__blob_hash_any(c->s, blob, &info, &e);
    if (rc == AG_ERR_NOTFOUND) {
        c->rep->missing_blobs++;
        say(c, "missing", blob, sop_uid);
        if (c->missing.n == c->missing.cap) {
            size_t cap = c->missing.cap ? c->missing.cap * 2 : 64;
            void *p = ag_realloc(c->missing.uids, cap * sizeof *c->missing.uids);
            if (p == NULL) {
                c->rc = ag_error_set(c->err, AG_ERR_NOMEM, "out of memory");
                return 1;
            }
            c->missing.uids = p;
            c->missing.cap = cap;
        }
        ag_fmt(c->missing.uids[c->missing.n++], 65, "%s", sop_uid);
        return 0;
    }
    if (rc != AG_OK) {
        say(c, "unreadable", blob, e.msg);
        c->rep->bad_checksums++;
        return 0;
    }
    if (info.size != size || strcmp(info.checksum, checksum) != 0) {
        c->rep->bad_checksums++;
        say(c, "checksum", blob, sop_uid);
    }
    return 0;
}

static int check_blob(void *ctx, const char *name)
{
    CheckCtx *c = ctx;
    c->rep->blobs_seen++;
    bool known = false;
    AgError e;
    if (c->ix->ops->has_blob(c->ix, name, &known, &e) != AG_OK) {
        c->rc = ag_error_set(c->err, e.code, "%s", e.msg);
        return 1;
    }
    if (known) {
        return 0;
    }
    c->rep->orphan_blobs++;
    say(c, "orphan", name, NULL);
    if (!c->repair) {
        return 0;
    }
    int rc = store__reindex_blob(c->s, name, &e);
    if (rc == AG_OK) {
        c->rep->reindexed++;
        say(c, "reindexed", name, NULL);
    } else if (rc == AG_ERR_EXISTS) {
        /* Its SOP Instance UID is indexed with another blob: this copy was
         * never acknowledged (an interrupted store or replacement). */
        store__blob_remove(c->blobs, name, NULL);
        c->rep->removed_duplicates++;
        say(c, "removed duplicate", name, NULL);
    } else if (store__blob_quarantine(c->blobs, name, &e) == AG_OK) {
        c->rep->unreadable++;
        c->rep->quarantined++;
        say(c, "moved to lost+found", name, NULL);
    } else {
        c->rep->unreadable++;
        say(c, "unreadable", name, e.msg);
    }
    return 0;
}

int store_check(Store *s, bool repair, StoreCheckLog log, void *ctx,
                StoreCheckReport *out, AgError *err)
{
    StoreBlobs *blobs = store__blobs(s);
    StoreIndex *ix = store__index(s);
    memset(out, 0, sizeof *out);
    CheckCtx c = {.s = s, .blobs = blobs, .ix = ix, .repair = repair,
                  .log = log, .log_ctx = ctx, .rep = out, .err = err};
    int rc = ix->ops->walk_instances(ix, check_row, &c, err);
    if (rc == AG_OK) {
        rc = c.rc;
    }
    if (rc == AG_OK) {
        rc = store__blob_walk(blobs, check_blob, &c, err);
    }
    if (rc == AG_OK) {
        rc = c.rc;
    }
    for (size_t i = 0; rc == AG_OK && repair && i < c.missing.n; i++) {
        uint64_t n = 0;
        AgError e;
        if (store_delete(s, STORE_LEVEL_INSTANCE, c.missing.uids[i], &n,
                         &e) == AG_OK) {
            out->removed_rows++;
            say(&c, "removed row", c.missing.uids[i], "blob was missing");
        }
    }
    ag_free(c.missing.uids);
    return rc;
}
