/*
 * access.c — users, departments, credentials, shares, break-the-glass
 * (access.h).  SQL is the portable subset (store_sql_select/exec).
 */
#include "access.h"

#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define RATE_SLOTS 1024
#define RATE_KEEP 32

typedef struct RateSlot {
    char key[96];
    uint32_t n;                 /* failures kept in t[] */
    int64_t t[RATE_KEEP];       /* their times, oldest first */
} RateSlot;

struct Access {
    AccessConfig cfg;
    pthread_mutex_t lock;       /* rate table */
    RateSlot *rate;
    char dummy_hash[crypto_pwhash_STRBYTES];
};

typedef struct Role {
    const char *name;
    uint32_t verbs;
} Role;

static const Role ROLES[] = {
    {"admin", ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_UPLOAD | ACCESS_SHARE |
                  ACCESS_ANNOTATE | ACCESS_DELETE | ACCESS_ADMIN |
                  ACCESS_AUDIT_READ},
    {"radiologist", ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_UPLOAD |
                        ACCESS_SHARE | ACCESS_ANNOTATE},
    {"clinician", ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_SHARE |
                      ACCESS_ANNOTATE},
    {"technologist", ACCESS_VIEW | ACCESS_UPLOAD},
    {"archivist", ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_UPLOAD |
                      ACCESS_DELETE},
    {"viewer", ACCESS_VIEW},
    {"auditor", ACCESS_AUDIT_READ},
};

static const char *const VERBS[] = {
    "view", "download", "upload", "share", "annotate", "delete", "admin",
    "audit-read",
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- roles ------------------------------------------------------------------ */

uint32_t access_role_verbs(const char *role)
{
    for (size_t i = 0; role != NULL && i < sizeof ROLES / sizeof ROLES[0];
         i++) {
        if (strcmp(role, ROLES[i].name) == 0) {
            return ROLES[i].verbs;
        }
    }
    return 0;
}

json_t *access_verbs_json(uint32_t verbs)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < sizeof VERBS / sizeof VERBS[0]; i++) {
        if (verbs & (1u << i)) {
            json_array_append_new(a, json_string(VERBS[i]));
        }
    }
    return a;
}

uint32_t access_verb_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++) {
        if (strcmp(name, VERBS[i]) == 0) {
            return 1u << i;
        }
    }
    return 0;
}

void access_principal_all(AccessPrincipal *p, AccessKind kind,
                          const char *name)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    ag_fmt(p->name, sizeof p->name, "%s", name);
    ag_fmt(p->role, sizeof p->role, "admin");
    p->verbs = access_role_verbs("admin");
    p->scope.all = true;
}

void access_copy(AccessPrincipal *dst, const AccessPrincipal *src)
{
    *dst = *src;
    if (src->scope.only_study != NULL) {
        dst->scope.only_study = dst->study_uid;
    }
}

/* ---- small SQL helpers -------------------------------------------------------- */

static int one_text(void *ctx, int ncol, const char *const *v)
{
    char **out = ctx;
    if (ncol > 0 && v[0] != NULL) {
        *out = ag_strdup(v[0]);
    }
    return 1;
}

/* First column of the first row, heap-allocated, or NULL. */
static char *select_text(Access *a, const char *sql, const char *const *p,
                         int n)
{
    char *out = NULL;
    AgError err;
    store_sql_select(a->cfg.store, sql, p, n, one_text, &out, &err);
    return out;
}

static int64_t select_id(Access *a, const char *sql, const char *const *p,
                         int n)
{
    char *v = select_text(a, sql, p, n);
    int64_t id = v != NULL ? strtoll(v, NULL, 10) : 0;
    ag_free(v);
    return id;
}

static int64_t user_id(Access *a, const char *name)
{
    const char *p[] = {name};
    return select_id(a, "SELECT id FROM users WHERE name = ?1", p, 1);
}

static int64_t dept_id(Access *a, const char *name)
{
    const char *p[] = {name};
    return select_id(a, "SELECT id FROM departments WHERE name = ?1", p, 1);
}

static int64_t study_id(Access *a, const char *uid)
{
    const char *p[] = {uid};
    return select_id(a, "SELECT id FROM studies WHERE study_uid = ?1", p, 1);
}

static int exec(Access *a, const char *sql, const char *const *p, int n,
                int64_t *changes, int64_t *last, AgError *err)
{
    return store_sql_exec(a->cfg.store, sql, p, n, changes, last, err);
}

/* exec that must change a row: AG_ERR_NOTFOUND naming what otherwise. */
static int exec_one(Access *a, const char *sql, const char *const *p, int n,
                    const char *what, AgError *err)
{
    int64_t changes = 0;
    int rc = exec(a, sql, p, n, &changes, NULL, err);
    if (rc == AG_OK && changes == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such %s", what);
    }
    return rc;
}

static void fmt_id(char out[24], int64_t v)
{
    ag_fmt(out, 24, "%" PRId64, v);
}

/* A name: 1–64 printable ASCII characters without separators. */
static bool valid_name(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == ':') {
            return false;
        }
    }
    return true;
}

static int name_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    if (v[0] != NULL) {
        json_array_append_new(ctx, json_string(v[0]));
    }
    return 0;
}

json_t *access_principal_json(Access *a, const AccessPrincipal *p)
{
    static const char *const KIND[] = {"user", "node", "anonymous", "link"};
    json_t *depts = json_array();
    if (p->user_id != 0) {
        char us[24];
        fmt_id(us, p->user_id);
        const char *q[] = {us};
        AgError err;
        store_sql_select(a->cfg.store, "SELECT d.name FROM user_depts m JOIN"
                         " departments d ON m.dept_pk = d.id WHERE"
                         " m.user_pk = ?1 ORDER BY d.name", q, 1, name_row,
                         depts, &err);
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "name", p->name,
                          "kind", KIND[p->kind], "role", p->role, "verbs",
                          access_verbs_json(p->verbs), "departments", depts);
    if (p->kind == ACCESS_KIND_LINK) {
        json_object_set_new(o, "study", json_string(p->study_uid));
    }
    return o;
}

/* ---- open / close --------------------------------------------------------------- */

int access_open(const AccessConfig *cfg, Access **out, AgError *err)
{
    if (sodium_init() < 0) {
        return ag_error_set(err, AG_ERR_IO, "libsodium failed to start");
    }
    Access *a = ag_calloc(1, sizeof *a);
    RateSlot *rate = ag_calloc(RATE_SLOTS, sizeof *rate);
    if (a == NULL || rate == NULL) {
        ag_free(a);
        ag_free(rate);
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    a->cfg = *cfg;
    a->rate = rate;
    if (a->cfg.session_seconds == 0) {
        a->cfg.session_seconds = 12 * 3600;
    }
    if (a->cfg.login_user_failures == 0) {
        a->cfg.login_user_failures = 5;
    }
    if (a->cfg.login_addr_failures == 0) {
        a->cfg.login_addr_failures = 20;
    }
    if (a->cfg.login_addr_failures > RATE_KEEP) {
        a->cfg.login_addr_failures = RATE_KEEP;
    }
    if (a->cfg.login_user_failures > RATE_KEEP) {
        a->cfg.login_user_failures = RATE_KEEP;
    }
    if (a->cfg.login_window_seconds == 0) {
        a->cfg.login_window_seconds = 300;
    }
    pthread_mutex_init(&a->lock, NULL);
    /* Hashed for unknown users, so they cost what known ones do. */
    unsigned char junk[16];
    randombytes_buf(junk, sizeof junk);
    if (crypto_pwhash_str(a->dummy_hash, (const char *)junk, sizeof junk,
                          crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        access_close(a);
        return ag_error_set(err, AG_ERR_NOMEM, "password hashing failed");
    }
    *out = a;
    return AG_OK;
}

void access_close(Access *a)
{
    if (a != NULL) {
        pthread_mutex_destroy(&a->lock);
        ag_free(a->rate);
        ag_free(a);
    }
}

/* ---- users ---------------------------------------------------------------------- */

static int hash_password(const char *pw, char out[crypto_pwhash_STRBYTES],
                         AgError *err)
{
    size_t n = strlen(pw);
    if (n < 8 || n > 1024) {
        return ag_error_set(err, AG_ERR_INVALID, "a password has 8 to 1024 "
                            "characters");
    }
    if (crypto_pwhash_str(out, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        return ag_error_set(err, AG_ERR_NOMEM, "password hashing failed");
    }
    return AG_OK;
}

int access_user_add(Access *a, const char *name, const char *password,
                    const char *role, AgError *err)
{
    if (!valid_name(name)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid user name");
    }
    if (access_role_verbs(role) == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "unknown role \"%.32s\"",
                            role ? role : "");
    }
    char h[crypto_pwhash_STRBYTES] = "";
    if (password != NULL && hash_password(password, h, err) != AG_OK) {
        return err->code;
    }
    char t[24];
    fmt_id(t, now_s());
    const char *p[] = {name, password != NULL ? h : NULL, role, t};
    int rc = exec(a, "INSERT INTO users (name, pwhash, role, created_at,"
                  " updated_at) VALUES (?1, ?2, ?3, ?4, ?4)", p, 4, NULL,
                  NULL, err);
    if (rc == AG_ERR_EXISTS) {
        return ag_error_set(err, rc, "user %s exists", name);
    }
    return rc;
}

int access_user_passwd(Access *a, const char *name, const char *password,
                       AgError *err)
{
    char h[crypto_pwhash_STRBYTES];
    if (hash_password(password, h, err) != AG_OK) {
        return err->code;
    }
    char t[24];
    fmt_id(t, now_s());
    const char *p[] = {name, h, t};
    return exec_one(a, "UPDATE users SET pwhash = ?2, updated_at = ?3"
                    " WHERE name = ?1", p, 3, "user", err);
}

int access_user_role(Access *a, const char *name, const char *role,
                     AgError *err)
{
    if (access_role_verbs(role) == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "unknown role \"%.32s\"",
                            role ? role : "");
    }
    const char *p[] = {name, role};
    return exec_one(a, "UPDATE users SET role = ?2 WHERE name = ?1", p, 2,
                    "user", err);
}

int access_user_disable(Access *a, const char *name, bool disabled,
                        AgError *err)
{
    const char *p[] = {name, disabled ? "1" : "0"};
    int rc = exec_one(a, "UPDATE users SET disabled = ?2 WHERE name = ?1", p,
                      2, "user", err);
    if (rc == AG_OK && disabled) {
        const char *q[] = {name};
        rc = exec(a, "UPDATE credentials SET revoked = 1 WHERE user_pk ="
                  " (SELECT id FROM users WHERE name = ?1)", q, 1, NULL,
                  NULL, err);
    }
    return rc;
}

int access_user_join(Access *a, const char *name, const char *dept,
                     bool join, AgError *err)
{
    int64_t u = user_id(a, name), d = dept_id(a, dept);
    if (u == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such user");
    }
    if (d == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such department");
    }
    char us[24], ds[24], cap[24];
    fmt_id(us, u);
    fmt_id(ds, d);
    fmt_id(cap, STORE_SCOPE_MAX_DEPTS);
    const char *p[] = {us, ds, cap};
    if (!join) {
        return exec(a, "DELETE FROM user_depts WHERE user_pk = ?1 AND"
                    " dept_pk = ?2", p, 2, NULL, NULL, err);
    }
    /* A scope holds STORE_SCOPE_MAX_DEPTS departments: one more would be
     * left out of it, and the user silently unable to see its studies.
     * The count and the insert are one statement (writes are serialised),
     * so two joins at once cannot both pass. */
    int64_t changes = 0;
    int rc = exec(a, "INSERT OR IGNORE INTO user_depts (user_pk, dept_pk)"
                  " SELECT ?1, ?2 WHERE (SELECT count(*) FROM user_depts"
                  " WHERE user_pk = ?1 AND dept_pk <> ?2)"
                  " < CAST(?3 AS INTEGER)", p, 3, &changes, NULL, err);
    if (rc != AG_OK || changes > 0) {
        return rc;
    }
    char *member = select_text(a, "SELECT 1 FROM user_depts WHERE"
                               " user_pk = ?1 AND dept_pk = ?2", p, 2);
    if (member != NULL) {
        ag_free(member);
        return AG_OK;   /* already in it */
    }
    return ag_error_set(err, AG_ERR_LIMIT, "%s is already in %d departments, "
                        "the most a user can be in", name,
                        STORE_SCOPE_MAX_DEPTS);
}

static int user_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    json_t *o = json_pack("{s:s, s:s, s:b, s:o}", "name", v[0], "role", v[1],
                          "disabled", v[2] != NULL && strcmp(v[2], "1") == 0,
                          "departments", json_array());
    if (v[3] != NULL) {
        /* group_concat with '\t': department names hold no tab */
        char *d = ag_strdup(v[3]);
        for (char *save = NULL, *t = d ? strtok_r(d, "\t", &save) : NULL;
             t != NULL; t = strtok_r(NULL, "\t", &save)) {
            json_array_append_new(json_object_get(o, "departments"),
                                  json_string(t));
        }
        ag_free(d);
    }
    json_array_append_new(ctx, o);
    return 0;
}

json_t *access_users_json(Access *a, AgError *err)
{
    json_t *arr = json_array();
    if (store_sql_select(a->cfg.store,
            "SELECT u.name, u.role, u.disabled, (SELECT group_concat(d.name,"
            " char(9)) FROM user_depts m JOIN departments d ON"
            " m.dept_pk = d.id WHERE m.user_pk = u.id) FROM users u"
            " ORDER BY u.name", NULL, 0, user_row, arr, err) != AG_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int access_bootstrap(Access *a, const char *password, char out_pw[33],
                     bool *created, AgError *err)
{
    *created = false;
    out_pw[0] = '\0';
    if (select_id(a, "SELECT count(*) FROM users", NULL, 0) > 0) {
        return AG_OK;
    }
    if (password == NULL) {
        /* 18 random bytes, base64url: 24 characters, 144 bits. */
        unsigned char r[18];
        randombytes_buf(r, sizeof r);
        sodium_bin2base64(out_pw, 33, r, sizeof r,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        password = out_pw;
    }
    int rc = access_user_add(a, "admin", password, "admin", err);
    *created = rc == AG_OK;
    return rc;
}

/* ---- departments ----------------------------------------------------------- */

int access_dept_add(Access *a, const char *name, const char *description,
                    AgError *err)
{
    if (!valid_name(name)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid department name");
    }
    char t[24];
    fmt_id(t, now_s());
    const char *p[] = {name, description, t};
    int rc = exec(a, "INSERT INTO departments (name, description, created_at)"
                  " VALUES (?1, ?2, ?3)", p, 3, NULL, NULL, err);
    if (rc == AG_ERR_EXISTS) {
        return ag_error_set(err, rc, "department %s exists", name);
    }
    return rc;
}

static bool valid_field(const char *f)
{
    static const char *const F[] = {"ae", "department", "institution",
                                    "service", "modality"};
    for (size_t i = 0; f != NULL && i < sizeof F / sizeof F[0]; i++) {
        if (strcmp(f, F[i]) == 0) {
            return true;
        }
    }
    return false;
}

int access_rule_check(const char *field, const char *value, AgError *err)
{
    if (!valid_field(field)) {
        return ag_error_set(err, AG_ERR_INVALID, "rule field is one of ae,"
                            " department, institution, service, modality");
    }
    if (value == NULL || value[0] == '\0' || strlen(value) > 64) {
        return ag_error_set(err, AG_ERR_INVALID, "rule value is 1 to 64 "
                            "characters");
    }
    return AG_OK;
}

bool access_dept_exists(Access *a, const char *name)
{
    return name != NULL && dept_id(a, name) != 0;
}

int access_dept_rule(Access *a, const char *dept, const char *field,
                     const char *value, bool add, AgError *err)
{
    int rc = access_rule_check(field, value, err);
    if (rc != AG_OK) {
        return rc;
    }
    int64_t d = dept_id(a, dept);
    if (d == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such department");
    }
    char ds[24];
    fmt_id(ds, d);
    const char *p[] = {ds, field, value};
    return exec(a, add ? "INSERT OR IGNORE INTO dept_rules (dept_pk, field,"
                         " value) VALUES (?1, ?2, upper(?3))"
                       : "DELETE FROM dept_rules WHERE dept_pk = ?1 AND"
                         " field = ?2 AND value = upper(?3)",
                p, 3, NULL, NULL, err);
}

static int dept_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    json_t *o = json_pack("{s:s, s:s?, s:o, s:o}", "name", v[0],
                          "description", v[1], "rules", json_array(),
                          "users", json_array());
    char *r = v[2] ? ag_strdup(v[2]) : NULL;
    for (char *save = NULL, *t = r ? strtok_r(r, "\t", &save) : NULL;
         t != NULL; t = strtok_r(NULL, "\t", &save)) {
        char *eq = strchr(t, '=');
        if (eq != NULL) {
            *eq = '\0';
            json_array_append_new(json_object_get(o, "rules"),
                                  json_pack("{s:s, s:s}", "field", t,
                                            "value", eq + 1));
        }
    }
    ag_free(r);
    char *u = v[3] ? ag_strdup(v[3]) : NULL;
    for (char *save = NULL, *t = u ? strtok_r(u, "\t", &save) : NULL;
         t != NULL; t = strtok_r(NULL, "\t", &save)) {
        json_array_append_new(json_object_get(o, "users"), json_string(t));
    }
    ag_free(u);
    json_array_append_new(ctx, o);
    return 0;
}

json_t *access_depts_json(Access *a, AgError *err)
{
    json_t *arr = json_array();
    if (store_sql_select(a->cfg.store,
            "SELECT d.name, d.description,"
            " (SELECT group_concat(r.field || '=' || r.value, char(9))"
            "  FROM dept_rules r WHERE r.dept_pk = d.id),"
            " (SELECT group_concat(u.name, char(9)) FROM user_depts m"
            "  JOIN users u ON m.user_pk = u.id WHERE m.dept_pk = d.id)"
            " FROM departments d ORDER BY d.name", NULL, 0, dept_row, arr,
            err) != AG_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int access_study_assign(Access *a, const char *study_uid, const char *dept,
                        bool add, AgError *err)
{
    int64_t st = study_id(a, study_uid), d = dept_id(a, dept);
    if (st == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such study");
    }
    if (d == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such department");
    }
    char ss[24], ds[24];
    fmt_id(ss, st);
    fmt_id(ds, d);
    const char *p[] = {ds, ss};
    return exec(a, add ? "INSERT OR IGNORE INTO study_depts (dept_pk,"
                         " study_pk, how) VALUES (?1, ?2, 'assigned')"
                       : "DELETE FROM study_depts WHERE dept_pk = ?1 AND"
                         " study_pk = ?2", p, 2, NULL, NULL, err);
}

/* ---- principals ------------------------------------------------------------- */

static int dept_ids(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    StoreScope *sc = ctx;
    if (sc->ndepts < STORE_SCOPE_MAX_DEPTS && v[0] != NULL) {
        sc->depts[sc->ndepts++] = strtoll(v[0], NULL, 10);
    }
    return 0;
}

typedef struct UserRow {
    bool found;
    int64_t id;
    char role[33];
    bool disabled;
    char pwhash[crypto_pwhash_STRBYTES];
} UserRow;

static int user_fields(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    UserRow *u = ctx;
    u->found = true;
    u->id = strtoll(v[0], NULL, 10);
    ag_fmt(u->role, sizeof u->role, "%s", v[1] ? v[1] : "");
    u->disabled = v[2] != NULL && strcmp(v[2], "0") != 0;
    ag_fmt(u->pwhash, sizeof u->pwhash, "%s", v[3] ? v[3] : "");
    return 1;
}

static void load_user(Access *a, const char *name, UserRow *u)
{
    memset(u, 0, sizeof *u);
    const char *p[] = {name};
    AgError err;
    store_sql_select(a->cfg.store, "SELECT id, role, disabled, pwhash FROM"
                     " users WHERE name = ?1", p, 1, user_fields, u, &err);
}

/* Fill p for a user row: role verbs; admins see the whole archive,
 * everyone else their departments (plus shares, lists, break-glass). */
static void user_principal(Access *a, const char *name, const UserRow *u,
                           AccessPrincipal *p)
{
    memset(p, 0, sizeof *p);
    p->kind = ACCESS_KIND_USER;
    ag_fmt(p->name, sizeof p->name, "%s", name);
    ag_fmt(p->role, sizeof p->role, "%s", u->role);
    p->user_id = u->id;
    p->verbs = access_role_verbs(u->role);
    p->scope.user = u->id;
    if (p->verbs & ACCESS_ADMIN) {
        p->scope.all = true;
        return;
    }
    char us[24];
    fmt_id(us, u->id);
    const char *q[] = {us};
    AgError err;
    store_sql_select(a->cfg.store, "SELECT dept_pk FROM user_depts WHERE"
                     " user_pk = ?1 ORDER BY dept_pk", q, 1, dept_ids,
                     &p->scope, &err);
}

int access_user_principal(Access *a, const char *name, AccessPrincipal *p,
                          AgError *err)
{
    UserRow u;
    load_user(a, name, &u);
    if (!u.found || u.disabled) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such user");
    }
    user_principal(a, name, &u, p);
    return AG_OK;
}

void access_node_principal(Access *a, const StoreNode *n, AccessPrincipal *p)
{
    (void)a;
    if (n->department_id == 0) {
        access_principal_all(p, ACCESS_KIND_NODE, n->aet);
        ag_fmt(p->role, sizeof p->role, "node");
        p->verbs = ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_UPLOAD;
        return;
    }
    memset(p, 0, sizeof *p);
    p->kind = ACCESS_KIND_NODE;
    ag_fmt(p->name, sizeof p->name, "%s", n->aet);
    ag_fmt(p->role, sizeof p->role, "node");
    p->verbs = ACCESS_VIEW | ACCESS_DOWNLOAD | ACCESS_UPLOAD;
    p->scope.depts[0] = n->department_id;
    p->scope.ndepts = 1;
}

/* ---- login rate limits ------------------------------------------------------- */

static RateSlot *rate_slot(Access *a, const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = key; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    }
    RateSlot *s = &a->rate[h % RATE_SLOTS];
    if (strcmp(s->key, key) != 0) {
        /* A collision evicts the older key: at worst a rate limit is
         * forgotten early, never applied to the wrong user. */
        memset(s, 0, sizeof *s);
        ag_fmt(s->key, sizeof s->key, "%s", key);
    }
    return s;
}

static void rate_expire(RateSlot *s, int64_t now, int64_t window)
{
    uint32_t k = 0;
    while (k < s->n && s->t[k] <= now - window) {
        k++;
    }
    memmove(s->t, s->t + k, (s->n - k) * sizeof s->t[0]);
    s->n -= k;
}

/* Seconds until key may try again (0 = now). */
static uint32_t rate_wait(Access *a, const char *key, uint32_t max)
{
    int64_t now = now_s(), w = a->cfg.login_window_seconds;
    RateSlot *s = rate_slot(a, key);
    rate_expire(s, now, w);
    return s->n >= max ? (uint32_t)(s->t[0] + w - now + 1) : 0;
}

static void rate_fail(Access *a, const char *key)
{
    RateSlot *s = rate_slot(a, key);
    rate_expire(s, now_s(), a->cfg.login_window_seconds);
    if (s->n == RATE_KEEP) {
        memmove(s->t, s->t + 1, (RATE_KEEP - 1) * sizeof s->t[0]);
        s->n--;
    }
    s->t[s->n++] = now_s();
}

AccessLogin access_login(Access *a, const char *user, const char *password,
                         const char *addr, AccessPrincipal *p,
                         uint32_t *retry_after)
{
    char ukey[96], akey[96];
    ag_fmt(ukey, sizeof ukey, "u:%.64s", user ? user : "");
    ag_fmt(akey, sizeof akey, "a:%.64s", addr ? addr : "");
    pthread_mutex_lock(&a->lock);
    uint32_t wu = rate_wait(a, ukey, a->cfg.login_user_failures);
    uint32_t wa = addr ? rate_wait(a, akey, a->cfg.login_addr_failures) : 0;
    pthread_mutex_unlock(&a->lock);
    if (wu > 0 || wa > 0) {
        *retry_after = wu > wa ? wu : wa;
        return ACCESS_LOGIN_LIMITED;
    }
    UserRow u;
    load_user(a, user ? user : "", &u);
    const char *h = u.found && u.pwhash[0] != '\0' ? u.pwhash : a->dummy_hash;
    size_t n = password ? strlen(password) : 0;
    bool ok = password != NULL && n <= 1024 &&
              crypto_pwhash_str_verify(h, password, n) == 0 &&
              h != a->dummy_hash && !u.disabled;
    if (!ok) {
        pthread_mutex_lock(&a->lock);
        rate_fail(a, ukey);
        if (addr != NULL) {
            rate_fail(a, akey);
        }
        pthread_mutex_unlock(&a->lock);
        return ACCESS_LOGIN_BAD;
    }
    user_principal(a, user, &u, p);
    return ACCESS_LOGIN_OK;
}

/* ---- credentials ------------------------------------------------------------- */

static void secret_hash(const char *secret, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)secret,
                       strlen(secret), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static void new_secret(const char *prefix, char out[64])
{
    unsigned char r[32];
    randombytes_buf(r, sizeof r);
    char b[48];
    sodium_bin2base64(b, sizeof b, r, sizeof r,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    ag_fmt(out, 64, "%s%s", prefix, b);
}

static int insert_credential(Access *a, const char *kind, int64_t user,
                             int64_t study, const char *name,
                             int64_t expires, char out[64], int64_t *id,
                             AgError *err)
{
    new_secret(strcmp(kind, "link") == 0 ? "agl_" :
               strcmp(kind, "token") == 0 ? "agt_" : "ags_", out);
    char h[65], us[24], ss[24], t[24], e[24];
    secret_hash(out, h);
    fmt_id(us, user);
    fmt_id(ss, study);
    fmt_id(t, now_s());
    fmt_id(e, expires);
    const char *p[] = {h, kind, user ? us : NULL, study ? ss : NULL, name, t,
                       e};
    int64_t last = 0;
    int rc = exec(a, "INSERT INTO credentials (hash, kind, user_pk, study_pk,"
                  " name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5,"
                  " ?6, ?7)", p, 7, NULL, &last, err);
    if (id != NULL) {
        *id = last;
    }
    if (rc != AG_OK) {
        sodium_memzero(out, 64);
    }
    return rc;
}

int access_credential_create(Access *a, const AccessPrincipal *p,
                             const char *kind, const char *name,
                             uint32_t seconds, char out[64], int64_t *id,
                             AgError *err)
{
    if (p->user_id == 0) {
        return ag_error_set(err, AG_ERR_INVALID, "only users hold sessions "
                            "and tokens");
    }
    bool session = strcmp(kind, "session") == 0;
    if (!session && strcmp(kind, "token") != 0) {
        return ag_error_set(err, AG_ERR_INVALID, "unknown credential kind");
    }
    if (session || seconds == 0) {
        seconds = session ? a->cfg.session_seconds : 30u * 86400u;
    }
    if (seconds > 366u * 86400u) {
        return ag_error_set(err, AG_ERR_INVALID, "a token lives at most a "
                            "year");
    }
    return insert_credential(a, kind, p->user_id, 0, name,
                             now_s() + seconds, out, id, err);
}

typedef struct CredRow {
    bool found;
    int64_t id;
    char kind[16];
    char user[65];
    char study[65];
} CredRow;

static int cred_fields(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    CredRow *c = ctx;
    c->found = true;
    c->id = strtoll(v[0], NULL, 10);
    ag_fmt(c->kind, sizeof c->kind, "%s", v[1] ? v[1] : "");
    ag_fmt(c->user, sizeof c->user, "%s", v[2] ? v[2] : "");
    ag_fmt(c->study, sizeof c->study, "%s", v[3] ? v[3] : "");
    return 1;
}

int access_authenticate(Access *a, const char *secret, AccessPrincipal *p,
                        AgError *err)
{
    if (secret == NULL || strlen(secret) < 20 || strlen(secret) > 63) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "unknown credential");
    }
    char h[65], t[24];
    secret_hash(secret, h);
    fmt_id(t, now_s());
    const char *q[] = {h, t};
    CredRow c = {0};
    store_sql_select(a->cfg.store,
        "SELECT c.id, c.kind, u.name, s.study_uid FROM credentials c"
        " LEFT JOIN users u ON c.user_pk = u.id"
        " LEFT JOIN studies s ON c.study_pk = s.id"
        " WHERE c.hash = ?1 AND c.revoked = 0 AND c.expires_at > ?2",
        q, 2, cred_fields, &c, err);
    if (!c.found) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "unknown credential");
    }
    if (strcmp(c.kind, "link") == 0) {
        if (c.study[0] == '\0') {
            return ag_error_set(err, AG_ERR_NOTFOUND, "unknown credential");
        }
        memset(p, 0, sizeof *p);
        p->kind = ACCESS_KIND_LINK;
        ag_fmt(p->name, sizeof p->name, "link");
        ag_fmt(p->role, sizeof p->role, "link");
        p->verbs = ACCESS_VIEW;
        p->credential_id = c.id;
        ag_fmt(p->study_uid, sizeof p->study_uid, "%s", c.study);
        p->scope.only_study = p->study_uid;
        return AG_OK;
    }
    if (access_user_principal(a, c.user, p, err) != AG_OK) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "unknown credential");
    }
    p->credential_id = c.id;
    return AG_OK;
}

int access_revoke_all(Access *a, int64_t user, const char *kind,
                      AgError *err)
{
    char us[24];
    fmt_id(us, user);
    const char *p[] = {us, kind};
    return exec(a, "UPDATE credentials SET revoked = 1 WHERE user_pk = ?1"
                " AND kind = ?2", p, 2, NULL, NULL, err);
}

int access_revoke(Access *a, const AccessPrincipal *by, int64_t id,
                  AgError *err)
{
    char is[24], us[24];
    fmt_id(is, id);
    fmt_id(us, by->user_id);
    const char *p[] = {is, us, (by->verbs & ACCESS_ADMIN) ? "1" : "0"};
    return exec_one(a, "UPDATE credentials SET revoked = 1 WHERE id = ?1"
                    " AND kind = 'token' AND (user_pk = ?2 OR ?3 = '1')", p,
                    3, "token", err);
}

static int token_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    json_array_append_new(ctx, json_pack("{s:I, s:s?, s:I, s:I, s:b}",
        "id", (json_int_t)strtoll(v[0], NULL, 10), "name", v[1],
        "created", (json_int_t)strtoll(v[2], NULL, 10),
        "expires", (json_int_t)strtoll(v[3], NULL, 10),
        "revoked", v[4] != NULL && strcmp(v[4], "0") != 0));
    return 0;
}

json_t *access_tokens_json(Access *a, const AccessPrincipal *p, AgError *err)
{
    char us[24];
    fmt_id(us, p->user_id);
    const char *q[] = {us};
    json_t *arr = json_array();
    if (store_sql_select(a->cfg.store, "SELECT id, name, created_at,"
                         " expires_at, revoked FROM credentials WHERE"
                         " user_pk = ?1 AND kind = 'token' ORDER BY id", q, 1,
                         token_row, arr, err) != AG_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* ---- shares ---------------------------------------------------------------- */

int access_share(Access *a, const AccessPrincipal *by, const AccessShare *sh,
                 char link_out[64], int64_t *id, AgError *err)
{
    StoreScope sc = by->scope;
    sc.no_glass = true;   /* break-the-glass grants view, not share */
    if (!store_study_visible(a->cfg.store, &sc, sh->study_uid)) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such study");
    }
    int targets = (sh->department != NULL) + (sh->user != NULL) +
                  (sh->list != NULL) + sh->link;
    if (targets != 1) {
        return ag_error_set(err, AG_ERR_INVALID, "share with exactly one of "
                            "department, user, list or link");
    }
    int64_t st = study_id(a, sh->study_uid), dept = 0, user = 0, list = 0,
            link = 0;
    if (sh->department != NULL && (dept = dept_id(a, sh->department)) == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such department");
    }
    if (sh->user != NULL && (user = user_id(a, sh->user)) == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such user");
    }
    if (sh->list != NULL) {
        const char *p[] = {sh->list};
        list = select_id(a, "SELECT id FROM lists WHERE name = ?1", p, 1);
        if (list == 0) {
            return ag_error_set(err, AG_ERR_NOTFOUND, "no such list");
        }
    }
    uint32_t secs = sh->seconds;
    if (sh->link && secs == 0) {
        secs = 7u * 86400u;
    }
    int64_t expires = secs ? now_s() + secs : 0;
    if (sh->link) {
        int rc = insert_credential(a, "link", 0, st, "share link",
                                   expires, link_out, &link, err);
        if (rc != AG_OK) {
            return rc;
        }
    }
    char s1[24], s2[24], s3[24], s4[24], s5[24], t[24], e[24];
    fmt_id(s1, st);
    fmt_id(s2, dept);
    fmt_id(s3, user);
    fmt_id(s4, list);
    fmt_id(s5, link);
    fmt_id(t, now_s());
    fmt_id(e, expires);
    const char *p[] = {s1, dept ? s2 : NULL, user ? s3 : NULL,
                       list ? s4 : NULL, link ? s5 : NULL, by->name, t,
                       expires ? e : NULL};
    return exec(a, "INSERT INTO shares (study_pk, dept_pk, user_pk, list_pk,"
                " link_pk, created_by, created_at, expires_at) VALUES (?1,"
                " ?2, ?3, ?4, ?5, ?6, ?7, ?8)", p, 8, NULL, id, err);
}

int access_unshare(Access *a, const AccessPrincipal *by, int64_t id,
                   AgError *err)
{
    char is[24];
    fmt_id(is, id);
    const char *p[] = {is};
    char *uid = select_text(a, "SELECT s.study_uid FROM shares h JOIN studies"
                            " s ON h.study_pk = s.id WHERE h.id = ?1", p, 1);
    bool ok = uid != NULL && store_study_visible(a->cfg.store, &by->scope,
                                                 uid);
    ag_free(uid);
    if (!ok) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such share");
    }
    int rc = exec(a, "UPDATE credentials SET revoked = 1 WHERE id ="
                  " (SELECT link_pk FROM shares WHERE id = ?1)", p, 1, NULL,
                  NULL, err);
    if (rc == AG_OK) {
        rc = exec_one(a, "DELETE FROM shares WHERE id = ?1", p, 1, "share",
                      err);
    }
    return rc;
}

static int share_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    json_t *o = json_pack("{s:I, s:s?, s:s?, s:s?, s:b, s:s?, s:I}",
        "id", (json_int_t)strtoll(v[0], NULL, 10), "department", v[1],
        "user", v[2], "list", v[3], "link", v[4] != NULL,
        "created_by", v[5], "created", (json_int_t)strtoll(v[6], NULL, 10));
    if (v[7] != NULL) {
        json_object_set_new(o, "expires",
                            json_integer(strtoll(v[7], NULL, 10)));
    }
    json_array_append_new(ctx, o);
    return 0;
}

json_t *access_shares_json(Access *a, const AccessPrincipal *by,
                           const char *study_uid, AgError *err)
{
    if (!store_study_visible(a->cfg.store, &by->scope, study_uid)) {
        ag_error_set(err, AG_ERR_NOTFOUND, "no such study");
        return NULL;
    }
    const char *p[] = {study_uid};
    json_t *arr = json_array();
    if (store_sql_select(a->cfg.store,
            "SELECT h.id, d.name, u.name, l.name, h.link_pk, h.created_by,"
            " h.created_at, h.expires_at FROM shares h"
            " JOIN studies s ON h.study_pk = s.id"
            " LEFT JOIN departments d ON h.dept_pk = d.id"
            " LEFT JOIN users u ON h.user_pk = u.id"
            " LEFT JOIN lists l ON h.list_pk = l.id"
            " WHERE s.study_uid = ?1 ORDER BY h.id", p, 1, share_row, arr,
            err) != AG_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int access_list_add(Access *a, const char *name, const char *created_by,
                    AgError *err)
{
    if (!valid_name(name)) {
        return ag_error_set(err, AG_ERR_INVALID, "invalid list name");
    }
    char t[24];
    fmt_id(t, now_s());
    const char *p[] = {name, created_by, t};
    int rc = exec(a, "INSERT INTO lists (name, created_by, created_at)"
                  " VALUES (?1, ?2, ?3)", p, 3, NULL, NULL, err);
    if (rc == AG_ERR_EXISTS) {
        return ag_error_set(err, rc, "list %s exists", name);
    }
    return rc;
}

int access_list_member(Access *a, const char *list, const char *user,
                       bool add, AgError *err)
{
    const char *p[] = {list};
    int64_t l = select_id(a, "SELECT id FROM lists WHERE name = ?1", p, 1);
    int64_t u = user_id(a, user);
    if (l == 0 || u == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, l == 0 ? "no such list"
                                                         : "no such user");
    }
    char ls[24], us[24];
    fmt_id(ls, l);
    fmt_id(us, u);
    const char *q[] = {ls, us};
    return exec(a, add ? "INSERT OR IGNORE INTO list_members (list_pk,"
                         " user_pk) VALUES (?1, ?2)"
                       : "DELETE FROM list_members WHERE list_pk = ?1 AND"
                         " user_pk = ?2", q, 2, NULL, NULL, err);
}

/* ---- break-the-glass ----------------------------------------------------------- */

int access_break_glass(Access *a, const AccessPrincipal *by,
                       const char *study_uid, const char *reason,
                       uint32_t seconds, AgError *err)
{
    if (by->user_id == 0 || !(by->verbs & ACCESS_VIEW)) {
        return ag_error_set(err, AG_ERR_DENIED, "only users who may view "
                            "studies can break the glass");
    }
    if (reason == NULL || strlen(reason) < 8 || strlen(reason) > 1024) {
        return ag_error_set(err, AG_ERR_INVALID, "state the reason (8 to "
                            "1024 characters)");
    }
    int64_t st = study_id(a, study_uid);
    if (st == 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no such study");
    }
    if (seconds == 0 || seconds > 24u * 3600u) {
        seconds = 4u * 3600u;
    }
    char us[24], ss[24], t[24], e[24];
    fmt_id(us, by->user_id);
    fmt_id(ss, st);
    fmt_id(t, now_s());
    fmt_id(e, now_s() + seconds);
    const char *p[] = {us, ss, reason, t, e};
    return exec(a, "INSERT INTO break_glass (user_pk, study_pk, reason,"
                " created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)", p, 5,
                NULL, NULL, err);
}

static int glass_row(void *ctx, int ncol, const char *const *v)
{
    (void)ncol;
    json_array_append_new(ctx, json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}",
        "id", (json_int_t)strtoll(v[0], NULL, 10), "user", v[1] ? v[1] : "",
        "study", v[2] ? v[2] : "", "reason", v[3] ? v[3] : "",
        "created", (json_int_t)strtoll(v[4], NULL, 10),
        "expires", (json_int_t)strtoll(v[5], NULL, 10)));
    return 0;
}

json_t *access_break_glass_json(Access *a, AgError *err)
{
    json_t *arr = json_array();
    if (store_sql_select(a->cfg.store,
            "SELECT b.id, u.name, s.study_uid, b.reason, b.created_at,"
            " b.expires_at FROM break_glass b JOIN users u ON b.user_pk ="
            " u.id JOIN studies s ON b.study_pk = s.id ORDER BY b.id DESC"
            " LIMIT 1000", NULL, 0, glass_row, arr, err) != AG_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}
