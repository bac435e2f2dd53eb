/* SIMULATED TDX attestation: a quote factory with the exact layout of a real dstack v4 quote
 * (shared/docs/tee-formats.md §1), so that the verifier's real code paths run end to end against the
 * repository's test root. Everything except report_data and the quote signature is built once
 * in attest_sim_new; a quote then costs one memcpy and one P-256 signature. */
#include "attest/sim.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "tdx/quote.h"

#define SIG_FIXED_LEN (64 + 64 + 2 + 4 + TDX_QE_REPORT_LEN + 64 + 2 + 32 + 2 + 4)
#define QUOTE_SIG_OFF (TDX_HEADER_LEN + TDX_BODY10_LEN + 4) /* 636 */
#define REPORT_DATA_OFF (TDX_HEADER_LEN + 520)               /* 568 */

struct attest_sim {
    EVP_PKEY *att_key;      /* the simulated QE's attestation key (P-256) */
    uint8_t *quote;         /* template: report_data and signature zero */
    size_t quote_len;
    buf_t info;             /* Info object (SDK-parsed shape) */
    buf_t event_log;        /* JSON array text */
    buf_t event_log_lit;    /* the same as a JSON string literal */
    buf_t vm_config;        /* JSON text */
    buf_t vm_config_lit;    /* the same as a JSON string literal */
    buf_t os_metadata;      /* the simulated OS image's metadata.json */
    buf_t os_sums;          /* its sha256sum.txt; os_image_hash = sha256(this) */
};

/* ---- small helpers ---- */

/* Made-up but stable measurement bytes: sha384("vllm-proxy simulated " label), cut to n. */
static void fake(const char *label, uint8_t *out, size_t n)
{
    uint8_t d[48];
    buf_t b = BUF_INIT;
    if (buf_printf(&b, "vllm-proxy simulated %s", label) == 0)
        sha384(b.data, b.len, d);
    else
        memset(d, 0x5a, sizeof d);
    buf_free(&b);
    memcpy(out, d, n > 48 ? 48 : n);
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int buf_hex(buf_t *b, const uint8_t *p, size_t n)
{
    if (buf_reserve(b, 2 * n + 1))
        return -1;
    hex_encode(b->data + b->len, p, n);
    b->len += 2 * n;
    return 0;
}

/* ECDSA P-256 / SHA-256 signature as raw r||s. */
static int sign_raw(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t rs[64])
{
    int rc = -1;
    unsigned char der[80];
    size_t derlen = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ECDSA_SIG *sig = NULL;
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, der, &derlen, msg, n) != 1)
        goto out;
    const unsigned char *p = der;
    if (!(sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen)))
        goto out;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, rs, 32) != 32 || BN_bn2binpad(s, rs + 32, 32) != 32)
        goto out;
    rc = 0;
out:
    ERR_clear_error();
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static EVP_PKEY *p256_keygen(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static int p256_pub_xy(EVP_PKEY *k, uint8_t xy[64])
{
    uint8_t pt[HEX_SIZE(32)];
    size_t n = 0;
    if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) != 1 ||
        n != 65 || pt[0] != 0x04)
        return -1;
    memcpy(xy, pt + 1, 64);
    return 0;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

/* A certificate for key named cn, issued by issuer/issuer_key (both NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int ca,
                       long serial, long days)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    if (!x || !name || X509_set_version(x, 2) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -86400) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L) ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"vllm-proxy", -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) != 1 ||
        X509_set_pubkey(x, key) != 1 ||
        add_ext(x, issuer, NID_basic_constraints, ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE") ||
        add_ext(x, issuer, NID_key_usage, ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") ||
        add_ext(x, issuer, NID_subject_key_identifier, "hash") ||
        (issuer && add_ext(x, issuer, NID_authority_key_identifier, "keyid:always")) ||
        X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) <= 0) {
        X509_free(x);
        x = NULL;
    }
    X509_NAME_free(name);
    return x;
}

static int cert_pem(X509 *x, buf_t *out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p;
    int ok = bio && PEM_write_bio_X509(bio, x) == 1;
    long n = ok ? BIO_get_mem_data(bio, &p) : 0;
    ok = ok && n > 0 && buf_append(out, p, (size_t)n) == 0;
    BIO_free(bio);
    return ok ? 0 : -1;
}

/* ---- the PCK-like chain and the QE ---- */

typedef struct pki {
    X509 *root, *ca, *leaf, *app;
    EVP_PKEY *root_key, *ca_key, *leaf_key, *app_key;
} pki_t;

static void pki_free(pki_t *p)
{
    X509_free(p->root);
    X509_free(p->ca);
    X509_free(p->leaf);
    X509_free(p->app);
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->leaf_key);
    EVP_PKEY_free(p->app_key);
}

static int pki_make(pki_t *p, buf_t *chain, buf_t *app_pem)
{
    BIO *b1 = BIO_new_mem_buf(attest_sim_root_cert_pem, -1);
    BIO *b2 = BIO_new_mem_buf(attest_sim_root_key_pem, -1);
    if (b1)
        p->root = PEM_read_bio_X509(b1, NULL, NULL, NULL);
    if (b2)
        p->root_key = PEM_read_bio_PrivateKey(b2, NULL, NULL, NULL);
    BIO_free(b1);
    BIO_free(b2);
    if (!p->root || !p->root_key)
        return -1;
    uint8_t serial[4];
    fake("serial", serial, sizeof serial);
    long sn = (long)(serial[0] | serial[1] << 8 | (serial[2] & 0x7f) << 16);
    if (!(p->ca_key = p256_keygen()) || !(p->leaf_key = p256_keygen()) || !(p->app_key = p256_keygen()))
        return -1;
    p->ca = make_cert(p->ca_key, "SIMULATED PCK Platform CA - NOT FOR PRODUCTION", p->root, p->root_key, 1, sn + 1, 7300);
    p->leaf = make_cert(p->leaf_key, "SIMULATED PCK Certificate", p->ca, p->ca_key, 0, sn + 2, 3650);
    p->app = make_cert(p->app_key, "SIMULATED dstack app certificate", p->ca, p->ca_key, 0, sn + 3, 3650);
    if (!p->ca || !p->leaf || !p->app)
        return -1;
    if (cert_pem(p->leaf, chain) || cert_pem(p->ca, chain) || cert_pem(p->root, chain) ||
        cert_pem(p->app, app_pem))
        return -1;
    return 0;
}

/* QE report (SGX REPORT body) whose REPORTDATA binds the attestation key and auth data. */
static void make_qe_report(uint8_t r[TDX_QE_REPORT_LEN], const uint8_t attkey[64], const uint8_t auth[32])
{
    memset(r, 0, TDX_QE_REPORT_LEN);
    fake("qe cpusvn", r, 16);
    r[48] = 0x11; /* ATTRIBUTES: INIT | MODE64BIT, as the real TD QE */
    fake("qe mrenclave", r + TDX_QE_REPORT_MRENCLAVE, 32);
    fake("qe mrsigner", r + TDX_QE_REPORT_MRSIGNER, 32);
    put_u16(r + TDX_QE_REPORT_ISVPRODID, 2);
    put_u16(r + TDX_QE_REPORT_ISVSVN, 7);
    uint8_t in[96];
    memcpy(in, attkey, 64);
    memcpy(in + 64, auth, 32);
    sha256(in, sizeof in, r + TDX_QE_REPORT_DATA);
}

/* ---- measurements and the event log ---- */

typedef struct measure {
    uint8_t app_id[20], instance_id[20], compose_hash[32], os_image_hash[32], mr_kms[32];
    uint8_t mrtd[48], rtmr[4][48], mrconfigid[48];
    char key_provider[128];
    const char *app_compose;
} measure_t;

static const char sim_app_compose[] =
    "{\"manifest_version\":2,\"name\":\"vllm-proxy-simulated\",\"runner\":\"docker-compose\","
    "\"docker_compose_file\":\"services:\\n  vllm-proxy:\\n    image: vllm-proxy:simulated\\n"
    "    environment:\\n      - ATTESTATION=simulated\\n\",\"kms_enabled\":true,"
    "\"gateway_enabled\":false,\"public_logs\":true,\"public_sysinfo\":true,"
    "\"public_tcbinfo\":true,\"local_key_provider_enabled\":false,\"allowed_envs\":[],"
    "\"no_instance_id\":false,\"secure_time\":false,"
    "\"simulated\":\"SIMULATED attestation - NOT FOR PRODUCTION\"}";

static int extend(measure_t *m, buf_t *log, unsigned imr, uint32_t type, const uint8_t digest[48],
                  const char *name, const uint8_t *payload, size_t plen)
{
    uint8_t in[96];
    memcpy(in, m->rtmr[imr], 48);
    memcpy(in + 48, digest, 48);
    sha384(in, sizeof in, m->rtmr[imr]);
    if (log->len > 1 && buf_puts(log, ","))
        return -1;
    if (buf_printf(log, "{\"imr\":%u,\"event_type\":%u,\"digest\":\"", imr, type) ||
        buf_hex(log, digest, 48) || buf_puts(log, "\",\"event\":") ||
        buf_json_str(log, name, strlen(name)) || buf_puts(log, ",\"event_payload\":\"") ||
        buf_hex(log, payload, plen) || buf_puts(log, "\"}"))
        return -1;
    return 0;
}

static int boot_event(measure_t *m, buf_t *log, unsigned imr, uint32_t type, const char *payload)
{
    uint8_t d[48];
    sha384(payload, strlen(payload), d); /* a made-up digest: firmware would hash the blob */
    return extend(m, log, imr, type, d, "", (const uint8_t *)payload, strlen(payload));
}

static int runtime_event(measure_t *m, buf_t *log, const char *name, const uint8_t *payload, size_t n)
{
    uint8_t d[48];
    tdx_runtime_event_digest(TDX_DSTACK_EVENT_TYPE, name, strlen(name), payload, n, d);
    return extend(m, log, 3, TDX_DSTACK_EVENT_TYPE, d, name, payload, n);
}

/* A dstack OS image as a verifier sees it (dstack's metadata.json and sha256sum.txt; the image
 * hash is sha256(sha256sum.txt)): a production image, or a dev one ("is_dev": true). */
static int build_os_image(attest_sim_t *s, int dev, uint8_t hash[32])
{
    char mh[HEX_SIZE(32)];
    if (buf_printf(&s->os_metadata,
                   "{\"bios\":\"ovmf.fd\",\"kernel\":\"bzImage\",\"cmdline\":\"SIMULATED\","
                   "\"initrd\":\"initramfs.cpio.gz\",\"version\":\"0.0.0-simulated\","
                   "\"is_dev\":%s}\n",
                   dev ? "true" : "false"))
        return -1;
    sha256_hex(s->os_metadata.data, s->os_metadata.len, mh);
    if (buf_printf(&s->os_sums, "%s  metadata.json\n", mh))
        return -1;
    sha256(s->os_sums.data, s->os_sums.len, hash);
    return 0;
}

static int build_measurements(measure_t *m, buf_t *log, const uint8_t os_image_hash[32])
{
    memset(m, 0, sizeof *m);
    m->app_compose = sim_app_compose;
    fake("app-id", m->app_id, 20);
    fake("instance-id", m->instance_id, 20);
    memcpy(m->os_image_hash, os_image_hash, 32);
    fake("mr-kms", m->mr_kms, 32);
    fake("mrtd", m->mrtd, 48);
    sha256(sim_app_compose, strlen(sim_app_compose), m->compose_hash);
    m->mrconfigid[0] = 0x01;
    memcpy(m->mrconfigid + 1, m->compose_hash, 32);
    uint8_t kms_id[32];
    char kms_hex[HEX_SIZE(32)];
    fake("kms root key", kms_id, 32);
    hex_encode(kms_hex, kms_id, 32);
    snprintf(m->key_provider, sizeof m->key_provider, "{\"name\":\"kms\",\"id\":\"%s\"}", kms_hex);
    const uint8_t *kp = (const uint8_t *)m->key_provider;
    /* dstack main's GPU boot gate: a gpu-attestation event whose JSON names the sha256 of the
     * nvattest output it checked at boot (here: of a made-up text). */
    uint8_t ev_sha[32];
    char ev_hex[HEX_SIZE(32)], gpu_claims[256];
    fake("SIMULATED boot-time nvattest output", ev_sha, 32);
    hex_encode(ev_hex, ev_sha, 32);
    int gl = snprintf(gpu_claims, sizeof gpu_claims,
                      "{\"evidence_sha256\":\"%s\",\"gpu_count\":1,\"result\":\"SIMULATED\"}", ev_hex);

    if (buf_puts(log, "[") ||
        boot_event(m, log, 0, 0x8000000Bu, "SIMULATED EV_EFI_HANDOFF_TABLES2") ||
        boot_event(m, log, 0, 0x8000000Au, "SIMULATED EV_EFI_PLATFORM_FIRMWARE_BLOB2") ||
        boot_event(m, log, 0, 0x80000001u, "SIMULATED SecureBoot") ||
        boot_event(m, log, 0, 4u, "SIMULATED separator") ||
        boot_event(m, log, 0, 10u, "ACPI DATA") ||
        boot_event(m, log, 1, 0x80000003u, "SIMULATED EFI application") ||
        boot_event(m, log, 1, 0x80000007u, "Calling EFI Application from Boot Option") ||
        boot_event(m, log, 1, 4u, "SIMULATED separator") ||
        boot_event(m, log, 2, 6u, "SIMULATED kernel command line") ||
        boot_event(m, log, 2, 6u, "SIMULATED Linux initrd") ||
        boot_event(m, log, 1, 0x80000007u, "Exit Boot Services Invocation") ||
        runtime_event(m, log, "system-preparing", NULL, 0) ||
        runtime_event(m, log, "app-id", m->app_id, 20) ||
        runtime_event(m, log, "compose-hash", m->compose_hash, 32) ||
        runtime_event(m, log, "gpu-attestation", (const uint8_t *)gpu_claims, (size_t)gl) ||
        runtime_event(m, log, "instance-id", m->instance_id, 20) ||
        runtime_event(m, log, "boot-mr-done", NULL, 0) ||
        runtime_event(m, log, "mr-kms", m->mr_kms, 32) ||
        runtime_event(m, log, "os-image-hash", m->os_image_hash, 32) ||
        runtime_event(m, log, "key-provider", kp, strlen(m->key_provider)) ||
        runtime_event(m, log, "system-ready", NULL, 0) || buf_puts(log, "]"))
        return -1;
    return 0;
}

/* ---- the quote template ---- */

static void build_header_body(uint8_t *q, const measure_t *m)
{
    memset(q, 0, TDX_HEADER_LEN + TDX_BODY10_LEN);
    put_u16(q + 0, 4);
    put_u16(q + 2, 2);
    put_u32(q + 4, TDX_TEE_TYPE_TDX);
    memcpy(q + 12, tdx_intel_qe_vendor_id, 16);
    fake("qe id", q + 28, 16); /* user data: QE id, then 4 zero bytes */
    uint8_t *b = q + TDX_HEADER_LEN;
    b[0] = 0x05; /* TEE_TCB_SVN: module SVN 5, major version 1 */
    b[1] = 0x01;
    fake("mrseam", b + 16, 48);
    b[120 + 3] = 0x10; /* TDATTRIBUTES: SEPT_VE_DISABLE only (bit 28), not DEBUG */
    static const uint8_t xfam[8] = {0xe7, 0x02, 0x06, 0, 0, 0, 0, 0};
    memcpy(b + 128, xfam, 8);
    memcpy(b + 136, m->mrtd, 48);
    memcpy(b + 184, m->mrconfigid, 48);
    for (int i = 0; i < 4; i++)
        memcpy(b + 328 + 48 * i, m->rtmr[i], 48);
}

static int build_quote(attest_sim_t *s, const measure_t *m, pki_t *p, const buf_t *chain)
{
    uint8_t attkey[64], auth[32], qe[TDX_QE_REPORT_LEN], qesig[64];
    for (int i = 0; i < 32; i++)
        auth[i] = (uint8_t)i;
    if (p256_pub_xy(s->att_key, attkey))
        return -1;
    make_qe_report(qe, attkey, auth);
    if (sign_raw(p->leaf_key, qe, sizeof qe, qesig))
        return -1;
    size_t sig_len = SIG_FIXED_LEN + chain->len;
    s->quote_len = QUOTE_SIG_OFF + sig_len;
    if (!(s->quote = calloc(1, s->quote_len)))
        return -1;
    uint8_t *q = s->quote;
    build_header_body(q, m);
    put_u32(q + TDX_HEADER_LEN + TDX_BODY10_LEN, (uint32_t)sig_len);
    uint8_t *w = q + QUOTE_SIG_OFF + 64; /* signature stays zero in the template */
    memcpy(w, attkey, 64), w += 64;
    put_u16(w, 6), w += 2;
    put_u32(w, (uint32_t)(sig_len - 134)), w += 4;
    memcpy(w, qe, sizeof qe), w += sizeof qe;
    memcpy(w, qesig, 64), w += 64;
    put_u16(w, 32), w += 2;
    memcpy(w, auth, 32), w += 32;
    put_u16(w, 5), w += 2;
    put_u32(w, (uint32_t)chain->len), w += 4;
    memcpy(w, chain->data, chain->len);
    return 0;
}

/* ---- Info ---- */

static int kv_hex(buf_t *b, const char *key, const uint8_t *p, size_t n, int comma)
{
    return buf_printf(b, "%s\"%s\":\"", comma ? "," : "", key) || buf_hex(b, p, n) || buf_puts(b, "\"");
}

static int build_info(attest_sim_t *s, const measure_t *m, const buf_t *app_pem)
{
    buf_t *b = &s->info;
    const uint8_t *q = s->quote;
    uint8_t device_id[32], mr_agg[32];
    tdx_quote_t pq;
    if (tdx_quote_parse(&pq, s->quote, s->quote_len))
        return -1;
    sha256(q + 28, 20, device_id);
    tdx_mr_aggregated(&pq.body, mr_agg);
    if (buf_puts(&s->vm_config,
                 "{\"spec_version\":1,\"os_image_hash\":\"") ||
        buf_hex(&s->vm_config, m->os_image_hash, 32) ||
        buf_puts(&s->vm_config,
                 "\",\"cpu_count\":16,\"memory_size\":68719476736,\"qemu_single_pass_add_pages\":false,"
                 "\"pic\":false,\"pci_hole64_size\":17592186044416,\"num_gpus\":1,\"num_nvswitches\":0,"
                 "\"hugepages\":false,\"hotplug_off\":true,\"qemu_version\":\"9.2.1\",\"simulated\":true}") ||
        buf_json_str(&s->vm_config_lit, s->vm_config.data, s->vm_config.len) ||
        buf_json_str(&s->event_log_lit, s->event_log.data, s->event_log.len))
        return -1;
    if (buf_puts(b, "{") || kv_hex(b, "app_id", m->app_id, 20, 0) ||
        kv_hex(b, "instance_id", m->instance_id, 20, 1) || buf_puts(b, ",\"app_cert\":") ||
        buf_json_str(b, app_pem->data, app_pem->len) || buf_puts(b, ",\"tcb_info\":{") ||
        kv_hex(b, "mrtd", m->mrtd, 48, 0))
        return -1;
    for (int i = 0; i < 4; i++) {
        char key[8] = "rtmr0";
        key[4] = (char)('0' + i);
        if (kv_hex(b, key, m->rtmr[i], 48, 1))
            return -1;
    }
    if (buf_puts(b, ",\"app_compose\":") || buf_json_str(b, m->app_compose, strlen(m->app_compose)) ||
        buf_puts(b, ",\"event_log\":") || buf_append(b, s->event_log.data, s->event_log.len) ||
        kv_hex(b, "mr_aggregated", mr_agg, 32, 1) || kv_hex(b, "os_image_hash", m->os_image_hash, 32, 1) ||
        kv_hex(b, "compose_hash", m->compose_hash, 32, 1) || kv_hex(b, "device_id", device_id, 32, 1) ||
        buf_puts(b, "},\"app_name\":\"vllm-proxy-simulated\"") ||
        kv_hex(b, "device_id", device_id, 32, 1) || kv_hex(b, "mr_aggregated", mr_agg, 32, 1) ||
        kv_hex(b, "os_image_hash", m->os_image_hash, 32, 1) || buf_puts(b, ",\"key_provider_info\":") ||
        buf_json_str(b, m->key_provider, strlen(m->key_provider)) ||
        kv_hex(b, "compose_hash", m->compose_hash, 32, 1) || buf_puts(b, ",\"vm_config\":") ||
        buf_append(b, s->vm_config_lit.data, s->vm_config_lit.len) || buf_puts(b, "}"))
        return -1;
    return 0;
}

/* ---- public API ---- */

attest_sim_t *attest_sim_new(void)
{
    return attest_sim_new_os(0);
}

attest_sim_t *attest_sim_new_os(int dev_image)
{
    attest_sim_t *s = calloc(1, sizeof *s);
    pki_t p = {0};
    buf_t chain = BUF_INIT, app_pem = BUF_INIT;
    measure_t m;
    uint8_t os_hash[32];
    if (!s)
        return NULL;
    if (pki_make(&p, &chain, &app_pem) || !(s->att_key = p256_keygen()) ||
        build_os_image(s, dev_image, os_hash) || build_measurements(&m, &s->event_log, os_hash) ||
        build_quote(s, &m, &p, &chain) ||
        build_info(s, &m, &app_pem)) {
        LOG_ERROR("simulated attestation: setup failed");
        ERR_clear_error();
        attest_sim_free(s);
        s = NULL;
    } else {
        LOG_WARN("attestation is SIMULATED: quotes are signed by a test CA, NOT FOR PRODUCTION");
    }
    pki_free(&p);
    buf_free(&chain);
    buf_free(&app_pem);
    return s;
}

void attest_sim_free(attest_sim_t *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->att_key);
    free(s->quote);
    buf_free(&s->info);
    buf_free(&s->event_log);
    buf_free(&s->event_log_lit);
    buf_free(&s->vm_config);
    buf_free(&s->vm_config_lit);
    buf_free(&s->os_metadata);
    buf_free(&s->os_sums);
    free(s);
}

const char *attest_sim_os_image_file(const attest_sim_t *s, const char *name, size_t *len)
{
    const buf_t *b = !strcmp(name, "metadata.json")   ? &s->os_metadata
                     : !strcmp(name, "sha256sum.txt") ? &s->os_sums
                                                      : NULL;
    if (!b)
        return NULL;
    *len = b->len;
    return b->data;
}

int attest_sim_quote(attest_sim_t *s, const uint8_t report_data[64], buf_t *out)
{
    size_t start = out->len;
    if (buf_append(out, s->quote, s->quote_len))
        return -1;
    uint8_t *q = (uint8_t *)out->data + start;
    memcpy(q + REPORT_DATA_OFF, report_data, 64);
    if (sign_raw(s->att_key, q, TDX_HEADER_LEN + TDX_BODY10_LEN, q + QUOTE_SIG_OFF)) {
        out->len = start;
        if (out->len < out->cap)
            out->data[out->len] = 0;
        return -1;
    }
    return 0;
}

const char *attest_sim_info_json(const attest_sim_t *s, size_t *len)
{
    *len = s->info.len;
    return s->info.data;
}

const char *attest_sim_event_log_json(const attest_sim_t *s, size_t *len)
{
    *len = s->event_log.len;
    return s->event_log.data;
}

const char *attest_sim_vm_config(const attest_sim_t *s, size_t *len)
{
    *len = s->vm_config.len;
    return s->vm_config.data;
}

#define SIM_GPU_REPORT_MAX 512 /* the simulated report below is 284 bytes */

/* Raw simulated SPDM GET_MEASUREMENTS request || response (tee-formats §4.2 layout), with a
 * zero signature: it is labelled, not signed. */
static size_t gpu_raw_report(const uint8_t nonce[32], uint8_t *r, size_t cap)
{
    static const char marker[] = "SIMULATED NVIDIA GPU EVIDENCE - NOT FOR PRODUCTION";
    const size_t mlen = sizeof marker - 1, L = 4 + 3 + 48, O = 4 + mlen;
    size_t n = 45 + L + 32 + 2 + O + 96;
    if (cap < n)
        return 0;
    memset(r, 0, n);
    r[0] = 0x11, r[1] = 0xe0, r[2] = 0x01, r[3] = 0xff;
    memcpy(r + 4, nonce, 32);
    r[36] = 0;                                 /* slot */
    r[37] = 0x11, r[38] = 0x60;                /* MEASUREMENTS response */
    r[41] = 1;                                 /* one block */
    r[42] = (uint8_t)L;                        /* record length u24 */
    uint8_t *blk = r + 45;
    blk[0] = 1, blk[1] = 1;                    /* index 1, DMTF */
    put_u16(blk + 2, (uint16_t)(L - 4));
    blk[4] = 0x01;                             /* DMTF value type */
    put_u16(blk + 5, 48);
    fake("gpu measurement", blk + 7, 48);
    uint8_t *w = r + 45 + L;
    uint8_t rn[32 + 32];
    memcpy(rn, "vllm-proxy simulated responder ", 32);
    memcpy(rn + 32, nonce, 32);
    sha256(rn, sizeof rn, w);                  /* responder nonce */
    w += 32;
    put_u16(w, (uint16_t)O), w += 2;
    put_u16(w, 0x8000), put_u16(w + 2, (uint16_t)mlen);
    memcpy(w + 4, marker, mlen);
    return n; /* followed by 96 zero signature bytes */
}

int attest_gpu_payload_sim(const uint8_t nonce[32], buf_t *out)
{
    uint8_t raw[SIM_GPU_REPORT_MAX];
    char nhex[HEX_SIZE(32)];
    size_t rn = gpu_raw_report(nonce, raw, sizeof raw);
    size_t cl = strlen(attest_sim_gpu_cert_pem), rl = strlen(attest_sim_root_cert_pem);
    char *chain = malloc(cl + rl);
    char *b64 = malloc(b64_encoded_len(cl + rl) + 1);
    int rc = -1;
    if (!rn || !chain || !b64)
        goto out;
    memcpy(chain, attest_sim_gpu_cert_pem, cl);
    memcpy(chain + cl, attest_sim_root_cert_pem, rl);
    hex_encode(nhex, nonce, 32);
    /* Same layout as the NVML and canned payloads (src/attest/gpu.c): nvtrust's json.dumps
     * spacing, "certificate" before "evidence" in each item. */
    b64_encode(b64, (const uint8_t *)chain, cl + rl);
    if (buf_printf(out, "{\"nonce\": \"%s\", \"evidence_list\": [{\"certificate\": \"", nhex) ||
        buf_append(out, b64, b64_encoded_len(cl + rl)) || buf_puts(out, "\", \"evidence\": \"") ||
        buf_reserve(out, b64_encoded_len(rn) + 1))
        goto out;
    b64_encode(out->data + out->len, raw, rn);
    out->len += b64_encoded_len(rn);
    if (buf_puts(out, "\"}], \"arch\": \"HOPPER\"}"))
        goto out;
    rc = 0;
out:
    free(chain);
    free(b64);
    return rc;
}

int attest_sim_parts(attest_sim_t *s, const uint8_t report_data[64], attest_parts_t *p)
{
    p->mode = "simulated";
    if (attest_sim_quote(s, report_data, &p->quote) ||
        buf_append(&p->event_log, s->event_log.data, s->event_log.len) ||
        buf_append(&p->info, s->info.data, s->info.len) ||
        buf_append(&p->vm_config, s->vm_config.data, s->vm_config.len))
        return -1;
    return 0;
}

int attest_report_json(attest_sim_t *s, const attest_identity_t *id, const uint8_t nonce[32], buf_t *out)
{
    if (!attest_identity_ok(id))
        return -1;
    uint8_t rd[64];
    attest_parts_t p = {0};
    attest_report_data(id->id_bytes, id->id_len, nonce, rd);
    int rc = attest_sim_parts(s, rd, &p) || attest_gpu_payload_sim(nonce, &p.nvidia_payload) ||
                     attest_report_build(id, nonce, &p, NULL, out)
                 ? -1
                 : 0;
    attest_parts_free(&p);
    return rc;
}
