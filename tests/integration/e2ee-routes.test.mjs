// End-to-end encryption beyond chat completions (issue 10; ../shared/docs/e2ee-formats.md §3.4,
// §5.2, §7.3, §1.2): /v1/completions (streamed and not) and /v1/embeddings for NEAR v1/v2 (both
// algorithms) and ACI v2 (both suites), /v1/rerank and /v1/score for NEAR, and the refusals:
// the Dstack fork's chat-only rule, ACI on a route without fields, fields that do not open,
// logprobs that would be answered in clear. The clients are the independent ones of
// lib/near-client.mjs and lib/aci-client.mjs (@noble/*, tweetnacl; none of it our C code). The
// recording mock engine (--record-body) proves the engine got plaintext; the client checks
// that the wire carried only ciphertext and opens every sealed field.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { bytesToHex } from '@noble/hashes/utils.js';
import { startStack, MODEL } from './lib/harness.mjs';
import { postJson, jsonOf, sseData, sseJson } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, signedText, stopAndCheck } from './lib/common.mjs';
import * as near from './lib/near-client.mjs';
import * as aci from './lib/aci-client.mjs';

let stack;
before(async () => {
  stack = await startStack({ mock: { args: ['--record-body'] }, proxy: { args: ['--workers', '2'] } });
});
after(async () => { await stopAndCheck(stack); });

const HEX = /^[0-9a-f]+$/;
const PROMPTS = ['Once upon a time, "quoted" \\ ünïcödé 🙂', 'The second prompt of the batch'];
const INPUTS = ['embed this sentence', 'and this one, with ✓'];

async function engineRequests() { return (await stack.mock.stats()).requests; }
async function engineBody() { return JSON.parse((await stack.mock.last()).body); }

// The engine's answer to the same request in plaintext (the mock answers deterministically).
async function plain(path, body) {
  const r = await postJson(stack.port, path, body);
  assert.equal(r.status, 200, r.body.toString());
  return r;
}

// Streamed completions: the text of each choice, events in order, from decrypted (or plain) events.
function streamTexts(events, textOf) {
  const out = {};
  for (const e of events)
    for (const [i, c] of e.choices.entries()) {
      const k = c.index ?? i;
      out[k] = (out[k] ?? '') + textOf(c, e, i);
    }
  return out;
}

function noPlaintextOnWire(r, words) {
  const wire = r.requestBody.toString();
  for (const w of words) assert.ok(!wire.includes(w), `the wire request carries no plaintext (${w})`);
}

// ---- NEAR: completions and embeddings, every algorithm and version ----

const NEAR_CASES = [
  { algo: 'ecdsa', version: 1 }, { algo: 'ed25519', version: 1 },
  { algo: 'ecdsa', version: 2 }, { algo: 'ed25519', version: 2 },
];

for (const { algo, version } of NEAR_CASES) {
  for (const stream of [false, true]) {
    test(`NEAR v${version} ${algo} /v1/completions ${stream ? 'stream' : 'non-stream'}: engine gets the plaintext prompts, every choice's text sealed, signature over the bytes sent`, async () => {
      const serverHex = await near.serverKey(stack.port, algo);
      const ck = near.clientKeys(algo);
      const extra = { max_tokens: 5, n: 2, ...(stream ? { stream: true, stream_options: { include_usage: true }, mock_chunking: 'split' } : {}) };
      const body = { model: MODEL, prompt: PROMPTS.map((p) => near.seal(algo, version, serverHex, p)), ...extra };
      // NEAR's clients send X-Model-Pub-Key too; on this route a v1 request is NEAR's (the
      // Dstack fork has no fields here), so the answer is NEAR's: no X-E2EE-* headers
      const r = await postJson(stack.port, '/v1/completions', body, { headers: near.nearHeaders(ck, serverHex, version) });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['x-e2ee-applied'], undefined);
      assert.deepEqual((await engineBody()).prompt, PROMPTS, 'the engine got the decrypted prompts');
      noPlaintextOnWire(r, ['Once upon', 'second prompt']);

      const expected = await plain('/v1/completions', { model: MODEL, prompt: PROMPTS, ...extra });
      const ephs = new Set();
      const openText = (c) => {
        if (c.text === '') return ''; // NEAR never encrypts the empty string (§3.1)
        assert.match(c.text, HEX, 'text is ciphertext on the wire');
        const e = near.ephOf(algo, c.text);
        assert.ok(!ephs.has(e), 'a fresh ephemeral key per field (§3.1)');
        ephs.add(e);
        return near.open(ck, version, c.text);
      };
      let id;
      if (!stream) {
        const j = jsonOf(r);
        id = j.id;
        assert.equal(j.choices.length, 2);
        assert.deepEqual(j.choices.map(openText), jsonOf(expected).choices.map((c) => c.text));
      } else {
        const events = sseJson(r.body);
        id = events[0].id;
        assert.equal(sseData(r.body).at(-1), '[DONE]');
        assert.deepEqual(streamTexts(events, openText), streamTexts(sseJson(expected.body), (c) => c.text));
        assert.ok(events.some((e) => e.usage), 'the usage chunk passes');
      }
      assert.ok(ephs.size >= 2, 'both choices carried sealed text');
      await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
    });
  }

  test(`NEAR v${version} ${algo} /v1/embeddings: input decrypted, each embedding sealed as its compact JSON (floats and base64)`, async () => {
    const serverHex = await near.serverKey(stack.port, algo);
    const ck = near.clientKeys(algo);
    for (const encoding of [undefined, 'base64']) {
      const extra = encoding ? { encoding_format: encoding } : {};
      const body = { model: MODEL, input: INPUTS.map((t) => near.seal(algo, version, serverHex, t)), ...extra };
      const r = await postJson(stack.port, '/v1/embeddings', body, { headers: near.nearHeaders(ck, serverHex, version) });
      assert.equal(r.status, 200, r.body.toString());
      assert.deepEqual((await engineBody()).input, INPUTS);
      noPlaintextOnWire(r, ['embed this']);
      const j = jsonOf(r);
      const want = jsonOf(await plain('/v1/embeddings', { model: MODEL, input: INPUTS, ...extra })).data;
      assert.equal(j.data.length, 2);
      for (const [i, d] of j.data.entries()) {
        assert.equal(typeof d.embedding, 'string');
        assert.match(d.embedding, HEX, 'the embedding is ciphertext on the wire');
        const value = JSON.parse(near.open(ck, version, d.embedding));
        assert.deepEqual(value, want[i].embedding);
        assert.equal(typeof value, encoding ? 'string' : 'object', 'base64 answers stay base64 inside');
        assert.equal(d.index, i);
      }
      assert.ok(!r.body.toString().includes(JSON.stringify(want[0].embedding).slice(1, 12)), 'no embedding values in clear');
      // signed (issue 11) over the ciphertext both ways, under the id sent in X-Signature-Id
      const sid = r.headers['x-signature-id'];
      assert.ok(j.id, 'the answer has an id');
      assert.equal(sid, j.id, 'X-Signature-Id on the encrypted answer: the engine\'s id');
      await checkSigned(stack.port, sid, signedText(r.requestBody, r.body));
    }
    // a single string input, and an empty string (never encrypted) passes
    const r1 = await postJson(stack.port, '/v1/embeddings', { model: MODEL, input: near.seal(algo, version, serverHex, INPUTS[0]) },
      { headers: near.nearHeaders(ck, serverHex, version) });
    assert.equal(r1.status, 200, r1.body.toString());
    assert.equal((await engineBody()).input, INPUTS[0]);
  });
}

test('NEAR /v1/completions: token-id prompts pass as they are, an empty string is not decrypted', async () => {
  const serverHex = await near.serverKey(stack.port, 'ed25519');
  const ck = near.clientKeys('ed25519');
  const prompt = [near.seal('ed25519', 2, serverHex, 'text prompt'), '', [1, 2, 3]];
  const r = await postJson(stack.port, '/v1/completions', { model: MODEL, prompt, max_tokens: 2 },
    { headers: near.nearHeaders(ck, serverHex, 2) });
  assert.equal(r.status, 200, r.body.toString());
  assert.deepEqual((await engineBody()).prompt, ['text prompt', '', [1, 2, 3]]);
  for (const c of jsonOf(r).choices) assert.ok(near.open(ck, 2, c.text).length > 0);
});

// ---- NEAR: rerank and score (§3.4) ----

test('NEAR /v1/rerank: query and documents (strings and .text) decrypted, results[].document.text sealed', async () => {
  for (const [algo, version] of [['ed25519', 2], ['ecdsa', 1]]) {
    const serverHex = await near.serverKey(stack.port, algo);
    const ck = near.clientKeys(algo);
    const s = (t) => near.seal(algo, version, serverHex, t);
    const docs = ['the first document', 'the second document'];
    const body = { model: MODEL, query: s('which document?'), documents: [s(docs[0]), { text: s(docs[1]) }] };
    const r = await postJson(stack.port, '/v1/rerank', body, { headers: near.nearHeaders(ck, serverHex, version) });
    assert.equal(r.status, 200, r.body.toString());
    const got = await engineBody();
    assert.equal(got.query, 'which document?');
    assert.deepEqual(got.documents, [docs[0], { text: docs[1] }]);
    noPlaintextOnWire(r, ['first document', 'which document']);
    assert.ok(!r.body.toString().includes('first document'), 'no document text in clear');
    const res = jsonOf(r).results;
    assert.equal(res.length, 2);
    for (const x of res) {
      assert.match(x.document.text, HEX);
      assert.equal(typeof x.relevance_score, 'number', 'the score is not a NEAR field (§3.4)');
    }
    assert.deepEqual(res.map((x) => near.open(ck, version, x.document.text)).sort(), [...docs].sort());
  }
});

test('NEAR /v1/score: text_1 and text_2 decrypted, each score sealed as its JSON', async () => {
  const serverHex = await near.serverKey(stack.port, 'ed25519');
  const ck = near.clientKeys('ed25519');
  const s = (t) => near.seal('ed25519', 2, serverHex, t);
  const body = { model: MODEL, text_1: s('a query text'), text_2: [s('candidate one'), s('candidate two')] };
  const r = await postJson(stack.port, '/v1/score', body, { headers: near.nearHeaders(ck, serverHex, 2) });
  assert.equal(r.status, 200, r.body.toString());
  const got = await engineBody();
  assert.equal(got.text_1, 'a query text');
  assert.deepEqual(got.text_2, ['candidate one', 'candidate two']);
  const want = jsonOf(await plain('/v1/score', { model: MODEL, text_1: 'a query text', text_2: ['candidate one', 'candidate two'] })).data;
  const data = jsonOf(r).data;
  assert.equal(data.length, 2);
  for (const [i, d] of data.entries()) {
    assert.match(d.score, HEX, 'the score is ciphertext on the wire');
    assert.equal(JSON.parse(near.open(ck, 2, d.score)), want[i].score);
  }
});

test('NEAR /v1/images/generations: prompt decrypted, b64_json and revised_prompt sealed, signed in X-Signature-Id', async () => {
  for (const [algo, version] of [['ecdsa', 2], ['ed25519', 2], ['ed25519', 1]]) {
    const serverHex = await near.serverKey(stack.port, algo);
    const ck = near.clientKeys(algo);
    const prompt = 'a lighthouse at dusk, in pencil';
    const body = { model: MODEL, prompt: near.seal(algo, version, serverHex, prompt), size: '8x8', response_format: 'b64_json' };
    const r = await postJson(stack.port, '/v1/images/generations', body, { headers: near.nearHeaders(ck, serverHex, version) });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal((await engineBody()).prompt, prompt, 'the engine got the prompt in clear');
    assert.ok(!r.body.toString().includes('lighthouse'));
    const wantAll = jsonOf(await plain('/v1/images/generations', { model: MODEL, prompt, size: '8x8', response_format: 'b64_json' }));
    const want = wantAll.data;
    const j = jsonOf(r);
    assert.equal(j.data.length, want.length);
    for (const [i, d] of j.data.entries()) {
      assert.match(d.b64_json, HEX, 'the image is ciphertext on the wire');
      assert.equal(near.open(ck, version, d.b64_json), want[i].b64_json);
      assert.equal(d.revised_prompt, want[i].revised_prompt, 'null passes');
    }
    // vLLM's image answer has no id: the encrypted body gets the proxy's, the one its
    // signature is stored under (nearai-cloud-verifier's encrypted_image_verifier reads `id`)
    const sid = r.headers['x-signature-id'];
    assert.match(sid ?? '', /^img-[0-9a-f]{32}$/);
    assert.equal(j.id, sid, 'the body carries the id');
    assert.equal(wantAll.id, undefined, 'the engine sent none');
    await checkSigned(stack.port, sid, signedText(r.requestBody, r.body));
  }
  // ACI defines no image fields: e2ee_unsupported_endpoint; the Dstack fork is chat only
  const before = await engineRequests();
  const a = await postJson(stack.port, '/v1/images/generations', { model: MODEL, prompt: 'x' },
    { headers: { 'X-E2EE-Version': '2', 'X-Client-Pub-Key': 'ab'.repeat(32), 'X-Model-Pub-Key': 'cd'.repeat(32),
      'X-E2EE-Nonce': 'ef'.repeat(32), 'X-E2EE-Timestamp': String(Math.floor(Date.now() / 1000)) } });
  assertOpenAIError(a, 400, { type: 'e2ee_unsupported_endpoint' });
  assert.equal(await engineRequests(), before, 'nothing reached the engine');
});

// ---- ACI v2: completions and embeddings, both suites ----

let attested;
async function serviceKey(algo) {
  if (!attested) attested = await aci.attestation(stack.port, bytesToHex(randomBytes(32)));
  return attested.keys.find((e) => e.algo === algo).public_key;
}

for (const algo of [aci.X25519, aci.SECP]) {
  const suite = algo.split('-')[0];
  for (const stream of [false, true]) {
    test(`ACI v2 ${suite} /v1/completions ${stream ? 'stream' : 'non-stream'}: prompt.{i} opened, choices.{i}.text sealed with the JCS AAD, signature over the bytes sent`, async () => {
      const serviceHex = await serviceKey(algo);
      const ck = aci.clientKeys(algo);
      const v = aci.fresh();
      const aad = (field) => aci.reqAad(algo, MODEL, field, v.nonce, v.ts);
      const extra = { max_tokens: 5, n: 2, ...(stream ? { stream: true, stream_options: { include_usage: true }, mock_chunking: 'split' } : {}) };
      const body = { model: MODEL, prompt: PROMPTS.map((p, i) => aci.seal(algo, serviceHex, p, aad(`prompt.${i}`))), ...extra };
      const r = await postJson(stack.port, '/v1/completions', body, { headers: aci.aciHeaders(ck, serviceHex, v) });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['x-e2ee-applied'], 'true');
      assert.equal(r.headers['x-e2ee-algo'], algo);
      assert.equal(r.headers['x-aci-keyset-digest'], attested.digest);
      assert.deepEqual((await engineBody()).prompt, PROMPTS);
      noPlaintextOnWire(r, ['Once upon', 'second prompt']);
      const expected = await plain('/v1/completions', { model: MODEL, prompt: PROMPTS, ...extra });
      const openText = (c, doc, i) => {
        assert.match(c.text, HEX, 'text is ciphertext on the wire (an empty one too)');
        return aci.open(ck, c.text, aci.respAad(algo, MODEL, doc.id, `choices.${c.index ?? i}.text`, v.nonce, v.ts));
      };
      let id;
      if (!stream) {
        const j = jsonOf(r);
        id = j.id;
        assert.deepEqual(j.choices.map((c, i) => openText(c, j, i)), jsonOf(expected).choices.map((c) => c.text));
        // the AAD binds the path: choice 0's text does not open as choice 1's
        assert.throws(() => aci.open(ck, j.choices[0].text, aci.respAad(algo, MODEL, j.id, 'choices.1.text', v.nonce, v.ts)));
      } else {
        const events = sseJson(r.body);
        id = events[0].id;
        assert.deepEqual(streamTexts(events, openText), streamTexts(sseJson(expected.body), (c) => c.text));
      }
      await checkSigned(stack.port, id, signedText(r.requestBody, r.body));
    });
  }

  test(`ACI v2 ${suite} /v1/embeddings: input / input.{i} opened, data.{i}.embedding sealed as compact JSON (floats and base64)`, async () => {
    const serviceHex = await serviceKey(algo);
    const ck = aci.clientKeys(algo);
    for (const [input, encoding] of [[INPUTS, undefined], [INPUTS, 'base64'], [INPUTS[0], undefined]]) {
      const v = aci.fresh();
      const aad = (field) => aci.reqAad(algo, MODEL, field, v.nonce, v.ts);
      const extra = encoding ? { encoding_format: encoding } : {};
      const sealed = Array.isArray(input) ? input.map((t, i) => aci.seal(algo, serviceHex, t, aad(`input.${i}`)))
        : aci.seal(algo, serviceHex, input, aad('input'));
      const r = await postJson(stack.port, '/v1/embeddings', { model: MODEL, input: sealed, ...extra }, { headers: aci.aciHeaders(ck, serviceHex, v) });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['x-e2ee-version'], '2');
      assert.deepEqual((await engineBody()).input, input);
      const j = jsonOf(r);
      const want = jsonOf(await plain('/v1/embeddings', { model: MODEL, input, ...extra })).data;
      assert.equal(j.data.length, want.length);
      for (const [i, d] of j.data.entries()) {
        assert.match(d.embedding, HEX);
        const value = JSON.parse(aci.open(ck, d.embedding, aci.respAad(algo, MODEL, j.id, `data.${d.index}.embedding`, v.nonce, v.ts)));
        assert.deepEqual(value, want[i].embedding);
      }
    }
  });
}

// ---- refusals: nothing of a refused request reaches the engine ----

async function refused(path, headers, body, type, message) {
  const before = await engineRequests();
  const r = await postJson(stack.port, path, body, { headers });
  const e = assertOpenAIError(r, 400, { type });
  if (message) assert.match(e.message, message);
  assert.equal(await engineRequests(), before, 'the engine received nothing');
  return e;
}

test('the Dstack fork keeps its chat-only rule: its headers on other routes get its refusal', async () => {
  const serverHex = await near.serverKey(stack.port, 'ecdsa');
  const ck = near.clientKeys('ecdsa');
  const sealed = near.seal('ecdsa', 1, serverHex, 'hello');
  const v2 = { 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': ck.header, 'X-Model-Pub-Key': serverHex,
    'X-E2EE-Version': '2', 'X-E2EE-Nonce': bytesToHex(randomBytes(16)), 'X-E2EE-Timestamp': String(Math.floor(Date.now() / 1000)) };
  const msg = /^E2EE is only supported on \/v1\/chat\/completions/;
  for (const [path, body] of [['/v1/completions', { model: MODEL, prompt: sealed }], ['/v1/embeddings', { model: MODEL, input: sealed }],
    ['/v1/rerank', { model: MODEL, query: sealed, documents: ['d'] }], ['/v1/score', { model: MODEL, text_1: sealed, text_2: 'b' }]])
    await refused(path, v2, body, 'invalid_e2ee_request', msg);
  // X-E2EE-Version: 1 is the fork's header too
  const v1 = { 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': ck.header, 'X-Model-Pub-Key': serverHex, 'X-E2EE-Version': '1' };
  await refused('/v1/completions', v1, { model: MODEL, prompt: sealed }, 'invalid_e2ee_request', msg);
});

test('ACI on a route without fields (rerank, score): e2ee_unsupported_endpoint', async () => {
  const serviceHex = await serviceKey(aci.X25519);
  const ck = aci.clientKeys(aci.X25519);
  const v = aci.fresh();
  const h = aci.aciHeaders(ck, serviceHex, v);
  await refused('/v1/rerank', h, { model: MODEL, query: 'q', documents: ['d'] }, 'e2ee_unsupported_endpoint');
  await refused('/v1/score', h, { model: MODEL, text_1: 'a', text_2: 'b' }, 'e2ee_unsupported_endpoint');
  // the nonce was not used up: the same headers still work on completions
  const r = await postJson(stack.port, '/v1/completions',
    { model: MODEL, prompt: aci.seal(aci.X25519, serviceHex, 'hi', aci.reqAad(aci.X25519, MODEL, 'prompt', v.nonce, v.ts)), max_tokens: 2 }, { headers: h });
  assert.equal(r.status, 200, r.body.toString());
});

test('a field that does not open fails the whole request; ciphertext never reaches the engine as text', async () => {
  const serverHex = await near.serverKey(stack.port, 'ed25519');
  const ck = near.clientKeys('ed25519');
  const H = near.nearHeaders(ck, serverHex, 2);
  const good = near.seal('ed25519', 2, serverHex, 'fine');
  const flip = (h) => h.slice(0, -2) + (h.slice(-2) === '00' ? '01' : '00');
  await refused('/v1/completions', H, { model: MODEL, prompt: [good, flip(good)] }, 'e2ee_decryption_failed');
  await refused('/v1/embeddings', H, { model: MODEL, input: [flip(good)] }, 'e2ee_decryption_failed');
  await refused('/v1/embeddings', H, { model: MODEL, input: 'plain text is not hex' }, 'invalid_e2ee_request');
  await refused('/v1/rerank', H, { model: MODEL, query: good, documents: [{ text: flip(good) }] }, 'e2ee_decryption_failed');
  await refused('/v1/score', H, { model: MODEL, text_1: good, text_2: [good, flip(good)] }, 'e2ee_decryption_failed');
  // a v1 sealed field under v2 headers does not open either (no fallback, §4)
  await refused('/v1/completions', H, { model: MODEL, prompt: near.seal('ed25519', 1, serverHex, 'v1 box') }, 'e2ee_decryption_failed');
  // ACI: a prompt in clear, one sealed for another path, a token-only prompt (no encrypted field)
  const serviceHex = await serviceKey(aci.SECP);
  const ack = aci.clientKeys(aci.SECP);
  for (const prompt of [(v) => 'hello in clear', (v) => aci.seal(aci.SECP, serviceHex, 'x', aci.reqAad(aci.SECP, MODEL, 'prompt.0', v.nonce, v.ts)), () => [1, 2, 3]]) {
    const v = aci.fresh();
    await refused('/v1/completions', aci.aciHeaders(ack, serviceHex, v), { model: MODEL, prompt: prompt(v) }, 'e2ee_decryption_failed');
  }
  const v = aci.fresh();
  await refused('/v1/embeddings', aci.aciHeaders(ack, serviceHex, v),
    { model: MODEL, input: [aci.seal(aci.SECP, serviceHex, 'x', aci.reqAad(aci.SECP, MODEL, 'input', v.nonce, v.ts))] }, 'e2ee_decryption_failed');
});

test('completions asking for logprobs are refused (token strings would be answered in clear)', async () => {
  const serverHex = await near.serverKey(stack.port, 'ecdsa');
  const ck = near.clientKeys('ecdsa');
  const prompt = near.seal('ecdsa', 2, serverHex, 'hello');
  for (const extra of [{ logprobs: 1 }, { logprobs: 0 }, { prompt_logprobs: 1 }])
    await refused('/v1/completions', near.nearHeaders(ck, serverHex, 2), { model: MODEL, prompt, ...extra }, 'e2ee_unsupported_field', /in clear/);
  const ok = await postJson(stack.port, '/v1/completions', { model: MODEL, prompt, logprobs: null, max_tokens: 2 },
    { headers: near.nearHeaders(ck, serverHex, 2) });
  assert.equal(ok.status, 200, 'logprobs: null asks for none');
  const serviceHex = await serviceKey(aci.X25519);
  const v = aci.fresh();
  await refused('/v1/completions', aci.aciHeaders(aci.clientKeys(aci.X25519), serviceHex, v),
    { model: MODEL, prompt: aci.seal(aci.X25519, serviceHex, 'x', aci.reqAad(aci.X25519, MODEL, 'prompt', v.nonce, v.ts)), logprobs: 2 },
    'e2ee_unsupported_field');
});
