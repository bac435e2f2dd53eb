/* bench/sign.c: the two signatures of a signed answer, alone: secp256k1 recoverable (EIP-191)
 * and Ed25519 over a "reqhash:resphash" text (129 bytes), with vllm-proxy's own signer
 * (src/sign), timed in CPU time of this thread. bench/bench.mjs runs it pinned like the
 * servers and adds the figure to the table: a signed request should cost the proxy no more
 * than a plain relay (nginx) plus these two signatures plus a little.
 * Usage: sign [iterations] -> one line "BENCHSIGN {json}" (microseconds per operation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/sigstore.h"
#include "sign/signer.h"

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    if (n < 1 || signer_global_init() != 0)
        return 2;
    signer_t *s = signer_new_random();
    if (!s)
        return 2;
    char text[SIG_TEXT_LEN + 1];
    memset(text, 'a', SIG_HASH_HEX_LEN);
    text[SIG_HASH_HEX_LEN] = ':';
    memset(text + SIG_HASH_HEX_LEN + 1, 'b', SIG_HASH_HEX_LEN);
    text[SIG_TEXT_LEN] = '\0';
    char se[SIGNER_ECDSA_SIG_LEN + 1], sd[SIGNER_ED25519_SIG_LEN + 1];
    for (long i = 0; i < n / 10 + 1; i++) /* warm-up: tables, caches, frequency */
        if (signer_sign_ecdsa(s, text, SIG_TEXT_LEN, se) || signer_sign_ed25519(s, text, SIG_TEXT_LEN, sd))
            return 1;
    double t0 = cpu_us();
    for (long i = 0; i < n; i++) {
        text[i % SIG_HASH_HEX_LEN] ^= 1; /* a new text each time, as in the proxy */
        if (signer_sign_ecdsa(s, text, SIG_TEXT_LEN, se))
            return 1;
    }
    double t1 = cpu_us();
    for (long i = 0; i < n; i++) {
        text[i % SIG_HASH_HEX_LEN] ^= 1;
        if (signer_sign_ed25519(s, text, SIG_TEXT_LEN, sd))
            return 1;
    }
    double t2 = cpu_us();
    double e = (t1 - t0) / (double)n, d = (t2 - t1) / (double)n;
    printf("BENCHSIGN {\"iterations\":%ld,\"ecdsa_us\":%.3f,\"ed25519_us\":%.3f,\"both_us\":%.3f}\n", n, e, d,
           e + d);
    signer_free(s);
    return 0;
}
