import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Checks the credentials the SDK presents: shared access signatures (connection strings, on the
 * `$cbs` put-token and in the ATOM `Authorization` header) and bearer tokens (TokenCredential).
 * A SAS is `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64 HMAC-SHA256 of
 * "sr\nse">&se=<unix expiry>&skn=<key name>`, fields in any order.
 */
export interface CredentialPolicy {
  /** Shared access key name → key, as in the namespace's SAS policies. */
  sharedAccessKeys: Record<string, string>;
  /** Bearer tokens (from a TokenCredential) that are accepted; none by default. */
  acceptedTokens: readonly string[];
}

export type AuthorizationResult = { ok: true } | { ok: false; reason: string };

function parseSas(token: string): Map<string, string> | null {
  const prefix = 'SharedAccessSignature ';
  if (!token.startsWith(prefix)) return null;
  const fields = new Map<string, string>();
  for (const part of token.slice(prefix.length).split('&')) {
    const separator = part.indexOf('=');
    if (separator > 0) fields.set(part.slice(0, separator), part.slice(separator + 1));
  }
  return fields;
}

/** Validates a SAS token; the reason never repeats the token or the key. */
export function checkSharedAccessSignature(token: string, policy: CredentialPolicy, now: number): AuthorizationResult {
  const fields = parseSas(token);
  const resource = fields?.get('sr');
  const signature = fields?.get('sig');
  const expiry = fields?.get('se');
  const keyName = fields?.get('skn');
  if (fields === null || resource === undefined || signature === undefined || expiry === undefined || keyName === undefined) {
    return { ok: false, reason: 'InvalidSignature: The token is not a well-formed shared access signature.' };
  }
  const key = policy.sharedAccessKeys[decodeURIComponent(keyName)];
  if (key === undefined) return { ok: false, reason: `InvalidSignature: The shared access key '${decodeURIComponent(keyName)}' is not known.` };
  if (Number(expiry) * 1000 <= now) return { ok: false, reason: 'ExpiredToken: The token is expired.' };
  const expected = Buffer.from(encodeURIComponent(createHmac('sha256', key).update(`${resource}\n${expiry}`).digest('base64')));
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
    return { ok: false, reason: 'InvalidSignature: The token has an invalid signature.' };
  }
  return { ok: true };
}

export function checkBearerToken(token: string, policy: CredentialPolicy): AuthorizationResult {
  return policy.acceptedTokens.includes(token)
    ? { ok: true }
    : { ok: false, reason: 'InvalidToken: The token is not valid for this namespace.' };
}

/** The resource a SAS covers, as an entity path ('' for the whole namespace). */
export function sasResourcePath(token: string): string | null {
  const resource = parseSas(token)?.get('sr');
  return resource === undefined ? null : entityPathOf(decodeURIComponent(resource));
}

/** `sb://host:port/queue/$management` → `queue/$management`; lower case, as entity names are. */
export function entityPathOf(audience: string): string {
  const withoutScheme = audience.replace(/^[a-z]+:\/\//i, '');
  const slash = withoutScheme.indexOf('/');
  const path = slash < 0 ? '' : withoutScheme.slice(slash + 1);
  return path.split('?')[0]!.replace(/\/+$/, '').toLowerCase();
}

/** Whether a claim for `claimPath` covers the entity at `address` (the claim's path or anything below it). */
export function claimCovers(claimPath: string, address: string): boolean {
  const target = address.toLowerCase();
  return claimPath === '' || target === claimPath || target.startsWith(`${claimPath}/`);
}
