import type { AppRef } from '../app.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/**
 * Secret store for a deployment's env variable values: Key Vault in Azure, an encrypted file locally.
 * Values go in here and nowhere else: not the record, not logs, not responses.
 * Leaves out: vault clients, key material, secret versions.
 */
export interface SecretStore extends Lifecycle, HealthReporting {
  put(deploymentId: string, values: Record<string, string>): Promise<void>;
  get(deploymentId: string): Promise<Record<string, string>>;
  /**
   * Where a runtime finds each value without the service reading it: a Key Vault secret URI per
   * name in Azure. Nothing secret is returned.
   */
  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>>;
  delete(deploymentId: string): Promise<void>;
  /**
   * An app's current env variable values (issue 12): what its next deployment runs with when the
   * request sends none, and what an env change edits. Replaces the whole set; an empty set removes it.
   * A deployment still gets its own copy (`put`), so a revision keeps the values it started with.
   */
  putAppEnv(app: AppRef, values: Record<string, string>): Promise<void>;
  /** The app's current values; {} when none. */
  getAppEnv(app: AppRef): Promise<Record<string, string>>;
  /** Removes (and in Key Vault purges where allowed) the app's values; no error when absent. */
  deleteAppEnv(app: AppRef): Promise<void>;
}
