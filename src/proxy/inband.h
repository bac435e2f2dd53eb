/* In-band signatures (docs/API.md "In-band signatures"; the contract's names are those of
 * src/verify/lproxy.h): the pure pieces the relay uses to say in an answer's head how its
 * signatures come, and to write the five signature fields as headers or trailers.
 *
 * Threads: pure functions and static data; any thread. */
#ifndef VP_PROXY_INBAND_H
#define VP_PROXY_INBAND_H

#include <stddef.h>

#include "core/buf.h"

#define INBAND_HEADER "X-Signature-Inband"

/* INBAND_SIGNATURES: when answers carry their signatures in band. */
enum inband_setting {
    INBAND_REQUEST = 0, /* when the request has X-Signature-Inband: 1 */
    INBAND_ALL,         /* every signed answer */
    INBAND_OFF,         /* never; a request asking is told "unavailable; reason=disabled" */
};

/* What one request gets, decided at its start. */
enum inband_want {
    INBAND_WANT_NO = 0,  /* nothing: the answer's head is as without this feature */
    INBAND_WANT_YES,     /* in band where the answer allows it */
    INBAND_WANT_OFF,     /* asked, but the operator turned it off */
    INBAND_WANT_INVALID, /* the request header is neither "0" nor "1": 400 */
};

/* The request header (present or not, its value) and the setting: what the request gets. */
enum inband_want inband_want(enum inband_setting s, int present, const char *v, size_t n);

/* Why an answer's signatures are not in band ("unavailable; reason=<token>"). */
enum inband_reason {
    INBAND_R_DISABLED = 0, /* INBAND_SIGNATURES=off */
    INBAND_R_TOO_LARGE,    /* a non-streamed body over INBAND_MAX_BODY */
    INBAND_R_NO_TE,        /* a stream, and the request had no TE: trailers */
    INBAND_R_UNSAFE_TEXT,  /* the signed text is not a plain header value (MODEL_NAME) */
    INBAND_R_NO_MEMORY,    /* the body could not be held */
    INBAND_R_BUSY,         /* holding it would pass INBAND_HOLD_TOTAL (all answers together) */
    INBAND_R_N
};
extern const char *const inband_reason_names[INBAND_R_N];

/* How an answer's signatures travel, for the counters. */
enum inband_mode { INBAND_M_HEADERS = 0, INBAND_M_TRAILERS, INBAND_M_N };
extern const char *const inband_mode_names[INBAND_M_N];

/* A signed text that can travel as a header value as it is: visible ASCII and space, not
 * empty, without a leading or trailing space (which a reader would strip). */
int inband_text_safe(const char *t, size_t n);

/* One answer's signature fields; an empty (or NULL) algorithm's pair is left out. */
typedef struct inband_sig {
    const char *text;             /* the signed text, exactly */
    const char *ecdsa, *address;  /* "0x" + 130 hex, "0x" + 40 hex (EIP-55) */
    const char *ed25519, *ed_key; /* 128 hex, 64 hex */
} inband_sig_t;

/* Appends the fields as "Name: value\r\n" lines (the text first). 0, or -1 out of memory. */
int inband_fields(buf_t *out, const inband_sig_t *s);
/* Appends "X-Signature-Inband: unavailable; reason=<token>\r\n". */
int inband_unavailable(buf_t *out, enum inband_reason why);
/* Appends "X-Signature-Inband: trailers\r\nTrailer: <names>\r\n" (the names of the pairs
 * whose keys the signer has). */
int inband_trailers_head(buf_t *out, int has_ecdsa, int has_ed25519);

#endif
