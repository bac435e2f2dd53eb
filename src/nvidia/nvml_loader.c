/* dlopen of libnvidia-ml.so.1 and symbol resolution (see nvml_loader.h). */
#include "nvidia/nvml_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* dlsym returns void *; converting it to a function pointer is what POSIX requires to work.
 * memcpy keeps -Wpedantic-style warnings about object-to-function casts away. */
static int resolve(void *dl, const char *name, void *slot, size_t slotlen, int required,
                   char *err, size_t errlen)
{
    dlerror();
    void *sym = dlsym(dl, name);
    if (!sym) {
        memset(slot, 0, slotlen);
        if (required) {
            snprintf(err, errlen, "NVML library lacks %s", name);
            return -1;
        }
        return 0;
    }
    memcpy(slot, &sym, slotlen);
    return 0;
}

#define RESOLVE(field, name, req) \
    resolve(lib->dl, name, &lib->field, sizeof(lib->field), req, err, errlen)

int nvml_lib_open(nvml_lib_t *lib, const char *path, char *err, size_t errlen)
{
    _Static_assert(sizeof(void *) == sizeof(nvmlInit_v2_fn), "function pointer size");
    memset(lib, 0, sizeof(*lib));
    if (!path || !*path)
        path = NVML_DEFAULT_LIBRARY;
    lib->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->dl) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load NVML (%s): %s", path, why ? why : "unknown error");
        return -1;
    }
    if (RESOLVE(init, "nvmlInit_v2", 1) || RESOLVE(shutdown, "nvmlShutdown", 1) ||
        RESOLVE(error_string, "nvmlErrorString", 1) ||
        RESOLVE(device_get_count, "nvmlDeviceGetCount_v2", 1) ||
        RESOLVE(device_get_handle_by_index, "nvmlDeviceGetHandleByIndex_v2", 1) ||
        RESOLVE(device_get_architecture, "nvmlDeviceGetArchitecture", 1) ||
        RESOLVE(cc_get_state, "nvmlSystemGetConfComputeState", 1) ||
        RESOLVE(cc_get_settings, "nvmlSystemGetConfComputeSettings", 0) ||
        RESOLVE(cc_get_certificate, "nvmlDeviceGetConfComputeGpuCertificate", 1) ||
        RESOLVE(cc_get_attestation_report, "nvmlDeviceGetConfComputeGpuAttestationReport", 1)) {
        dlclose(lib->dl);
        memset(lib, 0, sizeof(*lib));
        return -1;
    }
    return 0;
}

void nvml_lib_close(nvml_lib_t *lib)
{
    if (lib->dl)
        dlclose(lib->dl);
    memset(lib, 0, sizeof(*lib));
}

const char *nvml_lib_strerror(const nvml_lib_t *lib, nvmlReturn_t rc)
{
    const char *s = (lib && lib->error_string) ? lib->error_string(rc) : NULL;
    return s ? s : "NVML error";
}
