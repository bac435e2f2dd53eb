/* multipart/form-data framing checks (proxy/multipart.h). Nothing is copied or decoded. */
#include "proxy/multipart.h"

#include <string.h>
#include <strings.h>

#define FORM_DATA "multipart/form-data"
#define DISPOSITION "content-disposition"

static int is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* RFC 2046 bchars (the last character may not be a space). */
static int is_bchar(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("'()+_,-./:=? ", ch) != NULL);
}

/* RFC 9110 tchar, for parameter names and bare values. */
static int is_tchar(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int multipart_boundary(const char *ct, size_t n, const char **b, size_t *bn)
{
    size_t i = 0, tl = sizeof FORM_DATA - 1;
    while (i < n && is_ows(ct[i]))
        i++;
    if (n - i < tl || strncasecmp(ct + i, FORM_DATA, tl) != 0)
        return -1;
    i += tl;
    const char *found = NULL;
    size_t flen = 0;
    for (;;) {
        while (i < n && is_ows(ct[i]))
            i++;
        if (i == n)
            break;
        if (ct[i++] != ';')
            return -1;
        while (i < n && is_ows(ct[i]))
            i++;
        size_t ns = i;
        while (i < n && is_tchar(ct[i]))
            i++;
        size_t nl = i - ns;
        if (nl == 0 || i == n || ct[i++] != '=')
            return -1;
        const char *v = ct + i;
        size_t vl;
        if (i < n && ct[i] == '"') {
            const char *q = memchr(ct + i + 1, '"', n - i - 1);
            if (!q)
                return -1;
            v = ct + i + 1;
            vl = (size_t)(q - v);
            i = (size_t)(q - ct) + 1;
        } else {
            while (i < n && is_tchar(ct[i]))
                i++;
            vl = (size_t)(ct + i - v);
        }
        if (nl == 8 && strncasecmp(ct + ns, "boundary", 8) == 0) {
            if (found)
                return -1; /* twice: which one would the engine take? */
            found = v;
            flen = vl;
        }
    }
    if (!found || flen == 0 || flen > MULTIPART_BOUNDARY_MAX || found[flen - 1] == ' ')
        return -1;
    for (size_t k = 0; k < flen; k++)
        if (!is_bchar(found[k]))
            return -1;
    *b = found;
    *bn = flen;
    return 0;
}

/* The next CRLF "--" boundary in p[from..len), as the offset of its CR, or -1. */
static long next_delim(const char *p, size_t len, size_t from, const char *b, size_t bn)
{
    while (from < len) {
        const char *q = memmem(p + from, len - from, "\r\n--", 4);
        if (!q)
            return -1;
        size_t at = (size_t)(q - p);
        if (len - at - 4 >= bn && memcmp(q + 4, b, bn) == 0)
            return (long)at;
        from = at + 2;
    }
    return -1;
}

/* Does the header block p[0..n) (lines ended by CRLF) hold `Content-Disposition: form-data`
 * with a name parameter? */
static int has_form_data_name(const char *p, size_t n)
{
    size_t dl = sizeof DISPOSITION - 1, fl = sizeof "form-data" - 1;
    for (size_t i = 0; i < n;) {
        const char *e = memmem(p + i, n - i, "\r\n", 2);
        size_t end = e ? (size_t)(e - p) : n;
        const char *l = p + i;
        size_t ll = end - i;
        i = end + 2;
        if (ll <= dl || strncasecmp(l, DISPOSITION, dl) != 0 || l[dl] != ':')
            continue;
        size_t k = dl + 1;
        while (k < ll && is_ows(l[k]))
            k++;
        if (ll - k < fl || strncasecmp(l + k, "form-data", fl) != 0)
            return 0;
        for (k += fl; k + 5 <= ll; k++)
            if ((l[k - 1] == ';' || is_ows(l[k - 1])) && strncasecmp(l + k, "name=", 5) == 0)
                return 1;
        return 0;
    }
    return 0;
}

int multipart_check(const char *p, size_t len, const char *b, size_t bn, const char **why)
{
    size_t dl = 2 + bn, at;
    if (len >= dl && p[0] == '-' && p[1] == '-' && memcmp(p + 2, b, bn) == 0) {
        at = 0;
    } else {
        long d = next_delim(p, len, 0, b, bn);
        if (d < 0) {
            *why = "no boundary delimiter in the body";
            return -1;
        }
        at = (size_t)d + 2;
    }
    for (unsigned parts = 0;; parts++) {
        size_t q = at + dl; /* just after "--" boundary */
        if (len - q >= 2 && p[q] == '-' && p[q + 1] == '-') {
            if (parts == 0) {
                *why = "a form with no part";
                return -1;
            }
            return 0; /* the close delimiter; what follows is epilogue */
        }
        while (q < len && is_ows(p[q]))
            q++;
        if (len - q < 2 || p[q] != '\r' || p[q + 1] != '\n') {
            *why = "a boundary delimiter line not ended by CRLF";
            return -1;
        }
        size_t h = q + 2;
        long nd = next_delim(p, len, q, b, bn);
        if (nd < 0) {
            *why = "no close delimiter";
            return -1;
        }
        /* The header block ends with an empty line before the part's CRLF "--" boundary. */
        const char *he = memmem(p + q, (size_t)nd - q, "\r\n\r\n", 4);
        if (!he) {
            *why = "a part without the empty line that ends its headers";
            return -1;
        }
        if (!has_form_data_name(p + h, (size_t)(he - p) + 2 > h ? (size_t)(he - p) + 2 - h : 0)) {
            *why = "a part without 'Content-Disposition: form-data; name=...'";
            return -1;
        }
        at = (size_t)nd + 2;
    }
}
