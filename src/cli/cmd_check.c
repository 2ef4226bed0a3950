/* cmd_check.c — `agora check --data DIR [--repair]`. */
#include "cli/cli.h"
#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void log_problem(void *ctx, const char *what, const char *path,
                        const char *detail)
{
    (void)ctx;
    printf("%s %s%s%s\n", what, path, detail ? " " : "", detail ? detail : "");
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora check [--data DIR] [--repair]\n\n"
            "Verify that every indexed instance has its blob with the right "
            "checksum and\nthat every blob is indexed.  With --repair, orphan "
            "blobs are re-indexed (a\nlost index is rebuilt from the blobs) "
            "and rows whose blob is missing are\nremoved and reported.\n\n"
            "exit status: 0 when consistent (or repaired), 1 when problems "
            "remain, 2 usage\n");
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"repair", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig cfg = {.data_dir = "./agora-data"};
    bool repair = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg.data_dir = optarg; break;
        case 'r': repair = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    Store *s;
    AgError err;
    ag_error_clear(&err);
    if (store_open(&cfg, &s, &err) != AG_OK) {
        fprintf(stderr, "agora check: %s\n", err.msg);
        return 1;
    }
    StoreCheckReport r;
    int rc = store_check(s, repair, log_problem, NULL, &r, &err);
    store_close(s);
    if (rc != AG_OK) {
        fprintf(stderr, "agora check: %s\n", err.msg);
        return 1;
    }
    printf("checked %llu instances, %llu blobs: %llu missing, %llu bad "
           "checksums, %llu orphans",
           (unsigned long long)r.instances_checked,
           (unsigned long long)r.blobs_seen,
           (unsigned long long)r.missing_blobs,
           (unsigned long long)r.bad_checksums,
           (unsigned long long)r.orphan_blobs);
    if (repair) {
        printf("; repaired: %llu re-indexed, %llu rows removed, %llu "
               "duplicate copies removed, %llu not DICOM (%llu moved to "
               "lost+found)", (unsigned long long)r.reindexed,
               (unsigned long long)r.removed_rows,
               (unsigned long long)r.removed_duplicates,
               (unsigned long long)r.unreadable,
               (unsigned long long)r.quarantined);
    }
    printf("\n");
    bool clean = r.bad_checksums == 0 &&
                 (repair ? r.unreadable == r.quarantined
                         : r.missing_blobs == 0 && r.orphan_blobs == 0);
    return clean ? 0 : 1;
}
