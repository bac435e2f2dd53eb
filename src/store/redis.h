/* Redis layer of the signature store: one asynchronous hiredis connection per worker loop
 * (hiredis' libuv adapter), so replicas behind a load balancer can serve each other's records.
 * The in-memory store stays the source of truth for this process; Redis is written through
 * (SET key value NX EX ttl: first writer wins, never overwritten) and read first.
 *
 * Nothing here blocks a loop: the host name is resolved on the thread pool, every command is
 * asynchronous, and one timer bounds the oldest unanswered command (REDIS_TIMEOUT_MS). A
 * timeout or an error drops the connection (pending reads are answered with RSTORE_ERR at
 * once), opens a circuit breaker for RSTORE_BREAKER_MS (reads go to memory, writes are
 * skipped), and the connection is re-established in the background with backoff. After the
 * breaker period one command goes through as a probe; its success closes the breaker.
 *
 * Ownership and threads: an rstore_t belongs to one loop; every function must be called on
 * that loop's thread. The outage/recovery log lines are process-wide (said once, whichever
 * worker notices first). */
#ifndef VP_STORE_REDIS_H
#define VP_STORE_REDIS_H
#include <stddef.h>
#include <uv.h>

#define RSTORE_BREAKER_MS 10000u

enum {
    RSTORE_OK = 0,        /* get: the value is in (val, len); len may be 0 (empty string) */
    RSTORE_NOT_FOUND = 1, /* get: no such key */
    RSTORE_ERR = -1,      /* get, claim: error reply, timeout, connection lost or shut down */
    RSTORE_CLAIMED = 0,   /* claim: the key was set by this call */
    RSTORE_EXISTS = 1,    /* claim: the key was already there (someone claimed it first) */
};

typedef struct rstore rstore_t;

typedef struct rstore_config {
    const char *host;     /* name, IPv4/IPv6 literal, or an absolute Unix socket path */
    int port;
    const char *password; /* "" = no AUTH */
    int db;               /* SELECT db when non-zero */
    unsigned timeout_ms;  /* connect and per-command reply time */
    unsigned ttl_s;       /* EX of every SET */
    int worker;           /* for log lines */
} rstore_config_t;

/* Starts connecting in the background; NULL on ENOMEM. Strings are copied. */
rstore_t *rstore_new(uv_loop_t *loop, const rstore_config_t *cfg);

/* Drops the connection (pending gets are called back with RSTORE_ERR before this returns)
 * and closes the handles; the memory is released by the loop once they are closed, so the
 * loop must run again afterwards. NULL is a no-op. */
void rstore_close(rstore_t *r);

/* val is valid only during the callback. */
typedef void (*rstore_get_cb)(void *ud, int rc, const char *val, size_t len);

/* GET key. Returns 0 when the command was sent: cb is then called exactly once, later, from
 * the loop (never from inside this call). Returns -1 when Redis is not usable now (not
 * connected, breaker open, probe in flight, ENOMEM): cb is never called; use memory. */
int rstore_get(rstore_t *r, const char *key, size_t klen, rstore_get_cb cb, void *ud);

/* SET key val NX EX ttl, fire-and-forget. An existing key is left alone and logged as a
 * collision. Returns 0 when sent, -1 when skipped (Redis not usable now). */
int rstore_set_nx(rstore_t *r, const char *key, size_t klen, const char *val, size_t vlen);

/* SET key "1" NX EX ttl_s, answered: cb gets RSTORE_CLAIMED (set now), RSTORE_EXISTS (already
 * there) or RSTORE_ERR (error reply, timeout, connection lost, shut down; the breaker then
 * opens as for a GET). Same contract as rstore_get: 0 when sent (cb called exactly once,
 * later, from the loop), -1 when Redis is not usable now (cb never called). */
typedef void (*rstore_claim_cb)(void *ud, int rc);
int rstore_claim(rstore_t *r, const char *key, size_t klen, unsigned ttl_s, rstore_claim_cb cb,
                 void *ud);

#endif
