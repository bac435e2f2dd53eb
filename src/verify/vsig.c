/* Signed text and signature checks shared by vchat.c and the local verifying proxy. */
#include "verify/vsig.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/sha.h"
#include "sign/signer.h"

int vs_signed_text_ok(const char *text, const char *want, char *model, size_t cap)
{
    model[0] = '\0';
    if (!text)
        return 0;
    const char *c1 = strchr(text, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || (c2 && strchr(c2 + 1, ':')))
        return 0; /* 1 part, or 4 and more */
    if (!c2)
        return strcmp(text, want) == 0;
    snprintf(model, cap, "%.*s", (int)(c1 - text), text);
    return strcmp(c1 + 1, want) == 0;
}

void vs_want(const void *req, size_t req_n, const void *resp, size_t resp_n, char want[130])
{
    sha256_hex(req ? req : "", req_n, want);
    want[64] = ':';
    sha256_hex(resp ? resp : "", resp_n, want + 65);
}

int vs_verify(const char *algo, const char *text, size_t n, const char *sig, const char *key,
              char *recovered)
{
    if (recovered)
        recovered[0] = '\0';
    if (!text || !sig || !key)
        return VS_MALFORMED;
    if (strcmp(algo, "ecdsa") == 0) {
        char rec[ETH_ADDRESS_LEN + 1];
        if (eth_recover_address(text, n, sig, rec) != 0)
            return VS_MALFORMED;
        if (recovered)
            memcpy(recovered, rec, sizeof rec);
        return strcasecmp(rec, key) == 0 ? VS_OK : VS_MISMATCH;
    }
    if (strcmp(algo, "ed25519") == 0)
        return ed25519_verify_hex(text, n, sig, key) == 0 ? VS_OK : VS_MISMATCH;
    return VS_UNKNOWN_ALGO;
}
