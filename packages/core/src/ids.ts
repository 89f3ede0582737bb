import { createHash, randomBytes } from 'node:crypto';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
/**
 * The same 32 characters in byte order ('2' < … < '7' < 'a' < … < 'z'): a number written with them
 * sorts as text the way it sorts as a number, which the time prefix below needs (SQLite compares
 * TEXT keys bytewise).
 */
const SORTED_BASE32 = '234567abcdefghijklmnopqrstuvwxyz';

/** Characters of the time prefix: 6 × 5 = 30 bits. */
export const ID_TIME_CHARS = 6;
/** Random characters after it: 20 × 5 = 100 bits (the design asks for ≥ 96). */
export const ID_RANDOM_CHARS = 20;
/** The prefix counts 1/64 s (15.6 ms) ticks: 30 bits of them wrap every ~194 days. */
const TICKS_PER_SECOND = 64;
const TIME_MODULUS = 2 ** (5 * ID_TIME_CHARS);

/**
 * A new deployment id: `dep_` + 26 lowercase base32 characters — a 30-bit time prefix (1/64 s ticks,
 * wrapping every ~194 days) then 100 random bits. Lowercase alphanumerics only, so the id can be
 * used as-is in Azure resource names (`build-<id>`) and URLs.
 *
 * Why a time prefix: the id is the key of several B-tree indexes (the record, its job's message id,
 * its source manifest). Random keys land each insert on a different leaf page, so every POST dirtied
 * a page of each index and a group commit of fifty POSTs wrote hundreds of pages; ids created close
 * together now land on the same rightmost pages (BENCHMARKS.md: database writes per POST). The
 * prefix is for locality only: it wraps, so ids are not a sort key (lists sort by createdAt), and
 * it tells when a deployment was created, which its status says anyway. Guessing an id still means
 * guessing 100 random bits.
 */
export function newDeploymentId(now: number = Date.now()): string {
  let ticks = Math.floor((now * TICKS_PER_SECOND) / 1000) % TIME_MODULUS;
  let prefix = '';
  for (let i = 0; i < ID_TIME_CHARS; i += 1) {
    prefix = SORTED_BASE32[ticks & 31] + prefix;
    ticks = Math.floor(ticks / 32);
  }
  const bytes = secureRandomBytes(ID_RANDOM_CHARS);
  let id = `dep_${prefix}`;
  for (const byte of bytes) id += BASE32[byte & 31];
  return id;
}

/** Bytes drawn from the CSPRNG per refill of the pool below (≈ 100 deployment ids, etags and event ids). */
const RANDOM_POOL_BYTES = 4096;
let randomPool = Buffer.alloc(0);
let randomPoolOffset = 0;

/**
 * `size` bytes from the operating system's CSPRNG (`crypto.randomBytes`), taken from a pool that is
 * refilled 4 KB at a time: each `randomBytes` call costs ~5 µs here whatever its size, and a POST
 * /deploy asked for three or more (its id, etag and event id: ~3 % of its CPU, BENCHMARKS.md). Bytes
 * are handed out once and never reused; Node's own `randomUUID` pools its entropy the same way. The
 * answer is a view into the pool: read it, do not keep or change it (copy it for that).
 */
export function secureRandomBytes(size: number): Buffer {
  if (size > RANDOM_POOL_BYTES) return randomBytes(size);
  if (randomPoolOffset + size > randomPool.length) {
    randomPool = randomBytes(RANDOM_POOL_BYTES);
    randomPoolOffset = 0;
  }
  const bytes = randomPool.subarray(randomPoolOffset, randomPoolOffset + size);
  randomPoolOffset += size;
  return bytes;
}

/**
 * `compute(key)` remembered for the last few thousand keys: for pure functions of a tenant's names
 * (hashes of an org or project) that every request computes again.
 */
export function memoized(compute: (key: string) => string, maxEntries = 4096): (key: string) => string {
  const known = new Map<string, string>();
  return (key) => {
    let value = known.get(key);
    if (value === undefined) {
      value = compute(key);
      // Forget everything at the cap: simpler than an LRU, and the working set refills at once.
      if (known.size >= maxEntries) known.clear();
      known.set(key, value);
    }
    return value;
  };
}

/** Message id of one attempt; the queue deduplicates a re-publish of the same attempt by it. */
export function messageIdFor(deploymentId: string, attempt: number): string {
  return `${deploymentId}:${attempt}`;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
