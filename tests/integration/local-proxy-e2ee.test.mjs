// The local verifying proxy with end-to-end encryption (issue 13, docs/VERIFY.md "The local
// verifying proxy → End-to-end encryption"): `vllm-proxy-verify proxy` seals each request to
// the attested key and opens the answer, so that the tampering relay of lib/tamper.mjs,
// standing where anything between the app's machine and the CVM would, sees ciphertext only.
// The app is the official openai SDK, unchanged. The relay's capture records every byte it
// receives and writes; the prompt and the completion text are searched for in them, and the
// same search in `--e2ee off` finds them (so the search can fail).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import { binary, freePort, haveBinary, sleep, TOKEN, MODEL } from './lib/harness.mjs';
import { rawRequest } from './lib/http.mjs';
import { startRemote } from './lib/remote-tls.mjs';
import { startTamper } from './lib/tamper.mjs';

const have = haveBinary('vllm-proxy-verify');

async function startLocal(remoteUrl, args = []) {
  const port = await freePort();
  const child = spawn(binary('vllm-proxy-verify'),
    ['proxy', remoteUrl, '--listen', `127.0.0.1:${port}`, '--token', TOKEN, '--allow-simulated', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const err = [];
  child.stderr.on('data', (d) => err.push(d));
  const exited = new Promise((r) => child.on('exit', (code, sig) => r({ code, sig })));
  const lp = {
    port,
    baseURL: `http://127.0.0.1:${port}/v1`,
    stderr: () => Buffer.concat(err).toString('utf8'),
    status: async () => JSON.parse((await rawRequest(port, { path: '/verification' })).body.toString()),
    async stop() { child.kill('SIGTERM'); return exited; },
  };
  const t0 = Date.now();
  for (;;) {
    try {
      if ((await lp.status()).verified) break;
    } catch { /* not listening yet */ }
    if (Date.now() - t0 > 20000) throw new Error(`local proxy not ready\n${lp.stderr()}`);
    await sleep(50);
  }
  return lp;
}

const sdk = (lp) => new OpenAI({ baseURL: lp.baseURL, apiKey: 'unused', maxRetries: 0 });
// a prompt nobody else sends, so that finding it anywhere means it travelled in clear
const SECRET = `the secret word is ${crypto.randomBytes(6).toString('hex')}-zebra`;
const chatReq = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: SECRET }], max_tokens: 12, ...extra });
const complReq = (extra = {}) => ({ model: MODEL, prompt: SECRET, max_tokens: 12, ...extra });

async function collect(stream) {
  let text = '';
  for await (const ev of stream) text += ev.choices?.[0]?.delta?.content ?? ev.choices?.[0]?.text ?? '';
  return text;
}

/** Words of the answer that hex (the ciphertext's alphabet) cannot spell by chance. */
function telltales(text) {
  const words = text.split(/[^A-Za-z\u00c0-\uffff]+/).filter((w) => w.length >= 4 && /[g-zG-Z\u00c0-\uffff]/.test(w));
  assert.ok(words.length >= 3, `the answer has words to look for: ${JSON.stringify(text)}`);
  return words;
}

function assertNotIn(buf, needles, where) {
  for (const n of needles)
    assert.ok(!buf.includes(Buffer.from(n, 'utf8')), `${where} carries ${JSON.stringify(n)} in clear`);
}

describe('local verifying proxy: end-to-end encryption', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, tamper, lp, want;
  before(async () => {
    remote = await startRemote({ mock: { args: ['--record-body'] } });
    tamper = await startTamper({ target: remote, mode: 'pass' });
    lp = await startLocal(tamper.url); // no --e2ee: the default, auto
    // the answers as the engine writes them, asked directly in clear
    const direct = new OpenAI({ baseURL: `${remote.plainUrl}/v1`, apiKey: TOKEN, maxRetries: 0 });
    want = {
      chat: (await direct.chat.completions.create(chatReq())).choices[0].message.content,
      completion: (await direct.completions.create(complReq())).choices[0].text,
      embedding: (await direct.embeddings.create({ model: MODEL, input: SECRET })).data[0].embedding,
    };
  });
  after(async () => {
    await lp?.stop();
    await tamper?.stop();
    await remote?.stop();
  });

  test('default (auto): chat and completions, streamed and not, and embeddings: the app gets the plaintext, the wire carries none', async () => {
    tamper.setMode('pass');
    const client = sdk(lp);
    const v0 = (await lp.status()).answers.verified;
    tamper.capture(true);
    try {
      const r = await client.chat.completions.create(chatReq());
      assert.equal(r.choices[0].message.content, want.chat);
      assert.equal(await collect(await client.chat.completions.create(chatReq({ stream: true }))), want.chat);
      const c = await client.completions.create(complReq());
      assert.equal(c.choices[0].text, want.completion);
      assert.equal(await collect(await client.completions.create(complReq({ stream: true }))), want.completion);
      const e = await client.embeddings.create({ model: MODEL, input: SECRET });
      assert.deepEqual(e.data[0].embedding, want.embedding);
      const { up, down } = tamper.captured();
      assert.ok(up.length > 1000 && down.length > 1000, 'the relay saw the traffic');
      // sealed: the format's headers went out, and neither the prompt nor the answer in clear
      assert.match(up.toString('latin1'), /X-E2EE-Version: 2/i);
      assert.match(up.toString('latin1'), /X-Encryption-Version: 2/i);
      assertNotIn(up, [SECRET, SECRET.split(' ').pop()], 'a request');
      assertNotIn(down, [...telltales(want.chat), ...telltales(want.completion)], 'an answer');
      assertNotIn(down, [JSON.stringify(want.embedding.slice(0, 3)).slice(1, -1)], 'an embedding');
    } finally {
      tamper.capture(false);
    }
    // the engine got the plaintext: the remote decrypted what the local proxy sealed
    const last = await remote.stack.mock.last();
    assert.equal(last.path, '/v1/embeddings');
    assert.equal(JSON.parse(last.body).input, SECRET);
    assert.equal((await lp.status()).answers.verified, v0 + 5, 'all five verified');
    assert.match(lp.stderr(), /lp: POST \/v1\/chat\/completions 200 \d+B \d+ms verified,e2ee/);
    assert.doesNotMatch(lp.stderr(), /zebra|Hello|world/, 'no prompt or completion text in the log');
  });

  test('the app sees the format it was sealed in, Content-Length of the plaintext; the status documents name the format per route', async () => {
    const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq()) });
    assert.equal(raw.status, 200);
    assert.equal(raw.headers['x-verify'], 'verified');
    assert.equal(raw.headers['x-verify-e2ee'], 'dstack-v2 ed25519');
    assert.equal(Number(raw.headers['content-length']), raw.body.length);
    assert.equal(JSON.parse(raw.body).choices[0].message.content, want.chat);
    for (const k of Object.keys(raw.headers)) assert.doesNotMatch(k, /^x-e2ee-/i, 'the remote\'s E2EE headers are not passed on');
    const s = await lp.status();
    assert.equal(s.e2ee.mode, 'auto');
    assert.equal(s.e2ee.routes['/v1/chat/completions'], 'dstack-v2 ed25519');
    assert.equal(s.e2ee.routes['/v1/completions'], 'near-v2 ed25519');
    assert.equal(s.e2ee.routes['/v1/embeddings'], 'near-v2 ed25519');
    assert.equal(s.e2ee.routes.other, 'clear');
    const page = (await rawRequest(lp.port, { path: '/' })).body.toString();
    assert.match(page, /id="e2ee"/);
    assert.match(page, /dstack-v2 ed25519/);
  });

  test('flip one byte of an encrypted answer: caught (signature or decryption), 502 / SDK error, no [DONE]', async () => {
    tamper.setMode('flip-byte');
    try {
      const client = sdk(lp);
      const f0 = tamper.stats().flipped;
      await assert.rejects(client.chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 502);
        assert.match(e.message, /answer failed verification: (signature\.(text|ecdsa)|e2ee\.decrypt)/);
        return true;
      });
      await assert.rejects(collect(await client.chat.completions.create(chatReq({ stream: true }))),
        (e) => /answer failed verification: (signature\.text|e2ee\.decrypt)/.test(e.message));
      await assert.rejects(collect(await client.completions.create(complReq({ stream: true }))),
        (e) => /answer failed verification: (signature\.text|e2ee\.decrypt)/.test(e.message));
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq({ stream: true })) });
      assert.equal(raw.status, 200);
      assert.match(raw.body.toString(), /data: \{"error":\{"message":"answer failed verification: /);
      assert.doesNotMatch(raw.body.toString(), /\[DONE\]/);
      assert.equal(tamper.stats().flipped, f0 + 4, 'each answer had a byte flipped');
    } finally {
      tamper.setMode('pass');
    }
  });

  test('another answer\'s signatures swapped in, trailers dropped: caught under E2EE as in clear', async () => {
    tamper.setMode('swap-signature');
    try {
      await assert.rejects(sdk(lp).chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 502);
        assert.match(e.message, /signature\.text: the signed text is not/);
        return true;
      });
    } finally {
      tamper.setMode('pass');
    }
    tamper.setMode('drop-trailer');
    try {
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq({ stream: true })) });
      const body = raw.body.toString();
      assert.match(body, /data: \{"error":\{"message":"answer failed verification: signature\.missing_trailer/);
      assert.doesNotMatch(body, /\[DONE\]/);
      // what passed before the failure was opened: plaintext events, no ciphertext
      assert.match(body, /"content":"Hello"/);
    } finally {
      tamper.setMode('pass');
    }
  });

  test('a request with tools under E2EE: 400 locally, nothing relayed', async () => {
    const n0 = await remote.engineRequests();
    const r0 = tamper.stats().requests['/v1/chat/completions'] ?? 0;
    await assert.rejects(sdk(lp).chat.completions.create(chatReq({
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }],
    })), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.code, 'e2ee.unsupported_field');
      assert.match(e.message, /tools/);
      return true;
    });
    assert.equal(await remote.engineRequests(), n0);
    assert.equal(tamper.stats().requests['/v1/chat/completions'] ?? 0, r0, 'nothing reached the relay');
    assert.match(lp.stderr(), /POST \/v1\/chat\/completions 400 \d+B \d+ms refused:e2ee\.unsupported_field/);
  });

  test('--e2ee off: the same search finds the prompt and the answer on the wire (the check above can fail)', async () => {
    const off = await startLocal(tamper.url, ['--e2ee', 'off']);
    tamper.capture(true);
    try {
      const r = await sdk(off).chat.completions.create(chatReq());
      assert.equal(r.choices[0].message.content, want.chat);
      const { up, down } = tamper.captured();
      assert.ok(up.includes(Buffer.from(SECRET)));
      assert.ok(telltales(want.chat).every((w) => down.includes(Buffer.from(w))));
      assert.equal((await off.status()).e2ee.routes['/v1/chat/completions'], 'clear');
    } finally {
      tamper.capture(false);
      await off.stop();
    }
  });

  test('an explicit format: near-v2 serves chat sealed; a route it cannot encrypt, and dstack-v2 off chat, get 400 and nothing relayed', async () => {
    const near = await startLocal(tamper.url, ['--e2ee', 'near-v2']);
    tamper.capture(true);
    try {
      const client = sdk(near);
      assert.equal(await collect(await client.chat.completions.create(chatReq({ stream: true }))), want.chat);
      const { up, down } = tamper.captured();
      assert.match(up.toString('latin1'), /X-Client-Pub-Key: /i);
      assertNotIn(up, [SECRET], 'a request');
      assertNotIn(down, telltales(want.chat), 'an answer');
      const n0 = await remote.engineRequests();
      const st0 = tamper.stats().requests;
      for (const p of ['/v1/tokenize', '/v1/rerank']) {
        const raw = await rawRequest(near.port, { method: 'POST', path: p,
          headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt: SECRET, query: SECRET, documents: [SECRET] }) });
        assert.equal(raw.status, 400, p);
        const err = JSON.parse(raw.body).error;
        assert.equal(err.code, 'e2ee.route');
        assert.equal(err.type, 'invalid_request_error');
      }
      assert.deepEqual(tamper.stats().requests, st0, 'nothing reached the relay');
      assert.equal(await remote.engineRequests(), n0);
      // bodiless requests go in clear: the SDK can list the models
      assert.equal((await client.models.list()).data[0].id, MODEL);
      assert.equal((await near.status()).e2ee.routes.other, 'refused (e2ee.route)');
    } finally {
      tamper.capture(false);
      await near.stop();
    }
    const dst = await startLocal(tamper.url, ['--e2ee', 'dstack-v2:ecdsa']);
    try {
      const st0 = tamper.stats().requests;
      await assert.rejects(sdk(dst).completions.create(complReq()), (e) => e.status === 400 && e.code === 'e2ee.format');
      assert.deepEqual(tamper.stats().requests, st0);
      const r = await sdk(dst).chat.completions.create(chatReq());
      assert.equal(r.choices[0].message.content, want.chat);
      assert.equal((await dst.status()).e2ee.routes['/v1/chat/completions'], 'dstack-v2 ecdsa');
    } finally {
      await dst.stop();
    }
  });

  test('usage: --e2ee takes auto, off or a format the local proxy can seal', () => {
    const run = (args) => {
      try {
        execFileSync(binary('vllm-proxy-verify'), args, { stdio: 'pipe' });
        return { code: 0, err: '' };
      } catch (e) {
        return { code: e.status, err: e.stderr.toString() };
      }
    };
    for (const bad of ['bogus', 'aci-v2', 'near-v2:rsa']) {
      const r = run(['proxy', remote.url, '--e2ee', bad]);
      assert.equal(r.code, 2, bad);
      assert.match(r.err, /--e2ee: auto, off, dstack-v2, near-v2/);
    }
    assert.match(execFileSync(binary('vllm-proxy-verify'), ['help', 'proxy']).toString(), /--e2ee auto\|off\|FORMAT/);
  });
});
