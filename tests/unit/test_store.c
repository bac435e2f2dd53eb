/* Unit tests for the in-memory signature store: first writer wins, TTL, FIFO eviction,
 * key limits, and many threads hammering one store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "store/store.h"

static int get_str(store_t *s, const char *k, double now, buf_t *out)
{
    buf_reset(out);
    return store_get(s, k, strlen(k), now, out);
}

static int put_str(store_t *s, const char *k, const char *v, double now)
{
    return store_put(s, k, strlen(k), v, strlen(v), now);
}

static void test_put_get(void **state)
{
    (void)state;
    store_t *s = store_new(10, 60);
    assert_non_null(s);
    buf_t b = BUF_INIT;
    assert_int_equal(get_str(s, "m:chat:a", 0, &b), STORE_NOT_FOUND);
    assert_int_equal(put_str(s, "m:chat:a", "{\"text\":\"x\"}", 0), STORE_OK);
    assert_int_equal(get_str(s, "m:chat:a", 1, &b), STORE_OK);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "{\"text\":\"x\"}", 12);
    assert_int_equal(store_count(s), 1);
    /* keys are compared by length too */
    assert_int_equal(store_get(s, "m:chat:a", 7, 1, &b), STORE_NOT_FOUND);
    /* binary-safe values, empty value */
    assert_int_equal(store_put(s, "bin", 3, "a\0b", 3, 0), STORE_OK);
    buf_reset(&b);
    assert_int_equal(store_get(s, "bin", 3, 0, &b), STORE_OK);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    assert_int_equal(store_put(s, "empty", 5, NULL, 0, 0), STORE_OK);
    buf_reset(&b);
    assert_int_equal(store_get(s, "empty", 5, 0, &b), STORE_OK);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    store_free(s);
}

static void test_no_overwrite(void **state)
{
    (void)state;
    store_t *s = store_new(10, 60);
    buf_t b = BUF_INIT;
    assert_int_equal(put_str(s, "k", "first", 0), STORE_OK);
    assert_int_equal(put_str(s, "k", "second", 1), STORE_EXISTS);
    assert_int_equal(get_str(s, "k", 2, &b), STORE_OK);
    assert_string_equal(b.data, "first");
    assert_int_equal(store_count(s), 1);
    buf_free(&b);
    store_free(s);
}

static void test_ttl(void **state)
{
    (void)state;
    store_t *s = store_new(10, 100);
    buf_t b = BUF_INIT;
    assert_int_equal(put_str(s, "a", "1", 1000.0), STORE_OK);
    assert_int_equal(put_str(s, "b", "2", 1050.0), STORE_OK);
    assert_int_equal(get_str(s, "a", 1099.9, &b), STORE_OK);
    assert_int_equal(get_str(s, "a", 1100.0, &b), STORE_NOT_FOUND);   /* expired */
    assert_int_equal(get_str(s, "b", 1100.0, &b), STORE_OK);
    /* an expired key can be written again */
    assert_int_equal(put_str(s, "a", "new", 1100.0), STORE_OK);
    assert_int_equal(get_str(s, "a", 1100.0, &b), STORE_OK);
    assert_string_equal(b.data, "new");
    assert_int_equal(store_expire(s, 1150.0), 1);  /* b */
    assert_int_equal(store_count(s), 1);
    assert_int_equal(store_expire(s, 1300.0), 1);
    assert_int_equal(store_count(s), 0);
    /* a record whose clock is ahead of a later caller's stays visible until its own ttl */
    assert_int_equal(put_str(s, "c", "3", 2000.0), STORE_OK);
    assert_int_equal(get_str(s, "c", 1990.0, &b), STORE_OK);
    buf_free(&b);
    store_free(s);
}

static void test_expired_reclaimed_by_put(void **state)
{
    (void)state;
    store_t *s = store_new(100, 10);
    char k[32];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(put_str(s, k, "v", 0), STORE_OK);
    }
    assert_int_equal(store_count(s), 50);
    assert_int_equal(put_str(s, "late", "v", 10.0), STORE_OK);
    assert_int_equal(store_count(s), 1);
    store_free(s);
}

static void test_eviction_oldest(void **state)
{
    (void)state;
    store_t *s = store_new(3, 1000);
    buf_t b = BUF_INIT;
    assert_int_equal(put_str(s, "a", "1", 0), STORE_OK);
    assert_int_equal(put_str(s, "b", "2", 1), STORE_OK);
    assert_int_equal(put_str(s, "c", "3", 2), STORE_OK);
    assert_int_equal(get_str(s, "a", 3, &b), STORE_OK);  /* reading does not refresh */
    assert_int_equal(put_str(s, "d", "4", 3), STORE_OK);
    assert_int_equal(store_count(s), 3);
    assert_int_equal(get_str(s, "a", 3, &b), STORE_NOT_FOUND);
    assert_int_equal(get_str(s, "b", 3, &b), STORE_OK);
    assert_int_equal(put_str(s, "e", "5", 4), STORE_OK);
    assert_int_equal(get_str(s, "b", 4, &b), STORE_NOT_FOUND);
    assert_int_equal(get_str(s, "c", 4, &b), STORE_OK);
    assert_int_equal(get_str(s, "d", 4, &b), STORE_OK);
    assert_int_equal(get_str(s, "e", 4, &b), STORE_OK);
    /* a collision on a full store evicts nothing */
    assert_int_equal(put_str(s, "c", "x", 5), STORE_EXISTS);
    assert_int_equal(get_str(s, "c", 5, &b), STORE_OK);
    assert_string_equal(b.data, "3");
    buf_free(&b);
    store_free(s);
}

static void test_eviction_many(void **state)
{
    (void)state;
    store_t *s = store_new(1000, 1000);
    buf_t b = BUF_INIT;
    char k[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "model:chat:%d", i);
        assert_int_equal(put_str(s, k, k, 0), STORE_OK);
    }
    assert_int_equal(store_count(s), 1000);
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "model:chat:%d", i);
        int rc = get_str(s, k, 0, &b);
        if (i < 9000) {
            assert_int_equal(rc, STORE_NOT_FOUND);
        } else {
            assert_int_equal(rc, STORE_OK);
            assert_string_equal(b.data, k);
        }
    }
    buf_free(&b);
    store_free(s);
}

static void test_limits(void **state)
{
    (void)state;
    assert_null(store_new(0, 10));
    assert_null(store_new(10, 0));
    store_t *s = store_new(4, 10);
    buf_t b = BUF_INIT;
    char key[STORE_MAX_KEY + 1];
    memset(key, 'k', sizeof(key));
    assert_int_equal(store_put(s, key, STORE_MAX_KEY, "v", 1, 0), STORE_OK);
    assert_int_equal(store_put(s, key, STORE_MAX_KEY + 1, "v", 1, 0), STORE_ERR);
    assert_int_equal(store_get(s, key, STORE_MAX_KEY + 1, 0, &b), STORE_ERR);
    assert_int_equal(store_get(s, key, STORE_MAX_KEY, 0, &b), STORE_OK);
    assert_int_equal(store_put(s, "", 0, "v", 1, 0), STORE_ERR);
    assert_int_equal(store_put(s, "x", 1, "v", (size_t)STORE_MAX_VAL + 1, 0), STORE_ERR);
    assert_int_equal(store_count(s), 1);
    buf_free(&b);
    store_free(s);
    store_free(NULL);
}

/* Threads: each writes its own keys plus a set of shared keys everybody races for; every
 * shared key must end up with exactly one winner, and every reader sees that winner. */
#define NTHREADS 8
#define PER_THREAD 5000
#define SHARED 200

struct hammer_arg {
    store_t *s;
    int id;
    int wins;
    int errors;
};

static void *hammer(void *p)
{
    struct hammer_arg *a = p;
    buf_t b = BUF_INIT;
    char k[64], v[64];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(k, sizeof(k), "own:%d:%d", a->id, i);
        snprintf(v, sizeof(v), "val:%d:%d", a->id, i);
        if (put_str(a->s, k, v, 0) != STORE_OK)
            a->errors++;
        if (get_str(a->s, k, 0, &b) != STORE_OK || strcmp(b.data, v) != 0)
            a->errors++;
        int sh = i % SHARED;
        snprintf(k, sizeof(k), "shared:%d", sh);
        snprintf(v, sizeof(v), "winner:%d", a->id);
        int rc = put_str(a->s, k, v, 0);
        if (rc == STORE_OK)
            a->wins++;
        else if (rc != STORE_EXISTS)
            a->errors++;
        if (get_str(a->s, k, 0, &b) != STORE_OK || strncmp(b.data, "winner:", 7) != 0)
            a->errors++;
    }
    buf_free(&b);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* big enough that nothing is evicted */
    store_t *s = store_new(NTHREADS * PER_THREAD + SHARED, 1000);
    pthread_t th[NTHREADS];
    struct hammer_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct hammer_arg){s, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    int wins = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
        wins += args[i].wins;
    }
    assert_int_equal(wins, SHARED);
    assert_int_equal(store_count(s), NTHREADS * PER_THREAD + SHARED);
    store_free(s);
}

/* Same hammering on a small store: constant eviction must never break the structure. */
static void *hammer_small(void *p)
{
    struct hammer_arg *a = p;
    buf_t b = BUF_INIT;
    char k[64], v[64];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(k, sizeof(k), "k:%d:%d", a->id, i);
        snprintf(v, sizeof(v), "v:%d:%d", a->id, i);
        if (put_str(a->s, k, v, i / 100.0) != STORE_OK)
            a->errors++;
        int rc = get_str(a->s, k, i / 100.0, &b);
        if (rc == STORE_OK && strcmp(b.data, v) != 0)
            a->errors++;
        if (rc != STORE_OK && rc != STORE_NOT_FOUND)
            a->errors++;
    }
    buf_free(&b);
    return NULL;
}

static void test_threads_evicting(void **state)
{
    (void)state;
    store_t *s = store_new(64, 5);
    pthread_t th[NTHREADS];
    struct hammer_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct hammer_arg){s, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_small, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    assert_true(store_count(s) <= 64);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_no_overwrite),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_expired_reclaimed_by_put),
        cmocka_unit_test(test_eviction_oldest),
        cmocka_unit_test(test_eviction_many),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_evicting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
