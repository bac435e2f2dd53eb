// Starts the real binaries (mock-vllm and vllm-proxy) on free loopback ports for the
// integration suites, waits until they answer, keeps their stderr for assertions and kills
// them afterwards. Binaries come from ../../build, or from $VP_BUILD_DIR (e.g. build-san).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rawRequest } from './http.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..', '..');
export const BUILD_DIR = process.env.VP_BUILD_DIR
  ? path.resolve(REPO_ROOT, process.env.VP_BUILD_DIR)
  : path.join(REPO_ROOT, 'build');

export const MODEL = 'test-model';
export const TOKEN = 'test_token';
export const OTHER_TOKEN = 'other_token';
export const TRUSTED_TOKEN = 'trusted_token';

// Every variable the proxy reads; removed from the inherited environment so a developer's
// shell cannot change what the tests see.
const PROXY_ENV_KEYS = [
  'LISTEN_HOST', 'LISTEN_PORT', 'VLLM_BASE_URL', 'VLLM_API_KEY', 'MODEL_NAME', 'TOKEN',
  'TRUSTED_REQUEST_HASH_TOKENS', 'WORKERS', 'ATTESTATION', 'DEV', 'CHAT_CACHE_EXPIRATION',
  'CHAT_CACHE_CAPACITY', 'VLLM_PROXY_MAX_REQUEST_SIZE', 'LOG_LEVEL', 'REDIS_HOST', 'REDIS_PORT',
  'REDIS_DB', 'REDIS_PASSWORD', 'GPU_NO_HW_MODE', 'DSTACK_SIMULATOR_ENDPOINT', 'AUTH_TOKEN',
  'SIGNING_METHOD', 'E2EE_THREADS', 'E2EE_THREAD_NICE', 'VLLM_PROXY_MAX_IMAGE_REQUEST_SIZE',
  'VLLM_PROXY_MAX_AUDIO_REQUEST_SIZE', 'TLS_CERT_CHECK_INTERVAL', 'CACHE_SALT_SECRET',
  'GPU_NONCE_RETRIES', 'E2EE_REPLAY_WINDOW', 'ACI_KEYSET_TTL',
  'SIGNED_TEXT', 'EVENT_LOG_FORMAT', 'PUBLIC_ATTESTATION', 'LOG_FORMAT', 'RATE_LIMIT_IP_PER_MINUTE',
  'RATE_LIMIT_IP_BURST', 'RATE_LIMIT_IP_TABLE', 'RATE_LIMIT_TOKEN_PER_MINUTE', 'RATE_LIMIT_TOKEN_BURST',
  'TRUSTED_PROXIES', 'TRUSTED_PROXY_HOPS',
  'VLLM_BACKEND_URLS', 'HEALTH_CHECK_PATH', 'HEALTH_CHECK_INTERVAL', 'HEALTH_CHECK_TIMEOUT',
  'HEALTH_CHECK_FAILURES', 'HEALTH_CHECK_SUCCESSES', 'ENGINE_CONNECT_FAILURES',
  'ENGINE_MAX_INFLIGHT', 'ENGINE_QUEUE_MAX', 'ENGINE_QUEUE_TIMEOUT', 'ENGINE_BUSY_AS_429',
];

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
});

export function binary(name) {
  const p = path.join(BUILD_DIR, name);
  if (!fs.existsSync(p)) throw new Error(`${p} does not exist: run \`make all\` first`);
  return p;
}

export function haveBinary(name) {
  return fs.existsSync(path.join(BUILD_DIR, name));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Child {
  constructor(name, args, env, wrap = []) {
    this.name = name;
    this.args = args;
    this.out = [];
    this.err = [];
    this.exited = null;
    // wrap: a command that execs the program in place (e.g. prlimit --nofile=N:N --), so the
    // process id stays the program's.
    this.proc = wrap.length
      ? spawn(wrap[0], [...wrap.slice(1), binary(name), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(binary(name), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.proc);
    this.proc.stdout.on('data', (d) => this.out.push(d));
    this.proc.stderr.on('data', (d) => this.err.push(d));
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        live.delete(this.proc);
        this.exited = { code, signal };
        resolve(this.exited);
      });
      this.proc.on('error', (e) => {
        live.delete(this.proc);
        this.exited = { error: e };
        resolve(this.exited);
      });
    });
  }

  stderr() { return Buffer.concat(this.err).toString('utf8'); }
  stdout() { return Buffer.concat(this.out).toString('utf8'); }

  async stop() {
    if (this.exited) return this.exited;
    this.stoppedByUs = true;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => { if (!this.exited) this.proc.kill('SIGKILL'); }, 3000);
    const r = await this.exitPromise;
    clearTimeout(t);
    return r;
  }

  describe() {
    return `${this.name} ${this.args.join(' ')}\n--- stderr ---\n${this.stderr().slice(-4000)}`;
  }
}

async function waitHttp(child, port, pathName, timeoutMs = 15000) {
  const t0 = Date.now();
  let last = '';
  while (Date.now() - t0 < timeoutMs) {
    if (child.exited) throw new Error(`${child.name} exited early (${JSON.stringify(child.exited)})\n${child.describe()}`);
    try {
      const r = await rawRequest(port, { method: 'GET', path: pathName, timeoutMs: 2000 });
      if (r.status === 200) return r;
      last = `status ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(50);
  }
  throw new Error(`${child.name} not ready on port ${port} ${pathName} after ${timeoutMs} ms (${last})\n${child.describe()}`);
}

/**
 * Starts mock-vllm. opts: args (extra CLI args), unix (socket path instead of TCP), port (a
 * given TCP port instead of a free one), model.
 * Returns {port, unix, child, stats(), last(), stop()}.
 */
export async function startMock(opts = {}) {
  const args = [];
  let port = null;
  if (opts.unix) args.push('--unix', opts.unix);
  else {
    port = opts.port ?? await freePort();
    args.push('--listen', `127.0.0.1:${port}`);
  }
  args.push('--model', opts.model ?? MODEL, ...(opts.args ?? []));
  const child = new Child('mock-vllm', args, { ...process.env, ...(opts.env ?? {}) });
  if (opts.unix) {
    const t0 = Date.now();
    while (!fs.existsSync(opts.unix)) {
      if (child.exited || Date.now() - t0 > 15000) throw new Error(`mock-vllm did not create ${opts.unix}\n${child.describe()}`);
      await sleep(50);
    }
  } else {
    await waitHttp(child, port, '/health');
  }
  const m = {
    port,
    unix: opts.unix ?? null,
    url: opts.unix ? `unix:${opts.unix}` : `http://127.0.0.1:${port}`,
    child,
    async stats() {
      const r = await rawRequest(port, { method: 'GET', path: '/mock/stats' });
      return JSON.parse(r.body.toString('utf8'));
    },
    async last() {
      const r = await rawRequest(port, { method: 'GET', path: '/mock/last' });
      if (r.status !== 200) return { status: r.status, body: r.body.toString() };
      return JSON.parse(r.body.toString('utf8'));
    },
    stop: () => child.stop(),
  };
  return m;
}

/**
 * Starts vllm-proxy in simulated-attestation mode against `upstream` (a URL).
 * opts.env overrides/extends the environment (a value of undefined removes the variable).
 * opts.wrap: a command prefix that execs the proxy (e.g. ['prlimit', '--nofile=256:256', '--']).
 * Returns {port, child, stderr(), stop()}.
 */
export async function startProxy(upstream, opts = {}) {
  const port = await freePort();
  const env = { ...process.env };
  for (const k of PROXY_ENV_KEYS) delete env[k];
  Object.assign(env, {
    LISTEN_HOST: '127.0.0.1',
    LISTEN_PORT: String(port),
    VLLM_BASE_URL: upstream,
    MODEL_NAME: MODEL,
    TOKEN: `${TOKEN},${OTHER_TOKEN},${TRUSTED_TOKEN}`,
    TRUSTED_REQUEST_HASH_TOKENS: TRUSTED_TOKEN,
    ATTESTATION: 'simulated',
    LOG_LEVEL: 'warn',
    WORKERS: String(Math.max(2, Math.min(4, os.cpus().length))),
  });
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = String(v);
  }
  const child = new Child('vllm-proxy', opts.args ?? [], env, opts.wrap ?? []);
  await waitHttp(child, port, '/', opts.readyTimeoutMs ?? 15000);
  return {
    port,
    child,
    env,
    baseURL: `http://127.0.0.1:${port}/v1`,
    stderr: () => child.stderr(),
    stop: () => child.stop(),
  };
}

/** mock-vllm + vllm-proxy in front of it. */
export async function startStack(opts = {}) {
  const mock = await startMock(opts.mock ?? {});
  let proxy;
  try {
    proxy = await startProxy(mock.url, opts.proxy ?? {});
  } catch (e) {
    await mock.stop();
    throw e;
  }
  return {
    mock,
    proxy,
    port: proxy.port,
    async stop() {
      await proxy.stop();
      await mock.stop();
    },
  };
}

/**
 * After stop(): the process was alive until we stopped it, left on SIGTERM by itself (exit 0
 * or the signal, within 3 s) and printed no sanitizer report.
 */
export function cleanExitProblems(child) {
  const problems = [];
  if (!child.exited) problems.push(`${child.name} still running`);
  else if (!child.stoppedByUs) problems.push(`${child.name} died before the end of the suite: ${JSON.stringify(child.exited)}`);
  else if (!(child.exited.code === 0 || child.exited.signal === 'SIGTERM')) problems.push(`${child.name} did not exit cleanly on SIGTERM: ${JSON.stringify(child.exited)}`);
  const err = child.stderr();
  for (const pat of [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/, /ThreadSanitizer/]) {
    if (pat.test(err)) problems.push(`${child.name} stderr has a sanitizer report (${pat.source})`);
  }
  return problems.length ? `${problems.join('; ')}\n${child.describe()}` : null;
}

/** Temporary directory for unix sockets. */
export function tmpDir(prefix = 'vp-it-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
