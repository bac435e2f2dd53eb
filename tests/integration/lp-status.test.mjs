// The local verifying proxy's attestation side and status page (issue 13; docs/VERIFY.md, "The
// local verifying proxy"). The remote: mock-vllm + vllm-proxy with SIMULATED attestation and
// TLS_CERT_PATH, behind an nginx TLS terminator with a certificate made here with openssl.
//
// The attestation thread (src/verify/lp_att.c) runs for real through the unit test binary's
// driver mode (build/tests/test_lp_status --live URL DIR ...), which writes the two status
// documents: the JSON is checked against values computed here (the SPKI hash of the
// certificate with node's crypto, the curl pin, the quote's measurements, the reports' keys),
// and the HTML page is loaded in headless Chromium (--dump-dom) and its checklist rows compared
// with the JSON line for line. When `vllm-proxy-verify proxy` exists (the relay side), the same
// comparison runs live against its GET / and GET /verification; it is skipped, saying so,
// until then.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startStack, tmpDir, freePort, sleep, binary, BUILD_DIR, TOKEN } from './lib/harness.mjs';
import { getPath, jsonOf } from './lib/http.mjs';
import { stopAndCheck } from './lib/common.mjs';

const dir = tmpDir('vp-lps-');
let stack, tlsGood, tlsOther;
const certs = {};

function haveCmd(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const CHROMIUM = ['chromium', 'chromium-browser'].find(haveCmd);

function makeCert(name) {
  const key = path.join(dir, `${name}.key`), crt = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', crt, '-days', '2', '-subj', `/CN=lp-status-${name}`], { stdio: 'ignore' });
  const der = new X509Certificate(fs.readFileSync(crt)).publicKey.export({ type: 'spki', format: 'der' });
  const hash = crypto.createHash('sha256').update(der).digest();
  return { key, crt, spki: hash.toString('hex'), pin: `sha256//${hash.toString('base64')}` };
}

/** nginx terminating TLS with `cert` in front of 127.0.0.1:upstreamPort. */
async function startTls(upstreamPort, cert, name) {
  const d = path.join(dir, `nginx-${name}`);
  fs.mkdirSync(path.join(d, 'tmp'), { recursive: true });
  const port = await freePort();
  fs.writeFileSync(path.join(d, 'nginx.conf'), `${process.getuid() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${d}/tmp/body;
  proxy_temp_path ${d}/tmp/proxy;
  fastcgi_temp_path ${d}/tmp/fastcgi;
  uwsgi_temp_path ${d}/tmp/uwsgi;
  scgi_temp_path ${d}/tmp/scgi;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${cert.crt};
    ssl_certificate_key ${cert.key};
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`);
  const child = spawn('nginx', ['-p', d, '-c', path.join(d, 'nginx.conf'), '-g', 'daemon off;'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (b) => { err += b; });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    if (child.exitCode !== null) throw new Error(`nginx exited: ${err}`);
    await sleep(50);
  }
  return {
    port,
    url: `https://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.on('exit', resolve);
      child.kill('SIGTERM');
    }),
  };
}

before(async () => {
  certs.good = makeCert('good');
  certs.other = makeCert('other');
  assert.notEqual(certs.good.spki, certs.other.spki);
  stack = await startStack({ proxy: { env: { TLS_CERT_PATH: certs.good.crt } } });
  tlsGood = await startTls(stack.port, certs.good, 'good');
  tlsOther = await startTls(stack.port, certs.other, 'other');
});
after(async () => {
  await tlsGood?.stop();
  await tlsOther?.stop();
  await stopAndCheck(stack);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs the attestation thread once against url; returns {out, json, html, file}. */
async function live(name, url, args) {
  const out = path.join(dir, `out-${name}`);
  fs.mkdirSync(out, { recursive: true });
  const drv = path.join(BUILD_DIR, 'tests', 'test_lp_status');
  const stdout = await new Promise((resolve, reject) => {
    execFile(drv, ['--live', url, out, '--token', TOKEN, ...args], { timeout: 150000 }, (e, so, se) => {
      if (e) reject(new Error(`${e.message}\n${se}`));
      else resolve(so);
    });
  });
  const file = path.join(out, 'index.html');
  return {
    out: JSON.parse(stdout),
    json: JSON.parse(fs.readFileSync(path.join(out, 'verification.json'), 'utf8')),
    html: fs.readFileSync(file, 'utf8'),
    file,
  };
}

/** The remote's own report for algo, fetched directly (plain http to the proxy). */
async function directReport(algo) {
  const res = await getPath(stack.port, `/v1/attestation/report?signing_algo=${algo}`);
  assert.equal(res.status, 200);
  return jsonOf(res);
}

/** MRTD and RTMR0-3 of a TDX v4 quote (TD report body 1.0 at byte 48), as hex. */
function quoteMeasurements(hex) {
  const q = Buffer.from(hex, 'hex');
  const at = (off) => q.subarray(off, off + 48).toString('hex');
  return { mrtd: at(48 + 136), rtmr: [0, 1, 2, 3].map((i) => at(48 + 328 + 48 * i)) };
}

/** The DOM after Chromium rendered url (no script runs: the page has none). */
function dumpDom(url) {
  return new Promise((resolve, reject) => {
    execFile(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      `--user-data-dir=${path.join(dir, `chrome-${crypto.randomUUID()}`)}`, '--dump-dom', url],
    { timeout: 90000, maxBuffer: 16 << 20 }, (e, so, se) => {
      if (e && !so) reject(new Error(`${e.message}\n${se}`));
      else resolve(so);
    });
  });
}

const unescape = (s) => s.replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<')
  .replaceAll('&gt;', '>').replaceAll('&amp;', '&');

/** [{id, status, cells}] of the rendered checklist table's rows, in order. */
function domRows(dom) {
  const table = dom.match(/<table id="checklist">([\s\S]*?)<\/table>/);
  assert.ok(table, 'the DOM has the checklist table');
  const rows = [];
  for (const m of table[1].matchAll(/<tr data-check="([^"]*)" data-status="([^"]*)"[^>]*>([\s\S]*?)<\/tr>/g)) {
    const cells = [...m[3].matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) => unescape(c[1]));
    rows.push({ id: unescape(m[1]), status: m[2], cells });
  }
  return rows;
}

/** The page in Chromium shows the JSON's checklist line for line, and the same state. */
async function assertPageMatchesJson(url, json) {
  const dom = await dumpDom(url);
  const state = dom.match(/<div id="state" class="(ok|bad)" data-state="([^"]*)">([\s\S]*?)<\/div>/);
  assert.ok(state, 'the banner is rendered');
  assert.equal(state[2], json.state);
  if (json.verified) assert.match(state[3], /^Verified/);
  else assert.equal(unescape(state[3]), `NOT VERIFIED: ${json.why}`);
  const rows = domRows(dom);
  assert.equal(rows.length, json.checks.length, 'as many rows as checks');
  assert.ok(rows.length > 20, `a full checklist (${rows.length} lines)`);
  rows.forEach((r, i) => {
    const c = json.checks[i];
    assert.equal(r.id, c.id, `row ${i}`);
    assert.equal(r.status, c.status, `row ${i} (${c.id}) status`);
    assert.deepEqual(r.cells, [c.status.toUpperCase(), c.id, c.what, c.expected, c.found], `row ${i} (${c.id}) cells`);
  });
  assert.doesNotMatch(dom, /<script/i, 'no script in the page');
  return dom;
}

test('a simulated remote over TLS is verified with --allow-simulated; the pins are the key the report binds', async (t) => {
  const r = await live('good', tlsGood.url, ['--allow-simulated', '--kick']);
  assert.equal(r.out.verified, true, r.out.why);
  assert.equal(r.out.generation, 1);
  // a kick re-verifies: the same key, a new generation
  assert.equal(r.out.kick_verified, 1);
  assert.equal(r.out.kick_generation, 2);
  assert.equal(r.out.curl_pin, certs.good.pin, 'the curl pin is sha256// + base64 of the SPKI hash (node crypto)');
  const j = r.json;
  assert.equal(j.state, 'verified');
  assert.equal(j.why, null);
  assert.equal(j.generation, 2);
  assert.equal(j.verifications, 2);
  assert.equal(j.simulated, true);
  assert.equal(j.keys.tls_spki, certs.good.spki);
  assert.equal(j.keys.tls_bound, certs.good.spki);
  assert.equal(j.keys.pinned.tls_spki, certs.good.spki);
  assert.equal(j.keys.pinned.curl_pin, certs.good.pin);
  const ec = await directReport('ecdsa'), ed = await directReport('ed25519');
  assert.equal(j.keys.ecdsa_address, ec.signing_address);
  assert.equal(j.keys.pinned.ecdsa_address, ec.signing_address);
  assert.equal(j.keys.ecdsa_public_key, `04${ec.signing_public_key}`);
  assert.equal(j.keys.ed25519_key, ed.signing_address);
  assert.equal(j.keys.pinned.ed25519_key, ed.signing_address);
  // the measurements are the quote's (the simulated quote has the same body for every nonce)
  const m = quoteMeasurements(ec.intel_quote);
  assert.equal(j.measurements.mrtd, m.mrtd);
  assert.deepEqual([0, 1, 2, 3].map((i) => j.measurements[`rtmr${i}`]), m.rtmr);
  assert.equal(j.measurements.attestation_mode, 'simulated');
  assert.match(j.measurements.tcb_status, /SIMULATED/);
  // the simulated PCK leaf has no SGX extension, so no FMSPC can be read from it
  assert.equal(j.measurements.fmspc, null);
  // the checklist: both algorithms' report checks, no FAIL, the simulated WARN, TLS bound
  const by = Object.fromEntries(j.checks.map((c) => [c.id, c]));
  assert.equal(j.summary.fail, 0);
  assert.ok(j.checks.every((c) => ['pass', 'warn', 'skip'].includes(c.status)));
  for (const a of ['ecdsa', 'ed25519']) {
    assert.equal(by[`${a}.report.nonce`]?.status, 'pass', `${a} nonce`);
    assert.equal(by[`${a}.report.mode`]?.status, 'warn', `${a} simulated: WARN`);
    assert.equal(by[`${a}.tdx.report_data`]?.status, 'pass', `${a} report_data`);
    assert.equal(by[`${a}.report.tls`]?.status, 'pass', `${a} self-signed key trusted on attestation`);
    assert.equal(by[`lp.tls.${a}`]?.status, 'pass');
    assert.equal(by[`lp.tls.${a}`].found, certs.good.spki);
    assert.equal(by[`lp.key.${a}`]?.status, 'pass');
    assert.ok(j.checks.some((c) => c.id.startsWith(`${a}.tdx.rtmr`)), `${a} event log replayed`);
  }
  assert.equal(by['lp.transport'].status, 'pass');
  assert.equal(j.answers.verified, 0);
  assert.deepEqual(j.answers.last, []);
  if (!CHROMIUM) return t.skip('chromium is not installed (scripts/install-deps installs it)');
  const dom = await assertPageMatchesJson(`file://${r.file}`, j);
  assert.match(dom, new RegExp(`<tr id="k-tls"><th>[^<]*</th><td>${certs.good.spki}</td>`));
  assert.match(dom, new RegExp(`<tr id="m-mrtd"><th>MRTD</th><td>${m.mrtd}</td>`));
});

test('a terminator presenting another key than the attested one: not verified, nothing pinned', async (t) => {
  const r = await live('other', tlsOther.url, ['--allow-simulated']);
  assert.equal(r.out.verified, false);
  assert.equal(r.out.generation, 0);
  assert.equal(r.out.curl_pin, '');
  const j = r.json;
  assert.equal(j.state, 'not verified');
  assert.match(j.why, /^check (ecdsa\.report\.tls|lp\.tls\.ecdsa) failed/);
  assert.equal(j.keys.pinned, null);
  const tls = j.checks.find((c) => c.id === 'lp.tls.ecdsa');
  assert.equal(tls.status, 'fail');
  assert.equal(tls.expected, certs.good.spki, 'the report binds the key of TLS_CERT_PATH');
  assert.match(tls.found, new RegExp(certs.other.spki));
  if (!CHROMIUM) return t.skip('chromium is not installed');
  await assertPageMatchesJson(`file://${r.file}`, j);
});

test('simulated attestation without --allow-simulated is not verified, naming report.mode', async () => {
  const r = await live('strict', tlsGood.url, []);
  assert.equal(r.out.verified, false);
  assert.match(r.json.why, /^check ecdsa\.report\.mode failed: the attestation comes from real TDX hardware/);
  assert.equal(r.json.checks.find((c) => c.id === 'ed25519.report.mode').status, 'fail');
  assert.equal(r.json.keys.pinned, null);
});

test('a plain-http remote: refused without --allow-http; with it verified, nothing pinned, and a WARN says so', async () => {
  const url = `http://127.0.0.1:${stack.port}`;
  const no = await live('http-no', url, ['--allow-simulated']);
  assert.equal(no.out.verified, false);
  assert.match(no.json.why, /^check lp\.transport failed/);
  const yes = await live('http-yes', url, ['--allow-simulated', '--allow-http']);
  assert.equal(yes.out.verified, true, yes.out.why);
  assert.equal(yes.out.curl_pin, '');
  const by = Object.fromEntries(yes.json.checks.map((c) => [c.id, c]));
  assert.equal(by['lp.transport'].status, 'warn');
  assert.match(by['lp.transport'].found, /no TLS key is bound or pinned/);
  assert.equal(by['lp.tls.ecdsa'].status, 'warn');
  assert.equal(yes.json.keys.pinned.tls_spki, null);
});

test('a policy file: its pins are checked and the status documents show it', async () => {
  const ec = await directReport('ecdsa');
  const m = quoteMeasurements(ec.intel_quote);
  const good = path.join(dir, 'policy-good.json'), bad = path.join(dir, 'policy-bad.json');
  fs.writeFileSync(good, JSON.stringify({ mrtd: m.mrtd, rtmr1: m.rtmr[1] }));
  fs.writeFileSync(bad, JSON.stringify({ mrtd: '00'.repeat(48) }));
  const ok = await live('pol-good', tlsGood.url, ['--allow-simulated', '--policy', good]);
  assert.equal(ok.out.verified, true, ok.out.why);
  assert.equal(ok.json.policy.file, good);
  assert.deepEqual(ok.json.policy.content, { mrtd: m.mrtd, rtmr1: m.rtmr[1] });
  assert.equal(ok.json.checks.find((c) => c.id === 'ecdsa.pin.mrtd')?.status, 'pass');
  assert.match(ok.html, new RegExp(`<pre>[^<]*\n  &quot;mrtd&quot;:&quot;${m.mrtd}&quot;,\n`));
  const no = await live('pol-bad', tlsGood.url, ['--allow-simulated', '--policy', bad]);
  assert.equal(no.out.verified, false);
  assert.match(no.json.why, /^check ecdsa\.pin\.mrtd failed/);
});

// The live page of the relay side (`vllm-proxy-verify proxy`, src/verify/lp_main.c).
const HAVE_PROXY = fs.existsSync(path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'src', 'verify', 'lp_main.c'));

test('live: GET / of `vllm-proxy-verify proxy` in Chromium matches GET /verification', {
  skip: !HAVE_PROXY ? 'the relay side (src/verify/lp_main.c) has not landed: the page was checked from the driver above' : !CHROMIUM && 'chromium is not installed',
}, async () => {
  const port = await freePort();
  const child = spawn(binary('vllm-proxy-verify'), ['proxy', tlsGood.url, '--listen', `127.0.0.1:${port}`,
    '--token', TOKEN, '--allow-simulated'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (b) => { err += b; });
  try {
    let j;
    for (let i = 0; i < 300; i++) {
      const res = await getPath(port, '/verification', { token: null }).catch(() => null);
      if (res?.status === 200) {
        j = jsonOf(res);
        if (j.verifications > 0) break;
      }
      if (child.exitCode !== null) throw new Error(`proxy exited: ${err}`);
      await sleep(100);
    }
    assert.ok(j, `GET /verification answered\n${err}`);
    assert.equal(j.state, 'verified', j.why);
    assert.equal(j.keys.pinned.curl_pin, certs.good.pin);
    await assertPageMatchesJson(`http://127.0.0.1:${port}/`, j);
  } finally {
    child.kill('SIGTERM');
  }
});
