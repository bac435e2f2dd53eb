// Harder edges of the server and the relay: byte-by-byte requests, pipelining, smuggling
// guards, exact size limits, slow readers (backpressure), large answers, timeouts, the cache
// TTL and capacity, the CLI flags, configuration errors and graceful shutdown.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { startStack, startProxy, binary, freePort, MODEL, sleep, cleanExitProblems } from './lib/harness.mjs';
import { RawConn, postJson, getPath, rawRequest, jsonOf, sseJson, sseData } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, fetchSignature, poll, signedText, stopAndCheck } from './lib/common.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], ...extra });

/** Sends raw bytes in pieces with pauses, returns everything read until close or timeout. */
async function rawExchange(port, pieces, { pauseMs = 2, waitMs = 3000, until } = {}) {
  const sock = net.connect({ port, host: '127.0.0.1' });
  sock.setNoDelay(true);
  const got = [];
  let closed = false;
  sock.on('data', (d) => got.push(d));
  sock.on('close', () => { closed = true; });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  for (const p of pieces) {
    if (closed) break;
    sock.write(p);
    if (pauseMs) await sleep(pauseMs);
  }
  const t0 = Date.now();
  while (!closed && Date.now() - t0 < waitMs) {
    if (until && until(Buffer.concat(got))) break;
    await sleep(10);
  }
  sock.destroy();
  return { bytes: Buffer.concat(got), closed };
}

function requestBytes(body, extraHeaders = '') {
  return Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test_token\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}\r\n${body}`);
}

test('a request sent one byte at a time is parsed, relayed and signed over the same bytes', async () => {
  const body = JSON.stringify(chatBody({ max_tokens: 2 }));
  const all = requestBytes(body, 'Connection: close\r\n');
  const pieces = [...all].map((b) => Buffer.from([b]));
  const { bytes } = await rawExchange(stack.port, pieces, { pauseMs: 1, waitMs: 5000 });
  const text = bytes.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200 /);
  const bodyStart = text.indexOf('\r\n\r\n') + 4;
  const respBody = bytes.subarray(bodyStart);
  const headers = text.slice(0, bodyStart).toLowerCase();
  let payload = respBody;
  if (headers.includes('transfer-encoding: chunked')) {
    // de-chunk
    const parts = [];
    let i = 0;
    for (;;) {
      const e = respBody.indexOf('\r\n', i);
      const n = parseInt(respBody.subarray(i, e).toString(), 16);
      if (!n) break;
      parts.push(respBody.subarray(e + 2, e + 2 + n));
      i = e + 2 + n + 2;
    }
    payload = Buffer.concat(parts);
  }
  const id = JSON.parse(payload.toString()).id;
  await checkSigned(stack.port, id, signedText(Buffer.from(body), payload));
});

test('pipelined requests on one connection are answered in order', async () => {
  const b1 = JSON.stringify(chatBody({ max_tokens: 2, stream: true }));
  const b2 = JSON.stringify(chatBody({ max_tokens: 3 }));
  const both = Buffer.concat([requestBytes(b1), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), requestBytes(b2, 'Connection: close\r\n')]);
  const { bytes } = await rawExchange(stack.port, [both], { waitMs: 5000 });
  const text = bytes.toString();
  const answers = text.split(/(?=HTTP\/1\.1 \d{3} )/);
  assert.deepEqual(answers.map((a) => a.slice(9, 12)), ['200', '200', '200'], 'three answers');
  assert.match(answers[0], /chat\.completion\.chunk/, 'first: the stream');
  assert.match(answers[1], /\r\n\r\n\{\}$/, 'second: GET / → {}');
  assert.match(answers[2], /"object":"chat\.completion"/, 'third: the non-stream answer');
});

test('request smuggling guards: Content-Length with Transfer-Encoding, bad lengths → 400', async () => {
  const body = JSON.stringify(chatBody({ max_tokens: 1 }));
  for (const head of [
    `Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n`,
    `Content-Length: ${body.length}\r\nContent-Length: ${body.length + 1}\r\n`,
    'Content-Length: abc\r\n',
    'Content-Length: -1\r\n',
    'Transfer-Encoding: gzip, chunked\r\nTransfer-Encoding: identity\r\n',
  ]) {
    const req = Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test_token\r\n${head}\r\n${body}`);
    const { bytes } = await rawExchange(stack.port, [req], { waitMs: 2000, until: (b) => b.includes('\r\n\r\n') });
    const status = /^HTTP\/1\.1 (\d{3})/.exec(bytes.toString())?.[1];
    assert.ok(status === undefined || (status >= '400' && status < '500'), `${JSON.stringify(head)} → ${status}`);
    assert.notEqual(status, '200', `${JSON.stringify(head)} must not be served`);
  }
  const r = await getPath(stack.port, '/', { token: null });
  assert.equal(r.status, 200);
});

test('body size limit is exact: limit bytes accepted, limit+1 → 413', async () => {
  const limit = 2000;
  const p = await startProxy(stack.mock.url, { env: { VLLM_PROXY_MAX_REQUEST_SIZE: limit } });
  try {
    const mk = (n) => {
      const base = JSON.stringify(chatBody({ max_tokens: 1, pad: '' }));
      return JSON.stringify(chatBody({ max_tokens: 1, pad: 'y'.repeat(n - base.length) }));
    };
    const exact = mk(limit);
    assert.equal(exact.length, limit);
    const ok = await postJson(p.port, '/v1/chat/completions', exact);
    assert.equal(ok.status, 200, 'a body of exactly the limit is accepted');
    const over = mk(limit + 1);
    const r = await postJson(p.port, '/v1/chat/completions', over);
    assertOpenAIError(r, 413);
    const r2 = await postJson(p.port, '/v1/embeddings', over);
    assert.equal(r2.status, 413, 'the limit applies to pass-through routes too');
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('slow reader on a large stream (backpressure): bytes and record still match', async () => {
  const conn = new RawConn(stack.port);
  let paused = false;
  const body = JSON.stringify(chatBody({ stream: true, max_tokens: 6000, mock_chunking: 'coalesce' }));
  const pr = conn.request({
    method: 'POST', path: '/v1/chat/completions', timeoutMs: 30000,
    headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' }, body,
    onBody: () => {
      if (!paused) {
        paused = true;
        conn.sock.pause();
        setTimeout(() => conn.sock.resume(), 1500);
      }
    },
  });
  const r = await pr;
  conn.close();
  assert.equal(r.status, 200);
  assert.ok(r.complete, 'complete');
  assert.ok(r.body.length > 500000, `large answer (${r.body.length} bytes)`);
  const ev = sseJson(r.body);
  assert.equal(ev.filter((e) => e.choices?.[0]?.delta?.content).length, 6000, 'every token event arrived');
  await checkSigned(stack.port, ev[0].id, signedText(Buffer.from(body), r.body));
});

test('large non-streamed answer', async () => {
  const r = await postJson(stack.port, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 20000 });
  assert.equal(r.status, 200);
  assert.ok(r.body.length > 50000);
  await checkSigned(stack.port, jsonOf(r).id, signedText(r.requestBody, r.body));
});

test('fifty concurrent streams with byte-split engine writes', async () => {
  const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => postJson(stack.port, '/v1/chat/completions',
    chatBody({ stream: true, max_tokens: 5, mock_chunking: i % 2 ? 'split' : 'normal', messages: [{ role: 'user', content: `#${i}` }] }))));
  const ids = new Set();
  for (const r of rs) {
    assert.equal(r.status, 200);
    const id = sseJson(r.body)[0].id;
    ids.add(id);
    const s = jsonOf(await fetchSignature(stack.port, id));
    assert.equal(s.text, signedText(r.requestBody, r.body));
  }
  assert.equal(ids.size, 50);
});

test('client disconnect while the engine stalls (stall) cancels the engine request', async () => {
  const before = await stack.mock.stats();
  const conn = new RawConn(stack.port);
  let got = false;
  const p = conn.request({
    method: 'POST', path: '/v1/chat/completions',
    headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' },
    body: JSON.stringify(chatBody({ stream: true, mock_fault: 'stall' })),
    onBody: () => { if (!got) { got = true; setTimeout(() => conn.destroy(), 100); } },
    timeoutMs: 5000,
  }).catch(() => null);
  await p;
  assert.ok(got, 'first event arrived before the stall');
  const s = await poll(async () => {
    const x = await stack.mock.stats();
    return x.cancelled > before.cancelled && x.active === 0 ? x : null;
  }, { timeoutMs: 1000 });
  assert.ok(s, 'engine request cancelled within 1 s');
});

test('client disconnect before a non-streamed answer cancels the engine request', async () => {
  const before = await stack.mock.stats();
  const conn = new RawConn(stack.port);
  conn.request({
    method: 'POST', path: '/v1/chat/completions',
    headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' },
    body: JSON.stringify(chatBody({ max_tokens: 50, mock_delay_us: 100000 })),
  }).catch(() => null);
  await poll(async () => ((await stack.mock.stats()).active > before.active ? true : null), { timeoutMs: 1000 });
  conn.destroy();
  const s = await poll(async () => {
    const x = await stack.mock.stats();
    return x.cancelled > before.cancelled && x.active === 0 ? x : null;
  }, { timeoutMs: 1500 });
  assert.ok(s, 'engine request cancelled');
  await sleep(50);
  const r = await getPath(stack.port, '/', { token: null });
  assert.equal(r.status, 200);
});

test('engine timeouts: TIMEOUT cuts a stalled stream, UPSTREAM_FIRST_BYTE_TIMEOUT → 504/502', async () => {
  const p = await startProxy(stack.mock.url, { env: { TIMEOUT: 1, UPSTREAM_FIRST_BYTE_TIMEOUT: 1 } });
  try {
    const t0 = Date.now();
    let id = null;
    const r = await postJson(p.port, '/v1/chat/completions', chatBody({ stream: true, mock_fault: 'stall' }), {
      timeoutMs: 8000,
      onBody: (piece, st) => { id ??= /"id":"([^"]+)"/.exec(Buffer.concat(st.bodyParts).toString())?.[1]; },
    });
    const dt = Date.now() - t0;
    assert.equal(r.status, 200);
    assert.equal(r.complete, false, 'stalled stream ends truncated');
    assert.ok(dt < 4000, `cut after the 1 s timeout (took ${dt} ms)`);
    assert.ok(id);
    assertOpenAIError(await fetchSignature(p.port, id), 404);

    const t1 = Date.now();
    const r2 = await postJson(p.port, '/v1/chat/completions', chatBody({ mock_fault: 'slow-headers:3000' }), { timeoutMs: 8000 });
    const e = assertOpenAIError(r2, 504, { type: 'upstream_error' });
    assert.equal(e.code, 'upstream_timeout');
    assert.ok(Date.now() - t1 < 2900, 'answered before the engine did');
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('CHAT_CACHE_EXPIRATION: records expire', async () => {
  const p = await startProxy(stack.mock.url, { env: { CHAT_CACHE_EXPIRATION: 1 } });
  try {
    const r = await postJson(p.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }));
    const id = jsonOf(r).id;
    assert.equal((await fetchSignature(p.port, id)).status, 200, 'present at once');
    await sleep(2300);
    assertOpenAIError(await fetchSignature(p.port, id), 404, { type: 'not_found' });
  } finally {
    await p.stop();
  }
});

test('CHAT_CACHE_CAPACITY: the oldest record is evicted first', async () => {
  const p = await startProxy(stack.mock.url, { env: { CHAT_CACHE_CAPACITY: 3, WORKERS: 1 } });
  try {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(jsonOf(await postJson(p.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }))).id);
    const st = [];
    for (const id of ids) st.push((await fetchSignature(p.port, id)).status);
    assert.deepEqual(st.slice(2), [200, 200, 200], 'the newest 3 are kept');
    assert.deepEqual(st.slice(0, 2), [404, 404], 'the oldest 2 are gone');
  } finally {
    await p.stop();
  }
});

test('CLI flags override the environment', async () => {
  const envPort = await freePort();
  const flagPort = await freePort();
  const env = { ...process.env, LISTEN_HOST: '127.0.0.1', LISTEN_PORT: String(envPort), VLLM_BASE_URL: 'http://127.0.0.1:1',
    MODEL_NAME: 'wrong-model', TOKEN: 'env_token', ATTESTATION: 'simulated', LOG_LEVEL: 'warn' };
  const proc = spawn(binary('vllm-proxy'), ['--listen', `127.0.0.1:${flagPort}`, '--upstream', stack.mock.url,
    '--model-name', MODEL, '--token', 'flag_token', '--trusted-hash-tokens', 'flag_token', '--workers', '1',
    '--attestation', 'simulated'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  try {
    const ok = await poll(async () => {
      try { return (await rawRequest(flagPort, { path: '/', timeoutMs: 500 })).status === 200; } catch { return false; }
    }, { timeoutMs: 8000, intervalMs: 50 });
    assert.ok(ok, `listening on the --listen port\n${err}`);
    const r = await postJson(flagPort, '/v1/chat/completions', chatBody({ max_tokens: 1 }), { token: 'flag_token', headers: { 'X-Request-Hash': 'ab'.repeat(32) } });
    assert.equal(r.status, 200, '--upstream and --token used');
    assert.equal((await postJson(flagPort, '/v1/chat/completions', chatBody({ max_tokens: 1 }), { token: 'env_token' })).status, 401);
    const s = jsonOf(await fetchSignature(flagPort, jsonOf(r).id, undefined, 'flag_token'));
    assert.ok(s.text.startsWith('ab'.repeat(32) + ':'), '--trusted-hash-tokens used');
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
});

async function runToExit(args, envExtra, ms = 5000) {
  const env = { ...process.env, LISTEN_HOST: '127.0.0.1', LISTEN_PORT: String(await freePort()), VLLM_BASE_URL: stack.mock.url, ...envExtra };
  for (const [k, v] of Object.entries(envExtra)) if (v === undefined) delete env[k];
  const proc = spawn(binary('vllm-proxy'), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const t = setTimeout(() => proc.kill('SIGKILL'), ms);
  const [code, signal] = await new Promise((r) => proc.once('exit', (c, s) => r([c, s])));
  clearTimeout(t);
  return { code, signal, out };
}

test('configuration errors stop the proxy at start with a message', async () => {
  const noModel = await runToExit([], { MODEL_NAME: undefined, ATTESTATION: 'simulated', TOKEN: 't' });
  assert.notEqual(noModel.code, 0, 'no MODEL_NAME: non-zero exit');
  assert.equal(noModel.signal, null, 'exited by itself');
  assert.match(noModel.out, /MODEL_NAME|model/i);
  const badFlag = await runToExit(['--no-such-flag'], { MODEL_NAME: MODEL, ATTESTATION: 'simulated' });
  assert.notEqual(badFlag.code, 0);
  assert.equal(badFlag.signal, null);
  const badAtt = await runToExit([], { MODEL_NAME: MODEL, ATTESTATION: 'bogus' });
  assert.notEqual(badAtt.code, 0, 'unknown ATTESTATION mode rejected');
  assert.equal(badAtt.signal, null);
  const v = await runToExit(['--version'], {});
  assert.equal(v.code, 0);
  assert.match(v.out, /\d+\.\d+/);
});

test('TOKEN unset: every authenticated route answers 401, open routes still work', async () => {
  const p = await startProxy(stack.mock.url, { env: { TOKEN: undefined, TRUSTED_REQUEST_HASH_TOKENS: undefined } });
  try {
    assert.equal((await postJson(p.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }))).status, 401);
    assert.equal((await postJson(p.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }), { token: '' })).status, 401);
    assert.equal((await getPath(p.port, `/v1/attestation/report?nonce=${'00'.repeat(32)}`)).status, 401);
    assert.equal((await getPath(p.port, '/v1/models', { token: null })).status, 200);
  } finally {
    await p.stop();
  }
});

test('DEV=1 implies simulated attestation', async () => {
  const p = await startProxy(stack.mock.url, { env: { ATTESTATION: undefined, DEV: 1 } });
  try {
    const r = await getPath(p.port, `/v1/attestation/report?nonce=${'11'.repeat(32)}`);
    assert.equal(r.status, 200);
    assert.match(r.body.toString(), /simulat/i);
  } finally {
    await p.stop();
  }
});

test('SIGTERM: an in-flight stream finishes, then the proxy exits 0', async () => {
  const p = await startProxy(stack.mock.url, { env: { SHUTDOWN_GRACE: 10 } });
  let sent = false;
  const body = JSON.stringify(chatBody({ stream: true, max_tokens: 10, mock_delay_us: 100000 }));
  const r = await postJson(p.port, '/v1/chat/completions', body, {
    timeoutMs: 10000,
    onBody: () => { if (!sent) { sent = true; p.child.proc.kill('SIGTERM'); } },
  });
  assert.ok(sent);
  assert.equal(r.status, 200);
  assert.ok(r.complete, 'the stream completed after SIGTERM');
  assert.equal(sseData(r.body).at(-1), '[DONE]');
  const ex = await p.child.exitPromise;
  assert.equal(ex.code, 0, `exit status after graceful shutdown: ${JSON.stringify(ex)}`);
});

test('any id the engine makes can be fetched: JSON escapes, %, /, + and space, encoded or raw in the path', async () => {
  // mock_id: the engine names the answer exactly so (a vLLM id holds whatever it was given).
  const ids = ['chatcmpl-sp ace', 'chatcmpl-per%cent', 'chatcmpl-q"uote', 'chatcmpl-back\\slash',
    'chatcmpl-sl/ash', 'chatcmpl-a/b/c', 'chatcmpl-pl+us', 'chatcmpl-x+y/z=', 'chatcmpl-tild~e'];
  for (const mockId of ids) {
    const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1, mock_id: mockId }));
    assert.equal(r.status, 200);
    const id = jsonOf(r).id;
    assert.equal(id, mockId);
    const text = signedText(r.requestBody, r.body);
    const s = await fetchSignature(stack.port, id); // encodeURIComponent: %2F, %2B, %20, …
    assert.equal(s.status, 200, `GET /v1/signature/${encodeURIComponent(id)} → ${s.status}`);
    assert.equal(jsonOf(s).text, text);
    // As a path segment (RFC 3986): '/' and '+' as they are, only what must be escaped is.
    const raw = id.replace(/[%" \\?#]/g, (ch) => '%' + ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
    const t = await getPath(stack.port, `/v1/signature/${raw}?signing_algo=ed25519`);
    assert.equal(t.status, 200, `GET /v1/signature/${raw} → ${t.status}`);
    assert.equal(jsonOf(t).text, text);
  }
  // '+' is a plus in a path, never a space: the space id is not found through '+'.
  assert.equal((await getPath(stack.port, '/v1/signature/chatcmpl-sp+ace')).status, 404);
});

test('a record is never overwritten: the first answer with an id wins', async () => {
  const mockId = `chatcmpl-dup-${Date.now()}`;
  const a = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2, mock_id: mockId }));
  const b = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 3, mock_id: mockId }));
  assert.equal(jsonOf(a).id, jsonOf(b).id);
  assert.notEqual(signedText(a.requestBody, a.body), signedText(b.requestBody, b.body));
  await checkSigned(stack.port, jsonOf(a).id, signedText(a.requestBody, a.body));
});

test('server timeouts: idle keep-alive, slow headers, slow body', async () => {
  const p = await startProxy(stack.mock.url, { env: { IDLE_TIMEOUT: 1, HEADER_TIMEOUT: 1, BODY_TIMEOUT: 1 } });
  try {
    const c = new RawConn(p.port);
    assert.equal((await c.request({ path: '/' })).status, 200);
    await sleep(2500);
    assert.ok(c.closed, 'idle keep-alive connection closed after IDLE_TIMEOUT');
    const t0 = Date.now();
    const head = await rawExchange(p.port, ['GET / HTTP/1.1\r\nHost: x\r\n'], { waitMs: 4000 });
    assert.ok(head.closed && Date.now() - t0 < 3500, 'incomplete head closed after HEADER_TIMEOUT');
    assert.ok(head.bytes.length === 0 || /^HTTP\/1\.1 408 /.test(head.bytes.toString()), `answer: ${head.bytes.toString().slice(0, 40)}`);
    const t1 = Date.now();
    const body = await rawExchange(p.port, [requestBytes('{"model":"x","messages":[]}').subarray(0, -10)], { waitMs: 4000 });
    assert.ok(body.closed && Date.now() - t1 < 3500, 'incomplete body closed after BODY_TIMEOUT');
    assert.equal(await stack.mock.last().then((l) => l.body_len === 17), false, 'the partial body never reached the engine');
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('header limits: MAX_HEADER_SIZE and MAX_HEADERS → 431', async () => {
  const big = await rawExchange(stack.port, [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`], { waitMs: 2000, until: (b) => b.includes('\r\n\r\n') });
  assert.match(big.bytes.toString(), /^HTTP\/1\.1 431 /, 'header over 16 KiB');
  const many = Array.from({ length: 120 }, (_, i) => `X-H${i}: v\r\n`).join('');
  const r = await rawExchange(stack.port, [`GET / HTTP/1.1\r\nHost: x\r\n${many}\r\n`], { waitMs: 2000, until: (b) => b.includes('\r\n\r\n') });
  assert.match(r.bytes.toString(), /^HTTP\/1\.1 431 /, '120 headers');
});

test('HTTP/1.0 request: answered, then closed', async () => {
  const r = await rawExchange(stack.port, ['GET / HTTP/1.0\r\n\r\n'], { waitMs: 2000 });
  assert.match(r.bytes.toString(), /^HTTP\/1\.[01] 200 /);
  assert.ok(r.bytes.toString().endsWith('{}'));
  assert.ok(r.closed);
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});

