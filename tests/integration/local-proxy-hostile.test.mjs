// The local verifying proxy against a hostile remote (issue 13, docs/VERIFY.md "The local
// verifying proxy"): lib/hostile.mjs presents the attested TLS key (a remote whose key is in
// the wrong hands, or a relay on a plain-http remote) and rewrites requests and answers;
// the signatures stay the attested key's. Each case asserts what the app sees: never a byte
// of an answer that did not verify where the design holds it back (a non-streamed body, a
// stream's [DONE] and what follows it), never a header line the remote could use to inject
// into the app's head, and the proxy serving on afterwards.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { haveBinary, sleep } from './lib/harness.mjs';
import { startRemote } from './lib/remote-tls.mjs';
import { startHostile } from './lib/hostile.mjs';
import { startLocal, sdk, chatReq, collect, post } from './lib/local-proxy.mjs';

const have = haveBinary('vllm-proxy-verify');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const SIG = /^x-signature-(text|ecdsa|ed25519)$|^x-signing-(address|key-ed25519)$/i;
const DONE_ANY = /\[DONE\]/;

/** The app's raw head has only CRLF line ends, and no header the remote tried to inject. */
function cleanHead(res) {
  assert.doesNotMatch(res.rawHead, /\r(?!\n)|(?<!\r)\n(?!$)/, `only CRLF in the head: ${JSON.stringify(res.rawHead)}`);
  for (const line of res.rawHead.split('\r\n').slice(1, -2)) assert.match(line, /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/, `a header line: ${JSON.stringify(line)}`);
  assert.doesNotMatch(res.rawHead, /pwned|x-injected|evil\.example/i);
}

describe('local verifying proxy: a hostile remote', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote, hostile, lp;
  let last = {}; // the signature fields of the last answer relayed whole, by name (lower case)
  const remember = (req, ans) => {
    const f = {};
    for (const [k, v] of [...ans.fields, ...ans.trailers]) if (SIG.test(k)) f[k.toLowerCase()] = v;
    if (Object.keys(f).length) last = f;
    return undefined;
  };
  before(async () => {
    remote = await startRemote();
    hostile = await startHostile({ target: remote, onAnswer: remember });
    // --e2ee off: the hostile remote edits clear-text answers (E2EE is covered by local-proxy-e2ee)
    lp = await startLocal(hostile.url, ['--allow-simulated', '--e2ee', 'off']);
  });
  after(async () => {
    await lp?.stop();
    assert.equal(lp?.problems() ?? null, null);
    await hostile?.stop();
    await remote?.stop();
  });
  const pass = () => hostile.setHooks({ onAnswer: remember });

  test('the request changed on the way (valid signatures over another request hash): 502 / error event naming signature.text', async () => {
    const respace = (req) => (req.method === 'POST' && req.path === '/v1/chat/completions'
      ? { ...req, body: Buffer.from(req.body.toString().replace('"max_tokens":8', '"max_tokens": 8')) } : req);
    let sent = null;
    hostile.setHooks({ onRequest: (req) => { const r = respace(req); if (r !== req) sent = r.body; return r; } });
    try {
      const body = JSON.stringify(chatReq());
      const r = await post(lp, '/v1/chat/completions', body);
      assert.equal(r.status, 502);
      const e = JSON.parse(r.body).error;
      assert.equal(e.code, 'signature_invalid');
      assert.ok(sent && !sent.equals(Buffer.from(body)), 'the remote got other bytes');
      // the remote signed what it got; the proxy computed over what the app sent
      assert.match(e.message, new RegExp(`signature\\.text: .*signed ${sha(sent)}:[0-9a-f]{64}, computed ${sha(body)}:`));
      const s = await post(lp, '/v1/chat/completions', chatReq({ stream: true }));
      assert.equal(s.status, 200);
      assert.match(s.body.toString(), /data: \{"error":\{"message":"answer failed verification: signature\.text/);
      assert.doesNotMatch(s.body.toString(), DONE_ANY);
    } finally { pass(); }
  });

  test('duplicate signature headers: appended ones never win (verified), stale ones put first fail (502)', async () => {
    await sdk(lp).chat.completions.create(chatReq()); // `last` has a whole set now
    const stale = { ...last };
    assert.ok(stale['x-signature-ecdsa'] && stale['x-signature-text']);
    const extra = Object.entries(stale);
    const dup = (where) => hostile.setHooks({
      onAnswer: (req, ans) => (req.method === 'POST' && req.path === '/v1/chat/completions'
        ? { ans: { ...ans, fields: where === 'after' ? [...ans.fields, ...extra] : [...extra, ...ans.fields] } } : undefined),
    });
    dup('after');
    try {
      const r = await sdk(lp).chat.completions.create(chatReq());
      assert.match(r.choices[0].message.content, /Hello/, 'the genuine (first) fields are the ones checked');
      dup('before');
      await assert.rejects(sdk(lp).chat.completions.create(chatReq()), (e) => {
        assert.equal(e.status, 502);
        assert.match(e.message, /signature\.text: the signed text is not/);
        return true;
      });
    } finally { pass(); }
  });

  test('trailers the head did not announce are ignored: the signature route decides (verified)', async () => {
    const before0 = hostile.seen.filter((s) => s.path.startsWith('/v1/signature/')).length;
    hostile.setHooks({
      onAnswer: (req, ans) => {
        if (!(req.method === 'POST' && req.path === '/v1/chat/completions')) return undefined;
        // the head no longer says "trailers"; the trailers carry stale (valid-looking) fields
        const fields = ans.fields.filter(([k]) => !/^(x-signature-inband|trailer)$/i.test(k));
        const trailers = ans.trailers.map(([k, v]) => [k, last[k.toLowerCase()] ?? v]);
        return { ans: { ...ans, fields, trailers } };
      },
    });
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq({ stream: true }));
      assert.equal(r.status, 200);
      assert.match(r.body.toString(), /data: \[DONE\]\n\n$/);
      assert.equal(hostile.seen.filter((s) => s.path.startsWith('/v1/signature/')).length, before0 + 2,
        'both algorithms fetched from the signature route');
    } finally { pass(); }
  });

  // The official SDKs end a stream at any event whose data starts with [DONE] (openai-node:
  // sse.data.startsWith('[DONE]'), after splitting lines at CR, LF or CRLF): each of these
  // must be held like the plain "data: [DONE]" event, or the app would take the stream as
  // complete before the verdict.
  const DONE_VARIANTS = {
    'a comment line before it': (s) => s.replace('data: [DONE]\n\n', ': keep-alive\ndata: [DONE]\n\n'),
    'an event name': (s) => s.replace('data: [DONE]\n\n', 'event: end\ndata: [DONE]\n\n'),
    'trailing text': (s) => s.replace('data: [DONE]\n\n', 'data: [DONE] and more\n\n'),
    'CR line ends inside one LF-ended event': (s) => s.replace(/\n\ndata: \[DONE\]\n\n$/, '\r\rdata: [DONE]\r\r: x\n\n'),
    'events after it': (s) => `${s}data: {"evil":1}\n\n`,
    'no [DONE] at all': (s) => s.replace('data: [DONE]\n\n', ''),
  };
  for (const [name, edit] of Object.entries(DONE_VARIANTS)) {
    test(`a stream changed (${name}): no [DONE] reaches the app, the error event does, the SDK raises`, async () => {
      hostile.setHooks({
        onAnswer: (req, ans) => (req.method === 'POST' && req.path === '/v1/chat/completions'
          ? { ans: { ...ans, body: Buffer.from(edit(ans.body.toString('latin1')), 'latin1') } } : undefined),
      });
      try {
        const r = await post(lp, '/v1/chat/completions', chatReq({ stream: true }));
        const b = r.body.toString('latin1');
        assert.equal(r.status, 200);
        assert.match(b, /data: \{"error":\{"message":"answer failed verification: signature\.text/);
        assert.doesNotMatch(b, DONE_ANY, 'no [DONE] before (or after) the verdict');
        assert.doesNotMatch(b, /evil/);
        assert.ok(r.complete, 'the chunked body ended');
        await assert.rejects(collect(await sdk(lp).chat.completions.create(chatReq({ stream: true }))),
          (e) => /answer failed verification: signature\.text/.test(e.message));
      } finally { pass(); }
    });
  }

  test('header injection from the remote (bare CR, obs-fold, a Content-Type with CR): the app\'s head stays clean', async () => {
    const inject = (ans) => ({
      ...ans,
      fields: [
        ...ans.fields.map(([k, v]) => (/^content-type$/i.test(k) ? [k, `${v}\rX-Injected: 1`] : [k, v])),
        ['X-Evil', 'a\rSet-Cookie: pwned=1'],
        ['X-Fold', 'a\r\n Set-Cookie: pwned=2'],
        ['Location', 'http://evil.example/'],
      ],
    });
    for (const stream of [false, true]) {
      hostile.setHooks({ onAnswer: (req, ans) => (req.method === 'POST' ? { ans: inject(ans) } : undefined) });
      try {
        const r = await post(lp, '/v1/chat/completions', chatReq({ stream }));
        cleanHead(r);
        assert.equal(r.status, 200, `stream ${stream}: the answer itself is genuine`);
        if (stream) assert.match(r.body.toString(), /data: \[DONE\]\n\n$/);
        else assert.match(JSON.parse(r.body).choices[0].message.content, /Hello/);
      } finally { pass(); }
    }
    // a redirect: the app's fetch must not be sent elsewhere
    hostile.setHooks({
      onAnswer: (req, ans) => (req.path === '/v1/models'
        ? { ans: { ...ans, statusLine: 'HTTP/1.1 307 Temporary Redirect', status: 307, fields: [...ans.fields, ['Location', 'http://evil.example/v1/models'], ['Refresh', '0; url=http://evil.example/']] } }
        : undefined),
    });
    try {
      const r = await (await import('./lib/http.mjs')).rawRequest(lp.port, { path: '/v1/models' });
      assert.equal(r.status, 307);
      assert.equal(r.headers.location, undefined);
      assert.equal(r.headers.refresh, undefined);
      cleanHead(r);
    } finally { pass(); }
  });

  test('a chat id with path characters: percent-encoded in the signature fetch, no dot segment; 502 signature.fetch', async () => {
    const ids = ['../../v1/models?x=1#f', '..', 'a/./b'];
    for (const id of ids) {
      hostile.setHooks({
        onAnswer: (req, ans) => {
          if (!(req.method === 'POST' && req.path === '/v1/chat/completions')) return undefined;
          const fields = ans.fields.filter(([k]) => !SIG.test(k) && !/^x-signature-(inband|id)$/i.test(k));
          return { ans: { ...ans, fields: [...fields, ['X-Signature-Id', id]] } };
        },
      });
      const n0 = hostile.seen.length;
      try {
        const r = await post(lp, '/v1/chat/completions', chatReq());
        assert.equal(r.status, 502);
        const e = JSON.parse(r.body).error;
        assert.match(e.message, /signature\.fetch: GET \/v1\/signature\/\{id\} \(ecdsa\): HTTP 404/);
        const fetched = hostile.seen.slice(n0).filter((s) => s.method === 'GET');
        assert.equal(fetched.length, 1);
        const enc = [...Buffer.from(id)].map((c) => (/[A-Za-z0-9_~-]/.test(String.fromCharCode(c)) ? String.fromCharCode(c)
          : `%${c.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
        assert.equal(fetched[0].target, `/v1/signature/${enc}?signing_algo=ecdsa`);
      } finally { pass(); }
    }
  });

  test('a huge header block from the remote: 502 remote_unreachable; the proxy serves on', async () => {
    hostile.setHooks({
      onAnswer: (req, ans) => (req.method === 'POST'
        ? { ans: { ...ans, fields: [...ans.fields, ...Array.from({ length: 200 }, (_, i) => [`X-Pad-${i}`, 'p'.repeat(500)])] } }
        : undefined),
    });
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq());
      assert.equal(r.status, 502);
      assert.equal(JSON.parse(r.body).error.code, 'remote_unreachable');
    } finally { pass(); }
    const ok = await sdk(lp).chat.completions.create(chatReq());
    assert.match(ok.choices[0].message.content, /Hello/);
  });

  test('a large header block within the bound: the whole head reaches the app, then the body (no desync on keep-alive)', async () => {
    const pad = Array.from({ length: 40 }, (_, i) => [`X-Pad-${i}`, 'p'.repeat(200)]);
    hostile.setHooks({ onAnswer: (req, ans) => (req.method === 'POST' ? { ans: { ...ans, fields: [...ans.fields, ...pad] } } : undefined) });
    try {
      const { RawConn } = await import('./lib/http.mjs');
      const c = new RawConn(lp.port);
      try {
        for (let i = 0; i < 2; i++) {
          const r = await c.request({ method: 'POST', path: '/v1/chat/completions', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(chatReq()) });
          assert.equal(r.status, 200);
          assert.equal(r.headers['x-pad-39'], 'p'.repeat(200));
          assert.equal(r.headers['x-verify'], 'verified');
          assert.match(JSON.parse(r.body).choices[0].message.content, /Hello/);
        }
      } finally { c.close(); }
    } finally { pass(); }
  });

  test('the path relayed as the app sent it: a dot segment is not removed on the way (the route the proxy classified is the one asked)', async () => {
    const n0 = hostile.seen.length;
    const r = await post(lp, '/v1/./chat/completions', chatReq());
    assert.equal(r.status, 404, 'the remote has no such route');
    assert.equal(hostile.seen.slice(n0)[0].target, '/v1/./chat/completions');
  });

  test('an endless non-streamed body: 502 past the 64 MiB the proxy holds, nothing of it released; the remote connection is closed', async () => {
    let wrote = 0, closed = false;
    hostile.setHooks({
      onAnswer: (req) => (req.method === 'POST' ? {
        async write(sock) {
          sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
          const piece = Buffer.alloc(1 << 20, 0x61);
          const chunk = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
          sock.on('close', () => { closed = true; });
          while (!closed && wrote < (100 << 20)) {
            wrote += piece.length;
            if (!sock.write(chunk)) await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
          }
        },
      } : undefined),
    });
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq(), {}, { timeoutMs: 60000 });
      assert.equal(r.status, 502);
      assert.match(JSON.parse(r.body).error.message, /larger than this proxy holds/);
      for (let i = 0; i < 50 && !closed; i++) await sleep(100);
      assert.ok(closed, 'the proxy closed the remote connection');
      assert.ok(wrote < (100 << 20), `the remote stopped at ${wrote} bytes`);
    } finally { pass(); }
  });

  test('an endless stream: passed as it arrives; when the app leaves, the remote connection is closed', async () => {
    let closed = false, events = 0;
    hostile.setHooks({
      onAnswer: (req) => (req.method === 'POST' ? {
        async write(sock) {
          sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
          sock.on('close', () => { closed = true; });
          while (!closed) {
            const ev = Buffer.from(`data: {"id":"x","choices":[{"delta":{"content":"t${events++}"}}]}\n\n`);
            sock.write(Buffer.concat([Buffer.from(`${ev.length.toString(16)}\r\n`), ev, Buffer.from('\r\n')]));
            await sleep(5);
          }
        },
      } : undefined),
    });
    try {
      let got = 0;
      const { RawConn } = await import('./lib/http.mjs');
      const c = new RawConn(lp.port);
      const p = c.request({ method: 'POST', path: '/v1/chat/completions', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(chatReq({ stream: true })), onBody: (piece) => { got += (piece.toString().match(/^data: /gm) ?? []).length; if (got >= 20) c.destroy(); } });
      await p.catch(() => {});
      assert.ok(got >= 20, `the events came as they arrived (${got})`);
      for (let i = 0; i < 100 && !closed; i++) await sleep(100);
      assert.ok(closed, 'the proxy closed the remote connection after the app left');
    } finally { pass(); }
    assert.match(lp.stderr(), /POST \/v1\/chat\/completions 200 \d+B \d+ms app-left/);
  });

  test('one stream event that never ends: the error event past the 16 MiB bound, no [DONE]', async () => {
    let closed = false;
    hostile.setHooks({
      onAnswer: (req) => (req.method === 'POST' ? {
        async write(sock) {
          sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
          sock.on('close', () => { closed = true; });
          const piece = Buffer.concat([Buffer.from('data: '), Buffer.alloc((1 << 20) - 6, 0x62)]);
          const chunk = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
          for (let i = 0; i < 40 && !closed; i++) if (!sock.write(chunk)) await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
        },
      } : undefined),
    });
    try {
      const r = await post(lp, '/v1/chat/completions', chatReq({ stream: true }), {}, { timeoutMs: 60000 });
      assert.equal(r.status, 200);
      const b = r.body.toString();
      assert.ok(r.body.length < 4096, `nothing of the endless event was released (${r.body.length} bytes)`);
      assert.match(b, /^data: \{"error":\{"message":"the remote's answer broke off: the answer is larger than this proxy holds"/);
      assert.doesNotMatch(b, DONE_ANY);
    } finally { pass(); }
    const ok = await sdk(lp).chat.completions.create(chatReq());
    assert.match(ok.choices[0].message.content, /Hello/);
  });
});
