// In-band signatures on the server (issue 13, docs/API.md "In-band signatures"): the edges
// inband.test.mjs leaves out. Clients that leave a stream that announced trailers (the proxy
// serves on, counts no trailers it did not send, exits clean); INBAND_SIGNATURES=all with a
// stream whose client did not send TE: trailers (no Trailer header, an empty trailer section,
// the record on the route over the exact bytes); HEAD and GET on the signed routes, and the
// request header on routes that are not signed: no signature field anywhere, no crash.
// Read from the raw socket; signatures checked with ethers and @noble (lib/common.mjs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { MODEL, startMock, startProxy, cleanExitProblems, sleep } from './lib/harness.mjs';
import { getPath } from './lib/http.mjs';
import { attestedAddresses, checkSigned, signedText } from './lib/common.mjs';

const FIELD = /^(x-signature-(inband|text|ecdsa|ed25519)|x-signing-(address|key-ed25519)|trailer)$/i;
const ASK_TE = { 'X-Signature-Inband': '1', TE: 'trailers' };
const CHAT = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'hello edges' }], max_tokens: 8, ...extra });

/**
 * One exchange on a fresh socket, read raw: {status, headers (lower-case, first wins), lines,
 * body (de-chunked), chunked, trailers ([[name, value]]) or null}. HEAD answers have no body.
 */
function exchange(port, { method = 'POST', path, headers = {}, body = null, timeoutMs = 15000 }) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const b = body === null ? null : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    let req = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer test_token\r\n`;
    if (b) req += `Content-Type: application/json\r\nContent-Length: ${b.length}\r\n`;
    for (const [k, v] of Object.entries(headers)) req += `${k}: ${v}\r\n`;
    sock.write(Buffer.concat([Buffer.from(`${req}\r\n`), b ?? Buffer.alloc(0)]));
    let buf = Buffer.alloc(0), res = null;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no complete answer: ${buf.toString('latin1').slice(0, 300)}`)); }, timeoutMs);
    const done = (v) => { clearTimeout(timer); sock.destroy(); resolve(v); };
    const parse = () => {
      if (!res) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [st, ...rest] = buf.subarray(0, end).toString('latin1').split('\r\n');
        const lines = rest.map((l) => { const i = l.indexOf(':'); return [l.slice(0, i), l.slice(i + 1).trim()]; });
        const headers_ = {};
        for (const [k, v] of lines) if (!(k.toLowerCase() in headers_)) headers_[k.toLowerCase()] = v;
        res = { status: Number(st.split(' ')[1]), lines, headers: headers_, chunked: /chunked/i.test(headers_['transfer-encoding'] ?? ''), trailers: null, parts: [], pos: 0 };
        buf = buf.subarray(end + 4);
      }
      if (method === 'HEAD') return done({ ...res, body: Buffer.alloc(0) });
      if (!res.chunked) {
        const cl = Number(res.headers['content-length'] ?? 0);
        if (buf.length >= cl) done({ ...res, body: buf.subarray(0, cl) });
        return;
      }
      for (;;) {
        const nl = buf.indexOf('\r\n', res.pos);
        if (nl < 0) return;
        const size = parseInt(buf.subarray(res.pos, nl).toString('latin1'), 16);
        if (size === 0) {
          const tend = buf.indexOf('\r\n\r\n', nl);
          const empty = buf.subarray(nl + 2, nl + 4).toString('latin1') === '\r\n';
          if (!empty && tend < 0) return;
          const raw = empty ? '' : buf.subarray(nl + 2, tend).toString('latin1');
          const trailers = raw ? raw.split('\r\n').map((l) => { const i = l.indexOf(':'); return [l.slice(0, i), l.slice(i + 1).trim()]; }) : [];
          return done({ ...res, body: Buffer.concat(res.parts), trailers });
        }
        if (buf.length < nl + 4 + size) return;
        res.parts.push(buf.subarray(nl + 2, nl + 2 + size));
        res.pos = nl + 4 + size;
      }
    };
    sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

function noFields(r, what) {
  for (const [k] of r.lines) assert.doesNotMatch(k, FIELD, `${what}: no ${k}`);
  if (r.trailers) assert.deepEqual(r.trailers, [], `${what}: no trailers`);
}

let mock, A, B, attA, attB;
before(async () => {
  mock = await startMock();
  A = await startProxy(mock.url);
  B = await startProxy(mock.url, { env: { INBAND_SIGNATURES: 'all' } });
  attA = await attestedAddresses(A.port);
  attB = await attestedAddresses(B.port);
});
after(async () => {
  await A?.stop();
  await B?.stop();
  await mock?.stop();
  assert.equal(cleanExitProblems(A.child), null);
  assert.equal(cleanExitProblems(B.child), null);
});

const metric = async (port, re) => Number((re.exec((await getPath(port, '/metrics')).body.toString()) ?? [0, 0])[1]);
const TRAILERS_SENT = /^vllm_proxy_inband_signatures_total\{mode="trailers"\} (\d+)$/m;
const HEADERS_SENT = /^vllm_proxy_inband_signatures_total\{mode="headers"\} (\d+)$/m;

test('clients that leave a stream that announced trailers: no trailers counted for them, the next stream gets its trailers', async () => {
  const t0 = await metric(A.port, TRAILERS_SENT);
  const body = JSON.stringify(CHAT({ stream: true, max_tokens: 200, mock_delay_us: 5000 }));
  const leave = (i) => new Promise((resolve) => {
    const s = net.connect(A.port, '127.0.0.1');
    s.on('error', () => {});
    s.on('close', resolve);
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test_token\r\nX-Signature-Inband: 1\r\nTE: trailers\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    let got = '';
    if (i % 3 === 0) setTimeout(() => s.destroy(), 5); // before the head
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (i % 3 === 1 && got.includes('\r\n\r\n')) s.destroy(); // after the head (Trailer: announced)
      if (i % 3 === 2 && /data: \{.*\n\n/.test(got)) s.destroy(); // after the first event
    });
  });
  for (let b = 0; b < 5; b++) await Promise.all(Array.from({ length: 6 }, (_, i) => leave(b * 6 + i)));
  // and clients that leave while the whole body is held for its in-band headers
  const h0 = await metric(A.port, HEADERS_SENT);
  const held = JSON.stringify(CHAT({ max_tokens: 100, mock_delay_us: 2000 }));
  await Promise.all(Array.from({ length: 10 }, () => new Promise((resolve) => {
    const s = net.connect(A.port, '127.0.0.1');
    s.on('error', () => {});
    s.on('close', resolve);
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test_token\r\nX-Signature-Inband: 1\r\nContent-Type: application/json\r\nContent-Length: ${held.length}\r\n\r\n${held}`);
    setTimeout(() => s.destroy(), 30);
  })));
  await sleep(300);
  assert.equal(await metric(A.port, TRAILERS_SENT), t0, 'no trailers sent to clients that left');
  await sleep(400); // the held answers are complete at the engine by now
  assert.equal(await metric(A.port, HEADERS_SENT), h0, 'no in-band head sent to clients that left');
  const nh = await exchange(A.port, { path: '/v1/chat/completions', body: CHAT(), headers: ASK_TE });
  assert.equal(nh.headers['x-signature-inband'], 'headers');
  const req = Buffer.from(JSON.stringify(CHAT({ stream: true })));
  const r = await exchange(A.port, { path: '/v1/chat/completions', body: req, headers: ASK_TE });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-signature-inband'], 'trailers');
  const f = Object.fromEntries(r.trailers.map(([k, v]) => [k.toLowerCase(), v]));
  assert.equal(f['x-signature-text'], signedText(req, r.body));
  await checkSigned(A.port, r.headers['x-signature-id'], f['x-signature-text'], { attested: attA });
  assert.equal(await metric(A.port, TRAILERS_SENT), t0 + 1);
});

test('INBAND_SIGNATURES=all and a stream without TE: trailers: unavailable; reason=no-te-trailers, no Trailer, an empty trailer section, the record on the route', async () => {
  for (const ask of [{}, { 'X-Signature-Inband': '1' }]) {
    const req = Buffer.from(JSON.stringify(CHAT({ stream: true })));
    const r = await exchange(B.port, { path: '/v1/chat/completions', body: req, headers: ask });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-signature-inband'], 'unavailable; reason=no-te-trailers');
    assert.equal(r.headers.trailer, undefined, 'no Trailer header');
    assert.ok(r.chunked);
    assert.deepEqual(r.trailers, [], 'the chunked body ends with an empty trailer section');
    assert.match(r.body.toString(), /data: \[DONE\]\n\n$/);
    const id = JSON.parse(/^data: (\{.*)$/m.exec(r.body.toString())[1]).id;
    assert.equal(r.headers['x-signature-id'], id);
    await checkSigned(B.port, id, signedText(req, r.body), { attested: attB });
  }
  // with TE: trailers, not asking: trailers all the same under "all"
  const req = Buffer.from(JSON.stringify(CHAT({ stream: true })));
  const t = await exchange(B.port, { path: '/v1/chat/completions', body: req, headers: { TE: 'trailers' } });
  assert.equal(t.headers['x-signature-inband'], 'trailers');
  assert.equal(Object.fromEntries(t.trailers.map(([k, v]) => [k.toLowerCase(), v]))['x-signature-text'], signedText(req, t.body));
});

test('HEAD and GET on the signed routes: 405, no signature field; the proxy answers on', async () => {
  for (const [name, P] of [['request', A], ['all', B]]) {
    for (const path of ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/images/generations']) {
      for (const method of ['GET', 'HEAD']) {
        const r = await exchange(P.port, { method, path, headers: ASK_TE });
        assert.equal(r.status, 405, `${name}: ${method} ${path}`);
        noFields(r, `${name}: ${method} ${path}`);
        assert.equal(r.headers['x-signature-id'], undefined);
      }
    }
  }
  const ok = await exchange(A.port, { path: '/v1/chat/completions', body: CHAT(), headers: ASK_TE });
  assert.equal(ok.headers['x-signature-inband'], 'headers');
});

test('X-Signature-Inband: 1 on routes that are not signed: no signature field, no trailers, the answer as without it', async () => {
  const sigId = JSON.parse((await exchange(A.port, { path: '/v1/chat/completions', body: CHAT() })).body).id;
  const routes = [
    ['POST', '/v1/tokenize', { model: MODEL, prompt: 'hi' }],
    ['POST', '/v1/detokenize', { model: MODEL, tokens: [1, 2] }],
    ['GET', '/v1/models'],
    ['GET', `/v1/attestation/report?nonce=${'cd'.repeat(32)}`],
    ['GET', `/v1/signature/${sigId}`],
    ['GET', '/version'],
    ['GET', '/'],
    ['GET', '/metrics'],
    ['HEAD', '/v1/models'],
    ['POST', '/v1/nonexistent', {}],
  ];
  for (const [name, P] of [['request', A], ['all', B]]) {
    for (const [method, path, body] of routes) {
      if (name === 'all' && path.startsWith('/v1/signature/')) continue; // the record is A's
      const plain = await exchange(P.port, { method, path, body: body ?? null });
      for (const h of [ASK_TE, { 'X-Signature-Inband': '1' }]) {
        const r = await exchange(P.port, { method, path, body: body ?? null, headers: h });
        assert.equal(r.status, plain.status, `${name}: ${method} ${path}`);
        noFields(r, `${name}: ${method} ${path}`);
        assert.equal(r.headers['x-signature-id'], plain.headers['x-signature-id']);
      }
    }
  }
  assert.equal(A.child.exited, null);
  assert.equal(B.child.exited, null);
});
