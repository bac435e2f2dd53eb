/* Unit tests for metrics_render: counters and histograms summed across workers, zero-valued
 * series as the exposition intends, HELP/TYPE lines, well-formed Prometheus text, histogram
 * buckets against an independent count, engine labels, error counters, process_*. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "at.h"
#include "proxy/app.h"
#include "http/upstream.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "store/store.h"

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define ASSERT_LINE(text, line)                                                            \
    do {                                                                                   \
        if (!has_line((text), (line)))                                                     \
            fail_msg("missing line: %s\n--- exposition ---\n%s", (line), (text));          \
    } while (0)
#define ASSERT_NO_PREFIX(text, prefix)                                                     \
    do {                                                                                   \
        if (strstr((text), "\n" prefix))                                                   \
            fail_msg("unexpected series: %s", prefix);                                     \
    } while (0)

static int is_name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Checks the Prometheus text format line by line: comments are "# HELP name text" or
 * "# TYPE name counter|gauge" (TYPE after HELP, once per family, before its samples); sample
 * lines are name{label="value",...} value, with the name belonging to the current family.
 * Returns the number of samples. */
static int check_exposition_at(AT_PARAMS, const char *text)
{
    char family[128] = "";
    int samples = 0, ntypes = 0, is_hist = 0;
    const char *p = text;
    at_assert_true(*text);
    at_assert_int_equal(text[strlen(text) - 1], '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        at_assert_non_null(nl);
        char line[512];
        size_t n = (size_t)(nl - p);
        at_assert_true(n > 0 && n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;
        if (!strncmp(line, "# HELP ", 7)) {
            const char *name = line + 7;
            size_t nl2 = 0;
            while (is_name_char(name[nl2], nl2 == 0))
                nl2++;
            at_assert_true(nl2 > 0 && nl2 < sizeof family);
            at_assert_int_equal(name[nl2], ' ');
            at_assert_true(strlen(name + nl2 + 1) > 0);
            if (!strncmp(family, name, nl2) && family[nl2] == '\0')
                at_fail_msg("family %s described twice", family);
            memcpy(family, name, nl2);
            family[nl2] = '\0';
            /* the next line is its TYPE */
            char want[200];
            snprintf(want, sizeof want, "# TYPE %s ", family);
            at_assert_int_equal(strncmp(p, want, strlen(want)), 0);
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char want[200];
            snprintf(want, sizeof want, "# TYPE %s ", family);
            at_assert_int_equal(strncmp(line, want, strlen(want)), 0);
            const char *t = line + strlen(want);
            at_assert_true(!strcmp(t, "counter") || !strcmp(t, "gauge") || !strcmp(t, "histogram"));
            is_hist = !strcmp(t, "histogram");
            /* the text format's conventions: counters end in _total, no lone _sum */
            if (!strcmp(t, "counter"))
                at_assert_true(strlen(family) > 6 && !strcmp(family + strlen(family) - 6, "_total"));
            at_assert_true(strlen(family) < 4 || strcmp(family + strlen(family) - 4, "_sum") != 0);
            ntypes++;
            continue;
        }
        at_assert_int_not_equal(line[0], '#');
        /* name */
        size_t i = 0;
        while (is_name_char(line[i], i == 0))
            i++;
        at_assert_true(i > 0);
        size_t fl = strlen(family);
        int in_family = !strncmp(line, family, fl) &&
                        (i == fl || (is_hist && ((i == fl + 7 && !strncmp(line + fl, "_bucket", 7)) ||
                                                 (i == fl + 4 && !strncmp(line + fl, "_sum", 4)) ||
                                                 (i == fl + 6 && !strncmp(line + fl, "_count", 6)))));
        if (!in_family || (is_hist && i == fl))
            at_fail_msg("sample '%s' outside its family '%s'", line, family);
        /* labels */
        if (line[i] == '{') {
            i++;
            for (;;) {
                size_t s = i;
                while (is_name_char(line[i], i == s))
                    i++;
                at_assert_true(i > s);
                at_assert_int_equal(line[i], '=');
                at_assert_int_equal(line[i + 1], '"');
                i += 2;
                while (line[i] && line[i] != '"') {
                    if (line[i] == '\\')
                        i++;
                    at_assert_true(line[i] != '\0');
                    i++;
                }
                at_assert_int_equal(line[i], '"');
                i++;
                if (line[i] == ',') {
                    i++;
                    continue;
                }
                at_assert_int_equal(line[i], '}');
                i++;
                break;
            }
        }
        at_assert_int_equal(line[i], ' ');
        i++;
        char *end = NULL;
        double v = strtod(line + i, &end); /* accepts +Inf (process_max_fds may be) */
        at_assert_true(end != line + i && *end == '\0');
        at_assert_true(v >= 0);
        samples++;
    }
    at_assert_true(ntypes > 0);
    return samples;
}
#define check_exposition(...) check_exposition_at(AT_HERE, __VA_ARGS__)

typedef struct {
    app_t app;
    app_worker_t w[2];
    app_worker_t *wp[2];
} fixture_t;

static void fixture_init(fixture_t *f, store_t *s)
{
    memset(f, 0, sizeof *f);
    for (int i = 0; i < 2; i++) {
        f->w[i].app = &f->app;
        f->wp[i] = &f->w[i];
    }
    f->app.workers = f->wp;
    f->app.nworkers = 2;
    f->app.store = s;
}

static void test_summed_across_workers(void **state)
{
    (void)state;
    store_t *s = store_new(100, 60);
    assert_non_null(s);
    assert_int_equal(store_put(s, "m:chat:a", 8, "{}", 2, 0), STORE_OK);
    assert_int_equal(store_put(s, "m:chat:b", 8, "{}", 2, 0), STORE_OK);
    assert_int_equal(store_put(s, "m:chat:c", 8, "{}", 2, 0), STORE_OK);
    fixture_t f;
    fixture_init(&f, s);
    metrics_t *a = &f.w[0].m, *b = &f.w[1].m;
    a->requests[ROUTE_CHAT][2] = 10; /* 2xx */
    b->requests[ROUTE_CHAT][2] = 5;
    a->requests[ROUTE_CHAT][0] = 1;  /* aborted */
    b->requests[ROUTE_CHAT][5] = 2;  /* 5xx only on worker 1 */
    a->requests[ROUTE_METRICS][2] = 7;
    b->requests[ROUTE_REPORT][4] = 3;
    a->requests[ROUTE_OTHER][1] = 4;
    a->requests[ROUTE_ROOT][3] = 1;
    metrics_hist_observe(&a->duration[ROUTE_CHAT], 1500000000);
    metrics_hist_observe(&b->duration[ROUTE_CHAT], 250000000); /* on a bound: le is inclusive */
    metrics_hist_observe(&b->duration[ROUTE_REPORT], 7000);
    metrics_engine_name(&f.app, 0, "http://e:8000");
    a->upstream_errors[0][UPERR_CONNECT] = 2;
    b->upstream_errors[0][UPERR_CONNECT] = 1;
    b->upstream_errors[0][UPERR_PROTOCOL] = 4;
    a->rejected[HTTP_REJECT_MALFORMED] = 5;
    b->rejected[HTTP_REJECT_MALFORMED] = 1;
    b->rejected[HTTP_REJECT_TIMEOUT] = 2;
    a->errors[APP_E_RATE_LIMITED_IP] = 4;
    b->errors[APP_E_RATE_LIMITED_IP] = 5;
    b->errors[APP_E_RATE_LIMITED_TOKEN] = 1;
    a->signatures_stored = 11;
    b->signatures_stored = 4;
    b->signature_collisions = 2;
    a->signatures_skipped = 1;
    b->signatures_skipped = 1;
    a->bytes_in = 1000;
    b->bytes_in = 24;
    a->bytes_out = UINT64_C(5000000000);
    b->bytes_out = 1;
    a->streams_active = 2;
    b->streams_active = 1;
    a->reports = 6;
    b->reports = 0;

    char perr[200];
    f.app.e2ee_pool = e2ee_pool_new(3, 0, 0, perr, sizeof perr);
    assert_non_null(f.app.e2ee_pool);

    buf_t o = BUF_INIT;
    buf_puts(&o, "prefix\n"); /* appends, does not reset */
    metrics_render(&f.app, &o);
    e2ee_pool_free(f.app.e2ee_pool);
    f.app.e2ee_pool = NULL;
    assert_int_equal(strncmp(o.data, "prefix\n", 7), 0);
    const char *t = o.data + 7;
    int samples = check_exposition(t);

    ASSERT_LINE(t, "# HELP vllm_proxy_requests_total Requests handled, by route and status class.");
    ASSERT_LINE(t, "# TYPE vllm_proxy_requests_total counter");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"chat_completions\",status=\"2xx\"} 15");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"chat_completions\",status=\"aborted\"} 1");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"chat_completions\",status=\"5xx\"} 2");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"metrics\",status=\"2xx\"} 7");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"attestation_report\",status=\"4xx\"} 3");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"other\",status=\"1xx\"} 4");
    ASSERT_LINE(t, "vllm_proxy_requests_total{route=\"root\",status=\"3xx\"} 1");
    /* zero request series are omitted */
    assert_null(strstr(t, "route=\"chat_completions\",status=\"4xx\""));
    assert_null(strstr(t, "route=\"models\""));
    assert_null(strstr(t, "route=\"version\""));
    size_t nreq = 0;
    for (const char *p = t; (p = strstr(p, "\nvllm_proxy_requests_total{")) != NULL; p++)
        nreq++;
    assert_int_equal(nreq, 7);

    /* the request duration is a histogram (it was a lone _sum typed counter) */
    ASSERT_LINE(t, "# TYPE vllm_proxy_request_duration_seconds histogram");
    ASSERT_NO_PREFIX(t, "# TYPE vllm_proxy_request_duration_seconds_sum");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_sum{route=\"chat_completions\"} 1.750000000");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_count{route=\"chat_completions\"} 2");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"chat_completions\",le=\"0.1\"} 0");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"chat_completions\",le=\"0.25\"} 1");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"chat_completions\",le=\"1\"} 1");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"chat_completions\",le=\"2.5\"} 2");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"chat_completions\",le=\"+Inf\"} 2");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_sum{route=\"attestation_report\"} 0.000007000");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_bucket{route=\"attestation_report\",le=\"0.0001\"} 1");
    assert_null(strstr(t, "vllm_proxy_request_duration_seconds_count{route=\"metrics\"}"));

    /* upstream errors: every kind present, zero included, by engine */
    ASSERT_LINE(t, "# TYPE vllm_proxy_upstream_errors_total counter");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{engine=\"http://e:8000\",kind=\"connect\"} 3");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{engine=\"http://e:8000\",kind=\"timeout\"} 0");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{engine=\"http://e:8000\",kind=\"closed\"} 0");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{engine=\"http://e:8000\",kind=\"protocol\"} 4");
    ASSERT_LINE(t, "vllm_proxy_engine_request_duration_seconds_count{engine=\"http://e:8000\"} 0");
    /* engine health is the pool's (http/engines.c, engines_metrics; none in this fixture) */
    ASSERT_NO_PREFIX(t, "vllm_proxy_engine_healthy");

    /* protocol rejections: every cause present, zero included */
    ASSERT_LINE(t, "# TYPE vllm_proxy_requests_rejected_total counter");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"malformed\"} 6");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"timeout\"} 2");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"body_too_large\"} 0");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"head_too_large\"} 0");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"duplicate_header\"} 0");

    /* 429s by rate limit: both reasons, summed over the workers */
    ASSERT_LINE(t, "# TYPE vllm_proxy_rate_limited_total counter");
    ASSERT_LINE(t, "vllm_proxy_rate_limited_total{reason=\"rate_limited_ip\"} 9");
    ASSERT_LINE(t, "vllm_proxy_rate_limited_total{reason=\"rate_limited_token\"} 1");

    ASSERT_LINE(t, "vllm_proxy_signatures_stored_total 15");
    ASSERT_LINE(t, "vllm_proxy_signature_collisions_total 2");
    ASSERT_LINE(t, "vllm_proxy_signatures_skipped_total 2");
    ASSERT_LINE(t, "# TYPE vllm_proxy_signature_store_entries gauge");
    ASSERT_LINE(t, "vllm_proxy_signature_store_entries 3");
    ASSERT_LINE(t, "vllm_proxy_attestation_reports_total 6");
    ASSERT_LINE(t, "# TYPE vllm_proxy_streams_active gauge");
    ASSERT_LINE(t, "vllm_proxy_streams_active 3");
    ASSERT_LINE(t, "vllm_proxy_request_bytes_total 1024");
    ASSERT_LINE(t, "vllm_proxy_response_bytes_total 5000000001"); /* beyond 32 bits */
    ASSERT_LINE(t, "# TYPE vllm_proxy_workers gauge");
    ASSERT_LINE(t, "vllm_proxy_workers 2");
    /* the http server's accept counters (process-wide; none in this process) */
    ASSERT_LINE(t, "# TYPE vllm_proxy_connections_open gauge");
    ASSERT_LINE(t, "vllm_proxy_connections_open 0");
    ASSERT_LINE(t, "# TYPE vllm_proxy_connections_refused_total counter");
    ASSERT_LINE(t, "vllm_proxy_connections_refused_total{reason=\"file_descriptors\"} 0");
    ASSERT_LINE(t, "vllm_proxy_connections_refused_total{reason=\"max_connections\"} 0");
    /* the E2EE crypto threads (process-wide): the fixture's pool, nothing run */
    ASSERT_LINE(t, "# TYPE vllm_proxy_e2ee_queue_depth gauge");
    ASSERT_LINE(t, "vllm_proxy_e2ee_threads 3");
    ASSERT_LINE(t, "vllm_proxy_e2ee_queue_depth 0");
    ASSERT_LINE(t, "# TYPE vllm_proxy_e2ee_jobs_total counter");
    ASSERT_LINE(t, "vllm_proxy_e2ee_jobs_total 0");
    /* GPU evidence nonce retries (process-wide; no GPU source in this process) */
    ASSERT_LINE(t, "# TYPE vllm_proxy_gpu_evidence_nonce_retries_total counter");
    ASSERT_LINE(t, "vllm_proxy_gpu_evidence_nonce_retries_total 0");
    ASSERT_LINE(t, "# TYPE vllm_proxy_gpu_evidence_nonce_failures_total counter");
    ASSERT_LINE(t, "vllm_proxy_gpu_evidence_nonce_failures_total 0");
    ASSERT_LINE(t, "# TYPE vllm_proxy_tls_cert_reloads_total counter");
    ASSERT_LINE(t, "vllm_proxy_tls_cert_reloads_total 0");
    ASSERT_LINE(t, "vllm_proxy_tls_cert_errors_total 0");
    ASSERT_LINE(t, "vllm_proxy_gpu_evidence_failures_total 0");
    /* 2 routes' duration histograms: HIST_NB + 1 buckets, _sum and _count each */
    size_t nb = 0;
    for (const char *p = t; (p = strstr(p, "\nvllm_proxy_request_duration_seconds_bucket{")) != NULL; p++)
        nb++;
    assert_int_equal(nb, 2 * (HIST_NB + 1));
    assert_true(samples > 100);
    buf_free(&o);
    store_free(s);
}

static void test_all_zero(void **state)
{
    (void)state;
    store_t *s = store_new(10, 60);
    assert_non_null(s);
    fixture_t f;
    fixture_init(&f, s);
    buf_t o = BUF_INIT;
    metrics_render(&f.app, &o);
    int samples = check_exposition(o.data);
    /* request and duration families keep HELP/TYPE but have no samples */
    ASSERT_LINE(o.data, "# TYPE vllm_proxy_requests_total counter");
    ASSERT_LINE(o.data, "# TYPE vllm_proxy_request_duration_seconds histogram");
    ASSERT_LINE(o.data, "# TYPE vllm_proxy_time_to_first_byte_seconds histogram");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_requests_total{");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_request_duration_seconds_");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_time_to_first_byte_seconds_");
    /* no engine named: the engine families are empty */
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_upstream_errors_total{");
    /* the fixed series are there with 0 */
    ASSERT_LINE(o.data, "vllm_proxy_attestation_report_duration_seconds_count{source=\"cached\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_attestation_report_duration_seconds_bucket{source=\"fresh\",le=\"+Inf\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_signing_duration_seconds_count 0");
    ASSERT_LINE(o.data, "vllm_proxy_signing_duration_seconds_sum 0.000000000");
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_failures_total{type=\"e2ee_decryption_failed\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_rate_limited_total{reason=\"reports_per_token\"} 0");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_error_responses_total{");
    ASSERT_LINE(o.data, "vllm_proxy_signatures_stored_total 0");
    ASSERT_LINE(o.data, "vllm_proxy_signature_store_entries 0");
    ASSERT_LINE(o.data, "vllm_proxy_streams_active 0");
    ASSERT_LINE(o.data, "vllm_proxy_workers 2");
    ASSERT_LINE(o.data, "vllm_proxy_requests_rejected_total{reason=\"malformed\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_threads 0"); /* an app without crypto threads */
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_jobs_rejected_total 0");
    assert_true(samples > 40);
    /* every family is described exactly once */
    size_t helps = 0, types = 0;
    for (const char *p = o.data; (p = strstr(p, "# HELP ")) != NULL; p++)
        helps++;
    for (const char *p = o.data; (p = strstr(p, "# TYPE ")) != NULL; p++)
        types++;
    assert_int_equal(helps, types);
    assert_true(helps >= 38);
    buf_free(&o);

    /* one worker only: nothing from the absent worker is read */
    f.app.nworkers = 1;
    f.w[1].m.signatures_stored = 99;
    metrics_render(&f.app, &o);
    ASSERT_LINE(o.data, "vllm_proxy_signatures_stored_total 0");
    ASSERT_LINE(o.data, "vllm_proxy_workers 1");
    buf_free(&o);
    store_free(s);
}

/* The value of the sample line that starts with prefix (the whole name and labels), or -1. */
static double sample_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; (p = strstr(p, prefix)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

/* Histograms against an independent count: values spread over six decades (and every bound
 * exactly) observed on two workers; each cumulative bucket must equal the number of values at
 * or under its le, be monotonic, and +Inf must equal _count. */
static void test_histogram_buckets(void **state)
{
    (void)state;
    store_t *st = store_new(10, 60);
    fixture_t f;
    fixture_init(&f, st);
    enum { N = 5000 };
    static uint64_t v[N + HIST_NB];
    uint64_t x = 88172645463325252ull, sum = 0;
    size_t nv = 0;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        double e = (double)(x % 1000000) / 1000000.0 * 9.0; /* 10^0 .. 10^9 µs */
        uint64_t ns = (uint64_t)(1000.0 * pow(10.0, e));
        v[nv++] = ns;
    }
    for (int i = 0; i < HIST_NB; i++)
        v[nv++] = hist_bounds_ns[i];
    for (size_t i = 0; i < nv; i++) {
        metrics_hist_observe(&f.w[i % 2].m.sign, v[i]);
        sum += v[i];
    }
    buf_t o = BUF_INIT;
    metrics_render(&f.app, &o);
    check_exposition(o.data);
    double prev = 0;
    int buckets = 0;
    for (const char *p = o.data; (p = strstr(p, "\nvllm_proxy_signing_duration_seconds_bucket{le=\"")) != NULL; p++) {
        const char *le = p + strlen("\nvllm_proxy_signing_duration_seconds_bucket{le=\"");
        double got = strtod(strchr(le, ' ') + 1, NULL);
        size_t want = 0;
        if (!strncmp(le, "+Inf\"", 5)) {
            want = nv;
        } else {
            double bound = strtod(le, NULL);
            uint64_t bound_ns = (uint64_t)(bound * 1e9 + 0.5);
            for (size_t i = 0; i < nv; i++)
                want += v[i] <= bound_ns;
        }
        if ((size_t)got != want)
            fail_msg("bucket le=%.12s: %.0f, counted %zu", le, got, want);
        assert_true(got >= prev);
        prev = got;
        buckets++;
    }
    assert_int_equal(buckets, HIST_NB + 1);
    assert_int_equal((size_t)sample_value(o.data, "vllm_proxy_signing_duration_seconds_count"), nv);
    char line[96];
    snprintf(line, sizeof line, "vllm_proxy_signing_duration_seconds_sum %.9f", (double)sum / 1e9);
    ASSERT_LINE(o.data, line);
    buf_free(&o);
    store_free(st);
}

/* Engines: labels escaped as the text format wants, health set and passive. */
static void test_engines(void **state)
{
    (void)state;
    store_t *st = store_new(10, 60);
    fixture_t f;
    fixture_init(&f, st);
    metrics_engine_name(&f.app, 0, "http://a:1");
    metrics_engine_name(&f.app, 1, "unix:/p\"q\\r");
    metrics_engine_observe(&f.w[0], 0, 3000000, 0);
    metrics_engine_observe(&f.w[1], 0, 2000000000, UPS_E_TIMEOUT);
    metrics_engine_observe(&f.w[1], 1, 1000, UPS_E_CONNECT);
    metrics_engine_observe(&f.w[1], 1, 1000, 99); /* no such error: timed, not counted */
    metrics_engine_observe(&f.w[1], METRICS_ENGINES_MAX, 1000, 0); /* out of range: ignored */
    buf_t o = BUF_INIT;
    metrics_render(&f.app, &o);
    check_exposition(o.data);
    ASSERT_LINE(o.data, "vllm_proxy_engine_request_duration_seconds_count{engine=\"http://a:1\"} 2");
    ASSERT_LINE(o.data, "vllm_proxy_engine_request_duration_seconds_bucket{engine=\"http://a:1\",le=\"0.005\"} 1");
    ASSERT_LINE(o.data, "vllm_proxy_engine_request_duration_seconds_count{engine=\"unix:/p\\\"q\\\\r\"} 2");
    ASSERT_LINE(o.data, "vllm_proxy_upstream_errors_total{engine=\"http://a:1\",kind=\"timeout\"} 1");
    ASSERT_LINE(o.data, "vllm_proxy_upstream_errors_total{engine=\"http://a:1\",kind=\"connect\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_upstream_errors_total{engine=\"unix:/p\\\"q\\\\r\",kind=\"connect\"} 1");
    buf_free(&o);
    store_free(st);
}

/* Error answers by row: E2EE failures by type, 429s by reason, every written row. */
static void test_errors(void **state)
{
    (void)state;
    store_t *st = store_new(10, 60);
    fixture_t f;
    fixture_init(&f, st);
    metrics_count_error(&f.w[0], APP_E_E2EE_DECRYPTION_FAILED);
    metrics_count_error(&f.w[1], APP_E_E2EE_DECRYPTION_FAILED);
    metrics_count_error(&f.w[1], APP_E_E2EE_BUSY);
    metrics_count_error(&f.w[0], APP_E_REPORTS_PER_TOKEN);
    metrics_count_error(&f.w[0], APP_E_NOT_FOUND);
    buf_t o = BUF_INIT;
    metrics_render(&f.app, &o);
    check_exposition(o.data);
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_failures_total{type=\"e2ee_decryption_failed\"} 2");
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_failures_total{type=\"e2ee_busy\"} 1");
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_failures_total{type=\"e2ee_header_missing\"} 0");
    assert_null(strstr(o.data, "vllm_proxy_e2ee_failures_total{type=\"not_found\"}"));
    ASSERT_LINE(o.data, "vllm_proxy_rate_limited_total{reason=\"reports_per_token\"} 1");
    assert_null(strstr(o.data, "vllm_proxy_rate_limited_total{reason=\"not_found\"}"));
    ASSERT_LINE(o.data, "vllm_proxy_error_responses_total{error=\"not_found\",status=\"404\"} 1");
    ASSERT_LINE(o.data, "vllm_proxy_error_responses_total{error=\"e2ee_busy\",status=\"503\"} 1");
    ASSERT_LINE(o.data, "vllm_proxy_error_responses_total{error=\"reports_per_token\",status=\"429\"} 1");
    assert_null(strstr(o.data, "error=\"auth_missing\""));
    buf_free(&o);
    store_free(st);
}

static long count_fds(void)
{
    long n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

/* process_* and the build info, against what the test reads itself. */
static void test_process(void **state)
{
    (void)state;
    store_t *st = store_new(10, 60);
    fixture_t f;
    fixture_init(&f, st);
    f.app.start_time = 1700000000.25;
    int p[2];
    assert_int_equal(pipe(p), 0);
    long fds = count_fds();
    buf_t o = BUF_INIT;
    metrics_render(&f.app, &o);
    check_exposition(o.data);
    assert_int_equal((long)sample_value(o.data, "process_open_fds"), fds);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(sample_value(o.data, "process_max_fds") == (double)rl.rlim_cur);
    ASSERT_LINE(o.data, "process_start_time_seconds 1700000000.250");
    ASSERT_LINE(o.data, "# TYPE process_cpu_seconds_total counter");
    assert_true(sample_value(o.data, "process_cpu_seconds_total") > 0);
    double rss = sample_value(o.data, "process_resident_memory_bytes");
    assert_true(rss > 1e5 && rss < 1e10);
    assert_true(sample_value(o.data, "process_virtual_memory_bytes") >= rss);
    char line[96];
    snprintf(line, sizeof line, "vllm_proxy_build_info{version=\"%s\"} 1", config_version());
    ASSERT_LINE(o.data, line);
    buf_free(&o);
    close(p[0]);
    close(p[1]);
    metrics_render(&f.app, &o);
    assert_int_equal((long)sample_value(o.data, "process_open_fds"), fds - 2);
    buf_free(&o);
    store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summed_across_workers),
        cmocka_unit_test(test_all_zero),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_engines),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
