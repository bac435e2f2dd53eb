// vllm-proxy-verify against every public test vector (expected results from
// ../shared/testvectors/README.md and shared/docs/tee-formats.md §5–6), negative cases made by
// tampering with those vectors at run time, collateral served by a local fake PCS, and a full
// report + chat round trip against vllm-proxy in simulated mode.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { BUILD_DIR, REPO_ROOT, TOKEN, MODEL, startStack } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';
import { stopAndCheck } from './lib/common.mjs';

const VERIFY = path.join(BUILD_DIR, 'vllm-proxy-verify');
const haveVerify = fs.existsSync(VERIFY);

// The vectors: $VP_TESTVECTORS, else ../shared/testvectors, else the copies in tests/vectors.
const VEC_DIRS = [process.env.VP_TESTVECTORS, path.resolve(REPO_ROOT, '..', 'shared', 'testvectors'),
  path.join(REPO_ROOT, 'tests', 'vectors')].filter(Boolean);
function vec(rel) {
  for (const d of VEC_DIRS) {
    const p = path.join(d, rel);
    if (fs.existsSync(p)) return p;
  }
  return null;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-verify-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs the verifier with --json; resolves {code, out, checks: Map id→item, json}. */
function verify(args, { env } = {}) {
  return new Promise((resolve) => {
    execFile(VERIFY, [...args, '--json'], { env: { ...process.env, ...(env ?? {}) }, maxBuffer: 16 << 20, timeout: 60000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        let json = null;
        try { json = JSON.parse(stdout); } catch { /* usage errors print no JSON */ }
        const checks = new Map();
        for (const c of json?.checks ?? []) checks.set(c.id, c);
        resolve({ code, stdout, stderr, json, checks });
      });
  });
}

function describeRun(r) {
  return (r.json?.checks ?? []).filter((c) => c.status !== 'pass')
    .map((c) => `[${c.status}] ${c.id}: ${c.found}`).join('\n') || r.stdout + r.stderr;
}

function expectExit(r, code) {
  assert.doesNotMatch(r.stderr ?? '', /ERROR: (Address|Leak)Sanitizer|runtime error:/, 'no sanitizer report');
  assert.equal(r.code, code, `exit ${r.code}, want ${code}\n${describeRun(r)}`);
}

function expectStatus(r, id, status) {
  const c = r.checks.get(id);
  assert.ok(c, `line ${id} present\n${describeRun(r)}`);
  assert.equal(c.status, status, `${id}: ${c.status} (${c.found}), want ${status}`);
}

function writeTmp(name, data) {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, data);
  return p;
}

function flip(buf, off, mask = 0x01) {
  const b = Buffer.from(buf);
  b[off] ^= mask;
  return b;
}

const V4 = 'tdx/dcap-qvl/tdx_quote_v4.bin';
const V4COL = 'tdx/dcap-qvl/tdx_quote_v4_collateral.json';
const V5 = 'tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin';
const V5COL = 'tdx/dcap-qvl/tdx_quote_v5_no_tcb_match_collateral.json';
const V4_AT = '1750414563';
const V5_AT = '2026-03-01T00:00:00Z'; // inside that collateral's window

function need(t, ...rels) {
  if (!haveVerify) { t.skip('build/vllm-proxy-verify not built'); return null; }
  const ps = rels.map(vec);
  if (ps.some((p) => !p)) { t.skip(`vector missing: ${rels.filter((r, i) => !ps[i]).join(', ')}`); return null; }
  return ps;
}

describe('built-in roots and usage', () => {
  test('the built-in Intel SGX Root CA has the published sha256', async (t) => {
    if (!haveVerify) return t.skip('not built');
    const r = await verify(['roots']);
    expectExit(r, 0);
    assert.match(r.checks.get('roots.intel').found, /sha256 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3/);
    const der = vec('intel/IntelSGXRootCA.der');
    if (der) {
      const h = crypto.createHash('sha256').update(fs.readFileSync(der)).digest('hex');
      assert.equal(h, '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3');
    }
  });

  test('--help for each subcommand; usage errors exit 2', async (t) => {
    if (!haveVerify) return t.skip('not built');
    for (const cmd of ['report', 'chat', 'signature', 'quote', 'gpu']) {
      const r = await new Promise((res) => execFile(VERIFY, [cmd, '--help'], (e, out) => res({ code: e ? e.code : 0, out })));
      assert.equal(r.code, 0, cmd);
      assert.match(r.out, new RegExp(`usage: vllm-proxy-verify ${cmd}`));
    }
    expectExit(await verify(['bogus']), 2);
    expectExit(await verify(['quote']), 2);
    expectExit(await verify(['quote', '/nonexistent/file']), 2);
    expectExit(await verify(['report', 'x.json', '--nonce', 'zz']), 2);
  });
});

describe('TDX vectors', () => {
  test('dcap-qvl v4 quote: every link, collateral, UpToDate at 1750414563', async (t) => {
    const p = need(t, V4, V4COL); if (!p) return;
    const r = await verify(['quote', p[0], '--collateral', p[1], '--at', V4_AT]);
    expectExit(r, 0);
    for (const id of ['tdx.quote.parse', 'tdx.quote.header', 'tdx.quote.signature', 'tdx.quote.qe_binding',
      'tdx.quote.qe_signature', 'tdx.quote.pck_chain', 'tdx.td_attributes', 'tdx.tcb.policy']) expectStatus(r, id, 'pass');
    assert.match(r.checks.get('tdx.tcb.policy').found, /^UpToDate/);
    // the same time as RFC 3339
    expectExit(await verify(['quote', p[0], '--collateral', p[1], '--at', '2025-06-20T10:16:03Z']), 0);
  });

  test('dcap-qvl v5 quote (TD 1.5 body): signatures OK, no TCB level matches', async (t) => {
    const p = need(t, V5, V5COL); if (!p) return;
    const r = await verify(['quote', p[0], '--collateral', p[1], '--at', V5_AT]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.quote.signature', 'pass');
    expectStatus(r, 'tdx.quote.pck_chain', 'pass');
    expectStatus(r, 'tdx.tcb.policy', 'fail');
    assert.match(r.checks.get('tdx.tcb.policy').found, /NoMatch/);
    assert.match(r.checks.get('tdx.quote.parse').found, /TD report 1\.5/);
    expectExit(await verify(['quote', p[0], '--collateral', p[1], '--at', V5_AT, '--allow-tcb', 'NoMatch']), 0);
  });

  for (const [rel, note] of [
    ['tdx/go-tdx-guest/tdx_prod_quote_SPR_E4_trailing_bytes.dat', /39 trailing bytes ignored/],
    ['tdx/go-tdx-guest/quote_v5_sample.dat', /v5/],
    ['tdx/private-ml-sdk-e2e/intel_quote.b64', /v4/],
    ['tdx/dstack-v055-sample/quote.hex', /70 trailing bytes ignored/],
  ]) {
    test(`${rel}: signatures and chain to Intel's root (no collateral)`, async (t) => {
      const p = need(t, rel); if (!p) return;
      const r = await verify(['quote', p[0], '--no-collateral']);
      expectExit(r, 0);
      expectStatus(r, 'tdx.quote.pck_chain', 'pass');
      expectStatus(r, 'tdx.collateral', 'skip');
      assert.match(r.checks.get('tdx.quote.parse').found, note);
    });
  }

  test('dstack v0.5.5 sample: event log replays to RTMR0-3, compose hash = MRCONFIGID and event', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex', 'tdx/dstack-v055-sample/event_log.json',
      'tdx/dstack-v055-sample/info_sdk_parsed.json'); if (!p) return;
    const r = await verify(['quote', p[0], '--no-collateral', '--event-log', p[1], '--info', p[2],
      '--expect-rtmr0', 'fb14dc139f33d6fcf474bc8332cac001259fb31cfbcb6b34d4ceeb552a2c4466884a0cbde45ad98a05c5c060c23ad65a',
      '--expect-mrtd', 'f06dfda6dce1cf904d4e2bab1dc370634cf95cefa2ceb2de2eee127c9382698090d7a4a13e14c536ec6c9c3c8fa87077',
      '--report-data', '01'.repeat(64)]);
    expectExit(r, 0);
    for (const id of ['tdx.event_log', 'tdx.rtmr0', 'tdx.rtmr1', 'tdx.rtmr2', 'tdx.rtmr3', 'dstack.compose_hash',
      'dstack.mrconfigid', 'dstack.compose_event', 'pin.rtmr0', 'pin.mrtd', 'tdx.report_data']) expectStatus(r, id, 'pass');
    // a wrong pin fails
    const w = await verify(['quote', p[0], '--no-collateral', '--expect-rtmr1', '00'.repeat(48)]);
    expectExit(w, 1);
    expectStatus(w, 'pin.rtmr1', 'fail');
    // a policy file with an allow-list
    const pol = writeTmp('policy.json', JSON.stringify({ mrtd: ['00'.repeat(48), 'F06DFDA6DCE1CF904D4E2BAB1DC370634CF95CEFA2CEB2DE2EEE127C9382698090D7A4A13E14C536EC6C9C3C8FA87077'] }));
    const pr = await verify(['quote', p[0], '--no-collateral', '--policy', pol]);
    expectExit(pr, 0);
    expectStatus(pr, 'pin.mrtd', 'pass');
  });

  for (const rel of ['tdx/dstack-fixtures/getquote_custom_event.json', 'tdx/dstack-fixtures/getquote_v060_stripped_eventlog.json']) {
    test(`${rel}: GetQuote JSON, runtime digests recomputed, RTMRs replay`, async (t) => {
      const p = need(t, rel); if (!p) return;
      const r = await verify(['quote', p[0], '--no-collateral']);
      expectExit(r, 0);
      for (const id of ['tdx.event_log', 'tdx.rtmr0', 'tdx.rtmr1', 'tdx.rtmr2', 'tdx.rtmr3']) expectStatus(r, id, 'pass');
    });
  }
});

describe('TDX negative cases (tampered vectors)', () => {
  // v4 layout: header 0..48, body 48..632 (TDATTRIBUTES at 168, MRTD 184, report_data 568),
  // signature 636, attestation key 700, QE report 770 (its report_data at 1090), QE report
  // signature 1154, PCK chain PEM from 1258.
  const cases = [
    ['header byte (user data)', 30, ['tdx.quote.signature']],
    ['TD body byte (MRTD)', 190, ['tdx.quote.signature']],
    ['report_data byte', 600, ['tdx.quote.signature']],
    ['quote signature byte', 650, ['tdx.quote.signature']],
    ['attestation key byte', 710, ['tdx.quote.signature', 'tdx.quote.qe_binding']],
    ['QE report byte (MRENCLAVE)', 770 + 70, ['tdx.quote.qe_signature']],
    ['QE report_data byte', 1095, ['tdx.quote.qe_binding', 'tdx.quote.qe_signature']],
    ['QE report signature byte', 1160, ['tdx.quote.qe_signature']],
  ];
  for (const [name, off, fails] of cases) {
    test(`flipped ${name} → ${fails.join(', ')} FAIL, exit 1`, async (t) => {
      const p = need(t, V4, V4COL); if (!p) return;
      const f = writeTmp(`v4_${off}.bin`, flip(fs.readFileSync(p[0]), off));
      const r = await verify(['quote', f, '--collateral', p[1], '--at', V4_AT]);
      expectExit(r, 1);
      for (const id of fails) expectStatus(r, id, 'fail');
    });
  }

  test('debug bit set → tdx.td_attributes FAIL', async (t) => {
    const p = need(t, V4); if (!p) return;
    const r = await verify(['quote', writeTmp('v4_debug.bin', flip(fs.readFileSync(p[0]), 168, 0x01)), '--no-collateral']);
    expectExit(r, 1);
    expectStatus(r, 'tdx.td_attributes', 'fail');
    assert.match(r.checks.get('tdx.td_attributes').found, /DEBUG/);
  });

  test('each PCK chain certificate tampered → chain or QE signature FAIL', async (t) => {
    const p = need(t, V4); if (!p) return;
    const q = fs.readFileSync(p[0]);
    const text = q.subarray(1258).toString('latin1');
    const ends = [...text.matchAll(/-----END CERTIFICATE-----/g)].map((m) => m.index);
    assert.equal(ends.length, 3, 'leaf, PCK CA, root');
    for (const [i, end] of ends.entries()) {
      // a base64 character inside the certificate's signature (just before the END line)
      let off = 1258 + end - 8;
      while (!/[A-Za-z0-9]/.test(String.fromCharCode(q[off]))) off--;
      const b = Buffer.from(q);
      b[off] = b[off] === 0x41 ? 0x42 : 0x41;
      const r = await verify(['quote', writeTmp(`v4_cert${i}.bin`, b), '--no-collateral']);
      if (i < 2) {
        expectExit(r, 1);
        expectStatus(r, 'tdx.quote.pck_chain', 'fail');
      } else {
        // the root copy inside the quote is never trusted: the pinned root decides
        assert.ok(r.code === 0 || r.code === 1, describeRun(r));
      }
    }
    // a leaf certificate with a different key: the QE report signature no longer verifies
    const leafStart = text.indexOf('-----BEGIN CERTIFICATE-----');
    const keyOff = 1258 + leafStart + 28 + 300; // inside the leaf's public key or TBS
    const b = Buffer.from(q);
    b[keyOff] = b[keyOff] === 0x41 ? 0x42 : 0x41;
    const r = await verify(['quote', writeTmp('v4_leaftbs.bin', b), '--no-collateral']);
    expectExit(r, 1);
  });

  test('truncated quote → tdx.quote.parse FAIL', async (t) => {
    const p = need(t, V4); if (!p) return;
    const r = await verify(['quote', writeTmp('v4_trunc.bin', fs.readFileSync(p[0]).subarray(0, 1000)), '--no-collateral']);
    expectExit(r, 1);
    expectStatus(r, 'tdx.quote.parse', 'fail');
  });

  test('expired time: after the collateral window, after the root expires', async (t) => {
    const p = need(t, V4, V4COL); if (!p) return;
    const late = await verify(['quote', p[0], '--collateral', p[1], '--at', '2025-09-01T00:00:00Z']);
    expectExit(late, 1);
    expectStatus(late, 'tdx.collateral.tcb_info.validity', 'fail');
    const r = await verify(['quote', p[0], '--no-collateral', '--at', '2060-01-01T00:00:00Z']);
    expectExit(r, 1);
    expectStatus(r, 'tdx.quote.pck_chain', 'fail');
  });

  test('wrong --report-data → tdx.report_data FAIL', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex'); if (!p) return;
    const r = await verify(['quote', p[0], '--no-collateral', '--report-data', '02'.repeat(64)]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.report_data', 'fail');
  });

  test('tampered event log: a runtime payload, a boot digest', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex', 'tdx/dstack-v055-sample/event_log.json'); if (!p) return;
    const raw = JSON.parse(fs.readFileSync(p[1], 'utf8'));
    const log = typeof raw === 'string' ? JSON.parse(raw) : raw;
    const rt = structuredClone(log);
    const ev = rt.find((e) => e.event === 'compose-hash');
    ev.event_payload = '00'.repeat(32);
    let r = await verify(['quote', p[0], '--no-collateral', '--event-log', writeTmp('ev_rt.json', JSON.stringify(rt))]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.event_log', 'fail');
    const boot = structuredClone(log);
    const b0 = boot.find((e) => e.imr === 0);
    b0.digest = (b0.digest[0] === '0' ? '1' : '0') + b0.digest.slice(1);
    r = await verify(['quote', p[0], '--no-collateral', '--event-log', writeTmp('ev_boot.json', JSON.stringify(boot))]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.rtmr0', 'fail');
    expectStatus(r, 'tdx.rtmr1', 'pass');
  });

  test('tampered collateral: TCB info text', async (t) => {
    const p = need(t, V4, V4COL); if (!p) return;
    const col = JSON.parse(fs.readFileSync(p[1], 'utf8'));
    col.tcb_info = col.tcb_info.replace('"version":3', '"version":3 ');
    const r = await verify(['quote', p[0], '--collateral', writeTmp('col_bad.json', JSON.stringify(col)), '--at', V4_AT]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.collateral.tcb_info.signature', 'fail');
  });

  test('a compose-hash event relabelled as a boot event (digest kept, payload swapped) is not trusted', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex', 'tdx/dstack-v055-sample/event_log.json',
      'tdx/dstack-v055-sample/info_sdk_parsed.json'); if (!p) return;
    const raw = JSON.parse(fs.readFileSync(p[1], 'utf8'));
    const log = typeof raw === 'string' ? JSON.parse(raw) : raw;
    const info = JSON.parse(fs.readFileSync(p[2], 'utf8'));
    const tcb = typeof info.tcb_info === 'string' ? JSON.parse(info.tcb_info) : info.tcb_info;
    // another compose file, its hash in info and in the relabelled event
    tcb.app_compose = '{"services":{"evil":{"image":"attacker/evil"}}}';
    const h = crypto.createHash('sha256').update(tcb.app_compose).digest('hex');
    tcb.compose_hash = h;
    info.compose_hash = h;
    info.tcb_info = typeof info.tcb_info === 'string' ? JSON.stringify(tcb) : tcb;
    const ev = log.find((e) => e.event === 'compose-hash');
    ev.event_type = 1; // a boot event: its digest is taken as given, so RTMR3 still replays
    ev.event_payload = h;
    const r = await verify(['quote', p[0], '--no-collateral', '--event-log', writeTmp('ev_relabel.json', JSON.stringify(log)),
      '--info', writeTmp('info_evil.json', JSON.stringify(info)), '--expect-compose-hash', h]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.rtmr3', 'pass');
    expectStatus(r, 'dstack.compose_event', 'fail');
  });

  test('an event log that was given but does not parse is a FAIL, never silently skipped', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex', 'tdx/dstack-fixtures/getquote_custom_event.json'); if (!p) return;
    // --event-log holding a JSON string that is not an event log
    let r = await verify(['quote', p[0], '--no-collateral', '--event-log', writeTmp('ev_str.json', '"not an event log"')]);
    expectExit(r, 1);
    expectStatus(r, 'tdx.event_log', 'fail');
    // a GetQuote response whose event_log string is broken
    const gq = JSON.parse(fs.readFileSync(p[1], 'utf8'));
    gq.event_log = gq.event_log.slice(0, 100);
    r = await verify(['quote', writeTmp('gq_bad_log.json', JSON.stringify(gq)), '--no-collateral']);
    expectExit(r, 1);
    expectStatus(r, 'tdx.event_log', 'fail');
  });

  test('a policy file with an unknown (misspelt) key is refused, not silently ignored', async (t) => {
    const p = need(t, 'tdx/dstack-v055-sample/quote.hex'); if (!p) return;
    const pol = writeTmp('policy_typo.json', JSON.stringify({ 'compose-hash': '00'.repeat(32) }));
    const r = await verify(['quote', p[0], '--no-collateral', '--policy', pol]);
    expectExit(r, 2);
    expectStatus(r, 'pin.policy', 'fail');
    const ok = writeTmp('policy_comment.json', JSON.stringify({ _comment: 'x', rtmr1: '00'.repeat(48) }));
    expectStatus(await verify(['quote', p[0], '--no-collateral', '--policy', ok]), 'pin.rtmr1', 'fail');
  });

  test('malformed --at offsets and --timeout values are usage errors', async (t) => {
    const p = need(t, V4); if (!p) return;
    for (const at of ['2025-06-20T10:16:03+1:3', '2025-06-20T10:16:03+01', '2025-06-20T10:16:03+99:00'])
      expectExit(await verify(['quote', p[0], '--no-collateral', '--at', at]), 2);
    expectExit(await verify(['quote', p[0], '--no-collateral', '--at', '2025-06-20T12:16:03+02:00']), 0);
    for (const to of ['abc', '0', '-5', '10s'])
      expectExit(await verify(['quote', p[0], '--no-collateral', '--timeout', to]), 2);
  });
});

describe('collateral from a fake PCS', () => {
  let server, base, hits = [];
  before(async () => {
    const p = vec(V4COL);
    if (!p) return;
    const col = JSON.parse(fs.readFileSync(p, 'utf8'));
    server = http.createServer((req, res) => {
      hits.push(req.url);
      const u = new URL(req.url, 'http://x');
      if (u.pathname === '/sgx/certification/v4/pckcrl') {
        res.writeHead(200, { 'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(col.pck_crl_issuer_chain) });
        return res.end(Buffer.from(col.pck_crl, 'hex'));
      }
      if (u.pathname === '/sgx/certification/v4/rootcacrl') {
        res.writeHead(200);
        return res.end(Buffer.from(col.root_ca_crl, 'hex'));
      }
      if (u.pathname === '/tdx/certification/v4/tcb') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'TCB-Info-Issuer-Chain': encodeURIComponent(col.tcb_info_issuer_chain) });
        return res.end(`{"tcbInfo":${col.tcb_info},"signature":"${col.tcb_info_signature}"}`);
      }
      if (u.pathname === '/tdx/certification/v4/qe/identity') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(col.qe_identity_issuer_chain) });
        return res.end(`{"enclaveIdentity":${col.qe_identity},"signature":"${col.qe_identity_signature}"}`);
      }
      res.writeHead(404);
      res.end();
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => server?.close());

  test('v4 quote: collateral fetched for its FMSPC, verified, saved', async (t) => {
    const p = need(t, V4, V4COL); if (!p) return;
    const saved = path.join(tmp, 'saved_collateral.json');
    const r = await verify(['quote', p[0], '--pccs', base, '--at', V4_AT, '--save-collateral', saved]);
    expectExit(r, 0);
    expectStatus(r, 'tdx.tcb.policy', 'pass');
    assert.ok(hits.some((h) => h.includes('fmspc=B0C06F000000')), hits.join(' '));
    // the saved file verifies offline the same way
    const again = await verify(['quote', p[0], '--collateral', saved, '--at', V4_AT]);
    expectExit(again, 0);
  });

  test('an unreachable PCS is a fetch error (exit 2)', async (t) => {
    const p = need(t, V4); if (!p) return;
    const r = await verify(['quote', p[0], '--pccs', 'http://127.0.0.1:1', '--at', V4_AT]);
    expectExit(r, 2);
  });
});

describe('GPU vectors', () => {
  test('nvtrust 8x H100 evidence (nvattest list) verifies to NVIDIA\'s root', async (t) => {
    const p = need(t, 'nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json'); if (!p) return;
    const list = JSON.parse(fs.readFileSync(p[0], 'utf8'));
    const r = await verify(['gpu', p[0], '--nonce', list[0].nonce]);
    expectExit(r, 0);
    for (let i = 0; i < 8; i++) for (const k of ['cert_chain', 'spdm_signature', 'nonce']) expectStatus(r, `gpu.${i}.${k}`, 'pass');
    const w = await verify(['gpu', p[0], '--nonce', 'ab'.repeat(32)]);
    expectExit(w, 1);
    expectStatus(w, 'gpu.payload.nonce', 'fail');
  });

  test('private-ml-sdk legacy (base64 of hex) payload', async (t) => {
    const p = need(t, 'nvidia/private-ml-sdk-e2e/nvidia_payload_legacy_b64hex.json'); if (!p) return;
    const pay = JSON.parse(fs.readFileSync(p[0], 'utf8'));
    const r = await verify(['gpu', p[0], '--nonce', pay.nonce]);
    expectExit(r, 0);
    expectStatus(r, 'gpu.0.spdm_signature', 'pass');
  });

  test('nvtrust canned report + chain (hex text)', async (t) => {
    const p = need(t, 'nvidia/nvtrust/hopperAttestationReport.txt', 'nvidia/nvtrust/hopperCertChain.txt'); if (!p) return;
    const r = await verify(['gpu', '--report', p[0], '--certs', p[1], '--nonce',
      '931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb']);
    expectExit(r, 0);
    expectStatus(r, 'gpu.0.spdm_signature', 'pass');
    expectStatus(r, 'gpu.0.cert_chain', 'pass');
    // without --nonce the evidence may be a replay: said, not silently skipped
    const nn = await verify(['gpu', '--report', p[0], '--certs', p[1]]);
    expectExit(nn, 0);
    expectStatus(nn, 'gpu.nonce', 'warn');
    expectStatus(nn, 'gpu.0.nonce', 'skip');
  });

  test('tampered GPU evidence: report byte, certificate, nonce', async (t) => {
    const p = need(t, 'nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json'); if (!p) return;
    const list = JSON.parse(fs.readFileSync(p[0], 'utf8'));
    const one = { ...list[0] };
    const ev = Buffer.from(one.evidence, 'base64');
    one.evidence = flip(ev, 200).toString('base64');
    let r = await verify(['gpu', writeTmp('gpu_ev.json', JSON.stringify([one])), '--nonce', list[0].nonce]);
    expectExit(r, 1);
    expectStatus(r, 'gpu.0.spdm_signature', 'fail');
    const two = { ...list[0] };
    const pem = Buffer.from(two.certificate, 'base64').toString('latin1');
    const end = pem.indexOf('-----END CERTIFICATE-----');
    let off = end - 8;
    while (!/[A-Za-z0-9]/.test(pem[off])) off--;
    two.certificate = Buffer.from(pem.slice(0, off) + (pem[off] === 'A' ? 'B' : 'A') + pem.slice(off + 1), 'latin1').toString('base64');
    r = await verify(['gpu', writeTmp('gpu_cert.json', JSON.stringify([two])), '--nonce', list[0].nonce]);
    expectExit(r, 1);
    expectStatus(r, 'gpu.0.cert_chain', 'fail');
  });

  test('NRAS recorded responses: submods digests and claims verify; no JWKS → signatures SKIP', async (t) => {
    const p = need(t, 'nvidia/nras/nras_v3_response_1gpu.json', 'nvidia/nras/nras_v3_response_ppcie_8gpu.json',
      'nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json'); if (!p) return;
    for (const [f, n] of [[p[0], 1], [p[1], 8]]) {
      const resp = JSON.parse(fs.readFileSync(f, 'utf8'));
      const claims = JSON.parse(Buffer.from(resp[0][1].split('.')[1], 'base64url').toString());
      const r = await verify(['gpu', p[2], '--nras-response', f, '--at', String(claims.exp - 60)]);
      expectExit(r, 0);
      expectStatus(r, 'nras.submods', 'pass');
      expectStatus(r, 'nras.overall.signature', 'skip');
      for (let i = 0; i < n; i++) expectStatus(r, `nras.GPU-${i}.digest`, 'pass');
    }
  });

  test('NRAS round trip against a fake NRAS: ES384 JWTs, JWKS by kid, nonce, digests', async (t) => {
    const p = need(t, 'nvidia/private-ml-sdk-e2e/nvidia_payload_legacy_b64hex.json'); if (!p) return;
    const pay = JSON.parse(fs.readFileSync(p[0], 'utf8'));
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const kid = 'nv-eat-kid-test-1';
    const jwt = (claims) => {
      const h = Buffer.from(JSON.stringify({ kid, alg: 'ES384' })).toString('base64url');
      const c = Buffer.from(JSON.stringify(claims)).toString('base64url');
      const sig = crypto.sign('sha384', Buffer.from(`${h}.${c}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      return `${h}.${c}.${sig.toString('base64url')}`;
    };
    let tamper = false;
    let seenBody = null;
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/.well-known/jwks.json') {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          return res.end(JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES384', use: 'sig' }] }));
        }
        seenBody = JSON.parse(Buffer.concat(chunks).toString());
        const now = Math.floor(Date.now() / 1000);
        const base = { iss: 'https://nras.attestation.nvidia.com', iat: now, nbf: now, exp: now + 3600, eat_nonce: seenBody.nonce };
        const gpu = jwt({ ...base, hwmodel: 'GH100 A01 GSP BROM', measres: 'success', secboot: true, dbgstat: 'disabled',
          'x-nvidia-gpu-attestation-report-nonce-match': true, 'x-nvidia-gpu-attestation-report-signature-verified': true });
        const digest = crypto.createHash('sha256').update(tamper ? gpu + 'x' : gpu).digest('hex');
        const overall = jwt({ ...base, sub: 'NVIDIA-PLATFORM-ATTESTATION', 'x-nvidia-ver': '2.0',
          'x-nvidia-overall-att-result': true, submods: { 'GPU-0': ['DIGEST', ['SHA-256', digest]] } });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify([['JWT', overall], { 'GPU-0': gpu }]));
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    try {
      const nras = `http://127.0.0.1:${server.address().port}/v3/attest/gpu`;
      const r = await verify(['gpu', p[0], '--nonce', pay.nonce, '--nras', nras]);
      expectExit(r, 0);
      assert.equal(seenBody.nonce, pay.nonce, 'the payload was submitted as is');
      for (const id of ['nras.fetch', 'nras.overall.signature', 'nras.overall.nonce', 'nras.GPU-0.digest', 'nras.GPU-0.signature'])
        expectStatus(r, id, 'pass');
      tamper = true;
      const bad = await verify(['gpu', p[0], '--nonce', pay.nonce, '--nras', nras]);
      expectExit(bad, 1);
      expectStatus(bad, 'nras.GPU-0.digest', 'fail');
    } finally {
      server.close();
    }
  });
});

describe('against vllm-proxy (simulated attestation)', () => {
  let stack;
  before(async () => { if (haveVerify) stack = await startStack(); });
  after(async () => { await stack?.stop(); });
  const url = () => `http://127.0.0.1:${stack.port}`;

  test('report: simulated is refused without --allow-simulated, accepted and labelled with it', async (t) => {
    if (!haveVerify) return t.skip('not built');
    const refused = await verify(['report', url(), '--token', TOKEN]);
    expectExit(refused, 1);
    expectStatus(refused, 'report.mode', 'fail');
    expectStatus(refused, 'tdx.quote.pck_chain', 'fail');
    for (const algo of ['ecdsa', 'ed25519']) {
      const r = await verify(['report', url(), '--signing-algo', algo, '--allow-simulated'], { env: { VLLM_PROXY_TOKEN: TOKEN } });
      expectExit(r, 0);
      for (const id of ['report.nonce', 'report.signing_key', 'tdx.report_data', 'tdx.quote.signature', 'tdx.rtmr3',
        'dstack.compose_hash', 'gpu.payload.nonce']) expectStatus(r, id, 'pass');
      expectStatus(r, 'report.mode', 'warn');
      expectStatus(r, 'gpu.evidence', 'skip');
      assert.match(r.checks.get('tdx.quote.pck_chain').found, /SIMULATED/);
      assert.match(r.checks.get('tdx.rtmr0').found, /SIMULATED/);
      assert.equal(r.json.simulated_allowed, true);
    }
  });

  test('saved report: --nonce must match; tampered report_data/address fail', async (t) => {
    if (!haveVerify) return t.skip('not built');
    const nonce = crypto.randomBytes(32).toString('hex');
    const res = await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}`);
    assert.equal(res.status, 200);
    const f = writeTmp('report.json', res.body);
    expectExit(await verify(['report', f, '--nonce', nonce, '--allow-simulated']), 0);
    const wrong = await verify(['report', f, '--nonce', 'cd'.repeat(32), '--allow-simulated']);
    expectExit(wrong, 1);
    expectStatus(wrong, 'report.nonce', 'fail');
    expectStatus(wrong, 'tdx.report_data', 'fail');
    const noNonce = await verify(['report', f, '--allow-simulated']);
    expectExit(noNonce, 0);
    expectStatus(noNonce, 'report.nonce', 'warn');
    const rep = jsonOf(res);
    const other = { ...rep, all_attestations: undefined, signing_address: '0x' + '11'.repeat(20), signing_public_key: undefined };
    const bad = await verify(['report', writeTmp('report_addr.json', JSON.stringify(other)), '--nonce', nonce, '--allow-simulated']);
    expectExit(bad, 1);
    expectStatus(bad, 'tdx.report_data', 'fail');
    const q = Buffer.from(rep.intel_quote, 'hex');
    const tq = { ...rep, all_attestations: undefined, intel_quote: flip(q, 570).toString('hex') };
    const badq = await verify(['report', writeTmp('report_q.json', JSON.stringify(tq)), '--nonce', nonce, '--allow-simulated']);
    expectExit(badq, 1);
    expectStatus(badq, 'tdx.quote.signature', 'fail');
    expectExit(await verify(['report', writeTmp('report_garbage.json', 'not json'), '--allow-simulated']), 2);
    // --signing-address names a key the report does not attest: never verified as another key
    const sa = await verify(['report', f, '--nonce', nonce, '--allow-simulated', '--signing-address', '0x' + '22'.repeat(20)]);
    expectExit(sa, 1);
    expectStatus(sa, 'report.signing_address', 'fail');
    const same = await verify(['report', f, '--nonce', nonce, '--allow-simulated', '--signing-address', rep.signing_address.toUpperCase().replace('0X', '0x')]);
    expectExit(same, 0);
    expectStatus(same, 'report.signing_address', 'pass');
  });

  for (const stream of [false, true]) {
    test(`chat round trip (${stream ? 'stream' : 'JSON'}): hashes, both signatures, fresh reports`, async (t) => {
      if (!haveVerify) return t.skip('not built');
      const args = ['chat', url(), '--token', TOKEN, '--model', MODEL, '--allow-simulated', '--prompt', 'héllo "quoted"\n'];
      if (stream) args.push('--stream');
      const r = await verify(args);
      expectExit(r, 0);
      for (const id of ['chat.request', 'chat.ecdsa.text', 'chat.ecdsa.signature', 'chat.ed25519.text',
        'chat.ed25519.signature', 'ecdsa.report.signing_address', 'ed25519.report.signing_address',
        'ecdsa.tdx.report_data', 'ed25519.tdx.report_data']) expectStatus(r, id, 'pass');
      // without --allow-simulated the attestation part fails
      const strict = await verify(args.filter((a) => a !== '--allow-simulated'));
      expectExit(strict, 1);
      expectStatus(strict, 'chat.ecdsa.signature', 'pass');
    });
  }

  test('chat with a bad token is a fetch error (exit 2); default model from /v1/models', async (t) => {
    if (!haveVerify) return t.skip('not built');
    expectExit(await verify(['chat', url(), '--token', 'nope', '--allow-simulated']), 2);
    const r = await verify(['chat', url(), '--token', TOKEN, '--allow-simulated']);
    expectExit(r, 0);
  });

  test('signature subcommand, offline', async (t) => {
    if (!haveVerify) return t.skip('not built');
    const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
    const res = await new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: stack.port, path: '/v1/chat/completions', method: 'POST',
        headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' } }, (rs) => {
        const chunks = [];
        rs.on('data', (c) => chunks.push(c));
        rs.on('end', () => resolve(Buffer.concat(chunks)));
      });
      req.on('error', reject);
      req.end(body);
    });
    const id = JSON.parse(res).id;
    const reqF = writeTmp('sig_req.bin', body);
    const respF = writeTmp('sig_resp.bin', res);
    for (const algo of ['ecdsa', 'ed25519']) {
      const s = jsonOf(await getPath(stack.port, `/v1/signature/${id}?signing_algo=${algo}`));
      const ok = await verify(['signature', '--text', s.text, '--signature', s.signature, '--address', s.signing_address,
        '--request', reqF, '--response', respF]);
      expectExit(ok, 0);
      expectStatus(ok, 'sig.text', 'pass');
      expectStatus(ok, 'sig.verify', 'pass');
      const bad = await verify(['signature', '--text', s.text.replace(/.$/, (c) => (c === '0' ? '1' : '0')),
        '--signature', s.signature, '--address', s.signing_address, '--algo', algo]);
      expectExit(bad, 1);
      expectStatus(bad, 'sig.verify', 'fail');
    }
  });

  test('the proxy exits cleanly', async (t) => {
    if (!haveVerify) return t.skip('not built');
    await stopAndCheck(stack);
    stack = null;
  });
});
