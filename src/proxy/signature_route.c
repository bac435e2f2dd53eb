/* GET /v1/signature/{id} (proxy/signature_route.h). The id is everything after
 * /v1/signature/ up to the query, percent-decoded as a path (RFC 3986: '+' stays a plus, '/'
 * and %2F are both a slash), so any id the engine made can be fetched; the answer is
 * {text, signature, signing_address, signing_algo}. */
#include "proxy/signature_route.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "proxy/query.h"
#include "proxy/respond.h"

#define SIGNATURE_PREFIX "/v1/signature/"
#define SIGNATURE_PREFIX_LEN (sizeof SIGNATURE_PREFIX - 1)
/* Room to decode an over-long id far enough to refuse it. */
#define ID_DECODE_CAP (2 * SIG_ID_MAX + 88)

/* One lookup: on the stack when answered from memory, on the heap while Redis is asked.
 * A heap job is freed by the lookup's callback, which always runs; when the client goes
 * away first, on_abort only forgets the connection. */
typedef struct sig_job {
    conn_owner_t owner;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    int heap;
} sig_job_t;

static void sig_job_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    ((sig_job_t *)o)->c = NULL;
}

static const conn_owner_ops_t SIG_JOB_OPS = {"signature", sig_job_on_abort, NULL};

static void respond_record(sig_job_t *j, const sig_record_t *r)
{
    int algo = query_signing_algo(j->req->query);
    if (algo < 0) {
        respond_error(j->aw, j->c, j->req, ROUTE_SIGNATURE, APP_E_INVALID_SIGNING_ALGO, NULL);
        return;
    }
    int ed = algo == SIGN_ALGO_ED25519;
    const char *s = ed ? r->signature_ed25519 : r->signature_ecdsa;
    const char *a = ed ? r->address_ed25519 : r->address_ecdsa;
    if (!s || !a) {
        respond_error(j->aw, j->c, j->req, ROUTE_SIGNATURE, APP_E_RECORD_CORRUPT, NULL);
        return;
    }
    buf_t b = BUF_INIT;
    buf_puts(&b, "{\"text\":");
    buf_json_str(&b, r->text, r->text_len);
    buf_puts(&b, ",\"signature\":");
    buf_json_str(&b, s, ed ? r->signature_ed25519_len : r->signature_ecdsa_len);
    buf_puts(&b, ",\"signing_address\":");
    buf_json_str(&b, a, ed ? r->address_ed25519_len : r->address_ecdsa_len);
    buf_printf(&b, ",\"signing_algo\":\"%s\"}", ed ? "ed25519" : "ecdsa");
    respond_json(j->aw, j->c, j->req, ROUTE_SIGNATURE, 200, b.data, b.len);
    buf_free(&b);
}

static void on_record(void *ud, int rc, const sig_record_t *r)
{
    sig_job_t *j = ud;
    if (j->c) {
        conn_set_owner(j->c, NULL);
        if (rc == SIGSTORE_OK)
            respond_record(j, r);
        else if (rc == SIGSTORE_CORRUPT)
            respond_error(j->aw, j->c, j->req, ROUTE_SIGNATURE, APP_E_RECORD_CORRUPT, NULL);
        else
            respond_error(j->aw, j->c, j->req, ROUTE_SIGNATURE, APP_E_CHAT_ID_NOT_FOUND, NULL);
    }
    if (j->heap)
        free(j);
}

void signature_route(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    char id[ID_DECODE_CAP];
    long idn = query_path_decode(req->path.p + SIGNATURE_PREFIX_LEN,
                                 req->path.n - SIGNATURE_PREFIX_LEN, id, sizeof id);
    if (idn <= 0 || idn > SIG_ID_MAX) {
        respond_error(aw, c, req, ROUTE_SIGNATURE, APP_E_CHAT_ID_NOT_FOUND, NULL);
        return;
    }
    sigstore_t ss = app_sigstore(aw);
    if (ss.redis) {
        sig_job_t *j = malloc(sizeof *j);
        if (j) {
            *j = (sig_job_t){{&SIG_JOB_OPS}, aw, c, req, 1};
            conn_set_owner(c, &j->owner);
            if (sigstore_get_remote(&ss, id, (size_t)idn, on_record, j) == 0)
                return;
            conn_set_owner(c, NULL);
            free(j);
        }
    }
    sig_job_t local = {{&SIG_JOB_OPS}, aw, c, req, 0};
    sigstore_get_local(&ss, id, (size_t)idn, on_record, &local);
}
