/* HTTP/1.1 server connections for mock-vllm: llhttp parsing with keep-alive and pipelining
 * (the parser pauses at each request until its response is written), and one write path:
 * bytes go to c->out, uv_try_write sends what the socket takes and a single queued uv_write
 * carries the rest. Producers add more only once out has drained, so memory stays bounded. */
#include "mock.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_URL (16 * 1024)
#define MAX_HEADERS (64 * 1024)
#define MAX_BODY (64 * 1024 * 1024)
#define MAX_PENDING (1024 * 1024)

static llhttp_settings_t settings;
static int settings_ready;
static struct conn *conns;

const char *http_date(void)
{
    static char date[64];
    static time_t last = -1;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return date;
}

static struct conn *parser_conn(llhttp_t *p) { return (struct conn *)p->data; }

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = parser_conn(p);
    buf_reset(&c->url);
    buf_reset(&c->hdrs);
    buf_reset(&c->body);
    c->hdr_state = 0;
    c->too_large = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = parser_conn(p);
    if (c->url.len + n > MAX_URL) {
        c->too_large = 414;
        return -1;
    }
    put(&c->url, at, n);
    return 0;
}

static int header_bytes(struct conn *c, const char *at, size_t n, int lower)
{
    if (c->hdrs.len + n + 2 > MAX_HEADERS) {
        c->too_large = 431;
        return -1;
    }
    reserve(&c->hdrs, n);
    char *d = c->hdrs.data + c->hdrs.len;
    for (size_t i = 0; i < n; i++)
        d[i] = lower ? (char)tolower((unsigned char)at[i]) : at[i];
    c->hdrs.len += n;
    c->hdrs.data[c->hdrs.len] = '\0';
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    parser_conn(p)->hdr_state = 1;
    return header_bytes(parser_conn(p), at, n, 1);
}

static int on_header_field_complete(llhttp_t *p)
{
    parser_conn(p)->hdr_state = 2;
    return header_bytes(parser_conn(p), ":", 1, 0);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    return header_bytes(parser_conn(p), at, n, 0);
}

static int on_header_value_complete(llhttp_t *p)
{
    parser_conn(p)->hdr_state = 0;
    return header_bytes(parser_conn(p), "\n", 1, 0);
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = parser_conn(p);
    if (c->body.len + n > MAX_BODY) {
        c->too_large = 413;
        return -1;
    }
    put(&c->body, at, n);
    return 0;
}

/* curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a second for this */
static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = parser_conn(p);
    size_t n;
    const char *v = conn_header(c, "expect", &n);
    if (v && n == 12 && strncasecmp(v, "100-continue", 12) == 0 && !c->writing) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
        (void)uv_try_write(&c->h.stream, &b, 1); /* best effort: the client times out anyway */
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = parser_conn(p);
    c->method = llhttp_get_method(p);
    c->keep_alive = llhttp_should_keep_alive(p);
    c->busy = 1;
    return HPE_PAUSED;
}

const char *conn_header(struct conn *c, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *s = c->hdrs.data, *end = s + c->hdrs.len;
    while (s && s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol)
            break;
        if ((size_t)(eol - s) > nl && s[nl] == ':' && memcmp(s, name, nl) == 0) {
            const char *v = s + nl + 1;
            const char *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        s = eol + 1;
    }
    return NULL;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    buf_free(&c->url);
    buf_free(&c->hdrs);
    buf_free(&c->body);
    buf_free(&c->pending);
    buf_free(&c->out);
    buf_free(&c->scratch);
    answer_free(&c->ans);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->closing = 1;
    if (c->counted) {
        g_stats.active--;
        c->counted = 0;
    }
    if (c->prev) c->prev->next = c->next;
    else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_close(&c->h.handle, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void conn_abort(struct conn *c, int cancelled)
{
    if (c->closed)
        return;
    if (c->counted && cancelled)
        g_stats.cancelled++;
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close(req->data);
}

void conn_shutdown(struct conn *c)
{
    if (c->closing)
        return;
    if (c->counted) { /* a response cut short on purpose: neither completed nor cancelled */
        g_stats.active--;
        c->counted = 0;
    }
    uv_read_stop(&c->h.stream);
    c->reading = 0;
    uv_timer_stop(&c->timer);
    c->shutdown_req.data = c;
    c->closing = 1;
    if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) != 0)
        conn_close(c);
}

void conn_close_all(void)
{
    while (conns)
        conn_close(conns);
}

static void after_drain(struct conn *c)
{
    if (c->resp_done)
        conn_response_written(c);
    else
        answer_pump(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = 0;
    if (c->closing)
        return;
    if (status < 0) {
        conn_abort(c, 1);
        return;
    }
    buf_reset(&c->out);
    c->out_off = 0;
    after_drain(c);
}

int conn_flush_ret(struct conn *c)
{
    if (c->closing)
        return -1;
    if (c->writing)
        return 0;
    while (c->out_off < c->out.len) {
        size_t n = c->out.len - c->out_off;
        if (c->piece && c->out_off >= c->piece_from && n > c->piece)
            n = c->piece;
        else if (c->piece && c->out_off < c->piece_from)
            n = c->piece_from - c->out_off;
        uv_buf_t b = uv_buf_init(c->out.data + c->out_off, (unsigned)n);
        int r = uv_try_write(&c->h.stream, &b, 1);
        if (r == UV_EAGAIN || r == UV_ENOSYS)
            r = 0;
        if (r < 0) {
            conn_abort(c, 1);
            return -1;
        }
        c->out_off += (size_t)r;
        if ((size_t)r < n) {
            uv_buf_t rest = uv_buf_init(c->out.data + c->out_off, (unsigned)(c->out.len - c->out_off));
            c->write_req.data = c;
            int e = uv_write(&c->write_req, &c->h.stream, &rest, 1, on_write);
            if (e != 0) {
                conn_abort(c, 1);
                return -1;
            }
            c->writing = 1;
            return 0;
        }
    }
    buf_reset(&c->out);
    c->out_off = 0;
    return 1;
}

void conn_flush(struct conn *c)
{
    if (conn_flush_ret(c) == 1)
        after_drain(c);
}

static void conn_start_reading(struct conn *c);

static void dispatch(struct conn *c)
{
    if (c->too_large) {
        static const char *msg[] = {"Request line too long", "Request headers too large",
                                    "Request body too large"};
        int st = c->too_large;
        c->close_after = 1;
        c->busy = 1;
        send_error(c, st, msg[st == 414 ? 0 : st == 431 ? 1 : 2]);
        return;
    }
    answer_request(c);
}

/* Parses data (which may live in c->pending); on a complete request keeps the unparsed rest in
 * c->pending and answers. Returns -1 when the connection is closing. */
static int conn_parse(struct conn *c, const char *data, size_t len)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK) {
        if (data == c->pending.data)
            buf_reset(&c->pending);
        return 0;
    }
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t rest = (size_t)(data + len - pos);
        if (data == c->pending.data) {
            memmove(c->pending.data, pos, rest);
            c->pending.len = rest;
        } else {
            put(&c->pending, pos, rest);
        }
        dispatch(c);
        return c->closing ? -1 : 0;
    }
    if (c->too_large) {
        buf_reset(&c->pending);
        dispatch(c);
        return -1;
    }
    /* malformed HTTP: answer 400 and close, as uvicorn does */
    buf_reset(&c->pending);
    c->busy = 1;
    c->close_after = 1;
    send_simple(c, 400, "text/plain; charset=utf-8", "Invalid HTTP request received.", 30);
    return -1;
}

/* Parses pipelined requests that arrived while busy. Answers that complete synchronously
 * come back through conn_response_written, which leaves the looping to this frame. */
static void conn_run_pending(struct conn *c)
{
    if (c->closing || c->in_parse)
        return;
    c->in_parse = 1;
    while (!c->busy && !c->closing && c->pending.len > 0) {
        if (conn_parse(c, c->pending.data, c->pending.len) != 0)
            break;
    }
    c->in_parse = 0;
    if (!c->busy && !c->closing && !c->reading)
        conn_start_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct conn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n == 0 || c->closing)
        return;
    if (n < 0) {
        /* EOF or reset: a response still in progress is a cancellation */
        conn_abort(c, 1);
        return;
    }
    if (c->busy) {
        put(&c->pending, b->base, (size_t)n);
        if (c->pending.len > MAX_PENDING) {
            uv_read_stop(s);
            c->reading = 0;
        }
        return;
    }
    if (c->pending.len == 0) {
        c->in_parse = 1;
        int r = conn_parse(c, b->base, (size_t)n);
        c->in_parse = 0;
        if (r != 0)
            return;
    } else {
        put(&c->pending, b->base, (size_t)n);
    }
    conn_run_pending(c);
}

static void conn_start_reading(struct conn *c)
{
    c->reading = 1;
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

void conn_response_written(struct conn *c)
{
    if (c->closing)
        return;
    if (c->counted) {
        g_stats.completed++;
        g_stats.active--;
        c->counted = 0;
    }
    c->resp_done = 0;
    c->piece = 0;
    c->piece_from = 0;
    c->ans.phase = PH_IDLE;
    c->ans.active = 0;
    c->busy = 0;
    if (c->close_after || !c->keep_alive) {
        conn_shutdown(c);
        return;
    }
    llhttp_resume(&c->parser);
    if (!c->reading && c->pending.len <= MAX_PENDING)
        conn_start_reading(c);
    conn_run_pending(c);
}

void conn_accept(uv_stream_t *server, int is_pipe)
{
    if (!settings_ready) {
        llhttp_settings_init(&settings);
        settings.on_message_begin = on_message_begin;
        settings.on_url = on_url;
        settings.on_header_field = on_header_field;
        settings.on_header_field_complete = on_header_field_complete;
        settings.on_header_value = on_header_value;
        settings.on_header_value_complete = on_header_value_complete;
        settings.on_headers_complete = on_headers_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
        settings_ready = 1;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        fputs("mock-vllm: out of memory\n", stderr);
        abort();
    }
    int r = is_pipe ? uv_pipe_init(g_loop, &c->h.pipe, 0) : uv_tcp_init(g_loop, &c->h.tcp);
    if (r != 0) {
        free(c);
        return;
    }
    c->h.handle.data = c;
    uv_timer_init(g_loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    if (uv_accept(server, &c->h.stream) != 0) {
        conn_close(c);
        return;
    }
    if (!is_pipe)
        uv_tcp_nodelay(&c->h.tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    conn_start_reading(c);
}
