/* Routes and answers of mock-vllm. Completion text is deterministic (token i of choice j is
 * words[(i + 7j) % NWORDS]); the constant parts of every SSE event are formatted once per
 * request, so producing a token is a few memcpy calls into the connection's output buffer. */
#include "mock.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/hex.h"
#include "core/sha.h"

#define OUT_HIGH (64 * 1024)          /* refill the output buffer up to this size */
#define YIELD_BYTES (1024 * 1024)     /* written per connection per loop turn, at most */
#define MAX_NONSTREAM_TOKENS 2000000L /* non-stream bodies are built whole */

/* Includes non-ASCII (2-, 3- and 4-byte UTF-8), a quote, a backslash, a newline and a tab so
 * that every escaping path of a re-serialiser is exercised. */
static const char *const words[] = {
    "Hello", ",", " world", " h\xc3\xa9llo", " \"quoted\"", " back\\slash", " the", " quick",
    " brown", " fox", "\n", " jumps", " over", " na\xc3\xafve", " \xf0\x9f\x99\x82", " dog", ".",
    " \xe6\x97\xa5\xe6\x9c\xac", " tab\t", " end",
};
#define NWORDS (sizeof words / sizeof words[0])

struct word { char s[40]; size_t n; }; /* JSON string literal, quotes included */
static struct word wjson[NWORDS];

static json_tokener *tok;
static uint64_t rng_s[2];
static struct {
    buf_t method, url, hdrs, body;
    char sha[65];
    size_t body_len;
    int set;
} last;

static uint64_t rng_next(void)
{
    uint64_t s1 = rng_s[0];
    const uint64_t s0 = rng_s[1];
    rng_s[0] = s0;
    s1 ^= s1 << 23;
    rng_s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_s[1] + s0;
}

static void random_hex32(char out[33])
{
    uint8_t b[16];
    uint64_t x = rng_next(), y = rng_next();
    memcpy(b, &x, 8);
    memcpy(b + 8, &y, 8);
    hex_encode(out, b, 16);
}

void answer_global_init(void)
{
    for (size_t i = 0; i < NWORDS; i++) {
        buf_t b = BUF_INIT;
        if (buf_json_str(&b, words[i], strlen(words[i])) != 0 || b.len >= sizeof wjson[i].s)
            abort();
        memcpy(wjson[i].s, b.data, b.len);
        wjson[i].n = b.len;
        buf_free(&b);
    }
    tok = json_tokener_new();
    if (!tok)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    rng_s[0] = uv_hrtime() ^ 0x9e3779b97f4a7c15ULL;
    rng_s[1] = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ 0xbf58476d1ce4e5b9ULL;
    for (int i = 0; i < 8; i++)
        rng_next();
}

void answer_global_free(void)
{
    json_tokener_free(tok);
    buf_free(&last.method);
    buf_free(&last.url);
    buf_free(&last.hdrs);
    buf_free(&last.body);
}

void answer_free(struct answer *a)
{
    buf_free(&a->pre);
    buf_free(&a->usage);
    buf_free(&a->idhex);
    buf_free(&a->model);
}

/* ---------------------------------------------------------------- plain responses */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    case 414: return "Request-URI Too Long";
    case 431: return "Request Header Fields Too Large";
    default: return "Internal Server Error";
    }
}

static void put_head(struct conn *c, int status, const char *ctype, long clen)
{
    buf_t *o = &c->out;
    char line[160];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\ndate: %s\r\nserver: uvicorn\r\n",
                     status, reason(status), http_date());
    put(o, line, (size_t)n);
    if (clen >= 0) {
        n = snprintf(line, sizeof line, "content-length: %ld\r\n", clen);
        put(o, line, (size_t)n);
    }
    put(o, "content-type: ", 14);
    put(o, ctype, strlen(ctype));
    PUTS(o, "\r\n");
    if (clen < 0)
        PUTS(o, "transfer-encoding: chunked\r\n");
    if (c->close_after || !c->keep_alive)
        PUTS(o, "connection: close\r\n");
    PUTS(o, "\r\n");
}

void send_simple(struct conn *c, int status, const char *ctype, const char *body, size_t len)
{
    put_head(c, status, ctype, (long)len);
    put(&c->out, body, len);
    c->resp_done = 1;
    if (conn_flush_ret(c) == 1)
        conn_response_written(c);
}

static void send_buf(struct conn *c, int status, buf_t *b)
{
    send_simple(c, status, "application/json", b->data ? b->data : "", b->len);
    buf_free(b);
}

void send_error(struct conn *c, int status, const char *msg)
{
    buf_t b = BUF_INIT;
    const char *type = status == 500 ? "InternalServerError"
                       : status == 404 ? "NotFoundError" : "BadRequestError";
    PUTS(&b, "{\"error\":{\"message\":");
    if (buf_json_str(&b, msg, strlen(msg)) != 0)
        abort();
    if (buf_printf(&b, ",\"type\":\"%s\",\"param\":null,\"code\":%d}}", type, status) != 0)
        abort();
    send_buf(c, status, &b);
}

static void send_detail(struct conn *c, int status, const char *detail)
{
    char body[96];
    int n = snprintf(body, sizeof body, "{\"detail\":\"%s\"}", detail);
    send_simple(c, status, "application/json", body, (size_t)n);
}

/* ---------------------------------------------------------------- request helpers */

static json_object *parse_body(struct conn *c, const char **err)
{
    *err = NULL;
    if (c->body.len == 0) {
        *err = "Request body is empty; expected a JSON object";
        return NULL;
    }
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, c->body.data, (int)c->body.len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t off = json_tokener_get_parse_end(tok);
    while (o && off < c->body.len && strchr(" \t\r\n", c->body.data[off]))
        off++;
    if (!o || e != json_tokener_success || off != c->body.len) {
        json_object_put(o);
        *err = "JSON decode error: the request body is not valid JSON";
        return NULL;
    }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *err = "The request body must be a JSON object";
        return NULL;
    }
    return o;
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) && !json_object_is_type(v, json_type_null) ? v
                                                                                          : NULL;
}

/* 0 and *out set, 1 when absent, -1 when present but not an integer in [min, max]. */
static int get_int(json_object *o, const char *k, long min, long max, long *out)
{
    json_object *v = get(o, k);
    if (!v)
        return 1;
    if (!json_object_is_type(v, json_type_int))
        return -1;
    int64_t x = json_object_get_int64(v);
    if (x < min || x > max)
        return -1;
    *out = (long)x;
    return 0;
}

static size_t text_len(json_object *v)
{
    if (!v)
        return 0;
    if (json_object_is_type(v, json_type_string))
        return (size_t)json_object_get_string_len(v);
    size_t n = 0;
    if (json_object_is_type(v, json_type_array))
        for (size_t i = 0; i < json_object_array_length(v); i++)
            n += text_len(json_object_array_get_idx(v, i));
    else if (json_object_is_type(v, json_type_object)) {
        n += text_len(get(v, "content"));
        n += text_len(get(v, "text"));
    }
    return n;
}

static long count_prompt_tokens(size_t bytes) { return 1 + (long)(bytes / 4); }

static void json_esc_inner(buf_t *b, const char *s, size_t n)
{
    size_t start = b->len;
    if (buf_json_str(b, s, n) != 0)
        abort();
    memmove(b->data + start, b->data + start + 1, b->len - start - 2);
    b->len -= 2;
    b->data[b->len] = '\0';
}

static void record_last(struct conn *c, const char *method)
{
    buf_reset(&last.method);
    buf_reset(&last.url);
    buf_reset(&last.hdrs);
    put(&last.method, method, strlen(method));
    put(&last.url, c->url.data, c->url.len);
    put(&last.hdrs, c->hdrs.data ? c->hdrs.data : "", c->hdrs.len);
    sha256_hex(c->body.data ? c->body.data : "", c->body.len, last.sha);
    last.body_len = c->body.len;
    buf_reset(&last.body);
    if (g_cfg.record_body)
        put(&last.body, c->body.data ? c->body.data : "", c->body.len);
    last.set = 1;
}

static void send_last(struct conn *c)
{
    if (!last.set) {
        send_error(c, 404, "no request recorded yet");
        return;
    }
    json_object *o = json_object_new_object(), *h = json_object_new_object();
    const char *u = last.url.data, *q = memchr(u, '?', last.url.len);
    size_t plen = q ? (size_t)(q - u) : last.url.len;
    json_object_object_add(o, "method", json_object_new_string(last.method.data));
    json_object_object_add(o, "path", json_object_new_string_len(u, (int)plen));
    json_object_object_add(o, "query", json_object_new_string(q ? q + 1 : ""));
    const char *s = last.hdrs.data, *end = s + last.hdrs.len;
    while (s && s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        const char *colon = eol ? memchr(s, ':', (size_t)(eol - s)) : NULL;
        if (!colon)
            break;
        char name[256];
        size_t nl = (size_t)(colon - s) < sizeof name - 1 ? (size_t)(colon - s) : sizeof name - 1;
        memcpy(name, s, nl);
        name[nl] = '\0';
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        json_object *prev = NULL;
        if (json_object_object_get_ex(h, name, &prev)) { /* repeated header: join with ", " */
            buf_t j = BUF_INIT;
            put(&j, json_object_get_string(prev), (size_t)json_object_get_string_len(prev));
            PUTS(&j, ", ");
            put(&j, v, (size_t)(ve - v));
            json_object_object_add(h, name, json_object_new_string_len(j.data, (int)j.len));
            buf_free(&j);
        } else {
            json_object_object_add(h, name, json_object_new_string_len(v, (int)(ve - v)));
        }
        s = eol + 1;
    }
    json_object_object_add(o, "headers", h);
    json_object_object_add(o, "body_sha256", json_object_new_string(last.sha));
    json_object_object_add(o, "body_len", json_object_new_int64((int64_t)last.body_len));
    if (g_cfg.record_body)
        json_object_object_add(o, "body", json_object_new_string_len(last.body.data ? last.body.data : "",
                                                                     (int)last.body.len));
    size_t len;
    const char *txt = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    send_simple(c, 200, "application/json", txt, len);
    json_object_put(o);
}

/* ---------------------------------------------------------------- streaming */

struct part { const char *p; size_t n; };
#define P(lit) {(lit), sizeof(lit) - 1}

static size_t put_hex(char *d, size_t v)
{
    static const char hx[] = "0123456789abcdef";
    char t[16];
    size_t n = 0;
    do { t[n++] = hx[v & 15]; v >>= 4; } while (v);
    for (size_t i = 0; i < n; i++)
        d[i] = t[n - 1 - i];
    return n;
}

static void emit(struct conn *c, const struct part *parts, int np)
{
    struct answer *a = &c->ans;
    size_t total = 0;
    for (int i = 0; i < np; i++)
        total += parts[i].n;
    a->events++;
    if (a->chunking == CHUNK_NORMAL) {
        reserve(&c->out, total + 24);
        char *d = c->out.data + c->out.len;
        d += put_hex(d, total);
        *d++ = '\r'; *d++ = '\n';
        for (int i = 0; i < np; i++) {
            memcpy(d, parts[i].p, parts[i].n);
            d += parts[i].n;
        }
        *d++ = '\r'; *d++ = '\n';
        c->out.len = (size_t)(d - c->out.data);
    } else if (a->chunking == CHUNK_SPLIT) {
        reserve(&c->out, total * 6);
        char *d = c->out.data + c->out.len;
        for (int i = 0; i < np; i++)
            for (size_t k = 0; k < parts[i].n; k++) {
                d[0] = '1'; d[1] = '\r'; d[2] = '\n'; d[3] = parts[i].p[k]; d[4] = '\r'; d[5] = '\n';
                d += 6;
            }
        c->out.len = (size_t)(d - c->out.data);
    } else {
        reserve(&c->scratch, total);
        char *d = c->scratch.data + c->scratch.len;
        for (int i = 0; i < np; i++) {
            memcpy(d, parts[i].p, parts[i].n);
            d += parts[i].n;
        }
        c->scratch.len = (size_t)(d - c->scratch.data);
    }
}

/* coalesce: everything produced since the last write becomes one HTTP chunk */
static void frame_scratch(struct conn *c)
{
    if (c->scratch.len == 0)
        return;
    reserve(&c->out, c->scratch.len + 24);
    char *d = c->out.data + c->out.len;
    d += put_hex(d, c->scratch.len);
    *d++ = '\r'; *d++ = '\n';
    memcpy(d, c->scratch.data, c->scratch.len);
    d += c->scratch.len;
    *d++ = '\r'; *d++ = '\n';
    c->out.len = (size_t)(d - c->out.data);
    buf_reset(&c->scratch);
}

static size_t idx_str(char *d, int i)
{
    if (i < 10) { d[0] = (char)('0' + i); return 1; }
    if (i < 100) { d[0] = (char)('0' + i / 10); d[1] = (char)('0' + i % 10); return 2; }
    d[0] = (char)('0' + i / 100); d[1] = (char)('0' + i / 10 % 10); d[2] = (char)('0' + i % 10);
    return 3;
}

static void emit_next(struct conn *c)
{
    struct answer *a = &c->ans;
    char idx[4];
    struct part pre = {a->pre.data, a->pre.len};
    struct part ix = {idx, 0};
    switch (a->phase) {
    case PH_HEADERS:
        put_head(c, 200, "text/event-stream; charset=utf-8", -1);
        if (a->chunking == CHUNK_SPLIT) {
            c->piece = 6;
            c->piece_from = c->out.len;
        }
        a->phase = a->chat ? PH_ROLE : (a->tokens ? PH_TOKENS : PH_FINAL);
        a->choice = 0;
        return;
    case PH_ROLE: {
        ix.n = idx_str(idx, a->choice);
        struct part p[] = {pre, P("{\"index\":"), ix,
                           P(",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                             "\"logprobs\":null,\"finish_reason\":null}]}\n\n")};
        emit(c, p, 4);
        if (++a->choice == a->n) {
            a->choice = 0;
            a->phase = a->tokens ? PH_TOKENS : PH_FINAL;
        }
        return;
    }
    case PH_TOKENS: {
        ix.n = idx_str(idx, a->choice);
        const struct word *w = &wjson[(size_t)(a->step + 7 * a->choice) % NWORDS];
        struct part wp = {w->s, w->n};
        if (a->chat) {
            struct part p[] = {pre, P("{\"index\":"), ix, P(",\"delta\":{\"content\":"), wp,
                               P("},\"logprobs\":null,\"finish_reason\":null}]}\n\n")};
            emit(c, p, 6);
        } else {
            struct part p[] = {pre, P("{\"index\":"), ix, P(",\"text\":"), wp,
                               P(",\"logprobs\":null,\"finish_reason\":null,"
                                 "\"stop_reason\":null}]}\n\n")};
            emit(c, p, 6);
        }
        a->tokens_sent++;
        if (++a->choice == a->n) {
            a->choice = 0;
            if (++a->step == a->tokens)
                a->phase = PH_FINAL;
        }
        return;
    }
    case PH_FINAL: {
        ix.n = idx_str(idx, a->choice);
        struct part fin = a->finish_stop ? (struct part)P("\"stop\"") : (struct part)P("\"length\"");
        if (a->chat) {
            struct part p[] = {pre, P("{\"index\":"), ix,
                               P(",\"delta\":{},\"logprobs\":null,\"finish_reason\":"), fin,
                               P(",\"stop_reason\":null}]}\n\n")};
            emit(c, p, 6);
        } else {
            struct part p[] = {pre, P("{\"index\":"), ix,
                               P(",\"text\":\"\",\"logprobs\":null,\"finish_reason\":"), fin,
                               P(",\"stop_reason\":null}]}\n\n")};
            emit(c, p, 6);
        }
        if (++a->choice == a->n)
            a->phase = a->include_usage ? PH_USAGE : PH_DONE;
        return;
    }
    case PH_USAGE: {
        struct part p[] = {pre, {a->usage.data, a->usage.len}};
        emit(c, p, 2);
        a->phase = PH_DONE;
        return;
    }
    case PH_DONE: {
        struct part p[] = {P("data: [DONE]\n\n")};
        emit(c, p, 1);
        a->phase = PH_TERM;
        return;
    }
    case PH_TERM:
        if (a->chunking == CHUNK_COALESCE)
            frame_scratch(c);
        PUTS(&c->out, "0\r\n\r\n");
        a->phase = PH_END;
        return;
    default:
        return;
    }
}

static uint64_t elapsed_us(const struct answer *a) { return (uv_hrtime() - a->t0_ns) / 1000; }

/* With a delay, token step s may go out (s + 1) * delay after the answer started; coalesce
 * sends the whole answer at once after tokens * delay. */
static int gate_open(struct answer *a)
{
    if (a->delay_us <= 0)
        return 1;
    if (a->chunking == CHUNK_COALESCE) {
        if (a->allowed < a->tokens && elapsed_us(a) >= (uint64_t)a->tokens * (uint64_t)a->delay_us)
            a->allowed = a->tokens;
        return a->allowed >= a->tokens;
    }
    if (a->phase != PH_TOKENS || a->step < a->allowed)
        return 1;
    uint64_t steps = elapsed_us(a) / (uint64_t)a->delay_us;
    a->allowed = steps > (uint64_t)a->tokens ? a->tokens : (long)steps;
    return a->step < a->allowed;
}

static void on_timer(uv_timer_t *t) { answer_timer(t->data); }

static void arm_timer(struct conn *c)
{
    struct answer *a = &c->ans;
    uint64_t due = a->chunking == CHUNK_COALESCE ? (uint64_t)a->tokens * (uint64_t)a->delay_us
                                                 : (uint64_t)(a->step + 1) * (uint64_t)a->delay_us;
    uint64_t now = elapsed_us(a);
    uint64_t ms = due > now ? (due - now + 999) / 1000 : 1;
    uv_timer_start(&c->timer, on_timer, ms ? ms : 1, 0);
}

static void nonstream_send(struct conn *c);

void answer_pump(struct conn *c)
{
    struct answer *a = &c->ans;
    if (c->closing || c->writing || !a->active)
        return;
    if (a->phase == PH_CUT) {
        conn_shutdown(c);
        return;
    }
    if (!a->stream)
        return;
    /* A reader as fast as we are never makes the socket push back: yield to the loop after
     * a budget so other connections and signals get their turn. */
    size_t budget = YIELD_BYTES;
    for (;;) {
        int wait = 0;
        while (a->phase < PH_END) {
            if (a->fault.kind == FAULT_STALL && a->events >= 1) {
                a->phase = PH_STALL;
                break;
            }
            if (a->fault.kind == FAULT_CUT && a->phase >= PH_TOKENS &&
                (a->tokens_sent >= a->fault.arg || a->phase >= PH_FINAL)) {
                a->phase = PH_CUT;
                break;
            }
            if (!gate_open(a)) {
                wait = 1;
                break;
            }
            emit_next(c);
            if (a->delay_us > 0 && a->chunking != CHUNK_COALESCE)
                break; /* with a delay, one write per event */
            if (c->out.len - c->out_off + c->scratch.len >= OUT_HIGH)
                break;
        }
        if (a->chunking == CHUNK_COALESCE)
            frame_scratch(c);
        size_t flushed = c->out.len - c->out_off;
        int r = conn_flush_ret(c);
        if (r <= 0)
            return; /* closing, or on_write comes back here */
        if (a->phase == PH_END) {
            c->resp_done = 1;
            conn_response_written(c);
            return;
        }
        if (a->phase == PH_CUT) {
            conn_shutdown(c);
            return;
        }
        if (a->phase == PH_STALL)
            return;
        if (wait) {
            arm_timer(c);
            return;
        }
        if (flushed >= budget) {
            uv_timer_start(&c->timer, on_timer, 0, 0);
            return;
        }
        budget -= flushed;
    }
}

static void answer_begin(struct conn *c)
{
    struct answer *a = &c->ans;
    a->t0_ns = uv_hrtime();
    if (a->stream) {
        a->phase = PH_HEADERS;
        answer_pump(c);
        return;
    }
    if (a->fault.kind == FAULT_STALL) {
        a->phase = PH_STALL;
        return;
    }
    if (a->delay_us > 0 && a->tokens > 0) {
        a->phase = PH_TOKENS; /* waiting for the whole answer's delay */
        arm_timer(c);
        return;
    }
    nonstream_send(c);
}

void answer_timer(struct conn *c)
{
    struct answer *a = &c->ans;
    if (c->closing || !a->active)
        return;
    if (a->phase == PH_WAIT)
        answer_begin(c);
    else if (a->stream)
        answer_pump(c);
    else if (a->phase == PH_TOKENS) {
        if (elapsed_us(a) < (uint64_t)a->tokens * (uint64_t)a->delay_us) {
            arm_timer(c);
            return;
        }
        nonstream_send(c);
    }
}

/* ---------------------------------------------------------------- non-streaming */

static void nonstream_send(struct conn *c)
{
    struct answer *a = &c->ans;
    buf_t *b = &c->scratch;
    buf_reset(b);
    buf_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%ld,\"model\":", a->idhex.data,
               a->chat ? "chat.completion" : "text_completion", (long)time(NULL));
    put(b, a->model.data, a->model.len);
    PUTS(b, ",\"choices\":[");
    for (int j = 0; j < a->n; j++) {
        buf_printf(b, "%s{\"index\":%d,", j ? "," : "", j);
        const char *open = a->chat ? "\"message\":{\"role\":\"assistant\",\"content\":\"" : "\"text\":\"";
        put(b, open, strlen(open));
        reserve(b, (size_t)a->tokens * 32);
        for (long s = 0; s < a->tokens; s++) {
            const struct word *w = &wjson[(size_t)(s + 7 * j) % NWORDS];
            memcpy(b->data + b->len, w->s + 1, w->n - 2);
            b->len += w->n - 2;
        }
        put(b, a->chat ? "\"}," : "\",", a->chat ? 3 : 2);
        buf_printf(b, "\"logprobs\":null,\"finish_reason\":\"%s\",\"stop_reason\":null%s}",
                   a->finish_stop ? "stop" : "length", a->chat ? "" : ",\"prompt_logprobs\":null");
    }
    buf_printf(b, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld,"
                  "\"completion_tokens\":%ld}%s}",
               a->prompt_tokens, a->prompt_tokens + a->tokens * a->n, a->tokens * a->n,
               a->chat ? ",\"prompt_logprobs\":null" : "");
    put_head(c, 200, "application/json", (long)b->len);
    if (a->chunking == CHUNK_SPLIT) {
        c->piece = 1;
        c->piece_from = c->out.len;
    }
    if (a->fault.kind == FAULT_CUT) {
        put(&c->out, b->data, b->len / 2);
        a->phase = PH_CUT;
        buf_reset(b);
        if (conn_flush_ret(c) == 1)
            conn_shutdown(c);
        return;
    }
    put(&c->out, b->data, b->len);
    buf_reset(b);
    a->phase = PH_END;
    c->resp_done = 1;
    if (conn_flush_ret(c) == 1)
        conn_response_written(c);
}

/* ---------------------------------------------------------------- completions */

/* A string member of o, or NULL; *n its length. */
static const char *get_str(json_object *o, const char *k, size_t *n)
{
    json_object *v = get(o, k);
    if (!v || !json_object_is_type(v, json_type_string))
        return NULL;
    *n = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

/* The answer's id (JSON-escaped), as vLLM makes it: chatcmpl- (cmpl-) and the X-Request-Id
 * header, else the chat body's "request_id", else 32 random hex. A "mock_id" member (tests
 * only) is the whole id, verbatim. */
static void make_id(struct answer *a, struct conn *c, json_object *o, int chat)
{
    size_t n = 0;
    const char *id = get_str(o, "mock_id", &n);
    buf_reset(&a->idhex);
    if (id) {
        json_esc_inner(&a->idhex, id, n);
        return;
    }
    put(&a->idhex, chat ? "chatcmpl-" : "cmpl-", chat ? 9 : 5);
    id = conn_header(c, "x-request-id", &n);
    if (!(id && n > 0 && n <= 256) && chat)
        id = get_str(o, "request_id", &n);
    if (id && n > 0 && n <= 256) {
        json_esc_inner(&a->idhex, id, n);
        return;
    }
    char hx[33];
    random_hex32(hx);
    put(&a->idhex, hx, 32);
}

static void completion(struct conn *c, int chat)
{
    const char *err;
    json_object *o = parse_body(c, &err);
    if (!o) {
        send_error(c, 400, err);
        return;
    }
    struct answer *a = &c->ans;
    a->chat = chat;
    a->stream = 0;
    a->include_usage = 0;
    a->n = 1;
    a->chunking = g_cfg.chunking;
    a->delay_us = g_cfg.delay_us;
    a->fault = g_cfg.fault;
    a->tokens = g_cfg.tokens;
    a->finish_stop = 1;
    a->phase = PH_IDLE;
    a->choice = 0;
    a->events = 0;
    a->step = 0;
    a->allowed = 0;
    a->tokens_sent = 0;
    err = NULL;
    json_object *v;
    long n;
    int r;
    if (chat) {
        v = get(o, "messages");
        if (!v || !json_object_is_type(v, json_type_array))
            err = "'messages' is required and must be a list of messages";
    } else {
        v = get(o, "prompt");
        if (!v || !(json_object_is_type(v, json_type_string) ||
                    json_object_is_type(v, json_type_array)))
            err = "'prompt' is required and must be a string or a list";
    }
    a->prompt_tokens = count_prompt_tokens(text_len(v));
    if (!err && (v = get(o, "stream"))) {
        if (!json_object_is_type(v, json_type_boolean))
            err = "'stream' must be a boolean";
        else
            a->stream = json_object_get_boolean(v);
    }
    if (!err && a->stream && (v = get(o, "stream_options"))) {
        json_object *iu = json_object_is_type(v, json_type_object) ? get(v, "include_usage") : NULL;
        a->include_usage = iu && json_object_get_boolean(iu);
    }
    if (!err) {
        r = get_int(o, "max_tokens", 1, 1000000000L, &n);
        if (r == 1 && chat)
            r = get_int(o, "max_completion_tokens", 1, 1000000000L, &n);
        if (r < 0)
            err = "max_tokens must be an integer between 1 and 1000000000";
        else if (r == 0) {
            a->tokens = n;
            a->finish_stop = 0;
        }
    }
    if (!err && (r = get_int(o, "n", 1, 128, &n)) <= 0) {
        if (r < 0) err = "n must be an integer between 1 and 128";
        else a->n = (int)n;
    }
    if (!err && (v = get(o, "mock_fault")) &&
        (!json_object_is_type(v, json_type_string) ||
         parse_fault(json_object_get_string(v), &a->fault) != 0))
        err = "mock_fault must be none|500|400|cut:K|stall|slow-headers:MS";
    if (!err && (v = get(o, "mock_chunking")) &&
        (!json_object_is_type(v, json_type_string) ||
         parse_chunking(json_object_get_string(v), &a->chunking) != 0))
        err = "mock_chunking must be normal|split|coalesce";
    if (!err && (r = get_int(o, "mock_delay_us", 0, 60000000L, &n)) <= 0) {
        if (r < 0) err = "mock_delay_us must be an integer between 0 and 60000000";
        else a->delay_us = n;
    }
    if (!err && !a->stream && a->tokens * a->n > MAX_NONSTREAM_TOKENS)
        err = "mock-vllm builds non-streaming answers whole: n * max_tokens must be <= 2000000";
    if (err) {
        json_object_put(o);
        send_error(c, 400, err);
        return;
    }
    if (a->fault.kind == FAULT_500 || a->fault.kind == FAULT_400) {
        json_object_put(o);
        if (a->fault.kind == FAULT_500)
            send_error(c, 500, "mock-vllm injected fault: internal server error");
        else
            send_error(c, 400, "mock-vllm injected fault: bad request");
        return;
    }
    make_id(a, c, o, chat);
    buf_reset(&a->model);
    v = get(o, "model");
    const char *model = v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                        : g_cfg.model;
    if (buf_json_str(&a->model, model, strlen(model)) != 0)
        abort();
    json_object_put(o);
    if (a->stream) {
        buf_reset(&a->pre);
        PUTS(&a->pre, "data: {\"id\":\"");
        put(&a->pre, a->idhex.data, a->idhex.len);
        buf_printf(&a->pre, "\",\"object\":\"%s\",\"created\":%ld,\"model\":",
                   chat ? "chat.completion.chunk" : "text_completion", (long)time(NULL));
        put(&a->pre, a->model.data, a->model.len);
        PUTS(&a->pre, ",\"choices\":[");
        buf_reset(&a->usage);
        buf_printf(&a->usage, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld,"
                              "\"completion_tokens\":%ld}}\n\n",
                   a->prompt_tokens, a->prompt_tokens + a->tokens * a->n, a->tokens * a->n);
    }
    a->active = 1;
    c->counted = 1;
    g_stats.active++;
    if (a->fault.kind == FAULT_SLOW_HEADERS && a->fault.arg > 0) {
        a->phase = PH_WAIT;
        uv_timer_start(&c->timer, on_timer, (uint64_t)a->fault.arg, 0);
        return;
    }
    answer_begin(c);
}

/* ---------------------------------------------------------------- other vLLM routes */

static void put_id(buf_t *b, const char *prefix)
{
    char hx[33];
    random_hex32(hx);
    buf_printf(b, "\"id\":\"%s%s\"", prefix, hx);
}

static void put_model(buf_t *b, json_object *o)
{
    json_object *v = get(o, "model");
    const char *m = v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                    : g_cfg.model;
    PUTS(b, "\"model\":");
    if (buf_json_str(b, m, strlen(m)) != 0)
        abort();
}

/* number of items of a string-or-list field (a string counts as one) */
static size_t items(json_object *v)
{
    if (!v) return 0;
    return json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 1;
}

static double score_of(size_t i) { return 0.9 / (double)(i + 1); }

/* Python's float repr (what vLLM's JSON has): shortest text that reads back the same value,
 * always with a '.' or an exponent. */
static void put_float(buf_t *b, double x)
{
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, x);
        if (strtod(t, NULL) == x)
            break;
    }
    put(b, t, strlen(t));
    if (!strpbrk(t, ".eninf"))
        PUTS(b, ".0");
}

static void aux_route(struct conn *c, const char *path)
{
    const char *err;
    json_object *o = parse_body(c, &err);
    if (!o) {
        send_error(c, 400, err);
        return;
    }
    buf_t b = BUF_INIT;
    long now = (long)time(NULL);
    if (strcmp(path, "/v1/embeddings") == 0) {
        json_object *in = get(o, "input"), *ef = get(o, "encoding_format");
        size_t k = items(in);
        long pt = count_prompt_tokens(text_len(in));
        /* vLLM: encoding_format "base64" answers each embedding as the base64 of its
         * little-endian float32 values, a string */
        int b64 = ef && json_object_is_type(ef, json_type_string) &&
                  strcmp(json_object_get_string(ef), "base64") == 0;
        PUTS(&b, "{");
        put_id(&b, "embd-");
        buf_printf(&b, ",\"object\":\"list\",\"created\":%ld,", now);
        put_model(&b, o);
        PUTS(&b, ",\"data\":[");
        for (size_t i = 0; i < k; i++) {
            buf_printf(&b, "%s{\"index\":%zu,\"object\":\"embedding\",\"embedding\":%s", i ? "," : "",
                       i, b64 ? "\"" : "[");
            uint8_t raw[8 * 4];
            for (int d = 0; d < 8; d++) {
                double x = (double)((int)((i * 31 + (size_t)d * 17) % 200) - 100) / 100.0;
                if (b64) {
                    float f = (float)x;
                    memcpy(raw + 4 * d, &f, 4); /* x86/arm: little-endian */
                    continue;
                }
                if (d)
                    PUTS(&b, ",");
                put_float(&b, x);
            }
            if (b64) {
                char t[48]; /* b64_encoded_len(32) = 44, + NUL */
                b64_encode(t, raw, sizeof raw);
                put(&b, t, strlen(t));
            }
            put(&b, b64 ? "\"}" : "]}", 2);
        }
        buf_printf(&b, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld,"
                       "\"completion_tokens\":0,\"prompt_tokens_details\":null}}", pt, pt);
    } else if (strcmp(path, "/tokenize") == 0) {
        json_object *in = get(o, "prompt");
        if (!in) in = get(o, "messages");
        long cnt = count_prompt_tokens(text_len(in));
        buf_printf(&b, "{\"count\":%ld,\"max_model_len\":32768,\"tokens\":[", cnt);
        for (long i = 0; i < cnt; i++)
            buf_printf(&b, "%s%ld", i ? "," : "", 1000 + i % 5000);
        PUTS(&b, "],\"token_strs\":null}");
    } else if (strcmp(path, "/detokenize") == 0) {
        json_object *t = get(o, "tokens");
        buf_t txt = BUF_INIT;
        size_t k = t && json_object_is_type(t, json_type_array) ? json_object_array_length(t) : 0;
        for (size_t i = 0; i < k; i++) {
            int64_t id = json_object_get_int64(json_object_array_get_idx(t, i));
            const char *w = words[(size_t)(id < 0 ? -id : id) % NWORDS];
            put(&txt, w, strlen(w));
        }
        PUTS(&b, "{\"prompt\":");
        if (buf_json_str(&b, txt.data ? txt.data : "", txt.len) != 0)
            abort();
        PUTS(&b, "}");
        buf_free(&txt);
    } else if (strstr(path, "rerank")) {
        json_object *docs = get(o, "documents");
        size_t k = items(docs);
        long pt = count_prompt_tokens(text_len(get(o, "query")) + text_len(docs));
        PUTS(&b, "{");
        put_id(&b, "rerank-");
        PUTS(&b, ",");
        put_model(&b, o);
        buf_printf(&b, ",\"usage\":{\"total_tokens\":%ld},\"results\":[", pt);
        for (size_t i = 0; i < k; i++) {
            json_object *d = json_object_is_type(docs, json_type_array)
                                 ? json_object_array_get_idx(docs, i) : docs;
            json_object *dt = d && json_object_is_type(d, json_type_object) ? get(d, "text") : d;
            /* a document is a string or {"text": ...} (vLLM answers the text either way) */
            const char *s = dt && json_object_is_type(dt, json_type_string) ? json_object_get_string(dt) : "";
            buf_printf(&b, "%s{\"index\":%zu,\"document\":{\"text\":", i ? "," : "", i);
            if (buf_json_str(&b, s, strlen(s)) != 0)
                abort();
            PUTS(&b, "},\"relevance_score\":");
            put_float(&b, score_of(i));
            PUTS(&b, "}");
        }
        PUTS(&b, "]}");
    } else { /* score */
        json_object *t2 = get(o, "text_2");
        size_t k = items(t2);
        long pt = count_prompt_tokens(text_len(get(o, "text_1")) + text_len(t2));
        PUTS(&b, "{");
        put_id(&b, "score-");
        buf_printf(&b, ",\"object\":\"list\",\"created\":%ld,", now);
        put_model(&b, o);
        PUTS(&b, ",\"data\":[");
        for (size_t i = 0; i < k; i++) {
            buf_printf(&b, "%s{\"index\":%zu,\"object\":\"score\",\"score\":", i ? "," : "", i);
            put_float(&b, score_of(i));
            PUTS(&b, "}");
        }
        buf_printf(&b, "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld,"
                       "\"completion_tokens\":0,\"prompt_tokens_details\":null}}", pt, pt);
    }
    json_object_put(o);
    send_buf(c, 200, &b);
}

static void send_models(struct conn *c)
{
    buf_t b = BUF_INIT;
    buf_t m = BUF_INIT;
    char hx[33];
    long now = (long)time(NULL);
    if (buf_json_str(&m, g_cfg.model, strlen(g_cfg.model)) != 0)
        abort();
    random_hex32(hx);
    buf_printf(&b, "{\"object\":\"list\",\"data\":[{\"id\":%s,\"object\":\"model\",\"created\":%ld,"
                   "\"owned_by\":\"vllm\",\"root\":%s,\"parent\":null,\"max_model_len\":32768,"
                   "\"permission\":[{\"id\":\"modelperm-%s\",\"object\":\"model_permission\","
                   "\"created\":%ld,\"allow_create_engine\":false,\"allow_sampling\":true,"
                   "\"allow_logprobs\":true,\"allow_search_indices\":false,\"allow_view\":true,"
                   "\"allow_fine_tuning\":false,\"organization\":\"*\",\"group\":null,"
                   "\"is_blocking\":false}]}]}",
               m.data, now, m.data, hx, now);
    buf_free(&m);
    send_buf(c, 200, &b);
}

static void send_metrics(struct conn *c)
{
    buf_t b = BUF_INIT;
    buf_printf(&b,
               "# HELP vllm:num_requests_running Number of requests currently running.\n"
               "# TYPE vllm:num_requests_running gauge\n"
               "vllm:num_requests_running{model_name=\"%s\"} %llu\n"
               "# HELP vllm:request_success_total Count of successfully processed requests.\n"
               "# TYPE vllm:request_success_total counter\n"
               "vllm:request_success_total{model_name=\"%s\"} %llu\n",
               g_cfg.model, (unsigned long long)g_stats.active, g_cfg.model,
               (unsigned long long)g_stats.completed);
    send_simple(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    buf_free(&b);
}

static void send_stats(struct conn *c)
{
    char body[200];
    int n = snprintf(body, sizeof body,
                     "{\"requests\":%llu,\"completed\":%llu,\"cancelled\":%llu,\"active\":%llu}",
                     (unsigned long long)g_stats.requests, (unsigned long long)g_stats.completed,
                     (unsigned long long)g_stats.cancelled, (unsigned long long)g_stats.active);
    send_simple(c, 200, "application/json", body, (size_t)n);
}

/* ---------------------------------------------------------------- routing */

static const char *const post_routes[] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize",
    "/v1/rerank", "/rerank", "/v1/score", "/score", "/v1/images/generations", "/v1/images/edits",
    "/v1/audio/transcriptions",
};
static const char *const get_routes[] = {"/v1/models", "/metrics", "/health"};

static int in_list(const char *p, const char *const *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p, l[i]) == 0)
            return 1;
    return 0;
}

void answer_request(struct conn *c)
{
    char path[512];
    const char *u = c->url.data ? c->url.data : "";
    const char *q = memchr(u, '?', c->url.len);
    size_t pl = q ? (size_t)(q - u) : c->url.len;
    if (pl >= sizeof path)
        pl = sizeof path - 1; /* long paths are 404 anyway */
    memcpy(path, u, pl);
    path[pl] = '\0';
    const char *method = llhttp_method_name((llhttp_method_t)c->method);
    int is_get = c->method == HTTP_GET, is_post = c->method == HTTP_POST;

    if (strncmp(path, "/mock/", 6) == 0) {
        if (strcmp(path, "/mock/stats") == 0 && is_get)
            send_stats(c);
        else if (strcmp(path, "/mock/last") == 0 && is_get)
            send_last(c);
        else if (strcmp(path, "/mock/reset") == 0 && is_post) {
            uint64_t active = g_stats.active;
            memset(&g_stats, 0, sizeof g_stats);
            g_stats.active = active;
            send_simple(c, 200, "application/json", "{}", 2);
        } else
            send_detail(c, 404, "Not Found");
        return;
    }
    g_stats.requests++;
    record_last(c, method);
    int post = in_list(path, post_routes, sizeof post_routes / sizeof *post_routes);
    int getr = in_list(path, get_routes, sizeof get_routes / sizeof *get_routes);
    if ((post && !is_post) || (getr && !is_get)) {
        send_detail(c, 405, "Method Not Allowed");
    } else if (strcmp(path, "/v1/chat/completions") == 0) {
        completion(c, 1);
    } else if (strcmp(path, "/v1/completions") == 0) {
        completion(c, 0);
    } else if (post && media_route(c, path)) {
        /* answered */
    } else if (post) {
        aux_route(c, path);
    } else if (strcmp(path, "/v1/models") == 0) {
        send_models(c);
    } else if (strcmp(path, "/metrics") == 0) {
        send_metrics(c);
    } else if (strcmp(path, "/health") == 0) {
        send_simple(c, 200, "application/json", "", 0);
    } else {
        send_detail(c, 404, "Not Found");
    }
}
