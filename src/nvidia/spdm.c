/* SPDM 1.1 GET_MEASUREMENTS request ‖ MEASUREMENTS response as NVML returns it. Every length
 * is checked against the buffer before it is used; the parser allocates nothing. */
#include "nvidia/spdm.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

const char *nv_spdm_strerror(int err)
{
    switch (err) {
    case NV_SPDM_OK: return "ok";
    case NV_SPDM_ERR_TRUNCATED: return "report truncated";
    case NV_SPDM_ERR_REQUEST: return "not an SPDM 1.1 GET_MEASUREMENTS request";
    case NV_SPDM_ERR_RESPONSE: return "not an SPDM 1.1 MEASUREMENTS response";
    case NV_SPDM_ERR_BLOCKS: return "measurement record inconsistent";
    case NV_SPDM_ERR_OPAQUE: return "opaque data fields overrun";
    case NV_SPDM_ERR_TRAILING: return "bytes after the signature";
    default: return "unknown SPDM error";
    }
}

const char *nv_opaque_type_name(unsigned type)
{
    static const char *const names[] = {
        [1] = "cert_issuer_name", [2] = "cert_authority_key_id", [3] = "driver_version",
        [4] = "gpu_info", [5] = "sku", [6] = "vbios_version", [7] = "manufacturer_id",
        [8] = "tamper_detection", [9] = "smc", [10] = "vpr", [11] = "nvdec0_status",
        [12] = "msrscnt", [13] = "cprinfo", [14] = "board_id", [15] = "chip_sku",
        [16] = "chip_sku_mod", [17] = "project", [18] = "project_sku",
        [19] = "project_sku_mod", [20] = "fwid", [21] = "protected_pcie_status",
        [22] = "switch_pdi", [23] = "floorswept_ports", [24] = "position_id",
        [25] = "lock_switch_status", [32] = "gpu_link_conn", [33] = "sys_enable_status",
        [34] = "opaque_data_version", [35] = "chip_info",
    };
    if (type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "unknown";
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd24(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16); }

static int parse_blocks(nv_spdm_report_t *r, const uint8_t *p, size_t n)
{
    size_t off = 0, count = 0;
    while (off < n) {
        if (n - off < 4 || count >= NV_SPDM_MAX_BLOCKS)
            return NV_SPDM_ERR_BLOCKS;
        nv_spdm_block_t *b = &r->blocks[count];
        b->index = p[off];
        b->spec = p[off + 1];
        b->size = rd16(p + off + 2);
        off += 4;
        if (b->size > n - off)
            return NV_SPDM_ERR_BLOCKS;
        const uint8_t *m = p + off;
        if (b->spec == 1) {
            /* DMTF measurement: value type u8, value size u16, value */
            if (b->size < 3 || rd16(m + 1) != b->size - 3u)
                return NV_SPDM_ERR_BLOCKS;
            b->dmtf_type = m[0];
            b->value_len = (uint16_t)(b->size - 3u);
            b->value = m + 3;
        } else {
            b->dmtf_type = 0;
            b->value_len = b->size;
            b->value = m;
        }
        off += b->size;
        count++;
    }
    if (count != r->n_blocks)
        return NV_SPDM_ERR_BLOCKS;
    return NV_SPDM_OK;
}

static int parse_opaque(nv_spdm_report_t *r)
{
    size_t off = 0, n = r->opaque_len;
    const uint8_t *p = r->opaque;
    r->n_fields = 0;
    while (off < n) {
        if (n - off < 4 || r->n_fields >= NV_SPDM_MAX_OPAQUE)
            return NV_SPDM_ERR_OPAQUE;
        nv_spdm_field_t *f = &r->fields[r->n_fields++];
        f->type = rd16(p + off);
        f->len = rd16(p + off + 2);
        off += 4;
        if (f->len > n - off)
            return NV_SPDM_ERR_OPAQUE;
        f->value = p + off;
        off += f->len;
    }
    return NV_SPDM_OK;
}

int nv_spdm_parse(const uint8_t *p, size_t n, nv_spdm_report_t *r)
{
    memset(r, 0, sizeof *r);
    r->data = p;
    r->len = n;
    if (!p || n < NV_SPDM_REQ_LEN)
        return NV_SPDM_ERR_TRUNCATED;
    r->req_version = p[0];
    r->req_param1 = p[2];
    r->req_param2 = p[3];
    r->req_nonce = p + 4;
    r->slot_id = p[36];
    if (p[0] != NV_SPDM_VERSION_11 || p[1] != NV_SPDM_GET_MEASUREMENTS)
        return NV_SPDM_ERR_REQUEST;

    size_t off = NV_SPDM_REQ_LEN;
    if (n - off < 8)  /* version, code, param1, param2, n_blocks, record length (3) */
        return NV_SPDM_ERR_TRUNCATED;
    r->resp_version = p[off];
    r->resp_param1 = p[off + 2];
    r->resp_param2 = p[off + 3];
    r->n_blocks = p[off + 4];
    r->record_len = rd24(p + off + 5);
    if (p[off] != NV_SPDM_VERSION_11 || p[off + 1] != NV_SPDM_MEASUREMENTS)
        return NV_SPDM_ERR_RESPONSE;
    off += 8;
    if (r->record_len > n - off)
        return NV_SPDM_ERR_TRUNCATED;
    const uint8_t *rec = p + off;
    off += r->record_len;

    if (n - off < NV_SPDM_NONCE_LEN + 2)
        return NV_SPDM_ERR_TRUNCATED;
    r->resp_nonce = p + off;
    off += NV_SPDM_NONCE_LEN;
    r->opaque_len = rd16(p + off);
    off += 2;
    if (r->opaque_len > n - off)
        return NV_SPDM_ERR_TRUNCATED;
    r->opaque = p + off;
    off += r->opaque_len;
    if (n - off < NV_SPDM_SIG_LEN)
        return NV_SPDM_ERR_TRUNCATED;
    r->signed_data = p;
    r->signed_len = off;
    r->signature = p + off;
    off += NV_SPDM_SIG_LEN;
    if (off != n)
        return NV_SPDM_ERR_TRAILING;

    int rc = parse_blocks(r, rec, r->record_len);
    if (rc != NV_SPDM_OK)
        return rc;
    return parse_opaque(r);
}

const nv_spdm_field_t *nv_spdm_field(const nv_spdm_report_t *r, unsigned type)
{
    for (size_t i = 0; i < r->n_fields; i++)
        if (r->fields[i].type == type)
            return &r->fields[i];
    return NULL;
}

int nv_spdm_driver_version(const nv_spdm_report_t *r, char *out, size_t cap)
{
    const nv_spdm_field_t *f = nv_spdm_field(r, NV_OPAQUE_DRIVER_VERSION);
    if (!f || cap == 0)
        return -1;
    size_t n = 0;
    while (n < f->len && f->value[n])
        n++;
    if (n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (f->value[i] < 0x20 || f->value[i] > 0x7e)
            return -1;
    memcpy(out, f->value, n);
    out[n] = 0;
    return 0;
}

/* nvtrust (utils.format_vbios_version): reverse the 8 bytes into hex, then take the low four
 * bytes followed by the byte above them: 00 9f 00 96 01 00 00 00 → "96.00.9F.00.01". */
int nv_spdm_vbios_version(const nv_spdm_report_t *r, char *out, size_t cap)
{
    const nv_spdm_field_t *f = nv_spdm_field(r, NV_OPAQUE_VBIOS_VERSION);
    if (!f || f->len != 8 || cap < 15)
        return -1;
    const uint8_t *v = f->value;
    snprintf(out, cap, "%02X.%02X.%02X.%02X.%02X", v[3], v[2], v[1], v[0], v[4]);
    return 0;
}

int nv_ecdsa_raw_to_der(const uint8_t *rs, size_t rs_len, uint8_t *der, size_t cap)
{
    if (rs_len == 0 || rs_len % 2 || rs_len > 132)
        return -1;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *br = BN_bin2bn(rs, (int)(rs_len / 2), NULL);
    BIGNUM *bs = BN_bin2bn(rs + rs_len / 2, (int)(rs_len / 2), NULL);
    int len = -1;
    if (!sig || !br || !bs) {
        BN_free(br);
        BN_free(bs);
        ECDSA_SIG_free(sig);
        return -1;
    }
    ECDSA_SIG_set0(sig, br, bs); /* sig owns r, s now */
    int need = i2d_ECDSA_SIG(sig, NULL);
    if (need > 0 && (size_t)need <= cap) {
        uint8_t *q = der;
        len = i2d_ECDSA_SIG(sig, &q);
    }
    ECDSA_SIG_free(sig);
    return len;
}

int nv_ecdsa_verify_raw(EVP_PKEY *key, const char *md, const void *msg, size_t n,
                        const uint8_t *rs, size_t rs_len)
{
    if (!key || !EVP_PKEY_is_a(key, "EC"))
        return -1;
    int bits = EVP_PKEY_get_bits(key);
    if (bits <= 0 || rs_len != 2 * (((size_t)bits + 7) / 8))
        return bits <= 0 ? -1 : 0;
    uint8_t der[160];
    int dlen = nv_ecdsa_raw_to_der(rs, rs_len, der, sizeof der);
    if (dlen < 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    int rc = -1;
    if (EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, key, NULL) == 1) {
        int v = EVP_DigestVerify(ctx, der, (size_t)dlen, msg, n);
        rc = v == 1 ? 1 : 0;
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}

int nv_spdm_verify_signature(const nv_spdm_report_t *r, EVP_PKEY *key)
{
    if (!r->signature || !key)
        return -1;
    if (EVP_PKEY_get_bits(key) != 384)
        return -1;
    return nv_ecdsa_verify_raw(key, "SHA384", r->signed_data, r->signed_len, r->signature,
                               NV_SPDM_SIG_LEN);
}
