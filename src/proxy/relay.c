/* The relay: forwards one request to the engine and streams the answer back as it arrives.
 * For completions it hashes the exact body bytes sent to the client, finds the chat id (SSE
 * framer for streams, the top-level id scanner otherwise) and, only for a complete answer,
 * signs "reqhash:resphash" with both keys and stores the record before the client can see
 * the end of the body. Nothing here grows with the response: bytes are hashed and written
 * through; relays are recycled per worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/app.h"
#include "proxy/idscan.h"
#include "proxy/sse.h"

#define RELAY_MAGIC 0x52454c59
#define MAX_FREE_RELAYS 256

struct relay {
    int magic; /* first: tells relays from report jobs in on_abort */
    relay_t *next_free;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    upstream_req_t *up;
    int route, kind;
    buf_t own_body;
    sha_ctx *sha;
    sse_t sse;
    idscan_t ids;
    int is_sse, up_status, head_sent, finalized, parse_failed, eof_framed;
    int64_t up_cl;
    uint64_t up_seen, bytes_out;
    char req_hash[65];
    const char *chat_id;
};

static void relay_on_head(void *ud, int status, strv_t ctype, int64_t cl);
static void relay_on_body(void *ud, const char *p, size_t n);
static void relay_on_done(void *ud, int err, int status);
static void relay_on_read_done(void *ud);
static const upstream_cbs_t RELAY_CBS = {relay_on_head, relay_on_body, relay_on_done,
                                         relay_on_read_done};

static relay_t *relay_get(app_worker_t *aw)
{
    relay_t *r = aw->free_relays;
    if (r) {
        aw->free_relays = r->next_free;
        aw->nfree_relays--;
        return r;
    }
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->magic = RELAY_MAGIC;
    r->sha = sha256_new();
    if (!r->sha) {
        free(r);
        return NULL;
    }
    sse_init(&r->sse);
    return r;
}

static void relay_put(relay_t *r)
{
    app_worker_t *aw = r->aw;
    M_SUB(aw->m.streams_active, 1);
    buf_free(&r->own_body);
    r->c = NULL;
    r->req = NULL;
    r->up = NULL;
    if (aw->nfree_relays < MAX_FREE_RELAYS) {
        r->next_free = aw->free_relays;
        aw->free_relays = r;
        aw->nfree_relays++;
        return;
    }
    sha_free(r->sha);
    sse_free(&r->sse);
    free(r);
}

void relay_free_list(app_worker_t *aw)
{
    while (aw->free_relays) {
        relay_t *r = aw->free_relays;
        aw->free_relays = r->next_free;
        sha_free(r->sha);
        sse_free(&r->sse);
        free(r);
    }
    aw->nfree_relays = 0;
}

int app_is_relay(const void *p) { return *(const int *)p == RELAY_MAGIC; }

int relay_start(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int kind,
                const char *method, strv_t upstream_path, strv_t query, const void *body,
                size_t len, buf_t *own_body, const char *req_hash)
{
    relay_t *r = relay_get(aw);
    if (!r) {
        if (own_body)
            buf_free(own_body);
        app_log_request(aw, req, route, 503, 0, 0, NULL);
        app_send_error(c, req, 503, "out of memory", "server_error", NULL);
        return -1;
    }
    M_ADD(aw->m.streams_active, 1);
    r->aw = aw;
    r->c = c;
    r->req = req;
    r->route = route;
    r->kind = kind;
    r->is_sse = r->up_status = r->head_sent = r->finalized = r->parse_failed = r->eof_framed = 0;
    r->up_cl = -1;
    r->up_seen = r->bytes_out = 0;
    r->chat_id = NULL;
    if (own_body) {
        r->own_body = *own_body;
        *own_body = (buf_t)BUF_INIT;
        body = r->own_body.data;
        len = r->own_body.len;
    }
    if (req_hash)
        memcpy(r->req_hash, req_hash, 65);
    buf_t *h = &aw->scratch;
    buf_reset(h);
    if (body) {
        buf_puts(h, "Content-Type: ");
        if (req->content_type.n)
            buf_append(h, req->content_type.p, req->content_type.n);
        else
            buf_puts(h, "application/json");
        buf_puts(h, "\r\n");
    }
    if (req->accept.n) {
        buf_puts(h, "Accept: ");
        buf_append(h, req->accept.p, req->accept.n);
        buf_puts(h, "\r\n");
    }
    if (req->x_request_id.n) {
        buf_puts(h, "X-Request-Id: ");
        buf_append(h, req->x_request_id.p, req->x_request_id.n);
        buf_puts(h, "\r\n");
    }
    conn_set_app(c, r);
    conn_cork(c);
    r->up = upstream_send(aw->pool, method, upstream_path, query, h->data, body, len, &RELAY_CBS, r);
    if (!r->up) {
        conn_set_app(c, NULL);
        app_log_request(aw, req, route, 503, 0, 0, NULL);
        app_send_error(c, req, 503, "out of memory", "server_error", NULL);
        relay_put(r);
        return -1;
    }
    return 0;
}

static int is_signed_ok(const relay_t *r)
{
    return r->kind == RELAY_SIGNED && r->up_status >= 200 && r->up_status < 300;
}

static void relay_on_head(void *ud, int status, strv_t ctype, int64_t cl)
{
    relay_t *r = ud;
    r->up_status = status;
    r->eof_framed = cl == UPSTREAM_CL_EOF;
    if (cl < 0)
        cl = -1; /* to the client: chunked */
    r->up_cl = cl;
    if (r->kind == RELAY_METRICS) {
        if (status != 200)
            return; /* answered in relay_on_done */
        buf_t m = BUF_INIT;
        metrics_render(r->aw->app, &m);
        buf_puts(&m, "\n# --- vLLM Backend Metrics ---\n\n");
        r->head_sent = 1;
        r->bytes_out += m.len;
        /* A failed write closed the connection: relay_on_abort released r already. */
        if (conn_start_response(r->c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, -1) == 0)
            conn_write_body(r->c, m.data, m.len);
        buf_free(&m);
        return;
    }
    char ct[160];
    size_t n = ctype.n < sizeof ct - 1 ? ctype.n : 0;
    memcpy(ct, ctype.p, n);
    ct[n] = '\0';
    r->is_sse = n >= 17 && strncasecmp(ct, "text/event-stream", 17) == 0;
    if (is_signed_ok(r)) {
        sha256_reset(r->sha);
        sse_reset(&r->sse);
        idscan_init(&r->ids);
    }
    r->head_sent = 1;
    conn_start_response(r->c, status, n ? ct : "application/json",
                        r->is_sse ? "X-Accel-Buffering: no\r\nCache-Control: no-cache\r\n" : NULL,
                        cl);
}

/* Signs and stores the record for a complete answer. Runs before the client can see the end. */
static void relay_finalize(relay_t *r)
{
    if (r->finalized)
        return;
    r->finalized = 1;
    app_worker_t *aw = r->aw;
    const char *id = NULL;
    const char *why = NULL;
    if (r->parse_failed)
        why = "response could not be parsed";
    else if (r->eof_framed && !r->is_sse)
        why = "engine body delimited by its close: a cut cannot be told from the end";
    else if (r->is_sse) {
        if (sse_finish(&r->sse) != 0)
            why = "event stream malformed";
        else if (!sse_done_seen(&r->sse))
            why = "stream ended without [DONE]";
        else if (!(id = sse_chat_id(&r->sse)))
            why = "no id in the stream";
    } else if (!(id = idscan_id(&r->ids)))
        why = "no id in the response";
    if (why) {
        M_ADD(aw->m.signatures_skipped, 1);
        LOG_WARN("no signature for %.*s: %s", (int)r->req->path.n, r->req->path.p, why);
        return;
    }
    uint8_t d[32];
    char text[64 + 1 + 64 + 1];
    memcpy(text, r->req_hash, 64);
    text[64] = ':';
    if (sha_final(r->sha, d) != 0)
        return;
    hex_encode(text + 65, d, 32);
    char se[133], sd[129];
    signer_t *s = aw->app->signer;
    if (signer_sign_ecdsa(s, text, 129, se) != 0 || signer_sign_ed25519(s, text, 129, sd) != 0) {
        M_ADD(aw->m.signatures_skipped, 1);
        LOG_ERROR("signing failed for id %s", id);
        return;
    }
    char rec[700];
    int rl = snprintf(rec, sizeof rec,
                      "{\"text\": \"%s\", \"signature_ecdsa\": \"%s\", \"signing_address_ecdsa\": \"%s\", "
                      "\"signature_ed25519\": \"%s\", \"signing_address_ed25519\": \"%s\"}",
                      text, se, signer_ecdsa_address(s), sd, signer_ed25519_pubkey_hex(s));
    char key[STORE_MAX_KEY + 1];
    int kl = snprintf(key, sizeof key, "%s:chat:%s", aw->app->cfg->model_name, id);
    if (rl <= 0 || (size_t)rl >= sizeof rec || kl <= 0 || (size_t)kl >= sizeof key) {
        M_ADD(aw->m.signatures_skipped, 1);
        return;
    }
    int rc = store_put(aw->app->store, key, (size_t)kl, rec, (size_t)rl, clock_wall_s());
    if (rc == STORE_OK) {
        M_ADD(aw->m.signatures_stored, 1);
        r->chat_id = id;
        /* Write-through for the other replicas; never waits, never overwrites (NX). */
        if (aw->redis)
            rstore_set_nx(aw->redis, key, (size_t)kl, rec, (size_t)rl);
    } else if (rc == STORE_EXISTS) {
        M_ADD(aw->m.signature_collisions, 1);
        LOG_WARN("signature record for id %s already exists: kept the first, dropped this one", id);
    } else {
        M_ADD(aw->m.signatures_skipped, 1);
        LOG_ERROR("could not store the signature for id %s", id);
    }
}

static void relay_on_body(void *ud, const char *p, size_t n)
{
    relay_t *r = ud;
    if (r->kind == RELAY_METRICS && r->up_status != 200)
        return;
    if (is_signed_ok(r)) {
        sha_update(r->sha, p, n);
        if (r->is_sse) {
            if (!r->parse_failed && sse_feed(&r->sse, p, n) != 0)
                r->parse_failed = 1;
        } else {
            idscan_feed(&r->ids, p, n);
        }
        r->up_seen += n;
        if (r->up_cl >= 0 && r->up_seen == (uint64_t)r->up_cl)
            relay_finalize(r);
    }
    r->bytes_out += n;
    conn_write_body(r->c, p, n); /* corked: leaves with the rest of this read */
}

/* Everything one engine read produced goes out in one write; then backpressure. */
static void relay_on_read_done(void *ud)
{
    relay_t *r = ud;
    conn_t *c = r->c;
    if (!c || conn_flush(c) != 0)
        return; /* the connection closed: relay_on_abort released r */
    if (conn_should_pause_source(c) && r->up)
        upstream_pause(r->up);
}

static void relay_on_done(void *ud, int err, int status)
{
    relay_t *r = ud;
    app_worker_t *aw = r->aw;
    conn_t *c = r->c;
    r->up = NULL;
    conn_set_app(c, NULL);
    if (r->kind == RELAY_METRICS && (err || status != 200)) {
        buf_t m = BUF_INIT;
        metrics_render(aw->app, &m);
        if (err)
            buf_printf(&m, "\n# --- vLLM Backend Metrics ---\n\n# Error fetching vLLM metrics: upstream %s\n",
                       err == UPS_E_CONNECT ? "unreachable" : err == UPS_E_TIMEOUT ? "timed out" : "failed");
        else
            buf_printf(&m, "\n# --- vLLM Backend Metrics ---\n\n# Failed to fetch vLLM metrics: %d\n", status);
        if (r->head_sent) {
            conn_write_body(c, m.data, m.len);
            app_log_request(aw, r->req, r->route, 200, status, r->bytes_out + m.len, NULL);
            conn_end_response(c);
        } else {
            app_log_request(aw, r->req, r->route, 200, status, m.len, NULL);
            conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, m.data, m.len);
        }
        buf_free(&m);
        relay_put(r);
        return;
    }
    if (err) {
        static const int kinds[] = {[UPS_E_CONNECT] = UPERR_CONNECT, [UPS_E_TIMEOUT] = UPERR_TIMEOUT,
                                    [UPS_E_CLOSED] = UPERR_CLOSED, [UPS_E_PROTOCOL] = UPERR_PROTOCOL,
                                    [UPS_E_NOMEM] = UPERR_PROTOCOL};
        M_ADD(aw->m.upstream_errors[kinds[err]], 1);
        if (r->kind == RELAY_SIGNED)
            M_ADD(aw->m.signatures_skipped, 1);
        if (!r->head_sent) {
            int st = err == UPS_E_TIMEOUT ? 504 : 502;
            const char *msg = err == UPS_E_CONNECT   ? "the engine is unreachable"
                              : err == UPS_E_TIMEOUT ? "the engine did not answer in time"
                                                     : "the engine closed the connection or sent a malformed response";
            app_log_request(aw, r->req, r->route, st, 0, 0, NULL);
            app_send_error(c, r->req, st, msg, "upstream_error", err == UPS_E_TIMEOUT ? "upstream_timeout" : "upstream_unavailable");
        } else {
            LOG_WARN("engine response for %.*s cut short (%s): closing the client connection",
                     (int)r->req->path.n, r->req->path.p,
                     err == UPS_E_TIMEOUT ? "timeout" : "connection closed or malformed");
            app_log_request(aw, r->req, r->route, r->up_status, r->up_status, r->bytes_out, NULL);
            conn_abort(c);
        }
        relay_put(r);
        return;
    }
    if (is_signed_ok(r))
        relay_finalize(r);
    else if (r->kind == RELAY_SIGNED)
        M_ADD(aw->m.signatures_skipped, 1);
    app_log_request(aw, r->req, r->route, r->up_status, r->up_status, r->bytes_out, r->chat_id);
    conn_end_response(c);
    relay_put(r);
}

void relay_on_abort(conn_t *c, void *app)
{
    (void)c;
    relay_t *r = app;
    if (r->up) {
        upstream_cancel(r->up); /* closes the engine connection: the engine stops generating */
        r->up = NULL;
    }
    if (r->kind == RELAY_SIGNED && !r->chat_id)
        M_ADD(r->aw->m.signatures_skipped, 1);
    app_log_request(r->aw, r->req, r->route, 0, r->up_status, r->bytes_out, NULL);
    relay_put(r);
}

void relay_on_drain(conn_t *c, void *app)
{
    (void)c;
    relay_t *r = app;
    if (r->up)
        upstream_resume(r->up);
}
