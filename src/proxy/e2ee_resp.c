/* The response side of end-to-end encryption (proxy/e2ee.h): the engine's answer encrypted per
 * the format, a JSON answer once complete, an event stream line by line. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

#define RESP_JSON_MAX (64u << 20) /* a non-streamed answer, bytes */
#define SSE_LINE_MAX (8u << 20)   /* one event line, bytes */

const char *e2ee_resp_headers(const e2ee_sess_t *s) { return s->hdrs; }

void e2ee_resp_begin(e2ee_sess_t *s, int sse)
{
    s->sse = sse;
    s->failed = 0;
    e2ee_wipe_buf(&s->in);
}

void e2ee_sess_free(e2ee_sess_t *s)
{
    if (!s)
        return;
    e2ee_wipe_buf(&s->in);
    e2ee_key_wipe(&s->key);
    sodium_memzero(s, sizeof *s);
    free(s);
}

/* Replaces the string member `field` of obj with its ciphertext (hex), sealed with the
 * request's key (Dstack: one ephemeral key per request, a fresh nonce per field, §5.1). */
static int seal_member(e2ee_sess_t *s, json_object *obj, const char *field, json_object *resp,
                       size_t choice)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(obj, field, &v) || !json_object_is_type(v, json_type_string))
        return 0;
    if (!s->key_ready) {
        if (e2ee_key_derive_send(&s->key, s->cipher, s->client, s->client_n, NULL) != E2EE_OK)
            return -1;
        s->key_ready = 1;
    }
    char aad[1024];
    size_t aad_n = 0;
    if (s->format == E2EE_F_DSTACK_V2) {
        size_t mn, in;
        const char *m = e2ee_json_str(resp, "model", &mn);
        char *mc = strndup(m, mn);
        const char *id = e2ee_json_str(resp, "id", &in);
        int rc = mc ? e2ee_aad_dstack_resp(aad, sizeof aad, &aad_n, s->algo, mc, mn, id, in, choice,
                                           field, s->nonce, s->nonce_n, s->ts)
                    : E2EE_ERR_INTERNAL;
        free(mc);
        if (rc != E2EE_OK)
            return -1;
    }
    const char *pt = json_object_get_string(v);
    size_t pn = (size_t)json_object_get_string_len(v);
    size_t cap = e2ee_hex_field_len(s->cipher, pn) + 1, hn = 0;
    char *hex = malloc(cap);
    if (!hex)
        return -1;
    int rc = e2ee_seal_hex(&s->key, aad_n ? (const uint8_t *)aad : NULL, aad_n, (const uint8_t *)pt,
                           pn, hex, cap, &hn);
    json_object *nv = rc == E2EE_OK ? json_object_new_string_len(hex, (int)hn) : NULL;
    free(hex);
    if (!nv)
        return -1;
    sodium_memzero((char *)(uintptr_t)pt, pn);
    return json_object_object_add(obj, field, nv);
}

/* The Dstack fields (§5.2) of every choice: message.{content,reasoning_content} (an empty
 * string is encrypted too) or, streamed, delta.{content,reasoning_content} (an empty content
 * is dropped). */
static int seal_choices(e2ee_sess_t *s, json_object *resp)
{
    json_object *choices = NULL;
    if (!json_object_is_type(resp, json_type_object) ||
        !json_object_object_get_ex(resp, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array))
        return 0;
    const char *part = s->sse ? "delta" : "message";
    for (size_t i = 0; i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i), *m = NULL, *c = NULL;
        if (!json_object_is_type(ch, json_type_object) ||
            !json_object_object_get_ex(ch, part, &m) || !json_object_is_type(m, json_type_object))
            continue;
        if (s->sse && json_object_object_get_ex(m, "content", &c) &&
            json_object_is_type(c, json_type_string) && json_object_get_string_len(c) == 0)
            json_object_object_del(m, "content");
        if (seal_member(s, m, "content", resp, i) != 0 ||
            seal_member(s, m, "reasoning_content", resp, i) != 0)
            return -1;
    }
    return 0;
}

/* Parses, encrypts and emits one JSON document (prefix "data: " for an event). */
static int seal_emit(e2ee_sess_t *s, const char *p, size_t n, const char *prefix,
                     e2ee_emit_fn *emit, void *ud)
{
    json_object *o = e2ee_json_parse(p, n);
    if (!o)
        return -1;
    buf_t out = BUF_INIT;
    int rc =
        seal_choices(s, o) == 0 && buf_puts(&out, prefix) == 0 && e2ee_json_append(&out, o) == 0
            ? 0
            : -1;
    e2ee_json_wipe_put(o);
    if (rc == 0)
        emit(ud, out.data, out.len);
    e2ee_wipe_buf(&out);
    return rc;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* One complete line (with its ending): a `data:` line that carries JSON is encrypted and
 * re-serialised as `data: <json>` + the line's own ending; every other line (the blank line
 * between events, comments, `data: [DONE]`) goes out as it came. */
static int sse_line(e2ee_sess_t *s, const char *p, size_t n, e2ee_emit_fn *emit, void *ud)
{
    size_t body = n;
    while (body && (p[body - 1] == '\n' || p[body - 1] == '\r'))
        body--;
    if (body < 5 || memcmp(p, "data:", 5) != 0) {
        emit(ud, p, n);
        return 0;
    }
    size_t v = 5;
    while (v < body && is_space(p[v]))
        v++;
    size_t vn = body - v;
    if (vn == 6 && memcmp(p + v, "[DONE]", 6) == 0) {
        emit(ud, p, n);
        return 0;
    }
    if (seal_emit(s, p + v, vn, "data: ", emit, ud) != 0)
        return -1;
    emit(ud, p + body, n - body);
    return 0;
}

int e2ee_resp_feed(e2ee_sess_t *s, const char *p, size_t n, e2ee_emit_fn *emit, void *ud)
{
    if (s->failed)
        return -1;
    if (!s->sse) {
        if (s->in.len + n > RESP_JSON_MAX || buf_append(&s->in, p, n) != 0)
            return s->failed = 1, -1;
        return 0;
    }
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (s->in.len + take > SSE_LINE_MAX)
            return s->failed = 1, -1;
        if (!nl) {
            if (buf_append(&s->in, p, take) != 0)
                return s->failed = 1, -1;
        } else if (s->in.len == 0) {
            if (sse_line(s, p, take, emit, ud) != 0)
                return s->failed = 1, -1;
        } else {
            if (buf_append(&s->in, p, take) != 0 ||
                sse_line(s, s->in.data, s->in.len, emit, ud) != 0)
                return s->failed = 1, -1;
            sodium_memzero(s->in.data, s->in.len);
            buf_reset(&s->in);
        }
        p += take;
        n -= take;
    }
    return 0;
}

int e2ee_resp_finish(e2ee_sess_t *s, e2ee_emit_fn *emit, void *ud)
{
    if (s->failed)
        return -1;
    int rc = 0;
    if (!s->sse)
        rc = seal_emit(s, s->in.data ? s->in.data : "", s->in.len, "", emit, ud);
    /* a stream's unfinished last line is dropped: a cut event is never sent in clear */
    e2ee_wipe_buf(&s->in);
    if (rc != 0)
        s->failed = 1;
    return rc;
}
