/* multipart/form-data framing checks (RFC 7578, RFC 2046 5.1) for the multipart inference
 * routes (/v1/images/edits, /v1/audio/transcriptions). The body is never re-encoded: it is
 * hashed and forwarded as received, so these checks only decide whether it is a well-formed
 * form worth sending to the engine (else a 400 before anything is forwarded). Pure
 * functions; thread-safe. */
#ifndef VP_PROXY_MULTIPART_H
#define VP_PROXY_MULTIPART_H

#include <stddef.h>

#define MULTIPART_BOUNDARY_MAX 70 /* RFC 2046: 1..70 characters */

/* The boundary of a Content-Type `multipart/form-data; boundary=...` (the type and the
 * parameter name in any case, the value bare or quoted). 0 with *b / *bn set (the value
 * without quotes, pointing into ctype), or -1 when the type is another one or the boundary
 * is missing, empty, over 70 characters or has characters RFC 2046's bchars do not allow. */
int multipart_boundary(const char *ctype, size_t n, const char **b, size_t *bn);

/* Checks body[0..len) against boundary b: an optional preamble, then one or more parts,
 * each opened by a delimiter line ("--" b, optional spaces/tabs, CRLF), each with a header
 * block ended by an empty line that has a `Content-Disposition: form-data` header with a
 * name parameter, then the close delimiter ("--" b "--"); anything after it is epilogue.
 * 0, or -1 with a static reason in *why. */
int multipart_check(const char *body, size_t len, const char *b, size_t bn, const char **why);

#endif
