// End-to-end encryption (issue 10): fail closed. The Dstack and NEAR formats are handled on chat
// completions (e2ee-dstack.test.mjs, e2ee-near.test.mjs), NEAR and ACI on completions,
// embeddings (and NEAR on rerank, score: e2ee-routes.test.mjs); everything else is refused as below. A request that carries any E2EE
// header is refused with a 4xx in the OpenAI error shape on every engine route, and nothing
// of it reaches the engine (the mock counts every request it receives). Before this, such a
// request was relayed as plaintext: the engine got the ciphertext as the prompt.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, MODEL } from './lib/harness.mjs';
import { postJson, getPath, jsonOf } from './lib/http.mjs';
import { assertOpenAIError, stopAndCheck } from './lib/common.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stopAndCheck(stack); });

const chatBody = { model: MODEL, messages: [{ role: 'user', content: 'aa'.repeat(40) }], max_tokens: 2 };

// Each E2EE header with a value a client of some format would send. The ACI family (no
// X-Signing-Algo, one of its six headers) is ACI E2EE v2 with headers missing on chat
// completions (e2ee-aci.test.mjs), and e2ee_unsupported_endpoint on the other routes.
const ACI_TYPE = 'e2ee_header_missing';
const ACI_ROUTE_TYPE = 'e2ee_unsupported_endpoint';
const OTHER_TYPE = 'e2ee_not_supported';
// NEAR's own headers without X-Signing-Algo and X-Client-Pub-Key: NEAR needs both (the NEAR
// server would answer in plaintext; here it is refused).
const NEAR_TYPE = 'e2ee_header_missing';
const HEADERS = [
  // on chat completions X-Signing-Algo is the Dstack family: the other headers are missing,
  // an empty value is not an algorithm
  ['X-Signing-Algo', 'ecdsa', 'e2ee_header_missing', 'e2ee_invalid_signing_algo'],
  ['X-Client-Pub-Key', 'ab'.repeat(32), ACI_TYPE],
  ['X-Model-Pub-Key', 'cd'.repeat(32), ACI_TYPE],
  ['X-E2EE-Version', '2', ACI_TYPE],
  ['X-E2EE-Nonce', '00'.repeat(32), ACI_TYPE],
  ['X-E2EE-Timestamp', '1750000000', ACI_TYPE],
  ['X-Encryption-Version', '2', NEAR_TYPE],
  ['X-Encrypt-All-Fields', 'true', NEAR_TYPE],
];

async function engineRequests() {
  return (await stack.mock.stats()).requests;
}

async function assertRefused(res, type) {
  const e = assertOpenAIError(res, 400, { type });
  assert.match(e.message, /not (supported|forwarded)/i, e.message);
  return e;
}

for (const [name, value, type, emptyType = type] of HEADERS) {
  test(`${name} alone: refused (400 ${type}), nothing reaches the engine`, async () => {
    const before = await engineRequests();
    await assertRefused(await postJson(stack.port, '/v1/chat/completions', chatBody, { headers: { [name]: value } }), type);
    await assertRefused(await postJson(stack.port, '/v1/chat/completions', { ...chatBody, stream: true },
      { headers: { [name]: value } }), type);
    // The name in another case, and an empty value, are the header all the same.
    await assertRefused(await postJson(stack.port, '/v1/chat/completions', chatBody,
      { headers: { [name.toLowerCase()]: '' } }), emptyType);
    assert.equal(await engineRequests(), before, 'the engine received nothing');
  });
}

test('the engine routes without E2EE fields refuse E2EE headers: tokenize, detokenize, models', async () => {
  const before = await engineRequests();
  const h = { headers: { 'X-Signing-Algo': 'ed25519', 'X-Client-Pub-Key': 'ab'.repeat(32) } };
  for (const [route, body] of [['/v1/tokenize', { model: MODEL, prompt: 'ab' }],
    ['/v1/detokenize', { model: MODEL, tokens: [1] }]])
    await assertRefused(await postJson(stack.port, route, body, h), OTHER_TYPE);
  // completions, embeddings, rerank and score take the E2EE path (e2ee-routes.test.mjs):
  // with this key (not a point) the request is refused there, before the engine
  for (const [route, body] of [['/v1/completions', { model: MODEL, prompt: 'ab' }],
    ['/v1/embeddings', { model: MODEL, input: 'ab' }], ['/v1/rerank', { model: MODEL, query: 'q', documents: ['d'] }],
    ['/v1/score', { model: MODEL, text_1: 'a', text_2: 'b' }]])
    await assertRefused(await postJson(stack.port, route, body, h), 'e2ee_invalid_public_key');
  await assertRefused(await getPath(stack.port, '/v1/models', { token: null, headers: { 'X-E2EE-Version': '2' } }), ACI_ROUTE_TYPE);
  assert.equal(await engineRequests(), before, 'the engine received nothing');
});

test('a full client header set of each family is refused, keep-alive kept, plaintext still served', async () => {
  const before = await engineRequests();
  const sets = [
    // NEAR v1/v2 clients (they send X-Model-Pub-Key too); abab… is not an Ed25519 point
    [{ 'X-Signing-Algo': 'ed25519', 'X-Client-Pub-Key': 'ab'.repeat(32), 'X-Model-Pub-Key': 'cd'.repeat(32),
      'X-Encryption-Version': '2', 'X-Encrypt-All-Fields': 'true' }, 'e2ee_invalid_public_key'],
    // Dstack v2
    [{ 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': 'ab'.repeat(64), 'X-Model-Pub-Key': 'cd'.repeat(64),
      'X-E2EE-Version': '2', 'X-E2EE-Nonce': 'n1700000000abcd1234abcd', 'X-E2EE-Timestamp': '1700000000' },
    'e2ee_invalid_public_key'],
    // ACI v2 (a timestamp of 2025: checked before the keys, §7.4)
    [{ 'X-E2EE-Version': '2', 'X-Client-Pub-Key': 'ab'.repeat(32), 'X-Model-Pub-Key': 'cd'.repeat(32),
      'X-E2EE-Nonce': '00'.repeat(32), 'X-E2EE-Timestamp': '1750000000' }, 'e2ee_invalid_timestamp'],
  ];
  for (const [headers, type] of sets)
    await assertRefused(await postJson(stack.port, '/v1/chat/completions', chatBody, { headers }), type);
  assert.equal(await engineRequests(), before, 'the engine received nothing');
  const ok = await postJson(stack.port, '/v1/chat/completions', chatBody);
  assert.equal(ok.status, 200);
  assert.ok(jsonOf(ok).choices, 'plaintext requests are relayed as before');
  assert.equal(await engineRequests(), before + 1);
});

test('authentication comes first: an E2EE request without a token is a 401', async () => {
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody, { token: null, headers: { 'X-Signing-Algo': 'ecdsa' } });
  assertOpenAIError(r, 401);
});

test('a repeated E2EE header is refused as ambiguous', async () => {
  const before = await engineRequests();
  // rawRequest writes an array value as one header line per element
  const r = await postJson(stack.port, '/v1/chat/completions', chatBody, { headers: { 'X-E2EE-Nonce': ['a', 'b'] } });
  assertOpenAIError(r, 400);
  assert.equal(await engineRequests(), before);
});
