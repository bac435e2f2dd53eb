/* The response side of end-to-end encryption (proxy/e2ee.h): the engine's answer encrypted per
 * the format, a JSON answer once complete, an event stream line by line. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

#define RESP_JSON_MAX (64u << 20) /* a non-streamed answer, bytes */
#define SSE_LINE_MAX (8u << 20)   /* one event line, bytes */

const char *e2ee_resp_headers(const e2ee_sess_t *s) { return s->hdrs; }

int e2ee_resp_per_field_keys(const e2ee_sess_t *s) { return s->near || s->format == E2EE_F_ACI_V2; }

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
    buf_free(&s->hex);
    e2ee_key_wipe(&s->key);
    if (s->model) {
        sodium_memzero(s->model, s->model_n);
        free(s->model);
    }
    sodium_memzero(s, sizeof *s);
    free(s);
}

/* Seals pt[0..pn) into a new json-c string of hex: NEAR (§3.1) with a fresh ephemeral key
 * per field, the Dstack fork with the request's key (one ephemeral key per request, a fresh
 * nonce per field, §5.1). NULL on failure. */
static json_object *seal_new(e2ee_sess_t *s, const char *pt, size_t pn, const char *aad,
                             size_t aad_n)
{
    e2ee_key_t fresh;
    const e2ee_key_t *k = &s->key;
    int fresh_key = s->near || s->format == E2EE_F_ACI_V2; /* §3.1, §7.2: per field */
    if (fresh_key) {
        if (e2ee_key_derive_send(&fresh, s->cipher, s->client, s->client_n, NULL) != E2EE_OK)
            return NULL;
        k = &fresh;
    } else if (!s->key_ready) {
        if (e2ee_key_derive_send(&s->key, s->cipher, s->client, s->client_n, NULL) != E2EE_OK)
            return NULL;
        s->key_ready = 1;
    }
    size_t cap = e2ee_hex_field_len(s->cipher, pn) + 1, hn = 0;
    json_object *nv = NULL;
    buf_reset(&s->hex); /* one scratch per session: no allocation per field once it has grown */
    if (buf_reserve(&s->hex, cap) == 0 &&
        e2ee_seal_hex(k, aad_n ? (const uint8_t *)aad : NULL, aad_n, (const uint8_t *)pt, pn,
                      s->hex.data, cap, &hn) == E2EE_OK)
        nv = json_object_new_string_len(s->hex.data, (int)hn);
    if (fresh_key)
        e2ee_key_wipe(&fresh);
    return nv;
}

/* Replaces the string member `field` of obj with its ciphertext (hex). NEAR leaves an empty
 * string as it is (§3.1); the Dstack fork encrypts it too. as_json (NEAR's logprobs bytes): a
 * value that is not a string is sealed as its compact JSON text. */
static int seal_member(e2ee_sess_t *s, json_object *obj, const char *field, json_object *resp,
                       size_t choice, int as_json)
{
    json_object *v = NULL;
    if (!obj || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, field, &v) || !v)
        return 0;
    int str = json_object_is_type(v, json_type_string);
    if (!str && !as_json)
        return 0;
    if (str && s->near && json_object_get_string_len(v) == 0)
        return 0;
    char aad[1024];
    size_t aad_n = 0;
    if (s->format == E2EE_F_DSTACK_V2) {
        size_t mn, in;
        buf_t mt = BUF_INIT, it = BUF_INIT;
        const char *m = e2ee_json_str(resp, "model", &mt, &mn);
        char *mc = m ? strndup(m, mn) : NULL;
        const char *id = e2ee_json_str(resp, "id", &it, &in);
        int rc = mc && id ? e2ee_aad_dstack_resp(aad, sizeof aad, &aad_n, s->algo, mc, mn, id, in,
                                                 choice, field, s->nonce, s->nonce_n, s->ts)
                          : E2EE_ERR_INTERNAL;
        free(mc);
        e2ee_wipe_buf(&mt);
        e2ee_wipe_buf(&it);
        if (rc != E2EE_OK)
            return -1;
    }
    const char *pt;
    size_t pn;
    buf_t text = BUF_INIT; /* a value that is not a string: its JSON text */
    if (str) {
        pt = json_object_get_string(v);
        pn = (size_t)json_object_get_string_len(v);
    } else {
        if (e2ee_json_append(&text, v) != 0 || !text.data) {
            e2ee_wipe_buf(&text);
            return -1;
        }
        pt = text.data;
        pn = text.len;
    }
    json_object *nv = seal_new(s, pt, pn, aad, aad_n);
    e2ee_wipe_buf(&text);
    if (!nv)
        return -1;
    /* the value replaced (a string, or the logprobs array with its strings) is wiped */
    json_object_get(v);
    int rc = json_object_object_add(obj, field, nv);
    e2ee_json_wipe_put(v);
    return rc;
}

static json_object *member(json_object *o, const char *key, json_type t)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, t))
        return NULL;
    return v;
}

/* {arguments, name} of a function call object. */
static int seal_call(e2ee_sess_t *s, json_object *fn, json_object *resp, size_t i)
{
    return seal_member(s, fn, "arguments", resp, i, 0) || seal_member(s, fn, "name", resp, i, 0)
               ? -1
               : 0;
}

/* NEAR's fields of one message or delta (§3.4): content (a string, or each part's text),
 * reasoning_content, reasoning, audio.data; with all-fields refusal, tool_calls[].function
 * and function_call. */
static int seal_near_message(e2ee_sess_t *s, json_object *m, json_object *resp, size_t i)
{
    json_object *parts = member(m, "content", json_type_array);
    for (size_t c = 0; parts && c < json_object_array_length(parts); c++)
        if (seal_member(s, json_object_array_get_idx(parts, c), "text", resp, i, 0) != 0)
            return -1;
    if (seal_member(s, m, "content", resp, i, 0) != 0 ||
        seal_member(s, m, "reasoning_content", resp, i, 0) != 0 ||
        seal_member(s, m, "reasoning", resp, i, 0) != 0 ||
        seal_member(s, member(m, "audio", json_type_object), "data", resp, i, 0) != 0)
        return -1;
    if (!s->all_fields)
        return 0;
    if (seal_member(s, m, "refusal", resp, i, 0) != 0 ||
        seal_call(s, member(m, "function_call", json_type_object), resp, i) != 0)
        return -1;
    json_object *tcs = member(m, "tool_calls", json_type_array);
    for (size_t t = 0; tcs && t < json_object_array_length(tcs); t++)
        if (seal_call(s, member(json_object_array_get_idx(tcs, t), "function", json_type_object),
                      resp, i) != 0)
            return -1;
    return 0;
}

/* All-fields: choices[i].logprobs.{content,refusal}[] token and bytes (the bytes array as its
 * JSON text), and the same in each entry's top_logprobs[] (§3.4). */
static int seal_logprob_list(e2ee_sess_t *s, json_object *list, json_object *resp, size_t i,
                             int top)
{
    for (size_t k = 0; list && k < json_object_array_length(list); k++) {
        json_object *e = json_object_array_get_idx(list, k);
        if (seal_member(s, e, "token", resp, i, 0) != 0 ||
            (member(e, "bytes", json_type_array) && seal_member(s, e, "bytes", resp, i, 1) != 0))
            return -1;
        if (top && seal_logprob_list(s, member(e, "top_logprobs", json_type_array), resp, i, 0))
            return -1;
    }
    return 0;
}

/* ACI (§7.3): the string member key of obj sealed with the JCS AAD of path (the request's
 * model, the response's id or "", nonce, ts); null or absent passes; any other non-string
 * fails the answer rather than going out in clear. */
static int seal_aci(e2ee_sess_t *s, json_object *obj, const char *key, json_object *resp,
                    const char *path)
{
    json_object *v = NULL;
    if (!obj || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, key, &v) || !v)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    json_object *idv = NULL;
    const char *id = "";
    size_t id_n = 0;
    if (json_object_object_get_ex(resp, "id", &idv) && json_object_is_type(idv, json_type_string)) {
        id = json_object_get_string(idv);
        id_n = (size_t)json_object_get_string_len(idv);
    }
    char aad[4096];
    size_t aad_n = 0;
    if (e2ee_aad_aci(aad, sizeof aad, &aad_n, s->cipher, s->model, s->model_n, id, id_n, path,
                     s->nonce, s->nonce_n, s->ts) != E2EE_OK)
        return -1;
    const char *pt = json_object_get_string(v);
    size_t pn = (size_t)json_object_get_string_len(v);
    json_object *nv = seal_new(s, pt, pn, aad, aad_n);
    if (!nv)
        return -1;
    sodium_memzero((char *)(uintptr_t)pt, pn);
    return json_object_object_add(obj, key, nv);
}

/* ACI's fields of every choice (§7.3): buffered message.{content, reasoning,
 * reasoning_content, audio.data}; streamed delta.{content, reasoning, reasoning_content}, an
 * empty delta content dropped. The path's index is the choice's `index` member when present,
 * else its position. */
static int seal_choices_aci(e2ee_sess_t *s, json_object *resp)
{
    json_object *choices = member(resp, "choices", json_type_array);
    const char *part = s->sse ? "delta" : "message";
    char path[128];
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i), *c = NULL;
        json_object *m = member(ch, part, json_type_object), *ix = member(ch, "index", json_type_int);
        if (!m)
            continue;
        long long idx = ix ? (long long)json_object_get_int64(ix) : (long long)i;
        if (s->sse && json_object_object_get_ex(m, "content", &c) &&
            json_object_is_type(c, json_type_string) && json_object_get_string_len(c) == 0)
            json_object_object_del(m, "content");
        static const char *const fields[] = {"content", "reasoning", "reasoning_content"};
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
            snprintf(path, sizeof path, "choices.%lld.%s.%s", idx, part, fields[f]);
            if (seal_aci(s, m, fields[f], resp, path) != 0)
                return -1;
        }
        if (!s->sse) {
            snprintf(path, sizeof path, "choices.%lld.message.audio.data", idx);
            if (seal_aci(s, member(m, "audio", json_type_object), "data", resp, path) != 0)
                return -1;
        }
    }
    return 0;
}

/* The fields of every choice: message.* for a JSON answer, delta.* streamed. NEAR: §3.4.
 * The Dstack fork (§5.2): content and reasoning_content (an empty string is encrypted too;
 * streamed, an empty content is dropped); a v1 request that may come from a NEAR client
 * (ecdsa with X-Model-Pub-Key is the same bytes in both) also gets NEAR's reasoning and
 * audio.data encrypted rather than sent in clear. */
static int seal_choices(e2ee_sess_t *s, json_object *resp)
{
    if (s->format == E2EE_F_ACI_V2)
        return seal_choices_aci(s, resp);
    json_object *choices = member(resp, "choices", json_type_array);
    const char *part = s->sse ? "delta" : "message";
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i), *c = NULL;
        json_object *m = member(ch, part, json_type_object);
        if (s->near) {
            json_object *lp = member(ch, "logprobs", json_type_object);
            if ((m && seal_near_message(s, m, resp, i) != 0) ||
                (s->all_fields && lp &&
                 (seal_logprob_list(s, member(lp, "content", json_type_array), resp, i, 1) != 0 ||
                  seal_logprob_list(s, member(lp, "refusal", json_type_array), resp, i, 1) != 0)))
                return -1;
            continue;
        }
        if (!m)
            continue;
        if (s->sse && json_object_object_get_ex(m, "content", &c) &&
            json_object_is_type(c, json_type_string) && json_object_get_string_len(c) == 0)
            json_object_object_del(m, "content");
        if (seal_member(s, m, "content", resp, i, 0) != 0 ||
            seal_member(s, m, "reasoning_content", resp, i, 0) != 0)
            return -1;
        if (s->format == E2EE_F_V1 &&
            (seal_member(s, m, "reasoning", resp, i, 0) != 0 ||
             seal_member(s, member(m, "audio", json_type_object), "data", resp, i, 0) != 0))
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
        seal_choices(s, o) == 0 && buf_append_wiped(&out, prefix, strlen(prefix)) == 0 &&
                e2ee_json_append(&out, o) == 0
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
        if (s->in.len + n > RESP_JSON_MAX || buf_append_wiped(&s->in, p, n) != 0)
            return s->failed = 1, -1;
        return 0;
    }
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (s->in.len + take > SSE_LINE_MAX)
            return s->failed = 1, -1;
        if (!nl) {
            if (buf_append_wiped(&s->in, p, take) != 0)
                return s->failed = 1, -1;
        } else if (s->in.len == 0) {
            if (sse_line(s, p, take, emit, ud) != 0)
                return s->failed = 1, -1;
        } else {
            if (buf_append_wiped(&s->in, p, take) != 0 ||
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
