/* Token-bucket rate limits per client address and per bearer token (RATE_LIMIT_*), and the
 * client address of a request (TRUSTED_PROXIES / TRUSTED_PROXY_HOPS over X-Forwarded-For and
 * X-Real-IP).
 *
 * Each bucket is kept as the GCRA's one number, its "theoretical arrival time" (TAT): a
 * request at time now is allowed when max(TAT, now) + T - now <= burst * T (T = the interval
 * between requests at the rate), and then TAT becomes max(TAT, now) + T; that is exactly a
 * token bucket of `burst` tokens refilled at the rate. A bucket whose TAT is in the past is
 * full, the same as no bucket at all, which is what makes eviction cheap.
 *
 * Memory is fixed at start-up whatever the number of clients: the address table is
 * RATE_LIMIT_IP_TABLE 64-bit words (sets of RL_WAYS), shared by every worker; a word holds a
 * 24-bit tag of the key's keyed hash (SipHash, random key) and the TAT (40 bits of
 * microseconds, modulo 2^40: 12.7 days). A lookup reads the key's set, takes the word whose tag
 * matches or else evicts the word closest to a full bucket (an expired one loses nothing), and
 * updates it with one compare-and-swap: no lock, and a denial writes nothing. The token table
 * is one word per configured token (exact). IPv6 clients are keyed by their /64.
 *
 * Threads: everything is thread-safe (atomics only); ratelimit_t is made at start-up. */
#ifndef VP_PROXY_RATELIMIT_H
#define VP_PROXY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/addr.h"
#include "http/server.h"
#include "proxy/config.h"

#define RL_WAYS 4

typedef struct rl_limit {
    uint64_t interval_us; /* T: one request per T at the rate */
    uint64_t tau_us;      /* burst * T */
} rl_limit_t;

typedef struct ratelimit ratelimit_t;

/* NULL when neither limit is on (and on out of memory: err says so). */
ratelimit_t *ratelimit_new(const config_t *cfg, char *err, size_t errlen);
void ratelimit_free(ratelimit_t *rl);

/* The GCRA step on one bucket (exposed for the unit tests): the bucket's TAT (mod 2^40, with
 * `have` 0 for a new bucket), now in microseconds. 1 (allowed, *tat_out the new TAT) or 0
 * (refused, *wait_us until a request would be allowed). */
int rl_gcra(const rl_limit_t *l, uint64_t tat, int have, uint64_t now_us, uint64_t *tat_out,
            uint64_t *wait_us);

/* Takes one request from the address's bucket (IPv6 by its /64). 1 allowed, 0 refused with
 * *retry_s (whole seconds, >= 1). Always 1 when the address limit is off. */
int ratelimit_ip(ratelimit_t *rl, const ip_addr_t *client, uint64_t now_us, unsigned *retry_s);
/* The same for the bearer token at index i of TOKEN. */
int ratelimit_token(ratelimit_t *rl, unsigned i, uint64_t now_us, unsigned *retry_s);
int ratelimit_ip_on(const ratelimit_t *rl);
int ratelimit_token_on(const ratelimit_t *rl);
/* Words of the address table (for the memory test and the start-up line). */
size_t ratelimit_ip_slots(const ratelimit_t *rl);

/* The request's client address: the peer, unless the peer is a trusted hop (TRUSTED_PROXIES,
 * or TRUSTED_PROXY_HOPS > 0); then the right-most address of X-Forwarded-For that is not a
 * trusted hop (the n-th from the right is a hop when n < TRUSTED_PROXY_HOPS, or when it is in
 * TRUSTED_PROXIES); every entry trusted: the left-most; an entry that does not parse: the
 * last trusted hop's address. Without X-Forwarded-For, X-Real-IP from a trusted peer. */
void client_addr_resolve(const config_t *cfg, const ip_addr_t *peer, strv_t xff, strv_t xrip,
                         ip_addr_t *out);

#endif
