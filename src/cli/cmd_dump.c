/* cmd_dump.c — `agora dump [--json] FILE...`: like dcmdump. */
#include "cli/cli.h"
#include "dicom/dicom.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora dump [OPTIONS] FILE...\n\n"
            "Print every element of DICOM files (Part 10 or bare data sets)\n"
            "like dcmdump: (group,element) VR value  # length, VM keyword.\n\n"
            "options:\n"
            "  --json          print DICOM JSON (PS3.18 Annex F) instead\n"
            "  --meta          include the file meta group in --json output\n"
            "  --no-pixels     stop reading before the pixel data\n"
            "  --strict        refuse odd value lengths (PS3.5 §7.1.1)\n"
            "  --max-value N   show at most N characters of a value "
            "(default 64)\n"
            "  -h, --help      show this help\n");
}

static int dump_one(const char *path, bool json, bool meta, bool no_pixels,
                    bool strict, size_t max_value)
{
    AgArena *a = ag_arena_create((size_t)2 << 30);
    if (a == NULL) {
        fprintf(stderr, "agora dump: out of memory\n");
        return 1;
    }
    DicomReadOptions opt = {.stop_before_pixels = no_pixels,
                            .strict = strict};
    DicomFile *f = NULL;
    AgError err;
    ag_error_clear(&err);
    int out = STDOUT_FILENO;
    int rc = dicom_read_path(path, &opt, a, &f, &err);
    if (rc == AG_OK && json) {
        DicomJsonOptions jo = {.pretty = true, .include_meta = meta};
        const DicomDataset *ds = f->dataset;
        if (meta) {
            /* One object: the meta group's elements, then the data set's
             * (tags are ordered, group 0002 comes first). */
            DicomDataset *both = dicom_dataset_create(a);
            for (size_t i = 0; both && i < dicom_dataset_count(f->meta); i++) {
                dicom_dataset_put(both, dicom_dataset_at(f->meta, i), NULL);
            }
            for (size_t i = 0; both && i < dicom_dataset_count(f->dataset);
                 i++) {
                dicom_dataset_put(both, dicom_dataset_at(f->dataset, i), NULL);
            }
            ds = both != NULL ? both : ds;
        }
        rc = dicom_json_write(ds, &jo, dicom_sink_fd, &out, &err);
        if (rc == AG_OK) {
            rc = ag_write_all(out, "\n", 1, &err);
        }
    } else if (rc == AG_OK) {
        const char *ts = f->ts != NULL ? f->ts->name : f->ts_uid;
        dprintf(out, "\n# Dicom-File-Format\n\n"
                     "# Dicom-Meta-Information-Header\n"
                     "# Used TransferSyntax: %s\n", ts);
        rc = dicom_dump(f->meta, max_value, dicom_sink_fd, &out, &err);
        if (rc == AG_OK) {
            dprintf(out, "\n# Dicom-Data-Set\n# Used TransferSyntax: %s\n",
                    ts);
            rc = dicom_dump(f->dataset, max_value, dicom_sink_fd, &out, &err);
        }
        if (rc == AG_OK && f->stopped_at_pixels) {
            dprintf(out, "# (stopped before the pixel data at offset %llu)\n",
                    (unsigned long long)f->pixel_offset);
        }
    }
    ag_arena_destroy(a);
    if (rc != AG_OK) {
        fprintf(stderr, "agora dump: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int cmd_dump(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"meta", no_argument, NULL, 'm'},
        {"no-pixels", no_argument, NULL, 'n'},
        {"strict", no_argument, NULL, 's'},
        {"max-value", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false, meta = false, no_pixels = false, strict = false;
    size_t max_value = 64;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'm': meta = true; break;
        case 'n': no_pixels = true; break;
        case 's': strict = true; break;
        case 'v': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end != '\0' || v <= 0) {
                fprintf(stderr, "agora dump: --max-value needs a positive "
                                "number\n");
                return 2;
            }
            max_value = (size_t)v;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    int status = 0;
    for (int i = optind; i < argc; i++) {
        if (dump_one(argv[i], json, meta, no_pixels, strict, max_value) != 0) {
            status = 1;
        }
    }
    return status;
}
