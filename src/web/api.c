/*
 * api.c — the REST API under /api/v1 (JSON in, JSON out) and share links
 * (/share/{secret}).  Every route checks the principal's verb; every
 * study is looked up through the access filter, so a study out of scope
 * answers 404 exactly like one that does not exist.
 *
 *   POST   /api/v1/login                 {"username","password"} → cookie
 *   POST   /api/v1/logout                ends every session of the user
 *   GET    /api/v1/me
 *   GET    /api/v1/studies               ?limit&offset&PatientID&...
 *   DELETE /api/v1/studies/{uid}                               (delete)
 *   GET    /api/v1/studies/{uid}/shares                        (view)
 *   POST   /api/v1/studies/{uid}/shares  {"department"|"user"|"list"|
 *                                         "link": true, "hours"} (share)
 *   DELETE /api/v1/shares/{id}                                 (share)
 *   POST   /api/v1/studies/{uid}/break-glass {"reason","hours"} (view)
 *   GET    /api/v1/break-glass                        (admin, audit-read)
 *   POST   /api/v1/studies/{uid}/departments {"department"}   (admin)
 *   DELETE /api/v1/studies/{uid}/departments/{name}           (admin)
 *   GET    /api/v1/users, POST /api/v1/users                   (admin)
 *   POST   /api/v1/users/{name}  {"role","password","disabled",
 *                                 "departments"}  (admin; self: password)
 *   GET    /api/v1/departments, POST /api/v1/departments      (admin)
 *   POST   /api/v1/departments/{name}/rules {"field","value"} (admin)
 *   POST   /api/v1/lists {"name","members"}; POST /api/v1/lists/{n}/members
 *   GET    /api/v1/tokens, POST /api/v1/tokens {"name","days"},
 *   DELETE /api/v1/tokens/{id}
 *   GET    /api/v1/settings, PUT /api/v1/settings {"duplicates", ...}
 *                                                               (admin)
 *   GET    /api/v1/worklist, GET /api/v1/worklist/{id}         (view)
 *   POST   /api/v1/worklist  {"item": DICOM JSON, "department"} (upload)
 *   DELETE /api/v1/worklist/{id}                               (upload)
 *   DELETE /api/v1/worklist?before=YYYYMMDD                     (admin)
 *   GET    /api/v1/mpps    performed procedure steps (view; archive-wide)
 */
#include "web_int.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_BODY_MAX (64 * 1024)

typedef struct ApiBody {
    AgBuf buf;
} ApiBody;

static void body_free(void *p)
{
    ApiBody *b = p;
    if (b != NULL) {
        ag_buf_deinit(&b->buf);
        ag_free(b);
    }
}

static enum MHD_Result send_json(WebRequest *r, unsigned status, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    enum MHD_Result ret = web__send(r, status, "application/json", s,
                                    strlen(s));
    free(s);
    return ret;
}

/* Map an AgError from access/store to its HTTP answer. */
static enum MHD_Result send_error(WebRequest *r, const AgError *err)
{
    switch (err->code) {
    case AG_ERR_NOTFOUND:
        return web__json_error(r, 404, "not found", err->msg);
    case AG_ERR_EXISTS:
        return web__json_error(r, 409, "conflict", err->msg);
    case AG_ERR_DENIED:
        return web__json_error(r, 403, "forbidden", err->msg);
    case AG_ERR_INVALID:
    case AG_ERR_LIMIT:
        return web__json_error(r, 400, "bad request", err->msg);
    default:
        return web__json_error(r, 500, "internal error", err->msg);
    }
}

static const char *jstr(json_t *body, const char *key)
{
    return json_string_value(json_object_get(body, key));
}

static const char *session_cookie(WebRequest *r, const char *value,
                                  uint32_t max_age)
{
    return ag_arena_printf(r->arena, "agora_session=%s; Path=/; HttpOnly; "
                           "SameSite=Strict; Max-Age=%u%s", value, max_age,
                           web__config(r)->secure_cookies ? "; Secure" : "");
}

/* ---- login, logout, me -------------------------------------------------- */

static enum MHD_Result login(WebRequest *r, json_t *body)
{
    const char *user = jstr(body, "username"), *pw = jstr(body, "password");
    if (user == NULL || pw == NULL) {
        return web__json_error(r, 400, "bad request", "send {\"username\": "
                               "..., \"password\": ...}");
    }
    AccessPrincipal p;
    uint32_t wait = 0;
    AccessLogin res = access_login(web__access(r), user, pw, r->addr, &p,
                                   &wait);
    if (res == ACCESS_LOGIN_LIMITED) {
        web__audit_auth(r, user, "login", 4, "rate limited");
        r->retry_after = wait;
        return web__json_error(r, 429, "too many attempts",
                               ag_arena_printf(r->arena, "try again in %u "
                                               "seconds", wait));
    }
    if (res != ACCESS_LOGIN_OK) {
        web__audit_auth(r, user, "login", 4, "bad user name or password");
        return web__json_error(r, 401, "unauthorized", "unknown user name "
                               "or wrong password");
    }
    char secret[64];
    AgError err;
    if (access_credential_create(web__access(r), &p, "session", "browser",
                                 0, secret, NULL, &err) != AG_OK) {
        return send_error(r, &err);
    }
    web__audit_auth(r, user, "login", 0, NULL);
    json_t *j = json_pack("{s:o}", "user",
                          access_principal_json(web__access(r), &p));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        s ? strlen(s) : 0, s, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Set-Cookie",
                            session_cookie(r, secret, 12 * 3600));
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    sodium_memzero(secret, sizeof secret);
    return web__send_response(r, 200, resp);
}

static enum MHD_Result logout(WebRequest *r)
{
    AgError err;
    if (r->who.user_id != 0 &&
        access_revoke_all(web__access(r), r->who.user_id, "session", &err) !=
            AG_OK) {
        return send_error(r, &err);
    }
    web__audit_auth(r, r->who.name, "logout", 0, NULL);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        MHD_add_response_header(resp, "Set-Cookie",
                                session_cookie(r, "", 0));
    }
    return web__send_response(r, 204, resp);
}

/* ---- studies ---------------------------------------------------------------- */

/* ---- patients, studies, series, instances ------------------------------- */

/* A match as a plain JSON object: keyword → value (several values joined
 * by '\', counts and numbers as numbers). */
static int row_json(void *ctx, const DicomDataset *m)
{
    json_t *o = json_object();
    AgArena *a = ag_arena_create(256 << 10);
    size_t n = dicom_dataset_count(m);
    for (size_t i = 0; a != NULL && o != NULL && i < n; i++) {
        const DicomElement *el = dicom_dataset_at(m, i);
        const DicomDictEntry *d = dicom_dict_lookup(el->tag);
        char *v = NULL;
        if (d == NULL || d->keyword == NULL || el->tag == 0x00080005 ||
            el->tag == 0x00080052 ||
            dicom_element_utf8(m, el, a, &v, NULL) != AG_OK || v == NULL ||
            v[0] == '\0') {
            continue;
        }
        if (el->vr == DICOM_VR_IS || el->vr == DICOM_VR_US ||
            el->vr == DICOM_VR_UL) {
            json_object_set_new(o, d->keyword,
                                json_integer(strtoll(v, NULL, 10)));
        } else {
            json_object_set_new(o, d->keyword, json_string(v));
        }
    }
    ag_arena_destroy(a);
    json_array_append_new(ctx, o);
    return 0;
}

typedef struct LevelInfo {
    const char *name;                 /* "studies" */
    StoreLevel level;
    const uint32_t *fields;           /* return keys, 0-terminated */
    uint32_t unique;                  /* the level's unique key */
} LevelInfo;

static const uint32_t PATIENT_FIELDS[] = {
    0x00100020, 0x00100021, 0x00100010, 0x00100030, 0x00100040, 0x00201200,
    0};
static const uint32_t STUDY_FIELDS[] = {
    0x0020000d, 0x00100020, 0x00100010, 0x00100030, 0x00080020, 0x00080030,
    0x00080050, 0x00200010, 0x00081030, 0x00080090, 0x00080061, 0x00201206,
    0x00201208, 0};
static const uint32_t SERIES_FIELDS[] = {
    0x0020000d, 0x0020000e, 0x00080060, 0x00200011, 0x0008103e, 0x00180015,
    0x00081040, 0x00201209, 0};
static const uint32_t INSTANCE_FIELDS[] = {
    0x0020000d, 0x0020000e, 0x00080018, 0x00080016, 0x00200013, 0x00280010,
    0x00280011, 0x00280008, 0x00083002, 0};

static const LevelInfo LEVELS[] = {
    {"patients", STORE_LEVEL_PATIENT, PATIENT_FIELDS, 0x00100020},
    {"studies", STORE_LEVEL_STUDY, STUDY_FIELDS, 0x0020000d},
    {"series", STORE_LEVEL_SERIES, SERIES_FIELDS, 0x0020000e},
    {"instances", STORE_LEVEL_INSTANCE, INSTANCE_FIELDS, 0x00080018},
};

static const LevelInfo *level_info(const char *name)
{
    for (size_t i = 0; i < sizeof LEVELS / sizeof LEVELS[0]; i++) {
        if (strcmp(name, LEVELS[i].name) == 0) {
            return &LEVELS[i];
        }
    }
    return NULL;
}

/* Query arguments named by keyword become matching keys (the same
 * matching as QIDO-RS and C-FIND); limit and offset page. */
static enum MHD_Result arg_key(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *value)
{
    (void)kind;
    DicomDataset *keys = cls;
    const DicomDictEntry *d = dicom_dict_find_keyword(key);
    if (d != NULL && value != NULL && strcmp(key, "limit") != 0 &&
        strcmp(key, "offset") != 0) {
        dicom_set_string(keys, d->tag, dicom_dict_vr(d->tag), value, NULL);
    }
    return MHD_YES;
}

static uint32_t arg_u32(WebRequest *r, const char *name, uint32_t def)
{
    const char *v = MHD_lookup_connection_value(r->conn,
                                                MHD_GET_ARGUMENT_KIND, name);
    if (v == NULL || v[0] == '\0' || strspn(v, "0123456789") != strlen(v) ||
        strlen(v) > 9) {
        return def;
    }
    return (uint32_t)strtoul(v, NULL, 10);
}

/* Run a scoped query at a level; uid (optional) is the level's unique key.
 * *out is a JSON array of rows. */
static int query_level(WebRequest *r, const LevelInfo *li, const char *uid,
                       uint32_t limit, uint32_t offset, json_t **out,
                       bool *more, AgError *err)
{
    DicomDataset *keys = dicom_dataset_create(r->arena);
    if (keys == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    dicom_set_string(keys, 0x00080005, DICOM_VR_CS, "ISO_IR 192", NULL);
    if (uid == NULL) {
        MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, arg_key,
                                  keys);
    }
    for (const uint32_t *t = li->fields; *t != 0; t++) {
        if (dicom_dataset_find(keys, *t) == NULL) {
            dicom_set_string(keys, *t, dicom_dict_vr(*t),
                             uid != NULL && *t == li->unique ? uid : "",
                             NULL);
        }
    }
    StoreQuery q = {.level = li->level, .keys = keys, .limit = limit,
                    .offset = offset, .fuzzy = true, .all_fields = true,
                    .scope = &r->who.scope};
    json_t *arr = json_array();
    int rc = store_query(web__store(r), &q, row_json, arr, more, err);
    if (rc != AG_OK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return AG_OK;
}

static enum MHD_Result list_level(WebRequest *r, const LevelInfo *li)
{
    json_t *arr = NULL;
    bool more = false;
    AgError err;
    if (query_level(r, li, NULL, arg_u32(r, "limit", 100),
                    arg_u32(r, "offset", 0), &arr, &more, &err) != AG_OK) {
        return send_error(r, &err);
    }
    web__audit_query(r, li->name, NULL);
    return send_json(r, 200, json_pack("{s:o, s:b}", li->name, arr, "more",
                                       more));
}

/* GET /api/v1/{studies|series|instances}/{uid}: the row, and for studies
 * and series the level below. */
static enum MHD_Result detail(WebRequest *r, const LevelInfo *li,
                              const char *uid)
{
    json_t *arr = NULL, *below = NULL;
    AgError err;
    if (query_level(r, li, uid, 1, 0, &arr, NULL, &err) != AG_OK) {
        return send_error(r, &err);
    }
    if (json_array_size(arr) == 0) {
        json_decref(arr);
        return web__json_error(r, 404, "not found", "no such object");
    }
    json_t *row = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (li->level == STORE_LEVEL_STUDY || li->level == STORE_LEVEL_SERIES) {
        const LevelInfo *next = &LEVELS[li->level + 1];
        DicomDataset *keys = dicom_dataset_create(r->arena);
        for (const uint32_t *t = next->fields; keys && *t != 0; t++) {
            bool parent = (*t == 0x0020000d && li->level == STORE_LEVEL_STUDY)
                          || (*t == 0x0020000e &&
                              li->level == STORE_LEVEL_SERIES);
            dicom_set_string(keys, *t, dicom_dict_vr(*t), parent ? uid : "",
                             NULL);
        }
        StoreQuery q = {.level = next->level, .keys = keys, .all_fields = true,
                        .scope = &r->who.scope};
        below = json_array();
        if (keys == NULL || store_query(web__store(r), &q, row_json, below,
                                        NULL, &err) != AG_OK) {
            json_decref(below);
            json_decref(row);
            return send_error(r, &err);
        }
        json_object_set_new(row, next->name, below);
    }
    web__audit_study(r, "detail", json_string_value(json_object_get(
                                      row, "StudyInstanceUID")), 0, NULL);
    return send_json(r, 200, row);
}

/* ---- nodes and statistics (admin) --------------------------------------- */

static int node_row(void *ctx, const StoreNode *n)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:b}", "aet", n->aet, "host",
                          n->host, "port", (int)n->port, "tls", n->tls);
    if (n->description[0] != '\0') {
        json_object_set_new(o, "description", json_string(n->description));
    }
    if (n->department[0] != '\0') {
        json_object_set_new(o, "department", json_string(n->department));
    }
    json_array_append_new(ctx, o);
    return 0;
}

static enum MHD_Result nodes(WebRequest *r, char **seg, int n, json_t *body)
{
    AgError err;
    if (!web__can(r, ACCESS_ADMIN)) {
        return web__forbidden(r, "nodes need admin");
    }
    if (n == 1 && strcmp(r->method, "GET") == 0) {
        json_t *arr = json_array();
        if (store_node_list(web__store(r), node_row, arr, &err) != AG_OK) {
            json_decref(arr);
            return send_error(r, &err);
        }
        return send_json(r, 200, arr);
    }
    if (n == 2 && strcmp(r->method, "DELETE") == 0) {
        if (store_node_remove(web__store(r), seg[1], &err) != AG_OK) {
            return send_error(r, &err);
        }
        web__audit_config(r, "node remove", seg[1]);
        return send_json(r, 200, json_pack("{s:s}", "removed", seg[1]));
    }
    if (n == 1 && strcmp(r->method, "POST") == 0) {
        StoreNode nd = {0};
        json_t *port = json_object_get(body, "port");
        const char *aet = jstr(body, "aet"), *host = jstr(body, "host");
        const char *desc = jstr(body, "description");
        const char *dept = jstr(body, "department");
        if (aet == NULL || host == NULL || !json_is_integer(port) ||
            json_integer_value(port) < 1 || json_integer_value(port) > 65535 ||
            ag_fmt(nd.aet, sizeof nd.aet, "%s", aet) != AG_OK ||
            ag_fmt(nd.host, sizeof nd.host, "%s", host) != AG_OK) {
            return web__json_error(r, 400, "bad request", "send {\"aet\", "
                                   "\"host\", \"port\"} (and optionally "
                                   "\"tls\", \"description\", "
                                   "\"department\")");
        }
        nd.port = (uint16_t)json_integer_value(port);
        nd.tls = json_is_true(json_object_get(body, "tls"));
        ag_fmt(nd.description, sizeof nd.description, "%s", desc ? desc : "");
        ag_fmt(nd.department, sizeof nd.department, "%s", dept ? dept : "");
        json_t *depts = dept ? access_depts_json(web__access(r), &err) : NULL;
        bool ok = dept == NULL;
        size_t i;
        json_t *d;
        json_array_foreach(depts, i, d) {
            ok |= strcmp(json_string_value(json_object_get(d, "name")),
                         dept) == 0;
        }
        json_decref(depts);
        if (!ok) {
            return web__json_error(r, 404, "not found", "no such department");
        }
        if (store_node_put(web__store(r), &nd, &err) != AG_OK) {
            return send_error(r, &err);
        }
        web__audit_config(r, "node", aet);
        return send_json(r, 201, json_pack("{s:s}", "aet", nd.aet));
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

static enum MHD_Result stats(WebRequest *r)
{
    if (!web__can(r, ACCESS_ADMIN)) {
        return web__forbidden(r, "archive statistics need admin");
    }
    StoreStats st;
    AgError err;
    if (store_stats(web__store(r), &st, &err) != AG_OK) {
        return send_error(r, &err);
    }
    return send_json(r, 200, json_pack("{s:I, s:I, s:I, s:I, s:I}",
        "patients", (json_int_t)st.patients, "studies",
        (json_int_t)st.studies, "series", (json_int_t)st.series,
        "instances", (json_int_t)st.instances, "bytes",
        (json_int_t)st.bytes));
}

static enum MHD_Result delete_study(WebRequest *r, const char *uid)
{
    if (!web__study_visible(r, uid)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    if (!web__can(r, ACCESS_DELETE)) {
        return web__forbidden(r, "deleting needs the delete verb");
    }
    if (!web__study_visible_beyond_view(r, uid)) {
        return web__forbidden(r, "break-the-glass grants view only");
    }
    uint64_t n = 0;
    AgError err;
    if (store_delete(web__store(r), STORE_LEVEL_STUDY, uid, &n, &err) !=
        AG_OK) {
        return send_error(r, &err);
    }
    web__audit_study(r, "delete", uid, 0, NULL);
    return send_json(r, 200, json_pack("{s:I}", "deleted", (json_int_t)n));
}

/* DELETE /api/v1/{series|instances}/{uid}: found through the scope, so
 * an out-of-scope UID answers 404 like a missing one. */
static enum MHD_Result delete_below(WebRequest *r, const LevelInfo *li,
                                    const char *uid)
{
    json_t *arr = NULL;
    AgError err;
    if (query_level(r, li, uid, 1, 0, &arr, NULL, &err) != AG_OK) {
        return send_error(r, &err);
    }
    const char *study = json_string_value(json_object_get(
        json_array_get(arr, 0), "StudyInstanceUID"));
    char st[65] = "";
    if (study != NULL) {
        ag_fmt(st, sizeof st, "%s", study);
    }
    json_decref(arr);
    if (st[0] == '\0') {
        return web__json_error(r, 404, "not found", "no such object");
    }
    if (!web__can(r, ACCESS_DELETE)) {
        return web__forbidden(r, "deleting needs the delete verb");
    }
    if (!web__study_visible_beyond_view(r, st)) {
        return web__forbidden(r, "break-the-glass grants view only");
    }
    uint64_t n = 0;
    if (store_delete(web__store(r), li->level, uid, &n, &err) != AG_OK) {
        return send_error(r, &err);
    }
    web__audit_study(r, "delete", st, 0, ag_arena_printf(r->arena, "%s %s",
                                                          li->name, uid));
    return send_json(r, 200, json_pack("{s:I}", "deleted", (json_int_t)n));
}

static enum MHD_Result share(WebRequest *r, const char *uid, json_t *body)
{
    if (!web__study_visible(r, uid)) {
        return web__json_error(r, 404, "not found", "no such study");
    }
    if (!web__can(r, ACCESS_SHARE)) {
        return web__forbidden(r, "sharing needs the share verb");
    }
    if (!web__study_visible_beyond_view(r, uid)) {
        return web__forbidden(r, "break-the-glass grants view only");
    }
    json_t *hours = json_object_get(body, "hours");
    json_int_t h = json_is_integer(hours) ? json_integer_value(hours) : 0;
    if (h < 0 || h > 24 * 366) {
        return web__json_error(r, 400, "bad request", "hours is 0 to 8784");
    }
    AccessShare sh = {.study_uid = uid,
                      .department = jstr(body, "department"),
                      .user = jstr(body, "user"), .list = jstr(body, "list"),
                      .link = json_is_true(json_object_get(body, "link")),
                      .seconds = (uint32_t)h * 3600u};
    char link[64] = "";
    int64_t id = 0;
    AgError err;
    if (access_share(web__access(r), &r->who, &sh, link, &id, &err) !=
        AG_OK) {
        return send_error(r, &err);
    }
    web__audit_study(r, "share", uid, 0,
                     sh.department ? sh.department : sh.user ? sh.user
                     : sh.list ? sh.list : "link");
    json_t *j = json_pack("{s:I}", "id", (json_int_t)id);
    if (sh.link) {
        json_object_set_new(j, "url", json_string(ag_arena_printf(
                                          r->arena, "/share/%s", link)));
    }
    return send_json(r, 201, j);
}

static enum MHD_Result break_glass(WebRequest *r, const char *uid,
                                   json_t *body)
{
    json_t *hours = json_object_get(body, "hours");
    json_int_t h = json_is_integer(hours) ? json_integer_value(hours) : 4;
    if (h < 1 || h > 24) {
        return web__json_error(r, 400, "bad request", "hours is 1 to 24");
    }
    AgError err;
    const char *reason = jstr(body, "reason");
    if (access_break_glass(web__access(r), &r->who, uid, reason,
                           (uint32_t)h * 3600u, &err) != AG_OK) {
        web__audit_study(r, "break-glass", uid, 4, err.msg);
        return send_error(r, &err);
    }
    web__audit_study(r, "break-glass", uid, 0, reason);
    return send_json(r, 201, json_pack("{s:s, s:I}", "study", uid, "hours",
                                       h));
}

static enum MHD_Result study_routes(WebRequest *r, char **seg, int n,
                                    json_t *body)
{
    const char *m = r->method, *uid = seg[1];
    if (n == 2 && strcmp(m, "DELETE") == 0) {
        return delete_study(r, uid);
    }
    if (n == 3 && strcmp(seg[2], "shares") == 0) {
        if (strcmp(m, "POST") == 0) {
            return share(r, uid, body);
        }
        AgError err;
        json_t *j = access_shares_json(web__access(r), &r->who, uid, &err);
        return j ? send_json(r, 200, j) : send_error(r, &err);
    }
    if (n == 3 && strcmp(seg[2], "break-glass") == 0 &&
        strcmp(m, "POST") == 0) {
        return break_glass(r, uid, body);
    }
    if (n == 3 && strcmp(seg[2], "send") == 0 && strcmp(m, "POST") == 0) {
        return web__jobs_send(r, uid, body);   /* jobs.c */
    }
    if (n >= 3 && strcmp(seg[2], "departments") == 0) {
        if (!web__can(r, ACCESS_ADMIN)) {
            return web__forbidden(r, "assigning studies needs admin");
        }
        bool add = strcmp(m, "POST") == 0;
        const char *dept = add ? jstr(body, "department")
                               : n == 4 ? seg[3] : NULL;
        AgError err;
        if (dept == NULL || (!add && strcmp(m, "DELETE") != 0)) {
            return web__json_error(r, 400, "bad request", "POST "
                                   "{\"department\"} or DELETE .../NAME");
        }
        if (access_study_assign(web__access(r), uid, dept, add, &err) !=
            AG_OK) {
            return send_error(r, &err);
        }
        web__audit_study(r, add ? "assign" : "unassign", uid, 0, dept);
        return send_json(r, 200, json_pack("{s:s}", "department", dept));
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

/* ---- users, departments, lists, tokens ------------------------------------- */

/* Departments to join, checked before anything changes (no partial
 * state): an array of names of departments that exist. */
static int check_departments(WebRequest *r, json_t *depts, AgError *err)
{
    if (depts == NULL) {
        return AG_OK;
    }
    if (!json_is_array(depts)) {
        return ag_error_set(err, AG_ERR_INVALID, "departments is an array "
                            "of names");
    }
    size_t i;
    json_t *d;
    json_array_foreach(depts, i, d) {
        if (!json_is_string(d)) {
            return ag_error_set(err, AG_ERR_INVALID, "departments are "
                                "names");
        }
        if (!access_dept_exists(web__access(r), json_string_value(d))) {
            return ag_error_set(err, AG_ERR_NOTFOUND, "no such department "
                                "\"%.64s\"", json_string_value(d));
        }
    }
    return AG_OK;
}

/* Join the departments check_departments passed. */
static int join_departments(WebRequest *r, const char *user, json_t *depts,
                            AgError *err)
{
    size_t i;
    json_t *d;
    int rc = AG_OK;
    json_array_foreach(depts, i, d) {
        if (rc == AG_OK) {
            rc = access_user_join(web__access(r), user, json_string_value(d),
                                  true, err);
        }
    }
    return rc;
}

static enum MHD_Result users(WebRequest *r, char **seg, int n, json_t *body)
{
    Access *a = web__access(r);
    AgError err;
    bool self = n == 2 && strcmp(seg[1], r->who.name) == 0 &&
                r->who.user_id != 0;
    if (!web__can(r, ACCESS_ADMIN) &&
        !(self && strcmp(r->method, "POST") == 0 && body != NULL &&
          json_object_size(body) == 1 && jstr(body, "password") != NULL)) {
        return web__forbidden(r, "managing users needs admin");
    }
    if (n == 1 && strcmp(r->method, "GET") == 0) {
        json_t *j = access_users_json(a, &err);
        return j ? send_json(r, 200, j) : send_error(r, &err);
    }
    if (strcmp(r->method, "POST") != 0 || body == NULL) {
        return web__json_error(r, 400, "bad request", "POST a JSON object");
    }
    const char *name = n == 2 ? seg[1] : jstr(body, "name");
    json_t *depts = json_object_get(body, "departments");
    int rc = check_departments(r, depts, &err);
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    if (n == 1) {
        rc = access_user_add(a, name, jstr(body, "password"),
                             jstr(body, "role") ? jstr(body, "role")
                                                : "viewer", &err);
    } else {
        if (jstr(body, "password") != NULL) {
            rc = access_user_passwd(a, name, jstr(body, "password"), &err);
        }
        if (rc == AG_OK && jstr(body, "role") != NULL) {
            rc = access_user_role(a, name, jstr(body, "role"), &err);
        }
        json_t *dis = json_object_get(body, "disabled");
        if (rc == AG_OK && json_is_boolean(dis)) {
            rc = access_user_disable(a, name, json_is_true(dis), &err);
        }
    }
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    /* Audited once something changed, even if a join then fails (a user
     * already in 32 departments). */
    web__audit_config(r, n == 1 ? "user add" : "user change", name);
    if (json_is_array(depts) &&
        join_departments(r, name, depts, &err) != AG_OK) {
        return send_error(r, &err);
    }
    return send_json(r, n == 1 ? 201 : 200, json_pack("{s:s}", "name", name));
}

static enum MHD_Result departments(WebRequest *r, char **seg, int n,
                                   json_t *body)
{
    Access *a = web__access(r);
    AgError err;
    if (!web__can(r, ACCESS_ADMIN)) {
        return web__forbidden(r, "managing departments needs admin");
    }
    if (n == 1 && strcmp(r->method, "GET") == 0) {
        json_t *j = access_depts_json(a, &err);
        return j ? send_json(r, 200, j) : send_error(r, &err);
    }
    if (strcmp(r->method, "POST") != 0 || body == NULL) {
        return web__json_error(r, 400, "bad request", "POST a JSON object");
    }
    int rc;
    const char *name;
    if (n == 1) {
        name = jstr(body, "name");
        json_t *rules = json_object_get(body, "rules"), *rule;
        size_t i;
        rc = AG_OK;
        json_array_foreach(rules, i, rule) {   /* all checked first */
            if (rc == AG_OK) {
                rc = access_rule_check(jstr(rule, "field"),
                                       jstr(rule, "value"), &err);
            }
        }
        if (rc == AG_OK) {
            rc = access_dept_add(a, name, jstr(body, "description"), &err);
        }
        json_array_foreach(rules, i, rule) {
            if (rc == AG_OK) {
                rc = access_dept_rule(a, name, jstr(rule, "field"),
                                      jstr(rule, "value"), true, &err);
            }
        }
    } else if (n == 3 && strcmp(seg[2], "rules") == 0) {
        name = seg[1];
        rc = access_dept_rule(a, name, jstr(body, "field"),
                              jstr(body, "value"),
                              !json_is_true(json_object_get(body, "remove")),
                              &err);
    } else {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    web__audit_config(r, "department", name);
    return send_json(r, n == 1 ? 201 : 200, json_pack("{s:s?}", "name",
                                                      name));
}

static enum MHD_Result lists(WebRequest *r, char **seg, int n, json_t *body)
{
    Access *a = web__access(r);
    AgError err;
    if (!web__can(r, ACCESS_SHARE)) {
        return web__forbidden(r, "lists need the share verb");
    }
    if (strcmp(r->method, "POST") != 0 || body == NULL) {
        return web__json_error(r, 400, "bad request", "POST a JSON object");
    }
    const char *name = n == 1 ? jstr(body, "name") : seg[1];
    int rc = n == 1 ? access_list_add(a, name, r->who.name, &err) : AG_OK;
    json_t *members = n == 1 ? json_object_get(body, "members") : NULL, *m;
    size_t i;
    json_array_foreach(members, i, m) {
        if (rc == AG_OK) {
            rc = access_list_member(a, name, json_string_value(m), true,
                                    &err);
        }
    }
    if (rc == AG_OK && n == 3 && strcmp(seg[2], "members") == 0) {
        rc = access_list_member(a, name, jstr(body, "user"),
                                !json_is_true(json_object_get(body,
                                                              "remove")),
                                &err);
    }
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    web__audit_config(r, "list", name);
    return send_json(r, n == 1 ? 201 : 200, json_pack("{s:s?}", "name",
                                                      name));
}

static enum MHD_Result tokens(WebRequest *r, char **seg, int n,
                              json_t *body)
{
    Access *a = web__access(r);
    AgError err;
    if (r->who.user_id == 0) {
        return web__forbidden(r, "only users hold tokens");
    }
    if (n == 1 && strcmp(r->method, "GET") == 0) {
        json_t *j = access_tokens_json(a, &r->who, &err);
        return j ? send_json(r, 200, j) : send_error(r, &err);
    }
    if (n == 2 && strcmp(r->method, "DELETE") == 0) {
        if (access_revoke(a, &r->who, strtoll(seg[1], NULL, 10), &err) !=
            AG_OK) {
            return send_error(r, &err);
        }
        web__audit_config(r, "token revoke", seg[1]);
        return send_json(r, 200, json_pack("{s:b}", "revoked", 1));
    }
    if (n == 1 && strcmp(r->method, "POST") == 0) {
        json_t *days = json_object_get(body, "days");
        json_int_t d = json_is_integer(days) ? json_integer_value(days) : 30;
        if (d < 1 || d > 366) {
            return web__json_error(r, 400, "bad request", "days is 1 to "
                                   "366");
        }
        char secret[64];
        int64_t id = 0;
        if (access_credential_create(a, &r->who, "token",
                                     jstr(body, "name"),
                                     (uint32_t)d * 86400u, secret, &id,
                                     &err) != AG_OK) {
            return send_error(r, &err);
        }
        web__audit_config(r, "token create", jstr(body, "name"));
        json_t *j = json_pack("{s:I, s:s, s:I}", "id", (json_int_t)id,
                              "token", secret, "days", d);
        sodium_memzero(secret, sizeof secret);
        return send_json(r, 201, j);
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

/* ---- Modality Worklist (store.h; PS3.4 K) ------------------------------- */

/* An item as the API shows it: {"id", "department", "created", "item"},
 * the item parsed back from its DICOM JSON.  NULL when out of memory. */
static json_t *worklist_json(const StoreWorklistItem *it)
{
    json_t *item = json_loads(it->json, 0, NULL);
    if (item == NULL) {
        return NULL;
    }
    json_t *o = json_pack("{s:I, s:I, s:o}", "id", (json_int_t)it->id,
                          "created", (json_int_t)it->created_at, "item",
                          item);
    if (o != NULL && it->department[0] != '\0') {
        json_object_set_new(o, "department", json_string(it->department));
    }
    return o;
}

typedef struct WorklistRows {
    json_t *arr;
    bool failed;
} WorklistRows;

static int worklist_row(void *ctx, const StoreWorklistItem *it)
{
    WorklistRows *w = ctx;
    json_t *o = worklist_json(it);
    if (o == NULL || json_array_append_new(w->arr, o) != 0) {
        w->failed = true;
        return 1;
    }
    return 0;
}

static int worklist_one(void *ctx, const StoreWorklistItem *it)
{
    json_t **out = ctx;
    *out = worklist_json(it);
    return 0;
}

/* The first value of an element of a DICOM JSON object (PS3.18 F.2), a
 * person name by its Alphabetic group; NULL when absent.  For the audit
 * trail, which names the item's patient. */
static const char *dj_value(json_t *item, const char *tag)
{
    json_t *v = json_array_get(json_object_get(json_object_get(item, tag),
                                               "Value"), 0);
    return json_is_object(v) ? jstr(v, "Alphabetic") : json_string_value(v);
}

/* {id} of /api/v1/worklist/{id}: a positive integer, else 0. */
static int64_t worklist_id(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 18 || strspn(s, "0123456789") != len) {
        return 0;
    }
    return strtoll(s, NULL, 10);
}

/* Get item id in the caller's scope into *out: AG_OK, AG_ERR_NOTFOUND,
 * AG_ERR_NOMEM. */
static int worklist_fetch(WebRequest *r, int64_t id, json_t **out,
                          AgError *err)
{
    *out = NULL;
    int rc = store_worklist_get(web__store(r), &r->who.scope, id,
                                worklist_one, out, err);
    if (rc == AG_OK && *out == NULL) {
        rc = ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    return rc;
}

static enum MHD_Result worklist_list(WebRequest *r)
{
    WorklistRows w = {.arr = json_array()};
    AgError err;
    if (w.arr == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    if (store_worklist_list(web__store(r), &r->who.scope, worklist_row, &w,
                            &err) != AG_OK) {
        json_decref(w.arr);
        return send_error(r, &err);
    }
    if (w.failed) {
        json_decref(w.arr);
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    web__audit_query(r, "worklist", NULL);
    return send_json(r, 200, w.arr);
}

static enum MHD_Result worklist_get(WebRequest *r, int64_t id)
{
    json_t *o = NULL;
    AgError err;
    if (worklist_fetch(r, id, &o, &err) != AG_OK) {
        return send_error(r, &err);   /* out of scope: 404 like absent */
    }
    json_t *item = json_object_get(o, "item");
    web__audit_order(r, 'R', dj_value(item, "00100020"),
                     dj_value(item, "00100010"), 0,
                     ag_arena_printf(r->arena, "worklist item %" PRId64,
                                     id));
    return send_json(r, 200, o);
}

/* Why the caller may not add an item to dept, or NULL when it may: an
 * archive-wide caller adds anywhere (or nowhere), one limited to
 * departments only to one of its own, so that it can see the item. */
static const char *worklist_dept_refusal(WebRequest *r, const char *dept)
{
    if (r->who.scope.all) {
        return NULL;
    }
    if (dept == NULL || dept[0] == '\0') {
        return "give \"department\": one of yours";
    }
    json_t *me = access_principal_json(web__access(r), &r->who), *d;
    bool mine = false;
    size_t i;
    json_array_foreach(json_object_get(me, "departments"), i, d) {
        mine |= json_is_string(d) && strcmp(json_string_value(d), dept) == 0;
    }
    json_decref(me);
    return mine ? NULL : "not one of your departments";
}

/* The AgError of store_worklist_add as HTTP: every refusal is about a
 * field of the request, an unknown department included. */
static enum MHD_Result worklist_add_error(WebRequest *r, const AgError *err)
{
    if (err->code == AG_ERR_INVALID || err->code == AG_ERR_NOTFOUND) {
        return web__json_error(r, 400, "bad request", err->msg);
    }
    return send_error(r, err);
}

/* POST /api/v1/worklist {"item": {DICOM JSON}, "department": name}. */
static enum MHD_Result worklist_add(WebRequest *r, json_t *body)
{
    if (!web__can(r, ACCESS_UPLOAD)) {
        return web__forbidden(r, "adding to the worklist needs the upload "
                              "verb");
    }
    json_t *item = json_object_get(body, "item");
    json_t *dj = json_object_get(body, "department");
    if (!json_is_object(item) || (dj != NULL && !json_is_string(dj))) {
        return web__json_error(r, 400, "bad request", "send {\"item\": "
                               "{DICOM JSON}} (and optionally "
                               "\"department\": name)");
    }
    const char *dept = json_string_value(dj);
    const char *why = worklist_dept_refusal(r, dept);
    if (why != NULL) {
        return web__forbidden(r, why);
    }
    char *text = json_dumps(item, JSON_COMPACT);
    if (text == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    int64_t id = 0;
    AgError err;
    int rc = store_worklist_add(web__store(r), text, strlen(text), dept, &id,
                                &err);
    free(text);
    const char *pid = dj_value(item, "00100020");
    const char *pname = dj_value(item, "00100010");
    if (rc != AG_OK) {
        web__audit_order(r, 'C', pid, pname, rc == AG_ERR_INVALID ||
                         rc == AG_ERR_NOTFOUND ? 4 : 8, err.msg);
        return worklist_add_error(r, &err);
    }
    web__audit_order(r, 'C', pid, pname, 0, ag_arena_printf(
        r->arena, "worklist item %" PRId64 "%s%s", id, dept ? " in " : "",
        dept ? dept : ""));
    json_t *o = NULL;
    if (worklist_fetch(r, id, &o, &err) != AG_OK) {
        return send_error(r, &err);
    }
    return send_json(r, 201, o);
}

/* DELETE /api/v1/worklist/{id} (the caller checked the upload verb):
 * looked up first, in scope, so that the audit record names the patient
 * whose order went. */
static enum MHD_Result worklist_remove(WebRequest *r, int64_t id)
{
    json_t *o = NULL;
    AgError err;
    if (worklist_fetch(r, id, &o, &err) != AG_OK) {
        return send_error(r, &err);
    }
    int rc = store_worklist_remove(web__store(r), &r->who.scope, id, &err);
    json_t *item = json_object_get(o, "item");
    web__audit_order(r, 'D', dj_value(item, "00100020"),
                     dj_value(item, "00100010"), rc == AG_OK ? 0 : 8,
                     rc == AG_OK ? ag_arena_printf(r->arena, "worklist item "
                                                   "%" PRId64, id)
                                 : err.msg);
    json_decref(o);
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    return send_json(r, 200, json_pack("{s:I}", "removed", (json_int_t)id));
}

/* DELETE /api/v1/worklist?before=YYYYMMDD: the steps of past days. */
static enum MHD_Result worklist_purge(WebRequest *r)
{
    if (!web__can(r, ACCESS_ADMIN)) {
        return web__forbidden(r, "purging the worklist needs admin");
    }
    const char *before = MHD_lookup_connection_value(
        r->conn, MHD_GET_ARGUMENT_KIND, "before");
    if (before == NULL || strlen(before) != 8 ||
        strspn(before, "0123456789") != 8) {
        return web__json_error(r, 400, "bad request", "give ?before="
                               "YYYYMMDD");
    }
    uint64_t n = 0;
    AgError err;
    int rc = store_worklist_purge(web__store(r), before, &n, &err);
    web__audit_order(r, 'D', NULL, NULL, rc == AG_OK ? 0 : 8,
                     rc == AG_OK ? ag_arena_printf(r->arena, "worklist "
                                                   "purge before %s: %"
                                                   PRIu64 " items", before,
                                                   n)
                                 : err.msg);
    if (rc != AG_OK) {
        return send_error(r, &err);
    }
    return send_json(r, 200, json_pack("{s:I}", "removed", (json_int_t)n));
}

static enum MHD_Result worklist(WebRequest *r, char **seg, int n,
                                json_t *body)
{
    const char *m = r->method;
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    bool del = strcmp(m, "DELETE") == 0;
    if (n == 1 && strcmp(m, "POST") == 0) {
        return worklist_add(r, body);
    }
    if (n == 1 && del) {
        return worklist_purge(r);
    }
    if (!get && !del) {
        return web__json_error(r, 405, "method not allowed", m);
    }
    if (!web__can(r, get ? ACCESS_VIEW : ACCESS_UPLOAD)) {
        return web__forbidden(r, get ? "the worklist needs the view verb"
                                     : "removing from the worklist needs "
                                       "the upload verb");
    }
    if (n == 1) {
        return worklist_list(r);
    }
    int64_t id = worklist_id(seg[1]);
    if (id <= 0) {
        return web__json_error(r, 400, "bad request", "the item id is a "
                               "positive integer");
    }
    return get ? worklist_get(r, id) : worklist_remove(r, id);
}

/* ---- performed procedure steps (store.h; PS3.4 F.7) -------------------- */

static int mpps_row(void *ctx, const StoreMpps *m)
{
    WorklistRows *w = ctx;
    json_t *step = json_loads(m->json, 0, NULL);
    json_t *o = step ? json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:o}",
                                 "uid", m->uid, "status", m->status,
                                 "study", m->study_uid, "calling_ae",
                                 m->calling_ae, "created",
                                 (json_int_t)m->created_at, "updated",
                                 (json_int_t)m->updated_at, "step", step)
                     : NULL;
    if (o == NULL || json_array_append_new(w->arr, o) != 0) {
        w->failed = true;
        return 1;
    }
    return 0;
}

/* GET /api/v1/mpps: what the modalities reported, newest first.  Steps
 * belong to no department: a caller limited to some sees none. */
static enum MHD_Result mpps(WebRequest *r)
{
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        return web__json_error(r, 405, "method not allowed", r->method);
    }
    if (!web__can(r, ACCESS_VIEW)) {
        return web__forbidden(r, "performed procedure steps need the view "
                              "verb");
    }
    WorklistRows w = {.arr = json_array()};
    AgError err;
    if (w.arr == NULL) {
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    if (store_mpps_list(web__store(r), &r->who.scope, mpps_row, &w, &err) !=
        AG_OK) {
        json_decref(w.arr);
        return send_error(r, &err);
    }
    if (w.failed) {
        json_decref(w.arr);
        return web__json_error(r, 500, "internal error", "out of memory");
    }
    web__audit_query(r, "mpps", NULL);
    return send_json(r, 200, w.arr);
}

/* ---- settings (store.h: run-time settings) ------------------------------ */

#define MAX_SETTINGS 16

/* The read-only configuration cli/ gave us (an object; empty if none). */
static json_t *fixed_settings(WebRequest *r)
{
    const char *text = web__config(r)->settings_json;
    json_t *j = text != NULL ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    return j;
}

/* The configuration with the run-time settings as they are now, and
 * "sources": where each of those comes from.  NULL when out of memory. */
static json_t *settings_json(WebRequest *r)
{
    json_t *j = fixed_settings(r), *src = json_object();
    StoreSetting list[MAX_SETTINGS];
    size_t n = store_settings_list(web__store(r), list, MAX_SETTINGS);
    for (size_t i = 0; j != NULL && src != NULL && i < n &&
                       i < MAX_SETTINGS; i++) {
        json_object_set_new(j, list[i].key,
                            list[i].boolean
                                ? json_boolean(strcmp(list[i].value,
                                                      "true") == 0)
                                : json_string(list[i].value));
        json_object_set_new(src, list[i].key, json_string(
            store_setting_source_name(list[i].source)));
    }
    if (j == NULL || src == NULL) {
        json_decref(j);
        json_decref(src);
        return NULL;
    }
    json_object_set_new(j, "sources", src);
    return j;
}

/* Why key cannot be changed, or NULL when it is a run-time setting whose
 * value v has the right JSON type; the text of the value in *value. */
static const char *setting_refusal(WebRequest *r, json_t *fixed,
                                   const char *key, json_t *v,
                                   const char **value)
{
    bool boolean = false;
    if (!store_setting_known(key, &boolean)) {
        bool ro = json_object_get(fixed, key) != NULL ||
                  strcmp(key, "sources") == 0;
        return ag_arena_printf(r->arena, "setting %.40s: %s", key,
                               ro ? "read-only while the server runs"
                                  : "no such setting");
    }
    if (boolean ? !json_is_boolean(v) : !json_is_string(v)) {
        return ag_arena_printf(r->arena, "setting %s: must be a JSON %s",
                               key, boolean ? "boolean" : "string");
    }
    *value = boolean ? (json_is_true(v) ? "true" : "false")
                     : json_string_value(v);
    return NULL;
}

/* "duplicates keep -> reject; compress none -> rle" for the audit trail. */
static const char *settings_changed(WebRequest *r,
                                    const StoreSettingChange *ch, size_t n)
{
    const char *out = "";
    for (size_t i = 0; i < n; i++) {
        out = ag_arena_printf(r->arena, "%s%s%s %s -> %s", out,
                              i ? "; " : "", ch[i].key,
                              ch[i].old[0] ? ch[i].old : "none",
                              ch[i].value[0] ? ch[i].value : "none");
    }
    return out;
}

/*
 * PUT /api/v1/settings {"duplicates": "reject", ...}: every key and value
 * is checked before anything changes (400 naming the key: unknown,
 * read-only, wrong type, bad value); then all are stored and applied at
 * once (store_settings_update), audited, and the new settings returned.
 */
static enum MHD_Result settings_put(WebRequest *r, json_t *body)
{
    StoreSettingChange ch[MAX_SETTINGS];
    size_t n = 0;
    json_t *fixed = fixed_settings(r), *v;
    const char *key, *why = NULL;
    json_object_foreach(body, key, v) {
        const char *value = NULL;
        why = n == MAX_SETTINGS ? "too many settings"
                                : setting_refusal(r, fixed, key, v, &value);
        if (why != NULL) {
            break;
        }
        ch[n++] = (StoreSettingChange){.key = key, .value = value};
    }
    json_decref(fixed);
    if (why == NULL && n == 0) {
        why = "the body names no setting";
    }
    if (why != NULL) {
        return web__json_error(r, 400, "bad request", why);
    }
    AgError err;
    if (store_settings_update(web__store(r), ch, n, r->who.name, &err) !=
        AG_OK) {
        return send_error(r, &err);
    }
    web__audit_config(r, "settings", settings_changed(r, ch, n));
    return send_json(r, 200, settings_json(r));
}

static enum MHD_Result settings(WebRequest *r, json_t *body)
{
    if (!web__can(r, ACCESS_ADMIN)) {
        return web__forbidden(r, "settings need admin");
    }
    if (strcmp(r->method, "PUT") == 0) {
        return settings_put(r, body);
    }
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        return send_json(r, 200, settings_json(r));
    }
    return web__json_error(r, 405, "method not allowed", r->method);
}

/* ---- dispatch ------------------------------------------------------------------ */

static enum MHD_Result route(WebRequest *r, char **seg, int n, json_t *body)
{
    const char *m = r->method;
    if (n == 1 && strcmp(seg[0], "login") == 0 && strcmp(m, "POST") == 0) {
        return login(r, body);
    }
    if (!r->authed) {
        return web__unauthorized(r);
    }
    if (n == 1 && strcmp(seg[0], "logout") == 0 && strcmp(m, "POST") == 0) {
        return logout(r);
    }
    if (n == 1 && strcmp(seg[0], "me") == 0) {
        return send_json(r, 200, access_principal_json(web__access(r),
                                                       &r->who));
    }
    const LevelInfo *li = level_info(seg[0]);
    if (li != NULL) {
        if (!web__can(r, ACCESS_VIEW)) {
            return web__forbidden(r, "needs the view verb");
        }
        if (n == 1 && strcmp(m, "GET") == 0) {
            return list_level(r, li);
        }
        if (n == 2 && strcmp(m, "GET") == 0 &&
            li->level != STORE_LEVEL_PATIENT) {
            return detail(r, li, seg[1]);
        }
        if (li->level == STORE_LEVEL_STUDY) {
            return study_routes(r, seg, n, body);
        }
        if (n == 2 && strcmp(m, "DELETE") == 0 &&
            li->level != STORE_LEVEL_PATIENT) {
            return delete_below(r, li, seg[1]);
        }
        return web__json_error(r, 404, "not found", "no such resource");
    }
    if (strcmp(seg[0], "nodes") == 0 && n <= 2) {
        return nodes(r, seg, n, body);
    }
    if (n == 1 && strcmp(seg[0], "stats") == 0) {
        return stats(r);
    }
    if (n == 1 && strcmp(seg[0], "settings") == 0) {
        return settings(r, body);
    }
    if (strcmp(seg[0], "worklist") == 0 && n <= 2) {
        return worklist(r, seg, n, body);
    }
    if (strcmp(seg[0], "mpps") == 0 && n == 1) {
        return mpps(r);
    }
    if (n == 2 && strcmp(seg[0], "shares") == 0 && strcmp(m, "DELETE") == 0) {
        AgError err;
        if (!web__can(r, ACCESS_SHARE)) {
            return web__forbidden(r, "needs the share verb");
        }
        if (access_unshare(web__access(r), &r->who,
                           strtoll(seg[1], NULL, 10), &err) != AG_OK) {
            return send_error(r, &err);
        }
        web__audit_config(r, "unshare", seg[1]);
        return send_json(r, 200, json_pack("{s:b}", "removed", 1));
    }
    if (n == 1 && strcmp(seg[0], "break-glass") == 0) {
        if (!web__can(r, ACCESS_ADMIN) && !web__can(r, ACCESS_AUDIT_READ)) {
            return web__forbidden(r, "needs admin or audit-read");
        }
        AgError err;
        json_t *j = access_break_glass_json(web__access(r), &err);
        return j ? send_json(r, 200, j) : send_error(r, &err);
    }
    if (strcmp(seg[0], "users") == 0 && n <= 2) {
        return users(r, seg, n, body);
    }
    if (strcmp(seg[0], "departments") == 0 && n <= 3) {
        return departments(r, seg, n, body);
    }
    if (strcmp(seg[0], "lists") == 0 && n <= 3) {
        return lists(r, seg, n, body);
    }
    if (strcmp(seg[0], "tokens") == 0 && n <= 2) {
        return tokens(r, seg, n, body);
    }
    if (strcmp(seg[0], "jobs") == 0 && n <= 2) {
        return web__jobs_route(r, seg, n);   /* jobs.c */
    }
    if (n == 1 && strcmp(seg[0], "audit") == 0) {
        if (!web__can(r, ACCESS_AUDIT_READ)) {
            return web__forbidden(r, "needs audit-read");
        }
        return web__audit_search(r);
    }
    return web__json_error(r, 404, "not found", "no such resource");
}

enum MHD_Result web__api(WebRequest *r, char **seg, int nseg,
                         const char *data, size_t *size)
{
    if (web__access(r) == NULL) {
        if (*size > 0) {
            *size = 0;
            return MHD_YES;
        }
        return web__json_error(r, 404, "not found", "access control is off");
    }
    ApiBody *b = r->upload;
    bool put = strcmp(r->method, "PUT") == 0;
    if (*size > 0 || (put && b == NULL)) {
        if (b == NULL) {
            b = ag_calloc(1, sizeof *b);
            if (b == NULL) {
                return MHD_NO;
            }
            ag_buf_init(&b->buf, API_BODY_MAX);
            r->upload = b;
            r->upload_free = body_free;
        }
        if (*size == 0) {
            /* A PUT's first call (server.c holds back only POST's): its
             * body, even an empty one, comes before the answer. */
            return MHD_YES;
        }
        if (ag_buf_append(&b->buf, data, *size) != AG_OK) {
            b->buf.len = SIZE_MAX;   /* too big: refused below */
        }
        *size = 0;
        return MHD_YES;
    }
    if (nseg < 1) {
        return web__json_error(r, 404, "not found", "no such resource");
    }
    json_t *body = NULL;
    if (b != NULL) {
        if (b->buf.len == SIZE_MAX) {
            return web__json_error(r, 413, "too large", "the body is over "
                                   "64 KiB");
        }
        json_error_t je;
        body = json_loadb((const char *)b->buf.data, b->buf.len, 0, &je);
        if (!json_is_object(body)) {
            json_decref(body);
            return web__json_error(r, 400, "bad request", "the body is not a "
                                   "JSON object");
        }
    } else if (strcmp(r->method, "POST") == 0) {
        body = json_object();
    }
    enum MHD_Result ret = route(r, seg, nseg, body);
    json_decref(body);
    return ret;
}

/* GET /share/{secret}: the link's cookie, then the study in the viewer. */
enum MHD_Result web__share_link(WebRequest *r, const char *secret)
{
    AccessPrincipal p;
    AgError err;
    if (web__access(r) == NULL ||
        access_authenticate(web__access(r), secret, &p, &err) != AG_OK ||
        p.kind != ACCESS_KIND_LINK) {
        return web__json_error(r, 404, "not found", "no such link, or it "
                               "expired");
    }
    access_copy(&r->who, &p);
    r->authed = true;
    web__audit_study(r, "share link opened", p.study_uid, 0, NULL);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Set-Cookie",
                            session_cookie(r, secret, 7 * 86400));
    MHD_add_response_header(resp, "Location", ag_arena_printf(
        r->arena, "/viewer/viewer?StudyInstanceUIDs=%s", p.study_uid));
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    return web__send_response(r, 303, resp);
}
