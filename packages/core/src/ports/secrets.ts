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
}
