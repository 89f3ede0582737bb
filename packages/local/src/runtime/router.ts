import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { StaticSite } from './static-site.ts';
import { STATIC_CACHE_DEFAULT_FILE_KB, STATIC_CACHE_DEFAULT_MB, StaticFileCache } from './static-site.ts';

/** Where an app's traffic goes: an app process's port, or a static site the router serves itself. */
export type RouteTarget = { port: number } | { site: StaticSite };

/**
 * The local router: serves each app at `http://<app>.localhost:<port>/` (by Host header) and at
 * `http://127.0.0.1:<port>/apps/<app>/` for clients that do not resolve *.localhost (the prefix is
 * stripped, so only relative links work there). App processes are proxied to; static sites are
 * answered in process (a process per static site cost ~78 MB each), their small files from memory
 * (`staticCache`: at most `maxBytes` in all, files up to `maxFileBytes`; default 64 MiB and 256 KiB).
 */
export class LocalRouter {
  private readonly routes = new Map<string, RouteTarget>();
  private server: Server | null = null;
  private readonly host: string;
  private readonly port: number;
  /** The static sites' files in memory (undefined when turned off: every file streams from disk). */
  readonly staticCache: StaticFileCache | undefined;

  constructor(options: { host: string; port: number; staticCache?: { maxBytes: number; maxFileBytes: number } }) {
    this.host = options.host;
    this.port = options.port;
    const cache = options.staticCache ?? { maxBytes: STATIC_CACHE_DEFAULT_MB * 1024 * 1024, maxFileBytes: STATIC_CACHE_DEFAULT_FILE_KB * 1024 };
    this.staticCache = cache.maxBytes === 0 ? undefined : new StaticFileCache(cache);
  }

  get listeningPort(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.port;
  }

  set(app: string, target: RouteTarget): void {
    const previous = this.routes.get(app);
    this.routes.set(app, target);
    if ('site' in target) target.site.served = true;
    if (previous !== undefined && previous !== target) this.retire(previous);
  }

  remove(app: string): void {
    const previous = this.routes.get(app);
    this.routes.delete(app);
    if (previous !== undefined) this.retire(previous);
  }

  /** A static site no route serves any more leaves the cache. */
  private retire(target: RouteTarget): void {
    if (!('site' in target)) return;
    const site = target.site;
    for (const other of this.routes.values()) if ('site' in other && other.site === site) return;
    site.served = false;
    this.staticCache?.forget(site);
  }

  target(app: string): RouteTarget | undefined {
    return this.routes.get(app);
  }

  hostUrl(app: string): string {
    return `http://${app}.localhost:${this.listeningPort}/`;
  }

  pathUrl(app: string): string {
    return `http://127.0.0.1:${this.listeningPort}/apps/${app}/`;
  }

  async start(): Promise<void> {
    const server = createServer((request, response) => this.handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => resolve());
    });
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private resolve(request: IncomingMessage): { app: string; path: string } | null {
    const host = (request.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
    const url = request.url ?? '/';
    if (host.endsWith('.localhost')) return { app: host.slice(0, -'.localhost'.length), path: url };
    const match = /^\/apps\/([a-z0-9-]{1,63})(\/.*)?$/.exec(url.split('?')[0] ?? '');
    if (match?.[1] === undefined) return null;
    const query = url.includes('?') ? url.slice(url.indexOf('?')) : '';
    return { app: match[1], path: `${match[2] ?? '/'}${query}` };
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const route = this.resolve(request);
    const target = route === null ? undefined : this.routes.get(route.app);
    if (route === null || target === undefined) {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(route === null ? 'Zepid Deploy local router: use http://<app>.localhost:<port>/ or /apps/<app>/\n' : `No app named ${route.app} is running here\n`);
      return;
    }
    if ('site' in target) {
      target.site.serve(request, response, route.path, this.staticCache);
      return;
    }
    const upstream = httpRequest(
      { host: '127.0.0.1', port: target.port, method: request.method, path: route.path, headers: { ...request.headers, 'x-forwarded-host': request.headers.host ?? '' } },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.on('error', () => {
      if (!response.headersSent) response.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(`App ${route.app} did not answer\n`);
    });
    request.pipe(upstream);
  }
}
