/* Our own declarations of the few NVML (libnvidia-ml.so.1) entry points, constants and
 * structs the GPU evidence collector uses. No NVIDIA header is installed or copied: every
 * layout below is the documented driver ABI (shared/docs/tee-formats.md §4.1, driver >= r535), and
 * the sizes are pinned with static assertions so a typo cannot silently shift a field. */
#ifndef VP_NVIDIA_NVML_H
#define VP_NVIDIA_NVML_H
#include <stddef.h>

typedef int nvmlReturn_t;              /* C enum in NVML: int-sized */
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef unsigned int nvmlDeviceArchitecture_t;

/* Return codes we name; anything else is printed with nvmlErrorString. */
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_FUNCTION_NOT_FOUND 13
#define NVML_ERROR_UNKNOWN 999

/* nvmlDeviceGetArchitecture */
#define NVML_DEVICE_ARCH_HOPPER 9
#define NVML_DEVICE_ARCH_BLACKWELL 10

/* Confidential-compute system state values */
#define NVML_CC_SYSTEM_CPU_CAPS_NONE 0
#define NVML_CC_SYSTEM_ENVIRONMENT_UNAVAILABLE 0
#define NVML_CC_SYSTEM_ENVIRONMENT_SIM 1
#define NVML_CC_SYSTEM_ENVIRONMENT_PROD 2
#define NVML_CC_SYSTEM_FEATURE_DISABLED 0
#define NVML_CC_SYSTEM_FEATURE_ENABLED 1
#define NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF 0
#define NVML_CC_SYSTEM_DEVTOOLS_MODE_ON 1
#define NVML_CC_SYSTEM_MULTIGPU_NONE 0
#define NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE 1
#define NVML_CC_SYSTEM_MULTIGPU_NVLE 2

/* nvmlSystemGetConfComputeState: 12 bytes */
typedef struct nvmlConfComputeSystemState_st {
    unsigned int environment;
    unsigned int ccFeature;
    unsigned int devToolsMode;
} nvmlConfComputeSystemState_t;

/* nvmlSystemGetConfComputeSettings: 20 bytes; the caller sets version before the call */
typedef struct nvmlSystemConfComputeSettings_st {
    unsigned int version;
    unsigned int environment;
    unsigned int ccFeature;
    unsigned int devToolsMode;
    unsigned int multiGpuMode;
} nvmlSystemConfComputeSettings_v1_t;
#define nvmlSystemConfComputeSettings_v1 \
    ((unsigned int)(sizeof(nvmlSystemConfComputeSettings_v1_t) | (1u << 24)))

#define NVML_GPU_CERT_CHAIN_SIZE 0x1000
#define NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE 0x1400
#define NVML_CC_GPU_CEC_NONCE_SIZE 0x20
#define NVML_CC_GPU_ATTESTATION_REPORT_SIZE 0x2000
#define NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE 0x1000

/* nvmlDeviceGetConfComputeGpuCertificate: 9224 bytes */
typedef struct nvmlConfComputeGpuCertificate_st {
    unsigned int certChainSize;
    unsigned int attestationCertChainSize;
    unsigned char certChain[NVML_GPU_CERT_CHAIN_SIZE];
    unsigned char attestationCertChain[NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE];
} nvmlConfComputeGpuCertificate_t;

/* nvmlDeviceGetConfComputeGpuAttestationReport: 12332 bytes; nonce is an INPUT */
typedef struct nvmlConfComputeGpuAttestationReport_st {
    unsigned int isCecAttestationReportPresent;
    unsigned int attestationReportSize;
    unsigned int cecAttestationReportSize;
    unsigned char nonce[NVML_CC_GPU_CEC_NONCE_SIZE];
    unsigned char attestationReport[NVML_CC_GPU_ATTESTATION_REPORT_SIZE];
    unsigned char cecAttestationReport[NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE];
} nvmlConfComputeGpuAttestationReport_t;

_Static_assert(sizeof(unsigned int) == 4, "NVML ABI assumes 32-bit unsigned int");
_Static_assert(sizeof(nvmlConfComputeSystemState_t) == 12, "nvmlConfComputeSystemState_t");
_Static_assert(sizeof(nvmlSystemConfComputeSettings_v1_t) == 20, "nvmlSystemConfComputeSettings_t");
_Static_assert(nvmlSystemConfComputeSettings_v1 == 0x01000014u, "settings version");
_Static_assert(sizeof(nvmlConfComputeGpuCertificate_t) == 9224, "nvmlConfComputeGpuCertificate_t");
_Static_assert(offsetof(nvmlConfComputeGpuCertificate_t, attestationCertChain) == 8 + 0x1000,
               "attestationCertChain offset");
_Static_assert(sizeof(nvmlConfComputeGpuAttestationReport_t) == 12332,
               "nvmlConfComputeGpuAttestationReport_t");
_Static_assert(offsetof(nvmlConfComputeGpuAttestationReport_t, nonce) == 12, "nonce offset");
_Static_assert(offsetof(nvmlConfComputeGpuAttestationReport_t, attestationReport) == 44,
               "attestationReport offset");

/* Function types, named after the exported symbols (the _v2 ones are what NVML's header maps
 * the plain names to). */
typedef nvmlReturn_t (*nvmlInit_v2_fn)(void);
typedef nvmlReturn_t (*nvmlShutdown_fn)(void);
typedef const char *(*nvmlErrorString_fn)(nvmlReturn_t result);
typedef nvmlReturn_t (*nvmlDeviceGetCount_v2_fn)(unsigned int *deviceCount);
typedef nvmlReturn_t (*nvmlDeviceGetHandleByIndex_v2_fn)(unsigned int index, nvmlDevice_t *device);
typedef nvmlReturn_t (*nvmlDeviceGetArchitecture_fn)(nvmlDevice_t device,
                                                     nvmlDeviceArchitecture_t *arch);
typedef nvmlReturn_t (*nvmlSystemGetConfComputeState_fn)(nvmlConfComputeSystemState_t *state);
typedef nvmlReturn_t (*nvmlSystemGetConfComputeSettings_fn)(
    nvmlSystemConfComputeSettings_v1_t *settings);
typedef nvmlReturn_t (*nvmlDeviceGetConfComputeGpuCertificate_fn)(
    nvmlDevice_t device, nvmlConfComputeGpuCertificate_t *gpuCert);
typedef nvmlReturn_t (*nvmlDeviceGetConfComputeGpuAttestationReport_fn)(
    nvmlDevice_t device, nvmlConfComputeGpuAttestationReport_t *gpuAtstReport);

#endif
