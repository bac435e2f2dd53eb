// The descriptor limit (issue #15, item 1). The proxy runs under a low RLIMIT_NOFILE
// (prlimit --nofile=N:N) with two workers, and more idle TCP connections than the limit
// allows are opened at it (no bytes, no token). It must shed what it cannot hold, keep
// serving the connections it has, not burn CPU, accept again once descriptors are free, and
// stop on SIGTERM. Before the fix both workers could spin in libuv's accept loop (their
// shared reserve descriptor raced away) and only SIGKILL ended the process.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { startMock, startProxy, sleep } from './lib/harness.mjs';
import { RawConn, rawRequest } from './lib/http.mjs';

const havePrlimit = spawnSync('sh', ['-c', 'command -v prlimit'], { stdio: 'ignore' }).status === 0;
const LIMIT = 256;
const FLOOD = 700;         // idle connections per round, well over LIMIT
const ROUNDS = 3;
const CLK_TCK = 100;       // Linux USER_HZ

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock?.stop(); });

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Opens n idle connections (no bytes); resolves once each connected or failed. */
async function flood(port, n) {
  const socks = [];
  await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => resolve());
    s.on('connect', () => resolve());
    s.on('close', () => resolve());
    socks.push(s);
  })));
  return socks;
}

async function closeAll(socks) {
  for (const s of socks) s.destroy();
  await sleep(200);
}

/** GET / on a fresh connection, retried until it answers 200 or timeoutMs pass. */
async function servedAgain(port, timeoutMs) {
  const t0 = Date.now();
  let last = '';
  while (Date.now() - t0 < timeoutMs) {
    try {
      const r = await rawRequest(port, { method: 'GET', path: '/', timeoutMs: 1000 });
      if (r.status === 200) return true;
      last = `status ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(100);
  }
  throw new Error(`no 200 on a new connection within ${timeoutMs} ms (${last})`);
}

/** SIGTERM; SIGKILL after ms. Returns how the process ended and whether SIGKILL was needed. */
async function termWithin(child, ms) {
  if (child.exited) return { ...child.exited, killed: false };
  child.stoppedByUs = true;
  child.proc.kill('SIGTERM');
  let killed = false;
  const t = setTimeout(() => { killed = true; child.proc.kill('SIGKILL'); }, ms);
  const r = await child.exitPromise;
  clearTimeout(t);
  return { ...r, killed };
}

test(`at a descriptor limit of ${LIMIT} with 2 workers, ${ROUNDS} x ${FLOOD} idle connections: held connections served, no spin, recovery, SIGTERM obeyed`,
  { skip: !havePrlimit && 'prlimit not installed', timeout: 120000 }, async () => {
    // MAX_CONNECTIONS far above the limit: the descriptor limit, not the cap, is what bites.
    const proxy = await startProxy(mock.url, {
      wrap: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`, '--'],
      env: { WORKERS: 2, MAX_CONNECTIONS: 1000000, SHUTDOWN_GRACE: 2 },
    });
    const pid = proxy.child.proc.pid;
    const held = new RawConn(proxy.port);
    try {
      const r0 = await held.request({ method: 'GET', path: '/', timeoutMs: 3000 });
      assert.equal(r0.status, 200);
      for (let round = 0; round < ROUNDS; round++) {
        const socks = await flood(proxy.port, FLOOD);
        await sleep(500);
        // (b) no spin: the two workers together use well under one core.
        const c0 = cpuSeconds(pid);
        const t0 = Date.now();
        await sleep(1500);
        const used = (cpuSeconds(pid) - c0) / ((Date.now() - t0) / 1000);
        assert.ok(used < 0.5, `round ${round}: the proxy used ${used.toFixed(2)} CPU cores while at its descriptor limit`);
        // (a) the held keep-alive connection is still served.
        const r = await held.request({ method: 'GET', path: '/', timeoutMs: 3000 });
        assert.equal(r.status, 200, `round ${round}: held connection`);
        // (c) once the idle connections are gone, new connections are served again.
        await closeAll(socks);
        await servedAgain(proxy.port, 5000);
      }
      assert.match(proxy.stderr(), /descriptor/i, 'the proxy logs that it hit the descriptor limit');
    } finally {
      held.close();
      // (d) SIGTERM ends it within a few seconds, even right after a flood.
      const socks = await flood(proxy.port, FLOOD);
      const end = await termWithin(proxy.child, 5000);
      await closeAll(socks);
      assert.equal(end.killed, false, `the proxy ignored SIGTERM (needed SIGKILL)\n${proxy.child.describe()}`);
      assert.ok(end.code === 0 || end.signal === 'SIGTERM', `exit ${JSON.stringify(end)}`);
    }
  });

test('MAX_CONNECTIONS: connections over the cap get a 503 and are closed; the held ones are served; capacity comes back',
  { timeout: 60000 }, async () => {
    const CAP = 20;
    const proxy = await startProxy(mock.url, { env: { WORKERS: 2, MAX_CONNECTIONS: CAP } });
    const held = new RawConn(proxy.port);
    let socks = [];
    try {
      assert.equal((await held.request({ method: 'GET', path: '/', timeoutMs: 3000 })).status, 200);
      // Fill the cap with idle connections (the held one counts too).
      socks = await flood(proxy.port, CAP + 10);
      await sleep(300);
      // Beyond the cap: a new connection is answered 503 and closed, without a request.
      const extra = await new Promise((resolve) => {
        const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
        const got = [];
        s.on('data', (d) => got.push(d));
        s.on('error', () => {});
        s.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
        setTimeout(() => s.destroy(), 3000);
      });
      assert.match(extra, /^HTTP\/1\.1 503 /, `over the cap: ${JSON.stringify(extra.slice(0, 200))}`);
      assert.match(extra, /connection: close/i);
      // The held connection is still served.
      assert.equal((await held.request({ method: 'GET', path: '/', timeoutMs: 3000 })).status, 200);
      await closeAll(socks);
      socks = [];
      await servedAgain(proxy.port, 5000);
      const m = await rawRequest(proxy.port, { method: 'GET', path: '/v1/metrics', headers: { Authorization: 'Bearer test_token' }, timeoutMs: 3000 });
      assert.equal(m.status, 200);
      assert.match(m.body.toString(), /^vllm_proxy_connections_refused_total\{reason="max_connections"\} [1-9]\d*$/m);
      assert.match(m.body.toString(), /^vllm_proxy_connections_open \d+$/m);
    } finally {
      held.close();
      await closeAll(socks);
      const end = await termWithin(proxy.child, 5000);
      assert.equal(end.killed, false);
    }
  });

test('the start-up log states the descriptor limit and the connection cap', { skip: !havePrlimit && 'prlimit not installed' }, async () => {
  const proxy = await startProxy(mock.url, {
    wrap: ['prlimit', '--nofile=300:4000', '--'],
    env: { WORKERS: 1, LOG_LEVEL: 'info' },
  });
  try {
    const err = proxy.stderr();
    // (4000 - 64) / 2 = 1968: the cap derived from the raised limit.
    assert.match(err, /file descriptor limit 300 -> 4000 \(hard 4000\); max connections 1968 per process/, err.slice(0, 2000));
    const lim = fs.readFileSync(`/proc/${proxy.child.proc.pid}/limits`, 'utf8');
    assert.match(lim, /Max open files\s+4000\s+4000/);
  } finally {
    await termWithin(proxy.child, 5000);
  }
});

