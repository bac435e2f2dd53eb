// E2EE replay protection across replicas (issue 10 item 5): two proxies with the same
// KMS-derived keys (one fake-dstack-agent seed), each in front of its own recording mock
// engine, share one redis-server. A Dstack v2 request accepted by proxy A is claimed in Redis
// (SET NX EX 600 under {MODEL_NAME}:e2ee-replay:dstack-v2:<sha256>), so the same bytes
// replayed to proxy B are refused with e2ee_replay_detected and nothing reaches B's engine;
// the same for ACI E2EE v2 (aci-v2 claims). A client that leaves while the claim is in flight
// is not forwarded, and its claim stands.
// With Redis gone, B falls back to its own memory (the outage is logged once): a fresh request
// still works, and a replay to the same replica is still refused. docs/API.md (E2EE replay).
//
// The clients are the independent ones of e2ee-dstack.test.mjs and e2ee-aci.test.mjs (@noble
// crypto, from ../shared/docs/e2ee-formats.md §5.1, §6.1, §7), reduced to what a request needs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { binary, haveBinary, startMock, startProxy, freePort, sleep, tmpDir, cleanExitProblems, MODEL } from './lib/harness.mjs';
import { getPath, postJson, jsonOf } from './lib/http.mjs';
import { assertOpenAIError } from './lib/common.mjs';

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const skip = (!(have('redis-server') && have('redis-cli')) && 'redis-server/redis-cli not installed (scripts/install-deps)')
  || (!haveBinary('fake-dstack-agent') && 'build/fake-dstack-agent missing (make all)');

const SEED = '33'.repeat(32);
const dir = tmpDir('vp-e2ee-replay-');
const sock = path.join(dir, 'dstack.sock');

let redisPort, redis = null, agent = null;
let mockA, mockB, A, B;

function cli(...args) {
  return execFileSync('redis-cli', ['-p', String(redisPort), '--raw', ...args], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\n$/, '');
}

async function waitFor(what, fn, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function startRedis() {
  const proc = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--enable-debug-command', 'yes', '--loglevel', 'warning'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  await waitFor('redis-server', () => { try { return cli('PING') === 'PONG'; } catch { return false; } }, 10000);
  redis = { proc, exited };
}

async function stopRedis() {
  if (!redis) return;
  const r = redis;
  redis = null;
  r.proc.kill('SIGKILL');
  await r.exited;
}

async function startAgent() {
  const proc = spawn(binary('fake-dstack-agent'), ['--unix', sock, '--key-seed', SEED], { stdio: ['ignore', 'ignore', 'pipe'] });
  const a = { proc, err: '', exited: null };
  proc.stderr.on('data', (d) => { a.err += d; });
  a.exitPromise = new Promise((r) => proc.on('exit', (code, signal) => { a.exited = { code, signal }; r(); }));
  await waitFor('fake-dstack-agent', () => /listening on unix:/.test(a.err) || a.exited, 10000);
  if (a.exited) throw new Error(`fake-dstack-agent did not start\n${a.err}`);
  return a;
}

const proxyEnv = {
  ATTESTATION: 'dstack',
  DSTACK_SIMULATOR_ENDPOINT: sock,
  GPU_EVIDENCE: 'simulated',
  TAPPD_SIMULATOR_ENDPOINT: undefined,
  TSM_REPORT_PATH: path.join(dir, 'no-tsm'),
  REDIS_HOST: '127.0.0.1',
  REDIS_TIMEOUT_MS: 200,
  WORKERS: 2,
};

// ---- the Dstack v2 client (ecdsa), from the document ----

async function serverKey(port) {
  const r = await getPath(port, `/v1/attestation/report?signing_algo=ecdsa&nonce=${'cd'.repeat(32)}`);
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  return jsonOf(r).signing_public_key; // 128 hex x‖y
}

function seal(serverHex, text, aad) {
  const esk = secp256k1.utils.randomSecretKey();
  const eph = secp256k1.getPublicKey(esk, false);
  const shared = secp256k1.getSharedSecret(esk, hexToBytes('04' + serverHex), true).slice(1);
  const key = hkdf(sha256, shared, undefined, utf8ToBytes('ecdsa_encryption'), 32);
  const nonce = randomBytes(12);
  return bytesToHex(concatBytes(eph, nonce, gcm(key, nonce, utf8ToBytes(aad)).encrypt(utf8ToBytes(text))));
}

let seq = 0;
/** One Dstack v2 request (body and headers), sealed to serverHex with a fresh nonce. */
function v2Request(serverHex) {
  const nonce = `replay${Date.now()}x${process.pid}x${seq++}abcdefgh`;
  const ts = Math.floor(Date.now() / 1000);
  const csk = secp256k1.utils.randomSecretKey();
  const aad = `v2|req|algo=ecdsa|model=${MODEL}|m=0|c=-|n=${nonce}|ts=${ts}`;
  const body = { model: MODEL, messages: [{ role: 'user', content: seal(serverHex, 'the replayed prompt', aad) }], max_tokens: 2 };
  const headers = {
    'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': bytesToHex(secp256k1.getPublicKey(csk, false)),
    'X-Model-Pub-Key': serverHex, 'X-E2EE-Version': '2', 'X-E2EE-Nonce': nonce, 'X-E2EE-Timestamp': String(ts),
  };
  return { body, headers };
}

// ---- the ACI E2EE v2 client (x25519 suite), from e2ee-aci.test.mjs (spec/e2ee-v2.md) ----

const ACI_X25519 = 'x25519-aes-256-gcm-hkdf-sha256';
function jcs(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(jcs).join(',')}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(',')}}`;
}

async function aciKey(port) {
  const r = await getPath(port, `/v1/aci/attestation?nonce=${bytesToHex(randomBytes(32))}`);
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  return jsonOf(r).attestation.workload_keyset.e2ee_public_keys.find((e) => e.algo === ACI_X25519).public_key;
}

function aciRequest(serviceHex) {
  const nonce = bytesToHex(randomBytes(32));
  const ts = Math.floor(Date.now() / 1000);
  const aad = utf8ToBytes(jcs({ purpose: 'aci.e2ee.request.v2', algo: ACI_X25519, model: MODEL, field: 'messages.0.content', nonce, ts }));
  const esk = x25519.utils.randomSecretKey();
  const key = hkdf(sha256, x25519.getSharedSecret(esk, hexToBytes(serviceHex)), undefined, utf8ToBytes('aci.e2ee.v2.x25519'), 32);
  const iv = randomBytes(12);
  const content = bytesToHex(concatBytes(x25519.getPublicKey(esk), iv, gcm(key, iv, aad).encrypt(utf8ToBytes('an ACI prompt'))));
  const body = { model: MODEL, messages: [{ role: 'user', content }], max_tokens: 2 };
  const headers = { 'X-E2EE-Version': '2', 'X-Client-Pub-Key': bytesToHex(x25519.getPublicKey(x25519.utils.randomSecretKey())),
    'X-Model-Pub-Key': serviceHex, 'X-E2EE-Nonce': nonce, 'X-E2EE-Timestamp': String(ts) };
  return { body, headers };
}

const engineRequests = async (m) => (await m.stats()).requests;
const replayKeys = () => cli('KEYS', `${MODEL}:e2ee-replay:*`).split('\n').filter(Boolean);

before(async () => {
  if (skip) return;
  redisPort = await freePort();
  await startRedis();
  agent = await startAgent();
  mockA = await startMock({ args: ['--record-body'] });
  mockB = await startMock({ args: ['--record-body'] });
  A = await startProxy(mockA.url, { env: { ...proxyEnv, REDIS_PORT: redisPort } });
  B = await startProxy(mockB.url, { env: { ...proxyEnv, REDIS_PORT: redisPort } });
  await waitFor('both proxies connected to Redis', () => cli('CLIENT', 'LIST').split('\n').filter(Boolean).length >= 5, 5000);
});

after(async () => {
  const problems = [];
  for (const p of [A, B]) {
    if (!p) continue;
    await p.stop();
    const pr = cleanExitProblems(p.child);
    if (pr) problems.push(pr);
  }
  await mockA?.stop();
  await mockB?.stop();
  await stopRedis();
  if (agent && !agent.exited) {
    agent.proc.kill('SIGTERM');
    await agent.exitPromise;
  }
  assert.equal(problems.length, 0, problems.join('\n'));
});

test('a Dstack v2 request accepted by proxy A and replayed to proxy B is refused, nothing reaches B\'s engine', { skip }, async () => {
  const serverHex = await serverKey(A.port);
  assert.equal(await serverKey(B.port), serverHex, 'both replicas have the KMS-derived key');
  const { body, headers } = v2Request(serverHex);
  const keysBefore = replayKeys().length;
  const ok = await postJson(A.port, '/v1/chat/completions', body, { headers });
  assert.equal(ok.status, 200, ok.body.toString().slice(0, 300));
  assert.ok(JSON.parse((await mockA.last()).body).messages[0].content === 'the replayed prompt', 'A\'s engine got the plaintext');

  const keys = replayKeys();
  assert.equal(keys.length, keysBefore + 1, 'one claim in Redis');
  const key = keys.find((k) => new RegExp(`^${MODEL}:e2ee-replay:dstack-v2:[0-9a-f]{64}$`).test(k));
  assert.ok(key, `the claim's key: ${keys.join(', ')}`);
  const ttl = Number(cli('TTL', key));
  assert.ok(ttl > 590 && ttl <= 600, `EX two windows (ttl ${ttl})`);

  const before = await engineRequests(mockB);
  for (let i = 0; i < 4; i++) {
    const r = await postJson(B.port, '/v1/chat/completions', body, { headers });
    assertOpenAIError(r, 400, { type: 'e2ee_replay_detected' });
  }
  assert.equal(await engineRequests(mockB), before, 'nothing of the replay reached B\'s engine');

  // B serves a fresh request (the refusal is the replay's, not B's), and A refuses the replay too.
  const fresh = v2Request(serverHex);
  const r = await postJson(B.port, '/v1/chat/completions', fresh.body, { headers: fresh.headers });
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  assertOpenAIError(await postJson(A.port, '/v1/chat/completions', fresh.body, { headers: fresh.headers }), 400,
    { type: 'e2ee_replay_detected' });
});

test('an ACI v2 request accepted by proxy A and replayed to proxy B is refused, nothing reaches B\'s engine', { skip }, async () => {
  const serviceHex = await aciKey(A.port);
  assert.equal(await aciKey(B.port), serviceHex, 'both replicas have the KMS-derived ACI key');
  const { body, headers } = aciRequest(serviceHex);
  const ok = await postJson(A.port, '/v1/chat/completions', body, { headers });
  assert.equal(ok.status, 200, ok.body.toString().slice(0, 300));
  assert.equal(JSON.parse((await mockA.last()).body).messages[0].content, 'an ACI prompt');
  assert.ok(replayKeys().some((k) => new RegExp(`^${MODEL}:e2ee-replay:aci-v2:[0-9a-f]{64}$`).test(k)), 'the ACI claim in Redis');
  const before = await engineRequests(mockB);
  assertOpenAIError(await postJson(B.port, '/v1/chat/completions', body, { headers }), 400, { type: 'e2ee_replay_detected' });
  assert.equal(await engineRequests(mockB), before, 'nothing of the replay reached B\'s engine');
});

test('a client that leaves while the claim is in flight: nothing is forwarded, the proxy carries on', { skip }, async () => {
  const serverHex = await serverKey(B.port);
  const { body, headers } = v2Request(serverHex);
  const before = await engineRequests(mockB);
  // Redis answers after 150 ms (under REDIS_TIMEOUT_MS): the client is gone by then.
  const sleeper = spawn('redis-cli', ['-p', String(redisPort), 'DEBUG', 'SLEEP', '0.15'], { stdio: 'ignore' });
  await sleep(20);
  const payload = JSON.stringify(body);
  await new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: B.port, method: 'POST', path: '/v1/chat/completions',
      headers: { ...headers, Authorization: 'Bearer test_token', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } });
    req.on('error', () => resolve());
    req.on('response', () => resolve());
    req.end(payload);
    setTimeout(() => { req.destroy(); resolve(); }, 50);
  });
  await new Promise((r) => sleeper.on('exit', r));
  await sleep(200);
  assert.equal(await engineRequests(mockB), before, 'the abandoned request was not forwarded');
  // The claim was made: the same request is a replay now, on either replica.
  assertOpenAIError(await postJson(A.port, '/v1/chat/completions', body, { headers }), 400, { type: 'e2ee_replay_detected' });
  const fresh = v2Request(serverHex);
  const r = await postJson(B.port, '/v1/chat/completions', fresh.body, { headers: fresh.headers });
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
});

test('Redis down: requests still served from the memory claim (replicas not protected), the outage logged once', { skip }, async () => {
  const serverHex = await serverKey(B.port);
  await stopRedis();
  const { body, headers } = v2Request(serverHex);
  const r = await postJson(B.port, '/v1/chat/completions', body, { headers });
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  const before = await engineRequests(mockB);
  assertOpenAIError(await postJson(B.port, '/v1/chat/completions', body, { headers }), 400, { type: 'e2ee_replay_detected' });
  assert.equal(await engineRequests(mockB), before);
  await waitFor('the outage line', () => /Redis \S+ unavailable.*E2EE replay claims/.test(B.stderr()), 5000);
  assert.equal((B.stderr().match(/Redis \S+ unavailable/g) ?? []).length, 1, 'said once');
});
