/* In-memory signature store: a chained hash table (SipHash with a per-store random key, so
 * caller-chosen chat ids cannot flood one bucket) threaded by a doubly linked list in
 * insertion order. TTL is uniform, so the oldest record is both the first to expire and the
 * one evicted when full. Allocation and freeing happen outside the lock. */
#include "store/store.h"

#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *hnext;  /* bucket chain */
    struct entry *older;  /* insertion-order list */
    struct entry *newer;
    uint64_t hash;
    double born;
    uint32_t klen;
    uint32_t vlen;
    char data[];          /* key bytes, then value bytes */
} entry_t;

struct store {
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t mask;          /* nbuckets - 1, nbuckets a power of two */
    size_t count;
    size_t capacity;
    double ttl;
    entry_t *oldest;
    entry_t *newest;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
};

store_t *store_new(size_t capacity, unsigned ttl_seconds)
{
    if (capacity == 0 || ttl_seconds == 0 || capacity > SIZE_MAX / 4 / sizeof(entry_t *))
        return NULL;
    if (sodium_init() < 0)
        return NULL;
    store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    size_t nb = 16;
    while (nb < capacity * 2)   /* load factor <= 0.5 */
        nb *= 2;
    s->buckets = calloc(nb, sizeof(entry_t *));
    if (!s->buckets || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->buckets);
        free(s);
        return NULL;
    }
    s->mask = nb - 1;
    s->capacity = capacity;
    s->ttl = (double)ttl_seconds;
    randombytes_buf(s->hkey, sizeof(s->hkey));
    return s;
}

static uint64_t key_hash(const store_t *s, const char *key, size_t klen)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *)key, klen, s->hkey);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}

static int key_ok(const char *key, size_t klen)
{
    return key && klen > 0 && klen <= STORE_MAX_KEY;
}

/* Caller holds the lock. */
static entry_t **find_slot(store_t *s, uint64_t h, const char *key, size_t klen)
{
    entry_t **pp = &s->buckets[h & s->mask];
    for (; *pp; pp = &(*pp)->hnext) {
        entry_t *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return pp;
    }
    return pp;
}

/* Unlinks e from its bucket and the age list and pushes it on *graveyard (freed later,
 * outside the lock). Caller holds the lock. */
static void unlink_entry(store_t *s, entry_t *e, entry_t **graveyard)
{
    entry_t **pp = &s->buckets[e->hash & s->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    s->count--;
    e->hnext = *graveyard;
    *graveyard = e;
}

static int expired(const store_t *s, const entry_t *e, double now)
{
    return !(now < e->born + s->ttl);
}

/* Drops expired entries from the old end. Caller holds the lock. */
static size_t reap(store_t *s, double now, entry_t **graveyard)
{
    size_t n = 0;
    while (s->oldest && expired(s, s->oldest, now)) {
        unlink_entry(s, s->oldest, graveyard);
        n++;
    }
    return n;
}

static void free_list(entry_t *e)
{
    while (e) {
        entry_t *next = e->hnext;
        free(e);
        e = next;
    }
}

int store_put(store_t *s, const char *key, size_t klen, const char *val, size_t vlen, double now)
{
    if (!s || !key_ok(key, klen) || (vlen && !val) || vlen > STORE_MAX_VAL)
        return STORE_ERR;
    entry_t *e = malloc(sizeof(*e) + klen + vlen);
    if (!e)
        return STORE_ERR;
    e->hash = key_hash(s, key, klen);
    e->born = now;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);

    entry_t *graveyard = NULL;
    int rc = STORE_OK;
    pthread_mutex_lock(&s->mu);
    reap(s, now, &graveyard);
    entry_t **slot = find_slot(s, e->hash, key, klen);
    if (*slot && expired(s, *slot, now)) {
        /* Clock went backwards across threads: the record is dead, so it may be replaced. */
        unlink_entry(s, *slot, &graveyard);
        slot = find_slot(s, e->hash, key, klen);
    }
    if (*slot) {
        rc = STORE_EXISTS;
    } else {
        while (s->count >= s->capacity)
            unlink_entry(s, s->oldest, &graveyard);
        /* Re-find: eviction may have unlinked the entry whose hnext field was the slot. */
        slot = find_slot(s, e->hash, key, klen);
        e->hnext = NULL;
        *slot = e;
        e->older = s->newest;
        e->newer = NULL;
        if (s->newest)
            s->newest->newer = e;
        else
            s->oldest = e;
        s->newest = e;
        s->count++;
        e = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    free(e);
    free_list(graveyard);
    return rc;
}

int store_get(store_t *s, const char *key, size_t klen, double now, buf_t *out)
{
    if (!s || !out || !key_ok(key, klen))
        return STORE_ERR;
    uint64_t h = key_hash(s, key, klen);
    int rc = STORE_NOT_FOUND;
    entry_t *graveyard = NULL;
    pthread_mutex_lock(&s->mu);
    entry_t *e = *find_slot(s, h, key, klen);
    if (e && expired(s, e, now)) {
        unlink_entry(s, e, &graveyard);
        e = NULL;
    }
    if (e)
        rc = buf_append(out, e->data + e->klen, e->vlen) == 0 ? STORE_OK : STORE_ERR;
    pthread_mutex_unlock(&s->mu);
    free_list(graveyard);
    return rc;
}

size_t store_expire(store_t *s, double now)
{
    if (!s)
        return 0;
    entry_t *graveyard = NULL;
    pthread_mutex_lock(&s->mu);
    size_t n = reap(s, now, &graveyard);
    pthread_mutex_unlock(&s->mu);
    free_list(graveyard);
    return n;
}

size_t store_count(store_t *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    size_t n = s->count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void store_free(store_t *s)
{
    if (!s)
        return;
    entry_t *e = s->oldest;
    while (e) {
        entry_t *next = e->newer;
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&s->mu);
    free(s->buckets);
    free(s);
}
