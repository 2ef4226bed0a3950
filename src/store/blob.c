/*
 * blob.c — the filesystem blob store: one file per instance under
 * DIR/blobs/ab/, written to a temporary name, fsynced and renamed
 * (DESIGN.md §6, SECURITY.md rule 4).  Names come from a BLAKE2b hash of the
 * SOP Instance UID plus a random suffix (a replacement gets a new file, so
 * the old one stays valid until the index commit says otherwise); paths are
 * never built from data (SECURITY.md rule 2).
 *
 * Temporary files live in DIR/tmp/ (name.tmp), never in the fan-out
 * directories: a crash's leftovers are found by emptying that one folder at
 * open, not by reading every directory of blobs (millions of entries in a
 * large archive).  The rename into place stays on one file system.
 *
 * A blob is put in one of two ways (StoreSync, chosen by store.c):
 *   published  name.tmp written, fdatasynced, renamed to name; the caller
 *              fsyncs the directory (once per group commit, not per blob);
 *   pending    name.tmp written and closed, nothing synced; the commit
 *              pipeline makes a whole batch durable with one syncfs(2),
 *              renames every name.tmp to name (store__blob_publish) and
 *              syncs again (store.c).
 * Either way the bytes are hashed while they are written, and a blob is
 * durable under its final name before the index row pointing to it commits.
 */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (256 * 1024)

struct StoreBlobs {
    char root[AG_PATH_MAX];      /* DIR/blobs */
    char tmp[AG_PATH_MAX];       /* DIR/tmp */
    int root_fd;                 /* DIR/blobs, for syncfs(2) */
    int lock_fd;                 /* DIR/store.lock, flock()ed shared */
    bool alone;                  /* no other process had it open at open */
};

static int mkdir_p(const char *path, AgError *err)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST) {
        return AG_OK;
    }
    return ag_error_errno(err, AG_ERR_IO, "mkdir %s", path);
}

static int fsync_dir(const char *path, AgError *err)
{
    if (ag_fault("blob.dirsync")) {
        errno = EIO;
        return ag_error_errno(err, AG_ERR_IO, "fsync %s", path);
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", path);
    }
    int rc = AG_OK;
    if (fsync(fd) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "fsync %s", path);
    }
    close(fd);
    return rc;
}

/* Remove every entry of a flat directory (the spool). */
static void empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
}

/* "name.tmp": a temporary blob (in DIR/tmp; in the fan-out directories
 * only as left by versions before DIR/tmp held them). */
static bool is_tmp_name(const char *n)
{
    size_t len = strlen(n);
    return len > 4 && strcmp(n + len - 4, ".tmp") == 0;
}

/* Make the 256 fan-out directories, so that the store path never creates
 * one. */
static int prepare_fanout(const char *root, AgError *err)
{
    bool created = false;
    for (int i = 0; i < 256; i++) {
        char p[AG_PATH_MAX];
        ag_fmt(p, sizeof p, "%s/%02x", root, i);
        if (mkdir(p, 0750) == 0) {
            created = true;
        } else if (errno != EEXIST) {
            return ag_error_errno(err, AG_ERR_IO, "mkdir %s", p);
        }
    }
    return created ? fsync_dir(root, err) : AG_OK;
}

/*
 * Every process with the store open for writing holds a shared flock on
 * DIR/store.lock until it closes.  Leftovers of a crash (spools and
 * "*.tmp" blobs in DIR/tmp) are removed only by a process that gets the lock
 * exclusively, i.e. when no other process has the store open: a command
 * run beside `agora serve` (agora node add, agora import) must never take
 * the files the server is writing.  *alone says whether this one cleans.
 */
static int lock_store(StoreBlobs *b, const char *data_dir, bool *alone,
                      AgError *err)
{
    char p[AG_PATH_MAX];
    ag_fmt(p, sizeof p, "%s/store.lock", data_dir);
    b->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (b->lock_fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", p);
    }
    *alone = flock(b->lock_fd, LOCK_EX | LOCK_NB) == 0;
    return AG_OK;
}

/* From exclusive (cleaning done) or nothing to shared, waiting for a
 * process that is cleaning to finish. */
static int share_store(StoreBlobs *b, AgError *err)
{
    while (flock(b->lock_fd, LOCK_SH) != 0) {
        if (errno != EINTR) {
            return ag_error_errno(err, AG_ERR_IO, "flock store.lock");
        }
    }
    return AG_OK;
}

int store__blobs_open(const char *data_dir, StoreBlobs **out, AgError *err)
{
    if (sodium_init() < 0) {
        return ag_error_set(err, AG_ERR_INVALID, "libsodium failed to start");
    }
    StoreBlobs *b = ag_calloc(1, sizeof *b);
    if (b == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "blobs: out of memory");
    }
    b->root_fd = -1;
    b->lock_fd = -1;
    if (strlen(data_dir) > AG_PATH_MAX - STORE_BLOB_NAME_MAX - 32 ||
        ag_fmt(b->root, sizeof b->root, "%s/blobs", data_dir) != AG_OK ||
        ag_fmt(b->tmp, sizeof b->tmp, "%s/tmp", data_dir) != AG_OK) {
        ag_free(b);
        return ag_error_set(err, AG_ERR_INVALID, "data directory path too "
                            "long");
    }
    int rc = mkdir_p(b->root, err);
    if (rc == AG_OK) {
        rc = mkdir_p(b->tmp, err);
    }
    if (rc == AG_OK) {
        b->root_fd = open(b->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->root_fd < 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "open %s", b->root);
        }
    }
    bool alone = false;
    if (rc == AG_OK) {
        rc = lock_store(b, data_dir, &alone, err);
    }
    if (rc == AG_OK) {
        /* Reconcile at start (SECURITY.md rule 4): nothing half-written
         * survives a crash — when no other process is writing. */
        if (alone) {
            empty_dir(b->tmp);
        }
        b->alone = alone;
        rc = prepare_fanout(b->root, err);
    }
    if (rc == AG_OK) {
        rc = share_store(b, err);
    }
    if (rc != AG_OK) {
        store__blobs_close(b);
        return rc;
    }
    *out = b;
    return AG_OK;
}

void store__blobs_close(StoreBlobs *b)
{
    if (b == NULL) {
        return;
    }
    if (b->root_fd >= 0) {
        close(b->root_fd);
    }
    if (b->lock_fd >= 0) {
        close(b->lock_fd);   /* drops the flock */
    }
    ag_free(b);
}

const char *store__blobs_tmp_dir(const StoreBlobs *b)
{
    return b->tmp;
}

void store__blob_name(const char *uid, char out[STORE_BLOB_NAME_MAX])
{
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)uid, strlen(uid),
                       NULL, 0);
    unsigned char r[8];
    randombytes_buf(r, sizeof r);
    char hex[33], rhex[17];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    sodium_bin2hex(rhex, sizeof rhex, r, sizeof r);
    ag_fmt(out, STORE_BLOB_NAME_MAX, "%.2s/%s-%s", hex, hex, rhex);
}

int store__blob_path(const StoreBlobs *b, const char *name, char *out,
                     size_t cap, AgError *err)
{
    if (ag_fmt(out, cap, "%s/%s", b->root, name) != AG_OK) {
        return ag_error_set(err, AG_ERR_INVALID, "blob path too long");
    }
    return AG_OK;
}

/* DIR/blobs/ab for name: made at open; made again if it went missing,
 * with its parent fsynced so that the new entry is durable. */
static int make_parent(StoreBlobs *b, const char *name, AgError *err)
{
    char p[AG_PATH_MAX];
    ag_fmt(p, sizeof p, "%s/%.2s", b->root, name);
    if (mkdir(p, 0750) == 0) {
        return fsync_dir(b->root, err);
    }
    return errno == EEXIST ? AG_OK
                           : ag_error_errno(err, AG_ERR_IO, "mkdir %s", p);
}

/* A temporary file in DIR/tmp, written then renamed to its final name. */
typedef struct Tmp {
    char tmp[AG_PATH_MAX];
    char final[AG_PATH_MAX];
    int fd;
    crypto_generichash_state h;
    uint64_t size;
} Tmp;

static int tmp_paths(StoreBlobs *b, const char *name, Tmp *t, AgError *err)
{
    t->fd = -1;
    t->size = 0;
    int rc = store__blob_path(b, name, t->final, sizeof t->final, err);
    if (rc == AG_OK) {
        const char *base = strrchr(name, '/');   /* "ab/" + base */
        base = base != NULL ? base + 1 : name;
        rc = ag_fmt(t->tmp, sizeof t->tmp, "%s/%s.tmp", b->tmp, base) == AG_OK
                 ? AG_OK
                 : ag_error_set(err, AG_ERR_INVALID, "blob path too long");
    }
    return rc;
}

static int tmp_open(StoreBlobs *b, const char *name, Tmp *t, AgError *err)
{
    int rc = tmp_paths(b, name, t, err);
    if (rc != AG_OK) {
        return rc;
    }
    /* The fan-out directory was made at open; should it have gone missing,
     * it is made again here, as the rename into it comes later.  0440:
     * stored blobs are never executable (SECURITY.md rule 9). */
    rc = make_parent(b, name, err);
    if (rc != AG_OK) {
        return rc;
    }
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    t->fd = open(t->tmp, flags, 0440);
    if (t->fd < 0 && errno == ENOENT && mkdir_p(b->tmp, err) == AG_OK) {
        t->fd = open(t->tmp, flags, 0440);
    }
    if (t->fd < 0) {
        return ag_error_errno(err, AG_ERR_IO, "create %s", t->tmp);
    }
    crypto_generichash_init(&t->h, NULL, 0, 32);
    return AG_OK;
}

/*
 * Write n bytes and hash them.  kick: start the write-back of what is
 * written (sync_file_range(2), which does not wait) before hashing, so that
 * the device writes while the CPU hashes and the fdatasync that publishes
 * the blob waits only for what is left (a 512 KB slice costs about as long
 * to hash as to write out here).  Errors of the write-back surface at that
 * fdatasync; the hint itself may fail harmlessly.
 */
static int tmp_write(Tmp *t, const void *p, size_t n, bool kick,
                     AgError *err)
{
    if (ag_fault("blob.write")) {
        errno = ENOSPC;
        return ag_error_errno(err, AG_ERR_IO, "write %s", t->tmp);
    }
    int rc = ag_write_all(t->fd, p, n, err);
    if (rc != AG_OK) {
        ag_error_prefix(err, "%s: ", t->tmp);
        return rc;
    }
    if (kick) {
        (void)sync_file_range(t->fd, (off64_t)t->size, (off64_t)n,
                              SYNC_FILE_RANGE_WRITE);
    }
    crypto_generichash_update(&t->h, p, n);
    t->size += n;
    return AG_OK;
}

static void tmp_abort(Tmp *t)
{
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    unlink(t->tmp);
}

static void finish_hash(crypto_generichash_state *h, StoreBlobInfo *info)
{
    unsigned char d[32];
    crypto_generichash_final(h, d, sizeof d);
    sodium_bin2hex(info->checksum, sizeof info->checksum, d, sizeof d);
}

static int rename_final(const char *from, const char *to, AgError *err)
{
    if (ag_fault("blob.rename")) {
        errno = EIO;
        return ag_error_errno(err, AG_ERR_IO, "rename %s", from);
    }
    if (rename(from, to) != 0) {
        return ag_error_errno(err, AG_ERR_IO, "rename %s", from);
    }
    return AG_OK;
}

/*
 * Close the written file; when publish, fsync it first and rename it into
 * place.  On failure nothing is left.
 */
static int tmp_commit(Tmp *t, bool publish, StoreBlobInfo *info,
                      AgError *err)
{
    int rc = AG_OK;
    if (publish && ag_fault("blob.fsync")) {
        errno = EIO;
        rc = ag_error_errno(err, AG_ERR_IO, "fsync %s", t->tmp);
    } else if (publish && fdatasync(t->fd) != 0) {
        /* A failed fsync fails the store; never retry it and trust the
         * result (SECURITY.md rule 4). */
        rc = ag_error_errno(err, AG_ERR_IO, "fsync %s", t->tmp);
    }
    if (close(t->fd) != 0 && rc == AG_OK) {
        rc = ag_error_errno(err, AG_ERR_IO, "close %s", t->tmp);
    }
    t->fd = -1;
    if (rc == AG_OK && publish) {
        rc = rename_final(t->tmp, t->final, err);
    }
    if (rc != AG_OK) {
        unlink(t->tmp);
        return rc;
    }
    info->size = t->size;
    finish_hash(&t->h, info);
    return AG_OK;
}

int store__blob_put_buffer(StoreBlobs *b, const char *name,
                           const uint8_t *p, size_t n, bool publish,
                           StoreBlobInfo *info, AgError *err)
{
    Tmp t;
    int rc = tmp_open(b, name, &t, err);
    if (rc == AG_OK) {
        rc = tmp_write(&t, p, n, publish, err);   /* one write(2) */
    }
    if (rc == AG_OK) {
        return tmp_commit(&t, publish, info, err);
    }
    tmp_abort(&t);
    return rc;
}

int store__blob_put_fd(StoreBlobs *b, const char *name, int fd,
                       uint64_t max_bytes, bool publish, StoreBlobInfo *info,
                       AgError *err)
{
    uint8_t *buf = ag_malloc(COPY_CHUNK);
    if (buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "blob copy: out of memory");
    }
    Tmp t;
    int rc = tmp_open(b, name, &t, err);
    while (rc == AG_OK) {
        ssize_t n = read(fd, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "read");
            break;
        }
        if (n == 0) {
            break;
        }
        if (t.size + (uint64_t)n > max_bytes) {
            rc = ag_error_set(err, AG_ERR_LIMIT, "instance is larger than "
                              "%llu bytes", (unsigned long long)max_bytes);
            break;
        }
        rc = tmp_write(&t, buf, (size_t)n, publish, err);   /* as copied */
    }
    ag_free(buf);
    if (rc == AG_OK) {
        return tmp_commit(&t, publish, info, err);
    }
    tmp_abort(&t);
    return rc;
}

/* Hash a file from its start (warm in the page cache after spooling). */
static int hash_fd(int fd, const char *path, crypto_generichash_state *h,
                   uint64_t *size, AgError *err)
{
    uint8_t *buf = ag_malloc(COPY_CHUNK);
    if (buf == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "blob: out of memory");
    }
    int rc = AG_OK;
    *size = 0;
    for (uint64_t off = 0;;) {
        ssize_t n = pread(fd, buf, COPY_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "read %s", path);
        }
        if (n <= 0) {
            break;
        }
        crypto_generichash_update(h, buf, (size_t)n);
        off += (uint64_t)n;
        *size = off;
    }
    ag_free(buf);
    return rc;
}

int store__blob_put_rename(StoreBlobs *b, const char *name, const char *path,
                           const StoreBlobInfo *known, bool publish,
                           StoreBlobInfo *info, AgError *err)
{
    if (path == NULL) {
        return ag_error_set(err, AG_ERR_INVALID, "no spool path");
    }
    Tmp t;
    int rc = tmp_paths(b, name, &t, err);
    if (rc == AG_OK) {
        rc = make_parent(b, name, err);
    }
    if (rc != AG_OK) {
        unlink(path);
        return rc;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "open %s", path);
        unlink(path);
        return rc;
    }
    crypto_generichash_init(&t.h, NULL, 0, 32);
    if (known == NULL) {
        rc = hash_fd(fd, path, &t.h, &t.size, err);
    }
    fchmod(fd, 0440);
    /* The spooled file itself becomes the blob: fsynced and renamed into
     * place now, or moved beside it as name.tmp until it is published. */
    if (publish) {
        ag_fmt(t.tmp, sizeof t.tmp, "%s", path);
    } else if (rc == AG_OK && rename(path, t.tmp) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "rename %s", path);
    }
    if (rc != AG_OK) {
        close(fd);
        unlink(path);
        unlink(t.tmp);
        return rc;
    }
    t.fd = fd;
    rc = tmp_commit(&t, publish, info, err);
    if (rc == AG_OK && known != NULL) {
        *info = *known;
    }
    return rc;
}

int store__blob_publish(StoreBlobs *b, const char *name, AgError *err)
{
    Tmp t;
    int rc = tmp_paths(b, name, &t, err);
    if (rc == AG_OK) {
        rc = rename_final(t.tmp, t.final, err);
    }
    return rc;
}

void store__blob_discard(StoreBlobs *b, const char *name)
{
    Tmp t;
    if (tmp_paths(b, name, &t, NULL) == AG_OK) {
        unlink(t.tmp);
        unlink(t.final);
    }
}

int store__blob_sync_fs(StoreBlobs *b, AgError *err)
{
    /* syncfs(2) writes back every dirty inode and commits the journal of
     * the file system; since Linux 5.8 it also reports write-back errors
     * of any file on it since the last call on this descriptor, so a blob
     * whose pages failed to reach the disk fails the batch. */
    if (syncfs(b->root_fd) != 0) {
        return ag_error_errno(err, AG_ERR_IO, "fsync of the file system of "
                              "%s (syncfs)", b->root);
    }
    return AG_OK;
}

bool store__blob_fault(StoreBlobs *b, const char *point, AgError *err)
{
    if (!ag_fault(point)) {
        return false;
    }
    errno = EIO;
    ag_error_errno(err, AG_ERR_IO, "fsync of the file system of %s (%s)",
                   b->root, point);
    return true;
}

int store__blob_sync_dir(StoreBlobs *b, const char *name, AgError *err)
{
    char dir[AG_PATH_MAX];
    ag_fmt(dir, sizeof dir, "%s/%.2s", b->root, name);
    return fsync_dir(dir, err);
}

int store__blob_remove(StoreBlobs *b, const char *name, AgError *err)
{
    char p[AG_PATH_MAX];
    int rc = store__blob_path(b, name, p, sizeof p, err);
    if (rc == AG_OK && unlink(p) != 0 && errno != ENOENT) {
        rc = ag_error_errno(err, AG_ERR_IO, "unlink %s", p);
    }
    return rc;
}

void store__blob_hash_init(StoreBlobHash *h)
{
    crypto_generichash_init(&h->h, NULL, 0, 32);
    h->size = 0;
}

void store__blob_hash_update(StoreBlobHash *h, const void *p, size_t n)
{
    crypto_generichash_update(&h->h, p, n);
    h->size += n;
}

void store__blob_hash_final(StoreBlobHash *h, StoreBlobInfo *info)
{
    info->size = h->size;
    finish_hash(&h->h, info);
}

void store__blob_hash_buffer(const uint8_t *p, size_t n, StoreBlobInfo *info)
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, p, n);
    info->size = n;
    finish_hash(&h, info);
}

int store__blob_hash(StoreBlobs *b, const char *name, StoreBlobInfo *info,
                     AgError *err)
{
    char p[AG_PATH_MAX];
    int rc = store__blob_path(b, name, p, sizeof p, err);
    if (rc != AG_OK) {
        return rc;
    }
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT
            ? ag_error_set(err, AG_ERR_NOTFOUND, "%s: missing", p)
            : ag_error_errno(err, AG_ERR_IO, "open %s", p);
    }
    uint8_t *buf = ag_malloc(COPY_CHUNK);
    if (buf == NULL) {
        close(fd);
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    info->size = 0;
    for (;;) {
        ssize_t n = read(fd, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = ag_error_errno(err, AG_ERR_IO, "read %s", p);
        }
        if (n <= 0) {
            break;
        }
        crypto_generichash_update(&h, buf, (size_t)n);
        info->size += (uint64_t)n;
    }
    ag_free(buf);
    close(fd);
    if (rc == AG_OK) {
        finish_hash(&h, info);
    }
    return rc;
}

static bool is_hex2(const char *s)
{
    return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2;
}

int store__blob_walk(StoreBlobs *b, int (*fn)(void *ctx, const char *name),
                     void *ctx, AgError *err)
{
    DIR *d1 = opendir(b->root);
    if (d1 == NULL) {
        return ag_error_errno(err, AG_ERR_IO, "open %s", b->root);
    }
    int stop = 0;
    struct dirent *a;
    while (!stop && (a = readdir(d1)) != NULL) {
        if (!is_hex2(a->d_name)) {
            continue;
        }
        char p1[AG_PATH_MAX];
        ag_fmt(p1, sizeof p1, "%s/%s", b->root, a->d_name);
        DIR *d2 = opendir(p1);
        struct dirent *c;
        while (!stop && d2 != NULL && (c = readdir(d2)) != NULL) {
            if (is_tmp_name(c->d_name) && b->alone) {
                /* Left half-written by a version that wrote temporary
                 * blobs here (no version does now): the walk of
                 * agora check is the one pass over every folder that
                 * can take them away. */
                unlinkat(dirfd(d2), c->d_name, 0);
                continue;
            }
            if (c->d_name[0] == '.' || is_tmp_name(c->d_name) ||
                strlen(c->d_name) > 50) {
                continue;
            }
            char name[STORE_BLOB_NAME_MAX];
            ag_fmt(name, sizeof name, "%s/%s", a->d_name, c->d_name);
            stop = fn(ctx, name);
        }
        if (d2 != NULL) {
            closedir(d2);
        }
    }
    closedir(d1);
    return AG_OK;
}

int store__blob_quarantine(StoreBlobs *b, const char *name, AgError *err)
{
    char from[AG_PATH_MAX], dir[AG_PATH_MAX], to[AG_PATH_MAX];
    int rc = store__blob_path(b, name, from, sizeof from, err);
    if (rc != AG_OK) {
        return rc;
    }
    /* DIR/lost+found beside DIR/blobs. */
    ag_fmt(dir, sizeof dir, "%s/../lost+found", b->root);
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        return ag_error_errno(err, AG_ERR_IO, "mkdir %s", dir);
    }
    const char *base = strrchr(name, '/');
    ag_fmt(to, sizeof to, "%s/%s", dir, base != NULL ? base + 1 : name);
    if (rename(from, to) != 0) {
        return ag_error_errno(err, AG_ERR_IO, "move %s", from);
    }
    return fsync_dir(dir, err);
}
