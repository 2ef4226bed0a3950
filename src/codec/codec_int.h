/*
 * codec_int.h — internal to src/codec/: one decode/encode pair per codec
 * family, dispatched by codec.c from the transfer syntax.  Each works on one
 * frame, native layout as in codec.h, and returns AG_ERR_UNSUPPORTED for
 * variants it does not handle (e.g. a bit depth), AG_ERR_PARSE for a
 * corrupt stream, with a message naming the problem.
 */
#ifndef AG_CODEC_INT_H
#define AG_CODEC_INT_H

#include "codec.h"

/* RLE Lossless, PS3.5 Annex G (rle.c, hand-written: no library in Debian
 * implements DICOM's RLE segment layout). */
int codec__rle_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err);
int codec__rle_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      AgBuf *out, AgError *err);

/* JPEG Baseline (process 1) and Extended (2 & 4) via libjpeg-turbo
 * (jpeg.c). */
int codec__jpeg_decode(const CodecImage *im, const uint8_t *in, size_t n,
                       uint8_t *out, size_t out_len, AgError *err);
int codec__jpeg_encode(const CodecImage *im, const uint8_t *in, size_t n,
                       int quality, AgBuf *out, AgError *err);

/* JPEG Extended with 12-bit samples, process 4 (jpeg12.c, hand-written:
 * Debian 12's libjpeg-turbo is 8-bit only).  _applies: the stream's frame
 * header is a DCT frame with P = 12 (a bounded look, no error). */
bool codec__jpeg12_applies(const uint8_t *in, size_t n);
int codec__jpeg12_decode(const CodecImage *im, const uint8_t *in, size_t n,
                         uint8_t *out, size_t out_len, AgError *err);

/* JPEG Lossless, process 14 (all predictors) and SV1 (jpeg_lossless.c,
 * hand-written: Debian 12's libjpeg-turbo has no lossless mode). */
int codec__jpeg_lossless_decode(const CodecImage *im, const uint8_t *in,
                                size_t n, uint8_t *out, size_t out_len,
                                AgError *err);

/* JPEG-LS lossless and near-lossless via CharLS (jpegls.c). */
int codec__jpegls_decode(const CodecImage *im, const uint8_t *in, size_t n,
                         uint8_t *out, size_t out_len, AgError *err);
int codec__jpegls_encode(const CodecImage *im, const uint8_t *in, size_t n,
                         int near, AgBuf *out, AgError *err);

/* JPEG 2000 (and HTJ2K where OpenJPEG decodes it) via OpenJPEG (j2k.c). */
int codec__j2k_decode(const CodecImage *im, const uint8_t *in, size_t n,
                      uint8_t *out, size_t out_len, AgError *err);
int codec__j2k_encode(const CodecImage *im, const uint8_t *in, size_t n,
                      bool lossless, AgBuf *out, AgError *err);

#endif
