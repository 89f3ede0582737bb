import { createHash, randomBytes } from 'node:crypto';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * A new deployment id: `dep_` + 130 random bits as 26 lowercase base32 characters. Lowercase
 * alphanumerics only, so the id can be used as-is in Azure resource names (`build-<id>`) and URLs.
 */
export function newDeploymentId(): string {
  const bytes = randomBytes(26);
  let id = 'dep_';
  for (const byte of bytes) id += BASE32[byte & 31];
  return id;
}

/** Message id of one attempt; the queue deduplicates a re-publish of the same attempt by it. */
export function messageIdFor(deploymentId: string, attempt: number): string {
  return `${deploymentId}:${attempt}`;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
