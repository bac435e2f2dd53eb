/* nvtrust's canned no-GPU evidence, the source behind GPU_MODE_CANNED (attest/gpu.h): its
 * sample Hopper SPDM report (which carries nvtrust's fixed nonce, not a request's) and its
 * sample certificate chain, whose root is NVIDIA's device root from nvidia/roots.c.
 *
 * Constant data; any thread. Output buffers belong to the caller. */
#ifndef VP_ATTEST_GPU_CANNED_H
#define VP_ATTEST_GPU_CANNED_H
#include <stdint.h>

#include "core/buf.h"

#define GPU_CANNED_REPORT_LEN 4117 /* bytes of the sample report */

/* The report, decoded. 0, or -1 if the embedded hex were damaged. */
int gpu_canned_report(uint8_t out[GPU_CANNED_REPORT_LEN]);

/* Appends the chain's PEM text, leaf first, the device root last. 0, or -1 on ENOMEM. */
int gpu_canned_chain(buf_t *out);

#endif
