/* Loads NVIDIA's NSCQ library (libnvidia-nscq.so.2) with dlopen and resolves the entry points
 * in nscq.h, as nvml_loader does for NVML: the proxy never links it. Same threading rules as
 * nvml_loader.h (src/attest/gpu.c calls it from its NVML helper thread only). */
#ifndef VP_NVIDIA_NSCQ_LOADER_H
#define VP_NVIDIA_NSCQ_LOADER_H
#include <stddef.h>

#include "nvidia/nscq.h"

#define NSCQ_DEFAULT_LIBRARY "libnvidia-nscq.so.2"

typedef struct nscq_lib {
    void *dl;
    nscq_session_create_fn session_create;
    nscq_session_destroy_fn session_destroy;
    nscq_session_path_observe_fn path_observe;
    nscq_session_set_input_fn set_input;
    nscq_uuid_to_label_fn uuid_to_label;
} nscq_lib_t;

/* path NULL or "" = NSCQ_DEFAULT_LIBRARY. 0, or -1 with a reason in err (cannot load, or a
 * symbol above is missing). */
int nscq_lib_open(nscq_lib_t *lib, const char *path, char *err, size_t errlen);
void nscq_lib_close(nscq_lib_t *lib);
/* The name of an NSCQ return code ("NSCQ_RC_ERROR_DRV", ...). Never NULL. */
const char *nscq_rc_name(nscq_rc_t rc);

#endif
