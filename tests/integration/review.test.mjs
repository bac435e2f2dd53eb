// Review regressions for the HTTP server, the upstream client and the relay: Expect:
// 100-continue, early answers before the body (401) on keep-alive connections, HEAD, HTTP/1.0
// clients of chunked answers, pipelined bytes over the parking limit, engine 1xx/204 answers
// and close-delimited engine bodies (never signed).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startStack, startProxy, MODEL, sleep, cleanExitProblems } from './lib/harness.mjs';
import { stopAndCheck } from './lib/common.mjs';
import { getPath } from './lib/http.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], ...extra });

/** A raw client socket: collects every byte, knows when the server closed. */
async function rawSock(port) {
  const sock = net.connect({ port, host: '127.0.0.1' });
  sock.setNoDelay(true);
  const s = { sock, got: [], closed: false };
  sock.on('data', (d) => s.got.push(d));
  sock.on('close', () => { s.closed = true; });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  s.text = () => Buffer.concat(s.got).toString('latin1');
  s.waitFor = async (pred, ms = 3000) => {
    const t0 = Date.now();
    while (!pred(s) && Date.now() - t0 < ms) await sleep(5);
    return pred(s);
  };
  return s;
}

const head = (method, path, headers = '') =>
  `${method} ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;

test('Expect: 100-continue gets an interim 100 before the body is sent', async () => {
  const body = JSON.stringify(chatBody({ max_tokens: 2, pad: 'x'.repeat(2000) }));
  const s = await rawSock(stack.port);
  s.sock.write(head('POST', '/v1/chat/completions', `Authorization: Bearer test_token\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n`));
  const got100 = await s.waitFor((x) => x.text().startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 800);
  assert.ok(got100, `interim 100 expected, got ${JSON.stringify(s.text().slice(0, 60))}`);
  s.sock.write(body);
  assert.ok(await s.waitFor((x) => /HTTP\/1\.1 200 [\s\S]*"object":"chat\.completion"/.test(x.text())), s.text().slice(0, 200));
  s.sock.destroy();
});

test('Expect: 100-continue without a valid token: 401 at once, no 100, connection closed', async () => {
  const s = await rawSock(stack.port);
  s.sock.write(head('POST', '/v1/chat/completions', 'Content-Length: 5000\r\nExpect: 100-continue\r\n'));
  assert.ok(await s.waitFor((x) => x.closed, 2000), 'closed');
  assert.match(s.text(), /^HTTP\/1\.1 401 /);
  assert.doesNotMatch(s.text(), /100 Continue/);
});

test('401 before the body on a keep-alive connection says Connection: close and closes', async () => {
  const body = JSON.stringify(chatBody());
  const s = await rawSock(stack.port);
  s.sock.write(head('POST', '/v1/chat/completions', `Content-Length: ${Buffer.byteLength(body)}\r\n`) + body);
  assert.ok(await s.waitFor((x) => x.closed, 2000), `connection closed after the early 401: ${JSON.stringify(s.text().slice(0, 300))}`);
  assert.match(s.text(), /^HTTP\/1\.1 401 /);
  assert.match(s.text(), /\r\nConnection: close\r\n/i);
});

test('401 before a large body: the client reads the answer (no reset while it still sends)', async () => {
  const s = await rawSock(stack.port);
  const big = 4 << 20;
  s.sock.write(head('POST', '/v1/chat/completions', `Content-Length: ${big}\r\n`));
  await sleep(20);
  s.sock.write(Buffer.alloc(big, 0x20));
  assert.ok(await s.waitFor((x) => x.closed, 5000), 'closed');
  assert.match(s.text(), /^HTTP\/1\.1 401 /);
});

test('HEAD gets a head without a body; the next request on the connection still parses', async () => {
  const s = await rawSock(stack.port);
  s.sock.write(head('HEAD', '/') + head('GET', '/'));
  assert.ok(await s.waitFor((x) => (x.text().match(/HTTP\/1\.1 /g) || []).length >= 2 && x.text().endsWith('{}'), 2000),
    JSON.stringify(s.text()));
  const [first, second] = s.text().split(/(?=HTTP\/1\.1 )/);
  assert.ok(first.endsWith('\r\n\r\n'), `HEAD answer has no body: ${JSON.stringify(first)}`);
  assert.match(second, /^HTTP\/1\.1 200 /);
  s.sock.destroy();
});

test('HTTP/1.0 keep-alive client of a streamed answer: no chunked framing, closed at the end', async () => {
  const body = JSON.stringify(chatBody({ max_tokens: 3, stream: true }));
  const s = await rawSock(stack.port);
  s.sock.write(`POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer test_token\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  assert.ok(await s.waitFor((x) => x.closed, 5000), 'closed at the end of the body');
  const t = s.text();
  assert.match(t, /^HTTP\/1\.[01] 200 /);
  assert.doesNotMatch(t, /Transfer-Encoding: chunked/i);
  const b = t.slice(t.indexOf('\r\n\r\n') + 4);
  assert.ok(b.startsWith('data: '), `raw SSE body, no chunk sizes: ${JSON.stringify(b.slice(0, 40))}`);
  assert.ok(b.endsWith('data: [DONE]\n\n'));
});

test('pipelined bytes beyond the parking limit are not lost', async () => {
  const body = JSON.stringify(chatBody({ max_tokens: 20, stream: true, mock_delay_us: 20000 }));
  const n = 4000; // ~100 KiB of pipelined GETs while the stream runs
  const first = head('POST', '/v1/chat/completions', `Authorization: Bearer test_token\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`) + body;
  const s = await rawSock(stack.port);
  s.sock.write(first);
  s.sock.write(head('GET', '/').repeat(n));
  const count = (x) => (x.text().match(/HTTP\/1\.1 200 /g) || []).length;
  await s.waitFor((x) => count(x) >= n + 1 || x.closed, 10000);
  assert.equal(count(s), n + 1, `answers: ${count(s)}; tail ${JSON.stringify(s.text().slice(-200))}`);
  assert.doesNotMatch(s.text(), /HTTP\/1\.1 400 /);
  s.sock.destroy();
});

/* ---- a scripted engine ---- */

function fakeEngine(answer) {
  const srv = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const h = buf.subarray(0, i).toString();
        const m = /content-length: *(\d+)/i.exec(h);
        const len = m ? Number(m[1]) : 0;
        if (buf.length < i + 4 + len) return;
        const path = h.split(' ')[1];
        buf = buf.subarray(i + 4 + len);
        answer(sock, path);
      }
    });
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

test('engine 1xx, 204 and close-delimited answers', async () => {
  const idCut = 'chatcmpl-cut-by-close';
  const eng = await fakeEngine((sock, path) => {
    if (path === '/v1/embeddings') {
      sock.write('HTTP/1.1 204 No Content\r\n\r\n');
    } else if (path === '/v1/tokenize' || path === '/tokenize') {
      sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}');
    } else if (path === '/v1/chat/completions') {
      // No Content-Length, no chunking: the body ends when the engine closes. The engine
      // died mid-answer here; the proxy cannot tell, so it must not sign it.
      sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"id":"${idCut}","object":"chat.completion","choices":[{"message":{"content":"trunc`);
    } else {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    }
  });
  const p = await startProxy(`http://127.0.0.1:${eng.address().port}`);
  try {
    const s = await rawSock(p.port);
    const auth = 'Authorization: Bearer test_token\r\nContent-Type: application/json\r\nContent-Length: 2\r\n';
    s.sock.write(head('POST', '/v1/embeddings', auth) + '{}');
    assert.ok(await s.waitFor((x) => x.text().includes('\r\n\r\n'), 2000));
    await sleep(100);
    const t204 = s.text();
    assert.match(t204, /^HTTP\/1\.1 204 /);
    assert.doesNotMatch(t204, /Transfer-Encoding|Content-Length/i, '204 has no framing headers');
    assert.ok(t204.endsWith('\r\n\r\n'), `no body after a 204: ${JSON.stringify(t204)}`);
    s.got.length = 0;
    s.sock.write(head('POST', '/v1/tokenize', auth) + '{}');
    assert.ok(await s.waitFor((x) => x.text().endsWith('{"ok":true}'), 2000), `after a 1xx: ${JSON.stringify(s.text())}`);
    assert.match(s.text(), /^HTTP\/1\.1 200 /);
    s.sock.destroy();

    const body = JSON.stringify(chatBody());
    const c = await rawSock(p.port);
    c.sock.write(head('POST', '/v1/chat/completions', `Authorization: Bearer test_token\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n`) + body);
    await c.waitFor((x) => x.closed || x.text().includes('trunc'), 3000);
    await sleep(200);
    const sig = await getPath(p.port, `/v1/signature/${idCut}`);
    assert.equal(sig.status, 404, 'a close-delimited engine body is never signed');
    c.sock.destroy();
  } finally {
    await p.stop();
    eng.close();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
