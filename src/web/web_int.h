/* web_int.h — internal to src/web/. */
#ifndef AG_WEB_INT_H
#define AG_WEB_INT_H

#include "web.h"

#include <microhttpd.h>

/* One request: its connection, method, path and (for uploads) state. */
typedef struct WebRequest {
    struct WebServer *server;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    AgArena *arena;              /* request lifetime */
    void *upload;                /* handler state across body chunks */
    void (*upload_free)(void *);
    int status;                  /* for the access log */
} WebRequest;

Store *web__store(WebRequest *r);

/* Access control (issue 7): whether the request's user may see the study.
 * A handler that serves anything of a study it did not reach through
 * store_query() calls this first and answers exactly as for a study that
 * does not exist (404) when it returns false, so UIDs cannot be probed. */
bool web__study_visible(WebRequest *r, const char *study_uid);

/* Responses (each queues and returns the MHD result). */
enum MHD_Result web__json_error(WebRequest *r, unsigned status,
                                const char *error, const char *detail);
enum MHD_Result web__send(WebRequest *r, unsigned status,
                          const char *content_type, const void *body,
                          size_t len);
enum MHD_Result web__send_response(WebRequest *r, unsigned status,
                                   struct MHD_Response *resp);

/* DICOMweb (dicomweb.c): GET/HEAD of QIDO and WADO routes, with path
 * segments after /dicom-web split. */
enum MHD_Result web__dicomweb_get(WebRequest *r, char **seg, int nseg);
/* STOW-RS: called for each body chunk (data, *size), then with *size 0. */
enum MHD_Result web__stow(WebRequest *r, char **seg, int nseg,
                          const char *data, size_t *size);

#endif
