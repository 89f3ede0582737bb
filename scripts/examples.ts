/**
 * `npm run examples`: writes the request bodies in examples/*.json from the sample apps beside them,
 * so `curl -d @examples/static-site.json` deploys exactly what is in examples/static-site/.
 * `--check` fails when a body is out of date (the test suite runs it).
 */
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));

/** Request bodies: the sample's files plus what the README's walk-through shows. */
const bodies: Record<string, Record<string, unknown>> = {
  'static-site': { projectId: 'static-site', organizationId: 'local', userId: 'you', projectName: 'Static site', environment: 'development' },
  'node-server': {
    projectId: 'node-server',
    organizationId: 'local',
    userId: 'you',
    projectName: 'Node server',
    environment: 'development',
    envVariables: { GREETING: 'Hello from an env variable' },
  },
};

function filesOf(dir: string): { path: string; content: string }[] {
  const out: { path: string; content: string }[] = [];
  const walk = (current: string) => {
    for (const name of readdirSync(current).sort()) {
      const path = join(current, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.push({ path: relative(dir, path).split('\\').join('/'), content: readFileSync(path, 'utf8') });
    }
  };
  walk(dir);
  return out;
}

export function exampleBody(name: string): string {
  const base = bodies[name];
  if (base === undefined) throw new Error(`no example ${name}`);
  return `${JSON.stringify({ ...base, files: filesOf(join(examples, name)) }, null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const name of Object.keys(bodies)) {
    const path = join(examples, `${name}.json`);
    const body = exampleBody(name);
    const current = (() => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return '';
      }
    })();
    if (current === body) continue;
    if (check) {
      console.error(`${path} is out of date: run npm run examples`);
      stale += 1;
    } else {
      writeFileSync(path, body);
      console.log(`wrote ${path}`);
    }
  }
  process.exitCode = stale > 0 ? 1 : 0;
}
