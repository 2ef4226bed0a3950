/*
 * jpeg_huff.c — Huffman tables for the hand-written JPEG decoders
 * (jpeg_huff.h; ITU T.81 B.2.4.2, Annex C, F.2.2.3).
 */
#include "jpeg_huff.h"

#include <string.h>

const char *jpeg_dht_next(const uint8_t *p, size_t len, int *tc, int *th,
                          size_t *used)
{
    if (len < 17) {
        return "huffman table segment too short";
    }
    *tc = p[0] >> 4;
    *th = p[0] & 0x0F;
    if (*tc > 1 || *th > 3) {
        return "bad huffman table class or id";
    }
    size_t total = 0;
    for (int i = 0; i < 16; i++) {
        total += p[1 + i];
    }
    if (total > len - 17 || total > 256) {
        return "huffman table longer than its segment";
    }
    *used = 17 + total;
    return NULL;
}

bool jpeg_huff_load(JpegHuff *t, const uint8_t *p)
{
    const uint8_t *counts = p + 1;
    int total = 0;
    for (int i = 0; i < 16; i++) {
        total += counts[i];
    }
    memcpy(t->vals, p + 17, (size_t)total);
    t->nvals = total;
    t->defined = false;
    memset(t->lut, 0, sizeof t->lut);
    int32_t code = 0;
    int k = 0;
    for (int len = 1; len <= 16; len++) {
        int cnt = counts[len - 1];
        if (code + cnt > ((int32_t)1 << len)) {
            return false;
        }
        t->maxcode[len] = cnt == 0 ? -1 : code + cnt - 1;
        t->valoff[len] = cnt == 0 ? 0 : k - code;
        for (int i = 0; i < cnt; i++, k++, code++) {
            if (len <= JPEG_LUT_BITS) {
                int shift = JPEG_LUT_BITS - len;
                uint32_t first = (uint32_t)code << shift;
                for (uint32_t j = 0; j < (1u << shift); j++) {
                    t->lut[first + j] = (uint16_t)(len << 8 | t->vals[k]);
                }
            }
        }
        code <<= 1;
    }
    t->maxcode[17] = INT32_MAX;   /* sentinel: decoders stop at 16 */
    t->defined = true;
    return true;
}
