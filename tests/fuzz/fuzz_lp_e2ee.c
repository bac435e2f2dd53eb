/* libFuzzer target: the local verifying proxy's E2EE codec opening what a hostile remote sends
 * (src/verify/lp_e2ee.c, lp_e2ee_open_json / lp_e2ee_open_event), differentially: the scan
 * (the fast path) against the json-c path (the reference).
 *
 * Input: byte 0 = the case: bits 0-2 the format (dstack-v2, near-v2, near-v1, dstack-v1, each
 * with ecdsa then ed25519; off chat the Dstack ones become the NEAR ones, as lp_e2ee_new
 * refuses them there), bits 3-4 the route (chat, completions, embeddings, chat), bit 5 an
 * event (lp_e2ee_open_event) else a JSON answer (lp_e2ee_open_json); the rest = the answer or
 * the event's data. The codec answers to a fixed client key, nonce and timestamp
 * (lp_e2ee_test_keys), those the seed corpus was sealed to by the server's own code
 * (proxy/e2ee_resp.c): FUZZ_LP_E2EE_SEEDS=DIR ./fuzz_lp_e2ee -runs=0 writes it again.
 *
 * Invariants checked:
 *  - no crash, leak or sanitizer report;
 *  - the paths agree: AUTO (what the relay calls) and the json-c path alone both succeed with
 *    the same bytes, or both fail with the same check; the scan alone either declines (output
 *    untouched) or succeeds with the json-c path's bytes;
 *  - a failure appends nothing, and its message does not carry the plaintext marker;
 *  - plaintext is never freed unwiped (a free hook looks for the seeds' marker in freed
 *    blocks allocated during the calls) when the input does not carry the marker in clear.
 *    FUZZ_E2EE_NO_WIPE_CHECK=1 turns the check off. */
#include "alloc_watch.h"
#include "fuzz.h"
#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/hex.h"
#include "core/log.h"
#include "e2ee/client.h"
#include "e2ee/e2ee.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"
#include "verify/lp_e2ee.h"

#define MARKER "zq-PLAIN-qz"
#define NONCE "0123456789abcdef0123456789abcdef"
#define TS 1800000000LL

#define CHECK(cond, ...)                                                \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fuzz_lp_e2ee: check failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                               \
            fputc('\n', stderr);                                        \
            abort();                                                    \
        }                                                               \
    } while (0)

static const uint8_t CLIENT_SK[32] = {
    0x31, 0x41, 0x59, 0x26, 0x53, 0x58, 0x97, 0x93, 0x23, 0x84, 0x62, 0x64, 0x33, 0x83, 0x27, 0x95,
    0x02, 0x88, 0x41, 0x97, 0x16, 0x93, 0x99, 0x37, 0x51, 0x05, 0x82, 0x09, 0x74, 0x94, 0x45, 0x92};
static const uint8_t SERVER_SK[32] = {
    0x27, 0x18, 0x28, 0x18, 0x28, 0x45, 0x90, 0x45, 0x23, 0x53, 0x60, 0x28, 0x74, 0x71, 0x35, 0x26,
    0x62, 0x49, 0x77, 0x57, 0x24, 0x70, 0x93, 0x69, 0x99, 0x59, 0x57, 0x49, 0x66, 0x96, 0x76, 0x27};

static const char *const FORMATS[8] = {"dstack-v2:ecdsa", "dstack-v2:ed25519", "near-v2:ecdsa",
                                       "near-v2:ed25519", "near-v1:ecdsa",     "near-v1:ed25519",
                                       "dstack-v1:ecdsa", "dstack-v1:ed25519"};
static const char *const ROUTES[4] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                      "/v1/chat/completions"};

static struct {
    int init, wipe_check, verbose;
    lp_pins_t pins;
    volatile int unwiped;
} G;

static void free_hook(const volatile void *p)
{
    if (!watch_on || !p || !watch_tracked((const void *)(uintptr_t)p))
        return;
    size_t n = __sanitizer_get_allocated_size((const void *)(uintptr_t)p);
    if (n < sizeof MARKER - 1 || !memmem((const void *)(uintptr_t)p, n, MARKER, sizeof MARKER - 1))
        return;
    watch_on = 0;
    G.unwiped++;
    fprintf(stderr, "fuzz_lp_e2ee: a freed block of %zu bytes holds plaintext:\n", n);
    fwrite((const void *)(uintptr_t)p, 1, n < 512 ? n : 512, stderr);
    fputc('\n', stderr);
    __sanitizer_print_stack_trace();
    watch_on = 1;
}

static void write_seeds(const char *dir);

static void setup_once(void)
{
    if (G.init)
        return;
    G.init = 1;
    log_set_level(LOG_LVL_OFF);
    CHECK(sodium_init() >= 0, "sodium");
    uint8_t pub[E2EE_SECP_PUB_LEN], edpk[32], edsk[64];
    CHECK(e2ee_secp_public(pub, SERVER_SK) == E2EE_OK, "secp");
    hex_encode(G.pins.ecdsa_public_key, pub, sizeof pub);
    crypto_sign_seed_keypair(edpk, edsk, SERVER_SK);
    hex_encode(G.pins.ed25519_key, edpk, sizeof edpk);
    sodium_memzero(edsk, sizeof edsk);
    const char *seeds = getenv("FUZZ_LP_E2EE_SEEDS");
    if (seeds && seeds[0])
        write_seeds(seeds);
    const char *vb = getenv("FUZZ_LP_E2EE_VERBOSE");
    G.verbose = vb && vb[0] == '1';
    const char *nw = getenv("FUZZ_E2EE_NO_WIPE_CHECK");
    G.wipe_check = !(nw && nw[0] == '1');
    if (G.wipe_check)
        __sanitizer_install_malloc_and_free_hooks(watch_malloc_hook, free_hook);
}

/* The format index of a case on a route (lp_e2ee_new refuses Dstack off chat). */
static unsigned fmt_of(unsigned c, unsigned route)
{
    unsigned f = c & 7u;
    return route == 1 || route == 2 ? (f & 1u) | (f < 4 ? 2u : 4u) : f;
}

static void wipe_free(buf_t *b)
{
    if (b->data)
        sodium_memzero(b->data, b->cap);
    buf_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    watch_next_input();
    if (size < 1 || size > (1u << 20))
        return 0;
    unsigned route = (data[0] >> 3) & 3u, stream = (data[0] >> 5) & 1u;
    const char *fmt = FORMATS[fmt_of(data[0], route)];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    lp_e2ee_err_t err = {"", ""};
    lp_e2ee_t *e = lp_e2ee_new(fmt, &G.pins, ROUTES[route], &err);
    CHECK(e != NULL, "lp_e2ee_new(%s, %s): %s %s", fmt, ROUTES[route], err.check, err.msg);
    lp_e2ee_test_keys(e, CLIENT_SK, NONCE, TS);

    /* the marker in clear (escapes decoded): then a freed block may hold it legitimately */
    size_t un = 0;
    char *ubody = watch_unescaped((const char *)body, n, &un);
    CHECK(ubody != NULL, "malloc");
    int clear = memmem(ubody, un, MARKER, sizeof MARKER - 1) != NULL;
    free(ubody);
    buf_t oa = BUF_INIT, oj = BUF_INIT, os = BUF_INIT;
    lp_e2ee_err_t ea = {"", ""}, ej = {"", ""}, es = {"", ""};
    G.unwiped = 0;
    watch_on = G.wipe_check && !clear;
    int ra = lp_e2ee_open_path(e, LP_E2EE_PATH_AUTO, (int)stream, body, n, &oa, &ea);
    int rj = lp_e2ee_open_path(e, LP_E2EE_PATH_JSONC, (int)stream, body, n, &oj, &ej);
    int rs = lp_e2ee_open_path(e, LP_E2EE_PATH_SCAN, (int)stream, body, n, &os, &es);
    lp_e2ee_free(e);
    watch_on = 0;
    CHECK(G.unwiped == 0, "plaintext freed unwiped (%s)", fmt);

    CHECK(ra == LP_E2EE_OK || ra == LP_E2EE_FAILED, "auto answered %d", ra);
    CHECK(ra == rj, "auto %d, json-c %d (%s: %s)", ra, rj, ra ? ea.check : ej.check,
          ra ? ea.msg : ej.msg);
    if (ra == LP_E2EE_OK) {
        CHECK(oa.len == oj.len && memcmp(oa.data, oj.data, oa.len) == 0,
              "auto and json-c differ:\n%.*s\n%.*s", (int)oa.len, oa.data, (int)oj.len, oj.data);
    } else {
        CHECK(oa.len == 0 && oj.len == 0, "a failure appended %zu / %zu bytes", oa.len, oj.len);
        CHECK(!strcmp(ea.check, ej.check), "checks differ: %s, %s", ea.check, ej.check);
        CHECK(!strstr(ea.msg, MARKER) && !strstr(ej.msg, MARKER), "plaintext in the message");
    }
    if (rs == LP_E2EE_DECLINED) {
        CHECK(os.len == 0, "the scan declined after appending %zu bytes", os.len);
    } else {
        CHECK(rs == LP_E2EE_OK && rj == LP_E2EE_OK,
              "the scan answered %d where json-c answered %d (%s %s)", rs, rj, ej.check, ej.msg);
        CHECK(os.len == oj.len && memcmp(os.data, oj.data, os.len) == 0,
              "scan and json-c differ:\n%.*s\n%.*s", (int)os.len, os.data, (int)oj.len, oj.data);
    }
    if (G.verbose) /* FUZZ_LP_E2EE_VERBOSE=1: what each input did (for the corpus) */
        fprintf(stderr, "fuzz_lp_e2ee: %s %s %s: %s, scan %s\n", fmt, ROUTES[route],
                stream ? "event" : "json", ra == LP_E2EE_OK ? "ok" : ea.check,
                rs == LP_E2EE_DECLINED ? "declined" : "took it");
    wipe_free(&oa);
    wipe_free(&oj);
    wipe_free(&os);
    return 0;
}

/* ---- the seed corpus: answers sealed by the server's own code ---- */

#define MID "zq-PLAIN-qz"
#define EV_HEAD                                                                                 \
    "{\"id\":\"chatcmpl-f1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m/" \
    "x\","
static const char *const CHAT_EVENTS[] = {
    EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
            "\"logprobs\":null,\"finish_reason\":null}]}",
    EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" MID
            " a \\\"quote\\\" \\\\ /\\n\\t\\u0001 \\u00e9\\u2028\"},\"logprobs\":null,"
            "\"finish_reason\":null}]}",
    EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"" MID " why\","
            "\"reasoning\":\"" MID " so\"},\"logprobs\":null,\"finish_reason\":null}]}",
    EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" MID
            " zero\"},\"logprobs\":null,\"finish_reason\":null},{\"index\":1,\"delta\":"
            "{\"content\":\"" MID " one\",\"tool_calls\":[]},\"finish_reason\":\"stop\"}]}",
    EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\","
            "\"stop_reason\":null}]}",
    EV_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
            "\"total_tokens\":7,\"prompt_tokens_details\":null}}",
    "{\"error\":{\"message\":\"engine overloaded\",\"type\":\"server_error\",\"code\":503}}",
    NULL};
static const char CHAT_JSON[] =
    "{\"id\":\"chatcmpl-j\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m/"
    "x\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"" MID
    " answer \\\"x\\\"\",\"reasoning_content\":\"" MID " thought\",\"tool_calls\":[]},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"role\":"
    "\"assistant\",\"content\":\"" MID " second\"},\"finish_reason\":\"length\"}],"
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39}}";
static const char *const CMPL_EVENTS[] = {
    "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":2,\"model\":\"m/x\","
    "\"choices\":[{\"index\":0,\"text\":\"" MID " weak\",\"logprobs\":null,"
    "\"finish_reason\":null}]}",
    "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":2,\"model\":\"m/x\","
    "\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":null}",
    NULL};
static const char CMPL_JSON[] =
    "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":2,\"model\":\"m/x\","
    "\"choices\":[{\"index\":0,\"text\":\"" MID " pondered\",\"logprobs\":null,"
    "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":8,"
    "\"total_tokens\":13}}";
static const char EMBD_JSON[] =
    "{\"id\":\"embd-1\",\"object\":\"list\",\"created\":3,\"model\":\"m/x\",\"data\":[{\"index\":0,"
    "\"object\":\"embedding\",\"embedding\":[0.125,-0.5,3]},{\"index\":1,\"object\":"
    "\"embedding\",\"embedding\":\"" MID "\"}],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";

static e2ee_sess_t *seed_sess(unsigned f, unsigned route)
{
    static const char *const NAMES[4] = {"dstack-v2", "near-v2", "near-v1", "dstack-v1"};
    const e2ee_client_format_t *cf = e2ee_client_format(NAMES[f >> 1]);
    CHECK(cf != NULL, "format");
    e2ee_algo_t a = f & 1 ? E2EE_ALGO_ED25519 : E2EE_ALGO_ECDSA;
    e2ee_sess_t *s = calloc(1, sizeof *s);
    CHECK(s != NULL, "calloc");
    s->route = (int)route;
    s->format = cf->version == 1                ? E2EE_F_V1
                : cf->family == E2EE_FAM_DSTACK ? E2EE_F_DSTACK_V2
                                                : E2EE_F_NEAR_V2;
    s->algo = a;
    s->version = cf->version;
    s->cipher = s->req_cipher = e2ee_client_cipher(cf, a);
    s->near = cf->family == E2EE_FAM_NEAR;
    if (e2ee_cipher_curve_secp(s->cipher)) {
        CHECK(e2ee_secp_public(s->client, CLIENT_SK) == E2EE_OK, "secp pub");
        s->client_n = 65;
    } else {
        CHECK(e2ee_x25519_public(s->client, CLIENT_SK) == E2EE_OK, "x25519 pub");
        s->client_n = 32;
    }
    if (s->format == E2EE_F_DSTACK_V2) {
        memcpy(s->nonce, NONCE, sizeof NONCE - 1);
        s->nonce_n = sizeof NONCE - 1;
        s->ts = TS;
    }
    return s;
}

static void emit_cb(void *ud, const char *p, size_t n) { CHECK(buf_append(ud, p, n) == 0, "oom"); }

static void put_seed(const char *dir, const char *name, unsigned c, const char *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "open %s", path);
    uint8_t b = (uint8_t)c;
    CHECK(fwrite(&b, 1, 1, f) == 1 && fwrite(p, 1, n, f) == n && fclose(f) == 0, "write");
}

/* The server seals engine (events: an SSE stream of them) for format f on route; each sealed
 * payload is a seed, and a copy with one hex digit flipped. */
static void seal_seeds(const char *dir, unsigned f, unsigned route, const char *const *events,
                       const char *json)
{
    static const char *const RN[3] = {"chat", "cmpl", "embd"};
    e2ee_sess_t *s = seed_sess(f, route);
    buf_t in = BUF_INIT, out = BUF_INIT;
    e2ee_resp_begin(s, events != NULL);
    if (events)
        for (size_t i = 0; events[i]; i++)
            CHECK(buf_printf(&in, "data: %s\n\n", events[i]) == 0, "oom");
    else
        CHECK(buf_puts(&in, json) == 0, "oom");
    CHECK(e2ee_resp_feed(s, in.data, in.len, emit_cb, &out) == 0 &&
              e2ee_resp_finish(s, emit_cb, &out) == 0,
          "the server refused to seal");
    unsigned c = (f & 7u) | route << 3 | (events ? 1u << 5 : 0);
    const char *p = out.data, *end = out.data + out.len;
    for (size_t k = 0; p < end; k++) {
        const char *nl = events ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        size_t ln = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *d = p;
        size_t dn = ln;
        if (events && ln > 6 && !memcmp(p, "data: ", 6))
            d += 6, dn -= 6;
        else if (events)
            dn = 0;
        if (dn) {
            char name[96];
            snprintf(name, sizeof name, "%s_%u_%s_%zu", RN[route], f, events ? "ev" : "json", k);
            put_seed(dir, name, c, d, dn);
            char *t = strndup(d, dn), *h = strstr(t, "\":\"");
            while (h && strspn(h + 3, "0123456789abcdef") < 40)
                h = strstr(h + 3, "\":\"");
            if (h) { /* a tampered copy: one hex digit of a sealed field flipped */
                h[3 + 30] = h[3 + 30] == '0' ? '1' : '0';
                snprintf(name, sizeof name, "%s_%u_%s_%zu_tampered", RN[route], f,
                         events ? "ev" : "json", k);
                put_seed(dir, name, c, t, dn);
            }
            free(t);
        }
        p += ln + (nl ? 1 : 0);
    }
    e2ee_sess_free(s);
    buf_free(&in);
    buf_free(&out);
}

static void write_seeds(const char *dir)
{
    for (unsigned f = 0; f < 8; f++) {
        seal_seeds(dir, f, 0, CHAT_EVENTS, NULL);
        seal_seeds(dir, f, 0, NULL, CHAT_JSON);
        if (f >= 2 && f < 6) { /* NEAR off chat */
            seal_seeds(dir, f, 1, CMPL_EVENTS, NULL);
            seal_seeds(dir, f, 1, NULL, CMPL_JSON);
            seal_seeds(dir, f, 2, NULL, EMBD_JSON);
        }
    }
    /* shapes the scan declines, and text in clear */
    static const struct {
        const char *name, *body;
        unsigned c;
    } MISC[] = {
        {"done", "[DONE]", 1u << 5},
        {"clear_content", EV_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}",
         1u << 5},
        {"ws", " { \"choices\" : [ ] , \"usage\" : { \"total_tokens\" : 7 } } ", 1u << 5},
        {"dup", "{\"choices\":[],\"choices\":[]}", 1u << 5},
        {"escape", "{\"id\":\"a\\u0062\",\"object\":\"x\\/y\",\"choices\":[]}", 1u << 5},
        {"numbers", "{\"n\":-0,\"f\":1.50,\"e\":1e3,\"big\":123456789012345678901,\"choices\":[]}",
         0},
        {"tool_calls", "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"1\"}]}}]}", 0},
        {"not_json", "hello in clear", 1u << 5},
    };
    for (size_t i = 0; i < sizeof MISC / sizeof MISC[0]; i++)
        put_seed(dir, MISC[i].name, MISC[i].c, MISC[i].body, strlen(MISC[i].body));
    fprintf(stderr, "fuzz_lp_e2ee: seeds written to %s\n", dir);
}
