import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { testCertificate } from '../tls.ts';

/**
 * An HTTPS fake of the Key Vault secrets REST API, as far as @azure/keyvault-secrets uses it for
 * set, get, delete (+ its poller), recover (+ its poller) and purge. It behaves like a vault with soft
 * delete (always on in Azure):
 * - challenge auth: a request without the expected bearer token gets 401 with
 *   `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`,
 *   which is how the SDK learns the scope and tenant before it asks its credential for a token;
 * - names are 1-127 of [0-9a-zA-Z-] and case-insensitive; values are at most 25 KB;
 * - a deleted secret stays "deleted but recoverable" until purged or recovered, and its name cannot
 *   be set meanwhile (409 Conflict, inner code ObjectIsDeletedButRecoverable)
 *   (https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview; the message as in
 *   Azure/azure-powershell#14800);
 * - a purge answers 204 before it is done: for `purgeSettleMs` after it, a set of the name gets 409
 *   Conflict, inner code ObjectIsBeingDeleted, "is currently being deleted and cannot be re-created;
 *   retry later", and the name is neither live nor deleted (Azure/azure-sdk-for-net#34322; 1-5 s
 *   seen in #26027);
 * - recovering brings the whole secret back, every version, value and tags
 *   (https://learn.microsoft.com/azure/key-vault/secrets/javascript-developer-guide-delete-secret);
 * - with `purgeProtection`, purge is refused (403) as Azure does.
 * Deletion and recovery complete at once (Azure takes seconds); listing, backup, restore, versions,
 * PATCH and CAE claims challenges are not implemented (501), so a test relying on them fails loudly.
 */

export interface FakeKeyVaultOptions {
  purgeProtection?: boolean;
  /** How long a purged name stays "being deleted" (see above); 0 (default): purges finish at once. */
  purgeSettleMs?: number;
  /** The only bearer token accepted. */
  token?: string;
  tenantId?: string;
}

export interface FakeKeyVaultRequest {
  method: string;
  path: string;
  authorized: boolean;
}

export interface FakeKeyVault {
  /** `https://127.0.0.1:<port>` */
  vaultUrl: string;
  token: string;
  tenantId: string;
  /** Every request received, in order (no bodies: they hold secret values). */
  readonly requests: FakeKeyVaultRequest[];
  /** Secrets as stored, for assertions and for seeding. */
  secretNames(): string[];
  deletedSecretNames(): string[];
  secret(name: string): { value: string; tags: Record<string, string>; versions: number } | undefined;
  setSecret(name: string, value: string, tags?: Record<string, string>): void;
  /** Answers every authorized request with this status (e.g. 503) until called with null. */
  failWith(status: number | null): void;
  stop(): Promise<void>;
}

interface Version {
  version: string;
  value: string;
  contentType: string | undefined;
  tags: Record<string, string>;
  created: number;
  updated: number;
}

interface StoredSecret {
  name: string;
  versions: Version[];
}

interface DeletedSecret {
  secret: StoredSecret;
  deletedDate: number;
  scheduledPurgeDate: number;
}

const NAME = /^[0-9a-zA-Z-]{1,127}$/;
const MAX_VALUE_BYTES = 25 * 1024;
const RETENTION_DAYS = 90;

class HttpProblem extends Error {
  readonly status: number;
  readonly code: string;
  readonly inner: string | undefined;

  constructor(status: number, code: string, message: string, inner?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.inner = inner;
  }
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return {};
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new HttpProblem(400, 'BadParameter', 'The request body is not a JSON object.');
}

export async function startFakeKeyVault(options: FakeKeyVaultOptions = {}): Promise<FakeKeyVault> {
  const token = options.token ?? 'fake-key-vault-token';
  const tenantId = options.tenantId ?? '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const live = new Map<string, StoredSecret>();
  const deleted = new Map<string, DeletedSecret>();
  /** Purged names whose purge is still finishing, with when it finishes. */
  const purging = new Map<string, number>();
  const requests: FakeKeyVaultRequest[] = [];
  let failure: number | null = null;
  let vaultUrl = '';

  const now = () => Math.floor(Date.now() / 1000);
  const attributes = (version: Version) => ({
    enabled: true,
    created: version.created,
    updated: version.updated,
    recoveryLevel: options.purgeProtection === true ? 'Recoverable' : 'Recoverable+Purgeable',
    recoverableDays: RETENTION_DAYS,
  });
  const latest = (secret: StoredSecret): Version => {
    const version = secret.versions.at(-1);
    if (version === undefined) throw new Error('a stored secret always has a version');
    return version;
  };
  const bundle = (secret: StoredSecret, version: Version, withValue: boolean) => ({
    ...(withValue ? { value: version.value } : {}),
    id: `${vaultUrl}/secrets/${secret.name}/${version.version}`,
    ...(version.contentType === undefined ? {} : { contentType: version.contentType }),
    attributes: attributes(version),
    tags: version.tags,
  });
  const deletedBundle = (entry: DeletedSecret) => ({
    ...bundle(entry.secret, latest(entry.secret), false),
    recoveryId: `${vaultUrl}/deletedsecrets/${entry.secret.name}`,
    deletedDate: entry.deletedDate,
    scheduledPurgeDate: entry.scheduledPurgeDate,
  });
  const checkName = (name: string) => {
    if (!NAME.test(name)) throw new HttpProblem(400, 'BadParameter', `The secret name '${name}' is invalid: it must be 1-127 characters of 0-9, a-z, A-Z and -.`);
    return name.toLowerCase();
  };
  const notFound = (name: string, what = 'Secret') =>
    new HttpProblem(404, what === 'Secret' ? 'SecretNotFound' : 'DeletedSecretNotFound', `${what} not found: ${name}`);

  function store(name: string, value: string, contentType: string | undefined, tags: Record<string, string>): [StoredSecret, Version] {
    const key = checkName(name);
    if (deleted.has(key)) {
      throw new HttpProblem(
        409,
        'Conflict',
        `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
        'ObjectIsDeletedButRecoverable',
      );
    }
    const purgeDone = purging.get(key);
    if (purgeDone !== undefined && Date.now() < purgeDone) {
      throw new HttpProblem(409, 'Conflict', `Secret ${name} is currently being deleted and cannot be re-created; retry later.`, 'ObjectIsBeingDeleted');
    }
    purging.delete(key);
    if (Buffer.byteLength(value) > MAX_VALUE_BYTES) throw new HttpProblem(400, 'BadParameter', 'The secret value exceeds the maximum size of 25 KB.');
    const secret = live.get(key) ?? { name, versions: [] };
    const at = now();
    const version: Version = { version: randomBytes(16).toString('hex'), value, contentType, tags, created: at, updated: at };
    secret.versions.push(version);
    live.set(key, secret);
    return [secret, version];
  }

  async function route(request: IncomingMessage, url: URL): Promise<[number, unknown]> {
    const method = request.method ?? 'GET';
    const parts = url.pathname.split('/').filter((part, index, all) => part !== '' || index === all.length - 1);
    // parts: ['secrets', name, version?] | ['deletedsecrets', name, 'recover'?]
    const [collection, rawName, extra] = [parts[0] ?? '', decodeURIComponent(parts[1] ?? ''), parts[2]];
    if (collection === 'secrets' && rawName !== '') {
      const key = checkName(rawName);
      if (method === 'PUT' && extra === undefined) {
        const body = await readJson(request);
        if (typeof body.value !== 'string') throw new HttpProblem(400, 'BadParameter', 'The secret value is missing.');
        const tags = (body.tags ?? {}) as Record<string, string>;
        const [secret, version] = store(rawName, body.value, typeof body.contentType === 'string' ? body.contentType : undefined, tags);
        return [200, bundle(secret, version, true)];
      }
      if (method === 'GET' && (extra === undefined || extra === '' || /^[0-9a-f]{32}$/.test(extra))) {
        const secret = live.get(key);
        if (secret === undefined) throw notFound(rawName);
        const version = extra === undefined || extra === '' ? latest(secret) : secret.versions.find((v) => v.version === extra);
        if (version === undefined) throw notFound(`${rawName}/${extra ?? ''}`);
        return [200, bundle(secret, version, true)];
      }
      if (method === 'DELETE' && extra === undefined) {
        const secret = live.get(key);
        if (secret === undefined) throw notFound(rawName);
        live.delete(key);
        const at = now();
        const entry = { secret, deletedDate: at, scheduledPurgeDate: at + RETENTION_DAYS * 86_400 };
        deleted.set(key, entry);
        return [200, deletedBundle(entry)];
      }
    }
    if (collection === 'deletedsecrets' && rawName !== '') {
      const key = checkName(rawName);
      const entry = deleted.get(key);
      if (method === 'GET' && extra === undefined) {
        if (entry === undefined) throw notFound(rawName, 'Deleted secret');
        return [200, deletedBundle(entry)];
      }
      if (method === 'DELETE' && extra === undefined) {
        if (options.purgeProtection === true) {
          throw new HttpProblem(
            403,
            'Forbidden',
            'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.',
          );
        }
        if (entry === undefined) throw notFound(rawName, 'Deleted secret');
        deleted.delete(key);
        if ((options.purgeSettleMs ?? 0) > 0) purging.set(key, Date.now() + (options.purgeSettleMs ?? 0));
        return [204, undefined];
      }
      if (method === 'POST' && extra === 'recover') {
        if (entry === undefined) throw notFound(rawName, 'Deleted secret');
        deleted.delete(key);
        live.set(key, entry.secret);
        return [200, bundle(entry.secret, latest(entry.secret), false)];
      }
    }
    throw new HttpProblem(501, 'NotImplemented', `The Key Vault fake does not implement ${method} ${url.pathname}`);
  }

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'https://fake');
    const authorized = request.headers.authorization === `Bearer ${token}`;
    requests.push({ method: request.method ?? 'GET', path: url.pathname, authorized });
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'x-ms-keyvault-service-version': 'fake', ...headers });
      response.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (!authorized) {
      request.resume();
      send(
        401,
        { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } },
        { 'www-authenticate': `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="https://vault.azure.net"` },
      );
      return;
    }
    if (failure !== null) {
      request.resume();
      send(failure, { error: { code: failure === 429 ? 'Throttled' : 'ServiceUnavailable', message: 'injected failure' } }, { 'retry-after': '0' });
      return;
    }
    if (url.searchParams.get('api-version') === null) {
      request.resume();
      send(400, { error: { code: 'BadParameter', message: 'The api-version query parameter is required.' } });
      return;
    }
    try {
      const [status, body] = await route(request, url);
      send(status, body);
    } catch (error) {
      if (!(error instanceof HttpProblem)) throw error;
      request.resume();
      send(error.status, { error: { code: error.code, message: error.message, ...(error.inner === undefined ? {} : { innererror: { code: error.inner } }) } });
    }
  };

  const { key, cert } = testCertificate();
  const server = createServer({ key, cert }, (request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { code: 'InternalError', message: error instanceof Error ? error.message : String(error) } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  vaultUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    vaultUrl,
    token,
    tenantId,
    requests,
    secretNames: () => [...live.values()].map((secret) => secret.name).sort(),
    deletedSecretNames: () => [...deleted.values()].map((entry) => entry.secret.name).sort(),
    secret: (name) => {
      const secret = live.get(name.toLowerCase());
      if (secret === undefined) return undefined;
      const version = latest(secret);
      return { value: version.value, tags: version.tags, versions: secret.versions.length };
    },
    setSecret: (name, value, tags = {}) => {
      store(name, value, undefined, tags);
    },
    failWith: (status) => {
      failure = status;
    },
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error === undefined ? resolve() : reject(error)));
        server.closeAllConnections();
      }),
  };
}
