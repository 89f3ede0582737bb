/**
 * How a static site is served, decided once: the local router (packages/local) implements these
 * rules in process, and the generated image runs nginx with the configuration written here. One
 * table of cases (test/static-serving) checks that both give the same answers.
 *
 * Semantics are Cloudflare Pages' (where the service's clients come from):
 * - `/about` is `about`, else `about.html`, else `about/index.html`; `/docs/` is `docs/index.html`.
 * - Not found: the site's `404.html` with status 404 when it has one; otherwise the site is a
 *   single-page app and every unknown path answers `/index.html` with 200 (client-side routing).
 * - Dotfiles and symlinks do not exist (the image deletes symlinks when it is built); a path
 *   climbing above the root is a 400.
 * - `Cache-Control: public, max-age=31536000, immutable` for fingerprinted files (a content hash in
 *   the name: what a bundler emits, so a new build has new names); `no-cache` for everything else
 *   (HTML above all), which browsers revalidate with the ETag (304).
 * - gzip and brotli variants of text files, made once (at switch time locally, at image build time
 *   in the image), served per `Accept-Encoding` (brotli first), with `Vary: Accept-Encoding`.
 * - The site's `_redirects` and `_headers`, in the subset static-rules.ts documents.
 */

export const IMMUTABLE_CACHE_CONTROL = 'public, max-age=31536000, immutable';
export const REVALIDATE_CACHE_CONTROL = 'no-cache';

/** Content types by extension; anything else is application/octet-stream. nginx gets this very table. */
export const STATIC_CONTENT_TYPES: Readonly<Record<string, string>> = {
  html: 'text/html; charset=utf-8',
  htm: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  mjs: 'text/javascript; charset=utf-8',
  json: 'application/json',
  map: 'application/json',
  webmanifest: 'application/manifest+json',
  txt: 'text/plain; charset=utf-8',
  xml: 'application/xml',
  svg: 'image/svg+xml',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  avif: 'image/avif',
  ico: 'image/x-icon',
  woff: 'font/woff',
  woff2: 'font/woff2',
  ttf: 'font/ttf',
  otf: 'font/otf',
  wasm: 'application/wasm',
  pdf: 'application/pdf',
  mp4: 'video/mp4',
  webm: 'video/webm',
  mp3: 'audio/mpeg',
};
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/** Files worth compressing (text; images and fonts other than these are compressed already). */
export const COMPRESSIBLE_EXTENSIONS: readonly string[] = ['html', 'htm', 'css', 'js', 'mjs', 'json', 'map', 'webmanifest', 'txt', 'xml', 'svg', 'wasm', 'ico', 'ttf', 'otf'];
/** Below this a compressed copy saves nothing worth a header. */
export const COMPRESS_MIN_BYTES = 256;

/**
 * A fingerprinted file name: Rollup/Vite's `name-<8 base64url>.ext` (with a digit or a capital in
 * the hash, so `my-homepage.js` is not taken for one), webpack's `name.<8+ hex with a digit>.ext`,
 * or anything under Next's `_next/static/` and SvelteKit's `_app/immutable/`. Written once for both
 * JavaScript and nginx's PCRE.
 */
export const FINGERPRINTED_PATH_PATTERN =
  '(^|/)(_next/static|_app/immutable)/|[.-](?=[A-Za-z0-9_-]{0,7}[A-Z0-9])[A-Za-z0-9_-]{8}\\.[A-Za-z0-9]+$|\\.(?=[0-9a-f]{0,63}[0-9])[0-9a-f]{8,64}\\.[A-Za-z0-9]+$';
const FINGERPRINTED = new RegExp(FINGERPRINTED_PATH_PATTERN);

export function extensionOf(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const dot = name.lastIndexOf('.');
  return dot <= 0 ? '' : name.slice(dot + 1).toLowerCase();
}

export function contentTypeOf(path: string): string {
  return STATIC_CONTENT_TYPES[extensionOf(path)] ?? DEFAULT_CONTENT_TYPE;
}

/** `path` is the file served, relative to the site root with a leading `/`. */
export function cacheControlOf(path: string): string {
  return FINGERPRINTED.test(path) ? IMMUTABLE_CACHE_CONTROL : REVALIDATE_CACHE_CONTROL;
}

export function isCompressible(path: string, size: number): boolean {
  return size >= COMPRESS_MIN_BYTES && COMPRESSIBLE_EXTENSIONS.includes(extensionOf(path));
}

/** Where the image's nginx keeps the site and its run-time files. */
export interface NginxSiteOptions {
  root: string;
  port: number;
  /** Address to listen on; the image listens on every interface, tests on loopback. */
  listen?: string;
  /** A directory nginx's user may write: pid file and temporary files (nginx runs unprivileged). */
  runDir: string;
  /** Modules to load (absolute .so paths), e.g. the brotli static module. */
  modules: readonly string[];
  /**
   * Where the site's `_redirects` / `_headers` rules are, as nginx configuration
   * (rules-http.conf, rules-server.conf, rules-headers.conf: static-rules.ts, written from the
   * built site by staticRulesScript; empty files when the site has none).
   */
  rulesDir: string;
}

/**
 * The whole nginx.conf (not a server block in someone else's): what the image runs is exactly what
 * the table of cases runs. Lines never start with `#`: the Dockerfile writes this file with a RUN
 * whose continuation lines would otherwise be taken for Dockerfile comments.
 */
export function nginxConfig(options: NginxSiteOptions): string {
  const types = Object.entries(STATIC_CONTENT_TYPES).map(([extension, type]) => `    "${type}" ${extension};`);
  const listen = options.listen === undefined ? String(options.port) : `${options.listen}:${options.port}`;
  return [
    ...options.modules.map((module) => `load_module ${module};`),
    'worker_processes 1;',
    `pid ${options.runDir}/nginx.pid;`,
    'error_log stderr warn;',
    'daemon off;',
    'events { worker_connections 1024; }',
    'http {',
    '  types {',
    ...types,
    '  }',
    `  default_type ${DEFAULT_CONTENT_TYPE};`,
    '  access_log off;',
    '  server_tokens off;',
    '  sendfile on;',
    '  keepalive_timeout 65;',
    `  client_body_temp_path ${options.runDir}/client_body;`,
    `  proxy_temp_path ${options.runDir}/proxy;`,
    `  fastcgi_temp_path ${options.runDir}/fastcgi;`,
    `  uwsgi_temp_path ${options.runDir}/uwsgi;`,
    `  scgi_temp_path ${options.runDir}/scgi;`,
    `  include ${options.rulesDir}/rules-http.conf;`,
    '  server {',
    `    listen ${listen};`,
    `    root ${options.root};`,
    // The path asked for, kept for the _headers maps (the 404 page below is a named location, so
    // this is set once per request).
    '    set $zepid_path $uri;',
    '    gzip_static on;',
    '    brotli_static on;',
    '    gzip_vary on;',
    '    etag on;',
    '    if_modified_since off;',
    '    absolute_redirect off;',
    // no-cache unless the site's _headers says otherwise; then the _headers headers.
    '    add_header Cache-Control $zepid_cache_control always;',
    `    include ${options.rulesDir}/rules-headers.conf;`,
    // Any miss, dotfiles included, ends in @notfound: the site's 404.html with 404, or the SPA's index.html.
    '    error_page 404 @notfound_page;',
    // A dotfile reaches @notfound through error_page 418; its `return 404` must still find 404.html.
    '    recursive_error_pages on;',
    '    location / {',
    '      try_files $uri $uri.html $uri/index.html @notfound;',
    '    }',
    // The site's _redirects, one regex location per rule, before any other: rules apply before files.
    // No rule matches a path with a dot segment, so none reaches a dotfile.
    `    include ${options.rulesDir}/rules-server.conf;`,
    // Regex locations match in order: dotfiles first, so `/.well-known/` is never looked up.
    '    location ~ (^|/)\\. {',
    '      error_page 418 = @notfound;',
    '      return 418;',
    '    }',
    '    location ~ /$ {',
    '      try_files ${uri}index.html @notfound;',
    '    }',
    `    location ~ "${FINGERPRINTED_PATH_PATTERN}" {`,
    '      add_header Cache-Control $zepid_cache_control_fingerprinted always;',
    `      include ${options.rulesDir}/rules-headers.conf;`,
    '      try_files $uri $uri.html $uri/index.html @notfound;',
    '    }',
    '    location @notfound {',
    '      if (-f $document_root/404.html) { return 404; }',
    '      try_files /index.html =404;',
    '    }',
    // A named location keeps the 404 status and, unlike a URI, does not run the server level again.
    '    location @notfound_page {',
    '      try_files /404.html =404;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Shell command preparing a site directory for nginx, run once when the image is built: symlinks
 * are deleted (the router never follows one; nginx's `disable_symlinks` would do the same but stops
 * Debian's brotli_static module from serving anything), then `<file>.gz` and `<file>.br` are
 * written beside every compressible file (gzip_static/brotli_static serve them), and everything is
 * made readable by nginx's unprivileged user. Needs find, gzip and brotli.
 */
export function prepareSiteCommand(dir: string): string {
  const names = COMPRESSIBLE_EXTENSIONS.map((extension) => `-name '*.${extension}'`).join(' -o ');
  return [
    `find ${dir} -type l -delete`,
    `find ${dir} -type f \\( ${names} \\) -size +${COMPRESS_MIN_BYTES - 1}c -exec gzip -9 -k -n -f {} \\; -exec brotli -q 11 -k -f {} \\;`,
    `chmod -R a+rX ${dir}`,
  ].join(' && ');
}

/** Debian packages the static image installs: nginx and its brotli static module, and the tools prepareSiteCommand uses. */
export const STATIC_IMAGE_PACKAGES = ['nginx', 'libnginx-mod-http-brotli-static', 'brotli', 'gzip'] as const;
export const STATIC_IMAGE_BASE = 'debian:bookworm-slim';
/** Where the image keeps the nginx rules made from the site's _redirects and _headers. */
export const STATIC_IMAGE_RULES_DIR = '/etc/zepid/rules';
export const DEBIAN_BROTLI_STATIC_MODULE = '/usr/lib/nginx/modules/ngx_http_brotli_static_module.so';

/**
 * The image's last stage for a static site: Debian's nginx (the one the table of cases runs) serving
 * `/site` from the stage named `from`, unprivileged, listening on `port`.
 */
export function staticImageStage(options: { from: string; siteDir: string; rulesDir: string; port: number }): string[] {
  const config = nginxConfig({ root: '/site', port: options.port, runDir: '/tmp/nginx', modules: [DEBIAN_BROTLI_STATIC_MODULE], rulesDir: STATIC_IMAGE_RULES_DIR });
  const configLines = config
    .trimEnd()
    .split('\n')
    .map((line) => `      ${shellQuote(line)} \\`);
  return [
    `FROM ${STATIC_IMAGE_BASE}`,
    `RUN apt-get update && apt-get install -y --no-install-recommends ${STATIC_IMAGE_PACKAGES.join(' ')} && rm -rf /var/lib/apt/lists/* && mkdir -p /etc/zepid && printf '%s\\n' \\`,
    ...configLines,
    '      > /etc/zepid/nginx.conf',
    `COPY --from=${options.from} ${options.siteDir} /site`,
    `COPY --from=${options.from} ${options.rulesDir} ${STATIC_IMAGE_RULES_DIR}`,
    `RUN ${prepareSiteCommand('/site')}`,
    'USER nobody',
    `EXPOSE ${options.port}`,
    'CMD ["sh", "-c", "mkdir -p /tmp/nginx && exec nginx -c /etc/zepid/nginx.conf -e stderr"]',
  ];
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
