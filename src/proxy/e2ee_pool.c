/* The E2EE crypto threads (proxy/e2ee_pool.h). */
#include "proxy/e2ee_pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"

#define MAX_THREADS 64

struct e2ee_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    e2ee_job_t *head, *tail; /* queued, FIFO */
    unsigned queue_max;
    int stopping;
    int nice_incr;
    unsigned nthreads;
    pthread_t threads[MAX_THREADS];
    /* read without the lock by e2ee_pool_stats (relaxed atomics, written under mu) */
    uint64_t queued, running, completed, rejected;
};

struct e2ee_port {
    e2ee_pool_t *pool;
    uv_async_t async;
    pthread_mutex_t mu;
    e2ee_job_t *head, *tail; /* completed, in the order they finished */
    unsigned outstanding;    /* loop thread only */
};

static void stat_add(uint64_t *v, int64_t d)
{
    __atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + (uint64_t)d, __ATOMIC_RELAXED);
}

/* A completed (or cancelled) job goes back to its port; the port's loop is woken. */
static void port_deliver(e2ee_job_t *j)
{
    e2ee_port_t *port = j->port;
    j->next = NULL;
    pthread_mutex_lock(&port->mu);
    if (port->tail)
        port->tail->next = j;
    else
        port->head = j;
    port->tail = j;
    pthread_mutex_unlock(&port->mu);
    uv_async_send(&port->async);
}

/* Lowers this thread's own priority: Linux applies PRIO_PROCESS with a thread id to that
 * thread alone. Raising it back would need privileges; lowering never does. */
static void lower_priority(int incr)
{
    if (incr <= 0)
        return;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (cur == -1 && errno != 0)
        cur = 0;
    int want = cur + incr > 19 ? 19 : cur + incr;
    if (setpriority(PRIO_PROCESS, (id_t)tid, want) != 0)
        LOG_DEBUG("e2ee pool: setpriority(%d): %s", want, strerror(errno));
}

static void *pool_main(void *arg)
{
    e2ee_pool_t *p = arg;
    lower_priority(p->nice_incr);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping)
            break; /* what is still queued is handed back, not run, by e2ee_pool_free */
        e2ee_job_t *j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        stat_add(&p->queued, -1);
        stat_add(&p->running, 1);
        pthread_mutex_unlock(&p->mu);
        j->work(j);
        j->ran = 1;
        port_deliver(j);
        pthread_mutex_lock(&p->mu);
        stat_add(&p->running, -1);
        stat_add(&p->completed, 1);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

e2ee_pool_t *e2ee_pool_new(unsigned threads, int nice_incr, unsigned queue_max, char *err,
                           size_t errlen)
{
    if (threads < 1 || threads > MAX_THREADS) {
        snprintf(err, errlen, "E2EE crypto threads: %u (1..%d)", threads, MAX_THREADS);
        return NULL;
    }
    e2ee_pool_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->queue_max = queue_max ? queue_max : E2EE_POOL_QUEUE_MAX;
    p->nice_incr = nice_incr;
    /* The crypto threads take no signals: the main thread handles them (libuv's signal pipe). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (; p->nthreads < threads; p->nthreads++)
        if ((rc = pthread_create(&p->threads[p->nthreads], NULL, pool_main, p)) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start an E2EE crypto thread: %s", strerror(rc));
        e2ee_pool_free(p);
        return NULL;
    }
    return p;
}

void e2ee_pool_free(e2ee_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* No thread is left: the queue is ours. Every job still in it goes back, not run. */
    while (p->head) {
        e2ee_job_t *j = p->head;
        p->head = j->next;
        j->ran = 0;
        stat_add(&p->queued, -1);
        port_deliver(j);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void e2ee_pool_stats(const e2ee_pool_t *p, e2ee_pool_stats_t *s)
{
    memset(s, 0, sizeof *s);
    if (!p)
        return;
    s->threads = p->nthreads;
    s->queued = __atomic_load_n(&p->queued, __ATOMIC_RELAXED);
    s->running = __atomic_load_n(&p->running, __ATOMIC_RELAXED);
    s->completed = __atomic_load_n(&p->completed, __ATOMIC_RELAXED);
    s->rejected = __atomic_load_n(&p->rejected, __ATOMIC_RELAXED);
}

/* ---- ports ---- */

/* Runs done for every completion handed back so far (in the order they finished). */
static void port_drain(e2ee_port_t *port)
{
    pthread_mutex_lock(&port->mu);
    e2ee_job_t *j = port->head;
    port->head = port->tail = NULL;
    pthread_mutex_unlock(&port->mu);
    while (j) {
        e2ee_job_t *next = j->next;
        port->outstanding--;
        j->next = NULL;
        j->done(j); /* may submit the next job of the same owner */
        j = next;
    }
    if (port->outstanding == 0)
        uv_unref((uv_handle_t *)&port->async);
}

static void on_port_async(uv_async_t *a) { port_drain(a->data); }

e2ee_port_t *e2ee_port_new(e2ee_pool_t *p, uv_loop_t *loop)
{
    e2ee_port_t *port = calloc(1, sizeof *port);
    if (!port)
        return NULL;
    port->pool = p;
    pthread_mutex_init(&port->mu, NULL);
    if (uv_async_init(loop, &port->async, on_port_async) != 0) {
        pthread_mutex_destroy(&port->mu);
        free(port);
        return NULL;
    }
    port->async.data = port;
    uv_unref((uv_handle_t *)&port->async);
    return port;
}

int e2ee_port_submit(e2ee_port_t *port, e2ee_job_t *j)
{
    e2ee_pool_t *p = port->pool;
    j->port = port;
    j->ran = 0;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping || __atomic_load_n(&p->queued, __ATOMIC_RELAXED) >= p->queue_max) {
        stat_add(&p->rejected, 1);
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    stat_add(&p->queued, 1);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (port->outstanding++ == 0)
        uv_ref((uv_handle_t *)&port->async);
    return 0;
}

unsigned e2ee_port_outstanding(const e2ee_port_t *port) { return port->outstanding; }

static void on_port_closed(uv_handle_t *h)
{
    e2ee_port_t *port = h->data;
    pthread_mutex_destroy(&port->mu);
    free(port);
}

void e2ee_port_close(e2ee_port_t *port)
{
    if (!port)
        return;
    port_drain(port);
    if (port->outstanding)
        LOG_ERROR("e2ee pool: port closed with %u job(s) outstanding", port->outstanding);
    uv_close((uv_handle_t *)&port->async, on_port_closed);
}
