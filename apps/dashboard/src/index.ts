import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The page's files: what the API serves under /dashboard, read once (they are small and immutable per release). */
export interface DashboardFile {
  name: string;
  contentType: string;
  body: Buffer;
}

const FILES: readonly [string, string][] = [
  ['index.html', 'text/html; charset=utf-8'],
  ['app.js', 'text/javascript; charset=utf-8'],
  ['style.css', 'text/css; charset=utf-8'],
];

export function loadDashboard(): DashboardFile[] {
  return FILES.map(([name, contentType]) => ({ name, contentType, body: readFileSync(fileURLToPath(new URL(`../public/${name}`, import.meta.url))) }));
}

/**
 * What the page may load and call: its own scripts and styles, the API on the same origin, nothing
 * inline, no frames, no other origin. The token travels in an Authorization header from script, so no
 * cookie or form post can be forged against it.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');
