// vllm-proxy-verify chat --e2ee FORMAT against vllm-proxy + mock-vllm (simulated attestation):
// every enabled format (Dstack v1/v2, NEAR v1/v2) with both signing keys, and ACI v2 with both
// suites (its keys come from /v1/aci/attestation), streamed and not;
// the engine must receive the plaintext the verifier sealed (so the proxy opened what the
// verifier encrypted to the attested key), and the verifier must pass every line. Negative
// cases: a man in the middle that strips the E2EE headers (the proxy then answers in
// plaintext, honestly signed), one that flips a byte of the encrypted answer, a report that
// does not verify (nothing may be sent), an ACI keyset whose digest or key was tampered with
// (nothing may be sent), and usage errors.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createHash } from 'node:crypto';
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
async function startMitm(target, { stripHeaders = false, tamper = null, tamperAci = null } = {}) {
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
          if (tamperAci && req.url.startsWith('/v1/aci/attestation')) body = tamperAci(body);
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

  for (const suite of ['x25519', 'secp256k1']) {
    for (const stream of [false, true]) {
      test(`aci-v2 ${suite} ${stream ? 'stream' : 'JSON'}: keyset verified (digest, quote, nonce), sealed to its key, decrypted, hints checked`, async () => {
        const before = await stack.mock.stats();
        const args = ['--e2ee', 'aci-v2', ...(suite === 'x25519' ? [] : ['--e2ee-suite', suite]), ...(stream ? ['--stream'] : [])];
        const r = await verify(base(args));
        expectExit(r, 0);
        for (const id of ['aci.fetch', 'aci.format', 'aci.nonce', 'aci.keyset_digest', 'aci.keyset.not_after',
          'aci.report_data', 'aci.tdx.report_data', 'aci.tdx.quote.signature', 'aci.tdx.quote.pck_chain',
          'e2ee.key', 'e2ee.request.plaintext', 'e2ee.response.headers', 'e2ee.response.decrypt',
          'e2ee.response.plaintext', 'chat.ecdsa.text', 'chat.ecdsa.signature', 'chat.ed25519.signature',
          'ecdsa.tdx.report_data', 'e2ee.signature']) expectStatus(r, id, 'pass');
        expectStatus(r, 'aci.mode', 'warn'); // simulated, accepted with --allow-simulated
        assert.match(r.checks.get('e2ee.key').found, new RegExp(`^aci-v2 ${suite}, key aci-e2ee-v2-${suite}-`));
        assert.ok(!r.checks.has('chat.ecdsa.attested'), 'the ACI key is not a signing key');
        // the keyset digest the verifier computed is the one the proxy serves and hints
        const att = JSON.parse((await fetch(`${url()}/v1/aci/attestation`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((x) => x.text())));
        assert.equal(r.checks.get('aci.keyset_digest').expected, att.workload_keyset_digest);
        assert.match(r.checks.get('e2ee.response.headers').found, new RegExp(`X-ACI-Keyset-Digest ${att.workload_keyset_digest}`));
        const got = JSON.parse((await stack.mock.last()).body);
        assert.equal(got.messages[0].content, PROMPT, 'mock-vllm received the decrypted prompt');
        assert.notDeepEqual(await stack.mock.stats(), before, 'the engine was asked');
        assert.doesNotMatch(r.stdout, /PROMPT FOUND|PLAINTEXT FOUND/);
      });
    }
  }

  // A man in the middle on /v1/aci/attestation: the keyset it serves must fail before a byte
  // of the prompt leaves.
  const sha = (s) => createHash('sha256').update(s).digest('hex');
  const jcs = (v) => (v === null || typeof v !== 'object') ? JSON.stringify(v)
    : Array.isArray(v) ? `[${v.map(jcs).join(',')}]`
      : `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(',')}}`;
  const ATTACKER_X25519 = '11'.repeat(32);
  for (const [name, tamperAci, failing] of [
    ['the served digest altered', (j) => { j.workload_keyset_digest = `sha256:${'0'.repeat(64)}`; }, ['aci.keyset_digest']],
    ['its own X25519 key put in the keyset (digest left)', (j) => {
      j.attestation.workload_keyset.e2ee_public_keys[0].public_key = ATTACKER_X25519;
    }, ['aci.keyset_digest', 'aci.report_data', 'aci.tdx.report_data']],
    ['its own X25519 key put in the keyset, digest recomputed to match', (j) => {
      j.attestation.workload_keyset.e2ee_public_keys[0].public_key = ATTACKER_X25519;
      j.workload_keyset_digest = `sha256:${sha(jcs(j.attestation.workload_keyset))}`;
    }, ['aci.report_data', 'aci.tdx.report_data']],
    ['an expired keyset (not_after in the past, digest recomputed)', (j) => {
      j.attestation.workload_keyset.not_after = 1000;
      j.workload_keyset_digest = `sha256:${sha(jcs(j.attestation.workload_keyset))}`;
    }, ['aci.keyset.not_after', 'aci.report_data', 'aci.tdx.report_data']],
  ]) {
    test(`aci-v2: a keyset with ${name} fails and nothing is sent (exit 1)`, async () => {
      const mitm = await startMitm(stack.port, {
        tamperAci: (b) => { const j = JSON.parse(b); tamperAci(j); return Buffer.from(JSON.stringify(j)); },
      });
      try {
        const before = await stack.mock.stats();
        const r = await verify(['chat', `http://127.0.0.1:${mitm.port}`, '--token', TOKEN, '--model', MODEL,
          '--allow-simulated', '--prompt', PROMPT, '--e2ee', 'aci-v2']);
        expectExit(r, 1);
        for (const id of failing) expectStatus(r, id, 'fail');
        expectStatus(r, 'aci.tdx.quote.signature', 'pass'); // the quote itself is genuine
        expectStatus(r, 'e2ee.key', 'fail');
        assert.match(r.checks.get('e2ee.key').found, /not sent/);
        assert.ok(!r.checks.has('chat.request'), 'no chat request line');
        assert.deepEqual(await stack.mock.stats(), before, 'mock-vllm got no request');
      } finally {
        await mitm.close();
      }
    });
  }

  test('aci-v2: a man in the middle flipping one hex digit of the encrypted answer fails decryption (exit 1)', async () => {
    for (const suite of ['x25519', 'secp256k1']) {
      const mitm = await startMitm(stack.port, {
        tamper: (b) => {
          const s = b.toString('latin1');
          const m = /"content":"([0-9a-f]{120})/.exec(s);
          if (!m) return b;
          const at = m.index + '"content":"'.length + 110;
          return Buffer.from(s.slice(0, at) + (s[at] === '0' ? '1' : '0') + s.slice(at + 1), 'latin1');
        },
      });
      try {
        const r = await verify(['chat', `http://127.0.0.1:${mitm.port}`, '--token', TOKEN, '--model', MODEL,
          '--allow-simulated', '--prompt', PROMPT, '--e2ee', 'aci-v2', '--e2ee-suite', suite]);
        expectExit(r, 1);
        expectStatus(r, 'e2ee.key', 'pass');
        expectStatus(r, 'e2ee.response.decrypt', 'fail');
        assert.match(r.checks.get('e2ee.response.decrypt').found, /does not decrypt/);
        expectStatus(r, 'e2ee.signature', 'fail');
      } finally {
        await mitm.close();
      }
    }
  });

  test('aci-v2: a man in the middle stripping the E2EE headers gets a plaintext answer: exit 1', async () => {
    const mitm = await startMitm(stack.port, { stripHeaders: true });
    try {
      const r = await verify(['chat', `http://127.0.0.1:${mitm.port}`, '--token', TOKEN, '--model', MODEL,
        '--allow-simulated', '--prompt', PROMPT, '--max-tokens', '8', '--e2ee', 'aci-v2']);
      expectExit(r, 1);
      expectStatus(r, 'e2ee.response.decrypt', 'fail');
      expectStatus(r, 'e2ee.response.headers', 'warn');
      assert.match(r.checks.get('e2ee.response.headers').found, /X-ACI-Version absent/);
    } finally {
      await mitm.close();
    }
  });

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

  test('usage: an unknown format or suite, --e2ee-suite without aci-v2, --signing-algo with aci-v2 and --e2ee outside chat are usage errors (exit 2)', async () => {
    for (const [args, re] of [[['--e2ee', 'bogus'], /--e2ee/], [['--e2ee', 'aci-v2', '--e2ee-suite', 'ed25519'], /--e2ee-suite: x25519 or secp256k1/],
      [['--e2ee', 'dstack-v2', '--e2ee-suite', 'x25519'], /--e2ee-suite goes with --e2ee aci-v2/],
      [['--e2ee', 'aci-v2', '--signing-algo', 'ecdsa'], /--signing-algo does not apply/]]) {
      const r = await verify(['chat', url(), '--token', TOKEN, ...args]);
      expectExit(r, 2);
      assert.match(r.stderr, re);
    }
    const r = await verify(['report', url(), '--token', TOKEN, '--e2ee', 'dstack-v2']);
    expectExit(r, 2);
    assert.match(r.stderr, /--e2ee is an option of chat/);
  });
});
