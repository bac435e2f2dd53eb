// A hostile remote for the local verifying proxy's adversarial tests (issue 13): a TLS server
// that presents the remote's own certificate and key (so the attested, pinned key matches: it
// stands for a remote whose TLS key is in the wrong hands) and relays each request to the
// remote's plain vllm-proxy port, then lets the test rewrite the request or the answer.
//
// Unlike lib/tamper.mjs (which relays as the bytes arrive), every answer is read whole from
// the remote first and then handed to the test's hook as a parsed object; the hook returns
// what to send (a re-framed answer, raw bytes, or a writer of its own for endless answers).
// Signatures stay the attested key's: whatever the hook changes, it cannot sign.
//
// startHostile({target, onRequest, onAnswer}) → {url, port, seen (requests: {method, path,
// target}), setHooks({onRequest, onAnswer}), stop()}:
//   onRequest(req) → req'   req: {method, target, path, fields [[k, v]], body Buffer}; the
//                           hook may return an edited copy (the body is re-framed with its
//                           Content-Length)
//   onAnswer(req, ans) → undefined (send as received) | Buffer (raw bytes) |
//                        {ans} (re-framed by frame()) | {write(sock)} (a writer; the connection
//                        ends when its promise resolves)
//     ans: {statusLine, status, fields [[k, v]], body Buffer (de-chunked), chunked,
//           trailers [[k, v]] (chunked only), raw Buffer (as received)}
// frame(ans): head + body, chunked (one chunk per SSE event, then the trailers) or with a
// Content-Length.

import net from 'node:net';
import tls from 'node:tls';

const CRLF = Buffer.from('\r\n');
const CRLF2 = Buffer.from('\r\n\r\n');

class Reader {
  constructor(sock) {
    this.buf = Buffer.alloc(0);
    this.eof = false;
    this.waiter = null;
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this._wake(); });
    for (const ev of ['end', 'close', 'error']) sock.on(ev, () => { this.eof = true; this._wake(); });
  }

  _wake() { const w = this.waiter; this.waiter = null; if (w) w(); }

  _more() { return this.eof ? Promise.resolve(false) : new Promise((r) => { this.waiter = () => r(true); }); }

  async until(delim) {
    for (;;) {
      const i = this.buf.indexOf(delim);
      if (i >= 0) { const out = this.buf.subarray(0, i + delim.length); this.buf = this.buf.subarray(i + delim.length); return out; }
      if (!(await this._more()) && this.buf.indexOf(delim) < 0) return null;
    }
  }

  async exact(n) {
    while (this.buf.length < n) if (!(await this._more()) && this.buf.length < n) return null;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async rest() {
    while (await this._more());
    const out = this.buf;
    this.buf = Buffer.alloc(0);
    return out;
  }
}

function parseHead(raw) {
  const lines = raw.toString('latin1').split('\r\n').slice(0, -2);
  const first = lines.shift();
  return { first, fields: lines.map((l) => { const i = l.indexOf(':'); return [l.slice(0, i), l.slice(i + 1).trim()]; }) };
}

const get = (fields, name) => fields.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);

/** The answer re-framed: chunked (one chunk per SSE event, then trailers) or with a Content-Length. */
export function frame(ans) {
  const fields = ans.fields.filter(([k]) => !/^(content-length|transfer-encoding)$/i.test(k));
  if (ans.chunked) fields.push(['Transfer-Encoding', 'chunked']);
  else fields.push(['Content-Length', String(ans.body.length)]);
  const head = Buffer.from(`${ans.statusLine}\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1');
  if (!ans.chunked) return Buffer.concat([head, ans.body]);
  const parts = [head];
  const s = ans.body.toString('latin1');
  const pieces = s.split(/(?<=\n\n)/).filter((p) => p.length);
  for (const p of pieces) {
    const b = Buffer.from(p, 'latin1');
    parts.push(Buffer.from(`${b.length.toString(16)}\r\n`), b, CRLF);
  }
  parts.push(Buffer.from(`0\r\n${(ans.trailers ?? []).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1'));
  return Buffer.concat(parts);
}

/** One exchange with the remote's plain port: the request bytes out, the answer read whole. */
async function exchange(port, reqBytes, method) {
  const up = net.connect({ port, host: '127.0.0.1' });
  const r = new Reader(up);
  await new Promise((resolve, reject) => { up.once('connect', resolve); up.once('error', reject); });
  up.write(reqBytes);
  try {
    for (;;) {
      const headRaw = await r.until(CRLF2);
      if (!headRaw) throw new Error('hostile: the remote closed before a head');
      const h = parseHead(headRaw);
      const status = Number(h.first.split(' ')[1]);
      if (status < 200) continue;
      const ans = { statusLine: h.first, status, fields: h.fields, body: Buffer.alloc(0), chunked: false, trailers: [] };
      const parts = [headRaw];
      if (method === 'HEAD' || status === 204 || status === 304) {
        /* bodiless */
      } else if (get(h.fields, 'transfer-encoding').some((v) => /chunked/i.test(v))) {
        ans.chunked = true;
        const body = [];
        for (;;) {
          const line = await r.until(CRLF);
          parts.push(line);
          const n = parseInt(line.toString('latin1'), 16);
          if (n === 0) {
            for (;;) {
              const t = await r.until(CRLF);
              parts.push(t);
              if (t.length === 2) break;
              const s = t.toString('latin1').slice(0, -2), i = s.indexOf(':');
              ans.trailers.push([s.slice(0, i), s.slice(i + 1).trim()]);
            }
            break;
          }
          const d = await r.exact(n + 2);
          parts.push(d);
          body.push(d.subarray(0, n));
        }
        ans.body = Buffer.concat(body);
      } else if (get(h.fields, 'content-length').length) {
        ans.body = await r.exact(Number(get(h.fields, 'content-length')[0]));
        parts.push(ans.body);
      } else {
        ans.body = await r.rest();
        parts.push(ans.body);
      }
      ans.raw = Buffer.concat(parts);
      return ans;
    }
  } finally {
    up.destroy();
  }
}

export async function startHostile({ target, onRequest = null, onAnswer = null }) {
  let hooks = { onRequest, onAnswer };
  const seen = [];
  const sockets = new Set();
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    const c = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: tls.createSecureContext({ cert: target.certPem, key: target.keyPem }),
      ALPNProtocols: ['http/1.1'],
    });
    c.on('error', () => c.destroy());
    serve(c).then(() => c.end(), () => c.destroy());
  });

  async function serve(c) {
    const r = new Reader(c);
    for (;;) {
      const headRaw = await r.until(CRLF2);
      if (!headRaw) return;
      const h = parseHead(headRaw);
      const [method, tgt] = h.first.split(' ');
      const n = Number(get(h.fields, 'content-length')[0] ?? 0);
      const body = n ? await r.exact(n) : Buffer.alloc(0);
      if (n && !body) return;
      let req = { method, target: tgt, path: tgt.split('?')[0], fields: h.fields, body };
      seen.push({ method, path: req.path, target: tgt });
      if (hooks.onRequest) req = hooks.onRequest(req) ?? req;
      const fields = req.fields.filter(([k]) => !/^content-length$/i.test(k));
      if (n || req.body.length) fields.push(['Content-Length', String(req.body.length)]);
      const out = Buffer.concat([Buffer.from(`${req.method} ${req.target} HTTP/1.1\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1'), req.body]);
      const ans = await exchange(target.port, out, req.method);
      const res = hooks.onAnswer ? hooks.onAnswer(req, ans) : undefined;
      if (res === undefined) c.write(ans.raw);
      else if (Buffer.isBuffer(res)) c.write(res);
      else if (res.ans) c.write(frame(res.ans));
      else if (res.write) { await res.write(c); return; }
      if (get(ans.fields, 'connection').some((v) => /close/i.test(v))) return;
    }
  }

  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
  const port = server.address().port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    seen,
    setHooks(h) { hooks = { onRequest: null, onAnswer: null, ...h }; },
    stop() {
      for (const s of sockets) s.destroy();
      return new Promise((res) => server.close(() => res()));
    },
  };
}
