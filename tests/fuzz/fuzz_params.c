/*
 * fuzz_params.c — libFuzzer target for the small text parsers that read
 * request parameters ("every parser has a fuzz target"):
 *
 *   0 audit_time_parse, start and end  GET /api/v1/audit?since=&until=
 *   1 codec_render_parse_window        window= of DICOMweb /rendered and
 *                                      /thumbnail (PS3.18 §8.3.5.1.4),
 *                                      windowCenter,windowWidth of WADO-URI
 *   2 codec_voi_function_parse         the function part of that window
 *   3 access_rule_check                a department rule's field=value,
 *                                      POST /api/v1/departments and
 *                                      POST /api/v1/departments/{d}/rules
 *   4 store_setting_check              a run-time setting's key=value, as
 *                                      PUT /api/v1/settings checks it
 *                                      (store_settings_update) and
 *                                      `agora serve --duplicates` etc.
 *   5 web__rendered_parse_viewport     viewport= of /rendered, /thumbnail
 *                                      (PS3.18 §8.3.5.1.3)
 *   6 web__rendered_parse_frames       {frames} of .../frames/{l}/rendered
 *                                      and /thumbnail (PS3.18 §8.3.1.1.4)
 *
 * Input: the first byte picks the parser (modulo 7); the rest, up to its
 * first NUL, is the text, in a buffer of its exact size so that ASan sees
 * a read past its end.  For 3 and 4 the text is split at its first '='
 * into field/key and value; with no '=' the value is NULL (and for 3 the
 * field is also tried as NULL), as when the JSON member is absent.
 *
 * Checked invariants: each result is AG_OK or the one error the contract
 * names, and an error carries that code and a non-empty message; a time
 * is the 27 characters "YYYY-MM-DDTHH:MM:SS.uuuuuuZ", parses back to
 * itself, and its start is not after its end; a window is finite within
 * the width its function allows; a viewport and a frame list are within
 * their bounds; an accepted rule or setting is one the checker knows.  A
 * violation is a crash (CHECK, fuzz.h).
 */
#include "fuzz.h"
#include "web/web_int.h"
#include "codec/codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT 4096
#define FRAME_LIST_CAP 256      /* rendered.c's MAX_FRAME_LIST */

/* rc is AG_OK or want; an error is recorded in err, named. */
static void check_rc(int rc, int want, const AgError *err)
{
    CHECK(rc == AG_OK || rc == want);
    if (rc != AG_OK) {
        CHECK(err->code == rc && err->msg[0] != '\0');
        CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    }
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" exactly. */
static void check_time(const char out[AUDIT_TIME_SIZE])
{
    static const char SHAPE[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    CHECK(memchr(out, '\0', AUDIT_TIME_SIZE) != NULL);
    CHECK(strlen(out) == sizeof SHAPE - 1 && strlen(out) < AUDIT_TIME_SIZE);
    for (size_t i = 0; i < sizeof SHAPE - 1; i++) {
        CHECK(SHAPE[i] == 'd' ? out[i] >= '0' && out[i] <= '9'
                              : out[i] == SHAPE[i]);
    }
}

static void times(const char *text)
{
    char start[AUDIT_TIME_SIZE], end[AUDIT_TIME_SIZE];
    char again[AUDIT_TIME_SIZE];
    AgError e1, e2, e3;
    ag_error_clear(&e1);
    ag_error_clear(&e2);
    int rs = audit_time_parse(text, false, start, &e1);
    int re = audit_time_parse(text, true, end, &e2);
    check_rc(rs, AG_ERR_INVALID, &e1);
    check_rc(re, AG_ERR_INVALID, &e2);
    /* The same text is a valid since exactly when it is a valid until:
     * end only fills in the unwritten parts of one period. */
    CHECK(rs == re);
    if (rs != AG_OK) {
        return;
    }
    check_time(start);
    check_time(end);
    CHECK(strcmp(start, end) <= 0);
    /* The stored form is itself a full-precision time. */
    for (int b = 0; b < 2; b++) {
        const char *t = b ? end : start;
        CHECK(audit_time_parse(t, b != 0, again, &e3) == AG_OK);
        CHECK(strcmp(again, t) == 0);
    }
}

static void window(const char *text)
{
    CodecRenderParams p;
    codec_render_params_init(&p);
    AgError err;
    ag_error_clear(&err);
    int rc = codec_render_parse_window(text, &p, &err);
    check_rc(rc, AG_ERR_INVALID, &err);
    if (rc == AG_OK) {
        CHECK(p.window);
        CHECK(isfinite(p.window_center) && isfinite(p.window_width));
        CHECK(fabs(p.window_center) <= 1e15 && fabs(p.window_width) <= 1e15);
        CHECK(p.function == CODEC_VOI_LINEAR ||
              p.function == CODEC_VOI_LINEAR_EXACT ||
              p.function == CODEC_VOI_SIGMOID);
        CHECK(codec_voi_width_valid(p.function, p.window_width));
    }
}

static void voi_function(const char *text)
{
    CodecVoiFunction fn = CODEC_VOI_LINEAR;
    int rc = codec_voi_function_parse(text, &fn);
    CHECK(rc == AG_OK || rc == AG_ERR_INVALID);
    if (rc == AG_OK) {
        CHECK(fn == CODEC_VOI_LINEAR || fn == CODEC_VOI_LINEAR_EXACT ||
              fn == CODEC_VOI_SIGMOID);
        CHECK(codec_voi_function_parse(text, &fn) == AG_OK);
    }
}

static void rule(const char *field, const char *value)
{
    AgError err;
    ag_error_clear(&err);
    int rc = access_rule_check(field, value, &err);
    check_rc(rc, AG_ERR_INVALID, &err);
    if (rc == AG_OK) {
        CHECK(field != NULL && value != NULL);
        CHECK(value[0] != '\0' && strlen(value) <= 64);
    }
}

static void setting(const char *key, const char *value)
{
    AgError err;
    ag_error_clear(&err);
    int rc = store_setting_check(key, value, &err);
    check_rc(rc, AG_ERR_INVALID, &err);
    bool boolean = false;
    bool known = store_setting_known(key, &boolean);
    if (rc == AG_OK) {
        CHECK(known);
        if (boolean) {
            CHECK(value != NULL && (strcmp(value, "true") == 0 ||
                                    strcmp(value, "false") == 0));
        }
    }
}

static void viewport(const char *text)
{
    CodecRenderParams p;
    codec_render_params_init(&p);
    AgError err;
    ag_error_clear(&err);
    int rc = web__rendered_parse_viewport(text, &p, &err);
    check_rc(rc, AG_ERR_INVALID, &err);
    if (rc != AG_OK) {
        return;
    }
    CHECK(p.width <= CODEC_RENDER_MAX_SIZE);
    CHECK(p.height <= CODEC_RENDER_MAX_SIZE);
    CHECK(p.width > 0 || p.height > 0);
    if (p.region) {
        CHECK(p.sx >= 0 && p.sx <= 65535 && p.sy >= 0 && p.sy <= 65535);
        CHECK(p.sw != 0 && p.sw >= -65536 && p.sw <= 65536);
        CHECK(p.sh != 0 && p.sh >= -65536 && p.sh <= 65536);
    }
}

static void frames(const char *text)
{
    /* Exactly the room the contract promises, on the heap: one more
     * number written is an ASan report. */
    uint32_t *want = malloc(FRAME_LIST_CAP * sizeof *want);
    CHECK(want != NULL);
    int n = -1;
    AgError err;
    ag_error_clear(&err);
    int rc = web__rendered_parse_frames(text, want, &n, &err);
    check_rc(rc, AG_ERR_INVALID, &err);
    if (rc == AG_OK) {
        CHECK(n >= 1 && n <= FRAME_LIST_CAP);
        for (int i = 0; i < n; i++) {
            CHECK(want[i] >= 1 && want[i] <= CODEC_MAX_FRAMES);
        }
    }
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > MAX_TEXT) {
        return 0;
    }
    const uint8_t *nul = memchr(data + 1, '\0', size - 1);
    size_t len = nul != NULL ? (size_t)(nul - (data + 1)) : size - 1;
    char *text = malloc(len + 1);
    CHECK(text != NULL);
    memcpy(text, data + 1, len);
    text[len] = '\0';
    char *eq = strchr(text, '=');
    switch (data[0] % 7) {
    case 0:
        times(text);
        break;
    case 1:
        window(text);
        break;
    case 2:
        voi_function(text);
        break;
    case 3:
        if (eq != NULL) {
            *eq = '\0';
            rule(text, eq + 1);
        } else {
            rule(text, NULL);
            rule(NULL, text);
        }
        break;
    case 4:
        if (eq != NULL) {
            *eq = '\0';
        }
        setting(text, eq != NULL ? eq + 1 : NULL);
        break;
    case 5:
        viewport(text);
        break;
    default:
        frames(text);
        break;
    }
    free(text);
    return 0;
}
