/* Unit tests for the E2EE crypto threads (proxy/e2ee_pool.h): jobs run off the loop thread
 * and come back on it; one owner's chained jobs complete in order; many owners on two loops at
 * once; a full queue refuses; an owner that goes away with a job in flight is kept until the
 * job is back (the port keeps the loop alive); shutdown with jobs queued hands them back not
 * run; the threads run at the lowered priority. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "proxy/e2ee_pool.h"

static pid_t tid_now(void) { return (pid_t)syscall(SYS_gettid); }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- chained jobs per owner ---- */

#define CHAIN 40

typedef struct owner {
    e2ee_job_t job;
    e2ee_port_t *port;
    pthread_t loop_thread;
    int seq;       /* the job's number, written before submit, read by work */
    int worked;    /* set by work to seq (a crypto thread) */
    int next;      /* the next seq done expects */
    int bad_order; /* done saw a job out of order */
    int on_loop;   /* work ran on the loop thread (must not) */
    int not_loop;  /* done ran off the loop thread (must not) */
    int finished;
} owner_t;

static void chain_work(e2ee_job_t *j)
{
    owner_t *o = (owner_t *)j;
    if (pthread_equal(pthread_self(), o->loop_thread))
        o->on_loop = 1;
    o->worked = o->seq;
    if (o->seq % 7 == 0)
        sleep_ms(1); /* vary the order in which owners' jobs finish */
}

static void chain_done(e2ee_job_t *j)
{
    owner_t *o = (owner_t *)j;
    if (!pthread_equal(pthread_self(), o->loop_thread))
        o->not_loop = 1;
    if (!j->ran || o->worked != o->next)
        o->bad_order = 1;
    o->next++;
    if (o->next == CHAIN) {
        o->finished = 1;
        return;
    }
    o->seq = o->next;
    if (e2ee_port_submit(o->port, &o->job) != 0)
        o->bad_order = 1;
}

/* Runs n owners of CHAIN jobs each through a port on a loop of this thread. */
static void run_chains(e2ee_pool_t *p, owner_t *os, int n)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    e2ee_port_t *port = e2ee_port_new(p, &loop);
    assert_non_null(port);
    for (int i = 0; i < n; i++) {
        owner_t *o = &os[i];
        memset(o, 0, sizeof *o);
        o->job.work = chain_work;
        o->job.done = chain_done;
        o->port = port;
        o->loop_thread = pthread_self();
        assert_int_equal(e2ee_port_submit(port, &o->job), 0);
    }
    /* the port keeps the loop alive while jobs are outstanding: uv_run returns when all are back */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(e2ee_port_outstanding(port), 0);
    e2ee_port_close(port);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void check_chains(const owner_t *os, int n)
{
    for (int i = 0; i < n; i++) {
        assert_true(os[i].finished);
        assert_int_equal(os[i].next, CHAIN);
        assert_false(os[i].bad_order);
        assert_false(os[i].on_loop);
        assert_false(os[i].not_loop);
    }
}

static void test_order_per_owner(void **state)
{
    (void)state;
    char err[200];
    e2ee_pool_t *p = e2ee_pool_new(4, 0, 0, err, sizeof err);
    assert_non_null(p);
    owner_t os[16];
    run_chains(p, os, 16);
    check_chains(os, 16);
    e2ee_pool_stats_t st;
    e2ee_pool_stats(p, &st);
    assert_int_equal(st.threads, 4);
    assert_int_equal(st.completed, 16 * CHAIN);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.rejected, 0);
    e2ee_pool_free(p);
}

/* Two loops on their own threads, 100 owners each, one pool. */
struct loop_arg {
    e2ee_pool_t *p;
    owner_t os[100];
};

static void *loop_main(void *arg)
{
    struct loop_arg *a = arg;
    run_chains(a->p, a->os, 100);
    return NULL;
}

static void test_many_owners_two_loops(void **state)
{
    (void)state;
    char err[200];
    e2ee_pool_t *p = e2ee_pool_new(3, 0, 0, err, sizeof err);
    assert_non_null(p);
    struct loop_arg *a = calloc(2, sizeof *a);
    assert_non_null(a);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        a[i].p = p;
        assert_int_equal(pthread_create(&th[i], NULL, loop_main, &a[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        check_chains(a[i].os, 100);
    }
    e2ee_pool_stats_t st;
    e2ee_pool_stats(p, &st);
    assert_int_equal(st.completed, 2 * 100 * CHAIN);
    free(a);
    e2ee_pool_free(p);
}

/* ---- a gate that holds the only thread ---- */

static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gcv = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

typedef struct simple {
    e2ee_job_t job;
    int done_calls, ran;
    int *freed_flag; /* abort test: the owner is freed in done */
} simple_t;

static void gate_work(e2ee_job_t *j)
{
    (void)j;
    pthread_mutex_lock(&gmu);
    gate_entered = 1;
    pthread_cond_broadcast(&gcv);
    while (!gate_open)
        pthread_cond_wait(&gcv, &gmu);
    pthread_mutex_unlock(&gmu);
}

static void nop_work(e2ee_job_t *j) { (void)j; }

static void simple_done(e2ee_job_t *j)
{
    simple_t *s = (simple_t *)j;
    s->done_calls++;
    s->ran = j->ran;
}

static void gate_reset(void)
{
    pthread_mutex_lock(&gmu);
    gate_open = gate_entered = 0;
    pthread_mutex_unlock(&gmu);
}

static void gate_wait_entered(void)
{
    pthread_mutex_lock(&gmu);
    while (!gate_entered)
        pthread_cond_wait(&gcv, &gmu);
    pthread_mutex_unlock(&gmu);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gmu);
    gate_open = 1;
    pthread_cond_broadcast(&gcv);
    pthread_mutex_unlock(&gmu);
}

static void test_full_queue(void **state)
{
    (void)state;
    char err[200];
    gate_reset();
    e2ee_pool_t *p = e2ee_pool_new(1, 0, 4, err, sizeof err);
    assert_non_null(p);
    uv_loop_t loop;
    uv_loop_init(&loop);
    e2ee_port_t *port = e2ee_port_new(p, &loop);
    simple_t s[6];
    memset(s, 0, sizeof s);
    s[0].job.work = gate_work;
    for (int i = 0; i < 6; i++) {
        if (i)
            s[i].job.work = nop_work;
        s[i].job.done = simple_done;
    }
    assert_int_equal(e2ee_port_submit(port, &s[0].job), 0);
    gate_wait_entered(); /* the only thread holds the gate job: the queue is empty */
    for (int i = 1; i <= 4; i++)
        assert_int_equal(e2ee_port_submit(port, &s[i].job), 0);
    assert_int_equal(e2ee_port_submit(port, &s[5].job), -1); /* full: refused, not queued */
    e2ee_pool_stats_t st;
    e2ee_pool_stats(p, &st);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(e2ee_port_outstanding(port), 5);
    gate_release();
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i <= 4; i++) {
        assert_int_equal(s[i].done_calls, 1);
        assert_int_equal(s[i].ran, 1);
    }
    assert_int_equal(s[5].done_calls, 0); /* a refused job is never called back */
    /* room again */
    assert_int_equal(e2ee_port_submit(port, &s[5].job), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s[5].done_calls, 1);
    e2ee_port_close(port);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    e2ee_pool_free(p);
}

/* The owner goes away (a client abort) while its job runs: it may not be freed before done,
 * and done still comes on the loop, which the port keeps running until then. */
typedef struct aowner {
    e2ee_job_t job;
    int aborted, job_busy;
    int *freed;
    int *done_seen_aborted;
} aowner_t;

static void slow_work(e2ee_job_t *j)
{
    (void)j;
    sleep_ms(30);
}

static void aowner_done(e2ee_job_t *j)
{
    aowner_t *o = (aowner_t *)j;
    o->job_busy = 0;
    *o->done_seen_aborted = o->aborted;
    if (o->aborted) { /* released now that the job is back */
        *o->freed = 1;
        free(o);
    }
}

static void on_abort_timer(uv_timer_t *t)
{
    aowner_t *o = t->data;
    o->aborted = 1; /* the owner would be released here, but its job is in flight */
    assert_true(o->job_busy);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_abort_with_job_in_flight(void **state)
{
    (void)state;
    char err[200];
    e2ee_pool_t *p = e2ee_pool_new(2, 0, 0, err, sizeof err);
    assert_non_null(p);
    uv_loop_t loop;
    uv_loop_init(&loop);
    e2ee_port_t *port = e2ee_port_new(p, &loop);
    int freed = 0, seen = 0;
    aowner_t *o = calloc(1, sizeof *o);
    assert_non_null(o);
    o->job.work = slow_work;
    o->job.done = aowner_done;
    o->freed = &freed;
    o->done_seen_aborted = &seen;
    assert_int_equal(e2ee_port_submit(port, &o->job), 0);
    o->job_busy = 1;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = o;
    uv_timer_start(&t, on_abort_timer, 5, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns only once the job is back */
    assert_int_equal(seen, 1);
    assert_int_equal(freed, 1);
    e2ee_port_close(port);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    e2ee_pool_free(p);
}

/* Shutdown with jobs queued: the running one finishes, the queued ones come back with ran = 0
 * through the port (done runs inside e2ee_port_close), each exactly once. */
static void *release_later(void *arg)
{
    (void)arg;
    sleep_ms(100); /* e2ee_pool_free has set stopping by then */
    gate_release();
    return NULL;
}

static void test_shutdown_with_jobs_queued(void **state)
{
    (void)state;
    char err[200];
    gate_reset();
    e2ee_pool_t *p = e2ee_pool_new(1, 0, 0, err, sizeof err);
    assert_non_null(p);
    uv_loop_t loop;
    uv_loop_init(&loop);
    e2ee_port_t *port = e2ee_port_new(p, &loop);
    simple_t s[11];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 11; i++) {
        s[i].job.work = i ? nop_work : gate_work;
        s[i].job.done = simple_done;
    }
    assert_int_equal(e2ee_port_submit(port, &s[0].job), 0);
    gate_wait_entered();
    for (int i = 1; i < 11; i++)
        assert_int_equal(e2ee_port_submit(port, &s[i].job), 0);
    pthread_t rel;
    assert_int_equal(pthread_create(&rel, NULL, release_later, NULL), 0);
    e2ee_pool_free(p); /* joins after the gate job; hands the 10 queued ones back */
    pthread_join(rel, NULL);
    for (int i = 0; i < 11; i++)
        assert_int_equal(s[i].done_calls, 0); /* nothing is called off the loop */
    e2ee_port_close(port);
    int ran = 0, cancelled = 0;
    for (int i = 0; i < 11; i++) {
        assert_int_equal(s[i].done_calls, 1);
        ran += s[i].ran;
        cancelled += !s[i].ran;
    }
    assert_int_equal(s[0].ran, 1);
    assert_int_equal(ran, 1);
    assert_int_equal(cancelled, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The crypto threads run at the process's nice + the increment (capped at 19). */
static int seen_prio;
static void prio_work(e2ee_job_t *j)
{
    (void)j;
    seen_prio = getpriority(PRIO_PROCESS, (id_t)tid_now());
}

static void test_lower_priority(void **state)
{
    (void)state;
    char err[200];
    int mine = getpriority(PRIO_PROCESS, (id_t)tid_now());
    for (int incr = 0; incr <= 10; incr += 10) {
        e2ee_pool_t *p = e2ee_pool_new(1, incr, 0, err, sizeof err);
        assert_non_null(p);
        uv_loop_t loop;
        uv_loop_init(&loop);
        e2ee_port_t *port = e2ee_port_new(p, &loop);
        simple_t s;
        memset(&s, 0, sizeof s);
        s.job.work = prio_work;
        s.job.done = simple_done;
        seen_prio = -100;
        assert_int_equal(e2ee_port_submit(port, &s.job), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(s.done_calls, 1);
        int want = mine + incr > 19 ? 19 : mine + incr;
        assert_int_equal(seen_prio, want);
        assert_int_equal(getpriority(PRIO_PROCESS, (id_t)tid_now()), mine); /* the caller's is unchanged */
        e2ee_port_close(port);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        e2ee_pool_free(p);
    }
}

static void test_bad_thread_count(void **state)
{
    (void)state;
    char err[200] = "";
    assert_null(e2ee_pool_new(0, 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "1..64"));
    assert_null(e2ee_pool_new(65, 0, 0, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_per_owner),
        cmocka_unit_test(test_many_owners_two_loops),
        cmocka_unit_test(test_full_queue),
        cmocka_unit_test(test_abort_with_job_in_flight),
        cmocka_unit_test(test_shutdown_with_jobs_queued),
        cmocka_unit_test(test_lower_priority),
        cmocka_unit_test(test_bad_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
