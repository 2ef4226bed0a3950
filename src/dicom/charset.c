/*
 * charset.c — Specific Character Set (0008,0005) to UTF-8 (PS3.5 §6.1,
 * PS3.3 C.12.1.1.2; worked examples in PS3.5 Annex H (Japanese), I (Korean),
 * J (UTF-8, GB18030) and K (GB 2312)).
 *
 * Model.  DICOM uses ISO/IEC 2022 in 8-bit form (PS3.5 §6.1.2.5): bytes
 * 0x21-0x7E are read through the G0 code element, bytes 0x80-0xFF through
 * G1, and escape sequences re-designate G0 or G1.  Value 1 of (0008,0005)
 * gives the initial designations; the single-byte terms without extensions
 * (ISO_IR 100 ...) are the same model with no escapes expected.  The value is
 * cut into runs of bytes read through one code element and each run goes to
 * its decoder: ASCII, Latin-1 and JIS X 0201 katakana are decoded here, the
 * rest by glibc iconv — JIS X 0208/0212 (G0, two bytes in 0x21-0x7E) after
 * setting the high bits to make EUC-JP, KS X 1001 and GB 2312 (G1, already
 * high) as EUC-KR and EUC-CN.  ISO_IR 192, GB18030 and GBK allow no code
 * extensions (PS3.5 §6.1.2.5.4 d) and are decoded as a whole.
 *
 * Reset (PS3.5 §6.1.2.5.3): the sets of value 1 are active again before a
 * control character (CR, LF, FF, TAB ...), before '\' in multi-valued VRs
 * and before '^' and '=' in PN.  An encoder must switch a multi-byte G0 back
 * explicitly before those delimiters (Annex H writes ESC ( B before every
 * '^'), so while JIS X 0208/0212 is in G0 the bytes 0x5C, 0x5E and 0x3D are
 * halves of kanji, not delimiters; a G1 designation, however, lapses at the
 * delimiter by itself (Annex I repeats ESC $ ) C after every '^').
 *
 * Leniency, for data seen in the wild:
 *  - With no G1 designated (default repertoire, "ISO 2022 IR 6", or value 1
 *    empty), bytes >= 0x80 are read in the first G1 set a later value names
 *    ("\ISO 2022 IR 149" + bare EUC-KR), else as ISO 8859-1, as DCMTK and
 *    pydicom do for the default repertoire.
 *  - Escape sequences are honoured under every term except the three
 *    stand-alone ones, even when (0008,0005) does not list the set they
 *    designate: decoding what the bytes say beats printing garbage.
 *  - JIS X 0201 Roman (ISO-IR 14, "ESC ( J") is read as ASCII: 0x5C must
 *    stay the value delimiter rather than become YEN SIGN.
 *  - "ISO_IR 6" (not a defined term) is accepted as the default repertoire.
 * Undecodable bytes become U+FFFD and decoding goes on; an unknown defined
 * term, however, is an error: the caller chooses the fallback.
 *
 * Output bound.  No byte of input yields more than 3 bytes of UTF-8 (U+FFFD
 * or a BMP character for one byte; at most 4 bytes, a supplementary GB18030
 * character, for 4 bytes), and bytes < 0x80 yield 1 byte unless escapes are
 * in play, so the output buffer is len + 2 * (bytes >= 0x80) + 1 bytes, or
 * 3 * len + 1 when the input contains ESC.
 */
#include "charset_int.h"
#include "dicom.h"

#include <errno.h>
#include <iconv.h>
#include <inttypes.h>
#include <pthread.h>
#include <string.h>

/* ---- code elements (PS3.3 Tables C.12-2 to C.12-5) --------------------- */

typedef enum CsSet {
    SET_NONE = 0,
    SET_ASCII,      /* ISO-IR 6 */
    SET_ROMAJI,     /* ISO-IR 14, JIS X 0201 Roman: read as ASCII */
    SET_KATAKANA,   /* ISO-IR 13, JIS X 0201 Katakana */
    SET_LATIN1,     /* ISO-IR 100 */
    SET_LATIN2,     /* ISO-IR 101 */
    SET_LATIN3,     /* ISO-IR 109 */
    SET_LATIN4,     /* ISO-IR 110 */
    SET_CYRILLIC,   /* ISO-IR 144 */
    SET_ARABIC,     /* ISO-IR 127 */
    SET_GREEK,      /* ISO-IR 126 */
    SET_HEBREW,     /* ISO-IR 138 */
    SET_LATIN5,     /* ISO-IR 148 */
    SET_LATIN9,     /* ISO-IR 203 */
    SET_THAI,       /* ISO-IR 166, TIS 620-2533 */
    SET_JISX0208,   /* ISO-IR 87 */
    SET_JISX0212,   /* ISO-IR 159 */
    SET_KSX1001,    /* ISO-IR 149 */
    SET_GB2312,     /* ISO-IR 58 */
    SET_COUNT
} CsSet;

/* How an undecodable sequence is skipped (see bad_len()). */
typedef enum Skip {
    SKIP_BYTE,      /* single-byte sets: one byte */
    SKIP_EUC,       /* EUC-KR, EUC-CN: a pair of 0xA1-0xFE bytes */
    SKIP_EUCJP,     /* the EUC-JP we build: 2 bytes, 3 after SS3 (0x8F) */
    SKIP_GB,        /* GBK and GB18030: 1, 2 or 4 bytes */
} Skip;

typedef struct SetInfo {
    bool g1;            /* designated to G1 (else G0) */
    bool wide;          /* two bytes per character */
    const char *iconv;  /* iconv source encoding; NULL: decoded here */
} SetInfo;

static const SetInfo SETS[SET_COUNT] = {
    [SET_ASCII] = {false, false, NULL},
    [SET_ROMAJI] = {false, false, NULL},
    [SET_KATAKANA] = {true, false, NULL},
    [SET_LATIN1] = {true, false, NULL},
    [SET_LATIN2] = {true, false, "ISO-8859-2"},
    [SET_LATIN3] = {true, false, "ISO-8859-3"},
    [SET_LATIN4] = {true, false, "ISO-8859-4"},
    [SET_CYRILLIC] = {true, false, "ISO-8859-5"},
    [SET_ARABIC] = {true, false, "ISO-8859-6"},
    [SET_GREEK] = {true, false, "ISO-8859-7"},
    [SET_HEBREW] = {true, false, "ISO-8859-8"},
    [SET_LATIN5] = {true, false, "ISO-8859-9"},
    [SET_LATIN9] = {true, false, "ISO-8859-15"},
    [SET_THAI] = {true, false, "TIS-620"},
    [SET_JISX0208] = {false, true, "EUC-JP"},
    [SET_JISX0212] = {false, true, "EUC-JP"},
    [SET_KSX1001] = {true, true, "EUC-KR"},
    [SET_GB2312] = {true, true, "EUC-CN"},
};

/* Escape sequences (the bytes after ESC), PS3.3 Tables C.12-3 and C.12-4. */
static const struct {
    const char *seq;
    CsSet set;
} ESCAPES[] = {
    {"(B", SET_ASCII},    {"(J", SET_ROMAJI},   {")I", SET_KATAKANA},
    {"-A", SET_LATIN1},   {"-B", SET_LATIN2},   {"-C", SET_LATIN3},
    {"-D", SET_LATIN4},   {"-L", SET_CYRILLIC}, {"-G", SET_ARABIC},
    {"-F", SET_GREEK},    {"-H", SET_HEBREW},   {"-M", SET_LATIN5},
    {"-b", SET_LATIN9},   {"-T", SET_THAI},     {"$B", SET_JISX0208},
    {"$(D", SET_JISX0212}, {"$)C", SET_KSX1001}, {"$)A", SET_GB2312},
    /* Not in DICOM, but ISO 2022 spellings of JIS X 0208 that Japanese
     * encoders emit: the 1978 edition and the long form. */
    {"$@", SET_JISX0208}, {"$(B", SET_JISX0208},
};

/* ---- defined terms ---------------------------------------------------- */

typedef enum Standalone {
    SA_NONE = 0,    /* ISO 2022 model */
    SA_UTF8,        /* ISO_IR 192 */
    SA_GB18030,
    SA_GBK,
} Standalone;

typedef struct Term {
    const char *name;
    CsSet g0, g1;           /* designated by the term */
    Standalone standalone;
} Term;

static const Term TERMS[] = {
    /* Table C.12-2: single-byte, without code extensions */
    {"ISO_IR 100", SET_ASCII, SET_LATIN1, SA_NONE},
    {"ISO_IR 101", SET_ASCII, SET_LATIN2, SA_NONE},
    {"ISO_IR 109", SET_ASCII, SET_LATIN3, SA_NONE},
    {"ISO_IR 110", SET_ASCII, SET_LATIN4, SA_NONE},
    {"ISO_IR 144", SET_ASCII, SET_CYRILLIC, SA_NONE},
    {"ISO_IR 127", SET_ASCII, SET_ARABIC, SA_NONE},
    {"ISO_IR 126", SET_ASCII, SET_GREEK, SA_NONE},
    {"ISO_IR 138", SET_ASCII, SET_HEBREW, SA_NONE},
    {"ISO_IR 148", SET_ASCII, SET_LATIN5, SA_NONE},
    {"ISO_IR 203", SET_ASCII, SET_LATIN9, SA_NONE},
    {"ISO_IR 13", SET_ROMAJI, SET_KATAKANA, SA_NONE},
    {"ISO_IR 166", SET_ASCII, SET_THAI, SA_NONE},
    /* Not a defined term; written by enough devices to accept. */
    {"ISO_IR 6", SET_ASCII, SET_NONE, SA_NONE},
    /* Table C.12-3: single-byte, with code extensions */
    {"ISO 2022 IR 6", SET_ASCII, SET_NONE, SA_NONE},
    {"ISO 2022 IR 100", SET_ASCII, SET_LATIN1, SA_NONE},
    {"ISO 2022 IR 101", SET_ASCII, SET_LATIN2, SA_NONE},
    {"ISO 2022 IR 109", SET_ASCII, SET_LATIN3, SA_NONE},
    {"ISO 2022 IR 110", SET_ASCII, SET_LATIN4, SA_NONE},
    {"ISO 2022 IR 144", SET_ASCII, SET_CYRILLIC, SA_NONE},
    {"ISO 2022 IR 127", SET_ASCII, SET_ARABIC, SA_NONE},
    {"ISO 2022 IR 126", SET_ASCII, SET_GREEK, SA_NONE},
    {"ISO 2022 IR 138", SET_ASCII, SET_HEBREW, SA_NONE},
    {"ISO 2022 IR 148", SET_ASCII, SET_LATIN5, SA_NONE},
    {"ISO 2022 IR 203", SET_ASCII, SET_LATIN9, SA_NONE},
    {"ISO 2022 IR 13", SET_ROMAJI, SET_KATAKANA, SA_NONE},
    {"ISO 2022 IR 166", SET_ASCII, SET_THAI, SA_NONE},
    /* Table C.12-4: multi-byte, with code extensions */
    {"ISO 2022 IR 87", SET_JISX0208, SET_NONE, SA_NONE},
    {"ISO 2022 IR 159", SET_JISX0212, SET_NONE, SA_NONE},
    {"ISO 2022 IR 149", SET_NONE, SET_KSX1001, SA_NONE},
    {"ISO 2022 IR 58", SET_NONE, SET_GB2312, SA_NONE},
    /* Table C.12-5: multi-byte, without code extensions */
    {"ISO_IR 192", SET_NONE, SET_NONE, SA_UTF8},
    {"GB18030", SET_NONE, SET_NONE, SA_GB18030},
    {"GBK", SET_NONE, SET_NONE, SA_GBK},
};

#define TERM_NAME_MAX 16    /* longest defined term is 15 characters */

/* (0008,0005) parsed: what decoding needs. */
typedef struct Charset {
    const char *name;       /* value 1 for messages ("" = default) */
    Standalone standalone;  /* from value 1 */
    CsSet g0, g1;           /* initial designations, restored at resets */
} Charset;

static const Term *term_find(const char *s, size_t n)
{
    if (n > TERM_NAME_MAX) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof TERMS / sizeof TERMS[0]; i++) {
        if (strlen(TERMS[i].name) == n && memcmp(TERMS[i].name, s, n) == 0) {
            return &TERMS[i];
        }
    }
    return NULL;
}

/* Quote an untrusted term for a message: at most 64 bytes, printable. */
static void term_quote(const char *s, size_t n, char out[68])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        out[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n > 64) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

/*
 * Parse the raw (0008,0005) value: backslash-separated terms, each trimmed
 * of spaces (PS3.5 §6.2: CS values may be padded).  An empty value 1 means
 * the default repertoire (PS3.3 C.12.1.1.2); empty later values are
 * ignored.  Every term must be known.
 */
static int charset_parse(const char *cs, Charset *out, AgError *err)
{
    *out = (Charset){"", SA_NONE, SET_ASCII, SET_NONE};
    if (cs == NULL) {
        cs = "";
    }
    CsSet g1_later = SET_NONE;  /* first G1 set of values 2..n */
    size_t index = 0;
    const char *p = cs;
    for (;;) {
        const char *end = strchr(p, '\\');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (n > 0 && s[0] == ' ') {
            s++;
            n--;
        }
        while (n > 0 && s[n - 1] == ' ') {
            n--;
        }
        if (n > 0) {
            const Term *t = term_find(s, n);
            if (t == NULL) {
                char q[68];
                term_quote(s, n, q);
                return ag_error_set(err, AG_ERR_UNSUPPORTED,
                                    "specific character set: unknown "
                                    "defined term \"%s\" (value %zu)",
                                    q, index + 1);
            }
            if (index == 0) {
                out->name = t->name;
                out->standalone = t->standalone;
                /* A multi-byte G0 set is never the initial one: the
                 * delimiters must stay readable (see the header). */
                out->g1 = t->g1;
            } else if (g1_later == SET_NONE && t->g1 != SET_NONE) {
                g1_later = t->g1;
            }
        }
        if (end == NULL) {
            break;
        }
        p = end + 1;
        index++;
    }
    if (out->g1 == SET_NONE) {
        out->g1 = g1_later != SET_NONE ? g1_later : SET_LATIN1;
    }
    return AG_OK;
}

bool dicom_charset_supported(const char *charset)
{
    Charset cs;
    return charset_parse(charset, &cs, NULL) == AG_OK;
}

/* ---- iconv descriptor cache ------------------------------------------- */

/*
 * A few descriptors per thread, keyed by source encoding, evicted round
 * robin: a study rarely uses more than two sets.  iconv_t is not
 * thread-safe, hence per thread; a pthread key destructor closes them when
 * the thread exits.
 */
#define CD_SLOTS 8

typedef struct CdCache {
    const char *name[CD_SLOTS];     /* static strings from SETS; NULL=free */
    iconv_t cd[CD_SLOTS];
    unsigned next;                  /* slot to evict next */
    bool registered;                /* the key points at this cache */
} CdCache;

static _Thread_local CdCache tls_cache;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;
static bool cache_key_ok;

static void cache_close_all(CdCache *c)
{
    for (unsigned i = 0; i < CD_SLOTS; i++) {
        if (c->name[i] != NULL) {
            iconv_close(c->cd[i]);
            c->name[i] = NULL;
        }
    }
    c->next = 0;
}

static void cache_thread_exit(void *p)
{
    CdCache *c = p;
    cache_close_all(c);
    /* glibc has cleared the key; a later use (another key's destructor)
     * must register again so that it is cleaned up too. */
    c->registered = false;
}

static void cache_key_init(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_thread_exit) == 0;
}

void dicom__charset_cache_clear(void)
{
    cache_close_all(&tls_cache);
}

size_t dicom__charset_cache_count(void)
{
    size_t n = 0;
    for (unsigned i = 0; i < CD_SLOTS; i++) {
        n += tls_cache.name[i] != NULL;
    }
    return n;
}

/*
 * A descriptor from `name` to UTF-8, reset to its initial state.  *owned
 * is true when it could not be cached (no pthread key): close it after use.
 */
static int cd_get(const char *name, iconv_t *out, bool *owned, AgError *err)
{
    CdCache *c = &tls_cache;
    *owned = false;
    for (unsigned i = 0; i < CD_SLOTS; i++) {
        if (c->name[i] != NULL && strcmp(c->name[i], name) == 0) {
            iconv(c->cd[i], NULL, NULL, NULL, NULL);
            *out = c->cd[i];
            return AG_OK;
        }
    }
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1) {
        if (errno == EINVAL) {
            return ag_error_set(err, AG_ERR_UNSUPPORTED, "specific character "
                                "set: iconv cannot convert from %s", name);
        }
        return ag_error_errno(err, AG_ERR_NOMEM, "specific character set: "
                              "iconv_open %s", name);
    }
    if (!c->registered) {
        pthread_once(&cache_once, cache_key_init);
        c->registered = cache_key_ok && pthread_setspecific(cache_key, c) == 0;
    }
    if (!c->registered) {
        *out = cd;
        *owned = true;
        return AG_OK;
    }
    unsigned slot = c->next;
    c->next = (c->next + 1) % CD_SLOTS;
    if (c->name[slot] != NULL) {
        iconv_close(c->cd[slot]);
    }
    c->name[slot] = name;
    c->cd[slot] = cd;
    *out = cd;
    return AG_OK;
}

/* ---- output ----------------------------------------------------------- */

typedef struct Out {
    char *p;
    size_t len;
    size_t cap;         /* excluding the terminating NUL */
    bool overflow;      /* the bound was wrong: a bug, reported at the end */
} Out;

static void out_bytes(Out *o, const void *p, size_t n)
{
    if (n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void out_byte(Out *o, uint8_t b)
{
    if (o->len == o->cap) {
        o->overflow = true;
        return;
    }
    o->p[o->len++] = (char)b;
}

static void out_fffd(Out *o)
{
    out_bytes(o, "\xef\xbf\xbd", 3);
}

/* A BMP code point (all this file produces by hand). */
static void out_bmp(Out *o, uint32_t cp)
{
    uint8_t u[3];
    if (cp < 0x80) {
        out_byte(o, (uint8_t)cp);
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | (cp >> 6));
        u[1] = (uint8_t)(0x80 | (cp & 0x3f));
        out_bytes(o, u, 2);
    } else {
        u[0] = (uint8_t)(0xe0 | (cp >> 12));
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f));
        out_bytes(o, u, 3);
    }
}

/* ---- decoders --------------------------------------------------------- */

/*
 * Length of the undecodable sequence at p (n >= 1 bytes left), so that one
 * U+FFFD replaces one character, not each of its bytes, and the decoder
 * does not resynchronise in the middle of a double-byte character.
 */
static size_t bad_len(Skip skip, const uint8_t *p, size_t n)
{
    switch (skip) {
    case SKIP_EUC:
        return n >= 2 && p[0] >= 0xa1 && p[0] <= 0xfe && p[1] >= 0xa1 &&
                       p[1] <= 0xfe ? 2 : 1;
    case SKIP_EUCJP:
        /* Built by decode_jis(): always whole characters. */
        return p[0] == 0x8f ? (n < 3 ? n : 3) : (n < 2 ? n : 2);
    case SKIP_GB:
        if (p[0] < 0x81 || p[0] > 0xfe || n < 2) {
            return 1;
        }
        if (p[1] >= 0x30 && p[1] <= 0x39) {
            return n >= 4 && p[2] >= 0x81 && p[2] <= 0xfe && p[3] >= 0x30 &&
                           p[3] <= 0x39 ? 4 : 1;
        }
        return (p[1] >= 0x40 && p[1] <= 0xfe && p[1] != 0x7f) ? 2 : 1;
    case SKIP_BYTE:
        break;
    }
    return 1;
}

/* Decode n bytes with iconv; undecodable sequences become U+FFFD. */
static int decode_iconv(Out *o, const char *enc, Skip skip,
                        const uint8_t *in, size_t n, AgError *err)
{
    iconv_t cd = (iconv_t)-1;
    bool owned = false;
    int rc = cd_get(enc, &cd, &owned, err);
    if (rc != AG_OK) {
        return rc;
    }
    char *ip = (char *)(uintptr_t)in;   /* iconv's prototype lacks const */
    size_t il = n;
    while (il > 0) {
        char *op = o->p + o->len;
        size_t ol = o->cap - o->len;
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        o->len = (size_t)(op - o->p);
        if (r != (size_t)-1) {
            break;
        }
        if (errno == E2BIG) {
            o->overflow = true;
            break;
        }
        /* EILSEQ (invalid or unmapped) or EINVAL (truncated at the end) */
        size_t skip_n = bad_len(skip, (const uint8_t *)ip, il);
        out_fffd(o);
        ip += skip_n;
        il -= skip_n;
        iconv(cd, NULL, NULL, NULL, NULL);
    }
    if (owned) {
        iconv_close(cd);
    }
    return AG_OK;
}

/*
 * JIS X 0208 or 0212 in G0: pairs of bytes in 0x21-0x7E.  With the high
 * bits set they are EUC-JP (0212 behind SS3, 0x8F), which glibc decodes;
 * converted a chunk at a time through a stack buffer.  An odd byte left at
 * the end of the run is half a character: U+FFFD.
 */
#define JIS_CHUNK 128   /* pairs per iconv call */

static int decode_jis(Out *o, CsSet set, const uint8_t *in, size_t n,
                      AgError *err)
{
    uint8_t buf[3 * JIS_CHUNK];
    size_t i = 0;
    while (n - i >= 2) {
        size_t k = 0;
        while (n - i >= 2 && k + 3 <= sizeof buf) {
            if (set == SET_JISX0212) {
                buf[k++] = 0x8f;
            }
            buf[k++] = (uint8_t)(in[i] | 0x80);
            buf[k++] = (uint8_t)(in[i + 1] | 0x80);
            i += 2;
        }
        int rc = decode_iconv(o, "EUC-JP", SKIP_EUCJP, buf, k, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    if (i < n) {
        out_fffd(o);
    }
    return AG_OK;
}

/* A run of bytes >= 0x80 read through G1. */
static int decode_g1(Out *o, CsSet set, const uint8_t *in, size_t n,
                     AgError *err)
{
    switch (set) {
    case SET_LATIN1:
        for (size_t i = 0; i < n; i++) {
            out_bmp(o, in[i]);
        }
        return AG_OK;
    case SET_KATAKANA:
        /* JIS X 0201 0xA1-0xDF are U+FF61-U+FF9F, in order. */
        for (size_t i = 0; i < n; i++) {
            if (in[i] >= 0xa1 && in[i] <= 0xdf) {
                out_bmp(o, 0xff61u + (uint32_t)(in[i] - 0xa1));
            } else {
                out_fffd(o);
            }
        }
        return AG_OK;
    default:
        break;
    }
    const SetInfo *si = &SETS[set];
    return decode_iconv(o, si->iconv, si->wide ? SKIP_EUC : SKIP_BYTE, in, n,
                        err);
}

/*
 * An escape sequence at p[0] == ESC: ESC, up to 3 intermediate bytes
 * (0x20-0x2F) and a final byte (0x30-0x7E) (ISO/IEC 2022 §13.1).  Returns
 * the set it designates, or SET_NONE if unknown or malformed; *used is the
 * sequence's length (1, just the ESC, when malformed).
 */
static CsSet parse_escape(const uint8_t *p, size_t n, size_t *used)
{
    size_t k = 1;
    while (k < n && k <= 3 && p[k] >= 0x20 && p[k] <= 0x2f) {
        k++;
    }
    if (k >= n || p[k] < 0x30 || p[k] > 0x7e) {
        *used = 1;
        return SET_NONE;
    }
    *used = k + 1;
    for (size_t i = 0; i < sizeof ESCAPES / sizeof ESCAPES[0]; i++) {
        if (strlen(ESCAPES[i].seq) == k &&
            memcmp(ESCAPES[i].seq, p + 1, k) == 0) {
            return ESCAPES[i].set;
        }
    }
    return SET_NONE;
}

/* The ISO 2022 model: every term but the three stand-alone ones. */
static int decode_2022(Out *o, const Charset *cs, DicomVR vr,
                       const uint8_t *in, size_t len, AgError *err)
{
    const DicomVRInfo *info = dicom_vr_info(vr);
    bool multi = info != NULL && info->kind == DICOM_VRK_STRING;
    bool pn = vr == DICOM_VR_PN;
    CsSet g0 = cs->g0;
    CsSet g1 = cs->g1;
    size_t i = 0;
    while (i < len) {
        uint8_t b = in[i];
        if (b == 0x1b) {
            size_t used;
            CsSet set = parse_escape(in + i, len - i, &used);
            if (set == SET_NONE) {
                out_fffd(o);
            } else if (SETS[set].g1) {
                g1 = set;
            } else {
                g0 = set;
            }
            i += used;
            continue;
        }
        if (b < 0x20 || b == 0x7f) {
            g0 = cs->g0;    /* PS3.5 §6.1.2.5.3: before any control */
            g1 = cs->g1;
            out_byte(o, b);
            i++;
            continue;
        }
        size_t j = i + 1;
        int rc = AG_OK;
        if (b >= 0x80) {
            while (j < len && in[j] >= 0x80) {
                j++;
            }
            rc = decode_g1(o, g1, in + i, j - i, err);
        } else if (SETS[g0].wide && b != 0x20) {
            /* SPACE is SPACE in every G0 set; 0x5C etc. are not
             * delimiters here (see the header). */
            while (j < len && in[j] > 0x20 && in[j] < 0x7f) {
                j++;
            }
            rc = decode_jis(o, g0, in + i, j - i, err);
        } else {
            if ((b == '\\' && multi) || (pn && (b == '^' || b == '='))) {
                g0 = cs->g0;    /* before the delimiter */
                g1 = cs->g1;
            }
            out_byte(o, b);
        }
        if (rc != AG_OK) {
            return rc;
        }
        i = j;
    }
    return AG_OK;
}

/*
 * ISO_IR 192: copy well-formed UTF-8 (Unicode Table 3-7) and replace each
 * maximal ill-formed subpart with one U+FFFD (Unicode §3.9, "substitution
 * of maximal subparts", what browsers do).
 */
static void decode_utf8(Out *o, const uint8_t *in, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = in[i];
        if (b < 0x80) {
            out_byte(o, b);
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;   /* range of the second byte */
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
        } else if (b == 0xe0) {
            need = 2;
            lo = 0xa0;                  /* no overlongs */
        } else if (b == 0xed) {
            need = 2;
            hi = 0x9f;                  /* no surrogates */
        } else if (b >= 0xe1 && b <= 0xef) {
            need = 2;
        } else if (b == 0xf0) {
            need = 3;
            lo = 0x90;
        } else if (b >= 0xf1 && b <= 0xf3) {
            need = 3;
        } else if (b == 0xf4) {
            need = 3;
            hi = 0x8f;                  /* nothing above U+10FFFF */
        } else {
            out_fffd(o);                /* 80-C1, F5-FF never start one */
            i++;
            continue;
        }
        size_t k = 1;
        while (k <= need && i + k < n && in[i + k] >= lo && in[i + k] <= hi) {
            lo = 0x80;
            hi = 0xbf;
            k++;
        }
        if (k == need + 1) {
            out_bytes(o, in + i, k);
        } else {
            out_fffd(o);
        }
        i += k;
    }
}

/* ---- entry point ------------------------------------------------------- */

int dicom_charset_to_utf8(const char *charset, DicomVR vr,
                          const uint8_t *in, size_t len, AgArena *a,
                          char **out, size_t *out_len, AgError *err)
{
    Charset cs;
    int rc = charset_parse(charset, &cs, err);
    if (rc != AG_OK) {
        return rc;
    }
    size_t high = 0;
    bool esc = false;
    for (size_t i = 0; i < len; i++) {
        high += in[i] >> 7;
        esc |= in[i] == 0x1b;
    }
    /* Fast path: ASCII reads the same in every supported set (G0 starts as
     * ASCII, and the stand-alone sets are ASCII-compatible). */
    if (high == 0 && !esc) {
        char *s = ag_arena_strndup(a, len > 0 ? (const char *)in : "", len);
        if (s == NULL) {
            return ag_error_set(err, ag_arena_fail_code(a), "specific "
                                "character set: no room for a %zu-byte "
                                "value", len);
        }
        *out = s;
        if (out_len != NULL) {
            *out_len = len;
        }
        return AG_OK;
    }
    uint64_t cap;   /* see "Output bound" at the top */
    bool ok = (esc && cs.standalone == SA_NONE)
                  ? !ag_mul_overflow(len, 3, &cap)
                  : !ag_mul_overflow(high, 2, &cap) &&
                        !ag_add_overflow(cap, len, &cap);
    if (!ok || cap >= SIZE_MAX) {
        return ag_error_set(err, AG_ERR_LIMIT, "specific character set: "
                            "%zu-byte value too long to decode", len);
    }
    Out o = {ag_arena_alloc(a, (size_t)cap + 1), 0, (size_t)cap, false};
    if (o.p == NULL) {
        return ag_error_set(err, ag_arena_fail_code(a), "specific character "
                            "set: no room for %" PRIu64 " bytes to decode a "
                            "%zu-byte value", cap + 1, len);
    }
    switch (cs.standalone) {
    case SA_UTF8:
        decode_utf8(&o, in, len);
        break;
    case SA_GB18030:
        rc = decode_iconv(&o, "GB18030", SKIP_GB, in, len, err);
        break;
    case SA_GBK:
        rc = decode_iconv(&o, "GBK", SKIP_GB, in, len, err);
        break;
    case SA_NONE:
        rc = decode_2022(&o, &cs, vr, in, len, err);
        break;
    }
    if (rc != AG_OK) {
        return rc;
    }
    if (o.overflow) {   /* unreachable if the bound above is right */
        return ag_error_set(err, AG_ERR_LIMIT, "specific character set "
                            "\"%s\": decoding a %zu-byte value overran its "
                            "%zu-byte bound", cs.name, len, o.cap);
    }
    o.p[o.len] = '\0';
    *out = o.p;
    if (out_len != NULL) {
        *out_len = o.len;
    }
    return AG_OK;
}
