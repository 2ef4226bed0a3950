/*
 * codes.c — the DCM codes of audit events (PS3.16 CID 400 Audit Event ID,
 * CID 401/403/404/405 event types) and each event's usual action code
 * (PS3.15 A.5.3).
 */
#include "audit_int.h"

typedef struct Code {
    int code;
    const char *name;     /* Code Meaning */
    char action;          /* events only: the usual EventActionCode */
} Code;

static const Code EVENTS[] = {
    {110100, "Application Activity", 'E'},
    {110101, "Audit Log Used", 'R'},
    {110102, "Begin Transferring DICOM Instances", 'E'},
    {110103, "DICOM Instances Accessed", 'R'},
    {110104, "DICOM Instances Transferred", 'R'},
    {110105, "DICOM Study Deleted", 'D'},
    {110106, "Export", 'R'},
    {110107, "Import", 'C'},
    {110108, "Network Entry", 'E'},
    {110109, "Order Record", 'R'},
    {110110, "Patient Record", 'R'},
    {110111, "Procedure Record", 'R'},
    {110112, "Query", 'E'},
    {110113, "Security Alert", 'E'},
    {110114, "User Authentication", 'E'},
};

static const Code TYPES[] = {
    {110120, "Application Start", 0},
    {110121, "Application Stop", 0},
    {110122, "Login", 0},
    {110123, "Logout", 0},
    {110124, "Attach", 0},
    {110125, "Detach", 0},
    {110126, "Node Authentication", 0},
    {110127, "Emergency Override Started", 0},
    {110128, "Network Configuration", 0},
    {110129, "Security Configuration", 0},
    {110130, "Hardware Configuration", 0},
    {110131, "Software Configuration", 0},
    {110132, "Use of Restricted Function", 0},
    {110133, "Audit Recording Stopped", 0},
    {110134, "Audit Recording Started", 0},
    {110135, "Object Security Attributes Changed", 0},
    {110136, "Security Roles Changed", 0},
    {110137, "User security Attributes Changed", 0},
    {110138, "Emergency Override Stopped", 0},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const Code *find(const Code *t, size_t n, int code)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i].code == code) {
            return &t[i];
        }
    }
    return NULL;
}

const char *audit_code_name(int code)
{
    const Code *c = find(EVENTS, COUNT(EVENTS), code);
    if (c == NULL) {
        c = find(TYPES, COUNT(TYPES), code);
    }
    return c != NULL ? c->name : "";
}

bool audit__event_known(int code)
{
    return find(EVENTS, COUNT(EVENTS), code) != NULL;
}

bool audit__type_known(int code)
{
    return code == 0 || find(TYPES, COUNT(TYPES), code) != NULL;
}

char audit__default_action(AuditEventId event)
{
    const Code *c = find(EVENTS, COUNT(EVENTS), (int)event);
    return c != NULL ? c->action : 'E';
}
