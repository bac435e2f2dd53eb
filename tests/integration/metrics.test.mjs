// The proxy's Prometheus metrics (GET /metrics and GET /v1/metrics, docs/API.md "Metrics")
// after real traffic: `promtool check metrics` on both, histograms that count what was sent
// (N requests -> _count N per route, buckets monotonic, +Inf = _count), the engine's
// histogram and errors, signatures, E2EE refusals by type, the active-streams gauge (the
// scrape itself not counted), engine health with the engine down, process_* and build_info.
// promtool comes from Debian's `prometheus` package (scripts/install-deps extracts only
// promtool into .tools/bin); without it the promtool checks are skipped, saying so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startStack, startProxy, freePort, MODEL, REPO_ROOT, sleep } from './lib/harness.mjs';
import { postJson, getPath, jsonOf, sseJson } from './lib/http.mjs';
import { stopAndCheck } from './lib/common.mjs';

function findPromtool() {
  const cands = [process.env.VP_PROMTOOL, path.join(REPO_ROOT, '.tools', 'bin', 'promtool')];
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir) cands.push(path.join(dir, 'promtool'));
  return cands.find((p) => p && fs.existsSync(p)) ?? null;
}
const PROMTOOL = findPromtool();
const NO_PROMTOOL = PROMTOOL ? false
  : 'promtool not found (scripts/install-deps puts it in .tools/bin; or set VP_PROMTOOL)';

/** promtool check metrics on text: {rc, problems: [lines]}. */
function promtool(text) {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30000 });
  const problems = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim());
  return { rc: r.status, problems };
}

/** Parses the text format: {types: {family: type}, samples: [{name, labels, value}]}. */
function parse(text) {
  const types = {};
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('# HELP') || line.startsWith('# ---')) continue;
    let m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) { types[m[1]] = m[2]; continue; }
    if (line.startsWith('#')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line: ${line}`);
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { types, samples };
}

const keyOf = (labels) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort());

/** The value of name{labels} (labels matched exactly), or undefined. */
function value(p, name, labels = {}) {
  const k = keyOf(labels);
  return p.samples.find((s) => s.name === name && keyOf(s.labels) === k && !('le' in s.labels))?.value;
}

function sumOf(p, name, filter = {}) {
  return p.samples.filter((s) => s.name === name && Object.entries(filter).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** Every series of every histogram: le ascending, buckets monotonic, +Inf = _count. */
function checkHistograms(p) {
  let series = 0;
  for (const [fam, type] of Object.entries(p.types)) {
    if (type !== 'histogram') continue;
    const groups = new Map();
    for (const s of p.samples.filter((x) => x.name === `${fam}_bucket`)) {
      const k = keyOf(s.labels);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(s);
    }
    for (const [k, bs] of groups) {
      const labels = Object.fromEntries(JSON.parse(k));
      const les = bs.map((b) => (b.labels.le === '+Inf' ? Infinity : Number(b.labels.le)));
      for (let i = 1; i < bs.length; i++) {
        assert.ok(les[i] > les[i - 1], `${fam}${k}: le ascending`);
        assert.ok(bs[i].value >= bs[i - 1].value, `${fam}${k}: buckets monotonic at le=${bs[i].labels.le}`);
      }
      assert.equal(les.at(-1), Infinity, `${fam}${k}: ends with +Inf`);
      const count = value(p, `${fam}_count`, labels);
      assert.equal(bs.at(-1).value, count, `${fam}${k}: +Inf bucket = _count`);
      const sum = value(p, `${fam}_sum`, labels);
      assert.ok(sum >= 0 && (count > 0 || sum === 0), `${fam}${k}: _sum ${sum} for ${count}`);
      series++;
    }
  }
  return series;
}

async function scrape(port, route = '/metrics') {
  const r = await getPath(port, route, { token: null });
  assert.equal(r.status, 200, `${route}: ${r.status}`);
  assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  return r.body.toString('utf8');
}

const chat = (extra = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 3, ...extra });

let stack;
before(async () => { stack = await startStack({ proxy: { env: { WORKERS: 2 } } }); });
after(async () => { await stopAndCheck(stack); });

// What each phase sent, to compare with the counters.
const sent = { chat: 0, chatOk: 0, completions: 0, engine: 0 };

test('after chat, streams, errors and reports: counts per route, engine, signatures, E2EE refusals', async () => {
  const port = stack.port;
  for (let i = 0; i < 5; i++) assert.equal((await postJson(port, '/v1/chat/completions', chat())).status, 200);
  for (let i = 0; i < 3; i++) {
    const r = await postJson(port, '/v1/chat/completions', chat({ stream: true }));
    assert.equal(r.status, 200);
    assert.ok(sseJson(r.body).length >= 3);
  }
  for (let i = 0; i < 2; i++) {
    assert.equal((await postJson(port, '/v1/completions', { model: MODEL, prompt: 'Hi', max_tokens: 2 })).status, 200);
  }
  sent.chat += 8, sent.chatOk += 8, sent.completions += 2, sent.engine += 10;
  // 401 twice, an E2EE refusal, the engine's own 500, an engine that cuts its answer
  for (let i = 0; i < 2; i++) assert.equal((await postJson(port, '/v1/chat/completions', chat(), { token: null })).status, 401);
  const e2ee = await postJson(port, '/v1/chat/completions', chat(), { headers: { 'X-Signing-Algo': 'ecdsa' } });
  assert.equal(e2ee.status, 400);
  assert.equal(jsonOf(e2ee).error.type, 'e2ee_header_missing');
  assert.equal((await postJson(port, '/v1/chat/completions', chat({ mock_fault: '500' }))).status, 500);
  const cut = await postJson(port, '/v1/chat/completions', chat({ stream: true, max_tokens: 20, mock_fault: 'cut:200' }));
  assert.ok(!cut.complete || cut.status !== 200 || !cut.body.toString().includes('[DONE]'), 'the cut answer is incomplete');
  sent.chat += 5, sent.engine += 2;
  // reports: the first without a nonce is collected (then cached), the second from the cache;
  // one with a nonce is always collected
  for (let i = 0; i < 2; i++) assert.equal((await getPath(port, '/v1/attestation/report')).status, 200);
  assert.equal((await getPath(port, `/v1/attestation/report?nonce=${'ab'.repeat(32)}`)).status, 200);

  const text = await scrape(port);
  const p = parse(text);
  assert.ok(checkHistograms(p) >= 8, 'histogram series checked');
  assert.equal(p.types.vllm_proxy_request_duration_seconds, 'histogram');
  assert.equal(p.types.vllm_proxy_request_duration_seconds_sum, undefined, 'no lone _sum family any more');

  // N requests -> _count N per route, and the same N in requests_total
  const dur = (route) => value(p, 'vllm_proxy_request_duration_seconds_count', { route });
  const ttfb = (route) => value(p, 'vllm_proxy_time_to_first_byte_seconds_count', { route });
  assert.equal(dur('chat_completions'), sent.chat);
  assert.equal(sumOf(p, 'vllm_proxy_requests_total', { route: 'chat_completions' }), sent.chat);
  assert.equal(value(p, 'vllm_proxy_requests_total', { route: 'chat_completions', status: '4xx' }), 3);
  assert.equal(value(p, 'vllm_proxy_requests_total', { route: 'chat_completions', status: '5xx' }), 1);
  assert.equal(dur('completions'), sent.completions);
  assert.equal(dur('attestation_report'), 3);
  // every answer had a first byte (no client left early)
  for (const route of ['chat_completions', 'completions', 'attestation_report']) assert.equal(ttfb(route), dur(route), route);
  // time to first byte never exceeds the whole request (sums over the same requests)
  assert.ok(value(p, 'vllm_proxy_time_to_first_byte_seconds_sum', { route: 'chat_completions' })
    <= value(p, 'vllm_proxy_request_duration_seconds_sum', { route: 'chat_completions' }) + 1e-6);

  // the engine: every exchange timed, the cut one counted as an error
  const engine = stack.mock.url;
  assert.equal(value(p, 'vllm_proxy_engine_request_duration_seconds_count', { engine }), sent.engine);
  const errs = sumOf(p, 'vllm_proxy_upstream_errors_total', { engine });
  assert.equal(errs, 1, 'one engine exchange failed (the cut)');
  assert.equal(value(p, 'vllm_proxy_upstream_errors_total', { engine, kind: 'connect' }), 0);
  assert.equal(value(p, 'vllm_proxy_engine_up', { engine }), 1);
  assert.equal(value(p, 'vllm_proxy_engines_healthy'), 1);

  // signatures: every complete 2xx answer signed, the signing timed once each
  assert.equal(value(p, 'vllm_proxy_signatures_stored_total'), sent.chatOk + sent.completions);
  assert.equal(value(p, 'vllm_proxy_signing_duration_seconds_count'), sent.chatOk + sent.completions);
  assert.equal(value(p, 'vllm_proxy_signatures_skipped_total'), 2, 'the engine 500 and the cut');

  // reports by source
  const cached = value(p, 'vllm_proxy_attestation_report_duration_seconds_count', { source: 'cached' });
  const fresh = value(p, 'vllm_proxy_attestation_report_duration_seconds_count', { source: 'fresh' });
  assert.equal(cached + fresh, 3);
  assert.ok(fresh >= 2 && cached >= 1, `fresh ${fresh} cached ${cached}`);

  // errors the proxy wrote, by row
  assert.equal(value(p, 'vllm_proxy_e2ee_failures_total', { type: 'e2ee_header_missing' }), 1);
  assert.equal(value(p, 'vllm_proxy_e2ee_failures_total', { type: 'e2ee_decryption_failed' }), 0);
  assert.equal(value(p, 'vllm_proxy_error_responses_total', { error: 'auth_missing', status: '401' }), 2);
  assert.equal(value(p, 'vllm_proxy_rate_limited_total', { reason: 'reports_per_token' }), 0);

  // the scrape is not an active stream; process_* and build_info
  assert.equal(value(p, 'vllm_proxy_streams_active'), 0);
  assert.equal(value(p, 'vllm_proxy_engine_queue_depth'), 0);
  const version = jsonOf(await getPath(port, '/version', { token: null })).version;
  assert.equal(value(p, 'vllm_proxy_build_info', { version }), 1);
  const now = Date.now() / 1000;
  const start = value(p, 'process_start_time_seconds');
  assert.ok(start > now - 600 && start <= now + 1, `start time ${start}, now ${now}`);
  assert.ok(value(p, 'process_open_fds') > 3);
  assert.ok(value(p, 'process_max_fds') >= value(p, 'process_open_fds'));
  assert.ok(value(p, 'process_resident_memory_bytes') > 1e6);
  assert.ok(value(p, 'process_cpu_seconds_total') > 0);

  // /v1/metrics: the same families, then the engine's
  const v1 = await scrape(port, '/v1/metrics');
  assert.ok(v1.includes('# --- vLLM Backend Metrics ---'));
  assert.match(v1, /^vllm:num_requests_running\{/m);
  const p1 = parse(v1);
  checkHistograms(p1);
  assert.equal(value(p1, 'vllm_proxy_streams_active'), 0, 'the /v1/metrics scrape is not counted either');
  assert.equal(value(p1, 'vllm_proxy_request_duration_seconds_count', { route: 'chat_completions' }), sent.chat);
  assert.equal(value(p1, 'vllm_proxy_request_duration_seconds_count', { route: 'metrics' }), 1, 'the /metrics scrape');
});

test('promtool check metrics: /metrics clean; /v1/metrics clean but for the engine\'s names', { skip: NO_PROMTOOL }, async () => {
  const own = promtool(await scrape(stack.port));
  assert.deepEqual(own.problems, [], 'no problem reported');
  assert.equal(own.rc, 0);
  // vLLM's own names carry ':' (vllm:num_requests_running), valid in the text format but
  // flagged by promtool's lint; nothing else may be reported
  const v1 = promtool(await scrape(stack.port, '/v1/metrics'));
  assert.ok(v1.rc === 0 || v1.rc === 3, `promtool exit ${v1.rc}: ${v1.problems.join('\n')}`);
  for (const l of v1.problems) assert.match(l, /^vllm:\S+ metric names should not contain ':'$/, l);
});

test('the active-streams gauge counts a stream in flight, not the scrape', async () => {
  const inflight = postJson(stack.port, '/v1/chat/completions', chat({ stream: true, max_tokens: 30, mock_delay_us: 20000 }));
  let seen = 0;
  for (let i = 0; i < 40 && !seen; i++) {
    await sleep(20);
    seen = value(parse(await scrape(stack.port)), 'vllm_proxy_streams_active');
  }
  assert.equal(seen, 1, 'one stream in flight');
  assert.equal((await inflight).status, 200);
  assert.equal(value(parse(await scrape(stack.port)), 'vllm_proxy_streams_active'), 0);
});

test('engine down: 502, connection errors counted, the engine unhealthy; both routes still 200 and valid', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const proxy = await startProxy(dead, { env: { WORKERS: 1 } });
  try {
    let p = parse(await scrape(proxy.port));
    assert.equal(value(p, 'vllm_proxy_engine_up', { engine: dead }), 1, 'healthy until it fails');
    for (let i = 0; i < 3; i++) assert.equal((await postJson(proxy.port, '/v1/chat/completions', chat())).status, 502);
    const text = await scrape(proxy.port);
    p = parse(text);
    checkHistograms(p);
    assert.equal(value(p, 'vllm_proxy_upstream_errors_total', { engine: dead, kind: 'connect' }), 3);
    assert.equal(value(p, 'vllm_proxy_engine_request_duration_seconds_count', { engine: dead }), 3);
    assert.equal(value(p, 'vllm_proxy_engine_up', { engine: dead }), 0);
    assert.equal(value(p, 'vllm_proxy_engines_healthy'), 0);
    assert.equal(value(p, 'vllm_proxy_error_responses_total', { error: 'engine_unreachable', status: '502' }), 3);
    assert.equal(value(p, 'vllm_proxy_requests_total', { route: 'chat_completions', status: '5xx' }), 3);
    assert.equal(value(p, 'vllm_proxy_time_to_first_byte_seconds_count', { route: 'chat_completions' }), 3);
    const v1 = await scrape(proxy.port, '/v1/metrics');
    // unreachable, or (after ENGINE_CONNECT_FAILURES failed connections) taken out
    assert.match(v1, /# Error fetching vLLM metrics: upstream (unreachable|has no engine up)/);
    if (PROMTOOL) {
      for (const t of [text, v1]) {
        const r = promtool(t);
        assert.deepEqual(r.problems, []);
        assert.equal(r.rc, 0);
      }
    }
  } finally {
    await proxy.stop();
  }
});
