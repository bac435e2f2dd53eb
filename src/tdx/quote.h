/* Intel TDX DCAP quotes (v4, v5 with TD report bodies 1.0/1.5): a pure parser, the four
 * signature links of shared/docs/tee-formats.md §1.4, and RTMR replay of a dstack event log (§2.6).
 *
 * Ownership: tdx_quote_parse allocates nothing; every pointer in tdx_quote_t points into the
 * caller's buffer, which must outlive the struct. The verification helpers allocate OpenSSL
 * objects internally and free them before returning. Every function is reentrant and may be
 * called from any thread. Errors are negative TDX_ERR_* values; 0 is success. */
#ifndef VP_TDX_QUOTE_H
#define VP_TDX_QUOTE_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct json_object;

enum tdx_err {
    TDX_OK = 0,
    TDX_ERR_TRUNCATED = -1,  /* a length runs past the end of the input */
    TDX_ERR_VERSION = -2,    /* quote version not 4 or 5 */
    TDX_ERR_KEY_TYPE = -3,   /* attestation key type not 2 (ECDSA P-256) */
    TDX_ERR_TEE_TYPE = -4,   /* not TDX (0x81) */
    TDX_ERR_BODY_TYPE = -5,  /* v5 body type not 2/3, or size does not match the type */
    TDX_ERR_CERT_TYPE = -6,  /* certification data not 6 → 5, or sizes inconsistent */
    TDX_ERR_SIGNATURE = -7,  /* an ECDSA signature does not verify */
    TDX_ERR_BINDING = -8,    /* QE report_data does not bind the attestation key */
    TDX_ERR_CHAIN = -9,      /* PCK chain missing, malformed or not rooted in the given CA */
    TDX_ERR_CRYPTO = -10,    /* OpenSSL failed (allocation, bad key encoding) */
    TDX_ERR_EVENTLOG = -11,  /* event log malformed, or a digest disagrees with its event */
};

const char *tdx_strerror(int err);

#define TDX_HEADER_LEN 48
#define TDX_BODY10_LEN 584
#define TDX_BODY15_LEN 648
#define TDX_QE_REPORT_LEN 384
#define TDX_PCK_CHAIN_MAX_CERTS 8 /* PCK leaf, PCK CA, root: more is not a PCK chain */
#define TDX_TEE_TYPE_TDX 0x81u
#define TDX_ATTR_DEBUG (1ull << 0)
#define TDX_ATTR_SEPT_VE_DISABLE (1ull << 28)
#define TDX_DSTACK_EVENT_TYPE 0x08000001u

extern const uint8_t tdx_intel_qe_vendor_id[16];

/* TD report body. Sizes: tee_tcb_svn 16, seam_attributes/td_attributes/xfam 8,
 * report_data 64, every other measurement 48. The last two exist only in 1.5 bodies. */
typedef struct tdx_td_body {
    const uint8_t *tee_tcb_svn;
    const uint8_t *mrseam;
    const uint8_t *mrsignerseam;
    const uint8_t *seam_attributes;
    const uint8_t *td_attributes;
    const uint8_t *xfam;
    const uint8_t *mrtd;
    const uint8_t *mrconfigid;
    const uint8_t *mrowner;
    const uint8_t *mrownerconfig;
    const uint8_t *rtmr[4];
    const uint8_t *report_data;
    const uint8_t *tee_tcb_svn2; /* NULL for a 1.0 body */
    const uint8_t *mrservicetd;  /* NULL for a 1.0 body */
} tdx_td_body_t;

typedef struct tdx_quote {
    const uint8_t *data;     /* the caller's buffer */
    size_t len;              /* its full length (may exceed quote_len: trailing bytes) */
    /* header */
    uint16_t version;
    uint16_t att_key_type;
    uint32_t tee_type;
    const uint8_t *qe_vendor_id; /* 16 */
    const uint8_t *user_data;    /* 20 */
    /* body: v4 has type 2 implied; v5 carries the descriptor */
    uint16_t body_type;          /* 2 = TD 1.0, 3 = TD 1.5 */
    uint32_t body_len;
    size_t body_off;
    tdx_td_body_t body;
    size_t signed_len;           /* [0, signed_len) is what the attestation key signs */
    /* signature data */
    uint32_t sig_data_len;
    size_t sig_data_off;
    size_t quote_len;            /* sig_data_off + sig_data_len; bytes after it are ignored */
    const uint8_t *signature;    /* 64, r||s */
    const uint8_t *attest_key;   /* 64, x||y */
    uint16_t cert_type;          /* 6 */
    uint32_t cert_len;
    const uint8_t *qe_report;    /* 384 */
    const uint8_t *qe_report_sig;/* 64, r||s */
    uint16_t qe_auth_len;
    const uint8_t *qe_auth_data;
    uint16_t pck_cert_type;      /* 5 */
    uint32_t pck_chain_len;
    const uint8_t *pck_chain;    /* PEM text, leaf first; may end with NUL bytes */
} tdx_quote_t;

/* QE report (SGX REPORT body) field offsets. */
#define TDX_QE_REPORT_MRENCLAVE 64
#define TDX_QE_REPORT_MRSIGNER 128
#define TDX_QE_REPORT_ISVPRODID 256
#define TDX_QE_REPORT_ISVSVN 258
#define TDX_QE_REPORT_DATA 320

int tdx_quote_parse(tdx_quote_t *q, const uint8_t *data, size_t len);
uint64_t tdx_td_attributes(const tdx_quote_t *q); /* TDATTRIBUTES as a little-endian u64 */

/* Link 1: attestation key over [0, signed_len), ECDSA P-256 / SHA-256. */
int tdx_verify_quote_signature(const tdx_quote_t *q);
/* Link 2: QE report_data[0:32] == sha256(attest_key || qe_auth_data), [32:64] zero. */
int tdx_verify_qe_binding(const tdx_quote_t *q);
/* Link 3: the first certificate of the PCK chain signs the QE report. */
int tdx_verify_qe_report_signature(const tdx_quote_t *q);
/* Link 4: the PEM chain (leaf first) verifies up to root, the only trust anchor. root is
 * PEM or DER (detected). at == 0 means now. Self-signed certificates inside the chain are
 * never trusted: only root is. */
int tdx_pck_chain_verify(const uint8_t *chain_pem, size_t chain_len,
                         const uint8_t *root, size_t root_len, time_t at);
/* All four links. */
int tdx_verify_quote(const tdx_quote_t *q, const uint8_t *root, size_t root_len, time_t at);

/* ECDSA P-256 / SHA-256 over msg with a raw public key (x||y) and raw signature (r||s). */
int tdx_p256_verify(const uint8_t pub_xy[64], const uint8_t *msg, size_t n,
                    const uint8_t sig_rs[64]);

/* dstack runtime event digest v1: SHA-384(le32(type) || ":" || name || ":" || payload). */
void tdx_runtime_event_digest(uint32_t event_type, const char *name, size_t name_len,
                              const uint8_t *payload, size_t payload_len, uint8_t out[48]);
/* v2: SHA-384 of the RFC 8785 JSON {"name":…,"payload":"<hex>","type":<type>}. */
int tdx_runtime_event_digest_v2(uint32_t event_type, const char *name, size_t name_len,
                                const uint8_t *payload, size_t payload_len, uint8_t out[48]);

/* Replays a dstack event log (JSON array text, or an already parsed array) into rtmr[0..3].
 * Runtime events (type 0x08000001) have their digest recomputed from name and payload; a
 * present digest that disagrees is an error, an empty one (stripped log) is accepted. Other
 * events must carry a 48-byte digest. imr and event_type may be numbers or numeric strings.
 * err (optional) receives a one-line reason. */
int tdx_rtmr_replay(const char *json, size_t len, uint8_t rtmr[4][48], char *err, size_t errlen);
int tdx_rtmr_replay_obj(struct json_object *array, uint8_t rtmr[4][48], char *err, size_t errlen);

/* dstack's mr_aggregated = sha256(MRTD||RTMR0..3 [||MRCONFIGID||MROWNER||MROWNERCONFIG if any
 * of those is non-zero]). */
void tdx_mr_aggregated(const tdx_td_body_t *b, uint8_t out[32]);

#endif
