// Raw HTTP/1.1 client over node:net for the integration tests. It returns the exact body
// bytes that came over the wire (de-chunked, never decoded or re-serialised), keeps the
// connection open between requests, and reports truncated bodies instead of hiding them,
// so the tests can hash precisely what a client received.

import net from 'node:net';

const CRLF2 = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

function parseHead(text) {
  const lines = text.split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
  const headers = {};
  const headerList = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headerList.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { httpVersion: m[1], status: Number(m[2]), statusText: m[3] ?? '', headers, headerList };
}

/**
 * One keep-alive connection; one request in flight at a time.
 * request() resolves with {status, statusText, headers, headerList, rawHead, body (Buffer),
 * complete (body ended as framed), closed (socket closed after/while reading)}.
 * It rejects only when the connection fails before any response head arrived, or on timeout.
 */
export class RawConn {
  constructor(port, host = '127.0.0.1') {
    this.port = port;
    this.host = host;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.pending = null;
    this.requestsSent = 0;
  }

  connect() {
    if (this.sock) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port: this.port, host: this.host });
      sock.setNoDelay(true);
      const onErr = (e) => reject(e);
      sock.once('error', onErr);
      sock.once('connect', () => {
        sock.off('error', onErr);
        this.sock = sock;
        sock.on('data', (d) => this._onData(d));
        sock.on('error', (e) => { this.lastError = e; });
        sock.on('close', () => { this.closed = true; this._onClose(); });
        resolve(this);
      });
    });
  }

  /** Send raw bytes (for malformed-request tests). */
  async writeRaw(bytes) {
    await this.connect();
    this.sock.write(bytes);
  }

  /**
   * opts: method, path, headers (object; Host and Content-Length added unless present),
   * body (string|Buffer), chunks (array of string|Buffer: sent with Transfer-Encoding: chunked),
   * onBody(piece, state) called with every de-chunked body piece as it arrives,
   * timeoutMs (default 20000), expectNoBody (HEAD).
   */
  async request(opts = {}) {
    await this.connect();
    if (this.closed) throw new Error('connection already closed');
    const method = opts.method ?? 'GET';
    const headers = { ...(opts.headers ?? {}) };
    const has = (n) => Object.keys(headers).some((k) => k.toLowerCase() === n);
    if (!has('host')) headers.Host = `${this.host}:${this.port}`;
    let body = opts.body == null ? null : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body);
    if (opts.chunks) {
      headers['Transfer-Encoding'] = 'chunked';
      const parts = [];
      for (const c of opts.chunks) {
        const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
        if (b.length === 0) continue;
        parts.push(Buffer.from(b.length.toString(16) + '\r\n'), b, CRLF);
      }
      parts.push(Buffer.from('0\r\n\r\n'));
      body = Buffer.concat(parts);
    } else if (body && !has('content-length')) {
      headers['Content-Length'] = String(body.length);
    } else if (!body && (method === 'POST' || method === 'PUT') && !has('content-length')) {
      headers['Content-Length'] = '0';
    }
    let head = `${method} ${opts.path ?? '/'} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      if (v === undefined || v === null) continue;
      head += `${k}: ${v}\r\n`;
    }
    head += '\r\n';
    const timeoutMs = opts.timeoutMs ?? 20000;
    const p = new Promise((resolve, reject) => {
      this.pending = {
        resolve, reject, method, onBody: opts.onBody,
        state: 'head', res: null, bodyParts: [], remaining: 0,
        timer: setTimeout(() => {
          const st = this.pending;
          this.pending = null;
          this.destroy();
          if (st && st.res) resolve(this._finish(st, false));
          else reject(new Error(`timeout after ${timeoutMs} ms waiting for ${method} ${opts.path}`));
        }, timeoutMs),
      };
    });
    this.requestsSent++;
    try {
      this.sock.write(body ? Buffer.concat([Buffer.from(head, 'latin1'), body]) : Buffer.from(head, 'latin1'));
    } catch (e) { /* the server may have closed early (e.g. 413); the reply is still read */ }
    // data that arrived before this request (should not happen) is parsed now
    if (this.buf.length) this._parse();
    return p;
  }

  _finish(st, complete) {
    clearTimeout(st.timer);
    const r = st.res;
    r.body = Buffer.concat(st.bodyParts);
    r.complete = complete;
    r.closed = this.closed;
    return r;
  }

  _onData(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this._parse();
  }

  _onClose() {
    const st = this.pending;
    if (!st) return;
    this._parse();
    if (this.pending !== st) return;
    this.pending = null;
    if (st.state === 'until-close') return st.resolve(this._finish(st, true));
    if (st.res) return st.resolve(this._finish(st, false));
    clearTimeout(st.timer);
    st.reject(Object.assign(new Error(`connection closed before a response (${this.lastError?.code ?? 'EOF'})`),
      { code: this.lastError?.code ?? 'EOF' }));
  }

  _emitBody(st, piece) {
    if (!piece.length) return;
    st.bodyParts.push(piece);
    if (st.onBody) st.onBody(piece, st);
  }

  _done(st) {
    this.pending = null;
    const r = this._finish(st, true);
    const conn = (r.headers.connection ?? '').toLowerCase();
    if (conn.includes('close') || r.httpVersion === '1.0') this.willClose = true;
    st.resolve(r);
  }

  _parse() {
    for (;;) {
      const st = this.pending;
      if (!st) return;
      if (st.state === 'head') {
        const i = this.buf.indexOf(CRLF2);
        if (i < 0) return;
        const rawHead = this.buf.subarray(0, i + 4).toString('latin1');
        this.buf = this.buf.subarray(i + 4);
        const res = parseHead(rawHead.slice(0, -4));
        res.rawHead = rawHead;
        if (res.status >= 100 && res.status < 200 && res.status !== 101) continue; // interim
        st.res = res;
        const te = (res.headers['transfer-encoding'] ?? '').toLowerCase();
        if (st.method === 'HEAD' || res.status === 204 || res.status === 304) { this._done(st); continue; }
        if (te.includes('chunked')) st.state = 'chunk-size';
        else if (res.headers['content-length'] !== undefined) {
          st.remaining = Number(res.headers['content-length']);
          st.state = 'fixed';
          if (st.remaining === 0) { this._done(st); continue; }
        } else st.state = 'until-close';
      } else if (st.state === 'fixed') {
        if (!this.buf.length) return;
        const n = Math.min(st.remaining, this.buf.length);
        this._emitBody(st, this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        st.remaining -= n;
        if (st.remaining === 0) this._done(st);
        else return;
      } else if (st.state === 'until-close') {
        if (!this.buf.length) return;
        this._emitBody(st, this.buf);
        this.buf = Buffer.alloc(0);
        return;
      } else if (st.state === 'chunk-size') {
        const i = this.buf.indexOf(CRLF);
        if (i < 0) return;
        const line = this.buf.subarray(0, i).toString('latin1');
        this.buf = this.buf.subarray(i + 2);
        const size = parseInt(line.split(';')[0].trim(), 16);
        if (!Number.isFinite(size)) { st.res.badChunk = line; st.state = 'until-close'; continue; }
        st.chunkSizes = st.chunkSizes ?? [];
        st.chunkSizes.push(size);
        if (size === 0) st.state = 'trailers';
        else { st.remaining = size; st.state = 'chunk-data'; }
      } else if (st.state === 'chunk-data') {
        if (!this.buf.length) return;
        const n = Math.min(st.remaining, this.buf.length);
        this._emitBody(st, this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        st.remaining -= n;
        if (st.remaining > 0) return;
        st.state = 'chunk-crlf';
      } else if (st.state === 'chunk-crlf') {
        if (this.buf.length < 2) return;
        this.buf = this.buf.subarray(2);
        st.state = 'chunk-size';
      } else if (st.state === 'trailers') {
        const i = this.buf.indexOf(CRLF);
        if (i < 0) return;
        const line = this.buf.subarray(0, i);
        this.buf = this.buf.subarray(i + 2);
        if (line.length === 0) this._done(st);
      }
    }
  }

  destroy() {
    if (this.sock && !this.sock.destroyed) this.sock.destroy();
  }

  close() {
    this.destroy();
  }
}

/** One request on a fresh connection. */
export async function rawRequest(port, opts) {
  const c = new RawConn(port, opts?.host);
  try {
    return await c.request(opts);
  } finally {
    c.close();
  }
}

/** JSON helpers on top of rawRequest. */
export function authHeaders(token = 'test_token', extra = {}) {
  return token == null ? { ...extra } : { Authorization: `Bearer ${token}`, ...extra };
}

export async function postJson(port, path, body, { token = 'test_token', headers = {}, conn, ...rest } = {}) {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const opts = {
    method: 'POST', path, body: bytes,
    headers: { 'Content-Type': 'application/json', ...authHeaders(token), ...headers }, ...rest,
  };
  const r = conn ? await conn.request(opts) : await rawRequest(port, opts);
  r.requestBody = bytes;
  return r;
}

export async function getPath(port, path, { token = 'test_token', headers = {}, conn, ...rest } = {}) {
  const opts = { method: 'GET', path, headers: { ...authHeaders(token), ...headers }, ...rest };
  return conn ? conn.request(opts) : rawRequest(port, opts);
}

export function jsonOf(res) {
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch (e) {
    throw new Error(`body is not JSON (status ${res.status}): ${res.body.toString('utf8').slice(0, 300)}`);
  }
}

/** SSE: returns the data payloads (strings) of the events in a byte buffer. */
export function sseData(buf) {
  const text = Buffer.isBuffer(buf) ? buf.toString('utf8') : buf;
  const out = [];
  let cur = null;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (cur !== null) out.push(cur);
      cur = null;
      continue;
    }
    if (line.startsWith(':')) continue;
    if (line.startsWith('data:')) {
      const v = line.slice(5).startsWith(' ') ? line.slice(6) : line.slice(5);
      cur = cur === null ? v : `${cur}\n${v}`;
    }
  }
  if (cur !== null) out.push(cur);
  return out;
}

/** The JSON events of an SSE body (the [DONE] sentinel excluded). */
export function sseJson(buf) {
  return sseData(buf).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
}

/** Wraps fetch for the openai SDK, recording the exact request bytes and response bytes. */
export function capturingFetch() {
  const log = [];
  const f = async (url, init = {}) => {
    let requestBody;
    const b = init.body;
    if (b == null) requestBody = Buffer.alloc(0);
    else if (typeof b === 'string') requestBody = Buffer.from(b, 'utf8');
    else if (b instanceof ArrayBuffer || ArrayBuffer.isView(b)) requestBody = Buffer.from(b.buffer ?? b, b.byteOffset ?? 0, b.byteLength);
    else throw new Error(`capturingFetch: unsupported body type ${Object.prototype.toString.call(b)}`);
    const entry = { url: String(url), method: init.method ?? 'GET', requestBody, requestHeaders: new Headers(init.headers), chunks: [], done: false };
    log.push(entry);
    const res = await fetch(url, init);
    entry.status = res.status;
    entry.responseHeaders = res.headers;
    if (!res.body) { entry.done = true; entry.responseBody = Buffer.alloc(0); return res; }
    const reader = res.body.getReader();
    const stream = new ReadableStream({
      async pull(ctrl) {
        const { done, value } = await reader.read();
        if (done) {
          entry.done = true;
          entry.responseBody = Buffer.concat(entry.chunks);
          ctrl.close();
          return;
        }
        entry.chunks.push(Buffer.from(value));
        ctrl.enqueue(value);
      },
      cancel(reason) { return reader.cancel(reason); },
    });
    return new Response(stream, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  return {
    fetch: f,
    log,
    last() { return log[log.length - 1]; },
    responseBytes(e = log[log.length - 1]) { return Buffer.concat(e.chunks); },
  };
}
