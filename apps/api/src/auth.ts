import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError, sha256Hex } from '@zepid/core';

/**
 * API tokens. Each token belongs to one org. Only SHA-256 hashes are kept in memory and on disk;
 * a presented token is hashed and compared against every known hash in constant time, so neither
 * the comparison nor an early exit reveals which (or how much of a) token matched.
 */
export interface TokenVerifier {
  /** The org the token belongs to, or null. */
  verify(token: string): string | null;
}

interface TokenEntry {
  orgId: string;
  hash: Buffer;
}

const ORG = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;
const MIN_TOKEN_LENGTH = 16;

export class TokenRegistry implements TokenVerifier {
  private readonly entries: TokenEntry[];

  constructor(entries: { orgId: string; sha256: string }[]) {
    this.entries = entries.map((entry) => ({ orgId: entry.orgId, hash: Buffer.from(entry.sha256, 'hex') }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** The organizations that hold a token (each once). */
  get orgs(): string[] {
    return [...new Set(this.entries.map((entry) => entry.orgId))];
  }

  /** Parses DEPLOY_API_TOKENS: `orgId:token,orgId:token`. The plain tokens are dropped after hashing. */
  static fromSetting(value: string): TokenRegistry {
    const entries: { orgId: string; sha256: string }[] = [];
    for (const [index, pair] of value.split(',').entries()) {
      const trimmed = pair.trim();
      if (trimmed === '') continue;
      const colon = trimmed.indexOf(':');
      const orgId = colon > 0 ? trimmed.slice(0, colon) : '';
      const token = colon > 0 ? trimmed.slice(colon + 1) : '';
      // The message names the pair by position, never echoes the token.
      if (!ORG.test(orgId)) throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: `pair ${index + 1} has no valid orgId before ':'` }]);
      if (token.length < MIN_TOKEN_LENGTH) {
        throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: `pair ${index + 1}: tokens must be at least ${MIN_TOKEN_LENGTH} characters` }]);
      }
      entries.push({ orgId, sha256: sha256Hex(token) });
    }
    if (entries.length === 0) throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: 'has no orgId:token pair' }]);
    return new TokenRegistry(entries);
  }

  verify(token: string): string | null {
    const presented = Buffer.from(sha256Hex(token), 'hex');
    let match: string | null = null;
    for (const entry of this.entries) {
      // No early return: every entry is compared whatever the outcome.
      if (timingSafeEqual(presented, entry.hash) && match === null) match = entry.orgId;
    }
    return match;
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
    const stored = JSON.parse(await readFile(path, 'utf8')) as { orgId: string; sha256: string }[];
    return { registry: new TokenRegistry(stored), newToken: null };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const token = `zpd_${randomBytes(24).toString('base64url')}`;
  const entries = [{ orgId: DEV_ORG, sha256: sha256Hex(token) }];
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
