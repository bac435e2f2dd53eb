// A tampering relay for the local verifying proxy's tests (issue 13): a TLS server that
// presents the remote's own certificate and key (so a pinned key matches) and relays each
// HTTP/1.1 request to the remote's plain vllm-proxy port, editing the answers by mode.
//
// It is a minimal HTTP/1.1 proxy on raw sockets (no node:http): requests and answers are
// framed here (Content-Length, chunked with chunk extensions and trailers, close-delimited,
// bodiless HEAD/1xx/204/304), one upstream connection per client connection, kept alive as
// long as both sides keep theirs, one exchange at a time. The bytes are relayed as they came,
// chunk by chunk as they arrive (a stream stays a stream), except where the mode edits them:
//
//   pass            byte-exact relay, heads, chunk framing and trailers included
//   flip-byte       in 2xx answers to POST /v1/*: the first ASCII letter or digit of the first
//                   non-empty "content" (or "text") JSON string value changes case (a digit
//                   d becomes d+1 mod 10): one byte, same length and framing, still valid JSON;
//                   streamed (SSE in chunks, split anywhere) or not
//   drop-trailer    a chunked answer ends with "0\r\n\r\n": its trailer fields are dropped
//                   (the head, `Trailer:` included, is left as it was)
//   swap-signature  X-Signature-Ecdsa, X-Signature-Ed25519 and X-Signature-Text, in heads or
//                   trailers, are replaced by those of the previous answer relayed that had
//                   them, and the body of a GET /v1/signature/... answer by the previous one
//                   (same signing_algo): valid signatures by the same key, over other bytes.
//                   The first answer of each kind passes unchanged (nothing to swap in yet)
//   replay-report   GET /v1/attestation/report is answered, from the second on, with the
//                   first report relayed (head and body), whatever nonce is asked; the remote
//                   sees only the first
//   other-cert      a pass relay that presents another certificate and key (made at start)
//
// Capture (any mode): capture(true) starts recording, from empty, every byte the relay
// receives from the local proxy (up: requests, TLS removed) and writes to it (down: answers,
// as edited), on every connection; captured() → {up: Buffer, down: Buffer}; capture(false)
// stops. What anything between the local proxy and the CVM would see.
//
// startTamper({target, mode}) → {url, port, setMode(m), mode(), stats(), capture(on),
// captured(), stop()}; target is
// a startRemote() object (its certPem/keyPem are read at each new connection, so a rotated
// remote key is followed, and its port is vllm-proxy's plain port).

import net from 'node:net';
import tls from 'node:tls';
import { makeCert } from './remote-tls.mjs';

export const MODES = ['pass', 'flip-byte', 'drop-trailer', 'swap-signature', 'replay-report', 'other-cert'];
const SIG_FIELDS = ['x-signature-ecdsa', 'x-signature-ed25519', 'x-signature-text'];
const MAX_HEAD = 256 * 1024;
const CRLF = Buffer.from('\r\n');
const CRLF2 = Buffer.from('\r\n\r\n');

/** Buffered async reader over a socket. Every read resolves null at EOF before it is met. */
class Reader {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.eof = false;
    this.waiter = null;
    sock.on('data', (d) => { this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d; this._wake(); });
    sock.on('end', () => { this.eof = true; this._wake(); });
    sock.on('close', () => { this.eof = true; this._wake(); });
    sock.on('error', () => { this.eof = true; this._wake(); });
  }

  _wake() { const w = this.waiter; this.waiter = null; if (w) w(); }

  _more() {
    if (this.eof) return Promise.resolve(false);
    return new Promise((r) => { this.waiter = () => r(true); });
  }

  /** Bytes up to and including delim; null at EOF first. */
  async until(delim, max) {
    let from = 0;
    for (;;) {
      const i = this.buf.indexOf(delim, from);
      if (i >= 0) {
        const out = this.buf.subarray(0, i + delim.length);
        this.buf = this.buf.subarray(i + delim.length);
        return out;
      }
      if (this.buf.length > max) throw new Error('tamper: head or line too long');
      from = Math.max(0, this.buf.length - delim.length + 1);
      if (!(await this._more()) && !this.buf.includes(delim)) return null;
    }
  }

  /** Up to n bytes, at least one; null at EOF. */
  async some(n) {
    while (!this.buf.length) if (!(await this._more()) && !this.buf.length) return null;
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  /** Exactly n bytes; null at EOF first. */
  async exact(n) {
    while (this.buf.length < n) if (!(await this._more()) && this.buf.length < n) return null;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

function parseHead(raw) {
  const lines = raw.toString('latin1').split('\r\n').slice(0, -2);
  const first = lines.shift();
  const fields = lines.map((l) => {
    const i = l.indexOf(':');
    if (i <= 0) throw new Error(`tamper: bad header line ${JSON.stringify(l)}`);
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const get = (n) => fields.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  return { first, fields, get };
}

function serializeHead(first, fields) {
  return Buffer.from(`${first}\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1');
}

/** Trailer section bytes (after "0\r\n", up to and including the final CRLF) → fields. */
function parseTrailers(raw) {
  return raw.toString('latin1').split('\r\n').filter((l) => l).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
}

/** Byte-wise search for the first letter/digit of a non-empty "content"/"text" string. */
class Flipper {
  constructor() { this.done = false; this.tail = ''; this.inStr = false; this.esc = false; }

  /** Edits buf in place (a copy is made by the caller); true when it flipped a byte here. */
  feed(buf) {
    if (this.done) return false;
    for (let i = 0; i < buf.length; i++) {
      const b = buf[i];
      if (this.inStr) {
        if (this.esc) { this.esc = false; continue; }
        if (b === 0x5c) { this.esc = true; continue; }
        if (b === 0x22) { this.inStr = false; this.tail = ''; continue; }
        if ((b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)) buf[i] = b ^ 0x20;
        else if (b >= 0x30 && b <= 0x39) buf[i] = 0x30 + ((b - 0x30 + 1) % 10);
        else continue;
        this.done = true;
        return true;
      }
      this.tail = (this.tail + String.fromCharCode(b)).slice(-11);
      if (this.tail.endsWith('"content":"') || this.tail.endsWith('"text":"')) { this.inStr = true; this.esc = false; }
    }
    return false;
  }
}

export async function startTamper({ target, mode = 'pass' } = {}) {
  if (!MODES.includes(mode)) throw new Error(`tamper: unknown mode ${mode}`);
  let cur = mode;
  const other = makeCert('localhost');
  const ctxCache = new Map();
  const ctxFor = (c) => {
    let ctx = ctxCache.get(c.certPem);
    if (!ctx) { ctx = tls.createSecureContext({ cert: c.certPem, key: c.keyPem }); ctxCache.set(c.certPem, ctx); }
    return ctx;
  };
  const stats = { requests: {}, seq: [], connections: 0, flipped: 0, droppedTrailers: 0, swapped: 0, replayed: 0 };
  const prev = {}; // previous answer's signature fields (lower-case name → value)
  const prevSigBody = {}; // signing_algo → {head fields, body} of the previous /v1/signature answer
  let firstReport = null; // raw bytes of the first report answer
  const sockets = new Set();
  let cap = null; // {up: [], down: []} while capturing

  const server = net.createServer((raw) => {
    stats.connections++;
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    const c = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: cur === 'other-cert' ? ctxFor(other) : ctxFor({ certPem: target.certPem, keyPem: target.keyPem }),
      ALPNProtocols: ['http/1.1'],
    });
    c.on('error', () => { c.destroy(); });
    c.on('data', (d) => { if (cap) cap.up.push(Buffer.from(d)); });
    const write = c.write.bind(c);
    c.write = (d, ...rest) => {
      if (cap) cap.down.push(Buffer.from(d));
      return write(d, ...rest);
    };
    c.setNoDelay?.(true);
    raw.setNoDelay(true);
    // a normal end flushes what was written (end); a failure cuts the connection (destroy)
    serve(c).then(() => c.end(), () => c.destroy());
  });

  async function serve(c) {
    const cr = new Reader(c);
    let up = null, ur = null;
    try {
      for (;;) {
        const headRaw = await cr.until(CRLF2, MAX_HEAD);
        if (!headRaw) return;
        const req = parseHead(headRaw);
        const [method, target_, version] = req.first.split(' ');
        const pathOnly = (target_ ?? '').split('?')[0];
        stats.requests[pathOnly] = (stats.requests[pathOnly] ?? 0) + 1;
        stats.seq.push(`${method} ${pathOnly.startsWith('/v1/signature/') ? '/v1/signature/*' : pathOnly}`);
        if (stats.seq.length > 200) stats.seq.shift();
        // the request body, raw; a client that waits for 100 Continue (libcurl does for large
        // bodies) gets it here, and the head goes on without its Expect
        const parts = [headRaw];
        if (req.get('expect').some((v) => /100-continue/i.test(v))) {
          c.write('HTTP/1.1 100 Continue\r\n\r\n');
          parts[0] = serializeHead(req.first, req.fields.filter(([k]) => k.toLowerCase() !== 'expect'));
        }
        if (req.get('transfer-encoding').some((v) => /chunked/i.test(v))) {
          for (;;) {
            const line = await cr.until(CRLF, 4096);
            if (!line) return;
            parts.push(line);
            const size = parseInt(line.toString('latin1'), 16);
            if (size === 0) {
              for (;;) { const t = await cr.until(CRLF, MAX_HEAD); if (!t) return; parts.push(t); if (t.length === 2) break; }
              break;
            }
            const d = await cr.exact(size + 2);
            if (!d) return;
            parts.push(d);
          }
        } else {
          const n = Number(req.get('content-length')[0] ?? 0);
          if (n > 0) { const d = await cr.exact(n); if (!d) return; parts.push(d); }
        }
        const reqClose = req.get('connection').some((v) => /close/i.test(v)) || version === 'HTTP/1.0';

        if (cur === 'replay-report' && method === 'GET' && pathOnly === '/v1/attestation/report' && firstReport) {
          stats.replayed++;
          c.write(firstReport);
          if (reqClose) { c.end(); return; }
          continue;
        }

        if (!up || ur.eof) {
          up?.destroy();
          up = net.connect({ port: target.port, host: '127.0.0.1' });
          up.setNoDelay(true);
          ur = new Reader(up);
          await new Promise((resolve, reject) => { up.once('connect', resolve); up.once('error', reject); });
        }
        up.write(Buffer.concat(parts));
        const r = await relayAnswer(c, ur, method, pathOnly);
        if (r.close || reqClose) { c.end(); return; }
      }
    } finally {
      up?.destroy();
    }
  }

  /** Reads one answer from ur and writes it, edited by the mode, to c. */
  async function relayAnswer(c, ur, method, pathOnly) {
    const mode_ = cur;
    let headRaw, res, status;
    for (;;) { // 1xx heads are relayed as they are
      headRaw = await ur.until(CRLF2, MAX_HEAD);
      if (!headRaw) throw new Error('tamper: upstream closed before a head');
      res = parseHead(headRaw);
      status = Number(res.first.split(' ')[1]);
      if (status >= 200 || status === 101) break;
      c.write(headRaw);
    }
    const ok = status >= 200 && status < 300;
    const inference = ok && method === 'POST' && pathOnly.startsWith('/v1/');
    const sigRoute = ok && method === 'GET' && pathOnly.startsWith('/v1/signature/');
    const report = ok && method === 'GET' && pathOnly === '/v1/attestation/report';
    const flip = mode_ === 'flip-byte' && inference ? new Flipper() : null;
    const close = res.get('connection').some((v) => /close/i.test(v));
    const chunked = res.get('transfer-encoding').some((v) => /chunked/i.test(v));
    const bodiless = method === 'HEAD' || status === 204 || status === 304;
    const clen = res.get('content-length')[0];
    const seen = {}; // this answer's signature fields, original values

    // the head: swap-signature edits its signature fields
    let fields = res.fields;
    for (const [k, v] of fields) if (SIG_FIELDS.includes(k.toLowerCase())) seen[k.toLowerCase()] = v;
    const swapIn = (fs) => fs.map(([k, v]) => {
      const n = k.toLowerCase();
      if (SIG_FIELDS.includes(n) && prev[n] !== undefined && prev[n] !== v) { stats.swapped++; return [k, prev[n]]; }
      return [k, v];
    });

    // GET /v1/signature/...: a small Content-Length body, read whole
    if (sigRoute && !chunked && clen !== undefined) {
      let body = await ur.exact(Number(clen));
      if (!body) throw new Error('tamper: upstream closed in a body');
      let algo = 'ecdsa';
      try { algo = JSON.parse(body.toString()).signing_algo ?? algo; } catch { /* not JSON */ }
      const orig = body;
      if (mode_ === 'swap-signature' && prevSigBody[algo] && !prevSigBody[algo].equals(body)) {
        body = prevSigBody[algo];
        stats.swapped++;
        fields = fields.map(([k, v]) => (k.toLowerCase() === 'content-length' ? [k, String(body.length)] : [k, v]));
        c.write(serializeHead(res.first, fields));
      } else c.write(headRaw);
      c.write(body);
      prevSigBody[algo] = orig;
      return { close };
    }

    if (mode_ === 'swap-signature' && Object.keys(seen).length) c.write(serializeHead(res.first, swapIn(fields)));
    else c.write(headRaw);

    const keep = report && !firstReport ? [headRaw] : null;
    const out = (buf) => { if (keep) keep.push(buf); c.write(buf); };
    const body = (buf) => {
      if (!flip || flip.done) return buf;
      const copy = Buffer.from(buf);
      if (flip.feed(copy)) stats.flipped++;
      return copy;
    };

    if (bodiless) {
      /* nothing */
    } else if (chunked) {
      for (;;) {
        const line = await ur.until(CRLF, 4096);
        if (!line) throw new Error('tamper: upstream closed in a chunked body');
        const size = parseInt(line.toString('latin1'), 16);
        if (Number.isNaN(size)) throw new Error('tamper: bad chunk size line');
        if (size === 0) {
          const tparts = [];
          for (;;) { const t = await ur.until(CRLF, MAX_HEAD); if (!t) throw new Error('tamper: upstream closed in trailers'); tparts.push(t); if (t.length === 2) break; }
          const traw = Buffer.concat(tparts);
          const tf = parseTrailers(traw);
          for (const [k, v] of tf) if (SIG_FIELDS.includes(k.toLowerCase())) seen[k.toLowerCase()] = v;
          out(line);
          if (mode_ === 'drop-trailer') { if (tf.length) stats.droppedTrailers++; out(CRLF); }
          else if (mode_ === 'swap-signature' && tf.some(([k]) => SIG_FIELDS.includes(k.toLowerCase()))) {
            out(Buffer.from(`${swapIn(tf).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1'));
          } else out(traw);
          break;
        }
        out(line);
        let left = size;
        while (left > 0) {
          const d = await ur.some(left);
          if (!d) throw new Error('tamper: upstream closed in a chunk');
          left -= d.length;
          out(body(d));
        }
        const end = await ur.exact(2);
        if (!end) throw new Error('tamper: upstream closed in a chunk');
        out(end);
      }
    } else if (clen !== undefined) {
      let left = Number(clen);
      while (left > 0) {
        const d = await ur.some(left);
        if (!d) throw new Error('tamper: upstream closed in a body');
        left -= d.length;
        out(body(d));
      }
    } else {
      for (;;) { const d = await ur.some(65536); if (!d) break; out(body(d)); }
      if (keep) firstReport = Buffer.concat(keep);
      return { close: true };
    }
    if (keep) firstReport = Buffer.concat(keep);
    for (const [k, v] of Object.entries(seen)) prev[k] = v;
    return { close };
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    otherSpkiSha256: other.spkiSha256,
    setMode(m) {
      if (!MODES.includes(m)) throw new Error(`tamper: unknown mode ${m}`);
      cur = m;
    },
    mode: () => cur,
    /** {requests: {path: n}, connections, flipped, droppedTrailers, swapped, replayed} */
    stats: () => structuredClone(stats),
    capture(on) { cap = on ? { up: [], down: [] } : null; },
    captured: () => ({ up: Buffer.concat(cap?.up ?? []), down: Buffer.concat(cap?.down ?? []) }),
    stop() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
