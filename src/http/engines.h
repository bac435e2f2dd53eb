/* The engine pool: the engines one proxy spreads requests over (VLLM_BACKEND_URLS, or the one
 * VLLM_BASE_URL), their health, and the health checker.
 *
 * Threads: the set is built at start-up and shared by every worker. What changes at run time
 * is in atomics: whether an engine is up, its outstanding requests (all workers together), its
 * consecutive connection failures and its counters. Each worker's upstream pool
 * (http/upstream.h) picks an engine, counts the request in and out, and reports connection
 * failures (passive health). One checker (engines_checker_start) runs the active health checks
 * on one loop (worker 0's: vllm-proxy.c) and is the only writer of the check counters; any
 * worker may take an engine out (passive), only the checker puts one back. */
#ifndef VP_HTTP_ENGINES_H
#define VP_HTTP_ENGINES_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "http/server.h"
#include "http/upstream.h"

#define ENGINES_MAX 64
#define ENGINE_NAME_MAX 128

enum engine_err_kind { EK_CONNECT, EK_TIMEOUT, EK_CLOSED, EK_PROTOCOL, EK_N };

typedef struct engine_cfg {
    char health_path[256];          /* GET this on each engine ("/health": vLLM's) */
    unsigned check_interval_ms;     /* 0: no checks, and no engine is ever taken out */
    unsigned check_timeout_ms;
    unsigned down_after_checks;     /* N failed checks in a row take an engine out */
    unsigned down_after_conn_fails; /* M connection failures of real requests in a row */
    unsigned up_after_checks;       /* K good checks in a row put it back */
    unsigned max_inflight;          /* per engine, all workers; 0: no budget */
    unsigned queue_max;             /* requests waiting for a slot, process-wide */
    unsigned queue_timeout_ms;      /* how long one waits before its 429 */
} engine_cfg_t;

typedef struct engine {
    upstream_target_t t;
    char name[ENGINE_NAME_MAX]; /* the URL as configured: the metrics' engine label */
    int up;                     /* atomic */
    int outstanding;            /* atomic: requests on it now, all workers */
    unsigned conn_fails;        /* atomic: consecutive connection failures of real requests */
    /* atomic counters */
    uint64_t requests, errors[EK_N], failovers, checks_ok, checks_failed, downs;
    /* the checker's own (its loop only) */
    unsigned chk_fails, chk_oks;
    int chk_busy, chk_status;
} engine_t;

typedef struct engine_set {
    engine_t *e;
    int n;
    engine_cfg_t cfg;
    int queued;                              /* atomic: waiting for a slot, all workers */
    uint64_t rejected_busy, rejected_none;   /* atomic: 429 (budget), 503 (no engine up) */
    uint64_t queued_total;                   /* atomic: requests that had to wait */
} engine_set_t;

/* urls: comma-separated http://host:port or unix:/path (spaces around commas ignored); each
 * gets a copy of tmpl (timeouts, auth header) with its own address. Resolves host names
 * (blocking: start-up only). NULL with err. */
engine_set_t *engines_new(const char *urls, const upstream_target_t *tmpl, const engine_cfg_t *cfg,
                          char *err, size_t errlen);
void engines_free(engine_set_t *s);

/* Engines up now. */
int engines_healthy(const engine_set_t *s);
/* Seconds a client is told to wait (Retry-After) when no engine is up: one check interval,
 * at least 1. */
unsigned engines_retry_after(const engine_set_t *s);

/* Passive health, from a worker: a real request could (failed = 1) or could not connect. M
 * failures in a row take the engine out (logged at WARN with cause). */
void engines_conn_result(engine_set_t *s, int i, int failed, const char *cause);
/* Takes engine i out (1 when this call did), logging cause at WARN. */
int engines_mark_down(engine_set_t *s, int i, const char *cause);

/* Appends the per-engine Prometheus series (engine label). */
void engines_metrics(const engine_set_t *s, buf_t *o);

/* The health checker on loop (probes through its own upstream pool, keep-alive): every
 * check_interval_ms, GET health_path on each engine with check_timeout_ms; a 2xx answer is a
 * good check, anything else (error, timeout, other status) a failed one. The first round
 * runs at once. NULL when checks are off (interval 0) or out of memory. */
typedef struct engine_checker engine_checker_t;
engine_checker_t *engines_checker_start(engine_set_t *s, uv_loop_t *loop, worker_t *w);
/* Cancels probes in flight and closes its handles (they finish closing on the loop). */
void engines_checker_stop(engine_checker_t *c);

#endif
