/*
 * xml.c — a record as the DICOM audit message (PS3.15 A.5.1 schema, the
 * message of A.5.3 for its event), for export to a syslog collector.
 *
 * Coded values are written as the DICOM schema has them: csd-code,
 * codeSystemName and originalText (the Code Meaning).  Every value from a
 * record is escaped; characters XML 1.0 cannot carry at all (C0 controls
 * other than tab, LF, CR; U+FFFE/U+FFFF; invalid UTF-8) become U+FFFD, so
 * the collector always receives a well-formed document.
 */
#include "audit_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* ---- escaping ---------------------------------------------------------- */

static int escape_char(AgBuf *out, uint32_t cp, bool attr)
{
    switch (cp) {
    case '&': return ag_buf_append_str(out, "&amp;");
    case '<': return ag_buf_append_str(out, "&lt;");
    case '>': return ag_buf_append_str(out, "&gt;");
    case '"': return ag_buf_append_str(out, attr ? "&quot;" : "\"");
    case '\'': return ag_buf_append_str(out, attr ? "&apos;" : "'");
    /* Attribute values are whitespace-normalised by parsers (XML 1.0
     * §3.3.3) and a CR in text is folded: references keep them. */
    case '\t': return ag_buf_append_str(out, attr ? "&#9;" : "\t");
    case '\n': return ag_buf_append_str(out, attr ? "&#10;" : "\n");
    case '\r': return ag_buf_append_str(out, "&#13;");
    default: break;
    }
    if (cp < 0x20 || cp == 0xfffe || cp == 0xffff) {
        return ag_buf_append_str(out, "\xef\xbf\xbd");   /* not XML 1.0 */
    }
    if (cp >= 0x7f && cp <= 0x9f) {
        /* legal but invisible (DEL, C1): written as references */
        return ag_buf_printf(out, "&#x%X;", (unsigned)cp);
    }
    return AG_ERR_AGAIN;    /* the caller copies the character as is */
}

int audit__xml_escape(AgBuf *out, const char *s, bool attr)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = audit__utf8_len(p + i, n - i, &cp);
        int rc;
        if (len == 0) {
            rc = ag_buf_append_str(out, "\xef\xbf\xbd");
            len = 1;
        } else {
            rc = escape_char(out, cp, attr);
            if (rc == AG_ERR_AGAIN) {
                rc = ag_buf_append(out, p + i, len);
            }
        }
        if (rc != AG_OK) {
            return rc;
        }
        i += len;
    }
    return AG_OK;
}

/* ---- pieces ------------------------------------------------------------ */

typedef struct Xml {
    AgBuf *out;
    int rc;
} Xml;

static void raw(Xml *x, const char *s)
{
    if (x->rc == AG_OK) {
        x->rc = ag_buf_append_str(x->out, s);
    }
}

/* ` name="value"`, escaped; nothing when value is NULL. */
static void attr(Xml *x, const char *name, const char *value)
{
    if (value == NULL || x->rc != AG_OK) {
        return;
    }
    x->rc = ag_buf_printf(x->out, " %s=\"", name);
    if (x->rc == AG_OK) {
        x->rc = audit__xml_escape(x->out, value, true);
    }
    raw(x, "\"");
}

static void text_element(Xml *x, const char *name, const char *value)
{
    if (value == NULL || x->rc != AG_OK) {
        return;
    }
    x->rc = ag_buf_printf(x->out, "<%s>", name);
    if (x->rc == AG_OK) {
        x->rc = audit__xml_escape(x->out, value, false);
    }
    if (x->rc == AG_OK) {
        x->rc = ag_buf_printf(x->out, "</%s>", name);
    }
}

/* A coded value (PS3.15 A.5.1 CodedValueType). */
static void coded(Xml *x, const char *element, const char *code,
                  const char *scheme, const char *meaning)
{
    if (x->rc == AG_OK) {
        x->rc = ag_buf_printf(x->out, "<%s", element);
    }
    attr(x, "csd-code", code);
    attr(x, "codeSystemName", scheme);
    attr(x, "originalText", meaning);
    raw(x, "/>");
}

static void dcm(Xml *x, const char *element, int code)
{
    char c[16];
    snprintf(c, sizeof c, "%d", code);
    coded(x, element, c, "DCM", audit_code_name(code));
}

static void base64(Xml *x, const char *element, const char *attr_name,
                   const char *text)
{
    size_t n = strlen(text);
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *b = ag_malloc(cap);
    if (b == NULL) {
        x->rc = AG_ERR_NOMEM;
        return;
    }
    sodium_bin2base64(b, cap, (const unsigned char *)text, n,
                      sodium_base64_VARIANT_ORIGINAL);
    if (attr_name == NULL) {        /* element content */
        if (x->rc == AG_OK) {
            x->rc = ag_buf_printf(x->out, "<%s>%s</%s>", element, b,
                                  element);
        }
    } else {
        attr(x, attr_name, b);
    }
    ag_free(b);
}

/* NetworkAccessPointTypeCode: 2 for an IP address, 1 for a host name. */
static const char *nap_type(const char *addr)
{
    uint8_t buf[16];
    return inet_pton(AF_INET, addr, buf) == 1 ||
                   inet_pton(AF_INET6, addr, buf) == 1
               ? "2"
               : "1";
}

typedef enum Role {
    ROLE_NONE = 0,
    ROLE_APPLICATION = 110150,
    ROLE_LAUNCHER = 110151,
    ROLE_DESTINATION = 110152,
    ROLE_SOURCE = 110153,
} Role;

static const char *role_name(Role r)
{
    switch (r) {
    case ROLE_APPLICATION: return "Application";
    case ROLE_LAUNCHER: return "Application Launcher";
    case ROLE_DESTINATION: return "Destination Role ID";
    case ROLE_SOURCE: return "Source Role ID";
    default: return NULL;
    }
}

static void participant(Xml *x, const char *user, bool requestor,
                        const char *nap, Role role)
{
    raw(x, "<ActiveParticipant");
    attr(x, "UserID", user != NULL ? user : "");
    attr(x, "UserIsRequestor", requestor ? "true" : "false");
    if (nap != NULL && nap[0] != '\0') {
        attr(x, "NetworkAccessPointID", nap);
        attr(x, "NetworkAccessPointTypeCode", nap_type(nap));
    }
    if (role == ROLE_NONE) {
        raw(x, "/>");
        return;
    }
    raw(x, ">");
    char c[16];
    snprintf(c, sizeof c, "%d", (int)role);
    coded(x, "RoleIDCode", c, "DCM", role_name(role));
    raw(x, "</ActiveParticipant>");
}

/* ---- the message ------------------------------------------------------- */

static void event_identification(Xml *x, const AuditRecord *r)
{
    char action[2] = {r->ev.action, 0}, outcome[8];
    snprintf(outcome, sizeof outcome, "%d", (int)r->ev.outcome);
    raw(x, "<EventIdentification");
    attr(x, "EventActionCode", action);
    attr(x, "EventDateTime", r->time);
    attr(x, "EventOutcomeIndicator", outcome);
    raw(x, ">");
    dcm(x, "EventID", (int)r->ev.event);
    if (r->ev.type != AUDIT_TYPE_NONE) {
        dcm(x, "EventTypeCode", (int)r->ev.type);
    }
    if (r->ev.event != AUDIT_QUERY) {   /* a query's detail is its keys */
        text_element(x, "EventOutcomeDescription", r->ev.detail);
    }
    raw(x, "</EventIdentification>");
}

/*
 * Who took part, by event (PS3.15 A.5.3): the requestor (user or calling
 * AE at its address) and this archive; for transfers, who sent and who
 * received.
 */
static void participants(Xml *x, const AuditRecord *r, const AuditSource *s)
{
    const AuditEvent *e = &r->ev;
    const char *who = e->user != NULL ? e->user : e->source;
    const char *us = e->destination != NULL ? e->destination : s->source_id;
    bool transfer = e->event == AUDIT_INSTANCES_TRANSFERRED ||
                    e->event == AUDIT_BEGIN_TRANSFERRING ||
                    e->event == AUDIT_EXPORT;
    if (e->event == AUDIT_APPLICATION_ACTIVITY) {       /* A.5.3.1 */
        participant(x, s->source_id, false, s->host, ROLE_APPLICATION);
        if (who != NULL) {
            participant(x, who, true, e->source, ROLE_LAUNCHER);
        }
    } else if (e->event == AUDIT_QUERY || (transfer && e->action == 'C')) {
        /* the requestor sent (a query, or instances) to us */
        participant(x, who, true, e->source, ROLE_SOURCE);
        participant(x, us, false, s->host, ROLE_DESTINATION);
    } else if (transfer) {
        /* we sent to the destination, at the requestor's asking */
        if (who != NULL) {
            participant(x, who, true, e->source, ROLE_NONE);
        }
        participant(x, s->source_id, false, s->host, ROLE_SOURCE);
        if (e->destination != NULL) {
            participant(x, e->destination, false, NULL, ROLE_DESTINATION);
        }
    } else {
        if (who != NULL) {
            participant(x, who, true, e->source, ROLE_NONE);
        }
        participant(x, us, false, s->host, ROLE_NONE);
    }
}

static void audit_source(Xml *x, const AuditSource *s)
{
    raw(x, "<AuditSourceIdentification");
    attr(x, "AuditEnterpriseSiteID", s->site_id);
    attr(x, "AuditSourceID", s->source_id);
    raw(x, ">");
    /* RFC 3881 audit source type 4: application server process tier */
    coded(x, "AuditSourceTypeCode", "4", "DCM", "Application Server");
    raw(x, "</AuditSourceIdentification>");
}

static void object_start(Xml *x, const char *id, const char *type,
                         const char *role)
{
    raw(x, "<ParticipantObjectIdentification");
    attr(x, "ParticipantObjectID", id);
    attr(x, "ParticipantObjectTypeCode", type);
    attr(x, "ParticipantObjectTypeCodeRole", role);
    raw(x, ">");
}

static void objects(Xml *x, const AuditRecord *r)
{
    const AuditEvent *e = &r->ev;
    if (e->patient_id != NULL) {            /* person, patient */
        object_start(x, e->patient_id, "1", "1");
        coded(x, "ParticipantObjectIDTypeCode", "2", "RFC-3881",
              "Patient Number");
        text_element(x, "ParticipantObjectName", e->patient_name);
        raw(x, "</ParticipantObjectIdentification>");
    }
    if (e->study_uid != NULL) {             /* system object, report */
        object_start(x, e->study_uid, "2", "3");
        dcm(x, "ParticipantObjectIDTypeCode", 110180);
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)e->count);
        if (e->count != 0 && e->sop_class != NULL) {
            raw(x, "<SOPClass");
            attr(x, "UID", e->sop_class);
            attr(x, "NumberOfInstances", n);
            raw(x, "/>");
        } else if (e->count != 0) {
            raw(x, "<ParticipantObjectDetail type=\"NumberOfInstances\"");
            base64(x, NULL, "value", n);
            raw(x, "/>");
        }
        raw(x, "</ParticipantObjectIdentification>");
    }
    if (e->event == AUDIT_QUERY) {          /* A.5.3.13: the query */
        object_start(x, e->sop_class != NULL ? e->sop_class : "", "2", "3");
        dcm(x, "ParticipantObjectIDTypeCode", 110181);
        if (e->detail != NULL) {
            base64(x, "ParticipantObjectQuery", NULL, e->detail);
        }
        raw(x, "</ParticipantObjectIdentification>");
    }
    if (e->event == AUDIT_LOG_USED) {       /* A.5.3.2: the log itself */
        object_start(x, "audit.db", "2", "13");
        coded(x, "ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI");
        text_element(x, "ParticipantObjectName", "Security Audit Log");
        raw(x, "</ParticipantObjectIdentification>");
    }
}

int audit__xml(const AuditRecord *r, const AuditSource *src, AgBuf *out)
{
    Xml x = {.out = out, .rc = AG_OK};
    raw(&x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    event_identification(&x, r);
    participants(&x, r, src);
    audit_source(&x, src);
    objects(&x, r);
    raw(&x, "</AuditMessage>");
    return x.rc;
}
