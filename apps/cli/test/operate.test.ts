import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appName } from '@zepid/core';
import type { Harness } from '../../api/test/harness.ts';
import { completeDeployment, createHarness, TOKENS } from '../../api/test/harness.ts';
import { main } from '../src/main.ts';

/**
 * `zepid ls`, `rollback`, `env` and `rm` against the real API (its routes, SQLite store and file
 * secrets, listening on loopback). No worker runs: the test writes what a worker would (a completed
 * deployment) through the store, as the API's own tests do.
 */

const STATIC_SITE = fileURLToPath(new URL('../../../examples/static-site', import.meta.url));
const ORG = 'org_456';

describe('zepid app commands against the API', () => {
  let h: Harness;
  let apiUrl: string;
  let finishAt = Date.parse('2031-01-01T00:00:00Z');

  beforeAll(async () => {
    h = await createHarness();
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    apiUrl = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await h.close();
  });

  const zepid = async (args: string[], confirm?: (question: string) => Promise<string>) => {
    let stdout = '';
    let stderr = '';
    const io = {
      stdout: { write: (text: string) => ((stdout += text), true), isTTY: false },
      stderr: { write: (text: string) => ((stderr += text), true), isTTY: false },
    };
    const code = await main(args, { io, env: { ZEPID_API_URL: apiUrl, ZEPID_TOKEN: TOKENS[ORG], CI: 'true' }, confirm });
    return { code, stdout, stderr };
  };
  const deployed = async (project: string, envVars: string[] = []) => {
    const run = await zepid(['deploy', STATIC_SITE, '--project', project, '--detach', ...envVars.flatMap((pair) => ['--env-var', pair])]);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    expect(id).toMatch(/^dep_/);
    finishAt += 1000;
    await completeDeployment(h.adapters, ORG, id, new Date(finishAt));
    return id;
  };

  it('ls lists the apps with status, URL and live deployment; open prints an app\'s URL', async () => {
    const id = await deployed('cli-ls');
    const name = appName(ORG, 'cli-ls', 'development');
    const text = await zepid(['ls']);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`${name}  live  http://${id}.localhost  ${id}`);
    const json = await zepid(['ls', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ apps: expect.arrayContaining([expect.objectContaining({ appName: name, status: 'live', liveDeploymentId: id })]) as unknown });
    const opened = await zepid(['open', name]);
    expect(opened.stdout.trim()).toBe(`http://${id}.localhost`);
  });

  it('env ls shows names only; env set restarts the live image (config deployment); env rm removes', async () => {
    const live = await deployed('cli-env', ['GREETING=cli-secret-hello']);
    const listed = await zepid(['env', 'ls', '--project', 'cli-env']);
    expect(listed.code).toBe(0);
    expect(listed.stdout.trim()).toBe('GREETING');
    expect(listed.stdout).not.toContain('cli-secret-hello');

    const set = await zepid(['env', 'set', '--project', 'cli-env', 'GREETING=cli-secret-hola', 'OTHER=x', '--json']);
    expect(set.code, set.stderr).toBe(0);
    const answer = JSON.parse(set.stdout) as { deploymentId: string; kind: string; variables: { name: string }[] };
    expect(answer).toMatchObject({ kind: 'config', rebuild: false });
    expect(answer.variables.map((variable) => variable.name)).toEqual(['GREETING', 'OTHER']);
    expect(set.stdout).not.toContain('cli-secret-hola');
    expect(await h.adapters.store.get({ orgId: ORG, deploymentId: answer.deploymentId })).toMatchObject({ kind: 'config', imageOf: live });
    expect(await h.adapters.secrets.get(answer.deploymentId)).toEqual({ GREETING: 'cli-secret-hola', OTHER: 'x' });

    const removed = await zepid(['env', 'rm', '--project', 'cli-env', 'OTHER']);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toMatch(/changed OTHER\); restarting the live image with them in dep_\w+, without building/);
    expect((await zepid(['env', 'ls', '--project', 'cli-env'])).stdout.trim()).toBe('GREETING');
    const missing = await zepid(['env', 'ls', '--project', 'cli-never']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('NOT_FOUND');
  });

  it('rollback puts an earlier deployment back (kind rollback), --snapshot with its own env values; a queued one is refused', async () => {
    const v1 = await deployed('cli-rb', ['GREETING=one']);
    await deployed('cli-rb', ['GREETING=two']);
    const run = await zepid(['rollback', v1]);
    expect(run.code, run.stderr).toBe(0);
    const rollbackId = /: (dep_\w+)$/.exec(run.stdout.trim())?.[1] ?? '';
    expect(run.stdout).toContain(`rolling back to ${v1}`);
    expect(await h.adapters.store.get({ orgId: ORG, deploymentId: rollbackId })).toMatchObject({ kind: 'rollback', rollbackOf: v1, imageOf: v1 });
    expect(await h.adapters.secrets.get(rollbackId)).toEqual({ GREETING: 'two' });
    const snapshot = JSON.parse((await zepid(['rollback', v1, '--snapshot', '--json'])).stdout) as { deploymentId: string; kind: string };
    expect(snapshot.kind).toBe('rollback');
    expect(await h.adapters.secrets.get(snapshot.deploymentId)).toEqual({ GREETING: 'one' });
    const refused = await zepid(['rollback', rollbackId]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('INVALID_STATE');
  });

  it('rm asks for the project id (or takes --yes), then the apps are deleting', async () => {
    await deployed('cli-rm');
    const declined = await zepid(['rm', 'cli-rm'], () => Promise.resolve('no'));
    expect(declined.code).toBe(2);
    expect((await h.adapters.store.getApp(ORG, appName(ORG, 'cli-rm', 'development')))?.deletingSince ?? null).toBeNull();
    const confirmed = await zepid(['rm', 'cli-rm'], () => Promise.resolve('cli-rm'));
    expect(confirmed.code, confirmed.stderr).toBe(0);
    expect(confirmed.stdout).toBe('deleting cli-rm\n');
    const again = await zepid(['rm', 'cli-rm', '--env', 'development', '--yes', '--json']);
    expect(JSON.parse(again.stdout)).toEqual({ projectId: 'cli-rm', environment: 'development', apps: [appName(ORG, 'cli-rm', 'development')], status: 'deleting' });
    expect((await zepid(['ls'])).stdout).toMatch(/cli-rm-\w+-development {2}deleting/);
    const none = await zepid(['rm', 'cli-nothing', '--yes']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('NOT_FOUND');
  });
});
