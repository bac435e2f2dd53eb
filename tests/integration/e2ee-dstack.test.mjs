// End-to-end encryption, the Dstack fork's formats v1 and v2 (issue 10;
// ../shared/docs/e2ee-formats.md §5, §6). The client here is written from that document with
// crypto that is not ours (@noble/curves, @noble/hashes, @noble/ciphers): it encrypts the
// prompt to the signing key the attestation report publishes, and decrypts the answer. The
// recording mock engine (--record-body) proves the engine got the plaintext; the client
// checks it got only ciphertext on the wire, and that the signature covers those bytes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { startStack, MODEL } from './lib/harness.mjs';
import { postJson, getPath, jsonOf, sseData, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, signedText, stopAndCheck } from './lib/common.mjs';

let stack;
before(async () => {
  stack = await startStack({ mock: { args: ['--record-body'] }, proxy: { args: ['--workers', '2'] } });
});
after(async () => { await stopAndCheck(stack); });

// ---- the Dstack client, from the document ----

const INFO = { ecdsa: 'ecdsa_encryption', ed25519: 'ed25519_encryption' };
const dec = new TextDecoder('utf-8', { fatal: true });

async function serverKey(algo) {
  const r = await getPath(stack.port, `/v1/attestation/report?signing_algo=${algo}&nonce=${'cd'.repeat(32)}`);
  assert.equal(r.status, 200);
  return jsonOf(r).signing_public_key; // ecdsa: 128 hex x‖y; ed25519: 64 hex
}

function clientKeys(algo) {
  if (algo === 'ecdsa') {
    const sk = secp256k1.utils.randomSecretKey();
    return { algo, sk, header: bytesToHex(secp256k1.getPublicKey(sk, false)) }; // 04‖x‖y
  }
  const seed = ed25519.utils.randomSecretKey();
  return { algo, sk: ed25519.utils.toMontgomerySecret(seed), header: bytesToHex(ed25519.getPublicKey(seed)) };
}

// §5.1: eph ‖ nonce(12) ‖ AES-256-GCM(ct ‖ tag), key = HKDF-SHA256(no salt, ECDH, info)
function seal(algo, serverHex, text, aad) {
  let eph, shared;
  if (algo === 'ecdsa') {
    const esk = secp256k1.utils.randomSecretKey();
    eph = secp256k1.getPublicKey(esk, false);
    shared = secp256k1.getSharedSecret(esk, hexToBytes('04' + serverHex), true).slice(1);
  } else {
    const esk = x25519.utils.randomSecretKey();
    eph = x25519.getPublicKey(esk);
    shared = x25519.getSharedSecret(esk, ed25519.utils.toMontgomery(hexToBytes(serverHex)));
  }
  const key = hkdf(sha256, shared, undefined, utf8ToBytes(INFO[algo]), 32);
  const nonce = randomBytes(12);
  const ct = gcm(key, nonce, aad ? utf8ToBytes(aad) : undefined).encrypt(utf8ToBytes(text));
  return bytesToHex(concatBytes(eph, nonce, ct));
}

function open(ck, hex, aad) {
  const b = hexToBytes(hex);
  const el = ck.algo === 'ecdsa' ? 65 : 32;
  const eph = b.slice(0, el), nonce = b.slice(el, el + 12), ct = b.slice(el + 12);
  const shared = ck.algo === 'ecdsa' ? secp256k1.getSharedSecret(ck.sk, eph, true).slice(1)
    : x25519.getSharedSecret(ck.sk, eph);
  const key = hkdf(sha256, shared, undefined, utf8ToBytes(INFO[ck.algo]), 32);
  return dec.decode(gcm(key, nonce, aad ? utf8ToBytes(aad) : undefined).decrypt(ct));
}

// §6.1 AAD strings
const reqAad = (algo, model, m, c, n, ts) => `v2|req|algo=${algo}|model=${model}|m=${m}|c=${c}|n=${n}|ts=${ts}`;
const respAad = (algo, model, id, choice, field, n, ts) =>
  `v2|resp|algo=${algo}|model=${model}|id=${id}|choice=${choice}|field=${field}|n=${n}|ts=${ts}`;

let nonceSeq = 0;
const freshNonce = () => `n${Date.now()}x${process.pid}x${nonceSeq++}abcdefgh`;

// The plaintext conversation: a string message, a vision message whose parts array travels as
// one encrypted string (restored as an array), and a parts array with an encrypted text part
// beside a clear image part.
const IMAGE = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } };
const PLAIN = [
  { role: 'system', content: 'You are a careful assistant. "quotes" \\ and ünïcödé 🙂' },
  { role: 'user', content: [{ type: 'text', text: 'what is in this image?' }, IMAGE] },
  { role: 'user', content: [{ type: 'text', text: 'second part, text encrypted alone' }, IMAGE] },
];

function encryptMessages(algo, serverHex, v2) {
  const aad = (m, c) => (v2 ? reqAad(algo, MODEL, m, c, v2.nonce, v2.ts) : null);
  return [
    { role: 'system', content: seal(algo, serverHex, PLAIN[0].content, aad(0, '-')) },
    { role: 'user', content: seal(algo, serverHex, JSON.stringify(PLAIN[1].content), aad(1, '-')) },
    { role: 'user', content: [{ type: 'text', text: seal(algo, serverHex, PLAIN[2].content[0].text, aad(2, 0)) }, IMAGE] },
  ];
}

function e2eeHeaders(ck, serverHex, v2, extra = {}) {
  const h = { 'X-Signing-Algo': ck.algo, 'X-Client-Pub-Key': ck.header, 'X-Model-Pub-Key': serverHex };
  if (v2) Object.assign(h, { 'X-E2EE-Version': '2', 'X-E2EE-Nonce': v2.nonce, 'X-E2EE-Timestamp': String(v2.ts) });
  return { ...h, ...extra };
}

async function engineRequests() { return (await stack.mock.stats()).requests; }
async function engineBody() {
  return JSON.parse((await stack.mock.last()).body);
}

const HEX = /^[0-9a-f]+$/;

// What the same conversation answers in plaintext (the mock's text is deterministic).
async function plainAnswer(stream) {
  const body = { model: MODEL, messages: PLAIN, max_tokens: 6, ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) };
  const r = await postJson(stack.port, '/v1/chat/completions', body);
  assert.equal(r.status, 200);
  if (!stream) return jsonOf(r).choices[0].message.content;
  return sseJson(r.body).filter((e) => e.choices.length).map((e) => e.choices[0].delta.content ?? '').join('');
}

for (const algo of ['ecdsa', 'ed25519']) {
  for (const version of [1, 2]) {
    for (const stream of [false, true]) {
      test(`Dstack v${version} ${algo} ${stream ? 'stream' : 'non-stream'}: engine gets plaintext, client gets ciphertext, signature over the bytes sent`, async () => {
        const serverHex = await serverKey(algo);
        const ck = clientKeys(algo);
        const v2 = version === 2 ? { nonce: freshNonce(), ts: Math.floor(Date.now() / 1000) } : null;
        const body = { model: MODEL, messages: encryptMessages(algo, serverHex, v2), max_tokens: 6,
          ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
          // ed25519 streams arrive one byte per HTTP chunk: events are reassembled line by line
          ...(stream && algo === 'ed25519' ? { mock_chunking: 'split' } : {}) };
        const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: e2eeHeaders(ck, serverHex, v2) });
        assert.equal(r.status, 200, r.body.toString());
        assert.equal(r.headers['x-e2ee-applied'], 'true');
        assert.equal(r.headers['x-e2ee-version'], String(version));
        assert.equal(r.headers['x-e2ee-algo'], algo);

        // The engine received the plaintext conversation, restored (vision parts as an array).
        const got = await engineBody();
        assert.deepEqual(got.messages, PLAIN, 'the engine got the decrypted messages');
        assert.equal(got.model, MODEL);
        if (stream) assert.equal(got.stream, true);

        const expected = await plainAnswer(stream);
        let id, text = '';
        if (!stream) {
          const j = jsonOf(r);
          id = j.id;
          const c = j.choices[0].message.content;
          assert.match(c, HEX, 'content is ciphertext on the wire');
          text = open(ck, c, v2 && respAad(algo, j.model, j.id, 0, 'content', v2.nonce, v2.ts));
          assert.ok(!r.body.toString().includes(expected), 'no plaintext on the wire');
        } else {
          const data = sseData(r.body);
          assert.equal(data.at(-1), '[DONE]', 'the stream ends with [DONE]');
          const events = sseJson(r.body);
          const usage = events.filter((e) => e.choices.length === 0);
          assert.equal(usage.length, 1, 'the usage chunk is passed on');
          assert.ok(usage[0].usage.completion_tokens > 0);
          for (const e of events.filter((ev) => ev.choices.length)) {
            id = e.id;
            const d = e.choices[0].delta;
            if (d.content === undefined) continue; // the role event's empty content is dropped
            assert.match(d.content, HEX, 'each delta is ciphertext');
            text += open(ck, d.content, v2 && respAad(algo, e.model, e.id, 0, 'content', v2.nonce, v2.ts));
          }
        }
        assert.equal(text, expected, 'the decrypted answer is the engine\'s');
        await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
      });
    }
  }
}

test('Dstack ecdsa accepts the 64-byte client key spelling; one ephemeral key per response (§5.1)', async () => {
  const serverHex = await serverKey('ecdsa');
  const ck = clientKeys('ecdsa');
  const body = { model: MODEL, messages: [{ role: 'user', content: seal('ecdsa', serverHex, 'hi', null) }], max_tokens: 4, n: 2 };
  const r = await postJson(stack.port, '/v1/chat/completions', body,
    { headers: e2eeHeaders({ ...ck, header: ck.header.slice(2) }, serverHex, null) });
  assert.equal(r.status, 200, r.body.toString());
  const cs = jsonOf(r).choices.map((c) => c.message.content);
  assert.equal(cs.length, 2);
  assert.equal(cs[0].slice(0, 130), cs[1].slice(0, 130), 'the same ephemeral key for the request');
  assert.notEqual(cs[0].slice(130, 154), cs[1].slice(130, 154), 'a fresh nonce per field');
  for (const c of cs) assert.ok(open(ck, c, null).length > 0);
});

// ---- errors: each type, and nothing of a refused request reaches the engine ----

async function refused(headers, body, type) {
  const before = await engineRequests();
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers });
  const e = assertOpenAIError(r, 400, { type });
  assert.match(e.message, /not forwarded|not supported/);
  assert.equal(await engineRequests(), before, `nothing reached the engine (${type})`);
}

test('every Dstack error type, nothing forwarded', async () => {
  const serverHex = await serverKey('ecdsa');
  const edHex = await serverKey('ed25519');
  const ck = clientKeys('ecdsa');
  const now = Math.floor(Date.now() / 1000);
  const v2 = { nonce: freshNonce(), ts: now };
  const good = { model: MODEL, messages: encryptMessages('ecdsa', serverHex, v2), max_tokens: 2 };
  const H = (o) => ({ ...e2eeHeaders(ck, serverHex, v2), ...o });
  const drop = (name) => { const h = H({}); delete h[name]; return h; };

  await refused(drop('X-Model-Pub-Key'), good, 'e2ee_header_missing');
  await refused(drop('X-E2EE-Timestamp'), good, 'e2ee_header_missing');
  await refused(drop('X-Client-Pub-Key'), good, 'e2ee_header_missing');
  await refused(H({ 'X-Signing-Algo': 'rsa' }), good, 'e2ee_invalid_signing_algo');
  await refused(H({ 'X-Client-Pub-Key': 'zz' + ck.header.slice(2) }), good, 'e2ee_invalid_public_key');
  await refused(H({ 'X-Client-Pub-Key': '04' + 'ab'.repeat(64) }), good, 'e2ee_invalid_public_key');
  await refused(H({ 'X-Model-Pub-Key': bytesToHex(secp256k1.getPublicKey(secp256k1.utils.randomSecretKey(), false)).slice(2) }), good, 'e2ee_model_key_mismatch');
  await refused(H({ 'X-Signing-Algo': 'ed25519', 'X-Client-Pub-Key': clientKeys('ed25519').header }), good, 'e2ee_model_key_mismatch');
  await refused(H({ 'X-E2EE-Version': '3' }), good, 'e2ee_invalid_version');
  await refused(H({ 'X-E2EE-Nonce': 'short' }), good, 'e2ee_invalid_nonce');
  await refused(H({ 'X-E2EE-Timestamp': 'soon' }), good, 'e2ee_invalid_timestamp');
  await refused(H({ 'X-E2EE-Timestamp': String(now - 3600) }), good, 'e2ee_invalid_timestamp');
  // A field that does not decrypt fails the whole request: a flipped byte, the v1 AAD under
  // v2, a blob that is too short; a content that is not hex is invalid_e2ee_request.
  const flip = structuredClone(good);
  const c0 = flip.messages[0].content;
  flip.messages[0].content = c0.slice(0, -2) + (c0.slice(-2) === '00' ? '01' : '00');
  await refused(H({}), flip, 'e2ee_decryption_failed');
  const noAad = { ...good, messages: encryptMessages('ecdsa', serverHex, null) };
  await refused(H({}), noAad, 'e2ee_decryption_failed');
  const lastPart = structuredClone(good);
  lastPart.messages[2].content[0].text = 'abcd';
  await refused(H({}), lastPart, 'e2ee_decryption_failed');
  await refused(H({}), { ...good, messages: [{ role: 'user', content: 'hello in clear' }] }, 'invalid_e2ee_request');
  // Output the fork would send in clear (it encrypts only content and reasoning_content):
  // refused up front, before the nonce is claimed.
  for (const extra of [{ logprobs: true }, { top_logprobs: 3 }, { prompt_logprobs: 0 }, { return_token_ids: true },
    { tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }]) {
    await refused(H({}), { ...good, ...extra }, 'e2ee_unsupported_field');
  }
  await refused(e2eeHeaders(ck, edHex, null, { 'X-Signing-Algo': 'ed25519', 'X-Client-Pub-Key': clientKeys('ed25519').header }),
    { ...good, messages: [{ role: 'user', content: seal('ecdsa', serverHex, 'wrong curve', null) }] }, 'e2ee_decryption_failed');

  // None of the failures above consumed the nonce (the claim comes after decryption, §5.3) ...
  const ok = await postJson(stack.port, '/v1/chat/completions', good, { headers: H({}) });
  assert.equal(ok.status, 200, ok.body.toString());
  // ... and the successful request did: a replay is refused, on any connection and worker.
  for (let i = 0; i < 6; i++) await refused(H({}), good, 'e2ee_replay_detected');
});

test('ACI v2 headers are not Dstack v2 (ACI: e2ee-aci.test.mjs); the fork\'s chat-only rule on other routes (e2ee-routes.test.mjs)', async () => {
  const serverHex = await serverKey('ed25519');
  const ck = clientKeys('ed25519');
  const body = { model: MODEL, messages: [{ role: 'user', content: seal('ed25519', serverHex, 'hi', null) }] };
  await refused({ 'X-E2EE-Version': '2', 'X-Client-Pub-Key': 'ab'.repeat(32), 'X-Model-Pub-Key': 'cd'.repeat(32),
    'X-E2EE-Nonce': '00'.repeat(32), 'X-E2EE-Timestamp': String(Math.floor(Date.now() / 1000)) }, body, 'e2ee_model_key_mismatch');
  const before = await engineRequests();
  const r = await postJson(stack.port, '/v1/completions', { model: MODEL, prompt: seal('ed25519', serverHex, 'hi', null) },
    { headers: e2eeHeaders(ck, serverHex, null) });
  // a Dstack v1 ed25519 field (AES-GCM, found by trial) on completions: the fork's refusal (§5.2)
  const e = assertOpenAIError(r, 400, { type: 'invalid_e2ee_request' });
  assert.match(e.message, /^E2EE is only supported on \/v1\/chat\/completions/);
  assert.equal(await engineRequests(), before);
});

test('an engine error is passed on (no E2EE headers, nothing to decrypt), plaintext requests unchanged', async () => {
  const serverHex = await serverKey('ecdsa');
  const ck = clientKeys('ecdsa');
  const body = { model: MODEL, messages: [{ role: 'user', content: seal('ecdsa', serverHex, 'x', null) }], mock_fault: '400' };
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: e2eeHeaders(ck, serverHex, null) });
  assert.equal(r.status, 400);
  assert.equal(r.headers['x-e2ee-applied'], undefined);
  const p = await postJson(stack.port, '/v1/chat/completions', { model: MODEL, messages: PLAIN, max_tokens: 2 });
  assert.equal(p.status, 200);
  assert.equal(p.headers['x-e2ee-applied'], undefined);
});
