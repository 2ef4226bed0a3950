/*
 * cmd_user.c — `agora user ...` and `agora dept ...`: users, roles,
 * departments, department rules and study assignment (issue 7).  The same
 * operations are in the REST API (/api/v1/users, /api/v1/departments).
 * They work on the data folder directly, with the server running or not.
 */
#include "access/access.h"
#include "audit/audit.h"
#include "cli/cli.h"

#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void user_usage(FILE *out)
{
    fprintf(out,
        "usage: agora user [--data DIR] add NAME [--role ROLE] "
        "[--department D]... [--password-stdin]\n"
        "       agora user [--data DIR] list [--json]\n"
        "       agora user [--data DIR] passwd NAME      (new password on "
        "stdin)\n"
        "       agora user [--data DIR] role NAME ROLE\n"
        "       agora user [--data DIR] disable|enable NAME\n"
        "       agora user [--data DIR] join|leave NAME DEPARTMENT\n"
        "       agora user [--data DIR] token NAME [--days N] [--name LABEL]\n"
        "\nRoles: admin, radiologist, clinician, technologist, archivist, "
        "viewer, auditor.\nWithout --password-stdin, `add` makes a random "
        "password and prints it once.\nDisabling a user ends their sessions "
        "and revokes their tokens.\n");
}

static void dept_usage(FILE *out)
{
    fprintf(out,
        "usage: agora dept [--data DIR] add NAME [DESCRIPTION]\n"
        "       agora dept [--data DIR] list [--json]\n"
        "       agora dept [--data DIR] rule DEPARTMENT FIELD VALUE "
        "[--remove]\n"
        "       agora dept [--data DIR] assign DEPARTMENT STUDY_UID "
        "[--remove]\n"
        "\nRules assign arriving studies to a department; FIELD is ae "
        "(calling AE title),\ndepartment (Institution Department Name), "
        "institution (Institution Name),\nservice (Requesting Service) or "
        "modality.  DICOM nodes join a department with\n`agora node "
        "--department D add ...`.\n");
}

typedef struct Opts {
    const char *data, *role, *label;
    const char *depts[16];
    int ndepts;
    bool json, remove, pw_stdin;
    long days;
} Opts;

/* Options anywhere; the rest (verb and arguments) left in argv order. */
static int parse(int argc, char **argv, Opts *o, void (*usage)(FILE *))
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"role", required_argument, NULL, 'r'},
        {"department", required_argument, NULL, 'D'},
        {"password-stdin", no_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"remove", no_argument, NULL, 'x'},
        {"days", required_argument, NULL, 'n'},
        {"name", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (Opts){.data = "./agora-data", .role = "viewer", .days = 30};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o->data = optarg; break;
        case 'r': o->role = optarg; break;
        case 'D':
            if (o->ndepts < 16) {
                o->depts[o->ndepts++] = optarg;
            }
            break;
        case 'p': o->pw_stdin = true; break;
        case 'j': o->json = true; break;
        case 'x': o->remove = true; break;
        case 'n': o->days = strtol(optarg, NULL, 10); break;
        case 'l': o->label = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    return -1;
}

/* One line from stdin without its newline; false on EOF. */
static bool read_line(char *buf, size_t cap)
{
    if (fgets(buf, (int)cap, stdin) == NULL) {
        return false;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return true;
}

static int open_all(const char *data, Store **s, Access **a, AgError *err)
{
    StoreConfig cfg = {.data_dir = data};
    if (store_open(&cfg, s, err) != AG_OK) {
        return err->code;
    }
    AccessConfig acfg = {.store = *s};
    if (access_open(&acfg, a, err) != AG_OK) {
        store_close(*s);
        return err->code;
    }
    return AG_OK;
}

static void print_json(json_t *j)
{
    char *t = json_dumps(j, JSON_INDENT(2));
    if (t != NULL) {
        printf("%s\n", t);
        free(t);
    }
}

static void print_users(json_t *users)
{
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) {
        printf("%-20s %-13s %s", json_string_value(json_object_get(u, "name")),
               json_string_value(json_object_get(u, "role")),
               json_is_true(json_object_get(u, "disabled")) ? "disabled "
                                                            : "");
        size_t k;
        json_t *d;
        json_array_foreach(json_object_get(u, "departments"), k, d) {
            printf("%s%s", k ? "," : "", json_string_value(d));
        }
        printf("\n");
    }
}

static int user_add(Access *a, const Opts *o, const char *name,
                    AgError *err)
{
    char pw[1100];
    bool shown = false;
    if (o->pw_stdin) {
        if (!read_line(pw, sizeof pw)) {
            return ag_error_set(err, AG_ERR_INVALID, "no password on stdin");
        }
    } else {
        unsigned char r[15];
        randombytes_buf(r, sizeof r);
        sodium_bin2base64(pw, sizeof pw, r, sizeof r,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        shown = true;
    }
    int rc = access_user_add(a, name, pw, o->role, err);
    for (int i = 0; rc == AG_OK && i < o->ndepts; i++) {
        rc = access_user_join(a, name, o->depts[i], true, err);
    }
    if (rc == AG_OK && shown) {
        printf("user %s (%s) created; password: %s\n", name, o->role, pw);
    } else if (rc == AG_OK) {
        printf("user %s (%s) created\n", name, o->role);
    }
    sodium_memzero(pw, sizeof pw);
    return rc;
}

static int user_token(Access *a, const Opts *o, const char *name,
                      AgError *err)
{
    AccessPrincipal p;
    if (access_user_principal(a, name, &p, err) != AG_OK) {
        return err->code;
    }
    if (o->days < 1 || o->days > 366) {
        return ag_error_set(err, AG_ERR_INVALID, "--days is 1 to 366");
    }
    char secret[64];
    int64_t id = 0;
    if (access_credential_create(a, &p, "token", o->label,
                                 (uint32_t)o->days * 86400u, secret, &id,
                                 err) != AG_OK) {
        return err->code;
    }
    printf("%s\n", secret);
    fprintf(stderr, "token %lld for %s, valid %ld days (send it as "
            "\"Authorization: Bearer TOKEN\")\n", (long long)id, name,
            o->days);
    sodium_memzero(secret, sizeof secret);
    return AG_OK;
}

static int user_verb(Access *a, const Opts *o, const char *verb, int n,
                     char **args, AgError *err)
{
    if (strcmp(verb, "add") == 0 && n == 1) {
        return user_add(a, o, args[0], err);
    }
    if (strcmp(verb, "list") == 0 && n == 0) {
        json_t *u = access_users_json(a, err);
        if (u == NULL) {
            return err->code;
        }
        o->json ? print_json(u) : print_users(u);
        json_decref(u);
        return AG_OK;
    }
    if (strcmp(verb, "passwd") == 0 && n == 1) {
        char pw[1100];
        if (!read_line(pw, sizeof pw)) {
            return ag_error_set(err, AG_ERR_INVALID, "no password on stdin");
        }
        int rc = access_user_passwd(a, args[0], pw, err);
        sodium_memzero(pw, sizeof pw);
        return rc;
    }
    if (strcmp(verb, "role") == 0 && n == 2) {
        return access_user_role(a, args[0], args[1], err);
    }
    if ((strcmp(verb, "disable") == 0 || strcmp(verb, "enable") == 0) &&
        n == 1) {
        return access_user_disable(a, args[0], verb[0] == 'd', err);
    }
    if ((strcmp(verb, "join") == 0 || strcmp(verb, "leave") == 0) && n == 2) {
        return access_user_join(a, args[0], args[1], verb[0] == 'j', err);
    }
    if (strcmp(verb, "token") == 0 && n == 1) {
        return user_token(a, o, args[0], err);
    }
    return 2;
}

/* A configuration change made here is recorded in the audit trail like
 * one made through the REST API (PS3.15 A.5.3.14, Security Alert). */
static void audit_change(const char *data, const char *cmd, const char *verb,
                         int n, char **args)
{
    AuditConfig cfg = {.data_dir = data};
    AuditLog *log = NULL;
    AgError err;
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        fprintf(stderr, "agora %s: audit trail: %s\n", cmd, err.msg);
        return;
    }
    char detail[256];
    ag_fmt(detail, sizeof detail, "agora %s %s %s%s%s", cmd, verb,
           n > 0 ? args[0] : "", n > 1 ? " " : "", n > 1 ? args[1] : "");
    const char *who = getenv("USER");
    AuditEvent ev = {.event = AUDIT_SECURITY_ALERT,
                     .type = strcmp(cmd, "user") == 0
                                 ? AUDIT_TYPE_USER_SECURITY_ATTRIBUTES_CHANGED
                                 : AUDIT_TYPE_SECURITY_CONFIGURATION,
                     .action = 'U', .user = who ? who : "(command line)",
                     .source = "localhost", .detail = detail};
    audit_record(log, &ev, NULL);
    audit_close(log);
}

static int run(int argc, char **argv, const char *cmd, void (*usage)(FILE *),
               int (*fn)(Access *, const Opts *, const char *, int, char **,
                         AgError *))
{
    Opts o;
    int prc = parse(argc, argv, &o, usage);
    if (prc >= 0) {
        return prc;
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    Store *s;
    Access *a;
    AgError err;
    ag_error_clear(&err);
    if (open_all(o.data, &s, &a, &err) != AG_OK) {
        fprintf(stderr, "agora %s: %s\n", cmd, err.msg);
        return 1;
    }
    const char *verb = argv[optind];
    int rc = fn(a, &o, verb, argc - optind - 1, argv + optind + 1, &err);
    if (rc == AG_OK && strcmp(verb, "list") != 0) {
        audit_change(o.data, cmd, verb, argc - optind - 1,
                     argv + optind + 1);
    }
    access_close(a);
    store_close(s);
    if (rc == 2) {
        usage(stderr);
        return 2;
    }
    if (rc != AG_OK) {
        fprintf(stderr, "agora %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

int cmd_user(int argc, char **argv)
{
    return run(argc, argv, "user", user_usage, user_verb);
}

static int dept_verb(Access *a, const Opts *o, const char *verb, int n,
                     char **args, AgError *err)
{
    if (strcmp(verb, "add") == 0 && (n == 1 || n == 2)) {
        return access_dept_add(a, args[0], n == 2 ? args[1] : NULL, err);
    }
    if (strcmp(verb, "list") == 0 && n == 0) {
        json_t *d = access_depts_json(a, err);
        if (d == NULL) {
            return err->code;
        }
        if (o->json) {
            print_json(d);
        } else {
            size_t i;
            json_t *x;
            json_array_foreach(d, i, x) {
                const char *desc = json_string_value(
                    json_object_get(x, "description"));
                printf("%-20s %s\n",
                       json_string_value(json_object_get(x, "name")),
                       desc != NULL ? desc : "");
            }
        }
        json_decref(d);
        return AG_OK;
    }
    if (strcmp(verb, "rule") == 0 && n == 3) {
        return access_dept_rule(a, args[0], args[1], args[2], !o->remove,
                                err);
    }
    if (strcmp(verb, "assign") == 0 && n == 2) {
        return access_study_assign(a, args[1], args[0], !o->remove, err);
    }
    return 2;
}

int cmd_dept(int argc, char **argv)
{
    return run(argc, argv, "dept", dept_usage, dept_verb);
}
