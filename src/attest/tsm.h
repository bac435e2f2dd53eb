/* TDX quotes through the kernel's configfs-tsm interface (shared/docs/tee-formats.md §3.1), for
 * guests without a dstack agent: one report entry under <root> (default
 * /sys/kernel/config/tsm/report), inblob written, outblob read, and the entry's generation
 * checked before and after so that a concurrent writer cannot hand us someone else's quote.
 *
 * tsm_quote BLOCKS (the kernel asks the host's quoting service): thread-pool threads or
 * start-up only. Calls from this process on one tsm_t are serialised by its mutex; other
 * writers are detected by the generation check and retried. */
#ifndef VP_ATTEST_TSM_H
#define VP_ATTEST_TSM_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define TSM_DEFAULT_ROOT "/sys/kernel/config/tsm/report"
#define TSM_ENTRY_NAME "vllm-proxy"
#define TSM_MAX_QUOTE (64u << 10)

typedef struct tsm {
    char dir[512]; /* <root>/vllm-proxy */
    pthread_mutex_t lock;
} tsm_t;

/* 1 when root exists and is a directory (configfs-tsm looks present), else 0. */
int tsm_present(const char *root);

/* Creates (or reuses) the report entry; checks its provider when the kernel names one
 * (it must be tdx_guest). 0, or -1 with err. */
int tsm_open(tsm_t *t, const char *root, char *err, size_t errlen);
void tsm_close(tsm_t *t); /* removes the entry (best effort) */

/* Appends the quote over report_data to out. Retries (3 attempts) when the generation moved
 * by anything but our own write. 0, or -1 with err. */
int tsm_quote(tsm_t *t, const uint8_t report_data[64], buf_t *out, char *err, size_t errlen);

#endif
