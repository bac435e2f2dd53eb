// bench/bench.mjs: the benchmark driver behind bench/run. Starts mock-vllm, an nginx
// pass-through and vllm-proxy side by side, loads each path with the same wrk scripts, reads
// server CPU time and memory from /proc, and prints one table with the targets from the
// performance issue. Every figure is measured in the same run, so the ratios (proxy vs
// nginx, path vs direct) are what to read on a shared, noisy machine.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const E = process.env;
const SECONDS = Number(E.BENCH_SECONDS || 5);
const WORKERS = Number(E.BENCH_WORKERS || 1);
const HOLD_N = Number(E.BENCH_HOLD ?? 5000);
const HOLD_DELAY_US = Number(E.BENCH_HOLD_DELAY_US || 500000);
const BUILD = path.resolve(ROOT, E.BENCH_BUILD || 'build');
let PORT = Number(E.BENCH_PORT || 18400); // first of seven; moved up while any is taken
// The pool runs (issue 12): a second mock-vllm at PORT + 4, nginx with an upstream of both
// (least_conn) at PORT + 5, vllm-proxy with VLLM_BACKEND_URLS of both at PORT + 6.
const POOL = E.BENCH_POOL !== '0';
const OUT = path.join(HERE, 'out');
const HOLD_BIN = E.BENCH_HOLD_BIN || path.join(OUT, 'hold');
const SIGN_BIN = E.BENCH_SIGN_BIN || path.join(OUT, 'sign');
const NCPU = os.cpus().length;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString().trim()) || 100;
const TOKEN = 'bench';
const MODEL = 'bench';
const STREAM_TOKENS = 512;

// CPU placement, BENCH_PIN: "one" (default) runs every process on CPU 0 and leaves the rest
// to the machine's other tenants; "split" gives the server under test (nginx or vllm-proxy)
// CPUs 1..W and mock-vllm + the load generator the others; "0" pins nothing. On the VMs this
// was written on a wake-up across CPUs costs 70-100 us, so with "split" every figure is
// bound by wake-up latency rather than by the servers' CPU (docs/PERFORMANCE.md).
const PIN_MODE = E.BENCH_PIN === '0' || spawnSync('taskset', ['-V']).status !== 0 ? 'none' : (E.BENCH_PIN || 'one');
let SERVER_CPUS = null;
let LOAD_CPUS = null;
if (PIN_MODE === 'split' && WORKERS < NCPU) {
  const all = [...Array(NCPU).keys()];
  SERVER_CPUS = all.slice(1, 1 + WORKERS).join(',');
  LOAD_CPUS = all.filter((c) => c === 0 || c > WORKERS).join(',');
} else if (PIN_MODE === 'one') {
  SERVER_CPUS = LOAD_CPUS = '0';
}
// One-connection latency runs put every process on CPU 0: on the VMs this was written on, a
// wake-up across CPUs costs 70-80 us (an idle vCPU has to be woken), which would swamp the
// 0.1 ms the proxy is allowed to add. The throughput runs use the split above.
const LAT_CPUS = LOAD_CPUS ? '0' : null;
const PACED_DELAY_US = Number(E.BENCH_PACED_DELAY_US || 1000);
const WRK_THREADS = LOAD_CPUS ? Math.max(1, LOAD_CPUS.split(',').length - 1) : 2;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[bench] ${a.join(' ')}\n`);
fs.mkdirSync(OUT, { recursive: true });
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-bench-'));

// ---------- processes ----------
const children = [];
function start(name, cmd, args, { cpus, env } = {}) {
  const logf = fs.openSync(path.join(TMP, `${name}.log`), 'a');
  const argv = cpus ? ['-c', cpus, cmd, ...args] : args;
  const p = spawn(cpus ? 'taskset' : cmd, argv, {
    stdio: ['ignore', logf, logf],
    env: { ...process.env, ...(env || {}) },
  });
  p.name = name;
  p.exited = null;
  p.on('exit', (code, sig) => {
    p.exited = { code, sig };
    if (!stopping) log(`${name} exited unexpectedly: code=${code} signal=${sig}; log: ${path.join(TMP, name + '.log')}`);
  });
  children.push(p);
  return p;
}
let stopping = false;
function stopAll() {
  stopping = true;
  for (const p of children) if (!p.exited) try { p.kill('SIGTERM'); } catch {}
}
process.on('exit', stopAll);
process.on('SIGINT', () => { stopAll(); process.exit(130); });
process.on('SIGTERM', () => { stopAll(); process.exit(143); });

function tail(name, n = 15) {
  try {
    return fs.readFileSync(path.join(TMP, `${name}.log`), 'utf8').split('\n').slice(-n).join('\n');
  } catch { return ''; }
}

// ---------- /proc ----------
function childrenOf(pid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === pid) out.push(Number(d));
    } catch {}
  }
  return out;
}
// every process of a server: nginx is a master and its workers; the others are one process.
const pidsOf = (srv) => (srv.tree ? [srv.proc.pid, ...childrenOf(srv.proc.pid)] : [srv.proc.pid]);
function cpuTicks(pids) {
  let t = 0;
  for (const pid of pids) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      t += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {}
  }
  return t;
}
function rssKiB(pids) {
  let t = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) t += Number(m[1]);
    } catch {}
  }
  return t;
}

// ---------- HTTP ----------
async function waitReady(url, okStatus, ms, proc) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (proc && proc.exited) return false;
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === okStatus) return true;
    } catch {}
    await sleep(100);
  }
  return false;
}
async function mockStats() {
  try {
    const r = await fetch(`http://127.0.0.1:${PORT + 1}/mock/stats`, { signal: AbortSignal.timeout(2000) });
    return await r.json();
  } catch { return null; }
}

// Other people's servers share this machine: take the first run of seven free ports.
const portFree = (p) => new Promise((r) => {
  const srv = net.createServer().once('error', () => r(false)).listen(p, '127.0.0.1', () => srv.close(() => r(true)));
});
async function pickPorts() {
  for (let base = PORT; base < PORT + 2000; base += 10) {
    let ok = true;
    for (let i = 0; i < 7 && ok; i++) ok = await portFree(base + i);
    if (ok) { PORT = base; return; }
  }
  throw new Error(`no seven free ports from ${PORT}`);
}

// Whole-machine busy time from /proc/stat (all CPUs, in ticks), to show how much CPU other
// tenants took while a run was going: busy - (server + mock-vllm + wrk).
function machineBusyTicks() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return { busy: f[0] + f[1] + f[2] + f[5] + f[6], steal: f[7] || 0 };
}

// ---------- bodies ----------
const messages = [{ role: 'user', content: 'Write a short poem about reverse proxies.' }];
const BODIES = {
  nonstream: { model: MODEL, messages, max_tokens: 16 },
  stream: { model: MODEL, messages, max_tokens: STREAM_TOKENS, stream: true },
  hold: { model: MODEL, messages, max_tokens: STREAM_TOKENS, stream: true, mock_delay_us: HOLD_DELAY_US },
  paced: { model: MODEL, messages, max_tokens: STREAM_TOKENS, stream: true, mock_delay_us: PACED_DELAY_US },
};
const bodyFile = {};
for (const [k, v] of Object.entries(BODIES)) {
  bodyFile[k] = path.join(TMP, `${k}.json`);
  fs.writeFileSync(bodyFile[k], JSON.stringify(v));
}

// ---------- servers ----------
const servers = {}; // name -> {proc, port, tree, token}
let mock2Proc = null; // the second engine of the pool runs
const POOL_PATHS = ['nginx2', 'proxy2'];
async function startServers() {
  const mockBin = path.join(BUILD, 'mock-vllm');
  if (!fs.existsSync(mockBin)) throw new Error(`${mockBin} not found: run make first`);
  const mock = start('mock-vllm', mockBin, ['--listen', `127.0.0.1:${PORT + 1}`, '--model', MODEL], { cpus: LOAD_CPUS });
  if (!(await waitReady(`http://127.0.0.1:${PORT + 1}/health`, 200, 10000, mock)))
    throw new Error(`mock-vllm did not start:\n${tail('mock-vllm')}`);
  servers.direct = { proc: mock, port: PORT + 1, tree: false, token: TOKEN }; // same request bytes on every path

  const startNginx = async (name, port, upstreams) => {
    const ndir = path.join(TMP, name);
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(ndir, 'tmp', d), { recursive: true });
    const conf = fs.readFileSync(path.join(HERE, 'nginx.conf.in'), 'utf8')
      .replaceAll('@USER@', process.getuid() === 0 ? 'user root;' : '')
      .replaceAll('@WORKERS@', String(WORKERS))
      .replaceAll('@DIR@', ndir)
      .replaceAll('@UPSTREAM_SERVERS@', (upstreams.length > 1 ? 'least_conn;\n        ' : '') +
        upstreams.map((u) => `server 127.0.0.1:${u};`).join('\n        '))
      .replaceAll('@PORT@', String(port));
    fs.writeFileSync(path.join(ndir, 'nginx.conf'), conf);
    const ngx = start(name, E.BENCH_NGINX || 'nginx', ['-p', ndir, '-c', path.join(ndir, 'nginx.conf'), '-g', 'daemon off;'], { cpus: SERVER_CPUS });
    if (!(await waitReady(`http://127.0.0.1:${port}/health`, 200, 10000, ngx)))
      throw new Error(`${name} did not start:\n${tail(name)}\n${fs.existsSync(path.join(ndir, 'error.log')) ? fs.readFileSync(path.join(ndir, 'error.log'), 'utf8') : ''}`);
    servers[name] = { proc: ngx, port, tree: true, token: TOKEN };
  };
  await startNginx('nginx', PORT + 2, [PORT + 1]);
  if (POOL) {
    const mock2 = start('mock-vllm-2', mockBin, ['--listen', `127.0.0.1:${PORT + 4}`, '--model', MODEL], { cpus: LOAD_CPUS });
    if (!(await waitReady(`http://127.0.0.1:${PORT + 4}/health`, 200, 10000, mock2)))
      throw new Error(`the second mock-vllm did not start:\n${tail('mock-vllm-2')}`);
    mock2Proc = mock2;
    await startNginx('nginx2', PORT + 5, [PORT + 1, PORT + 4]);
  }

  const vpBin = path.join(BUILD, 'vllm-proxy');
  if (POOL && fs.existsSync(vpBin) && E.BENCH_NO_PROXY !== '1') {
    const vp2 = start('vllm-proxy-2', vpBin, [
      '--listen', `127.0.0.1:${PORT + 6}`, '--backends', `http://127.0.0.1:${PORT + 1},http://127.0.0.1:${PORT + 4}`,
      '--workers', String(WORKERS), '--model-name', MODEL, '--token', TOKEN,
      '--attestation', 'simulated', '--log-level', E.BENCH_PROXY_LOG_LEVEL || 'warning',
    ], { cpus: SERVER_CPUS, env: { ATTESTATION: 'simulated', MODEL_NAME: MODEL, TOKEN } });
    if (await waitReady(`http://127.0.0.1:${PORT + 6}/`, 200, 15000, vp2)) {
      servers.proxy2 = { proc: vp2, port: PORT + 6, tree: false, token: TOKEN };
    } else {
      notes.push('vllm-proxy with two engines did not start: ' + tail('vllm-proxy-2', 3).replace(/\n/g, ' | '));
      if (!vp2.exited) vp2.kill('SIGTERM');
    }
  }
  if (fs.existsSync(vpBin) && E.BENCH_NO_PROXY !== '1') {
    const vp = start('vllm-proxy', vpBin, [
      '--listen', `127.0.0.1:${PORT + 3}`, '--upstream', `http://127.0.0.1:${PORT + 1}`,
      '--workers', String(WORKERS), '--model-name', MODEL, '--token', TOKEN,
      '--attestation', 'simulated', '--log-level', E.BENCH_PROXY_LOG_LEVEL || 'warning',
    ], { cpus: SERVER_CPUS, env: { ATTESTATION: 'simulated', MODEL_NAME: MODEL, TOKEN } });
    if (await waitReady(`http://127.0.0.1:${PORT + 3}/`, 200, 15000, vp)) {
      servers.proxy = { proc: vp, port: PORT + 3, tree: false, token: TOKEN };
    } else {
      log(`vllm-proxy did not become ready; its column is n/a. Log tail:\n${tail('vllm-proxy')}`);
      notes.push('vllm-proxy did not start: ' + tail('vllm-proxy', 3).replace(/\n/g, ' | '));
      if (!vp.exited) vp.kill('SIGTERM');
    }
  } else {
    log(`${vpBin} not present: proxy column is n/a`);
  }
}

// ---------- checks before load ----------
const notes = [];
const streamTokens = {};
async function preflight(name) {
  const s = servers[name];
  const hdr = { 'content-type': 'application/json', ...(s.token ? { authorization: `Bearer ${s.token}` } : {}) };
  const base = `http://127.0.0.1:${s.port}`;
  const r1 = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: hdr, body: JSON.stringify(BODIES.nonstream) });
  const t1 = await r1.text();
  if (r1.status !== 200) throw new Error(`${name}: non-streaming request answered ${r1.status}: ${t1.slice(0, 300)}`);
  const id1 = JSON.parse(t1).id;
  const r2 = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: hdr, body: JSON.stringify(BODIES.stream) });
  const t2 = await r2.text();
  if (r2.status !== 200) throw new Error(`${name}: streaming request answered ${r2.status}: ${t2.slice(0, 300)}`);
  let content = 0, id2 = null;
  const events = t2.split('\n').filter((l) => l.startsWith('data: '));
  for (const l of events) {
    if (l === 'data: [DONE]') continue;
    const j = JSON.parse(l.slice(6));
    id2 ||= j.id;
    if (j.choices?.[0]?.delta?.content) content++;
  }
  if (events[events.length - 1] !== 'data: [DONE]') notes.push(`${name}: stream did not end with data: [DONE]`);
  streamTokens[name] = content;
  if (name.startsWith('proxy')) {
    for (const id of [id1, id2]) {
      const r = await fetch(`${base}/v1/signature/${id}?signing_algo=ecdsa`, { headers: hdr });
      const t = await r.text();
      if (r.status !== 200) notes.push(`proxy: GET /v1/signature/${id} answered ${r.status}: ${t.slice(0, 200)}`);
      else if (!JSON.parse(t).signature) notes.push(`proxy: signature record without a signature: ${t.slice(0, 200)}`);
    }
  }
  log(`${name}: ok (stream of ${content} content events, ${events.length} data lines)`);
}

// ---------- wrk ----------
function setAffinity(cpus) {
  if (!cpus) return;
  for (const [name, s] of Object.entries(servers)) {
    if (name === 'direct' || s.proc.exited) continue;
    for (const pid of pidsOf(s)) spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
  }
}

function wrk(name, body, conns, seconds, cpus = LOAD_CPUS) {
  const s = servers[name];
  const threads = cpus === LOAD_CPUS ? Math.min(conns, WRK_THREADS) : 1;
  const args = ['-t', String(threads), '-c', String(conns), '-d', `${seconds}s`, '--timeout', '10s',
    '-s', path.join(HERE, 'post.lua'), `http://127.0.0.1:${s.port}`];
  // run wrk under a shell that prints its own cutime+cstime afterwards: wrk's CPU time
  const wrkCmd = (cpus ? ['taskset', '-c', cpus, 'wrk', ...args] : ['wrk', ...args]).map((a) => `'${a}'`).join(' ');
  const cmd = 'sh';
  const argv = ['-c', `${wrkCmd}; echo "WRKSTAT $(cat /proc/$$/stat)"`];
  const pids = pidsOf(s);
  const mockPids = [servers.direct.proc.pid, ...(mock2Proc ? [mock2Proc.pid] : [])];
  const c0 = cpuTicks(pids), m0 = cpuTicks(mockPids), b0 = machineBusyTicks();
  const r = spawnSync(cmd, argv, {
    env: { ...process.env, BENCH_BODY_FILE: bodyFile[body], BENCH_TOKEN: s.token },
    timeout: (seconds + 30) * 1000,
  });
  const c1 = cpuTicks(pids), m1 = cpuTicks(mockPids), b1 = machineBusyTicks();
  const out = r.stdout.toString();
  const m = /BENCHJSON (\{.*\})/.exec(out);
  if (!m) throw new Error(`wrk gave no result for ${name}: ${out}\n${r.stderr}`);
  const j = JSON.parse(m[1]);
  j.cpu_s = (c1 - c0) / CLK_TCK;
  j.mock_cpu_s = (m1 - m0) / CLK_TCK;
  const ws = /WRKSTAT .*\) (.*)/.exec(out);
  if (ws) { const w = ws[1].split(' '); j.wrk_cpu_s = (Number(w[13]) + Number(w[14])) / CLK_TCK; }
  const wall = j.duration_us / 1e6;
  const ours = j.cpu_s + (name === 'direct' ? 0 : j.mock_cpu_s) + (j.wrk_cpu_s || 0);
  j.foreign_cpu_pct = (100 * ((b1.busy - b0.busy) / CLK_TCK - ours)) / wall;
  j.steal_pct = (100 * (b1.steal - b0.steal) / CLK_TCK) / wall;
  j.rps = j.requests / (j.duration_us / 1e6);
  j.errors = j.err_connect + j.err_read + j.err_write + j.err_status + j.err_timeout;
  if (s.proc.exited) j.crashed = true;
  return j;
}

// ---------- held streams ----------
async function holdTest(name) {
  const s = servers[name];
  if (s.proc.exited) return { error: 'server not running' };
  // wait for earlier streams to drain so "idle" really is idle
  for (let i = 0; i < 100; i++) { const st = await mockStats(); if (!st || st.active === 0) break; await sleep(100); }
  await sleep(500);
  const idle = rssKiB(pidsOf(s));
  const args = ['127.0.0.1', String(s.port), String(HOLD_N), bodyFile.hold, s.token, '1000', '90'];
  const h = spawn(LOAD_CPUS ? 'taskset' : HOLD_BIN, LOAD_CPUS ? ['-c', LOAD_CPUS, HOLD_BIN, ...args] : args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let outBuf = '', errBuf = '';
  h.stdout.on('data', (d) => { outBuf += d; });
  h.stderr.on('data', (d) => { errBuf += d; });
  const waitLine = async (re, ms) => {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) { const m = re.exec(outBuf); if (m) return m; await sleep(50); }
    return null;
  };
  const ready = await waitLine(/READY ok=(\d+) fail=(\d+) pending=(\d+) ms=(\d+)/, 120000);
  const res = { n: HOLD_N, idle_kib: idle };
  if (!ready) { h.kill('SIGKILL'); return { ...res, error: 'holder never became ready' }; }
  res.open_ms = Number(ready[4]);
  await sleep(2000);
  h.stdin.write('s\n');
  const st = await waitLine(/STATUS ok=(\d+) fail=(\d+)/, 5000);
  res.held_kib = rssKiB(pidsOf(s));
  res.ok = st ? Number(st[1]) : Number(ready[1]);
  res.failed = st ? Number(st[2]) : Number(ready[2]);
  const ms = await mockStats();
  res.mock_active = ms ? ms.active : null;
  res.per_stream_kib = res.ok > 0 ? (res.held_kib - res.idle_kib) / res.ok : NaN;
  h.stdin.end();
  await new Promise((r) => { if (h.exitCode !== null) r(); else h.on('exit', r); });
  // client went away: the engine's streams must be cancelled too
  const t0 = Date.now();
  let left = null;
  for (;;) {
    const x = await mockStats();
    left = x ? x.active : null;
    if (left === 0 || Date.now() - t0 > 20000) break;
    await sleep(100);
  }
  res.drain_ms = Date.now() - t0;
  res.upstream_left = left;
  res.after_kib = rssKiB(pidsOf(s));
  if (errBuf.trim()) res.holder_stderr = errBuf.trim().split('\n').slice(0, 5).join(' | ');
  if (s.proc.exited) res.crashed = true;
  return res;
}

// ---------- the signature primitives alone ----------
// Runs bench/sign.c pinned like the server under load: CPU us for one secp256k1 recoverable
// signature and one Ed25519 signature of the 129-byte signed text, with the proxy's signer.
function signPrimitives(cpus) {
  const r = spawnSync(cpus ? 'taskset' : SIGN_BIN, cpus ? ['-c', cpus, SIGN_BIN, '20000'] : ['20000'], { timeout: 120000 });
  const m = /BENCHSIGN (\{.*\})/.exec(r.stdout ? r.stdout.toString() : '');
  return m ? JSON.parse(m[1]) : null;
}

// ---------- table ----------
const f = (v, d = 0) => (v === undefined || v === null || Number.isNaN(v) ? 'n/a' : Number(v).toFixed(d));
const ms = (us) => (us === undefined ? 'n/a' : (us / 1000).toFixed(3));

function buildTable(R, H, S) {
  const P = ['direct', 'nginx', 'proxy'];
  const rows = [];
  const row = (label, vals, target = '', verdict = '') => rows.push([label, ...vals, target, verdict]);
  const get = (t, p) => R[t]?.[p];
  const verdict = (ok) => (ok === null ? 'n/a' : ok ? 'MET' : 'NOT MET');
  const added = (t, p, k) => (get(t, p) && get(t, 'direct') ? (get(t, p)[k] - get(t, 'direct')[k]) : undefined);
  const proxyHas = (t) => !!get(t, 'proxy');

  row('1 conn, non-stream (16 tok): p50 ms', P.map((p) => ms(get('ns1', p)?.lat_p50_us)));
  row('                              p99 ms', P.map((p) => ms(get('ns1', p)?.lat_p99_us)));
  const a1 = added('ns1', 'proxy', 'lat_p50_us');
  row('  added p50 vs direct, ms', ['-', ms(added('ns1', 'nginx', 'lat_p50_us')), ms(a1)], '<= 0.100', verdict(a1 === undefined ? null : a1 <= 100));
  row('  added p99 vs direct, ms', ['-', ms(added('ns1', 'nginx', 'lat_p99_us')), ms(added('ns1', 'proxy', 'lat_p99_us'))]);
  row('1 conn, stream 512 tok: p50 ms', P.map((p) => ms(get('s1', p)?.lat_p50_us)));
  row('                        p99 ms', P.map((p) => ms(get('s1', p)?.lat_p99_us)));
  const a2 = added('s1', 'proxy', 'lat_p50_us');
  row('  added p50 vs direct, ms', ['-', ms(added('s1', 'nginx', 'lat_p50_us')), ms(a2)], '<= 0.400', verdict(a2 === undefined ? null : a2 <= 400));
  const an2 = added('s1', 'nginx', 'lat_p50_us');
  const ar2 = a2 !== undefined && an2 ? a2 / an2 : undefined;
  row('  added p50 / nginx added p50', ['-', '-', f(ar2, 2)], '<= 0.60', verdict(ar2 === undefined ? null : ar2 <= 0.6));
  row('  added p99 vs direct, ms', ['-', ms(added('s1', 'nginx', 'lat_p99_us')), ms(added('s1', 'proxy', 'lat_p99_us'))]);
  rows.push(null);

  row('64 conn, non-stream: req/s', P.map((p) => f(get('ns64', p)?.rps)));
  const rr = proxyHas('ns64') && get('ns64', 'nginx') ? get('ns64', 'proxy').rps / get('ns64', 'nginx').rps : undefined;
  row('  proxy req/s / nginx req/s', ['-', '-', f(rr, 2)], '>= 0.30', verdict(rr === undefined ? null : rr >= 0.3));
  row('  p50 ms', P.map((p) => ms(get('ns64', p)?.lat_p50_us)));
  row('  p99 ms', P.map((p) => ms(get('ns64', p)?.lat_p99_us)));
  const cpr = (t, p) => (get(t, p) ? (get(t, p).cpu_s * 1e6) / get(t, p).requests : undefined);
  row('  server CPU us / request', P.map((p) => f(cpr('ns64', p), 1)), '<= 60', verdict(proxyHas('ns64') ? cpr('ns64', 'proxy') <= 60 : null));
  row('  the two signatures alone, CPU us (bench/sign.c)', ['-', '-', f(S?.both_us, 1)], 'info');
  const budget = S && get('ns64', 'nginx') ? cpr('ns64', 'nginx') + S.both_us + 10 : undefined;
  row('  proxy CPU us / req - (nginx + signatures)', ['-', '-', f(budget === undefined ? undefined : cpr('ns64', 'proxy') - budget + 10, 1)], '<= 10', verdict(budget === undefined || !proxyHas('ns64') ? null : cpr('ns64', 'proxy') <= budget));
  row('  mock-vllm CPU us / request', P.map((p) => f(get('ns64', p) ? get('ns64', p).mock_cpu_s * 1e6 / get('ns64', p).requests : undefined, 1)));
  rows.push(null);

  for (const [t, c] of [['s16', 16], ['s64', 64]]) {
    const tps = (p) => (get(t, p) ? get(t, p).rps * (streamTokens[p] ?? STREAM_TOKENS) : undefined);
    row(`stream 512 tok x ${c} conc: tokens/s`, P.map((p) => f(tps(p))));
    const tr = tps('proxy') !== undefined && tps('nginx') ? tps('proxy') / tps('nginx') : undefined;
    row('  proxy tokens/s / nginx tokens/s', ['-', '-', f(tr, 2)], '>= 0.90', verdict(tr === undefined ? null : tr >= 0.9));
    row('  answers/s', P.map((p) => f(get(t, p)?.rps, 1)));
    row('  p50 ms', P.map((p) => ms(get(t, p)?.lat_p50_us)));
    row('  p99 ms', P.map((p) => ms(get(t, p)?.lat_p99_us)));
    const cpt = (p) => (get(t, p) ? (get(t, p).cpu_s * 1e6) / (get(t, p).requests * (streamTokens[p] ?? STREAM_TOKENS)) : undefined);
    row('  server CPU us / token', P.map((p) => f(cpt(p), 3)), '<= 1.000', verdict(proxyHas(t) ? cpt('proxy') <= 1 : null));
    const ct = proxyHas(t) && cpt('nginx') ? cpt('proxy') / cpt('nginx') : undefined;
    row('  proxy CPU / token / nginx CPU / token', ['-', '-', f(ct, 2)], '<= 0.50', verdict(ct === undefined ? null : ct <= 0.5));
  }
  {
    const t = 'p64';
    const cpt = (p) => (get(t, p) ? (get(t, p).cpu_s * 1e6) / (get(t, p).requests * (streamTokens[p] ?? STREAM_TOKENS)) : undefined);
    row(`paced stream x 64, 1 token/${PACED_DELAY_US} us: tok/s`, P.map((p) => f(get(t, p) ? get(t, p).rps * (streamTokens[p] ?? STREAM_TOKENS) : undefined)), 'info');
    row('  p50 ms', P.map((p) => ms(get(t, p)?.lat_p50_us)));
    row('  server CPU us / token (one read per token)', P.map((p) => f(cpt(p), 3)), '(<= 1.000)', 'info');
  }
  rows.push(null);

  row(`${HOLD_N} held slow streams: held`, P.map((p) => (H[p] ? `${H[p].ok ?? 0}/${HOLD_N}` : 'n/a')));
  row('  server RSS idle MiB', P.map((p) => f(H[p]?.idle_kib / 1024, 1)));
  row('  server RSS held MiB', P.map((p) => f(H[p]?.held_kib / 1024, 1)));
  const pk = H.proxy?.per_stream_kib;
  row('  KiB per held stream', P.map((p) => f(H[p]?.per_stream_kib, 2)), '<= 4', verdict(pk === undefined || Number.isNaN(pk) ? null : pk <= 4));
  row('  upstream streams left 20s after close', ['-', ...['nginx', 'proxy'].map((p) => (H[p] ? String(H[p].upstream_left) : 'n/a'))]);
  rows.push(null);

  const errs = (p) => {
    let n = 0, any = false;
    for (const t of Object.keys(R)) if (R[t][p]) { any = true; n += R[t][p].errors; }
    return any ? String(n) : 'n/a';
  };
  row('wrk errors (socket + non-2xx), all runs', P.map(errs), '0', verdict(servers.proxy ? errs('proxy') === '0' : null));
  const maxOf = (p, k) => {
    let m;
    for (const t of Object.keys(R)) if (R[t][p] && Number.isFinite(R[t][p][k])) m = Math.max(m ?? -Infinity, R[t][p][k]);
    return m;
  };
  row('noise: other processes\' CPU, max % of 1 CPU', P.map((p) => f(maxOf(p, 'foreign_cpu_pct'), 0)), 'low', 'info');
  row('noise: VM steal, max % of 1 CPU', P.map((p) => f(maxOf(p, 'steal_pct'), 0)), 'low', 'info');

  const head = ['metric', 'direct', 'nginx', 'vllm-proxy', 'target', 'result'];
  const w = [44, 11, 11, 11, 10, 8];
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(' ').trimEnd();
  const sep = '-'.repeat(w.reduce((a, b) => a + b + 1, -1));
  return [line(head), sep, ...rows.map((r) => (r ? line(r) : sep)), sep].join('\n');
}

// The pool of two engines (issue 12): the same signed-JSON and 64-stream runs through nginx
// with an upstream of both (least_conn) and through vllm-proxy with VLLM_BACKEND_URLS of both,
// beside the one-engine figures of the same run. Target: the pool costs at most 2 us of
// server CPU per request over one engine.
function poolTable(R) {
  const rows = [];
  const get = (t, p) => R[t]?.[p];
  const cpr = (t, p) => (get(t, p) ? (get(t, p).cpu_s * 1e6) / get(t, p).requests : undefined);
  const verdict = (ok) => (ok === null ? 'n/a' : ok ? 'MET' : 'NOT MET');
  const P = ['nginx', 'nginx2', 'proxy', 'proxy2'];
  const row = (label, vals, target = '', v = '') => rows.push([label, ...vals, target, v]);
  for (const [t, what] of [['ns64', '64 conn, non-stream (signed JSON)'], ['s64', 'stream 512 tok x 64 conc']]) {
    row(`${what}: answers/s`, P.map((p) => f(get(t, p)?.rps, t === 's64' ? 1 : 0)));
    row('  p50 ms', P.map((p) => ms(get(t, p)?.lat_p50_us)));
    row('  p99 ms', P.map((p) => ms(get(t, p)?.lat_p99_us)));
    row('  server CPU us / answer', P.map((p) => f(cpr(t, p), 1)));
    const d = get(t, 'proxy2') && get(t, 'proxy') ? cpr(t, 'proxy2') - cpr(t, 'proxy') : undefined;
    row('  pool - one engine, CPU us / answer', [f(get(t, 'nginx2') && get(t, 'nginx') ? cpr(t, 'nginx2') - cpr(t, 'nginx') : undefined, 1), '-', f(d, 1), '-'],
      '<= 2', verdict(d === undefined ? null : d <= 2));
    row('  wrk errors', P.map((p) => (get(t, p) ? String(get(t, p).errors) : 'n/a')));
    rows.push(null);
  }
  rows.pop();
  const head = ['pool of two engines (mock-vllm x 2)', 'nginx 1', 'nginx 2', 'proxy 1', 'proxy 2', 'target', 'result'];
  const w = [40, 9, 9, 9, 9, 7, 8];
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(' ').trimEnd();
  const sep = '-'.repeat(w.reduce((a, b) => a + b + 1, -1));
  return [line(head), sep, ...rows.map((r) => (r ? line(r) : sep)), sep,
    '"nginx 2": nginx with an upstream of both engines (least_conn); "proxy 2": VLLM_BACKEND_URLS of both;',
    '"1": the same server with one engine, measured in the same run. CPU: the server\'s own, not the engines\'.'].join('\n');
}

// ---------- main ----------
async function main() {
  const t0 = Date.now();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await pickPorts();
  await startServers();
  const paths = Object.keys(servers).filter((p) => !POOL_PATHS.includes(p));
  const poolPaths = POOL_PATHS.filter((p) => servers[p]);
  for (const p of [...paths, ...poolPaths]) {
    try { await preflight(p); } catch (e) {
      log(`preflight failed: ${e.message}`);
      notes.push(`preflight failed: ${e.message}`);
      if (POOL_PATHS.includes(p)) { delete servers[p]; poolPaths.splice(poolPaths.indexOf(p), 1); }
      else if (p !== 'direct') { delete servers[p]; paths.splice(paths.indexOf(p), 1); } else throw e;
    }
  }
  // warm-up: fill keep-alive pools, fault in buffers
  for (const p of [...paths, ...poolPaths]) wrk(p, 'nonstream', 64, 1);

  const tests = [
    ['ns1', 'nonstream', 1, true], ['s1', 'stream', 1, true], ['ns64', 'nonstream', 64, false],
    ['s16', 'stream', 16, false], ['s64', 'stream', 64, false], ['p64', 'paced', 64, false],
  ];
  const R = {};
  for (const [id, body, conns, lat] of tests) {
    R[id] = {};
    const cpus = lat ? LAT_CPUS : LOAD_CPUS;
    setAffinity(lat ? LAT_CPUS : SERVER_CPUS);
    // the signed-JSON and 64-stream runs also through the pools of two engines, right after
    for (const p of id === 'ns64' || id === 's64' ? [...paths, ...poolPaths] : paths) {
      if (servers[p].proc.exited) { notes.push(`${p} is not running (exited ${JSON.stringify(servers[p].proc.exited)}) before test ${id}`); continue; }
      const j = wrk(p, body, conns, SECONDS, cpus);
      R[id][p] = j;
      log(`${id} ${p}: ${f(j.rps)} req/s p50 ${ms(j.lat_p50_us)} ms p99 ${ms(j.lat_p99_us)} ms cpu ${j.cpu_s}s mock ${j.mock_cpu_s}s wrk ${j.wrk_cpu_s}s other ${f(j.foreign_cpu_pct)}% steal ${f(j.steal_pct)}% errors ${j.errors}`);
      if (j.errors) notes.push(`${id} via ${p}: wrk errors connect=${j.err_connect} read=${j.err_read} write=${j.err_write} non-2xx=${j.err_status} timeout=${j.err_timeout} of ${j.requests} responses`);
      if (j.crashed) notes.push(`${p} exited during ${id}: ${JSON.stringify(servers[p].proc.exited)}; log tail: ${tail(p === 'proxy' ? 'vllm-proxy' : p, 5)}`);
    }
  }
  const H = {};
  if (HOLD_N > 0) {
    for (const p of paths) {
      if (servers[p].proc.exited) continue;
      H[p] = await holdTest(p);
      log(`hold ${p}: ${JSON.stringify(H[p])}`);
      if (H[p].error) notes.push(`hold via ${p}: ${H[p].error}`);
      if (H[p].failed) notes.push(`hold via ${p}: ${H[p].failed} of ${HOLD_N} streams failed or closed early${H[p].holder_stderr ? ' (' + H[p].holder_stderr + ')' : ''}`);
      if (p !== 'direct' && H[p].upstream_left) notes.push(`hold via ${p}: ${H[p].upstream_left} engine streams still active ${H[p].drain_ms} ms after the clients closed`);
    }
  }
  for (const p of paths) {
    if (servers[p].proc.exited) notes.push(`${p} exited during the run: ${JSON.stringify(servers[p].proc.exited)}`);
  }

  const pin = PIN_MODE === 'one' ? 'BENCH_PIN=one: every process (servers, mock-vllm, wrk, holder) on CPU 0'
    : SERVER_CPUS ? `BENCH_PIN=split: 1-conn latency: every process on CPU ${LAT_CPUS}; other runs: server under test (nginx / vllm-proxy) on CPU ${SERVER_CPUS}, mock-vllm + wrk + holder on CPU ${LOAD_CPUS}` : 'no CPU pinning';
  const header = [
    `vllm-proxy benchmark  ${date}  (${((Date.now() - t0) / 1000).toFixed(0)} s)`,
    `machine: ${os.cpus().length} x ${os.cpus()[0].model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}`,
    `workers: nginx worker_processes ${WORKERS}, vllm-proxy --workers ${WORKERS}`,
    `pinning: ${pin}`,
    `each load run ${SECONDS} s (BENCH_SECONDS); wrk -t${WRK_THREADS}; streams = ${streamTokens.direct ?? STREAM_TOKENS} content tokens; held streams: ${HOLD_N} with mock_delay_us ${HOLD_DELAY_US}`,
    `CPU = utime+stime from /proc/<pid>/stat (all processes of the server) / completed requests; RSS = VmRSS`,
  ].join('\n');
  const S = signPrimitives(SERVER_CPUS);
  log(`signatures alone: ${JSON.stringify(S)}`);
  if (!S) notes.push('bench/sign gave no result: the signature budget rows are n/a');
  const table = buildTable(R, H, S) + (poolPaths.length ? '\n\n' + poolTable(R) : '');
  const text = `${header}\n\n${table}\n${notes.length ? '\nnotes:\n' + notes.map((n) => '  - ' + n).join('\n') + '\n' : ''}`;
  process.stdout.write(text);
  fs.writeFileSync(path.join(OUT, 'last-run.txt'), text);
  fs.writeFileSync(path.join(OUT, 'last-run.json'), JSON.stringify({ date, seconds: SECONDS, workers: WORKERS, pin, streamTokens, results: R, hold: H, sign: S, notes }, null, 1));
  log(`written bench/out/last-run.txt and last-run.json${E.BENCH_KEEP === '1' ? `; logs in ${TMP}` : ''}`);
  // BENCH_STRICT=1: exit 1 when a target is not met or the proxy could not be measured
  if (E.BENCH_STRICT === '1' && (/NOT MET/.test(table) || !servers.proxy)) process.exitCode = 1;
}

main().then(() => {
  stopAll();
  setTimeout(() => {
    if (E.BENCH_KEEP !== '1') fs.rmSync(TMP, { recursive: true, force: true }); // logs kept on failure
    process.exit(process.exitCode || 0);
  }, 300);
}, (e) => {
  log(`FAILED: ${e.stack || e.message}`);
  stopAll();
  setTimeout(() => process.exit(1), 300);
});
