/* cmd_version.c — `agora version`. */
#include "cli/cli.h"
#include "dicom/dicom.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 ||
                     strcmp(argv[1], "-h") == 0)) {
        printf("usage: agora version\n\nPrint Agora's version, its DICOM "
               "implementation identity and library versions.\n");
        return 0;
    }
    printf("agora %s\n", AG_VERSION);
    printf("implementation class UID %s, version name %s\n",
           DICOM_IMPLEMENTATION_CLASS_UID, DICOM_IMPLEMENTATION_VERSION);
    printf("dictionary: %zu elements, %zu UIDs\n", dicom_dict_size(),
           dicom_uid_registry_size());
    printf("zlib %s, jansson %s\n", zlibVersion(), JANSSON_VERSION);
    return 0;
}
