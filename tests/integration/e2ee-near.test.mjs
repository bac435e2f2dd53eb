// End-to-end encryption, NEAR's formats v1 and v2 (issue 10; ../shared/docs/e2ee-formats.md §3,
// §4, §1.2). The client here is written from that document the way NEAR's TS client does it:
// tweetnacl for the v1 ed25519 NaCl box (XSalsa20-Poly1305), @noble/* for everything else
// (secp256k1 ECDH-x + HKDF-SHA256 + AES-256-GCM, X25519 + HKDF + XChaCha20-Poly1305 for v2,
// Ed25519 → X25519 conversions). None of it is our C code. The recording mock engine
// (--record-body) proves the engine got the plaintext; the client checks that only ciphertext
// crossed the wire, that each field carries its own ephemeral key (§3.1), and that the
// signature covers the bytes sent.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { startStack, MODEL } from './lib/harness.mjs';
import { postJson, getPath, jsonOf, sseData, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, signedText, stopAndCheck } from './lib/common.mjs';
import { serverKey as nearServerKey, clientKeys, seal, open, ephOf, nearHeaders } from './lib/near-client.mjs';

let stack;
before(async () => {
  stack = await startStack({ mock: { args: ['--record-body'] }, proxy: { args: ['--workers', '2'] } });
});
after(async () => { await stopAndCheck(stack); });

// ---- the NEAR client, from the document (lib/near-client.mjs) ----

const dec = new TextDecoder('utf-8', { fatal: true });

async function serverKey(algo) { return nearServerKey(stack.port, algo); }


// The plaintext conversation: strings, a vision message whose parts array travels as one
// encrypted string (restored as an array, §3.4), an assistant turn with reasoning_content.
const IMAGE = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } };
const PLAIN = [
  { role: 'system', content: 'You are a careful assistant. "quotes" \\ and ünïcödé 🙂' },
  { role: 'user', content: [{ type: 'text', text: 'what is in this image?' }, IMAGE] },
  { role: 'assistant', content: 'a small png', reasoning_content: 'it is tiny' },
  { role: 'user', content: 'and now?' },
];

function encryptMessages(algo, version, serverHex) {
  const s = (t) => seal(algo, version, serverHex, t);
  return [
    { role: 'system', content: s(PLAIN[0].content) },
    { role: 'user', content: s(JSON.stringify(PLAIN[1].content)) },
    { role: 'assistant', content: s(PLAIN[2].content), reasoning_content: s(PLAIN[2].reasoning_content) },
    { role: 'user', content: s(PLAIN[3].content) },
  ];
}


async function engineRequests() { return (await stack.mock.stats()).requests; }
async function engineBody() { return JSON.parse((await stack.mock.last()).body); }

const HEX = /^[0-9a-f]+$/;

async function plainAnswer(stream, messages = PLAIN) {
  const body = { model: MODEL, messages, max_tokens: 6, ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) };
  const r = await postJson(stack.port, '/v1/chat/completions', body);
  assert.equal(r.status, 200);
  if (!stream) return jsonOf(r).choices[0].message.content;
  return sseJson(r.body).filter((e) => e.choices.length).map((e) => e.choices[0].delta.content ?? '').join('');
}

// The cases: NEAR's clients always send X-Model-Pub-Key; v1 ecdsa is then byte-identical to
// Dstack v1 and answered Dstack-compatibly (X-E2EE-* headers, one ephemeral key per answer),
// which NEAR's clients read all the same. Without X-Model-Pub-Key (the NEAR server does not
// need it) and for v2 and v1 ed25519 (NaCl box, found by trial) the answer is NEAR's.
const CASES = [
  { algo: 'ecdsa', version: 1, modelKey: true, near: false },
  { algo: 'ecdsa', version: 1, modelKey: false, near: true },
  { algo: 'ed25519', version: 1, modelKey: true, near: true },
  { algo: 'ed25519', version: 1, modelKey: false, near: true },
  { algo: 'ed25519', version: 2, modelKey: true, near: true },
  { algo: 'ecdsa', version: 2, modelKey: true, near: true },
];

for (const { algo, version, modelKey, near } of CASES) {
  for (const stream of [false, true]) {
    const name = `NEAR v${version} ${algo}${modelKey ? '' : ' (no X-Model-Pub-Key)'} ${stream ? 'stream' : 'non-stream'}`;
    test(`${name}: engine gets plaintext, client gets ciphertext, signature over the bytes sent`, async () => {
      const serverHex = await serverKey(algo);
      const ck = clientKeys(algo);
      const body = { model: MODEL, messages: encryptMessages(algo, version, serverHex), max_tokens: 6,
        ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
        ...(stream && algo === 'ed25519' ? { mock_chunking: 'split' } : {}) };
      const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: nearHeaders(ck, serverHex, version, { modelKey }) });
      assert.equal(r.status, 200, r.body.toString());
      if (near) assert.equal(r.headers['x-e2ee-applied'], undefined, 'NEAR adds no E2EE response headers (§3.5)');
      else assert.equal(r.headers['x-e2ee-applied'], 'true');

      const got = await engineBody();
      assert.deepEqual(got.messages, PLAIN, 'the engine got the decrypted messages');
      assert.equal(got.model, MODEL);

      const expected = await plainAnswer(stream);
      let id, text = '';
      const ephs = new Set();
      let sealed = 0;
      if (!stream) {
        const j = jsonOf(r);
        id = j.id;
        const c = j.choices[0].message.content;
        assert.match(c, HEX, 'content is ciphertext on the wire');
        text = open(ck, version, c);
        assert.ok(!r.body.toString().includes(expected), 'no plaintext on the wire');
      } else {
        assert.equal(sseData(r.body).at(-1), '[DONE]', 'the stream ends with [DONE]');
        const events = sseJson(r.body);
        const usage = events.filter((e) => e.choices.length === 0);
        assert.equal(usage.length, 1, 'the usage chunk is passed on');
        for (const e of events.filter((ev) => ev.choices.length)) {
          id = e.id;
          const d = e.choices[0].delta;
          if (d.content === undefined || d.content === '') continue; // the role event's "" (NEAR leaves it)
          assert.match(d.content, HEX, 'each delta is ciphertext');
          ephs.add(ephOf(algo, d.content));
          sealed++;
          text += open(ck, version, d.content);
        }
        assert.ok(sealed > 1);
        if (near) assert.equal(ephs.size, sealed, 'a fresh ephemeral key per field (§3.1)');
      }
      assert.equal(text, expected, 'the decrypted answer is the engine\'s');
      await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
    });
  }
}

test('NEAR: a fresh ephemeral key for every field of every choice (n=2)', async () => {
  for (const [algo, version] of [['ed25519', 1], ['ed25519', 2], ['ecdsa', 2]]) {
    const serverHex = await serverKey(algo);
    const ck = clientKeys(algo);
    const body = { model: MODEL, messages: [{ role: 'user', content: seal(algo, version, serverHex, 'hi') }], max_tokens: 4, n: 2 };
    const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: nearHeaders(ck, serverHex, version) });
    assert.equal(r.status, 200, r.body.toString());
    const cs = jsonOf(r).choices.map((c) => c.message.content);
    assert.equal(cs.length, 2);
    assert.notEqual(ephOf(algo, cs[0]), ephOf(algo, cs[1]), `${algo} v${version}: one ephemeral key per field`);
    for (const c of cs) assert.ok(open(ck, version, c).length > 0);
    assert.equal((await engineBody()).messages[0].content, 'hi');
  }
});

test('NEAR X-Encrypt-All-Fields: tools, tool calls and names decrypted (leniently), the rest as v1', async () => {
  const serverHex = await serverKey('ed25519');
  const ck = clientKeys('ed25519');
  const s = (t) => seal('ed25519', 2, serverHex, t);
  const params = { type: 'object', properties: { city: { type: 'string' } } };
  const body = {
    model: MODEL, max_tokens: 4,
    messages: [
      { role: 'user', content: s('weather in Paris?'), name: s('alice') },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: s('get_weather'), arguments: s('{"city":"Paris"}') } }] },
      { role: 'tool', tool_call_id: 'call_1', content: s('18 C, sunny') },
    ],
    tools: [
      { type: 'function', function: { name: s('get_weather'), description: s('current weather'), parameters: s(JSON.stringify(params)) } },
      // lenient (§3.4): values that cannot be a sealed field are left as they are
      { type: 'function', function: { name: 'clear_tool', description: 'sent in clear', parameters: params } },
    ],
    tool_choice: { type: 'function', function: { name: s('get_weather') } },
  };
  const r = await postJson(stack.port, '/v1/chat/completions', body,
    { headers: nearHeaders(ck, serverHex, 2, { extra: { 'X-Encrypt-All-Fields': 'true' } }) });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['x-e2ee-applied'], undefined);
  const got = await engineBody();
  assert.deepEqual(got.messages, [
    { role: 'user', content: 'weather in Paris?', name: 'alice' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '18 C, sunny' },
  ]);
  assert.deepEqual(got.tools, [
    { type: 'function', function: { name: 'get_weather', description: 'current weather', parameters: params } },
    { type: 'function', function: { name: 'clear_tool', description: 'sent in clear', parameters: params } },
  ]);
  assert.deepEqual(got.tool_choice, { type: 'function', function: { name: 'get_weather' } });
  const c = jsonOf(r).choices[0].message.content;
  assert.match(c, HEX);
  assert.ok(open(ck, 2, c).length > 0);
  await checkSigned(stack.port, jsonOf(r).id, signedText(r.requestBody, r.body));

  // Without the header NEAR leaves tool calls unencrypted (the NEAR server answers them in
  // clear): refused before anything reaches the engine, unless tool_choice is "none".
  const before = await engineRequests();
  const r2 = await postJson(stack.port, '/v1/chat/completions', { ...body, messages: body.messages.slice(0, 1).map((m) => ({ ...m, name: 'bob' })) },
    { headers: nearHeaders(ck, serverHex, 2) });
  assert.equal(r2.status, 400, r2.body.toString());
  assert.equal(jsonOf(r2).error.type, 'e2ee_unsupported_field');
  assert.equal(await engineRequests(), before, 'nothing reached the engine');
  const r3 = await postJson(stack.port, '/v1/chat/completions', { ...body, tool_choice: 'none', messages: body.messages.slice(0, 1).map((m) => ({ ...m, name: 'bob' })) },
    { headers: nearHeaders(ck, serverHex, 2) });
  assert.equal(r3.status, 200, r3.body.toString());
  assert.deepEqual((await engineBody()).tools, body.tools, 'tools untouched without X-Encrypt-All-Fields');
  // logprobs likewise; with X-Encrypt-All-Fields they are encrypted, so they are served
  for (const extra of [{ logprobs: true }, { logprobs: true, top_logprobs: 2 }, { prompt_logprobs: 1 }, { return_token_ids: true }]) {
    const r4 = await postJson(stack.port, '/v1/chat/completions', { model: body.model, messages: body.messages.slice(0, 1), ...extra },
      { headers: nearHeaders(ck, serverHex, 2) });
    assert.equal(r4.status, 400, JSON.stringify(extra));
    assert.equal(jsonOf(r4).error.type, 'e2ee_unsupported_field');
  }
  assert.equal(await engineRequests(), before + 1, 'only the tool_choice "none" request reached the engine');
  const r5 = await postJson(stack.port, '/v1/chat/completions', { model: body.model, messages: body.messages.slice(0, 1), logprobs: true },
    { headers: nearHeaders(ck, serverHex, 2, { extra: { 'X-Encrypt-All-Fields': 'true' } }) });
  assert.equal(r5.status, 200, r5.body.toString());
});

test('NEAR X-Encrypt-Tool-Calls (1 or true): an alias of X-Encrypt-All-Fields; tool calls decrypted, another value is not the switch', async () => {
  for (const [algo, version] of [['ed25519', 2], ['ecdsa', 1]]) {
    const serverHex = await serverKey(algo);
    const ck = clientKeys(algo);
    const s = (t) => seal(algo, version, serverHex, t);
    const body = {
      model: MODEL, max_tokens: 4,
      messages: [
        { role: 'user', content: s('weather in Paris?') },
        { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function',
          function: { name: s('get_weather'), arguments: s('{"city":"Paris"}') } }] },
        { role: 'tool', tool_call_id: 'call_1', content: s('18 C, sunny') },
      ],
      tools: [{ type: 'function', function: { name: s('get_weather'), description: s('current weather') } }],
    };
    for (const value of ['1', 'true', 'TRUE']) {
      const r = await postJson(stack.port, '/v1/chat/completions', body,
        { headers: nearHeaders(ck, serverHex, version, { extra: { 'X-Encrypt-Tool-Calls': value } }) });
      assert.equal(r.status, 200, r.body.toString());
      const got = await engineBody();
      assert.deepEqual(got.messages[1].tool_calls, [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
        `${algo} v${version} X-Encrypt-Tool-Calls: ${value}: the tool call's sealed fields were opened`);
      assert.deepEqual(got.tools, [{ type: 'function', function: { name: 'get_weather', description: 'current weather' } }]);
      const c = jsonOf(r).choices[0].message.content;
      assert.match(c, HEX);
      assert.ok(open(ck, version, c).length > 0);
    }
    // `0` is not the switch: the tool call's fields are not NEAR's, they pass as sent (ciphertext
    // the client chose to send; only message content is sealed without the switch) ...
    const r0 = await postJson(stack.port, '/v1/chat/completions', { ...body, tool_choice: 'none' },
      { headers: nearHeaders(ck, serverHex, version, { extra: { 'X-Encrypt-Tool-Calls': '0' } }) });
    assert.equal(r0.status, 200, r0.body.toString());
    assert.deepEqual((await engineBody()).messages[1].tool_calls, body.messages[1].tool_calls);
    // ... and tools without the switch would have their calls answered in clear: refused
    const r1 = await postJson(stack.port, '/v1/chat/completions', body,
      { headers: nearHeaders(ck, serverHex, version, { extra: { 'X-Encrypt-Tool-Calls': '0' } }) });
    assertOpenAIError(r1, 400, { type: 'e2ee_unsupported_field' });
  }
  // alone (without X-Signing-Algo and X-Client-Pub-Key) it selects nothing: refused, as NEAR's own headers are
  const r = await postJson(stack.port, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }] },
    { headers: { 'X-Encrypt-Tool-Calls': 'true' } });
  assertOpenAIError(r, 400, { type: 'e2ee_header_missing' });
  assert.equal(r.headers['x-aci-version'], undefined, 'not an ACI request');
});

test('NEAR v1 ed25519: the cipher of the answer is the request\'s (trial decryption, §1.2)', async () => {
  // The same headers, a Dstack v1 AES-GCM field: answered with AES-GCM and Dstack's headers.
  const serverHex = await serverKey('ed25519');
  const ck = clientKeys('ed25519');
  const serverX = ed25519.utils.toMontgomery(hexToBytes(serverHex));
  const esk = x25519.utils.randomSecretKey();
  const key = hkdf(sha256, x25519.getSharedSecret(esk, serverX), undefined, utf8ToBytes('ed25519_encryption'), 32);
  const nonce = randomBytes(12);
  const aes = bytesToHex(concatBytes(x25519.getPublicKey(esk), nonce, gcm(key, nonce).encrypt(utf8ToBytes('hello'))));
  const r = await postJson(stack.port, '/v1/chat/completions', { model: MODEL, max_tokens: 3, messages: [{ role: 'user', content: aes }] },
    { headers: nearHeaders(ck, serverHex, 1) });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['x-e2ee-applied'], 'true', 'Dstack v1 recognised by its cipher');
  const b = hexToBytes(jsonOf(r).choices[0].message.content);
  const k2 = hkdf(sha256, x25519.getSharedSecret(ck.sk, b.slice(0, 32)), undefined, utf8ToBytes('ed25519_encryption'), 32);
  assert.ok(dec.decode(gcm(k2, b.slice(32, 44)).decrypt(b.slice(44))).length > 0);
  assert.equal((await engineBody()).messages[0].content, 'hello');
  // A NaCl box and an AES-GCM field in one request: the second does not open with the first's cipher.
  await refused(nearHeaders(ck, serverHex, 1), { model: MODEL, messages: [
    { role: 'user', content: seal('ed25519', 1, serverHex, 'box') }, { role: 'user', content: aes }] }, 'e2ee_decryption_failed', 'Decryption failed');
});

// ---- errors: every NEAR error (§3.5), nothing of a refused request reaches the engine ----

async function refused(headers, body, type, message) {
  const before = await engineRequests();
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers });
  const e = assertOpenAIError(r, 400, { type });
  assert.match(e.message, /not forwarded/);
  if (message) assert.ok(e.message.startsWith(message), `${e.message} starts with ${message}`);
  assert.equal(await engineRequests(), before, `nothing reached the engine (${type})`);
  return e;
}

test('every NEAR error, with NEAR\'s message and the E2EE error type; nothing forwarded', async () => {
  const serverHex = await serverKey('ed25519');
  const ecHex = await serverKey('ecdsa');
  const ck = clientKeys('ed25519');
  const good = { model: MODEL, messages: [{ role: 'user', content: seal('ed25519', 2, serverHex, 'secret prompt') }], max_tokens: 2 };
  const H = (o = {}) => ({ ...nearHeaders(ck, serverHex, 2), ...o });

  const both = 'Both X-Signing-Algo and X-Client-Pub-Key headers must be present together';
  await refused({ 'X-Signing-Algo': 'ed25519', 'X-Encryption-Version': '2' }, good, 'e2ee_header_missing', both);
  await refused({ 'X-Encryption-Version': '2', 'X-Encrypt-All-Fields': 'true' }, good, 'e2ee_header_missing', both);
  await refused(H({ 'X-Signing-Algo': 'rsa' }), good, 'e2ee_invalid_signing_algo', 'Invalid X-Signing-Algo: rsa');
  await refused(H({ 'X-Client-Pub-Key': 'zz' + ck.header.slice(2) }), good, 'e2ee_invalid_public_key', 'X-Client-Pub-Key must be valid hex');
  await refused(H({ 'X-Client-Pub-Key': ck.header + 'ab' }), good, 'e2ee_invalid_public_key', 'Ed25519 client public key must be 32 bytes, got 33');
  await refused(H({ 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': 'ab'.repeat(63), 'X-Model-Pub-Key': ecHex }), good,
    'e2ee_invalid_public_key', 'ECDSA client public key must be 64 or 65 bytes, got 63');
  // not a point: the NEAR server finds it only after the engine ran; here before
  await refused(H({ 'X-Client-Pub-Key': 'ab'.repeat(32) }), good, 'e2ee_invalid_public_key');
  await refused(H({ 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': '04' + 'ab'.repeat(64), 'X-Model-Pub-Key': ecHex }), good, 'e2ee_invalid_public_key');
  await refused(H({ 'X-Encryption-Version': '3' }), good, 'e2ee_invalid_version', 'Invalid X-Encryption-Version: 3. Must be 1 or 2');
  await refused(H({ 'X-Model-Pub-Key': bytesToHex(ed25519.getPublicKey(ed25519.utils.randomSecretKey())) }), good, 'e2ee_model_key_mismatch');
  // fields
  await refused(H(), { ...good, messages: [{ role: 'user', content: 'hello in clear' }] }, 'invalid_e2ee_request', 'Encrypted field is not valid hex');
  const c0 = good.messages[0].content;
  await refused(H(), { ...good, messages: [{ role: 'user', content: c0.slice(0, -2) + (c0.endsWith('00') ? '01' : '00') }] },
    'e2ee_decryption_failed', 'Decryption failed');
  await refused(H(), { ...good, messages: [{ role: 'user', content: 'abcd' }] }, 'e2ee_decryption_failed', 'Decryption failed');
  // a v1 box under v2 does not open (no fallback, §4), nor a v2 field under v1
  await refused(H(), { ...good, messages: [{ role: 'user', content: seal('ed25519', 1, serverHex, 'v1') }] }, 'e2ee_decryption_failed');
  await refused(nearHeaders(ck, serverHex, 1), good, 'e2ee_decryption_failed');
  // a field that does not decrypt fails the whole request, wherever it is
  await refused(H(), { ...good, messages: [...good.messages, { role: 'assistant', content: c0, reasoning_content: 'not hex' }] },
    'invalid_e2ee_request');
  const bad = bytesToHex(concatBytes(x25519.getPublicKey(x25519.utils.randomSecretKey()), randomBytes(24),
    xchacha20poly1305(randomBytes(32), randomBytes(24)).encrypt(new Uint8Array([0xff, 0xfe]))));
  await refused(H(), { ...good, messages: [{ role: 'user', content: bad }] }, 'e2ee_decryption_failed', 'Decryption failed');
  // a sealed field whose plaintext is not UTF-8
  const serverX = ed25519.utils.toMontgomery(hexToBytes(serverHex));
  const esk = x25519.utils.randomSecretKey();
  const key = hkdf(sha256, x25519.getSharedSecret(esk, serverX), undefined, utf8ToBytes('ed25519_encryption'), 32);
  const nonce = randomBytes(24);
  const notUtf8 = bytesToHex(concatBytes(x25519.getPublicKey(esk), nonce, xchacha20poly1305(key, nonce).encrypt(new Uint8Array([0xc3, 0x28]))));
  await refused(H(), { ...good, messages: [{ role: 'user', content: notUtf8 }] }, 'e2ee_decryption_failed', 'Decrypted content is not valid UTF-8');
  // all-fields is lenient only for values that cannot be ciphertext: a blob-shaped one must open
  await refused(H({ 'X-Encrypt-All-Fields': 'true' }), { ...good, tools: [{ type: 'function', function: { name: 'ab'.repeat(80) } }] },
    'e2ee_decryption_failed');
  // NEAR on a route where no format defines fields: refused (completions, embeddings, rerank,
  // score: e2ee-routes.test.mjs)
  const before = await engineRequests();
  assertOpenAIError(await postJson(stack.port, '/v1/tokenize', { model: MODEL, prompt: c0 }, { headers: H() }), 400, { type: 'e2ee_not_supported' });
  assert.equal(await engineRequests(), before);

  const ok = await postJson(stack.port, '/v1/chat/completions', good, { headers: H() });
  assert.equal(ok.status, 200, 'the same request is served (NEAR has no replay protection, §3.5)');
  const again = await postJson(stack.port, '/v1/chat/completions', good, { headers: H() });
  assert.equal(again.status, 200);
});

test('NEAR: an engine error is passed on as the engine sent it', async () => {
  const serverHex = await serverKey('ed25519');
  const ck = clientKeys('ed25519');
  const body = { model: MODEL, messages: [{ role: 'user', content: seal('ed25519', 2, serverHex, 'x') }], mock_fault: '400' };
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: nearHeaders(ck, serverHex, 2) });
  assert.equal(r.status, 400);
});
