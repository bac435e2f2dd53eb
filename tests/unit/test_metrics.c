/* Unit tests for metrics_render: counters summed across workers, zero-valued series as the
 * exposition intends, HELP/TYPE lines, and well-formed Prometheus text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at.h"
#include "proxy/app.h"
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
    int samples = 0, ntypes = 0;
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
            at_assert_true(!strcmp(t, "counter") || !strcmp(t, "gauge"));
            ntypes++;
            continue;
        }
        at_assert_int_not_equal(line[0], '#');
        /* name */
        size_t i = 0;
        while (is_name_char(line[i], i == 0))
            i++;
        at_assert_true(i > 0);
        if (strncmp(line, family, i) != 0 || family[i] != '\0')
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
        double v = strtod(line + i, &end);
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
    a->duration_us[ROUTE_CHAT] = 1500000;
    b->duration_us[ROUTE_CHAT] = 250000;
    b->duration_us[ROUTE_REPORT] = 7;
    a->upstream_errors[UPERR_CONNECT] = 2;
    b->upstream_errors[UPERR_CONNECT] = 1;
    b->upstream_errors[UPERR_PROTOCOL] = 4;
    a->rejected[HTTP_REJECT_MALFORMED] = 5;
    b->rejected[HTTP_REJECT_MALFORMED] = 1;
    b->rejected[HTTP_REJECT_TIMEOUT] = 2;
    a->limited[LIMITED_CLIENT_IP] = 4;
    b->limited[LIMITED_CLIENT_IP] = 5;
    b->limited[LIMITED_TOKEN] = 1;
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

    ASSERT_LINE(t, "# TYPE vllm_proxy_request_duration_seconds_sum counter");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_sum{route=\"chat_completions\"} 1.750000");
    ASSERT_LINE(t, "vllm_proxy_request_duration_seconds_sum{route=\"attestation_report\"} 0.000007");
    assert_null(strstr(t, "vllm_proxy_request_duration_seconds_sum{route=\"metrics\"}"));

    /* upstream errors: every kind present, zero included */
    ASSERT_LINE(t, "# TYPE vllm_proxy_upstream_errors_total counter");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{kind=\"connect\"} 3");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{kind=\"timeout\"} 0");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{kind=\"closed\"} 0");
    ASSERT_LINE(t, "vllm_proxy_upstream_errors_total{kind=\"protocol\"} 4");

    /* protocol rejections: every cause present, zero included */
    ASSERT_LINE(t, "# TYPE vllm_proxy_requests_rejected_total counter");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"malformed\"} 6");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"timeout\"} 2");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"body_too_large\"} 0");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"head_too_large\"} 0");
    ASSERT_LINE(t, "vllm_proxy_requests_rejected_total{reason=\"duplicate_header\"} 0");

    /* 429s by rate limit: both reasons, summed over the workers */
    ASSERT_LINE(t, "# TYPE vllm_proxy_rate_limited_total counter");
    ASSERT_LINE(t, "vllm_proxy_rate_limited_total{reason=\"client_ip\"} 9");
    ASSERT_LINE(t, "vllm_proxy_rate_limited_total{reason=\"token\"} 1");

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
    /* 7 requests + 2 durations + 4 upstream kinds + 5 rejection causes + 2 rate-limit reasons +
     * 9 scalars + 4 E2EE pool series + 3 connection series + 2 GPU evidence counters + 2 TLS
     * certificate counters */
    assert_int_equal(samples, 40);
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
    ASSERT_LINE(o.data, "# TYPE vllm_proxy_request_duration_seconds_sum counter");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_requests_total{");
    ASSERT_NO_PREFIX(o.data, "vllm_proxy_request_duration_seconds_sum{");
    /* the fixed series are there with 0 */
    ASSERT_LINE(o.data, "vllm_proxy_upstream_errors_total{kind=\"timeout\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_signatures_stored_total 0");
    ASSERT_LINE(o.data, "vllm_proxy_signature_store_entries 0");
    ASSERT_LINE(o.data, "vllm_proxy_streams_active 0");
    ASSERT_LINE(o.data, "vllm_proxy_workers 2");
    ASSERT_LINE(o.data, "vllm_proxy_requests_rejected_total{reason=\"malformed\"} 0");
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_threads 0"); /* an app without crypto threads */
    ASSERT_LINE(o.data, "vllm_proxy_e2ee_jobs_rejected_total 0");
    ASSERT_LINE(o.data, "vllm_proxy_rate_limited_total{reason=\"token\"} 0");
    assert_int_equal(samples, 4 + 5 + 2 + 9 + 4 + 3 + 2 + 2);
    /* every family is described exactly once */
    size_t helps = 0, types = 0;
    for (const char *p = o.data; (p = strstr(p, "# HELP ")) != NULL; p++)
        helps++;
    for (const char *p = o.data; (p = strstr(p, "# TYPE ")) != NULL; p++)
        types++;
    /* 5 labelled families + 9 scalars + 4 E2EE + 2 connection families + 2 GPU + 2 TLS */
    assert_int_equal(helps, 24);
    assert_int_equal(types, 24);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summed_across_workers),
        cmocka_unit_test(test_all_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
