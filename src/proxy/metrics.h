/* Per-worker counters and histograms, and the process-wide engine table. Each worker writes
 * only its own metrics_t (plain stores, no atomic read-modify-write, no lock); the exposition
 * reads all workers with relaxed atomic loads and sums them at scrape time.
 *
 * Threads: metrics_observe_* and M_ADD/M_SUB on a worker's own metrics_t from its loop thread;
 * metrics_render from any thread. */
#ifndef VP_PROXY_METRICS_H
#define VP_PROXY_METRICS_H

#include <stdint.h>

#include "core/buf.h"
#include "http/server.h"
#include "proxy/errors.h"
#include "proxy/inband.h"

enum route {
    ROUTE_ROOT, ROUTE_VERSION, ROUTE_CHAT, ROUTE_COMPLETIONS, ROUTE_SIGNATURE, ROUTE_REPORT,
    ROUTE_MODELS, ROUTE_METRICS, ROUTE_PASSTHROUGH, ROUTE_INFERENCE, ROUTE_OTHER, ROUTE_N
};
extern const char *const route_names[ROUTE_N];

/* Label of each http_reject_t in vllm_proxy_requests_rejected_total and the log line. */
extern const char *const reject_names[HTTP_REJECT_N];


enum up_err_kind { UPERR_CONNECT, UPERR_TIMEOUT, UPERR_CLOSED, UPERR_PROTOCOL, UPERR_N };

/* The latency histograms' buckets: HIST_NB finite upper bounds (100 µs .. 300 s, in
 * hist_bounds_ns) and +Inf. The counts are per bucket (not cumulative); the exposition
 * accumulates them, and _count is their sum, so +Inf always equals _count. */
#define HIST_NB 20
typedef struct hist {
    uint64_t bucket[HIST_NB + 1]; /* [HIST_NB]: above the last bound */
    uint64_t sum_ns;
} hist_t;
extern const uint64_t hist_bounds_ns[HIST_NB];

/* Engines named in the metrics (label engine="<url>"). */
#define METRICS_ENGINES_MAX 64

enum report_source { REPORT_CACHED, REPORT_FRESH, REPORT_SOURCE_N };

typedef struct metrics {
    uint64_t requests[ROUTE_N][6];      /* by status class 1xx..5xx, [0] = aborted by client */
    hist_t duration[ROUTE_N];           /* request start to the end of the answer (or abort) */
    hist_t ttfb[ROUTE_N];               /* request start to the first byte of the answer */
    hist_t engine[METRICS_ENGINES_MAX]; /* engine exchange: request sent to answer complete */
    uint64_t upstream_errors[METRICS_ENGINES_MAX][UPERR_N];
    hist_t report[REPORT_SOURCE_N];     /* attestation reports served, by source */
    hist_t sign;                        /* signing and storing one record */
    uint64_t errors[APP_E_N];           /* error answers written, by row of errors.h */
    uint64_t rejected[HTTP_REJECT_N];   /* protocol rejections by the transport, by cause */
    uint64_t signatures_stored, signature_collisions, signatures_skipped;
    uint64_t inband[INBAND_M_N];          /* answers whose signatures went in band, by mode */
    uint64_t inband_unavailable[INBAND_R_N]; /* answers that said why not, by reason */
    uint64_t bytes_in, bytes_out;
    uint64_t streams_active;
    uint64_t reports;
} metrics_t;

#define M_ADD(field, v) __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)
#define M_SUB(field, v) __atomic_store_n(&(field), (field) - (v), __ATOMIC_RELAXED)

/* The engines as the metrics name them (the exchange histogram's and errors' engine label):
 * set at start-up (metrics_engine_name), before any worker runs. Their health is the engine
 * pool's (http/engines.c, engines_metrics). */
typedef struct metrics_engines {
    int n;
    char url[METRICS_ENGINES_MAX][128];
} metrics_engines_t;

struct app;
struct app_worker;

/* Adds one observation of ns nanoseconds to h (its owner's thread only). */
void metrics_hist_observe(hist_t *h, uint64_t ns);

/* Names engine i (i < METRICS_ENGINES_MAX; the labels of every later scrape). */
void metrics_engine_name(struct app *a, int i, const char *url);

/* One engine exchange of engine i ended after ns: err = 0 or the UPS_E_* it ended with (a
 * cancelled exchange is not observed; i < 0, no engine picked, is not either). Counts the
 * error by kind. */
void metrics_engine_observe(struct app_worker *aw, int engine, uint64_t ns, int err);

/* The first byte of the answer to a request that started at start_ns is being written. */
void metrics_observe_ttfb(struct app_worker *aw, int route, uint64_t start_ns);

/* An attestation report was served, answering a request that started at start_ns. */
void metrics_observe_report(struct app_worker *aw, enum report_source src, uint64_t start_ns);

/* The proxy answered (or cut) a request with the error of row e. */
void metrics_count_error(struct app_worker *aw, app_error_t e);

/* Appends the Prometheus exposition of all workers' metrics and the process's. */
void metrics_render(struct app *a, buf_t *out);

#endif
