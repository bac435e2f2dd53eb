/* The part of NVIDIA's NSCQ (NVSwitch Configuration and Query, libnvidia-nscq.so.2) ABI the
 * proxy uses to collect NVSwitch attestation evidence, written from the public API NVIDIA's
 * attestation SDK calls (nscq_attestation.h, API version 2): a session created with the
 * devices mounted, paths observed with a callback per device, and the request nonce given
 * with nscq_session_set_input before the attestation report is read.
 *
 * Paths: "/drv/nvswitch/{device}/uuid" (callback nscq_uuid_cb), "/{nvswitch}/id/arch"
 * (nscq_arch_cb), "/<label>/config/certificate" (nscq_cert_cb) and
 * "/<label>/config/attestation_report" (nscq_report_cb), <label> from nscq_uuid_to_label.
 * The certificate and report callbacks receive their (large) structs BY VALUE. */
#ifndef VP_NVIDIA_NSCQ_H
#define VP_NVIDIA_NSCQ_H
#include <stdint.h>

typedef int8_t nscq_rc_t; /* 0 success, 1..127 warnings, negative errors */
#define NSCQ_RC_SUCCESS 0
#define NSCQ_RC_ERROR_NOT_IMPLEMENTED (-1)
#define NSCQ_RC_ERROR_INVALID_UUID (-2)
#define NSCQ_RC_ERROR_RESOURCE_NOT_MOUNTABLE (-3)
#define NSCQ_RC_ERROR_OVERFLOW (-4)
#define NSCQ_RC_ERROR_UNEXPECTED_VALUE (-5)
#define NSCQ_RC_ERROR_UNSUPPORTED_DRV (-6)
#define NSCQ_RC_ERROR_DRV (-7)
#define NSCQ_RC_ERROR_TIMEOUT (-8)
#define NSCQ_RC_ERROR_EXT (-127)
#define NSCQ_RC_ERROR_UNSPECIFIED (-128)

typedef struct nscq_session_st *nscq_session_t;
typedef struct {
    nscq_rc_t rc;
    nscq_session_t session;
} nscq_session_result_t;

typedef struct {
    uint8_t bytes[16];
} nscq_uuid_t;

typedef struct {
    char data[64];
} nscq_label_t;

typedef int8_t nscq_arch_t;
#define NSCQ_ARCH_SV10 0
#define NSCQ_ARCH_LR10 1
#define NSCQ_ARCH_LS10 2

#define NSCQ_SESSION_CREATE_MOUNT_DEVICES 0x1u
#define NSCQ_ATTESTATION_REPORT_NONCE_SIZE 0x20
#define NSCQ_ATTESTATION_REPORT_SIZE 0x2000
#define NSCQ_CERTIFICATE_CERT_CHAIN_MAX_SIZE 0x1400

typedef struct {
    uint32_t report_size;
    uint8_t report[NSCQ_ATTESTATION_REPORT_SIZE];
} nscq_attestation_report_t;

typedef struct {
    uint8_t cert_chain[NSCQ_CERTIFICATE_CERT_CHAIN_MAX_SIZE];
    uint32_t cert_chain_size;
} nscq_attestation_certificate_t;

/* Every callback is passed as this type and cast back by the library. */
typedef void (*nscq_fn_t)(void);

typedef void (*nscq_uuid_cb)(const nscq_uuid_t *device, nscq_rc_t rc, const nscq_uuid_t *uuid,
                             void *user);
typedef void (*nscq_arch_cb)(const nscq_uuid_t *device, nscq_rc_t rc, nscq_arch_t arch, void *user);
typedef void (*nscq_cert_cb)(const nscq_uuid_t *device, nscq_rc_t rc,
                             const nscq_attestation_certificate_t cert, void *user);
typedef void (*nscq_report_cb)(const nscq_uuid_t *device, nscq_rc_t rc,
                               const nscq_attestation_report_t report, void *user);

typedef nscq_session_result_t (*nscq_session_create_fn)(uint32_t flags);
typedef void (*nscq_session_destroy_fn)(nscq_session_t);
typedef nscq_rc_t (*nscq_session_path_observe_fn)(nscq_session_t, const char *path, nscq_fn_t cb,
                                                  void *user, uint32_t flags);
typedef nscq_rc_t (*nscq_session_set_input_fn)(nscq_session_t, uint32_t flags, void *input,
                                               uint32_t input_size);
typedef nscq_rc_t (*nscq_uuid_to_label_fn)(const nscq_uuid_t *, nscq_label_t *, uint32_t flags);

#endif
