import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib, gzip } from 'node:zlib';
import type { StaticRules } from '@zepid/core';
import { cacheControlOf, contentTypeOf, isCompressible, parseStaticRules, REVALIDATE_CACHE_CONTROL, STATIC_RULE_FILES } from '@zepid/core';

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/** A site larger than this is refused at switch time rather than walked for minutes. */
const MAX_FILES = 50_000;

type Encoding = 'br' | 'gzip';

interface SiteFile {
  /** Absolute path of the file as built. */
  path: string;
  size: number;
  hash: string;
  /** Precompressed copies (in the revision's cache dir), when the file is compressible. */
  variants: Partial<Record<Encoding, { path: string; size: number }>>;
  /**
   * The answer headers of a plain 200 of this file, per encoding served ('' for none), made on first
   * use: the file never changes while its revision is open, so neither do they.
   */
  answers?: Partial<Record<Encoding | '', Readonly<Record<string, string>>>>;
}

/** Default bounds of the router's in-memory copy of static files (README: LOCAL_STATIC_CACHE_MB, LOCAL_STATIC_CACHE_FILE_KB). */
export const STATIC_CACHE_DEFAULT_MB = 64;
export const STATIC_CACHE_DEFAULT_FILE_KB = 256;

/**
 * The bytes of small static files (and of their gzip and brotli copies) in memory, least recently
 * served first out, bounded by a total and a per-file size: a file over the per-file size is read
 * from disk for every request. Keyed by the path on disk: a live revision's files never change
 * (revisions are written once, before they go live), and a site's entries are dropped when the
 * router stops serving it. `maxBytes` 0 turns it off.
 */
export class StaticFileCache {
  readonly maxBytes: number;
  readonly maxFileBytes: number;
  private readonly entries = new Map<string, { owner: StaticSite; bytes: Buffer }>();
  private readonly loading = new Map<string, Promise<Buffer>>();
  private total = 0;

  constructor(options: { maxBytes: number; maxFileBytes: number }) {
    if (!Number.isInteger(options.maxBytes) || options.maxBytes < 0) throw new Error(`maxBytes must be a whole number ≥ 0, not ${options.maxBytes}`);
    if (!Number.isInteger(options.maxFileBytes) || options.maxFileBytes < 1) throw new Error(`maxFileBytes must be a whole number ≥ 1, not ${options.maxFileBytes}`);
    this.maxBytes = options.maxBytes;
    this.maxFileBytes = Math.min(options.maxFileBytes, options.maxBytes);
  }

  /** Bytes held and files held (for tests and diagnostics). */
  get usage(): { bytes: number; files: number } {
    return { bytes: this.total, files: this.entries.size };
  }

  /** Whether a file of this size is kept in memory. */
  holds(size: number): boolean {
    return size <= this.maxFileBytes;
  }

  /** The cached bytes, refreshed as most recently used; undefined when not (yet) in memory. */
  get(path: string): Buffer | undefined {
    const entry = this.entries.get(path);
    if (entry === undefined) return undefined;
    this.entries.delete(path);
    this.entries.set(path, entry);
    return entry.bytes;
  }

  /** Reads the file once (concurrent requests share the read) and keeps it when it fits. */
  load(owner: StaticSite, path: string): Promise<Buffer> {
    let pending = this.loading.get(path);
    if (pending === undefined) {
      pending = readFile(path).finally(() => this.loading.delete(path));
      this.loading.set(path, pending);
      void pending.then((bytes) => this.keep(owner, path, bytes), () => undefined);
    }
    return pending;
  }

  /** Drops every file of a site (its revision is no longer served). */
  forget(owner: StaticSite): void {
    for (const [path, entry] of this.entries) {
      if (entry.owner !== owner) continue;
      this.entries.delete(path);
      this.total -= entry.bytes.length;
    }
  }

  private keep(owner: StaticSite, path: string, bytes: Buffer): void {
    if (!this.holds(bytes.length) || this.entries.has(path) || !owner.served) return;
    this.entries.set(path, { owner, bytes });
    this.total += bytes.length;
    for (const [oldest, entry] of this.entries) {
      if (this.total <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.total -= entry.bytes.length;
    }
  }
}

export interface StaticAnswer {
  status: number;
  /** Shared between answers of the same file: never written to. */
  headers: Readonly<Record<string, string>>;
  /** Absent for HEAD, 304 and errors with an inline body. */
  file?: string;
  /** The file's size in bytes, with `file`. */
  size?: number;
  body?: string;
}

/** No _headers headers: shared, never written to. */
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});
/**
 * A request path that normalise() would return unchanged: segments of unreserved characters, none
 * starting with a dot, no query, no percent-escape, no repeated slash.
 */
const PLAIN_PATH = /^(?=\/)(?:\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*\/?$/;

/**
 * A built static site served by the local router itself (no process per site). Opening it walks the
 * output once: dotfiles and symlinks are left out (they do not exist for a client), every file is
 * hashed (the ETag) and every compressible one gets a gzip and a brotli copy in `cacheDir`, keyed by
 * content hash so a restart or another revision of the same files compresses nothing again.
 * Requests are then map lookups. The rules are core's (static-site.ts), shared with the image's nginx.
 */
export class StaticSite {
  readonly root: string;
  private readonly files: ReadonlyMap<string, SiteFile>;
  private readonly redirects: { pattern: RegExp; destination: string; status: number; keepQuery: boolean }[];
  private readonly headerRules: { pattern: RegExp; headers: [string, string][] }[];
  /** Rules of _redirects / _headers left out (outside the supported subset), one line each. */
  readonly ruleWarnings: readonly string[];
  /** Whether a router serves it (its files are cached only then). */
  served = false;
  /** Accept-Encoding values seen → what they accept (browsers send a handful of distinct values). */
  private readonly acceptCache = new Map<string, { br: boolean; gzip: boolean }>();

  private constructor(root: string, files: ReadonlyMap<string, SiteFile>, rules: StaticRules) {
    this.root = root;
    this.files = files;
    this.redirects = rules.redirects.map((rule) => ({ ...rule, pattern: new RegExp(rule.pattern) }));
    this.headerRules = rules.headers.map((rule) => ({ pattern: new RegExp(rule.pattern), headers: rule.headers }));
    this.ruleWarnings = rules.warnings;
  }

  static async open(root: string, cacheDir: string): Promise<StaticSite> {
    const files = new Map<string, SiteFile>();
    await mkdir(cacheDir, { recursive: true });
    const walk = async (dir: string, prefix: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        if (entry.name.startsWith('.')) continue;
        // _redirects and _headers configure the site; they are not part of it (Cloudflare Pages).
        if (prefix === '' && (STATIC_RULE_FILES as readonly string[]).includes(entry.name)) continue;
        const path = join(dir, entry.name);
        const url = `${prefix}/${entry.name}`;
        if (entry.isDirectory()) await walk(path, url);
        else if (entry.isFile()) {
          if (files.size >= MAX_FILES) throw new Error(`the site has more than ${MAX_FILES} files`);
          files.set(url, await describe(path, url, cacheDir));
        }
        // Symlinks, sockets and the like are not part of a site.
      }
    };
    await walk(root, '');
    const read = async (name: string) => {
      const entry = await stat(join(root, name)).catch(() => null);
      return entry?.isFile() === true ? readFile(join(root, name), 'utf8') : null;
    };
    return new StaticSite(root, files, parseStaticRules(await read('_redirects'), await read('_headers')));
  }

  get ruleCounts(): { redirects: number; headers: number } {
    return { redirects: this.redirects.length, headers: this.headerRules.length };
  }

  get fileCount(): number {
    return this.files.size;
  }

  /** The answer to a request, as a value (the router writes it; health checks read the status). */
  answer(method: string, rawUrl: string, headers: IncomingMessage['headers']): StaticAnswer {
    const path = PLAIN_PATH.test(rawUrl) ? rawUrl : normalise(rawUrl);
    if (path === null) return text(400, 'Bad request\n');
    const custom = this.headerRules.length === 0 ? NO_HEADERS : this.customHeaders(path);
    let status = 200;
    const rule = this.redirects.length === 0 ? undefined : this.redirects.find((candidate) => candidate.pattern.test(path));
    const destination = rule?.destination.replace(/\$([1-9])/g, (_match, n: string) => rule.pattern.exec(path)?.[Number(n)] ?? '');
    if (rule !== undefined && destination !== undefined && rule.status !== 200) {
      // A redirect answers any method, as nginx's `return` does.
      const query = rawUrl.includes('?') ? rawUrl.slice(rawUrl.indexOf('?') + 1) : '';
      const location = asciiOnly(`${destination}${rule.keepQuery && query !== '' ? `?${query}` : ''}`);
      return text(rule.status, `Redirecting to ${location}\n`, { location, 'cache-control': REVALIDATE_CACHE_CONTROL, ...custom });
    }
    if (method !== 'GET' && method !== 'HEAD') return text(405, 'Method not allowed\n', { allow: 'GET, HEAD' });
    // A rewrite (200) serves the destination's file as a request for it would find it, else not found.
    const rewritten = destination !== undefined;
    let found = this.lookup(destination ?? path);
    if (found === undefined) {
      // Cloudflare Pages: a site with a 404.html gets it (404); one without is a single-page app.
      const notFound = this.files.get('/404.html');
      const index = this.files.get('/index.html');
      status = notFound === undefined ? 200 : 404;
      if (notFound !== undefined) found = ['/404.html', notFound];
      else if (index !== undefined) found = ['/index.html', index];
    }
    if (found === undefined) return text(404, 'Not found\n');
    const [url, file] = found;
    const encoding = this.chooseEncoding(file, headers['accept-encoding']);
    const variant = encoding === null ? undefined : file.variants[encoding];
    const plain = answerHeaders(url, file, encoding);
    let answer: Readonly<Record<string, string>> = plain;
    // A rewrite's answer revalidates whatever it serves (the image's nginx: the rule's location).
    const revalidate = rewritten && status === 200 && plain['cache-control'] !== REVALIDATE_CACHE_CONTROL;
    if (revalidate || custom !== NO_HEADERS) {
      // The _headers headers come after the service's own (a Cache-Control of theirs replaces ours).
      const { 'content-length': length = '', ...rest } = plain;
      answer = { ...rest, ...(revalidate ? { 'cache-control': REVALIDATE_CACHE_CONTROL } : {}), ...custom, 'content-length': length };
    }
    if (status === 200 && matches(headers['if-none-match'], answer.etag ?? '')) {
      const { 'content-length': _length, ...notModified } = answer;
      return { status: 304, headers: notModified };
    }
    return { status, headers: answer, ...(method === 'GET' ? { file: variant?.path ?? file.path, size: variant?.size ?? file.size } : {}) };
  }

  /**
   * Writes the answer. A file within the cache's per-file size is answered from memory (read once,
   * then kept while it is among the most recently served); a larger one, or any with no cache, is
   * streamed from disk.
   */
  serve(request: IncomingMessage, response: ServerResponse, path: string, cache?: StaticFileCache): void {
    const answer = this.answer(request.method ?? 'GET', path, request.headers);
    if (answer.file === undefined) {
      response.writeHead(answer.status, answer.headers);
      response.end(answer.body);
      return;
    }
    if (cache !== undefined && cache.holds(answer.size ?? Infinity)) {
      const bytes = cache.get(answer.file);
      if (bytes !== undefined) {
        response.writeHead(answer.status, answer.headers);
        response.end(bytes);
        return;
      }
      cache.load(this, answer.file).then(
        (loaded) => {
          response.writeHead(answer.status, answer.headers);
          response.end(loaded);
        },
        () => response.destroy(),
      );
      return;
    }
    response.writeHead(answer.status, answer.headers);
    createReadStream(answer.file)
      .on('error', () => response.destroy())
      .pipe(response);
  }

  /** Brotli first when both are accepted (smaller); `q=0` refuses an encoding. */
  private chooseEncoding(file: SiteFile, header: string | undefined): Encoding | null {
    if (header === undefined || (file.variants.br === undefined && file.variants.gzip === undefined)) return null;
    let accepted = this.acceptCache.get(header);
    if (accepted === undefined) {
      accepted = parseAcceptEncoding(header);
      // Bounded: a client sending a new value with every request only costs the parse.
      if (this.acceptCache.size < 64) this.acceptCache.set(header, accepted);
    }
    if (accepted.br && file.variants.br !== undefined) return 'br';
    if (accepted.gzip && file.variants.gzip !== undefined) return 'gzip';
    return null;
  }

  /** The _headers headers for a request path: per name, the first matching block's value. */
  private customHeaders(path: string): Record<string, string> {
    const headers: Record<string, string> = {};
    for (const rule of this.headerRules) {
      if (!rule.pattern.test(path)) continue;
      for (const [name, value] of rule.headers) {
        const key = name.toLowerCase();
        if (!(key in headers)) headers[key] = value;
      }
    }
    return headers;
  }

  private lookup(path: string): [string, SiteFile] | undefined {
    const candidates = path.endsWith('/') ? [`${path}index.html`] : [path, `${path}.html`, `${path}/index.html`];
    for (const candidate of candidates) {
      const file = this.files.get(candidate);
      if (file !== undefined) return [candidate, file];
    }
    return undefined;
  }
}

/** A Location header is ASCII: anything else is percent-encoded (UTF-8). */
function asciiOnly(value: string): string {
  return value.replace(/[^\x21-\x7e]/g, (char) => encodeURIComponent(char));
}

function text(status: number, body: string, extra: Record<string, string> = {}): StaticAnswer {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), ...extra }, body };
}

async function describe(path: string, url: string, cacheDir: string): Promise<SiteFile> {
  const content = await readFile(path);
  const hash = createHash('sha256').update(content).digest('base64url').slice(0, 22);
  const file: SiteFile = { path, size: content.length, hash, variants: {} };
  if (!isCompressible(url, content.length)) return file;
  for (const [encoding, compress] of [
    ['br', () => brotli(content, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_SIZE_HINT]: content.length } })],
    ['gzip', () => gzipAsync(content, { level: 9 })],
  ] as const) {
    const target = join(cacheDir, `${hash}.${encoding}`);
    try {
      file.variants[encoding] = { path: target, size: (await stat(target)).size };
      continue;
    } catch {
      // Not made yet.
    }
    const compressed = await compress();
    // Written under a temporary name first: a half-written copy must never be served as the file.
    await writeFile(`${target}.tmp`, compressed);
    await rename(`${target}.tmp`, target);
    file.variants[encoding] = { path: target, size: compressed.length };
  }
  return file;
}

/**
 * The decoded path, with `.` and `..` segments resolved; null when it is malformed or climbs above
 * the root (nginx answers those 400 too). Repeated slashes merge, as nginx's merge_slashes does.
 */
function normalise(rawUrl: string): string | null {
  const raw = rawUrl.split('?')[0] ?? '/';
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return null;
  }
  if (!decoded.startsWith('/') || decoded.includes('\0')) return null;
  const segments: string[] = [];
  for (const part of decoded.split('/').slice(1)) {
    if (part === '..') {
      if (segments.pop() === undefined) return null;
    } else if (part !== '.' && part !== '') segments.push(part);
  }
  const trailing = /\/\.{0,2}$/.test(decoded) && segments.length > 0;
  return `/${segments.join('/')}${trailing ? '/' : ''}`;
}

function parseAcceptEncoding(header: string): { br: boolean; gzip: boolean } {
  const accepted = new Set<string>();
  for (const item of header.toLowerCase().split(',')) {
    const [name, ...params] = item.trim().split(';');
    const q = params.map((param) => param.trim()).find((param) => param.startsWith('q='));
    if (name !== undefined && (q === undefined || Number(q.slice(2)) > 0)) accepted.add(name.trim());
  }
  return { br: accepted.has('br'), gzip: accepted.has('gzip') };
}

/** The headers of a plain 200 of `file` (served for the site path `url`) in `encoding`, made once per file and encoding. */
function answerHeaders(url: string, file: SiteFile, encoding: Encoding | null): Readonly<Record<string, string>> {
  const key = encoding ?? '';
  file.answers ??= {};
  const made = file.answers[key];
  if (made !== undefined) return made;
  const headers: Record<string, string> = {
    'content-type': contentTypeOf(url),
    'cache-control': cacheControlOf(url),
    etag: `"${file.hash}${encoding === null ? '' : `-${encoding}`}"`,
  };
  if (Object.keys(file.variants).length > 0) headers.vary = 'Accept-Encoding';
  if (encoding !== null) headers['content-encoding'] = encoding;
  headers['content-length'] = String(encoding === null ? file.size : (file.variants[encoding]?.size ?? file.size));
  file.answers[key] = Object.freeze(headers);
  return file.answers[key];
}

function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((candidate) => {
    const trimmed = candidate.trim();
    return trimmed === '*' || trimmed === etag || trimmed === `W/${etag}`;
  });
}
