/* Unit tests for the rate limiter (proxy/ratelimit.h) and the address helpers (core/addr.h):
 * the GCRA step against an independent token bucket on random arrivals, bursts and
 * Retry-After, the address table under many distinct addresses (fixed size, no false
 * refusal), IPv6 /64 keys, per-token buckets, threads racing on one bucket (exactly the burst
 * passes), and the client address taken from X-Forwarded-For / X-Real-IP only from trusted
 * hops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "proxy/config.h"
#include "proxy/ratelimit.h"

static ip_addr_t A(const char *s)
{
    ip_addr_t a;
    assert_int_equal(addr_parse(s, strlen(s), &a), 0);
    return a;
}

static void assert_addr(const ip_addr_t *a, const char *want)
{
    char t[ADDR_TEXT_MAX];
    addr_format(a, t);
    assert_string_equal(t, want);
}

static void test_addr_parse(void **state)
{
    (void)state;
    ip_addr_t a;
    a = A("192.0.2.7");
    assert_true(addr_is_v4(&a));
    assert_addr(&a, "192.0.2.7");
    a = A(" 2001:db8::1\t");
    assert_false(addr_is_v4(&a));
    assert_addr(&a, "2001:db8::1");
    a = A("[2001:db8::2]:443");
    assert_addr(&a, "2001:db8::2");
    a = A("[2001:db8::3]");
    assert_addr(&a, "2001:db8::3");
    a = A("198.51.100.1:8080");
    assert_addr(&a, "198.51.100.1");
    a = A("::ffff:10.0.0.1"); /* a mapped address is the IPv4 one */
    assert_true(addr_is_v4(&a));
    assert_addr(&a, "10.0.0.1");
    static const char *bad[] = {"", "unknown", "1.2.3", "1.2.3.4.5", "300.1.1.1", "1.2.3.4:",
                                "1.2.3.4:x", "[1.2.3.4]", "[::1", "::1]:80", "fe80::1%eth0",
                                "1.2.3.4 5.6.7.8", "_hidden"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (addr_parse(bad[i], strlen(bad[i]), &a) == 0)
            fail_msg("'%s' parsed", bad[i]);
        assert_int_equal(a.set, 0);
    }
    ip_addr_t none = {0};
    assert_addr(&none, "-");
}

static int match(const char *cidr, const char *addr)
{
    ip_cidr_t c;
    assert_int_equal(cidr_parse(cidr, strlen(cidr), &c), 0);
    ip_addr_t a = A(addr);
    return cidr_match(&c, &a);
}

static void test_cidr(void **state)
{
    (void)state;
    assert_true(match("10.0.0.0/8", "10.255.1.2"));
    assert_false(match("10.0.0.0/8", "11.0.0.1"));
    assert_true(match("192.168.1.128/25", "192.168.1.200"));
    assert_false(match("192.168.1.128/25", "192.168.1.127"));
    assert_true(match("127.0.0.1", "127.0.0.1"));
    assert_false(match("127.0.0.1", "127.0.0.2"));
    assert_true(match("0.0.0.0/0", "203.0.113.9"));
    assert_false(match("0.0.0.0/0", "2001:db8::1")); /* an IPv4 prefix holds no IPv6 address */
    assert_true(match("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(match("2001:db8::/32", "2001:db9::1"));
    assert_true(match("::/0", "2001:db8::1"));
    assert_true(match("fd00::/8", "fdff::1"));
    ip_cidr_t c;
    static const char *bad[] = {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "x/8",
                                "10.0.0.0/8/8", "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cidr_parse(bad[i], strlen(bad[i]), &c) == 0)
            fail_msg("'%s' parsed", bad[i]);
}

/* The GCRA step against a token bucket kept independently (tokens as a real number, refilled
 * continuously, capacity = burst, a request takes one whole token) on random arrivals. */
static void test_gcra_is_a_token_bucket(void **state)
{
    (void)state;
    static const struct { unsigned per_min, burst; } cases[] = {{600, 5}, {60, 1}, {6000, 20}};
    srand(7);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rl_limit_t l = {60000000ull / cases[k].per_min,
                        60000000ull / cases[k].per_min * cases[k].burst};
        double rate_per_us = cases[k].per_min / 60e6, tokens = cases[k].burst;
        uint64_t tat = 0, now = 1000000, last = now;
        int have = 0, allowed = 0, refused = 0;
        for (int i = 0; i < 20000; i++) {
            /* 0..2T in 50 us steps: arrivals at the limit's rate on average */
            now += (uint64_t)(rand() % (int)(2 * l.interval_us / 50)) * 50;
            tokens += (double)(now - last) * rate_per_us;
            if (tokens > cases[k].burst)
                tokens = cases[k].burst;
            last = now;
            int want = tokens >= 1.0 - 1e-9;
            uint64_t nt, wait = 0;
            int got = rl_gcra(&l, tat, have, now, &nt, &wait);
            if (got != want)
                fail_msg("case %zu step %d: gcra %d, token bucket %d (tokens %.6f)", k, i, got,
                         want, tokens);
            if (got) {
                tokens -= 1.0;
                tat = nt;
                have = 1;
                allowed++;
            } else {
                /* the wait is exactly the time until the bucket holds one token */
                double need_us = (1.0 - tokens) / rate_per_us;
                assert_true(wait > 0);
                assert_true((double)wait >= need_us - 1.0 && (double)wait <= need_us + 1.0);
                refused++;
            }
        }
        assert_true(allowed > 100 && refused > 100); /* both sides exercised */
    }
}

static config_t cfg_with(unsigned ip_rate, unsigned ip_burst, size_t table, unsigned tok_rate,
                         unsigned tok_burst)
{
    config_t c;
    memset(&c, 0, sizeof c);
    c.rate_limit_ip_per_minute = ip_rate;
    c.rate_limit_ip_burst = ip_burst;
    c.rate_limit_ip_table = table;
    c.rate_limit_token_per_minute = tok_rate;
    c.rate_limit_token_burst = tok_burst;
    return c;
}

static void test_burst_and_retry_after(void **state)
{
    (void)state;
    char err[100];
    config_t c = cfg_with(60, 3, 1024, 0, 0); /* one a second, three at once */
    assert_null(ratelimit_new(&(config_t){0}, err, sizeof err)); /* both off: no limiter */
    ratelimit_t *rl = ratelimit_new(&c, err, sizeof err);
    assert_non_null(rl);
    assert_true(ratelimit_ip_on(rl));
    assert_false(ratelimit_token_on(rl));
    assert_int_equal(ratelimit_ip_slots(rl), 1024);
    ip_addr_t a = A("203.0.113.5"), b = A("203.0.113.6");
    uint64_t t = 5000000;
    unsigned retry = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_ip(rl, &a, t, &retry), 1);
    assert_int_equal(ratelimit_ip(rl, &a, t, &retry), 0);
    assert_int_equal(retry, 1);
    assert_int_equal(ratelimit_ip(rl, &b, t, &retry), 1); /* another address: its own bucket */
    assert_int_equal(ratelimit_ip(rl, &a, t + 999999, &retry), 0);
    assert_int_equal(ratelimit_ip(rl, &a, t + 1000000, &retry), 1); /* one token back */
    assert_int_equal(ratelimit_ip(rl, &a, t + 1000000, &retry), 0);
    /* A refusal costs nothing: 3 s later the bucket holds 3 again. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(ratelimit_ip(rl, &a, t + 1500000, &retry), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_ip(rl, &a, t + 4000000, &retry), 1);
    assert_int_equal(ratelimit_ip(rl, &a, t + 4000000, &retry), 0);
    /* The tokens are off: always allowed. */
    assert_int_equal(ratelimit_token(rl, 0, t, &retry), 1);
    ratelimit_free(rl);

    /* A slow rate: Retry-After rounds the wait up to whole seconds. */
    c = cfg_with(2, 1, 64, 0, 0); /* one per 30 s */
    rl = ratelimit_new(&c, err, sizeof err);
    assert_int_equal(ratelimit_ip(rl, &a, t, &retry), 1);
    assert_int_equal(ratelimit_ip(rl, &a, t + 10500000, &retry), 0);
    assert_int_equal(retry, 20); /* 19.5 s left */
    ratelimit_free(rl);
}

static void test_ipv6_by_64(void **state)
{
    (void)state;
    char err[100];
    config_t c = cfg_with(60, 2, 1024, 0, 0);
    ratelimit_t *rl = ratelimit_new(&c, err, sizeof err);
    unsigned retry;
    ip_addr_t x = A("2001:db8:1:2::1"), y = A("2001:db8:1:2:ffff::9"), z = A("2001:db8:1:3::1");
    assert_int_equal(ratelimit_ip(rl, &x, 1000, &retry), 1);
    assert_int_equal(ratelimit_ip(rl, &y, 1000, &retry), 1); /* the same /64 */
    assert_int_equal(ratelimit_ip(rl, &x, 1000, &retry), 0);
    assert_int_equal(ratelimit_ip(rl, &z, 1000, &retry), 1); /* another /64 */
    ratelimit_free(rl);
}

static void test_tokens(void **state)
{
    (void)state;
    char err[100];
    config_t c = cfg_with(0, 0, 0, 120, 2);
    ratelimit_t *rl = ratelimit_new(&c, err, sizeof err);
    assert_non_null(rl);
    assert_false(ratelimit_ip_on(rl));
    unsigned retry;
    ip_addr_t a = A("192.0.2.1");
    for (int i = 0; i < 100; i++) /* the address limit is off */
        assert_int_equal(ratelimit_ip(rl, &a, 1000, &retry), 1);
    assert_int_equal(ratelimit_token(rl, 3, 1000, &retry), 1);
    assert_int_equal(ratelimit_token(rl, 3, 1000, &retry), 1);
    assert_int_equal(ratelimit_token(rl, 3, 1000, &retry), 0);
    assert_int_equal(retry, 1);
    assert_int_equal(ratelimit_token(rl, 4, 1000, &retry), 1); /* each token its own */
    assert_int_equal(ratelimit_token(rl, CFG_MAX_TOKENS, 1000, &retry), 1); /* no bucket */
    assert_int_equal(ratelimit_token(rl, 3, 501000, &retry), 1);             /* 0.5 s: one back */
    ratelimit_free(rl);
}

/* Far more addresses than the table holds: the memory is the table's, every new address's
 * first requests pass (evicted buckets start full again: softer, never a false refusal), and
 * an address kept busy keeps its limit. */
static void test_many_addresses(void **state)
{
    (void)state;
    char err[100];
    config_t c = cfg_with(60, 2, 256, 0, 0);
    ratelimit_t *rl = ratelimit_new(&c, err, sizeof err);
    assert_int_equal(ratelimit_ip_slots(rl), 256);
    unsigned retry;
    int refused_new = 0;
    ip_addr_t busy = A("198.51.100.77");
    uint64_t t = 1000000;
    for (unsigned i = 0; i < 200000; i++) {
        ip_addr_t a = {0};
        a.set = 1;
        a.b[10] = a.b[11] = 0xff;
        uint32_t v = 0x0a000000u + i; /* 10.x.y.z */
        a.b[12] = (uint8_t)(v >> 24), a.b[13] = (uint8_t)(v >> 16), a.b[14] = (uint8_t)(v >> 8),
        a.b[15] = (uint8_t)v;
        refused_new += !ratelimit_ip(rl, &a, t, &retry);
        if (i % 1000 == 0) {
            /* the busy address: refused once its two are used within the same second */
            ratelimit_ip(rl, &busy, t, &retry);
            ratelimit_ip(rl, &busy, t, &retry);
            if (ratelimit_ip(rl, &busy, t, &retry))
                fail_msg("busy address not limited at %u", i);
            t += 1000000;
        }
    }
    /* Only a 24-bit tag collision could refuse a new address (4 ways / 2^24 per lookup). */
    assert_true(refused_new <= 2);
    ratelimit_free(rl);
}

/* Threads racing on one bucket: exactly the burst passes (a lost compare-and-swap is read
 * again, never let through). */
typedef struct {
    ratelimit_t *rl;
    int token;
    int allowed;
} race_t;

static void *race(void *p)
{
    race_t *r = p;
    ip_addr_t a = A("192.0.2.200");
    unsigned retry;
    for (int i = 0; i < 20000; i++)
        r->allowed += r->token ? ratelimit_token(r->rl, 1, 1000000, &retry)
                               : ratelimit_ip(r->rl, &a, 1000000, &retry);
    return NULL;
}

static void test_threads_race(void **state)
{
    (void)state;
    char err[100];
    config_t c = cfg_with(1, 500, 64, 1, 700);
    ratelimit_t *rl = ratelimit_new(&c, err, sizeof err);
    for (int token = 0; token < 2; token++) {
        race_t r[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            r[i] = (race_t){rl, token, 0};
            pthread_create(&th[i], NULL, race, &r[i]);
        }
        int total = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            total += r[i].allowed;
        }
        assert_int_equal(total, token ? 700 : 500);
    }
    ratelimit_free(rl);
}

/* ---- the client address ---- */

static ip_addr_t resolve(const config_t *c, const char *peer, const char *xff, const char *xrip)
{
    ip_addr_t p = A(peer), out;
    strv_t x = {xff ? xff : "", xff ? strlen(xff) : 0}, r = {xrip ? xrip : "", xrip ? strlen(xrip) : 0};
    client_addr_resolve(c, &p, x, r, &out);
    return out;
}

static void add_trusted(config_t *c, const char *cidr)
{
    assert_int_equal(cidr_parse(cidr, strlen(cidr), &c->trusted_proxies[c->ntrusted_proxies++]), 0);
}

static void test_client_address(void **state)
{
    (void)state;
    config_t c;
    memset(&c, 0, sizeof c);
    ip_addr_t a;
    /* Nothing trusted: the headers change nothing. */
    a = resolve(&c, "203.0.113.1", "1.1.1.1", "2.2.2.2");
    assert_addr(&a, "203.0.113.1");
    /* A trusted peer: the right-most untrusted entry (the left one is the client's to forge). */
    add_trusted(&c, "10.0.0.0/8");
    a = resolve(&c, "10.0.0.2", "6.6.6.6, 198.51.100.4", NULL);
    assert_addr(&a, "198.51.100.4");
    a = resolve(&c, "10.0.0.2", "6.6.6.6, 198.51.100.4, 10.9.9.9", NULL); /* a second hop of ours */
    assert_addr(&a, "198.51.100.4");
    a = resolve(&c, "203.0.113.1", "6.6.6.6", NULL); /* not from a trusted peer */
    assert_addr(&a, "203.0.113.1");
    a = resolve(&c, "10.0.0.2", "10.1.1.1,10.2.2.2", NULL); /* all ours: the left-most */
    assert_addr(&a, "10.1.1.1");
    a = resolve(&c, "10.0.0.2", "6.6.6.6, unknown", NULL); /* not an address: the hop's view */
    assert_addr(&a, "10.0.0.2");
    a = resolve(&c, "10.0.0.2", "6.6.6.6, [2001:db8::5]:1234", NULL);
    assert_addr(&a, "2001:db8::5");
    a = resolve(&c, "10.0.0.2", NULL, "198.51.100.9"); /* X-Real-IP without X-Forwarded-For */
    assert_addr(&a, "198.51.100.9");
    a = resolve(&c, "10.0.0.2", "198.51.100.4", "5.5.5.5"); /* X-Forwarded-For wins */
    assert_addr(&a, "198.51.100.4");
    a = resolve(&c, "10.0.0.2", NULL, "garbage");
    assert_addr(&a, "10.0.0.2");
    /* Hops by count: whatever their addresses. */
    memset(&c, 0, sizeof c);
    c.trusted_proxy_hops = 1;
    a = resolve(&c, "203.0.113.1", "6.6.6.6, 198.51.100.4", NULL);
    assert_addr(&a, "198.51.100.4");
    c.trusted_proxy_hops = 2;
    a = resolve(&c, "203.0.113.1", "6.6.6.6, 198.51.100.4", NULL);
    assert_addr(&a, "6.6.6.6");
    c.trusted_proxy_hops = 3;
    a = resolve(&c, "203.0.113.1", "6.6.6.6, 198.51.100.4", NULL); /* fewer entries than hops */
    assert_addr(&a, "6.6.6.6");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_gcra_is_a_token_bucket),
        cmocka_unit_test(test_burst_and_retry_after),
        cmocka_unit_test(test_ipv6_by_64),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_many_addresses),
        cmocka_unit_test(test_threads_race),
        cmocka_unit_test(test_client_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
