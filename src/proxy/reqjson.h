/* Request body inspection for POST /v1/chat/completions and /v1/completions: one strict
 * validating pass over the raw bytes (no DOM, no allocation unless something is rewritten)
 * that extracts what the proxy needs and strips `"tool_calls": []` from messages.
 *
 * Accepted grammar: RFC 8259 exactly. Depth limit REQJSON_MAX_DEPTH containers; no NaN /
 * Infinity, no leading zeros, no trailing commas, no comments, no BOM; strings must be valid
 * UTF-8 (shortest form, no encoded surrogates, <= U+10FFFF) without raw control characters
 * (< 0x20); \u escapes must not produce lone surrogates (a high surrogate must be followed
 * by a \u low surrogate). Object keys are compared after unescaping, so "str\u0065am" is
 * "stream". Duplicate keys: the last occurrence wins. Pure function; thread-safe. */
#ifndef VP_PROXY_REQJSON_H
#define VP_PROXY_REQJSON_H
#include <stddef.h>

#include "core/buf.h"

#define REQJSON_MAX_DEPTH 64

typedef struct reqjson {
    int has_stream;       /* top-level "stream" present (then it is a boolean) */
    int stream;           /* its value; 0 when absent */
    int include_usage;    /* top-level "stream_options" is an object whose "include_usage" is true */
    int has_model;        /* top-level "model" is a string */
    size_t model_off;     /* its raw bytes: body[model_off .. model_off+model_len), between */
    size_t model_len;     /*   the quotes, escapes NOT decoded */
    int model_escaped;    /* the raw model bytes contain a backslash escape */
    size_t n_stripped;    /* "tool_calls": [] members removed from top-level "messages" */
    size_t n_salts;       /* top-level "cache_salt" members removed (opts->cache_salt set) */
    int salt_injected;    /* opts->cache_salt was written into the forwarded body */
    int rewritten;        /* 1 when *rewritten received the body to forward instead of body */
} reqjson_t;

#define REQJSON_INVALID (-1) /* the body is not acceptable: a 400 */
#define REQJSON_NOMEM (-2)   /* out of memory: not the client's fault */

/* Inspects body[0..len). Returns 0, REQJSON_NOMEM, or REQJSON_INVALID with a message in err (always
 * NUL-terminated when errlen > 0), one of:
 *   "invalid JSON at byte N: <reason>"   (N = 0-based offset of the offending byte)
 *   "body must be a JSON object"
 *   "'stream' must be a boolean"
 *   "duplicate \"tool_calls\" key in a message (at byte N)"
 * When a message object in the top-level "messages" array has a member "tool_calls" whose
 * value is an empty array, that member is removed together with one adjacent comma (and the
 * whitespace between them); the resulting body is appended to *rewritten and
 * out->rewritten = 1. Every other byte is kept as it was. rewritten may be NULL (then only
 * n_stripped reports the members). On failure, *rewritten is restored to its length on entry. */
int reqjson_inspect(const char *body, size_t len, reqjson_t *out, buf_t *rewritten,
                    char *err, size_t errlen);

/* Rewrites reqjson_inspect may add (CACHE_SALT_SECRET, docs/CONFIG.md). */
typedef struct reqjson_opts {
    /* Non-NULL: every top-level "cache_salt" member of the body (any value, duplicates
     * included) is removed like an empty tool_calls, and "cache_salt":"<cache_salt>" is
     * written as the last member of the top-level object (after a comma when a member stays
     * before it); the forwarded body then always goes to *rewritten. The text is copied as
     * it is: the caller gives characters that need no JSON escaping. */
    const char *cache_salt;
} reqjson_opts_t;

/* reqjson_inspect with opts (NULL: the same as reqjson_inspect). */
int reqjson_inspect_opts(const char *body, size_t len, const reqjson_opts_t *opts, reqjson_t *out,
                         buf_t *rewritten, char *err, size_t errlen);

#endif
