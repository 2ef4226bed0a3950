/* test_util.h — helpers shared by the cmocka unit tests. */
#ifndef AG_TEST_UTIL_H
#define AG_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/core.h"

#include <string.h>

/* Little byte-builder for hand-made DICOM input (DCMTK tparser style). */
typedef struct TBuf {
    uint8_t b[1 << 18];
    size_t n;
} TBuf;

static inline void tb_bytes(TBuf *t, const void *p, size_t n)
{
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static inline void tb_u16(TBuf *t, uint16_t v)
{
    t->b[t->n++] = (uint8_t)v;
    t->b[t->n++] = (uint8_t)(v >> 8);
}

static inline void tb_u32(TBuf *t, uint32_t v)
{
    tb_u16(t, (uint16_t)v);
    tb_u16(t, (uint16_t)(v >> 16));
}

/* Explicit VR little endian element with a short (16-bit) length. */
static inline void tb_el16(TBuf *t, uint16_t g, uint16_t e, const char *vr,
                           const void *v, uint16_t len)
{
    tb_u16(t, g);
    tb_u16(t, e);
    tb_bytes(t, vr, 2);
    tb_u16(t, len);
    tb_bytes(t, v, len);
}

/* Explicit VR little endian element with a long (32-bit) length header. */
static inline void tb_el32(TBuf *t, uint16_t g, uint16_t e, const char *vr,
                           uint32_t len)
{
    tb_u16(t, g);
    tb_u16(t, e);
    tb_bytes(t, vr, 2);
    tb_u16(t, 0);
    tb_u32(t, len);
}

static inline void tb_item(TBuf *t, uint16_t e, uint32_t len)
{
    tb_u16(t, 0xfffe);
    tb_u16(t, e);
    tb_u32(t, len);
}

#endif
