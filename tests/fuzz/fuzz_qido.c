/*
 * fuzz_qido.c — libFuzzer target for QIDO-RS query strings (issue 6: "a
 * fuzz target for ... the query-string parser"): the input is split like a
 * query string ("k=v&k=v", percent-decoded the way the HTTP server does),
 * each parameter goes through web__qido_param (keys, limit/offset,
 * fuzzymatching, includefield), and the resulting identifier is run by
 * store_query against a real, small SQLite index at every level — so the
 * SQL builder (wildcards, ranges, UID lists, escapes) and the matching on
 * metadata see whatever an attacker can send.
 */
#include "fuzz.h"
#include "web/web_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static Store *store;              /* open for the life of the process */
static char dir[] = "/tmp/agora-fuzz-qido-XXXXXX";

static void open_store(void)
{
    if (mkdtemp(dir) == NULL) {
        abort();
    }
    StoreConfig cfg = {.data_dir = dir};
    AgError err;
    if (store_open(&cfg, &store, &err) != AG_OK) {
        abort();
    }
}

static int hex(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* In place: '+' is a space, %XX a byte (invalid escapes kept). */
static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p != '\0'; p++) {
        if (*p == '+') {
            *o++ = ' ';
        } else if (*p == '%' && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
            *o++ = (char)(hex(p[1]) * 16 + hex(p[2]));
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static int count(void *ctx, const DicomDataset *m)
{
    (void)m;
    return ++*(int *)ctx > 50;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (store == NULL) {
        open_store();
    }
    if (size < 1 || size > 4096) {
        return 0;
    }
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    AgArena *a = ag_arena_create(8 << 20);
    DicomDataset *keys = dicom_dataset_create(a);
    StoreQuery q = {.keys = keys, .level = (StoreLevel)(data[0] & 3)};
    char bad[160] = "";
    bool ok = keys != NULL;
    for (char *save = NULL, *kv = strtok_r(text, "&", &save);
         ok && kv != NULL; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq != NULL) {
            *eq = '\0';
        }
        unescape(kv);
        if (eq != NULL) {
            unescape(eq + 1);
        }
        ok = web__qido_param(keys, &q, kv, eq ? eq + 1 : NULL, bad,
                             sizeof bad) == AG_OK;
    }
    if (ok) {
        int n = 0;
        AgError err;
        q.fuzzy = q.fuzzy || (data[0] & 4);
        q.all_fields = (data[0] & 8) != 0;
        store_query(store, &q, count, &n, NULL, &err);
    }
    ag_arena_destroy(a);
    free(text);
    return 0;
}
