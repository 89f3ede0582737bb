import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ApiEnvSchema } from '../apps/api/src/env.ts';
import { WorkerEnvSchema } from '../apps/worker/src/env.ts';
import { exampleBody } from '../scripts/examples.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(`${root}/${path}`, 'utf8');

describe('repository', () => {
  it('the example request bodies match the sample apps beside them (npm run examples)', () => {
    for (const name of ['static-site', 'node-server']) expect(read(`examples/${name}.json`)).toBe(exampleBody(name));
  });

  it('the README documents every variable the apps read', () => {
    const readme = read('README.md');
    const variables = new Set([...Object.keys(ApiEnvSchema.properties), ...Object.keys(WorkerEnvSchema.properties)]);
    const missing = [...variables].filter((variable) => !readme.includes(`\`${variable}\``));
    expect(missing).toEqual([]);
  });

  it('the README shows the two commands', () => {
    const readme = read('README.md');
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm test');
  });
});
