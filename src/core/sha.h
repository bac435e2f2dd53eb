/* SHA-256 / SHA-384 through OpenSSL's EVP with the algorithm fetched once per process.
 * A sha_ctx belongs to one thread at a time. */
#ifndef VP_CORE_SHA_H
#define VP_CORE_SHA_H
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA384_LEN 48
#define SHA256_HEX_LEN (2 * SHA256_LEN)

typedef struct evp_md_ctx_st sha_ctx; /* OpenSSL's EVP_MD_CTX */

sha_ctx *sha256_new(void);                 /* NULL on ENOMEM; initialised */
int sha256_reset(sha_ctx *c);              /* 0 or -1 */
int sha_update(sha_ctx *c, const void *p, size_t n);
int sha_final(sha_ctx *c, uint8_t *out);   /* 32 bytes for sha256, 48 for sha384 */
void sha_free(sha_ctx *c);
void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN]);
void sha384(const void *p, size_t n, uint8_t out[SHA384_LEN]);
/* out receives 64 hex digits and a NUL. */
void sha256_hex(const void *p, size_t n, char out[SHA256_HEX_LEN + 1]);

#endif
