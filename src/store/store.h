/* Signature store: a bounded in-memory TTL map from record key ("model:chat:<id>") to an
 * opaque byte string (the record JSON). First writer wins: a key is never overwritten while
 * its record is alive. Thread-safe: every function may be called from any worker thread;
 * one mutex guards the table and is held only for the hash lookup and a copy of the value.
 * Memory is bounded by capacity * (STORE_MAX_KEY + STORE_MAX_VAL) in the worst case. */
#ifndef VP_STORE_STORE_H
#define VP_STORE_STORE_H
#include <stddef.h>

#include "core/buf.h"

enum {
    STORE_OK = 0,
    STORE_EXISTS = 1,    /* put: a live record already has this key; nothing changed */
    STORE_NOT_FOUND = 2, /* get: no live record */
    STORE_ERR = -1,      /* bad argument (empty/too long key, too large value) or ENOMEM */
};

#define STORE_MAX_KEY 512u           /* bytes; longer keys are rejected with STORE_ERR */
#define STORE_MAX_VAL (1u << 20)     /* bytes; larger values are rejected with STORE_ERR */

typedef struct store store_t;

/* capacity >= 1 entries, ttl_seconds >= 1. NULL on bad argument or ENOMEM. */
store_t *store_new(size_t capacity, unsigned ttl_seconds);
/* Copies key and value. `now` is the caller's clock in seconds (e.g. uv_hrtime()/1e9 or
 * CLOCK_REALTIME); a record put at t is visible while now < t + ttl. When the store is full
 * the oldest record (insertion order) is evicted. */
int store_put(store_t *s, const char *key, size_t klen, const char *val, size_t vlen, double now);
/* Appends the value to *out (out is not reset). STORE_OK, STORE_NOT_FOUND or STORE_ERR
 * (ENOMEM growing out). */
int store_get(store_t *s, const char *key, size_t klen, double now, buf_t *out);
/* Drops expired records; returns how many. put does this too, so calling it is optional. */
size_t store_expire(store_t *s, double now);
/* Records held, including expired ones not yet reclaimed. */
size_t store_count(store_t *s);
void store_free(store_t *s);

#endif
