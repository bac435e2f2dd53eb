// Issue 15, items 2 and 5. Nothing is held for strangers: a body that no handler reads is
// answered at the headers (404, 405, 401) and never read, or read and dropped (a GET route).
// Strict HTTP: what a lenient parser would read otherwise is a 400, counted and logged; the
// bearer scheme is case-insensitive; engine answers the relay must not pass on as they are
// (101, a 204 with a body, a malformed answer after its head) and the engine's Content-Type.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startStack, startProxy, MODEL, sleep, cleanExitProblems } from './lib/harness.mjs';
import { stopAndCheck } from './lib/common.mjs';
import { getPath } from './lib/http.mjs';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const chatBody = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 });

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

const head = (method, path, headers = '') => `${method} ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;

async function metric(port, re) {
  const r = await getPath(port, '/v1/metrics');
  const m = re.exec(r.body.toString());
  return m ? Number(m[1]) : 0;
}

for (const [what, method, path, headers, status] of [
  ['an unknown path', 'POST', '/no/such/route', '', 404],
  ['a GET-only route', 'POST', '/v1/models', '', 405],
  ['a POST-only route', 'GET', '/v1/chat/completions', 'Authorization: Bearer test_token\r\n', 405],
  ['an authenticated GET route, without a token', 'GET', '/v1/signature/chatcmpl-x', '', 401],
  ['a route, with a wrong token', 'POST', '/v1/chat/completions', 'Authorization: Bearer nope\r\n', 401],
]) {
  test(`a body sent to ${what} is answered ${status} at the headers and never read`, async () => {
    const s = await rawSock(stack.port);
    // The head announces 10 MiB; none of it is sent. The answer must not wait for it.
    s.sock.write(head(method, path, `${headers}Content-Length: 10485760\r\n`));
    assert.ok(await s.waitFor((x) => x.closed, 2000), `answered and closed at the headers: ${JSON.stringify(s.text().slice(0, 200))}`);
    assert.match(s.text(), new RegExp(`^HTTP/1\\.1 ${status} `));
    assert.match(s.text(), /\r\nConnection: close\r\n/);
    // Chunked too.
    const c = await rawSock(stack.port);
    c.sock.write(head(method, path, `${headers}Transfer-Encoding: chunked\r\n`) + '1000\r\n');
    assert.ok(await c.waitFor((x) => x.closed, 2000), 'chunked: answered and closed at the headers');
    assert.match(c.text(), new RegExp(`^HTTP/1\\.1 ${status} `));
  });
}

test('requests without a body keep their connection (GET with Content-Length: 0, 404, 405)', async () => {
  const s = await rawSock(stack.port);
  s.sock.write(head('GET', '/nope', 'Content-Length: 0\r\n') + head('POST', '/v1/models', 'Content-Length: 0\r\n') +
    head('GET', '/', 'Content-Length: 0\r\n') + head('GET', '/version'));
  const count = (x) => (x.text().match(/HTTP\/1\.1 \d\d\d /g) || []).length;
  assert.ok(await s.waitFor((x) => count(x) === 4, 2000), s.text());
  assert.deepEqual(s.text().match(/HTTP\/1\.1 \d\d\d/g), ['HTTP/1.1 404', 'HTTP/1.1 405', 'HTTP/1.1 200', 'HTTP/1.1 200']);
  assert.doesNotMatch(s.text(), /Connection: close/);
  await sleep(50);
  assert.equal(s.closed, false);
  s.sock.destroy();
});

test('a body sent to a GET route is read and dropped, never kept; the route answers', async () => {
  const before = await metric(stack.port, /^vllm_proxy_request_bytes_total (\d+)$/m);
  const s = await rawSock(stack.port);
  const big = 1 << 20;
  s.sock.write(head('GET', '/', `Content-Length: ${big}\r\n`));
  s.sock.write(Buffer.alloc(big, 0x61));
  s.sock.write(head('GET', '/version'));
  const count = (x) => (x.text().match(/HTTP\/1\.1 200 /g) || []).length;
  assert.ok(await s.waitFor((x) => count(x) === 2, 3000), s.text().slice(0, 300));
  s.sock.destroy();
  const after = await metric(stack.port, /^vllm_proxy_request_bytes_total (\d+)$/m);
  assert.ok(after - before < 1024, `request body bytes kept: ${after - before}`);
});

test('the bearer scheme is case-insensitive', async () => {
  for (const scheme of ['bearer', 'BEARER', 'Bearer']) {
    const s = await rawSock(stack.port);
    s.sock.write(head('POST', '/v1/chat/completions',
      `Authorization: ${scheme} test_token\r\nContent-Type: application/json\r\nContent-Length: ${chatBody.length}\r\nConnection: close\r\n`) + chatBody);
    assert.ok(await s.waitFor((x) => x.closed, 3000));
    assert.match(s.text(), /^HTTP\/1\.1 200 /, `${scheme}: ${s.text().slice(0, 100)}`);
  }
});

test('lenient HTTP is a 400, counted by cause', async () => {
  const before = await metric(stack.port, /^vllm_proxy_requests_rejected_total\{reason="malformed"\} (\d+)$/m);
  const auth = `Authorization: Bearer test_token\r\nContent-Type: application/json\r\n`;
  const cases = [
    // chunk data not followed by CRLF
    head('POST', '/v1/chat/completions', `${auth}Transfer-Encoding: chunked\r\n`) + `${chatBody.length.toString(16)}\r\n${chatBody}XX0\r\n\r\n`,
    // obsolete line folding (it would reach the engine as one value)
    head('GET', '/', 'X-Request-Id: abc\r\n def\r\n'),
    // a space inside a header name
    head('GET', '/', 'X Forwarded: 1\r\n'),
    // HTTP/1.1 without Host
    'GET / HTTP/1.1\r\n\r\n',
  ];
  for (const raw of cases) {
    const s = await rawSock(stack.port);
    s.sock.write(raw);
    assert.ok(await s.waitFor((x) => x.closed, 2000), `closed: ${JSON.stringify(raw)}`);
    assert.match(s.text(), /^HTTP\/1\.1 400 /, `${JSON.stringify(raw)} -> ${JSON.stringify(s.text().slice(0, 80))}`);
    assert.match(s.text(), /"malformed HTTP request"/);
  }
  const after = await metric(stack.port, /^vllm_proxy_requests_rejected_total\{reason="malformed"\} (\d+)$/m);
  assert.equal(after - before, cases.length);
  // The other causes have their own series.
  const page = (await getPath(stack.port, '/v1/metrics')).body.toString();
  for (const r of ['timeout', 'body_too_large', 'head_too_large', 'duplicate_header'])
    assert.match(page, new RegExp(`^vllm_proxy_requests_rejected_total\\{reason="${r}"\\} \\d+$`, 'm'));
});

/* ---- engine answers ---- */

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

const id204 = 'chatcmpl-no-content-with-body';
const longType = `application/json; x=${'a'.repeat(300)}`;
let eng, engProxy;

async function engineProxy() {
  if (engProxy) return engProxy;
  eng = await fakeEngine((sock, path) => {
    const json = (ct, body) => `HTTP/1.1 200 OK\r\n${ct}Content-Length: ${body.length}\r\n\r\n${body}`;
    if (path === '/v1/embeddings') {
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello');
    } else if (path === '/v1/chat/completions') {
      const b = JSON.stringify({ id: id204, object: 'chat.completion', choices: [] });
      sock.write(`HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
    } else if (path === '/v1/rerank') {
      // A valid head and a broken chunk in the same write: nothing reached the client yet.
      sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n');
    } else if (path === '/tokenize') {
      sock.write(json('Content-Type: application/x-ndjson; charset=utf-8; profile="v1"\r\n', '{}'));
    } else if (path === '/detokenize') {
      sock.write(json(`Content-Type: ${longType}\r\n`, '{}'));
    } else if (path === '/v1/score') {
      sock.write(json('', '{}'));
    } else {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    }
  });
  engProxy = await startProxy(`http://127.0.0.1:${eng.address().port}`);
  return engProxy;
}

async function askEngine(path, body = '{}') {
  const p = await engineProxy();
  const s = await rawSock(p.port);
  s.sock.write(head('POST', path, `Authorization: Bearer test_token\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n`) + body);
  await s.waitFor((x) => x.closed, 3000);
  return s.text();
}

test('a 101 from the engine is a 502', async () => {
  const t = await askEngine('/v1/embeddings');
  assert.match(t, /^HTTP\/1\.1 502 /, `101 from the engine: ${JSON.stringify(t)}`);
  assert.match(t, /"upstream_error"/);
  assert.doesNotMatch(t, /hello|Upgrade/i);
});

test('a 204 with a body: the client gets the 204 alone, nothing is signed', async () => {
  const t = await askEngine('/v1/chat/completions', chatBody);
  assert.match(t, /^HTTP\/1\.1 204 /);
  assert.ok(t.endsWith('\r\n\r\n'), `no body after a 204: ${JSON.stringify(t)}`);
  const sig = await getPath(engProxy.port, `/v1/signature/${id204}`);
  assert.equal(sig.status, 404, 'the body of a 204 is never signed');
});

test('an engine answer malformed after its head, before any byte left: 502, not a bare close', async () => {
  const t = await askEngine('/v1/rerank');
  assert.match(t, /^HTTP\/1\.1 502 /, `malformed after the head: ${JSON.stringify(t)}`);
  assert.match(t, /"upstream_error"/);
});

test("the engine's Content-Type is passed on whole, bounded, never invented", async () => {
  let t = await askEngine('/v1/tokenize');
  assert.match(t, /\r\nContent-Type: application\/x-ndjson; charset=utf-8; profile="v1"\r\n/, t);
  t = await askEngine('/v1/detokenize');
  assert.match(t, /^HTTP\/1\.1 502 /, `an over-long Content-Type is malformed, not cut or replaced: ${JSON.stringify(t.slice(0, 120))}`);
  t = await askEngine('/v1/score');
  assert.match(t, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(t, /Content-Type/i, 'no Content-Type invented');
});

test('the proxy in front of the scripted engine exits cleanly', async () => {
  const p = await engineProxy();
  await p.stop();
  eng.close();
  assert.equal(cleanExitProblems(p.child), null);
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
