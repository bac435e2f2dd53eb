// The local verifying proxy (issue 13, docs/VERIFY.md "The local verifying proxy"), the cases
// local-proxy.test.mjs leaves out, each asserting what the app sees:
//   - a remote without in-band signatures (INBAND_SIGNATURES=off): every answer verified
//     through GET /v1/signature/{id} per algorithm on the pinned connection; another valid
//     record swapped in on that route is caught;
//   - a legitimate certificate rotation: the request that meets the new key triggers a
//     re-verification that binds it, and succeeds (generation +1, the new SPKI pinned);
//   - recovery after another certificate: served again after the next verification;
//   - --max-connections and the phase timeouts (VP_LP_TEST_TIMEOUTS_MS, tests only);
//   - DNS rebinding and browser requests: Host, Origin (also "null"), Sec-Fetch-Site;
//   - hostile app input: 431, 413, 400, pipelining, and 200 aborted requests without a
//     descriptor or thread left behind (/proc/<pid>/fd, /proc/<pid>/task).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { haveBinary, sleep, MODEL } from './lib/harness.mjs';
import { rawRequest } from './lib/http.mjs';
import { startRemote } from './lib/remote-tls.mjs';
import { startTamper } from './lib/tamper.mjs';
import { startLocal, waitStatus, sdk, chatReq, complReq, collect, post, procCounts } from './lib/local-proxy.mjs';

const have = haveBinary('vllm-proxy-verify');
const sigFetches = (t) => Object.entries(t.stats().requests).filter(([p]) => p.startsWith('/v1/signature/')).reduce((a, [, n]) => a + n, 0);

/** Raw bytes on one connection; resolves with everything read until the peer closes (or ms). */
function rawExchange(port, bytes, { ms = 10000, pace = null } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const got = [];
    const t0 = Date.now();
    const timer = setTimeout(() => { s.destroy(); resolve({ data: Buffer.concat(got), closed: false, ms: Date.now() - t0 }); }, ms);
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); resolve({ data: Buffer.concat(got), closed: true, ms: Date.now() - t0 }); });
    s.on('connect', async () => {
      try {
        if (pace) await pace(s);
        else if (bytes) s.write(bytes);
      } catch (e) { reject(e); }
    });
  });
}

/** Splits a sequence of Content-Length framed HTTP/1.1 answers. */
function splitAnswers(buf) {
  const out = [];
  let rest = buf;
  while (rest.length) {
    const i = rest.indexOf('\r\n\r\n');
    if (i < 0) break;
    const head = rest.subarray(0, i).toString('latin1');
    const status = Number(head.split(' ')[1]);
    const cl = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    out.push({ status, head, body: rest.subarray(i + 4, i + 4 + cl).toString() });
    rest = rest.subarray(i + 4 + cl);
  }
  return out;
}

describe('local verifying proxy: a remote without in-band signatures (the signature route)', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, tamper, lp;
  before(async () => {
    remote = await startRemote({ env: { INBAND_SIGNATURES: 'off' } });
    tamper = await startTamper({ target: remote, mode: 'pass' });
    lp = await startLocal(tamper.url, ['--allow-simulated']);
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    await tamper?.stop();
    await remote?.stop();
  });

  test('chat and completions, streamed and not: verified through GET /v1/signature/{id}, two fetches per answer', async () => {
    const client = sdk(lp);
    const v0 = (await lp.status()).answers.verified;
    const f0 = sigFetches(tamper);
    const r = await client.chat.completions.create(chatReq());
    assert.match(r.choices[0].message.content, /Hello/);
    assert.equal(sigFetches(tamper), f0 + 2, 'ecdsa and ed25519 fetched');
    assert.equal(await collect(await client.chat.completions.create(chatReq({ stream: true }))), r.choices[0].message.content);
    const c = await client.completions.create(complReq());
    assert.match(c.choices[0].text, /Hello/);
    assert.equal(await collect(await client.completions.create(complReq({ stream: true }))), c.choices[0].text);
    assert.equal(sigFetches(tamper), f0 + 8);
    const s = await lp.status();
    assert.equal(s.answers.verified, v0 + 4);
    assert.deepEqual(s.answers.last.slice(0, 4).map((a) => [a.route, a.stream, a.check ?? null]), [
      ['/v1/completions', true, null], ['/v1/completions', false, null],
      ['/v1/chat/completions', true, null], ['/v1/chat/completions', false, null]]);
    assert.equal(s.answers.last[3].id, r.id, 'the record id is the answer\'s');
    // the head says so: the remote's "unavailable; reason=disabled" is not passed on
    const raw = await post(lp, '/v1/chat/completions', chatReq());
    assert.equal(raw.status, 200);
    assert.equal(raw.headers['x-verify'], 'verified');
    assert.equal(raw.headers['x-signature-inband'], undefined);
  });

  test('one app connection, one reused curl handle: each request goes out with its own method, body and timeout (HEAD, POST, GET, DELETE in turn)', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const req = (method, p, body) => new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: lp.port, path: p, method, agent,
        headers: body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : {} }, (res) => {
        const c = [], port = res.socket.localPort;
        res.on('data', (d) => c.push(d));
        res.on('end', () => resolve({ status: res.statusCode, head: res.headers, body: Buffer.concat(c).toString(), port }));
      });
      r.on('error', reject);
      r.end(body);
    });
    const chat = JSON.stringify(chatReq());
    const n0 = tamper.stats().seq.length;
    const got = [];
    for (const [m, p, b] of [['HEAD', '/v1/models'], ['POST', '/v1/chat/completions', chat], ['GET', '/v1/models'],
      ['DELETE', '/v1/models'], ['POST', '/v1/chat/completions', chat], ['GET', '/v1/models']]) got.push(await req(m, p, b));
    agent.destroy();
    assert.equal(new Set(got.map((r) => r.port)).size, 1, 'one app connection throughout');
    assert.deepEqual(tamper.stats().seq.slice(n0), ['HEAD /v1/models', 'POST /v1/chat/completions', 'GET /v1/signature/*',
      'GET /v1/signature/*', 'GET /v1/models', 'DELETE /v1/models', 'POST /v1/chat/completions', 'GET /v1/signature/*',
      'GET /v1/signature/*', 'GET /v1/models']);
    for (const i of [1, 4]) {
      assert.equal(got[i].status, 200);
      assert.equal(got[i].head['x-verify'], 'verified');
      assert.match(JSON.parse(got[i].body).choices[0].message.content, /Hello/);
    }
    assert.equal(got[0].body, '');
    assert.equal(got[2].status, 200);
    assert.ok(JSON.parse(got[2].body).data.length > 0);
    assert.equal(got[5].status, 200);
    assert.equal(JSON.parse(got[5].body).data[0].id, JSON.parse(got[2].body).data[0].id);
  });

  test('another valid record swapped in on the signature route: 502 / error event naming signature.text, nothing released', async () => {
    tamper.setMode('swap-signature');
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq());
      assert.equal(r.status, 502);
      const e = JSON.parse(r.body).error;
      assert.equal(e.code, 'signature_invalid');
      assert.match(e.message, /^answer failed verification: signature\.text: the signed text is not/);
      assert.doesNotMatch(r.body.toString(), /Hello/, 'the unverified answer is not shown');
      const s = await post(lp, '/v1/chat/completions', chatReq({ stream: true }));
      assert.equal(s.status, 200);
      assert.match(s.body.toString(), /data: \{"error":\{"message":"answer failed verification: signature\.text/);
      assert.doesNotMatch(s.body.toString(), /\[DONE\]/);
      await assert.rejects(sdk(lp).completions.create(complReq()), (err) => err.status === 502 && /signature\.text/.test(err.message));
      await assert.rejects(collect(await sdk(lp).completions.create(complReq({ stream: true }))), (err) => /signature\.text/.test(err.message));
      assert.ok(tamper.stats().swapped >= 4, `the tamper swapped ${tamper.stats().swapped} records`);
    } finally {
      tamper.setMode('pass');
    }
    assert.match(lp.stderr(), /POST \/v1\/completions 200 \d+B \d+ms failed:signature\.text/);
  });
});

describe('local verifying proxy: key changes', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, tamper, lp;
  before(async () => {
    remote = await startRemote();
    tamper = await startTamper({ target: remote, mode: 'pass' });
    lp = await startLocal(tamper.url, ['--allow-simulated']);
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    await tamper?.stop();
    await remote?.stop();
  });

  test('a legitimate certificate rotation: the next request re-verifies, binds the new key and succeeds', async () => {
    const s0 = await lp.status();
    assert.equal(s0.keys.pinned.tls_spki, remote.spkiSha256);
    const rounds0 = s0.verifications;
    const spki1 = await remote.rotateCert();
    assert.notEqual(spki1, s0.keys.pinned.tls_spki);
    const n0 = await remote.engineRequests();
    // a fresh local connection: a new libcurl handle, so a new TLS connection that meets the new key
    const r = await post(lp, '/v1/chat/completions', chatReq());
    assert.equal(r.status, 200, `the request that met the new key: ${r.body.toString().slice(0, 300)}`);
    assert.equal(r.headers['x-verify'], 'verified');
    assert.match(JSON.parse(r.body).choices[0].message.content, /Hello/);
    assert.equal(await remote.engineRequests(), n0 + 1, 'relayed once: the refused connection carried nothing');
    const s1 = await lp.status();
    assert.equal(s1.verified, true);
    assert.equal(s1.generation, s0.generation + 1);
    assert.equal(s1.keys.pinned.tls_spki, spki1);
    assert.equal(s1.keys.tls_spki, spki1);
    assert.equal(s1.verifications, rounds0 + 1, 'one re-verification');
    assert.match(lp.stderr(), new RegExp(`verified \\(TLS key ${spki1}, generation ${s1.generation}\\)`));
    // the SDK's kept-alive connection to the local proxy goes on too
    assert.match((await sdk(lp).chat.completions.create(chatReq())).choices[0].message.content, /Hello/);
  });

  test('recovery after another certificate: 503 while it lasts, served again after the next verification', async () => {
    const g0 = (await lp.status()).generation;
    assert.ok(g0 >= 1);
    tamper.setMode('other-cert');
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq());
      assert.equal(r.status, 503);
      assert.equal(JSON.parse(r.body).error.code, 'remote_not_verified');
      const s = await lp.status();
      assert.equal(s.verified, false);
      assert.equal(s.keys.pinned, null, 'nothing pinned');
      assert.match(s.why, /report\.tls failed: .*not the attested key/);
      // still refused, with nothing relayed, until a verification passes
      const n0 = await remote.engineRequests();
      assert.equal((await post(lp, '/v1/chat/completions', chatReq())).status, 503);
      assert.equal(await remote.engineRequests(), n0);
    } finally {
      tamper.setMode('pass');
    }
    // the attestation side retries on its back-off (5 s after a failure)
    const t0 = Date.now();
    const s2 = await waitStatus(lp, (d) => d.verified, 20000);
    assert.ok(Date.now() - t0 < 15000, `verified again after ${Date.now() - t0} ms`);
    assert.equal(s2.keys.pinned.tls_spki, remote.spkiSha256);
    assert.equal(s2.generation, g0 + 1);
    const r = await post(lp, '/v1/chat/completions', chatReq({ stream: true }));
    assert.equal(r.status, 200);
    assert.match(r.body.toString(), /data: \[DONE\]\n\n$/);
  });
});

describe('local verifying proxy: through an https_proxy (CONNECT)', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, lp, cproxy, tunnels = 0;
  before(async () => {
    remote = await startRemote();
    // a forward proxy that tunnels CONNECT to the remote's TLS port, as a corporate proxy does
    cproxy = http.createServer((req, res) => { res.writeHead(405); res.end(); });
    cproxy.on('connect', (req, sock, head) => {
      tunnels++;
      const up = net.connect(remote.tlsPort, '127.0.0.1', () => {
        sock.write('HTTP/1.1 200 Connection Established\r\nProxy-Agent: test\r\n\r\n');
        if (head.length) up.write(head);
        up.pipe(sock);
        sock.pipe(up);
      });
      up.on('error', () => sock.destroy());
      sock.on('error', () => up.destroy());
    });
    await new Promise((r) => cproxy.listen(0, '127.0.0.1', r));
    const purl = `http://127.0.0.1:${cproxy.address().port}`;
    lp = await startLocal(remote.url, ['--allow-simulated', '--e2ee', 'off'],
      { env: { https_proxy: purl, HTTPS_PROXY: purl, no_proxy: '', NO_PROXY: '' } });
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    cproxy?.close();
    await remote?.stop();
  });

  test('the proxy\'s CONNECT answer is not taken for the remote\'s head: answers verify, streamed and not', async () => {
    const client = sdk(lp);
    const c = await client.chat.completions.create(chatReq());
    assert.equal(typeof c.choices[0].message.content, 'string');
    const text = await collect(await client.chat.completions.create(chatReq({ stream: true })));
    assert.ok(text.length > 0);
    assert.ok(tunnels > 0, 'the remote was reached through the CONNECT proxy');
    const st = await lp.status();
    assert.equal(st.answers.rejected, 0);
    assert.equal(st.answers.verified, 2);
  });
});

describe('local verifying proxy: limits, timeouts, browsers, hostile apps', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, lp, lpMany;
  const HEAD_MS = 1000, BODY_MS = 1500, IDLE_MS = 3000;
  before(async () => {
    remote = await startRemote();
    lp = await startLocal(remote.url, ['--allow-simulated', '--max-connections', '3'],
      { env: { VP_LP_TEST_TIMEOUTS_MS: `${HEAD_MS},${BODY_MS},${IDLE_MS}` } });
    lpMany = await startLocal(remote.url, ['--allow-simulated']);
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    await lpMany?.stop();
    assert.equal(lpMany?.problems() ?? null, null);
    await remote?.stop();
  });

  test('--max-connections 3: the fourth connection gets 503 too_many_connections and is closed; a slot freed serves again', async () => {
    assert.match(lp.stderr(), /VP_LP_TEST_TIMEOUTS_MS: head 1000 ms, body 1500 ms, idle 3000 ms \(tests only\)/);
    const idle = await Promise.all([0, 1, 2].map(() => new Promise((res) => { const s = net.connect(lp.port, '127.0.0.1', () => res(s)); })));
    try {
      await sleep(200);
      const r = await rawRequest(lp.port, { path: '/verification' });
      assert.equal(r.status, 503);
      assert.equal(JSON.parse(r.body).error.code, 'too_many_connections');
      assert.equal(r.headers['retry-after'], '1');
      assert.equal(r.headers.connection, 'close');
    } finally {
      idle[0].destroy();
    }
    await sleep(300);
    const ok = await rawRequest(lp.port, { path: '/verification' });
    assert.equal(ok.status, 200);
    for (const s of idle) s.destroy();
    assert.match(lp.stderr(), /connection refused: --max-connections 3 reached/);
  });

  test('timeouts: headers not in time 408, a body not in time 408, an idle connection closed without an answer', async () => {
    await sleep(300); // the slots of the previous test are free again
    const head = await rawExchange(lp.port, Buffer.from(`GET /verification HTTP/1.1\r\nHost: 127.0.0.1:${lp.port}\r\n`));
    assert.ok(head.closed);
    assert.match(head.data.toString(), /^HTTP\/1\.1 408 /);
    assert.match(head.data.toString(), /"code":"request_timeout"/);
    assert.ok(head.ms >= HEAD_MS - 50 && head.ms < HEAD_MS + 1500, `408 after ${head.ms} ms`);
    const body = await rawExchange(lp.port, Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${lp.port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":`));
    assert.match(body.data.toString(), /^HTTP\/1\.1 408 /);
    assert.ok(body.ms >= BODY_MS - 50 && body.ms < BODY_MS + 1500, `408 after ${body.ms} ms`);
    // a slow sender: the head's clock runs from its first byte, not from the last
    const slow = await rawExchange(lp.port, null, {
      pace: async (s) => { for (const c of `GET /verification HTTP/1.1\r\nHost: 127.0.0.1:${lp.port}\r\n`) { if (s.destroyed) return; s.write(c); await sleep(40); } },
    });
    assert.match(slow.data.toString(), /^HTTP\/1\.1 408 /);
    assert.ok(slow.ms < HEAD_MS + 1500, `408 after ${slow.ms} ms, though a byte came every 40 ms`);
    const quiet = await rawExchange(lp.port, null);
    assert.ok(quiet.closed);
    assert.equal(quiet.data.length, 0, 'nothing written to a connection that sent nothing');
    assert.ok(quiet.ms >= IDLE_MS - 50 && quiet.ms < IDLE_MS + 1500, `closed after ${quiet.ms} ms`);
  });

  test('DNS rebinding and browsers: another Host, an Origin not ours (or "null"), Sec-Fetch-Site cross-site or same-site: 403; never a CORS header', async () => {
    const n0 = await remote.engineRequests();
    const cases = [
      [{ Host: `evil.example:${lp.port}` }, 'host_not_allowed'],
      [{ Host: '127.0.0.1' }, 'host_not_allowed'],
      [{ Host: `127.0.0.1:${lp.port + 1}` }, 'host_not_allowed'],
      [{ Origin: 'http://evil.example' }, 'origin_not_allowed'],
      [{ Origin: `http://evil.example:${lp.port}` }, 'origin_not_allowed'],
      [{ Origin: 'null' }, 'origin_not_allowed'],
      [{ Origin: `https://127.0.0.1:${lp.port}` }, 'origin_not_allowed'],
      [{ 'Sec-Fetch-Site': 'cross-site' }, 'origin_not_allowed'],
      [{ 'Sec-Fetch-Site': 'same-site' }, 'origin_not_allowed'],
    ];
    const seen = [];
    for (const [headers, code] of cases) {
      for (const [method, path] of [['GET', '/'], ['GET', '/verification'], ['POST', '/v1/chat/completions'], ['OPTIONS', '/v1/chat/completions']]) {
        const r = await rawRequest(lp.port, { method, path, headers: { 'Content-Type': 'application/json', ...headers },
          body: method === 'POST' ? JSON.stringify(chatReq()) : undefined });
        assert.equal(r.status, 403, `${method} ${path} ${JSON.stringify(headers)}`);
        assert.equal(JSON.parse(r.body).error.code, code);
        assert.doesNotMatch(r.body.toString(), /mrtd|rtmr|ecdsa_address|<html/i, 'nothing of the status pages');
        seen.push(r);
      }
    }
    assert.equal(await remote.engineRequests(), n0, 'nothing relayed');
    // ours: served, and still no CORS header
    for (const headers of [{ Host: `localhost:${lp.port}`, Origin: `http://localhost:${lp.port}`, 'Sec-Fetch-Site': 'same-origin' },
      { Origin: `http://127.0.0.1:${lp.port}`, 'Sec-Fetch-Site': 'none' }]) {
      const r = await post(lp, '/v1/chat/completions', chatReq(), headers);
      assert.equal(r.status, 200);
      seen.push(r, await rawRequest(lp.port, { path: '/', headers }));
    }
    seen.push(await rawRequest(lp.port, { method: 'OPTIONS', path: '/v1/models', headers: { 'Access-Control-Request-Method': 'POST' } }));
    for (const r of seen) for (const k of Object.keys(r.headers)) assert.doesNotMatch(k, /^access-control-/i);
  });

  test('hostile app input: 431 (headers too large, too many), 413, 400 (request line, target, framing); pipelined requests answered in order', async () => {
    const host = `Host: 127.0.0.1:${lpMany.port}\r\n`;
    const big = await rawExchange(lpMany.port, Buffer.from(`GET /verification HTTP/1.1\r\n${host}X-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`));
    assert.match(big.data.toString(), /^HTTP\/1\.1 431 [^]*"code":"headers_too_large"/);
    assert.ok(big.closed);
    const many = await rawExchange(lpMany.port, Buffer.from(`GET /verification HTTP/1.1\r\n${host}${Array.from({ length: 130 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`));
    assert.match(many.data.toString(), /^HTTP\/1\.1 431 /);
    const n0 = await remote.engineRequests();
    const huge = await rawExchange(lpMany.port, Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: ${64 * 1024 * 1024 + 1}\r\n\r\n{`));
    assert.match(huge.data.toString(), /^HTTP\/1\.1 413 [^]*"code":"request_too_large"/);
    assert.ok(huge.closed && huge.ms < 3000, 'refused at the head, without waiting for the body');
    // chunked, over the bound only as it arrives
    const chunk = Buffer.alloc(8 << 20, 0x20);
    const chunked = await rawExchange(lpMany.port, null, {
      ms: 20000,
      pace: async (s) => {
        s.write(`POST /v1/chat/completions HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
        for (let i = 0; i < 9 && !s.destroyed; i++) {
          const ok = s.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
          if (!ok) await new Promise((r) => { s.once('drain', r); s.once('close', r); });
        }
      },
    });
    assert.match(chunked.data.toString(), /^HTTP\/1\.1 413 /);
    assert.equal(await remote.engineRequests(), n0, 'nothing relayed');
    for (const bad of ['GARBAGE\r\n\r\n', `GET /verification HTTP/1.1\r\n${host}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
      `GET /verification HTTP/1.1\r\n${host}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`,
      `GET /verification HTTP/1.1\r\n${host}X: a\rb\r\n\r\n`, `GET http://evil.example/v1/models HTTP/1.1\r\n${host}\r\n`,
      `CONNECT evil.example:443 HTTP/1.1\r\n${host}\r\n`]) {
      const r = await rawExchange(lpMany.port, Buffer.from(bad, 'latin1'));
      assert.match(r.data.toString(), /^HTTP\/1\.1 400 [^]*"type":"invalid_request_error"/, JSON.stringify(bad));
      assert.ok(r.closed, `closed after ${JSON.stringify(bad)}`);
    }
    // pipelined: three requests in one write, three answers in order
    const body = JSON.stringify(chatReq());
    const pipe = await rawExchange(lpMany.port, Buffer.from(
      `GET /verification HTTP/1.1\r\n${host}\r\n`
      + `POST /v1/chat/completions HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
      + `GET /v1/models HTTP/1.1\r\n${host}Connection: close\r\n\r\n`));
    const answers = splitAnswers(pipe.data);
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
    assert.equal(JSON.parse(answers[0].body).verified, true);
    assert.match(JSON.parse(answers[1].body).choices[0].message.content, /Hello/);
    assert.match(answers[1].head, /\r\nX-Verify: verified/);
    assert.equal(JSON.parse(answers[2].body).data[0].id, MODEL);
    assert.match(answers[2].head, /\r\nX-Verify: unsigned/);
  });

  test('apps that leave mid-stream or mid-request: others are served meanwhile; no descriptor or thread left after 200 of them', async () => {
    const settle = async (want) => {
      let c;
      for (let i = 0; i < 100; i++) {
        c = procCounts(lpMany.pid);
        if (c.fds <= want.fds && c.threads <= want.threads) return c;
        await sleep(100);
      }
      return c;
    };
    await sdk(lpMany).chat.completions.create(chatReq()); // warm: libcurl initialised, the attestation thread idle
    await sleep(200);
    const base = procCounts(lpMany.pid);
    const slow = JSON.stringify(chatReq({ stream: true, max_tokens: 400, mock_delay_us: 10000 }));
    const leave = (i) => new Promise((resolve) => {
      const s = net.connect(lpMany.port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', resolve);
      s.on('connect', () => {
        const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${lpMany.port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(slow)}\r\n\r\n`;
        if (i % 4 === 0) { s.write(head + slow.slice(0, 10)); setTimeout(() => s.destroy(), 20); return; } // mid-request
        s.write(head + slow);
        let n = 0;
        s.on('data', (d) => { n += d.length; if (n > 300) s.destroy(); }); // mid-stream, after the first events
      });
    });
    const served = [];
    for (let b = 0; b < 20; b++) {
      const batch = Array.from({ length: 10 }, (_, i) => leave(b * 10 + i));
      if (b % 5 === 0) served.push(sdk(lpMany).chat.completions.create(chatReq()).then((r) => r.choices[0].message.content));
      await Promise.all(batch);
    }
    for (const t of await Promise.all(served)) assert.match(t, /Hello/);
    const after_ = await settle(base);
    assert.ok(after_.fds <= base.fds, `descriptors: ${base.fds} before, ${after_.fds} after`);
    assert.ok(after_.threads <= base.threads, `threads: ${base.threads} before, ${after_.threads} after`);
    assert.ok((lpMany.stderr().match(/ app-left$/gm) ?? []).length >= 100, 'the streams ended as app-left');
    const r = await sdk(lpMany).chat.completions.create(chatReq());
    assert.match(r.choices[0].message.content, /Hello/);
  });
});
