/*
 * multipart.h — streaming parser for multipart/related request bodies
 * (RFC 2046 §5.1, RFC 2387), as STOW-RS sends them (PS3.18 §10.5).
 *
 * The body is fed in chunks of any size, down to one byte; each part's
 * headers are handed to part_begin, its body to part_data as soon as the
 * bytes are certain not to belong to a delimiter, then part_end.  Memory is
 * O(boundary + header limit), independent of part size: a 1 GB instance
 * never sits in memory (SECURITY.md rule 1, DESIGN.md §4 "Streaming").
 *
 * Grammar accepted (RFC 2046 §5.1.1), with the choices this parser makes:
 *  - Delimiter: CRLF "--" boundary.  The first one may come without the CRLF
 *    when it opens the body; otherwise whatever precedes it is the preamble
 *    and is ignored.  The delimiter must be exactly CRLF--boundary: a bare
 *    LF before "--boundary" is part data, not a delimiter, and the
 *    boundary line must end in CRLF, so a body written with LF line endings
 *    is refused rather than cut where the sender did not mean.
 *  - The CRLF ending a part's header block also serves as the CRLF of a
 *    delimiter right after it: "--b CRLF Content-Type: x CRLF CRLF --b--"
 *    is one part with an empty body (RFC 2046 `body-part :=
 *    MIME-part-headers [CRLF *OCTET]`; Go's mime/multipart agrees).  So a
 *    part body cannot begin with "--boundary".
 *  - After the boundary: "--" closes the body; otherwise transport padding
 *    (spaces, tabs) then CRLF starts the next part.  Anything else, e.g.
 *    "--boundaryX", is a parse error: the boundary may not appear at the
 *    start of a line inside a part (RFC 2046 §5.1.1 "NOTE TO IMPLEMENTORS").
 *  - At least one part; a close delimiter before any part is refused.
 *  - Part headers end at an empty line.  Lines may end in CRLF or bare LF.
 *    "Name: value" with case-insensitive names; folded continuation lines
 *    (starting with space or tab) are accepted and unfolded (RFC 5322
 *    §2.2.3); control characters other than tab, a header line without a
 *    colon and a repeated known header are refused.  Unknown headers are
 *    ignored.  A part without Content-Type gets "" (RFC 2046 says this
 *    means text/plain; the caller decides).
 *  - After the close delimiter the epilogue is ignored, except that another
 *    delimiter line there (a duplicate close, or a part after the close) is
 *    a parse error: the sender and we would disagree about what was sent.
 *
 * Errors: AG_ERR_PARSE (malformed or truncated body), AG_ERR_LIMIT (too
 * many parts, header block or header value too long), AG_ERR_NOMEM, or
 * whatever a callback returned.  Messages name the part (1-based), what was
 * expected and, for a bad delimiter line, the byte offset in the body.  After any error the parser
 * stays failed: later feeds and finish return the same code.
 *
 * Thread-safety: a WebMultipart belongs to one thread at a time.
 */
#ifndef AG_WEB_MULTIPART_H
#define AG_WEB_MULTIPART_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest boundary RFC 2046 §5.1.1 allows. */
#define WEB_MULTIPART_BOUNDARY_MAX 70

typedef struct WebMultipartLimits {
    uint32_t max_parts;          /* 0 = 10000 */
    uint32_t max_header_bytes;   /* per part header block, 0 = 16 KiB */
} WebMultipartLimits;

/*
 * The headers of one part that STOW-RS needs, unfolded and trimmed of
 * surrounding whitespace; "" when absent.  A value that does not fit its
 * field is refused with AG_ERR_LIMIT, never truncated.
 */
typedef struct WebPartHeaders {
    char content_type[256];      /* lowercased media type + params as sent, trimmed */
    char content_location[1024];
    char content_id[256];
    char transfer_encoding[64];  /* Content-Transfer-Encoding if present */
} WebPartHeaders;

/*
 * Called in order part_begin, part_data*, part_end for each part.  part_end
 * is called only once the delimiter line after the part is complete and
 * valid, so a part whose end is malformed or truncated never gets it.
 * Return AG_OK to go on; anything else stops parsing and is returned by
 * web_multipart_feed()/finish() as is (fill err to explain).  Any of the
 * three may be NULL.  h and data are borrowed for the duration of the call.
 */
typedef struct WebMultipartCallbacks {
    int (*part_begin)(void *ctx, const WebPartHeaders *h, AgError *err);
    int (*part_data)(void *ctx, const uint8_t *data, size_t len, AgError *err);
    int (*part_end)(void *ctx, AgError *err);
} WebMultipartCallbacks;

typedef struct WebMultipart WebMultipart;

/**
 * Parse the request's Content-Type: must be multipart/related (or, if
 * allow_any_multipart, any multipart/...) with a boundary parameter
 * (quoted or not, 1..70 chars per RFC 2046, charset bchars only);
 * *type_param receives the "type" parameter lowercased (e.g.
 * "application/dicom"), "" if absent.  AG_ERR_INVALID naming the problem.
 * Parameters are `; name=value` with value a token or a quoted-string
 * (RFC 9110 §5.6.6); names are case-insensitive, unknown ones are ignored,
 * a repeated boundary or type is refused.  Whitespace around ';' and '='
 * is tolerated.
 * @param header      the Content-Type field value (borrowed); NULL refused
 * @param boundary    out: the boundary, NUL-terminated, case preserved
 * @param type_param  out: the "type" parameter lowercased, or ""
 * @param err         may be NULL
 * @return AG_OK or AG_ERR_INVALID.  Pure function; thread-safe.
 */
int web_multipart_parse_content_type(const char *header, bool allow_any_multipart,
                                     char boundary[71], char type_param[128],
                                     AgError *err);

/**
 * Create a parser for one request body.
 * @param boundary  1..70 bchars (RFC 2046), as returned by
 *                  web_multipart_parse_content_type(); copied
 * @param lim       may be NULL (all defaults); copied
 * @param cb        required (copied); its members may be NULL
 * @param ctx       passed to every callback (borrowed)
 * @param out       on AG_OK, a parser the caller frees with
 *                  web_multipart_free()
 * @param err       may be NULL
 * @return AG_OK, AG_ERR_INVALID (bad boundary or argument), AG_ERR_NOMEM
 */
int web_multipart_create(const char *boundary, const WebMultipartLimits *lim,
                         const WebMultipartCallbacks *cb, void *ctx,
                         WebMultipart **out, AgError *err);

/**
 * Feed body bytes in chunks of any size (1 byte at a time must work).
 * Callbacks run from inside this call.  At most boundary length + 3 body
 * bytes are held back between calls (a possible delimiter prefix); they
 * are delivered, or dropped as delimiter, by a later feed.
 * @param data  len bytes (borrowed); may be NULL when len is 0
 * @return AG_OK, AG_ERR_PARSE, AG_ERR_LIMIT, AG_ERR_NOMEM or a callback's
 *         code; after an error the parser stays failed
 */
int web_multipart_feed(WebMultipart *m, const uint8_t *data, size_t len, AgError *err);

/**
 * End of body: AG_ERR_PARSE if the closing delimiter was not seen
 * (truncated).  Held-back bytes of an unfinished part are never delivered.
 * Calling it again after success returns AG_OK.
 * @return AG_OK, AG_ERR_PARSE, or the earlier error if the parser failed
 */
int web_multipart_finish(WebMultipart *m, AgError *err);

void web_multipart_free(WebMultipart *m);   /* NULL ok */

#endif
