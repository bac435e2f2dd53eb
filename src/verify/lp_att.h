/* Internals of the local verifying proxy's attestation side (lp_att.c), shared with the status
 * documents (lp_status.c) and the unit test: the snapshot of the published state that
 * GET /verification and GET / render. The contract with the relay side is lproxy.h; nothing
 * here is for it.
 *
 * Threads: lp_att.c's attestation thread is the only thread that calls the verifier
 * (vr_fetch_report, vr_check_report, vhttp_*, vx_fact: single-threaded code with globals).
 * Everything the other threads read (lp_att_pins, lp_att_kick, lp_att_answer, lp_att_snapshot)
 * goes through one mutex-protected state, copied out under the lock. */
#ifndef VP_VERIFY_LP_ATT_H
#define VP_VERIFY_LP_ATT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/check.h"
#include "core/hex.h"
#include "verify/lproxy.h"

#define LP_ANSWERS 20 /* the last answers kept for the status page */

/* One relayed answer (lp_att_answer): never any prompt or completion text. */
typedef struct lp_answer {
    time_t at;
    char route[64];
    char id[96];
    int stream;
    char check[64]; /* the failed check, or "" when it verified */
} lp_answer_t;

/* What the last verification (successful or not) saw, for the status documents. Strings are
 * "" when unknown. */
typedef struct lp_meas {
    char mrtd[HEX_SIZE(48)], rtmr[4][HEX_SIZE(48)], mrconfigid[HEX_SIZE(48)];
    char compose_hash[200], os_image[200], tcb_status[200], fmspc[13];
    char attestation_mode[32], model[128], tls_note[200];
    char tls_spki[HEX_SIZE(32)];  /* the key the connection presented */
    char tls_bound[HEX_SIZE(32)]; /* the key the (ECDSA) report binds */
    char ecdsa_address[43], ecdsa_public_key[HEX_SIZE(65)], ed25519_key[HEX_SIZE(32)];
    /* GPU evidence: the ECDSA report's nvidia_payload; local: the aggregate of the gpu.* lines
     * (pass, fail, warn, skip or "" when none), nras: of the nras.* lines ("" when not asked) */
    int gpu_count;
    char gpu_arch[32], gpu_source[32], gpu_local[8], gpu_nras[8];
} lp_meas_t;

typedef struct lp_snap {
    char remote[512], listen[300];
    long recheck_s;
    int allow_simulated, allow_http;
    char e2ee[40];     /* --e2ee as given ("" when not: auto) */
    int verified;      /* lp_att_pins would return 1 */
    int in_progress;   /* a verification is running */
    char why[512];     /* when not verified: the reason (one sentence) */
    lp_pins_t pins;    /* valid when verified */
    time_t checked_at; /* when the last verification finished (0: none yet) */
    time_t next_check; /* when the next one is due */
    uint64_t rounds;   /* verifications finished */
    int last_ok;       /* the last verification passed */
    checklist_t cl;    /* its checklist (owned: lp_snap_free) */
    lp_meas_t m;
    char policy_path[512]; /* "" when no --policy */
    char *policy_json;     /* its parsed content as the last verification read it,
                              re-serialised; NULL when none or unreadable (policy_err) */
    char policy_err[200];
    uint64_t n_verified, n_rejected;
    lp_answer_t answers[LP_ANSWERS]; /* newest first */
    size_t n_answers;
} lp_snap_t;

/* A copy of the published state, taken under the lock. Free with lp_snap_free. Any thread. */
void lp_att_snapshot(lp_snap_t *out);
void lp_snap_free(lp_snap_t *s);

/* The result of one verification, as the attestation thread publishes it. */
typedef struct lp_result {
    int ok;
    char why[512];
    lp_pins_t pins; /* generation and verified_at are set when published */
    checklist_t cl; /* moved into the state */
    lp_meas_t m;
    char *policy_json; /* the policy file's content (malloc'd; moved into the state) */
    char policy_err[200];
} lp_result_t;

/* TEST HOOK (tests/unit/test_lp_status.c only): sets the options the documents name (as
 * lp_att_start would, without starting the thread) and publishes r as if a verification had
 * just finished (r->cl is moved: emptied). The real thread publishes through the same code. */
void lp_att_test_publish(const lp_opts_t *o, lp_result_t *r);
/* TEST HOOK: forgets everything (state, counters, answers). */
void lp_att_test_reset(void);

#endif
