/*
 * codec.h — pixel data (DESIGN.md §3): describing images, splitting
 * encapsulated pixel data into frames, decoding and encoding frames in the
 * compressed transfer syntaxes, and transcoding whole data sets.
 *
 * Specs: PS3.5 §8 (native and encapsulated pixel data), Annex A.4
 * (fragments, Basic and Extended Offset Tables), Annex G (RLE), §8.2.1
 * (JPEG), §8.2.3 (JPEG-LS), §8.2.4 (JPEG 2000).  PS3.3 C.7.6.3 (Image Pixel
 * Module).
 *
 * Native frame layout, the common currency of every codec here: little-
 * endian samples of bits_allocated bits (8 or 16, or 32), color-by-pixel
 * (Planar Configuration 0) for samples_per_pixel == 3, frames back to back.
 *
 * Every size from the data set is checked with 64-bit arithmetic against
 * caps before use (SECURITY.md rules 1 and 8): rows, columns, samples,
 * bits and frames that do not add up are refused, never trusted.
 *
 * Thread-safety: all functions are reentrant; no global state.
 */
#ifndef AG_CODEC_H
#define AG_CODEC_H

#include "dicom/dicom.h"

#define CODEC_MAX_FRAME_BYTES ((uint64_t)1 << 31)   /* 2 GiB per frame */
#define CODEC_MAX_FRAMES 100000u

typedef struct CodecImage {
    uint32_t rows, columns;
    uint32_t frames;                 /* Number of Frames, 1 if absent */
    uint16_t samples_per_pixel;      /* 1 or 3 (4 for ARGB/CMYK: refused) */
    uint16_t bits_allocated;         /* 1, 8, 16, 32 */
    uint16_t bits_stored, high_bit;
    bool is_signed;                  /* Pixel Representation 1 */
    uint16_t planar_configuration;   /* 0 by pixel, 1 by plane */
    char photometric[17];            /* MONOCHROME2, RGB, YBR_FULL, ... */
} CodecImage;

/** Describe the image of a data set (PS3.3 C.7.6.3) and validate it. */
int codec_image_from_dataset(const DicomDataset *ds, CodecImage *out,
                             AgError *err);

/** Bytes of one native frame (bits_allocated 1 packs 8 pixels/byte). */
uint64_t codec_frame_size(const CodecImage *im);

/** Can this transfer syntax be decoded / encoded here? */
bool codec_can_decode(const char *ts_uid);
bool codec_can_encode(const char *ts_uid);

/*
 * The compressed bytes of frame i of encapsulated pixel data (PS3.5 A.4):
 * located through the Extended Offset Table if present, else the Basic
 * Offset Table, else one fragment per frame when fragments == frames, else
 * (single frame) all fragments.  Fragments of one frame are concatenated
 * into *out (heap buffer, caller ag_free()s) — unless the frame is one
 * fragment, where *out points into the element (borrowed) and *owned is
 * false.  Offsets pointing outside the data are refused.  Requires the
 * fragments to be loaded (DICOM_EL_NOT_LOADED is AG_ERR_INVALID).
 */
int codec_frame_bytes(const DicomDataset *ds, const DicomElement *pixel,
                      uint32_t frames, uint32_t i, const uint8_t **out,
                      size_t *len, bool *owned, AgError *err);

/**
 * Decode one frame in transfer syntax ts_uid into out, which holds exactly
 * codec_frame_size(im) bytes (native layout above).  A stream that decodes
 * to another size, bit depth or component count than im says is an error
 * (AG_ERR_PARSE), never a partial buffer.  YBR_FULL_422 / YBR_ICT / YBR_RCT
 * JPEG output is converted to RGB (im->photometric is left alone: callers
 * set the output's Photometric Interpretation from codec_decoded_photometric).
 */
int codec_decode_frame(const char *ts_uid, const CodecImage *im,
                       const uint8_t *in, size_t in_len, uint8_t *out,
                       size_t out_len, AgError *err);

/** Photometric Interpretation of a frame after codec_decode_frame. */
const char *codec_decoded_photometric(const char *ts_uid,
                                      const CodecImage *im);

/**
 * Encode one native frame (layout above) in ts_uid, appending the
 * compressed bytes to out (one fragment's worth; padded to even length).
 * Lossless syntaxes must round-trip bit-exactly.
 */
int codec_encode_frame(const char *ts_uid, const CodecImage *im,
                       const uint8_t *in, size_t in_len, AgBuf *out,
                       AgError *err);

/**
 * Transcode a whole file in place to ts_uid: decode every frame (from the
 * source syntax, which may be native), encode into the target (or write
 * native pixel data), replace Pixel Data, fix Photometric Interpretation,
 * Planar Configuration and, for lossy targets, Lossy Image Compression
 * (0028,2110/2112/2114), and set f->ts_uid/f->ts.  All allocations in the
 * dataset's arena.  The file must have been read with values loaded.
 */
int codec_transcode(DicomFile *f, const char *ts_uid, AgError *err);

#endif
