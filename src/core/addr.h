/* IP addresses as 16 bytes (IPv4 as ::ffff:a.b.c.d), their text forms and CIDR prefixes: the
 * client address of a request (the peer, or one taken from X-Forwarded-For / X-Real-IP) and
 * the TRUSTED_PROXIES list. Pure functions; thread-safe. */
#ifndef VP_CORE_ADDR_H
#define VP_CORE_ADDR_H

#include <stddef.h>
#include <stdint.h>

#define ADDR_TEXT_MAX 46 /* INET6_ADDRSTRLEN: the longest text form and its NUL */

typedef struct ip_addr {
    uint8_t b[16]; /* IPv6 order; an IPv4 address is mapped (::ffff:a.b.c.d) */
    uint8_t set;   /* 0: no address (a Unix socket peer, or not resolved) */
} ip_addr_t;

/* An address and a prefix length over the 16 bytes (an IPv4 /n is 96 + n). */
typedef struct ip_cidr {
    ip_addr_t a;
    unsigned bits;
} ip_cidr_t;

/* From a struct sockaddr (AF_INET or AF_INET6); anything else leaves out unset. */
void addr_from_sockaddr(const void *sa, ip_addr_t *out);
/* A numeric address (IPv4 dotted quad or IPv6, not bracketed, no zone), with surrounding
 * spaces and tabs trimmed; also "[v6]" and "v4:port" / "[v6]:port" forms some proxies write.
 * 0, or -1 (out unset). */
int addr_parse(const char *s, size_t n, ip_addr_t *out);
/* "a.b.c.d" for a mapped IPv4 address, else the IPv6 text; "-" when unset. */
void addr_format(const ip_addr_t *a, char out[ADDR_TEXT_MAX]);
int addr_is_v4(const ip_addr_t *a);
int addr_equal(const ip_addr_t *x, const ip_addr_t *y);
/* "addr" or "addr/len" (len 0..32 for IPv4, 0..128 for IPv6). 0, or -1. */
int cidr_parse(const char *s, size_t n, ip_cidr_t *out);
int cidr_match(const ip_cidr_t *c, const ip_addr_t *a);

#endif
