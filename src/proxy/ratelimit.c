/* Rate limits and the client address (proxy/ratelimit.h). */
#include "proxy/ratelimit.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAT_BITS 40
#define TAT_MASK ((1ull << TAT_BITS) - 1)
#define TAG_MASK ((1ull << (64 - TAT_BITS)) - 1)

struct ratelimit {
    rl_limit_t ip, token;
    int ip_on, token_on;
    uint64_t *ip_slots; /* ip_sets * RL_WAYS words: tag << TAT_BITS | TAT; 0 = empty */
    size_t ip_sets;     /* a power of two */
    uint8_t key[crypto_shorthash_siphash24_KEYBYTES];
    uint64_t tok[CFG_MAX_TOKENS]; /* TAT per token (no tag: the index is exact) */
};

static void limit_init(rl_limit_t *l, unsigned per_minute, unsigned burst)
{
    l->interval_us = 60000000ull / per_minute;
    if (l->interval_us == 0)
        l->interval_us = 1;
    l->tau_us = l->interval_us * (burst ? burst : 1);
    if (l->tau_us > (TAT_MASK >> 2)) /* config_load bounds it well below; never ambiguous */
        l->tau_us = TAT_MASK >> 2;
}

ratelimit_t *ratelimit_new(const config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->rate_limit_ip_per_minute && !cfg->rate_limit_token_per_minute)
        return NULL;
    ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->rate_limit_ip_per_minute) {
        rl->ip_on = 1;
        limit_init(&rl->ip, cfg->rate_limit_ip_per_minute, cfg->rate_limit_ip_burst);
        size_t words = 1;
        while (words < cfg->rate_limit_ip_table)
            words <<= 1;
        if (words < RL_WAYS)
            words = RL_WAYS;
        rl->ip_sets = words / RL_WAYS;
        /* calloc: the pages are touched as sets are used, but the size is fixed here. */
        rl->ip_slots = calloc(words, sizeof *rl->ip_slots);
        if (!rl->ip_slots) {
            free(rl);
            snprintf(err, errlen, "out of memory (RATE_LIMIT_IP_TABLE)");
            return NULL;
        }
    }
    if (cfg->rate_limit_token_per_minute) {
        rl->token_on = 1;
        limit_init(&rl->token, cfg->rate_limit_token_per_minute, cfg->rate_limit_token_burst);
    }
    randombytes_buf(rl->key, sizeof rl->key);
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl)
        return;
    free(rl->ip_slots);
    free(rl);
}

int ratelimit_ip_on(const ratelimit_t *rl) { return rl && rl->ip_on; }
int ratelimit_token_on(const ratelimit_t *rl) { return rl && rl->token_on; }
size_t ratelimit_ip_slots(const ratelimit_t *rl) { return rl ? rl->ip_sets * RL_WAYS : 0; }

/* How far the bucket's TAT is ahead of now (0: in the past, i.e. full). A TAT is never more
 * than tau ahead, so a larger difference modulo 2^40 is one in the past. */
static uint64_t ahead(const rl_limit_t *l, uint64_t tat, uint64_t now_us)
{
    uint64_t d = (tat - now_us) & TAT_MASK;
    return d <= l->tau_us ? d : 0;
}

int rl_gcra(const rl_limit_t *l, uint64_t tat, int have, uint64_t now_us, uint64_t *tat_out,
            uint64_t *wait_us)
{
    uint64_t d = have ? ahead(l, tat, now_us) : 0;
    uint64_t next = d + l->interval_us; /* the new TAT, relative to now */
    if (next > l->tau_us) {
        *wait_us = next - l->tau_us;
        return 0;
    }
    *tat_out = (now_us + next) & TAT_MASK;
    return 1;
}

static unsigned retry_seconds(uint64_t wait_us)
{
    uint64_t s = (wait_us + 999999) / 1000000;
    return s < 1 ? 1 : s > 86400 ? 86400 : (unsigned)s;
}

/* One bucket word updated with compare-and-swap: 1 allowed, 0 refused (nothing written). */
static int take_word(uint64_t *w, uint64_t expect, uint64_t tag, int have, const rl_limit_t *l,
                     uint64_t now_us, unsigned *retry_s, int *raced)
{
    uint64_t tat, wait;
    *raced = 0;
    if (!rl_gcra(l, expect & TAT_MASK, have, now_us, &tat, &wait)) {
        *retry_s = retry_seconds(wait);
        return 0;
    }
    uint64_t nw = tag << TAT_BITS | tat;
    if (nw == 0)
        nw = 1; /* never the empty word */
    if (!__atomic_compare_exchange_n(w, &expect, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        *raced = 1;
    return 1;
}

int ratelimit_ip(ratelimit_t *rl, const ip_addr_t *client, uint64_t now_us, unsigned *retry_s)
{
    if (!rl || !rl->ip_on || !client->set)
        return 1;
    uint8_t k[16];
    memcpy(k, client->b, 16);
    if (!addr_is_v4(client))
        memset(k + 8, 0, 8); /* an IPv6 client is its /64: a host gets a /64 to itself */
    uint64_t h;
    crypto_shorthash_siphash24((unsigned char *)&h, k, sizeof k, rl->key);
    uint64_t tag = (h >> TAT_BITS) & TAG_MASK;
    if (tag == 0)
        tag = 1; /* 0 marks an empty word */
    uint64_t *set = rl->ip_slots + (h & (rl->ip_sets - 1)) * RL_WAYS;
    /* A lost compare-and-swap means another thread's update went in: read again. Every round
     * someone wins, so this ends; it never lets a request through without a decision. */
    for (;;) {
        uint64_t words[RL_WAYS];
        int match = -1, victim = 0;
        uint64_t best = UINT64_MAX;
        for (int i = 0; i < RL_WAYS; i++) {
            words[i] = __atomic_load_n(&set[i], __ATOMIC_RELAXED);
            if (words[i] && (words[i] >> TAT_BITS) == tag) {
                match = i;
                break;
            }
            /* The victim: an empty word, else the bucket closest to full. */
            uint64_t a = words[i] ? ahead(&rl->ip, words[i] & TAT_MASK, now_us) : 0;
            if (a < best)
                best = a, victim = i;
        }
        int i = match >= 0 ? match : victim, raced;
        int ok = take_word(&set[i], words[i], tag, match >= 0, &rl->ip, now_us, retry_s, &raced);
        if (!ok || !raced)
            return ok;
    }
}

int ratelimit_token(ratelimit_t *rl, unsigned i, uint64_t now_us, unsigned *retry_s)
{
    if (!rl || !rl->token_on || i >= CFG_MAX_TOKENS)
        return 1;
    for (;;) {
        uint64_t w = __atomic_load_n(&rl->tok[i], __ATOMIC_RELAXED);
        int raced;
        int ok = take_word(&rl->tok[i], w, 0, w != 0, &rl->token, now_us, retry_s, &raced);
        if (!ok || !raced)
            return ok;
    }
}

/* ---- the client address ---- */

static int trusted_addr(const config_t *cfg, const ip_addr_t *a)
{
    for (int i = 0; i < cfg->ntrusted_proxies; i++)
        if (cidr_match(&cfg->trusted_proxies[i], a))
            return 1;
    return 0;
}

void client_addr_resolve(const config_t *cfg, const ip_addr_t *peer, strv_t xff, strv_t xrip,
                         ip_addr_t *out)
{
    *out = *peer;
    if (!peer->set || (cfg->trusted_proxy_hops == 0 && !trusted_addr(cfg, peer)))
        return;
    if (xff.n == 0) {
        ip_addr_t a;
        if (xrip.n && addr_parse(xrip.p, xrip.n, &a) == 0)
            *out = a;
        return;
    }
    /* Right to left: entry n (1 = the right-most, added by the peer) is a hop of ours when
     * n < TRUSTED_PROXY_HOPS or its address is listed. */
    size_t end = xff.n;
    unsigned n = 0;
    for (;;) {
        size_t start = end;
        while (start > 0 && xff.p[start - 1] != ',')
            start--;
        ip_addr_t a;
        n++;
        if (addr_parse(xff.p + start, end - start, &a) != 0)
            return; /* not an address: the last trusted hop's view stands */
        *out = a;
        if (!(n < cfg->trusted_proxy_hops || trusted_addr(cfg, &a)))
            return; /* the right-most untrusted address */
        if (start == 0)
            return; /* every entry trusted: the left-most */
        end = start - 1;
    }
}
