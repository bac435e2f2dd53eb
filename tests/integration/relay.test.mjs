// The relay itself: what reaches the engine (bytes, headers), what comes back (any network
// chunking), pass-through routes, metrics, keep-alive, a Unix-socket upstream, log hygiene.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { startStack, startMock, startProxy, MODEL, tmpDir } from './lib/harness.mjs';
import { cleanExitProblems } from './lib/harness.mjs';
import { RawConn, postJson, getPath, jsonOf, sseJson, sseData } from './lib/http.mjs';
import { checkSigned, signedText, stopAndCheck } from './lib/common.mjs';
import { sha256hex } from './lib/verify.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], ...extra });

for (const chunking of ['normal', 'split', 'coalesce']) {
  for (const route of ['/v1/chat/completions', '/v1/completions']) {
    test(`engine chunking "${chunking}" on ${route}: stream record matches the bytes received`, async () => {
      const body = route.includes('chat') ? chatBody({ stream: true, max_tokens: 7, mock_chunking: chunking })
        : { model: MODEL, prompt: 'Hi', stream: true, max_tokens: 7, mock_chunking: chunking };
      const r = await postJson(stack.port, route, body);
      assert.equal(r.status, 200);
      assert.ok(r.complete);
      const ev = sseJson(r.body);
      assert.ok(ev.length >= 7, `events: ${ev.length}`);
      const id = ev[0].id;
      assert.ok(ev.every((e) => e.id === id), 'one id');
      assert.equal(sseData(r.body).at(-1), '[DONE]');
      await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
    });
  }
  test(`engine chunking "${chunking}": non-stream record matches the bytes received`, async () => {
    const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 5, mock_chunking: chunking }));
    assert.equal(r.status, 200);
    await checkSigned(stack.port, jsonOf(r).id, signedText(r.requestBody, r.body));
  });
}

test('stream bytes are relayed verbatim: same framing as the engine', async () => {
  const rid = 'verbatim-' + Date.now();
  const body = chatBody({ stream: true, max_tokens: 4 });
  const viaProxy = await postJson(stack.port, '/v1/chat/completions', body, { headers: { 'X-Request-Id': rid } });
  // Compare event by event with the proxy's own output structure: the proxy must not re-serialise.
  const data = sseData(viaProxy.body);
  for (const d of data) {
    if (d === '[DONE]') continue;
    assert.equal(JSON.stringify(JSON.parse(d)), d, 'each event is exactly the engine\'s compact JSON');
  }
  assert.match(viaProxy.body.toString(), /^data: \{.*\}\n\n/, 'events framed as "data: …\\n\\n"');
  assert.ok(!viaProxy.body.toString().includes('\n\n\n'), 'no extra blank lines (not the DSTACK re-framing)');
});

test('response framing: streams chunked with X-Accel-Buffering: no; JSON with the engine\'s Content-Length', async () => {
  const s = await postJson(stack.port, '/v1/chat/completions', chatBody({ stream: true, max_tokens: 2 }));
  assert.match(s.headers['content-type'], /^text\/event-stream/);
  assert.equal(s.headers['x-accel-buffering'], 'no');
  assert.match(s.headers['transfer-encoding'] ?? '', /chunked/);
  const n = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }));
  assert.equal(n.headers['content-length'], String(n.body.length));
  assert.equal(n.headers['transfer-encoding'], undefined);
  assert.match(stack.proxy.stderr(), /SIMULATED/, 'logs say SIMULATED even at LOG_LEVEL=warn');
});

test('request body reaches the engine byte for byte', async () => {
  const raw = `{"model":"${MODEL}" ,  "messages":[{"role":"user","content":"a\\u00e9\\/b \u00e9"}],\n"max_tokens":2,"x":1.0e0,"y":12345678901234567890}`;
  const r = await postJson(stack.port, '/v1/chat/completions', raw);
  assert.equal(r.status, 200);
  const last = await stack.mock.last();
  assert.equal(last.method, 'POST');
  assert.equal(last.path, '/v1/chat/completions');
  assert.equal(last.body_len, Buffer.byteLength(raw));
  assert.equal(last.body_sha256, sha256hex(Buffer.from(raw)));
  await checkSigned(stack.port, jsonOf(r).id, signedText(Buffer.from(raw), r.body));
});

test('chunked request body: forwarded and hashed de-chunked', async () => {
  const raw = JSON.stringify(chatBody({ max_tokens: 2 }));
  const r = await new RawConn(stack.port).request({
    method: 'POST', path: '/v1/chat/completions',
    headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' },
    chunks: [raw.slice(0, 5), raw.slice(5, 20), raw.slice(20)],
  });
  assert.equal(r.status, 200);
  assert.equal((await stack.mock.last()).body_sha256, sha256hex(Buffer.from(raw)));
  await checkSigned(stack.port, jsonOf(r).id, signedText(Buffer.from(raw), r.body));
});

test('empty tool_calls are stripped before the engine; the signed hash is of the original bytes', async () => {
  const original = JSON.stringify({
    model: MODEL,
    messages: [
      { role: 'user', content: 'What is the weather?' },
      { role: 'assistant', content: 'Let me think.', tool_calls: [] },
      { role: 'user', content: 'Well?' },
    ],
    max_tokens: 2,
  });
  const stripped = JSON.stringify({
    model: MODEL,
    messages: [
      { role: 'user', content: 'What is the weather?' },
      { role: 'assistant', content: 'Let me think.' },
      { role: 'user', content: 'Well?' },
    ],
    max_tokens: 2,
  });
  const r = await postJson(stack.port, '/v1/chat/completions', original);
  assert.equal(r.status, 200, r.body.toString().slice(0, 200));
  const last = await stack.mock.last();
  assert.equal(last.body_sha256, sha256hex(Buffer.from(stripped)), 'engine got the body without "tool_calls":[]');
  await checkSigned(stack.port, jsonOf(r).id, signedText(Buffer.from(original), r.body));
});

test('non-empty or null tool_calls are left alone', async () => {
  const original = JSON.stringify({
    model: MODEL,
    messages: [
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'c1', content: 'ok' },
      { role: 'assistant', content: 'x', tool_calls: null },
    ],
    max_tokens: 2,
  });
  const r = await postJson(stack.port, '/v1/chat/completions', original);
  assert.equal(r.status, 200);
  assert.equal((await stack.mock.last()).body_sha256, sha256hex(Buffer.from(original)));
});

const RID_RANDOM = /^[0-9a-f]{32}$/;

test('X-Request-Id is for tracing: the engine gets "<client id>-<32 random hex>", the client gets it back', async () => {
  const rid = `it-${Date.now()}-abc`;
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }), { headers: { 'X-Request-Id': rid } });
  assert.equal(r.status, 200);
  const sent = (await stack.mock.last()).headers['x-request-id'];
  assert.ok(sent.startsWith(`${rid}-`), `engine's X-Request-Id ${sent}`);
  assert.match(sent.slice(rid.length + 1), RID_RANDOM);
  assert.equal(r.headers['x-request-id'], sent, 'the client sees the id the engine was given');
  const id = jsonOf(r).id;
  assert.equal(id, `chatcmpl-${sent}`);
  await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
  // Without one, or with one that is not a short plain value: the proxy's random id only.
  for (const headers of [{}, { 'X-Request-Id': 'a/b+c d' }, { 'X-Request-Id': 'x'.repeat(65) }]) {
    const s = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1, stream: true }), { headers });
    assert.equal(s.status, 200);
    const got = (await stack.mock.last()).headers['x-request-id'];
    assert.match(got, RID_RANDOM, `engine's X-Request-Id for ${JSON.stringify(headers)}`);
    assert.equal(s.headers['x-request-id'], got);
    assert.equal(sseJson(s.body)[0].id, `chatcmpl-${got}`);
  }
});

test('no client can pre-claim another request\'s id (X-Request-Id or the body\'s request_id)', async () => {
  // vLLM names a completion chatcmpl-<X-Request-Id>, else chatcmpl-<body request_id>; the
  // first record under an id wins. A squatter sends the id first, the victim second.
  const victim = `victim-${Date.now()}`;
  const squat = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1, request_id: victim }),
    { token: 'other_token', headers: { 'X-Request-Id': victim } });
  assert.equal(squat.status, 200);
  assert.notEqual(jsonOf(squat).id, `chatcmpl-${victim}`, 'the squatter did not get the id it chose');
  const bodyOnly = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1, request_id: victim }),
    { token: 'other_token' });
  assert.notEqual(jsonOf(bodyOnly).id, `chatcmpl-${victim}`, 'nor through the body');
  for (const headers of [{ 'X-Request-Id': victim }, {}]) {
    const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 3, request_id: victim }), { headers });
    assert.equal(r.status, 200);
    const id = jsonOf(r).id;
    assert.notEqual(id, jsonOf(squat).id);
    assert.notEqual(id, jsonOf(bodyOnly).id);
    await checkSigned(stack.port, id, signedText(r.requestBody, r.body)); // the victim's own answer
  }
});

test('the proxy token never reaches the engine', async () => {
  await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }));
  const last = await stack.mock.last();
  assert.equal(last.headers.authorization, undefined, `engine saw Authorization: ${last.headers.authorization}`);
  assert.ok(!JSON.stringify(last.headers).includes('test_token'), 'token in no header');
});

test('VLLM_API_KEY is sent to the engine instead', async () => {
  const p = await startProxy(stack.mock.url, { env: { VLLM_API_KEY: 'engine-secret-key' } });
  try {
    for (const [route, body] of [['/v1/chat/completions', chatBody({ max_tokens: 1 })], ['/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 1 }]]) {
      const r = await postJson(p.port, route, body);
      assert.equal(r.status, 200);
      const last = await stack.mock.last();
      assert.equal(last.headers.authorization, 'Bearer engine-secret-key', route);
    }
    const m = await getPath(p.port, '/v1/models', { token: null });
    assert.equal(m.status, 200);
    assert.equal((await stack.mock.last()).headers.authorization, 'Bearer engine-secret-key', '/v1/models');
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('GET /v1/models: no auth needed, reaches the engine', async () => {
  const r = await getPath(stack.port, '/v1/models', { token: null });
  assert.equal(r.status, 200);
  const j = jsonOf(r);
  assert.ok(j.data.some((m) => m.id === MODEL));
  const last = await stack.mock.last();
  assert.equal(last.method, 'GET');
  assert.equal(last.path, '/v1/models');
});

for (const [route, body, enginePath] of [
  ['/v1/embeddings', { model: MODEL, input: 'hello' }, /^\/v1\/embeddings$/],
  ['/v1/tokenize', { model: MODEL, prompt: 'hello world' }, /^\/tokenize$/],
  ['/v1/detokenize', { model: MODEL, tokens: [1, 2, 3] }, /^\/detokenize$/],
  ['/v1/rerank', { model: MODEL, query: 'q', documents: ['a', 'b'] }, /^\/v1\/rerank$/],
  ['/v1/score', { model: MODEL, text_1: 'a', text_2: 'b' }, /^\/v1\/score$/],
]) {
  test(`pass-through ${route} reaches the engine`, async () => {
    const r = await postJson(stack.port, route, body);
    assert.equal(r.status, 200, `${route}: ${r.status} ${r.body.toString().slice(0, 200)}`);
    assert.doesNotThrow(() => jsonOf(r));
    const last = await stack.mock.last();
    assert.equal(last.method, 'POST');
    assert.match(last.path, enginePath);
    assert.equal(last.body_sha256, sha256hex(r.requestBody), 'body forwarded unchanged');
    assert.equal(last.headers.authorization, undefined, 'proxy token not forwarded');
    const noauth = await postJson(stack.port, route, body, { token: null });
    assert.equal(noauth.status, 401, `${route} without a token`);
  });
}

test('GET /v1/metrics returns Prometheus text', async () => {
  await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 1 }));
  const r = await getPath(stack.port, '/v1/metrics', { token: null });
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/plain/);
  const text = r.body.toString();
  const samples = text.split('\n').filter((l) => l && !l.startsWith('#'));
  assert.ok(samples.length > 0, 'has samples');
  for (const l of samples) assert.match(l, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEaInNf]+( \d+)?$/, `sample line: ${l}`);
  assert.match(text, /^# (HELP|TYPE) /m);
  assert.match(text, /^vllm:num_requests_running\{/m, 'the engine\'s own metrics are included');
  assert.ok(text.includes('# --- vLLM Backend Metrics ---'), 'engine section marked as in the reference');
  assert.match(text, /^vllm_proxy_\w+/m, 'the proxy\'s own metrics');
});

test('GET /version answers 200', async () => {
  const r = await getPath(stack.port, '/version', { token: null });
  assert.equal(r.status, 200);
  const v = jsonOf(r);
  assert.equal(v.name, 'vllm-proxy');
  assert.match(v.version, /^\d+\.\d+/);
  assert.equal(v.attestation, 'simulated');
});

test('GET / answers {} without auth', async () => {
  const r = await getPath(stack.port, '/', { token: null });
  assert.equal(r.status, 200);
  assert.deepEqual(jsonOf(r), {});
});

test('keep-alive: 60 requests of every kind on one connection', async () => {
  const c = new RawConn(stack.port);
  const ids = [];
  try {
    for (let i = 0; i < 60; i++) {
      let r;
      switch (i % 6) {
        case 0: r = await getPath(stack.port, '/', { conn: c, token: null }); break;
        case 1: r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }), { conn: c }); ids.push([jsonOf(r).id, r]); break;
        case 2: r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2, stream: true }), { conn: c }); ids.push([sseJson(r.body)[0].id, r]); break;
        case 3: r = await getPath(stack.port, `/v1/attestation/report?nonce=${'0f'.repeat(32)}`, { conn: c }); break;
        case 4: r = await getPath(stack.port, '/v1/models', { conn: c, token: null }); break;
        case 5: r = await getPath(stack.port, `/v1/signature/${ids.at(-1)[0]}`, { conn: c }); break;
      }
      assert.equal(r.status, 200, `request ${i}: ${r.status}`);
      assert.ok(r.complete, `request ${i} complete`);
      assert.ok(!c.closed, `connection still open after request ${i}`);
    }
    // an error answer does not close the connection either
    const e = await getPath(stack.port, '/v1/signature/chatcmpl-none', { conn: c });
    assert.equal(e.status, 404);
    const ok = await getPath(stack.port, '/', { conn: c, token: null });
    assert.equal(ok.status, 200);
    assert.ok(!c.closed);
  } finally {
    c.close();
  }
  for (const [id, r] of ids.slice(0, 4)) await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
});

test('Connection: close is honoured', async () => {
  const c = new RawConn(stack.port);
  const r = await c.request({ method: 'GET', path: '/', headers: { Connection: 'close' } });
  assert.equal(r.status, 200);
  await new Promise((res) => setTimeout(res, 200));
  assert.ok(c.closed, 'server closed the connection');
});

test('Unix-socket upstream', async () => {
  const dir = tmpDir();
  const sock = path.join(dir, 'mock.sock');
  const mock = await startMock({ unix: sock });
  let p;
  try {
    p = await startProxy(`unix:${sock}`);
    const r = await postJson(p.port, '/v1/chat/completions', chatBody({ stream: true, max_tokens: 3 }));
    assert.equal(r.status, 200);
    await checkSigned(p.port, sseJson(r.body)[0].id, signedText(r.requestBody, r.body));
    const m = await getPath(p.port, '/v1/models', { token: null });
    assert.equal(m.status, 200);
  } finally {
    await p?.stop();
    await mock.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('prompts and completions never reach the logs (LOG_LEVEL=debug)', async () => {
  const p = await startProxy(stack.mock.url, { env: { LOG_LEVEL: 'debug' } });
  const secret = 'ZebraQuokkaSecret' + Date.now();
  let completion;
  try {
    const r = await postJson(p.port, '/v1/chat/completions', chatBody({ messages: [{ role: 'user', content: secret }], max_tokens: 4 }));
    assert.equal(r.status, 200);
    completion = jsonOf(r).choices[0].message.content;
    const s = await postJson(p.port, '/v1/chat/completions', chatBody({ messages: [{ role: 'user', content: secret }], max_tokens: 4, stream: true }));
    assert.equal(s.status, 200);
    await new Promise((res) => setTimeout(res, 100));
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
  const log = p.stderr();
  assert.match(log, /listening on/, 'startup banner');
  assert.match(log, /simulat/i, 'simulated attestation is logged');
  assert.ok(!log.includes(secret), 'prompt text absent from logs');
  assert.ok(!log.includes('test_token'), 'tokens absent from logs');
  if (completion && completion.length > 12) assert.ok(!log.includes(completion), 'completion text absent from logs');
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
