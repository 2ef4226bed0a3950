/* main.c — `agora CMD [ARGS]`: dispatch to one file per subcommand. */
#include "cli/cli.h"
#include "core/core.h"

#include <stdio.h>
#include <string.h>

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command COMMANDS[] = {
    {"audit", cmd_audit, "verify and list the audit trail"},
    {"check", cmd_check,
     "verify the index against the blobs (--repair fixes)"},
    {"demo", cmd_demo, "store synthetic demo studies (or write one file)"},
    {"dept", cmd_dept, "manage departments and their assignment rules"},
    {"dump", cmd_dump, "print the elements of DICOM files (like dcmdump)"},
    {"import", cmd_import, "store files, folders and DICOMDIR media"},
    {"ls", cmd_ls, "list patients, studies, series or instances"},
    {"node", cmd_node, "manage remote DICOM nodes (add, list, remove, echo)"},
    {"render", cmd_render, "render a frame of a DICOM image to PNG or JPEG"},
    {"serve", cmd_serve, "run the archive (DICOM listener)"},
    {"transcode", cmd_transcode,
     "write a DICOM file in another transfer syntax"},
    {"user", cmd_user, "manage users, roles and API tokens"},
    {"version", cmd_version, "print the version and the libraries used"},
    {"worklist", cmd_worklist,
     "manage the modality worklist (add, list, show, remove, purge)"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora COMMAND [OPTIONS] [ARGS]\n\n"
            "Agora: a PACS and vendor-neutral archive.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    }
    fprintf(out, "\n`agora COMMAND --help` documents each command's "
                 "options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "codec-helper") == 0) {   /* hidden: sandbox.c */
        return cmd_codec_helper(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "--version") == 0) {
        return cmd_version(argc - 1, argv + 1);
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(argv[1], COMMANDS[i].name) == 0) {
            return COMMANDS[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "agora: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
