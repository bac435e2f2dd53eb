/* libFuzzer target: the E2EE response encryptor (src/proxy/e2ee_resp.c, issue 10). The input
 * is the engine's answer (one JSON document, or an event stream) for a session of each
 * enabled format, fed in pieces split at fuzz-chosen points, as the relay feeds it.
 *
 * Input: byte 0 = the case: bits 0-3 the format (mod 9: NEAR v1 ecdsa / XSalsa box / XChaCha
 * box, NEAR v2 ecdsa / ed25519, Dstack v1 ecdsa / ed25519, Dstack v2 ecdsa / ed25519), bit 4
 * NEAR's X-Encrypt-All-Fields, bit 5 an event stream (else a JSON answer), bits 6-7 the route
 * (chat, completions, embeddings, rerank; on the last three only NEAR's five cases, mod 5, as
 * e2ee_request refuses the Dstack fork there); byte 1 = the seed of
 * the split points (up to 8 pieces); the rest = the engine's body. The session is built as
 * e2ee_request leaves it (tests/unit/test_e2ee_near_resp.c does the same), to a fixed client
 * key.
 *
 * Invariants checked (the expectation is computed here from the input, with json-c, from the
 * formats document's field lists, §3.4 and §5.2):
 *  - no crash, leak or sanitizer report;
 *  - framing: an event stream comes out line by line: every complete line that is not a
 *    `data:` line with JSON (other than [DONE]) exactly as it came, a JSON `data:` line as
 *    "data: " + one compact JSON value + the line's own ending; the unfinished last line is
 *    never sent; after a refusal (-1) nothing more is sent and what was sent is a prefix of
 *    those lines ending before a `data:` line. A JSON answer comes out whole at finish or not
 *    at all;
 *  - every field the format encrypts is a lowercase-hex string that opens with the client's
 *    key (Dstack v2: with the AAD of its choice and field) to exactly the engine's text (the
 *    logprobs bytes: to the array's JSON; completions choices[].text; embeddings
 *    data[].embedding, any value, to its JSON; rerank results[].document.text, §3.4); with
 *    that replaced, the output equals the engine's
 *    JSON (nothing else changed; Dstack's streamed empty content dropped). NEAR: a fresh
 *    ephemeral key per field; Dstack: one per request;
 *  - no plaintext: an encrypted text (6 bytes or more of [A-Za-z0-9 ]) that the input does
 *    not also carry in clear elsewhere is not in the output;
 *  - bounded memory: between feeds the session holds exactly the unfinished line (SSE), or
 *    the answer so far (JSON);
 *  - plaintext is never freed unwiped while the encryptor runs (a free hook looks for the
 *    seeds' marker), when the input carries the marker only in string values (the module
 *    wipes every value it parsed, sealed or not, but not member names). No exemption: the
 *    corpus files known_cut_json / known_cut_array are the two leaks this check once found
 *    (growth by realloc of json-c's printbufs and buf_t; a failed parse's values freed by
 *    json_tokener_free), fixed since, and replayed as regressions.
 *    FUZZ_E2EE_NO_WIPE_CHECK=1 turns the check off. */
#include "alloc_watch.h"
#include "fuzz.h"
#include <json-c/json.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "e2ee/e2ee.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

#define MARKER "zq-PLAIN-qz"
#define NONCE "fuzz-resp-nonce-0123456789"
#define TS 1800000000LL

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_e2ee_resp: check failed: %s: ", #cond);                   \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            dump();                                                                          \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static const uint8_t CLIENT_SK[32] = {0x31, 0x41, 0x59, 0x26, 0x53, 0x58, 0x97, 0x93,
                                      0x23, 0x84, 0x62, 0x64, 0x33, 0x83, 0x27, 0x95,
                                      0x02, 0x88, 0x41, 0x97, 0x16, 0x93, 0x99, 0x37,
                                      0x51, 0x05, 0x82, 0x09, 0x74, 0x94, 0x45, 0x92};

static struct {
    int init, wipe_check;
    volatile int unwiped;
} G;

/* Per input. */
static struct {
    buf_t out;
    e2ee_sess_t *s;
} K;

static void dump(void)
{
    fprintf(stderr, "---- output so far (%zu bytes):\n", K.out.len);
    if (K.out.data)
        fwrite(K.out.data, 1, K.out.len < 2048 ? K.out.len : 2048, stderr);
    fprintf(stderr, "\n----\n");
}

/* ---- the wipe check ---- */


static void free_hook(const volatile void *p)
{
    if (!watch_on || !p || !watch_tracked((const void *)(uintptr_t)p))
        return;
    size_t n = __sanitizer_get_allocated_size((const void *)(uintptr_t)p);
    if (n < sizeof MARKER - 1 ||
        !memmem((const void *)(uintptr_t)p, n, MARKER, sizeof MARKER - 1))
        return;
    watch_on = 0;
    G.unwiped++;
    fprintf(stderr, "fuzz_e2ee_resp: a freed block of %zu bytes holds plaintext:\n", n);
    fwrite((const void *)(uintptr_t)p, 1, n < 512 ? n : 512, stderr);
    fputc('\n', stderr);
    __sanitizer_print_stack_trace();
    watch_on = 1;
}

static void setup_once(void)
{
    if (G.init)
        return;
    G.init = 1;
    log_set_level(LOG_LVL_OFF);
    const char *nw = getenv("FUZZ_E2EE_NO_WIPE_CHECK");
    G.wipe_check = !(nw && nw[0] == '1');
    if (G.wipe_check)
        __sanitizer_install_malloc_and_free_hooks(watch_malloc_hook, free_hook);
}

/* ---- the session ---- */

typedef struct fcase {
    e2ee_format_t format;
    e2ee_algo_t algo;
    e2ee_cipher_t cipher;
    int near;
} fcase_t;

static const fcase_t CASES[] = {
    {E2EE_F_V1, E2EE_ALGO_ECDSA, E2EE_C_SECP_AESGCM, 1},
    {E2EE_F_V1, E2EE_ALGO_ED25519, E2EE_C_NACL_XSALSA, 1},
    {E2EE_F_V1, E2EE_ALGO_ED25519, E2EE_C_NACL_XCHACHA, 1},
    {E2EE_F_NEAR_V2, E2EE_ALGO_ECDSA, E2EE_C_SECP_AESGCM, 1},
    {E2EE_F_NEAR_V2, E2EE_ALGO_ED25519, E2EE_C_X25519_XCHACHA, 1},
    {E2EE_F_V1, E2EE_ALGO_ECDSA, E2EE_C_SECP_AESGCM, 0},
    {E2EE_F_V1, E2EE_ALGO_ED25519, E2EE_C_X25519_AESGCM, 0},
    {E2EE_F_DSTACK_V2, E2EE_ALGO_ECDSA, E2EE_C_SECP_AESGCM, 0},
    {E2EE_F_DSTACK_V2, E2EE_ALGO_ED25519, E2EE_C_X25519_AESGCM, 0},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

static e2ee_sess_t *new_sess(const fcase_t *c, int all_fields, int route)
{
    e2ee_sess_t *s = calloc(1, sizeof *s);
    CHECK(s != NULL, "calloc");
    s->route = route;
    s->format = c->format;
    s->algo = c->algo;
    s->version = c->format == E2EE_F_DSTACK_V2 ? 2 : 1;
    s->cipher = s->req_cipher = c->cipher;
    s->near = c->near;
    s->all_fields = c->near && all_fields;
    if (e2ee_cipher_curve_secp(c->cipher)) {
        CHECK(e2ee_secp_public(s->client, CLIENT_SK) == E2EE_OK, "secp pub");
        s->client_n = 65;
    } else {
        CHECK(e2ee_x25519_public(s->client, CLIENT_SK) == E2EE_OK, "x25519 pub");
        s->client_n = 32;
    }
    if (c->format == E2EE_F_DSTACK_V2) {
        memcpy(s->nonce, NONCE, sizeof NONCE - 1);
        s->nonce_n = sizeof NONCE - 1;
        s->ts = TS;
    }
    s->in = (buf_t)BUF_INIT;
    return s;
}

/* ---- the expectation ---- */

typedef struct vctx {
    const fcase_t *c;
    int sse, all, route;
    const e2ee_sess_t *s;
    json_object *resp_in; /* the engine's document (model, id for the AAD) */
    /* Dstack: the request's one ephemeral key (hex of its first bytes) */
    char eph[2 * E2EE_MAX_EPH + 1];
    /* NEAR: the ephemeral keys seen in this document */
    char (*ephs)[2 * E2EE_MAX_EPH + 1];
    size_t nephs, cap_ephs;
    /* plaintexts encrypted, for the no-plaintext check */
    char **pts;
    size_t npts, cap_pts;
} vctx_t;

static json_object *member(json_object *o, const char *k, json_type t)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &v) ||
        !json_object_is_type(v, t))
        return NULL;
    return v;
}

/* strict: json-c's strict mode (the engine's side: a document json-c reads only leniently,
 * such as 0e or a single-quoted string, is not compared; the module re-spells it). */
static json_object *parse_json(const char *p, size_t n, int strict)
{
    if (n > (size_t)INT32_MAX)
        return NULL;
    json_tokener *t = json_tokener_new_ex(64);
    CHECK(t != NULL, "tokener");
    if (strict)
        json_tokener_set_flags(t, JSON_TOKENER_STRICT);
    /* with a space after it: json-c takes a number at the very end of its input as unfinished */
    char *cp = malloc(n + 1);
    CHECK(cp != NULL, "malloc");
    memcpy(cp, p, n);
    cp[n] = ' ';
    json_object *o = json_tokener_parse_ex(t, cp, (int)n + 1);
    p = cp;
    n++;
    size_t end = o ? json_tokener_get_parse_end(t) : 0;
    if (o && json_tokener_get_error(t) == json_tokener_success)
        while (end < n && (p[end] == ' ' || p[end] == '\t' || p[end] == '\r' || p[end] == '\n'))
            end++;
    if (!o || json_tokener_get_error(t) != json_tokener_success || end != n) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(t);
    free(cp);
    return o;
}

static void remember_pt(vctx_t *v, const char *p, size_t n)
{
    if (v->npts == v->cap_pts) {
        v->cap_pts = v->cap_pts ? 2 * v->cap_pts : 16;
        v->pts = realloc(v->pts, v->cap_pts * sizeof *v->pts);
        CHECK(v->pts != NULL, "realloc");
    }
    v->pts[v->npts] = strndup(p, n);
    CHECK(v->pts[v->npts] != NULL, "strndup");
    v->npts++;
}

/* Output member `field` of oo sealed; input member of io (the engine's). Replaces the output
 * member with the engine's value once checked. as_json: the engine's value is an array
 * sealed as its JSON text. */
static void expect_sealed(vctx_t *v, json_object *io, json_object *oo, const char *field,
                          size_t choice, int as_json)
{
    json_object *iv = NULL, *ov = NULL;
    if (!io || !json_object_is_type(io, json_type_object) ||
        !json_object_object_get_ex(io, field, &iv) || !iv)
        return;
    int str = json_object_is_type(iv, json_type_string);
    /* as_json 2 (embeddings): any value but null, sealed as its JSON text */
    if (as_json == 2 ? json_object_is_type(iv, json_type_null)
                     : as_json ? !json_object_is_type(iv, json_type_array) : !str)
        return;
    if (str && !as_json && v->c->near && json_object_get_string_len(iv) == 0)
        return; /* NEAR leaves the empty string */
    CHECK(oo && json_object_object_get_ex(oo, field, &ov) && ov &&
              json_object_is_type(ov, json_type_string),
          "field %s of choice %zu not sealed", field, choice);
    const char *hex = json_object_get_string(ov);
    size_t hn = (size_t)json_object_get_string_len(ov);
    for (size_t i = 0; i < hn; i++)
        CHECK((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'),
              "field %s is not lowercase hex", field);
    char aad[1024];
    size_t an = 0;
    if (v->c->format == E2EE_F_DSTACK_V2) {
        size_t mn, in;
        buf_t mt = BUF_INIT, it = BUF_INIT;
        const char *m = e2ee_json_str(v->resp_in, "model", &mt, &mn);
        char *mc = m ? strndup(m, mn) : NULL;
        const char *id = e2ee_json_str(v->resp_in, "id", &it, &in);
        CHECK(mc && id &&
                  e2ee_aad_dstack_resp(aad, sizeof aad, &an, v->c->algo, mc, mn, id, in, choice,
                                       field, NONCE, sizeof NONCE - 1, TS) == E2EE_OK,
              "aad");
        free(mc);
        buf_free(&mt);
        buf_free(&it);
    }
    size_t cap = hn / 2 + 1, pn = 0;
    uint8_t *pt = malloc(cap);
    CHECK(pt != NULL, "malloc");
    CHECK(e2ee_open_hex(v->c->cipher, 0, CLIENT_SK, hex, hn, an ? (const uint8_t *)aad : NULL, an,
                        pt, cap, &pn) == E2EE_OK,
          "field %s of choice %zu does not open with the client's key", field, choice);
    /* the ephemeral key: one per field (NEAR), one per request (Dstack) */
    size_t el = 2 * e2ee_cipher_eph_len(v->c->cipher);
    CHECK(hn >= el, "short");
    if (v->c->near) {
        for (size_t i = 0; i < v->nephs; i++)
            CHECK(memcmp(v->ephs[i], hex, el) != 0, "NEAR: an ephemeral key used twice (%s)",
                  field);
        if (v->nephs == v->cap_ephs) {
            v->cap_ephs = v->cap_ephs ? 2 * v->cap_ephs : 16;
            v->ephs = realloc(v->ephs, v->cap_ephs * sizeof *v->ephs);
            CHECK(v->ephs != NULL, "realloc");
        }
        memcpy(v->ephs[v->nephs], hex, el);
        v->ephs[v->nephs++][el] = '\0';
    } else if (!v->eph[0]) {
        memcpy(v->eph, hex, el);
        v->eph[el] = '\0';
    } else {
        CHECK(memcmp(v->eph, hex, el) == 0, "Dstack: more than one ephemeral key per request");
    }
    json_object *back;
    if (as_json) {
        back = parse_json((const char *)pt, pn, 0);
        CHECK(back && json_object_equal(back, iv), "%s: the JSON text does not match", field);
    } else {
        CHECK(pn == (size_t)json_object_get_string_len(iv) &&
                  memcmp(pt, json_object_get_string(iv), pn) == 0,
              "field %s of choice %zu opens to other text", field, choice);
        back = json_object_new_string_len((const char *)pt, (int)pn);
        remember_pt(v, (const char *)pt, pn);
    }
    free(pt);
    json_object_object_add(oo, field, back);
}

static void expect_call(vctx_t *v, json_object *ifn, json_object *ofn, size_t i)
{
    expect_sealed(v, ifn, ofn, "arguments", i, 0);
    expect_sealed(v, ifn, ofn, "name", i, 0);
}

static void expect_logprobs(vctx_t *v, json_object *il, json_object *ol, size_t i, int top)
{
    for (size_t k = 0; il && ol && k < json_object_array_length(il) &&
                       k < json_object_array_length(ol);
         k++) {
        json_object *ie = json_object_array_get_idx(il, k), *oe = json_object_array_get_idx(ol, k);
        expect_sealed(v, ie, oe, "token", i, 0);
        expect_sealed(v, ie, oe, "bytes", i, 1);
        if (top)
            expect_logprobs(v, member(ie, "top_logprobs", json_type_array),
                            member(oe, "top_logprobs", json_type_array), i, 0);
    }
}

/* Checks the sealed fields of out against in (the engine's) and puts the engine's values
 * back into out, so that out must then equal in. */
/* Carries text: present and not null, "" or []. */
static int carries(json_object *o, const char *key)
{
    json_object *x = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &x) ||
        !x)
        return 0;
    if (json_object_is_type(x, json_type_string))
        return json_object_get_string_len(x) > 0;
    if (json_object_is_type(x, json_type_array))
        return json_object_array_length(x) > 0;
    return 1;
}

/* An answer that went out never carries generated text the format left unsealed: tool calls,
 * refusal and log-probabilities (unless NEAR's all-fields sealed them), token ids, audio
 * where the format does not seal its data, the other part (a message in a stream). */
static void expect_nothing_clear(vctx_t *v, json_object *in)
{
    const char *part = v->sse ? "delta" : "message", *other = v->sse ? "message" : "delta";
    CHECK(!carries(in, "prompt_logprobs") && !carries(in, "prompt_token_ids"),
          "prompt log-probabilities or token ids went out");
    json_object *ich = member(in, "choices", json_type_array);
    for (size_t i = 0; ich && i < json_object_array_length(ich); i++) {
        json_object *ic = json_object_array_get_idx(ich, i);
        json_object *im = member(ic, part, json_type_object);
        CHECK(!carries(ic, "token_ids") && !carries(ic, other), "token ids or %s went out", other);
        if (!v->all)
            CHECK(!carries(ic, "logprobs") && !carries(im, "tool_calls") &&
                      !carries(im, "function_call") && !carries(im, "refusal"),
                  "logprobs, a call or a refusal went out unsealed");
        if (!v->c->near && v->c->format != E2EE_F_V1)
            CHECK(!carries(im, "audio"), "audio went out unsealed");
    }
}

/* The routes other than chat (NEAR, §3.4): completions choices[].text, embeddings
 * data[].embedding (as JSON), rerank results[].document.text. */
static void expect_route(vctx_t *v, json_object *in, json_object *out)
{
    static const char *const arrays[] = {"", "choices", "data", "results"};
    json_object *ia = member(in, arrays[v->route], json_type_array);
    json_object *oa = member(out, arrays[v->route], json_type_array);
    for (size_t i = 0; ia && oa && i < json_object_array_length(ia) && i < json_object_array_length(oa);
         i++) {
        json_object *ie = json_object_array_get_idx(ia, i), *oe = json_object_array_get_idx(oa, i);
        if (v->route == E2EE_ROUTE_COMPLETIONS)
            expect_sealed(v, ie, oe, "text", i, 0);
        else if (v->route == E2EE_ROUTE_EMBEDDINGS)
            expect_sealed(v, ie, oe, "embedding", i, 2);
        else
            expect_sealed(v, member(ie, "document", json_type_object),
                          member(oe, "document", json_type_object), "text", i, 0);
    }
    CHECK(json_object_equal(in, out),
          "the output differs from the engine's answer beyond the sealed fields (route %d):\n  "
          "engine %s",
          v->route, json_object_to_json_string_ext(in, JSON_C_TO_STRING_PLAIN));
}

static void expect_doc(vctx_t *v, json_object *in, json_object *out)
{
    expect_nothing_clear(v, in);
    if (v->route != E2EE_ROUTE_CHAT) {
        expect_route(v, in, out);
        return;
    }
    const char *part = v->sse ? "delta" : "message";
    json_object *ich = member(in, "choices", json_type_array);
    json_object *och = member(out, "choices", json_type_array);
    for (size_t i = 0; ich && och && i < json_object_array_length(ich) &&
                       i < json_object_array_length(och);
         i++) {
        json_object *ic = json_object_array_get_idx(ich, i), *oc = json_object_array_get_idx(och, i);
        json_object *im = member(ic, part, json_type_object), *om = member(oc, part, json_type_object);
        if (v->c->near) {
            json_object *parts = member(im, "content", json_type_array);
            json_object *oparts = member(om, "content", json_type_array);
            for (size_t c = 0; parts && oparts && c < json_object_array_length(parts); c++)
                expect_sealed(v, json_object_array_get_idx(parts, c),
                              json_object_array_get_idx(oparts, c), "text", i, 0);
            expect_sealed(v, im, om, "content", i, 0);
            expect_sealed(v, im, om, "reasoning_content", i, 0);
            expect_sealed(v, im, om, "reasoning", i, 0);
            expect_sealed(v, member(im, "audio", json_type_object),
                          member(om, "audio", json_type_object), "data", i, 0);
            if (v->all) {
                expect_sealed(v, im, om, "refusal", i, 0);
                expect_call(v, member(im, "function_call", json_type_object),
                            member(om, "function_call", json_type_object), i);
                json_object *it = member(im, "tool_calls", json_type_array);
                json_object *ot = member(om, "tool_calls", json_type_array);
                for (size_t t = 0; it && ot && t < json_object_array_length(it); t++)
                    expect_call(v,
                                member(json_object_array_get_idx(it, t), "function",
                                       json_type_object),
                                member(json_object_array_get_idx(ot, t), "function",
                                       json_type_object),
                                i);
                json_object *il = member(ic, "logprobs", json_type_object);
                json_object *ol = member(oc, "logprobs", json_type_object);
                expect_logprobs(v, member(il, "content", json_type_array),
                                member(ol, "content", json_type_array), i, 1);
                expect_logprobs(v, member(il, "refusal", json_type_array),
                                member(ol, "refusal", json_type_array), i, 1);
            }
            continue;
        }
        if (!im)
            continue;
        json_object *c = member(im, "content", json_type_string);
        if (v->sse && c && json_object_get_string_len(c) == 0) {
            /* Dstack drops a streamed empty content */
            CHECK(!om || !json_object_object_get_ex(om, "content", NULL),
                  "streamed empty content not dropped");
            json_object_object_del(im, "content");
        }
        expect_sealed(v, im, om, "content", i, 0);
        expect_sealed(v, im, om, "reasoning_content", i, 0);
        /* the fork leaves reasoning in clear (§5.2); we seal it in both versions */
        expect_sealed(v, im, om, "reasoning", i, 0);
        if (v->c->format == E2EE_F_V1)
            expect_sealed(v, member(im, "audio", json_type_object),
                          member(om, "audio", json_type_object), "data", i, 0);
    }
    CHECK(json_object_equal(in, out),
          "the output differs from the engine's answer beyond the sealed fields:\n  engine %s",
          json_object_to_json_string_ext(in, JSON_C_TO_STRING_PLAIN));
}

/* One output document against one engine document (p: the engine's JSON text, q: ours). */
static void check_doc(vctx_t *v, const char *p, size_t n, const char *q, size_t qn)
{
    json_object *out = parse_json(q, qn, 0);
    CHECK(out != NULL, "the output is not one JSON value: %.*s", (int)(qn < 200 ? qn : 200), q);
    json_object *in = parse_json(p, n, 1);
    if (!in) { /* a document the module's parser takes and json-c's strict mode does not */
        json_object_put(out);
        return;
    }
    v->resp_in = in;
    expect_doc(v, in, out);
    json_object_put(in);
    json_object_put(out);
}

static size_t count(const char *h, size_t hn, const char *n, size_t nn)
{
    size_t k = 0;
    for (const char *p = h; nn && (p = memmem(p, hn - (size_t)(p - h), n, nn)) != NULL; p += nn)
        k++;
    return k;
}

static int plain_word(const char *p)
{
    size_t n = strlen(p);
    if (n < 6)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= '0' && p[i] <= '9') || p[i] == ' '))
            return 0;
    return 1;
}



/* Whether every marker of the input sits in a string value: the module wipes every value it
 * parsed, not member names. Conservative: the marker spelled literally (not through escapes),
 * inside a string whose opening quote follows ':' or '[' and whose closing quote is followed
 * by ',', '}' or ']' (quotes preceded by an odd run of backslashes are escaped). */
static int quote_at(const char *u, const char *q)
{
    size_t bs = 0;
    while (q - (ptrdiff_t)bs - 1 >= u && q[-(ptrdiff_t)bs - 1] == '\\')
        bs++;
    return *q == '"' && bs % 2 == 0;
}

static int ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int marker_in_values_only(const char *u, size_t un, size_t unescaped_count)
{
    size_t raw = 0;
    const char *end = u + un;
    for (const char *m = u; (m = memmem(m, (size_t)(end - m), MARKER, sizeof MARKER - 1)); m++) {
        raw++;
        const char *q = m;
        while (q > u && !quote_at(u, q - 1))
            q--;
        if (q == u)
            return 0;
        q--; /* the opening quote */
        while (q > u && ws(q[-1]))
            q--;
        if (q == u || (q[-1] != ':' && q[-1] != '['))
            return 0;
        const char *c = m + sizeof MARKER - 1;
        while (c < end && !quote_at(u, c))
            c++;
        if (c == end)
            return 0;
        for (c++; c < end && ws(*c); c++)
            ;
        if (c == end || (*c != ',' && *c != '}' && *c != ']'))
            return 0;
    }
    return raw == unescaped_count;
}

/* ---- one input ---- */

static void emit(void *ud, const char *p, size_t n)
{
    int was = watch_on; /* the harness's own buffer is not watched; the input's setting stays */
    watch_on = 0;
    CHECK(buf_append(ud, p, n) == 0, "append");
    watch_on = was;
}

static int is_sp(char c) { return c == ' ' || c == '\t'; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    watch_next_input();
    if (size < 2 || size > (1u << 20))
        return 0;
    int route = (data[0] >> 6) & 3; /* enum e2ee_route: chat, completions, embeddings, rerank */
    /* off chat only NEAR (the first five cases): e2ee_request refuses the Dstack fork there */
    const fcase_t *c = &CASES[(data[0] & 15u) % (route == E2EE_ROUTE_CHAT ? NCASES : 5)];
    int all = (data[0] >> 4) & 1, sse = (data[0] >> 5) & 1;
    uint32_t seed = data[1] * 2654435761u + 1;
    const char *body = (const char *)data + 2;
    size_t n = size - 2;

    /* the marker in clear anywhere but an encrypted field: decided below, after the fact */
    K.out = (buf_t)BUF_INIT;
    K.s = new_sess(c, all, route);
    e2ee_resp_begin(K.s, sse);
    G.unwiped = 0;
    size_t un = 0;
    char *ubody = watch_unescaped(body, n, &un);
    CHECK(ubody != NULL, "malloc");
    size_t umarks = count(ubody, un, MARKER, sizeof MARKER - 1);
    int watch = G.wipe_check && umarks > 0 && marker_in_values_only(body, n, umarks);
    watch_on = watch;

    /* the pieces */
    size_t pieces = 1 + (seed >> 29), off = 0, last_nl = 0;
    int rc = 0;
    for (size_t k = 0; k < pieces && off < n && rc == 0; k++) {
        seed = seed * 1103515245u + 12345u;
        size_t take = k + 1 == pieces ? n - off : (size_t)(seed >> 8) % (n - off + 1);
        rc = e2ee_resp_feed(K.s, body + off, take, emit, &K.out);
        off += take;
        if (rc == 0) {
            for (size_t i = off; i > 0; i--)
                if (body[i - 1] == '\n') {
                    last_nl = i;
                    break;
                }
            /* bounded: the session holds the unfinished line, or the answer so far */
            size_t held = sse ? off - last_nl : off;
            CHECK(K.s->in.len == held, "the session holds %zu bytes, expected %zu", K.s->in.len,
                  held);
            if (!sse)
                CHECK(K.out.len == 0, "a JSON answer emitted before the end");
        }
    }
    if (rc == 0 && off < n)
        rc = e2ee_resp_feed(K.s, body + off, n - off, emit, &K.out);
    int frc = e2ee_resp_finish(K.s, emit, &K.out);
    watch_on = 0;
    if (rc != 0)
        CHECK(frc == -1, "finish after a refusal answered %d", frc);
    CHECK(rc == 0 || rc == -1, "rc %d", rc);

    vctx_t v = {.c = c, .sse = sse, .all = c->near && all, .route = route, .s = K.s};
    if (!sse) {
        if (rc != 0 || frc != 0) {
            CHECK(K.out.len == 0, "a refused JSON answer emitted %zu bytes", K.out.len);
        } else {
            check_doc(&v, body, n, K.out.data ? K.out.data : "", K.out.len);
        }
    } else {
        /* the expected lines, in order; on a refusal the output stops before a data line */
        size_t i = 0, o = 0;
        const char *out = K.out.data ? K.out.data : "";
        while (i < n) {
            const char *nl = memchr(body + i, '\n', n - i);
            if (!nl)
                break; /* the unfinished last line: never sent */
            size_t ln = (size_t)(nl - (body + i)) + 1, bl = ln;
            const char *l = body + i;
            while (bl && (l[bl - 1] == '\n' || l[bl - 1] == '\r'))
                bl--;
            size_t vs = 5;
            int data_line = bl >= 5 && memcmp(l, "data:", 5) == 0;
            if (data_line)
                while (vs < bl && is_sp(l[vs]))
                    vs++;
            int json_line = data_line && !(bl - vs == 6 && memcmp(l + vs, "[DONE]", 6) == 0);
            if (o == K.out.len && (rc != 0 || frc != 0)) {
                CHECK(json_line, "the output stopped before a line that is not a JSON event");
                break;
            }
            if (!json_line) {
                CHECK(K.out.len - o >= ln && memcmp(out + o, l, ln) == 0,
                      "line at input offset %zu not passed as it came", i);
                o += ln;
            } else {
                CHECK(K.out.len - o >= 6 && memcmp(out + o, "data: ", 6) == 0,
                      "event at input offset %zu: no \"data: \"", i);
                const char *q = out + o + 6;
                const char *qe = memchr(q, '\n', K.out.len - o - 6);
                CHECK(qe != NULL, "event at input offset %zu: unterminated", i);
                size_t end_n = ln - bl; /* the line's own ending */
                size_t qn = (size_t)(qe - q) + 1 - end_n;
                CHECK((size_t)(qe - q) + 1 >= end_n && memcmp(q + qn, l + bl, end_n) == 0,
                      "event at input offset %zu: the line ending changed", i);
                CHECK(memchr(q, '\r', qn) == NULL && memchr(q, '\n', qn) == NULL,
                      "event JSON spans lines");
                check_doc(&v, l + vs, bl - vs, q, qn);
                o += 6 + qn + end_n;
            }
            i += ln;
        }
        CHECK(o == K.out.len, "%zu bytes of output beyond the expected lines", K.out.len - o);
    }

    if (getenv("FUZZ_E2EE_DEBUG"))
        fprintf(stderr, "fuzz_e2ee_resp: case %u all %d sse %d: feed %d finish %d, %zu bytes "
                        "out, %zu fields opened\n",
                (data[0] & 15u) % (unsigned)NCASES, all, sse, rc, frc, K.out.len, v.npts);
    /* no plaintext: an encrypted text not also in clear in the input is not in the output */
    for (size_t k = 0; k < v.npts; k++) {
        const char *pt = v.pts[k];
        if (!plain_word(pt))
            continue;
        size_t in_enc = 0;
        for (size_t j = 0; j < v.npts; j++)
            in_enc += count(v.pts[j], strlen(v.pts[j]), pt, strlen(pt));
        if (count(ubody, un, pt, strlen(pt)) == in_enc)
            CHECK(count(K.out.data ? K.out.data : "", K.out.len, pt, strlen(pt)) == 0,
                  "plaintext \"%s\" in the output", pt);
    }
    if (watch)
        CHECK(!G.unwiped, "plaintext freed without being wiped");

    free(ubody);
    for (size_t k = 0; k < v.npts; k++)
        free(v.pts[k]);
    free(v.pts);
    free(v.ephs);
    e2ee_sess_free(K.s);
    K.s = NULL;
    buf_free(&K.out);
    return 0;
}
