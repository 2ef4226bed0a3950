/* ts.c — transfer syntaxes of PS3.5 §10 and Annex A, PS3.6 Table A-1. */
#include "dicom.h"

#include <string.h>

/* uid, name, explicit, big endian, deflated, encapsulated, lossy, retired */
static const DicomTransferSyntax SYNTAXES[] = {
    {"1.2.840.10008.1.2", "Implicit VR Little Endian",
     false, false, false, false, false, false},
    {"1.2.840.10008.1.2.1", "Explicit VR Little Endian",
     true, false, false, false, false, false},
    {"1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian",
     true, false, false, true, false, false},
    {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian",
     true, false, true, false, false, false},
    {"1.2.840.10008.1.2.2", "Explicit VR Big Endian",
     true, true, false, false, false, true},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)",
     true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order "
     "Prediction (Process 14 [Selection Value 1])",
     true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression",
     true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)",
     true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image "
     "Compression (Lossless Only)", true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image "
     "Compression", true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.94", "JPIP Referenced",
     true, false, false, false, false, false},
    {"1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate",
     true, false, true, false, false, false},
    {"1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile "
     "/ Level 4.1", true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 "
     "For 2D Video", true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 "
     "For 3D Video", true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / "
     "Level 4.2", true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression "
     "(Lossless Only)", true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options "
     "Image Compression (Lossless Only)", true, false, false, true, false, false},
    {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression",
     true, false, false, true, true, false},
    {"1.2.840.10008.1.2.5", "RLE Lossless",
     true, false, false, true, false, false},
};

#define NSYNTAXES (sizeof SYNTAXES / sizeof SYNTAXES[0])

const DicomTransferSyntax *dicom_ts_lookup(const char *uid)
{
    if (uid == NULL) {
        return NULL;
    }
    size_t n = strlen(uid);
    while (n > 0 && (uid[n - 1] == ' ' || uid[n - 1] == '\0')) {
        n--;   /* UI values are NUL-padded (PS3.5 §6.2) */
    }
    for (size_t i = 0; i < NSYNTAXES; i++) {
        if (strlen(SYNTAXES[i].uid) == n &&
            memcmp(SYNTAXES[i].uid, uid, n) == 0) {
            return &SYNTAXES[i];
        }
    }
    return NULL;
}

size_t dicom_ts_count(void)
{
    return NSYNTAXES;
}

const DicomTransferSyntax *dicom_ts_at(size_t i)
{
    return i < NSYNTAXES ? &SYNTAXES[i] : NULL;
}
