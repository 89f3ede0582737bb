import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import type { AppRef, DependencyHealth, SecretStore } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, DeployError, ENV_NAME_PATTERN, mapLimit, probe } from '@zepid/core';
import { toVaultError, vaultCode, vaultStatus } from './errors.ts';

/**
 * Secret store on Azure Key Vault: one secret per env variable of a deployment, so a Container App
 * can reference each by URI (`keyVaultUrl` + identity) and the service never hands values around.
 *
 * Naming. Key Vault names are 1-127 of [0-9a-zA-Z-] and case-insensitive; env names are
 * [A-Za-z_][A-Za-z0-9_]* up to 128 and case-sensitive (API_KEY and api_key are two variables). So:
 *   dep-<26 id chars>-e-<name>   when the name has no lowercase letter and fits: `_` → `-`, lowercased,
 *                                e.g. DATABASE_URL → dep-…-e-database-url. Readable, and one-to-one,
 *                                since case carries no information in such names.
 *   dep-<26 id chars>-h-<sha256 of the name, hex>   otherwise. No two names that Key Vault would
 *                                confuse can be told apart in 94 case-insensitive characters, so
 *                                these are hashed; a collision would need a SHA-256 collision.
 *   dep-<26 id chars>-index      the deployment's env names as a JSON array (names are not secret).
 * The `dep-` prefix keeps deployment secrets apart from the service's own settings in a shared vault.
 * An app's current env values (issue 12) follow the same scheme under `app-<26 hex chars>-`, the
 * first 26 hex characters of sha256(orgId NUL appName): app names are unique within an org only, and
 * the hash keeps the prefix as long as a deployment's so the readable form fits the same names.
 * Key Vault cannot list by prefix or tag without reading the whole vault, hence the index; tags
 * (deploymentId, envName) are for people browsing the vault.
 *
 * Deletion. Soft delete is always on in Azure: a deleted secret stays recoverable for the vault's
 * retention and its name stays taken. `delete` deletes every secret, waits until Key Vault reports
 * it deleted, then purges it so values do not outlive the deployment. Purge is refused with purge
 * protection on, or without the purge permission (Key Vault Secrets Officer has none); the secret
 * then stays soft-deleted until Key Vault purges it at the end of the retention
 * (https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview). A deleted name cannot be
 * set again until it is purged or recovered (409, inner code ObjectIsDeletedButRecoverable): when a
 * deleted name is written again (a put after a delete, an app env variable removed and added back),
 * the secret is recovered and given a new version (its old versions come back with it, as Key Vault
 * recovers whole secrets). A purge completes a few seconds after it answers: meanwhile a set gets 409
 * ObjectIsBeingDeleted, "retry later" (Azure/azure-sdk-for-net#34322, #26027; Key Vault offers
 * nothing to poll), so the write is retried with backoff for up to PURGE_SETTLE_MS.
 */

export interface KeyVaultSecretStoreOptions {
  /** `https://<vault>.vault.azure.net` */
  vaultUrl: string;
  credential: TokenCredential;
  /**
   * Key Vault's auth challenge names the resource (`https://vault.azure.net`); the SDK checks that the
   * vault's host lies under it. Off only for a vault reached through a custom domain, or a local fake.
   */
  verifyChallengeResource?: boolean;
  /** How often a delete or recovery is polled until Key Vault finishes it. */
  pollIntervalMs?: number;
}

const DEPLOYMENT_ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const ENV_NAME = new RegExp(ENV_NAME_PATTERN);
const MAX_NAME = 127;
/** Key Vault's limit on a secret value. */
export const MAX_SECRET_VALUE_BYTES = 25 * 1024;
/** Parallel requests per operation: well inside Key Vault's throttling limits, still fast for 100 variables. */
const CONCURRENCY = 8;
const HEALTH_PROBE_SECRET = 'zepid-health-probe';

/** How long a write waits out a purge that has not finished (ObjectIsBeingDeleted); seen taking 1-5 s. */
const PURGE_SETTLE_MS = 30_000;

function prefixOf(deploymentId: string): string {
  if (!DEPLOYMENT_ID.test(deploymentId)) throw new DeployError('VALIDATION_ERROR', `not a deployment id: ${JSON.stringify(deploymentId)}`);
  return `${deploymentId.replace('_', '-')}-`;
}

/** The prefix of an app's current env values (see the naming above). */
export function appPrefixOf(app: Pick<AppRef, 'orgId' | 'appName'>): string {
  if (app.orgId === '' || app.appName === '') throw new DeployError('VALIDATION_ERROR', 'an app needs an org and a name');
  return `app-${createHash('sha256').update(`${app.orgId}\u0000${app.appName}`).digest('hex').slice(0, 26)}-`;
}

/** The Key Vault secret name of one env variable of a deployment (see the naming above). */
export function secretNameFor(deploymentId: string, envName: string): string {
  return nameWithin(prefixOf(deploymentId), envName);
}

function nameWithin(prefix: string, envName: string): string {
  if (!ENV_NAME.test(envName)) throw new DeployError('VALIDATION_ERROR', `not an env variable name: ${JSON.stringify(envName.slice(0, 140))}`);
  const readable = `${prefix}e-${envName.replace(/_/g, '-').toLowerCase()}`;
  if (!/[a-z]/.test(envName) && readable.length <= MAX_NAME) return readable;
  return `${prefix}h-${createHash('sha256').update(envName).digest('hex')}`;
}

/** Whose secrets a set of env values is: a deployment's copy or an app's current values. */
interface SecretSet {
  prefix: string;
  tags: Record<string, string>;
}

function deploymentSet(deploymentId: string): SecretSet {
  return { prefix: prefixOf(deploymentId), tags: { deploymentId } };
}

function appSet(app: AppRef): SecretSet {
  return { prefix: appPrefixOf(app), tags: { orgId: app.orgId, appName: app.appName } };
}

export class KeyVaultSecretStore implements SecretStore {
  private readonly options: KeyVaultSecretStoreOptions;
  private readonly vaultUrl: string;
  private client: SecretClient | null = null;

  constructor(options: KeyVaultSecretStoreOptions) {
    const url = new URL(options.vaultUrl);
    if (url.protocol !== 'https:') throw new Error('vaultUrl must be an https URL');
    this.options = options;
    this.vaultUrl = url.origin;
  }

  /** Nothing to create or open: the client authenticates on its first request. */
  start(): Promise<void> {
    this.client ??= new SecretClient(this.vaultUrl, this.options.credential, {
      disableChallengeResourceVerification: this.options.verifyChallengeResource === false,
      userAgentOptions: { userAgentPrefix: 'zepid-deploy' },
    });
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.client = null;
    return Promise.resolve();
  }

  /** Reads a secret that never exists: a 404 proves the vault answers and accepts our identity. */
  health(): Promise<DependencyHealth> {
    return probe(async () => {
      try {
        await this.secrets().getSecret(HEALTH_PROBE_SECRET);
      } catch (error) {
        if (vaultStatus(error) !== 404) throw toVaultError(error, 'read a secret');
      }
    });
  }

  private secrets(): SecretClient {
    if (this.client === null) throw new DeployError('INTERNAL_ERROR', 'KeyVaultSecretStore is not started');
    return this.client;
  }

  private get pollIntervalMs(): number {
    return this.options.pollIntervalMs ?? 2000;
  }

  /** The value of a secret, or null when it does not exist. */
  private async read(name: string): Promise<string | null> {
    try {
      return (await this.secrets().getSecret(name)).value ?? null;
    } catch (error) {
      if (vaultStatus(error) === 404) return null;
      throw toVaultError(error, `read secret ${name}`);
    }
  }

  private async write(name: string, value: string, tags: Record<string, string>, contentType: string): Promise<void> {
    const set = async () => {
      // A purge still finishing answers 409 ObjectIsBeingDeleted until it is done (see above).
      for (let waited = 0, delay = 250; ; waited += delay, delay = Math.min(delay * 2, 4000)) {
        try {
          return await this.secrets().setSecret(name, value, { tags, contentType });
        } catch (error) {
          if (vaultCode(error) !== 'ObjectIsBeingDeleted' || waited >= PURGE_SETTLE_MS) throw error;
          await sleep(delay);
        }
      }
    };
    try {
      await set();
    } catch (error) {
      if (vaultCode(error) !== 'ObjectIsDeletedButRecoverable') throw toVaultError(error, `write secret ${name}`);
      try {
        const poller = await this.secrets().beginRecoverDeletedSecret(name, { intervalInMs: this.pollIntervalMs });
        await poller.pollUntilDone();
        await set();
      } catch (retryError) {
        throw toVaultError(retryError, `recover and write secret ${name}`);
      }
    }
  }

  /** Deletes, waits for Key Vault to finish, and purges when the vault allows it. Absent is fine. */
  private async remove(name: string): Promise<void> {
    try {
      const poller = await this.secrets().beginDeleteSecret(name, { intervalInMs: this.pollIntervalMs });
      await poller.pollUntilDone();
    } catch (error) {
      // 404: already deleted (maybe by an interrupted earlier call); it may still await its purge.
      if (vaultStatus(error) !== 404) throw toVaultError(error, `delete secret ${name}`);
    }
    try {
      await this.secrets().purgeDeletedSecret(name);
    } catch (error) {
      const status = vaultStatus(error);
      // 403: purge protection or no purge permission: Key Vault purges it after the retention.
      if (status !== 403 && status !== 404) throw toVaultError(error, `purge secret ${name}`);
    }
  }

  private async indexOf(set: SecretSet): Promise<string[] | null> {
    const text = await this.read(`${set.prefix}index`);
    if (text === null) return null;
    try {
      const names: unknown = JSON.parse(text);
      if (Array.isArray(names) && names.every((name) => typeof name === 'string')) return names;
    } catch {
      // reported below
    }
    throw new DeployError('INTERNAL_ERROR', `Key Vault secret ${set.prefix}index is not a list of env names`);
  }

  async put(deploymentId: string, values: Record<string, string>): Promise<void> {
    const set = deploymentSet(deploymentId);
    if (Object.keys(values).length === 0) return;
    await this.putSet(set, values);
  }

  /** Writes every value, then the index, then removes the names the set no longer has. */
  private async putSet(set: SecretSet, values: Record<string, string>): Promise<void> {
    const names = Object.keys(values);
    for (const name of names) {
      nameWithin(set.prefix, name);
      if (Buffer.byteLength(values[name] ?? '') > MAX_SECRET_VALUE_BYTES) {
        throw new DeployError('VALIDATION_ERROR', `The value of ${name} is larger than Key Vault's limit of 25 KB`, {
          details: [{ field: `envVariables.${name}`, message: 'is larger than 25 KB' }],
        });
      }
    }
    const previous = (await this.indexOf(set)) ?? [];
    await mapLimit(names, CONCURRENCY, (name) => this.write(nameWithin(set.prefix, name), values[name] ?? '', { ...set.tags, envName: name }, 'text/plain'));
    // The index goes last: it never names a secret that was not written.
    await this.write(`${set.prefix}index`, JSON.stringify(names), set.tags, 'application/json');
    const dropped = previous.filter((name) => !names.includes(name));
    await mapLimit(dropped, CONCURRENCY, (name) => this.remove(nameWithin(set.prefix, name)));
  }

  get(deploymentId: string): Promise<Record<string, string>> {
    return this.getSet(deploymentSet(deploymentId));
  }

  private async getSet(set: SecretSet): Promise<Record<string, string>> {
    const names = (await this.indexOf(set)) ?? [];
    const values = await mapLimit(names, CONCURRENCY, (name) => this.read(nameWithin(set.prefix, name)));
    const result: Record<string, string> = {};
    names.forEach((name, index) => {
      const value = values[index];
      if (value !== null && value !== undefined) result[name] = value;
    });
    return result;
  }

  /**
   * The value behind a reference `references` handed out (this vault's versionless secret URI), null
   * when the secret is gone or the URI is not one of this vault's. The runtime compares what an old
   * revision's references resolve to with a new deployment's before reactivating that revision.
   */
  async valueAt(reference: string): Promise<string | null> {
    let url: URL;
    try {
      url = new URL(reference);
    } catch {
      return null;
    }
    const match = /^\/secrets\/([0-9a-zA-Z-]{1,127})\/?$/.exec(url.pathname);
    if (url.origin !== this.vaultUrl || match?.[1] === undefined) return null;
    return this.read(match[1]);
  }

  /** Versionless URIs, so a revision picks up the value current when it starts. No request is made. */
  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>> {
    try {
      return Promise.resolve(Object.fromEntries(names.map((name) => [name, `${this.vaultUrl}/secrets/${secretNameFor(deploymentId, name)}`])));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  delete(deploymentId: string): Promise<void> {
    return this.deleteSet(deploymentSet(deploymentId));
  }

  private async deleteSet(set: SecretSet): Promise<void> {
    const names = await this.indexOf(set);
    if (names === null) return;
    await mapLimit(names, CONCURRENCY, (name) => this.remove(nameWithin(set.prefix, name)));
    // The index goes last, so an interrupted delete can be run again and finish.
    await this.remove(`${set.prefix}index`);
  }

  /** An app's current values: the same scheme as a deployment's, under the app's prefix. {} removes them all. */
  async putAppEnv(app: AppRef, values: Record<string, string>): Promise<void> {
    const set = appSet(app);
    if (Object.keys(values).length === 0) {
      await this.deleteSet(set);
      return;
    }
    await this.putSet(set, values);
  }

  getAppEnv(app: AppRef): Promise<Record<string, string>> {
    return this.getSet(appSet(app));
  }

  /** Deletes and purges (where the vault allows) every value and the index; nothing to do when absent. */
  deleteAppEnv(app: AppRef): Promise<void> {
    return this.deleteSet(appSet(app));
  }
}
