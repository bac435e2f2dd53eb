/* GET /livez, GET /healthz (proxy/health_route.h). */
#include "proxy/health_route.h"

#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "proxy/respond.h"

/* The one background collection /healthz may have in flight, process-wide. */
static int g_refresh_busy; /* atomic */
static uv_work_t g_refresh_work;
static attest_service_t *g_refresh_attest;

static void refresh_work(uv_work_t *w)
{
    (void)w;
    attest_service_refresh(g_refresh_attest, 0, 0); /* ecdsa, no TLS binding: the common one */
}

static void refresh_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    __atomic_store_n(&g_refresh_busy, 0, __ATOMIC_RELEASE);
}

static void queue_refresh(app_worker_t *aw)
{
    int zero = 0;
    if (!__atomic_compare_exchange_n(&g_refresh_busy, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    g_refresh_attest = aw->app->attest;
    if (uv_queue_work(worker_loop(aw->w), &g_refresh_work, refresh_work, refresh_done) != 0)
        __atomic_store_n(&g_refresh_busy, 0, __ATOMIC_RELEASE);
}

void livez_route(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    static const char body[] = "{\"status\":\"ok\"}";
    respond_json(aw, c, req, route, 200, body, sizeof body - 1);
}

void healthz_route(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    const engine_set_t *es = aw->app->engines;
    int up = es ? engines_healthy(es) : 0, n = es ? es->n : 0;
    char why[256] = "";
    int att = aw->app->attest ? attest_service_ready(aw->app->attest, why, sizeof why) : 0;
    if (!aw->app->attest)
        snprintf(why, sizeof why, "no attestation service");
    buf_t b = BUF_INIT;
    buf_printf(&b, "{\"status\":\"%s\",\"engines_up\":%d,\"engines\":%d,\"attestation\":",
               up && att ? "ok" : "unavailable", up, n);
    if (att)
        buf_puts(&b, "\"ok\"");
    else
        buf_json_str(&b, why[0] ? why : "failed", strlen(why[0] ? why : "failed"));
    if (!up || !att) {
        buf_printf(&b, ",\"missing\":[%s%s%s]", up ? "" : "\"engine\"", !up && !att ? "," : "",
                   att ? "" : "\"attestation\"");
        if (!att && aw->app->attest)
            queue_refresh(aw);
    }
    buf_puts(&b, "}");
    if (b.len)
        respond_json(aw, c, req, route, up && att ? 200 : 503, b.data, b.len);
    else
        respond_error(aw, c, req, route, APP_E_OUT_OF_MEMORY, NULL);
    buf_free(&b);
}
