/*
 * auth.c — who is asking (issue 7, DESIGN.md §5): the session cookie of
 * the browser UI and viewer, bearer tokens of scripts and the EHR, HTTP
 * Basic for DICOMweb clients (optional), or anonymous access when the
 * operator configured it.  Everything but /healthz, /metrics, the static
 * UI and viewer files, login and share links needs one of them.
 */
#include "web_int.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/*
 * HTTP Basic sends the password with every request, and argon2id costs
 * ~50 ms and 64 MiB by design: a verified (user, password) pair is
 * remembered for a minute under its keyed hash, so a viewer's hundreds of
 * requests cost one hash.  The key is random per process.
 */
#define BASIC_SLOTS 64
#define BASIC_TTL 60

typedef struct BasicSlot {
    unsigned char h[32];
    char user[65];
    int64_t until;
} BasicSlot;

static pthread_mutex_t basic_lock = PTHREAD_MUTEX_INITIALIZER;
static BasicSlot basic_cache[BASIC_SLOTS];
static unsigned char basic_key[32];
static bool basic_keyed;

static void basic_hash(const char *userpass, size_t n, unsigned char h[32])
{
    if (!basic_keyed) {
        randombytes_buf(basic_key, sizeof basic_key);
        basic_keyed = true;
    }
    crypto_generichash(h, 32, (const unsigned char *)userpass, n, basic_key,
                       sizeof basic_key);
}

static bool basic_cached(const unsigned char h[32], char user[65])
{
    bool hit = false;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&basic_lock);
    BasicSlot *s = &basic_cache[h[0] % BASIC_SLOTS];
    if (s->until > now && sodium_memcmp(s->h, h, 32) == 0) {
        ag_fmt(user, 65, "%s", s->user);
        hit = true;
    }
    pthread_mutex_unlock(&basic_lock);
    return hit;
}

static void basic_remember(const unsigned char h[32], const char *user)
{
    pthread_mutex_lock(&basic_lock);
    BasicSlot *s = &basic_cache[h[0] % BASIC_SLOTS];
    memcpy(s->h, h, 32);
    ag_fmt(s->user, sizeof s->user, "%s", user);
    s->until = (int64_t)time(NULL) + BASIC_TTL;
    pthread_mutex_unlock(&basic_lock);
}

static bool basic_login(WebRequest *r, const char *b64)
{
    char buf[512];
    size_t n = 0;
    if (sodium_base642bin((unsigned char *)buf, sizeof buf - 1, b64,
                          strlen(b64), " ", &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        return false;
    }
    buf[n] = '\0';
    char *colon = memchr(buf, ':', n);
    if (colon == NULL || strlen(buf) != n) {
        return false;
    }
    unsigned char h[32];
    basic_hash(buf, n, h);
    *colon = '\0';
    char user[65];
    bool ok;
    if (basic_cached(h, user) && strcmp(user, buf) == 0) {
        AgError err;
        ok = access_user_principal(web__access(r), user, &r->who, &err) ==
             AG_OK;
    } else {
        uint32_t wait = 0;
        ok = access_login(web__access(r), buf, colon + 1, r->addr, &r->who,
                          &wait) == ACCESS_LOGIN_OK;
        if (ok) {
            basic_remember(h, buf);
        }
    }
    sodium_memzero(buf, sizeof buf);
    return ok;
}

static void client_addr(WebRequest *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
        r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    r->addr[0] = '\0';
    if (ci == NULL || ci->client_addr == NULL) {
        return;
    }
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
                  r->addr, sizeof r->addr);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
                  r->addr, sizeof r->addr);
    }
}

void web__authenticate(WebRequest *r)
{
    const WebConfig *c = web__config(r);
    client_addr(r);
    r->authed = false;
    if (c->access == NULL) {
        if (c->anonymous) {
            access_principal_all(&r->who, ACCESS_KIND_ANONYMOUS,
                                 "anonymous");
            r->authed = true;
        }
        return;
    }
    AgError err;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                   "Authorization");
    if (auth != NULL) {
        /* Credentials that are offered and wrong are refused, never
         * downgraded to anonymous access. */
        bool bearer = strncasecmp(auth, "Bearer ", 7) == 0;
        if (bearer) {
            r->authed = access_authenticate(c->access, auth + 7, &r->who,
                                            &err) == AG_OK;
        } else if (c->basic_auth && strncasecmp(auth, "Basic ", 6) == 0) {
            r->authed = basic_login(r, auth + 6);
        }
        if (!r->authed) {
            web__audit_auth(r, NULL, "login", 4, bearer
                                ? "unknown, expired or revoked bearer token"
                                : "HTTP credentials refused");
        }
        return;
    }
    const char *cookie = MHD_lookup_connection_value(r->conn,
                                                     MHD_COOKIE_KIND,
                                                     "agora_session");
    if (cookie != NULL &&
        access_authenticate(c->access, cookie, &r->who, &err) == AG_OK) {
        r->authed = true;
        return;
    }
    if (c->anonymous) {
        access_principal_all(&r->who, ACCESS_KIND_ANONYMOUS, "anonymous");
        r->authed = true;
    }
}

enum MHD_Result web__unauthorized(WebRequest *r)
{
    return web__json_error(r, 401, "unauthorized",
                           "log in (POST /api/v1/login) or send a bearer "
                           "token");
}

bool web__can(WebRequest *r, uint32_t verb)
{
    return r->authed && (r->who.verbs & verb) == verb;
}

enum MHD_Result web__forbidden(WebRequest *r, const char *what)
{
    return web__json_error(r, 403, "forbidden", what);
}
