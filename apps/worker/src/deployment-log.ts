import type { ArtifactStore, LogLine, Logger, StepName } from '@zepid/core';
import { LIMITS, SecretMasker, truncateLine } from '@zepid/core';

/**
 * The log of one deployment run: lines are masked (env variable values never reach storage),
 * buffered and appended to the artifact store in batches, so a chatty build costs a few writes a
 * second, not one per line. Past the per-deployment limit, lines are dropped with one notice.
 */
export class DeploymentLog {
  private readonly artifacts: ArtifactStore;
  private readonly deploymentId: string;
  private readonly masker: SecretMasker;
  private readonly logger: Logger;
  private buffer: string[] = [];
  private bytes = 0;
  private dropped = false;
  private flushing: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;

  constructor(options: { artifacts: ArtifactStore; deploymentId: string; secrets: Iterable<string>; logger: Logger; flushIntervalMs?: number }) {
    this.artifacts = options.artifacts;
    this.deploymentId = options.deploymentId;
    this.masker = new SecretMasker(options.secrets);
    this.logger = options.logger;
    this.timer = setInterval(() => void this.flush(), options.flushIntervalMs ?? 250);
    this.timer.unref();
  }

  write(step: StepName | null, message: string, level: LogLine['level'] = 'info'): void {
    if (this.dropped) return;
    const line: LogLine = { timestamp: new Date().toISOString(), step, level, message: truncateLine(this.masker.mask(message)) };
    const json = `${JSON.stringify(line)}\n`;
    if (this.bytes + json.length > LIMITS.logBytesPerDeployment) {
      this.dropped = true;
      this.buffer.push(`${JSON.stringify({ ...line, level: 'warn', message: 'log limit reached: further lines are dropped' })}\n`);
      return;
    }
    this.bytes += json.length;
    this.buffer.push(json);
  }

  /**
   * The run lost its deployment to another delivery: the log is the owner's now. Lines not yet written
   * and every later one are dropped (the worker's own log says what this run skipped).
   */
  silence(): void {
    this.buffer = [];
    this.dropped = true;
  }

  /** A sink bound to a step, as the ports' LogSink. */
  sink(step: StepName | null) {
    return (message: string, level: LogLine['level'] = 'info') => this.write(step, message, level);
  }

  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.buffer.length === 0) return;
      const chunk = this.buffer.join('');
      this.buffer = [];
      try {
        await this.artifacts.appendLog(this.deploymentId, chunk);
      } catch (error) {
        // Keep the lines for the next flush rather than lose them.
        this.buffer.unshift(chunk);
        this.logger.warn({ err: error, deploymentId: this.deploymentId }, 'could not append to the deployment log');
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
