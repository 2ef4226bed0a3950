/*
 * settings.c — the run-time settings (store.h): what an administrator
 * changes while the server runs, kept in the index's settings table so
 * that it survives a restart.
 *
 * Each setting's current value is an index into its list of choices in an
 * atomic int (StoreSettings, store_int.h): ingest, associations and
 * queries read it at each use without a lock and never see a torn value.
 * A change is checked whole, stored in one statement, and only then
 * applied, under a mutex, so that the index and the running values agree
 * and concurrent changes land in one order in both.
 */
#include "store_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_CHANGES 16

typedef struct SettingDef {
    const char *key;
    bool boolean;
    const char *const *choices;    /* NULL-terminated; [0] the default */
    const char *expect;            /* the choices, for error messages */
} SettingDef;

/* In the order of StoreDupPolicy. */
static const char *const DUPLICATES[] = {"keep", "replace", "reject", NULL};
static const char *const BOOLEAN[] = {"false", "true", NULL};
static const char *const COMPRESS[] = {"", "jpeg-ls", "rle", "j2k", NULL};
/* The lossless syntax of each COMPRESS choice (PS3.5 §8.2: a storage
 * policy never compresses lossily). */
static const char *const COMPRESS_TS[] = {
    NULL,
    "1.2.840.10008.1.2.4.80",      /* JPEG-LS lossless */
    "1.2.840.10008.1.2.5",         /* RLE lossless */
    "1.2.840.10008.1.2.4.90",      /* JPEG 2000 lossless only */
};

enum { S_DUPLICATES, S_ACCEPT_UNKNOWN_AE, S_FUZZY_NAMES, S_COMPRESS,
       NSETTINGS };
_Static_assert(NSETTINGS == STORE__NSETTINGS, "StoreSettings size");

static const SettingDef DEFS[NSETTINGS] = {
    [S_DUPLICATES] = {"duplicates", false, DUPLICATES,
                      "keep, replace or reject"},
    [S_ACCEPT_UNKNOWN_AE] = {"accept_unknown_ae", true, BOOLEAN,
                             "true or false"},
    [S_FUZZY_NAMES] = {"fuzzy_names", true, BOOLEAN, "true or false"},
    [S_COMPRESS] = {"compress", false, COMPRESS,
                    "\"\" (none), jpeg-ls, rle or j2k"},
};

static int find_def(const char *key)
{
    for (int d = 0; key != NULL && d < NSETTINGS; d++) {
        if (strcmp(key, DEFS[d].key) == 0) {
            return d;
        }
    }
    return -1;
}

/* The choice value names in setting d; -1 with err set if none. */
static int find_choice(int d, const char *value, AgError *err)
{
    const char *v = value != NULL ? value : "";
    if (d == S_COMPRESS && strcmp(v, "none") == 0) {
        v = "";   /* as `agora serve --compress none` says it */
    }
    for (int c = 0; DEFS[d].choices[c] != NULL; c++) {
        if (strcmp(v, DEFS[d].choices[c]) != 0) {
            continue;
        }
        if (d == S_COMPRESS && c > 0 &&
            !store__compress_syntax_ok(COMPRESS_TS[c])) {
            ag_error_set(err, AG_ERR_INVALID, "setting %s: %s cannot be "
                         "encoded by this build", DEFS[d].key, v);
            return -1;
        }
        return c;
    }
    ag_error_set(err, AG_ERR_INVALID, "setting %s: \"%.32s\" is not %s",
                 DEFS[d].key, v, DEFS[d].expect);
    return -1;
}

/* Setting and choice of key=value; -1 with err set (AG_ERR_INVALID) if
 * either is bad. */
static int parse(const char *key, const char *value, int *choice,
                 AgError *err)
{
    int d = find_def(key);
    if (d < 0) {
        ag_error_set(err, AG_ERR_INVALID, "no run-time setting \"%.40s\"",
                     key != NULL ? key : "");
        return -1;
    }
    *choice = find_choice(d, value, err);
    return *choice < 0 ? -1 : d;
}

const char *store_setting_source_name(StoreSettingSource source)
{
    switch (source) {
    case STORE_SETTING_COMMAND_LINE: return "command line";
    case STORE_SETTING_STORED: return "stored";
    default: return "default";
    }
}

bool store_setting_known(const char *key, bool *boolean)
{
    int d = find_def(key);
    if (d >= 0 && boolean != NULL) {
        *boolean = DEFS[d].boolean;
    }
    return d >= 0;
}

int store_setting_check(const char *key, const char *value, AgError *err)
{
    int c;
    return parse(key, value, &c, err) < 0 ? AG_ERR_INVALID : AG_OK;
}

/* ---- the live values ----------------------------------------------------- */

void store__settings_init(StoreSettings *t, const StoreConfig *cfg)
{
    pthread_mutex_init(&t->lock, NULL);
    for (int d = 0; d < NSETTINGS; d++) {
        atomic_init(&t->value[d], 0);
        t->source[d] = STORE_SETTING_DEFAULT;
    }
    if ((int)cfg->dup_policy >= 0 && cfg->dup_policy <= STORE_DUP_REJECT) {
        atomic_store(&t->value[S_DUPLICATES], (int)cfg->dup_policy);
    }
    for (int c = 1; cfg->compress_ts != NULL && COMPRESS[c] != NULL; c++) {
        if (strcmp(cfg->compress_ts, COMPRESS_TS[c]) == 0) {
            atomic_store(&t->value[S_COMPRESS], c);
        }
    }
}

void store__settings_deinit(StoreSettings *t)
{
    pthread_mutex_destroy(&t->lock);
}

static int current(Store *s, int d)
{
    return atomic_load(&store__settings(s)->value[d]);
}

StoreDupPolicy store__dup_policy(Store *s)
{
    return (StoreDupPolicy)current(s, S_DUPLICATES);
}

const char *store__compress_ts(Store *s)
{
    return COMPRESS_TS[current(s, S_COMPRESS)];
}

bool store_setting_bool(Store *s, const char *key)
{
    int d = find_def(key);
    return d >= 0 && DEFS[d].boolean && current(s, d) == 1;
}

/* Caller holds t->lock. */
static void describe(const StoreSettings *t, int d, StoreSetting *out)
{
    out->key = DEFS[d].key;
    out->value = DEFS[d].choices[atomic_load(&t->value[d])];
    out->boolean = DEFS[d].boolean;
    out->source = t->source[d];
}

int store_setting_get(Store *s, const char *key, StoreSetting *out,
                      AgError *err)
{
    int d = find_def(key);
    if (d < 0) {
        return ag_error_set(err, AG_ERR_NOTFOUND, "no run-time setting "
                            "\"%.40s\"", key != NULL ? key : "");
    }
    StoreSettings *t = store__settings(s);
    pthread_mutex_lock(&t->lock);
    describe(t, d, out);
    pthread_mutex_unlock(&t->lock);
    return AG_OK;
}

size_t store_settings_list(Store *s, StoreSetting *out, size_t cap)
{
    StoreSettings *t = store__settings(s);
    pthread_mutex_lock(&t->lock);
    for (int d = 0; d < NSETTINGS && (size_t)d < cap; d++) {
        describe(t, d, &out[d]);
    }
    pthread_mutex_unlock(&t->lock);
    return NSETTINGS;
}

/* ---- loading at start ---------------------------------------------------- */

/* The stored choice of each setting, -1 where none (or not valid). */
typedef struct Stored {
    int choice[NSETTINGS];
} Stored;

static int stored_row(void *ctx, int ncol, const char *const *v)
{
    Stored *st = ctx;
    if (ncol < 2 || v[0] == NULL) {
        return 0;
    }
    AgError e;
    int c, d = parse(v[0], v[1], &c, &e);
    if (d < 0) {
        /* A setting of another version, or a syntax this build cannot
         * encode: the server still starts, with the default. */
        ag_log(AG_LOG_WARN, "store", "stored %s; ignored", e.msg);
        return 0;
    }
    st->choice[d] = c;
    return 0;
}

int store_settings_load(Store *s, const char *const *keys,
                        const char *const *values, size_t n, AgError *err)
{
    int given[NSETTINGS];
    for (int d = 0; d < NSETTINGS; d++) {
        given[d] = -1;
    }
    for (size_t i = 0; i < n; i++) {
        int c, d = parse(keys[i], values[i], &c, err);
        if (d < 0) {
            return AG_ERR_INVALID;
        }
        given[d] = c;
    }
    Stored st;
    for (int d = 0; d < NSETTINGS; d++) {
        st.choice[d] = -1;
    }
    int rc = store_sql_select(s, "SELECT key, value FROM settings", NULL, 0,
                              stored_row, &st, err);
    if (rc != AG_OK) {
        ag_error_prefix(err, "settings: ");
        return rc;
    }
    StoreSettings *t = store__settings(s);
    pthread_mutex_lock(&t->lock);
    for (int d = 0; d < NSETTINGS; d++) {
        if (given[d] >= 0) {
            atomic_store(&t->value[d], given[d]);
            t->source[d] = STORE_SETTING_COMMAND_LINE;
        } else if (st.choice[d] >= 0) {
            atomic_store(&t->value[d], st.choice[d]);
            t->source[d] = STORE_SETTING_STORED;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return AG_OK;
}

/* ---- changes ------------------------------------------------------------- */

/*
 * One upsert for every change: a single statement is atomic, so the index
 * holds all of them or none.  ?1 changed_at, ?2 changed_by, then a key
 * and a value per change.
 */
static int persist(Store *s, const int *def, const int *choice, size_t n,
                   const char *by, AgError *err)
{
    char sql[1024], now[24];
    const char *params[2 + 2 * MAX_CHANGES];
    size_t len = (size_t)snprintf(sql, sizeof sql, "INSERT INTO settings "
                                  "(key, value, changed_at, changed_by) "
                                  "VALUES ");
    ag_fmt(now, sizeof now, "%lld", (long long)time(NULL));
    params[0] = now;
    params[1] = by;
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(sql + len, sizeof sql - len,
                                "%s(?%zu, ?%zu, ?1, ?2)", i ? ", " : "",
                                3 + 2 * i, 4 + 2 * i);
        params[2 + 2 * i] = DEFS[def[i]].key;
        params[3 + 2 * i] = DEFS[def[i]].choices[choice[i]];
    }
    ag_fmt(sql + len, sizeof sql - len, " ON CONFLICT (key) DO UPDATE SET "
           "value = excluded.value, changed_at = excluded.changed_at, "
           "changed_by = excluded.changed_by");
    int rc = store_sql_exec(s, sql, params, (int)(2 + 2 * n), NULL, NULL,
                            err);
    if (rc != AG_OK) {
        ag_error_prefix(err, "settings: ");
    }
    return rc;
}

int store_settings_update(Store *s, StoreSettingChange *changes, size_t n,
                          const char *by, AgError *err)
{
    if (n == 0 || n > MAX_CHANGES) {
        return ag_error_set(err, AG_ERR_INVALID, "settings: %zu changes "
                            "(1 to %d)", n, MAX_CHANGES);
    }
    int def[MAX_CHANGES], choice[MAX_CHANGES];
    for (size_t i = 0; i < n; i++) {
        def[i] = parse(changes[i].key, changes[i].value, &choice[i], err);
        if (def[i] < 0) {
            return AG_ERR_INVALID;
        }
        for (size_t k = 0; k < i; k++) {
            if (def[k] == def[i]) {
                return ag_error_set(err, AG_ERR_INVALID, "setting %s: given "
                                    "twice", DEFS[def[i]].key);
            }
        }
    }
    StoreSettings *t = store__settings(s);
    pthread_mutex_lock(&t->lock);
    int rc = persist(s, def, choice, n, by, err);
    for (size_t i = 0; rc == AG_OK && i < n; i++) {
        int d = def[i];
        changes[i].old = DEFS[d].choices[atomic_load(&t->value[d])];
        atomic_store(&t->value[d], choice[i]);
        t->source[d] = STORE_SETTING_STORED;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int store_setting_set(Store *s, const char *key, const char *value,
                      const char *by, AgError *err)
{
    StoreSettingChange ch = {.key = key, .value = value};
    return store_settings_update(s, &ch, 1, by, err);
}
