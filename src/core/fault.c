/*
 * fault.c — deterministic fault injection for the write paths, armed from
 * the environment so that system tests can fail a chosen fsync or commit
 * of a real process (SQLite's test_vfs idea, curl's torture tests).
 */
#include "core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POINTS 8

typedef struct Point {
    char name[32];
    long fail_at;       /* 1-based hit to fail; -1 = every hit */
    atomic_long hits;
} Point;

static Point points[MAX_POINTS];
static int npoints;
static atomic_int armed = -1;   /* -1 unknown, 0 off, 1 on */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void parse_env(void)
{
    const char *env = getenv("AGORA_FAULT");
    if (env == NULL || env[0] == '\0') {
        atomic_store(&armed, 0);
        return;
    }
    char buf[256];
    strncpy(buf, env, sizeof buf - 1);
    buf[sizeof buf - 1] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save);
         tok != NULL && npoints < MAX_POINTS;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (colon == NULL || (size_t)(colon - tok) >= sizeof points[0].name) {
            continue;
        }
        Point *p = &points[npoints++];
        memcpy(p->name, tok, (size_t)(colon - tok));
        p->name[colon - tok] = '\0';
        p->fail_at = strcmp(colon + 1, "*") == 0 ? -1 : atol(colon + 1);
    }
    atomic_store(&armed, npoints > 0);
}

bool ag_fault(const char *point)
{
    if (atomic_load_explicit(&armed, memory_order_relaxed) == 0) {
        return false;
    }
    pthread_once(&once, parse_env);
    if (atomic_load(&armed) == 0) {
        return false;
    }
    for (int i = 0; i < npoints; i++) {
        if (strcmp(points[i].name, point) == 0) {
            long hit = atomic_fetch_add(&points[i].hits, 1) + 1;
            return points[i].fail_at < 0 || hit == points[i].fail_at;
        }
    }
    return false;
}
