// vllm-proxy-verify chat --e2ee FORMAT against vllm-proxy + mock-vllm (simulated attestation):
// every enabled format (Dstack v1/v2, NEAR v1/v2) with both signing keys, streamed and not;
// the engine must receive the plaintext the verifier sealed (so the proxy opened what the
// verifier encrypted to the attested key), and the verifier must pass every line. Negative
// cases: a man in the middle that strips the E2EE headers (the proxy then answers in
// plaintext, honestly signed), one that flips a byte of the encrypted answer, a report that
// does not verify (nothing may be sent), and usage errors.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { BUILD_DIR, TOKEN, MODEL, startStack } from './lib/harness.mjs';

const VERIFY = path.join(BUILD_DIR, 'vllm-proxy-verify');
const haveVerify = fs.existsSync(VERIFY);
const PROMPT = 'the secret prompt: héllo "quoted" 42';

function verify(args) {
  return new Promise((resolve) => {
    execFile(VERIFY, [...args, '--json'], { maxBuffer: 16 << 20, timeout: 60000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      let json = null;
      try { json = JSON.parse(stdout); } catch { /* usage errors print no JSON */ }
      const checks = new Map();
      for (const c of json?.checks ?? []) checks.set(c.id, c);
      resolve({ code, stdout, stderr, json, checks });
    });
  });
}

const describeRun = (r) => (r.json?.checks ?? []).filter((c) => c.status !== 'pass')
  .map((c) => `[${c.status}] ${c.id}: ${c.found}`).join('\n') || r.stdout + r.stderr;

function expectExit(r, code) {
  assert.doesNotMatch(r.stderr ?? '', /ERROR: (Address|Leak)Sanitizer|runtime error:/, 'no sanitizer report');
  assert.equal(r.code, code, `exit ${r.code}, want ${code}\n${describeRun(r)}`);
}

function expectStatus(r, id, status) {
  const c = r.checks.get(id);
  assert.ok(c, `line ${id} present\n${describeRun(r)}`);
  assert.equal(c.status, status, `${id}: ${c.status} (${c.found}), want ${status}`);
}

const E2EE_HEADERS = ['x-signing-algo', 'x-client-pub-key', 'x-model-pub-key', 'x-e2ee-version',
  'x-e2ee-nonce', 'x-e2ee-timestamp', 'x-encryption-version', 'x-encrypt-all-fields'];

/** A man in the middle in front of the proxy: relays every request; `onChat` may rewrite the
 *  chat request's headers and the answer's bytes. Whole bodies are buffered. */
async function startMitm(target, { stripHeaders = false, tamper = null } = {}) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const isChat = req.url.startsWith('/v1/chat/completions');
      const headers = { ...req.headers };
      delete headers.host;
      if (isChat && stripHeaders) for (const h of E2EE_HEADERS) delete headers[h];
      const up = http.request({ host: '127.0.0.1', port: target, path: req.url, method: req.method, headers }, (ur) => {
        const out = [];
        ur.on('data', (c) => out.push(c));
        ur.on('end', () => {
          let body = Buffer.concat(out);
          if (isChat && tamper) body = tamper(body);
          const h = { ...ur.headers };
          delete h['transfer-encoding'];
          delete h['content-length'];
          delete h.connection;
          res.writeHead(ur.statusCode, { ...h, 'content-length': body.length });
          res.end(body);
        });
      });
      up.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { port: server.address().port, close: () => new Promise((r) => server.close(r)) };
}

describe('vllm-proxy-verify chat --e2ee', { skip: !haveVerify && 'build/vllm-proxy-verify not built' }, () => {
  let stack;
  before(async () => { stack = await startStack({ mock: { args: ['--record-body'] } }); });
  after(async () => { await stack?.stop(); });
  const url = () => `http://127.0.0.1:${stack.port}`;
  const base = (extra) => ['chat', url(), '--token', TOKEN, '--model', MODEL, '--allow-simulated',
    '--prompt', PROMPT, '--max-tokens', '8', ...extra];

  for (const format of ['dstack-v1', 'dstack-v2', 'near-v1', 'near-v2']) {
    for (const algo of ['ecdsa', 'ed25519']) {
      for (const stream of [false, true]) {
        test(`${format} ${algo} ${stream ? 'stream' : 'JSON'}: sealed to the attested key, decrypted, no plaintext on the wire, signed over the ciphertext`, async () => {
          const r = await verify(base(['--e2ee', format, '--signing-algo', algo, ...(stream ? ['--stream'] : [])]));
          expectExit(r, 0);
          for (const id of ['e2ee.key', 'e2ee.request.plaintext', 'e2ee.response.decrypt', 'e2ee.response.plaintext',
            `chat.${algo}.text`, `chat.${algo}.signature`, `chat.${algo}.attested`, 'e2ee.signature',
            `${algo}.report.nonce`, `${algo}.tdx.report_data`]) expectStatus(r, id, 'pass');
          assert.match(r.checks.get('e2ee.key').found, new RegExp(`^${format} ${algo}`));
          // the engine saw the plaintext: the proxy opened what the verifier sealed
          const got = JSON.parse((await stack.mock.last()).body);
          assert.equal(got.messages[0].content, PROMPT, 'mock-vllm received the decrypted prompt');
          assert.doesNotMatch(r.stdout, /PROMPT FOUND|PLAINTEXT FOUND/);
        });
      }
    }
  }

  test('a man in the middle stripping the E2EE headers gets a plaintext answer: exit 1 (the answer does not decrypt)', async () => {
    const mitm = await startMitm(stack.port, { stripHeaders: true });
    try {
      for (const stream of [false, true]) {
        const r = await verify(['chat', `http://127.0.0.1:${mitm.port}`, '--token', TOKEN, '--model', MODEL,
          '--allow-simulated', '--prompt', PROMPT, '--max-tokens', '8', '--e2ee', 'dstack-v2', ...(stream ? ['--stream'] : [])]);
        expectExit(r, 1);
        expectStatus(r, 'e2ee.key', 'pass');
        expectStatus(r, 'e2ee.request.plaintext', 'pass');
        expectStatus(r, 'e2ee.response.decrypt', 'fail');
        assert.match(r.checks.get('e2ee.response.decrypt').found, /does not decrypt/);
        expectStatus(r, 'e2ee.response.plaintext', 'fail');
        // the proxy relayed the ciphertext as text and signed what it did honestly
        expectStatus(r, 'chat.ecdsa.signature', 'pass');
      }
    } finally {
      await mitm.close();
    }
  });

  test('a man in the middle flipping one hex digit of the encrypted answer: exit 1 (decrypt and signed text fail)', async () => {
    const mitm = await startMitm(stack.port, {
      tamper: (b) => {
        const s = b.toString('latin1');
        const m = /"content":"([0-9a-f]{80})/.exec(s);
        if (!m) return b;
        const at = m.index + '"content":"'.length + 70;
        return Buffer.from(s.slice(0, at) + (s[at] === '0' ? '1' : '0') + s.slice(at + 1), 'latin1');
      },
    });
    try {
      const r = await verify(['chat', `http://127.0.0.1:${mitm.port}`, '--token', TOKEN, '--model', MODEL,
        '--allow-simulated', '--prompt', PROMPT, '--e2ee', 'near-v2', '--signing-algo', 'ed25519']);
      expectExit(r, 1);
      expectStatus(r, 'e2ee.response.decrypt', 'fail');
      expectStatus(r, 'chat.ed25519.text', 'fail');
      expectStatus(r, 'e2ee.signature', 'fail');
    } finally {
      await mitm.close();
    }
  });

  test('a report that does not verify (simulated, without --allow-simulated): nothing is sent, exit 1', async () => {
    const before = (await stack.mock.stats());
    const r = await verify(['chat', url(), '--token', TOKEN, '--model', MODEL, '--prompt', PROMPT, '--e2ee', 'dstack-v1']);
    expectExit(r, 1);
    expectStatus(r, 'ecdsa.report.mode', 'fail');
    expectStatus(r, 'e2ee.key', 'fail');
    assert.match(r.checks.get('e2ee.key').found, /not sent/);
    assert.ok(!r.checks.has('chat.request'), 'no chat request line');
    assert.deepEqual(await stack.mock.stats(), before, 'mock-vllm got no request');
  });

  test('usage: an unknown format, ACI v2 (not served yet) and --e2ee outside chat are usage errors (exit 2)', async () => {
    for (const f of ['bogus', 'aci-v2']) {
      const r = await verify(['chat', url(), '--token', TOKEN, '--e2ee', f]);
      expectExit(r, 2);
      assert.match(r.stderr, /--e2ee/);
    }
    const r = await verify(['report', url(), '--token', TOKEN, '--e2ee', 'dstack-v2']);
    expectExit(r, 2);
    assert.match(r.stderr, /--e2ee is an option of chat/);
  });
});
