import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';

export interface TestCertificate {
  key: string;
  cert: string;
  /** Path of the PEM certificate, for NODE_EXTRA_CA_CERTS of child processes. */
  certPath: string;
}

let cached: TestCertificate | null = null;

/**
 * A self-signed certificate for 127.0.0.1/localhost, made with the openssl CLI once per process.
 * The Azure SDKs refuse bearer tokens over plain http, so every fake that takes a token serves TLS.
 */
export function testCertificate(): TestCertificate {
  if (cached !== null) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'zepid-tls-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  cached = { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8'), certPath };
  return cached;
}

/** Makes this process trust the test certificate for every TLS connection (node:https and fetch). */
export function trustTestCertificate(): TestCertificate {
  const certificate = testCertificate();
  const current = tls.getCACertificates('default');
  if (!current.includes(certificate.cert)) tls.setDefaultCACertificates([...current, certificate.cert]);
  return certificate;
}
