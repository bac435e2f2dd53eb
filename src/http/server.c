/* HTTP/1.1 server for one worker loop. Request heads are accumulated in a per-connection
 * buffer bounded by max_header_bytes; bodies are bounded by max_body. While the application
 * holds a request the socket keeps reading (to notice a client that goes away), and bytes of
 * a pipelined next request are parked, bounded, until the response is done. Writes go out with
 * uv_try_write when nothing is queued; only what the kernel did not take is copied. */
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>

#include "core/clock.h"
#include "core/log.h"

#define READ_BUF_SIZE (64 * 1024)
/* Bytes of a pipelined next request parked while the current one is answered: past this the
 * socket is not read (the kernel's buffer and TCP flow control hold the rest). While parking,
 * reads are PARK_READ_SIZE at most, so a connection holds at most PENDING_MAX + PARK_READ_SIZE
 * parked bytes, plus what the read that ended the request brought (a read that may start a
 * request is at most the header limit: see on_alloc). */
#define PENDING_MAX (8 * 1024)
#define PARK_READ_SIZE (4 * 1024)
#define WQ_HIGH (256 * 1024)
#define WQ_LOW (64 * 1024)
#define CORK_MAX (64 * 1024)
#define LINGER_MS 2000
#define ACCEPT_BATCH 64        /* connections taken per readiness event; the rest wait a turn */
#define SHED_BATCH 256         /* pending connections refused per descriptor-exhaustion pause */
#define ACCEPT_BACKOFF_MS 100  /* the listener rests this long after EMFILE/ENFILE */

/* Status codes whose responses never have a body (RFC 9110 6.4.1). */
#define STATUS_HAS_NO_BODY(s) (((s) >= 100 && (s) < 200) || (s) == 204 || (s) == 304)

enum conn_state { C_IDLE, C_HEAD, C_BODY, C_APP, C_LINGER, C_CLOSING };
enum sel_hdr { H_AUTH, H_CTYPE, H_ACCEPT, H_REQID, H_REQHASH, H_EXPECT, H_HOST, H_XFF, H_XRIP, H_TE,
               H_SIGINBAND, H_E2EE,
               H_NSEL = H_E2EE + HTTP_E2EE_N }; /* H_E2EE + enum http_e2ee_hdr */

struct span {
    size_t off, len;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shut;
    worker_t *w;
    conn_t *prev, *next;
    llhttp_t parser;
    int state;
    int handles_open;
    http_req_t req;
    buf_t head;               /* url and header bytes of the current request */
    struct span url, sel[H_NSEL];
    int cur_sel;              /* header being read, -1 if not one we keep */
    size_t cur_name_off;
    int in_value;
    unsigned nheaders;
    unsigned flags;           /* CF_* */
    int reject;               /* an http_reject_t found while parsing, or -1 */
    const char *reject_detail; /* llhttp's reason for a malformed request, or NULL */
    /* Obsolete line folding (a header value continued on the next line) is told from a value
     * split between two reads by where the value's pieces lie in the parsed buffers. */
    const char *exec_p, *exec_end; /* the bytes of the current llhttp_execute */
    unsigned exec_seq, value_seq;  /* counts llhttp_execute calls; the one of the last value piece */
    int value_at_end;              /* the last value piece ended its buffer */
    size_t value_len;              /* bytes of the current header's value so far */
    uint64_t bytes_out;
    size_t wq_bytes;
    size_t trailer_len;
    int te_trailers; /* a complete TE line of this request named "trailers" */
    uint64_t body_seen;       /* body bytes of the current request, kept or discarded */
    uint64_t resp_out0;       /* bytes_out when the current response started */
    buf_t pending;
    conn_owner_t *owner;      /* holds the request between on_request and the response's end */
    ip_addr_t peer;           /* from accept4 */
};

/* Connection flags (struct conn.flags). */
#define CF_MSG_COMPLETE (1u << 0)  /* the request's body was read whole */
#define CF_SKIP_BODY (1u << 1)     /* answered at the headers: the body is not read */
#define CF_CLOSE_AFTER (1u << 2)   /* close once the response is out */
#define CF_RESP_STARTED (1u << 3)
#define CF_RESP_CHUNKED (1u << 4)
#define CF_RESP_DONE (1u << 5)
#define CF_RESP_NOBODY (1u << 6)   /* HEAD, 1xx, 204, 304: head only */
#define CF_HTTP10 (1u << 7)        /* the request is HTTP/1.0: no chunked responses */
#define CF_ABOVE_HIGH (1u << 8)    /* write queue went over WQ_HIGH; owner told on the way down */
#define CF_CORKED (1u << 9)
#define CF_RESUME_PENDING (1u << 10) /* parked bytes wait for the resume timer */
#define CF_DISCARD_BODY (1u << 11) /* the body is read and dropped: no handler takes one */
#define CF_RESP_ON_WIRE (1u << 12) /* bytes of the response were handed to the socket */
#define CF(c, f) (((c)->flags & (f)) != 0)

static void conn_flag_set(conn_t *c, unsigned f, int on)
{
    if (on)
        c->flags |= f;
    else
        c->flags &= ~f;
}

struct worker {
    uv_loop_t *loop;
    int id;
    uv_poll_t lpoll;       /* the listening socket: readable = connections to accept */
    uv_timer_t lbackoff;   /* re-arms lpoll after a pause (out of descriptors) */
    int lfd;               /* the listening socket, SO_REUSEPORT, this worker's own */
    int reserve_fd;        /* a spare descriptor, freed to refuse pending connections */
    int starved, capped;   /* in an out-of-descriptors / over-the-cap episode (logged once) */
    uint64_t shed;         /* connections refused in the current out-of-descriptors episode */
    int listening;
    http_limits_t lim;
    const http_handler_t *h;
    void *user;
    llhttp_settings_t settings;
    char *rbuf;
    conn_t *conns;
    unsigned nconns;
    int draining;
    void (*drain_cb)(worker_t *);
    time_t date_s;       /* the second date[] was formatted for */
    char date[40];       /* "Date: <IMF-fixdate>\r\n" */
    buf_t cork;          /* wire bytes of the corked connection, written by conn_flush */
    conn_t *cork_owner;  /* at most one per worker: corks end within one loop callback */
};

typedef struct wreq {
    uv_write_t req;
    conn_t *c;
    size_t len;
    char data[];
} wreq_t;

static unsigned g_open;                   /* client connections open in the process */
static uint64_t g_refused[HTTP_REFUSED_N]; /* connections refused at accept, by cause */

const char *http_status_text(int s)
{
    switch (s) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return s < 300 ? "OK" : s < 500 ? "Client Error" : "Server Error";
    }
}

/* 32 random hex: the id of an answer the application did not name (getrandom; a clock-based
 * value where it fails, which only a broken kernel makes it). */
static void random_id(char out[33])
{
    static const char hexd[] = "0123456789abcdef";
    uint8_t b[16];
    if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
        uint64_t t = clock_mono_ns(), u = (uint64_t)(uintptr_t)out;
        memcpy(b, &t, 8);
        memcpy(b + 8, &u, 8);
    }
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexd[b[i] >> 4];
        out[2 * i + 1] = hexd[b[i] & 15];
    }
    out[32] = '\0';
}

/* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" (RFC 9110 5.6.7), formatted once a second per
 * worker (no locale: the names are fixed). */
static void date_line(time_t now, char out[40])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(out, 40, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", days[tm.tm_wday % 7],
             tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

static const char *worker_date(worker_t *w)
{
    time_t now = time(NULL);
    if (now != w->date_s || !w->date[0]) {
        w->date_s = now;
        date_line(now, w->date);
    }
    return w->date;
}

const ip_addr_t *conn_peer(const conn_t *c) { return &c->peer; }

const char *conn_request_id(conn_t *c)
{
    if (!c->req.id[0])
        random_id(c->req.id);
    return c->req.id;
}

static void conn_close(conn_t *c);
int conn_flush(conn_t *c);
static void conn_process(conn_t *c, const char *data, size_t len);
static void conn_finish_response(conn_t *c);
static void conn_timer(conn_t *c, unsigned ms);

/* Protocol-level errors found by the server itself (before any handler saw the request):
 * the application writes the answer, then the connection closes. */
static void conn_protocol_error(conn_t *c, http_reject_t why)
{
    c->flags |= CF_CLOSE_AFTER;
    if (CF(c, CF_RESP_STARTED)) {
        conn_close(c);
        return;
    }
    c->state = C_APP; /* the response below ends the exchange */
    c->w->h->on_reject(c, why);
    if (!CF(c, CF_RESP_STARTED) && c->state == C_APP)
        conn_close(c); /* the application wrote nothing */
}

/* ---- timers ---- */

static void on_conn_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (CF(c, CF_RESUME_PENDING)) {
        c->flags &= ~CF_RESUME_PENDING;
        buf_t p = c->pending;
        c->pending = (buf_t)BUF_INIT;
        conn_process(c, p.data, p.len);
        buf_free(&p);
        /* The parked bytes held no new request start (e.g. a stray CRLF): idle again. */
        if (c->state == C_IDLE && !CF(c, CF_RESUME_PENDING))
            conn_timer(c, c->w->lim.idle_timeout_ms);
        return;
    }
    switch (c->state) {
    case C_IDLE:
    case C_LINGER:
        conn_close(c);
        break;
    case C_HEAD:
    case C_BODY:
        conn_protocol_error(c, HTTP_REJECT_TIMEOUT);
        break;
    case C_APP:
        /* Only armed once the response is complete and its tail is still queued: the client
         * stopped reading for a whole idle period. */
        if (CF(c, CF_RESP_DONE))
            conn_close(c);
        break;
    default:
        break;
    }
}

static void conn_timer(conn_t *c, unsigned ms)
{
    if (ms)
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* ---- llhttp callbacks ---- */

static int head_add(conn_t *c, const char *at, size_t len)
{
    if (c->head.len + len > c->w->lim.max_header_bytes) {
        c->reject = HTTP_REJECT_HEAD_TOO_LARGE;
        return HPE_USER;
    }
    return buf_append(&c->head, at, len) == 0 ? 0 : HPE_USER;
}

static int cb_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    c->state = C_HEAD;
    c->req.start_ns = clock_mono_ns();
    conn_timer(c, c->w->lim.header_timeout_ms);
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->url.len == 0)
        c->url.off = c->head.len;
    c->url.len += len;
    return head_add(c, at, len);
}

/* Trailer fields of a chunked request body come through the header callbacks after the head
 * is complete, when the request's strings already point into c->head: they are counted
 * against the head limit and dropped, never stored (storing could move the buffer). */
static int trailer_bytes(conn_t *c, size_t len)
{
    c->trailer_len += len;
    if (c->trailer_len > c->w->lim.max_header_bytes) {
        c->reject = HTTP_REJECT_HEAD_TOO_LARGE;
        return HPE_USER;
    }
    return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    c->value_len = 0; /* a new field (or more of its name): no value piece yet */
    if (c->state != C_HEAD)
        return trailer_bytes(c, len);
    if (c->in_value || c->nheaders == 0) {
        if (++c->nheaders > c->w->lim.max_headers) {
            c->reject = HTTP_REJECT_HEAD_TOO_LARGE;
            return HPE_USER;
        }
        c->in_value = 0;
        c->cur_name_off = c->head.len;
        c->cur_sel = -1;
    }
    return head_add(c, at, len);
}

int http_te_has_trailers(const char *p, size_t n)
{
    /* TE = #t-codings; t-codings = "trailers" / ( transfer-coding [ weight ] ) (RFC 9110
     * 10.1.4): the bare token, any case, between commas and optional whitespace. */
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        size_t s = i;
        while (i < n && p[i] != ',' && p[i] != ';' && p[i] != ' ' && p[i] != '\t')
            i++;
        size_t e = i;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        int bare = i >= n || p[i] == ',';
        if (bare && e - s == 8 && strncasecmp(p + s, "trailers", 8) == 0)
            return 1;
        while (i < n && p[i] != ',') /* parameters of this element */
            i++;
    }
    return 0;
}

static int cb_header_field_complete(llhttp_t *p)
{
    static const char *names[H_NSEL] = {
        "authorization", "content-type", "accept", "x-request-id", "x-request-hash", "expect", "host",
        "x-forwarded-for", "x-real-ip", "te", "x-signature-inband",
        [H_E2EE + HTTP_E2EE_SIGNING_ALGO] = "x-signing-algo",
        [H_E2EE + HTTP_E2EE_CLIENT_PUB_KEY] = "x-client-pub-key",
        [H_E2EE + HTTP_E2EE_MODEL_PUB_KEY] = "x-model-pub-key",
        [H_E2EE + HTTP_E2EE_VERSION] = "x-e2ee-version",
        [H_E2EE + HTTP_E2EE_NONCE] = "x-e2ee-nonce",
        [H_E2EE + HTTP_E2EE_TIMESTAMP] = "x-e2ee-timestamp",
        [H_E2EE + HTTP_E2EE_ENCRYPTION_VERSION] = "x-encryption-version",
        [H_E2EE + HTTP_E2EE_ALL_FIELDS] = "x-encrypt-all-fields",
        [H_E2EE + HTTP_E2EE_TOOL_CALLS] = "x-encrypt-tool-calls"};
    conn_t *c = p->data;
    if (c->state != C_HEAD)
        return 0;
    const char *n = c->head.data + c->cur_name_off;
    size_t nl = c->head.len - c->cur_name_off;
    c->cur_sel = -1;
    for (int i = 0; i < H_NSEL; i++)
        if (strlen(names[i]) == nl && strncasecmp(n, names[i], nl) == 0)
            c->cur_sel = i;
    c->in_value = 1;
    if (c->cur_sel >= 0) {
        /* A repeated header we act on is ambiguous: refuse it. X-Forwarded-For may repeat
         * (a proxy may add its own line): its last line is kept. */
        if (c->cur_sel == H_XFF)
            c->sel[H_XFF].len = 0;
        else if (c->cur_sel == H_TE) {
            /* TE may repeat: each complete line is looked at for "trailers" */
            if (c->sel[H_TE].off)
                c->te_trailers |= http_te_has_trailers(c->head.data + c->sel[H_TE].off,
                                                       c->sel[H_TE].len);
            c->sel[H_TE].len = 0;
        } else if (c->sel[c->cur_sel].len || c->sel[c->cur_sel].off) {
            c->reject = HTTP_REJECT_DUPLICATE_HEADER;
            return HPE_USER;
        }
        c->sel[c->cur_sel].off = c->head.len;
    }
    return 0;
}

/* A second piece of one header value is a continuation only when the first ended the
 * previous buffer and this one starts the next; anything else is obsolete line folding
 * (RFC 9112 5.2: a server rejects it with 400), which llhttp passes on as a second piece. */
static int value_folded(conn_t *c, const char *at, size_t len)
{
    int folded = c->value_len > 0 &&
                 !(c->value_at_end && c->value_seq + 1 == c->exec_seq && at == c->exec_p);
    c->value_at_end = at + len == c->exec_end;
    c->value_seq = c->exec_seq;
    c->value_len += len;
    return folded;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (len && value_folded(c, at, len)) {
        c->reject = HTTP_REJECT_MALFORMED;
        c->reject_detail = "obsolete line folding in a header";
        return HPE_USER;
    }
    if (c->state != C_HEAD)
        return trailer_bytes(c, len);
    if (c->cur_sel >= 0)
        c->sel[c->cur_sel].len += len;
    return head_add(c, at, len);
}

static strv_t span_str(conn_t *c, struct span s)
{
    strv_t v = {s.len ? c->head.data + s.off : "", s.len};
    return v;
}

static int conn_writev(conn_t *c, uv_buf_t *bufs, unsigned n);

/* "Expect: 100-continue": the client waits (curl: 1 s) for an interim 100 before it sends the
 * body. Sent only once the application accepted the head, so a 401/413 comes instead. */
static int conn_send_continue(conn_t *c, llhttp_t *p)
{
    strv_t e = span_str(c, c->sel[H_EXPECT]);
    if (e.n != 12 || strncasecmp(e.p, "100-continue", 12) != 0 || CF(c, CF_HTTP10))
        return 0;
    if (!(p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) || (c->req.has_content_length &&
                                                          c->req.content_length == 0))
        return 0;
    uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
    int r = conn_writev(c, &b, 1);
    c->bytes_out -= 25;
    return r;
}

/* The largest body any request may have (a route's own limit included). */
static uint64_t body_ceiling(const http_limits_t *l)
{
    return l->max_body_any > l->max_body ? l->max_body_any : l->max_body;
}

/* The current request's body limit: its route's, once on_headers set one, else max_body. */
static uint64_t body_limit(const conn_t *c)
{
    uint64_t l = c->req.body_limit ? c->req.body_limit : c->w->lim.max_body;
    uint64_t cap = body_ceiling(&c->w->lim);
    return l < cap ? l : cap;
}

static int cb_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    http_req_t *r = &c->req;
    r->method = p->method;
    strv_t url = span_str(c, c->url);
    const char *q = memchr(url.p, '?', url.n);
    r->path.p = url.p;
    r->path.n = q ? (size_t)(q - url.p) : url.n;
    r->query.p = q ? q + 1 : "";
    r->query.n = q ? url.n - r->path.n - 1 : 0;
    r->authorization = span_str(c, c->sel[H_AUTH]);
    r->content_type = span_str(c, c->sel[H_CTYPE]);
    r->accept = span_str(c, c->sel[H_ACCEPT]);
    r->x_request_id = span_str(c, c->sel[H_REQID]);
    r->x_request_hash = span_str(c, c->sel[H_REQHASH]);
    r->x_forwarded_for = span_str(c, c->sel[H_XFF]);
    r->x_real_ip = span_str(c, c->sel[H_XRIP]);
    r->x_signature_inband = span_str(c, c->sel[H_SIGINBAND]);
    r->has_x_signature_inband = c->sel[H_SIGINBAND].off != 0;
    if (c->sel[H_TE].off)
        c->te_trailers |= http_te_has_trailers(c->head.data + c->sel[H_TE].off, c->sel[H_TE].len);
    /* HTTP/1.0 has no chunked coding, so no trailers whatever it sends */
    r->te_trailers = c->te_trailers && !(p->http_major == 1 && p->http_minor == 0);
    for (int i = 0; i < HTTP_E2EE_N; i++) {
        struct span e = c->sel[H_E2EE + i];
        r->e2ee[i] = span_str(c, e);
        if (e.off || e.len) /* the value's offset is past the URL, so never 0 when present */
            r->e2ee_present |= 1u << i;
    }
    r->has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    r->content_length = r->has_content_length ? p->content_length : 0;
    r->has_body = (p->flags & F_CHUNKED) || r->content_length > 0;
    r->keep_alive = llhttp_should_keep_alive(p);
    if (r->has_content_length && r->content_length > body_ceiling(&c->w->lim)) {
        c->reject = HTTP_REJECT_BODY_TOO_LARGE;
        return HPE_USER;
    }
    /* RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400. */
    if (!(p->http_major == 1 && p->http_minor == 0) && !c->sel[H_HOST].off) {
        c->reject = HTTP_REJECT_MALFORMED;
        c->reject_detail = "HTTP/1.1 request without Host";
        return HPE_USER;
    }
    conn_flag_set(c, CF_HTTP10, p->http_major == 1 && p->http_minor == 0);
    c->state = C_BODY;
    conn_timer(c, c->w->lim.body_timeout_ms);
    int use = c->w->h->on_headers(c, r);
    /* Responding now means the body stays unread: conn_start_response sees C_BODY and
     * closes the connection after this response. */
    if (use == HTTP_BODY_ANSWERED) {
        c->flags |= CF_SKIP_BODY;
        c->flags |= CF_CLOSE_AFTER;
        return HPE_PAUSED;
    }
    if (c->state == C_CLOSING)
        return HPE_USER;
    /* The route's own limit (req->body_limit), known only now. */
    if (r->has_content_length && r->content_length > body_limit(c)) {
        c->reject = HTTP_REJECT_BODY_TOO_LARGE;
        return HPE_USER;
    }
    if (conn_send_continue(c, p) != 0)
        return HPE_USER;
    if (use == HTTP_BODY_DISCARD)
        c->flags |= CF_DISCARD_BODY;
    else if (r->has_content_length && r->content_length > 0 &&
             buf_reserve(&r->body, (size_t)r->content_length) != 0)
        return HPE_USER;
    return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    c->body_seen += len;
    if (c->body_seen > body_limit(c)) {
        c->reject = HTTP_REJECT_BODY_TOO_LARGE;
        return HPE_USER;
    }
    if (CF(c, CF_DISCARD_BODY))
        return 0; /* no handler reads it: counted against the limit, never kept */
    return buf_append(&c->req.body, at, len) == 0 ? 0 : HPE_USER;
}

static int cb_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->req.keep_alive = llhttp_should_keep_alive(p);
    /* No protocol upgrades (h2c, websocket) and no CONNECT: llhttp would stop at the next
     * request on this connection, so answer this one and close. */
    if (p->upgrade)
        c->flags |= CF_CLOSE_AFTER;
    c->flags |= CF_MSG_COMPLETE;
    return HPE_PAUSED;
}

/* ---- reading ---- */

static void conn_reset_request(conn_t *c)
{
    buf_reset(&c->head);
    if (c->req.body.cap > 64 * 1024)
        buf_free(&c->req.body);
    else
        buf_reset(&c->req.body);
    buf_t body = c->req.body;
    memset(&c->req, 0, sizeof c->req);
    c->req.body = body;
    c->req.peer = c->peer;
    memset(&c->url, 0, sizeof c->url);
    memset(c->sel, 0, sizeof c->sel);
    c->cur_sel = -1;
    c->in_value = 0;
    c->nheaders = 0;
    c->reject = -1;
    c->reject_detail = NULL;
    c->value_len = 0;
    c->flags &= ~(CF_MSG_COMPLETE | CF_SKIP_BODY | CF_RESP_STARTED | CF_RESP_CHUNKED |
                  CF_RESP_DONE | CF_RESP_NOBODY | CF_HTTP10 | CF_CORKED | CF_DISCARD_BODY |
                  CF_RESP_ON_WIRE);
    c->trailer_len = 0;
    c->te_trailers = 0;
    c->body_seen = 0;
    c->owner = NULL;
    c->state = C_IDLE;
}

static void conn_process(conn_t *c, const char *data, size_t len)
{
    if (c->state == C_LINGER || c->state == C_CLOSING)
        return;
    /* While the application holds a request, or parked bytes wait for the resume timer,
     * new bytes go behind the parked ones (order matters). Park this read whole, then stop
     * reading once over the bound: the kernel's buffer and TCP flow control hold the rest. */
    if (c->state == C_APP || CF(c, CF_RESUME_PENDING)) {
        if (buf_append(&c->pending, data, len) != 0) {
            conn_close(c);
            return;
        }
        if (c->pending.len > PENDING_MAX)
            uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    c->exec_p = data;
    c->exec_end = data + len;
    c->exec_seq++;
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK || c->state == C_CLOSING || c->state == C_LINGER)
        return;
    if (e == HPE_PAUSED && (CF(c, CF_MSG_COMPLETE) || CF(c, CF_SKIP_BODY))) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        if (!CF(c, CF_SKIP_BODY) && used < len)
            buf_append(&c->pending, data + used, len - used);
        if (CF(c, CF_SKIP_BODY))
            return; /* on_headers already responded; closes when written */
        c->state = C_APP;
        uv_timer_stop(&c->timer);
        c->w->h->on_request(c, &c->req);
        return;
    }
    if (c->reject >= 0)
        conn_protocol_error(c, (http_reject_t)c->reject);
    else if (c->state == C_IDLE && e == HPE_INVALID_EOF_STATE)
        conn_close(c);
    else {
        c->reject_detail = llhttp_get_error_reason(&c->parser);
        conn_protocol_error(c, HTTP_REJECT_MALFORMED);
    }
}

/* How much one read takes: a whole buffer while a body is read; while the request head is read
 * no more than the header limit (what follows a complete small request, say a pipelined flood
 * from a client without a token, is parked: it should cost a few KiB, not a full buffer); and
 * little while the bytes are parked behind a request being answered. */
static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    conn_t *c = h->data;
    size_t n = READ_BUF_SIZE;
    if (c->state == C_APP || CF(c, CF_RESUME_PENDING))
        n = PARK_READ_SIZE;
    else if ((c->state == C_IDLE || c->state == C_HEAD) && c->w->lim.max_header_bytes < n)
        n = c->w->lim.max_header_bytes;
    b->base = c->w->rbuf;
    b->len = n;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n > 0) {
        conn_process(c, b->base, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    /* EOF or error: the client is gone. */
    if (c->state == C_LINGER) {
        conn_close(c);
        return;
    }
    if (c->state == C_IDLE && n == UV_EOF) {
        conn_close(c);
        return;
    }
    if (c->state == C_HEAD || c->state == C_BODY) {
        llhttp_finish(&c->parser);
        conn_close(c);
        return;
    }
    conn_close(c);
}

/* ---- lifecycle ---- */

static void on_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    __atomic_sub_fetch(&g_open, 1, __ATOMIC_RELAXED);
    buf_free(&c->head);
    buf_free(&c->req.body);
    buf_free(&c->pending);
    free(c);
    if (w->draining && w->nconns == 0 && w->drain_cb) {
        void (*cb)(worker_t *) = w->drain_cb;
        w->drain_cb = NULL;
        cb(w);
    }
}

static void conn_close(conn_t *c)
{
    if (c->state == C_CLOSING)
        return;
    conn_owner_t *held = c->state == C_APP && !CF(c, CF_RESP_DONE) ? c->owner : NULL;
    if (c->w->cork_owner == c) { /* unsent corked bytes die with the connection */
        c->w->cork_owner = NULL;
        buf_reset(&c->w->cork);
    }
    c->flags &= ~CF_CORKED;
    c->state = C_CLOSING;
    c->owner = NULL;
    if (held)
        held->ops->on_abort(held, c);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void conn_abort(conn_t *c)
{
    c->owner = NULL; /* the owner gave up: do not call it back */
    conn_close(c);
}

/* ---- accepting ---- */

/* The worker accepts with accept4(2) itself, on a uv_poll_t over its listening socket, not with
 * uv_listen: libuv's accept loop answers EMFILE by freeing a reserve descriptor that belongs
 * to the loop, and when another thread of the process takes the freed slot first, the reserve
 * is gone and the loop retries accept at once, for ever. Two workers at the descriptor limit
 * spun at 100 % CPU and never returned to their loops (no SIGTERM drain; issue 15). Here a
 * failed accept never retries in the same turn: out of descriptors, the worker refuses what is
 * pending (with its own reserve) and rests the listener for ACCEPT_BACKOFF_MS. */


uint64_t http_conns_refused(int why)
{
    return why >= 0 && why < HTTP_REFUSED_N ? __atomic_load_n(&g_refused[why], __ATOMIC_RELAXED) : 0;
}

unsigned http_conns_open(void) { return __atomic_load_n(&g_open, __ATOMIC_RELAXED); }

#define REFUSE_BODY                                                                          \
    "{\"error\":{\"message\":\"the server is at its connection limit, retry later\","        \
    "\"type\":\"server_overloaded\",\"param\":null,\"code\":null}}"

/* A connection that will not be served: a 503 if the socket takes it, FIN, what the client
 * already sent is read (closing with unread bytes would reset the connection and could
 * discard the 503), and the descriptor is closed. Nothing waits on the loop. */
static void refuse_fd(worker_t *w, int fd, int why)
{
    static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\n"
                              "%s"
                              "X-Request-Id: %s\r\n"
                              "Content-Type: application/json\r\n"
                              "Retry-After: 1\r\n"
                              "Connection: close\r\n"
                              "Content-Length: %zu\r\n\r\n" REFUSE_BODY;
    __atomic_add_fetch(&g_refused[why], 1, __ATOMIC_RELAXED); /* before the client can see it */
    if (why == HTTP_REFUSED_FDS)
        w->shed++;
    char out[sizeof msg + 16 + 40 + 33], id[33];
    random_id(id);
    int n = snprintf(out, sizeof out, msg, worker_date(w), id, sizeof REFUSE_BODY - 1);
    if (n > 0 && send(fd, out, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) { /* gone already */ }
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 4 && recv(fd, w->rbuf, READ_BUF_SIZE, MSG_DONTWAIT) > 0; i++) {
    }
    close(fd);
}

static void on_listen_io(uv_poll_t *p, int status, int events);

static void on_listener_rested(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (!w->listening)
        return;
    if (w->reserve_fd < 0) /* taken by another thread last time: try again */
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uv_poll_start(&w->lpoll, UV_READABLE, on_listen_io);
}

static void listener_rest(worker_t *w, unsigned ms)
{
    uv_poll_stop(&w->lpoll);
    uv_timer_start(&w->lbackoff, on_listener_rested, ms, 0);
}

/* Out of descriptors: EMFILE (this process) or ENFILE (the system). What waits in the accept
 * queue cannot be served now; with the reserve descriptor freed, each pending connection is
 * accepted into that one slot and refused. Then the listener rests. The slot may be taken by
 * another thread in between: then accept fails again and the worker simply rests. */
static void accept_starved(worker_t *w, int err)
{
    if (!w->starved) {
        w->starved = 1;
        LOG_WARN("worker %d: out of file descriptors (%s; %u client connections open): refusing new "
                 "connections with 503, retrying every %d ms",
                 w->id, err == ENFILE ? "ENFILE, system-wide" : err == EMFILE ? "EMFILE" : strerror(err),
                 http_conns_open(), ACCEPT_BACKOFF_MS);
    }
    if (w->reserve_fd >= 0) {
        close(w->reserve_fd);
        w->reserve_fd = -1;
        for (int i = 0; i < SHED_BATCH; i++) {
            int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0)
                refuse_fd(w, fd, HTTP_REFUSED_FDS);
            else if (errno != EINTR && errno != ECONNABORTED)
                break;
        }
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    listener_rest(w, ACCEPT_BACKOFF_MS);
}

static void conn_adopt(worker_t *w, int fd, const struct sockaddr_storage *sa)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        __atomic_sub_fetch(&g_open, 1, __ATOMIC_RELAXED);
        return;
    }
    c->w = w;
    addr_from_sockaddr(sa, &c->peer);
    uv_tcp_init(w->loop, &c->tcp);
    uv_timer_init(w->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd); /* not the handle's: uv_tcp_open failed before taking it */
        c->state = C_IDLE;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &w->settings);
    c->parser.data = c;
    conn_reset_request(c);
    conn_timer(c, w->lim.idle_timeout_ms);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_listen_io(uv_poll_t *p, int status, int events)
{
    (void)events;
    worker_t *w = p->data;
    if (!w->listening)
        return;
    if (status < 0) {
        LOG_WARN("worker %d: listener: %s", w->id, uv_strerror(status));
        listener_rest(w, ACCEPT_BACKOFF_MS);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        memset(&sa, 0, sizeof sa);
        int fd = accept4(w->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            /* The connection failed before it was taken (accept(2): pending network errors
             * are passed on for TCP): nothing to do, take the next one. */
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == ENETDOWN || e == ENOPROTOOPT ||
                e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH ||
                e == EPERM)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                accept_starved(w, e);
                return;
            }
            LOG_WARN("worker %d: accept: %s", w->id, strerror(e));
            listener_rest(w, ACCEPT_BACKOFF_MS);
            return;
        }
        if (w->starved) {
            w->starved = 0;
            LOG_WARN("worker %d: accepting again (%llu connection(s) refused while out of file descriptors)",
                     w->id, (unsigned long long)w->shed);
            w->shed = 0;
        }
        unsigned n = __atomic_add_fetch(&g_open, 1, __ATOMIC_RELAXED);
        if (w->lim.max_connections && n > w->lim.max_connections) {
            __atomic_sub_fetch(&g_open, 1, __ATOMIC_RELAXED);
            if (!w->capped) {
                w->capped = 1;
                LOG_WARN("worker %d: %u client connections open (MAX_CONNECTIONS): refusing new ones with 503",
                         w->id, w->lim.max_connections);
            }
            refuse_fd(w, fd, HTTP_REFUSED_CAP);
            continue;
        }
        w->capped = 0;
        conn_adopt(w, fd, &sa);
    }
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    wreq_t *wr = (wreq_t *)req;
    conn_t *c = wr->c;
    c->wq_bytes -= wr->len;
    free(wr);
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (CF(c, CF_ABOVE_HIGH) && c->wq_bytes <= WQ_LOW) {
        c->flags &= ~CF_ABOVE_HIGH;
        if (c->owner && c->owner->ops->on_drain)
            c->owner->ops->on_drain(c->owner, c);
    }
    if (CF(c, CF_RESP_DONE) && c->wq_bytes == 0)
        conn_finish_response(c);
    else if (CF(c, CF_RESP_DONE))
        conn_timer(c, c->w->lim.idle_timeout_ms); /* progress: restart the send timeout */
}

static int conn_write_now(conn_t *c, uv_buf_t *bufs, unsigned n, int count)
{
    if (c->state == C_CLOSING)
        return -1;
    if (CF(c, CF_RESP_STARTED))
        c->flags |= CF_RESP_ON_WIRE;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (count)
        c->bytes_out += total;
    size_t done = 0;
    if (c->wq_bytes == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r >= 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN) {
            conn_close(c);
            return -1;
        }
        if (done == total)
            return 0;
    }
    size_t left = total - done;
    wreq_t *wr = malloc(sizeof *wr + left);
    if (!wr) {
        conn_close(c);
        return -1;
    }
    size_t o = 0, skip = done;
    for (unsigned i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(wr->data + o, bufs[i].base + skip, l - skip);
        o += l - skip;
        skip = 0;
    }
    wr->c = c;
    wr->len = left;
    c->wq_bytes += left;
    if (c->wq_bytes > WQ_HIGH)
        c->flags |= CF_ABOVE_HIGH;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)left);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->wq_bytes -= left;
        free(wr);
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Writes, or while the connection is corked, appends the wire bytes to the worker's cork
 * buffer so that everything one engine read produced leaves in one write(2). */
static int conn_writev(conn_t *c, uv_buf_t *bufs, unsigned n)
{
    if (!CF(c, CF_CORKED))
        return conn_write_now(c, bufs, n, 1);
    if (c->state == C_CLOSING)
        return -1;
    worker_t *w = c->w;
    if (w->cork_owner && w->cork_owner != c)
        conn_flush(w->cork_owner);
    w->cork_owner = c;
    for (unsigned i = 0; i < n; i++) {
        c->bytes_out += bufs[i].len;
        if (buf_append(&w->cork, bufs[i].base, bufs[i].len) != 0) {
            conn_close(c);
            return -1;
        }
    }
    return w->cork.len >= CORK_MAX ? conn_flush(c) : 0;
}

void conn_cork(conn_t *c) { c->flags |= CF_CORKED; }

int conn_flush(conn_t *c)
{
    worker_t *w = c->w;
    if (w->cork_owner != c)
        return c->state == C_CLOSING ? -1 : 0;
    w->cork_owner = NULL;
    if (w->cork.len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(w->cork.data, (unsigned)w->cork.len);
    int r = conn_write_now(c, &b, 1, 0);
    if (w->cork.cap > 4 * CORK_MAX)
        buf_free(&w->cork);
    else
        buf_reset(&w->cork);
    return r;
}

int conn_start_response(conn_t *c, int status, const char *content_type,
                        const char *extra_headers, int64_t content_length)
{
    if (CF(c, CF_RESP_STARTED) || c->state == C_CLOSING || c->state == C_LINGER)
        return -1;
    c->flags |= CF_RESP_STARTED;
    c->resp_out0 = c->bytes_out;
    /* An answer before the body was read (C_HEAD/C_BODY) leaves the body unread: the
     * connection cannot be reused. */
    if (!c->req.keep_alive || c->w->draining || c->state == C_HEAD || c->state == C_BODY)
        c->flags |= CF_CLOSE_AFTER;
    int nobody_status = STATUS_HAS_NO_BODY(status);
    conn_flag_set(c, CF_RESP_NOBODY, nobody_status || c->req.method == HTTP_HEAD);
    char head[1024];
    size_t n = 0;
    int k = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
#define HEAD_ADD(...)                                                                   \
    do {                                                                                \
        if (k < 0 || (n += (size_t)k) >= sizeof head)                                   \
            return -1;                                                                  \
        k = snprintf(head + n, sizeof head - n, __VA_ARGS__);                           \
    } while (0)
    HEAD_ADD("%sX-Request-Id: %s\r\n", worker_date(c->w), conn_request_id(c));
    if (content_type)
        HEAD_ADD("Content-Type: %s\r\n", content_type);
    if (nobody_status) {
        /* no framing headers at all */
    } else if (content_length >= 0)
        HEAD_ADD("Content-Length: %lld\r\n", (long long)content_length);
    else if (CF(c, CF_HTTP10)) {
        c->flags |= CF_CLOSE_AFTER; /* HTTP/1.0 has no chunked coding: the close ends the body */
    } else {
        HEAD_ADD("Transfer-Encoding: chunked\r\n");
        conn_flag_set(c, CF_RESP_CHUNKED, !CF(c, CF_RESP_NOBODY));
    }
    if (CF(c, CF_CLOSE_AFTER))
        HEAD_ADD("Connection: close\r\n");
    HEAD_ADD("%s", "");
#undef HEAD_ADD
    if (n >= sizeof head - 3)
        return -1;
    uv_buf_t b[3];
    unsigned nb = 0;
    b[nb++] = uv_buf_init(head, (unsigned)n);
    if (extra_headers && *extra_headers)
        b[nb++] = uv_buf_init((char *)extra_headers, (unsigned)strlen(extra_headers));
    b[nb++] = uv_buf_init("\r\n", 2);
    int r = conn_writev(c, b, nb);
    c->bytes_out -= (uint64_t)(b[0].len + (nb == 3 ? b[1].len : 0) + 2);
    return r;
}

/* "<hex size>\r\n" without printf: this runs once per engine read on the streaming path. */
static int chunk_size_line(char out[24], size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = hexd[n & 15];
        n >>= 4;
    } while (n);
    int o = 0;
    while (k)
        out[o++] = tmp[--k];
    out[o++] = '\r';
    out[o++] = '\n';
    return o;
}

int conn_write_body(conn_t *c, const void *p, size_t n)
{
    if (!CF(c, CF_RESP_STARTED) || CF(c, CF_RESP_DONE) || n == 0 || CF(c, CF_RESP_NOBODY))
        return c->state == C_CLOSING ? -1 : 0;
    if (!CF(c, CF_RESP_CHUNKED)) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        return conn_writev(c, &b, 1);
    }
    char sz[24];
    int sl = chunk_size_line(sz, n);
    uv_buf_t b[3] = {uv_buf_init(sz, (unsigned)sl), uv_buf_init((char *)p, (unsigned)n),
                     uv_buf_init("\r\n", 2)};
    uint64_t before = c->bytes_out;
    int r = conn_writev(c, b, 3);
    c->bytes_out = before + n;
    return r;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the read side ends the linger (EOF, error or timer) */
}

/* Answered before the request body was read (401, 413, 408 in the body, malformed): closing
 * at once would make the kernel reset the connection when more body bytes arrive, and the
 * client could lose the answer. Send FIN, then read and discard until the client closes or
 * LINGER_MS pass (RFC 9112 9.6). */
static void conn_linger(conn_t *c)
{
    c->state = C_LINGER;
    c->owner = NULL;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_timer(c, LINGER_MS);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* The exchange is over once the response is fully written: reuse or close the connection. */
static void conn_finish_response(conn_t *c)
{
    if (c->state == C_CLOSING || c->state == C_LINGER)
        return;
    if (CF(c, CF_CLOSE_AFTER) && !CF(c, CF_MSG_COMPLETE) && c->state != C_IDLE) {
        conn_linger(c);
        return;
    }
    if (CF(c, CF_CLOSE_AFTER) || c->w->draining) {
        conn_close(c);
        return;
    }
    llhttp_resume(&c->parser);
    conn_reset_request(c);
    conn_timer(c, c->w->lim.idle_timeout_ms);
    if (c->pending.len) {
        c->flags |= CF_RESUME_PENDING;
        uv_timer_start(&c->timer, on_conn_timer, 0, 0);
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int conn_end_response(conn_t *c) { return conn_end_response_trailers(c, NULL); }

int conn_end_response_trailers(conn_t *c, const char *trailers)
{
    if (!CF(c, CF_RESP_STARTED) || CF(c, CF_RESP_DONE))
        return -1;
    if (CF(c, CF_RESP_CHUNKED)) {
        uv_buf_t b[3];
        unsigned nb = 0;
        if (trailers && *trailers) {
            b[nb++] = uv_buf_init("0\r\n", 3);
            b[nb++] = uv_buf_init((char *)trailers, (unsigned)strlen(trailers));
            b[nb++] = uv_buf_init("\r\n", 2);
        } else
            b[nb++] = uv_buf_init("0\r\n\r\n", 5);
        uint64_t before = c->bytes_out;
        if (conn_writev(c, b, nb) != 0)
            return -1;
        c->bytes_out = before;
    }
    if (conn_flush(c) != 0)
        return -1;
    c->flags &= ~CF_CORKED;
    c->flags |= CF_RESP_DONE;
    c->owner = NULL;
    if (c->wq_bytes == 0)
        conn_finish_response(c);
    else if (c->state == C_APP)
        conn_timer(c, c->w->lim.idle_timeout_ms); /* send timeout for the queued tail */
    return 0;
}

int conn_respond(conn_t *c, int status, const char *content_type, const char *extra_headers,
                 const void *body, size_t len)
{
    if (conn_start_response(c, status, content_type, extra_headers, (int64_t)len) != 0)
        return -1;
    if (len && conn_write_body(c, body, len) != 0)
        return -1;
    return conn_end_response(c);
}

int conn_retract_response(conn_t *c)
{
    if (!CF(c, CF_RESP_STARTED) || CF(c, CF_RESP_ON_WIRE) || CF(c, CF_RESP_DONE) ||
        c->state == C_CLOSING || c->state == C_LINGER)
        return -1;
    if (c->w->cork_owner == c) {
        c->w->cork_owner = NULL;
        buf_reset(&c->w->cork);
    }
    c->flags &= ~(CF_RESP_STARTED | CF_RESP_CHUNKED | CF_RESP_NOBODY | CF_CORKED);
    c->bytes_out = c->resp_out0;
    return 0;
}

const char *conn_reject_detail(const conn_t *c) { return c->reject_detail; }

int conn_response_started(const conn_t *c) { return CF(c, CF_RESP_STARTED); }
size_t conn_write_queue_bytes(const conn_t *c) { return c->wq_bytes; }
size_t conn_parked_bytes(const conn_t *c) { return c->pending.len; }
int conn_should_pause_source(const conn_t *c) { return c->wq_bytes > WQ_HIGH; }
void conn_set_owner(conn_t *c, conn_owner_t *o) { c->owner = o; }
worker_t *conn_worker(const conn_t *c) { return c->w; }
uint64_t conn_bytes_out(const conn_t *c) { return c->bytes_out; }

/* ---- worker ---- */

int http_listen_probe(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, e = 0;
    /* SO_REUSEADDR as the workers set it (a TIME_WAIT of a previous run is no conflict), but
     * not SO_REUSEPORT: a listener there, with it or not, makes bind fail. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        e = errno;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    if (e == EADDRINUSE) {
        snprintf(err, errlen,
                 "%s:%d is already in use (another vllm-proxy? Two would split the connections "
                 "between their keys and signature stores): refusing to start",
                 host, port);
        return -1;
    }
    if (e) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(e));
        return -1;
    }
    return 0;
}

static int bind_reuseport(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

worker_t *worker_new(uv_loop_t *loop, int id, const char *host, int port,
                     const http_limits_t *lim, const http_handler_t *h, void *user, char *err,
                     size_t errlen)
{
    worker_t *w = calloc(1, sizeof *w);
    if (!w || !(w->rbuf = malloc(READ_BUF_SIZE))) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->loop = loop;
    w->id = id;
    w->lim = *lim;
    w->h = h;
    w->user = user;
    llhttp_settings_init(&w->settings);
    w->settings.on_message_begin = cb_message_begin;
    w->settings.on_url = cb_url;
    w->settings.on_header_field = cb_header_field;
    w->settings.on_header_field_complete = cb_header_field_complete;
    w->settings.on_header_value = cb_header_value;
    w->settings.on_headers_complete = cb_headers_complete;
    w->settings.on_body = cb_body;
    w->settings.on_message_complete = cb_message_complete;
    int fd = bind_reuseport(host, port, err, errlen);
    if (fd < 0) {
        free(w->rbuf);
        free(w);
        return NULL;
    }
    if (uv_poll_init(loop, &w->lpoll, fd) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d", host, port);
        close(fd);
        free(w->rbuf);
        free(w);
        return NULL;
    }
    uv_timer_init(loop, &w->lbackoff);
    w->lpoll.data = w->lbackoff.data = w;
    w->lfd = fd;
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    w->listening = 1;
    if (uv_poll_start(&w->lpoll, UV_READABLE, on_listen_io) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d", host, port);
        /* Start-up failure: the caller exits; the handles' close completes with the loop. */
        worker_drain(w, NULL);
        free(w->rbuf);
        return NULL;
    }
    return w;
}

void worker_drain(worker_t *w, void (*cb)(worker_t *))
{
    if (w->draining)
        return;
    w->draining = 1;
    w->drain_cb = cb;
    if (w->listening) {
        w->listening = 0;
        /* uv_close stops polling at once (the descriptor leaves epoll): closing it is safe. */
        uv_close((uv_handle_t *)&w->lpoll, NULL);
        uv_close((uv_handle_t *)&w->lbackoff, NULL);
        close(w->lfd);
        w->lfd = -1;
        if (w->reserve_fd >= 0)
            close(w->reserve_fd);
        w->reserve_fd = -1;
    }
    for (conn_t *c = w->conns, *n; c; c = n) {
        n = c->next;
        if (c->state == C_IDLE)
            conn_close(c);
    }
    if (w->nconns == 0 && w->drain_cb) {
        w->drain_cb = NULL;
        cb(w);
    }
}

void worker_close_all(worker_t *w)
{
    for (conn_t *c = w->conns, *n; c; c = n) {
        n = c->next;
        conn_close(c);
    }
}

void *worker_user(const worker_t *w) { return w->user; }
int worker_id(const worker_t *w) { return w->id; }
uv_loop_t *worker_loop(const worker_t *w) { return w->loop; }
unsigned worker_conn_count(const worker_t *w) { return w->nconns; }
char *worker_read_buf(worker_t *w, size_t *len)
{
    *len = READ_BUF_SIZE;
    return w->rbuf;
}

void worker_free(worker_t *w)
{
    if (!w)
        return;
    buf_free(&w->cork);
    free(w->rbuf);
    free(w);
}
