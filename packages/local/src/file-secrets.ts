import type { AppRef } from '@zepid/core';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DependencyHealth, SecretStore } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, probe } from '@zepid/core';

const ID = new RegExp(DEPLOYMENT_ID_PATTERN);

/**
 * Local secret store: each deployment's env variable values in `<dir>/<id>.enc`, encrypted with
 * AES-256-GCM under a key generated on first start (`<dir>/.key`, mode 0600). It keeps values out of
 * the database and logs and away from casual reading; it is not a vault: whoever can read the data
 * dir as the service's user can read the key too.
 */
export class FileSecretStore implements SecretStore {
  private readonly dir: string;
  private key: Buffer | null = null;

  constructor(dir: string) {
    this.dir = dir;
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const keyPath = join(this.dir, '.key');
    try {
      this.key = await readFile(keyPath);
    } catch {
      const key = randomBytes(32);
      // Two processes starting at once (npm start) must agree on one key, and neither may read a
      // half-written one: the key is written under a private name and linked into place, which fails
      // if the other process linked first; then theirs is read.
      const temporary = `${keyPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
      await writeFile(temporary, key, { mode: 0o600, flag: 'wx' });
      try {
        await link(temporary, keyPath);
        this.key = key;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        this.key = await readFile(keyPath);
      } finally {
        await rm(temporary, { force: true });
      }
    }
    if (this.key.length !== 32) throw new Error(`${keyPath} is not a 32-byte key`);
  }

  close(): Promise<void> {
    this.key = null;
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => stat(this.dir));
  }

  private file(deploymentId: string): string {
    if (!ID.test(deploymentId)) throw new Error(`not a deployment id: ${JSON.stringify(deploymentId)}`);
    return join(this.dir, `${deploymentId}.enc`);
  }

  private requireKey(): Buffer {
    if (this.key === null) throw new Error('secret store is not started');
    return this.key;
  }

  async put(deploymentId: string, values: Record<string, string>): Promise<void> {
    if (Object.keys(values).length === 0) return;
    await this.writeEncrypted(this.file(deploymentId), Buffer.from(deploymentId), values);
  }

  get(deploymentId: string): Promise<Record<string, string>> {
    return this.readEncrypted(this.file(deploymentId), Buffer.from(deploymentId));
  }

  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>> {
    return Promise.resolve(Object.fromEntries(names.map((name) => [name, `local-secret://${deploymentId}/${name}`])));
  }

  async delete(deploymentId: string): Promise<void> {
    await rm(this.file(deploymentId), { force: true });
  }

  // App env values (issue 12): `<dir>/app_<sha256(orgId, appName)>.enc`, encrypted as a deployment's
  // are, with the org and app name as the authenticated data (a file copied to another app's name
  // does not decrypt).
  private appFile(app: AppRef): { path: string; aad: Buffer } {
    const aad = Buffer.from(JSON.stringify(['app-env', app.orgId, app.appName]));
    return { path: join(this.dir, `app_${createHash('sha256').update(aad).digest('hex')}.enc`), aad };
  }

  async putAppEnv(app: AppRef, values: Record<string, string>): Promise<void> {
    const { path, aad } = this.appFile(app);
    if (Object.keys(values).length === 0) {
      await rm(path, { force: true });
      return;
    }
    await this.writeEncrypted(path, aad, values);
  }

  async getAppEnv(app: AppRef): Promise<Record<string, string>> {
    const { path, aad } = this.appFile(app);
    return this.readEncrypted(path, aad);
  }

  async deleteAppEnv(app: AppRef): Promise<void> {
    await rm(this.appFile(app).path, { force: true });
  }

  private async writeEncrypted(path: string, aad: Buffer, values: Record<string, string>): Promise<void> {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.requireKey(), iv);
    cipher.setAAD(aad);
    const encrypted = Buffer.concat([cipher.update(JSON.stringify(values), 'utf8'), cipher.final()]);
    // A private temporary name: two writers of one app (API processes) never rename each other's half-written file.
    const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temporary, Buffer.concat([iv, cipher.getAuthTag(), encrypted]), { mode: 0o600 });
      await rename(temporary, path);
    } finally {
      await rm(temporary, { force: true });
    }
  }

  private async readEncrypted(path: string, aad: Buffer): Promise<Record<string, string>> {
    let data: Buffer;
    try {
      // Synchronous (a small local file, read once per deployment run): the promise API's FileHandle
      // open and close cost more than the read (the worker's profile, BENCHMARKS.md).
      data = readFileSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw error;
    }
    const decipher = createDecipheriv('aes-256-gcm', this.requireKey(), data.subarray(0, 12));
    decipher.setAAD(aad);
    decipher.setAuthTag(data.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(data.subarray(28)), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as Record<string, string>;
  }
}
