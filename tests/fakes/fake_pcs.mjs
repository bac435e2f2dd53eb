#!/usr/bin/env node
// A fake Intel PCS / PCCS for tests: serves one dcap-qvl collateral JSON file in the PCS v4
// API shape (DER or hex CRLs, URL-encoded PEM issuer-chain headers, {"tcbInfo":…,"signature"}
// bodies with the signed JSON text byte for byte). Node built-ins only.
//
//   node tests/fakes/fake_pcs.mjs --collateral FILE [--port N] [--host 127.0.0.1]
//                                 [--ttl SECONDS] [--no-rootcacrl]
//
// Prints "PORT <n>" on stdout once listening, logs requests on stderr when FAKE_PCS_VERBOSE
// is set, and exits after --ttl seconds (default 120) so that a crashed test never leaves it behind.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const file = opt('--collateral');
if (!file) {
  process.stderr.write('usage: fake_pcs.mjs --collateral FILE [--port N]\n');
  process.exit(2);
}
const col = JSON.parse(readFileSync(file, 'utf8'));
for (const k of ['pck_crl_issuer_chain', 'root_ca_crl', 'pck_crl', 'tcb_info_issuer_chain', 'tcb_info',
  'tcb_info_signature', 'qe_identity_issuer_chain', 'qe_identity', 'qe_identity_signature']) {
  if (typeof col[k] !== 'string') throw new Error(`collateral: ${k} missing`);
}
const fmspc = JSON.parse(col.tcb_info).fmspc.toUpperCase();
const noRootCrl = args.includes('--no-rootcacrl');

// Intel encodes the chains with encodeURIComponent-style escapes (%20, %0A, %2B, %2F, %3D).
const chain = (pem) => encodeURIComponent(pem);

function send(res, status, headers, body) {
  res.writeHead(status, { 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

const server = createServer((req, res) => {
  const u = new URL(req.url, 'http://fake');
  if (process.env.FAKE_PCS_VERBOSE) process.stderr.write(`fake_pcs: ${req.method} ${u.pathname}${u.search}\n`);
  if (req.method !== 'GET') return send(res, 405, {}, '');
  switch (u.pathname) {
    case '/sgx/certification/v4/pckcrl': {
      const ca = u.searchParams.get('ca');
      if (ca !== 'platform' && ca !== 'processor') return send(res, 400, {}, 'bad ca');
      const der = Buffer.from(col.pck_crl, 'hex');
      const body = u.searchParams.get('encoding') === 'der' ? der : der.toString('hex');
      return send(res, 200, {
        'Content-Type': 'application/pkix-crl',
        'SGX-PCK-CRL-Issuer-Chain': chain(col.pck_crl_issuer_chain),
      }, body);
    }
    case '/tdx/certification/v4/tcb': {
      if ((u.searchParams.get('fmspc') || '').toUpperCase() !== fmspc) return send(res, 404, {}, '');
      return send(res, 200, {
        'Content-Type': 'application/json',
        'TCB-Info-Issuer-Chain': chain(col.tcb_info_issuer_chain),
      }, `{"tcbInfo":${col.tcb_info},"signature":"${col.tcb_info_signature}"}`);
    }
    case '/tdx/certification/v4/qe/identity':
      return send(res, 200, {
        'Content-Type': 'application/json',
        'SGX-Enclave-Identity-Issuer-Chain': chain(col.qe_identity_issuer_chain),
      }, `{"enclaveIdentity":${col.qe_identity},"signature":"${col.qe_identity_signature}"}`);
    case '/sgx/certification/v4/rootcacrl': // PCCS serves it as hex text
      if (noRootCrl) return send(res, 404, {}, '');
      return send(res, 200, { 'Content-Type': 'text/plain' }, col.root_ca_crl);
    case '/IntelSGXRootCA.der':
      return send(res, 200, { 'Content-Type': 'application/pkix-crl' }, Buffer.from(col.root_ca_crl, 'hex'));
    default:
      return send(res, 404, {}, '');
  }
});

server.listen(Number(opt('--port', '0')), opt('--host', '127.0.0.1'), () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
setTimeout(() => process.exit(0), Number(opt('--ttl', '120')) * 1000).unref();
process.on('SIGTERM', () => process.exit(0));
