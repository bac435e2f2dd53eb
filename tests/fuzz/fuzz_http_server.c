/* libFuzzer target: the server's own request path (src/http/server.c) over a real loopback
 * connection. One worker on 127.0.0.1 (port 0) and one libuv loop are created once; each input
 * is one client connection driven from this thread: the input is sent in two writes (split at
 * a point derived from the input, with loop turns in between), the write side is shut down or
 * not, the loop is turned (UV_RUN_NOWAIT) while the client reads, then the client closes (FIN
 * or RST) and the loop runs until the server's side is gone.
 *
 * The handler picks a behaviour from the byte after the path's leading '/': answer at once
 * (conn_respond), echo the body, stream (chunked or with a length, corked or not), answer on
 * a later loop turn, 204/304, answer from on_headers (skipping the body), abort mid-response,
 * a large corked body, a body above the write queue's high watermark ended from on_drain.
 *
 * Invariants checked:
 *  - the bytes received parse as a sequence of HTTP/1.1 responses ("HTTP/1.1 " + 3 digits),
 *    interim 100s exactly "HTTP/1.1 100 Continue\r\n\r\n", each final response matching the
 *    handler's answer in order (status, framing, exact body length; HEAD/204/304 no body),
 *    at most one extra response made by the server itself (4xx), which is the last one;
 *    nothing after a "Connection: close" response; complete when the server closed first;
 *  - the server never writes more than a bounded number of bytes per request;
 *  - an input whose first line is complete and cannot be a request line gets exactly one
 *    4xx response and the handler never sees a request;
 *  - request fields are consistent (body within max_body and equal to Content-Length, path
 *    without '?', strings readable), conn_bytes_out counts body bytes only;
 *  - on_abort only for a connection the handler holds; after each input the worker has no
 *    connection left and the handler holds nothing. */
#include "fuzz.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#include "http/server.h"

#include "../unit/worker_port.h"

#define MAX_HEADER_BYTES 2048
#define MAX_HEADERS 16
#define MAX_BODY 4096
#define BIG_LEN (192u * 1024)          /* corked, auto-flushed at CORK_MAX */
#define HUGE_LEN (1024u * 1024)        /* above WQ_HIGH unless the kernel takes it all */
#define MAX_RECS 16384
#define RESP_CAP (8u * 1024 * 1024)
#define PER_REQ_MAX (25 + 1024 + 64 + 2 + MAX_BODY + 64 * 16 + 5) /* 100, head, extra, body */
#define SERVER_ERR_MAX 1024
#define IDLE_TURNS 16
#define MAX_TURNS 400000

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz_http_server: check failed: %s: ", #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

enum framing { FR_LENGTH, FR_STREAM, FR_NONE };

struct rec {
    int status;
    int framing;        /* what the handler asked for; FR_NONE: 1xx/204/304 */
    int head;           /* HEAD request: no body bytes on the wire */
    int aborted;        /* conn_abort after the head: the stream ends in this response */
    size_t body;        /* body bytes on the wire */
    size_t declared;    /* what the handler passed (Content-Length even for HEAD) */
};

static struct {
    uv_loop_t loop;
    worker_t *w;
    int port;
    uv_check_t defer_check;      /* counts loop turns for a held request */
    int debug;
    char *big;
} G;

/* Per input. */
static struct rec recs[MAX_RECS];
static struct {
    unsigned nrecs;
    int recs_overflow;
    unsigned headers_calls, request_calls, aborts, drains;
    uint64_t events;            /* any handler callback: progress for the pump */
    unsigned nreq;              /* requests seen on this connection (on_headers) */
    int last_head;              /* the last request on_headers saw was a HEAD */
    size_t big_bytes;           /* extra allowance for BIG/HUGE answers */
} S;

static void h_on_abort(conn_owner_t *o, conn_t *c);
static void h_on_drain(conn_owner_t *o, conn_t *c);
static const conn_owner_ops_t owner_ops = {"fuzz", h_on_abort, h_on_drain};

/* The request the handler holds across loop turns (one connection at a time). */
static struct {
    conn_owner_t owner;
    conn_t *c;
    int kind;
    int head;
    int turns;      /* loop turns left before the answer */
} defer = {.owner = {&owner_ops}};

static struct {
    conn_owner_t owner;
    conn_t *c;
    uint64_t bytes_before;
} hold = {.owner = {&owner_ops}};

static const char BODY[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";

static struct rec *rec_add(int status, int framing, int head, size_t body)
{
    if (S.nrecs >= MAX_RECS) {
        S.recs_overflow = 1;
        return NULL;
    }
    struct rec *r = &recs[S.nrecs++];
    r->status = status;
    r->framing = (status >= 100 && status < 200) || status == 204 || status == 304 ? FR_NONE
                                                                                    : framing;
    r->head = head;
    r->aborted = 0;
    r->declared = body;
    r->body = head || r->framing == FR_NONE ? 0 : body;
    return r;
}

/* Drops the last record when the server refused the answer (connection already closing). */
static void rec_drop(struct rec *r)
{
    if (r && S.nrecs && r == &recs[S.nrecs - 1])
        S.nrecs--;
}

static void touch(strv_t v)
{
    if (v.n)
        CHECK(v.p != NULL, "strv with length %zu and no pointer", v.n);
    volatile unsigned char x = 0;
    for (size_t i = 0; i < v.n; i++)
        x ^= (unsigned char)v.p[i];
    (void)x;
}

static int mode_of(const http_req_t *r)
{
    if (r->path.n >= 2 && r->path.p[0] == '/')
        return (unsigned char)r->path.p[1] & 15;
    if (r->path.n == 1 && r->path.p[0] != '/')
        return (unsigned char)r->path.p[0] & 15;
    return 0;
}

static void check_req(const http_req_t *r, int with_body)
{
    touch(r->path);
    touch(r->query);
    touch(r->authorization);
    touch(r->content_type);
    touch(r->accept);
    touch(r->x_request_id);
    touch(r->x_request_hash);
    CHECK(memchr(r->path.p ? r->path.p : "", '?', r->path.n) == NULL, "path holds the query");
    if (r->has_content_length)
        CHECK(r->content_length <= MAX_BODY, "content_length %llu over max_body",
              (unsigned long long)r->content_length);
    if (with_body) {
        CHECK(r->body.len <= MAX_BODY, "body %zu over max_body", r->body.len);
        /* CONNECT: llhttp leaves the rest to another protocol, the body is never read (the
         * server answers and closes). */
        if (r->has_content_length && r->method != HTTP_CONNECT)
            CHECK(r->body.len == r->content_length, "body %zu != content-length %llu",
                  r->body.len, (unsigned long long)r->content_length);
        if (r->body.len) {
            volatile unsigned char x = 0;
            for (size_t i = 0; i < r->body.len; i++)
                x ^= (unsigned char)r->body.data[i];
            (void)x;
        }
    }
}

/* ---- handler ---- */

static int h_on_headers(conn_t *c, http_req_t *req)
{
    S.events++;
    S.headers_calls++;
    S.nreq++;
    check_req(req, 0);
    CHECK(!conn_response_started(c), "response started before on_headers");
    int m = mode_of(req);
    int head = req->method == HTTP_HEAD;
    S.last_head = head;
    if (m == 8 || (m == 9 && req->has_content_length && req->content_length > 0)) {
        int status = m == 8 ? 401 : 413;
        struct rec *r = rec_add(status, FR_LENGTH, head, 2);
        if (conn_respond(c, status, "text/plain", NULL, "no", 2) != 0)
            rec_drop(r);
        return 1;
    }
    return 0;
}

/* Streams len body bytes in pieces; returns nonzero when a call failed. */
static int stream_body(conn_t *c, size_t len, size_t piece, int flush_mid)
{
    int bad = 0;
    size_t off = 0, k = 0;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;
        const char *src = G.big ? G.big + off : BODY;
        if (!G.big && n > sizeof BODY - 1)
            n = sizeof BODY - 1;
        bad |= conn_write_body(c, src, n) != 0;
        off += n;
        if (flush_mid && ++k == 2)
            bad |= conn_flush(c) != 0;
    }
    bad |= conn_write_body(c, "", 0) != 0; /* must be ignored */
    return bad;
}

/* A streamed answer; checks conn_bytes_out counts body bytes only. */
static void answer_stream(conn_t *c, int status, int64_t cl, size_t len, size_t piece, int cork,
                          int head)
{
    uint64_t before = conn_bytes_out(c);
    struct rec *r = rec_add(status, cl < 0 ? FR_STREAM : FR_LENGTH, head, len);
    if (cork)
        conn_cork(c);
    int bad = conn_start_response(c, status, "text/plain", "X-Mode: stream\r\n", cl) != 0;
    if (bad) {
        rec_drop(r);
        conn_abort(c);
        return;
    }
    bad |= stream_body(c, len, piece, cork);
    uint64_t body = conn_bytes_out(c) - before;
    if (bad) {
        conn_abort(c);
        return;
    }
    size_t want = r ? r->body : body;
    CHECK(body == want, "conn_bytes_out grew by %llu, body was %zu", (unsigned long long)body,
          want);
    conn_end_response(c);
}

static void answer_now(conn_t *c, int kind, http_req_t *req)
{
    int head = req->method == HTTP_HEAD;
    switch (kind) {
    case 1: { /* echo */
        struct rec *r = rec_add(200, FR_LENGTH, head, req->body.len);
        if (conn_respond(c, 200, "application/octet-stream", "X-Echo: 1\r\n", req->body.data,
                         req->body.len) != 0)
            rec_drop(r);
        return;
    }
    case 2: /* chunked, corked, flushed in the middle */
        answer_stream(c, 200, -1, 40, 7, 1, head);
        return;
    case 3: /* length, corked */
        answer_stream(c, 201, 50, 50, 16, 1, head);
        return;
    case 5: /* chunked, not corked */
        answer_stream(c, 200, -1, 25, 10, 0, head);
        return;
    case 6: {
        struct rec *r = rec_add(204, FR_NONE, head, 0);
        if (conn_respond(c, 204, NULL, NULL, NULL, 0) != 0)
            rec_drop(r);
        return;
    }
    case 7: { /* a body given to a 304 is not sent */
        struct rec *r = rec_add(304, FR_NONE, head, 0);
        if (conn_respond(c, 304, "text/plain", "ETag: \"x\"\r\n", "ignored", 7) != 0)
            rec_drop(r);
        return;
    }
    case 10: { /* abort after the head and a piece */
        struct rec *r = rec_add(200, FR_STREAM, head, 0);
        if (r)
            r->aborted = 1;
        if (conn_start_response(c, 200, "text/plain", NULL, -1) != 0)
            rec_drop(r);
        conn_write_body(c, "partial", 7);
        conn_abort(c);
        return;
    }
    case 11: /* big corked body: flushed at CORK_MAX, tail queued */
        if (S.nreq == 1) {
            S.big_bytes += BIG_LEN + 1024;
            answer_stream(c, 200, BIG_LEN, BIG_LEN, 40000, 1, head);
        } else {
            answer_stream(c, 200, 30, 30, 30, 1, head);
        }
        return;
    case 12: /* above the high watermark: on_drain ends it */
        if (S.nreq == 1 && !head) {
            S.big_bytes += HUGE_LEN + 1024;
            rec_add(200, FR_LENGTH, head, HUGE_LEN);
            hold.c = c;
            hold.bytes_before = conn_bytes_out(c);
            conn_set_owner(c, &hold.owner);
            if (conn_start_response(c, 200, "application/octet-stream", NULL, HUGE_LEN) != 0 ||
                conn_write_body(c, G.big, HUGE_LEN) != 0) {
                hold.c = NULL;
                conn_abort(c);
                return;
            }
            if (!conn_should_pause_source(c)) {
                hold.c = NULL;
                conn_set_owner(c, NULL);
                conn_end_response(c);
            }
        } else {
            answer_stream(c, 202, -1, 3, 1, 0, head);
        }
        return;
    case 13: /* many small chunks, not corked */
        answer_stream(c, 200, -1, 64, 1, 0, head);
        return;
    case 15: {
        struct rec *r = rec_add(500, FR_LENGTH, head, 1);
        if (conn_respond(c, 500, NULL, NULL, "x", 1) != 0)
            rec_drop(r);
        return;
    }
    default: {
        struct rec *r = rec_add(200, FR_LENGTH, head, 5);
        if (conn_respond(c, 200, "text/plain", "X-Mode: now\r\n", "hello", 5) != 0)
            rec_drop(r);
        return;
    }
    }
}

static void defer_fire(uv_check_t *t)
{
    conn_t *c = defer.c;
    if (!c) {
        uv_check_stop(t);
        return;
    }
    S.events++;
    if (--defer.turns > 0)
        return;
    uv_check_stop(t);
    defer.c = NULL;
    conn_set_owner(c, NULL);
    http_req_t fake = {0};
    fake.method = defer.head ? HTTP_HEAD : HTTP_GET;
    fake.body.len = 0;
    if (defer.kind == 4) {
        answer_now(c, 0, &fake);
    } else {
        answer_stream(c, 200, 33, 33, 8, 1, defer.head); /* kind 14: corked, with length */
    }
}

static void h_on_request(conn_t *c, http_req_t *req)
{
    S.events++;
    S.request_calls++;
    CHECK(S.request_calls <= S.headers_calls, "on_request without on_headers");
    CHECK(defer.c == NULL && hold.c == NULL, "a second request while one is held");
    check_req(req, 1);
    int m = mode_of(req);
    if (m == 4 || m == 14) {
        defer.c = c;
        defer.kind = m;
        defer.head = req->method == HTTP_HEAD;
        /* mode 4: the next turn; mode 14: after a few (a half-closing client is noticed
         * first, and the server aborts the held request) */
        defer.turns = m == 4 ? 1 : 3;
        conn_set_owner(c, &defer.owner);
        uv_check_start(&G.defer_check, defer_fire);
        return;
    }
    if (m == 9)
        m = 0; /* early 413 only with a body */
    answer_now(c, m, req);
}

static void h_on_abort(conn_owner_t *app, conn_t *c)
{
    S.events++;
    S.aborts++;
    if (app == &defer.owner) {
        CHECK(defer.c == c, "on_abort for a connection not held");
        defer.c = NULL;
        uv_check_stop(&G.defer_check);
    } else if (app == &hold.owner) {
        CHECK(hold.c == c, "on_abort for a connection not held");
        hold.c = NULL;
    } else {
        CHECK(0, "on_abort with unknown app %p", app);
    }
}

static void h_on_drain(conn_owner_t *app, conn_t *c)
{
    S.events++;
    S.drains++;
    CHECK(app == &hold.owner && hold.c == c, "on_drain for a connection not held");
    uint64_t body = conn_bytes_out(c) - hold.bytes_before;
    CHECK(body == HUGE_LEN, "conn_bytes_out grew by %llu, body was %u", (unsigned long long)body,
          HUGE_LEN);
    hold.c = NULL;
    conn_set_owner(c, NULL);
    conn_end_response(c);
}

/* Protocol rejections: a JSON error body, as the proxy writes them. */
static void h_on_reject(conn_t *c, http_reject_t why)
{
    static const int status[HTTP_REJECT_N] = {408, 413, 431, 400, 400};
    CHECK(why < HTTP_REJECT_N, "unknown rejection %d", (int)why);
    conn_respond(c, status[why], "application/json", NULL, "{\"error\":{}}", 12);
}

static const http_handler_t handler = {h_on_headers, h_on_request, h_on_reject};

/* ---- set-up ---- */

static void small_sndbuf(uv_handle_t *h, void *arg)
{
    (void)arg;
    uv_os_fd_t fd;
    int sz = 16384;
    if ((h->type == UV_TCP || h->type == UV_POLL) && uv_fileno(h, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

static void setup_once(void)
{
    if (G.w)
        return;
    signal(SIGPIPE, SIG_IGN);
    G.debug = getenv("FUZZ_HTTP_SERVER_DEBUG") != NULL;
    G.big = malloc(HUGE_LEN);
    CHECK(G.big != NULL, "oom");
    for (size_t i = 0; i < HUGE_LEN; i++)
        G.big[i] = BODY[i % (sizeof BODY - 1)];
    CHECK(uv_loop_init(&G.loop) == 0, "uv_loop_init");
    http_limits_t lim = {
        .max_header_bytes = MAX_HEADER_BYTES,
        .max_headers = MAX_HEADERS,
        .max_body = MAX_BODY,
        .header_timeout_ms = 1000,
        .body_timeout_ms = 1000,
        .idle_timeout_ms = 1000,
    };
    char err[256] = "";
    G.w = worker_new(&G.loop, 0, "127.0.0.1", 0, &lim, &handler, NULL, err, sizeof err);
    CHECK(G.w != NULL, "worker_new: %s", err);
    G.port = worker_port(&G.loop);
    CHECK(G.port > 0, "no port");
    /* A small send buffer, inherited by accepted sockets: big answers queue in the server
     * (uv_write, on_write, the high watermark, on_drain). */
    uv_walk(&G.loop, small_sndbuf, NULL);
    uv_check_init(&G.loop, &G.defer_check);
}

/* ---- client ---- */

static struct {
    int fd;
    char *resp;
    size_t len;
    int eof;        /* the server closed (FIN or RST) */
    int send_dead;  /* the server no longer takes bytes */
} K;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One loop turn, then read what is there. Returns nonzero on progress. */
static int pump(void)
{
    uint64_t ev = S.events;
    uv_run(&G.loop, UV_RUN_NOWAIT);
    int progress = S.events != ev;
    while (!K.eof) {
        char tmp[65536];
        ssize_t n = recv(K.fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) {
            CHECK(K.len + (size_t)n <= RESP_CAP, "the server wrote over %u bytes", RESP_CAP);
            memcpy(K.resp + K.len, tmp, (size_t)n);
            K.len += (size_t)n;
            progress = 1;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            K.eof = 1;
            progress = 1;
        }
        break;
    }
    return progress;
}

static void pump_idle(unsigned *turns)
{
    int idle = 0;
    while (idle < IDLE_TURNS && *turns < MAX_TURNS) {
        (*turns)++;
        idle = pump() ? 0 : idle + 1;
    }
}

static void send_all(const uint8_t *p, size_t n, unsigned *turns)
{
    while (n && !K.send_dead && *turns < MAX_TURNS) {
        ssize_t k = send(K.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            K.send_dead = 1;
            break;
        }
        (*turns)++;
        pump();
    }
}

/* ---- checks on what came back ---- */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '-' || ch == '_';
}

/* 1: the first line is complete and cannot be a request line for llhttp (checked loosely:
 * anything llhttp might accept counts as valid). */
static int first_line_invalid(const uint8_t *d, size_t n)
{
    size_t i = 0;
    while (i < n && (d[i] == '\r' || d[i] == '\n'))
        i++;
    const uint8_t *nl = memchr(d + i, '\n', n - i);
    if (!nl)
        return 0;
    size_t end = (size_t)(nl - d);
    if (end > i && d[end - 1] == '\r')
        end--;
    size_t j = i;
    while (j < end && is_tchar(d[j]))
        j++;
    if (j == i || j == end || d[j] != ' ')
        return 1;
    while (j < end && d[j] == ' ')
        j++;
    while (j < end && d[j] != ' ' && d[j] != '\r')
        j++;
    if (j == end)
        return 0; /* HTTP/0.9: "GET /", even "CONNECT " (an empty URL) */
    while (j < end && d[j] == ' ')
        j++;
    size_t v = j;
    while (j < end && d[j] >= 'A' && d[j] <= 'Z')
        j++;
    if (j == v || j + 4 > end || d[j] != '/' || d[j + 1] < '0' || d[j + 1] > '9' ||
        d[j + 2] != '.' || d[j + 3] < '0' || d[j + 3] > '9')
        return 1;
    j += 4;
    while (j < end && (d[j] == ' ' || d[j] == '\t'))
        j++;
    return j != end;
}

static const char *find_crlf2(const char *p, const char *end)
{
    for (; p + 4 <= end; p++)
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
            return p;
    return NULL;
}

/* Header value of name (exact case, as the server writes it) in [h, e), or NULL. */
static const char *hdr(const char *h, const char *e, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = h; p + nl <= e; p++)
        if ((p == h || p[-1] == '\n') && memcmp(p, name, nl) == 0)
            return p + nl;
    return NULL;
}

static void dump(const char *why, size_t n)
{
    if (!G.debug)
        return;
    fprintf(stderr, "---- %s: input %zu bytes, %u recs, headers %u, requests %u, eof %d\n", why,
            n, S.nrecs, S.headers_calls, S.request_calls, K.eof);
    fwrite(K.resp, 1, K.len < 4096 ? K.len : 4096, stderr);
    fprintf(stderr, "\n----\n");
}

static void check_responses(const uint8_t *in, size_t insz, int shut)
{
    const char *p = K.resp, *end = K.resp + K.len;
    unsigned ri = 0, server_made = 0, finals = 0, conts = 0;
    int last_status = 0, first_status = 0;
    /* Truncation is allowed where the exchange was cut short: the client half-closed (the
     * server treats EOF as gone and drops a queued tail) or the pump gave up waiting. */
    int may_truncate = shut || !K.eof;
    while (p < end) {
        CHECK(end - p >= 13 || may_truncate, "short response head");
        if (end - p < 13)
            break;
        CHECK(memcmp(p, "HTTP/1.1 ", 9) == 0 && p[9] >= '1' && p[9] <= '5' && p[10] >= '0' &&
                  p[10] <= '9' && p[11] >= '0' && p[11] <= '9' && p[12] == ' ',
              "response %u does not start with a status line: %.40s", finals, p);
        int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        const char *he = find_crlf2(p, end);
        CHECK(he || may_truncate, "response head not terminated");
        if (!he)
            break;
        CHECK(he - p <= 2048, "response head of %td bytes", he - p);
        const char *hs = memchr(p, '\n', (size_t)(he - p) + 2) + 1;
        const char *body = he + 4;
        if (status == 100) {
            CHECK(he - p == 21 && memcmp(p, "HTTP/1.1 100 Continue", 21) == 0,
                  "odd interim response");
            CHECK(finals == ri && ri < S.nrecs + 1, "100 Continue out of place");
            conts++;
            p = body;
            continue;
        }
        CHECK(status >= 200, "interim %d", status);
        finals++;
        if (!first_status)
            first_status = status;
        last_status = status;
        const char *cl = hdr(hs, he + 2, "Content-Length: ");
        int chunked = hdr(hs, he + 2, "Transfer-Encoding: chunked\r\n") != NULL;
        int close = hdr(hs, he + 2, "Connection: close\r\n") != NULL;
        struct rec *r = NULL;
        if (!S.recs_overflow && ri < S.nrecs) {
            r = &recs[ri++];
            CHECK(status == r->status, "response %u: status %d, handler answered %d", finals,
                  status, r->status);
            if (r->framing == FR_NONE)
                CHECK(!cl && !chunked, "framing headers on a %d", status);
            else if (r->framing == FR_LENGTH)
                CHECK(cl && !chunked, "length framing expected");
            else
                CHECK(!cl, "a length on a streamed answer");
        } else if (!S.recs_overflow) {
            server_made++;
            CHECK(server_made == 1, "two responses made by the server");
            CHECK(status >= 400 && status < 500, "server-made status %d", status);
            CHECK(cl && !chunked && close, "server-made response framing");
        }
        if (r && r->aborted) {
            p = end; /* the rest is a truncated body, then the close */
            break;
        }
        size_t want = 0;
        if (cl) {
            char *q;
            unsigned long long v = strtoull(cl, &q, 10);
            CHECK(q > cl && *q == '\r', "bad Content-Length");
            want = (size_t)v;
            if (r)
                CHECK(v == r->declared, "Content-Length %llu, handler declared %zu", v,
                      r->declared);
            if (!r)
                CHECK(v <= SERVER_ERR_MAX, "server-made body of %llu", v);
        }
        /* The server's own answer to a HEAD whose head was complete (an error in its body)
         * has no body either. */
        int err_nobody = !r && S.last_head && S.headers_calls > S.nrecs;
        if (err_nobody || (r && (r->head || r->framing == FR_NONE))) {
            p = body;
        } else if (cl) {
            if ((size_t)(end - body) < want) {
                CHECK(may_truncate, "body truncated: %td of %zu", end - body, want);
                p = end;
                break;
            }
            p = body + want;
        } else if (chunked) {
            const char *q = body;
            size_t total = 0;
            int done = 0, trunc = 0;
            for (;;) {
                const char *le = NULL;
                for (const char *s = q; s + 1 < end; s++)
                    if (s[0] == '\r' && s[1] == '\n') {
                        le = s;
                        break;
                    }
                if (!le) {
                    trunc = 1;
                    break;
                }
                size_t sz = 0;
                CHECK(le > q && le - q <= 16, "bad chunk size line");
                for (const char *s = q; s < le; s++) {
                    int dv = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
                    CHECK(dv >= 0, "bad chunk size digit");
                    sz = sz * 16 + (size_t)dv;
                }
                q = le + 2;
                if (sz == 0) {
                    if (end - q < 2) {
                        trunc = 1;
                        break;
                    }
                    CHECK(q[0] == '\r' && q[1] == '\n', "trailers after the last chunk");
                    q += 2;
                    done = 1;
                    break;
                }
                if ((size_t)(end - q) < sz + 2) {
                    trunc = 1;
                    break;
                }
                CHECK(q[sz] == '\r' && q[sz + 1] == '\n', "chunk not followed by CRLF");
                total += sz;
                q += sz + 2;
            }
            if (trunc) {
                CHECK(may_truncate, "chunked body truncated");
                p = end;
                break;
            }
            (void)done;
            if (r)
                CHECK(total == r->body, "chunked body %zu, handler wrote %zu", total, r->body);
            p = q;
        } else {
            /* no framing: HTTP/1.0 stream, delimited by the close */
            CHECK(r && r->framing == FR_STREAM, "body without framing");
            CHECK(close, "close-delimited body without Connection: close");
            if (K.eof && !shut)
                CHECK((size_t)(end - body) == r->body, "close-delimited body %td, wrote %zu",
                      end - body, r->body);
            p = end;
            break;
        }
        if (close)
            CHECK(p == end, "%td bytes after a Connection: close response", end - p);
    }
    (void)last_status;
    /* Everything the handler answered arrived, unless cut short. */
    if (!S.recs_overflow && !may_truncate) {
        int aborted = S.nrecs && recs[S.nrecs - 1].aborted;
        CHECK(ri == S.nrecs || aborted, "%u of %u answers arrived", ri, S.nrecs);
    }
    /* Bytes per request are bounded. */
    size_t bound = (size_t)(S.headers_calls + 1) * PER_REQ_MAX + SERVER_ERR_MAX + S.big_bytes;
    CHECK(K.len <= bound, "%zu response bytes for %u requests", K.len, S.headers_calls);
    CHECK(conts <= S.headers_calls, "%u 100-continues for %u requests", conts, S.headers_calls);
    if (first_line_invalid(in, insz)) {
        CHECK(S.headers_calls == 0, "the handler saw a request with an invalid request line");
        CHECK(finals == 1 && first_status >= 400 && first_status < 500,
              "invalid request line answered %d (%u responses)", first_status, finals);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    if (!K.resp) {
        K.resp = malloc(RESP_CAP);
        CHECK(K.resp != NULL, "oom");
    }
    memset(&S, 0, sizeof S);
    K.len = 0;
    K.eof = K.send_dead = 0;

    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    size_t split = size ? (size_t)(h % (uint32_t)(size + 1)) : 0;
    int shut = (h >> 27) & 1;
    int rst = ((h >> 28) & 3) == 0;

    K.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(K.fd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(K.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (((h >> 30) & 3) == 0) { /* a small window: big answers queue in the server */
        int rcv = 4096;
        setsockopt(K.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Non-blocking: libFuzzer's SIGALRM would interrupt a blocking connect. On loopback the
     * handshake completes without the server's accept. */
    fcntl(K.fd, F_SETFL, fcntl(K.fd, F_GETFL) | O_NONBLOCK);
    if (connect(K.fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        CHECK(errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
        struct pollfd pfd = {.fd = K.fd, .events = POLLOUT};
        int pr;
        while ((pr = poll(&pfd, 1, 5000)) < 0 && errno == EINTR)
            ;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(K.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        CHECK(pr == 1 && soerr == 0, "connect: %s", strerror(soerr));
    }

    unsigned turns = 0;
    for (int i = 0; i < 100000 && worker_conn_count(G.w) == 0; i++)
        uv_run(&G.loop, UV_RUN_NOWAIT);
    CHECK(worker_conn_count(G.w) == 1, "the worker did not accept (%u)", worker_conn_count(G.w));

    send_all(data, split, &turns);
    if (split && split < size)
        pump_idle(&turns);
    send_all(data + split, size - split, &turns);
    if (shut)
        shutdown(K.fd, SHUT_WR);
    pump_idle(&turns);

    check_responses(data, size, shut);
    if (G.debug)
        dump("ok", size);

    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(K.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(K.fd);
    K.fd = -1;

    uint64_t t0 = now_ms();
    for (unsigned i = 0; worker_conn_count(G.w) != 0; i++) {
        uv_run(&G.loop, UV_RUN_NOWAIT);
        if (i > 1000) {
            CHECK(now_ms() - t0 < 3000, "the server kept the connection %llu ms after the client "
                  "closed", (unsigned long long)(now_ms() - t0));
            usleep(100);
        }
    }
    CHECK(defer.c == NULL && hold.c == NULL, "the handler still holds a closed connection");
    CHECK(!uv_is_active((uv_handle_t *)&G.defer_check), "defer check left armed");
    return 0;
}
