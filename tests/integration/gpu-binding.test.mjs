// GPU evidence a skeptic accepts (issue 14, items 1-3): the version=3 report whose report_data
// commits to the GPU and NVSwitch evidence (recomputed here with node's own SHA-256 from the
// report's strings), the expected GPU / NVSwitch counts on both sides, and the verifier on
// nvtrust's public PPCIe vectors (8 H100 GPUs + 4 LS10 NVSwitches, one nonce): all pass, and a
// removed GPU, a removed switch or one changed byte fails.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUILD_DIR, REPO_ROOT, TOKEN, startStack, tmpDir } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';

const VERIFY = path.join(BUILD_DIR, 'vllm-proxy-verify');
const VEC = path.join(REPO_ROOT, 'tests', 'vectors', 'nvidia', 'nvtrust');
const GPUS = JSON.parse(fs.readFileSync(path.join(VEC, 'ppcie_gpu_evidence_8xH100.json'), 'utf8'));
const SWITCHES = JSON.parse(fs.readFileSync(path.join(VEC, 'ppcie_switch_evidence_4xLS10.json'), 'utf8'));
const AT = '2025-06-01T00:00:00Z'; // inside every certificate's validity

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-gpubind-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let nfile = 0;
function writeTmp(obj) {
  const f = path.join(tmp, `f${nfile++}.json`);
  fs.writeFileSync(f, typeof obj === 'string' ? obj : JSON.stringify(obj));
  return f;
}

function verify(args) {
  return new Promise((resolve) => {
    execFile(VERIFY, [...args, '--json'], { env: { ...process.env, VLLM_PROXY_TOKEN: TOKEN }, maxBuffer: 16 << 20, timeout: 60000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        let json = null;
        try { json = JSON.parse(stdout); } catch { /* usage errors print no JSON */ }
        const checks = new Map();
        for (const c of json?.checks ?? []) checks.set(c.id, c);
        resolve({ code, stdout, stderr, checks });
      });
  });
}
function expectExit(r, code) {
  const bad = [...r.checks.values()].filter((c) => c.status !== 'pass').map((c) => `[${c.status}] ${c.id}: ${c.found}`).join('\n');
  assert.equal(r.code, code, `exit ${r.code}, want ${code}\n${bad || r.stdout + r.stderr}`);
}
function expectStatus(r, id, status) {
  assert.ok(r.checks.has(id), `no line ${id}; have ${[...r.checks.keys()].join(', ')}`);
  assert.equal(r.checks.get(id).status, status, `${id}: ${JSON.stringify(r.checks.get(id))}`);
}

/** NRAS-shaped payload text in nvtrust's json.dumps layout from nvattest items. */
function nrasPayload(items, arch) {
  const list = items.map((it) => `{"certificate": "${it.certificate}", "evidence": "${it.evidence}"}`).join(', ');
  return `{"nonce": "${items[0].nonce}", "evidence_list": [${list}], "arch": "${arch}"}`;
}

/** One base64 character of item i's evidence changed (a byte of the signed SPDM report). */
function flipEvidence(items, i) {
  return items.map((it, k) => {
    if (k !== i) return it;
    const raw = Buffer.from(it.evidence, 'base64');
    raw[200] ^= 1;
    return { ...it, evidence: raw.toString('base64') };
  });
}

describe('the PPCIe vectors: 8 GPUs and their 4 NVSwitches', () => {
  const report = (gpus, switches) => writeTmp({ nvidia_payload: nrasPayload(gpus, 'HOPPER'), nvswitch_payload: nrasPayload(switches, 'LS10') });
  const nonce = GPUS[0].nonce;

  test('all of it verifies, with --gpus 8 --nvswitches 4 and with the policy keys', async () => {
    assert.equal(SWITCHES[0].nonce, nonce);
    const f = report(GPUS, SWITCHES);
    const r = await verify(['gpu', f, '--nonce', nonce, '--at', AT, '--gpus', '8', '--nvswitches', '4']);
    expectExit(r, 0);
    for (let i = 0; i < 8; i++) for (const c of ['evidence', 'cert_chain', 'spdm_signature', 'nonce']) expectStatus(r, `gpu.${i}.${c}`, 'pass');
    for (let i = 0; i < 4; i++) for (const c of ['evidence', 'cert_chain', 'spdm_signature', 'nonce']) expectStatus(r, `nvswitch.${i}.${c}`, 'pass');
    expectStatus(r, 'nvswitch.payload.arch', 'pass');
    expectStatus(r, 'gpu.count', 'pass');
    expectStatus(r, 'nvswitch.count', 'pass');
    assert.match(r.checks.get('nvswitch.0.cert_chain').found, /LS_10 A01 FSP FMC LF/);
    const policy = writeTmp({ gpus: 8, nvswitches: 4 });
    const p = await verify(['gpu', f, '--nonce', nonce, '--at', AT, '--policy', policy]);
    expectExit(p, 0);
    expectStatus(p, 'gpu.count', 'pass');
    expectStatus(p, 'nvswitch.count', 'pass');
    // nvtrust's switch file alone is recognised as switch evidence
    const s = await verify(['gpu', path.join(VEC, 'ppcie_switch_evidence_4xLS10.json'), '--nonce', nonce, '--at', AT, '--nvswitches', '4']);
    expectExit(s, 0);
    expectStatus(s, 'nvswitch.3.spdm_signature', 'pass');
  });

  test('a GPU or a switch removed fails the counts', async () => {
    const lessGpu = await verify(['gpu', report(GPUS.slice(0, 7), SWITCHES), '--nonce', nonce, '--at', AT, '--gpus', '8', '--nvswitches', '4']);
    expectExit(lessGpu, 1);
    expectStatus(lessGpu, 'gpu.count', 'fail');
    expectStatus(lessGpu, 'nvswitch.count', 'pass');
    const lessSw = await verify(['gpu', report(GPUS, SWITCHES.slice(1)), '--nonce', nonce, '--at', AT, '--policy', writeTmp({ gpus: 8, nvswitches: 4 })]);
    expectExit(lessSw, 1);
    expectStatus(lessSw, 'nvswitch.count', 'fail');
    const noSw = await verify(['gpu', writeTmp({ nvidia_payload: nrasPayload(GPUS, 'HOPPER') }), '--nonce', nonce, '--at', AT, '--policy', writeTmp({ nvswitches: true })]);
    expectExit(noSw, 1);
    expectStatus(noSw, 'nvswitch.count', 'fail');
    const badPolicy = await verify(['gpu', report(GPUS, SWITCHES), '--nonce', nonce, '--at', AT, '--policy', writeTmp({ gpus: 'eight' })]);
    assert.notEqual(badPolicy.code, 0);
  });

  test('one changed byte of a GPU or a switch report fails its signature', async () => {
    const g = await verify(['gpu', report(flipEvidence(GPUS, 3), SWITCHES), '--nonce', nonce, '--at', AT]);
    expectExit(g, 1);
    expectStatus(g, 'gpu.3.spdm_signature', 'fail');
    expectStatus(g, 'nvswitch.0.spdm_signature', 'pass');
    const s = await verify(['gpu', report(GPUS, flipEvidence(SWITCHES, 2)), '--nonce', nonce, '--at', AT]);
    expectExit(s, 1);
    expectStatus(s, 'nvswitch.2.spdm_signature', 'fail');
    const wrongNonce = await verify(['gpu', report(GPUS, SWITCHES), '--nonce', 'ab'.repeat(32), '--at', AT]);
    expectExit(wrongNonce, 1);
    expectStatus(wrongNonce, 'nvswitch.payload.nonce', 'fail');
  });
});

/** report_data[0:32] of version 3, computed here from the report's fields. */
function v3(rep) {
  const id = Buffer.from(rep.signing_address.replace(/^0x/, ''), 'hex');
  const spki = rep.tls_cert_fingerprint ? Buffer.from(rep.tls_cert_fingerprint, 'hex') : Buffer.alloc(32);
  const h = (s) => crypto.createHash('sha256').update(Buffer.from(s, 'utf8')).digest();
  const sw = rep.nvswitch_payload ? h(rep.nvswitch_payload) : Buffer.alloc(32);
  return crypto.createHash('sha256').update(Buffer.concat([Buffer.from('vllm-proxy/report-data/v3'), id, spki, h(rep.nvidia_payload), sw])).digest();
}
const quoteRd = (rep) => Buffer.from(rep.intel_quote, 'hex').subarray(568, 632);

describe('version=3 against vllm-proxy (simulated attestation)', () => {
  let stack, counted;
  before(async () => {
    stack = await startStack();
    counted = await startStack({ proxy: { env: { GPU_EXPECTED_COUNT: '2' } } });
  });
  after(async () => { await stack?.stop(); await counted?.stop(); });

  test('report_data = v3 for both algorithms; the default report is unchanged; version=4 is 400', async () => {
    const nonce = crypto.randomBytes(32).toString('hex');
    for (const algo of ['ecdsa', 'ed25519']) {
      const res = await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}&signing_algo=${algo}&version=3`);
      assert.equal(res.status, 200, res.body.toString());
      const rep = jsonOf(res);
      assert.equal(rep.report_version, 3);
      assert.equal(rep.all_attestations[0].report_version, 3);
      const rd = quoteRd(rep);
      assert.deepEqual(rd.subarray(0, 32), v3(rep));
      assert.equal(rd.subarray(32).toString('hex'), nonce);
      assert.equal(JSON.parse(rep.nvidia_payload).nonce, nonce);
    }
    const def = jsonOf(await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}`));
    assert.equal(def.report_version, undefined);
    const rd = quoteRd(def);
    assert.equal(rd.subarray(0, 20).toString('hex'), def.signing_address.slice(2).toLowerCase());
    assert.ok(rd.subarray(20, 32).equals(Buffer.alloc(12)));
    const bad = await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}&version=4`);
    assert.equal(bad.status, 400);
    assert.equal(jsonOf(bad).error.code, 'invalid_version');
    // server-nonce v3 reports are cached apart from the default ones
    const a = jsonOf(await getPath(stack.port, '/v1/attestation/report?version=3'));
    const b = jsonOf(await getPath(stack.port, '/v1/attestation/report'));
    assert.equal(a.report_version, 3);
    assert.equal(b.report_version, undefined);
    assert.deepEqual(quoteRd(a).subarray(0, 32), v3(a));
  });

  test('the verifier: v3 passes; the payload swapped for another valid one with the same nonce fails', async () => {
    const url = `http://127.0.0.1:${stack.port}`;
    const r = await verify(['report', url, '--allow-simulated', '--report-version', '3']);
    expectExit(r, 0);
    expectStatus(r, 'tdx.report_data', 'pass');
    assert.match(r.checks.get('tdx.report_data').what, /v3/);
    const nonce = crypto.randomBytes(32).toString('hex');
    const rep = jsonOf(await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}&version=3`));
    const f = writeTmp(rep);
    expectExit(await verify(['report', f, '--nonce', nonce, '--allow-simulated']), 0);
    // another payload for the same nonce, as valid as the first (same items, the layout of
    // another serialiser): the v3 binding no longer holds
    const p = JSON.parse(rep.nvidia_payload);
    const swapped = { ...rep, all_attestations: undefined, model_attestations: undefined, nvidia_payload: JSON.stringify(p) };
    assert.notEqual(swapped.nvidia_payload, rep.nvidia_payload);
    const s = await verify(['report', writeTmp(swapped), '--nonce', nonce, '--allow-simulated']);
    expectExit(s, 1);
    expectStatus(s, 'tdx.report_data', 'fail');
    expectStatus(s, 'gpu.payload.nonce', 'pass'); // the evidence itself is still "valid"
    // a v3 report stripped of its version is checked as a default one, and fails
    const stripped = { ...rep, all_attestations: undefined, model_attestations: undefined, report_version: undefined };
    const st = await verify(['report', writeTmp(stripped), '--nonce', nonce, '--allow-simulated']);
    expectExit(st, 1);
    expectStatus(st, 'tdx.report_data', 'fail');
    // --report-version 3 refuses a default report
    const def = jsonOf(await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}`));
    const d = await verify(['report', writeTmp(def), '--nonce', nonce, '--allow-simulated', '--report-version', '3']);
    expectExit(d, 1);
    expectStatus(d, 'report.version', 'fail');
    // --gpus: the simulated payload holds one GPU
    const g = await verify(['report', f, '--nonce', nonce, '--allow-simulated', '--gpus', '2']);
    expectExit(g, 1);
    expectStatus(g, 'gpu.count', 'fail');
  });

  test('the dstack gpu-attestation event: replayed into RTMR3, claims shown; a changed claim fails', async () => {
    const nonce = crypto.randomBytes(32).toString('hex');
    const rep = jsonOf(await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}`));
    const r = await verify(['report', writeTmp(rep), '--nonce', nonce, '--allow-simulated']);
    expectExit(r, 0);
    expectStatus(r, 'dstack.gpu_event', 'pass');
    const ev = rep.event_log.find((e) => e.event === 'gpu-attestation');
    const claims = JSON.parse(Buffer.from(ev.event_payload, 'hex').toString('utf8'));
    assert.match(r.checks.get('dstack.gpu_event').found, new RegExp(`evidence_sha256=${claims.evidence_sha256.slice(0, 16)}`));
    assert.match(r.checks.get('dstack.gpu_event').found, /gpu_count=1/);
    // the same log with the claim changed (its digest recomputed, as dstack's replay does): RTMR3 no longer matches
    const forged = { ...claims, evidence_sha256: '00'.repeat(32) };
    const log = rep.event_log.map((e) => e === ev ? { ...e, event_payload: Buffer.from(JSON.stringify(forged)).toString('hex'), digest: '' } : e);
    const bad = await verify(['report', writeTmp({ ...rep, all_attestations: undefined, model_attestations: undefined, event_log: log }), '--nonce', nonce, '--allow-simulated']);
    expectExit(bad, 1);
    expectStatus(bad, 'tdx.rtmr3', 'fail');
    expectStatus(bad, 'dstack.gpu_event', 'fail');
    // a log without the event: SKIP, not silence
    const without = rep.event_log.filter((e) => e !== ev);
    const sk = await verify(['report', writeTmp({ ...rep, all_attestations: undefined, model_attestations: undefined, event_log: without }), '--nonce', nonce, '--allow-simulated']);
    expectStatus(sk, 'dstack.gpu_event', 'skip');
  });

  test('GPU_EXPECTED_COUNT=2 with one GPU: 503 naming it, never a smaller report', async () => {
    for (const q of ['', '&version=3']) {
      const res = await getPath(counted.port, `/v1/attestation/report?nonce=${'11'.repeat(32)}${q}`);
      assert.equal(res.status, 503);
      assert.match(jsonOf(res).error.message, /GPU evidence covers 1 GPU\(s\), GPU_EXPECTED_COUNT is 2/);
    }
  });
});

/** fake-dstack-agent on a Unix socket; resolves once it listens. */
async function startAgent(sock, args = []) {
  const proc = spawn(path.join(BUILD_DIR, 'fake-dstack-agent'), ['--unix', sock, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const a = { err: '', exited: null };
  proc.stderr.on('data', (d) => { a.err += d; });
  const done = new Promise((r) => proc.on('exit', (code, signal) => { a.exited = { code, signal }; r(); }));
  a.stop = async () => { if (!a.exited) { proc.kill('SIGTERM'); await done; } };
  const t0 = Date.now();
  while (!/listening on unix:/.test(a.err)) {
    if (a.exited || Date.now() - t0 > 10000) throw new Error(`fake-dstack-agent did not start: ${a.err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return a;
}

describe('GPU_EVIDENCE=dstack: the guest agent\'s AttestGpu (fake agent)', () => {
  const dir = tmpDir('vp-attestgpu-');
  const sockGpu = path.join(dir, 'gpu.sock');
  const sockOld = path.join(dir, 'old.sock');
  let agentGpu, agentOld, stack, old;
  const env = (sock, extra = {}) => ({ ATTESTATION: 'dstack', DSTACK_SIMULATOR_ENDPOINT: sock, GPU_EVIDENCE: 'dstack', TAPPD_SIMULATOR_ENDPOINT: undefined, TSM_REPORT_PATH: path.join(dir, 'no-tsm'), ...extra });
  before(async () => {
    agentGpu = await startAgent(sockGpu, ['--attest-gpu', '2']);
    agentOld = await startAgent(sockOld); // an agent without AttestGpu (dstack v0.5.x)
    stack = await startStack({ proxy: { env: env(sockGpu, { GPU_EXPECTED_COUNT: '2' }) } });
    old = await startStack({ proxy: { env: env(sockOld) } });
  });
  after(async () => {
    await stack?.stop(); await old?.stop(); await agentGpu?.stop(); await agentOld?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the agent\'s evidence for our nonce becomes nvidia_payload (and is bound by version=3)', async () => {
    const nonce = crypto.randomBytes(32).toString('hex');
    for (const q of ['', '&version=3']) {
      const res = await getPath(stack.port, `/v1/attestation/report?nonce=${nonce}${q}`);
      assert.equal(res.status, 200, res.body.toString());
      const rep = jsonOf(res);
      assert.equal(rep.gpu_evidence, 'dstack');
      const p = JSON.parse(rep.nvidia_payload);
      assert.equal(p.nonce, nonce);
      assert.equal(p.arch, 'HOPPER');
      assert.equal(p.evidence_list.length, 2);
      for (const it of p.evidence_list) {
        assert.deepEqual(Object.keys(it), ['certificate', 'evidence']);
        assert.equal(Buffer.from(it.evidence, 'base64').subarray(4, 36).toString('hex'), nonce);
      }
      if (q) assert.deepEqual(quoteRd(rep).subarray(0, 32), v3(rep));
    }
  });

  test('an agent without AttestGpu: 503 naming it', async () => {
    const res = await getPath(old.port, `/v1/attestation/report?nonce=${'22'.repeat(32)}`);
    assert.equal(res.status, 503);
    assert.match(jsonOf(res).error.message, /AttestGpu answered HTTP 404/);
  });
});
