// TLS binding (docs/CONFIG.md, "TLS binding"): ?version=2 (what Phala's gateway sends) is
// include_tls_fingerprint=true; a binding asked for without TLS_CERT_PATH is a 400; the
// certificate is re-read when the file is replaced (by rename, as certbot and dstack-ingress
// do), under concurrent report requests, and no report ever binds a key outside the window
// the docs promise; a file that does not parse keeps the last good key. Expected values are
// computed here from the certificates (node's X509Certificate) and the quote bytes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import { execFileSync, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startStack, tmpDir, sleep, binary, haveBinary, TOKEN } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';
import { assertOpenAIError, stopAndCheck } from './lib/common.mjs';
import { parseQuote, randomNonce } from './lib/verify.mjs';

const INTERVAL_S = 1; // TLS_CERT_CHECK_INTERVAL of the stack under test
const dir = tmpDir('vp-tls-');
const certPath = path.join(dir, 'cert.pem');
let stack, plain;
const certs = []; // {pem, spki: hex sha256 of the SubjectPublicKeyInfo DER}

function makeCert(i) {
  const key = path.join(dir, `k${i}.pem`), crt = path.join(dir, `c${i}.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', crt, '-days', '2', '-subj', `/CN=tls-rotation-${i}`], { stdio: 'ignore' });
  const pem = fs.readFileSync(crt, 'utf8');
  const der = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return { pem, spki: crypto.createHash('sha256').update(der).digest('hex') };
}

/** Replaces the certificate the way certbot does: a new file renamed over the old one. */
function install(content) {
  const tmp = `${certPath}.new`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, certPath);
}

before(async () => {
  for (let i = 0; i < 7; i++) certs.push(makeCert(i));
  assert.equal(new Set(certs.map((c) => c.spki)).size, certs.length, 'distinct keys');
  install(certs[0].pem);
  stack = await startStack({ proxy: { env: { TLS_CERT_PATH: certPath, TLS_CERT_CHECK_INTERVAL: INTERVAL_S } } });
  plain = await startStack();
});
after(async () => {
  await stopAndCheck(stack);
  await stopAndCheck(plain);
  fs.rmSync(dir, { recursive: true, force: true });
});

const report = (s, q) => getPath(s.port, `/v1/attestation/report${q}`);

/** The identity bytes report_data binds: the 20-byte address or the 32-byte Ed25519 key. */
function idBytes(r) {
  return Buffer.from(r.signing_algo === 'ecdsa' ? r.signing_address.slice(2) : r.signing_address, 'hex');
}

/** Checks the binding of r (report_data = sha256(id || spki) || nonce) and returns its SPKI. */
function boundSpki(r) {
  assert.match(r.tls_cert_fingerprint ?? '', /^[0-9a-f]{64}$/, 'tls_cert_fingerprint present');
  const rd = parseQuote(r.intel_quote).reportData;
  const want = crypto.createHash('sha256').update(Buffer.concat([idBytes(r), Buffer.from(r.tls_cert_fingerprint, 'hex')])).digest();
  assert.equal(rd.subarray(0, 32).toString('hex'), want.toString('hex'), 'report_data[0:32] = sha256(id || spki)');
  assert.equal(rd.subarray(32).toString('hex'), r.request_nonce, 'report_data[32:64] = nonce');
  return r.tls_cert_fingerprint;
}

test('version=2 binds the TLS key like include_tls_fingerprint=true; version=1 does not', async () => {
  for (const algo of ['ecdsa', 'ed25519']) {
    for (const q of ['version=2', 'include_tls_fingerprint=true', 'version=2&include_tls_fingerprint=true']) {
      for (const nonce of [randomNonce(), null]) {
        const res = await report(stack, `?${q}&signing_algo=${algo}${nonce ? `&nonce=${nonce}` : ''}`);
        assert.equal(res.status, 200, res.body.toString());
        const r = jsonOf(res);
        assert.equal(boundSpki(r), certs[0].spki, `${q} ${algo}`);
        if (nonce) assert.equal(r.request_nonce, nonce);
        assert.equal(r.all_attestations[0].tls_cert_fingerprint, certs[0].spki);
      }
    }
    for (const q of ['version=1', 'include_tls_fingerprint=false', '']) {
      const r = jsonOf(await report(stack, `?${q}&signing_algo=${algo}`));
      assert.ok(!('tls_cert_fingerprint' in r), `${q}: unbound`);
      const rd = parseQuote(r.intel_quote).reportData;
      const pad = Buffer.alloc(32);
      idBytes(r).copy(pad);
      assert.equal(rd.subarray(0, 32).toString('hex'), pad.toString('hex'));
    }
  }
});

test('a binding asked for without a certificate, or a bad version, is a 400', async () => {
  for (const q of ['version=2', 'include_tls_fingerprint=true', 'version=2&nonce=' + 'ab'.repeat(32)]) {
    const res = await report(plain, `?${q}`);
    assertOpenAIError(res, 400, { type: 'invalid_request_error' });
    assert.equal(jsonOf(res).error.code, 'tls_fingerprint_unavailable', q);
  }
  for (const [q, code] of [['version=4', 'invalid_version'], ['version=0', 'invalid_version'], ['version=', 'invalid_version'], ['version=22', 'invalid_version'],
    ['version=v2', 'invalid_version'], ['version=2&include_tls_fingerprint=false', 'invalid_include_tls_fingerprint'],
    ['include_tls_fingerprint=yes', 'invalid_include_tls_fingerprint']]) {
    for (const s of [stack, plain]) {
      const res = await report(s, `?${q}`);
      assertOpenAIError(res, 400, { type: 'invalid_request_error' });
      assert.equal(jsonOf(res).error.code, code, q);
    }
  }
  // version=1 without a certificate is today's report
  assert.equal((await report(plain, '?version=1')).status, 200);
  // version=3 (the GPU binding) binds the TLS key when there is one, and only then
  const v3plain = jsonOf(await report(plain, '?version=3'));
  assert.equal(v3plain.report_version, 3);
  assert.equal(v3plain.tls_cert_fingerprint, undefined);
  const v3tls = jsonOf(await report(stack, '?version=3'));
  assert.equal(v3tls.report_version, 3);
  assert.match(v3tls.tls_cert_fingerprint, /^[0-9a-f]{64}$/);
  assert.equal(jsonOf(await report(stack, '?version=3&include_tls_fingerprint=false')).tls_cert_fingerprint, undefined);
  assertOpenAIError(await report(plain, '?version=3&include_tls_fingerprint=true'), 400, { type: 'invalid_request_error' });
});

async function metric(name) {
  const m = (await getPath(stack.port, '/v1/metrics')).body.toString();
  const line = m.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} exported`);
  return Number(line.split(' ')[1]);
}

test('certificate replaced under load: every report binds a key the file held in its window', async () => {
  const reloads0 = await metric('vllm_proxy_tls_cert_reloads_total');
  // timeline[i]: certificate i was renamed into place between pre and post (ms, performance.now)
  const timeline = [{ spki: certs[0].spki, pre: -Infinity, post: -Infinity }];
  const seen = [];
  let stop = false;
  const worker = async (k) => {
    while (!stop) {
      const client = k % 2 === 0;
      const q = `?${k % 3 === 0 ? 'include_tls_fingerprint=true' : 'version=2'}&signing_algo=${k % 4 < 2 ? 'ecdsa' : 'ed25519'}`
        + (client ? `&nonce=${randomNonce()}` : '');
      const sent = performance.now();
      const res = await report(stack, q);
      const recv = performance.now();
      assert.equal(res.status, 200, res.body.toString());
      seen.push({ client, sent, recv, spki: boundSpki(jsonOf(res)) });
    }
  };
  const workers = [0, 1, 2, 3, 4, 5].map(worker);
  for (let i = 1; i < certs.length; i++) {
    await sleep(INTERVAL_S * 1000 + 400);
    const pre = performance.now();
    install(certs[i].pem);
    timeline.push({ spki: certs[i].spki, pre, post: performance.now() });
  }
  await sleep(INTERVAL_S * 1000 + 400);
  stop = true;
  await Promise.all(workers);

  // The promise (docs/CONFIG.md): a client-nonce report binds the certificate that was in the
  // file at some moment between its request and its answer; a cached (server-nonce) report one
  // that was there at most TLS_CERT_CHECK_INTERVAL before its request (0.5 s of slack for the
  // timer and this loaded machine) and no later than its answer.
  const inFile = (i, from, to) => timeline[i].pre <= to && (i + 1 === timeline.length || timeline[i + 1].post >= from);
  let clients = 0, cached = 0;
  const byKey = new Map(timeline.map((t, i) => [t.spki, i]));
  for (const s of seen) {
    const i = byKey.get(s.spki);
    assert.ok(i !== undefined, `report binds an unknown key ${s.spki}`);
    const from = s.client ? s.sent : s.sent - INTERVAL_S * 1000 - 500;
    assert.ok(inFile(i, from, s.recv),
      `${s.client ? 'client' : 'server'}-nonce report sent at ${s.sent.toFixed(0)} answered at ${s.recv.toFixed(0)} `
      + `binds certificate ${i}, in the file ${timeline[i].pre.toFixed(0)}..${timeline[i + 1]?.post.toFixed(0) ?? 'end'}`);
    if (s.client) clients++; else cached++;
  }
  assert.ok(clients > 20 && cached > 20, `load: ${clients} client-nonce and ${cached} cached reports`);
  // every certificate was served; the last one by cached reports too (ATTESTATION_CACHE_TTL is
  // 300 s: only the drop on change explains it)
  for (let i = 0; i < certs.length; i++) assert.ok(seen.some((s) => s.spki === certs[i].spki), `certificate ${i} served`);
  assert.ok(seen.some((s) => !s.client && s.spki === certs.at(-1).spki), 'cached reports moved to the last key');
  assert.equal(await metric('vllm_proxy_tls_cert_reloads_total') - reloads0, certs.length - 1, 'one reload per new key');
});

test('a file that does not parse keeps the last good key and logs one error', async () => {
  const last = certs.at(-1).spki;
  const errors0 = await metric('vllm_proxy_tls_cert_errors_total');
  const logged = () => (stack.proxy.stderr().match(/keeping the last good certificate's key/g) ?? []).length;
  const log0 = logged();
  for (const bad of ['not a certificate\n', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n']) {
    install(bad);
    await sleep(INTERVAL_S * 1000 + 500);
    for (const q of ['?version=2', `?version=2&nonce=${randomNonce()}`]) {
      const res = await report(stack, q);
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(boundSpki(jsonOf(res)), last, 'still the last good key');
    }
  }
  await sleep(INTERVAL_S * 1000 + 200); // more timer ticks over the same bad file
  assert.equal(await metric('vllm_proxy_tls_cert_errors_total') - errors0, 2, 'one failure per bad version');
  assert.equal(logged() - log0, 1, 'one error line while the file stays bad');
  // a good certificate again: bound at once by the next client-nonce collection
  install(certs[2].pem);
  assert.equal(boundSpki(jsonOf(await report(stack, `?version=2&nonce=${randomNonce()}`))), certs[2].spki);
  await sleep(INTERVAL_S * 1000 + 500);
  assert.equal(boundSpki(jsonOf(await report(stack, '?version=2'))), certs[2].spki);
});

test('vllm-proxy-verify accepts a version=2 report and checks the key it binds', async (t) => {
  if (!haveBinary('vllm-proxy-verify')) return t.skip('not built');
  const run = (args) => new Promise((resolve) => execFile(binary('vllm-proxy-verify'), [...args, '--json'],
    { env: { ...process.env, VLLM_PROXY_TOKEN: TOKEN }, timeout: 60000 }, (err, stdout) => {
      const json = JSON.parse(stdout);
      resolve({ code: err ? err.code : 0, checks: new Map(json.checks.map((c) => [c.id, c])) });
    }));
  const url = `http://127.0.0.1:${stack.port}/v1/attestation/report?version=2`;
  const cur = certs[2].spki;
  for (const algo of ['ecdsa', 'ed25519']) {
    const ok = await run(['report', url, '--signing-algo', algo, '--allow-simulated', '--tls-spki', cur]);
    assert.equal(ok.code, 0, JSON.stringify([...ok.checks.values()].filter((c) => c.status === 'fail')));
    assert.equal(ok.checks.get('tdx.report_data').status, 'pass');
    assert.equal(ok.checks.get('report.tls').status, 'pass');
  }
  const wrong = await run(['report', url, '--allow-simulated', '--tls-spki', certs[0].spki]);
  assert.equal(wrong.code, 1);
  assert.equal(wrong.checks.get('report.tls').status, 'fail');
});
