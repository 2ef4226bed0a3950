/*
 * cmd_audit.c — `agora audit verify|list`: check the tamper-evident chain of
 * the audit trail and read it (DESIGN.md §1: "an auditor reads who saw
 * which patient's images, when, from where, and can verify that the audit
 * trail was not altered").
 */
#include "audit/audit.h"
#include "cli/cli.h"

#include <ctype.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora audit verify [--data DIR]\n"
            "       agora audit list [--data DIR] [--user U] [--patient ID] "
            "[--study UID]\n"
            "                        [--since TIME] [--until TIME] "
            "[--action A] [--failures]\n"
            "                        [--limit N] [--json]\n\n"
            "verify: check every record of DIR/audit.db against its keyed "
            "hash chain;\n"
            "        prints \"N records, chain intact\" (exit 0) or the first "
            "record that\n"
            "        was changed, removed or moved (exit 1).\n"
            "list:   records matching every option, newest first (one per "
            "line, tab-\n"
            "        separated, or a JSON array).  Listing is itself "
            "recorded (Audit Log\n"
            "        Used).\n\n"
            "options:\n"
            "  --data DIR       data directory (default ./agora-data)\n"
            "  --user U         who acted (user name or calling AE title)\n"
            "  --patient ID     Patient ID\n"
            "  --study UID      Study Instance UID\n"
            "  --since TIME     from this UTC time (ISO 8601: 2024-05-01, "
            "2024-05-01T09:30Z)\n"
            "  --until TIME     up to this time, inclusive (a date includes "
            "its whole day)\n"
            "  --action A       an action code (C R U D E), an event code "
            "(110112) or\n"
            "                   name (query, login, application-start, ...)\n"
            "  --failures       only records whose outcome is not success\n"
            "  --limit N        at most N records (default 100, at most "
            "10000)\n"
            "  --json           a JSON array instead of text lines\n");
}

/* ---- verify ------------------------------------------------------------- */

static int verify(const char *dir)
{
    AuditVerifyResult res;
    AgError err;
    ag_error_clear(&err);
    if (audit_verify(dir, &res, &err) != AG_OK) {
        fprintf(stderr, "agora audit verify: %s\n", err.msg);
        return 1;
    }
    if (res.problem == AUDIT_INTACT) {
        printf("%llu records, chain intact\n",
               (unsigned long long)res.records);
        return 0;
    }
    printf("%llu records; %s\n", (unsigned long long)res.records, res.what);
    return 1;
}

/* ---- list --------------------------------------------------------------- */

/* "Application Start", "application-start" and "APPLICATION_START" match. */
static bool same_name(const char *a, const char *b)
{
    for (;;) {
        while (*a != '\0' && !isalnum((unsigned char)*a)) {
            a++;
        }
        while (*b != '\0' && !isalnum((unsigned char)*b)) {
            b++;
        }
        if (*a == '\0' || *b == '\0') {
            return *a == *b;
        }
        if (tolower((unsigned char)*a++) != tolower((unsigned char)*b++)) {
            return false;
        }
    }
}

static int parse_action(const char *s, AuditFilter *f)
{
    if (strlen(s) == 1 && strchr("CRUDEcrude", s[0]) != NULL) {
        f->action = (char)toupper((unsigned char)s[0]);
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == '\0' && audit_code_name((int)v)[0] != '\0') {
        f->event = (int)v;
        return 0;
    }
    for (int code = 110100; code <= 110199; code++) {
        const char *name = audit_code_name(code);
        if (name[0] != '\0' && same_name(s, name)) {
            f->event = code;
            return 0;
        }
    }
    return -1;
}

/* Terminal-safe: control characters (and the tab that separates columns)
 * are escaped (SECURITY.md rule 3). */
static void put_field(const char *s)
{
    if (s == NULL) {
        fputc('-', stdout);
        return;
    }
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\\') {
            printf("\\x%02x", c);
        } else {
            fputc(c, stdout);
        }
    }
}

static const char *text(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void print_text(json_t *arr)
{
    printf("seq\ttime\tevent\ttype\taction\toutcome\tuser\tsource\t"
           "destination\tpatient_id\tpatient_name\tstudy_uid\tcount\t"
           "detail\n");
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        printf("%lld\t%s\t%s\t", (long long)json_integer_value(
                                     json_object_get(o, "seq")),
               text(o, "time"), text(o, "event_name"));
        put_field(text(o, "type_name"));
        printf("\t%s\t%lld\t", text(o, "action"),
               (long long)json_integer_value(json_object_get(o, "outcome")));
        static const char *const F[] = {"user", "source", "destination",
                                        "patient_id", "patient_name",
                                        "study_uid"};
        for (size_t k = 0; k < sizeof F / sizeof F[0]; k++) {
            put_field(text(o, F[k]));
            fputc('\t', stdout);
        }
        printf("%lld\t", (long long)json_integer_value(
                             json_object_get(o, "count")));
        put_field(text(o, "detail"));
        fputc('\n', stdout);
    }
}

static const char *login_name(char *buf, size_t cap)
{
    struct passwd *pw = getpwuid(geteuid());
    if (pw != NULL && pw->pw_name != NULL) {
        snprintf(buf, cap, "%s", pw->pw_name);
    } else {
        snprintf(buf, cap, "uid %ld", (long)geteuid());
    }
    return buf;
}

/* What was asked, for the Audit Log Used record. */
static void describe(int argc, char **argv, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "agora audit list");
    for (int i = 0; i < argc && n < cap; i++) {
        n += (size_t)snprintf(buf + n, cap - n, " %s", argv[i]);
    }
}

static int list(const char *dir, const AuditFilter *f, bool json,
                const char *asked)
{
    char path[AG_PATH_MAX];
    if (ag_fmt(path, sizeof path, "%s/audit.db", dir) != AG_OK ||
        access(path, F_OK) != 0) {
        fprintf(stderr, "agora audit list: %s: no audit log\n", path);
        return 1;
    }
    AgError err;
    ag_error_clear(&err);
    AuditConfig cfg = {.data_dir = dir};
    AuditLog *log;
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        fprintf(stderr, "agora audit list: %s\n", err.msg);
        return 1;
    }
    json_t *arr = NULL;
    if (audit_search(log, f, &arr, &err) != AG_OK) {
        fprintf(stderr, "agora audit list: %s\n", err.msg);
        audit_close(log);
        return err.code == AG_ERR_INVALID ? 2 : 1;
    }
    /* Reading the trail is an audited event (PS3.15 A.5.3.2), recorded
     * after the search so that the listing shows the log as it was. */
    char who[64];
    AuditEvent ev = {.event = AUDIT_LOG_USED, .action = 'R',
                     .user = login_name(who, sizeof who), .detail = asked};
    int rc = audit_record(log, &ev, &err);
    if (rc == AG_OK) {
        rc = audit_flush(log, &err);
    }
    audit_close(log);
    if (rc != AG_OK) {
        fprintf(stderr, "agora audit list: %s\n", err.msg);
        json_decref(arr);
        return 1;
    }
    if (json) {
        json_dumpf(arr, stdout, JSON_INDENT(1) | JSON_ENSURE_ASCII);
        fputc('\n', stdout);
    } else {
        print_text(arr);
    }
    json_decref(arr);
    return 0;
}

int cmd_audit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"user", required_argument, NULL, 'u'},
        {"patient", required_argument, NULL, 'p'},
        {"study", required_argument, NULL, 's'},
        {"since", required_argument, NULL, 'S'},
        {"until", required_argument, NULL, 'U'},
        {"action", required_argument, NULL, 'a'},
        {"failures", no_argument, NULL, 'f'},
        {"limit", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "verify") != 0 &&
                     strcmp(argv[1], "list") != 0)) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1], *dir = "./agora-data";
    AuditFilter f = {0};
    bool json = false;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "h", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'u': f.user = optarg; break;
        case 'p': f.patient_id = optarg; break;
        case 's': f.study_uid = optarg; break;
        case 'S': f.since = optarg; break;
        case 'U': f.until = optarg; break;
        case 'f': f.failures = true; break;
        case 'j': json = true; break;
        case 'a':
            if (parse_action(optarg, &f) != 0) {
                fprintf(stderr, "agora audit list: unknown action or event "
                        "'%s'\n", optarg);
                return 2;
            }
            break;
        case 'l':
            f.limit = (uint32_t)strtoul(optarg, &end, 10);
            if (*end != '\0' || f.limit == 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(sub, "verify") == 0) {
        return verify(dir);
    }
    char asked[512];
    describe(argc - 2, argv + 2, asked, sizeof asked);
    return list(dir, &f, json, asked);
}
