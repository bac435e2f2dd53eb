// Cross-check of src/e2ee against implementations that are not ours: each E2EE cipher is
// written here from ../shared/docs/e2ee-formats.md with @noble/curves (X25519, secp256k1,
// Ed25519→X25519), @noble/hashes (HKDF-SHA256), @noble/ciphers (AES-256-GCM,
// XChaCha20-Poly1305, HChaCha20) and tweetnacl (the NaCl box the NEAR TS client uses); the C
// side is build/e2ee-tool. JS seals → C opens, C seals → JS opens, tampering refused, and the
// key conversions and AAD bytes compared.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { xchacha20poly1305, hchacha } from '@noble/ciphers/chacha.js';
import nacl from 'tweetnacl';
import { binary } from './lib/harness.mjs';

const TOOL = binary('e2ee-tool');
const tool = (...args) => execFileSync(TOOL, args, { encoding: 'utf8' }).trim();
const toolFails = (...args) => {
  const r = spawnSync(TOOL, args, { encoding: 'utf8' });
  return { status: r.status, err: r.stderr.trim() };
};

// ---- the formats, written from the document (§2.2, §3–§7, §8.1) ----

// name: [curve, eph length, nonce length, box, HKDF info]
const CIPHERS = {
  'secp-aesgcm': ['secp', 65, 12, 'gcm', 'ecdsa_encryption'],          // NEAR v1/v2 ecdsa = Dstack ecdsa
  'x25519-aesgcm': ['x25519', 32, 12, 'gcm', 'ed25519_encryption'],    // Dstack v1/v2 ed25519
  'nacl-xsalsa': ['x25519', 32, 24, 'nacl', null],                     // NEAR v1 ed25519, clients
  'nacl-xchacha': ['x25519', 32, 24, 'chachabox', null],               // NEAR v1 ed25519, server
  'x25519-xchacha': ['x25519', 32, 24, 'xchacha', 'ed25519_encryption'], // NEAR v2 ed25519
  'aci-x25519': ['x25519', 32, 12, 'gcm', 'aci.e2ee.v2.x25519'],
  'aci-secp256k1': ['secp', 65, 12, 'gcm', 'aci.e2ee.v2.secp256k1'],
};
const takesAad = (name) => ['gcm', 'xchacha'].includes(CIPHERS[name][3]);

function keypair(curve) {
  if (curve === 'secp') {
    const sk = secp256k1.utils.randomSecretKey();
    return { sk, pk: secp256k1.getPublicKey(sk, false) };
  }
  const sk = x25519.utils.randomSecretKey();
  return { sk, pk: x25519.getPublicKey(sk) };
}

function ecdh(curve, sk, pk) {
  // secp256k1: the x coordinate of the shared point (compressed form minus its prefix byte)
  return curve === 'secp' ? secp256k1.getSharedSecret(sk, pk, true).slice(1) : x25519.getSharedSecret(sk, pk);
}

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]); // "expand 32-byte k"
function hchachaKey(shared) {
  const out = new Uint32Array(8);
  hchacha(SIGMA, new Uint32Array(new Uint8Array(shared).buffer), new Uint32Array(4), out);
  return new Uint8Array(out.buffer); // little-endian host
}

function box(name, shared, nonce, aad) {
  const [, , , kind, info] = CIPHERS[name];
  if (kind === 'chachabox') return xchacha20poly1305(hchachaKey(shared), nonce);
  const key = hkdf(sha256, shared, undefined, utf8ToBytes(info), 32);
  return kind === 'gcm' ? gcm(key, nonce, aad) : xchacha20poly1305(key, nonce, aad);
}

function jsSeal(name, peerPk, aad, pt) {
  const [curve, , nlen, kind] = CIPHERS[name];
  const eph = keypair(curve);
  const nonce = randomBytes(nlen);
  if (kind === 'nacl') return concatBytes(eph.pk, nonce, nacl.box(pt, nonce, peerPk, eph.sk));
  const shared = ecdh(curve, eph.sk, peerPk);
  return concatBytes(eph.pk, nonce, box(name, shared, nonce, aad).encrypt(pt));
}

function jsOpen(name, sk, aad, blob) {
  const [curve, elen, nlen, kind] = CIPHERS[name];
  const eph = blob.slice(0, elen), nonce = blob.slice(elen, elen + nlen), body = blob.slice(elen + nlen);
  if (kind === 'nacl') {
    const pt = nacl.box.open(body, nonce, eph, sk);
    if (!pt) throw new Error('nacl box did not open');
    return pt;
  }
  return box(name, ecdh(curve, sk, eph), nonce, aad).decrypt(body);
}

// ACI AAD: RFC 8785 for these flat objects = JSON.stringify with the members sorted.
function aciAad(suite, model, field, nonce, ts, id) {
  const o = { purpose: id === undefined ? 'aci.e2ee.request.v2' : 'aci.e2ee.response.v2', algo: suite, model, field, nonce, ts };
  if (id !== undefined) o.id = id;
  return utf8ToBytes(JSON.stringify(Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]))));
}

const PLAINTEXTS = ['', 'Hello', 'héllo 🙂 "quoted" \\ back', JSON.stringify([{ type: 'text', text: 'vision' }]), 'x'.repeat(3000)];

for (const name of Object.keys(CIPHERS)) {
  const [curve] = CIPHERS[name];
  test(`${name}: JS seals, C opens; C seals, JS opens; tampering and wrong keys refused`, () => {
    const server = keypair(curve), client = keypair(curve), other = keypair(curve);
    assert.equal(tool('pub', name, bytesToHex(server.sk)), bytesToHex(server.pk), 'public key of a secret');
    for (const text of PLAINTEXTS) {
      const pt = utf8ToBytes(text);
      const aad = takesAad(name) ? utf8ToBytes(`aad for ${name}`) : new Uint8Array(0);
      // client → server
      const blob = jsSeal(name, server.pk, aad, pt);
      assert.equal(tool('open', name, bytesToHex(server.sk), bytesToHex(aad), bytesToHex(blob)), bytesToHex(pt));
      const bad = Uint8Array.from(blob);
      bad[bad.length - 1 - (text.length % 7)] ^= 0x40;
      assert.deepEqual(toolFails('open', name, bytesToHex(server.sk), bytesToHex(aad), bytesToHex(bad)),
        { status: 1, err: 'e2ee_decryption_failed' }, 'tampered blob');
      assert.equal(toolFails('open', name, bytesToHex(other.sk), bytesToHex(aad), bytesToHex(blob)).status, 1, 'wrong key');
      assert.equal(toolFails('open', name, bytesToHex(server.sk), bytesToHex(aad), bytesToHex(blob.slice(0, -1))).status, 1, 'truncated');
      if (takesAad(name))
        assert.equal(toolFails('open', name, bytesToHex(server.sk), bytesToHex(utf8ToBytes('other')), bytesToHex(blob)).status, 1, 'wrong AAD');
      // server → client
      const back = hexToBytes(tool('seal', name, bytesToHex(client.pk), bytesToHex(aad), bytesToHex(pt)));
      assert.equal(back.length, CIPHERS[name][1] + CIPHERS[name][2] + pt.length + 16);
      assert.deepEqual(jsOpen(name, client.sk, aad, back), pt);
      assert.throws(() => jsOpen(name, other.sk, aad, back));
    }
  });
}

test('NEAR v1 ed25519: the client (tweetnacl) seals to the X25519 form of the server\'s Ed25519 key; the v1 trial finds each cipher', () => {
  const seed = ed25519.utils.randomSecretKey();
  const edPub = ed25519.getPublicKey(seed);
  const xPub = ed25519.utils.toMontgomery(edPub);
  const xSec = ed25519.utils.toMontgomerySecret(seed);
  assert.equal(tool('ed2x-pub', bytesToHex(edPub)), bytesToHex(xPub), 'Ed25519 public → X25519');
  assert.equal(tool('ed2x-seed', bytesToHex(seed)), bytesToHex(xSec), 'Ed25519 seed → X25519 secret');
  assert.deepEqual(x25519.getPublicKey(xSec), xPub);
  for (const name of ['nacl-xsalsa', 'nacl-xchacha', 'x25519-aesgcm']) {
    const pt = utf8ToBytes(`v1 via ${name}`);
    const blob = jsSeal(name, xPub, new Uint8Array(0), pt);
    assert.equal(tool('open-v1-ed25519', bytesToHex(xSec), bytesToHex(blob)), `${name} ${bytesToHex(pt)}`);
  }
  // NEAR v2 is not a v1 blob
  const v2 = jsSeal('x25519-xchacha', xPub, new Uint8Array(0), utf8ToBytes('v2'));
  assert.equal(toolFails('open-v1-ed25519', bytesToHex(xSec), bytesToHex(v2)).status, 1);
  assert.equal(tool('open', 'x25519-xchacha', bytesToHex(xSec), '', bytesToHex(v2)), bytesToHex(utf8ToBytes('v2')));
  // responses go to the X25519 form of the client's Ed25519 key: the client opens with its own converted secret
  const cSeed = ed25519.utils.randomSecretKey();
  const cX = tool('ed2x-pub', bytesToHex(ed25519.getPublicKey(cSeed)));
  const resp = hexToBytes(tool('seal', 'nacl-xsalsa', cX, '', bytesToHex(utf8ToBytes('answer'))));
  assert.equal(new TextDecoder().decode(jsOpen('nacl-xsalsa', ed25519.utils.toMontgomerySecret(cSeed), null, resp)), 'answer');
});

test('ACI v2 AAD bytes: C equals RFC 8785 from JSON.stringify, and a wrong field path does not open', () => {
  const nonce = bytesToHex(randomBytes(32));
  for (const [suite, name] of [['x25519-aes-256-gcm-hkdf-sha256', 'aci-x25519'], ['secp256k1-aes-256-gcm-hkdf-sha256', 'aci-secp256k1']]) {
    for (const model of ['demo-model', 'm "q" \\ \n\t\u0001 é 🙂']) {
      const req = aciAad(suite, model, 'messages.0.content', nonce, 1750000000);
      assert.equal(tool('aad-aci', name, model, 'messages.0.content', nonce, '1750000000'), bytesToHex(req));
      const resp = aciAad(suite, model, 'choices.0.message.content', nonce, 1750000000, 'chatcmpl-1');
      assert.equal(tool('aad-aci', name, model, 'choices.0.message.content', nonce, '1750000000', 'chatcmpl-1'), bytesToHex(resp));
      const server = keypair(name === 'aci-x25519' ? 'x25519' : 'secp');
      const blob = jsSeal(name, server.pk, req, utf8ToBytes('hi'));
      assert.equal(tool('open', name, bytesToHex(server.sk), bytesToHex(req), bytesToHex(blob)), bytesToHex(utf8ToBytes('hi')));
      const other = aciAad(suite, model, 'messages.1.content', nonce, 1750000000);
      assert.equal(toolFails('open', name, bytesToHex(server.sk), bytesToHex(other), bytesToHex(blob)).status, 1);
    }
  }
});

test('Dstack v2 request AAD: C equals the §6.1 template', () => {
  const want = 'v2|req|algo=ed25519|model=m|m=2|c=-|n=n1700000000abcd1234abcd|ts=1700000000';
  assert.equal(tool('aad-dstack-req', 'ed25519', 'm', '2', '-', 'n1700000000abcd1234abcd', '1700000000'), bytesToHex(utf8ToBytes(want)));
});
