import type { DeploymentStatus, LogLine, StepState } from './api.ts';
import type { FollowEvent } from './follow.ts';

/** Where the CLI writes: injected so that tests capture it and `main` passes the process's streams. */
export interface Io {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown; isTTY?: boolean };
}

const STEPS = ['validate', 'sync', 'sandbox', 'build', 'deploy', 'cleanup'];
const ENDED = new Set(['completed', 'failed', 'skipped', 'cancelled']);
const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export function formatLine(line: LogLine): string {
  const step = line.step ?? '-';
  return `  [${step}] ${line.level === 'error' ? 'error: ' : ''}${line.message}`;
}

/**
 * Shows a deployment's progress: on a terminal, one animated line for the running step with the log
 * scrolling above it; elsewhere (CI, a pipe) a plain line per step and per log line, nothing animated.
 * With `json`, one JSON object per event (NDJSON) and nothing else.
 */
export class ProgressReporter {
  private readonly io: Io;
  private readonly json: boolean;
  private readonly tty: boolean;
  private readonly quietLogs: boolean;
  private readonly started = new Set<string>();
  private readonly ended = new Set<string>();
  private spinnerLine = '';
  private frame = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(io: Io, options: { json: boolean; logs: boolean }) {
    this.io = io;
    this.json = options.json;
    this.tty = !options.json && io.stderr.isTTY === true;
    this.quietLogs = !options.logs;
  }

  event(event: FollowEvent): void {
    if (this.json) {
      this.io.stdout.write(`${JSON.stringify(event.type === 'log' ? { type: 'log', ...event.line } : { type: 'status', ...event.status })}\n`);
      // Each step's end once, as its own event: skipped steps (rollback and config deployments build nothing) included.
      if (event.type === 'status') {
        for (const [step, state] of this.newlyEnded(event.status)) this.io.stdout.write(`${JSON.stringify({ type: 'step', step, status: state.status, error: state.error })}\n`);
      }
      return;
    }
    if (event.type === 'log') {
      if (!this.quietLogs) this.print(formatLine(event.line));
      return;
    }
    this.onStatus(event.status);
  }

  private onStatus(status: DeploymentStatus): void {
    // Every step that ended since the last status, in order: a fast deployment may be seen only once
    // it is already over, and its steps are still told.
    for (const [step, state] of this.newlyEnded(status)) {
      // A skipped step never ran (a rollback or config deployment builds nothing): one line says so.
      if (state.status === 'skipped') {
        this.print(`– ${step} skipped`);
        continue;
      }
      if (!this.tty && !this.started.has(step)) this.print(`→ ${step} (step ${STEPS.indexOf(step) + 1}/6)`);
      this.print(`${state.status === 'completed' ? '✓' : '✗'} ${step} ${state.status}${state.error ? `: ${state.error}` : ''}`);
    }
    const step = status.currentStep;
    if (step !== null && !this.started.has(step) && !this.ended.has(step)) {
      this.started.add(step);
      if (!this.tty) this.print(`→ ${step} (step ${STEPS.indexOf(step) + 1}/6)`);
    }
    if (this.tty) {
      this.spinnerLine = step === null ? `${status.status}` : `${step} · ${status.progress}%`;
      this.timer ??= setInterval(() => this.draw(), 80);
      this.draw();
    }
  }

  /** The steps that ended (completed, failed, skipped, cancelled) since the last status, in step order; each is returned once. */
  private newlyEnded(status: DeploymentStatus): [string, StepState][] {
    const ended: [string, StepState][] = [];
    for (const step of STEPS) {
      const state = status.steps?.[step];
      if (state === undefined || this.ended.has(step) || !ENDED.has(state.status)) continue;
      this.ended.add(step);
      ended.push([step, state]);
    }
    return ended;
  }

  private draw(): void {
    this.frame = (this.frame + 1) % FRAMES.length;
    this.io.stderr.write(`\r\x1b[2K${FRAMES[this.frame]} ${this.spinnerLine}`);
  }

  /** Writes a line above the spinner (progress goes to stderr so that stdout stays the result). */
  print(text: string): void {
    if (this.json) return;
    if (this.tty) this.io.stderr.write(`\r\x1b[2K${text}\n`);
    else this.io.stderr.write(`${text}\n`);
    if (this.tty && this.timer !== null) this.draw();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.tty) this.io.stderr.write('\r\x1b[2K');
  }
}
