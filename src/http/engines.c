/* The engine set, its health and the health checker (http/engines.h). */
#include "http/engines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define INC(p) __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)

engine_set_t *engines_new(const char *urls, const upstream_target_t *tmpl, const engine_cfg_t *cfg,
                          char *err, size_t errlen)
{
    engine_set_t *s = calloc(1, sizeof *s);
    if (!s || !(s->e = calloc(ENGINES_MAX, sizeof *s->e))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    const char *p = urls;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        while (m > 1 && p[m - 1] == '/' && strncmp(p, "unix:", 5) != 0)
            m--; /* http://host:port/ */
        if (m == 0) {
            snprintf(err, errlen, "empty engine URL in '%s'", urls);
            goto fail;
        }
        if (s->n == ENGINES_MAX) {
            snprintf(err, errlen, "more than %d engines", ENGINES_MAX);
            goto fail;
        }
        if (m >= ENGINE_NAME_MAX) {
            snprintf(err, errlen, "engine URL '%.*s...' too long", 40, p);
            goto fail;
        }
        engine_t *e = &s->e[s->n];
        memcpy(e->name, p, m);
        e->name[m] = '\0';
        e->t = *tmpl;
        char e2[512];
        if (upstream_target_parse(&e->t, e->name, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "%s", e2);
            goto fail;
        }
        for (int i = 0; i < s->n; i++)
            if (strcmp(s->e[i].name, e->name) == 0) {
                snprintf(err, errlen, "engine %s listed twice", e->name);
                goto fail;
            }
        e->up = 1; /* serving from the start; the first round of checks follows at once */
        s->n++;
        p += n;
        if (*p != ',')
            break;
        p++;
    }
    return s;
fail:
    engines_free(s);
    return NULL;
}

void engines_free(engine_set_t *s)
{
    if (!s)
        return;
    free(s->e);
    free(s);
}

int engines_healthy(const engine_set_t *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += LD(&s->e[i].up) != 0;
    return n;
}

unsigned engines_retry_after(const engine_set_t *s)
{
    unsigned sec = (s->cfg.check_interval_ms + 999) / 1000;
    return sec ? sec : 1;
}

int engines_mark_down(engine_set_t *s, int i, const char *cause)
{
    engine_t *e = &s->e[i];
    int one = 1;
    if (!s->cfg.check_interval_ms ||
        !__atomic_compare_exchange_n(&e->up, &one, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return 0;
    INC(&e->downs);
    LOG_WARN("engine %s down: %s (%d of %d engines up)", e->name, cause, engines_healthy(s), s->n);
    return 1;
}

static void mark_up(engine_set_t *s, int i)
{
    engine_t *e = &s->e[i];
    __atomic_store_n(&e->conn_fails, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->up, 1, __ATOMIC_RELEASE);
    LOG_WARN("engine %s up again after %u good health checks (%d of %d engines up)", e->name,
             s->cfg.up_after_checks, engines_healthy(s), s->n);
}

void engines_conn_result(engine_set_t *s, int i, int failed, const char *cause)
{
    engine_t *e = &s->e[i];
    if (!failed) {
        if (LD(&e->conn_fails)) /* no write on the shared line while all is well */
            __atomic_store_n(&e->conn_fails, 0, __ATOMIC_RELAXED);
        return;
    }
    unsigned n = INC(&e->conn_fails);
    if (s->cfg.down_after_conn_fails && n >= s->cfg.down_after_conn_fails && LD(&e->up)) {
        char why[256];
        snprintf(why, sizeof why, "%u connection failures in a row (last: %s)", n, cause);
        engines_mark_down(s, i, why);
    }
}

/* A label value: backslash, quote and newline escaped. */
static void label(buf_t *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_printf(o, "\\%c", *v);
        else if (*v == '\n')
            buf_puts(o, "\\n");
        else
            buf_printf(o, "%c", *v);
    }
}

typedef enum { G_UP, G_OUT, C_REQ, C_FAILOVER, C_DOWNS } series_t;

static void per_engine(const engine_set_t *s, buf_t *o, const char *name, const char *type,
                       const char *help, series_t w)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < s->n; i++) {
        const engine_t *e = &s->e[i];
        unsigned long long v = w == G_UP         ? (unsigned long long)LD(&e->up)
                               : w == G_OUT      ? (unsigned long long)LD(&e->outstanding)
                               : w == C_REQ      ? LD(&e->requests)
                               : w == C_FAILOVER ? LD(&e->failovers)
                                                 : LD(&e->downs);
        buf_printf(o, "%s{engine=\"", name);
        label(o, e->name);
        buf_printf(o, "\"} %llu\n", v);
    }
}

void engines_metrics(const engine_set_t *s, buf_t *o)
{
    static const char *kinds[EK_N] = {"connect", "timeout", "closed", "protocol"};
    per_engine(s, o, "vllm_proxy_engine_up", "gauge",
               "1 when the engine takes requests, 0 when it is out (health checks).", G_UP);
    per_engine(s, o, "vllm_proxy_engine_outstanding_requests", "gauge",
               "Requests on the engine now, all workers.", G_OUT);
    per_engine(s, o, "vllm_proxy_engine_requests_total", "counter",
               "Requests sent to the engine (a moved request counts on both).", C_REQ);
    per_engine(s, o, "vllm_proxy_engine_failovers_total", "counter",
               "Requests moved to another engine after a failed connection to this one.",
               C_FAILOVER);
    per_engine(s, o, "vllm_proxy_engine_down_total", "counter",
               "Times the engine was taken out.", C_DOWNS);
    buf_puts(o, "# HELP vllm_proxy_engine_errors_total Engine exchanges that failed, by engine "
                "and cause.\n# TYPE vllm_proxy_engine_errors_total counter\n");
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < EK_N; k++) {
            buf_puts(o, "vllm_proxy_engine_errors_total{engine=\"");
            label(o, s->e[i].name);
            buf_printf(o, "\",kind=\"%s\"} %llu\n", kinds[k],
                       (unsigned long long)LD(&s->e[i].errors[k]));
        }
    buf_puts(o, "# HELP vllm_proxy_engine_health_checks_total Active health checks, by engine "
                "and result.\n# TYPE vllm_proxy_engine_health_checks_total counter\n");
    for (int i = 0; i < s->n; i++)
        for (int r = 0; r < 2; r++) {
            buf_puts(o, "vllm_proxy_engine_health_checks_total{engine=\"");
            label(o, s->e[i].name);
            buf_printf(o, "\",result=\"%s\"} %llu\n", r ? "failed" : "ok",
                       (unsigned long long)LD(r ? &s->e[i].checks_failed : &s->e[i].checks_ok));
        }
    buf_printf(o,
               "# HELP vllm_proxy_engines_healthy Engines taking requests now.\n"
               "# TYPE vllm_proxy_engines_healthy gauge\n"
               "vllm_proxy_engines_healthy %d\n"
               "# HELP vllm_proxy_engine_queue_depth Requests waiting for an engine under its "
               "in-flight budget.\n"
               "# TYPE vllm_proxy_engine_queue_depth gauge\n"
               "vllm_proxy_engine_queue_depth %d\n"
               "# HELP vllm_proxy_engine_queued_total Requests that had to wait for an engine.\n"
               "# TYPE vllm_proxy_engine_queued_total counter\n"
               "vllm_proxy_engine_queued_total %llu\n"
               "# HELP vllm_proxy_engine_rejected_total Requests refused before reaching an "
               "engine: 429 (every engine at its budget), 503 (no engine up).\n"
               "# TYPE vllm_proxy_engine_rejected_total counter\n"
               "vllm_proxy_engine_rejected_total{reason=\"engine_budget\"} %llu\n"
               "vllm_proxy_engine_rejected_total{reason=\"no_engine\"} %llu\n",
               engines_healthy(s), LD(&s->queued), (unsigned long long)LD(&s->queued_total),
               (unsigned long long)LD(&s->rejected_busy), (unsigned long long)LD(&s->rejected_none));
}

/* ---- the health checker ---- */

typedef struct probe {
    struct engine_checker *ck;
    int i;
    upstream_req_t *up;
} probe_t;

struct engine_checker {
    engine_set_t *s;
    upstream_pool_t *pool;
    uv_timer_t timer;
    probe_t probes[ENGINES_MAX];
};

static void probe_head(void *ud, int status, strv_t ct, int64_t cl)
{
    (void)ct;
    (void)cl;
    probe_t *pr = ud;
    pr->ck->s->e[pr->i].chk_status = status;
}

static void probe_body(void *ud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    (void)n;
}

static void probe_done(void *ud, int err, int status)
{
    (void)status;
    probe_t *pr = ud;
    engine_set_t *s = pr->ck->s;
    engine_t *e = &s->e[pr->i];
    pr->up = NULL;
    e->chk_busy = 0;
    int st = e->chk_status, ok = !err && st >= 200 && st < 300;
    if (ok) {
        INC(&e->checks_ok);
        e->chk_fails = 0;
        if (LD(&e->up)) {
            e->chk_oks = 0;
        } else if (++e->chk_oks >= s->cfg.up_after_checks) {
            e->chk_oks = 0;
            mark_up(s, pr->i);
        }
        return;
    }
    INC(&e->checks_failed);
    e->chk_oks = 0;
    static const char *errs[] = {"", "connection failed", "timed out", "connection closed",
                                 "malformed answer", "out of memory", "", ""};
    char cause[400];
    if (err)
        snprintf(cause, sizeof cause, "%u failed health checks in a row (last: GET %s %s)",
                 e->chk_fails + 1, s->cfg.health_path, errs[err & 7]);
    else
        snprintf(cause, sizeof cause, "%u failed health checks in a row (last: GET %s answered %d)",
                 e->chk_fails + 1, s->cfg.health_path, st);
    LOG_DEBUG("engine %s: health check failed: %s", e->name, cause);
    if (++e->chk_fails >= s->cfg.down_after_checks && LD(&e->up))
        engines_mark_down(s, pr->i, cause);
}

static const upstream_cbs_t PROBE_CBS = {probe_head, probe_body, probe_done, NULL};

static void on_check(uv_timer_t *t)
{
    engine_checker_t *ck = t->data;
    engine_set_t *s = ck->s;
    strv_t path = {s->cfg.health_path, strlen(s->cfg.health_path)};
    for (int i = 0; i < s->n; i++) {
        engine_t *e = &s->e[i];
        if (e->chk_busy)
            continue; /* the last one has not ended yet (its timeout will) */
        e->chk_busy = 1;
        e->chk_status = 0;
        probe_t *pr = &ck->probes[i];
        pr->up = upstream_send_to(ck->pool, i, "GET", path, &PROBE_CBS, pr);
        if (!pr->up)
            e->chk_busy = 0;
    }
}

engine_checker_t *engines_checker_start(engine_set_t *s, uv_loop_t *loop, worker_t *w)
{
    if (!s->cfg.check_interval_ms)
        return NULL;
    engine_checker_t *ck = calloc(1, sizeof *ck);
    if (!ck)
        return NULL;
    ck->s = s;
    ck->pool = upstream_probe_pool_new(loop, s, w, s->cfg.check_timeout_ms);
    if (!ck->pool) {
        free(ck);
        return NULL;
    }
    for (int i = 0; i < s->n; i++)
        ck->probes[i] = (probe_t){ck, i, NULL};
    uv_timer_init(loop, &ck->timer);
    ck->timer.data = ck;
    uv_timer_start(&ck->timer, on_check, 0, s->cfg.check_interval_ms);
    return ck;
}

static void on_checker_closed(uv_handle_t *h) { free(h->data); }

void engines_checker_stop(engine_checker_t *ck)
{
    if (!ck)
        return;
    for (int i = 0; i < ck->s->n; i++)
        if (ck->probes[i].up) {
            upstream_cancel(ck->probes[i].up);
            ck->probes[i].up = NULL;
            ck->s->e[i].chk_busy = 0;
        }
    upstream_pool_close(ck->pool);
    uv_close((uv_handle_t *)&ck->timer, on_checker_closed);
}
