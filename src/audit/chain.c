/*
 * chain.c — the keyed hash chain, and the small text helpers every part of
 * the module shares (UTC times, hex, UTF-8).
 *
 * The canonical encoding a record's hash covers is fixed here and must
 * never change for a released version tag ("agora.audit.v1"): a new
 * encoding needs a new tag, and verify would have to know both.
 */
#include "audit_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- the chain ---------------------------------------------------------- */

static void put_u64(crypto_generichash_state *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    crypto_generichash_update(h, b, sizeof b);
}

static void put_u32(crypto_generichash_state *h, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 8), (uint8_t)v};
    crypto_generichash_update(h, b, sizeof b);
}

/* Absent and empty differ; the length prefix keeps field boundaries
 * unambiguous, so no two records encode to the same bytes. */
static void put_str(crypto_generichash_state *h, const char *s)
{
    uint8_t present = s != NULL;
    crypto_generichash_update(h, &present, 1);
    if (s != NULL) {
        size_t n = strlen(s);
        put_u32(h, (uint32_t)n);
        crypto_generichash_update(h, (const uint8_t *)s, n);
    }
}

static void put_tag(crypto_generichash_state *h, const char *tag)
{
    crypto_generichash_update(h, (const uint8_t *)tag, strlen(tag) + 1);
}

void audit__hash_record(const uint8_t key[AUDIT_KEY_BYTES],
                        const AuditRecord *r,
                        const uint8_t prev[AUDIT_HASH_BYTES],
                        uint8_t out[AUDIT_HASH_BYTES])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, key, AUDIT_KEY_BYTES, AUDIT_HASH_BYTES);
    put_tag(&h, "agora.audit.v1");
    put_u64(&h, r->seq);
    put_str(&h, r->time);
    put_u32(&h, (uint32_t)r->ev.event);
    put_u32(&h, (uint32_t)r->ev.type);
    uint8_t action = (uint8_t)r->ev.action;
    crypto_generichash_update(&h, &action, 1);
    put_u32(&h, (uint32_t)r->ev.outcome);
    put_str(&h, r->ev.user);
    put_str(&h, r->ev.source);
    put_str(&h, r->ev.destination);
    put_str(&h, r->ev.patient_id);
    put_str(&h, r->ev.patient_name);
    put_str(&h, r->ev.study_uid);
    put_str(&h, r->ev.sop_class);
    put_u64(&h, r->ev.count);
    put_str(&h, r->ev.detail);
    crypto_generichash_update(&h, prev, AUDIT_HASH_BYTES);
    crypto_generichash_final(&h, out, AUDIT_HASH_BYTES);
}

void audit__head_mac(const uint8_t key[AUDIT_KEY_BYTES], uint64_t seq,
                     const char *time, const uint8_t hash[AUDIT_HASH_BYTES],
                     uint8_t out[AUDIT_HASH_BYTES])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, key, AUDIT_KEY_BYTES, AUDIT_HASH_BYTES);
    put_tag(&h, "agora.audit.head.v1");
    put_u64(&h, seq);
    put_str(&h, time);
    crypto_generichash_update(&h, hash, AUDIT_HASH_BYTES);
    crypto_generichash_final(&h, out, AUDIT_HASH_BYTES);
}

/* ---- hex ---------------------------------------------------------------- */

void audit__hex(const uint8_t *p, size_t n, char *out)
{
    static const char D[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = D[p[i] >> 4];
        out[2 * i + 1] = D[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

bool audit__unhex(const char *s, uint8_t *out, size_t n)
{
    if (s == NULL || strlen(s) != 2 * n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* ---- times -------------------------------------------------------------- */

static void format_time(time_t t, long usec, char out[AUDIT_TIME_SIZE])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[96];   /* room for any int, so the compiler sees no truncation */
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, usec);
    memcpy(out, tmp, AUDIT_TIME_SIZE - 1);
    out[AUDIT_TIME_SIZE - 1] = '\0';
}

void audit__now(char out[AUDIT_TIME_SIZE])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    format_time(ts.tv_sec, ts.tv_nsec / 1000, out);
}

/* Read exactly n digits at *p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return false;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int D[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : D[m - 1];
}

typedef struct Parsed {
    int y, mo, d, h, mi, s;
    long usec;
    int offset_min;     /* east of UTC */
} Parsed;

/* The date, with or without dashes (ISO 8601 extended or basic). */
static bool parse_date(const char **p, Parsed *t)
{
    if (!digits(p, 4, &t->y)) {
        return false;
    }
    bool dash = **p == '-';
    *p += dash;
    if (!digits(p, 2, &t->mo)) {
        return false;
    }
    if (dash && *(*p)++ != '-') {
        return false;
    }
    return digits(p, 2, &t->d) && t->y >= 1 && t->mo >= 1 && t->mo <= 12 &&
           t->d >= 1 && t->d <= days_in_month(t->y, t->mo);
}

/* Fraction digits (any count; the first six are kept); end fills the rest
 * of the microseconds with nines. */
static bool parse_fraction(const char **p, bool end, long *usec)
{
    int n = 0;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        if (n < 6) {
            v = v * 10 + (**p - '0');
            n++;
        }
        (*p)++;
    }
    if (n == 0) {
        return false;
    }
    for (; n < 6; n++) {
        v = v * 10 + (end ? 9 : 0);
    }
    *usec = v;
    return true;
}

static bool parse_clock(const char **p, bool end, Parsed *t)
{
    if (!digits(p, 2, &t->h) || *(*p)++ != ':' || !digits(p, 2, &t->mi)) {
        return false;
    }
    t->s = end ? 59 : 0;
    t->usec = end ? 999999 : 0;
    if (**p == ':') {
        (*p)++;
        if (!digits(p, 2, &t->s)) {
            return false;
        }
        t->usec = end ? 999999 : 0;
        if (**p == '.' || **p == ',') {
            (*p)++;
            if (!parse_fraction(p, end, &t->usec)) {
                return false;
            }
        }
    }
    return t->h <= 23 && t->mi <= 59 && t->s <= 60;
}

static bool parse_zone(const char **p, Parsed *t)
{
    if (**p == 'Z' || **p == 'z') {
        (*p)++;
        return true;
    }
    if (**p != '+' && **p != '-') {
        return true;    /* no zone: UTC */
    }
    int sign = *(*p)++ == '-' ? -1 : 1, hh, mm;
    if (!digits(p, 2, &hh)) {
        return false;
    }
    *p += **p == ':';
    if (!digits(p, 2, &mm) || hh > 23 || mm > 59) {
        return false;
    }
    t->offset_min = sign * (hh * 60 + mm);
    return true;
}

int audit_time_parse(const char *text, bool end, char out[AUDIT_TIME_SIZE],
                     AgError *err)
{
    Parsed t = {.h = end ? 23 : 0, .mi = end ? 59 : 0, .s = end ? 59 : 0,
                .usec = end ? 999999 : 0};
    const char *p = text != NULL ? text : "";
    bool ok = parse_date(&p, &t);
    if (ok && (*p == 'T' || *p == 't' || *p == ' ')) {
        p++;
        ok = parse_clock(&p, end, &t) && parse_zone(&p, &t);
    }
    if (!ok || *p != '\0') {
        return ag_error_set(err, AG_ERR_INVALID,
                            "time '%.64s' is not ISO 8601 (e.g. "
                            "2024-05-01 or 2024-05-01T09:30:00Z)",
                            text != NULL ? text : "");
    }
    if (t.s == 60) {
        t.s = 59;       /* a leap second sorts with the second before */
    }
    struct tm tm = {.tm_year = t.y - 1900, .tm_mon = t.mo - 1,
                    .tm_mday = t.d, .tm_hour = t.h, .tm_min = t.mi,
                    .tm_sec = t.s};
    time_t secs = timegm(&tm) - (time_t)t.offset_min * 60;
    struct tm check;
    gmtime_r(&secs, &check);
    if (check.tm_year + 1900 < 1 || check.tm_year + 1900 > 9999) {
        return ag_error_set(err, AG_ERR_INVALID,
                            "time '%.64s' is out of range", text);
    }
    format_time(secs, t.usec, out);
    return AG_OK;
}

/* ---- UTF-8 -------------------------------------------------------------- */

size_t audit__utf8_len(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        v = v << 6 | (p[i] & 0x3f);
    }
    /* overlong forms, UTF-16 surrogates and beyond U+10FFFF are invalid */
    if (v < min || (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff) {
        return 0;
    }
    *cp = v;
    return len;
}

static const char REPLACEMENT[] = "\xef\xbf\xbd";   /* U+FFFD */

/* Bytes the cleaned form of the character at s takes; *in its input. */
static size_t clean_char(const char *s, size_t n, size_t *in)
{
    uint32_t cp;
    size_t len = audit__utf8_len((const uint8_t *)s, n, &cp);
    *in = len != 0 ? len : 1;
    return len != 0 ? len : 3;
}

int audit__utf8_clean(AgBuf *b, const char *s, size_t max)
{
    size_t n = strlen(s), total = 0, in;
    for (size_t i = 0; i < n; i += in) {
        total += clean_char(s + i, n - i, &in);
    }
    size_t room = total <= max ? total : max - 3;   /* 3: the "..." */
    size_t used = 0;
    for (size_t i = 0; i < n; i += in) {
        size_t out = clean_char(s + i, n - i, &in);
        if (used + out > room) {
            break;
        }
        int rc = out == in ? ag_buf_append(b, s + i, in)
                           : ag_buf_append(b, REPLACEMENT, 3);
        if (rc != AG_OK) {
            return rc;
        }
        used += out;
    }
    return total <= max ? AG_OK : ag_buf_append(b, "...", 3);
}
