/*
 * cmd_node.c — `agora node add|list|remove|echo`: remote DICOM nodes kept
 * in the index (known calling AEs, C-MOVE destinations).
 */
#include "cli/cli.h"
#include "net/net.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora node [--data DIR] [--department D] add AET HOST PORT "
            "[DESCRIPTION]\n"
            "       agora node [--data DIR] list\n"
            "       agora node [--data DIR] remove AET\n"
            "       agora node [--data DIR] echo AET [--aet OURS]\n\n"
            "Remote DICOM nodes: the calling AE titles Agora accepts and the "
            "destinations\nit sends to.  `echo` sends a C-ECHO to the node "
            "(Verification, PS3.4 A).\n"
            "A node with --department sees (C-FIND, C-MOVE, C-GET) only that "
            "department's\nstudies, and what it stores is assigned to it; a "
            "node without one is trusted\nwith the whole archive.\n");
}

static int print_node(void *ctx, const StoreNode *n)
{
    (void)ctx;
    printf("%-16s %s:%u%s  %s%s%s\n", n->aet, n->host, n->port,
           n->tls ? " tls" : "", n->department[0] ? "[" : "", n->department,
           n->department[0] ? "] " : "");
    if (n->description[0] != '\0') {
        printf("%-16s %s\n", "", n->description);
    }
    return 0;
}

/* C-ECHO as SCU (PS3.4 A.4). */
static int echo(const StoreNode *n, const char *ours, AgError *err)
{
    int fd = net_connect(n->host, n->port, 10000, err);
    if (fd < 0) {
        return fd;
    }
    NetTransport t;
    net_transport_plain(&t, fd);
    NetAssocParams *rq = ag_calloc(1, sizeof *rq);
    NetAssocParams *ac = ag_calloc(1, sizeof *ac);
    NetAssoc *a = NULL;
    int rc = rq && ac ? AG_OK : ag_error_set(err, AG_ERR_NOMEM, "oom");
    if (rc == AG_OK) {
        rq->protocol_version = 1;
        ag_fmt(rq->called_ae, sizeof rq->called_ae, "%s", n->aet);
        ag_fmt(rq->calling_ae, sizeof rq->calling_ae, "%s", ours);
        ag_fmt(rq->app_context, sizeof rq->app_context, "%s",
               NET_APP_CONTEXT);
        ag_fmt(rq->impl_class_uid, sizeof rq->impl_class_uid, "%s",
               DICOM_IMPLEMENTATION_CLASS_UID);
        ag_fmt(rq->impl_version, sizeof rq->impl_version, "%s",
               DICOM_IMPLEMENTATION_VERSION);
        rq->ncontexts = 1;
        rq->contexts[0].id = 1;
        ag_fmt(rq->contexts[0].abstract_syntax, 65, "1.2.840.10008.1.1");
        rq->contexts[0].nsyntaxes = 2;
        ag_fmt(rq->contexts[0].syntaxes[0], 65, DICOM_TS_EXPLICIT_LE);
        ag_fmt(rq->contexts[0].syntaxes[1], 65, DICOM_TS_IMPLICIT_LE);
        NetReject rj;
        rc = net_request(&t, NULL, rq, &a, ac, &rj, err);
    }
    if (rc == AG_OK) {
        if (net_assoc_context_ts(a, 1) == NULL) {
            rc = ag_error_set(err, AG_ERR_UNSUPPORTED,
                              "peer does not accept Verification");
        } else {
            DimseCommand c = {.command = DIMSE_C_ECHO_RQ, .message_id = 1,
                              .dataset_type = DIMSE_NO_DATASET,
                              .remaining = -1, .completed = -1, .failed = -1,
                              .warning = -1};
            ag_fmt(c.affected_class, sizeof c.affected_class,
                   "1.2.840.10008.1.1");
            NetMessage m;
            rc = net_send_command(a, 1, &c, err);
            if (rc == AG_OK) {
                rc = net_recv_command(a, &m, err);
            }
            if (rc == AG_OK && m.cmd.status != DIMSE_SUCCESS) {
                rc = ag_error_set(err, AG_ERR_IO, "C-ECHO status %04x",
                                  m.cmd.status);
            }
            if (rc == AG_OK) {
                rc = net_release(a, err);
            }
        }
    }
    net_assoc_free(a);
    ag_free(rq);
    ag_free(ac);
    close(fd);
    return rc;
}

static int found(void *ctx, int ncol, const char *const *vals)
{
    (void)ncol;
    (void)vals;
    *(bool *)ctx = true;
    return 1;
}

static int department_exists(Store *s, const char *name, AgError *err)
{
    bool yes = false;
    const char *p[] = {name};
    int rc = store_sql_select(s, "SELECT 1 FROM departments WHERE name = ?1",
                              p, 1, found, &yes, err);
    if (rc == AG_OK && !yes) {
        rc = ag_error_set(err, AG_ERR_NOTFOUND, "no department %.64s (agora "
                          "dept add %.64s)", name, name);
    }
    return rc;
}

int cmd_node(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"aet", required_argument, NULL, 'a'},
        {"department", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    StoreConfig cfg = {.data_dir = "./agora-data"};
    const char *ours = "AGORA", *dept = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg.data_dir = optarg; break;
        case 'a': ours = optarg; break;
        case 'D': dept = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *verb = argv[optind++];
    int nargs = argc - optind;
    char **args = argv + optind;
    bool ok_args = (strcmp(verb, "add") == 0 && (nargs == 3 || nargs == 4)) ||
                   (strcmp(verb, "list") == 0 && nargs == 0) ||
                   (strcmp(verb, "remove") == 0 && nargs == 1) ||
                   (strcmp(verb, "echo") == 0 && nargs == 1);
    if (!ok_args) {
        usage(stderr);
        return 2;
    }
    Store *s;
    AgError err;
    ag_error_clear(&err);
    if (store_open(&cfg, &s, &err) != AG_OK) {
        fprintf(stderr, "agora node: %s\n", err.msg);
        return 1;
    }
    int rc = AG_OK;
    if (strcmp(verb, "add") == 0) {
        StoreNode n = {0};
        char *end;
        long port = strtol(args[2], &end, 10);
        if (*end != '\0' || port < 1 || port > 65535 ||
            ag_fmt(n.aet, sizeof n.aet, "%s", args[0]) != AG_OK ||
            ag_fmt(n.host, sizeof n.host, "%s", args[1]) != AG_OK) {
            rc = ag_error_set(&err, AG_ERR_INVALID, "bad AE title, host or "
                              "port");
        } else {
            n.port = (uint16_t)port;
            if (nargs == 4) {
                ag_fmt(n.description, sizeof n.description, "%s", args[3]);
            }
            if (dept != NULL) {
                ag_fmt(n.department, sizeof n.department, "%s", dept);
                rc = department_exists(s, dept, &err);
            }
            if (rc == AG_OK) {
                rc = store_node_put(s, &n, &err);
            }
        }
    } else if (strcmp(verb, "list") == 0) {
        rc = store_node_list(s, print_node, NULL, &err);
    } else if (strcmp(verb, "remove") == 0) {
        rc = store_node_remove(s, args[0], &err);
    } else {
        StoreNode n;
        rc = store_node_get(s, args[0], &n, &err);
        if (rc == AG_OK) {
            rc = echo(&n, ours, &err);
        }
        if (rc == AG_OK) {
            printf("C-ECHO to %s at %s:%u: success\n", n.aet, n.host, n.port);
        }
    }
    store_close(s);
    if (rc != AG_OK) {
        fprintf(stderr, "agora node: %s\n", err.msg);
        return 1;
    }
    return 0;
}
