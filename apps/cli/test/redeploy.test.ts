import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentRecord, StepName } from '@zepid/core';
import { apply, STEPS } from '@zepid/core';
import type { Harness } from '../../api/test/harness.ts';
import { completeDeployment, createHarness, TOKENS } from '../../api/test/harness.ts';
import { main } from '../src/main.ts';

/**
 * `zepid redeploy`, and how `zepid` shows skipped steps, against the real API (routes, SQLite store,
 * event stream) on loopback. No worker runs here: the test writes what the worker writes for a run
 * (core's state machine events), as operate.test.ts does; the e2e (test/e2e/cli.test.ts) runs a real one.
 */

const STATIC_SITE = fileURLToPath(new URL('../../../examples/static-site', import.meta.url));
const ORG = 'org_456';

describe('zepid redeploy, and skipped steps in the progress output', () => {
  let h: Harness;
  let apiUrl: string;
  // In the past: the event stream of an ended deployment waits for its final log lines until a while after it finished.
  let finishAt = Date.now() - 600_000;

  beforeAll(async () => {
    h = await createHarness();
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    apiUrl = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await h.close();
  });

  const zepid = async (args: string[], tty = false) => {
    let stdout = '';
    let stderr = '';
    const io = {
      stdout: { write: (text: string) => ((stdout += text), true), isTTY: tty },
      stderr: { write: (text: string) => ((stderr += text), true), isTTY: tty },
    };
    const code = await main(args, { io, env: { ZEPID_API_URL: apiUrl, ZEPID_TOKEN: TOKENS[ORG], CI: 'true' } });
    return { code, stdout, stderr };
  };
  const deployed = async (project: string) => {
    const run = await zepid(['deploy', STATIC_SITE, '--project', project, '--detach']);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    finishAt += 1000;
    await completeDeployment(h.adapters, ORG, id, new Date(finishAt));
    return id;
  };
  /** What the worker writes for a rollback or config deployment: validate runs, sync, sandbox and build are skipped, deploy and cleanup run. */
  const runWithoutBuild = async (id: string): Promise<DeploymentRecord> => {
    const stored = await h.adapters.store.get({ orgId: ORG, deploymentId: id });
    if (stored === null) throw new Error(`no record ${id}`);
    finishAt += 1000;
    const at = new Date(finishAt);
    let record = apply(stored, { type: 'attempt_started' }, at);
    const skipped: StepName[] = ['sync', 'sandbox', 'build'];
    for (const step of STEPS) {
      if (skipped.includes(step)) record = apply(record, { type: 'step_skipped', step, output: {} }, at);
      else {
        record = apply(record, { type: 'step_started', step }, at);
        record = apply(record, { type: 'step_completed', step, output: {} }, at);
      }
    }
    record = apply(record, { type: 'completed', result: { image: `img-${id}`, revision: `rev-${id}`, url: `http://${id}.localhost` } }, at);
    return h.adapters.store.replace(record);
  };

  it('redeploy asks the service to build the deployment\'s source again; --detach prints the new id, --json the accepted event', async () => {
    const v1 = await deployed('cli-redeploy');
    const run = await zepid(['redeploy', v1, '--detach']);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    expect(id).toMatch(/^dep_[a-z2-7]{26}$/);
    expect(id).not.toBe(v1);
    expect(run.stderr).toContain(`redeploying ${v1}: its source is built again → ${id}`);
    // The real endpoint made it: a build of v1's source, started by this token.
    const status = await zepid(['status', id, '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ kind: 'build', redeployOf: v1, status: 'queued', createdBy: { tokenId: expect.stringMatching(/^tok_[0-9a-f]{12}$/) as unknown } });

    // The text form says what it is and who started it (the harness's tokens have no name: the token's id).
    expect((await zepid(['status', id])).stdout).toMatch(new RegExp(`^kind: build \\(redeploy of ${v1}\\); started by tok_[0-9a-f]{12}$`, 'm'));

    const json = await zepid(['redeploy', v1, '--detach', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout.trim())).toMatchObject({ type: 'accepted', redeployOf: v1, deploymentId: expect.stringMatching(/^dep_/) as unknown });
  });

  it('redeploy follows the new deployment like deploy, exits with deploy\'s codes, and has --help', async () => {
    const help = await zepid(['redeploy', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('zepid redeploy <deploymentId>');
    expect((await zepid(['--help'])).stdout).toMatch(/ {2}redeploy {2}/);

    const usage = await zepid(['redeploy']);
    expect(usage.code).toBe(2);
    const malformed = await zepid(['redeploy', 'not-an-id']);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain('not a deployment id');
    const unknown = await zepid(['redeploy', 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^zepid redeploy: NOT_FOUND: /);

    // Followed until --timeout: nothing runs it here, so it stays queued and the CLI gives up with 124.
    const v1 = await deployed('cli-redeploy-follow');
    const followed = await zepid(['redeploy', v1, '--timeout', '1s', '--json']);
    expect(followed.code).toBe(124);
    const lines = followed.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ type: 'accepted', redeployOf: v1 });
    expect(lines.at(-1)).toMatchObject({ type: 'result', timedOut: true, status: 'queued', kind: 'build', redeployOf: v1 });
  });

  it('shows skipped steps (a rollback builds nothing) in plain output, on a terminal, and as --json step events', async () => {
    const v1 = await deployed('cli-skip');
    await deployed('cli-skip');
    const rollback = await zepid(['rollback', v1, '--json']);
    expect(rollback.code, rollback.stderr).toBe(0);
    const id = (JSON.parse(rollback.stdout) as { deploymentId: string }).deploymentId;
    await runWithoutBuild(id);

    const plain = await zepid(['logs', id, '-f']);
    expect(plain.code, plain.stderr).toBe(0);
    for (const step of ['sync', 'sandbox', 'build']) expect(plain.stderr).toContain(`– ${step} skipped\n`);
    expect(plain.stderr).toContain('✓ deploy completed');
    // In step order: validate, then the three skipped, then deploy.
    const order = ['✓ validate', '– sync', '– sandbox', '– build', '✓ deploy', '✓ cleanup'].map((text) => plain.stderr.indexOf(text));
    expect(order.every((index) => index >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);

    const tty = await zepid(['logs', id, '-f'], true);
    expect(tty.code).toBe(0);
    expect(tty.stderr).toContain('\r\u001b[2K– build skipped\n');

    const json = await zepid(['logs', id, '-f', '--json']);
    expect(json.code).toBe(0);
    const events = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const steps = events.filter((event) => event.type === 'step');
    expect(steps.map((event) => [event.step, event.status])).toEqual([
      ['validate', 'completed'],
      ['sync', 'skipped'],
      ['sandbox', 'skipped'],
      ['build', 'skipped'],
      ['deploy', 'completed'],
      ['cleanup', 'completed'],
    ]);
    expect(events.at(-1)).toMatchObject({ type: 'result', status: 'completed', kind: 'rollback' });
  });
});
