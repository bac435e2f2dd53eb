/* The SIMULATED backend (attest/sim.h): quotes signed under the repository's test root, with
 * the simulated event log, info and vm_config. Only when asked for by name; auto never picks
 * it. */
#include <stdio.h>

#include "attest/provider_ops.h"

static int sim_open(attest_provider_t *p, const attest_provider_config_t *c, char *err, size_t errlen)
{
    (void)c;
    snprintf(p->where, sizeof p->where, "built-in SIMULATED provider");
    if ((p->be.sim = attest_sim_new()) != NULL)
        return 0;
    snprintf(err, errlen, "cannot initialise the simulated attestation provider");
    return -1;
}

static int sim_quote(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                     char *err, size_t errlen)
{
    if (attest_sim_parts(p->be.sim, report_data, parts) == 0)
        return 0;
    snprintf(err, errlen, "simulated quote failed");
    return -1;
}

static void sim_close(attest_provider_t *p) { attest_sim_free(p->be.sim); }

const attest_provider_ops_t attest_sim_ops = {
    .name = "simulated", .kind = ATTEST_SIMULATED,
    .open = sim_open, .quote = sim_quote,
    .close = sim_close,
};
