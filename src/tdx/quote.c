/* TDX DCAP quote parser and signature checks (shared/docs/tee-formats.md §1), plus dstack event-log
 * replay (§2.6). The parser is a bounds-checked cursor over the caller's bytes: every read
 * first proves that the bytes exist, so any truncation is TDX_ERR_TRUNCATED, never a crash. */
#include "tdx/quote.h"

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/hex.h"
#include "core/json.h"
#include "core/pem.h"
#include "core/sha.h"

const uint8_t tdx_intel_qe_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                            0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

const char *tdx_strerror(int err)
{
    switch (err) {
    case TDX_OK: return "ok";
    case TDX_ERR_TRUNCATED: return "quote truncated";
    case TDX_ERR_VERSION: return "unsupported quote version";
    case TDX_ERR_KEY_TYPE: return "unsupported attestation key type";
    case TDX_ERR_TEE_TYPE: return "not a TDX quote";
    case TDX_ERR_BODY_TYPE: return "unsupported quote body type";
    case TDX_ERR_CERT_TYPE: return "unsupported or inconsistent certification data";
    case TDX_ERR_SIGNATURE: return "signature does not verify";
    case TDX_ERR_BINDING: return "QE report does not bind the attestation key";
    case TDX_ERR_CHAIN: return "PCK certificate chain does not verify";
    case TDX_ERR_CRYPTO: return "crypto library failure";
    case TDX_ERR_EVENTLOG: return "event log invalid";
    default: return "unknown error";
    }
}

/* ---- bounds-checked cursor ---- */

typedef struct cursor {
    const uint8_t *p;
    size_t len, off;
} cursor_t;

static const uint8_t *cur_take(cursor_t *c, size_t n)
{
    if (n > c->len - c->off)
        return NULL;
    const uint8_t *r = c->p + c->off;
    c->off += n;
    return r;
}

static int cur_u16(cursor_t *c, uint16_t *v)
{
    const uint8_t *b = cur_take(c, 2);
    if (!b)
        return -1;
    *v = (uint16_t)(b[0] | (b[1] << 8));
    return 0;
}

static int cur_u32(cursor_t *c, uint32_t *v)
{
    const uint8_t *b = cur_take(c, 4);
    if (!b)
        return -1;
    *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    return 0;
}

static void parse_td_body(tdx_td_body_t *b, const uint8_t *p, int v15)
{
    b->tee_tcb_svn = p + 0;
    b->mrseam = p + 16;
    b->mrsignerseam = p + 64;
    b->seam_attributes = p + 112;
    b->td_attributes = p + 120;
    b->xfam = p + 128;
    b->mrtd = p + 136;
    b->mrconfigid = p + 184;
    b->mrowner = p + 232;
    b->mrownerconfig = p + 280;
    for (int i = 0; i < 4; i++)
        b->rtmr[i] = p + 328 + 48 * i;
    b->report_data = p + 520;
    b->tee_tcb_svn2 = v15 ? p + 584 : NULL;
    b->mrservicetd = v15 ? p + 600 : NULL;
}

static int parse_header_and_body(tdx_quote_t *q, cursor_t *c)
{
    const uint8_t *b;
    if (cur_u16(c, &q->version) || cur_u16(c, &q->att_key_type) || cur_u32(c, &q->tee_type))
        return TDX_ERR_TRUNCATED;
    if (q->version != 4 && q->version != 5)
        return TDX_ERR_VERSION;
    if (q->att_key_type != 2)
        return TDX_ERR_KEY_TYPE;
    if (q->tee_type != TDX_TEE_TYPE_TDX)
        return TDX_ERR_TEE_TYPE;
    if (!cur_take(c, 4) || !(q->qe_vendor_id = cur_take(c, 16)) || !(q->user_data = cur_take(c, 20)))
        return TDX_ERR_TRUNCATED;
    if (q->version == 4) {
        q->body_type = 2;
        q->body_len = TDX_BODY10_LEN;
    } else {
        if (cur_u16(c, &q->body_type) || cur_u32(c, &q->body_len))
            return TDX_ERR_TRUNCATED;
        if (!((q->body_type == 2 && q->body_len == TDX_BODY10_LEN) ||
              (q->body_type == 3 && q->body_len == TDX_BODY15_LEN)))
            return TDX_ERR_BODY_TYPE;
    }
    q->body_off = c->off;
    if (!(b = cur_take(c, q->body_len)))
        return TDX_ERR_TRUNCATED;
    parse_td_body(&q->body, b, q->body_type == 3);
    q->signed_len = c->off;
    return TDX_OK;
}

/* Certification data type 6: QE report, its signature, QE auth data, then type 5 PCK chain. */
static int parse_qe_cert_data(tdx_quote_t *q, cursor_t *c)
{
    if (cur_u16(c, &q->cert_type) || cur_u32(c, &q->cert_len))
        return TDX_ERR_TRUNCATED;
    if (q->cert_type != 6)
        return TDX_ERR_CERT_TYPE;
    if (q->cert_len != c->len - c->off) /* must fill the signature data exactly */
        return q->cert_len > c->len - c->off ? TDX_ERR_TRUNCATED : TDX_ERR_CERT_TYPE;
    if (!(q->qe_report = cur_take(c, TDX_QE_REPORT_LEN)) || !(q->qe_report_sig = cur_take(c, 64)) ||
        cur_u16(c, &q->qe_auth_len) || !(q->qe_auth_data = cur_take(c, q->qe_auth_len)) ||
        cur_u16(c, &q->pck_cert_type) || cur_u32(c, &q->pck_chain_len))
        return TDX_ERR_TRUNCATED;
    if (q->pck_cert_type != 5)
        return TDX_ERR_CERT_TYPE;
    if (!(q->pck_chain = cur_take(c, q->pck_chain_len)))
        return TDX_ERR_TRUNCATED;
    if (c->off != c->len)
        return TDX_ERR_CERT_TYPE;
    return TDX_OK;
}

int tdx_quote_parse(tdx_quote_t *q, const uint8_t *data, size_t len)
{
    memset(q, 0, sizeof *q);
    if (!data)
        return TDX_ERR_TRUNCATED;
    q->data = data;
    q->len = len;
    cursor_t c = {data, len, 0};
    int rc = parse_header_and_body(q, &c);
    if (rc)
        return rc;
    if (cur_u32(&c, &q->sig_data_len))
        return TDX_ERR_TRUNCATED;
    q->sig_data_off = c.off;
    if (q->sig_data_len > len - c.off)
        return TDX_ERR_TRUNCATED;
    q->quote_len = c.off + q->sig_data_len;
    /* The signature data is parsed with its own end, so trailing bytes are never read. */
    cursor_t s = {data + q->sig_data_off, q->sig_data_len, 0};
    if (!(q->signature = cur_take(&s, 64)) || !(q->attest_key = cur_take(&s, 64)))
        return TDX_ERR_TRUNCATED;
    return parse_qe_cert_data(q, &s);
}

uint64_t tdx_td_attributes(const tdx_quote_t *q)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | q->body.td_attributes[i];
    return v;
}

/* ---- signatures ---- */

/* SubjectPublicKeyInfo DER prefix for an uncompressed P-256 point. */
static const uint8_t p256_spki_prefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};

static EVP_PKEY *p256_pubkey(const uint8_t xy[64])
{
    uint8_t der[sizeof p256_spki_prefix + 64];
    memcpy(der, p256_spki_prefix, sizeof p256_spki_prefix);
    memcpy(der + sizeof p256_spki_prefix, xy, 64);
    const unsigned char *p = der;
    return d2i_PUBKEY(NULL, &p, (long)sizeof der);
}

/* Verifies a raw r||s signature (each half n/2 bytes) with pkey and the given digest. */
static int verify_raw(EVP_PKEY *pkey, const EVP_MD *md, const uint8_t *msg, size_t n,
                      const uint8_t *rs, size_t rslen)
{
    int rc = TDX_ERR_CRYPTO;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(rs, (int)(rslen / 2), NULL);
    BIGNUM *s = BN_bin2bn(rs + rslen / 2, (int)(rslen / 2), NULL);
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!sig || !r || !s || !ctx || !ECDSA_SIG_set0(sig, r, s))
        goto out;
    r = s = NULL; /* owned by sig now */
    int derlen = i2d_ECDSA_SIG(sig, &der);
    if (derlen <= 0)
        goto out;
    if (EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) != 1)
        goto out;
    rc = EVP_DigestVerify(ctx, der, (size_t)derlen, msg, n) == 1 ? TDX_OK : TDX_ERR_SIGNATURE;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

int tdx_p256_verify(const uint8_t pub_xy[64], const uint8_t *msg, size_t n, const uint8_t sig_rs[64])
{
    EVP_PKEY *k = p256_pubkey(pub_xy);
    if (!k) {
        ERR_clear_error();
        return TDX_ERR_SIGNATURE; /* not a point on the curve: the key cannot sign anything */
    }
    int rc = verify_raw(k, EVP_sha256(), msg, n, sig_rs, 64);
    EVP_PKEY_free(k);
    return rc;
}

int tdx_verify_quote_signature(const tdx_quote_t *q)
{
    return tdx_p256_verify(q->attest_key, q->data, q->signed_len, q->signature);
}

int tdx_verify_qe_binding(const tdx_quote_t *q)
{
    uint8_t want[32];
    sha_ctx *c = sha256_new();
    if (!c)
        return TDX_ERR_CRYPTO;
    int ok = sha_update(c, q->attest_key, 64) == 0 &&
             sha_update(c, q->qe_auth_data, q->qe_auth_len) == 0 && sha_final(c, want) == 0;
    sha_free(c);
    if (!ok)
        return TDX_ERR_CRYPTO;
    const uint8_t *rd = q->qe_report + TDX_QE_REPORT_DATA;
    uint8_t diff = 0;
    for (int i = 0; i < 32; i++)
        diff |= (uint8_t)(rd[i] ^ want[i]) | rd[32 + i];
    return diff ? TDX_ERR_BINDING : TDX_OK;
}

/* Every PEM certificate of chain[0..len) in a new stack (leaf first), strictly; NULL on any
 * defect. */
static STACK_OF(X509) *read_pem_chain(const uint8_t *chain, size_t len)
{
    STACK_OF(X509) *sk = NULL;
    pem_chain_read((const char *)chain, len, TDX_PCK_CHAIN_MAX_CERTS, &sk);
    return sk;
}

int tdx_verify_qe_report_signature(const tdx_quote_t *q)
{
    STACK_OF(X509) *sk = read_pem_chain(q->pck_chain, q->pck_chain_len);
    if (!sk)
        return TDX_ERR_CHAIN;
    EVP_PKEY *k = X509_get0_pubkey(sk_X509_value(sk, 0));
    int rc = TDX_ERR_CHAIN;
    if (k && EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 256)
        rc = verify_raw(k, EVP_sha256(), q->qe_report, TDX_QE_REPORT_LEN, q->qe_report_sig, 64);
    ERR_clear_error();
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

static X509 *read_root(const uint8_t *root, size_t len)
{
    static const char pem_tag[] = "-----BEGIN";
    X509 *x = NULL;
    if (len > INT32_MAX)
        return NULL;
    if (len >= sizeof pem_tag - 1 && memmem(root, len, pem_tag, sizeof pem_tag - 1)) {
        BIO *bio = BIO_new_mem_buf(root, (int)len);
        if (bio)
            x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    } else {
        const unsigned char *p = root;
        x = d2i_X509(NULL, &p, (long)len);
    }
    ERR_clear_error();
    return x;
}

int tdx_pck_chain_verify(const uint8_t *chain_pem, size_t chain_len, const uint8_t *root,
                         size_t root_len, time_t at)
{
    int rc = TDX_ERR_CHAIN;
    X509 *anchor = read_root(root, root_len);
    STACK_OF(X509) *sk = read_pem_chain(chain_pem, chain_len);
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!anchor || !sk || !untrusted || !store || !ctx)
        goto out;
    if (X509_STORE_add_cert(store, anchor) != 1)
        goto out;
    /* Intermediates only: a self-signed certificate in the quote is never an anchor. */
    for (int i = 1; i < sk_X509_num(sk); i++) {
        X509 *x = sk_X509_value(sk, i);
        if (X509_check_issued(x, x) != X509_V_OK && !sk_X509_push(untrusted, x))
            goto out;
    }
    if (X509_STORE_CTX_init(ctx, store, sk_X509_value(sk, 0), untrusted) != 1)
        goto out;
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, at ? at : time(NULL));
    X509_VERIFY_PARAM_set_depth(param, 4);
    rc = X509_verify_cert(ctx) == 1 ? TDX_OK : TDX_ERR_CHAIN;
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    sk_X509_pop_free(sk, X509_free);
    X509_free(anchor);
    return rc;
}

int tdx_verify_quote(const tdx_quote_t *q, const uint8_t *root, size_t root_len, time_t at)
{
    int rc;
    if ((rc = tdx_verify_quote_signature(q)) || (rc = tdx_verify_qe_binding(q)) ||
        (rc = tdx_verify_qe_report_signature(q)) ||
        (rc = tdx_pck_chain_verify(q->pck_chain, q->pck_chain_len, root, root_len, at)))
        return rc;
    return TDX_OK;
}

/* ---- event log ---- */

void tdx_runtime_event_digest(uint32_t event_type, const char *name, size_t name_len,
                              const uint8_t *payload, size_t payload_len, uint8_t out[48])
{
    uint8_t le[4] = {(uint8_t)event_type, (uint8_t)(event_type >> 8), (uint8_t)(event_type >> 16),
                     (uint8_t)(event_type >> 24)};
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int olen = 0;
    if (!c || EVP_DigestInit_ex(c, EVP_sha384(), NULL) != 1 || EVP_DigestUpdate(c, le, 4) != 1 ||
        EVP_DigestUpdate(c, ":", 1) != 1 || EVP_DigestUpdate(c, name, name_len) != 1 ||
        EVP_DigestUpdate(c, ":", 1) != 1 || EVP_DigestUpdate(c, payload, payload_len) != 1 ||
        EVP_DigestFinal_ex(c, out, &olen) != 1)
        memset(out, 0, 48); /* allocation failure: a zero digest can only fail the replay */
    EVP_MD_CTX_free(c);
}

/* RFC 8785 string: minimal escapes, short forms for \b \f \n \r \t, others \u00xx. */
static int jcs_str(buf_t *b, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    if (buf_append(b, "\"", 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (ch) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            if (ch >= 0x20) {
                e[0] = (char)ch;
                en = 1;
            } else {
                memcpy(e, "\\u00", 4);
                e[4] = hexd[ch >> 4];
                e[5] = hexd[ch & 15];
                en = 6;
            }
        }
        if (buf_append(b, e, en))
            return -1;
    }
    return buf_append(b, "\"", 1);
}

int tdx_runtime_event_digest_v2(uint32_t event_type, const char *name, size_t name_len,
                                const uint8_t *payload, size_t payload_len, uint8_t out[48])
{
    buf_t b = BUF_INIT;
    char *hex = malloc(2 * payload_len + 1);
    int rc = -1;
    if (!hex)
        goto out;
    hex_encode(hex, payload, payload_len);
    if (buf_puts(&b, "{\"name\":") || jcs_str(&b, name, name_len) || buf_puts(&b, ",\"payload\":\"") ||
        buf_append(&b, hex, 2 * payload_len) || buf_printf(&b, "\",\"type\":%u}", event_type))
        goto out;
    sha384(b.data, b.len, out);
    rc = 0;
out:
    free(hex);
    buf_free(&b);
    return rc;
}

static int ev_fail(char *err, size_t errlen, size_t idx, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "event %zu: %s", idx, why);
    return TDX_ERR_EVENTLOG;
}

/* An unsigned integer given as a JSON number or a decimal string. */
static int ev_uint(struct json_object *o, const char *key, uint64_t max, uint64_t *v)
{
    struct json_object *f;
    if (!json_object_object_get_ex(o, key, &f))
        return -1;
    if (json_object_is_type(f, json_type_int)) {
        int64_t x = json_object_get_int64(f);
        if (x < 0 || (uint64_t)x > max)
            return -1;
        *v = (uint64_t)x;
        return 0;
    }
    if (json_object_is_type(f, json_type_string)) {
        const char *s = json_object_get_string(f);
        char *end;
        if (!s || *s < '0' || *s > '9')
            return -1;
        unsigned long long x = strtoull(s, &end, 10);
        if (*end || x > max)
            return -1;
        *v = x;
        return 0;
    }
    return -1;
}

static const char *ev_str(struct json_object *o, const char *key, size_t *len)
{
    struct json_object *f;
    if (!json_object_object_get_ex(o, key, &f) || !json_object_is_type(f, json_type_string)) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)json_object_get_string_len(f);
    return json_object_get_string(f);
}

static int ev_digest(struct json_object *e, size_t idx, uint32_t type, uint8_t d[48], char *err,
                     size_t errlen)
{
    size_t dlen, nlen, plen;
    const char *dhex = ev_str(e, "digest", &dlen);
    int have = dhex && dlen > 0;
    if (have && (dlen != 96 || hex_decode(d, 48, dhex, dlen) != 48))
        return ev_fail(err, errlen, idx, "digest is not 48 bytes of hex");
    if (type != TDX_DSTACK_EVENT_TYPE) {
        if (!have)
            return ev_fail(err, errlen, idx, "boot event without digest");
        return TDX_OK;
    }
    const char *name = ev_str(e, "event", &nlen);
    const char *phex = ev_str(e, "event_payload", &plen);
    if (!name || !phex || plen % 2)
        return ev_fail(err, errlen, idx, "runtime event without name or payload");
    uint8_t *payload = malloc(plen / 2 + 1);
    if (!payload)
        return ev_fail(err, errlen, idx, "out of memory");
    uint8_t calc[48];
    uint64_t ver = 1;
    int rc = TDX_OK;
    struct json_object *vf;
    if (json_object_object_get_ex(e, "version", &vf) && ev_uint(e, "version", 255, &ver))
        rc = ev_fail(err, errlen, idx, "bad version");
    else if (hex_decode(payload, plen / 2 + 1, phex, plen) != (long)(plen / 2))
        rc = ev_fail(err, errlen, idx, "payload is not hex");
    else if (ver == 1)
        tdx_runtime_event_digest(type, name, nlen, payload, plen / 2, calc);
    else if (ver == 2) {
        if (tdx_runtime_event_digest_v2(type, name, nlen, payload, plen / 2, calc))
            rc = ev_fail(err, errlen, idx, "out of memory");
    } else
        rc = ev_fail(err, errlen, idx, "unknown event version");
    free(payload);
    if (rc)
        return rc;
    if (have && memcmp(calc, d, 48) != 0)
        return ev_fail(err, errlen, idx, "digest does not match the event");
    memcpy(d, calc, 48);
    return TDX_OK;
}

int tdx_rtmr_replay_obj(struct json_object *arr, uint8_t rtmr[4][48], char *err, size_t errlen)
{
    memset(rtmr, 0, 4 * 48);
    if (!arr || !json_object_is_type(arr, json_type_array))
        return ev_fail(err, errlen, 0, "event log is not a JSON array");
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(arr, i);
        uint64_t imr, type;
        uint8_t d[48], buf[96];
        if (!e || !json_object_is_type(e, json_type_object))
            return ev_fail(err, errlen, i, "not an object");
        if (ev_uint(e, "imr", 3, &imr))
            return ev_fail(err, errlen, i, "imr missing or not 0..3");
        if (ev_uint(e, "event_type", UINT32_MAX, &type))
            return ev_fail(err, errlen, i, "event_type missing or not a u32");
        int rc = ev_digest(e, i, (uint32_t)type, d, err, errlen);
        if (rc)
            return rc;
        memcpy(buf, rtmr[imr], 48);
        memcpy(buf + 48, d, 48);
        sha384(buf, sizeof buf, rtmr[imr]);
    }
    return TDX_OK;
}

int tdx_rtmr_replay(const char *json, size_t len, uint8_t rtmr[4][48], char *err, size_t errlen)
{
    memset(rtmr, 0, 4 * 48);
    if (!json || len > INT32_MAX)
        return ev_fail(err, errlen, 0, "no event log");
    struct json_object *arr = json_parse_strict(json, len);
    int rc;
    if (!arr)
        rc = ev_fail(err, errlen, 0, "event log is not valid JSON");
    else
        rc = tdx_rtmr_replay_obj(arr, rtmr, err, errlen);
    json_object_put(arr);
    return rc;
}

void tdx_mr_aggregated(const tdx_td_body_t *b, uint8_t out[32])
{
    uint8_t buf[48 * 8];
    size_t n = 0;
    const uint8_t *parts[8] = {b->mrtd, b->rtmr[0], b->rtmr[1], b->rtmr[2], b->rtmr[3],
                               b->mrconfigid, b->mrowner, b->mrownerconfig};
    uint8_t any = 0;
    for (int i = 5; i < 8; i++)
        for (int j = 0; j < 48; j++)
            any |= parts[i][j];
    int count = any ? 8 : 5;
    for (int i = 0; i < count; i++, n += 48)
        memcpy(buf + n, parts[i], 48);
    sha256(buf, n, out);
}
