/*
 * jpeg_huff.h — what the two hand-written Huffman-coded JPEG decoders
 * (jpeg12.c, process 4; jpeg_lossless.c, process 14) share: the bit reader
 * over entropy-coded segments and the Huffman tables (ITU T.81 Annex C,
 * F.2.2, B.1.1.5, B.2.4.2).  Internal to src/codec.
 *
 * The reader takes bytes up to the next marker; peeking past it sees
 * zeros, but consuming those is the caller's error to report, so a stream
 * that ends early is caught where the bits are needed.
 */
#ifndef AGORA_CODEC_JPEG_HUFF_H
#define AGORA_CODEC_JPEG_HUFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JPEG_LUT_BITS 10          /* Huffman look-ahead, covers most codes */

/* Markers (T.81 Table B.1). */
enum {
    JPEG_SOF0 = 0xC0, JPEG_SOF1 = 0xC1, JPEG_SOF2 = 0xC2, JPEG_SOF3 = 0xC3,
    JPEG_DHT = 0xC4, JPEG_JPG = 0xC8, JPEG_DAC = 0xCC, JPEG_SOF15 = 0xCF,
    JPEG_RST0 = 0xD0, JPEG_SOI = 0xD8, JPEG_EOI = 0xD9, JPEG_SOS = 0xDA,
    JPEG_DQT = 0xDB, JPEG_DNL = 0xDC, JPEG_DRI = 0xDD, JPEG_DHP = 0xDE,
    JPEG_EXP = 0xDF, JPEG_APP0 = 0xE0, JPEG_APP14 = 0xEE,
    JPEG_APP15 = 0xEF, JPEG_COM = 0xFE,
};

/* One Huffman table (T.81 Annex C, F.2.2.3). */
typedef struct JpegHuff {
    bool defined;
    uint8_t vals[256];
    int nvals;
    int32_t maxcode[18];          /* largest code of length l, -1: none */
    int32_t valoff[18];           /* vals index of code c: c + valoff[l] */
    uint16_t lut[1 << JPEG_LUT_BITS];   /* (length << 8) | symbol, 0: longer */
} JpegHuff;

/* Bits of one entropy-coded segment: acc holds nbits real bits,
 * top-aligned. */
typedef struct JpegBits {
    const uint8_t *in;
    size_t end;
    size_t pos;
    uint64_t acc;
    int nbits;
    bool at_marker;               /* pos is at 0xFF <marker> or at end */
} JpegBits;

static inline uint16_t jpeg_rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Top up acc to more than 56 bits, or to the marker that ends the
 * segment. */
static inline void jpeg_bits_fill(JpegBits *b)
{
    while (b->nbits <= 56 && !b->at_marker) {
        if (b->pos >= b->end) {
            b->at_marker = true;
            break;
        }
        uint8_t c = b->in[b->pos];
        if (c == 0xFF) {
            if (b->pos + 1 < b->end && b->in[b->pos + 1] == 0x00) {
                b->pos += 2;          /* stuffed zero byte (F.1.2.3) */
            } else {
                b->at_marker = true;
                break;
            }
        } else {
            b->pos++;
        }
        b->acc |= (uint64_t)c << (56 - b->nbits);
        b->nbits += 8;
    }
}

/* Discard the rest of the segment up to the next marker (or the end). */
static inline void jpeg_bits_to_marker(JpegBits *b)
{
    for (;;) {
        b->acc = 0;
        b->nbits = 0;
        if (b->at_marker) {
            return;
        }
        jpeg_bits_fill(b);
    }
}

/* The table at the start of a DHT segment body p, len bytes left (T.81
 * B.2.4.2): checks it and reads its class (0: DC or lossless, 1: AC), id
 * (0..3) and size (*used bytes).  NULL, or what is wrong with it. */
const char *jpeg_dht_next(const uint8_t *p, size_t len, int *tc, int *th,
                          size_t *used);

/* Load the table jpeg_dht_next accepted at p into t: its values and the
 * lookup.  false if its code lengths overflow the code space (T.81 C.2:
 * canonical codes must fit in their length); t is then not defined. */
bool jpeg_huff_load(JpegHuff *t, const uint8_t *p);

#endif
