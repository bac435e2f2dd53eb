/* A libuv loop run in its own thread, and calls handed to it from the test thread: the test
 * thread posts fn(arg) through a uv_async_t and waits, with a deadline, until the loop thread
 * has run it. Include after <cmocka.h> and "at.h", with WAIT_MS (the deadline of every wait,
 * in ms) defined.
 *
 * The header owns the test's one mutex and condition (mu, cv): the call slot below is kept
 * under them, and the test keeps its own shared state under them too, broadcasting cv on
 * every change so that wait_for() sees it. */
#ifndef VP_TESTS_LOOP_THREAD_H
#define VP_TESTS_LOOP_THREAD_H

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <uv.h>

#ifndef WAIT_MS
#error "define WAIT_MS before including loop_thread.h"
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static uv_loop_t loop;
static pthread_t loop_thr;
static uv_async_t wake;

/* The call posted to the loop thread; call_done is set once it returned. */
static void (*call_fn)(void *);
static void *call_arg;
static int call_done;

/* Waits until *counter >= target (read under mu), at most ms; returns the value seen. */
static inline int wait_for(const int *counter, int target, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mu);
    while (*counter < target) {
        if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT)
            break;
    }
    int v = *counter;
    pthread_mutex_unlock(&mu);
    return v;
}

static inline void on_wake(uv_async_t *a)
{
    (void)a;
    pthread_mutex_lock(&mu);
    void (*fn)(void *) = call_fn;
    void *arg = call_arg;
    call_fn = NULL;
    pthread_mutex_unlock(&mu);
    if (!fn)
        return;
    fn(arg);
    pthread_mutex_lock(&mu);
    call_done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Hands fn(arg) to the loop thread without waiting; call_done turns 1 once it returned. */
static inline void post_on_loop(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&mu);
    call_fn = fn;
    call_arg = arg;
    call_done = 0;
    pthread_mutex_unlock(&mu);
    uv_async_send(&wake);
}

/* Runs fn(arg) on the loop thread and waits for it to return. */
static inline void on_loop_at(AT_PARAMS, void (*fn)(void *), void *arg)
{
    post_on_loop(fn, arg);
    if (!wait_for(&call_done, 1, WAIT_MS))
        at_fail_msg("the loop thread did not run a call within %d ms", WAIT_MS);
}
#define on_loop(fn, arg) on_loop_at(AT_HERE, fn, arg)

static inline void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Starts the loop thread on `loop`, which the test has initialised and filled. */
static inline void loop_thread_start_at(AT_PARAMS)
{
    at_assert_int_equal(uv_async_init(&loop, &wake, on_wake), 0);
    at_assert_int_equal(pthread_create(&loop_thr, NULL, loop_main, NULL), 0);
}
#define loop_thread_start() loop_thread_start_at(AT_HERE)

/* The loop thread's last call: the test's stop function, then the wake handle's close. */
static void (*stop_fn)(void *);
static inline void loop_thread_stop_call(void *arg)
{
    stop_fn(arg);
    uv_close((uv_handle_t *)&wake, NULL);
}

/* Runs stop(arg) on the loop thread, which must close every handle of the test's own there,
 * and joins the thread (uv_run returns once the handles are closed). 0, or -1 when the call
 * did not run within WAIT_MS (the thread is left alone). */
static inline int loop_thread_stop(void (*stop)(void *), void *arg)
{
    stop_fn = stop;
    post_on_loop(loop_thread_stop_call, arg);
    if (!wait_for(&call_done, 1, WAIT_MS))
        return -1;
    pthread_join(loop_thr, NULL);
    return 0;
}

#endif
