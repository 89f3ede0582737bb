import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { DeploymentCreator } from '@zepid/core';
import { ConfigError, sha256Hex } from '@zepid/core';

/**
 * API tokens. Each token belongs to one org. Only SHA-256 hashes are kept in memory and on disk;
 * a presented token is hashed and compared against every known hash in constant time, so neither
 * the comparison nor an early exit reveals which (or how much of a) token matched.
 */
export interface TokenVerifier {
  /** The org the token belongs to, or null. */
  verify(token: string): string | null;
  /** The org and the token's id and name (what deployments record as `createdBy`), or null. */
  identify(token: string): Readonly<TokenIdentity> | null;
}

export interface TokenIdentity extends DeploymentCreator {
  orgId: string;
  /**
   * The token's SHA-256 in hex (never the token): what the rate limiter counts requests by, so a
   * request's token is hashed once. Absent from verifiers that do not hash (tests' own).
   */
  key?: string;
}

interface TokenEntry {
  orgId: string;
  name: string | null;
  hash: Buffer;
  /** What `identify` answers for this token: made once, frozen (requests share it). */
  identity: Readonly<TokenIdentity>;
}

const ORG = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;
/** A token's optional name in DEPLOY_API_TOKENS (`orgId/name:token`): shown as who started a deployment. */
const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const MIN_TOKEN_LENGTH = 16;

/** A token's id: `tok_` + 12 hex characters of its SHA-256, which is all the service keeps of it. */
export function tokenIdOf(sha256: Buffer | string): string {
  return `tok_${(typeof sha256 === 'string' ? sha256 : sha256.toString('hex')).slice(0, 12)}`;
}

export class TokenRegistry implements TokenVerifier {
  private readonly entries: TokenEntry[];

  constructor(entries: { orgId: string; sha256: string; name?: string | null }[]) {
    this.entries = entries.map((entry) => {
      const hash = Buffer.from(entry.sha256, 'hex');
      const name = entry.name ?? null;
      return { orgId: entry.orgId, name, hash, identity: Object.freeze({ orgId: entry.orgId, tokenId: tokenIdOf(hash), tokenName: name, key: hash.toString('hex') }) };
    });
  }

  get size(): number {
    return this.entries.length;
  }

  /** The organizations that hold a token (each once). */
  get orgs(): string[] {
    return [...new Set(this.entries.map((entry) => entry.orgId))];
  }

  /**
   * Parses DEPLOY_API_TOKENS: `orgId:token,orgId/name:token`. The plain tokens are dropped after
   * hashing. The optional name says whose token it is (deployments show it as who started them).
   */
  static fromSetting(value: string): TokenRegistry {
    const entries: { orgId: string; sha256: string; name: string | null }[] = [];
    for (const [index, pair] of value.split(',').entries()) {
      const trimmed = pair.trim();
      if (trimmed === '') continue;
      const colon = trimmed.indexOf(':');
      const owner = colon > 0 ? trimmed.slice(0, colon) : '';
      const token = colon > 0 ? trimmed.slice(colon + 1) : '';
      const slash = owner.indexOf('/');
      const orgId = slash < 0 ? owner : owner.slice(0, slash);
      const name = slash < 0 ? null : owner.slice(slash + 1);
      // The message names the pair by position, never echoes the token.
      if (!ORG.test(orgId)) throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: `pair ${index + 1} has no valid orgId before ':'` }]);
      if (name !== null && !TOKEN_NAME.test(name)) {
        throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: `pair ${index + 1}: the name after '/' must be 1 to 64 letters, digits, '.', '_', '@' or '-'` }]);
      }
      if (token.length < MIN_TOKEN_LENGTH) {
        throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: `pair ${index + 1}: tokens must be at least ${MIN_TOKEN_LENGTH} characters` }]);
      }
      entries.push({ orgId, name, sha256: sha256Hex(token) });
    }
    if (entries.length === 0) throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: 'has no orgId:token pair' }]);
    return new TokenRegistry(entries);
  }

  verify(token: string): string | null {
    return this.identify(token)?.orgId ?? null;
  }

  identify(token: string): Readonly<TokenIdentity> | null {
    const presented = hash('sha256', token, 'buffer');
    let match: TokenEntry | null = null;
    for (const entry of this.entries) {
      // No early return: every entry is compared whatever the outcome.
      if (timingSafeEqual(presented, entry.hash) && match === null) match = entry;
    }
    return match === null ? null : match.identity;
  }
}

export const DEV_ORG = 'local';

/**
 * Local mode without DEPLOY_API_TOKENS: on first start, one token for org `local` is generated,
 * only its hash is stored (in `<DATA_DIR>/api-tokens.json`), and the token is returned once so the
 * server can print it. Later starts load the hash and return no token.
 */
export async function loadOrCreateDevToken(path: string): Promise<{ registry: TokenRegistry; newToken: string | null }> {
  try {
    const stored = JSON.parse(await readFile(path, 'utf8')) as { orgId: string; sha256: string; name?: string }[];
    return { registry: new TokenRegistry(stored), newToken: null };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const token = `zpd_${randomBytes(24).toString('base64url')}`;
  const entries = [{ orgId: DEV_ORG, name: 'dev', sha256: sha256Hex(token) }];
  await mkdir(dirname(path), { recursive: true });
  try {
    await writeFile(path, `${JSON.stringify(entries, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    // Another process created it first: use theirs, print nothing.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateDevToken(path);
    throw error;
  }
  return { registry: new TokenRegistry(entries), newToken: token };
}
