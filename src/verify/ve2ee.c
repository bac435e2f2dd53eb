/* `chat --e2ee FORMAT`: one end-to-end encrypted round trip, checked from the client's side.
 *
 * The server key is taken from the attestation entry that vr_check_report has just verified
 * (fresh nonce, quote, report_data binding of the signing key), so the prompt is sealed to a
 * key that the TD proved it holds; if that report fails, nothing is sent. Our key pair is made
 * here for this one request. The request's message content is sealed with the format's cipher
 * (src/e2ee/e2ee.h, the formats of ../shared/docs/e2ee-formats.md), the answer's encrypted
 * fields are opened, and both directions are searched for the plaintext: the prompt must not
 * be in the bytes sent, nor the decrypted answer in the bytes received. The signature lines of
 * `chat` then cover those same ciphertext bytes.
 *
 * Formats (a row of FORMATS each): the Dstack fork's v1 and v2 (§5, §6) and NEAR's v1 and v2
 * (§3, §4), with the signing keys (ecdsa: secp256k1, ed25519: its X25519 form); ACI E2EE v2
 * (§7), whose key is not a signing key: it comes from the keyset of /v1/aci/attestation,
 * checked first by vaci.c (keyset digest bound into the quote with our nonce), in the suite
 * --e2ee-suite names (x25519 by default), with ACI's JCS AAD both ways. */
#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/hex.h"
#include "e2ee/client.h"
#include "e2ee/e2ee.h"
#include "verify/verify.h"

/* The formats, the client key pair, the server key, the headers and the answer's AAD are
 * the client side shared with the local verifying proxy (e2ee/client.h). */
typedef e2ee_client_format_t vformat_t;
#define FAM_DSTACK E2EE_FAM_DSTACK
#define FAM_NEAR E2EE_FAM_NEAR
#define FAM_ACI E2EE_FAM_ACI

struct ve2ee {
    const vformat_t *f;
    e2ee_algo_t algo;
    const char *algo_name;
    e2ee_cipher_t cipher;
    uint8_t secret[32];              /* ours: secp256k1 scalar or X25519 secret */
    char client_pub[E2EE_CLIENT_PUB_HEX];   /* X-Client-Pub-Key: ecdsa x‖y, the Ed25519 key, ACI's key */
    uint8_t server[E2EE_SECP_PUB_LEN];
    size_t server_len;
    char model_pub[140];             /* signing_public_key (ACI: the keyset's key) as served */
    char address[160];               /* the attested signing address */
    char model[256];
    char nonce[HEX_SIZE(32)];        /* Dstack v2 (32 hex), ACI (64 hex) */
    char digest[80];                 /* ACI: the keyset digest verified */
    int64_t ts;
    char hdr[E2EE_CLIENT_HDR_MAX][E2EE_CLIENT_HDR_LEN];
    const char *hdrp[E2EE_CLIENT_HDR_MAX + 1];
    const char *prompt;
};

static const vformat_t *find_format(const char *name) { return e2ee_client_format(name); }

const char *ve2ee_parse_format(const char *name)
{
    if (find_format(name))
        return NULL;
    return "--e2ee: dstack-v1, dstack-v2, near-v1, near-v2 or aci-v2";
}

int ve2ee_is_aci(const char *format)
{
    const vformat_t *f = format ? find_format(format) : NULL;
    return f && f->family == FAM_ACI;
}

/* --e2ee-suite: the short names, or the suite names of the keyset (§7.2). */
static const char *suite_of(const char *name, e2ee_cipher_t *c)
{
    if (!name || !strcmp(name, "x25519") || !strcmp(name, e2ee_aci_suite_name(E2EE_C_ACI_X25519))) {
        *c = E2EE_C_ACI_X25519;
        return "x25519";
    }
    if (!strcmp(name, "secp256k1") || !strcmp(name, e2ee_aci_suite_name(E2EE_C_ACI_SECP256K1))) {
        *c = E2EE_C_ACI_SECP256K1;
        return "secp256k1";
    }
    return NULL;
}

const char *ve2ee_parse_suite(const char *name)
{
    e2ee_cipher_t c;
    return suite_of(name, &c) ? NULL : "--e2ee-suite: x25519 or secp256k1";
}

const char *ve2ee_algo(const ve2ee_t *e) { return e->f->family == FAM_ACI ? NULL : e->algo_name; }
const char *ve2ee_attested_address(const ve2ee_t *e) { return e->address; }

void ve2ee_free(ve2ee_t *e)
{
    if (!e)
        return;
    sodium_memzero(e, sizeof *e);
    free(e);
}

/* Our key pair for this request (e2ee/client.h): ecdsa a secp256k1 scalar (X-Client-Pub-Key
 * x‖y), ed25519 an Ed25519 key pair whose X25519 form opens the answer (§2.2), ACI a key of
 * the suite's curve. */
static int make_client_key(ve2ee_t *e)
{
    return e2ee_client_keypair(e->f->family, e->cipher, e->secret, e->client_pub) == E2EE_OK ? 0
                                                                                          : -1;
}

/* The server key for the cipher from signing_public_key: ecdsa 64 (x‖y) or 65 bytes → 65;
 * ed25519 the Ed25519 key → its X25519 form. */
static int server_key(ve2ee_t *e, const char *hexkey, char *why, size_t whylen)
{
    if (e2ee_client_server_key(e->algo, hexkey, e->server, &e->server_len) == E2EE_OK)
        return 0;
    snprintf(why, whylen, "signing_public_key is not %s",
             e->algo == E2EE_ALGO_ECDSA ? "a secp256k1 point" : "an Ed25519 point");
    return -1;
}

/* ACI: the keyset of a freshly verified /v1/aci/attestation report (vaci.c, lines "aci.*");
 * the prompt is sealed only if every one of those lines passed. */
static ve2ee_t *aci_setup(vctx_t *cx, vopts_t *o, ve2ee_t *e)
{
    const char *suite = e2ee_aci_suite_name(e->cipher);
    vctx_t sub = {CHECKLIST_INIT, 0, ""};
    va_keyset_t ks;
    int fetched = va_fetch_keyset(&sub, o, suite, &ks) == 0;
    size_t failed = check_count(&sub.cl, CHK_FAIL);
    if (sub.error && !cx->error) {
        cx->error = 1;
        snprintf(cx->errmsg, sizeof cx->errmsg, "%s", sub.errmsg);
    }
    vx_merge_prefixed(&cx->cl, &sub.cl, "aci.");
    check_free(&sub.cl);
    static const char what[] = "the request is encrypted to the attested ACI key (the keyset "
                               "whose digest the quote just bound to our nonce), with a client "
                               "key made for it";
    uint8_t b[E2EE_SECP_PUB_LEN];
    long n = fetched && ks.public_key[0] ? vx_hex(ks.public_key, b, sizeof b) : -1;
    int ok = 0;
    if (!fetched)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a verified ACI report", "no report: nothing sent");
    else if (failed)
        check_addf(&cx->cl, "e2ee.key", CHK_FAIL, what, "a verified ACI report",
                   "the ACI report failed %zu check(s): the prompt was not sent", failed);
    else if (e->cipher == E2EE_C_ACI_X25519 && n != 32)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "64 hex (X25519)", ks.public_key);
    else if (e->cipher == E2EE_C_ACI_SECP256K1 &&
             (n < 0 || e2ee_parse_secp_pub(e->server, b, (size_t)n) != E2EE_OK))
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a secp256k1 point", ks.public_key);
    else if (make_client_key(e) != 0)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a client key pair", "key generation failed");
    else {
        if (e->cipher == E2EE_C_ACI_X25519) {
            memcpy(e->server, b, 32);
            e->server_len = 32;
        } else {
            e->server_len = E2EE_SECP_PUB_LEN;
        }
        snprintf(e->model_pub, sizeof e->model_pub, "%s", ks.public_key);
        snprintf(e->digest, sizeof e->digest, "%s", ks.digest);
        check_addf(&cx->cl, "e2ee.key", CHK_PASS, what, ks.digest,
                   "aci-v2 %s, key %s %.16s…, keyset %.23s…, client key %.16s…", e->algo_name,
                   ks.key_id, ks.public_key, ks.digest, e->client_pub);
        ok = 1;
    }
    if (!ok) {
        ve2ee_free(e);
        return NULL;
    }
    return e;
}

ve2ee_t *ve2ee_setup(vctx_t *cx, vopts_t *o)
{
    ve2ee_t *e = calloc(1, sizeof *e);
    if (!e || sodium_init() < 0) {
        free(e);
        vx_error(cx, "e2ee.key", "a client key pair", "out of memory or libsodium failed");
        return NULL;
    }
    e->f = find_format(o->e2ee);
    if (e->f->family == FAM_ACI) {
        e->algo_name = suite_of(o->e2ee_suite, &e->cipher);
        return aci_setup(cx, o, e);
    }
    e->algo_name = o->algo ? o->algo : "ecdsa";
    e->algo = strcmp(e->algo_name, "ed25519") == 0 ? E2EE_ALGO_ED25519 : E2EE_ALGO_ECDSA;
    e->cipher = e->algo == E2EE_ALGO_ECDSA ? e->f->ecdsa : e->f->ed25519;

    /* A fresh report for the key we are about to encrypt to, checked in full. */
    vctx_t sub = {CHECKLIST_INIT, 0, ""};
    struct json_object *rep = NULL;
    char spki[HEX_SIZE(32)] = "", prefix[32], why[128] = "";
    o->have_nonce = 0;
    int fetched = vr_fetch_report(&sub, o, o->target, e->algo_name, o->signing_address, &rep,
                                  spki) == 0;
    if (fetched)
        vr_check_report(&sub, o, rep, o->signing_address, spki);
    size_t failed = check_count(&sub.cl, CHK_FAIL);
    struct json_object *entry = fetched ? vr_report_entry(rep, o->signing_address) : NULL;
    const char *pk = json_get_str(entry, "signing_public_key", NULL);
    const char *addr = json_get_str(entry, "signing_address", NULL);
    snprintf(prefix, sizeof prefix, "%s.", e->algo_name);
    if (sub.error && !cx->error) {
        cx->error = 1;
        snprintf(cx->errmsg, sizeof cx->errmsg, "%s", sub.errmsg);
    }
    vx_merge_prefixed(&cx->cl, &sub.cl, prefix);
    check_free(&sub.cl);

    static const char what[] = "the request is encrypted to the attested key (signing_public_key "
                               "of the report just verified), with a client key made for it";
    int ok = 0;
    if (!fetched || !entry)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a verified report", "no report: nothing sent");
    else if (failed)
        check_addf(&cx->cl, "e2ee.key", CHK_FAIL, what, "a verified report",
                   "the %s report failed %zu check(s): the prompt was not sent", e->algo_name, failed);
    else if (!pk || !addr)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "signing_public_key",
                  "the report has no signing_public_key: nothing sent");
    else if (server_key(e, pk, why, sizeof why) != 0)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a valid public key", why);
    else if (make_client_key(e) != 0)
        check_add(&cx->cl, "e2ee.key", CHK_FAIL, what, "a client key pair", "key generation failed");
    else {
        snprintf(e->model_pub, sizeof e->model_pub, "%s", pk);
        snprintf(e->address, sizeof e->address, "%s", addr);
        check_addf(&cx->cl, "e2ee.key", CHK_PASS, what, addr, "%s %s, key %.16s…, client key %.16s…",
                   e->f->name, e->algo_name, pk, e->client_pub);
        ok = 1;
    }
    json_object_put(rep);
    if (!ok) {
        ve2ee_free(e);
        return NULL;
    }
    return e;
}

/* Whether needle (or its JSON-escaped form) occurs in hay. */
static int on_wire(const buf_t *hay, const char *needle, size_t n)
{
    if (n == 0 || !hay->data)
        return 0;
    if (memmem(hay->data, hay->len, needle, n))
        return 1;
    buf_t esc = BUF_INIT;
    buf_json_str(&esc, needle, n);
    int hit = esc.len > 2 && memmem(hay->data, hay->len, esc.data + 1, esc.len - 2) != NULL;
    buf_free(&esc);
    return hit;
}

int ve2ee_build_request(vctx_t *cx, ve2ee_t *e, buf_t *body, const char *model,
                        const char *prompt, int stream, long max_tokens,
                        const char *const **headers)
{
    char aad[1024];
    size_t aad_len = 0;
    size_t pn = strlen(prompt), hn = e2ee_hex_field_len(e->cipher, pn);
    snprintf(e->model, sizeof e->model, "%s", model);
    e->prompt = prompt;
    if (e->f->family == FAM_DSTACK && e->f->version == 2) {
        uint8_t nb[16];
        randombytes_buf(nb, sizeof nb);
        hex_encode(e->nonce, nb, sizeof nb);
        e->ts = (int64_t)time(NULL);
        if (e2ee_aad_dstack_req(aad, sizeof aad, &aad_len, e->algo, model, strlen(model), 0, -1,
                                e->nonce, strlen(e->nonce), e->ts) != E2EE_OK) {
            vx_error(cx, "e2ee.request", "the request AAD", "model name too long");
            return -1;
        }
    } else if (e->f->family == FAM_ACI) {
        /* §7.4: a fresh 32-byte nonce as 64 hex, Unix seconds; §7.3: the JCS request AAD of
         * the one field sealed, messages.0.content. */
        uint8_t nb[32];
        randombytes_buf(nb, sizeof nb);
        hex_encode(e->nonce, nb, sizeof nb);
        e->ts = (int64_t)time(NULL);
        if (e2ee_aad_aci(aad, sizeof aad, &aad_len, e->cipher, model, strlen(model), NULL, 0,
                         "messages.0.content", e->nonce, strlen(e->nonce), e->ts) != E2EE_OK) {
            vx_error(cx, "e2ee.request", "the request AAD", "model name too long or not UTF-8");
            return -1;
        }
    }
    char *sealed = malloc(hn + 1);
    e2ee_key_t k;
    size_t sl = 0;
    int rc = sealed ? e2ee_key_derive_send(&k, e->cipher, e->server, e->server_len, NULL) : -1;
    if (rc == E2EE_OK)
        rc = e2ee_seal_hex(&k, (const uint8_t *)aad, aad_len, (const uint8_t *)prompt, pn, sealed,
                           hn + 1, &sl);
    e2ee_key_wipe(&k);
    if (rc != E2EE_OK) {
        vx_error(cx, "e2ee.request", "the prompt could be encrypted", "%s",
                 sealed ? e2ee_err_name(rc) : "out of memory");
        free(sealed);
        return -1;
    }
    buf_puts(body, "{\"model\":");
    buf_json_str(body, model, strlen(model));
    buf_puts(body, ",\"messages\":[{\"role\":\"user\",\"content\":\"");
    buf_append(body, sealed, sl);
    buf_printf(body, "\"}],\"stream\":%s", stream ? "true" : "false");
    if (max_tokens > 0)
        buf_printf(body, ",\"max_tokens\":%ld", max_tokens);
    buf_puts(body, "}");
    free(sealed);

    e2ee_client_headers(e->f, e->algo_name, e->client_pub, e->model_pub, e->nonce, e->ts, e->hdr,
                        e->hdrp);
    *headers = e->hdrp;

    int leak = on_wire(body, prompt, pn);
    check_addf(&cx->cl, "e2ee.request.plaintext", leak ? CHK_FAIL : CHK_PASS,
               "the prompt is not in the request bytes sent (only its ciphertext)",
               "prompt absent", "%s in %zu bytes; content = %zu hex characters (%s)",
               leak ? "PROMPT FOUND" : "absent", body->len, sl, e->f->name);
    return leak ? -1 : 0;
}

/* What the answer held, over all choices and events. */
typedef struct vtally {
    size_t sealed;       /* fields opened */
    size_t bad;          /* fields that should be sealed and did not open */
    char first_bad[200];
    buf_t completion;    /* decrypted content, in order */
    buf_t fields;        /* every decrypted field, NUL-separated, for the wire search */
} vtally_t;

/* One field (message.content etc.) of an answer object `obj` (the JSON body or an event).
 * path: ACI's AAD field path of it (§7.3), e.g. "choices.0.message.content". */
static void open_field(ve2ee_t *e, struct json_object *obj, struct json_object *holder,
                       size_t choice, const char *field, const char *where, const char *path,
                       int is_content, vtally_t *t)
{
    struct json_object *v;
    if (!json_object_object_get_ex(holder, field, &v) || json_object_is_type(v, json_type_null))
        return;
    if (!json_object_is_type(v, json_type_string)) {
        if (!t->bad++)
            snprintf(t->first_bad, sizeof t->first_bad, "%s.%s is not a string", where, field);
        return;
    }
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    /* NEAR never encrypts the empty string; the Dstack fork does (buffered), and drops it from
     * stream deltas. An empty field carries no plaintext either way. */
    if (n == 0)
        return;
    /* Dstack v2: the answer's model and id; ACI: the request's model, byte for byte (§7.3),
     * and the answer's id, or "". */
    char aad[1024];
    size_t aad_len = 0;
    if (e2ee_client_resp_aad(e->f, e->algo, e->cipher, json_get_str(obj, "model", NULL),
                             json_get_str(obj, "id", NULL), choice, field, e->model, path,
                             e->nonce, e->ts, aad, sizeof aad, &aad_len) != E2EE_OK)
        aad_len = 0;
    size_t cap = n / 2 + 1, pl = 0;
    uint8_t *pt = malloc(cap);
    int rc = pt ? e2ee_open_hex(e->cipher, e->f->family == FAM_ACI, e->secret, s, n,
                                (const uint8_t *)aad, aad_len, pt, cap, &pl)
                : E2EE_ERR_INTERNAL;
    if (rc != E2EE_OK) {
        if (!t->bad++)
            snprintf(t->first_bad, sizeof t->first_bad, "%s.%s does not decrypt (%s): \"%.40s%s\"",
                     where, field, e2ee_err_name(rc), s, n > 40 ? "…" : "");
    } else {
        t->sealed++;
        if (is_content)
            buf_append(&t->completion, pt, pl);
        buf_append(&t->fields, pt, pl);
        buf_append(&t->fields, "", 1);
    }
    if (pt)
        sodium_memzero(pt, cap);
    free(pt);
}

static void open_object(ve2ee_t *e, struct json_object *obj, const char *part, vtally_t *t)
{
    struct json_object *ch;
    if (!json_object_object_get_ex(obj, "choices", &ch) || !json_object_is_type(ch, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(ch); i++) {
        struct json_object *c = json_object_array_get_idx(ch, i), *h, *ix;
        if (!json_object_object_get_ex(c, part, &h) || !json_object_is_type(h, json_type_object))
            continue;
        /* ACI paths use the choice's index member when present, else the position (§7.3). */
        long long k = (long long)i;
        if (json_object_object_get_ex(c, "index", &ix) && json_object_is_type(ix, json_type_int))
            k = (long long)json_object_get_int64(ix);
        char where[64], path[96];
        snprintf(where, sizeof where, "choices[%zu].%s", i, part);
#define PATH(f) (snprintf(path, sizeof path, "choices.%lld.%s.%s", k, part, f), path)
        open_field(e, obj, h, i, "content", where, PATH("content"), 1, t);
        open_field(e, obj, h, i, "reasoning_content", where, PATH("reasoning_content"), 0, t);
        if (e->f->family == FAM_NEAR || e->f->family == FAM_ACI)
            open_field(e, obj, h, i, "reasoning", where, PATH("reasoning"), 0, t);
        struct json_object *au;
        if (e->f->family == FAM_ACI && json_object_object_get_ex(h, "audio", &au) &&
            json_object_is_type(au, json_type_object)) {
            char aw[80];
            snprintf(aw, sizeof aw, "%s.audio", where);
            open_field(e, obj, au, i, "data", aw, PATH("audio.data"), 0, t);
        }
#undef PATH
    }
}

void ve2ee_check_response(vctx_t *cx, ve2ee_t *e, const buf_t *received, int stream)
{
    vtally_t t;
    memset(&t, 0, sizeof t);
    const char *p = received->data ? received->data : "", *end = p + received->len;
    size_t events = 0;
    int parse_bad = 0;
    if (!stream) {
        struct json_object *j = json_tokener_parse(p);
        if (!j || !json_object_is_type(j, json_type_object))
            parse_bad = 1;
        else
            open_object(e, j, "message", &t);
        json_object_put(j);
    } else {
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t ln = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (ln > 0 && p[ln - 1] == '\r')
                ln--;
            if (ln >= 5 && strncmp(p, "data:", 5) == 0) {
                size_t o = p[5] == ' ' ? 6 : 5;
                if (!(ln - o == 6 && strncmp(p + o, "[DONE]", 6) == 0)) {
                    char *line = strndup(p + o, ln - o);
                    struct json_object *j = line ? json_tokener_parse(line) : NULL;
                    free(line);
                    if (!j || !json_object_is_type(j, json_type_object))
                        parse_bad = 1;
                    else {
                        events++;
                        open_object(e, j, "delta", &t);
                    }
                    json_object_put(j);
                }
            }
            p += (nl ? (size_t)(nl - p) + 1 : (size_t)(end - p));
        }
    }

    static const char dwhat[] = "every encrypted field of the answer decrypts with our key";
    if (parse_bad)
        check_add(&cx->cl, "e2ee.response.decrypt", CHK_FAIL, dwhat, "JSON", "the answer does not parse");
    else if (t.bad)
        check_addf(&cx->cl, "e2ee.response.decrypt", CHK_FAIL, dwhat, "every field sealed",
                   "%zu field(s) not sealed to us, first %s", t.bad, t.first_bad);
    else if (!t.sealed)
        check_add(&cx->cl, "e2ee.response.decrypt", CHK_FAIL, dwhat, "at least one sealed field",
                  "no encrypted field in the answer");
    else
        check_addf(&cx->cl, "e2ee.response.decrypt", CHK_PASS, dwhat, e->f->name,
                   "%zu field(s)%s%s decrypted: \"%.80s%s\"", t.sealed, stream ? " in " : "",
                   stream ? "the stream's events" : "",
                   t.completion.data ? t.completion.data : "", t.completion.len > 80 ? "…" : "");

    /* The plaintext check: the whole completion, and each field of 8 bytes or more (shorter
     * ones, a token such as "a", may occur in any JSON by chance), raw or JSON-escaped. */
    static const char pwhat[] = "the decrypted answer is not in the response bytes received "
                                "(only its ciphertext)";
    size_t leaks = 0;
    if (on_wire(received, t.completion.data, t.completion.len))
        leaks++;
    for (size_t off = 0; off < t.fields.len;) {
        const char *f = t.fields.data + off;
        size_t fl = strlen(f);
        if (fl >= 8 && on_wire(received, f, fl))
            leaks++;
        off += fl + 1;
    }
    if (leaks)
        check_addf(&cx->cl, "e2ee.response.plaintext", CHK_FAIL, pwhat, "absent",
                   "PLAINTEXT FOUND: %zu decrypted field(s) appear in the %zu bytes received",
                   leaks, received->len);
    else if (!t.completion.len)
        check_add(&cx->cl, "e2ee.response.plaintext", t.bad || parse_bad ? CHK_FAIL : CHK_WARN,
                  pwhat, "absent", "no decrypted completion text to look for");
    else if (stream)
        check_addf(&cx->cl, "e2ee.response.plaintext", CHK_PASS, pwhat, "absent",
                   "%zu bytes of completion absent from %zu bytes (%zu events)", t.completion.len,
                   received->len, events);
    else
        check_addf(&cx->cl, "e2ee.response.plaintext", CHK_PASS, pwhat, "absent",
                   "%zu bytes of completion absent from %zu bytes", t.completion.len,
                   received->len);
    if (t.completion.data)
        sodium_memzero(t.completion.data, t.completion.len);
    if (t.fields.data)
        sodium_memzero(t.fields.data, t.fields.len);
    buf_free(&t.completion);
    buf_free(&t.fields);
}

void ve2ee_check_headers(vctx_t *cx, const ve2ee_t *e, const vhttp_resp_t *r)
{
    if (e->f->family != FAM_ACI)
        return;
    /* §7.1 and aci.md §7 call these unauthenticated hints: what they say is checked, but a
     * missing one is a warning (the decrypted fields are the proof); a keyset digest other
     * than the one just verified means the keyset changed (re-verify), also a warning. */
    char ap[16], ver[16], algo[80], av[32], dg[96];
    int has_ap = vhttp_header(r, "X-E2EE-Applied", ap, sizeof ap);
    int has_ver = vhttp_header(r, "X-E2EE-Version", ver, sizeof ver);
    int has_algo = vhttp_header(r, "X-E2EE-Algo", algo, sizeof algo);
    int has_av = vhttp_header(r, "X-ACI-Version", av, sizeof av);
    int has_dg = vhttp_header(r, "X-ACI-Keyset-Digest", dg, sizeof dg);
    const char *suite = e2ee_aci_suite_name(e->cipher);
    int ok = has_ap && !strcmp(ap, "true") && has_ver && !strcmp(ver, "2") && has_algo &&
             !strcmp(algo, suite) && has_av && !strcmp(av, "aci/1") && has_dg &&
             !strcmp(dg, e->digest);
    check_addf(&cx->cl, "e2ee.response.headers", ok ? CHK_PASS : CHK_WARN,
               "the answer's hints name ACI v2, our suite and the keyset just verified",
               e->digest, "X-E2EE-Applied %s, X-E2EE-Version %s, X-E2EE-Algo %s, X-ACI-Version %s, "
               "X-ACI-Keyset-Digest %s", has_ap ? ap : "absent", has_ver ? ver : "absent",
               has_algo ? algo : "absent", has_av ? av : "absent", has_dg ? dg : "absent");
}

void ve2ee_check_signed(vctx_t *cx, const ve2ee_t *e, int text_ok, int sig_ok, int attested_ok)
{
    int ok = text_ok && sig_ok && attested_ok;
    check_addf(&cx->cl, "e2ee.signature", ok ? CHK_PASS : CHK_FAIL,
               "the key we encrypted to signed the ciphertext exchanged "
               "(text = sha256(bytes sent):sha256(bytes received))",
               e->address, "%s: text %s, signature %s, signer %s", e->algo_name,
               text_ok ? "matches" : "DIFFERS", sig_ok ? "valid" : "INVALID",
               attested_ok ? "is the attested key" : "IS ANOTHER KEY");
}
