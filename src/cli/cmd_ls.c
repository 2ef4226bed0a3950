/* cmd_ls.c — `agora ls [patients|studies|series|instances] [KEY=VALUE...]`. */
#include "cli/cli.h"
#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_row(void *ctx, const StoreRow *row)
{
    bool *header = ctx;
    if (!*header) {
        for (size_t i = 0; row->names[i] != NULL; i++) {
            printf("%s%s", i ? "\t" : "", row->names[i]);
        }
        printf("\n");
        *header = true;
    }
    for (size_t i = 0; row->names[i] != NULL; i++) {
        /* Values come from the data: keep one row per line. */
        const char *v = row->values[i] ? row->values[i] : "";
        printf("%s", i ? "\t" : "");
        for (const char *p = v; *p != '\0'; p++) {
            putchar(*p == '\t' || *p == '\n' || *p == '\r' ? ' ' : *p);
        }
    }
    printf("\n");
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora ls [--data DIR] [--limit N] "
            "[patients|studies|series|instances] [KEY=VALUE...]\n\n"
            "A quick look at the index: one tab-separated row per entry.  "
            "Filters match\nexactly on PatientID, PatientName, "
            "StudyInstanceUID, StudyDate,\nAccessionNumber, SeriesInstanceUID, "
            "Modality, SOPInstanceUID, ...\n(default level: studies, limit "
            "1000)\n");
}

int cmd_ls(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig cfg = {.data_dir = "./agora-data", .read_only = true};
    long limit = 1000;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg.data_dir = optarg; break;
        case 'l': limit = strtol(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    StoreLevel level = STORE_LEVEL_STUDY;
    if (optind < argc && strchr(argv[optind], '=') == NULL) {
        const char *l = argv[optind++];
        if (strcmp(l, "patients") == 0) {
            level = STORE_LEVEL_PATIENT;
        } else if (strcmp(l, "studies") == 0) {
            level = STORE_LEVEL_STUDY;
        } else if (strcmp(l, "series") == 0) {
            level = STORE_LEVEL_SERIES;
        } else if (strcmp(l, "instances") == 0) {
            level = STORE_LEVEL_INSTANCE;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (limit < 1 || limit > 1000000) {
        usage(stderr);
        return 2;
    }
    if (argc - optind > 16) {
        fprintf(stderr, "agora ls: at most 16 filters\n");
        return 2;
    }
    const char *filters[17];
    int nf = 0;
    for (; optind < argc; optind++) {
        filters[nf++] = argv[optind];
    }
    filters[nf] = NULL;
    Store *s;
    AgError err;
    ag_error_clear(&err);
    if (store_open(&cfg, &s, &err) != AG_OK) {
        fprintf(stderr, "agora ls: %s\n", err.msg);
        return 1;
    }
    bool header = false;
    int rc = store_list(s, level, filters, (uint32_t)limit, print_row,
                        &header, &err);
    store_close(s);
    if (rc != AG_OK) {
        fprintf(stderr, "agora ls: %s\n", err.msg);
        return 1;
    }
    return 0;
}
