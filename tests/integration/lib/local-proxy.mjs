// Shared by the local verifying proxy's suites (issue 13): start `vllm-proxy-verify proxy`,
// the openai SDK pointed at it, and small readers of what the app sees.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import OpenAI from 'openai';
import { binary, freePort, sleep, TOKEN, MODEL } from './harness.mjs';
import { rawRequest } from './http.mjs';

/**
 * vllm-proxy-verify proxy URL --listen 127.0.0.1:PORT --token T ...args; ready when
 * /verification answers (and says verified, unless waitVerified is false). env: added to
 * the process environment. → {port, pid, child, baseURL, stderr(), status(), stop()}.
 */
export async function startLocal(remoteUrl, args = [], { waitVerified = true, env = {} } = {}) {
  const port = await freePort();
  const child = spawn(binary('vllm-proxy-verify'),
    ['proxy', remoteUrl, '--listen', `127.0.0.1:${port}`, '--token', TOKEN, ...args],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  const err = [];
  child.stderr.on('data', (d) => err.push(d));
  let exit = null;
  // 'close': the exit status and all of stderr (a sanitizer report is written at exit)
  const exited = new Promise((r) => child.on('close', (code, sig) => { exit = { code, sig }; r(exit); }));
  const lp = {
    port,
    pid: child.pid,
    child,
    baseURL: `http://127.0.0.1:${port}/v1`,
    exited: () => exit,
    stderr: () => Buffer.concat(err).toString('utf8'),
    status: async () => JSON.parse((await rawRequest(port, { path: '/verification' })).body.toString()),
    /** After stop(): null, or what went wrong (an exit other than 0 on SIGTERM, a sanitizer report). */
    problems() {
      const p = [];
      if (!exit) p.push('still running');
      else if (exit.code !== 0) p.push(`exit ${JSON.stringify(exit)}`);
      for (const pat of [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/, /ThreadSanitizer/]) if (pat.test(lp.stderr())) p.push(`sanitizer report (${pat.source})`);
      return p.length ? `${p.join('; ')}\n${lp.stderr().slice(-4000)}` : null;
    },
    async stop() {
      if (exit) return exit;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  const t0 = Date.now();
  for (;;) {
    try {
      const s = await lp.status();
      if (!waitVerified || s.verified) break;
    } catch { /* not listening yet */ }
    if (exit) throw new Error(`local proxy exited ${JSON.stringify(exit)}\n${lp.stderr()}`);
    if (Date.now() - t0 > 30000) throw new Error(`local proxy not ready\n${lp.stderr()}`);
    await sleep(50);
  }
  return lp;
}

/** Polls /verification until pred(doc) holds; returns the document. */
export async function waitStatus(lp, pred, timeoutMs = 30000) {
  const t0 = Date.now();
  for (;;) {
    const s = await lp.status();
    if (pred(s)) return s;
    if (Date.now() - t0 > timeoutMs) throw new Error(`status not reached in ${timeoutMs} ms: ${JSON.stringify(s).slice(0, 600)}`);
    await sleep(100);
  }
}

export const sdk = (lp, extra = {}) => new OpenAI({ baseURL: lp.baseURL, apiKey: 'unused-by-the-local-proxy', maxRetries: 0, ...extra });
export const chatReq = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 8, ...extra });
export const complReq = (extra = {}) => ({ model: MODEL, prompt: 'Say hello', max_tokens: 8, ...extra });

/** The text of an SDK stream (chat deltas or completion texts). */
export async function collect(stream) {
  let text = '';
  for await (const ev of stream) text += ev.choices?.[0]?.delta?.content ?? ev.choices?.[0]?.text ?? '';
  return text;
}

/** A POST of JSON to the local proxy on a fresh connection, read raw. */
export function post(lp, path, body, headers = {}, extra = {}) {
  return rawRequest(lp.port, { method: 'POST', path, headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

/** Open descriptors and threads of a process (Linux /proc). */
export function procCounts(pid) {
  return {
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
  };
}
