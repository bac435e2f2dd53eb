// vllm-proxy-verify's output for people (docs/VERIFY.md, "Output"): every line of every
// command's text output fits 100 columns (report, chat, chat --stream, chat --e2ee, signature,
// quote, gpu, failing runs, --verbose); the header block names what was verified (target,
// time, our nonce, signing key, model, compose hash, OS image, TCB status) with values computed
// here from the report; hex is shortened unless --verbose; no escape code unless a terminal
// asks for colour (NO_COLOR honoured, --color forces); --json has the same content as the
// verifier of main had for the same inputs (golden files), only the two new lines added;
// report.schema warns of unknown and missing fields; dstack.os_image tells a dev OS image
// from the fake agent's event log and the policy's reject_dev_os_image fails it; a report
// fetched over a self-signed certificate is trusted only when the quote binds its key;
// --version.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { BUILD_DIR, REPO_ROOT, TOKEN, MODEL, binary, haveBinary, startMock, startProxy, startStack, tmpDir, sleep } from './lib/harness.mjs';
import { getPath, postJson, jsonOf } from './lib/http.mjs';
import { stopAndCheck } from './lib/common.mjs';

const VERIFY = path.join(BUILD_DIR, 'vllm-proxy-verify');
const skip = !fs.existsSync(VERIFY) && 'build/vllm-proxy-verify not built';
const dir = tmpDir('vp-vout-');
const GOLDEN = path.join(REPO_ROOT, 'tests', 'integration', 'golden');
const SIM_REPORT = path.join(REPO_ROOT, 'tests', 'vectors', 'simulated', 'report_ecdsa_sim.json');
const SIM_NONCE = 'ab'.repeat(32); // the nonce that report was fetched for
const SIM_AT = '1796592958'; // when it was made (its simulated certificates are valid then)
const V055 = path.join(REPO_ROOT, 'tests', 'vectors', 'tdx', 'dstack-v055-sample');
// the lines added since the golden JSON was saved: the output rework's two, and the GPU binding's
// gpu-attestation event line (issue 14)
const NEW_IDS = new Set(['report.schema', 'dstack.os_image', 'dstack.gpu_event']);

/** Runs the verifier; resolves {code, out, err}. env: extra variables (undefined removes one). */
function run(args, { env = {} } = {}) {
  const e = { ...process.env, VLLM_PROXY_TOKEN: TOKEN };
  delete e.NO_COLOR;
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k]; else e[k] = v;
  return new Promise((resolve) => {
    execFile(VERIFY, args, { env: e, maxBuffer: 16 << 20, timeout: 60000 }, (err, out, stderr) => {
      assert.doesNotMatch(stderr, /ERROR: (Address|Leak)Sanitizer|runtime error:/, `no sanitizer report: ${args.join(' ')}`);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out, err: stderr });
    });
  });
}

const short = (hex) => `${hex.slice(0, 8)}…${hex.slice(-4)}`;
const cols = (line) => [...line].length;

/** Every line of a text output: at most 100 columns, no control byte but the newline. */
function checkLines(label, out) {
  assert.ok(out.length > 0, `${label}: some output`);
  for (const line of out.split('\n')) {
    assert.ok(cols(line) <= 100, `${label}: ${cols(line)} columns: ${line}`);
    assert.doesNotMatch(line, /[\x00-\x1f\x7f]/, `${label}: a control byte in ${JSON.stringify(line)}`);
  }
}

/** The header block: "  label   value" rows up to the first blank line. */
function header(out) {
  const rows = new Map();
  const lines = out.split('\n');
  for (const l of lines.slice(1)) {
    if (!l) break;
    const m = /^ {2}(\S.{0,13}?)\s{2,}(.*)$/.exec(l) ?? /^ {2}(\S+(?: \S+)?)\s+(.*)$/.exec(l);
    if (m) rows.set(m[1].trim(), m[2]);
  }
  return { first: lines[0], rows };
}

let stack;
before(async () => { if (!skip) stack = await startStack(); });
after(async () => {
  if (stack) await stopAndCheck(stack);
  fs.rmSync(dir, { recursive: true, force: true });
});
const url = () => `http://127.0.0.1:${stack.port}`;

describe('text output', { skip }, () => {
  test('every line of every command fits 100 columns and carries no control byte', async () => {
    // signature: the record of a real exchange, its exact bytes saved to files
    const body = { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };
    const res = await postJson(stack.port, '/v1/chat/completions', body);
    assert.equal(res.status, 200);
    const id = jsonOf(res).id;
    const sig = jsonOf(await getPath(stack.port, `/v1/signature/${id}?signing_algo=ecdsa`));
    const req = path.join(dir, 'req.json'), resp = path.join(dir, 'resp.json');
    fs.writeFileSync(req, JSON.stringify(body));
    fs.writeFileSync(resp, res.body);
    const runs = {
      report: ['report', url(), '--allow-simulated'],
      'report --verbose': ['report', url(), '--allow-simulated', '--verbose'],
      'report, failing (no --allow-simulated)': ['report', url()],
      'report, failing --verbose': ['report', url(), '--verbose'],
      chat: ['chat', url(), '--allow-simulated', '--model', MODEL, '--max-tokens', '8'],
      'chat --stream': ['chat', url(), '--allow-simulated', '--model', MODEL, '--stream'],
      'chat --stream --verbose': ['chat', url(), '--allow-simulated', '--model', MODEL, '--stream', '--verbose'],
      'chat --e2ee dstack-v2': ['chat', url(), '--allow-simulated', '--model', MODEL, '--stream', '--e2ee', 'dstack-v2'],
      'chat --e2ee near-v1 ed25519': ['chat', url(), '--allow-simulated', '--model', MODEL, '--e2ee', 'near-v1', '--signing-algo', 'ed25519'],
      'chat --e2ee aci-v2': ['chat', url(), '--allow-simulated', '--model', MODEL, '--e2ee', 'aci-v2'],
      signature: ['signature', '--text', sig.text, '--signature', sig.signature, '--address', sig.signing_address,
        '--request', req, '--response', resp],
      'signature, failing': ['signature', '--text', sig.text + 'x', '--signature', sig.signature, '--address', sig.signing_address],
      quote: ['quote', path.join(V055, 'quote.hex'), '--event-log', path.join(V055, 'event_log.json'),
        '--info', path.join(V055, 'info_sdk_parsed.json'), '--no-collateral', '--verbose'],
      gpu: ['gpu', path.join(REPO_ROOT, 'tests', 'vectors', 'nvidia', 'nvtrust', 'ppcie_gpu_evidence_8xH100.json')],
      'saved report': ['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT],
      'could not verify': ['report', path.join(dir, 'missing.json')],
      roots: ['roots'],
    };
    for (const [label, args] of Object.entries(runs)) {
      const r = await run(args);
      assert.ok([0, 1, 2].includes(r.code), `${label}: exit ${r.code}\n${r.err}`);
      checkLines(label, r.out);
      assert.match(r.out.split('\n')[0], /^vllm-proxy-verify \S+: (VERIFIED|VERIFICATION FAILED|COULD NOT VERIFY)/, label);
    }
    // the runs that must pass did
    for (const label of ['report', 'chat', 'chat --stream', 'chat --e2ee dstack-v2', 'signature', 'quote', 'saved report']) {
      const r = await run(runs[label]);
      assert.equal(r.code, 0, `${label}: exit ${r.code}\n${r.out}`);
    }
  });

  test('the header says what was verified, with values computed here', async () => {
    const saved = JSON.parse(fs.readFileSync(SIM_REPORT, 'utf8'));
    const r = await run(['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT]);
    assert.equal(r.code, 0, r.out);
    const { first, rows } = header(r.out);
    assert.equal(first, 'vllm-proxy-verify report: VERIFIED');
    assert.equal(rows.get('verified'), SIM_REPORT.length <= 84 ? SIM_REPORT : rows.get('verified'));
    assert.equal(rows.get('checked at'), `${new Date(Number(SIM_AT) * 1000).toISOString().replace('.000', '')} (--at)`);
    assert.equal(rows.get('nonce'), short(SIM_NONCE));
    assert.equal(rows.get('signing key'), `0x${short(saved.signing_address.slice(2))} (ecdsa)`);
    assert.equal(rows.get('model'), MODEL);
    const compose = crypto.createHash('sha256').update(saved.info.tcb_info.app_compose).digest('hex');
    assert.equal(rows.get('compose hash'), short(compose));
    const osEv = saved.event_log.find((e) => e.event === 'os-image-hash');
    assert.match(rows.get('OS image'), new RegExp(`^${short(osEv.event_payload)}, production or dev unknown`));
    assert.equal(rows.get('TCB status'), 'none: SIMULATED quote');
    assert.match(rows.get('checks'), /^\d+ passed, 0 failed, \d+ skipped, \d+ warnings$/);
    // groups by layer, in order
    const titles = r.out.split('\n').filter((l) => /^[A-Z]/.test(l) && !l.startsWith('VERIFIED') && !l.startsWith('SIMULATED'));
    assert.deepEqual(titles, ['Report', 'CPU TEE (Intel TDX quote, measured software)', 'GPU (NVIDIA evidence)', 'Keys and binding']);
    // one line per check: as many PASS/FAIL/SKIP/WARN lines as JSON checks
    const j = JSON.parse((await run(['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT, '--json'])).out);
    assert.equal(r.out.split('\n').filter((l) => /^ {2}(PASS|FAIL|SKIP|WARN) {2}/.test(l)).length, j.checks.length);
    // a failing run names the failure and what was expected
    const f = await run(['report', SIM_REPORT, '--nonce', 'cd'.repeat(32), '--allow-simulated', '--at', SIM_AT]);
    assert.equal(f.code, 1);
    assert.match(header(f.out).first, /VERIFICATION FAILED/);
    assert.match(f.out, /\n {2}FAIL {2}fresh: report echoes our nonce\s+ababab/);
    assert.match(f.out, new RegExp(`\\n {8}expected: ${short('cd'.repeat(32))}\\n`));
    // chat: the model requested and both signing keys
    const c = await run(['chat', url(), '--allow-simulated', '--model', MODEL]);
    assert.equal(c.code, 0, c.out);
    const ch = header(c.out).rows;
    assert.equal(ch.get('model'), MODEL);
    assert.match(ch.get('signing key'), /^0x[0-9a-fA-F]{8}…[0-9a-fA-F]{4} \(ecdsa\), [0-9a-f]{8}…[0-9a-f]{4} \(ed25519\)$/);
    assert.match(c.out, /\nCPU TEE \(Intel TDX quote, measured software\) · the ecdsa key's report\n/);
    assert.match(c.out, /\nAnswer\n {2}PASS {2}chat completion/);
  });

  test('hex values are shortened unless --verbose', async () => {
    const saved = JSON.parse(fs.readFileSync(SIM_REPORT, 'utf8'));
    const args = ['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT];
    const plain = (await run(args)).out, verbose = (await run([...args, '--verbose'])).out;
    assert.doesNotMatch(plain, /[0-9a-fA-F]{24}/, 'no run of 24 hex digits without --verbose');
    assert.ok(!plain.includes(SIM_NONCE));
    assert.ok(verbose.includes(SIM_NONCE), 'the full nonce with --verbose');
    assert.ok(verbose.includes(saved.signing_address), 'the full address with --verbose');
    const compose = crypto.createHash('sha256').update(saved.info.tcb_info.app_compose).digest('hex');
    assert.ok(verbose.includes(compose));
    assert.match(verbose, /\n {8}proves: the attestation key signed the quote header and TD report body\n/);
    checkLines('--verbose', verbose);
  });

  test('colour only on a terminal: none in a pipe, none with NO_COLOR, --color forces it', async () => {
    const args = ['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT];
    assert.doesNotMatch((await run(args)).out, /\x1b/, 'a pipe: no escape code');
    assert.match((await run([...args, '--color'])).out, /\x1b\[32mPASS\x1b\[0m/, '--color');
    // on a pseudo-terminal (script(1)): colour, unless NO_COLOR is set
    let haveScript = true;
    try { execFileSync('script', ['--version'], { stdio: 'ignore' }); } catch { haveScript = false; }
    if (!haveScript) return;
    const cmd = [VERIFY, ...args].map((a) => `'${a}'`).join(' ');
    const tty = (env) => execFileSync('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const e = { ...process.env };
    delete e.NO_COLOR;
    assert.match(execFileSync('script', ['-qec', cmd, '/dev/null'], { env: e, encoding: 'utf8' }), /\x1b\[32mPASS/, 'a terminal: colour');
    assert.doesNotMatch(tty({ NO_COLOR: '1' }), /\x1b/, 'a terminal with NO_COLOR: no escape code');
    assert.match(tty({ NO_COLOR: '' }), /\x1b\[32mPASS/, 'an empty NO_COLOR does not count (no-color.org)');
  });

  test('--version', async () => {
    const r = await run(['--version']);
    assert.equal(r.code, 0);
    const proxy = execFileSync(binary('vllm-proxy'), ['--version'], { encoding: 'utf8' }).trim().split(' ').pop();
    assert.equal(r.out, `vllm-proxy-verify ${proxy}\n`);
    assert.equal((await run(['report', '--version'])).out, r.out);
  });
});

describe('golden text output (reviewed by eye once; regenerate with VP_GOLDEN_UPDATE=1)', { skip }, () => {
  // Relative paths, run from the repository root: the header names the file as given.
  const cases = [
    ['verify-report-sim.txt', ['report', 'tests/vectors/simulated/report_ecdsa_sim.json', '--nonce', SIM_NONCE,
      '--allow-simulated', '--at', SIM_AT]],
    ['verify-quote-v055.txt', ['quote', 'tests/vectors/tdx/dstack-v055-sample/quote.hex', '--event-log',
      'tests/vectors/tdx/dstack-v055-sample/event_log.json', '--info', 'tests/vectors/tdx/dstack-v055-sample/info_sdk_parsed.json',
      '--no-collateral', '--at', '1750414563']],
  ];
  for (const [golden, args] of cases) {
    test(golden, () => {
      let out;
      try {
        out = execFileSync(VERIFY, args, { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
      } catch (e) { out = e.stdout; }
      const f = path.join(GOLDEN, golden);
      if (process.env.VP_GOLDEN_UPDATE) fs.writeFileSync(f, out);
      assert.equal(out, fs.readFileSync(f, 'utf8'));
      checkLines(golden, out);
    });
  }
});

describe('--json keeps its content', { skip }, () => {
  // The golden files are the output of the verifier of main (before this change) for the same
  // inputs; the JSON now may only add the new lines (and count them).
  const cases = [
    ['verify-report-sim.main.json', ['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT]],
    ['verify-report-sim-strict.main.json', ['report', SIM_REPORT, '--nonce', SIM_NONCE, '--at', SIM_AT]],
    ['verify-quote-v055.main.json', ['quote', path.join(V055, 'quote.hex'), '--event-log', path.join(V055, 'event_log.json'),
      '--info', path.join(V055, 'info_sdk_parsed.json'), '--no-collateral', '--at', '1750414563']],
  ];
  for (const [golden, args] of cases) {
    test(golden, async () => {
      const was = JSON.parse(fs.readFileSync(path.join(GOLDEN, golden), 'utf8'));
      const r = await run([...args, '--json']);
      const now = JSON.parse(r.out);
      assert.equal(r.code, was.exit_code);
      assert.deepEqual(Object.keys(now), Object.keys(was), 'the same fields, in the same order');
      const added = now.checks.filter((c) => !was.checks.some((w) => w.id === c.id));
      for (const c of added) assert.ok(NEW_IDS.has(c.id), `an unexpected new line ${c.id}`);
      assert.deepEqual(now.checks.filter((c) => !NEW_IDS.has(c.id)), was.checks, 'every old line unchanged, in order');
      for (const k of ['command', 'result', 'exit_code', 'simulated_allowed']) assert.equal(now[k], was[k], k);
      const n = (st) => added.filter((c) => c.status === st).length;
      assert.equal(now.passed, was.passed + n('pass'));
      assert.equal(now.failed, was.failed + n('fail'));
      assert.equal(now.skipped, was.skipped + n('skip'));
      assert.equal(now.warnings, was.warnings + n('warn'));
    });
  }
});

describe('report.schema: unknown and missing fields are warnings', { skip }, () => {
  test('a field no known report carries, and a core field missing', async () => {
    const saved = JSON.parse(fs.readFileSync(SIM_REPORT, 'utf8'));
    const ok = JSON.parse((await run(['report', SIM_REPORT, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT, '--json'])).out);
    const line = (j) => j.checks.find((c) => c.id === 'report.schema');
    assert.equal(line(ok).status, 'pass');
    assert.equal(line(ok).found, `${Object.keys(saved).length} fields, all known`);
    const bad = { ...saved, surprise_field: 1, 'gpu-evidence-v9': 'x' };
    delete bad.signing_algo; // the verifier falls back to the address's shape
    const f = path.join(dir, 'schema.json');
    fs.writeFileSync(f, JSON.stringify(bad));
    const r = await run(['report', f, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT, '--json']);
    const j = JSON.parse(r.out);
    assert.equal(r.code, 0, 'a warning does not fail');
    assert.equal(line(j).status, 'warn');
    assert.equal(line(j).found, 'unknown (not checked): "surprise_field", "gpu-evidence-v9"; missing: signing_algo');
    const text = (await run(['report', f, '--nonce', SIM_NONCE, '--allow-simulated', '--at', SIM_AT])).out;
    assert.match(text, /\n {2}WARN {2}report fields all known\s+unknown \(not checked\): "surprise_field"/);
  });
});

describe('TLS: a self-signed certificate trusted on attestation', { skip }, () => {
  let tls, front;
  before(async () => {
    const key = path.join(dir, 'tls.key'), crt = path.join(dir, 'tls.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', key, '-out', crt, '-days', '2', '-subj', '/CN=inside-the-tee'], { stdio: 'ignore' });
    tls = await startStack({ proxy: { env: { TLS_CERT_PATH: crt } } });
    // the TLS front a CVM would run: terminates TLS with that certificate, forwards to the proxy
    front = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(crt) }, (req, res) => {
      const up = http.request({ host: '127.0.0.1', port: tls.port, method: req.method, path: req.url, headers: req.headers },
        (u) => { res.writeHead(u.statusCode, u.headers); u.pipe(res); });
      req.pipe(up);
    });
    await new Promise((r) => front.listen(0, '127.0.0.1', r));
    const der = new X509Certificate(fs.readFileSync(crt)).publicKey.export({ type: 'spki', format: 'der' });
    front.spki = crypto.createHash('sha256').update(der).digest('hex');
  });
  after(async () => {
    await new Promise((r) => front?.close(r));
    if (tls) await stopAndCheck(tls);
  });

  test('the report binds the key: verified, and the output says so', async () => {
    const u = `https://127.0.0.1:${front.address().port}/v1/attestation/report?version=2`;
    const j = JSON.parse((await run(['report', u, '--allow-simulated', '--json'])).out);
    const t = j.checks.find((c) => c.id === 'report.tls');
    assert.equal(j.exit_code, 0, JSON.stringify(j.checks.filter((c) => c.status === 'fail')));
    assert.equal(t.status, 'pass');
    assert.equal(t.expected, front.spki);
    assert.match(t.found, new RegExp(`^${front.spki} \\(self-signed: trusted because the quote binds it\\)$`));
    const text = (await run(['report', u, '--allow-simulated'])).out;
    assert.equal(header(text).rows.get('TLS'), `self-signed ${short(front.spki)}, trusted on attestation (the quote binds it)`);
    checkLines('report over self-signed TLS', text);
  });

  test('the report binds no TLS key: the connection is not trusted (exit 1)', async () => {
    const r = await run(['report', `https://127.0.0.1:${front.address().port}`, '--allow-simulated', '--json']);
    const j = JSON.parse(r.out);
    assert.equal(r.code, 1);
    const t = j.checks.find((c) => c.id === 'report.tls');
    assert.equal(t.status, 'fail');
    assert.match(t.found, /nothing authenticates this server/);
  });

  test('a certificate that is not the bound one fails', async () => {
    // the same front, but the report asked of the plain stack (no binding) is not the point:
    // here the proxy binds another key than the front serves
    const key2 = path.join(dir, 'tls2.key'), crt2 = path.join(dir, 'tls2.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', key2, '-out', crt2, '-days', '2', '-subj', '/CN=another'], { stdio: 'ignore' });
    const other = https.createServer({ key: fs.readFileSync(key2), cert: fs.readFileSync(crt2) }, (req, res) => {
      const up = http.request({ host: '127.0.0.1', port: tls.port, method: req.method, path: req.url, headers: req.headers },
        (u) => { res.writeHead(u.statusCode, u.headers); u.pipe(res); });
      req.pipe(up);
    });
    await new Promise((r) => other.listen(0, '127.0.0.1', r));
    try {
      const r = await run(['report', `https://127.0.0.1:${other.address().port}/v1/attestation/report?version=2`, '--allow-simulated', '--json']);
      assert.equal(r.code, 1);
      const t = JSON.parse(r.out).checks.find((c) => c.id === 'report.tls');
      assert.equal(t.status, 'fail');
      assert.match(t.found, /not the attested key/);
    } finally {
      await new Promise((r) => other.close(r));
    }
  });
});

describe('dstack.os_image: a dev OS image, from the fake agent\'s event log', { skip: skip || (!haveBinary('fake-dstack-agent') && 'fake-dstack-agent missing') }, () => {
  const agents = [];
  const stacks = [];
  async function startAgent(flavour) {
    const sock = path.join(dir, `agent-${flavour}.sock`);
    const proc = spawn(binary('fake-dstack-agent'), ['--unix', sock, '--os-image', flavour], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr.on('data', (d) => { err += d; });
    agents.push(proc);
    const t0 = Date.now();
    while (!/listening on unix:/.test(err)) {
      if (Date.now() - t0 > 10000) throw new Error(`fake-dstack-agent did not start\n${err}`);
      await sleep(20);
    }
    const get = (p) => new Promise((resolve, reject) => {
      http.get({ socketPath: sock, path: p }, (res) => {
        const b = [];
        res.on('data', (d) => b.push(d));
        res.on('end', () => resolve(Buffer.concat(b)));
      }).on('error', reject);
    });
    // the image's files, as its release archive has them
    const img = path.join(dir, `image-${flavour}`);
    fs.mkdirSync(img, { recursive: true });
    for (const f of ['sha256sum.txt', 'metadata.json']) fs.writeFileSync(path.join(img, f), await get(`/fake/os-image/${f}`));
    const mock = await startMock();
    const proxy = await startProxy(mock.url, { env: { ATTESTATION: 'dstack', DSTACK_SIMULATOR_ENDPOINT: sock, GPU_EVIDENCE: 'simulated',
      TAPPD_SIMULATOR_ENDPOINT: undefined, TSM_REPORT_PATH: path.join(dir, 'no-tsm') } });
    stacks.push({ mock, proxy });
    return { img, url: `http://127.0.0.1:${proxy.port}`, port: proxy.port };
  }
  let dev, prod;
  before(async () => { dev = await startAgent('dev'); prod = await startAgent('prod'); });
  after(async () => {
    for (const s of stacks) { await s.proxy.stop(); await s.mock.stop(); }
    for (const p of agents) p.kill('SIGTERM');
  });
  const policy = (obj) => { const f = path.join(dir, `policy-${crypto.randomUUID()}.json`); fs.writeFileSync(f, JSON.stringify(obj)); return f; };
  const osLine = async (a, extra) => {
    const r = await run(['report', a.url, '--allow-simulated', '--no-collateral', '--json', ...extra]);
    const j = JSON.parse(r.out);
    return { code: r.code, line: j.checks.find((c) => c.id === 'dstack.os_image'), j };
  };

  test('the event log measures the image whose files say dev (checked here with node crypto)', async () => {
    const rep = jsonOf(await getPath(dev.port, `/v1/attestation/report?nonce=${'11'.repeat(32)}`));
    const ev = rep.event_log.find((e) => e.event === 'os-image-hash');
    const sums = fs.readFileSync(path.join(dev.img, 'sha256sum.txt'));
    assert.equal(ev.event_payload, crypto.createHash('sha256').update(sums).digest('hex'));
    const meta = fs.readFileSync(path.join(dev.img, 'metadata.json'));
    assert.equal(sums.toString(), `${crypto.createHash('sha256').update(meta).digest('hex')}  metadata.json\n`);
    assert.equal(JSON.parse(meta).is_dev, true);
    assert.equal(JSON.parse(fs.readFileSync(path.join(prod.img, 'metadata.json'))).is_dev, false);
  });

  test('a dev image is a WARN, and a FAIL under reject_dev_os_image', async () => {
    const w = await osLine(dev, ['--os-image', dev.img]);
    assert.equal(w.code, 0);
    assert.equal(w.line.status, 'warn');
    assert.match(w.line.found, /a DEV image \(metadata\.json is_dev, dstack 0\.0\.0-simulated/);
    const f = await osLine(dev, ['--os-image', dev.img, '--policy', policy({ reject_dev_os_image: true })]);
    assert.equal(f.code, 1);
    assert.equal(f.line.status, 'fail');
    const text = (await run(['report', dev.url, '--allow-simulated', '--no-collateral', '--os-image', dev.img,
      '--policy', policy({ reject_dev_os_image: true })])).out;
    assert.match(header(text).rows.get('OS image'), /^[0-9a-f]{8}…[0-9a-f]{4}, DEV image, dstack 0\.0\.0-simulated$/);
    assert.match(text, /\n {2}FAIL {2}OS image \(production or dev\)/);
  });

  test('a production image passes the policy; unknown flavour or another image\'s files fail it', async () => {
    const pol = policy({ reject_dev_os_image: true });
    const p = await osLine(prod, ['--os-image', prod.img, '--policy', pol]);
    assert.equal(p.code, 0, JSON.stringify(p.j.checks.filter((c) => c.status === 'fail')));
    assert.equal(p.line.status, 'pass');
    assert.match(p.line.found, /: production \(metadata\.json, dstack 0\.0\.0-simulated\)( \[SIMULATED quote\])?$/);
    const u = await osLine(prod, ['--policy', pol]);
    assert.equal(u.line.status, 'fail', 'without --os-image the policy cannot be met');
    assert.equal((await osLine(prod, [])).line.status, 'skip', 'without a policy: unknown is a SKIP');
    const other = await osLine(dev, ['--os-image', prod.img]);
    assert.equal(other.line.status, 'fail');
    assert.match(other.line.found, /--os-image is another image/);
    // a metadata.json swapped for the other one: its hash is not in sha256sum.txt
    const mixed = path.join(dir, 'image-mixed');
    fs.mkdirSync(mixed, { recursive: true });
    fs.copyFileSync(path.join(dev.img, 'sha256sum.txt'), path.join(mixed, 'sha256sum.txt'));
    fs.copyFileSync(path.join(prod.img, 'metadata.json'), path.join(mixed, 'metadata.json'));
    const m = await osLine(dev, ['--os-image', mixed]);
    assert.equal(m.line.status, 'fail');
    assert.match(m.line.found, /does not list this metadata\.json/);
  });

  test('the policy pins os_image_hash', async () => {
    const rep = jsonOf(await getPath(prod.port, `/v1/attestation/report?nonce=${'22'.repeat(32)}`));
    const h = rep.event_log.find((e) => e.event === 'os-image-hash').event_payload;
    const pin = (j) => j.checks.find((c) => c.id === 'pin.os_image_hash');
    assert.equal(pin((await osLine(prod, ['--policy', policy({ os_image_hash: h })])).j).status, 'pass');
    const bad = await osLine(prod, ['--policy', policy({ os_image_hash: ['00'.repeat(32)] })]);
    assert.equal(pin(bad.j).status, 'fail');
    assert.equal(bad.code, 1);
  });
});
