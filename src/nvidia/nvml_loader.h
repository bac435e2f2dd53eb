/* Loads libnvidia-ml.so.1 with dlopen and resolves the entry points in nvml.h, so the proxy
 * builds, starts and is tested on machines without NVIDIA's packages. The caller owns the
 * nvml_lib_t; open and close are not thread-safe against calls through the table, and close
 * must not run while a thread is still inside an NVML call (src/attest/gpu.c guarantees it). */
#ifndef VP_NVIDIA_NVML_LOADER_H
#define VP_NVIDIA_NVML_LOADER_H
#include <stddef.h>

#include "nvidia/nvml.h"

#define NVML_DEFAULT_LIBRARY "libnvidia-ml.so.1"

typedef struct nvml_lib {
    void *dl;
    nvmlInit_v2_fn init;
    nvmlShutdown_fn shutdown;
    nvmlErrorString_fn error_string;
    nvmlDeviceGetCount_v2_fn device_get_count;
    nvmlDeviceGetHandleByIndex_v2_fn device_get_handle_by_index;
    nvmlDeviceGetArchitecture_fn device_get_architecture;
    nvmlSystemGetConfComputeState_fn cc_get_state;
    nvmlSystemGetConfComputeSettings_fn cc_get_settings; /* NULL on drivers without it */
    nvmlDeviceGetConfComputeGpuCertificate_fn cc_get_certificate;
    nvmlDeviceGetConfComputeGpuAttestationReport_fn cc_get_attestation_report;
} nvml_lib_t;

/* path NULL or "" = NVML_DEFAULT_LIBRARY (found through the usual dlopen search). 0 on
 * success; -1 with a reason in err when the library cannot be loaded or lacks a required
 * symbol (every one above except nvmlSystemGetConfComputeSettings). */
int nvml_lib_open(nvml_lib_t *lib, const char *path, char *err, size_t errlen);
void nvml_lib_close(nvml_lib_t *lib);
/* Text for an NVML return code: nvmlErrorString when loaded, else a generic text. Never NULL. */
const char *nvml_lib_strerror(const nvml_lib_t *lib, nvmlReturn_t rc);

#endif
