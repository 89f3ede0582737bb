import { DeployError } from '@zepid/core';
import type { AppRef } from '@zepid/core';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
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
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.requireKey(), iv);
    cipher.setAAD(Buffer.from(deploymentId));
    const encrypted = Buffer.concat([cipher.update(JSON.stringify(values), 'utf8'), cipher.final()]);
    const path = this.file(deploymentId);
    await writeFile(`${path}.tmp`, Buffer.concat([iv, cipher.getAuthTag(), encrypted]), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  async get(deploymentId: string): Promise<Record<string, string>> {
    let data: Buffer;
    try {
      data = await readFile(this.file(deploymentId));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw error;
    }
    const decipher = createDecipheriv('aes-256-gcm', this.requireKey(), data.subarray(0, 12));
    decipher.setAAD(Buffer.from(deploymentId));
    decipher.setAuthTag(data.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(data.subarray(28)), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as Record<string, string>;
  }

  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>> {
    return Promise.resolve(Object.fromEntries(names.map((name) => [name, `local-secret://${deploymentId}/${name}`])));
  }

  async delete(deploymentId: string): Promise<void> {
    await rm(this.file(deploymentId), { force: true });
  }

  // App env values (issue 12): not built yet in this adapter.
  putAppEnv(_app: AppRef, _values: Record<string, string>): Promise<void> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }

  getAppEnv(_app: AppRef): Promise<Record<string, string>> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }

  deleteAppEnv(_app: AppRef): Promise<void> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }
}
