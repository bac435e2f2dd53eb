// The deployment files (deploy/): the compose file for a dstack CVM, the Dockerfile, the systemd
// unit for a plain TDX guest and the example environment file, checked as far as a machine
// without a Docker engine, a TDX guest or a GPU allows (docs/DEPLOY.md, "Testing").
//
// The list of variables the proxy reads is taken from src/proxy/config.c at test time (its
// SETTINGS table and any getenv("...") in the proxy's sources), so a new setting that is not
// documented in the compose file and the example environment fails here.
//
// The compose file is read with a small strict parser for the YAML subset it is written in
// (block mappings and sequences, [flow] sequences of scalars, quoted and plain scalars,
// comments); anything else is an error, so the file stays in that subset. Where PyYAML is
// installed the parse is compared with it; it is not required.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, BUILD_DIR, haveBinary, startProxy, startMock, freePort, sleep } from './lib/harness.mjs';

const read = (rel) => fs.readFileSync(path.join(REPO_ROOT, rel), 'utf8');
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

// ---- the variables the proxy reads -------------------------------------------------------------

function sourcesOf(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sourcesOf(p));
    else if (e.name.endsWith('.c')) out.push(p);
  }
  return out;
}

/** The variables of config.c's SETTINGS table (each row starts {flag or NULL, "NAME", ...)
 * plus every getenv("NAME") in the proxy's sources (not the verifier's). */
function proxyEnvKeys() {
  const keys = new Set();
  const config = read('src/proxy/config.c');
  const table = config.match(/SETTINGS\s*\[\s*\]\s*=\s*\{([\s\S]*?)\n\}\s*;/);
  if (table) {
    for (const m of table[1].matchAll(/\{\s*(?:NULL|"--[a-z0-9-]+")\s*,\s*"([A-Z][A-Z0-9_]*)"/g)) keys.add(m[1]);
  }
  const src = path.join(REPO_ROOT, 'src');
  for (const f of [...sourcesOf(src), path.join(src, 'vllm-proxy.c')]) {
    if (f.includes(`${path.sep}verify${path.sep}`) || !fs.existsSync(f)) continue;
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/\bgetenv\s*\(\s*"([A-Z][A-Z0-9_]*)"\s*\)/g)) keys.add(m[1]);
  }
  return keys;
}

const wordRe = (name) => new RegExp(`(?<![A-Za-z0-9_])${name}(?![A-Za-z0-9_])`);

// ---- a strict parser for the YAML subset of the compose file ---------------------------------

class YamlError extends Error {
  constructor(line, msg) { super(`line ${line}: ${msg}`); }
}

/** Index of the first `ch` outside quotes (-1 if none); `pred(i)` must hold at that index. */
function findOutsideQuotes(s, pred) {
  let q = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (q === '"') {
      if (c === '\\') i++;
      else if (c === '"') q = null;
    } else if (q === "'") {
      if (c === "'") q = null; // '' (an escaped quote) re-opens at once
    } else if ((c === '"' || c === "'") && (i === 0 || /[\s[,:-]/.test(s[i - 1]))) {
      q = c;
    } else if (pred(i)) {
      return i;
    }
  }
  return -1;
}

function parseScalar(raw, line) {
  const s = raw.trim();
  if (s === '') return null;
  if (s[0] === '"') {
    let out = '';
    let i = 1;
    for (; i < s.length && s[i] !== '"'; i++) {
      if (s[i] !== '\\') { out += s[i]; continue; }
      const e = s[++i];
      const map = { '"': '"', '\\': '\\', '/': '/', n: '\n', t: '\t', r: '\r', 0: '\0' };
      if (!(e in map)) throw new YamlError(line, `unsupported escape \\${e}`);
      out += map[e];
    }
    if (i >= s.length) throw new YamlError(line, 'unterminated double-quoted string');
    if (s.slice(i + 1).trim() !== '') throw new YamlError(line, `text after a quoted string: ${s}`);
    return out;
  }
  if (s[0] === "'") {
    let out = '';
    let i = 1;
    for (; i < s.length; i++) {
      if (s[i] === "'") {
        if (s[i + 1] === "'") { out += "'"; i++; continue; }
        break;
      }
      out += s[i];
    }
    if (i >= s.length) throw new YamlError(line, 'unterminated single-quoted string');
    if (s.slice(i + 1).trim() !== '') throw new YamlError(line, `text after a quoted string: ${s}`);
    return out;
  }
  if (/^[&*!|>%@`{}[\],#]/.test(s) || /^[-?:](\s|$)/.test(s)) throw new YamlError(line, `unsupported syntax: ${s}`);
  if (/:(\s|$)/.test(s) || /\s#/.test(s)) throw new YamlError(line, `plain scalar with ': ' or ' #' (quote it): ${s}`);
  // Values whose YAML 1.1 reading differs from the text: quote them.
  if (/^(y|n|yes|no|on|off)$/i.test(s)) throw new YamlError(line, `ambiguous boolean (quote it): ${s}`);
  if (/^[-+]?\d+(:[0-5]?\d)+$/.test(s)) throw new YamlError(line, `sexagesimal number in YAML 1.1 (quote it): ${s}`);
  if (/^[-+]?(\d[\d_]*)?\.\d|^[-+]?\.(inf|nan)$|^0[box]/i.test(s) && !/^\d+\.\d+\.\d+/.test(s)) {
    throw new YamlError(line, `float or non-decimal number (quote it): ${s}`);
  }
  if (s === 'null' || s === '~') return null;
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (/^-?\d+$/.test(s)) return Number(s);
  return s;
}

function parseInline(raw, line) {
  const s = raw.trim();
  if (s[0] === '{') throw new YamlError(line, 'flow mappings are not supported');
  if (s[0] !== '[') return parseScalar(s, line);
  if (!s.endsWith(']')) throw new YamlError(line, `unterminated flow sequence: ${s}`);
  const body = s.slice(1, -1);
  if (body.trim() === '') return [];
  const items = [];
  let rest = body;
  for (;;) {
    const comma = findOutsideQuotes(rest, (i) => rest[i] === ',');
    const item = comma < 0 ? rest : rest.slice(0, comma);
    if (/[[\]{}]/.test(item.replace(/"[^"]*"|'[^']*'/g, ''))) throw new YamlError(line, 'nested flow collections are not supported');
    if (item.trim() === '') throw new YamlError(line, `empty item in flow sequence: ${s}`);
    items.push(parseScalar(item, line));
    if (comma < 0) break;
    rest = rest.slice(comma + 1);
  }
  return items;
}

/** Splits `key: value` (value may be ''); null when the line is not a mapping entry. */
function splitKey(content, line) {
  const colon = findOutsideQuotes(content, (i) => content[i] === ':' && (i + 1 === content.length || content[i + 1] === ' '));
  if (colon < 0) return null;
  const rawKey = content.slice(0, colon).trim();
  let key;
  if (rawKey[0] === '"' || rawKey[0] === "'") key = parseScalar(rawKey, line);
  else if (/^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$/.test(rawKey)) key = rawKey;
  else throw new YamlError(line, `unsupported key: ${rawKey}`);
  return { key, value: content.slice(colon + 1) };
}

/**
 * Parses the subset; returns { doc, comments } where comments are the texts after each '#'.
 * Throws YamlError on anything outside the subset.
 */
function parseYamlSubset(text) {
  const comments = [];
  const lines = [];
  text.split('\n').forEach((l, idx) => {
    const no = idx + 1;
    if (l.endsWith('\r')) l = l.slice(0, -1);
    if (/^\s*\t/.test(l) || /^ *\t/.test(l)) throw new YamlError(no, 'tab in indentation');
    if (/^(---|\.\.\.)(\s|$)/.test(l)) throw new YamlError(no, 'document markers are not supported');
    const trimmed = l.trimStart();
    if (trimmed === '') return;
    if (trimmed[0] === '#') { comments.push(trimmed.slice(1)); return; }
    const hash = findOutsideQuotes(l, (i) => l[i] === '#' && /\s/.test(l[i - 1] ?? ' '));
    if (hash >= 0) comments.push(l.slice(hash + 1));
    const content = (hash >= 0 ? l.slice(0, hash) : l).trimEnd();
    if (content.trim() === '') return;
    lines.push({ indent: content.length - content.trimStart().length, content: content.trimStart(), no });
  });

  let i = 0;
  const isSeqItem = (c) => c === '-' || c.startsWith('- ');

  function block(indent) {
    return isSeqItem(lines[i].content) ? seq(indent) : map(indent);
  }

  function valueAfter(rest, parentIndent, no) {
    if (rest.trim() !== '') return parseInline(rest, no);
    if (i < lines.length && lines[i].indent > parentIndent) return block(lines[i].indent);
    return null;
  }

  function map(indent) {
    const out = {};
    while (i < lines.length && lines[i].indent >= indent) {
      const { content, no } = lines[i];
      if (lines[i].indent > indent) throw new YamlError(no, 'unexpected indentation');
      if (isSeqItem(content)) throw new YamlError(no, 'sequence item where a mapping key was expected');
      const kv = splitKey(content, no);
      if (!kv) throw new YamlError(no, `expected "key: value": ${content}`);
      if (Object.hasOwn(out, kv.key)) throw new YamlError(no, `duplicate key ${kv.key}`);
      if (/^[|>]/.test(kv.value.trim())) throw new YamlError(no, 'block scalars are not supported');
      i++;
      out[kv.key] = valueAfter(kv.value, indent, no);
    }
    return out;
  }

  function seq(indent) {
    const out = [];
    while (i < lines.length && lines[i].indent >= indent) {
      const { content, no } = lines[i];
      if (lines[i].indent > indent) throw new YamlError(no, 'unexpected indentation');
      if (!isSeqItem(content)) throw new YamlError(no, 'mapping key where a sequence item was expected');
      const rest = content.slice(1);
      const body = rest.trimStart();
      if (body === '') {
        i++;
        if (i >= lines.length || lines[i].indent <= indent) throw new YamlError(no, 'empty sequence item');
        out.push(block(lines[i].indent));
        continue;
      }
      if (isSeqItem(body)) throw new YamlError(no, 'nested compact sequences are not supported');
      if (splitKey(body, no)) {
        // "- key: value" opens a mapping whose keys sit where "key" starts.
        lines[i] = { indent: indent + 1 + (rest.length - body.length), content: body, no };
        out.push(map(lines[i].indent));
        continue;
      }
      i++;
      out.push(parseInline(body, no));
    }
    return out;
  }

  if (lines.length === 0) return { doc: null, comments };
  if (lines[0].indent !== 0) throw new YamlError(lines[0].no, 'the document must start at column 0');
  const doc = block(0);
  if (i < lines.length) throw new YamlError(lines[i].no, 'unexpected text after the document');
  return { doc, comments };
}

// ---- Dockerfile --------------------------------------------------------------------------------

/** [{instr, args, stage}] with continuation lines joined and comments dropped. */
function parseDockerfile(text) {
  const out = [];
  let cur = '';
  let stage = -1;
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw) && cur === '') continue;
    if (/^\s*#/.test(raw)) continue; // comment inside a continuation
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) { cur += line.slice(0, -1) + ' '; continue; }
    cur += line;
    if (cur.trim() !== '') {
      const m = cur.trim().match(/^([A-Za-z]+)\s*(.*)$/s);
      const instr = m[1].toUpperCase();
      if (instr === 'FROM') stage++;
      out.push({ instr, args: m[2].trim(), stage });
    }
    cur = '';
  }
  return out;
}

/** Package names of every `apt-get install` in the given RUN arguments. */
function aptInstalls(runArgs) {
  const pkgs = [];
  for (const cmd of runArgs.split(/&&|;|\|\|/)) {
    const words = cmd.trim().split(/\s+/).filter((w) => !/^[A-Z_]+=/.test(w));
    const at = words.findIndex((w, k) => w === 'install' && words.slice(0, k).some((x) => /(^|\/)apt(-get)?$/.test(x)));
    if (at < 0) continue;
    for (const w of words.slice(at + 1)) if (!w.startsWith('-')) pkgs.push(w);
  }
  return pkgs;
}

// The Debian packages owning each file name (basename), via one dpkg-query call: Map name -> [pkg].
function debPackagesOf(names) {
  const r = spawnSync('dpkg-query', ['-S', ...names.map((n) => `*/${n}`)], { encoding: 'utf8' });
  const out = new Map(names.map((n) => [n, []]));
  for (const l of r.stdout.split('\n')) {
    const sep = l.indexOf(': ');
    if (sep < 0 || l.startsWith('diversion')) continue;
    const name = path.basename(l.slice(sep + 2).trim());
    if (!out.has(name)) continue;
    for (const o of l.slice(0, sep).split(', ')) out.get(name).push(o.split(':')[0].trim());
  }
  return out;
}

function neededLibs(binary) {
  const out = execFileSync('readelf', ['-d', binary], { encoding: 'utf8' });
  return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

// ---- the tests ---------------------------------------------------------------------------------

const KEYS = proxyEnvKeys();

describe('variables the proxy reads', () => {
  test('extracted from src/proxy/config.c', () => {
    for (const k of ['MODEL_NAME', 'TOKEN', 'VLLM_BASE_URL', 'ATTESTATION', 'LISTEN_HOST', 'LISTEN_PORT', 'DEV', 'REDIS_TIMEOUT_MS']) {
      assert.ok(KEYS.has(k), `${k} not found in config.c: has the SETTINGS table moved? (found ${[...KEYS].join(' ')})`);
    }
  });
});

describe('YAML subset parser', () => {
  test('reads the constructs the compose file uses', () => {
    const { doc, comments } = parseYamlSubset([
      '# top',
      'a:',
      '  b: "x: #y"   # c1',
      "  c: 'it''s'",
      '  d: [gpu, "utility"]',
      '  e:',
      '    - one',
      '    - k: v',
      '      l: [ ]',
      '    -',
      '      m: 1',
      '  f:',
      'g: http://h:1/p',
    ].join('\n'));
    assert.deepEqual(doc, { a: { b: 'x: #y', c: "it's", d: ['gpu', 'utility'], e: ['one', { k: 'v', l: [] }, { m: 1 }], f: null }, g: 'http://h:1/p' });
    assert.deepEqual(comments.map((c) => c.trim()), ['top', 'c1']);
  });
  test('refuses what it does not understand', () => {
    for (const bad of ['a:\n\tb: 1', 'a: 1\na: 2', 'a: {b: 1}', 'a: &x 1', 'a: |\n  t', 'a: b: c', 'a:\n  - x\n  y: 1',
      'a: yes', 'a: 22:22', 'a: 1.5', 'a: "x', '---\na: 1', ' a: 1', 'a:\n  - [x, [y]]']) {
      assert.throws(() => parseYamlSubset(bad), YamlError, JSON.stringify(bad));
    }
  });
});

describe('deploy/docker-compose.yml', () => {
  const text = read('deploy/docker-compose.yml');
  let doc, comments;
  before(() => ({ doc, comments } = parseYamlSubset(text)));
  const proxy = () => doc.services['vllm-proxy'];
  const envOf = (svc) => {
    const e = svc.environment ?? {};
    if (!Array.isArray(e)) return e;
    return Object.fromEntries(e.map((kv) => [String(kv).split('=')[0], String(kv).split('=').slice(1).join('=')]));
  };

  test('parses, with the vllm and vllm-proxy services', () => {
    assert.equal(typeof doc, 'object');
    for (const k of Object.keys(doc)) assert.ok(['services', 'volumes', 'networks', 'secrets', 'configs', 'name'].includes(k), `top-level key ${k}`);
    assert.ok(doc.services.vllm, 'no vllm service');
    assert.ok(doc.services['vllm-proxy'], 'no vllm-proxy service');
  });

  test('the same tree as PyYAML, where it is installed', (t) => {
    const py = spawnSync('python3', ['-c', 'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: text, encoding: 'utf8' });
    if (py.error || py.status !== 0) return t.skip('python3 with PyYAML not available');
    assert.deepEqual(doc, JSON.parse(py.stdout));
  });

  test('vllm-proxy mounts the dstack agent socket', () => {
    const vols = proxy().volumes ?? [];
    const mount = vols.map(String).find((v) => v.split(':')[1] === '/var/run/dstack.sock');
    assert.ok(mount, `no volume onto /var/run/dstack.sock in ${JSON.stringify(vols)}`);
    assert.equal(mount.split(':')[0], '/var/run/dstack.sock', 'the host side must be the agent socket');
  });

  test('vllm-proxy environment: dstack attestation, the vllm service as engine, model and token', () => {
    const env = envOf(proxy());
    assert.equal(env.ATTESTATION, 'dstack');
    assert.ok(env.MODEL_NAME, 'MODEL_NAME not set');
    assert.ok(env.TOKEN, 'TOKEN not set');
    assert.match(String(env.TOKEN), /^\$\{TOKEN[:?}]/, 'TOKEN must come from the (encrypted) environment, not the measured file');
    const url = new URL(env.VLLM_BASE_URL);
    assert.ok(doc.services[url.hostname], `VLLM_BASE_URL host ${url.hostname} is not a service`);
    const cmd = (doc.services[url.hostname].command ?? []).map(String);
    const port = cmd.includes('--port') ? cmd[cmd.indexOf('--port') + 1] : '8000';
    assert.equal(url.port || '80', port, 'VLLM_BASE_URL port is not the port vllm listens on');
    assert.ok(cmd.includes('--model'), 'vllm has no --model');
    assert.ok(!('DEV' in env) && env.GPU_NO_HW_MODE === undefined && env.GPU_ALLOW_CC_OFF === undefined,
      'development settings in the CVM deployment');
  });

  test('every variable vllm-proxy sets is one the proxy reads', () => {
    for (const k of Object.keys(envOf(proxy()))) assert.ok(KEYS.has(k), `${k} is not read by the proxy (typo?)`);
  });

  test('every variable the proxy reads is set or documented in a comment', () => {
    const env = envOf(proxy());
    const commentText = comments.join('\n');
    const missing = [...KEYS].filter((k) => !(k in env) && !wordRe(k).test(commentText));
    assert.deepEqual(missing, [], `undocumented in docker-compose.yml: ${missing.join(' ')}`);
  });

  test('vllm-proxy has a descriptor limit (ulimits nofile, soft = hard, at least 65536)', () => {
    const n = proxy().ulimits?.nofile;
    assert.ok(n && typeof n === 'object', 'no ulimits: nofile: {soft, hard} for vllm-proxy');
    assert.ok(Number(n.hard) >= 65536, `nofile hard ${n.hard}`);
    assert.equal(Number(n.soft), Number(n.hard), 'the proxy raises soft to hard anyway: say so');
  });

  test('port 8000 published; both services get GPUs (the proxy for NVML)', () => {
    assert.ok((proxy().ports ?? []).map(String).some((p) => /(^|:)8000$/.test(p) && p.includes(':')), 'port 8000 not published');
    for (const name of ['vllm', 'vllm-proxy']) {
      const devs = doc.services[name].deploy?.resources?.reservations?.devices ?? [];
      assert.ok(devs.some((d) => d.driver === 'nvidia' && (d.capabilities ?? []).includes('gpu')), `${name}: no nvidia GPU reservation`);
    }
    assert.match(String(doc.services.vllm.image), /vllm\/vllm-openai/);
  });

  describe('the vllm-proxy healthcheck (readiness: GET /healthz)', { skip: (!has('bash') && 'no bash') || (!haveBinary('vllm-proxy') && 'build/vllm-proxy not built') }, () => {
    // compose reads $$ as a literal $: what the container's bash runs.
    const argv = () => (proxy().healthcheck?.test ?? []).map((a) => String(a).replace(/\$\$/g, '$'));
    const check = (port) => spawnSync(argv()[1], argv().slice(2), { env: { ...process.env, LISTEN_PORT: String(port) }, timeout: 10000 }).status;
    test('exec form, on /healthz', () => {
      assert.equal(argv()[0], 'CMD');
      assert.ok(argv().join(' ').includes('GET /healthz '), argv().join(' '));
    });
    test('passes with an engine up, fails once none is', async () => {
      const mock = await startMock();
      const p = await startProxy(mock.url, { env: { HEALTH_CHECK_INTERVAL: 1, HEALTH_CHECK_FAILURES: 1 } });
      try {
        assert.equal(check(p.port), 0);
        await mock.stop();
        let st = 0;
        for (let i = 0; i < 50 && st === 0; i++) { await sleep(100); st = check(p.port); }
        assert.notEqual(st, 0, 'still passing with the engine gone');
      } finally {
        await p.stop();
        await mock.stop();
      }
    });
  });

  test('interpolations are well-formed and the deployment variables documented', () => {
    const body = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
    const stripped = body.replace(/\$\$/g, '');
    for (const m of stripped.matchAll(/\$(?!\{)/g)) assert.fail(`bare $ at offset ${m.index}: use \${NAME}`);
    const names = new Set();
    for (const m of stripped.matchAll(/\$\{([^}]*)\}/g)) {
      const v = m[1].match(/^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$/s);
      assert.ok(v, `malformed interpolation \${${m[1]}}`);
      names.add(v[1]);
    }
    const commentText = comments.join('\n');
    for (const n of names) assert.ok(wordRe(n).test(commentText), `\${${n}} is not explained in a comment`);
  });
});

describe('deploy/vllm-proxy.env.example', () => {
  const text = read('deploy/vllm-proxy.env.example');
  const active = {};
  const documented = new Set();
  for (const [idx, l] of text.split('\n').entries()) {
    if (l.trim() === '') continue;
    const m = l.match(/^(#?)([A-Z][A-Z0-9_]*)=(.*)$/);
    if (m) {
      documented.add(m[2]);
      if (!m[1]) active[m[2]] = m[3];
    } else {
      assert.ok(l.startsWith('#'), `line ${idx + 1} is neither a comment nor VAR=value: ${l}`);
    }
  }

  test('documents every variable the proxy reads, and only those', () => {
    const missing = [...KEYS].filter((k) => !documented.has(k));
    assert.deepEqual(missing, [], `missing from vllm-proxy.env.example: ${missing.join(' ')}`);
    const unknown = [...documented].filter((k) => !KEYS.has(k));
    assert.deepEqual(unknown, [], `not read by the proxy: ${unknown.join(' ')}`);
    for (const k of ['MODEL_NAME', 'TOKEN', 'VLLM_BASE_URL']) assert.ok(k in active, `${k} should be set`);
  });

  test('the proxy accepts every value in it, defaults included', { skip: !haveBinary('vllm-proxy') && 'build/vllm-proxy not built' }, async () => {
    const env = {};
    for (const l of text.split('\n')) {
      const m = l.match(/^#?([A-Z][A-Z0-9_]*)=(.+)$/);
      if (m && !['ATTESTATION', 'DEV', 'LISTEN_HOST', 'LISTEN_PORT', 'GPU_EVIDENCE'].includes(m[1])) env[m[1]] = m[2];
    }
    const p = await startProxy('http://127.0.0.1:9', { env });
    await p.stop();
  });
});

describe('deploy/Dockerfile', () => {
  const ins = parseDockerfile(read('deploy/Dockerfile'));
  const froms = ins.filter((x) => x.instr === 'FROM');
  const last = froms.length - 1;
  const stageOf = (s) => ins.filter((x) => x.stage === s);
  const final = () => stageOf(last);
  const installs = (s) => stageOf(s).filter((x) => x.instr === 'RUN').flatMap((x) => aptInstalls(x.args));

  test('two stages: debian:12 builder, debian:12-slim runtime', () => {
    assert.equal(froms.length, 2, froms.map((f) => f.args).join(' | '));
    assert.match(froms[0].args, /^debian:(12|bookworm)(@sha256:[0-9a-f]{64})?\s+AS\s+\S+$/i);
    assert.match(froms[1].args, /^debian:(12|bookworm)-slim(@sha256:[0-9a-f]{64})?$/);
  });

  test('the builder builds both programs', () => {
    const run = stageOf(0).filter((x) => x.instr === 'RUN').map((x) => x.args).join('\n');
    assert.match(run, /\bmake\b[^\n]*build\/vllm-proxy\b/);
    assert.match(run, /build\/vllm-proxy-verify\b/);
    assert.ok(installs(0).includes('node-llhttp'), 'node-llhttp (the llhttp sources) not installed');
  });

  test('the builder\'s COPY set and RUN make line build both programs here', { skip: (!has('make') || !has('cc')) && 'no make/cc', timeout: 600000 }, () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-docker-build-'));
    try {
      let workdir = '/';
      for (const x of stageOf(0)) {
        if (x.instr === 'WORKDIR') workdir = x.args;
        if (x.instr !== 'COPY') continue;
        const parts = x.args.split(/\s+/).filter((w) => !w.startsWith('--'));
        const dest = parts.pop();
        // Docker's rules: a directory's contents go to dest; a file goes into dest when dest ends
        // in "/" (or there are several sources), else becomes dest.
        const destAbs = path.join(tmp, path.posix.resolve(workdir, dest));
        for (const src of parts) {
          const from = path.join(REPO_ROOT, src);
          if (fs.statSync(from).isDirectory()) fs.cpSync(from, destAbs, { recursive: true });
          else {
            const to = dest.endsWith('/') || parts.length > 1 ? path.join(destAbs, path.basename(src)) : destAbs;
            fs.mkdirSync(path.dirname(to), { recursive: true });
            fs.copyFileSync(from, to);
          }
        }
      }
      const make = stageOf(0).find((x) => x.instr === 'RUN' && /\bmake\b/.test(x.args)).args;
      const r = spawnSync('sh', ['-c', make], { cwd: path.join(tmp, workdir), encoding: 'utf8', timeout: 590000 });
      assert.equal(r.status, 0, r.stderr.slice(-2000));
      for (const b of ['vllm-proxy', 'vllm-proxy-verify']) {
        assert.ok(fs.existsSync(path.join(tmp, workdir, 'build', b)), `build/${b} not built`);
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('the runtime stage has no -dev package and no compiler', () => {
    const pkgs = installs(last);
    assert.ok(pkgs.length > 0, 'no apt-get install in the runtime stage');
    const compilers = /^(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|cpp(-\d+)?|clang(-\d+)?|make|binutils|pkg-config|libc6-dev|cc|tcc|node-llhttp)$/;
    for (const p of pkgs) {
      assert.ok(!/-dev$/.test(p), `-dev package in the runtime stage: ${p}`);
      assert.ok(!compilers.test(p), `build tool in the runtime stage: ${p}`);
    }
    for (const x of final()) {
      if (x.instr === 'RUN') assert.ok(!/\b(make|gcc|cc|clang)\s/.test(x.args.replace(/apt-get[^&;]*/g, '')), `compiling in the runtime stage: ${x.args}`);
    }
  });

  test('the runtime stage: binaries copied from the builder, non-root, port 8000, health check, proxy entrypoint', () => {
    const f = final();
    const copy = f.filter((x) => x.instr === 'COPY' && /--from=/.test(x.args)).map((x) => x.args).join(' ');
    assert.match(copy, /vllm-proxy\b/);
    assert.match(copy, /vllm-proxy-verify\b/);
    const user = f.filter((x) => x.instr === 'USER').at(-1)?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `runs as root (USER ${user})`);
    assert.ok(f.some((x) => x.instr === 'EXPOSE' && /\b8000\b/.test(x.args)), 'no EXPOSE 8000');
    assert.ok(f.some((x) => x.instr === 'HEALTHCHECK' && /CMD/.test(x.args)), 'no HEALTHCHECK');
    const ep = f.filter((x) => x.instr === 'ENTRYPOINT').at(-1);
    assert.ok(ep, 'no ENTRYPOINT');
    const argv = JSON.parse(ep.args);
    assert.equal(path.basename(argv[0]), 'vllm-proxy');
    const dest = copy.trim().split(/\s+/).at(-1);
    assert.equal(path.posix.join(dest, 'vllm-proxy'), argv[0], 'ENTRYPOINT is not where the binary is copied');
  });

  const dpkgOk = has('dpkg-query') && has('readelf');
  test('the runtime packages provide every library the built programs link (dpkg)', { skip: (!dpkgOk && 'no dpkg-query/readelf') || (!haveBinary('vllm-proxy') && 'build/vllm-proxy not built') }, () => {
    const runtime = new Set(installs(last));
    const builder = new Set(installs(0));
    const base = new Set(['libc6']); // in debian:12-slim
    const needed = [];
    for (const bin of ['vllm-proxy', 'vllm-proxy-verify']) {
      if (haveBinary(bin)) for (const lib of neededLibs(path.join(BUILD_DIR, bin))) needed.push([bin, lib, lib.replace(/\.so\..*$/, '.so')]);
    }
    const owners = debPackagesOf([...new Set(needed.flatMap(([, lib, dev]) => [lib, dev]))]);
    for (const [bin, lib, devName] of needed) {
      const pkgs = owners.get(lib);
      assert.ok(pkgs.length, `${bin}: no Debian package owns ${lib}`);
      assert.ok(pkgs.some((p) => runtime.has(p) || base.has(p)), `${bin} needs ${lib} (${pkgs}), not installed in the runtime stage`);
      if (pkgs.some((p) => base.has(p))) continue;
      // The link-time name (libfoo.so) comes from a -dev package the builder must install.
      const devPkgs = owners.get(devName);
      if (devPkgs.length) assert.ok(devPkgs.some((p) => builder.has(p)), `${bin} links ${devName} (${devPkgs}), not installed in the builder`);
    }
  });

  test('every package named exists in Debian 12 (apt-cache)', (t) => {
    if (!has('apt-cache') || spawnSync('apt-cache', ['show', 'libc6'], { stdio: 'ignore' }).status !== 0) return t.skip('no apt package lists');
    const pkgs = [...new Set([...installs(0), ...installs(last)])];
    const r = spawnSync('apt-cache', ['show', '--no-all-versions', ...pkgs], { encoding: 'utf8' });
    const found = new Set([...r.stdout.matchAll(/^Package: (\S+)$/gm)].map((m) => m[1]));
    assert.deepEqual(pkgs.filter((p) => !found.has(p)), [], 'unknown packages');
  });

  describe('the HEALTHCHECK command', { skip: (!has('bash') && 'no bash') || (!haveBinary('vllm-proxy') && 'build/vllm-proxy not built') }, () => {
    let argv;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-deploy-'));
    after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    before(() => {
      const hc = final().find((x) => x.instr === 'HEALTHCHECK').args;
      argv = JSON.parse(hc.slice(hc.indexOf('CMD') + 3).trim());
      assert.ok(Array.isArray(argv), 'HEALTHCHECK CMD should be the exec form');
    });
    const check = (port) => spawnSync(argv[0] === '/bin/bash' ? 'bash' : argv[0], argv.slice(1),
      { env: { ...process.env, LISTEN_PORT: String(port) }, timeout: 10000 }).status;

    test('passes against a running proxy', async () => {
      const p = await startProxy('http://127.0.0.1:9');
      try {
        assert.equal(check(p.port), 0);
      } finally {
        await p.stop();
      }
    });
    test('fails when nothing listens, or GET / is not 200', async () => {
      assert.notEqual(check(await freePort()), 0);
      const srv = http.createServer((req, res) => { res.writeHead(503); res.end('{}'); });
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      try {
        assert.notEqual(check(srv.address().port), 0);
      } finally {
        srv.close();
      }
    });
  });
});

describe('deploy/vllm-proxy.service', () => {
  const text = read('deploy/vllm-proxy.service');
  const sections = {};
  let cur = null;
  for (const l of text.split('\n')) {
    if (/^\s*([#;]|$)/.test(l)) continue;
    const s = l.match(/^\[(\w+)\]$/);
    if (s) { cur = sections[s[1]] = []; continue; }
    const m = l.match(/^([A-Za-z]+)=(.*)$/);
    assert.ok(cur && m, `unit line not understood: ${l}`);
    cur.push([m[1], m[2]]);
  }
  const svc = () => sections.Service ?? [];
  const all = (k) => svc().filter(([key]) => key === k).map(([, v]) => v);
  const one = (k) => all(k).at(-1);

  test('ExecStart runs the proxy binary', () => {
    const exec = one('ExecStart');
    assert.ok(exec, 'no ExecStart');
    const argv0 = exec.replace(/^[-+!@:]+/, '').split(/\s+/)[0];
    assert.ok(path.isAbsolute(argv0) && path.basename(argv0) === 'vllm-proxy', `ExecStart=${exec}`);
  });

  test('hardening', () => {
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('PrivateTmp'), 'yes');
    assert.match(one('ProtectHome') ?? '', /^(yes|read-only|tmpfs)$/);
    assert.equal(one('CapabilityBoundingSet'), '', 'capabilities not dropped');
    assert.ok(one('User') && one('User') !== 'root', 'runs as root');
    for (const k of ['ProtectKernelModules', 'ProtectControlGroups', 'RestrictSUIDSGID', 'LockPersonality']) assert.equal(one(k), 'yes', k);
    assert.ok(all('SystemCallFilter').length > 0, 'no SystemCallFilter');
    // NVML needs /dev/nvidia* and /proc/driver/nvidia.
    assert.notEqual(one('PrivateDevices'), 'yes', 'PrivateDevices=yes hides the GPUs from NVML');
    assert.notEqual(one('ProcSubset'), 'pid', 'ProcSubset=pid hides /proc/driver/nvidia from NVML');
  });

  test('configfs-tsm stays writable; tsm attestation; env file; restart; file limit', () => {
    const rw = all('ReadWritePaths').flatMap((v) => v.split(/\s+/)).map((p) => p.replace(/^-/, ''));
    assert.ok(rw.includes('/sys/kernel/config/tsm/report'), `ReadWritePaths: ${rw}`);
    assert.ok(all('EnvironmentFile').map((v) => v.replace(/^-/, '')).includes('/etc/vllm-proxy/env'));
    const env = Object.fromEntries(all('Environment').flatMap((v) => v.split(/\s+/)).map((kv) => kv.replace(/^"|"$/g, '').split('=')));
    assert.equal(env.ATTESTATION, 'tsm');
    for (const k of Object.keys(env)) assert.ok(KEYS.has(k), `Environment=${k} is not read by the proxy`);
    assert.equal(one('Restart'), 'on-failure');
    assert.ok(Number(one('LimitNOFILE')) >= 65536, `LimitNOFILE=${one('LimitNOFILE')}`);
  });

  test('ExecStartPost waits for GET /livez: passes against a running proxy, fails when nothing listens', async (t) => {
    if (!has('bash') || !haveBinary('vllm-proxy')) return t.skip('no bash or no build/vllm-proxy');
    const post = one('ExecStartPost');
    assert.ok(post, 'no ExecStartPost');
    const m = post.match(/^\/bin\/bash -c '(.*)'$/);
    assert.ok(m, `ExecStartPost=${post}`);
    const script = m[1].replace(/\$\$/g, '$').replace('seq 60', 'seq 4'); // systemd's $$; a short wait here
    assert.ok(script.includes('GET /livez '), script);
    const run = (port) => spawnSync('bash', ['-c', script], { env: { ...process.env, LISTEN_PORT: String(port) }, timeout: 15000 }).status;
    const p = await startProxy('http://127.0.0.1:9');
    try {
      assert.equal(run(p.port), 0);
    } finally {
      await p.stop();
    }
    assert.notEqual(run(await freePort()), 0);
  });

  test('systemd-analyze verify finds nothing wrong', (t) => {
    if (!has('systemd-analyze') || !haveBinary('vllm-proxy')) return t.skip('no systemd-analyze or no build/vllm-proxy');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vp-unit-'));
    try {
      const unit = path.join(dir, 'vllm-proxy.service');
      fs.writeFileSync(unit, text.replace(/^ExecStart=\/\S+/m, `ExecStart=${path.join(BUILD_DIR, 'vllm-proxy')}`));
      const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 30000 });
      const problems = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.includes('vllm-proxy.service') &&
        /unknown|invalid|failed|ignoring|not executable|bad|missing/i.test(l));
      assert.deepEqual(problems, []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('docs/DEPLOY.md', () => {
  test('documents each deployment file', () => {
    const doc = read('docs/DEPLOY.md');
    for (const f of ['deploy/Dockerfile', 'deploy/docker-compose.yml', 'deploy/vllm-proxy.service', 'deploy/vllm-proxy.env.example']) {
      assert.ok(doc.includes(f), `docs/DEPLOY.md does not mention ${f}`);
    }
  });
});
