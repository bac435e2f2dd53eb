/* Answers, the error table and the request log line (proxy/respond.h, proxy/errors.h). */
#include "proxy/respond.h"

#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "proxy/e2ee.h"

#define LOG_PATH_MAX 200 /* bytes of the path in a log line */
/* The request id: RID_RANDOM_BYTES from the proxy in hex, after the client's X-Request-Id and
 * a '-' when that is a short, plain tracing value. It is also the engine's request id, which
 * vLLM makes the completion id (chatcmpl-<id>) and so the key of the signature record: the
 * random part is the proxy's, so no client chooses (or pre-claims) another request's record. */
#define RID_RANDOM_BYTES 16
#define RID_TRACE_MAX 64 /* bytes of the client's X-Request-Id kept as a prefix */
_Static_assert(RID_TRACE_MAX + 1 + 2 * RID_RANDOM_BYTES == HTTP_REQ_ID_MAX, "HTTP_REQ_ID_MAX");

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

/* A client's X-Request-Id is kept as the prefix only when it is 1..RID_TRACE_MAX bytes of
 * RFC 3986 unreserved characters (it ends up in a URL path). */
static int rid_trace_ok(strv_t v)
{
    if (v.n == 0 || v.n > RID_TRACE_MAX)
        return 0;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_' || ch == '~'))
            return 0;
    }
    return 1;
}

const char *respond_request_id(http_req_t *req)
{
    if (req->id[0])
        return req->id;
    uint8_t rnd[RID_RANDOM_BYTES];
    size_t n = 0;
    if (rid_trace_ok(req->x_request_id)) {
        memcpy(req->id, req->x_request_id.p, req->x_request_id.n);
        n = req->x_request_id.n;
        req->id[n++] = '-';
    }
    randombytes_buf(rnd, sizeof rnd);
    hex_encode(req->id + n, rnd, sizeof rnd);
    return req->id;
}

/* The one method each route takes (a 405's Allow): the engine routes take POST but for
 * /v1/models, everything else GET. */
static const char *route_allow(int route)
{
    return route == ROUTE_CHAT || route == ROUTE_COMPLETIONS || route == ROUTE_PASSTHROUGH ||
                   route == ROUTE_INFERENCE
               ? "POST"
               : "GET";
}

#define EXTRA_MAX (sizeof "WWW-Authenticate: Bearer\r\nAllow: POST\r\nRetry-After: 86400\r\n" + \
                   E2EE_ACI_HINTS_MAX)

/* The table's body for e: {"error":{"message","type","param":null,"code"}}. */
static void error_body(buf_t *b, app_error_t e, const char *message)
{
    const app_error_info_t *x = app_error_info(e);
    if (!message)
        message = x->message;
    buf_puts(b, "{\"error\":{\"message\":");
    buf_json_str(b, message, strlen(message));
    buf_puts(b, ",\"type\":");
    buf_json_str(b, x->type, strlen(x->type));
    buf_puts(b, ",\"param\":null,\"code\":");
    if (x->code)
        buf_json_str(b, x->code, strlen(x->code));
    else
        buf_puts(b, "null");
    buf_puts(b, "}}");
}

/* Writes the error answer with body b (empty when it could not grow: an empty body, never a
 * wrong one) and the headers its status calls for. */
static void error_send(conn_t *c, int route, app_error_t e, const buf_t *b, const char *hints,
                       unsigned retry_s)
{
    const app_error_info_t *x = app_error_info(e);
    char extra[EXTRA_MAX], retry[32] = "", allow[24] = "";
    if (retry_s)
        snprintf(retry, sizeof retry, "Retry-After: %u\r\n", retry_s);
    if (x->status == 405)
        snprintf(allow, sizeof allow, "Allow: %s\r\n", route_allow(route));
    snprintf(extra, sizeof extra, "%s%s%s%s", x->status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
             allow, retry, hints);
    conn_respond(c, x->status, "application/json", extra[0] ? extra : NULL, b->len ? b->data : "",
                 b->len);
}

size_t respond_error_unlogged(conn_t *c, app_error_t e, const char *message)
{
    buf_t b = BUF_INIT;
    error_body(&b, e, message);
    size_t n = b.len;
    error_send(c, ROUTE_OTHER, e, &b, "", 0);
    buf_free(&b);
    return n;
}

void respond_log(app_worker_t *aw, http_req_t *req, int route, int status, int upstream_status,
                 uint64_t bytes_out, const char *chat_id)
{
    uint64_t dur_us = (clock_mono_ns() - req->start_ns) / 1000;
    int cls = status <= 0 ? 0 : status / 100;
    if (cls > 5)
        cls = 5;
    M_ADD(aw->m.requests[route][cls], 1);
    metrics_hist_observe(&aw->m.duration[route], dur_us * 1000);
    M_ADD(aw->m.bytes_in, req->body.len);
    M_ADD(aw->m.bytes_out, bytes_out);
    if (log_level_current > LOG_LVL_INFO)
        return;
    const char *rid = respond_request_id(req); /* the one the response carries */
    char client[ADDR_TEXT_MAX], peer[ADDR_TEXT_MAX];
    const ip_addr_t *ca = req->client.set ? &req->client : &req->peer;
    addr_format(ca, client);
    int via = !addr_equal(ca, &req->peer); /* taken from X-Forwarded-For / X-Real-IP */
    if (via)
        addr_format(&req->peer, peer);
    /* Lines about attestation say when it is simulated. */
    int sim = route == ROUTE_REPORT && aw->app->cfg->attestation == ATTEST_MODE_SIMULATED;
    const char *method = llhttp_method_name((llhttp_method_t)req->method);
    int pn = (int)(req->path.n > LOG_PATH_MAX ? LOG_PATH_MAX : req->path.n);
    int st = status > 0 ? status : 499;
    const char *cid = chat_id && *chat_id ? chat_id : NULL;
    if (!log_json) {
        char us[16] = "-";
        if (upstream_status > 0)
            snprintf(us, sizeof us, "%d", upstream_status);
        log_write(LOG_LVL_INFO,
                  "request w=%d %s %.*s status=%d upstream=%s in=%zu out=%llu ms=%.3f id=%s "
                  "request_id=%s client=%s%s%s%s",
                  aw->w ? worker_id(aw->w) : 0, method, pn, req->path.p, st, us, req->body.len,
                  (unsigned long long)bytes_out, (double)dur_us / 1000.0, cid ? cid : "-", rid,
                  client, via ? " peer=" : "", via ? peer : "", sim ? " attestation=SIMULATED" : "");
        return;
    }
    /* JSON: the same fields as members (docs/CONFIG.md, "Logs"). */
    /* Each string escaped into at most 400 bytes (cut short, still a JSON string), so that
     * the members always fit the line (core/log.c: 2048 bytes). */
    char path[400], cidj[400] = "null", f[sizeof path + sizeof cidj + 2 * ADDR_TEXT_MAX + HTTP_REQ_ID_MAX + 400];
    log_json_str(path, sizeof path, req->path.p, (size_t)pn);
    if (cid)
        log_json_str(cidj, sizeof cidj, cid, strlen(cid));
    char us[16] = "null";
    if (upstream_status > 0)
        snprintf(us, sizeof us, "%d", upstream_status);
    snprintf(f, sizeof f,
             "\"worker\":%d,\"method\":\"%s\",\"path\":%s,\"status\":%d,\"upstream_status\":%s,"
             "\"bytes_in\":%zu,\"bytes_out\":%llu,\"ms\":%.3f,\"id\":%s,\"request_id\":\"%s\","
             "\"client\":\"%s\"%s%s%s%s",
             aw->w ? worker_id(aw->w) : 0, method, path, st, us, req->body.len,
             (unsigned long long)bytes_out, (double)dur_us / 1000.0, cidj, rid, client,
             via ? ",\"peer\":\"" : "", via ? peer : "", via ? "\"" : "",
             sim ? ",\"attestation\":\"SIMULATED\"" : "");
    log_write_fields(LOG_LVL_INFO, "request", f);
}

void respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                  const char *json, size_t len)
{
    char hints[E2EE_ACI_HINTS_MAX];
    aci_hints(aw, req, hints); /* before: responding resets req */
    metrics_observe_ttfb(aw, route, req->start_ns);
    respond_log(aw, req, route, status, 0, len, NULL);
    conn_respond(c, status, "application/json", hints[0] ? hints : NULL, json, len);
}

void respond_error_retry(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                         const char *message, unsigned retry_s)
{
    char hints[E2EE_ACI_HINTS_MAX];
    aci_hints(aw, req, hints); /* before: responding resets req */
    metrics_observe_ttfb(aw, route, req->start_ns);
    metrics_count_error(aw, e);
    buf_t b = BUF_INIT;
    error_body(&b, e, message);
    respond_log(aw, req, route, app_error_info(e)->status, 0, b.len, NULL);
    error_send(c, route, e, &b, hints, retry_s);
    buf_free(&b);
}

void respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                   const char *message)
{
    respond_error_retry(aw, c, req, route, e, message, 0);
}
