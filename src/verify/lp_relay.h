/* The local verifying proxy's relay (lp_relay.c): one local connection served in the calling
 * thread, from its first request to its close (llhttp parsing, Host/Origin/local-token checks,
 * the routes, the pinned relay to the remote and the verification of every answer). */
#ifndef VP_VERIFY_LP_RELAY_H
#define VP_VERIFY_LP_RELAY_H

#include "verify/lproxy.h"

/* Limits of one local request and the phase timeouts (docs/VERIFY.md). */
#define LP_MAX_HEAD (64u * 1024u)          /* request line + headers */
#define LP_MAX_HEADERS 128u
#define LP_MAX_BODY (64u * 1024u * 1024u)  /* request body, and a held (non-streamed) answer */
#define LP_HEAD_MS 30000                   /* from a request's first byte to its headers' end */
#define LP_BODY_MS 300000                  /* the whole body */
#define LP_IDLE_MS 60000                   /* an idle keep-alive connection */
#define LP_SEND_MS 30000                   /* one write to the app that does not progress */

/* Once, before any connection: the options (kept by pointer) and the actual port listened on
 * (for the Host and Origin checks). 0, or -1 (message on stderr). */
int lp_relay_init(const lp_opts_t *o, int port);
/* The proxy is stopping (SIGTERM): connections waiting for their next request close now,
 * and those with a request under way close after its answer. Any thread, once. */
void lp_relay_stop(void);
/* Serves one accepted connection until it closes; closes fd. Any thread. */
void lp_conn_serve(int fd);
/* Answers 503 (too many connections) and closes fd. */
void lp_reply_busy(int fd);

#endif
