/* Answers, the error table and the request log line (proxy/respond.h, proxy/errors.h). */
#include "proxy/respond.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"

#define LOG_PATH_MAX 200 /* bytes of the path in a log line */

static const app_error_info_t ERRORS[APP_E_N] = {
#define APP_ERROR_ROW(name, st, ty, co, msg) [APP_E_##name] = {st, ty, co, msg},
    APP_ERROR_MAP(APP_ERROR_ROW)
#undef APP_ERROR_ROW
};

const app_error_info_t *app_error_info(app_error_t e) { return &ERRORS[e]; }

void respond_error_unlogged(conn_t *c, app_error_t e, const char *message)
{
    const app_error_info_t *x = app_error_info(e);
    if (!message)
        message = x->message;
    buf_t b = BUF_INIT;
    buf_puts(&b, "{\"error\":{\"message\":");
    buf_json_str(&b, message, strlen(message));
    buf_puts(&b, ",\"type\":");
    buf_json_str(&b, x->type, strlen(x->type));
    buf_puts(&b, ",\"param\":null,\"code\":");
    if (x->code)
        buf_json_str(&b, x->code, strlen(x->code));
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}}");
    const char *extra = x->status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    if (b.len) /* a buffer that could not grow answers with an empty body, never a wrong one */
        conn_respond(c, x->status, "application/json", extra, b.data, b.len);
    else
        conn_respond(c, x->status, "application/json", extra, "", 0);
    buf_free(&b);
}

void respond_log(app_worker_t *aw, const http_req_t *req, int route, int status, int upstream_status,
                 uint64_t bytes_out, const char *chat_id)
{
    uint64_t dur_us = (clock_mono_ns() - req->start_ns) / 1000;
    int cls = status <= 0 ? 0 : status / 100;
    if (cls > 5)
        cls = 5;
    M_ADD(aw->m.requests[route][cls], 1);
    M_ADD(aw->m.duration_us[route], dur_us);
    M_ADD(aw->m.bytes_in, req->body.len);
    M_ADD(aw->m.bytes_out, bytes_out);
    if (log_level_current > LOG_LVL_INFO)
        return;
    char us[16] = "-";
    if (upstream_status > 0)
        snprintf(us, sizeof us, "%d", upstream_status);
    /* Lines about attestation say when it is simulated. */
    int sim = route == ROUTE_REPORT && aw->app->cfg->attestation == ATTEST_MODE_SIMULATED;
    log_write(LOG_LVL_INFO, "request w=%d %s %.*s status=%d upstream=%s in=%zu out=%llu ms=%.3f id=%s%s",
              aw->w ? worker_id(aw->w) : 0, llhttp_method_name((llhttp_method_t)req->method),
              (int)(req->path.n > LOG_PATH_MAX ? LOG_PATH_MAX : req->path.n), req->path.p,
              status > 0 ? status : 499, us, req->body.len, (unsigned long long)bytes_out,
              (double)dur_us / 1000.0, chat_id && *chat_id ? chat_id : "-",
              sim ? " attestation=SIMULATED" : "");
}

void respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                  const char *json, size_t len)
{
    respond_log(aw, req, route, status, 0, len, NULL); /* before: responding resets req */
    conn_respond(c, status, "application/json", NULL, json, len);
}

void respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                   const char *message)
{
    respond_log(aw, req, route, app_error_info(e)->status, 0, 0, NULL);
    respond_error_unlogged(c, e, message);
}
