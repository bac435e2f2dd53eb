// A "remote" vllm-proxy as the local verifying proxy (issue 13) sees one: mock-vllm, vllm-proxy
// (simulated attestation, TLS_CERT_PATH set) and, in front of it, a TLS terminator with a
// certificate made here with openssl (P-256, self-signed, CN=localhost, SAN IP:127.0.0.1).
//
// The terminator is node's tls.createServer piping the raw bytes of each TLS connection to one
// plain connection to vllm-proxy, and not nginx: nginx (1.22, the suite's) drops the trailers
// of a chunked upstream answer (it forwards the `Trailer:` header and ends the body with an
// empty trailer section), and the in-band signatures of a streamed answer travel as trailers.
// Byte piping keeps everything else vllm-proxy sends exactly as sent: keep-alive (one upstream
// connection per TLS connection, for as long as the client keeps it), chunk framing, trailers.
//
// startRemote() → {url, plainUrl, port (vllm-proxy's), tlsPort, token, certPem, keyPem,
// certPath, spkiSha256, rotateCert(), engineRequests(), tlsConnections(), stack, stop()}.

import crypto, { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { startStack, tmpDir, TOKEN, sleep } from './harness.mjs';
import { getPath } from './http.mjs';

/** hex sha256 of the DER SubjectPublicKeyInfo of a PEM certificate (what reports bind). */
export function spkiOf(certPem) {
  const der = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(der).digest('hex');
}

/**
 * A fresh P-256 key and a self-signed certificate for it, made with openssl:
 * CN=cn, SAN IP:127.0.0.1 and DNS:localhost, valid two days. → {certPem, keyPem, spkiSha256}.
 */
export function makeCert(cn = 'localhost') {
  const dir = tmpDir('vp-cert-');
  try {
    const key = path.join(dir, 'key.pem'), crt = path.join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', key, '-out', crt, '-days', '2', '-subj', `/CN=${cn}`,
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    const certPem = fs.readFileSync(crt, 'utf8');
    const keyPem = fs.readFileSync(key, 'utf8');
    return { certPem, keyPem, spkiSha256: spkiOf(certPem) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes a file the way certbot replaces one: a new file renamed over the old. */
function install(file, content) {
  fs.writeFileSync(`${file}.new`, content, { mode: 0o600 });
  fs.renameSync(`${file}.new`, file);
}

/**
 * A TLS server on a free loopback port that pipes each connection's bytes to
 * 127.0.0.1:targetPort. → {server, port, connections(), setCert(cert), close()}.
 */
export async function startTlsPipe(targetPort, cert) {
  const sockets = new Set();
  let accepted = 0;
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem, ALPNProtocols: ['http/1.1'] }, (c) => {
    accepted++;
    const u = net.connect({ port: targetPort, host: '127.0.0.1' });
    c.setNoDelay(true);
    u.setNoDelay(true);
    sockets.add(c);
    sockets.add(u);
    const done = () => { c.destroy(); u.destroy(); sockets.delete(c); sockets.delete(u); };
    c.on('error', done);
    u.on('error', done);
    c.on('close', done);
    u.on('close', done);
    c.pipe(u);
    u.pipe(c);
  });
  server.on('tlsClientError', () => { /* a client that refused our certificate */ });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    server,
    port: server.address().port,
    connections: () => accepted,
    setCert(c) { server.setSecureContext({ cert: c.certPem, key: c.keyPem, ALPNProtocols: ['http/1.1'] }); },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * Starts the remote. opts: env (vllm-proxy's environment, added to the suite's: ATTESTATION
 * simulated, TLS_CERT_PATH, TLS_CERT_CHECK_INTERVAL=1), proxyArgs, mock (startMock options,
 * e.g. {args: ['--tokens', '512']}).
 */
export async function startRemote({ env = {}, proxyArgs, mock } = {}) {
  const dir = tmpDir('vp-remote-');
  const certPath = path.join(dir, 'cert.pem');
  const keyPath = path.join(dir, 'key.pem');
  let cert = makeCert('localhost');
  install(keyPath, cert.keyPem);
  install(certPath, cert.certPem);
  let stack, pipe, engineBase = 0;
  try {
    stack = await startStack({
      mock: mock ?? {},
      proxy: { env: { TLS_CERT_PATH: certPath, TLS_CERT_CHECK_INTERVAL: 1, HEALTH_CHECK_INTERVAL: 0, ...env }, ...(proxyArgs ? { args: proxyArgs } : {}) },
    });
    pipe = await startTlsPipe(stack.proxy.port, cert);
    engineBase = (await stack.mock.stats()).requests; // startMock's readiness probe
  } catch (e) {
    if (stack) await stack.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const r = {
    url: `https://127.0.0.1:${pipe.port}`,
    plainUrl: `http://127.0.0.1:${stack.proxy.port}`,
    port: stack.proxy.port,
    tlsPort: pipe.port,
    token: TOKEN,
    certPath,
    keyPath,
    stack,
    get certPem() { return cert.certPem; },
    get keyPem() { return cert.keyPem; },
    get spkiSha256() { return cert.spkiSha256; },
    /** TLS connections the terminator accepted so far. */
    tlsConnections: () => pipe.connections(),
    /**
     * A new key and certificate: written over the files (vllm-proxy re-reads TLS_CERT_PATH)
     * and presented by the terminator to every new connection (open ones keep the old).
     * Resolves with the new spkiSha256 once a fresh-nonce report binds it.
     */
    async rotateCert() {
      cert = makeCert('localhost');
      install(keyPath, cert.keyPem);
      install(certPath, cert.certPem);
      pipe.setCert(cert);
      const t0 = Date.now();
      for (;;) {
        const nonce = crypto.randomBytes(32).toString('hex');
        const res = await getPath(stack.proxy.port, `/v1/attestation/report?version=2&nonce=${nonce}`);
        if (res.status === 200 && JSON.parse(res.body.toString()).tls_cert_fingerprint === cert.spkiSha256) break;
        if (Date.now() - t0 > 10000) throw new Error('rotateCert: the remote does not bind the new key after 10 s');
        await sleep(100);
      }
      return cert.spkiSha256;
    },
    /**
     * Requests the engine (mock-vllm) received since the remote started: its /mock/stats
     * `requests` counts every request but its own /mock/* routes, and vllm-proxy sends none of
     * its own here (HEALTH_CHECK_INTERVAL=0 unless env says otherwise), so every one was
     * relayed; note that a GET /v1/metrics to the remote forwards one (GET /metrics).
     */
    async engineRequests() {
      return (await stack.mock.stats()).requests - engineBase;
    },
    /**
     * What vllm-proxy itself handled, by route (vllm_proxy_requests_total summed over status:
     * chat_completions, completions, attestation_report, signature, models, ...), read from
     * its own GET /metrics (which reaches no engine and counts itself under `metrics`).
     */
    async remoteRequests() {
      const res = await getPath(stack.proxy.port, '/metrics');
      if (res.status !== 200) throw new Error(`remote /metrics: ${res.status}`);
      const out = {};
      for (const m of res.body.toString().matchAll(/^vllm_proxy_requests_total\{route="([a-z_]+)",status="[^"]*"\} (\d+)$/gm)) {
        out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
      }
      return out;
    },
    async stop() {
      await pipe.close();
      await stack.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return r;
}
