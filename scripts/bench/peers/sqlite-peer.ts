/**
 * Peer: Fastify + SQLite (WAL, synchronous=NORMAL — the durability our embedded store has: a
 * commit survives the process, not necessarily the machine) doing our POST /deploy and status read
 * the plain way: one transaction per request inserting the record (the validated request as JSON)
 * and its job, random UUIDs as keys, answer 202 after COMMIT; status is a point read by id and org.
 *
 * node:sqlite, not better-sqlite3: the same SQLite engine through Node's own binding, which is what
 * our store uses too, so the comparison is about what each service does per request, not about the
 * binding. (better-sqlite3's prebuilt binaries cannot be fetched here, and building it from source
 * on every fresh CI machine would cost minutes for no difference in what is measured.)
 *
 *   PORT, DB (file path), TOKENS (org:token,…), SEED_STATUS (optional: a JSON file
 *   {id, orgId, body} stored as a finished deployment whose status the read answers).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { bearerAuth, DeployRequestSchema, peerApp, serve } from './common.ts';

const db = new DatabaseSync(process.env.DB ?? ':memory:');
db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
  CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, project_id TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, doc TEXT NOT NULL);
  CREATE INDEX IF NOT EXISTS deployments_by_project ON deployments (org_id, project_id, created_at DESC);
  CREATE INDEX IF NOT EXISTS deployments_by_status ON deployments (org_id, status);
  CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    run_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, locked_until INTEGER);
  CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, run_at);`);

const insertDeployment = db.prepare('INSERT INTO deployments (id, org_id, project_id, status, created_at, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)');
const insertJob = db.prepare("INSERT INTO jobs (deployment_id, state, run_at) VALUES (?, 'ready', ?)");
const readStatus = db.prepare('SELECT doc FROM deployments WHERE id = ? AND org_id = ?');

if (process.env.SEED_STATUS !== undefined) {
  const seed = JSON.parse(readFileSync(process.env.SEED_STATUS, 'utf8')) as { id: string; orgId: string; body: unknown };
  const now = new Date().toISOString();
  db.prepare('INSERT OR REPLACE INTO deployments (id, org_id, project_id, status, created_at, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
    seed.id, seed.orgId, 'seed', 'completed', now, now, JSON.stringify(seed.body),
  );
}

const app = peerApp();
const auth = bearerAuth();
app.addHook('onRequest', auth.hook);

app.post('/deploy', { schema: { body: DeployRequestSchema } }, async (request, reply) => {
  const body = request.body as { projectId: string; organizationId?: string; orgId?: string };
  const orgId = auth.orgOf(request);
  if ((body.organizationId ?? body.orgId) !== orgId) return reply.code(403).send({ success: false, error: 'FORBIDDEN' });
  const id = `dep_${randomUUID()}`;
  const now = new Date().toISOString();
  db.exec('BEGIN IMMEDIATE');
  try {
    insertDeployment.run(id, orgId, body.projectId, 'queued', now, now, JSON.stringify({ id, status: 'queued', createdAt: now, request: body }));
    insertJob.run(id, Date.now());
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
  return reply.code(202).send({ success: true, deploymentId: id, status: 'queued', timestamp: now, statusUrl: `/deploy/${id}/status` });
});

app.get('/deploy/:id/status', async (request, reply) => {
  const row = readStatus.get((request.params as { id: string }).id, auth.orgOf(request)) as { doc: string } | undefined;
  if (row === undefined) return reply.code(404).send({ success: false, error: 'NOT_FOUND' });
  return JSON.parse(row.doc) as unknown;
});

await serve(app, () => db.close());
