/* The legacy tappd backend (Tappd.TdxQuote with hash_algorithm "raw", Tappd.Info): the dstack
 * agent client in its tappd dialect. No KMS: GetKey is a dstack-only method. */
#include "attest/provider_ops.h"

static int tappd_present(const attest_provider_config_t *c)
{
    return (c->tappd_endpoint && *c->tappd_endpoint) || dstack_probe_socket(1);
}

static int tappd_open(attest_provider_t *p, const attest_provider_config_t *c, char *err, size_t errlen)
{
    return attest_agent_open(p, 1, c->tappd_endpoint, c->timeout_ms, err, errlen);
}

const attest_provider_ops_t attest_tappd_ops = {
    .name = "tappd", .kind = ATTEST_TAPPD,
    .present = tappd_present, .open = tappd_open,
    .quote = attest_agent_quote, .info = attest_agent_info,
};
