/*
 * test_audit.c — the audit trail against a real audit.db in a temporary
 * folder: records from many threads and from two writers at once keep a
 * gapless chain; every kind of tampering done with SQLite directly (a
 * field changed, a record removed from the middle or the end, records
 * swapped, the head rewritten or removed, another key) is named by
 * audit_verify(); searches filter and page; times parse; hostile strings
 * come out as well-formed XML; the RFC 5424/5425 frame is exact; injected
 * commit failures lose nothing (or are counted when the queue overflows);
 * every allocation of audit_record() may fail cleanly.
 *
 * ag_fault() reads AGORA_FAULT once per process, so fault cases run in a
 * fresh copy of this program (--fault-child MODE DIR).
 */
#include "../test_util.h"

#include "audit/audit_int.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmp_root[64];
static char dir[128];
static AgError err;

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    ag_fmt(tmp_root, sizeof tmp_root, "/tmp/agora-audit-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    ag_fmt(dir, sizeof dir, "%s/data", tmp_root);
    ag_error_clear(&err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static AuditLog *open_log(void)
{
    AuditConfig cfg = {.data_dir = dir};
    AuditLog *log = NULL;
    ag_error_clear(&err);
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        fail_msg("audit_open %s: %s", dir, err.msg);
    }
    return log;
}

/* Record i of a small varied log: users, patients, studies, events. */
static void record_nth(AuditLog *log, int i)
{
    static const char *const USERS[] = {"alice", "bob", "CT_SCANNER"};
    static const char *const PATIENTS[] = {"P1", "P2", NULL};
    char study[64], detail[64];
    snprintf(study, sizeof study, "1.2.826.0.1.3680043.10.543.%d", i % 4);
    snprintf(detail, sizeof detail, "record %d", i);
    AuditEvent ev = {
        .event = i % 5 == 0 ? AUDIT_QUERY : AUDIT_INSTANCES_ACCESSED,
        .outcome = i % 7 == 0 ? AUDIT_MINOR_FAILURE : AUDIT_SUCCESS,
        .user = USERS[i % 3], .source = "10.0.0.5",
        .patient_id = PATIENTS[i % 3], .study_uid = study,
        .count = (uint64_t)i, .detail = detail};
    assert_int_equal(audit_record(log, &ev, &err), AG_OK);
}

static void make_log(int n)
{
    AuditLog *log = open_log();
    for (int i = 1; i <= n; i++) {
        record_nth(log, i);
    }
    assert_int_equal(audit_flush(log, &err), AG_OK);
    audit_close(log);
}

static AuditVerifyResult verify(void)
{
    AuditVerifyResult res;
    ag_error_clear(&err);
    int rc = audit_verify(dir, &res, &err);
    if (rc != AG_OK) {
        fail_msg("audit_verify: %s", err.msg);
    }
    return res;
}

static void expect_intact(uint64_t records)
{
    AuditVerifyResult res = verify();
    if (res.problem != AUDIT_INTACT) {
        fail_msg("expected an intact chain, got: %s", res.what);
    }
    assert_int_equal(res.records, records);
}

static void expect_problem(AuditProblem p, uint64_t seq)
{
    AuditVerifyResult res = verify();
    if (res.problem != p || res.seq != seq) {
        fail_msg("expected problem %d at %llu, got %d at %llu: %s", (int)p,
                 (unsigned long long)seq, (int)res.problem,
                 (unsigned long long)res.seq, res.what);
    }
}

/* Tamper with audit.db the way an attacker without the key would. */
static void sql(const char *stmt)
{
    char path[256];
    ag_fmt(path, sizeof path, "%s/audit.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, stmt, NULL, NULL, &msg) != SQLITE_OK) {
        fail_msg("%s: %s", stmt, msg);
    }
    sqlite3_close(db);
}

static long long sql_int(const char *q)
{
    char path[256];
    ag_fmt(path, sizeof path, "%s/audit.db", dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ---- recording --------------------------------------------------------- */

#define THREADS 6
#define PER_THREAD 700

static void *recorder(void *arg)
{
    AuditLog *log = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        AuditEvent ev = {.event = AUDIT_QUERY, .user = "thread",
                         .detail = "PatientID=*"};
        if (audit_record(log, &ev, NULL) != AG_OK) {
            return (void *)1;
        }
        if (i % 100 == 0) {
            audit_flush(log, NULL);     /* flushes racing the writer */
        }
    }
    return NULL;
}

static void test_many_threads_gapless_chain(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, recorder, log), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    assert_int_equal(audit_flush(log, &err), AG_OK);
    AuditStats st;
    audit_stats(log, &st);
    assert_int_equal(st.last_seq, THREADS * PER_THREAD);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.lost, 0);
    audit_close(log);
    expect_intact(THREADS * PER_THREAD);
    assert_int_equal(sql_int("SELECT min(seq) FROM events"), 1);
    assert_int_equal(sql_int("SELECT max(seq) FROM events"),
                     THREADS * PER_THREAD);
    assert_int_equal(sql_int("SELECT count(DISTINCT seq) FROM events"),
                     THREADS * PER_THREAD);
    /* times never go backwards along the chain */
    assert_int_equal(sql_int("SELECT count(*) FROM events a JOIN events b"
                             " ON b.seq = a.seq + 1 WHERE b.time < a.time"),
                     0);
}

/* Two logs on one folder stand for the server and an `agora` command
 * writing at the same time: the head is read inside each transaction. */
static void test_two_writers_share_one_chain(void **state)
{
    (void)state;
    AuditLog *a = open_log(), *b = open_log();
    for (int i = 0; i < 300; i++) {
        record_nth(i % 2 ? a : b, i);
        if (i % 50 == 0) {
            audit_flush(a, NULL);
        }
    }
    assert_int_equal(audit_flush(a, &err), AG_OK);
    assert_int_equal(audit_flush(b, &err), AG_OK);
    audit_close(a);
    audit_close(b);
    expect_intact(300);
    assert_int_equal(sql_int("SELECT max(seq) FROM events"), 300);
}

static void test_close_commits_everything(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    for (int i = 1; i <= 2000; i++) {
        record_nth(log, i);
    }
    audit_close(log);       /* no flush: close must drain the queue */
    expect_intact(2000);
}

static void test_invalid_events_refused(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    AuditEvent bad[] = {
        {.event = (AuditEventId)123},
        {.event = AUDIT_QUERY, .type = (AuditEventType)110199},
        {.event = AUDIT_QUERY, .action = 'X'},
        {.event = AUDIT_QUERY, .outcome = (AuditOutcome)3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_error_clear(&err);
        assert_int_equal(audit_record(log, &bad[i], &err), AG_ERR_INVALID);
        assert_true(err.msg[0] != '\0');
    }
    /* the usual action code fills in; NULL log is a no-op */
    AuditEvent del = {.event = AUDIT_STUDY_DELETED, .study_uid = "1.2.3"};
    assert_int_equal(audit_record(log, &del, &err), AG_OK);
    assert_int_equal(audit_record(NULL, &del, &err), AG_OK);
    assert_int_equal(audit_flush(NULL, &err), AG_OK);
    json_t *arr;
    AuditFilter f = {0};
    assert_int_equal(audit_search(log, &f, &arr, &err), AG_OK);
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(arr, 0), "action")), "D");
    json_decref(arr);
    audit_close(log);
    expect_intact(1);
}

static void test_long_and_invalid_strings_bounded(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    char *big = malloc(20000);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    AuditEvent ev = {.event = AUDIT_QUERY, .user = big, .detail = big,
                     .patient_id = "bad\xff\xfe utf8 \xc3\xa9"};
    assert_int_equal(audit_record(log, &ev, &err), AG_OK);
    free(big);
    json_t *arr;
    AuditFilter f = {0};
    assert_int_equal(audit_search(log, &f, &arr, &err), AG_OK);
    json_t *o = json_array_get(arr, 0);
    const char *user = json_string_value(json_object_get(o, "user"));
    const char *detail = json_string_value(json_object_get(o, "detail"));
    assert_int_equal(strlen(user), AUDIT_FIELD_MAX);
    assert_int_equal(strlen(detail), AUDIT_DETAIL_MAX);
    assert_string_equal(user + AUDIT_FIELD_MAX - 3, "...");
    assert_string_equal(json_string_value(json_object_get(o, "patient_id")),
                        "bad\xef\xbf\xbd\xef\xbf\xbd utf8 \xc3\xa9");
    json_decref(arr);
    audit_close(log);
    expect_intact(1);
}

static void test_record_survives_every_oom(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    AuditEvent ev = {.event = AUDIT_QUERY, .user = "alice",
                     .patient_id = "P1", .detail = "keys"};
    int n;
    for (n = 1;; n++) {
        ag_test_fail_nth_alloc(n);
        int rc = audit_record(log, &ev, &err);
        if (rc == AG_OK) {
            break;
        }
        assert_int_equal(rc, AG_ERR_NOMEM);
    }
    ag_test_fail_nth_alloc(0);
    assert_true(n > 1);
    audit_close(log);
    expect_intact(1);
}

/* ---- verify: every tampering is named ---------------------------------- */

static void test_verify_intact_and_empty(void **state)
{
    (void)state;
    make_log(0);
    expect_intact(0);
    make_log(25);
    expect_intact(25);
}

static void test_verify_no_log(void **state)
{
    (void)state;
    AuditVerifyResult res;
    assert_int_equal(audit_verify(dir, &res, &err), AG_ERR_NOTFOUND);
}

static void test_changed_field_found(void **state)
{
    (void)state;
    /* every column the hash covers, and the hash itself */
    static const char *const EDITS[] = {
        "UPDATE events SET user = 'mallory' WHERE seq = 7",
        "UPDATE events SET source = '10.6.6.6' WHERE seq = 7",
        "UPDATE events SET destination = 'X' WHERE seq = 7",
        "UPDATE events SET patient_id = NULL WHERE seq = 7",
        "UPDATE events SET patient_id = '' WHERE seq = 7",
        "UPDATE events SET patient_name = 'Doe' WHERE seq = 7",
        "UPDATE events SET study_uid = study_uid || '1' WHERE seq = 7",
        "UPDATE events SET sop_class = '1.2' WHERE seq = 7",
        "UPDATE events SET event = 110104 WHERE seq = 7",
        "UPDATE events SET type = 110122 WHERE seq = 7",
        "UPDATE events SET action = 'D' WHERE seq = 7",
        "UPDATE events SET outcome = 0 WHERE seq = 7",
        "UPDATE events SET count = count + 1 WHERE seq = 7",
        "UPDATE events SET detail = detail || ' ' WHERE seq = 7",
        "UPDATE events SET time = '2020-01-01T00:00:00.000000Z' WHERE seq = 7",
        "UPDATE events SET time = time || ' ' WHERE seq = 7",
        "UPDATE events SET hash = '00' WHERE seq = 7",
        "UPDATE events SET hash = (SELECT hash FROM events WHERE seq = 6)"
        " WHERE seq = 7",
    };
    for (size_t i = 0; i < sizeof EDITS / sizeof EDITS[0]; i++) {
        teardown(NULL);
        setup(NULL);
        make_log(12);
        sql(EDITS[i]);
        AuditVerifyResult res = verify();
        if (res.seq != 7 || (res.problem != AUDIT_CHANGED &&
                             res.problem != AUDIT_REORDERED)) {
            fail_msg("%s: got %d at %llu: %s", EDITS[i], (int)res.problem,
                     (unsigned long long)res.seq, res.what);
        }
    }
}

static void test_changed_field_message(void **state)
{
    (void)state;
    make_log(12);
    sql("UPDATE events SET study_uid = '9.9.9' WHERE seq = 5");
    expect_problem(AUDIT_CHANGED, 5);
    AuditVerifyResult res = verify();
    assert_non_null(strstr(res.what, "record 5 changed"));
}

static void test_removed_record_found(void **state)
{
    (void)state;
    make_log(12);
    sql("DELETE FROM events WHERE seq = 4");
    expect_problem(AUDIT_MISSING, 4);
    sql("DELETE FROM events WHERE seq IN (5, 6)");
    AuditVerifyResult res = verify();
    assert_int_equal(res.seq, 4);
    assert_non_null(strstr(res.what, "records 4 to 6 missing"));
}

static void test_removed_then_renumbered_found(void **state)
{
    (void)state;
    make_log(12);
    /* close the gap: every later record moves down one */
    sql("DELETE FROM events WHERE seq = 4;"
        "UPDATE events SET seq = -seq WHERE seq > 4;"
        "UPDATE events SET seq = -seq - 1 WHERE seq < 0;"
        "UPDATE head SET seq = seq - 1");
    AuditVerifyResult res = verify();
    assert_int_not_equal(res.problem, AUDIT_INTACT);
    assert_int_equal(res.seq, 4);
}

static void test_reordered_records_found(void **state)
{
    (void)state;
    make_log(12);
    /* swap the numbers of records 3 and 4 */
    sql("UPDATE events SET seq = -1 WHERE seq = 3;"
        "UPDATE events SET seq = 3 WHERE seq = 4;"
        "UPDATE events SET seq = 4 WHERE seq = -1");
    expect_problem(AUDIT_REORDERED, 3);
    AuditVerifyResult res = verify();
    assert_non_null(strstr(res.what, "stored as record 4"));
}

static void test_swapped_contents_found(void **state)
{
    (void)state;
    make_log(12);
    /* swap everything but the numbers of records 8 and 10 */
    sql("CREATE TEMP TABLE t AS SELECT * FROM events WHERE seq IN (8, 10);"
        "UPDATE temp.t SET seq = 18 - seq;"
        "DELETE FROM events WHERE seq IN (8, 10);"
        "INSERT INTO events SELECT * FROM temp.t");
    expect_problem(AUDIT_REORDERED, 8);
}

static void test_removed_tail_found(void **state)
{
    (void)state;
    make_log(12);
    sql("DELETE FROM events WHERE seq = 12");
    expect_problem(AUDIT_MISSING, 12);
    sql("DELETE FROM events WHERE seq > 9");
    expect_problem(AUDIT_MISSING, 10);
    AuditVerifyResult res = verify();
    assert_non_null(strstr(res.what, "removed from the end"));
    sql("DELETE FROM events");
    expect_problem(AUDIT_MISSING, 1);
}

static void test_rewritten_head_found(void **state)
{
    (void)state;
    make_log(12);
    /* drop the tail and point the head at record 11, as far as the
     * attacker can: the MAC needs the key */
    sql("DELETE FROM events WHERE seq = 12;"
        "UPDATE head SET seq = 11, time = (SELECT time FROM events WHERE"
        " seq = 11), hash = (SELECT hash FROM events WHERE seq = 11)");
    expect_problem(AUDIT_HEAD, 12);
    /* and a server must not append to it */
    AuditConfig cfg = {.data_dir = dir};
    AuditLog *log = NULL;
    assert_int_equal(audit_open(&cfg, &log, &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "chain head"));
    sql("DELETE FROM head");
    expect_problem(AUDIT_HEAD, 12);
}

static void test_foreign_record_found(void **state)
{
    (void)state;
    make_log(5);
    sql("INSERT INTO events (seq, time, event, action, outcome, user, hash)"
        " VALUES (6, '2099-01-01T00:00:00.000000Z', 110112, 'E', 0, 'x',"
        " '0000000000000000000000000000000000000000000000000000000000000000')");
    AuditVerifyResult res = verify();
    assert_int_not_equal(res.problem, AUDIT_INTACT);
    assert_int_equal(res.seq, 6);
    sql("DELETE FROM events WHERE seq = 6;"
        "INSERT INTO events (seq, time, event, action, outcome, hash)"
        " VALUES (0, 'x', 1, 'E', 0, 'y')");
    expect_problem(AUDIT_FOREIGN, 0);
}

static void test_wrong_key_fails_at_first(void **state)
{
    (void)state;
    make_log(5);
    char path[256];
    ag_fmt(path, sizeof path, "%s/audit.key", dir);
    FILE *f = fopen(path, "wb");
    uint8_t other[AUDIT_KEY_BYTES];
    randombytes_buf(other, sizeof other);
    fwrite(other, 1, sizeof other, f);
    fclose(f);
    expect_problem(AUDIT_CHANGED, 1);
    AuditVerifyResult res = verify();
    assert_non_null(strstr(res.what, "audit.key"));
}

static void test_lost_key_not_replaced(void **state)
{
    (void)state;
    make_log(3);
    char path[256];
    ag_fmt(path, sizeof path, "%s/audit.key", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    unlink(path);
    AuditConfig cfg = {.data_dir = dir};
    AuditLog *log = NULL;
    assert_int_equal(audit_open(&cfg, &log, &err), AG_ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, "restore the key"));
    AuditVerifyResult res;
    assert_int_equal(audit_verify(dir, &res, &err), AG_ERR_NOTFOUND);
}

/* ---- search ------------------------------------------------------------ */

static json_t *search(AuditLog *log, const AuditFilter *f)
{
    json_t *arr = NULL;
    ag_error_clear(&err);
    if (audit_search(log, f, &arr, &err) != AG_OK) {
        fail_msg("audit_search: %s", err.msg);
    }
    return arr;
}

static size_t count(AuditLog *log, const AuditFilter *f)
{
    json_t *arr = search(log, f);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

static long long seq_at(json_t *arr, size_t i)
{
    return json_integer_value(json_object_get(json_array_get(arr, i),
                                              "seq"));
}

static void test_search_filters(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    for (int i = 1; i <= 60; i++) {
        record_nth(log, i);
    }
    AuditEvent login = {.event = AUDIT_USER_AUTHENTICATION,
                        .type = AUDIT_TYPE_LOGIN, .user = "alice",
                        .outcome = AUDIT_MINOR_FAILURE,
                        .detail = "bad password"};
    assert_int_equal(audit_record(log, &login, &err), AG_OK);

    AuditFilter all = {.limit = 1000};
    assert_int_equal(count(log, &all), 61);
    AuditFilter f = {.user = "bob", .limit = 1000};
    assert_int_equal(count(log, &f), 20);                 /* i % 3 == 1 */
    f = (AuditFilter){.patient_id = "P2", .limit = 1000};
    assert_int_equal(count(log, &f), 20);                 /* i % 3 == 1 */
    f = (AuditFilter){.study_uid = "1.2.826.0.1.3680043.10.543.0",
                      .limit = 1000};
    assert_int_equal(count(log, &f), 15);                 /* i % 4 == 0 */
    f = (AuditFilter){.event = AUDIT_QUERY, .limit = 1000};
    assert_int_equal(count(log, &f), 12);                 /* i % 5 == 0 */
    f = (AuditFilter){.event = AUDIT_TYPE_LOGIN};
    assert_int_equal(count(log, &f), 1);
    f = (AuditFilter){.action = 'E', .limit = 1000};      /* queries, login */
    assert_int_equal(count(log, &f), 13);
    f = (AuditFilter){.failures = true, .limit = 1000};
    assert_int_equal(count(log, &f), 8 + 1);              /* i % 7 == 0 */
    f = (AuditFilter){.user = "bob", .patient_id = "P2",
                      .event = AUDIT_INSTANCES_ACCESSED, .limit = 1000};
    assert_int_equal(count(log, &f), 16);
    f = (AuditFilter){.user = "nobody"};
    assert_int_equal(count(log, &f), 0);
    f = (AuditFilter){.user = "' OR 1=1 --"};             /* parameterised */
    assert_int_equal(count(log, &f), 0);

    /* newest first, limit, offset, key paging */
    f = (AuditFilter){.limit = 10};
    json_t *arr = search(log, &f);
    assert_int_equal(json_array_size(arr), 10);
    assert_int_equal(seq_at(arr, 0), 61);
    assert_int_equal(seq_at(arr, 9), 52);
    json_t *first = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(first,
                                                          "type_name")),
                        "Login");
    assert_string_equal(json_string_value(json_object_get(first,
                                                          "event_name")),
                        "User Authentication");
    assert_null(json_object_get(first, "patient_id"));     /* absent */
    assert_int_equal(json_integer_value(json_object_get(first, "outcome")),
                     4);
    json_decref(arr);
    f = (AuditFilter){.limit = 5, .offset = 10};
    arr = search(log, &f);
    assert_int_equal(seq_at(arr, 0), 51);
    json_decref(arr);
    f = (AuditFilter){.limit = 5, .before = 20};
    arr = search(log, &f);
    assert_int_equal(seq_at(arr, 0), 19);
    assert_int_equal(seq_at(arr, 4), 15);
    json_decref(arr);
    f = (AuditFilter){0};
    assert_int_equal(count(log, &f), AUDIT_SEARCH_DEFAULT < 61
                                         ? AUDIT_SEARCH_DEFAULT : 61);
    audit_close(log);
}

static void test_search_by_time(void **state)
{
    (void)state;
    AuditLog *log = open_log();
    for (int i = 1; i <= 10; i++) {
        record_nth(log, i);
        usleep(2000);       /* distinct times */
    }
    AuditFilter f = {.limit = 100};
    json_t *arr = search(log, &f);
    /* the time of record 4 (index 6 newest first) */
    const char *t4 = json_string_value(json_object_get(
        json_array_get(arr, 6), "time"));
    char since[AUDIT_TIME_SIZE];
    snprintf(since, sizeof since, "%s", t4);
    json_decref(arr);
    f = (AuditFilter){.since = since, .limit = 100};
    arr = search(log, &f);
    assert_int_equal(seq_at(arr, json_array_size(arr) - 1), 4);
    json_decref(arr);
    f = (AuditFilter){.until = since, .limit = 100};
    arr = search(log, &f);
    assert_int_equal(seq_at(arr, 0), 4);
    json_decref(arr);
    f = (AuditFilter){.since = "2000-01-01", .until = "2000-12-31"};
    assert_int_equal(count(log, &f), 0);
    f = (AuditFilter){.since = "1999-01-01", .until = "9999-12-31"};
    assert_int_equal(count(log, &f), 10);
    f = (AuditFilter){.since = "yesterday"};
    json_t *none = NULL;
    assert_int_equal(audit_search(log, &f, &none, &err), AG_ERR_INVALID);
    assert_non_null(strstr(err.msg, "yesterday"));
    assert_null(none);
    audit_close(log);
}

/* ---- times ------------------------------------------------------------- */

static void test_time_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool end;
        const char *out;
    } OK[] = {
        {"2024-05-01", false, "2024-05-01T00:00:00.000000Z"},
        {"2024-05-01", true, "2024-05-01T23:59:59.999999Z"},
        {"20240501", false, "2024-05-01T00:00:00.000000Z"},
        {"2024-05-01T09:30", false, "2024-05-01T09:30:00.000000Z"},
        {"2024-05-01T09:30", true, "2024-05-01T09:30:59.999999Z"},
        {"2024-05-01 09:30:15", false, "2024-05-01T09:30:15.000000Z"},
        {"2024-05-01T09:30:15Z", true, "2024-05-01T09:30:15.999999Z"},
        {"2024-05-01T09:30:15.25", false, "2024-05-01T09:30:15.250000Z"},
        {"2024-05-01T09:30:15.25", true, "2024-05-01T09:30:15.259999Z"},
        {"2024-05-01T09:30:15.1234567Z", false,
         "2024-05-01T09:30:15.123456Z"},
        {"2024-05-01T01:30:00+02:00", false, "2024-04-30T23:30:00.000000Z"},
        {"2024-12-31T23:00:00-0500", false, "2025-01-01T04:00:00.000000Z"},
        {"2024-02-29", false, "2024-02-29T00:00:00.000000Z"},
    };
    char out[AUDIT_TIME_SIZE];
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        ag_error_clear(&err);
        if (audit_time_parse(OK[i].in, OK[i].end, out, &err) != AG_OK) {
            fail_msg("%s: %s", OK[i].in, err.msg);
        }
        assert_string_equal(out, OK[i].out);
    }
    static const char *const BAD[] = {
        "", "2024", "2024-5-1", "2023-02-29", "2024-13-01", "2024-05-32",
        "2024-05-01T25:00", "2024-05-01T09", "2024-05-01T09:30:15.",
        "2024-05-01T09:30+25:00", "2024-0501", "2024-05-01Tx", "yesterday",
        "2024-05-01T09:30:15Zjunk", "0000-01-01",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        if (audit_time_parse(BAD[i], false, out, &err) != AG_ERR_INVALID) {
            fail_msg("'%s' was accepted as %s", BAD[i], out);
        }
    }
    assert_int_equal(audit_time_parse(NULL, false, out, &err),
                     AG_ERR_INVALID);
}

/* ---- XML and syslog ---------------------------------------------------- */

static char *xml_of(const AuditRecord *r)
{
    AuditSource src = {.source_id = "AGORA", .site_id = "Hospital",
                       .host = "pacs.example"};
    AgBuf b;
    ag_buf_init(&b, 0);
    assert_int_equal(audit__xml(r, &src, &b), AG_OK);
    assert_int_equal(ag_buf_append(&b, "", 1), AG_OK);
    return ag_buf_steal(&b);
}

static void test_xml_escaping(void **state)
{
    (void)state;
    AgBuf b;
    ag_buf_init(&b, 0);
    assert_int_equal(audit__xml_escape(&b, "a\"b'c<d>&e\x01"
                                       "f\tg\nh\ri\x7f" "j\xc2\x85k\xff"
                                       "l\xef\xbf\xbfm", true),
                     AG_OK);
    ag_buf_append(&b, "", 1);
    assert_string_equal((char *)b.data,
                        "a&quot;b&apos;c&lt;d&gt;&amp;e\xef\xbf\xbd"
                        "f&#9;g&#10;h&#13;i&#x7F;j&#x85;k\xef\xbf\xbd"
                        "l\xef\xbf\xbdm");
    ag_buf_reset(&b);
    assert_int_equal(audit__xml_escape(&b, "x\"y\tz\n</A>]]>", false),
                     AG_OK);
    ag_buf_append(&b, "", 1);
    assert_string_equal((char *)b.data, "x\"y\tz\n&lt;/A&gt;]]&gt;");
    ag_buf_deinit(&b);
}

static void test_xml_message(void **state)
{
    (void)state;
    AuditRecord r = {.seq = 3, .time = "2024-05-01T09:30:15.000001Z"};
    r.ev = (AuditEvent){.event = AUDIT_QUERY, .action = 'E',
                        .user = "MOD\"<1>", .source = "10.1.2.3",
                        .destination = "AGORA",
                        .sop_class = "1.2.840.10008.5.1.4.1.2.2.1",
                        .detail = "PatientName=O'Brien&<x>"};
    char *x = xml_of(&r);
    assert_non_null(strstr(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                              "<AuditMessage><EventIdentification "
                              "EventActionCode=\"E\" EventDateTime=\""
                              "2024-05-01T09:30:15.000001Z\" "
                              "EventOutcomeIndicator=\"0\"><EventID "
                              "csd-code=\"110112\" codeSystemName=\"DCM\" "
                              "originalText=\"Query\"/>"));
    assert_non_null(strstr(x, "UserID=\"MOD&quot;&lt;1&gt;\" "
                              "UserIsRequestor=\"true\" "
                              "NetworkAccessPointID=\"10.1.2.3\" "
                              "NetworkAccessPointTypeCode=\"2\""));
    assert_non_null(strstr(x, "<AuditSourceIdentification "
                              "AuditEnterpriseSiteID=\"Hospital\" "
                              "AuditSourceID=\"AGORA\">"));
    /* the query keys travel base64-encoded (PS3.15 A.5.3.13) */
    assert_non_null(strstr(x, "<ParticipantObjectQuery>UGF0aWVudE5hbWU9TydC"
                              "cmllbiY8eD4=</ParticipantObjectQuery>"));
    assert_null(strstr(x, "O'Brien"));
    assert_non_null(strstr(x, "</AuditMessage>"));
    ag_free(x);

    r.ev = (AuditEvent){.event = AUDIT_INSTANCES_TRANSFERRED, .action = 'C',
                        .outcome = AUDIT_SERIOUS_FAILURE, .user = "CT1",
                        .patient_id = "P<1>", .patient_name = "Doe^J\x01",
                        .study_uid = "1.2.3", .count = 42,
                        .sop_class = "1.2.840.10008.5.1.4.1.1.2",
                        .detail = "disk & full"};
    x = xml_of(&r);
    assert_non_null(strstr(x, "EventOutcomeIndicator=\"8\""));
    assert_non_null(strstr(x, "<EventOutcomeDescription>disk &amp; full"
                              "</EventOutcomeDescription>"));
    assert_non_null(strstr(x, "ParticipantObjectID=\"P&lt;1&gt;\" "
                              "ParticipantObjectTypeCode=\"1\" "
                              "ParticipantObjectTypeCodeRole=\"1\">"));
    assert_non_null(strstr(x, "<ParticipantObjectName>Doe^J\xef\xbf\xbd"
                              "</ParticipantObjectName>"));
    assert_non_null(strstr(x, "<SOPClass UID=\"1.2.840.10008.5.1.4.1.1.2\" "
                              "NumberOfInstances=\"42\"/>"));
    assert_non_null(strstr(x, "csd-code=\"110153\""));   /* CT1 sent */
    assert_non_null(strstr(x, "csd-code=\"110152\""));   /* we received */
    ag_free(x);

    r.ev = (AuditEvent){.event = AUDIT_APPLICATION_ACTIVITY,
                        .type = AUDIT_TYPE_APPLICATION_START,
                        .action = 'E', .user = "root"};
    x = xml_of(&r);
    assert_non_null(strstr(x, "<EventTypeCode csd-code=\"110120\" "
                              "codeSystemName=\"DCM\" originalText="
                              "\"Application Start\"/>"));
    assert_non_null(strstr(x, "UserID=\"AGORA\" UserIsRequestor=\"false\" "
                              "NetworkAccessPointID=\"pacs.example\" "
                              "NetworkAccessPointTypeCode=\"1\"><RoleIDCode"
                              " csd-code=\"110150\""));
    assert_non_null(strstr(x, "csd-code=\"110151\""));
    ag_free(x);
}

static void test_syslog_frame(void **state)
{
    (void)state;
    AuditSource src = {.source_id = "AGORA", .host = "pacs host"};
    AuditRecord r = {.seq = 1, .time = "2024-05-01T09:30:15.000001Z"};
    r.ev = (AuditEvent){.event = AUDIT_APPLICATION_ACTIVITY,
                        .type = AUDIT_TYPE_APPLICATION_START, .action = 'E'};
    AgBuf b;
    ag_buf_init(&b, 0);
    assert_int_equal(audit__syslog_frame(&r, &src, "4242", &b), AG_OK);
    /* two frames back to back: the reader splits on the counts alone */
    r.ev.outcome = AUDIT_MINOR_FAILURE;
    size_t first_len = b.len;
    assert_int_equal(audit__syslog_frame(&r, &src, "4242", &b), AG_OK);
    ag_buf_append(&b, "", 1);
    const char *p = (const char *)b.data;
    for (int i = 0; i < 2; i++) {
        char *sp;
        unsigned long n = strtoul(p, &sp, 10);
        assert_true(*sp == ' ' && n > 0);
        const char *msg = sp + 1;
        const char *want = i == 0
            ? "<85>1 2024-05-01T09:30:15.000001Z pacs_host agora 4242 "
              "IHE+RFC-3881 - \xef\xbb\xbf<?xml "
            : "<84>1 2024-05-01T09:30:15.000001Z pacs_host agora 4242 "
              "IHE+RFC-3881 - \xef\xbb\xbf<?xml ";
        assert_memory_equal(msg, want, strlen(want));
        const char *endp = msg + n;
        assert_memory_equal(endp - strlen("</AuditMessage>"),
                            "</AuditMessage>", strlen("</AuditMessage>"));
        if (i == 0) {
            assert_int_equal((size_t)(endp - (const char *)b.data),
                             first_len);
        } else {
            assert_int_equal(*endp, '\0');
        }
        p = endp;
    }
    ag_buf_deinit(&b);
}

/* ---- injected faults (in a child process) ------------------------------ */

static int fault_child(const char *mode, const char *d)
{
    ag_fmt(dir, sizeof dir, "%s", d);
    ag_log_set_level(AG_LOG_OFF);
    AuditConfig cfg = {.data_dir = dir, .queue_max = 4};
    AuditLog *log;
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        printf("open: %s\n", err.msg);
        return 1;
    }
    AuditEvent ev = {.event = AUDIT_QUERY, .user = "u"};
    if (strcmp(mode, "retry") == 0) {
        /* the first commit fails, the writer retries after a back-off,
         * and nothing is lost.  flush reports failures that happen while
         * it waits: when the writer failed and retried before the first
         * flush began (a loaded machine), that flush rightly succeeds;
         * the second always does. */
        for (int i = 0; i < 4; i++) {
            if (audit_record(log, &ev, &err) != AG_OK) {
                printf("record: %s\n", err.msg);
                return 1;
            }
        }
        int first = audit_flush(log, &err);
        int second = audit_flush(log, &err);
        if ((first != AG_ERR_IO && first != AG_OK) || second != AG_OK) {
            printf("flush: %d then %d\n", first, second);
            return 1;
        }
    } else {
        /* every commit fails: flush reports it; the queue fills, then
         * records are refused after a short wait and counted */
        if (audit_record(log, &ev, &err) != AG_OK ||
            audit_flush(log, &err) != AG_ERR_IO) {
            printf("flush while every commit fails: not AG_ERR_IO\n");
            return 1;
        }
        int refused = 0;
        for (int i = 0; i < 5; i++) {
            refused += audit_record(log, &ev, &err) == AG_ERR_LIMIT;
        }
        AuditStats st;
        audit_stats(log, &st);
        if (refused == 0 || st.lost != (uint64_t)refused) {
            printf("refused %d, lost %llu\n", refused,
                   (unsigned long long)st.lost);
            return 1;
        }
    }
    audit_close(log);
    return 0;
}

static int run_fault_child(const char *fault, const char *mode)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("AGORA_FAULT", fault, 1);
        execl("/proc/self/exe", "test_audit", "--fault-child", mode, dir,
              (char *)NULL);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_failed_commit_retried(void **state)
{
    (void)state;
    assert_int_equal(run_fault_child("audit.commit:1", "retry"), 0);
    expect_intact(4);
}

static void test_full_queue_counts_losses(void **state)
{
    (void)state;
    assert_int_equal(run_fault_child("audit.commit:*", "full"), 0);
    expect_intact(0);       /* nothing half-written either */
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--fault-child") == 0) {
        return fault_child(argv[2], argv[3]);
    }
    if (getenv("AGORA_FAULT") != NULL) {
        fprintf(stderr, "test_audit: unset AGORA_FAULT first\n");
        return 1;
    }
    ag_log_set_level(AG_LOG_OFF);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_many_threads_gapless_chain),
        T(test_two_writers_share_one_chain),
        T(test_close_commits_everything),
        T(test_invalid_events_refused),
        T(test_long_and_invalid_strings_bounded),
        T(test_record_survives_every_oom),
        T(test_verify_intact_and_empty),
        T(test_verify_no_log),
        T(test_changed_field_found),
        T(test_changed_field_message),
        T(test_removed_record_found),
        T(test_removed_then_renumbered_found),
        T(test_reordered_records_found),
        T(test_swapped_contents_found),
        T(test_removed_tail_found),
        T(test_rewritten_head_found),
        T(test_foreign_record_found),
        T(test_wrong_key_fails_at_first),
        T(test_lost_key_not_replaced),
        T(test_search_filters),
        T(test_search_by_time),
        T(test_time_parse),
        T(test_xml_escaping),
        T(test_xml_message),
        T(test_syslog_frame),
        T(test_failed_commit_retried),
        T(test_full_queue_counts_losses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
