/*
 * core.h — the foundation every other layer uses (DESIGN.md §3, STYLE.md).
 *
 * Errors: fallible functions return AG_OK (0) or a negative AgErr and put the
 * details in a caller-owned AgError that never allocates.
 * Memory: AgArena is a region allocator with a byte budget; objects are never
 * freed one by one, the arena is destroyed as a whole.  Going over the budget
 * returns NULL and callers report AG_ERR_LIMIT, so memory per association or
 * request stays bounded.
 * Buffers: AgBuf is a growable byte buffer with a hard cap (curl's dynbuf).
 * Logging: ag_log() writes one key=value line to stderr.
 *
 * Thread-safety: an AgArena, AgBuf or AgError belongs to one thread at a time.
 * ag_log() may be called from any thread.
 */
#ifndef AG_CORE_H
#define AG_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_VERSION "0.1.0"
#define AG_PATH_MAX 4096

/* ---- errors ---------------------------------------------------------- */

typedef enum AgErr {
    AG_OK = 0,
    AG_ERR_NOMEM = -1,       /* allocation failed */
    AG_ERR_LIMIT = -2,       /* a configured cap or budget was exceeded */
    AG_ERR_PARSE = -3,       /* malformed input */
    AG_ERR_IO = -4,          /* read/write/fsync failed */
    AG_ERR_AGAIN = -5,       /* need more input */
    AG_ERR_NOTFOUND = -6,    /* no such object */
    AG_ERR_INVALID = -7,     /* bad argument or value */
    AG_ERR_UNSUPPORTED = -8, /* valid but not implemented */
    AG_ERR_EXISTS = -9,      /* object already exists */
    AG_ERR_EOF = -10,        /* clean end of input */
    AG_ERR_DENIED = -11,     /* not permitted to this principal */
} AgErr;

typedef struct AgError {
    int code;               /* an AgErr */
    char msg[256];          /* lowercase, factual, names the object */
    const char *file;       /* where it was set (static string) */
    int line;
} AgError;

/** Name of an error code ("parse error", ...); never NULL. */
const char *ag_err_name(int code);

/**
 * Record an error.  err may be NULL.  Returns code so that callers can write
 * `return ag_error_set(err, AG_ERR_PARSE, "...")`.
 */
#define ag_error_set(err, code, ...) \
    ag_error_set_at((err), __FILE__, __LINE__, (code), __VA_ARGS__)
int ag_error_set_at(AgError *err, const char *file, int line, int code,
                    const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** Like ag_error_set, with ": strerror(errno)" appended (errno read first). */
#define ag_error_errno(err, code, ...) \
    ag_error_errno_at((err), __FILE__, __LINE__, (code), __VA_ARGS__)
int ag_error_errno_at(AgError *err, const char *file, int line, int code,
                      const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** Prepend context ("reading x.dcm: ") to an existing message.  NULL ok. */
void ag_error_prefix(AgError *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void ag_error_clear(AgError *err);

/* ---- checked arithmetic (SECURITY.md rule 1) -------------------------- */

/** *out = a + b; returns true on overflow (then *out is unspecified). */
static inline bool ag_add_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

static inline bool ag_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

/* ---- allocation ------------------------------------------------------- */

/*
 * Every heap allocation in Agora goes through these so that tests can make
 * allocation number N fail (SQLite's faultsim, curl's torture tests).
 */
void *ag_malloc(size_t n);
void *ag_calloc(size_t count, size_t size);
void *ag_realloc(void *p, size_t n);
void ag_free(void *p);
char *ag_strdup(const char *s);

/**
 * Test hook: make the n-th allocation from now on fail (1 = the next one);
 * 0 turns the fault off.  Counts across threads.  Not for production code.
 */
void ag_test_fail_nth_alloc(long n);

/* ---- arenas ----------------------------------------------------------- */

typedef struct AgArena AgArena;

/**
 * Create an arena that will hand out at most budget bytes in total (0 means
 * no budget; use only for process-lifetime arenas).  Returns NULL on OOM.
 */
AgArena *ag_arena_create(size_t budget);

/** Free everything the arena handed out, after running its destructors. */
void ag_arena_destroy(AgArena *a);

/**
 * Allocate n bytes aligned to 16.  Returns NULL when out of memory or when
 * the budget would be exceeded; ag_arena_over_budget() tells which.
 */
void *ag_arena_alloc(AgArena *a, size_t n);
void *ag_arena_zalloc(AgArena *a, size_t n);
void *ag_arena_memdup(AgArena *a, const void *p, size_t n);
char *ag_arena_strdup(AgArena *a, const char *s);
char *ag_arena_strndup(AgArena *a, const char *s, size_t n);
char *ag_arena_printf(AgArena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/**
 * Grow an arena array: returns a new block of new_n elements with the first
 * old_n copied from old (old stays valid but is wasted until destroy).
 */
void *ag_arena_grow(AgArena *a, void *old, size_t old_n, size_t new_n,
                    size_t elem_size);

/** True if the last failed allocation failed for the budget, not for OOM. */
bool ag_arena_over_budget(const AgArena *a);

/** Bytes handed out so far (for budget checks before large allocations). */
size_t ag_arena_used(const AgArena *a);
size_t ag_arena_budget(const AgArena *a);

/** Run fn(ctx) when the arena is destroyed (LIFO).  AG_OK or AG_ERR_NOMEM. */
int ag_arena_on_destroy(AgArena *a, void (*fn)(void *), void *ctx);

/** AG_ERR_LIMIT or AG_ERR_NOMEM for a failed allocation from a. */
int ag_arena_fail_code(const AgArena *a);

/* ---- growable buffers ------------------------------------------------- */

typedef struct AgBuf {
    uint8_t *data;   /* heap, owned */
    size_t len;
    size_t cap;
    size_t max;      /* hard cap on len; 0 = SIZE_MAX */
} AgBuf;

void ag_buf_init(AgBuf *b, size_t max);
void ag_buf_deinit(AgBuf *b);
void ag_buf_reset(AgBuf *b);
/** Make room for n more bytes; AG_ERR_LIMIT past max, AG_ERR_NOMEM. */
int ag_buf_reserve(AgBuf *b, size_t n);
int ag_buf_append(AgBuf *b, const void *p, size_t n);
int ag_buf_append_str(AgBuf *b, const char *s);
int ag_buf_printf(AgBuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Take ownership of the data (NUL-terminated); b is reset. */
char *ag_buf_steal(AgBuf *b);

/* ---- logging ---------------------------------------------------------- */

typedef enum AgLogLevel {
    AG_LOG_DEBUG = 0,
    AG_LOG_INFO = 1,
    AG_LOG_WARN = 2,
    AG_LOG_ERROR = 3,
    AG_LOG_OFF = 4,
} AgLogLevel;

void ag_log_set_level(AgLogLevel level);
bool ag_log_enabled(AgLogLevel level);
/** One line: `ts=... level=... mod=... msg="..."`; control chars escaped. */
#define ag_log(level, mod, ...)                        \
    do {                                               \
        if (ag_log_enabled(level)) {                   \
            ag_log_write((level), (mod), __VA_ARGS__); \
        }                                              \
    } while (0)
void ag_log_write(AgLogLevel level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- fault injection (tests only) ------------------------------------- */

/**
 * True when the named fault point should fail now.  Points are armed by the
 * environment variable AGORA_FAULT="point:N[,point:N...]": the N-th time
 * (1-based) the point is reached it fails, once.  "point:*" fails every
 * time.  Without the variable this is one relaxed load.  Thread-safe.
 * Used by the blob and index write paths (SQLite's fault injection idea).
 */
bool ag_fault(const char *point);

/* ---- files ------------------------------------------------------------ */

/**
 * snprintf that reports truncation: AG_OK, or AG_ERR_LIMIT when the output
 * did not fit (out is then truncated but NUL-terminated).  For paths and
 * names built from bounded parts.
 */
int ag_fmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Read a whole file into a heap buffer (NUL appended, not counted), refusing
 * files larger than max bytes.  *out is ag_free()d by the caller.
 */
int ag_file_read_all(const char *path, size_t max, uint8_t **out,
                     size_t *len, AgError *err);

/** write(2) all n bytes, retrying on EINTR and short writes. */
int ag_write_all(int fd, const void *p, size_t n, AgError *err);

#endif
