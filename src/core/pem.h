/* The one PEM certificate-chain reader: TDX PCK chains, Intel collateral issuer chains, NVIDIA
 * GPU identity chains. Strict where OpenSSL's PEM_read loops are lenient: the text must be
 * CERTIFICATE blocks separated by whitespace and nothing else (a trailing run of NUL bytes is
 * allowed: quotes and NVML count the C string's terminator), every block must decode to
 * exactly one DER certificate, and the count is bounded. A damaged or foreign block is an
 * error, never a silently shorter chain.
 *
 * Pure function; any thread. The stack it returns belongs to the caller
 * (sk_X509_pop_free(sk, X509_free)). */
#ifndef VP_CORE_PEM_H
#define VP_CORE_PEM_H
#include <stddef.h>

struct stack_st_X509; /* STACK_OF(X509) */

#define PEM_CHAIN_MAX_TEXT (1u << 20) /* bytes of chain text accepted at most */

typedef enum pem_chain_err {
    PEM_CHAIN_OK = 0,
    PEM_CHAIN_EMPTY = -1,    /* no certificate (only whitespace or NULs) */
    PEM_CHAIN_GARBAGE = -2,  /* text outside the blocks */
    PEM_CHAIN_NO_END = -3,   /* a BEGIN CERTIFICATE line without its END line */
    PEM_CHAIN_NOT_CERT = -4, /* a PEM block of another type (key, CRL, TRUSTED CERTIFICATE...) */
    PEM_CHAIN_BAD_CERT = -5, /* base64, headers or DER of a block do not make one certificate */
    PEM_CHAIN_TOO_MANY = -6, /* more than max_certs */
    PEM_CHAIN_TOO_LARGE = -7,/* len > PEM_CHAIN_MAX_TEXT */
    PEM_CHAIN_NOMEM = -8,
} pem_chain_err_t;

/* Reads every certificate of text[0..len), in order (leaf first as chains are written), into
 * a new stack at *out. max_certs >= 1. PEM_CHAIN_OK, or an error with *out = NULL. */
int pem_chain_read(const char *text, size_t len, size_t max_certs, struct stack_st_X509 **out);

/* What an error code means, in words. */
const char *pem_chain_strerror(int e);

#endif
