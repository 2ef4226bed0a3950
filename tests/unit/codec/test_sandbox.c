/*
 * test_sandbox.c — decoding at arm's length (sandbox.c): the helper pool
 * behind codec_decode_frame_isolated().
 *
 * The helpers are this test executable started again as `test_codec_
 * sandbox codec-helper` (main() below hands that over to
 * codec_sandbox_helper_main, as agora's main does), with
 * AGORA_SANDBOX_TEST=1 so that the "test:*" syntaxes make a helper crash,
 * spin, allocate without end, open a file, or answer out of protocol.
 *
 * Checked: RLE / JPEG / JPEG-LS / JPEG 2000 frames decode to the same
 * bytes as in-process (and a frame larger than the first shared memory);
 * decoder errors come back as the decoder's; a helper
 * killed between jobs is replaced and the next frame decodes; a crash, a
 * timeout, a seccomp violation (open(2) -> SIGSYS), a wrong or short reply
 * each fail that frame only (AG_ERR_PARSE "decoder failed") and the pool
 * goes on; RLIMIT_AS stops a helper that allocates without end; 8 threads
 * share a pool of 2; configuration errors; a helper started by hand.
 */
#include "../test_util.h"

#include "codec/codec.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

extern char **environ;

#define TS_RLE "1.2.840.10008.1.2.5"
#define TS_JPEG "1.2.840.10008.1.2.4.50"
#define TS_JLS "1.2.840.10008.1.2.4.80"
#define TS_J2K "1.2.840.10008.1.2.4.90"
#define TS_EXPLICIT "1.2.840.10008.1.2.1"

static CodecImage image(uint32_t rows, uint32_t cols, uint16_t bits)
{
    CodecImage im;
    memset(&im, 0, sizeof im);
    im.rows = rows;
    im.columns = cols;
    im.frames = 1;
    im.samples_per_pixel = 1;
    im.bits_allocated = bits;
    im.bits_stored = bits == 16 ? 12 : 8;
    im.high_bit = (uint16_t)(im.bits_stored - 1);
    snprintf(im.photometric, sizeof im.photometric, "MONOCHROME2");
    return im;
}

/* A smooth ramp with a little deterministic noise. */
static uint8_t *make_pixels(const CodecImage *im)
{
    size_t n = (size_t)im->rows * im->columns;
    size_t bytes = im->bits_allocated / 8u;
    uint8_t *p = malloc(n * bytes);
    uint32_t seed = 12345;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        uint32_t x = (uint32_t)(i % im->columns), y = (uint32_t)(i /
                                                                im->columns);
        uint32_t v = (x * 7 + y * 13 + (seed >> 28)) &
                     ((1u << im->bits_stored) - 1);
        p[i * bytes] = (uint8_t)v;
        if (bytes == 2) {
            p[i * bytes + 1] = (uint8_t)(v >> 8);
        }
    }
    return p;
}

typedef struct Frame {
    const char *ts;
    CodecImage im;
    AgBuf enc;
    uint8_t *want;                /* the in-process decode */
    size_t len;
} Frame;

static Frame FRAMES[4];

static void frames_make(void)
{
    static const char *const TS[4] = {TS_RLE, TS_JPEG, TS_JLS, TS_J2K};
    for (int i = 0; i < 4; i++) {
        Frame *f = &FRAMES[i];
        f->ts = TS[i];
        f->im = image(64, 48, i == 1 ? 8 : 16);
        f->len = (size_t)codec_frame_size(&f->im);
        uint8_t *px = make_pixels(&f->im);
        ag_buf_init(&f->enc, 0);
        AgError err;
        assert_int_equal(codec_encode_frame(f->ts, &f->im, px, f->len,
                                            &f->enc, &err), AG_OK);
        f->want = malloc(f->len);
        assert_int_equal(codec_decode_frame(f->ts, &f->im, f->enc.data,
                                            f->enc.len, f->want, f->len,
                                            &err), AG_OK);
        if (i != 1) {             /* lossless: the source itself */
            assert_memory_equal(f->want, px, f->len);
        }
        free(px);
    }
}

static int isolated(const Frame *f, uint8_t *out, AgError *err)
{
    return codec_decode_frame_isolated(f->ts, &f->im, f->enc.data,
                                       f->enc.len, out, f->len, err);
}

static void decode_ok(const Frame *f)
{
    uint8_t *out = malloc(f->len);
    AgError err;
    memset(&err, 0, sizeof err);
    int rc = isolated(f, out, &err);
    if (rc != AG_OK) {
        fail_msg("%s: %s", f->ts, err.msg);
    }
    assert_memory_equal(out, f->want, f->len);
    free(out);
}

/* A test-mode misbehaviour: the frame fails, the message says why. */
static void misbehave(const char *op, const char *expect)
{
    Frame *f = &FRAMES[0];
    uint8_t *out = malloc(f->len);
    AgError err;
    memset(&err, 0, sizeof err);
    int rc = codec_decode_frame_isolated(op, &f->im, f->enc.data, f->enc.len,
                                         out, f->len, &err);
    assert_int_equal(rc, AG_ERR_PARSE);
    if (strstr(err.msg, "decoder failed") == NULL ||
        strstr(err.msg, expect) == NULL) {
        fail_msg("%s: unexpected message: %s", op, err.msg);
    }
    free(out);
}

static void configure(unsigned helpers, unsigned timeout_ms, uint64_t mem)
{
    CodecSandboxConfig c;
    codec_sandbox_config_init(&c);
    c.helpers = helpers;
    c.timeout_ms = timeout_ms;
    c.memory_limit = mem;
    AgError err;
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_OK);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- the tests ---------------------------------------------------------- */

static void test_same_bytes_as_in_process(void **state)
{
    (void)state;
    configure(2, 10000, 0);
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < 4; i++) {
            decode_ok(&FRAMES[i]);
        }
    }
    CodecSandboxStats st;
    codec_sandbox_stats(&st);
    assert_true(st.starts >= 1 && st.starts <= 2);   /* helpers reused */
    assert_true(codec_sandbox_helper_pid(0) > 0);
}

static void test_decoder_errors_pass_through(void **state)
{
    (void)state;
    configure(1, 10000, 0);
    decode_ok(&FRAMES[0]);
    pid_t before = codec_sandbox_helper_pid(0);
    /* Every codec's error path (C++ exceptions in CharLS, longjmp in
     * libjpeg, OpenJPEG's handlers) runs inside the filter: the frame
     * fails with the decoder's own message and the helper stays. */
    for (int i = 0; i < 4; i++) {
        Frame *g = &FRAMES[i];
        uint8_t *o = malloc(g->len);
        AgError e;
        int rc = codec_decode_frame_isolated(g->ts, &g->im, g->enc.data, 40,
                                             o, g->len, &e);
        free(o);
        if (rc == AG_OK || strstr(e.msg, "decoder failed") != NULL) {
            fail_msg("%s cut short: %d %s", g->ts, rc, e.msg);
        }
    }
    Frame *f = &FRAMES[2];        /* JPEG-LS */
    uint8_t *out = malloc(f->len);
    AgError err;
    int rc = codec_decode_frame_isolated(f->ts, &f->im, f->enc.data, 40,
                                         out, f->len, &err);
    assert_int_equal(rc, AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "jpeg-ls"));
    /* A wrong output size is refused before any helper sees the frame. */
    assert_int_equal(codec_decode_frame_isolated(f->ts, &f->im, f->enc.data,
                                                 f->enc.len, out, f->len - 2,
                                                 &err), AG_ERR_INVALID);
    /* Native data is copied in-process. */
    CodecImage im = f->im;
    assert_int_equal(codec_decode_frame_isolated(TS_EXPLICIT, &im, f->want,
                                                 f->len, out, f->len, &err),
                     AG_OK);
    assert_memory_equal(out, f->want, f->len);
    /* Unknown syntaxes and test names outside test mode: not decoded. */
    assert_int_equal(codec_decode_frame_isolated("1.2.3.4", &im, f->want,
                                                 f->len, out, f->len, &err),
                     AG_ERR_UNSUPPORTED);
    assert_int_equal(codec_decode_frame_isolated("test:nothing", &im,
                                                 f->want, f->len, out,
                                                 f->len, &err),
                     AG_ERR_UNSUPPORTED);
    assert_int_equal(codec_sandbox_helper_pid(0), before);   /* still up */
    free(out);
}

/* Wait until pid is a zombie (killed, not yet reaped by the pool). */
static void wait_dead(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            return;
        }
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) {
            return;
        }
        usleep(2000);
    }
    fail_msg("helper %d did not die", (int)pid);
}

static void test_large_frame_grows_shared_memory(void **state)
{
    (void)state;
    /* 1536 x 1536 x 16 bits: 4.5 MiB out, more than the first 1 MiB of
     * shared memory. */
    configure(1, 20000, 0);
    Frame big = {.ts = TS_RLE, .im = image(1536, 1536, 16)};
    big.len = (size_t)codec_frame_size(&big.im);
    uint8_t *px = make_pixels(&big.im);
    AgError err;
    ag_buf_init(&big.enc, 0);
    assert_int_equal(codec_encode_frame(big.ts, &big.im, px, big.len,
                                        &big.enc, &err), AG_OK);
    big.want = px;
    decode_ok(&big);
    decode_ok(&FRAMES[0]);        /* and small ones after it */
    ag_buf_deinit(&big.enc);
    free(px);
}

static void test_killed_helper_is_replaced(void **state)
{
    (void)state;
    configure(1, 10000, 0);
    decode_ok(&FRAMES[3]);
    pid_t pid = codec_sandbox_helper_pid(0);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    wait_dead(pid);
    decode_ok(&FRAMES[3]);        /* the next frame works */
    pid_t again = codec_sandbox_helper_pid(0);
    assert_true(again > 0 && again != pid);
    /* Killed and not yet a zombie when the job is sent: the frame is
     * retried once on a fresh helper, and still decodes. */
    assert_int_equal(kill(again, SIGKILL), 0);
    decode_ok(&FRAMES[0]);
    assert_true(codec_sandbox_helper_pid(0) != again);
}

static void test_crash_fails_one_frame(void **state)
{
    (void)state;
    configure(1, 10000, 0);
    CodecSandboxStats a, b;
    codec_sandbox_stats(&a);
    /* Under ASan its SEGV handler dies of seccomp instead: a signal. */
    misbehave("test:crash", TEST_SANITIZED ? "killed by signal" : "SIGSEGV");
    codec_sandbox_stats(&b);
    assert_true(b.failures > a.failures);
    decode_ok(&FRAMES[1]);
}

static void test_spin_hits_the_deadline(void **state)
{
    (void)state;
    configure(1, 400, 0);
    decode_ok(&FRAMES[0]);        /* a helper is up (start-up not timed) */
    double t0 = now_s();
    misbehave("test:spin", "no answer within 400 ms");
    double took = now_s() - t0;
    assert_true(took >= 0.35 && took < 5.0);
    configure(1, 10000, 0);
    decode_ok(&FRAMES[2]);
}

static void test_seccomp_kills_open(void **state)
{
    (void)state;
    configure(1, 10000, 0);
    decode_ok(&FRAMES[0]);
    CodecSandboxStats st;
    codec_sandbox_stats(&st);
    if (!st.seccomp) {
        skip();                   /* logged by the pool; rlimits only */
    }
    misbehave("test:open", "SIGSYS");
    decode_ok(&FRAMES[0]);
}

static void test_alloc_is_stopped(void **state)
{
    (void)state;
    if (TEST_SANITIZED) {
        skip();          /* no RLIMIT_AS under ASan or TSan (shadow) */
    }
    configure(1, 20000, (uint64_t)256 << 20);
    Frame *f = &FRAMES[0];
    uint8_t *out = malloc(f->len);
    AgError err;
    int rc = codec_decode_frame_isolated("test:alloc", &f->im, f->enc.data,
                                         f->enc.len, out, f->len, &err);
    /* The helper's malloc was refused below its ceiling, 256 MiB + 5 x 64
     * MiB (or 256 MiB + the frame where the pool may tighten it): it said
     * so itself. */
    assert_int_equal(rc, AG_ERR_NOMEM);
    unsigned long mib = 0;
    assert_int_equal(sscanf(err.msg, "allocated %lu MiB", &mib), 1);
    assert_true(mib < 576);
    free(out);
    configure(1, 10000, 0);
    decode_ok(&FRAMES[3]);
}

static void test_protocol_violations(void **state)
{
    (void)state;
    configure(1, 10000, 0);
    misbehave("test:garbage", "out of protocol");
    decode_ok(&FRAMES[0]);
    misbehave("test:short", "out of protocol");
    decode_ok(&FRAMES[1]);
    misbehave("test:exit", "connection lost");
    decode_ok(&FRAMES[2]);
}

typedef struct Worker {
    int id;
    int failures;
} Worker;

static void *worker(void *arg)
{
    Worker *w = arg;
    for (int k = 0; k < 24; k++) {
        const Frame *f = &FRAMES[(w->id + k) % 4];
        uint8_t *out = malloc(f->len);
        AgError err;
        if (isolated(f, out, &err) != AG_OK ||
            memcmp(out, f->want, f->len) != 0) {
            w->failures++;
        }
        free(out);
    }
    return NULL;
}

static void test_eight_threads_share_the_pool(void **state)
{
    (void)state;
    configure(2, 20000, 0);
    CodecSandboxStats a, b;
    codec_sandbox_stats(&a);
    pthread_t t[8];
    Worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (Worker){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    codec_sandbox_stats(&b);
    assert_int_equal(b.frames - a.frames, 8 * 24);
    assert_int_equal(b.failures, a.failures);
    assert_true(b.starts - a.starts <= 2);
    assert_true(codec_sandbox_helper_pid(2) == 0);   /* never a third */
}

/* Helpers crashing and being replaced on some threads while others take
 * and give back helpers: every good frame still decodes, every bad one
 * fails alone.  Under TSan this is where a helper's reset racing with
 * another thread's look for an idle one shows. */
static void *crasher(void *arg)
{
    Worker *w = arg;
    for (int k = 0; k < 6; k++) {
        const Frame *f = &FRAMES[0];
        uint8_t *out = malloc(f->len);
        AgError err;
        if (codec_decode_frame_isolated("test:crash", &f->im, f->enc.data,
                                        f->enc.len, out, f->len,
                                        &err) != AG_ERR_PARSE) {
            w->failures++;
        }
        free(out);
    }
    return NULL;
}

static void test_failures_beside_other_threads(void **state)
{
    (void)state;
    configure(2, 20000, 0);
    pthread_t t[6];
    Worker w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (Worker){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL,
                                        i % 2 ? crasher : worker, &w[i]),
                         0);
    }
    int failures = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    assert_int_equal(failures, 0);
    assert_true(codec_sandbox_helper_pid(2) == 0);   /* never a third */
}

static void test_configuration(void **state)
{
    (void)state;
    CodecSandboxConfig c;
    codec_sandbox_config_init(&c);
    AgError err;
    c.helpers = CODEC_SANDBOX_MAX_HELPERS + 1;
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_ERR_INVALID);
    codec_sandbox_config_init(&c);
    c.helper_path = "relative/agora";
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_ERR_INVALID);
    /* A helper that cannot be started: an error, not a hang. */
    c.helper_path = "/nonexistent/agora";
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_OK);
    Frame *f = &FRAMES[2];
    uint8_t *out = malloc(f->len);
    int rc = isolated(f, out, &err);
    assert_true(rc == AG_ERR_IO || rc == AG_ERR_PARSE);
    /* A program that is not a helper (exits at once): also an error. */
    c.helper_path = "/bin/true";
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_OK);
    assert_int_equal(isolated(f, out, &err), AG_ERR_PARSE);
    assert_non_null(strstr(err.msg, "start-up"));
    free(out);
    configure(2, 10000, 0);
    decode_ok(f);
}

static void test_agora_binary_as_helper(void **state)
{
    (void)state;
    /* `agora codec-helper`, the hidden command, serves the pool too. */
    const char *bin = getenv("AGORA_BIN");
    if (bin == NULL || access(bin, X_OK) != 0) {
        skip();
    }
    CodecSandboxConfig c;
    codec_sandbox_config_init(&c);
    c.helpers = 1;
    c.helper_path = bin;
    AgError err;
    assert_int_equal(codec_sandbox_configure(&c, &err), AG_OK);
    for (int i = 0; i < 4; i++) {
        decode_ok(&FRAMES[i]);
    }
    CodecSandboxStats st;
    codec_sandbox_stats(&st);
    pid_t pid = codec_sandbox_helper_pid(0);
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n > 0) {                  /* readable while we may ptrace it */
        target[n] = '\0';
        assert_non_null(strstr(target, "agora"));
    }
    configure(2, 10000, 0);
}

static void test_helper_by_hand_refuses(void **state)
{
    (void)state;
    /* Started without its descriptors, the helper says so: status 2. */
    char *argv[] = {(char *)"/proc/self/exe", (char *)"codec-helper", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 1, 0);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv,
                                 environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "codec-helper") == 0) {
        return codec_sandbox_helper_main(argc - 1, argv + 1);
    }
    setenv("AGORA_SANDBOX_TEST", "1", 1);
    ag_log_set_level(AG_LOG_ERROR);   /* the failures are on purpose */
    frames_make();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes_as_in_process),
        cmocka_unit_test(test_decoder_errors_pass_through),
        cmocka_unit_test(test_large_frame_grows_shared_memory),
        cmocka_unit_test(test_killed_helper_is_replaced),
        cmocka_unit_test(test_crash_fails_one_frame),
        cmocka_unit_test(test_spin_hits_the_deadline),
        cmocka_unit_test(test_seccomp_kills_open),
        cmocka_unit_test(test_alloc_is_stopped),
        cmocka_unit_test(test_protocol_violations),
        cmocka_unit_test(test_eight_threads_share_the_pool),
        cmocka_unit_test(test_failures_beside_other_threads),
        cmocka_unit_test(test_configuration),
        cmocka_unit_test(test_agora_binary_as_helper),
        cmocka_unit_test(test_helper_by_hand_refuses),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    codec_sandbox_shutdown();
    for (int i = 0; i < 4; i++) {
        ag_buf_deinit(&FRAMES[i].enc);
        free(FRAMES[i].want);
    }
    return rc;
}
