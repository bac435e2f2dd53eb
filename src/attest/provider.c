/* Provider choice and the calls every backend shares (the report_data check, KMS key paths);
 * the backends themselves are function tables, one file each (attest/provider_ops.h). */
#include "attest/provider.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/gpu.h"
#include "attest/provider_ops.h"
#include "tdx/quote.h"

/* The table for a mode name (the report's attestation_mode), or NULL. "auto" is not a table. */
static const attest_provider_ops_t *ops_by_name(const char *mode)
{
    static const attest_provider_ops_t *const all[] = {&attest_dstack_ops, &attest_tappd_ops,
                                                       &attest_tsm_ops, &attest_sim_ops};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(mode, all[i]->name))
            return all[i];
    return NULL;
}

/* ATTESTATION=auto: dstack, then tappd, then configfs-tsm; never simulated. NULL with err
 * when none looks present. */
static const attest_provider_ops_t *ops_auto(const attest_provider_config_t *c, char *err, size_t errlen)
{
    static const attest_provider_ops_t *const order[] = {&attest_dstack_ops, &attest_tappd_ops,
                                                         &attest_tsm_ops};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (order[i]->present(c))
            return order[i];
    snprintf(err, errlen,
             "ATTESTATION=auto found no TEE: no dstack guest agent (/var/run/dstack.sock, "
             "DSTACK_SIMULATOR_ENDPOINT), no tappd agent (/var/run/tappd.sock, "
             "TAPPD_SIMULATOR_ENDPOINT), no configfs-tsm (%s). Refusing to start; set "
             "ATTESTATION=simulated (or DEV=1) for development and tests", attest_tsm_root(c));
    return NULL;
}

attest_provider_t *attest_provider_open(const attest_provider_config_t *c, char *err, size_t errlen)
{
    const char *mode = c->mode && *c->mode ? c->mode : "auto";
    const attest_provider_ops_t *ops;
    if (!strcmp(mode, "auto")) {
        if (!(ops = ops_auto(c, err, errlen)))
            return NULL;
    } else if (!(ops = ops_by_name(mode))) {
        snprintf(err, errlen, "unknown attestation mode '%s'", mode);
        return NULL;
    }
    attest_provider_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->ops = ops;
    if (ops->open(p, c, err, errlen) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void attest_provider_free(attest_provider_t *p)
{
    if (!p)
        return;
    if (p->ops->close)
        p->ops->close(p);
    free(p);
}

attest_kind_t attest_provider_kind(const attest_provider_t *p) { return p->ops->kind; }
const char *attest_provider_mode(const attest_provider_t *p) { return p->ops->name; }
const char *attest_provider_where(const attest_provider_t *p) { return p->where; }

static int check_report_data(const attest_parts_t *parts, const uint8_t rd[64], char *err, size_t errlen)
{
    tdx_quote_t q;
    int e = tdx_quote_parse(&q, (const uint8_t *)parts->quote.data, parts->quote.len);
    if (e != 0) {
        snprintf(err, errlen, "the %s quote does not parse: %s", parts->mode, tdx_strerror(e));
        return -1;
    }
    if (memcmp(q.body.report_data, rd, 64) != 0) {
        snprintf(err, errlen, "the %s quote does not carry the requested report_data", parts->mode);
        return -1;
    }
    return 0;
}

int attest_provider_collect(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                            char *err, size_t errlen)
{
    parts->mode = attest_provider_mode(p);
    if (p->ops->quote(p, report_data, parts, err, errlen) != 0)
        return -1;
    if (check_report_data(parts, report_data, err, errlen) != 0) /* whatever the backend */
        return -1;
    return p->ops->info ? p->ops->info(p, parts, err, errlen) : 0;
}

int attest_provider_derive_keys(attest_provider_t *p, const char *model_name, uint8_t ecdsa_sk[32],
                                uint8_t ed25519_seed[32], char *err, size_t errlen)
{
    if (!p->ops->derive_key) {
        snprintf(err, errlen, "the %s provider has no KMS key derivation", attest_provider_mode(p));
        return -1;
    }
    char path[ATTEST_KEY_PATH_MAX];
    snprintf(path, sizeof path, "%s/ecdsa-signing-key", model_name);
    if (p->ops->derive_key(p, path, "secp256k1", ecdsa_sk, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/ed25519-signing-key", model_name);
    if (p->ops->derive_key(p, path, "ed25519", ed25519_seed, err, errlen) != 0) {
        sodium_memzero(ecdsa_sk, 32);
        return -1;
    }
    return 0;
}

int attest_provider_derive_key(attest_provider_t *p, const char *path, const char *algorithm,
                               uint8_t key[32], char *err, size_t errlen)
{
    if (!p->ops->derive_key) {
        snprintf(err, errlen, "the %s provider has no KMS key derivation", attest_provider_mode(p));
        return -1;
    }
    return p->ops->derive_key(p, path, algorithm, key, err, errlen);
}

int attest_provider_attest_gpu(attest_provider_t *p, const uint8_t nonce[32], buf_t *payload,
                               char *err, size_t errlen)
{
    if (p->ops->kind != ATTEST_DSTACK) {
        snprintf(err, errlen, "GPU_EVIDENCE=dstack needs ATTESTATION=dstack (the guest agent's "
                              "AttestGpu), not %s", attest_provider_mode(p));
        return -1;
    }
    buf_t ev = BUF_INIT;
    int rc = dstack_attest_gpu(&p->be.ep, nonce, &ev, err, errlen);
    if (rc == 0)
        rc = gpu_payload_from_nvattest(nonce, ev.data ? ev.data : "", ev.len, payload, err, errlen);
    buf_free(&ev);
    return rc;
}
