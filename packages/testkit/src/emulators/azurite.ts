import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { trustTestCertificate } from '../tls.ts';

export interface AzuriteBlob {
  /** `https://127.0.0.1:<port>/devstoreaccount1`: the account URL for a token credential. */
  accountUrl: string;
  /** Shared-key connection string of the emulator account, over the same TLS endpoint. */
  connectionString: string;
  accountName: string;
  /** PEM file that child processes need in NODE_EXTRA_CA_CERTS. */
  certPath: string;
  /** A credential Azurite accepts (`--oauth basic` checks a JWT's issuer, audience and lifetime, not its signature). */
  credential: { getToken(scopes: string | string[]): Promise<{ token: string; expiresOnTimestamp: number }> };
  stop(): Promise<void>;
}

/** Azurite's published development account: well known, not a secret. */
const ACCOUNT_NAME = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const READY = /successfully listens on https:\/\/127\.0\.0\.1:(\d+)/;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;

function unsignedJwt(claims: Record<string, unknown>): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.`;
}

/**
 * Starts Azurite's blob service from node_modules as a child process: loopback, a free port (it
 * listens on port 0 and prints the one it got), in-memory storage, TLS with the shared test
 * certificate and `--oauth basic`, so both shared-key and bearer-token clients work as against Azure.
 * `--skipApiVersionCheck` lets a newer SDK talk to it. Killed by `stop()`.
 */
export async function startAzuriteBlob(): Promise<AzuriteBlob> {
  const certificate = trustTestCertificate();
  const workspace = await mkdtemp(join(tmpdir(), 'zepid-azurite-'));
  const keyPath = join(workspace, 'key.pem');
  await writeFile(keyPath, certificate.key, { mode: 0o600 });
  const main = join(dirname(createRequire(import.meta.url).resolve('azurite/package.json')), 'dist', 'src', 'blob', 'main.js');
  const child = spawn(
    process.execPath,
    [
      main,
      '--blobHost', '127.0.0.1',
      '--blobPort', '0',
      '--inMemoryPersistence',
      '--skipApiVersionCheck',
      '--disableTelemetry',
      '--silent',
      '--cert', certificate.certPath,
      '--key', keyPath,
      '--oauth', 'basic',
    ],
    // In memory Azurite writes nothing; the workspace as cwd keeps it that way should that change.
    { cwd: workspace, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    await rm(workspace, { recursive: true, force: true });
  };

  let output = '';
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Azurite did not start within ${START_TIMEOUT_MS} ms:\n${output}`)), START_TIMEOUT_MS);
      const onData = (data: Buffer) => {
        output += data.toString();
        const match = READY.exec(output);
        if (match?.[1] !== undefined) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`Azurite exited (${String(code)}) before listening:\n${output}`));
      });
    });
    const accountUrl = `https://127.0.0.1:${port}/${ACCOUNT_NAME}`;
    return {
      accountUrl,
      accountName: ACCOUNT_NAME,
      connectionString: `DefaultEndpointsProtocol=https;AccountName=${ACCOUNT_NAME};AccountKey=${ACCOUNT_KEY};BlobEndpoint=${accountUrl};`,
      certPath: certificate.certPath,
      credential: {
        getToken: () => {
          const now = Math.floor(Date.now() / 1000);
          const exp = now + 3600;
          const token = unsignedJwt({ aud: 'https://storage.azure.com', iss: 'https://sts.windows.net/00000000-0000-0000-0000-000000000000/', iat: now, nbf: now - 60, exp });
          return Promise.resolve({ token, expiresOnTimestamp: exp * 1000 });
        },
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
