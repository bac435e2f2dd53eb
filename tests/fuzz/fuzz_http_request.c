/* libFuzzer target: llhttp as a strict HTTP/1.1 request parser with the limits a server
 * enforces from its callbacks (URL <= 8 KiB, <= 100 headers, <= 16 KiB of request line and
 * headers, body <= 1 MiB). Invariants: no callback after one failed, limits never exceeded,
 * Content-Length bodies deliver exactly the declared bytes, and the outcome of a one-shot
 * feed equals that of a feed split at points derived from the input. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llhttp.h"

#define MAX_URL 8192
#define MAX_HEADERS 100
#define MAX_HEAD_BYTES 16384
#define MAX_BODY (1u << 20)

struct stats {
    int stopped;              /* a callback returned an error */
    int in_message;
    unsigned messages;
    size_t url_bytes, head_bytes, nheaders, body_bytes;
    int has_length;
    uint64_t content_length;
    uint64_t digest[4];       /* FNV-1a per span kind (url, field, value, body), streamed;
                               * the *_complete callbacks mix in separators */
    uint64_t total_headers;
};

static void mix(struct stats *s, int kind, const char *p, size_t n)
{
    uint64_t h = s->digest[kind];
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    s->digest[kind] = h;
}

static void separator(struct stats *s, int kind)
{
    s->digest[kind] = (s->digest[kind] ^ 0x1ff) * 0x100000001b3ull;
}

static struct stats *st(llhttp_t *p)
{
    struct stats *s = p->data;
    if (s->stopped)
        abort();   /* llhttp must not call back after an error */
    return s;
}

static int stop(struct stats *s)
{
    s->stopped = 1;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct stats *s = st(p);
    if (s->in_message)
        abort();
    s->in_message = 1;
    s->url_bytes = s->head_bytes = s->nheaders = s->body_bytes = 0;
    s->has_length = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct stats *s = st(p);
    s->url_bytes += n;
    s->head_bytes += n;
    if (s->url_bytes > MAX_URL || s->head_bytes > MAX_HEAD_BYTES)
        return stop(s);
    mix(s, 0, at, n);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct stats *s = st(p);
    s->head_bytes += n;
    if (s->head_bytes > MAX_HEAD_BYTES)
        return stop(s);
    mix(s, 1, at, n);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct stats *s = st(p);
    if (++s->nheaders > MAX_HEADERS)
        return stop(s);
    s->total_headers++;
    separator(s, 1);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct stats *s = st(p);
    s->head_bytes += n;
    if (s->head_bytes > MAX_HEAD_BYTES)
        return stop(s);
    mix(s, 2, at, n);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct stats *s = st(p);
    if (s->nheaders > MAX_HEADERS || s->head_bytes > MAX_HEAD_BYTES || !s->in_message)
        abort();
    if (p->type != HTTP_REQUEST || p->method > HTTP_FLUSH)
        abort();
    s->has_length = (p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED);
    s->content_length = p->content_length;
    if ((p->flags & F_CONTENT_LENGTH) && (p->flags & F_CHUNKED))
        abort();   /* strict mode refuses both framings at once */
    if (s->has_length && s->content_length > MAX_BODY)
        return stop(s);   /* a server answers 413 before reading the body */
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct stats *s = st(p);
    s->body_bytes += n;
    if (s->body_bytes > MAX_BODY)
        return stop(s);
    if (s->has_length && s->body_bytes > s->content_length)
        abort();
    mix(s, 3, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct stats *s = st(p);
    if (!s->in_message)
        abort();
    if (s->has_length && s->body_bytes != s->content_length)
        abort();
    s->in_message = 0;
    s->messages++;
    separator(s, 3);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    separator(st(p), 2);
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    separator(st(p), 0);
    return 0;
}

static llhttp_settings_t settings;

static void settings_once(void)
{
    static int done;
    if (done)
        return;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_url_complete = on_url_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    done = 1;
}

static int ok_state(llhttp_errno_t e)
{
    return e == HPE_OK || e == HPE_PAUSED_UPGRADE;
}

/* Feeds data in pieces ending at the given cuts; returns the final errno. */
static llhttp_errno_t run(const char *data, size_t size, const size_t *cuts, size_t ncuts,
                          struct stats *s)
{
    llhttp_t parser;
    memset(s, 0, sizeof(*s));
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    parser.data = s;
    llhttp_errno_t e = HPE_OK;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && e == HPE_OK; i++) {
        size_t end = i < ncuts ? cuts[i] : size;
        if (end < at)
            continue;
        e = llhttp_execute(&parser, data + at, end - at);
        at = end;
    }
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) {
        /* execute errors are sticky (llhttp_finish's are not: it only reports) */
        if (llhttp_execute(&parser, "x", 1) != e)
            abort();
        if (llhttp_get_errno(&parser) != e || llhttp_get_error_reason(&parser) == NULL)
            abort();
    }
    if (e == HPE_OK)
        e = llhttp_finish(&parser);
    return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    settings_once();
    const char *p = (const char *)data;
    struct stats one, split;
    llhttp_errno_t e1 = run(p, size, NULL, 0, &one);

    size_t cuts[4];
    size_t ncuts = 0;
    if (size > 0) {
        uint32_t seed = 2166136261u;
        for (size_t i = 0; i < size && i < 16; i++)
            seed = (seed ^ data[i]) * 16777619u;
        for (; ncuts < 4; ncuts++) {
            seed = seed * 1103515245u + 12345u;
            cuts[ncuts] = (seed >> 8) % (size + 1);
        }
        for (size_t i = 1; i < ncuts; i++)   /* sort */
            for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
    }
    llhttp_errno_t e2 = run(p, size, cuts, ncuts, &split);
    if (ok_state(e1) != ok_state(e2))
        abort();
    if (ok_state(e1) && (e1 != e2 || one.messages != split.messages || memcmp(one.digest, split.digest, sizeof(one.digest)) != 0 ||
                         one.total_headers != split.total_headers))
        abort();
    return 0;
}
