/*
 * fuzz.h — what every libFuzzer target here shares: the entry point's
 * prototype and CHECK, which turns a broken invariant into a crash that
 * libFuzzer reports (and keeps the input of), like a sanitizer finding.
 */
#ifndef AGORA_FUZZ_H
#define AGORA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)              \
    do {                      \
        if (!(x)) {           \
            __builtin_trap(); \
        }                     \
    } while (0)

#endif
