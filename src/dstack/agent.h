/* Client for the dstack guest agent (shared/docs/tee-formats.md §2): the current DstackGuest API on
 * /var/run/dstack.sock (GetQuote, Info, GetKey) and the legacy tappd API on
 * /var/run/tappd.sock (Tappd.TdxQuote, Tappd.Info), over HTTP/1.1 on a Unix socket or TCP.
 *
 * Every call BLOCKS (poll()-bounded by the endpoint's timeout, one retry on transport errors,
 * timeouts and 5xx): call it only from libuv thread-pool threads or at start-up, never on a
 * loop thread. An endpoint is immutable after dstack_endpoint_parse and may be shared by any
 * number of threads. Output buffers are appended to and owned by the caller; on error they
 * are left as they were and err says why (naming the endpoint and the method). */
#ifndef VP_DSTACK_AGENT_H
#define VP_DSTACK_AGENT_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define DSTACK_MAX_RESPONSE (8u << 20) /* bytes of response body accepted at most */

typedef struct dstack_endpoint {
    int is_unix;             /* 1: Unix socket at path; 0: TCP host:port */
    int tappd;               /* 1: legacy tappd API (/prpc/Tappd.<Method>) */
    char path[108];          /* sun_path */
    char host[256];
    char port[8];
    char prefix[256];        /* URL path prefix for http:// endpoints, no trailing slash */
    char display[400];       /* what error messages call it */
    unsigned timeout_ms;     /* per attempt */
} dstack_endpoint_t;

/* Reads s as dstack's SDKs read DSTACK_SIMULATOR_ENDPOINT: "http://host[:port][/prefix]" is a
 * TCP endpoint, anything else a Unix socket path ("unix:" prefix allowed). https is refused
 * (the agent is local). 0, or -1 with err. */
int dstack_endpoint_parse(dstack_endpoint_t *ep, const char *s, int tappd, unsigned timeout_ms,
                          char *err, size_t errlen);

/* First existing socket among the paths dstack's SDKs probe (tappd: the tappd.sock ones);
 * NULL when none exists. */
const char *dstack_probe_socket(int tappd);

/* One HTTP exchange: POST <prefix>/<method> with a JSON body. *status gets the HTTP status;
 * resp the (de-chunked) body. 0 when an HTTP response was read (any status), -1 otherwise. */
int dstack_http_post(const dstack_endpoint_t *ep, const char *method, const char *body,
                     size_t blen, int *status, buf_t *resp, char *err, size_t errlen);

/* What a quote call returns, as the agent returned it. */
typedef struct dstack_quote {
    buf_t quote;            /* raw quote bytes (decoded from the agent's hex) */
    buf_t event_log;        /* the event_log string's content (JSON array text), may be empty */
    buf_t vm_config;        /* the vm_config string's content, may be empty */
    char hash_algorithm[32];/* tappd only: as the agent reported it */
    char prefix[64];        /* tappd only */
} dstack_quote_t;

void dstack_quote_free(dstack_quote_t *q);

/* GetQuote (dstack) or TdxQuote with hash_algorithm "raw" (tappd): REPORTDATA = report_data
 * verbatim. Checks that the returned quote is hex and, when the agent echoes report_data,
 * that it is ours. 0 or -1. */
int dstack_get_quote(const dstack_endpoint_t *ep, const uint8_t report_data[64], dstack_quote_t *q,
                     char *err, size_t errlen);

/* Info: appends a JSON object text: the agent's object with tcb_info (a JSON string on the
 * wire) replaced by the object it contains, as the Python SDK presents it; everything else
 * as returned. 0 or -1. */
int dstack_info(const dstack_endpoint_t *ep, buf_t *info_json, char *err, size_t errlen);

/* GetKey (dstack only): the 32-byte key the KMS derives for this app and path, algorithm
 * "secp256k1" or "ed25519". Deterministic per app id + path. 0 or -1. */
int dstack_get_key(const dstack_endpoint_t *ep, const char *path, const char *algorithm,
                   uint8_t key[32], char *err, size_t errlen);

/* AttestGpu (dstack main; PRs #1111, #1112): NVIDIA evidence collected by the agent now, for
 * this nonce. Tries the v1 API (/v1/AttestGpu, the bundle of vendor "nvidia", format
 * "nvidia-nvattest-collect-evidence-json-v1", hex-decoded), then v0 (/AttestGpu, its
 * "evidence" string) when v1 answers 404. Appends the nvattest collect-evidence JSON (a list of
 * {"arch","certificate","evidence","nonce",...}) as the agent returned it. 0 or -1. */
int dstack_attest_gpu(const dstack_endpoint_t *ep, const uint8_t nonce[32], buf_t *evidence,
                      char *err, size_t errlen);
#endif
