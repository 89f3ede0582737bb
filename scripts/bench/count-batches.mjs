// Preloaded into the API by scripts/bench/batch-size.ts (--import): counts how many calls each group
// commit of SqliteDatabase.batch carried, and writes the histogram to BATCH_COUNTS_FILE at exit.
import { writeFileSync } from 'node:fs';
import process from 'node:process';
import { SqliteDatabase } from '../../packages/local/src/sqlite/database.ts';

const sizes = new Map();
const flush = SqliteDatabase.prototype.flushBatch;
SqliteDatabase.prototype.flushBatch = function counted() {
  sizes.set(this.queued.length, (sizes.get(this.queued.length) ?? 0) + 1);
  return flush.call(this);
};
const write = () => writeFileSync(process.env.BATCH_COUNTS_FILE ?? 'batch-counts.json', JSON.stringify(Object.fromEntries(sizes)));
process.once('exit', write);
