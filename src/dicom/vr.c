/* vr.c — the value representations of PS3.5 §6.2, Table 6.2-1. */
#include "dicom.h"

#include <string.h>

/*
 * Sorted by code for binary search.  long_header per PS3.5 §7.1.2: these
 * VRs have 2 reserved bytes and a 32-bit length in explicit VR encoding.
 */
static const DicomVRInfo VRS[] = {
    {DICOM_VR_AE, "AE", DICOM_VRK_STRING, false, 1, ' ', 16},
    {DICOM_VR_AS, "AS", DICOM_VRK_STRING, false, 1, ' ', 4},
    {DICOM_VR_AT, "AT", DICOM_VRK_BINARY, false, 2, '\0', 4},
    {DICOM_VR_CS, "CS", DICOM_VRK_STRING, false, 1, ' ', 16},
    {DICOM_VR_DA, "DA", DICOM_VRK_STRING, false, 1, ' ', 18},
    {DICOM_VR_DS, "DS", DICOM_VRK_STRING, false, 1, ' ', 16},
    {DICOM_VR_DT, "DT", DICOM_VRK_STRING, false, 1, ' ', 54},
    {DICOM_VR_FD, "FD", DICOM_VRK_BINARY, false, 8, '\0', 8},
    {DICOM_VR_FL, "FL", DICOM_VRK_BINARY, false, 4, '\0', 4},
    {DICOM_VR_IS, "IS", DICOM_VRK_STRING, false, 1, ' ', 12},
    {DICOM_VR_LO, "LO", DICOM_VRK_STRING, false, 1, ' ', 64},
    {DICOM_VR_LT, "LT", DICOM_VRK_TEXT, false, 1, ' ', 10240},
    {DICOM_VR_OB, "OB", DICOM_VRK_BULK, true, 1, '\0', 0},
    {DICOM_VR_OD, "OD", DICOM_VRK_BULK, true, 8, '\0', 0},
    {DICOM_VR_OF, "OF", DICOM_VRK_BULK, true, 4, '\0', 0},
    {DICOM_VR_OL, "OL", DICOM_VRK_BULK, true, 4, '\0', 0},
    {DICOM_VR_OV, "OV", DICOM_VRK_BULK, true, 8, '\0', 0},
    {DICOM_VR_OW, "OW", DICOM_VRK_BULK, true, 2, '\0', 0},
    {DICOM_VR_PN, "PN", DICOM_VRK_STRING, false, 1, ' ', 0},
    {DICOM_VR_SH, "SH", DICOM_VRK_STRING, false, 1, ' ', 16},
    {DICOM_VR_SL, "SL", DICOM_VRK_BINARY, false, 4, '\0', 4},
    {DICOM_VR_SQ, "SQ", DICOM_VRK_SEQUENCE, true, 1, '\0', 0},
    {DICOM_VR_SS, "SS", DICOM_VRK_BINARY, false, 2, '\0', 2},
    {DICOM_VR_ST, "ST", DICOM_VRK_TEXT, false, 1, ' ', 1024},
    {DICOM_VR_SV, "SV", DICOM_VRK_BINARY, true, 8, '\0', 8},
    {DICOM_VR_TM, "TM", DICOM_VRK_STRING, false, 1, ' ', 28},
    {DICOM_VR_UC, "UC", DICOM_VRK_STRING, true, 1, ' ', 0},
    {DICOM_VR_UI, "UI", DICOM_VRK_STRING, false, 1, '\0', 64},
    {DICOM_VR_UL, "UL", DICOM_VRK_BINARY, false, 4, '\0', 4},
    {DICOM_VR_UN, "UN", DICOM_VRK_BULK, true, 1, '\0', 0},
    {DICOM_VR_UR, "UR", DICOM_VRK_TEXT, true, 1, ' ', 0},
    {DICOM_VR_US, "US", DICOM_VRK_BINARY, false, 2, '\0', 2},
    {DICOM_VR_UT, "UT", DICOM_VRK_TEXT, true, 1, ' ', 0},
    {DICOM_VR_UV, "UV", DICOM_VRK_BINARY, true, 8, '\0', 8},
};

/* Direct index: (first letter, second letter) -> 1 + position in VRS.
 * The reader asks for every element, so this is a table, not a search. */
#define IX(a, b) (((a) - 'A') * 26 + ((b) - 'A'))
static const uint8_t VR_INDEX[26 * 26] = {
    [IX('A', 'E')] = 1,  [IX('A', 'S')] = 2,  [IX('A', 'T')] = 3,
    [IX('C', 'S')] = 4,  [IX('D', 'A')] = 5,  [IX('D', 'S')] = 6,
    [IX('D', 'T')] = 7,  [IX('F', 'D')] = 8,  [IX('F', 'L')] = 9,
    [IX('I', 'S')] = 10, [IX('L', 'O')] = 11, [IX('L', 'T')] = 12,
    [IX('O', 'B')] = 13, [IX('O', 'D')] = 14, [IX('O', 'F')] = 15,
    [IX('O', 'L')] = 16, [IX('O', 'V')] = 17, [IX('O', 'W')] = 18,
    [IX('P', 'N')] = 19, [IX('S', 'H')] = 20, [IX('S', 'L')] = 21,
    [IX('S', 'Q')] = 22, [IX('S', 'S')] = 23, [IX('S', 'T')] = 24,
    [IX('S', 'V')] = 25, [IX('T', 'M')] = 26, [IX('U', 'C')] = 27,
    [IX('U', 'I')] = 28, [IX('U', 'L')] = 29, [IX('U', 'N')] = 30,
    [IX('U', 'R')] = 31, [IX('U', 'S')] = 32, [IX('U', 'T')] = 33,
    [IX('U', 'V')] = 34,
};

const DicomVRInfo *dicom_vr_info(DicomVR vr)
{
    unsigned a = (unsigned)(vr >> 8) - 'A', b = (unsigned)(vr & 0xff) - 'A';
    if (a >= 26 || b >= 26) {
        return NULL;
    }
    unsigned i = VR_INDEX[a * 26 + b];
    return i == 0 ? NULL : &VRS[i - 1];
}

DicomVR dicom_vr_from_str(const char *s)
{
    if (s == NULL || s[0] == '\0' || s[1] == '\0') {
        return DICOM_VR_NONE;
    }
    DicomVR vr = DICOM_VR(s[0], s[1]);
    return dicom_vr_info(vr) != NULL ? vr : DICOM_VR_NONE;
}

const char *dicom_vr_str(DicomVR vr, char out[3])
{
    const DicomVRInfo *info = dicom_vr_info(vr);
    if (info == NULL) {
        memcpy(out, "??", 3);
    } else {
        memcpy(out, info->name, 3);
    }
    return out;
}

void dicom__swap(uint8_t *p, size_t n, unsigned unit)
{
    if (unit <= 1) {
        return;
    }
    for (size_t i = 0; i + unit <= n; i += unit) {
        for (unsigned a = 0, b = unit - 1; a < b; a++, b--) {
            uint8_t t = p[i + a];
            p[i + a] = p[i + b];
            p[i + b] = t;
        }
    }
}
