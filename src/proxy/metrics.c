/* Prometheus text exposition of the per-worker counters and histograms, summed at read time,
 * and of the process (process_*). */
#include "proxy/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "attest/gpu.h"
#include "core/clock.h"
#include "http/upstream.h"
#include "proxy/app.h"
#include "proxy/config.h"

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

/* 100 µs .. 300 s: a signature (tens of µs) to a long generation (minutes). */
const uint64_t hist_bounds_ns[HIST_NB] = {
    100000,     250000,     500000,      1000000,     2500000,     5000000,     10000000,
    25000000,   50000000,   100000000,   250000000,   500000000,   1000000000,  2500000000,
    5000000000, 10000000000, 30000000000, 60000000000, 120000000000, 300000000000,
};
static const char *const HIST_LE[HIST_NB] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",   "0.5",     "1",      "2.5",   "5",      "10",    "30",   "60",    "120",  "300",
};

/* The rows of errors.h by name (lower-cased when written), for the error counters' labels. */
static const char *const ERROR_NAMES[APP_E_N] = {
#define APP_ERROR_NAME(name, st, ty, co, msg) [APP_E_##name] = #name,
    APP_ERROR_MAP(APP_ERROR_NAME)
#undef APP_ERROR_NAME
};

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

void metrics_hist_observe(hist_t *h, uint64_t ns)
{
    int i = 0;
    while (i < HIST_NB && ns > hist_bounds_ns[i])
        i++;
    M_ADD(h->bucket[i], 1);
    M_ADD(h->sum_ns, ns);
}

static void hist_add(hist_t *to, const hist_t *h)
{
    for (int i = 0; i <= HIST_NB; i++)
        to->bucket[i] += ld(&h->bucket[i]);
    to->sum_ns += ld(&h->sum_ns);
}

static uint64_t hist_count(const hist_t *h)
{
    uint64_t n = 0;
    for (int i = 0; i <= HIST_NB; i++)
        n += h->bucket[i];
    return n;
}

/* A label value as the text format wants it: \, " and newline escaped. */
static void label_value(buf_t *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append(o, "\\", 1), buf_append(o, v, 1);
        else if (*v == '\n')
            buf_puts(o, "\\n");
        else
            buf_append(o, v, 1);
    }
}

/* One histogram's series: name_bucket{labels,le=...} (cumulative), name_sum, name_count.
 * labels: `key="value"` pairs already escaped, or "" for none. */
static void hist_series(buf_t *o, const char *name, const char *labels, const hist_t *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < HIST_NB; i++) {
        cum += h->bucket[i];
        buf_printf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, HIST_LE[i],
                   (unsigned long long)cum);
    }
    cum += h->bucket[HIST_NB];
    buf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    buf_printf(o, labels[0] ? "%s_sum{%s} %.9f\n%s_count{%s} %llu\n" : "%s_sum%s %.9f\n%s_count%s %llu\n",
               name, labels, (double)h->sum_ns / 1e9, name, labels, (unsigned long long)cum);
}

static void family(buf_t *o, const char *name, const char *type, const char *help)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_engine_name(app_t *a, int i, const char *url)
{
    if (i < 0 || i >= METRICS_ENGINES_MAX)
        return;
    snprintf(a->mengines.url[i], sizeof a->mengines.url[i], "%s", url);
    if (a->mengines.n <= i)
        a->mengines.n = i + 1;
}

void metrics_engine_observe(app_worker_t *aw, int engine, uint64_t ns, int err)
{
    static const int kinds[] = {[UPS_E_CONNECT] = UPERR_CONNECT, [UPS_E_TIMEOUT] = UPERR_TIMEOUT,
                                [UPS_E_CLOSED] = UPERR_CLOSED, [UPS_E_PROTOCOL] = UPERR_PROTOCOL,
                                [UPS_E_NOMEM] = UPERR_PROTOCOL};
    if (engine < 0 || engine >= METRICS_ENGINES_MAX)
        return;
    metrics_hist_observe(&aw->m.engine[engine], ns);
    if (err > 0 && (size_t)err < sizeof kinds / sizeof kinds[0])
        M_ADD(aw->m.upstream_errors[engine][kinds[err]], 1);
}

void metrics_observe_ttfb(app_worker_t *aw, int route, uint64_t start_ns)
{
    metrics_hist_observe(&aw->m.ttfb[route], clock_mono_ns() - start_ns);
}

void metrics_observe_report(app_worker_t *aw, enum report_source src, uint64_t start_ns)
{
    metrics_hist_observe(&aw->m.report[src], clock_mono_ns() - start_ns);
}

void metrics_count_error(app_worker_t *aw, app_error_t e)
{
    M_ADD(aw->m.errors[e], 1);
}

/* A row's name lower-cased: the value of the error counters' labels. */
static const char *error_label(app_error_t e, char out[64])
{
    size_t i = 0;
    for (const char *p = ERROR_NAMES[e]; *p && i < 63; p++)
        out[i++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    out[i] = '\0';
    return out;
}

static int is_e2ee_row(app_error_t e) { return strncmp(ERROR_NAMES[e], "E2EE_", 5) == 0; }

/* process_*: this process's CPU, memory, descriptors and start (Linux /proc; what cannot be
 * read is left out). */
static void render_process(app_t *a, buf_t *o)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        family(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
        buf_printf(o, "process_cpu_seconds_total %.6f\n", cpu);
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long long vsz = 0, rss = 0;
        long page = sysconf(_SC_PAGESIZE);
        if (fscanf(f, "%llu %llu", &vsz, &rss) == 2 && page > 0) {
            family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
            buf_printf(o, "process_virtual_memory_bytes %llu\n", vsz * (unsigned long long)page);
            family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            buf_printf(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
        buf_printf(o, "process_open_fds %ld\n", n - 1); /* not the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            buf_puts(o, "process_max_fds +Inf\n");
        else
            buf_printf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    family(o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    buf_printf(o, "process_start_time_seconds %.3f\n", a->start_time);
}

void metrics_render(app_t *a, buf_t *o)
{
    static const char *cls[6] = {"aborted", "1xx", "2xx", "3xx", "4xx", "5xx"};
    static const char *uperr[UPERR_N] = {"connect", "timeout", "closed", "protocol"};
    static const char *src[REPORT_SOURCE_N] = {"cached", "fresh"};
    /* Summed over the workers; the sum is large (histograms per engine), so not on the stack. */
    metrics_t *s = calloc(1, sizeof *s);
    if (!s)
        return;
    for (int w = 0; w < a->nworkers; w++) {
        const metrics_t *m = &a->workers[w]->m;
        for (int r = 0; r < ROUTE_N; r++) {
            for (int k = 0; k < 6; k++)
                s->requests[r][k] += ld(&m->requests[r][k]);
            hist_add(&s->duration[r], &m->duration[r]);
            hist_add(&s->ttfb[r], &m->ttfb[r]);
        }
        for (int e = 0; e < a->mengines.n; e++) {
            hist_add(&s->engine[e], &m->engine[e]);
            for (int k = 0; k < UPERR_N; k++)
                s->upstream_errors[e][k] += ld(&m->upstream_errors[e][k]);
        }
        for (int k = 0; k < REPORT_SOURCE_N; k++)
            hist_add(&s->report[k], &m->report[k]);
        hist_add(&s->sign, &m->sign);
        for (int k = 0; k < APP_E_N; k++)
            s->errors[k] += ld(&m->errors[k]);
        for (int k = 0; k < HTTP_REJECT_N; k++)
            s->rejected[k] += ld(&m->rejected[k]);
        s->signatures_stored += ld(&m->signatures_stored);
        s->signature_collisions += ld(&m->signature_collisions);
        s->signatures_skipped += ld(&m->signatures_skipped);
        for (int k = 0; k < INBAND_M_N; k++)
            s->inband[k] += ld(&m->inband[k]);
        for (int k = 0; k < INBAND_R_N; k++)
            s->inband_unavailable[k] += ld(&m->inband_unavailable[k]);
        s->bytes_in += ld(&m->bytes_in);
        s->bytes_out += ld(&m->bytes_out);
        s->streams_active += ld(&m->streams_active);
        s->reports += ld(&m->reports);
    }
    buf_printf(o, "# HELP vllm_proxy_build_info The proxy's version (always 1).\n"
                  "# TYPE vllm_proxy_build_info gauge\n"
                  "vllm_proxy_build_info{version=\"");
    label_value(o, config_version());
    buf_puts(o, "\"} 1\n");
    buf_puts(o, "# HELP vllm_proxy_requests_total Requests handled, by route and status class.\n"
                "# TYPE vllm_proxy_requests_total counter\n");
    for (int r = 0; r < ROUTE_N; r++)
        for (int k = 0; k < 6; k++)
            if (s->requests[r][k])
                buf_printf(o, "vllm_proxy_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                           route_names[r], cls[k], (unsigned long long)s->requests[r][k]);
    char lab[64 + 3 * sizeof a->mengines.url[0]];
    family(o, "vllm_proxy_request_duration_seconds", "histogram",
           "Time from a request's start to the end of its answer (or the client leaving), by route.");
    for (int r = 0; r < ROUTE_N; r++)
        if (hist_count(&s->duration[r])) {
            snprintf(lab, sizeof lab, "route=\"%s\"", route_names[r]);
            hist_series(o, "vllm_proxy_request_duration_seconds", lab, &s->duration[r]);
        }
    family(o, "vllm_proxy_time_to_first_byte_seconds", "histogram",
           "Time from a request's start to the first byte of its answer's body (the whole answer "
           "for those the proxy writes at once), by route.");
    for (int r = 0; r < ROUTE_N; r++)
        if (hist_count(&s->ttfb[r])) {
            snprintf(lab, sizeof lab, "route=\"%s\"", route_names[r]);
            hist_series(o, "vllm_proxy_time_to_first_byte_seconds", lab, &s->ttfb[r]);
        }
    /* Engines, labelled by URL (escaped into lab through a small buffer). */
    buf_t el = BUF_INIT;
    family(o, "vllm_proxy_engine_request_duration_seconds", "histogram",
           "Engine exchanges, from the request sent to the answer complete or failed, by engine.");
    for (int e = 0; e < a->mengines.n; e++) {
        buf_reset(&el);
        buf_puts(&el, "engine=\"");
        label_value(&el, a->mengines.url[e]);
        buf_puts(&el, "\"");
        if (el.data)
            hist_series(o, "vllm_proxy_engine_request_duration_seconds", el.data, &s->engine[e]);
    }
    family(o, "vllm_proxy_upstream_errors_total", "counter",
           "Engine exchanges that failed, by engine and cause.");
    for (int e = 0; e < a->mengines.n; e++) {
        buf_reset(&el);
        label_value(&el, a->mengines.url[e]);
        for (int k = 0; k < UPERR_N && el.data; k++)
            buf_printf(o, "vllm_proxy_upstream_errors_total{engine=\"%s\",kind=\"%s\"} %llu\n",
                       el.data, uperr[k], (unsigned long long)s->upstream_errors[e][k]);
    }
    buf_free(&el);
    /* engine health, outstanding requests, queue: http/engines.c (engines_metrics) */
    family(o, "vllm_proxy_attestation_report_duration_seconds", "histogram",
           "Attestation reports served, from the request's start to the answer: from the cache on "
           "the loop (cached) or collected on the thread pool (fresh).");
    for (int k = 0; k < REPORT_SOURCE_N; k++) {
        snprintf(lab, sizeof lab, "source=\"%s\"", src[k]);
        hist_series(o, "vllm_proxy_attestation_report_duration_seconds", lab, &s->report[k]);
    }
    family(o, "vllm_proxy_signing_duration_seconds", "histogram",
           "Signing a completed answer with both keys and storing its record.");
    hist_series(o, "vllm_proxy_signing_duration_seconds", "", &s->sign);
    char name[64];
    family(o, "vllm_proxy_e2ee_failures_total", "counter",
           "E2EE requests refused and encrypted answers that failed, by error type.");
    for (int k = 0; k < APP_E_N; k++)
        if (is_e2ee_row((app_error_t)k))
            buf_printf(o, "vllm_proxy_e2ee_failures_total{type=\"%s\"} %llu\n",
                       error_label((app_error_t)k, name), (unsigned long long)s->errors[k]);
    family(o, "vllm_proxy_rate_limited_total", "counter",
           "Requests answered 429 by the proxy, by reason.");
    for (int k = 0; k < APP_E_N; k++)
        if (app_error_info((app_error_t)k)->status == 429)
            buf_printf(o, "vllm_proxy_rate_limited_total{reason=\"%s\"} %llu\n",
                       error_label((app_error_t)k, name), (unsigned long long)s->errors[k]);
    family(o, "vllm_proxy_error_responses_total", "counter",
           "Error answers the proxy wrote itself, by error and status (rows never written are left out).");
    for (int k = 0; k < APP_E_N; k++)
        if (s->errors[k])
            buf_printf(o, "vllm_proxy_error_responses_total{error=\"%s\",status=\"%d\"} %llu\n",
                       error_label((app_error_t)k, name), app_error_info((app_error_t)k)->status,
                       (unsigned long long)s->errors[k]);
    buf_puts(o, "# HELP vllm_proxy_requests_rejected_total Requests refused by the HTTP layer before "
                "routing (400 malformed or duplicate header, 408, 413, 431), by cause.\n"
                "# TYPE vllm_proxy_requests_rejected_total counter\n");
    for (int k = 0; k < HTTP_REJECT_N; k++)
        buf_printf(o, "vllm_proxy_requests_rejected_total{reason=\"%s\"} %llu\n", reject_names[k],
                   (unsigned long long)s->rejected[k]);
    family(o, "vllm_proxy_inband_signatures_total", "counter",
           "Signed answers that carried their signatures in band (docs/API.md), by mode.");
    for (int k = 0; k < INBAND_M_N; k++)
        buf_printf(o, "vllm_proxy_inband_signatures_total{mode=\"%s\"} %llu\n", inband_mode_names[k],
                   (unsigned long long)s->inband[k]);
    family(o, "vllm_proxy_inband_unavailable_total", "counter",
           "Answers to requests for in-band signatures that said unavailable, by reason.");
    for (int k = 0; k < INBAND_R_N; k++)
        buf_printf(o, "vllm_proxy_inband_unavailable_total{reason=\"%s\"} %llu\n",
                   inband_reason_names[k], (unsigned long long)s->inband_unavailable[k]);
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
               (unsigned long long)s->signatures_stored, (unsigned long long)s->signature_collisions,
               (unsigned long long)s->signatures_skipped, store_count(a->store),
               (unsigned long long)s->reports, (unsigned long long)s->streams_active,
               (unsigned long long)s->bytes_in,
               (unsigned long long)s->bytes_out, a->nworkers);
    free(s);
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
                  "vllm_proxy_gpu_evidence_nonce_failures_total %llu\n"
                  "# HELP vllm_proxy_gpu_evidence_failures_total GPU evidence collections that "
                  "failed (NVML error, CC off, timeout, busy, another nonce after every retry).\n"
                  "# TYPE vllm_proxy_gpu_evidence_failures_total counter\n"
                  "vllm_proxy_gpu_evidence_failures_total %llu\n",
               gpu_nonce_retries_total(), gpu_nonce_failures_total(), gpu_failures_total());
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
    render_process(a, o);
    if (a->engines) /* the engine pool: per-engine state (http/engines.h) */
        engines_metrics(a->engines, o);
}
