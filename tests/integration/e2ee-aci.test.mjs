// ACI E2EE v2 end to end (issue 10; ../shared/docs/e2ee-formats.md §7, §2.1, and
// Dstack-TEE/private-ai-gateway spec/e2ee-v2.md and spec/aci.md §3-§4, read through the search
// tool). The client here is written from those documents with crypto that is not ours
// (@noble/curves, @noble/hashes, @noble/ciphers): it fetches the keyset from
// GET /v1/aci/attestation, checks that the (simulated) quote's report_data binds the keyset
// digest and its nonce, encrypts to the keyset's key of each suite with the JCS AAD, and
// decrypts the answer. The recording mock engine (--record-body) proves the engine got the
// plaintext; the client checks it got only ciphertext, and that the signature covers it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { startStack, MODEL } from './lib/harness.mjs';
import { postJson, getPath, jsonOf, sseData, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, signedText, stopAndCheck } from './lib/common.mjs';
import { X25519, SECP, attestation, clientKeys, reqAad, respAad, seal, open, fresh, aciHeaders } from './lib/aci-client.mjs';

let stack;
before(async () => {
  stack = await startStack({ mock: { args: ['--record-body'] }, proxy: { args: ['--workers', '2'] } });
});
after(async () => { await stopAndCheck(stack); });

// ---- the client, from the documents (lib/aci-client.mjs) ----

const HEX = /^[0-9a-f]+$/;

// ACI's in-band hints: on every answer to an ACI request, naming the keyset served.
function expectHints(r, what) {
  assert.equal(r.headers['x-aci-version'], 'aci/1', `${what}: X-ACI-Version`);
  assert.match(r.headers['x-aci-keyset-digest'] ?? '', /^sha256:[0-9a-f]{64}$/, `${what}: X-ACI-Keyset-Digest`);
  if (attested) assert.equal(r.headers['x-aci-keyset-digest'], attested.digest, `${what}: the attested keyset`);
}
function expectNoHints(r, what) {
  for (const h of ['x-aci-version', 'x-aci-keyset-digest']) assert.equal(r.headers[h], undefined, `${what}: no ${h}`);
}

let attested;
async function serviceKey(algo) {
  if (!attested) attested = await attestation(stack.port, bytesToHex(randomBytes(32)));
  const k = attested.keys.find((e) => e.algo === algo);
  assert.ok(k, `the keyset has a ${algo} key`);
  return k.public_key;
}

const IMAGE_URL = 'data:image/png;base64,iVBORw0KGgo=';
const PLAIN = [
  { role: 'system', content: 'You are a careful assistant. "quotes" \\ and ünïcödé 🙂' },
  { role: 'user', content: [{ type: 'text', text: 'what is in this image?' }, { type: 'image_url', image_url: { url: IMAGE_URL } }] },
  { role: 'user', content: [{ type: 'text', text: 'second part, encrypted alone' }, { type: 'image_url', image_url: { url: IMAGE_URL } }] },
];

function encryptMessages(algo, serviceHex, v, model = MODEL) {
  const a = (field) => reqAad(algo, model, field, v.nonce, v.ts);
  return [
    { role: 'system', content: seal(algo, serviceHex, PLAIN[0].content, a('messages.0.content')) },
    // a whole content array, compact-serialized and encrypted as one string (§7.3)
    { role: 'user', content: seal(algo, serviceHex, JSON.stringify(PLAIN[1].content), a('messages.1.content')) },
    // each part's field on its own
    { role: 'user', content: [
      { type: 'text', text: seal(algo, serviceHex, PLAIN[2].content[0].text, a('messages.2.content.0.text')) },
      { type: 'image_url', image_url: { url: seal(algo, serviceHex, IMAGE_URL, a('messages.2.content.1.image_url.url')) } }] },
  ];
}

async function engineRequests() { return (await stack.mock.stats()).requests; }
async function engineBody() { return JSON.parse((await stack.mock.last()).body); }

async function plainAnswer(stream) {
  const body = { model: MODEL, messages: PLAIN, max_tokens: 6, ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) };
  const r = await postJson(stack.port, '/v1/chat/completions', body);
  assert.equal(r.status, 200);
  if (!stream) return jsonOf(r).choices[0].message.content;
  return sseJson(r.body).filter((e) => e.choices.length).map((e) => e.choices[0].delta.content ?? '').join('');
}

// ---- attestation ----

test('GET /v1/aci/attestation: the keyset, its digest bound into the quote with the nonce; unchallenged form; the report lists the keys', async () => {
  const nonce = bytesToHex(randomBytes(32));
  const a = await attestation(stack.port, nonce);
  assert.deepEqual(a.keys.map((k) => k.algo), [X25519, SECP]);
  assert.match(a.keys[0].public_key, /^[0-9a-f]{64}$/);
  assert.match(a.keys[1].public_key, /^04[0-9a-f]{128}$/);
  assert.ok(new Set(a.keys.map((k) => k.key_id)).size === 2);
  const u = await attestation(stack.port, null); // nonce null: the unchallenged statement
  assert.equal(u.digest, a.digest, 'one keyset for the process');
  for (const bad of ['AB'.repeat(32), 'ab'.repeat(31), 'zz'.repeat(32), '0x' + 'ab'.repeat(31)]) {
    const r = await getPath(stack.port, `/v1/aci/attestation?nonce=${bad}`);
    assertOpenAIError(r, 400, { type: 'invalid_request_error' });
  }
  // The existing report lists the E2EE keys and the keyset digest too.
  const rep = jsonOf(await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}`));
  assert.deepEqual(rep.e2ee_public_keys, a.keys);
  assert.equal(rep.aci_keyset_digest, a.digest);
  // Keys are per role: no E2EE key is a signing key.
  for (const k of a.keys) assert.ok(!k.public_key.includes(rep.signing_public_key));
});

// ---- round trips ----

for (const algo of [X25519, SECP]) {
  for (const stream of [false, true]) {
    test(`ACI v2 ${algo.split('-')[0]} ${stream ? 'stream' : 'non-stream'}: engine gets plaintext, client gets ciphertext, signature over the bytes sent`, async () => {
      const serviceHex = await serviceKey(algo);
      const ck = clientKeys(algo);
      const v = fresh();
      const body = { model: MODEL, messages: encryptMessages(algo, serviceHex, v), max_tokens: 6,
        ...(stream ? { stream: true, stream_options: { include_usage: true }, mock_chunking: 'split' } : {}) };
      // secp256k1: the client key in its 64-byte spelling and the service key with 0x (§7.2)
      const h = aciHeaders(algo === SECP ? { ...ck, header: ck.header.slice(2) } : ck,
        algo === SECP ? '0x' + serviceHex : serviceHex, v);
      const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: h });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['x-e2ee-applied'], 'true');
      assert.equal(r.headers['x-e2ee-version'], '2');
      assert.equal(r.headers['x-e2ee-algo'], algo);
      assert.equal(r.headers['x-aci-version'], 'aci/1');
      assert.equal(r.headers['x-aci-keyset-digest'], attested.digest);

      const got = await engineBody();
      assert.deepEqual(got.messages, PLAIN, 'the engine got the decrypted, restored messages');
      assert.equal(got.model, MODEL);
      assert.ok(!r.requestBody.toString().includes('careful assistant'), 'the wire request is ciphertext');

      const expected = await plainAnswer(stream);
      let id, text = '';
      if (!stream) {
        const j = jsonOf(r);
        id = j.id;
        const c = j.choices[0].message.content;
        assert.match(c, HEX, 'content is ciphertext on the wire');
        text = open(ck, c, respAad(algo, MODEL, j.id, 'choices.0.message.content', v.nonce, v.ts));
        assert.ok(!r.body.toString().includes(expected), 'no plaintext on the wire');
      } else {
        const data = sseData(r.body);
        assert.equal(data.at(-1), '[DONE]');
        const events = sseJson(r.body);
        assert.equal(events.filter((e) => e.choices.length === 0).length, 1, 'the usage chunk is passed on');
        const seen = new Set();
        for (const e of events.filter((ev) => ev.choices.length)) {
          id = e.id;
          const d = e.choices[0].delta;
          if (d.content === undefined) continue; // an empty delta content is dropped
          assert.match(d.content, HEX, 'each delta is ciphertext');
          assert.ok(!seen.has(d.content.slice(0, 64)), 'a fresh ephemeral key per field');
          seen.add(d.content.slice(0, 64));
          text += open(ck, d.content, respAad(algo, MODEL, e.id, `choices.${e.choices[0].index}.delta.content`, v.nonce, v.ts));
        }
      }
      assert.equal(text, expected, 'the decrypted answer is the engine\'s');
      await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
    });
  }
}

test('ACI v2: every choice encrypted with its own path; the response AAD uses the request model', async () => {
  const serviceHex = await serviceKey(X25519);
  const ck = clientKeys(X25519);
  const v = fresh();
  const body = { model: MODEL, messages: [{ role: 'user', content: seal(X25519, serviceHex, 'hi', reqAad(X25519, MODEL, 'messages.0.content', v.nonce, v.ts)) }], max_tokens: 3, n: 2 };
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: aciHeaders(ck, serviceHex, v) });
  assert.equal(r.status, 200, r.body.toString());
  const j = jsonOf(r);
  assert.equal(j.choices.length, 2);
  for (const c of j.choices) {
    const field = `choices.${c.index}.message.content`;
    assert.ok(open(ck, c.message.content, respAad(X25519, MODEL, j.id, field, v.nonce, v.ts)).length > 0);
    assert.throws(() => open(ck, c.message.content, respAad(X25519, MODEL, j.id, 'choices.9.message.content', v.nonce, v.ts)));
  }
  assert.notEqual(j.choices[0].message.content.slice(0, 64), j.choices[1].message.content.slice(0, 64));
});

// ---- errors: each type, in the gateway's order, nothing forwarded ----

async function refused(headers, body, type, path = '/v1/chat/completions') {
  const before = await engineRequests();
  const r = await postJson(stack.port, path, body, { headers });
  const e = assertOpenAIError(r, 400, { type });
  assert.match(e.message, /not forwarded/);
  expectHints(r, type);
  assert.equal(await engineRequests(), before, `nothing reached the engine (${type})`);
}

test('every ACI error type, in the gateway order, nothing forwarded; a tampered request consumes its nonce', async () => {
  const serviceHex = await serviceKey(X25519);
  const secpHex = await serviceKey(SECP);
  const ck = clientKeys(X25519);
  const v = fresh();
  const good = { model: MODEL, messages: encryptMessages(X25519, serviceHex, v), max_tokens: 2 };
  const H = (o = {}) => ({ ...aciHeaders(ck, serviceHex, v), ...o });
  const drop = (name) => { const h = H(); delete h[name]; return h; };
  const other = bytesToHex(x25519.getPublicKey(x25519.utils.randomSecretKey()));

  for (const n of ['X-E2EE-Version', 'X-Client-Pub-Key', 'X-Model-Pub-Key', 'X-E2EE-Nonce', 'X-E2EE-Timestamp'])
    await refused(drop(n), good, 'e2ee_header_missing');
  await refused(H({ 'X-E2EE-Version': '1' }), good, 'e2ee_invalid_version');
  await refused(H({ 'X-E2EE-Version': '3', 'X-E2EE-Nonce': 'short' }), good, 'e2ee_invalid_version');
  await refused(H({ 'X-E2EE-Nonce': 'ab'.repeat(31) }), good, 'e2ee_invalid_nonce');
  await refused(H({ 'X-E2EE-Nonce': '0x' + 'ab'.repeat(31) }), good, 'e2ee_invalid_nonce');
  await refused(H({ 'X-E2EE-Nonce': 'zz'.repeat(32), 'X-E2EE-Timestamp': 'soon' }), good, 'e2ee_invalid_nonce');
  await refused(H({ 'X-E2EE-Timestamp': 'soon' }), good, 'e2ee_invalid_timestamp');
  await refused(H({ 'X-E2EE-Timestamp': String(v.ts - 301), 'X-Model-Pub-Key': other }), good, 'e2ee_invalid_timestamp');
  await refused(H({ 'X-Model-Pub-Key': other, 'X-Client-Pub-Key': 'zz' }), good, 'e2ee_model_key_mismatch');
  await refused(H({ 'X-Model-Pub-Key': bytesToHex(randomBytes(65)) }), good, 'e2ee_model_key_mismatch');
  await refused(H({ 'X-Client-Pub-Key': 'ab'.repeat(33) }), good, 'e2ee_invalid_public_key');
  await refused(H({ 'X-Client-Pub-Key': 'zz'.repeat(32) }), good, 'e2ee_invalid_public_key');
  // the secp256k1 suite: a client key that is not a point of the curve
  await refused(H({ 'X-Model-Pub-Key': secpHex, 'X-Client-Pub-Key': '04' + 'ab'.repeat(64) }), good, 'e2ee_invalid_public_key');
  await refused(H(), { ...good, model: undefined }, 'e2ee_invalid_payload_model');
  await refused(H(), { ...good, model: 7 }, 'e2ee_invalid_payload_model');
  // the ACI v2 headers on an endpoint without v2 fields (§7.3)
  await refused(H(), { model: MODEL, query: 'q', documents: ['d'] }, 'e2ee_unsupported_endpoint', '/v1/rerank');
  // none of the above consumed the nonce; a request that fails decryption does (§7.4) ...
  const flip = structuredClone(good);
  const c0 = flip.messages[0].content;
  flip.messages[0].content = c0.slice(0, -2) + (c0.slice(-2) === '00' ? '01' : '00');
  await refused(H(), flip, 'e2ee_decryption_failed');
  await refused(H(), good, 'e2ee_replay_detected');
  // ... each of these with a nonce of its own
  const again = (o, b, t) => { const w = fresh(); return refused(H({ 'X-E2EE-Nonce': w.nonce, ...o }), b, t); };
  await again({}, good, 'e2ee_decryption_failed'); // the AAD names another nonce
  await again({}, { ...good, messages: [{ role: 'user', content: 'hello in clear' }] }, 'e2ee_decryption_failed');
  await again({}, { ...good, messages: [] }, 'e2ee_decryption_failed'); // no encrypted field
  await again({}, { ...good, messages: encryptMessages(X25519, serviceHex, v, 'another-model') }, 'e2ee_decryption_failed');
  const partTampered = structuredClone(good);
  partTampered.messages[2].content[1].image_url.url = partTampered.messages[2].content[0].text; // moved field
  await again({}, partTampered, 'e2ee_decryption_failed');
});

test('replay: a used (client key, service key, nonce) is refused on every worker, the nonce case-folded', async () => {
  const serviceHex = await serviceKey(SECP);
  const ck = clientKeys(SECP);
  const v = fresh();
  const good = { model: MODEL, messages: encryptMessages(SECP, serviceHex, v), max_tokens: 2 };
  const ok = await postJson(stack.port, '/v1/chat/completions', good, { headers: aciHeaders(ck, serviceHex, v) });
  assert.equal(ok.status, 200, ok.body.toString());
  // fresh connections, spread over both workers; the 64-byte client key and the 128-hex
  // service key spell the same keys
  for (let i = 0; i < 6; i++) {
    const h = aciHeaders(i % 2 ? { ...ck, header: ck.header.slice(2) } : ck, i % 3 ? serviceHex : serviceHex.slice(2), v);
    await refused(h, good, 'e2ee_replay_detected');
  }
  // the nonce in upper case is the same nonce (its AAD differs, but the claim comes first)
  await refused(aciHeaders(ck, serviceHex, { ...v, nonce: v.nonce.toUpperCase() }), good, 'e2ee_replay_detected');
  // another client key with the same nonce is another tuple
  const ck2 = clientKeys(SECP);
  const r2 = await postJson(stack.port, '/v1/chat/completions', good, { headers: aciHeaders(ck2, serviceHex, v) });
  assert.equal(r2.status, 200, r2.body.toString());
});

// ---- ACI's in-band hints (formats document §9): every answer to an ACI request, none elsewhere ----

test('X-ACI-Version and X-ACI-Keyset-Digest: on ACI answers of every kind (attestation errors, 401, engine errors), never on anyone else\'s', async () => {
  const serviceHex = await serviceKey(X25519);
  const ck = clientKeys(X25519);
  // the attestation route's own errors
  const bad = await getPath(stack.port, '/v1/aci/attestation?nonce=zz');
  assertOpenAIError(bad, 400, { type: 'invalid_request_error' });
  expectHints(bad, 'attestation 400');
  const unauth = await getPath(stack.port, '/v1/aci/attestation', { token: 'wrong' });
  assert.equal(unauth.status, 401);
  expectHints(unauth, 'attestation 401');
  // an ACI request with a wrong token
  const v0 = fresh();
  const body0 = { model: MODEL, messages: [{ role: 'user', content: seal(X25519, serviceHex, 'hi', reqAad(X25519, MODEL, 'messages.0.content', v0.nonce, v0.ts)) }] };
  const r401 = await postJson(stack.port, '/v1/chat/completions', body0, { token: 'wrong', headers: aciHeaders(ck, serviceHex, v0) });
  assert.equal(r401.status, 401);
  expectHints(r401, 'ACI request 401');
  // the engine's own error, passed on as it is (not encrypted), keeps the hints
  const v = fresh();
  const body = { model: MODEL, mock_fault: '500', messages: [{ role: 'user', content: seal(X25519, serviceHex, 'hi', reqAad(X25519, MODEL, 'messages.0.content', v.nonce, v.ts)) }] };
  const r = await postJson(stack.port, '/v1/chat/completions', body, { headers: aciHeaders(ck, serviceHex, v) });
  assert.equal(r.status, 500, r.body.toString());
  assert.equal(r.headers['x-e2ee-applied'], undefined, 'nothing was encrypted');
  expectHints(r, 'engine 500');
  // a bad JSON body is refused before the E2EE checks: still an ACI request
  const rj = await postJson(stack.port, '/v1/chat/completions', '{"model":', { headers: aciHeaders(ck, serviceHex, fresh()) });
  assertOpenAIError(rj, 400, { type: 'invalid_request_error' });
  expectHints(rj, 'invalid JSON');

  // nobody else sees anything new: plain OpenAI answers and errors, the legacy report, the
  // other formats' refusals, NEAR's own switches alone
  const plain = await postJson(stack.port, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(plain.status, 200);
  expectNoHints(plain, 'plain chat');
  const plainStream = await postJson(stack.port, '/v1/chat/completions', { model: MODEL, stream: true, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(plainStream.status, 200);
  expectNoHints(plainStream, 'plain stream');
  expectNoHints(await postJson(stack.port, '/v1/chat/completions', '{"model":'), 'plain invalid JSON');
  expectNoHints(await postJson(stack.port, '/v1/chat/completions', { model: MODEL, mock_fault: '500', messages: [] }), 'plain engine error');
  expectNoHints(await getPath(stack.port, '/v1/models'), 'models');
  expectNoHints(await getPath(stack.port, `/v1/attestation/report?nonce=${bytesToHex(randomBytes(32))}`), 'legacy report');
  expectNoHints(await getPath(stack.port, '/v1/attestation/report', { token: 'wrong' }), 'legacy report 401');
  const dstack = await postJson(stack.port, '/v1/chat/completions', body0, { headers: { 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': 'zz' } });
  assert.equal(dstack.status, 400);
  expectNoHints(dstack, 'a legacy-format refusal');
  const near = await postJson(stack.port, '/v1/chat/completions', body0, { headers: { 'X-Encryption-Version': '2' } });
  assertOpenAIError(near, 400, { type: 'e2ee_header_missing' });
  expectNoHints(near, 'NEAR switches alone');
});

// ---- settings: E2EE_REPLAY_WINDOW and ACI_KEYSET_TTL ----

test('E2EE_REPLAY_WINDOW=30 refuses a timestamp 100 s old that the default (300) accepts; ACI_KEYSET_TTL sets not_after', async () => {
  const short = await startStack({ mock: { args: ['--record-body'] }, proxy: { env: { E2EE_REPLAY_WINDOW: '30', ACI_KEYSET_TTL: '3600' } } });
  try {
    const a = await attestation(short.port, bytesToHex(randomBytes(32)));
    const now = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(a.notAfter - (now + 3600)) <= 5, `not_after ${a.notAfter} = start + ACI_KEYSET_TTL`);
    const dflt = await attestation(stack.port, bytesToHex(randomBytes(32)));
    assert.ok(dflt.notAfter - now > 29 * 86400 && dflt.notAfter - now <= 30 * 86400, 'the default keyset lives 30 days');
    for (const [port, keys, window] of [[short.port, a.keys, 30], [stack.port, dflt.keys, 300]]) {
      const serviceHex = keys.find((k) => k.algo === X25519).public_key;
      for (const age of [100, 29]) {
        const ck = clientKeys(X25519);
        const v = { nonce: bytesToHex(randomBytes(32)), ts: Math.floor(Date.now() / 1000) - age };
        const body = { model: MODEL, max_tokens: 2, messages: [{ role: 'user', content: seal(X25519, serviceHex, 'hi', reqAad(X25519, MODEL, 'messages.0.content', v.nonce, v.ts)) }] };
        const r = await postJson(port, '/v1/chat/completions', body, { headers: aciHeaders(ck, serviceHex, v) });
        if (age > window) {
          const e = assertOpenAIError(r, 400, { type: 'e2ee_invalid_timestamp' });
          assert.match(e.message, new RegExp(`within ${window} seconds`));
        } else {
          assert.equal(r.status, 200, `window ${window}, ${age} s old: ${r.body}`);
        }
      }
      // Dstack v2 uses the same window
      const ts = Math.floor(Date.now() / 1000) - 100;
      const rd = await postJson(port, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'ab'.repeat(60) }] },
        { headers: { 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': bytesToHex(secp256k1.getPublicKey(secp256k1.utils.randomSecretKey(), false)),
          'X-Model-Pub-Key': '04' + '00'.repeat(64), 'X-E2EE-Version': '2', 'X-E2EE-Nonce': bytesToHex(randomBytes(16)), 'X-E2EE-Timestamp': String(ts) } });
      assertOpenAIError(rd, 400, { type: window < 100 ? 'e2ee_invalid_timestamp' : 'e2ee_model_key_mismatch' });
    }
  } finally {
    await stopAndCheck(short);
  }
});
