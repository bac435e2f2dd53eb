/* The dstack guest agent backend (GetQuote, Info, GetKey over dstack/agent.h), and the agent
 * helpers the legacy tappd backend shares. */
#include <stdio.h>

#include "attest/provider_ops.h"

int attest_agent_open(attest_provider_t *p, int tappd, const char *endpoint, unsigned timeout_ms,
                      char *err, size_t errlen)
{
    char e[ATTEST_ERR_MAX];
    const char *s = endpoint && *endpoint ? endpoint : dstack_probe_socket(tappd);
    if (!s) {
        snprintf(err, errlen, "no %s: none of its sockets exists (%s) and %s is unset",
                 tappd ? "tappd agent" : "dstack guest agent",
                 tappd ? "/var/run/tappd.sock, /run/tappd.sock, ..." : "/var/run/dstack.sock, /run/dstack.sock, ...",
                 tappd ? "TAPPD_SIMULATOR_ENDPOINT" : "DSTACK_SIMULATOR_ENDPOINT");
        return -1;
    }
    if (dstack_endpoint_parse(&p->be.ep, s, tappd, timeout_ms, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    snprintf(p->where, sizeof p->where, "%s", p->be.ep.display);
    buf_t info = BUF_INIT; /* start-up probe: the agent must answer */
    int rc = dstack_info(&p->be.ep, &info, e, sizeof e);
    buf_free(&info);
    if (rc != 0)
        snprintf(err, errlen, "%s at %s does not work: %s", tappd ? "tappd" : "dstack guest agent", s, e);
    return rc;
}

int attest_agent_quote(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                       char *err, size_t errlen)
{
    dstack_quote_t q = {0};
    if (dstack_get_quote(&p->be.ep, report_data, &q, err, errlen) != 0)
        return -1;
    /* hand the buffers over */
    parts->quote = q.quote;
    parts->event_log = q.event_log;
    parts->vm_config = q.vm_config;
    snprintf(parts->tappd_hash_algorithm, sizeof parts->tappd_hash_algorithm, "%s", q.hash_algorithm);
    snprintf(parts->tappd_prefix, sizeof parts->tappd_prefix, "%s", q.prefix);
    return 0;
}

int attest_agent_info(attest_provider_t *p, attest_parts_t *parts, char *err, size_t errlen)
{
    return dstack_info(&p->be.ep, &parts->info, err, errlen);
}

static int dstack_present(const attest_provider_config_t *c)
{
    return (c->dstack_endpoint && *c->dstack_endpoint) || dstack_probe_socket(0);
}

static int dstack_open(attest_provider_t *p, const attest_provider_config_t *c, char *err, size_t errlen)
{
    return attest_agent_open(p, 0, c->dstack_endpoint, c->timeout_ms, err, errlen);
}

static int dstack_derive_key(attest_provider_t *p, const char *path, const char *algorithm,
                             uint8_t key[32], char *err, size_t errlen)
{
    return dstack_get_key(&p->be.ep, path, algorithm, key, err, errlen);
}

const attest_provider_ops_t attest_dstack_ops = {
    .name = "dstack", .kind = ATTEST_DSTACK,
    .present = dstack_present, .open = dstack_open,
    .quote = attest_agent_quote, .info = attest_agent_info,
    .derive_key = dstack_derive_key,
};
