/*
 * cmd_import.c — `agora import --data DIR PATH...`: files, folders
 * (recursive) and DICOMDIR media, through the ingest pipeline, in parallel.
 *
 * Every file is one line on stdout once its fate is durable:
 *   stored PATH SOP-UID | duplicate PATH SOP-UID | rejected PATH: reason
 *   | skipped PATH: not DICOM
 * then a summary.  On a terminal a progress line is drawn on stderr.
 *
 * A DICOMDIR named on the command line stands for its media: the files its
 * directory records reference are imported, and nothing else (PS3.10 §8,
 * PS3.3 F.3/F.5).  Files it references that are not there are reported on
 * stderr and make the exit status 1; the rest is still imported.
 */
#include "audit/audit.h"
#include "cli/cli.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64
#define MAX_JOBS 4096
#define MAX_THREADS 128
#define DICOMDIR_BUDGET ((size_t)512 << 20)
/* PS3.10 §8.5: a File ID has at most 8 components; tolerate deeper trees
 * written by careless media creators, within reason. */
#define MAX_FILE_ID_COMPONENTS 32
#define MEDIA_STORAGE_DIRECTORY "1.2.840.10008.1.3.10"
#define TAG_DIRECTORY_RECORD_SEQ DICOM_TAG(0x0004, 0x1220)
#define TAG_RECORD_IN_USE DICOM_TAG(0x0004, 0x1410)
#define TAG_REFERENCED_FILE_ID DICOM_TAG(0x0004, 0x1500)

/* One file to import.  A file referenced by a DICOMDIR keeps the length of
 * its media root: it is opened from there one component at a time, never
 * following a symbolic link, so that it stays inside the media
 * (SECURITY.md rule 2). */
typedef struct Entry {
    char *path;             /* heap */
    size_t root_len;        /* > 0: media file below path[0..root_len) */
} Entry;

typedef struct Import Import;

/* One file handed to the store, until its verdict. */
typedef struct Pending {
    Import *im;
    const char *path;       /* borrowed from im->files */
} Pending;

struct Import {
    Store *store;
    Entry *files;           /* files to import (heap) */
    Pending *pending;       /* one per file (heap) */
    size_t n, cap;
    size_t next;            /* next index to take */
    pthread_mutex_t lock;   /* next, counters, stdout, in_flight */
    pthread_cond_t slot_cv; /* in_flight went down */
    long max_in_flight;     /* --jobs */
    long in_flight;         /* files handed to the store, verdict pending */
    bool unflushed;         /* lines printed since the last fflush */
    uint64_t stored, duplicates, rejected, skipped, missing, bytes;
    bool tty;
    struct timespec start;
    struct timespec drawn;  /* last progress line */
    StoreSource src;        /* outlives every ingest */
};

static int add_file(Import *im, const char *p, size_t root_len)
{
    if (im->n == im->cap) {
        size_t cap = im->cap ? im->cap * 2 : 1024;
        Entry *nf = realloc(im->files, cap * sizeof *nf);
        if (nf == NULL) {
            return -1;
        }
        im->files = nf;
        im->cap = cap;
    }
    im->files[im->n].path = strdup(p);
    im->files[im->n].root_len = root_len;
    return im->files[im->n++].path == NULL ? -1 : 0;
}

static bool named_dicomdir(const char *p)
{
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    return strcasecmp(base, "DICOMDIR") == 0;
}

/* ---- DICOMDIR media (PS3.10 §8, PS3.3 Annex F) --------------------------- */

/*
 * Does an entry name on the media match a File ID component?  PS3.10 §8.5
 * components are upper-case; ISO 9660 media mounted on Linux may show them
 * lower-case, with a trailing "." (no extension) and a ";1" version.
 */
static bool media_name_matches(const char *entry, const char *comp)
{
    size_t n = strlen(entry);
    const char *semi = strrchr(entry, ';');
    if (semi != NULL && semi[1] != '\0' &&
        strspn(semi + 1, "0123456789") == strlen(semi + 1)) {
        n = (size_t)(semi - entry);
    }
    if (n > 0 && entry[n - 1] == '.') {
        n--;
    }
    return n == strlen(comp) && strncasecmp(entry, comp, n) == 0;
}

/* A component from the DICOMDIR: a name, never a path. */
static bool safe_component(const char *c)
{
    return c[0] != '\0' && strcmp(c, ".") != 0 && strcmp(c, "..") != 0 &&
           strchr(c, '/') == NULL;
}

/*
 * Open name in directory dfd without following a symbolic link; when it is
 * not there as written, the entry that matches it as a media name.  The
 * name found is written to found.
 */
static int open_media_entry(int dfd, const char *name, int flags,
                            char *found, size_t cap)
{
    flags |= O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dfd, name, flags);
    if (fd >= 0 || errno != ENOENT) {
        ag_fmt(found, cap, "%s", name);
        return fd;
    }
    int dup_fd = dup(dfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (d == NULL) {
        if (dup_fd >= 0) {
            close(dup_fd);
        }
        errno = ENOENT;
        return -1;
    }
    rewinddir(d);
    fd = -1;
    errno = ENOENT;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (safe_component(e->d_name) &&
            media_name_matches(e->d_name, name)) {
            fd = openat(dfd, e->d_name, flags);
            if (fd >= 0) {
                ag_fmt(found, cap, "%s", e->d_name);
            }
            break;
        }
    }
    int saved = errno;
    closedir(d);
    errno = saved;
    return fd;
}

/*
 * Open the file at rel (components separated by '/' or '\\') below the
 * directory root: each component is a name (no "..", no "/"), each step
 * refuses a symbolic link, the last must be a regular file.  resolved (may
 * be NULL) receives the names as found on the media, joined by '/'.
 */
static int open_beneath(const char *root, const char *rel, char *resolved,
                        size_t cap)
{
    char buf[AG_PATH_MAX];
    if (ag_fmt(buf, sizeof buf, "%s", rel) != AG_OK) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        return -1;
    }
    if (resolved != NULL) {
        resolved[0] = '\0';
    }
    char *save = NULL;
    char *comp = strtok_r(buf, "/\\", &save);
    int depth = 0;
    while (comp != NULL) {
        char *next = strtok_r(NULL, "/\\", &save);
        if (!safe_component(comp) || ++depth > MAX_FILE_ID_COMPONENTS) {
            close(dfd);
            errno = EACCES;
            return -1;
        }
        char found[256];
        int fd = open_media_entry(dfd, comp,
                                  next != NULL ? O_RDONLY | O_DIRECTORY
                                               : O_RDONLY,
                                  found, sizeof found);
        int saved = errno;
        close(dfd);
        if (fd < 0) {
            errno = saved == ELOOP ? EACCES : saved;
            return -1;
        }
        if (resolved != NULL) {
            size_t len = strlen(resolved);
            ag_fmt(resolved + len, cap - len, "%s%s", len ? "/" : "", found);
        }
        dfd = fd;
        comp = next;
    }
    struct stat st;
    if (depth == 0 || fstat(dfd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(dfd);
        errno = depth == 0 ? ENOENT : EACCES;
        return -1;
    }
    return dfd;
}

/* The folder a DICOMDIR sits in: its media root. */
static void media_root(const char *dicomdir, char *out, size_t cap)
{
    ag_fmt(out, cap, "%s", dicomdir);
    char *slash = strrchr(out, '/');
    if (slash == NULL) {
        ag_fmt(out, cap, ".");
    } else if (slash == out) {
        out[1] = '\0';
    } else {
        *slash = '\0';
    }
}

static void media_missing(Import *im, const char *dicomdir, const char *id,
                          const char *why)
{
    fprintf(stderr, "agora import: %s: referenced file %s: %s\n", dicomdir,
            id, why);
    im->missing++;
}

/* One directory record: the file it references, if any (PS3.3 F.5). */
static int media_record(Import *im, const char *dicomdir, const char *root,
                        const DicomDataset *rec, AgArena *a)
{
    int64_t in_use = 0xffff;
    /* Record In-use Flag 0000H: an inactive record (PS3.3 F.5, retired but
     * still found on media). */
    if (dicom_get_int(rec, TAG_RECORD_IN_USE, &in_use) == AG_OK &&
        in_use == 0) {
        return 0;
    }
    const DicomElement *el = dicom_dataset_find(rec, TAG_REFERENCED_FILE_ID);
    if (el == NULL || dicom_element_vm(el) == 0) {
        return 0;   /* PATIENT, STUDY, SERIES ...: no file of their own */
    }
    /* Referenced File ID: one component per value, relative to the folder
     * holding the DICOMDIR (PS3.10 §8.5, PS3.3 F.3.2.2). */
    char id[AG_PATH_MAX];
    id[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < dicom_element_vm(el); i++) {
        char *c = NULL;
        if (dicom_element_string(el, i, a, &c, NULL) != AG_OK) {
            break;
        }
        if (ag_fmt(id + len, sizeof id - len, "%s%s", i ? "\\" : "", c) !=
            AG_OK) {
            media_missing(im, dicomdir, "(too long)", "file ID too long");
            return -1;
        }
        len = strlen(id);
    }
    char resolved[AG_PATH_MAX];
    int fd = open_beneath(root, id, resolved, sizeof resolved);
    if (fd < 0) {
        media_missing(im, dicomdir, id,
                      errno == EACCES ? "outside the media or not a file"
                                      : strerror(errno));
        return -1;
    }
    close(fd);
    char path[AG_PATH_MAX];
    if (ag_fmt(path, sizeof path, "%s/%s", root, resolved) != AG_OK) {
        media_missing(im, dicomdir, id, "path too long");
        return -1;
    }
    if (add_file(im, path, strlen(root)) != 0) {
        fprintf(stderr, "agora import: out of memory\n");
        return -1;
    }
    return 0;
}

/*
 * Collect the files a DICOMDIR references.  *is_dir is false (and nothing
 * is reported) when p parses but is not a DICOMDIR.
 */
static int collect_media(Import *im, const char *p, bool *is_dir)
{
    *is_dir = false;
    AgArena *a = ag_arena_create(DICOMDIR_BUDGET);
    if (a == NULL) {
        fprintf(stderr, "agora import: out of memory\n");
        return -1;
    }
    /* By name, or by its Media Storage SOP Class (PS3.10 §7.1) read from
     * the file meta group alone: ordinary files cost one small read. */
    DicomReadOptions ro = {.meta_only = true};
    DicomFile *f = NULL;
    AgError err;
    ag_error_clear(&err);
    const char *cls = NULL;
    if (dicom_read_path(p, &ro, a, &f, NULL) == AG_OK && f->meta != NULL) {
        cls = dicom_get_string(f->meta, DICOM_TAG_MEDIA_SOP_CLASS_UID, a);
    }
    if (!named_dicomdir(p) &&
        (cls == NULL || strcmp(cls, MEDIA_STORAGE_DIRECTORY) != 0)) {
        ag_arena_destroy(a);
        return 0;   /* an ordinary file */
    }
    *is_dir = true;
    ro.meta_only = false;
    int rc = dicom_read_path(p, &ro, a, &f, &err);
    const DicomElement *seq = rc == AG_OK
        ? dicom_dataset_find(f->dataset, TAG_DIRECTORY_RECORD_SEQ)
        : NULL;
    if (rc != AG_OK || seq == NULL || seq->vr != DICOM_VR_SQ) {
        fprintf(stderr, "agora import: %s: not a readable DICOMDIR: %s "
                "(import its folder to take every file in it)\n", p,
                rc != AG_OK ? err.msg : "no Directory Record Sequence");
        ag_arena_destroy(a);
        im->missing++;
        return -1;
    }
    char root[AG_PATH_MAX];
    media_root(p, root, sizeof root);
    /* Every record is an item of the one sequence (PS3.3 F.3.2.2); the
     * offsets only link them into a tree, which import does not need. */
    int status = 0;
    for (uint32_t i = 0; i < seq->nitems; i++) {
        if (media_record(im, p, root, seq->items[i], a) != 0) {
            status = -1;
        }
    }
    ag_arena_destroy(a);
    return status;
}

/* ---- collecting files ------------------------------------------------------ */

/* Collect regular files below p (symlinks to directories not followed). */
static int collect(Import *im, const char *p, int depth)
{
    struct stat st;
    if (lstat(p, &st) != 0) {
        fprintf(stderr, "agora import: %s: %s\n", p, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && depth == 0) {
        /* A DICOMDIR named on the command line stands for its media. */
        bool is_dir = false;
        int rc = collect_media(im, p, &is_dir);
        if (is_dir) {
            return rc;
        }
    }
    if (S_ISREG(st.st_mode)) {
        return add_file(im, p, 0);
    }
    if (!S_ISDIR(st.st_mode) || depth > MAX_DEPTH) {
        return 0;
    }
    DIR *d = opendir(p);
    if (d == NULL) {
        fprintf(stderr, "agora import: %s: %s\n", p, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {   /* one bad entry must not hide the rest */
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char child[AG_PATH_MAX];
        if (ag_fmt(child, sizeof child, "%s/%s", p, e->d_name) != AG_OK) {
            continue;
        }
        if (collect(im, child, depth + 1) != 0) {
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

/* Part 10 files carry "DICM" after the preamble; without it a file that
 * does not parse is reported as not DICOM rather than as a bad instance. */
static bool has_dicm(const char *p)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    char b[132];
    bool yes = pread(fd, b, sizeof b, 0) == (ssize_t)sizeof b &&
               memcmp(b + 128, "DICM", 4) == 0;
    close(fd);
    return yes;
}

/* ---- importing --------------------------------------------------------------- */

static double since(const struct timespec *t0, const struct timespec *t1)
{
    return (double)(t1->tv_sec - t0->tv_sec) +
           (double)(t1->tv_nsec - t0->tv_nsec) / 1e9;
}

/* Redrawn at most ten times a second, and at the end. */
static void progress(Import *im, bool last)
{
    if (!im->tty) {
        return;
    }
    uint64_t done = im->stored + im->duplicates + im->rejected + im->skipped;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!last && done < im->n && since(&im->drawn, &now) < 0.1) {
        return;
    }
    im->drawn = now;
    double secs = since(&im->start, &now);
    fprintf(stderr, "\r%llu/%zu  stored %llu  duplicates %llu  rejected "
            "%llu  skipped %llu  %.0f/s ", (unsigned long long)done, im->n,
            (unsigned long long)im->stored,
            (unsigned long long)im->duplicates,
            (unsigned long long)im->rejected, (unsigned long long)im->skipped,
            secs > 0 ? (double)done / secs : 0.0);
}

/* The verdict on one file (a store thread, or the worker when it was
 * decided at once): one line, counted.  Caller of report holds im->lock. */
static void report(Import *im, const char *p, int rc, const StoreResult *r,
                   const AgError *err)
{
    if (rc == AG_OK && r->outcome == STORE_DUPLICATE) {
        im->duplicates++;
        printf("duplicate %s %s\n", p, r->sop_instance_uid);
    } else if (rc == AG_OK) {
        im->stored++;
        im->bytes += r->size;
        printf("stored %s %s%s\n", p, r->sop_instance_uid,
               r->patient_conflict ? " (patient conflict flagged)" : "");
    } else if (rc == AG_ERR_PARSE && !has_dicm(p)) {
        im->skipped++;
        printf("skipped %s: not DICOM (%s)\n", p, err->msg);
    } else {
        im->rejected++;
        printf("rejected %s: %s\n", p, err->msg);
    }
    im->unflushed = true;
    progress(im, false);
}

static void ingest_done(void *ctx, int rc, const StoreResult *r,
                        const AgError *err)
{
    Pending *pd = ctx;
    Import *im = pd->im;
    pthread_mutex_lock(&im->lock);
    report(im, pd->path, rc, r, err);
    im->in_flight--;
    pthread_cond_signal(&im->slot_cv);
    pthread_mutex_unlock(&im->lock);
}

/* Hand one file to the store; media files are opened beneath their root.
 * ingest_done gets the verdict. */
static void ingest_entry(Import *im, const Entry *e, Pending *pd)
{
    if (e->root_len == 0) {
        store_ingest_path_async(im->store, e->path, false, &im->src,
                                ingest_done, pd);
        return;
    }
    char root[AG_PATH_MAX];
    ag_fmt(root, sizeof root, "%.*s", (int)e->root_len, e->path);
    int fd = open_beneath(root, e->path + e->root_len + 1, NULL, 0);
    if (fd < 0) {
        AgError err;
        int rc = ag_error_errno(&err, AG_ERR_IO, "open");
        ingest_done(pd, rc, NULL, &err);
        return;
    }
    store_ingest_fd_async(im->store, fd, e->path, &im->src, ingest_done, pd);
    close(fd);
}

/*
 * A worker reads, parses and writes one file after another; their verdicts
 * come back asynchronously, so a few workers keep up to --jobs files in
 * flight and the group commits stay large.  Lines are flushed by the
 * workers (a store thread only prints), at the latest with the next file.
 */
static void *worker(void *arg)
{
    Import *im = arg;
    for (;;) {
        pthread_mutex_lock(&im->lock);
        if (im->unflushed) {
            fflush(stdout);   /* a "stored" line is a promise: emit it */
            im->unflushed = false;
        }
        while (im->in_flight >= im->max_in_flight) {
            pthread_cond_wait(&im->slot_cv, &im->lock);
        }
        size_t i = im->next++;
        bool skip = i < im->n && im->files[i].root_len == 0 &&
                    named_dicomdir(im->files[i].path);
        if (i >= im->n) {
            pthread_mutex_unlock(&im->lock);
            return NULL;
        }
        if (skip) {
            im->skipped++;
            printf("skipped %s: DICOMDIR (its files are imported from the "
                   "folder)\n", im->files[i].path);
            im->unflushed = true;
            pthread_mutex_unlock(&im->lock);
            continue;
        }
        im->in_flight++;
        pthread_mutex_unlock(&im->lock);
        ingest_entry(im, &im->files[i], &im->pending[i]);
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora import [--data DIR] [--jobs N] "
            "[--duplicates keep|replace|reject]\n"
            "                    [--sync filesystem|files] PATH...\n\n"
            "Store DICOM files, folders (recursively) and media (DICOMDIR) "
            "in the archive\nthrough the ingest pipeline.  Each file is "
            "reported once durable: stored,\nduplicate, rejected (with the "
            "reason) or skipped (not DICOM); then a summary.\nA DICOMDIR "
            "imports the files its records reference (and only those; "
            "pass\nthe folder to import everything in it); referenced files "
            "that are missing\nare reported on stderr.\n\n"
            "options:\n"
            "  --data DIR        data directory (default ./agora-data)\n"
            "  --jobs N          files in flight (default 512)\n"
            "  --duplicates P    keep (default), replace or reject a second "
            "copy\n"
            "  --sync M          how blobs are made durable before each "
            "group commit:\n"
            "                    filesystem (default; one syncfs per batch, "
            "best on a file\n"
            "                    system of its own) or files (fsync of each "
            "file and folder)\n"
            "  -h, --help        show this help\n"
            "exit status: 0 if nothing was rejected and every PATH (and "
            "every file a DICOMDIR\nreferences) was readable, 1 otherwise, "
            "2 usage\n");
}

/* Workers: enough to keep both the CPUs and the reads busy; with
 * --sync files each also waits for its own fdatasync, and only many of
 * those at once share a journal commit. */
static void run_workers(Import *im, StoreSync sync)
{
    clock_gettime(CLOCK_MONOTONIC, &im->start);
    im->drawn = im->start;
    long nthreads = (sync == STORE_SYNC_FILES ? 32 : 2) *
                    sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 2) {
        nthreads = 2;
    }
    if (nthreads > im->max_in_flight) {
        nthreads = im->max_in_flight;
    }
    if (nthreads > MAX_THREADS) {
        nthreads = MAX_THREADS;
    }
    pthread_t th[MAX_THREADS];
    long started = 0;
    for (; started < nthreads && (size_t)started < im->n; started++) {
        if (pthread_create(&th[started], NULL, worker, im) != 0) {
            break;
        }
    }
    if (started == 0 && im->n > 0) {
        worker(im);
    }
    for (long i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    /* The last verdicts come from the store's threads. */
    pthread_mutex_lock(&im->lock);
    while (im->in_flight > 0) {
        pthread_cond_wait(&im->slot_cv, &im->lock);
    }
    fflush(stdout);
    pthread_mutex_unlock(&im->lock);
}

/* One audit record per run (PS3.15 A.5.3.8, DICOM Instances Imported
 * ... here "Import"): who ran it, from which paths, how many. */
static void audit_import(const char *data, const Import *im, int npaths,
                         char **paths)
{
    AuditConfig cfg = {.data_dir = data};
    AuditLog *log = NULL;
    AgError err;
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        fprintf(stderr, "agora import: audit trail: %s\n", err.msg);
        return;
    }
    char detail[512];
    ag_fmt(detail, sizeof detail, "agora import %s%s: %llu stored, %llu "
           "duplicates, %llu rejected", npaths > 0 ? paths[0] : "",
           npaths > 1 ? " ..." : "", (unsigned long long)im->stored,
           (unsigned long long)im->duplicates,
           (unsigned long long)im->rejected);
    const char *who = getenv("USER");
    AuditEvent ev = {.event = AUDIT_IMPORT, .action = 'C',
                     .outcome = im->rejected == 0 ? AUDIT_SUCCESS
                                                  : AUDIT_MINOR_FAILURE,
                     .user = who ? who : "(command line)",
                     .source = "localhost", .count = im->stored,
                     .detail = detail};
    audit_record(log, &ev, NULL);
    audit_close(log);
}

int cmd_import(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"jobs", required_argument, NULL, 'j'},
        {"duplicates", required_argument, NULL, 'u'},
        {"sync", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig cfg = {.data_dir = "./agora-data"};
    /* A file in flight mostly waits for its group commit, not for the CPU:
     * many in flight make large batches, and a batch costs the same one
     * flush whatever its size. */
    long jobs = 512;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg.data_dir = optarg; break;
        case 'j': jobs = strtol(optarg, NULL, 10); break;
        case 'u':
            if (strcmp(optarg, "keep") == 0) {
                cfg.dup_policy = STORE_DUP_KEEP_FIRST;
            } else if (strcmp(optarg, "replace") == 0) {
                cfg.dup_policy = STORE_DUP_REPLACE;
            } else if (strcmp(optarg, "reject") == 0) {
                cfg.dup_policy = STORE_DUP_REJECT;
            } else {
                usage(stderr);
                return 2;
            }
            break;
        case 's':
            if (strcmp(optarg, "filesystem") == 0) {
                cfg.sync = STORE_SYNC_FILESYSTEM;
            } else if (strcmp(optarg, "files") == 0) {
                cfg.sync = STORE_SYNC_FILES;
            } else {
                usage(stderr);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc || jobs < 1 || jobs > MAX_JOBS) {
        usage(stderr);
        return 2;
    }
    Import im = {.tty = isatty(STDERR_FILENO), .max_in_flight = jobs,
                 .src = {.via = "import"}};
    pthread_mutex_init(&im.lock, NULL);
    pthread_cond_init(&im.slot_cv, NULL);
    bool missing = false;
    for (int i = optind; i < argc; i++) {
        if (collect(&im, argv[i], 0) != 0) {
            missing = true;   /* reported; the rest is still imported */
        }
    }
    AgError err;
    ag_error_clear(&err);
    int status = 0;
    im.pending = calloc(im.n ? im.n : 1, sizeof *im.pending);
    for (size_t i = 0; im.pending != NULL && i < im.n; i++) {
        im.pending[i].im = &im;
        im.pending[i].path = im.files[i].path;
    }
    if (im.pending == NULL) {
        fprintf(stderr, "agora import: out of memory\n");
        status = 1;
    } else if (store_open(&cfg, &im.store, &err) != AG_OK) {
        fprintf(stderr, "agora import: %s\n", err.msg);
        status = 1;
    } else {
        run_workers(&im, cfg.sync);
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        double secs = since(&im.start, &end);
        store_close(im.store);
        if (im.tty) {
            progress(&im, true);
            fputc('\n', stderr);
        }
        printf("summary: %llu stored, %llu duplicates, %llu rejected, %llu "
               "skipped; %.1f MB in %.2f s",
               (unsigned long long)im.stored,
               (unsigned long long)im.duplicates,
               (unsigned long long)im.rejected,
               (unsigned long long)im.skipped, (double)im.bytes / 1e6, secs);
        if (im.missing > 0) {
            printf("; %llu referenced files missing",
                   (unsigned long long)im.missing);
        }
        printf("\n");
        audit_import(cfg.data_dir, &im, argc - optind, argv + optind);
        status = im.rejected > 0 || missing ? 1 : 0;
    }
    for (size_t i = 0; i < im.n; i++) {
        free(im.files[i].path);
    }
    free(im.files);
    free(im.pending);
    pthread_cond_destroy(&im.slot_cv);
    pthread_mutex_destroy(&im.lock);
    return status;
}
