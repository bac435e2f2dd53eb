/* The local verifying proxy's E2EE codec (verify/lp_e2ee.h). */
#include <json-c/json.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/hex.h"
#include "e2ee/client.h"
#include "e2ee/e2ee.h"
#include "proxy/e2ee_sess.h"
#include "verify/lp_e2ee.h"

enum lp_route { R_CHAT, R_COMPLETIONS, R_EMBEDDINGS };

struct lp_e2ee {
    const e2ee_client_format_t *f;
    e2ee_algo_t algo;
    e2ee_cipher_t cipher;
    int route;
    uint8_t secret[32]; /* ours: opens the answer */
    uint8_t server[E2EE_SECP_PUB_LEN];
    size_t server_len;
    char client_pub[E2EE_CLIENT_PUB_HEX];
    char model_pub[HEX_SIZE(65)];
    char nonce[HEX_SIZE(16)]; /* Dstack v2 */
    int64_t ts;
    e2ee_key_t send;  /* Dstack: one sending key for the request's fields (§5.1) */
    e2ee_key_t cache; /* the derived key of the last ephemeral key opened */
    char hdr[E2EE_CLIENT_HDR_MAX][E2EE_CLIENT_HDR_LEN];
    const char *hdrp[E2EE_CLIENT_HDR_MAX + 1];
    char desc[48];
    int sealed;       /* lp_e2ee_seal_request ran */
    uint8_t *scratch; /* the scan's plaintexts of one event, wiped after each use */
    size_t scratch_cap;
};

static int fail(lp_e2ee_err_t *err, int rc, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(lp_e2ee_err_t *err, int rc, const char *check, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        snprintf(err->check, sizeof err->check, "%s", check);
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int route_of(const char *path)
{
    static const char *const names[] = {"/v1/chat/completions", "/v1/completions",
                                        "/v1/embeddings"};
    size_t n = path ? strcspn(path, "?") : 0;
    for (int i = 0; i < 3; i++)
        if (n == strlen(names[i]) && memcmp(path, names[i], n) == 0)
            return i;
    return -1;
}

void lp_e2ee_free(lp_e2ee_t *e)
{
    if (!e)
        return;
    if (e->scratch) {
        sodium_memzero(e->scratch, e->scratch_cap);
        free(e->scratch);
    }
    sodium_memzero(e, sizeof *e);
    free(e);
}

const char *lp_e2ee_describe(const lp_e2ee_t *e) { return e->desc; }

/* What lp_e2ee_new would pick: the format, the algorithm (when pins are given) and the route.
 * 0, or LP_E2EE_REFUSED with *err. */
static int choose(const char *format, const lp_pins_t *pins, const char *route,
                  const e2ee_client_format_t **fp, e2ee_algo_t *ap, int *rp, lp_e2ee_err_t *err)
{
    int r = route_of(route);
    if (r < 0)
        return fail(err, LP_E2EE_REFUSED, "e2ee.route",
                    "end-to-end encryption covers /v1/chat/completions, /v1/completions and "
                    "/v1/embeddings only: the request was not sent");
    char name[32];
    const char *algo = NULL;
    if (!format || !strcmp(format, "auto"))
        snprintf(name, sizeof name, "%s", r == R_CHAT ? "dstack-v2" : "near-v2");
    else {
        size_t n = strcspn(format, ":");
        if (n >= sizeof name)
            return fail(err, LP_E2EE_REFUSED, "e2ee.format", "unknown E2EE format");
        memcpy(name, format, n);
        name[n] = '\0';
        if (format[n] == ':')
            algo = format + n + 1;
    }
    const e2ee_client_format_t *f = e2ee_client_format(name);
    if (!f || (algo && strcmp(algo, "ecdsa") && strcmp(algo, "ed25519")))
        return fail(err, LP_E2EE_REFUSED, "e2ee.format",
                    "unknown E2EE format %.40s: auto, dstack-v2, near-v2, dstack-v1 or near-v1, "
                    "optionally with :ecdsa or :ed25519",
                    format);
    if (f->family == E2EE_FAM_ACI)
        return fail(err, LP_E2EE_REFUSED, "e2ee.format",
                    "aci-v2 needs the ACI keyset, which the local proxy does not pin: use "
                    "dstack-v2 or near-v2");
    if (f->family == E2EE_FAM_DSTACK && r != R_CHAT)
        return fail(err, LP_E2EE_REFUSED, "e2ee.format",
                    "%s encrypts /v1/chat/completions only; use near-v2 (or auto) for this route: "
                    "the request was not sent",
                    f->name);
    *fp = f;
    *rp = r;
    if (!pins)
        return 0;
    *ap = algo ? (strcmp(algo, "ecdsa") ? E2EE_ALGO_ED25519 : E2EE_ALGO_ECDSA)
               : (pins->ed25519_key[0] ? E2EE_ALGO_ED25519 : E2EE_ALGO_ECDSA);
    return 0;
}

int lp_e2ee_plan(const char *format, const lp_pins_t *pins, const char *route, char *desc,
                 size_t cap, lp_e2ee_err_t *err)
{
    const e2ee_client_format_t *f = NULL;
    e2ee_algo_t a = E2EE_ALGO_ED25519;
    int r = 0;
    if (choose(format, pins, route, &f, &a, &r, err) != 0)
        return LP_E2EE_REFUSED;
    if (!pins) {
        snprintf(desc, cap, "%s", f->name);
        return LP_E2EE_OK;
    }
    const char *key = a == E2EE_ALGO_ECDSA ? pins->ecdsa_public_key : pins->ed25519_key;
    const char *an = a == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519";
    if (!key[0])
        return fail(err, LP_E2EE_REFUSED, "e2ee.key", "the verified remote has no %s key for %s",
                    an, f->name);
    snprintf(desc, cap, "%s %s", f->name, an);
    return LP_E2EE_OK;
}

int lp_e2ee_policy(const char *mode, const lp_pins_t *pins, const char *method, const char *route,
                   char *desc, size_t cap, lp_e2ee_err_t *err)
{
    int bodiless = method && (!strcmp(method, "GET") || !strcmp(method, "HEAD"));
    if ((mode && !strcmp(mode, "off")) || bodiless) {
        snprintf(desc, cap, "clear");
        return LP_E2EE_CLEAR;
    }
    int aut = !mode || !strcmp(mode, "auto");
    if (aut && (route_of(route) < 0 || (method && strcmp(method, "POST")))) {
        snprintf(desc, cap, "clear");
        return LP_E2EE_CLEAR;
    }
    lp_e2ee_err_t e;
    if (!err)
        err = &e;
    if (method && strcmp(method, "POST")) { /* a FORMAT, and a body that is not a POST's */
        fail(err, LP_E2EE_REFUSED, "e2ee.route",
             "end-to-end encryption covers POST requests only: the request was not sent");
        snprintf(desc, cap, "refused (%s)", err->check);
        return LP_E2EE_REFUSE;
    }
    if (lp_e2ee_plan(aut ? "auto" : mode, pins, route, desc, cap, err) == LP_E2EE_OK)
        return LP_E2EE_SEAL;
    if (aut && !strcmp(err->check, "e2ee.key")) {
        /* the attested report names no key to encrypt to: the remote offers no E2EE */
        snprintf(desc, cap, "clear (%s)", err->msg);
        return LP_E2EE_CLEAR;
    }
    snprintf(desc, cap, "refused (%s)", err->check);
    return LP_E2EE_REFUSE;
}

lp_e2ee_t *lp_e2ee_new(const char *format, const lp_pins_t *pins, const char *route,
                       lp_e2ee_err_t *err)
{
    const e2ee_client_format_t *f = NULL;
    e2ee_algo_t a = E2EE_ALGO_ED25519;
    int r = 0;
    if (choose(format, pins, route, &f, &a, &r, err) != 0)
        return NULL;
    if (!pins) {
        fail(err, LP_E2EE_REFUSED, "e2ee.key", "no verified remote");
        return NULL;
    }
    const char *key = a == E2EE_ALGO_ECDSA ? pins->ecdsa_public_key : pins->ed25519_key;
    lp_e2ee_t *e = calloc(1, sizeof *e);
    if (!e || sodium_init() < 0) {
        free(e);
        fail(err, LP_E2EE_REFUSED, "e2ee.internal", "out of memory or libsodium failed");
        return NULL;
    }
    e->f = f;
    e->algo = a;
    e->cipher = e2ee_client_cipher(f, a);
    e->route = r;
    const char *an = a == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519";
    if (!key[0] || strlen(key) >= sizeof e->model_pub ||
        e2ee_client_server_key(a, key, e->server, &e->server_len) != E2EE_OK) {
        fail(err, LP_E2EE_REFUSED, "e2ee.key", "the verified remote has no valid %s key for %s", an,
             f->name);
        lp_e2ee_free(e);
        return NULL;
    }
    snprintf(e->model_pub, sizeof e->model_pub, "%s", key);
    if (e2ee_client_keypair(f->family, e->cipher, e->secret, e->client_pub) != E2EE_OK) {
        fail(err, LP_E2EE_REFUSED, "e2ee.internal", "client key generation failed");
        lp_e2ee_free(e);
        return NULL;
    }
    if (f->family == E2EE_FAM_DSTACK && f->version == 2) {
        uint8_t nb[16];
        randombytes_buf(nb, sizeof nb);
        hex_encode(e->nonce, nb, sizeof nb);
        e->ts = (int64_t)time(NULL);
    }
    snprintf(e->desc, sizeof e->desc, "%s %s", f->name, an);
    return e;
}

/* ---- request ---- */

typedef struct sealer {
    lp_e2ee_t *e;
    const char *model;
    size_t model_n;
    buf_t hex;
    lp_e2ee_err_t *err;
} sealer_t;

static json_object *member(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* Carries text or a request: not absent, null, false, "", [] or 0. */
static int carries(json_object *v)
{
    if (!v)
        return 0;
    switch (json_object_get_type(v)) {
    case json_type_null: return 0;
    case json_type_boolean: return json_object_get_boolean(v);
    case json_type_string: return json_object_get_string_len(v) > 0;
    case json_type_array: return json_object_array_length(v) > 0;
    case json_type_int: return json_object_get_int64(v) != 0;
    default: return 1;
    }
}

/* Seals pt[0..n) (message m, content part c or -1: Dstack v2's request AAD) into a new json-c
 * string of hex. */
static json_object *seal_str(sealer_t *s, const char *pt, size_t n, size_t m, long c)
{
    lp_e2ee_t *e = s->e;
    char aad[1024];
    size_t aad_n = 0;
    if (e->f->family == E2EE_FAM_DSTACK && e->f->version == 2 &&
        e2ee_aad_dstack_req(aad, sizeof aad, &aad_n, e->algo, s->model, s->model_n, m, c, e->nonce,
                            strlen(e->nonce), e->ts) != E2EE_OK) {
        fail(s->err, LP_E2EE_REFUSED, "e2ee.request", "the model name is too long");
        return NULL;
    }
    e2ee_key_t fresh;
    const e2ee_key_t *k = &fresh;
    int rc;
    if (e->f->family == E2EE_FAM_DSTACK) { /* one key per request (§5.1) */
        rc = e->send.eph_len
                 ? E2EE_OK
                 : e2ee_key_derive_send(&e->send, e->cipher, e->server, e->server_len, NULL);
        k = &e->send;
    } else { /* NEAR: a fresh ephemeral key per field (§3.1) */
        rc = e2ee_key_derive_send(&fresh, e->cipher, e->server, e->server_len, NULL);
    }
    size_t cap = e2ee_hex_field_len(e->cipher, n) + 1, hn = 0;
    buf_reset(&s->hex);
    if (rc == E2EE_OK)
        rc = buf_reserve(&s->hex, cap) == 0
                 ? e2ee_seal_hex(k, aad_n ? (const uint8_t *)aad : NULL, aad_n, (const uint8_t *)pt,
                                 n, s->hex.data, cap, &hn)
                 : E2EE_ERR_INTERNAL;
    if (k == &fresh)
        e2ee_key_wipe(&fresh);
    json_object *v = rc == E2EE_OK ? json_object_new_string_len(s->hex.data, (int)hn) : NULL;
    if (!v)
        fail(s->err, LP_E2EE_REFUSED, "e2ee.internal", "a field could not be sealed (%s)",
             e2ee_err_name(rc));
    return v;
}

/* obj[key] (a string) replaced by its ciphertext. NEAR leaves "" alone (§3.1); the Dstack
 * fork's v2 refuses an empty content, so it is sealed too. */
static int seal_member(sealer_t *s, json_object *obj, const char *key, size_t m)
{
    json_object *v = member(obj, key);
    if (!v || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return fail(s->err, LP_E2EE_REFUSED, "e2ee.request", "%s is not a string", key);
    size_t n = (size_t)json_object_get_string_len(v);
    if (n == 0 && s->e->f->family == E2EE_FAM_NEAR)
        return 0;
    json_object *nv = seal_str(s, json_object_get_string(v), n, m, -1);
    if (!nv)
        return LP_E2EE_REFUSED;
    sodium_memzero((char *)(uintptr_t)json_object_get_string(v), n);
    return json_object_object_add(obj, key, nv) == 0
               ? 0
               : fail(s->err, LP_E2EE_REFUSED, "e2ee.internal", "out of memory");
}

static int refuse(lp_e2ee_err_t *err, const char *what)
{
    return fail(err, LP_E2EE_REFUSED, "e2ee.unsupported_field",
                "%s would travel in clear: not supported with end-to-end encryption; the "
                "request was not sent",
                what);
}

static int seal_chat(sealer_t *s, json_object *root)
{
    int dstack = s->e->f->family == E2EE_FAM_DSTACK;
    json_object *v;
    if (carries(member(root, "tools")) || carries(member(root, "functions")))
        return refuse(s->err, "tools (their definitions and the calls answered)");
    if (carries(member(root, "logprobs")) || carries(member(root, "top_logprobs")))
        return refuse(s->err, "logprobs (the tokens answered)");
    if ((v = member(root, "prompt_logprobs")) && !json_object_is_type(v, json_type_null))
        return refuse(s->err, "prompt_logprobs");
    if (carries(member(root, "return_token_ids")))
        return refuse(s->err, "return_token_ids");
    if (carries(member(root, "prediction")))
        return refuse(s->err, "prediction");
    json_object *msgs = member(root, "messages");
    if (!msgs || !json_object_is_type(msgs, json_type_array))
        return fail(s->err, LP_E2EE_REFUSED, "e2ee.request", "messages is not an array");
    for (size_t m = 0; m < json_object_array_length(msgs); m++) {
        json_object *msg = json_object_array_get_idx(msgs, m);
        if (!json_object_is_type(msg, json_type_object))
            return fail(s->err, LP_E2EE_REFUSED, "e2ee.request", "messages[%zu] is not an object",
                        m);
        if (carries(member(msg, "tool_calls")) || carries(member(msg, "function_call")))
            return refuse(s->err, "a message's tool_calls");
        if (carries(member(msg, "refusal")))
            return refuse(s->err, "a message's refusal");
        json_object *c = member(msg, "content"), *au = member(msg, "audio");
        if (c && json_object_is_type(c, json_type_array)) {
            /* the parts sealed whole as their JSON text: both families restore a plaintext
             * that is a JSON array (§3.4, §5.2), and nothing of the parts is left in clear */
            const char *t = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
            json_object *nv = t ? seal_str(s, t, strlen(t), m, -1) : NULL;
            if (t)
                sodium_memzero((char *)(uintptr_t)t, strlen(t));
            /* the parts are released by the replacement: their strings wiped first */
            json_object_get(c);
            int added = nv && json_object_object_add(msg, "content", nv) == 0;
            e2ee_json_wipe_put(c);
            if (!added)
                return nv ? fail(s->err, LP_E2EE_REFUSED, "e2ee.internal", "out of memory")
                          : fail(s->err, LP_E2EE_REFUSED, "e2ee.internal",
                                 "a field could not "
                                 "be sealed");
        } else if (seal_member(s, msg, "content", m) != 0) {
            return LP_E2EE_REFUSED;
        }
        if (dstack) { /* the fork decrypts content only (§5.2) */
            if (carries(member(msg, "reasoning_content")) || carries(member(msg, "reasoning")))
                return refuse(s->err, "a message's reasoning (dstack formats seal content only)");
            if (carries(member(au, "data")))
                return refuse(s->err, "a message's audio (dstack formats seal content only)");
            continue;
        }
        if (seal_member(s, msg, "reasoning_content", m) != 0 ||
            seal_member(s, msg, "reasoning", m) != 0 ||
            (au && json_object_is_type(au, json_type_object) && seal_member(s, au, "data", m)))
            return LP_E2EE_REFUSED;
    }
    return 0;
}

/* completions prompt / embeddings input: a string, or string elements (NEAR, §3.4). Token
 * ids are the text in another spelling: refused. */
static int seal_list(sealer_t *s, json_object *root, const char *key)
{
    json_object *v = member(root, key);
    if (!v)
        return fail(s->err, LP_E2EE_REFUSED, "e2ee.request", "no %s", key);
    if (json_object_is_type(v, json_type_string))
        return seal_member(s, root, key, 0);
    if (!json_object_is_type(v, json_type_array))
        return refuse(s->err, "a prompt of token ids");
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *el = json_object_array_get_idx(v, i);
        if (!json_object_is_type(el, json_type_string))
            return refuse(s->err, "a prompt of token ids");
        size_t n = (size_t)json_object_get_string_len(el);
        if (n == 0)
            continue;
        json_object *nv = seal_str(s, json_object_get_string(el), n, 0, -1);
        if (!nv)
            return LP_E2EE_REFUSED;
        sodium_memzero((char *)(uintptr_t)json_object_get_string(el), n);
        if (json_object_array_put_idx(v, i, nv) != 0)
            return fail(s->err, LP_E2EE_REFUSED, "e2ee.internal", "out of memory");
    }
    return 0;
}

static int seal_completions(sealer_t *s, json_object *root)
{
    json_object *v;
    if ((v = member(root, "logprobs")) && carries(v))
        return refuse(s->err, "logprobs (the tokens answered)");
    if ((v = member(root, "prompt_logprobs")) && !json_object_is_type(v, json_type_null))
        return refuse(s->err, "prompt_logprobs");
    if (carries(member(root, "return_token_ids")))
        return refuse(s->err, "return_token_ids");
    if (carries(member(root, "suffix")))
        return refuse(s->err, "suffix");
    return seal_list(s, root, "prompt");
}

/* Parses p[0..n) as one JSON value (strict; an object when object is set). NULL when it is
 * not one. */
static json_object *parse_json(const uint8_t *p, size_t n, int object)
{
    if (n > LP_E2EE_MAX_BODY)
        return NULL;
    json_tokener *t = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!t)
        return NULL;
    json_tokener_set_flags(t, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(t, (const char *)p, (int)n);
    enum json_tokener_error je = json_tokener_get_error(t);
    /* one value, then only whitespace */
    size_t used = je == json_tokener_success ? json_tokener_get_parse_end(t) : 0;
    json_tokener_free(t);
    while (o && used < n &&
           (p[used] == ' ' || p[used] == '\t' || p[used] == '\r' || p[used] == '\n'))
        used++;
    if (!o || je != json_tokener_success || used != n ||
        (object && !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Serialises o compactly onto out, wiping json-c's copy of the text. */
static int emit(json_object *o, buf_t *out)
{
    size_t len = 0;
    const char *t = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    int rc = t && buf_append(out, t, len) == 0 ? 0 : -1;
    if (t)
        sodium_memzero((char *)(uintptr_t)t, len);
    return rc;
}

int lp_e2ee_seal_request(lp_e2ee_t *e, const uint8_t *body, size_t n, buf_t *out,
                         const char *const **headers, lp_e2ee_err_t *err)
{
    if (e->sealed)
        return fail(err, LP_E2EE_REFUSED, "e2ee.internal", "one request per codec");
    e->sealed = 1;
    /* e2ee_json_parse: the tokener's copies of the app's plaintext wiped (the remote checks
     * the JSON strictly; a body it would refuse is refused there, in ciphertext) */
    json_object *root = n <= LP_E2EE_MAX_BODY ? e2ee_json_parse((const char *)body, n) : NULL;
    if (root && !json_object_is_type(root, json_type_object)) {
        e2ee_json_wipe_put(root);
        root = NULL;
    }
    if (!root)
        return fail(err, LP_E2EE_REFUSED, "e2ee.request", "the request body is not a JSON object");
    sealer_t s = {e, "", 0, BUF_INIT, err};
    json_object *model = member(root, "model");
    int rc = 0;
    if (model && json_object_is_type(model, json_type_string)) {
        s.model = json_object_get_string(model);
        s.model_n = (size_t)json_object_get_string_len(model);
    } else if (model) {
        rc = fail(err, LP_E2EE_REFUSED, "e2ee.request", "model is not a string");
    }
    if (rc == 0)
        rc = e->route == R_CHAT          ? seal_chat(&s, root)
             : e->route == R_COMPLETIONS ? seal_completions(&s, root)
                                         : seal_list(&s, root, "input");
    buf_free(&s.hex);
    size_t before = out->len;
    if (rc == 0 && emit(root, out) != 0) {
        out->len = before;
        rc = fail(err, LP_E2EE_REFUSED, "e2ee.internal", "out of memory");
    }
    e2ee_json_wipe_put(root); /* on a refusal it still holds plaintext */
    if (rc != 0)
        return LP_E2EE_REFUSED;
    e2ee_client_headers(e->f, e->algo == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519", e->client_pub,
                        e->model_pub, e->nonce, e->ts, e->hdr, e->hdrp);
    *headers = e->hdrp;
    return LP_E2EE_OK;
}

/* ---- answer ---- */

typedef struct opener {
    lp_e2ee_t *e;
    json_object *resp; /* the answer object or the event */
    lp_e2ee_err_t *err;
} opener_t;

/* Dstack v2's AAD members (§6.1): a string as it is, absent as "", anything else as its JSON
 * text (what the server puts in, proxy/e2ee_resp.c). */
static const char *aad_member(opener_t *o, const char *key, char *tmp, size_t cap)
{
    json_object *v = member(o->resp, key);
    if (!v)
        return "";
    if (json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    snprintf(tmp, cap, "%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    return tmp;
}

/* Opens the hex string v (member `field` of choice `choice`) into a new json-c string (json:
 * the plaintext parsed back as a JSON value). NULL and *err on failure. */
static json_object *open_str(opener_t *o, json_object *v, size_t choice, const char *field,
                             const char *where, int json)
{
    lp_e2ee_t *e = o->e;
    char aad[2048], mt[256], it[256];
    size_t aad_n = 0;
    if (e2ee_client_resp_aad(e->f, e->algo, e->cipher, aad_member(o, "model", mt, sizeof mt),
                             aad_member(o, "id", it, sizeof it), choice, field, "", "", e->nonce,
                             e->ts, aad, sizeof aad, &aad_n) != E2EE_OK) {
        fail(o->err, LP_E2EE_FAILED, "e2ee.decrypt", "%s: the answer's model or id is too long",
             where);
        return NULL;
    }
    const char *hex = json_object_get_string(v);
    size_t hn = (size_t)json_object_get_string_len(v), cap = hn / 2 + 1, pl = 0;
    if (hn % 2 || hn / 2 < e2ee_blob_len(e->cipher, 0) || !hex_is_hex(hex, hn)) {
        fail(o->err, LP_E2EE_FAILED, "e2ee.in_clear",
             "%s is in clear (not a sealed field) in an encrypted answer: not passed on", where);
        return NULL;
    }
    uint8_t *pt = malloc(cap);
    int rc = pt ? e2ee_open_hex_cached(e->cipher, e->secret, &e->cache, hex, hn,
                                       aad_n ? (const uint8_t *)aad : NULL, aad_n, pt, cap, &pl)
                : E2EE_ERR_INTERNAL;
    json_object *nv = NULL;
    if (rc == E2EE_OK)
        /* e2ee_json_parse: json-c's tokener, its buffer wiped (the text is plaintext) */
        nv = json ? e2ee_json_parse((const char *)pt, pl)
                  : json_object_new_string_len((const char *)pt, (int)pl);
    if (pt)
        sodium_memzero(pt, cap);
    free(pt);
    if (rc != E2EE_OK)
        fail(o->err, LP_E2EE_FAILED, "e2ee.decrypt",
             "%s does not decrypt with our key (%s): tampered, or sealed for another request",
             where, e2ee_err_name(rc));
    else if (!nv && json)
        fail(o->err, LP_E2EE_FAILED, "e2ee.decrypt", "%s decrypts to something that is not JSON",
             where);
    else if (!nv)
        fail(o->err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
    return nv;
}

/* holder[field]: a sealed string is opened in place; absent or null passes; "" passes (it
 * carries no text: NEAR leaves it, the Dstack fork drops it from stream deltas); anything else
 * is text or data in clear. */
static int open_member(opener_t *o, json_object *holder, const char *field, size_t choice,
                       const char *where, int json)
{
    json_object *v = member(holder, field);
    if (!v || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return fail(o->err, LP_E2EE_FAILED, "e2ee.in_clear", "%s.%s is not a sealed string", where,
                    field);
    if (json_object_get_string_len(v) == 0 && !json)
        return 0;
    char w[160];
    snprintf(w, sizeof w, "%s.%s", where, field);
    json_object *nv = open_str(o, v, choice, field, w, json);
    if (!nv)
        return LP_E2EE_FAILED;
    if (json_object_object_add(holder, field, nv) != 0)
        return fail(o->err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
    return 0;
}

static int in_clear(opener_t *o, const char *what)
{
    return fail(o->err, LP_E2EE_FAILED, "e2ee.in_clear",
                "%s in clear in an encrypted answer: not passed on", what);
}

static int open_chat(opener_t *o, int stream)
{
    lp_e2ee_t *e = o->e;
    int near = e->f->family == E2EE_FAM_NEAR;
    /* the server seals audio.data for NEAR and the v1 family, not for Dstack v2 */
    int sealed_audio = near || e->f->version == 1;
    const char *part = stream ? "delta" : "message", *other = stream ? "message" : "delta";
    json_object *choices = member(o->resp, "choices");
    if (choices && !json_object_is_type(choices, json_type_array))
        return in_clear(o, "choices that are not an array");
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i);
        char where[64];
        snprintf(where, sizeof where, "choices[%zu].%s", i, part);
        if (carries(member(ch, "token_ids")))
            return in_clear(o, "token_ids");
        if (carries(member(ch, other)))
            return in_clear(o, stream ? "a message in a stream" : "a delta in an answer");
        if (carries(member(ch, "logprobs")))
            return in_clear(o, "logprobs");
        json_object *m = member(ch, part);
        if (!m || json_object_is_type(m, json_type_null))
            continue;
        if (!json_object_is_type(m, json_type_object))
            return in_clear(o, part);
        if (carries(member(m, "tool_calls")) || carries(member(m, "function_call")))
            return in_clear(o, "tool calls");
        if (carries(member(m, "refusal")))
            return in_clear(o, "a refusal");
        json_object *c = member(m, "content"), *au = member(m, "audio");
        if (near && c && json_object_is_type(c, json_type_array)) {
            for (size_t k = 0; k < json_object_array_length(c); k++) {
                char pw[112];
                snprintf(pw, sizeof pw, "%s.content[%zu]", where, k);
                if (open_member(o, json_object_array_get_idx(c, k), "text", i, pw, 0) != 0)
                    return LP_E2EE_FAILED;
            }
        } else if (open_member(o, m, "content", i, where, 0) != 0) {
            return LP_E2EE_FAILED;
        }
        if (open_member(o, m, "reasoning_content", i, where, 0) != 0 ||
            open_member(o, m, "reasoning", i, where, 0) != 0)
            return LP_E2EE_FAILED;
        if (carries(au)) {
            if (!sealed_audio)
                return in_clear(o, "audio");
            char aw[96];
            snprintf(aw, sizeof aw, "%s.audio", where);
            if (open_member(o, au, "data", i, aw, 0) != 0)
                return LP_E2EE_FAILED;
        }
    }
    return 0;
}

static int open_completions(opener_t *o)
{
    json_object *choices = member(o->resp, "choices");
    if (choices && !json_object_is_type(choices, json_type_array))
        return in_clear(o, "choices that are not an array");
    for (size_t i = 0; choices && i < json_object_array_length(choices); i++) {
        json_object *ch = json_object_array_get_idx(choices, i);
        char where[48];
        snprintf(where, sizeof where, "choices[%zu]", i);
        if (carries(member(ch, "logprobs")) || carries(member(ch, "prompt_logprobs")))
            return in_clear(o, "logprobs");
        if (carries(member(ch, "token_ids")))
            return in_clear(o, "token_ids");
        if (open_member(o, ch, "text", i, where, 0) != 0)
            return LP_E2EE_FAILED;
    }
    return 0;
}

static int open_embeddings(opener_t *o)
{
    json_object *data = member(o->resp, "data");
    if (data && !json_object_is_type(data, json_type_array))
        return in_clear(o, "data that is not an array");
    for (size_t i = 0; data && i < json_object_array_length(data); i++) {
        json_object *d = json_object_array_get_idx(data, i);
        char where[48];
        snprintf(where, sizeof where, "data[%zu]", i);
        /* sealed as the compact JSON text of the value (an array, or vLLM's base64 string) */
        if (member(d, "embedding") && open_member(o, d, "embedding", i, where, 1) != 0)
            return LP_E2EE_FAILED;
    }
    return 0;
}

static int open_any(lp_e2ee_t *e, const uint8_t *in, size_t n, buf_t *out, lp_e2ee_err_t *err,
                    int stream)
{
    json_object *resp = parse_json(in, n, 1);
    if (!resp)
        return fail(err, LP_E2EE_FAILED, "e2ee.json",
                    stream ? "an event of the encrypted stream is not a JSON object"
                           : "the encrypted answer is not a JSON object");
    opener_t o = {e, resp, err};
    int rc = 0;
    if (carries(member(resp, "prompt_logprobs")) || carries(member(resp, "prompt_token_ids")))
        rc = in_clear(&o, "prompt log-probabilities or token ids");
    else if (e->route == R_CHAT)
        rc = open_chat(&o, stream);
    else if (e->route == R_COMPLETIONS)
        rc = open_completions(&o);
    else
        rc = stream ? fail(err, LP_E2EE_FAILED, "e2ee.json", "embeddings are not streamed")
                    : open_embeddings(&o);
    /* json-c's compact spelling, written with wiped growth (e2ee_json_append), and every
     * string of the tree wiped before it is released: the opened ones are plaintext */
    size_t before = out->len;
    if (rc == 0 && e2ee_json_append(out, resp) != 0) {
        if (out->data)
            sodium_memzero(out->data + before, out->len - before);
        out->len = before;
        rc = fail(err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
    }
    e2ee_json_wipe_put(resp);
    return rc == 0 ? LP_E2EE_OK : LP_E2EE_FAILED;
}

/* ---- the scan: the fast path of an answer or an event ----
 *
 * The json-c path above parses the whole answer into a tree, opens the sealed strings in it
 * and prints the tree again; per streamed event that cost several times the AES-GCM open
 * (docs/PERFORMANCE.md, "The local proxy's E2EE"). The scan, in the spirit of the server's
 * proxy/e2ee_event.c, reads the answer once with a strict validator that records the spans of
 * the sealed strings (and of the top-level id and model the Dstack v2 AAD names), opens each
 * with the same key, AAD and cache as the json-c path, and copies the answer with those spans
 * replaced by the JSON-escaped plaintext: every other byte is the remote's.
 *
 * Its output is byte for byte what the json-c path prints, because it takes only answers
 * that json-c prints back exactly as they came (the remote vllm-proxy's own output, which is
 * the engine's compact JSON or json-c's): no whitespace outside strings; strings whose only
 * escapes are \" \\ \b \f \n \r \t (no \u, no \/); integers in their shortest spelling (no
 * -0, at most 18 digits; no fraction or exponent); no member name with an escape and no name
 * twice in one object (json-c keeps one); depth at most SC_DEPTH_MAX. And it takes only the
 * shapes whose every rule it knows: chat and completions (never embeddings); a choices array
 * of objects; a sealed member (content, reasoning_content, reasoning; completions' text) that
 * is null, "" or hex without escapes long enough to hold a blob; the members that would carry
 * text in clear (tool_calls, function_call, refusal, audio, logprobs, token_ids, the other
 * part: a message in a stream or a delta in an answer, prompt_logprobs, prompt_token_ids)
 * null only (tool_calls also []); an id and a model that are strings without escapes of at
 * most SC_ID_MAX bytes, or absent. Anything else, and any field that does not open, declines
 * to the json-c path, which decides: so a failure's check and message are always the json-c
 * path's, and the scan never judges a shape it does not know (tests/fuzz/fuzz_lp_e2ee.c
 * checks both paths agree). */

#define SC_DEPTH_MAX 24 /* nesting (json-c's parser: 32); deeper declines */
#define SC_EDITS_MAX 48 /* sealed strings per answer; more declines */
#define SC_KEYS_MAX 32  /* members per object (the duplicate check); more declines */
#define SC_ID_MAX 255   /* id and model bytes; longer declines */

enum { SC_OK = 0, SC_NO = 1, SC_DONE = 2 };

typedef struct sc_edit {
    size_t b, e;       /* the sealed hex, inside its quotes */
    size_t choice;     /* position in choices (Dstack v2 AAD) */
    const char *field; /* the member name (Dstack v2 AAD) */
    size_t pt_off, pt_n;
} sc_edit_t;

typedef struct scan {
    const char *p;
    size_t n, i;
    int stream, route;
    size_t min_hex; /* hex digits of the blob of an empty plaintext */
    sc_edit_t edit[SC_EDITS_MAX];
    int nedit;
    size_t id_b, id_n, model_b, model_n;
    int has_id, has_model;
} scan_t;

typedef struct sc_keys {
    const char *k[SC_KEYS_MAX];
    size_t n[SC_KEYS_MAX];
    int count;
} sc_keys_t;

/* A string at x->i (its opening quote), in the canonical spelling above. [*b, *e): its bytes
 * inside the quotes; *esc: it holds an escape. */
static int sc_str(scan_t *x, size_t *b, size_t *e, int *esc)
{
    const unsigned char *q = (const unsigned char *)x->p;
    size_t i = x->i, n = x->n;
    if (i >= n || q[i] != '"')
        return SC_NO;
    *b = ++i;
    *esc = 0;
    for (;;) {
        /* eight bytes at a time while none is a quote, a backslash or a control byte */
        const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
        while (i + 8 <= n) {
            uint64_t w, wq, wb;
            memcpy(&w, q + i, 8);
            wq = w ^ (ones * '"');
            wb = w ^ (ones * '\\');
            if ((((w - ones * 0x20) & ~w) | ((wq - ones) & ~wq) | ((wb - ones) & ~wb)) & highs)
                break;
            i += 8;
        }
        while (i < n && q[i] >= 0x20 && q[i] != '"' && q[i] != '\\')
            i++;
        if (i >= n || q[i] < 0x20)
            return SC_NO;
        if (q[i] == '"')
            break;
        if (i + 1 >= n || !memchr("\"\\bfnrt", q[i + 1], 7))
            return SC_NO; /* \u and \/: json-c prints them otherwise */
        *esc = 1;
        i += 2;
    }
    *e = i;
    x->i = i + 1;
    return SC_OK;
}

static int sc_lit(scan_t *x, const char *w, size_t l)
{
    if (x->n - x->i < l || memcmp(x->p + x->i, w, l) != 0)
        return SC_NO;
    x->i += l;
    return SC_OK;
}

static int sc_null(scan_t *x) { return sc_lit(x, "null", 4); }

/* An integer as json-c prints it. */
static int sc_int(scan_t *x)
{
    size_t s = x->i, d;
    if (x->i < x->n && x->p[x->i] == '-')
        x->i++;
    d = x->i;
    while (x->i < x->n && x->p[x->i] >= '0' && x->p[x->i] <= '9')
        x->i++;
    size_t nd = x->i - d;
    if (nd == 0 || nd > 18 || (nd > 1 && x->p[d] == '0') || (x->p[d] == '0' && d > s))
        return SC_NO; /* none, too long for int64 all the same, 0-led, or -0 */
    if (x->i < x->n && (x->p[x->i] == '.' || x->p[x->i] == 'e' || x->p[x->i] == 'E'))
        return SC_NO;
    return SC_OK;
}

/* After a member or an element: the container's close (SC_DONE) or a comma (SC_OK). */
static int sc_after(scan_t *x, char close)
{
    if (x->i >= x->n)
        return SC_NO;
    char c = x->p[x->i++];
    return c == close ? SC_DONE : c == ',' ? SC_OK : SC_NO;
}

/* A member name and its colon; a name with an escape, or one already in keys, declines. */
static int sc_key(scan_t *x, sc_keys_t *keys, const char **name, size_t *len)
{
    size_t b, e;
    int esc;
    if (sc_str(x, &b, &e, &esc) != SC_OK || esc || keys->count == SC_KEYS_MAX)
        return SC_NO;
    *name = x->p + b;
    *len = e - b;
    for (int k = 0; k < keys->count; k++)
        if (keys->n[k] == *len && memcmp(keys->k[k], *name, *len) == 0)
            return SC_NO;
    keys->k[keys->count] = *name;
    keys->n[keys->count++] = *len;
    if (x->i >= x->n || x->p[x->i] != ':')
        return SC_NO;
    x->i++;
    return SC_OK;
}

static int sc_is(const char *name, size_t len, const char *w)
{
    return strlen(w) == len && memcmp(name, w, len) == 0;
}

/* Any value, validated and passed over. */
static int sc_skip(scan_t *x, int depth)
{
    if (depth > SC_DEPTH_MAX || x->i >= x->n)
        return SC_NO;
    char c = x->p[x->i];
    size_t b, e;
    int esc;
    switch (c) {
    case '"': return sc_str(x, &b, &e, &esc);
    case 't': return sc_lit(x, "true", 4);
    case 'f': return sc_lit(x, "false", 5);
    case 'n': return sc_null(x);
    case '{':
    case '[': {
        char close = c == '{' ? '}' : ']';
        sc_keys_t keys;
        keys.count = 0;
        if (++x->i < x->n && x->p[x->i] == close)
            return x->i++, SC_OK;
        for (;;) {
            const char *name;
            size_t len;
            if ((c == '{' && sc_key(x, &keys, &name, &len) != SC_OK) ||
                sc_skip(x, depth + 1) != SC_OK)
                return SC_NO;
            int a = sc_after(x, close);
            if (a != SC_OK)
                return a == SC_DONE ? SC_OK : SC_NO;
        }
    }
    default: return sc_int(x);
    }
}

/* A member the format seals: null, "" (no text) or a hex blob, recorded. */
static int sc_sealed(scan_t *x, size_t choice, const char *field)
{
    if (x->i < x->n && x->p[x->i] == 'n')
        return sc_null(x);
    size_t b, e;
    int esc;
    if (sc_str(x, &b, &e, &esc) != SC_OK || esc)
        return SC_NO;
    if (e == b)
        return SC_OK;
    /* not hex: the open fails and the scan declines (the json-c path says in_clear) */
    if ((e - b) % 2 || e - b < x->min_hex || x->nedit == SC_EDITS_MAX)
        return SC_NO;
    x->edit[x->nedit++] = (sc_edit_t){b, e, choice, field, 0, 0};
    return SC_OK;
}

/* A chat choice's delta (stream) or message (answer). */
static int sc_part(scan_t *x, size_t choice)
{
    static const char *const SEALED[] = {"content", "reasoning_content", "reasoning"};
    if (x->i >= x->n || x->p[x->i] != '{')
        return SC_NO;
    if (++x->i < x->n && x->p[x->i] == '}')
        return x->i++, SC_OK;
    sc_keys_t keys;
    keys.count = 0;
    for (;;) {
        const char *name;
        size_t len;
        if (sc_key(x, &keys, &name, &len) != SC_OK)
            return SC_NO;
        int f = -1;
        for (int k = 0; k < 3; k++)
            if (sc_is(name, len, SEALED[k]))
                f = k;
        int rc;
        if (f >= 0)
            rc = sc_sealed(x, choice, SEALED[f]);
        else if (sc_is(name, len, "tool_calls"))
            rc = sc_null(x) == SC_OK ? SC_OK : sc_lit(x, "[]", 2);
        else if (sc_is(name, len, "function_call") || sc_is(name, len, "refusal") ||
                 sc_is(name, len, "audio"))
            rc = sc_null(x);
        else
            rc = sc_skip(x, 5);
        if (rc != SC_OK)
            return SC_NO;
        int a = sc_after(x, '}');
        if (a != SC_OK)
            return a == SC_DONE ? SC_OK : SC_NO;
    }
}

static int sc_choice(scan_t *x, size_t pos)
{
    if (x->i >= x->n || x->p[x->i] != '{')
        return SC_NO;
    if (++x->i < x->n && x->p[x->i] == '}')
        return x->i++, SC_OK;
    const char *part = x->stream ? "delta" : "message", *other = x->stream ? "message" : "delta";
    sc_keys_t keys;
    keys.count = 0;
    for (;;) {
        const char *name;
        size_t len;
        if (sc_key(x, &keys, &name, &len) != SC_OK)
            return SC_NO;
        int rc;
        if (sc_is(name, len, "logprobs") || sc_is(name, len, "token_ids") ||
            sc_is(name, len, "prompt_logprobs"))
            rc = sc_null(x);
        else if (x->route == R_COMPLETIONS)
            rc = sc_is(name, len, "text") ? sc_sealed(x, pos, "text") : sc_skip(x, 4);
        else if (sc_is(name, len, other))
            rc = sc_null(x);
        else if (sc_is(name, len, part))
            rc = x->i < x->n && x->p[x->i] == 'n' ? sc_null(x) : sc_part(x, pos);
        else
            rc = sc_skip(x, 4);
        if (rc != SC_OK)
            return SC_NO;
        int a = sc_after(x, '}');
        if (a != SC_OK)
            return a == SC_DONE ? SC_OK : SC_NO;
    }
}

static int sc_id(scan_t *x, size_t *b, size_t *n, int *has)
{
    size_t sb, se;
    int esc;
    if (sc_str(x, &sb, &se, &esc) != SC_OK || esc || se - sb > SC_ID_MAX)
        return SC_NO;
    *has = 1;
    *b = sb;
    *n = se - sb;
    return SC_OK;
}

static int sc_answer(scan_t *x)
{
    if (x->n == 0 || x->p[0] != '{')
        return SC_NO;
    x->i = 1;
    if (x->i < x->n && x->p[x->i] == '}')
        return ++x->i == x->n ? SC_OK : SC_NO;
    sc_keys_t keys;
    keys.count = 0;
    for (;;) {
        const char *name;
        size_t len;
        if (sc_key(x, &keys, &name, &len) != SC_OK)
            return SC_NO;
        int rc;
        if (sc_is(name, len, "id"))
            rc = sc_id(x, &x->id_b, &x->id_n, &x->has_id);
        else if (sc_is(name, len, "model"))
            rc = sc_id(x, &x->model_b, &x->model_n, &x->has_model);
        else if (sc_is(name, len, "prompt_logprobs") || sc_is(name, len, "prompt_token_ids"))
            rc = sc_null(x);
        else if (sc_is(name, len, "choices")) {
            if (x->i >= x->n || x->p[x->i] != '[')
                return SC_NO;
            rc = SC_OK;
            if (++x->i < x->n && x->p[x->i] == ']')
                x->i++;
            else
                for (size_t pos = 0;; pos++) {
                    int a = sc_choice(x, pos) == SC_OK ? sc_after(x, ']') : SC_NO;
                    if (a == SC_DONE)
                        break;
                    if (a != SC_OK)
                        return SC_NO;
                }
        } else
            rc = sc_skip(x, 2);
        if (rc != SC_OK)
            return SC_NO;
        int a = sc_after(x, '}');
        if (a == SC_DONE)
            return x->i == x->n ? SC_OK : SC_NO;
        if (a != SC_OK)
            return SC_NO;
    }
}

/* Bytes of pt[0..n) escaped as json-c escapes a string (PLAIN | NOSLASHESCAPE): \b \f \n \r
 * \t \" \\ short, other bytes below 0x20 as \u00xx, the rest as they are. */
static size_t esc_len(const uint8_t *pt, size_t n)
{
    size_t l = n;
    for (size_t i = 0; i < n; i++)
        if (pt[i] < 0x20 || pt[i] == '"' || pt[i] == '\\')
            l += pt[i] < 0x20 && !memchr("\b\f\n\r\t", pt[i], 5) ? 5 : 1;
    return l;
}

static char *esc_put(char *o, const uint8_t *pt, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = pt[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hexd[c >> 4];
            o[4] = hexd[c & 15];
            o += 5;
        }
    }
    return o;
}

/* The scan's answer: LP_E2EE_OK (out appended), LP_E2EE_DECLINED (out unchanged: the json-c
 * path decides), or LP_E2EE_FAILED (out of memory). */
static int scan_open(lp_e2ee_t *e, int stream, const char *p, size_t n, buf_t *out,
                     lp_e2ee_err_t *err)
{
    if (e->route == R_EMBEDDINGS || n > LP_E2EE_MAX_BODY)
        return LP_E2EE_DECLINED;
    scan_t x;
    x.p = p;
    x.n = n;
    x.i = 0;
    x.stream = stream;
    x.route = e->route;
    x.min_hex = 2 * e2ee_blob_len(e->cipher, 0);
    x.nedit = x.has_id = x.has_model = 0;
    x.id_b = x.id_n = x.model_b = x.model_n = 0;
    if (sc_answer(&x) != SC_OK)
        return LP_E2EE_DECLINED;
    /* the plaintexts, one after another in the scratch buffer */
    size_t need = 1;
    for (int k = 0; k < x.nedit; k++)
        need += (x.edit[k].e - x.edit[k].b) / 2;
    if (need > e->scratch_cap) {
        if (e->scratch) {
            sodium_memzero(e->scratch, e->scratch_cap);
            free(e->scratch);
        }
        e->scratch_cap = need < 4096 ? 4096 : need;
        if (!(e->scratch = malloc(e->scratch_cap))) {
            e->scratch_cap = 0;
            return fail(err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
        }
    }
    char model[SC_ID_MAX + 1], id[SC_ID_MAX + 1];
    memcpy(model, p + x.model_b, x.model_n);
    model[x.model_n] = '\0';
    memcpy(id, p + x.id_b, x.id_n);
    id[x.id_n] = '\0';
    size_t used = 0, len = n;
    int rc = LP_E2EE_OK;
    for (int k = 0; k < x.nedit && rc == LP_E2EE_OK; k++) {
        sc_edit_t *ed = &x.edit[k];
        char aad[2048];
        size_t aad_n = 0, pl = 0, hn = ed->e - ed->b;
        if (e2ee_client_resp_aad(e->f, e->algo, e->cipher, model, id, ed->choice, ed->field, "", "",
                                 e->nonce, e->ts, aad, sizeof aad, &aad_n) != E2EE_OK ||
            e2ee_open_hex_cached(e->cipher, e->secret, &e->cache, p + ed->b, hn,
                                 aad_n ? (const uint8_t *)aad : NULL, aad_n, e->scratch + used,
                                 e->scratch_cap - used, &pl) != E2EE_OK) {
            rc = LP_E2EE_DECLINED; /* the json-c path names the failure */
            break;
        }
        ed->pt_off = used;
        ed->pt_n = pl;
        used += pl;
        len = len - hn + esc_len(e->scratch + ed->pt_off, pl);
    }
    if (rc == LP_E2EE_OK && buf_reserve_wiped(out, len + 1) != 0)
        rc = fail(err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
    if (rc == LP_E2EE_OK) {
        char *o = out->data + out->len;
        size_t at = 0;
        for (int k = 0; k < x.nedit; k++) {
            const sc_edit_t *ed = &x.edit[k];
            memcpy(o, p + at, ed->b - at);
            o = esc_put(o + (ed->b - at), e->scratch + ed->pt_off, ed->pt_n);
            at = ed->e;
        }
        memcpy(o, p + at, n - at);
        out->len += len;
        out->data[out->len] = '\0';
    }
    sodium_memzero(e->scratch, used);
    return rc;
}

/* ---- the entry points ---- */

int lp_e2ee_open_path(lp_e2ee_t *e, int path, int stream, const uint8_t *in, size_t n, buf_t *out,
                      lp_e2ee_err_t *err)
{
    if (stream && n == 6 && memcmp(in, "[DONE]", 6) == 0)
        return buf_append(out, in, n) == 0
                   ? LP_E2EE_OK
                   : fail(err, LP_E2EE_FAILED, "e2ee.internal", "out of memory");
    if (path != LP_E2EE_PATH_JSONC) {
        int rc = scan_open(e, stream, (const char *)in, n, out, err);
        if (rc != LP_E2EE_DECLINED || path == LP_E2EE_PATH_SCAN)
            return rc;
    }
    return open_any(e, in, n, out, err, stream);
}

int lp_e2ee_open_json(lp_e2ee_t *e, const uint8_t *in, size_t n, buf_t *out, lp_e2ee_err_t *err)
{
    return lp_e2ee_open_path(e, LP_E2EE_PATH_AUTO, 0, in, n, out, err);
}

int lp_e2ee_open_event(lp_e2ee_t *e, const uint8_t *data, size_t n, buf_t *out, lp_e2ee_err_t *err)
{
    return lp_e2ee_open_path(e, LP_E2EE_PATH_AUTO, 1, data, n, out, err);
}

void lp_e2ee_test_keys(lp_e2ee_t *e, const uint8_t secret[32], const char *nonce, int64_t ts)
{
    memcpy(e->secret, secret, 32);
    snprintf(e->nonce, sizeof e->nonce, "%s", nonce);
    e->ts = ts;
    e2ee_key_wipe(&e->cache);
}
