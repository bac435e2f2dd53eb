/* report_data: the 64 bytes a TDX quote carries for us. The first half names the signing key,
 * the second is the client's nonce, so a quote proves both key and freshness. */
#include "attest/attest.h"

#include <string.h>

void attest_report_data(const uint8_t *id, size_t idlen, const uint8_t nonce[32], uint8_t out[64])
{
    memset(out, 0, 32);
    memcpy(out, id, idlen > 32 ? 32 : idlen);
    memcpy(out + 32, nonce, 32);
}
