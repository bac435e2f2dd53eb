// The reference proxy's own test cases (shared/docs/reference-proxy.md §16.1 items 1–11), rerun
// against the real binaries: the upstream is mock-vllm instead of respx, and the signature
// cache is the real store, so each case also checks the signature that was really stored.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, MODEL, TRUSTED_TOKEN, OTHER_TOKEN } from './lib/harness.mjs';
import { postJson, rawRequest, jsonOf, sseData, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, fetchSignature, signedText, stopAndCheck } from './lib/common.mjs';
import { sha256hex } from './lib/verify.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], ...extra });
const complBody = (extra = {}) => ({ model: MODEL, prompt: 'Hello', ...extra });

test('#1 stream success: 3 events (role delta, content, finish_reason), one id, [DONE]', async () => {
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ stream: true, max_tokens: 1 }));
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  assert.ok(r.complete, 'chunked body terminated properly');
  assert.match(r.headers['content-type'], /^text\/event-stream/);
  const data = sseData(r.body);
  assert.equal(data.at(-1), '[DONE]');
  const ev = sseJson(r.body);
  assert.equal(ev.length, 3, `3 JSON events for one token (role, content, finish): got ${ev.length}`);
  assert.match(ev[0].id, /^chatcmpl-/);
  assert.ok(ev.every((e) => e.id === ev[0].id), 'same id in every event');
  assert.equal(ev[0].choices[0].delta.role, 'assistant');
  assert.equal(typeof ev[1].choices[0].delta.content, 'string');
  assert.ok(ev[1].choices[0].delta.content.length > 0);
  assert.equal(ev[2].choices[0].finish_reason, 'length'); // max_tokens reached
  await checkSigned(stack.port, ev[0].id, signedText(r.requestBody, r.body));
});

test('#1b stream that ends naturally has finish_reason stop', async () => {
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ stream: true }));
  assert.equal(r.status, 200);
  const ev = sseJson(r.body);
  const fin = ev.filter((e) => e.choices?.[0]?.finish_reason);
  assert.equal(fin.length, 1);
  assert.ok(['stop', 'length'].includes(fin[0].choices[0].finish_reason));
});

async function viaMock(path, body) {
  return rawRequest(stack.mock.port, {
    method: 'POST', path, body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' },
  });
}

test('#2 stream, upstream 400 → 400 with the upstream body verbatim', async () => {
  const body = chatBody({ stream: true, mock_fault: '400' });
  const direct = await viaMock('/v1/chat/completions', body);
  assert.equal(direct.status, 400, 'mock answers 400 directly');
  const r = await postJson(stack.port, '/v1/chat/completions', body);
  assert.equal(r.status, 400);
  assert.deepEqual(jsonOf(r), jsonOf(direct), 'same error object');
  assert.equal(r.body.toString(), direct.body.toString(), 'same bytes');
  const e = jsonOf(r).error;
  assert.equal(typeof e.message, 'string');
  assert.equal(typeof e.type, 'string');
});

test('#2b non-stream, upstream 400 and 500 pass through with status and body', async () => {
  for (const fault of ['400', '500']) {
    const body = chatBody({ mock_fault: fault });
    const direct = await viaMock('/v1/chat/completions', body);
    const r = await postJson(stack.port, '/v1/chat/completions', body);
    assert.equal(r.status, Number(fault));
    assert.equal(r.body.toString(), direct.body.toString(), `fault ${fault}: same bytes as the engine`);
  }
});

let storedId;
test('#3 signature, default algorithm is ecdsa', async () => {
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 3 }));
  assert.equal(r.status, 200);
  storedId = jsonOf(r).id;
  const s = await fetchSignature(stack.port, storedId);
  assert.equal(s.status, 200);
  const j = jsonOf(s);
  assert.equal(j.signing_algo, 'ecdsa');
  assert.ok(j.signature.length > 0);
  assert.equal(j.text, signedText(r.requestBody, r.body));
  assert.deepEqual(Object.keys(j), ['text', 'signature', 'signing_address', 'signing_algo'], 'field order');
});

test('#4 signature, explicit ed25519', async () => {
  const s = await fetchSignature(stack.port, storedId, 'ed25519');
  assert.equal(s.status, 200);
  assert.equal(jsonOf(s).signing_algo, 'ed25519');
  const s2 = await fetchSignature(stack.port, storedId, 'ecdsa');
  assert.equal(jsonOf(s2).signing_algo, 'ecdsa');
});

test('#5 signature, invalid algorithm → 400 invalid_signing_algo', async () => {
  assertOpenAIError(await fetchSignature(stack.port, storedId, 'invalid-algo'), 400, {
    type: 'invalid_signing_algo', message: "Invalid signing algorithm. Must be 'ed25519' or 'ecdsa'",
  });
});

test('#6 signature, unknown id → 404 not_found (checked before the algorithm)', async () => {
  assertOpenAIError(await fetchSignature(stack.port, 'chatcmpl-doesnotexist'), 404, {
    type: 'not_found', message: 'Chat id not found or expired',
  });
  assertOpenAIError(await fetchSignature(stack.port, 'chatcmpl-doesnotexist', 'invalid-algo'), 404, { type: 'not_found' });
});

test('#6b signature endpoint requires the token; any valid token reads any record', async () => {
  const r = await fetchSignature(stack.port, storedId, undefined, null);
  assert.equal(r.status, 401);
  const r2 = await fetchSignature(stack.port, storedId, undefined, OTHER_TOKEN);
  assert.equal(r2.status, 200);
});

// #7–#10: X-Request-Hash. Only tokens in TRUSTED_REQUEST_HASH_TOKENS may set the request hash.
const clientHash = 'c0ffee'.padEnd(64, '0');
for (const [route, stream, mk] of [
  ['/v1/chat/completions', true, chatBody], ['/v1/chat/completions', false, chatBody],
  ['/v1/completions', true, complBody], ['/v1/completions', false, complBody],
]) {
  const label = `${route} ${stream ? 'stream' : 'non-stream'}`;
  test(`#7-10 X-Request-Hash from a trusted token is signed verbatim (${label})`, async () => {
    const r = await postJson(stack.port, route, mk({ stream, max_tokens: 3 }), {
      token: TRUSTED_TOKEN, headers: { 'X-Request-Hash': clientHash },
    });
    assert.equal(r.status, 200, r.body.toString().slice(0, 200));
    const id = stream ? sseJson(r.body)[0].id : jsonOf(r).id;
    assert.match(id, route.includes('chat') ? /^chatcmpl-/ : /^cmpl-/);
    await checkSigned(stack.port, id, `${clientHash}:${sha256hex(r.body)}`);
  });

  test(`X-Request-Hash from an untrusted token is ignored (${label})`, async () => {
    const r = await postJson(stack.port, route, mk({ stream, max_tokens: 3 }), {
      headers: { 'X-Request-Hash': clientHash },
    });
    assert.equal(r.status, 200);
    const id = stream ? sseJson(r.body)[0].id : jsonOf(r).id;
    await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
  });
}

test('X-Request-Hash from a trusted token must be 64 hex', async () => {
  for (const bad of ['custom-hash-from-client', 'ab'.repeat(31), 'zz'.repeat(32), 'ab'.repeat(33)]) {
    const r = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }), {
      token: TRUSTED_TOKEN, headers: { 'X-Request-Hash': bad },
    });
    assertOpenAIError(r, 400);
  }
});

test('#11 without X-Request-Hash the request hash is computed from the exact bytes', async () => {
  // deliberately odd formatting: the hash must cover these bytes, not a re-serialisation
  const raw = `{ "model" : "${MODEL}",\n  "messages":[ {"role":"user","content":"caf\\u00e9 \u00e9"} ],"max_tokens":2 }`;
  const r = await postJson(stack.port, '/v1/chat/completions', raw);
  assert.equal(r.status, 200);
  await checkSigned(stack.port, jsonOf(r).id, signedText(Buffer.from(raw), r.body));
});

test('two completions get two records, each signing its own bytes', async () => {
  const a = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }));
  const b = await postJson(stack.port, '/v1/chat/completions', chatBody({ max_tokens: 2 }));
  const ia = jsonOf(a).id;
  const ib = jsonOf(b).id;
  assert.notEqual(ia, ib);
  assert.equal(jsonOf(await fetchSignature(stack.port, ia)).text, signedText(a.requestBody, a.body));
  assert.equal(jsonOf(await fetchSignature(stack.port, ib)).text, signedText(b.requestBody, b.body));
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
