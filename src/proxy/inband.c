/* In-band signatures: the pure pieces (proxy/inband.h). */
#include "proxy/inband.h"

#include <string.h>

const char *const inband_reason_names[INBAND_R_N] = {
    [INBAND_R_DISABLED] = "disabled",    [INBAND_R_TOO_LARGE] = "too-large",
    [INBAND_R_NO_TE] = "no-te-trailers", [INBAND_R_UNSAFE_TEXT] = "unsafe-text",
    [INBAND_R_NO_MEMORY] = "no-memory",  [INBAND_R_BUSY] = "busy",
};

const char *const inband_mode_names[INBAND_M_N] = {
    [INBAND_M_HEADERS] = "headers", [INBAND_M_TRAILERS] = "trailers"};

enum inband_want inband_want(enum inband_setting s, int present, const char *v, size_t n)
{
    int asked = 0;
    if (present) {
        if (n == 1 && v[0] == '1')
            asked = 1;
        else if (!(n == 1 && v[0] == '0'))
            return INBAND_WANT_INVALID;
    }
    if (s == INBAND_ALL)
        return INBAND_WANT_YES;
    if (!asked)
        return INBAND_WANT_NO;
    return s == INBAND_OFF ? INBAND_WANT_OFF : INBAND_WANT_YES;
}

int inband_text_safe(const char *t, size_t n)
{
    if (n == 0 || t[0] == ' ' || t[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] < 0x20 || (unsigned char)t[i] > 0x7e)
            return 0;
    return 1;
}

static int field(buf_t *out, const char *name, const char *v)
{
    return buf_puts(out, name) || buf_puts(out, ": ") || buf_puts(out, v) || buf_puts(out, "\r\n");
}

int inband_fields(buf_t *out, const inband_sig_t *s)
{
    if (field(out, "X-Signature-Text", s->text))
        return -1;
    if (s->ecdsa && s->ecdsa[0] && s->address && s->address[0] &&
        (field(out, "X-Signature-Ecdsa", s->ecdsa) || field(out, "X-Signing-Address", s->address)))
        return -1;
    if (s->ed25519 && s->ed25519[0] && s->ed_key && s->ed_key[0] &&
        (field(out, "X-Signature-Ed25519", s->ed25519) ||
         field(out, "X-Signing-Key-Ed25519", s->ed_key)))
        return -1;
    return 0;
}

int inband_unavailable(buf_t *out, enum inband_reason why)
{
    return buf_printf(out, INBAND_HEADER ": unavailable; reason=%s\r\n", inband_reason_names[why]);
}

int inband_trailers_head(buf_t *out, int has_ecdsa, int has_ed25519)
{
    return buf_puts(out, INBAND_HEADER ": trailers\r\nTrailer: X-Signature-Text") ||
           (has_ecdsa && buf_puts(out, ", X-Signature-Ecdsa, X-Signing-Address")) ||
           (has_ed25519 && buf_puts(out, ", X-Signature-Ed25519, X-Signing-Key-Ed25519")) ||
           buf_puts(out, "\r\n");
}
