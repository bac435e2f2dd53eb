/* Signature records: format, key, memory plus Redis (proxy/sigstore.h). */
#include "proxy/sigstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"

/* {model}:chat:{id} into key: its length, or -1 when it does not fit a store key. */
static int make_key(const sigstore_t *ss, const char *id, size_t idlen, char key[STORE_MAX_KEY + 1])
{
    int n = snprintf(key, STORE_MAX_KEY + 1, "%s:chat:%.*s", ss->model, (int)idlen, id);
    return n <= 0 || n > (int)STORE_MAX_KEY ? -1 : n;
}

/* The record as the reference writes it (json.dumps: ", " and ": "), text escaped. */
static int make_record(buf_t *rec, const char *signed_text, size_t tlen, const char *se,
                       const char *addr, const char *sd, const char *pub)
{
    return buf_puts(rec, "{\"text\": ") || buf_json_str(rec, signed_text, tlen) ||
           buf_printf(rec,
                      ", \"signature_ecdsa\": \"%s\", \"signing_address_ecdsa\": \"%s\", "
                      "\"signature_ed25519\": \"%s\", \"signing_address_ed25519\": \"%s\"}",
                      se, addr, sd, pub);
}

int sigstore_sign_put(const sigstore_t *ss, const char *id, const char *text)
{
    return sigstore_sign_put_sig(ss, id, text, NULL);
}

int sigstore_sign_put_sig(const sigstore_t *ss, const char *id, const char *text,
                          sigstore_sig_t *out)
{
    /* The text the signatures cover: "reqhash:resphash", or "{model}:reqhash:resphash". */
    char full[SIG_MODEL_MAX + 1 + SIG_TEXT_LEN + 1];
    size_t tlen = SIG_TEXT_LEN;
    const char *signed_text = text;
    if (ss->model_in_text) {
        size_t ml = strlen(ss->model);
        if (ml > SIG_MODEL_MAX)
            return SIGSTORE_ERR;
        memcpy(full, ss->model, ml);
        full[ml] = ':';
        memcpy(full + ml + 1, text, SIG_TEXT_LEN);
        tlen = ml + 1 + SIG_TEXT_LEN;
        full[tlen] = '\0';
        signed_text = full;
    }
    char se[SIGNER_ECDSA_SIG_LEN + 1], sd[SIGNER_ED25519_SIG_LEN + 1];
    if (signer_sign_ecdsa(ss->signer, signed_text, tlen, se) != 0 ||
        signer_sign_ed25519(ss->signer, signed_text, tlen, sd) != 0) {
        LOG_ERROR("signing failed for id %s", id);
        return SIGSTORE_ERR;
    }
    char key[STORE_MAX_KEY + 1];
    buf_t rec = BUF_INIT;
    int kl = make_key(ss, id, strlen(id), key);
    if (kl < 0 || make_record(&rec, signed_text, tlen, se, signer_ecdsa_address(ss->signer), sd,
                              signer_ed25519_pubkey_hex(ss->signer))) {
        buf_free(&rec);
        return SIGSTORE_ERR;
    }
    int rc = store_put(ss->mem, key, (size_t)kl, rec.data, rec.len, clock_wall_s());
    if (rc == STORE_OK && ss->redis) /* write-through for the other replicas; never waits, never overwrites (NX) */
        rstore_set_nx(ss->redis, key, (size_t)kl, rec.data, rec.len);
    buf_free(&rec);
    if (rc == STORE_EXISTS)
        return SIGSTORE_EXISTS;
    if (rc != STORE_OK) {
        LOG_ERROR("could not store the signature for id %s", id);
        return SIGSTORE_ERR;
    }
    if (out) {
        memcpy(out->text, signed_text, tlen);
        out->text[tlen] = '\0';
        out->text_len = tlen;
        memcpy(out->ecdsa, se, sizeof se);
        memcpy(out->ed25519, sd, sizeof sd);
        out->address = signer_ecdsa_address(ss->signer);
        out->ed_key = signer_ed25519_pubkey_hex(ss->signer);
    }
    return SIGSTORE_OK;
}

/* Parses a stored record and calls cb with it (or SIGSTORE_CORRUPT). Members other than
 * "text" may be missing (NULL): the caller needs only one algorithm's pair. */
static void deliver(const char *val, size_t len, sigstore_get_cb cb, void *ud)
{
    struct json_object *o = len <= STORE_MAX_VAL ? json_parse_strict(val, len) : NULL;
    sig_record_t r;
    r.text = json_get_str(o, "text", &r.text_len);
    r.signature_ecdsa = json_get_str(o, "signature_ecdsa", &r.signature_ecdsa_len);
    r.address_ecdsa = json_get_str(o, "signing_address_ecdsa", &r.address_ecdsa_len);
    r.signature_ed25519 = json_get_str(o, "signature_ed25519", &r.signature_ed25519_len);
    r.address_ed25519 = json_get_str(o, "signing_address_ed25519", &r.address_ed25519_len);
    cb(ud, r.text ? SIGSTORE_OK : SIGSTORE_CORRUPT, r.text ? &r : NULL);
    json_object_put(o);
}

static void get_by_key(const sigstore_t *ss, const char *key, size_t klen, sigstore_get_cb cb,
                       void *ud)
{
    buf_t rec = BUF_INIT;
    if (store_get(ss->mem, key, klen, clock_wall_s(), &rec) != STORE_OK)
        cb(ud, SIGSTORE_NOT_FOUND, NULL);
    else
        deliver(rec.data, rec.len, cb, ud);
    buf_free(&rec);
}

void sigstore_get_local(const sigstore_t *ss, const char *id, size_t idlen, sigstore_get_cb cb,
                        void *ud)
{
    char key[STORE_MAX_KEY + 1];
    int kl = make_key(ss, id, idlen, key);
    if (kl < 0)
        cb(ud, SIGSTORE_NOT_FOUND, NULL);
    else
        get_by_key(ss, key, (size_t)kl, cb, ud);
}

/* A Redis lookup in flight; freed by its callback, which rstore always calls once. */
typedef struct lookup {
    sigstore_t ss; /* a copy: the caller's may be gone when Redis answers */
    sigstore_get_cb cb;
    void *ud;
    size_t klen;
    char key[STORE_MAX_KEY + 1];
} lookup_t;

/* Redis answered (or failed, timed out, or the connection dropped): a non-empty value wins,
 * anything else falls back to memory. */
static void remote_done(void *ud, int rc, const char *val, size_t len)
{
    lookup_t *lk = ud;
    if (rc == RSTORE_OK && len > 0)
        deliver(val, len, lk->cb, lk->ud);
    else
        get_by_key(&lk->ss, lk->key, lk->klen, lk->cb, lk->ud);
    free(lk);
}

int sigstore_get_remote(const sigstore_t *ss, const char *id, size_t idlen, sigstore_get_cb cb,
                        void *ud)
{
    if (!ss->redis)
        return -1;
    lookup_t *lk = malloc(sizeof *lk);
    if (!lk)
        return -1;
    int kl = make_key(ss, id, idlen, lk->key);
    if (kl < 0) {
        free(lk);
        return -1;
    }
    lk->ss = *ss;
    lk->cb = cb;
    lk->ud = ud;
    lk->klen = (size_t)kl;
    if (rstore_get(ss->redis, lk->key, lk->klen, remote_done, lk) == 0)
        return 0;
    free(lk);
    return -1; /* Redis not usable now (down, breaker open, out of memory): memory only */
}
