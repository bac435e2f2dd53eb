/* NVIDIA GPU attestation report = SPDM 1.1 GET_MEASUREMENTS request ‖ MEASUREMENTS response
 * (shared/docs/tee-formats.md §4.2): a pure parser, NVIDIA's opaque-data TLVs, and the check of the
 * responder's ECDSA P-384 / SHA-384 signature over the request and the unsigned response.
 *
 * Ownership: nv_spdm_parse allocates nothing; every pointer in nv_spdm_report_t points into
 * the caller's buffer, which must outlive the struct. Every function is reentrant. */
#ifndef VP_NVIDIA_SPDM_H
#define VP_NVIDIA_SPDM_H
#include <stddef.h>
#include <stdint.h>

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

enum nv_spdm_err {
    NV_SPDM_OK = 0,
    NV_SPDM_ERR_TRUNCATED = -1,  /* a length runs past the end of the input */
    NV_SPDM_ERR_REQUEST = -2,    /* not an SPDM 1.1 GET_MEASUREMENTS request */
    NV_SPDM_ERR_RESPONSE = -3,   /* not an SPDM 1.1 MEASUREMENTS response */
    NV_SPDM_ERR_BLOCKS = -4,     /* measurement record inconsistent (block sizes, count) */
    NV_SPDM_ERR_OPAQUE = -5,     /* opaque TLVs overrun the opaque data */
    NV_SPDM_ERR_TRAILING = -6,   /* bytes after the signature */
};

const char *nv_spdm_strerror(int err);

#define NV_SPDM_VERSION_11 0x11u
#define NV_SPDM_GET_MEASUREMENTS 0xE0u
#define NV_SPDM_MEASUREMENTS 0x60u
#define NV_SPDM_NONCE_LEN 32
#define NV_SPDM_SIG_LEN 96      /* ECDSA P-384 r ‖ s, big-endian */
#define NV_SPDM_REQ_LEN 37      /* version, code, param1, param2, nonce[32], slot id */
#define NV_SPDM_MAX_BLOCKS 255
#define NV_SPDM_MAX_OPAQUE 128

/* NVIDIA opaque-data field types (nvtrust verifier/attestation/spdm_msrt_resp_msg.py). */
enum nv_opaque_type {
    NV_OPAQUE_CERT_ISSUER_NAME = 1,
    NV_OPAQUE_CERT_AUTHORITY_KEY_ID = 2,
    NV_OPAQUE_DRIVER_VERSION = 3,
    NV_OPAQUE_GPU_INFO = 4,
    NV_OPAQUE_SKU = 5,
    NV_OPAQUE_VBIOS_VERSION = 6,
    NV_OPAQUE_MANUFACTURER_ID = 7,
    NV_OPAQUE_TAMPER_DETECTION = 8,
    NV_OPAQUE_SMC = 9,
    NV_OPAQUE_VPR = 10,
    NV_OPAQUE_NVDEC0_STATUS = 11,
    NV_OPAQUE_MSRSCNT = 12,
    NV_OPAQUE_CPRINFO = 13,
    NV_OPAQUE_BOARD_ID = 14,
    NV_OPAQUE_CHIP_SKU = 15,
    NV_OPAQUE_CHIP_SKU_MOD = 16,
    NV_OPAQUE_PROJECT = 17,
    NV_OPAQUE_PROJECT_SKU = 18,
    NV_OPAQUE_PROJECT_SKU_MOD = 19,
    NV_OPAQUE_FWID = 20,
    NV_OPAQUE_PROTECTED_PCIE_STATUS = 21,
    NV_OPAQUE_SWITCH_PDI = 22,
    NV_OPAQUE_FLOORSWEPT_PORTS = 23,
    NV_OPAQUE_POSITION_ID = 24,
    NV_OPAQUE_LOCK_SWITCH_STATUS = 25,
    NV_OPAQUE_GPU_LINK_CONN = 32,
    NV_OPAQUE_SYS_ENABLE_STATUS = 33,
    NV_OPAQUE_OPAQUE_DATA_VERSION = 34,
    NV_OPAQUE_CHIP_INFO = 35,
};

/* "driver_version", "vbios_version", ...; "unknown" for other types. */
const char *nv_opaque_type_name(unsigned type);

typedef struct nv_spdm_block {
    uint8_t index;
    uint8_t spec;            /* measurement specification; 1 = DMTF */
    uint16_t size;           /* bytes after the 4-byte block header */
    uint8_t dmtf_type;       /* DMTF value type; valid when spec == 1 and size >= 3 */
    uint16_t value_len;
    const uint8_t *value;    /* spec == 1: the DMTF value; otherwise the whole measurement */
} nv_spdm_block_t;

typedef struct nv_spdm_field {
    uint16_t type;
    uint16_t len;
    const uint8_t *value;
} nv_spdm_field_t;

typedef struct nv_spdm_report {
    const uint8_t *data;     /* the caller's buffer */
    size_t len;
    /* request */
    uint8_t req_version, req_param1, req_param2, slot_id;
    const uint8_t *req_nonce;        /* 32 bytes at offset 4: the caller's (NVML) nonce */
    /* response */
    uint8_t resp_version, resp_param1, resp_param2;
    uint8_t n_blocks;
    uint32_t record_len;             /* u24 */
    nv_spdm_block_t blocks[NV_SPDM_MAX_BLOCKS];
    const uint8_t *resp_nonce;       /* 32 bytes chosen by the GPU */
    uint16_t opaque_len;
    const uint8_t *opaque;
    size_t n_fields;
    nv_spdm_field_t fields[NV_SPDM_MAX_OPAQUE];
    /* signature */
    const uint8_t *signed_data;      /* == data: request ‖ response without the signature */
    size_t signed_len;
    const uint8_t *signature;        /* 96 bytes r ‖ s */
} nv_spdm_report_t;

/* Parses a whole report (exactly: trailing bytes are an error). 0 or a negative NV_SPDM_ERR_*.
 * The struct is large (~6 KB); callers may heap-allocate it. */
int nv_spdm_parse(const uint8_t *p, size_t n, nv_spdm_report_t *out);

/* First opaque field of that type, or NULL. */
const nv_spdm_field_t *nv_spdm_field(const nv_spdm_report_t *r, unsigned type);
/* "550.90.07" (NUL-terminated text field). Returns 0, or -1 when absent / does not fit. */
int nv_spdm_driver_version(const nv_spdm_report_t *r, char *out, size_t cap);
/* nvtrust's rendering of the 8-byte VBIOS field, e.g. "96.00.9F.00.01". 0 or -1. */
int nv_spdm_vbios_version(const nv_spdm_report_t *r, char *out, size_t cap);

/* ECDSA P-384 / SHA-384 of signed_data against the raw r‖s signature with key (the GPU leaf
 * certificate's public key). 1 = valid, 0 = invalid, -1 = crypto error (bad key type...). */
int nv_spdm_verify_signature(const nv_spdm_report_t *r, struct evp_pkey_st *key);

/* Raw 96-byte r‖s → DER ECDSA-Sig-Value. Returns the DER length, or -1 (cap too small). */
int nv_ecdsa_raw_to_der(const uint8_t *rs, size_t rs_len, uint8_t *der, size_t cap);
/* ECDSA verify of a raw r‖s signature (P-256: 64 bytes, P-384: 96) over msg with digest md
 * ("SHA384"...). 1 / 0 / -1 like above. Shared with the NRAS JWT check. */
int nv_ecdsa_verify_raw(struct evp_pkey_st *key, const char *md, const void *msg, size_t n,
                        const uint8_t *rs, size_t rs_len);

#endif
