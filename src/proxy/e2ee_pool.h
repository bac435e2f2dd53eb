/* The E2EE crypto threads: a process-wide pool that runs the expensive part of response
 * sealing (NEAR and ACI v2 seal every field with a fresh ephemeral key, one key generation and
 * ECDH per field: formats document §3.1, §7.2) off the workers' event loops, so that encrypted
 * answers never hold up plaintext traffic, health checks or reports on the same loop.
 *
 * Not libuv's shared thread pool (uv_queue_work): report collections and getaddrinfo use that
 * one, and a long sealing job must not delay them, nor they it.
 *
 * Shape: a bounded FIFO of jobs (one mutex and condition variable) served by N threads that
 * run at a lower priority than the loops (a nice increment, per thread); each worker loop has
 * a port (one uv_async_t and a locked completion list) through which its jobs are submitted
 * and their completions handed back, on that loop's thread, in the order they finished. A job
 * is two callbacks: work (on a crypto thread) and done (on the submitting loop).
 *
 * Threads: e2ee_pool_new and e2ee_pool_free on the main thread; e2ee_port_new, submit and
 * close on the port's loop thread (close also after that thread has exited, from the thread
 * that finishes its loop); work on a crypto thread; done on the port's loop thread, or inside
 * e2ee_port_close. e2ee_pool_stats from any thread.
 *
 * Ownership: a submitted job belongs to the pool until its done callback runs; the caller
 * keeps it (and whatever work reads) alive until then. Every accepted job gets exactly one
 * done call: after its work ran (ran = 1), or, when the pool was freed first, without it
 * (ran = 0). A port must outlive its jobs: close it only once none is outstanding, or after
 * e2ee_pool_free (which hands every job still queued back to its port, not run). */
#ifndef VP_PROXY_E2EE_POOL_H
#define VP_PROXY_E2EE_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct e2ee_pool e2ee_pool_t;
typedef struct e2ee_port e2ee_port_t;
typedef struct e2ee_job e2ee_job_t;

struct e2ee_job {
    void (*work)(e2ee_job_t *j); /* on a crypto thread */
    void (*done)(e2ee_job_t *j); /* on the port's loop thread */
    int ran;                     /* in done: 1 = work ran, 0 = cancelled at shutdown */
    /* private to the pool */
    e2ee_port_t *port;
    e2ee_job_t *next;
};

/* Jobs queued (not yet started) per process, beyond which a submission is refused. One relay
 * has at most one job in flight, so this bounds the encrypted answers waiting for a thread. */
#define E2EE_POOL_QUEUE_MAX 4096u

/* Starts threads (1..64) crypto threads, each lowering its own priority by nice_incr (0..19;
 * 0 leaves it; the result is capped at 19). queue_max: 0 = E2EE_POOL_QUEUE_MAX. NULL with
 * err when a thread cannot be started. */
e2ee_pool_t *e2ee_pool_new(unsigned threads, int nice_incr, unsigned queue_max, char *err,
                           size_t errlen);
/* Stops the threads (a job running is finished), hands every job still queued back to its
 * port with ran = 0, joins the threads and frees the pool. NULL is a no-op. */
void e2ee_pool_free(e2ee_pool_t *p);

/* A loop's port to the pool. NULL when out of memory. The port keeps its loop alive only
 * while jobs submitted through it are outstanding. */
e2ee_port_t *e2ee_port_new(e2ee_pool_t *p, uv_loop_t *loop);
/* Queues j (its work and done set). 0, or -1 when the queue is full or the pool is stopping:
 * then j is not the pool's and nothing will be called. */
int e2ee_port_submit(e2ee_port_t *port, e2ee_job_t *j);
/* Jobs submitted through this port and not yet handed back to done. */
unsigned e2ee_port_outstanding(const e2ee_port_t *port);
/* Runs done for every completion already handed back, then closes the port (its handle is
 * freed when the loop next runs). NULL is a no-op. */
void e2ee_port_close(e2ee_port_t *port);

typedef struct e2ee_pool_stats {
    unsigned threads;
    uint64_t queued;    /* jobs waiting for a thread now */
    uint64_t running;   /* jobs on a thread now */
    uint64_t completed; /* jobs whose work ran, since start */
    uint64_t rejected;  /* submissions refused (queue full), since start */
} e2ee_pool_stats_t;
void e2ee_pool_stats(const e2ee_pool_t *p, e2ee_pool_stats_t *s);

#endif
