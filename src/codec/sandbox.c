/*
 * sandbox.c — decoding at arm's length (SECURITY.md rule 8): a pool of
 * helper processes that run codec_decode_frame() on untrusted compressed
 * frames, so that a decoder bug can neither take the archive down nor read
 * anything but the frame it was given.  The contract is in codec.h
 * ("Decoding at arm's length").
 *
 * Parent side.  Each helper is this executable started again (posix_spawn,
 * i.e. fork + exec, the only safe fork in a threaded server) as
 * `PROG codec-helper`, with two descriptors: 3 = its end of a socketpair
 * (SOCK_SEQPACKET: one message per request / reply) and 4 = a memfd that
 * both map, holding the compressed input and the decoded output.  A job is
 * one copy in, one request, one reply, one copy out.  Every reply is
 * checked against its request (exact size, magic, sequence number, status
 * range, output length); a helper that dies, misses the deadline or breaks
 * the protocol is killed and reaped, its frame fails with AG_ERR_PARSE
 * ("decoder failed: ...") and the next job starts a new helper.  The memfd
 * is sealed against shrinking, so a helper cannot truncate it under the
 * parent's mapping (which would be SIGBUS in the archive).
 *
 * Helper side (codec_sandbox_helper_main).  Before its first job it closes
 * every other descriptor, gives up root for nobody, sets RLIMIT_CORE 0,
 * RLIMIT_NOFILE 5, RLIMIT_NPROC 0, PR_SET_NO_NEW_PRIVS and PR_SET_DUMPABLE 0,
 * and installs a seccomp filter (libseccomp) that kills the process on any
 * system call but read/write on its socket (and write on stderr, where the
 * sanitizers report), memory management without PROT_EXEC, the clock,
 * futex, rt_sigreturn and exit: no open, no socket, no fork, no exec.
 *
 * Limits.  A helper sets the ceilings its parent passed on its command
 * line: RLIMIT_AS = the configured base + 5 x the shared memory it was
 * started for (64 MiB, or a bigger frame's: such a frame gets a helper of
 * its own), RLIMIT_CPU = max(60 s, 4 x the deadline) for its whole life;
 * the pool retires it before its busy time (wall time of its jobs, an
 * upper bound of its CPU time: it is single-threaded) could reach that.
 * Before every job the parent tightens both where it may (prlimit: same
 * user, or CAP_SYS_RESOURCE): RLIMIT_AS to the base + the job's buffers +
 * 4 x its output, RLIMIT_CPU to the deadline beyond the busy time.  The
 * per-frame wall-clock deadline is the bound that always holds.
 *
 * Test hooks: with AGORA_SANDBOX_TEST=1 in the environment of both sides,
 * the transfer syntaxes "test:crash", "test:spin", "test:alloc",
 * "test:open", "test:garbage", "test:short" and "test:exit" make the helper
 * misbehave on purpose, so that tests can prove each defence.  Without the
 * variable they are unknown transfer syntaxes.
 */
#include "codec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>
#include <seccomp.h>
#include <sys/syscall.h>

extern char **environ;

/* Built with ASan or TSan: they reserve terabytes of address space for
 * their shadow memory, so no RLIMIT_AS can be set. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SBX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SBX_SANITIZED 1
#endif
#endif
#ifndef SBX_SANITIZED
#define SBX_SANITIZED 0
#endif

#define SBX_FD_SOCK 3
#define SBX_FD_MEM 4
#define SBX_MAGIC_REQ 0x41475251u     /* "AGRQ" */
#define SBX_MAGIC_REP 0x41475250u     /* "AGRP" */
#define SBX_VERSION 1u
#define SBX_ALIGN 64u
#define SBX_MAP_STEP ((size_t)1 << 20)
/* A helper whose shared memory grew past this is retired after its job,
 * so one huge frame does not pin that much memory for good. */
#define SBX_MAP_KEEP ((size_t)256 << 20)
#define SBX_TEST_ALLOC_CAP ((size_t)2 << 30)
/* A helper is started for frames whose buffers fit SBX_ROOM_MIN (or the
 * frame at hand when larger): its address-space ceiling is the configured
 * base plus 5 x its room (the buffers, and 4 x them of working memory). */
#define SBX_ROOM_MIN ((uint64_t)64 << 20)
#define SBX_CPU_MIN 60u           /* CPU seconds over a helper's life */

enum {
    OP_READY = 0,           /* helper -> parent, once, after sandboxing */
    OP_DECODE = 1,
    OP_TEST_CRASH = 100,
    OP_TEST_SPIN,
    OP_TEST_ALLOC,
    OP_TEST_OPEN,
    OP_TEST_GARBAGE,
    OP_TEST_SHORT,
    OP_TEST_EXIT,
};

#define FLAG_SECCOMP 1u

typedef struct SbxRequest {
    uint32_t magic;
    uint32_t seq;
    uint32_t op;
    uint32_t version;
    uint64_t in_len;        /* input at offset 0 of the shared memory */
    uint64_t out_off;       /* output at out_off, SBX_ALIGN-aligned */
    uint64_t out_len;
    uint64_t map_len;       /* size of the shared memory for this job */
    CodecImage im;
    char ts_uid[65];
} SbxRequest;

typedef struct SbxReply {
    uint32_t magic;
    uint32_t seq;
    uint32_t op;
    uint32_t flags;         /* OP_READY: FLAG_SECCOMP */
    int32_t status;         /* an AgErr */
    uint32_t req_size;      /* OP_READY: sizeof(SbxRequest), a check that
                             * both sides were built alike */
    uint64_t out_len;
    char msg[256];          /* as AgError's */
} SbxReply;

static const struct {
    const char *name;
    uint32_t op;
} TEST_OPS[] = {
    {"test:crash", OP_TEST_CRASH}, {"test:spin", OP_TEST_SPIN},
    {"test:alloc", OP_TEST_ALLOC}, {"test:open", OP_TEST_OPEN},
    {"test:garbage", OP_TEST_GARBAGE}, {"test:short", OP_TEST_SHORT},
    {"test:exit", OP_TEST_EXIT},
};

static bool test_mode(void)
{
    const char *v = getenv("AGORA_SANDBOX_TEST");
    return v != NULL && strcmp(v, "1") == 0;
}

/* OP_DECODE, a test op (test mode only), or 0 for an unknown test name. */
static uint32_t op_for(const char *ts_uid, bool testing)
{
    if (strncmp(ts_uid, "test:", 5) != 0) {
        return OP_DECODE;
    }
    for (size_t i = 0; testing && i < sizeof TEST_OPS / sizeof *TEST_OPS;
         i++) {
        if (strcmp(ts_uid, TEST_OPS[i].name) == 0) {
            return TEST_OPS[i].op;
        }
    }
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ======================================================================
 * The helper
 * ====================================================================== */

typedef struct HelperState {
    uint8_t *map;
    size_t map_len;
    bool testing;
} HelperState;

static int add_rule(scmp_filter_ctx f, int nr)
{
    return seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0);
}

/* The allow-list; everything else kills the process (SIGSYS). */
static int install_seccomp(void)
{
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (f == NULL) {
        return -1;
    }
    int rc = 0;
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(read), 1,
                           SCMP_A0(SCMP_CMP_EQ, SBX_FD_SOCK));
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
                           SCMP_A0(SCMP_CMP_EQ, SBX_FD_SOCK));
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
                           SCMP_A0(SCMP_CMP_EQ, STDERR_FILENO));
    /* Memory: never executable. */
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                           SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                           SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    rc |= add_rule(f, SCMP_SYS(munmap));
    rc |= add_rule(f, SCMP_SYS(mremap));
    rc |= add_rule(f, SCMP_SYS(brk));
    rc |= add_rule(f, SCMP_SYS(madvise));
    rc |= add_rule(f, SCMP_SYS(futex));
    /* Reading (never setting) the signal stack: the C++ exceptions of
     * CharLS ask for it under ASan. */
    rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(sigaltstack), 1,
                           SCMP_A0(SCMP_CMP_EQ, 0));
    rc |= add_rule(f, SCMP_SYS(rt_sigreturn));
    rc |= add_rule(f, SCMP_SYS(clock_gettime));
    rc |= add_rule(f, SCMP_SYS(exit_group));
    rc |= add_rule(f, SCMP_SYS(exit));
    if (rc == 0) {
        rc = seccomp_load(f);
    }
    seccomp_release(f);
    return rc == 0 ? 0 : -1;
}

static void set_limit(int res, rlim_t v)
{
    struct rlimit r = {v, v};
    if (setrlimit(res, &r) != 0) {
        /* A lower hard limit inherited: keep it, lower the soft one. */
        getrlimit(res, &r);
        r.rlim_cur = v < r.rlim_max ? v : r.rlim_max;
        setrlimit(res, &r);
    }
}

/* Everything before the first job; returns the READY flags, or -1 when
 * the helper must not run (a privilege it cannot give up).  as_limit and
 * cpu_limit are the ceilings the parent chose (0: none). */
static int harden(uint64_t as_limit, unsigned long cpu_limit)
{
    close_range(SBX_FD_MEM + 1, ~0u, 0);
    set_limit(RLIMIT_CORE, 0);
    if (as_limit > 0 && !SBX_SANITIZED) {
        set_limit(RLIMIT_AS, (rlim_t)as_limit);
    }
    if (cpu_limit > 0) {
        /* SIGXCPU at the soft limit, SIGKILL a second later. */
        struct rlimit r = {(rlim_t)cpu_limit, (rlim_t)cpu_limit + 1};
        setrlimit(RLIMIT_CPU, &r);
    }
    if (geteuid() == 0 || getegid() == 0) {
        /* Root: become nobody (65534), dropping supplementary groups and
         * with them every capability.  Failing that, do not run. */
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 ||
            setuid(65534) != 0 || geteuid() == 0) {
            return -1;
        }
    }
    /* Capabilities a file or the ambient set may have given the program
     * (e.g. to bind port 104): none needed here.  Dropping is allowed. */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2];
    memset(none, 0, sizeof none);
    if (syscall(SYS_capset, &hdr, none) != 0) {
        return -1;
    }
    set_limit(RLIMIT_NOFILE, SBX_FD_MEM + 1);
    set_limit(RLIMIT_NPROC, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        return -1;
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    return install_seccomp() == 0 ? (int)FLAG_SECCOMP : 0;
}

static void helper_reply(SbxReply *rep)
{
    ssize_t w;
    do {
        w = write(SBX_FD_SOCK, rep, sizeof *rep);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)sizeof *rep) {
        _exit(4);
    }
}

/* The misbehaviours of test mode. */
static volatile int *volatile crash_at = NULL;

static void helper_test(uint32_t op, SbxReply *rep)
{
    switch (op) {
    case OP_TEST_CRASH:
        *crash_at = 1;            /* SIGSEGV */
        break;
    case OP_TEST_SPIN:
        for (volatile uint64_t i = 0;; i++) {
        }
    case OP_TEST_ALLOC: {
        /* Allocate and touch until refused: RLIMIT_AS stops it (capped
         * here in ASan builds, where the limit cannot be used). */
        size_t total = 0;
        for (;;) {
            uint8_t *p = malloc((size_t)64 << 20);
            if (p == NULL || total >= SBX_TEST_ALLOC_CAP) {
                break;
            }
            memset(p, 1, (size_t)64 << 20);
            total += (size_t)64 << 20;
        }
        rep->status = total >= SBX_TEST_ALLOC_CAP ? AG_OK : AG_ERR_NOMEM;
        snprintf(rep->msg, sizeof rep->msg, "allocated %zu MiB",
                 total >> 20);
        break;
    }
    case OP_TEST_OPEN: {
        int fd = open("/etc/passwd", O_RDONLY);   /* seccomp: SIGSYS */
        rep->status = fd >= 0 ? AG_OK : AG_ERR_IO;
        snprintf(rep->msg, sizeof rep->msg, "open returned %d", fd);
        break;
    }
    case OP_TEST_GARBAGE: {
        static const char junk[] = "not a reply";
        if (write(SBX_FD_SOCK, junk, sizeof junk) < 0) {
            _exit(4);
        }
        rep->magic = 0;           /* no proper reply follows */
        break;
    }
    case OP_TEST_SHORT:
        rep->status = AG_OK;
        rep->out_len -= 1;
        break;
    case OP_TEST_EXIT:
        _exit(0);
    default:
        break;
    }
}

static bool helper_map(HelperState *s, size_t len)
{
    if (s->map != NULL && s->map_len == len) {
        return true;
    }
    if (s->map != NULL) {
        munmap(s->map, s->map_len);
        s->map = NULL;
    }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
                   SBX_FD_MEM, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    s->map = p;
    s->map_len = len;
    return true;
}

static void helper_job(HelperState *s, const SbxRequest *q)
{
    SbxReply rep;
    memset(&rep, 0, sizeof rep);
    rep.magic = SBX_MAGIC_REP;
    rep.seq = q->seq;
    rep.op = q->op;
    rep.out_len = q->out_len;
    uint64_t end;
    if (q->in_len > q->out_off || ag_add_overflow(q->out_off, q->out_len,
                                                  &end) ||
        end > q->map_len || q->map_len > SIZE_MAX ||
        memchr(q->ts_uid, 0, sizeof q->ts_uid) == NULL) {
        rep.status = AG_ERR_INVALID;
        snprintf(rep.msg, sizeof rep.msg, "bad request");
        helper_reply(&rep);
        return;
    }
    if (!helper_map(s, (size_t)q->map_len)) {
        rep.status = AG_ERR_NOMEM;
        snprintf(rep.msg, sizeof rep.msg, "cannot map %" PRIu64 " bytes "
                 "of shared memory", q->map_len);
        helper_reply(&rep);
        return;
    }
    if (q->op != OP_DECODE) {
        if (s->testing) {
            helper_test(q->op, &rep);
        } else {
            rep.status = AG_ERR_INVALID;
            snprintf(rep.msg, sizeof rep.msg, "unknown request");
        }
        if (rep.magic == SBX_MAGIC_REP) {
            helper_reply(&rep);
        }
        return;
    }
    AgError err;
    memset(&err, 0, sizeof err);
    rep.status = codec_decode_frame_local(q->ts_uid, &q->im, s->map,
                                    (size_t)q->in_len, s->map + q->out_off,
                                    (size_t)q->out_len, &err);
    if (rep.status != AG_OK) {
        memcpy(rep.msg, err.msg, sizeof rep.msg);
        rep.msg[sizeof rep.msg - 1] = '\0';
    }
    helper_reply(&rep);
}

int codec_sandbox_helper_main(int argc, char **argv)
{
    /* Refuse to run by hand: descriptors 3 and 4 must be ours. */
    int st = fcntl(SBX_FD_SOCK, F_GETFD);
    int sm = fcntl(SBX_FD_MEM, F_GETFD);
    int type = 0;
    socklen_t tl = sizeof type;
    if (st < 0 || sm < 0 ||
        getsockopt(SBX_FD_SOCK, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
        type != SOCK_SEQPACKET) {
        fprintf(stderr, "codec-helper: internal command, started by the "
                        "archive with its descriptors\n");
        return 2;
    }
    HelperState s = {.testing = test_mode()};
    uint64_t as_limit = argc > 1 ? strtoull(argv[1], NULL, 10) : 0;
    unsigned long cpu_limit = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
    int flags = harden(as_limit, cpu_limit);
    if (flags < 0) {
        _exit(3);
    }
    SbxReply ready;
    memset(&ready, 0, sizeof ready);
    ready.magic = SBX_MAGIC_REP;
    ready.op = OP_READY;
    ready.flags = (uint32_t)flags;
    ready.req_size = (uint32_t)sizeof(SbxRequest);
    ready.status = AG_OK;
    helper_reply(&ready);
    for (;;) {
        SbxRequest q;
        union {
            SbxRequest q;
            uint8_t more[sizeof(SbxRequest) + 1];
        } buf;
        ssize_t r = read(SBX_FD_SOCK, &buf, sizeof buf);
        if (r == 0) {
            _exit(0);             /* the parent closed: retire */
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r != (ssize_t)sizeof q) {
            _exit(4);
        }
        memcpy(&q, &buf.q, sizeof q);
        if (q.magic != SBX_MAGIC_REQ || q.version != SBX_VERSION) {
            _exit(4);
        }
        helper_job(&s, &q);
    }
}

/* ======================================================================
 * The pool
 * ====================================================================== */

typedef struct Helper {
    pid_t pid;              /* 0: not running */
    int sock;               /* parent's end, -1 when none */
    int memfd;
    uint8_t *map;           /* parent's mapping of memfd */
    size_t map_len;
    uint32_t seq;
    double busy_s;          /* wall time of start-up and jobs: an upper
                             * bound of its CPU time */
    bool seccomp;
    uint64_t room;          /* shared memory it was started for */
    uint64_t as_limit;      /* its ceilings (0: none) */
    unsigned cpu_limit;
    bool can_prlimit;       /* the parent may tighten them per frame */
} Helper;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    unsigned n;
    unsigned timeout_ms;
    uint64_t memory_limit;
    char path[AG_PATH_MAX];
    /* A slot in use belongs to its thread, which starts, stops and
     * resets it without the lock; in_use is the pool's (under lock), kept
     * apart so that no reset writes it while acquire reads it. */
    Helper h[CODEC_SANDBOX_MAX_HELPERS];
    bool in_use[CODEC_SANDBOX_MAX_HELPERS];
    bool ready;             /* configured (or defaults applied) */
    bool warned_seccomp;
    CodecSandboxStats stats;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .freed = PTHREAD_COND_INITIALIZER,
};

void codec_sandbox_config_init(CodecSandboxConfig *c)
{
    memset(c, 0, sizeof *c);
    c->helpers = CODEC_SANDBOX_DEFAULT_HELPERS;
    c->timeout_ms = CODEC_SANDBOX_DEFAULT_TIMEOUT_MS;
    c->memory_limit = CODEC_SANDBOX_DEFAULT_MEMORY;
}

static void apply_defaults_locked(void)
{
    if (pool.ready) {
        return;
    }
    CodecSandboxConfig c;
    codec_sandbox_config_init(&c);
    pool.n = c.helpers;
    pool.timeout_ms = c.timeout_ms;
    pool.memory_limit = c.memory_limit;
    snprintf(pool.path, sizeof pool.path, "/proc/self/exe");
    for (unsigned i = 0; i < CODEC_SANDBOX_MAX_HELPERS; i++) {
        pool.h[i] = (Helper){.sock = -1, .memfd = -1};
    }
    pool.ready = true;
}

/* Release a helper's resources; kill and reap it.  Returns the wait
 * status (or -1 when it was reaped elsewhere / not running). */
static int helper_stop(Helper *h, bool kill_it)
{
    int status = -1;
    if (h->pid > 0) {
        if (h->sock >= 0) {
            close(h->sock);   /* a healthy helper exits on EOF */
            h->sock = -1;
        }
        if (kill_it) {
            kill(h->pid, SIGKILL);
        }
        pid_t r;
        do {
            r = waitpid(h->pid, &status, 0);
        } while (r < 0 && errno == EINTR);
        if (r != h->pid) {
            status = -1;
        }
    }
    if (h->sock >= 0) {
        close(h->sock);
    }
    if (h->map != NULL) {
        munmap(h->map, h->map_len);
    }
    if (h->memfd >= 0) {
        close(h->memfd);
    }
    *h = (Helper){.sock = -1, .memfd = -1};
    return status;
}

/* "exited with status 3" / "killed by signal 31 (SIGSYS)". */
static void describe_status(int status, char *buf, size_t cap)
{
    if (status == -1) {
        snprintf(buf, cap, "ended");
    } else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, cap, "killed by signal %d (SIG%s)", WTERMSIG(status),
                 abbrev ? abbrev : "?");
    } else if (WIFEXITED(status)) {
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(buf, cap, "ended (status 0x%x)", (unsigned)status);
    }
}

/* Kill and reap a helper that failed a job; the frame's error. */
static int helper_fail(Helper *h, AgError *err, const char *why)
{
    pid_t pid = h->pid;
    int status = helper_stop(h, true);
    char how[96];
    describe_status(status, how, sizeof how);
    pthread_mutex_lock(&pool.lock);
    pool.stats.failures++;
    pthread_mutex_unlock(&pool.lock);
    ag_log(AG_LOG_WARN, "codec", "decoder helper %d %s: %s", (int)pid, how,
           why);
    return ag_error_set(err, AG_ERR_PARSE, "decoder failed: helper %s: %s",
                        how, why);
}

/* Move a descriptor above 4, so that the dup2 to 3 and 4 in the child
 * cannot clobber one with the other. */
static int fd_high(int fd)
{
    if (fd < 0 || fd > SBX_FD_MEM) {
        return fd;
    }
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, SBX_FD_MEM + 1);
    close(fd);
    return nfd;
}

/* The helper's environment: nothing but what the tests and the
 * sanitizers need. */
static void helper_env(char **envp, size_t cap)
{
    static const char *const KEEP[] = {
        "AGORA_SANDBOX_TEST=", "ASAN_OPTIONS=", "UBSAN_OPTIONS=",
        "LSAN_OPTIONS=",
    };
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL && n + 1 < cap; e++) {
        for (size_t i = 0; i < sizeof KEEP / sizeof *KEEP; i++) {
            if (strncmp(*e, KEEP[i], strlen(KEEP[i])) == 0) {
                envp[n++] = *e;
                break;
            }
        }
    }
    envp[n] = NULL;
}

static int spawn(Helper *h, int child_sock, const char *path, AgError *err)
{
    char as_arg[24], cpu_arg[24];
    snprintf(as_arg, sizeof as_arg, "%" PRIu64, h->as_limit);
    snprintf(cpu_arg, sizeof cpu_arg, "%u", h->cpu_limit);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_adddup2(&fa, child_sock, SBX_FD_SOCK);
    posix_spawn_file_actions_adddup2(&fa, h->memfd, SBX_FD_MEM);
    posix_spawn_file_actions_addclosefrom_np(&fa, SBX_FD_MEM + 1);
    /* Nothing to read on stdin, nothing to say on stdout; stderr stays
     * for the sanitizers' reports. */
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                     O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null",
                                     O_WRONLY, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigemptyset(&all);
    for (int s = 1; s < NSIG; s++) {
        if (s != SIGKILL && s != SIGSTOP) {
            sigaddset(&all, s);   /* glibc's own signals are refused */
        }
    }
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {(char *)path, (char *)"codec-helper", as_arg, cpu_arg,
                    NULL};
    char *envp[8];
    helper_env(envp, sizeof envp / sizeof *envp);
    pid_t pid;
    int rc = posix_spawn(&pid, path, &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        errno = rc;
        return ag_error_errno(err, AG_ERR_IO, "decoder helper: cannot "
                              "start %s", path);
    }
    h->pid = pid;
    return AG_OK;
}

/* Wait for one message until deadline (CLOCK_MONOTONIC seconds).  Returns
 * its size, 0 at end of stream, -1 on error, -2 on timeout. */
static ssize_t recv_until(int fd, void *buf, size_t cap, double deadline)
{
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            return -2;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)(left * 1000.0) + 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            continue;             /* re-check the deadline */
        }
        ssize_t r = recv(fd, buf, cap, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        return r;
    }
}

/* Tighten a soft limit of the helper for one frame, below the ceiling it
 * set itself.  Needs the same user or CAP_SYS_RESOURCE (a root archive
 * whose helpers became nobody may lack it): else the ceilings stand. */
static void limit_child(Helper *h, int res, rlim_t soft)
{
    rlim_t max = res == RLIMIT_AS
        ? (h->as_limit ? (rlim_t)h->as_limit : RLIM_INFINITY)
        : (rlim_t)h->cpu_limit + 1;
    struct rlimit r = {soft < max ? soft : max, max};
    if (h->can_prlimit && prlimit(h->pid, res, &r, NULL) != 0) {
        h->can_prlimit = false;
        ag_log(AG_LOG_DEBUG, "codec", "decoder helper %d keeps its start-up"
               " limits (prlimit: %s)", (int)h->pid, strerror(errno));
    }
}

static int helper_start(Helper *h, const char *path, unsigned timeout_ms,
                        uint64_t memory_limit, uint64_t room, AgError *err)
{
    double t0 = now_s();
    h->room = room;
    h->as_limit = SBX_SANITIZED ? 0 : memory_limit + 5 * room;
    h->cpu_limit = 4 * ((timeout_ms + 999) / 1000);
    if (h->cpu_limit < SBX_CPU_MIN) {
        h->cpu_limit = SBX_CPU_MIN;
    }
    h->can_prlimit = true;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return ag_error_errno(err, AG_ERR_IO, "decoder helper: socketpair");
    }
    h->sock = fd_high(sv[0]);
    int child = fd_high(sv[1]);
    h->memfd = fd_high(memfd_create("agora-codec", MFD_CLOEXEC |
                                                       MFD_ALLOW_SEALING));
    int rc = AG_OK;
    if (h->sock < 0 || child < 0 || h->memfd < 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "decoder helper: descriptors");
    } else if (ftruncate(h->memfd, (off_t)SBX_MAP_STEP) != 0 ||
               fcntl(h->memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
        rc = ag_error_errno(err, AG_ERR_IO, "decoder helper: shared memory");
    } else {
        h->map = mmap(NULL, SBX_MAP_STEP, PROT_READ | PROT_WRITE,
                      MAP_SHARED, h->memfd, 0);
        if (h->map == MAP_FAILED) {
            h->map = NULL;
            rc = ag_error_errno(err, AG_ERR_NOMEM, "decoder helper: map "
                                "shared memory");
        } else {
            h->map_len = SBX_MAP_STEP;
            rc = spawn(h, child, path, err);
        }
    }
    if (child >= 0) {
        close(child);
    }
    if (rc != AG_OK) {
        helper_stop(h, true);
        return rc;
    }
    SbxReply ready;
    ssize_t r = recv_until(h->sock, &ready, sizeof ready,
                           t0 + timeout_ms / 1000.0);
    if (r != (ssize_t)sizeof ready || ready.magic != SBX_MAGIC_REP ||
        ready.op != OP_READY || ready.req_size != sizeof(SbxRequest)) {
        return helper_fail(h, err, r == -2 ? "no answer at start-up"
                                           : "bad start-up message");
    }
    h->seccomp = (ready.flags & FLAG_SECCOMP) != 0;
    h->busy_s = now_s() - t0;
    pthread_mutex_lock(&pool.lock);
    pool.stats.starts++;
    pool.stats.seccomp = h->seccomp;
    bool warn = !h->seccomp && !pool.warned_seccomp;
    pool.warned_seccomp = pool.warned_seccomp || warn;
    pthread_mutex_unlock(&pool.lock);
    if (warn) {
        ag_log(AG_LOG_WARN, "codec", "seccomp is not available: decoder "
               "helpers run with resource limits and without privileges "
               "only");
    }
    return AG_OK;
}

/* Make the shared memory at least need bytes (it only grows: the seal). */
static int helper_grow(Helper *h, size_t need, AgError *err)
{
    if (need <= h->map_len) {
        return AG_OK;
    }
    size_t len = (need + SBX_MAP_STEP - 1) / SBX_MAP_STEP * SBX_MAP_STEP;
    if (ftruncate(h->memfd, (off_t)len) != 0) {
        return ag_error_errno(err, AG_ERR_NOMEM, "decoder helper: grow "
                              "shared memory to %zu bytes", len);
    }
    void *p = mremap(h->map, h->map_len, len, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
        return ag_error_errno(err, AG_ERR_NOMEM, "decoder helper: map "
                              "%zu bytes", len);
    }
    h->map = p;
    h->map_len = len;
    return AG_OK;
}

/* Is a helper that was running still alive?  Reap it if not. */
static void helper_check(Helper *h)
{
    if (h->pid <= 0) {
        return;
    }
    int status;
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    if (r == h->pid || (r < 0 && errno == ECHILD)) {
        char how[96];
        describe_status(r == h->pid ? status : -1, how, sizeof how);
        ag_log(AG_LOG_WARN, "codec", "decoder helper %d %s between jobs; "
               "replacing it", (int)h->pid, how);
        h->pid = 0;               /* reaped: do not wait for it again */
        helper_stop(h, false);
    }
}

typedef struct Job {
    uint32_t op;
    const char *ts_uid;
    const CodecImage *im;
    const uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_len;
} Job;

/* One attempt.  *retry is set when the helper was found dead before it
 * could have seen the job (the caller then tries a fresh one once). */
static int run_job(Helper *h, const Job *j, unsigned timeout_ms,
                   uint64_t memory_limit, const char *path, bool *retry,
                   AgError *err)
{
    *retry = false;
    size_t out_off = (j->in_len + SBX_ALIGN - 1) / SBX_ALIGN * SBX_ALIGN;
    uint64_t need;
    if (out_off < j->in_len ||
        ag_add_overflow(out_off, j->out_len, &need) || need > SIZE_MAX ||
        need > ((uint64_t)1 << 40)) {
        return ag_error_set(err, AG_ERR_LIMIT, "decoder helper: %zu + %zu "
                            "bytes", j->in_len, j->out_len);
    }
    helper_check(h);
    unsigned timeout_s = (timeout_ms + 999) / 1000;
    if (h->pid > 0 && (need > h->room ||
                       h->busy_s + timeout_s + 1 > h->cpu_limit)) {
        /* Too small for this frame, or near its CPU ceiling: retire it. */
        helper_stop(h, true);
    }
    bool fresh = h->pid == 0;
    if (fresh) {
        uint64_t room = (need + SBX_MAP_STEP - 1) / SBX_MAP_STEP *
                        SBX_MAP_STEP;
        int rc = helper_start(h, path, timeout_ms, memory_limit,
                              room > SBX_ROOM_MIN ? room : SBX_ROOM_MIN,
                              err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    int rc = helper_grow(h, (size_t)need, err);
    if (rc != AG_OK) {
        return rc;
    }
    if (j->in_len > 0) {
        memcpy(h->map, j->in, j->in_len);
    }
    SbxRequest q;
    memset(&q, 0, sizeof q);
    q.magic = SBX_MAGIC_REQ;
    q.seq = ++h->seq;
    q.op = j->op;
    q.version = SBX_VERSION;
    q.in_len = j->in_len;
    q.out_off = out_off;
    q.out_len = j->out_len;
    q.map_len = h->map_len;
    q.im = *j->im;
    snprintf(q.ts_uid, sizeof q.ts_uid, "%s", j->ts_uid);
    if (!SBX_SANITIZED) {
        /* The base, the shared memory, and room for a codec's working
         * buffers (OpenJPEG keeps 32 bits per sample).  The shadow
         * memory of ASan and TSan makes an address-space limit unusable
         * there. */
        limit_child(h, RLIMIT_AS, (rlim_t)(memory_limit + h->map_len +
                                           4 * (uint64_t)j->out_len));
    }
    double t0 = now_s();
    limit_child(h, RLIMIT_CPU, (rlim_t)h->busy_s + 1 + timeout_s);
    ssize_t w;
    do {
        w = send(h->sock, &q, sizeof q, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)sizeof q) {
        *retry = !fresh;
        return helper_fail(h, err, "it does not take requests");
    }
    union {
        SbxReply rep;
        uint8_t more[sizeof(SbxReply) + 1];
    } buf;
    ssize_t r = recv_until(h->sock, &buf, sizeof buf,
                           t0 + timeout_ms / 1000.0);
    h->busy_s += now_s() - t0;
    if (r == -2) {
        char why[64];
        snprintf(why, sizeof why, "no answer within %u ms", timeout_ms);
        return helper_fail(h, err, why);
    }
    if (r == 0 || r == -1) {      /* end of stream, ECONNRESET */
        *retry = !fresh;
        return helper_fail(h, err, "connection lost during the job");
    }
    SbxReply rep;
    memcpy(&rep, &buf.rep, sizeof rep);
    if (r != (ssize_t)sizeof rep || rep.magic != SBX_MAGIC_REP ||
        rep.seq != q.seq || rep.op != q.op || rep.status > AG_OK ||
        rep.status < AG_ERR_DENIED ||
        (rep.status == AG_OK && rep.out_len != j->out_len)) {
        return helper_fail(h, err, "reply out of protocol");
    }
    if (rep.status != AG_OK) {
        rep.msg[sizeof rep.msg - 1] = '\0';
        for (char *p = rep.msg; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                *p = '?';         /* the helper's text is not trusted */
            }
        }
        return ag_error_set(err, rep.status, "%s", rep.msg);
    }
    memcpy(j->out, h->map + out_off, j->out_len);
    return AG_OK;
}

static Helper *acquire(unsigned *timeout_ms, uint64_t *mem, char *path)
{
    pthread_mutex_lock(&pool.lock);
    apply_defaults_locked();
    Helper *h = NULL;
    for (;;) {
        /* A running idle helper first, else any idle slot. */
        for (unsigned i = 0; i < pool.n && h == NULL; i++) {
            if (!pool.in_use[i] && pool.h[i].pid > 0) {
                h = &pool.h[i];
            }
        }
        for (unsigned i = 0; i < pool.n && h == NULL; i++) {
            if (!pool.in_use[i]) {
                h = &pool.h[i];
            }
        }
        if (h != NULL) {
            break;
        }
        pthread_cond_wait(&pool.freed, &pool.lock);
    }
    pool.in_use[h - pool.h] = true;
    *timeout_ms = pool.timeout_ms;
    *mem = pool.memory_limit;
    memcpy(path, pool.path, sizeof pool.path);
    pool.stats.frames++;
    pthread_mutex_unlock(&pool.lock);
    return h;
}

static void release(Helper *h)
{
    if (h->map_len > SBX_MAP_KEEP) {
        helper_stop(h, true);     /* give the big shared memory back */
    }
    pthread_mutex_lock(&pool.lock);
    pool.in_use[h - pool.h] = false;
    pthread_cond_broadcast(&pool.freed);
    pthread_mutex_unlock(&pool.lock);
}

int codec_decode_frame_isolated(const char *ts_uid, const CodecImage *im,
                                const uint8_t *in, size_t in_len,
                                uint8_t *out, size_t out_len, AgError *err)
{
    if (ts_uid == NULL || strlen(ts_uid) > 64) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no decoder for "
                            "transfer syntax %s", ts_uid ? ts_uid : "(null)");
    }
    uint32_t op = op_for(ts_uid, test_mode());
    if (op == OP_DECODE) {
        const DicomTransferSyntax *ts = dicom_ts_lookup(ts_uid);
        if (!codec_can_decode(ts_uid) || (ts != NULL && !ts->encapsulated)) {
            /* Native data needs no decoder (and unknown syntaxes get the
             * in-process answer): no isolation. */
            return codec_decode_frame_local(ts_uid, im, in, in_len, out,
                                            out_len, err);
        }
    } else if (op == 0) {
        return ag_error_set(err, AG_ERR_UNSUPPORTED, "no decoder for "
                            "transfer syntax %s", ts_uid);
    }
    if (codec_frame_size(im) != (uint64_t)out_len) {
        return ag_error_set(err, AG_ERR_INVALID, "decode: output buffer of "
                            "%zu bytes is not one frame", out_len);
    }
    Job j = {op, ts_uid, im, in, in_len, out, out_len};
    unsigned timeout_ms;
    uint64_t mem;
    static _Thread_local char path[AG_PATH_MAX];
    Helper *h = acquire(&timeout_ms, &mem, path);
    bool retry;
    int rc = run_job(h, &j, timeout_ms, mem, path, &retry, err);
    if (retry) {
        /* It died while idle (killed, OOM): not this frame's doing. */
        rc = run_job(h, &j, timeout_ms, mem, path, &retry, err);
    }
    release(h);
    return rc;
}

int codec_sandbox_configure(const CodecSandboxConfig *c, AgError *err)
{
    if (c->helpers > CODEC_SANDBOX_MAX_HELPERS || c->timeout_ms > 3600000u ||
        (c->helper_path != NULL &&
         (c->helper_path[0] != '/' ||
          strlen(c->helper_path) >= AG_PATH_MAX))) {
        return ag_error_set(err, AG_ERR_INVALID, "decoder sandbox: helpers "
                            "1..%u, timeout up to 1 h, an absolute helper "
                            "path", CODEC_SANDBOX_MAX_HELPERS);
    }
    codec_sandbox_shutdown();     /* waits for running jobs */
    pthread_mutex_lock(&pool.lock);
    CodecSandboxConfig d;
    codec_sandbox_config_init(&d);
    pool.n = c->helpers ? c->helpers : d.helpers;
    pool.timeout_ms = c->timeout_ms ? c->timeout_ms : d.timeout_ms;
    pool.memory_limit = c->memory_limit ? c->memory_limit : d.memory_limit;
    snprintf(pool.path, sizeof pool.path, "%s",
             c->helper_path ? c->helper_path : "/proc/self/exe");
    pool.ready = true;
    pthread_mutex_unlock(&pool.lock);
    return AG_OK;
}

void codec_sandbox_shutdown(void)
{
    pthread_mutex_lock(&pool.lock);
    apply_defaults_locked();
    for (;;) {
        bool busy = false;
        for (unsigned i = 0; i < CODEC_SANDBOX_MAX_HELPERS; i++) {
            busy = busy || pool.in_use[i];
        }
        if (!busy) {
            break;
        }
        pthread_cond_wait(&pool.freed, &pool.lock);
    }
    for (unsigned i = 0; i < CODEC_SANDBOX_MAX_HELPERS; i++) {
        helper_stop(&pool.h[i], true);
    }
    pthread_mutex_unlock(&pool.lock);
}

pid_t codec_sandbox_helper_pid(unsigned i)
{
    pthread_mutex_lock(&pool.lock);
    pid_t pid = i < CODEC_SANDBOX_MAX_HELPERS ? pool.h[i].pid : 0;
    pthread_mutex_unlock(&pool.lock);
    return pid;
}

void codec_sandbox_stats(CodecSandboxStats *out)
{
    pthread_mutex_lock(&pool.lock);
    *out = pool.stats;
    pthread_mutex_unlock(&pool.lock);
}
