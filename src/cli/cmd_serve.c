/*
 * cmd_serve.c — `agora serve`: one process, the listeners of DESIGN.md §2.
 * Today: the DICOM listener (C-ECHO, C-STORE).  HTTP and HL7 arrive with
 * their issues; their port flags are accepted so scripts keep working.
 */
#include "cli/cli.h"
#include "services/services.h"
#include "web/web.h"

#include <getopt.h>
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
            "  --artim-timeout S      seconds to wait for an association "
            "request (30)\n"
            "  --idle-timeout S       seconds an association may stay "
            "silent (300)\n"
            "  --http-port N          HTTP port: DICOMweb, /healthz, /metrics "
            "(default 8080)\n"
            "  --hl7-port N, --config FILE: reserved for the HL7 listener and "
            "the\n"
            "                         configuration file to come\n");
}

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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig scfg = {.data_dir = "./agora-data"};
    SvcConfig cfg = {.aet = "AGORA", .bind_addr = "127.0.0.1", .port = 11112};
    uint16_t ignored, tls_port = 2762, http_port = 8080;
    NetTlsConfig tcfg = {0};
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
        case 'u': cfg.accept_unknown_ae = true; break;
        case 'm': cfg.max_associations = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'D':
            scfg.dup_policy = strcmp(optarg, "replace") == 0
                                  ? STORE_DUP_REPLACE
                              : strcmp(optarg, "reject") == 0
                                  ? STORE_DUP_REJECT
                                  : STORE_DUP_KEEP_FIRST;
            break;
        case 'F': cfg.fuzzy_names = true; break;
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
    NetTls *tls_server = NULL, *tls_client = NULL;
    if (tcfg.cert_file != NULL || tcfg.key_file != NULL) {
        NetTlsConfig ccfg = {.cert_file = tcfg.cert_file,
                             .key_file = tcfg.key_file,
                             .ca_file = tcfg.ca_file,
                             .verify_peer = tcfg.ca_file != NULL};
        if (net_tls_create(&tcfg, true, &tls_server, &err) != AG_OK ||
            net_tls_create(&ccfg, false, &tls_client, &err) != AG_OK) {
            fprintf(stderr, "agora serve: %s\n", err.msg);
            net_tls_free(tls_server);
            store_close(store);
            return 1;
        }
        cfg.tls_client = tls_client;
    }
    SvcServer *dimse = NULL, *dimse_tls = NULL;
    if (cfg.port != 0 && svc_server_start(&cfg, &dimse, &err) != AG_OK) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        store_close(store);
        return 1;
    }
    if (tls_server != NULL && tls_port != 0) {
        SvcConfig tcfg2 = cfg;
        tcfg2.port = tls_port;
        tcfg2.tls = tls_server;
        if (svc_server_start(&tcfg2, &dimse_tls, &err) != AG_OK) {
            fprintf(stderr, "agora serve: %s\n", err.msg);
            svc_server_stop(dimse);
            store_close(store);
            return 1;
        }
    }
    WebServer *web = NULL;
    if (http_port != 0) {
        WebConfig wcfg = {.bind_addr = cfg.bind_addr, .port = http_port,
                          .store = store};
        if (web_server_start(&wcfg, &web, &err) != AG_OK) {
            fprintf(stderr, "agora serve: %s\n", err.msg);
            svc_server_stop(dimse_tls);
            svc_server_stop(dimse);
            store_close(store);
            return 1;
        }
    }
    StoreStats st = {0};
    store_stats(store, &st, NULL);
    printf("agora %s serving %s (%llu studies, %llu instances)\n",
           AG_VERSION, scfg.data_dir, (unsigned long long)st.studies,
           (unsigned long long)st.instances);
    if (dimse != NULL) {
        printf("DICOM: %s@%s:%u%s\n", cfg.aet, cfg.bind_addr,
               svc_server_port(dimse),
               cfg.accept_unknown_ae ? " (accepting any calling AE)" : "");
        if (web != NULL) {
            printf("HTTP:  http://%s:%u/ (DICOMweb at /dicom-web)\n",
                   cfg.bind_addr, web_server_port(web));
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
    web_server_stop(web);
    svc_server_stop(dimse_tls);
    svc_server_stop(dimse);
    net_tls_free(tls_server);
    net_tls_free(tls_client);
    store_close(store);
    return 0;
}
