// The local verifying proxy's relay (issue 13, docs/VERIFY.md "The local verifying proxy"):
// `vllm-proxy-verify proxy` in front of a remote vllm-proxy (simulated attestation, in-band
// signatures) behind a TLS terminator (lib/remote-tls.mjs), with the official openai SDK as
// the app, and the tampering relay of lib/tamper.mjs between the two: a flipped byte, dropped
// trailers, another answer's valid signatures, a replayed report, another certificate. Each
// case asserts what the app sees and, for the refusals, that the engine saw no request.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { binary, haveBinary, tmpDir, sleep, TOKEN, MODEL } from './lib/harness.mjs';
import { rawRequest } from './lib/http.mjs';
import { poll } from './lib/common.mjs';
import { startRemote } from './lib/remote-tls.mjs';
import { startTamper } from './lib/tamper.mjs';
import { startLocal } from './lib/local-proxy.mjs';

const have = haveBinary('vllm-proxy-verify');

// startLocal (lib/local-proxy.mjs): its problems() after stop() names an exit other than 0 on
// SIGTERM (a ThreadSanitizer report in build-tsan/ exits 66, valgrind's in
// scripts/valgrind-integration 99) or a sanitizer report on stderr
const sdk = (lp, extra = {}) => new OpenAI({ baseURL: lp.baseURL, apiKey: 'unused-by-the-local-proxy', maxRetries: 0, ...extra });
const chatReq = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 8, ...extra });

async function collect(stream) {
  let text = '';
  for await (const ev of stream) text += ev.choices?.[0]?.delta?.content ?? ev.choices?.[0]?.text ?? '';
  return text;
}

describe('local verifying proxy', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, tamper, lp;
  before(async () => {
    remote = await startRemote();
    tamper = await startTamper({ target: remote, mode: 'pass' });
    // in clear (--e2ee off), so that the tamper's edits land on the text the app reads;
    // the same cases under end-to-end encryption: local-proxy-e2ee.test.mjs
    lp = await startLocal(tamper.url, ['--allow-simulated', '--e2ee', 'off']);
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    await tamper?.stop();
    await remote?.stop();
  });

  test('the openai SDK through the local proxy: chat and completions, streamed and not, right content', async () => {
    tamper.setMode('pass');
    const direct = new OpenAI({ baseURL: `${remote.plainUrl}/v1`, apiKey: TOKEN, maxRetries: 0 });
    const want = (await direct.chat.completions.create(chatReq())).choices[0].message.content;
    assert.match(want, /Hello/);
    const client = sdk(lp);
    const before0 = (await lp.status()).answers.verified;
    const r = await client.chat.completions.create(chatReq());
    assert.equal(r.choices[0].message.content, want);
    assert.equal(await collect(await client.chat.completions.create(chatReq({ stream: true }))), want);
    const c = await client.completions.create({ model: MODEL, prompt: 'Say hello', max_tokens: 8 });
    assert.match(c.choices[0].text, /Hello/);
    const cs = await collect(await client.completions.create({ model: MODEL, prompt: 'Say hello', max_tokens: 8, stream: true }));
    assert.equal(cs, c.choices[0].text);
    const models = await client.models.list();
    assert.equal(models.data[0].id, MODEL);
    assert.equal((await lp.status()).answers.verified, before0 + 4);
    assert.match(lp.stderr(), /lp: POST \/v1\/chat\/completions 200 \d+B \d+ms verified/);
    assert.doesNotMatch(lp.stderr(), /Say hello|Hello|hello/, 'no prompt or completion text in the log');
  });

  test('flip one byte of an answer: non-streaming 502 and APIError; streaming error event, SDK raises, no [DONE]', async () => {
    tamper.setMode('flip-byte');
    try {
      const client = sdk(lp);
      await assert.rejects(client.chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 502);
        assert.match(e.message, /answer failed verification: signature\.(text|ecdsa)/);
        assert.equal(e.code, 'signature_invalid');
        return true;
      });
      const seen = [];
      await assert.rejects((async () => {
        for await (const ev of await client.chat.completions.create(chatReq({ stream: true })))
          seen.push(ev.choices?.[0]?.delta?.content ?? '');
      })(), (e) => {
        assert.match(e.message, /answer failed verification: signature\.text/);
        return true;
      });
      assert.match(seen.join(''), /^[a-z]/, 'the events came through as they arrived (the flipped first letter)');
      // the raw stream: the error event, and no [DONE]
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq({ stream: true })) });
      const body = raw.body.toString();
      assert.equal(raw.status, 200);
      assert.match(body, /data: \{"error":\{"message":"answer failed verification: signature\.text/);
      assert.doesNotMatch(body, /\[DONE\]/);
    } finally {
      tamper.setMode('pass');
    }
    assert.match(lp.stderr(), /failed:signature\.text/);
  });

  test('another answer\'s valid signatures swapped in (heads and trailers): 502 / error event naming the signed text', async () => {
    tamper.setMode('swap-signature');
    try {
      const client = sdk(lp);
      // earlier tests' answers went through the tamper: there are signatures to swap in
      await assert.rejects(client.chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 502);
        assert.match(e.message, /signature\.text: the signed text is not/);
        return true;
      });
      await assert.rejects(collect(await client.chat.completions.create(chatReq({ stream: true }))),
        (e) => /answer failed verification: signature\.text/.test(e.message));
    } finally {
      tamper.setMode('pass');
    }
  });

  test('trailers dropped from a streamed answer: error event signature.missing_trailer, no [DONE]', async () => {
    tamper.setMode('drop-trailer');
    try {
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq({ stream: true })) });
      const body = raw.body.toString();
      assert.equal(raw.status, 200);
      assert.match(body, /data: \{"error":\{"message":"answer failed verification: signature\.missing_trailer/);
      assert.doesNotMatch(body, /\[DONE\]/);
      await assert.rejects(collect(await sdk(lp).chat.completions.create(chatReq({ stream: true }))),
        (e) => /signature\.missing_trailer/.test(e.message));
      // a non-streamed answer has its signatures in its head: unaffected
      const r = await sdk(lp).chat.completions.create(chatReq());
      assert.match(r.choices[0].message.content, /Hello/);
    } finally {
      tamper.setMode('pass');
    }
  });

  test('Host and Origin not ours: 403; no CORS headers', async () => {
    const post = (headers) => rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
      headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(chatReq()) });
    const n0 = await remote.engineRequests();
    const h = await post({ Host: `attacker.example:${lp.port}` });
    assert.equal(h.status, 403);
    assert.equal(JSON.parse(h.body).error.code, 'host_not_allowed');
    const o = await post({ Origin: 'http://attacker.example' });
    assert.equal(o.status, 403);
    assert.equal(JSON.parse(o.body).error.code, 'origin_not_allowed');
    const s = await post({ 'Sec-Fetch-Site': 'cross-site' });
    assert.equal(s.status, 403);
    assert.equal(await remote.engineRequests(), n0);
    const ok = await post({ Host: `localhost:${lp.port}`, Origin: `http://localhost:${lp.port}` });
    assert.equal(ok.status, 200);
    for (const k of Object.keys(ok.headers)) assert.doesNotMatch(k, /^access-control-/i);
    const page = await rawRequest(lp.port, { path: '/' });
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
    assert.match(page.headers['content-security-policy'], /default-src 'none'/);
  });
  test('another TLS certificate: 503 naming the TLS key, no relayed request', async () => {
    tamper.setMode('other-cert');
    try {
      const n0 = await remote.engineRequests();
      // a new local connection has a new libcurl handle, so a new TLS connection to the tamper
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq()) });
      assert.equal(raw.status, 503);
      const err = JSON.parse(raw.body).error;
      assert.equal(err.code, 'remote_not_verified');
      assert.match(err.message, /^remote not verified: /);
      assert.equal(await remote.engineRequests(), n0, 'nothing reached the engine');
      // the log line is written after the answer: wait for it
      const logged = /POST \/v1\/chat\/completions 503 \d+B \d+ms not-verified/;
      await poll(() => logged.test(lp.stderr()), { timeoutMs: 5000 });
      assert.match(lp.stderr(), logged);
    } finally {
      tamper.setMode('pass');
    }
    // the remote stays unverified until the attestation side verifies it again (its own
    // schedule); this case runs last in its suite
  });
});

describe('local verifying proxy: refusals', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, tamper;
  before(async () => {
    remote = await startRemote();
    tamper = await startTamper({ target: remote, mode: 'pass' });
  });
  after(async () => {
    await tamper?.stop();
    await remote?.stop();
  });

  async function refused(args, why, mode = 'pass') {
    tamper.setMode(mode);
    const lp = await startLocal(tamper.url, args, { waitVerified: false });
    try {
      // the first verification finishes (failed) before we ask
      const t0 = Date.now();
      while (/in progress/.test(JSON.stringify(await lp.status())) && Date.now() - t0 < 15000) await sleep(50);
      const n0 = await remote.engineRequests();
      await assert.rejects(sdk(lp).chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 503);
        assert.match(e.message, new RegExp(`remote not verified: .*${why}`));
        return true;
      });
      const raw = await rawRequest(lp.port, { method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq({ stream: true })) });
      assert.equal(raw.status, 503);
      assert.equal(JSON.parse(raw.body).error.code, 'remote_not_verified');
      assert.equal(await remote.engineRequests(), n0, 'no relayed request');
    } finally {
      await lp.stop();
      tamper.setMode('pass');
    }
    assert.equal(lp.problems(), null);
  }

  test('simulated attestation without --allow-simulated: 503, nothing relayed', () => refused([], 'SIMULATED'));
  test('a replayed report (the tamper answers with the first report, whatever nonce): 503, nothing relayed', () => refused(['--allow-simulated'], '', 'replay-report'));
  test('a measurement pin that does not match (--policy with another MRTD): 503, nothing relayed', async () => {
    const dir = tmpDir('vp-lp-pol-');
    const f = path.join(dir, 'policy.json');
    fs.writeFileSync(f, JSON.stringify({ mrtd: '00'.repeat(48) }));
    try {
      await refused(['--allow-simulated', '--policy', f], 'mrtd');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('--local-token: 401 without it, served with it; it never reaches the remote', async () => {
    const lp = await startLocal(remote.url, ['--allow-simulated', '--local-token', 'local-secret']);
    try {
      await assert.rejects(sdk(lp, { apiKey: 'wrong' }).models.list(), (e) => e.status === 401);
      await assert.rejects(sdk(lp, { apiKey: 'local-secreT' }).models.list(), (e) => e.status === 401);
      const r = await sdk(lp, { apiKey: 'local-secret' }).chat.completions.create(chatReq());
      assert.match(r.choices[0].message.content, /Hello/);
      const last = await remote.stack.mock.last();
      assert.doesNotMatch(JSON.stringify(last), /local-secret/);
    } finally {
      await lp.stop();
    }
    assert.equal(lp.problems(), null);
  });

  test('usage: an http remote needs --allow-http; --e2ee takes auto, off or a format', () => {
    const run = (args) => {
      try {
        execFileSync(binary('vllm-proxy-verify'), args, { stdio: 'pipe' });
        return { code: 0, err: '' };
      } catch (e) {
        return { code: e.status, err: e.stderr.toString() };
      }
    };
    const a = run(['proxy', 'http://127.0.0.1:1']);
    assert.equal(a.code, 2);
    assert.match(a.err, /--allow-http/);
    const b = run(['proxy', remote.url, '--e2ee', 'aci-v2']);
    assert.equal(b.code, 2);
    assert.match(b.err, /--e2ee: auto, off/);
    const c = run(['report', remote.url, '--listen', '127.0.0.1:1']);
    assert.equal(c.code, 2);
  });
});
