/**
 * `_redirects` and `_headers` of a static site (Cloudflare Pages' format, which Netlify shares:
 * https://developers.cloudflare.com/pages/configuration/redirects/ and
 * https://developers.cloudflare.com/pages/configuration/headers/), in a documented subset that the
 * local router (packages/local) and the image's nginx (static-site.ts) apply identically:
 *
 * `_redirects`: one rule a line, `source destination [code]`; `#` starts a comment.
 * - source: a path (`/`, letters, digits, `.`, `_`, `~`, `-`), with at most one `*` (the splat,
 *   any rest of the path) and `:name` placeholders (one whole segment). A splat or placeholder
 *   never matches a segment starting with a dot: a rule cannot reach a dotfile.
 * - destination: a path of the site or an `http(s)://` URL, with `:splat` and the source's
 *   placeholders, and an optional `?query` / `#fragment`.
 * - code: 301, 302 (the default), 303, 307, 308 redirect (the request's query string is kept when
 *   the destination has none); 200 serves the destination path of the site instead (a rewrite: no
 *   query, fragment or URL), looked up as a request for it would be (`about` → `about.html`…), its
 *   unknown paths answered as any other.
 * - The first matching rule wins, and rules apply before files (Cloudflare: "Redirects are always
 *   followed, regardless of whether or not an asset matches the incoming request").
 *
 * `_headers`: a path pattern on a line of its own (same syntax as a source), then indented
 * `Name: value` lines for the responses to the paths it matches (redirects and 404 pages
 * included). Several blocks may match a path; for a header named in several of them the first
 * block's value wins (Cloudflare joins them with a comma; nginx cannot, so neither does the router).
 * `Cache-Control` replaces the service's own; headers that describe the body or the connection
 * (Content-Type, Content-Length, Content-Encoding, ETag, Vary, …) cannot be set; values are
 * printable ASCII without `"`, `\` and `$`.
 *
 * Anything else (Netlify's `!` force, query or country conditions, proxying to a URL, other codes,
 * `! Name` detach, more than MAX_RULES rules, lines over 1,000 characters) is left out with a
 * warning naming the file, the line and why; the site is still served. The two files themselves
 * are never served.
 *
 * The functions below are self-contained (no imports, no module-level values): the generated
 * Dockerfile carries their source and runs them with the build stage's Node over the built site
 * (staticRulesScript), so the image's nginx is configured from the very same parse.
 */

export const STATIC_RULE_FILES = ['_redirects', '_headers'] as const;

export interface RedirectRule {
  line: number;
  /** JavaScript and PCRE alike: anchored, positional groups only. */
  pattern: string;
  /** Destination with `$1`… in place of `:splat` and placeholders. */
  destination: string;
  status: number;
  /** Whether the request's query string is appended (a redirect whose destination has none). */
  keepQuery: boolean;
}

export interface HeaderRule {
  line: number;
  pattern: string;
  headers: [string, string][];
}

export interface StaticRules {
  redirects: RedirectRule[];
  headers: HeaderRule[];
  /** One line per rule left out: `_redirects:3: … (why)`. */
  warnings: string[];
}

/** Parses both files (either may be absent). Never throws: what is not understood is a warning. */
export function parseStaticRules(redirectsText: string | null, headersText: string | null): StaticRules {
  const MAX_RULES = 100;
  const MAX_LINE = 1000;
  const MAX_VALUE = 2000;
  const RESERVED = [
    'content-type', 'content-length', 'content-encoding', 'content-range', 'transfer-encoding', 'connection', 'keep-alive',
    'upgrade', 'te', 'trailer', 'etag', 'last-modified', 'vary', 'date', 'server', 'location', 'accept-ranges',
  ];
  const warnings: string[] = [];
  const redirects: RedirectRule[] = [];
  const headers: HeaderRule[] = [];
  const escape = (text: string) => text.replace(/[.]/g, '\\.');

  /** A source or header path → an anchored pattern and its placeholder names in group order; a string is why not. */
  const compile = (source: string): { pattern: string; names: string[] } | string => {
    if (!source.startsWith('/')) return 'a path must start with /';
    if (source.split('*').length > 2) return 'at most one * per path';
    const names: string[] = [];
    const segments = source.split('/').slice(1);
    const parts: string[] = [];
    for (const segment of segments) {
      if (/^:[A-Za-z]\w*$/.test(segment)) {
        if (segment === ':splat') return ':splat is the name of the * match';
        names.push(segment.slice(1));
        parts.push('([^/.][^/]*)');
        continue;
      }
      if (segment.startsWith('.')) return 'a path segment cannot start with a dot';
      if (!/^[A-Za-z0-9._~*-]*$/.test(segment)) return 'only letters, digits, ., _, ~, -, * and :placeholders are supported in a path';
      parts.push(
        segment
          .split('*')
          .map(escape)
          .join('((?:[^/.][^/]*)?(?:/[^/.][^/]*)*/?)'),
      );
      if (segment.includes('*')) names.push('splat');
    }
    return { pattern: `^/${parts.join('/')}$`, names };
  };

  const lines = (text: string | null) => (text === null ? [] : text.replace(/\r\n?/g, '\n').split('\n'));

  lines(redirectsText).forEach((raw, index) => {
    const at = `_redirects:${index + 1}`;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (raw.length > MAX_LINE) return warnings.push(`${at}: left out (longer than ${MAX_LINE} characters)`);
    if (redirects.length >= MAX_RULES) return warnings.push(`${at}: left out (more than ${MAX_RULES} rules)`);
    const fields = line.split(/\s+/);
    if (fields.length < 2 || fields.length > 3) return warnings.push(`${at}: left out (expected "source destination [code]"; conditions and other fields are not supported)`);
    const [source, target, code = '302'] = fields as [string, string, string?];
    if (!/^(200|301|302|303|307|308)$/.test(code)) return warnings.push(`${at}: left out (code ${code}: only 301, 302, 303, 307, 308 and 200 are supported)`);
    const status = Number(code);
    const compiled = compile(source);
    if (typeof compiled === 'string') return warnings.push(`${at}: left out (source ${source}: ${compiled})`);
    const absolute = /^https?:\/\/[A-Za-z0-9.-]+(:\d+)?(\/|$)/.test(target);
    if (!absolute && !target.startsWith('/')) return warnings.push(`${at}: left out (destination ${target}: a path starting with / or an http(s):// URL)`);
    if (!/^[A-Za-z0-9._~:/?#=&%+,@-]*$/.test(target)) return warnings.push(`${at}: left out (destination ${target}: unsupported characters)`);
    if (status === 200 && (absolute || /[?#]/.test(target))) return warnings.push(`${at}: left out (200 serves a path of this site: no URL, query or fragment)`);
    let unknown: string | null = null;
    const destination = target.replace(/:([A-Za-z]\w*)/g, (match, name: string, offset: number) => {
      // A URL's own `https:` and `:8080` are not placeholders.
      if (absolute && offset < target.indexOf('/', target.indexOf('//') + 2)) return match;
      const group = compiled.names.indexOf(name);
      if (group === -1) {
        unknown = match;
        return match;
      }
      return `$${group + 1}`;
    });
    if (unknown !== null) return warnings.push(`${at}: left out (destination uses ${String(unknown)}, which the source does not define)`);
    if (compiled.names.length > 9) return warnings.push(`${at}: left out (more than 9 placeholders)`);
    if (status === 200 && /(^|\/)\.\.?(\/|$)/.test(destination)) return warnings.push(`${at}: left out (200 to a path with . or ..)`);
    redirects.push({ line: index + 1, pattern: compiled.pattern, destination, status, keepQuery: status !== 200 && !target.includes('?') });
    return undefined;
  });

  let current: HeaderRule | null = null;
  let skipping = false;
  lines(headersText).forEach((raw, index) => {
    const at = `_headers:${index + 1}`;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (raw.length > MAX_LINE) return warnings.push(`${at}: left out (longer than ${MAX_LINE} characters)`);
    if (!/^\s/.test(raw)) {
      current = null;
      skipping = true;
      if (headers.length >= MAX_RULES) return warnings.push(`${at}: left out with its headers (more than ${MAX_RULES} rules)`);
      const compiled = compile(line);
      if (typeof compiled === 'string') return warnings.push(`${at}: left out with its headers (path ${line}: ${compiled})`);
      current = { line: index + 1, pattern: compiled.pattern, headers: [] };
      headers.push(current);
      skipping = false;
      return undefined;
    }
    if (skipping) return undefined;
    if (current === null) return warnings.push(`${at}: left out (a header line before any path)`);
    if (line.startsWith('!')) return warnings.push(`${at}: left out (detaching a header with ! is not supported)`);
    const match = /^([A-Za-z0-9-]+)\s*:\s*(.*)$/.exec(line);
    if (match === null) return warnings.push(`${at}: left out (expected "Name: value")`);
    const [, name = '', value = ''] = match;
    if (RESERVED.includes(name.toLowerCase())) return warnings.push(`${at}: left out (${name} is set by the server)`);
    if (value === '' || value.length > MAX_VALUE || !/^[\x20-\x7e]*$/.test(value) || /["\\$]/.test(value)) {
      return warnings.push(`${at}: left out (the value of ${name} must be 1-${MAX_VALUE} printable ASCII characters without ", \\ and $)`);
    }
    current.headers.push([name, value]);
    return undefined;
  });
  return { redirects, headers: headers.filter((rule) => rule.headers.length > 0), warnings };
}

/** The nginx side of the rules: three files that the generated nginx.conf includes. */
export interface NginxRuleFiles {
  /** http level: maps from the request path to each header's value. */
  http: string;
  /** server level: one regex location per redirect rule. */
  server: string;
  /** In every location that sets headers: the user's headers and Cache-Control. */
  headers: string;
}

/**
 * nginx configuration for parsed rules. The maps read `$zepid_path`, the request's normalised path,
 * which nginxConfig sets at the server level (so a 404 page still matches the path asked for).
 */
export function nginxRuleFiles(rules: StaticRules, defaults: { revalidate: string; immutable: string }): NginxRuleFiles {
  const quote = (text: string) => `"${text}"`;
  // First value per header name (case-insensitive), in file order.
  const names: { name: string; entries: [string, string][] }[] = [];
  for (const rule of rules.headers) {
    for (const [name, value] of rule.headers) {
      let entry = names.find((candidate) => candidate.name.toLowerCase() === name.toLowerCase());
      if (entry === undefined) {
        entry = { name, entries: [] };
        names.push(entry);
      }
      if (!entry.entries.some(([pattern]) => pattern === rule.pattern)) entry.entries.push([rule.pattern, value]);
    }
  }
  const http: string[] = [];
  const headerLines: string[] = [];
  const cacheControl = names.find((entry) => entry.name.toLowerCase() === 'cache-control');
  for (const [variable, fallback] of [
    ['$zepid_cache_control', defaults.revalidate],
    ['$zepid_cache_control_fingerprinted', defaults.immutable],
  ] as const) {
    http.push(`map $zepid_path ${variable} {`, ...(cacheControl?.entries ?? []).map(([pattern, value]) => `  ${quote(`~${pattern}`)} ${quote(value)};`), `  default ${quote(fallback)};`, '}');
  }
  names
    .filter((entry) => entry !== cacheControl)
    .forEach((entry, index) => {
      http.push(`map $zepid_path $zepid_header_${index} {`, ...entry.entries.map(([pattern, value]) => `  ${quote(`~${pattern}`)} ${quote(value)};`), '  default "";', '}');
      headerLines.push(`add_header ${entry.name} $zepid_header_${index} always;`);
    });
  const server: string[] = [];
  for (const rule of rules.redirects) {
    server.push(`location ~ ${quote(rule.pattern)} {`);
    if (rule.status === 200) {
      const target = rule.destination;
      const tries = target.endsWith('/') ? [`${target}index.html`] : [target, `${target}.html`, `${target}/index.html`];
      server.push(`  try_files ${tries.join(' ')} @notfound;`);
    } else {
      server.push(`  return ${rule.status} ${quote(`${rule.destination}${rule.keepQuery ? '$is_args$args' : ''}`)};`);
    }
    server.push('}');
  }
  return { http: `${http.join('\n')}\n`, server: `${server.join('\n')}\n`, headers: `${headerLines.join('\n')}${headerLines.length > 0 ? '\n' : ''}` };
}

/**
 * The build stage's command (Node, no dependencies) that reads `<site>/_redirects` and
 * `<site>/_headers`, prints a warning per rule left out, writes the three include files into
 * `outDir` and removes the two files from the site (they are never served).
 */
export function staticRulesScript(defaults: { revalidate: string; immutable: string }): string {
  const body = [
    parseStaticRules.toString(),
    nginxRuleFiles.toString(),
    "const fs = require('node:fs'); const path = require('node:path');",
    'const [site, out] = process.argv.slice(1);',
    "const read = (name) => { try { return fs.readFileSync(path.join(site, name), 'utf8'); } catch { return null; } };",
    "const rules = parseStaticRules(read('_redirects'), read('_headers'));",
    "for (const warning of rules.warnings) console.warn('static site rules: ' + warning);",
    `const files = nginxRuleFiles(rules, ${JSON.stringify(defaults)});`,
    'fs.mkdirSync(out, { recursive: true });',
    "for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(out, 'rules-' + name + '.conf'), text);",
    "for (const name of ['_redirects', '_headers']) fs.rmSync(path.join(site, name), { force: true });",
    "console.log('static site rules: ' + rules.redirects.length + ' redirects, ' + rules.headers.length + ' header rules');",
  ].join('\n');
  return `eval(${JSON.stringify(body)})`;
}
