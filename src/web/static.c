/*
 * static.c — the files a browser loads (DESIGN.md §2): the login UI at /
 * and /ui/ (web/ui in the source tree), the OHIF viewer at /viewer/ (a
 * prebuilt bundle that tools/install-viewer.sh unpacks), and the viewer's
 * app-config.js, which Agora generates so the viewer talks DICOMweb to this
 * server on the same origin.
 *
 * Files are looked up beneath a root directory only: path segments are
 * limited to a plain file-name alphabet (server.c has already refused "..",
 * "." and backslashes; MHD has decoded %-escapes, so encoded forms arrive
 * here decoded and are refused the same way), the resolved path must lie
 * inside the resolved root (symbolic links leading out are refused), and
 * only regular files are served.  A file is streamed from its descriptor;
 * a precompressed FILE.gz sibling is preferred when the client accepts
 * gzip (the viewer's bundle is tens of MB).  Validators and caching follow
 * RFC 9110/9111: a strong ETag, 304 for a matching If-None-Match, a year of
 * immutable caching for content-hashed names and revalidation for the rest.
 */
#include "web_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_IMMUTABLE "public, max-age=31536000, immutable"
#define CACHE_REVALIDATE "no-cache"

/*
 * The login UI is our own plain HTML/JS: nothing inline, nothing from
 * elsewhere.  OHIF needs more: 'unsafe-eval' because its codecs are
 * Emscripten/embind builds that create functions with new Function() at
 * start-up (without it a JPEG-LS series fails with an EvalError and stays
 * black; the browser test has such a series), 'wasm-unsafe-eval' to
 * compile those codecs, blob: workers (cornerstone's decode and compute
 * workers), inline styles (React and emotion set them) and data:/blob:
 * images (thumbnails, canvases).  Its inline <script> blocks were moved to
 * files at install time, so scripts still need no 'unsafe-inline'.
 * frame-ancestors 'none' (and X-Frame-Options for older browsers) forbids
 * framing (clickjacking).
 */
#define CSP_UI                                                              \
    "default-src 'self'; script-src 'self'; style-src 'self'; "            \
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; "        \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
#define CSP_VIEWER                                                          \
    "default-src 'self'; "                                                  \
    "script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'; "                  \
    "worker-src 'self' blob:; connect-src 'self' data: blob:; "            \
    "img-src 'self' data: blob:; media-src 'self' data: blob:; "           \
    "style-src 'self' 'unsafe-inline'; font-src 'self' data:; "            \
    "object-src 'none'; base-uri 'self'; form-action 'self'; "             \
    "frame-ancestors 'none'"

/* One tree of files served under a URL prefix. */
typedef struct Site {
    const char *dir;     /* root directory (may be a symbolic link) */
    const char *csp;     /* Content-Security-Policy of its responses */
    bool spa;            /* a miss without an extension gets index.html */
} Site;

/* An open file beneath a site's root. */
typedef struct Found {
    int fd;
    struct stat st;
} Found;

/* ---- helpers exposed for the unit tests ---------------------------------- */

typedef struct MediaType {
    const char *ext;
    const char *type;
    bool compressible;
} MediaType;

static const MediaType MEDIA_TYPES[] = {
    /* RFC 9239: text/javascript for JavaScript, including modules. */
    {"js", "text/javascript; charset=utf-8", true},
    {"mjs", "text/javascript; charset=utf-8", true},
    {"css", "text/css; charset=utf-8", true},
    {"html", "text/html; charset=utf-8", true},
    {"json", "application/json", true},
    {"jsonc", "application/json", true},
    {"map", "application/json", true},
    {"webmanifest", "application/manifest+json", true},
    {"wasm", "application/wasm", true},
    {"svg", "image/svg+xml", true},
    {"txt", "text/plain; charset=utf-8", true},
    {"xml", "application/xml", true},
    {"png", "image/png", false},
    {"jpg", "image/jpeg", false},
    {"jpeg", "image/jpeg", false},
    {"gif", "image/gif", false},
    {"webp", "image/webp", false},
    {"ico", "image/vnd.microsoft.icon", false},
    {"woff2", "font/woff2", false},
    {"woff", "font/woff", false},
    {"ttf", "font/ttf", false},
};

static const MediaType *media_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof MEDIA_TYPES / sizeof MEDIA_TYPES[0]; i++) {
        if (strcasecmp(dot + 1, MEDIA_TYPES[i].ext) == 0) {
            return &MEDIA_TYPES[i];
        }
    }
    return NULL;
}

const char *web__static_type(const char *name, bool *compressible)
{
    const MediaType *m = media_type(name);
    if (compressible != NULL) {
        *compressible = m != NULL && m->compressible;
    }
    return m != NULL ? m->type : "application/octet-stream";
}

bool web__static_hashed(const char *name)
{
    /* webpack/rspack names: "app.bundle.0f6159c501addfe9.js",
     * "0ddf166f7a343eda.wasm": one dot-separated part before the extension
     * that is all lowercase hex and long enough to be a content hash. */
    const char *last = strrchr(name, '.');
    const char *p = name;
    while (last != NULL && p < last) {
        const char *end = strchr(p, '.');
        size_t n = (size_t)(end - p);
        if (n >= 12 && strspn(p, "0123456789abcdef") == n) {
            return true;
        }
        p = end + 1;
    }
    return false;
}

bool web__static_segment_ok(const char *seg)
{
    static const char ALLOWED[] = "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._-~@+";
    size_t n = strlen(seg);
    /* No hidden files (and so no "." or ".."), nothing a shell, a file
     * system or a log would read differently. */
    return n > 0 && n <= NAME_MAX && seg[0] != '.' &&
           strspn(seg, ALLOWED) == n;
}

/* Skip optional whitespace (RFC 9110 §5.6.3). */
static const char *ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

bool web__etag_matches(const char *if_none_match, const char *etag)
{
    /* RFC 9110 §13.1.2: "*" or a list of entity tags compared weakly
     * (a W/ prefix on either side is ignored). */
    if (if_none_match == NULL) {
        return false;
    }
    if (strncmp(etag, "W/", 2) == 0) {
        etag += 2;
    }
    size_t elen = strlen(etag);
    const char *p = if_none_match;
    const char *all_end = p + strlen(p);
    while (p < all_end) {
        const char *comma = memchr(p, ',', (size_t)(all_end - p));
        const char *end = comma != NULL ? comma : all_end;
        p = ows(p, end);
        const char *q = end;
        while (q > p && (q[-1] == ' ' || q[-1] == '\t')) {
            q--;
        }
        if (q - p == 1 && *p == '*') {
            return true;
        }
        if (q - p >= 2 && strncmp(p, "W/", 2) == 0) {
            p += 2;
        }
        if ((size_t)(q - p) == elen && memcmp(p, etag, elen) == 0) {
            return true;
        }
        p = comma != NULL ? comma + 1 : all_end;
    }
    return false;
}

/* ---- default directories ------------------------------------------------- */

static char default_viewer[AG_PATH_MAX];
static char default_ui[AG_PATH_MAX];
static pthread_once_t defaults_once = PTHREAD_ONCE_INIT;

static bool has_file(const char *dir, const char *file)
{
    char path[AG_PATH_MAX];
    struct stat st;
    return ag_fmt(path, sizeof path, "%s/%s", dir, file) == AG_OK &&
           stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The first candidate directory that holds index.html; a relative
 * candidate is taken from the executable's directory. */
static void pick(char *out, const char *exe_dir, const char *const *cand)
{
    for (; *cand != NULL; cand++) {
        char dir[AG_PATH_MAX];
        int rc = (*cand)[0] == '/'
                     ? ag_fmt(dir, sizeof dir, "%s", *cand)
                     : ag_fmt(dir, sizeof dir, "%s/%s", exe_dir, *cand);
        if (rc == AG_OK && has_file(dir, "index.html")) {
            snprintf(out, AG_PATH_MAX, "%s", dir);
            return;
        }
    }
}

static void find_defaults(void)
{
    /* The executable in a build directory of the source tree (build/agora)
     * finds the tree's files; an installed one (PREFIX/bin/agora) finds
     * PREFIX/share/agora; a packaged one /usr/share/agora. */
    static const char *const VIEWER[] = {
        "../third_party/ohif/current", "../share/agora/viewer",
        "/usr/share/agora/viewer", NULL};
    static const char *const UI[] = {
        "../web/ui", "../share/agora/ui", "/usr/share/agora/ui", NULL};
    char exe[AG_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        n = 0;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    pick(default_viewer, exe, VIEWER);
    pick(default_ui, exe, UI);
}

/* The configured directory, else the default one; NULL if there is none. */
static const char *site_dir(const char *configured, const char *dflt)
{
    if (configured != NULL) {
        return configured;
    }
    pthread_once(&defaults_once, find_defaults);
    return dflt[0] != '\0' ? dflt : NULL;
}

/* ---- finding and opening a file ------------------------------------------ */

/*
 * Open rel (segments already checked) beneath root: resolve both, require
 * the file's real path to lie inside the root's, open without following a
 * final symbolic link, and accept only a regular file.  Between realpath()
 * and open() the tree could change; the roots are directories the operator
 * installs, not ones a client can write to.
 */
static int open_beneath(const char *root, const char *rel, Found *f)
{
    char root_real[PATH_MAX], full[AG_PATH_MAX], real[PATH_MAX];
    if (realpath(root, root_real) == NULL) {
        return AG_ERR_NOTFOUND;
    }
    if (ag_fmt(full, sizeof full, "%s/%s", root_real, rel) != AG_OK) {
        return AG_ERR_NOTFOUND;
    }
    if (realpath(full, real) == NULL) {
        return AG_ERR_NOTFOUND;   /* ENOENT, ENOTDIR, ELOOP, EACCES ... */
    }
    size_t n = strcmp(root_real, "/") == 0 ? 0 : strlen(root_real);
    if (strncmp(real, root_real, n) != 0 || real[n] != '/') {
        return AG_ERR_NOTFOUND;   /* a link out of the root */
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY |
                            O_NONBLOCK);
    if (fd < 0) {
        return errno == ENOENT || errno == ELOOP || errno == EACCES
                   ? AG_ERR_NOTFOUND
                   : AG_ERR_IO;
    }
    if (fstat(fd, &f->st) != 0 || !S_ISREG(f->st.st_mode)) {
        close(fd);
        return AG_ERR_NOTFOUND;
    }
    f->fd = fd;
    return AG_OK;
}

/* Join checked segments into a relative path; "" for none. */
static bool join(char **seg, int nseg, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < nseg; i++) {
        if (!web__static_segment_ok(seg[i])) {
            return false;
        }
        int n = snprintf(out + len, cap - len, "%s%s", i ? "/" : "", seg[i]);
        if (n < 0 || (size_t)n >= cap - len) {
            return false;
        }
        len += (size_t)n;
    }
    return true;
}

/* ---- responses ----------------------------------------------------------- */

static void security_headers(struct MHD_Response *resp, const char *csp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy",
                            "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy",
                            "same-origin");
}

static enum MHD_Result not_found(WebRequest *r)
{
    return web__json_error(r, 404, "not found", "no such file");
}

static enum MHD_Result redirect_dir(WebRequest *r, const char *prefix)
{
    /* The Location is built from the checked segment, never from the raw
     * URL: "//host" would be a redirect to another site. */
    char loc[64];
    snprintf(loc, sizeof loc, "/%s/", prefix);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL) {
        MHD_add_response_header(resp, "Location", loc);
        MHD_add_response_header(resp, "Cache-Control", CACHE_REVALIDATE);
    }
    return web__send_response(r, 301, resp);
}

/* Send the open file f (its descriptor passes to MHD, which closes it). */
static enum MHD_Result send_file(WebRequest *r, const Site *site,
                                 const char *name, Found *f, bool gz)
{
    bool compressible;
    const char *type = web__static_type(name, &compressible);
    char etag[96];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "%s\"",
             (uint64_t)f->st.st_mtim.tv_sec * 1000000000u +
                 (uint64_t)f->st.st_mtim.tv_nsec,
             (uint64_t)f->st.st_size, (uint64_t)f->st.st_ino,
             gz ? "-gz" : "");
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  "If-None-Match");
    struct MHD_Response *resp;
    unsigned status = 200;
    if (web__etag_matches(inm, etag)) {
        /* RFC 9110 §13.1.2: GET/HEAD with a matching tag gets 304. */
        close(f->fd);
        status = 304;
        resp = MHD_create_response_from_buffer(0, NULL,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_fd64((uint64_t)f->st.st_size, f->fd);
        if (resp == NULL) {
            close(f->fd);
        } else {
            MHD_add_response_header(resp, "Content-Type", type);
        }
    }
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "ETag", etag);
    bool immutable = web__static_hashed(name);
    MHD_add_response_header(resp, "Cache-Control",
                            immutable ? CACHE_IMMUTABLE : CACHE_REVALIDATE);
    if (compressible) {
        MHD_add_response_header(resp, "Vary", "Accept-Encoding");
    }
    if (gz && status == 200) {
        MHD_add_response_header(resp, "Content-Encoding", "gzip");
    }
    security_headers(resp, site->csp);
    return web__send_response(r, status, resp);
}

static bool has_extension(const char *name)
{
    return strchr(name, '.') != NULL;
}

static enum MHD_Result serve(WebRequest *r, const Site *site, char **seg,
                             int nseg)
{
    char rel[AG_PATH_MAX];
    if (!join(seg, nseg, rel, sizeof rel - 8)) {   /* room for ".gz" */
        return not_found(r);
    }
    if (nseg == 0) {
        snprintf(rel, sizeof rel, "index.html");
    }
    const char *name = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
    Found f;
    int rc = open_beneath(site->dir, rel, &f);
    if (rc == AG_ERR_NOTFOUND && site->spa && !has_extension(name)) {
        /* A client-side route of the single-page app (e.g.
         * /viewer/viewer?StudyInstanceUIDs=...): the app's page. */
        snprintf(rel, sizeof rel, "index.html");
        name = rel;
        rc = open_beneath(site->dir, rel, &f);
    }
    if (rc == AG_ERR_NOTFOUND) {
        return not_found(r);
    }
    if (rc != AG_OK) {
        ag_log(AG_LOG_WARN, "http", "static file %.200s: %s", rel,
               strerror(errno));
        return web__json_error(r, 500, "i/o error", "cannot read the file");
    }
    bool compressible;
    web__static_type(name, &compressible);
    const char *ae = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 "Accept-Encoding");
    bool gz = false;
    if (compressible && web_accept_gzip(ae)) {
        char rel_gz[AG_PATH_MAX];
        Found g;
        if (ag_fmt(rel_gz, sizeof rel_gz, "%s.gz", rel) == AG_OK &&
            open_beneath(site->dir, rel_gz, &g) == AG_OK) {
            close(f.fd);
            f = g;
            gz = true;
        }
    }
    return send_file(r, site, name, &f, gz);
}

/* ---- the viewer's configuration ------------------------------------------ */

/*
 * OHIF's window.config: one DICOMweb data source, this server.  The roots
 * are built from location.origin so every request stays same-origin: the
 * browser then sends the session cookie with each of them, and no
 * credential or Authorization header lives in this file (requestOptions
 * stays empty on purpose).  A 401 from DICOMweb (session over) leads back
 * to the login page, which returns to the viewer page first loaded (by
 * then the viewer itself has moved on to its "study not found" route).
 * PS3.18 §10.6 (QIDO-RS includefield, fuzzymatching) and §10.4 (WADO-RS)
 * are what the flags below promise.
 */
static const char APP_CONFIG[] =
    "/* Generated by Agora (src/web/static.c); not the bundle's file. */\n"
    "(function () {\n"
    "  var root = window.location.origin;\n"
    "  var entry = window.location.pathname + window.location.search;\n"
    "  window.config = {\n"
    "    name: 'agora',\n"
    "    routerBasename: '/viewer',\n"
    "    extensions: [],\n"
    "    modes: [],\n"
    "    customizationService: {},\n"
    "    showStudyList: true,\n"
    "    maxNumberOfWebWorkers: 3,\n"
    "    showWarningMessageForCrossOrigin: false,\n"
    "    showCPUFallbackMessage: true,\n"
    "    showLoadingIndicator: true,\n"
    "    strictZSpacingForVolumeViewport: true,\n"
    "    investigationalUseDialog: { option: 'never' },\n"
    "    maxNumRequests: { interaction: 100, thumbnail: 25, prefetch: 25 },\n"
    "    defaultDataSourceName: 'agora',\n"
    "    dataSources: [{\n"
    "      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',\n"
    "      sourceName: 'agora',\n"
    "      configuration: {\n"
    "        friendlyName: 'Agora',\n"
    "        name: 'agora',\n"
    "        qidoRoot: root + '/dicom-web',\n"
    "        wadoRoot: root + '/dicom-web',\n"
    "        wadoUriRoot: root + '/wado',\n"
    "        qidoSupportsIncludeField: true,\n"
    "        imageRendering: 'wadors',\n"
    "        thumbnailRendering: 'wadors',\n"
    "        enableStudyLazyLoad: true,\n"
    "        supportsFuzzyMatching: true,\n"
    "        supportsWildcard: true,\n"
    "        supportsReject: false,\n"
    "        dicomUploadEnabled: false,\n"
    "        omitQuotationForMultipartRequest: true,\n"
    "        bulkDataURI: { enabled: true },\n"
    "        requestOptions: {}\n"
    "      }\n"
    "    }],\n"
    "    httpErrorHandler: function (error) {\n"
    "      if (error && error.status === 401) {\n"
    "        window.location.assign('/?next=' + encodeURIComponent(entry));\n"
    "      }\n"
    "    }\n"
    "  };\n"
    "})();\n";

static enum MHD_Result app_config(WebRequest *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        sizeof APP_CONFIG - 1, (void *)(uintptr_t)APP_CONFIG,
        MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type",
                            "text/javascript; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", CACHE_REVALIDATE);
    security_headers(resp, CSP_VIEWER);
    return web__send_response(r, 200, resp);
}

/* ---- routing ------------------------------------------------------------- */

static bool url_ends_with_slash(const WebRequest *r)
{
    size_t n = strlen(r->url);
    return n > 0 && r->url[n - 1] == '/';
}

enum MHD_Result web__static_get(WebRequest *r, char **seg, int nseg)
{
    const WebConfig *cfg = web__config(r);
    Site ui = {site_dir(cfg->ui_dir, default_ui), CSP_UI, false};
    if (nseg == 0 || strcmp(seg[0], "ui") == 0) {
        if (nseg == 1 && !url_ends_with_slash(r)) {
            return redirect_dir(r, "ui");
        }
        if (ui.dir == NULL || !has_file(ui.dir, "index.html")) {
            return web__json_error(r, 404, "ui not installed",
                                   "start agora serve with --ui-dir DIR "
                                   "(the web/ui folder of the source)");
        }
        return nseg == 0 ? serve(r, &ui, NULL, 0)
                         : serve(r, &ui, seg + 1, nseg - 1);
    }
    if (strcmp(seg[0], "viewer") != 0) {
        return not_found(r);
    }
    if (nseg == 1 && !url_ends_with_slash(r)) {
        return redirect_dir(r, "viewer");
    }
    if (nseg == 2 && strcmp(seg[1], "app-config.js") == 0) {
        return app_config(r);
    }
    Site viewer = {site_dir(cfg->viewer_dir, default_viewer), CSP_VIEWER,
                   true};
    if (viewer.dir == NULL || !has_file(viewer.dir, "index.html")) {
        return web__json_error(r, 404, "viewer not installed",
                               "the OHIF viewer is not installed: run "
                               "tools/install-viewer.sh, or start agora "
                               "serve with --viewer-dir DIR");
    }
    return serve(r, &viewer, seg + 1, nseg - 1);
}
