/* The signature records of completed answers, behind one facade: the record's format (the
 * reference's JSON object: text, signature_ecdsa, signing_address_ecdsa, signature_ed25519,
 * signing_address_ed25519), its key ({MODEL_NAME}:chat:{id}) and where it lives: the
 * process-wide memory store (first writer wins) and, with REDIS_HOST, this worker's Redis
 * connection (written through with SET NX EX; read first, memory as the fallback).
 *
 * Threads: a sigstore_t belongs to one worker loop (its Redis connection is that loop's); the
 * memory store and the signer under it are shared and thread-safe. */
#ifndef VP_PROXY_SIGSTORE_H
#define VP_PROXY_SIGSTORE_H

#include <stddef.h>

#include "sign/signer.h"
#include "store/redis.h"
#include "store/store.h"

#define SIG_HASH_HEX_LEN 64                                   /* sha256 in hex */
#define SIG_TEXT_LEN (SIG_HASH_HEX_LEN + 1 + SIG_HASH_HEX_LEN) /* "reqhash:resphash" */
#define SIG_ID_MAX 256 /* bytes of a chat id; longer ids are neither stored nor looked up */
#define SIG_MODEL_MAX 255 /* bytes of the model name put before the hashes (SIGNED_TEXT) */

enum {
    SIGSTORE_OK = 0,
    SIGSTORE_EXISTS = 1,    /* put: a record with this id is kept; this one was dropped */
    SIGSTORE_NOT_FOUND = 2, /* get: no live record */
    SIGSTORE_CORRUPT = 3,   /* get: a record that is not the format above */
    SIGSTORE_ERR = -1,      /* signing failed, id too long, out of memory */
};

typedef struct sigstore {
    store_t *mem;          /* shared, thread-safe */
    rstore_t *redis;       /* this loop's Redis connection; NULL without REDIS_HOST */
    const signer_t *signer;
    const char *model;     /* MODEL_NAME: the key prefix */
    int model_in_text;     /* SIGNED_TEXT=model:req:resp: the signed text is "{model}:" + text */
} sigstore_t;

/* Signs the answer's text with both keys and stores the record under id (NUL-terminated); on
 * SIGSTORE_OK the record is also sent to Redis (never waits, never overwrites). text is
 * "reqhash:resphash" (SIG_TEXT_LEN bytes); with model_in_text the text signed and stored is
 * "{model}:reqhash:resphash" (the Rust proxy's), so the record's "text" is always exactly the
 * bytes the signatures cover. */
int sigstore_sign_put(const sigstore_t *ss, const char *id, const char *text);

/* What sigstore_sign_put_sig signed (in-band signatures: docs/API.md): the text exactly as
 * signed and stored, both signatures, and the keys' public forms (the signer's strings). */
typedef struct sigstore_sig {
    char text[SIG_MODEL_MAX + 1 + SIG_TEXT_LEN + 1];
    size_t text_len;
    char ecdsa[SIGNER_ECDSA_SIG_LEN + 1], ed25519[SIGNER_ED25519_SIG_LEN + 1];
    const char *address, *ed_key;
} sigstore_sig_t;
/* sigstore_sign_put, and on SIGSTORE_OK (only then) *out filled; out may be NULL. */
int sigstore_sign_put_sig(const sigstore_t *ss, const char *id, const char *text,
                          sigstore_sig_t *out);

/* A record read back; the strings are valid during the callback only. */
typedef struct sig_record {
    const char *text, *signature_ecdsa, *address_ecdsa, *signature_ed25519, *address_ed25519;
    size_t text_len, signature_ecdsa_len, address_ecdsa_len, signature_ed25519_len,
        address_ed25519_len;
} sig_record_t;

/* rc: SIGSTORE_OK (rec set), SIGSTORE_NOT_FOUND or SIGSTORE_CORRUPT (rec NULL). */
typedef void (*sigstore_get_cb)(void *ud, int rc, const sig_record_t *rec);

/* Looks id up in Redis (ss is copied). Returns 0 when asked: cb then runs exactly once, later, on the loop
 * (a Redis miss, error or timeout falls back to memory). Returns -1 when there is no usable
 * Redis now: cb is never called; use sigstore_get_local. */
int sigstore_get_remote(const sigstore_t *ss, const char *id, size_t idlen, sigstore_get_cb cb,
                        void *ud);
/* Looks id up in memory; cb runs before this returns. */
void sigstore_get_local(const sigstore_t *ss, const char *id, size_t idlen, sigstore_get_cb cb,
                        void *ud);

#endif
