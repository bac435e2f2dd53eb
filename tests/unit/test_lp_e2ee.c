/* Unit tests for the local verifying proxy's E2EE codec (src/verify/lp_e2ee.c), round trips
 * against the SERVER's own code: a request sealed by the codec is opened by e2ee_request (what
 * the router calls, with a signer of known keys), and the engine's answer sealed by that
 * request's session (e2ee_resp_*, what the relay calls) is opened by the codec; the result
 * must be the engine's bytes. Then tampering, text in clear, refusals and the formats each
 * route takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "at.h"
#include "core/buf.h"
#include "core/hex.h"
#include "core/log.h"
#include "e2ee/e2ee.h"
#include "http/server.h"
#include "proxy/app.h"
#include "proxy/config.h"
#include "proxy/e2ee.h"
#include "proxy/errors.h"
#include "sign/signer.h"
#include "verify/lp_e2ee.h"

#define MODEL "test/lp-model"

#include "../fakes/signer_keys.h" /* ECDSA_SK, ED_SEED */

static struct {
    config_t cfg;
    app_t app;
    signer_t *signer;
    lp_pins_t pins;
} G;

static const char *const HNAMES[HTTP_E2EE_N] = {
    "X-Signing-Algo",       "X-Client-Pub-Key",     "X-Model-Pub-Key",
    "X-E2EE-Version",       "X-E2EE-Nonce",         "X-E2EE-Timestamp",
    "X-Encryption-Version", "X-Encrypt-All-Fields", "X-Encrypt-Tool-Calls"};

static int setup(void **st)
{
    (void)st;
    log_set_level(LOG_LVL_OFF);
    assert_int_equal(signer_global_init(), 0);
    G.signer = signer_from_secrets(ECDSA_SK, ED_SEED);
    assert_non_null(G.signer);
    snprintf(G.cfg.model_name, sizeof G.cfg.model_name, "%s", MODEL);
    G.cfg.workers = 1;
    G.app.cfg = &G.cfg;
    G.app.signer = G.signer;
    /* the pins as the attestation side publishes them: uncompressed secp256k1, Ed25519 */
    snprintf(G.pins.ecdsa_public_key, sizeof G.pins.ecdsa_public_key, "04%s",
             signer_ecdsa_pubkey_hex(G.signer));
    snprintf(G.pins.ed25519_key, sizeof G.pins.ed25519_key, "%s",
             signer_ed25519_pubkey_hex(G.signer));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    signer_free(G.signer);
    return 0;
}

static const char *cstr(buf_t *b)
{
    assert_int_equal(buf_append(b, "", 1), 0);
    b->len--;
    return b->data;
}

/* The server's request side on the codec's headers and body: 0 and the rewritten body and
 * session, or -1 and the error. */
static int server_open(const char *path, const char *const *hdrs, const buf_t *body, buf_t *plain,
                       e2ee_sess_t **sess, app_error_t *err)
{
    http_req_t req;
    memset(&req, 0, sizeof req);
    req.path = (strv_t){path, strlen(path)};
    for (size_t h = 0; hdrs[h]; h++) {
        const char *colon = strchr(hdrs[h], ':');
        assert_non_null(colon);
        int found = 0;
        for (int i = 0; i < HTTP_E2EE_N; i++)
            if ((size_t)(colon - hdrs[h]) == strlen(HNAMES[i]) &&
                strncasecmp(hdrs[h], HNAMES[i], strlen(HNAMES[i])) == 0) {
                const char *v = colon + 1;
                while (*v == ' ')
                    v++;
                req.e2ee[i] = (strv_t){v, strlen(v)};
                req.e2ee_present |= 1u << i;
                found = 1;
            }
        assert_true(found);
    }
    char msg[E2EE_MSG_MAX];
    return e2ee_request(&G.app, &req, (strv_t){body->data, body->len}, plain, sess, err, msg);
}

static void emit_cb(void *ud, const char *p, size_t n)
{
    assert_int_equal(buf_append(ud, p, n), 0);
}

/* The server's answer side: the engine's bytes sealed by the session. */
static int server_seal(e2ee_sess_t *s, int sse, const char *engine, buf_t *out)
{
    e2ee_resp_begin(s, sse);
    size_t n = strlen(engine), half = n / 2; /* in two pieces, as an engine's reads come */
    if (e2ee_resp_feed(s, engine, half, emit_cb, out) != 0 ||
        e2ee_resp_feed(s, engine + half, n - half, emit_cb, out) != 0)
        return -1;
    return e2ee_resp_finish(s, emit_cb, out);
}

/* json-c's equality of two JSON texts */
static int json_same(const char *a, size_t an, const char *b, size_t bn)
{
    json_object *x = json_tokener_parse(strndupa(a, an)), *y = json_tokener_parse(strndupa(b, bn));
    int eq = x && y && json_object_equal(x, y);
    json_object_put(x);
    json_object_put(y);
    return eq;
}

/* ---- one exchange ---- */

typedef struct exch {
    lp_e2ee_t *e;
    e2ee_sess_t *sess;
    buf_t sealed; /* the request as sent */
} exch_t;

/* Seals the request with the codec, checks that none of the secrets is in the bytes sent,
 * opens it with the server and checks the plaintext is the app's request. */
static void exchange_at(AT_PARAMS, exch_t *x, const char *format, const char *path,
                        const char *body, const char *const *secrets)
{
    lp_e2ee_err_t err = {"", ""};
    memset(x, 0, sizeof *x);
    x->e = lp_e2ee_new(format, &G.pins, path, &err);
    if (!x->e)
        at_fail_msg("lp_e2ee_new(%s, %s): %s %s", format ? format : "auto", path, err.check,
                    err.msg);
    const char *const *hdrs = NULL;
    at_assert_int_equal(
        lp_e2ee_seal_request(x->e, (const uint8_t *)body, strlen(body), &x->sealed, &hdrs, &err),
        LP_E2EE_OK);
    at_assert_non_null(hdrs);
    const char *wire = cstr(&x->sealed);
    for (size_t i = 0; secrets && secrets[i]; i++)
        if (strstr(wire, secrets[i]))
            at_fail_msg("%s: \"%s\" in clear in the request sent", lp_e2ee_describe(x->e),
                        secrets[i]);
    at_assert_non_null(strstr(wire, "\"model\":\"" MODEL "\"")); /* the model stays visible */
    buf_t plain = BUF_INIT;
    app_error_t aerr = APP_E_N;
    int rc = server_open(path, hdrs, &x->sealed, &plain, &x->sess, &aerr);
    if (rc != 0)
        at_fail_msg("%s: the server refused the request: %s", lp_e2ee_describe(x->e),
                    app_error_info(aerr)->type);
    if (!json_same(plain.data, plain.len, body, strlen(body)))
        at_fail_msg("%s: the server read %.*s", lp_e2ee_describe(x->e), (int)plain.len, plain.data);
    e2ee_wipe_buf(&plain);
}
#define exchange(...) exchange_at(AT_HERE, __VA_ARGS__)

static void exch_free(exch_t *x)
{
    lp_e2ee_free(x->e);
    e2ee_sess_free(x->sess);
    buf_free(&x->sealed);
}

/* The scan (lp_e2ee_open_path SCAN) takes what the server sends on chat and completions (it
 * does not decline), and its bytes are the json-c path's, which are want. */
static void paths_agree_at(AT_PARAMS, lp_e2ee_t *e, int stream, const char *in, size_t n,
                           const char *want, int scan_takes)
{
    buf_t a = BUF_INIT, b = BUF_INIT;
    lp_e2ee_err_t err = {"", ""};
    int rs = lp_e2ee_open_path(e, LP_E2EE_PATH_SCAN, stream, (const uint8_t *)in, n, &a, &err);
    int rj = lp_e2ee_open_path(e, LP_E2EE_PATH_JSONC, stream, (const uint8_t *)in, n, &b, &err);
    at_assert_int_equal(rj, LP_E2EE_OK);
    at_assert_string_equal(cstr(&b), want);
    if (scan_takes) {
        if (rs != LP_E2EE_OK)
            at_fail_msg("%s: the scan declined %.*s", lp_e2ee_describe(e), (int)n, in);
        at_assert_string_equal(cstr(&a), want);
    } else {
        at_assert_int_equal(rs, LP_E2EE_DECLINED);
        at_assert_int_equal(a.len, 0);
    }
    buf_free(&a);
    buf_free(&b);
}
#define paths_agree(...) paths_agree_at(AT_HERE, __VA_ARGS__)

/* A JSON answer: sealed by the server (the plaintext not in it), opened by the codec to the
 * engine's exact bytes. */
static void answer_json_at(AT_PARAMS, exch_t *x, const char *engine, const char *const *secrets)
{
    buf_t wire = BUF_INIT, out = BUF_INIT;
    at_assert_int_equal(server_seal(x->sess, 0, engine, &wire), 0);
    for (size_t i = 0; secrets && secrets[i]; i++)
        if (strstr(cstr(&wire), secrets[i]))
            at_fail_msg("\"%s\" in clear in the answer", secrets[i]);
    lp_e2ee_err_t err = {"", ""};
    int rc = lp_e2ee_open_json(x->e, (const uint8_t *)wire.data, wire.len, &out, &err);
    if (rc != LP_E2EE_OK)
        at_fail_msg("%s: open_json: %s %s", lp_e2ee_describe(x->e), err.check, err.msg);
    at_assert_string_equal(cstr(&out), engine);
    paths_agree(x->e, 0, wire.data, wire.len, engine, !strstr(engine, "\"embedding\""));
    buf_free(&wire);
    buf_free(&out);
}
#define answer_json(...) answer_json_at(AT_HERE, __VA_ARGS__)

/* A stream: the engine's events (compact JSON each; [DONE] last) sealed by the server, split
 * into events, each opened by the codec; want[i] is what event i must open to (NULL: the
 * engine's own). */
static void answer_stream_at(AT_PARAMS, exch_t *x, const char *const *events,
                             const char *const *want, const char *const *secrets)
{
    buf_t engine = BUF_INIT, wire = BUF_INIT;
    size_t nev = 0;
    for (; events[nev]; nev++)
        at_assert_int_equal(buf_printf(&engine, "data: %s\n\n", events[nev]), 0);
    at_assert_int_equal(server_seal(x->sess, 1, cstr(&engine), &wire), 0);
    for (size_t i = 0; secrets && secrets[i]; i++)
        if (strstr(cstr(&wire), secrets[i]))
            at_fail_msg("\"%s\" in clear in the stream", secrets[i]);
    /* split as the relay does: "data: <payload>" lines */
    const char *p = cstr(&wire);
    size_t k = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t ln = nl ? (size_t)(nl - p) : strlen(p);
        if (ln > 6 && strncmp(p, "data: ", 6) == 0) {
            at_assert_true(k < nev);
            buf_t out = BUF_INIT;
            lp_e2ee_err_t err = {"", ""};
            int rc = lp_e2ee_open_event(x->e, (const uint8_t *)p + 6, ln - 6, &out, &err);
            if (rc != LP_E2EE_OK)
                at_fail_msg("%s: event %zu: %s %s", lp_e2ee_describe(x->e), k, err.check, err.msg);
            at_assert_string_equal(cstr(&out), want && want[k] ? want[k] : events[k]);
            paths_agree(x->e, 1, p + 6, ln - 6, cstr(&out), 1);
            buf_free(&out);
            k++;
        }
        p += nl ? ln + 1 : ln;
    }
    at_assert_int_equal(k, nev);
    buf_free(&engine);
    buf_free(&wire);
}
#define answer_stream(...) answer_stream_at(AT_HERE, __VA_ARGS__)

/* ---- chat ---- */

static const char CHAT_REQ[] =
    "{\"model\":\"" MODEL "\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"You are a secret-keeping assistant\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"describe this picture\"},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/private-photo.png\"}}]},"
    "{\"role\":\"assistant\",\"content\":\"It shows a lighthouse\"},"
    "{\"role\":\"user\",\"content\":\"what is the launch code \\\"\\u00e9\\\"?\"}],"
    "\"temperature\":0.5,\"max_tokens\":64,\"stream\":false}";
static const char *const CHAT_SECRETS[] = {"secret-keeping", "describe this", "private-photo",
                                           "lighthouse",     "launch code",   NULL};

static const char CHAT_ANSWER[] =
    "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":"
    "\"" MODEL
    "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"The code is "
    "tangerine-42 \\\"\\u00e9\\\"\",\"reasoning_content\":\"they asked for the code\","
    "\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"},{\"index\":1,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Second choice answer\"},\"finish_reason\":\"length\"}],"
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39}}";
static const char *const ANSWER_SECRETS[] = {"tangerine", "asked for", "Second choice", NULL};

static const char *const CHAT_EVENTS[] = {
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"pondering deeply\"},"
    "\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tangerine\"},\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"-42 \\n\\u00e9\"},\"finish_reason\":"
    "\"stop\"}]}",
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}",
    "[DONE]",
    NULL};
/* the Dstack fork drops an empty delta content (docs/API.md): the role event opens without it */
static const char DSTACK_ROLE[] =
    "{\"id\":\"chatcmpl-8\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"" MODEL
    "\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"logprobs\":null,"
    "\"finish_reason\":null}]}";
static const char *const STREAM_SECRETS[] = {"pondering", "tangerine", NULL};

static const char *const CHAT_FORMATS[] = {
    NULL,      "dstack-v2:ecdsa", "dstack-v2:ed25519", "near-v2", "near-v2:ecdsa",
    "near-v1", "near-v1:ecdsa",   "dstack-v1",         NULL};

/* json-c spells \u00e9 as the UTF-8 bytes; the engine's answers above are compared after the
 * same re-serialisation, done here once. */
static char *compact(const char *json)
{
    json_object *o = json_tokener_parse(json);
    assert_non_null(o);
    char *s = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

static void test_chat_roundtrip(void **st)
{
    (void)st;
    char *answer = compact(CHAT_ANSWER);
    const char *events[8] = {0}, *want[8] = {0};
    char *owned[8] = {0};
    for (size_t i = 0; CHAT_EVENTS[i]; i++)
        events[i] = strcmp(CHAT_EVENTS[i], "[DONE]") ? (owned[i] = compact(CHAT_EVENTS[i]))
                                                     : CHAT_EVENTS[i];
    char *dstack_role = compact(DSTACK_ROLE);
    for (size_t f = 0; f == 0 || CHAT_FORMATS[f]; f++) {
        exch_t x;
        exchange(&x, CHAT_FORMATS[f], "/v1/chat/completions", CHAT_REQ, CHAT_SECRETS);
        if (f == 0) /* auto on chat: Dstack v2 with the Ed25519 key */
            assert_string_equal(lp_e2ee_describe(x.e), "dstack-v2 ed25519");
        answer_json(&x, answer, ANSWER_SECRETS);
        exch_free(&x);

        exchange(&x, CHAT_FORMATS[f], "/v1/chat/completions", CHAT_REQ, CHAT_SECRETS);
        int dstack = strncmp(lp_e2ee_describe(x.e), "dstack", 6) == 0;
        want[0] = dstack ? dstack_role : NULL;
        answer_stream(&x, events, want, STREAM_SECRETS);
        exch_free(&x);
    }
    for (size_t i = 0; i < 8; i++)
        free(owned[i]);
    free(dstack_role);
    free(answer);
}

/* ---- completions and embeddings (NEAR) ---- */

static void test_completions_roundtrip(void **st)
{
    (void)st;
    static const char REQ1[] = "{\"model\":\"" MODEL "\",\"prompt\":\"Once upon a midnight "
                               "dreary\",\"max_tokens\":8,\"echo\":false}";
    static const char REQ2[] = "{\"model\":\"" MODEL "\",\"prompt\":[\"first hidden prompt\",\"\","
                               "\"second hidden prompt\"],\"stream\":true}";
    static const char *const SECRETS[] = {"midnight", "hidden prompt", NULL};
    static const char ANSWER[] =
        "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":2,\"model\":\"" MODEL
        "\",\"choices\":[{\"index\":0,\"text\":\" while I pondered\",\"logprobs\":null,"
        "\"finish_reason\":\"length\"},{\"index\":1,\"text\":\"\",\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":8,\"total_tokens\":13}}";
    static const char *const EVENTS[] = {
        "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":2,\"model\":\"" MODEL
        "\",\"choices\":[{\"index\":0,\"text\":\" weak and weary\",\"logprobs\":null,"
        "\"finish_reason\":null}]}",
        "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":2,\"model\":\"" MODEL
        "\",\"choices\":[{\"index\":1,\"text\":\"over many a "
        "quaint\",\"finish_reason\":\"stop\"}]}",
        "[DONE]", NULL};
    static const char *const ASECRETS[] = {"pondered", "weary", "quaint", NULL};
    static const char *const FORMATS[] = {NULL, "near-v2:ecdsa", "near-v1", NULL};
    for (size_t f = 0; f == 0 || FORMATS[f]; f++) {
        exch_t x;
        exchange(&x, FORMATS[f], "/v1/completions", REQ1, SECRETS);
        if (f == 0) /* auto off chat: NEAR v2 */
            assert_string_equal(lp_e2ee_describe(x.e), "near-v2 ed25519");
        answer_json(&x, ANSWER, ASECRETS);
        exch_free(&x);
        exchange(&x, FORMATS[f], "/v1/completions", REQ2, SECRETS);
        answer_stream(&x, EVENTS, NULL, ASECRETS);
        exch_free(&x);
    }
}

static void test_embeddings_roundtrip(void **st)
{
    (void)st;
    static const char REQ[] = "{\"model\":\"" MODEL "\",\"input\":[\"my bank password\","
                              "\"my home address\"]}";
    static const char *const SECRETS[] = {"bank password", "home address", NULL};
    static const char ANSWER[] =
        "{\"id\":\"embd-1\",\"object\":\"list\",\"created\":3,\"model\":\"" MODEL
        "\",\"data\":[{\"index\":0,\"object\":\"embedding\",\"embedding\":[0.125,-0.5,3]},"
        "{\"index\":1,\"object\":\"embedding\",\"embedding\":\"AAAAPgAAAL8=\"}],"
        "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";
    static const char *const ASECRETS[] = {"0.125", "AAAAPgAAAL8", NULL};
    exch_t x;
    exchange(&x, NULL, "/v1/embeddings", REQ, SECRETS);
    answer_json(&x, ANSWER, ASECRETS);
    exch_free(&x);
}

/* ---- failures ---- */

/* A fresh Dstack v2 (or format f) exchange whose JSON answer is sealed and returned. */
static void sealed_answer(exch_t *x, const char *format, const char *engine, buf_t *wire)
{
    exchange(x, format, "/v1/chat/completions", CHAT_REQ, NULL);
    assert_int_equal(server_seal(x->sess, 0, engine, wire), 0);
}

static void expect_fail_at(AT_PARAMS, lp_e2ee_t *e, const char *body, int stream, const char *check)
{
    buf_t out = BUF_INIT;
    lp_e2ee_err_t err = {"", ""};
    int rc = stream ? lp_e2ee_open_event(e, (const uint8_t *)body, strlen(body), &out, &err)
                    : lp_e2ee_open_json(e, (const uint8_t *)body, strlen(body), &out, &err);
    at_assert_int_equal(rc, LP_E2EE_FAILED);
    at_assert_string_equal(err.check, check);
    at_assert_int_equal(out.len, 0);
    at_assert_true(err.msg[0] != '\0');
    buf_free(&out);
}
#define expect_fail(...) expect_fail_at(AT_HERE, __VA_ARGS__)

static void test_tampered(void **st)
{
    (void)st;
    static const char *const FORMATS[] = {"dstack-v2", "near-v2", "near-v1:ecdsa", "dstack-v1"};
    for (size_t f = 0; f < 4; f++) {
        exch_t x;
        buf_t wire = BUF_INIT;
        sealed_answer(&x, FORMATS[f], CHAT_ANSWER, &wire);
        char *body = strndup(wire.data, wire.len);
        /* one hex digit of the first content flipped, at several places (eph, nonce, ct, tag) */
        char *c = strstr(body, "\"content\":\"") + 11;
        size_t hn = strcspn(c, "\"");
        size_t at[] = {0, 70, hn / 2, hn - 1};
        for (size_t i = 0; i < 4; i++) {
            char keep = c[at[i]];
            c[at[i]] = keep == '0' ? '1' : '0';
            expect_fail(x.e, body, 0, "e2ee.decrypt");
            c[at[i]] = keep;
        }
        /* and untouched it opens (with the same codec: nothing was consumed) */
        buf_t out = BUF_INIT;
        lp_e2ee_err_t err;
        assert_int_equal(lp_e2ee_open_json(x.e, (uint8_t *)body, strlen(body), &out, &err), 0);
        buf_free(&out);
        free(body);
        buf_free(&wire);
        exch_free(&x);
    }
    /* A Dstack v2 answer sealed for another request (another client key, nonce and timestamp)
     * does not open, nor does a field moved to another choice (the AAD names the choice). */
    exch_t a, b;
    buf_t wa = BUF_INIT, wb = BUF_INIT;
    sealed_answer(&a, "dstack-v2", CHAT_ANSWER, &wa);
    sealed_answer(&b, "dstack-v2", CHAT_ANSWER, &wb);
    expect_fail(a.e, cstr(&wb), 0, "e2ee.decrypt");
    json_object *o = json_tokener_parse(cstr(&wa));
    json_object *ch = json_object_object_get(o, "choices");
    json_object *m0 = json_object_object_get(json_object_array_get_idx(ch, 0), "message");
    json_object *m1 = json_object_object_get(json_object_array_get_idx(ch, 1), "message");
    json_object_object_add(m1, "content", json_object_get(json_object_object_get(m0, "content")));
    expect_fail(a.e, json_object_to_json_string(o), 0, "e2ee.decrypt");
    json_object_put(o);
    buf_free(&wa);
    buf_free(&wb);
    exch_free(&a);
    exch_free(&b);
    /* A tampered request: the server refuses it (nothing reaches the engine). */
    lp_e2ee_err_t err;
    lp_e2ee_t *e = lp_e2ee_new(NULL, &G.pins, "/v1/chat/completions", &err);
    const char *const *hdrs;
    buf_t req = BUF_INIT, plain = BUF_INIT;
    assert_int_equal(
        lp_e2ee_seal_request(e, (const uint8_t *)CHAT_REQ, strlen(CHAT_REQ), &req, &hdrs, &err), 0);
    char *c = strstr(cstr(&req), "\"content\":\"") + 40;
    *c = *c == '0' ? '1' : '0';
    e2ee_sess_t *sess = NULL;
    app_error_t aerr;
    assert_int_equal(server_open("/v1/chat/completions", hdrs, &req, &plain, &sess, &aerr), -1);
    assert_string_equal(app_error_info(aerr)->type, "e2ee_decryption_failed");
    assert_null(sess);
    buf_free(&req);
    lp_e2ee_free(e);
}

static void test_in_clear(void **st)
{
    (void)st;
    static const char *const FORMATS[] = {"dstack-v2", "near-v2", NULL};
    for (size_t f = 0; FORMATS[f]; f++) {
        lp_e2ee_err_t err;
        lp_e2ee_t *e = lp_e2ee_new(FORMATS[f], &G.pins, "/v1/chat/completions", &err);
        assert_non_null(e);
        /* the engine's plaintext answer as it is (an E2EE header stripped on the way) */
        expect_fail(e, CHAT_ANSWER, 0, "e2ee.in_clear");
        expect_fail(e, CHAT_EVENTS[2], 1, "e2ee.in_clear");
        /* a content that looks like hex but is short, or odd */
        expect_fail(e, "{\"choices\":[{\"message\":{\"content\":\"abcdef\"}}]}", 0,
                    "e2ee.in_clear");
        /* generated text no format seals here */
        expect_fail(e,
                    "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"function\":"
                    "{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                    0, "e2ee.in_clear");
        expect_fail(e,
                    "{\"choices\":[{\"message\":{\"content\":null},\"logprobs\":{\"content\":"
                    "[{\"token\":\"x\"}]}}]}",
                    0, "e2ee.in_clear");
        expect_fail(e, "{\"choices\":[{\"message\":{\"refusal\":\"no way\"}}]}", 0,
                    "e2ee.in_clear");
        expect_fail(e, "{\"choices\":[{\"delta\":{\"content\":null}}]}", 0, "e2ee.in_clear");
        expect_fail(e,
                    "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"hi "
                    "there friend\"}]}}]}",
                    0, "e2ee.in_clear"); /* Dstack: not a string; NEAR: a part in clear */
        expect_fail(e, "{\"choices\":[],\"prompt_token_ids\":[1,2]}", 0, "e2ee.in_clear");
        expect_fail(e, "{\"choices\":[{\"delta\":{\"content\":42}}]}", 1, "e2ee.in_clear");
        /* not JSON, in either shape */
        expect_fail(e, "hello in clear", 1, "e2ee.json");
        expect_fail(e, "{\"choices\":[]} x", 0, "e2ee.json");
        expect_fail(e, "[1,2]", 0, "e2ee.json");
        /* passed on: [DONE], an error event, an answer with nothing generated */
        static const char *const PASS[] = {
            "[DONE]", "{\"error\":{\"message\":\"engine overloaded\",\"type\":\"server_error\"}}",
            "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}", NULL};
        for (size_t i = 0; PASS[i]; i++) {
            buf_t out = BUF_INIT;
            assert_int_equal(
                lp_e2ee_open_event(e, (const uint8_t *)PASS[i], strlen(PASS[i]), &out, &err), 0);
            assert_string_equal(cstr(&out), PASS[i]);
            buf_free(&out);
        }
        lp_e2ee_free(e);
    }
    /* embeddings in clear; a streamed embeddings answer */
    lp_e2ee_err_t err;
    lp_e2ee_t *e = lp_e2ee_new(NULL, &G.pins, "/v1/embeddings", &err);
    expect_fail(e, "{\"data\":[{\"embedding\":[0.1,0.2]}]}", 0, "e2ee.in_clear");
    expect_fail(e, "{\"data\":[{\"embedding\":\"\"}]}", 0, "e2ee.in_clear");
    expect_fail(e, "{\"data\":[]}", 1, "e2ee.json");
    lp_e2ee_free(e);
    e = lp_e2ee_new(NULL, &G.pins, "/v1/completions", &err);
    expect_fail(e, "{\"choices\":[{\"text\":\"plain words here\"}]}", 0, "e2ee.in_clear");
    expect_fail(e, "{\"choices\":[{\"text\":null,\"logprobs\":{\"tokens\":[\"a\"]}}]}", 0,
                "e2ee.in_clear");
    lp_e2ee_free(e);
}

static void refused_at(AT_PARAMS, const char *format, const char *path, const char *body,
                       const char *check)
{
    lp_e2ee_err_t err = {"", ""};
    lp_e2ee_t *e = lp_e2ee_new(format, &G.pins, path, &err);
    at_assert_non_null(e);
    buf_t out = BUF_INIT;
    const char *const *hdrs = NULL;
    at_assert_int_equal(
        lp_e2ee_seal_request(e, (const uint8_t *)body, strlen(body), &out, &hdrs, &err),
        LP_E2EE_REFUSED);
    at_assert_string_equal(err.check, check);
    at_assert_int_equal(out.len, 0);
    at_assert_null(hdrs);
    buf_free(&out);
    lp_e2ee_free(e);
}
#define refused(...) refused_at(AT_HERE, __VA_ARGS__)

static void test_request_refusals(void **st)
{
    (void)st;
    const char *chat = "/v1/chat/completions", *cmpl = "/v1/completions";
#define MSGS "\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
    refused(NULL, chat,
            "{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
            "e2ee.unsupported_field");
    refused("near-v2", chat, "{" MSGS ",\"logprobs\":true}", "e2ee.unsupported_field");
    refused(NULL, chat, "{" MSGS ",\"top_logprobs\":2}", "e2ee.unsupported_field");
    refused(NULL, chat, "{" MSGS ",\"prompt_logprobs\":0}", "e2ee.unsupported_field");
    refused(NULL, chat, "{" MSGS ",\"return_token_ids\":true}", "e2ee.unsupported_field");
    refused(NULL, chat, "{" MSGS ",\"prediction\":{\"type\":\"content\",\"content\":\"x\"}}",
            "e2ee.unsupported_field");
    refused(NULL, chat,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,"
            "\"tool_calls\":[{\"id\":\"1\",\"function\":{\"name\":\"f\"}}]}]}",
            "e2ee.unsupported_field");
    refused("dstack-v2", chat,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\","
            "\"content\":\"a\",\"reasoning_content\":\"why\"}]}",
            "e2ee.unsupported_field");
    refused(NULL, cmpl, "{\"model\":\"m\",\"prompt\":[1,2,3]}", "e2ee.unsupported_field");
    refused(NULL, cmpl, "{\"model\":\"m\",\"prompt\":\"a\",\"logprobs\":1}",
            "e2ee.unsupported_field");
    refused(NULL, cmpl, "{\"model\":\"m\",\"prompt\":\"a\",\"suffix\":\"end\"}",
            "e2ee.unsupported_field");
    refused(NULL, "/v1/embeddings", "{\"model\":\"m\",\"input\":[[1,2]]}",
            "e2ee.unsupported_field");
    refused(NULL, chat, "not json", "e2ee.request");
    refused(NULL, chat, "{" MSGS "} trailing", "e2ee.request");
    refused(NULL, chat, "{\"model\":7,\"messages\":[]}", "e2ee.request");
    refused(NULL, chat, "{\"model\":\"m\"}", "e2ee.request");
    refused(NULL, cmpl, "{\"model\":\"m\"}", "e2ee.request");
#undef MSGS
    /* the server refuses what the codec refuses: a sealed request with logprobs added behind
     * the codec's back is refused by e2ee_request too (the mirror holds) */
    lp_e2ee_err_t err;
    const char *const *hdrs;
    buf_t req = BUF_INIT, plain = BUF_INIT;
    lp_e2ee_t *e = lp_e2ee_new("dstack-v2", &G.pins, chat, &err);
    static const char OK2[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_int_equal(lp_e2ee_seal_request(e, (const uint8_t *)OK2, strlen(OK2), &req, &hdrs, &err),
                     0);
    req.len--; /* drop the closing brace, add logprobs */
    assert_int_equal(buf_puts(&req, ",\"logprobs\":true}"), 0);
    e2ee_sess_t *sess = NULL;
    app_error_t aerr;
    assert_int_equal(server_open(chat, hdrs, &req, &plain, &sess, &aerr), -1);
    assert_string_equal(app_error_info(aerr)->type, "e2ee_unsupported_field");
    /* one request per codec */
    assert_int_equal(lp_e2ee_seal_request(e, (const uint8_t *)OK2, strlen(OK2), &req, &hdrs, &err),
                     LP_E2EE_REFUSED);
    buf_free(&req);
    lp_e2ee_free(e);
}

static void test_new(void **st)
{
    (void)st;
    lp_e2ee_err_t err = {"", ""};
    struct {
        const char *format, *route, *check;
    } bad[] = {
        {NULL, "/v1/models", "e2ee.route"},
        {NULL, "/v1/images/generations", "e2ee.route"},
        {NULL, NULL, "e2ee.route"},
        {"dstack-v2", "/v1/completions", "e2ee.format"},
        {"dstack-v1", "/v1/embeddings", "e2ee.format"},
        {"aci-v2", "/v1/chat/completions", "e2ee.format"},
        {"near-v3", "/v1/chat/completions", "e2ee.format"},
        {"near-v2:rsa", "/v1/chat/completions", "e2ee.format"},
        {"off", "/v1/chat/completions", "e2ee.format"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_null(lp_e2ee_new(bad[i].format, &G.pins, bad[i].route, &err));
        assert_string_equal(err.check, bad[i].check);
        assert_true(err.msg[0] != '\0');
    }
    /* a query string is not part of the route */
    lp_e2ee_t *e = lp_e2ee_new(NULL, &G.pins, "/v1/chat/completions?x=1", &err);
    assert_non_null(e);
    lp_e2ee_free(e);
    /* no Ed25519 key pinned: auto takes ecdsa; asking for ed25519 is refused */
    lp_pins_t p = G.pins;
    p.ed25519_key[0] = '\0';
    e = lp_e2ee_new(NULL, &p, "/v1/chat/completions", &err);
    assert_non_null(e);
    assert_string_equal(lp_e2ee_describe(e), "dstack-v2 ecdsa");
    lp_e2ee_free(e);
    assert_null(lp_e2ee_new("near-v2:ed25519", &p, "/v1/chat/completions", &err));
    assert_string_equal(err.check, "e2ee.key");
    /* a pinned key that is not a point */
    p = G.pins;
    memset(p.ecdsa_public_key + 2, 'f', 128);
    assert_null(lp_e2ee_new("near-v2:ecdsa", &p, "/v1/chat/completions", &err));
    assert_string_equal(err.check, "e2ee.key");
    /* the 64-byte spelling of the ecdsa key works as well as the 65-byte one */
    p = G.pins;
    memmove(p.ecdsa_public_key, p.ecdsa_public_key + 2, 129);
    exch_t x;
    lp_pins_t keep = G.pins;
    G.pins = p;
    exchange(&x, "dstack-v2:ecdsa", "/v1/chat/completions", CHAT_REQ, CHAT_SECRETS);
    G.pins = keep;
    exch_free(&x);
    /* fresh keys per codec: two codecs send different client keys and nonces */
    lp_e2ee_t *a = lp_e2ee_new(NULL, &G.pins, "/v1/chat/completions", &err);
    lp_e2ee_t *b = lp_e2ee_new(NULL, &G.pins, "/v1/chat/completions", &err);
    const char *const *ha, *const *hb;
    buf_t ba = BUF_INIT, bb = BUF_INIT;
    static const char R[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_int_equal(lp_e2ee_seal_request(a, (const uint8_t *)R, strlen(R), &ba, &ha, &err), 0);
    assert_int_equal(lp_e2ee_seal_request(b, (const uint8_t *)R, strlen(R), &bb, &hb, &err), 0);
    size_t n = 0;
    for (; ha[n]; n++) {
        assert_non_null(hb[n]);
        if (strncmp(ha[n], "X-Client-Pub-Key", 16) == 0 || strncmp(ha[n], "X-E2EE-Nonce", 12) == 0)
            assert_string_not_equal(ha[n], hb[n]);
    }
    assert_int_equal(n, 6); /* Dstack v2: algo, client key, model key, version, nonce, timestamp */
    buf_free(&ba);
    buf_free(&bb);
    lp_e2ee_free(a);
    lp_e2ee_free(b);
}

/* lp_e2ee_policy (--e2ee per request) and lp_e2ee_plan: what the relay does with each. */
static void test_policy(void **st)
{
    (void)st;
    char d[160];
    lp_e2ee_err_t err;
    struct {
        const char *mode, *method, *route;
        int want;
        const char *desc; /* or the check when refused */
    } cases[] = {
        {NULL, "POST", "/v1/chat/completions", LP_E2EE_SEAL, "dstack-v2 ed25519"},
        {"auto", "POST", "/v1/completions", LP_E2EE_SEAL, "near-v2 ed25519"},
        {NULL, "POST", "/v1/embeddings?x=1", LP_E2EE_SEAL, "near-v2 ed25519"},
        {NULL, "POST", "/v1/tokenize", LP_E2EE_CLEAR, "clear"},
        {NULL, "GET", "/v1/models", LP_E2EE_CLEAR, "clear"},
        {NULL, "PUT", "/v1/chat/completions", LP_E2EE_CLEAR, "clear"},
        {"off", "POST", "/v1/chat/completions", LP_E2EE_CLEAR, "clear"},
        {"near-v2", "POST", "/v1/chat/completions", LP_E2EE_SEAL, "near-v2 ed25519"},
        {"near-v2:ecdsa", "POST", "/v1/embeddings", LP_E2EE_SEAL, "near-v2 ecdsa"},
        {"near-v2", "GET", "/v1/models", LP_E2EE_CLEAR, "clear"},
        {"near-v2", "HEAD", "/v1/models", LP_E2EE_CLEAR, "clear"},
        {"near-v2", "POST", "/v1/rerank", LP_E2EE_REFUSE, "e2ee.route"},
        {"near-v2", "DELETE", "/v1/chat/completions", LP_E2EE_REFUSE, "e2ee.route"},
        {"dstack-v2", "POST", "/v1/completions", LP_E2EE_REFUSE, "e2ee.format"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0, sizeof err);
        int r = lp_e2ee_policy(cases[i].mode, &G.pins, cases[i].method, cases[i].route, d, sizeof d,
                               &err);
        assert_int_equal(r, cases[i].want);
        if (r == LP_E2EE_REFUSE)
            assert_string_equal(err.check, cases[i].desc);
        else
            assert_string_equal(d, cases[i].desc);
    }
    /* auto: a report without a key to encrypt to means the remote offers no E2EE: in clear;
     * an explicit format is refused */
    lp_pins_t p = G.pins;
    p.ed25519_key[0] = p.ecdsa_public_key[0] = '\0';
    assert_int_equal(lp_e2ee_policy(NULL, &p, "POST", "/v1/chat/completions", d, sizeof d, &err),
                     LP_E2EE_CLEAR);
    assert_true(strncmp(d, "clear (", 7) == 0);
    assert_int_equal(
        lp_e2ee_policy("near-v2", &p, "POST", "/v1/chat/completions", d, sizeof d, &err),
        LP_E2EE_REFUSE);
    assert_string_equal(err.check, "e2ee.key");
    /* no pins (not verified): the format alone; no err pointer needed */
    assert_int_equal(lp_e2ee_policy(NULL, NULL, NULL, "/v1/chat/completions", d, sizeof d, NULL),
                     LP_E2EE_SEAL);
    assert_string_equal(d, "dstack-v2");
    /* plan refuses what lp_e2ee_new refuses */
    assert_int_equal(lp_e2ee_plan("aci-v2", NULL, "/v1/chat/completions", d, sizeof d, &err),
                     LP_E2EE_REFUSED);
    assert_string_equal(err.check, "e2ee.format");
    assert_int_equal(lp_e2ee_plan("bogus", NULL, "/v1/chat/completions", d, sizeof d, &err),
                     LP_E2EE_REFUSED);
    /* the plan names what the codec then uses */
    assert_int_equal(
        lp_e2ee_plan("dstack-v1:ecdsa", &G.pins, "/v1/chat/completions", d, sizeof d, &err),
        LP_E2EE_OK);
    lp_e2ee_t *e = lp_e2ee_new("dstack-v1:ecdsa", &G.pins, "/v1/chat/completions", &err);
    assert_non_null(e);
    assert_string_equal(d, lp_e2ee_describe(e));
    lp_e2ee_free(e);
}

/* e2ee_open_hex_cached: the same answers as e2ee_open_hex, with one ECDH per ephemeral key. */
static void test_open_cached(void **st)
{
    (void)st;
    uint8_t sk[32], pub[32];
    randombytes_buf(sk, sizeof sk);
    assert_int_equal(e2ee_x25519_public(pub, sk), E2EE_OK);
    e2ee_key_t k1, k2, cache;
    memset(&cache, 0, sizeof cache);
    assert_int_equal(e2ee_key_derive_send(&k1, E2EE_C_X25519_AESGCM, pub, 32, NULL), E2EE_OK);
    assert_int_equal(e2ee_key_derive_send(&k2, E2EE_C_X25519_AESGCM, pub, 32, NULL), E2EE_OK);
    const e2ee_key_t *seq[] = {&k1, &k1, &k2, &k1, &k1};
    for (size_t i = 0; i < 5; i++) {
        char hex[256], pt[16];
        size_t hn, pn;
        char msg[16];
        snprintf(msg, sizeof msg, "field %zu", i);
        assert_int_equal(e2ee_seal_hex(seq[i], (const uint8_t *)"aad", 3, (const uint8_t *)msg,
                                       strlen(msg), hex, sizeof hex, &hn),
                         E2EE_OK);
        /* a flipped tag bit fails (and leaves the cache usable), then the field opens */
        hex[hn - 1] ^= 1;
        assert_int_equal(e2ee_open_hex_cached(E2EE_C_X25519_AESGCM, sk, &cache, hex, hn,
                                              (const uint8_t *)"aad", 3, (uint8_t *)pt, sizeof pt,
                                              &pn),
                         E2EE_ERR_DECRYPT);
        hex[hn - 1] ^= 1;
        assert_int_equal(e2ee_open_hex_cached(E2EE_C_X25519_AESGCM, sk, &cache, hex, hn,
                                              (const uint8_t *)"aad", 3, (uint8_t *)pt, sizeof pt,
                                              &pn),
                         E2EE_OK);
        assert_memory_equal(pt, msg, strlen(msg));
        assert_memory_equal(cache.eph_pub, seq[i]->eph_pub, 32);
        /* another AAD, or another cipher with the cached key, does not open */
        assert_int_equal(e2ee_open_hex_cached(E2EE_C_X25519_AESGCM, sk, &cache, hex, hn,
                                              (const uint8_t *)"aae", 3, (uint8_t *)pt, sizeof pt,
                                              &pn),
                         E2EE_ERR_DECRYPT);
        assert_int_equal(e2ee_open_hex_cached(E2EE_C_ACI_X25519, sk, &cache, hex, hn,
                                              (const uint8_t *)"aad", 3, (uint8_t *)pt, sizeof pt,
                                              &pn),
                         E2EE_ERR_DECRYPT);
    }
    e2ee_key_wipe(&k1);
    e2ee_key_wipe(&k2);
    e2ee_key_wipe(&cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_roundtrip),
        cmocka_unit_test(test_completions_roundtrip),
        cmocka_unit_test(test_embeddings_roundtrip),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_in_clear),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_open_cached),
        cmocka_unit_test(test_policy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
