// The fixtures of the local verifying proxy's tests (issue 13), tested on their own:
// lib/remote-tls.mjs (vllm-proxy behind a TLS terminator with a certificate made at test time)
// and lib/tamper.mjs (a relay presenting the same key that edits answers). Raw TLS exchanges
// here read exactly the bytes on the wire, trailers included; expected values come from the
// certificates (node's X509Certificate), a direct plain exchange, or ethers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import { startRemote, makeCert, spkiOf } from './lib/remote-tls.mjs';
import { startTamper } from './lib/tamper.mjs';
import { stopAndCheck, signedText } from './lib/common.mjs';
import { checkEcdsaSignature, checkEd25519Signature, randomNonce } from './lib/verify.mjs';
import { MODEL, TOKEN } from './lib/harness.mjs';

let remote, small, smallCert;
const smallSeen = { report: 0 };

/**
 * A tiny HTTP/1.1 server shaped like a vllm-proxy with in-band signatures, deterministic (no
 * Date; the answer's number comes from the request's X-N), so direct and relayed bytes compare.
 */
function startSmall() {
  const srv = http.createServer((req, res) => {
    res.sendDate = false;
    const n = req.headers['x-n'] ?? '0';
    const url = new URL(req.url, 'http://x');
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const sig = { 'X-Signature-Ecdsa': `0xecdsa${n}`, 'X-Signature-Ed25519': `ed${n}`, 'X-Signature-Text': `text${n}` };
      if (req.method === 'POST' && url.pathname === '/v1/chat/completions') {
        const stream = JSON.parse(Buffer.concat(chunks).toString()).stream;
        if (stream) {
          res.writeHead(200, { 'Content-Type': 'text/event-stream', Trailer: Object.keys(sig).join(', '), 'X-Signature-Inband': 'trailers' });
          res.write(`data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n`);
          res.write(`data: {"choices":[{"delta":{"content":"Answer number ${n}"}}]}\n\n`);
          res.write('data: [DONE]\n\n');
          res.addTrailers(sig);
          res.end();
        } else {
          const body = Buffer.from(`{"choices":[{"message":{"role":"assistant","content":"\\"Answer\\" number ${n}"}}]}`);
          res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length, 'X-Signature-Inband': 'headers', ...sig });
          res.end(body);
        }
      } else if (url.pathname.startsWith('/v1/signature/')) {
        const algo = url.searchParams.get('signing_algo') ?? 'ecdsa';
        const body = JSON.stringify({ text: `text${n}`, signature: `sig${n}`, signing_address: 'addr', signing_algo: algo });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      } else if (url.pathname === '/v1/attestation/report') {
        smallSeen.report++;
        const body = JSON.stringify({ request_nonce: url.searchParams.get('nonce') });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.writeHead(404, { 'Content-Length': 0 });
        res.end();
      }
    });
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

before(async () => {
  remote = await startRemote();
  small = await startSmall();
  smallCert = makeCert('localhost');
});
after(async () => {
  small?.close();
  if (remote) await stopAndCheck({ stop: () => remote.stop(), proxy: remote.stack.proxy, mock: remote.stack.mock });
});

/** The parts of a raw HTTP/1.1 answer: head fields, de-chunked body, trailer fields. */
function parseRaw(raw) {
  const h = raw.indexOf('\r\n\r\n');
  const lines = raw.subarray(0, h).toString('latin1').split('\r\n');
  const status = Number(lines[0].split(' ')[1]);
  const headers = {};
  for (const l of lines.slice(1)) { const i = l.indexOf(':'); headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
  let rest = raw.subarray(h + 4);
  const trailers = {};
  let body;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts = [];
    for (;;) {
      const e = rest.indexOf('\r\n');
      if (e < 0) throw new Error(`truncated chunked body: ${JSON.stringify(raw.toString().slice(-200))}`);
      const size = parseInt(rest.subarray(0, e).toString(), 16);
      rest = rest.subarray(e + 2);
      if (size === 0) {
        for (const l of rest.toString('latin1').split('\r\n').filter(Boolean)) {
          const i = l.indexOf(':');
          trailers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
        }
        break;
      }
      parts.push(rest.subarray(0, size));
      rest = rest.subarray(size + 2);
    }
    body = Buffer.concat(parts);
  } else body = rest;
  return { status, headers, body, trailers };
}

/** One request on a new connection (TLS when ca or tls given), all bytes until the peer closes. */
function exchange(port, { method = 'GET', path = '/', body, headers = {}, ca, tlsOpts } = {}) {
  return new Promise((resolve, reject) => {
    const b = body == null ? Buffer.alloc(0) : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const hs = { Host: `127.0.0.1:${port}`, Authorization: `Bearer ${TOKEN}`, Connection: 'close', ...headers };
    if (b.length || method === 'POST') { hs['Content-Type'] = 'application/json'; hs['Content-Length'] = b.length; }
    const req = Buffer.concat([Buffer.from(`${method} ${path} HTTP/1.1\r\n${Object.entries(hs).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`), b]);
    const useTls = ca || tlsOpts;
    const sock = useTls ? tls.connect({ port, host: '127.0.0.1', ca, ...tlsOpts }) : net.connect({ port, host: '127.0.0.1' });
    const got = [];
    let peerSpki = null;
    sock.once(useTls ? 'secureConnect' : 'connect', () => {
      if (useTls) peerSpki = spkiOf(sock.getPeerX509Certificate().toString());
      sock.write(req);
    });
    sock.on('data', (d) => got.push(d));
    sock.on('error', reject);
    sock.on('close', () => {
      const raw = Buffer.concat(got);
      resolve({ raw, requestBody: b, peerSpki, ...(raw.length ? parseRaw(raw) : {}) });
    });
  });
}

const chat = (stream, n = '1') => ({
  method: 'POST', path: '/v1/chat/completions', headers: { 'X-N': n, ...(stream ? { TE: 'trailers' } : {}) },
  body: { model: MODEL, messages: [{ role: 'user', content: 'hello' }], stream, max_tokens: 8 },
});

/**
 * Node's https client, trusting only the remote's certificate (what a pin amounts to here).
 * No TLS session is resumed (a resumed session carries no certificate to look at).
 */
function httpsGet(url, ca, agent = new https.Agent({ maxCachedSessions: 0 })) {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { ca, agent, headers: { Authorization: `Bearer ${TOKEN}` } }, (res) => {
      const c = [];
      // node gives the peer certificate of a reused keep-alive socket only once: kept on it
      const x = res.socket.getPeerX509Certificate();
      const spki = x ? spkiOf(x.toString()) : res.socket.vpSpki;
      res.socket.vpSpki = spki;
      res.on('data', (d) => c.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(c), spki }));
    });
    r.on('error', reject);
    r.end();
  });
}

test('makeCert: P-256, self-signed, CN=localhost, SAN IP:127.0.0.1, SPKI hash as reports compute it', () => {
  const c = makeCert('localhost');
  const x = new X509Certificate(c.certPem);
  assert.match(x.subject, /CN=localhost/);
  assert.match(x.subjectAltName, /IP Address:127\.0\.0\.1/);
  assert.ok(x.checkIssued(x) && x.verify(x.publicKey), 'self-signed');
  assert.equal(x.publicKey.asymmetricKeyDetails.namedCurve, 'prime256v1');
  assert.ok(x.checkPrivateKey(crypto.createPrivateKey(c.keyPem)), 'key matches');
  const der = crypto.createPublicKey(c.keyPem).export({ type: 'spki', format: 'der' });
  assert.equal(c.spkiSha256, crypto.createHash('sha256').update(der).digest('hex'));
  assert.notEqual(makeCert('localhost').spkiSha256, c.spkiSha256, 'a fresh key each time');
});

test('startRemote: https with the certificate trusted, not without; the report binds its key', async () => {
  assert.match(remote.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, maxCachedSessions: 0 });
  const r = await httpsGet(`${remote.url}/v1/attestation/report?version=2&nonce=${randomNonce()}`, remote.certPem, agent);
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.spki, remote.spkiSha256);
  assert.equal(JSON.parse(r.body).tls_cert_fingerprint, remote.spkiSha256);
  const conns = remote.tlsConnections();
  await httpsGet(`${remote.url}/v1/models`, remote.certPem, agent);
  assert.equal(remote.tlsConnections(), conns, 'keep-alive: the second request reused the TLS connection');
  agent.destroy();
  await assert.rejects(httpsGet(`${remote.url}/v1/models`, undefined), /self[- ]signed|unable to verify/i);
  const plain = await fetch(`${remote.plainUrl}/v1/models`, { headers: { Authorization: `Bearer ${remote.token}` } });
  assert.equal(plain.status, 200);
});

test('startRemote: answers over https are signed over the exact bytes; engineRequests counts them', async () => {
  const e0 = await remote.engineRequests();
  for (const stream of [false, true]) {
    const a = await exchange(remote.tlsPort, { ...chat(stream), ca: remote.certPem });
    assert.equal(a.status, 200, a.raw.toString().slice(0, 300));
    if (stream) assert.match(a.body.toString(), /data: \[DONE\]/);
    const id = stream ? JSON.parse(a.body.toString().split('\n')[0].slice(6)).id : JSON.parse(a.body).id;
    for (const algo of ['ecdsa', 'ed25519']) {
      const s = await exchange(remote.tlsPort, { path: `/v1/signature/${id}?signing_algo=${algo}`, ca: remote.certPem });
      assert.equal(s.status, 200);
      (algo === 'ecdsa' ? checkEcdsaSignature : checkEd25519Signature)(JSON.parse(s.body), signedText(a.requestBody, a.body));
    }
  }
  assert.equal(await remote.engineRequests() - e0, 2, 'two inference requests reached the engine');
  const rr = await remote.remoteRequests();
  assert.ok(rr.chat_completions >= 2 && rr.signature >= 4, JSON.stringify(rr));
});

test('startRemote: in-band signatures arrive over TLS, trailers of a stream included (servers that offer them)', async (t) => {
  for (const stream of [false, true]) {
    const a = await exchange(remote.tlsPort, { ...chat(stream), headers: { 'X-Signature-Inband': '1', ...(stream ? { TE: 'trailers' } : {}) }, ca: remote.certPem });
    assert.equal(a.status, 200);
    const how = a.headers['x-signature-inband'];
    if (how === undefined) return t.skip('this vllm-proxy sends no in-band signatures (issue 13, server side)');
    assert.equal(how, stream ? 'trailers' : 'headers');
    const f = stream ? a.trailers : a.headers;
    const text = signedText(a.requestBody, a.body);
    checkEcdsaSignature({ signing_algo: 'ecdsa', text: f['x-signature-text'], signature: f['x-signature-ecdsa'], signing_address: f['x-signing-address'] }, text);
    checkEd25519Signature({ signing_algo: 'ed25519', text: f['x-signature-text'], signature: f['x-signature-ed25519'], signing_address: f['x-signing-key-ed25519'] }, text);
  }
});

test('tamper pass: byte-exact, trailers included (small server), and a working relay to the remote', async () => {
  const target = { port: small.address().port, ...smallCert };
  const t = await startTamper({ target, mode: 'pass' });
  try {
    for (const stream of [false, true]) {
      const direct = await exchange(target.port, chat(stream, '7'));
      const via = await exchange(t.port, { ...chat(stream, '7'), ca: smallCert.certPem });
      assert.equal(via.peerSpki, smallCert.spkiSha256, 'the target\'s own key');
      assert.ok(via.raw.equals(direct.raw), `byte-exact (stream=${stream})`);
      if (stream) assert.equal(via.trailers['x-signature-ecdsa'], '0xecdsa7', 'trailers relayed');
    }
    assert.equal(t.stats().requests['/v1/chat/completions'], 2);
  } finally { await t.stop(); }

  const tr = await startTamper({ target: remote });
  try {
    for (const stream of [false, true]) {
      const a = await exchange(tr.port, { ...chat(stream), ca: remote.certPem });
      assert.equal(a.peerSpki, remote.spkiSha256);
      assert.equal(a.status, 200);
      const id = stream ? JSON.parse(a.body.toString().split('\n')[0].slice(6)).id : JSON.parse(a.body).id;
      const s = await exchange(tr.port, { path: `/v1/signature/${id}`, ca: remote.certPem });
      checkEcdsaSignature(JSON.parse(s.body), signedText(a.requestBody, a.body));
    }
  } finally { await tr.stop(); }
});

/** Indices where two equal-length buffers differ. */
const diffs = (a, b) => { assert.equal(a.length, b.length, 'same length'); const d = []; for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d.push(i); return d; };

test('tamper flip-byte: one byte of the content changes, JSON stays valid, the signature no longer matches', async () => {
  const target = { port: small.address().port, ...smallCert };
  const t = await startTamper({ target, mode: 'flip-byte' });
  try {
    for (const stream of [false, true]) {
      const direct = await exchange(target.port, chat(stream, '3'));
      const via = await exchange(t.port, { ...chat(stream, '3'), ca: smallCert.certPem });
      const d = diffs(via.body, direct.body);
      assert.equal(d.length, 1, `one byte differs (stream=${stream})`);
      const text = via.body.toString();
      if (stream) {
        const ev = text.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
        assert.equal(ev[1].choices[0].delta.content, 'answer number 3');
        assert.deepEqual(via.trailers, direct.trailers, 'trailers untouched');
      } else {
        assert.equal(JSON.parse(text).choices[0].message.content, '"answer" number 3', 'escapes skipped, first letter flipped');
      }
    }
    // GET answers are not touched
    const g = await exchange(t.port, { path: '/v1/signature/x', headers: { 'X-N': '3' }, ca: smallCert.certPem });
    assert.equal(JSON.parse(g.body).text, 'text3');
    assert.equal(t.stats().flipped, 2);
  } finally { await t.stop(); }

  const tr = await startTamper({ target: remote, mode: 'flip-byte' });
  try {
    for (const stream of [false, true]) {
      const a = await exchange(tr.port, { ...chat(stream), ca: remote.certPem });
      assert.equal(a.status, 200);
      const id = stream ? JSON.parse(a.body.toString().split('\n')[0].slice(6)).id : JSON.parse(a.body).id;
      if (!stream) JSON.parse(a.body);
      const s = JSON.parse((await exchange(tr.port, { path: `/v1/signature/${id}`, ca: remote.certPem })).body);
      checkEcdsaSignature(s); // a valid signature ...
      assert.notEqual(s.text, signedText(a.requestBody, a.body), '... over other bytes than those received');
      assert.equal(s.text.split(':')[0], signedText(a.requestBody, a.body).split(':')[0], 'the request hash still matches');
    }
    assert.equal(tr.stats().flipped, 2);
  } finally { await tr.stop(); }
});

test('tamper drop-trailer: the chunked answer ends without its trailer fields', async () => {
  const target = { port: small.address().port, ...smallCert };
  const t = await startTamper({ target, mode: 'drop-trailer' });
  try {
    const direct = await exchange(target.port, chat(true, '4'));
    const via = await exchange(t.port, { ...chat(true, '4'), ca: smallCert.certPem });
    assert.ok(Object.keys(direct.trailers).length === 3, 'the server sent three trailer fields');
    assert.deepEqual(via.trailers, {});
    assert.ok(via.body.equals(direct.body), 'body unchanged');
    assert.ok(via.raw.subarray(-5).equals(Buffer.from('0\r\n\r\n')), 'terminating chunk kept');
    assert.equal(via.headers.trailer, direct.headers.trailer, 'the head still announces them');
    assert.equal(t.stats().droppedTrailers, 1);
  } finally { await t.stop(); }
});

test('tamper swap-signature: the previous answer\'s signatures in headers, trailers and the signature route', async () => {
  const target = { port: small.address().port, ...smallCert };
  for (const stream of [false, true]) {
    const t = await startTamper({ target, mode: 'swap-signature' });
    try {
      const first = await exchange(t.port, { ...chat(stream, `${stream}a`), ca: smallCert.certPem });
      const second = await exchange(t.port, { ...chat(stream, `${stream}b`), ca: smallCert.certPem });
      const f = stream ? first.trailers : first.headers, s = stream ? second.trailers : second.headers;
      assert.equal(f['x-signature-ecdsa'], `0xecdsa${stream}a`, 'the first passes');
      for (const k of ['x-signature-ecdsa', 'x-signature-ed25519', 'x-signature-text']) assert.equal(s[k], f[k], `${k} swapped`);
      assert.match(second.body.toString(), new RegExp(`number ${stream}b`), 'body untouched');
      assert.equal(t.stats().swapped, 3);
    } finally { await t.stop(); }
  }
  const t = await startTamper({ target, mode: 'swap-signature' });
  try {
    const a = await exchange(t.port, { path: '/v1/signature/1', headers: { 'X-N': 'p' }, ca: smallCert.certPem });
    const b = await exchange(t.port, { path: '/v1/signature/2', headers: { 'X-N': 'q' }, ca: smallCert.certPem });
    assert.equal(JSON.parse(a.body).signature, 'sigp');
    assert.equal(JSON.parse(b.body).signature, 'sigp', 'signature route body swapped');
    assert.equal(Number(b.headers['content-length']), b.body.length);
  } finally { await t.stop(); }

  const tr = await startTamper({ target: remote, mode: 'swap-signature' });
  try {
    const got = [];
    for (let i = 0; i < 2; i++) {
      const a = await exchange(tr.port, { ...chat(false), ca: remote.certPem });
      const s = JSON.parse((await exchange(tr.port, { path: `/v1/signature/${JSON.parse(a.body).id}`, ca: remote.certPem })).body);
      checkEcdsaSignature(s);
      got.push({ want: signedText(a.requestBody, a.body), text: s.text });
    }
    assert.equal(got[0].text, got[0].want, 'the first passes');
    assert.equal(got[1].text, got[0].want, 'the second carries the first\'s valid signature');
    assert.notEqual(got[1].text, got[1].want);
  } finally { await tr.stop(); }
});

test('tamper replay-report: later reports are the first one, whatever the nonce', async () => {
  const tr = await startTamper({ target: remote, mode: 'replay-report' });
  try {
    const before_ = (await remote.remoteRequests()).attestation_report ?? 0;
    const n1 = randomNonce(), n2 = randomNonce();
    const r1 = JSON.parse((await exchange(tr.port, { path: `/v1/attestation/report?version=2&nonce=${n1}`, ca: remote.certPem })).body);
    const r2 = JSON.parse((await exchange(tr.port, { path: `/v1/attestation/report?version=2&nonce=${n2}`, ca: remote.certPem })).body);
    assert.equal(r1.request_nonce, n1);
    assert.equal(r2.request_nonce, n1, 'the old nonce comes back');
    assert.equal(((await remote.remoteRequests()).attestation_report ?? 0) - before_, 1, 'the remote saw one');
    assert.equal(tr.stats().replayed, 1);
    assert.equal(tr.stats().requests['/v1/attestation/report'], 2);
  } finally { await tr.stop(); }
});

test('tamper other-cert: another key, refused by a client that trusts only the remote\'s', async () => {
  const tr = await startTamper({ target: remote, mode: 'other-cert' });
  try {
    await assert.rejects(exchange(tr.port, { path: '/v1/models', ca: remote.certPem }), /self[- ]signed|signature|verify|certificate/i);
    const a = await exchange(tr.port, { path: '/v1/models', tlsOpts: { rejectUnauthorized: false } });
    assert.equal(a.peerSpki, tr.otherSpkiSha256);
    assert.notEqual(a.peerSpki, remote.spkiSha256);
    assert.equal(a.status, 200, 'still a working relay');
    tr.setMode('pass');
    assert.equal((await exchange(tr.port, { path: '/v1/models', ca: remote.certPem })).peerSpki, remote.spkiSha256);
  } finally { await tr.stop(); }
});

test('rotateCert: new connections see the new key, reports bind it, the tamper relay follows', async () => {
  const old = remote.spkiSha256;
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, maxCachedSessions: 0 });
  assert.equal((await httpsGet(`${remote.url}/v1/models`, remote.certPem, agent)).spki, old);
  const oldPem = remote.certPem;
  const neu = await remote.rotateCert();
  assert.notEqual(neu, old);
  assert.equal(remote.spkiSha256, neu);
  assert.equal((await httpsGet(`${remote.url}/v1/models`, oldPem, agent)).spki, old, 'an open connection keeps the old key');
  agent.destroy();
  await assert.rejects(httpsGet(`${remote.url}/v1/models`, oldPem), /self[- ]signed|signature|verify|certificate/i);
  const r = await httpsGet(`${remote.url}/v1/attestation/report?version=2&nonce=${randomNonce()}`, remote.certPem);
  assert.equal(r.spki, neu);
  assert.equal(JSON.parse(r.body).tls_cert_fingerprint, neu);
  const tr = await startTamper({ target: remote });
  try {
    assert.equal((await exchange(tr.port, { path: '/v1/models', ca: remote.certPem })).peerSpki, neu);
  } finally { await tr.stop(); }
});
