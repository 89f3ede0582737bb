import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentEventName, DeploymentRecord, MetricName, Telemetry } from '@zepid/core';
import { DEPLOYMENT_DIMENSIONS, DeployError, STEPS } from '@zepid/core';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

// What the worker sends is what the dashboard reads (infra/workbooks/deployments.workbook.json): every
// event and metric with the deployment's dimensions (the Environment filter), and a StepDuration for
// every step that ran, however it ended, so step durations include failed and timed-out work.

interface Sent {
  kind: 'event' | 'metric';
  name: DeploymentEventName | MetricName;
  properties: Record<string, string | undefined>;
}

function recordingTelemetry(sent: Sent[]): Telemetry {
  return {
    start: () => Promise.resolve(),
    close: () => Promise.resolve(),
    event: (name, properties) => void sent.push({ kind: 'event', name, properties }),
    metric: (name, _valueMs, properties) => void sent.push({ kind: 'metric', name, properties }),
    currentTraceparent: () => null,
    withOperation: (_name, _traceparent, fn) => fn(),
  };
}

describe('worker telemetry', () => {
  let h: WorkerHarness;
  let sent: Sent[];
  afterEach(async () => {
    await h.close();
  });

  async function harness(options: Parameters<typeof createWorkerHarness>[0] = {}): Promise<void> {
    h = await createWorkerHarness(options);
    sent = [];
    h.adapters.telemetry = recordingTelemetry(sent);
  }

  /** Waits for the deployment's final event: it is sent right after the record turns terminal. */
  async function finalEvent(record: DeploymentRecord): Promise<Sent> {
    const finished = (entry: Sent) => entry.kind === 'event' && entry.properties.deploymentId === record.id && entry.name !== 'DeploymentQueued';
    await eventually(() => Promise.resolve(sent.filter(finished)), (found) => found.length > 0);
    return sent.find(finished) as Sent;
  }

  const stepDurations = () => sent.filter((entry) => entry.name === 'StepDuration').map((entry) => `${entry.properties.step ?? ''}:${entry.properties.outcome ?? ''}`);

  it('a completed deployment: every step completed, then DeploymentCompleted and DeploymentDuration, each with the deployment dimensions', async () => {
    await harness();
    h.consumer().start();
    const record = await h.submit();
    expect((await finalEvent(record)).name).toBe('DeploymentCompleted');
    expect(stepDurations()).toEqual(STEPS.map((step) => `${step}:completed`));
    expect(sent.map((entry) => entry.name)).toEqual(['QueueWait', ...STEPS.map(() => 'StepDuration'), 'DeploymentCompleted', 'DeploymentDuration']);
    for (const entry of sent) {
      for (const key of DEPLOYMENT_DIMENSIONS) expect(entry.properties[key], `${entry.name}.${key}`).toBeTruthy();
      expect(entry.properties.environment).toBe(record.environment);
    }
  });

  it('a step that fails sends its duration with outcome failed, then DeploymentFailed with its code', async () => {
    await harness();
    h.builder.behaviour.build = { fail: new DeployError('BUILD_FAILED', 'npm run build exited with code 1') };
    h.consumer().start();
    const record = await h.submit();
    const failed = await finalEvent(record);
    expect(failed).toMatchObject({ name: 'DeploymentFailed', properties: { errorCode: 'BUILD_FAILED', step: 'build', environment: record.environment } });
    expect(stepDurations()).toEqual(['validate:completed', 'sync:completed', 'sandbox:completed', 'build:failed']);
  });

  it('a step cut off by the deployment timeout sends its duration with outcome timed out', async () => {
    await harness({ deploymentTimeoutMs: 700 });
    h.builder.behaviour.build = 'hang';
    h.consumer().start();
    const record = await h.submit();
    expect(await finalEvent(record)).toMatchObject({ name: 'DeploymentFailed', properties: { errorCode: 'TIMEOUT', step: 'build' } });
    expect(stepDurations()).toEqual(['validate:completed', 'sync:completed', 'sandbox:completed', 'build:timed out']);
  });
});
