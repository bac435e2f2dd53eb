// Failure cases: engine down, engine errors, streams cut by the engine or by the client,
// oversized and malformed requests, authentication, unknown routes. After each kind of
// abuse the proxy must still answer normally.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, startProxy, freePort, MODEL, sleep } from './lib/harness.mjs';
import { cleanExitProblems } from './lib/harness.mjs';
import { RawConn, postJson, getPath, rawRequest, jsonOf, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, fetchSignature, poll, signedText, stopAndCheck } from './lib/common.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], ...extra });

async function stillHealthy(port = stack.port) {
  const r = await postJson(port, '/v1/chat/completions', chatBody({ max_tokens: 2 }));
  assert.equal(r.status, 200, 'proxy still serves completions');
  await checkSigned(port, jsonOf(r).id, signedText(r.requestBody, r.body));
}

test('engine down → 502 OpenAI error (stream and not), proxy keeps running', async () => {
  const closed = await freePort(); // nothing listens there
  const p = await startProxy(`http://127.0.0.1:${closed}`);
  try {
    for (const [route, body] of [['/v1/chat/completions', chatBody()], ['/v1/chat/completions', chatBody({ stream: true })],
      ['/v1/completions', { model: MODEL, prompt: 'x' }]]) {
      const e = assertOpenAIError(await postJson(p.port, route, body), 502, { type: 'upstream_error' });
      assert.equal(e.code, 'upstream_unavailable');
    }
    const root = await getPath(p.port, '/', { token: null });
    assert.equal(root.status, 200);
    // the report does not depend on the engine
    const rep = await getPath(p.port, `/v1/attestation/report?nonce=${'cd'.repeat(32)}`);
    assert.equal(rep.status, 200);
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('engine cuts the stream (cut:3) → client sees a truncated stream, no record', async () => {
  let firstId = null;
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ stream: true, max_tokens: 10, mock_fault: 'cut:3' }), {
    onBody: (piece, st) => {
      if (firstId) return;
      const m = /"id":"([^"]+)"/.exec(Buffer.concat(st.bodyParts).toString());
      if (m) firstId = m[1];
    },
  });
  assert.equal(r.status, 200, 'headers were already sent');
  assert.equal(r.complete, false, 'chunked body not terminated: the client can tell the stream was cut');
  assert.ok(firstId, 'an event with an id arrived before the cut');
  const text = r.body.toString();
  assert.ok(!text.includes('[DONE]'), 'no [DONE] after a cut');
  const tokens = sseJson(text.slice(0, text.lastIndexOf('\n\n') + 2)).filter((e) => e.choices?.[0]?.delta?.content);
  assert.ok(tokens.length <= 3, `at most 3 content events before the cut, got ${tokens.length}`);
  await sleep(200);
  assertOpenAIError(await fetchSignature(stack.port, firstId), 404, { type: 'not_found' });
  await stillHealthy();
});

test('client disconnects mid-stream → engine request cancelled, no record', async () => {
  const before = await stack.mock.stats();
  const conn = new RawConn(stack.port);
  let firstId = null;
  const done = new Promise((resolve) => {
    conn.request({
      method: 'POST', path: '/v1/chat/completions',
      headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' },
      body: JSON.stringify(chatBody({ stream: true, max_tokens: 50, mock_delay_us: 200000 })),
      onBody: (piece, st) => {
        const m = /"id":"([^"]+)"/.exec(Buffer.concat(st.bodyParts).toString());
        if (m && !firstId) {
          firstId = m[1];
          conn.destroy();
        }
      },
    }).then(resolve, resolve);
  });
  await done;
  assert.ok(firstId, 'first event received before aborting');
  const t0 = Date.now();
  const after = await poll(async () => {
    const s = await stack.mock.stats();
    return s.cancelled > before.cancelled ? s : null;
  }, { timeoutMs: 1000 });
  assert.ok(after, `mock counted the cancellation within 1 s (cancelled stayed ${before.cancelled})`);
  assert.ok(Date.now() - t0 <= 1100);
  const idle = await poll(async () => ((await stack.mock.stats()).active === 0 ? true : null), { timeoutMs: 1000 });
  assert.ok(idle, 'no engine request left active');
  assertOpenAIError(await fetchSignature(stack.port, firstId), 404, { type: 'not_found' });
  await stillHealthy();
});

test('engine slow to send headers (slow-headers:300) still completes and is signed', async () => {
  const t0 = Date.now();
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ stream: true, max_tokens: 3, mock_fault: 'slow-headers:300' }));
  assert.ok(Date.now() - t0 >= 250);
  assert.equal(r.status, 200);
  await checkSigned(stack.port, sseJson(r.body)[0].id, signedText(r.requestBody, r.body));
});

test('request bodies over VLLM_PROXY_MAX_REQUEST_SIZE → 413', async () => {
  const p = await startProxy(stack.mock.url, { env: { VLLM_PROXY_MAX_REQUEST_SIZE: 4096 } });
  try {
    const small = JSON.stringify(chatBody({ max_tokens: 2, pad: 'x'.repeat(3000) }));
    assert.ok(small.length < 4096);
    const ok = await postJson(p.port, '/v1/chat/completions', small);
    assert.equal(ok.status, 200, 'a body under the limit is served');

    const big = JSON.stringify(chatBody({ max_tokens: 2, pad: 'x'.repeat(5000) }));
    const r = await postJson(p.port, '/v1/chat/completions', big);
    assert.equal(r.status, 413, `content-length body over the limit: ${r.status}`);

    const r2 = await rawRequest(p.port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json' },
      chunks: [big.slice(0, 2000), big.slice(2000, 4000), big.slice(4000)],
    });
    assert.equal(r2.status, 413, `chunked body over the limit: ${r2.status}`);

    // announced size alone is enough: no need to send 100 MB
    const r3 = await rawRequest(p.port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { Authorization: 'Bearer test_token', 'Content-Type': 'application/json', 'Content-Length': '104857600' },
      body: '{"model":',
      timeoutMs: 5000,
    });
    assert.equal(r3.status, 413, 'Content-Length over the limit rejected before the body arrives');
    await stillHealthy(p.port);
  } finally {
    await p.stop();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('malformed JSON, a JSON array, an empty body → 400 OpenAI error', async () => {
  for (const body of ['{"model":', '[1,2,3]', '', 'null', '"text"', '{"model":"m",}', '{"model":"m","stream":"yes"}',
    '{"a":1}garbage', '{"a":NaN}', '\ufeff{"a":1}']) {
    for (const route of ['/v1/chat/completions', '/v1/completions']) {
      const r = await postJson(stack.port, route, Buffer.from(body));
      const e = assertOpenAIError(r, 400);
      assert.equal(e.code, 'invalid_json', `${JSON.stringify(body)} → code ${e.code}`);
    }
  }
  const before = await stack.mock.stats();
  await postJson(stack.port, '/v1/chat/completions', Buffer.from('[1]'));
  assert.equal((await stack.mock.stats()).requests, before.requests, 'invalid bodies are not forwarded');
  await stillHealthy();
});

test('authentication: missing, wrong, malformed → 401; all configured tokens work', async () => {
  const body = chatBody({ max_tokens: 1 });
  const missing = assertOpenAIError(await postJson(stack.port, '/v1/chat/completions', body, { token: null }), 401,
    { type: 'authentication_error', message: 'Invalid or missing Authorization header' });
  assert.equal(missing.code, 'invalid_api_key');
  const wrong = assertOpenAIError(await postJson(stack.port, '/v1/chat/completions', body, { token: 'wrong' }), 401,
    { type: 'authentication_error', message: 'Invalid token' });
  assert.equal(wrong.code, 'invalid_api_key');
  assert.equal((await postJson(stack.port, '/v1/chat/completions', body, { token: '' })).status, 401);
  assert.equal((await postJson(stack.port, '/v1/chat/completions', body, { token: 'test_token,other_token' })).status, 401);
  for (const h of ['Basic test_token', 'test_token', 'Bearertest_token']) {
    const r = await postJson(stack.port, '/v1/chat/completions', body, { token: null, headers: { Authorization: h } });
    assert.equal(r.status, 401, `Authorization: ${h}`);
  }
  const r401 = await postJson(stack.port, '/v1/completions', { model: MODEL, prompt: 'x' }, { token: 'wrong' });
  assert.equal(r401.status, 401);
  assert.doesNotThrow(() => jsonOf(r401), '401 body is JSON');
  for (const t of ['test_token', 'other_token', 'trusted_token']) {
    assert.equal((await postJson(stack.port, '/v1/chat/completions', body, { token: t })).status, 200, `token ${t}`);
  }
  // the engine never saw the rejected requests' bodies: nothing reaches it without auth
  const before = await stack.mock.stats();
  await postJson(stack.port, '/v1/chat/completions', body, { token: 'wrong' });
  assert.equal((await stack.mock.stats()).requests, before.requests, 'unauthenticated request not forwarded');
});

test('unknown path → 404 OpenAI error', async () => {
  assertOpenAIError(await getPath(stack.port, '/nope'), 404, { type: 'not_found' });
  assertOpenAIError(await getPath(stack.port, '/v1/nope', { token: null }), 404, { type: 'not_found' });
  assertOpenAIError(await postJson(stack.port, '/v2/chat/completions', chatBody()), 404, { type: 'not_found' });
});

test('wrong method on a known path → 405 OpenAI error', async () => {
  assertOpenAIError(await getPath(stack.port, '/v1/chat/completions'), 405);
  assertOpenAIError(await postJson(stack.port, '/v1/attestation/report', {}), 405);
  assertOpenAIError(await postJson(stack.port, '/', {}, { token: null }), 405);
});

test('garbage instead of HTTP gets a 400 or a closed connection, not a crash', async () => {
  const c = new RawConn(stack.port);
  await c.writeRaw('THIS IS NOT HTTP\r\n\r\n');
  await sleep(200);
  c.close();
  const big = new RawConn(stack.port);
  const r = await big.request({ method: 'GET', path: '/', headers: { 'X-Big': 'a'.repeat(200000) }, timeoutMs: 5000 })
    .catch((e) => ({ status: 'closed', err: e.message }));
  assert.ok(r.status === 'closed' || (r.status >= 400 && r.status < 500), `oversized header: ${r.status}`);
  big.close();
  await stillHealthy();
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
