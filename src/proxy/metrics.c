/* Prometheus text exposition of the per-worker counters, summed at read time. */
#include "proxy/metrics.h"

#include "attest/gpu.h"
#include "proxy/app.h"

const char *const route_names[ROUTE_N] = {
    "root", "version", "chat_completions", "completions", "signature", "attestation_report",
    "models", "metrics", "passthrough", "inference", "other",
};

const char *const reject_names[HTTP_REJECT_N] = {
    [HTTP_REJECT_TIMEOUT] = "timeout",
    [HTTP_REJECT_BODY_TOO_LARGE] = "body_too_large",
    [HTTP_REJECT_HEAD_TOO_LARGE] = "head_too_large",
    [HTTP_REJECT_DUPLICATE_HEADER] = "duplicate_header",
    [HTTP_REJECT_MALFORMED] = "malformed",
};

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

void metrics_render(app_t *a, buf_t *o)
{
    static const char *cls[6] = {"aborted", "1xx", "2xx", "3xx", "4xx", "5xx"};
    static const char *uperr[UPERR_N] = {"connect", "timeout", "closed", "protocol"};
    metrics_t s = {0};
    for (int w = 0; w < a->nworkers; w++) {
        const metrics_t *m = &a->workers[w]->m;
        for (int r = 0; r < ROUTE_N; r++) {
            for (int k = 0; k < 6; k++)
                s.requests[r][k] += ld(&m->requests[r][k]);
            s.duration_us[r] += ld(&m->duration_us[r]);
        }
        for (int k = 0; k < UPERR_N; k++)
            s.upstream_errors[k] += ld(&m->upstream_errors[k]);
        for (int k = 0; k < HTTP_REJECT_N; k++)
            s.rejected[k] += ld(&m->rejected[k]);
        s.signatures_stored += ld(&m->signatures_stored);
        s.signature_collisions += ld(&m->signature_collisions);
        s.signatures_skipped += ld(&m->signatures_skipped);
        s.bytes_in += ld(&m->bytes_in);
        s.bytes_out += ld(&m->bytes_out);
        s.streams_active += ld(&m->streams_active);
        s.reports += ld(&m->reports);
    }
    buf_puts(o, "# HELP vllm_proxy_requests_total Requests handled, by route and status class.\n"
                "# TYPE vllm_proxy_requests_total counter\n");
    for (int r = 0; r < ROUTE_N; r++)
        for (int k = 0; k < 6; k++)
            if (s.requests[r][k])
                buf_printf(o, "vllm_proxy_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                           route_names[r], cls[k], (unsigned long long)s.requests[r][k]);
    buf_puts(o, "# HELP vllm_proxy_request_duration_seconds_sum Time spent on requests, by route.\n"
                "# TYPE vllm_proxy_request_duration_seconds_sum counter\n");
    for (int r = 0; r < ROUTE_N; r++)
        if (s.duration_us[r])
            buf_printf(o, "vllm_proxy_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
                       route_names[r], (double)s.duration_us[r] / 1e6);
    buf_puts(o, "# HELP vllm_proxy_upstream_errors_total Engine exchanges that failed, by cause.\n"
                "# TYPE vllm_proxy_upstream_errors_total counter\n");
    for (int k = 0; k < UPERR_N; k++)
        buf_printf(o, "vllm_proxy_upstream_errors_total{kind=\"%s\"} %llu\n", uperr[k],
                   (unsigned long long)s.upstream_errors[k]);
    buf_puts(o, "# HELP vllm_proxy_requests_rejected_total Requests refused by the HTTP layer before "
                "routing (400 malformed or duplicate header, 408, 413, 431), by cause.\n"
                "# TYPE vllm_proxy_requests_rejected_total counter\n");
    for (int k = 0; k < HTTP_REJECT_N; k++)
        buf_printf(o, "vllm_proxy_requests_rejected_total{reason=\"%s\"} %llu\n", reject_names[k],
                   (unsigned long long)s.rejected[k]);
    buf_printf(o,
               "# HELP vllm_proxy_signatures_stored_total Completed answers signed and stored.\n"
               "# TYPE vllm_proxy_signatures_stored_total counter\n"
               "vllm_proxy_signatures_stored_total %llu\n"
               "# HELP vllm_proxy_signature_collisions_total Records not stored: the id already had one.\n"
               "# TYPE vllm_proxy_signature_collisions_total counter\n"
               "vllm_proxy_signature_collisions_total %llu\n"
               "# HELP vllm_proxy_signatures_skipped_total Answers not signed (incomplete, no id, upstream error).\n"
               "# TYPE vllm_proxy_signatures_skipped_total counter\n"
               "vllm_proxy_signatures_skipped_total %llu\n"
               "# HELP vllm_proxy_signature_store_entries Records in the signature store.\n"
               "# TYPE vllm_proxy_signature_store_entries gauge\n"
               "vllm_proxy_signature_store_entries %zu\n"
               "# HELP vllm_proxy_attestation_reports_total Attestation reports served.\n"
               "# TYPE vllm_proxy_attestation_reports_total counter\n"
               "vllm_proxy_attestation_reports_total %llu\n"
               "# HELP vllm_proxy_streams_active Engine responses being relayed now.\n"
               "# TYPE vllm_proxy_streams_active gauge\n"
               "vllm_proxy_streams_active %llu\n"
               "# HELP vllm_proxy_request_bytes_total Request body bytes received.\n"
               "# TYPE vllm_proxy_request_bytes_total counter\n"
               "vllm_proxy_request_bytes_total %llu\n"
               "# HELP vllm_proxy_response_bytes_total Response body bytes sent.\n"
               "# TYPE vllm_proxy_response_bytes_total counter\n"
               "vllm_proxy_response_bytes_total %llu\n"
               "# HELP vllm_proxy_workers Event-loop threads.\n"
               "# TYPE vllm_proxy_workers gauge\n"
               "vllm_proxy_workers %d\n",
               (unsigned long long)s.signatures_stored, (unsigned long long)s.signature_collisions,
               (unsigned long long)s.signatures_skipped, store_count(a->store),
               (unsigned long long)s.reports, (unsigned long long)s.streams_active,
               (unsigned long long)s.bytes_in, (unsigned long long)s.bytes_out, a->nworkers);
    /* The E2EE crypto threads (process-wide; proxy/e2ee_pool.h). */
    e2ee_pool_stats_t ps;
    e2ee_pool_stats(a->e2ee_pool, &ps);
    buf_printf(o, "# HELP vllm_proxy_e2ee_threads Crypto threads sealing NEAR and ACI v2 answers.\n"
                  "# TYPE vllm_proxy_e2ee_threads gauge\n"
                  "vllm_proxy_e2ee_threads %u\n"
                  "# HELP vllm_proxy_e2ee_queue_depth Sealing jobs waiting for a crypto thread.\n"
                  "# TYPE vllm_proxy_e2ee_queue_depth gauge\n"
                  "vllm_proxy_e2ee_queue_depth %llu\n"
                  "# HELP vllm_proxy_e2ee_jobs_total Sealing jobs run on the crypto threads.\n"
                  "# TYPE vllm_proxy_e2ee_jobs_total counter\n"
                  "vllm_proxy_e2ee_jobs_total %llu\n"
                  "# HELP vllm_proxy_e2ee_jobs_rejected_total Sealing jobs refused, queue full (503).\n"
                  "# TYPE vllm_proxy_e2ee_jobs_rejected_total counter\n"
                  "vllm_proxy_e2ee_jobs_rejected_total %llu\n",
               ps.threads, (unsigned long long)ps.queued, (unsigned long long)ps.completed,
               (unsigned long long)ps.rejected);
    /* Accept-time counters of the http server (process-wide, not per worker). */
    buf_printf(o, "# HELP vllm_proxy_connections_open Client connections open now.\n"
                  "# TYPE vllm_proxy_connections_open gauge\n"
                  "vllm_proxy_connections_open %u\n"
                  "# HELP vllm_proxy_connections_refused_total Connections answered 503 and closed at accept.\n"
                  "# TYPE vllm_proxy_connections_refused_total counter\n"
                  "vllm_proxy_connections_refused_total{reason=\"file_descriptors\"} %llu\n"
                  "vllm_proxy_connections_refused_total{reason=\"max_connections\"} %llu\n",
               http_conns_open(), (unsigned long long)http_conns_refused(HTTP_REFUSED_FDS),
               (unsigned long long)http_conns_refused(HTTP_REFUSED_CAP));
    /* GPU evidence (process-wide, attest/gpu.h). */
    buf_printf(o, "# HELP vllm_proxy_gpu_evidence_nonce_retries_total GPU evidence collections "
                  "repeated because a GPU report carried another request's nonce.\n"
                  "# TYPE vllm_proxy_gpu_evidence_nonce_retries_total counter\n"
                  "vllm_proxy_gpu_evidence_nonce_retries_total %llu\n"
                  "# HELP vllm_proxy_gpu_evidence_nonce_failures_total GPU evidence collections "
                  "that still carried another nonce after every retry (answered 503).\n"
                  "# TYPE vllm_proxy_gpu_evidence_nonce_failures_total counter\n"
                  "vllm_proxy_gpu_evidence_nonce_failures_total %llu\n",
               gpu_nonce_retries_total(), gpu_nonce_failures_total());
    unsigned long long reloads = 0, failures = 0;
    if (a->attest)
        attest_service_tls_counts(a->attest, &reloads, &failures);
    buf_printf(o, "# HELP vllm_proxy_tls_cert_reloads_total Times a changed TLS_CERT_PATH gave "
                  "reports a new key (cached TLS-bound reports dropped).\n"
                  "# TYPE vllm_proxy_tls_cert_reloads_total counter\n"
                  "vllm_proxy_tls_cert_reloads_total %llu\n"
                  "# HELP vllm_proxy_tls_cert_errors_total Looks at a changed TLS_CERT_PATH that "
                  "could not be opened or parsed (the last good key stays).\n"
                  "# TYPE vllm_proxy_tls_cert_errors_total counter\n"
                  "vllm_proxy_tls_cert_errors_total %llu\n",
               reloads, failures);
    if (a->engines) /* the engine pool: per-engine state (http/engines.h) */
        engines_metrics(a->engines, o);
}
