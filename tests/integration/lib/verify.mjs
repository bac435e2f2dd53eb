// Independent checks of what vllm-proxy signs and attests, with crypto that is not ours:
// ethers (EIP-191 recovery, EIP-55), @noble/curves (Ed25519, secp256k1) and @noble/hashes.

import assert from 'node:assert/strict';
import { ethers } from 'ethers';
import { ed25519 } from '@noble/curves/ed25519.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';

export { bytesToHex, hexToBytes, utf8ToBytes };

export function sha256hex(bytes) {
  const b = typeof bytes === 'string' ? utf8ToBytes(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return bytesToHex(sha256(b));
}

export const HEX64 = /^[0-9a-f]{64}$/;
export const SIGNED_TEXT = /^[0-9a-f]{64}:[0-9a-f]{64}$/;
const SECP_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/** EIP-191 personal_sign digest, computed by hand with noble (not by ethers). */
export function eip191Digest(text) {
  const msg = utf8ToBytes(text);
  const prefix = utf8ToBytes(`\x19Ethereum Signed Message:\n${msg.length}`);
  const all = new Uint8Array(prefix.length + msg.length);
  all.set(prefix, 0);
  all.set(msg, prefix.length);
  return keccak_256(all);
}

/** Recover the address of an EIP-191 signature with noble only; returns checksummed address. */
export function recoverAddressNoble(text, sigHex) {
  const sig = hexToBytes(sigHex.slice(2));
  const v = sig[64];
  const recovery = v - 27;
  // noble v2 'recovered' format: recovery byte first, then r || s
  const rec = new Uint8Array(65);
  rec[0] = recovery;
  rec.set(sig.subarray(0, 64), 1);
  const pub = secp256k1.recoverPublicKey(rec, eip191Digest(text), { prehash: false });
  const uncompressed = secp256k1.Point.fromBytes(pub).toBytes(false);
  const addr = keccak_256(uncompressed.subarray(1)).subarray(12);
  return ethers.getAddress('0x' + bytesToHex(addr));
}

/** Asserts an ECDSA signature record: format, low-s, v, and recovery to signing_address. */
export function checkEcdsaSignature(rec, expectedText) {
  assert.equal(rec.signing_algo, 'ecdsa');
  if (expectedText !== undefined) assert.equal(rec.text, expectedText, 'signed text');
  assert.match(rec.signature, /^0x[0-9a-f]{130}$/, 'ECDSA signature is 0x + 130 lowercase hex (132 chars)');
  assert.equal(rec.signature.length, 132);
  const v = rec.signature.slice(130);
  assert.ok(v === '1b' || v === '1c', `v byte is 1b/1c, got ${v}`);
  const s = BigInt('0x' + rec.signature.slice(66, 130));
  assert.ok(s <= SECP_N / 2n, 'signature s is low (EIP-2)');
  assert.match(rec.signing_address, /^0x[0-9a-fA-F]{40}$/);
  assert.equal(ethers.getAddress(rec.signing_address), rec.signing_address, 'signing_address is EIP-55 checksummed');
  assert.equal(ethers.verifyMessage(rec.text, rec.signature), rec.signing_address, 'ethers recovers signing_address');
  assert.equal(recoverAddressNoble(rec.text, rec.signature), rec.signing_address, 'noble recovers signing_address');
}

/** Asserts an Ed25519 signature record. */
export function checkEd25519Signature(rec, expectedText) {
  assert.equal(rec.signing_algo, 'ed25519');
  if (expectedText !== undefined) assert.equal(rec.text, expectedText, 'signed text');
  assert.match(rec.signature, /^[0-9a-f]{128}$/, 'Ed25519 signature is 128 lowercase hex, no 0x');
  assert.match(rec.signing_address, /^[0-9a-f]{64}$/, 'Ed25519 signing_address is 64 lowercase hex');
  assert.ok(ed25519.verify(hexToBytes(rec.signature), utf8ToBytes(rec.text), hexToBytes(rec.signing_address)),
    'Ed25519 signature verifies with @noble/curves');
  // a one-bit change of the text must not verify
  const bad = rec.text.slice(0, -1) + (rec.text.endsWith('0') ? '1' : '0');
  assert.equal(ed25519.verify(hexToBytes(rec.signature), utf8ToBytes(bad), hexToBytes(rec.signing_address)), false);
}

/** TDX v4 quote: header fields and report_data (bytes 568..632). */
export function parseQuote(hex) {
  assert.match(hex, /^[0-9a-f]+$/i, 'intel_quote is hex');
  const q = Buffer.from(hex, 'hex');
  assert.ok(q.length >= 632, `quote has at least 632 bytes, got ${q.length}`);
  return {
    bytes: q,
    version: q.readUInt16LE(0),
    attKeyType: q.readUInt16LE(2),
    teeType: q.readUInt32LE(4),
    reportData: q.subarray(568, 632),
  };
}

/** Expected report_data for an attestation report: pad32(address bytes) || nonce. */
export function expectedReportData(report) {
  const addrHex = report.signing_algo === 'ecdsa' ? report.signing_address.slice(2) : report.signing_address;
  const addr = Buffer.from(addrHex, 'hex');
  const first = Buffer.alloc(32);
  addr.copy(first);
  return Buffer.concat([first, Buffer.from(report.request_nonce, 'hex')]);
}

export function randomNonce() {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
}

export { ethers, ed25519 };

/**
 * Checks the signature links inside a TDX v4 quote (docs/tee-formats.md §1.4–1.5) with
 * @noble/curves and node's X509Certificate: attestation key → header+body, QE report binds the
 * attestation key, PCK leaf → QE report, and the PEM chain signs itself up to a self-signed root.
 * Returns {chain: [X509Certificate…]} for further checks by the caller.
 */
export async function checkQuoteSignatures(quoteBytes) {
  const { X509Certificate, verify } = await import('node:crypto');
  const { p256 } = await import('@noble/curves/nist.js');
  const q = quoteBytes;
  assert.equal(q.readUInt16LE(0), 4, 'v4 quote');
  assert.equal(q.readUInt16LE(2), 2, 'attestation key type 2 (ECDSA P-256)');
  const sigLen = q.readUInt32LE(632);
  assert.ok(636 + sigLen <= q.length, `sig_data_len ${sigLen} fits in ${q.length} bytes`);
  const sig = q.subarray(636, 700);
  const attKey = q.subarray(700, 764);
  const pub = Buffer.concat([Buffer.from([4]), attKey]);
  assert.ok(p256.verify(sig, q.subarray(0, 632), pub, { lowS: false }), 'attestation key signs header+body');
  assert.equal(q.readUInt16LE(764), 6, 'certification data type 6');
  const certSize = q.readUInt32LE(766);
  const qeReport = q.subarray(770, 1154);
  const qeSig = q.subarray(1154, 1218);
  const n = q.readUInt16LE(1218);
  const auth = q.subarray(1220, 1220 + n);
  const rd = qeReport.subarray(320, 384);
  const want = Buffer.from(sha256(Buffer.concat([attKey, auth])));
  assert.equal(rd.subarray(0, 32).toString('hex'), want.toString('hex'), 'QE report_data = sha256(attestation key || auth data)');
  assert.ok(rd.subarray(32).every((b) => b === 0), 'QE report_data[32:64] zero');
  assert.equal(q.readUInt16LE(1220 + n), 5, 'inner certification data type 5 (PCK chain)');
  const m = q.readUInt32LE(1222 + n);
  assert.equal(770 + certSize, 1226 + n + m, 'certification sizes agree');
  assert.equal(1226 + n + m, 636 + sigLen, 'signature data ends where sig_data_len says');
  const pem = q.subarray(1226 + n, 1226 + n + m).toString('latin1');
  const pems = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  assert.ok(pems.length >= 2, `PCK chain has ≥ 2 certificates (${pems.length})`);
  const chain = pems.map((p) => new X509Certificate(p));
  assert.ok(verify('sha256', qeReport, { key: chain[0].publicKey, dsaEncoding: 'ieee-p1363' }, qeSig),
    'PCK leaf signs the QE report');
  for (let i = 0; i + 1 < chain.length; i++) {
    assert.ok(chain[i].verify(chain[i + 1].publicKey), `certificate ${i} signed by certificate ${i + 1}`);
  }
  const root = chain.at(-1);
  assert.ok(root.verify(root.publicKey), 'root is self-signed');
  return { chain };
}

/**
 * Replays a dstack event log (docs/tee-formats.md §2.5–2.6) into RTMR0–3 and returns the
 * mismatches against the quote (empty array = all four match). Runtime events (type
 * 0x08000001) with an empty digest get it recomputed from name and payload.
 */
export async function replayRtmrs(quoteBytes, eventLog) {
  const { sha384 } = await import('@noble/hashes/sha2.js');
  const events = typeof eventLog === 'string' ? JSON.parse(eventLog) : eventLog;
  const rtmr = [0, 1, 2, 3].map(() => new Uint8Array(48));
  for (const e of events) {
    let digest = e.digest ? hexToBytes(e.digest) : null;
    if (e.event_type === 0x08000001) {
      const t = Buffer.alloc(4);
      t.writeUInt32LE(0x08000001);
      const recomputed = sha384(Buffer.concat([t, Buffer.from(':'), Buffer.from(e.event, 'utf8'), Buffer.from(':'), Buffer.from(e.event_payload ?? '', 'hex')]));
      if (digest && digest.length) {
        assert.equal(bytesToHex(digest), bytesToHex(recomputed), `runtime event ${e.event}: digest = sha384(type:name:payload)`);
      }
      digest = recomputed;
    } else {
      assert.ok(digest && digest.length, 'only runtime events may omit the digest');
    }
    assert.equal(digest.length, 48, `digest of ${e.event || e.event_type} is 48 bytes`);
    const cur = rtmr[e.imr];
    assert.ok(cur, `imr ${e.imr} in 0..3`);
    rtmr[e.imr] = sha384(Buffer.concat([cur, digest]));
  }
  const bad = [];
  for (let i = 0; i < 4; i++) {
    const inQuote = quoteBytes.subarray(376 + 48 * i, 424 + 48 * i);
    if (Buffer.compare(Buffer.from(rtmr[i]), inQuote) !== 0) bad.push(`RTMR${i}`);
  }
  return bad;
}
