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

/** codec_decode_frame in this process, whatever codec_isolate_decoders
 *  says (the helper processes, tests, command-line tools). */
int codec_decode_frame_local(const char *ts_uid, const CodecImage *im,
                             const uint8_t *in, size_t in_len, uint8_t *out,
                             size_t out_len, AgError *err);

/** From now on codec_decode_frame hands compressed frames to the helper
 *  processes (codec_decode_frame_isolated; configure the pool first). */
void codec_isolate_decoders(bool on);

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

/* ==== Rendering ===========================================================
 *
 * One frame of an image to an 8-bit PNG or JPEG (render.c): what WADO-RS
 * `rendered` and `thumbnail` (PS3.18 §8.3.5, §10.4.1.1.3) and WADO-URI
 * serve, and what `agora render` writes.  The Pixel Transformation
 * Sequence of PS3.4 Annex N.2:
 *
 *   grayscale  stored value (masked to Bits Stored, sign-extended for Pixel
 *              Representation 1) -> Modality LUT (Modality LUT Sequence,
 *              else Rescale Slope/Intercept; PS3.3 C.11.1) -> VOI LUT (the
 *              requested window, else the first Window Center/Width, else
 *              the VOI LUT Sequence, else the frame's min..max; functions
 *              LINEAR, LINEAR_EXACT, SIGMOID; C.11.2) -> Presentation LUT
 *              (Sequence or Shape INVERSE; C.11.6) and MONOCHROME1
 *              inversion -> 8 bits.  Enhanced multi-frame images take
 *              rescale and window from their Per-frame or Shared
 *              Functional Groups (C.7.6.16).
 *   colour     RGB, YBR_FULL, YBR_FULL_422 (C.7.6.3.1.2; native 4:2:2 is
 *              widened), PALETTE COLOR with 8- or 16-bit entries
 *              (C.7.6.3.1.5/6; segmented palettes are AG_ERR_UNSUPPORTED),
 *              planar configuration 0 or 1; samples above 8 bits scaled.
 *
 * Then the source region is cut out (a negative width or height mirrors
 * it), scaled to fit the viewport keeping its aspect ratio (area
 * averaging when shrinking, bilinear when enlarging), and encoded (libspng,
 * TurboJPEG).
 *
 * Memory: one frame.  Values the reader left in the source
 * (DICOM_EL_NOT_LOADED: pixel data, fragments, LUT data) are read through
 * a DicomBulkSource, only those of the frame asked for — for encapsulated
 * pixel data only that frame's fragments — so a 2,000-frame cine costs
 * one frame.  All working memory comes from one arena per call, released
 * before return.
 */

#define CODEC_RENDER_MAX_SIZE 8192u          /* viewport cap, each side */
#define CODEC_RENDER_DEFAULT_QUALITY 90      /* JPEG */

typedef enum CodecRenderFormat {
    CODEC_RENDER_JPEG = 0,
    CODEC_RENDER_PNG,
} CodecRenderFormat;

/* VOI LUT Function (0028,1056), PS3.3 C.11.2.1.2 and C.11.2.1.3. */
typedef enum CodecVoiFunction {
    CODEC_VOI_LINEAR = 0,
    CODEC_VOI_LINEAR_EXACT,
    CODEC_VOI_SIGMOID,
} CodecVoiFunction;

typedef struct CodecRenderParams {
    CodecRenderFormat format;
    int quality;                 /* JPEG 1..100; 0 = 90 */
    /* Viewport: the picture is scaled to fit inside width x height;
     * 0 leaves that side free (one side alone keeps the aspect ratio);
     * both 0 = the source region's own size.  At most 8192 each. */
    uint32_t width, height;
    bool upscale;                /* false: never larger than the source */
    /* An explicit window (grayscale only; colour ignores it). */
    bool window;
    double window_center, window_width;
    CodecVoiFunction function;
    /* A source region in pixels (PS3.18 viewport sx,sy,sw,sh), clipped to
     * the image; negative sw / sh mirror it horizontally / vertically. */
    bool region;
    int64_t sx, sy, sw, sh;
} CodecRenderParams;

/** Defaults: JPEG, quality 90, source size, upscale allowed, no window. */
void codec_render_params_init(CodecRenderParams *p);

/**
 * Parse "center,width[,function]" (PS3.18 §8.3.5.1.4 `window`; function
 * linear, linear-exact or sigmoid, any case, LINEAR_EXACT too) into p.
 * AG_ERR_INVALID with a message naming the problem for anything else,
 * including a width the function does not allow.
 */
int codec_render_parse_window(const char *text, CodecRenderParams *p,
                              AgError *err);

/** A VOI LUT Function name (as above) to its value; AG_ERR_INVALID. */
int codec_voi_function_parse(const char *s, CodecVoiFunction *out);

/** Width allowed for the function: >= 1 for LINEAR, > 0 otherwise. */
bool codec_voi_width_valid(CodecVoiFunction fn, double width);

/**
 * The VOI LUT function applied to one value x, exactly as PS3.3 states it
 * (C.11.2.1.2.1 LINEAR with its -0.5 and -1 terms, C.11.2.1.3.2
 * LINEAR_EXACT, C.11.2.1.3.1 SIGMOID), unrounded, in [ymin, ymax].  The
 * width must be valid for the function.
 */
double codec_voi_apply(CodecVoiFunction fn, double center, double width,
                       double x, double ymin, double ymax);

/**
 * codec_image_from_dataset as rendering needs it: the same checks, with
 * PALETTE COLOR (whose defined term has a space) accepted, and attributes
 * that do not add up reported as AG_ERR_PARSE (the data's fault, where
 * AG_ERR_INVALID is the caller's).  For callers that count frames before
 * rendering them.
 */
int codec_render_image(const DicomDataset *ds, CodecImage *out,
                       AgError *err);

/** Output size for a source region of sw x sh under p's viewport. */
void codec_render_fit(uint32_t sw, uint32_t sh, const CodecRenderParams *p,
                      uint32_t *ow, uint32_t *oh);

/**
 * Render frame `frame` (0-based) of the image in f to p->format, appending
 * the encoded bytes to out (nothing is appended on error).
 *
 * f      a file read with or without its bulk values (borrowed); its
 *        ts_uid / ts say how the pixel data is encoded
 * bulk   reads values left in the source (offsets of the original
 *        stream); may be NULL when everything is loaded
 *
 * Errors: AG_ERR_INVALID (bad parameters: quality, viewport, window,
 * region; or values not loaded and no bulk source), AG_ERR_NOTFOUND (no such frame), AG_ERR_UNSUPPORTED (no pixel
 * data, a photometric interpretation, palette or transfer syntax not
 * rendered), AG_ERR_PARSE (pixel data, LUTs or offsets that do not add
 * up), AG_ERR_LIMIT / AG_ERR_NOMEM, or the bulk source's error.
 * Thread-safe (no shared state).
 */
int codec_render_frame(const DicomFile *f, const DicomBulkSource *bulk,
                       uint32_t frame, const CodecRenderParams *p,
                       AgBuf *out, AgError *err);


/* ==== Decoding at arm's length ============================================
 *
 * Compressed frames come from outside, and image decoders (OpenJPEG above
 * all) have a long history of memory-safety bugs.  codec_decode_frame_
 * isolated() runs codec_decode_frame() in a pool of helper processes
 * (sandbox.c; SECURITY.md rule 8), so that a decoder bug can neither take
 * the archive down nor read another patient's data.
 *
 * Helpers are this executable started again (fork + exec through
 * posix_spawn, of /proc/self/exe unless configured) as `PROG codec-helper`:
 * a program that uses the pool must call codec_sandbox_helper_main() when
 * its first argument is "codec-helper" (agora does, hidden; so do the unit
 * tests and bench/codec_bench).  Started lazily, reused across frames,
 * replaced when one dies.  A helper closes every other descriptor, becomes
 * nobody when started as root, drops every capability, sets RLIMIT_CORE 0,
 * RLIMIT_NOFILE, RLIMIT_NPROC 0 and PR_SET_NO_NEW_PRIVS, and installs a
 * seccomp filter (libseccomp) allowing only read/write on its socket,
 * memory management (never executable), the clock, futex and exit: it
 * cannot open a file or a socket or start a process.  Where seccomp is unavailable it logs once
 * (warn) and goes on with the rest.  RLIMIT_AS is memory_limit + 5 x the
 * frame buffers it was started for (64 MiB; a larger frame gets a helper
 * of its own; no RLIMIT_AS in ASan builds), RLIMIT_CPU max(60 s, 4 x the
 * deadline) over its life; where the parent may (same user or
 * CAP_SYS_RESOURCE) it tightens them before each frame to memory_limit +
 * the frame's buffers + 4 x its output, and to the deadline.
 *
 * Frames travel through shared memory (a memfd per helper, one copy in and
 * one out); requests and replies are fixed-size messages on a socketpair,
 * every reply checked against its request.  A helper that crashes, misses
 * the per-frame deadline or answers out of protocol is killed and replaced,
 * and that frame fails with AG_ERR_PARSE ("decoder failed: helper killed by
 * signal 11 (SIGSEGV): ..."); the caller and the other frames go on.  (A
 * helper found dead when its frame is sent — killed while idle — is not
 * that frame's doing: the frame is tried once more on a fresh helper.)
 *
 * Thread-safety: every function may be called from any thread.  At most
 * `helpers` frames are decoded at once; further callers wait for a helper.
 * The pool is process-global state (the one exception in this module).
 */

#include <sys/types.h>

#define CODEC_SANDBOX_MAX_HELPERS 64u
#define CODEC_SANDBOX_DEFAULT_HELPERS 2u
#define CODEC_SANDBOX_DEFAULT_TIMEOUT_MS 10000u
#define CODEC_SANDBOX_DEFAULT_MEMORY ((uint64_t)1 << 30)   /* 1 GiB */

typedef struct CodecSandboxConfig {
    unsigned helpers;          /* pool size, 1..64; 0 = 2 */
    unsigned timeout_ms;       /* per-frame deadline; 0 = 10 s */
    uint64_t memory_limit;     /* RLIMIT_AS base; 0 = 1 GiB */
    const char *helper_path;   /* absolute; NULL = /proc/self/exe (copied) */
} CodecSandboxConfig;

typedef struct CodecSandboxStats {
    uint64_t frames;           /* jobs given to helpers */
    uint64_t failures;         /* helpers killed: crash, timeout, protocol */
    uint64_t starts;           /* helpers started */
    bool seccomp;              /* the last helper started runs under it */
} CodecSandboxStats;

/** The defaults above. */
void codec_sandbox_config_init(CodecSandboxConfig *c);

/**
 * Set the pool's parameters (optional: the defaults apply otherwise).
 * Stops the running helpers (waiting for their frames); new ones start
 * with the new settings on demand.  AG_ERR_INVALID for values out of range.
 */
int codec_sandbox_configure(const CodecSandboxConfig *c, AgError *err);

/** Stop every helper (waits for frames being decoded).  The pool starts
 * again on the next isolated decode.  Call before exit. */
void codec_sandbox_shutdown(void);

/**
 * codec_decode_frame() in a helper process, with the same contract: out
 * holds exactly codec_frame_size(im) bytes and is written only on AG_OK.
 * Native (uncompressed) syntaxes are copied in-process: no decoder runs.
 * Errors: the decoder's own (AG_ERR_PARSE, AG_ERR_UNSUPPORTED, ...) as it
 * reported them; AG_ERR_PARSE "decoder failed: ..." when the helper
 * crashed, timed out or broke the protocol; AG_ERR_IO when no helper can
 * be started.
 */
int codec_decode_frame_isolated(const char *ts_uid, const CodecImage *im,
                                const uint8_t *in, size_t in_len,
                                uint8_t *out, size_t out_len, AgError *err);

/** Counters since the process started. */
void codec_sandbox_stats(CodecSandboxStats *out);

/** Process id of helper i (0..63), 0 when not running.  For tests. */
pid_t codec_sandbox_helper_pid(unsigned i);

/**
 * The body of `PROG codec-helper AS_LIMIT CPU_LIMIT` (argv[0] is
 * "codec-helper"; the pool passes the limits): serve decode requests on
 * descriptors 3 and 4 until the parent goes away.  Returns (status 2) only
 * when started by hand without them; otherwise the process ends inside.
 */
int codec_sandbox_helper_main(int argc, char **argv);

#endif
