// In-band signatures (issue 13, docs/API.md "In-band signatures"): the answer's head (or the
// chunked body's trailers) carries the signed text and both signatures. Everything is read
// from the raw socket (hand-written HTTP/1.1, our own chunked decoder that keeps the
// trailers) and checked independently: sha256 of the exact request and body bytes with
// node's crypto, the ECDSA signature with ethers.verifyMessage, Ed25519 with @noble/curves,
// the keys against a fresh attestation report, the record against GET /v1/signature/{id}.
// Optional: VP_BASELINE_PROXY=<a vllm-proxy built before this feature> compares the heads of
// requests that do not ask, byte for byte (Date and X-Request-Id aside).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

import { MODEL, startMock, startProxy, cleanExitProblems } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';
import { attestedAddresses, fetchSignature, stopAndCheck } from './lib/common.mjs';
import { ethers, ed25519, hexToBytes, utf8ToBytes } from './lib/verify.mjs';
import * as near from './lib/near-client.mjs';

const FIELDS = ['x-signature-text', 'x-signature-ecdsa', 'x-signing-address', 'x-signature-ed25519', 'x-signing-key-ed25519'];
const TRAILER_LIST = 'X-Signature-Text, X-Signature-Ecdsa, X-Signing-Address, X-Signature-Ed25519, X-Signing-Key-Ed25519';
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * One HTTP/1.1 exchange on a fresh socket, parsed by hand: {status, head (the raw head text),
 * lines ([name, value] in order), headers (lower-case name -> value), body (the exact body
 * bytes, de-chunked), chunked, trailers (lower-case name -> value, or null when the body was
 * not chunked), rawTrailer (the trailer section's text)}.
 */
function exchange(port, { method = 'POST', path, headers = {}, body = null, timeoutMs = 15000 }) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const bodyBuf = body === null ? null : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    let req = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer test_token\r\n`;
    if (bodyBuf) req += `Content-Type: application/json\r\nContent-Length: ${bodyBuf.length}\r\n`;
    for (const [k, v] of Object.entries(headers)) req += `${k}: ${v}\r\n`;
    req += '\r\n';
    sock.write(bodyBuf ? Buffer.concat([Buffer.from(req), bodyBuf]) : req);
    let buf = Buffer.alloc(0);
    let res = null;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no complete answer in ${timeoutMs} ms: ${buf.toString('latin1').slice(0, 400)}`)); }, timeoutMs);
    const done = (v) => { clearTimeout(timer); sock.destroy(); resolve(v); };
    const fail = (e) => { clearTimeout(timer); sock.destroy(); reject(e); };
    const parse = (eof) => {
      if (!res) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const [statusLine, ...rest] = head.split('\r\n');
        const lines = rest.map((l) => { const i = l.indexOf(':'); return [l.slice(0, i), l.slice(i + 1).trim()]; });
        const h = {};
        for (const [k, v] of lines) {
          const n = k.toLowerCase();
          assert.ok(!(n in h), `header ${k} sent once`);
          h[n] = v;
        }
        res = { status: Number(statusLine.split(' ')[1]), head, lines, headers: h, chunks: [], trailers: null, rawTrailer: '' };
        res.chunked = /chunked/i.test(h['transfer-encoding'] ?? '');
        buf = buf.subarray(end + 4);
        res.pos = 0;
      }
      if (!res.chunked) {
        const cl = res.headers['content-length'];
        if (cl !== undefined && buf.length >= Number(cl)) return done({ ...res, body: buf.subarray(0, Number(cl)) });
        if (cl === undefined && eof) return done({ ...res, body: buf });
        return;
      }
      // chunked: size line, data, CRLF ... 0 CRLF, trailer fields, CRLF
      for (;;) {
        const nl = buf.indexOf('\r\n', res.pos);
        if (nl < 0) return;
        const line = buf.subarray(res.pos, nl).toString('latin1');
        assert.match(line, /^[0-9a-f]+$/, `chunk size line ${JSON.stringify(line)}`);
        const size = parseInt(line, 16);
        if (size === 0) {
          const tend = buf.indexOf('\r\n\r\n', nl);
          const empty = buf.subarray(nl + 2, nl + 4).toString('latin1') === '\r\n';
          if (!empty && tend < 0) return;
          const raw = empty ? '' : buf.subarray(nl + 2, tend).toString('latin1');
          const tr = {};
          for (const l of raw ? raw.split('\r\n') : []) { const i = l.indexOf(':'); tr[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
          return done({ ...res, body: Buffer.concat(res.chunks), trailers: tr, rawTrailer: raw });
        }
        if (buf.length < nl + 2 + size + 2) return;
        res.chunks.push(buf.subarray(nl + 2, nl + 2 + size));
        assert.equal(buf.subarray(nl + 2 + size, nl + 4 + size).toString('latin1'), '\r\n', 'chunk data ends with CRLF');
        res.pos = nl + 4 + size;
      }
    };
    sock.on('data', (d) => { buf = Buffer.concat([buf, d]); try { parse(false); } catch (e) { fail(e); } });
    sock.on('end', () => { try { parse(true); } catch (e) { fail(e); } if (!res || res) fail(new Error(`connection closed before a complete answer: ${buf.toString('latin1').slice(0, 300)}`)); });
    sock.on('error', fail);
  });
}

const ASK = { 'X-Signature-Inband': '1' };
const ASK_TE = { 'X-Signature-Inband': '1', TE: 'trailers' };

/** Checks the five fields (from the head or the trailers) independently; returns them. */
function checkFields(f, reqBytes, bodyBytes, { attested, model = null } = {}) {
  for (const k of FIELDS) assert.ok(f[k], `${k} is there`);
  const text = `${model ? `${model}:` : ''}${sha(reqBytes)}:${sha(bodyBytes)}`;
  assert.equal(f['x-signature-text'], text, 'X-Signature-Text is the signed-text format over the exact bytes');
  assert.match(f['x-signature-ecdsa'], /^0x[0-9a-f]{130}$/);
  assert.equal(ethers.verifyMessage(text, f['x-signature-ecdsa']), f['x-signing-address'], 'ethers recovers X-Signing-Address');
  assert.equal(f['x-signing-address'], attested.ecdsa, "X-Signing-Address is the report's signing_address");
  assert.match(f['x-signature-ed25519'], /^[0-9a-f]{128}$/);
  assert.equal(f['x-signing-key-ed25519'], attested.ed25519, "X-Signing-Key-Ed25519 is the report's Ed25519 key");
  assert.ok(ed25519.verify(hexToBytes(f['x-signature-ed25519']), utf8ToBytes(text), hexToBytes(f['x-signing-key-ed25519'])),
    'Ed25519 verifies with @noble/curves');
  // a one-byte change of the body does not verify
  const bad = `${model ? `${model}:` : ''}${sha(reqBytes)}:${sha(Buffer.concat([bodyBytes, Buffer.from(' ')]))}`;
  assert.notEqual(ethers.verifyMessage(bad, f['x-signature-ecdsa']), f['x-signing-address']);
  assert.equal(ed25519.verify(hexToBytes(f['x-signature-ed25519']), utf8ToBytes(bad), hexToBytes(f['x-signing-key-ed25519'])), false);
  return f;
}

/** The same record is served by the signature route (both algorithms). */
async function checkRoute(port, id, f) {
  const e = jsonOf(await fetchSignature(port, id));
  assert.equal(e.text, f['x-signature-text'], 'the route serves the same text');
  assert.equal(e.signature, f['x-signature-ecdsa'], 'the route serves the same ECDSA signature');
  assert.equal(e.signing_address, f['x-signing-address']);
  const d = jsonOf(await fetchSignature(port, id, 'ed25519'));
  assert.equal(d.signature, f['x-signature-ed25519'], 'the route serves the same Ed25519 signature');
  assert.equal(d.signing_address, f['x-signing-key-ed25519']);
}

/** A record checked through the signature route only (the fallbacks). */
async function checkRouteOnly(port, id, reqBytes, bodyBytes, { attested, model = null } = {}) {
  const e = jsonOf(await fetchSignature(port, id));
  const d = jsonOf(await fetchSignature(port, id, 'ed25519'));
  checkFields({ 'x-signature-text': e.text, 'x-signature-ecdsa': e.signature, 'x-signing-address': e.signing_address,
    'x-signature-ed25519': d.signature, 'x-signing-key-ed25519': d.signing_address }, reqBytes, bodyBytes, { attested, model });
}

function firstEventId(body) {
  const m = /^data: (\{.*)$/m.exec(body.toString());
  return JSON.parse(m[1]).id;
}

function noInbandFields(r) {
  assert.equal(r.headers['x-signature-inband'], undefined, 'no X-Signature-Inband');
  for (const k of [...FIELDS, 'trailer']) assert.equal(r.headers[k], undefined, `no ${k}`);
  if (r.trailers) assert.deepEqual(r.trailers, {}, 'no trailers');
}

const CHAT = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'hello in band' }], max_tokens: 8, ...extra });

// ---- the default setting (INBAND_SIGNATURES=request) ----

let mock, A, attested;
before(async () => {
  mock = await startMock();
  A = await startProxy(mock.url);
  attested = await attestedAddresses(A.port);
});
after(async () => { await stopAndCheck({ proxy: A, mock, stop: async () => { await A.stop(); await mock.stop(); } }); });

test('chat, not streamed: the signatures in the head, with a Content-Length, before the body', async () => {
  const body = Buffer.from(JSON.stringify(CHAT()));
  const r = await exchange(A.port, { path: '/v1/chat/completions', body, headers: ASK });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['x-signature-inband'], 'headers');
  assert.equal(r.headers['content-length'], String(r.body.length), 'the length of the held body');
  assert.equal(r.headers['transfer-encoding'], undefined);
  const id = JSON.parse(r.body).id;
  assert.equal(r.headers['x-signature-id'], id, 'X-Signature-Id is the chat id');
  checkFields(r.headers, body, r.body, { attested });
  await checkRoute(A.port, id, r.headers);
});

test('chat, streamed with TE: trailers: id and Trailer in the head, the fields as trailers of the chunked body', async () => {
  const body = Buffer.from(JSON.stringify(CHAT({ stream: true })));
  const r = await exchange(A.port, { path: '/v1/chat/completions', body, headers: { ...ASK, TE: 'gzip;q=0.5, Trailers' } });
  assert.equal(r.status, 200);
  assert.ok(r.chunked, 'chunked');
  assert.equal(r.headers['x-signature-inband'], 'trailers');
  assert.equal(r.headers.trailer, TRAILER_LIST);
  for (const k of FIELDS) assert.equal(r.headers[k], undefined, `${k} is not in the head`);
  const id = firstEventId(r.body);
  assert.equal(r.headers['x-signature-id'], id, 'X-Signature-Id is the first event\'s id');
  assert.ok(r.body.toString().endsWith('data: [DONE]\n\n'));
  assert.deepEqual(Object.keys(r.trailers).sort(), [...FIELDS].sort(), 'exactly the five fields as trailers');
  checkFields(r.trailers, body, r.body, { attested });
  await checkRoute(A.port, id, r.trailers);
});

test('chat, streamed without TE: trailers: unavailable; reason=no-te-trailers, the record on the route', async () => {
  const body = Buffer.from(JSON.stringify(CHAT({ stream: true })));
  const r = await exchange(A.port, { path: '/v1/chat/completions', body, headers: ASK });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-signature-inband'], 'unavailable; reason=no-te-trailers');
  assert.equal(r.headers.trailer, undefined);
  assert.deepEqual(r.trailers, {}, 'no trailers');
  assert.equal(r.headers['x-signature-id'], firstEventId(r.body), 'the head waited for the id all the same');
  await checkRouteOnly(A.port, firstEventId(r.body), body, r.body, { attested });
});

for (const stream of [false, true]) {
  test(`completions ${stream ? 'streamed' : 'not streamed'}`, async () => {
    const body = Buffer.from(JSON.stringify({ model: MODEL, prompt: 'once upon', max_tokens: 6, stream }));
    const r = await exchange(A.port, { path: '/v1/completions', body, headers: ASK_TE });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-signature-inband'], stream ? 'trailers' : 'headers');
    const id = stream ? firstEventId(r.body) : JSON.parse(r.body).id;
    assert.equal(r.headers['x-signature-id'], id);
    const f = stream ? r.trailers : r.headers;
    checkFields(f, body, r.body, { attested });
    await checkRoute(A.port, id, f);
  });
}

test('embeddings and images/generations: signed under the announced id, fields in the head', async () => {
  for (const [path, req] of [
    ['/v1/embeddings', { model: MODEL, input: ['a', 'b'] }],
    ['/v1/images/generations', { model: MODEL, prompt: 'a fox', size: '8x8' }],
  ]) {
    const body = Buffer.from(JSON.stringify(req));
    const r = await exchange(A.port, { path, body, headers: ASK_TE });
    assert.equal(r.status, 200, `${path}: ${r.body.toString().slice(0, 200)}`);
    assert.equal(r.headers['x-signature-inband'], 'headers', path);
    assert.equal(r.headers['content-length'], String(r.body.length));
    const id = r.headers['x-signature-id'];
    if (path === '/v1/embeddings') assert.equal(id, JSON.parse(r.body).id);
    else assert.equal(id, `img-${r.headers['x-request-id']}`);
    checkFields(r.headers, body, r.body, { attested });
    await checkRoute(A.port, id, r.headers);
  }
});

for (const stream of [false, true]) {
  test(`NEAR E2EE chat ${stream ? 'streamed' : 'not streamed'}: signed over the ciphertext the client receives`, async () => {
    const serverHex = await near.serverKey(A.port, 'ed25519');
    const ck = near.clientKeys('ed25519');
    const body = Buffer.from(JSON.stringify(CHAT({ stream, messages: [{ role: 'user', content: near.seal('ed25519', 2, serverHex, 'secret question') }] })));
    const r = await exchange(A.port, { path: '/v1/chat/completions', body, headers: { ...near.nearHeaders(ck, serverHex, 2), ...ASK_TE } });
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    assert.equal(r.headers['x-signature-inband'], stream ? 'trailers' : 'headers');
    let id, content;
    if (stream) {
      id = firstEventId(r.body);
      const evs = r.body.toString().split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
      content = evs.map((e) => e.choices?.[0]?.delta?.content).find((c) => c);
    } else {
      const j = JSON.parse(r.body);
      id = j.id;
      content = j.choices[0].message.content;
      assert.equal(r.headers['content-length'], String(r.body.length));
    }
    assert.equal(r.headers['x-signature-id'], id);
    assert.ok(near.open(ck, 2, content).length > 0, 'the answer opens with the client key (it is ciphertext on the wire)');
    const f = stream ? r.trailers : r.headers;
    checkFields(f, body, r.body, { attested });
    await checkRoute(A.port, id, f);
  });
}

test('answers that are not signed carry nothing: an engine 400, tokenize', async () => {
  const bad = await exchange(A.port, { path: '/v1/chat/completions', body: { model: MODEL, messages: 'not a list' }, headers: ASK_TE });
  assert.equal(bad.status, 400);
  noInbandFields(bad);
  const tok = await exchange(A.port, { path: '/v1/tokenize', body: { model: MODEL, prompt: 'hi' }, headers: ASK_TE });
  assert.equal(tok.status, 200, tok.body.toString());
  noInbandFields(tok);
});

test('X-Signature-Inband other than 0 or 1: 400 in the OpenAI shape, nothing forwarded', async () => {
  const before0 = (await mock.stats()).requests;
  const r = await exchange(A.port, { path: '/v1/chat/completions', body: CHAT(), headers: { 'X-Signature-Inband': 'yes' } });
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.body).error.code, 'invalid_signature_inband');
  assert.equal((await mock.stats()).requests, before0, 'nothing reached the engine');
  const z = await exchange(A.port, { path: '/v1/chat/completions', body: CHAT(), headers: { 'X-Signature-Inband': '0' } });
  assert.equal(z.status, 200);
  noInbandFields(z);
});

/** The head without Date and X-Request-Id. */
const headShape = (r) => r.lines.filter(([k]) => !/^(date|x-request-id)$/i.test(k)).map(([k, v]) => `${k}: ${v}`);

const PLAIN_CASES = [
  ['/v1/chat/completions', CHAT(), ['Content-Type: application/json', /^Content-Length: \d+$/]],
  ['/v1/chat/completions', CHAT({ stream: true }), [/^Content-Type: text\/event-stream/, 'Transfer-Encoding: chunked', 'X-Accel-Buffering: no', 'Cache-Control: no-cache']],
  ['/v1/embeddings', { model: MODEL, input: 'x' }, ['Content-Type: application/json', /^Content-Length: \d+$/, /^X-Signature-Id: embd-/]],
];

test('a request that does not ask (even with TE: trailers) gets the head it got before', async () => {
  for (const [path, req, want] of PLAIN_CASES) {
    const r = await exchange(A.port, { path, body: req, headers: { TE: 'trailers' } });
    assert.equal(r.status, 200);
    noInbandFields(r);
    const shape = headShape(r);
    assert.equal(shape.length, want.length, `${path}: ${shape.join(' | ')}`);
    want.forEach((w, i) => (typeof w === 'string' ? assert.equal(shape[i], w) : assert.match(shape[i], w)));
  }
});

test('byte-identical heads against a proxy built before in-band signatures (VP_BASELINE_PROXY)', async (t) => {
  const base = process.env.VP_BASELINE_PROXY;
  if (!base || !fs.existsSync(base)) return t.skip('VP_BASELINE_PROXY not set');
  const { spawn } = await import('node:child_process');
  const { freePort } = await import('./lib/harness.mjs');
  const port = await freePort();
  const env = { ...A.env, LISTEN_PORT: String(port) };
  const child = spawn(base, [], { env, stdio: 'ignore' });
  try {
    for (let i = 0; i < 100; i++) { try { if ((await getPath(port, '/')).status === 200) break; } catch { /* not yet */ } await new Promise((s) => setTimeout(s, 50)); }
    for (const [path, req] of PLAIN_CASES) {
      const a = await exchange(A.port, { path, body: req, headers: { TE: 'trailers' } });
      const b = await exchange(port, { path, body: req, headers: { TE: 'trailers' } });
      assert.deepEqual(headShape(a).map((l) => l.replace(/^(X-Signature-Id: embd-).*/, '$1')),
        headShape(b).map((l) => l.replace(/^(X-Signature-Id: embd-).*/, '$1')), path);
      assert.equal(a.rawTrailer, b.rawTrailer);
    }
  } finally { child.kill('SIGTERM'); }
});

test('metrics count in-band answers by mode and the unavailable ones by reason', async () => {
  const m = (await getPath(A.port, '/metrics')).body.toString();
  const val = (re) => Number((re.exec(m) ?? [null, 'NaN'])[1]);
  assert.ok(val(/^vllm_proxy_inband_signatures_total\{mode="headers"\} (\d+)$/m) >= 5, m.split('\n').filter((l) => l.includes('inband')).join('\n'));
  assert.ok(val(/^vllm_proxy_inband_signatures_total\{mode="trailers"\} (\d+)$/m) >= 3);
  assert.ok(val(/^vllm_proxy_inband_unavailable_total\{reason="no-te-trailers"\} (\d+)$/m) >= 1);
  assert.equal(val(/^vllm_proxy_inband_unavailable_total\{reason="disabled"\} (\d+)$/m), 0);
});

// ---- INBAND_SIGNATURES=all (with SIGNED_TEXT=model:req:resp and a small INBAND_MAX_BODY) ----

test('INBAND_SIGNATURES=all: every signed answer, asked or not; too-large beyond INBAND_MAX_BODY', async () => {
  const B = await startProxy(mock.url, { env: { INBAND_SIGNATURES: 'all', SIGNED_TEXT: 'model:req:resp', INBAND_MAX_BODY: '2000' } });
  try {
    const att = await attestedAddresses(B.port);
    const body = Buffer.from(JSON.stringify(CHAT()));
    const r = await exchange(B.port, { path: '/v1/chat/completions', body });
    assert.equal(r.headers['x-signature-inband'], 'headers', 'not asked, signed in band all the same');
    checkFields(r.headers, body, r.body, { attested: att, model: MODEL });
    const s = await exchange(B.port, { path: '/v1/chat/completions', body: CHAT({ stream: true }) });
    assert.equal(s.headers['x-signature-inband'], 'unavailable; reason=no-te-trailers');
    // over the bound: the head goes out when it is passed, the rest streams; the route has it
    const bigReq = Buffer.from(JSON.stringify(CHAT({ max_tokens: 600 })));
    const big = await exchange(B.port, { path: '/v1/chat/completions', body: bigReq, headers: ASK });
    assert.equal(big.status, 200);
    assert.ok(big.body.length > 2000, `the body is ${big.body.length} bytes`);
    assert.equal(big.headers['x-signature-inband'], 'unavailable; reason=too-large');
    for (const k of FIELDS) assert.equal(big.headers[k], undefined);
    const id = JSON.parse(big.body).id;
    assert.equal(big.headers['x-signature-id'], id, 'the id was known when the head went out');
    await checkRouteOnly(B.port, id, bigReq, big.body, { attested: att, model: MODEL });
    // just under the bound: in band
    const smallReq = Buffer.from(JSON.stringify(CHAT({ max_tokens: 3 })));
    const small = await exchange(B.port, { path: '/v1/chat/completions', body: smallReq });
    assert.ok(small.body.length <= 2000);
    assert.equal(small.headers['x-signature-inband'], 'headers');
    const m = (await getPath(B.port, '/metrics')).body.toString();
    assert.match(m, /^vllm_proxy_inband_unavailable_total\{reason="too-large"\} 1$/m);
  } finally { await B.stop(); }
  assert.equal(cleanExitProblems(B.child), null);
});

test('INBAND_HOLD_TOTAL: an answer that would pass the process-wide hold budget says unavailable; reason=busy, and what was held is given back', async () => {
  const E = await startProxy(mock.url, { env: { INBAND_HOLD_TOTAL: '2000' } });
  try {
    const att = await attestedAddresses(E.port);
    const bigReq = Buffer.from(JSON.stringify(CHAT({ max_tokens: 600 })));
    const smallReq = Buffer.from(JSON.stringify(CHAT({ max_tokens: 3 })));
    for (let i = 0; i < 5; i++) {
      const big = await exchange(E.port, { path: '/v1/chat/completions', body: bigReq, headers: ASK });
      assert.equal(big.status, 200);
      assert.ok(big.body.length > 2000, `the body is ${big.body.length} bytes`);
      assert.equal(big.headers['x-signature-inband'], 'unavailable; reason=busy');
      for (const k of FIELDS) assert.equal(big.headers[k], undefined);
      const id = JSON.parse(big.body).id;
      assert.equal(big.headers['x-signature-id'], id);
      await checkRouteOnly(E.port, id, bigReq, big.body, { attested: att });
      // the budget was given back: an answer that fits is signed in band again
      const small = await exchange(E.port, { path: '/v1/chat/completions', body: smallReq, headers: ASK });
      assert.equal(small.headers['x-signature-inband'], 'headers', `round ${i}`);
      checkFields(small.headers, smallReq, small.body, { attested: att });
    }
    const m = (await getPath(E.port, '/metrics')).body.toString();
    assert.match(m, /^vllm_proxy_inband_unavailable_total\{reason="busy"\} 5$/m);
  } finally { await E.stop(); }
  assert.equal(cleanExitProblems(E.child), null);
});

test('INBAND_SIGNATURES=off: a request asking is told unavailable; reason=disabled; one not asking gets nothing', async () => {
  const C = await startProxy(mock.url, { env: { INBAND_SIGNATURES: 'off' } });
  try {
    const att = await attestedAddresses(C.port);
    const body = Buffer.from(JSON.stringify(CHAT()));
    const r = await exchange(C.port, { path: '/v1/chat/completions', body, headers: ASK_TE });
    assert.equal(r.headers['x-signature-inband'], 'unavailable; reason=disabled');
    for (const k of FIELDS) assert.equal(r.headers[k], undefined);
    assert.equal(r.headers['x-signature-id'], JSON.parse(r.body).id);
    await checkRouteOnly(C.port, JSON.parse(r.body).id, body, r.body, { attested: att });
    const s = await exchange(C.port, { path: '/v1/chat/completions', body: CHAT({ stream: true }), headers: ASK_TE });
    assert.equal(s.headers['x-signature-inband'], 'unavailable; reason=disabled');
    assert.equal(s.headers['x-signature-id'], firstEventId(s.body));
    assert.deepEqual(s.trailers, {});
    noInbandFields(await exchange(C.port, { path: '/v1/chat/completions', body: CHAT() }));
  } finally { await C.stop(); }
  assert.equal(cleanExitProblems(C.child), null);
});

test('a MODEL_NAME that cannot go in a header: unavailable; reason=unsafe-text', async () => {
  const D = await startProxy(mock.url, { env: { SIGNED_TEXT: 'model:req:resp', MODEL_NAME: 'modèle' } });
  try {
    for (const [req, h] of [[CHAT(), ASK], [CHAT({ stream: true }), ASK_TE]]) {
      const r = await exchange(D.port, { path: '/v1/chat/completions', body: req, headers: h });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-signature-inband'], 'unavailable; reason=unsafe-text');
      assert.equal(r.headers['x-signature-id'], h.TE ? firstEventId(r.body) : JSON.parse(r.body).id);
      for (const k of FIELDS) assert.equal(r.headers[k], undefined);
    }
  } finally { await D.stop(); }
  assert.equal(cleanExitProblems(D.child), null);
});
