/* IP addresses and CIDR prefixes (core/addr.h). */
#include "core/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void addr_from_sockaddr(const void *sa, ip_addr_t *out)
{
    memset(out, 0, sizeof *out);
    sa_family_t f;
    memcpy(&f, (const char *)sa + offsetof(struct sockaddr, sa_family), sizeof f);
    if (f == AF_INET) {
        struct sockaddr_in s4;
        memcpy(&s4, sa, sizeof s4);
        memcpy(out->b, V4_MAPPED, sizeof V4_MAPPED);
        memcpy(out->b + 12, &s4.sin_addr, 4);
        out->set = 1;
    } else if (f == AF_INET6) {
        struct sockaddr_in6 s6;
        memcpy(&s6, sa, sizeof s6);
        memcpy(out->b, &s6.sin6_addr, 16);
        out->set = 1;
    }
}

int addr_is_v4(const ip_addr_t *a) { return a->set && memcmp(a->b, V4_MAPPED, 12) == 0; }

int addr_equal(const ip_addr_t *x, const ip_addr_t *y)
{
    return x->set == y->set && (!x->set || memcmp(x->b, y->b, 16) == 0);
}

/* The address text alone, NUL-terminated (at most INET6_ADDRSTRLEN - 1 characters). */
static int parse_plain(const char *s, size_t n, ip_addr_t *out)
{
    char t[ADDR_TEXT_MAX];
    if (n == 0 || n >= sizeof t)
        return -1;
    memcpy(t, s, n);
    t[n] = '\0';
    uint8_t b[16];
    if (inet_pton(AF_INET, t, b) == 1) {
        memcpy(out->b, V4_MAPPED, sizeof V4_MAPPED);
        memcpy(out->b + 12, b, 4);
        out->set = 1;
        return 0;
    }
    if (memchr(t, ':', n) && inet_pton(AF_INET6, t, b) == 1) {
        memcpy(out->b, b, 16);
        out->set = 1;
        return 0;
    }
    return -1;
}

static int all_digits(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int addr_parse(const char *s, size_t n, ip_addr_t *out)
{
    memset(out, 0, sizeof *out);
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n && s[0] == '[') { /* "[v6]" or "[v6]:port" */
        const char *e = memchr(s, ']', n);
        if (!e)
            return -1;
        size_t rest = n - (size_t)(e - s) - 1;
        if (rest && !(e[1] == ':' && all_digits(e + 2, rest - 1)))
            return -1;
        if (parse_plain(s + 1, (size_t)(e - s) - 1, out) != 0 || addr_is_v4(out))
            return memset(out, 0, sizeof *out), -1;
        return 0;
    }
    const char *colon = memchr(s, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1)) { /* "v4:port" */
        if (!all_digits(colon + 1, n - (size_t)(colon - s) - 1))
            return -1;
        if (parse_plain(s, (size_t)(colon - s), out) != 0 || !addr_is_v4(out))
            return memset(out, 0, sizeof *out), -1;
        return 0;
    }
    return parse_plain(s, n, out);
}

void addr_format(const ip_addr_t *a, char out[ADDR_TEXT_MAX])
{
    if (!a->set) {
        memcpy(out, "-", 2);
        return;
    }
    if (addr_is_v4(a)) {
        if (!inet_ntop(AF_INET, a->b + 12, out, ADDR_TEXT_MAX))
            memcpy(out, "-", 2);
    } else if (!inet_ntop(AF_INET6, a->b, out, ADDR_TEXT_MAX)) {
        memcpy(out, "-", 2);
    }
}

int cidr_parse(const char *s, size_t n, ip_cidr_t *out)
{
    memset(out, 0, sizeof *out);
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    const char *slash = memchr(s, '/', n);
    size_t an = slash ? (size_t)(slash - s) : n;
    if (parse_plain(s, an, &out->a) != 0)
        return -1;
    unsigned max = addr_is_v4(&out->a) ? 32 : 128, bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t dn = n - an - 1;
        if (!all_digits(d, dn) || dn > 3)
            return -1;
        bits = 0;
        for (size_t i = 0; i < dn; i++)
            bits = bits * 10 + (unsigned)(d[i] - '0');
        if (bits > max)
            return -1;
    }
    out->bits = bits + (max == 32 ? 96 : 0);
    return 0;
}

int cidr_match(const ip_cidr_t *c, const ip_addr_t *a)
{
    if (!a->set || !c->a.set)
        return 0;
    unsigned full = c->bits / 8, rem = c->bits % 8;
    if (memcmp(c->a.b, a->b, full) != 0)
        return 0;
    if (rem == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xffu << (8 - rem));
    return (c->a.b[full] & mask) == (a->b[full] & mask);
}
