// Every inference route signed (issue 11, item 2): embeddings, rerank, score,
// images/generations, images/edits (multipart), audio/transcriptions (multipart). Each answer's
// record is fetched with the id the proxy announces in X-Signature-Id and verified
// independently (ethers and @noble/curves, lib/verify.mjs) over sha256 of the exact request
// bytes sent and response bytes received. tokenize/detokenize stay unsigned (docs/API.md).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { MODEL, startStack, startProxy, cleanExitProblems, binary, haveBinary } from './lib/harness.mjs';
import { postJson, rawRequest, jsonOf } from './lib/http.mjs';
import { assertOpenAIError, checkSigned, signedText, fetchSignature, stopAndCheck, attestedAddresses } from './lib/common.mjs';
import { sha256hex } from './lib/verify.mjs';

let stack;
let attested;
before(async () => {
  stack = await startStack({ proxy: { env: {
    VLLM_PROXY_MAX_REQUEST_SIZE: 200000,
    VLLM_PROXY_MAX_IMAGE_REQUEST_SIZE: 300000,
    VLLM_PROXY_MAX_AUDIO_REQUEST_SIZE: 400000,
  } } });
  attested = await attestedAddresses(stack.port);
});
after(async () => { if (stack) await stack.stop(); });

const HEX32 = /^[0-9a-f]{32}$/;

/** A multipart/form-data body built by hand: fields [{name, value, filename?, type?}]. */
function multipart(fields, boundary, { preamble = '', epilogue = '' } = {}) {
  const parts = [Buffer.from(preamble)];
  for (const f of fields) {
    let h = `--${boundary}\r\nContent-Disposition: form-data; name="${f.name}"`;
    if (f.filename) h += `; filename="${f.filename}"`;
    h += '\r\n';
    if (f.type) h += `Content-Type: ${f.type}\r\n`;
    parts.push(Buffer.from(h + '\r\n'), Buffer.isBuffer(f.value) ? f.value : Buffer.from(f.value), Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n${epilogue}`));
  return Buffer.concat(parts);
}

async function postMultipart(port, path, body, ctype, opts = {}) {
  const r = await rawRequest(port, {
    method: 'POST', path, body,
    headers: { 'Content-Type': ctype, Authorization: 'Bearer test_token', ...(opts.headers ?? {}) },
    ...(opts.chunks ? { chunks: opts.chunks, body: undefined } : {}),
  });
  r.requestBody = body;
  return r;
}

/** The record named by X-Signature-Id verifies over the exact bytes; returns the id. */
async function assertSignedAnswer(r, { engineId } = {}) {
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  const id = r.headers['x-signature-id'];
  assert.ok(id, 'X-Signature-Id is sent');
  if (engineId) assert.equal(id, engineId, "the engine's own id is the record's id");
  const last = await stack.mock.last();
  assert.equal(last.body_sha256, sha256hex(r.requestBody), 'the engine got the bytes the client sent');
  await checkSigned(stack.port, id, signedText(r.requestBody, r.body), { attested });
  return id;
}

for (const [route, body, prefix] of [
  ['/v1/embeddings', { model: MODEL, input: ['hello', 'world'] }, 'embd-'],
  ['/v1/rerank', { model: MODEL, query: 'q', documents: ['a', 'b', 'c'] }, 'rerank-'],
  ['/v1/score', { model: MODEL, text_1: 'a', text_2: ['b', 'c'] }, 'score-'],
]) {
  test(`${route}: signed under the engine's id, announced in X-Signature-Id`, async () => {
    const r = await postJson(stack.port, route, body);
    const j = jsonOf(r);
    assert.ok(j.id.startsWith(prefix), j.id);
    await assertSignedAnswer(r, { engineId: j.id });
    // a one-byte change of either side does not match the signed text
    const rec = jsonOf(await fetchSignature(stack.port, j.id));
    assert.notEqual(rec.text, signedText(Buffer.concat([r.requestBody, Buffer.from(' ')]), r.body));
  });
}

test('/v1/images/generations: b64_json PNG, an id made by the proxy (img-<X-Request-Id>), signed', async () => {
  const r = await postJson(stack.port, '/v1/images/generations', { model: MODEL, prompt: 'a red fox', n: 2, size: '16x8' });
  const j = jsonOf(r);
  assert.equal(j.data.length, 2);
  const png = Buffer.from(j.data[0].b64_json, 'base64');
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  assert.equal(png.readUInt32BE(16), 16, 'width');
  assert.equal(png.readUInt32BE(20), 8, 'height');
  assert.equal(j.id, undefined, 'the engine answer has no id and the proxy adds none to the body');
  const id = await assertSignedAnswer(r);
  const rid = r.headers['x-request-id'];
  assert.match(rid, HEX32);
  assert.equal(id, `img-${rid}`);
});

test('an answer over the 64 KiB hold without an id: the head goes out with the proxy id, signature over all bytes', async () => {
  const r = await postJson(stack.port, '/v1/images/generations', { model: MODEL, prompt: 'big', size: '400x400' });
  assert.ok(r.body.length > 200000, `answer is ${r.body.length} bytes`);
  const id = await assertSignedAnswer(r);
  assert.equal(id, `img-${r.headers['x-request-id']}`);
});

test('/v1/images/edits (multipart): hashed and forwarded as received, signed', async () => {
  const boundary = '----vp' + crypto.randomBytes(8).toString('hex');
  const image = crypto.randomBytes(3000);
  // A preamble, a quoted boundary and odd but valid spacing: any re-encoding would change the hash.
  const body = multipart([
    { name: 'model', value: MODEL },
    { name: 'prompt', value: 'make it blue' },
    { name: 'image', value: image, filename: 'in.png', type: 'image/png' },
    { name: 'size', value: '32x32' },
  ], boundary, { preamble: 'this is a preamble\r\n', epilogue: 'epilogue' });
  const r = await postMultipart(stack.port, '/v1/images/edits', body, `multipart/form-data;  boundary="${boundary}"`);
  const j = jsonOf(r);
  assert.equal(j.size, '32x32');
  assert.equal(Buffer.from(j.data[0].b64_json, 'base64').readUInt32BE(16), 32);
  const id = await assertSignedAnswer(r);
  assert.equal(id, `img-${r.headers['x-request-id']}`);
});

test('/v1/audio/transcriptions (multipart, chunked upload): {"text":...}, signed over the de-chunked bytes', async () => {
  const boundary = 'AaB03x';
  const audio = crypto.randomBytes(250000); // over VLLM_PROXY_MAX_REQUEST_SIZE: the audio limit applies
  const body = multipart([
    { name: 'file', value: audio, filename: 'speech.wav', type: 'audio/wav' },
    { name: 'model', value: MODEL },
    { name: 'language', value: 'en' },
  ], boundary);
  const chunks = [body.subarray(0, 7), body.subarray(7, 100000), body.subarray(100000)];
  const r = await postMultipart(stack.port, '/v1/audio/transcriptions', body, `multipart/form-data; boundary=${boundary}`, { chunks });
  const j = jsonOf(r);
  assert.equal(typeof j.text, 'string');
  assert.ok(j.text.length > 0);
  assert.equal(j.usage.type, 'duration');
  const id = await assertSignedAnswer(r);
  assert.equal(id, `trans-${r.headers['x-request-id']}`);
});

test('vllm-proxy-verify signature checks a multipart record against the saved request and response files', async (t) => {
  if (!haveBinary('vllm-proxy-verify')) return t.skip('vllm-proxy-verify not built');
  const boundary = 'v3rify';
  const body = multipart([{ name: 'file', value: crypto.randomBytes(5000), filename: 'a.wav' }, { name: 'model', value: MODEL }], boundary);
  const r = await postMultipart(stack.port, '/v1/audio/transcriptions', body, `multipart/form-data; boundary=${boundary}`);
  assert.equal(r.status, 200);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-signed-'));
  try {
    const reqF = path.join(dir, 'req.bin'), respF = path.join(dir, 'resp.bin');
    fs.writeFileSync(reqF, body);
    fs.writeFileSync(respF, r.body);
    const run = (args) => new Promise((res) => execFile(binary('vllm-proxy-verify'), [...args, '--json'], { timeout: 60000 },
      (e, out) => res({ code: e ? e.code : 0, out })));
    for (const algo of ['ecdsa', 'ed25519']) {
      const rec = jsonOf(await fetchSignature(stack.port, r.headers['x-signature-id'], algo));
      const base = ['signature', '--text', rec.text, '--signature', rec.signature, '--address', rec.signing_address, '--algo', algo];
      let v = await run([...base, '--request', reqF, '--response', respF]);
      assert.equal(v.code, 0, v.out);
      const changed = Buffer.from(body);
      changed[100] ^= 1;
      fs.writeFileSync(reqF, changed);
      v = await run([...base, '--request', reqF, '--response', respF]);
      assert.equal(v.code, 1, `a changed request byte fails: ${v.out}`);
      fs.writeFileSync(reqF, body);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the multipart limits are separate, enforced on Content-Length and while reading: 413 in the OpenAI shape', async () => {
  const before = (await stack.mock.stats()).requests;
  const boundary = 'lim1t';
  const big = multipart([{ name: 'file', value: Buffer.alloc(400001, 7), filename: 'a.wav' }, { name: 'model', value: MODEL }], boundary);
  const ct = `multipart/form-data; boundary=${boundary}`;
  let r = await postMultipart(stack.port, '/v1/audio/transcriptions', big, ct);
  assertOpenAIError(r, 413, { type: 'request_too_large' });
  r = await postMultipart(stack.port, '/v1/audio/transcriptions', big, ct,
    { chunks: [big.subarray(0, 200000), big.subarray(200000)] });
  assertOpenAIError(r, 413, { type: 'request_too_large' });
  // the image limit (300000) applies to the image routes, multipart or JSON
  const img = multipart([{ name: 'image', value: Buffer.alloc(300001, 1), filename: 'a.png' }, { name: 'prompt', value: 'x' }], boundary);
  r = await postMultipart(stack.port, '/v1/images/edits', img, ct);
  assertOpenAIError(r, 413, { type: 'request_too_large' });
  r = await postJson(stack.port, '/v1/images/generations', { model: MODEL, prompt: 'x'.repeat(300001) });
  assertOpenAIError(r, 413, { type: 'request_too_large' });
  // and the general limit (200000) stays on the JSON routes
  r = await postJson(stack.port, '/v1/embeddings', { model: MODEL, input: 'x'.repeat(200001) });
  assertOpenAIError(r, 413, { type: 'request_too_large' });
  assert.equal((await stack.mock.stats()).requests, before, 'nothing over a limit reached the engine');
  // just under the audio limit is accepted, though over the general one
  const fits = multipart([{ name: 'file', value: Buffer.alloc(300000, 7), filename: 'a.wav' }, { name: 'model', value: MODEL }], boundary);
  r = await postMultipart(stack.port, '/v1/audio/transcriptions', fits, ct);
  assert.ok(fits.length > 200000 && fits.length <= 400000);
  await assertSignedAnswer(r);
});

test('a multipart route refuses what is not multipart/form-data (400, nothing forwarded)', async () => {
  const before = (await stack.mock.stats()).requests;
  const good = multipart([{ name: 'file', value: 'abc', filename: 'a.wav' }], 'b0und');
  for (const [body, ct] of [
    [good, 'application/json'],
    [good, 'multipart/form-data'],
    [good, 'multipart/form-data; boundary=other'],
    [good.subarray(0, good.length - 10), 'multipart/form-data; boundary=b0und'],
    [Buffer.from('--b0und\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0und--\r\n'), 'multipart/form-data; boundary=b0und'],
    [Buffer.from('--b0und--\r\n'), 'multipart/form-data; boundary=b0und'],
  ]) {
    const r = await postMultipart(stack.port, '/v1/audio/transcriptions', body, ct);
    const e = assertOpenAIError(r, 400, { type: 'invalid_request_error' });
    assert.equal(e.code, 'invalid_multipart', `${ct}: ${e.message}`);
    assert.equal(r.headers['x-signature-id'], undefined);
  }
  const r = await postJson(stack.port, '/v1/embeddings', '{"input": ');
  assertOpenAIError(r, 400);
  assert.equal((await stack.mock.stats()).requests, before);
});

test('tokenize and detokenize are relayed unsigned: no X-Signature-Id, no record', async () => {
  for (const [route, body] of [['/v1/tokenize', { model: MODEL, prompt: 'hello world' }], ['/v1/detokenize', { model: MODEL, tokens: [1, 2] }]]) {
    const r = await postJson(stack.port, route, body);
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-signature-id'], undefined, route);
    const rid = r.headers['x-request-id'];
    for (const guess of [rid, `tok-${rid}`, `${route.slice(4)}-${rid}`]) {
      assert.equal((await fetchSignature(stack.port, guess)).status, 404);
    }
  }
});

test('an engine error is relayed as it is: no X-Signature-Id, nothing signed', async () => {
  const r = await postJson(stack.port, '/v1/images/generations', { model: MODEL, prompt: 'x', size: 'huge' });
  assert.equal(r.status, 400);
  assert.equal(r.headers['x-signature-id'], undefined);
  assert.equal((await fetchSignature(stack.port, `img-${r.headers['x-request-id']}`)).status, 404);
});

test('E2EE headers on the multipart routes (image edits, audio) are refused, nothing forwarded', async () => {
  // (image generations take NEAR's E2EE: e2ee-routes.test.mjs)
  const before = (await stack.mock.stats()).requests;
  const edit = multipart([{ name: 'prompt', value: 'x' }, { name: 'image', value: 'png', filename: 'a.png' }], 'b0und');
  let r = await postMultipart(stack.port, '/v1/images/edits', edit, 'multipart/form-data; boundary=b0und',
    { headers: { 'X-Signing-Algo': 'ecdsa', 'X-Client-Pub-Key': 'ab'.repeat(64) } });
  assertOpenAIError(r, 400, { type: 'e2ee_not_supported' });
  const body = multipart([{ name: 'file', value: 'abc', filename: 'a.wav' }], 'b0und');
  r = await postMultipart(stack.port, '/v1/audio/transcriptions', body, 'multipart/form-data; boundary=b0und',
    { headers: { 'X-E2EE-Version': '2' } });
  assertOpenAIError(r, 400, { type: 'e2ee_unsupported_endpoint' });
  assert.equal((await stack.mock.stats()).requests, before);
});

/* ---- a scripted engine: chunked answers, odd ids ---- */

function scriptedEngine(answer) {
  const srv = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const h = buf.subarray(0, i).toString();
      const len = Number(/content-length: *(\d+)/i.exec(h)?.[1] ?? 0);
      if (buf.length < i + 4 + len) return;
      buf = buf.subarray(i + 4 + len);
      answer(sock, h.split(' ')[1]);
    });
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

test('scripted engine: a chunked answer without id, an id split across chunks, an id unfit for a header', async () => {
  const idSplit = 'emb-split-' + crypto.randomBytes(4).toString('hex');
  let scoreCalls = 0;
  const eng = await scriptedEngine(async (sock, path) => {
    const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
    if (path === '/v1/audio/transcriptions') {
      sock.write(head + chunk('{"text":"he') + chunk('llo"}') + '0\r\n\r\n');
    } else if (path === '/v1/embeddings') {
      sock.write(head + chunk(`{"id":"${idSplit.slice(0, 7)}`));
      await new Promise((r) => setTimeout(r, 30));
      sock.write(chunk(`${idSplit.slice(7)}","data":[]}`) + '0\r\n\r\n');
    } else if (path === '/v1/score') {
      // idscan refuses control characters; a space or non-ASCII is the header's own check
      const b = path === '/v1/score' && ++scoreCalls === 1 ? '{"id":"score 1\\r\\nX-Evil: 1","data":[]}' : '{"id":"score caf\\u00e9 1","data":[]}';
      sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
    } else {
      sock.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    }
  });
  const p = await startProxy(`http://127.0.0.1:${eng.address().port}`);
  try {
    const boundary = 'zz';
    const body = multipart([{ name: 'file', value: 'RIFF....', filename: 'a.wav' }], boundary);
    let r = await postMultipart(p.port, '/v1/audio/transcriptions', body, `multipart/form-data; boundary=${boundary}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), '{"text":"hello"}');
    assert.equal(r.headers['x-signature-id'], `trans-${r.headers['x-request-id']}`);
    await checkSigned(p.port, r.headers['x-signature-id'], signedText(body, r.body));

    r = await postJson(p.port, '/v1/embeddings', { model: MODEL, input: 'a' });
    assert.equal(r.headers['x-signature-id'], idSplit);
    await checkSigned(p.port, idSplit, signedText(r.requestBody, r.body));

    r = await postJson(p.port, '/v1/score', { model: MODEL, text_1: 'a', text_2: 'b' });
    assert.equal(r.headers['x-evil'], undefined, 'no header injected from the engine id');
    assert.equal(r.headers['x-signature-id'], `score-${r.headers['x-request-id']}`);
    await checkSigned(p.port, r.headers['x-signature-id'], signedText(r.requestBody, r.body));

    r = await postJson(p.port, '/v1/score', { model: MODEL, text_1: 'a', text_2: 'c' });
    assert.ok(r.body.toString().includes('caf\\u00e9'));
    assert.equal(r.headers['x-signature-id'], `score-${r.headers['x-request-id']}`, 'an id with a space or non-ASCII is not announced');
    await checkSigned(p.port, r.headers['x-signature-id'], signedText(r.requestBody, r.body));
    assert.equal((await fetchSignature(p.port, 'score café 1')).status, 404, 'nor stored');
  } finally {
    await p.stop();
    eng.close();
  }
  assert.equal(cleanExitProblems(p.child), null);
});

test('the stack exits cleanly', async () => {
  const s = stack;
  stack = null;
  await stopAndCheck(s);
});
