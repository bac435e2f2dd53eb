// GET /v1/attestation/report in simulated mode: every field, the report_data binding of the
// signing identity and the client nonce inside the TDX quote, the GPU payload nonce, the
// public key ↔ address relation, and the 4xx answers for bad parameters.
// Reference: shared/docs/reference-proxy.md §8 and §16.1 items 12–14, §16.2 item 35.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';
import { assertOpenAIError, stopAndCheck } from './lib/common.mjs';
import fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { checkQuoteSignatures, replayRtmrs, ethers, expectedReportData, parseQuote, randomNonce, HEX64 } from './lib/verify.mjs';

const INTEL_ROOT = '/work/shared/testvectors/intel/IntelSGXRootCA.pem';

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

const report = (query, opts) => getPath(stack.port, `/v1/attestation/report${query}`, opts);

function checkReport(r, algo, nonce) {
  for (const k of ['signing_address', 'signing_algo', 'request_nonce', 'intel_quote', 'nvidia_payload', 'info',
    'event_log', 'signing_public_key', 'all_attestations']) {
    assert.ok(k in r, `report has ${k}`);
  }
  assert.equal(r.signing_algo, algo);
  assert.match(r.request_nonce, HEX64);
  if (nonce) assert.equal(r.request_nonce, nonce.toLowerCase());

  const q = parseQuote(r.intel_quote);
  assert.equal(q.version, 4, 'quote version 4');
  assert.equal(q.teeType, 0x81, 'TEE type TDX');
  const want = expectedReportData(r);
  assert.equal(q.reportData.toString('hex'), want.toString('hex'),
    'report_data (quote bytes 568..632) = pad32(address) || nonce');
  assert.equal(q.reportData.subarray(32).toString('hex'), r.request_nonce);
  if ('quote' in r) assert.equal(r.quote, r.intel_quote, 'quote == intel_quote');

  assert.equal(typeof r.nvidia_payload, 'string', 'nvidia_payload is a JSON string');
  const p = JSON.parse(r.nvidia_payload);
  assert.equal(p.nonce, r.request_nonce, 'GPU payload carries the same nonce');
  assert.ok(Array.isArray(p.evidence_list), 'evidence_list is an array');
  assert.equal(p.arch, 'HOPPER');

  assert.equal(typeof r.info, 'object');
  assert.ok(r.info !== null && !Array.isArray(r.info));
  if (typeof r.event_log === 'string') assert.ok(Array.isArray(JSON.parse(r.event_log)), 'event_log string holds a JSON array');
  else assert.ok(Array.isArray(r.event_log), 'event_log is an array or a JSON string of one');

  if (algo === 'ecdsa') {
    assert.match(r.signing_address, /^0x[0-9a-fA-F]{40}$/);
    assert.equal(ethers.getAddress(r.signing_address), r.signing_address, 'EIP-55 checksummed');
    assert.match(r.signing_public_key, /^[0-9a-f]{128}$/, 'ECDSA public key is 128 hex');
    assert.equal(ethers.computeAddress('0x04' + r.signing_public_key), r.signing_address,
      'keccak(pubkey)[12:] == signing_address');
  } else {
    assert.match(r.signing_address, /^[0-9a-f]{64}$/);
    assert.match(r.signing_public_key, /^[0-9a-f]{64}$/, 'Ed25519 public key is 64 hex');
    assert.equal(r.signing_public_key, r.signing_address);
  }

  assert.ok(Array.isArray(r.all_attestations) && r.all_attestations.length >= 1, 'all_attestations non-empty');
  const mine = r.all_attestations.find((a) => a.signing_address === r.signing_address);
  assert.ok(mine, 'all_attestations contains this server');
  assert.equal(mine.signing_public_key, r.signing_public_key);
  assert.equal(mine.request_nonce, r.request_nonce);
  assert.equal(mine.intel_quote, r.intel_quote);
  assert.equal(mine.signing_algo, algo);
  // NEAR's layout: nearai-cloud-verifier's chat clients read the key from model_attestations[]
  assert.ok(Array.isArray(r.model_attestations) && r.model_attestations.length === 1);
  assert.equal(r.model_attestations[0].signing_public_key, r.signing_public_key);
  assert.equal(r.model_attestations[0].signing_address, r.signing_address);
  assert.equal(r.model_attestations[0].intel_quote, r.intel_quote);
}

for (const algo of ['ecdsa', 'ed25519']) {
  test(`${algo}: report binds the signing identity and a client nonce`, async () => {
    const nonce = randomNonce();
    const res = await report(`?nonce=${nonce}&signing_algo=${algo}`);
    assert.equal(res.status, 200, res.body.toString().slice(0, 300));
    assert.match(res.headers['content-type'], /application\/json/);
    const r = jsonOf(res);
    checkReport(r, algo, nonce);
    assert.match(JSON.stringify(r), /simulat/i, 'a simulated report says so');
    assert.equal(r.simulated, true, 'simulated: true');
    assert.equal(r.attestation_mode, 'simulated');
    assert.equal(r.nonce_source, 'client', 'nonce_source says the nonce is ours');
  });
}

for (const algo of ['ecdsa', 'ed25519']) {
  test(`${algo}: the simulated quote is internally signed like a real one, by a non-Intel root`, async () => {
    const r = jsonOf(await report(`?nonce=${randomNonce()}&signing_algo=${algo}`));
    const q = parseQuote(r.intel_quote).bytes;
    const { chain } = await checkQuoteSignatures(q);
    assert.deepEqual(await replayRtmrs(q, r.event_log), [], 'event log replays to the quote\'s RTMRs');
    const ev = r.event_log;
    assert.ok(Array.isArray(ev), 'event_log is a JSON array by default (EVENT_LOG_FORMAT=array)');
    const payload = (name) => ev.find((e) => e.imr === 3 && e.event === name)?.event_payload;
    assert.equal(payload('compose-hash'), r.info.compose_hash, 'info.compose_hash = compose-hash event');
    assert.equal(payload('app-id'), r.info.app_id, 'info.app_id = app-id event');
    const root = chain.at(-1);
    if (fs.existsSync(INTEL_ROOT)) {
      const intel = new X509Certificate(fs.readFileSync(INTEL_ROOT));
      assert.notEqual(root.fingerprint256, intel.fingerprint256, 'a simulated quote must not chain to Intel\'s root');
    }
  });
}

test('default algorithm is ecdsa', async () => {
  const r = jsonOf(await report(`?nonce=${randomNonce()}`));
  assert.equal(r.signing_algo, 'ecdsa');
  assert.match(r.signing_address, /^0x/);
});

test('signing identity is stable across reports; quotes differ per nonce', async () => {
  const a = jsonOf(await report(`?nonce=${randomNonce()}`));
  const b = jsonOf(await report(`?nonce=${randomNonce()}`));
  assert.equal(a.signing_address, b.signing_address);
  assert.notEqual(a.intel_quote, b.intel_quote);
  const c = jsonOf(await report(`?nonce=${randomNonce()}&signing_algo=ed25519`));
  const d = jsonOf(await report(`?nonce=${randomNonce()}&signing_algo=ed25519`));
  assert.equal(c.signing_address, d.signing_address);
});

test('no nonce: the server supplies a random one, binds it and says so (§16.1 #14)', async () => {
  const r1 = jsonOf(await report('?signing_algo=ecdsa'));
  const r2 = jsonOf(await report(''));
  checkReport(r1, 'ecdsa');
  checkReport(r2, 'ecdsa');
  assert.equal(r1.nonce_source, 'server', 'a server-made nonce is labelled as such');
  assert.equal(r2.nonce_source, 'server');
  // Server-nonce reports may come from the proxy's report cache (docs/ARCHITECTURE.md), so
  // two of them can carry the same nonce; nonce_source says the nonce is not the client's.
});

test('nonce "aa"*32 echoed in request_nonce and payload (§16.1 #12)', async () => {
  const n = 'aa'.repeat(32);
  const r = jsonOf(await report(`?nonce=${n}&signing_algo=ed25519`));
  checkReport(r, 'ed25519', n);
});

test('upper-case hex nonce accepted, echoed in lower case', async () => {
  const n = randomNonce().toUpperCase();
  const res = await report(`?nonce=${n}`);
  assert.equal(res.status, 200, res.body.toString().slice(0, 200));
  checkReport(jsonOf(res), 'ecdsa', n);
});

for (const [name, nonce] of [
  ['63 hex digits', 'a'.repeat(63)],
  ['62 hex digits (31 bytes)', 'ab'.repeat(31)],
  ['66 hex digits (33 bytes)', 'ab'.repeat(33)],
  ['non-hex', 'zz'.repeat(32)],
  ['0x-prefixed', '0x' + 'ab'.repeat(32)],
  ['empty', ''],
]) {
  test(`bad nonce (${name}) → 400 OpenAI error`, async () => {
    const e = assertOpenAIError(await report(`?nonce=${nonce}`), 400);
    assert.equal(e.code, 'invalid_nonce');
  });
}

test('invalid signing_algo → 400 invalid_signing_algo (case-sensitive)', async () => {
  for (const algo of ['rsa', 'ECDSA', 'ed25519 ']) {
    assertOpenAIError(await report(`?signing_algo=${encodeURIComponent(algo)}&nonce=${randomNonce()}`), 400, {
      type: 'invalid_signing_algo', message: "Invalid signing algorithm. Must be 'ed25519' or 'ecdsa'",
    });
  }
});

test('signing_address: ours (any case) → 200, another → 404', async () => {
  const r = jsonOf(await report(`?nonce=${randomNonce()}`));
  const ok = await report(`?nonce=${randomNonce()}&signing_address=${r.signing_address.toLowerCase()}`);
  assert.equal(ok.status, 200);
  assert.equal(jsonOf(ok).signing_address, r.signing_address);
  const other = '0x' + '12'.repeat(20);
  assertOpenAIError(await report(`?nonce=${randomNonce()}&signing_address=${other}`), 404);
  const ed = jsonOf(await report(`?nonce=${randomNonce()}&signing_algo=ed25519`));
  const ok2 = await report(`?nonce=${randomNonce()}&signing_algo=ed25519&signing_address=${ed.signing_address}`);
  assert.equal(ok2.status, 200);
  // the ECDSA address is not the Ed25519 identity
  assertOpenAIError(await report(`?nonce=${randomNonce()}&signing_algo=ed25519&signing_address=${r.signing_address}`), 404);
});

test('unknown query parameters (model) are ignored', async () => {
  const res = await report(`?nonce=${randomNonce()}&model=whatever`);
  assert.equal(res.status, 200);
});

test('report requires the token', async () => {
  const res = await report(`?nonce=${randomNonce()}`, { token: null });
  assert.equal(res.status, 401);
  const res2 = await report(`?nonce=${randomNonce()}`, { token: 'nope' });
  assert.equal(res2.status, 401);
});

test('ten concurrent reports, each bound to its own nonce', async () => {
  const nonces = Array.from({ length: 10 }, () => randomNonce());
  const rs = await Promise.all(nonces.map((n, i) => report(`?nonce=${n}&signing_algo=${i % 2 ? 'ed25519' : 'ecdsa'}`)));
  rs.forEach((res, i) => {
    assert.equal(res.status, 200);
    checkReport(jsonOf(res), i % 2 ? 'ed25519' : 'ecdsa', nonces[i]);
  });
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
