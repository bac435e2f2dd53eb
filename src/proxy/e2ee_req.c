/* The request side of end-to-end encryption (proxy/e2ee.h): format selection, header checks,
 * field decryption into the rewritten body, replay claims. */
#include <json-c/json_tokener.h>
#include <json-c/printbuf.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"
#include "core/sha.h"
#include "sign/aci_keys.h"
#include "sign/signer.h"
#include "store/store.h"

#define REPLAY_CAPACITY 200000u /* claims held; see docs/API.md */
#define JSON_DEPTH 64

/* ---- json-c helpers shared with the response side ---- */

static void wipe_printbuf(struct printbuf *pb)
{
    if (pb && pb->buf && pb->size > 0)
        sodium_memzero(pb->buf, (size_t)pb->size);
}

static void wipe_tree(json_object *o);

/* json-c 0.16's tokener (json_tokener.h declares the struct): a failed or unfinished parse
 * leaves the values read so far on its stack (stack[0..depth].current, plus a member name
 * not yet added), and json_tokener_free releases them as they are; they are wiped first. */
static void wipe_tokener_stack(json_tokener *t)
{
    for (int i = 0; t->stack && i <= t->depth && i < t->max_depth; i++) {
        wipe_tree(t->stack[i].current);
        if (t->stack[i].obj_field_name)
            sodium_memzero(t->stack[i].obj_field_name, strlen(t->stack[i].obj_field_name));
    }
}

/* The tokener gathers each string (and number) token in its printbuf, which json-c grows by
 * realloc from 32 bytes, leaving the shorter copies behind. A token never takes more bytes
 * there than it takes in the input (an escape shortens, \uXXXX gives at most 3 bytes for 6,
 * a surrogate pair 4 for 12, a replacement character 3 for 6), so a printbuf of n + 8 bytes
 * never grows (printbuf_memappend grows when size <= bpos + len + 1). */
static int presize_printbuf(struct printbuf *pb, size_t n)
{
    if (!pb || n > (size_t)INT32_MAX - 8)
        return -1;
    size_t cap = n + 8;
    if (pb->size > 0 && (size_t)pb->size >= cap)
        return 0;
    char *nb = malloc(cap);
    if (!nb)
        return -1;
    memcpy(nb, pb->buf, (size_t)pb->bpos); /* empty on a new tokener */
    nb[pb->bpos] = '\0';
    wipe_printbuf(pb);
    free(pb->buf);
    pb->buf = nb;
    pb->size = (int)cap;
    return 0;
}

/* A member name repeated in one object: json-c keeps the last value and releases the earlier
 * one unwiped inside the parse. The input is fed in pieces that end just after each ':', so
 * that between pieces a member name just read is on the stack (the object's level, the value
 * not yet begun) and an earlier value under the same name can be wiped before it is replaced. */
static void wipe_replaced_member(json_tokener *t)
{
    if (!t->stack || t->depth < 0 || t->depth >= t->max_depth)
        return;
    struct json_tokener_srec *r = &t->stack[t->depth];
    json_object *old = NULL;
    if (r->obj_field_name && r->current && json_object_is_type(r->current, json_type_object) &&
        json_object_object_get_ex(r->current, r->obj_field_name, &old))
        wipe_tree(old);
}

json_object *e2ee_json_parse(const char *p, size_t n)
{
    if (n > (size_t)INT32_MAX - 8)
        return NULL;
    json_tokener *t = json_tokener_new_ex(JSON_DEPTH);
    if (!t)
        return NULL;
    if (presize_printbuf(t->pb, n) != 0) {
        json_tokener_free(t);
        return NULL;
    }
    json_object *o = NULL;
    size_t at = 0, end = 0;
    enum json_tokener_error err = json_tokener_continue;
    do {
        const char *colon = memchr(p + at, ':', n - at);
        size_t piece = colon ? (size_t)(colon - (p + at)) + 1 : n - at;
        o = json_tokener_parse_ex(t, p + at, (int)piece);
        err = json_tokener_get_error(t);
        if (o || err != json_tokener_continue) {
            end = at + json_tokener_get_parse_end(t);
            break;
        }
        wipe_replaced_member(t);
        at += piece;
    } while (at < n);
    if (o && err == json_tokener_success) {
        for (; end < n; end++)
            if (p[end] != ' ' && p[end] != '\t' && p[end] != '\r' && p[end] != '\n')
                break;
    }
    if (!o || err != json_tokener_success || end != n) {
        if (o)
            e2ee_json_wipe_put(o);
        o = NULL;
    }
    wipe_tokener_stack(t);
    wipe_printbuf(t->pb);
    json_tokener_free(t);
    return o;
}

static void wipe_tree(json_object *o)
{
    if (!o)
        return;
    switch (json_object_get_type(o)) {
    case json_type_string: {
        int n = json_object_get_string_len(o);
        if (n > 0)
            sodium_memzero((char *)(uintptr_t)json_object_get_string(o), (size_t)n);
        break;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++)
            wipe_tree(json_object_array_get_idx(o, i));
        break;
    case json_type_object: {
        json_object_object_foreach(o, k, v)
        {
            (void)k;
            wipe_tree(v);
        }
        break;
    }
    default: break;
    }
}

void e2ee_json_wipe_put(json_object *o)
{
    wipe_tree(o);
    json_object_put(o);
}

/* A JSON string literal, escaped as json-c's json_escape_str escapes (\b \f \n \r \t \" \\
 * short, / as \/ unless JSON_C_TO_STRING_NOSLASHESCAPE, other bytes below 0x20 as \u00xx, the
 * rest as they are), so that the output is byte for byte json-c's. */
static int ser_str(buf_t *out, const char *s, size_t n, int slash)
{
    static const char hexd[] = "0123456789abcdef";
    if (buf_append_wiped(out, "\"", 1) != 0)
        return -1;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (c) {
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '/':
            if (!slash)
                continue;
            esc[1] = '/';
            break;
        default:
            if (c >= 0x20)
                continue;
            memcpy(esc, "\\u00", 4);
            esc[4] = hexd[c >> 4];
            esc[5] = hexd[c & 15];
            en = 6;
        }
        if (buf_append_wiped(out, s + start, i - start) != 0 || buf_append_wiped(out, esc, en) != 0)
            return -1;
        start = i + 1;
    }
    return buf_append_wiped(out, s + start, n - start) == 0 && buf_append_wiped(out, "\"", 1) == 0
               ? 0
               : -1;
}

/* Compact JSON (json-c's JSON_C_TO_STRING_PLAIN spelling; slash: / escaped, else as with
 * JSON_C_TO_STRING_NOSLASHESCAPE),
 * written here rather than by json-c: json-c's serialiser grows its printbuf by realloc and
 * keeps the text in the node, leaving copies of the strings in freed memory. Numbers are
 * json-c's own text for them (a parsed double keeps its original spelling), wiped after the
 * copy. */
static int ser(buf_t *out, json_object *o, int slash)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return buf_append_wiped(out, "null", 4);
    case json_type_boolean:
        return json_object_get_boolean(o) ? buf_append_wiped(out, "true", 4)
                                          : buf_append_wiped(out, "false", 5);
    case json_type_int:
    case json_type_double: {
        size_t n = 0;
        const char *t = json_object_to_json_string_length(
            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (!t)
            return -1;
        int rc = buf_append_wiped(out, t, n);
        sodium_memzero((char *)(uintptr_t)t, n);
        return rc;
    }
    case json_type_string:
        return ser_str(out, json_object_get_string(o), (size_t)json_object_get_string_len(o),
                       slash);
    case json_type_array: {
        if (buf_append_wiped(out, "[", 1) != 0)
            return -1;
        for (size_t i = 0; i < json_object_array_length(o); i++)
            if ((i && buf_append_wiped(out, ",", 1) != 0) ||
                ser(out, json_object_array_get_idx(o, i), slash) != 0)
                return -1;
        return buf_append_wiped(out, "]", 1);
    }
    case json_type_object: {
        if (buf_append_wiped(out, "{", 1) != 0)
            return -1;
        int first = 1;
        json_object_object_foreach(o, k, v)
        {
            if ((!first && buf_append_wiped(out, ",", 1) != 0) ||
                ser_str(out, k, strlen(k), slash) != 0 || buf_append_wiped(out, ":", 1) != 0 ||
                ser(out, v, slash) != 0)
                return -1;
            first = 0;
        }
        return buf_append_wiped(out, "}", 1);
    }
    }
    return -1;
}

int e2ee_json_append(buf_t *out, json_object *o)
{
    return ser(out, o, 0);
}

const char *e2ee_json_str(json_object *parent, const char *key, buf_t *tmp, size_t *n)
{
    json_object *v = NULL;
    if (!parent || !json_object_object_get_ex(parent, key, &v)) {
        *n = 0;
        return "";
    }
    if (json_object_is_type(v, json_type_string)) {
        *n = (size_t)json_object_get_string_len(v);
        return json_object_get_string(v);
    }
    size_t at = tmp->len;
    /* json-c's PLAIN spelling, slashes escaped, as this AAD has always been built */
    if (ser(tmp, v, 1) != 0 || !tmp->data) {
        *n = 0;
        return NULL;
    }
    *n = tmp->len - at;
    return tmp->data + at;
}

void e2ee_wipe_buf(buf_t *b)
{
    if (b->data && b->cap)
        sodium_memzero(b->data, b->cap);
    buf_free(b);
}

/* ---- the replay cache (Dstack v2, §6.2): one for the process ---- */

static pthread_once_t g_replay_once = PTHREAD_ONCE_INIT;
static store_t *g_replay;
/* E2EE_REPLAY_WINDOW (Dstack: E2EE_REPLAY_WINDOW_SECONDS): written once before the workers
 * start (e2ee_replay_configure), read-only after. */
static unsigned g_window = E2EE_REPLAY_WINDOW_DEFAULT;

void e2ee_replay_configure(unsigned window_s)
{
    if (window_s)
        g_window = window_s;
}

unsigned e2ee_replay_window(void) { return g_window; }
unsigned e2ee_replay_ttl(void) { return 2 * g_window; }

static void replay_init(void)
{
    /* A claim must outlive every time at which its timestamp is still accepted: up to two
     * windows after the claim (a timestamp `window` in the future stays valid until
     * ts + window). The Dstack fork keeps it one window. */
    g_replay = store_new(REPLAY_CAPACITY, e2ee_replay_ttl());
}

/* 0 claimed, 1 already claimed, -1 cannot record. */
static int replay_put(const char *key, size_t n)
{
    if (pthread_once(&g_replay_once, replay_init) != 0 || !g_replay)
        return -1;
    int rc = store_put(g_replay, key, n, "1", 1, clock_mono_s());
    return rc == STORE_OK ? 0 : rc == STORE_EXISTS ? 1 : -1;
}

/* The Redis key of a claim: the tuple's digest under the model and the format. */
static void replay_remote_key(e2ee_sess_t *s, const char *model, const char *fmt,
                              const uint8_t h[SHA256_LEN])
{
    char hx[SHA256_HEX_LEN + 1];
    hex_encode(hx, h, SHA256_LEN);
    hx[SHA256_HEX_LEN] = '\0';
    int n = snprintf(s->replay_key, sizeof s->replay_key, "%s:e2ee-replay:%s:%s", model, fmt, hx);
    s->replay_key_n = n > 0 && (size_t)n < sizeof s->replay_key ? (size_t)n : 0;
}

const char *e2ee_replay_key(const e2ee_sess_t *s, size_t *n)
{
    *n = s ? s->replay_key_n : 0;
    return *n ? s->replay_key : NULL;
}

/* ACI (§7.4): the tuple (client key, service key, nonce), keys normalised (secp256k1 as 65
 * bytes), the nonce case-folded; hashed so that the key has a fixed length. */
static int replay_claim_aci(e2ee_sess_t *s, const char *model, const uint8_t *svc,
                            size_t svc_n)
{
    uint8_t in[2 + 2 * E2EE_SECP_PUB_LEN + E2EE_NONCE_MAX], h[SHA256_LEN];
    char key[8 + SHA256_HEX_LEN + 1];
    size_t n = 0;
    if (s->client_n > E2EE_SECP_PUB_LEN || svc_n > E2EE_SECP_PUB_LEN || s->nonce_n > E2EE_NONCE_MAX)
        return -1;
    in[n++] = (uint8_t)s->client_n;
    in[n++] = (uint8_t)svc_n;
    memcpy(in + n, s->client, s->client_n);
    n += s->client_n;
    memcpy(in + n, svc, svc_n);
    n += svc_n;
    for (size_t i = 0; i < s->nonce_n; i++)
        in[n++] = (uint8_t)(s->nonce[i] >= 'A' && s->nonce[i] <= 'F' ? s->nonce[i] + 32
                                                                     : s->nonce[i]);
    sha256(in, n, h);
    memcpy(key, "aci:v2:", 7);
    hex_encode(key + 7, h, sizeof h);
    replay_remote_key(s, model, "aci-v2", h);
    return replay_put(key, 7 + 2 * sizeof h);
}

static int replay_claim(e2ee_sess_t *s, const char *model, e2ee_algo_t a, int64_t ts,
                        const char *nonce, size_t nonce_n)
{
    if (pthread_once(&g_replay_once, replay_init) != 0 || !g_replay)
        return -1;
    char key[STORE_MAX_KEY];
    int n =
        snprintf(key, sizeof key, "%s:e2ee_replay:%s:%lld:%.*s", model,
                 a == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519", (long long)ts, (int)nonce_n, nonce);
    if (n < 0 || (size_t)n >= sizeof key)
        return -1;
    /* Redis: sha256 of the tuple after the model (algo, timestamp, nonce). */
    size_t ml = strlen(model);
    uint8_t h[SHA256_LEN];
    sha256(key + ml + 1, (size_t)n - ml - 1, h);
    replay_remote_key(s, model, "dstack-v2", h);
    int rc = store_put(g_replay, key, (size_t)n, "1", 1, clock_mono_s());
    return rc == STORE_OK ? 0 : rc == STORE_EXISTS ? 1 : -1;
}

/* ---- selection and header checks ---- */

static app_error_t err_of(int e2ee_err)
{
    switch (e2ee_err) {
    case E2EE_ERR_HEADER_MISSING: return APP_E_E2EE_HEADER_MISSING;
    case E2EE_ERR_SIGNING_ALGO: return APP_E_E2EE_INVALID_SIGNING_ALGO;
    case E2EE_ERR_PUBLIC_KEY: return APP_E_E2EE_INVALID_PUBLIC_KEY;
    case E2EE_ERR_MODEL_KEY_MISMATCH: return APP_E_E2EE_MODEL_KEY_MISMATCH;
    case E2EE_ERR_VERSION: return APP_E_E2EE_INVALID_VERSION;
    case E2EE_ERR_NONCE: return APP_E_E2EE_INVALID_NONCE;
    case E2EE_ERR_TIMESTAMP: return APP_E_E2EE_INVALID_TIMESTAMP;
    case E2EE_ERR_DECRYPT: return APP_E_E2EE_DECRYPTION_FAILED;
    default: return APP_E_OUT_OF_MEMORY;
    }
}

/* NEAR's own headers, which alone select no format (§1.1). */
#define NEAR_SWITCHES                                                                          \
    ((1u << HTTP_E2EE_ENCRYPTION_VERSION) | (1u << HTTP_E2EE_ALL_FIELDS) |                     \
     (1u << HTTP_E2EE_TOOL_CALLS))
_Static_assert((int)E2EE_H_TOOL_CALLS == (int)HTTP_E2EE_TOOL_CALLS && (int)E2EE_H_N == (int)HTTP_E2EE_N,
               "e2ee/e2ee.h and http/server.h list the headers in one order");

int e2ee_req_is_aci(const http_req_t *req)
{
    return !(req->e2ee_present & (1u << HTTP_E2EE_SIGNING_ALGO)) &&
           (req->e2ee_present & ~NEAR_SWITCHES);
}

app_error_t e2ee_route_refusal(const http_req_t *req)
{
    /* Without X-Signing-Algo it can only be ACI E2EE v2 (formats document §1.2), which
     * defines no fields there: e2ee_unsupported_endpoint (§7.3). */
    return e2ee_req_is_aci(req) ? APP_E_E2EE_UNSUPPORTED_ENDPOINT : APP_E_E2EE_NOT_SUPPORTED;
}

void e2ee_aci_hints(const app_t *app, char *out, size_t cap)
{
    char dg[ACI_DIGEST_LEN + 1];
    if (cap)
        out[0] = '\0';
    if (!app->aci)
        return;
    aci_keys_current(app->aci, (int64_t)clock_wall_s(), dg, NULL, NULL);
    snprintf(out, cap, "X-ACI-Version: aci/1\r\nX-ACI-Keyset-Digest: %s\r\n", dg);
}

const char *e2ee_sess_hints(const e2ee_sess_t *s)
{
    const char *h = s && s->format == E2EE_F_ACI_V2 ? strstr(s->hdrs, "X-ACI-Version:") : NULL;
    return h ? h : "";
}

int e2ee_route_of(strv_t path)
{
    static const struct {
        const char *path;
        int route;
    } R[] = {{"/v1/chat/completions", E2EE_ROUTE_CHAT},
             {"/v1/completions", E2EE_ROUTE_COMPLETIONS},
             {"/v1/embeddings", E2EE_ROUTE_EMBEDDINGS},
             {"/v1/rerank", E2EE_ROUTE_RERANK},
             {"/v1/score", E2EE_ROUTE_SCORE},
             {"/v1/images/generations", E2EE_ROUTE_IMAGES}};
    for (size_t i = 0; i < sizeof R / sizeof *R; i++)
        if (path.n == strlen(R[i].path) && memcmp(path.p, R[i].path, path.n) == 0)
            return R[i].route;
    return -1;
}

static void headers_of(const http_req_t *req, e2ee_headers_t *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < E2EE_H_N; i++) {
        h->v[i] = (e2ee_span_t){req->e2ee[i].p ? req->e2ee[i].p : "", req->e2ee[i].n};
        if (req->e2ee_present & (1u << i))
            h->present |= 1u << i;
    }
}

/* ---- decryption of the body ---- */

typedef struct dctx {
    const signer_t *signer;
    e2ee_sess_t *s;
    const char *model;
    size_t model_n;
    app_error_t err;
    char *msg;        /* E2EE_MSG_MAX: the answer's message, when set */
    int dstack_parts; /* v1 with X-Model-Pub-Key: content arrays' text parts are Dstack's (§5.2) */
    const aci_keys_t *aci; /* ACI: the key holder */
    const char *path;      /* ACI: the field path of the field being opened (AAD, §7.3) */
    size_t opened;         /* ACI: fields opened (none: e2ee_decryption_failed) */
} dctx_t;

/* The error of a field; NEAR's message (§3.5) for every format but Dstack v2, whose answers
 * keep the table's messages. */
static void field_fail(dctx_t *d, app_error_t e, const char *m)
{
    d->err = e;
    if (m && d->s->format != E2EE_F_DSTACK_V2)
        snprintf(d->msg, E2EE_MSG_MAX, "%.160s; the request was not forwarded", m);
}

static int utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0)
            k = 1, cp = c & 0x1fu;
        else if ((c & 0xf0) == 0xe0)
            k = 2, cp = c & 0x0fu;
        else if ((c & 0xf8) == 0xf0)
            k = 3, cp = c & 0x07u;
        else
            return 0;
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int v1_trial(const e2ee_sess_t *s)
{
    return s->format == E2EE_F_V1 && s->algo == E2EE_ALGO_ED25519 && !s->cipher_fixed;
}

/* Opens one hex field inside the signer: the request's cipher, or for v1 ed25519 until the
 * first field opened, trial decryption (§1.2 rule 5), which fixes the cipher for the rest. */
static int open_bytes(dctx_t *d, const char *hex, size_t hex_n, const uint8_t *aad, size_t aad_n,
                      uint8_t *pt, size_t cap, size_t *pn)
{
    e2ee_sess_t *s = d->s;
    if (s->format == E2EE_F_ACI_V2)
        return aci_keys_open_hex(d->aci, (int)s->req_cipher, hex, hex_n, aad, aad_n, pt, cap, pn);
    if (v1_trial(s)) {
        int used = 0;
        int rc = signer_e2ee_open_v1_ed25519(d->signer, hex, hex_n, pt, cap, pn, &used);
        if (rc == E2EE_OK) {
            s->cipher_fixed = 1;
            s->req_cipher = (e2ee_cipher_t)used;
        }
        return rc;
    }
    return signer_e2ee_open_hex(d->signer, (int)s->req_cipher, hex, hex_n, aad, aad_n, pt, cap,
                                pn);
}

/* One encrypted string field → its plaintext as a new json-c value in *out (a string, or the
 * array it spells when restore_array and it parses as one). lenient (NEAR's all-fields set,
 * §3.4): a value that cannot be a sealed field (not hex, odd, shorter than the smallest blob)
 * is left as it is; one that can must open. 0 replaced, 1 left, -1 failed (d->err set). */
static int open_field(dctx_t *d, json_object *v, size_t m, long c, int restore_array, int lenient,
                      json_object **out)
{
    e2ee_sess_t *s = d->s;
    *out = NULL;
    const char *hex = json_object_get_string(v);
    size_t hex_n = (size_t)json_object_get_string_len(v);
    size_t skip = s->format == E2EE_F_ACI_V2 && hex_n >= 2 && hex[0] == '0' &&
                          (hex[1] == 'x' || hex[1] == 'X')
                      ? 2
                      : 0; /* ACI: an optional 0x (§7.2) */
    int is_hex = hex_n > skip && (hex_n - skip) % 2 == 0 && hex_is_hex(hex + skip, hex_n - skip);
    if (lenient) {
        size_t min = 2 * e2ee_blob_len(v1_trial(s) ? E2EE_C_X25519_AESGCM : s->req_cipher, 0);
        if (!is_hex || hex_n < min)
            return 1;
    }
    if (!is_hex) {
        field_fail(d, s->format == E2EE_F_ACI_V2 ? APP_E_E2EE_DECRYPTION_FAILED
                                                 : APP_E_E2EE_INVALID_REQUEST,
                   "Encrypted field is not valid hex");
        return -1;
    }
    char aad[4096]; /* the AAD carries the model name (ACI: JCS-escaped) */
    size_t aad_n = 0;
    if (s->format == E2EE_F_ACI_V2 &&
        e2ee_aad_aci(aad, sizeof aad, &aad_n, s->req_cipher, d->model, d->model_n, NULL, 0,
                     d->path, s->nonce, s->nonce_n, s->ts) != E2EE_OK) {
        field_fail(d, APP_E_E2EE_DECRYPTION_FAILED, "Decryption failed");
        return -1;
    }
    if (s->format == E2EE_F_DSTACK_V2 &&
        e2ee_aad_dstack_req(aad, sizeof aad, &aad_n, s->algo, d->model, d->model_n, m, c, s->nonce,
                            s->nonce_n, s->ts) != E2EE_OK) {
        field_fail(d, APP_E_E2EE_DECRYPTION_FAILED, "Decryption failed");
        return -1;
    }
    size_t cap = hex_n / 2 + 1, pn = 0;
    uint8_t *pt = malloc(cap);
    if (!pt) {
        d->err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    int rc = open_bytes(d, hex, hex_n, aad_n ? (const uint8_t *)aad : NULL, aad_n, pt, cap, &pn);
    json_object *o = NULL;
    if (rc != E2EE_OK) {
        field_fail(d, APP_E_E2EE_DECRYPTION_FAILED, "Decryption failed");
    } else if (!utf8_ok(pt, pn)) {
        field_fail(d, APP_E_E2EE_DECRYPTION_FAILED, "Decrypted content is not valid UTF-8");
    } else {
        size_t i = 0;
        while (i < pn && (pt[i] == ' ' || pt[i] == '\t' || pt[i] == '\r' || pt[i] == '\n'))
            i++;
        if (restore_array && i < pn && pt[i] == '[') {
            o = e2ee_json_parse((const char *)pt, pn);
            if (o && !json_object_is_type(o, json_type_array)) {
                e2ee_json_wipe_put(o);
                o = NULL;
            }
        }
        if (!o)
            o = json_object_new_string_len((const char *)pt, (int)pn);
        if (!o)
            d->err = APP_E_OUT_OF_MEMORY;
    }
    sodium_memzero(pt, cap);
    free(pt);
    *out = o;
    return o ? 0 : -1;
}

/* Replaces member key of parent with nv (parent keeps the old value's wipe). */
static int replace_member(json_object *parent, const char *key, json_object *nv)
{
    json_object *old = NULL;
    if (json_object_object_get_ex(parent, key, &old))
        wipe_tree(old);
    return json_object_object_add(parent, key, nv);
}

static json_object *member(json_object *o, const char *key, json_type t)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, t))
        return NULL;
    return v;
}

/* Dstack v1/v2 request fields (§5.2): messages[i].content, string or text parts. */
static int decrypt_dstack(dctx_t *d, json_object *root)
{
    json_object *msgs = member(root, "messages", json_type_array);
    for (size_t m = 0; msgs && m < json_object_array_length(msgs); m++) {
        json_object *msg = json_object_array_get_idx(msgs, m), *content = NULL, *nv = NULL;
        if (!json_object_is_type(msg, json_type_object) ||
            !json_object_object_get_ex(msg, "content", &content) || !content)
            continue;
        if (json_object_is_type(content, json_type_string)) {
            if (open_field(d, content, m, -1, 1, 0, &nv) != 0 ||
                replace_member(msg, "content", nv) != 0)
                return -1;
        } else if (json_object_is_type(content, json_type_array)) {
            for (size_t c = 0; c < json_object_array_length(content); c++) {
                json_object *part = json_object_array_get_idx(content, c);
                json_object *type = member(part, "type", json_type_string);
                json_object *text = member(part, "text", json_type_string);
                if (!type || strcmp(json_object_get_string(type), "text") != 0 || !text)
                    continue;
                if (open_field(d, text, m, (long)c, 0, 0, &nv) != 0 ||
                    replace_member(part, "text", nv) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* One NEAR field: a non-empty string member of obj, decrypted in place (§3.4; the empty
 * string is never encrypted). parse_object: a plaintext that is a JSON object replaces the
 * string (tools[].function.parameters). */
static int near_field(dctx_t *d, json_object *obj, const char *key, size_t m, int restore_array,
                      int lenient, int parse_object)
{
    json_object *v = member(obj, key, json_type_string), *nv = NULL;
    if (!v || json_object_get_string_len(v) == 0)
        return 0;
    int rc = open_field(d, v, m, -1, restore_array, lenient, &nv);
    if (rc != 0)
        return rc > 0 ? 0 : -1;
    if (parse_object) {
        json_object *o = e2ee_json_parse(json_object_get_string(nv),
                                         (size_t)json_object_get_string_len(nv));
        if (o && json_object_is_type(o, json_type_object)) {
            e2ee_json_wipe_put(nv);
            nv = o;
        } else if (o) {
            e2ee_json_wipe_put(o);
        }
    }
    if (replace_member(obj, key, nv) != 0) {
        d->err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    return 0;
}

/* {arguments, name} of a function call object (all-fields, lenient). */
static int near_call(dctx_t *d, json_object *fn, size_t m)
{
    return fn ? (near_field(d, fn, "arguments", m, 0, 1, 0) || near_field(d, fn, "name", m, 0, 1, 0)
                     ? -1
                     : 0)
              : 0;
}

/* NEAR v1/v2 and the v1 family (§3.4): per message content (a string, restored when it spells
 * an array; an array passes unencrypted, except that a v1 request with X-Model-Pub-Key may be
 * a Dstack v1 client whose text parts are encrypted), reasoning_content, reasoning,
 * audio.data; with all-fields the tool and function fields, leniently. */
static int decrypt_near(dctx_t *d, json_object *root)
{
    int all = d->s->all_fields;
    json_object *msgs = member(root, "messages", json_type_array);
    for (size_t m = 0; msgs && m < json_object_array_length(msgs); m++) {
        json_object *msg = json_object_array_get_idx(msgs, m), *nv = NULL;
        if (!json_object_is_type(msg, json_type_object))
            continue;
        json_object *parts = member(msg, "content", json_type_array);
        if (near_field(d, msg, "content", m, 1, 0, 0) != 0)
            return -1;
        for (size_t c = 0; d->dstack_parts && parts && c < json_object_array_length(parts); c++) {
            json_object *part = json_object_array_get_idx(parts, c);
            json_object *type = member(part, "type", json_type_string);
            json_object *text = member(part, "text", json_type_string);
            if (!type || strcmp(json_object_get_string(type), "text") != 0 || !text ||
                json_object_get_string_len(text) == 0)
                continue;
            if (open_field(d, text, m, (long)c, 0, 0, &nv) != 0 ||
                replace_member(part, "text", nv) != 0)
                return -1;
        }
        if (near_field(d, msg, "reasoning_content", m, 0, 0, 0) != 0 ||
            near_field(d, msg, "reasoning", m, 0, 0, 0) != 0 ||
            near_field(d, member(msg, "audio", json_type_object), "data", m, 0, 0, 0) != 0)
            return -1;
        if (!all)
            continue;
        if (near_field(d, msg, "refusal", m, 0, 1, 0) != 0 ||
            near_field(d, msg, "name", m, 0, 1, 0) != 0 ||
            near_call(d, member(msg, "function_call", json_type_object), m) != 0)
            return -1;
        json_object *tcs = member(msg, "tool_calls", json_type_array);
        for (size_t i = 0; tcs && i < json_object_array_length(tcs); i++)
            if (near_call(d, member(json_object_array_get_idx(tcs, i), "function", json_type_object),
                          m) != 0)
                return -1;
    }
    if (!all)
        return 0;
    json_object *tools = member(root, "tools", json_type_array);
    for (size_t i = 0; tools && i < json_object_array_length(tools); i++) {
        json_object *fn = member(json_object_array_get_idx(tools, i), "function", json_type_object);
        if (fn && (near_field(d, fn, "name", 0, 0, 1, 0) != 0 ||
                   near_field(d, fn, "description", 0, 0, 1, 0) != 0 ||
                   near_field(d, fn, "parameters", 0, 0, 1, 1) != 0))
            return -1;
    }
    json_object *tc = member(member(root, "tool_choice", json_type_object), "function",
                             json_type_object);
    if (tc && near_field(d, tc, "name", 0, 0, 1, 0) != 0)
        return -1;
    json_object *fc = member(root, "function_call", json_type_object);
    if (fc && near_field(d, fc, "name", 0, 0, 1, 0) != 0)
        return -1;
    return 0;
}

/* ---- the other routes' request fields (§3.4, §7.3) ---- */

static void set_msg(char msg[E2EE_MSG_MAX], const char *m);

/* Replaces element i of arr with nv (the old value wiped first). */
static int replace_elem(dctx_t *d, json_object *arr, size_t i, json_object *nv)
{
    wipe_tree(json_object_array_get_idx(arr, i));
    if (json_object_array_put_idx(arr, i, nv) != 0) {
        e2ee_json_wipe_put(nv);
        d->err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    return 0;
}

/* NEAR: obj[key] as a string, or each string element of an array (completions `prompt`,
 * embeddings `input`, score `text_1` / `text_2`), decrypted strictly (a field that does not
 * open fails the request); the empty string and elements that are not strings (token ids)
 * pass, as NEAR passes them. */
static int near_str_or_list(dctx_t *d, json_object *obj, const char *key)
{
    json_object *arr = member(obj, key, json_type_array);
    if (!arr)
        return near_field(d, obj, key, 0, 0, 0, 0);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *v = json_object_array_get_idx(arr, i), *nv = NULL;
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
            continue;
        if (open_field(d, v, 0, -1, 0, 0, &nv) != 0 || replace_elem(d, arr, i, nv) != 0)
            return -1;
    }
    return 0;
}

/* NEAR's fields of the routes other than chat (§3.4): completions `prompt`, embeddings
 * `input`, rerank `query` and `documents[]` (a string or its `.text`), score `text_1` and
 * `text_2`, image generations `prompt`. */
static int decrypt_near_route(dctx_t *d, json_object *root, int route)
{
    switch (route) {
    case E2EE_ROUTE_COMPLETIONS: return near_str_or_list(d, root, "prompt");
    case E2EE_ROUTE_EMBEDDINGS: return near_str_or_list(d, root, "input");
    case E2EE_ROUTE_IMAGES: return near_field(d, root, "prompt", 0, 0, 0, 0);
    case E2EE_ROUTE_SCORE:
        return near_str_or_list(d, root, "text_1") || near_str_or_list(d, root, "text_2") ? -1 : 0;
    case E2EE_ROUTE_RERANK: {
        if (near_field(d, root, "query", 0, 0, 0, 0) != 0)
            return -1;
        json_object *docs = member(root, "documents", json_type_array);
        for (size_t i = 0; docs && i < json_object_array_length(docs); i++) {
            json_object *v = json_object_array_get_idx(docs, i), *nv = NULL;
            if (json_object_is_type(v, json_type_object)) {
                if (near_field(d, v, "text", 0, 0, 0, 0) != 0)
                    return -1;
            } else if (json_object_is_type(v, json_type_string) &&
                       json_object_get_string_len(v) > 0) {
                if (open_field(d, v, 0, -1, 0, 0, &nv) != 0 || replace_elem(d, docs, i, nv) != 0)
                    return -1;
            }
        }
        return 0;
    }
    default: return -1;
    }
}

/* Members of a request that the engine answers with text no format encrypts: the completions
 * route's logprobs (token strings) and vLLM's prompt_logprobs. A request asking for them is
 * refused rather than answered partly in clear. The member's name, or NULL. */
static const char *clear_answer_member(json_object *root, int route)
{
    static const char *const names[] = {"logprobs", "prompt_logprobs"};
    if (route != E2EE_ROUTE_COMPLETIONS)
        return NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        json_object *v = NULL;
        if (json_object_object_get_ex(root, names[i], &v) && v &&
            !(json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v)))
            return names[i];
    }
    return NULL;
}

static void clear_answer_refusal(const char *name, app_error_t *err, char msg[E2EE_MSG_MAX])
{
    char m[E2EE_MSG_MAX];
    *err = APP_E_E2EE_UNSUPPORTED_FIELD;
    snprintf(m, sizeof m, "%s would be answered in clear: not supported with E2EE on /v1/completions",
             name);
    set_msg(msg, m);
}

/* The Dstack fork's answer on every route but chat completions (§5.2). */
#define DSTACK_CHAT_ONLY "E2EE is only supported on /v1/chat/completions"

#define NEAR_BOTH "Both X-Signing-Algo and X-Client-Pub-Key headers must be present together"

static void set_msg(char msg[E2EE_MSG_MAX], const char *m)
{
    snprintf(msg, E2EE_MSG_MAX, "%.160s; the request was not forwarded", m);
}

/* A header value for a message: at most 40 bytes, printable ASCII (others as '?'). */
static void shown(char out[48], strv_t v)
{
    size_t n = v.n < 40 ? v.n : 40;
    for (size_t i = 0; i < n; i++)
        out[i] = v.p[i] >= 0x20 && v.p[i] < 0x7f ? v.p[i] : '?';
    out[n] = '\0';
}

/* The selection errors with NEAR's messages (§3.5) where they apply to the v1 family and NEAR
 * v2 too; Dstack v2's own pieces keep the table's messages. */
static void select_msg(const http_req_t *req, int rc, char msg[E2EE_MSG_MAX])
{
    char v[48], m[E2EE_MSG_MAX];
    if (rc == E2EE_ERR_HEADER_MISSING && !(req->e2ee_present & (1u << HTTP_E2EE_CLIENT_PUB_KEY))) {
        set_msg(msg, NEAR_BOTH);
    } else if (rc == E2EE_ERR_SIGNING_ALGO) {
        shown(v, req->e2ee[HTTP_E2EE_SIGNING_ALGO]);
        snprintf(m, sizeof m, "Invalid X-Signing-Algo: %s. Must be 'ecdsa' or 'ed25519'", v);
        set_msg(msg, m);
    } else if (rc == E2EE_ERR_VERSION && !(req->e2ee_present & (1u << HTTP_E2EE_VERSION))) {
        shown(v, req->e2ee[HTTP_E2EE_ENCRYPTION_VERSION]);
        snprintf(m, sizeof m, "Invalid X-Encryption-Version: %s. Must be 1 or 2", v);
        set_msg(msg, m);
    }
}

/* X-Client-Pub-Key with NEAR's messages (§3.5): not hex, the wrong length, or (checked here
 * before anything is forwarded; the NEAR server finds it only when it encrypts the answer)
 * not a point. */
static int client_key(e2ee_sess_t *s, strv_t k, char msg[E2EE_MSG_MAX])
{
    e2ee_cipher_t kc = s->algo == E2EE_ALGO_ECDSA ? E2EE_C_SECP_AESGCM : E2EE_C_X25519_AESGCM;
    int rc = e2ee_parse_client_key(kc, 0, k.p ? k.p : "", k.n, s->client, &s->client_n);
    if (rc == E2EE_OK || s->format == E2EE_F_DSTACK_V2)
        return rc;
    char m[E2EE_MSG_MAX];
    size_t len = k.n / 2;
    if (k.n % 2 || !hex_is_hex(k.p ? k.p : "", k.n))
        snprintf(m, sizeof m, "X-Client-Pub-Key must be valid hex");
    else if (s->algo == E2EE_ALGO_ED25519 && len != 32)
        snprintf(m, sizeof m, "Ed25519 client public key must be 32 bytes, got %zu", len);
    else if (s->algo == E2EE_ALGO_ECDSA && len != 64 && len != 65)
        snprintf(m, sizeof m, "ECDSA client public key must be 64 or 65 bytes, got %zu", len);
    else
        snprintf(m, sizeof m, "Invalid %s client public key: not a point of the curve",
                 s->algo == E2EE_ALGO_ECDSA ? "ECDSA" : "Ed25519");
    set_msg(msg, m);
    return rc;
}

/* ---- ACI E2EE v2 (formats document §7) ---- */

/* One ACI field at path: a string member of obj, opened with the JCS AAD of its path and
 * replaced by its plaintext (restore_array: a whole content that spells a JSON array becomes
 * that array, §7.3). A present member that is not a string is left alone. */
static int aci_field(dctx_t *d, json_object *obj, const char *key, const char *path,
                     int restore_array)
{
    json_object *v = member(obj, key, json_type_string), *nv = NULL;
    if (!v)
        return 0;
    d->path = path;
    if (open_field(d, v, 0, -1, restore_array, 0, &nv) != 0)
        return -1;
    if (replace_member(obj, key, nv) != 0) {
        d->err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    d->opened++;
    return 0;
}

/* Chat request fields (§7.3): messages.{m}.content (a string: the whole content), or per part
 * messages.{m}.content.{c}.text, .image_url.url, .input_audio.data. */
static int decrypt_aci(dctx_t *d, json_object *root)
{
    char path[96];
    json_object *msgs = member(root, "messages", json_type_array);
    for (size_t m = 0; msgs && m < json_object_array_length(msgs); m++) {
        json_object *msg = json_object_array_get_idx(msgs, m);
        json_object *parts = member(msg, "content", json_type_array);
        snprintf(path, sizeof path, "messages.%zu.content", m);
        /* a string content is the whole content (restored as an array when it spells one,
         * and then not opened again); an array's parts are fields of their own */
        if (aci_field(d, msg, "content", path, 1) != 0)
            return -1;
        for (size_t c = 0; parts && c < json_object_array_length(parts); c++) {
            json_object *part = json_object_array_get_idx(parts, c);
            snprintf(path, sizeof path, "messages.%zu.content.%zu.text", m, c);
            if (aci_field(d, part, "text", path, 0) != 0)
                return -1;
            snprintf(path, sizeof path, "messages.%zu.content.%zu.image_url.url", m, c);
            if (aci_field(d, member(part, "image_url", json_type_object), "url", path, 0) != 0)
                return -1;
            snprintf(path, sizeof path, "messages.%zu.content.%zu.input_audio.data", m, c);
            if (aci_field(d, member(part, "input_audio", json_type_object), "data", path, 0) != 0)
                return -1;
        }
    }
    return 0;
}

/* ACI on completions and embeddings (§7.3): `prompt` / `input` as a string (path `prompt`),
 * or each string element of an array (path `prompt.{i}`); other elements pass. */
static int decrypt_aci_route(dctx_t *d, json_object *root, int route)
{
    const char *key = route == E2EE_ROUTE_COMPLETIONS ? "prompt" : "input";
    char path[48];
    json_object *arr = member(root, key, json_type_array);
    if (!arr)
        return aci_field(d, root, key, key, 0);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *v = json_object_array_get_idx(arr, i), *nv = NULL;
        if (!json_object_is_type(v, json_type_string))
            continue;
        snprintf(path, sizeof path, "%s.%zu", key, i);
        d->path = path;
        if (open_field(d, v, 0, -1, 0, 0, &nv) != 0 || replace_elem(d, arr, i, nv) != 0)
            return -1;
        d->opened++;
    }
    return 0;
}

/* ACI's own messages where the table's speak of the legacy formats. */
static const char *aci_msg(int rc)
{
    switch (rc) {
    case E2EE_ERR_HEADER_MISSING:
        return "E2EE v2 needs X-E2EE-Version, X-Client-Pub-Key, X-Model-Pub-Key, X-E2EE-Nonce and "
               "X-E2EE-Timestamp";
    case E2EE_ERR_VERSION: return "X-E2EE-Version must be 2";
    case E2EE_ERR_NONCE: return "X-E2EE-Nonce must be exactly 64 hex characters";
    case E2EE_ERR_TIMESTAMP: return "X-E2EE-Timestamp must be Unix seconds within the replay window";
    case E2EE_ERR_MODEL_KEY_MISMATCH:
        return "X-Model-Pub-Key is not one of this service's attested E2EE v2 keys "
               "(GET /v1/aci/attestation)";
    case E2EE_ERR_PUBLIC_KEY:
        return "X-Client-Pub-Key is not a valid public key for the selected suite";
    default: return NULL;
    }
}

static int aci_fail(int rc, app_error_t *err, char msg[E2EE_MSG_MAX], e2ee_sess_t *s)
{
    *err = err_of(rc);
    const char *m = aci_msg(rc);
    if (rc == E2EE_ERR_TIMESTAMP)
        snprintf(msg, E2EE_MSG_MAX,
                 "X-E2EE-Timestamp must be Unix seconds within %u seconds of the server's time; "
                 "the request was not forwarded",
                 g_window);
    else if (m)
        set_msg(msg, m);
    e2ee_sess_free(s);
    return -1;
}

/* A request whose answer would carry generated text that its format does not encrypt
 * (token log-probabilities, token ids, tool or function calls): refused before anything is
 * forwarded, with the reason in msg. NEAR's all-fields mode encrypts log-probabilities and
 * calls (§3.4); no format encrypts prompt log-probabilities or token ids. 1 when refused. */
static int asks_for_clear_output(const e2ee_sess_t *s, json_object *root, char msg[E2EE_MSG_MAX])
{
    /* NEAR's all-fields header (the response check, e2ee_resp.c, catches a request that
     * turns out not to be answered by NEAR's rules) */
    int sealed_extra =
        s->all_fields && (s->format == E2EE_F_V1 || s->format == E2EE_F_NEAR_V2);
    json_object *v = NULL;
    if (json_object_object_get_ex(root, "prompt_logprobs", &v) && v) {
        set_msg(msg, "prompt_logprobs would be returned in clear: no E2EE format encrypts it");
        return 1;
    }
    if (json_object_object_get_ex(root, "return_token_ids", &v) && json_object_get_boolean(v)) {
        set_msg(msg, "return_token_ids would return the tokens in clear: no E2EE format "
                     "encrypts them");
        return 1;
    }
    if (sealed_extra)
        return 0;
    json_object *tl = NULL;
    if ((json_object_object_get_ex(root, "logprobs", &v) && json_object_get_boolean(v)) ||
        (json_object_object_get_ex(root, "top_logprobs", &tl) && json_object_get_int64(tl) > 0)) {
        set_msg(msg, "logprobs would be returned in clear: this E2EE format does not encrypt "
                     "them (NEAR encrypts them with X-Encrypt-All-Fields: true)");
        return 1;
    }
    json_object *tc = NULL;
    int none = json_object_object_get_ex(root, "tool_choice", &tc) &&
               json_object_is_type(tc, json_type_string) &&
               strcmp(json_object_get_string(tc), "none") == 0;
    static const char *const calls[] = {"tools", "functions"};
    for (size_t i = 0; i < 2 && !none; i++)
        if (json_object_object_get_ex(root, calls[i], &v) &&
            json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0) {
            set_msg(msg, "tool calls would be returned in clear: this E2EE format does not "
                         "encrypt them (NEAR encrypts them with X-Encrypt-All-Fields: true)");
            return 1;
        }
    return 0;
}

/* ACI E2EE v2 in the gateway's order (§7.4): presence and version, nonce, timestamp, key
 * selection, client key, body JSON, model, replay claim, decryption. */
static int aci_request(const app_t *app, const http_req_t *req, int route, int sel_rc,
                       strv_t body, buf_t *out, e2ee_sess_t **sess, app_error_t *err,
                       char msg[E2EE_MSG_MAX])
{
    if (route != E2EE_ROUTE_CHAT && route != E2EE_ROUTE_COMPLETIONS &&
        route != E2EE_ROUTE_EMBEDDINGS) {
        /* §7.3: ACI defines no fields there (the gateway answers before the headers) */
        *err = APP_E_E2EE_UNSUPPORTED_ENDPOINT;
        return -1;
    }
    if (sel_rc == E2EE_OK && !app->aci) {
        *err = APP_E_E2EE_V2_NOT_SUPPORTED;
        return -1;
    }
    if (sel_rc != E2EE_OK)
        return aci_fail(sel_rc, err, msg, NULL);
    e2ee_sess_t *s = calloc(1, sizeof *s);
    if (!s) {
        *err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    s->format = E2EE_F_ACI_V2;
    s->version = 2;
    s->route = route;
    strv_t nv = req->e2ee[HTTP_E2EE_NONCE], tv = req->e2ee[HTTP_E2EE_TIMESTAMP];
    strv_t mk = req->e2ee[HTTP_E2EE_MODEL_PUB_KEY], ck = req->e2ee[HTTP_E2EE_CLIENT_PUB_KEY];
    int rc = nv.n <= E2EE_NONCE_MAX ? e2ee_check_nonce(E2EE_F_ACI_V2, nv.p ? nv.p : "", nv.n)
                                    : E2EE_ERR_NONCE;
    if (rc != E2EE_OK)
        return aci_fail(rc, err, msg, s);
    memcpy(s->nonce, nv.p, nv.n);
    s->nonce_n = nv.n;
    rc = e2ee_parse_timestamp(E2EE_F_ACI_V2, tv.p ? tv.p : "", tv.n, (int64_t)clock_wall_s(),
                              (int64_t)g_window, &s->ts);
    if (rc != E2EE_OK)
        return aci_fail(rc, err, msg, s);
    static const e2ee_cipher_t suites[] = {E2EE_C_ACI_X25519, E2EE_C_ACI_SECP256K1};
    const uint8_t *svc = NULL;
    size_t svc_n = 0;
    for (size_t i = 0; i < sizeof suites / sizeof *suites && !svc; i++) {
        size_t n;
        const uint8_t *ours = aci_keys_public(app->aci, (int)suites[i], &n);
        if (ours && e2ee_model_key_matches(suites[i], 1, mk.p ? mk.p : "", mk.n, ours, n)) {
            svc = ours;
            svc_n = n;
            s->cipher = s->req_cipher = suites[i];
        }
    }
    if (!svc)
        return aci_fail(E2EE_ERR_MODEL_KEY_MISMATCH, err, msg, s);
    rc = e2ee_parse_client_key(s->cipher, 1, ck.p ? ck.p : "", ck.n, s->client, &s->client_n);
    if (rc != E2EE_OK)
        return aci_fail(E2EE_ERR_PUBLIC_KEY, err, msg, s);
    json_object *root = e2ee_json_parse(body.p ? body.p : "", body.n);
    if (!root || !json_object_is_type(root, json_type_object)) {
        if (root)
            e2ee_json_wipe_put(root);
        *err = APP_E_INVALID_JSON;
        e2ee_sess_free(s);
        return -1;
    }
    json_object *model = member(root, "model", json_type_string);
    const char *clear = clear_answer_member(root, route);
    if (!model || clear) {
        e2ee_json_wipe_put(root);
        if (clear)
            clear_answer_refusal(clear, err, msg);
        else
            *err = APP_E_E2EE_INVALID_PAYLOAD_MODEL;
        e2ee_sess_free(s);
        return -1;
    }
    if (asks_for_clear_output(s, root, msg)) {
        e2ee_json_wipe_put(root);
        *err = APP_E_E2EE_UNSUPPORTED_FIELD;
        e2ee_sess_free(s);
        return -1;
    }
    s->model_n = (size_t)json_object_get_string_len(model);
    s->model = malloc(s->model_n + 1);
    int c = s->model ? replay_claim_aci(s, app->cfg->model_name, svc, svc_n) : -1;
    if (c != 0) {
        e2ee_json_wipe_put(root);
        *err = c > 0 ? APP_E_E2EE_REPLAY_DETECTED : APP_E_OUT_OF_MEMORY;
        if (c > 0)
            set_msg(msg, "this (client key, service key, nonce) was already used within the "
                         "replay window");
        e2ee_sess_free(s);
        return -1;
    }
    memcpy(s->model, json_object_get_string(model), s->model_n);
    s->model[s->model_n] = '\0';
    dctx_t d = {app->signer, s, s->model, s->model_n, APP_E_OUT_OF_MEMORY, msg, 0,
                app->aci, NULL, 0};
    int ok = (route == E2EE_ROUTE_CHAT ? decrypt_aci(&d, root) : decrypt_aci_route(&d, root, route)) == 0;
    if (ok && d.opened == 0) {
        ok = 0;
        d.err = APP_E_E2EE_DECRYPTION_FAILED;
        set_msg(msg, "an E2EE v2 request must carry at least one encrypted field");
    }
    if (ok && e2ee_json_append(out, root) != 0) {
        d.err = APP_E_OUT_OF_MEMORY;
        ok = 0;
    }
    e2ee_json_wipe_put(root);
    if (!ok) {
        e2ee_wipe_buf(out);
        *err = d.err;
        e2ee_sess_free(s);
        return -1;
    }
    char hints[E2EE_ACI_HINTS_MAX];
    e2ee_aci_hints(app, hints, sizeof hints);
    snprintf(s->hdrs, sizeof s->hdrs,
             "X-E2EE-Applied: true\r\nX-E2EE-Version: 2\r\nX-E2EE-Algo: %s\r\n%s",
             e2ee_aci_suite_name(s->cipher), hints);
    LOG_DEBUG("e2ee: ACI v2 %s request decrypted (%zu fields)", e2ee_aci_suite_name(s->cipher),
              d.opened);
    *sess = s;
    return 0;
}

int e2ee_request(const app_t *app, const http_req_t *req, strv_t body, buf_t *out,
                 e2ee_sess_t **sess, app_error_t *err, char msg[E2EE_MSG_MAX])
{
    *sess = NULL;
    msg[0] = '\0';
    int route = e2ee_route_of(req->path);
    if (route < 0) {
        *err = e2ee_route_refusal(req);
        return -1;
    }
    e2ee_headers_t h;
    e2ee_sel_t sel;
    headers_of(req, &h);
    if (route != E2EE_ROUTE_CHAT && (h.present & (1u << E2EE_H_SIGNING_ALGO)) &&
        (h.present & ((1u << E2EE_H_VERSION) | (1u << E2EE_H_NONCE) | (1u << E2EE_H_TIMESTAMP)))) {
        /* the Dstack fork's own headers: it encrypts chat completions only (§5.2) */
        *err = APP_E_E2EE_INVALID_REQUEST;
        set_msg(msg, DSTACK_CHAT_ONLY);
        return -1;
    }
    int rc = e2ee_select(&h, &sel);
    if (!(h.present & (1u << E2EE_H_SIGNING_ALGO))) {
        if (!(h.present & ~NEAR_SWITCHES)) {
            /* Only NEAR's own headers: NEAR needs X-Signing-Algo and X-Client-Pub-Key. The
             * NEAR server would answer in plaintext; a client that sent them asked for
             * encryption, so it is refused (fail closed). */
            *err = APP_E_E2EE_HEADER_MISSING;
            set_msg(msg, NEAR_BOTH);
            return -1;
        }
        return aci_request(app, req, route, rc, body, out, sess, err, msg);
    }
    if (rc != E2EE_OK) {
        *err = err_of(rc);
        select_msg(req, rc, msg);
        return -1;
    }
    e2ee_sess_t *s = calloc(1, sizeof *s);
    if (!s) {
        *err = APP_E_OUT_OF_MEMORY;
        return -1;
    }
    s->route = route;
    s->format = sel.format;
    s->algo = sel.algo;
    s->all_fields = sel.all_fields;
    s->version = s->format == E2EE_F_DSTACK_V2 ? 2 : 1;
    s->req_cipher = e2ee_legacy_cipher(s->format, s->algo); /* v1 ed25519: by trial */
    /* NEAR for certain (§1.2): NEAR v2, or a v1 request that no Dstack client sends (without
     * X-Model-Pub-Key, or with NEAR's X-Encrypt-All-Fields), or any v1 request on a route
     * other than chat (the fork has no fields there; an ed25519 field that opens with its
     * AES-GCM is refused below). Otherwise a v1 request is either family: ecdsa is the same
     * bytes in both, ed25519 is told apart by trial decryption. */
    int near_certain = s->format == E2EE_F_NEAR_V2 || route != E2EE_ROUTE_CHAT ||
                       (s->format == E2EE_F_V1 &&
                        (!sel.model_key_sent || (h.present & ((1u << E2EE_H_ALL_FIELDS) |
                                                              (1u << E2EE_H_TOOL_CALLS)))));
    const signer_t *sg = app->signer;
    const char *model = app->cfg->model_name;
    /* Order (§5.3): headers (client key, nonce, timestamp), model key, decrypt, replay claim.
     * NEAR (§3.5) checks the client key, then decrypts. */
    rc = client_key(s, req->e2ee[HTTP_E2EE_CLIENT_PUB_KEY], msg);
    if (rc == E2EE_OK && s->format == E2EE_F_DSTACK_V2) {
        strv_t nv = req->e2ee[HTTP_E2EE_NONCE], tv = req->e2ee[HTTP_E2EE_TIMESTAMP];
        rc = nv.n <= E2EE_NONCE_MAX ? e2ee_check_nonce(E2EE_F_DSTACK_V2, nv.p, nv.n)
                                    : E2EE_ERR_NONCE;
        if (rc == E2EE_OK) {
            memcpy(s->nonce, nv.p, nv.n);
            s->nonce_n = nv.n;
            rc = e2ee_parse_timestamp(E2EE_F_DSTACK_V2, tv.p, tv.n, (int64_t)clock_wall_s(),
                                      (int64_t)g_window, &s->ts);
        }
    }
    if (rc == E2EE_OK && sel.model_key_sent) {
        /* Dstack requires it; NEAR ignores it, but when a NEAR client sends it, it names the
         * key it encrypted to, so a mismatch is refused in every format (§1.2). */
        uint8_t ours[E2EE_SECP_PUB_LEN];
        size_t ours_n;
        if (s->algo == E2EE_ALGO_ECDSA) {
            ours[0] = 4;
            memcpy(ours + 1, signer_ecdsa_pubkey(sg), SIGNER_ECDSA_PUB_LEN);
            ours_n = 65;
        } else {
            memcpy(ours, signer_ed25519_pubkey(sg), 32);
            ours_n = 32;
        }
        strv_t mk = req->e2ee[HTTP_E2EE_MODEL_PUB_KEY];
        if (!e2ee_model_key_matches(s->algo == E2EE_ALGO_ECDSA ? E2EE_C_SECP_AESGCM
                                                               : E2EE_C_X25519_AESGCM,
                                    0, mk.p, mk.n, ours, ours_n))
            rc = E2EE_ERR_MODEL_KEY_MISMATCH;
    }
    if (rc != E2EE_OK) {
        *err = err_of(rc);
        e2ee_sess_free(s);
        return -1;
    }
    json_object *root = e2ee_json_parse(body.p ? body.p : "", body.n);
    if (!root || !json_object_is_type(root, json_type_object)) {
        if (root)
            e2ee_json_wipe_put(root);
        *err = APP_E_INVALID_JSON;
        e2ee_sess_free(s);
        return -1;
    }
    if (asks_for_clear_output(s, root, msg)) {
        e2ee_json_wipe_put(root);
        *err = APP_E_E2EE_UNSUPPORTED_FIELD;
        e2ee_sess_free(s);
        return -1;
    }
    size_t model_n;
    buf_t mtmp = BUF_INIT;
    const char *bm = e2ee_json_str(root, "model", &mtmp, &model_n);
    char *bmodel = bm ? malloc(model_n + 1) : NULL; /* model_n bytes, NULs included */
    if (bmodel) {
        memcpy(bmodel, bm, model_n);
        bmodel[model_n] = '\0';
    }
    e2ee_wipe_buf(&mtmp);
    dctx_t d = {sg, s, bmodel ? bmodel : "", bmodel ? model_n : 0, APP_E_OUT_OF_MEMORY, msg,
                s->format == E2EE_F_V1 && !near_certain, NULL, NULL, 0};
    const char *clear = clear_answer_member(root, route);
    int ok = bmodel && !clear &&
             (route != E2EE_ROUTE_CHAT          ? decrypt_near_route(&d, root, route)
              : s->format == E2EE_F_DSTACK_V2 ? decrypt_dstack(&d, root)
                                              : decrypt_near(&d, root)) == 0;
    if (bmodel)
        sodium_memzero(bmodel, model_n);
    free(bmodel);
    if (clear)
        clear_answer_refusal(clear, &d.err, msg);
    else if (ok && route != E2EE_ROUTE_CHAT && s->cipher_fixed &&
             s->req_cipher == E2EE_C_X25519_AESGCM) {
        /* a v1 ed25519 field that opened with AES-GCM is the Dstack fork's (§5.1), which
         * encrypts chat completions only (§5.2) */
        ok = 0;
        d.err = APP_E_E2EE_INVALID_REQUEST;
        set_msg(msg, DSTACK_CHAT_ONLY);
    }
    if (ok && e2ee_json_append(out, root) != 0) {
        d.err = APP_E_OUT_OF_MEMORY;
        ok = 0;
    }
    e2ee_json_wipe_put(root);
    if (ok && s->format == E2EE_F_DSTACK_V2) {
        int c = replay_claim(s, model, s->algo, s->ts, s->nonce, s->nonce_n);
        if (c != 0) {
            ok = 0;
            d.err = c > 0 ? APP_E_E2EE_REPLAY_DETECTED : APP_E_OUT_OF_MEMORY;
        }
    }
    if (!ok) {
        e2ee_wipe_buf(out);
        *err = d.err;
        e2ee_sess_free(s);
        return -1;
    }
    /* The answer's family and cipher (§1.2): the cipher the request used. */
    if (s->format == E2EE_F_DSTACK_V2) {
        s->cipher = s->req_cipher;
    } else if (s->format == E2EE_F_NEAR_V2 || s->algo == E2EE_ALGO_ECDSA) {
        s->cipher = s->req_cipher;
        s->near = near_certain;
    } else {
        /* v1 ed25519: the trial's cipher; with no field to try, NEAR's published clients'
         * XSalsa20 box (the NEAR server's XChaCha20 box is what those clients cannot open,
         * §3.3), or Dstack v1's AES-GCM when X-Model-Pub-Key left both possible. */
        s->cipher = s->cipher_fixed ? s->req_cipher
                    : near_certain  ? E2EE_C_NACL_XSALSA
                                    : E2EE_C_X25519_AESGCM;
        s->near = s->cipher != E2EE_C_X25519_AESGCM;
    }
    if (!s->near)
        snprintf(s->hdrs, sizeof s->hdrs,
                 "X-E2EE-Applied: true\r\nX-E2EE-Version: %d\r\nX-E2EE-Algo: %s\r\n", s->version,
                 s->algo == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519");
    LOG_DEBUG("e2ee: %s %s request decrypted",
              s->near ? (s->format == E2EE_F_NEAR_V2 ? "NEAR v2" : "NEAR v1")
              : s->format == E2EE_F_DSTACK_V2 ? "Dstack v2"
                                              : "v1 (Dstack-compatible)",
              s->algo == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519");
    *sess = s;
    return 0;
}
