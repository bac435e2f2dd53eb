/* The quote backends behind attest/provider.h, one file each: provider_dstack.c (dstack guest
 * agent), provider_tappd.c (legacy tappd), provider_tsm.c (configfs-tsm), provider_sim.c
 * (SIMULATED). provider.c picks a table by mode name and calls through it; nothing outside
 * src/attest/provider*.c includes this header.
 *
 * Threads: present/open/close at start-up and shutdown; quote, info and derive_key BLOCK and
 * run on thread-pool threads, concurrently on one provider (each backend's state is immutable
 * after open or guarded by its own lock). */
#ifndef VP_ATTEST_PROVIDER_OPS_H
#define VP_ATTEST_PROVIDER_OPS_H
#include <stddef.h>
#include <stdint.h>

#include "attest/provider.h"
#include "attest/sim.h"
#include "attest/tsm.h"
#include "dstack/agent.h"

#define ATTEST_WHERE_MAX 400    /* endpoint or path, as the logs name it */
#define ATTEST_ERR_MAX 400      /* an inner error that is wrapped into the caller's err */
#define ATTEST_KEY_PATH_MAX 400 /* "<model>/ed25519-signing-key", a GetKey path */

typedef struct attest_provider_ops {
    const char *name;   /* the mode name and the report's attestation_mode */
    attest_kind_t kind;
    /* ATTESTATION=auto: 1 when this backend looks present (cheap, no TEE call); NULL: never
     * chosen by auto. */
    int (*present)(const attest_provider_config_t *c);
    /* Fills the backend state and p->where, and makes one real call (the start-up probe).
     * 0, or -1 with err and nothing left to close. */
    int (*open)(attest_provider_t *p, const attest_provider_config_t *c, char *err, size_t errlen);
    /* Quote over report_data, plus whatever else the backend returns with it (event log,
     * vm_config, info). Appends to parts. 0, or -1 with err. */
    int (*quote)(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                 char *err, size_t errlen);
    /* Appends the Info JSON object to parts->info after the quote was checked; NULL: none. */
    int (*info)(attest_provider_t *p, attest_parts_t *parts, char *err, size_t errlen);
    /* The KMS key for a GetKey path and algorithm; NULL: no KMS. 0, or -1 with err. */
    int (*derive_key)(attest_provider_t *p, const char *path, const char *algorithm, uint8_t key[32],
                      char *err, size_t errlen);
    void (*close)(attest_provider_t *p); /* after a successful open; NULL: nothing to release */
} attest_provider_ops_t;

struct attest_provider {
    const attest_provider_ops_t *ops;
    union {
        dstack_endpoint_t ep; /* dstack, tappd */
        tsm_t tsm;            /* tsm */
        attest_sim_t *sim;    /* simulated */
    } be;
    char where[ATTEST_WHERE_MAX];
};

extern const attest_provider_ops_t attest_dstack_ops;
extern const attest_provider_ops_t attest_tappd_ops;
extern const attest_provider_ops_t attest_tsm_ops;
extern const attest_provider_ops_t attest_sim_ops;

/* dstack and tappd speak to the same agent client: provider_dstack.c's helpers, shared. */
int attest_agent_open(attest_provider_t *p, int tappd, const char *endpoint, unsigned timeout_ms,
                      char *err, size_t errlen);
int attest_agent_quote(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                       char *err, size_t errlen);
int attest_agent_info(attest_provider_t *p, attest_parts_t *parts, char *err, size_t errlen);

/* The configfs-tsm root c names, or the kernel's default. */
const char *attest_tsm_root(const attest_provider_config_t *c);

#endif
