/* The per-format rules around the ciphers (e2ee/e2ee.h): which format a request speaks, the
 * spellings of keys each format accepts, nonce and timestamp checks, the AAD strings, and the
 * hex fields. */
#include "e2ee/e2ee.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"

const char *e2ee_err_name(int err)
{
    switch (err) {
    case E2EE_OK: return "ok";
    case E2EE_ERR_HEADER_MISSING: return "e2ee_header_missing";
    case E2EE_ERR_SIGNING_ALGO: return "e2ee_invalid_signing_algo";
    case E2EE_ERR_PUBLIC_KEY: return "e2ee_invalid_public_key";
    case E2EE_ERR_MODEL_KEY_MISMATCH: return "e2ee_model_key_mismatch";
    case E2EE_ERR_VERSION: return "e2ee_invalid_version";
    case E2EE_ERR_NONCE: return "e2ee_invalid_nonce";
    case E2EE_ERR_TIMESTAMP: return "e2ee_invalid_timestamp";
    case E2EE_ERR_DECRYPT: return "e2ee_decryption_failed";
    case E2EE_ERR_TOO_LONG: return "e2ee_too_long";
    default: return "e2ee_internal_error";
    }
}

/* ---- selection -------------------------------------------------------------------------- */

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static e2ee_span_t trim(e2ee_span_t s)
{
    while (s.n && is_ws(s.p[0]))
        s.p++, s.n--;
    while (s.n && is_ws(s.p[s.n - 1]))
        s.n--;
    return s;
}

static int span_ieq(e2ee_span_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

static int span_eq(e2ee_span_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

#define HAS(h, i) (((h)->present >> (i)) & 1u)

/* NEAR parses X-Encryption-Version as a u8; an unparsable value means 1 (§1.1). Returns the
 * version, or -1 for a u8 other than 1 and 2. */
static int near_version(e2ee_span_t s)
{
    unsigned v = 0;
    if (s.n == 0 || s.n > 3)
        return 1;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return 1;
        v = v * 10 + (unsigned)(s.p[i] - '0');
    }
    if (v > 255)
        return 1;
    return v == 1 || v == 2 ? (int)v : -1;
}

int e2ee_select(const e2ee_headers_t *h, e2ee_sel_t *out)
{
    memset(out, 0, sizeof *out);
    if (!h->present)
        return E2EE_OK;
    out->model_key_sent = (int)HAS(h, E2EE_H_MODEL_PUB_KEY);
    if (!HAS(h, E2EE_H_SIGNING_ALGO)) {
        /* ACI v2: all five headers, version exactly "2". */
        out->format = E2EE_F_ACI_V2;
        static const int need[] = {E2EE_H_VERSION, E2EE_H_CLIENT_PUB_KEY, E2EE_H_MODEL_PUB_KEY,
                                   E2EE_H_NONCE, E2EE_H_TIMESTAMP};
        for (size_t i = 0; i < sizeof need / sizeof *need; i++)
            if (!HAS(h, need[i]))
                return E2EE_ERR_HEADER_MISSING;
        return span_eq(h->v[E2EE_H_VERSION], "2") ? E2EE_OK : E2EE_ERR_VERSION;
    }
    e2ee_span_t algo = trim(h->v[E2EE_H_SIGNING_ALGO]);
    if (span_ieq(algo, "ecdsa"))
        out->algo = E2EE_ALGO_ECDSA;
    else if (span_ieq(algo, "ed25519"))
        out->algo = E2EE_ALGO_ED25519;
    else
        return E2EE_ERR_SIGNING_ALGO;
    if (!HAS(h, E2EE_H_CLIENT_PUB_KEY))
        return E2EE_ERR_HEADER_MISSING;
    /* NEAR's all-fields switch; one NEAR version names it X-Encrypt-Tool-Calls and takes
     * `1` or `true` (formats document §0, §12): either turns it on. */
    e2ee_span_t tc = trim(h->v[E2EE_H_TOOL_CALLS]);
    out->all_fields = span_ieq(trim(h->v[E2EE_H_ALL_FIELDS]), "true") ||
                      (HAS(h, E2EE_H_TOOL_CALLS) && (span_ieq(tc, "true") || span_eq(tc, "1")));
    e2ee_span_t ver = trim(h->v[E2EE_H_VERSION]);
    if (HAS(h, E2EE_H_VERSION) && !span_eq(ver, "1") && !span_eq(ver, "2"))
        return E2EE_ERR_VERSION;
    if (span_eq(ver, "2") || HAS(h, E2EE_H_NONCE) || HAS(h, E2EE_H_TIMESTAMP)) {
        out->format = E2EE_F_DSTACK_V2;
        if (!HAS(h, E2EE_H_MODEL_PUB_KEY) || !HAS(h, E2EE_H_NONCE) || !HAS(h, E2EE_H_TIMESTAMP))
            return E2EE_ERR_HEADER_MISSING;
        return E2EE_OK;
    }
    int nv = HAS(h, E2EE_H_ENCRYPTION_VERSION) ? near_version(h->v[E2EE_H_ENCRYPTION_VERSION]) : 1;
    if (nv < 0)
        return E2EE_ERR_VERSION;
    out->format = nv == 2 ? E2EE_F_NEAR_V2 : E2EE_F_V1;
    return E2EE_OK;
}

e2ee_cipher_t e2ee_legacy_cipher(e2ee_format_t f, e2ee_algo_t a)
{
    if (a == E2EE_ALGO_ECDSA)
        return E2EE_C_SECP_AESGCM;
    if (f == E2EE_F_NEAR_V2)
        return E2EE_C_X25519_XCHACHA;
    if (f == E2EE_F_V1)
        return E2EE_C_NACL_XSALSA; /* or another v1 cipher: e2ee_open_v1_ed25519 decides */
    return E2EE_C_X25519_AESGCM;
}

/* ---- keys in headers -------------------------------------------------------------------- */

/* Hex, either case, with an optional "0x" when allowed; -1 when malformed or too long. */
static long decode_key_hex(uint8_t *out, size_t cap, const char *p, size_t n, int allow_0x)
{
    if (allow_0x && n >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2, n -= 2;
    return hex_decode(out, cap, p, n);
}

int e2ee_parse_client_key(e2ee_cipher_t c, int aci, const char *hex, size_t n,
                          uint8_t out[E2EE_SECP_PUB_LEN], size_t *out_len)
{
    uint8_t b[E2EE_SECP_PUB_LEN];
    long len = decode_key_hex(b, sizeof b, hex, n, aci);
    if (len < 0)
        return E2EE_ERR_PUBLIC_KEY;
    if (e2ee_cipher_curve_secp(c)) {
        if (e2ee_parse_secp_pub(out, b, (size_t)len) != E2EE_OK)
            return E2EE_ERR_PUBLIC_KEY;
        *out_len = E2EE_SECP_PUB_LEN;
        return E2EE_OK;
    }
    if (len != 32)
        return E2EE_ERR_PUBLIC_KEY;
    if (aci) {
        memcpy(out, b, 32);
    } else if (e2ee_ed25519_pub_to_x25519(out, b) != E2EE_OK) {
        return E2EE_ERR_PUBLIC_KEY;
    }
    *out_len = 32;
    return E2EE_OK;
}

int e2ee_model_key_matches(e2ee_cipher_t c, int aci, const char *hex, size_t n,
                           const uint8_t *ours, size_t ours_len)
{
    uint8_t b[E2EE_SECP_PUB_LEN], norm[E2EE_SECP_PUB_LEN];
    long len = decode_key_hex(b, sizeof b, hex, n, aci);
    if (len < 0)
        return 0;
    if (e2ee_cipher_curve_secp(c)) {
        if (ours_len != E2EE_SECP_PUB_LEN || (len != 64 && len != 65) ||
            (len == 65 && b[0] != 0x04))
            return 0;
        norm[0] = 0x04;
        memcpy(norm + 1, len == 64 ? b : b + 1, 64);
        return sodium_memcmp(norm, ours, E2EE_SECP_PUB_LEN) == 0;
    }
    return len == 32 && ours_len == 32 && sodium_memcmp(b, ours, 32) == 0;
}

/* ---- nonce and timestamp ---------------------------------------------------------------- */

int e2ee_check_nonce(e2ee_format_t f, const char *p, size_t n)
{
    if (f == E2EE_F_ACI_V2)
        return n == 64 && hex_is_hex(p, n) ? E2EE_OK : E2EE_ERR_NONCE;
    return n >= 16 ? E2EE_OK : E2EE_ERR_NONCE;
}

int e2ee_parse_timestamp(e2ee_format_t f, const char *p, size_t n, int64_t now, int64_t window,
                         int64_t *ts)
{
    e2ee_span_t s = {p, n};
    int neg = 0, digits = 0, prev_us = 0;
    uint64_t v = 0;
    if (f != E2EE_F_ACI_V2)
        s = trim(s);
    size_t i = 0;
    if (i < s.n && (s.p[i] == '-' || (s.p[i] == '+' && f != E2EE_F_ACI_V2)))
        neg = s.p[i++] == '-';
    for (; i < s.n; i++) {
        char ch = s.p[i];
        if (ch == '_' && f != E2EE_F_ACI_V2 && digits && !prev_us) {
            prev_us = 1; /* Python: one underscore between digits */
            continue;
        }
        if (ch < '0' || ch > '9')
            return E2EE_ERR_TIMESTAMP;
        prev_us = 0;
        digits++;
        if (v > (UINT64_C(1) << 62) / 10)
            return E2EE_ERR_TIMESTAMP; /* far outside any window */
        v = v * 10 + (uint64_t)(ch - '0');
    }
    if (!digits || prev_us)
        return E2EE_ERR_TIMESTAMP;
    int64_t t = neg ? -(int64_t)v : (int64_t)v;
    int64_t d = t > now ? t - now : now - t;
    if (d > window)
        return E2EE_ERR_TIMESTAMP;
    *ts = t;
    return E2EE_OK;
}

/* ---- AAD -------------------------------------------------------------------------------- */

typedef struct wbuf {
    char *p;
    size_t cap, len;
    int over;
} wbuf_t;

static void put(wbuf_t *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->len) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void puts_(wbuf_t *w, const char *s)
{
    put(w, s, strlen(s));
}

static void put_i64(wbuf_t *w, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%lld", (long long)v);
    put(w, b, (size_t)n);
}

static int wbuf_done(const wbuf_t *w, size_t *out_len)
{
    if (w->over)
        return E2EE_ERR_TOO_LONG;
    *out_len = w->len;
    return E2EE_OK;
}

static const char *algo_name(e2ee_algo_t a)
{
    return a == E2EE_ALGO_ECDSA ? "ecdsa" : "ed25519";
}

int e2ee_aad_dstack_req(char *out, size_t cap, size_t *out_len, e2ee_algo_t a,
                        const char *model, size_t model_n, size_t msg_index, long content_index,
                        const char *nonce, size_t nonce_n, int64_t ts)
{
    wbuf_t w = {out, cap, 0, 0};
    puts_(&w, "v2|req|algo=");
    puts_(&w, algo_name(a));
    puts_(&w, "|model=");
    put(&w, model, model_n);
    puts_(&w, "|m=");
    put_i64(&w, (int64_t)msg_index);
    puts_(&w, "|c=");
    if (content_index < 0)
        puts_(&w, "-");
    else
        put_i64(&w, content_index);
    puts_(&w, "|n=");
    put(&w, nonce, nonce_n);
    puts_(&w, "|ts=");
    put_i64(&w, ts);
    return wbuf_done(&w, out_len);
}

int e2ee_aad_dstack_resp(char *out, size_t cap, size_t *out_len, e2ee_algo_t a,
                         const char *model, size_t model_n, const char *id, size_t id_n,
                         size_t choice, const char *field, const char *nonce, size_t nonce_n,
                         int64_t ts)
{
    wbuf_t w = {out, cap, 0, 0};
    puts_(&w, "v2|resp|algo=");
    puts_(&w, algo_name(a));
    puts_(&w, "|model=");
    put(&w, model, model_n);
    puts_(&w, "|id=");
    put(&w, id, id_n);
    puts_(&w, "|choice=");
    put_i64(&w, (int64_t)choice);
    puts_(&w, "|field=");
    puts_(&w, field);
    puts_(&w, "|n=");
    put(&w, nonce, nonce_n);
    puts_(&w, "|ts=");
    put_i64(&w, ts);
    return wbuf_done(&w, out_len);
}

const char *e2ee_aci_suite_name(e2ee_cipher_t c)
{
    return c == E2EE_C_ACI_X25519      ? "x25519-aes-256-gcm-hkdf-sha256"
           : c == E2EE_C_ACI_SECP256K1 ? "secp256k1-aes-256-gcm-hkdf-sha256"
                                       : NULL;
}

/* A JSON string as RFC 8785 writes it (ECMAScript JSON.stringify): '"' and '\\' escaped, the
 * short escapes \b \f \n \r \t, other controls as \u00xx (lowercase), everything else as is.
 * The input must be valid UTF-8 (lone surrogates cannot occur in UTF-8). */
static int put_jcs_string(wbuf_t *w, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    if (!s)
        return E2EE_ERR_INTERNAL;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 :
                                     (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || len > n - i)
            return E2EE_ERR_INTERNAL;
        uint32_t cp = len == 1 ? c : c & (0x7fu >> len);
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xc0) != 0x80)
                return E2EE_ERR_INTERNAL;
            cp = cp << 6 | (u[i + k] & 0x3fu);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return E2EE_ERR_INTERNAL; /* overlong, out of range, surrogate */
        i += len;
    }
    puts_(w, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" :
                          c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r" :
                          c == '\t' ? "\\t" : NULL;
        if (esc) {
            puts_(w, esc);
        } else if (c < 0x20) {
            char b[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
            put(w, b, sizeof b);
        } else {
            put(w, (const char *)&u[i], 1);
        }
    }
    puts_(w, "\"");
    return E2EE_OK;
}

int e2ee_aad_aci(char *out, size_t cap, size_t *out_len, e2ee_cipher_t suite, const char *model,
                 size_t model_n, const char *id, size_t id_n, const char *field,
                 const char *nonce, size_t nonce_n, int64_t ts)
{
    const char *name = e2ee_aci_suite_name(suite);
    wbuf_t w = {out, cap, 0, 0};
    if (!name)
        return E2EE_ERR_INTERNAL;
    /* Member names sorted by code unit: algo, field, id, model, nonce, purpose, ts. */
    puts_(&w, "{\"algo\":");
    int rc = put_jcs_string(&w, name, strlen(name));
    puts_(&w, ",\"field\":");
    if (rc == E2EE_OK)
        rc = put_jcs_string(&w, field, strlen(field));
    if (id) {
        puts_(&w, ",\"id\":");
        if (rc == E2EE_OK)
            rc = put_jcs_string(&w, id, id_n);
    }
    puts_(&w, ",\"model\":");
    if (rc == E2EE_OK)
        rc = put_jcs_string(&w, model, model_n);
    puts_(&w, ",\"nonce\":");
    if (rc == E2EE_OK)
        rc = put_jcs_string(&w, nonce, nonce_n);
    puts_(&w, ",\"purpose\":");
    puts_(&w, id ? "\"aci.e2ee.response.v2\"" : "\"aci.e2ee.request.v2\"");
    puts_(&w, ",\"ts\":");
    put_i64(&w, ts);
    puts_(&w, "}");
    return rc != E2EE_OK ? rc : wbuf_done(&w, out_len);
}

/* ---- hex fields ------------------------------------------------------------------------- */

size_t e2ee_hex_field_len(e2ee_cipher_t c, size_t pt_len)
{
    size_t b = e2ee_blob_len(c, pt_len);
    return b && b <= SIZE_MAX / 2 ? 2 * b : 0;
}

int e2ee_seal_hex(const e2ee_key_t *k, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                  size_t pt_len, char *out, size_t cap, size_t *out_len)
{
    size_t hl = e2ee_hex_field_len(k->cipher, pt_len), bl;
    if (!hl || cap < hl + 1)
        return E2EE_ERR_TOO_LONG;
    /* The blob (bl = hl/2 bytes) is sealed into out + bl + 1, then hex-encoded from the front:
     * encoding byte i overwrites blob bytes below 2i + 1 - bl <= i, all already read. */
    uint8_t *blob = (uint8_t *)out + hl / 2 + 1;
    int rc = e2ee_key_seal(k, NULL, aad, aad_len, pt, pt_len, blob, hl / 2, &bl);
    if (rc != E2EE_OK)
        return rc;
    static const char hexd[] = "0123456789abcdef";
    for (size_t i = 0; i < bl; i++) { /* front to back: see above */
        uint8_t v = blob[i];
        char pair[2] = {hexd[v >> 4], hexd[v & 15]};
        memcpy(out + 2 * i, pair, 2);
    }
    out[hl] = '\0';
    *out_len = hl;
    return E2EE_OK;
}

