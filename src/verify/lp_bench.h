/* `vllm-proxy-verify bench-local-proxy`: not a user command (it is left out of --help). The
 * baselines bench/local-proxy.mjs runs in the same run as the local proxy it measures
 * (docs/PERFORMANCE.md, "Local verifying proxy"): what the local proxy cannot avoid doing per
 * answer, measured alone in one process:
 *   - libcurl reading the same streams from the same remote with the relay's options (TLS, the
 *     pinned key, HTTP/1.1, in-band signatures asked, chunked decoding, trailers) and a write
 *     callback that only counts: CPU (getrusage) per stream;
 *   - SHA-256 over the bytes of one such answer: CPU per answer;
 *   - the two signature checks of one answer (the signed text against the hashes, then
 *     secp256k1 recovery to the address and Ed25519 verification): microseconds each.
 * Output: one JSON object on stdout. */
#ifndef VP_VERIFY_LP_BENCH_H
#define VP_VERIFY_LP_BENCH_H

/* argv[0] is "bench-local-proxy". Exit code: 0, or 1 with a message on stderr. */
int lp_bench_main(int argc, char **argv);

#endif
