/* The relay (proxy/relay.h). Nothing here grows with the response: bytes are hashed and
 * written through (the connection is corked so that one engine read leaves in one write);
 * relays are recycled per worker.
 *
 * E2EE answers whose format seals every field with a fresh ephemeral key (NEAR, ACI v2:
 * e2ee_resp_per_field_keys) are sealed on the crypto threads (proxy/e2ee_pool.h), not on the
 * loop: the engine's bytes are appended to the relay's pending input (plaintext, wiped), and
 * one job at a time per relay feeds them to the session on a crypto thread into the job's
 * output; when the job is back the loop writes that output (hashed, scanned, then written, as
 * inline) and submits what was pending meanwhile. The session's state (the unfinished SSE
 * line) is sequential, so one relay never has two jobs in flight. Reading from the engine
 * pauses while the pending input is over E2EE_PEND_MAX. A relay is released only when no job
 * of it is in flight; a job that comes back for a client that left is wiped and dropped. */
#include "proxy/relay.h"

#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_pool.h"
#include "proxy/e2ee_sess.h"
#include "proxy/idscan.h"
#include "proxy/inband.h"
#include "proxy/respond.h"
#include "proxy/sse.h"

#define MAX_FREE_RELAYS 256
#define SSE_CTYPE "text/event-stream"
#define SSE_HEADERS "X-Accel-Buffering: no\r\nCache-Control: no-cache\r\n"
/* The engine's request id is the request's own (respond_request_id: vLLM makes it the
 * completion id, chatcmpl-<id>, and so the key of the signature record); the server sends it
 * back to the client in X-Request-Id with every response head. */
#define RID_MAX HTTP_REQ_ID_MAX
#define RID_HEADER "X-Request-Id: "
/* Offloaded E2EE: engine bytes pending beyond this pause reading from the engine. */
#define E2EE_PEND_MAX (64u << 10)

/* relay.flags */
enum {
    RF_SSE = 1u << 0,          /* the engine answers with an event stream */
    RF_HEAD_SENT = 1u << 1,    /* the client has the response head */
    RF_FINALIZED = 1u << 2,    /* the signature decision was taken */
    RF_PARSE_FAILED = 1u << 3, /* the event stream was malformed */
    RF_EOF_FRAMED = 1u << 4,   /* the engine's body ends with its close */
    RF_E2EE = 1u << 5,         /* the answer goes through the E2EE encryptor (proxy/e2ee.h) */
    RF_E2EE_ENDED = 1u << 6,   /* the encryptor has had the whole answer */
    RF_E2EE_FAILED = 1u << 7,  /* it could not encrypt: nothing more is sent, the client is cut */
    RF_OFFLOAD = 1u << 8,      /* E2EE sealed on the crypto threads (proxy/e2ee_pool.h) */
    RF_IN_ENDED = 1u << 9,     /* offloaded: the engine's body is complete (pending + finish) */
    RF_ENGINE_DONE = 1u << 10, /* offloaded: the exchange ended well; the client's end waits */
    RF_CLIENT_SLOW = 1u << 11, /* the client's write queue is over its high watermark */
    RF_PAUSED = 1u << 12,      /* reading from the engine is paused (slow client, pending) */
    RF_E2EE_BUSY = 1u << 13,   /* offloaded: the crypto threads' queue was full (503) */
    RF_ANNOUNCE = 1u << 14,     /* the record's id goes out in X-Signature-Id (id_prefix routes) */
    RF_HOLD = 1u << 15,        /* the head (and r->hold) wait until that id is known */
    RF_ENGINE_BUSY = 1u << 16, /* ENGINE_BUSY_AS_429: the engine's 503/429 becomes our 429 */
};
/* relay.ib: what the answer's head says of in-band signatures (proxy/inband.h). */
enum ib_how {
    IBH_NONE = 0, /* nothing: not asked, or an answer that is not signed */
    IBH_HEADERS,  /* the whole body is held; the fields go in the head once it is signed */
    IBH_TRAILERS, /* the head waits for the id; the fields end the chunked body */
    IBH_UNAVAIL,  /* "unavailable; reason=<ib_reason>" */
};

/* relay.done: the sides that have let go; the relay is released when both have. */
enum { DONE_CLIENT = 1u << 0, DONE_ENGINE = 1u << 1, DONE_BOTH = DONE_CLIENT | DONE_ENGINE };

typedef struct relay relay_t;

/* One sealing job (offloaded E2EE): in = the engine bytes it feeds, out = what the session
 * emitted (both wiped after use; their memory is kept for the relay's next job). */
typedef struct relay_job {
    e2ee_job_t base;
    relay_t *r;
    struct e2ee_sess *sess;
    buf_t in, out;
    int finish; /* then e2ee_resp_finish: the engine's body is complete */
    int rc;
} relay_job_t;

struct relay {
    conn_owner_t owner; /* the client connection's owner interface */
    relay_t *next_free;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    upstream_req_t *up;
    int route;
    enum relay_kind kind;
    unsigned flags, done;
    unsigned in_cb; /* inside an engine callback: release waits until it returns */
    buf_t own_body;
    sha_ctx *sha;
    sse_t sse;
    idscan_t ids;
    int up_status;
    int64_t up_cl;
    uint64_t up_seen, bytes_out;
    uint64_t sent_ns; /* when the engine request was sent (vllm_proxy_engine_request_duration) */
    char req_hash[SIG_HASH_HEX_LEN + 1];
    char rid[RID_MAX + 1]; /* the engine's request id, also sent back to the client */
    const char *chat_id;
    struct e2ee_sess *e2ee;
    char ctype[UPSTREAM_CTYPE_MAX + 1]; /* E2EE JSON answers: the head waits for the encrypted body */
    buf_t pend;      /* offloaded E2EE: engine bytes not yet handed to a job (plaintext, wiped) */
    relay_job_t job; /* offloaded E2EE: the one job of this relay */
    int job_busy;    /* the job is in the pool: the relay is not released before it is back */
    const char *id_prefix;              /* relay_req_t.id_prefix */
    buf_t hold;                         /* RF_HOLD: body bytes not yet sent (<= RELAY_HOLD_MAX + a read) */
    char sig_id[SIG_ID_MAX + 1];        /* RF_ANNOUNCE: the record's id, "" until chosen */
    int ib_want;                        /* enum inband_want (relay_req_t.inband) */
    int te_trailers;                    /* the request sent TE: trailers */
    int ib;                             /* enum ib_how, decided at the engine's head */
    int ib_reason;                      /* IBH_UNAVAIL: enum inband_reason */
    size_t ib_held;                     /* IBH_HEADERS: bytes of hold counted in g_ib_held */
    int ib_signed;                      /* ib_sig holds this answer's stored signatures */
    sigstore_sig_t ib_sig;
};

static void relay_on_head(void *ud, int status, strv_t ctype, int64_t cl);
static void relay_on_body(void *ud, const char *p, size_t n);
static void relay_on_done(void *ud, int err, int status);
static void relay_on_read_done(void *ud);
static const upstream_cbs_t RELAY_CBS = {relay_on_head, relay_on_body, relay_on_done,
                                         relay_on_read_done};
static void relay_on_abort(conn_owner_t *o, conn_t *c);
static void relay_on_drain(conn_owner_t *o, conn_t *c);
static const conn_owner_ops_t RELAY_OPS = {"relay", relay_on_abort, relay_on_drain};

static void relay_job_work(e2ee_job_t *j);
static void relay_job_done(e2ee_job_t *j);

/* Body bytes held for in-band headers by every relay of the process (INBAND_HOLD_TOTAL). */
static _Atomic size_t g_ib_held;

/* IBH_HEADERS: counts the hold's growth; 0, or -1 when the process-wide total would pass
 * INBAND_HOLD_TOTAL (nothing counted then). */
static int ib_hold_count(relay_t *r)
{
    if (r->hold.len <= r->ib_held)
        return 0;
    size_t d = r->hold.len - r->ib_held;
    size_t now = atomic_fetch_add(&g_ib_held, d) + d;
    if (now > r->aw->app->cfg->inband_hold_total) {
        atomic_fetch_sub(&g_ib_held, d);
        return -1;
    }
    r->ib_held = r->hold.len;
    return 0;
}

/* The hold was sent or dropped: its bytes leave the total. */
static void ib_hold_uncount(relay_t *r)
{
    if (r->ib_held) {
        atomic_fetch_sub(&g_ib_held, r->ib_held);
        r->ib_held = 0;
    }
}

static void relay_destroy(relay_t *r)
{
    buf_free(&r->hold);
    sha_free(r->sha);
    sse_free(&r->sse);
    free(r);
}

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
    r->owner.ops = &RELAY_OPS;
    r->job.base.work = relay_job_work;
    r->job.base.done = relay_job_done;
    r->job.r = r;
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
    if (r->e2ee) { /* the forwarded body held the decrypted prompt */
        e2ee_sess_free(r->e2ee);
        r->e2ee = NULL;
        e2ee_wipe_buf(&r->own_body);
        e2ee_wipe_buf(&r->pend); /* offloaded sealing: its buffers (empty, wiped, or unused) */
        e2ee_wipe_buf(&r->job.in);
        e2ee_wipe_buf(&r->job.out);
        r->job.sess = NULL;
    }
    buf_free(&r->own_body);
    ib_hold_uncount(r);
    buf_free(&r->hold); /* up to 64 KiB, and only on some routes: not kept for the next one */
    r->c = NULL;
    r->req = NULL;
    r->up = NULL;
    if (aw->nfree_relays < MAX_FREE_RELAYS) {
        r->next_free = aw->free_relays;
        aw->free_relays = r;
        aw->nfree_relays++;
        return;
    }
    relay_destroy(r);
}

/* One side let go; the relay goes back to the free list once both have, no engine callback
 * is on the stack and no sealing job of it is in flight. */
static void relay_release(relay_t *r, unsigned side)
{
    r->done |= side;
    if (r->done == DONE_BOTH && r->in_cb == 0 && !r->job_busy)
        relay_put(r);
}

/* Brackets every engine callback: a release asked for inside it happens on the way out. */
static void cb_enter(relay_t *r) { r->in_cb++; }
static void cb_leave(relay_t *r) { r->in_cb--, relay_release(r, 0); }

void relay_free_list(app_worker_t *aw)
{
    while (aw->free_relays) {
        relay_t *r = aw->free_relays;
        aw->free_relays = r->next_free;
        relay_destroy(r);
    }
    aw->nfree_relays = 0;
}

/* The engine request's header lines, into the worker's scratch buffer. */
static const char *engine_headers(app_worker_t *aw, const http_req_t *req, const char *rid,
                                  int has_body)
{
    buf_t *h = &aw->scratch;
    buf_reset(h);
    if (has_body) {
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
    buf_puts(h, RID_HEADER);
    buf_puts(h, rid);
    buf_puts(h, "\r\n");
    return h->data;
}

int relay_refuse(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int err)
{
    if (err == UPS_E_NO_ENGINE)
        respond_error_retry(aw, c, req, route, APP_E_NO_HEALTHY_ENGINE, NULL,
                            engines_retry_after(aw->app->engines));
    else if (err == UPS_E_BUSY)
        respond_error_retry(aw, c, req, route, APP_E_ENGINE_BUSY, NULL, 1);
    else
        return 0;
    return 1;
}

int relay_start(app_worker_t *aw, conn_t *c, http_req_t *req, relay_req_t *rr)
{
    buf_t own = rr->own_body;
    rr->own_body = (buf_t)BUF_INIT;
    struct e2ee_sess *e2ee = rr->e2ee;
    rr->e2ee = NULL;
    relay_t *r = relay_get(aw);
    if (!r) {
        if (e2ee) {
            e2ee_sess_free(e2ee);
            e2ee_wipe_buf(&own);
        }
        buf_free(&own);
        respond_error(aw, c, req, rr->route, APP_E_OUT_OF_MEMORY, NULL);
        return -1;
    }
    M_ADD(aw->m.streams_active, 1);
    r->aw = aw;
    r->c = c;
    r->req = req;
    r->route = rr->route;
    r->kind = rr->kind;
    r->flags = r->done = r->in_cb = 0;
    r->job_busy = 0;
    r->up_status = 0;
    r->up_cl = -1;
    r->up_seen = r->bytes_out = 0;
    r->chat_id = NULL;
    r->id_prefix = rr->id_prefix;
    r->sig_id[0] = '\0';
    r->ib_want = rr->kind == RELAY_SIGNED ? rr->inband : INBAND_WANT_NO;
    r->te_trailers = req->te_trailers;
    r->ib = IBH_NONE;
    r->ib_reason = 0;
    r->ib_signed = 0;
    r->own_body = own;
    r->e2ee = e2ee;
    strv_t body = own.data ? (strv_t){own.data, own.len} : rr->body;
    memcpy(r->req_hash, rr->req_hash, sizeof r->req_hash);
    memcpy(r->rid, respond_request_id(req), sizeof r->rid);
    const char *hdrs = engine_headers(aw, req, r->rid, body.p != NULL);
    conn_set_owner(c, &r->owner);
    conn_cork(c);
    r->sent_ns = clock_mono_ns();
    r->up = upstream_send(aw->pool, rr->method, rr->path, rr->query, hdrs, body.p, body.n,
                          &RELAY_CBS, r);
    if (r->up && r->e2ee)
        upstream_wipe_reads(r->up); /* the engine's answer is plaintext */
    if (!r->up) {
        conn_set_owner(c, NULL);
        if (!relay_refuse(aw, c, req, r->route, upstream_pool_error(aw->pool)))
            respond_error(aw, c, req, r->route, APP_E_OUT_OF_MEMORY, NULL);
        relay_put(r);
        return -1;
    }
    return 0;
}

static int is_signed_ok(const relay_t *r)
{
    return r->kind == RELAY_SIGNED && r->up_status >= 200 && r->up_status < 300;
}

/* An E2EE request's 2xx answer goes through the encryptor, signed route or not (embeddings,
 * rerank and score are relayed unsigned, but encrypted all the same). */
static int is_e2ee_ok(const relay_t *r)
{
    return r->e2ee && r->up_status >= 200 && r->up_status < 300;
}

/* The head of an encrypted answer: the format's headers, chunked. */
static void relay_pick_id(relay_t *r);
static void relay_hold_begin(relay_t *r);

static void relay_e2ee_head(relay_t *r)
{
    if ((r->flags & (RF_HEAD_SENT | RF_HOLD)) || !r->c)
        return;
    if (r->ib != IBH_NONE) {
        relay_hold_begin(r); /* the head waits for the id, or the signatures (relay_announce) */
        return;
    }
    /* RF_ANNOUNCE (an encrypted answer of a route whose answer may carry no id): the record's
     * id is fixed now: the id the sealed body carries (the engine's, or the one the encryptor
     * added: e2ee_resp_set_id), else id_prefix "-" the request id */
    char sid[sizeof SIGNATURE_ID_HEADER + SIG_ID_MAX + 4] = "";
    if (r->flags & RF_ANNOUNCE) {
        relay_pick_id(r);
        snprintf(sid, sizeof sid, SIGNATURE_ID_HEADER ": %s\r\n", r->sig_id);
    }
    char h[sizeof SSE_HEADERS + E2EE_HDRS_MAX + 2 + sizeof sid];
    snprintf(h, sizeof h, "%s%s%s", (r->flags & RF_SSE) ? SSE_HEADERS : "", e2ee_resp_headers(r->e2ee),
             sid);
    r->flags |= RF_HEAD_SENT;
    conn_start_response(r->c, r->up_status, r->ctype, h, -1);
}

/* The signed text is "[MODEL_NAME:]reqhash:resphash": only the model name can make it unfit
 * for a header. */
static int ib_text_safe(const relay_t *r)
{
    const config_t *cfg = r->aw->app->cfg;
    if (cfg->signed_text != SIGNED_TEXT_MODEL_REQ_RESP)
        return 1;
    return inband_text_safe(cfg->model_name, strlen(cfg->model_name));
}

/* At the engine's head: what this answer's head will say of in-band signatures. Only an
 * answer that will be signed says anything (a 2xx of a signed route, with a body that is not
 * delimited by the engine's close unless it is a stream). */
static void ib_decide(relay_t *r, int status)
{
    r->ib = IBH_NONE;
    if (r->ib_want == INBAND_WANT_NO || r->ib_want == INBAND_WANT_INVALID || !is_signed_ok(r) ||
        status == 204 || (!(r->flags & RF_SSE) && (r->flags & RF_EOF_FRAMED)))
        return;
    int why = -1;
    if (r->ib_want == INBAND_WANT_OFF)
        why = INBAND_R_DISABLED;
    else if (!ib_text_safe(r))
        why = INBAND_R_UNSAFE_TEXT;
    else if ((r->flags & RF_SSE) && !r->te_trailers)
        why = INBAND_R_NO_TE;
    if (why >= 0) {
        r->ib = IBH_UNAVAIL;
        r->ib_reason = why;
    } else
        r->ib = (r->flags & RF_SSE) ? IBH_TRAILERS : IBH_HEADERS;
}

static void relay_on_head(void *ud, int status, strv_t ctype, int64_t cl)
{
    relay_t *r = ud;
    cb_enter(r);
    r->up_status = status;
    if ((status == 503 || status == 429) && r->aw->app->cfg->engine_busy_as_429) {
        /* The engine's queue is full (or it is scaling): its body is dropped, and the client
         * gets our 429 when the exchange ends. */
        r->flags |= RF_ENGINE_BUSY;
        cb_leave(r);
        return;
    }
    if (cl == UPSTREAM_CL_EOF)
        r->flags |= RF_EOF_FRAMED;
    r->up_cl = cl < 0 ? -1 : cl; /* to the client: chunked */
    /* The engine's Content-Type, whole (upstream.c bounds it), or none if it sent none. */
    char ct[UPSTREAM_CTYPE_MAX + 1];
    size_t n = ctype.n < sizeof ct ? ctype.n : 0;
    memcpy(ct, ctype.p, n);
    ct[n] = '\0';
    if (n >= sizeof SSE_CTYPE - 1 && strncasecmp(ct, SSE_CTYPE, sizeof SSE_CTYPE - 1) == 0)
        r->flags |= RF_SSE;
    if (is_signed_ok(r)) {
        sha256_reset(r->sha);
        sse_reset(&r->sse);
        idscan_init(&r->ids);
    }
    ib_decide(r, status);
    if (is_e2ee_ok(r)) {
        /* Encrypted: the length changes (chunked); a JSON answer's head waits for its body. */
        r->flags |= RF_E2EE;
        if (r->id_prefix && is_signed_ok(r) && !(r->flags & RF_EOF_FRAMED)) {
            /* X-Signature-Id in the encrypted answer's head; an answer without an id gets
             * ours in its body too (e2ee_resp_set_id), so the two agree */
            char dflt[SIG_ID_MAX + 1];
            snprintf(dflt, sizeof dflt, "%s-%s", r->id_prefix, r->rid);
            e2ee_resp_set_id(r->e2ee, dflt);
            r->flags |= RF_ANNOUNCE;
        }
        if (r->aw->e2ee_port && e2ee_resp_per_field_keys(r->e2ee))
            r->flags |= RF_OFFLOAD; /* a fresh key per field: sealed on the crypto threads */
        e2ee_resp_begin(r->e2ee, (r->flags & RF_SSE) != 0);
        memcpy(r->ctype, n ? ct : "application/json", (n ? n : sizeof "application/json" - 1) + 1);
        if (r->flags & RF_SSE)
            relay_e2ee_head(r);
        cb_leave(r);
        return;
    }
    int announce = r->id_prefix && is_signed_ok(r) && status != 204 && !(r->flags & RF_EOF_FRAMED);
    if (announce || r->ib != IBH_NONE) {
        /* The record's id goes in the head (and the signatures, in band): it waits until the
         * id is known, or the answer is signed (relay_announce). */
        if (announce)
            r->flags |= RF_ANNOUNCE;
        memcpy(r->ctype, ct, n + 1);
        relay_hold_begin(r);
        cb_leave(r);
        return;
    }
    r->flags |= RF_HEAD_SENT;
    /* An ACI request's answer carries ACI's hints even when it is the engine's error. */
    char extra[sizeof SSE_HEADERS + E2EE_HDRS_MAX + 2];
    snprintf(extra, sizeof extra, "%s%s", (r->flags & RF_SSE) ? SSE_HEADERS : "",
             e2ee_sess_hints(r->e2ee));
    conn_start_response(r->c, status, n ? ct : NULL, extra, r->up_cl);
    cb_leave(r);
}

/* An id the client can be given in a header as it is: visible ASCII only. */
static int header_safe(const char *id)
{
    for (; *id; id++)
        if ((unsigned char)*id < 0x21 || (unsigned char)*id > 0x7e)
            return 0;
    return 1;
}

/* RF_ANNOUNCE: the id now known, if any (the engine's), else NULL. */
static const char *answer_id(const relay_t *r)
{
    if ((r->flags & RF_E2EE) && r->e2ee) { /* the id the encrypted body carries, once sealed */
        const char *e = e2ee_resp_answer_id(r->e2ee);
        return e[0] ? e : NULL;
    }
    return (r->flags & RF_SSE) ? sse_chat_id(&r->sse) : idscan_id(&r->ids);
}

/* RF_ANNOUNCE: fixes the record's id once: the engine's, when the scan has it and it can go
 * in a header, else id_prefix "-" the engine's request id (random, the proxy's). */
static void relay_pick_id(relay_t *r)
{
    if (r->sig_id[0])
        return;
    const char *e = answer_id(r);
    if (e && header_safe(e) && strlen(e) <= SIG_ID_MAX)
        memcpy(r->sig_id, e, strlen(e) + 1);
    else
        snprintf(r->sig_id, sizeof r->sig_id, "%s-%s", r->id_prefix, r->rid);
}

/* In-band (not RF_ANNOUNCE): the id known so far, the engine's (the record's once stored). */
static const char *ib_id(const relay_t *r)
{
    if (r->chat_id)
        return r->chat_id;
    return (r->flags & RF_SSE) ? sse_chat_id(&r->sse) : idscan_id(&r->ids);
}

/* RF_HOLD: the id the head waits for, when known. */
static const char *hold_id(const relay_t *r)
{
    return (r->flags & RF_ANNOUNCE) ? answer_id(r) : ib_id(r);
}

/* The in-band lines of a head (after the others), counted. */
static void ib_lines(relay_t *r, buf_t *h)
{
    metrics_t *m = &r->aw->m;
    switch (r->ib) {
    case IBH_HEADERS: {
        if (!r->ib_signed)
            return; /* not signed after all: nothing said */
        inband_sig_t s = {r->ib_sig.text, r->ib_sig.ecdsa, r->ib_sig.address, r->ib_sig.ed25519,
                          r->ib_sig.ed_key};
        buf_puts(h, INBAND_HEADER ": headers\r\n");
        inband_fields(h, &s);
        M_ADD(m->inband[INBAND_M_HEADERS], 1);
        return;
    }
    case IBH_TRAILERS:
        inband_trailers_head(h, 1, 1); /* the signer always has both keys (sign/signer.h) */
        return;
    case IBH_UNAVAIL:
        inband_unavailable(h, (enum inband_reason)r->ib_reason);
        M_ADD(m->inband_unavailable[r->ib_reason], 1);
        return;
    default:
        return;
    }
}

static void relay_hold_begin(relay_t *r)
{
    r->flags |= RF_HOLD;
    buf_reset(&r->hold);
}

/* RF_HOLD: the head goes out with the record's id in X-Signature-Id and what the answer says
 * of in-band signatures, then the bytes held back. */
static void relay_announce(relay_t *r, conn_t *c)
{
    if (!(r->flags & RF_HOLD))
        return;
    r->flags &= ~(unsigned)RF_HOLD;
    r->flags |= RF_HEAD_SENT;
    buf_t *h = &r->aw->scratch;
    buf_reset(h);
    buf_puts(h, (r->flags & RF_SSE) ? SSE_HEADERS : "");
    if (r->flags & RF_E2EE)
        buf_puts(h, e2ee_resp_headers(r->e2ee));
    if (r->flags & RF_ANNOUNCE) {
        relay_pick_id(r);
        buf_printf(h, SIGNATURE_ID_HEADER ": %s\r\n", r->sig_id);
    } else if (r->ib != IBH_NONE) {
        const char *id = ib_id(r);
        if (id && header_safe(id) && strlen(id) <= SIG_ID_MAX)
            buf_printf(h, SIGNATURE_ID_HEADER ": %s\r\n", id);
    }
    ib_lines(r, h);
    /* A body held whole has its length; a stream with trailers is chunked. */
    int64_t cl = r->ib == IBH_HEADERS   ? (int64_t)r->hold.len
                 : r->ib == IBH_TRAILERS ? -1
                 : (r->flags & RF_E2EE)  ? -1
                                         : r->up_cl;
    if (!r->bytes_out && r->hold.len && c)
        metrics_observe_ttfb(r->aw, r->route, r->req->start_ns);
    r->bytes_out += r->hold.len;
    if (c) {
        conn_start_response(c, r->up_status, r->ctype[0] ? r->ctype : NULL, h->data ? h->data : "",
                            cl);
        if (r->hold.len)
            conn_write_body(c, r->hold.data, r->hold.len);
    }
    buf_reset(&r->hold);
    ib_hold_uncount(r);
}

/* RF_HOLD, after bytes were added: the head goes out when the id it waits for is known (or
 * RELAY_HOLD_MAX bytes came without it), or, holding a whole body for in-band headers, when
 * the body outgrows INBAND_MAX_BODY (then "unavailable; reason=too-large"). */
static void relay_hold_check(relay_t *r)
{
    if (r->ib == IBH_HEADERS) {
        int too_large = r->hold.len > r->aw->app->cfg->inband_max_body;
        if (too_large || ib_hold_count(r) != 0) {
            r->ib = IBH_UNAVAIL;
            r->ib_reason = too_large ? INBAND_R_TOO_LARGE : INBAND_R_BUSY;
            relay_announce(r, r->c);
        }
        return;
    }
    if (hold_id(r) || r->hold.len >= RELAY_HOLD_MAX)
        relay_announce(r, r->c);
}

/* Why a complete answer gets no signature, or NULL (then *id is the chat id). */
static const char *unsignable(relay_t *r, const char **id)
{
    *id = NULL;
    if (r->flags & RF_E2EE_FAILED)
        return "the answer could not be encrypted";
    if (r->flags & RF_PARSE_FAILED)
        return "response could not be parsed";
    if (r->id_prefix && !(r->flags & RF_ANNOUNCE))
        return "no id announced (an answer without a body, or delimited by the engine's close)";
    if (!(r->flags & RF_SSE)) {
        if (r->flags & RF_EOF_FRAMED)
            return "engine body delimited by its close: a cut cannot be told from the end";
        if (r->flags & RF_ANNOUNCE) {
            relay_pick_id(r);
            return *id = r->sig_id, NULL;
        }
        return (*id = idscan_id(&r->ids)) ? NULL : "no id in the response";
    }
    if (sse_finish(&r->sse) != 0)
        return "event stream malformed";
    if (!sse_done_seen(&r->sse))
        return "stream ended without [DONE]";
    if (r->flags & RF_ANNOUNCE) {
        relay_pick_id(r);
        return *id = r->sig_id, NULL;
    }
    return (*id = sse_chat_id(&r->sse)) ? NULL : "no id in the stream";
}

/* Signs and stores the record for a complete answer. Runs before the client can see the end. */
static void relay_finalize(relay_t *r)
{
    if (r->flags & RF_FINALIZED)
        return;
    r->flags |= RF_FINALIZED;
    app_worker_t *aw = r->aw;
    const char *id;
    const char *why = unsignable(r, &id);
    if (why) {
        M_ADD(aw->m.signatures_skipped, 1);
        LOG_WARN("no signature for %.*s: %s", (int)r->req->path.n, r->req->path.p, why);
        return;
    }
    uint8_t d[SHA256_LEN];
    char text[SIG_TEXT_LEN + 1];
    memcpy(text, r->req_hash, SIG_HASH_HEX_LEN);
    text[SIG_HASH_HEX_LEN] = ':';
    if (sha_final(r->sha, d) != 0)
        return;
    hex_encode(text + SIG_HASH_HEX_LEN + 1, d, sizeof d);
    sigstore_t ss = app_sigstore(aw);
    uint64_t t0 = clock_mono_ns();
    int ib = r->ib == IBH_HEADERS || r->ib == IBH_TRAILERS;
    int rc = sigstore_sign_put_sig(&ss, id, text, ib ? &r->ib_sig : NULL);
    metrics_hist_observe(&aw->m.sign, clock_mono_ns() - t0);
    if (rc == SIGSTORE_OK) {
        M_ADD(aw->m.signatures_stored, 1);
        r->chat_id = id;
        r->ib_signed = ib;
    } else if (rc == SIGSTORE_EXISTS) {
        M_ADD(aw->m.signature_collisions, 1);
        LOG_WARN("signature record for id %s already exists: kept the first, dropped this one", id);
    } else {
        M_ADD(aw->m.signatures_skipped, 1);
    }
}

/* Bytes for the client: hashed and scanned (signed answers), then written. */
static void relay_account(relay_t *r, const char *p, size_t n)
{
    if (is_signed_ok(r)) {
        sha_update(r->sha, p, n);
        if (!(r->flags & RF_SSE))
            idscan_feed(&r->ids, p, n);
        else if (!(r->flags & RF_PARSE_FAILED) && sse_feed(&r->sse, p, n) != 0)
            r->flags |= RF_PARSE_FAILED;
    }
}

static void relay_write(relay_t *r, const char *p, size_t n)
{
    if (r->flags & RF_HOLD) {
        if (buf_append(&r->hold, p, n) == 0) {
            relay_hold_check(r);
            return;
        }
        if (r->ib == IBH_HEADERS) { /* out of memory: the head goes out now, without */
            r->ib = IBH_UNAVAIL;
            r->ib_reason = INBAND_R_NO_MEMORY;
        }
        relay_announce(r, r->c); /* then this piece after what was held */
    }
    if (!r->bytes_out && n && r->c)
        metrics_observe_ttfb(r->aw, r->route, r->req->start_ns);
    r->bytes_out += n;
    if (r->c)
        conn_write_body(r->c, p, n); /* corked: leaves with the rest of this read */
}

static void relay_e2ee_emit(void *ud, const char *p, size_t n)
{
    relay_t *r = ud;
    relay_e2ee_head(r);
    relay_account(r, p, n);
    relay_write(r, p, n);
}

/* The engine's answer is complete: the encryptor emits what it held (a JSON answer). */
static void relay_e2ee_end(relay_t *r)
{
    if (r->flags & (RF_E2EE_ENDED | RF_E2EE_FAILED))
        return;
    r->flags |= RF_E2EE_ENDED;
    if (e2ee_resp_finish(r->e2ee, relay_e2ee_emit, r) != 0)
        r->flags |= RF_E2EE_FAILED;
}

/* Reading from the engine pauses while the client is slow or, offloaded, while too much
 * engine input waits for the crypto threads; it resumes when neither holds. */
static void relay_update_pause(relay_t *r)
{
    if (!r->up)
        return;
    int want = (r->flags & RF_CLIENT_SLOW) || r->pend.len > E2EE_PEND_MAX;
    if (want && !(r->flags & RF_PAUSED)) {
        r->flags |= RF_PAUSED;
        upstream_pause(r->up);
    } else if (!want && (r->flags & RF_PAUSED)) {
        r->flags &= ~(unsigned)RF_PAUSED;
        upstream_resume(r->up);
    }
}

/* What one engine read (or one sealing job) wrote leaves in one write; then backpressure. */
static void relay_flush(relay_t *r)
{
    if (r->c && conn_flush(r->c) == 0 && r->c && conn_should_pause_source(r->c))
        r->flags |= RF_CLIENT_SLOW;
}

/* The engine's answer ended well and the client is still there: sign, then end the response;
 * or, when the answer could not be encrypted, never plaintext: an error if the client has
 * nothing yet, else a cut. */
static void relay_client_end(relay_t *r)
{
    conn_t *c = r->c;
    conn_set_owner(c, NULL); /* from here the relay finishes the response itself */
    r->c = NULL;
    if (r->flags & RF_E2EE_FAILED) {
        int busy = (r->flags & RF_E2EE_BUSY) != 0;
        if (r->kind == RELAY_SIGNED)
            M_ADD(r->aw->m.signatures_skipped, 1);
        /* A head still corked (nothing of it left yet) is taken back for the error answer. */
        if ((r->flags & RF_HEAD_SENT) && conn_retract_response(c) == 0)
            r->flags &= ~(unsigned)RF_HEAD_SENT;
        LOG_WARN("the answer to %.*s %s: %s", (int)r->req->path.n, r->req->path.p,
                 busy ? "found the E2EE crypto threads' queue full" : "could not be encrypted",
                 (r->flags & RF_HEAD_SENT) ? "closing the client connection"
                 : busy                    ? "answering 503"
                                           : "answering 502");
        if (!(r->flags & RF_HEAD_SENT))
            respond_error(r->aw, c, r->req, r->route,
                          busy ? APP_E_E2EE_BUSY : APP_E_E2EE_RESPONSE_FAILED, NULL);
        else {
            metrics_count_error(r->aw, busy ? APP_E_E2EE_BUSY : APP_E_E2EE_RESPONSE_FAILED); /* a cut */
            respond_log(r->aw, r->req, r->route, r->up_status, r->up_status, r->bytes_out, NULL);
            conn_abort(c);
        }
    } else {
        if (is_signed_ok(r))
            relay_finalize(r);
        else if (r->kind == RELAY_SIGNED)
            M_ADD(r->aw->m.signatures_skipped, 1);
        relay_announce(r, c); /* a held head and body, after the record was stored */
        if (!r->bytes_out) /* an answer without a body: its end is its first byte */
            metrics_observe_ttfb(r->aw, r->route, r->req->start_ns);
        respond_log(r->aw, r->req, r->route, r->up_status, r->up_status, r->bytes_out, r->chat_id);
        if (r->ib == IBH_TRAILERS && r->ib_signed) {
            /* the record is stored: the signature fields end the chunked body */
            buf_t *t = &r->aw->scratch;
            buf_reset(t);
            inband_sig_t s = {r->ib_sig.text, r->ib_sig.ecdsa, r->ib_sig.address,
                              r->ib_sig.ed25519, r->ib_sig.ed_key};
            if (inband_fields(t, &s) == 0 && conn_end_response_trailers(c, t->data) == 0) {
                M_ADD(r->aw->m.inband[INBAND_M_TRAILERS], 1);
                relay_release(r, DONE_CLIENT);
                return;
            }
        }
        /* A head that announced trailers and ends without them tells the client the answer
         * is not signed (docs/API.md): never a reason to look elsewhere. */
        conn_end_response(c);
    }
    relay_release(r, DONE_CLIENT);
}

/* Offloaded sealing failed (the job's encryption, or a full queue): fail closed at once. The
 * engine exchange is cancelled (the engine stops generating) and the client gets an error or
 * a cut, never plaintext. */
static void relay_e2ee_fail(relay_t *r, int busy)
{
    r->flags |= RF_E2EE_FAILED | (busy ? RF_E2EE_BUSY : 0u);
    e2ee_wipe_buf(&r->pend);
    if (r->up) {
        upstream_cancel(r->up); /* a cancelled exchange calls nothing back */
        r->up = NULL;
        r->done |= DONE_ENGINE;
    }
    if (r->c)
        relay_client_end(r);
}

/* Offloaded: hands the pending input (and, once the engine's body is complete, the finish) to
 * the crypto threads when no job is in flight; when everything is sealed and the engine's
 * exchange has ended, ends the client's response. */
static void relay_pump(relay_t *r)
{
    if (r->job_busy || !r->c || (r->flags & RF_E2EE_FAILED))
        return;
    if (r->flags & RF_E2EE_ENDED) {
        if (r->flags & RF_ENGINE_DONE)
            relay_client_end(r);
        return;
    }
    int fin = (r->flags & RF_IN_ENDED) != 0;
    if (r->pend.len == 0 && !fin)
        return;
    relay_job_t *j = &r->job;
    buf_t t = j->in; /* empty: wiped when the last job came back */
    j->in = r->pend;
    r->pend = t;
    j->sess = r->e2ee;
    j->finish = fin;
    j->rc = 0;
    if (e2ee_port_submit(r->aw->e2ee_port, &j->base) != 0) {
        sodium_memzero(j->in.data, j->in.len);
        buf_reset(&j->in);
        relay_e2ee_fail(r, 1);
        return;
    }
    r->job_busy = 1;
    relay_update_pause(r);
}

/* On a crypto thread: the session is this job's alone until it is back on the loop. */
static void relay_job_emit(void *ud, const char *p, size_t n)
{
    relay_job_t *j = ud;
    if (buf_append_wiped(&j->out, p, n) != 0)
        j->rc = -1;
}

static void relay_job_work(e2ee_job_t *b)
{
    relay_job_t *j = (relay_job_t *)b;
    if (j->in.len && e2ee_resp_feed(j->sess, j->in.data, j->in.len, relay_job_emit, j) != 0)
        j->rc = -1;
    if (j->rc == 0 && j->finish && e2ee_resp_finish(j->sess, relay_job_emit, j) != 0)
        j->rc = -1;
    sodium_memzero(j->in.data, j->in.len);
    buf_reset(&j->in);
}

/* Back on the loop: the job's output goes to the client in order (hashed, scanned, written),
 * then the next pending input is submitted; a job for a client that left is dropped. */
static void relay_job_done(e2ee_job_t *b)
{
    relay_job_t *j = (relay_job_t *)b;
    relay_t *r = j->r;
    r->job_busy = 0;
    cb_enter(r);
    if (!b->ran) { /* cancelled at shutdown: its input was never consumed */
        sodium_memzero(j->in.data, j->in.len);
        buf_reset(&j->in);
        j->rc = -1;
    }
    int ok = j->rc == 0;
    if (r->c && !(r->flags & RF_E2EE_FAILED) && ok) {
        if (j->out.len)
            relay_e2ee_emit(r, j->out.data, j->out.len);
        if (j->finish) {
            r->flags |= RF_E2EE_ENDED;
            if (is_signed_ok(r))
                relay_finalize(r); /* before the client can see the end */
            relay_announce(r, r->c); /* a held head (and body) now that it is signed */
        }
    }
    /* The output is the job's again before the next job can be submitted. */
    sodium_memzero(j->out.data, j->out.len);
    buf_reset(&j->out);
    if (r->c && !(r->flags & RF_E2EE_FAILED)) {
        if (!ok) {
            relay_e2ee_fail(r, 0);
        } else {
            relay_flush(r);
            relay_pump(r);
            relay_update_pause(r);
        }
    }
    cb_leave(r);
}

static void relay_on_body(void *ud, const char *p, size_t n)
{
    relay_t *r = ud;
    if (r->flags & RF_ENGINE_BUSY)
        return;
    cb_enter(r);
    if (r->flags & RF_OFFLOAD) {
        /* Sealed on the crypto threads: kept (wiped later) until the next job takes it. */
        if (!(r->flags & (RF_E2EE_FAILED | RF_IN_ENDED)) && r->c) {
            r->up_seen += n;
            if (buf_append_wiped(&r->pend, p, n) != 0)
                relay_e2ee_fail(r, 0);
            else if (r->up_cl >= 0 && r->up_seen == (uint64_t)r->up_cl)
                r->flags |= RF_IN_ENDED;
        }
        cb_leave(r);
        return;
    }
    if (r->flags & RF_E2EE) {
        /* Encrypted: nothing of the engine's bytes goes out as they are. */
        if (!(r->flags & (RF_E2EE_FAILED | RF_E2EE_ENDED)) &&
            e2ee_resp_feed(r->e2ee, p, n, relay_e2ee_emit, r) != 0)
            r->flags |= RF_E2EE_FAILED;
        r->up_seen += n;
        if (r->up_cl >= 0 && r->up_seen == (uint64_t)r->up_cl) {
            relay_e2ee_end(r);
            if (is_signed_ok(r))
                relay_finalize(r);
            relay_announce(r, r->c);
        }
        cb_leave(r);
        return;
    }
    relay_account(r, p, n);
    int complete = 0;
    if (is_signed_ok(r)) {
        r->up_seen += n;
        complete = r->up_cl >= 0 && r->up_seen == (uint64_t)r->up_cl;
    }
    if (complete)
        relay_finalize(r); /* the record is stored before the client sees the end */
    relay_write(r, p, n); /* RF_HOLD: held until the id is known, or the answer signed */
    if (complete)
        relay_announce(r, r->c);
    cb_leave(r);
}

/* Everything one engine read produced goes out in one write (offloaded: what it brought is
 * handed to the crypto threads); then backpressure. */
static void relay_on_read_done(void *ud)
{
    relay_t *r = ud;
    cb_enter(r);
    relay_flush(r);
    if (r->flags & RF_OFFLOAD)
        relay_pump(r);
    relay_update_pause(r);
    cb_leave(r);
}

/* The engine failed: an error answer if the client has nothing yet, else a cut. */
static void relay_engine_failed(relay_t *r, conn_t *c, int err)
{
    app_worker_t *aw = r->aw;
    if (err == UPS_E_NO_ENGINE || err == UPS_E_BUSY) { /* waited in the queue, or RF_ENGINE_BUSY */
        if (r->kind == RELAY_SIGNED)
            M_ADD(aw->m.signatures_skipped, 1);
        relay_refuse(aw, c, r->req, r->route, err);
        return;
    }
    if (r->kind == RELAY_SIGNED)
        M_ADD(aw->m.signatures_skipped, 1);
    /* A head found in the same engine read as the failure is still corked: take it back. */
    if ((r->flags & RF_HEAD_SENT) && conn_retract_response(c) == 0)
        r->flags &= ~(unsigned)RF_HEAD_SENT;
    if (!(r->flags & RF_HEAD_SENT)) {
        app_error_t e = err == UPS_E_CONNECT   ? APP_E_ENGINE_UNREACHABLE
                        : err == UPS_E_TIMEOUT ? APP_E_ENGINE_TIMEOUT
                                               : APP_E_ENGINE_BROKEN;
        LOG_WARN("engine request for %.*s failed: %s%s (answering %d) request_id=%s",
                 (int)r->req->path.n, r->req->path.p,
                 err == UPS_E_CONNECT   ? "cannot connect: "
                 : err == UPS_E_TIMEOUT ? "timeout (connect, first byte or total)"
                 : err == UPS_E_CLOSED  ? "the engine closed the connection before its answer"
                 : err == UPS_E_NOMEM   ? "out of memory"
                                        : "malformed answer",
                 err == UPS_E_CONNECT ? upstream_pool_connect_error(aw->pool) : "",
                 app_error_info(e)->status, r->rid);
        respond_error(aw, c, r->req, r->route, e, NULL);
        return;
    }
    LOG_WARN("engine response for %.*s cut short (%s): closing the client connection request_id=%s",
             (int)r->req->path.n, r->req->path.p,
             err == UPS_E_TIMEOUT ? "timeout" : "connection closed or malformed", r->rid);
    respond_log(aw, r->req, r->route, r->up_status, r->up_status, r->bytes_out, NULL);
    conn_abort(c);
}

static void relay_on_done(void *ud, int err, int status)
{
    (void)status;
    relay_t *r = ud;
    cb_enter(r);
    metrics_engine_observe(r->aw, upstream_engine(r->up), clock_mono_ns() - r->sent_ns, err);
    r->up = NULL;
    relay_release(r, DONE_ENGINE);
    if (r->flags & RF_ENGINE_BUSY)
        err = UPS_E_BUSY;
    if (r->c) {
        if (err) {
            conn_t *c = r->c;
            conn_set_owner(c, NULL); /* from here the relay finishes the response itself */
            r->c = NULL;
            e2ee_wipe_buf(&r->pend); /* offloaded: a job in flight is dropped when back */
            relay_engine_failed(r, c, err);
            relay_release(r, DONE_CLIENT);
        } else if (r->flags & RF_OFFLOAD) {
            /* The end waits for the sealing of what is pending, then of the finish. */
            r->flags |= RF_IN_ENDED | RF_ENGINE_DONE;
            relay_pump(r);
        } else {
            if (r->flags & RF_E2EE)
                relay_e2ee_end(r); /* a JSON answer is emitted whole now */
            relay_client_end(r);
        }
    }
    cb_leave(r);
}

static void relay_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    relay_t *r = (relay_t *)o;
    r->c = NULL;
    if (r->up) {
        upstream_cancel(r->up); /* closes the engine connection: the engine stops generating */
        r->up = NULL;
        r->done |= DONE_ENGINE; /* a cancelled exchange calls nothing back */
    }
    if (r->flags & RF_OFFLOAD)
        e2ee_wipe_buf(&r->pend); /* a job in flight is wiped and dropped when it is back */
    if (r->kind == RELAY_SIGNED && !r->chat_id)
        M_ADD(r->aw->m.signatures_skipped, 1);
    respond_log(r->aw, r->req, r->route, 0, r->up_status, r->bytes_out, NULL);
    relay_release(r, DONE_CLIENT);
}

static void relay_on_drain(conn_owner_t *o, conn_t *c)
{
    (void)c;
    relay_t *r = (relay_t *)o;
    r->flags &= ~(unsigned)RF_CLIENT_SLOW;
    relay_update_pause(r);
}
