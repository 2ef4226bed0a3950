/* log.c — one key=value line per event to stderr; control chars escaped. */
#include "core.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int current_level = AG_LOG_INFO;

void ag_log_set_level(AgLogLevel level)
{
    atomic_store(&current_level, (int)level);
}

bool ag_log_enabled(AgLogLevel level)
{
    return (int)level >= atomic_load(&current_level);
}

static const char *level_name(AgLogLevel level)
{
    switch (level) {
    case AG_LOG_DEBUG: return "debug";
    case AG_LOG_INFO: return "info";
    case AG_LOG_WARN: return "warn";
    default: return "error";
    }
}

void ag_log_write(AgLogLevel level, const char *mod, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    /* Escape control characters and quotes: a value from the wire must not
     * forge a log line (SECURITY.md rule 3). */
    char esc[sizeof msg * 4];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg;
         *p != '\0' && o + 5 < sizeof esc; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') {
            o += (size_t)snprintf(esc + o, sizeof esc - o, "\\x%02x", *p);
        } else {
            esc[o++] = (char)*p;
        }
    }
    esc[o] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr,
            "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s mod=%s msg=\"%s\"\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_name(level),
            mod, esc);
}
