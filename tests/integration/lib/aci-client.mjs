// An ACI E2EE v2 client (../shared/docs/e2ee-formats.md §7, §2.1; Dstack-TEE/private-ai-gateway
// spec/e2ee-v2.md and spec/aci.md §3-§4), written from those documents with crypto that is not
// ours (@noble/curves, @noble/hashes, @noble/ciphers): the keyset from GET /v1/aci/attestation
// with its digest and nonce checked in the (simulated) quote's report_data, per-field sealing
// to the keyset's key of each suite with the JCS AAD, and the answer's fields opened. Shared
// by e2ee-aci.test.mjs (chat) and e2ee-routes.test.mjs.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes, concatBytes, hexToBytes } from '@noble/hashes/utils.js';
import { gcm } from '@noble/ciphers/aes.js';
import { getPath, jsonOf } from './http.mjs';
import { parseQuote } from './verify.mjs';

export const X25519 = 'x25519-aes-256-gcm-hkdf-sha256';
export const SECP = 'secp256k1-aes-256-gcm-hkdf-sha256';
export const INFO = { [X25519]: 'aci.e2ee.v2.x25519', [SECP]: 'aci.e2ee.v2.secp256k1' };
const dec = new TextDecoder('utf-8', { fatal: true });

// RFC 8785 for the values used here (strings, integers, null, arrays, objects): members
// sorted by name, no whitespace; JSON.stringify escapes strings as JCS does.
export function jcs(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(jcs).join(',')}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(',')}}`;
}
export const sha256hex = (s) => bytesToHex(sha256(typeof s === 'string' ? utf8ToBytes(s) : s));

// spec/aci.md §3.2: report_data = sha256(statement), zero-padded to 64 bytes in the quote.
export const statement = (digest, nonce) =>
  `{"keyset_digest":"${digest}","nonce":${nonce === null ? 'null' : `"${nonce}"`},"purpose":"aci.report_data.v1"}`;

export async function attestation(port, nonce) {
  const r = await getPath(port, `/v1/aci/attestation${nonce === null ? '' : `?nonce=${nonce}`}`);
  assert.equal(r.status, 200, r.body.toString().slice(0, 300));
  // in-band hints (formats document §9) on the attestation answer itself
  assert.equal(r.headers['x-aci-version'], 'aci/1');
  assert.equal(r.headers['x-aci-keyset-digest'], jsonOf(r).workload_keyset_digest);
  const j = jsonOf(r);
  assert.equal(j.api_version, 'aci/1');
  const ks = j.attestation.workload_keyset;
  const digest = `sha256:${sha256hex(jcs(ks))}`;
  assert.equal(j.workload_keyset_digest, digest, 'the digest is over the JCS form of the keyset');
  const rd = sha256hex(statement(digest, nonce));
  assert.equal(j.attestation.report_data, rd);
  const q = parseQuote(j.attestation.evidence.quote);
  assert.equal(q.reportData.toString('hex'), rd + '00'.repeat(32), 'the quote binds the keyset digest and the nonce');
  assert.deepEqual(j.service_capabilities.supported_e2ee_versions, ['2']);
  return { digest, keys: ks.e2ee_public_keys, notAfter: ks.not_after };
}

export function clientKeys(algo) {
  if (algo === X25519) {
    const sk = x25519.utils.randomSecretKey();
    return { algo, sk, header: bytesToHex(x25519.getPublicKey(sk)) };
  }
  const sk = secp256k1.utils.randomSecretKey();
  return { algo, sk, header: bytesToHex(secp256k1.getPublicKey(sk, false)) };
}

export const reqAad = (algo, model, field, nonce, ts) =>
  utf8ToBytes(jcs({ purpose: 'aci.e2ee.request.v2', algo, model, field, nonce, ts }));
export const respAad = (algo, model, id, field, nonce, ts) =>
  utf8ToBytes(jcs({ purpose: 'aci.e2ee.response.v2', algo, model, id, field, nonce, ts }));

export function shared(algo, sk, pub) {
  return algo === X25519 ? x25519.getSharedSecret(sk, pub) : secp256k1.getSharedSecret(sk, pub, true).slice(1);
}

// §7.2: eph ‖ nonce(12) ‖ ct ‖ tag, a fresh ephemeral key per field
export function seal(algo, serviceHex, text, aad) {
  const esk = algo === X25519 ? x25519.utils.randomSecretKey() : secp256k1.utils.randomSecretKey();
  const eph = algo === X25519 ? x25519.getPublicKey(esk) : secp256k1.getPublicKey(esk, false);
  const key = hkdf(sha256, shared(algo, esk, hexToBytes(serviceHex)), undefined, utf8ToBytes(INFO[algo]), 32);
  const nonce = randomBytes(12);
  return bytesToHex(concatBytes(eph, nonce, gcm(key, nonce, aad).encrypt(utf8ToBytes(text))));
}

export function open(ck, hex, aad) {
  const b = hexToBytes(hex);
  const el = ck.algo === X25519 ? 32 : 65;
  const key = hkdf(sha256, shared(ck.algo, ck.sk, b.slice(0, el)), undefined, utf8ToBytes(INFO[ck.algo]), 32);
  return dec.decode(gcm(key, b.slice(el, el + 12), aad).decrypt(b.slice(el + 12)));
}

export const fresh = () => ({ nonce: bytesToHex(randomBytes(32)), ts: Math.floor(Date.now() / 1000) });
export const aciHeaders = (ck, serviceHex, v) => ({ 'X-E2EE-Version': '2', 'X-Client-Pub-Key': ck.header,
  'X-Model-Pub-Key': serviceHex, 'X-E2EE-Nonce': v.nonce, 'X-E2EE-Timestamp': String(v.ts) });
