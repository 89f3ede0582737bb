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
  const at = ID_SCRATCH.write('dep_', 'latin1');
  for (let i = ID_TIME_CHARS - 1; i >= 0; i -= 1) {
    ID_SCRATCH[at + i] = SORTED_BASE32_CODES[ticks & 31] ?? 0;
    ticks = Math.floor(ticks / 32);
  }
  return randomTail(at + ID_TIME_CHARS, ID_RANDOM_CHARS);
}

/**
 * `prefix` + `count` random lowercase base32 characters (5 random bits each, from the pool below),
 * e.g. `randomBase32('evt_', 26)`. The characters are written into one scratch buffer and read out
 * as one flat string: appending them one by one made a chain of `count` intermediate strings (about
 * 1 KB of young-generation garbage per id; a POST /deploy makes two ids: BENCHMARKS.md).
 */
export function randomBase32(prefix: string, count: number): string {
  return randomTail(writePrefix(prefix), count);
}

/**
 * `prefix` + one lowercase base32 character per byte of `bytes` (its low 5 bits), as one flat string
 * (derived, not random, ids: `derivedEventId`).
 */
export function base32Of(prefix: string, bytes: Uint8Array): string {
  return withBase32(writePrefix(prefix), bytes, 0, bytes.length);
}

/** Where ids are put together (one at a time: the process is single-threaded and nothing here awaits). */
const ID_SCRATCH = Buffer.alloc(128);
const BASE32_CODES = Uint8Array.from(BASE32, (char) => char.charCodeAt(0));
const SORTED_BASE32_CODES = Uint8Array.from(SORTED_BASE32, (char) => char.charCodeAt(0));

/** Writes `prefix` (printable ASCII) at the start of the scratch; returns where the characters after it go. */
function writePrefix(prefix: string): number {
  if (!/^[\x20-\x7e]*$/.test(prefix)) throw new Error(`id prefix must be printable ASCII: ${JSON.stringify(prefix)}`);
  return ID_SCRATCH.write(prefix, 'latin1');
}

/** The scratch's first `at` bytes, then `count` random base32 characters, as a string. */
function randomTail(at: number, count: number): string {
  // Reserved first: a refill replaces the pool.
  const from = reserveRandom(count);
  return withBase32(at, randomPool, from, count);
}

/** The scratch's first `at` bytes, then one base32 character per byte of `bytes[from, from + count)` (its low 5 bits), as a string. */
function withBase32(at: number, bytes: Uint8Array, from: number, count: number): string {
  if (at + count > ID_SCRATCH.length) throw new Error(`an id of at most ${ID_SCRATCH.length} characters, not ${at + count}`);
  for (let i = 0; i < count; i += 1) ID_SCRATCH[at + i] = BASE32_CODES[(bytes[from + i] ?? 0) & 31] ?? 0;
  return ID_SCRATCH.toString('latin1', 0, at + count);
}

/** Bytes drawn from the CSPRNG per refill of the pool below (≈ 100 deployment ids, etags and event ids). */
const RANDOM_POOL_BYTES = 4096;
let randomPool = Buffer.alloc(0);
let randomPoolOffset = 0;

/** Takes `size` (≤ RANDOM_POOL_BYTES) unused bytes of the pool, refilling it first when too few are left: their offset in `randomPool`. */
function reserveRandom(size: number): number {
  if (randomPoolOffset + size > randomPool.length) {
    randomPool = randomBytes(RANDOM_POOL_BYTES);
    randomPoolOffset = 0;
  }
  const from = randomPoolOffset;
  randomPoolOffset += size;
  return from;
}

/**
 * `size` bytes from the operating system's CSPRNG (`crypto.randomBytes`), taken from a pool that is
 * refilled 4 KB at a time: each `randomBytes` call costs ~5 µs here whatever its size, and a POST
 * /deploy asked for three or more (its id, etag and event id: ~3 % of its CPU, BENCHMARKS.md). Bytes
 * are handed out once and never reused; Node's own `randomUUID` pools its entropy the same way. The
 * answer is a view into the pool: read it, do not keep or change it (copy it for that).
 */
export function secureRandomBytes(size: number): Buffer {
  if (size > RANDOM_POOL_BYTES) return randomBytes(size);
  const from = reserveRandom(size);
  return randomPool.subarray(from, from + size);
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
