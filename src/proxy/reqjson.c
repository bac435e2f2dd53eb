/* Strict single-pass JSON scanner for completion request bodies. Recursive descent bounded
 * by REQJSON_MAX_DEPTH; each value reports its type and byte span to its container, which is
 * all the caller-visible facts need. The tool_calls rewrite (and the cache_salt one) is produced
 * on the fly by copying the bytes between removed spans, so it costs nothing when nothing is
 * removed. */
#include "proxy/reqjson.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/hex.h"

enum jtype { J_OBJ, J_ARR, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL };

/* What a container means to the request: only these positions carry facts we report. */
enum role { R_OTHER, R_TOP, R_MESSAGES, R_MESSAGE, R_SOPTS };

typedef struct val {
    int type;
    size_t start;   /* first byte of the value */
    size_t end;     /* one past its last byte */
    size_t nelem;   /* arrays: element count */
    int escaped;    /* strings: contains a backslash escape */
} val_t;

typedef struct scan {
    const unsigned char *p;
    size_t len;
    size_t pos;
    const char *emsg;
    size_t epos;
    reqjson_t *out;
    int stream_bad;
    int semantic;   /* the error is valid JSON we refuse, not a syntax error */
    buf_t *rw;
    size_t copied;  /* body bytes before this offset are already in rw (or removed) */
    int enomem;
    const char *salt; /* reqjson_opts_t.cache_salt */
} scan_t;

static int fail_at(scan_t *s, size_t pos, const char *msg)
{
    if (!s->emsg) {
        s->emsg = msg;
        s->epos = pos;
    }
    return -1;
}

static void skip_ws(scan_t *s)
{
    while (s->pos < s->len) {
        unsigned char c = s->p[s->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        s->pos++;
    }
}

/* Reads 4 hex digits at p[at]; -1 when fewer than 4 or not hex. */
static long hex4(const scan_t *s, size_t at)
{
    if (s->len - at < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_digit(s->p[at + (size_t)i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Length of the valid UTF-8 sequence starting at p[at] (a byte >= 0x80), or 0. */
static size_t utf8_seq(const scan_t *s, size_t at)
{
    const unsigned char *p = s->p + at;
    size_t avail = s->len - at;
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;   /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;   /* <= U+10FFFF */
    } else
        return 0;
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

/* Bytes that end the fast path inside a string: '"', '\\', controls, non-ASCII. */
static inline int str_special(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
}

static int parse_string(scan_t *s, val_t *v)
{
    v->type = J_STR;
    v->start = s->pos;
    v->escaped = 0;
    s->pos++;   /* opening quote */
    for (;;) {
        while (s->pos < s->len && !str_special(s->p[s->pos]))
            s->pos++;
        if (s->pos >= s->len)
            return fail_at(s, s->len, "unterminated string");
        unsigned char c = s->p[s->pos];
        if (c == '"') {
            s->pos++;
            v->end = s->pos;
            return 0;
        }
        if (c < 0x20)
            return fail_at(s, s->pos, "control character in string");
        if (c >= 0x80) {
            size_t n = utf8_seq(s, s->pos);
            if (n == 0)
                return fail_at(s, s->pos, "invalid UTF-8 in string");
            s->pos += n;
            continue;
        }
        /* backslash */
        v->escaped = 1;
        size_t at = s->pos;
        if (s->len - at < 2)
            return fail_at(s, s->len, "unterminated string");
        unsigned char e = s->p[at + 1];
        if (e != 'u') {
            if (!strchr("\"\\/bfnrt", e) || e == 0)
                return fail_at(s, at, "invalid escape in string");
            s->pos += 2;
            continue;
        }
        long cp = hex4(s, at + 2);
        if (cp < 0)
            return fail_at(s, at, "invalid \\u escape in string");
        s->pos = at + 6;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return fail_at(s, at, "lone surrogate in \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            long lo = -1;
            if (s->len - s->pos >= 6 && s->p[s->pos] == '\\' && s->p[s->pos + 1] == 'u')
                lo = hex4(s, s->pos + 2);
            if (lo < 0xdc00 || lo > 0xdfff)
                return fail_at(s, at, "lone surrogate in \\u escape");
            s->pos += 6;
        }
    }
}

/* 1 when the string value v (a key) decodes to the ASCII word w. */
static int key_is(const scan_t *s, const val_t *v, const char *w)
{
    size_t wl = strlen(w);
    const unsigned char *p = s->p + v->start + 1;
    size_t n = v->end - v->start - 2;
    if (!v->escaped)
        return n == wl && memcmp(p, w, wl) == 0;
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '\\') {
            unsigned char e = p[i + 1];   /* validated: escapes are complete */
            if (e == 'u') {
                long cp = hex4(s, v->start + 1 + i + 2);
                if (cp < 0 || cp >= 0x80)
                    return 0;
                c = (unsigned char)cp;
                i += 6;
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                c = (unsigned char)to[strchr(from, e) - from];
                i += 2;
            }
        } else {
            i++;
        }
        if (k >= wl || (unsigned char)w[k] != c)
            return 0;
        k++;
    }
    return k == wl;
}

static int parse_number(scan_t *s, val_t *v)
{
    v->type = J_NUM;
    v->start = s->pos;
    const unsigned char *p = s->p;
    size_t i = s->pos, n = s->len;
    if (p[i] == '-')
        i++;
    if (i >= n || p[i] < '0' || p[i] > '9')
        return fail_at(s, i, "invalid number");
    if (p[i] == '0') {
        i++;
        if (i < n && p[i] >= '0' && p[i] <= '9')
            return fail_at(s, i - 1, "leading zeros are not allowed");
    } else {
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < n && p[i] == '.') {
        i++;
        if (i >= n || p[i] < '0' || p[i] > '9')
            return fail_at(s, i, "invalid number");
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= n || p[i] < '0' || p[i] > '9')
            return fail_at(s, i, "invalid number");
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    s->pos = i;
    v->end = i;
    return 0;
}

static int parse_literal(scan_t *s, val_t *v, const char *word, int type)
{
    size_t wl = strlen(word);
    v->type = type;
    v->start = s->pos;
    if (s->len - s->pos < wl || memcmp(s->p + s->pos, word, wl) != 0)
        return fail_at(s, s->pos, "unexpected character");
    s->pos += wl;
    v->end = s->pos;
    return 0;
}

/* Removes body[from..to) from the forwarded body. Spans arrive in increasing order. */
static void remove_span(scan_t *s, size_t from, size_t to)
{
    if (!s->rw)
        return;
    if (buf_append(s->rw, s->p + s->copied, from - s->copied) != 0)
        s->enomem = 1;
    s->copied = to;
}

/* Writes the injected cache_salt member before body[at] (the top-level object's '}'). */
static void insert_salt(scan_t *s, size_t at, int after_member)
{
    if (!s->rw)
        return;
    if (buf_append(s->rw, s->p + s->copied, at - s->copied) != 0 ||
        buf_puts(s->rw, after_member ? ",\"cache_salt\":\"" : "\"cache_salt\":\"") != 0 ||
        buf_puts(s->rw, s->salt) != 0 || buf_puts(s->rw, "\"") != 0)
        s->enomem = 1;
    s->copied = at;
    s->out->salt_injected = 1;
}

static int parse_value(scan_t *s, int depth, int role, val_t *v);

enum key_kind {
    K_OTHER, K_STREAM, K_MODEL, K_MESSAGES, K_SOPTS, K_TOOL_CALLS, K_INCLUDE_USAGE, K_CACHE_SALT
};

static int classify_key(const scan_t *s, int role, const val_t *key)
{
    switch (role) {
    case R_TOP:
        if (key_is(s, key, "stream"))
            return K_STREAM;
        if (key_is(s, key, "model"))
            return K_MODEL;
        if (key_is(s, key, "messages"))
            return K_MESSAGES;
        if (key_is(s, key, "stream_options"))
            return K_SOPTS;
        if (s->salt && key_is(s, key, "cache_salt"))
            return K_CACHE_SALT;
        return K_OTHER;
    case R_MESSAGE:
        return key_is(s, key, "tool_calls") ? K_TOOL_CALLS : K_OTHER;
    case R_SOPTS:
        return key_is(s, key, "include_usage") ? K_INCLUDE_USAGE : K_OTHER;
    default:
        return K_OTHER;
    }
}

static void record_member(scan_t *s, int kind, const val_t *v)
{
    reqjson_t *o = s->out;
    switch (kind) {
    case K_STREAM:
        o->has_stream = 1;
        s->stream_bad = v->type != J_TRUE && v->type != J_FALSE;
        o->stream = v->type == J_TRUE;
        break;
    case K_MODEL:
        o->has_model = v->type == J_STR;
        o->model_off = o->has_model ? v->start + 1 : 0;
        o->model_len = o->has_model ? v->end - v->start - 2 : 0;
        o->model_escaped = o->has_model && v->escaped;
        break;
    case K_SOPTS:
        if (v->type != J_OBJ)
            o->include_usage = 0;
        break;
    case K_INCLUDE_USAGE:
        o->include_usage = v->type == J_TRUE;
        break;
    default:
        break;
    }
}

static int parse_object(scan_t *s, int depth, int role, val_t *v)
{
    v->type = J_OBJ;
    v->start = s->pos;
    if (depth > REQJSON_MAX_DEPTH)
        return fail_at(s, s->pos, "nesting too deep");
    if (role == R_SOPTS)
        s->out->include_usage = 0;   /* a later stream_options replaces an earlier one */
    s->pos++;
    skip_ws(s);
    if (s->pos < s->len && s->p[s->pos] == '}') {
        if (role == R_TOP && s->salt)
            insert_salt(s, s->pos, 0);
        s->pos++;
        v->end = s->pos;
        return 0;
    }
    int n_tool_calls = 0;
    int kept_any = 0;         /* a member before this one stays in the output */
    int pending = 0;          /* a removed member still needs its following comma */
    size_t pending_from = 0, pending_to = 0, last_comma = 0;
    for (;;) {
        if (s->pos >= s->len)
            return fail_at(s, s->len, "unexpected end of input");
        if (s->p[s->pos] != '"')
            return fail_at(s, s->pos, "expected string key");
        val_t key, val;
        if (parse_string(s, &key) != 0)
            return -1;
        skip_ws(s);
        if (s->pos >= s->len)
            return fail_at(s, s->len, "unexpected end of input");
        if (s->p[s->pos] != ':')
            return fail_at(s, s->pos, "expected ':'");
        s->pos++;
        int kind = classify_key(s, role, &key);
        /* Last-wins parsers would see a different tool_calls once an empty one is cut out
         * of a duplicated pair, so a message may carry the key only once. */
        if (kind == K_TOOL_CALLS && ++n_tool_calls > 1) {
            s->semantic = 1;
            return fail_at(s, key.start, "duplicate \"tool_calls\" key in a message");
        }
        int child = kind == K_MESSAGES ? R_MESSAGES : kind == K_SOPTS ? R_SOPTS : R_OTHER;
        if (parse_value(s, depth, child, &val) != 0)
            return -1;
        record_member(s, kind, &val);
        int drop = kind == K_CACHE_SALT || (kind == K_TOOL_CALLS && val.type == J_ARR && val.nelem == 0);
        if (drop) {
            if (kind == K_CACHE_SALT)
                s->out->n_salts++;
            else
                s->out->n_stripped++;
            if (kept_any) {
                remove_span(s, last_comma, val.end);
            } else {
                pending = 1;
                pending_from = key.start;
                pending_to = val.end;
            }
        } else {
            kept_any = 1;
        }
        skip_ws(s);
        if (s->pos >= s->len)
            return fail_at(s, s->len, "unexpected end of input");
        unsigned char c = s->p[s->pos];
        if (c == ',') {
            if (pending) {
                remove_span(s, pending_from, s->pos + 1);
                pending = 0;
            }
            last_comma = s->pos;
            s->pos++;
            skip_ws(s);
            continue;
        }
        if (c != '}')
            return fail_at(s, s->pos, "expected ',' or '}'");
        if (pending)
            remove_span(s, pending_from, pending_to);
        if (role == R_TOP && s->salt)
            insert_salt(s, s->pos, kept_any);
        s->pos++;
        v->end = s->pos;
        return 0;
    }
}

static int parse_array(scan_t *s, int depth, int role, val_t *v)
{
    v->type = J_ARR;
    v->start = s->pos;
    v->nelem = 0;
    if (depth > REQJSON_MAX_DEPTH)
        return fail_at(s, s->pos, "nesting too deep");
    int child = role == R_MESSAGES ? R_MESSAGE : R_OTHER;
    s->pos++;
    skip_ws(s);
    if (s->pos < s->len && s->p[s->pos] == ']') {
        s->pos++;
        v->end = s->pos;
        return 0;
    }
    for (;;) {
        val_t e;
        if (parse_value(s, depth, child, &e) != 0)
            return -1;
        v->nelem++;
        skip_ws(s);
        if (s->pos >= s->len)
            return fail_at(s, s->len, "unexpected end of input");
        unsigned char c = s->p[s->pos];
        if (c == ',') {
            s->pos++;
            continue;
        }
        if (c != ']')
            return fail_at(s, s->pos, "expected ',' or ']'");
        s->pos++;
        v->end = s->pos;
        return 0;
    }
}

/* depth = containers enclosing this value. */
static int parse_value(scan_t *s, int depth, int role, val_t *v)
{
    skip_ws(s);
    if (s->pos >= s->len)
        return fail_at(s, s->len, "unexpected end of input");
    v->escaped = 0;
    v->nelem = 0;
    switch (s->p[s->pos]) {
    case '{':
        return parse_object(s, depth + 1, role, v);
    case '[':
        return parse_array(s, depth + 1, role, v);
    case '"':
        return parse_string(s, v);
    case 't':
        return parse_literal(s, v, "true", J_TRUE);
    case 'f':
        return parse_literal(s, v, "false", J_FALSE);
    case 'n':
        return parse_literal(s, v, "null", J_NULL);
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(s, v);
    default:
        return fail_at(s, s->pos, "unexpected character");
    }
}

static int report(char *err, size_t errlen, const char *msg)
{
    if (errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

int reqjson_inspect(const char *body, size_t len, reqjson_t *out, buf_t *rewritten,
                    char *err, size_t errlen)
{
    return reqjson_inspect_opts(body, len, NULL, out, rewritten, err, errlen);
}

int reqjson_inspect_opts(const char *body, size_t len, const reqjson_opts_t *opts, reqjson_t *out,
                         buf_t *rewritten, char *err, size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    memset(out, 0, sizeof(*out));
    scan_t s = {.p = (const unsigned char *)(body ? body : ""), .len = body ? len : 0,
                .out = out, .rw = rewritten, .salt = opts ? opts->cache_salt : NULL};
    size_t rw_len0 = rewritten ? rewritten->len : 0;
    val_t top;
    int rc = 0;
    if (s.len == 0) {
        fail_at(&s, 0, "empty body");
        rc = -1;
    } else if (parse_value(&s, 0, R_TOP, &top) != 0) {
        rc = -1;
    } else {
        skip_ws(&s);
        if (s.pos < s.len) {
            fail_at(&s, s.pos, "unexpected data after the JSON value");
            rc = -1;
        }
    }
    if (rc == 0 && s.enomem) {
        report(err, errlen, "out of memory");
        rc = REQJSON_NOMEM;
    }
    else if (rc != 0) {
        if (errlen && s.semantic)
            snprintf(err, errlen, "%s (at byte %zu)", s.emsg, s.epos);
        else if (errlen)
            snprintf(err, errlen, "invalid JSON at byte %zu: %s", s.epos, s.emsg);
    } else if (top.type != J_OBJ)
        rc = report(err, errlen, "body must be a JSON object");
    else if (s.stream_bad)
        rc = report(err, errlen, "'stream' must be a boolean");
    if (rc == 0 && (out->n_stripped || out->n_salts || out->salt_injected) && rewritten) {
        if (buf_append(rewritten, s.p + s.copied, s.len - s.copied) != 0) {
            report(err, errlen, "out of memory");
            rc = REQJSON_NOMEM;
        }
        else
            out->rewritten = 1;
    }
    if (rc != 0) {
        if (rewritten) {
            rewritten->len = rw_len0;
            if (rewritten->data)
                rewritten->data[rw_len0] = '\0';
        }
        out->rewritten = 0;
        out->salt_injected = 0;
    }
    return rc;
}
