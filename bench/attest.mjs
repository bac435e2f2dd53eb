// bench/attest.mjs: attestation report latency (issue #3 item 7). Starts fake-dstack-agent (a
// SIMULATED guest agent on a Unix socket), mock-vllm and vllm-proxy (ATTESTATION=dstack), then:
//   1. GET /v1/attestation/report without a nonce (served from the cache): 1 client, then 64
//      concurrent clients, wrk, BENCH_SECONDS each;
//   2. the same with a fresh random nonce per request (agent GetQuote + Info every time);
//   3. 16 concurrent 512-token streams for BENCH_SECONDS, alone and under the fresh-report load
//      of (2): time per stream p50/p99 and the ratio.
// Prints one table and whether the targets are met: cached p50 <= 1 ms at 64 clients, and no
// stream slowed while reports are collected (p50 and p99 ratio <= BENCH_STREAM_SLACK, 1.10).
// Knobs: BENCH_SECONDS (5), BENCH_WORKERS (CPU count), BENCH_BUILD (build), BENCH_PORT (18480,
// uses the next one too), BENCH_TOKEN_DELAY_US (200: mock-vllm's delay per token, so a stream
// takes ~100 ms like a real engine's; 0 = CPU-bound streams), BENCH_STREAM_SLACK (1.10).
// Needs wrk (scripts/install-deps). Run: node bench/attest.mjs  (after make all)
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const E = process.env;
const SECONDS = Number(E.BENCH_SECONDS || 5);
const WORKERS = Number(E.BENCH_WORKERS || os.cpus().length);
const BUILD = path.resolve(ROOT, E.BENCH_BUILD || 'build');
const PORT = Number(E.BENCH_PORT || 18480);
const TOKEN_DELAY_US = Number(E.BENCH_TOKEN_DELAY_US ?? 200);
const SLACK = Number(E.BENCH_STREAM_SLACK || 1.1);
const PACED_RPS = Number(E.BENCH_PACED_RPS || 200);
const CLIENTS = 64;
const STREAMS = 16;
const STREAM_TOKENS = 512;
const TOKEN = 'bench';
const MODEL = 'bench';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[attest-bench] ${a.join(' ')}\n`);
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-attest-bench-'));
const SOCK = path.join(TMP, 'dstack.sock');

for (const b of ['fake-dstack-agent', 'mock-vllm', 'vllm-proxy']) {
  if (!fs.existsSync(path.join(BUILD, b))) { console.error(`${BUILD}/${b} missing: run make all`); process.exit(1); }
}
if (spawnSync('wrk', ['-v']).error) { console.error('wrk not found (scripts/install-deps)'); process.exit(1); }

// ---------- processes ----------
const children = [];
function start(name, args, env = {}) {
  const logf = fs.openSync(path.join(TMP, `${name}.log`), 'a');
  const p = spawn(path.join(BUILD, name), args, { env: { ...E, ...env }, stdio: ['ignore', logf, logf] });
  children.push(p);
  p.on('exit', (code, sig) => { p.exited = { code, sig }; });
  return p;
}
function cleanup() {
  for (const p of children) if (!p.exited) { try { p.kill('SIGTERM'); } catch { /* gone */ } }
}
process.on('exit', cleanup);
process.on('SIGINT', () => { cleanup(); process.exit(130); });

function request(opts, body) {
  return new Promise((resolve, reject) => {
    const r = http.request(opts, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(body);
  });
}

async function waitReady(p, name, opts) {
  const t0 = Date.now();
  for (;;) {
    if (p.exited) throw new Error(`${name} exited: ${fs.readFileSync(path.join(TMP, `${name}.log`), 'utf8')}`);
    try { if ((await request(opts)).status === 200) return; } catch { /* not yet */ }
    if (Date.now() - t0 > 15000) throw new Error(`${name} not ready`);
    await sleep(50);
  }
}

// ---------- wrk ----------
const LUA = path.join(TMP, 'report.lua');
fs.writeFileSync(LUA, `
local fresh = os.getenv("ATTEST_FRESH") == "1"
local hex = "0123456789abcdef"
local tid = 0
function setup(thread) tid = tid + 1; thread:set("tid", tid) end
function init(args) math.randomseed(os.time() * 1000 + (tid or 0) * 7919) end
function request()
  local path = "/v1/attestation/report"
  if fresh then
    local t = {}
    for i = 1, 64 do local k = math.random(1, 16); t[i] = hex:sub(k, k) end
    path = path .. "?nonce=" .. table.concat(t)
  end
  return wrk.format("GET", path, {["Authorization"] = "Bearer ${TOKEN}"})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"err_status":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\\n', summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.max))
end
`);

function wrk(conns, fresh, seconds) {
  return new Promise((resolve, reject) => {
    const threads = Math.min(conns, Math.max(1, Math.min(4, os.cpus().length)));
    const p = spawn('wrk', ['-t', String(threads), '-c', String(conns), '-d', `${seconds}s`, '--timeout', '10s',
      '-s', LUA, `http://127.0.0.1:${PORT}`], { env: { ...E, ATTEST_FRESH: fresh ? '1' : '0' } });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('exit', () => {
      const m = /BENCHJSON (\{.*\})/.exec(out);
      if (!m) reject(new Error(`wrk: ${out}`));
      else resolve(JSON.parse(m[1]));
    });
  });
}

// ---------- streams ----------
const streamBody = JSON.stringify({ model: MODEL, stream: true, max_tokens: STREAM_TOKENS,
  messages: [{ role: 'user', content: 'Write a long story.' }] });
const agent = new http.Agent({ keepAlive: true, maxSockets: STREAMS });

async function streams(seconds) {
  const times = [];
  let bad = 0;
  const until = Date.now() + seconds * 1000;
  async function loop() {
    while (Date.now() < until) {
      const t0 = process.hrtime.bigint();
      const r = await request({ host: '127.0.0.1', port: PORT, method: 'POST', path: '/v1/chat/completions', agent,
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}`, 'Content-Length': Buffer.byteLength(streamBody) } },
      streamBody);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 200 || !r.body.includes('data: [DONE]')) bad++;
      else times.push(ms);
    }
  }
  await Promise.all(Array.from({ length: STREAMS }, loop));
  times.sort((a, b) => a - b);
  const pct = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  return { n: times.length, bad, p50: pct(0.5), p99: pct(0.99) };
}

// A paced fresh-report load from node: CLIENTS concurrent clients, RPS requests/s in total,
// so the machine is not saturated and only blocking (not CPU contention) could slow streams.
async function pacedReports(rps, untilMs) {
  const lat = [];
  let bad = 0;
  const gap = (CLIENTS / rps) * 1000;
  const ragent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  async function loop(i) {
    await sleep((gap * i) / CLIENTS);
    let next = Date.now();
    while (Date.now() < untilMs) {
      const nonce = Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))).toString('hex');
      const t0 = process.hrtime.bigint();
      const r = await request({ host: '127.0.0.1', port: PORT, path: `/v1/attestation/report?nonce=${nonce}`, agent: ragent,
        headers: { Authorization: `Bearer ${TOKEN}` } });
      if (r.status === 200) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      else bad++;
      next += gap;
      await sleep(Math.max(0, next - Date.now()));
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => loop(i)));
  ragent.destroy();
  lat.sort((a, b) => a - b);
  const pct = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
  return { n: lat.length, bad, p50: pct(0.5), p99: pct(0.99) };
}

// ---------- run ----------
const fmtUs = (us) => (us >= 10000 ? `${(us / 1000).toFixed(0)} ms` : `${(us / 1000).toFixed(2)} ms`);

async function main() {
  const mockPort = PORT + 1;
  const ag = start('fake-dstack-agent', ['--unix', SOCK]);
  const mock = start('mock-vllm', ['--listen', `127.0.0.1:${mockPort}`, '--model', MODEL, '--delay-us', String(TOKEN_DELAY_US)]);
  for (let t0 = Date.now(); !fs.existsSync(SOCK); await sleep(20)) {
    if (ag.exited || Date.now() - t0 > 10000) throw new Error('fake-dstack-agent did not start');
  }
  await waitReady(mock, 'mock-vllm', { host: '127.0.0.1', port: mockPort, path: '/health' });
  const proxy = start('vllm-proxy', [], {
    LISTEN_HOST: '127.0.0.1', LISTEN_PORT: String(PORT), VLLM_BASE_URL: `http://127.0.0.1:${mockPort}`,
    MODEL_NAME: MODEL, TOKEN, WORKERS: String(WORKERS), ATTESTATION: 'dstack', DSTACK_SIMULATOR_ENDPOINT: SOCK,
    GPU_EVIDENCE: 'simulated', LOG_LEVEL: 'warn', DEV: '',
  });
  await waitReady(proxy, 'vllm-proxy', { host: '127.0.0.1', port: PORT, path: '/' });
  const warm = await request({ host: '127.0.0.1', port: PORT, path: '/v1/attestation/report', headers: { Authorization: `Bearer ${TOKEN}` } });
  if (warm.status !== 200 || !/"attestation_mode":"dstack"/.test(warm.body)) throw new Error(`report: ${warm.status} ${warm.body.slice(0, 300)}`);
  log(`report ${warm.body.length} bytes; ${os.cpus().length} CPUs, ${WORKERS} proxy worker(s), ${SECONDS} s per run`);

  const rows = [];
  const reportRow = (name, r) => {
    const rps = r.requests / (r.duration_us / 1e6);
    rows.push([name, `${fmtUs(r.p50_us)}`, `${fmtUs(r.p99_us)}`, `${rps.toFixed(0)}/s`, String(r.errors + r.err_status)]);
    return r;
  };
  log('cached, 1 client');
  reportRow('report, cached (no nonce), 1 client', await wrk(1, false, SECONDS));
  log('cached, 64 clients');
  const cached = reportRow(`report, cached (no nonce), ${CLIENTS} clients`, await wrk(CLIENTS, false, SECONDS));
  log('fresh, 1 client');
  reportRow('report, fresh nonce (agent), 1 client', await wrk(1, true, SECONDS));
  log('fresh, 64 clients');
  reportRow(`report, fresh nonce (agent), ${CLIENTS} clients`, await wrk(CLIENTS, true, SECONDS));

  log(`${STREAMS} streams alone`);
  await streams(1); // warm-up
  const alone = await streams(SECONDS);
  log(`${STREAMS} streams with ${CLIENTS} fresh-report clients`);
  const loadP = wrk(CLIENTS, true, SECONDS + 1);
  await sleep(300);
  const loaded = await streams(SECONDS);
  const load = await loadP;
  log(`${STREAMS} streams with ${CLIENTS} fresh-report clients paced at ${PACED_RPS}/s`);
  const pacedP = pacedReports(PACED_RPS, Date.now() + SECONDS * 1000 + 600);
  await sleep(300);
  const paced = await streams(SECONDS);
  const pacedLoad = await pacedP;
  const sRow = (name, s, unit = 'streams') => rows.push([name, `${s.p50.toFixed(1)} ms`, `${s.p99.toFixed(1)} ms`, `${s.n} ${unit}`, String(s.bad)]);
  sRow(`${STREAMS} x ${STREAM_TOKENS}-token streams, alone`, alone);
  sRow(`${STREAMS} x ${STREAM_TOKENS}-token streams, + fresh reports (wrk, ${CLIENTS} closed-loop)`, loaded);
  reportRow(`  the fresh-report load (wrk, ${CLIENTS} clients)`, load);
  sRow(`${STREAMS} x ${STREAM_TOKENS}-token streams, + fresh reports (${CLIENTS} clients, ${PACED_RPS}/s)`, paced);
  sRow(`  the fresh-report load (${CLIENTS} clients, ${PACED_RPS}/s)`, pacedLoad, 'reports');
  const r50 = loaded.p50 / alone.p50;
  const r99 = loaded.p99 / alone.p99;
  const q50 = paced.p50 / alone.p50;
  const q99 = paced.p99 / alone.p99;

  const head = ['run', 'p50', 'p99', 'rate', 'errors'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')} |`;
  const out = [];
  out.push(`Attestation report latency (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs "${os.cpus()[0].model.trim()}", ` +
    `${WORKERS} worker(s), mock token delay ${TOKEN_DELAY_US} us, report ${warm.body.length} bytes)`);
  out.push(line(head));
  out.push(`|${w.map((n, i) => (i === 0 ? '-'.repeat(n + 2) : `${'-'.repeat(n + 1)}:`)).join('|')}|`);
  for (const r of rows) out.push(line(r));
  out.push(`stream time ratio, loaded / alone: closed-loop wrk load p50 x${r50.toFixed(3)} p99 x${r99.toFixed(3)}; ` +
    `paced load p50 x${q50.toFixed(3)} p99 x${q99.toFixed(3)}`);
  const okCached = cached.p50_us <= 1000;
  const okStreams = r50 <= SLACK && r99 <= SLACK && loaded.bad === 0;
  const okPaced = q50 <= SLACK && q99 <= SLACK && paced.bad === 0;
  out.push(`target cached p50 <= 1 ms at ${CLIENTS} clients: ${okCached ? 'MET' : 'NOT MET'} (${fmtUs(cached.p50_us)})`);
  out.push(`target no stream slowed while reports are collected (ratio <= ${SLACK}): ` +
    `closed-loop load ${okStreams ? 'MET' : 'NOT MET'}, paced load ${okPaced ? 'MET' : 'NOT MET'}`);
  console.log(out.join('\n'));
  agent.destroy();
}

main().then(() => { cleanup(); fs.rmSync(TMP, { recursive: true, force: true }); },
  (e) => { console.error(`attest bench failed: ${e.stack || e}\nlogs in ${TMP}`); cleanup(); process.exit(1); });
