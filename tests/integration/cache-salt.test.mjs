// Prefix-cache isolation (CACHE_SALT_SECRET, docs/CONFIG.md): the engine sees one top-level
// cache_salt, base64url(HMAC-SHA256(secret, bearer token)) computed here with @noble/hashes;
// a client's own cache_salt never reaches it; the signature still covers the bytes the
// client sent. Without the setting a client's salt passes untouched.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { startStack, MODEL, TOKEN, OTHER_TOKEN } from './lib/harness.mjs';
import { postJson, jsonOf, sseData } from './lib/http.mjs';
import { checkSigned, signedText, stopAndCheck } from './lib/common.mjs';
import { sha256hex } from './lib/verify.mjs';

const SECRET = crypto.randomBytes(24).toString('base64'); // 32 characters, fresh per run
const expectedSalt = (token) => Buffer.from(hmac(sha256, Buffer.from(SECRET), Buffer.from(token))).toString('base64url');

let stack, plain;
before(async () => {
  stack = await startStack({ mock: { args: ['--record-body'] }, proxy: { env: { CACHE_SALT_SECRET: SECRET } } });
  plain = await startStack({ mock: { args: ['--record-body'] } });
});
after(async () => {
  await stopAndCheck(stack);
  await stopAndCheck(plain);
});

/** Sends raw (a string) and returns [response, the body the engine got, parsed]. */
async function send(s, route, raw, token = TOKEN) {
  const r = await postJson(s.port, route, raw, { token });
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  const last = await s.mock.last();
  return [r, last.body, JSON.parse(last.body)];
}

test('the engine gets the salt of the caller\'s token, never the client\'s', async () => {
  const victim = expectedSalt(OTHER_TOKEN);
  const raw = `{"model":"${MODEL}","cache_salt":"${victim}","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"cache_salt":"second"}`;
  const [r, fwd, body] = await send(stack, '/v1/chat/completions', raw, TOKEN);
  assert.equal(body.cache_salt, expectedSalt(TOKEN));
  assert.notEqual(body.cache_salt, victim);
  assert.equal(fwd.split('"cache_salt"').length - 1, 1, 'one cache_salt member in the forwarded bytes');
  assert.ok(!fwd.includes(victim) && !fwd.includes('second'), 'no client salt reaches the engine');
  assert.deepEqual({ ...body, cache_salt: undefined }, { ...JSON.parse(raw), cache_salt: undefined },
    'every other member as the client sent it');
  // the signed request hash is over the bytes the client sent, not the rewrite
  await checkSigned(stack.port, jsonOf(r).id, signedText(Buffer.from(raw), r.body));
  assert.notEqual(sha256hex(Buffer.from(fwd)), sha256hex(Buffer.from(raw)));
});

test('same token, same salt; another token, another salt; valid for vLLM', async () => {
  const salts = [];
  for (const [token, route, extra] of [[TOKEN, '/v1/chat/completions', ''], [TOKEN, '/v1/completions', ''],
    [OTHER_TOKEN, '/v1/chat/completions', ''], [OTHER_TOKEN, '/v1/completions', ',"stream":true']]) {
    const raw = route.includes('chat')
      ? `{"model":"${MODEL}","messages":[{"role":"user","content":"q${salts.length}"}]${extra}}`
      : `{"model":"${MODEL}","prompt":"p${salts.length}"${extra}}`;
    const [r, , body] = await send(stack, route, raw, token);
    assert.equal(body.cache_salt, expectedSalt(token), `${route} for ${token}`);
    if (extra) {
      const events = sseData(r.body);
      assert.equal(events.at(-1), '[DONE]');
    }
    salts.push(body.cache_salt);
  }
  assert.equal(salts[0], salts[1]);
  assert.equal(salts[2], salts[3]);
  assert.notEqual(salts[0], salts[2]);
  for (const s of salts) {
    assert.equal(s.length, 43);
    assert.ok(s.length <= 128 && !/[@/\\\0]/.test(s), 'vLLM validate_cache_salt: <= 128, no @ / \\ NUL');
  }
});

test('a client cache_salt of any type, or none, is replaced', async () => {
  for (const v of ['null', '{"a":"b"}', '[1]', '7', '""']) {
    const raw = `{"cache_salt":${v},"model":"${MODEL}","messages":[{"role":"user","content":"x"}]}`;
    const [, fwd, body] = await send(stack, '/v1/chat/completions', raw);
    assert.equal(body.cache_salt, expectedSalt(TOKEN), v);
    assert.equal(fwd.split('"cache_salt"').length - 1, 1, v);
  }
  const [, , body] = await send(stack, '/v1/chat/completions', `{"model":"${MODEL}","messages":[]}`);
  assert.equal(body.cache_salt, expectedSalt(TOKEN));
});

test('without CACHE_SALT_SECRET the client\'s salt passes untouched', async () => {
  const raw = `{"model":"${MODEL}","cache_salt":"mine","messages":[{"role":"user","content":"hi"}]}`;
  const [, fwd, body] = await send(plain, '/v1/chat/completions', raw);
  assert.equal(fwd, raw);
  assert.equal(body.cache_salt, 'mine');
});
