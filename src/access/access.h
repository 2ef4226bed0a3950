/*
 * access.h — users, roles, departments, credentials, shares and
 * break-the-glass: who may do what to which study (DESIGN.md §5).
 *
 * The data lives in the index (migration 3: departments, users,
 * user_depts, dept_rules, study_depts, credentials, shares, lists,
 * list_members, break_glass) so that the filter is part of every index
 * query (StoreScope in store.h).  This module decides policy: password
 * hashing, the verbs of each role, turning a credential into a principal
 * and its scope, login rate limits.
 *
 * Security notes (SECURITY.md):
 *  - Passwords: argon2id (libsodium crypto_pwhash_str, interactive limits);
 *    a login for an unknown user still runs one hash, so timing does not
 *    tell which user names exist.
 *  - Session cookies, API tokens and share links are 256-bit random
 *    strings; only their BLAKE2b-256 hash is stored, so a copy of the
 *    database does not let anyone in.  Each has an expiry and can be
 *    revoked.
 *  - Login failures are limited per user name and per client address
 *    (in memory: a restart forgets them, an attacker cannot restart us).
 *
 * Thread-safety: every function is safe to call from any thread.
 */
#ifndef AG_ACCESS_H
#define AG_ACCESS_H

#include "store/store.h"

#include <jansson.h>

/* Verbs (issue 7): what a role lets a principal do to studies in scope. */
enum {
    ACCESS_VIEW = 1u << 0,       /* query, metadata, frames, rendered */
    ACCESS_DOWNLOAD = 1u << 1,   /* whole instances: WADO-RS, C-MOVE/GET */
    ACCESS_UPLOAD = 1u << 2,     /* STOW-RS, C-STORE */
    ACCESS_SHARE = 1u << 3,      /* shares and share links */
    ACCESS_ANNOTATE = 1u << 4,
    ACCESS_DELETE = 1u << 5,
    ACCESS_ADMIN = 1u << 6,      /* users, departments, nodes, rules */
    ACCESS_AUDIT_READ = 1u << 7,
};

typedef enum AccessKind {
    ACCESS_KIND_USER,        /* logged-in user (session, token, basic) */
    ACCESS_KIND_NODE,        /* a DICOM node by its AE title */
    ACCESS_KIND_ANONYMOUS,   /* explicitly allowed anonymous access */
    ACCESS_KIND_LINK,        /* an external share link: one study */
} AccessKind;

/* Who is asking: resolved once per request or association. */
typedef struct AccessPrincipal {
    AccessKind kind;
    char name[65];           /* user name, AE title, "anonymous", "link" */
    char role[33];
    int64_t user_id;         /* users.id, 0 for none */
    int64_t credential_id;   /* the session/token/link used, 0 for none */
    uint32_t verbs;
    StoreScope scope;
    char study_uid[65];      /* ACCESS_KIND_LINK: the study (scope points
                              * here; copy the struct with access_copy) */
} AccessPrincipal;

typedef struct Access Access;

typedef struct AccessConfig {
    Store *store;                /* borrowed */
    uint32_t session_seconds;    /* default 12 h */
    uint32_t login_user_failures;    /* per user per window, default 5 */
    uint32_t login_addr_failures;    /* per address per window, default 20 */
    uint32_t login_window_seconds;   /* default 300 */
} AccessConfig;

int access_open(const AccessConfig *cfg, Access **out, AgError *err);
void access_close(Access *a);

/* ---- roles and verbs ----------------------------------------------------- */

/** Verbs of a role, 0 for an unknown role.  Roles: admin, radiologist,
 *  clinician, technologist, viewer, archivist, auditor. */
uint32_t access_role_verbs(const char *role);
/** JSON array of the verb names in verbs. */
json_t *access_verbs_json(uint32_t verbs);
/** The verb's bit for a name ("view", "audit-read", ...), 0 if unknown. */
uint32_t access_verb_from_name(const char *name);

/** Principal with every verb and the whole archive (trusted nodes,
 *  anonymous access when configured, the CLI). */
void access_principal_all(AccessPrincipal *p, AccessKind kind,
                          const char *name);
/** {"name","kind","role","verbs":[...],"departments":[...]} */
json_t *access_principal_json(Access *a, const AccessPrincipal *p);
/** Copy a principal, fixing the scope's pointer into the copy. */
void access_copy(AccessPrincipal *dst, const AccessPrincipal *src);

/* ---- users and departments (admin) ----------------------------------- */

/** Create the first administrator when there are no users: name "admin",
 *  password from password (if not NULL) or random (written to out_pw, 24
 *  characters).  *created tells whether it happened. */
int access_bootstrap(Access *a, const char *password, char out_pw[33],
                     bool *created, AgError *err);

/** password may be NULL (no password login: tokens only). */
int access_user_add(Access *a, const char *name, const char *password,
                    const char *role, AgError *err);
int access_user_passwd(Access *a, const char *name, const char *password,
                       AgError *err);
int access_user_role(Access *a, const char *name, const char *role,
                     AgError *err);
/** Disabling also revokes every session and token of the user. */
int access_user_disable(Access *a, const char *name, bool disabled,
                        AgError *err);
int access_user_join(Access *a, const char *name, const char *dept,
                     bool join, AgError *err);
/** [{"name","role","disabled","departments":[...]}] (new reference). */
json_t *access_users_json(Access *a, AgError *err);

int access_dept_add(Access *a, const char *name, const char *description,
                    AgError *err);
/** field: ae, department (Institution Department Name), institution,
 *  service (Requesting Service), modality. */
int access_dept_rule(Access *a, const char *dept, const char *field,
                     const char *value, bool add, AgError *err);
/** What access_dept_rule checks of a rule before it looks at the index
 *  (AG_ERR_INVALID naming the fault): for callers that check a whole
 *  request before changing anything. */
int access_rule_check(const char *field, const char *value, AgError *err);
bool access_dept_exists(Access *a, const char *name);
/** [{"name","description","rules":[{"field","value"}],"users":[...]}] */
json_t *access_depts_json(Access *a, AgError *err);
/** Assign a study to a department (or remove the assignment). */
int access_study_assign(Access *a, const char *study_uid, const char *dept,
                        bool add, AgError *err);

/* ---- authentication -------------------------------------------------- */

typedef enum AccessLogin {
    ACCESS_LOGIN_OK,
    ACCESS_LOGIN_BAD,        /* unknown user, wrong password, disabled */
    ACCESS_LOGIN_LIMITED,    /* too many failures: *retry_after seconds */
} AccessLogin;

/** Check a password; on success fill *p.  addr may be NULL. */
AccessLogin access_login(Access *a, const char *user, const char *password,
                         const char *addr, AccessPrincipal *p,
                         uint32_t *retry_after);

/**
 * A new credential for the user of p: kind "session" (expires after the
 * configured session time) or "token" (after seconds).  The secret is
 * written to out (NUL-terminated, < 64 bytes) and never stored.
 */
int access_credential_create(Access *a, const AccessPrincipal *p,
                             const char *kind, const char *name,
                             uint32_t seconds, char out[64], int64_t *id,
                             AgError *err);
/** Resolve a session cookie, bearer token or share link.  AG_ERR_NOTFOUND
 *  when unknown, expired, revoked or the user is disabled. */
int access_authenticate(Access *a, const char *secret, AccessPrincipal *p,
                        AgError *err);
/** Principal of a user by name (DIMSE user identity after a password
 *  check, tests).  AG_ERR_NOTFOUND when unknown or disabled. */
int access_user_principal(Access *a, const char *name, AccessPrincipal *p,
                          AgError *err);
/** Principal of a DICOM node: its department's scope, or the whole
 *  archive for a node without a department. */
void access_node_principal(Access *a, const StoreNode *n,
                           AccessPrincipal *p);

/** Revoke every credential of kind ("session", "token") of the user. */
int access_revoke_all(Access *a, int64_t user_id, const char *kind,
                      AgError *err);
/** Revoke one token of the user (admins: any user's). */
int access_revoke(Access *a, const AccessPrincipal *by, int64_t id,
                  AgError *err);
/** The user's tokens: [{"id","name","created","expires","revoked"}]. */
json_t *access_tokens_json(Access *a, const AccessPrincipal *p,
                           AgError *err);

/* ---- shares and break-the-glass ------------------------------------ */

typedef struct AccessShare {
    const char *study_uid;
    const char *department;   /* exactly one of department, user, list, */
    const char *user;         /* or link = true */
    const char *list;
    bool link;
    uint32_t seconds;         /* 0 = no expiry (links: default 7 days) */
} AccessShare;

/**
 * Share a study the principal can see (AG_ERR_NOTFOUND otherwise, as for
 * a study that does not exist).  For a link, the secret is written to
 * link_out (the URL path is /share/SECRET).
 */
int access_share(Access *a, const AccessPrincipal *by,
                 const AccessShare *sh, char link_out[64], int64_t *id,
                 AgError *err);
int access_unshare(Access *a, const AccessPrincipal *by, int64_t id,
                   AgError *err);
/** Shares of a study the principal can see. */
json_t *access_shares_json(Access *a, const AccessPrincipal *by,
                           const char *study_uid, AgError *err);

/** A named list (tumour board): its members see the studies shared with
 *  it.  Members are user names. */
int access_list_add(Access *a, const char *name, const char *created_by,
                    AgError *err);
int access_list_member(Access *a, const char *list, const char *user,
                       bool add, AgError *err);

/**
 * Break the glass: time-limited view of a study outside the principal's
 * scope, for a stated reason (required, at least 8 characters).
 * AG_ERR_NOTFOUND when the study does not exist.
 */
int access_break_glass(Access *a, const AccessPrincipal *by,
                       const char *study_uid, const char *reason,
                       uint32_t seconds, AgError *err);
/** Break-the-glass events for review, newest first. */
json_t *access_break_glass_json(Access *a, AgError *err);

#endif
