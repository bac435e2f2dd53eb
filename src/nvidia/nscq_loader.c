/* dlopen of libnvidia-nscq.so.2 and symbol resolution (see nscq_loader.h). */
#include "nvidia/nscq_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int resolve(void *dl, const char *name, void *slot, size_t slotlen, char *err, size_t errlen)
{
    dlerror();
    void *sym = dlsym(dl, name);
    if (!sym) {
        snprintf(err, errlen, "NSCQ library lacks %s", name);
        return -1;
    }
    memcpy(slot, &sym, slotlen); /* object to function pointer, as POSIX allows */
    return 0;
}

#define RESOLVE(field, name) resolve(lib->dl, name, &lib->field, sizeof(lib->field), err, errlen)

int nscq_lib_open(nscq_lib_t *lib, const char *path, char *err, size_t errlen)
{
    _Static_assert(sizeof(void *) == sizeof(nscq_session_create_fn), "function pointer size");
    memset(lib, 0, sizeof(*lib));
    if (!path || !*path)
        path = NSCQ_DEFAULT_LIBRARY;
    lib->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->dl) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load the NVSwitch library NSCQ (%s): %s", path,
                 why ? why : "unknown error");
        return -1;
    }
    if (RESOLVE(session_create, "nscq_session_create") ||
        RESOLVE(session_destroy, "nscq_session_destroy") ||
        RESOLVE(path_observe, "nscq_session_path_observe") ||
        RESOLVE(set_input, "nscq_session_set_input") ||
        RESOLVE(uuid_to_label, "nscq_uuid_to_label")) {
        dlclose(lib->dl);
        memset(lib, 0, sizeof(*lib));
        return -1;
    }
    return 0;
}

void nscq_lib_close(nscq_lib_t *lib)
{
    if (lib->dl)
        dlclose(lib->dl);
    memset(lib, 0, sizeof(*lib));
}

const char *nscq_rc_name(nscq_rc_t rc)
{
    switch (rc) {
    case NSCQ_RC_SUCCESS: return "success";
    case 1: return "NSCQ_RC_WARNING_RDT_INIT_FAILURE";
    case NSCQ_RC_ERROR_NOT_IMPLEMENTED: return "NSCQ_RC_ERROR_NOT_IMPLEMENTED";
    case NSCQ_RC_ERROR_INVALID_UUID: return "NSCQ_RC_ERROR_INVALID_UUID";
    case NSCQ_RC_ERROR_RESOURCE_NOT_MOUNTABLE: return "NSCQ_RC_ERROR_RESOURCE_NOT_MOUNTABLE";
    case NSCQ_RC_ERROR_OVERFLOW: return "NSCQ_RC_ERROR_OVERFLOW";
    case NSCQ_RC_ERROR_UNEXPECTED_VALUE: return "NSCQ_RC_ERROR_UNEXPECTED_VALUE";
    case NSCQ_RC_ERROR_UNSUPPORTED_DRV: return "NSCQ_RC_ERROR_UNSUPPORTED_DRV";
    case NSCQ_RC_ERROR_DRV: return "NSCQ_RC_ERROR_DRV";
    case NSCQ_RC_ERROR_TIMEOUT: return "NSCQ_RC_ERROR_TIMEOUT";
    case NSCQ_RC_ERROR_EXT: return "NSCQ_RC_ERROR_EXT";
    case NSCQ_RC_ERROR_UNSPECIFIED: return "NSCQ_RC_ERROR_UNSPECIFIED";
    default: return rc > 0 ? "NSCQ warning" : "NSCQ error";
    }
}
