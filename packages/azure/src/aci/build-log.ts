import type { LogSink } from '@zepid/core';
import { truncateLine } from '@zepid/core';

/** Printed by the build container's shell after a successful push: the content of kaniko's --digest-file. */
export const DIGEST_MARKER = 'ZEPID_IMAGE_DIGEST=';
const DIGEST_LINE = /^ZEPID_IMAGE_DIGEST=(sha256:[0-9a-f]{64})\s*$/;
/** kaniko's own "Pushed <repo>@sha256:…" line: the fallback when the marker line is missing. */
const PUSHED_LINE = /\bPushed\s+\S+@(sha256:[0-9a-f]{64})/;
const TAIL_LINES = 20;

/**
 * Follows a container log that ACI returns whole on every poll: copies only the lines not copied
 * before, holds back a last line without its newline until it is complete (or the container ended),
 * keeps the last lines for an error message, and picks out the digest line.
 */
export class BuildLogFollower {
  private copied = 0;
  private readonly tail: string[] = [];
  private markerDigest: string | null = null;
  private pushedDigest: string | null = null;
  private readonly log: LogSink;

  constructor(log: LogSink) {
    this.log = log;
  }

  /** Takes the log as it is now; returns how many new lines were copied. */
  accept(content: string, final: boolean): number {
    const lines = content.replace(/\r\n?/g, '\n').split('\n');
    // The last element is '' after a trailing newline, or a line still being written.
    const last = lines.pop() ?? '';
    if (final && last !== '') lines.push(last);
    // ACI keeps a bounded log; if it shrank, it was cut at the front and line numbers moved. Copying
    // from the new end is the best available: no line is copied twice.
    if (lines.length < this.copied) this.copied = lines.length;
    const fresh = lines.slice(this.copied);
    this.copied = lines.length;
    for (const line of fresh) this.line(line);
    return fresh.length;
  }

  get digest(): string | null {
    return this.markerDigest ?? this.pushedDigest;
  }

  lastLines(): string[] {
    return [...this.tail];
  }

  private line(line: string): void {
    const marker = DIGEST_LINE.exec(line);
    if (marker !== null) {
      this.markerDigest = marker[1] ?? null;
      return;
    }
    const pushed = PUSHED_LINE.exec(line);
    if (pushed !== null) this.pushedDigest = pushed[1] ?? null;
    this.tail.push(line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    this.log(truncateLine(line), levelOf(line));
  }
}

/** kaniko logs with logrus: `INFO[0001] …`, `WARN[0002] …`, `ERRO[0003] …`, `FATA[…]`. */
function levelOf(line: string): 'info' | 'warn' | 'error' {
  if (/^(ERRO|FATA|error )/.test(line)) return 'error';
  if (/^WARN/.test(line)) return 'warn';
  return 'info';
}
