// Rate limits (RATE_LIMIT_*, TRUSTED_PROXIES / TRUSTED_PROXY_HOPS) and the operability details
// of issue 12 item 5: a second instance on the same address refused, engine failures at WARN
// with their cause, the request line's bytes and client address, LOG_FORMAT=json, X-Request-Id
// on every kind of answer (and in its log line), Allow on 405, Date.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { binary, freePort, sleep, startMock, startProxy, startStack, OTHER_TOKEN, TOKEN } from './lib/harness.mjs';
import { getPath, jsonOf, postJson, rawRequest, RawConn } from './lib/http.mjs';
import { assertOpenAIError, poll, stopAndCheck } from './lib/common.mjs';

const CHAT = { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] };
const RID_RE = /^[0-9a-f]{32}$/;

function assertDate(res) {
  const d = res.headers.date;
  assert.ok(d, 'Date header');
  assert.match(d, /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/);
  assert.ok(Math.abs(Date.parse(d) - Date.now()) < 60000, `Date ${d} is now`);
}

function assert429(res, code) {
  const e = assertOpenAIError(res, 429, { type: 'rate_limit_exceeded' });
  assert.equal(e.code, code);
  const ra = res.headers['retry-after'];
  assert.match(ra ?? '', /^[1-9][0-9]*$/, `Retry-After: ${ra}`);
  assert.match(res.headers['x-request-id'] ?? '', RID_RE);
  assertDate(res);
  return Number(ra);
}

async function metric(port, line) {
  const r = await getPath(port, '/v1/metrics');
  const m = r.body.toString().match(new RegExp(`^${line.replace(/[{}"\\]/g, '\\$&')} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : null;
}

// ---- per client address ----

test('per client address: burst, then 429 rate_limit_client_ip with Retry-After; nothing forwarded; refills at the rate', async () => {
  const s = await startStack({ proxy: { env: { RATE_LIMIT_IP_PER_MINUTE: 60, RATE_LIMIT_IP_BURST: 3 } } });
  try {
    for (let i = 0; i < 3; i++) assert.equal((await getPath(s.port, '/v1/models')).status, 200);
    const before = (await s.mock.stats()).requests;
    const r = await getPath(s.port, '/v1/models');
    const ra = assert429(r, 'rate_limit_client_ip');
    assert.equal(ra, 1); // one a second
    // A POST over the limit is answered at its headers: its body is never read or forwarded.
    const p = await postJson(s.port, '/v1/chat/completions', CHAT);
    assert429(p, 'rate_limit_client_ip');
    assert.equal(p.headers.connection, 'close');
    assert.equal((await s.mock.stats()).requests, before, 'nothing reached the engine');
    // Probes and the version are not limited.
    for (let i = 0; i < 5; i++) {
      assert.equal((await rawRequest(s.port, { path: '/' })).status, 200);
      assert.equal((await rawRequest(s.port, { path: '/version' })).status, 200);
    }
    assert.equal(await metric(s.port, 'vllm_proxy_rate_limited_total{reason="rate_limited_ip"}'), 2);
    assert.equal(await metric(s.port, 'vllm_proxy_rate_limited_total{reason="rate_limited_token"}'), 0);
    await sleep(ra * 1000 + 50); // Retry-After is honest: one request passes again, then not
    assert.equal((await getPath(s.port, '/v1/models')).status, 200);
    assert429(await getPath(s.port, '/v1/models'), 'rate_limit_client_ip');
  } finally {
    await stopAndCheck(s);
  }
});

test('X-Forwarded-For is honoured only from a trusted hop, right-most untrusted address', async () => {
  const mock = await startMock();
  const limits = { RATE_LIMIT_IP_PER_MINUTE: 6, RATE_LIMIT_IP_BURST: 2, LOG_LEVEL: 'info' };
  // Not trusted: 127.0.0.1 is not in TRUSTED_PROXIES, so every spoofed address is the peer's.
  const untrusted = await startProxy(mock.url, { env: { ...limits, TRUSTED_PROXIES: '10.0.0.0/8, fd00::/8' } });
  const trusted = await startProxy(mock.url, { env: { ...limits, TRUSTED_PROXIES: '10.0.0.0/8,127.0.0.1' } });
  const hops = await startProxy(mock.url, { env: { ...limits, TRUSTED_PROXY_HOPS: 2 } });
  try {
    const via = (port, xff, extra = {}) => getPath(port, '/v1/models', { headers: { 'X-Forwarded-For': xff, ...extra } });
    assert.equal((await via(untrusted.port, '198.51.100.1')).status, 200);
    assert.equal((await via(untrusted.port, '198.51.100.2')).status, 200);
    assert429(await via(untrusted.port, '198.51.100.3'), 'rate_limit_client_ip');
    assert429(await getPath(untrusted.port, '/v1/models', { headers: { 'X-Real-IP': '198.51.100.4' } }), 'rate_limit_client_ip');

    // Trusted peer: each address its own bucket.
    for (let i = 1; i <= 6; i++) assert.equal((await via(trusted.port, `198.51.100.${i}`)).status, 200);
    // The left part is the client's to forge: the address our hop appended is the one counted.
    assert.equal((await via(trusted.port, '6.6.6.6, 203.0.113.9')).status, 200);
    assert.equal((await via(trusted.port, '7.7.7.7, 203.0.113.9, 10.1.2.3')).status, 200); // 10/8: ours
    const r = await via(trusted.port, '8.8.8.8,203.0.113.9');
    assert429(r, 'rate_limit_client_ip');
    // X-Real-IP from a trusted peer without X-Forwarded-For.
    const xr = (a) => getPath(trusted.port, '/v1/models', { headers: { 'X-Real-IP': a } });
    assert.equal((await xr('192.0.2.50')).status, 200);
    assert.equal((await xr('192.0.2.50')).status, 200);
    assert429(await xr('192.0.2.50'), 'rate_limit_client_ip');
    // The log line names the client and, since it differs, the peer.
    const rid = r.headers['x-request-id'];
    await poll(() => trusted.stderr().includes(`request_id=${rid}`));
    const line = trusted.stderr().split('\n').find((l) => l.includes(`request_id=${rid}`));
    assert.match(line, / status=429 .* client=203\.0\.113\.9 peer=127\.0\.0\.1/);

    // Hops by count: the peer and the right-most entry are ours, the next one is the client.
    assert.equal((await via(hops.port, '203.0.113.1, 10.0.0.1')).status, 200);
    assert.equal((await via(hops.port, '203.0.113.1, 10.0.0.2')).status, 200);
    assert429(await via(hops.port, '203.0.113.1, 10.0.0.3'), 'rate_limit_client_ip');
    assert.equal((await via(hops.port, '203.0.113.2, 10.0.0.3')).status, 200);
  } finally {
    for (const p of [untrusted, trusted, hops]) await p.stop();
    await mock.stop();
  }
});

test('per token: each token its own bucket, 429 rate_limit_token; a wrong token is 401, not counted', async () => {
  const s = await startStack({ proxy: { env: { RATE_LIMIT_TOKEN_PER_MINUTE: 30, RATE_LIMIT_TOKEN_BURST: 2 } } });
  try {
    assert.equal((await postJson(s.port, '/v1/chat/completions', CHAT)).status, 200);
    // /v1/models takes no token: only the address limit could apply to it
    for (let i = 0; i < 3; i++) assert.equal((await getPath(s.port, '/v1/models')).status, 200);
    assert.equal((await getPath(s.port, '/v1/signature/none')).status, 404);
    const r = await postJson(s.port, '/v1/chat/completions', CHAT);
    const ra = assert429(r, 'rate_limit_token');
    assert.equal(ra, 2); // one per 2 s
    assert.equal((await postJson(s.port, '/v1/chat/completions', CHAT, { token: OTHER_TOKEN })).status, 200);
    assert.equal((await postJson(s.port, '/v1/chat/completions', CHAT, { token: 'nope' })).status, 401);
    assert.equal(await metric(s.port, 'vllm_proxy_rate_limited_total{reason="rate_limited_token"}'), 1);
    assert.equal(await metric(s.port, 'vllm_proxy_rate_limited_total{reason="rate_limited_ip"}'), 0);
  } finally {
    await stopAndCheck(s);
  }
});

// 100k distinct spoofed addresses from a trusted hop, pipelined on a few connections: every
// one is a new client (its first request passes), the process's RSS does not grow with them,
// and an address kept busy stays limited.
function rssKiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]);
}

async function flood(port, from, count, conns = 4, batch = 500) {
  const statuses = {};
  const per = Math.ceil(count / conns);
  await Promise.all(Array.from({ length: conns }, async (_, ci) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    let buf = '';
    let seen = 0;
    let want = 0;
    let wake = null;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let m;
      const re = /HTTP\/1\.1 (\d{3}) [^\r]*\r\n(?:[^\r]+\r\n)*?Content-Length: (\d+)\r\n(?:[^\r]+\r\n)*\r\n/y;
      for (;;) {
        re.lastIndex = 0;
        m = re.exec(buf);
        if (!m) break;
        const end = m[0].length + Number(m[2]);
        if (buf.length < end) break;
        statuses[m[1]] = (statuses[m[1]] ?? 0) + 1;
        buf = buf.slice(end);
        seen++;
      }
      if (wake && seen >= want) wake();
    });
    for (let i = ci * per; i < Math.min(count, (ci + 1) * per); i += batch) {
      let out = '';
      const n = Math.min(batch, Math.min(count, (ci + 1) * per) - i);
      for (let k = 0; k < n; k++) {
        const v = from + i + k;
        const a = `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`;
        out += `GET /v1/signature/none HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${TOKEN}\r\nX-Forwarded-For: ${a}\r\n\r\n`;
      }
      want += n;
      sock.write(out);
      if (seen < want) await new Promise((r) => { wake = r; });
      wake = null;
    }
    sock.destroy();
  }));
  return statuses;
}

test('memory stays bounded with 100k distinct client addresses (spoofed X-Forwarded-For from a trusted hop)', async () => {
  const s = await startStack({
    proxy: { env: { RATE_LIMIT_IP_PER_MINUTE: 60, RATE_LIMIT_IP_BURST: 2, RATE_LIMIT_IP_TABLE: 4096, TRUSTED_PROXIES: '127.0.0.1', WORKERS: 2 } },
  });
  try {
    const pid = s.proxy.child.proc.pid;
    let st = await flood(s.port, 0, 20000); // warm-up: buffers, connections, the table's pages
    assert.deepEqual(st, { 404: 20000 });
    const rss0 = rssKiB(pid);
    st = await flood(s.port, 20000, 100000);
    const rss1 = rssKiB(pid);
    // Every address new: none refused (a 24-bit tag collision could refuse one, rarely).
    assert.ok((st['404'] ?? 0) >= 99998 && (st['429'] ?? 0) <= 2, JSON.stringify(st));
    // 100k addresses kept at even 16 bytes each would be 1.6 MB; the table is 32 KiB.
    assert.ok(rss1 - rss0 < 1024, `RSS grew ${rss1 - rss0} KiB (${rss0} -> ${rss1}) over 100k addresses`);
    // A busy address is still limited right after the flood.
    const busy = () => getPath(s.port, '/v1/signature/none', { headers: { 'X-Forwarded-For': '192.0.2.99' } });
    assert.equal((await busy()).status, 404);
    assert.equal((await busy()).status, 404);
    assert429(await busy(), 'rate_limit_client_ip');
    console.log(`# RSS ${rss0} KiB after 20k addresses, ${rss1} KiB after 100k more`);
  } finally {
    await stopAndCheck(s);
  }
});

// ---- operability ----

test('a second vllm-proxy on an address already served refuses to start', async () => {
  const s = await startStack();
  try {
    const r = spawnSync(binary('vllm-proxy'), [], { env: s.proxy.env, encoding: 'utf8', timeout: 15000 });
    assert.equal(r.status, 1, `exit ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${s.port} is already in use \\(another vllm-proxy\\?.*refusing to start`));
    // The first one still answers, alone.
    assert.equal((await postJson(s.port, '/v1/chat/completions', CHAT)).status, 200);
    // The wildcard address overlaps too.
    const w = spawnSync(binary('vllm-proxy'), [], { env: { ...s.proxy.env, LISTEN_HOST: '0.0.0.0' }, encoding: 'utf8', timeout: 15000 });
    assert.equal(w.status, 1, w.stderr);
    assert.match(w.stderr, /already in use/);
  } finally {
    await stopAndCheck(s);
  }
});

test('an engine failure is a WARN line with its cause, at LOG_LEVEL=warning', async () => {
  const dead = await freePort(); // nothing listens there
  const p = await startProxy(`http://127.0.0.1:${dead}`, { env: { LOG_LEVEL: 'warning' } });
  try {
    const r = await postJson(p.port, '/v1/chat/completions', CHAT);
    assertOpenAIError(r, 502);
    const rid = r.headers['x-request-id'];
    await poll(() => p.stderr().includes(rid));
    const line = p.stderr().split('\n').find((l) => l.includes(rid));
    assert.match(line, /WARN +engine request for \/v1\/chat\/completions failed: cannot connect: connection refused \(answering 502\)/);
    assert.doesNotMatch(p.stderr(), / INFO /, 'nothing below WARN');
  } finally {
    await p.stop();
  }
});

test('X-Request-Id on every kind of answer, the same in its log line with the client address and the bytes sent', async () => {
  const s = await startStack({ proxy: { env: { LOG_LEVEL: 'info', RATE_LIMIT_TOKEN_PER_MINUTE: 1, RATE_LIMIT_TOKEN_BURST: 100 } } });
  try {
    const logLine = async (rid) => {
      await poll(() => s.proxy.stderr().includes(`request_id=${rid}`));
      return s.proxy.stderr().split('\n').find((l) => l.includes(`request_id=${rid}`));
    };
    const cases = [
      ['engine 200', () => postJson(s.port, '/v1/chat/completions', CHAT), 200],
      ['engine stream', () => postJson(s.port, '/v1/chat/completions', { ...CHAT, stream: true }), 200],
      ['404', () => getPath(s.port, '/nope'), 404],
      ['405', () => getPath(s.port, '/v1/chat/completions'), 405],
      ['401', () => postJson(s.port, '/v1/chat/completions', CHAT, { token: null }), 401],
      ['400 json', () => postJson(s.port, '/v1/chat/completions', '{bad'), 400],
      ['signature 404', () => getPath(s.port, '/v1/signature/missing'), 404],
      ['version', () => rawRequest(s.port, { path: '/version' }), 200],
      ['metrics', () => getPath(s.port, '/v1/metrics'), 200],
      ['report', () => getPath(s.port, `/v1/attestation/report?nonce=${'ab'.repeat(32)}`), 200],
    ];
    for (const [name, fn, status] of cases) {
      const r = await fn();
      assert.equal(r.status, status, `${name}: ${r.status} ${r.body.toString().slice(0, 200)}`);
      const rid = r.headers['x-request-id'];
      assert.match(rid ?? '', RID_RE, `${name}: X-Request-Id`);
      assertDate(r);
      const line = await logLine(rid);
      assert.match(line, new RegExp(` status=${status} .* out=${r.body.length} .*request_id=${rid} client=127\\.0\\.0\\.1`), `${name}: ${line}`);
    }
    // 405 names the method the route takes.
    assert.equal((await getPath(s.port, '/v1/chat/completions')).headers.allow, 'POST');
    assert.equal((await rawRequest(s.port, { method: 'POST', path: '/version' })).headers.allow, 'GET');
    assert.equal((await rawRequest(s.port, { method: 'DELETE', path: '/v1/models' })).headers.allow, 'GET');
    // A client's X-Request-Id is kept for tracing, in front of the proxy's random part: it never
    // decides the chat id (the record's key).
    const t = await postJson(s.port, '/v1/chat/completions', CHAT, { headers: { 'X-Request-Id': 'trace-42' } });
    const tid = t.headers['x-request-id'];
    assert.match(tid, /^trace-42-[0-9a-f]{32}$/);
    assert.equal(jsonOf(t).id, `chatcmpl-${tid}`);
    const t2 = await postJson(s.port, '/v1/chat/completions', CHAT, { headers: { 'X-Request-Id': 'trace-42' } });
    assert.notEqual(jsonOf(t2).id, jsonOf(t).id);
    const bad = await postJson(s.port, '/v1/chat/completions', CHAT, { headers: { 'X-Request-Id': 'a b/c' } });
    assert.match(bad.headers['x-request-id'], RID_RE); // not a plain value: not kept
    // The transport's own refusals (no route ever saw them): malformed, then too large a head.
    for (const raw of ['GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n',
      `GET /${'x'.repeat(20000)} HTTP/1.1\r\nHost: a\r\n\r\n`]) {
      const c = new RawConn(s.port);
      await c.writeRaw(raw);
      await poll(() => c.closed || c.buf.length > 0, { timeoutMs: 3000 });
      await sleep(50);
      const text = c.buf.toString('latin1');
      c.close();
      const m = text.match(/^HTTP\/1\.1 (\d{3})[^]*?\r\nX-Request-Id: ([0-9a-f]{32})\r\n/);
      assert.ok(m, `refusal carries X-Request-Id: ${text.slice(0, 200)}`);
      assert.match(text, /\r\nDate: /);
      const bodyLen = text.length - text.indexOf('\r\n\r\n') - 4;
      const line = await logLine(m[2]);
      assert.match(line, new RegExp(`rejected .*status=${m[1]} .*out=${bodyLen} request_id=${m[2]} client=127\\.0\\.0\\.1`));
    }
  } finally {
    await stopAndCheck(s);
  }
});

test('LOG_FORMAT=json: every line one JSON object with the documented members', async () => {
  const s = await startStack({ proxy: { env: { LOG_LEVEL: 'info', LOG_FORMAT: 'json', RATE_LIMIT_IP_PER_MINUTE: 60, RATE_LIMIT_IP_BURST: 3 } } });
  let rids = [];
  try {
    const a = await postJson(s.port, '/v1/chat/completions', CHAT);
    const b = await getPath(s.port, '/no/such\\path"');
    await getPath(s.port, '/v1/models');
    const c = await getPath(s.port, '/v1/models');
    const d = await getPath(s.port, '/v1/models');
    assert.equal(d.status, 429);
    rids = [a, b, c, d].map((r) => r.headers['x-request-id']);
    await poll(() => rids.every((r) => s.proxy.stderr().includes(r)));
  } finally {
    await stopAndCheck(s);
  }
  const lines = s.proxy.stderr().split('\n').filter((l) => l.length);
  assert.ok(lines.length > 10);
  const objs = lines.map((l) => {
    try { return JSON.parse(l); } catch (e) { throw new Error(`not JSON: ${l}`); }
  });
  for (const o of objs) {
    assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(['DEBUG', 'INFO', 'WARN', 'ERROR'].includes(o.level));
    assert.equal(typeof o.msg, 'string');
  }
  assert.ok(objs.some((o) => o.level === 'WARN' && /SIMULATED/.test(o.msg)), 'start-up lines are JSON too');
  const req = objs.filter((o) => o.msg === 'request');
  const byRid = Object.fromEntries(req.map((o) => [o.request_id, o]));
  const [a, b, c, d] = rids.map((r) => byRid[r]);
  for (const o of [a, b, c, d]) {
    assert.ok(o, 'a request line per request');
    for (const k of ['worker', 'method', 'path', 'status', 'upstream_status', 'bytes_in', 'bytes_out', 'ms', 'id', 'request_id', 'client'])
      assert.ok(k in o, `member ${k}`);
    assert.equal(o.client, '127.0.0.1');
  }
  assert.equal(a.status, 200);
  assert.equal(a.upstream_status, 200);
  assert.match(a.id, /^chatcmpl-/);
  assert.equal(a.method, 'POST');
  assert.equal(b.path, '/no/such\\path"'); // escaped in the line, whole after parsing
  assert.equal(b.status, 404);
  assert.equal(b.upstream_status, null);
  assert.equal(b.id, null);
  assert.ok(b.bytes_out > 0);
  assert.equal(d.status, 429);
});

test('MAX_CONNECTIONS refusal (503 at accept) carries X-Request-Id and Date too', async () => {
  const s = await startStack({ proxy: { env: { MAX_CONNECTIONS: 1, WORKERS: 1 } } });
  try {
    const held = new RawConn(s.port);
    assert.equal((await held.request({ path: '/' })).status, 200); // holds the one slot
    const c = new RawConn(s.port);
    await c.connect();
    await poll(() => c.closed, { timeoutMs: 3000 });
    const text = c.buf.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 503 /);
    assert.match(text, /\r\nX-Request-Id: [0-9a-f]{32}\r\n/);
    assert.match(text, /\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n/);
    held.close();
  } finally {
    await stopAndCheck(s);
  }
});
