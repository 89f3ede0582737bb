import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { processStartTime, signalGroup } from './process-group.ts';

export interface RegisteredGroup {
  pid: number;
  startTime: string | null;
  deploymentId: string;
  purpose: 'build' | 'revision';
}

/**
 * A file listing every process group the worker started and has not seen exit. If the worker is
 * killed (SIGKILL, OOM, power), its children keep running; the next start reads this file and kills
 * the ones still alive — checking the start time so a recycled pid is never hit.
 */
export class ProcessRegistry {
  private readonly path: string;
  private groups: RegisteredGroup[] = [];

  constructor(path: string) {
    this.path = path;
  }

  /** Loads the file and kills what an earlier worker left running; returns what it killed. */
  reapLeftovers(): RegisteredGroup[] {
    let previous: RegisteredGroup[];
    try {
      previous = JSON.parse(readFileSync(this.path, 'utf8')) as RegisteredGroup[];
    } catch {
      previous = [];
    }
    const killed = previous.filter((group) => {
      const now = processStartTime(group.pid);
      return now !== null && now === group.startTime && signalGroup(group.pid, 'SIGKILL');
    });
    this.groups = [];
    this.save();
    return killed;
  }

  add(group: RegisteredGroup): void {
    this.groups.push(group);
    this.save();
  }

  remove(pid: number): void {
    this.groups = this.groups.filter((group) => group.pid !== pid);
    this.save();
  }

  list(filter: Partial<Pick<RegisteredGroup, 'deploymentId' | 'purpose'>> = {}): RegisteredGroup[] {
    return this.groups.filter(
      (group) => (filter.deploymentId === undefined || group.deploymentId === filter.deploymentId) && (filter.purpose === undefined || group.purpose === filter.purpose),
    );
  }

  private save(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    writeFileSync(`${this.path}.tmp`, JSON.stringify(this.groups));
    renameSync(`${this.path}.tmp`, this.path);
  }
}
