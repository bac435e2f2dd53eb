/* Hex and base64 codecs. Pure functions; callers own every buffer. */
#ifndef VP_CORE_HEX_H
#define VP_CORE_HEX_H
#include <stddef.h>
#include <stdint.h>

/* Capacity hex_encode needs for n bytes: 2*n digits and a NUL. */
#define HEX_SIZE(n) (2 * (n) + 1)

/* Writes 2*n lowercase hex digits and a NUL to out (capacity >= HEX_SIZE(n)). */
void hex_encode(char *out, const uint8_t *in, size_t n);
/* The same with uppercase digits (Intel PCS parameters: FMSPC, PCE id, SVNs). */
void hex_encode_upper(char *out, const uint8_t *in, size_t n);
/* Value of one hex digit [0-9a-fA-F], or -1. */
int hex_digit(int c);
/* Strict decode: even length, [0-9a-fA-F] only, no prefix. Returns the byte count written,
 * or -1 when the input is malformed or would not fit in outcap. */
long hex_decode(uint8_t *out, size_t outcap, const char *in, size_t inlen);
/* 1 when s[0..n) is all hex digits, else 0. */
int hex_is_hex(const char *s, size_t n);

/* Standard base64 with padding. b64_encoded_len includes no NUL; b64_encode writes a NUL. */
size_t b64_encoded_len(size_t n);
void b64_encode(char *out, const uint8_t *in, size_t n);
/* Accepts standard alphabet with or without padding; returns bytes written or -1. */
long b64_decode(uint8_t *out, size_t outcap, const char *in, size_t inlen);

#endif
