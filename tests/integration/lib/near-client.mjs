// A NEAR E2EE client (v1 and v2, §3, §4, §1.2 of ../shared/docs/e2ee-formats.md), written from
// that document the way NEAR's TS client does it: tweetnacl for the v1 ed25519 NaCl box
// (XSalsa20-Poly1305), @noble/* for everything else (secp256k1 ECDH-x + HKDF-SHA256 +
// AES-256-GCM, X25519 + HKDF + XChaCha20-Poly1305 for v2, Ed25519 → X25519 conversions). None
// of it is our C code. Shared by e2ee-near.test.mjs (chat) and e2ee-routes.test.mjs.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import nacl from 'tweetnacl';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { getPath, jsonOf } from './http.mjs';

export async function serverKey(port, algo) {
  const r = await getPath(port, `/v1/attestation/report?signing_algo=${algo}&nonce=${'ef'.repeat(32)}`);
  assert.equal(r.status, 200);
  return jsonOf(r).signing_public_key; // ecdsa: 128 hex x‖y; ed25519: 64 hex
}

const dec = new TextDecoder('utf-8', { fatal: true });

// The client's key pair: secp256k1 (header 04‖x‖y) or Ed25519 (header = the Ed25519 public
// key; answers are sealed to its X25519 form, §3.3).
export function clientKeys(algo) {
  if (algo === 'ecdsa') {
    const sk = secp256k1.utils.randomSecretKey();
    return { algo, sk, header: bytesToHex(secp256k1.getPublicKey(sk, false)) };
  }
  const seed = ed25519.utils.randomSecretKey();
  return { algo, sk: ed25519.utils.toMontgomerySecret(seed), header: bytesToHex(ed25519.getPublicKey(seed)) };
}

// One field to the server (a fresh ephemeral key and nonce per field, §3.1).
export function seal(algo, version, serverHex, text) {
  const pt = utf8ToBytes(text);
  if (algo === 'ecdsa') { // §3.2: eph(65) ‖ nonce(12) ‖ AES-256-GCM ct ‖ tag
    const esk = secp256k1.utils.randomSecretKey();
    const shared = secp256k1.getSharedSecret(esk, hexToBytes('04' + serverHex), true).slice(1);
    const key = hkdf(sha256, shared, undefined, utf8ToBytes('ecdsa_encryption'), 32);
    const nonce = randomBytes(12);
    return bytesToHex(concatBytes(secp256k1.getPublicKey(esk, false), nonce, gcm(key, nonce).encrypt(pt)));
  }
  const serverX = ed25519.utils.toMontgomery(hexToBytes(serverHex));
  if (version === 1) { // §3.3: eph(32) ‖ nonce(24) ‖ NaCl box (tag ‖ ct), as tweetnacl writes it
    const eph = nacl.box.keyPair();
    const nonce = nacl.randomBytes(24);
    return bytesToHex(concatBytes(eph.publicKey, nonce, nacl.box(pt, nonce, serverX, eph.secretKey)));
  }
  // §4: eph(32) ‖ nonce(24) ‖ XChaCha20-Poly1305 ct ‖ tag, key = HKDF(X25519, "ed25519_encryption")
  const esk = x25519.utils.randomSecretKey();
  const key = hkdf(sha256, x25519.getSharedSecret(esk, serverX), undefined, utf8ToBytes('ed25519_encryption'), 32);
  const nonce = randomBytes(24);
  return bytesToHex(concatBytes(x25519.getPublicKey(esk), nonce, xchacha20poly1305(key, nonce).encrypt(pt)));
}

// One field from the server, with the cipher the request used (§1.2).
export function open(ck, version, hex) {
  const b = hexToBytes(hex);
  if (ck.algo === 'ecdsa') {
    const shared = secp256k1.getSharedSecret(ck.sk, b.slice(0, 65), true).slice(1);
    const key = hkdf(sha256, shared, undefined, utf8ToBytes('ecdsa_encryption'), 32);
    return dec.decode(gcm(key, b.slice(65, 77)).decrypt(b.slice(77)));
  }
  const eph = b.slice(0, 32), nonce = b.slice(32, 56), box = b.slice(56);
  if (version === 1) {
    const pt = nacl.box.open(box, nonce, eph, ck.sk);
    assert.ok(pt, 'the NaCl box opens with tweetnacl');
    return dec.decode(pt);
  }
  const key = hkdf(sha256, x25519.getSharedSecret(ck.sk, eph), undefined, utf8ToBytes('ed25519_encryption'), 32);
  return dec.decode(xchacha20poly1305(key, nonce).decrypt(box));
}

export const ephOf = (algo, hex) => hex.slice(0, algo === 'ecdsa' ? 130 : 64);

// What NEAR's Python/TS clients send: X-Model-Pub-Key too (§1.2 rule 5).
export function nearHeaders(ck, serverHex, version, { modelKey = true, extra = {} } = {}) {
  const h = { 'X-Signing-Algo': ck.algo, 'X-Client-Pub-Key': ck.header };
  if (modelKey) h['X-Model-Pub-Key'] = serverHex;
  if (version === 2) h['X-Encryption-Version'] = '2';
  return { ...h, ...extra };
}
