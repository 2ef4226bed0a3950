/*
 * parse_bench.c — times Agora's Part 10 reader over a list of files
 * (bench/parse drives it; see bench/README.md).
 *
 *   parse_bench [--header-only] [--reps N] [--list FILE] [FILE...]
 *
 * For each file: one arena (64 MiB budget), dicom_read_path(), destroy the
 * arena — the way the ingest path will use the reader.  --header-only sets
 * DicomReadOptions.stop_before_pixels; otherwise every value, pixel data
 * included, is loaded.  Prints one JSON line per repetition:
 *   {"mode":"full","files":1000,"bytes":525000000,"seconds":0.91,
 *    "elements":73000}
 * "bytes" is the size of the files (what the reader was handed), "elements"
 * the top-level elements parsed (a check that the parse did its work).
 * Exit status: 0 on success, 1 if any file failed (the error is printed),
 * 2 on bad usage.
 *
 * Build (bench/parse does this):
 *   cc -O2 -I src bench/parse_bench.c build/libagora_dicom.a \
 *      build/libagora_core.a -lz -ljansson -lpthread -o bench/out/parse_bench
 */
#include "core/core.h"
#include "dicom/dicom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int add_path(char ***paths, size_t *n, size_t *cap, const char *p)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        char **np = realloc(*paths, ncap * sizeof *np);
        if (np == NULL) {
            return -1;
        }
        *paths = np;
        *cap = ncap;
    }
    (*paths)[*n] = strdup(p);
    if ((*paths)[*n] == NULL) {
        return -1;
    }
    (*n)++;
    return 0;
}

static int read_list(const char *list, char ***paths, size_t *n, size_t *cap)
{
    FILE *f = fopen(list, "r");
    if (f == NULL) {
        perror(list);
        return -1;
    }
    char line[AG_PATH_MAX];
    while (fgets(line, sizeof line, f) != NULL) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len > 0 && add_path(paths, n, cap, line) != 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    bool header_only = false;
    int reps = 1;
    char **paths = NULL;
    size_t n = 0, cap = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--header-only") == 0) {
            header_only = true;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > 1000) {
                fprintf(stderr, "parse_bench: --reps must be 1..1000\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--list") == 0 && i + 1 < argc) {
            if (read_list(argv[++i], &paths, &n, &cap) != 0) {
                return 2;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: parse_bench [--header-only] [--reps N] "
                            "[--list FILE] [FILE...]\n");
            return 2;
        } else if (add_path(&paths, &n, &cap, argv[i]) != 0) {
            fprintf(stderr, "parse_bench: out of memory\n");
            return 2;
        }
    }
    if (n == 0) {
        fprintf(stderr, "parse_bench: no files\n");
        return 2;
    }

    unsigned long long bytes = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0) {
            bytes += (unsigned long long)st.st_size;
        }
    }

    DicomReadOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.stop_before_pixels = header_only;

    int status = 0;
    for (int rep = 0; rep < reps && status == 0; rep++) {
        unsigned long long elements = 0;
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
            AgArena *a = ag_arena_create((size_t)64 << 20);
            if (a == NULL) {
                fprintf(stderr, "parse_bench: out of memory\n");
                return 1;
            }
            AgError err;
            memset(&err, 0, sizeof err);
            DicomFile *f = NULL;
            int rc = dicom_read_path(paths[i], &opt, a, &f, &err);
            if (rc != AG_OK) {
                fprintf(stderr, "parse_bench: %s (%s)\n",
                        err.msg[0] ? err.msg : paths[i], ag_err_name(rc));
                status = 1;
                ag_arena_destroy(a);
                break;
            }
            elements += dicom_dataset_count(f->dataset);
            ag_arena_destroy(a);
        }
        double secs = now() - t0;
        if (status == 0) {
            printf("{\"mode\":\"%s\",\"files\":%zu,\"bytes\":%llu,"
                   "\"seconds\":%.6f,\"elements\":%llu}\n",
                   header_only ? "header" : "full", n, bytes, secs,
                   elements);
            fflush(stdout);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(paths[i]);
    }
    free(paths);
    return status;
}
