// ATTESTATION=dstack end to end against build/fake-dstack-agent (a SIMULATED guest agent on a
// Unix socket): the report's mode and report_data binding, Info with tcb_info as an object,
// KMS-derived keys (stable across restarts with the same agent seed, different with another,
// equal to what the agent's derivation gives), the server-nonce cache, vllm-proxy-verify on
// the result, and the failure modes: agent gone, agent slower than ATTESTATION_TIMEOUT, agent
// failing or answering garbage (503 in the OpenAI error shape, completions unaffected), then
// ATTESTATION=auto with and without an agent. docs/CONFIG.md (Attestation), docs/CONTRACTS.md.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { binary, haveBinary, startMock, startProxy, tmpDir, sleep, cleanExitProblems, MODEL, TOKEN } from './lib/harness.mjs';
import { getPath, postJson, jsonOf, sseJson } from './lib/http.mjs';
import { assertOpenAIError } from './lib/common.mjs';
import { x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { ethers, ed25519, expectedReportData, parseQuote, randomNonce, bytesToHex } from './lib/verify.mjs';

const SEED_A = '11'.repeat(32);
const SEED_B = '22'.repeat(32);
const skip = !haveBinary('fake-dstack-agent') && 'build/fake-dstack-agent missing (make all)';

const dir = tmpDir('vp-dstack-');
const sockA = path.join(dir, 'dstack.sock');
const getkeyLog = path.join(dir, 'getkey.log');
const agents = new Set();
const agentLogs = [];
let mock;
let proxy;

/** dstack's GetKey derivation (guest-agent get_key -> ra-tls kdf derive_key), which the fake agent
 * follows, computed independently with node's HKDF: salt "RATLS", the seed as the app key,
 * the path as info, 32 bytes. */
const kmsKey = (seedHex, p) => Buffer.from(crypto.hkdfSync('sha256', Buffer.from(seedHex, 'hex'), Buffer.from('RATLS'), Buffer.from(p), 32));

/** Starts fake-dstack-agent; resolves once its banner says it listens. */
async function startAgent(sock, args = []) {
  const proc = spawn(binary('fake-dstack-agent'), ['--unix', sock, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const a = { proc, err: '', exited: null };
  agents.add(a);
  agentLogs.push(a);
  proc.stderr.on('data', (d) => { a.err += d; });
  a.exitPromise = new Promise((r) => proc.on('exit', (code, signal) => { a.exited = { code, signal }; agents.delete(a); r(a.exited); }));
  a.stop = async () => { if (!a.exited) { proc.kill('SIGTERM'); await a.exitPromise; } };
  const t0 = Date.now();
  while (!/listening on unix:/.test(a.err)) {
    if (a.exited || Date.now() - t0 > 10000) throw new Error(`fake-dstack-agent did not start: ${JSON.stringify(a.exited)}\n${a.err}`);
    await sleep(20);
  }
  assert.match(a.err, /SIMULATED/, 'the agent labels itself SIMULATED');
  return a;
}

/** GET on the agent's socket (its /fake/stats counters). */
function agentStats(sock) {
  return new Promise((resolve, reject) => {
    import('node:http').then(({ default: http }) => {
      http.get({ socketPath: sock, path: '/fake/stats' }, (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve(JSON.parse(b)));
      }).on('error', reject);
    });
  });
}

const dstackEnv = (sock, extra = {}) => ({
  ATTESTATION: 'dstack',
  DSTACK_SIMULATOR_ENDPOINT: sock,
  GPU_EVIDENCE: 'simulated',
  ATTESTATION_TIMEOUT: '1',
  TAPPD_SIMULATOR_ENDPOINT: undefined,
  TSM_REPORT_PATH: path.join(dir, 'no-tsm'),
  ...extra,
});

const report = (port, q = '') => getPath(port, `/v1/attestation/report${q}`);

async function addresses(port) {
  const out = {};
  for (const algo of ['ecdsa', 'ed25519']) {
    const r = await report(port, `?signing_algo=${algo}&nonce=${randomNonce()}`);
    assert.equal(r.status, 200, `report ${algo}: ${r.status} ${r.body.toString().slice(0, 300)}`);
    out[algo] = jsonOf(r).signing_address;
  }
  return out;
}

async function chatStillWorks(port) {
  const r = await postJson(port, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
  assert.equal(r.status, 200, `chat: ${r.status} ${r.body.toString().slice(0, 200)}`);
  assert.equal(jsonOf(r).object, 'chat.completion');
  const s = await postJson(port, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, stream: true });
  assert.equal(s.status, 200);
  assert.ok(s.complete, 'stream complete');
  assert.ok(sseJson(s.body).length >= 8, 'stream has its events');
}

function runVerify(args) {
  return new Promise((resolve) => {
    execFile(binary('vllm-proxy-verify'), args, { timeout: 30000, env: { ...process.env, VLLM_PROXY_TOKEN: TOKEN } },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

before(async () => {
  if (skip) return;
  mock = await startMock();
  await startAgent(sockA, ['--key-seed', SEED_A, '--getkey-log', getkeyLog]);
  proxy = await startProxy(mock.url, { env: dstackEnv(sockA) });
});

after(async () => {
  await proxy?.stop();
  await mock?.stop();
  for (const a of [...agents]) await a.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a fresh report: attestation_mode dstack, report_data binds address and nonce, tcb_info is an object', { skip }, async () => {
  for (const algo of ['ecdsa', 'ed25519']) {
    const nonce = randomNonce();
    const r = await report(proxy.port, `?signing_algo=${algo}&nonce=${nonce}`);
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    const j = jsonOf(r);
    assert.equal(j.attestation_mode, 'dstack');
    assert.equal(j.signing_algo, algo);
    assert.equal(j.request_nonce, nonce);
    assert.equal(j.nonce_source, 'client');
    const q = parseQuote(j.intel_quote);
    assert.equal(q.version, 4);
    assert.equal(q.reportData.toString('hex'), expectedReportData(j).toString('hex'), 'REPORTDATA = pad32(address) || nonce');
    assert.equal(typeof j.info, 'object');
    assert.equal(typeof j.info.tcb_info, 'object', 'info.tcb_info is an object, not the agent\'s JSON string');
    assert.match(j.info.tcb_info.mrtd, /^[0-9a-f]{96}$/);
    assert.ok(Array.isArray(j.info.tcb_info.event_log));
    assert.ok(Array.isArray(j.event_log), 'event_log is the agent\'s event log as a JSON array (EVENT_LOG_FORMAT=array)');
    assert.equal(j.model_name, MODEL);
    assert.equal(JSON.parse(j.nvidia_payload).nonce, nonce, 'GPU payload over the same nonce');
    assert.equal(j.all_attestations.length, 1);
  }
});

test('signing keys come from GetKey: equal to HKDF(seed, "RATLS", "{MODEL_NAME}/…-signing-key")', { skip }, async () => {
  const a = await addresses(proxy.port);
  const ecdsaKey = kmsKey(SEED_A, `${MODEL}/ecdsa-signing-key`);
  assert.equal(a.ecdsa, ethers.computeAddress('0x' + ecdsaKey.toString('hex')), 'ECDSA address of the KMS key');
  const edSeed = kmsKey(SEED_A, `${MODEL}/ed25519-signing-key`);
  assert.equal(a.ed25519, bytesToHex(ed25519.getPublicKey(new Uint8Array(edSeed))), 'Ed25519 key of the KMS seed');
});

test('GetKey request bytes are pinned; the Rust proxy\'s request (path and purpose only) gets the same key bytes', { skip }, async () => {
  const lines = fs.readFileSync(getkeyLog, 'utf8').split('\n').filter(Boolean);
  // the proxy's start-up requests, byte for byte (docs/CONTRACTS.md)
  assert.deepEqual(lines.slice(0, 2), [
    `{"path":"${MODEL}/ecdsa-signing-key","purpose":"signing","algorithm":"secp256k1"}`,
    `{"path":"${MODEL}/ed25519-signing-key","purpose":"signing","algorithm":"ed25519"}`,
  ]);
  // nearai/inference-proxy's request (dstack-sdk 0.1.2: {"path","purpose"}) to the same agent
  const a = await addresses(proxy.port);
  const rust = async (p) => {
    const body = JSON.stringify({ path: p, purpose: 'signing' });
    const { default: http } = await import('node:http');
    return new Promise((resolve, reject) => {
      const rq = http.request({ socketPath: sockA, path: '/GetKey', method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve(JSON.parse(b)));
      });
      rq.on('error', reject);
      rq.end(body);
    });
  };
  const ek = Buffer.from((await rust(`${MODEL}/ecdsa-signing-key`)).key, 'hex');
  assert.equal(ethers.computeAddress('0x' + ek.toString('hex')), a.ecdsa, 'same ECDSA address');
  const dk = Buffer.from((await rust(`${MODEL}/ed25519-signing-key`)).key, 'hex');
  assert.equal(bytesToHex(ed25519.getPublicKey(new Uint8Array(dk))), a.ed25519, 'same Ed25519 key');
});

test('ACI E2EE v2 keys come from GetKey too: HKDF(seed, "RATLS", "{MODEL_NAME}/aci-e2ee-v2-…-key"), bound into the dstack quote', { skip }, async () => {
  const nonce = randomNonce();
  const r = await getPath(proxy.port, `/v1/aci/attestation?nonce=${nonce}`);
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  const j = jsonOf(r);
  const keys = j.attestation.workload_keyset.e2ee_public_keys;
  const x = kmsKey(SEED_A, `${MODEL}/aci-e2ee-v2-x25519-key`);
  const k1 = kmsKey(SEED_A, `${MODEL}/aci-e2ee-v2-secp256k1-key`);
  assert.equal(keys[0].public_key, bytesToHex(x25519.getPublicKey(new Uint8Array(x))), 'X25519 key of the KMS secret');
  assert.equal(keys[1].public_key, bytesToHex(secp256k1.getPublicKey(new Uint8Array(k1), false)), 'secp256k1 key of the KMS secret');
  assert.equal(j.attestation.evidence.attestation_mode, 'dstack');
  const st = `{"keyset_digest":"${j.workload_keyset_digest}","nonce":"${nonce}","purpose":"aci.report_data.v1"}`;
  const rd = crypto.createHash('sha256').update(st).digest('hex');
  assert.equal(parseQuote(j.attestation.evidence.quote).reportData.toString('hex'), rd + '00'.repeat(32));
});

test('a nonce-less report comes from the cache: same bytes, fast, no agent call; the verifier accepts it', { skip }, async () => {
  const r1 = await report(proxy.port);
  assert.equal(r1.status, 200, r1.body.toString().slice(0, 300));
  const before = await agentStats(sockA);
  const t0 = process.hrtime.bigint();
  const r2 = await report(proxy.port);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(r2.status, 200);
  assert.ok(r2.body.equals(r1.body), 'the second report is byte-identical');
  assert.ok(ms < 100, `cached report took ${ms.toFixed(1)} ms`);
  assert.deepEqual(await agentStats(sockA), before, 'no agent call for a cached report');
  const j = jsonOf(r2);
  assert.equal(j.nonce_source, 'server');
  assert.equal(j.attestation_mode, 'dstack');
  assert.equal(parseQuote(j.intel_quote).reportData.toString('hex'), expectedReportData(j).toString('hex'));

  const file = path.join(dir, 'cached-report.json');
  fs.writeFileSync(file, r2.body);
  // The TDX side (simulated quote chain, report_data, event log replay, compose hash) must pass;
  // the GPU side is the next test.
  const vf = await runVerify(['report', file, '--allow-simulated', '--no-collateral', '--no-gpu']);
  assert.equal(vf.code, 0, `verify the cached report: exit ${vf.code}\n${vf.stdout}\n${vf.stderr}`);
  const vu = await runVerify(['report', `http://127.0.0.1:${proxy.port}`, '--allow-simulated', '--no-collateral', '--no-gpu']);
  assert.equal(vu.code, 0, `verify against the URL: exit ${vu.code}\n${vu.stdout}\n${vu.stderr}`);
  assert.match(vu.stdout + vu.stderr, /SIMULATED/, 'the verifier says the quote is simulated');
});

// GPU_EVIDENCE=simulated in dstack mode labels the payload "gpu_evidence":"simulated"; under
// --allow-simulated the verifier must say so (SKIP, never PASS) instead of failing it against NVIDIA's root.
test('vllm-proxy-verify report URL --allow-simulated --no-collateral exits 0 (simulated GPU payload)', {
  skip,
}, async () => {
  const vu = await runVerify(['report', `http://127.0.0.1:${proxy.port}`, '--allow-simulated', '--no-collateral', '--json']);
  const checks = JSON.parse(vu.stdout).checks;
  assert.equal(vu.code, 0, `exit ${vu.code}\n${checks.filter((c) => c.status !== 'pass').map((c) => `${c.id}: ${c.found}`).join('\n')}`);
  const ev = checks.find((c) => c.id === 'gpu.evidence');
  assert.ok(ev && ev.status === 'skip' && /simulated/.test(ev.found), 'simulated GPU evidence is a SKIP line, never PASS');
  const strict = await runVerify(['report', `http://127.0.0.1:${proxy.port}`, '--no-collateral']);
  assert.equal(strict.code, 1, 'without --allow-simulated the same report fails');
});

test('KMS addresses survive a proxy restart with the same agent seed and differ with another seed', { skip }, async () => {
  const first = await addresses(proxy.port);
  await proxy.stop();
  const problems = cleanExitProblems(proxy.child);
  assert.equal(problems, null, problems);
  proxy = await startProxy(mock.url, { env: dstackEnv(sockA) });
  assert.deepEqual(await addresses(proxy.port), first, 'same seed, same app + model: same addresses');

  const sockB = path.join(dir, 'dstack-b.sock');
  const agentB = await startAgent(sockB, ['--key-seed', SEED_B]);
  const other = await startProxy(mock.url, { env: dstackEnv(sockB) });
  try {
    const b = await addresses(other.port);
    assert.notEqual(b.ecdsa, first.ecdsa);
    assert.notEqual(b.ed25519, first.ed25519);
    assert.equal(b.ecdsa, ethers.computeAddress('0x' + kmsKey(SEED_B, `${MODEL}/ecdsa-signing-key`).toString('hex')));
  } finally {
    await other.stop();
    await agentB.stop();
  }
});

test('agent gone: a fresh report is 503 naming the cause; cached reports and completions keep working', { skip }, async () => {
  const cached = await report(proxy.port);
  assert.equal(cached.status, 200);
  for (const a of [...agents]) await a.stop();
  assert.ok(!fs.existsSync(sockA), 'the agent removed its socket');
  const r = await report(proxy.port, `?nonce=${randomNonce()}`);
  const e = assertOpenAIError(r, 503, { type: 'attestation_unavailable' });
  assert.match(e.message, /dstack guest agent/);
  assert.match(e.message, /GetQuote/);
  assert.match(e.message, /cannot connect|No such file/);
  const again = await report(proxy.port);
  assert.equal(again.status, 200, 'the cached report is still served');
  assert.ok(again.body.equals(cached.body));
  await chatStillWorks(proxy.port);
});

test('agent slower than ATTESTATION_TIMEOUT: 503 within the bound (timeout, one retry)', { skip }, async () => {
  const slow = await startAgent(sockA, ['--key-seed', SEED_A, '--delay-ms', '4000', '--delay-on', 'getquote']);
  try {
    const t0 = Date.now();
    const r = await report(proxy.port, `?nonce=${randomNonce()}`);
    const ms = Date.now() - t0;
    const e = assertOpenAIError(r, 503);
    assert.match(e.message, /timed out/);
    assert.ok(ms >= 1500 && ms < 3500, `503 after ${ms} ms (ATTESTATION_TIMEOUT=1 s, one retry: about 2 s)`);
    await chatStillWorks(proxy.port);
  } finally {
    await slow.stop();
  }
});

test('agent failing or answering garbage: 503 naming the cause', { skip }, async () => {
  let a = await startAgent(sockA, ['--key-seed', SEED_A, '--fail', 'getquote']);
  let e = assertOpenAIError(await report(proxy.port, `?nonce=${randomNonce()}`), 503);
  assert.match(e.message, /HTTP 500/);
  await a.stop();
  a = await startAgent(sockA, ['--key-seed', SEED_A, '--garbage', '--delay-on', 'getquote']);
  e = assertOpenAIError(await report(proxy.port, `?nonce=${randomNonce()}`), 503);
  assert.match(e.message, /not a JSON object/);
  await a.stop();
  a = await startAgent(sockA, ['--key-seed', SEED_A]);
  const r = await report(proxy.port, `?nonce=${randomNonce()}`);
  assert.equal(r.status, 200, 'recovers as soon as the agent answers again');
  await chatStillWorks(proxy.port);
});

test('ATTESTATION=auto with DSTACK_SIMULATOR_ENDPOINT set picks dstack', { skip }, async () => {
  const p = await startProxy(mock.url, { env: dstackEnv(sockA, { ATTESTATION: 'auto' }) });
  try {
    const r = await report(p.port, `?nonce=${randomNonce()}`);
    assert.equal(r.status, 200, r.body.toString().slice(0, 300));
    assert.equal(jsonOf(r).attestation_mode, 'dstack');
    assert.deepEqual(await addresses(p.port), await addresses(proxy.port), 'same KMS keys as ATTESTATION=dstack');
  } finally {
    await p.stop();
  }
});

test('ATTESTATION=auto with no TEE found refuses to start', { skip }, async (t) => {
  if (['/var/run/dstack.sock', '/run/dstack.sock', '/var/run/tappd.sock', '/run/tappd.sock',
    '/var/run/dstack/dstack.sock', '/run/dstack/dstack.sock', '/var/run/dstack/tappd.sock',
    '/run/dstack/tappd.sock'].some((s) => fs.existsSync(s))) {
    t.skip('this machine has a dstack/tappd socket');
    return;
  }
  const env = { ...proxy.env, ATTESTATION: 'auto', LISTEN_PORT: '0', TSM_REPORT_PATH: path.join(dir, 'no-tsm') };
  delete env.DSTACK_SIMULATOR_ENDPOINT;
  delete env.TAPPD_SIMULATOR_ENDPOINT;
  delete env.DEV;
  const proc = spawn(binary('vllm-proxy'), [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
  const [code, signal] = await new Promise((r) => proc.on('exit', (c, s) => r([c, s])));
  clearTimeout(timer);
  assert.equal(signal, null, `exited by itself (stderr: ${err})`);
  assert.notEqual(code, 0, 'non-zero exit status');
  assert.match(err, /ATTESTATION=auto found no TEE/);
  assert.match(err, /DSTACK_SIMULATOR_ENDPOINT/);
});

/** A report request on its own connection that the client abandons after `ms`. */
function abandonedReport(port, q, ms) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' }, () => {
      sock.write(`GET /v1/attestation/report${q} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
      setTimeout(() => { sock.destroy(); resolve(); }, ms);
    });
    sock.on('error', () => resolve());
  });
}

test('abandoned reports are not collected, and a cached report never waits behind collections', { skip }, async () => {
  const sockC = path.join(dir, 'slow-c.sock');
  const agent = await startAgent(sockC, ['--key-seed', SEED_A, '--delay-ms', '500', '--delay-on', 'getquote']);
  const p = await startProxy(mock.url, { env: dstackEnv(sockC, { REPORT_MAX_PENDING: 0, REPORT_MAX_PENDING_PER_TOKEN: 0 }) });
  try {
    assert.equal((await report(p.port)).status, 200, 'the cache is primed');
    const before = (await agentStats(sockC)).getquote;
    // 40 fresh reports whose clients leave after 100 ms (the libuv pool has 4 threads).
    await Promise.all(Array.from({ length: 40 }, () => abandonedReport(p.port, `?nonce=${randomNonce()}`, 100)));
    const t0 = Date.now();
    const cached = await report(p.port);
    const ms = Date.now() - t0;
    assert.equal(cached.status, 200);
    assert.equal(jsonOf(cached).nonce_source, 'server');
    assert.ok(ms < 300, `the cached report took ${ms} ms behind abandoned collections`);
    await sleep(2500);
    const quotes = (await agentStats(sockC)).getquote - before;
    assert.ok(quotes <= 8, `${quotes} quotes collected for 40 abandoned requests (only those already running may finish)`);
    assert.equal((await report(p.port, `?nonce=${randomNonce()}`)).status, 200, 'fresh reports still work');
  } finally {
    await p.stop();
    await agent.stop();
  }
});

test('fresh collections are bounded: REPORT_MAX_PENDING_PER_TOKEN (429), REPORT_MAX_PENDING (503)', { skip }, async () => {
  const sockD = path.join(dir, 'slow-d.sock');
  const agent = await startAgent(sockD, ['--key-seed', SEED_A, '--delay-ms', '600', '--delay-on', 'getquote']);
  const p = await startProxy(mock.url, { env: dstackEnv(sockD, { REPORT_MAX_PENDING: 5, REPORT_MAX_PENDING_PER_TOKEN: 3 }) });
  try {
    const fresh = (token) => getPath(p.port, `/v1/attestation/report?nonce=${randomNonce()}`, { token });
    const a = Array.from({ length: 4 }, () => fresh(TOKEN));
    await sleep(150);
    const b = Array.from({ length: 4 }, () => fresh('other_token'));
    await sleep(150);
    const c = [fresh('trusted_token')];
    const status = async (list) => (await Promise.all(list)).map((r) => r.status).sort();
    const [ra, rb, rc] = [await Promise.all(a), await Promise.all(b), await Promise.all(c)];
    assert.deepEqual(ra.map((r) => r.status).sort(), [200, 200, 200, 429], 'first token: 3 admitted, then 429');
    assert.deepEqual(rb.map((r) => r.status).sort(), [200, 200, 503, 503], 'second token: 2 more fill the process bound');
    assert.deepEqual(rc.map((r) => r.status), [503]);
    assertOpenAIError(ra.find((r) => r.status === 429), 429, { type: 'rate_limit_exceeded' });
    assertOpenAIError(rc[0], 503, { type: 'server_overloaded' });
    // Done (or refused) work is released: the same token is admitted again.
    assert.deepEqual(await status([fresh(TOKEN), fresh(TOKEN), fresh(TOKEN)]), [200, 200, 200]);
    // A cached report is never refused by the bounds.
    assert.equal((await report(p.port)).status, 200);
  } finally {
    await p.stop();
    await agent.stop();
  }
});

test('the proxy exits cleanly', { skip }, async () => {
  await proxy.stop();
  const problems = cleanExitProblems(proxy.child);
  proxy = null;
  assert.equal(problems, null, problems);
  for (const a of agentLogs) {
    assert.doesNotMatch(a.err, /ERROR: AddressSanitizer|runtime error:/, `fake-dstack-agent sanitizer report:\n${a.err}`);
  }
});
