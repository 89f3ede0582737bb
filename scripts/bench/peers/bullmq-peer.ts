/**
 * Peer: Fastify + BullMQ on a local Redis (the bench starts it with AOF `everysec`: an acknowledged
 * write survives a crash of either process; a power cut may lose the last second — comparable with
 * SQLite WAL + synchronous=NORMAL). POST /deploy validates like ours and adds one job carrying the
 * deployment (the record lives in Redis with it), answering 202 once Redis has acknowledged it.
 *
 *   PORT, REDIS_PORT, TOKENS (org:token,…)
 */
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { bearerAuth, DeployRequestSchema, peerApp, serve } from './common.ts';

const queue = new Queue('deployments', {
  connection: { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) },
  defaultJobOptions: { attempts: 3, removeOnComplete: 1000 },
});
await queue.waitUntilReady();

const app = peerApp();
const auth = bearerAuth();
app.addHook('onRequest', auth.hook);

app.post('/deploy', { schema: { body: DeployRequestSchema } }, async (request, reply) => {
  const body = request.body as { projectId: string; organizationId?: string; orgId?: string };
  const orgId = auth.orgOf(request);
  if ((body.organizationId ?? body.orgId) !== orgId) return reply.code(403).send({ success: false, error: 'FORBIDDEN' });
  const id = `dep_${randomUUID()}`;
  const now = new Date().toISOString();
  await queue.add('deploy', { id, orgId, status: 'queued', createdAt: now, request: body }, { jobId: id });
  return reply.code(202).send({ success: true, deploymentId: id, status: 'queued', timestamp: now, statusUrl: `/deploy/${id}/status` });
});

await serve(app, () => queue.close());
