/**
 * The publishing process of measureEmbeddedQueuePickup (queue-pickup.ts), playing the API: opens the
 * SQLite queue in the database file given as the first argument and, for each `{ publish: n }` the
 * parent sends over IPC, publishes job n with the time (performance.timeOrigin + performance.now(),
 * comparable across processes on one machine) taken just before the publish. Exits on disconnect.
 */
import type { JobMessage } from '@zepid/core';
import { SqliteDatabase, SqliteJobQueue } from '@zepid/local';

const [path] = process.argv.slice(2);
if (path === undefined || process.send === undefined) throw new Error('usage: forked by queue-pickup.ts with <database path>');
const queue = new SqliteJobQueue(new SqliteDatabase(path));
await queue.start();

process.on('message', (message: { publish: number }) => {
  const n = message.publish;
  const sentAt = performance.timeOrigin + performance.now();
  const body = { deploymentId: `dep_bench${String(n).padStart(20, '0')}`, orgId: 'org_bench', attempt: 1, traceparent: null, sentAt };
  queue
    .publish(body as JobMessage, { messageId: `bench-${n}`, sessionId: `prj_bench_${n % 16}` })
    .then(() => process.send?.({ published: n }))
    .catch((error: unknown) => process.send?.({ failed: String(error) }));
});
process.once('disconnect', () => void queue.close());
process.send({ ready: true });
