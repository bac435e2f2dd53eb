/* The local verifying proxy's relay: one thread per local connection. A request is parsed with
 * llhttp (limits and phase timeouts of lp_relay.h), checked (Host, Origin, Sec-Fetch-Site, the
 * local token), then either answered here (GET /verification, GET /) or relayed to the remote
 * through libcurl with the attested TLS key pinned, and its answer's signatures verified over
 * the exact bytes sent and received before the app sees it (a stream: before its [DONE]).
 *
 * Why CURLOPT_SSL_VERIFYPEER and VERIFYHOST are off: the remote's certificate may be
 * self-signed inside the CVM, and a CA's word is not what we trust anyway. The trust is the
 * attested report, which binds the TLS key; CURLOPT_PINNEDPUBLICKEY set to that key on every
 * request makes curl refuse any connection whose server key is another (a CA-signed
 * certificate must match the pin all the same). A connection made under an older pin is never
 * reused after the pin changes (a new easy handle, so a new connection cache).
 *
 * No prompt or completion text is logged: one line per request with method, path (without
 * query), status, bytes, milliseconds and the outcome. */
#include "verify/lp_relay.h"

#include <errno.h>
#include <json-c/json.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include <sodium.h>

#include "core/sha.h"
#include "http/server.h"
#include "verify/lp_e2ee.h"
#include "verify/vsig.h"

#define LP_MAX_HELD_ANSWER (1u * 1024u * 1024u) /* a stream's [DONE] and what follows it */
#define LP_MAX_EVENT (16u * 1024u * 1024u)      /* one SSE event not yet complete */
#define LP_MAX_SIG_RECORD (64u * 1024u)

static const lp_opts_t *g_o;
static char g_hosts[4][300]; /* the Host values that name us; [3] = --listen's, or "" */
static char g_remote[1024];  /* the remote base URL without a trailing '/' */
static int g_remote_https;
/* The phase timeouts of lp_relay.h; VP_LP_TEST_TIMEOUTS_MS=HEAD,BODY,IDLE (milliseconds, tests
 * only, docs/VERIFY.md) shortens them. */
static long g_head_ms = LP_HEAD_MS, g_body_ms = LP_BODY_MS, g_idle_ms = LP_IDLE_MS;
/* lp_relay_stop: an eventfd made readable once (never read), polled by every connection that
 * waits for its next request, and the flag that ends keep-alive after the request under way */
static int g_stop_fd = -1;
static atomic_int g_stopping;

/* ---- small helpers ---- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1; /* the app left, or SO_SNDTIMEO passed */
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Case-insensitive equality of s[0..n) with the NUL-terminated t. */
static int ieq(const char *s, size_t n, const char *t)
{
    return strlen(t) == n && strncasecmp(s, t, n) == 0;
}

/* The value of header `name` in a raw block of "Name: value\r\n" lines (trimmed) into out.
 * 1 when present. A value with a control character in it (a bare CR, say) counts as absent:
 * it never reaches a head written to the app, and a signature field so spoiled fails. */
static int raw_header(const buf_t *b, const char *name, char *out, size_t cap)
{
    const char *p = b->data, *end = b->data ? b->data + b->len : NULL;
    size_t nl = strlen(name);
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && ieq(p, (size_t)(colon - p), name)) {
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            for (const char *q = v; q < ve; q++)
                if ((unsigned char)*q < 0x20 ? *q != '\t' : *q == 0x7f)
                    return 0;
            snprintf(out, cap, "%.*s", (int)(ve - v), v);
            (void)nl;
            return 1;
        }
        p = le + 1;
    }
    return 0;
}

/* ---- the local connection ---- */

typedef struct conn {
    int fd;
    llhttp_t parser;
    llhttp_settings_t settings;
    char rbuf[16384];
    size_t rpos, rlen;
    /* the request being read */
    buf_t url;
    buf_t hb; /* "name\0value\0" pairs */
    size_t name_off[LP_MAX_HEADERS + 1], val_off[LP_MAX_HEADERS + 1];
    size_t nh;
    size_t head_bytes;
    buf_t body;
    int complete, headers_done, reject; /* reject: the status to answer, 0 none */
    char method[16];
    /* the relay */
    CURL *curl;
    CURLM *multi; /* drives c->curl: its connection cache is this connection's */
    uint64_t curl_gen;
    sha_ctx *sha;
    buf_t ev, held, resp, rhead, rtrail, tmp;
    /* end-to-end encryption of this request (NULL: in clear): the codec, its failure, the
     * sealed body sent, the plaintext handed to the app (wiped after each use) */
    lp_e2ee_t *e2ee;
    int e2ee_failed;
    lp_e2ee_err_t e2ee_err;
    buf_t sealed, plain;
    /* per-request outcome for the log line */
    long status;
    size_t sent;
    const char *outcome;
    char outcome_buf[96];
} conn_t;

static const char *req_header(const conn_t *c, const char *name)
{
    for (size_t i = 0; i < c->nh; i++)
        if (strcasecmp(c->hb.data + c->name_off[i], name) == 0)
            return c->hb.data + c->val_off[i];
    return NULL;
}

static conn_t *P(llhttp_t *p)
{
    return (conn_t *)p->data;
}

static int head_room(conn_t *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > LP_MAX_HEAD) {
        c->reject = 431;
        return -1;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = P(p);
    return head_room(c, n) || buf_append(&c->url, at, n) ? -1 : 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = P(p);
    size_t have = strlen(c->method);
    if (have + n >= sizeof c->method) {
        c->reject = 405;
        return -1;
    }
    memcpy(c->method + have, at, n);
    c->method[have + n] = '\0';
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = P(p);
    if (head_room(c, n))
        return -1;
    if (c->nh >= LP_MAX_HEADERS) {
        c->reject = 431;
        return -1;
    }
    return buf_append(&c->hb, at, n) ? -1 : 0;
}

static int on_hfield_done(llhttp_t *p)
{
    conn_t *c = P(p);
    if (buf_append(&c->hb, "", 1))
        return -1;
    c->val_off[c->nh] = c->hb.len;
    return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = P(p);
    return head_room(c, n) || buf_append(&c->hb, at, n) ? -1 : 0;
}

static int on_hvalue_done(llhttp_t *p)
{
    conn_t *c = P(p);
    if (buf_append(&c->hb, "", 1))
        return -1;
    /* trim the value's trailing whitespace (llhttp drops the leading) */
    char *v = c->hb.data + c->val_off[c->nh];
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        v[--vl] = '\0';
    c->nh++;
    c->name_off[c->nh] = c->hb.len;
    return 0;
}

static int on_headers_done(llhttp_t *p)
{
    conn_t *c = P(p);
    c->headers_done = 1;
    if (p->content_length > LP_MAX_BODY && (p->flags & F_CONTENT_LENGTH)) {
        c->reject = 413;
        return -1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = P(p);
    if (c->body.len + n > LP_MAX_BODY) {
        c->reject = 413;
        return -1;
    }
    return buf_append(&c->body, at, n) ? -1 : 0;
}

static int on_complete(llhttp_t *p)
{
    P(p)->complete = 1;
    return HPE_PAUSED;
}

static void reset_request(conn_t *c)
{
    buf_reset(&c->url);
    buf_reset(&c->hb);
    buf_reset(&c->body);
    c->nh = 0;
    c->name_off[0] = 0;
    c->head_bytes = 0;
    c->complete = c->headers_done = c->reject = 0;
    c->method[0] = '\0';
    c->status = 0;
    c->sent = 0;
    c->outcome = "-";
}

/* ---- answers written here ---- */

static int send_iov(conn_t *c, const struct iovec *v, int cnt);

/* The head (Content-Length: len) and body[0..body_n) in one write; a head too large for the
 * stack built on the heap, never cut (a head not sent and a body sent would be read by the
 * app as a head). 0 when it went out. */
static int send_head_body(conn_t *c, long status, const char *ctype, size_t len,
                           const char *extra, int close_after, const char *body, size_t body_n)
{
    static const char fmt[] =
        "HTTP/1.1 %ld %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s%s\r\n";
    char h[2048];
    buf_t big = BUF_INIT;
    const char *hp = h;
    int n = snprintf(h, sizeof h, fmt, status, http_status_text((int)status), ctype, len,
                     extra ? extra : "", close_after ? "Connection: close\r\n" : "");
    if (n > 0 && (size_t)n >= sizeof h) {
        /* many headers passed back: the same head, built on the heap */
        buf_printf(&big, fmt, status, http_status_text((int)status), ctype, len, extra ? extra : "",
                   close_after ? "Connection: close\r\n" : "");
        hp = big.data;
        n = big.data ? (int)big.len : -1;
    }
    int rc = -1;
    if (n > 0) {
        struct iovec v[2] = {{(void *)(uintptr_t)hp, (size_t)n},
                             {(void *)(uintptr_t)body, body_n}};
        rc = send_iov(c, v, body_n ? 2 : 1);
    }
    buf_free(&big);
    c->status = status;
    return rc;
}

static void reply(conn_t *c, long status, const char *ctype, const char *body, size_t n,
                  const char *extra, int close_after)
{
    send_head_body(c, status, ctype, n, extra, close_after, body, n);
    c->sent = n;
}

/* {"error":{"message","type","code"}} into b. code may be NULL (JSON null). */
static void error_json(buf_t *b, const char *msg, const char *type, const char *code)
{
    buf_puts(b, "{\"error\":{\"message\":");
    buf_json_str(b, msg, strlen(msg));
    buf_puts(b, ",\"type\":");
    buf_json_str(b, type, strlen(type));
    buf_puts(b, ",\"param\":null,\"code\":");
    if (code)
        buf_json_str(b, code, strlen(code));
    else
        buf_puts(b, "null");
    buf_puts(b, "}}");
}

static void reply_error(conn_t *c, long status, const char *type, const char *code,
                        int close_after, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void reply_error(conn_t *c, long status, const char *type, const char *code,
                        int close_after, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    buf_reset(&c->tmp);
    error_json(&c->tmp, msg, type, code);
    reply(c, status, "application/json", c->tmp.data, c->tmp.len, NULL, close_after);
}

void lp_reply_busy(int fd)
{
    static const char body[] =
        "{\"error\":{\"message\":\"too many connections to the local verifying proxy "
        "(--max-connections); retry later\",\"type\":\"server_overloaded\",\"param\":null,"
        "\"code\":\"too_many_connections\"}}";
    char h[256];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                     sizeof body - 1);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (n > 0 && send_all(fd, h, (size_t)n) == 0)
        send_all(fd, body, sizeof body - 1);
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* ---- reading one request ---- */

/* 1: a request is in c; 0: the connection closed cleanly between requests; -1: close now
 * (answered already when something was wrong with the request). */
static int read_request(conn_t *c)
{
    reset_request(c);
    long start = now_ms(), deadline = start + g_idle_ms;
    int got_any = 0;
    for (;;) {
        if (c->rpos < c->rlen) {
            const char *data = c->rbuf + c->rpos;
            size_t len = c->rlen - c->rpos;
            if (!got_any) {
                got_any = 1;
                deadline = now_ms() + g_head_ms;
            }
            int had_headers = c->headers_done;
            llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
            if (e == HPE_PAUSED && c->complete) {
                const char *pos = llhttp_get_error_pos(&c->parser);
                size_t used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
                c->rpos += used;
                llhttp_resume(&c->parser);
                return 1;
            }
            if (e != HPE_OK) {
                long st = c->reject ? c->reject : 400;
                if (st == 413)
                    reply_error(c, 413, "invalid_request_error", "request_too_large", 1,
                                "request body larger than %u bytes", LP_MAX_BODY);
                else if (st == 431)
                    reply_error(c, 431, "invalid_request_error", "headers_too_large", 1,
                                "request headers larger than %u bytes or more than %u of them",
                                LP_MAX_HEAD, LP_MAX_HEADERS);
                else
                    reply_error(c, st, "invalid_request_error", "bad_request", 1,
                                "malformed HTTP request: %s",
                                llhttp_get_error_reason(&c->parser)
                                    ? llhttp_get_error_reason(&c->parser) : "parse error");
                return -1;
            }
            c->rpos = c->rlen = 0;
            if (!had_headers && c->headers_done)
                deadline = now_ms() + g_body_ms;
        }
        long left = deadline - now_ms();
        if (left <= 0) {
            if (got_any)
                reply_error(c, 408, "invalid_request_error", "request_timeout", 1,
                            "the request was not received in time");
            return got_any ? -1 : 0;
        }
        /* between requests, the proxy stopping (lp_relay_stop) ends the wait */
        struct pollfd pf[2] = {{c->fd, POLLIN, 0}, {g_stop_fd, POLLIN, 0}};
        nfds_t npf = !got_any && g_stop_fd >= 0 ? 2 : 1;
        int pr = poll(pf, npf, (int)(left > 1000000 ? 1000000 : left));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue; /* the deadline check above decides */
        if (npf == 2 && (pf[1].revents & POLLIN) && !(pf[0].revents & (POLLIN | POLLHUP)))
            return 0;
        ssize_t n = recv(c->fd, c->rbuf, sizeof c->rbuf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return got_any ? -1 : 0;
        c->rpos = 0;
        c->rlen = (size_t)n;
    }
}

/* ---- the request checks ---- */

static int host_is_ours(const char *h)
{
    for (size_t i = 0; i < 4; i++)
        if (g_hosts[i][0] && strcasecmp(h, g_hosts[i]) == 0)
            return 1;
    return 0;
}

/* 0 when the request may go on; else answered. The status pages (public keys and
 * measurements only) need no --local-token: a person reads them in a browser. */
static int check_request(conn_t *c, int status_page)
{
    const char *host = req_header(c, "Host");
    if (!host || !host_is_ours(host)) {
        reply_error(c, 403, "permission_error", "host_not_allowed", 0,
                    "Host %.100s is not this local proxy's address (%s): requests through "
                    "another name are refused (DNS rebinding)",
                    host ? host : "(none)", g_hosts[0]);
        c->outcome = "refused:host";
        return -1;
    }
    const char *origin = req_header(c, "Origin");
    if (origin && !(strncasecmp(origin, "http://", 7) == 0 && host_is_ours(origin + 7))) {
        reply_error(c, 403, "permission_error", "origin_not_allowed", 0,
                    "Origin %.100s is not this local proxy: web pages cannot use it", origin);
        c->outcome = "refused:origin";
        return -1;
    }
    const char *sfs = req_header(c, "Sec-Fetch-Site");
    if (sfs && strcasecmp(sfs, "same-origin") != 0 && strcasecmp(sfs, "none") != 0) {
        reply_error(c, 403, "permission_error", "origin_not_allowed", 0,
                    "a %.40s request from a web page: web pages cannot use this proxy", sfs);
        c->outcome = "refused:sec-fetch-site";
        return -1;
    }
    if (g_o->local_token && !status_page) {
        const char *a = req_header(c, "Authorization");
        size_t tl = strlen(g_o->local_token);
        int ok = 0;
        if (a && strncasecmp(a, "Bearer ", 7) == 0) {
            const char *t = a + 7;
            while (*t == ' ')
                t++;
            /* constant time over the token's length; the length itself is not secret */
            ok = strlen(t) == tl && CRYPTO_memcmp(t, g_o->local_token, tl) == 0;
        }
        if (!ok) {
            reply_error(c, 401, "invalid_request_error", "invalid_api_key", 0,
                        "this local proxy needs its --local-token as the bearer token");
            c->outcome = "refused:local-token";
            return -1;
        }
    }
    return 0;
}

/* ---- the relay ---- */

/* Signed by the remote (docs/API.md): a 2xx answer of these carries X-Signature-Id. */
static const char *const SIGNED_ROUTES[] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/rerank", "/v1/score", "/v1/images/generations",
    "/v1/images/edits", "/v1/audio/transcriptions",
};

static int route_signed(const char *path, size_t n)
{
    for (size_t i = 0; i < sizeof SIGNED_ROUTES / sizeof SIGNED_ROUTES[0]; i++)
        if (strlen(SIGNED_ROUTES[i]) == n && memcmp(path, SIGNED_ROUTES[i], n) == 0)
            return 1;
    return 0;
}

/* Request headers never forwarded: hop-by-hop (RFC 9110 7.6.1), those curl writes itself,
 * and those that are the app's business with us, not the remote's. */
static const char *const NO_FORWARD[] = {
    "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer",
    "Upgrade", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "Expect",
    "Authorization", "Origin", "Referer", "Cookie", "Accept-Encoding", "X-Signature-Inband",
    "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User",
};

/* Response headers not passed back to the app. */
static const char *const NO_RETURN[] = {
    "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Trailer", "Upgrade",
    "Content-Type", "X-Signature-Inband", "X-Signature-Text", "X-Signature-Ecdsa",
    "X-Signing-Address", "X-Signature-Ed25519", "X-Signing-Key-Ed25519", "Set-Cookie",
    "Alt-Svc", "Strict-Transport-Security", "Server", "Date", "Proxy-Authenticate",
    "Location", "Content-Location", "Refresh", /* an app's fetch would follow them elsewhere */
};

static int in_list(const char *name, size_t n, const char *const *list, size_t cnt)
{
    for (size_t i = 0; i < cnt; i++)
        if (ieq(name, n, list[i]))
            return 1;
    return 0;
}

/* The token list of the request's Connection header names name[0..n). */
static int named_by_connection(const char *conn_hdr, const char *name, size_t n)
{
    if (!conn_hdr)
        return 0;
    const char *p = conn_hdr;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t k = strcspn(p, " ,\t");
        if (k && ieq(p, k, name) && k == n)
            return 1;
        p += k;
    }
    return 0;
}

typedef struct rx {
    conn_t *c;
    long status;
    int headers_done, stream, head_sent, holding, app_gone, too_big, want_body_id;
    int head_queued; /* the stream's head is in c->tmp, not yet written */
    size_t scan_from;
    size_t ready; /* c->ev[0..ready) are complete events not yet written to the app */
    size_t resp_bytes;
    char ctype[256];
    char body_id[256];
} rx_t;

static size_t on_rheader(char *p, size_t sz, size_t nm, void *ud)
{
    rx_t *x = ud;
    size_t n = sz * nm;
    conn_t *c = x->c;
    if (!x->headers_done) {
        if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
            buf_reset(&c->rhead);
            const char *sp = memchr(p, ' ', n);
            x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
            return n;
        }
        if (n <= 2 && (p[0] == '\r' || p[0] == '\n')) {
            if (x->status >= 100 && x->status < 200)
                return n; /* an interim answer: the final one follows */
            x->headers_done = 1;
            return n;
        }
        if (c->rhead.len + n > LP_MAX_HEAD)
            return 0;
        return buf_append(&c->rhead, p, n) ? 0 : n;
    }
    /* after the head: trailers of the chunked body (libcurl passes them here) */
    if (n <= 2 && (p[0] == '\r' || p[0] == '\n'))
        return n;
    if (c->rtrail.len + n > LP_MAX_HEAD)
        return 0;
    return buf_append(&c->rtrail, p, n) ? 0 : n;
}

/* v[0..cnt) to the app in one sendmsg when the socket takes it all (the usual case). */
static int send_iov(conn_t *c, const struct iovec *v, int cnt)
{
    struct msghdr m;
    memset(&m, 0, sizeof m);
    size_t total = 0, done = 0;
    for (int i = 0; i < cnt; i++)
        total += v[i].iov_len;
    while (done < total) {
        /* advance the iovecs past what was written */
        size_t skip = done;
        struct iovec cur[4];
        int k = 0;
        for (int i = 0; i < cnt && i < 4; i++) {
            if (skip >= v[i].iov_len) {
                skip -= v[i].iov_len;
                continue;
            }
            cur[k].iov_base = (char *)v[i].iov_base + skip;
            cur[k].iov_len = v[i].iov_len - skip;
            skip = 0;
            k++;
        }
        m.msg_iov = cur;
        m.msg_iovlen = (size_t)k;
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return 0;
}

/* One chunk of the chunked answer to the app, after pre[0..pre_n) (a head, or nothing): one
 * write for both. */
static int send_chunk_after(conn_t *c, const char *pre, size_t pre_n, const char *p, size_t n)
{
    char h[24];
    int hl = snprintf(h, sizeof h, "%zx\r\n", n);
    struct iovec v[4] = {{(void *)(uintptr_t)pre, pre_n},
                         {h, (size_t)hl},
                         {(void *)(uintptr_t)p, n},
                         {"\r\n", 2}};
    if (send_iov(c, v, n ? 4 : 1) != 0)
        return -1;
    c->sent += n;
    return 0;
}

/* A remote's header line fit to pass to the app: a token name (so no obs-fold continuation,
 * which starts with a space), and no control character but HTAB before its line end (a bare
 * CR would end the line for a lenient reader: header injection). */
static int well_formed(const char *p, const char *colon, const char *le)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (colon == p)
        return 0;
    for (const char *q = p; q < colon; q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
              (*q && strchr(tchar, *q))))
            return 0;
    const char *e = le;
    if (e > colon && e[-1] == '\n')
        e--;
    if (e > colon && e[-1] == '\r')
        e--;
    for (const char *q = colon + 1; q < e; q++)
        if ((unsigned char)*q < 0x20 ? *q != '\t' : *q == 0x7f)
            return 0;
    return 1;
}

static int send_chunk(conn_t *c, const char *p, size_t n)
{
    return n ? send_chunk_after(c, NULL, 0, p, n) : 0;
}

/* The response headers passed back, as "Name: value\r\n" lines, into out. */
static void return_headers(conn_t *c, buf_t *out)
{
    const char *p = c->rhead.data, *end = p ? p + c->rhead.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol + 1 : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && well_formed(p, colon, le) && !in_list(p, (size_t)(colon - p), NO_RETURN,
                              sizeof NO_RETURN / sizeof NO_RETURN[0]) &&
            !(colon - p > 15 && strncasecmp(p, "Access-Control-", 15) == 0) &&
            !(c->e2ee && colon - p > 7 && strncasecmp(p, "X-E2EE-", 7) == 0)) {
            buf_append(out, p, (size_t)(le - p));
            if (le[-1] != '\n')
                buf_puts(out, "\r\n");
        }
        p = le;
    }
}

static int stream_head(rx_t *x)
{
    conn_t *c = x->c;
    buf_reset(&c->tmp);
    buf_printf(&c->tmp,
               "HTTP/1.1 %ld %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
               "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
               x->status, http_status_text((int)x->status), x->ctype);
    return_headers(c, &c->tmp);
    if (c->e2ee)
        buf_printf(&c->tmp, "X-Verify-E2EE: %s\r\n", lp_e2ee_describe(c->e2ee));
    buf_puts(&c->tmp, "\r\n");
    c->status = x->status;
    x->head_sent = 1;
    x->head_queued = 1; /* written with the first events, by stream_flush */
    return 0;
}

/* Writes what the stream has ready (the head, if not yet written, and the complete events)
 * to the app in one write. Called once per burst of curl's reading (lp_perform), not once
 * per event: the remote sends one chunk per event, and curl hands each chunk to on_rbody on
 * its own. Under --e2ee the complete events are opened first (c->plain, wiped after the
 * write); when one does not open, nothing of them is written (the head still is, so that the
 * error event can follow). 0, or -1 when the app left (x->app_gone) or an event did not open
 * (c->e2ee_failed). */
static int e2ee_open_events(conn_t *c, const char *p, size_t n, buf_t *out);
static void wipe(buf_t *b);

static int stream_flush(rx_t *x)
{
    conn_t *c = x->c;
    if (!x->head_queued && !x->ready)
        return 0;
    const char *pre = x->head_queued ? c->tmp.data : NULL;
    size_t pre_n = x->head_queued ? c->tmp.len : 0;
    const char *out = c->ev.data;
    size_t out_n = x->ready;
    int failed = 0;
    if (c->e2ee && x->ready) {
        buf_reset(&c->plain);
        if (e2ee_open_events(c, c->ev.data, x->ready, &c->plain) != 0) {
            failed = 1;
            out_n = 0;
        } else {
            out = c->plain.data;
            out_n = c->plain.len;
        }
    }
    x->head_queued = 0;
    int rc = pre_n || out_n ? send_chunk_after(c, pre, pre_n, out, out_n) : 0;
    if (c->e2ee)
        wipe(&c->plain);
    if (rc != 0) {
        x->app_gone = 1;
        return -1;
    }
    if (failed)
        return -1;
    if (x->ready) {
        memmove(c->ev.data, c->ev.data + x->ready, c->ev.len - x->ready);
        c->ev.len -= x->ready;
        c->ev.data[c->ev.len] = '\0';
        x->scan_from -= x->ready;
        x->ready = 0;
    }
    return 0;
}

/* An event the official SDKs take for the stream's end, held like "data: [DONE]": one of its
 * lines (CR, LF or CRLF end them, as the SDKs' line readers have it) is "data:" and a value
 * that starts, after one optional space, with "[DONE]" (openai-node and openai-python test
 * data.startsWith("[DONE]") and ignore every event after it, an error event included). A
 * comment, an event name, trailing text or CR line ends must not let one through. */
static int is_done_event(const char *p, size_t n)
{
    const char *end = p + n, *q = p;
    while ((q = memmem(q, (size_t)(end - q), "[DONE]", 6)) != NULL) {
        const char *ls = q;
        while (ls > p && ls[-1] != '\n' && ls[-1] != '\r')
            ls--;
        size_t k = (size_t)(q - ls);
        if ((k == 5 || k == 6) && memcmp(ls, "data: ", k) == 0)
            return 1;
        q += 6;
    }
    return 0;
}

/* The "id" of the first data event that has one (chat and text completions from a server
 * that names the id only in the body). */
static void event_id(rx_t *x, const char *p, size_t n)
{
    if (n < 7 || memcmp(p, "data:", 5) != 0)
        return;
    size_t k = p[5] == ' ' ? 6 : 5;
    char *line = strndup(p + k, n - k);
    if (!line)
        return;
    struct json_object *j = json_tokener_parse(line), *v;
    if (j && json_object_object_get_ex(j, "id", &v) && json_object_is_type(v, json_type_string))
        snprintf(x->body_id, sizeof x->body_id, "%s", json_object_get_string(v));
    json_object_put(j);
    free(line);
    x->want_body_id = 0;
}

/* ---- end-to-end encryption (--e2ee; docs/VERIFY.md "End-to-end encryption") ---- */

/* Opens the SSE events in p[0..n) (each ended by a blank line; a tail without one counts as
 * one event) into out as "data: <plaintext>\n\n". Only data lines pass (several in one event
 * are joined with "\n", as SSE does); comments and other fields are dropped. 0, or -1 with
 * c->e2ee_err (c->e2ee_failed set). */
static int e2ee_open_events(conn_t *c, const char *p, size_t n, buf_t *out)
{
    size_t i = 0;
    while (i < n) {
        const char *d1 = NULL;
        size_t d1n = 0, ndata = 0;
        buf_t join = BUF_INIT;
        int rc = LP_E2EE_OK;
        while (i < n) {
            const char *nl = memchr(p + i, '\n', n - i);
            size_t le = nl ? (size_t)(nl - p) : n, ll = le - i;
            const char *line = p + i;
            i = nl ? le + 1 : n;
            if (ll && line[ll - 1] == '\r')
                ll--;
            if (ll == 0)
                break; /* the end of this event */
            if (ll < 5 || memcmp(line, "data:", 5) != 0)
                continue;
            size_t k = ll > 5 && line[5] == ' ' ? 6 : 5;
            if (ndata == 1 && buf_append(&join, d1, d1n))
                rc = LP_E2EE_FAILED;
            if (ndata >= 1 && (buf_append(&join, "\n", 1) || buf_append(&join, line + k, ll - k)))
                rc = LP_E2EE_FAILED;
            if (ndata++ == 0) {
                d1 = line + k;
                d1n = ll - k;
            }
        }
        if (rc != LP_E2EE_OK) {
            snprintf(c->e2ee_err.check, sizeof c->e2ee_err.check, "e2ee.internal");
            snprintf(c->e2ee_err.msg, sizeof c->e2ee_err.msg, "out of memory");
        } else if (ndata) {
            const char *dp = ndata > 1 ? join.data : d1;
            size_t dn = ndata > 1 ? join.len : d1n;
            buf_puts(out, "data: ");
            rc = lp_e2ee_open_event(c->e2ee, (const uint8_t *)dp, dn, out, &c->e2ee_err);
            buf_puts(out, "\n\n");
        }
        buf_free(&join);
        if (rc != LP_E2EE_OK) {
            c->e2ee_failed = 1;
            return -1;
        }
    }
    return 0;
}

static void wipe(buf_t *b)
{
    if (b->data)
        sodium_memzero(b->data, b->len);
    buf_reset(b);
}

/* Queues complete events for the app as they arrive (stream_flush writes them), holds the
 * [DONE] event and anything after it. One copy into c->ev, no allocation per event. 0, or -1
 * to abort. */
static int stream_feed(rx_t *x, const char *p, size_t n)
{
    conn_t *c = x->c;
    if (x->holding) {
        if (c->held.len + n > LP_MAX_HELD_ANSWER) {
            x->too_big = 1;
            return -1;
        }
        return buf_append(&c->held, p, n);
    }
    if (c->ev.len + n > LP_MAX_EVENT) {
        x->too_big = 1;
        return -1;
    }
    if (buf_append(&c->ev, p, n))
        return -1;
    const char *d = c->ev.data;
    size_t len = c->ev.len, start = x->ready, i = x->scan_from;
    for (;;) {
        const char *nl = i < len ? memchr(d + i, '\n', len - i) : NULL;
        if (!nl) {
            i = len;
            break;
        }
        size_t k = (size_t)(nl - d), end;
        if (k + 1 < len && d[k + 1] == '\n')
            end = k + 2;
        else if (k + 2 < len && d[k + 1] == '\r' && d[k + 2] == '\n')
            end = k + 3;
        else if (k + 1 >= len || (d[k + 1] == '\r' && k + 2 >= len)) {
            i = k; /* the event may end with the next bytes */
            break;
        } else {
            i = k + 1;
            continue;
        }
        if (is_done_event(d + start, end - start)) {
            /* the events before it stay ready in c->ev for stream_flush */
            x->holding = 1;
            buf_reset(&c->held);
            int rc = buf_append(&c->held, d + start, len - start);
            c->ev.len = start;
            c->ev.data[start] = '\0';
            x->ready = x->scan_from = start;
            return rc;
        }
        if (x->want_body_id)
            event_id(x, d + start, end - start);
        start = end;
        i = end;
    }
    x->ready = start;
    x->scan_from = i;
    return 0;
}

static size_t on_rbody(char *p, size_t sz, size_t nm, void *ud)
{
    rx_t *x = ud;
    conn_t *c = x->c;
    size_t n = sz * nm;
    if (x->resp_bytes == 0 && !x->head_sent) {
        raw_header(&c->rhead, "Content-Type", x->ctype, sizeof x->ctype);
        x->stream = x->status >= 200 && x->status < 300 &&
                    strncasecmp(x->ctype, "text/event-stream", 17) == 0;
        char id[8];
        if (x->want_body_id && raw_header(&c->rhead, "X-Signature-Id", id, sizeof id))
            x->want_body_id = 0; /* the head names it: no event is parsed */
        if (x->stream && stream_head(x) != 0) {
            x->app_gone = 1;
            return 0;
        }
    }
    x->resp_bytes += n;
    sha_update(c->sha, p, n);
    if (x->stream)
        return stream_feed(x, p, n) == 0 ? n : 0;
    if (c->resp.len + n > LP_MAX_BODY) {
        x->too_big = 1;
        return 0;
    }
    return buf_append(&c->resp, p, n) ? 0 : n;
}

static size_t on_sigbody(char *p, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    size_t n = sz * nm;
    if (b->len + n > LP_MAX_SIG_RECORD)
        return 0;
    return buf_append(b, p, n) ? 0 : n;
}

static size_t on_sighead(char *p, size_t sz, size_t nm, void *ud)
{
    (void)p, (void)ud;
    return sz * nm;
}

/* The easy handle for this pin generation: a new one (so no connection made under an older
 * pin is reused) when the pins changed, with the options common to every request; else the
 * same one as it is (no curl_easy_reset: the per-request options are all set by set_request). */
static CURL *handle_for(conn_t *c, const lp_pins_t *pins)
{
    if (c->curl && c->curl_gen != pins->generation) {
        /* the connection cache is the multi handle's: both go */
        curl_multi_cleanup(c->multi);
        curl_easy_cleanup(c->curl);
        c->curl = NULL;
        c->multi = NULL;
    }
    if (c->curl && c->multi)
        return c->curl;
    if (!c->curl)
        c->curl = curl_easy_init();
    if (!c->multi)
        c->multi = curl_multi_init();
    c->curl_gen = pins->generation;
    CURL *h = c->curl;
    if (!h || !c->multi)
        return NULL;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, g_remote_https ? "https" : "http");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* the path as the app sent it, as route_signed saw it: no dot segment removed */
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, g_o->timeout_s);
    /* a stalled remote: no byte for --timeout seconds (a stream may run longer in all) */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, g_o->timeout_s);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* through an https_proxy: the proxy's CONNECT answer is not the remote's head (the pinned
     * key is checked inside the tunnel all the same) */
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (g_remote_https) {
        /* the attested key is the trust, not a CA: see the top of this file */
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, pins->curl_pin);
    }
    return h;
}

/* Every option one request sets, set for each (the handle is reused as the last request left
 * it): the URL, the headers, the method and its body, the total timeout (0: none) and the
 * callbacks. method: "GET", "HEAD", or any other, sent with body[0..n). */
static void set_request(CURL *h, const char *url, struct curl_slist *l, const char *method,
                        const char *body, size_t n, long timeout_s, curl_write_callback on_head,
                        void *head_ud, curl_write_callback on_data, void *data_ud)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_head);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, head_ud);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, data_ud);
}

/* curl_easy_perform through this connection's multi handle, so that between two bursts of
 * reading (when curl would wait for the socket) what a stream has ready goes to the app in one
 * write (stream_flush), not one write per event as curl hands them over. x: the relayed
 * answer, or NULL (a signature fetch). */
static CURLcode lp_perform(conn_t *c, CURL *h, rx_t *x)
{
    if (curl_multi_add_handle(c->multi, h) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    CURLcode rc = CURLE_OK;
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(c->multi, &running);
        if (x && stream_flush(x) != 0) {
            rc = CURLE_WRITE_ERROR;
            break;
        }
        if (mc != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
        if (!running) {
            int q;
            CURLMsg *msg;
            rc = CURLE_RECV_ERROR;
            while ((msg = curl_multi_info_read(c->multi, &q)))
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == h)
                    rc = msg->data.result;
            break;
        }
        /* curl's own timeouts (connect, low speed) bound the wait */
        if (curl_multi_poll(c->multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
    }
    curl_multi_remove_handle(c->multi, h);
    return rc;
}

static struct curl_slist *auth_header(conn_t *c, struct curl_slist *l)
{
    char a[1200];
    if (g_o->token) {
        snprintf(a, sizeof a, "Authorization: Bearer %s", g_o->token);
        return curl_slist_append(l, a);
    }
    const char *app = g_o->local_token ? NULL : req_header(c, "Authorization");
    if (app) {
        snprintf(a, sizeof a, "Authorization: %s", app);
        return curl_slist_append(l, a);
    }
    return l;
}

/* Fetches GET /v1/signature/{id}?signing_algo=algo through the pinned handle; text and sig
 * out (malloc'd). NULL, or the failed check with detail in why. */
static const char *fetch_sig(conn_t *c, const lp_pins_t *pins, const char *id, const char *algo,
                             char **text, char **sig, char *why, size_t cap)
{
    *text = *sig = NULL;
    buf_t u = BUF_INIT, b = BUF_INIT;
    buf_printf(&u, "%s/v1/signature/", g_remote);
    for (const char *p = id; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '~') /* '.' too is encoded: no dot segment */
            buf_append(&u, p, 1);
        else
            buf_printf(&u, "%%%02X", ch);
    }
    buf_printf(&u, "?signing_algo=%s", algo);
    CURL *h = handle_for(c, pins);
    const char *check = "signature.fetch";
    if (!h || !u.data) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    struct curl_slist *l = auth_header(c, NULL);
    set_request(h, u.data, l, "GET", NULL, 0, g_o->timeout_s, on_sighead, NULL, on_sigbody, &b);
    CURLcode rc = lp_perform(c, h, NULL);
    long st = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(l);
    if (rc != CURLE_OK) {
        snprintf(why, cap, "GET /v1/signature/{id} (%s): %s", algo, curl_easy_strerror(rc));
        goto out;
    }
    if (st != 200) {
        snprintf(why, cap, "GET /v1/signature/{id} (%s): HTTP %ld", algo, st);
        goto out;
    }
    struct json_object *j = json_tokener_parse(b.data ? b.data : ""), *t, *s;
    if (j && json_object_object_get_ex(j, "text", &t) && json_object_is_type(t, json_type_string) &&
        json_object_object_get_ex(j, "signature", &s) && json_object_is_type(s, json_type_string)) {
        *text = strdup(json_object_get_string(t));
        *sig = strdup(json_object_get_string(s));
        check = *text && *sig ? NULL : "signature.fetch";
    } else {
        snprintf(why, cap, "the signature record (%s) does not parse", algo);
    }
    json_object_put(j);
out:
    buf_free(&u);
    buf_free(&b);
    return check;
}

/* One algorithm's signed text and signature against want and the pinned key. */
static const char *check_one(const char *algo, const char *text, const char *sig,
                             const char *key, const char *want, char *why, size_t cap)
{
    char model[256];
    if (!vs_signed_text_ok(text, want, model, sizeof model)) {
        snprintf(why, cap,
                 "the signed text is not [model:]sha256(bytes sent):sha256(bytes received) "
                 "(%s: signed %.140s, computed %s)",
                 algo, text, want);
        return "signature.text";
    }
    char rec[48];
    int rc = vs_verify(algo, text, strlen(text), sig, key, rec);
    if (rc == VS_OK)
        return NULL;
    if (strcmp(algo, "ecdsa") == 0)
        snprintf(why, cap, "the ECDSA signature %s, not to the attested %s",
                 rc == VS_MALFORMED ? "is malformed" : "recovers to", key);
    else
        snprintf(why, cap, "the Ed25519 signature does not verify with the attested key %s", key);
    if (strcmp(algo, "ecdsa") == 0 && rc == VS_MISMATCH)
        snprintf(why, cap, "the ECDSA signature recovers to %s, not to the attested %s", rec, key);
    return strcmp(algo, "ecdsa") == 0 ? "signature.ecdsa" : "signature.ed25519";
}

/* The answer's signatures (in band, else fetched) over sha256(req):sha256(resp). NULL when
 * they verified, else the failed check (why: the detail). */
static const char *verify_answer(conn_t *c, const lp_pins_t *pins, const char *id,
                                 const char *want, char *why, size_t cap)
{
    char mode[128] = "";
    raw_header(&c->rhead, "X-Signature-Inband", mode, sizeof mode);
    int in_head = strcasecmp(mode, "headers") == 0, in_trail = strcasecmp(mode, "trailers") == 0;
    if (in_head || in_trail) {
        const buf_t *src = in_head ? &c->rhead : &c->rtrail;
        const char *missing = in_head ? "signature.missing" : "signature.missing_trailer";
        char text[1024], esig[200], dsig[200];
        if (!raw_header(src, "X-Signature-Text", text, sizeof text) ||
            !raw_header(src, "X-Signature-Ecdsa", esig, sizeof esig)) {
            snprintf(why, cap, "the answer announced its signatures in %s, and %s",
                     in_head ? "its headers" : "trailers",
                     in_head ? "they are not there" : "the body ended without them");
            return missing;
        }
        const char *f = check_one("ecdsa", text, esig, pins->ecdsa_address, want, why, cap);
        if (f)
            return f;
        if (pins->ed25519_key[0]) {
            if (!raw_header(src, "X-Signature-Ed25519", dsig, sizeof dsig)) {
                snprintf(why, cap, "the answer's %s have no X-Signature-Ed25519",
                         in_head ? "headers" : "trailers");
                return missing;
            }
            return check_one("ed25519", text, dsig, pins->ed25519_key, want, why, cap);
        }
        return NULL;
    }
    static const char *const algos[2] = {"ecdsa", "ed25519"};
    for (int i = 0; i < 2; i++) {
        const char *key = i == 0 ? pins->ecdsa_address : pins->ed25519_key;
        if (!key[0])
            continue;
        char *text, *sig;
        const char *f = fetch_sig(c, pins, id, algos[i], &text, &sig, why, cap);
        if (!f)
            f = check_one(algos[i], text, sig, key, want, why, cap);
        free(text);
        free(sig);
        if (f)
            return f;
    }
    return NULL;
}

/* The verification error as the app sees it. */
static void verification_error(buf_t *b, const char *check, const char *why)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "answer failed verification: %s: %s", check, why);
    error_json(b, msg, "verification_error",
               strncmp(check, "signature.", 10) == 0 ? "signature_invalid" : "verification_failed");
}

static int send_unverified_503(conn_t *c, const char *why)
{
    reply_error(c, 503, "service_unavailable", "remote_not_verified", 0, "remote not verified: %s",
                why);
    snprintf(c->outcome_buf, sizeof c->outcome_buf, "not-verified");
    c->outcome = c->outcome_buf;
    return 0;
}

/* E2EE request headers the app may send to do its own encryption. */
static const char *const APP_E2EE[] = {
    "X-Signing-Algo",       "X-Client-Pub-Key",     "X-Model-Pub-Key",
    "X-Encryption-Version", "X-Encrypt-All-Fields", "X-Encrypt-Tool-Calls",
};

/* The app encrypts itself (its own E2EE headers): sealing again would hand the engine the
 * app's ciphertext as text. 1 with *ee. */
static int app_does_e2ee(const conn_t *c, lp_e2ee_err_t *ee)
{
    for (size_t i = 0; i < c->nh; i++) {
        const char *nm = c->hb.data + c->name_off[i];
        if (in_list(nm, strlen(nm), APP_E2EE, sizeof APP_E2EE / sizeof APP_E2EE[0]) ||
            strncasecmp(nm, "X-E2EE-", 7) == 0) {
            snprintf(ee->check, sizeof ee->check, "e2ee.request");
            snprintf(ee->msg, sizeof ee->msg,
                     "the app sent its own E2EE header %.30s: this proxy encrypts itself (use "
                     "--e2ee off to relay the app's); the request was not sent",
                     nm);
            return 1;
        }
    }
    return 0;
}

/* LP_E2EE_REFUSED: 400 in the OpenAI shape, code = the check; nothing was sent. */
static void e2ee_refuse(conn_t *c, const lp_e2ee_err_t *ee)
{
    reply_error(c, 400, "invalid_request_error", ee->check, 0, "end-to-end encryption: %s",
                ee->msg);
    snprintf(c->outcome_buf, sizeof c->outcome_buf, "refused:%s", ee->check);
    c->outcome = c->outcome_buf;
}

/* The rest of a sealed answer that verified, opened into c->plain: a stream's held tail (an
 * unterminated event, then [DONE] and what follows), or a whole JSON answer. NULL, or the
 * failed check (why: the detail). */
static const char *e2ee_open_rest(conn_t *c, int stream, char *why, size_t cap)
{
    buf_reset(&c->plain);
    int rc = stream ? (e2ee_open_events(c, c->ev.data, c->ev.len, &c->plain) ||
                       e2ee_open_events(c, c->held.data, c->held.len, &c->plain))
                    : lp_e2ee_open_json(c->e2ee, (const uint8_t *)(c->resp.data ? c->resp.data : ""),
                                        c->resp.len, &c->plain, &c->e2ee_err);
    if (rc == 0)
        return NULL;
    wipe(&c->plain);
    snprintf(why, cap, "%s", c->e2ee_err.msg);
    return c->e2ee_err.check;
}

static void relay_once(conn_t *c, const char *path, size_t path_n);

/* One relayed request; then the E2EE state of it is wiped (the app's body, the plaintext,
 * the codec's secrets). */
static void relay(conn_t *c, const char *path, size_t path_n)
{
    relay_once(c, path, path_n);
    if (c->e2ee) {
        wipe(&c->body);
        wipe(&c->plain);
        /* the app's bytes as read (those of a pipelined next request kept) */
        sodium_memzero(c->rbuf, c->rpos < c->rlen ? c->rpos : sizeof c->rbuf);
        lp_e2ee_free(c->e2ee);
        c->e2ee = NULL;
    }
    c->e2ee_failed = 0;
}

static void relay_once(conn_t *c, const char *path, size_t path_n)
{
    lp_pins_t pins;
    char why[1024];
    if (!lp_att_pins(&pins, why, sizeof why)) {
        send_unverified_503(c, why);
        return;
    }
    if (g_remote_https && !pins.curl_pin[0]) {
        send_unverified_503(c, "no TLS key is pinned for the https remote");
        return;
    }
    int is_signed = strcmp(c->method, "POST") == 0 && route_signed(path, path_n);
    char route[64];
    snprintf(route, sizeof route, "%.*s", (int)(path_n < 63 ? path_n : 63), path);
    char url_want[130];
    uint8_t req_hash[32];
    /* end-to-end encryption (--e2ee): sealed, in clear, or refused here */
    char e2desc[96];
    lp_e2ee_err_t ee;
    memset(&ee, 0, sizeof ee);
    buf_t url = BUF_INIT;
    buf_printf(&url, "%s%s", g_remote, c->url.data);
    int tries = 0;
again:;
    /* decided under this attempt's pins: a retry after a key change may have other keys */
    int e2pol = lp_e2ee_policy(g_o->e2ee, &pins, c->method, route, e2desc, sizeof e2desc, &ee);
    if (e2pol == LP_E2EE_REFUSE || (e2pol == LP_E2EE_SEAL && app_does_e2ee(c, &ee))) {
        e2ee_refuse(c, &ee);
        buf_free(&url);
        return;
    }
    rx_t x;
    memset(&x, 0, sizeof x);
    x.c = c;
    buf_reset(&c->ev);
    buf_reset(&c->held);
    buf_reset(&c->resp);
    buf_reset(&c->rhead);
    buf_reset(&c->rtrail);
    sha256_reset(c->sha);
    const char *send_p = c->body.data ? c->body.data : "";
    size_t send_n = c->body.len;
    const char *const *e2h = NULL;
    if (e2pol == LP_E2EE_SEAL) {
        /* a new codec (a fresh key pair, nonce and time) for every attempt, under the pins
         * of this attempt; the signatures are over the ciphertext sent */
        lp_e2ee_free(c->e2ee);
        c->e2ee_failed = 0;
        buf_reset(&c->sealed);
        c->e2ee = lp_e2ee_new(g_o->e2ee, &pins, route, &ee);
        if (!c->e2ee || lp_e2ee_seal_request(c->e2ee, (const uint8_t *)send_p, send_n,
                                             &c->sealed, &e2h, &ee) != LP_E2EE_OK) {
            e2ee_refuse(c, &ee);
            buf_free(&url);
            return;
        }
        send_p = c->sealed.data ? c->sealed.data : "";
        send_n = c->sealed.len;
    }
    sha256(send_p, send_n, req_hash);
    hex_encode(url_want, req_hash, 32);
    url_want[64] = ':';
    CURL *h = handle_for(c, &pins);
    if (!h) {
        reply_error(c, 500, "server_error", NULL, 1, "out of memory");
        buf_free(&url);
        return;
    }
    /* headers: the app's, less NO_FORWARD; ours */
    struct curl_slist *l = NULL;
    const char *conn_hdr = req_header(c, "Connection");
    int have_ct = 0;
    char line[LP_MAX_HEAD + 64];
    for (size_t i = 0; i < c->nh; i++) {
        const char *nm = c->hb.data + c->name_off[i], *v = c->hb.data + c->val_off[i];
        size_t nl = strlen(nm);
        if (in_list(nm, nl, NO_FORWARD, sizeof NO_FORWARD / sizeof NO_FORWARD[0]) ||
            named_by_connection(conn_hdr, nm, nl))
            continue;
        if (strcasecmp(nm, "Content-Type") == 0)
            have_ct = 1;
        /* "Name;" is curl's way to send a header with an empty value */
        snprintf(line, sizeof line, *v ? "%s: %s" : "%s;", nm, v);
        l = curl_slist_append(l, line);
    }
    if (!have_ct)
        l = curl_slist_append(l, "Content-Type:"); /* curl would add a form type for POST */
    l = curl_slist_append(l, "Expect:");
    l = curl_slist_append(l, "X-Signature-Inband: 1");
    l = curl_slist_append(l, "TE: trailers");
    for (size_t i = 0; e2h && e2h[i]; i++)
        l = curl_slist_append(l, e2h[i]);
    l = auth_header(c, l);
    /* no total timeout: a stream may run longer than --timeout (LOW_SPEED bounds a stall) */
    set_request(h, url.data, l, c->method, send_p, send_n, 0L, on_rheader, &x, on_rbody, &x);
    x.want_body_id = is_signed;
    CURLcode rc = lp_perform(c, h, &x);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(l);

    if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH && !x.head_sent) {
        /* nothing was sent on that connection: the key check comes before the request */
        uint64_t gen = pins.generation;
        int ok = lp_att_kick("the remote presented a TLS key other than the attested one",
                             10000, &pins, why, sizeof why);
        if (ok && pins.generation != gen && tries++ == 0)
            goto again;
        if (ok)
            snprintf(why, sizeof why,
                     "the remote presented a TLS key other than the attested one");
        send_unverified_503(c, why);
        buf_free(&url);
        return;
    }
    char sig_id[256] = "";
    raw_header(&c->rhead, "X-Signature-Id", sig_id, sizeof sig_id);
    if ((rc != CURLE_OK || !x.headers_done) && c->e2ee_failed && x.head_sent) {
        /* an event of the sealed stream did not open: nothing of it reached the app */
        buf_reset(&c->tmp);
        buf_puts(&c->tmp, "data: ");
        verification_error(&c->tmp, c->e2ee_err.check, c->e2ee_err.msg);
        buf_puts(&c->tmp, "\n\n");
        send_chunk(c, c->tmp.data, c->tmp.len);
        send_all(c->fd, "0\r\n\r\n", 5);
        snprintf(c->outcome_buf, sizeof c->outcome_buf, "failed:%s", c->e2ee_err.check);
        c->outcome = c->outcome_buf;
        lp_att_answer(route, sig_id[0] ? sig_id : (x.body_id[0] ? x.body_id : NULL), 1,
                      c->e2ee_err.check);
        buf_free(&url);
        return;
    }
    if (rc != CURLE_OK || !x.headers_done) {
        const char *what = x.app_gone   ? "the app left"
                           : x.too_big  ? "the answer is larger than this proxy holds"
                                        : curl_easy_strerror(rc);
        if (x.app_gone) {
            c->outcome = "app-left";
        } else if (x.head_sent) {
            buf_reset(&c->tmp);
            buf_puts(&c->tmp, "data: ");
            char msg[600];
            snprintf(msg, sizeof msg, "the remote's answer broke off: %s", what);
            error_json(&c->tmp, msg, "server_error", "relay_failed");
            buf_puts(&c->tmp, "\n\n");
            send_chunk(c, c->tmp.data, c->tmp.len);
            send_all(c->fd, "0\r\n\r\n", 5);
            c->outcome = "failed:relay";
            if (is_signed)
                lp_att_answer(route, sig_id[0] ? sig_id : NULL, 1, "relay.incomplete");
        } else {
            reply_error(c, 502, "server_error", "remote_unreachable", 0,
                        "the remote could not be reached or its answer was cut: %s", what);
            c->outcome = "failed:relay";
        }
        buf_free(&url);
        return;
    }
    /* the answer is complete: verify it when it is a signed one */
    uint8_t rh[32];
    sha_final(c->sha, rh);
    hex_encode(url_want + 65, rh, 32);
    int two = x.status >= 200 && x.status < 300;
    const char *failed = NULL;
    char fwhy[1024] = "";
    int signed_answer = two && (sig_id[0] || is_signed) && strcmp(c->method, "HEAD") != 0;
    if (signed_answer) {
        if (!sig_id[0] && is_signed) {
            /* chat and text completions from a server that names the id in the body only */
            if (x.body_id[0]) {
                snprintf(sig_id, sizeof sig_id, "%s", x.body_id);
            } else if (!x.stream) {
                struct json_object *j = json_tokener_parse(c->resp.data ? c->resp.data : ""), *v;
                if ((strcmp(route, "/v1/chat/completions") == 0 ||
                     strcmp(route, "/v1/completions") == 0) &&
                    j && json_object_object_get_ex(j, "id", &v) &&
                    json_object_is_type(v, json_type_string))
                    snprintf(sig_id, sizeof sig_id, "%s", json_object_get_string(v));
                json_object_put(j);
            }
        }
        char mode[64] = "";
        raw_header(&c->rhead, "X-Signature-Inband", mode, sizeof mode);
        if (!sig_id[0] && strcasecmp(mode, "headers") != 0 && strcasecmp(mode, "trailers") != 0) {
            failed = "signature.missing_id";
            snprintf(fwhy, sizeof fwhy, "a 2xx answer of a signed route without X-Signature-Id");
        } else {
            failed = verify_answer(c, &pins, sig_id, url_want, fwhy, sizeof fwhy);
        }
        if (!failed && c->e2ee)
            failed = e2ee_open_rest(c, x.stream, fwhy, sizeof fwhy);
        lp_att_answer(route, sig_id[0] ? sig_id : NULL, x.stream, failed);
    }
    if (x.stream) {
        if (failed) {
            buf_reset(&c->tmp);
            buf_puts(&c->tmp, "data: ");
            verification_error(&c->tmp, failed, fwhy);
            buf_puts(&c->tmp, "\n\n");
            send_chunk(c, c->tmp.data, c->tmp.len);
        } else if (c->e2ee) {
            send_chunk(c, c->plain.data, c->plain.len);
        } else {
            send_chunk(c, c->ev.data, c->ev.len);
            send_chunk(c, c->held.data, c->held.len);
        }
        send_all(c->fd, "0\r\n\r\n", 5);
    } else if (failed) {
        buf_reset(&c->tmp);
        verification_error(&c->tmp, failed, fwhy);
        reply(c, 502, "application/json", c->tmp.data, c->tmp.len, NULL, 0);
    } else {
        if (!x.ctype[0])
            raw_header(&c->rhead, "Content-Type", x.ctype, sizeof x.ctype);
        buf_t extra = BUF_INIT;
        return_headers(c, &extra);
        buf_printf(&extra, "X-Verify: %s\r\n", signed_answer ? "verified" : "unsigned");
        /* a sealed 2xx answer was opened into c->plain; any other answer goes as it came */
        const buf_t *ob = c->e2ee && signed_answer ? &c->plain : &c->resp;
        if (c->e2ee)
            buf_printf(&extra, "X-Verify-E2EE: %s\r\n", lp_e2ee_describe(c->e2ee));
        char ct[300];
        snprintf(ct, sizeof ct, "%s", x.ctype[0] ? x.ctype : "application/octet-stream");
        send_head_body(c, x.status, ct, ob->len, extra.data, 0, ob->data,
                       strcmp(c->method, "HEAD") != 0 ? ob->len : 0);
        c->sent = ob->len;
        buf_free(&extra);
    }
    c->status = x.status;
    if (failed) {
        snprintf(c->outcome_buf, sizeof c->outcome_buf, "failed:%s", failed);
        c->outcome = c->outcome_buf;
    } else {
        c->outcome = !signed_answer ? "unsigned" : c->e2ee ? "verified,e2ee" : "verified";
    }
    buf_free(&url);
}

/* ---- one request ---- */

static void handle(conn_t *c)
{
    const char *u = c->url.data ? c->url.data : "";
    size_t path_n = strcspn(u, "?#");
    if (u[0] != '/') {
        reply_error(c, 400, "invalid_request_error", "bad_request", 1,
                    "the request target must be a path (origin form)");
        return;
    }
    int status_page = path_n == 1 || (path_n == 13 && memcmp(u, "/verification", 13) == 0);
    if (check_request(c, status_page) != 0)
        return;
    int get = strcmp(c->method, "GET") == 0;
    if (status_page) {
        if (!get) {
            reply_error(c, 405, "invalid_request_error", "method_not_allowed", 0,
                        "only GET is allowed here");
            return;
        }
        buf_reset(&c->tmp);
        if (path_n == 1) {
            lp_status_html(&c->tmp);
            reply(c, 200, "text/html; charset=utf-8", c->tmp.data, c->tmp.len,
                  "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
                  "X-Frame-Options: DENY\r\n",
                  0);
        } else {
            lp_status_json(&c->tmp);
            reply(c, 200, "application/json", c->tmp.data, c->tmp.len, NULL, 0);
        }
        c->outcome = "local";
        return;
    }
    if (path_n >= 4 && memcmp(u, "/v1/", 4) == 0) {
        relay(c, u, path_n);
        return;
    }
    reply_error(c, 404, "invalid_request_error", "not_found",
                0, "not found: this local proxy serves /v1/*, /verification and /");
    c->outcome = "local";
}

static void log_line(conn_t *c, long t0)
{
    const char *u = c->url.data ? c->url.data : "";
    fprintf(stderr, "lp: %s %.*s %ld %zuB %ldms %s\n", c->method[0] ? c->method : "-",
            (int)(strcspn(u, "?#") > 200 ? 200 : strcspn(u, "?#")), u, c->status, c->sent,
            now_ms() - t0, c->outcome);
}

void lp_conn_serve(int fd)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    struct timeval tv = {LP_SEND_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    llhttp_settings_init(&c->settings);
    c->settings.on_url = on_url;
    c->settings.on_method = on_method;
    c->settings.on_header_field = on_hfield;
    c->settings.on_header_field_complete = on_hfield_done;
    c->settings.on_header_value = on_hvalue;
    c->settings.on_header_value_complete = on_hvalue_done;
    c->settings.on_headers_complete = on_headers_done;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_complete;
    llhttp_init(&c->parser, HTTP_REQUEST, &c->settings);
    c->parser.data = c;
    c->sha = sha256_new();
    while (c->sha) {
        int r = read_request(c);
        if (r <= 0)
            break;
        long t0 = now_ms();
        int keep = llhttp_should_keep_alive(&c->parser);
        handle(c);
        log_line(c, t0);
        if (!keep || c->status == 400 || c->status == 408 || c->status == 413 || c->status == 431 ||
            atomic_load(&g_stopping))
            break;
    }
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->curl)
        curl_easy_cleanup(c->curl);
    sha_free(c->sha);
    buf_free(&c->url);
    buf_free(&c->hb);
    buf_free(&c->body);
    buf_free(&c->ev);
    buf_free(&c->held);
    buf_free(&c->resp);
    buf_free(&c->rhead);
    buf_free(&c->rtrail);
    buf_free(&c->tmp);
    buf_free(&c->sealed);
    wipe(&c->plain);
    buf_free(&c->plain);
    shutdown(fd, SHUT_WR);
    close(fd);
    free(c);
}

void lp_relay_stop(void)
{
    atomic_store(&g_stopping, 1);
    if (g_stop_fd >= 0 && eventfd_write(g_stop_fd, 1) != 0)
        fprintf(stderr, "vllm-proxy-verify proxy: eventfd_write: %s\n", strerror(errno));
}

int lp_relay_init(const lp_opts_t *o, int port)
{
    g_o = o;
    if (g_stop_fd < 0)
        g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g_stop_fd < 0) {
        fprintf(stderr, "vllm-proxy-verify proxy: eventfd: %s\n", strerror(errno));
        return -1;
    }
    size_t n = strlen(o->remote);
    while (n && o->remote[n - 1] == '/')
        n--;
    if (n >= sizeof g_remote) {
        fprintf(stderr, "vllm-proxy-verify proxy: the remote URL is too long\n");
        return -1;
    }
    memcpy(g_remote, o->remote, n);
    g_remote[n] = '\0';
    g_remote_https = strncasecmp(g_remote, "https://", 8) == 0;
    const char *t = getenv("VP_LP_TEST_TIMEOUTS_MS");
    long hm, bm, im;
    if (t && sscanf(t, "%ld,%ld,%ld", &hm, &bm, &im) == 3 && hm > 0 && bm > 0 && im > 0) {
        g_head_ms = hm, g_body_ms = bm, g_idle_ms = im;
        fprintf(stderr, "vllm-proxy-verify proxy: VP_LP_TEST_TIMEOUTS_MS: head %ld ms, body %ld "
                        "ms, idle %ld ms (tests only)\n", hm, bm, im);
    }
    snprintf(g_hosts[0], sizeof g_hosts[0], "127.0.0.1:%d", port);
    snprintf(g_hosts[1], sizeof g_hosts[1], "localhost:%d", port);
    snprintf(g_hosts[2], sizeof g_hosts[2], "[::1]:%d", port);
    if (strchr(o->listen_host, ':'))
        snprintf(g_hosts[3], sizeof g_hosts[3], "[%s]:%d", o->listen_host, port);
    else
        snprintf(g_hosts[3], sizeof g_hosts[3], "%s:%d", o->listen_host, port);
    return 0;
}
