import type { LogSink } from '@zepid/core';
import { truncateLine } from '@zepid/core';

/** Printed by the build container's shell after a successful push: the content of kaniko's --digest-file. */
export const DIGEST_MARKER = 'ZEPID_IMAGE_DIGEST=';
const DIGEST_LINE = /^ZEPID_IMAGE_DIGEST=(sha256:[0-9a-f]{64})\s*$/;
/** kaniko's own "Pushed <repo>@sha256:…" line: the fallback when the marker line is missing. */
const PUSHED_LINE = /\bPushed\s+\S+@(sha256:[0-9a-f]{64})/;
const TAIL_LINES = 20;

/**
 * ACI's `listLogs` returns at most the last 4 MB of a container's output, cut at a byte: past that,
 * the front of each answer moves and line numbers mean nothing. From this size on, the follower
 * finds where it stopped by the lines it copied last instead of by counting (3 MiB: well before the
 * window, so the switch never comes late; below it counting is exact).
 */
export const LOG_WINDOW_BYTES = 4 * 1024 * 1024;
const ANCHOR_FROM_BYTES = 3 * 1024 * 1024;
/** Lines copied last that must reappear, in order, to find the place in a moved window. */
const ANCHOR_LINES = 8;

/**
 * Follows a container log that ACI returns whole on every poll, up to its last 4 MB: copies only
 * the lines not copied before, holds back a last line without its newline until it is complete (or
 * the container ended), keeps the last lines for an error message, and picks out the digest line.
 * Once the log outgrows the window, lines that scrolled out between two polls are lost: the
 * follower says so in the log and carries on; the digest line is looked for in the final answer
 * whatever was copied.
 */
export class BuildLogFollower {
  private copied = 0;
  private readonly recent: string[] = [];
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
    let fresh: string[];
    if (Buffer.byteLength(content, 'utf8') < ANCHOR_FROM_BYTES && lines.length >= this.copied) {
      fresh = lines.slice(this.copied);
    } else {
      fresh = this.afterAnchor(lines);
    }
    this.copied = lines.length;
    for (const line of fresh) this.line(line);
    if (final && this.markerDigest === null) {
      // Whatever was lost on the way, the container's last words are in its final log.
      for (const line of lines) {
        const marker = DIGEST_LINE.exec(line);
        if (marker !== null) this.markerDigest = marker[1] ?? null;
      }
    }
    return fresh.length;
  }

  get digest(): string | null {
    return this.markerDigest ?? this.pushedDigest;
  }

  lastLines(): string[] {
    return [...this.tail];
  }

  /**
   * The lines after the last ones copied, found by content in a window whose front moved. The first
   * line of a cut window may be the end of a line: it matches the end of a copied one. Not found:
   * more than the window was written between two polls.
   */
  private afterAnchor(lines: string[]): string[] {
    const anchor = this.recent;
    if (anchor.length === 0) return lines.slice(1);
    for (let start = 0; start + anchor.length <= lines.length; start += 1) {
      let match = true;
      for (let index = 0; index < anchor.length && match; index += 1) {
        const line = lines[start + index] ?? '';
        const expected = anchor[index] ?? '';
        match = start === 0 && index === 0 ? expected.endsWith(line) : line === expected;
      }
      if (match) return lines.slice(start + anchor.length);
    }
    // The window may begin inside the lines copied last: its first lines are their end.
    // At least one whole line must match: the cut first line alone says little.
    for (let overlap = anchor.length - 1; overlap >= 2; overlap -= 1) {
      const from = anchor.length - overlap;
      let match = (anchor[from] ?? '').endsWith(lines[0] ?? '\u0000');
      for (let index = 1; index < overlap && match; index += 1) match = lines[index] === anchor[from + index];
      if (match) return lines.slice(overlap);
    }
    this.log('[build log: ACI returns only the last 4 MB of the log, and more than that was written since the last read; earlier lines are missing here]', 'warn');
    // The first line of the window is likely cut at its start.
    return lines.slice(1);
  }

  private line(line: string): void {
    this.recent.push(line);
    if (this.recent.length > ANCHOR_LINES) this.recent.shift();
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
