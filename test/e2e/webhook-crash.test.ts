import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server, ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, processAlive, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'webhook-crash-token-0123456789';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/**
 * A receiver on loopback that, while `holding`, keeps `deployment.succeeded` requests open without
 * answering (a slow endpoint: the worker's attempt is in flight, nothing is delivered yet); it
 * answers everything else 200.
 */
class HoldingReceiver {
  readonly received: Received[] = [];
  holding = true;
  private readonly held: ServerResponse[] = [];
  private readonly server: Server;

  constructor() {
    this.server = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        this.received.push({ headers: request.headers, body, at: Date.now() });
        if (this.holding && typeOf({ body }) === 'deployment.succeeded') this.held.push(response);
        else response.writeHead(200).end();
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  close(): Promise<void> {
    for (const response of this.held) response.destroy();
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const typeOf = (message: { body: string }) => (JSON.parse(message.body) as { type: string }).type;
const deploymentOf = (message: { body: string }) => (JSON.parse(message.body) as { data: { deploymentId: string } }).data.deploymentId;

/**
 * The real API and the real worker (apps/worker/src/main.ts) as processes on one data dir. The
 * receiver holds the `deployment.succeeded` request, so the worker is SIGKILLed after the terminal
 * status (and its outbox event) was written and while the delivery is in flight, unanswered. A
 * deployment submitted while no worker runs has its `deployment.queued` event only in its record's
 * outbox. A new worker process on the same data dir delivers both: the first with the same
 * `webhook-id` once the dead worker's claim expires; every request verifies with
 * `standardwebhooks`' `Webhook.verify`.
 */
describe('worker SIGKILLed between the status write and the webhook delivery', () => {
  let dataDir: string;
  let api: ChildProcess;
  let worker: ChildProcess;
  let apiUrl: string;
  let env: Record<string, string>;
  let output = '';
  const receiver = new HoldingReceiver();
  let hookUrl: string;
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

  const spawnLogged = (entry: string) => {
    const child = spawn(process.execPath, [entry], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    return child;
  };
  const withOutput = (error: unknown) => {
    throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
  };
  const deploy = async (projectId: string) => {
    const body = JSON.parse(await readFile(join(root, 'examples/static-site.json'), 'utf8')) as Record<string, unknown>;
    const response = await fetch(`${apiUrl}/deploy`, { method: 'POST', headers, body: JSON.stringify({ ...body, organizationId: 'org_hooks', projectId }) });
    expect(response.status).toBe(202);
    return ((await response.json()) as { deploymentId: string }).deploymentId;
  };
  const statusOf = async (id: string) => ((await (await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).json()) as { status: string }).status;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-webhook-crash-'));
    hookUrl = await receiver.listen();
    const apiPort = await freePort();
    apiUrl = `http://127.0.0.1:${apiPort}`;
    env = { DATA_DIR: dataDir, PORT: String(apiPort), LOCAL_ROUTER_PORT: String(await freePort()), DEPLOY_API_TOKENS: `org_hooks:${TOKEN}`, LOG_LEVEL: 'warn' };
    api = spawnLogged('apps/api/src/server.ts');
    worker = spawnLogged('apps/worker/src/main.ts');
    await waitFor('the API', async () => (await fetch(`${apiUrl}/health/ready`).catch(() => null))?.status === 200).catch(withOutput);
  }, 60_000);

  afterAll(async () => {
    for (const child of [worker, api]) child.kill('SIGTERM');
    await waitFor('processes to stop', () => [worker, api].every((child) => child.exitCode !== null || child.signalCode !== null), 30_000);
    await receiver.close();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('a new worker process delivers both, same webhook-id, verified with Webhook.verify', async () => {
    const registered = await fetch(`${apiUrl}/webhooks`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ url: hookUrl, events: ['deployment.queued', 'deployment.succeeded'] }),
    });
    expect(registered.status).toBe(201);
    const { id: webhookId, secret } = (await registered.json()) as { id: string; secret: string };
    const verify = (message: Received) =>
      new Webhook(secret).verify(message.body, {
        'webhook-id': String(message.headers['webhook-id']),
        'webhook-timestamp': String(message.headers['webhook-timestamp']),
        'webhook-signature': String(message.headers['webhook-signature']),
      }) as { type: string; data: { deploymentId: string; status: string } };

    // 1. The worker completes a deployment; its `deployment.succeeded` request is held unanswered.
    const first = await deploy('hooks-first');
    const succeededSent = () => receiver.received.find((m) => typeOf(m) === 'deployment.succeeded' && deploymentOf(m) === first);
    await waitFor('the deployment.succeeded request', () => succeededSent() !== undefined, 60_000).catch(withOutput);
    expect(await statusOf(first)).toBe('completed');
    const pid = worker.pid ?? -1;
    worker.kill('SIGKILL');
    await waitFor('the worker to die', () => !processAlive(pid));
    const inFlight = succeededSent() as Received;
    const killedAt = Date.now();
    expect(verify(inFlight)).toMatchObject({ type: 'deployment.succeeded', data: { deploymentId: first, status: 'completed' } });
    // Nothing recorded it as delivered: the attempt never got an answer.
    const before = (await (await fetch(`${apiUrl}/webhooks/${webhookId}/deliveries`, { headers })).json()) as { deliveries: { id: string; status: string }[] };
    expect(before.deliveries.find((d) => d.id === inFlight.headers['webhook-id'])?.status).toBe('pending');

    // 2. While no worker runs, a deployment is accepted: its queued event exists only in its record.
    const second = await deploy('hooks-second');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(receiver.received.some((m) => deploymentOf(m) === second)).toBe(false);

    // 3. A new worker process on the same data dir; the receiver answers now.
    receiver.holding = false;
    worker = spawnLogged('apps/worker/src/main.ts');
    const resent = () => receiver.received.filter((m) => m.headers['webhook-id'] === inFlight.headers['webhook-id']);
    await waitFor('the held delivery to be sent again', () => resent().length >= 2, 60_000).catch(withOutput);
    await waitFor('the second deployment\'s events', () => receiver.received.filter((m) => deploymentOf(m) === second).length >= 2, 60_000).catch(withOutput);

    const again = resent()[1] as Received;
    expect(verify(again)).toMatchObject({ type: 'deployment.succeeded', data: { deploymentId: first, status: 'completed' } });
    expect(again.body).toBe(inFlight.body);
    // Not before the dead worker's claim on the delivery ran out (15 s timeout + 10 s).
    expect(again.at - killedAt).toBeGreaterThan(15_000);
    const secondEvents = receiver.received.filter((m) => deploymentOf(m) === second).map((m) => verify(m).type);
    expect(secondEvents).toEqual(['deployment.queued', 'deployment.succeeded']);
    // Every request verifies; the API lists the held delivery as delivered on its second attempt.
    for (const message of receiver.received) verify(message);
    const after = (await (await fetch(`${apiUrl}/webhooks/${webhookId}/deliveries`, { headers })).json()) as {
      deliveries: { id: string; status: string; attempts: { statusCode: number | null }[] }[];
    };
    expect(after.deliveries.find((d) => d.id === inFlight.headers['webhook-id'])).toMatchObject({ status: 'delivered', attempts: [{ statusCode: 200 }] });
  }, 150_000);
});
