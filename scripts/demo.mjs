#!/usr/bin/env node
// `make demo`: the whole user flow against real binaries, step by step. Starts mock-vllm and
// vllm-proxy (simulated attestation) on free loopback ports, fetches an attestation report
// for a fresh nonce, streams a chat completion with the official openai SDK while capturing
// the exact bytes sent and received, fetches both signatures and verifies them with ethers
// and @noble against sha256(sent):sha256(received) and the attested signing identities, then
// runs vllm-proxy-verify: a report, a signed chat, and one end-to-end encrypted round trip
// (chat --e2ee dstack-v2 --stream: the prompt sealed to the attested key, the answer decrypted,
// no plaintext on the wire, the signature over the ciphertext), and last the local verifying
// proxy: a second remote behind TLS (self-signed certificate bound by the report),
// `vllm-proxy-verify proxy` in front of it, the unchanged openai SDK pointed at it.
// Exits 0 only if every check passed; always stops the child processes.

import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lib = (f) => import(pathToFileURL(path.join(root, 'tests', 'integration', 'lib', f)).href);

let mods;
try {
  mods = {
    ...(await lib('harness.mjs')),
    ...(await lib('http.mjs')),
    ...(await lib('verify.mjs')),
    ...(await lib('sdk.mjs')),
    ...(await lib('remote-tls.mjs')),
    ...(await lib('local-proxy.mjs')),
  };
} catch (e) {
  console.error(`demo: cannot load the test helpers (${e.message}).\n` +
    'Run scripts/install-deps (npm ci in tests/integration) and make all first.');
  process.exit(2);
}
const {
  startStack, haveBinary, BUILD_DIR, MODEL, TOKEN, capturingFetch, getPath, jsonOf, randomNonce, parseQuote,
  expectedReportData, sha256hex, recoverAddressNoble, OpenAI, ethers, ed25519, hexToBytes, utf8ToBytes,
  startRemote, startLocal,
} = mods;

const useColor = process.stdout.isTTY;
const green = (s) => (useColor ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s) => (useColor ? `\x1b[31m${s}\x1b[0m` : s);
const dim = (s) => (useColor ? `\x1b[2m${s}\x1b[0m` : s);

let failures = 0;
let checks = 0;
function check(label, ok, detail = '') {
  checks++;
  if (!ok) failures++;
  console.log(`  ${ok ? green('✓') : red('✗')} ${label}${detail ? dim(`  ${detail}`) : ''}`);
  return ok;
}
async function step(title, fn) {
  console.log(`\n${title}`);
  try {
    return await fn();
  } catch (e) {
    check(`${title}: ${e.message}`, false);
    return undefined;
  }
}
const short = (s, n = 20) => (typeof s === 'string' && s.length > n ? `${s.slice(0, n)}…` : s);

let stack, remote, local;
const stopAll = async () => {
  for (const x of [local, remote, stack]) if (x) await x.stop().catch(() => {});
  local = remote = stack = null;
};
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => { await stopAll(); process.exit(130); });
}

try {
  await step('0. start mock-vllm and vllm-proxy (simulated attestation)', async () => {
    if (!check(`binaries present in ${BUILD_DIR}`, haveBinary('vllm-proxy') && haveBinary('mock-vllm'))) {
      throw new Error('run make all');
    }
    stack = await startStack();
    check('mock-vllm ready', true, `127.0.0.1:${stack.mock.port}`);
    check('vllm-proxy ready (GET / → 200)', true, `127.0.0.1:${stack.port}`);
  });
  if (!stack) throw new Error('could not start the programs');
  const port = stack.port;

  const attested = {};
  for (const algo of ['ecdsa', 'ed25519']) {
    await step(`1. attestation report (${algo}) for a fresh random nonce`, async () => {
      const nonce = randomNonce();
      const res = await getPath(port, `/v1/attestation/report?nonce=${nonce}&signing_algo=${algo}`);
      if (!check('GET /v1/attestation/report → 200', res.status === 200, `status ${res.status}`)) return;
      const r = jsonOf(res);
      attested[algo] = r;
      console.log(dim(`     signing_address ${r.signing_address}`));
      check('request_nonce echoes our nonce', r.request_nonce === nonce, short(nonce, 16));
      const q = parseQuote(r.intel_quote);
      check('TDX quote v4, TEE type 0x81', q.version === 4 && q.teeType === 0x81, `${q.bytes.length} bytes`);
      const want = expectedReportData(r);
      check('report_data[0:32] = signing address, zero-padded', q.reportData.subarray(0, 32).equals(want.subarray(0, 32)));
      check('report_data[32:64] = our nonce', q.reportData.subarray(32).toString('hex') === nonce);
      const payload = JSON.parse(r.nvidia_payload);
      check('GPU evidence payload nonce = our nonce', payload.nonce === nonce);
      if (algo === 'ecdsa') {
        check('keccak(signing_public_key) → signing_address',
          ethers.computeAddress('0x04' + r.signing_public_key) === r.signing_address);
      } else {
        check('signing_public_key = signing_address (Ed25519)', r.signing_public_key === r.signing_address);
      }
      check('report labelled simulated', /simulat/i.test(JSON.stringify(r)), 'development mode, not a real TEE');
    });
  }

  const cap = capturingFetch();
  let chatId;
  await step('2. streamed chat completion through the openai SDK (exact bytes captured)', async () => {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: TOKEN, fetch: cap.fetch, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: MODEL, stream: true, max_tokens: 12,
      messages: [{ role: 'user', content: 'Prove you run in a TEE, in one sentence.' }],
    });
    let content = '';
    for await (const chunk of stream) {
      chatId ??= chunk.id;
      content += chunk.choices[0]?.delta?.content ?? '';
    }
    const e = cap.last();
    check('stream completed', e.done && e.status === 200, `${cap.responseBytes(e).length} bytes received`);
    check('chat id seen in the stream', typeof chatId === 'string' && chatId.startsWith('chatcmpl-'), chatId);
    console.log(dim(`     answer: ${JSON.stringify(content)}`));
  });

  const sigs = {};
  await step('3. fetch the signatures (ecdsa, ed25519)', async () => {
    for (const algo of ['ecdsa', 'ed25519']) {
      const res = await getPath(port, `/v1/signature/${chatId}?signing_algo=${algo}`);
      if (check(`GET /v1/signature/{id}?signing_algo=${algo} → 200`, res.status === 200, `status ${res.status}`)) {
        sigs[algo] = jsonOf(res);
      }
    }
  });

  await step('4. verify both signatures over sha256(sent):sha256(received)', async () => {
    const e = cap.last();
    const text = `${sha256hex(e.requestBody)}:${sha256hex(cap.responseBytes(e))}`;
    console.log(dim(`     our text  ${text}`));
    const ec = sigs.ecdsa;
    const ed = sigs.ed25519;
    if (ec) {
      check('ECDSA record text = our hashes', ec.text === text);
      const byEthers = ethers.verifyMessage(text, ec.signature);
      check('ECDSA (EIP-191) recovers signing_address with ethers', byEthers === ec.signing_address, byEthers);
      check('ECDSA recovers signing_address with @noble/curves', recoverAddressNoble(text, ec.signature) === ec.signing_address);
    }
    if (ed) {
      check('Ed25519 record text = our hashes', ed.text === text);
      check('Ed25519 signature verifies with @noble/curves',
        ed25519.verify(hexToBytes(ed.signature), utf8ToBytes(text), hexToBytes(ed.signing_address)));
    }
  });

  await step('5. the signer is the attested key', async () => {
    check('ECDSA signing_address = attested address',
      !!sigs.ecdsa && sigs.ecdsa.signing_address === attested.ecdsa?.signing_address, sigs.ecdsa?.signing_address);
    check('Ed25519 signing_address = attested public key',
      !!sigs.ed25519 && sigs.ed25519.signing_address === attested.ed25519?.signing_address, short(sigs.ed25519?.signing_address));
  });

  // The verifier, as a user runs it: the report with a fresh nonce, then a signed round trip.
  // --allow-simulated trusts the repository's test root and marks every line it affects.
  for (const [label, args] of [
    ['6. vllm-proxy-verify report (fresh nonce, quote, event log, GPU evidence)',
      ['report', `http://127.0.0.1:${port}`, '--token', TOKEN, '--allow-simulated']],
    ['7. vllm-proxy-verify chat --stream (exact bytes, both signatures, fresh report)',
      ['chat', `http://127.0.0.1:${port}`, '--token', TOKEN, '--allow-simulated', '--stream',
        '--model', MODEL, '--prompt', 'Say hello']],
    ['8. vllm-proxy-verify chat --e2ee dstack-v2 --stream (encrypted to the attested key, no plaintext on the wire)',
      ['chat', `http://127.0.0.1:${port}`, '--token', TOKEN, '--allow-simulated', '--stream',
        '--model', MODEL, '--prompt', 'A secret question for the TEE only', '--e2ee', 'dstack-v2',
        '--signing-algo', 'ed25519']],
  ]) {
    await step(label, async () => {
      if (!check('build/vllm-proxy-verify present', haveBinary('vllm-proxy-verify'))) return;
      const r = spawnSync(path.join(BUILD_DIR, 'vllm-proxy-verify'), args, { encoding: 'utf8', timeout: 60000 });
      for (const line of (r.stdout || '').replace(/\n$/, '').split('\n')) console.log(line ? dim('     ' + line) : '');
      if (r.stderr) for (const line of r.stderr.split('\n').filter(Boolean)) console.log(dim('     ' + line));
      check(`vllm-proxy-verify ${args[0]}${args.includes('--e2ee') ? ' --e2ee' : ''} exits 0 (every required check passed)`,
        r.status === 0, `exit ${r.status}`);
      if (args.includes('--e2ee')) {
        // The lines by id come from a second round trip with --json (the text above is for people).
        const j = spawnSync(path.join(BUILD_DIR, 'vllm-proxy-verify'), [...args, '--json'], { encoding: 'utf8', timeout: 60000 });
        let checks = [];
        try { checks = JSON.parse(j.stdout).checks; } catch { /* checked below */ }
        for (const id of ['e2ee.key', 'e2ee.request.plaintext', 'e2ee.response.decrypt', 'e2ee.response.plaintext', 'e2ee.signature']) {
          check(`${id} passed`, checks.some((c) => c.id === id && c.status === 'pass'));
        }
      }
    });
  }

  // The local verifying proxy, as an app uses it: the remote behind TLS with a self-signed
  // certificate that the attested report binds, `vllm-proxy-verify proxy` in front of it on
  // loopback, and the unchanged openai SDK pointed at it.
  await step('9. vllm-proxy-verify proxy: an unchanged OpenAI app through the local verifying proxy', async () => {
    remote = await startRemote();
    check('remote vllm-proxy behind TLS (self-signed, TLS_CERT_PATH)', true, remote.url);
    local = await startLocal(remote.url, ['--allow-simulated']);
    const st = await local.status();
    check('local proxy verified the remote (fresh nonce, quote, event log, GPU, TLS binding)', st.verified === true,
      `127.0.0.1:${local.port}`);
    check('pinned TLS key is the certificate the remote serves', st.keys?.tls_spki === remote.spkiSha256,
      short(st.keys?.tls_spki, 24));
    const client = new OpenAI({ baseURL: local.baseURL, apiKey: 'unused', maxRetries: 0 });
    const c = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 8 });
    check('non-streamed answer released after both signatures verified', typeof c.choices?.[0]?.message?.content === 'string');
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Say hello' }], max_tokens: 8, stream: true });
    let text = '';
    for await (const ev of stream) text += ev.choices?.[0]?.delta?.content ?? '';
    check('streamed answer ended with [DONE] only after its trailer signatures verified', text.length > 0, short(text, 30));
    const after = await local.status();
    check('GET /verification counts the two answers verified, none rejected',
      after.answers?.verified === 2 && after.answers?.rejected === 0, JSON.stringify(after.answers ?? {}).slice(0, 80));
  });
} catch (e) {
  check(e.message, false);
} finally {
  await stopAll();
}

console.log(`\n${failures === 0 ? green('demo: all') : red('demo: ' + failures + ' of')} ${checks} checks ${failures === 0 ? 'passed' : 'failed'}`);
process.exit(failures === 0 && checks > 0 ? 0 : 1);
