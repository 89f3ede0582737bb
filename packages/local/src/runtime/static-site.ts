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
}

export interface StaticAnswer {
  status: number;
  headers: Record<string, string>;
  /** Absent for HEAD, 304 and errors with an inline body. */
  file?: string;
  body?: string;
}

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
    const path = normalise(rawUrl);
    if (path === null) return text(400, 'Bad request\n');
    const custom = this.customHeaders(path);
    let status = 200;
    const rule = this.redirects.find((candidate) => candidate.pattern.test(path));
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
    const encoding = chooseEncoding(file, headers['accept-encoding']);
    const variant = encoding === null ? undefined : file.variants[encoding];
    const etag = `"${file.hash}${encoding === null ? '' : `-${encoding}`}"`;
    const answer: Record<string, string> = {
      'content-type': contentTypeOf(url),
      // A rewrite's answer revalidates whatever it serves (the image's nginx: the rule's location).
      'cache-control': rewritten && status === 200 ? REVALIDATE_CACHE_CONTROL : cacheControlOf(url),
      etag,
      ...custom,
    };
    if (Object.keys(file.variants).length > 0) answer.vary = 'Accept-Encoding';
    if (encoding !== null) answer['content-encoding'] = encoding;
    if (status === 200 && matches(headers['if-none-match'], etag)) return { status: 304, headers: answer };
    answer['content-length'] = String(variant?.size ?? file.size);
    return { status, headers: answer, ...(method === 'GET' ? { file: variant?.path ?? file.path } : {}) };
  }

  serve(request: IncomingMessage, response: ServerResponse, path: string): void {
    const answer = this.answer(request.method ?? 'GET', path, request.headers);
    response.writeHead(answer.status, answer.headers);
    if (answer.file === undefined) {
      response.end(answer.body);
      return;
    }
    createReadStream(answer.file)
      .on('error', () => response.destroy())
      .pipe(response);
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

/** Brotli first when both are accepted (smaller); `q=0` refuses an encoding. */
function chooseEncoding(file: SiteFile, header: string | undefined): Encoding | null {
  if (header === undefined) return null;
  const accepted = new Set<string>();
  for (const item of header.toLowerCase().split(',')) {
    const [name, ...params] = item.trim().split(';');
    const q = params.map((param) => param.trim()).find((param) => param.startsWith('q='));
    if (name !== undefined && (q === undefined || Number(q.slice(2)) > 0)) accepted.add(name.trim());
  }
  if (accepted.has('br') && file.variants.br !== undefined) return 'br';
  if (accepted.has('gzip') && file.variants.gzip !== undefined) return 'gzip';
  return null;
}

function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((candidate) => {
    const trimmed = candidate.trim();
    return trimmed === '*' || trimmed === etag || trimmed === `W/${etag}`;
  });
}
