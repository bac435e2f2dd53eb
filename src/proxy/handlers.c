/* Routes: authentication, the small local endpoints (root, version, signature, attestation
 * report) and the hand-off of engine routes to the relay. Every error is in the OpenAI shape. */
#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <json-c/json.h>

#include "attest/attest.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/app.h"
#include "proxy/reqjson.h"

enum { AUTH_NONE = 0, AUTH_OK = 1, AUTH_TRUSTED = 2, AUTH_MISSING = -1, AUTH_BAD = -2 };

double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int strv_eq(strv_t v, const char *s)
{
    size_t n = strlen(s);
    return v.n == n && memcmp(v.p, s, n) == 0;
}

static int strv_prefix(strv_t v, const char *s)
{
    size_t n = strlen(s);
    return v.n >= n && memcmp(v.p, s, n) == 0;
}

/* ---- errors and logging ---- */

void app_send_error(conn_t *c, http_req_t *req, int status, const char *message, const char *type,
                    const char *code)
{
    buf_t b = BUF_INIT;
    buf_puts(&b, "{\"error\":{\"message\":");
    buf_json_str(&b, message, strlen(message));
    buf_puts(&b, ",\"type\":");
    buf_json_str(&b, type, strlen(type));
    buf_puts(&b, ",\"param\":null,\"code\":");
    if (code)
        buf_json_str(&b, code, strlen(code));
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}}");
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    (void)req;
    conn_respond(c, status, "application/json", extra, b.data, b.len);
    buf_free(&b);
}

void app_log_request(app_worker_t *aw, http_req_t *req, int route, int status, int upstream_status,
                     uint64_t bytes_out, const char *chat_id)
{
    uint64_t dur_us = (now_ns() - req->start_ns) / 1000;
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
              (int)(req->path.n > 200 ? 200 : req->path.n), req->path.p,
              status > 0 ? status : 499, us, req->body.len, (unsigned long long)bytes_out,
              (double)dur_us / 1000.0, chat_id && *chat_id ? chat_id : "-",
              sim ? " attestation=SIMULATED" : "");
}

void app_respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                         const char *json, size_t len)
{
    app_log_request(aw, req, route, status, 0, len, NULL); /* before: responding resets req */
    conn_respond(c, status, "application/json", NULL, json, len);
}

void app_respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                          const char *message, const char *type, const char *code)
{
    app_log_request(aw, req, route, status, 0, 0, NULL);
    app_send_error(c, req, status, message, type, code);
}

/* ---- routing and auth ---- */

static int route_of(http_req_t *req, int *method_ok)
{
    strv_t p = req->path;
    int get = req->method == HTTP_GET, post = req->method == HTTP_POST;
    int r = ROUTE_OTHER;
    *method_ok = 0;
    if (strv_eq(p, "/")) r = ROUTE_ROOT, *method_ok = get;
    else if (strv_eq(p, "/version")) r = ROUTE_VERSION, *method_ok = get;
    else if (strv_eq(p, "/v1/chat/completions")) r = ROUTE_CHAT, *method_ok = post;
    else if (strv_eq(p, "/v1/completions")) r = ROUTE_COMPLETIONS, *method_ok = post;
    else if (strv_prefix(p, "/v1/signature/") && p.n > 14) r = ROUTE_SIGNATURE, *method_ok = get;
    else if (strv_eq(p, "/v1/attestation/report")) r = ROUTE_REPORT, *method_ok = get;
    else if (strv_eq(p, "/v1/models")) r = ROUTE_MODELS, *method_ok = get;
    else if (strv_eq(p, "/v1/metrics")) r = ROUTE_METRICS, *method_ok = get;
    else if (strv_eq(p, "/v1/embeddings") || strv_eq(p, "/v1/tokenize") ||
             strv_eq(p, "/v1/detokenize") || strv_eq(p, "/v1/rerank") || strv_eq(p, "/v1/score"))
        r = ROUTE_PASSTHROUGH, *method_ok = post;
    return r;
}

static int route_needs_auth(int r)
{
    return r == ROUTE_CHAT || r == ROUTE_COMPLETIONS || r == ROUTE_SIGNATURE ||
           r == ROUTE_REPORT || r == ROUTE_PASSTHROUGH;
}

static int token_in(const uint8_t h[32], const uint8_t (*set)[32], int n)
{
    int found = 0;
    for (int i = 0; i < n; i++)
        found |= sodium_memcmp(h, set[i], 32) == 0;
    return found;
}

static int check_auth(const config_t *cfg, strv_t a)
{
    if (a.n < 7 || memcmp(a.p, "Bearer ", 7) != 0)
        return AUTH_MISSING;
    uint8_t h[32];
    sha256(a.p + 7, a.n - 7, h);
    if (!token_in(h, cfg->token_hash, cfg->ntokens))
        return AUTH_BAD;
    return token_in(h, cfg->trusted_hash, cfg->ntrusted) ? AUTH_TRUSTED : AUTH_OK;
}

static void send_auth_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int auth)
{
    app_respond_error(aw, c, req, route, 401,
                  auth == AUTH_MISSING ? "Invalid or missing Authorization header" : "Invalid token",
                  "authentication_error", "invalid_api_key");
}

static int on_headers(conn_t *c, http_req_t *req)
{
    app_worker_t *aw = worker_user(conn_worker(c));
    int ok;
    req->app_route = route_of(req, &ok);
    req->app_auth = route_needs_auth(req->app_route) ? check_auth(aw->app->cfg, req->authorization)
                                                     : AUTH_NONE;
    /* Refuse an unauthenticated body before reading it. */
    int has_body = req->has_content_length ? req->content_length > 0 : 1;
    if (req->app_auth < 0 && has_body && req->method == HTTP_POST) {
        send_auth_error(aw, c, req, req->app_route, req->app_auth);
        return 1;
    }
    return 0;
}

/* ---- query strings ---- */

/* Percent-decodes src into out (NUL-terminated). -1 if malformed or too long. */
static long pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hex_digit(s[i + 1])) < 0 || (lo = hex_digit(s[i + 2])) < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+')
            ch = ' ';
        if (o + 1 >= cap || ch == '\0')
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return (long)o;
}

/* Value of `key` in the query: length, -1 when absent, -2 when malformed or over cap. */
long app_query_get(strv_t q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key), i = 0;
    while (i < q.n) {
        size_t end = i;
        while (end < q.n && q.p[end] != '&')
            end++;
        const char *eq = memchr(q.p + i, '=', end - i);
        size_t nl = eq ? (size_t)(eq - (q.p + i)) : end - i;
        if (nl == kl && memcmp(q.p + i, key, kl) == 0) {
            const char *v = eq ? eq + 1 : q.p + end;
            long r = pct_decode(v, (size_t)(q.p + end - v), out, cap);
            return r < 0 ? -2 : r;
        }
        i = end + 1;
    }
    return -1;
}

/* signing_algo: 0 ecdsa, 1 ed25519, -1 invalid (400). */
int app_parse_algo(strv_t q)
{
    char v[32];
    long n = app_query_get(q, "signing_algo", v, sizeof v);
    if (n == -1)
        return 0;
    if (n < 0)
        return -1;
    if (!strcmp(v, "ecdsa"))
        return 0;
    if (!strcmp(v, "ed25519"))
        return 1;
    return -1;
}

const char APP_INVALID_ALGO[] = "Invalid signing algorithm. Must be 'ed25519' or 'ecdsa'";

/* ---- signature ---- */

#define APP_KIND_SIGNATURE 0x5349474e

/* A signature lookup waiting for Redis. Owned by the pending GET (whose callback always runs,
 * on this loop): when the client goes away first, on_abort only forgets the connection. */
typedef struct sig_job {
    int kind; /* APP_KIND_SIGNATURE: first, tells jobs from relays in on_abort */
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    size_t klen;
    char key[STORE_MAX_KEY + 1];
} sig_job_t;

static void respond_not_found(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    app_respond_error(aw, c, req, ROUTE_SIGNATURE, 404, "Chat id not found or expired", "not_found", NULL);
}

/* Answers from a record (ours, or another replica's through Redis): text, signature_ecdsa,
 * signing_address_ecdsa, signature_ed25519, signing_address_ed25519. */
static void respond_record(app_worker_t *aw, conn_t *c, http_req_t *req, const char *rec, size_t len)
{
    int algo = app_parse_algo(req->query);
    if (algo < 0) {
        app_respond_error(aw, c, req, ROUTE_SIGNATURE, 400, APP_INVALID_ALGO, "invalid_signing_algo", NULL);
        return;
    }
    json_tokener *tok = json_tokener_new();
    json_object *o = NULL;
    if (tok && len <= STORE_MAX_VAL) {
        o = json_tokener_parse_ex(tok, rec, (int)len);
        if (o && (json_tokener_get_error(tok) != json_tokener_success ||
                  !json_object_is_type(o, json_type_object))) {
            json_object_put(o);
            o = NULL;
        }
    }
    if (tok)
        json_tokener_free(tok);
    json_object *t = NULL, *s = NULL, *a = NULL;
    const char *sk = algo ? "signature_ed25519" : "signature_ecdsa";
    const char *ak = algo ? "signing_address_ed25519" : "signing_address_ecdsa";
    if (!o || !json_object_object_get_ex(o, "text", &t) || !json_object_object_get_ex(o, sk, &s) ||
        !json_object_object_get_ex(o, ak, &a) || !json_object_is_type(t, json_type_string) ||
        !json_object_is_type(s, json_type_string) || !json_object_is_type(a, json_type_string)) {
        json_object_put(o);
        app_respond_error(aw, c, req, ROUTE_SIGNATURE, 500, "stored signature record is corrupt",
                      "server_error", NULL);
        return;
    }
    buf_t b = BUF_INIT;
    buf_puts(&b, "{\"text\":");
    buf_json_str(&b, json_object_get_string(t), (size_t)json_object_get_string_len(t));
    buf_puts(&b, ",\"signature\":");
    buf_json_str(&b, json_object_get_string(s), (size_t)json_object_get_string_len(s));
    buf_puts(&b, ",\"signing_address\":");
    buf_json_str(&b, json_object_get_string(a), (size_t)json_object_get_string_len(a));
    buf_printf(&b, ",\"signing_algo\":\"%s\"}", algo ? "ed25519" : "ecdsa");
    app_respond_json(aw, c, req, ROUTE_SIGNATURE, 200, b.data, b.len);
    buf_free(&b);
    json_object_put(o);
}

/* The memory layer: this process's own records. */
static void respond_local(app_worker_t *aw, conn_t *c, http_req_t *req, const char *key, size_t klen)
{
    buf_t rec = BUF_INIT;
    if (store_get(aw->app->store, key, klen, wall_now(), &rec) != STORE_OK)
        respond_not_found(aw, c, req);
    else
        respond_record(aw, c, req, rec.data, rec.len);
    buf_free(&rec);
}

/* Redis answered (or failed, timed out, or the connection dropped): a non-empty value wins,
 * anything else falls back to memory. */
static void signature_redis_done(void *ud, int rc, const char *val, size_t len)
{
    sig_job_t *j = ud;
    if (j->c) {
        conn_set_app(j->c, NULL);
        if (rc == RSTORE_OK && len > 0)
            respond_record(j->aw, j->c, j->req, val, len);
        else
            respond_local(j->aw, j->c, j->req, j->key, j->klen);
    }
    free(j);
}

static void signature_on_abort(void *job)
{
    ((sig_job_t *)job)->c = NULL; /* the Redis callback frees the job */
}

static void handle_signature(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    const config_t *cfg = aw->app->cfg;
    char id[600];
    long idn = pct_decode(req->path.p + 14, req->path.n - 14, id, sizeof id);
    if (idn <= 0 || idn > 256 || memchr(id, '/', (size_t)idn)) {
        respond_not_found(aw, c, req);
        return;
    }
    char key[STORE_MAX_KEY + 1];
    int kl = snprintf(key, sizeof key, "%s:chat:%s", cfg->model_name, id);
    if (kl <= 0 || (size_t)kl >= sizeof key) {
        respond_not_found(aw, c, req);
        return;
    }
    if (aw->redis) {
        sig_job_t *j = malloc(sizeof *j);
        if (j) {
            j->kind = APP_KIND_SIGNATURE;
            j->aw = aw;
            j->c = c;
            j->req = req;
            j->klen = (size_t)kl;
            memcpy(j->key, key, (size_t)kl + 1);
            conn_set_app(c, j);
            if (rstore_get(aw->redis, key, (size_t)kl, signature_redis_done, j) == 0)
                return;
            conn_set_app(c, NULL);
            free(j);
        }
        /* Redis not usable now (down, breaker open, out of memory): memory only. */
    }
    respond_local(aw, c, req, key, (size_t)kl);
}

/* ---- engine routes ---- */

static void handle_completion(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    reqjson_t rj;
    buf_t rewritten = BUF_INIT;
    char err[200];
    if (reqjson_inspect(req->body.data ? req->body.data : "", req->body.len, &rj, &rewritten, err,
                        sizeof err) != 0) {
        buf_free(&rewritten);
        app_respond_error(aw, c, req, route, 400, err, "invalid_request_error", "invalid_json");
        return;
    }
    char req_hash[65];
    if (req->x_request_hash.n) {
        if (req->app_auth != AUTH_TRUSTED) {
            LOG_DEBUG("X-Request-Hash ignored: caller is not trusted to set it");
            req->x_request_hash.n = 0;
        } else if (req->x_request_hash.n != 64 ||
                   !hex_is_hex(req->x_request_hash.p, req->x_request_hash.n)) {
            buf_free(&rewritten);
            app_respond_error(aw, c, req, route, 400, "X-Request-Hash must be 64 hex characters",
                          "invalid_request_error", "invalid_request_hash");
            return;
        }
    }
    if (req->x_request_hash.n) {
        for (int i = 0; i < 64; i++)
            req_hash[i] = (char)(req->x_request_hash.p[i] | 0x20);
        req_hash[64] = '\0';
        LOG_INFO("Using client-provided request hash: %s", req_hash);
    } else {
        sha256_hex(req->body.data ? req->body.data : "", req->body.len, req_hash);
        LOG_DEBUG("Calculated request hash: %s", req_hash);
    }
    strv_t up = req->path, q = {"", 0};
    if (rj.rewritten)
        relay_start(aw, c, req, route, RELAY_SIGNED, "POST", up, q, NULL, 0, &rewritten, req_hash);
    else {
        buf_free(&rewritten);
        relay_start(aw, c, req, route, RELAY_SIGNED, "POST", up, q, req->body.data, req->body.len,
                    NULL, req_hash);
    }
}

static void handle_passthrough(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    strv_t up = req->path;
    if (strv_eq(up, "/v1/tokenize"))
        up = (strv_t){"/tokenize", 9};
    else if (strv_eq(up, "/v1/detokenize"))
        up = (strv_t){"/detokenize", 11};
    relay_start(aw, c, req, route, RELAY_PASS, req->method == HTTP_GET ? "GET" : "POST", up,
                req->query, req->body.data, req->body.len, NULL, NULL);
}

static void on_request(conn_t *c, http_req_t *req)
{
    app_worker_t *aw = worker_user(conn_worker(c));
    int route = req->app_route, ok;
    route_of(req, &ok);
    if (route == ROUTE_OTHER) {
        app_respond_error(aw, c, req, route, 404, "Not Found", "not_found", NULL);
        return;
    }
    if (!ok) {
        app_respond_error(aw, c, req, route, 405, "Method Not Allowed", "invalid_request_error", NULL);
        return;
    }
    if (req->app_auth < 0) {
        send_auth_error(aw, c, req, route, req->app_auth);
        return;
    }
    switch (route) {
    case ROUTE_ROOT:
        app_respond_json(aw, c, req, route, 200, "{}", 2);
        break;
    case ROUTE_VERSION: {
        char b[200];
        int n = snprintf(b, sizeof b, "{\"name\":\"vllm-proxy\",\"version\":\"%s\",\"attestation\":\"%s\"}",
                         config_version(), config_attest_mode_name(aw->app->cfg->attestation));
        app_respond_json(aw, c, req, route, 200, b, (size_t)n);
        break;
    }
    case ROUTE_CHAT:
    case ROUTE_COMPLETIONS:
        handle_completion(aw, c, req, route);
        break;
    case ROUTE_SIGNATURE:
        handle_signature(aw, c, req);
        break;
    case ROUTE_REPORT:
        handle_report(aw, c, req);
        break;
    case ROUTE_MODELS:
    case ROUTE_PASSTHROUGH:
        handle_passthrough(aw, c, req, route);
        break;
    case ROUTE_METRICS:
        relay_start(aw, c, req, route, RELAY_METRICS, "GET", (strv_t){"/metrics", 8},
                    (strv_t){"", 0}, NULL, 0, NULL, NULL);
        break;
    }
}

static void on_abort(conn_t *c, void *app)
{
    if (app_is_relay(app))
        relay_on_abort(c, app);
    else if (*(const int *)app == APP_KIND_SIGNATURE)
        signature_on_abort(app);
    else
        report_on_abort(app);
}

static void on_drain(conn_t *c, void *app)
{
    if (app_is_relay(app))
        relay_on_drain(c, app);
}

const http_handler_t app_http_handler = {on_headers, on_request, on_abort, on_drain};
