import type { TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import { ConfigError } from '@zepid/core';
import { vaultCode, vaultStatus } from './errors.ts';

/**
 * The service's own settings (connection strings and the like) from the environment or, failing that,
 * from a Key Vault secret, so production can keep them out of the Container App's configuration.
 * The environment wins: a value set there is never looked up. A vault that cannot be read is an
 * error even for an optional setting, because "absent" and "unreadable" must not look the same.
 */

export interface SettingSource {
  /** Environment variable, e.g. AZURE_SERVICE_BUS_CONNECTION_STRING. */
  variable: string;
  /** Key Vault secret name, e.g. service-bus-connection-string. */
  secret: string;
  required: boolean;
}

/** What the reader needs of a vault; `SecretClient` is one. */
export interface SecretReader {
  getSecret(name: string): Promise<{ value?: string | undefined }>;
}

export type ResolvedSettings<S extends readonly SettingSource[]> = { [K in S[number]['variable']]: string | undefined };

/** A reader for `vaultUrl`, authenticating with `credential` (managed identity in Azure). */
export function keyVaultSecretReader(options: { vaultUrl: string; credential: TokenCredential; verifyChallengeResource?: boolean }): SecretReader {
  return new SecretClient(options.vaultUrl, options.credential, {
    disableChallengeResourceVerification: options.verifyChallengeResource === false,
  });
}

type Lookup = { value: string } | { missing: string } | { unreadable: string };

async function lookUp(vault: SecretReader | null, secret: string): Promise<Lookup> {
  if (vault === null) return { missing: `no Key Vault is configured to read secret "${secret}" from` };
  try {
    // Trimmed like environment values: a secret uploaded from a file often ends in a newline.
    const value = (await vault.getSecret(secret)).value?.trim();
    return value === undefined || value === '' ? { missing: `Key Vault secret "${secret}" is empty` } : { value };
  } catch (error) {
    const status = vaultStatus(error);
    if (status === 404) return { missing: `Key Vault has no secret "${secret}"` };
    const reason = [status === undefined ? 'no answer' : `HTTP ${status}`, vaultCode(error)].filter(Boolean).join(' ');
    return { unreadable: `Key Vault secret "${secret}" could not be read (${reason})` };
  }
}

/**
 * Resolves each setting; throws one ConfigError naming every required setting found nowhere (with
 * the variable and the secret it looked for) or whose secret could not be read.
 */
export async function resolveSettings<const S extends readonly SettingSource[]>(
  env: Readonly<Record<string, string | undefined>>,
  sources: S,
  vault: SecretReader | null,
): Promise<ResolvedSettings<S>> {
  const resolved: Record<string, string | undefined> = {};
  const problems: { variable: string; message: string }[] = [];
  await Promise.all(
    sources.map(async (source) => {
      const fromEnv = env[source.variable]?.trim();
      if (fromEnv !== undefined && fromEnv !== '') {
        resolved[source.variable] = fromEnv;
        return;
      }
      const found = await lookUp(vault, source.secret);
      if ('unreadable' in found) {
        problems.push({ variable: source.variable, message: `is not set, and ${found.unreadable}` });
        return;
      }
      if ('value' in found) resolved[source.variable] = found.value;
      else if (source.required) problems.push({ variable: source.variable, message: `is not set, and ${found.missing}` });
      else resolved[source.variable] = undefined;
    }),
  );
  if (problems.length > 0) {
    const order = sources.map((source) => source.variable);
    throw new ConfigError(problems.sort((a, b) => order.indexOf(a.variable) - order.indexOf(b.variable)));
  }
  return resolved as ResolvedSettings<S>;
}
