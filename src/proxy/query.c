/* Query strings (proxy/query.h). */
#include "proxy/query.h"

#include <string.h>

#include "core/hex.h"

#define ALGO_VALUE_MAX 32 /* longer than any accepted signing_algo value */

/* Percent-decoding; plus_is_space: '+' reads as a space (form encoding, query values only). */
static long pct_decode(const char *s, size_t n, char *out, size_t cap, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hex_digit(s[i + 1])) < 0 || (lo = hex_digit(s[i + 2])) < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+' && plus_is_space)
            ch = ' ';
        if (o + 1 >= cap || ch == '\0')
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return (long)o;
}

long query_pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    return pct_decode(s, n, out, cap, 1);
}

long query_path_decode(const char *s, size_t n, char *out, size_t cap)
{
    return pct_decode(s, n, out, cap, 0);
}

long query_get(strv_t q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key), i = 0;
    while (i < q.n) {
        size_t end = i;
        while (end < q.n && q.p[end] != '&')
            end++;
        const char *eq = memchr(q.p + i, '=', end - i);
        size_t nl = eq ? (size_t)(eq - (q.p + i)) : end - i;
        if (nl == kl && memcmp(q.p + i, key, kl) == 0) {
            const char *v = eq ? eq + 1 : q.p + end;
            long r = query_pct_decode(v, (size_t)(q.p + end - v), out, cap);
            return r < 0 ? QUERY_BAD : r;
        }
        i = end + 1;
    }
    return QUERY_ABSENT;
}

int query_signing_algo(strv_t q)
{
    char v[ALGO_VALUE_MAX];
    long n = query_get(q, "signing_algo", v, sizeof v);
    if (n == QUERY_ABSENT)
        return SIGN_ALGO_ECDSA;
    if (n < 0)
        return -1;
    if (!strcmp(v, "ecdsa"))
        return SIGN_ALGO_ECDSA;
    if (!strcmp(v, "ed25519"))
        return SIGN_ALGO_ED25519;
    return -1;
}
