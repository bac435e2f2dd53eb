// The local verifying proxy under concurrency (issue 13; docs/RELIABILITY.md "Local verifying
// proxy"). It is the verifier's one multi-threaded program: a thread per app connection, the
// attestation thread, a mutex-protected state between them. These cases make the threads
// meet, so that `make tsan` (build-tsan/, where any ThreadSanitizer report makes the program
// exit 66 and lp.problems() say so) has something to see:
//   - 16 app connections at once (half kept alive, half a new connection per request) send
//     chat and text completions, streamed and not, while the status documents are read in a
//     loop and the remote's TLS key changes mid-way (rotateCert): the relay threads meet the
//     new key, call lp_att_kick together, wait on the same re-verification, and go on under
//     the new pins. Every answer the app gets is a verified one (or a 503 while the remote is
//     being re-verified, nothing else); the counters of GET /verification equal what the apps
//     saw; the new key is pinned;
//   - SIGTERM with streams under way and an idle keep-alive connection: the streams finish
//     (each ends with [DONE]), the idle connection is closed at once, the process exits 0
//     after the connection threads ended (not through exit() under them: OpenSSL's atexit
//     cleanup would free what they use).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { haveBinary, sleep } from './lib/harness.mjs';
import { poll } from './lib/common.mjs';
import { rawRequest, RawConn } from './lib/http.mjs';
import { startRemote } from './lib/remote-tls.mjs';
import { startLocal, chatReq, complReq, post } from './lib/local-proxy.mjs';

const have = haveBinary('vllm-proxy-verify');
const CONNS = 16;
const PER_CONN = 6;

/** The text of an SSE body (chat deltas or completion texts), and whether it ended with [DONE]. */
function sseText(body) {
  let text = '';
  let done = false;
  let error = null;
  for (const ev of body.toString().split('\n\n')) {
    const d = ev.startsWith('data: ') ? ev.slice(6) : null;
    if (d === null) continue;
    if (d === '[DONE]') { done = true; continue; }
    const j = JSON.parse(d);
    if (j.error) error = j.error;
    text += j.choices?.[0]?.delta?.content ?? j.choices?.[0]?.text ?? '';
  }
  return { text, done, error };
}

/** One request of kind k (0..3) on conn (a RawConn) or a fresh connection. */
async function one(lp, conn, k) {
  const stream = k % 2 === 1;
  const chat = k < 2;
  const path = chat ? '/v1/chat/completions' : '/v1/completions';
  const body = JSON.stringify(chat ? chatReq({ stream }) : complReq({ stream }));
  const opts = { method: 'POST', path, headers: { 'Content-Type': 'application/json' }, body, timeoutMs: 60000 };
  const r = conn ? await conn.request(opts) : await rawRequest(lp.port, opts);
  if (r.status === 503) {
    const e = JSON.parse(r.body.toString()).error;
    return { status: 503, code: e.code, message: e.message };
  }
  if (r.status !== 200) return { status: r.status, body: r.body.toString().slice(0, 400) };
  if (stream) {
    const s = sseText(r.body);
    return { status: 200, stream, ok: s.done && !s.error && /Hello/.test(s.text), detail: s.error ?? s.text };
  }
  const j = JSON.parse(r.body.toString());
  const text = chat ? j.choices[0].message.content : j.choices[0].text;
  return { status: 200, stream, ok: r.headers['x-verify'] === 'verified' && /Hello/.test(text), detail: text };
}

describe('local verifying proxy: concurrency', { skip: !have && 'vllm-proxy-verify not built' }, () => {
  let remote;
  before(async () => {
    remote = await startRemote();
  });
  after(async () => {
    await remote?.stop();
  });

  for (const e2ee of ['off', 'auto']) {
    test(`--e2ee ${e2ee}: ${CONNS} connections, streamed and not, the status documents read, the TLS key rotated mid-way: only verified answers, counters exact`, async (t) => {
      const lp = await startLocal(remote.url, ['--allow-simulated', '--e2ee', e2ee]);
      try {
        const s0 = await lp.status();
        assert.equal(s0.keys.pinned.tls_spki, remote.spkiSha256);
        let finished = 0;
        let rotated = null;
        let rotation = null;
        const results = [];
        const worker = async (w) => {
          const conn = w % 2 === 0 ? new RawConn(lp.port) : null;
          try {
            for (let i = 0; i < PER_CONN; i++) {
              const r = await one(lp, conn, (w + i) % 4);
              results.push({ w, i, after: rotated !== null, ...r });
              // the key changes when a third of the requests are in: the rest meet it
              if (++finished === Math.floor((CONNS * PER_CONN) / 3)) rotation = remote.rotateCert().then((k) => { rotated = k; });
            }
          } finally {
            conn?.close();
          }
        };
        let polling = true;
        const polls = { json: 0, html: 0 };
        const poller = (async () => {
          while (polling) {
            const [j, h] = await Promise.all([rawRequest(lp.port, { path: '/verification' }), rawRequest(lp.port, { path: '/' })]);
            assert.equal(j.status, 200);
            assert.equal(h.status, 200);
            JSON.parse(j.body.toString()); // whole, never torn
            assert.match(h.body.toString(), /<\/html>\s*$/);
            polls.json++;
            polls.html++;
          }
        })();
        await Promise.all(Array.from({ length: CONNS }, (_, w) => worker(w)));
        await rotation;
        polling = false;
        await poller;
        assert.ok(rotated, 'the key was rotated during the run');
        assert.ok(polls.json > 0);

        const bad = results.filter((r) => !(r.status === 200 && r.ok) && !(r.status === 503 && r.code === 'remote_not_verified'));
        assert.deepEqual(bad, [], 'every answer verified, or 503 while the remote was re-verified');
        const ok = results.filter((r) => r.status === 200);
        assert.equal(results.length, CONNS * PER_CONN);
        assert.ok(ok.length >= (CONNS * PER_CONN) / 2, `${ok.length} of ${results.length} served`);

        // one more on a new connection: it meets the new key if none did yet, and is served
        const last = await post(lp, '/v1/chat/completions', chatReq());
        assert.equal(last.status, 200, last.body.toString().slice(0, 300));
        assert.equal(last.headers['x-verify'], 'verified');

        const s1 = await lp.status();
        assert.equal(s1.verified, true);
        assert.equal(s1.keys.pinned.tls_spki, rotated, 'the new key is pinned');
        assert.ok(s1.generation > s0.generation, `generation ${s0.generation} -> ${s1.generation}`);
        // every signed answer counted once, by the thread that relayed it, under the lock
        assert.equal(s1.answers.verified - s0.answers.verified, ok.length + 1);
        assert.equal(s1.answers.rejected - s0.answers.rejected, 0);
        const logged = new RegExp(`verified \\(TLS key ${rotated}, generation ${s1.generation}\\)`);
        await poll(() => logged.test(lp.stderr()), { timeoutMs: 5000 }); // stderr is a pipe: it may come after the answer
        assert.match(lp.stderr(), logged);
        t.diagnostic(`--e2ee ${e2ee}: ${ok.length} verified, ${results.length - ok.length} 503 while re-verifying; generation ${s0.generation} -> ${s1.generation}; ${polls.json} status reads`);
      } finally {
        await lp.stop();
      }
      assert.equal(lp.problems(), null);
    });
  }

  test('SIGTERM with streams under way and an idle connection: the streams end with [DONE], the idle one is closed, exit 0 after the threads ended', async () => {
    const lp = await startLocal(remote.url, ['--allow-simulated', '--e2ee', 'off']);
    let idleClosedAt = null;
    const idle = new RawConn(lp.port);
    try {
      const r0 = await idle.request({ path: '/verification' });
      assert.equal(r0.status, 200);
      idle.sock.on('close', () => { idleClosedAt = Date.now(); });
      // 40 tokens, 20 ms apart: each stream lasts about 0.8 s
      const body = JSON.stringify(chatReq({ stream: true, max_tokens: 40, mock_delay_us: 20000 }));
      const started = [];
      const streams = Array.from({ length: 6 }, () => {
        let first;
        started.push(new Promise((r) => { first = r; }));
        return rawRequest(lp.port, {
          method: 'POST', path: '/v1/chat/completions', headers: { 'Content-Type': 'application/json' }, body,
          timeoutMs: 30000, onBody: () => first(),
        });
      });
      await Promise.all(started); // every stream has sent its first events
      const t0 = Date.now();
      const exit = await lp.stop();
      const tExit = Date.now();
      assert.deepEqual(exit, { code: 0, sig: null }, lp.stderr().slice(-3000));
      for (const r of await Promise.all(streams)) {
        assert.equal(r.status, 200);
        const s = sseText(r.body);
        assert.equal(s.error, null);
        assert.ok(s.done, 'the stream under way at SIGTERM was finished, verified, [DONE] released');
        assert.ok(r.complete, 'the chunked body ended as framed');
      }
      for (let i = 0; i < 50 && idleClosedAt === null; i++) await sleep(20);
      assert.ok(idleClosedAt !== null, 'the idle keep-alive connection was closed');
      assert.ok(idleClosedAt - t0 < 2500, `the idle connection closed ${idleClosedAt - t0} ms after SIGTERM (not at the grace's end)`);
      assert.ok(tExit - t0 < 2900, `exited ${tExit - t0} ms after SIGTERM, before the 3 s grace`);
      assert.doesNotMatch(lp.stderr(), /still under way/);
      assert.equal((lp.stderr().match(/^lp: POST \/v1\/chat\/completions 200 .* verified$/gm) ?? []).length, 6, lp.stderr().slice(-2000));
    } finally {
      idle.close();
      await lp.stop();
    }
    assert.equal(lp.problems(), null);
  });
});
