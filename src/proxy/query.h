/* Query strings and percent-decoding for the local routes (/v1/signature/{id},
 * /v1/attestation/report). Pure functions; thread-safe. */
#ifndef VP_PROXY_QUERY_H
#define VP_PROXY_QUERY_H

#include <stddef.h>

#include "http/server.h"

/* Percent-decodes s[0..n) into out (NUL-terminated; '+' reads as a space, as in a form).
 * Returns the length, or -1 when malformed, when it holds a NUL, or when out (cap bytes,
 * the NUL included) is too small. */
long query_pct_decode(const char *s, size_t n, char *out, size_t cap);
/* The same for a URL path (RFC 3986): '+' is a plus and '/' a slash, like any other byte
 * that is not a %XX escape. */
long query_path_decode(const char *s, size_t n, char *out, size_t cap);
/* Value of `key` in the query, percent-decoded into out: its length, QUERY_ABSENT, or
 * QUERY_BAD when malformed or longer than cap. The first occurrence counts. */
#define QUERY_ABSENT (-1)
#define QUERY_BAD (-2)
long query_get(strv_t q, const char *key, char *out, size_t cap);

/* The signing_algo parameter: SIGN_ALGO_ECDSA (also when absent), SIGN_ALGO_ED25519, or -1
 * when invalid (APP_E_INVALID_SIGNING_ALGO). */
enum { SIGN_ALGO_ECDSA = 0, SIGN_ALGO_ED25519 = 1 };
int query_signing_algo(strv_t q);

#endif
