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
    e2ee_wipe_buf(&s->plain);
    e2ee_wipe_buf(&s->line);
    buf_free(&s->hex);
    e2ee_key_wipe(&s->key);
    if (s->model) {
        sodium_memzero(s->model, s->model_n);
        free(s->model);
    }
    sodium_memzero(s, sizeof *s);
    free(s);
}

int e2ee_seal_append(e2ee_sess_t *s, const char *pt, size_t pn, const char *aad, size_t aad_n,
                     buf_t *out)
{
    e2ee_key_t fresh;
    const e2ee_key_t *k = &s->key;
    int fresh_key = s->near || s->format == E2EE_F_ACI_V2; /* §3.1, §7.2: per field */
    if (fresh_key) {
        if (e2ee_key_derive_send(&fresh, s->cipher, s->client, s->client_n, NULL) != E2EE_OK)
            return -1;
        k = &fresh;
    } else if (!s->key_ready) {
        if (e2ee_key_derive_send(&s->key, s->cipher, s->client, s->client_n, NULL) != E2EE_OK)
            return -1;
        s->key_ready = 1;
    }
    size_t cap = e2ee_hex_field_len(s->cipher, pn) + 1, hn = 0;
    int rc = buf_reserve_wiped(out, cap) == 0 &&
                     e2ee_seal_hex(k, aad_n ? (const uint8_t *)aad : NULL, aad_n,
                                   (const uint8_t *)pt, pn, out->data + out->len, cap, &hn) ==
                         E2EE_OK
                 ? 0
                 : -1;
    if (rc == 0)
        out->len += hn;
    if (fresh_key)
        e2ee_key_wipe(&fresh);
    return rc;
}

/* Seals pt[0..pn) into a new json-c string of hex (e2ee_seal_append). NULL on failure. */
static json_object *seal_new(e2ee_sess_t *s, const char *pt, size_t pn, const char *aad,
                             size_t aad_n)
{
    buf_reset(&s->hex); /* one scratch per session: no allocation per field once it has grown */
    if (e2ee_seal_append(s, pt, pn, aad, aad_n, &s->hex) != 0)
        return NULL;
    return json_object_new_string_len(s->hex.data, (int)s->hex.len);
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
        char *mc = m ? malloc(mn + 1) : NULL; /* mn bytes, NULs included */
        if (mc) {
            memcpy(mc, m, mn);
            mc[mn] = '\0';
        }
        const char *id = e2ee_json_str(resp, "id", &it, &in);
        int rc = mc && id ? e2ee_aad_dstack_resp(aad, sizeof aad, &aad_n, s->algo, mc, mn, id, in,
                                                 choice, field, s->nonce, s->nonce_n, s->ts)
                          : E2EE_ERR_INTERNAL;
        if (mc) /* a value of the answer: wiped like every other one */
            sodium_memzero(mc, mn);
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

/* ---- the routes other than chat (§3.4, §7.3): NEAR and ACI only (the Dstack fork is refused
 * there by e2ee_request), so every field gets a fresh ephemeral key ---- */

/* obj[key] sealed on a route other than chat: a string as it is, or (json) the compact JSON
 * text of whatever value is there (embeddings: an array of floats, or vLLM's base64 string;
 * score: a number). NEAR: no AAD, the empty string left as it is (§3.1); ACI: the JCS AAD of
 * path with the response's id, a present empty string sealed too. Absent or null passes; any
 * other value where a string is expected fails the answer rather than going out in clear. */
static int seal_route_field(e2ee_sess_t *s, json_object *obj, const char *key, json_object *resp,
                            const char *path, int json)
{
    json_object *v = NULL;
    if (!obj || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, key, &v) || !v)
        return 0;
    int str = json_object_is_type(v, json_type_string);
    if (!str && !json)
        return -1;
    if (str && !json && s->near && json_object_get_string_len(v) == 0)
        return 0;
    char aad[4096];
    size_t aad_n = 0;
    if (s->format == E2EE_F_ACI_V2) {
        json_object *idv = member(resp, "id", json_type_string);
        if (e2ee_aad_aci(aad, sizeof aad, &aad_n, s->cipher, s->model, s->model_n,
                         idv ? json_object_get_string(idv) : "",
                         idv ? (size_t)json_object_get_string_len(idv) : 0, path, s->nonce,
                         s->nonce_n, s->ts) != E2EE_OK)
            return -1;
    }
    buf_t text = BUF_INIT;
    const char *pt = str ? json_object_get_string(v) : NULL;
    size_t pn = str ? (size_t)json_object_get_string_len(v) : 0;
    if (json) {
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
    json_object_get(v);
    int rc = json_object_object_add(obj, key, nv);
    e2ee_json_wipe_put(v); /* the value replaced, wiped */
    return rc;
}

/* The index of entry i of choices / data / results in a field path (§7.3): its `index`
 * member when present, else its position. */
static long long entry_index(json_object *e, size_t i)
{
    json_object *ix = member(e, "index", json_type_int);
    return ix ? (long long)json_object_get_int64(ix) : (long long)i;
}

/* /v1/completions, JSON or each event: choices[i].text (`choices.{i}.text`). A choice with
 * logprobs (token strings no format encrypts) fails the answer; e2ee_request refuses the
 * requests that ask for them. */
static int seal_completions(e2ee_sess_t *s, json_object *resp)
{
    json_object *choices = member(resp, "choices", json_type_array);
    char path[64];
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i), *lp = NULL;
        if ((json_object_object_get_ex(ch, "logprobs", &lp) && lp) ||
            (json_object_object_get_ex(ch, "prompt_logprobs", &lp) && lp))
            return -1;
        snprintf(path, sizeof path, "choices.%lld.text", entry_index(ch, i));
        if (seal_route_field(s, ch, "text", resp, path, 0) != 0)
            return -1;
    }
    return 0;
}

/* /v1/embeddings (JSON only): data[i].embedding as its compact JSON text
 * (`data.{i}.embedding`); with encoding_format=base64 the value is a string, sealed as its
 * JSON text (quoted) all the same. /v1/score (NEAR): data[i].score as its JSON text. */
static int seal_data(e2ee_sess_t *s, json_object *resp, const char *key)
{
    json_object *data = member(resp, "data", json_type_array);
    char path[64];
    for (size_t i = 0; data && i < json_object_array_length(data); i++) {
        json_object *e = json_object_array_get_idx(data, i);
        snprintf(path, sizeof path, "data.%lld.%s", entry_index(e, i), key);
        if (seal_route_field(s, e, key, resp, path, 1) != 0)
            return -1;
    }
    return 0;
}

/* /v1/rerank (NEAR): results[i].document.text. */
static int seal_rerank(e2ee_sess_t *s, json_object *resp)
{
    json_object *res = member(resp, "results", json_type_array);
    for (size_t i = 0; res && i < json_object_array_length(res); i++) {
        json_object *doc = member(json_object_array_get_idx(res, i), "document", json_type_object);
        if (seal_route_field(s, doc, "text", resp, "", 0) != 0)
            return -1;
    }
    return 0;
}

/* NEAR image generations (§3.4): data[].b64_json and data[].revised_prompt (strings; null
 * passes, NEAR leaves an empty string). */
static int seal_images(e2ee_sess_t *s, json_object *resp)
{
    json_object *data = member(resp, "data", json_type_array);
    for (size_t i = 0; data && i < json_object_array_length(data); i++) {
        json_object *e = json_object_array_get_idx(data, i);
        if (seal_route_field(s, e, "b64_json", resp, "", 0) != 0 ||
            seal_route_field(s, e, "revised_prompt", resp, "", 0) != 0)
            return -1;
    }
    return 0;
}

/* The answer of a route other than chat, by the session's route. */
static int seal_route(e2ee_sess_t *s, json_object *resp)
{
    switch (s->route) {
    case E2EE_ROUTE_COMPLETIONS: return seal_completions(s, resp);
    case E2EE_ROUTE_EMBEDDINGS: return s->sse ? -1 : seal_data(s, resp, "embedding");
    case E2EE_ROUTE_SCORE: return seal_data(s, resp, "score");
    case E2EE_ROUTE_RERANK: return seal_rerank(s, resp);
    case E2EE_ROUTE_IMAGES: return s->sse ? -1 : seal_images(s, resp);
    default: return -1;
    }
}

/* The fields of every choice: message.* for a JSON answer, delta.* streamed. NEAR: §3.4.
 * The Dstack fork (§5.2): content and reasoning_content (an empty string is encrypted too;
 * streamed, an empty content is dropped); a v1 request that may come from a NEAR client
 * (ecdsa with X-Model-Pub-Key is the same bytes in both) also gets NEAR's reasoning and
 * audio.data encrypted rather than sent in clear. */
static int seal_choices(e2ee_sess_t *s, json_object *resp)
{
    if (s->route != E2EE_ROUTE_CHAT)
        return seal_route(s, resp);
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
            seal_member(s, m, "reasoning_content", resp, i, 0) != 0 ||
            seal_member(s, m, "reasoning", resp, i, 0) != 0)
            return -1;
        if (s->format == E2EE_F_V1 &&
            seal_member(s, member(m, "audio", json_type_object), "data", resp, i, 0) != 0)
            return -1;
    }
    return 0;
}

/* Carries text: not absent, null, "" or []. */
static int carries(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !v)
        return 0;
    if (json_object_is_type(v, json_type_string))
        return json_object_get_string_len(v) > 0;
    if (json_object_is_type(v, json_type_array))
        return json_object_array_length(v) > 0;
    return 1;
}

/* After sealing: 1 when the answer still carries generated text that the format did not
 * encrypt (a field the format leaves alone: the Dstack fork's tool calls and log-probabilities,
 * NEAR's without all-fields, token ids anywhere, a message in a stream). The answer then fails
 * rather than going out in clear; the request side (e2ee_req.c) refuses what asks for them. */
static int in_clear(const e2ee_sess_t *s, json_object *resp)
{
    if (carries(resp, "prompt_logprobs") || carries(resp, "prompt_token_ids"))
        return 1;
    int sealed_extra = s->near && s->all_fields; /* §3.4 */
    int sealed_audio = s->near || s->format == E2EE_F_V1 || (s->format == E2EE_F_ACI_V2 && !s->sse);
    const char *part = s->sse ? "delta" : "message", *other = s->sse ? "message" : "delta";
    json_object *choices = member(resp, "choices", json_type_array);
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i);
        if (carries(ch, "token_ids") || carries(ch, other))
            return 1;
        if (!sealed_extra && carries(ch, "logprobs"))
            return 1;
        json_object *m = member(ch, part, json_type_object);
        if (!sealed_extra && (carries(m, "tool_calls") || carries(m, "function_call") ||
                              carries(m, "refusal")))
            return 1;
        if (!sealed_audio && carries(m, "audio"))
            return 1;
    }
    return 0;
}

/* Parses, encrypts and emits one JSON document (prefix "data: " for an event). */
void e2ee_resp_set_id(e2ee_sess_t *s, const char *id)
{
    snprintf(s->answer_id, sizeof s->answer_id, "%s", id ? id : "");
    s->id_set = s->answer_id[0] != '\0';
}

const char *e2ee_resp_answer_id(const e2ee_sess_t *s) { return s->id_done ? s->answer_id : ""; }

/* e2ee_resp_set_id for a JSON answer: its own string id is kept (and recorded), else ours is
 * added. -1 when out of memory. */
static int settle_id(e2ee_sess_t *s, json_object *resp)
{
    if (s->sse || !s->id_set || !json_object_is_type(resp, json_type_object))
        return 0;
    json_object *id = NULL;
    if (json_object_object_get_ex(resp, "id", &id) && json_object_is_type(id, json_type_string)) {
        snprintf(s->answer_id, sizeof s->answer_id, "%s", json_object_get_string(id));
        s->id_done = 1;
        return 0;
    }
    if (id) /* an id that is not a string: the body keeps it, ours goes in the header only */
        return 0;
    json_object *v = json_object_new_string(s->answer_id);
    if (!v || json_object_object_add(resp, "id", v) != 0) {
        json_object_put(v);
        return -1;
    }
    s->id_done = 1;
    return 0;
}

static int seal_emit(e2ee_sess_t *s, const char *p, size_t n, const char *prefix,
                     e2ee_emit_fn *emit, void *ud)
{
    json_object *o = e2ee_json_parse(p, n);
    if (!o)
        return -1;
    buf_t out = BUF_INIT;
    int rc =
        seal_choices(s, o) == 0 && !in_clear(s, o) && settle_id(s, o) == 0 &&
                buf_append_wiped(&out, prefix, strlen(prefix)) == 0 &&
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
    /* the fast path (proxy/e2ee_event.c): the event rewritten in place, in one emit */
    buf_reset(&s->line);
    int fast = buf_append_wiped(&s->line, "data: ", 6) == 0 ? e2ee_event_fast(s, p + v, vn, &s->line)
                                                            : -1;
    if (fast == 1 && buf_append_wiped(&s->line, p + body, n - body) == 0) {
        emit(ud, s->line.data, s->line.len);
        sodium_memzero(s->line.data, s->line.len);
        return 0;
    }
    sodium_memzero(s->line.data, s->line.len);
    if (fast < 0)
        return -1;
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
