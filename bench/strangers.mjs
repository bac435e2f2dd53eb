// What a stranger can cost: the proxy's resident memory while N connections with no token send
// bodies nobody will read (docs/RELIABILITY.md, "What a stranger can cost"). Starts mock-vllm
// and vllm-proxy from BUILD (default build/), then for each scenario opens N connections, sends
// each a head and BODY_MB MiB of body (or only a head), waits, and reads the proxy's VmRSS from
// /proc before and while they are held.
//
//   node bench/strangers.mjs [--conns 200] [--body-mb 1] [--build build]

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, l) => (i % 2 ? a : [...a, [v.replace(/^--/, ''), l[i + 1]]]), []));
const N = Number(args.conns ?? 200);
const BODY = Number(args['body-mb'] ?? 1) << 20;
const BUILD = path.resolve(args.build ?? process.env.VP_BUILD_DIR ?? 'build');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

async function waitLine(child, re) {
  let acc = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${re}: ${acc}`)), 15000);
    child.stderr.on('data', (d) => {
      acc += d;
      const m = re.exec(acc);
      if (m) { clearTimeout(t); resolve(m); }
    });
  });
}

async function start() {
  const mock = spawn(path.join(BUILD, 'mock-vllm'), ['--listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const mport = (await waitLine(mock, /listening on [\d.]+:(\d+)/))[1];
  const port = await new Promise((r) => { const t = net.createServer().listen(0, '127.0.0.1', () => { const p = t.address().port; t.close(() => r(p)); }); });
  const proxy = spawn(path.join(BUILD, 'vllm-proxy'), [], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LISTEN_HOST: '127.0.0.1', LISTEN_PORT: String(port), VLLM_BASE_URL: `http://127.0.0.1:${mport}`,
      MODEL_NAME: 'm', TOKEN: 'secret', ATTESTATION: 'simulated', LOG_LEVEL: 'info', WORKERS: '2' },
  });
  await waitLine(proxy, /listening on/);
  await sleep(300);
  return { mock, proxy, port };
}

/* Each scenario on a fresh proxy: freed heap is kept by malloc and would hide the next one. */
async function scenario(name, headOf, sendBody) {
  const { mock, proxy, port } = await start();
  const pid = proxy.pid;
  try {
    await run(port, pid, name, headOf, sendBody);
  } finally {
    proxy.kill('SIGTERM');
    mock.kill('SIGTERM');
  }
}

async function run(port, pid, name, headOf, sendBody) {
  const socks = [];
  const base = rssKiB(pid);
  let answered = 0;
  for (let i = 0; i < N; i++) {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    s.on('data', () => { answered++; });
    await new Promise((r) => s.once('connect', r));
    s.write(headOf(i));
    if (sendBody) s.write(Buffer.alloc(BODY, 0x61));
    socks.push(s);
  }
  await sleep(1000); // everything sent has arrived; the 404s lingered less than LINGER_MS
  const held = rssKiB(pid);
  for (const s of socks) s.destroy();
  await sleep(2500);
  const after = rssKiB(pid);
  const per = ((held - base) / N).toFixed(1);
  console.log(`${name}: ${N} connections, RSS ${base} -> ${held} kB while held (${per} KiB per connection), ` +
    `${after} kB after they closed; ${answered} answered before the body`);
}

const bodyHead = (method, p) => () => `${method} ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n`;
await scenario(`POST unknown path, ${BODY >> 20} MiB of a 10 MiB body each`, bodyHead('POST', '/nope'), true);
await scenario(`GET /, ${BODY >> 20} MiB of a 10 MiB body each`, bodyHead('GET', '/'), true);
await scenario(`POST /v1/chat/completions without token, ${BODY >> 20} MiB each`, bodyHead('POST', '/v1/chat/completions'), true);
// A head that never ends, just under MAX_HEADER_SIZE (16 KiB): the head buffer at its limit.
await scenario('unfinished heads of 15 KiB', () => `GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(15 * 1024)}`, false);
await scenario('connections that send nothing', () => '', false);
