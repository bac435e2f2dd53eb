/* Per-worker counters. Each worker writes only its own metrics_t (plain stores, no atomic
 * read-modify-write); the exposition reads all workers with relaxed atomic loads. */
#ifndef VP_PROXY_METRICS_H
#define VP_PROXY_METRICS_H

#include <stdint.h>

#include "core/buf.h"
#include "http/server.h"

enum route {
    ROUTE_ROOT, ROUTE_VERSION, ROUTE_CHAT, ROUTE_COMPLETIONS, ROUTE_SIGNATURE, ROUTE_REPORT,
    ROUTE_MODELS, ROUTE_METRICS, ROUTE_PASSTHROUGH, ROUTE_INFERENCE, ROUTE_OTHER, ROUTE_N
};
extern const char *const route_names[ROUTE_N];

/* Label of each http_reject_t in vllm_proxy_requests_rejected_total and the log line. */
extern const char *const reject_names[HTTP_REJECT_N];

/* 429s the proxy answers, by the limit that refused (vllm_proxy_rate_limited_total{reason}). */
enum limited_reason { LIMITED_CLIENT_IP, LIMITED_TOKEN, LIMITED_N };
extern const char *const limited_names[LIMITED_N];

enum up_err_kind { UPERR_CONNECT, UPERR_TIMEOUT, UPERR_CLOSED, UPERR_PROTOCOL, UPERR_N };

typedef struct metrics {
    uint64_t requests[ROUTE_N][6];      /* by status class 1xx..5xx, [0] = aborted by client */
    uint64_t duration_us[ROUTE_N];
    uint64_t upstream_errors[UPERR_N];
    uint64_t rejected[HTTP_REJECT_N];   /* protocol rejections by the transport, by cause */
    uint64_t limited[LIMITED_N];        /* 429s by rate limit */
    uint64_t signatures_stored, signature_collisions, signatures_skipped;
    uint64_t bytes_in, bytes_out;
    uint64_t streams_active;
    uint64_t reports;
} metrics_t;

#define M_ADD(field, v) __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)
#define M_SUB(field, v) __atomic_store_n(&(field), (field) - (v), __ATOMIC_RELAXED)

struct app;
/* Appends the Prometheus exposition of all workers' metrics. */
void metrics_render(struct app *a, buf_t *out);

#endif
