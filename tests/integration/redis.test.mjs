// The Redis layer of the signature store (REDIS_HOST): two proxies share one redis-server, so
// a record signed by proxy A is served by proxy B; Redis going away, coming back and stalling
// never stops the proxy (memory fallback, 10 s circuit breaker, timeouts of REDIS_TIMEOUT_MS);
// and a record already in Redis is never overwritten (SET NX: first writer wins).
//
// The suite starts its own redis-server on a free loopback port with persistence off; it is
// skipped where redis-server is not installed (scripts/install-deps installs it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { startMock, startProxy, freePort, sleep, binary, MODEL } from './lib/harness.mjs';
import { postJson, jsonOf } from './lib/http.mjs';
import { checkSigned, signedText, attestedAddresses, fetchSignature } from './lib/common.mjs';
import { cleanExitProblems } from './lib/harness.mjs';

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const skip = !(have('redis-server') && have('redis-cli')) && 'redis-server/redis-cli not installed (scripts/install-deps)';

let redisPort;
let redis = null;
let mock, A, B;

function cli(...args) {
  return execFileSync('redis-cli', ['-p', String(redisPort), '--raw', ...args], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\n$/, '');
}

async function startRedis() {
  const proc = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--enable-debug-command', 'yes', '--loglevel', 'warning'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const t0 = Date.now();
  for (;;) {
    try {
      if (cli('PING') === 'PONG') break;
    } catch { /* not yet */ }
    if (Date.now() - t0 > 10000) throw new Error('redis-server did not start');
    await sleep(50);
  }
  redis = { proc, exited };
}

async function stopRedis() {
  if (!redis) return;
  const r = redis;
  redis = null;
  r.proc.kill('SIGKILL');
  await r.exited;
}

const chatBody = { model: MODEL, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 };
const keyOf = (id) => `${MODEL}:chat:${id}`;
let seq = 0;

/** A non-streamed completion through `proxy`, traced with X-Request-Id; returns {id, text}. */
async function complete(proxy, tag) {
  const rid = `redis-${tag}-${process.pid}-${++seq}`;
  const r = await postJson(proxy.port, '/v1/chat/completions', chatBody, { headers: { 'X-Request-Id': rid } });
  assert.equal(r.status, 200, r.body.toString().slice(0, 200));
  const id = jsonOf(r).id;
  assert.match(id, new RegExp(`^chatcmpl-${rid}-[0-9a-f]{32}$`));
  return { id, text: signedText(r.requestBody, r.body) };
}

async function waitFor(what, fn, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(250);
  }
}

const outageLines = (p) => (p.stderr().match(/Redis \S+ unavailable/g) ?? []).length;

before(async () => {
  if (skip) return;
  redisPort = await freePort();
  await startRedis();
  mock = await startMock();
  const env = { REDIS_HOST: '127.0.0.1', REDIS_PORT: redisPort, REDIS_TIMEOUT_MS: 100 };
  A = await startProxy(mock.url, { env: { ...env, WORKERS: 2 } });
  // B has one worker: one connection, one breaker, so the timeout test below is deterministic.
  B = await startProxy(mock.url, { env: { ...env, REDIS_HOST: 'localhost', WORKERS: 1 } });
  await waitFor('both proxies connected to Redis', () => cli('CLIENT', 'LIST').split('\n').filter(Boolean).length >= 4, 5000);
});

after(async () => {
  const problems = [];
  for (const p of [A, B]) {
    if (!p) continue;
    await p.stop();
    const pr = cleanExitProblems(p.child);
    if (pr) problems.push(pr);
  }
  await mock?.stop();
  await stopRedis();
  assert.equal(problems.length, 0, problems.join('\n'));
});

test('a completion through proxy A is signed by A and its signature is served by proxy B', { skip }, async () => {
  const { id, text } = await complete(A, 'share');
  const stored = cli('GET', keyOf(id));
  assert.match(stored, /^\{"text": "[0-9a-f]{64}:[0-9a-f]{64}", "signature_ecdsa": "0x[0-9a-f]{130}", "signing_address_ecdsa": "0x[0-9a-fA-F]{40}", "signature_ed25519": "[0-9a-f]{128}", "signing_address_ed25519": "[0-9a-f]{64}"\}$/,
    'the reference record format (§7.3)');
  const ttl = Number(cli('TTL', keyOf(id)));
  assert.ok(ttl > 1100 && ttl <= 1200, `EX CHAT_CACHE_EXPIRATION (ttl ${ttl})`);
  const a = await attestedAddresses(A.port);
  const b = await attestedAddresses(B.port);
  assert.notEqual(a.ecdsa, b.ecdsa, 'simulated proxies have their own keys');
  await checkSigned(B.port, id, text, { attested: a }); // B never saw it: read from Redis
  await checkSigned(A.port, id, text, { attested: a });
});

test('a record already in Redis is not overwritten: first writer wins', { skip }, async () => {
  const id = `chatcmpl-redis-first-${process.pid}`;
  const first = JSON.stringify({
    text: `${'1'.repeat(64)}:${'2'.repeat(64)}`, signature_ecdsa: '0xfirst', signing_address_ecdsa: '0x0000000000000000000000000000000000000001',
    signature_ed25519: 'first', signing_address_ed25519: '11'.repeat(32),
  });
  assert.equal(cli('SET', keyOf(id), first, 'EX', '600'), 'OK');
  const r = await postJson(A.port, '/v1/chat/completions', { ...chatBody, mock_id: id }); // the engine names it so
  assert.equal(r.status, 200);
  assert.equal(jsonOf(r).id, id);
  await waitFor('the collision warning', () => /already in Redis/.test(A.stderr()), 3000);
  assert.equal(cli('GET', keyOf(id)), first, 'the first record is unchanged');
  const s = await fetchSignature(B.port, id);
  assert.equal(s.status, 200);
  assert.equal(jsonOf(s).signing_address, '0x0000000000000000000000000000000000000001', 'served: the first writer\'s record');
});

test('Redis down: the proxy keeps signing and serving from memory, and says so once', { skip }, async () => {
  await stopRedis();
  const ids = [];
  for (let i = 0; i < 4; i++) {
    const c = await complete(A, 'down');
    ids.push(c.id);
    await checkSigned(A.port, c.id, c.text);
  }
  const n = await fetchSignature(B.port, ids[0]);
  assert.equal(n.status, 404, 'B never saw it: memory only while Redis is down');
  await sleep(600); // reconnection attempts fail meanwhile
  assert.equal(outageLines(A), 1, `one outage line in A's log:\n${A.stderr().slice(-2000)}`);
  assert.equal(outageLines(B), 1, 'one outage line in B\'s log');
});

test('Redis back: writes and shared reads resume after the breaker period', { skip, timeout: 60000 }, async () => {
  await startRedis();
  const { id, text } = await waitFor('a write to reach Redis', async () => {
    const c = await complete(A, 'back');
    return cli('EXISTS', keyOf(c.id)) === '1' ? c : null;
  }, 30000);
  await waitFor('A to log the recovery', () => /reachable again/.test(A.stderr()), 2000);
  // B's own breaker opened with the outage too; its first read after it is the probe.
  await waitFor('B to serve A\'s record', async () => (await fetchSignature(B.port, id)).status === 200, 15000);
  await checkSigned(B.port, id, text, { attested: await attestedAddresses(A.port) });
});

test('Redis slow (DEBUG SLEEP): a signature fetch falls back to memory within the timeout', { skip, timeout: 30000 }, async () => {
  const { id, text } = await complete(B, 'slow');
  assert.equal(cli('EXISTS', keyOf(id)), '1', 'written through before the stall');
  const sleeper = spawn('redis-cli', ['-p', String(redisPort), 'DEBUG', 'SLEEP', '1.5'], { stdio: 'ignore' });
  const slept = new Promise((resolve) => sleeper.on('exit', resolve));
  await sleep(150);
  const t0 = Date.now();
  const r = await fetchSignature(B.port, id);
  const ms = Date.now() - t0;
  assert.equal(r.status, 200, 'served from B\'s memory');
  assert.ok(ms < 700, `answered in ${ms} ms (REDIS_TIMEOUT_MS=100), not after the 1.5 s stall`);
  await waitFor('the timeout in B\'s log', () => /no answer within 100 ms/.test(B.stderr()), 2000);
  await checkSigned(B.port, id, text);
  // While the breaker is open, reads go straight to memory.
  const t1 = Date.now();
  assert.equal((await fetchSignature(B.port, id)).status, 200);
  assert.ok(Date.now() - t1 < 100, 'no wait while the breaker is open');
  await slept;
});

test('REDIS_* settings are validated', () => {
  for (const [k, v] of [['REDIS_PORT', '0'], ['REDIS_PORT', 'x'], ['REDIS_DB', '-1'], ['REDIS_TIMEOUT_MS', '0']]) {
    const r = spawnSync(binary('vllm-proxy'), [], { env: { MODEL_NAME: 'm', [k]: v }, encoding: 'utf8', timeout: 5000 });
    assert.equal(r.status, 2, `${k}=${v}: exit 2 (${r.stderr})`);
    assert.match(r.stderr, new RegExp(k));
  }
  const h = spawnSync(binary('vllm-proxy'), ['--help'], { encoding: 'utf8' });
  for (const f of ['--redis-host', '--redis-port', '--redis-password', '--redis-db', '--redis-timeout-ms']) assert.ok(h.stdout.includes(f), f);
});
