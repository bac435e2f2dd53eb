// The settings that make the proxy behave like its peers (docs/CONFIG.md, "Behaving like a
// peer"): SIGNED_TEXT=model:req:resp (the Rust proxy's signed text, checked with ethers and
// @noble over the exact bytes, and parsed as nearai-cloud-verifier parses it),
// PUBLIC_ATTESTATION=1 (the report without a token), EVENT_LOG_FORMAT (array by default, the
// agent's string on request), model_name and signed_text_format in every report, and
// vllm-proxy-verify on both forms.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { startStack, startProxy, binary, haveBinary, MODEL, TOKEN } from './lib/harness.mjs';
import { getPath, postJson, jsonOf, sseData } from './lib/http.mjs';
import { checkSigned, assertOpenAIError, stopAndCheck } from './lib/common.mjs';
import { sha256hex, parseQuote, replayRtmrs, expectedReportData, randomNonce } from './lib/verify.mjs';

const haveVerify = haveBinary('vllm-proxy-verify');

let base;   // defaults
let rust;   // SIGNED_TEXT=model:req:resp, PUBLIC_ATTESTATION=1
let phala;  // EVENT_LOG_FORMAT=string

before(async () => {
  base = await startStack();
  rust = await startStack({ proxy: { env: { SIGNED_TEXT: 'model:req:resp', PUBLIC_ATTESTATION: '1' } } });
  phala = await startStack({ proxy: { env: { EVENT_LOG_FORMAT: 'string' } } });
});
after(async () => {
  await base?.stop();
  await rust?.stop();
  await phala?.stop();
});

function verify(args) {
  return new Promise((resolve) => {
    execFile(binary('vllm-proxy-verify'), [...args, '--json'], { maxBuffer: 16 << 20, timeout: 60000 }, (err, stdout, stderr) => {
      let json = null;
      try { json = JSON.parse(stdout); } catch { /* usage errors print no JSON */ }
      const checks = new Map();
      for (const c of json?.checks ?? []) checks.set(c.id, c);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, checks, stdout, stderr });
    });
  });
}
const status = (r, id) => r.checks.get(id)?.status;

/** nearai-cloud-verifier's parsing of the signed text (py/chat_verifier.py verify_chat),
 * written again here: split on ':', 2 or 3 parts, the hashes are the last two. */
function nearaiParse(text) {
  const parts = text.split(':');
  if (parts.length !== 2 && parts.length !== 3) throw new Error(`expected 2 or 3 colon-separated parts, got ${parts.length}`);
  return parts.length === 3 ? { model: parts[0], req: parts[1], resp: parts[2] } : { req: parts[0], resp: parts[1] };
}

async function report(stack, query, opts) {
  return getPath(stack.port, `/v1/attestation/report${query}`, opts);
}

test('defaults: the report needs a token, event_log is a JSON array that replays, model_name and signed_text_format req:resp', async () => {
  assertOpenAIError(await report(base, '', { token: null }), 401);
  assertOpenAIError(await getPath(base.port, '/v1/aci/attestation', { token: null }), 401);
  const nonce = randomNonce();
  const r = jsonOf(await report(base, `?nonce=${nonce}`));
  assert.ok(Array.isArray(r.event_log), 'event_log is an array');
  assert.ok(r.event_log.length > 0 && r.event_log.every((e) => typeof e.imr === 'number' && typeof e.digest === 'string' &&
    typeof e.event_type === 'number' && typeof e.event === 'string' && typeof e.event_payload === 'string'),
  'each event has teep\'s EventLogEntry fields (imr, digest, event_type, event, event_payload)');
  assert.deepEqual(r.all_attestations[0].event_log, r.event_log);
  const q = parseQuote(r.intel_quote);
  assert.deepEqual(await replayRtmrs(q.bytes, r.event_log), [], 'the array replays to the quote\'s RTMRs');
  assert.equal(r.model_name, MODEL);
  assert.equal(r.signed_text_format, 'req:resp');
  assert.equal(r.all_attestations[0].model_name, MODEL);
  // and what it says is what it does
  const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }] });
  const res = await postJson(base.port, '/v1/chat/completions', body);
  assert.equal(res.status, 200);
  await checkSigned(base.port, jsonOf(res).id, `${sha256hex(Buffer.from(body))}:${sha256hex(res.body)}`);
});

test('EVENT_LOG_FORMAT=string: the agent\'s text as a JSON string, the same events', async () => {
  const nonce = randomNonce();
  const r = jsonOf(await report(phala, `?nonce=${nonce}`));
  assert.equal(typeof r.event_log, 'string');
  const ev = JSON.parse(r.event_log);
  assert.ok(Array.isArray(ev) && ev.length > 0);
  const q = parseQuote(r.intel_quote);
  assert.deepEqual(await replayRtmrs(q.bytes, r.event_log), []);
  assert.equal(r.signed_text_format, 'req:resp');
  if (haveVerify) {
    const v = await verify(['report', `http://127.0.0.1:${phala.port}`, '--token', TOKEN, '--allow-simulated']);
    assert.equal(v.code, 0, v.stdout.slice(0, 2000));
    assert.equal(status(v, 'tdx.event_log'), 'pass');
  }
});

test('PUBLIC_ATTESTATION=1: both attestation routes answer without a token (or with a wrong one); the rest still need one', async () => {
  const nonce = randomNonce();
  for (const token of [null, 'not-a-token', TOKEN]) {
    const r = await report(rust, `?nonce=${nonce}&signing_algo=ed25519`, { token });
    assert.equal(r.status, 200, `token ${token}: ${r.status}`);
    const j = jsonOf(r);
    assert.equal(j.request_nonce, nonce);
    assert.equal(parseQuote(j.intel_quote).reportData.toString('hex'), expectedReportData(j).toString('hex'));
    assert.equal(j.signed_text_format, 'model:req:resp');
    assert.equal(j.model_name, MODEL);
    const a = await getPath(rust.port, `/v1/aci/attestation?nonce=${nonce}`, { token });
    assert.equal(a.status, 200);
  }
  const cached = await report(rust, '', { token: null });
  assert.equal(cached.status, 200, 'a server-nonce (cached) report too');
  assertOpenAIError(await getPath(rust.port, '/v1/signature/chatcmpl-x', { token: null }), 401);
  assertOpenAIError(await postJson(rust.port, '/v1/chat/completions', '{}', { token: null }), 401);
});

for (const stream of [false, true]) {
  test(`SIGNED_TEXT=model:req:resp (${stream ? 'stream' : 'JSON'}): the record's text is MODEL_NAME:sha256(sent):sha256(received), both signatures verify over it`, async () => {
    const body = JSON.stringify({ model: MODEL, stream, messages: [{ role: 'user', content: 'héllo' }] });
    const res = await postJson(rust.port, '/v1/chat/completions', body);
    assert.equal(res.status, 200);
    const id = stream ? JSON.parse(sseData(res.body).find((d) => d.startsWith('{'))).id : jsonOf(res).id;
    const want = `${MODEL}:${sha256hex(Buffer.from(body))}:${sha256hex(res.body)}`;
    const { ecdsa, ed25519 } = await checkSigned(rust.port, id, want); // ethers, @noble secp256k1 and ed25519
    assert.equal(ed25519.text, want);
    const p = nearaiParse(ecdsa.text);
    assert.equal(p.model, MODEL);
    assert.equal(p.req, sha256hex(Buffer.from(body)));
    assert.equal(p.resp, sha256hex(res.body));
    // the addresses are the attested ones (public report)
    const rep = jsonOf(await report(rust, `?nonce=${randomNonce()}`, { token: null }));
    assert.equal(rep.signing_address, ecdsa.signing_address);
  });
}

test('vllm-proxy-verify: chat against a model:req:resp proxy, and the signature subcommand on both forms', async (t) => {
  if (!haveVerify) return t.skip('not built');
  const url = `http://127.0.0.1:${rust.port}`;
  for (const stream of [false, true]) {
    const args = ['chat', url, '--token', TOKEN, '--model', MODEL, '--allow-simulated'];
    if (stream) args.push('--stream');
    const r = await verify(args);
    assert.equal(r.code, 0, r.stdout.slice(0, 3000));
    for (const id of ['chat.ecdsa.text', 'chat.ecdsa.signature', 'chat.ecdsa.model', 'chat.ed25519.text',
      'chat.ed25519.signature', 'chat.ed25519.model', 'ecdsa.report.signing_address']) assert.equal(status(r, id), 'pass', id);
  }
  // offline: the record of one answer, its 3-part text, the request and response files
  const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
  const res = await postJson(rust.port, '/v1/chat/completions', body);
  const id = jsonOf(res).id;
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-peers-'));
  const reqF = path.join(dir, 'req'), respF = path.join(dir, 'resp');
  fs.writeFileSync(reqF, body);
  fs.writeFileSync(respF, res.body);
  try {
    for (const algo of ['ecdsa', 'ed25519']) {
      const s = jsonOf(await getPath(rust.port, `/v1/signature/${id}?signing_algo=${algo}`));
      const ok = await verify(['signature', '--text', s.text, '--signature', s.signature, '--address', s.signing_address,
        '--request', reqF, '--response', respF, '--model', MODEL]);
      assert.equal(ok.code, 0, ok.stdout);
      assert.equal(status(ok, 'sig.text'), 'pass');
      assert.equal(status(ok, 'sig.model'), 'pass');
      assert.equal(status(ok, 'sig.verify'), 'pass');
      // another model name in front: the hashes still match, but the signature does not
      const other = await verify(['signature', '--text', 'other-model' + s.text.slice(MODEL.length), '--signature', s.signature,
        '--address', s.signing_address, '--request', reqF, '--response', respF, '--model', MODEL, '--algo', algo]);
      assert.equal(other.code, 1);
      assert.equal(status(other, 'sig.model'), 'fail');
      assert.equal(status(other, 'sig.verify'), 'fail');
      // the 2-part form of the same hashes: a text the proxy did not sign
      const two = await verify(['signature', '--text', s.text.slice(MODEL.length + 1), '--signature', s.signature,
        '--address', s.signing_address, '--request', reqF, '--response', respF, '--algo', algo]);
      assert.equal(status(two, 'sig.text'), 'pass', 'req:resp parses');
      assert.equal(status(two, 'sig.verify'), 'fail', 'but is not what was signed');
      // four parts are refused, as nearai-cloud-verifier refuses them
      const four = await verify(['signature', '--text', 'a:' + s.text, '--signature', s.signature,
        '--address', s.signing_address, '--request', reqF, '--response', respF, '--algo', algo]);
      assert.equal(status(four, 'sig.text'), 'fail');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('invalid SIGNED_TEXT / EVENT_LOG_FORMAT values stop the start with exit 2', async () => {
  for (const env of [{ SIGNED_TEXT: 'model' }, { EVENT_LOG_FORMAT: 'json' }]) {
    const r = await new Promise((resolve) => execFile(binary('vllm-proxy'), [], {
      env: { ...process.env, MODEL_NAME: MODEL, ATTESTATION: 'simulated', ...env }, timeout: 10000,
    }, (err, stdout, stderr) => resolve({ code: err?.code, stderr })));
    assert.equal(r.code, 2, JSON.stringify(r));
    assert.match(r.stderr, new RegExp(Object.keys(env)[0]));
  }
});

test('a MODEL_NAME with a colon under model:req:resp is logged as unparseable by 2-or-3-part verifiers', async () => {
  const p = await startProxy(base.mock.url, { env: { SIGNED_TEXT: 'model:req:resp', MODEL_NAME: 'org/m:v1', LOG_LEVEL: 'warn' } });
  try {
    assert.match(p.stderr(), /contains ':'/);
  } finally {
    await p.stop();
  }
});

test('the programs exit cleanly', async () => {
  await stopAndCheck(rust);
  await stopAndCheck(phala);
  await stopAndCheck(base);
  rust = phala = base = null;
});
