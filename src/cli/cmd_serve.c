/*
 * cmd_serve.c — `agora serve`: one process, the listeners of DESIGN.md §2.
 * Today: the DICOM listener (C-ECHO, C-STORE).  HTTP and HL7 arrive with
 * their issues; their port flags are accepted so scripts keep working.
 */
#include "access/access.h"
#include "audit/audit.h"
#include "cli/cli.h"
#include "cli/expiry.h"
#include "codec/codec.h"
#include "services/services.h"
#include "web/web.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora serve [--data DIR] [--aet TITLE] [--dicom-port N]\n"
            "                   [--listen ADDR] [--accept-unknown-ae]\n"
            "                   [--max-associations N] [--duplicates P]\n"
            "                   [--http-port N] [--hl7-port N] "
            "[--config FILE]\n\n"
            "Run the archive: DICOM (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET,\n"
            "storage commitment; TLS when a certificate is given) and HTTP\n"
            "(DICOMweb: QIDO-RS, WADO-RS, STOW-RS).\n"
            "A port of 0 disables that listener.  Stop with Ctrl-C "
            "(SIGINT/SIGTERM).\n\n"
            "options:\n"
            "  --data DIR             data directory (default ./agora-data)\n"
            "  --aet TITLE            our AE title (default AGORA)\n"
            "  --dicom-port N         DICOM port (default 11112)\n"
            "  --listen ADDR          address to bind (default 127.0.0.1)\n"
            "  --accept-unknown-ae    accept calling AE titles that are not "
            "known nodes\n"
            "  --max-associations N   concurrent associations (default 64)\n"
            "  --duplicates P         keep (default), replace or reject\n"
            "  --tls-cert F, --tls-key F   certificate and key (PEM): "
            "enables DICOM TLS\n"
            "  --tls-port N           DICOM TLS port (default 2762)\n"
            "  --tls-ca F             CAs (PEM) to verify peers\n"
            "  --tls-verify-client    require a client certificate signed "
            "by --tls-ca\n"
            "  --fuzzy-names          C-FIND person names match ignoring "
            "case\n"
            "  --prefer-ts UID,...    transfer syntaxes accepted first when "
            "a peer offers\n"
            "                         them (default: uncompressed first, or "
            "the peer's\n"
            "                         compressed first choice)\n"
            "  --worklist-keep-days N remove worklist steps scheduled more "
            "than N days\n"
            "                         ago, hourly (default 30; 0 keeps them "
            "all)\n"
            "  --artim-timeout S      seconds to wait for an association "
            "request (30)\n"
            "  --idle-timeout S       seconds an association may stay "
            "silent (300)\n"
            "  --http-port N          HTTP port: DICOMweb, /healthz, /metrics "
            "(default 8080)\n"
            "  --viewer-dir DIR       OHIF viewer build served at /viewer/ "
            "(default: the one\n"
            "                         tools/install-viewer.sh installed)\n"
            "  --ui-dir DIR           login UI served at / (default: web/ui "
            "of the source)\n"
            "  --http-anonymous       serve HTTP without logging in, with "
            "every right\n"
            "                         (closed networks and tests only)\n"
            "  --http-basic           accept HTTP Basic credentials "
            "(DICOMweb clients)\n"
            "  --sync filesystem|files  how stored instances are made durable:"
            " one\n"
            "                         syncfs per batch under load (default), "
            "or only\n"
            "                         Agora's own files (a shared file "
            "system)\n"
            "  --no-staging           write every blob to its file before "
            "its index rows\n"
            "                         commit (default: a small one sent "
            "alone is\n"
            "                         committed inside the index and written "
            "out when idle)\n"
            "  --compress C           store uncompressed images compressed "
            "losslessly:\n"
            "                         jpeg-ls, rle, j2k or none (default none)\n"
            "  --decoders N           helper processes that decode compressed "
            "pixel data\n"
            "                         (sandboxed: seccomp, rlimits; default 2)\n"
            "  --decode-in-process    decode in the server process instead "
            "(not for\n"
            "                         untrusted data)\n"
            "  --http-cert F, --http-key F  HTTPS certificate and key (PEM); "
            "default: the\n"
            "                         DICOM TLS ones when given\n"
            "  --audit-syslog HOST[:PORT]  also send the audit trail to this "
            "syslog\n"
            "                         collector (TLS, RFC 5425; port 6514)\n"
            "  --audit-syslog-ca F    CAs (PEM) that verify the collector "
            "(required)\n"
            "  --audit-syslog-cert F, --audit-syslog-key F   our client "
            "certificate\n"
            "  --cors-origin ORIGIN   let web pages from ORIGIN (https://host"
            "[:port], or *)\n"
            "                         call DICOMweb; repeatable (default: "
            "same origin only)\n"
            "  --hl7-port N, --config FILE: reserved for the HL7 listener and "
            "the\n"
            "                         configuration file to come\n\n"
            "--accept-unknown-ae, --duplicates, --fuzzy-names and --compress "
            "can also be\nchanged while the server runs (PUT /api/v1/settings,"
            " kept in the index);\na flag given here applies for this run "
            "instead of the stored value.\n");
}

/* Access control options (issue 7). */
enum { OPT_HTTP_ANONYMOUS = 0x300, OPT_HTTP_BASIC, OPT_HTTP_CERT,
       OPT_HTTP_KEY, OPT_DECODERS, OPT_DECODE_IN_PROCESS, OPT_COMPRESS,
       OPT_SYNC, OPT_NO_STAGING, OPT_WORKLIST_KEEP };

/* Long options without a short form (values past any character). */
enum { OPT_VIEWER_DIR = 0x200, OPT_UI_DIR };

/*
 * First start: an administrator "admin" with the password from
 * AGORA_ADMIN_PASSWORD, or a random one printed once (SECURITY.md: no
 * default password).
 */
static int bootstrap_admin(Access *access, AgError *err)
{
    char pw[33];
    bool created = false;
    const char *env = getenv("AGORA_ADMIN_PASSWORD");
    if (access_bootstrap(access, env != NULL && env[0] != '\0' ? env : NULL,
                         pw, &created, err) != AG_OK) {
        return err->code;
    }
    if (created && pw[0] != '\0') {
        printf("Created the administrator \"admin\" with the password\n\n"
               "    %s\n\nIt is shown only this once: log in at the web "
               "address below and change it.\n\n", pw);
    } else if (created) {
        printf("Created the administrator \"admin\" (password from "
               "AGORA_ADMIN_PASSWORD).\n");
    }
    return AG_OK;
}

/* ---- audit trail options (src/audit) ------------------------------------ */
enum { OPT_AUDIT_SYSLOG = 0x400, OPT_AUDIT_SYSLOG_CA, OPT_AUDIT_SYSLOG_CERT,
       OPT_AUDIT_SYSLOG_KEY };

/* "host", "host:port", "[v6addr]:port"; host points into buf. */
static int parse_collector(const char *s, char *buf, size_t cap,
                           AuditConfig *acfg)
{
    if (ag_fmt(buf, cap, "%s", s) != AG_OK || buf[0] == '\0') {
        return -1;
    }
    char *host = buf, *port = NULL;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            return -1;
        }
        *close = '\0';
        host = buf + 1;
        port = close[1] == ':' ? close + 2 : NULL;
    } else if (strchr(buf, ':') == strrchr(buf, ':') &&
               (port = strchr(buf, ':')) != NULL) {
        *port++ = '\0';
    }
    acfg->syslog_host = host;
    acfg->syslog_port = 6514;
    char *end;
    long v = port != NULL ? strtol(port, &end, 10) : 6514;
    if (host[0] == '\0' || (port != NULL && (*end != '\0' || v < 1 ||
                                            v > 65535))) {
        return -1;
    }
    acfg->syslog_port = (uint16_t)v;
    return 0;
}
/* ---- end of audit trail options ------------------------------------------ */

/* ---- CORS for /dicom-web (--cors-origin, repeatable) -------------------- */
enum { OPT_CORS_ORIGIN = 0x500, OPT_PREFER_TS };
#define MAX_CORS_ORIGINS 16

/* An origin as browsers send it (RFC 6454 §6.1): "*", or scheme "://"
 * host [":" port] with no path, space or separator; -1 if not. */
static int add_cors_origin(const char *o, const char **list, size_t *n)
{
    size_t len = strlen(o);
    const char *host = strncmp(o, "https://", 8) == 0 ? o + 8
                       : strncmp(o, "http://", 7) == 0 ? o + 7 : NULL;
    bool ok = strcmp(o, "*") == 0 ||
              (host != NULL && host[0] != '\0' && len < 256 &&
               strcspn(host, "/?#@, \t\r\n\"\\") == strlen(host));
    if (!ok || *n == MAX_CORS_ORIGINS) {
        return -1;
    }
    list[(*n)++] = o;
    return 0;
}
/* ---- end CORS ----------------------------------------------------------- */

/* ---- sending to nodes and DIMSE counters for the web side (jobs.c,
 * /metrics): web/ does not call services/ (DESIGN.md §3), cli/ wires. */
typedef struct ServeLink {
    SvcSendConfig send;
    SvcServer *dimse[2];          /* plain and TLS listeners, or NULL */
} ServeLink;

static int serve_send(void *ctx, const char *aet, const char *const *sops,
                      size_t n, SvcSendProgress progress, void *pctx,
                      AgError *err)
{
    ServeLink *l = ctx;
    StoreNode node;
    if (store_node_get(l->send.store, aet, &node, err) != AG_OK) {
        return err->code;
    }
    return svc_send(&l->send, &node, sops, n, progress, pctx, err);
}

static void serve_dimse_stats(void *ctx, WebDimseStats *out)
{
    ServeLink *l = ctx;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 2; i++) {
        SvcStats st;
        if (l->dimse[i] == NULL) {
            continue;
        }
        svc_server_stats(l->dimse[i], &st);
        out->accepted += st.associations_accepted;
        out->rejected += st.associations_rejected;
        out->aborted += st.aborted;
        out->echo += st.echo;
        out->stored += st.stored;
        out->store_failed += st.store_failed;
        out->active += st.active;
    }
}
/* ---- end sending and DIMSE counters -------------------------------------- */

int cli_compress_syntax(const char *name, const char **ts_uid)
{
    static const struct { const char *name, *uid; } C[] = {
        {"none", NULL},
        {"jpeg-ls", "1.2.840.10008.1.2.4.80"},
        {"rle", "1.2.840.10008.1.2.5"},
        {"j2k", "1.2.840.10008.1.2.4.90"},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        if (strcmp(name, C[i].name) == 0) {
            *ts_uid = C[i].uid;
            return 0;
        }
    }
    return -1;
}

/* ---- run-time settings (store.h, PUT /api/v1/settings) ----------------
 * duplicates, accept_unknown_ae, fuzzy_names and compress: a flag given
 * here applies for this run; otherwise the value stored through the API;
 * otherwise the default.  The flags are collected as key=value text and
 * handed to store_settings_load once the store is open. */
typedef struct GivenSettings {
    const char *keys[8], *values[8];
    size_t n;
} GivenSettings;

static int give_setting(GivenSettings *g, const char *key, const char *value)
{
    AgError e;
    if (store_setting_check(key, value, &e) != AG_OK) {
        char flag[32];   /* each key is its flag's name with '_' for '-' */
        ag_fmt(flag, sizeof flag, "%s", key);
        for (char *p = flag; *p != '\0'; p++) {
            *p = *p == '_' ? '-' : *p;
        }
        fprintf(stderr, "agora serve: --%s: %s\n", flag, e.msg);
        return -1;
    }
    for (size_t i = 0; i < g->n; i++) {
        if (strcmp(g->keys[i], key) == 0) {
            g->values[i] = value;   /* the last one given wins */
            return 0;
        }
    }
    g->keys[g->n] = key;
    g->values[g->n++] = value;
    return 0;
}
/* ---- end run-time settings ---------------------------------------------- */

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > 65535) {
        return -1;
    }
    *out = (uint16_t)v;
    return 0;
}

/* What cmd_serve opened before a listener failed to start, undone in the
 * reverse order (NULL ones skipped), so that an early exit leaks nothing. */
typedef struct Opened {
    Store *store;
    AuditLog *audit;
    Access *access;
    NetTls *tls_server, *tls_client;
    SvcServer *dimse;
} Opened;

static int fail_serve(const Opened *o, const AgError *err)
{
    fprintf(stderr, "agora serve: %s\n", err->msg);
    svc_server_stop(o->dimse);
    net_tls_free(o->tls_server);
    net_tls_free(o->tls_client);
    codec_isolate_decoders(false);
    codec_sandbox_shutdown();
    access_close(o->access);
    store_close(o->store);
    audit_close(o->audit);
    return 1;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"aet", required_argument, NULL, 'a'},
        {"dicom-port", required_argument, NULL, 'p'},
        {"http-port", required_argument, NULL, 'H'},
        {"hl7-port", required_argument, NULL, 'L'},
        {"listen", required_argument, NULL, 'l'},
        {"config", required_argument, NULL, 'c'},
        {"accept-unknown-ae", no_argument, NULL, 'u'},
        {"max-associations", required_argument, NULL, 'm'},
        {"duplicates", required_argument, NULL, 'D'},
        {"artim-timeout", required_argument, NULL, 'A'},
        {"fuzzy-names", no_argument, NULL, 'F'},
        {"tls-port", required_argument, NULL, 'T'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"tls-ca", required_argument, NULL, 'R'},
        {"tls-verify-client", no_argument, NULL, 'V'},
        {"idle-timeout", required_argument, NULL, 'I'},
        /* static files (src/web/static.c) */
        {"viewer-dir", required_argument, NULL, OPT_VIEWER_DIR},
        {"ui-dir", required_argument, NULL, OPT_UI_DIR},
        {"http-anonymous", no_argument, NULL, OPT_HTTP_ANONYMOUS},
        {"http-basic", no_argument, NULL, OPT_HTTP_BASIC},
        {"http-cert", required_argument, NULL, OPT_HTTP_CERT},
        {"http-key", required_argument, NULL, OPT_HTTP_KEY},
        {"decoders", required_argument, NULL, OPT_DECODERS},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"sync", required_argument, NULL, OPT_SYNC},
        {"no-staging", no_argument, NULL, OPT_NO_STAGING},
        {"decode-in-process", no_argument, NULL, OPT_DECODE_IN_PROCESS},
        /* audit trail export (src/audit) */
        {"audit-syslog", required_argument, NULL, OPT_AUDIT_SYSLOG},
        {"audit-syslog-ca", required_argument, NULL, OPT_AUDIT_SYSLOG_CA},
        {"audit-syslog-cert", required_argument, NULL, OPT_AUDIT_SYSLOG_CERT},
        {"audit-syslog-key", required_argument, NULL, OPT_AUDIT_SYSLOG_KEY},
        {"cors-origin", required_argument, NULL, OPT_CORS_ORIGIN},
        {"prefer-ts", required_argument, NULL, OPT_PREFER_TS},
        {"worklist-keep-days", required_argument, NULL, OPT_WORKLIST_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cors[MAX_CORS_ORIGINS];   /* --cors-origin */
    size_t ncors = 0;
    AuditConfig audit_cfg = {0};     /* audit trail (src/audit) */
    char audit_host[256];
    bool http_anonymous = false, http_basic = false;
    unsigned worklist_keep_days = 30;
    const char *http_cert = NULL, *http_key = NULL;
    CodecSandboxConfig sbx;
    codec_sandbox_config_init(&sbx);
    bool isolate = true;
    StoreConfig scfg = {.data_dir = "./agora-data", .stage_small = true};
    GivenSettings given = {.n = 0};   /* run-time settings on the line */
    SvcConfig cfg = {.aet = "AGORA", .bind_addr = "127.0.0.1", .port = 11112};
    uint16_t ignored, tls_port = 2762, http_port = 8080;
    NetTlsConfig tcfg = {0};
    const char *viewer_dir = NULL, *ui_dir = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': scfg.data_dir = optarg; break;
        case 'a': cfg.aet = optarg; break;
        case 'p':
            if (parse_port(optarg, &cfg.port) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'H':
            if (parse_port(optarg, &http_port) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'L':
            if (parse_port(optarg, &ignored) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'l': cfg.bind_addr = optarg; break;
        case 'c': break;
        case 'u':
            if (give_setting(&given, "accept_unknown_ae", "true") != 0) {
                return 2;
            }
            break;
        case 'm': cfg.max_associations = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'D':
            if (give_setting(&given, "duplicates", optarg) != 0) {
                return 2;
            }
            break;
        case 'F':
            if (give_setting(&given, "fuzzy_names", "true") != 0) {
                return 2;
            }
            break;
        case 'T':
            if (parse_port(optarg, &tls_port) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'C': tcfg.cert_file = optarg; break;
        case 'K': tcfg.key_file = optarg; break;
        case 'R': tcfg.ca_file = optarg; break;
        case 'V': tcfg.verify_peer = true; break;
        case 'A':
            cfg.limits.artim_ms = (uint32_t)(strtod(optarg, NULL) * 1000);
            break;
        case 'I':
            cfg.limits.idle_ms = (uint32_t)(strtod(optarg, NULL) * 1000);
            break;
        /* static files: NULL keeps the installed defaults */
        case OPT_VIEWER_DIR: viewer_dir = optarg; break;
        case OPT_UI_DIR: ui_dir = optarg; break;
        case OPT_HTTP_ANONYMOUS: http_anonymous = true; break;
        case OPT_HTTP_BASIC: http_basic = true; break;
        case OPT_HTTP_CERT: http_cert = optarg; break;
        case OPT_HTTP_KEY: http_key = optarg; break;
        case OPT_DECODERS: sbx.helpers = (unsigned)atoi(optarg); break;
        case OPT_NO_STAGING: scfg.stage_small = false; break;
        case OPT_WORKLIST_KEEP: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v < 0 || v > 36500) {
                fprintf(stderr, "agora serve: --worklist-keep-days is a "
                        "number of days, 0 to 36500\n");
                return 2;
            }
            worklist_keep_days = (unsigned)v;
            break;
        }
        case OPT_SYNC:
            if (strcmp(optarg, "filesystem") == 0) {
                scfg.sync = STORE_SYNC_FILESYSTEM;
            } else if (strcmp(optarg, "files") == 0) {
                scfg.sync = STORE_SYNC_FILES;
            } else {
                fprintf(stderr, "agora serve: --sync is filesystem or "
                        "files\n");
                return 2;
            }
            break;
        case OPT_COMPRESS:
            if (give_setting(&given, "compress", optarg) != 0) {
                return 2;
            }
            break;
        case OPT_DECODE_IN_PROCESS: isolate = false; break;
        /* audit trail export (src/audit) */
        case OPT_AUDIT_SYSLOG:
            if (parse_collector(optarg, audit_host, sizeof audit_host,
                                &audit_cfg) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case OPT_AUDIT_SYSLOG_CA: audit_cfg.syslog_ca = optarg; break;
        case OPT_AUDIT_SYSLOG_CERT: audit_cfg.syslog_cert = optarg; break;
        case OPT_AUDIT_SYSLOG_KEY: audit_cfg.syslog_key = optarg; break;
        case OPT_PREFER_TS: cfg.prefer_ts = optarg; break;
        case OPT_CORS_ORIGIN:
            if (add_cors_origin(optarg, cors, &ncors) != 0) {
                fprintf(stderr, "agora serve: --cors-origin %s: not an "
                        "origin (https://host[:port] or *), or more than "
                        "%d\n", optarg, MAX_CORS_ORIGINS);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || strlen(cfg.aet) == 0 || strlen(cfg.aet) > 16) {
        usage(stderr);
        return 2;
    }
    /* Block the stop signals before any thread starts, then wait for one. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    AgError err;
    ag_error_clear(&err);
    Store *store;
    if (store_open(&scfg, &store, &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        return 1;
    }
    cfg.store = store;
    /* Run-time settings: the flags above, else the stored values. */
    if (store_settings_load(store, given.keys, given.values, given.n,
                            &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        store_close(store);
        return 1;
    }
    /* ---- audit trail (src/audit): DIR/audit.db, opened before any
     * listener so that every edge can record into it.  Early failure
     * paths below simply exit: nothing is recorded before Application
     * Start, and SQLite needs no close to stay consistent. */
    audit_cfg.data_dir = scfg.data_dir;
    audit_cfg.source_id = cfg.aet;
    AuditLog *audit = NULL;
    if (audit_open(&audit_cfg, &audit, &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        store_close(store);
        return 1;
    }
    /* ---- end audit trail ---- */
    Access *access = NULL;
    AccessConfig acfg = {.store = store};
    if (access_open(&acfg, &access, &err) != AG_OK ||
        bootstrap_admin(access, &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        access_close(access);
        store_close(store);
        return 1;
    }
    cfg.access = access;
    cfg.audit = audit;
    /* Compressed pixel data from outside is decoded in sandboxed helper
     * processes (src/codec/sandbox.c), started on first use. */
    if (isolate) {
        if (codec_sandbox_configure(&sbx, &err) != AG_OK) {
            fprintf(stderr, "agora serve: %s\n", err.msg);
            access_close(access);
            store_close(store);
            return 1;
        }
        codec_isolate_decoders(true);
    }
    NetTls *tls_server = NULL, *tls_client = NULL;
    if (tcfg.cert_file != NULL || tcfg.key_file != NULL) {
        NetTlsConfig ccfg = {.cert_file = tcfg.cert_file,
                             .key_file = tcfg.key_file,
                             .ca_file = tcfg.ca_file,
                             .verify_peer = tcfg.ca_file != NULL};
        if (net_tls_create(&tcfg, true, &tls_server, &err) != AG_OK ||
            net_tls_create(&ccfg, false, &tls_client, &err) != AG_OK) {
            Opened o = {store, audit, access, tls_server, tls_client, NULL};
            return fail_serve(&o, &err);
        }
        cfg.tls_client = tls_client;
    }
    SvcServer *dimse = NULL, *dimse_tls = NULL;
    if (cfg.port != 0 && svc_server_start(&cfg, &dimse, &err) != AG_OK) {
        Opened o = {store, audit, access, tls_server, tls_client, NULL};
        return fail_serve(&o, &err);
    }
    if (tls_server != NULL && tls_port != 0) {
        SvcConfig tcfg2 = cfg;
        tcfg2.port = tls_port;
        tcfg2.tls = tls_server;
        if (svc_server_start(&tcfg2, &dimse_tls, &err) != AG_OK) {
            Opened o = {store, audit, access, tls_server, tls_client, dimse};
            return fail_serve(&o, &err);
        }
    }
    ServeLink link = {.send = {.aet = cfg.aet, .store = store,   /* jobs.c */
                               .tls_client = tls_client,
                               .limits = cfg.limits},
                      .dimse = {dimse, dimse_tls}};
    WebServer *web = NULL;
    char *settings_text = NULL;   /* GET /api/v1/settings, read-only part */
    if (http_port != 0) {
        WebConfig wcfg = {.bind_addr = cfg.bind_addr, .port = http_port,
                          .store = store, .access = access, .audit = audit,
                          .anonymous = http_anonymous,
                          .basic_auth = http_basic,
                          .tls_cert_file = http_cert ? http_cert
                                                     : tcfg.cert_file,
                          .tls_key_file = http_key ? http_key : tcfg.key_file,
                          .viewer_dir = viewer_dir,
                          .ui_dir = ui_dir};
        wcfg.cors_origins = cors;   /* --cors-origin */
        wcfg.ncors_origins = ncors;
        wcfg.send = serve_send;              /* jobs.c, /metrics */
        wcfg.send_ctx = &link;
        wcfg.dimse_stats = serve_dimse_stats;
        wcfg.dimse_stats_ctx = &link;
        /* The read-only part of GET /api/v1/settings; the API adds the
         * run-time settings from the store as they are at each request. */
        json_t *settings = json_pack(
            "{s:s, s:s, s:s, s:s, s:i, s:i, s:b, s:b, s:i, s:b, s:b, s:i, "
            "s:b, s:b}",
            "version", AG_VERSION, "data", scfg.data_dir, "aet", cfg.aet,
            "listen", cfg.bind_addr,
            "dicom_port", dimse ? (int)svc_server_port(dimse) : 0,
            "tls_port", dimse_tls ? (int)svc_server_port(dimse_tls) : 0,
            "dicom_tls", dimse_tls != NULL,
            "https", wcfg.tls_cert_file != NULL,
            "max_associations",
            (int)(cfg.max_associations ? cfg.max_associations : 64),
            "http_anonymous", http_anonymous, "http_basic", http_basic,
            "decoders", (int)(sbx.helpers ? sbx.helpers : 2),
            "decode_in_process", !isolate,
            "audit_syslog", audit_cfg.syslog_host != NULL);
        /* Lives as long as the server (freed at exit). */
        settings_text = settings ? json_dumps(settings, JSON_COMPACT) : NULL;
        json_decref(settings);
        wcfg.settings_json = settings_text;
        if (web_server_start(&wcfg, &web, &err) != AG_OK) {
            fprintf(stderr, "agora serve: %s\n", err.msg);
            free(settings_text);
            svc_server_stop(dimse_tls);
            svc_server_stop(dimse);
            store_close(store);
            return 1;
        }
    }
    /* ---- audit trail: DCM 110100 Application Activity, Application Start
     * (PS3.15 A.5.3.1); the launcher is the account that ran us. */
    char audit_detail[128];
    snprintf(audit_detail, sizeof audit_detail, "agora %s, DICOM port %u, "
             "HTTP port %u", AG_VERSION, (unsigned)cfg.port,
             (unsigned)http_port);
    const char *audit_user = getenv("USER");
    AuditEvent audit_start = {.event = AUDIT_APPLICATION_ACTIVITY,
                              .type = AUDIT_TYPE_APPLICATION_START,
                              .user = audit_user, .detail = audit_detail};
    if (audit_record(audit, &audit_start, &err) != AG_OK ||
        audit_flush(audit, &err) != AG_OK) {
        fprintf(stderr, "agora serve: audit trail: %s\n", err.msg);
    }
    /* ---- end audit trail ---- */
    WorklistExpiry *expiry = NULL;
    if (worklist_expiry_start(store, audit, worklist_keep_days, &expiry,
                              &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);   /* serve anyway */
    }
    StoreStats st = {0};
    store_stats(store, &st, NULL);
    printf("agora %s serving %s (%llu studies, %llu instances)\n",
           AG_VERSION, scfg.data_dir, (unsigned long long)st.studies,
           (unsigned long long)st.instances);
    if (dimse != NULL) {
        printf("DICOM: %s@%s:%u%s\n", cfg.aet, cfg.bind_addr,
               svc_server_port(dimse),
               store_setting_bool(store, "accept_unknown_ae")
                   ? " (accepting any calling AE)" : "");
        if (web != NULL) {
            printf("HTTP:  http%s://%s:%u/ (log in there; viewer at /viewer/, "
                   "DICOMweb at /dicom-web)%s\n",
                   (http_cert ? http_cert : tcfg.cert_file) ? "s" : "",
                   cfg.bind_addr, web_server_port(web),
                   http_anonymous ? " -- ANONYMOUS ACCESS: anyone who "
                                    "reaches it sees everything" : "");
        }
        if (dimse_tls != NULL) {
            printf("DICOM TLS: %s@%s:%u%s\n", cfg.aet, cfg.bind_addr,
                   svc_server_port(dimse_tls),
                   tcfg.verify_peer ? " (client certificates required)" : "");
        }
        if (st.instances == 0) {
            printf("\nThe archive is empty.  To send images:\n"
                   "  agora node add MYSCU 127.0.0.1 11113   # make your "
                   "sender known (or --accept-unknown-ae)\n"
                   "  storescu -aet MYSCU -aec %s %s %u FILE.dcm\n",
                   cfg.aet, cfg.bind_addr, svc_server_port(dimse));
            if (web != NULL) {
                printf("  curl -X POST -H 'Content-Type: multipart/related; "
                       "type=\"application/dicom\"; boundary=B' "
                       "--data-binary @BODY http://%s:%u/dicom-web/studies\n",
                       cfg.bind_addr, web_server_port(web));
            }
            printf("  agora import --data %s FOLDER         # with the "
                   "server stopped\n"
                   "  agora demo --data %s 3                # synthetic "
                   "studies, server stopped\n",
                   scfg.data_dir, scfg.data_dir);
        }
    }
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    printf("stopping (signal %d)\n", sig);
    worklist_expiry_stop(expiry);
    web_server_stop(web);
    free(settings_text);
    svc_server_stop(dimse_tls);
    svc_server_stop(dimse);
    net_tls_free(tls_server);
    net_tls_free(tls_client);
    codec_isolate_decoders(false);
    codec_sandbox_shutdown();
    access_close(access);
    store_close(store);
    /* ---- audit trail: Application Stop, then commit and close (the
     * listeners that record are stopped above). */
    AuditEvent audit_stop = {.event = AUDIT_APPLICATION_ACTIVITY,
                             .type = AUDIT_TYPE_APPLICATION_STOP,
                             .user = audit_user};
    if (audit_record(audit, &audit_stop, &err) != AG_OK) {
        fprintf(stderr, "agora serve: audit trail: %s\n", err.msg);
    }
    audit_close(audit);
    /* ---- end audit trail ---- */
    return 0;
}
