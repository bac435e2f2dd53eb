/* GET /metrics and GET /v1/metrics (proxy/metrics_route.h). /metrics is answered at once; a
 * /v1/metrics scrape has one small owner: it holds the client connection and the engine
 * exchange, and is freed once both have let go (as the relay). A scrape is not counted in
 * vllm_proxy_streams_active. */
#include "proxy/metrics_route.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/respond.h"

#define PROM_CTYPE "text/plain; version=0.0.4; charset=utf-8"
#define ENGINE_SECTION "\n# --- vLLM Backend Metrics ---\n\n"

enum { DONE_CLIENT = 1u << 0, DONE_ENGINE = 1u << 1, DONE_BOTH = DONE_CLIENT | DONE_ENGINE };

typedef struct scrape {
    conn_owner_t owner;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    upstream_req_t *up;
    int up_status, head_sent;
    unsigned done, in_cb;
    uint64_t bytes_out;
} scrape_t;

static void scrape_release(scrape_t *s, unsigned side)
{
    s->done |= side;
    if (s->done == DONE_BOTH && s->in_cb == 0)
        free(s);
}

static void on_head(void *ud, int status, strv_t ctype, int64_t cl)
{
    (void)ctype, (void)cl;
    scrape_t *s = ud;
    s->up_status = status;
    if (status != 200 || !s->c)
        return; /* answered in on_done */
    s->in_cb++;
    buf_t m = BUF_INIT;
    metrics_render(s->aw->app, &m);
    buf_puts(&m, ENGINE_SECTION);
    s->head_sent = 1;
    metrics_observe_ttfb(s->aw, ROUTE_METRICS, s->req->start_ns);
    s->bytes_out += m.len;
    if (conn_start_response(s->c, 200, PROM_CTYPE, NULL, -1) == 0 && s->c)
        conn_write_body(s->c, m.data, m.len);
    buf_free(&m);
    s->in_cb--;
    scrape_release(s, 0);
}

static void on_body(void *ud, const char *p, size_t n)
{
    scrape_t *s = ud;
    if (s->up_status != 200 || !s->c)
        return;
    s->in_cb++;
    s->bytes_out += n;
    conn_write_body(s->c, p, n);
    s->in_cb--;
    scrape_release(s, 0);
}

static void on_read_done(void *ud)
{
    scrape_t *s = ud;
    s->in_cb++;
    if (s->c && conn_flush(s->c) == 0 && s->up && conn_should_pause_source(s->c))
        upstream_pause(s->up);
    s->in_cb--;
    scrape_release(s, 0);
}

/* Finishes the answer: the engine's part is complete, or replaced by a comment. */
static void finish(scrape_t *s, conn_t *c, int err, int status)
{
    app_worker_t *aw = s->aw;
    if (!err && status == 200) {
        respond_log(aw, s->req, ROUTE_METRICS, 200, status, s->bytes_out, NULL);
        conn_end_response(c);
        return;
    }
    buf_t m = BUF_INIT;
    if (!s->head_sent)
        metrics_render(aw->app, &m);
    if (err)
        buf_printf(&m, ENGINE_SECTION "# Error fetching vLLM metrics: upstream %s\n",
                   err == UPS_E_CONNECT     ? "unreachable"
                   : err == UPS_E_TIMEOUT   ? "timed out"
                   : err == UPS_E_NO_ENGINE ? "has no engine up"
                   : err == UPS_E_BUSY      ? "busy (every engine at its budget)"
                                            : "failed");
    else
        buf_printf(&m, ENGINE_SECTION "# Failed to fetch vLLM metrics: %d\n", status);
    if (s->head_sent) {
        conn_write_body(c, m.data, m.len);
        respond_log(aw, s->req, ROUTE_METRICS, 200, status, s->bytes_out + m.len, NULL);
        conn_end_response(c);
    } else {
        metrics_observe_ttfb(aw, ROUTE_METRICS, s->req->start_ns);
        respond_log(aw, s->req, ROUTE_METRICS, 200, status, m.len, NULL);
        conn_respond(c, 200, PROM_CTYPE, NULL, m.data, m.len);
    }
    buf_free(&m);
}

static void on_done(void *ud, int err, int status)
{
    scrape_t *s = ud;
    s->in_cb++;
    s->up = NULL;
    scrape_release(s, DONE_ENGINE);
    if (s->c) {
        conn_t *c = s->c;
        conn_set_owner(c, NULL);
        s->c = NULL;
        finish(s, c, err, status);
        scrape_release(s, DONE_CLIENT);
    }
    s->in_cb--;
    scrape_release(s, 0);
}

static const upstream_cbs_t SCRAPE_CBS = {on_head, on_body, on_done, on_read_done};

static void scrape_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    scrape_t *s = (scrape_t *)o;
    s->c = NULL;
    if (s->up) {
        upstream_cancel(s->up);
        s->up = NULL;
        s->done |= DONE_ENGINE;
    }
    respond_log(s->aw, s->req, ROUTE_METRICS, 0, s->up_status, s->bytes_out, NULL);
    scrape_release(s, DONE_CLIENT);
}

static void scrape_on_drain(conn_owner_t *o, conn_t *c)
{
    (void)c;
    scrape_t *s = (scrape_t *)o;
    if (s->up)
        upstream_resume(s->up);
}

static const conn_owner_ops_t SCRAPE_OPS = {"metrics", scrape_on_abort, scrape_on_drain};

/* GET /metrics: the proxy's own exposition only (what a Prometheus scrape of this process
 * wants; the engines are scraped by their own URLs). */
static void own_metrics(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    buf_t m = BUF_INIT;
    metrics_render(aw->app, &m);
    if (!m.data) {
        respond_error(aw, c, req, ROUTE_METRICS, APP_E_OUT_OF_MEMORY, NULL);
        return;
    }
    metrics_observe_ttfb(aw, ROUTE_METRICS, req->start_ns);
    respond_log(aw, req, ROUTE_METRICS, 200, 0, m.len, NULL);
    conn_respond(c, 200, PROM_CTYPE, NULL, m.data, m.len);
    buf_free(&m);
}

void metrics_route(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    static const char own[] = "/metrics";
    if (req->path.n == sizeof own - 1 && memcmp(req->path.p, own, sizeof own - 1) == 0) {
        own_metrics(aw, c, req);
        return;
    }
    scrape_t *s = calloc(1, sizeof *s);
    if (!s) {
        respond_error(aw, c, req, ROUTE_METRICS, APP_E_OUT_OF_MEMORY, NULL);
        return;
    }
    *s = (scrape_t){.owner = {&SCRAPE_OPS}, .aw = aw, .c = c, .req = req};
    conn_set_owner(c, &s->owner);
    conn_cork(c);
    s->up = upstream_send(aw->pool, "GET", (strv_t){"/metrics", 8}, (strv_t){"", 0}, NULL, NULL,
                          0, &SCRAPE_CBS, s);
    if (!s->up) {
        int why = upstream_pool_error(aw->pool);
        conn_set_owner(c, NULL);
        M_SUB(aw->m.streams_active, 1);
        if (why != UPS_E_NOMEM) /* no engine up, or all at their budget: ours alone */
            finish(s, c, why, 0);
        else
            respond_error(aw, c, req, ROUTE_METRICS, APP_E_OUT_OF_MEMORY, NULL);
        free(s);
    }
}
