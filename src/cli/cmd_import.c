/*
 * cmd_import.c — `agora import --data DIR PATH...`: files, folders
 * (recursive) and DICOMDIR media, through the ingest pipeline, in parallel.
 *
 * Every file is one line on stdout once its fate is durable:
 *   stored PATH SOP-UID | duplicate PATH SOP-UID | rejected PATH: reason
 *   | skipped PATH: not DICOM
 * then a summary.  On a terminal a progress line is drawn on stderr.
 */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64

typedef struct Import {
    Store *store;
    char **paths;           /* files to import (heap) */
    size_t n, cap;
    size_t next;            /* next index to take */
    pthread_mutex_t lock;   /* next, counters, stdout */
    uint64_t stored, duplicates, rejected, skipped, bytes;
    bool tty;
    struct timespec start;
} Import;

static int add_path(Import *im, const char *p)
{
    if (im->n == im->cap) {
        size_t cap = im->cap ? im->cap * 2 : 1024;
        char **np = realloc(im->paths, cap * sizeof *np);
        if (np == NULL) {
            return -1;
        }
        im->paths = np;
        im->cap = cap;
    }
    im->paths[im->n] = strdup(p);
    return im->paths[im->n++] == NULL ? -1 : 0;
}

static bool is_dicomdir(const char *p);

/* Collect regular files below p (symlinks to directories not followed). */
static int collect(Import *im, const char *p, int depth)
{
    struct stat st;
    if (lstat(p, &st) != 0) {
        fprintf(stderr, "agora import: %s: %s\n", p, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && depth == 0 && is_dicomdir(p)) {
        /* A DICOMDIR named on the command line stands for its media: the
         * folder it sits in is walked (never above it). */
        char dir[AG_PATH_MAX];
        ag_fmt(dir, sizeof dir, "%s", p);
        char *slash = strrchr(dir, '/');
        if (slash == NULL) {
            ag_fmt(dir, sizeof dir, ".");
        } else if (slash == dir) {
            dir[1] = '\0';
        } else {
            *slash = '\0';
        }
        return collect(im, dir, 1);
    }
    if (S_ISREG(st.st_mode)) {
        return add_path(im, p);
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

/* DICOMDIR (PS3.10 §8): import what its folder holds.  The referenced
 * files are found by walking the media folder, which stays inside its
 * root (SECURITY.md rule 2) and needs no trust in the directory records. */
static bool is_dicomdir(const char *p)
{
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    return strcasecmp(base, "DICOMDIR") == 0;
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

static void progress(Import *im)
{
    if (!im->tty) {
        return;
    }
    uint64_t done = im->stored + im->duplicates + im->rejected + im->skipped;
    fprintf(stderr, "\r%llu/%zu  stored %llu  duplicates %llu  rejected "
            "%llu  skipped %llu", (unsigned long long)done, im->n,
            (unsigned long long)im->stored,
            (unsigned long long)im->duplicates,
            (unsigned long long)im->rejected, (unsigned long long)im->skipped);
}

static void *worker(void *arg)
{
    Import *im = arg;
    StoreSource src = {.via = "import"};
    for (;;) {
        pthread_mutex_lock(&im->lock);
        size_t i = im->next++;
        pthread_mutex_unlock(&im->lock);
        if (i >= im->n) {
            return NULL;
        }
        const char *p = im->paths[i];
        if (is_dicomdir(p)) {
            pthread_mutex_lock(&im->lock);
            im->skipped++;
            printf("skipped %s: DICOMDIR (its files are imported from the "
                   "folder)\n", p);
            pthread_mutex_unlock(&im->lock);
            continue;
        }
        StoreResult r;
        AgError err;
        ag_error_clear(&err);
        int rc = store_ingest_path(im->store, p, false, &src, &r, &err);
        pthread_mutex_lock(&im->lock);
        if (rc == AG_OK && r.outcome == STORE_DUPLICATE) {
            im->duplicates++;
            printf("duplicate %s %s\n", p, r.sop_instance_uid);
        } else if (rc == AG_OK) {
            im->stored++;
            im->bytes += r.size;
            printf("stored %s %s%s\n", p, r.sop_instance_uid,
                   r.patient_conflict ? " (patient conflict flagged)" : "");
        } else if (rc == AG_ERR_PARSE && !has_dicm(p)) {
            im->skipped++;
            printf("skipped %s: not DICOM (%s)\n", p, err.msg);
        } else {
            im->rejected++;
            printf("rejected %s: %s\n", p, err.msg);
        }
        fflush(stdout);   /* a "stored" line is a promise: emit it now */
        progress(im);
        pthread_mutex_unlock(&im->lock);
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora import [--data DIR] [--jobs N] "
            "[--duplicates keep|replace|reject] PATH...\n\n"
            "Store DICOM files, folders (recursively) and media (DICOMDIR) "
            "in the archive\nthrough the ingest pipeline.  Each file is "
            "reported once durable: stored,\nduplicate, rejected (with the "
            "reason) or skipped (not DICOM); then a summary.\n\n"
            "options:\n"
            "  --data DIR        data directory (default ./agora-data)\n"
            "  --jobs N          files in flight (default: 16 x cores)\n"
            "  --duplicates P    keep (default), replace or reject a second "
            "copy\n"
            "  -h, --help        show this help\n"
            "exit status: 0 if nothing was rejected and every PATH was "
            "readable, 1 otherwise,\n2 usage\n");
}

int cmd_import(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"jobs", required_argument, NULL, 'j'},
        {"duplicates", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig cfg = {.data_dir = "./agora-data"};
    /* Ingest waits on fsyncs, not on the CPU: many files in flight make
     * large group commits. */
    long jobs = 16 * sysconf(_SC_NPROCESSORS_ONLN);
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
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc || jobs < 1 || jobs > 256) {
        usage(stderr);
        return 2;
    }
    Import im = {.tty = isatty(STDERR_FILENO)};
    pthread_mutex_init(&im.lock, NULL);
    bool missing = false;
    for (int i = optind; i < argc; i++) {
        if (collect(&im, argv[i], 0) != 0) {
            missing = true;   /* reported; the rest is still imported */
        }
    }
    AgError err;
    ag_error_clear(&err);
    int status = 0;
    if (store_open(&cfg, &im.store, &err) != AG_OK) {
        fprintf(stderr, "agora import: %s\n", err.msg);
        status = 1;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &im.start);
        pthread_t th[256];
        long started = 0;
        for (; started < jobs && (size_t)started < im.n; started++) {
            if (pthread_create(&th[started], NULL, worker, &im) != 0) {
                break;
            }
        }
        if (started == 0 && im.n > 0) {
            worker(&im);
        }
        for (long i = 0; i < started; i++) {
            pthread_join(th[i], NULL);
        }
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        double secs = (double)(end.tv_sec - im.start.tv_sec) +
                      (double)(end.tv_nsec - im.start.tv_nsec) / 1e9;
        store_close(im.store);
        if (im.tty) {
            fputc('\n', stderr);
        }
        printf("summary: %llu stored, %llu duplicates, %llu rejected, %llu "
               "skipped; %.1f MB in %.2f s\n",
               (unsigned long long)im.stored,
               (unsigned long long)im.duplicates,
               (unsigned long long)im.rejected,
               (unsigned long long)im.skipped, (double)im.bytes / 1e6, secs);
        status = im.rejected > 0 || missing ? 1 : 0;
    }
    for (size_t i = 0; i < im.n; i++) {
        free(im.paths[i]);
    }
    free(im.paths);
    pthread_mutex_destroy(&im.lock);
    return status;
}
