/* The configfs-tsm backend (attest/tsm.h): quotes from the kernel, for guests without a dstack
 * agent. No event log, info or KMS. */
#include <stdio.h>

#include "attest/provider_ops.h"

const char *attest_tsm_root(const attest_provider_config_t *c)
{
    return c->tsm_root && *c->tsm_root ? c->tsm_root : TSM_DEFAULT_ROOT;
}

static int tsm_backend_present(const attest_provider_config_t *c)
{
    return tsm_present(attest_tsm_root(c));
}

static int tsm_backend_open(attest_provider_t *p, const attest_provider_config_t *c, char *err,
                            size_t errlen)
{
    uint8_t rd[64] = {0};
    buf_t q = BUF_INIT;
    if (tsm_open(&p->be.tsm, attest_tsm_root(c), err, errlen) != 0)
        return -1;
    snprintf(p->where, sizeof p->where, "%s", p->be.tsm.dir);
    int rc = tsm_quote(&p->be.tsm, rd, &q, err, errlen); /* start-up probe */
    buf_free(&q);
    if (rc != 0)
        tsm_close(&p->be.tsm);
    return rc;
}

static int tsm_backend_quote(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                             char *err, size_t errlen)
{
    return tsm_quote(&p->be.tsm, report_data, &parts->quote, err, errlen);
}

static void tsm_backend_close(attest_provider_t *p) { tsm_close(&p->be.tsm); }

const attest_provider_ops_t attest_tsm_ops = {
    .name = "tsm", .kind = ATTEST_TSM,
    .present = tsm_backend_present, .open = tsm_backend_open,
    .quote = tsm_backend_quote, .close = tsm_backend_close,
};
