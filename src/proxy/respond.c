/* Answers, the error table and the request log line (proxy/respond.h, proxy/errors.h). */
#include "proxy/respond.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "proxy/e2ee.h"

#define LOG_PATH_MAX 200 /* bytes of the path in a log line */

static const app_error_info_t ERRORS[APP_E_N] = {
#define APP_ERROR_ROW(name, st, ty, co, msg) [APP_E_##name] = {st, ty, co, msg},
    APP_ERROR_MAP(APP_ERROR_ROW)
#undef APP_ERROR_ROW
};

const app_error_info_t *app_error_info(app_error_t e) { return &ERRORS[e]; }

/* ACI's in-band hints (formats document §9: "every response, errors included") on every answer
 * to an ACI v2 request and to GET /v1/aci/attestation; nothing for anyone else. */
static void aci_hints(app_worker_t *aw, const http_req_t *req, char out[E2EE_ACI_HINTS_MAX])
{
    out[0] = '\0';
    static const char aci_path[] = "/v1/aci/attestation";
    if (e2ee_req_is_aci(req) || (req->path.n == sizeof aci_path - 1 && req->path.p &&
                                 memcmp(req->path.p, aci_path, sizeof aci_path - 1) == 0))
        e2ee_aci_hints(aw->app, out, E2EE_ACI_HINTS_MAX);
}

static void error_answer(conn_t *c, app_error_t e, const char *message, const char *hints,
                         unsigned retry_after)
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
    char extra[sizeof "WWW-Authenticate: Bearer\r\n" + E2EE_ACI_HINTS_MAX + 32];
    int n = snprintf(extra, sizeof extra, "%s%s",
                     x->status == 401 ? "WWW-Authenticate: Bearer\r\n" : "", hints);
    if (retry_after && n >= 0 && (size_t)n < sizeof extra)
        snprintf(extra + n, sizeof extra - (size_t)n, "Retry-After: %u\r\n", retry_after);
    if (b.len) /* a buffer that could not grow answers with an empty body, never a wrong one */
        conn_respond(c, x->status, "application/json", extra[0] ? extra : NULL, b.data, b.len);
    else
        conn_respond(c, x->status, "application/json", extra[0] ? extra : NULL, "", 0);
    buf_free(&b);
}

void respond_error_unlogged(conn_t *c, app_error_t e, const char *message)
{
    error_answer(c, e, message, "", 0);
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
    char hints[E2EE_ACI_HINTS_MAX];
    aci_hints(aw, req, hints); /* before: responding resets req */
    respond_log(aw, req, route, status, 0, len, NULL);
    conn_respond(c, status, "application/json", hints[0] ? hints : NULL, json, len);
}

void respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                   const char *message)
{
    char hints[E2EE_ACI_HINTS_MAX];
    aci_hints(aw, req, hints); /* before: responding resets req */
    respond_log(aw, req, route, app_error_info(e)->status, 0, 0, NULL);
    error_answer(c, e, message, hints, 0);
}

void respond_error_retry(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                         const char *message, unsigned retry_after)
{
    char hints[E2EE_ACI_HINTS_MAX];
    aci_hints(aw, req, hints);
    respond_log(aw, req, route, app_error_info(e)->status, 0, 0, NULL);
    error_answer(c, e, message, hints, retry_after);
}
