// Assertions shared by the suites: the OpenAI error shape, signature fetching, and the
// full check that a stored record signs sha256(request bytes):sha256(response bytes).

import assert from 'node:assert/strict';
import { getPath, jsonOf } from './http.mjs';
import { cleanExitProblems } from './harness.mjs';
import { checkEcdsaSignature, checkEd25519Signature, sha256hex } from './verify.mjs';

/** Asserts {"error":{"message","type","param","code"}} and returns the error object. */
export function assertOpenAIError(res, status, { type, message } = {}) {
  const text = res.body.toString('utf8');
  assert.equal(res.status, status, `status ${res.status} (want ${status}); body: ${text.slice(0, 300)}`);
  assert.match(res.headers['content-type'] ?? '', /application\/json/, 'error content-type is JSON');
  const j = jsonOf(res);
  assert.equal(typeof j.error, 'object', `body has an "error" object: ${text.slice(0, 300)}`);
  assert.ok(j.error !== null);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in j.error, `error has member "${k}": ${text}`);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0, 'error.message is not empty');
  assert.equal(typeof j.error.type, 'string');
  if (type !== undefined) assert.equal(j.error.type, type, 'error.type');
  if (message !== undefined) assert.equal(j.error.message, message, 'error.message');
  return j.error;
}

export async function fetchSignature(port, id, algo, token = 'test_token') {
  const q = algo ? `?signing_algo=${algo}` : '';
  return getPath(port, `/v1/signature/${encodeURIComponent(id)}${q}`, { token });
}

/** GET /v1/signature/{id} for both algorithms; asserts both verify over `text`. */
export async function checkSigned(port, id, text, { attested } = {}) {
  const re = await fetchSignature(port, id);
  assert.equal(re.status, 200, `signature for ${id}: ${re.status} ${re.body.toString().slice(0, 200)}`);
  const e = jsonOf(re);
  assert.deepEqual(Object.keys(e).sort(), ['signature', 'signing_address', 'signing_algo', 'text']);
  checkEcdsaSignature(e, text);
  const rd = await fetchSignature(port, id, 'ed25519');
  assert.equal(rd.status, 200, `ed25519 signature for ${id}: ${rd.status}`);
  const d = jsonOf(rd);
  checkEd25519Signature(d, text);
  if (attested) {
    assert.equal(e.signing_address, attested.ecdsa, 'ECDSA signing_address equals the attested one');
    assert.equal(d.signing_address, attested.ed25519, 'Ed25519 signing_address equals the attested one');
  }
  return { ecdsa: e, ed25519: d };
}

export function signedText(requestBytes, responseBytes) {
  return `${sha256hex(requestBytes)}:${sha256hex(responseBytes)}`;
}

/** Attested addresses of a running proxy (fresh nonce). */
export async function attestedAddresses(port) {
  const out = {};
  for (const algo of ['ecdsa', 'ed25519']) {
    const r = await getPath(port, `/v1/attestation/report?signing_algo=${algo}&nonce=${'ab'.repeat(32)}`);
    assert.equal(r.status, 200, `report ${algo}: ${r.status} ${r.body.toString().slice(0, 200)}`);
    out[algo] = jsonOf(r).signing_address;
  }
  return out;
}

export async function poll(fn, { timeoutMs = 1000, intervalMs = 20 } = {}) {
  const t0 = Date.now();
  let v;
  for (;;) {
    v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Last test of a suite: stop the programs and check they were alive and exit cleanly. */
export async function stopAndCheck(stack) {
  await stack.stop();
  const problems = [cleanExitProblems(stack.proxy.child), cleanExitProblems(stack.mock.child)].filter(Boolean);
  assert.equal(problems.length, 0, problems.join('\n'));
}
